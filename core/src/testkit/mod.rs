//! The storage conformance suite (feature `testkit`). Every [`Storage`] runs it:
//!
//! ```ignore
//! mailroom_core::storage_conformance_tests!((guard, Arc::new(MyStore::open(..)) as Arc<dyn Storage>));
//! ```
//!
//! The expression is evaluated once per test and yields `(guard, store)`; the guard (a temp
//! directory, say) lives as long as the test. Each case asserts one behaviour the engine
//! relies on, so a store that breaks it fails a named test.
#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

pub mod doubles;
pub mod model;

use crate::address::Mailbox;
use crate::bounce::SmtpReply;
use crate::email::{AccountId, Cursor, EmailContent, EmailId, Event, NewEmail, PageRequest};
use crate::idempotency::{Fingerprint, StoredResponse};
use crate::lifecycle::EventKind;
use crate::ports::{
    ClaimRef, IdempotencyBegin, IdempotencyCompletion, Next, Outcome, ScheduleChange, ScheduleOp, Storage,
    SuppressionEntry, SuppressionReason,
};
use chrono::{DateTime, Duration as CDuration, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Runs `racers` capped creates at once, each in a task of its own (`create(i)` makes the
/// i-th), and answers how many succeeded; any other failure than the cap's ("at most") fails
/// the test. For the tests that the per-account caps hold when creates race.
pub async fn race_creates<F, Fut>(racers: usize, create: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::error::Error>> + Send + 'static,
{
    let tasks: Vec<_> = (0..racers).map(|i| tokio::spawn(create(i))).collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert!(e.to_string().contains("at most"), "only the cap refuses: {e}"),
        }
    }
    ok
}

/// Generates one `#[tokio::test]` per conformance case.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($make:expr) => {
        $crate::storage_conformance_tests!(@each $make;
            insert_get_roundtrip,
            list_newest_first_with_cursors,
            list_is_scoped_to_the_account,
            idempotency_lifecycle,
            idempotency_in_flight_marker_lapses,
            idempotency_purge,
            insert_with_idempotency_is_one_write,
            a_completed_key_is_never_completed_twice,
            claim_respects_schedule_and_lease,
            outcome_records_events_and_finishes,
            handover_survives_a_lost_outcome,
            release_makes_due_again,
            outcome_with_illegal_transition_changes_nothing,
            retry_reschedules_with_pending_recipients,
            suppression_crud,
            suppression_pages_and_ids,
            email_facts_by_id_range,
            next_due_is_the_earliest,
            concurrent_claims_are_exclusive,
            retention_prunes_bodies_and_old_events_of_finished_emails,
            reschedule_moves_the_due_time_only_while_scheduled,
            cancel_is_final_and_never_claimed,
            cancel_races_claim_correctly,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (_guard, store) = $make;
                $crate::testkit::$name(store).await;
            }
        )*
    };
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc()
}

/// A full-access key created at [`t0`], never used: what the stores' layout tests encode.
pub fn sample_key() -> crate::ports::ApiKeyRecord {
    crate::ports::ApiKeyRecord::new("k", "ops", [5; 32], crate::ports::KeyPermission::FullAccess, t0())
}

/// An id whose time prefix is `ms` (so ordering follows `ms`, then `seq`).
pub fn id_at(ms: i64, seq: u16) -> EmailId {
    let v = (u128::from(ms as u64 & 0xffff_ffff_ffff) << 80) | (0x7 << 76) | (0b10 << 62) | u128::from(seq);
    EmailId::from_u128(v)
}

pub fn new_email(account: &str, at: DateTime<Utc>, seq: u16, scheduled: Option<DateTime<Utc>>) -> NewEmail {
    let id = id_at(at.timestamp_millis(), seq);
    let from = Mailbox::parse("Acme <hi@acme.test>").unwrap();
    NewEmail {
        account: AccountId::new(account),
        id,
        created_at: at,
        scheduled_at: scheduled,
        content: EmailContent {
            message_id: format!("{id}@acme.test"),
            api_key_id: None,
            unsubscribe: false,
            from,
            to: vec![Mailbox::parse(&format!("user{seq}@example.com")).unwrap()],
            cc: vec![],
            bcc: vec![Mailbox::parse("audit@example.com").unwrap()],
            reply_to: vec![],
            subject: format!("Hello {seq}"),
            html: Some(format!("<p>email {seq}</p>")),
            text: Some(format!("email {seq}")),
            headers: vec![("X-Seq".into(), seq.to_string())],
            attachments: vec![],
            tags: vec![crate::email::Tag { name: "seq".into(), value: seq.to_string() }],
            topic_id: None,
        },
    }
}

/// A transactional email's html of about 2 KB, different for every `seed`: a styled receipt
/// with an order number, prices and sentences drawn from a vocabulary of a few hundred words,
/// more common words more often. Benchmarks of size on disk and of compression use it: a
/// repeated phrase would compress fifty-fold and measure nothing.
pub fn sample_html(seed: u64) -> String {
    const WORDS: &str = "the of and to a in is you that it for your on are with as this be at have from or         by not we all can will if an more about which their has one our they so what up out when         there new time who get only use also may any these other some would them like how no than         just make been its over such most into after here then first well where back good very         order shipped arrive thursday between hours sorry delay please contact support questions         invoice payment received thank account settings receipt total amount item quantity price         delivery address tracking number carrier estimated return policy days refund team store         password reset link expires minutes security alert sign device location browser confirm         email subscription renewal plan monthly annual billing card ending update method discount         code applied subtotal shipping tax warehouse package label pickup schedule appointment         reminder tomorrow calendar meeting invitation accepted declined project document shared         comment mention notification digest weekly summary activity report dashboard login         verify identity welcome started guide tutorial feature release notes improvement fixed         issue customer service request ticket status resolved feedback survey rating review         product catalog inventory available backorder cancel cancelled modify change preferences         unsubscribe privacy terms conditions legal notice copyright reserved rights company inc";
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut html = format!(
        "<!doctype html><html><body style=\"margin:0;background:#f4f4f5;font-family:Helvetica,Arial,sans-serif\">\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\"><tr><td style=\"padding:24px\">\
         <h1 style=\"font-size:20px;color:#111\">Receipt #{}-{}</h1>",
        10_000 + seed % 90_000,
        next() % 1000
    );
    while html.len() < 1900 {
        let n = 8 + next() % 10;
        let sentence: Vec<&str> = (0..n)
            .map(|_| {
                // Squaring a uniform draw favours the front of the list: common words come first.
                let r = (next() % 1000) as usize;
                words[r * r * words.len() / 1_000_000]
            })
            .collect();
        html.push_str(&format!(
            "<p style=\"margin:0 0 12px;color:#333;line-height:1.5\">{} ${}.{:02}</p>",
            sentence.join(" "),
            next() % 500,
            next() % 100
        ));
    }
    html.push_str("</td></tr></table></body></html>");
    html
}

/// The benchmarks' email shape: 100 requests of 2 KB html ([`sample_html`]), 2 recipients and
/// 2 tags each; `round` keeps addresses, subjects and bodies distinct between batches.
pub fn sample_batch(round: u64) -> Vec<crate::request::EmailRequest> {
    use crate::request::{EmailRequest, OneOrMany, TagRequest};
    (0..100)
        .map(|i| EmailRequest {
            from: Some("Acme <bench@acme.test>".into()),
            to: Some(OneOrMany::Many(vec![format!("a{round}-{i}@example.com"), format!("b{round}-{i}@example.com")])),
            subject: Some(format!("Batch {round} item {i}")),
            html: Some(sample_html(round * 100 + i)),
            tags: Some(vec![
                TagRequest { name: Some("round".into()), value: Some(round.to_string()) },
                TagRequest { name: Some("n".into()), value: Some(i.to_string()) },
            ]),
            ..Default::default()
        })
        .collect()
}

fn acct(a: &str) -> AccountId {
    AccountId::new(a)
}

fn fp(n: u8) -> Fingerprint {
    Fingerprint([n; 32])
}

const LEASE: Duration = Duration::from_secs(60);

pub async fn insert_get_roundtrip(s: Arc<dyn Storage>) {
    let a = new_email("a", t0(), 1, None);
    let b = new_email("a", t0(), 2, Some(t0() + CDuration::hours(1)));
    s.insert_emails(&acct("a"), vec![a.clone(), b.clone()], None).await.unwrap();
    let got = s.get_email(&acct("a"), a.id).await.unwrap().unwrap();
    assert_eq!(got.content, a.content);
    assert_eq!(got.state, a.initial_state());
    assert_eq!(got.state.last_event(), Some(EventKind::Queued));
    let got = s.get_email(&acct("a"), b.id).await.unwrap().unwrap();
    assert_eq!(got.state.last_event(), Some(EventKind::Scheduled));
    assert_eq!(got.state.scheduled_at, b.scheduled_at);
    assert!(s.get_email(&acct("a"), id_at(1, 1)).await.unwrap().is_none());
    assert!(s.get_email(&acct("other"), a.id).await.unwrap().is_none(), "ids are scoped to the account");
    let state = s.get_state(&acct("a"), a.id).await.unwrap().unwrap();
    assert_eq!(state, s.get_email(&acct("a"), a.id).await.unwrap().unwrap().state, "the state alone is the email's");
    assert!(s.get_state(&acct("other"), a.id).await.unwrap().is_none(), "states are scoped to the account too");
}

