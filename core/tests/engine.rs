//! The engine end to end on the in-memory store: send, batch, idempotency, the worker, the
//! sandbox's test addresses and the suppression list.
#![allow(clippy::unwrap_used, clippy::panic)]

use async_trait::async_trait;
use chrono::{DateTime, Duration as CDuration, Utc};
use mailroom_core::bounce::{BounceType, SmtpReply, Stage};
use mailroom_core::email::{EmailId, PageRequest};
use mailroom_core::engine::runs_to_its_end;
use mailroom_core::error::{Error, ErrorName, Rule};
use mailroom_core::lifecycle::EventKind;
use mailroom_core::memory::MemoryStorage;
use mailroom_core::ports::{
    AttachmentLoader, DeliveryReport, Envelope, LoadError, LoadedAttachment, ManualClock, RecipientReport,
    RecipientStatus, Storage, SuppressionReason, Transport, TransportError, TransportErrorKind,
};
use mailroom_core::request::{AttachmentRequest, EmailRequest, OneOrMany, TagRequest};
use mailroom_core::sandbox::SandboxTransport;
use mailroom_core::worker::{AMBIGUOUS_REASON, InDoubt, WorkerConfig};
use mailroom_core::{BatchMode, BatchOptions, Engine, SendOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc()
}

struct Setup {
    engine: Engine,
    clock: ManualClock,
    store: Arc<MemoryStorage>,
    sandbox: SandboxTransport,
}

fn setup() -> Setup {
    let store = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(t0());
    let engine = Engine::builder(store.clone()).clock(Arc::new(clock.clone())).build();
    Setup { engine, clock, store, sandbox: SandboxTransport::default() }
}

fn email(to: &str) -> EmailRequest {
    EmailRequest {
        from: Some("Acme <onboarding@acme.test>".into()),
        to: Some(OneOrMany::One(to.into())),
        subject: Some("Hello".into()),
        html: Some("<p>Hello</p>".into()),
        ..Default::default()
    }
}

impl Setup {
    async fn work(&self) {
        self.engine.worker(Arc::new(self.sandbox.clone()), WorkerConfig::default()).run_until_idle().await.unwrap();
    }
    async fn kinds(&self, id: EmailId) -> Vec<EventKind> {
        self.engine.get_record(id).await.unwrap().state.events.iter().map(|e| e.kind).collect()
    }
    async fn count(&self) -> usize {
        self.engine.list(PageRequest::new(Some(100), None, None).unwrap()).await.unwrap().data.len()
    }
}

#[tokio::test]
async fn each_test_address_reaches_its_outcome() {
    use EventKind::*;
    let s = setup();
    let cases = [
        ("delivered@resend.dev", vec![Queued, Sent, Delivered]),
        ("delivered+label-1@resend.dev", vec![Queued, Sent, Delivered]),
        ("bounced@resend.dev", vec![Queued, Sent, Bounced]),
        ("complained+x@resend.dev", vec![Queued, Sent, Delivered, Complained]),
        ("suppressed@resend.dev", vec![Queued, Suppressed]),
        ("suppressed+y@resend.dev", vec![Queued, Suppressed]),
        ("someone@example.com", vec![Queued, Sent, Delivered]),
    ];
    let mut ids = vec![];
    for (to, _) in &cases {
        ids.push(s.engine.send(email(to), SendOptions::default()).await.unwrap().id);
    }
    s.work().await;
    for ((to, want), id) in cases.iter().zip(&ids) {
        assert_eq!(&s.kinds(*id).await, want, "{to}");
        assert_eq!(s.engine.get(*id).await.unwrap().last_event, want.last().copied());
    }
    let bounced = s.engine.get_record(ids[2]).await.unwrap();
    let b = bounced.state.events.last().unwrap();
    let info = b.bounce.as_ref().unwrap();
    assert_eq!((info.kind, format!("{:?}", info.subtype)), (BounceType::Permanent, "General".into()));
    assert_eq!(b.reply.as_ref().unwrap().code, 550);
    assert_eq!(b.reply.as_ref().unwrap().enhanced.unwrap().to_string(), "5.1.1");

    let list = s.engine.suppressions().await.unwrap();
    let listed: Vec<(&str, SuppressionReason)> = list.iter().map(|e| (e.address.as_str(), e.reason)).collect();
    assert_eq!(
        listed,
        vec![
            ("bounced@resend.dev", SuppressionReason::Bounced),
            ("complained+x@resend.dev", SuppressionReason::Complained)
        ]
    );
    assert_eq!(list[0].source_email, Some(ids[2]));
    // Only the ordinary recipient reached the outbox; test addresses never leave.
    let outbox = s.sandbox.outbox();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].envelope.to, vec!["someone@example.com".to_string()]);
}

#[tokio::test]
async fn suppressed_recipients_are_never_contacted_and_removal_is_undone_by_the_next_bounce() {
    let s = setup();
    s.engine.suppress("Listed@Example.com", SuppressionReason::Bounced).await.unwrap();
    let id = s.engine.send(email("listed@example.com"), SendOptions::default()).await.unwrap().id;
    s.work().await;
    assert_eq!(s.kinds(id).await, vec![EventKind::Queued, EventKind::Suppressed]);
    assert!(s.sandbox.outbox().is_empty(), "no server is contacted for a suppressed recipient");
    let ev = s.engine.get_record(id).await.unwrap().state.events[1].clone();
    assert_eq!(ev.reason.as_deref(), Some("previous_bounce"));

    // Mixed: the suppressed one is skipped, the other is sent.
    let mut mixed = email("listed@example.com");
    mixed.cc = Some(OneOrMany::One("fine@example.com".into()));
    let id = s.engine.send(mixed, SendOptions::default()).await.unwrap().id;
    s.work().await;
    assert_eq!(
        s.kinds(id).await,
        vec![EventKind::Queued, EventKind::Suppressed, EventKind::Sent, EventKind::Delivered]
    );
    assert_eq!(s.sandbox.outbox()[0].envelope.to, vec!["fine@example.com".to_string()]);

    // bounced@ is listed by its first bounce, yet bounces again every time (a test address
    // simulates its outcome, the list notwithstanding); removed, it is listed by the next.
    let first = s.engine.send(email("bounced@resend.dev"), SendOptions::default()).await.unwrap().id;
    s.work().await;
    assert!(s.engine.suppression("bounced@resend.dev").await.unwrap().is_some());
    let second = s.engine.send(email("bounced@resend.dev"), SendOptions::default()).await.unwrap().id;
    s.work().await;
    for id in [first, second] {
        assert_eq!(s.engine.get(id).await.unwrap().last_event, Some(EventKind::Bounced), "bounced every time");
    }
    s.engine.unsuppress("bounced@resend.dev").await.unwrap();
    assert!(s.engine.suppression("bounced@resend.dev").await.unwrap().is_none());
    assert_eq!(s.engine.unsuppress("bounced@resend.dev").await.unwrap_err().name(), ErrorName::NotFound);
    let again = s.engine.send(email("bounced@resend.dev"), SendOptions::default()).await.unwrap().id;
    s.work().await;
    assert_eq!(s.engine.get(again).await.unwrap().last_event, Some(EventKind::Bounced), "sent again after removal");
    let entry = s.engine.suppression("bounced@resend.dev").await.unwrap().unwrap();
    assert_eq!(entry.source_email, Some(again));
}

#[tokio::test]
async fn strict_batch_stores_nothing_and_names_every_bad_item() {
    let s = setup();
    let mut items: Vec<EmailRequest> = (0..10).map(|i| email(&format!("u{i}@example.com"))).collect();
    items[3].to = Some(OneOrMany::One("not-an-address".into()));
    items[7].tags = Some(vec![TagRequest { name: Some("bad tag".into()), value: Some("v".into()) }]);
    let err = s.engine.send_batch(items, BatchOptions::default()).await.unwrap_err();
    let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["emails[3].to", "emails[7].tags[0].name"]);
    assert_eq!((err.status(), err.name()), (422, ErrorName::ValidationError));
    assert!(err.to_string().contains("emails[7].tags[0].name"));
    assert_eq!(s.count().await, 0, "strict: nothing stored");
}

#[tokio::test]
async fn permissive_batch_stores_the_valid_ones_in_order() {
    let s = setup();
    let mut items: Vec<EmailRequest> = (0..5).map(|i| email(&format!("u{i}@example.com"))).collect();
    items[1].from = None;
    items[4].html = None;
    let r = s.engine.send_batch(items, BatchOptions::new(BatchMode::Permissive)).await.unwrap();
    assert_eq!(r.data.len(), 3);
    let errors = r.errors.unwrap();
    assert_eq!(errors.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 4]);
    assert!(errors[0].message.contains("Missing `from` field"));
    // Ids are in input order: the valid items were 0, 2, 3.
    for (id, want) in r.data.iter().zip(["u0@example.com", "u2@example.com", "u3@example.com"]) {
        assert_eq!(s.engine.get(id.id).await.unwrap().to, [want]);
    }
    assert!(r.data.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(s.count().await, 3);
}

