//! Group commit and restart recovery, with doubles around a real redb backend (as redb's own
//! tests do): one that counts syncs, one that holds a sync back (so that writes queue behind
//! it and form one group), one that fails a sync.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use mailroom_core::Engine;
use mailroom_core::email::{AccountId, Event};
use mailroom_core::error::StorageError;
use mailroom_core::idempotency::Fingerprint;
use mailroom_core::lifecycle::EventKind;
use mailroom_core::ports::{IdempotencyBegin, Next, Outcome, Storage};
use mailroom_core::testkit::{new_email, t0};
use mailroom_core::{SendOptions, request::EmailRequest};
use mailroom_redb::RedbStorage;
use redb::StorageBackend;
use redb::backends::InMemoryBackend;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A real in-memory backend that counts syncs, can hold one back, and can fail them.
#[derive(Debug, Default)]
struct Double {
    inner: InMemoryBackend,
    syncs: Arc<AtomicU64>,
    hold_next: Arc<AtomicBool>,
    fail: Arc<AtomicBool>,
    held: Arc<Mutex<()>>,
}

impl StorageBackend for Double {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.hold_next.swap(false, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(300));
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        let _unused = self.held.lock();
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }
}

struct Handles {
    syncs: Arc<AtomicU64>,
    hold_next: Arc<AtomicBool>,
    fail: Arc<AtomicBool>,
}

fn store() -> (RedbStorage, Handles) {
    let d = Double::default();
    let h = Handles { syncs: d.syncs.clone(), hold_next: d.hold_next.clone(), fail: d.fail.clone() };
    (RedbStorage::with_backend(d).unwrap(), h)
}

fn email(i: usize) -> EmailRequest {
    serde_json::from_value(serde_json::json!({
        "from": "Acme <hi@acme.test>", "to": format!("u{i}@example.com"), "subject": "Hi", "html": "<p>hi</p>"
    }))
    .unwrap()
}

