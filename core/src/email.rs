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
    /// The id as a number (its time prefix in the high bits).
    pub fn as_u128(self) -> u128 {
        self.0.as_u128()
    }
    /// The id from a number ([`EmailId::as_u128`]'s inverse).
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
        EmailId::parse_as("id", s)
    }
}

impl EmailId {
    /// Parses `s` given as `field` (a cursor, `after` or `before`): refused under that name,
    /// which is the one the caller wrote, rather than as an `id` it never sent.
    pub fn parse_as(field: &str, s: &str) -> Result<EmailId, FieldError> {
        Uuid::parse_str(s.trim()).map(EmailId).map_err(|_| FieldError::new(field, Rule::InvalidId))
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
        AccountId(Self::DEFAULT.into())
    }
}

impl AccountId {
    /// The default account's name.
    pub const DEFAULT: &'static str = "default";

    /// Whether this is the default account (without making one to compare with: that
    /// allocates).
    pub fn is_default(&self) -> bool {
        &*self.0 == Self::DEFAULT
    }

    /// An account of that name.
    pub fn new(s: impl AsRef<str>) -> Self {
        AccountId(s.as_ref().into())
    }
    /// Its name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag: a name and a value, each `[A-Za-z0-9_-]`, up to 256 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The tag's name.
    pub name: String,
    /// The tag's value.
    pub value: String,
}

/// A decoded attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The attachment's own id (`GET /emails/{id}/attachments/{attachment_id}`).
    pub id: Uuid,
    /// Its file name, as given (rendering encodes it).
    pub filename: Option<String>,
    /// Its MIME type.
    pub content_type: String,
    /// Present: inline, referenced from the html as `cid:<content_id>`.
    pub content_id: Option<String>,
    /// The bytes, decoded.
    #[serde(with = "serde_bytes")]
    pub content: Vec<u8>,
}

/// What was accepted; immutable afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailContent {
    /// The sender.
    pub from: Mailbox,
    /// The recipients in `To` (1 to 50).
    pub to: Vec<Mailbox>,
    /// The recipients in `Cc`.
    #[serde(default)]
    pub cc: Vec<Mailbox>,
    /// The recipients only the envelope names (never in a header).
    #[serde(default)]
    pub bcc: Vec<Mailbox>,
    /// Where replies go.
    #[serde(default)]
    pub reply_to: Vec<Mailbox>,
    /// The subject.
    pub subject: String,
    /// The HTML body.
    #[serde(default)]
    pub html: Option<String>,
    /// The plain-text body.
    #[serde(default)]
    pub text: Option<String>,
    /// Custom headers, in the order given (reserved names refused at validation).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Attachments, inline images included.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The hosted service's topic, kept as given.
    #[serde(default)]
    pub topic_id: Option<String>,
    /// `<id@sender-domain>`, fixed at acceptance so every attempt carries the same one.
    pub message_id: String,
    /// The API key the email was accepted with (the HTTP adapter's): a scheduled email whose
    /// key is revoked before it falls due is not sent. Last, so that stores can read records
    /// written before it existed.
    #[serde(default)]
    pub api_key_id: Option<String>,
    /// One-click unsubscribe (RFC 8058) for its one recipient.
    #[serde(default)]
    pub unsubscribe: bool,
}

impl EmailContent {
    /// About the bytes an encoding of this content takes, to size a buffer up front: a 40 MB
    /// attachment must not be copied through a doubling buffer.
    pub fn encoded_size_hint(&self) -> usize {
        self.attachments.iter().map(|a| a.content.len() + 256).sum::<usize>()
            + self.html.as_ref().map_or(0, String::len)
            + self.text.as_ref().map_or(0, String::len)
            + 4096
    }
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
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub at: DateTime<Utc>,
    /// The recipient the event is about, for per-recipient events.
    pub recipient: Option<String>,
    /// The bounce detail, for `bounced`.
    pub bounce: Option<BounceInfo>,
    /// The server's reply behind this event, kept exactly.
    pub reply: Option<SmtpReply>,
    /// Why, for `failed`, `suppressed` and `canceled`.
    pub reason: Option<String>,
    /// Who or what opened or clicked, for `opened` and `clicked`.
    pub hit: Option<Box<Hit>>,
}

/// An open or a click as the tracking server saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// The original URL, for a click.
    pub link: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// Set when the hit was made by a machine, not a person: which one (a mail-privacy
    /// prefetcher, a link scanner), see [`crate::tracking::machine`].
    pub machine: Option<String>,
}

