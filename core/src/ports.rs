//! The ports: the only ways the core touches the world.
//!
//! Invariant: every operation that must be atomic is ONE [`Storage`] method, so no adapter
//! can half-apply it (insert a batch with its idempotency record; claim with a lease; record
//! an outcome with its events and suppressions).

use crate::bounce::{SmtpReply, Stage};
use crate::domains::Domain;
use crate::email::{AccountId, EmailId, EmailRecord, EmailSummary, Event, NewEmail, Page, PageRequest};
use crate::error::StorageError;
use crate::idempotency::{Fingerprint, StoredResponse};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::time::Duration;

/// What a storage operation answers.
pub type StorageResult<T> = Result<T, StorageError>;

/// One email as the email metrics read it ([`Storage::email_facts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailFacts {
    /// Its id.
    pub id: EmailId,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// The domain of its `From` address, lower-cased; empty if it does not parse, or if
    /// it was not asked for (`senders`).
    pub from_domain: String,
    /// Every event, oldest first.
    pub events: Vec<Event>,
}

impl EmailFacts {
    /// The facts of the email whose state is `state`, with its `From` domain when read.
    pub fn of(state: crate::email::EmailState, from_domain: Option<&str>) -> EmailFacts {
        EmailFacts {
            id: state.id,
            created_at: state.created_at,
            from_domain: from_domain.map(str::to_ascii_lowercase).unwrap_or_default(),
            events: state.events,
        }
    }
}

/// [`Storage::email_facts`] through [`Storage::list_emails`] and [`Storage::get_state`]: the
/// provided answer, for stores that cannot read a range of ids in one go.
pub async fn email_facts_by_pages<S: Storage + ?Sized>(
    store: &S,
    account: &AccountId,
    ids: std::ops::Range<u128>,
    limit: usize,
    senders: bool,
) -> StorageResult<Vec<EmailFacts>> {
    let mut out = Vec::new();
    let mut from = ids.start;
    while out.len() < limit && from < ids.end {
        // `Before(c)` is the page of ids just above `c`, shown newest first.
        let page = PageRequest {
            limit: PageRequest::MAX_LIMIT.min(limit - out.len()),
            cursor: crate::email::Cursor::Before(EmailId::from_u128(from.saturating_sub(1))),
        };
        let mut summaries = store.list_emails(account, page).await?.items;
        summaries.sort_by_key(|s| s.id.as_u128());
        let Some(last) = summaries.last().map(|s| s.id.as_u128()) else { break };
        for s in summaries.into_iter().filter(|s| ids.contains(&s.id.as_u128())) {
            let Some(state) = store.get_state(account, s.id).await? else { continue };
            // The summary has `From` as written (`Name <a@b>`).
            let from = senders.then(|| crate::address::Mailbox::parse(&s.from).ok()).flatten();
            out.push(EmailFacts::of(state, from.as_ref().map(|m| m.domain.as_str())));
        }
        from = last.saturating_add(1);
    }
    Ok(out)
}

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
    /// The key, as the client gave it.
    pub key: String,
    /// The payload it covers.
    pub fingerprint: Fingerprint,
    /// The answer replayed to a retry.
    pub response: StoredResponse,
    /// When the key was first used.
    pub created_at: DateTime<Utc>,
    /// When the record lapses (24 h later).
    pub expires_at: DateTime<Utc>,
}

/// Why an address is on the suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// A permanent bounce (or by hand).
    Bounced,
    /// A complaint.
    Complained,
    /// The recipient used the one-click unsubscribe link of an email.
    Unsubscribed,
}

impl SuppressionReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Bounced => "bounced",
            SuppressionReason::Complained => "complained",
            SuppressionReason::Unsubscribed => "unsubscribed",
        }
    }
}

/// One suppressed address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionEntry {
    /// The normalised address ([`crate::address::Mailbox::key`]).
    pub address: String,
    /// Why it is listed.
    pub reason: SuppressionReason,
    /// The email whose bounce or complaint put it here, if any.
    #[serde(default)]
    pub source_email: Option<EmailId>,
    /// When it was listed.
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

    /// The email whose one-click unsubscribe link put this entry here, if that is why it is
    /// listed.
    pub fn unsubscribed_from(&self) -> Option<EmailId> {
        self.source_email.filter(|_| self.reason == SuppressionReason::Unsubscribed)
    }
}

/// A claimed email, with the token that proves the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedEmail {
    /// The email, as it was when claimed.
    pub record: EmailRecord,
    /// The proof of the claim.
    pub token: u128,
}

impl ClaimedEmail {
    /// What names this claim in later calls.
    pub fn claim_ref(&self) -> ClaimRef {
        ClaimRef { id: self.record.state.id, token: self.token }
    }
}

/// A claim, by email and token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimRef {
    /// The email.
    pub id: EmailId,
    /// The claim's token.
    pub token: u128,
}

/// A change to a scheduled email ([`Storage::change_schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleOp {
    /// Move it to this time.
    MoveTo(DateTime<Utc>),
    /// Cancel it, with its `canceled` event at this time.
    Cancel(DateTime<Utc>),
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
    RetryAt {
        /// When.
        at: DateTime<Utc>,
        /// The recipients still to be attempted.
        pending: Vec<String>,
    },
}

/// A delivery outcome, recorded atomically with its events and suppressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whose outcome.
    pub claim: ClaimRef,
    /// The events to append, in order.
    pub events: Vec<Event>,
    /// Suppressions the outcome causes.
    pub suppressions: Vec<SuppressionEntry>,
    /// What is due next.
    pub next: Next,
}