/// N concurrent sends share fewer than N commits (and fsyncs), and every one of them is
/// there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_share_commits() {
    let (s, h) = store();
    let engine = Engine::builder(Arc::new(s.clone())).build();
    let before = (h.syncs.load(Ordering::SeqCst), s.commit_stats());
    let sends: Vec<_> = (0..64)
        .map(|i| {
            let e = engine.clone();
            tokio::spawn(async move { e.send(email(i), SendOptions::default()).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in sends {
        ids.push(t.await.unwrap().unwrap().id);
    }
    let syncs = h.syncs.load(Ordering::SeqCst) - before.0;
    let stats = s.commit_stats();
    let commits = stats.commits - before.1.commits;
    assert_eq!(stats.writes - before.1.writes, 64, "one write per send");
    assert!(commits < 64 && syncs < 64, "64 sends, {commits} commits, {syncs} syncs");
    for id in ids {
        assert!(engine.get(id).await.is_ok());
    }
    println!("64 concurrent sends: {commits} commits, {syncs} syncs");
}

/// Writes queued behind a slow commit form one group; one of them that the lifecycle refuses
/// fails alone, and changes nothing; the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_write_fails_alone_in_its_group() {
    let (s, h) = store();
    let a = AccountId::new("a");
    let emails: Vec<_> = (0..3).map(|i| new_email("a", t0(), i, None)).collect();
    s.insert_emails(&a, emails.clone(), None).await.unwrap();
    let claimed = s.claim_due(t0(), 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    // Hold the next commit: a slow write takes the writer while the others queue.
    h.hold_next.store(true, Ordering::SeqCst);
    let slow = {
        let s = s.clone();
        let e = new_email("a", t0(), 9, None);
        let a = a.clone();
        tokio::spawn(async move { s.insert_emails(&a, vec![e], None).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let groups_before = s.commit_stats().commits;
    let outcome = |c: &mailroom_core::ports::ClaimedEmail, events: Vec<Event>| Outcome {
        claim: c.claim_ref(),
        events,
        suppressions: vec![],
        next: Next::Done,
    };
    let ok = vec![Event::new(EventKind::Sent, t0()), Event::new(EventKind::Delivered, t0())];
    // `delivered` straight after `queued` is refused by the lifecycle.
    let refused = vec![Event::new(EventKind::Delivered, t0())];
    let jobs = [outcome(&claimed[0], ok.clone()), outcome(&claimed[1], refused), outcome(&claimed[2], ok)];
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|o| {
            let s = s.clone();
            tokio::spawn(async move { s.record_outcomes(vec![o]).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    slow.await.unwrap().unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(matches!(results[1], Err(StorageError::Transition(_))), "{results:?}");
    // The slow group (counted once it finished), then the three queued writes as one group.
    assert_eq!(s.commit_stats().commits - groups_before, 2, "the three queued writes were one group");
    let last = |i: usize| {
        let s = s.clone();
        let (a, id) = (a.clone(), emails[i].id);
        async move { s.get_email(&a, id).await.unwrap().unwrap().state.last_event() }
    };
    assert_eq!(last(0).await, Some(EventKind::Delivered));
    assert_eq!(last(1).await, Some(EventKind::Queued), "the refused outcome changed nothing");
    assert_eq!(last(2).await, Some(EventKind::Delivered));
}

/// A finished email's outcome and the next email's hand-over mark are one write, so one
/// commit (the worker passes a hand-over permit this way); a claim not held among the marks
/// is reported and not marked. An outcome the lifecycle refuses fails the write as a whole:
/// no mark either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_and_the_next_mark_are_one_commit() {
    use mailroom_core::ports::ClaimRef;
    let (s, h) = store();
    let a = AccountId::default();
    let emails: Vec<_> = (0..4).map(|i| new_email("default", t0(), i, None)).collect();
    s.insert_emails(&a, emails, None).await.unwrap();
    let claimed = s.claim_due(t0(), 10, Duration::from_secs(3600)).await.unwrap();
    let c: Vec<ClaimRef> = claimed.iter().map(|c| c.claim_ref()).collect();
    assert!(s.begin_handover(&[c[0]]).await.unwrap().is_empty());
    let handed = |id| {
        let (s, a) = (s.clone(), a.clone());
        async move { s.get_state(&a, id).await.unwrap().unwrap().handed_over }
    };

    // A refused outcome (`delivered` with no `sent` before it): nothing is written.
    let refused = Outcome {
        claim: c[0],
        events: vec![Event::new(EventKind::Delivered, t0())],
        suppressions: vec![],
        next: Next::Done,
    };
    let r = s.record_outcomes_then_begin_handover(vec![refused], &[c[1]]).await;
    assert!(matches!(r, Err(StorageError::Transition(_))), "{r:?}");
    assert!(!handed(c[1].id).await, "a write that failed marked nothing");

    let before = (h.syncs.load(Ordering::SeqCst), s.commit_stats().commits);
    let done = vec![Event::new(EventKind::Sent, t0()), Event::new(EventKind::Delivered, t0())];
    let outcome = Outcome { claim: c[0], events: done, suppressions: vec![], next: Next::Done };
    let stale = ClaimRef { token: c[2].token ^ 1, ..c[2] };
    let (refused, marked) = s.record_outcomes_then_begin_handover(vec![outcome], &[c[1], stale]).await.unwrap();
    assert!(refused.is_empty());
    assert_eq!(marked.unwrap(), vec![c[2].id], "the claim not held is reported");
    let after = (h.syncs.load(Ordering::SeqCst), s.commit_stats().commits);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1), "one commit, one sync for both");
    assert_eq!(s.get_state(&a, c[0].id).await.unwrap().unwrap().last_event(), Some(EventKind::Delivered));
    assert!(handed(c[1].id).await, "the next email is marked");
    assert!(!handed(c[2].id).await, "a claim not held is not marked");
    assert!(!handed(c[3].id).await);
}

/// An email both finished and marked in one call (the worker never asks it; the port allows
/// it) is planned as its outcome leaves it: finished, its mark reported lost, not written;
/// the call's other mark is written, all in one commit. A stale outcome ends no claim, so a
/// mark with the claim's own token still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_finished_and_marked_in_one_call_is_finished_and_reported_not_held() {
    let (s, h) = store();
    let a = AccountId::default();
    let emails: Vec<_> = (0..3).map(|i| new_email("default", t0(), i, None)).collect();
    s.insert_emails(&a, emails, None).await.unwrap();
    let claimed = s.claim_due(t0(), 10, Duration::from_secs(3600)).await.unwrap();
    let c: Vec<_> = claimed.iter().map(|c| c.claim_ref()).collect();
    assert!(s.begin_handover(&[c[0]]).await.unwrap().is_empty());
    let done = || vec![Event::new(EventKind::Sent, t0()), Event::new(EventKind::Delivered, t0())];
    let outcome = Outcome { claim: c[0], events: done(), suppressions: vec![], next: Next::Done };
    let stale = Outcome { claim: mailroom_core::ports::ClaimRef { token: c[2].token ^ 1, ..c[2] }, ..outcome.clone() };
    let before = (h.syncs.load(Ordering::SeqCst), s.commit_stats().commits);
    let (refused, marked) =
        s.record_outcomes_then_begin_handover(vec![outcome, stale], &[c[0], c[1], c[2]]).await.unwrap();
    let after = (h.syncs.load(Ordering::SeqCst), s.commit_stats().commits);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1), "one commit, one sync");
    assert_eq!(refused, vec![c[2].id], "the stale outcome is reported");
    assert_eq!(marked.unwrap(), vec![c[0].id], "the finished email's claim ended with its outcome");
    let state = |id| {
        let (s, a) = (s.clone(), a.clone());
        async move { s.get_state(&a, id).await.unwrap().unwrap() }
    };
    let finished = state(c[0].id).await;
    assert_eq!(finished.last_event(), Some(EventKind::Delivered));
    assert!(!finished.handed_over, "a finished email was marked as being handed over");
    assert!(state(c[1].id).await.handed_over);
    assert!(state(c[2].id).await.handed_over, "a stale outcome ended no claim");
}

/// When the commit fails, nobody in the group is told their write succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_commit_acknowledges_nothing() {
    let (s, h) = store();
    let engine = Engine::builder(Arc::new(s.clone())).build();
    h.fail.store(true, Ordering::SeqCst);
    let sends: Vec<_> = (0..16)
        .map(|i| {
            let e = engine.clone();
            tokio::spawn(async move { e.send(email(i), SendOptions::default()).await })
        })
        .collect();
    for t in sends {
        assert!(t.await.unwrap().is_err(), "a send was acknowledged though its commit failed");
    }
}

/// A restart on the same file recovers at once: a keyed request in flight when the process
/// died does not block its retry, and the emails it had claimed are due at once, not when
/// their leases would have lapsed; one handed over goes through recovery (still marked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_releases_what_the_dead_process_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restart.redb");
    let a = AccountId::default();
    let fp = Fingerprint([7; 32]);
    let lease = Duration::from_secs(3600);
    {
        let s = RedbStorage::open(&path).unwrap();
        let in_flight_until = t0() + chrono::Duration::minutes(2);
        assert_eq!(s.idempotency_begin(&a, "k", &fp, t0(), in_flight_until).await.unwrap(), IdempotencyBegin::Started);
        let emails: Vec<_> = (0..5).map(|i| new_email("default", t0(), i, None)).collect();
        s.insert_emails(&a, emails, None).await.unwrap();
        let claimed = s.claim_due(t0(), 10, lease).await.unwrap();
        assert_eq!(claimed.len(), 5);
        assert!(s.begin_handover(&[claimed[0].claim_ref()]).await.unwrap().is_empty());
        // The process dies here: nothing is released, no outcome recorded.
    }
    let s = RedbStorage::open(&path).unwrap();
    let now = t0() + chrono::Duration::seconds(1);
    assert_eq!(
        s.idempotency_begin(&a, "k", &fp, now, now + chrono::Duration::minutes(2)).await.unwrap(),
        IdempotencyBegin::Started,
        "the dead request's key is free at once"
    );
    assert!(s.next_due().await.unwrap().is_some_and(|d| d <= now));
    let again = s.claim_due(now, 10, lease).await.unwrap();
    assert_eq!(again.len(), 5, "every claimed email is due at once, not in an hour");
    assert_eq!(again.iter().filter(|c| c.record.state.handed_over).count(), 1, "the handed-over one stays marked");
}

/// Request logs handed over in a batch (as the HTTP layer does) are one write, not one per
/// log, and every log of the batch is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_request_logs_is_one_write() {
    use mailroom_core::ports::{LogFilter, RequestLogStore};
    let (s, _h) = store();
    let before = s.commit_stats();
    let logs: Vec<_> = (0..50)
        .map(|i| (AccountId::new("a"), mailroom_core::testkit::request_log(t0() + chrono::Duration::seconds(i))))
        .collect();
    s.log_append_many(logs).await.unwrap();
    let after = s.commit_stats();
    assert_eq!((after.writes - before.writes, after.commits - before.commits), (1, 1));
    let (page, more) = s.log_page(&AccountId::new("a"), &LogFilter::default(), None, 100).await.unwrap();
    assert_eq!((page.len(), more), (50, false));
}

