//! The ports: the only ways the core touches the world.
//!
//! Invariant: every operation that must be atomic is ONE [`Storage`] method, so no adapter
//! can half-apply it (insert a batch with its idempotency record; claim with a lease; record
//! an outcome with its events and suppressions).

use crate::bounce::SmtpReply;
use crate::email::{AccountId, EmailId, EmailRecord, EmailSummary, Event, NewEmail, Page, PageRequest};
use crate::error::StorageError;
use crate::idempotency::{Fingerprint, StoredResponse};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::time::Duration;

pub type StorageResult<T> = Result<T, StorageError>;

/// What [`Storage::idempotency_begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// No live record: an in-flight marker is now held by this request.
    Started,
    /// The same key and payload completed before: answer with this.
    Replay(StoredResponse),
    /// The key was used with another payload.
    Mismatch,
    /// The same key is still being processed by another request.
    InFlight,
}

/// Completes an idempotency record in the same transaction as the emails it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyCompletion {
    pub key: String,
    pub fingerprint: Fingerprint,
    pub response: StoredResponse,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Why an address is on the suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    Bounced,
    Complained,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Bounced => "bounced",
            SuppressionReason::Complained => "complained",
        }
    }
}

/// One suppressed address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionEntry {
    /// The normalised address ([`crate::address::Mailbox::key`]).
    pub address: String,
    pub reason: SuppressionReason,
    /// The email whose bounce or complaint put it here, if any.
    #[serde(default)]
    pub source_email: Option<EmailId>,
    pub created_at: DateTime<Utc>,
}

impl SuppressionEntry {
    /// The entry a bounce or complaint about `address` (as a server or report wrote it) on
    /// email `source` causes. The address is normalised as the list's key; one that does not
    /// parse (servers quote oddly) is kept lower-cased rather than dropped.
    pub fn caused_by(address: &str, reason: SuppressionReason, source: EmailId, at: DateTime<Utc>) -> Self {
        SuppressionEntry {
            address: crate::address::normalize(address).unwrap_or_else(|_| address.to_ascii_lowercase()),
            reason,
            source_email: Some(source),
            created_at: at,
        }
    }
}

/// A claimed email, with the token that proves the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedEmail {
    pub record: EmailRecord,
    pub token: u128,
}

impl ClaimedEmail {
    pub fn claim_ref(&self) -> ClaimRef {
        ClaimRef { id: self.record.state.id, token: self.token }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRef {
    pub id: EmailId,
    pub token: u128,
}

/// What a reschedule or cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleChange {
    /// Done.
    Applied,
    /// No such email in this account.
    NotFound,
    /// The email is no longer scheduled (claimed for sending, sent, or canceled): nothing
    /// changed. Carries its last event.
    NotScheduled(Option<crate::lifecycle::EventKind>),
}

/// What happens to an email after an outcome is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing more is due.
    Done,
    /// Try again at this time, for these recipients.
    RetryAt { at: DateTime<Utc>, pending: Vec<String> },
}

/// A delivery outcome, recorded atomically with its events and suppressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub claim: ClaimRef,
    pub events: Vec<Event>,
    pub suppressions: Vec<SuppressionEntry>,
    pub next: Next,
}

/// The only place state lives.
///
/// All times come from the caller (the engine's [`Clock`]); a store never reads the system
/// clock, so expiry is testable and every store agrees.
#[async_trait]
pub trait Storage: Send + Sync + Debug {
    /// Atomically looks up `key` and, when no live record exists, writes an in-flight marker
    /// that lapses at `in_flight_until` (so a crashed request does not hold the key for 24 h).
    async fn idempotency_begin(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &Fingerprint,
        now: DateTime<Utc>,
        in_flight_until: DateTime<Utc>,
    ) -> StorageResult<IdempotencyBegin>;

    /// Drops an in-flight marker (the request failed before storing anything).
    async fn idempotency_release(&self, account: &AccountId, key: &str) -> StorageResult<()>;

    /// Stores emails (and, when given, the completed idempotency record) in one atomic write.
    async fn insert_emails(
        &self,
        account: &AccountId,
        emails: Vec<NewEmail>,
        idempotency: Option<IdempotencyCompletion>,
    ) -> StorageResult<()>;

