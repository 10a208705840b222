//! Domains verified against a real dnsmasq through the real resolver, on a redb file, with a
//! manual clock for the 72 hours: one domain publishing every record (verified), one
//! withholding its return path's MX (pending, then failed), one publishing another domain's
//! DKIM key (its DKIM record failed); then a record removed later (`temporary_failure`).
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;
#[path = "../adapters/dns/tests/support/dnsmasq.rs"]
mod dnsmasq;

use chrono::{DateTime, Duration as CDuration, Utc};
use mailroom::core::domains::{
    Domain, DomainConfig, DomainStatus, NewDomain, RecordPurpose, RecordStatus, RecordType, Verifier,
};
use mailroom::core::ports::ManualClock;
use mailroom::core::{Engine, Storage};
use mailroom::dns::HickoryResolver;
use mailroom::redb::RedbStorage;
use std::sync::Arc;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc()
}

/// The dnsmasq options publishing `d`'s records, except those `skip` rejects.
pub fn published(d: &Domain, skip: impl Fn(RecordPurpose, RecordType) -> bool) -> Vec<String> {
    d.records
        .iter()
        .filter(|r| !skip(r.record, r.rtype))
        .map(|r| match r.rtype {
            RecordType::Mx => dnsmasq::record(&r.fqdn, "MX", &format!("{} {}", r.priority.unwrap(), r.value)),
            RecordType::Txt => dnsmasq::record(&r.fqdn, "TXT", &r.value),
            RecordType::Cname => dnsmasq::record(&r.fqdn, "CNAME", &r.value),
        })
        .collect()
}

fn status_of(d: &Domain, purpose: RecordPurpose, rtype: RecordType) -> RecordStatus {
    d.records.iter().find(|r| r.record == purpose && r.rtype == rtype).unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_verify_against_dnsmasq_and_fail_after_72_hours() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Storage> = Arc::new(RedbStorage::open(dir.path().join("d.redb")).unwrap());
    let clock = ManualClock::new(t0());
    let config = DomainConfig::default().host("mx.mailroom.test");
    let engine = Engine::builder(store.clone()).clock(Arc::new(clock.clone())).domains(config.clone()).build();

    let mut new = NewDomain::new("mail.good.test");
    new.tracking_subdomain = Some("links".into());
    let good = engine.create_domain(new).await.unwrap();
    let withheld = engine.create_domain(NewDomain::new("withheld.test")).await.unwrap();
    let wrong = engine.create_domain(NewDomain::new("wrong.test")).await.unwrap();

    // The records go out only now that the keys exist; the server never asked before.
    let mut options = vec!["--host-record=mx.mailroom.test,127.0.0.1".to_string()];
    options.extend(published(&good, |_, _| false));
    options.extend(published(&withheld, |p, t| p == RecordPurpose::Spf && t == RecordType::Mx));
    options.extend(published(&wrong, |p, _| p == RecordPurpose::Dkim));
    let good_key = good.records.iter().find(|r| r.record == RecordPurpose::Dkim).unwrap().value.clone();
    options.push(dnsmasq::record("mailroom._domainkey.wrong.test", "TXT", &good_key));
    let dns = dnsmasq::start(&options);
    let resolver = Arc::new(HickoryResolver::with_nameserver(dns.addr));
    let verifier = Verifier::new(store.clone(), Arc::new(clock.clone()), resolver.clone(), config);

    for d in [&good, &withheld, &wrong] {
        engine.verify_domain(&d.id).await.unwrap();
    }
    assert_eq!(verifier.run_once().await.unwrap(), 3);
    let g = engine.domain(&good.id).await.unwrap();
    assert_eq!(g.status(), DomainStatus::Verified, "{:?}", g.records);
    assert_eq!(g.tracking_host(), Some("links.mail.good.test"), "the tracking CNAME is verified too");
    assert!(g.verified_for_sending());
    let w = engine.domain(&withheld.id).await.unwrap();
    assert_eq!(w.status(), DomainStatus::PartiallyVerified);
    assert_eq!(status_of(&w, RecordPurpose::Spf, RecordType::Mx), RecordStatus::Pending);
    let x = engine.domain(&wrong.id).await.unwrap();
    assert_eq!(status_of(&x, RecordPurpose::Dkim, RecordType::Txt), RecordStatus::Pending);
    assert_eq!(status_of(&x, RecordPurpose::Spf, RecordType::Txt), RecordStatus::Verified);

    // 72 hours of checks on the schedule (each hour, as the backoff settles to).
    for _ in 0..73 {
        clock.advance(CDuration::hours(1));
        verifier.run_once().await.unwrap();
    }
    let w = engine.domain(&withheld.id).await.unwrap();
    assert_eq!(status_of(&w, RecordPurpose::Spf, RecordType::Mx), RecordStatus::Failed);
    assert_eq!(w.status(), DomainStatus::PartiallyFailed);
    assert!(!w.verified_for_sending());
    let x = engine.domain(&wrong.id).await.unwrap();
    assert_eq!(status_of(&x, RecordPurpose::Dkim, RecordType::Txt), RecordStatus::Failed, "another domain's key");
    assert!(x.signing_key().is_none());
    assert_eq!(engine.domain(&good.id).await.unwrap().status(), DomainStatus::Verified);

    // The good domain's DKIM record taken down: rechecked, temporary failure, then failed.
    let port = dns.addr.port();
    drop(dns);
    let mut options = vec!["--host-record=mx.mailroom.test,127.0.0.1".to_string()];
    options.extend(published(&good, |p, _| p == RecordPurpose::Dkim));
    let _dns = dnsmasq::start_at(port, &options);
    clock.advance(CDuration::hours(7));
    // The resolver keeps answers for their TTL (dnsmasq's records: 0 s) and absences 30 s.
    verifier.run_once().await.unwrap();
    let g = engine.domain(&good.id).await.unwrap();
    assert_eq!(g.status(), DomainStatus::TemporaryFailure, "{:?}", g.records);
    assert!(g.signing_key().is_none(), "a key no longer published does not sign");

    // The event log: created ×3, then updates as statuses moved.
    let types: Vec<&str> = engine.events(0, 1000).await.unwrap().iter().map(|e| e.type_name()).collect();
    assert_eq!(types.iter().filter(|t| **t == "domain.created").count(), 3);
    assert!(types.iter().filter(|t| **t == "domain.updated").count() >= 6, "{types:?}");
}