/// The cached API keys never outlive a commit that changed them: a revoke whose caller went
/// away after queueing it (a client that hung up) still ends the cached key once it commits,
/// and until it commits the key is what the file says: active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_whose_caller_stopped_waiting_still_ends_the_cached_key() {
    use mailroom_core::ports::{ApiKeyRecord, ApiKeyStore, KeyPermission};
    let (s, h) = store();
    let a = AccountId::new("a");
    s.key_insert(&a, ApiKeyRecord::new("k1", "ops", [1; 32], KeyPermission::FullAccess, t0())).await.unwrap();
    assert!(s.key_by_hash(&[2; 32]).await.unwrap().is_none(), "an unknown token");
    let (_, k) = s.key_by_hash(&[1; 32]).await.unwrap().unwrap();
    assert!(k.revoked_at.is_none());
    // Hold the next commit, so that the revoke waits in the queue behind it.
    h.hold_next.store(true, Ordering::SeqCst);
    let slow = {
        let (s, a) = (s.clone(), a.clone());
        tokio::spawn(async move { s.insert_emails(&a, vec![new_email("a", t0(), 1, None)], None).await })
    };
    while h.hold_next.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    {
        // Polled once: the revoke is queued to the writer; then its caller is gone.
        let mut revoke = std::pin::pin!(s.key_revoke(&a, "k1", t0()));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(revoke.as_mut().poll(&mut cx).is_pending(), "queued behind the held commit");
    }
    let (_, k) = s.key_by_hash(&[1; 32]).await.unwrap().unwrap();
    assert!(k.revoked_at.is_none(), "not committed yet: the key is still active");
    slow.await.unwrap().unwrap();
    // Writes run in order: once this one (not a key's) is answered, the revoke has committed.
    s.insert_emails(&a, vec![new_email("a", t0(), 2, None)], None).await.unwrap();
    let (_, k) = s.key_by_hash(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(k.revoked_at, Some(t0()), "the revoke committed; the cached key must not survive it");
}