pub async fn list_newest_first_with_cursors(s: Arc<dyn Storage>) {
    let emails: Vec<NewEmail> =
        (0..25).map(|i| new_email("a", t0() + CDuration::milliseconds(i), i as u16, None)).collect();
    for chunk in emails.chunks(7) {
        s.insert_emails(&acct("a"), chunk.to_vec(), None).await.unwrap();
    }
    let ids = |p: &crate::email::Page<crate::email::EmailSummary>| p.items.iter().map(|e| e.id).collect::<Vec<_>>();
    let newest: Vec<EmailId> = emails.iter().rev().map(|e| e.id).collect();
    let p1 = s.list_emails(&acct("a"), PageRequest { limit: 10, cursor: Cursor::Start }).await.unwrap();
    assert_eq!(ids(&p1), newest[..10]);
    assert!(p1.has_more);
    let p2 = s.list_emails(&acct("a"), PageRequest { limit: 10, cursor: Cursor::After(newest[9]) }).await.unwrap();
    assert_eq!(ids(&p2), newest[10..20]);
    assert!(p2.has_more);
    let p3 = s.list_emails(&acct("a"), PageRequest { limit: 10, cursor: Cursor::After(newest[19]) }).await.unwrap();
    assert_eq!(ids(&p3), newest[20..]);
    assert!(!p3.has_more);
    let back = s.list_emails(&acct("a"), PageRequest { limit: 10, cursor: Cursor::Before(newest[10]) }).await.unwrap();
    assert_eq!(ids(&back), newest[..10], "before pages towards newer emails, still newest first");
    assert!(!back.has_more);
    let back = s.list_emails(&acct("a"), PageRequest { limit: 5, cursor: Cursor::Before(newest[10]) }).await.unwrap();
    assert_eq!(ids(&back), newest[5..10]);
    assert!(back.has_more);
    let exact = s.list_emails(&acct("a"), PageRequest { limit: 25, cursor: Cursor::Start }).await.unwrap();
    assert_eq!(exact.items.len(), 25);
    assert!(!exact.has_more);
    let first = &p1.items[0];
    assert_eq!(first.subject, "Hello 24");
    assert_eq!(first.last_event, Some(EventKind::Queued));
}

pub async fn list_is_scoped_to_the_account(s: Arc<dyn Storage>) {
    s.insert_emails(&acct("a"), vec![new_email("a", t0(), 1, None)], None).await.unwrap();
    s.insert_emails(&acct("b"), vec![new_email("b", t0(), 2, None), new_email("b", t0(), 3, None)], None)
        .await
        .unwrap();
    let pa = s.list_emails(&acct("a"), PageRequest { limit: 100, cursor: Cursor::Start }).await.unwrap();
    let pb = s.list_emails(&acct("b"), PageRequest { limit: 100, cursor: Cursor::Start }).await.unwrap();
    let pc = s.list_emails(&acct("c"), PageRequest { limit: 100, cursor: Cursor::Start }).await.unwrap();
    assert_eq!((pa.items.len(), pb.items.len(), pc.items.len()), (1, 2, 0));
    // An account whose name is a prefix of another's does not see its emails.
    s.insert_emails(&acct("ab"), vec![new_email("ab", t0(), 4, None)], None).await.unwrap();
    let pa = s.list_emails(&acct("a"), PageRequest { limit: 100, cursor: Cursor::Start }).await.unwrap();
    assert_eq!(pa.items.len(), 1);
}

pub async fn idempotency_lifecycle(s: Arc<dyn Storage>) {
    let a = acct("a");
    let until = t0() + CDuration::minutes(2);
    assert_eq!(s.idempotency_begin(&a, "k", &fp(1), t0(), until).await.unwrap(), IdempotencyBegin::Started);
    assert_eq!(s.idempotency_begin(&a, "k", &fp(1), t0(), until).await.unwrap(), IdempotencyBegin::InFlight);
    assert_eq!(s.idempotency_begin(&a, "k", &fp(2), t0(), until).await.unwrap(), IdempotencyBegin::Mismatch);
    // Keys are per account.
    assert_eq!(s.idempotency_begin(&acct("b"), "k", &fp(2), t0(), until).await.unwrap(), IdempotencyBegin::Started);
    let e = new_email("a", t0(), 1, None);
    let response = StoredResponse { ids: vec![e.id], errors: vec![] };
    let done = IdempotencyCompletion {
        key: "k".into(),
        fingerprint: fp(1),
        response: response.clone(),
        created_at: t0(),
        expires_at: t0() + CDuration::hours(24),
    };
    s.insert_emails(&a, vec![e], Some(done)).await.unwrap();
    let later = t0() + CDuration::hours(23);
    assert_eq!(s.idempotency_begin(&a, "k", &fp(1), later, later).await.unwrap(), IdempotencyBegin::Replay(response));
    assert_eq!(s.idempotency_begin(&a, "k", &fp(2), later, later).await.unwrap(), IdempotencyBegin::Mismatch);
    // Release never drops a completed record.
    s.idempotency_release(&a, "k").await.unwrap();
    assert!(matches!(s.idempotency_begin(&a, "k", &fp(1), later, later).await.unwrap(), IdempotencyBegin::Replay(_)));
    // After 24 hours the key is free again.
    let expired = t0() + CDuration::hours(25);
    assert_eq!(
        s.idempotency_begin(&a, "k", &fp(2), expired, expired + CDuration::minutes(2)).await.unwrap(),
        IdempotencyBegin::Started
    );
    // Release drops an in-flight marker.
    s.idempotency_release(&a, "k").await.unwrap();
    assert_eq!(
        s.idempotency_begin(&a, "k", &fp(3), expired, expired + CDuration::minutes(2)).await.unwrap(),
        IdempotencyBegin::Started
    );
}

pub async fn idempotency_in_flight_marker_lapses(s: Arc<dyn Storage>) {
    let a = acct("a");
    s.idempotency_begin(&a, "k", &fp(1), t0(), t0() + CDuration::minutes(2)).await.unwrap();
    let t = t0() + CDuration::minutes(3);
    assert_eq!(
        s.idempotency_begin(&a, "k", &fp(1), t, t + CDuration::minutes(2)).await.unwrap(),
        IdempotencyBegin::Started,
        "a crashed request's marker must not block its retry for long"
    );
}

pub async fn idempotency_purge(s: Arc<dyn Storage>) {
    let a = acct("a");
    for (i, key) in ["k1", "k2", "k3"].iter().enumerate() {
        let done = IdempotencyCompletion {
            key: (*key).into(),
            fingerprint: fp(1),
            response: StoredResponse { ids: vec![], errors: vec![] },
            created_at: t0(),
            expires_at: t0() + CDuration::hours(i as i64 + 1),
        };
        s.insert_emails(&a, vec![], Some(done)).await.unwrap();
    }
    assert_eq!(s.purge_idempotency(t0() + CDuration::minutes(150)).await.unwrap(), 2);
    let t = t0() + CDuration::minutes(150);
    assert!(matches!(s.idempotency_begin(&a, "k3", &fp(1), t, t).await.unwrap(), IdempotencyBegin::Replay(_)));
    assert_eq!(s.idempotency_begin(&a, "k1", &fp(1), t, t).await.unwrap(), IdempotencyBegin::Started);
}

pub async fn insert_with_idempotency_is_one_write(s: Arc<dyn Storage>) {
    let a = acct("a");
    let emails: Vec<NewEmail> = (0..3).map(|i| new_email("a", t0(), i, None)).collect();
    let ids: Vec<EmailId> = emails.iter().map(|e| e.id).collect();
    let done = IdempotencyCompletion {
        key: "batch-1".into(),
        fingerprint: fp(9),
        response: StoredResponse { ids: ids.clone(), errors: vec![] },
        created_at: t0(),
        expires_at: t0() + CDuration::hours(24),
    };
    s.insert_emails(&a, emails, Some(done)).await.unwrap();
    for id in &ids {
        assert!(s.get_email(&a, *id).await.unwrap().is_some());
    }
    match s.idempotency_begin(&a, "batch-1", &fp(9), t0(), t0()).await.unwrap() {
        IdempotencyBegin::Replay(r) => assert_eq!(r.ids, ids),
        other => panic!("expected a replay, got {other:?}"),
    }
}

pub async fn a_completed_key_is_never_completed_twice(s: Arc<dyn Storage>) {
    let a = acct("a");
    let done = |e: &NewEmail| IdempotencyCompletion {
        key: "k".into(),
        fingerprint: fp(1),
        response: StoredResponse { ids: vec![e.id], errors: vec![] },
        created_at: t0(),
        expires_at: t0() + CDuration::hours(24),
    };
    let first = new_email("a", t0(), 1, None);
    let twin = new_email("a", t0(), 2, None);
    s.insert_emails(&a, vec![first.clone()], Some(done(&first))).await.unwrap();
    let err = s.insert_emails(&a, vec![twin.clone()], Some(done(&twin))).await.unwrap_err();
    assert_eq!(err, crate::error::StorageError::IdempotencyConflict);
    assert!(s.get_email(&a, twin.id).await.unwrap().is_none(), "the twin's emails were not written");
}

pub async fn claim_respects_schedule_and_lease(s: Arc<dyn Storage>) {
    let a = acct("a");
    let q = new_email("a", t0(), 1, None);
    let sch = new_email("a", t0(), 2, Some(t0() + CDuration::minutes(10)));
    s.insert_emails(&a, vec![q.clone(), sch.clone()], None).await.unwrap();
    let c = s.claim_due(t0(), 10, LEASE).await.unwrap();
    assert_eq!(c.iter().map(|c| c.record.state.id).collect::<Vec<_>>(), vec![q.id], "only the due email");
    assert!(s.claim_due(t0(), 10, LEASE).await.unwrap().is_empty(), "a held claim is not handed out twice");
    let t = t0() + CDuration::seconds(61);
    let again = s.claim_due(t, 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1, "a lapsed lease is claimable");
    assert_ne!(again[0].token, c[0].token);
    let lost = s.begin_handover(&[c[0].claim_ref()]).await.unwrap();
    assert_eq!(lost, vec![q.id], "the old holder lost its claim");
    let finish = Outcome {
        claim: again[0].claim_ref(),
        events: vec![Event::new(EventKind::Failed, t)],
        suppressions: vec![],
        next: Next::Done,
    };
    assert!(s.record_outcomes(vec![finish]).await.unwrap().is_empty(), "the new holder records");
    let t = t0() + CDuration::minutes(10);
    let due = s.claim_due(t, 10, LEASE).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].record.state.id, sch.id);
    assert_eq!(due[0].record.state.last_event(), Some(EventKind::Queued), "a scheduled email is queued when claimed");
    let stored = s.get_email(&a, sch.id).await.unwrap().unwrap();
    assert_eq!(
        stored.state.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Scheduled, EventKind::Queued]
    );
}

