//! The SMTP transport in relay mode against real peers started here: Debian postfix's
//! `smtp-sink` (accepting, refusing every RCPT, disconnecting, stalling) and an aiosmtpd
//! server whose answers depend on the recipient (mixed transactions, AUTH, STARTTLS).
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod peers;

use mailroom_core::bounce::Stage;
use mailroom_core::email::EmailId;
use mailroom_core::ports::{DeliveryReport, Envelope, RecipientStatus, Transport, TransportErrorKind};
use mailroom_smtp::{RelayTarget, SmtpConfig, SmtpTransport, Timeouts};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn transport(url: &str, tweak: impl FnOnce(&mut SmtpConfig)) -> SmtpTransport {
    let mut cfg = SmtpConfig::relay(RelayTarget::parse(url).unwrap());
    cfg.helo_name = "client.test".into();
    let s = Duration::from_secs;
    cfg.timeouts = Timeouts {
        connect: s(5),
        greeting: s(5),
        ehlo: s(5),
        starttls: s(5),
        command: s(5),
        data_body: s(5),
        final_reply: s(5),
    };
    tweak(&mut cfg);
    SmtpTransport::new(cfg).unwrap()
}

fn envelope(to: &[&str]) -> Envelope {
    Envelope::new(EmailId::from_u128(7), "bounces+7@bounce.test", to.iter().map(|s| s.to_string()).collect())
}

/// A 2 KB message with CRLF line endings and a line that needs dot-stuffing.
fn message(extra_header: &str) -> Vec<u8> {
    let mut m = format!("From: a@sender.test\r\nTo: b@example.test\r\nSubject: hi\r\n{extra_header}\r\n");
    m.push_str(".a line that starts with a dot\r\n");
    while m.len() < 2048 {
        m.push_str("0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n");
    }
    m.into_bytes()
}

