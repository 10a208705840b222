//! The delivery worker: claims due emails, skips suppressed recipients, renders, hands over
//! with bounded concurrency, and records each outcome with its events and suppressions.
//!
//! Invariants:
//! - a message is handed to the transport only after its hand-over is durably marked, and
//!   an email found marked by a later claim (the process died mid-send) is never handed over
//!   again: it ends `failed` with the reason, because it may already have left;
//! - a suppressed recipient is never handed over;
//! - on shutdown, claims not yet handed over are released (due again at once), and claims
//!   being sent are finished and recorded.

use crate::address::Mailbox;
use crate::bounce::{BounceInfo, BounceSubtype, BounceType, Stage, bounce_info, bounce_info_at};
use crate::email::{AccountId, EmailId};
use crate::email::{EmailRecord, Event};
use crate::engine::Engine;
use crate::error::Error;
use crate::lifecycle::EventKind;
use crate::ports::{
    ClaimRef, ClaimedEmail, Envelope, Feedback, Next, Outcome, RecipientStatus, SuppressionEntry, SuppressionReason,
    Transport, TransportErrorKind,
};
use crate::retry::RetryPolicy;
use crate::sandbox::TestAddress;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod gate;
use gate::{Entry, Gate, Grant};

/// Why an email whose API key was revoked before it was due is not sent.
pub const KEY_REVOKED_REASON: &str = "API key is no longer active";

/// The reason recorded when a hand-over's outcome was lost to a crash.
pub const AMBIGUOUS_REASON: &str = "the process stopped after handing the message to the transport; \
     it may have been delivered, so it is not sent again";

/// How a worker runs. Change fields of [`WorkerConfig::default`]; new ones may be added.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Emails in flight at once (claimed, being prepared, handed over, being recorded).
    pub concurrency: usize,
    /// Hand-overs at once: emails from before their durable hand-over mark until their outcome
    /// is durable. Only these can be in doubt after a crash (see [`InDoubt`]), so the bound is
    /// kept near what the transport can actually send at once (its connections), well below
    /// `concurrency`: the other emails in flight wait before their mark, not after.
    pub handovers: usize,
    /// Emails claimed per storage round trip.
    pub claim_batch: usize,
    /// How long a claim holds. Long enough for the slowest hand-over (SMTP deadlines add up
    /// to a few minutes at most); a worker that dies loses its emails for this long.
    pub lease: Duration,
    /// The longest the worker sleeps with nothing due. Another process sharing the store
    /// cannot wake this one, so it looks again at least this often.
    pub max_idle: Duration,
    /// When deferred deliveries are retried.
    pub retry: RetryPolicy,
    /// What happens to a hand-over whose outcome is unknown.
    pub in_doubt: InDoubt,
    /// Renew the claims in hand this often (for stores several processes share, whose leases
    /// are short so that a dead process's emails are taken over soon); `None`: never.
    pub heartbeat: Option<Duration>,
}

/// What the worker does with a hand-over whose outcome it cannot know: the process stopped
/// after the hand-over was marked and before its outcome was recorded, or the connection
/// dropped after the message's last byte and before the server's reply.
///
/// Neither choice is free. SMTP offers no way to ask a server whether it took a message, so a
/// hand-over in doubt either risks a duplicate or risks a loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InDoubt {
    /// At most once (the default): the email ends `failed` with [`AMBIGUOUS_REASON`] and is
    /// never handed over again. No recipient gets it twice; a message lost in the crash stays
    /// lost (the `failed` event says so, and the caller can send it again on purpose).
    #[default]
    Fail,
    /// At least once: the email is handed over again (under the usual retry schedule when the
    /// connection dropped), with the same bytes and the same `Message-ID`, so receivers and
    /// mail clients that deduplicate by Message-ID show it once. A recipient whose server took
    /// the first copy may get a second one.
    Resend,
}

impl InDoubt {
    /// The configuration's spelling: `fail` or `resend`.
    pub fn parse(s: &str) -> Option<InDoubt> {
        match s {
            "fail" => Some(InDoubt::Fail),
            "resend" => Some(InDoubt::Resend),
            _ => None,
        }
    }
}