/// The only place state lives.
///
/// All times come from the caller (the engine's [`Clock`]); a store never reads the system
/// clock, so expiry is testable and every store agrees.
///
/// # Durability
/// A method returns `Ok` only once what it wrote is durable; a failed write leaves nothing.
/// Writes of concurrent callers may share one durable commit (group commit), but each stays
/// atomic on its own: one that fails fails alone.
///
/// # What a dead process leaves: single-process and shared stores
/// In-flight idempotency markers and claim leases stand for work a live process is doing.
/// - A store that **one process holds exclusively** (redb locks its file) may keep them in
///   memory: when the store is opened again, the process that held them is gone, so they
///   are released at once. A keyed retry after a restart is answered immediately, and the
///   emails the dead process had claimed are due at once. Only the durable hand-over mark
///   survives (an email in doubt is never silently re-sent; the worker's
///   [`crate::worker::InDoubt`] policy decides).
/// - A store that **several processes share** (a database server) cannot tell a dead holder
///   from a slow one: it keeps markers and leases durable and lets them lapse
///   (`in_flight_until`, `now + lease`), and a holder renews what it still needs. It should
///   keep leases short (seconds, renewed by heartbeat) so that a dead process's work is
///   taken over quickly.
///
/// Either way the answers are the same as far as a caller can see: a live marker answers
/// `InFlight`, a live claim is never claimed twice, and a lapsed one is free.
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

    /// Removes completed idempotency records that expired at or before `now` and returns how
    /// many; in-flight markers that lapsed go too, uncounted (they are not records).
    async fn purge_idempotency(&self, now: DateTime<Utc>) -> StorageResult<usize>;

    /// One email of `account`, whole.
    async fn get_email(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<EmailRecord>>;

    /// One email's state (its events and bookkeeping) without its content. Provided through
    /// [`get_email`](Self::get_email); a store that keeps content apart answers it without
    /// reading the content (a tracking hit needs the events, not a 40 MB attachment).
    async fn get_state(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<crate::email::EmailState>> {
        Ok(self.get_email(account, id).await?.map(|r| r.state))
    }

    /// One page of an account's emails, newest first.
    async fn list_emails(&self, account: &AccountId, page: PageRequest) -> StorageResult<Page<EmailSummary>>;

    /// Up to `limit` of the account's emails whose ids lie in `ids`, oldest first, with what
    /// the email metrics read of each (`email_metrics`). Ids are UUIDv7 and carry the time of
    /// acceptance, so an id range is a time range; a reader goes on from the last id + 1.
    /// `senders`: whether each email's `From` domain is wanted. Why a choice: it is in the
    /// content, and a store that keeps content compressed and apart (redb) reads three times
    /// faster without it.
    ///
    /// Provided through [`list_emails`](Self::list_emails) and [`get_state`](Self::get_state)
    /// (a page, then one read per email); a store that can read a range of ids in one go
    /// answers it so.
    async fn email_facts(
        &self,
        account: &AccountId,
        ids: std::ops::Range<u128>,
        limit: usize,
        senders: bool,
    ) -> StorageResult<Vec<EmailFacts>> {
        email_facts_by_pages(self, account, ids, limit, senders).await
    }

    /// Atomically claims up to `limit` emails due at `now` that no unexpired claim holds,
    /// each until `now + lease`. A `scheduled` email gets its `queued` event here.
    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> StorageResult<Vec<ClaimedEmail>>;

    /// Durably marks claimed emails as being handed to the transport. Returns the ones whose
    /// claim was lost (they must not be handed over).
    async fn begin_handover(&self, claims: &[ClaimRef]) -> StorageResult<Vec<EmailId>>;

    /// Records outcomes, each with its events, suppressions and next step, in one atomic
    /// write. Outcomes whose claim was lost are skipped and returned.
    async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> StorageResult<Vec<EmailId>>;

    /// Records `outcomes`, then durably marks `claims` (other emails) as being handed over:
    /// [`record_outcomes`](Self::record_outcomes) then [`begin_handover`](Self::begin_handover).
    /// The worker passes a finished email's hand-over permit to the next email this way: a
    /// mark is never durable before the outcome that freed its permit, so at most
    /// `handovers` emails are ever in doubt.
    ///
    /// `Err`: no outcome was recorded (nor any mark made). `Ok((refused, marks))`: the
    /// outcomes are durable (`refused` as `record_outcomes` returns them), and `marks` is
    /// what `begin_handover` answered.
    ///
    /// The provided method makes the two writes one after the other, so each mark waits for
    /// its own durable write. A store that can do both in one atomic write should: the next
    /// email then starts its hand-over one commit sooner (redb and Postgres do).
    async fn record_outcomes_then_begin_handover(
        &self,
        outcomes: Vec<Outcome>,
        claims: &[ClaimRef],
    ) -> StorageResult<(Vec<EmailId>, StorageResult<Vec<EmailId>>)> {
        let refused = self.record_outcomes(outcomes).await?;
        Ok((refused, self.begin_handover(claims).await))
    }

    /// Extends claims still held until `until` (the worker's heartbeat, for stores several
    /// processes share, where leases are short so that a dead process's claims lapse soon).
    /// Returns the ones that were lost. Stores whose claims a live process never loses need
    /// not implement it: the default refuses, and the worker renews only when configured to.
    async fn renew_claims(&self, _claims: &[ClaimRef], _until: DateTime<Utc>) -> StorageResult<Vec<EmailId>> {
        Err(StorageError::Backend("this store does not renew claims (set no worker heartbeat)".into()))
    }

    /// Gives back claims not yet handed over (shutdown), so they are due again at once.
    async fn release_claims(&self, claims: &[ClaimRef], now: DateTime<Utc>) -> StorageResult<()>;

    /// The earliest time anything becomes due (claims expire, schedules fall due).
    async fn next_due(&self) -> StorageResult<Option<DateTime<Utc>>>;

    /// Adds or replaces an entry.
    async fn suppression_add(&self, account: &AccountId, entry: SuppressionEntry) -> StorageResult<()>;

    /// Adds `entry` unless its address is listed already; the entry listed afterwards (the one
    /// that was there, unchanged, or `entry`). Atomic in every store of this workspace (a bounce
    /// listing the address meanwhile is never overwritten by a hand-made entry). The provided
    /// version, for a store that cannot do better, is a lookup then an add: not atomic.
    async fn suppression_add_if_absent(
        &self,
        account: &AccountId,
        entry: SuppressionEntry,
    ) -> StorageResult<SuppressionEntry> {
        if let Some(listed) = self.suppression_lookup(account, std::slice::from_ref(&entry.address)).await?.pop() {
            return Ok(listed);
        }
        self.suppression_add(account, entry.clone()).await?;
        Ok(entry)
    }

    /// Removes an address at `at` (the time its `suppression.removed` entry carries); `false`
    /// when it was not listed.
    async fn suppression_remove(&self, account: &AccountId, address: &str, at: DateTime<Utc>) -> StorageResult<bool>;

    /// The entries for those of `addresses` (normalised) that are listed.
    async fn suppression_lookup(
        &self,
        account: &AccountId,
        addresses: &[String],
    ) -> StorageResult<Vec<SuppressionEntry>>;

    /// All entries of an account, ordered by address.
    async fn suppression_list(&self, account: &AccountId) -> StorageResult<Vec<SuppressionEntry>>;

    /// The emails whose recipients unsubscribed by their link: the `source_email` of each of
    /// the account's entries of reason [`SuppressionReason::Unsubscribed`], in any order. For
    /// the email metrics, which had read the whole list for this. The provided version still
    /// does; a store that can stream its entries keeps only these ids (16 bytes an unsubscribe
    /// instead of every entry of the list).
    async fn suppression_unsubscribe_sources(&self, account: &AccountId) -> StorageResult<Vec<EmailId>> {
        let all = self.suppression_list(account).await?;
        Ok(all.iter().filter_map(SuppressionEntry::unsubscribed_from).collect())
    }

    /// One page of an account's entries in address order ([`crate::suppressions::page`]);
    /// `None` when the page's cursor is the id of no entry. The provided version reads the
    /// whole list; a store that can stream its entries reads only up to the page's end.
    async fn suppression_page(
        &self,
        account: &AccountId,
        q: &crate::suppressions::PageQuery,
    ) -> StorageResult<Option<crate::email::Page<SuppressionEntry>>> {
        let all = self.suppression_list(account).await?;
        crate::suppressions::page(account, all.into_iter().map(Ok), q)
    }

    /// The entry whose [`crate::suppressions::id`] is `id`, if listed. The provided version
    /// reads the whole list; a store should index the ids ([`crate::suppressions::id_bits`]).
    async fn suppression_by_id(&self, account: &AccountId, id: &str) -> StorageResult<Option<SuppressionEntry>> {
        let all = self.suppression_list(account).await?;
        let address =
            crate::suppressions::find(account, all.iter().map(|e| e.address.as_str()), id).map(str::to_string);
        Ok(address.and_then(|a| all.into_iter().find(|e| e.address == a)))
    }

    /// Moves a `scheduled` email or cancels it (final) — [`crate::store::change_schedule`] —
    /// atomically with respect to the worker: an email already claimed (it is `queued` then)
    /// or canceled is neither moved nor canceled, and a canceled one is never claimed.
    async fn change_schedule(&self, account: &AccountId, id: EmailId, op: ScheduleOp) -> StorageResult<ScheduleChange>;

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

    /// How many emails wait for the worker (scheduled, queued, retrying), how many of them are
    /// due at `now`, and since when the oldest due one has waited. `None`: this store cannot
    /// tell cheaply (metrics then leave the gauges out).
    async fn queue_stats(&self, _now: DateTime<Utc>) -> StorageResult<Option<QueueStats>> {
        Ok(None)
    }

    /// The API keys this store keeps, if it offers the [`ApiKeyStore`] extension. A host
    /// plugs a store in once: the engine, the HTTP API and the worker all find the
    /// extensions here.
    fn api_keys(&self) -> Option<&dyn ApiKeyStore> {
        None
    }

    /// The request logs this store keeps, if it offers the [`RequestLogStore`] extension.
    fn request_logs(&self) -> Option<&dyn RequestLogStore> {
        None
    }

    /// The sending domains this store keeps, if it offers the [`DomainStore`] extension.
    fn domains(&self) -> Option<&dyn DomainStore> {
        None
    }

    /// The event log this store keeps, if it offers the [`EventLog`] extension. A store that
    /// offers it appends to it inside every method above that changes an email's events or
    /// the suppression list (see [`crate::events`]).
    fn event_log(&self) -> Option<&dyn EventLog> {
        None
    }

    /// The webhooks this store keeps, if it offers the [`WebhookStore`] extension.
    fn webhooks(&self) -> Option<&dyn WebhookStore> {
        None
    }

    /// The received mail this store keeps, if it offers the [`ReceivedStore`] extension.
    fn received(&self) -> Option<&dyn ReceivedStore> {
        None
    }

    /// Signalled when another process sharing this store made something due (a new or
    /// rescheduled email, a released claim), so that an idle worker here looks at once
    /// instead of at its next poll. `None` (the default): no such signal — the store is not
    /// shared, or cannot tell.
    fn wakeups(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    /// Takes, across every process sharing this store, the lock an account's capped creates
    /// (API keys, domains, webhooks) hold from their count to their insert; it is held until
    /// the guard is dropped, and freed if the process dies. `None` (the default): the store
    /// is not shared (redb holds its file exclusively), and the engine's in-process lock is
    /// enough. A store that returns a guard must free it when the future taking it is
    /// dropped before it returns.
    async fn hold_create_lock(&self, _account: &AccountId) -> StorageResult<Option<HeldLock>> {
        Ok(None)
    }
}

/// A lock a [`Storage`] holds for the engine until this is dropped
/// ([`Storage::hold_create_lock`]).
pub struct HeldLock {
    _guard: Box<dyn Send + Sync>,
}

impl HeldLock {
    /// Holds `guard` (whose drop frees the lock).
    pub fn new(guard: impl Send + Sync + 'static) -> HeldLock {
        HeldLock { _guard: Box::new(guard) }
    }
}

impl Debug for HeldLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldLock")
    }
}

