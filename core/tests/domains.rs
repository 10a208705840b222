//! Domains through the engine with a DNS double (a zone in a map) and a manual clock: created
//! with a key and records, verified once published, pending then failed when a record is
//! withheld, failed for a wrong key, back to `temporary_failure` when a record disappears,
//! rotation, settings that add records, and the `domain.*` events in the log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use chrono::{DateTime, Duration as CDuration, Utc};
use mailroom_core::domains::{
    DomainConfig, DomainStatus, DomainUpdate, NewDomain, RecordPurpose, RecordStatus, RecordType, Verifier,
};
use mailroom_core::memory::MemoryStorage;
use mailroom_core::ports::{DnsError, DnsResolver, ManualClock, MxRecord};
use mailroom_core::{Engine, Error, ErrorName};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc()
}

/// (name, type) → values; MX values are `"pref host"`.
type Records = HashMap<(String, &'static str), Vec<String>>;

#[derive(Debug, Default, Clone)]
struct Zone(Arc<Mutex<Records>>);

impl Zone {
    fn set(&self, name: &str, rtype: &'static str, values: Vec<String>) {
        self.0.lock().unwrap().insert((name.to_string(), rtype), values);
    }
    fn remove(&self, name: &str, rtype: &'static str) {
        self.0.lock().unwrap().remove(&(name.to_string(), rtype));
    }
    fn get(&self, name: &str, rtype: &'static str) -> Result<Vec<String>, DnsError> {
        self.0
            .lock()
            .unwrap()
            .get(&(name.to_string(), rtype))
            .cloned()
            .ok_or(DnsError::NotFound { name: name.into(), rtype })
    }
    /// Publishes every record of `d` as asked.
    fn publish(&self, d: &mailroom_core::domains::Domain) {
        for r in &d.records {
            match r.rtype {
                RecordType::Mx => self.set(&r.fqdn, "MX", vec![format!("{} {}", r.priority.unwrap(), r.value)]),
                RecordType::Txt => self.set(&r.fqdn, "TXT", vec![r.value.clone()]),
                RecordType::Cname => self.set(&r.fqdn, "CNAME", vec![r.value.clone()]),
            }
        }
    }
}

#[async_trait]
impl DnsResolver for Zone {
    async fn mx(&self, d: &str) -> Result<Vec<MxRecord>, DnsError> {
        Ok(self
            .get(d, "MX")?
            .into_iter()
            .map(|v| {
                let (p, h) = v.split_once(' ').unwrap();
                MxRecord { preference: p.parse().unwrap(), exchange: h.to_string() }
            })
            .collect())
    }
    async fn ips(&self, h: &str) -> Result<Vec<std::net::IpAddr>, DnsError> {
        Err(DnsError::NotFound { name: h.into(), rtype: "A" })
    }
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        self.get(name, "TXT")
    }
    async fn cname(&self, name: &str) -> Result<Vec<String>, DnsError> {
        self.get(name, "CNAME")
    }
}

struct Setup {
    engine: Engine,
    clock: ManualClock,
    zone: Zone,
    verifier: Verifier,
}

fn setup() -> Setup {
    let store = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(t0());
    let config = DomainConfig::default().host("mx.mailroom.test");
    let engine = Engine::builder(store.clone()).clock(Arc::new(clock.clone())).domains(config.clone()).build();
    let zone = Zone::default();
    let verifier = Verifier::new(store, Arc::new(clock.clone()), Arc::new(zone.clone()), config);
    Setup { engine, clock, zone, verifier }
}

/// Runs the verifier every `step` minutes for `hours` hours.
async fn run_for(s: &Setup, hours: i64, step: i64) {
    for _ in 0..(hours * 60 / step) {
        s.clock.advance(CDuration::minutes(step));
        s.verifier.run_once().await.unwrap();
    }
}

