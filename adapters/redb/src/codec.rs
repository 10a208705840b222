//! How records are laid out as bytes: a one-byte format version, then postcard (a compact
//! binary serde format without field names); email content compressed with zstd.
//!
//! Invariants: every layout ever written still reads (a new layout gets a new version byte
//! and a decoder beside the old ones); encoding never depends on anything but the value.
//!
//! Why compression (`mailroom_core::compression::pack`, for content up to its
//! `COMPRESS_UP_TO`): redb keeps a value larger than about half a page on pages of its own, so
//! a 2 KB html email took a whole 4 KB page and more (the file was 2.9 × the payload).
//! Compressed, a typical email fits inline in a leaf page beside others.

use chrono::{DateTime, Utc};
use mailroom_core::bounce::{BounceInfo, SmtpReply};
use mailroom_core::compression::{pack, unpack};
use mailroom_core::domains::Domain;
use mailroom_core::email::{AccountId, Claim, EmailContent, EmailId, EmailState, Event, Hit};
use mailroom_core::error::StorageError;
use mailroom_core::lifecycle::EventKind;
use mailroom_core::ports::ApiKeyRecord;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first byte of every stored value other than content and keys.
pub(crate) const FORMAT_V1: u8 = 1;
/// Email content from the version that added `api_key_id` (an `Option`, last): a version-1
/// content record reads as version 2 with postcard's `None` (one zero byte) appended.
pub(crate) const CONTENT_V2: u8 = 2;
/// Version-2 content, zstd-compressed.
pub(crate) const CONTENT_V3: u8 = 3;
/// Content from the version that added `unsubscribe` (a bool, last): versions 2 and 3 read
/// as version 4 with postcard's `false` (one zero byte) appended.
pub(crate) const CONTENT_V4: u8 = 4;
/// Version-4 content, zstd-compressed.
pub(crate) const CONTENT_V5: u8 = 5;
/// Email states with times as whole seconds and nanoseconds (two varints) instead of RFC 3339
/// text: a state is read and written at least three times on its way out (claim, hand-over,
/// outcome), and formatting and parsing its times was a tenth of the delivery path's work.
/// Version-1 states (postcard of `EmailState`, times as text) still read.
pub(crate) const STATE_V2: u8 = 2;
/// Version-2 states whose events carry `hit` (who opened or clicked), last in each event.
pub(crate) const STATE_V3: u8 = 3;
/// API keys from the version that added `managed` (a bool, last): a version-1 key record
/// reads as version 2 with postcard's `false` (one zero byte) appended.
pub(crate) const KEY_V2: u8 = 2;
/// API keys from the version that added `last_used_at` (an `Option`, last): a version-2 key
/// reads as version 3 with postcard's `None` appended, a version-1 key with both defaults.
pub(crate) const KEY_V3: u8 = 3;

/// Domains from the version that added DNS records, keys and verification
/// ([`mailroom_core::domains::Domain`]); a version-1 domain (a name and two tracking flags)
/// reads as a domain with no key and nothing checked, its id derived from account and name.
pub(crate) const DOMAIN_V2: u8 = 2;

fn corrupt(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(e.to_string())
}

/// An email's content as stored.
pub(crate) fn encode_content(c: &EmailContent) -> Result<Vec<u8>, StorageError> {
    let mut plain = Vec::with_capacity(c.encoded_size_hint());
    plain.push(CONTENT_V4);
    postcard::to_io(c, &mut plain).map_err(corrupt)?;
    Ok(pack(plain, CONTENT_V5))
}

/// Decodes a version-1 record whose version 2 added one last field whose default encodes as
/// a single zero byte (`None`, `false`): the bytes as version 2 with that byte appended.
fn decode_v1_with_default_last<T: DeserializeOwned>(rest: &[u8]) -> Result<T, StorageError> {
    let mut v2 = Vec::with_capacity(rest.len() + 1);
    v2.extend_from_slice(rest);
    v2.push(0);
    postcard::from_bytes(&v2).map_err(corrupt)
}

