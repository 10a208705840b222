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
