//! The engine: accepts single and batch sends (validation, idempotency, durable insert),
//! answers reads, manages the suppression list, and hands out workers.
//!
//! Invariants: an id is returned only after the email is committed to [`Storage`]; a keyed
//! request's emails and its idempotency record are committed in the same storage operation;
//! a strict batch stores nothing unless every item is valid.

use crate::address;
use crate::email::{AccountId, EmailId, EmailRecord, EmailSummary, EmailView, ListResponse, NewEmail, PageRequest};
use crate::error::{Error, FieldError, Rule, StorageError};
use crate::idempotency::{self, BatchItemError, Fingerprint, StoredResponse};
use crate::insights::{Body, DomainSettings, Draft, Insight};
use crate::ports::{
    AttachmentLoader, Clock, DnsResolver, IdempotencyBegin, IdempotencyCompletion, LoadError, ScheduleChange, Storage,
    SuppressionEntry, SuppressionReason, SystemClock, Transport,
};
use crate::render::message_id_for;
use crate::request::EmailRequest;
use crate::sandbox::DEFAULT_TEST_DOMAIN;
use crate::validate::{Limits, Validated, validate_owned};
use crate::worker::{Worker, WorkerConfig};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use uuid::Uuid;

tokio::task_local! {
    /// Set around a request whose caller runs it to its end in a task of its own.
    static RUNS_TO_ITS_END: ();
}

/// Runs `request` (a future that calls the engine) telling the engine that the caller carries
/// it to its end: the caller has spawned it as a task of its own and awaits that task, so a
/// caller further up that goes away does not stop it half-way. A keyed send then runs in that
/// task instead of starting one more (see [`Engine::send`]). A caller that merely awaits the
/// engine must not use this: the engine's own task is what finishes a keyed send whose caller
/// is dropped.
pub async fn runs_to_its_end<F: std::future::Future>(request: F) -> F::Output {
    RUNS_TO_ITS_END.scope((), request).await
}

/// Items in one batch.
pub const MAX_BATCH: usize = 100;

/// Options of a single send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// Makes a retry safe: the same key and body within 24 hours answers the first result.
    pub idempotency_key: Option<String>,
}

impl SendOptions {
    /// Options with an idempotency key.
    pub fn idempotency_key(key: impl Into<String>) -> Self {
        SendOptions { idempotency_key: Some(key.into()) }
    }
    /// Options with an idempotency key, when there is one.
    pub fn keyed(key: Option<String>) -> Self {
        SendOptions { idempotency_key: key }
    }
}

/// `{"id": "..."}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResponse {
    /// The new email's id.
    pub id: EmailId,
}

/// `{"object": "email", "id": "..."}`: the answer to a reschedule or cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailRef {
    /// Always `email`.
    pub object: String,
    /// The email's id.
    pub id: EmailId,
}

impl EmailRef {
    /// The answer for `id`.
    pub fn new(id: EmailId) -> Self {
        EmailRef { object: "email".into(), id }
    }
}

/// What [`Engine::ingest_bounce`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IngestReport {
    /// What the message was (bounce, complaint, auto-reply, delivery report, …).
    pub kind: crate::inbound::MessageKind,
    /// The email it answers, when one was found.
    pub email: Option<EmailId>,
    /// How many events were added.
    pub events: usize,
    /// The addresses it put on the suppression list.
    pub suppressed: Vec<String>,
}

/// How a batch treats invalid items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchMode {
    /// One invalid item fails the whole batch; nothing is stored.
    #[default]
    Strict,
    /// Valid items are stored; invalid ones are reported by index.
    Permissive,
}

impl FromStr for BatchMode {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "strict" => Ok(BatchMode::Strict),
            "permissive" => Ok(BatchMode::Permissive),
            other => Err(FieldError::new(
                "x-batch-validation",
                Rule::Shape(format!("{} is not `strict` or `permissive`", crate::error::quoted(other))),
            )),
        }
    }
}

/// Options of a batch send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOptions {
    /// Strict (all or nothing) or permissive (valid items stored, invalid ones reported).
    pub mode: BatchMode,
    /// Makes a retry safe, as for a single send.
    pub idempotency_key: Option<String>,
}

impl BatchOptions {
    /// Options in `mode`, without a key.
    pub fn new(mode: BatchMode) -> Self {
        BatchOptions { mode, idempotency_key: None }
    }
    /// The same options with an idempotency key, when there is one.
    pub fn keyed(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }
}

/// `{"data": [{"id"}...], "errors": [{"index", "message"}]}` (`errors` in permissive mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// One id per stored email, in input order.
    pub data: Vec<SendResponse>,
    /// Permissive mode: the invalid items, by index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<BatchItemError>>,
}

/// Generates UUIDv7 ids that increase strictly, even within one millisecond and when the
/// clock steps back, so that id order is acceptance order (the listing index relies on it).
#[derive(Debug, Default)]
struct IdGen(Mutex<(u64, u128)>);

impl IdGen {
    fn next(&self, ms: u64) -> EmailId {
        let mut g = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last_ms, last_counter) = *g;
        const COUNTER_BITS: u32 = 74;
        let max = (1u128 << COUNTER_BITS) - 1;
        let (ms, counter) = if ms > last_ms {
            // A fresh millisecond starts at a random point in the lower half, leaving room to
            // count up without overflowing.
            (ms, rand::random::<u128>() & (max >> 1))
        } else if last_counter < max {
            (last_ms, last_counter + 1)
        } else {
            (last_ms + 1, 0)
        };
        *g = (ms, counter);
        let rand_a = (counter >> 62) & 0xfff;
        let rand_b = counter & ((1u128 << 62) - 1);
        let v = (u128::from(ms & 0xffff_ffff_ffff) << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b;
        EmailId(Uuid::from_u128(v))
    }
}

/// The engine's shared parts: its settings as built, and what it keeps at run time.
/// The locks a capped create holds ([`Engine::creating`]); the shared one is dropped first.
pub(crate) struct Creating<'a> {
    _shared: Option<crate::ports::HeldLock>,
    _local: tokio::sync::MutexGuard<'a, ()>,
}

