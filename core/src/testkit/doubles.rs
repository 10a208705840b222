//! Storage doubles for the engine's tests: one that counts calls, one that fails the Nth
//! call, one that "crashes" (every call after a chosen one fails and changes nothing, as if
//! the process had died there). They wrap a real store, so what did commit is inspectable.
//! Every double also watches what a crash would leave in doubt: the emails whose hand-over
//! mark has committed and whose outcome has not, and the most of them at once.

use crate::email::{AccountId, EmailId, EmailRecord, EmailSummary, NewEmail, Page, PageRequest};
use crate::error::StorageError;
use crate::idempotency::Fingerprint;
use crate::ports::{
    ClaimRef, ClaimedEmail, IdempotencyBegin, IdempotencyCompletion, Outcome, ScheduleChange, ScheduleOp, Storage,
    StorageResult, SuppressionEntry,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Count,
    /// Fail call number N (1-based) only.
    FailAt(u64),
    /// Calls after number N fail.
    CrashAfter(u64),
}

/// A store wrapper that counts, fails or crashes. Calls are numbered from 1.
#[derive(Debug)]
pub struct StorageDouble<S> {
    inner: S,
    mode: Mode,
    calls: AtomicU64,
    by_method: Mutex<BTreeMap<&'static str, u64>>,
    /// Marked and without a committed outcome, now; and the most at once.
    in_doubt: Mutex<(std::collections::HashSet<EmailId>, usize)>,
    /// How long each `record_outcomes` (alone or with marks) takes before it commits.
    outcome_delay: Duration,
}

impl<S: Storage> StorageDouble<S> {
    /// Counts calls per method; never fails.
    pub fn counting(inner: S) -> Arc<Self> {
        Self::with(inner, Mode::Count)
    }
    /// Fails call number `n` (1-based), and only that one.
    pub fn failing_at(inner: S, n: u64) -> Arc<Self> {
        Self::with(inner, Mode::FailAt(n))
    }
    /// Every call after call number `n` fails without touching the store.
    pub fn crashing_after(inner: S, n: u64) -> Arc<Self> {
        Self::with(inner, Mode::CrashAfter(n))
    }
    /// Counts calls, and each `record_outcomes` takes `delay` before it commits: a slow
    /// store, as seen by the emails waiting for their outcome.
    pub fn slow_outcomes(inner: S, delay: Duration) -> Arc<Self> {
        Arc::new(StorageDouble { outcome_delay: delay, ..Self::plain(inner, Mode::Count) })
    }
    fn with(inner: S, mode: Mode) -> Arc<Self> {
        Arc::new(Self::plain(inner, mode))
    }
    fn plain(inner: S, mode: Mode) -> Self {
        StorageDouble {
            inner,
            mode,
            calls: AtomicU64::new(0),
            by_method: Mutex::default(),
            in_doubt: Mutex::default(),
            outcome_delay: Duration::ZERO,
        }
    }

    /// The most emails that were at once marked as handed over without a committed outcome:
    /// what a crash at the worst moment would have left in doubt.
    pub fn most_in_doubt(&self) -> usize {
        self.in_doubt.lock().map(|d| d.1).unwrap_or(0)
    }

    /// The wrapped store (what really committed).
    pub fn inner(&self) -> &S {
        &self.inner
    }
    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    /// Calls made so far to `method`.
    pub fn calls_to(&self, method: &str) -> u64 {
        self.by_method.lock().map(|m| m.get(method).copied().unwrap_or(0)).unwrap_or(0)
    }
    /// Forgets the counts.
    pub fn reset(&self) {
        self.calls.store(0, Ordering::SeqCst);
        if let Ok(mut m) = self.by_method.lock() {
            m.clear();
        }
    }