#[tokio::test]
async fn a_domain_is_created_with_its_records_and_verified_once_they_are_published() {
    let s = setup();
    let d = s.engine.create_domain(NewDomain::new(" Mail.Acme.TEST. ")).await.unwrap();
    assert_eq!(d.name, "mail.acme.test");
    assert_eq!(d.status(), DomainStatus::NotStarted);
    let shape: Vec<(RecordPurpose, &str, RecordType)> =
        d.records.iter().map(|r| (r.record, r.name.as_str(), r.rtype)).collect();
    assert_eq!(
        shape,
        [
            (RecordPurpose::Spf, "send.mail", RecordType::Mx),
            (RecordPurpose::Spf, "send.mail", RecordType::Txt),
            (RecordPurpose::Dkim, "mailroom._domainkey.mail", RecordType::Txt),
        ]
    );
    assert_eq!(d.records[0].value, "mx.mailroom.test");
    assert_eq!(d.records[1].value, "v=spf1 a:mx.mailroom.test ~all");
    assert!(d.records[2].value.starts_with("v=DKIM1; k=rsa; p=MII"), "{}", d.records[2].value);
    assert!(d.signing_key().is_none(), "nothing signs before the key is verified");

    // Nothing is checked until verification is asked for.
    s.zone.publish(&d);
    run_for(&s, 1, 10).await;
    assert_eq!(s.engine.domain(&d.id).await.unwrap().status(), DomainStatus::NotStarted);

    s.engine.verify_domain(&d.id).await.unwrap();
    assert_eq!(s.engine.domain(&d.id).await.unwrap().status(), DomainStatus::Pending);
    s.verifier.run_once().await.unwrap();
    let v = s.engine.domain(&d.id).await.unwrap();
    assert_eq!(v.status(), DomainStatus::Verified);
    assert!(v.records.iter().all(|r| r.status == RecordStatus::Verified));
    assert_eq!(v.signing_key().unwrap().selector, "mailroom");
    assert!(v.verified_for_sending());

    // The log: created, then updated when verification began and when it succeeded.
    let types: Vec<&str> = s.engine.events(0, 100).await.unwrap().iter().map(|e| e.type_name()).collect();
    assert_eq!(types, ["domain.created", "domain.updated", "domain.updated"]);

    // A record removed later: temporary failure at the next recheck, failed 72 h after.
    s.zone.remove("send.mail.acme.test", "TXT");
    s.clock.advance(CDuration::hours(7));
    s.verifier.run_once().await.unwrap();
    let v = s.engine.domain(&d.id).await.unwrap();
    assert_eq!(v.status(), DomainStatus::TemporaryFailure);
    run_for(&s, 73, 60).await;
    let v = s.engine.domain(&d.id).await.unwrap();
    assert_eq!(v.status(), DomainStatus::PartiallyFailed);
    assert_eq!(v.records[1].status, RecordStatus::Failed);
}

#[tokio::test]
async fn a_withheld_record_is_pending_then_failed_after_72_hours_and_a_wrong_key_fails() {
    let s = setup();
    let d = s.engine.create_domain(NewDomain::new("acme.test")).await.unwrap();
    s.zone.publish(&d);
    s.zone.remove("send.acme.test", "MX");
    s.engine.verify_domain(&d.id).await.unwrap();
    run_for(&s, 71, 30).await;
    let v = s.engine.domain(&d.id).await.unwrap();
    assert_eq!(v.status(), DomainStatus::PartiallyVerified);
    assert_eq!(v.records[0].status, RecordStatus::Pending);
    assert!(v.next_check.is_some(), "still being checked");
    run_for(&s, 2, 30).await;
    let v = s.engine.domain(&d.id).await.unwrap();
    assert_eq!(v.records[0].status, RecordStatus::Failed);
    assert_eq!(v.status(), DomainStatus::PartiallyFailed);

    // Asking again restarts the failed record's 72 hours; published now, it verifies.
    s.zone.publish(&d);
    s.engine.verify_domain(&d.id).await.unwrap();
    s.verifier.run_once().await.unwrap();
    assert_eq!(s.engine.domain(&d.id).await.unwrap().status(), DomainStatus::Verified);

    // Another domain publishing someone else's key never verifies its DKIM record.
    let other = s.engine.create_domain(NewDomain::new("other.test")).await.unwrap();
    s.zone.publish(&other);
    s.zone.set("mailroom._domainkey.other.test", "TXT", vec![d.records[2].value.clone()]);
    s.engine.verify_domain(&other.id).await.unwrap();
    run_for(&s, 73, 60).await;
    let v = s.engine.domain(&other.id).await.unwrap();
    assert_eq!(v.records[2].status, RecordStatus::Failed);
    assert!(v.signing_key().is_none());
    assert!(!v.verified_for_sending());
    assert_eq!(v.next_check, None, "a failed domain is checked again only when asked");
}

