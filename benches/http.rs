//! `http`: the REST API as users run it — the `mailroom serve` binary on a durable redb file,
//! request logs and rate limits on (limits high enough never to refuse), its worker relaying
//! what it accepts to postfix's `smtp-sink` — driven over loopback by HTTP clients in this
//! process. In one run, each on a server and file of its own:
//!
//! - `http/batch`: `POST /emails/batch` (100 emails each) from 4 clients, 40 batches;
//! - `http/single`: `POST /emails` from 64 clients, 3,840 emails (one email per request, as
//!   most users of the hosted API send);
//! - `http/single_keyed`: the same, every request with its own `Idempotency-Key`;
//! - `http/keyed_alternating`: one more server, on which every iteration posts the 3,840
//!   emails unkeyed and then keyed; criterion reports the keyed rounds, and the ratio of keyed
//!   to unkeyed time over the same rounds is printed (the pairs share the machine's noise,
//!   which the two measurements above, taken one after the other, do not);
//! - `library/batch`: `Engine::send_batch` from 4 tasks on a redb file (what HTTP costs).
//!
//! Throughput is emails per second. The ratios that matter: single / batch, keyed / single.
//! `cargo bench --bench http` (needs `smtp-sink`: `./scripts/test.sh` installs postfix)

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use mailroom::core::testkit::sample_batch;
use mailroom::core::{BatchOptions, Engine};
use mailroom::redb::RedbStorage;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[path = "../adapters/smtp/tests/peers/mod.rs"]
mod peers;

const TOKEN: &str = "re_bench_operator_key_01";
const BATCH_CLIENTS: usize = 4;
const BATCHES_PER_CLIENT: usize = 10;
const SINGLE_CLIENTS: usize = 64;
const SINGLES_PER_CLIENT: usize = 60;

/// `mailroom serve` on its own redb file in `dir`, killed on drop.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(dir: &Path, name: &str, smtp: u16) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\npath = \"{}\"\n\n[[api_keys]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\n\n[rate_limits]\nper_key = 1000000\nper_account = 1000000\n\n[delivery]\nrelay = \"smtp://127.0.0.1:{smtp}?tls=none\"\n",
            dir.join(format!("{name}.redb")).display()
        );
        std::fs::write(&config, text).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "serve did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Serve { child, base: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `clients` tasks, each posting its share of `bodies` to `path` one after another; keyed
