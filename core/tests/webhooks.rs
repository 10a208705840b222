//! The event log and the webhook dispatcher on the in-memory store, with a recording receiver
//! double and a manual clock: payloads, signatures, the retry schedule, replay, disabling.
#![allow(clippy::unwrap_used, clippy::panic)]

use async_trait::async_trait;
use chrono::{DateTime, Duration as CDuration, Utc};
use futures::StreamExt;
use mailroom_core::events::Subject;
use mailroom_core::lifecycle::EventKind;
use mailroom_core::memory::MemoryStorage;
use mailroom_core::ports::ManualClock;
use mailroom_core::request::{EmailRequest, OneOrMany, TagRequest};
use mailroom_core::sandbox::SandboxTransport;
use mailroom_core::webhooks::{
    DispatchConfig, Dispatcher, MessageStatus, WebhookReply, WebhookSender, WebhookUpdate, sign,
};
use mailroom_core::worker::WorkerConfig;
use mailroom_core::{Engine, SendOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc()
}

/// One request as received: headers and body.
type Received = (Vec<(String, String)>, String);

/// A receiver: answers from a script (then 200), records every request.
#[derive(Debug, Default)]
struct Receiver {
    script: Mutex<Vec<u16>>,
    got: Mutex<Vec<Received>>,
}

#[async_trait]
impl WebhookSender for Receiver {
    async fn post(
        &self,
        _url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
        _timeout: Duration,
    ) -> Result<WebhookReply, String> {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        self.got.lock().unwrap().push((headers, String::from_utf8(body.to_vec()).unwrap()));
        let mut script = self.script.lock().unwrap();
        let status = if script.is_empty() { 200 } else { script.remove(0) };
        if status == 0 {
            return Err("connection refused".into());
        }
        Ok(WebhookReply { status, body: format!("answer {status}") })
    }
}

impl Receiver {
    fn header(&self, n: usize, name: &str) -> String {
        let got = self.got.lock().unwrap();
        got[n].0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap()
    }
    fn bodies(&self) -> Vec<serde_json::Value> {
        self.got.lock().unwrap().iter().map(|(_, b)| serde_json::from_str(b).unwrap()).collect()
    }
}

struct Setup {
    engine: Engine,
    clock: ManualClock,
    receiver: Arc<Receiver>,
    dispatcher: Dispatcher,
}

fn setup() -> Setup {
    let store = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(t0());
    let engine = Engine::builder(store.clone()).clock(Arc::new(clock.clone())).build();
    let receiver = Arc::new(Receiver::default());
    let dispatcher = Dispatcher::new(store, Arc::new(clock.clone()), receiver.clone(), DispatchConfig::default());
    Setup { engine, clock, receiver, dispatcher }
}

fn email(to: &str) -> EmailRequest {
    EmailRequest {
        from: Some("Acme <onboarding@acme.test>".into()),
        to: Some(OneOrMany::One(to.into())),
        subject: Some("Hello".into()),
        html: Some("<p>Hello</p>".into()),
        tags: Some(vec![TagRequest { name: Some("category".into()), value: Some("welcome".into()) }]),
        ..Default::default()
    }
}

impl Setup {
    async fn work(&self) {
        let sandbox = SandboxTransport::default();
        self.engine.worker(Arc::new(sandbox), WorkerConfig::default()).run_until_idle().await.unwrap();
    }
}

#[tokio::test]
async fn the_log_holds_every_event_of_every_email_in_order_and_follows_by_cursor() {
    let s = setup();
    let a = s.engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap().id;
    let b = s.engine.send(email("bounced@resend.dev"), SendOptions::default()).await.unwrap().id;
    s.work().await;
    s.engine.unsuppress("bounced@resend.dev").await.unwrap();
    let log = s.engine.events(0, 100).await.unwrap();
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    for id in [a, b] {
        let on_email: Vec<EventKind> =
            s.engine.get_record(id).await.unwrap().state.events.iter().map(|e| e.kind).collect();
        let in_log: Vec<EventKind> = log
            .iter()
            .filter_map(|e| match &e.subject {
                Subject::Email { id: i, event } if *i == id => Some(event.kind),
                _ => None,
            })
            .collect();
        assert_eq!(on_email, in_log, "{id}");
    }
    let types: Vec<&str> = log.iter().map(|e| e.type_name()).filter(|t| t.starts_with("suppression")).collect();
    assert_eq!(types, ["suppression.added", "suppression.removed"]);
    // By cursor, a page at a time, nothing skipped or repeated.
    let mut seen = vec![];
    let mut after = 0;
    loop {
        let page = s.engine.events(after, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        seen.extend(page.into_iter().map(|e| e.seq));
    }
    assert_eq!(seen, log.iter().map(|e| e.seq).collect::<Vec<_>>());
    // A subscription from a cursor resumes exactly after it, and waits for what comes next.
    let mid = log[2].seq;
    let mut sub = Box::pin(s.engine.subscribe(mid));
    for want in &log[3..] {
        assert_eq!(sub.next().await.unwrap().unwrap().seq, want.seq);
    }
    let c = s.engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap().id;
    let next = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.email_id(), Some(c));
    assert_eq!(next.type_name(), "email.queued");
}

