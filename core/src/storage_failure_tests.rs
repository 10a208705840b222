//! The engine on storage that fails, counts and crashes: failures become typed errors, and
//! nothing that was not committed is ever acknowledged.

use crate::email::PageRequest;
use crate::error::{Error, ErrorName};
use crate::lifecycle::EventKind;
use crate::memory::MemoryStorage;
use crate::ports::{ManualClock, Storage};
use crate::request::{EmailRequest, OneOrMany};
use crate::sandbox::SandboxTransport;
use crate::testkit::doubles::StorageDouble;
use crate::testkit::t0;
use crate::worker::WorkerConfig;
use crate::{BatchMode, BatchOptions, Engine, SendOptions};
use std::sync::Arc;

fn email(to: &str) -> EmailRequest {
    EmailRequest {
        from: Some("a@acme.test".into()),
        to: Some(OneOrMany::One(to.into())),
        subject: Some("s".into()),
        text: Some("t".into()),
        ..Default::default()
    }
}

fn engine(store: Arc<dyn Storage>) -> Engine {
    Engine::builder(store).clock(Arc::new(ManualClock::new(t0()))).build()
}

async fn stored(store: &MemoryStorage) -> usize {
    let page = PageRequest { limit: 100, cursor: Default::default() };
    store.list_emails(&Default::default(), page).await.map(|p| p.items.len()).unwrap_or(usize::MAX)
}

#[tokio::test]
async fn call_counts_show_one_atomic_write_per_request() {
    let double = StorageDouble::counting(MemoryStorage::new());
    let e = engine(double.clone());
    e.send_batch(vec![email("a@example.com"), email("b@example.com")], BatchOptions::default()).await.unwrap();
    assert_eq!((double.calls(), double.calls_to("insert_emails")), (1, 1), "an unkeyed batch is one write");
    double.reset();
    let keyed = BatchOptions { mode: BatchMode::Strict, idempotency_key: Some("k".into()) };
    e.send_batch(vec![email("a@example.com")], keyed.clone()).await.unwrap();
    assert_eq!((double.calls_to("idempotency_begin"), double.calls_to("insert_emails"), double.calls()), (1, 1, 2));
    double.reset();
    e.send_batch(vec![email("a@example.com")], keyed).await.unwrap();
    assert_eq!((double.calls(), double.calls_to("insert_emails")), (1, 0), "a replay writes nothing");
}

#[tokio::test]
async fn a_failed_insert_is_a_typed_error_and_acknowledges_nothing() {
    // Call 1 is the insert of an unkeyed send.
    let double = StorageDouble::failing_at(MemoryStorage::new(), 1);
    let e = engine(double.clone());
    let err = e.send(email("a@example.com"), SendOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::Storage(_)));
    assert_eq!((err.status(), err.name()), (500, ErrorName::ApplicationError));
    assert_eq!(stored(double.inner()).await, 0);
    // The store works again afterwards.
    assert!(e.send(email("a@example.com"), SendOptions::default()).await.is_ok());
    assert_eq!(stored(double.inner()).await, 1);
}

#[tokio::test]
async fn a_keyed_request_that_fails_at_any_call_can_be_retried_once() {
    // Calls: 1 idempotency_begin, 2 insert_emails (3 would be a release after a failure).
    for fail_at in 1..=2 {
        let double = StorageDouble::failing_at(MemoryStorage::new(), fail_at);
        let e = engine(double.clone());
        let opts = SendOptions::idempotency_key("welcome/1");
        assert!(e.send(email("a@example.com"), opts.clone()).await.is_err(), "call {fail_at}");
        assert_eq!(stored(double.inner()).await, 0, "nothing acknowledged, nothing stored (call {fail_at})");
        let id = e.send(email("a@example.com"), opts.clone()).await.unwrap().id;
        assert_eq!(e.send(email("a@example.com"), opts).await.unwrap().id, id);
        assert_eq!(stored(double.inner()).await, 1, "exactly once (call {fail_at})");
    }
}