pub(crate) fn decode_content(bytes: &[u8]) -> Result<EmailContent, StorageError> {
    match bytes.split_first() {
        Some((&CONTENT_V5, rest)) => postcard::from_bytes(&unpack(rest)?).map_err(corrupt),
        Some((&CONTENT_V4, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&CONTENT_V3, rest)) => decode_v1_with_default_last(&unpack(rest)?),
        Some((&CONTENT_V2, rest)) => decode_v1_with_default_last(rest),
        // Version 1 lacked `api_key_id` too: two defaults appended.
        Some((&FORMAT_V1, rest)) => decode_v1_with_default_last(&[rest, &[0]].concat()),
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown content format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

pub(crate) fn encode_key(account: &str, key: &ApiKeyRecord) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![KEY_V3];
    postcard::to_io(&(account, key), &mut out).map_err(corrupt)?;
    Ok(out)
}

pub(crate) fn decode_key(bytes: &[u8]) -> Result<(String, ApiKeyRecord), StorageError> {
    match bytes.split_first() {
        Some((&KEY_V3, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&KEY_V2, rest)) => decode_v1_with_default_last(rest),
        Some((&FORMAT_V1, rest)) => decode_v1_with_default_last(&[rest, &[0]].concat()),
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown key format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

pub(crate) fn encode_domain(d: &Domain) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![DOMAIN_V2];
    postcard::to_io(d, &mut out).map_err(corrupt)?;
    Ok(out)
}

/// A domain as version 1 stored it.
#[derive(serde::Deserialize)]
struct DomainV1 {
    name: String,
    click_tracking: bool,
    open_tracking: bool,
    created_at: DateTime<Utc>,
}

pub(crate) fn decode_domain(account: &str, bytes: &[u8]) -> Result<Domain, StorageError> {
    match bytes.split_first() {
        Some((&DOMAIN_V2, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&FORMAT_V1, rest)) => {
            let v1: DomainV1 = postcard::from_bytes(rest).map_err(corrupt)?;
            Ok(Domain::legacy(account, v1.name, v1.click_tracking, v1.open_tracking, v1.created_at))
        }
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown domain format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

/// A time as stored in a version-2 state.
#[derive(serde::Serialize, serde::Deserialize)]
struct Ts(i64, u32);

impl From<DateTime<Utc>> for Ts {
    fn from(t: DateTime<Utc>) -> Ts {
        Ts(t.timestamp(), t.timestamp_subsec_nanos())
    }
}

impl TryFrom<Ts> for DateTime<Utc> {
    type Error = StorageError;
    fn try_from(t: Ts) -> Result<DateTime<Utc>, StorageError> {
        DateTime::from_timestamp(t.0, t.1).ok_or_else(|| corrupt(format!("a time out of range: {} s {} ns", t.0, t.1)))
    }
}

fn time(t: Option<Ts>) -> Result<Option<DateTime<Utc>>, StorageError> {
    t.map(DateTime::try_from).transpose()
}

/// A version-2 state as written, borrowing from the state.
#[derive(serde::Serialize)]
struct StateOut<'a> {
    account: &'a AccountId,
    id: EmailId,
    created_at: Ts,
    scheduled_at: Option<Ts>,
    events: EventsOut<'a>,
    due_at: Option<Ts>,
    claim: Option<(u128, Ts)>,
    handed_over: bool,
    attempts: u32,
    pending: &'a [String],
    pruned_at: Option<Ts>,
}

/// The events, with `hit` (version 3) or without (version 2, for the tests of old layouts).
struct EventsOut<'a>(&'a [Event], bool);

impl Serialize for EventsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for e in self.0 {
            let out = EventOut {
                kind: e.kind,
                at: e.at.into(),
                recipient: e.recipient.as_deref(),
                bounce: e.bounce.as_ref(),
                reply: e.reply.as_ref(),
                reason: e.reason.as_deref(),
            };
            if self.1 { seq.serialize_element(&(out, e.hit.as_deref()))? } else { seq.serialize_element(&out)? }
        }
        seq.end()
    }
}

#[derive(serde::Serialize)]
struct EventOut<'a> {
    kind: EventKind,
    at: Ts,
    recipient: Option<&'a str>,
    bounce: Option<&'a BounceInfo>,
    reply: Option<&'a SmtpReply>,
    reason: Option<&'a str>,
}

/// A version-2 or -3 state as read (events of either version).
#[derive(serde::Deserialize)]
struct StateIn<E> {
    account: AccountId,
    id: EmailId,
    created_at: Ts,
    scheduled_at: Option<Ts>,
    events: Vec<E>,
    due_at: Option<Ts>,
    claim: Option<(u128, Ts)>,
    handed_over: bool,
    attempts: u32,
    pending: Vec<String>,
    pruned_at: Option<Ts>,
}

/// An event as a version-2 state holds it.
#[derive(serde::Deserialize)]
struct EventInV2 {
    kind: EventKind,
    at: Ts,
    recipient: Option<String>,
    bounce: Option<BounceInfo>,
    reply: Option<SmtpReply>,
    reason: Option<String>,
}