/// SPF, DKIM and DMARC of a received message. Implemented beside the [`DnsResolver`] (with
/// the same resolver), so that the nameserver a host names is the one every check asks.
#[async_trait]
pub trait MessageAuth: Send + Sync + Debug {
    /// The results for `raw`, which `client` sent after `EHLO helo` with `MAIL FROM:<mail_from>`
    /// (empty for bounces: SPF then checks the HELO name).
    async fn authenticate(
        &self,
        raw: &[u8],
        client: std::net::IpAddr,
        helo: &str,
        mail_from: &str,
    ) -> crate::receiving::Authentication;
}

/// Received mail, per account: an extension a store may offer beside [`Storage`]. A message
/// is kept whole (its raw bytes) beside its summary; the summary's `email.received` entry goes
/// into the event log (when the store keeps one) in the same transaction, so a message the
/// listener acknowledged is both kept and announced, or neither.
#[async_trait]
pub trait ReceivedStore: Send + Sync + Debug {
    /// Keeps one message for each `(account, summary)` of `copies` (one arrival can be for
    /// several accounts), all with the same `raw` bytes, in one durable write.
    async fn received_put(
        &self,
        copies: Vec<(AccountId, crate::receiving::ReceivedEmail)>,
        raw: Vec<u8>,
    ) -> Result<(), StorageError>;
    /// The summary of the account's received message `id`.
    async fn received_get(
        &self,
        account: &AccountId,
        id: EmailId,
    ) -> Result<Option<crate::receiving::ReceivedEmail>, StorageError>;
    /// The raw bytes of the account's received message `id`.
    async fn received_raw(&self, account: &AccountId, id: EmailId) -> Result<Option<Vec<u8>>, StorageError>;
    /// A page of the account's received messages, newest first.
    async fn received_page(
        &self,
        account: &AccountId,
        page: PageRequest,
    ) -> Result<Page<crate::receiving::ReceivedEmail>, StorageError>;
}

