//! Random storage operation sequences against the redb store and the in-memory store,
//! compared with a `BTreeMap` model after every step (see `mailroom_core::testkit::model`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::memory::MemoryStorage;
use mailroom_core::ports::Storage;
use mailroom_core::testkit::model::{ops_from_bytes, run};
use mailroom_redb::RedbStorage;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    // Bounded work per input: long sequences add little beyond what short ones reach.
    let ops = ops_from_bytes(&data[..data.len().min(600)]);
    let redb = RedbStorage::in_memory().expect("in-memory redb");
    // A recent-idempotency log of one record: completions move records to the key table.
    let moving = RedbStorage::in_memory().expect("in-memory redb").recent_idempotency_limit(1);
    let stores: Vec<Arc<dyn Storage>> = vec![Arc::new(redb), Arc::new(moving), Arc::new(MemoryStorage::new())];
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(run(&ops, &stores));
});