#[tokio::test]
async fn rotation_signs_with_the_old_key_until_the_new_one_is_verified() {
    let s = setup();
    let d = s.engine.create_domain(NewDomain::new("acme.test")).await.unwrap();
    s.zone.publish(&d);
    s.engine.verify_domain(&d.id).await.unwrap();
    s.verifier.run_once().await.unwrap();
    let old = s.engine.domain(&d.id).await.unwrap().signing_key().unwrap().clone();

    let r = s.engine.rotate_domain_key(&d.id).await.unwrap();
    let dkim: Vec<(&str, RecordStatus)> =
        r.records.iter().filter(|r| r.record == RecordPurpose::Dkim).map(|r| (r.name.as_str(), r.status)).collect();
    assert_eq!(
        dkim,
        [("mailroom-2._domainkey", RecordStatus::NotStarted), ("mailroom._domainkey", RecordStatus::Verified)]
    );
    assert_eq!(r.signing_key().unwrap().selector, old.selector, "the old key signs meanwhile");
    assert_eq!(r.status(), DomainStatus::Verified, "the old key still signs: nothing is missing yet");

    s.clock.advance(CDuration::minutes(1));
    s.verifier.run_once().await.unwrap();
    assert_eq!(
        s.engine.domain(&d.id).await.unwrap().signing_key().unwrap().selector,
        "mailroom",
        "new key not published"
    );

    s.zone.publish(&r);
    s.clock.advance(CDuration::minutes(5));
    s.verifier.run_once().await.unwrap();
    let v = s.engine.domain(&d.id).await.unwrap();
    assert_eq!(v.signing_key().unwrap().selector, "mailroom-2");
    assert_eq!(v.keys.len(), 1, "the old key is retired");
    assert_eq!(v.records.iter().filter(|r| r.record == RecordPurpose::Dkim).count(), 1);
    assert_eq!(v.status(), DomainStatus::Verified);
}

