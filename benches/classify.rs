//! `classify`: the bounce reader over the whole labelled corpus (messages per second).
//! `cargo bench --bench classify`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailroom::core::inbound::parse;
use std::path::Path;

fn classify(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/bounces");
    let mut messages = Vec::new();
    for sub in ["bsd", "dos", "mac", "err", "not", "tmp"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for e in entries.flatten() {
            if let Ok(raw) = std::fs::read(e.path()) {
                messages.push(raw);
            }
        }
    }
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("corpus", |b| {
        b.iter(|| messages.iter().map(|m| parse(m).bounces.len()).sum::<usize>());
    });
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
