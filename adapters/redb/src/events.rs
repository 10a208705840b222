//! The event log and webhooks on redb. The log is appended by the `Storage` methods' own
//! writes ([`log_pending`]), inside their transactions, as chunks (one row per write and
//! account). Numbers come from a counter in memory, moved only by the writer thread, so they
//! follow commit order; at open it resumes after the highest number in the file.

use crate::codec::{decode, encode};
use crate::{RedbStorage, account_values, backend, optional_table};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailroom_core::email::AccountId;
use mailroom_core::events::{LoggedEvent, Pending, Subject};
use mailroom_core::ports::{EventLog, StorageResult, WebhookStore};
use mailroom_core::store::due_key;
use mailroom_core::webhooks::{AttemptResult, Message, Webhook, health_after};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// (account, number of its first entry) → a chunk: the entries one write appended for that
/// account, numbered on from the key. A batch of 100 emails adds one row, not 100.
pub(crate) const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("events_v1");
/// (account, endpoint id) → endpoint.
pub(crate) const WEBHOOKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("webhooks_v1");
/// (endpoint id, event number) → message.
pub(crate) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("webhook_messages_v1");
/// (due µs, endpoint id, event number): messages with an attempt to make.
pub(crate) const MESSAGE_DUE: TableDefinition<(i64, &str, u64), ()> = TableDefinition::new("webhook_due_v1");

/// One entry in a chunk: the account and the number come from the chunk's key.
#[derive(Serialize, Deserialize)]
struct Stored {
    at: DateTime<Utc>,
    subject: Subject,
}

/// Chunks from the version whose events carry `hit`; version-1 chunks read through
/// [`StoredV1`].
const CHUNK_V2: u8 = 2;

/// An entry as a version-1 chunk holds it (its email events without `hit`).
#[derive(Deserialize)]
struct StoredV1 {
    at: DateTime<Utc>,
    subject: SubjectV1,
}

/// [`Subject`] as version 1 wrote it: the same variants in the same order.
#[derive(Deserialize)]
enum SubjectV1 {
    Email { id: mailroom_core::email::EmailId, event: crate::codec::EventV1 },
    SuppressionAdded(mailroom_core::ports::SuppressionEntry),
    SuppressionRemoved(mailroom_core::ports::SuppressionEntry),
}

impl From<SubjectV1> for Subject {
    fn from(s: SubjectV1) -> Subject {
        match s {
            SubjectV1::Email { id, event } => Subject::Email { id, event: event.into_event() },
            SubjectV1::SuppressionAdded(e) => Subject::SuppressionAdded(e),
            SubjectV1::SuppressionRemoved(e) => Subject::SuppressionRemoved(e),
        }
    }
}

fn encode_run(run: &[Stored]) -> StorageResult<Vec<u8>> {
    let mut out = vec![CHUNK_V2];
    postcard::to_io(run, &mut out).map_err(|e| mailroom_core::error::StorageError::Corrupt(e.to_string()))?;
    Ok(out)
}

/// A run of entries of one account, encoded, waiting for its numbers: (account, count, value).
pub(crate) type Chunk = (Arc<str>, u64, Vec<u8>);

/// Encodes entries into chunks, one per run of the same account (on the caller's thread when
/// it can be: the writer then only writes).
pub(crate) fn encode_chunks(pending: Vec<Pending>) -> StorageResult<Vec<Chunk>> {
    let mut out: Vec<Chunk> = Vec::new();
    let mut run: Vec<Stored> = Vec::new();
    let mut account: Option<Arc<str>> = None;
    for p in pending {
        if account.as_deref().is_some_and(|a| a != p.account.as_str()) {
            let a = account.take().unwrap_or_default();
            out.push((a, run.len() as u64, encode_run(&run)?));
            run.clear();
        }
        account.get_or_insert_with(|| p.account.0.clone());
        run.push(Stored { at: p.at, subject: p.subject });
    }
    if let Some(a) = account {
        out.push((a, run.len() as u64, encode_run(&run)?));
    }
    Ok(out)
}

