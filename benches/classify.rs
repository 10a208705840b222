//! `classify`: the bounce reader over the whole labelled corpus (messages per second).
//! `cargo bench --bench classify`
//!
//! Baseline in the same run, `mail_parser_only`: mail-parser 0.11 parsing the same messages
//! into its tree (with the header options the reader once used) and nothing else — the MIME
//! layer the reader was built on before it got its own (`inbound/mime.rs`). A ratio above 1
//! means reading and classifying a bounce costs less than a general parse of it. After the
//! group it prints the ratio over alternating rounds (both sides under the same noise), the
//! figure to quote.

// The allocator the `mailroom` binary runs with (`serve --inbound`, `mailroom classify`), so
// that the figures are the product's: the reader makes many small strings, and glibc's
// malloc and free were 9 % of this bench's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailroom::core::inbound::parse;
use std::path::Path;
use std::time::{Duration, Instant};

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
    let parser = mail_parser::MessageParser::new().with_mime_headers().with_address_headers().with_message_ids();
    // One pass over the corpus each way.
    let read = || messages.iter().map(|m| parse(m).bounces.len()).sum::<usize>();
    let baseline = || messages.iter().map(|m| parser.parse(&m[..]).map_or(0, |p| p.parts.len())).sum::<usize>();
    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("corpus", |b| b.iter(read));
    group.bench_function("mail_parser_only", |b| b.iter(baseline));
    group.finish();

    // The same two over alternating rounds (each round reads the corpus once each way, one
    // after the other), so that the machine's noise lands on both: the ratio to the baseline,
    // and each side's messages per second.
    let (mut ours, mut theirs) = (Duration::ZERO, Duration::ZERO);
    const ROUNDS: u32 = 300;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        std::hint::black_box(read());
        ours += t.elapsed();
        let t = Instant::now();
        std::hint::black_box(baseline());
        theirs += t.elapsed();
    }
    let per_second = |d: Duration| (messages.len() as f64 * f64::from(ROUNDS)) / d.as_secs_f64();
    println!(
        "classify: over the same {ROUNDS} alternating rounds, the reader {:.1} k messages/s, mail_parser_only \
         {:.1} k/s: {:.2} × the baseline",
        per_second(ours) / 1e3,
        per_second(theirs) / 1e3,
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

/// Hostile notices: the reader's time must grow with a notice's size, not its square. One
/// line naming 42,000 different addresses, each after "from" (read in 5.7 s when the sender
/// test searched the line again for every address; in milliseconds since).
fn hostile(c: &mut Criterion) {
    let mut notice =
        String::from("From: MAILER-DAEMON@mx.test\nTo: me@acme.test\nSubject: Undeliverable\n\nDelivery failed: ");
    let mut i = 0;
    while notice.len() < 1_000_000 {
        notice.push_str(&format!("u{i}@d{i}.test from "));
        i += 1;
    }
    notice.push('\n');
    let mut group = c.benchmark_group("classify_hostile");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(notice.len() as u64));
    group.bench_function("distinct_addresses_1mb", |b| b.iter(|| parse(notice.as_bytes()).bounces.len()));
    group.finish();
}

criterion_group!(benches, classify, hostile);
criterion_main!(benches);
