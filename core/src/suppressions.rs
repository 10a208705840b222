//! The suppression list as the hosted API shows it: each entry's stable id and origin, and
//! pages of an account's list in address order with the API's `after`/`before` cursors.
//!
//! Why ids are derived, not stored: an entry is keyed by its normalised address, and a webhook
//! (`suppression.added`/`removed`) already carries [`id`] of it. So an id is a function of
//! (account, address) — the same address always has the same id, before and after a removal.
//! A store finds an entry by id through an index of [`id_bits`] (redb keeps one beside the
//! entries, and one by [`Origin::code`]); [`find`], a scan of the account's keys, is the way
//! without one. A page is read from an iterator over the account's
//! entries ([`page`]) so that a store can stream its table: the memory a page takes is the
//! page's, not the list's.

use crate::email::{AccountId, Page};
use crate::ports::{StorageResult, SuppressionEntry, SuppressionReason};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

/// How an address came onto the list, by the hosted API's names (and this engine's one more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A permanent bounce of one of the account's emails.
    Bounce,
    /// A complaint about one.
    Complaint,
    /// Added by hand (the API, the command line, the dashboard).
    Manual,
    /// The recipient followed a one-click unsubscribe link (not in the hosted service).
    Unsubscribe,
}

impl Origin {
    /// The origin of `entry`.
    pub fn of(entry: &SuppressionEntry) -> Origin {
        match (entry.reason, entry.source_email) {
            (SuppressionReason::Complained, _) => Origin::Complaint,
            (SuppressionReason::Unsubscribed, _) => Origin::Unsubscribe,
            (SuppressionReason::Bounced, Some(_)) => Origin::Bounce,
            (SuppressionReason::Bounced, None) => Origin::Manual,
        }
    }

    /// A small number per origin that stays the same across versions: how stores index
    /// entries by origin (redb in its key, PostgreSQL in a column).
    pub fn code(self) -> u8 {
        match self {
            Origin::Bounce => 0,
            Origin::Complaint => 1,
            Origin::Manual => 2,
            Origin::Unsubscribe => 3,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Bounce => "bounce",
            Origin::Complaint => "complaint",
            Origin::Manual => "manual",
            Origin::Unsubscribe => "unsubscribe",
        }
    }

    /// The origin named `s` (the `origin` filter of a list).
    pub fn parse(s: &str) -> Option<Origin> {
        [Origin::Bounce, Origin::Complaint, Origin::Manual, Origin::Unsubscribe].into_iter().find(|o| o.as_str() == s)
    }
}

/// A suppression's stable id: the same address on the same account always has the same one
/// (a UUID's form, from SHA-256 of the account and the address).
pub fn id(account: &AccountId, address: &str) -> String {
    uuid::Uuid::from_u128(id_bits(account, address)).to_string()
}

/// [`id`] as its UUID's 128 bits: what a store indexes entries by, so that an id is found
/// without hashing every address of the account ([`find`] is the way without an index).
pub fn id_bits(account: &AccountId, address: &str) -> u128 {
    let d = Sha256::new().chain_update(account.as_str()).chain_update([0]).chain_update(address).finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().as_u128()
}

/// The bits of the id `wanted` is, written as [`id`] writes ids; `None` when it is written any
/// other way (upper case, braces, no hyphens), which names no entry, as with [`find`].
pub fn parse_id(wanted: &str) -> Option<u128> {
    let u = uuid::Uuid::try_parse(wanted).ok()?;
    (u.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()) == wanted).then(|| u.as_u128())
}

/// Where a page of the list starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cursor {
    /// The first entries.
    #[default]
    Start,
    /// The entries after the one with this id.
    After(String),
    /// The entries before the one with this id.
    Before(String),
}

/// One page of an account's list: at most `limit` entries (1 to 100), from `cursor`, of
/// `origin` only if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    /// Entries per page.
    pub limit: usize,
    /// Where the page starts.
    pub cursor: Cursor,
    /// Only entries of this origin.
    pub origin: Option<Origin>,
}

