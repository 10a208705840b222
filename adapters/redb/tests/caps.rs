//! The per-account caps on API keys, domains and webhooks hold when creates race: each is a
//! count and then an insert, two store calls that concurrent requests interleave on a real
//! store (a multi-threaded runtime, redb's writer on its own thread).
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use chrono::Utc;
use mailroom_core::Engine;
use mailroom_core::domains::{DkimAlgorithm, Domain, MAX_DOMAINS, NewDomain, generate_dkim_key};
use mailroom_core::keys::{MAX_ACTIVE_KEYS, token_sha256};
use mailroom_core::ports::{ApiKeyRecord, KeyPermission};
use mailroom_core::testkit::race_creates;
use mailroom_core::webhooks::MAX_WEBHOOKS;
use mailroom_redb::RedbStorage;
use std::sync::Arc;

fn engine() -> Engine {
    Engine::builder(Arc::new(RedbStorage::in_memory().unwrap())).build()
}

/// Ten places left and forty racing for them: ten keys are made, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_key_creates_stop_at_the_cap() {
    let e = engine();
    // The keys already there, put straight into the store (a create counts them all: 990
    // creates would read half a million records).
    let keys = e.storage().api_keys().unwrap();
    for i in 0..MAX_ACTIVE_KEYS - 10 {
        let record = ApiKeyRecord::new(
            format!("k{i}"),
            "k",
            token_sha256(&format!("re_{i}")),
            KeyPermission::FullAccess,
            Utc::now(),
        );
        keys.key_insert(e.account(), record).await.unwrap();
    }
    let made = race_creates(40, |i| {
        let e = e.clone();
        async move { e.create_api_key(Some(&format!("r{i}")), KeyPermission::FullAccess).await.map(drop) }
    })
    .await;
    assert_eq!(made, 10);
    let active = e.list_api_keys().await.unwrap().iter().filter(|k| k.revoked_at.is_none()).count();
    assert_eq!(active, MAX_ACTIVE_KEYS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_webhook_creates_stop_at_the_cap() {
    let e = engine();
    let events = ["email.sent".to_string()];
    for i in 0..MAX_WEBHOOKS - 5 {
        e.create_webhook(&format!("https://hooks.test/{i}"), &events).await.unwrap();
    }
    let made = race_creates(30, |i| {
        let (e, events) = (e.clone(), events.clone());
        async move { e.create_webhook(&format!("https://hooks.test/r{i}"), &events).await.map(drop) }
    })
    .await;
    assert_eq!(made, 5);
    assert_eq!(e.webhooks().await.unwrap().len(), MAX_WEBHOOKS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_domain_creates_stop_at_the_cap() {
    let e = engine();
    let new = |name: String| {
        let mut d = NewDomain::new(name);
        d.dkim_algorithm = Some(DkimAlgorithm::Ed25519);
        d
    };
    let store = e.storage().domains().unwrap();
    let key = generate_dkim_key(DkimAlgorithm::Ed25519).unwrap();
    for i in 0..MAX_DOMAINS - 5 {
        let d = Domain::new(format!("d{i}"), format!("d{i}.test"), key.clone(), e.domain_config(), Utc::now());
        assert!(store.domain_put(e.account(), d, None).await.unwrap());
    }
    let made = race_creates(30, |i| {
        let e = e.clone();
        let d = new(format!("r{i}.test"));
        async move { e.create_domain(d).await.map(drop) }
    })
    .await;
    assert_eq!(made, 5);
}
