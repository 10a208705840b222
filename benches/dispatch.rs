//! `dispatch`: with 100,000 scheduled emails in a redb store, the time from an email's due
//! instant to its hand-over to the transport. Each iteration schedules one email 30 ms ahead
//! and waits for the running worker to hand it over; criterion reports the mean, and the run
//! prints p50 and p99 over every iteration.
//!
//! `cargo bench --bench dispatch`

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use mailroom::core::email::EmailId;
use mailroom::core::ports::{DeliveryReport, Envelope, RecipientStatus, Transport, TransportError};
use mailroom::core::request::{EmailRequest, OneOrMany};
use mailroom::core::worker::WorkerConfig;
use mailroom::core::{BatchOptions, Engine, SendOptions};
use mailroom::redb::RedbStorage;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const BACKDROP: usize = 100_000;

/// Records when each message is handed over.
#[derive(Debug)]
struct Recorder(mpsc::UnboundedSender<(EmailId, DateTime<Utc>)>);

#[async_trait]
impl Transport for Recorder {
    async fn send_raw(&self, envelope: &Envelope, _message: &[u8]) -> Result<DeliveryReport, TransportError> {
        let _ = self.0.send((envelope.email_id, Utc::now()));
        Ok(DeliveryReport::uniform(envelope, RecipientStatus::Delivered))
    }
}

fn email(scheduled_at: String) -> EmailRequest {
    EmailRequest {
        from: Some("Acme <bench@acme.test>".into()),
        to: Some(OneOrMany::One("someone@example.com".into())),
        subject: Some("Scheduled".into()),
        html: Some("<p>Scheduled.</p>".into()),
        scheduled_at: Some(scheduled_at),
        ..Default::default()
    }
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dispatch.redb");

    // The backdrop: 100,000 emails scheduled between 1 and 29 days ahead (built without
    // fsync to save time; the measured run below commits durably).
    rt.block_on(async {
        let store = RedbStorage::open(&path).expect("create").without_fsync();
        let engine = Engine::builder(Arc::new(store)).build();
        for round in 0..BACKDROP / 100 {
            let items = (0..100)
                .map(|i| {
                    let secs = 86_400 + ((round * 100 + i) as i64 * 24_077) % (28 * 86_400);
                    email((Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339())
                })
                .collect();
            engine.send_batch(items, BatchOptions::default()).await.expect("backdrop");
        }
    });

    let engine = Engine::builder(Arc::new(RedbStorage::open(&path).expect("open"))).build();
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let worker = engine.worker(Arc::new(Recorder(tx)), WorkerConfig::default());
    rt.spawn(async move { worker.run(std::future::pending()).await });
    let samples = Arc::new(Mutex::new(Vec::<f64>::new()));

    let mut group = c.benchmark_group("dispatch");
    group.sample_size(20).measurement_time(Duration::from_secs(15));
    group.bench_function("due_to_handover", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (engine, rx, samples) = (engine.clone(), Arc::clone(&rx), Arc::clone(&samples));
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let due = Utc::now() + chrono::Duration::milliseconds(30);
                    let id = engine.send(email(due.to_rfc3339()), SendOptions::default()).await.expect("send").id;
                    let handed = loop {
                        let (got, at) = rx.lock().await.recv().await.expect("worker alive");
                        if got == id {
                            break at;
                        }
                    };
                    let late = (handed - due).to_std().unwrap_or(Duration::ZERO);
                    if let Ok(mut s) = samples.lock() {
                        s.push(late.as_secs_f64() * 1000.0);
                    }
                    total += late;
                }
                total
            }
        });
    });
    group.finish();

    let mut s = samples.lock().map(|s| s.clone()).unwrap_or_default();
    s.sort_by(f64::total_cmp);
    let pct = |p: f64| s.get(((s.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    println!(
        "dispatch latency over {} emails with {BACKDROP} scheduled: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        s.len(),
        pct(0.50),
        pct(0.99),
        s.last().copied().unwrap_or(f64::NAN)
    );
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