pub async fn outcome_records_events_and_finishes(s: Arc<dyn Storage>) {
    let a = acct("a");
    let e = new_email("a", t0(), 1, None);
    s.insert_emails(&a, vec![e.clone()], None).await.unwrap();
    let c = s.claim_due(t0(), 10, LEASE).await.unwrap().remove(0);
    assert!(s.begin_handover(&[c.claim_ref()]).await.unwrap().is_empty());
    let events = vec![
        Event::new(EventKind::Sent, t0()),
        Event::new(EventKind::Delivered, t0()).recipient("user1@example.com").reply(SmtpReply::new(250, "2.0.0", "ok")),
    ];
    let lost = s
        .record_outcomes(vec![Outcome {
            claim: c.claim_ref(),
            events: events.clone(),
            suppressions: vec![],
            next: Next::Done,
        }])
        .await
        .unwrap();
    assert!(lost.is_empty());
    let r = s.get_email(&a, e.id).await.unwrap().unwrap();
    assert_eq!(r.state.events[1..], events[..]);
    assert_eq!(r.state.last_event(), Some(EventKind::Delivered));
    assert_eq!((r.state.attempts, r.state.handed_over, r.state.claim, r.state.due_at), (1, false, None, None));
    assert!(
        s.claim_due(t0() + CDuration::days(1), 10, LEASE).await.unwrap().is_empty(),
        "finished emails are never due"
    );
    // A second outcome with the same (now released) claim is refused.
    let lost = s
        .record_outcomes(vec![Outcome { claim: c.claim_ref(), events: vec![], suppressions: vec![], next: Next::Done }])
        .await
        .unwrap();
    assert_eq!(lost, vec![e.id]);

    // An email named twice in one call: the first outcome ends the claim, the second is lost,
    // and the event log holds exactly the events the email shows.
    let f = new_email("a", t0(), 2, None);
    s.insert_emails(&a, vec![f.clone()], None).await.unwrap();
    let c = s.claim_due(t0(), 10, LEASE).await.unwrap().remove(0);
    let once = |kind| Outcome {
        claim: c.claim_ref(),
        events: vec![Event::new(EventKind::Sent, t0()), Event::new(kind, t0())],
        suppressions: vec![],
        next: Next::Done,
    };
    let lost = s.record_outcomes(vec![once(EventKind::Delivered), once(EventKind::Bounced)]).await.unwrap();
    assert_eq!(lost, vec![f.id]);
    let shown: Vec<EventKind> =
        s.get_email(&a, f.id).await.unwrap().unwrap().state.events.iter().map(|e| e.kind).collect();
    assert_eq!(shown, [EventKind::Queued, EventKind::Sent, EventKind::Delivered]);
    if let Some(log) = s.event_log() {
        let logged: Vec<EventKind> = log
            .events_after(&a, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|l| match l.subject {
                crate::events::Subject::Email { id, event } if id == f.id => Some(event.kind),
                _ => None,
            })
            .collect();
        assert_eq!(logged, shown);
    }
}

pub async fn handover_survives_a_lost_outcome(s: Arc<dyn Storage>) {
    let a = acct("a");
    let e = new_email("a", t0(), 1, None);
    s.insert_emails(&a, vec![e.clone()], None).await.unwrap();
    let c = s.claim_due(t0(), 10, LEASE).await.unwrap().remove(0);
    s.begin_handover(&[c.claim_ref()]).await.unwrap();
    // The worker dies here. After the lease, the email is due again and flagged.
    assert!(s.claim_due(t0() + CDuration::seconds(30), 10, LEASE).await.unwrap().is_empty());
    let again = s.claim_due(t0() + CDuration::seconds(61), 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].record.state.handed_over, "the next claimant must know it may have left");
}

pub async fn release_makes_due_again(s: Arc<dyn Storage>) {
    let a = acct("a");
    s.insert_emails(&a, vec![new_email("a", t0(), 1, None), new_email("a", t0(), 2, None)], None).await.unwrap();
    let c = s.claim_due(t0(), 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 2);
    s.begin_handover(&[c[1].claim_ref()]).await.unwrap();
    s.release_claims(&[c[0].claim_ref(), c[1].claim_ref()], t0()).await.unwrap();
    let again = s.claim_due(t0(), 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1, "released: due now; handed over: held until its lease lapses");
    assert_eq!(again[0].record.state.id, c[0].record.state.id);
}

pub async fn outcome_with_illegal_transition_changes_nothing(s: Arc<dyn Storage>) {
    let a = acct("a");
    let e = new_email("a", t0(), 1, None);
    s.insert_emails(&a, vec![e.clone()], None).await.unwrap();
    let c = s.claim_due(t0(), 10, LEASE).await.unwrap().remove(0);
    let before = s.get_email(&a, e.id).await.unwrap().unwrap();
    let bad = Outcome {
        claim: c.claim_ref(),
        // queued → delivered skips `sent`: illegal.
        events: vec![Event::new(EventKind::Delivered, t0())],
        suppressions: vec![SuppressionEntry {
            address: "user1@example.com".into(),
            reason: SuppressionReason::Bounced,
            source_email: Some(e.id),
            created_at: t0(),
        }],
        next: Next::Done,
    };
    assert!(s.record_outcomes(vec![bad]).await.is_err());
    assert_eq!(s.get_email(&a, e.id).await.unwrap().unwrap(), before);
    assert!(s.suppression_list(&a).await.unwrap().is_empty(), "the suppression must not be half-applied");
}

pub async fn retry_reschedules_with_pending_recipients(s: Arc<dyn Storage>) {
    let a = acct("a");
    let e = new_email("a", t0(), 1, None);
    s.insert_emails(&a, vec![e.clone()], None).await.unwrap();
    let c = s.claim_due(t0(), 10, LEASE).await.unwrap().remove(0);
    s.begin_handover(&[c.claim_ref()]).await.unwrap();
    let at = t0() + CDuration::minutes(2);
    let o = Outcome {
        claim: c.claim_ref(),
        events: vec![Event::new(EventKind::Sent, t0()), Event::new(EventKind::DeliveryDelayed, t0())],
        suppressions: vec![],
        next: Next::RetryAt { at, pending: vec!["user1@example.com".into()] },
    };
    s.record_outcomes(vec![o]).await.unwrap();
    assert!(s.claim_due(at - CDuration::seconds(1), 10, LEASE).await.unwrap().is_empty());
    let c = s.claim_due(at, 10, LEASE).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].record.state.pending, vec!["user1@example.com".to_string()]);
    assert_eq!(c[0].record.state.attempts, 1);
    assert!(!c[0].record.state.handed_over);
}

