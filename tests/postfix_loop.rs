//! The whole bounce loop against a real postfix: the engine sends through the SMTP transport
//! to a throw-away postfix on 127.0.0.1 (started here from `tests/peers/setup-postfix.sh`),
//! which accepts mail for an unknown local user and then returns a genuine DSN to the VERP
//! return path; the DSN, fed to the bounce reader, ends the email `bounced` (Permanent) and
//! puts the address on the suppression list.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;

use mailroom::core::lifecycle::EventKind;
use mailroom::core::memory::MemoryStorage;
use mailroom::core::request::{EmailRequest, OneOrMany};
use mailroom::core::worker::WorkerConfig;
use mailroom::core::{Engine, SendOptions};
use mailroom::smtp::{RelayTarget, SmtpConfig, SmtpTransport};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Postfix(common::peers::Postfix);

impl Postfix {
    fn start(base: &Path) -> Postfix {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/setup-postfix.sh");
        Postfix(common::peers::Postfix::start(&script, base, None, ""))
    }

    /// Waits for a message in the maildir of `bounces@bounces.test`.
    fn next_bounce(&self, within: Duration) -> Vec<u8> {
        let new = self.0.base.join("mail/bounces/new");
        let deadline = Instant::now() + within;
        loop {
            if let Some(entry) = std::fs::read_dir(&new).ok().and_then(|mut d| d.find_map(Result::ok)) {
                return std::fs::read(entry.path()).unwrap();
            }
            assert!(Instant::now() < deadline, "no DSN arrived in {}", new.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_bounces_back_through_postfix_and_is_suppressed() {
    let dir = tempfile::tempdir().unwrap();
    let postfix = Postfix::start(&dir.path().join("postfix"));

    let engine = Engine::builder(Arc::new(MemoryStorage::new())).bounce_domain("bounces.test").build();
    let request = EmailRequest {
        from: Some("Acme <hello@acme.test>".into()),
        to: Some(OneOrMany::One("nosuchuser@mx.test".into())),
        subject: Some("Welcome".into()),
        text: Some("Hello.".into()),
        ..Default::default()
    };
    let id = engine.send(request, SendOptions::default()).await.unwrap().id;

    let target = RelayTarget::parse(&format!("smtp://127.0.0.1:{}?tls=none", postfix.0.port)).unwrap();
    let transport = Arc::new(SmtpTransport::new(SmtpConfig::relay(target)).unwrap());
    let report = engine.worker(transport, WorkerConfig::default()).run_until_idle().await.unwrap();
    assert_eq!(report.handed_over, 1);
    // Postfix took it (250): sent, its fate unknown yet.
    assert_eq!(engine.get(id).await.unwrap().last_event, Some(EventKind::Sent));

    let dsn = postfix.next_bounce(Duration::from_secs(30));
    let text = String::from_utf8_lossy(&dsn);
    assert!(text.contains("report-type=delivery-status"), "a genuine DSN: {text}");
    let ingested = engine.ingest_bounce(&dsn).await.unwrap();
    assert_eq!(ingested.email, Some(id), "the VERP return path links the DSN to its email");

    let view = engine.get(id).await.unwrap();
    assert_eq!(view.last_event, Some(EventKind::Bounced));
    let json = serde_json::to_value(&view).unwrap();
    assert!(json.to_string().contains("\"Permanent\""), "a permanent bounce: {json}");
    let entry = engine.suppression("nosuchuser@mx.test").await.unwrap();
    assert!(entry.is_some(), "the address is suppressed");
}