#[tokio::test]
async fn batch_size_bounds_and_items_with_attachments_and_schedules() {
    let s = setup();
    let err = s.engine.send_batch(vec![], BatchOptions::default()).await.unwrap_err();
    assert_eq!(err.field_errors()[0].path, "emails");
    let many: Vec<EmailRequest> = (0..101).map(|_| email("a@example.com")).collect();
    let err = s.engine.send_batch(many, BatchOptions::default()).await.unwrap_err();
    assert_eq!(err.field_errors()[0].rule, Rule::TooMany { max: 100, got: 101 });
    let hundred: Vec<EmailRequest> = (0..100).map(|_| email("a@example.com")).collect();
    assert_eq!(s.engine.send_batch(hundred, BatchOptions::default()).await.unwrap().data.len(), 100);

    let mut a = email("a@example.com");
    a.attachments = Some(vec![AttachmentRequest {
        content: Some(mailroom_core::request::AttachmentContent::Base64("aGVsbG8=".into())),
        filename: Some("hello.txt".into()),
        ..Default::default()
    }]);
    let mut b = email("b@example.com");
    b.scheduled_at = Some("2026-06-02T09:00:00Z".into());
    let r = s.engine.send_batch(vec![a, b], BatchOptions::default()).await.unwrap();
    let rec = s.engine.get_record(r.data[0].id).await.unwrap();
    assert_eq!(rec.content.attachments[0].content, b"hello");
    assert_eq!(rec.content.attachments[0].content_type, "text/plain");
    let sched = s.engine.get(r.data[1].id).await.unwrap();
    assert_eq!(sched.last_event, Some(EventKind::Scheduled));
    assert_eq!(sched.scheduled_at.as_deref(), Some("2026-06-02T09:00:00.000Z"));
}

#[tokio::test]
async fn idempotent_replay_returns_the_first_answer_and_sends_nothing() {
    let s = setup();
    let opts = SendOptions::idempotency_key("welcome/user-42");
    let first = s.engine.send(email("delivered@resend.dev"), opts.clone()).await.unwrap();
    // Same payload, different JSON key order and whitespace: same fingerprint.
    let same: EmailRequest = serde_json::from_str(
        r#"{ "html": "<p>Hello</p>", "subject": "Hello", "to": "delivered@resend.dev", "from": "Acme <onboarding@acme.test>" }"#,
    )
    .unwrap();
    let replay = s.engine.send(same, opts.clone()).await.unwrap();
    assert_eq!(first.id, replay.id);
    assert_eq!(s.count().await, 1);
    s.work().await;
    let again = s.engine.send(email("delivered@resend.dev"), opts.clone()).await.unwrap();
    assert_eq!(again.id, first.id);
    s.work().await;
    assert_eq!(s.count().await, 1, "nothing new stored or sent");

    let mut other = email("delivered@resend.dev");
    other.subject = Some("Different".into());
    let err = s.engine.send(other, opts.clone()).await.unwrap_err();
    assert_eq!((err.status(), err.name()), (409, ErrorName::InvalidIdempotentRequest));

    // Keys are per account.
    let other_account = s.engine.with_account("team-b");
    let b = other_account.send(email("delivered@resend.dev"), opts.clone()).await.unwrap();
    assert_ne!(b.id, first.id);

    // After 24 hours the key is free, and purge drops the record.
    s.clock.advance(CDuration::hours(25));
    assert_eq!(s.engine.purge_expired().await.unwrap(), 2);
    let fresh = s.engine.send(email("delivered@resend.dev"), opts).await.unwrap();
    assert_ne!(fresh.id, first.id);

    for bad in [String::new(), "k".repeat(257)] {
        let err = s.engine.send(email("a@example.com"), SendOptions::idempotency_key(bad)).await.unwrap_err();
        assert_eq!((err.status(), err.name()), (400, ErrorName::InvalidIdempotencyKey));
    }
}

#[tokio::test]
async fn idempotent_batch_replay_and_failed_requests_free_the_key() {
    let s = setup();
    let opts = BatchOptions::new(BatchMode::Permissive).keyed(Some("batch-signup/7".into()));
    let mut items = vec![email("a@example.com"), email("b@example.com")];
    items[1].to = None;
    let first = s.engine.send_batch(items.clone(), opts.clone()).await.unwrap();
    let replay = s.engine.send_batch(items, opts.clone()).await.unwrap();
    assert_eq!(first, replay, "the original response, errors included");
    assert_eq!(s.count().await, 1);

    // A strict batch that fails validation stores nothing and does not burn its key.
    let strict = BatchOptions::new(BatchMode::Strict).keyed(Some("k2".into()));
    let bad = vec![EmailRequest::default()];
    assert!(s.engine.send_batch(bad, strict.clone()).await.is_err());
    let good = vec![email("c@example.com")];
    assert!(s.engine.send_batch(good, strict).await.is_ok());
}

/// A loader that waits until released, to hold a request in flight.
#[derive(Debug)]
struct SlowLoader(tokio::sync::Semaphore);