/// Finding a key by its id reads the whole key table, and that read is not the writer's: a
/// revoke of an id no key of the account has (unknown, or another account's) is answered
/// without a write, and a revoke of a known one is one write. Before, every revoke was a write
/// that scanned the table with every other write of the store waiting behind it.
#[tokio::test]
async fn a_revoke_finds_its_key_outside_the_writer() {
    use mailroom_core::ports::{ApiKeyRecord, ApiKeyStore, KeyPermission};
    let (s, _h) = store();
    let (a, b) = (AccountId::new("a"), AccountId::new("b"));
    for n in 1..=50u8 {
        s.key_insert(&a, ApiKeyRecord::new(format!("k{n}"), "ops", [n; 32], KeyPermission::FullAccess, t0()))
            .await
            .unwrap();
    }
    let before = s.commit_stats();
    assert!(!s.key_revoke(&a, "nope", t0()).await.unwrap());
    assert!(!s.key_revoke(&b, "k7", t0()).await.unwrap(), "another account's key");
    assert_eq!(s.commit_stats().writes, before.writes, "a revoke that finds nothing writes nothing");
    assert!(s.key_revoke(&a, "k7", t0()).await.unwrap());
    assert_eq!(s.commit_stats().writes, before.writes + 1);
    assert_eq!(s.key_by_hash(&[7; 32]).await.unwrap().unwrap().1.revoked_at, Some(t0()));
    assert!(s.key_by_hash(&[8; 32]).await.unwrap().unwrap().1.revoked_at.is_none());
}