/// Hand-overs at once per SMTP connection when relaying (what `serve` and `work` configure
/// unless told otherwise): one sending, the next ones marked and ready the moment the
/// connection frees, and the ones just sent waiting for their outcome to be durable (the
/// permit covers mark to outcome, so this is exactly what a crash can leave in doubt). A mark
/// and an outcome each wait for about two group commits, longer than one SMTP exchange with a
/// nearby server. Measured (`mailroom work`, 8 connections, redb, alternating runs, against
/// `smtp-source -d -s 8`, each with [`in_flight_for`] emails in flight): four per connection
/// 0.55 ×, eight 0.78 ×, twelve 0.81 ×, sixteen 0.83 ×. With 8 connections, eight makes 64:
/// the worst case four per connection already allowed before the permit covered the outcome
/// write (32 being handed over, and every other email of the 64 in flight possibly waiting
/// for its outcome), now a bound. So it stops there.
pub const HANDOVERS_PER_CONNECTION: usize = 8;

/// Emails in flight for `handovers` hand-overs at once (what `serve` and `work` configure
/// unless told otherwise): twice the hand-overs, at least 64, so that beside every email
/// holding a hand-over permit (marked, sending, or waiting for its outcome) another is claimed
/// and waiting to take the next. With as many as the hand-overs, measured: about 5 % fewer
/// emails per second.
pub fn in_flight_for(handovers: usize) -> usize {
    (2 * handovers).max(64)
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 64,
            handovers: 16,
            claim_batch: 64,
            lease: Duration::from_secs(300),
            max_idle: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            in_doubt: InDoubt::Fail,
            heartbeat: None,
        }
    }
}

impl WorkerConfig {
    /// With `n` messages in flight at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }
    /// With at most `n` hand-overs at once.
    pub fn handovers(mut self, n: usize) -> Self {
        self.handovers = n;
        self
    }
    /// Claiming `n` emails per storage round trip.
    pub fn claim_batch(mut self, n: usize) -> Self {
        self.claim_batch = n;
        self
    }
    /// With claims that hold this long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
    /// Renewing the claims in hand every `every` (keep it well under the lease).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }
    /// Sleeping at most this long with nothing due.
    pub fn max_idle(mut self, max_idle: Duration) -> Self {
        self.max_idle = max_idle;
        self
    }
    /// With this retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
    /// Treating hand-overs in doubt this way.
    pub fn in_doubt(mut self, policy: InDoubt) -> Self {
        self.in_doubt = policy;
        self
    }
}

/// The first pause of [`Worker::run`] after a store error, and the longest.
const RETRY_PAUSE_MIN: Duration = Duration::from_secs(1);
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(30);

/// What one pass of [`Worker::run`] says next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    Go,
    Stop,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkReport {
    /// Emails claimed and finished (or rescheduled for a retry).
    pub processed: usize,
    /// Messages handed to the transport.
    pub handed_over: usize,
    /// Claims given back at shutdown.
    pub released: usize,
}

impl WorkReport {
    fn add(&mut self, o: WorkReport) {
        self.processed += o.processed;
        self.handed_over += o.handed_over;
        self.released += o.released;
    }
}

/// Delivers the engine's due emails through a transport (see [`crate::engine::Engine::worker`]).
#[derive(Debug, Clone)]
pub struct Worker {
    engine: Engine,
    transport: Arc<dyn Transport>,
    config: WorkerConfig,
    /// One permit per hand-over at once (`WorkerConfig::handovers`).
    handovers: Arc<Gate>,
}

impl Worker {
    pub(crate) fn new(engine: Engine, transport: Arc<dyn Transport>, config: WorkerConfig) -> Self {
        let handovers = Gate::new(config.handovers);
        Worker { engine, transport, config, handovers }
    }

    /// Claims one round of due emails and processes them all.
    pub async fn run_once(&self) -> Result<WorkReport, Error> {
        self.round(std::future::pending(), false).await
    }

    /// Processes rounds until nothing is due now.
    pub async fn run_until_idle(&self) -> Result<WorkReport, Error> {
        let mut total = WorkReport::default();
        loop {
            let r = self.round(std::future::pending(), true).await?;
            if r.processed == 0 {
                return Ok(total);
            }
            total.add(r);
        }
    }