fn decode_chunk(account: &str, first: u64, bytes: &[u8]) -> StorageResult<Vec<LoggedEvent>> {
    let run: Vec<Stored> = match bytes.split_first() {
        Some((&CHUNK_V2, rest)) => {
            postcard::from_bytes(rest).map_err(|e| mailroom_core::error::StorageError::Corrupt(e.to_string()))?
        }
        _ => decode::<Vec<StoredV1>>(bytes)?
            .into_iter()
            .map(|s| Stored { at: s.at, subject: s.subject.into() })
            .collect(),
    };
    Ok(run
        .into_iter()
        .zip(first..)
        .map(|(s, seq)| LoggedEvent { seq, account: AccountId::new(account), at: s.at, subject: s.subject })
        .collect())
}

/// Appends `pending` to the log inside `tx`, numbering each (when the store keeps a log).
pub(crate) fn log_pending(tx: &WriteTransaction, log: Option<&AtomicU64>, pending: Vec<Pending>) -> StorageResult<()> {
    if log.is_none() || pending.is_empty() {
        return Ok(());
    }
    log_chunks(tx, log, encode_chunks(pending)?)
}

/// Appends chunks already encoded, numbering their entries in the order given. Called by the
/// writer thread only, last in a write (after every check), so numbers follow commit order;
/// those of a group that fails to commit are never used again.
pub(crate) fn log_chunks(tx: &WriteTransaction, log: Option<&AtomicU64>, chunks: Vec<Chunk>) -> StorageResult<()> {
    let Some(counter) = log else { return Ok(()) };
    if chunks.is_empty() {
        return Ok(());
    }
    let mut events = tx.open_table(EVENTS).map_err(backend)?;
    for (account, n, bytes) in chunks {
        let first = counter.fetch_add(n, Ordering::SeqCst) + 1;
        events.insert((&*account, first), bytes.as_slice()).map_err(backend)?;
    }
    Ok(())
}

/// The highest number in the file's log (0: none): each account's last chunk, read from its end.
pub(crate) fn last_number(db: &redb::Database) -> StorageResult<u64> {
    use redb::ReadableDatabase;
    let tx = db.begin_read().map_err(backend)?;
    let Some(t) = optional_table(&tx, EVENTS)? else { return Ok(0) };
    let mut highest = 0;
    let mut before: Option<String> = None;
    // From the last account backwards: the last row below an account's first key is the
    // previous account's last chunk.
    loop {
        let last = match &before {
            None => t.last().map_err(backend)?,
            Some(a) => t.range(..(a.as_str(), 0)).map_err(backend)?.next_back().transpose().map_err(backend)?,
        };
        let Some((k, v)) = last else { return Ok(highest) };
        let (account, first) = k.value();
        let n = decode_chunk(account, first, v.value())?.len() as u64;
        highest = highest.max(first + n.saturating_sub(1));
        before = Some(account.to_string());
    }
}

/// Stores `m` with its due-index entry, replacing the one it had (`old_due`).
fn put_message(
    messages: &mut redb::Table<(&str, u64), &[u8]>,
    due: &mut redb::Table<(i64, &str, u64), ()>,
    m: &Message,
    old_due: Option<DateTime<Utc>>,
) -> StorageResult<()> {
    let key = (m.webhook_id.as_str(), m.seq);
    if let Some(at) = old_due {
        due.remove((due_key(at), key.0, key.1)).map_err(backend)?;
    }
    if let Some(at) = m.due_at() {
        due.insert((due_key(at), key.0, key.1), ()).map_err(backend)?;
    }
    messages.insert(key, encode(m)?.as_slice()).map_err(backend)?;
    Ok(())
}