/// A key written in a group that fails to commit is not in the file, and so not among the
/// cached keys either.
#[tokio::test]
async fn a_key_whose_commit_failed_is_not_cached() {
    use mailroom_core::ports::{ApiKeyRecord, ApiKeyStore, KeyPermission};
    let (s, h) = store();
    let a = AccountId::new("a");
    s.key_insert(&a, ApiKeyRecord::new("k1", "ops", [1; 32], KeyPermission::FullAccess, t0())).await.unwrap();
    assert!(s.key_by_hash(&[1; 32]).await.unwrap().is_some());
    h.fail.store(true, Ordering::SeqCst);
    assert!(s.key_put(&a, ApiKeyRecord::new("k2", "ci", [2; 32], KeyPermission::FullAccess, t0())).await.is_err());
    // (redb refuses further transactions after a failed sync; the cached keys still answer.)
    assert!(s.key_by_hash(&[2; 32]).await.unwrap().is_none(), "the failed commit's key must not be cached");
    assert!(s.key_by_hash(&[1; 32]).await.unwrap().is_some());
}

/// The worker on redb passes hand-over permits with the outcome write that frees them (one
/// commit for an outcome and the next mark): never more than `handovers` emails in doubt,
/// the bound reached, every email delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_on_redb_marks_the_next_email_with_an_outcome_and_keeps_the_bound() {
    use mailroom_core::sandbox::SandboxTransport;
    use mailroom_core::testkit::doubles::StorageDouble;
    use mailroom_core::worker::WorkerConfig;
    use mailroom_core::{BatchOptions, Engine};
    let double = StorageDouble::slow_outcomes(RedbStorage::in_memory().unwrap(), Duration::from_millis(20));
    let engine = Engine::builder(double.clone()).build();
    let batch: Vec<EmailRequest> = (0..40).map(email).collect();
    engine.send_batch(batch, BatchOptions::default()).await.unwrap();
    let sandbox = SandboxTransport::default();
    let config = WorkerConfig::default().concurrency(64).handovers(4);
    let report = engine.worker(Arc::new(sandbox.clone()), config).run_until_idle().await.unwrap();
    assert_eq!((report.processed, report.handed_over, sandbox.outbox().len()), (40, 40, 40));
    assert_eq!(double.most_in_doubt(), 4, "at most 4 in doubt at once, and the bound is reached");
    let passed = double.calls_to("record_outcomes_then_begin_handover");
    assert!(passed >= 30, "permits were passed with outcomes ({passed} of 40 outcomes)");
    assert_eq!(double.calls_to("begin_handover"), 40 - passed, "every other email marked itself");
}