/// An event as the wire shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventView {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// When (RFC 3339).
    pub created_at: String,
    /// The recipient it is about, for per-recipient events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The bounce detail, for `bounced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounce: Option<BounceInfo>,
    /// The server's reply, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Why, for `failed`, `suppressed` and `canceled`.
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
    /// An event of `kind` at `at`, with no detail.
    pub fn new(kind: EventKind, at: DateTime<Utc>) -> Self {
        Event { kind, at, recipient: None, bounce: None, reply: None, reason: None, hit: None }
    }
    /// With who or what opened or clicked.
    pub fn hit(mut self, h: Hit) -> Self {
        self.hit = Some(Box::new(h));
        self
    }
    /// With the recipient it is about.
    pub fn recipient(mut self, r: impl Into<String>) -> Self {
        self.recipient = Some(r.into());
        self
    }
    /// With a reason.
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    /// With the server's reply.
    pub fn reply(mut self, r: SmtpReply) -> Self {
        self.reply = Some(r);
        self
    }
    /// With the bounce detail.
    pub fn bounce(mut self, b: BounceInfo) -> Self {
        self.bounce = Some(b);
        self
    }
}

/// A worker's hold on an email, until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The token only the holder knows (outcomes are recorded only with it).
    pub token: u128,
    /// When the claim lapses and the email is due again.
    pub until: DateTime<Utc>,
}

/// The mutable half of an email: its events and delivery bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailState {
    /// The account it belongs to.
    pub account: AccountId,
    /// Its id.
    pub id: EmailId,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it was scheduled for, if it was.
    #[serde(default)]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Every event, oldest first.
    pub events: Vec<Event>,
    /// When the worker should next look at this email; `None` once nothing more is due.
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    /// The worker's claim, while one holds it.
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
    /// The newest event's kind.
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
    /// The account it belongs to.
    pub account: AccountId,
    /// Its id (the engine's, time-ordered).
    pub id: EmailId,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it is scheduled for, if it is.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// What was accepted.
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
    /// What was accepted.
    pub content: EmailContent,
    /// What happened since.
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
#[non_exhaustive]
pub struct EmailView {
    /// Always `email`.
    pub object: String,
    /// Its id.
    pub id: EmailId,
    /// `To`, as written.
    pub to: Vec<String>,
    /// `From`, as written.
    pub from: String,
    /// When it was accepted (the hosted service's `2023-04-03 22:13:42.674981+00`).
    pub created_at: String,
    /// The subject.
    pub subject: String,
    /// The HTML body (`null` once retention pruned it).
    pub html: Option<String>,
    /// The plain-text body (`null` once retention pruned it).
    pub text: Option<String>,
    /// `Bcc`, or `null`.
    pub bcc: Option<Vec<String>>,
    /// `Cc`, or `null`.
    pub cc: Option<Vec<String>>,
    /// `Reply-To`, or `null`.
    pub reply_to: Option<Vec<String>>,
    /// The newest event.
    pub last_event: Option<EventKind>,
    /// When it is scheduled for, if it is.
    pub scheduled_at: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
    /// The topic, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// The `Message-ID` it is sent with (without angle brackets).
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
#[non_exhaustive]
pub struct EmailSummary {
    /// Its id.
    pub id: EmailId,
    /// `To`, as written.
    pub to: Vec<String>,
    /// `From`, as written.
    pub from: String,
    /// When it was accepted.
    pub created_at: String,
    /// The subject.
    pub subject: String,
    /// `Bcc`, or `null`.
    pub bcc: Option<Vec<String>>,
    /// `Cc`, or `null`.
    pub cc: Option<Vec<String>>,
    /// `Reply-To`, or `null`.
    pub reply_to: Option<Vec<String>>,
    /// The newest event.
    pub last_event: Option<EventKind>,
    /// When it is scheduled for, if it is.
    pub scheduled_at: Option<String>,
    /// The topic, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// The `Message-ID` it is sent with (without angle brackets), as `GET /emails/{id}` gives
    /// it: the SDKs type a list item as the email without html, text and tags.
    #[serde(default)]
    pub message_id: String,
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
            topic_id: c.topic_id.clone(),
            message_id: c.message_id.clone(),
        }
    }
}

/// Cursor pagination, newest first. `after` pages towards older emails, `before` towards
/// newer ones; they exclude each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page (1 to 100).
    pub limit: usize,
    /// Where the page starts.
    pub cursor: Cursor,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cursor {
    /// The newest emails.
    #[default]
    Start,
    /// Emails older than this one.
    After(EmailId),
    /// Emails newer than this one.
    Before(EmailId),
}

impl PageRequest {
    /// The largest page.
    pub const MAX_LIMIT: usize = 100;
    /// The page size when none is asked for.
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
    /// The items, newest first.
    pub items: Vec<T>,
    /// More items exist beyond this page in the direction of travel.
    pub has_more: bool,
}

/// `{"object":"list","has_more":…,"data":[…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse<T> {
    /// Always `list`.
    pub object: String,
    /// More items exist beyond this page.
    pub has_more: bool,
    /// The items.
    pub data: Vec<T>,
}

impl<T> From<Page<T>> for ListResponse<T> {
    fn from(p: Page<T>) -> Self {
        ListResponse { object: "list".into(), has_more: p.has_more, data: p.items }
    }
}