/// The page `q` asks for of `entries` (an account's list in address order); `None` when its
/// cursor is the id of no entry. Memory: the page (and, for `before`, the `limit + 1` entries
/// seen last); time: the entries up to the page's end.
pub fn page(
    account: &AccountId,
    entries: impl Iterator<Item = StorageResult<SuppressionEntry>>,
    q: &PageQuery,
) -> StorageResult<Option<Page<SuppressionEntry>>> {
    let wanted = |e: &SuppressionEntry| q.origin.is_none_or(|o| Origin::of(e) == o);
    let limit = q.limit.max(1);
    let mut kept: VecDeque<SuppressionEntry> = VecDeque::with_capacity(limit.min(100) + 1);
    match &q.cursor {
        Cursor::Start => {
            for e in entries {
                let e = e?;
                if wanted(&e) {
                    kept.push_back(e);
                    if kept.len() > limit {
                        break;
                    }
                }
            }
        }
        Cursor::After(cursor) => {
            let mut found = false;
            for e in entries {
                let e = e?;
                if !found {
                    found = id(account, &e.address) == *cursor;
                } else if wanted(&e) {
                    kept.push_back(e);
                    if kept.len() > limit {
                        break;
                    }
                }
            }
            if !found {
                return Ok(None);
            }
        }
        Cursor::Before(cursor) => {
            let mut found = false;
            for e in entries {
                let e = e?;
                if id(account, &e.address) == *cursor {
                    found = true;
                    break;
                }
                if wanted(&e) {
                    kept.push_back(e);
                    if kept.len() > limit + 1 {
                        kept.pop_front();
                    }
                }
            }
            if !found {
                return Ok(None);
            }
            // The page is the `limit` entries just before the cursor; more lie before it if
            // one more was seen.
            let has_more = kept.len() > limit;
            if has_more {
                kept.pop_front();
            }
            return Ok(Some(Page { items: kept.into(), has_more }));
        }
    }
    let has_more = kept.len() > limit;
    kept.truncate(limit);
    Ok(Some(Page { items: kept.into(), has_more }))
}

/// The address among `addresses` (an account's keys) whose entry's id is `wanted`; stops at
/// the first.
pub fn find<S: AsRef<str>>(account: &AccountId, addresses: impl IntoIterator<Item = S>, wanted: &str) -> Option<S> {
    // An id has a UUID's form: anything else names no entry, and costs no hashing.
    if uuid::Uuid::try_parse(wanted).is_err() {
        return None;
    }
    addresses.into_iter().find(|a| id(account, a.as_ref()) == wanted)
}

/// A page as a store reads it when it can start at its cursor: entries are pushed from the
/// cursor on, nearest first (upwards for a `before` cursor), until [`push`](Self::push) says
/// the page is full; [`finish`](Self::finish) puts it in address order. Memory: the page.
#[derive(Debug)]
pub struct PageBuilder {
    limit: usize,
    origin: Option<Origin>,
    upwards: bool,
    kept: Vec<SuppressionEntry>,
}

impl PageBuilder {
    /// For `q`.
    pub fn new(q: &PageQuery) -> PageBuilder {
        let limit = q.limit.max(1);
        let upwards = matches!(q.cursor, Cursor::Before(_));
        PageBuilder { limit, origin: q.origin, upwards, kept: Vec::with_capacity(limit.min(100) + 1) }
    }

    /// Whether the entries are read upwards from the cursor (a `before` page).
    pub fn upwards(&self) -> bool {
        self.upwards
    }

    /// Takes the next entry read (kept when it is of the origin asked for); whether the page
    /// is full — one more than it shows was seen — and reading can stop.
    pub fn push(&mut self, e: SuppressionEntry) -> bool {
        if self.origin.is_none_or(|o| Origin::of(&e) == o) {
            self.kept.push(e);
        }
        self.kept.len() > self.limit
    }

    /// The page, in address order, and whether more lie beyond it.
    pub fn finish(mut self) -> Page<SuppressionEntry> {
        let has_more = self.kept.len() > self.limit;
        self.kept.truncate(self.limit);
        if self.upwards {
            self.kept.reverse();
        }
        Page { items: self.kept, has_more }
    }
}

/// The id a page's cursor names, if it has one.
pub fn cursor_id(q: &PageQuery) -> Option<&str> {
    match &q.cursor {
        Cursor::Start => None,
        Cursor::After(id) | Cursor::Before(id) => Some(id),
    }
}

