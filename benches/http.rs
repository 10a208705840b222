//! `http`: sustained `POST /emails/batch` (100-email batches) from 4 concurrent clients over
//! loopback to the HTTP adapter, against the same work through the library call path
//! (`Engine::send_batch` from 4 concurrent tasks) in the same run. Both on a durable redb
//! store, as `mailroom serve` runs. Each iteration is 40 batches (4,000 emails); criterion's
//! throughput line is emails per second, and the run prints p50/p99 batch latency.
//!
//! `cargo bench --bench http`

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use mailroom::core::testkit::sample_batch;
use mailroom::core::{BatchOptions, Engine};
use mailroom::http::{Api, ApiConfig, KeyPermission, RateLimits, ServerConfig, router, serve};
use mailroom::redb::RedbStorage;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: u64 = 4;
const BATCHES_PER_CLIENT: u64 = 10;

fn percentiles(label: &str, samples: &Mutex<Vec<f64>>) {
    let mut s = samples.lock().map(|s| s.clone()).unwrap_or_default();
    s.sort_by(f64::total_cmp);
    let pct = |p: f64| s.get(((s.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
    println!("{label}: {} batches, p50 {:.2} ms, p99 {:.2} ms", s.len(), pct(0.5), pct(0.99));
}

fn http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    // One store each, so that neither path runs on a file the other has grown.
    let store = |name: &str| Arc::new(RedbStorage::open(dir.path().join(name)).expect("redb"));
    let http_store = store("http.redb");
    let engine = Engine::builder(http_store.clone()).build();
    let lib_engine = Engine::builder(store("library.redb")).build();
    drop(http_store);
    let token = rt.block_on(engine.create_api_key(Some("bench"), KeyPermission::FullAccess)).expect("key").token;
    let base = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        // As `serve` builds it (request logs on, from the store), without rate limits.
        let mut config = ApiConfig::default();
        config.rate_limits = RateLimits::none();
        let app = router(Api::new(engine.clone(), config));
        tokio::spawn(serve(listener, app, ServerConfig::default(), std::future::pending()));
        base
    });
    // The batches, built once: the library path clones its requests, the HTTP path sends
    // their JSON (a client has its payload ready either way).
    let batches: Vec<_> = (0..CLIENTS * BATCHES_PER_CLIENT).map(sample_batch).collect();
    let bodies: Vec<Vec<u8>> = batches.iter().map(|b| serde_json::to_vec(b).expect("json")).collect();
    let (batches, bodies) = (Arc::new(batches), Arc::new(bodies));
    let client = reqwest::Client::new();
    let (http_lat, lib_lat) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));

    let mut group = c.benchmark_group("http");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(CLIENTS * BATCHES_PER_CLIENT * 100));
    group.bench_function("post_batch", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (client, base, token, bodies, lat) =
                (client.clone(), base.clone(), token.clone(), bodies.clone(), http_lat.clone());
            async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..CLIENTS)
                        .map(|cl| {
                            let (client, base, token, bodies, lat) =
                                (client.clone(), base.clone(), token.clone(), bodies.clone(), lat.clone());
                            tokio::spawn(async move {
                                for i in 0..BATCHES_PER_CLIENT {
                                    let body = bodies[(cl * BATCHES_PER_CLIENT + i) as usize].clone();
                                    let t = Instant::now();
                                    let r = client
                                        .post(format!("{base}/emails/batch"))
                                        .bearer_auth(&token)
                                        .header("content-type", "application/json")
                                        .body(body)
                                        .send()
                                        .await
                                        .expect("request");
                                    assert!(r.status().is_success(), "{}", r.status());
                                    let _ = r.bytes().await;
                                    lat.lock().map(|mut l| l.push(t.elapsed().as_secs_f64() * 1000.0)).ok();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("client");
                    }
                }
                t0.elapsed()
            }
        });
    });
    group.bench_function("library_batch", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (engine, lat, batches) = (lib_engine.clone(), lib_lat.clone(), batches.clone());
            async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..CLIENTS)
                        .map(|cl| {
                            let (engine, lat, batches) = (engine.clone(), lat.clone(), batches.clone());
                            tokio::spawn(async move {
                                for i in 0..BATCHES_PER_CLIENT {
                                    let items = batches[(cl * BATCHES_PER_CLIENT + i) as usize].clone();
                                    let t = Instant::now();
                                    engine.send_batch(items, BatchOptions::default()).await.expect("batch");
                                    lat.lock().map(|mut l| l.push(t.elapsed().as_secs_f64() * 1000.0)).ok();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("task");
                    }
                }
                t0.elapsed()
            }
        });
    });
    group.finish();
    percentiles("http post_batch", &http_lat);
    percentiles("library send_batch", &lib_lat);
}

criterion_group!(benches, http);
criterion_main!(benches);
