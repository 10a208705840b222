//! `list_page`: one page of 100 out of 1,000,000 stored emails (2 KB html, 2 recipients,
//! 2 tags each), newest first and from the middle with an `after` cursor.
//!
//! The store is built once (commits without fsync, to save time) at
//! `target/bench-data/list-1m.redb` and reused by later runs; delete it to rebuild. Or point
//! `MAILROOM_LIST_DB` at the file the `ingest` example wrote.
//! `cargo bench --bench list`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailroom::core::email::{EmailId, PageRequest};
use mailroom::core::{BatchOptions, Engine};
use mailroom::redb::RedbStorage;
use std::path::PathBuf;
use std::sync::Arc;

const EMAILS: usize = 1_000_000;

fn store_path() -> PathBuf {
    // A store made by `examples/ingest.rs` (1,000,000 emails of the same shape) can stand in.
    if let Some(p) = std::env::var_os("MAILROOM_LIST_DB") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    target.join("bench-data").join("list-1m.redb")
}

fn build(rt: &tokio::runtime::Runtime, path: &PathBuf) {
    let done = path.with_extension("done");
    if done.exists() || std::env::var_os("MAILROOM_LIST_DB").is_some() {
        return;
    }
    let _ = std::fs::create_dir_all(path.parent().unwrap_or(path));
    let _ = std::fs::remove_file(path);
    let store = RedbStorage::open(path).expect("create").without_fsync();
    let engine = Engine::builder(Arc::new(store)).build();
    rt.block_on(async {
        for round in 0..EMAILS / 100 {
            engine
                .send_batch(mailroom::core::testkit::sample_batch(round as u64), BatchOptions::default())
                .await
                .expect("accepted");
        }
    });
    drop(engine);
    std::fs::write(done, b"1").expect("marker");
}

fn list(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let path = store_path();
    build(&rt, &path);
    let engine = Engine::builder(Arc::new(RedbStorage::open(&path).expect("open"))).build();
    // A cursor half-way down: page through to it once.
    let middle: EmailId = rt.block_on(async {
        let mut after = None;
        for _ in 0..(EMAILS / 2 / 100) {
            let page = engine.list(PageRequest::new(Some(100), after, None).expect("page")).await.expect("list");
            after = page.data.last().map(|e| e.id);
        }
        after.expect("a middle id")
    });
    let mut group = c.benchmark_group("list");
    group.throughput(Throughput::Elements(100));
    group.bench_function("list_page", |b| {
        b.to_async(&rt).iter(|| async {
            let page = engine.list(PageRequest::new(Some(100), None, None).expect("page")).await.expect("list");
            assert_eq!(page.data.len(), 100);
        });
    });
    group.bench_function("list_page_middle", |b| {
        b.to_async(&rt).iter(|| async {
            let page = engine.list(PageRequest::new(Some(100), Some(middle), None).expect("page")).await.expect("list");
            assert_eq!(page.data.len(), 100);
        });
    });
    group.finish();
}

criterion_group!(benches, list);
criterion_main!(benches);