/// An entry as the API and webhooks show it: `{id, email, origin, source_id, created_at}`.
pub fn json(account: &AccountId, e: &SuppressionEntry) -> serde_json::Value {
    serde_json::json!({
        "id": id(account, &e.address),
        "email": e.address,
        "origin": Origin::of(e).as_str(),
        "source_id": e.source_email.map(|s| s.to_string()),
        "created_at": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::email::EmailId;
    use chrono::DateTime;
    use proptest::prelude::*;

    fn entry(address: &str, origin: u8) -> SuppressionEntry {
        let (reason, source_email) = match origin % 4 {
            0 => (SuppressionReason::Bounced, Some(EmailId::from_u128(7))),
            1 => (SuppressionReason::Complained, Some(EmailId::from_u128(8))),
            2 => (SuppressionReason::Bounced, None),
            _ => (SuppressionReason::Unsubscribed, Some(EmailId::from_u128(9))),
        };
        SuppressionEntry {
            address: address.into(),
            reason,
            source_email,
            created_at: DateTime::from_timestamp(1_780_000_000, 0).unwrap(),
        }
    }

    /// The model: filter the whole list, then slice it at the cursor.
    fn model(account: &AccountId, all: &[SuppressionEntry], q: &PageQuery) -> Option<Page<SuppressionEntry>> {
        let at = |cursor: &str| all.iter().position(|e| id(account, &e.address) == cursor);
        let wanted = |e: &&SuppressionEntry| q.origin.is_none_or(|o| Origin::of(e) == o);
        let (items, has_more): (Vec<_>, bool) = match &q.cursor {
            Cursor::Start => {
                let f: Vec<_> = all.iter().filter(wanted).cloned().collect();
                (f.iter().take(q.limit).cloned().collect(), f.len() > q.limit)
            }
            Cursor::After(c) => {
                let f: Vec<_> = all[at(c)? + 1..].iter().filter(wanted).cloned().collect();
                (f.iter().take(q.limit).cloned().collect(), f.len() > q.limit)
            }
            Cursor::Before(c) => {
                let f: Vec<_> = all[..at(c)?].iter().filter(wanted).cloned().collect();
                let start = f.len().saturating_sub(q.limit);
                (f[start..].to_vec(), start > 0)
            }
        };
        Some(Page { items, has_more })
    }

    proptest! {
        #[test]
        fn a_streamed_page_is_the_sliced_list(
            n in 0usize..40,
            origins in prop::collection::vec(0u8..4, 40),
            limit in 1usize..8,
            cursor_kind in 0u8..4,
            cursor_at in 0usize..45,
            origin in prop::option::of(0u8..4),
        ) {
            let account = AccountId::new("acme");
            let all: Vec<_> = (0..n).map(|i| entry(&format!("u{i:03}@example.com"), origins[i])).collect();
            let cursor_id = |i: usize| all.get(i).map_or_else(|| id(&account, "nobody@example.com"), |e| id(&account, &e.address));
            let cursor = match cursor_kind {
                0 => Cursor::Start,
                1 => Cursor::After(cursor_id(cursor_at)),
                2 => Cursor::Before(cursor_id(cursor_at)),
                _ => Cursor::After("not-an-id".into()),
            };
            let origin = origin.and_then(|o| Origin::parse(["bounce", "complaint", "manual", "unsubscribe"][usize::from(o)]));
            let q = PageQuery { limit, cursor, origin };
            let got = page(&account, all.iter().cloned().map(Ok), &q).unwrap();
            prop_assert_eq!(got, model(&account, &all, &q));
        }
    }

    #[test]
    fn ids_are_stable_and_found_only_by_their_id() {
        let a = AccountId::new("acme");
        let b = AccountId::default();
        assert_eq!(id(&a, "x@example.com"), id(&a, "x@example.com"));
        assert_ne!(id(&a, "x@example.com"), id(&b, "x@example.com"), "ids differ between accounts");
        assert!(uuid::Uuid::try_parse(&id(&a, "x@example.com")).is_ok());
        let keys = ["a@example.com", "x@example.com"];
        assert_eq!(find(&a, keys.into_iter(), &id(&a, "x@example.com")), Some("x@example.com"));
        assert_eq!(find(&a, keys.into_iter(), &id(&b, "x@example.com")), None);
        assert_eq!(find(&a, keys.into_iter(), "x@example.com"), None);
    }

    #[test]
    fn an_id_and_its_bits_are_one_value() {
        let a = AccountId::new("acme");
        // Pinned: ids went out in webhooks and API answers, so they never change.
        assert_eq!(id(&a, "x@example.com"), "acd8215c-518d-4809-b1a8-3a6704ce5367");
        let bits = id_bits(&a, "x@example.com");
        assert_eq!(parse_id(&id(&a, "x@example.com")), Some(bits));
        // Written any other way, it names no entry (as `find` answers).
        assert_eq!(parse_id("ACD8215C-518D-4809-B1A8-3A6704CE5367"), None);
        assert_eq!(parse_id("acd8215c518d4809b1a83a6704ce5367"), None);
        assert_eq!(parse_id("{acd8215c-518d-4809-b1a8-3a6704ce5367}"), None);
        assert_eq!(parse_id("x@example.com"), None);
        let codes: Vec<u8> = (0..4).map(|o| Origin::of(&entry("a@b.c", o)).code()).collect();
        assert_eq!(codes, [0, 1, 2, 3], "codes are stored: they never change");
    }

    #[test]
    fn origins_read_from_the_reason_and_the_source() {
        let names: Vec<_> = (0..4).map(|o| Origin::of(&entry("a@b.c", o)).as_str()).collect();
        assert_eq!(names, ["bounce", "complaint", "manual", "unsubscribe"]);
        for n in names {
            assert_eq!(Origin::parse(n).map(Origin::as_str), Some(n));
        }
        assert_eq!(Origin::parse("Bounce"), None);
    }
}
