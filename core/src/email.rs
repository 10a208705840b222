//! Stored emails: ids, accounts, content, events, delivery state, and the wire views.
//!
//! Invariants: an [`EmailContent`] never changes after acceptance; an [`EmailState`]'s events
//! only grow, each one allowed by [`crate::lifecycle`] after the one before; `last_event` is
//! always the newest event; a claim is held by exactly one token until it expires.

use crate::address::Mailbox;
use crate::bounce::{BounceInfo, SmtpReply};
use crate::error::{FieldError, Rule};
use crate::lifecycle::{EventKind, TransitionError, transition};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// An email's id: a UUIDv7 whose leading 48 bits are its creation time in milliseconds, so
/// ordering ids orders emails by creation time (the listing index relies on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EmailId(pub Uuid);

impl EmailId {
    pub fn as_u128(self) -> u128 {
        self.0.as_u128()
    }
    pub fn from_u128(v: u128) -> Self {
        EmailId(Uuid::from_u128(v))
    }
}

impl fmt::Display for EmailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for EmailId {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        Uuid::parse_str(s.trim()).map(EmailId).map_err(|_| FieldError::new("id", Rule::InvalidId))
    }
}

/// The tenant an email belongs to (the hosted service's "team"). A single-account host
/// never names it: everything lands in [`AccountId::default`].
///
/// Shared, immutable text: every stored record carries its account, and cloning one is a
/// reference-count increment, not an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub std::sync::Arc<str>);

impl Default for AccountId {
    fn default() -> Self {
        AccountId("default".into())
    }
}

impl AccountId {
    pub fn new(s: impl AsRef<str>) -> Self {
        AccountId(s.as_ref().into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub name: String,
    pub value: String,
}

/// A decoded attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub id: Uuid,
    pub filename: Option<String>,
    pub content_type: String,
    /// Present: inline, referenced from the html as `cid:<content_id>`.
    pub content_id: Option<String>,
    #[serde(with = "serde_bytes")]
    pub content: Vec<u8>,
}

/// What was accepted; immutable afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailContent {
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    #[serde(default)]
    pub cc: Vec<Mailbox>,
    #[serde(default)]
    pub bcc: Vec<Mailbox>,
    #[serde(default)]
    pub reply_to: Vec<Mailbox>,
    pub subject: String,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub topic_id: Option<String>,
    /// `<id@sender-domain>`, fixed at acceptance so every attempt carries the same one.
    pub message_id: String,
    /// The API key the email was accepted with (the HTTP adapter's): a scheduled email whose
    /// key is revoked before it falls due is not sent. Last, so that stores can read records
    /// written before it existed.
    #[serde(default)]
    pub api_key_id: Option<String>,
}

impl EmailContent {
    /// Every envelope recipient (to, cc, bcc), each once, by [`Mailbox::key`].
    pub fn recipients(&self) -> Vec<&Mailbox> {
        let mut seen = std::collections::HashSet::new();
        self.to.iter().chain(&self.cc).chain(&self.bcc).filter(|m| seen.insert(m.key())).collect()
    }
}

/// One event on an email.
///
/// Stored types carry every field always (the stores use a compact binary encoding without
/// field names); [`EventView`] is the wire form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    /// The recipient the event is about, for per-recipient events.
    pub recipient: Option<String>,
    pub bounce: Option<BounceInfo>,
    /// The server's reply behind this event, kept exactly.
    pub reply: Option<SmtpReply>,
    /// Why, for `failed`, `suppressed` and `canceled`.
    pub reason: Option<String>,
}

/// An event as the wire shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<BounceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> Self {
        EventView {
            kind: e.kind,
            created_at: rfc3339(e.at),
            recipient: e.recipient.clone(),
            bounce: e.bounce.clone(),
            reply: e.reply.as_ref().map(ToString::to_string),
            reason: e.reason.clone(),
        }
    }
}

impl Event {
    pub fn new(kind: EventKind, at: DateTime<Utc>) -> Self {
        Event { kind, at, recipient: None, bounce: None, reply: None, reason: None }
    }
    pub fn recipient(mut self, r: impl Into<String>) -> Self {
        self.recipient = Some(r.into());
        self
    }
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    pub fn reply(mut self, r: SmtpReply) -> Self {
        self.reply = Some(r);
        self
    }
    pub fn bounce(mut self, b: BounceInfo) -> Self {
        self.bounce = Some(b);
        self
    }
}

/// A worker's hold on an email, until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub token: u128,
    pub until: DateTime<Utc>,
}

/// The mutable half of an email: its events and delivery bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailState {
    pub account: AccountId,
    pub id: EmailId,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub scheduled_at: Option<DateTime<Utc>>,
    pub events: Vec<Event>,
    /// When the worker should next look at this email; `None` once nothing more is due.
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub claim: Option<Claim>,
    /// Set durably just before the message is handed to the transport, cleared when the
    /// outcome is recorded. Found set by a later claim, it means the process died between
    /// hand-over and recording: the message may have left, so it is never handed over again.
    #[serde(default)]
    pub handed_over: bool,
    /// Completed delivery attempts.
    #[serde(default)]
    pub attempts: u32,
    /// Recipients still to be attempted after a deferral (empty: all of them).
    #[serde(default)]
    pub pending: Vec<String>,
    /// When retention removed this email's bodies and old events (ids and metadata stay).
    #[serde(default)]
    pub pruned_at: Option<DateTime<Utc>>,
}

impl EmailState {
    pub fn last_event(&self) -> Option<EventKind> {
        self.events.last().map(|e| e.kind)
    }

    /// Appends `event` if the lifecycle allows it after the current last event.
    pub fn push(&mut self, event: Event) -> Result<(), TransitionError> {
        transition(self.last_event(), event.kind)?;
        self.events.push(event);
        Ok(())
    }