/// How many locks capped creates are spread over (see [`Engine::creating`]).
const CREATING_LOCKS: usize = 64;

#[derive(Debug)]
struct Inner {
    config: EngineBuilder,
    ids: IdGen,
    wake: Notify,
    /// Recent answers to "who receives mail for this domain" (see `receiving::RouteCache`).
    routes: crate::receiving::RouteCache,
    /// Held from counting an account's API keys, domains or webhooks to adding one, one lock
    /// per group of accounts (see [`Engine::creating`]).
    creating: [tokio::sync::Mutex<()>; CREATING_LOCKS],
    /// The counts of completed days `GET /usage` has read (see `usage::Days`).
    usage_days: crate::usage::Days,
    /// The last use of each API key this process wrote, or is writing (see
    /// [`Engine::note_key_use`]).
    key_uses: crate::keys::KeyUses,
}

/// Builds an [`Engine`].
#[derive(Debug)]
pub struct EngineBuilder {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    loader: Option<Arc<dyn AttachmentLoader>>,
    test_domain: String,
    in_flight_lease: chrono::Duration,
    retention: Option<chrono::Duration>,
    bounce_domain: Option<String>,
    text_from_html: bool,
    request_log_retention: Option<chrono::Duration>,
    domains: crate::domains::DomainConfig,
    link_key: crate::tracking::LinkKey,
    public_url: Option<String>,
}

impl EngineBuilder {
    /// Whether an email sent with `html` and without `text` gets a text part derived from
    /// its html at each hand-over (on by default, as on the hosted service; mailbox providers
    /// trust mail with both more than html alone). A client opts one email out with
    /// `text: ""`; off, html sent alone goes out as html alone.
    pub fn text_from_html(mut self, on: bool) -> Self {
        self.text_from_html = on;
        self
    }

    /// How long request logs are kept (default 30 days; `None` keeps them for ever). The
    /// worker's housekeeping removes older ones.
    pub fn request_log_retention(mut self, keep: Option<std::time::Duration>) -> Self {
        self.request_log_retention = keep.and_then(|k| chrono::Duration::from_std(k).ok());
        self
    }

    /// Sends with a VERP return path, `bounces+<email id>@<domain>`, so that a bounce that
    /// arrives later names the email it answers even when it quotes nothing of it. Without
    /// it, the return path is the sender's own address.
    pub fn bounce_domain(mut self, domain: &str) -> Self {
        self.bounce_domain = Some(domain.trim().trim_start_matches('@').to_ascii_lowercase());
        self
    }

    /// Keep bodies and events this long; after it, finished emails are pruned (ids and
    /// metadata stay). Off by default: nothing is ever removed unless the host asks.
    pub fn retention(mut self, keep: std::time::Duration) -> Self {
        self.retention = chrono::Duration::from_std(keep).ok();
        self
    }

    /// How long a keyed request's in-flight marker holds its key (default 2 minutes): a
    /// twin arriving meanwhile is refused; after it, a request whose process died no longer
    /// blocks its retry.
    pub fn idempotency_in_flight_lease(mut self, lease: std::time::Duration) -> Self {
        self.in_flight_lease = chrono::Duration::from_std(lease).unwrap_or(idempotency::IN_FLIGHT_LEASE);
        self
    }
    /// Where the time comes from (tests use a [`crate::ports::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// What one email may carry (default: the hosted service's limits and caps).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// The zone of clock times in `scheduled_at` phrases that name none (default UTC).
    pub fn schedule_zone(mut self, zone: chrono_tz::Tz) -> Self {
        self.limits.schedule_zone = zone;
        self
    }
    /// Enables `path` attachments.
    pub fn attachment_loader(mut self, loader: Arc<dyn AttachmentLoader>) -> Self {
        self.loader = Some(loader);
        self
    }
    /// The key that signs tracking and unsubscribe links (default: a random one, so links
    /// stop working when the process stops; a server keeps its key).
    pub fn link_key(mut self, key: crate::tracking::LinkKey) -> Self {
        self.link_key = key;
        self
    }
    /// The server's public base URL (`https://mail.example.com`): where unsubscribe links
    /// point when the sending domain has no verified tracking host.
    pub fn public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.trim_end_matches('/').to_string());
        self
    }
    /// What domains publish and how they are checked; whether sending from an unverified
    /// domain is refused.
    pub fn domains(mut self, config: crate::domains::DomainConfig) -> Self {
        self.domains = config;
        self
    }
    /// The domain of the test addresses (default `resend.dev`).
    pub fn test_domain(mut self, domain: &str) -> Self {
        self.test_domain = domain.to_ascii_lowercase();
        self
    }
    /// The engine.
    pub fn build(self) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                config: self,
                ids: IdGen::default(),
                wake: Notify::new(),
                routes: Default::default(),
                creating: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
                usage_days: Default::default(),
                key_uses: Default::default(),
            }),
            account: AccountId::default(),
            key: None,
        }
    }
}

/// The engine. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    account: AccountId,
    /// The API key this engine acts for: recorded on each email it accepts, and its limits
    /// (a sending domain) applied to every send.
    key: Option<Arc<crate::keys::KeyScope>>,
}

impl Engine {
    /// A builder over `storage`; everything else has a default.
    pub fn builder(storage: Arc<dyn Storage>) -> EngineBuilder {
        EngineBuilder {
            storage,
            clock: Arc::new(SystemClock),
            limits: Limits::default(),
            loader: None,
            test_domain: DEFAULT_TEST_DOMAIN.to_string(),
            in_flight_lease: idempotency::IN_FLIGHT_LEASE,
            retention: None,
            bounce_domain: None,
            text_from_html: true,
            request_log_retention: Some(chrono::Duration::days(30)),
            domains: crate::domains::DomainConfig::default(),
            link_key: crate::tracking::LinkKey::random(),
            public_url: None,
        }
    }