pub async fn suppression_crud(s: Arc<dyn Storage>) {
    let a = acct("a");
    let entry =
        |addr: &str, reason| SuppressionEntry { address: addr.into(), reason, source_email: None, created_at: t0() };
    s.suppression_add(&a, entry("zed@example.com", SuppressionReason::Bounced)).await.unwrap();
    s.suppression_add(&a, entry("amy@example.com", SuppressionReason::Complained)).await.unwrap();
    s.suppression_add(&acct("b"), entry("bob@example.com", SuppressionReason::Bounced)).await.unwrap();
    let list = s.suppression_list(&a).await.unwrap();
    assert_eq!(list.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(), ["amy@example.com", "zed@example.com"]);
    let found = s
        .suppression_lookup(&a, &["zed@example.com".into(), "bob@example.com".into(), "nobody@example.com".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "bob is listed for another account only");
    assert_eq!(found[0].reason, SuppressionReason::Bounced);
    assert!(s.suppression_remove(&a, "zed@example.com", t0()).await.unwrap());
    assert!(!s.suppression_remove(&a, "zed@example.com", t0()).await.unwrap());
    assert!(s.suppression_lookup(&a, &["zed@example.com".into()]).await.unwrap().is_empty());
    s.suppression_add(&a, entry("zed@example.com", SuppressionReason::Bounced)).await.unwrap();
    assert_eq!(s.suppression_lookup(&a, &["zed@example.com".into()]).await.unwrap().len(), 1);
    // Adding if absent keeps what is listed (a complaint stays one) and adds what is not.
    let amy = s.suppression_lookup(&a, &["amy@example.com".into()]).await.unwrap().pop().unwrap();
    let kept = s.suppression_add_if_absent(&a, entry("amy@example.com", SuppressionReason::Bounced)).await.unwrap();
    assert_eq!(kept, amy);
    assert_eq!(s.suppression_lookup(&a, &["amy@example.com".into()]).await.unwrap(), [amy]);
    let new = entry("new@example.com", SuppressionReason::Bounced);
    assert_eq!(s.suppression_add_if_absent(&a, new.clone()).await.unwrap(), new);
    assert_eq!(s.suppression_lookup(&a, &["new@example.com".into()]).await.unwrap(), [new]);
    assert!(s.suppression_lookup(&acct("b"), &["new@example.com".into()]).await.unwrap().is_empty());
    // A bounce and a hand-made entry racing for one address: whichever comes first, the bounce
    // is what stays listed (the hand-made one never overwrites it).
    for round in 0..40 {
        let address = format!("race{round}@example.com");
        let bounce = SuppressionEntry {
            address: address.clone(),
            reason: SuppressionReason::Bounced,
            source_email: Some(EmailId::from_u128(round)),
            created_at: t0(),
        };
        let (s1, s2, a1, a2, b) = (Arc::clone(&s), Arc::clone(&s), a.clone(), a.clone(), bounce.clone());
        let by_hand = tokio::spawn(async move {
            s1.suppression_add_if_absent(&a1, entry(&address, SuppressionReason::Bounced)).await
        });
        let bounced = tokio::spawn(async move { s2.suppression_add(&a2, b).await });
        by_hand.await.unwrap().unwrap();
        bounced.await.unwrap().unwrap();
        let listed = s.suppression_lookup(&a, std::slice::from_ref(&bounce.address)).await.unwrap();
        assert_eq!(listed, [bounce], "round {round}");
    }
}

/// Pages of the list and lookups by id agree with the list itself, account by account (the
/// provided versions read the list; a store's own versions stream it).
/// `email_facts`: an account's emails in an id (time) range, oldest first, with their
/// sending domain and events; never another account's.
pub async fn email_facts_by_id_range(s: Arc<dyn Storage>) {
    let minute = |i: i64| t0() + CDuration::minutes(i);
    let ours: Vec<NewEmail> = (0..5).map(|i| new_email("a", minute(i as i64), i, None)).collect();
    // Another account's emails interleave with ours in id order.
    let theirs: Vec<NewEmail> = (0..3).map(|i| new_email("b", minute(i as i64), 100 + i, None)).collect();
    s.insert_emails(&acct("a"), ours.clone(), None).await.unwrap();
    s.insert_emails(&acct("b"), theirs, None).await.unwrap();
    s.append_events(ours[1].id, vec![Event::new(EventKind::Sent, minute(10))], vec![]).await.unwrap();
    let ids = |f: &[crate::ports::EmailFacts]| f.iter().map(|f| f.id).collect::<Vec<_>>();
    let all = s.email_facts(&acct("a"), 0..u128::MAX, 100, true).await.unwrap();
    assert_eq!(ids(&all), ours.iter().map(|e| e.id).collect::<Vec<_>>(), "oldest first, ours only");
    assert!(all.iter().all(|f| f.from_domain == "acme.test"));
    assert_eq!(all[0].created_at, minute(0));
    assert_eq!(all[1].events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Queued, EventKind::Sent]);
    // A time range in ids: from the floor of minute 1 up to (not including) minute 3.
    let floor = |i: i64| crate::email_metrics::id_floor(minute(i));
    let some = s.email_facts(&acct("a"), floor(1)..floor(3), 100, true).await.unwrap();
    assert_eq!(ids(&some), [ours[1].id, ours[2].id]);
    // A limit, and going on from the last id + 1, reads each once.
    let first = s.email_facts(&acct("a"), 0..u128::MAX, 2, true).await.unwrap();
    assert_eq!(ids(&first), [ours[0].id, ours[1].id]);
    let next = first[1].id.as_u128() + 1;
    let rest = s.email_facts(&acct("a"), next..u128::MAX, 100, false).await.unwrap();
    assert_eq!(ids(&rest), [ours[2].id, ours[3].id, ours[4].id]);
    assert!(rest.iter().all(|f| f.from_domain.is_empty()), "the sending domain only when asked");
    assert!(s.email_facts(&acct("nobody"), 0..u128::MAX, 100, true).await.unwrap().is_empty());
    assert!(s.email_facts(&acct("a"), floor(7)..floor(9), 100, true).await.unwrap().is_empty());
    // The provided answer (pages, then one read each) is the store's own, for any range,
    // limit and choice of senders (a page holds at most 100, so this small store crosses
    // none: `email_metrics`' test of 2,500 emails does).
    for (range, limit, senders) in [
        (0..u128::MAX, 100, true),
        (floor(1)..floor(3), 100, false),
        (0..u128::MAX, 2, true),
        (floor(2)..u128::MAX, 1, false),
    ] {
        let own = s.email_facts(&acct("a"), range.clone(), limit, senders).await.unwrap();
        let paged = crate::ports::email_facts_by_pages(&*s, &acct("a"), range, limit, senders).await.unwrap();
        assert_eq!(own, paged);
    }
}

pub async fn suppression_pages_and_ids(s: Arc<dyn Storage>) {
    use crate::suppressions::{Cursor, Origin, PageQuery, id, page};
    let a = acct("a");
    for i in 0..23u32 {
        let (reason, source_email) = match i % 3 {
            0 => (SuppressionReason::Bounced, Some(EmailId::from_u128(u128::from(i)))),
            1 => (SuppressionReason::Complained, Some(EmailId::from_u128(u128::from(i)))),
            _ => (SuppressionReason::Bounced, None),
        };
        let e = SuppressionEntry { address: format!("u{i:02}@example.com"), reason, source_email, created_at: t0() };
        s.suppression_add(&a, e).await.unwrap();
    }
    // Another account's entries sort between and after these: they never show.
    for addr in ["u05x@example.com", "zz@example.com"] {
        let e = SuppressionEntry {
            address: addr.into(),
            reason: SuppressionReason::Bounced,
            source_email: None,
            created_at: t0(),
        };
        s.suppression_add(&acct("b"), e).await.unwrap();
    }
    let all = s.suppression_list(&a).await.unwrap();
    assert_eq!(all.len(), 23);
    // Unsubscribes: the sources of that reason only, this account's only, an entry without a
    // source left out.
    for (i, source) in [(1u128, Some(EmailId::from_u128(101))), (2, None), (3, Some(EmailId::from_u128(103)))] {
        let e = SuppressionEntry {
            address: format!("gone{i}@example.com"),
            reason: SuppressionReason::Unsubscribed,
            source_email: source,
            created_at: t0(),
        };
        s.suppression_add(&a, e.clone()).await.unwrap();
        let other = SuppressionEntry { source_email: Some(EmailId::from_u128(200 + i)), ..e };
        s.suppression_add(&acct("b"), other).await.unwrap();
    }
    let mut sources = s.suppression_unsubscribe_sources(&a).await.unwrap();
    sources.sort();
    assert_eq!(sources, vec![EmailId::from_u128(101), EmailId::from_u128(103)]);
    for i in 1..=3 {
        s.suppression_remove(&a, &format!("gone{i}@example.com"), t0()).await.unwrap();
    }
    assert_eq!(s.suppression_unsubscribe_sources(&a).await.unwrap(), vec![], "removed entries are gone");
    let mut queries = vec![PageQuery { limit: 5, cursor: Cursor::Start, origin: None }];
    for at in [0usize, 4, 11, 22] {
        for origin in [None, Some(Origin::Bounce), Some(Origin::Manual)] {
            let cursor_id = id(&a, &all[at].address);
            queries.push(PageQuery { limit: 5, cursor: Cursor::After(cursor_id.clone()), origin });
            queries.push(PageQuery { limit: 5, cursor: Cursor::Before(cursor_id), origin });
        }
    }
    queries.push(PageQuery { limit: 100, cursor: Cursor::Start, origin: Some(Origin::Complaint) });
    queries.push(PageQuery { limit: 5, cursor: Cursor::After(id(&acct("b"), "zz@example.com")), origin: None });
    for q in &queries {
        let want = page(&a, all.iter().cloned().map(Ok), q).unwrap();
        assert_eq!(s.suppression_page(&a, q).await.unwrap(), want, "{q:?}");
    }
    let first = s.suppression_page(&a, &queries[0]).await.unwrap().unwrap();
    assert_eq!(first.items.len(), 5);
    assert!(first.has_more);
    assert_eq!(
        s.suppression_page(&a, queries.last().unwrap()).await.unwrap(),
        None,
        "another account's id is no cursor"
    );
    for e in [&all[0], &all[13], &all[22]] {
        assert_eq!(s.suppression_by_id(&a, &id(&a, &e.address)).await.unwrap().as_ref(), Some(e));
    }
    assert_eq!(s.suppression_by_id(&a, &id(&acct("b"), "zz@example.com")).await.unwrap(), None);
    assert_eq!(s.suppression_by_id(&a, "u01@example.com").await.unwrap(), None, "an address is no id");
    let upper = id(&a, &all[0].address).to_uppercase();
    assert_eq!(s.suppression_by_id(&a, &upper).await.unwrap(), None, "an id is written as ids are");

    // Entries change origin, go, and come by a bounce applied to an email: pages of one origin
    // and lookups by id follow every change (stores that index them keep the indexes in step).
    let manual = all.iter().find(|e| Origin::of(e) == Origin::Manual).unwrap().clone();
    let bounced = SuppressionEntry {
        reason: SuppressionReason::Bounced,
        source_email: Some(EmailId::from_u128(999)),
        ..manual.clone()
    };
    s.suppression_add(&a, bounced.clone()).await.unwrap();
    let gone = all.iter().find(|e| Origin::of(e) == Origin::Complaint).unwrap().clone();
    assert!(s.suppression_remove(&a, &gone.address, t0()).await.unwrap());
    let mail = new_email("a", t0(), 77, None);
    s.insert_emails(&a, vec![mail.clone()], None).await.unwrap();
    let complained = SuppressionEntry {
        address: "late@example.com".into(),
        reason: SuppressionReason::Complained,
        source_email: Some(mail.id),
        created_at: t0(),
    };
    s.append_events(mail.id, vec![], vec![complained.clone()]).await.unwrap();
    let all = s.suppression_list(&a).await.unwrap();
    let of = |o: Origin| PageQuery { limit: 100, cursor: Cursor::Start, origin: Some(o) };
    let listed = |p: Option<crate::email::Page<SuppressionEntry>>| {
        p.unwrap().items.into_iter().map(|e| e.address).collect::<Vec<_>>()
    };
    let manuals = listed(s.suppression_page(&a, &of(Origin::Manual)).await.unwrap());
    assert!(!manuals.contains(&manual.address), "a replaced entry leaves its old origin");
    let bounces = listed(s.suppression_page(&a, &of(Origin::Bounce)).await.unwrap());
    assert!(bounces.contains(&manual.address), "and is listed under its new one");
    let complaints = listed(s.suppression_page(&a, &of(Origin::Complaint)).await.unwrap());
    assert!(!complaints.contains(&gone.address) && complaints.contains(&complained.address));
    assert_eq!(s.suppression_by_id(&a, &id(&a, &gone.address)).await.unwrap(), None, "a removed entry's id");
    assert_eq!(s.suppression_by_id(&a, &id(&a, &complained.address)).await.unwrap(), Some(complained));
    assert_eq!(s.suppression_by_id(&a, &id(&a, &manual.address)).await.unwrap(), Some(bounced));
    // Every page, by every origin and from every cursor, is still the list's own.
    for at in 0..all.len() {
        for origin in [None, Some(Origin::Bounce), Some(Origin::Complaint), Some(Origin::Manual)] {
            let cursor_id = id(&a, &all[at].address);
            for cursor in [Cursor::After(cursor_id.clone()), Cursor::Before(cursor_id)] {
                let q = PageQuery { limit: 3, cursor, origin };
                let want = page(&a, all.iter().cloned().map(Ok), &q).unwrap();
                assert_eq!(s.suppression_page(&a, &q).await.unwrap(), want, "{q:?}");
            }
        }
    }
    let removed_cursor = PageQuery { limit: 5, cursor: Cursor::After(id(&a, &gone.address)), origin: None };
    assert_eq!(s.suppression_page(&a, &removed_cursor).await.unwrap(), None, "a removed entry's id is no cursor");
}

