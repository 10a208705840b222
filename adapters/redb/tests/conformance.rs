//! The storage conformance suite against a real redb file in a temporary directory.

use mailroom_core::ports::Storage;
use mailroom_redb::RedbStorage;
use std::sync::Arc;

fn temp_store() -> (tempfile::TempDir, Arc<dyn Storage>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStorage::open(dir.path().join("test.redb")).expect("open redb");
    (dir, Arc::new(store) as Arc<dyn Storage>)
}

mailroom_core::storage_conformance_tests!(temp_store());

/// The same suite with a recent-idempotency log of one record, so that every completion
/// after the first also moves the log's oldest records to the key table.
mod one_record_log {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, Arc<dyn Storage>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RedbStorage::open(dir.path().join("test.redb")).expect("open redb").recent_idempotency_limit(1);
        (dir, Arc::new(store) as Arc<dyn Storage>)
    }

    mailroom_core::storage_conformance_tests!(temp_store());
}

/// Completed keys answer the same wherever their records are — in the recent log, in the key
/// table after a move, after reopening the file (the index rebuilt from the log) — and every
/// one lapses and is purged exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_answer_from_the_log_the_key_table_and_after_reopening() {
    use mailroom_core::email::AccountId;
    use mailroom_core::idempotency::{Fingerprint, StoredResponse};
    use mailroom_core::ports::{IdempotencyBegin, IdempotencyCompletion};
    use mailroom_core::testkit::{new_email, t0};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys.redb");
    let a = AccountId::default();
    let day = chrono::Duration::hours(24);
    let fp = |i: u8| Fingerprint([i; 32]);
    // More keys than the log holds plus one chunk, so that some records have moved.
    const N: u64 = 1500;
    let mut ids = Vec::new();
    {
        let s = RedbStorage::open(&path).expect("open").without_fsync().recent_idempotency_limit(300);
        for i in 0..N {
            let key = format!("key-{:x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let now = t0() + chrono::Duration::seconds(i as i64);
            assert_eq!(
                s.idempotency_begin(&a, &key, &fp(1), now, now + day).await.expect("begin"),
                IdempotencyBegin::Started
            );
            let e = new_email("default", now, i as u16 + 1, None);
            ids.push(e.id);
            let done = IdempotencyCompletion {
                key: key.clone(),
                fingerprint: fp(1),
                response: StoredResponse { ids: vec![e.id], errors: vec![] },
                created_at: now,
                expires_at: now + day,
            };
            s.insert_emails(&a, vec![e], Some(done.clone())).await.expect("insert");
            // A second completion of the same key is refused, wherever the first one is.
            assert!(s.insert_emails(&a, vec![], Some(done)).await.is_err(), "key {i} completed twice");
        }
    }
    let s = RedbStorage::open(&path).expect("reopen").without_fsync().recent_idempotency_limit(300);
    let now = t0() + chrono::Duration::seconds(N as i64);
    for (i, id) in ids.iter().enumerate() {
        let key = format!("key-{:x}", (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        match s.idempotency_begin(&a, &key, &fp(1), now, now + day).await.expect("begin") {
            IdempotencyBegin::Replay(r) => assert_eq!(r.ids, vec![*id], "key {i}"),
            other => panic!("key {i}: {other:?}"),
        }
        assert_eq!(
            s.idempotency_begin(&a, &key, &fp(2), now, now + day).await.expect("begin"),
            IdempotencyBegin::Mismatch
        );
    }
    // Half a day later nothing has lapsed; a day after the last, every record has, once.
    assert_eq!(s.purge_idempotency(now + day / 2).await.expect("purge"), 0);
    assert_eq!(s.purge_idempotency(now + day).await.expect("purge"), N as usize);
    assert_eq!(s.purge_idempotency(now + day).await.expect("purge"), 0);
    let key = format!("key-{:x}", 7u64.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    assert_eq!(
        s.idempotency_begin(&a, &key, &fp(2), now + day, now + day * 2).await.expect("begin"),
        IdempotencyBegin::Started,
        "a purged key is free"
    );
    // The lookups' shared read snapshot does not stand in the way of compaction.
    s.compact().await.expect("compaction with a key lookup just made");
}

/// The file is the only source of truth: what was committed is there after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_state_survives_reopen() {
    use mailroom_core::email::{AccountId, Cursor, PageRequest};
    use mailroom_core::idempotency::{Fingerprint, StoredResponse};
    use mailroom_core::ports::{IdempotencyBegin, IdempotencyCompletion, SuppressionEntry, SuppressionReason};
    use mailroom_core::testkit::{new_email, t0};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("reopen.redb");
    let a = AccountId::default();
    let e = new_email("default", t0(), 1, None);
    {
        let s = RedbStorage::open(&path).expect("open");
        let done = IdempotencyCompletion {
            key: "k".into(),
            fingerprint: Fingerprint([7; 32]),
            response: StoredResponse { ids: vec![e.id], errors: vec![] },
            created_at: t0(),
            expires_at: t0() + chrono::Duration::hours(24),
        };
        s.insert_emails(&a, vec![e.clone()], Some(done)).await.expect("insert");
        let entry = SuppressionEntry {
            address: "x@example.com".into(),
            reason: SuppressionReason::Complained,
            source_email: Some(e.id),
            created_at: t0(),
        };
        s.suppression_add(&a, entry).await.expect("suppress");
    }
    let s = RedbStorage::open(&path).expect("reopen");
    let got = s.get_email(&a, e.id).await.expect("get").expect("present");
    assert_eq!(got.content, e.content);
    let page = s.list_emails(&a, PageRequest { limit: 10, cursor: Cursor::Start }).await.expect("list");
    assert_eq!(page.items.len(), 1);
    assert!(matches!(
        s.idempotency_begin(&a, "k", &Fingerprint([7; 32]), t0(), t0()).await.expect("begin"),
        IdempotencyBegin::Replay(_)
    ));
    assert_eq!(s.suppression_list(&a).await.expect("list").len(), 1);
    assert_eq!(s.claim_due(t0(), 10, std::time::Duration::from_secs(60)).await.expect("claim").len(), 1);
}

/// Retention keeps a long-running store from growing without bound: pruning bodies and
/// compacting gives the space back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_and_compaction_shrink_the_file() {
    use mailroom_core::email::AccountId;
    use mailroom_core::email::Event;
    use mailroom_core::lifecycle::EventKind;
    use mailroom_core::ports::{Next, Outcome};
    use mailroom_core::testkit::{new_email, t0};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("grow.redb");
    let store = RedbStorage::open(&path).expect("open").without_fsync();
    let a = AccountId::new("a");
    // Large and incompressible (content is stored compressed): random letters. (A pruned
    // email keeps a leaf page of its own, so what pruning gives back is the body's size.)
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let body: String = (0..32 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    for chunk in 0..20u16 {
        let emails = (0..100u16)
            .map(|i| {
                let mut e = new_email("a", t0(), chunk * 100 + i, None);
                e.content.html = Some(body.clone());
                e
            })
            .collect();
        store.insert_emails(&a, emails, None).await.expect("insert");
    }
    loop {
        let claimed = store.claim_due(t0(), 500, std::time::Duration::from_secs(60)).await.expect("claim");
        if claimed.is_empty() {
            break;
        }
        let outcomes = claimed
            .iter()
            .map(|c| Outcome {
                claim: c.claim_ref(),
                events: vec![Event::new(EventKind::Sent, t0()), Event::new(EventKind::Delivered, t0())],
                suppressions: vec![],
                next: Next::Done,
            })
            .collect();
        store.record_outcomes(outcomes).await.expect("record");
    }
    store.compact().await.expect("compact");
    let before = std::fs::metadata(&path).expect("size").len();
    let later = t0() + chrono::Duration::days(31);
    let mut pruned = 0;
    loop {
        let n = store.prune(t0() + chrono::Duration::days(1), later, 500).await.expect("prune");
        if n == 0 {
            break;
        }
        pruned += n;
    }
    assert_eq!(pruned, 2000);
    // Compaction may need more than one pass to move every page down.
    while store.compact().await.expect("compact") {}
    let after = std::fs::metadata(&path).expect("size").len();
    assert!(after * 3 < before, "pruned and compacted: {before} → {after} bytes");
    let page = store
        .list_emails(&a, mailroom_core::email::PageRequest { limit: 100, cursor: Default::default() })
        .await
        .expect("list");
    assert_eq!(page.items.len(), 100, "ids and metadata stay");
    assert_eq!(page.items[0].last_event, Some(EventKind::Delivered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_conformance_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.redb");
    let store = RedbStorage::open(&path).unwrap();
    mailroom_core::testkit::api_keys_conformance(Arc::new(store)).await;
    // The keys, the revocation and the last put (a managed key, active again) are in the file.
    let reopened = RedbStorage::open(&path).unwrap();
    use mailroom_core::ports::ApiKeyStore;
    let (_, k) = reopened.key_by_hash(&[1; 32]).await.unwrap().unwrap();
    assert_eq!((k.managed, k.revoked_at, k.name.as_str()), (true, None, "from the configuration"));
    let (_, k2) = reopened.key_by_hash(&[2; 32]).await.unwrap().unwrap();
    assert!(!k2.managed);
}

/// A backup taken while the store is written to is a consistent snapshot that opens on its
/// own, and a backup never overwrites a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_backup_is_a_consistent_copy() {
    use mailroom_core::email::{AccountId, Cursor, PageRequest};
    use mailroom_core::ports::{ApiKeyRecord, ApiKeyStore, KeyPermission, RequestLogStore};
    use mailroom_core::testkit::{new_email, t0};

    let dir = tempfile::tempdir().unwrap();
    let store = RedbStorage::open(dir.path().join("live.redb")).unwrap().without_fsync();
    let a = AccountId::default();
    for i in 0..200u16 {
        store.insert_emails(&a, vec![new_email("default", t0(), i, None)], None).await.unwrap();
    }
    let key = ApiKeyRecord::new("k", "ops", [3; 32], KeyPermission::FullAccess, t0());
    store.key_insert(&a, key.clone()).await.unwrap();
    let log = mailroom_core::testkit::request_log(t0());
    store.log_append(&a, log).await.unwrap();
    // Writers keep going while the backup runs.
    let writer = {
        let store = store.clone();
        let a = a.clone();
        tokio::spawn(async move {
            for i in 200..400u16 {
                store.insert_emails(&a, vec![new_email("default", t0(), i, None)], None).await.unwrap();
            }
        })
    };
    let copy = dir.path().join("backup.redb");
    let rows = store.backup(&copy).await.unwrap();
    writer.await.unwrap();
    assert!(rows >= 200 * 3 + 2, "emails, states, due entries, the key and the log: {rows}");
    let emails = RedbStorage::verify(&copy).unwrap();
    assert!((200..=400).contains(&emails), "a snapshot between the two phases: {emails}");
    let restored = RedbStorage::open(&copy).unwrap();
    let page = restored.list_emails(&a, PageRequest { limit: 100, cursor: Cursor::Start }).await.unwrap();
    assert_eq!(page.items.len(), 100);
    assert_eq!(restored.key_by_hash(&[3; 32]).await.unwrap(), Some((a.clone(), key)));
    assert_eq!(restored.claim_due(t0(), 1000, std::time::Duration::from_secs(60)).await.unwrap().len() as u64, emails);
    // Never over an existing file (the live one least of all).
    let again = store.backup(&copy).await.unwrap_err();
    assert!(again.to_string().contains("cannot create"), "{again}");
    assert!(RedbStorage::verify(dir.path().join("missing.redb")).is_err());
    assert!(!dir.path().join("missing.redb").exists(), "verifying creates nothing");
}

/// Logs written before the time index existed are indexed when the file is opened, so
/// retention reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_retention_reaches_old_logs() {
    use mailroom_core::email::AccountId;
    use mailroom_core::ports::{LogFilter, RequestLogStore};
    use mailroom_core::testkit::t0;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    let store = RedbStorage::open(&path).unwrap();
    for n in 0..10 {
        let at = t0() + chrono::Duration::days(n);
        let log = mailroom_core::testkit::request_log(at);
        store.log_append(&AccountId::default(), log).await.unwrap();
    }
    drop(store);
    // Remove the index as a file from before it existed would lack it.
    {
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.delete_table(redb::TableDefinition::<u128, &str>::new("request_log_times_v1")).unwrap();
        tx.commit().unwrap();
    }
    let store = RedbStorage::open(&path).unwrap();
    assert_eq!(store.log_prune(t0() + chrono::Duration::days(5), 100).await.unwrap(), 5);
    let (left, _) = store.log_page(&AccountId::default(), &LogFilter::default(), None, 100).await.unwrap();
    assert_eq!(left.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStorage::open(dir.path().join("logs.redb")).unwrap().without_fsync();
    mailroom_core::testkit::request_logs_conformance(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStorage::open(dir.path().join("domains.redb")).unwrap().without_fsync();
    mailroom_core::testkit::domains_conformance(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStorage::open(dir.path().join("received.redb")).unwrap().without_fsync();
    mailroom_core::testkit::received_conformance(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStorage::open(dir.path().join("hooks.redb")).unwrap().without_fsync();
    mailroom_core::testkit::webhooks_conformance(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_log_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStorage::open(dir.path().join("log.redb")).unwrap().without_fsync();
    mailroom_core::testkit::event_log_conformance(Arc::new(store)).await;
}

/// The log and its counter survive reopening: numbers go on from where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_numbers_continue_after_reopening() {
    use mailroom_core::ports::Storage;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reopen.redb");
    let a = mailroom_core::email::AccountId::new("a");
    {
        let store = RedbStorage::open(&path).unwrap();
        let e = mailroom_core::testkit::new_email("a", mailroom_core::testkit::t0(), 1, None);
        store.insert_emails(&a, vec![e], None).await.unwrap();
        assert_eq!(store.event_log().unwrap().events_head().await.unwrap(), 1);
    }
    let store = RedbStorage::open(&path).unwrap();
    let e = mailroom_core::testkit::new_email("a", mailroom_core::testkit::t0(), 2, None);
    store.insert_emails(&a, vec![e], None).await.unwrap();
    let log = store.event_log().unwrap().events_after(&a, 0, 10).await.unwrap();
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
}
