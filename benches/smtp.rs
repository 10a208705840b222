//! `smtp`: deliver 20,000 queued emails (the benchmark email: 2 KB html, 2 recipients) to
//! Debian postfix's `smtp-sink` on 127.0.0.1 through the worker and the SMTP transport (relay
//! mode), with 1 and 8 connections, on the durable redb store (as `mailroom serve` and
//! `mailroom work` run) and on the in-memory store (a part: no durable commits).
//! Baseline in the same run: postfix's own `smtp-source -d` sending as many messages of the
//! rendered size, 2 recipients each, over the same number of sessions to the same sink.
//!
//! `cargo bench --bench smtp` (needs `smtp-sink` and `smtp-source`: `./scripts/test.sh`
//! installs the postfix package). Each measured iteration is 20,000 messages; criterion's
//! throughput line is messages per second. `scripts/measure-delivery.sh` measures the same
//! through the `mailroom work` command.

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use mailroom::core::memory::MemoryStorage;
use mailroom::core::ports::Storage;
use mailroom::core::testkit::sample_batch;
use mailroom::core::worker::{HANDOVERS_PER_CONNECTION, WorkerConfig, in_flight_for};
use mailroom::core::{BatchOptions, Engine};
use mailroom::redb::RedbStorage;
use mailroom::smtp::{RelayTarget, SmtpConfig, SmtpTransport};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 20_000;
/// A rendered benchmark email (headers, quoted-printable html, derived text) is about 3 KB.
const RENDERED_BYTES: &str = "3000";

#[path = "../adapters/smtp/tests/peers/mod.rs"]
mod peers;

fn smtp(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let sink = peers::smtp_sink(&[]);
    let port = sink.port;

    let mut group = c.benchmark_group("smtp");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(20));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(MESSAGES));
    let dir = tempfile::tempdir().expect("temp dir");
    for connections in [1usize, 8] {
        for store in ["redb", "memory"] {
            let dir = dir.path().to_path_buf();
            group.bench_function(format!("mailroom-{store}/{connections}"), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let dir = dir.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            // Queue 20,000 emails (not timed), then time the worker delivering them.
                            let storage: Arc<dyn Storage> = if store == "redb" {
                                let path = dir.join("smtp.redb");
                                let _ = std::fs::remove_file(&path);
                                Arc::new(RedbStorage::open(&path).expect("redb"))
                            } else {
                                Arc::new(MemoryStorage::new())
                            };
                            let engine = Engine::builder(storage).build();
                            for round in 0..MESSAGES / 100 {
                                engine.send_batch(sample_batch(round), BatchOptions::default()).await.expect("queue");
                            }
                            let target = RelayTarget::parse(&format!("smtp://127.0.0.1:{port}?tls=none")).expect("url");
                            let mut config = SmtpConfig::relay(target);
                            config.max_connections = connections;
                            config.max_per_destination = connections;
                            config.max_messages_per_connection = usize::MAX;
                            let transport = Arc::new(SmtpTransport::new(config).expect("transport"));
                            // As `serve` configures it: its hand-overs per connection, and
                            // emails in flight for them.
                            let handovers = connections * HANDOVERS_PER_CONNECTION;
                            let config =
                                WorkerConfig::default().concurrency(in_flight_for(handovers)).handovers(handovers);
                            let worker = engine.worker(transport, config);
                            let t0 = Instant::now();
                            let report = worker.run_until_idle().await.expect("worker");
                            total += t0.elapsed();
                            assert_eq!(report.handed_over as u64, MESSAGES, "every message handed over");
                        }
                        total
                    }
                });
            });
        }
        group.bench_function(format!("smtp-source/{connections}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let ok = Command::new("smtp-source")
                        .args(["-d", "-s", &connections.to_string(), "-m", &MESSAGES.to_string(), "-l", RENDERED_BYTES])
                        .args(["-r", "2", "-f", "s@example.com", "-t", "r@example.net"])
                        .arg(format!("127.0.0.1:{port}"))
                        .stdout(Stdio::null())
                        .status()
                        .expect("smtp-source")
                        .success();
                    total += t0.elapsed();
                    assert!(ok, "smtp-source failed");
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, smtp);
criterion_main!(benches);
