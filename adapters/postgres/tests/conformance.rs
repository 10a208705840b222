//! The storage conformance suite against a real PostgreSQL (a throw-away cluster per test).
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod support;

use mailroom_core::Storage;
use std::sync::Arc;

fn fresh() -> (support::Cluster, Arc<dyn Storage>) {
    let cluster = support::Cluster::start();
    let store = tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(support::store(&cluster)));
    (cluster, Arc::new(store))
}

mailroom_core::storage_conformance_tests!(fresh());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_even_when_processes_start_together() {
    let cluster = support::Cluster::start();
    let first = support::store(&cluster).await;
    // Eight more pools connecting at once: the advisory lock lets one migrate, the rest see it done.
    let joins: Vec<_> = (0..8)
        .map(|_| {
            let url = cluster.url();
            tokio::spawn(async move { mailroom_postgres::PostgresStorage::connect(&url, 2).await.map(|_| ()) })
        })
        .collect();
    for j in joins {
        j.await.unwrap().unwrap();
    }
    assert_eq!(first.schema_versions().await.unwrap(), vec![1, 2, 3, 4, 5, 6, 7], "every version, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_log_conformance() {
    let cluster = support::Cluster::start();
    let store = support::store(&cluster).await;
    mailroom_core::testkit::event_log_conformance(Arc::new(store)).await;
}

/// Numbers follow commit visibility: an entry whose transaction commits after a reader saw a
/// later-inserted one still gets a number above what that reader saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_committed_late_is_numbered_after_what_readers_saw() {
    use mailroom_core::ports::EventLog;
    use mailroom_core::testkit::{new_email, t0};
    let cluster = support::Cluster::start();
    let store = support::store(&cluster).await;
    let account = mailroom_core::email::AccountId::new("a");
    // A transaction that will insert an entry and stay open, held by hand.
    let (mut slow, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let tx = slow.transaction().await.unwrap();
    store.insert_emails(&account, vec![new_email("a", t0(), 1, None)], None).await.unwrap();
    let subject: Vec<u8> = tx.query_one("SELECT subject FROM mailroom_events LIMIT 1", &[]).await.unwrap().get(0);
    tx.execute("INSERT INTO mailroom_events (account, at, subject) VALUES ('a', now(), $1)", &[&subject])
        .await
        .unwrap();
    // A reader sees the committed entry (number 1); the open one has no number yet.
    let seen = store.events_after(&account, 0, 10).await.unwrap();
    assert_eq!(seen.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
    // Another committed write, then the slow one commits: numbered after everything seen.
    store.insert_emails(&account, vec![new_email("a", t0(), 2, None)], None).await.unwrap();
    assert_eq!(store.events_head().await.unwrap(), 2);
    tx.commit().await.unwrap();
    let after = store.events_after(&account, 2, 10).await.unwrap();
    assert_eq!(
        after.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3],
        "the late entry is not lost behind the cursor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_conformance() {
    let cluster = support::Cluster::start();
    mailroom_core::testkit::api_keys_conformance(Arc::new(support::store(&cluster).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_conformance() {
    let cluster = support::Cluster::start();
    mailroom_core::testkit::request_logs_conformance(Arc::new(support::store(&cluster).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_conformance() {
    let cluster = support::Cluster::start();
    mailroom_core::testkit::domains_conformance(Arc::new(support::store(&cluster).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_conformance() {
    let cluster = support::Cluster::start();
    mailroom_core::testkit::webhooks_conformance(Arc::new(support::store(&cluster).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn received_conformance() {
    let cluster = support::Cluster::start();
    mailroom_core::testkit::received_conformance(Arc::new(support::store(&cluster).await)).await;
}

/// An email accepted through one pool wakes an idle worker of another process at once
/// (`LISTEN/NOTIFY`), instead of at its next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_email_wakes_other_processes() {
    use mailroom_core::testkit::{new_email, t0};
    let cluster = support::Cluster::start();
    let a = support::store(&cluster).await;
    let b = support::store(&cluster).await;
    let wake = b.wakeups().expect("a shared store signals");
    // The listener connects in the background: give it a moment before the first write.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let account = mailroom_core::email::AccountId::new("a");
    let woken = wake.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    a.insert_emails(&account, vec![new_email("a", t0(), 1, None)], None).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), woken).await.expect("woken by the other pool's insert");
    // Nothing due, no signal: a suppression is not announced.
    let quiet = wake.notified();
    tokio::pin!(quiet);
    quiet.as_mut().enable();
    let entry = mailroom_core::ports::SuppressionEntry {
        address: "x@example.com".into(),
        reason: mailroom_core::ports::SuppressionReason::Bounced,
        source_email: None,
        created_at: t0(),
    };
    a.suppression_add(&account, entry).await.unwrap();
    assert!(tokio::time::timeout(std::time::Duration::from_millis(700), quiet).await.is_err(), "no wake-up");
}

/// A renewed claim outlives its first lease; a claim another worker took is reported lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_renewed_and_lost_ones_reported() {
    use mailroom_core::ports::ClaimRef;
    use mailroom_core::testkit::{new_email, t0};
    use std::time::Duration;
    let cluster = support::Cluster::start();
    let s = support::store(&cluster).await;
    let account = mailroom_core::email::AccountId::new("a");
    s.insert_emails(&account, vec![new_email("a", t0(), 1, None), new_email("a", t0(), 2, None)], None).await.unwrap();
    let claimed = s.claim_due(t0(), 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let (a, b) = (claimed[0].claim_ref(), claimed[1].claim_ref());
    // `a` renewed to a minute; `b` left to lapse and taken by another worker at +40 s.
    let lost = s.renew_claims(&[a], t0() + chrono::Duration::seconds(60)).await.unwrap();
    assert!(lost.is_empty());
    let taken = s.claim_due(t0() + chrono::Duration::seconds(40), 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(taken.iter().map(|c| c.record.state.id).collect::<Vec<_>>(), vec![b.id], "only the lapsed one");
    let lost =
        s.renew_claims(&[a, b, ClaimRef { id: b.id, token: 7 }], t0() + chrono::Duration::seconds(90)).await.unwrap();
    assert_eq!(lost, vec![b.id, b.id], "the old claim on b is gone");
}

/// Group commit: writes issued together share transactions (fewer commits than writes), and
/// one that fails — here a duplicate id, a statement error that aborts PostgreSQL's
/// transaction — fails alone: the others in its group are committed, and it changed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_a_failing_one_fails_alone() {
    use mailroom_core::testkit::{new_email, t0};
    use std::sync::atomic::Ordering;
    let cluster = support::Cluster::start();
    let store = Arc::new(support::store(&cluster).await);
    let account = mailroom_core::email::AccountId::new("a");
    let original = new_email("a", t0(), 1000, None);
    store.insert_emails(&account, vec![original.clone()], None).await.unwrap();

    let (groups, writes) =
        (store.group_stats().groups.load(Ordering::Relaxed), store.group_stats().writes.load(Ordering::Relaxed));
    let mut tasks = Vec::new();
    for n in 0..64u16 {
        let (store, account) = (store.clone(), account.clone());
        // Every eighth write reuses the first email's id with other content.
        let mut email = new_email("a", t0(), n, None);
        if n % 8 == 7 {
            email.id = original.id;
            email.content.subject = format!("impostor {n}");
        }
        tasks.push(tokio::spawn(async move { (n, store.insert_emails(&account, vec![email], None).await) }));
    }
    let mut failed = 0;
    for t in tasks {
        let (n, result) = t.await.unwrap();
        match result {
            Ok(()) => assert_ne!(n % 8, 7, "a duplicate id was accepted"),
            Err(e) => {
                assert_eq!(n % 8, 7, "write {n} failed: {e}");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 8);
    let groups = store.group_stats().groups.load(Ordering::Relaxed) - groups;
    let writes = store.group_stats().writes.load(Ordering::Relaxed) - writes;
    assert_eq!(writes, 64, "every write ran once");
    assert!(groups < writes, "64 concurrent writes took {groups} commits");

    // The 56 good ones are stored, whatever group they shared with a failing one; the
    // original is untouched.
    for n in (0..64u16).filter(|n| n % 8 != 7) {
        let id = new_email("a", t0(), n, None).id;
        assert!(store.get_email(&account, id).await.unwrap().is_some(), "email {n} lost");
    }
    let kept = store.get_email(&account, original.id).await.unwrap().unwrap();
    assert_eq!(kept.content.subject, original.content.subject);
    let page = store
        .list_emails(&account, mailroom_core::email::PageRequest::new(Some(100), None, None).unwrap())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 57);
}

/// Combining: concurrent hand-over marks and outcomes (the worker makes one call per email)
/// are written as bursts — fewer group writes than calls — and each call stays atomic on its
/// own: an outcome the lifecycle refuses changes nothing of its email and does not list its
/// suppression, while the others of its burst are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_marks_and_outcomes_combine_and_a_refused_one_fails_alone() {
    use mailroom_core::email::Event;
    use mailroom_core::lifecycle::EventKind;
    use mailroom_core::ports::{Next, Outcome, SuppressionEntry, SuppressionReason};
    use mailroom_core::testkit::{new_email, t0};
    use std::sync::atomic::Ordering;
    let cluster = support::Cluster::start();
    let store = Arc::new(support::store(&cluster).await);
    let account = mailroom_core::email::AccountId::new("a");
    let emails: Vec<_> = (0..40u16).map(|n| new_email("a", t0(), n, None)).collect();
    store.insert_emails(&account, emails.clone(), None).await.unwrap();
    let claimed = store.claim_due(t0(), 100, std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 40);
    let writes = || store.group_stats().writes.load(Ordering::Relaxed);

    let before = writes();
    let marks: Vec<_> = claimed
        .iter()
        .map(|c| {
            let (store, claim) = (store.clone(), c.claim_ref());
            tokio::spawn(async move { store.begin_handover(&[claim]).await })
        })
        .collect();
    for m in marks {
        assert!(m.await.unwrap().unwrap().is_empty(), "no claim lost");
    }
    let mark_writes = writes() - before;
    assert!(mark_writes < 40, "40 marks took {mark_writes} writes");

    let bad = claimed[7].record.state.id;
    let before = writes();
    let outcomes: Vec<_> = claimed
        .iter()
        .map(|c| {
            let id = c.record.state.id;
            // One outcome skips `sent` (queued → delivered): the lifecycle refuses it.
            let events = if id == bad {
                vec![Event::new(EventKind::Delivered, t0())]
            } else {
                vec![Event::new(EventKind::Sent, t0()), Event::new(EventKind::Delivered, t0())]
            };
            let outcome = Outcome {
                claim: c.claim_ref(),
                events,
                suppressions: vec![SuppressionEntry {
                    address: format!("gone-{id}@example.com"),
                    reason: SuppressionReason::Bounced,
                    source_email: Some(id),
                    created_at: t0(),
                }],
                next: Next::Done,
            };
            let store = store.clone();
            tokio::spawn(async move { (id, store.record_outcomes(vec![outcome]).await) })
        })
        .collect();
    for o in outcomes {
        let (id, result) = o.await.unwrap();
        if id == bad {
            assert!(result.is_err(), "the refused outcome was accepted");
        } else {
            assert!(result.unwrap().is_empty(), "no claim lost");
        }
    }
    let outcome_writes = writes() - before;
    assert!(outcome_writes < 40, "40 outcomes took {outcome_writes} writes");

    let listed = store.suppression_list(&account).await.unwrap();
    assert_eq!(listed.len(), 39, "the refused outcome's suppression is not listed");
    assert!(listed.iter().all(|e| e.address != format!("gone-{bad}@example.com")));
    for e in &emails {
        let state = store.get_email(&account, e.id).await.unwrap().unwrap().state;
        let last = state.last_event().map(|k| k.as_str());
        if e.id == bad {
            assert_eq!(last, Some("queued"), "the refused outcome changed its email");
        } else {
            assert_eq!(last, Some("delivered"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_finished_and_marked_in_one_call_is_finished_and_reported_not_held() {
    // The worker never asks this (an email is marked before its outcome), but the port allows
    // it: the outcome is applied, and the mark is judged on the state it left, in which the
    // claim is no longer held. The other mark of the call is written.
    use mailroom_core::email::Event;
    use mailroom_core::lifecycle::EventKind;
    use mailroom_core::ports::{ClaimRef, Next, Outcome};
    use mailroom_core::testkit::{new_email, t0};
    let cluster = support::Cluster::start();
    let store = Arc::new(support::store(&cluster).await);
    let account = mailroom_core::email::AccountId::new("a");
    let emails: Vec<_> = (0..2u16).map(|n| new_email("a", t0(), n, None)).collect();
    store.insert_emails(&account, emails, None).await.unwrap();
    let claimed = store.claim_due(t0(), 10, std::time::Duration::from_secs(60)).await.unwrap();
    let claims: Vec<ClaimRef> = claimed.iter().map(|c| c.claim_ref()).collect();
    let (done, other) = (claims[0], claims[1]);
    assert!(store.begin_handover(&[done]).await.unwrap().is_empty());
    let events = vec![Event::new(EventKind::Sent, t0()), Event::new(EventKind::Delivered, t0())];
    let outcome = Outcome { claim: done, events, suppressions: vec![], next: Next::Done };
    let (refused, lost) = store.record_outcomes_then_begin_handover(vec![outcome], &[done, other]).await.unwrap();
    assert!(refused.is_empty());
    assert_eq!(lost.unwrap(), vec![done.id]);
    let state = |id| {
        let (store, account) = (store.clone(), account.clone());
        async move { store.get_email(&account, id).await.unwrap().unwrap().state }
    };
    let finished = state(done.id).await;
    assert_eq!(finished.last_event(), Some(EventKind::Delivered));
    assert!(!finished.handed_over, "a finished email was marked as being handed over");
    assert!(state(other.id).await.handed_over);
}

/// An outcome and the next email's mark (`record_outcomes_then_begin_handover`, how the worker
/// passes a hand-over permit): concurrent calls are combined into bursts, each call is one
/// unit — its outcome and its mark are written together, and a call whose outcome the
/// lifecycle refuses marks nothing — and a claim not held is reported, not marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_with_the_next_marks_are_written_together() {
    use mailroom_core::email::Event;
    use mailroom_core::lifecycle::EventKind;
    use mailroom_core::ports::{ClaimRef, Next, Outcome};
    use mailroom_core::testkit::{new_email, t0};
    use std::sync::atomic::Ordering;
    let cluster = support::Cluster::start();
    let store = Arc::new(support::store(&cluster).await);
    let account = mailroom_core::email::AccountId::new("a");
    let emails: Vec<_> = (0..40u16).map(|n| new_email("a", t0(), n, None)).collect();
    store.insert_emails(&account, emails, None).await.unwrap();
    let claimed = store.claim_due(t0(), 100, std::time::Duration::from_secs(60)).await.unwrap();
    let claims: Vec<ClaimRef> = claimed.iter().map(|c| c.claim_ref()).collect();
    // The first 20 are being handed over; each finishes and marks one of the other 20.
    let (finishing, next) = claims.split_at(20);
    for c in finishing {
        assert!(store.begin_handover(&[*c]).await.unwrap().is_empty());
    }
    let bad = finishing[3].id;
    let stale = next[5].id;
    let before = store.group_stats().writes.load(Ordering::Relaxed);
    let calls: Vec<_> = finishing
        .iter()
        .zip(next)
        .map(|(done, following)| {
            let events = if done.id == bad {
                // `delivered` with no `sent`: refused.
                vec![Event::new(EventKind::Delivered, t0())]
            } else {
                vec![Event::new(EventKind::Sent, t0()), Event::new(EventKind::Delivered, t0())]
            };
            let outcome = Outcome { claim: *done, events, suppressions: vec![], next: Next::Done };
            let mark =
                if following.id == stale { ClaimRef { token: following.token ^ 1, ..*following } } else { *following };
            let (store, done) = (store.clone(), done.id);
            tokio::spawn(async move { (done, store.record_outcomes_then_begin_handover(vec![outcome], &[mark]).await) })
        })
        .collect();
    for call in calls {
        let (id, result) = call.await.unwrap();
        if id == bad {
            assert!(result.is_err(), "the refused outcome was accepted");
        } else {
            let (refused, marked) = result.unwrap();
            assert!(refused.is_empty());
            let lost = marked.unwrap();
            assert!(lost.is_empty() || lost == vec![stale], "{lost:?}");
        }
    }
    let burst_writes = store.group_stats().writes.load(Ordering::Relaxed) - before;
    assert!(burst_writes < 20, "20 calls took {burst_writes} writes");
    let state = |id| {
        let (store, account) = (store.clone(), account.clone());
        async move { store.get_email(&account, id).await.unwrap().unwrap().state }
    };
    for (done, following) in finishing.iter().zip(next) {
        let (d, f) = (state(done.id).await, state(following.id).await);
        if done.id == bad {
            assert_eq!(d.last_event(), Some(EventKind::Queued), "the refused outcome changed its email");
            assert!(!f.handed_over, "a call whose outcome was refused marked its next email");
        } else {
            assert_eq!(d.last_event(), Some(EventKind::Delivered));
            assert_eq!(f.handed_over, following.id != stale, "{}", following.id);
        }
    }
}

/// Pages that cross the store's read chunks (500 rows) agree with the list sliced at their
/// cursor, each way and with an origin that only every seventh entry has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppression_pages_cross_read_chunks() {
    use mailroom_core::email::{AccountId, EmailId};
    use mailroom_core::ports::{SuppressionEntry, SuppressionReason};
    use mailroom_core::suppressions::{Cursor, Origin, PageQuery, id, page};
    let cluster = support::Cluster::start();
    let store = Arc::new(support::store(&cluster).await);
    let a = AccountId::new("a");
    let adds = (0..1_203u32).map(|i| {
        let (store, a) = (Arc::clone(&store), a.clone());
        async move {
            let source_email = (i % 7 == 0).then(|| EmailId::from_u128(u128::from(i)));
            let e = SuppressionEntry {
                address: format!("user{i:05}@example.com"),
                reason: if i % 5 == 0 { SuppressionReason::Unsubscribed } else { SuppressionReason::Bounced },
                source_email,
                created_at: mailroom_core::testkit::t0(),
            };
            store.suppression_add(&a, e).await.unwrap();
        }
    });
    for h in adds.map(tokio::spawn).collect::<Vec<_>>() {
        h.await.unwrap();
    }
    let all = store.suppression_list(&a).await.unwrap();
    assert_eq!(all.len(), 1_203);
    for at in [0usize, 498, 499, 500, 501, 998, 1_202] {
        for (cursor, limit) in
            [(Cursor::After(id(&a, &all[at].address)), 100), (Cursor::Before(id(&a, &all[at].address)), 100)]
        {
            for origin in [None, Some(Origin::Bounce)] {
                let q = PageQuery { limit, cursor: cursor.clone(), origin };
                let want = page(&a, all.iter().cloned().map(Ok), &q).unwrap();
                assert_eq!(store.suppression_page(&a, &q).await.unwrap(), want, "{q:?}");
            }
        }
    }
    let q = PageQuery { limit: 100, cursor: Cursor::Start, origin: Some(Origin::Bounce) };
    let want = page(&a, all.iter().cloned().map(Ok), &q).unwrap();
    assert_eq!(store.suppression_page(&a, &q).await.unwrap(), want);
    assert_eq!(want.as_ref().map(|p| p.items.len()), Some(100), "a page of bounces reads past two chunks");
    // The unsubscribes' sources, read in chunks too: every one of the three chunks' (i a
    // multiple of 35 below 1,203: 35 of them).
    let mut sources = store.suppression_unsubscribe_sources(&a).await.unwrap();
    sources.sort();
    let want: Vec<EmailId> = (0..1_203u32).filter(|i| i % 35 == 0).map(|i| EmailId::from_u128(u128::from(i))).collect();
    assert_eq!((sources.len(), sources), (35, want));
}

/// Rows written before the suppression list had its `id` and `origin` columns (migration 7)
/// get both when a store connects, across the chunks the indexing reads: found by id, listed
/// by origin, their unsubscribes counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressions_from_before_their_index_columns_are_indexed_at_connect() {
    use mailroom_core::email::{AccountId, EmailId};
    use mailroom_core::ports::{SuppressionEntry, SuppressionReason};
    use mailroom_core::suppressions::{Cursor, Origin, PageQuery, id, page};
    let cluster = support::Cluster::start();
    let store = support::store(&cluster).await;
    let a = AccountId::new("a");
    for i in 0..1_203u32 {
        let e = SuppressionEntry {
            address: format!("user{i:05}@example.com"),
            reason: if i % 5 == 0 { SuppressionReason::Unsubscribed } else { SuppressionReason::Bounced },
            source_email: (i % 7 == 0).then(|| EmailId::from_u128(u128::from(i))),
            created_at: mailroom_core::testkit::t0(),
        };
        store.suppression_add(&a, e).await.unwrap();
    }
    drop(store);
    let (client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    let cleared = client.execute("UPDATE mailroom_suppressions SET id = NULL, origin = NULL", &[]).await.unwrap();
    assert_eq!(cleared, 1_203);
    let store = support::store(&cluster).await;
    let all = store.suppression_list(&a).await.unwrap();
    for e in [&all[0], &all[499], &all[500], &all[1_202]] {
        assert_eq!(store.suppression_by_id(&a, &id(&a, &e.address)).await.unwrap().as_ref(), Some(e));
    }
    for origin in [Origin::Bounce, Origin::Manual, Origin::Unsubscribe] {
        let q = PageQuery { limit: 100, cursor: Cursor::After(id(&a, &all[600].address)), origin: Some(origin) };
        let want = page(&a, all.iter().cloned().map(Ok), &q).unwrap();
        assert_eq!(store.suppression_page(&a, &q).await.unwrap(), want, "{q:?}");
    }
    assert_eq!(store.suppression_unsubscribe_sources(&a).await.unwrap().len(), 35);
    let unindexed: i64 = client
        .query_one("SELECT count(*) FROM mailroom_suppressions WHERE id IS NULL OR origin IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(unindexed, 0);
    drop(client);
    let _ = driver.await;
}

/// In a database whose collation is not "C" (an ICU en-US one here, as most databases are
/// made), a page of the suppression list is read from an index in its order: no step of the
/// plan sorts the account's list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppression_pages_read_an_index_in_any_collation() {
    let cluster = support::Cluster::start();
    // Connecting a store waits out the server's start.
    drop(support::store(&cluster).await);
    let (admin, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls).await.unwrap();
    let driver = tokio::spawn(connection);
    admin
        .batch_execute("CREATE DATABASE icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.utf8'")
        .await
        .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/icu", cluster.port);
    let _store = mailroom_postgres::PostgresStorage::connect(&url, 2).await.unwrap();
    let (c, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let icu_driver = tokio::spawn(connection);
    // The plans of the store's own statements, with sequential scans priced out so that the
    // choice left is between an index in this order and a sort.
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    for statement in mailroom_postgres::SUPPRESSION_PAGE_STATEMENTS {
        c.batch_execute(&format!("PREPARE page(text, text, bigint, smallint) AS {statement}")).await.unwrap();
        let plan: Vec<String> =
            c.query("EXPLAIN EXECUTE page('a', 'm', 500, 1)", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
        assert!(!plan.iter().any(|l| l.contains("Sort")), "{statement}\n{}", plan.join("\n"));
        c.batch_execute("DEALLOCATE page").await.unwrap();
    }
    drop((c, admin));
    let _ = (icu_driver.await, driver.await);
}