#[async_trait]
impl EventLog for RedbStorage {
    async fn events_after(&self, account: &AccountId, after: u64, limit: usize) -> StorageResult<Vec<LoggedEvent>> {
        let account = account.0.clone();
        self.read_now(move |tx| {
            let Some(t) = optional_table(tx, EVENTS)? else { return Ok(vec![]) };
            let Some(from) = after.checked_add(1) else { return Ok(vec![]) };
            // The chunk holding `from` starts at or before it: the last chunk keyed ≤ `from`.
            let start = match t.range((&*account, 0)..=(&*account, from)).map_err(backend)?.next_back() {
                Some(item) => item.map_err(backend)?.0.value().1,
                None => from,
            };
            let mut out = Vec::new();
            for item in t.range((&*account, start)..=(&*account, u64::MAX)).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                out.extend(decode_chunk(&account, k.value().1, v.value())?.into_iter().filter(|e| e.seq > after));
                if out.len() >= limit {
                    break;
                }
            }
            out.truncate(limit);
            Ok(out)
        })
    }

    async fn events_head(&self) -> StorageResult<u64> {
        let db = self.db.read().map_err(backend)?;
        last_number(&db)
    }

    async fn events_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        self.write(move |tx| {
            let mut t = tx.open_table(EVENTS).map_err(backend)?;
            // Each account's chunks are in time order: take its old ones from the front, then
            // jump to the next account. A chunk goes whole, when its newest entry is older than
            // the cutoff (its entries were written together, within one group commit).
            let mut gone: Vec<(String, u64)> = Vec::new();
            let mut entries = 0;
            let mut from = String::new();
            'accounts: while entries < limit {
                let mut next_account: Option<String> = None;
                for item in t.range((from.as_str(), 0)..).map_err(backend)? {
                    let (k, v) = item.map_err(backend)?;
                    let (a, n) = k.value();
                    let chunk = decode_chunk(a, n, v.value())?;
                    if chunk.last().is_some_and(|e| e.at >= cutoff) {
                        next_account = Some(format!("{a}\0"));
                        break;
                    }
                    gone.push((a.to_string(), n));
                    entries += chunk.len();
                    if entries >= limit {
                        break 'accounts;
                    }
                }
                match next_account {
                    Some(a) => from = a,
                    None => break,
                }
            }
            for (a, n) in &gone {
                t.remove((a.as_str(), *n)).map_err(backend)?;
            }
            Ok(entries)
        })
        .await
    }
}