pub async fn next_due_is_the_earliest(s: Arc<dyn Storage>) {
    let a = acct("a");
    assert_eq!(s.next_due().await.unwrap(), None);
    let later = t0() + CDuration::hours(2);
    let sooner = t0() + CDuration::minutes(5);
    s.insert_emails(&a, vec![new_email("a", t0(), 1, Some(later)), new_email("a", t0(), 2, Some(sooner))], None)
        .await
        .unwrap();
    assert_eq!(s.next_due().await.unwrap(), Some(sooner));
}

pub async fn concurrent_claims_are_exclusive(s: Arc<dyn Storage>) {
    let a = acct("a");
    let emails: Vec<NewEmail> = (0..60).map(|i| new_email("a", t0(), i, None)).collect();
    s.insert_emails(&a, emails, None).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let c = s.claim_due(t0(), 7, LEASE).await.unwrap();
                if c.is_empty() {
                    return mine;
                }
                mine.extend(c.into_iter().map(|c| ClaimRef { id: c.record.state.id, token: c.token }));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let mut ids: Vec<EmailId> = all.iter().map(|c| c.id).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!((n, ids.len()), (60, 60), "every email claimed exactly once");
}

pub async fn retention_prunes_bodies_and_old_events_of_finished_emails(s: Arc<dyn Storage>) {
    let a = acct("a");
    let mut old_done = new_email("a", t0(), 1, None);
    old_done.content.attachments.push(crate::email::Attachment {
        id: uuid::Uuid::nil(),
        filename: Some("a.bin".into()),
        content_type: "application/octet-stream".into(),
        content_id: None,
        content: vec![1; 1000],
    });
    let old_pending = new_email("a", t0(), 2, Some(t0() + CDuration::days(20)));
    let old_done2 = new_email("a", t0(), 3, None);
    let recent = new_email("a", t0() + CDuration::days(10), 4, None);
    s.insert_emails(&a, vec![old_done.clone(), old_pending.clone(), old_done2.clone()], None).await.unwrap();
    s.insert_emails(&a, vec![recent.clone()], None).await.unwrap();
    // Deliver the two old ones now, the recent one later.
    let finish = |c: &crate::ports::ClaimedEmail, at| Outcome {
        claim: c.claim_ref(),
        events: vec![Event::new(EventKind::Sent, at), Event::new(EventKind::Delivered, at)],
        suppressions: vec![],
        next: Next::Done,
    };
    let claimed = s.claim_due(t0(), 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 2);
    s.record_outcomes(claimed.iter().map(|c| finish(c, t0())).collect()).await.unwrap();
    let later = t0() + CDuration::days(10);
    let claimed = s.claim_due(later, 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
    s.record_outcomes(claimed.iter().map(|c| finish(c, later)).collect()).await.unwrap();

    let cutoff = t0() + CDuration::days(5);
    let now = t0() + CDuration::days(12);
    assert_eq!(s.prune(cutoff, now, 1).await.unwrap(), 1, "the limit bounds one call");
    assert_eq!(s.prune(cutoff, now, 100).await.unwrap(), 1);
    assert_eq!(s.prune(cutoff, now, 100).await.unwrap(), 0, "nothing is pruned twice");

    let r = s.get_email(&a, old_done.id).await.unwrap().unwrap();
    assert_eq!((r.content.html.as_deref(), r.content.text.as_deref()), (None, None));
    assert!(r.content.attachments.is_empty());
    assert_eq!(r.content.subject, old_done.content.subject, "metadata stays");
    assert_eq!(r.content.to, old_done.content.to);
    assert_eq!(r.content.tags, old_done.content.tags);
    assert_eq!(r.state.last_event(), Some(EventKind::Delivered), "last_event stays true");
    assert_eq!(r.state.events.len(), 1, "older events are gone");
    assert_eq!(r.state.pruned_at, Some(now));
    let untouched = s.get_email(&a, old_pending.id).await.unwrap().unwrap();
    assert_eq!(untouched.content, old_pending.content, "an email still due is kept whole");
    let r = s.get_email(&a, recent.id).await.unwrap().unwrap();
    assert_eq!(r.content, recent.content, "a recent email is kept whole");
    assert_eq!(r.state.events.len(), 3);
    let listed = s.list_emails(&a, PageRequest { limit: 10, cursor: Cursor::Start }).await.unwrap();
    assert_eq!(listed.items.len(), 4, "ids stay listed");
}

pub async fn reschedule_moves_the_due_time_only_while_scheduled(s: Arc<dyn Storage>) {
    let a = acct("a");
    let e = new_email("a", t0(), 1, Some(t0() + CDuration::hours(5)));
    s.insert_emails(&a, vec![e.clone()], None).await.unwrap();
    let sooner = t0() + CDuration::minutes(10);
    assert_eq!(s.change_schedule(&a, e.id, ScheduleOp::MoveTo(sooner)).await.unwrap(), ScheduleChange::Applied);
    assert_eq!(s.next_due().await.unwrap(), Some(sooner));
    let r = s.get_email(&a, e.id).await.unwrap().unwrap();
    assert_eq!((r.state.scheduled_at, r.state.last_event()), (Some(sooner), Some(EventKind::Scheduled)));
    assert!(s.claim_due(sooner - CDuration::seconds(1), 10, LEASE).await.unwrap().is_empty());
    assert_eq!(
        s.change_schedule(&acct("b"), e.id, ScheduleOp::MoveTo(sooner)).await.unwrap(),
        ScheduleChange::NotFound,
        "scoped to the account"
    );
    assert_eq!(s.change_schedule(&a, id_at(1, 1), ScheduleOp::MoveTo(sooner)).await.unwrap(), ScheduleChange::NotFound);
    // Claimed: it is queued now and can no longer be moved.
    assert_eq!(s.claim_due(sooner, 10, LEASE).await.unwrap().len(), 1);
    assert_eq!(
        s.change_schedule(&a, e.id, ScheduleOp::MoveTo(t0() + CDuration::days(1))).await.unwrap(),
        ScheduleChange::NotScheduled(Some(EventKind::Queued))
    );
    let q = new_email("a", t0(), 2, None);
    s.insert_emails(&a, vec![q.clone()], None).await.unwrap();
    assert_eq!(
        s.change_schedule(&a, q.id, ScheduleOp::MoveTo(sooner)).await.unwrap(),
        ScheduleChange::NotScheduled(Some(EventKind::Queued)),
        "an email sent at once was never scheduled"
    );
}

pub async fn cancel_is_final_and_never_claimed(s: Arc<dyn Storage>) {
    let a = acct("a");
    let at = t0() + CDuration::hours(1);
    let e = new_email("a", t0(), 1, Some(at));
    s.insert_emails(&a, vec![e.clone()], None).await.unwrap();
    assert_eq!(s.change_schedule(&a, e.id, ScheduleOp::Cancel(t0())).await.unwrap(), ScheduleChange::Applied);
    let r = s.get_email(&a, e.id).await.unwrap().unwrap();
    assert_eq!(r.state.events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Scheduled, EventKind::Canceled]);
    assert_eq!(r.state.due_at, None);
    assert!(s.claim_due(at + CDuration::days(1), 10, LEASE).await.unwrap().is_empty(), "never claimed");
    assert_eq!(s.next_due().await.unwrap(), None);
    assert_eq!(
        s.change_schedule(&a, e.id, ScheduleOp::Cancel(t0())).await.unwrap(),
        ScheduleChange::NotScheduled(Some(EventKind::Canceled))
    );
    assert_eq!(
        s.change_schedule(&a, e.id, ScheduleOp::MoveTo(at)).await.unwrap(),
        ScheduleChange::NotScheduled(Some(EventKind::Canceled)),
        "a canceled email can never be rescheduled"
    );
    assert_eq!(s.change_schedule(&acct("b"), e.id, ScheduleOp::Cancel(t0())).await.unwrap(), ScheduleChange::NotFound);
}