/// requests carry a key never used before.
async fn post_all(client: &reqwest::Client, url: String, bodies: Arc<Vec<Vec<u8>>>, clients: usize, keyed: bool) {
    static KEYS: AtomicU64 = AtomicU64::new(0);
    let per = bodies.len() / clients;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
            tokio::spawn(async move {
                for body in &bodies[c * per..(c + 1) * per] {
                    let mut req = client
                        .post(&url)
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/json")
                        .body(body.clone());
                    if keyed {
                        // Random-looking keys, as clients make them (UUIDs): keys in order would
                        // land side by side in a store ordered by key.
                        let n = KEYS.fetch_add(1, Ordering::Relaxed);
                        let key = (u128::from(n) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
                        req = req.header("idempotency-key", format!("{key:032x}"));
                    }
                    let r = req.send().await.expect("request");
                    assert!(r.status().is_success(), "{}", r.status());
                    let _ = r.bytes().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
}

fn http(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = peers::smtp_sink(&[]);
    // Each server is started just before its measurement and stopped after it. Why: a server
    // goes on delivering what it accepted after its measurement ends (the batch server is
    // left with most of a minute's mail), and running beside the next measurement that took
    // the next one's CPU — the later figures (single, then keyed) came out lower than they are.
    let batch_server = Serve::start(dir.path(), "batch", sink.port);
    let lib_engine =
        Engine::builder(Arc::new(RedbStorage::open(dir.path().join("library.redb")).expect("redb"))).build();

    // Bodies built once: a client has its payload ready either way.
    let batches: Vec<_> = (0..BATCH_CLIENTS * BATCHES_PER_CLIENT).map(|i| sample_batch(i as u64)).collect();
    let batch_bodies: Arc<Vec<Vec<u8>>> =
        Arc::new(batches.iter().map(|b| serde_json::to_vec(b).expect("json")).collect());
    let singles: Arc<Vec<Vec<u8>>> = Arc::new(
        batches
            .iter()
            .flatten()
            .take(SINGLE_CLIENTS * SINGLES_PER_CLIENT)
            .map(|e| serde_json::to_vec(e).expect("json"))
            .collect(),
    );
    let batches = Arc::new(batches);
    let client = reqwest::Client::builder().pool_max_idle_per_host(SINGLE_CLIENTS).build().expect("client");

    let mut group = c.benchmark_group("http");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((BATCH_CLIENTS * BATCHES_PER_CLIENT * 100) as u64));
    group.bench_function("batch", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (client, url, bodies) =
                (client.clone(), format!("{}/emails/batch", batch_server.base), batch_bodies.clone());
            async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    post_all(&client, url.clone(), bodies.clone(), BATCH_CLIENTS, false).await;
                }
                t0.elapsed()
            }
        });
    });
    drop(batch_server);
    group.throughput(Throughput::Elements((SINGLE_CLIENTS * SINGLES_PER_CLIENT) as u64));
    for (name, keyed) in [("single", false), ("single_keyed", true)] {
        let server = Serve::start(dir.path(), name, sink.port);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (client, url, bodies) = (client.clone(), format!("{}/emails", server.base), singles.clone());
                async move {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        post_all(&client, url.clone(), bodies.clone(), SINGLE_CLIENTS, keyed).await;
                    }
                    t0.elapsed()
                }
            });
        });
        drop(server);
    }
    // Keyed and unkeyed rounds alternating on one server: each keyed round is timed against
    // the unkeyed round just before it.
    let server = Serve::start(dir.path(), "alternating", sink.port);
    // (unkeyed, keyed) time over every round.
    let totals = Arc::new(std::sync::Mutex::new((Duration::ZERO, Duration::ZERO)));
    group.bench_function("keyed_alternating", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (client, url, bodies, totals) =
                (client.clone(), format!("{}/emails", server.base), singles.clone(), totals.clone());
            async move {
                let mut keyed = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    post_all(&client, url.clone(), bodies.clone(), SINGLE_CLIENTS, false).await;
                    let plain = t0.elapsed();
                    let t1 = Instant::now();
                    post_all(&client, url.clone(), bodies.clone(), SINGLE_CLIENTS, true).await;
                    let k = t1.elapsed();
                    keyed += k;
                    let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                    t.0 += plain;
                    t.1 += k;
                }
                keyed
            }
        });
    });
    drop(server);
    let (plain, keyed) = *totals.lock().unwrap_or_else(|p| p.into_inner());
    if !keyed.is_zero() {
        eprintln!(
            "http/keyed_alternating: keyed sends/s = {:.2} × unkeyed, over the same alternating rounds (warm-up included)",
            plain.as_secs_f64() / keyed.as_secs_f64()
        );
    }
    group.finish();

    let mut group = c.benchmark_group("library");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((BATCH_CLIENTS * BATCHES_PER_CLIENT * 100) as u64));
    group.bench_function("batch", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (engine, batches) = (lib_engine.clone(), batches.clone());
            async move {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let tasks: Vec<_> = (0..BATCH_CLIENTS)
                        .map(|cl| {
                            let (engine, batches) = (engine.clone(), batches.clone());
                            tokio::spawn(async move {
                                for i in 0..BATCHES_PER_CLIENT {
                                    let items = batches[cl * BATCHES_PER_CLIENT + i].clone();
                                    engine.send_batch(items, BatchOptions::default()).await.expect("batch");
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
}

criterion_group!(benches, http);
criterion_main!(benches);
