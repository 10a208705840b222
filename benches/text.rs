//! `text`: what the text part derived from html sent alone costs at each hand-over, in
//! process (a part: the rendering, no store, no SMTP). Each size renders the same email with
//! the text part written by the sender (the baseline) and derived from its html at render
//! (`html::to_text`, then the same rendering of the same text), in one group.
//!
//! `cargo bench --bench text`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[path = "fixtures.rs"]
mod fixtures;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailroom::core::render::render;

fn bench(c: &mut Criterion) {
    let at = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("a time");
    // The 2 KB email of the delivery and HTTP figures, and the 50 KB one of the tracking bench.
    let small = format!("<p>{}</p>", "Hello there, this is a benchmark email body. ".repeat(44));
    let mut group = c.benchmark_group("text");
    group.throughput(Throughput::Elements(1));
    for (name, html) in [("2k", small), ("50k", fixtures::links_email())] {
        let mut derived = mailroom_core::testkit::new_email("default", at, 1, None).content;
        derived.html = Some(html);
        derived.text = None;
        // The baseline: the same text part, written by the sender.
        let text = mailroom::core::html::to_text(derived.html.as_deref().unwrap_or_default());
        assert!(text.len() > 1000, "{name}: {text}");
        let written = mailroom::core::email::EmailContent { text: Some(text), ..derived.clone() };
        group.bench_function(format!("{name}/render_with_text_written_baseline"), |b| {
            b.iter(|| render(&written, at).expect("renders"))
        });
        group.bench_function(format!("{name}/render_with_text_derived"), |b| {
            b.iter(|| render(&derived, at).expect("renders"))
        });
        group.bench_function(format!("{name}/to_text_alone"), |b| {
            b.iter(|| mailroom::core::html::to_text(derived.html.as_deref().unwrap_or_default()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