/// The event log, per account, read by cursor: an extension a store may offer beside
/// [`Storage`]. The store writes it itself, in the transactions of [`Storage`]'s methods.
#[async_trait]
pub trait EventLog: Send + Sync + Debug {
    /// Up to `limit` entries of `account` numbered above `after`, in order.
    async fn events_after(
        &self,
        account: &AccountId,
        after: u64,
        limit: usize,
    ) -> StorageResult<Vec<crate::events::LoggedEvent>>;
    /// The highest number given to any entry so far (0: none yet).
    async fn events_head(&self) -> StorageResult<u64>;
    /// Retention: removes about `limit` entries (any account) that happened before `cutoff`,
    /// oldest first (a store may remove entries written together as one, so a few more).
    /// Returns how many; fewer than `limit` when none is left.
    async fn events_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> StorageResult<usize>;
}

/// Webhook endpoints and their messages: an extension a store may offer beside [`Storage`].
/// Fan-out ([`WebhookStore::messages_enqueue`]) moves an endpoint's cursor in the same write as
/// the messages it stores, so a message is created once per (endpoint, event) whatever
/// crashes.
#[async_trait]
pub trait WebhookStore: Send + Sync + Debug {
    /// Adds or replaces an endpoint (by id).
    async fn webhook_put(&self, account: &AccountId, hook: crate::webhooks::Webhook) -> StorageResult<()>;
    /// The account's endpoint `id`.
    async fn webhook_get(&self, account: &AccountId, id: &str) -> StorageResult<Option<crate::webhooks::Webhook>>;
    /// Every endpoint of every account, by account then id.
    async fn webhook_all(&self) -> StorageResult<Vec<(AccountId, crate::webhooks::Webhook)>>;
    /// The account's endpoints, by id.
    async fn webhook_list(&self, account: &AccountId) -> StorageResult<Vec<crate::webhooks::Webhook>>;
    /// Removes an endpoint and its messages; `false` when there was none.
    async fn webhook_delete(&self, account: &AccountId, id: &str) -> StorageResult<bool>;
    /// Stores `messages` for endpoint `id` and moves its cursor from `from` to `to`, in one
    /// write; `false` (and nothing written) when the cursor is not at `from` any more or the
    /// endpoint is gone.
    async fn messages_enqueue(
        &self,
        account: &AccountId,
        id: &str,
        from: u64,
        to: u64,
        messages: Vec<crate::webhooks::Message>,
    ) -> StorageResult<bool>;
    /// Up to `limit` messages (any endpoint) with an attempt due at `now`, earliest first.
    async fn messages_due(&self, now: DateTime<Utc>, limit: usize) -> StorageResult<Vec<crate::webhooks::Message>>;
    /// Replaces a message (its status, schedule and attempts) and, when an attempt was made,
    /// applies its result at that time to the endpoint's health
    /// ([`crate::webhooks::health_after`]; an endpoint that becomes `disabled` is turned off),
    /// in one write. `false` when the message is gone (its endpoint deleted).
    async fn message_put(
        &self,
        message: crate::webhooks::Message,
        attempt: Option<(crate::webhooks::AttemptResult, DateTime<Utc>)>,
    ) -> StorageResult<bool>;
    /// The message numbered `seq` of endpoint `id`.
    async fn message_get(
        &self,
        account: &AccountId,
        id: &str,
        seq: u64,
    ) -> StorageResult<Option<crate::webhooks::Message>>;
    /// Retention: removes up to `limit` finished messages (nothing due: delivered, or failed
    /// for good) of events that happened before `cutoff`, oldest first per endpoint. Returns
    /// how many; fewer than `limit` when none is left.
    async fn messages_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> StorageResult<usize>;
    /// Up to `limit` messages of endpoint `id`, newest first, numbered below `before` when given;
    /// and whether more follow.
    async fn message_page(
        &self,
        account: &AccountId,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StorageResult<(Vec<crate::webhooks::Message>, bool)>;
}

/// The worker's queue at one moment (see [`Storage::queue_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueStats {
    /// Emails with a due time: scheduled, queued, waiting for a retry, or claimed.
    pub waiting: u64,
    /// Of those, the ones due now (counted up to [`QueueStats::COUNT_CAP`]).
    pub due: u64,
    /// The due time of the earliest one, if any.
    pub oldest_due: Option<DateTime<Utc>>,
}

