//! The per-account caps on API keys, domains and webhooks hold when the creates race from
//! several processes sharing one database: each engine below has its own pool and its own
//! in-process lock, as two `serve` processes would, so only a lock held in PostgreSQL keeps
//! their counts and inserts apart.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use mailroom_core::Engine;
use mailroom_core::keys::{MAX_ACTIVE_KEYS, token_sha256};
use mailroom_core::ports::{ApiKeyRecord, KeyPermission};
use mailroom_core::testkit::race_creates;
use mailroom_core::webhooks::MAX_WEBHOOKS;
use std::sync::Arc;

/// Four "processes": four pools on one database, an engine each.
async fn processes(cluster: &support::Cluster) -> Vec<Engine> {
    drop(support::store(cluster).await); // waits until the server takes connections
    let url = cluster.database("caps").await;
    let mut engines = Vec::new();
    for _ in 0..4 {
        let store = mailroom_postgres::PostgresStorage::connect(&url, 4).await.unwrap();
        engines.push(Engine::builder(Arc::new(store)).build());
    }
    engines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_creates_from_several_processes_stop_at_the_cap() {
    let cluster = support::Cluster::start();
    let engines = processes(&cluster).await;
    let events = ["email.sent".to_string()];
    for i in 0..MAX_WEBHOOKS - 3 {
        engines[0].create_webhook(&format!("https://hooks.test/{i}"), &events).await.unwrap();
    }
    let made = race_creates(24, |i| {
        let (e, events) = (engines[i % engines.len()].clone(), events.clone());
        async move { e.create_webhook(&format!("https://hooks.test/r{i}"), &events).await.map(drop) }
    })
    .await;
    assert_eq!(made, 3);
    for e in &engines {
        assert_eq!(e.webhooks().await.unwrap().len(), MAX_WEBHOOKS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_creates_from_several_processes_stop_at_the_cap() {
    let cluster = support::Cluster::start();
    let engines = processes(&cluster).await;
    let keys = engines[0].storage().api_keys().unwrap();
    for i in 0..MAX_ACTIVE_KEYS - 3 {
        let record = ApiKeyRecord::new(
            format!("k{i}"),
            "k",
            token_sha256(&format!("re_{i}")),
            KeyPermission::FullAccess,
            chrono::Utc::now(),
        );
        keys.key_insert(engines[0].account(), record).await.unwrap();
    }
    let made = race_creates(24, |i| {
        let e = engines[i % engines.len()].clone();
        async move { e.create_api_key(Some(&format!("r{i}")), KeyPermission::FullAccess).await.map(drop) }
    })
    .await;
    assert_eq!(made, 3);
    let active = engines[1].list_api_keys().await.unwrap().iter().filter(|k| k.revoked_at.is_none()).count();
    assert_eq!(active, MAX_ACTIVE_KEYS);
}

/// A create whose caller goes away while PostgreSQL makes it wait for the lock leaves the
/// lock free once it is given up: a lock left held on a pooled connection would stop every
/// later create of the account, in every process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_abandoned_create_does_not_keep_the_lock() {
    let cluster = support::Cluster::start();
    let engines = processes(&cluster).await;
    let events = ["email.sent".to_string()];
    // Another process holds the account's lock.
    let held =
        engines[0].storage().hold_create_lock(engines[0].account()).await.unwrap().expect("a shared store locks");
    let waiting = {
        let (e, events) = (engines[1].clone(), events.clone());
        tokio::spawn(async move { e.create_webhook("https://hooks.test/abandoned", &events).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the create waits for the lock");
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    drop(held);
    for (i, e) in engines.iter().enumerate() {
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            e.create_webhook(&format!("https://hooks.test/after{i}"), &events),
        )
        .await
        .expect("a later create is not stopped by the abandoned one")
        .unwrap();
    }
    assert_eq!(engines[2].webhooks().await.unwrap().len(), engines.len(), "the abandoned create made nothing");
}
