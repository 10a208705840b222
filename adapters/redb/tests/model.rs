//! Random operation sequences against the redb store and the in-memory store, compared with
//! a plain `BTreeMap` model after every step (the same generator as the `model` fuzz target).

use mailroom_core::memory::MemoryStorage;
use mailroom_core::ports::Storage;
use mailroom_core::testkit::model::{ops_from_bytes, run};
use mailroom_redb::RedbStorage;
use proptest::prelude::*;
use std::sync::Arc;

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn redb_and_memory_match_the_model(bytes in proptest::collection::vec(any::<u8>(), 0..240)) {
        let dir = tempfile::tempdir().expect("temp dir");
        // Durability is not under test here (the crash tests cover it): skip the fsyncs.
        let redb = RedbStorage::open(dir.path().join("model.redb")).expect("open").without_fsync();
        let stores: Vec<Arc<dyn Storage>> = vec![Arc::new(redb), Arc::new(MemoryStorage::new())];
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        rt.block_on(run(&ops_from_bytes(&bytes), &stores));
    }
}
