//! `idempotency`: the housekeeping purge of idempotency records on a redb store whose key
//! table holds 200,000 records (a store past its recent log's threshold, where records move
//! to the table ordered by key), none of them lapsed: what the worker's once-a-minute purge
//! holds the one writer for. Before the key table's expiry index, that purge read and decoded
//! every record (about 100 ms for 200,000, measured the same way with a throwaway program on
//! the build before the index, 1ee1f39); with it, it reads only lapsed ones.
//!
//! `cargo bench --bench idempotency`

use criterion::{Criterion, criterion_group, criterion_main};
use mailroom::core::email::AccountId;
use mailroom::core::idempotency::{Fingerprint, StoredResponse};
use mailroom::core::ports::{IdempotencyCompletion, Storage};
use mailroom::redb::RedbStorage;

const RECORDS: usize = 200_000;

fn purge(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    // A one-record log moves every completion but the last into the key table. Commits skip
    // fsync (the store's switch for tests), so that the setup is quick and the figure is the
    // purge's own work in the writer, not the disk's: a part of the product, not all of it.
    let store =
        RedbStorage::open(dir.path().join("keys.redb")).expect("redb").recent_idempotency_limit(1).without_fsync();
    let account = AccountId::default();
    let t0 = chrono::Utc::now();
    rt.block_on(async {
        for i in 0..RECORDS {
            let done = IdempotencyCompletion {
                key: format!("{:016x}-{i}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                fingerprint: Fingerprint([1; 32]),
                response: StoredResponse { ids: vec![], errors: vec![] },
                created_at: t0,
                expires_at: t0 + chrono::Duration::hours(24),
            };
            store.insert_emails(&account, vec![], Some(done)).await.expect("completed");
        }
    });
    let mut group = c.benchmark_group("idempotency");
    group.bench_function("purge_none_lapsed_200k", |b| {
        b.to_async(&rt).iter(|| async {
            let purged = store.purge_idempotency(t0 + chrono::Duration::hours(1)).await.expect("purged");
            assert_eq!(purged, 0);
        })
    });
    group.finish();
}

criterion_group!(benches, purge);
criterion_main!(benches);
