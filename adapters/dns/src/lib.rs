//! # mailroom-dns
//!
//! mailroom's [`DnsResolver`] on hickory-resolver: the system's nameservers, or one given by
//! address and port (a local `dnsmasq`, a test server). Answers are cached for as long as
//! their TTL allows — hickory's record cache, and in front of it a memo of final answers
//! (`memo`) that makes a hit cost a hash lookup; a "no such record" answer is kept for its
//! SOA's negative TTL, and for 30 s when it carries no SOA; a failed lookup is never kept.
//!
//! Invariant: "no such name / no records" and "the lookup failed" stay apart
//! ([`DnsError::NotFound`] vs [`DnsError::Failed`]): a failed lookup is never read as an
//! absent record.
#![warn(missing_docs)]

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use mailroom_core::ports::{DnsError, DnsResolver, MxRecord};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod memo;
use memo::{Memo, NEGATIVE_MIN};

/// The resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver: {0}")]
pub struct ConfigError(String);

/// A [`DnsResolver`] over hickory-resolver.
#[derive(Clone)]
pub struct HickoryResolver {
    inner: TokioResolver,
    memo: Arc<Memos>,
}

#[derive(Debug, Default)]
struct Memos {
    mx: Memo<Vec<MxRecord>>,
    ips: Memo<Vec<IpAddr>>,
    txt: Memo<Vec<String>>,
    cname: Memo<Vec<String>>,
}

impl std::fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryResolver").finish_non_exhaustive()
    }
}

fn options() -> ResolverOpts {
    let mut o = ResolverOpts::default();
    // A lookup that takes longer than this is a failure to report (the caller retries),
    // not a reason to hold a delivery: hickory's default is 5 s per try, 2 tries.
    o.timeout = Duration::from_secs(3);
    o.attempts = 2;
    // Enough for the MX hosts and policy records of many recipient domains.
    o.cache_size = 4096;
    // An absence is kept as the memo keeps it (its SOA's negative TTL, at least
    // `NEGATIVE_MIN`) for the lookups that reach hickory without the memo: mail-auth's SPF,
    // DKIM and DMARC, which keep no failed lookup themselves. Without it, a NXDOMAIN carrying
    // no SOA (dnsmasq's, some forwarders') was asked again for every message received — the
    // DMARC walk's `_dmarc.<parent>` at each arrival.
    o.negative_min_ttl = Some(NEGATIVE_MIN);
    o
}

impl HickoryResolver {
    /// The system's configuration (`/etc/resolv.conf`).
    pub fn system() -> Result<HickoryResolver, ConfigError> {
        let b = TokioResolver::builder_tokio().map_err(|e| ConfigError(e.to_string()))?;
        let inner = b.with_options(options()).build().map_err(|e| ConfigError(e.to_string()))?;
        Ok(HickoryResolver { inner, memo: Arc::default() })
    }

    /// One nameserver, asked over UDP and TCP at `addr` (any port).
    pub fn with_nameserver(addr: SocketAddr) -> HickoryResolver {
        let conn = |mut c: ConnectionConfig| {
            c.port = addr.port();
            c
        };
        let ns =
            NameServerConfig::new(addr.ip(), true, vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())]);
        let config = ResolverConfig::from_parts(None, vec![], vec![ns]);
        let inner =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(options()).build();
        // Building from an explicit configuration has nothing left to fail on but the
        // runtime provider, which is the running tokio runtime.
        HickoryResolver { inner: inner.unwrap_or_else(|e| unreachable_build(&e)), memo: Arc::default() }
    }
}

#[allow(clippy::panic)]
fn unreachable_build(e: &NetError) -> TokioResolver {
    panic!("a resolver with an explicit nameserver could not be built: {e}")
}

/// An absolute name: no search domains are tried.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') { name.to_string() } else { format!("{name}.") }
}

fn error(name: &str, rtype: &'static str, e: &NetError) -> DnsError {
    if e.is_no_records_found() || e.is_nx_domain() {
        DnsError::NotFound { name: name.to_string(), rtype }
    } else {
        DnsError::Failed { name: name.to_string(), rtype, message: e.to_string() }
    }
}

/// How long an absence may be kept: its SOA's negative TTL, at least `NEGATIVE_MIN`.
fn negative_ttl(e: &NetError) -> Duration {
    let soa = match e {
        NetError::Dns(hickory_resolver::net::DnsError::NoRecordsFound(n)) => n.negative_ttl,
        _ => None,
    };
    soa.map_or(NEGATIVE_MIN, |s| Duration::from_secs(u64::from(s)).max(NEGATIVE_MIN))
}

/// The memo's answer for `name`, or `lookup`'s (which is then kept for as long as it may be).
async fn memoised<T: Clone>(
    memo: &Memo<T>,
    name: &str,
    rtype: &'static str,
    lookup: impl Future<Output = Result<(Instant, T), NetError>>,
) -> Result<T, DnsError> {
    let now = Instant::now();
    if let Some(hit) = memo.get(name, now) {
        return hit;
    }
    let (until, answer) = match lookup.await {
        Ok((until, answer)) => (until, Ok(answer)),
        Err(e) => (now + negative_ttl(&e), Err(error(name, rtype, &e))),
    };
    memo.put(name, until, &answer, now);
    answer
}