#[tokio::test]
async fn settings_add_records_and_bad_input_names_the_field() {
    let s = setup();
    let mut new = NewDomain::new("acme.test");
    new.receiving = Some(true);
    new.custom_return_path = Some("bounce".into());
    let d = s.engine.create_domain(new).await.unwrap();
    let names: Vec<(RecordPurpose, &str)> = d.records.iter().map(|r| (r.record, r.name.as_str())).collect();
    assert_eq!(
        names,
        [
            (RecordPurpose::Spf, "bounce"),
            (RecordPurpose::Spf, "bounce"),
            (RecordPurpose::Dkim, "mailroom._domainkey"),
            (RecordPurpose::Receiving, "@"),
        ]
    );
    let mut u = DomainUpdate::new();
    u.tracking_subdomain = Some("links".into());
    u.click_tracking = Some(true);
    let d = s.engine.update_domain(&d.id, u).await.unwrap();
    let t = d.records.iter().find(|r| r.record == RecordPurpose::Tracking).unwrap();
    assert_eq!((t.fqdn.as_str(), t.value.as_str()), ("links.acme.test", "mx.mailroom.test"));
    assert_eq!(d.tracking_host(), None, "tracking waits for its CNAME");

    let err = |e: Error| (e.name(), e.to_string());
    let e = err(s.engine.create_domain(NewDomain::new("acme.test")).await.unwrap_err());
    assert_eq!(e.0, ErrorName::ValidationError);
    assert!(e.1.contains("added already"), "{}", e.1);
    let mut bad = NewDomain::new("b.test");
    bad.region = Some("mars-1".into());
    assert_eq!(err(s.engine.create_domain(bad).await.unwrap_err()).0, ErrorName::InvalidRegion);
    for name in ["", "com", "a..b.test", "-a.test", "a_b.test", &format!("{}.test", "a".repeat(64))] {
        let e = err(s.engine.create_domain(NewDomain::new(name)).await.unwrap_err());
        assert!(e.1.contains("name"), "{name:?}: {}", e.1);
    }
    let mut bad = NewDomain::new("c.test");
    bad.tracking_subdomain = Some("a.b".into());
    assert!(err(s.engine.create_domain(bad).await.unwrap_err()).1.contains("tracking_subdomain"));
    assert!(matches!(s.engine.domain("nope").await, Err(Error::NotFound { .. })));

    let gone = s.engine.delete_domain(&d.id).await.unwrap();
    assert_eq!(gone.name, "acme.test");
    assert!(matches!(s.engine.delete_domain(&d.id).await, Err(Error::NotFound { .. })));
    let last = s.engine.events(0, 100).await.unwrap().pop().unwrap();
    assert_eq!(last.type_name(), "domain.deleted");
    // An internationalised name is kept in its ASCII form.
    let idn = s.engine.create_domain(NewDomain::new("bücher.test")).await.unwrap();
    assert_eq!(idn.name, "xn--bcher-kva.test");
}

#[tokio::test]
async fn unverified_domains_are_refused_when_the_operator_says_so_and_verified_ones_sign() {
    use mailroom_core::SendOptions;
    use mailroom_core::request::EmailRequest;
    use mailroom_core::sandbox::SandboxTransport;
    let store = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(t0());
    let config = DomainConfig::default().host("mx.mailroom.test").require_verified(true);
    let engine = Engine::builder(store.clone()).clock(Arc::new(clock.clone())).domains(config.clone()).build();
    let zone = Zone::default();
    let verifier = Verifier::new(store, Arc::new(clock.clone()), Arc::new(zone.clone()), config);
    let email = |from: &str, to: &str| -> EmailRequest {
        serde_json::from_value(serde_json::json!({"from": from, "to": to, "subject": "s", "text": "t"})).unwrap()
    };

    let refused = engine.send(email("a@acme.test", "x@example.com"), SendOptions::default()).await.unwrap_err();
    assert_eq!((refused.status(), refused.name()), (403, ErrorName::ValidationError));
    assert!(refused.to_string().contains("The acme.test domain is not verified"), "{refused}");
    // Test addresses never leave the machine; the test domain is always allowed.
    engine.send(email("a@acme.test", "delivered+x@resend.dev"), SendOptions::default()).await.unwrap();
    engine.send(email("onboarding@resend.dev", "x@example.com"), SendOptions::default()).await.unwrap();
    // A batch with one unverified sender is refused as a whole.
    let batch = vec![email("onboarding@resend.dev", "x@example.com"), email("b@acme.test", "y@example.com")];
    assert!(engine.send_batch(batch, Default::default()).await.is_err());

    let d = engine.create_domain(NewDomain::new("acme.test")).await.unwrap();
    let refused = engine.send(email("a@news.acme.test", "x@example.com"), SendOptions::default()).await.unwrap_err();
    assert_eq!(refused.status(), 403, "added is not verified");
    zone.publish(&d);
    engine.verify_domain(&d.id).await.unwrap();
    verifier.run_once().await.unwrap();
    let id = engine.send(email("a@news.acme.test", "x@example.com"), SendOptions::default()).await.unwrap().id;

    // The worker hands the domain's key and return path to the transport.
    let sandbox = Arc::new(SandboxTransport::default());
    engine.worker(sandbox.clone(), Default::default()).run_until_idle().await.unwrap();
    let sent = sandbox.outbox();
    let ours = sent.iter().find(|m| m.envelope.email_id == id).unwrap();
    let key = ours.envelope.dkim.as_ref().expect("signed with the domain's key");
    assert_eq!((key.domain.as_str(), key.selector.as_str()), ("acme.test", "mailroom"));
    assert_eq!(ours.envelope.from, format!("bounces+{id}@send.acme.test"));
    let other = sent.iter().find(|m| m.envelope.email_id != id && m.envelope.to == ["x@example.com"]).unwrap();
    assert!(other.envelope.dkim.is_none(), "the test domain has no key here");
}