impl QueueStats {
    /// Stores stop counting due emails here: a gauge need not be exact beyond it, and a scrape
    /// must stay cheap however long the queue is.
    pub const COUNT_CAP: u64 = 1_000_000;

    /// The figures, from a store's counts.
    pub fn new(waiting: u64, due: u64, oldest_due: Option<DateTime<Utc>>) -> QueueStats {
        QueueStats { waiting, due, oldest_due }
    }
}

/// Where the time comes from.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
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
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(std::sync::Arc::new(std::sync::Mutex::new(at)))
    }
    /// Moves the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }
    /// Moves the clock forward by `by`.
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
#[non_exhaustive]
pub struct Envelope {
    /// The email being handed over.
    pub email_id: EmailId,
    /// The return path (`MAIL FROM`).
    pub from: String,
    /// `RCPT TO`, in order.
    pub to: Vec<String>,
    /// The key to DKIM-sign with: the sending domain's verified key (a transport that signs
    /// prefers it to keys of its own).
    pub dkim: Option<std::sync::Arc<SigningKey>>,
    /// The sending domain requires TLS: a server that cannot offer it is not given the mail.
    pub require_tls: bool,
}

impl Envelope {
    /// An envelope with no key and TLS as the transport does it.
    pub fn new(email_id: EmailId, from: impl Into<String>, to: Vec<String>) -> Envelope {
        Envelope { email_id, from: from.into(), to, dkim: None, require_tls: false }
    }
    /// Signed with `key`.
    pub fn dkim(mut self, key: Option<std::sync::Arc<SigningKey>>) -> Envelope {
        self.dkim = key;
        self
    }
    /// TLS required (or not).
    pub fn require_tls(mut self, on: bool) -> Envelope {
        self.require_tls = on;
        self
    }
}

/// A DKIM key chosen for a message: the `d=` domain, the selector, the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The signing domain (`d=`): the sending domain or a parent of it.
    pub domain: String,
    /// The selector (`s=`).
    pub selector: String,
    /// The algorithm.
    pub algorithm: crate::domains::DkimAlgorithm,
    /// The private key, PKCS#8 PEM.
    pub private_pem: String,
}

impl Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("SigningKey").field("domain", &self.domain).field("selector", &self.selector).finish()
    }
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
    /// The recipient marked it as spam.
    Complaint,
}

/// What happened to one recipient of a hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The recipient (as in the envelope).
    pub recipient: String,
    /// Accepted, deferred or refused.
    pub status: RecipientStatus,
    /// The server's exact reply for this recipient.
    pub reply: Option<SmtpReply>,
    /// The step of the dialogue that reply answered: `RCPT TO` judged this recipient,
    /// `MAIL FROM` and `DATA` judged the sender and the message (every recipient shares
    /// them). The reply is read at that step ([`crate::bounce::classify_at`]): only a refusal
    /// at `RCPT TO` (or a status that says so) is evidence that the address is gone.
    /// [`Stage::Unknown`] where the transport cannot say.
    pub stage: Stage,
    /// Feedback that arrived already (the sandbox's complaints).
    pub feedback: Option<Feedback>,
}

/// The result of one hand-over, per recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryReport {
    /// One report per recipient, in envelope order.
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
                .map(|r| RecipientReport {
                    recipient: r.clone(),
                    status,
                    reply: None,
                    stage: Stage::Unknown,
                    feedback: None,
                })
                .collect(),
        }
    }
}

/// A hand-over that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// Transient, permanent or ambiguous.
    pub kind: TransportErrorKind,
    /// The server's reply behind it, if there was one.
    pub reply: Option<SmtpReply>,
    /// The step that reply answered (`MAIL FROM` or `DATA`: the whole message was refused);
    /// [`Stage::Unknown`] when there is no reply or the transport cannot say.
    pub stage: Stage,
    /// What happened, in words.
    pub message: String,
}

/// How a whole hand-over failed.
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
    /// Nothing was handed over: try again later.
    pub fn is_transient(&self) -> bool {
        self.kind == TransportErrorKind::Transient
    }
    /// It will never be accepted as it is.
    pub fn is_permanent(&self) -> bool {
        self.kind == TransportErrorKind::Permanent
    }
    /// It may have been accepted: never hand it over again.
    pub fn is_ambiguous(&self) -> bool {
        self.kind == TransportErrorKind::Ambiguous
    }
}