/// An event as a version-3 state holds it.
#[derive(serde::Deserialize)]
struct EventIn {
    kind: EventKind,
    at: Ts,
    recipient: Option<String>,
    bounce: Option<BounceInfo>,
    reply: Option<SmtpReply>,
    reason: Option<String>,
    hit: Option<Hit>,
}

impl From<EventInV2> for EventIn {
    fn from(e: EventInV2) -> EventIn {
        EventIn {
            kind: e.kind,
            at: e.at,
            recipient: e.recipient,
            bounce: e.bounce,
            reply: e.reply,
            reason: e.reason,
            hit: None,
        }
    }
}

/// An email's state as stored, with its claim and due time replaced by `claim` and `due`
/// (the store keeps claims in memory and due times as the index has them).
pub(crate) fn encode_state(
    s: &EmailState,
    claim: Option<Claim>,
    due: Option<DateTime<Utc>>,
) -> Result<Vec<u8>, StorageError> {
    encode_state_as(STATE_V3, s, claim, due)
}

fn encode_state_as(
    version: u8,
    s: &EmailState,
    claim: Option<Claim>,
    due: Option<DateTime<Utc>>,
) -> Result<Vec<u8>, StorageError> {
    let out = StateOut {
        account: &s.account,
        id: s.id,
        created_at: s.created_at.into(),
        scheduled_at: s.scheduled_at.map(Ts::from),
        events: EventsOut(&s.events, version >= STATE_V3),
        due_at: due.map(Ts::from),
        claim: claim.map(|c| (c.token, c.until.into())),
        handed_over: s.handed_over,
        attempts: s.attempts,
        pending: &s.pending,
        pruned_at: s.pruned_at.map(Ts::from),
    };
    let mut bytes = Vec::with_capacity(128 + 64 * s.events.len());
    bytes.push(version);
    postcard::to_io(&out, &mut bytes).map_err(corrupt)?;
    Ok(bytes)
}