pub async fn cancel_races_claim_correctly(s: Arc<dyn Storage>) {
    let a = acct("a");
    let at = t0() + CDuration::minutes(1);
    let emails: Vec<NewEmail> = (0..40).map(|i| new_email("a", t0(), i, Some(at))).collect();
    s.insert_emails(&a, emails.clone(), None).await.unwrap();
    let claimer = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..20 {
                got.extend(s.claim_due(at, 3, LEASE).await.unwrap().into_iter().map(|c| c.record.state.id));
            }
            got
        })
    };
    let mut canceled = Vec::new();
    for e in &emails {
        if s.change_schedule(&a, e.id, ScheduleOp::Cancel(at)).await.unwrap() == ScheduleChange::Applied {
            canceled.push(e.id);
        }
    }
    let claimed = claimer.await.unwrap();
    for id in &canceled {
        assert!(!claimed.contains(id), "{id} was both canceled and claimed");
    }
    assert_eq!(canceled.len() + claimed.len(), 40, "each email was either canceled or claimed");
}

/// The API-key extension: insert (idempotent by token hash), lookup with account, list per
/// account, revoke (idempotent, account-scoped), rename, and the record of a use (only ever
/// later). Every store that offers it runs this.
pub async fn api_keys_conformance(s: Arc<dyn crate::ports::ApiKeyStore>) {
    use crate::ports::{ApiKeyRecord, KeyPermission};
    let key = |id: &str, n: u8, at: i64| {
        let permission = if n.is_multiple_of(2) {
            KeyPermission::FullAccess
        } else {
            KeyPermission::SendingAccess { domain: Some("acme.test".into()) }
        };
        ApiKeyRecord::new(id, format!("key {id}"), [n; 32], permission, t0() + CDuration::seconds(at))
    };
    s.key_insert(&acct("a"), key("k1", 1, 0)).await.unwrap();
    s.key_insert(&acct("a"), key("k2", 2, 1)).await.unwrap();
    s.key_insert(&acct("b"), key("k3", 3, 2)).await.unwrap();
    // The same token again changes nothing.
    let mut again = key("other", 1, 9);
    again.name = "renamed".into();
    s.key_insert(&acct("b"), again).await.unwrap();
    let (account, found) = s.key_by_hash(&[1; 32]).await.unwrap().unwrap();
    assert_eq!((account, found), (acct("a"), key("k1", 1, 0)));
    assert!(s.key_by_hash(&[9; 32]).await.unwrap().is_none());
    let ids: Vec<String> = s.key_list(&acct("a")).await.unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(ids, ["k1", "k2"]);
    // Revoking is per account, and the first revocation time stands.
    assert!(!s.key_revoke(&acct("b"), "k1", t0()).await.unwrap());
    assert!(s.key_revoke(&acct("a"), "k1", t0() + CDuration::seconds(5)).await.unwrap());
    assert!(s.key_revoke(&acct("a"), "k1", t0() + CDuration::seconds(50)).await.unwrap());
    let (_, revoked) = s.key_by_hash(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(t0() + CDuration::seconds(5)));
    // Put replaces by token hash (a managed key brought up to date and active again), and the
    // replaced fields, the managed flag included, survive a read.
    let mut managed = revoked.clone();
    managed.name = "from the configuration".into();
    managed.revoked_at = None;
    managed.managed = true;
    s.key_put(&acct("a"), managed.clone()).await.unwrap();
    assert_eq!(s.key_by_hash(&[1; 32]).await.unwrap(), Some((acct("a"), managed.clone())));
    assert_eq!(s.key_by_id(&acct("a"), "k1").await.unwrap(), Some(managed));
    assert_eq!(s.key_by_id(&acct("b"), "k1").await.unwrap(), None, "another account's key");
    assert_eq!(s.key_by_id(&acct("a"), "k9").await.unwrap(), None);
    // Only a revoked key is removed, and only by its own account.
    assert!(!s.key_remove_revoked(&acct("a"), "k1").await.unwrap(), "k1 is active again");
    let gone = key("k5", 5, 4);
    s.key_insert(&acct("a"), gone.clone()).await.unwrap();
    assert!(s.key_revoke(&acct("a"), "k5", t0()).await.unwrap());
    assert!(!s.key_remove_revoked(&acct("b"), "k5").await.unwrap());
    assert!(s.key_remove_revoked(&acct("a"), "k5").await.unwrap());
    assert!(!s.key_remove_revoked(&acct("a"), "k5").await.unwrap());
    assert_eq!(s.key_by_hash(&gone.token_sha256).await.unwrap(), None);
    assert_eq!(s.key_by_id(&acct("a"), "k5").await.unwrap(), None);
    assert!(!s.key_list(&acct("a")).await.unwrap().iter().any(|k| k.id == "k5"));
    s.key_put(&acct("b"), key("k4", 4, 3)).await.unwrap();
    let mut all: Vec<(String, String)> =
        s.key_all().await.unwrap().into_iter().map(|(a, k)| (a.as_str().to_string(), k.id)).collect();
    all.sort();
    let want = [("a", "k1"), ("a", "k2"), ("b", "k3"), ("b", "k4")];
    assert_eq!(all, want.map(|(a, k)| (a.to_string(), k.to_string())));
    // A rename changes the name alone, of an active key of that account; what a lookup by
    // token finds has the new name. A revoked key keeps its name and stays revoked.
    assert!(s.key_rename(&acct("a"), "k2", "billing").await.unwrap());
    let (_, renamed) = s.key_by_hash(&[2; 32]).await.unwrap().unwrap();
    assert_eq!(renamed, ApiKeyRecord { name: "billing".into(), ..key("k2", 2, 1) });
    assert!(!s.key_rename(&acct("b"), "k2", "theirs").await.unwrap(), "another account's key");
    assert!(!s.key_rename(&acct("a"), "nope", "x").await.unwrap());
    assert!(s.key_revoke(&acct("a"), "k2", t0()).await.unwrap());
    assert!(!s.key_rename(&acct("a"), "k2", "after").await.unwrap(), "a revoked key is not renamed");
    let (_, after) = s.key_by_hash(&[2; 32]).await.unwrap().unwrap();
    assert_eq!((after.name.as_str(), after.revoked_at), ("billing", Some(t0())));
    // A use is recorded on the key of that account alone, and what every lookup finds has it;
    // an earlier use never replaces a later one, and a revoked key records none.
    let used = t0() + chrono::Duration::seconds(90);
    assert!(s.key_touch(&acct("b"), "k3", used).await.unwrap());
    assert!(!s.key_touch(&acct("a"), "k3", used).await.unwrap(), "another account's key");
    let (_, k3) = s.key_by_hash(&key("k3", 3, 2).token_sha256).await.unwrap().unwrap();
    assert_eq!(k3, ApiKeyRecord { last_used_at: Some(used), ..key("k3", 3, 2) });
    assert_eq!(s.key_by_id(&acct("b"), "k3").await.unwrap().and_then(|k| k.last_used_at), Some(used));
    assert!(s.key_list(&acct("b")).await.unwrap().iter().any(|k| k.id == "k3" && k.last_used_at == Some(used)));
    assert!(!s.key_touch(&acct("b"), "k3", t0()).await.unwrap(), "an earlier use");
    assert_eq!(s.key_by_id(&acct("b"), "k3").await.unwrap().and_then(|k| k.last_used_at), Some(used));
    assert!(!s.key_touch(&acct("a"), "k2", used).await.unwrap(), "a revoked key");
    assert!(!s.key_touch(&acct("a"), "nope", used).await.unwrap());
    // The other fields stay as they were: a rename after a use keeps the use.
    assert!(s.key_rename(&acct("b"), "k3", "ops").await.unwrap());
    let (_, k3) = s.key_by_hash(&key("k3", 3, 2).token_sha256).await.unwrap().unwrap();
    assert_eq!((k3.name.as_str(), k3.last_used_at), ("ops", Some(used)));
}

/// A plain successful `GET /emails` logged at `at` (tests of retention and backups).
pub fn request_log(at: DateTime<Utc>) -> crate::ports::RequestLog {
    crate::ports::RequestLog {
        id: crate::ports::RequestLog::id_at(at),
        at,
        method: "GET".into(),
        endpoint: "/emails".into(),
        status: 200,
        user_agent: None,
        api_key_id: None,
        request_body: None,
        response_body: None,
        duration_ms: 1,
    }
}