/// Tracking and one-click unsubscribe through the engine: a domain with a verified tracking
/// host gets its links rewritten and the pixel added; following them records `clicked` and
/// `opened` with who did it (a scanner marked as one); a forged link records nothing; the
/// unsubscribe link suppresses its recipient for the account, and the next email to them is
/// suppressed.
#[tokio::test]
async fn tracked_links_record_opens_and_clicks_and_unsubscribe_suppresses() {
    use mailroom_core::SendOptions;
    use mailroom_core::lifecycle::EventKind;
    use mailroom_core::request::EmailRequest;
    use mailroom_core::sandbox::SandboxTransport;
    use mailroom_core::tracking::Followed;
    let store = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(t0());
    let config = DomainConfig::default().host("mx.mailroom.test");
    let engine = Engine::builder(store.clone()).clock(Arc::new(clock.clone())).domains(config.clone()).build();
    let zone = Zone::default();
    let verifier = Verifier::new(store.clone(), Arc::new(clock.clone()), Arc::new(zone.clone()), config);
    let mut new = NewDomain::new("acme.test");
    new.tracking_subdomain = Some("links".into());
    new.open_tracking = Some(true);
    new.click_tracking = Some(true);
    let d = engine.create_domain(new).await.unwrap();
    zone.publish(&d);
    engine.verify_domain(&d.id).await.unwrap();
    verifier.run_once().await.unwrap();
    assert_eq!(engine.domain(&d.id).await.unwrap().tracking_host(), Some("links.acme.test"));

    let request: EmailRequest = serde_json::from_value(serde_json::json!({
        "from": "news@acme.test", "to": "reader@example.com", "subject": "s", "unsubscribe": true,
        "html": "<html><body><p><a href=\"https://shop.test/sale?x=1&amp;y=2\">Sale</a> <a href=\"mailto:a@acme.test\">mail</a></p></body></html>"
    }))
    .unwrap();
    let id = engine.send(request, SendOptions::default()).await.unwrap().id;
    let sandbox = Arc::new(SandboxTransport::default());
    engine.worker(sandbox.clone(), Default::default()).run_until_idle().await.unwrap();
    let message = String::from_utf8(sandbox.outbox()[0].message.clone()).unwrap();
    let unfolded = message.replace("=\r\n", "").replace("=3D", "=");
    assert!(unfolded.contains("List-Unsubscribe: <https://links.acme.test/unsubscribe/"), "{message}");
    assert!(unfolded.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"), "{message}");
    let token_after = |marker: &str| -> String {
        let start = unfolded.find(marker).unwrap_or_else(|| panic!("{marker} in {unfolded}")) + marker.len();
        let token: String =
            unfolded[start..].chars().take_while(|c| !matches!(c, '"' | '>' | '\r' | '\n' | ' ')).collect();
        token.strip_suffix(".gif").map_or(token.clone(), str::to_string)
    };
    let click = token_after("https://links.acme.test/t/c/");
    let open = token_after("https://links.acme.test/t/o/");
    let unsubscribe = token_after("https://links.acme.test/unsubscribe/");
    assert!(unfolded.contains("href=\"mailto:a@acme.test\""), "mailto untouched");
    // The text part derived for html sent alone (read in the same pass as the links to
    // rewrite) carries the links as the sender wrote them.
    let text = unfolded.split("Content-Type: text/plain").nth(1).and_then(|p| p.split("\r\n--").next()).unwrap();
    assert!(text.contains("Sale [https://shop.test/sale?x=1&y=2] mail [mailto:a@acme.test]"), "{text}");

    let person = Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0");
    let ip: Option<std::net::IpAddr> = Some("198.51.100.9".parse().unwrap());
    // A gateway scanning the link at once is recorded as a machine.
    let first = engine.follow(&click, ip, person, true).await.unwrap();
    assert_eq!(first, Followed::Click("https://shop.test/sale?x=1&y=2".into()));
    clock.advance(CDuration::minutes(5));
    engine.follow(&open, ip, person, true).await.unwrap();
    engine.follow(&click, ip, person, true).await.unwrap();
    let events = engine.get_record(id).await.unwrap().state.events;
    let hits: Vec<(EventKind, Option<String>, Option<String>)> =
        events.iter().filter_map(|e| e.hit.as_ref().map(|h| (e.kind, h.link.clone(), h.machine.clone()))).collect();
    let link = Some("https://shop.test/sale?x=1&y=2".to_string());
    assert_eq!(
        hits,
        [
            (EventKind::Clicked, link.clone(), Some("link_scanner:too_fast".into())),
            (EventKind::Opened, None, None),
            (EventKind::Clicked, link, None),
        ]
    );
    assert_eq!(engine.get(id).await.unwrap().last_event, Some(EventKind::Clicked));
    // Forged or altered tokens are refused and record nothing.
    let mut forged = click.clone();
    forged.replace_range(10..11, if &click[10..11] == "A" { "B" } else { "A" });
    assert!(engine.follow(&forged, ip, person, true).await.is_err());
    assert!(engine.follow(&unsubscribe, ip, person, true).await.is_err(), "an unsubscribe token is not a link");
    // At most MAX_HITS clicks are recorded; the redirect goes on.
    for _ in 0..40 {
        engine.follow(&click, ip, person, true).await.unwrap();
    }
    let clicks =
        engine.get_record(id).await.unwrap().state.events.iter().filter(|e| e.kind == EventKind::Clicked).count();
    assert_eq!(clicks, mailroom_core::tracking::MAX_HITS);

    // One-click unsubscribe: the recipient is suppressed (unsubscribed) for this account.
    assert_eq!(engine.unsubscribe(&unsubscribe).await.unwrap(), "reader@example.com");
    let s = engine.suppression("reader@example.com").await.unwrap().unwrap();
    assert_eq!(s.reason, mailroom_core::ports::SuppressionReason::Unsubscribed);
    assert_eq!(engine.unsubscribe(&unsubscribe).await.unwrap(), "reader@example.com", "again: the same");
    let again: EmailRequest = serde_json::from_value(serde_json::json!({
        "from": "news@acme.test", "to": "reader@example.com", "subject": "s", "text": "t"
    }))
    .unwrap();
    let second = engine.send(again, SendOptions::default()).await.unwrap().id;
    engine.worker(sandbox.clone(), Default::default()).run_until_idle().await.unwrap();
    assert_eq!(engine.get(second).await.unwrap().last_event, Some(EventKind::Suppressed));
    let types: Vec<String> = engine.events(0, 1000).await.unwrap().iter().map(|e| e.type_name().to_string()).collect();
    assert!(
        types.contains(&"suppression.added".to_string()) && types.contains(&"email.clicked".to_string()),
        "{types:?}"
    );

    // Without a public URL or a tracking host, unsubscribe is refused at once.
    let other: EmailRequest = serde_json::from_value(serde_json::json!({
        "from": "a@other.test", "to": "x@example.com", "subject": "s", "text": "t", "unsubscribe": true
    }))
    .unwrap();
    let e = engine.send(other.clone(), SendOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("unsubscribe"), "{e}");
    let two: EmailRequest = serde_json::from_value(serde_json::json!({
        "from": "a@acme.test", "to": ["x@example.com", "y@example.com"], "subject": "s", "text": "t", "unsubscribe": true
    }))
    .unwrap();
    let e = engine.send(two, SendOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("exactly one recipient"), "{e}");
}