/// Hands rendered messages to the world. One required method; it never decides what a reply
/// means (the core's classifier does).
#[async_trait]
pub trait Transport: Send + Sync + Debug {
    /// Hands `message` over to the recipients of `envelope`; one report per recipient.
    async fn send_raw(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReport, TransportError>;
}

/// Bytes for an attachment given by `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadedAttachment {
    /// The bytes.
    pub content: Vec<u8>,
    /// Their type, when the source said (an HTTP `Content-Type`).
    pub content_type: Option<String>,
    /// A name for them, when the source gives one (the URL's last path segment).
    pub filename: Option<String>,
}

impl LoadedAttachment {
    /// Bytes with no type or name known.
    pub fn new(content: Vec<u8>) -> LoadedAttachment {
        LoadedAttachment { content, content_type: None, filename: None }
    }
    /// With the type the source gave.
    pub fn content_type(mut self, content_type: impl Into<String>) -> LoadedAttachment {
        self.content_type = Some(content_type.into());
        self
    }
    /// With the name the source gave.
    pub fn filename(mut self, filename: impl Into<String>) -> LoadedAttachment {
        self.filename = Some(filename.into());
        self
    }
}

/// Why a `path` attachment was not loaded. The text is shown to the API client, so a loader
/// must not say more than the client may know (never whether a local file exists).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The content is larger than the `max_bytes` it was loaded against (it was not read
    /// further).
    #[error("the attachment is larger than {max} bytes")]
    TooLarge {
        /// The limit it was loaded against.
        max: usize,
    },
    /// The host does not allow this location (a scheme it does not fetch, an address on a
    /// private network, a file outside the directory it serves, or one that does not exist).
    #[error("{0}")]
    Refused(String),
    /// The location is allowed but the content could not be had (a timeout, an HTTP error).
    #[error("{0}")]
    Failed(String),
}

/// Resolves `path` attachments at acceptance (the host decides what a path may name: a URL,
/// a file under a directory it allows, ...). Without one, `path` attachments are refused.
///
/// Invariant for implementations: never hold more than `max_bytes` of one attachment (stop
/// reading and answer [`LoadError::TooLarge`]).
#[async_trait]
pub trait AttachmentLoader: Send + Sync + Debug {
    /// The bytes `path` names, at most `max_bytes` of them.
    async fn load(&self, path: &str, max_bytes: usize) -> Result<LoadedAttachment, LoadError>;
}

/// One MX record: where mail for a domain goes, lower preference first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower is tried first.
    pub preference: u16,
    /// The exchange's host name, without the trailing dot (`"."` stays `"."`: a null MX).
    pub exchange: String,
}

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist, or has no records of the type asked for: an answer.
    #[error("{name}: no {rtype} records")]
    NotFound {
        /// The name asked about.
        name: String,
        /// The record type asked for.
        rtype: &'static str,
    },
    /// The lookup itself failed (timeout, SERVFAIL, unreachable server): no answer, try later.
    #[error("{name}: {rtype} lookup failed: {message}")]
    Failed {
        /// The name asked about.
        name: String,
        /// The record type asked for.
        rtype: &'static str,
        /// What failed.
        message: String,
    },
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
    /// The target of `name`'s CNAME record, without the trailing dot (a domain's tracking
    /// host is verified by it). Provided: a resolver that cannot tell says the lookup failed,
    /// which is never read as absence.
    async fn cname(&self, name: &str) -> Result<Vec<String>, DnsError> {
        Err(DnsError::Failed {
            name: name.to_string(),
            rtype: "CNAME",
            message: "this resolver does not look up CNAME records".into(),
        })
    }
}

/// What an API key may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPermission {
    /// Every endpoint.
    FullAccess,
    /// The sending endpoints only; with a domain, only for senders at that domain.
    SendingAccess {
        /// The one domain (and its subdomains) it may send from; `None`: any.
        domain: Option<String>,
    },
}

/// A stored API key. Only a SHA-256 of its token is kept; its id is random, so it says
/// nothing about the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApiKeyRecord {
    /// Random, uuid-shaped; shown in listings and logs.
    pub id: String,
    /// What its owner called it.
    pub name: String,
    /// SHA-256 of the token (tokens are 192 random bits, so no salt is needed for them).
    pub token_sha256: [u8; 32],
    /// What it may do.
    pub permission: KeyPermission,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// When it was revoked; a revoked key never authenticates.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Named in the server's configuration: only the configuration changes it (the API
    /// cannot revoke it; a restart with it configured makes it active again).
    #[serde(default)]
    pub managed: bool,
    /// When a request last authenticated with it, to within [`KEY_USE_GRANULARITY`] (a use is
    /// written at most once a minute per key and process: the hosted API's `last_used_at`).
    /// `None`: never used since it was stored (or since this was recorded).
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// How stale a key's [`ApiKeyRecord::last_used_at`] may be: a use within this of the recorded
/// one is not written again. Why not every use: it would be one more durable write per request,
/// for a figure the hosted API shows to the minute.
pub const KEY_USE_GRANULARITY: chrono::Duration = chrono::Duration::minutes(1);

impl ApiKeyRecord {
    /// Revokes it at `at` (the first revocation's time stands); every store's
    /// [`ApiKeyStore::key_revoke`] change.
    pub fn revoke(&mut self, at: DateTime<Utc>) -> bool {
        self.revoked_at.get_or_insert(at);
        true
    }

