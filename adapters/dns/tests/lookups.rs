//! The resolver against a real dnsmasq started here.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

#[path = "support/dnsmasq.rs"]
mod dnsmasq;

use mailroom_core::ports::{DnsError, DnsResolver, MxRecord};
use mailroom_dns::HickoryResolver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_a_and_txt_records_and_absent_names() {
    let dns = dnsmasq::start(&[
        "--mx-host=acme.test,mx2.acme.test,20".into(),
        "--mx-host=acme.test,mx1.acme.test,10".into(),
        "--host-record=mx1.acme.test,127.0.0.1".into(),
        "--txt-record=_dmarc.acme.test,v=DMARC1; p=reject; rua=mailto:d@acme.test".into(),
    ]);
    let r = HickoryResolver::with_nameserver(dns.addr);
    let mut mx = r.mx("acme.test").await.unwrap();
    mx.sort_by_key(|m| m.preference);
    assert_eq!(
        mx,
        [
            MxRecord { preference: 10, exchange: "mx1.acme.test".into() },
            MxRecord { preference: 20, exchange: "mx2.acme.test".into() }
        ]
    );
    assert_eq!(r.ips("mx1.acme.test").await.unwrap(), ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(r.txt("_dmarc.acme.test").await.unwrap(), ["v=DMARC1; p=reject; rua=mailto:d@acme.test"]);
    // A name that does not exist, and one that exists without records of the type.
    assert!(matches!(r.mx("nowhere.test").await, Err(DnsError::NotFound { .. })), "{:?}", r.mx("nowhere.test").await);
    assert!(matches!(r.txt("mx1.acme.test").await, Err(DnsError::NotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nameserver_that_does_not_answer_is_a_failure_not_an_absence() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let r = HickoryResolver::with_nameserver(silent.local_addr().unwrap());
    let got = r.mx("acme.test").await;
    assert!(matches!(got, Err(DnsError::Failed { .. })), "{got:?}");
}

/// Answers are kept for their TTL: with the nameserver gone, a record served with a 300 s TTL
/// and an absent name (kept 30 s: dnsmasq sends no SOA) are still answered from the cache,
/// while a record served with TTL 0 must be asked again — and that now fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_for_their_ttl_and_absences_briefly() {
    let long = dnsmasq::start(&["--local-ttl=300".into(), "--txt-record=_dmarc.acme.test,v=DMARC1; p=none".into()]);
    let r = HickoryResolver::with_nameserver(long.addr);
    assert_eq!(r.txt("_dmarc.acme.test").await.unwrap(), ["v=DMARC1; p=none"]);
    assert!(matches!(r.txt("_dmarc.absent.acme.test").await, Err(DnsError::NotFound { .. })));
    drop(long);
    assert_eq!(r.txt("_dmarc.acme.test").await.unwrap(), ["v=DMARC1; p=none"], "served from the cache");
    let absent = r.txt("_dmarc.absent.acme.test").await;
    assert!(matches!(absent, Err(DnsError::NotFound { .. })), "the absence is cached: {absent:?}");

    let zero = dnsmasq::start(&["--local-ttl=0".into(), "--txt-record=_dmarc.zero.test,v=DMARC1; p=none".into()]);
    let r = HickoryResolver::with_nameserver(zero.addr);
    assert_eq!(r.txt("_dmarc.zero.test").await.unwrap(), ["v=DMARC1; p=none"]);
    drop(zero);
    let again = r.txt("_dmarc.zero.test").await;
    assert!(matches!(again, Err(DnsError::Failed { .. })), "a TTL of 0 is not cached: {again:?}");
}

/// A domain's tracking host is verified by its CNAME: the target as published, an absent one as
/// an answer (not a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_targets_and_their_absence() {
    let dns = dnsmasq::start(&[
        "--host-record=track.mailroom.test,127.0.0.1".into(),
        "--cname=links.acme.test,track.mailroom.test".into(),
    ]);
    let r = HickoryResolver::with_nameserver(dns.addr);
    assert_eq!(r.cname("links.acme.test").await.unwrap(), ["track.mailroom.test"]);
    assert!(matches!(r.cname("track.mailroom.test").await, Err(DnsError::NotFound { .. })), "a host, not an alias");
    assert!(matches!(r.cname("nothing.acme.test").await, Err(DnsError::NotFound { .. })));
}

/// mail-auth's lookups keep an absence as ours do. Its DMARC walk asks for `_dmarc.<parent>`
/// too, which does not exist; dnsmasq says so without an SOA, and hickory kept nothing — so
/// every message received asked the nameserver again. With the nameserver gone, a second
/// message from the same sender is judged from the cache alone, exactly as the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_authentication_is_answered_from_the_cache_absences_included() {
    use mailroom_core::ports::MessageAuth;
    use mailroom_core::receiving::AuthResult;
    let dns = dnsmasq::start(&[
        "--local-ttl=300".into(),
        dnsmasq::record("sender.test", "TXT", "v=spf1 ip4:127.0.0.1 -all"),
        dnsmasq::record("_dmarc.sender.test", "TXT", "v=DMARC1; p=none"),
    ]);
    let r = HickoryResolver::with_nameserver(dns.addr);
    let raw =
        b"From: <s@sender.test>\r\nTo: <r@in.test>\r\nSubject: hi\r\nMessage-ID: <1@sender.test>\r\n\r\nHello.\r\n";
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let first = r.authenticate(raw, ip, "sender.test", "s@sender.test").await;
    assert_eq!((first.spf, first.dmarc), (AuthResult::Pass, AuthResult::Pass), "{first:?}");
    drop(dns);
    let started = std::time::Instant::now();
    let second = r.authenticate(raw, ip, "sender.test", "s@sender.test").await;
    assert_eq!(second, first, "judged again from the cache");
    // A lookup sent to the dead nameserver would wait out hickory's timeout (3 s, twice).
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "asked the nameserver: {:?}", started.elapsed());
}