    /// The last use of each API key this process wrote (see [`Engine::note_key_use`]).
    pub(crate) fn key_uses(&self) -> &crate::keys::KeyUses {
        &self.inner.key_uses
    }

    /// The same engine acting for another account. A single-account host never calls this.
    pub fn with_account(&self, account: impl AsRef<str>) -> Engine {
        Engine { inner: Arc::clone(&self.inner), account: AccountId::new(account), key: self.key.clone() }
    }

    /// The same engine acting for `key` of `account`: every email it accepts records the key
    /// (an email whose key is revoked before it falls due is not sent: it ends `failed`), and
    /// a key limited to a sending domain sends only from it (403 otherwise).
    pub fn with_key(&self, account: &AccountId, key: &crate::ports::ApiKeyRecord) -> Engine {
        let scope = crate::keys::KeyScope { id: key.id.clone(), permission: key.permission.clone() };
        Engine { inner: Arc::clone(&self.inner), account: account.clone(), key: Some(Arc::new(scope)) }
    }

    /// The id of a request log written at `at`: from the same generator as email ids, so it
    /// is above every id this engine gave before. Why not [`RequestLog::id_at`]'s random low
    /// bits: two requests answered within one millisecond must still list newest first.
    ///
    /// [`RequestLog::id_at`]: crate::ports::RequestLog::id_at
    pub fn request_log_id(&self, at: chrono::DateTime<chrono::Utc>) -> u128 {
        self.id_at(at).as_u128()
    }

