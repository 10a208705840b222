//! Accepting batches: the engine on the in-memory store (its own overhead) and on the redb
//! store with durable commits. 100-email batches of 2 KB html, 2 recipients and 2 tags.
//!
//! `cargo bench --bench ingest`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mailroom::core::memory::MemoryStorage;
use mailroom::core::request::{EmailRequest, OneOrMany, TagRequest};
use mailroom::core::{BatchOptions, Engine, Storage};
use mailroom::redb::RedbStorage;
use std::sync::Arc;

fn batch() -> Vec<EmailRequest> {
    let html = format!("<html><body>{}</body></html>", "<p>Hello from the benchmark.</p>".repeat(64));
    (0..100)
        .map(|i| EmailRequest {
            from: Some("Acme <bench@acme.test>".into()),
            to: Some(OneOrMany::Many(vec![format!("a{i}@example.com"), format!("b{i}@example.com")])),
            subject: Some(format!("Benchmark {i}")),
            html: Some(html[..2048.min(html.len())].to_string()),
            tags: Some(vec![
                TagRequest { name: Some("kind".into()), value: Some("bench".into()) },
                TagRequest { name: Some("n".into()), value: Some(i.to_string()) },
            ]),
            ..Default::default()
        })
        .collect()
}

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let stores: Vec<(&str, Arc<dyn Storage>)> = vec![
        ("ingest_memory", Arc::new(MemoryStorage::new())),
        ("ingest_redb", Arc::new(RedbStorage::open(dir.path().join("bench.redb")).expect("redb"))),
    ];
    let items = batch();
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(100));
    group.sample_size(20);
    for (name, store) in stores {
        let engine = Engine::builder(store).build();
        group.bench_with_input(BenchmarkId::new(name, 100), &items, |b, items| {
            b.to_async(&rt)
                .iter(|| async { engine.send_batch(items.clone(), BatchOptions::default()).await.expect("accepted") });
        });
    }
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