/// The request-log extension: newest first, filters, cursor pages, accounts kept apart.
pub async fn request_logs_conformance(s: Arc<dyn crate::ports::RequestLogStore>) {
    use crate::ports::{LogFilter, RequestLog};
    let log = |n: u16, status: u16, ua: &str| RequestLog {
        id: crate::ports::RequestLog::id_at(t0() + CDuration::seconds(i64::from(n))),
        at: t0() + CDuration::seconds(i64::from(n)),
        method: "POST".into(),
        endpoint: if n.is_multiple_of(3) { "/emails/batch".into() } else { "/emails".into() },
        status,
        user_agent: Some(ua.into()),
        api_key_id: Some(format!("key{}", n % 2)),
        request_body: Some(format!("{{\"subject\":\"number {n}\"}}")),
        response_body: None,
        duration_ms: 3,
    };
    // One at a time, then the rest in one call (as the HTTP layer hands them over), another
    // account's among them.
    let numbered = |n: u16| {
        let status = if n.is_multiple_of(5) { 422 } else { 200 };
        let ua = if n.is_multiple_of(4) { "resend-python:2.51.0" } else { "resend-node:6.38.0" };
        log(n, status, ua)
    };
    for n in 1..=10u16 {
        s.log_append(&acct("a"), numbered(n)).await.unwrap();
    }
    let mut many: Vec<_> = (11..=30u16).map(|n| (acct("a"), numbered(n))).collect();
    many.insert(7, (acct("b"), log(31, 200, "curl/8")));
    s.log_append_many(many).await.unwrap();
    s.log_append_many(Vec::new()).await.unwrap();
    let ids = |v: &[RequestLog]| v.iter().map(|l| (l.at - t0()).num_seconds()).collect::<Vec<_>>();
    // Newest first, in pages.
    let (p1, more) = s.log_page(&acct("a"), &LogFilter::default(), None, 4).await.unwrap();
    assert_eq!((ids(&p1), more), (vec![30, 29, 28, 27], true));
    let (p2, _) = s.log_page(&acct("a"), &LogFilter::default(), Some(p1[3].id), 2).await.unwrap();
    assert_eq!(ids(&p2), [26, 25]);
    // Errors only; specific statuses; the user agent; a key; a search; a date range.
    let errors = LogFilter { success: Some(false), ..Default::default() };
    assert_eq!(ids(&s.log_page(&acct("a"), &errors, None, 100).await.unwrap().0), [30, 25, 20, 15, 10, 5]);
    let f = LogFilter { statuses: vec![422], user_agent: Some("PYTHON".into()), ..Default::default() };
    assert_eq!(ids(&s.log_page(&acct("a"), &f, None, 100).await.unwrap().0), [20]);
    let f = LogFilter { api_key_id: Some("key1".into()), search: Some("batch".into()), ..Default::default() };
    assert_eq!(ids(&s.log_page(&acct("a"), &f, None, 100).await.unwrap().0), [27, 21, 15, 9, 3]);
    let f = LogFilter { search: Some("number 7\"".into()), ..Default::default() };
    assert_eq!(ids(&s.log_page(&acct("a"), &f, None, 100).await.unwrap().0), [7]);
    let f = LogFilter {
        from: Some(t0() + CDuration::seconds(10)),
        to: Some(t0() + CDuration::seconds(12)),
        ..Default::default()
    };
    assert_eq!(ids(&s.log_page(&acct("a"), &f, None, 100).await.unwrap().0), [12, 11, 10]);
    let (last, more) = s.log_page(&acct("a"), &errors, None, 6).await.unwrap();
    assert_eq!((last.len(), more), (6, false));
    // The page just newer than a log (the API's `before` cursor), nearest to it, newest first.
    let all = LogFilter::default();
    let (up, more) = s.log_page_newer(&acct("a"), &all, p1[3].id, 2).await.unwrap();
    assert_eq!((ids(&up), more), (vec![29, 28], true));
    let (up, more) = s.log_page_newer(&acct("a"), &all, p1[1].id, 5).await.unwrap();
    assert_eq!((ids(&up), more), (vec![30], false));
    let (up, more) = s.log_page_newer(&acct("a"), &errors, p2[1].id, 1).await.unwrap();
    assert_eq!((ids(&up), more), (vec![30], false), "errors only: 25 is the cursor, 30 the one above");
    let (up, more) = s.log_page_newer(&acct("a"), &errors, 0, 2).await.unwrap();
    assert_eq!((ids(&up), more), (vec![10, 5], true));
    assert!(s.log_page_newer(&acct("a"), &all, u128::MAX, 3).await.unwrap().0.is_empty());
    // One log by id; none under another account or for an id never given.
    assert_eq!(s.log_get(&acct("a"), p2[0].id).await.unwrap().map(|l| l.id), Some(p2[0].id));
    assert_eq!(s.log_get(&acct("b"), p2[0].id).await.unwrap(), None);
    assert_eq!(s.log_get(&acct("a"), p2[0].id + 1).await.unwrap(), None);
    assert_eq!(s.log_get(&acct("a"), u128::MAX).await.unwrap(), None);
    // Another account's logs stay apart.
    assert_eq!(ids(&s.log_page(&acct("b"), &LogFilter::default(), None, 100).await.unwrap().0), [31]);
    // Retention removes the oldest first, across accounts, in steps of `limit`.
    assert_eq!(s.log_prune(t0() + CDuration::seconds(8), 5).await.unwrap(), 5);
    assert_eq!(s.log_prune(t0() + CDuration::seconds(8), 5).await.unwrap(), 2);
    assert_eq!(s.log_prune(t0() + CDuration::seconds(8), 5).await.unwrap(), 0);
    let left = s.log_page(&acct("a"), &LogFilter::default(), None, 100).await.unwrap().0;
    assert_eq!(ids(&left).last(), Some(&8), "logs from 8 s on are kept");
    assert_eq!(s.log_prune(t0() + CDuration::seconds(40), 100).await.unwrap(), 24);
    assert!(s.log_page(&acct("b"), &LogFilter::default(), None, 100).await.unwrap().0.is_empty());
}

/// The domain extension: compare-and-set puts (a stale version or a second creation of a name
/// is refused), get by name and by id, list per account, delete, the due index in time order,
/// and every write's change in the event log with the keys left out.
/// Received mail: kept with its raw bytes per account, listed newest first by cursor, scoped
/// to the account, announced as `email.received` in the same write.
pub async fn received_conformance(s: Arc<dyn Storage>) {
    use crate::email::Cursor;
    use crate::receiving::{Arrival, summarize};
    let store = s.received().expect("the store keeps received mail");
    let (a, b) = (acct("a"), acct("b"));
    let raw = b"From: x@sender.test\r\nTo: y@in.test\r\nSubject: S\r\n\r\nHi\r\n".to_vec();
    let mail = |n: u128| summarize(EmailId::from_u128(n), &raw, Arrival::default(), None, t0());
    for n in 1..=5u128 {
        store.received_put(vec![(a.clone(), mail(n))], raw.clone()).await.unwrap();
    }
    store.received_put(vec![(a.clone(), mail(6)), (b.clone(), mail(7))], raw.clone()).await.unwrap();
    assert_eq!(store.received_get(&a, EmailId::from_u128(6)).await.unwrap(), Some(mail(6)));
    assert_eq!(store.received_get(&b, EmailId::from_u128(6)).await.unwrap(), None, "scoped to the account");
    assert_eq!(store.received_raw(&b, EmailId::from_u128(7)).await.unwrap(), Some(raw.clone()));
    assert_eq!(store.received_raw(&a, EmailId::from_u128(7)).await.unwrap(), None);
    let ids = |p: &crate::email::Page<crate::receiving::ReceivedEmail>| {
        p.items.iter().map(|e| e.id.as_u128()).collect::<Vec<_>>()
    };
    let first = store.received_page(&a, PageRequest { limit: 4, cursor: Cursor::Start }).await.unwrap();
    assert_eq!((ids(&first), first.has_more), (vec![6, 5, 4, 3], true));
    let next =
        store.received_page(&a, PageRequest { limit: 4, cursor: Cursor::After(EmailId::from_u128(3)) }).await.unwrap();
    assert_eq!((ids(&next), next.has_more), (vec![2, 1], false));
    let back =
        store.received_page(&a, PageRequest { limit: 2, cursor: Cursor::Before(EmailId::from_u128(2)) }).await.unwrap();
    assert_eq!((ids(&back), back.has_more), (vec![4, 3], true));
    if let Some(log) = s.event_log() {
        let got: Vec<u128> = log
            .events_after(&a, 0, 100)
            .await
            .unwrap()
            .iter()
            .filter_map(|e| match &e.subject {
                crate::events::Subject::Received(r) => Some(r.id.as_u128()),
                _ => None,
            })
            .collect();
        assert_eq!(got, [1, 2, 3, 4, 5, 6], "each kept message is announced once, in order");
    }
}