    /// Whether some worker holds an unexpired claim at `now`.
    pub fn is_claimed(&self, now: DateTime<Utc>) -> bool {
        self.claim.is_some_and(|c| c.until > now)
    }
}

/// An email ready to be stored: content plus the first event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEmail {
    pub account: AccountId,
    pub id: EmailId,
    pub created_at: DateTime<Utc>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub content: EmailContent,
}

impl NewEmail {
    /// The state a fresh email starts in: `scheduled` or `queued`, due at once or at its time.
    pub fn initial_state(&self) -> EmailState {
        let kind = if self.scheduled_at.is_some() { EventKind::Scheduled } else { EventKind::Queued };
        EmailState {
            account: self.account.clone(),
            id: self.id,
            created_at: self.created_at,
            scheduled_at: self.scheduled_at,
            events: vec![Event::new(kind, self.created_at)],
            due_at: Some(self.scheduled_at.unwrap_or(self.created_at)),
            claim: None,
            handed_over: false,
            attempts: 0,
            pending: Vec::new(),
            pruned_at: None,
        }
    }
}

/// A whole stored email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRecord {
    pub content: EmailContent,
    pub state: EmailState,
}

/// The timestamp format of the hosted service's examples: `2023-04-03 22:13:42.674981+00`.
pub fn wire_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

/// RFC 3339 with milliseconds and `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn addresses(list: &[Mailbox]) -> Option<Vec<String>> {
    if list.is_empty() { None } else { Some(list.iter().map(ToString::to_string).collect()) }
}

/// `GET /emails/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailView {
    pub object: String,
    pub id: EmailId,
    pub to: Vec<String>,
    pub from: String,
    pub created_at: String,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    pub bcc: Option<Vec<String>>,
    pub cc: Option<Vec<String>>,
    pub reply_to: Option<Vec<String>>,
    pub last_event: Option<EventKind>,
    pub scheduled_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    pub message_id: String,
    /// Beyond the hosted service: the whole ordered history.
    pub events: Vec<EventView>,
}

impl From<&EmailRecord> for EmailView {
    fn from(r: &EmailRecord) -> Self {
        let c = &r.content;
        EmailView {
            object: "email".into(),
            id: r.state.id,
            to: c.to.iter().map(ToString::to_string).collect(),
            from: c.from.to_string(),
            created_at: wire_time(r.state.created_at),
            subject: c.subject.clone(),
            html: c.html.clone(),
            text: c.text.clone(),
            bcc: addresses(&c.bcc),
            cc: addresses(&c.cc),
            reply_to: addresses(&c.reply_to),
            last_event: r.state.last_event(),
            scheduled_at: r.state.scheduled_at.map(rfc3339),
            tags: c.tags.clone(),
            topic_id: c.topic_id.clone(),
            message_id: c.message_id.clone(),
            events: r.state.events.iter().map(EventView::from).collect(),
        }
    }
}

/// One item of `GET /emails`: the email minus html, text and tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSummary {
    pub id: EmailId,
    pub to: Vec<String>,
    pub from: String,
    pub created_at: String,
    pub subject: String,
    pub bcc: Option<Vec<String>>,
    pub cc: Option<Vec<String>>,
    pub reply_to: Option<Vec<String>>,
    pub last_event: Option<EventKind>,
    pub scheduled_at: Option<String>,
}

impl From<&EmailRecord> for EmailSummary {
    fn from(r: &EmailRecord) -> Self {
        let c = &r.content;
        EmailSummary {
            id: r.state.id,
            to: c.to.iter().map(ToString::to_string).collect(),
            from: c.from.to_string(),
            created_at: wire_time(r.state.created_at),
            subject: c.subject.clone(),
            bcc: addresses(&c.bcc),
            cc: addresses(&c.cc),
            reply_to: addresses(&c.reply_to),
            last_event: r.state.last_event(),
            scheduled_at: r.state.scheduled_at.map(rfc3339),
        }
    }
}

/// Cursor pagination, newest first. `after` pages towards older emails, `before` towards
/// newer ones; they exclude each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Cursor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cursor {
    #[default]
    Start,
    After(EmailId),
    Before(EmailId),
}

impl PageRequest {
    pub const MAX_LIMIT: usize = 100;
    pub const DEFAULT_LIMIT: usize = 20;

    /// Checks `limit` (1 to 100) and that at most one cursor is given.
    pub fn new(
        limit: Option<usize>,
        after: Option<EmailId>,
        before: Option<EmailId>,
    ) -> Result<PageRequest, FieldError> {
        let limit = limit.unwrap_or(Self::DEFAULT_LIMIT);
        if limit == 0 {
            return Err(FieldError::new("limit", Rule::TooFew { min: 1, got: 0 }));
        }
        if limit > Self::MAX_LIMIT {
            return Err(FieldError::new("limit", Rule::TooMany { max: Self::MAX_LIMIT, got: limit }));
        }
        let cursor = match (after, before) {
            (Some(_), Some(_)) => return Err(FieldError::new("before", Rule::Exclusive("after"))),
            (Some(a), None) => Cursor::After(a),
            (None, Some(b)) => Cursor::Before(b),
            (None, None) => Cursor::Start,
        };
        Ok(PageRequest { limit, cursor })
    }
}

/// One page, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// More items exist beyond this page in the direction of travel.
    pub has_more: bool,
}

/// `{"object":"list","has_more":…,"data":[…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse<T> {
    pub object: String,
    pub has_more: bool,
    pub data: Vec<T>,
}

impl<T> From<Page<T>> for ListResponse<T> {
    fn from(p: Page<T>) -> Self {
        ListResponse { object: "list".into(), has_more: p.has_more, data: p.items }
    }
}