    /// Removes idempotency records that expired before `now`; returns how many.
    async fn purge_idempotency(&self, now: DateTime<Utc>) -> StorageResult<usize>;

    async fn get_email(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<EmailRecord>>;

    /// One page of an account's emails, newest first.
    async fn list_emails(&self, account: &AccountId, page: PageRequest) -> StorageResult<Page<EmailSummary>>;

    /// Atomically claims up to `limit` emails due at `now` that no unexpired claim holds,
    /// each until `now + lease`. A `scheduled` email gets its `queued` event here.
    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> StorageResult<Vec<ClaimedEmail>>;

    /// Durably marks claimed emails as being handed to the transport. Returns the ones whose
    /// claim was lost (they must not be handed over).
    async fn begin_handover(&self, claims: &[ClaimRef]) -> StorageResult<Vec<EmailId>>;

    /// Records outcomes, each with its events, suppressions and next step, in one atomic
    /// write. Outcomes whose claim was lost are skipped and returned.
    async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> StorageResult<Vec<EmailId>>;

    /// Gives back claims not yet handed over (shutdown), so they are due again at once.
    async fn release_claims(&self, claims: &[ClaimRef], now: DateTime<Utc>) -> StorageResult<()>;

    /// The earliest time anything becomes due (claims expire, schedules fall due).
    async fn next_due(&self) -> StorageResult<Option<DateTime<Utc>>>;

    /// Adds or replaces an entry.
    async fn suppression_add(&self, account: &AccountId, entry: SuppressionEntry) -> StorageResult<()>;

    /// Removes an address; `false` when it was not listed.
    async fn suppression_remove(&self, account: &AccountId, address: &str) -> StorageResult<bool>;

    /// The entries for those of `addresses` (normalised) that are listed.
    async fn suppression_lookup(
        &self,
        account: &AccountId,
        addresses: &[String],
    ) -> StorageResult<Vec<SuppressionEntry>>;

    /// All entries of an account, ordered by address.
    async fn suppression_list(&self, account: &AccountId) -> StorageResult<Vec<SuppressionEntry>>;

    /// Moves a `scheduled` email to `at`, atomically with respect to the worker: an email
    /// already claimed (it is `queued` then) or canceled is not moved.
    async fn reschedule(&self, account: &AccountId, id: EmailId, at: DateTime<Utc>) -> StorageResult<ScheduleChange>;

    /// Cancels a `scheduled` email (final), atomically with respect to the worker: a claimed
    /// email cannot be canceled, and a canceled one is never claimed.
    async fn cancel(&self, account: &AccountId, id: EmailId, now: DateTime<Utc>) -> StorageResult<ScheduleChange>;

    /// Appends events that arrive after delivery (an asynchronous bounce, a complaint) to the
    /// email with this id, whatever its account, with the suppressions they cause, in one
    /// atomic write. `None` when no such email exists; a transition the lifecycle refuses
    /// writes nothing.
    async fn append_events(
        &self,
        id: EmailId,
        events: Vec<Event>,
        suppressions: Vec<SuppressionEntry>,
    ) -> StorageResult<Option<AccountId>>;

    /// Retention: prunes up to `limit` finished emails created before `cutoff` (see
    /// [`crate::store::prune`]), oldest first, in one atomic write. Returns how many; 0 when
    /// none is left.
    async fn prune(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>, limit: usize) -> StorageResult<usize>;
}

/// Where the time comes from.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock tests set and advance by hand.
#[derive(Debug, Clone)]
pub struct ManualClock(std::sync::Arc<std::sync::Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(std::sync::Arc::new(std::sync::Mutex::new(at)))
    }
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The SMTP envelope of one hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub email_id: EmailId,
    /// The return path (`MAIL FROM`).
    pub from: String,
    /// `RCPT TO`, in order.
    pub to: Vec<String>,
}

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    /// Accepted by the recipient's own server: `delivered`.
    Delivered,
    /// Accepted by a relay: `sent`, the final fate unknown.
    Relayed,
    /// Temporarily refused: retry later.
    Deferred,
    /// Refused: a bounce.
    Rejected,
}

