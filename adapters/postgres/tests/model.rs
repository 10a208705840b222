//! Random operation sequences against the Postgres store and the in-memory store, compared
//! with a plain `BTreeMap` model after every step (the generator the redb store's model test
//! and the `model` fuzz target use). One cluster; a fresh database per case.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use mailroom_core::memory::MemoryStorage;
use mailroom_core::ports::Storage;
use mailroom_core::testkit::model::{ops_from_bytes, regressions, run};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[test]
fn postgres_and_memory_match_the_model() {
    let cluster = support::Cluster::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Wait for the server to accept sessions.
    rt.block_on(support::store(&cluster));
    for (n, (name, ops)) in regressions().into_iter().enumerate() {
        eprintln!("case: {name}");
        rt.block_on(async {
            let url = cluster.database(&format!("regression_{n}")).await;
            let pg = mailroom_postgres::PostgresStorage::connect(&url, 4).await.unwrap();
            let stores: Vec<Arc<dyn Storage>> = vec![Arc::new(pg), Arc::new(MemoryStorage::new())];
            run(&ops, &stores).await;
        });
    }
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config { cases: 32, ..Config::default() });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..240), |bytes| {
            let n = cases.fetch_add(1, Ordering::SeqCst);
            rt.block_on(async {
                let url = cluster.database(&format!("model_{n}")).await;
                let pg = mailroom_postgres::PostgresStorage::connect(&url, 4).await.unwrap();
                let stores: Vec<Arc<dyn Storage>> = vec![Arc::new(pg), Arc::new(MemoryStorage::new())];
                run(&ops_from_bytes(&bytes), &stores).await;
            });
            Ok(())
        })
        .unwrap();
}