#[async_trait]
impl DnsResolver for HickoryResolver {
    async fn mx(&self, domain: &str) -> Result<Vec<MxRecord>, DnsError> {
        memoised(&self.memo.mx, domain, "MX", async {
            let lookup = self.inner.mx_lookup(fqdn(domain)).await?;
            Ok((lookup.valid_until(), mx_records(&lookup)))
        })
        .await
    }

    async fn ips(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        memoised(&self.memo.ips, host, "A/AAAA", async {
            let lookup = self.inner.lookup_ip(fqdn(host)).await?;
            Ok((lookup.valid_until(), lookup.iter().collect()))
        })
        .await
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        memoised(&self.memo.txt, name, "TXT", async {
            let lookup = self.inner.txt_lookup(fqdn(name)).await?;
            Ok((lookup.valid_until(), txt_records(&lookup)))
        })
        .await
    }

    async fn cname(&self, name: &str) -> Result<Vec<String>, DnsError> {
        memoised(&self.memo.cname, name, "CNAME", async {
            let lookup = self.inner.lookup(fqdn(name), RecordType::CNAME).await?;
            let targets = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::CNAME(c) => Some(c.0.to_ascii().trim_end_matches('.').to_string()),
                    _ => None,
                })
                .collect();
            Ok((lookup.valid_until(), targets))
        })
        .await
    }
}

fn mx_records(lookup: &Lookup) -> Vec<MxRecord> {
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) => {
                let host = mx.exchange.to_ascii();
                let host = host.trim_end_matches('.');
                Some(MxRecord {
                    preference: mx.preference,
                    exchange: if host.is_empty() { ".".into() } else { host.to_string() },
                })
            }
            _ => None,
        })
        .collect()
}

/// Each TXT record's strings joined (RFC 7208 §3.3, RFC 7489 §6.1).
fn txt_records(lookup: &Lookup) -> Vec<String> {
    lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => {
                Some(txt.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<String>())
            }
            _ => None,
        })
        .collect()
}

/// SPF, DKIM and DMARC by mail-auth, asking this resolver (the same instance, so the same
/// nameserver and cache as every other lookup).
#[async_trait]
impl mailroom_core::ports::MessageAuth for HickoryResolver {
    async fn authenticate(
        &self,
        raw: &[u8],
        client: std::net::IpAddr,
        helo: &str,
        mail_from: &str,
    ) -> mailroom_core::receiving::Authentication {
        use mail_auth::spf::verify::SpfParameters;
        use mail_auth::{AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, SpfResult};
        use mailroom_core::receiving::{AuthResult, Authentication};
        let auth = MessageAuthenticator(self.inner.clone());
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return Authentication {
                spf: AuthResult::ProcessingFailed,
                dkim: AuthResult::ProcessingFailed,
                dmarc: AuthResult::ProcessingFailed,
            };
        };
        let dkim = auth.verify_dkim(&message).await;
        let helo_domain = if helo.is_empty() { "unknown" } else { helo };
        let spf = if mail_from.is_empty() {
            auth.verify_spf(SpfParameters::verify_ehlo(client, helo_domain, helo_domain)).await
        } else {
            auth.verify_spf(SpfParameters::verify_mail_from(client, helo_domain, helo_domain, mail_from)).await
        };
        let spf_domain = mail_from.rsplit_once('@').map_or(helo_domain, |(_, d)| d);
        let dmarc =
            auth.verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(&message, &dkim, spf_domain, &spf)).await;
        let spf = match spf.result() {
            SpfResult::Pass => AuthResult::Pass,
            SpfResult::Fail => AuthResult::Fail,
            SpfResult::SoftFail | SpfResult::Neutral | SpfResult::None | SpfResult::TempError => AuthResult::Gray,
            SpfResult::PermError => AuthResult::ProcessingFailed,
        };
        let dkim_result = |r: &DkimResult| match r {
            DkimResult::Pass => AuthResult::Pass,
            DkimResult::Fail(_) => AuthResult::Fail,
            DkimResult::Neutral(_) | DkimResult::None | DkimResult::TempError(_) => AuthResult::Gray,
            DkimResult::PermError(_) => AuthResult::ProcessingFailed,
        };
        // The best signature stands for the message: one passing is enough.
        let dkim = dkim.iter().map(|d| dkim_result(d.result())).min_by_key(|r| match r {
            AuthResult::Pass => 0,
            AuthResult::Fail => 1,
            AuthResult::ProcessingFailed => 2,
            AuthResult::Gray => 3,
            AuthResult::Unknown => 4,
        });
        // Pass when SPF or DKIM passed aligned; fail when the From domain publishes a policy
        // and neither did; gray without a policy or on a temporary error.
        let dmarc = match dmarc.result() {
            DmarcResult::Pass => AuthResult::Pass,
            DmarcResult::Fail(_) => AuthResult::Fail,
            DmarcResult::PermError(_) => AuthResult::ProcessingFailed,
            DmarcResult::TempError(_) | DmarcResult::None => AuthResult::Gray,
        };
        Authentication { spf, dkim: dkim.unwrap_or(AuthResult::Gray), dmarc }
    }
}
