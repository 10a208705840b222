//! `insights`: the eight checks for a 50 KB html email with 100 links, DNS answers cached
//! (the resolver's caches in front of a real dnsmasq started here, warmed by the first run);
//! the link reading alone, against html5gum reading the same links as the baseline.
//!
//! `cargo bench --bench insights` (needs dnsmasq: `./scripts/test.sh` installs it)

#[path = "../adapters/dns/tests/support/dnsmasq.rs"]
mod dnsmasq;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailroom::core::address::Mailbox;
use mailroom::core::insights::{Body, DomainSettings, Draft, insights};
use mailroom::dns::HickoryResolver;

#[path = "fixtures.rs"]
mod fixtures;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // dnsmasq serves its own records with TTL 0 unless told otherwise; real zones say minutes.
    let dns = dnsmasq::start(&[
        "--local-ttl=300".into(),
        "--txt-record=_dmarc.acme.test,v=DMARC1; p=quarantine; rua=mailto:d@acme.test".into(),
    ]);
    let resolver = rt.block_on(async { HickoryResolver::with_nameserver(dns.addr) });
    let html = fixtures::links_email();
    let from = Mailbox::parse("Acme <hello@mail.acme.test>").expect("a sender");
    let draft = Draft { from: Ok(&from), body: Some(Body { html: Some(&html), text: Some("hello") }) };
    let settings = Some(DomainSettings::default());
    // Warm the cache: the measured runs read DNS answers from it.
    let first = rt.block_on(insights(draft, settings, &resolver));
    assert_eq!(first.len(), 8);
    let mut group = c.benchmark_group("insights");
    group.throughput(Throughput::Elements(1));
    group.bench_function("50kb_100_links", |b| b.iter(|| rt.block_on(insights(draft, settings, &resolver))));
    // Where the time goes: reading the links' hosts alone, and one DMARC lookup alone (cached).
    group.bench_function("link_hosts_only", |b| b.iter(|| mailroom::core::insights::link_hosts(&html)));
    // The baseline: the same links read by html5gum, a spec-conformant tokenizer (the oracle
    // the link reader is tested and fuzzed against).
    group.bench_function("html5gum_links_baseline", |b| b.iter(|| mailroom::core::html::links_by_html5gum(&html)));
    group.bench_function("dmarc_lookup_cached", |b| {
        b.iter(|| rt.block_on(mailroom::core::ports::DnsResolver::txt(&resolver, "_dmarc.mail.acme.test")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
