//! Accepting mail, measured against the storage's physical limit, all in one run.
//!
//! Every case uses 100-email batches of 2 KB html, 2 recipients and 2 tags each:
//! - `ingest_raw_redb`: the baseline — the same encoded records written by a minimal program
//!   straight into redb, one durable write transaction per 100 records;
//! - `ingest_redb`: the engine accepting batches on the redb store, durable commits;
//! - `ingest_redb_no_log`: the same without the event log (`without_event_log`, which exists
//!   for this measurement only): `ingest_redb` against it is what the log costs;
//! - `ingest_memory`: the engine on the in-memory store (its own overhead);
//! - `replay`: an idempotent replay of a 100-email batch (redb).
//!
//! `cargo bench --bench ingest` (throughput is reported in emails per second).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mailroom::core::email::{AccountId, NewEmail};
use mailroom::core::memory::MemoryStorage;
use mailroom::core::validate::{Limits, validate};
use mailroom::core::{BatchOptions, Engine, Storage};
use mailroom::redb::RedbStorage;
use std::sync::Arc;

fn ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let items = mailroom::core::testkit::sample_batch(0);

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(100));
    group.sample_size(30);

    // The baseline: the records the engine would write, encoded once, written raw.
    let now = chrono::Utc::now();
    let records: Vec<Vec<u8>> = items
        .iter()
        .map(|r| {
            let v = validate(r, now, &Limits::default()).expect("valid");
            let e = NewEmail {
                account: AccountId::default(),
                id: mailroom::core::email::EmailId::from_u128(0),
                created_at: now,
                scheduled_at: None,
                content: v.content,
            };
            mailroom::redb::encode_record(&e)
        })
        .collect();
    let raw = redb::Database::create(dir.path().join("raw.redb")).expect("raw redb");
    const RAW: redb::TableDefinition<u128, &[u8]> = redb::TableDefinition::new("raw");
    let mut next_key = 0u128;
    group.bench_function("ingest_raw_redb", |b| {
        b.iter(|| {
            let tx = raw.begin_write().expect("begin");
            {
                let mut t = tx.open_table(RAW).expect("table");
                for r in &records {
                    next_key += 1;
                    t.insert(next_key, r.as_slice()).expect("insert");
                }
            }
            tx.commit().expect("commit");
        });
    });

    // With and without the event log, interleaved: each timed batch on one store follows an
    // untimed batch on the other, so both see the same file growth and the same machine
    // (run one after the other, the second ran up to 30 % faster on a shared machine).
    let with_log = Engine::builder(Arc::new(RedbStorage::open(dir.path().join("engine.redb")).expect("redb"))).build();
    let no_log =
        Engine::builder(Arc::new(RedbStorage::open(dir.path().join("no_log.redb")).expect("redb").without_event_log()))
            .build();
    for (name, timed, other) in [("ingest_redb", &with_log, &no_log), ("ingest_redb_no_log", &no_log, &with_log)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (timed, other, items) = (timed.clone(), other.clone(), items.clone());
                async move {
                    let mut spent = std::time::Duration::ZERO;
                    for _ in 0..iters {
                        other.send_batch(items.clone(), BatchOptions::default()).await.expect("accepted");
                        let batch = items.clone();
                        let started = std::time::Instant::now();
                        timed.send_batch(batch, BatchOptions::default()).await.expect("accepted");
                        spent += started.elapsed();
                    }
                    spent
                }
            });
        });
    }

    // The engine's own overhead: each batch goes into a fresh in-memory store, handed back
    // so that it is dropped outside the measurement. (A store that keeps growing for the
    // whole run measures the allocator's page faults more than the engine.)
    group.bench_function("ingest_memory", |b| {
        b.to_async(&rt).iter_batched(
            || (items.clone(), Engine::builder(Arc::new(MemoryStorage::new()) as Arc<dyn Storage>).build()),
            |(items, engine)| async move {
                engine.send_batch(items, BatchOptions::default()).await.expect("accepted");
                engine
            },
            BatchSize::SmallInput,
        );
    });

    let engine = Engine::builder(Arc::new(RedbStorage::open(dir.path().join("replay.redb")).expect("redb"))).build();
    let keyed = BatchOptions::default().keyed(Some("batch-replay".into()));
    rt.block_on(engine.send_batch(items.clone(), keyed.clone())).expect("first");
    group.bench_function("replay", |b| {
        b.to_async(&rt).iter_batched(
            || items.clone(),
            |items| async { engine.send_batch(items, keyed.clone()).await.expect("replayed") },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