    fn gate(&self, method: &'static str) -> StorageResult<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut m) = self.by_method.lock() {
            *m.entry(method).or_default() += 1;
        }
        match self.mode {
            Mode::FailAt(k) if n == k => Err(StorageError::Injected(n)),
            Mode::CrashAfter(k) if n > k => Err(StorageError::Injected(n)),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl<S: Storage> Storage for StorageDouble<S> {
    async fn idempotency_begin(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &Fingerprint,
        now: DateTime<Utc>,
        in_flight_until: DateTime<Utc>,
    ) -> StorageResult<IdempotencyBegin> {
        self.gate("idempotency_begin")?;
        self.inner.idempotency_begin(account, key, fingerprint, now, in_flight_until).await
    }
    async fn idempotency_release(&self, account: &AccountId, key: &str) -> StorageResult<()> {
        self.gate("idempotency_release")?;
        self.inner.idempotency_release(account, key).await
    }
    async fn insert_emails(
        &self,
        account: &AccountId,
        emails: Vec<NewEmail>,
        idempotency: Option<IdempotencyCompletion>,
    ) -> StorageResult<()> {
        self.gate("insert_emails")?;
        self.inner.insert_emails(account, emails, idempotency).await
    }
    async fn purge_idempotency(&self, now: DateTime<Utc>) -> StorageResult<usize> {
        self.gate("purge_idempotency")?;
        self.inner.purge_idempotency(now).await
    }
    async fn get_email(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<EmailRecord>> {
        self.gate("get_email")?;
        self.inner.get_email(account, id).await
    }
    async fn list_emails(&self, account: &AccountId, page: PageRequest) -> StorageResult<Page<EmailSummary>> {
        self.gate("list_emails")?;
        self.inner.list_emails(account, page).await
    }
    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> StorageResult<Vec<ClaimedEmail>> {
        self.gate("claim_due")?;
        self.inner.claim_due(now, limit, lease).await
    }
    async fn begin_handover(&self, claims: &[ClaimRef]) -> StorageResult<Vec<EmailId>> {
        self.gate("begin_handover")?;
        let lost = self.inner.begin_handover(claims).await?;
        if let Ok(mut d) = self.in_doubt.lock() {
            d.0.extend(claims.iter().map(|c| c.id).filter(|id| !lost.contains(id)));
            d.1 = d.1.max(d.0.len());
        }
        Ok(lost)
    }
    async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> StorageResult<Vec<EmailId>> {
        self.gate("record_outcomes")?;
        if !self.outcome_delay.is_zero() {
            tokio::time::sleep(self.outcome_delay).await;
        }
        let ids: Vec<EmailId> = outcomes.iter().map(|o| o.claim.id).collect();
        let refused = self.inner.record_outcomes(outcomes).await?;
        if let Ok(mut d) = self.in_doubt.lock() {
            for id in ids.iter().filter(|id| !refused.contains(id)) {
                d.0.remove(id);
            }
        }
        Ok(refused)
    }
    async fn record_outcomes_then_begin_handover(
        &self,
        outcomes: Vec<Outcome>,
        claims: &[ClaimRef],
    ) -> StorageResult<(Vec<EmailId>, StorageResult<Vec<EmailId>>)> {
        self.gate("record_outcomes_then_begin_handover")?;
        if !self.outcome_delay.is_zero() {
            tokio::time::sleep(self.outcome_delay).await;
        }
        let ids: Vec<EmailId> = outcomes.iter().map(|o| o.claim.id).collect();
        // The wrapped store's own way (one write, or its two in order), watched as one step:
        // what it finished leaves doubt before what it marked enters it.
        let (refused, marked) = self.inner.record_outcomes_then_begin_handover(outcomes, claims).await?;
        if let Ok(mut d) = self.in_doubt.lock() {
            for id in ids.iter().filter(|id| !refused.contains(id)) {
                d.0.remove(id);
            }
            if let Ok(lost) = &marked {
                d.0.extend(claims.iter().map(|c| c.id).filter(|id| !lost.contains(id)));
            }
            d.1 = d.1.max(d.0.len());
        }
        Ok((refused, marked))
    }
    async fn release_claims(&self, claims: &[ClaimRef], now: DateTime<Utc>) -> StorageResult<()> {
        self.gate("release_claims")?;
        self.inner.release_claims(claims, now).await
    }
    async fn next_due(&self) -> StorageResult<Option<DateTime<Utc>>> {
        self.gate("next_due")?;
        self.inner.next_due().await
    }
    async fn suppression_add(&self, account: &AccountId, entry: SuppressionEntry) -> StorageResult<()> {
        self.gate("suppression_add")?;
        self.inner.suppression_add(account, entry).await
    }
    async fn suppression_remove(&self, account: &AccountId, address: &str, at: DateTime<Utc>) -> StorageResult<bool> {
        self.gate("suppression_remove")?;
        self.inner.suppression_remove(account, address, at).await
    }
    async fn suppression_lookup(
        &self,
        account: &AccountId,
        addresses: &[String],
    ) -> StorageResult<Vec<SuppressionEntry>> {
        self.gate("suppression_lookup")?;
        self.inner.suppression_lookup(account, addresses).await
    }
    async fn suppression_list(&self, account: &AccountId) -> StorageResult<Vec<SuppressionEntry>> {
        self.gate("suppression_list")?;
        self.inner.suppression_list(account).await
    }
    async fn change_schedule(&self, account: &AccountId, id: EmailId, op: ScheduleOp) -> StorageResult<ScheduleChange> {
        self.gate("change_schedule")?;
        self.inner.change_schedule(account, id, op).await
    }
    async fn append_events(
        &self,
        id: EmailId,
        events: Vec<crate::email::Event>,
        suppressions: Vec<SuppressionEntry>,
    ) -> StorageResult<Option<AccountId>> {
        self.gate("append_events")?;
        self.inner.append_events(id, events, suppressions).await
    }
    async fn prune(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        self.gate("prune")?;
        self.inner.prune(cutoff, now, limit).await
    }
    async fn queue_stats(&self, now: DateTime<Utc>) -> StorageResult<Option<crate::ports::QueueStats>> {
        self.gate("queue_stats")?;
        self.inner.queue_stats(now).await
    }
    // The extensions are the wrapped store's, neither counted nor failed: the doubles are
    // about the email operations.
    fn api_keys(&self) -> Option<&dyn crate::ports::ApiKeyStore> {
        self.inner.api_keys()
    }
    fn request_logs(&self) -> Option<&dyn crate::ports::RequestLogStore> {
        self.inner.request_logs()
    }
    fn domains(&self) -> Option<&dyn crate::ports::DomainStore> {
        self.inner.domains()
    }
    fn received(&self) -> Option<&dyn crate::ports::ReceivedStore> {
        self.inner.received()
    }
    fn event_log(&self) -> Option<&dyn crate::ports::EventLog> {
        self.inner.event_log()
    }
    fn webhooks(&self) -> Option<&dyn crate::ports::WebhookStore> {
        self.inner.webhooks()
    }
    async fn hold_create_lock(&self, account: &AccountId) -> StorageResult<Option<crate::ports::HeldLock>> {
        self.inner.hold_create_lock(account).await
    }
}