pub(crate) fn decode_state(bytes: &[u8]) -> Result<EmailState, StorageError> {
    match bytes.split_first() {
        Some((&STATE_V3, rest)) => state_from(postcard::from_bytes::<StateIn<EventIn>>(rest).map_err(corrupt)?),
        Some((&STATE_V2, rest)) => {
            let s: StateIn<EventInV2> = postcard::from_bytes(rest).map_err(corrupt)?;
            state_from(StateIn {
                account: s.account,
                id: s.id,
                created_at: s.created_at,
                scheduled_at: s.scheduled_at,
                events: s.events.into_iter().map(EventIn::from).collect(),
                due_at: s.due_at,
                claim: s.claim,
                handed_over: s.handed_over,
                attempts: s.attempts,
                pending: s.pending,
                pruned_at: s.pruned_at,
            })
        }
        Some((&FORMAT_V1, rest)) => {
            let s: StateV1 = postcard::from_bytes(rest).map_err(corrupt)?;
            let events = s.events.into_iter().map(|e| e.into_event()).collect();
            Ok(EmailState {
                account: s.account,
                id: s.id,
                created_at: s.created_at,
                scheduled_at: s.scheduled_at,
                events,
                due_at: s.due_at,
                claim: s.claim,
                handed_over: s.handed_over,
                attempts: s.attempts,
                pending: s.pending,
                pruned_at: s.pruned_at,
            })
        }
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown state format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

fn state_from(s: StateIn<EventIn>) -> Result<EmailState, StorageError> {
    let events = s
        .events
        .into_iter()
        .map(|e| {
            Ok(Event {
                kind: e.kind,
                at: e.at.try_into()?,
                recipient: e.recipient,
                bounce: e.bounce,
                reply: e.reply,
                reason: e.reason,
                hit: e.hit.map(Box::new),
            })
        })
        .collect::<Result<Vec<_>, StorageError>>()?;
    let claim = match s.claim {
        Some((token, until)) => Some(Claim { token, until: until.try_into()? }),
        None => None,
    };
    Ok(EmailState {
        account: s.account,
        id: s.id,
        created_at: s.created_at.try_into()?,
        scheduled_at: time(s.scheduled_at)?,
        events,
        due_at: time(s.due_at)?,
        claim,
        handed_over: s.handed_over,
        attempts: s.attempts,
        pending: s.pending,
        pruned_at: time(s.pruned_at)?,
    })
}

/// An event as written before events had `hit` (version-1 states and event-log chunks): the
/// serde form of the event of that time.
#[derive(serde::Deserialize)]
pub(crate) struct EventV1 {
    kind: EventKind,
    at: DateTime<Utc>,
    recipient: Option<String>,
    bounce: Option<BounceInfo>,
    reply: Option<SmtpReply>,
    reason: Option<String>,
}

impl EventV1 {
    pub(crate) fn into_event(self) -> Event {
        Event {
            kind: self.kind,
            at: self.at,
            recipient: self.recipient,
            bounce: self.bounce,
            reply: self.reply,
            reason: self.reason,
            hit: None,
        }
    }
}

/// A version-1 state: the serde form of the state of that time.
#[derive(serde::Deserialize)]
struct StateV1 {
    account: AccountId,
    id: EmailId,
    created_at: DateTime<Utc>,
    #[serde(default)]
    scheduled_at: Option<DateTime<Utc>>,
    events: Vec<EventV1>,
    #[serde(default)]
    due_at: Option<DateTime<Utc>>,
    #[serde(default)]
    claim: Option<Claim>,
    #[serde(default)]
    handed_over: bool,
    #[serde(default)]
    attempts: u32,
    #[serde(default)]
    pending: Vec<String>,
    #[serde(default)]
    pruned_at: Option<DateTime<Utc>>,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    let mut out = vec![FORMAT_V1];
    postcard::to_io(v, &mut out).map_err(corrupt)?;
    Ok(out)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown record format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mailroom_core::compression::{COMPRESS_UP_TO, compress};

    /// A domain written by the version before keys and records reads, with an id that is the
    /// same at every read and differs by account.
    #[test]
    fn version_1_domains_still_read() {
        #[derive(serde::Serialize)]
        struct V1 {
            name: String,
            click_tracking: bool,
            open_tracking: bool,
            created_at: DateTime<Utc>,
        }
        let at = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let v1 = V1 { name: "acme.test".into(), click_tracking: true, open_tracking: false, created_at: at };
        let bytes = encode(&v1).unwrap();
        let d = decode_domain("a", &bytes).unwrap();
        assert_eq!((d.name.as_str(), d.click_tracking, d.open_tracking, d.created_at), ("acme.test", true, false, at));
        assert!(d.keys.is_empty() && d.next_check.is_none() && d.version == 1);
        assert_eq!(decode_domain("a", &bytes).unwrap().id, d.id);
        assert_ne!(decode_domain("b", &bytes).unwrap().id, d.id);
        let again = decode_domain("a", &encode_domain(&d).unwrap()).unwrap();
        assert_eq!(again, d);
        assert!(decode_domain("a", &[9, 1, 2]).is_err());
    }

    #[test]
    fn content_written_by_every_version_still_reads() {
        let mut new = mailroom_core::testkit::new_email("a", mailroom_core::testkit::t0(), 1, None);
        new.content.html = Some(mailroom_core::testkit::sample_html(7));
        let v5 = encode_content(&new.content).unwrap();
        assert_eq!(v5[0], CONTENT_V5, "a typical email is stored compressed");
        assert!(v5.len() * 2 < new.content.html.as_ref().unwrap().len(), "{} bytes", v5.len());
        assert_eq!(decode_content(&v5).unwrap(), new.content);
        // Version 4: postcard as it is; 2: without the trailing `false` (unsubscribe); 3: 2
        // compressed; 1: 2 without the `None` before it (api_key_id).
        let mut v4 = vec![CONTENT_V4];
        postcard::to_io(&new.content, &mut v4).unwrap();
        assert_eq!(decode_content(&v4).unwrap(), new.content);
        assert_eq!(&v4[v4.len() - 2..], &[0, 0]);
        let mut v2 = v4[..v4.len() - 1].to_vec();
        v2[0] = CONTENT_V2;
        assert_eq!(decode_content(&v2).unwrap(), new.content);
        let mut v3 = vec![CONTENT_V3];
        v3.extend(compress(&v2[1..]).unwrap());
        assert_eq!(decode_content(&v3).unwrap(), new.content);
        let mut v1 = v2[..v2.len() - 1].to_vec();
        v1[0] = FORMAT_V1;
        assert_eq!(decode_content(&v1).unwrap(), new.content);
        new.content.api_key_id = Some("key-1".into());
        new.content.unsubscribe = true;
        assert_eq!(decode_content(&encode_content(&new.content).unwrap()).unwrap(), new.content);
        assert!(decode_content(&[9, 0]).is_err());
        assert!(decode_content(&[CONTENT_V3, 1, 2, 3]).is_err());
    }

    /// A state as version 1 wrote it: serde's form of the state of that time.
    fn v1_bytes(state: &EmailState) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct E<'a>(
            EventKind,
            DateTime<Utc>,
            &'a Option<String>,
            &'a Option<BounceInfo>,
            &'a Option<SmtpReply>,
            &'a Option<String>,
        );
        let events: Vec<E<'_>> =
            state.events.iter().map(|e| E(e.kind, e.at, &e.recipient, &e.bounce, &e.reply, &e.reason)).collect();
        let fields = (
            &state.account,
            state.id,
            state.created_at,
            state.scheduled_at,
            events,
            state.due_at,
            state.claim,
            state.handed_over,
            state.attempts,
            &state.pending,
            state.pruned_at,
        );
        encode(&fields).unwrap()
    }

    #[test]
    fn states_written_by_every_version_still_read() {
        use mailroom_core::bounce::SmtpReply;
        let t0 = mailroom_core::testkit::t0();
        let new = mailroom_core::testkit::new_email("a", t0, 1, Some(t0 + chrono::Duration::hours(1)));
        let mut state = new.initial_state();
        // Every field set, times with nanoseconds, and a time far outside the usual range.
        state.events.push(
            Event::new(EventKind::Bounced, t0 + chrono::Duration::nanoseconds(123_456_789))
                .recipient("b@example.com")
                .reply(SmtpReply::new(550, "5.1.1", "no such user"))
                .reason("why"),
        );
        state.claim = Some(Claim { token: u128::MAX - 7, until: t0 + chrono::Duration::minutes(5) });
        state.handed_over = true;
        state.attempts = 3;
        state.pending = vec!["b@example.com".into()];
        state.pruned_at = DateTime::from_timestamp(-62_000_000_000, 999_999_999);
        // Version 2 and 1 know no `hit`: written without it, read back with none.
        let v2 = encode_state_as(STATE_V2, &state, state.claim, state.due_at).unwrap();
        assert_eq!(decode_state(&v2).unwrap(), state);
        let v1 = v1_bytes(&state);
        assert_eq!(decode_state(&v1).unwrap(), state);
        assert!(v2.len() * 3 < v1.len() * 2, "{} bytes against {}", v2.len(), v1.len());
        state.events.push(Event::new(EventKind::Clicked, t0).hit(Hit {
            link: Some("https://acme.test/x".into()),
            ip: Some("192.0.2.1".into()),
            user_agent: Some("UA".into()),
            machine: None,
        }));
        let v3 = encode_state(&state, state.claim, state.due_at).unwrap();
        assert_eq!(v3[0], STATE_V3);
        assert_eq!(decode_state(&v3).unwrap(), state);
        // The claim and due time written are the ones given.
        let bare = decode_state(&encode_state(&state, None, None).unwrap()).unwrap();
        assert_eq!((bare.claim, bare.due_at), (None, None));
        assert!(decode_state(&[9]).is_err());
        assert!(decode_state(&[STATE_V2, 1, 2]).is_err());
        assert!(decode_state(&[]).is_err());
    }

    #[test]
    fn incompressible_and_large_content_is_stored_as_it_is() {
        let mut new = mailroom_core::testkit::new_email("a", mailroom_core::testkit::t0(), 1, None);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        new.content.html = None;
        new.content.attachments = vec![mailroom_core::email::Attachment {
            id: uuid::Uuid::nil(),
            filename: Some("noise.bin".into()),
            content_type: "application/octet-stream".into(),
            content_id: None,
            content: noise,
        }];
        assert_eq!(encode_content(&new.content).unwrap()[0], CONTENT_V4);
        new.content.attachments[0].content = vec![b'a'; COMPRESS_UP_TO + 1];
        assert_eq!(encode_content(&new.content).unwrap()[0], CONTENT_V4, "large: not compressed");
    }

    #[test]
    fn keys_written_before_the_managed_flag_or_the_last_use_still_read() {
        let mut key = mailroom_core::testkit::sample_key();
        let v3 = encode_key("acct", &key).unwrap();
        assert_eq!(v3[0], KEY_V3);
        assert_eq!(&v3[v3.len() - 2..], &[0, 0], "managed = false, then last_used_at = None: a zero byte each");
        let mut v2 = v3[..v3.len() - 1].to_vec();
        v2[0] = KEY_V2;
        assert_eq!(decode_key(&v2).ok(), Some(("acct".to_string(), key.clone())));
        let mut v1 = v3[..v3.len() - 2].to_vec();
        v1[0] = FORMAT_V1;
        assert_eq!(decode_key(&v1).ok(), Some(("acct".to_string(), key.clone())));
        // A recorded use survives the round trip.
        assert!(key.touch(mailroom_core::testkit::t0() + chrono::Duration::seconds(90)));
        assert_eq!(decode_key(&encode_key("acct", &key).unwrap()).ok(), Some(("acct".to_string(), key)));
    }
}
