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
    let stores: Vec<Arc<dyn Storage>> = vec![Arc::new(redb), Arc::new(MemoryStorage::new())];
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(run(&ops, &stores));
});