#[async_trait]
impl WebhookStore for RedbStorage {
    async fn webhook_put(&self, account: &AccountId, hook: Webhook) -> StorageResult<()> {
        let account = account.0.clone();
        let bytes = encode(&hook)?;
        self.write(move |tx| {
            let mut t = tx.open_table(WEBHOOKS).map_err(backend)?;
            t.insert((&*account, hook.id.as_str()), bytes.as_slice()).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn webhook_get(&self, account: &AccountId, id: &str) -> StorageResult<Option<Webhook>> {
        let account = account.0.clone();
        self.read_now(move |tx| {
            let Some(t) = optional_table(tx, WEBHOOKS)? else { return Ok(None) };
            t.get((&*account, id)).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn webhook_all(&self) -> StorageResult<Vec<(AccountId, Webhook)>> {
        self.read_now(|tx| {
            let Some(t) = optional_table(tx, WEBHOOKS)? else { return Ok(vec![]) };
            let mut out = Vec::new();
            for item in t.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                out.push((AccountId::new(k.value().0), decode(v.value())?));
            }
            Ok(out)
        })
    }

    async fn webhook_list(&self, account: &AccountId) -> StorageResult<Vec<Webhook>> {
        let account = account.0.clone();
        self.read_now(move |tx| match optional_table(tx, WEBHOOKS)? {
            Some(t) => account_values(&t, &account),
            None => Ok(vec![]),
        })
    }

    async fn webhook_delete(&self, account: &AccountId, id: &str) -> StorageResult<bool> {
        let (account, id) = (account.0.clone(), id.to_string());
        self.write(move |tx| {
            let mut hooks = tx.open_table(WEBHOOKS).map_err(backend)?;
            if hooks.remove((&*account, id.as_str())).map_err(backend)?.is_none() {
                return Ok(false);
            }
            let mut messages = tx.open_table(MESSAGES).map_err(backend)?;
            let mut due = tx.open_table(MESSAGE_DUE).map_err(backend)?;
            let mut gone = Vec::new();
            for item in messages.range((id.as_str(), 0)..=(id.as_str(), u64::MAX)).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let m: Message = decode(v.value())?;
                gone.push((k.value().1, m.due_at()));
            }
            for (n, at) in gone {
                messages.remove((id.as_str(), n)).map_err(backend)?;
                if let Some(at) = at {
                    due.remove((due_key(at), id.as_str(), n)).map_err(backend)?;
                }
            }
            Ok(true)
        })
        .await
    }

    async fn messages_enqueue(
        &self,
        account: &AccountId,
        id: &str,
        from: u64,
        to: u64,
        new: Vec<Message>,
    ) -> StorageResult<bool> {
        let (account, id) = (account.0.clone(), id.to_string());
        self.write(move |tx| {
            let mut hooks = tx.open_table(WEBHOOKS).map_err(backend)?;
            let current: Option<Webhook> =
                hooks.get((&*account, id.as_str())).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
            let Some(mut hook) = current.filter(|h| h.cursor == from) else { return Ok(false) };
            hook.cursor = to;
            let bytes = encode(&hook)?;
            hooks.insert((&*account, id.as_str()), bytes.as_slice()).map_err(backend)?;
            let mut messages = tx.open_table(MESSAGES).map_err(backend)?;
            let mut due = tx.open_table(MESSAGE_DUE).map_err(backend)?;
            // New messages: the cursor moves in this same write, so none of them exists yet.
            for m in &new {
                put_message(&mut messages, &mut due, m, None)?;
            }
            Ok(true)
        })
        .await
    }

    async fn messages_due(&self, now: DateTime<Utc>, limit: usize) -> StorageResult<Vec<Message>> {
        self.read_now(move |tx| {
            let (Some(due), Some(messages)) = (optional_table(tx, MESSAGE_DUE)?, optional_table(tx, MESSAGES)?) else {
                return Ok(vec![]);
            };
            let mut out = Vec::new();
            for item in due.range(..(due_key(now).saturating_add(1), "", 0)).map_err(backend)?.take(limit) {
                let (k, _) = item.map_err(backend)?;
                let (_, hook, n) = k.value();
                if let Some(v) = messages.get((hook, n)).map_err(backend)? {
                    out.push(decode(v.value())?);
                }
            }
            Ok(out)
        })
    }

    async fn message_put(
        &self,
        message: Message,
        attempt: Option<(AttemptResult, DateTime<Utc>)>,
    ) -> StorageResult<bool> {
        self.write(move |tx| {
            let mut messages = tx.open_table(MESSAGES).map_err(backend)?;
            let old: Option<Message> = messages
                .get((message.webhook_id.as_str(), message.seq))
                .map_err(backend)?
                .map(|v| decode(v.value()))
                .transpose()?;
            let Some(old) = old else { return Ok(false) };
            if let Some((result, at)) = attempt {
                let mut hooks = tx.open_table(WEBHOOKS).map_err(backend)?;
                let key = (message.account.as_str(), message.webhook_id.as_str());
                let current: Option<Webhook> =
                    hooks.get(key).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
                if let Some(mut hook) = current {
                    let health = health_after(hook.health, result, at);
                    // Most attempts leave a healthy endpoint healthy: then nothing is rewritten.
                    if health != hook.health {
                        hook.health = health;
                        hook.enabled &= !health.disabled;
                        hooks.insert(key, encode(&hook)?.as_slice()).map_err(backend)?;
                    }
                }
            }
            let mut due = tx.open_table(MESSAGE_DUE).map_err(backend)?;
            put_message(&mut messages, &mut due, &message, old.due_at())?;
            Ok(true)
        })
        .await
    }

    async fn messages_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        self.write(move |tx| {
            let mut t = tx.open_table(MESSAGES).map_err(backend)?;
            // Per endpoint, messages are in event order, so in time order: take its old ones
            // from the front (skipping those still due), then jump to the next endpoint.
            let mut gone: Vec<(String, u64)> = Vec::new();
            let mut from = String::new();
            'hooks: while gone.len() < limit {
                let mut next_hook: Option<String> = None;
                for item in t.range((from.as_str(), 0)..).map_err(backend)? {
                    let (k, v) = item.map_err(backend)?;
                    let (hook, n) = k.value();
                    let m: Message = decode(v.value())?;
                    if m.created_at >= cutoff {
                        next_hook = Some(format!("{hook}\0"));
                        break;
                    }
                    if m.due_at().is_none() {
                        gone.push((hook.to_string(), n));
                        if gone.len() == limit {
                            break 'hooks;
                        }
                    }
                }
                match next_hook {
                    Some(h) => from = h,
                    None => break,
                }
            }
            for (h, n) in &gone {
                t.remove((h.as_str(), *n)).map_err(backend)?;
            }
            Ok(gone.len())
        })
        .await
    }

    async fn message_get(&self, account: &AccountId, id: &str, seq: u64) -> StorageResult<Option<Message>> {
        let account = account.clone();
        self.read_now(move |tx| {
            let Some(t) = optional_table(tx, MESSAGES)? else { return Ok(None) };
            let m: Option<Message> = t.get((id, seq)).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
            Ok(m.filter(|m| m.account == account))
        })
    }

    async fn message_page(
        &self,
        account: &AccountId,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StorageResult<(Vec<Message>, bool)> {
        let account = account.clone();
        self.read_now(move |tx| {
            let Some(t) = optional_table(tx, MESSAGES)? else { return Ok((vec![], false)) };
            let upper = before.unwrap_or(u64::MAX);
            let mut out = Vec::new();
            let mut more = false;
            for item in t.range((id, 0)..(id, upper)).map_err(backend)?.rev() {
                let (_, v) = item.map_err(backend)?;
                let m: Message = decode(v.value())?;
                if m.account != account {
                    continue;
                }
                if out.len() == limit {
                    more = true;
                    break;
                }
                out.push(m);
            }
            Ok((out, more))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mailroom_core::email::{EmailId, Event, Hit};
    use mailroom_core::lifecycle::EventKind;

    /// A chunk written before events had `hit` reads; a new one keeps it.
    #[test]
    fn chunks_of_both_versions_read() {
        /// kind, at, recipient, bounce, reply, reason: an event as version 1 wrote it.
        type OldEvent = (EventKind, DateTime<Utc>, Option<String>, Option<()>, Option<()>, Option<String>);
        #[derive(Serialize)]
        enum OldSubject {
            Email { id: EmailId, event: OldEvent },
        }
        let at = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let id = EmailId::from_u128(5);
        let old = vec![(
            at,
            OldSubject::Email { id, event: (EventKind::Sent, at, Some("a@b.test".into()), None, None, None) },
        )];
        let entries = decode_chunk("acct", 7, &crate::codec::encode(&old).unwrap()).unwrap();
        let want = Event::new(EventKind::Sent, at).recipient("a@b.test");
        assert_eq!(entries[0].subject, Subject::Email { id, event: want });
        assert_eq!(entries[0].seq, 7);

        let hit =
            Hit { link: Some("https://x.test/".into()), ip: None, user_agent: None, machine: Some("scanner".into()) };
        let event = Event::new(EventKind::Clicked, at).hit(hit);
        let pending =
            vec![Pending { account: AccountId::new("acct"), at, subject: Subject::Email { id, event: event.clone() } }];
        let (_, n, bytes) = encode_chunks(pending).unwrap().remove(0);
        assert_eq!(n, 1);
        assert_eq!(decode_chunk("acct", 1, &bytes).unwrap()[0].subject, Subject::Email { id, event });
    }
}