/// A message from a subdomain of a verified domain, relayed to a recording SMTP server,
/// passes DKIM (signed with the domain's own key, never configured by hand), SPF (the return
/// path is on the domain's return-path subdomain) and DMARC with relaxed alignment, as
/// mail-auth evaluates them against the records dnsmasq publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_a_verified_domain_passes_dkim_spf_and_dmarc() {
    use mail_auth::hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
    use mail_auth::spf::verify::SpfParameters;
    use mail_auth::{AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfResult};
    use mailroom::core::SendOptions;
    use mailroom::core::request::EmailRequest;
    use mailroom::smtp::{RelayTarget, SmtpConfig, SmtpTransport};

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Storage> = Arc::new(RedbStorage::open(dir.path().join("d.redb")).unwrap());
    let config = DomainConfig::default().host("mx.mailroom.test").spf("v=spf1 ip4:127.0.0.1 -all");
    let engine = Engine::builder(store.clone()).domains(config.clone()).build();
    let d = engine.create_domain(NewDomain::new("acme.test")).await.unwrap();
    let mut options = vec![
        "--host-record=mx.mailroom.test,127.0.0.1".to_string(),
        dnsmasq::record("_dmarc.acme.test", "TXT", "v=DMARC1; p=reject; adkim=r; aspf=r"),
    ];
    options.extend(published(&d, |_, _| false));
    let dns = dnsmasq::start(&options);
    let resolver = Arc::new(HickoryResolver::with_nameserver(dns.addr));
    engine.verify_domain(&d.id).await.unwrap();
    let verifier = Verifier::new(store.clone(), engine.clock().clone(), resolver, config);
    verifier.run_once().await.unwrap();
    assert!(engine.domain(&d.id).await.unwrap().verified_for_sending());

    let saved = dir.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    let smtpd = common::peers::smtpd(&["--save", saved.to_str().unwrap()]);
    let mut smtp = SmtpConfig::relay(RelayTarget::parse(&format!("smtp://127.0.0.1:{}?tls=none", smtpd.port)).unwrap());
    smtp.helo_name = "mx.mailroom.test".into();
    let transport = Arc::new(SmtpTransport::new(smtp).unwrap());
    let request: EmailRequest = serde_json::from_value(serde_json::json!({
        "from": "Acme News <news@mail.acme.test>",
        "to": "reader@example.test",
        "subject": "Signed by the domain's own key",
        "html": "<p>Hello</p>",
        "text": "Hello",
    }))
    .unwrap();
    let id = engine.send(request, SendOptions::default()).await.unwrap().id;
    engine.worker(transport, Default::default()).run_until_idle().await.unwrap();
    assert!(smtpd.stop().contains("accepted=1"));

    let raw = std::fs::read(saved.join("1.eml")).unwrap();
    let envelope: serde_json::Value = serde_json::from_slice(&std::fs::read(saved.join("1.json")).unwrap()).unwrap();
    let mail_from = envelope["mail_from"].as_str().unwrap();
    assert_eq!(mail_from, format!("bounces+{id}@send.acme.test"), "the return path is the domain's own");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("d=acme.test") && text.contains("s=mailroom"), "{text}");

    let mut conn = ConnectionConfig::udp();
    conn.port = dns.addr.port();
    let ns = NameServerConfig::new(dns.addr.ip(), true, vec![conn]);
    let auth =
        MessageAuthenticator::new(ResolverConfig::from_parts(None, vec![], vec![ns]), ResolverOpts::default()).unwrap();
    let message = AuthenticatedMessage::parse(&raw).unwrap();
    let dkim = auth.verify_dkim(&message).await;
    assert_eq!(dkim.len(), 1);
    assert_eq!(dkim[0].result(), &DkimResult::Pass);
    let ip = "127.0.0.1".parse().unwrap();
    let spf =
        auth.verify_spf(SpfParameters::verify_mail_from(ip, "mx.mailroom.test", "mx.example.test", mail_from)).await;
    assert_eq!(spf.result(), SpfResult::Pass);
    let dmarc = auth
        .verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(&message, &dkim, "send.acme.test", &spf))
        .await;
    assert_eq!(dmarc.dkim_result(), &DmarcResult::Pass, "DKIM aligned (relaxed)");
    assert_eq!(dmarc.spf_result(), &DmarcResult::Pass, "SPF aligned (relaxed)");
}
