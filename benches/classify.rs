//! `classify`: the bounce reader over the whole labelled corpus (messages per second).
//! `cargo bench --bench classify`
//!
//! Baseline in the same run, `mail_parser_only`: mail-parser 0.11 parsing the same messages
//! into its tree (with the header options the reader once used) and nothing else — the MIME
//! layer the reader was built on before it got its own (`inbound/mime.rs`). A ratio above 1
//! means reading and classifying a bounce costs less than a general parse of it.

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
    let parser = mail_parser::MessageParser::new().with_mime_headers().with_address_headers().with_message_ids();
    group.bench_function("mail_parser_only", |b| {
        b.iter(|| messages.iter().map(|m| parser.parse(&m[..]).map_or(0, |p| p.parts.len())).sum::<usize>());
    });
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