#[tokio::test]
async fn payloads_are_the_hosted_shape_and_signed_with_the_secret() {
    let s = setup();
    let events = ["email.sent", "email.delivered", "email.bounced", "suppression.added"].map(String::from);
    let hook = s.engine.create_webhook("https://hooks.example.com/in", &events).await.unwrap();
    assert!(hook.secret.starts_with("whsec_"));
    let id = s.engine.send(email("bounced@resend.dev"), SendOptions::default()).await.unwrap().id;
    s.work().await;
    let r = s.dispatcher.run_once().await.unwrap();
    assert_eq!((r.fanned_out, r.attempted, r.delivered), (3, 3, 3));
    let bodies = s.receiver.bodies();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["email.sent", "email.bounced", "suppression.added"]);
    let bounced = &bodies[1];
    assert_eq!(bounced["data"]["email_id"], id.to_string());
    assert_eq!(bounced["data"]["from"], "Acme <onboarding@acme.test>");
    assert_eq!(bounced["data"]["to"], serde_json::json!(["bounced@resend.dev"]));
    assert_eq!(bounced["data"]["tags"], serde_json::json!({ "category": "welcome" }));
    assert_eq!(bounced["data"]["bounce"]["type"], "Permanent");
    assert!(bounced["data"]["bounce"]["subType"].is_string());
    assert!(bounced["data"]["bounce"]["message"].is_string());
    assert_eq!(bodies[2]["data"]["origin"], "bounce");
    assert_eq!(bodies[2]["data"]["source_id"], id.to_string());
    // The signature is the secret's HMAC over "{id}.{timestamp}.{body}".
    let (msg, ts) = (s.receiver.header(1, "svix-id"), s.receiver.header(1, "svix-timestamp"));
    let body = s.receiver.got.lock().unwrap()[1].1.clone();
    assert_eq!(s.receiver.header(1, "svix-signature"), sign(&hook.secret, &msg, ts.parse().unwrap(), body.as_bytes()));
    assert_eq!(ts, t0().timestamp().to_string());
    // Nothing more to send: a second pass does nothing.
    assert_eq!(s.dispatcher.run_once().await.unwrap().attempted, 0);
}

#[tokio::test]
async fn failures_are_retried_on_the_hosted_schedule_with_the_same_id() {
    let s = setup();
    *s.receiver.script.lock().unwrap() = vec![500, 0, 302];
    let hook = s.engine.create_webhook("https://hooks.example.com/in", &["email.sent".into()]).await.unwrap();
    s.engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap();
    s.work().await;
    assert_eq!(s.dispatcher.run_once().await.unwrap().attempted, 1); // 500
    let (msgs, _) = s.engine.webhook_messages(&hook.id, None, 10).await.unwrap();
    let m = &msgs[0];
    assert_eq!(m.status, MessageStatus::Attempting);
    // A cursor that is no event id is refused saying what an event id is (not "a UUID").
    let err = s.engine.webhook_messages(&hook.id, Some("msg_nope"), 10).await.unwrap_err();
    assert!(err.to_string().contains("`after`") && err.to_string().contains("`msg_…`"), "{err}");
    assert_eq!(m.next_attempt_at, Some(t0() + CDuration::seconds(5)));
    // Not due yet: nothing happens before 5 s.
    s.clock.advance(CDuration::seconds(4));
    assert_eq!(s.dispatcher.run_once().await.unwrap().attempted, 0);
    s.clock.advance(CDuration::seconds(1));
    assert_eq!(s.dispatcher.run_once().await.unwrap().attempted, 1); // no connection
    s.clock.advance(CDuration::minutes(5));
    assert_eq!(s.dispatcher.run_once().await.unwrap().attempted, 1); // 302 is a failure
    s.clock.advance(CDuration::minutes(30));
    assert_eq!(s.dispatcher.run_once().await.unwrap().delivered, 1);
    let m = s.engine.webhook_message(&hook.id, &m.id).await.unwrap();
    assert_eq!(m.status, MessageStatus::Success);
    assert_eq!(m.attempts.len(), 4);
    assert_eq!(m.attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(), [Some(500), None, Some(302), Some(200)]);
    let ids: Vec<String> = (0..4).map(|n| s.receiver.header(n, "svix-id")).collect();
    assert!(ids.iter().all(|i| *i == m.id), "{ids:?}");
    let stamps: Vec<String> = (0..4).map(|n| s.receiver.header(n, "svix-timestamp")).collect();
    assert_ne!(stamps[0], stamps[3], "each attempt has its own timestamp");
}

