//! DKIM: messages the transport sends carry a signature that mail-auth verifies against the
//! public key published in a real dnsmasq (RSA-SHA256 and Ed25519).
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "../../dns/tests/support/dnsmasq.rs"]
mod dnsmasq;
mod peers;

use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use mailroom_core::email::EmailId;
use mailroom_core::ports::{Envelope, RecipientStatus, Transport};
use mailroom_smtp::{DkimKey, RelayTarget, SmtpConfig, SmtpTransport};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// (private key PEM, DKIM `p=` value) for `algorithm` (`rsa` or `ed25519`).
fn keypair(dir: &Path, algorithm: &str) -> (String, String) {
    let key = dir.join(format!("{algorithm}.pem"));
    let key_s = key.to_str().unwrap();
    match algorithm {
        "rsa" => openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key_s]),
        _ => openssl(&["genpkey", "-algorithm", "ed25519", "-out", key_s]),
    };
    let spki = openssl(&["pkey", "-in", key_s, "-pubout", "-outform", "DER"]);
    // RSA publishes the SubjectPublicKeyInfo; Ed25519 (RFC 8463) the raw 32-byte key.
    let p = if algorithm == "rsa" { b64(&spki) } else { b64(&spki[spki.len() - 32..]) };
    (std::fs::read_to_string(&key).unwrap(), p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_with_rsa_and_ed25519_and_verified_over_dns() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa_pem, rsa_p) = keypair(dir.path(), "rsa");
    let (ed_pem, ed_p) = keypair(dir.path(), "ed25519");
    let dns = dnsmasq::start(&[
        format!("--txt-record=r1._domainkey.acme.test,v=DKIM1; k=rsa; p={rsa_p}"),
        format!("--txt-record=e1._domainkey.news.acme.test,v=DKIM1; k=ed25519; p={ed_p}"),
    ]);
    let saved = dir.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    let smtpd = peers::smtpd(&["--save", saved.to_str().unwrap()]);
    let mut config =
        SmtpConfig::relay(RelayTarget::parse(&format!("smtp://127.0.0.1:{}?tls=none", smtpd.port)).unwrap());
    config.dkim = vec![
        Arc::new(DkimKey::rsa_pem("acme.test", "r1", &rsa_pem).unwrap()),
        Arc::new(DkimKey::ed25519_pem("news.acme.test", "e1", &ed_pem).unwrap()),
    ];
    let t = SmtpTransport::new(config).unwrap();
    let env = Envelope::new(EmailId::from_u128(3), "bounces+3@bounce.test", vec!["x@example.test".into()]);
    for from in ["a@acme.test", "b@news.acme.test"] {
        let msg = format!(
            "From: Acme <{from}>\r\nTo: x@example.test\r\nSubject: Signed\r\nMessage-ID: <1@acme.test>\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n\r\nHello.\r\n"
        );
        let r = t.send_raw(&env, msg.as_bytes()).await.unwrap();
        assert_eq!(r.recipients[0].status, RecipientStatus::Relayed);
    }
    assert!(smtpd.stop().contains("accepted=2"));

    let mut conn = ConnectionConfig::udp();
    conn.port = dns.addr.port();
    let ns = NameServerConfig::new(dns.addr.ip(), true, vec![conn]);
    let auth =
        MessageAuthenticator::new(ResolverConfig::from_parts(None, vec![], vec![ns]), ResolverOpts::default()).unwrap();
    for (file, domain, algorithm) in
        [("1.eml", "acme.test", "rsa-sha256"), ("2.eml", "news.acme.test", "ed25519-sha256")]
    {
        let raw = std::fs::read(saved.join(file)).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("DKIM-Signature:"), "{text}");
        assert!(text.contains(&format!("d={domain}")) && text.contains(&format!("a={algorithm}")), "{text}");
        let msg = AuthenticatedMessage::parse(&raw).unwrap();
        let results = auth.verify_dkim(&msg).await;
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].result(), &DkimResult::Pass, "{domain}: {:?}", results[0].result());
        // Changing a signed header breaks the signature.
        let tampered = text.replacen("Subject: Signed", "Subject: Forged", 1);
        let msg = AuthenticatedMessage::parse(tampered.as_bytes()).unwrap();
        assert_ne!(auth.verify_dkim(&msg).await[0].result(), &DkimResult::Pass);
    }
}
