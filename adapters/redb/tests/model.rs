//! Random operation sequences against the redb store and the in-memory store, compared with
//! a plain `BTreeMap` model after every step (the same generator as the `model` fuzz target).

use mailroom_core::memory::MemoryStorage;
use mailroom_core::ports::Storage;
use mailroom_core::testkit::model::{ops_from_bytes, regressions, run};
use mailroom_redb::RedbStorage;
use proptest::prelude::*;
use std::sync::Arc;

fn stores(dir: &tempfile::TempDir) -> Vec<Arc<dyn Storage>> {
    // Durability is not under test here (the crash tests cover it): skip the fsyncs.
    let redb = RedbStorage::open(dir.path().join("model.redb")).expect("open").without_fsync();
    // A second file whose recent-idempotency log holds one record: its completions move
    // records to the key table all the time.
    let moving =
        RedbStorage::open(dir.path().join("moving.redb")).expect("open").without_fsync().recent_idempotency_limit(1);
    vec![Arc::new(redb), Arc::new(moving), Arc::new(MemoryStorage::new())]
}

#[test]
fn redb_and_memory_match_the_model_in_past_failures() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
    for (name, ops) in regressions() {
        eprintln!("case: {name}");
        let dir = tempfile::tempdir().expect("temp dir");
        rt.block_on(run(&ops, &stores(&dir)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn redb_and_memory_match_the_model(bytes in proptest::collection::vec(any::<u8>(), 0..240)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let stores = stores(&dir);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        rt.block_on(run(&ops_from_bytes(&bytes), &stores));
    }
}