    /// The id of the key this engine acts for, if any.
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_deref().map(|k| k.id.as_str())
    }

    /// A fresh id, later than every id this engine gave before.
    pub(crate) fn next_id(&self) -> EmailId {
        self.id_at(self.inner.config.clock.now())
    }

    /// The generator's next id for an instant (email ids and request-log ids share it).
    fn id_at(&self, at: chrono::DateTime<chrono::Utc>) -> EmailId {
        self.inner.ids.next(u64::try_from(at.timestamp_millis()).unwrap_or(0))
    }

    /// The route cache of inbound mail.
    pub(crate) fn route_cache(&self) -> &crate::receiving::RouteCache {
        &self.inner.routes
    }

    /// The domain of VERP bounce addresses, if one is set.
    pub fn bounce_domain_name(&self) -> Option<&str> {
        self.inner.config.bounce_domain.as_deref()
    }

    /// The account this engine acts for.
    pub fn account(&self) -> &AccountId {
        &self.account
    }
    /// The lock a capped create holds from its count to its insert. Why: the caps on an
    /// account's API keys, domains and webhooks are a count, then an insert, two store calls;
    /// without it, concurrent creates each see room and all insert (a test saw 24 domains
    /// made where 5 places were left). One lock for the three, since creating them is rare;
    /// but one per group of accounts (by a hash of the name), since the caps are per account:
    /// with one lock for all, an account flooding refused key creates (64 connections) made
    /// another account's webhook create take 45–75 ms; with these locks, 1–5 ms. A store
    /// shared by several processes (Postgres) adds its own lock across them
    /// ([`crate::ports::Storage::hold_create_lock`]), taken after this one, so that a process's racing
    /// creates queue here and not on database connections.
    pub(crate) async fn creating(&self) -> Result<Creating<'_>, Error> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.account.hash(&mut h);
        let local = self.inner.creating[(h.finish() % CREATING_LOCKS as u64) as usize].lock().await;
        let shared = self.storage().hold_create_lock(&self.account).await?;
        Ok(Creating { _shared: shared, _local: local })
    }
    /// The store.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.config.storage
    }
    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.config.clock
    }
    pub(crate) fn domain_settings(&self) -> &crate::domains::DomainConfig {
        &self.inner.config.domains
    }

    /// A secret that signs browser sessions (the dashboard's cookie), derived from the link
    /// key: one secret to keep, and sessions outlive a restart exactly when links do.
    pub fn session_key(&self) -> [u8; 32] {
        self.inner.config.link_key.derive(b"mailroom dashboard session v1")
    }

    pub(crate) fn link_key(&self) -> &crate::tracking::LinkKey {
        &self.inner.config.link_key
    }

    /// The server's public base URL, when configured.
    pub fn public_url(&self) -> Option<&str> {
        self.inner.config.public_url.as_deref()
    }

    /// The domain of the test addresses.
    pub fn test_domain(&self) -> &str {
        &self.inner.config.test_domain
    }
    /// The limits every email is checked against.
    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }
    /// The envelope sender (MAIL FROM) for an email: its VERP return path when a bounce
    /// domain is configured, otherwise the sender's address.
    pub fn return_path(&self, id: EmailId, from: &crate::address::Mailbox) -> String {
        match &self.inner.config.bounce_domain {
            Some(domain) => format!("bounces+{id}@{domain}"),
            None => from.address(),
        }
    }

    pub(crate) fn wake_signal(&self) -> &Notify {
        &self.inner.wake
    }

    /// A worker that delivers this engine's due emails (all accounts) through `transport`.
    pub fn worker(&self, transport: Arc<dyn Transport>, config: WorkerConfig) -> Worker {
        Worker::new(self.clone(), transport, config)
    }

    /// Sends one email. Returns once it is durably stored (queued or scheduled).
    pub async fn send(&self, request: EmailRequest, options: SendOptions) -> Result<SendResponse, Error> {
        let resp =
            self.accept("email", vec![request], BatchMode::Strict, options.idempotency_key.as_deref(), false).await?;
        resp.ids.first().map(|id| SendResponse { id: *id }).ok_or_else(|| {
            Error::Storage(crate::error::StorageError::Corrupt("idempotent replay without an id".into()))
        })
    }

    /// Sends 1 to 100 emails, each with its own recipients and content. Ids come back in
    /// input order.
    pub async fn send_batch(&self, requests: Vec<EmailRequest>, options: BatchOptions) -> Result<BatchResponse, Error> {
        let resp = self.accept("batch", requests, options.mode, options.idempotency_key.as_deref(), true).await?;
        Ok(BatchResponse {
            data: resp.ids.into_iter().map(|id| SendResponse { id }).collect(),
            errors: (options.mode == BatchMode::Permissive).then_some(resp.errors),
        })
    }

    async fn accept(
        &self,
        endpoint: &str,
        requests: Vec<EmailRequest>,
        mode: BatchMode,
        key: Option<&str>,
        is_batch: bool,
    ) -> Result<StoredResponse, Error> {
        if let Some(scope) = &self.key {
            scope.check_senders(&requests)?;
        }
        self.check_verified_senders(&requests).await?;
        self.check_unsubscribe_links(&requests).await?;
        let Some(key) = key else {
            return self.prepare_and_insert(requests, mode, None, is_batch).await;
        };
        idempotency::validate_key(key)?;
        let fingerprint = Fingerprint::of(endpoint, &(mode, &requests));
        // From the key's marker on, the request runs to its end in a task of its own, even
        // when the caller goes away (an HTTP client that hangs up drops its handler, at any
        // await — the marker's own write included). Why: a client that times out retries with
        // the same key; abandoned, the key would answer `409 concurrent_idempotent_requests`
        // until its in-flight marker lapsed. Finished, the retry gets the stored answer (or a
        // free key, if nothing was stored).
        //
        // A caller that already runs the request in a task of its own, and awaits that task,
        // says so with [`runs_to_its_end`]: one task is enough (`serve`'s HTTP layer does,
        // to keep its permits to the end; a second task cost every keyed request a spawn and
        // a wake-up for nothing).
        if RUNS_TO_ITS_END.try_with(|_| ()).is_ok() {
            return self.accept_keyed(requests, mode, key, fingerprint, is_batch).await;
        }
        let (engine, key) = (self.clone(), key.to_string());
        let keyed = tokio::spawn(async move { engine.accept_keyed(requests, mode, &key, fingerprint, is_batch).await });
        match keyed.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => {
                Err(Error::Storage(crate::error::StorageError::Backend(format!("the request's task ended: {e}"))))
            }
        }
    }

    /// The keyed part of [`accept`](Self::accept): the key's marker, then the emails with the
    /// key's completion, or the key freed when nothing was stored.
    async fn accept_keyed(
        &self,
        requests: Vec<EmailRequest>,
        mode: BatchMode,
        key: &str,
        fingerprint: Fingerprint,
        is_batch: bool,
    ) -> Result<StoredResponse, Error> {
        let storage = &self.inner.config.storage;
        let now = self.inner.config.clock.now();
        match storage
            .idempotency_begin(&self.account, key, &fingerprint, now, now + self.inner.config.in_flight_lease)
            .await?
        {
            IdempotencyBegin::Started => {}
            IdempotencyBegin::Replay(r) => return Ok(r),
            IdempotencyBegin::Mismatch => return Err(Error::InvalidIdempotentRequest),
            IdempotencyBegin::InFlight => return Err(Error::ConcurrentIdempotentRequests),
        }
        let result = self.prepare_and_insert(requests, mode, Some((key, fingerprint)), is_batch).await;
        if result.is_err() {
            // Nothing was stored: free the key so a corrected retry can use it. If this
            // release fails too, the marker lapses on its own after IN_FLIGHT_LEASE.
            let _ = storage.idempotency_release(&self.account, key).await;
        }
        result
    }

    async fn prepare_and_insert(
        &self,
        requests: Vec<EmailRequest>,
        mode: BatchMode,
        key: Option<(&str, Fingerprint)>,
        is_batch: bool,
    ) -> Result<StoredResponse, Error> {
        if is_batch && requests.is_empty() {
            return Err(FieldError::new("emails", Rule::TooFew { min: 1, got: 0 }).into());
        }
        if is_batch && requests.len() > MAX_BATCH {
            return Err(FieldError::new("emails", Rule::TooMany { max: MAX_BATCH, got: requests.len() }).into());
        }
        let now = self.inner.config.clock.now();
        let mut valid = Vec::with_capacity(requests.len());
        let mut invalid: Vec<(usize, Vec<FieldError>)> = Vec::new();
        for (i, r) in requests.into_iter().enumerate() {
            let checked = match validate_owned(r, now, &self.inner.config.limits) {
                Ok(v) => self.load_attachments(v).await,
                Err(e) => Err(e),
            };
            match checked {
                Ok(v) => valid.push(v),
                Err(e) => invalid.push((i, e)),
            }
        }
        let item_path = |i: usize| if is_batch { format!("emails[{i}]") } else { String::new() };
        if !invalid.is_empty() && (mode == BatchMode::Strict || !is_batch) {
            let all = invalid
                .into_iter()
                .flat_map(|(i, errs)| {
                    let prefix = item_path(i);
                    errs.into_iter().map(move |e| if prefix.is_empty() { e } else { e.under(&prefix) })
                })
                .collect();
            return Err(Error::Invalid(all));
        }
        let errors: Vec<BatchItemError> = invalid
            .into_iter()
            .map(|(index, errs)| BatchItemError {
                index,
                message: errs.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
            })
            .collect();

        let emails: Vec<NewEmail> = valid
            .into_iter()
            .map(|v| {
                let id = self.id_at(now);
                let mut content = v.content;
                content.message_id = message_id_for(&id, &content.from);
                content.api_key_id = self.key_id().map(str::to_string);
                NewEmail { account: self.account.clone(), id, created_at: now, scheduled_at: v.scheduled_at, content }
            })
            .collect();
        let response = StoredResponse { ids: emails.iter().map(|e| e.id).collect(), errors };
        let completion = key.map(|(k, fingerprint)| IdempotencyCompletion {
            key: k.to_string(),
            fingerprint,
            response: response.clone(),
            created_at: now,
            expires_at: now + idempotency::RETENTION,
        });
        let accepted = emails.len() as u64;
        if !emails.is_empty() || completion.is_some() {
            self.inner.config.storage.insert_emails(&self.account, emails, completion).await?;
        }
        metrics::counter!("mailroom_emails_accepted_total").increment(accepted);
        self.inner.wake.notify_one();
        Ok(response)
    }

    async fn load_attachments(&self, mut v: Validated) -> Result<Validated, Vec<FieldError>> {
        if v.to_load.is_empty() {
            return Ok(v);
        }
        let limits = &self.inner.config.limits;
        let max = limits.max_email_bytes;
        let Some(loader) = &self.inner.config.loader else {
            return Err(v
                .to_load
                .iter()
                .map(|(index, _)| {
                    let why = LoadError::Refused("no attachment loader is configured".into());
                    FieldError::new(format!("attachments[{index}].path"), Rule::AttachmentLoad(why.to_string()))
                })
                .collect());
        };
        // One after the other, each against what is left of the size limit, so that one
        // email never holds more than the limit; all within one deadline.
        let to_load = std::mem::take(&mut v.to_load);
        let mut errors = Vec::new();
        let mut size = v.size;
        let loading = async {
            for (index, path) in &to_load {
                let field = format!("attachments[{index}].path");
                let left = max.saturating_sub(size);
                match loader.load(path, left).await {
                    Ok(loaded) => {
                        size += loaded.content.len();
                        if let Some(a) = v.content.attachments.get_mut(*index) {
                            if let Some(ct) = loaded.content_type
                                && a.content_type == "application/octet-stream"
                            {
                                a.content_type = ct;
                            }
                            a.content = loaded.content;
                            if a.filename.is_none() {
                                a.filename = loaded.filename;
                            }
                        }
                    }
                    Err(LoadError::TooLarge { .. }) => {
                        let why = format!("it is larger than the {left} bytes left of the {max}-byte email limit");
                        errors.push(FieldError::new(field, Rule::AttachmentLoad(why)));
                        return;
                    }
                    Err(why) => errors.push(FieldError::new(field, Rule::AttachmentLoad(why.to_string()))),
                }
            }
        };
        if tokio::time::timeout(limits.attachment_load_timeout, loading).await.is_err() {
            let secs = limits.attachment_load_timeout.as_secs();
            errors.push(FieldError::new(
                "attachments",
                Rule::AttachmentLoad(format!("loading the `path` attachments took longer than {secs} s")),
            ));
        }
        if size > max {
            errors.push(FieldError::new("", Rule::EmailTooLarge { max, got: size }));
        }
        if errors.is_empty() { Ok(v) } else { Err(errors) }
    }

    /// Resolves a `scheduled_at` value (ISO 8601 or English) as a send would, at the
    /// engine's now and in its default zone.
    pub fn resolve_schedule(&self, when: &str) -> Result<chrono::DateTime<chrono::Utc>, Error> {
        let limits = &self.inner.config.limits;
        crate::schedule::resolve_in(when, self.inner.config.clock.now(), limits.max_schedule_days, limits.schedule_zone)
            .map_err(|rule| FieldError::new("scheduled_at", rule).into())
    }

    /// `PATCH /emails/{id}`: moves a scheduled email to `when` (ISO 8601 or English).
    pub async fn reschedule(&self, id: EmailId, when: &str) -> Result<EmailRef, Error> {
        let at = self.resolve_schedule(when)?;
        match self.inner.config.storage.change_schedule(&self.account, id, crate::ports::ScheduleOp::MoveTo(at)).await?
        {
            ScheduleChange::Applied => {
                // It may now be the earliest due email: the worker recomputes its sleep.
                self.inner.wake.notify_one();
                Ok(EmailRef::new(id))
            }
            ScheduleChange::NotFound => Err(Error::NotFound { what: "Email" }),
            ScheduleChange::NotScheduled(last_event) => Err(Error::NotScheduled { action: "rescheduled", last_event }),
        }
    }

    /// `POST /emails/{id}/cancel`: cancels a scheduled email, for good.
    pub async fn cancel(&self, id: EmailId) -> Result<EmailRef, Error> {
        match self
            .inner
            .config
            .storage
            .change_schedule(&self.account, id, crate::ports::ScheduleOp::Cancel(self.inner.config.clock.now()))
            .await?
        {
            ScheduleChange::Applied => Ok(EmailRef::new(id)),
            ScheduleChange::NotFound => Err(Error::NotFound { what: "Email" }),
            ScheduleChange::NotScheduled(last_event) => Err(Error::NotScheduled { action: "canceled", last_event }),
        }
    }

    /// Applies a bounce or complaint message to the email it answers (found by the VERP
    /// return path or by the original Message-ID it quotes): a `bounced` event per failed
    /// recipient (only a permanent failure of the address suppresses it), a
    /// `delivery_delayed` event per recipient a delay notice names, or a `complained` event
    /// (which suppresses). Only the email's own recipients are suppressed: an address it was
    /// not sent to stands for the email's only recipient (forwarded mail), or, when it had
    /// several, is recorded and left alone. Auto-replies and success reports change nothing,
    /// and neither do feedback reports that are no recipient's complaint (an `auth-failure`
    /// or `not-spam` report: see [`Parsed::is_recipient_complaint`]).
    ///
    /// [`Parsed::is_recipient_complaint`]: crate::inbound::Parsed::is_recipient_complaint
    pub async fn ingest_bounce(&self, raw: &[u8]) -> Result<IngestReport, Error> {
        use crate::inbound::{MessageKind, parse};
        let parsed = parse(raw);
        let mut report = IngestReport { kind: parsed.kind, email: None, events: 0, suppressed: vec![] };
        let complaint = parsed.is_recipient_complaint();
        if !(matches!(parsed.kind, MessageKind::Bounce | MessageKind::Delayed) || complaint) {
            return Ok(report);
        }
        let id = parsed
            .links
            .verp
            .as_deref()
            .and_then(|v| v.parse::<EmailId>().ok())
            .or_else(|| {
                let mid = parsed.links.original_message_id.as_deref()?;
                mid.trim().trim_start_matches('<').split('@').next()?.parse::<EmailId>().ok()
            })
            .ok_or(Error::NotFound { what: "Email" })?;
        let record =
            self.inner.config.storage.get_email(&self.account, id).await?.ok_or(Error::NotFound { what: "Email" })?;
        let ours: Vec<String> = record.content.recipients().iter().map(|m| m.key()).collect();
        // Whom a report names is the report's word, and anyone who received the email knows
        // its return path and Message-ID: a report could name any address. So only the email's
        // own recipients are marked and suppressed. An address that is not one of them is
        // where the email was forwarded (a DSN's Final-Recipient after an alias): the report's
        // Original-Recipient, when it gives one of ours, says whose forward it was; else it is
        // the one recipient's when the email had one; otherwise the event keeps the address
        // the report gave and nothing is suppressed.
        // Compared as suppression keys: a report may spell the domain in Unicode where the
        // email's key holds its A-labels (`bücher` against `xn--bcher-kva`).
        let ours_by_key = |named: &str| {
            Some(crate::address::normalize(named).unwrap_or_else(|_| named.to_lowercase())).filter(|k| ours.contains(k))
        };
        let whose_of = |named: &str, original: Option<&str>| -> (String, bool) {
            if let Some(key) = ours_by_key(named).or_else(|| original.and_then(ours_by_key)) {
                return (key, true);
            }
            match ours.as_slice() {
                [only] => (only.clone(), true),
                _ => (named.to_string(), false),
            }
        };
        let whose = |named: &str| whose_of(named, None);
        let now = self.inner.config.clock.now();
        let mut events = Vec::new();
        let mut suppressions = Vec::new();
        let entry = |address: &str, reason| SuppressionEntry::caused_by(address, reason, id, now);
        // One event per address a report names, and of the addresses that are not the email's
        // own only the first: a report may list any number of them (a 1 MB feedback report
        // naming 24,000 strangers once wrote as many events on one email).
        let mut seen = std::collections::HashSet::new();
        let mut stranger_recorded = false;
        let mut admit = |who: &(String, bool)| {
            seen.insert(who.0.clone()) && (who.1 || !std::mem::replace(&mut stranger_recorded, true))
        };
        for b in &parsed.bounces {
            let who = whose_of(&b.recipient, b.original_recipient.as_deref());
            if !admit(&who) {
                continue;
            }
            let (recipient, is_ours) = who;
            // A failure the notice names without an address (a display name alone) is the
            // email's only recipient's (`whose_of`); with several, an event without one.
            let named = |e: crate::email::Event| if recipient.is_empty() { e } else { e.recipient(&recipient) };
            // A delay notice is the reporting server still trying: `delivery_delayed`, never a
            // bounce and never a suppression.
            if b.delayed {
                let mut e = named(crate::email::Event::new(crate::lifecycle::EventKind::DeliveryDelayed, now));
                if let Some(code) = b.reply_code {
                    e.reply = Some(crate::bounce::SmtpReply::new(code, &b.status, &b.diagnostic));
                }
                events.push(e);
                continue;
            }
            let info = crate::bounce::BounceInfo {
                kind: b.kind,
                subtype: b.subtype,
                message: format!("{:?}", b.reason).to_ascii_lowercase(),
                diagnostic: vec![b.diagnostic.clone()],
            };
            let mut e = named(crate::email::Event::new(crate::lifecycle::EventKind::Bounced, now)).bounce(info);
            if let Some(code) = b.reply_code {
                e.reply = Some(crate::bounce::SmtpReply::new(code, &b.status, &b.diagnostic));
            }
            events.push(e);
            if b.suppress && is_ours {
                suppressions.push(entry(&recipient, SuppressionReason::Bounced));
            }
        }
        if complaint {
            // A `complained` event per recipient the report names. One that names no one
            // (redacted, or several in the quoted `To`) is about the email's only recipient
            // when it had one; otherwise it is one event without a recipient.
            let mut named: Vec<(String, bool)> =
                parsed.complainants.iter().map(|r| whose(r)).filter(|w| admit(w)).collect();
            if let ([], [only]) = (named.as_slice(), ours.as_slice()) {
                named.push((only.clone(), true));
            }
            if named.is_empty() {
                events.push(crate::email::Event::new(crate::lifecycle::EventKind::Complained, now));
            }
            for (r, is_ours) in named {
                if is_ours {
                    suppressions.push(entry(&r, SuppressionReason::Complained));
                }
                events.push(crate::email::Event::new(crate::lifecycle::EventKind::Complained, now).recipient(&r));
            }
        }
        report.events = events.len();
        report.suppressed = suppressions.iter().map(|s| s.address.clone()).collect();
        match self.inner.config.storage.append_events(id, events, suppressions).await? {
            Some(_) => {
                report.email = Some(id);
                Ok(report)
            }
            None => Err(Error::NotFound { what: "Email" }),
        }
    }

    /// The whole stored email.
    pub async fn get_record(&self, id: EmailId) -> Result<EmailRecord, Error> {
        self.inner.config.storage.get_email(&self.account, id).await?.ok_or(Error::NotFound { what: "Email" })
    }

    /// The text part derived from `content`'s html, as this engine hands it over: for html
    /// sent without `text`, unless derivation is off ([`EngineBuilder::text_from_html`]).
    pub fn derived_text(&self, content: &crate::email::EmailContent) -> Option<String> {
        if self.derives_text() { crate::render::derived_text(content) } else { None }
    }

    /// Whether this engine derives a text part for html sent alone.
    pub(crate) fn derives_text(&self) -> bool {
        self.inner.config.text_from_html
    }

    /// The text part `content` goes out with from this engine ([`crate::render::text_of`]),
    /// what the dashboard and the share page show and the insights read.
    pub fn text_part<'a>(&self, content: &'a crate::email::EmailContent) -> Option<std::borrow::Cow<'a, str>> {
        match content.text.as_deref() {
            Some(_) => crate::render::text_of(content, None).map(std::borrow::Cow::Borrowed),
            None => self.derived_text(content).map(std::borrow::Cow::Owned),
        }
    }

    /// Deliverability insights for a stored email (queued, scheduled, sent, ...): its body as
    /// kept (a pruned body makes the checks that read it `unknown`), its sending domain's
    /// settings from `domains`, DNS answers from `dns`.
    pub async fn insights(&self, id: EmailId, dns: &dyn DnsResolver) -> Result<Vec<Insight>, Error> {
        let r = self.get_record(id).await?;
        let text = self.text_part(&r.content);
        let body =
            r.state.pruned_at.is_none().then_some(Body { html: r.content.html.as_deref(), text: text.as_deref() });
        self.insights_of(Draft { from: Ok(&r.content.from), body }, dns).await
    }

    /// Deliverability insights for a draft: a request not submitted, which need not be complete
    /// (a missing or unreadable `from` makes the sender's checks `unknown`, saying why). A text
    /// part this engine would derive from the html (`text_from_html`) counts as included.
    pub async fn draft_insights(&self, draft: &EmailRequest, dns: &dyn DnsResolver) -> Result<Vec<Insight>, Error> {
        let from = match draft.from.as_deref() {
            None => Err(FieldError::new("from", Rule::Required).to_string()),
            Some(f) => address::Mailbox::parse(f).map_err(|e| FieldError::new("from", Rule::Address(e)).to_string()),
        };
        let derived = match (&draft.text, &draft.html) {
            (None, Some(html)) if self.inner.config.text_from_html => Some(crate::html::to_text(html)),
            _ => None,
        };
        let body = Body { html: draft.html.as_deref(), text: draft.text.as_deref().or(derived.as_deref()) };
        let from = from.as_ref().map_err(String::as_str);
        self.insights_of(Draft { from, body: Some(body) }, dns).await
    }

    /// The sending domain's settings come from the store's [`crate::ports::DomainStore`]; a
    /// store without one knows no domain (its checks say so).
    async fn insights_of(&self, draft: Draft<'_>, dns: &dyn DnsResolver) -> Result<Vec<Insight>, Error> {
        let settings = match draft.from {
            Ok(m) => self
                .domain_named(&m.domain)
                .await?
                .map(|d| DomainSettings { click_tracking: d.click_tracking, open_tracking: d.open_tracking }),
            Err(_) => None,
        };
        Ok(crate::insights::insights(draft, settings, dns).await)
    }

    /// `GET /emails/{id}`.
    pub async fn get(&self, id: EmailId) -> Result<EmailView, Error> {
        Ok(EmailView::from(&self.get_record(id).await?))
    }

    /// `GET /emails`: newest first, cursor-paginated.
    pub async fn list(&self, page: PageRequest) -> Result<ListResponse<EmailSummary>, Error> {
        Ok(self.inner.config.storage.list_emails(&self.account, page).await?.into())
    }

    /// The account's email metrics as `query` asks (`GET /emails/metrics`; see
    /// [`crate::email_metrics`] for what each counts).
    pub async fn email_metrics(&self, query: &crate::email_metrics::MetricsQuery) -> Result<serde_json::Value, Error> {
        crate::email_metrics::compute(&*self.inner.config.storage, &self.account, query).await
    }

    /// The same range's metrics broken down each way `breakdowns` names, from one reading
    /// ([`crate::email_metrics::compute_breakdowns`]).
    pub async fn email_metrics_breakdowns(
        &self,
        query: &crate::email_metrics::MetricsQuery,
        breakdowns: &[Vec<crate::email_metrics::Dimension>],
    ) -> Result<Vec<serde_json::Value>, Error> {
        crate::email_metrics::compute_breakdowns(&*self.inner.config.storage, &self.account, query, breakdowns).await
    }

    /// The account's usage now: emails sent and received today and this month (UTC), and its
    /// domains (`GET /usage`; see [`crate::usage`]).
    pub async fn usage(&self) -> Result<crate::usage::Usage, Error> {
        let now = self.inner.config.clock.now();
        crate::usage::measure(&*self.inner.config.storage, &self.inner.usage_days, &self.account, now).await
    }

    /// Puts an address on the suppression list (by hand).
    pub async fn suppress(&self, address: &str, reason: SuppressionReason) -> Result<SuppressionEntry, Error> {
        let key = address::normalize(address).map_err(|e| FieldError::new("address", Rule::Address(e)))?;
        let entry =
            SuppressionEntry { address: key, reason, source_email: None, created_at: self.inner.config.clock.now() };
        self.inner.config.storage.suppression_add(&self.account, entry.clone()).await?;
        Ok(entry)
    }

    /// Takes an address off the list. `NotFound` when it was not listed.
    pub async fn unsuppress(&self, address: &str) -> Result<(), Error> {
        let key = address::normalize(address).map_err(|e| FieldError::new("address", Rule::Address(e)))?;
        if self.inner.config.storage.suppression_remove(&self.account, &key, self.inner.config.clock.now()).await? {
            Ok(())
        } else {
            Err(Error::NotFound { what: "Suppression" })
        }
    }

    /// The entry for `address`, if listed.
    pub async fn suppression(&self, address: &str) -> Result<Option<SuppressionEntry>, Error> {
        let key = address::normalize(address).map_err(|e| FieldError::new("address", Rule::Address(e)))?;
        Ok(self.inner.config.storage.suppression_lookup(&self.account, &[key]).await?.pop())
    }

    /// Every suppressed address of this account, by address.
    pub async fn suppressions(&self) -> Result<Vec<SuppressionEntry>, Error> {
        Ok(self.inner.config.storage.suppression_list(&self.account).await?)
    }

    /// `GET /suppressions`: one page of the list in address order. A cursor that is the id of
    /// no entry is an error naming it (the hosted API's cursors are ids of listed items).
    pub async fn suppressions_page(
        &self,
        q: &crate::suppressions::PageQuery,
    ) -> Result<crate::email::ListResponse<SuppressionEntry>, Error> {
        use crate::suppressions::Cursor;
        match self.inner.config.storage.suppression_page(&self.account, q).await? {
            Some(page) => Ok(page.into()),
            None => {
                let field = if matches!(q.cursor, Cursor::Before(_)) { "before" } else { "after" };
                Err(FieldError::new(field, Rule::Shape("it is the id of no suppression on the list".into())).into())
            }
        }
    }

    /// The entry that `id_or_email` names: an address (anything with an `@`), or an entry's id
    /// ([`crate::suppressions::id`]).
    pub async fn suppression_named(&self, id_or_email: &str) -> Result<Option<SuppressionEntry>, Error> {
        if id_or_email.contains('@') {
            self.suppression(id_or_email).await
        } else {
            // Ids are written in lower case; a client may send one in upper case.
            let id = id_or_email.to_ascii_lowercase();
            Ok(self.inner.config.storage.suppression_by_id(&self.account, &id).await?)
        }
    }

    /// Puts an address on the list by hand (origin `manual`), unless it is listed already:
    /// then the entry that is there stays as it is (a bounce or complaint keeps its origin and
    /// source). The entry listed afterwards.
    pub async fn suppress_by_hand(&self, address: &str) -> Result<SuppressionEntry, Error> {
        let key = address::normalize(address).map_err(|e| FieldError::new("address", Rule::Address(e)))?;
        let entry = SuppressionEntry {
            address: key,
            reason: SuppressionReason::Bounced,
            source_email: None,
            created_at: self.inner.config.clock.now(),
        };
        // One atomic step: a bounce listing the address meanwhile is kept, not overwritten.
        Ok(self.inner.config.storage.suppression_add_if_absent(&self.account, entry).await?)
    }

    /// Takes the entry that `id_or_email` names off the list; it, or `NotFound`.
    pub async fn unsuppress_named(&self, id_or_email: &str) -> Result<SuppressionEntry, Error> {
        let entry = self.suppression_named(id_or_email).await?.ok_or(Error::NotFound { what: "Suppression" })?;
        self.unsuppress(&entry.address).await?;
        Ok(entry)
    }

    /// Applies the retention setting (if any): prunes every finished email older than it.
    /// The worker calls this periodically. Returns how many emails were pruned.
    pub async fn prune(&self) -> Result<usize, Error> {
        match self.inner.config.retention {
            Some(keep) => self.prune_older_than(keep).await,
            None => Ok(0),
        }
    }

    /// Prunes the bodies and old events of finished emails created more than `keep` ago, in
    /// bounded steps (each one atomic) so that no write transaction grows without bound.
    pub async fn prune_older_than(&self, keep: chrono::Duration) -> Result<usize, Error> {
        let now = self.inner.config.clock.now();
        // 500 emails per write transaction: small enough to keep each commit short.
        drain(500, |n| self.inner.config.storage.prune(now - keep, now, n)).await
    }

    /// Drops idempotency records older than 24 hours. The worker calls this periodically.
    pub async fn purge_expired(&self) -> Result<usize, Error> {
        Ok(self.inner.config.storage.purge_idempotency(self.inner.config.clock.now()).await?)
    }

    /// What the worker does once a minute: drops expired idempotency records and applies the
    /// retention of emails and request logs.
    pub async fn housekeeping(&self) -> Result<(), Error> {
        self.purge_expired().await?;
        self.prune().await?;
        self.prune_request_logs().await?;
        self.prune_event_log().await?;
        Ok(())
    }

    /// Applies the request-log retention (default 30 days) to the event log too: entries that
    /// happened before it go, in bounded steps, and so do webhook messages that are finished
    /// (they keep their own bodies, so a pruned event does not change them). Returns how many
    /// log entries were removed.
    pub async fn prune_event_log(&self) -> Result<usize, Error> {
        let (Some(keep), Some(log)) = (self.inner.config.request_log_retention, self.storage().event_log()) else {
            return Ok(0);
        };
        let cutoff = self.inner.config.clock.now() - keep;
        let total = drain(1000, |n| log.events_prune(cutoff, n)).await?;
        if let Some(hooks) = self.storage().webhooks() {
            drain(1000, |n| hooks.messages_prune(cutoff, n)).await?;
        }
        Ok(total)
    }

    /// Applies the request-log retention (default 30 days): removes older logs, in bounded
    /// steps. The worker calls this periodically. Returns how many were removed.
    pub async fn prune_request_logs(&self) -> Result<usize, Error> {
        let (Some(keep), Some(logs)) = (self.inner.config.request_log_retention, self.storage().request_logs()) else {
            return Ok(0);
        };
        let cutoff = self.inner.config.clock.now() - keep;
        drain(1000, |n| logs.log_prune(cutoff, n)).await
    }
}