    /// Runs until `shutdown` resolves: sleeps until the next due email (or until the engine
    /// accepts a new one), then processes what is due.
    ///
    /// A store error does not end it: the error is logged and the worker tries again after a
    /// pause (1 s, doubling to 30 s, back to 1 s after a good round). Why: a server's worker
    /// is spawned once; had it ended at a lost database connection or a deadlock reported
    /// by the database, the API would go on accepting mail that nothing delivers. What the
    /// failed round left is safe to retry: an outcome not recorded leaves its claim to lapse
    /// (the email is then in doubt, as after a crash), and nothing recorded twice.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<WorkReport, Error> {
        let mut total = WorkReport::default();
        let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
        let mut last_maintenance: Option<DateTime<Utc>> = None;
        let mut pause = RETRY_PAUSE_MIN;
        loop {
            let r = match self.tick(&shutdown, &mut total, &mut last_maintenance).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(target: "mailroom::worker", error = %e, pause = ?pause, "the store failed; trying again");
                    metrics::counter!("mailroom_worker_errors_total").increment(1);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = shutdown.clone() => return Ok(total),
                    }
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                    continue;
                }
            };
            pause = RETRY_PAUSE_MIN;
            if r == Tick::Stop {
                return Ok(total);
            }
        }
    }

    /// One pass of [`run`](Self::run): a round, then (when it found nothing) the wait for the
    /// next due email and the housekeeping.
    async fn tick(
        &self,
        shutdown: &futures::future::Shared<std::pin::Pin<Box<impl Future<Output = ()>>>>,
        total: &mut WorkReport,
        last_maintenance: &mut Option<DateTime<Utc>>,
    ) -> Result<Tick, Error> {
        let r = self.round(shutdown.clone(), true).await?;
        total.add(r);
        if futures::future::FutureExt::now_or_never(shutdown.clone()).is_some() {
            return Ok(Tick::Stop);
        }
        if r.processed > 0 {
            return Ok(Tick::Go);
        }
        let now = self.engine.clock().now();
        let wait = match self.engine.storage().next_due().await? {
            Some(at) if at <= now => Duration::ZERO,
            Some(at) => (at - now).to_std().unwrap_or(Duration::ZERO).min(self.config.max_idle),
            None => self.config.max_idle,
        };
        if wait.is_zero() {
            // Due but not claimable (a lease about to lapse): yield briefly.
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Ok(Tick::Go);
        }
        // Woken by this process's engine, or by another process through the store.
        let shared = self.engine.storage().wakeups();
        let from_store = async {
            match &shared {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.engine.wake_signal().notified() => {}
            () = from_store => {}
            () = shutdown.clone() => return Ok(Tick::Stop),
        }
        // Housekeeping at most once a minute: expired idempotency keys, and retention of
        // emails and request logs.
        let now = self.engine.clock().now();
        if last_maintenance.is_none_or(|t| now - t >= chrono::Duration::minutes(1)) {
            *last_maintenance = Some(now);
            self.engine.housekeeping().await?;
        }
        Ok(Tick::Go)
    }

    /// One round: claims a batch of due emails and processes them with bounded concurrency.
    /// With `refill`, the next batch is claimed as soon as every claimed email has started,
    /// so that connections never wait for the slowest email of a batch; the round then ends
    /// when a claim comes back empty (or at shutdown).
    async fn round(&self, shutdown: impl Future<Output = ()>, refill: bool) -> Result<WorkReport, Error> {
        let mut report = WorkReport::default();
        // What the round's own outcomes put on the suppression list, seen by every batch of
        // the round: a batch claimed while an earlier one is still in flight looked the list
        // up before that one's bounces were recorded.
        let recorded = Arc::new(Recorded::default());
        let Some(first) = self.claim(&recorded).await? else { return Ok(report) };
        // The claims in hand (claimed, outcome not yet recorded), for the heartbeat.
        let mut held: HashMap<EmailId, ClaimRef> =
            first.iter().map(|(c, _)| (c.record.state.id, c.claim_ref())).collect();
        let mut heartbeat = self.config.heartbeat.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut queue: std::collections::VecDeque<(ClaimedEmail, Arc<BatchFacts>)> = first.into();
        let mut claiming: Option<Claiming<'_>> = None;
        let mut exhausted = !refill;
        let mut in_flight = FuturesUnordered::new();
        let mut stopping = false;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut first_error = None;
        let concurrency = self.config.concurrency.max(1);
        loop {
            while !stopping && in_flight.len() < concurrency {
                match queue.pop_front() {
                    Some((c, facts)) => {
                        // Each email is a task of its own, so rendering and the SMTP exchanges
                        // of concurrent emails use every thread of the runtime.
                        let worker = self.clone();
                        let id = c.record.state.id;
                        let task = tokio::spawn(async move { worker.process(c, facts).await });
                        in_flight.push(async move { (id, task.await) });
                    }
                    None => break,
                }
            }
            if queue.is_empty() && !exhausted && !stopping && claiming.is_none() {
                claiming = Some(Box::pin(self.claim(&recorded)));
            }
            if in_flight.is_empty() && claiming.is_none() {
                break;
            }
            tokio::select! {
                Some((id, result)) = in_flight.next() => {
                    held.remove(&id);
                    match joined(result) {
                        Ok(handed) => {
                            report.processed += 1;
                            report.handed_over += usize::from(handed);
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                            // A store that fails once will likely fail again: stop taking work.
                            exhausted = true;
                        }
                    }
                },
                Some(claimed) = futures::future::OptionFuture::from(claiming.as_mut()), if claiming.is_some() => {
                    claiming = None;
                    match claimed {
                        Ok(Some(batch)) => {
                            held.extend(batch.iter().map(|(c, _)| (c.record.state.id, c.claim_ref())));
                            queue.extend(batch);
                        }
                        Ok(None) => exhausted = true,
                        Err(e) => {
                            first_error.get_or_insert(e);
                            exhausted = true;
                        }
                    }
                },
                Some(_) = futures::future::OptionFuture::from(heartbeat.as_mut().map(|t| t.tick())), if heartbeat.is_some() => {
                    // Renewed until a full lease from now; a claim found lost is another
                    // worker's now: its hand-over (if any) ends without effect when the
                    // outcome is refused.
                    let claims: Vec<ClaimRef> = held.values().copied().collect();
                    if !claims.is_empty() {
                        let until = self.engine.clock().now()
                            + chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::minutes(5));
                        match self.engine.storage().renew_claims(&claims, until).await {
                            Ok(lost) if !lost.is_empty() => {
                                tracing::warn!(target: "mailroom::delivery", lost = lost.len(), "claims lapsed before their heartbeat");
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(target: "mailroom::delivery", error = %e, "cannot renew claims"),
                        }
                    }
                },
                () = &mut shutdown, if !stopping => stopping = true,
            }
        }
        let rest: Vec<ClaimRef> = queue.into_iter().map(|(c, _)| c.claim_ref()).collect();
        if !rest.is_empty() {
            report.released = rest.len();
            self.engine.storage().release_claims(&rest, self.engine.clock().now()).await?;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Claims the next batch of due emails with what the worker needs to know about them;
    /// `None` when nothing is due.
    async fn claim(&self, recorded: &Arc<Recorded>) -> Result<Option<Batch>, Error> {
        let now = self.engine.clock().now();
        let claimed = self.engine.storage().claim_due(now, self.config.claim_batch, self.config.lease).await?;
        if claimed.is_empty() {
            return Ok(None);
        }
        let facts = Arc::new(self.facts(&claimed, recorded).await?);
        Ok(Some(claimed.into_iter().map(|c| (c, facts.clone())).collect()))
    }

    /// Looks up, once for a claimed batch, what every email of it needs to know: which of
    /// their recipients are suppressed, and which of their API keys are no longer active (one
    /// lookup per account and per key, not per email).
    async fn facts(&self, claimed: &[ClaimedEmail], recorded: &Arc<Recorded>) -> Result<BatchFacts, Error> {
        let storage = self.engine.storage();
        let mut by_account: HashMap<&AccountId, BTreeSet<String>> = HashMap::new();
        let mut keys: BTreeSet<(&AccountId, &str)> = BTreeSet::new();
        for c in claimed {
            let account = &c.record.state.account;
            by_account.entry(account).or_default().extend(targets(&c.record).iter().map(|m| m.key()));
            if let Some(k) = c.record.content.api_key_id.as_deref() {
                keys.insert((account, k));
            }
        }
        let mut facts = BatchFacts { recorded: Arc::clone(recorded), ..BatchFacts::default() };
        if let Some(domains) = storage.domains() {
            let config = self.engine.domain_config();
            for c in claimed {
                let key = (c.record.state.account.clone(), c.record.content.from.domain.clone());
                if facts.senders.contains_key(&key) {
                    continue;
                }
                let sender = crate::domains::governing_domain(domains, &key.0, &key.1).await?.map(|mut d| {
                    d.refresh(config);
                    crate::domains::Sender::of(&d, config)
                });
                facts.senders.insert(key, sender.unwrap_or_default());
            }
        }
        for (account, addresses) in by_account {
            let addresses: Vec<String> = addresses.into_iter().collect();
            for e in storage.suppression_lookup(account, &addresses).await? {
                facts.suppressed.insert((account.clone(), e.address), e.reason);
            }
        }
        if let Some(api_keys) = storage.api_keys() {
            for (account, key_id) in keys {
                let active = api_keys.key_by_id(account, key_id).await?.is_some_and(|k| k.revoked_at.is_none());
                if !active {
                    facts.inactive_keys.insert((account.clone(), key_id.to_string()));
                }
            }
        }
        Ok(facts)
    }

    /// Processes one claimed email; `Ok(true)` when a message was handed over.
    async fn process(&self, claimed: ClaimedEmail, facts: Arc<BatchFacts>) -> Result<bool, Error> {
        let storage = self.engine.storage();
        let clock = self.engine.clock();
        let claim = claimed.claim_ref();
        let record = &claimed.record;
        let account = &record.state.account;

        if record.state.handed_over && self.config.in_doubt == InDoubt::Resend {
            // At least once: hand it over again below, same bytes, same Message-ID.
            tracing::warn!(target: "mailroom::delivery", email = %record.state.id, "resending a hand-over in doubt");
            metrics::counter!("mailroom_in_doubt_resends_total").increment(1);
        } else if record.state.handed_over {
            let outcome = Outcome {
                claim,
                events: vec![Event::new(EventKind::Failed, clock.now()).reason(AMBIGUOUS_REASON)],
                suppressions: vec![],
                next: Next::Done,
            };
            storage.record_outcomes(vec![outcome]).await?;
            observe(record.state.id, &[EventKind::Failed]);
            return Ok(false);
        }

        // An email accepted with an API key that has since been revoked is not sent: the key's
        // owner withdrew the authority it was sent with.
        if let Some(key_id) = record.content.api_key_id.as_deref()
            && facts.inactive_keys.contains(&(account.clone(), key_id.to_string()))
        {
            let events = vec![Event::new(EventKind::Failed, clock.now()).reason(KEY_REVOKED_REASON)];
            storage.record_outcomes(vec![Outcome { claim, events, suppressions: vec![], next: Next::Done }]).await?;
            observe(record.state.id, &[EventKind::Failed]);
            return Ok(false);
        }

        let targets = targets(record);
        let mut events = Vec::new();
        let mut send_to = Vec::new();
        let now = clock.now();
        for m in &targets {
            let key = m.key();
            // A test address simulates its outcome every time: `bounced@` bounces again even
            // though its first bounce put it on the list; only `suppressed@` is suppressed.
            let test = TestAddress::parse(&key, self.engine.test_domain());
            let entry = facts.suppressed(account, &key).filter(|_| test.is_none());
            if entry.is_some() || test == Some(TestAddress::Suppressed) {
                let why = match entry {
                    Some(SuppressionReason::Complained) => "previous_complaint",
                    Some(SuppressionReason::Unsubscribed) => "previous_unsubscribe",
                    _ => "previous_bounce",
                };
                events.push(Event::new(EventKind::Suppressed, now).recipient(key).reason(why));
            } else {
                send_to.push(m.address());
            }
        }
        if send_to.is_empty() {
            let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
            storage.record_outcomes(vec![Outcome { claim, events, suppressions: vec![], next: Next::Done }]).await?;
            observe(record.state.id, &kinds);
            return Ok(false);
        }

        // The permit is held from before the mark until the outcome is durable: a crash leaves
        // at most `handovers` emails in doubt (marked, no outcome recorded), and at most that
        // many rendered messages (the largest copy of an email, up to twice its attachments)
        // are in memory, however many emails are in flight. An email in line is usually marked
        // by the email whose permit it takes, in the write of that one's outcome (see `gate`).
        let (permit, marked) = match self.handovers.enter(claim) {
            Entry::Now(p) => (p, None),
            Entry::Wait(answer) => match answer.await {
                Ok(Grant::Free(p)) => (p, None),
                Ok(Grant::Marked(p, marked)) => (p, Some(marked)),
                Err(_) => {
                    return Err(Error::Storage(crate::error::StorageError::Backend(
                        "the worker stopped before this email's hand-over was marked".into(),
                    )));
                }
            },
        };
        let lost = match marked {
            Some(marked) => marked?,
            None => storage.begin_handover(&[claim]).await?,
        };
        if !lost.is_empty() {
            // Our lease lapsed and another worker holds the email now.
            return Ok(false);
        }
        let sender = facts.senders.get(&(account.clone(), record.content.from.domain.clone()));
        let extras = self.engine.render_extras(&record.content, record.state.id, account, sender, &send_to);
        let bytes = match crate::render::render_with(&record.content, now, &extras) {
            Ok(b) => b,
            Err(e) => {
                // Marked but never handed over: it ends failed, and is not in doubt.
                events.push(Event::new(EventKind::Failed, now).reason(format!("rendering failed: {e}")));
                self.finish(Outcome { claim, events, suppressions: vec![], next: Next::Done }, permit).await?;
                return Ok(false);
            }
        };

        // Bounces come back to the sending domain's own return path once it is verified (SPF
        // then aligns with From), else to the server's bounce domain.
        let return_path = match sender.and_then(|s| s.return_path.as_deref()) {
            Some(host) => format!("bounces+{}@{host}", record.state.id),
            None => self.engine.return_path(record.state.id, &record.content.from),
        };
        let envelope = Envelope::new(record.state.id, return_path, send_to.clone())
            .dkim(sender.and_then(|s| s.key.clone()))
            .require_tls(sender.is_some_and(|s| s.require_tls));
        let result = self.transport.send_raw(&envelope, &bytes).await;
        // The message is no longer needed; the permit is, until the outcome is durable: until
        // then the email is marked handed over with no outcome, which is what a crash leaves
        // in doubt.
        drop(bytes);
        let now = clock.now();
        let already_sent = record.state.events.iter().any(|e| e.kind == EventKind::Sent);
        let mut suppressions = Vec::new();
        let mut deferred = Vec::new();
        let mut hint: Option<chrono::Duration> = None;
        // Whatever came back, the message left unless the outcome is in doubt (then it ends
        // `failed`, which needs no `sent` before it). `sent` is recorded once, not per attempt.
        let in_doubt = self.config.in_doubt == InDoubt::Fail
            && result.as_ref().is_err_and(|e| e.kind == TransportErrorKind::Ambiguous);
        if !already_sent && !in_doubt {
            events.push(Event::new(EventKind::Sent, now));
        }
        let id = record.state.id;
        match result {
            Ok(report) => {
                let mut complaints = Vec::new();
                for r in report.recipients {
                    match r.status {
                        RecipientStatus::Delivered => {
                            let mut e = Event::new(EventKind::Delivered, now).recipient(&r.recipient);
                            e.reply = r.reply;
                            events.push(e);
                            if r.feedback == Some(Feedback::Complaint) {
                                complaints.push(r.recipient);
                            }
                        }
                        RecipientStatus::Relayed => {}
                        RecipientStatus::Rejected => {
                            let reply = r
                                .reply
                                .unwrap_or_else(|| crate::bounce::SmtpReply::new(550, "", "rejected without a reply"));
                            push_bounce(&mut events, &mut suppressions, &r.recipient, reply, r.stage, id, now);
                        }
                        RecipientStatus::Deferred => deferred.push((r.recipient, r.reply)),
                    }
                }
                // Complaints arrive after delivery; recording them last keeps the order real.
                for c in complaints {
                    suppressions.push(SuppressionEntry::caused_by(&c, SuppressionReason::Complained, id, now));
                    events.push(Event::new(EventKind::Complained, now).recipient(c));
                }
            }
            Err(e) => match e.kind {
                TransportErrorKind::Ambiguous if self.config.in_doubt == InDoubt::Fail => {
                    events.push(Event::new(EventKind::Failed, now).reason(format!("{AMBIGUOUS_REASON}: {e}")));
                }
                TransportErrorKind::Permanent => {
                    let reply = e.reply.clone().unwrap_or_else(|| crate::bounce::SmtpReply::new(554, "", &e.message));
                    // The message as a whole was refused, at `MAIL FROM` or `DATA` (read at the
                    // step the transport names, `DATA`'s when it names none): never a judgement
                    // of one recipient at `RCPT TO`.
                    let stage = if e.stage == Stage::Sender { Stage::Sender } else { Stage::Message };
                    for rcpt in &send_to {
                        push_bounce(&mut events, &mut suppressions, rcpt, reply.clone(), stage, id, now);
                    }
                }
                // At least once, a dropped connection is a deferral like any other.
                TransportErrorKind::Transient | TransportErrorKind::Ambiguous => {
                    hint = retry_hint(e.reply.as_ref().map(|r| r.text.as_str()).unwrap_or(&e.message));
                    deferred = send_to.iter().map(|r| (r.clone(), e.reply.clone())).collect();
                }
            },
        }

        // A server's "try again in N" on any deferred recipient stretches the wait.
        let hint =
            deferred.iter().filter_map(|(_, reply)| reply.as_ref().and_then(|r| retry_hint(&r.text))).chain(hint).max();
        let next = if deferred.is_empty() {
            Next::Done
        } else {
            let first = record.state.events.iter().find(|e| e.kind == EventKind::Sent).map_or(now, |e| e.at);
            match self.config.retry.next_attempt(record.state.attempts + 1, first, now, hint) {
                Some(at) => {
                    let delayed_before = record.state.events.iter().any(|e| e.kind == EventKind::DeliveryDelayed);
                    if !delayed_before && !events.iter().any(|e| e.kind == EventKind::DeliveryDelayed) {
                        let mut e = Event::new(EventKind::DeliveryDelayed, now);
                        e.reply = deferred.first().and_then(|d| d.1.clone());
                        events.push(e);
                    }
                    Next::RetryAt { at, pending: deferred.iter().map(|d| d.0.clone()).collect() }
                }
                None => {
                    for (rcpt, reply) in &deferred {
                        let reply = reply
                            .clone()
                            .unwrap_or_else(|| crate::bounce::SmtpReply::new(451, "4.4.7", "delivery time expired"));
                        let mut info: BounceInfo = bounce_info(&reply).0;
                        info.kind = BounceType::Transient;
                        if info.subtype == BounceSubtype::Undetermined {
                            info.subtype = BounceSubtype::General;
                        }
                        info.message = "Delivery was retried until the retry window closed.".into();
                        events.push(Event::new(EventKind::Bounced, now).recipient(rcpt).bounce(info).reply(reply));
                    }
                    Next::Done
                }
            }
        };
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        let listed: Vec<(String, SuppressionReason)> =
            suppressions.iter().map(|s| (s.address.clone(), s.reason)).collect();
        self.finish(Outcome { claim, events, suppressions, next }, permit).await?;
        // Later emails of this round see what this one put on the list, as they would have
        // had each looked the list up itself.
        facts.recorded.add(account, listed);
        observe(record.state.id, &kinds);
        Ok(true)
    }

    /// Records the outcome of a hand-over and gives its permit on: to the first email in
    /// line, marked in the same write (one commit for both), or, with nobody in line, back
    /// once the outcome is durable.
    async fn finish(&self, outcome: Outcome, permit: gate::Permit) -> Result<(), Error> {
        let storage = self.engine.storage();
        let Some(next) = self.handovers.next_in_line() else {
            storage.record_outcomes(vec![outcome]).await?;
            drop(permit);
            return Ok(());
        };
        match storage.record_outcomes_then_begin_handover(vec![outcome], &[next.claim]).await {
            Ok((_, marked)) => {
                next.grant(Grant::Marked(permit, marked));
                Ok(())
            }
            Err(e) => {
                // Nothing was written: the next email marks itself. This one stays marked with
                // no outcome (in doubt), as after a crash.
                next.grant(Grant::Free(permit));
                Err(e.into())
            }
        }
    }
}

/// After an outcome is durable: one `info` line for the email (what happened to it), and the
/// events counted by kind (`mailroom_events_total{event="delivered"}`…).
fn observe(id: crate::email::EmailId, kinds: &[EventKind]) {
    let events: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    tracing::info!(target: "mailroom::delivery", email = %id, events = %events.join(","), "delivery");
    for k in kinds {
        metrics::counter!("mailroom_events_total", "event" => k.as_str()).increment(1);
    }
}

/// A delivery task's answer: a panic in it is this worker's panic, as it would have been had
/// the email been processed in place; a task the runtime dropped (it is shutting down) is an
/// error, its claim lapses.
fn joined(r: Result<Result<bool, Error>, tokio::task::JoinError>) -> Result<bool, Error> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Storage(crate::error::StorageError::Backend(format!("delivery task stopped: {e}")))),
    }
}