    /// Renames it, unless it is revoked (a revoked key stays as it was revoked); whether it
    /// was renamed. Every store's [`ApiKeyStore::key_rename`] change.
    pub fn rename(&mut self, name: &str) -> bool {
        self.revoked_at.is_none() && {
            self.name = name.to_string();
            true
        }
    }

    /// Records a use at `at`, unless it is revoked or a later use is already recorded; whether
    /// it changed. Every store's [`ApiKeyStore::key_touch`] change.
    pub fn touch(&mut self, at: DateTime<Utc>) -> bool {
        let later = self.revoked_at.is_none() && self.last_used_at.is_none_or(|t| t < at);
        if later {
            self.last_used_at = Some(at);
        }
        later
    }

    /// Whether a use at `at` is worth writing: none is recorded within [`KEY_USE_GRANULARITY`]
    /// before it.
    pub fn use_due(&self, at: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.last_used_at.is_none_or(|t| at - t >= KEY_USE_GRANULARITY)
    }

    /// A key that is not revoked and not managed by a configuration.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        token_sha256: [u8; 32],
        permission: KeyPermission,
        created_at: DateTime<Utc>,
    ) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.into(),
            name: name.into(),
            token_sha256,
            permission,
            created_at,
            revoked_at: None,
            managed: false,
            last_used_at: None,
        }
    }
}

/// What a store does with the key row it holds locked for one of [`ApiKeyStore`]'s changes:
/// the rules are [`ApiKeyRecord`]'s and these, once for every store, which only writes the
/// answer (keeps the row, writes it back, or deletes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// Nothing changed: no write.
    Unchanged,
    /// The record changed: write it back.
    Updated,
    /// Delete the row.
    Removed,
}

impl KeyChange {
    /// [`ApiKeyStore::key_revoke`]'s change.
    pub fn revoke(key: &mut ApiKeyRecord, at: DateTime<Utc>) -> KeyChange {
        Self::updated(key.revoke(at))
    }

    /// [`ApiKeyStore::key_rename`]'s change.
    pub fn rename(key: &mut ApiKeyRecord, name: &str) -> KeyChange {
        Self::updated(key.rename(name))
    }

    /// [`ApiKeyStore::key_touch`]'s change.
    pub fn touch(key: &mut ApiKeyRecord, at: DateTime<Utc>) -> KeyChange {
        Self::updated(key.touch(at))
    }

    /// [`ApiKeyStore::key_remove_revoked`]'s: a revoked key goes; an active one (a key the
    /// configuration brought back meanwhile, say) stays.
    pub fn remove_revoked(key: &ApiKeyRecord) -> KeyChange {
        if key.revoked_at.is_some() { KeyChange::Removed } else { KeyChange::Unchanged }
    }

    fn updated(changed: bool) -> KeyChange {
        if changed { KeyChange::Updated } else { KeyChange::Unchanged }
    }
}

/// API keys, per account: an extension a store may offer beside [`Storage`] (the HTTP adapter
/// needs it; an embedding host that calls the engine directly does not).
#[async_trait]
pub trait ApiKeyStore: Send + Sync + Debug {
    /// Stores `key` for `account`. A key with the same token hash is left as it is.
    async fn key_insert(&self, account: &AccountId, key: ApiKeyRecord) -> Result<(), StorageError>;
    /// Stores `key` for `account`, replacing the key with the same token hash if there is one
    /// (the configuration's keys are brought up to date this way at start).
    async fn key_put(&self, account: &AccountId, key: ApiKeyRecord) -> Result<(), StorageError>;
    /// Every key of every account (start-up reconciles the managed ones).
    async fn key_all(&self) -> Result<Vec<(AccountId, ApiKeyRecord)>, StorageError>;
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
    /// Removes the account's key `id` if it is revoked (an active key is never removed by it);
    /// whether one was. Its token then authenticates nothing, as when it was revoked.
    async fn key_remove_revoked(&self, account: &AccountId, id: &str) -> Result<bool, StorageError>;
    /// Renames the account's active key `id`, in one atomic change of that one field (a
    /// revocation racing it is never undone); `false` if the account has no active key `id`.
    async fn key_rename(&self, account: &AccountId, id: &str, name: &str) -> Result<bool, StorageError>;
    /// Records a use of the account's active key `id` at `at`, in one atomic change of that
    /// one field (a later use already recorded stays; a revocation racing it is never undone);
    /// whether it changed. The engine calls it at most once a [`KEY_USE_GRANULARITY`] per key.
    async fn key_touch(&self, account: &AccountId, id: &str, at: DateTime<Utc>) -> Result<bool, StorageError>;
}

/// One request to the HTTP API, as recorded (secrets already redacted by the recorder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLog {
    /// A UUIDv7 whose time is `at` ([`RequestLog::id_at`]): newest first is descending id
    /// order, and stores may prune by id.
    pub id: u128,
    /// When it was received (the engine's clock).
    pub at: DateTime<Utc>,
    /// The HTTP method.
    pub method: String,
    /// The path, without the query.
    pub endpoint: String,
    /// The answer's status.
    pub status: u16,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// The key it was made with.
    pub api_key_id: Option<String>,
    /// The request body, redacted and cut (see the HTTP adapter).
    pub request_body: Option<String>,
    /// The answer's body, redacted and cut.
    pub response_body: Option<String>,
    /// How long the answer took.
    pub duration_ms: u32,
}

impl RequestLog {
    /// A fresh log id for a request recorded at `at`: its time prefix is `at`, the rest random.
    pub fn id_at(at: DateTime<Utc>) -> u128 {
        let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0) & 0xffff_ffff_ffff;
        let random: u128 = rand::random::<u128>() & ((1u128 << 74) - 1);
        let rand_a = (random >> 62) & 0xfff;
        let rand_b = random & ((1u128 << 62) - 1);
        (u128::from(ms) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    }