#[tokio::test]
async fn eight_failures_end_failed_and_five_days_of_failure_disable_the_endpoint() {
    let s = setup();
    *s.receiver.script.lock().unwrap() = vec![503; 100];
    let hook = s.engine.create_webhook("https://hooks.example.com/in", &["email.queued".into()]).await.unwrap();
    s.engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap();
    for _ in 0..8 {
        assert_eq!(s.dispatcher.run_once().await.unwrap().attempted, 1);
        s.clock.advance(CDuration::hours(10));
    }
    let (msgs, _) = s.engine.webhook_messages(&hook.id, None, 10).await.unwrap();
    assert_eq!((msgs[0].status, msgs[0].next_attempt_at), (MessageStatus::Failed, None));
    assert!(s.engine.webhook(&hook.id).await.unwrap().enabled, "failing 3 days is not 5");
    // A replay is one extra attempt, and it still fails.
    s.engine.replay_webhook_message(&hook.id, &msgs[0].id).await.unwrap();
    assert_eq!(s.dispatcher.run_once().await.unwrap().attempted, 1);
    assert_eq!(s.engine.webhook_message(&hook.id, &msgs[0].id).await.unwrap().status, MessageStatus::Failed);
    // Days later, still failing: the endpoint is disabled and its next message never tried.
    s.clock.advance(CDuration::days(3));
    s.engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap();
    assert_eq!(s.dispatcher.run_once().await.unwrap().attempted, 1);
    let h = s.engine.webhook(&hook.id).await.unwrap();
    assert!(!h.enabled && h.health.disabled, "{h:?}");
    s.engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap();
    s.clock.advance(CDuration::days(1));
    assert_eq!(s.dispatcher.run_once().await.unwrap().attempted, 0);
    // Enabled again: from the next event on.
    s.engine.update_webhook(&hook.id, WebhookUpdate::new().enabled(true)).await.unwrap();
    *s.receiver.script.lock().unwrap() = vec![];
    s.engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap();
    assert_eq!(s.dispatcher.run_once().await.unwrap().delivered, 1);
}

#[tokio::test]
async fn a_replay_succeeding_ends_the_message_and_rotation_signs_twice() {
    let s = setup();
    *s.receiver.script.lock().unwrap() = vec![500];
    let hook = s.engine.create_webhook("http://127.0.0.1:9/in", &["email.queued".into()]).await.unwrap();
    s.engine.send(email("delivered@resend.dev"), SendOptions::default()).await.unwrap();
    s.dispatcher.run_once().await.unwrap();
    let (msgs, _) = s.engine.webhook_messages(&hook.id, None, 10).await.unwrap();
    let rotated = s.engine.rotate_webhook_secret(&hook.id).await.unwrap();
    assert_ne!(rotated.secret, hook.secret);
    s.engine.replay_webhook_message(&hook.id, &msgs[0].id).await.unwrap();
    assert_eq!(s.dispatcher.run_once().await.unwrap().delivered, 1);
    let m = s.engine.webhook_message(&hook.id, &msgs[0].id).await.unwrap();
    assert_eq!((m.status, m.next_attempt_at), (MessageStatus::Success, None));
    let sig = s.receiver.header(1, "svix-signature");
    let parts: Vec<&str> = sig.split(' ').collect();
    assert_eq!(parts.len(), 2, "new and old secrets both sign: {sig}");
    let body = s.receiver.got.lock().unwrap()[1].1.clone();
    let ts: i64 = s.receiver.header(1, "svix-timestamp").parse().unwrap();
    assert_eq!(parts[1], sign(&hook.secret, &m.id, ts, body.as_bytes()));
    assert_eq!(parts[0], sign(&rotated.secret, &m.id, ts, body.as_bytes()));
}

#[tokio::test]
async fn endpoints_and_event_types_are_checked() {
    let s = setup();
    for (url, events) in [
        ("ftp://x.example/", vec!["email.sent"]),
        ("not a url", vec!["email.sent"]),
        ("https://user:pw@x.example/", vec!["email.sent"]),
        ("https://x.example/", vec![]),
        ("https://x.example/", vec!["email.exploded"]),
    ] {
        let events: Vec<String> = events.into_iter().map(String::from).collect();
        let e = s.engine.create_webhook(url, &events).await.unwrap_err();
        assert_eq!(e.status(), 422, "{url} {events:?}: {e}");
    }
    assert!(s.engine.webhooks().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_account_has_at_most_a_hundred_endpoints() {
    let s = setup();
    for i in 0..mailroom_core::webhooks::MAX_WEBHOOKS {
        s.engine.create_webhook(&format!("https://x.example/{i}"), &["email.sent".into()]).await.unwrap();
    }
    let e = s.engine.create_webhook("https://x.example/one-more", &["email.sent".into()]).await.unwrap_err();
    assert_eq!(e.status(), 422, "{e}");
    assert!(e.to_string().contains("webhooks"), "{e}");
    let h = s.engine.webhooks().await.unwrap();
    assert_eq!(h.len(), 100);
    s.engine.delete_webhook(&h[0].id).await.unwrap();
    s.engine.create_webhook("https://x.example/again", &["email.sent".into()]).await.unwrap();
}