/// A claimed batch, each email with what its batch looked up.
type Batch = Vec<(ClaimedEmail, Arc<BatchFacts>)>;

/// The claim of the next batch, running while the current one is processed.
type Claiming<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Option<Batch>, Error>> + Send + 'a>>;

/// What a batch looks up once for all its emails (see `Worker::facts`).
#[derive(Debug, Default)]
struct BatchFacts {
    /// Suppressed recipients when the batch was claimed, by account and normalised address.
    suppressed: HashMap<(AccountId, String), SuppressionReason>,
    /// API keys that are revoked or gone, by account and id.
    inactive_keys: HashSet<(AccountId, String)>,
    /// What the round's outcomes listed since.
    recorded: Arc<Recorded>,
    /// How mail from each sending domain goes out (its key, return path, TLS), by account
    /// and the From domain; read once per batch.
    senders: HashMap<(AccountId, String), crate::domains::Sender>,
}

impl BatchFacts {
    fn suppressed(&self, account: &AccountId, address: &str) -> Option<SuppressionReason> {
        let key = (account.clone(), address.to_string());
        self.suppressed.get(&key).copied().or_else(|| self.recorded.get(&key))
    }
}

/// Suppressions a round's own outcomes recorded (hard bounces, complaints), shared by its
/// batches; behind a lock because they are added as outcomes are recorded.
#[derive(Debug, Default)]
struct Recorded(std::sync::Mutex<HashMap<(AccountId, String), SuppressionReason>>);

