//! Webhook deliveries to one local receiver, as `serve` makes them, against the bare HTTP
//! floor, in one run:
//! - `webhooks/raw_post`: the baseline — the same client library posting the same bodies to
//!   the same receiver with the same concurrency (32), nothing stored;
//! - `webhooks/dispatch_redb`: the dispatcher on a durable redb store: fan-out of 1,000 events
//!   into messages, each signed, posted and its attempt recorded (group commit).
//!
//! The receiver is an axum server on 127.0.0.1 in this process answering 200 at once.
//! `cargo bench --bench webhooks` (throughput in deliveries per second).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailroom::core::webhooks::{DispatchConfig, Dispatcher, WebhookSender};
use mailroom::core::{BatchOptions, Engine};
use mailroom::fetch::{WebhookConfig, WebhookPoster};
use mailroom::redb::RedbStorage;
use std::sync::Arc;
use std::time::Duration;

const EVENTS: u64 = 1000;
const CONCURRENCY: usize = 32;

fn webhooks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = rt.block_on(async {
        let app = axum::Router::new().route("/in", axum::routing::post(|| async { "" }));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/in", l.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(l, app).await.expect("serve") });
        url
    });
    let poster = Arc::new(WebhookPoster::new(WebhookConfig::default()).expect("client"));

    let mut group = c.benchmark_group("webhooks");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);

    let body = br#"{"type":"email.queued","created_at":"2026-12-01T12:00:00.000Z","data":{"email_id":"0193f0a0-0000-7000-8000-000000000000","from":"Acme <bench@acme.test>","to":["a@example.com"],"subject":"Batch 0 item 0","message_id":"<x@acme.test>","tags":{"round":"0","n":"0"}}}"#;
    group.bench_function("raw_post", |b| {
        b.to_async(&rt).iter(|| {
            let (poster, url) = (poster.clone(), url.clone());
            async move {
                let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
                let mut tasks = Vec::with_capacity(EVENTS as usize);
                for _ in 0..EVENTS {
                    let (poster, url, permit) =
                        (poster.clone(), url.clone(), gate.clone().acquire_owned().await.expect("gate"));
                    tasks.push(tokio::spawn(async move {
                        let headers = [("svix-id", "msg_x".to_string())];
                        let r = poster.post(&url, &headers, body, Duration::from_secs(15)).await.expect("posted");
                        assert_eq!(r.status, 200);
                        drop(permit);
                    }));
                }
                for t in tasks {
                    t.await.expect("task");
                }
            }
        });
    });

    let store = Arc::new(RedbStorage::open(dir.path().join("hooks.redb")).expect("redb"));
    let engine = Engine::builder(store.clone()).build();
    rt.block_on(engine.create_webhook(&url, &["email.queued".into()])).expect("webhook");
    let mut config = DispatchConfig::default();
    config.per_endpoint = CONCURRENCY;
    let dispatcher = Dispatcher::new(store, engine.clock().clone(), poster.clone(), config);
    let round = Arc::new(std::sync::atomic::AtomicU64::new(0));
    group.bench_function("dispatch_redb", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (engine, dispatcher, round) = (engine.clone(), dispatcher.clone(), round.clone());
            async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    // 1,000 new events (10 batches of 100 emails, accepted, not delivered),
                    // outside the measurement.
                    for _ in 0..EVENTS / 100 {
                        let n = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let items = mailroom::core::testkit::sample_batch(n);
                        engine.send_batch(items, BatchOptions::default()).await.expect("accepted");
                    }
                    let started = std::time::Instant::now();
                    let mut delivered = 0;
                    while delivered < EVENTS as usize {
                        delivered += dispatcher.run_once().await.expect("pass").delivered;
                    }
                    timed += started.elapsed();
                }
                timed
            }
        });
    });
    group.finish();
}

criterion_group!(benches, webhooks);
criterion_main!(benches);