fn statuses(r: &DeliveryReport) -> Vec<(String, RecipientStatus, String)> {
    r.recipients
        .iter()
        .map(|x| (x.recipient.clone(), x.status, x.reply.as_ref().map(ToString::to_string).unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_accepts_every_recipient_over_one_reused_connection() {
    let peer = peers::smtpd(&[]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", peer.port), |c| c.max_connections = 1);
    for _ in 0..5 {
        let r = t.send_raw(&envelope(&["one@example.test", "two@example.test"]), &message("")).await.unwrap();
        for (rcpt, status, reply) in statuses(&r) {
            assert_eq!(status, RecipientStatus::Relayed, "{rcpt}: {reply}");
            assert!(reply.starts_with("250 2.0.0"), "{reply}");
        }
    }
    let printed = peer.stop();
    assert!(
        printed.contains("connections=1 accepted=5 resets=0"),
        "five messages over one session, no RSET between finished transactions: {printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_transaction_delivers_to_the_accepted_and_reports_each_refusal() {
    let peer = peers::smtpd(&[]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", peer.port), |_| {});
    let env = envelope(&["ok@example.test", "hard@example.test", "full@example.test", "block@example.test"]);
    let r = t.send_raw(&env, &message("")).await.unwrap();
    let got = statuses(&r);
    assert_eq!(got[0].1, RecipientStatus::Relayed);
    assert_eq!(
        (got[1].1, got[1].2.as_str()),
        (RecipientStatus::Rejected, "550 5.1.1 <hard@example.test>: Recipient address rejected: User unknown")
    );
    assert_eq!(
        (got[2].1, got[2].2.as_str()),
        (RecipientStatus::Deferred, "452 4.2.2 <full@example.test>: Mailbox full")
    );
    assert_eq!(
        (got[3].1, got[3].2.as_str()),
        (RecipientStatus::Rejected, "554 5.7.1 <block@example.test>: Relay access denied")
    );
    // Each refusal says the step it answered: these were RCPT TO's, read as such.
    assert!(r.recipients[1..].iter().all(|x| x.stage == Stage::Recipient), "{:?}", r.recipients);
    // A transaction where every recipient is refused sends no DATA; the session stays usable.
    let r = t.send_raw(&envelope(&["hard@example.test"]), &message("")).await.unwrap();
    assert_eq!(r.recipients[0].status, RecipientStatus::Rejected);
    let r = t.send_raw(&envelope(&["ok@example.test"]), &message("X-Test-Reject: data")).await.unwrap();
    assert_eq!(statuses(&r)[0].1, RecipientStatus::Rejected);
    assert_eq!(statuses(&r)[0].2, "554 5.6.0 Message content rejected");
    // DATA's refusal judged the message, not this recipient.
    assert_eq!(r.recipients[0].stage, Stage::Message);
    let printed = peer.stop();
    assert!(printed.contains("accepted=1"), "only the first message was accepted: {printed}");
    assert!(printed.contains("resets=1"), "one RSET, after the transaction that sent no DATA: {printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rcpt_refused_permanently_or_temporarily_by_smtp_sink() {
    let hard = peers::smtp_sink(&["-f", "RCPT", "-B", "550 5.1.1 Recipient address rejected: User unknown"]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", hard.port), |_| {});
    let r = t.send_raw(&envelope(&["a@example.test", "b@example.test"]), &message("")).await.unwrap();
    for (_, status, reply) in statuses(&r) {
        assert_eq!(status, RecipientStatus::Rejected);
        assert_eq!(reply, "550 5.1.1 Recipient address rejected: User unknown");
    }
    let soft = peers::smtp_sink(&["-r", "RCPT", "-b", "452 4.2.2 Mailbox full"]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", soft.port), |_| {});
    let r = t.send_raw(&envelope(&["a@example.test"]), &message("")).await.unwrap();
    assert_eq!(statuses(&r)[0], ("a@example.test".into(), RecipientStatus::Deferred, "452 4.2.2 Mailbox full".into()));
}

/// A relay that refuses our MAIL FROM refuses the message as a whole, and says so: the
/// refusal names the step, so the worker never reads it as a verdict on a recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mail_from_is_reported_as_that_step() {
    let sink = peers::smtp_sink(&["-f", "MAIL", "-B", "550 5.1.1 Sender address rejected: User unknown"]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", sink.port), |_| {});
    let err = t.send_raw(&envelope(&["a@example.test"]), &message("")).await.unwrap_err();
    assert_eq!((err.kind, err.stage), (TransportErrorKind::Permanent, Stage::Sender), "{err:?}");
    assert_eq!(err.reply.map(|r| r.code), Some(550));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_before_the_dot_hands_nothing_over_and_after_it_is_ambiguous() {
    // 421 and disconnect in answer to DATA: the body was never sent.
    let before = peers::smtp_sink(&["-Q", "DATA"]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", before.port), |_| {});
    let r = t.send_raw(&envelope(&["a@example.test"]), &message("")).await.unwrap();
    let (_, status, reply) = &statuses(&r)[0];
    assert_eq!(*status, RecipientStatus::Deferred, "{reply}");
    assert!(reply.starts_with("421"), "{reply}");
    // Disconnect without a reply after the end-of-data dot: it may have been accepted.
    let after = peers::smtp_sink(&["-q", "."]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", after.port), |_| {});
    let e = t.send_raw(&envelope(&["a@example.test"]), &message("")).await.unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Ambiguous, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_step_can_hang() {
    // The server sits on RCPT: the command deadline ends it, nothing was handed over.
    let stall = peers::smtp_sink(&["-W", "rcpt:30"]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", stall.port), |c| {
        c.timeouts.command = Duration::from_millis(500);
    });
    let t0 = Instant::now();
    let e = t.send_raw(&envelope(&["a@example.test"]), &message("")).await.unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Transient, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    // The server sits on the end of data: the final-reply deadline ends it, ambiguously.
    let stall = peers::smtp_sink(&["-W", ".:30"]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", stall.port), |c| {
        c.timeouts.final_reply = Duration::from_millis(500);
    });
    let t0 = Instant::now();
    let e = t.send_raw(&envelope(&["a@example.test"]), &message("")).await.unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Ambiguous, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    // Nobody listens: connection refused is transient.
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", peers::free_port()), |_| {});
    let e = t.send_raw(&envelope(&["a@example.test"]), &message("")).await.unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Transient, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_auth_against_a_relay_that_requires_both() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = peers::self_signed(dir.path());
    let peer = peers::smtpd(&["--tls", cert.to_str().unwrap(), key.to_str().unwrap(), "--auth", "user:s3cret"]);
    let t = transport(&format!("smtp://user:s3cret@localhost:{}?tls=required", peer.port), |c| {
        c.accept_invalid_certs = true
    });
    let r = t.send_raw(&envelope(&["ok@example.test"]), &message("")).await.unwrap();
    assert_eq!(statuses(&r)[0].1, RecipientStatus::Relayed, "{:?}", statuses(&r));
    // Wrong password: the server's refusal is kept.
    let t = transport(&format!("smtp://user:wrong@localhost:{}?tls=required", peer.port), |c| {
        c.accept_invalid_certs = true
    });
    let e = t.send_raw(&envelope(&["ok@example.test"]), &message("")).await.unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Transient, "{e}");
    assert!(e.reply.as_ref().is_some_and(|r| r.code == 535), "{e:?}");
    // Without accepting the self-signed certificate, TLS fails and nothing is sent.
    let t = transport(&format!("smtp://user:s3cret@localhost:{}?tls=required", peer.port), |_| {});
    let e = t.send_raw(&envelope(&["ok@example.test"]), &message("")).await.unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::Transient, "{e}");
    assert!(peer.stop().contains("accepted=1"));
}

/// The worker and the retry policy over a real deferring server: a `452 4.2.2` answer
/// schedules retries on the documented backoff, `delivery_delayed` is recorded once, and
/// when the 72 h window closes the email ends `bounced` (Transient) with the last reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_recipient_is_retried_then_bounced_transient_when_the_window_closes() {
    use mailroom_core::lifecycle::EventKind;
    use mailroom_core::memory::MemoryStorage;
    use mailroom_core::ports::ManualClock;
    use mailroom_core::request::{EmailRequest, OneOrMany};
    use mailroom_core::worker::WorkerConfig;
    use mailroom_core::{Engine, SendOptions};

    let peer = peers::smtpd(&[]);
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let engine = Engine::builder(Arc::new(MemoryStorage::new())).clock(clock.clone()).build();
    let request = EmailRequest {
        from: Some("Acme <hi@acme.test>".into()),
        to: Some(OneOrMany::One("full@example.test".into())),
        subject: Some("Hi".into()),
        text: Some("hello".into()),
        ..Default::default()
    };
    let id = engine.send(request, SendOptions::default()).await.unwrap().id;
    let t = Arc::new(transport(&format!("smtp://127.0.0.1:{}?tls=none", peer.port), |_| {}));
    let mut attempts = 0;
    loop {
        let report = engine.worker(t.clone(), WorkerConfig::default()).run_until_idle().await.unwrap();
        attempts += report.handed_over;
        let rec = engine.get_record(id).await.unwrap();
        if rec.state.last_event() != Some(EventKind::DeliveryDelayed) {
            break;
        }
        // Jump to the next attempt (the policy's waits: 2 m, 5 m, 15 m, ... every 8 h).
        let due = rec.state.due_at.expect("a retry is scheduled");
        clock.set(due);
        assert!(attempts < 30, "the retry window never closed");
    }
    let rec = engine.get_record(id).await.unwrap();
    let kinds: Vec<EventKind> = rec.state.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == EventKind::DeliveryDelayed).count(), 1, "{kinds:?}");
    assert_eq!(rec.state.last_event(), Some(EventKind::Bounced), "{kinds:?}");
    let view = serde_json::to_string(&engine.get(id).await.unwrap()).unwrap();
    assert!(view.contains("Transient") && view.contains("452"), "{view}");
    // The first attempt, then retries after 2 m, 5 m, 15 m, 30 m, 1 h, 2 h, 4 h, 8 h (at 15 h 52 m)
    // and every 8 h while within 72 h (7 more, the last at 71 h 52 m): 16 attempts.
    assert_eq!(attempts, 16, "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_with_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = peers::self_signed(dir.path());
    let peer = peers::smtpd(&["--implicit-tls", cert.to_str().unwrap(), key.to_str().unwrap(), "--auth", "user:pw"]);
    let t = transport(&format!("smtps://user:pw@localhost:{}", peer.port), |c| c.accept_invalid_certs = true);
    let r = t.send_raw(&envelope(&["ok@example.test"]), &message("")).await.unwrap();
    assert_eq!(statuses(&r)[0].1, RecipientStatus::Relayed, "{:?}", statuses(&r));
    assert!(peer.stop().contains("accepted=1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hand_overs_share_a_bounded_set_of_connections() {
    let peer = peers::smtpd(&[]);
    let t = Arc::new(transport(&format!("smtp://127.0.0.1:{}?tls=none", peer.port), |c| {
        c.max_connections = 2;
        c.max_per_destination = 2;
    }));
    let sends = (0..12).map(|_| {
        let t = t.clone();
        tokio::spawn(async move { t.send_raw(&envelope(&["ok@example.test"]), &message("")).await })
    });
    for s in sends.collect::<Vec<_>>() {
        assert_eq!(s.await.unwrap().unwrap().recipients[0].status, RecipientStatus::Relayed);
    }
    let printed = peer.stop();
    let connections: usize = printed
        .split_whitespace()
        .find_map(|w| w.strip_prefix("connections="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    assert!(connections <= 2 && printed.contains("accepted=12"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_past_its_timeout_is_not_reused() {
    let peer = peers::smtpd(&[]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", peer.port), |c| {
        c.idle_timeout = Duration::from_millis(200);
        c.health_check_after = Duration::from_millis(50);
    });
    t.send_raw(&envelope(&["ok@example.test"]), &message("")).await.unwrap();
    // Reused after a NOOP probe (idle 100 ms > 50 ms), then replaced after 300 ms idle.
    tokio::time::sleep(Duration::from_millis(100)).await;
    t.send_raw(&envelope(&["ok@example.test"]), &message("")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.send_raw(&envelope(&["ok@example.test"]), &message("")).await.unwrap();
    let printed = peer.stop();
    assert!(printed.contains("connections=2 accepted=3"), "{printed}");
}

/// A sending domain that enforces TLS: its mail never goes over a plain connection — not a
/// new one to a server without STARTTLS, not one pooled for other mail, not through a relay
/// configured without TLS — while other mail still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_that_requires_tls_never_goes_in_plain() {
    let peer = peers::smtpd(&[]);
    let t = transport(&format!("smtp://127.0.0.1:{}", peer.port), |c| c.max_connections = 2);
    let plain = t.send_raw(&envelope(&["one@example.test"]), &message("")).await.unwrap();
    assert_eq!(plain.recipients[0].status, RecipientStatus::Relayed, "opportunistic: plain is fine");
    let err = t.send_raw(&envelope(&["one@example.test"]).require_tls(true), &message("")).await.unwrap_err();
    assert!(err.message.contains("STARTTLS"), "{err:?}");
    let printed = peer.stop();
    assert!(printed.contains("accepted=1"), "{printed}");

    let peer = peers::smtpd(&[]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", peer.port), |_| {});
    let err = t.send_raw(&envelope(&["one@example.test"]).require_tls(true), &message("")).await.unwrap_err();
    assert_eq!(err.kind, TransportErrorKind::Permanent, "{err:?}");
    assert!(peer.stop().contains("accepted=0"));
}

/// RFC 6531: an address with a UTF-8 local part goes out with `SMTPUTF8` on MAIL FROM, as
/// it is (never rewritten), to a server that offers the extension; to one that does not,
/// each recipient fails for good with 5.6.7 and nothing is sent; ASCII mail is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internationalised_addresses_need_a_server_that_takes_smtputf8() {
    let dir = tempfile::tempdir().unwrap();
    let utf8 = "jörg@xn--bcher-kva.example";
    let message =
        format!("From: a@acme.test\r\nTo: {utf8}\r\nSubject: Grüße\r\nMessage-ID: <1@acme.test>\r\n\r\nHallo\r\n");
    let ascii = "From: a@acme.test\r\nTo: b@example.test\r\nSubject: hi\r\nMessage-ID: <2@acme.test>\r\n\r\nhi\r\n";

    let saved = dir.path().join("yes");
    std::fs::create_dir(&saved).unwrap();
    let peer = peers::smtpd(&["--save", saved.to_str().unwrap()]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", peer.port), |_| {});
    let r = t.send_raw(&envelope(&[utf8]), message.as_bytes()).await.unwrap();
    assert_eq!(r.recipients[0].status, RecipientStatus::Relayed, "{:?}", r.recipients[0].reply);
    let r = t.send_raw(&envelope(&["b@example.test"]), ascii.as_bytes()).await.unwrap();
    assert_eq!(r.recipients[0].status, RecipientStatus::Relayed);
    assert!(peer.stop().contains("accepted=2"));
    let env = |n: u32| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(saved.join(format!("{n}.json"))).unwrap()).unwrap()
    };
    assert_eq!(env(1)["mail_options"], serde_json::json!(["SMTPUTF8"]));
    assert_eq!(env(1)["rcpt_tos"], serde_json::json!([utf8]), "the address as it is");
    assert!(String::from_utf8(std::fs::read(saved.join("1.eml")).unwrap()).unwrap().contains(&format!("To: {utf8}")));
    assert_eq!(env(2)["mail_options"], serde_json::json!([]), "ASCII mail declares nothing");

    let peer = peers::smtpd(&["--no-smtputf8"]);
    let t = transport(&format!("smtp://127.0.0.1:{}?tls=none", peer.port), |_| {});
    let r = t.send_raw(&envelope(&[utf8, "b@example.test"]), message.as_bytes()).await.unwrap();
    for rcpt in &r.recipients {
        let reply = rcpt.reply.as_ref().unwrap();
        let status = reply.enhanced.map(|e| e.to_string());
        assert_eq!((rcpt.status, status.as_deref()), (RecipientStatus::Rejected, Some("5.6.7")), "{reply}");
    }
    let r = t.send_raw(&envelope(&["b@example.test"]), ascii.as_bytes()).await.unwrap();
    assert_eq!(r.recipients[0].status, RecipientStatus::Relayed, "ASCII mail still goes");
    assert!(peer.stop().contains("accepted=1"));
}