#[async_trait]
impl AttachmentLoader for SlowLoader {
    async fn load(&self, path: &str, max_bytes: usize) -> Result<LoadedAttachment, LoadError> {
        let _permit = self.0.acquire().await.map_err(|e| LoadError::Failed(e.to_string()))?;
        if path.contains("missing") {
            return Err(LoadError::Refused("not an allowed location".into()));
        }
        let content = format!("loaded {path}").into_bytes();
        if content.len() > max_bytes {
            return Err(LoadError::TooLarge { max: max_bytes });
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        Ok(LoadedAttachment::new(content).content_type("text/plain").filename(name))
    }
}

/// An engine on a fresh memory store whose attachment loader waits for permits (none yet),
/// and a request with one `path` attachment: the request is held at its fetch until the
/// test gives the loader a permit.
fn held_at_its_attachment(path: &str) -> (Engine, Arc<SlowLoader>, EmailRequest) {
    let loader = Arc::new(SlowLoader(tokio::sync::Semaphore::new(0)));
    let engine = Engine::builder(Arc::new(MemoryStorage::new())).attachment_loader(loader.clone()).build();
    let mut req = email("a@example.com");
    req.attachments = Some(vec![AttachmentRequest { path: Some(path.into()), ..Default::default() }]);
    (engine, loader, req)
}

#[tokio::test]
async fn a_twin_arriving_in_flight_is_refused_and_path_attachments_load() {
    let (engine, loader, req) = held_at_its_attachment("files/report.txt");
    let first = {
        let (engine, req) = (engine.clone(), req.clone());
        tokio::spawn(async move { engine.send(req, SendOptions::idempotency_key("k")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = engine.send(req.clone(), SendOptions::idempotency_key("k")).await.unwrap_err();
    assert_eq!((err.status(), err.name()), (409, ErrorName::ConcurrentIdempotentRequests));
    loader.0.add_permits(10);
    let id = first.await.unwrap().unwrap().id;
    let rec = engine.get_record(id).await.unwrap();
    assert_eq!(rec.content.attachments[0].content, b"loaded files/report.txt");
    assert_eq!(rec.content.attachments[0].filename.as_deref(), Some("report.txt"));
    assert_eq!(engine.send(req, SendOptions::idempotency_key("k")).await.unwrap().id, id);

    let mut missing = email("a@example.com");
    missing.attachments = Some(vec![AttachmentRequest { path: Some("missing.txt".into()), ..Default::default() }]);
    let err = engine.send(missing, SendOptions::default()).await.unwrap_err();
    assert_eq!(err.name(), ErrorName::InvalidAttachment);
    assert_eq!(err.field_errors()[0].path, "attachments[0].path");

    // Without a loader, `path` is refused with a reason, not silently dropped.
    let plain = Engine::builder(Arc::new(MemoryStorage::new())).build();
    let mut p = email("a@example.com");
    p.attachments = Some(vec![AttachmentRequest { path: Some("x.pdf".into()), ..Default::default() }]);
    let err = plain.send(p, SendOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("no attachment loader"), "{err}");
}

/// A keyed request whose caller goes away mid-way (an HTTP client that hangs up drops its
/// handler) still runs to its end: the retry with the same key gets the stored email, not
/// `409 concurrent_idempotent_requests` until the in-flight marker lapses.
#[tokio::test]
async fn a_keyed_request_abandoned_by_its_caller_still_finishes() {
    let (engine, loader, req) = held_at_its_attachment("files/a.txt");
    // The caller gives up while the request waits for its attachment (the key is held).
    let gave_up =
        tokio::time::timeout(Duration::from_millis(50), engine.send(req.clone(), SendOptions::idempotency_key("k")))
            .await;
    assert!(gave_up.is_err(), "the request should still have been waiting");
    loader.0.add_permits(10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let id = loop {
        match engine.send(req.clone(), SendOptions::idempotency_key("k")).await {
            Ok(r) => break r.id,
            Err(e) if e.name() == ErrorName::ConcurrentIdempotentRequests => {
                assert!(tokio::time::Instant::now() < deadline, "the abandoned request never finished");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let page = engine.list(PageRequest::new(Some(100), None, None).unwrap()).await.unwrap();
    assert_eq!(page.data.len(), 1, "the retry replayed the abandoned request's email");
    assert_eq!(page.data[0].id, id);
}

/// Inside [`runs_to_its_end`] the keyed send runs in the caller's own task: the caller that
/// promised to carry it to its end does (spawned, awaited), and the answer and the replay are
/// the same as without; a caller that broke the promise would leave the key in flight, which
/// shows no task of the engine's own was started.
#[tokio::test]
async fn a_caller_that_runs_the_request_to_its_end_saves_the_engine_a_task() {
    let (engine, loader, req) = held_at_its_attachment("files/a.txt");

    // Kept: spawned and awaited, as `serve` does.
    let (e, r) = (engine.clone(), req.clone());
    let task = tokio::spawn(runs_to_its_end(async move { e.send(r, SendOptions::idempotency_key("kept")).await }));
    loader.0.add_permits(1);
    let first = task.await.unwrap().unwrap().id;
    loader.0.add_permits(1);
    let replay = engine.send(req.clone(), SendOptions::idempotency_key("kept")).await.unwrap().id;
    assert_eq!(first, replay, "the same answer as a send outside it");

    // Broken: dropped half-way (on an engine whose loader has no permit yet). Nothing else
    // runs it on, so the key stays in flight.
    let (engine, loader, req) = held_at_its_attachment("files/a.txt");
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        runs_to_its_end(engine.send(req.clone(), SendOptions::idempotency_key("dropped"))),
    )
    .await;
    assert!(gave_up.is_err(), "the request should still have been waiting");
    loader.0.add_permits(10);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let retry = engine.send(req.clone(), SendOptions::idempotency_key("dropped")).await.unwrap_err();
    assert_eq!(retry.name(), ErrorName::ConcurrentIdempotentRequests);
}

#[tokio::test]
async fn reads_are_scoped_and_unknown_ids_are_not_found() {
    let s = setup();
    let id = s.engine.send(email("a@example.com"), SendOptions::default()).await.unwrap().id;
    let other = s.engine.with_account("team-b");
    assert_eq!(other.get(id).await.unwrap_err().name(), ErrorName::NotFound);
    assert_eq!(other.list(PageRequest::new(None, None, None).unwrap()).await.unwrap().data.len(), 0);
    let unknown: EmailId = "00000000-0000-7000-8000-000000000000".parse().unwrap();
    let err = s.engine.get(unknown).await.unwrap_err();
    assert_eq!((err.status(), err.body().message.as_str()), (404, "Email not found"));
    assert!("not-a-uuid".parse::<EmailId>().is_err());
}

#[tokio::test]
async fn scheduled_emails_wait_for_their_time() {
    let s = setup();
    let mut r = email("delivered@resend.dev");
    r.scheduled_at = Some("2026-06-01T13:00:00+01:00".into()); // 12:00Z: now
    let now_id = s.engine.send(r, SendOptions::default()).await.unwrap().id;
    let mut r = email("delivered@resend.dev");
    r.scheduled_at = Some("2026-06-01T14:00:00Z".into());
    let later_id = s.engine.send(r, SendOptions::default()).await.unwrap().id;
    s.work().await;
    assert_eq!(s.engine.get(now_id).await.unwrap().last_event, Some(EventKind::Delivered));
    assert_eq!(s.kinds(later_id).await, vec![EventKind::Scheduled]);
    s.clock.advance(CDuration::hours(2));
    s.work().await;
    assert_eq!(
        s.kinds(later_id).await,
        vec![EventKind::Scheduled, EventKind::Queued, EventKind::Sent, EventKind::Delivered]
    );
}

/// One scripted answer: a status and reply per recipient, or a failure of the whole hand-over.
type Step = Result<Vec<(RecipientStatus, &'static str)>, TransportErrorKind>;

/// A transport scripted per call, counting hand-overs.
#[derive(Debug, Default)]
struct Scripted {
    calls: AtomicUsize,
    script: Mutex<Vec<Step>>,
    /// Every message handed over, as bytes.
    messages: Mutex<Vec<Vec<u8>>>,
}

#[async_trait]
impl Transport for Scripted {
    async fn send_raw(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReport, TransportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.messages.lock().unwrap().push(message.to_vec());
        let next = self.script.lock().unwrap().remove(0);
        match next {
            Ok(statuses) => Ok(DeliveryReport {
                recipients: envelope
                    .to
                    .iter()
                    .zip(statuses)
                    .map(|(r, (status, reply))| RecipientReport {
                        recipient: r.clone(),
                        status,
                        reply: SmtpReply::parse(reply),
                        stage: Stage::Recipient,
                        feedback: None,
                    })
                    .collect(),
            }),
            Err(kind) => Err(TransportError {
                kind,
                reply: SmtpReply::parse("421 4.4.2 connection dropped"),
                stage: Stage::Unknown,
                message: "connection dropped".into(),
            }),
        }
    }
}

#[tokio::test]
async fn deferrals_retry_on_schedule_and_delay_is_reported_once() {
    let s = setup();
    let t = Arc::new(Scripted::default());
    *t.script.lock().unwrap() = vec![
        Ok(vec![
            (RecipientStatus::Delivered, "250 2.0.0 ok"),
            (RecipientStatus::Deferred, "451 4.7.1 greylisted, try again in 5 minutes"),
        ]),
        Ok(vec![(RecipientStatus::Deferred, "451 4.3.0 busy")]),
        Ok(vec![(RecipientStatus::Delivered, "250 2.0.0 ok")]),
    ];
    let mut r = email("a@example.com");
    r.cc = Some(OneOrMany::One("b@example.com".into()));
    let id = s.engine.send(r, SendOptions::default()).await.unwrap().id;
    let worker = s.engine.worker(t.clone(), WorkerConfig::default());
    worker.run_until_idle().await.unwrap();
    use EventKind::*;
    assert_eq!(s.kinds(id).await, vec![Queued, Sent, Delivered, DeliveryDelayed]);
    let st = s.engine.get_record(id).await.unwrap().state;
    assert_eq!(st.pending, vec!["b@example.com".to_string()]);
    assert_eq!(st.due_at, Some(t0() + CDuration::minutes(5)), "the server's hint (5 min) beats the 2 min schedule");
    s.clock.advance(CDuration::minutes(5));
    worker.run_until_idle().await.unwrap();
    assert_eq!(s.kinds(id).await, vec![Queued, Sent, Delivered, DeliveryDelayed], "delay reported once");
    s.clock.advance(CDuration::minutes(5));
    worker.run_until_idle().await.unwrap();
    assert_eq!(s.kinds(id).await, vec![Queued, Sent, Delivered, DeliveryDelayed, Delivered]);
    assert_eq!(t.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn mixed_results_and_transport_failures() {
    use EventKind::*;
    let s = setup();
    let t = Arc::new(Scripted::default());
    *t.script.lock().unwrap() = vec![
        Ok(vec![(RecipientStatus::Delivered, "250 ok"), (RecipientStatus::Rejected, "550 5.1.1 no such user")]),
        Err(TransportErrorKind::Ambiguous),
        Ok(vec![(RecipientStatus::Rejected, "554 5.7.1 blocked by policy")]),
    ];
    let worker = s.engine.worker(t.clone(), WorkerConfig::default().concurrency(1));
    let mut r = email("good@example.com");
    r.to = Some(vec!["good@example.com", "gone@example.com"].into());
    let a = s.engine.send(r, SendOptions::default()).await.unwrap().id;
    worker.run_until_idle().await.unwrap();
    assert_eq!(s.kinds(a).await, vec![Queued, Sent, Delivered, Bounced]);
    assert!(s.engine.suppression("gone@example.com").await.unwrap().is_some());
    assert!(s.engine.suppression("good@example.com").await.unwrap().is_none());

    let b = s.engine.send(email("x@example.com"), SendOptions::default()).await.unwrap().id;
    worker.run_until_idle().await.unwrap();
    assert_eq!(s.kinds(b).await, vec![Queued, Failed], "ambiguous: never re-sent");
    s.clock.advance(CDuration::days(1));
    worker.run_until_idle().await.unwrap();

    let c = s.engine.send(email("policy@example.com"), SendOptions::default()).await.unwrap().id;
    worker.run_until_idle().await.unwrap();
    assert_eq!(s.kinds(c).await, vec![Queued, Sent, Bounced]);
    assert!(s.engine.suppression("policy@example.com").await.unwrap().is_none(), "a policy block does not suppress");
    assert_eq!(t.calls.load(Ordering::SeqCst), 3);
}

/// A transport that refuses each recipient with its reply, given at its step.
#[derive(Debug)]
struct Staged(Vec<(&'static str, Stage)>);

#[async_trait]
impl Transport for Staged {
    async fn send_raw(&self, envelope: &Envelope, _message: &[u8]) -> Result<DeliveryReport, TransportError> {
        let recipients = envelope
            .to
            .iter()
            .zip(&self.0)
            .map(|(r, (reply, stage))| RecipientReport {
                recipient: r.clone(),
                status: RecipientStatus::Rejected,
                reply: SmtpReply::parse(reply),
                stage: *stage,
                feedback: None,
            })
            .collect();
        Ok(DeliveryReport { recipients })
    }
}

#[tokio::test]
async fn only_a_refusal_at_rcpt_to_suppresses_the_recipient() {
    use EventKind::*;
    let s = setup();
    // The same "user unknown" answering RCPT TO and MAIL FROM (a server verifying our
    // sender), and a filter's words after DATA.
    let t = Arc::new(Staged(vec![
        ("550 5.1.1 User unknown", Stage::Recipient),
        ("550 5.1.1 User unknown", Stage::Sender),
        ("550 No such user here", Stage::Message),
    ]));
    let mut r = email("rcpt@example.com");
    r.to = Some(vec!["rcpt@example.com", "mail@example.com", "data@example.com"].into());
    let id = s.engine.send(r, SendOptions::default()).await.unwrap().id;
    s.engine.worker(t, WorkerConfig::default()).run_until_idle().await.unwrap();
    assert_eq!(s.kinds(id).await, vec![Queued, Sent, Bounced, Bounced, Bounced]);
    assert!(s.engine.suppression("rcpt@example.com").await.unwrap().is_some());
    assert!(s.engine.suppression("mail@example.com").await.unwrap().is_none(), "MAIL FROM's refusal names nobody");
    assert!(s.engine.suppression("data@example.com").await.unwrap().is_none(), "words after DATA are a filter's");
    let events = s.engine.get_record(id).await.unwrap().state.events;
    let kinds: Vec<BounceType> = events.iter().filter_map(|e| e.bounce.as_ref().map(|b| b.kind)).collect();
    assert_eq!(kinds, [BounceType::Permanent, BounceType::Transient, BounceType::Transient]);
}

/// A relay that refuses our MAIL FROM (the message as a whole) with words that would name a
/// recipient unusable.
#[derive(Debug)]
struct RefusesMailFrom;

#[async_trait]
impl Transport for RefusesMailFrom {
    async fn send_raw(&self, _envelope: &Envelope, _message: &[u8]) -> Result<DeliveryReport, TransportError> {
        Err(TransportError {
            kind: TransportErrorKind::Permanent,
            reply: SmtpReply::parse("550 5.1.1 User unknown"),
            stage: Stage::Sender,
            message: "MAIL FROM refused".into(),
        })
    }
}

#[tokio::test]
async fn a_whole_message_refused_at_mail_from_suppresses_nobody() {
    use EventKind::*;
    let s = setup();
    let id = s.engine.send(email("someone@example.com"), SendOptions::default()).await.unwrap().id;
    s.engine.worker(Arc::new(RefusesMailFrom), WorkerConfig::default()).run_until_idle().await.unwrap();
    assert_eq!(s.kinds(id).await.last(), Some(&Bounced));
    assert!(s.engine.suppression("someone@example.com").await.unwrap().is_none());
    let events = s.engine.get_record(id).await.unwrap().state.events;
    assert_eq!(events.last().unwrap().bounce.as_ref().unwrap().kind, BounceType::Transient);
}

#[tokio::test]
async fn a_hard_bounce_suppresses_the_next_email_of_the_same_round() {
    use EventKind::*;
    let s = setup();
    let t = Arc::new(Scripted::default());
    *t.script.lock().unwrap() = vec![Ok(vec![(RecipientStatus::Rejected, "550 5.1.1 no such user")])];
    let a = s.engine.send(email("gone@example.com"), SendOptions::default()).await.unwrap().id;
    let b = s.engine.send(email("gone@example.com"), SendOptions::default()).await.unwrap().id;
    // One round claims both; the worker looks the list up once per round, so the first email's
    // bounce must reach the second without another lookup.
    let worker = s.engine.worker(t.clone(), WorkerConfig::default().concurrency(1).claim_batch(10));
    let report = worker.run_once().await.unwrap();
    assert_eq!(report.processed, 2);
    assert_eq!(s.kinds(a).await, vec![Queued, Sent, Bounced]);
    assert_eq!(s.kinds(b).await, vec![Queued, Suppressed]);
    assert_eq!(t.calls.load(Ordering::SeqCst), 1, "the suppressed address was not contacted again");
}

/// A transport that answers like `inner` after a pause (so the worker's next batch is
/// claimed while this hand-over is still in flight).
#[derive(Debug)]
struct Slow(Arc<Scripted>);

#[async_trait]
impl Transport for Slow {
    async fn send_raw(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReport, TransportError> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.0.send_raw(envelope, message).await
    }
}

#[tokio::test]
async fn a_hard_bounce_suppresses_the_next_batch_claimed_while_it_was_in_flight() {
    use EventKind::*;
    let s = setup();
    let t = Arc::new(Scripted::default());
    *t.script.lock().unwrap() = vec![Ok(vec![(RecipientStatus::Rejected, "550 5.1.1 no such user")])];
    let a = s.engine.send(email("gone@example.com"), SendOptions::default()).await.unwrap().id;
    let b = s.engine.send(email("gone@example.com"), SendOptions::default()).await.unwrap().id;
    // One email per batch: the second batch is claimed, and its list looked up, while the
    // first email waits for the transport; its bounce must still reach the second.
    let worker = s.engine.worker(Arc::new(Slow(t.clone())), WorkerConfig::default().concurrency(1).claim_batch(1));
    worker.run_until_idle().await.unwrap();
    assert_eq!(s.kinds(a).await, vec![Queued, Sent, Bounced]);
    assert_eq!(s.kinds(b).await, vec![Queued, Suppressed]);
    assert_eq!(t.calls.load(Ordering::SeqCst), 1, "the suppressed address was not contacted again");
}

#[tokio::test]
async fn a_crash_after_hand_over_is_never_sent_again() {
    let s = setup();
    let id = s.engine.send(email("x@example.com"), SendOptions::default()).await.unwrap().id;
    // Simulate a worker that claimed, marked the hand-over, and died.
    let c = s.store.claim_due(t0(), 10, Duration::from_secs(60)).await.unwrap();
    s.store.begin_handover(&[c[0].claim_ref()]).await.unwrap();
    s.work().await;
    assert!(s.sandbox.outbox().is_empty(), "still held by the dead worker's lease");
    s.clock.advance(CDuration::minutes(2));
    s.work().await;
    assert!(s.sandbox.outbox().is_empty(), "never handed over twice");
    let rec = s.engine.get_record(id).await.unwrap();
    assert_eq!(rec.state.last_event(), Some(EventKind::Failed));
    assert_eq!(rec.state.events.last().unwrap().reason.as_deref(), Some(AMBIGUOUS_REASON));
}

fn message_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.lines().find_map(|l| l.strip_prefix("Message-ID: ")).expect("a Message-ID").to_string()
}

/// At least once: a crash between the hand-over mark and the outcome sends the email again,
/// once its claim is free, with the Message-ID it would have had.
#[tokio::test]
async fn with_resend_a_crash_after_hand_over_sends_again() {
    use EventKind::*;
    let s = setup();
    let id = s.engine.send(email("x@example.com"), SendOptions::default()).await.unwrap().id;
    let c = s.store.claim_due(t0(), 10, Duration::from_secs(60)).await.unwrap();
    s.store.begin_handover(&[c[0].claim_ref()]).await.unwrap();
    let t = Arc::new(Scripted::default());
    *t.script.lock().unwrap() = vec![Ok(vec![(RecipientStatus::Delivered, "250 ok")])];
    let worker = s.engine.worker(t.clone(), WorkerConfig::default().in_doubt(InDoubt::Resend));
    worker.run_until_idle().await.unwrap();
    assert_eq!(t.calls.load(Ordering::SeqCst), 0, "still held by the dead worker's lease");
    s.clock.advance(CDuration::minutes(2));
    worker.run_until_idle().await.unwrap();
    assert_eq!(t.calls.load(Ordering::SeqCst), 1, "sent again once the claim is free");
    assert_eq!(s.kinds(id).await, vec![Queued, Sent, Delivered]);
    assert!(message_id(&t.messages.lock().unwrap()[0]).starts_with(&format!("<{id}@")));
}

/// At least once: a connection lost before the server answered the data is a deferral; the
/// retry carries the same Message-ID, so a receiver that got the first copy can drop the second.
#[tokio::test]
async fn with_resend_an_ambiguous_hand_over_is_retried_with_the_same_message_id() {
    use EventKind::*;
    let s = setup();
    let t = Arc::new(Scripted::default());
    *t.script.lock().unwrap() =
        vec![Err(TransportErrorKind::Ambiguous), Ok(vec![(RecipientStatus::Delivered, "250 ok")])];
    let worker = s.engine.worker(t.clone(), WorkerConfig::default().in_doubt(InDoubt::Resend));
    let id = s.engine.send(email("x@example.com"), SendOptions::default()).await.unwrap().id;
    worker.run_until_idle().await.unwrap();
    assert_eq!(s.kinds(id).await, vec![Queued, Sent, DeliveryDelayed]);
    s.clock.advance(CDuration::hours(1));
    worker.run_until_idle().await.unwrap();
    assert_eq!(s.kinds(id).await, vec![Queued, Sent, DeliveryDelayed, Delivered]);
    let messages = t.messages.lock().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(message_id(&messages[0]), message_id(&messages[1]));
}

#[test]
fn in_doubt_policies_parse_by_name() {
    assert_eq!(InDoubt::parse("fail"), Some(InDoubt::Fail));
    assert_eq!(InDoubt::parse("resend"), Some(InDoubt::Resend));
    assert_eq!(InDoubt::parse("retry"), None);
    assert_eq!(WorkerConfig::default().in_doubt, InDoubt::Fail, "at most once unless asked");
}

#[tokio::test]
async fn shutdown_releases_unstarted_claims() {
    let s = setup();
    for i in 0..20 {
        s.engine.send(email(&format!("u{i}@example.com")), SendOptions::default()).await.unwrap();
    }
    let worker = s.engine.worker(Arc::new(s.sandbox.clone()), WorkerConfig::default().concurrency(2));
    // Shut down at once: in-flight sends finish, the rest are given back.
    let report = worker.run(async {}).await.unwrap();
    assert_eq!(report.processed + report.released, 20);
    assert!(report.released > 0);
    // Released claims are due now: a new worker finishes them.
    s.work().await;
    assert_eq!(s.sandbox.outbox().len(), 20);
}

#[tokio::test]
async fn the_running_worker_wakes_for_new_mail() {
    let store = Arc::new(MemoryStorage::new());
    let engine = Engine::builder(store).build();
    let sandbox = SandboxTransport::default();
    let worker = engine.worker(Arc::new(sandbox.clone()), WorkerConfig::default().max_idle(Duration::from_secs(3600)));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move { worker.run(async { stop_rx.await.unwrap_or(()) }).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let id = engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap().id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while engine.get(id).await.unwrap().last_event != Some(EventKind::Delivered) {
        assert!(tokio::time::Instant::now() < deadline, "the worker did not wake up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop_tx.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn errors_carry_the_catalogue_body() {
    let s = setup();
    let missing_to = EmailRequest { to: None, ..email("a@example.com") };
    let err = s.engine.send(missing_to, SendOptions::default()).await.unwrap_err();
    let body = serde_json::to_value(err.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"statusCode": 422, "name": "missing_required_field", "message": "Missing `to` field."})
    );
    let bad_from = EmailRequest { from: Some("nope".into()), ..email("a@example.com") };
    let err = s.engine.send(bad_from, SendOptions::default()).await.unwrap_err();
    assert!(err.to_string().starts_with("Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format"));
    assert!(matches!(err, Error::Invalid(_)));
}

#[tokio::test]
async fn retention_prunes_finished_emails_after_the_configured_time() {
    let store = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(t0());
    let engine =
        Engine::builder(store).clock(Arc::new(clock.clone())).retention(Duration::from_secs(7 * 24 * 3600)).build();
    let done = engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap().id;
    let mut later = email("delivered@resend.dev");
    later.scheduled_at = Some("2026-06-20T12:00:00Z".into());
    let waiting = engine.send(later, SendOptions::default()).await.unwrap().id;
    engine.worker(Arc::new(SandboxTransport::default()), WorkerConfig::default()).run_until_idle().await.unwrap();
    clock.advance(CDuration::days(6));
    assert_eq!(engine.prune().await.unwrap(), 0, "not old enough yet");
    clock.advance(CDuration::days(2));
    assert_eq!(engine.prune().await.unwrap(), 1);
    let v = engine.get(done).await.unwrap();
    assert_eq!((v.html, v.last_event), (None, Some(EventKind::Delivered)));
    assert_eq!(v.subject, "Hello");
    assert_eq!(engine.get(waiting).await.unwrap().html.as_deref(), Some("<p>Hello</p>"), "a scheduled email is kept");
    let no_retention = Engine::builder(Arc::new(MemoryStorage::new())).build();
    assert_eq!(no_retention.prune().await.unwrap(), 0, "without a setting nothing is ever removed");
}

#[tokio::test]
async fn reschedule_and_cancel_only_while_scheduled() {
    let s = setup();
    let mut r = email("delivered@resend.dev");
    r.scheduled_at = Some("tomorrow at 9am".into());
    let id = s.engine.send(r, SendOptions::default()).await.unwrap().id;
    assert_eq!(s.engine.get(id).await.unwrap().scheduled_at.as_deref(), Some("2026-06-02T09:00:00.000Z"));
    assert_eq!(s.engine.reschedule(id, "in 2 hours").await.unwrap().id, id);
    assert_eq!(s.engine.get(id).await.unwrap().scheduled_at.as_deref(), Some("2026-06-01T14:00:00.000Z"));
    let err = s.engine.reschedule(id, "in 40 days").await.unwrap_err();
    assert_eq!((err.status(), err.field_errors()[0].path.as_str()), (422, "scheduled_at"));
    let err = s.engine.reschedule(id, "someday").await.unwrap_err();
    assert!(err.to_string().contains("\"someday\""), "{err}");
    s.clock.advance(CDuration::hours(2));
    s.work().await;
    assert_eq!(s.engine.get(id).await.unwrap().last_event, Some(EventKind::Delivered));
    let err = s.engine.cancel(id).await.unwrap_err();
    assert_eq!((err.status(), err.name()), (422, ErrorName::ValidationError));
    assert!(err.to_string().contains("`delivered`"), "{err}");

    let mut r = email("delivered@resend.dev");
    r.scheduled_at = Some("Friday at 3pm ET".into());
    let later = s.engine.send(r, SendOptions::default()).await.unwrap().id;
    s.engine.cancel(later).await.unwrap();
    assert_eq!(s.engine.get(later).await.unwrap().last_event, Some(EventKind::Canceled));
    let err = s.engine.reschedule(later, "in 1 hour").await.unwrap_err();
    assert!(err.to_string().contains("`canceled`"));
    s.clock.advance(CDuration::days(10));
    s.work().await;
    assert_eq!(s.engine.get(later).await.unwrap().last_event, Some(EventKind::Canceled), "never sent");
    assert!(s.sandbox.outbox().is_empty());
    let unknown: EmailId = "00000000-0000-7000-8000-000000000000".parse().unwrap();
    assert_eq!(s.engine.cancel(unknown).await.unwrap_err().name(), ErrorName::NotFound);
}

#[tokio::test]
async fn an_earlier_reschedule_wakes_the_sleeping_worker() {
    let engine = Engine::builder(Arc::new(MemoryStorage::new())).build();
    let sandbox = SandboxTransport::default();
    let worker = engine.worker(Arc::new(sandbox.clone()), WorkerConfig::default().max_idle(Duration::from_secs(3600)));
    let mut r = email("delivered@resend.dev");
    r.scheduled_at = Some("in 2 hours".into());
    let id = engine.send(r, SendOptions::default()).await.unwrap().id;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move { worker.run(async { stop_rx.await.unwrap_or(()) }).await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let soon = (Utc::now() + CDuration::milliseconds(200)).to_rfc3339();
    engine.reschedule(id, &soon).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while engine.get(id).await.unwrap().last_event != Some(EventKind::Delivered) {
        assert!(tokio::time::Instant::now() < deadline, "the worker slept through the earlier time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

fn dsn(message_id: &str, rcpt: &str, status: &str, diag: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mx.example.org\nTo: onboarding@acme.test\nSubject: Undelivered Mail Returned to Sender\n\
MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
--b\nContent-Type: text/plain\n\nThis is the mail system.\n\n--b\nContent-Type: message/delivery-status\n\n\
Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; {rcpt}\nAction: failed\nStatus: {status}\n\
Diagnostic-Code: smtp; {diag}\n\n--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <{message_id}>\n\
From: Acme <onboarding@acme.test>\nTo: {rcpt}\nSubject: Hello\n\n--b--\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn bounces_and_complaints_arriving_later_become_events_and_only_hard_ones_suppress() {
    use mailroom_core::inbound::MessageKind;
    let s = setup();
    let t = Arc::new(Scripted::default());
    *t.script.lock().unwrap() = vec![
        Ok(vec![(RecipientStatus::Relayed, "250 2.0.0 queued")]),
        Ok(vec![(RecipientStatus::Relayed, "250 2.0.0 queued")]),
        Ok(vec![(RecipientStatus::Delivered, "250 2.0.0 ok")]),
    ];
    let worker = s.engine.worker(t.clone(), WorkerConfig::default().concurrency(1));
    let hard = s.engine.send(email("gone@example.org"), SendOptions::default()).await.unwrap().id;
    let soft = s.engine.send(email("full@example.org"), SendOptions::default()).await.unwrap().id;
    let fan = s.engine.send(email("angry@example.org"), SendOptions::default()).await.unwrap().id;
    worker.run_until_idle().await.unwrap();
    let (hard_mid, soft_mid, fan_mid) = (
        s.engine.get(hard).await.unwrap().message_id,
        s.engine.get(soft).await.unwrap().message_id,
        s.engine.get(fan).await.unwrap().message_id,
    );

    let r =
        s.engine.ingest_bounce(&dsn(&hard_mid, "gone@example.org", "5.1.1", "550 5.1.1 User unknown")).await.unwrap();
    assert_eq!(
        (r.kind, r.email, r.suppressed.clone()),
        (MessageKind::Bounce, Some(hard), vec!["gone@example.org".to_string()])
    );
    let rec = s.engine.get_record(hard).await.unwrap();
    assert_eq!(rec.state.last_event(), Some(EventKind::Bounced));
    assert_eq!(rec.state.events.last().unwrap().bounce.as_ref().unwrap().kind, BounceType::Permanent);

    // A delay notice ("Action: delayed") is a warning: `delivery_delayed`, never a bounce.
    let delayed = String::from_utf8(dsn(&soft_mid, "full@example.org", "4.2.2", "452 4.2.2 Mailbox full"))
        .unwrap()
        .replace("Action: failed", "Action: delayed");
    let r = s.engine.ingest_bounce(delayed.as_bytes()).await.unwrap();
    assert_eq!((r.kind, r.email, r.suppressed.len()), (MessageKind::Delayed, Some(soft), 0));
    assert_eq!(s.engine.get(soft).await.unwrap().last_event, Some(EventKind::DeliveryDelayed));
    let r =
        s.engine.ingest_bounce(&dsn(&soft_mid, "full@example.org", "4.2.2", "452 4.2.2 Mailbox full")).await.unwrap();
    assert!(r.suppressed.is_empty(), "a transient bounce never suppresses");
    assert_eq!(s.engine.get(soft).await.unwrap().last_event, Some(EventKind::Bounced));
    assert!(s.engine.suppression("full@example.org").await.unwrap().is_none());

    let arf = format!(
        "From: feedback@isp.example\nTo: abuse@acme.test\nSubject: FW: abuse report\nMIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"f\"\n\n--f\nContent-Type: text/plain\n\n\
This is an email abuse report.\n\n--f\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n\
User-Agent: test/1.0\nVersion: 1\nOriginal-Rcpt-To: angry@example.org\n\n--f\nContent-Type: message/rfc822\n\n\
Message-ID: <{}>\nFrom: onboarding@acme.test\nTo: angry@example.org\nSubject: Hello\n\nhi\n--f--\n",
        fan_mid
    );
    let r = s.engine.ingest_bounce(arf.as_bytes()).await.unwrap();
    assert_eq!((r.kind, r.suppressed.clone()), (MessageKind::Complaint, vec!["angry@example.org".to_string()]));
    assert_eq!(s.engine.get(fan).await.unwrap().last_event, Some(EventKind::Complained));
    assert_eq!(s.engine.suppression("angry@example.org").await.unwrap().unwrap().reason, SuppressionReason::Complained);

    // An authentication failure report (RFC 6591) about the same kind of message is the
    // receiver telling the domain's owner that SPF or DKIM failed: no complaint of the
    // recipient's, so no `complained` event and no suppression.
    let before = s.engine.get_record(soft).await.unwrap().state.events.len();
    let auth = arf
        .replace("Feedback-Type: abuse", "Feedback-Type: auth-failure\nAuth-Failure: dkim")
        .replace("angry@example.org", "full@example.org")
        .replace(&fan_mid, &soft_mid);
    let r = s.engine.ingest_bounce(auth.as_bytes()).await.unwrap();
    assert_eq!((r.kind, r.events, r.suppressed.len()), (MessageKind::Complaint, 0, 0));
    assert_eq!(s.engine.get_record(soft).await.unwrap().state.events.len(), before);
    assert!(s.engine.suppression("full@example.org").await.unwrap().is_none());

    let unknown = dsn("01900000-0000-7000-8000-000000000000@acme.test", "x@example.org", "5.1.1", "550 no");
    assert_eq!(s.engine.ingest_bounce(&unknown).await.unwrap_err().name(), ErrorName::NotFound);
    let auto =
        b"From: a@example.org\nTo: b@acme.test\nSubject: Out of Office\nAuto-Submitted: auto-replied\n\nI am away.\n";
    assert_eq!(s.engine.ingest_bounce(auto).await.unwrap().kind, MessageKind::AutoReply);
}

/// Exchange 5.5's plain notice naming the failed recipient by display name alone, answering
/// the email whose Message-ID it quotes.
fn display_name_notice(message_id: &str) -> Vec<u8> {
    format!(
        "From: System Administrator <postmaster@mail.example.org>\nTo: onboarding@acme.test\n\
Subject: Undeliverable: Hello\nMIME-Version: 1.0\nX-MS-Embedded-Report:\n\
Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nYour message\n\n\
  To:      Team\n  Subject: Hello\n  Sent:    Thu, 29 Apr 2010 23:34:45 +0900\n\n\
did not reach the following recipient(s):\n\n\
Kijitora Cat on Thu, 29 Apr 2010 23:34:50 +0900\n    The recipient name is not recognized\n\
    MSEXCH:IMS:Neko:Tokyo:MAIL01 0 (000C05A6) Unknown Recipient\n\n\
--b\nContent-Type: message/rfc822\n\nMessage-ID: <{message_id}>\nFrom: onboarding@acme.test\nTo: Team\n\
Subject: Hello\n\nhi\n--b--\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn a_failure_named_by_display_name_alone_is_the_only_recipients_or_nobodys() {
    use mailroom_core::inbound::MessageKind;
    let s = setup();
    let one = s.engine.send(email("carl@example.org"), SendOptions::default()).await.unwrap().id;
    let mut pair = email("ann@example.org");
    pair.to = Some(OneOrMany::Many(vec!["ann@example.org".into(), "bob@example.org".into()]));
    let two = s.engine.send(pair, SendOptions::default()).await.unwrap().id;
    s.work().await;
    let one_mid = s.engine.get(one).await.unwrap().message_id;
    let two_mid = s.engine.get(two).await.unwrap().message_id;

    // One recipient: the failure is its, a permanent one (Exchange's directory does not know
    // the name), so it is bounced and suppressed.
    let r = s.engine.ingest_bounce(&display_name_notice(&one_mid)).await.unwrap();
    assert_eq!(
        (r.kind, r.email, r.events, r.suppressed.clone()),
        (MessageKind::Bounce, Some(one), 1, vec!["carl@example.org".to_string()])
    );
    let last = s.engine.get_record(one).await.unwrap().state.events.last().cloned().unwrap();
    assert_eq!((last.kind, last.recipient.as_deref()), (EventKind::Bounced, Some("carl@example.org")));

    // Two: whose it is cannot be told, so one `bounced` event without a recipient, and no one
    // suppressed.
    let r = s.engine.ingest_bounce(&display_name_notice(&two_mid)).await.unwrap();
    assert_eq!((r.kind, r.email, r.events, r.suppressed.len()), (MessageKind::Bounce, Some(two), 1, 0));
    let last = s.engine.get_record(two).await.unwrap().state.events.last().cloned().unwrap();
    assert_eq!((last.kind, last.recipient), (EventKind::Bounced, None));
    assert!(s.engine.suppression("ann@example.org").await.unwrap().is_none());
    assert!(s.engine.suppression("bob@example.org").await.unwrap().is_none());
}

#[tokio::test]
async fn a_report_suppresses_only_the_emails_own_recipients() {
    let s = setup();
    let mut pair = email("ann@example.org");
    pair.to = Some(OneOrMany::Many(vec!["ann@example.org".into(), "bob@example.org".into()]));
    let two = s.engine.send(pair, SendOptions::default()).await.unwrap().id;
    let one = s.engine.send(email("carl@example.org"), SendOptions::default()).await.unwrap().id;
    let quiet = s.engine.send(email("dora@example.org"), SendOptions::default()).await.unwrap().id;
    s.work().await;
    let engine = &s.engine;
    let mid = |id| async move { engine.get(id).await.unwrap().message_id };
    let (two_mid, one_mid, quiet_mid) = (mid(two).await, mid(one).await, mid(quiet).await);

    // A hard bounce naming an address the email never went to (anyone who received it knows
    // its Message-ID): recorded as the report says, nobody suppressed.
    let forged = dsn(&two_mid, "victim@example.net", "5.1.1", "550 5.1.1 User unknown");
    let r = s.engine.ingest_bounce(&forged).await.unwrap();
    assert_eq!((r.email, r.suppressed.len()), (Some(two), 0));
    assert!(s.engine.suppression("victim@example.net").await.unwrap().is_none());
    let rec = s.engine.get_record(two).await.unwrap();
    assert_eq!(rec.state.events.last().unwrap().recipient.as_deref(), Some("victim@example.net"));
    // One of its recipients, named in another case, is suppressed under the email's spelling.
    let mut idn = email("jörg@bücher.example");
    idn.to = Some(OneOrMany::Many(vec!["jörg@bücher.example".into(), "eve@example.org".into()]));
    let idn = s.engine.send(idn, SendOptions::default()).await.unwrap().id;
    s.work().await;
    let idn_mid = s.engine.get(idn).await.unwrap().message_id;
    let r =
        s.engine.ingest_bounce(&dsn(&idn_mid, "jörg@bücher.example", "5.1.1", "550 5.1.1 User unknown")).await.unwrap();
    assert_eq!(r.suppressed, vec!["jörg@xn--bcher-kva.example".to_string()], "a Unicode domain is the same mailbox");
    let r = s.engine.ingest_bounce(&dsn(&two_mid, "Bob@Example.org", "5.1.1", "550 5.1.1 User unknown")).await.unwrap();
    assert_eq!(r.suppressed, vec!["bob@example.org".to_string()]);

    // An email with one recipient, forwarded to an address that does not exist: the bounce is
    // that recipient's.
    let r = s
        .engine
        .ingest_bounce(&dsn(&one_mid, "carl.old@elsewhere.test", "5.1.1", "550 5.1.1 User unknown"))
        .await
        .unwrap();
    assert_eq!(r.suppressed, vec!["carl@example.org".to_string()]);
    assert_eq!(
        s.engine.get_record(one).await.unwrap().state.events.last().unwrap().recipient.as_deref(),
        Some("carl@example.org")
    );

    // An email with two recipients, one forwarded by its server to an address that does not
    // exist: the report's Original-Recipient says whose forward failed, and only that
    // recipient is bounced and suppressed. An Original-Recipient that is not one of the
    // email's own changes nothing.
    let mut pair = email("fay@example.org");
    pair.to = Some(OneOrMany::Many(vec!["fay@example.org".into(), "gus@example.org".into()]));
    let pair = s.engine.send(pair, SendOptions::default()).await.unwrap().id;
    s.work().await;
    let pair_mid = s.engine.get(pair).await.unwrap().message_id;
    let forwarded = |original: &str| {
        let raw = String::from_utf8(dsn(&pair_mid, "fay.old@forward.test", "5.1.1", "550 5.1.1 User unknown")).unwrap();
        raw.replace(
            "Final-Recipient: rfc822; fay.old@forward.test",
            &format!("Original-Recipient: rfc822;{original}\nFinal-Recipient: rfc822; fay.old@forward.test"),
        )
        .into_bytes()
    };
    let r = s.engine.ingest_bounce(&forwarded("victim@example.net")).await.unwrap();
    assert_eq!(r.suppressed.len(), 0, "a stranger in Original-Recipient is no recipient of ours");
    let r = s.engine.ingest_bounce(&forwarded("Fay@example.org")).await.unwrap();
    assert_eq!(r.suppressed, vec!["fay@example.org".to_string()]);
    let rec = s.engine.get_record(pair).await.unwrap();
    let last = rec.state.events.last().unwrap();
    assert_eq!((last.kind, last.recipient.as_deref()), (EventKind::Bounced, Some("fay@example.org")));

    // A feedback report that names nobody (the quoted original's To is redacted): about the
    // email's only recipient.
    let arf = format!(
        "From: scomp@aol.net\nTo: abuse@acme.test\nSubject: Email Feedback Report\nMIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"f\"\n\n--f\nContent-Type: text/plain\n\n\
This is an email abuse report.\n\n--f\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n\
User-Agent: AOL SComp\nVersion: 1\n\n--f\nContent-Type: message/rfc822\n\n\
Message-ID: <{quiet_mid}>\nFrom: onboarding@acme.test\nTo: redacted\nSubject: Hello\n\nhi\n--f--\n"
    );
    let r = s.engine.ingest_bounce(arf.as_bytes()).await.unwrap();
    assert_eq!(r.suppressed, vec!["dora@example.org".to_string()]);
    assert_eq!(s.engine.get(quiet).await.unwrap().last_event, Some(EventKind::Complained));
    // A report naming thousands of strangers writes one event for them, not thousands.
    let many: String = (0..5000).map(|i| format!("Original-Rcpt-To: stranger{i}@example.net\n")).collect();
    let flood = arf.replace(&quiet_mid, &two_mid).replace("Version: 1\n", &format!("Version: 1\n{many}"));
    let r = s.engine.ingest_bounce(flood.as_bytes()).await.unwrap();
    assert_eq!((r.events, r.suppressed.len()), (1, 0));
    // The same report about the email with two recipients cannot say whose it was.
    let r = s.engine.ingest_bounce(arf.replace(&quiet_mid, &two_mid).as_bytes()).await.unwrap();
    assert_eq!((r.kind, r.suppressed.len()), (mailroom_core::inbound::MessageKind::Complaint, 0));
    assert!(s.engine.suppression("ann@example.org").await.unwrap().is_none());
}

#[tokio::test]
async fn a_verp_return_path_links_a_bounce_that_quotes_nothing() {
    let store = Arc::new(MemoryStorage::new());
    let engine = Engine::builder(store).bounce_domain("bounces.acme.test").build();
    let sandbox = SandboxTransport::default();
    let id = engine.send(email("someone@example.org"), SendOptions::default()).await.unwrap().id;
    engine.worker(Arc::new(sandbox.clone()), WorkerConfig::default()).run_until_idle().await.unwrap();
    let from = sandbox.outbox()[0].envelope.from.clone();
    assert_eq!(from, format!("bounces+{id}@bounces.acme.test"));
    // A bare qmail-style bounce sent to that return path, quoting no headers at all.
    let bounce = format!(
        "From: MAILER-DAEMON@mx.example.org\nTo: {from}\nSubject: failure notice\n\n\
I'm afraid I wasn't able to deliver your message to the following addresses.\n\n\
<someone@example.org>:\n550 5.1.1 User unknown\n"
    );
    let r = engine.ingest_bounce(bounce.as_bytes()).await.unwrap();
    assert_eq!(r.email, Some(id));
    assert_eq!(engine.get(id).await.unwrap().last_event, Some(EventKind::Bounced));
}

#[tokio::test]
async fn html_sent_alone_goes_out_with_a_text_part_unless_the_sender_opts_out() {
    use mailroom_core::memory::MemoryStorage;
    use mailroom_core::prelude::*;
    use std::sync::Arc;
    let request = |html: &str, text: Option<&str>| EmailRequest {
        from: Some("Acme <hi@acme.test>".into()),
        to: Some(OneOrMany::One("a@example.com".into())),
        subject: Some("Hi".into()),
        html: Some(html.into()),
        text: text.map(Into::into),
        ..Default::default()
    };
    // What the worker hands over for one request: the rendered message's parts.
    async fn sent(engine: &Engine, request: EmailRequest) -> (EmailId, String) {
        let sandbox = SandboxTransport::default();
        let id = engine.send(request, SendOptions::default()).await.unwrap().id;
        engine.worker(Arc::new(sandbox.clone()), WorkerConfig::default()).run_until_idle().await.unwrap();
        let out = sandbox.take_outbox();
        assert_eq!(out.len(), 1);
        (id, String::from_utf8(out[0].message.clone()).unwrap())
    }
    let engine = Engine::builder(Arc::new(MemoryStorage::new())).build();
    // By default (as on the hosted service) html alone gets a text part derived from it, at
    // hand-over: the stored email keeps what the client sent.
    let (id, message) =
        sent(&engine, request("<p>Hello <b>there</b></p><a href=\"https://acme.test/x\">Go</a>", None)).await;
    assert!(message.contains("multipart/alternative"), "{message}");
    assert!(message.contains("Content-Type: text/plain; charset=\"utf-8\""), "{message}");
    assert!(message.contains("Hello there\r\n\r\nGo [https://acme.test/x]"), "{message}");
    assert_eq!(engine.get_record(id).await.unwrap().content.text, None);
    // `text: ""` opts this email out: html alone, and the empty text kept as sent.
    let (id, message) = sent(&engine, request("<p>Hello</p>", Some(""))).await;
    assert!(!message.contains("text/plain") && !message.contains("multipart/alternative"), "{message}");
    assert_eq!(engine.get_record(id).await.unwrap().content.text.as_deref(), Some(""));
    // A text the sender wrote goes out as written.
    let (_, message) = sent(&engine, request("<p>x</p>", Some("mine"))).await;
    assert!(message.contains("\r\n\r\nmine\r\n"), "{message}");
    // Html that shows no text gets none.
    let (_, message) = sent(&engine, request("<img src=\"https://acme.test/a.png\">", None)).await;
    assert!(!message.contains("text/plain"), "{message}");
    // The engine's switch turns derivation off.
    let off = Engine::builder(Arc::new(MemoryStorage::new())).text_from_html(false).build();
    let (_, message) = sent(&off, request("<p>x</p>", None)).await;
    assert!(!message.contains("text/plain"), "{message}");
    // `text: ""` with no html is no body at all.
    let mut empty = request("", Some(""));
    empty.html = None;
    let err = engine.send(empty, SendOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("`html`"), "{err}");
}

/// DMARC answers from a list; every other name is absent.
#[derive(Debug)]
struct Dmarc(Vec<(&'static str, &'static str)>);

#[async_trait]
impl mailroom_core::ports::DnsResolver for Dmarc {
    async fn mx(&self, d: &str) -> Result<Vec<mailroom_core::ports::MxRecord>, mailroom_core::ports::DnsError> {
        Err(mailroom_core::ports::DnsError::NotFound { name: d.into(), rtype: "MX" })
    }
    async fn ips(&self, h: &str) -> Result<Vec<std::net::IpAddr>, mailroom_core::ports::DnsError> {
        Err(mailroom_core::ports::DnsError::NotFound { name: h.into(), rtype: "A/AAAA" })
    }
    async fn txt(&self, name: &str) -> Result<Vec<String>, mailroom_core::ports::DnsError> {
        let found: Vec<String> = self.0.iter().filter(|(n, _)| *n == name).map(|(_, r)| r.to_string()).collect();
        if found.is_empty() {
            return Err(mailroom_core::ports::DnsError::NotFound { name: name.into(), rtype: "TXT" });
        }
        Ok(found)
    }
}

#[tokio::test]
async fn insights_read_the_stored_body_the_domain_settings_and_drafts() {
    use mailroom_core::insights::Status;
    let store = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(t0());
    let engine =
        Engine::builder(store.clone()).clock(Arc::new(clock.clone())).retention(Duration::from_secs(3600)).build();
    let mut domain = mailroom_core::domains::NewDomain::new("acme.test");
    domain.click_tracking = Some(true);
    engine.create_domain(domain).await.unwrap();
    let dns = Dmarc(vec![("_dmarc.acme.test", "v=DMARC1; p=reject")]);
    let status = |all: &[mailroom_core::insights::Insight], check: &str| {
        all.iter().find(|i| i.check == check).map(|i| (i.status, i.advice.clone())).unwrap()
    };

    let id = engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap().id;
    let all = engine.insights(id, &dns).await.unwrap();
    assert_eq!(all.len(), 8);
    assert_eq!(status(&all, "plain_text_included").0, Status::Pass, "html alone gets a derived text part");
    let mut opted_out = email("delivered@resend.dev");
    opted_out.text = Some(String::new());
    let opted_out = engine.send(opted_out, SendOptions::default()).await.unwrap().id;
    let all = engine.insights(opted_out, &dns).await.unwrap();
    assert_eq!(status(&all, "plain_text_included").0, Status::Fail, "`text: \"\"`: html only");
    assert_eq!(status(&all, "dmarc_valid").0, Status::Pass);
    assert_eq!(status(&all, "click_tracking_disabled").0, Status::Fail, "the domain's own setting");
    assert_eq!(status(&all, "open_tracking_disabled").0, Status::Pass);
    assert_eq!(status(&all, "subdomain_sender").0, Status::Fail, "acme.test is the organisational domain");

    // Pruned by retention: what reads the body cannot tell any more.
    engine.worker(Arc::new(SandboxTransport::default()), WorkerConfig::default()).run_until_idle().await.unwrap();
    clock.advance(CDuration::hours(2));
    assert_eq!(engine.prune().await.unwrap(), 2);
    let all = engine.insights(id, &dns).await.unwrap();
    for check in ["link_domains_match", "plain_text_included", "body_size"] {
        let (st, advice) = status(&all, check);
        assert_eq!(st, Status::Unknown, "{check}");
        assert!(advice.contains("no longer kept"), "{advice}");
    }
    assert_eq!(status(&all, "dmarc_valid").0, Status::Pass);

    // Drafts: an unfinished one says why the sender's checks cannot tell; the text part the
    // engine derives counts (not with derivation off).
    let mut draft = email("a@b.test");
    draft.from = None;
    let all = engine.draft_insights(&draft, &dns).await.unwrap();
    let (st, advice) = status(&all, "no_reply_sender");
    assert_eq!(st, Status::Unknown);
    assert!(advice.contains("`from`"), "{advice}");
    let all = engine.draft_insights(&email("a@b.test"), &dns).await.unwrap();
    assert_eq!(status(&all, "plain_text_included").0, Status::Pass);
    let plain = Engine::builder(store.clone()).text_from_html(false).build();
    let all = plain.draft_insights(&email("a@b.test"), &dns).await.unwrap();
    assert_eq!(status(&all, "plain_text_included").0, Status::Fail);
    assert!(matches!(engine.insights(EmailId::from_u128(7), &dns).await, Err(Error::NotFound { .. })));
}

/// A key answers with its first result for 24 hours and not a minute more, on both sides of
/// the boundary (the hosted service's retention).
#[tokio::test]
async fn idempotency_keys_replay_until_24_hours_and_are_free_after() {
    let s = setup();
    let opts = SendOptions::idempotency_key("boundary");
    let first = s.engine.send(email("a@example.com"), opts.clone()).await.unwrap();
    s.clock.advance(CDuration::hours(23) + CDuration::minutes(59));
    assert_eq!(s.engine.send(email("a@example.com"), opts.clone()).await.unwrap().id, first.id, "23 h 59 m: replay");
    let mut other = email("a@example.com");
    other.subject = Some("Other".into());
    let err = s.engine.send(other.clone(), opts.clone()).await.unwrap_err();
    assert_eq!((err.status(), err.name()), (409, ErrorName::InvalidIdempotentRequest), "23 h 59 m: still held");
    s.clock.advance(CDuration::minutes(2));
    // 24 h 1 m: free, even before housekeeping purged the record, and for another payload.
    let fresh = s.engine.send(other, opts).await.unwrap();
    assert_ne!(fresh.id, first.id, "24 h 1 m: a new email");
    assert_eq!(s.count().await, 2);
}

/// The worker's own loop runs housekeeping while idle: expired keys purged, old request logs
/// pruned, with nobody calling `housekeeping` by hand.
#[tokio::test]
async fn the_running_worker_does_housekeeping() {
    use mailroom_core::ports::{Clock, LogFilter, RequestLogStore};
    let s = setup();
    s.engine.send(email("a@example.com"), SendOptions::idempotency_key("old")).await.unwrap();
    for days in [0, 45] {
        s.store
            .log_append(s.engine.account(), mailroom_core::testkit::request_log(t0() + CDuration::days(days)))
            .await
            .unwrap();
    }
    s.work().await;
    s.clock.set(t0() + CDuration::days(60));
    let worker =
        s.engine.worker(Arc::new(s.sandbox.clone()), WorkerConfig::default().max_idle(Duration::from_millis(5)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move { worker.run(async { stopped.await.unwrap_or(()) }).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (left, _) = s.store.log_page(s.engine.account(), &LogFilter::default(), None, 10).await.unwrap();
        if left.len() == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "housekeeping never ran: {} logs left", left.len());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert_eq!(s.store.purge_idempotency(s.clock.now()).await.unwrap(), 0, "the expired key was already purged");
}

/// Request logs are kept 30 days by default: the housekeeping the worker runs removes older
/// ones, and a host can keep them for ever.
#[tokio::test]
async fn housekeeping_applies_request_log_retention() {
    use mailroom_core::ports::{LogFilter, RequestLogStore};
    let store = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(t0());
    let engine = Engine::builder(store.clone()).clock(Arc::new(clock.clone())).build();
    for days in [0, 10, 29, 31, 45] {
        store
            .log_append(engine.account(), mailroom_core::testkit::request_log(t0() + CDuration::days(days)))
            .await
            .unwrap();
    }
    clock.set(t0() + CDuration::days(60));
    engine.housekeeping().await.unwrap();
    let (left, _) = store.log_page(engine.account(), &LogFilter::default(), None, 10).await.unwrap();
    let ages: Vec<i64> = left.iter().map(|l| (l.at - t0()).num_days()).collect();
    assert_eq!(ages, [45, 31], "older than 30 days at day 60: gone");
    let forever = Engine::builder(store.clone()).clock(Arc::new(clock.clone())).request_log_retention(None).build();
    clock.set(t0() + CDuration::days(400));
    assert_eq!(forever.prune_request_logs().await.unwrap(), 0);
}

/// A transport that takes `0` to answer.
#[derive(Debug)]
struct Delayed(Duration, SandboxTransport);

#[async_trait]
impl Transport for Delayed {
    async fn send_raw(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReport, TransportError> {
        tokio::time::sleep(self.0).await;
        self.1.send_raw(envelope, message).await
    }
}

/// With a heartbeat, a hand-over longer than the lease keeps its claim: another worker
/// sharing the store cannot take the email meanwhile. Without one, it can (the lease lapses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_keeps_a_short_lease_through_a_long_hand_over() {
    for heartbeat in [true, false] {
        let store = Arc::new(MemoryStorage::new());
        let engine = Engine::builder(store.clone()).build();
        let id = engine.send(email("x@example.com"), SendOptions::default()).await.unwrap().id;
        let sandbox = SandboxTransport::default();
        let mut config = WorkerConfig::default().lease(Duration::from_millis(300));
        if heartbeat {
            config = config.heartbeat(Duration::from_millis(60));
        }
        let worker = engine.worker(Arc::new(Delayed(Duration::from_millis(900), sandbox.clone())), config);
        let run = tokio::spawn(async move { worker.run_until_idle().await });
        // Well past the lease, while the hand-over still runs: can another worker claim it?
        tokio::time::sleep(Duration::from_millis(600)).await;
        let stolen = store.claim_due(chrono::Utc::now(), 10, Duration::from_secs(60)).await.unwrap();
        run.await.unwrap().unwrap();
        if heartbeat {
            assert!(stolen.is_empty(), "renewed: nobody else could claim it");
            assert_eq!(sandbox.outbox().len(), 1);
            let kinds: Vec<EventKind> =
                engine.get_record(id).await.unwrap().state.events.iter().map(|e| e.kind).collect();
            assert_eq!(kinds, vec![EventKind::Queued, EventKind::Sent, EventKind::Delivered]);
        } else {
            assert_eq!(stolen.len(), 1, "without a heartbeat the short lease lapsed mid-hand-over");
        }
    }
}