#[tokio::test]
async fn a_crash_at_any_point_of_the_delivery_loses_nothing_acknowledged_and_sends_nothing_twice() {
    // Accept 3 emails (1 call), then crash after each possible worker call; restart on the
    // same committed state with a fresh engine and worker, and check.
    for crash_after in 1..=8 {
        let store = MemoryStorage::new();
        let double = StorageDouble::crashing_after(store.clone(), crash_after);
        let e = engine(double.clone());
        let sandbox = SandboxTransport::default();
        let ids: Vec<_> = e
            .send_batch(
                vec![email("a@example.com"), email("b@example.com"), email("c@example.com")],
                BatchOptions::default(),
            )
            .await
            .unwrap()
            .data;
        let cfg = WorkerConfig::default().concurrency(1).claim_batch(3);
        let crashed = e.worker(Arc::new(sandbox.clone()), cfg.clone()).run_until_idle().await;
        let before = sandbox.outbox().len();

        // Restart: the real store, a clock past every lease.
        let clock = ManualClock::new(t0() + chrono::Duration::hours(1));
        let e2 = Engine::builder(Arc::new(store.clone())).clock(Arc::new(clock)).build();
        e2.worker(Arc::new(sandbox.clone()), cfg).run_until_idle().await.unwrap();
        let mut handed = std::collections::HashMap::new();
        for m in sandbox.outbox() {
            *handed.entry(m.envelope.email_id).or_insert(0) += 1;
        }
        for r in &ids {
            let rec = e2.get_record(r.id).await.unwrap();
            let last = rec.state.last_event().unwrap();
            let n = handed.get(&r.id).copied().unwrap_or(0);
            assert!(n <= 1, "crash after {crash_after}: {} handed over {n} times", r.id);
            match last {
                EventKind::Delivered => assert_eq!(n, 1, "delivered means handed over once"),
                EventKind::Failed => assert!(n <= 1, "ambiguous failure after a crash"),
                other => panic!("crash after {crash_after}: {} ended {other}", r.id),
            }
        }
        assert!(crashed.is_err() || before == 3, "the crashed run either failed or had finished");
    }
}

/// A running worker outlives a store error wherever it strikes (a claim, a hand-over mark, an
/// outcome, the wait for the next due time): it pauses and goes on, so the first email ends
/// (delivered, or `failed` in doubt when its outcome was the write that failed) and an email
/// sent after the error is delivered. Before, `run` returned the error and the server's worker
/// was gone while the API kept accepting mail.
#[tokio::test(start_paused = true)]
async fn the_running_worker_outlives_a_store_error() {
    use std::time::Duration;
    for fail_at in 1..=10 {
        let double = StorageDouble::failing_at(MemoryStorage::new(), fail_at);
        // Paused tokio time moves the worker's sleeps; the engine's clock is moved with it
        // below, so that a claim left by a failed outcome lapses.
        let clock = ManualClock::new(t0());
        let e = Engine::builder(double.clone()).clock(Arc::new(clock.clone())).build();
        let sandbox = SandboxTransport::default();
        let worker = e.worker(Arc::new(sandbox.clone()), WorkerConfig::default().lease(Duration::from_secs(5)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move { worker.run(async { stopped.await.unwrap_or(()) }).await });
        let send = |to: &'static str| {
            let e = e.clone();
            async move {
                // The failing call may be this send's own insert: it is a typed error, and a
                // retry is a new email.
                loop {
                    if let Ok(r) = e.send(email(to), SendOptions::default()).await {
                        return r.id;
                    }
                }
            }
        };
        let ended = |id, kinds: &'static [EventKind]| {
            let (e, clock) = (e.clone(), clock.clone());
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
                loop {
                    if let Ok(v) = e.get(id).await
                        && v.last_event.is_some_and(|k| kinds.contains(&k))
                    {
                        return;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "call {fail_at} failed: {id} never ended");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    clock.advance(chrono::Duration::milliseconds(50));
                }
            }
        };
        let first = send("delivered@resend.dev").await;
        ended(first, &[EventKind::Delivered, EventKind::Failed]).await;
        let second = send("delivered@resend.dev").await;
        ended(second, &[EventKind::Delivered]).await;
        stop.send(()).unwrap();
        running.await.unwrap().unwrap();
    }
}

/// What a crash can leave in doubt is bounded by `handovers`, counted until the outcome is
/// durable (not until the transport answers): with an instant transport and a slow outcome
/// write, an email whose permit went back when the transport answered would still be marked
/// without an outcome while the next one was marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_overs_in_doubt_never_exceed_the_bound_while_outcomes_are_being_written() {
    let double = StorageDouble::slow_outcomes(MemoryStorage::new(), std::time::Duration::from_millis(20));
    let e = engine(double.clone());
    let batch: Vec<EmailRequest> = (0..40).map(|i| email(&format!("r{i}@example.com"))).collect();
    e.send_batch(batch, BatchOptions::default()).await.unwrap();
    let sandbox = SandboxTransport::default();
    let config = WorkerConfig::default().concurrency(64).handovers(4);
    let report = e.worker(Arc::new(sandbox.clone()), config).run_until_idle().await.unwrap();
    assert_eq!((report.processed, report.handed_over, sandbox.outbox().len()), (40, 40, 40));
    assert_eq!(double.most_in_doubt(), 4, "at most 4 in doubt at once, and the bound is reached");
}