/// Feedback that arrives after delivery (a complaint). Real ones come as ARF reports; the
/// sandbox reports them directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    Complaint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    pub recipient: String,
    pub status: RecipientStatus,
    /// The server's exact reply for this recipient.
    pub reply: Option<SmtpReply>,
    pub feedback: Option<Feedback>,
}

/// The result of one hand-over, per recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryReport {
    pub recipients: Vec<RecipientReport>,
}

impl DeliveryReport {
    /// The same status, without a reply, for every recipient of `envelope` (transports that
    /// accept or refuse a message whole).
    pub fn uniform(envelope: &Envelope, status: RecipientStatus) -> DeliveryReport {
        DeliveryReport {
            recipients: envelope
                .to
                .iter()
                .map(|r| RecipientReport { recipient: r.clone(), status, reply: None, feedback: None })
                .collect(),
        }
    }
}

/// A hand-over that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub reply: Option<SmtpReply>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// Nothing was handed over (connection refused, timeout before DATA, 4xx): retry.
    Transient,
    /// The message will never be accepted as it is (5xx on MAIL or DATA).
    Permanent,
    /// The connection broke after the message was written: it may have been accepted, so it
    /// is never handed over again.
    Ambiguous,
}

impl TransportError {
    pub fn is_transient(&self) -> bool {
        self.kind == TransportErrorKind::Transient
    }
    pub fn is_permanent(&self) -> bool {
        self.kind == TransportErrorKind::Permanent
    }
    pub fn is_ambiguous(&self) -> bool {
        self.kind == TransportErrorKind::Ambiguous
    }
}

/// Hands rendered messages to the world. One required method; it never decides what a reply
/// means (the core's classifier does).
#[async_trait]
pub trait Transport: Send + Sync + Debug {
    async fn send_raw(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReport, TransportError>;
}

/// Bytes for an attachment given by `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedAttachment {
    pub content: Vec<u8>,
    pub content_type: Option<String>,
}

/// Resolves `path` attachments at acceptance (the host decides what a path may name: a URL,
/// a file under a directory it allows, ...). Without one, `path` attachments are refused.
#[async_trait]
pub trait AttachmentLoader: Send + Sync + Debug {
    async fn load(&self, path: &str) -> Result<LoadedAttachment, String>;
}

/// One MX record: where mail for a domain goes, lower preference first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    /// The exchange's host name, without the trailing dot (`"."` stays `"."`: a null MX).
    pub exchange: String,
}

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist, or has no records of the type asked for: an answer.
    #[error("{name}: no {rtype} records")]
    NotFound { name: String, rtype: &'static str },
    /// The lookup itself failed (timeout, SERVFAIL, unreachable server): no answer, try later.
    #[error("{name}: {rtype} lookup failed: {message}")]
    Failed { name: String, rtype: &'static str, message: String },
}

/// Answers DNS questions. Implementations cache as the records' TTLs allow.
#[async_trait]
pub trait DnsResolver: Send + Sync + Debug {
    /// The MX records of `domain`, in any order.
    async fn mx(&self, domain: &str) -> Result<Vec<MxRecord>, DnsError>;
    /// The A and AAAA addresses of `host`.
    async fn ips(&self, host: &str) -> Result<Vec<std::net::IpAddr>, DnsError>;
    /// The TXT records of `name`, each one's strings joined.
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError>;
}

/// What an API key may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPermission {
    FullAccess,
    /// The sending endpoints only; with a domain, only for senders at that domain.
    SendingAccess {
        domain: Option<String>,
    },
}

/// A stored API key. Only a SHA-256 of its token is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub token_sha256: [u8; 32],
    pub permission: KeyPermission,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// API keys, per account: an extension a store may offer beside [`Storage`] (the HTTP adapter