impl Recorded {
    fn get(&self, key: &(AccountId, String)) -> Option<SuppressionReason> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(key).copied()
    }

    fn add(&self, account: &AccountId, entries: Vec<(String, SuppressionReason)>) {
        let mut list = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (address, reason) in entries {
            list.insert((account.clone(), address), reason);
        }
    }
}

/// Records a rejected recipient: a `bounced` event with the classified reply, and a
/// suppression when the reply says the address itself is unusable.
fn push_bounce(
    events: &mut Vec<Event>,
    suppressions: &mut Vec<SuppressionEntry>,
    rcpt: &str,
    reply: crate::bounce::SmtpReply,
    stage: Stage,
    id: crate::email::EmailId,
    now: DateTime<Utc>,
) {
    let (info, class) = bounce_info_at(&reply, stage);
    if class.suppress {
        suppressions.push(SuppressionEntry::caused_by(rcpt, SuppressionReason::Bounced, id, now));
    }
    events.push(Event::new(EventKind::Bounced, now).recipient(rcpt).bounce(info).reply(reply));
}

/// The recipients this attempt is for: all of them, or those still pending after a deferral.
fn targets(record: &EmailRecord) -> Vec<&Mailbox> {
    let all = record.content.recipients();
    if record.state.pending.is_empty() {
        return all;
    }
    all.into_iter().filter(|m| record.state.pending.iter().any(|p| p.eq_ignore_ascii_case(&m.address()))).collect()
}

/// Reads "try again in N seconds/minutes" style hints from a reply's text.
pub(crate) fn retry_hint(text: &str) -> Option<chrono::Duration> {
    let lower = text.to_ascii_lowercase();
    let idx = lower.find(" in ").filter(|_| lower.contains("try"))?;
    let mut words = lower[idx + 4..].split_whitespace();
    let n: i64 = words.next()?.parse().ok()?;
    let unit = words.next()?;
    let d = if unit.starts_with("sec") {
        chrono::Duration::seconds(n)
    } else if unit.starts_with("min") {
        chrono::Duration::minutes(n)
    } else if unit.starts_with("hour") {
        chrono::Duration::hours(n)
    } else {
        return None;
    };
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints() {
        assert_eq!(retry_hint("Greylisted, please try again in 300 seconds"), Some(chrono::Duration::seconds(300)));
        assert_eq!(retry_hint("try again in 5 minutes"), Some(chrono::Duration::minutes(5)));
        assert_eq!(retry_hint("mailbox full"), None);
    }
}