pub async fn domains_conformance(s: Arc<dyn Storage>) {
    use crate::domains::{DkimAlgorithm, DkimKeyPair, Domain, DomainConfig};
    use crate::events::{DomainEvent, Subject};
    let store = s.domains().expect("the store keeps domains");
    let key = DkimKeyPair {
        algorithm: DkimAlgorithm::Ed25519,
        private_pem: "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n".into(),
        record: "v=DKIM1; k=ed25519; p=AAAA".into(),
    };
    let config = DomainConfig::default();
    let d = |id: &str, name: &str| Domain::new(id.into(), name.into(), key.clone(), &config, t0());
    let (a, b) = (acct("a"), acct("b"));
    let at = |secs: i64| t0() + CDuration::seconds(secs);

    assert!(store.domain_put(&a, d("1", "mail.acme.test"), Some((DomainEvent::Created, at(1)))).await.unwrap());
    assert!(store.domain_put(&a, d("2", "acme.test"), Some((DomainEvent::Created, at(2)))).await.unwrap());
    assert!(store.domain_put(&b, d("3", "acme.test"), Some((DomainEvent::Created, at(3)))).await.unwrap());
    assert!(
        !store.domain_put(&a, d("4", "acme.test"), Some((DomainEvent::Created, at(4)))).await.unwrap(),
        "a name is created once per account"
    );
    let mut owners: Vec<(AccountId, String)> =
        store.domain_owners("acme.test").await.unwrap().into_iter().map(|(a, d)| (a, d.id)).collect();
    owners.sort();
    assert_eq!(owners, [(acct("a"), "2".to_string()), (acct("b"), "3".to_string())], "every account's domain");
    assert!(store.domain_owners("other.test").await.unwrap().is_empty());

    let mut changed = store.domain_get(&a, "mail.acme.test").await.unwrap().unwrap();
    changed.click_tracking = true;
    changed.version = 2;
    changed.next_check = Some(at(50));
    assert!(store.domain_put(&a, changed.clone(), Some((DomainEvent::Updated, at(5)))).await.unwrap());
    let mut stale = changed.clone();
    stale.open_tracking = true;
    assert!(!store.domain_put(&a, stale, None).await.unwrap(), "a write over a version it did not read is refused");
    assert_eq!(store.domain_get(&a, "mail.acme.test").await.unwrap(), Some(changed.clone()));
    assert_eq!(store.domain_by_id(&a, "1").await.unwrap(), Some(changed.clone()));
    assert_eq!(store.domain_by_id(&b, "1").await.unwrap(), None, "ids are per account");
    assert_eq!(store.domain_get(&b, "mail.acme.test").await.unwrap(), None);
    let names: Vec<String> = store.domain_list(&a).await.unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["acme.test", "mail.acme.test"]);

    // Due in time order, across accounts; a check moved later leaves its old place.
    let mut other = store.domain_get(&b, "acme.test").await.unwrap().unwrap();
    other.version = 2;
    other.next_check = Some(at(20));
    assert!(store.domain_put(&b, other.clone(), None).await.unwrap());
    let due = |now: i64| {
        let store = Arc::clone(&s);
        async move {
            let store = store.domains().unwrap();
            store.domains_due(at(now), 10).await.unwrap().into_iter().map(|(a, d)| (a, d.id)).collect::<Vec<_>>()
        }
    };
    assert_eq!(due(19).await, vec![]);
    assert_eq!(due(60).await, vec![(b.clone(), "3".to_string()), (a.clone(), "1".to_string())]);
    other.version = 3;
    other.next_check = Some(at(100));
    assert!(store.domain_put(&b, other, None).await.unwrap());
    assert_eq!(due(60).await, vec![(a.clone(), "1".to_string())]);

    assert!(store.domain_delete(&a, "mail.acme.test", at(6)).await.unwrap());
    assert!(!store.domain_delete(&a, "mail.acme.test", at(7)).await.unwrap());
    assert_eq!(store.domain_by_id(&a, "1").await.unwrap(), None);
    assert_eq!(due(60).await, vec![], "a removed domain is never due");

    if let Some(log) = s.event_log() {
        let entries = log.events_after(&a, 0, 100).await.unwrap();
        let seen: Vec<(&str, &str, i64)> = entries
            .iter()
            .filter_map(|e| match &e.subject {
                Subject::Domain { domain, .. } => {
                    assert!(domain.keys.is_empty(), "the log never holds a private key");
                    Some((e.type_name(), domain.name.as_str(), (e.at - t0()).num_seconds()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("domain.created", "mail.acme.test", 1),
                ("domain.created", "acme.test", 2),
                ("domain.updated", "mail.acme.test", 5),
                ("domain.deleted", "mail.acme.test", 6),
            ]
        );
    }
}

/// The webhook store: endpoints, fan-out that moves the cursor once, due messages in time
/// order, pages newest first, deletion taking the messages along.
pub async fn webhooks_conformance(s: Arc<dyn Storage>) {
    use crate::webhooks::{AttemptResult, Health, Message, MessageStatus, Webhook};
    let hooks = s.webhooks().expect("the store keeps webhooks");
    let a = acct("a");
    let hook = |id: &str| Webhook {
        id: id.into(),
        endpoint: "https://x.example/".into(),
        events: vec!["email.sent".into()],
        enabled: true,
        created_at: t0(),
        secret: "whsec_AAAA".into(),
        previous_secret: None,
        cursor: 0,
        health: Health::default(),
    };
    let msg = |h: &str, seq: u64, due: i64| Message {
        account: a.clone(),
        webhook_id: h.into(),
        seq,
        id: crate::webhooks::message_id(h, seq),
        event_type: "email.sent".into(),
        created_at: t0(),
        payload: format!("{{\"n\":{seq}}}"),
        status: MessageStatus::Pending,
        failures: 0,
        next_attempt_at: Some(t0() + CDuration::seconds(due)),
        replay_at: None,
        attempts: vec![],
    };
    hooks.webhook_put(&a, hook("h1")).await.unwrap();
    hooks.webhook_put(&acct("b"), hook("h2")).await.unwrap();
    assert_eq!(hooks.webhook_get(&a, "h1").await.unwrap().unwrap().endpoint, "https://x.example/");
    assert!(hooks.webhook_get(&a, "h2").await.unwrap().is_none(), "another account's endpoint");
    assert_eq!(hooks.webhook_all().await.unwrap().len(), 2);

    // Fan-out moves the cursor from where it is, once.
    assert!(hooks.messages_enqueue(&a, "h1", 0, 5, vec![msg("h1", 2, 10), msg("h1", 5, 0)]).await.unwrap());
    assert!(!hooks.messages_enqueue(&a, "h1", 0, 5, vec![msg("h1", 3, 0)]).await.unwrap(), "stale cursor");
    assert!(hooks.message_get(&a, "h1", 3).await.unwrap().is_none(), "a refused fan-out wrote nothing");
    assert_eq!(hooks.webhook_get(&a, "h1").await.unwrap().unwrap().cursor, 5);
    assert!(!hooks.messages_enqueue(&a, "nope", 0, 1, vec![]).await.unwrap());

    // Due in time order, only when due.
    let due = |n: i64| {
        let hooks = s.webhooks().unwrap();
        async move { hooks.messages_due(t0() + CDuration::seconds(n), 10).await.unwrap() }
    };
    assert_eq!(due(0).await.iter().map(|m| m.seq).collect::<Vec<_>>(), [5]);
    assert_eq!(due(10).await.iter().map(|m| m.seq).collect::<Vec<_>>(), [5, 2]);

    // An attempt's result: the message moves, the endpoint's health follows.
    let mut m = hooks.message_get(&a, "h1", 5).await.unwrap().unwrap();
    m.status = MessageStatus::Attempting;
    m.next_attempt_at = Some(t0() + CDuration::seconds(100));
    assert!(hooks.message_put(m.clone(), Some((AttemptResult::Failed, t0()))).await.unwrap());
    assert_eq!(due(10).await.iter().map(|m| m.seq).collect::<Vec<_>>(), [2]);
    assert_eq!(hooks.message_get(&a, "h1", 5).await.unwrap().unwrap(), m);
    let h = hooks.webhook_get(&a, "h1").await.unwrap().unwrap();
    assert_eq!(h.health.failing_since, Some(t0()));
    hooks.message_put(m.clone(), Some((AttemptResult::Failed, t0() + CDuration::days(6)))).await.unwrap();
    assert!(!hooks.webhook_get(&a, "h1").await.unwrap().unwrap().enabled, "five days failing disables");
    assert!(hooks.message_get(&acct("b"), "h1", 5).await.unwrap().is_none(), "another account's message");

    // Pages: newest first.
    let (page, more) = hooks.message_page(&a, "h1", None, 1).await.unwrap();
    assert_eq!((page.iter().map(|m| m.seq).collect::<Vec<_>>(), more), (vec![5], true));
    let (page, more) = hooks.message_page(&a, "h1", Some(5), 1).await.unwrap();
    assert_eq!((page.iter().map(|m| m.seq).collect::<Vec<_>>(), more), (vec![2], false));

    // Retention: finished messages of old events go; one still due stays.
    let (before, _) = hooks.message_page(&a, "h1", None, 10).await.unwrap();
    assert_eq!(before.len(), 2);
    let mut done = hooks.message_get(&a, "h1", 2).await.unwrap().unwrap();
    done.status = MessageStatus::Success;
    done.next_attempt_at = None;
    hooks.message_put(done, None).await.unwrap();
    assert_eq!(hooks.messages_prune(t0(), 10).await.unwrap(), 0, "nothing before the cutoff");
    assert_eq!(hooks.messages_prune(t0() + CDuration::seconds(1), 10).await.unwrap(), 1);
    let (after, _) = hooks.message_page(&a, "h1", None, 10).await.unwrap();
    assert_eq!(after.iter().map(|m| m.seq).collect::<Vec<_>>(), [5], "the due one stays");

    // Deleting the endpoint takes its messages and their due times along.
    assert!(hooks.webhook_delete(&a, "h1").await.unwrap());
    assert!(!hooks.webhook_delete(&a, "h1").await.unwrap());
    assert!(due(1000).await.is_empty());
    assert!(!hooks.message_put(m, None).await.unwrap(), "a message of a deleted endpoint");
}

/// The event log's reading and retention (what it holds is the model test's business).
pub async fn event_log_conformance(s: Arc<dyn Storage>) {
    use futures::StreamExt;
    let log = s.event_log().expect("the store keeps an event log");
    assert_eq!(log.events_head().await.unwrap(), 0);
    let a = new_email("a", t0(), 1, None);
    let b = new_email("b", t0() + CDuration::hours(2), 2, None);
    s.insert_emails(&acct("a"), vec![a.clone()], None).await.unwrap();
    s.insert_emails(&acct("b"), vec![b.clone()], None).await.unwrap();
    let entry = SuppressionEntry {
        address: "x@example.com".into(),
        reason: SuppressionReason::Bounced,
        source_email: None,
        created_at: t0() + CDuration::hours(3),
    };
    s.suppression_add(&acct("a"), entry.clone()).await.unwrap();
    s.suppression_add(&acct("a"), entry).await.unwrap();
    assert_eq!(log.events_head().await.unwrap(), 3, "a second add of a listed address logs nothing");
    let mine = log.events_after(&acct("a"), 0, 10).await.unwrap();
    assert_eq!(mine.iter().map(|e| e.type_name()).collect::<Vec<_>>(), ["email.queued", "suppression.added"]);
    assert_eq!(mine[0].email_id(), Some(a.id));
    assert!(log.events_after(&acct("a"), u64::MAX, 10).await.unwrap().is_empty());
    // Retention: entries older than the cutoff go, any account, up to the limit.
    assert_eq!(log.events_prune(t0() + CDuration::hours(2) + CDuration::minutes(30), 10).await.unwrap(), 2);
    let left: Vec<u64> = [acct("a"), acct("b")]
        .iter()
        .map(|x| {
            let log = s.event_log().unwrap();
            let x = x.clone();
            async move { log.events_after(&x, 0, 10).await.unwrap().len() as u64 }
        })
        .collect::<futures::stream::FuturesOrdered<_>>()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(left, [1, 0]);
    assert_eq!(log.events_head().await.unwrap(), 3, "numbers are never reused");
}