/// Retention in bounded writes: calls `step` with a limit of `size` until a call removes
/// fewer. Returns how many were removed in all.
async fn drain<F, Fut>(size: usize, mut step: F) -> Result<usize, Error>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<usize, StorageError>>,
{
    let mut total = 0;
    loop {
        let n = step(size).await?;
        total += n;
        if n < size {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_within_a_millisecond_and_across_clock_steps() {
        let g = IdGen::default();
        let mut last = g.next(1_000);
        for ms in [1_000, 1_000, 1_001, 999, 1_001, 5_000, 5_000] {
            let id = g.next(ms);
            assert!(id > last, "{id} after {last}");
            assert_eq!(id.0.get_version_num(), 7);
            last = id;
        }
    }

    /// Request logs written within one millisecond list in the order they were written.
    #[test]
    fn request_log_ids_of_one_instant_rise_in_order() {
        let engine = Engine::builder(Arc::new(crate::memory::MemoryStorage::new())).build();
        let at = chrono::DateTime::from_timestamp_millis(1_780_000_000_123).unwrap_or_default();
        let ids: Vec<u128> = (0..2_000).map(|_| engine.request_log_id(at)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "not rising");
        assert!(ids.iter().all(|id| id >> 80 == 1_780_000_000_123), "the millisecond is kept");
    }
}