    /// The smallest id [`RequestLog::id_at`] gives for an instant: logs before `at` have
    /// smaller ids.
    pub fn first_id_at(at: DateTime<Utc>) -> u128 {
        u128::from(u64::try_from(at.timestamp_millis()).unwrap_or(0) & 0xffff_ffff_ffff) << 80
    }
}

/// Which requests a query wants. Every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// `Some(true)`: 2xx only; `Some(false)`: everything else; `None`: all.
    pub success: Option<bool>,
    /// Only these statuses (empty: any).
    pub statuses: Vec<u16>,
    /// Not before this time.
    pub from: Option<DateTime<Utc>>,
    /// Not after this time.
    pub to: Option<DateTime<Utc>>,
    /// A case-insensitive substring of the user agent.
    pub user_agent: Option<String>,
    /// Only this key's requests.
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
    /// Records one request.
    async fn log_append(&self, account: &AccountId, log: RequestLog) -> Result<(), StorageError>;
    /// Records several requests, each as [`log_append`](Self::log_append) would; the first
    /// error is the answer (the others may have been recorded). Provided: the appends run
    /// concurrently, so that a store with group commit shares its commits among them. A store
    /// that can write them in one operation should (the HTTP layer hands over its logs in
    /// batches).
    async fn log_append_many(&self, logs: Vec<(AccountId, RequestLog)>) -> Result<(), StorageError> {
        futures::future::try_join_all(
            logs.into_iter().map(|(account, log)| async move { self.log_append(&account, log).await }),
        )
        .await
        .map(|_| ())
    }
    /// Retention: removes up to `limit` logs (any account) recorded before `cutoff`, oldest
    /// first, in one atomic write. Returns how many; fewer than `limit` when none is left.
    async fn log_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<usize, StorageError>;
    /// Up to `limit` logs matching `filter`, newest first, older than `before` when given;
    /// and whether more match beyond them.
    async fn log_page(
        &self,
        account: &AccountId,
        filter: &LogFilter,
        before: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<RequestLog>, bool), StorageError>;

    /// The page just newer than `after` in the newest-first list (the hosted API's `before`
    /// cursor): up to `limit` logs matching `filter` newer than `after`, the nearest to it,
    /// newest first; and whether more newer ones match. Provided: pages down from the newest
    /// with [`log_page`](Self::log_page), holding `limit + 1` logs; a store that can read
    /// upwards from `after` should.
    async fn log_page_newer(
        &self,
        account: &AccountId,
        filter: &LogFilter,
        after: u128,
        limit: usize,
    ) -> Result<(Vec<RequestLog>, bool), StorageError> {
        let mut window = std::collections::VecDeque::with_capacity(limit + 1);
        let mut cursor = None;
        'pages: loop {
            let (page, more) = self.log_page(account, filter, cursor, 100).await?;
            for log in page {
                if log.id <= after {
                    break 'pages;
                }
                cursor = Some(log.id);
                window.push_back(log);
                if window.len() > limit + 1 {
                    window.pop_front();
                }
            }
            if !more {
                break;
            }
        }
        let more = window.len() > limit;
        if more {
            window.pop_front();
        }
        Ok((window.into(), more))
    }

    /// The log with id `id`, if kept. Provided: a page of one just older than `id + 1`.
    async fn log_get(&self, account: &AccountId, id: u128) -> Result<Option<RequestLog>, StorageError> {
        let Some(upper) = id.checked_add(1) else { return Ok(None) };
        let (page, _) = self.log_page(account, &LogFilter::default(), Some(upper), 1).await?;
        Ok(page.into_iter().find(|l| l.id == id))
    }
}

/// Sending domains, per account: an extension a store may offer beside [`Storage`].
///
/// Writes are compare-and-set on [`Domain::version`](crate::domains::Domain::version): a put
/// writes only over the version before it (none, for version 1), so two requests changing
/// one domain, or a request and the verifier, never lose each other's change, and two
/// creations of one name cannot both succeed. Each write appends its change to the event log
/// (when the store keeps one) in the same transaction; the logged domain has no keys.
#[async_trait]
pub trait DomainStore: Send + Sync + Debug {
    /// Writes `domain` (keyed by its name) if the stored one is at `domain.version - 1` (or
    /// absent, for version 1), logging `change` (`Created` or `Updated`, at the time given);
    /// whether it was written.
    async fn domain_put(
        &self,
        account: &AccountId,
        domain: Domain,
        change: Option<(crate::events::DomainEvent, DateTime<Utc>)>,
    ) -> Result<bool, StorageError>;
    /// The account's domain `name`.
    async fn domain_get(&self, account: &AccountId, name: &str) -> Result<Option<Domain>, StorageError>;
    /// The account's domain with this id.
    async fn domain_by_id(&self, account: &AccountId, id: &str) -> Result<Option<Domain>, StorageError>;
    /// The account's domains by name.
    async fn domain_list(&self, account: &AccountId) -> Result<Vec<Domain>, StorageError>;
    /// Removes the domain `name`, logging `domain.deleted` at `at`; whether it was there.
    async fn domain_delete(&self, account: &AccountId, name: &str, at: DateTime<Utc>) -> Result<bool, StorageError>;
    /// Every account's domain called `name` (the inbound listener asks who receives for it).
    async fn domain_owners(&self, name: &str) -> Result<Vec<(AccountId, Domain)>, StorageError>;
    /// Up to `limit` domains (any account) whose `next_check` is at or before `now`, earliest
    /// first.
    async fn domains_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(AccountId, Domain)>, StorageError>;
}
