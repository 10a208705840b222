//! The SMTP transport in direct mode: MX hosts found through a real dnsmasq, delivery to an
//! aiosmtpd server standing in for them (on a high port: direct mode's port is configurable
//! for exactly this).
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../../dns/tests/support/dnsmasq.rs"]
mod dnsmasq;
mod peers;

use mailroom_core::email::EmailId;
use mailroom_core::ports::{Envelope, RecipientStatus, Transport};
use mailroom_dns::HickoryResolver;
use mailroom_smtp::{Mode, SmtpConfig, SmtpTransport};
use std::sync::Arc;

fn envelope(to: &[&str]) -> Envelope {
    Envelope::new(EmailId::from_u128(9), "bounces+9@bounce.test", to.iter().map(|s| s.to_string()).collect())
}

const MESSAGE: &[u8] = b"From: a@sender.test\r\nTo: b@acme.test\r\nSubject: hi\r\n\r\nhello\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_order_fallbacks_null_mx_and_absent_domains() {
    let smtpd = peers::smtpd(&[]);
    let dns = dnsmasq::start(&[
        // acme.test: the preferred MX host has an address where nothing listens (refused),
        // the second one is the server.
        "--mx-host=acme.test,dead.acme.test,10".into(),
        "--mx-host=acme.test,mx.acme.test,20".into(),
        "--host-record=dead.acme.test,127.0.0.2".into(),
        "--host-record=mx.acme.test,127.0.0.1".into(),
        // plain.test has no MX: its own address is the implicit MX.
        "--host-record=plain.test,127.0.0.1".into(),
        // void.test publishes a null MX (RFC 7505).
        "--mx-host=void.test,.,0".into(),
    ]);
    let mut config = SmtpConfig::direct(Arc::new(HickoryResolver::with_nameserver(dns.addr)));
    if let Mode::Direct { port, .. } = &mut config.mode {
        *port = smtpd.port;
    }
    config.timeouts.connect = std::time::Duration::from_secs(2);
    let t = SmtpTransport::new(config).unwrap();
    let env = envelope(&["ok@acme.test", "hard@acme.test", "ok@plain.test", "ok@void.test", "ok@nowhere.test"]);
    let r = t.send_raw(&env, MESSAGE).await.unwrap();
    let got: Vec<(&str, RecipientStatus, String)> = r
        .recipients
        .iter()
        .map(|x| (x.recipient.as_str(), x.status, x.reply.as_ref().map(ToString::to_string).unwrap_or_default()))
        .collect();
    assert_eq!((got[0].0, got[0].1), ("ok@acme.test", RecipientStatus::Delivered), "{got:?}");
    assert_eq!((got[1].1, &got[1].2[..9]), (RecipientStatus::Rejected, "550 5.1.1"), "{got:?}");
    assert_eq!((got[2].0, got[2].1), ("ok@plain.test", RecipientStatus::Delivered), "{got:?}");
    assert_eq!((got[3].1, &got[3].2[..10]), (RecipientStatus::Rejected, "556 5.1.10"), "{got:?}");
    assert_eq!((got[4].1, &got[4].2[..9]), (RecipientStatus::Rejected, "550 5.1.2"), "{got:?}");
    // Two transactions reached the server (acme.test and plain.test), one message each.
    assert!(smtpd.stop().contains("accepted=2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_failure_defers_instead_of_guessing() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = SmtpTransport::new(SmtpConfig::direct(Arc::new(HickoryResolver::with_nameserver(
        silent.local_addr().unwrap(),
    ))))
    .unwrap();
    let r = t.send_raw(&envelope(&["a@acme.test"]), MESSAGE).await.unwrap();
    assert_eq!(r.recipients[0].status, RecipientStatus::Deferred, "{:?}", r.recipients[0]);
    assert_eq!(r.recipients[0].reply.as_ref().map(|r| r.code), Some(451));
}