/// needs it; an embedding host that calls the engine directly does not).
#[async_trait]
pub trait ApiKeyStore: Send + Sync + Debug {
    /// Stores `key` for `account`. A key with the same token hash is left as it is.
    async fn key_insert(&self, account: &AccountId, key: ApiKeyRecord) -> Result<(), StorageError>;
    /// The key whose token hashes to `sha256`, with its account.
    async fn key_by_hash(&self, sha256: &[u8; 32]) -> Result<Option<(AccountId, ApiKeyRecord)>, StorageError>;
    /// The account's keys, oldest first.
    async fn key_list(&self, account: &AccountId) -> Result<Vec<ApiKeyRecord>, StorageError>;
    /// The account's key `id`.
    async fn key_by_id(&self, account: &AccountId, id: &str) -> Result<Option<ApiKeyRecord>, StorageError> {
        Ok(self.key_list(account).await?.into_iter().find(|k| k.id == id))
    }
    /// Marks the key revoked at `at`; `false` if the account has no key `id`. Idempotent.
    async fn key_revoke(&self, account: &AccountId, id: &str, at: DateTime<Utc>) -> Result<bool, StorageError>;
}

/// One request to the HTTP API, as recorded (secrets already redacted by the recorder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    /// Time-ordered (UUID v7): newest first is descending id order.
    pub id: u128,
    pub at: DateTime<Utc>,
    pub method: String,
    pub endpoint: String,
    pub status: u16,
    pub user_agent: Option<String>,
    pub api_key_id: Option<String>,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    pub duration_ms: u32,
}

/// Which requests a query wants. Every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// `Some(true)`: 2xx only; `Some(false)`: everything else; `None`: all.
    pub success: Option<bool>,
    /// Only these statuses (empty: any).
    pub statuses: Vec<u16>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// A case-insensitive substring of the user agent.
    pub user_agent: Option<String>,
    pub api_key_id: Option<String>,
    /// A case-insensitive substring of the endpoint or either body.
    pub search: Option<String>,
}

impl LogFilter {
    /// Whether `log` is wanted: one function for every store, so that they all agree.
    pub fn matches(&self, log: &RequestLog) -> bool {
        let contains =
            |hay: Option<&str>, needle: &str| hay.is_some_and(|h| h.to_lowercase().contains(&needle.to_lowercase()));
        self.success.is_none_or(|s| s == (200..300).contains(&log.status))
            && (self.statuses.is_empty() || self.statuses.contains(&log.status))
            && self.from.is_none_or(|f| log.at >= f)
            && self.to.is_none_or(|t| log.at <= t)
            && self.user_agent.as_deref().is_none_or(|ua| contains(log.user_agent.as_deref(), ua))
            && self.api_key_id.as_deref().is_none_or(|k| log.api_key_id.as_deref() == Some(k))
            && self.search.as_deref().is_none_or(|q| {
                contains(Some(&log.endpoint), q)
                    || contains(log.request_body.as_deref(), q)
                    || contains(log.response_body.as_deref(), q)
            })
    }
}

/// Request logs, per account: an extension a store may offer beside [`Storage`].
#[async_trait]
pub trait RequestLogStore: Send + Sync + Debug {
    async fn log_append(&self, account: &AccountId, log: RequestLog) -> Result<(), StorageError>;
    /// Up to `limit` logs matching `filter`, newest first, older than `before` when given;
    /// and whether more match beyond them.
    async fn log_page(
        &self,
        account: &AccountId,
        filter: &LogFilter,
        before: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<RequestLog>, bool), StorageError>;
}

/// A sending domain the host registered, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub name: String,
    pub click_tracking: bool,
    pub open_tracking: bool,
    pub created_at: DateTime<Utc>,
}

/// Sending domains, per account: an extension a store may offer beside [`Storage`].
#[async_trait]
pub trait DomainStore: Send + Sync + Debug {
    /// Adds or replaces the domain `domain.name` (lower-case).
    async fn domain_put(&self, account: &AccountId, domain: DomainRecord) -> Result<(), StorageError>;
    async fn domain_get(&self, account: &AccountId, name: &str) -> Result<Option<DomainRecord>, StorageError>;
    /// The account's domains by name.
    async fn domain_list(&self, account: &AccountId) -> Result<Vec<DomainRecord>, StorageError>;
}
