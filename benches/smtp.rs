//! `smtp`: deliver 20,000 queued 2 KB emails to Debian postfix's `smtp-sink` on 127.0.0.1
//! through the worker and the SMTP transport (relay mode), with 1 and with 8 connections.
//! Baseline in the same run: postfix's own `smtp-source -d` sending the same number of
//! messages of the same size over the same number of sessions to the same sink.
//!
//! `cargo bench --bench smtp` (needs `smtp-sink` and `smtp-source`: `./scripts/test.sh`
//! installs the postfix package). Each measured iteration is 20,000 messages; criterion's
//! throughput line is messages per second.

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use mailroom::core::memory::MemoryStorage;
use mailroom::core::request::{EmailRequest, OneOrMany};
use mailroom::core::worker::WorkerConfig;
use mailroom::core::{BatchOptions, Engine};
use mailroom::smtp::{RelayTarget, SmtpConfig, SmtpTransport};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MESSAGES: u64 = 20_000;

#[path = "../adapters/smtp/tests/peers/mod.rs"]
mod peers;

/// One 2 KB email (as rendered: headers plus a 1.6 KB text body) to one recipient.
fn email(i: u64) -> EmailRequest {
    let text: String = "The quick brown fox jumps over the lazy dog. ".repeat(40).chars().take(1600).collect();
    EmailRequest {
        from: Some("Acme <bench@acme.test>".into()),
        to: Some(OneOrMany::One(format!("r{i}@example.net"))),
        subject: Some(format!("Message {i}")),
        text: Some(text),
        ..Default::default()
    }
}

fn smtp(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let sink = peers::smtp_sink(&[]);
    let port = sink.port;

    let mut group = c.benchmark_group("smtp");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(20));
    group.warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(MESSAGES));
    for connections in [1usize, 8] {
        group.bench_function(format!("mailroom/{connections}"), |b| {
            b.to_async(&rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Queue 20,000 emails (not timed), then time the worker delivering them.
                    let engine = Engine::builder(Arc::new(MemoryStorage::new())).build();
                    for round in 0..MESSAGES / 100 {
                        let items = (0..100).map(|i| email(round * 100 + i)).collect();
                        engine.send_batch(items, BatchOptions::default()).await.expect("queue");
                    }
                    let target = RelayTarget::parse(&format!("smtp://127.0.0.1:{port}?tls=none")).expect("url");
                    let mut config = SmtpConfig::relay(target);
                    config.max_connections = connections;
                    config.max_per_destination = connections;
                    config.max_messages_per_connection = usize::MAX;
                    let transport = Arc::new(SmtpTransport::new(config).expect("transport"));
                    let worker =
                        engine.worker(transport, WorkerConfig::default().concurrency(connections).claim_batch(256));
                    let t0 = Instant::now();
                    let report = worker.run_until_idle().await.expect("worker");
                    total += t0.elapsed();
                    assert_eq!(report.handed_over as u64, MESSAGES, "every message handed over");
                }
                total
            });
        });
        group.bench_function(format!("smtp-source/{connections}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let ok = Command::new("smtp-source")
                        .args(["-d", "-s", &connections.to_string(), "-m", &MESSAGES.to_string(), "-l", "2048"])
                        .args(["-f", "s@example.com", "-t", "r@example.net"])
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
