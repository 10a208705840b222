//! # mailroom-fetch
//!
//! The [`AttachmentLoader`] a server puts in front of hostile clients: an attachment's `path`
//! is an `http(s)` URL the server fetches (the hosted service's meaning), or — only when the
//! operator names a directory — a relative path to a file in that directory.
//!
//! Invariants:
//! - **addresses**: a URL whose host is, or resolves to, a loopback, private, link-local,
//!   unique-local, metadata (169.254.169.254, `fd00:ec2::254`), documentation, multicast or
//!   otherwise non-public address is refused unless the operator allows it
//!   ([`FetchConfig::allow_private`], [`FetchConfig::allow_networks`]). The check is made on
//!   the addresses actually connected to (the resolver is ours), for every redirect hop, so a
//!   name that changes its answer between a check and the connection gains nothing;
//! - **bounded**: a response declaring more than the limit is refused unread; a body is read
//!   chunk by chunk and abandoned the moment it passes the limit; connecting, and the whole
//!   fetch, have deadlines; redirects are followed at most [`FetchConfig::max_redirects`]
//!   times, and only to `http(s)`; proxies are never used (they would resolve names for us)
//!   and bodies are never decompressed;
//! - **local files**: only beneath [`FetchConfig::local_dir`], opened through `cap-std`
//!   (no `..`, no absolute path, no symlink leading out); every refusal — outside, missing,
//!   unreadable, not a file — gets the same answer, so a client learns nothing about which
//!   files exist.
#![warn(missing_docs)]

mod webhook;
pub use webhook::{WebhookConfig, WebhookPoster};

use async_trait::async_trait;
use ipnet::IpNet;
use mailroom_core::ports::{AttachmentLoader, LoadError, LoadedAttachment};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What may be fetched, and how. Change fields of [`FetchConfig::default`]; new ones may be
/// added.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FetchConfig {
    /// Fetch `http(s)` URLs at all.
    pub fetch_urls: bool,
    /// Allow every non-public address (a private network the operator trusts).
    pub allow_private: bool,
    /// Allow these networks even though they are not public (one file server, say).
    pub allow_networks: Vec<IpNet>,
    /// Serve relative paths from this directory; `None` (the default): no local files.
    pub local_dir: Option<PathBuf>,
    /// Connecting to a server.
    pub connect_timeout: Duration,
    /// One fetch in all: connecting, redirects, headers and body.
    pub timeout: Duration,
    /// Redirects followed at most.
    pub max_redirects: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            fetch_urls: true,
            allow_private: false,
            allow_networks: Vec::new(),
            local_dir: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_redirects: 5,
        }
    }
}

/// Whether `ip` is an ordinary public unicast address: everything an attacker could use to
/// reach the server's own machine, its private network or a cloud metadata service is not.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0                                   // "this network"
        || ip.is_loopback()                         // 127/8
        || ip.is_private()                          // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()                       // 169.254/16: metadata services live here
        || (a == 100 && (64..128).contains(&b))     // 100.64/10 shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0)           // 192.0.0/24 protocol assignments
        || (a == 192 && b == 0 && c == 2)           // documentation
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 198 && (b == 18 || b == 19))       // benchmarking
        || (a == 192 && b == 88 && c == 99)         // 6to4 relay anycast
        || ip.is_multicast()                        // 224/4
        || a >= 240) // reserved, and the broadcast address
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Addresses that carry an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        // ::/96, IPv4-compatible (deprecated), :: and ::1 among them.
        return !ip.is_unspecified() && !ip.is_loopback() && is_public_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(embedded(s[6], s[7])); // NAT64
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2])); // 6to4
    }
    !((s[0] & 0xfe00) == 0xfc00                     // fc00::/7 unique local (fd00:ec2::254 too)
        || (s[0] & 0xffc0) == 0xfe80                // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0                // fec0::/10 site-local
        || (s[0] & 0xff00) == 0xff00                // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8)       // documentation
        || (s[0] == 0x2001 && s[1] == 0)            // Teredo: hides an IPv4 address
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard
}

/// The address policy of one loader.
#[derive(Debug, Clone)]
struct Policy {
    allow_private: bool,
    allow: Vec<IpNet>,
}

impl Policy {
    fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow_private || is_public(ip) || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// A refusal by the address policy, found again in reqwest's error chain.
#[derive(Debug)]
struct Blocked(String);

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Blocked {}

/// Resolves names and keeps only the addresses the policy allows: the connection is made to
/// exactly the addresses checked.
#[derive(Debug)]
struct PolicyResolver(Policy);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.iter().copied().filter(|a| policy.allows(a.ip())).collect();
            if allowed.is_empty() && !addrs.is_empty() {
                return Err(
                    Box::new(Blocked(format!("{host} resolves to an address this server does not fetch from")))
                        as Box<dyn std::error::Error + Send + Sync>,
                );
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The loader.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    policy: Policy,
    config: Arc<FetchConfig>,
}

/// What every local refusal says, whatever the reason.
const NOT_A_LOCAL_FILE: &str = "this server does not serve a file at that path";

impl Fetcher {
    /// A loader with `config`.
    pub fn new(config: FetchConfig) -> Result<Fetcher, String> {
        let policy = Policy { allow_private: config.allow_private, allow: config.allow_networks.clone() };
        let redirect_policy = policy.clone();
        let max_redirects = config.max_redirects;
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(PolicyResolver(policy.clone())))
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .user_agent(concat!("mailroom/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    return attempt.error(Blocked(format!("more than {max_redirects} redirects")));
                }
                let (scheme, ip) = (attempt.url().scheme().to_string(), literal_ip(attempt.url()));
                if !matches!(scheme.as_str(), "http" | "https") {
                    return attempt.error(Blocked(format!("a redirect to a {scheme} URL")));
                }
                if let Some(ip) = ip
                    && !redirect_policy.allows(ip)
                {
                    return attempt
                        .error(Blocked(format!("a redirect to {ip}, which this server does not fetch from")));
                }
                attempt.follow()
            }))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Fetcher { client, policy, config: Arc::new(config) })
    }

    async fn fetch(&self, url: reqwest::Url, max: usize) -> Result<LoadedAttachment, LoadError> {
        if !self.config.fetch_urls {
            return Err(LoadError::Refused("this server does not fetch URLs".into()));
        }
        // A literal address never meets the resolver: it is checked here.
        if let Some(ip) = literal_ip(&url)
            && !self.policy.allows(ip)
        {
            return Err(LoadError::Refused(format!("{ip} is an address this server does not fetch from")));
        }
        let filename = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .filter(|s| !s.is_empty());
        let mut response = self.client.get(url.clone()).send().await.map_err(|e| self.failure(&e))?;
        if !response.status().is_success() {
            return Err(LoadError::Failed(format!("the server answered {}", response.status())));
        }
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Err(LoadError::TooLarge { max });
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase())
            .filter(|ct| ct.contains('/') && !ct.chars().any(char::is_control));
        let mut content = Vec::with_capacity(response.content_length().unwrap_or(0).min(max as u64) as usize);
        while let Some(chunk) = response.chunk().await.map_err(|e| self.failure(&e))? {
            if content.len() + chunk.len() > max {
                return Err(LoadError::TooLarge { max });
            }
            content.extend_from_slice(&chunk);
        }
        let mut loaded = LoadedAttachment::new(content);
        if let Some(ct) = content_type {
            loaded = loaded.content_type(ct);
        }
        if let Some(name) = filename {
            loaded = loaded.filename(name);
        }
        Ok(loaded)
    }

    fn failure(&self, e: &reqwest::Error) -> LoadError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(b) = s.downcast_ref::<Blocked>() {
                return LoadError::Refused(b.0.clone());
            }
            source = s.source();
        }
        if e.is_timeout() {
            return LoadError::Failed(format!("fetching it took longer than {} s", self.config.timeout.as_secs()));
        }
        if e.is_connect() {
            return LoadError::Failed("could not connect to its server".into());
        }
        LoadError::Failed("fetching it failed".into())
    }

    async fn local(&self, path: &str, max: usize) -> Result<LoadedAttachment, LoadError> {
        let Some(root) = self.config.local_dir.clone() else {
            return Err(LoadError::Refused("give an http(s) URL: this server does not serve local files".into()));
        };
        let rel = path.to_string();
        let read = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, LoadError> {
            use std::io::Read;
            let refused = || LoadError::Refused(NOT_A_LOCAL_FILE.into());
            let dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority()).map_err(|_| refused())?;
            let file = dir.open(&rel).map_err(|_| refused())?;
            let meta = file.metadata().map_err(|_| refused())?;
            if !meta.is_file() {
                return Err(refused());
            }
            if meta.len() > max as u64 {
                return Err(LoadError::TooLarge { max });
            }
            let mut content = Vec::with_capacity(meta.len() as usize);
            file.into_std().take(max as u64 + 1).read_to_end(&mut content).map_err(|_| refused())?;
            if content.len() > max {
                return Err(LoadError::TooLarge { max });
            }
            Ok(content)
        });
        let content = read.await.map_err(|_| LoadError::Refused(NOT_A_LOCAL_FILE.into()))??;
        let name = path.rsplit(['/', '\\']).next().filter(|s| !s.is_empty()).map(str::to_string);
        let mut loaded = LoadedAttachment::new(content);
        if let Some(name) = name {
            loaded = loaded.filename(name);
        }
        Ok(loaded)
    }
}

/// The host of `url` when it is an IP address (the URL parser has already normalised forms
/// like `0x7f.1` or `2130706433` into one).
fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

#[async_trait]
impl AttachmentLoader for Fetcher {
    async fn load(&self, path: &str, max_bytes: usize) -> Result<LoadedAttachment, LoadError> {
        let path = path.trim();
        match reqwest::Url::parse(path) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => self.fetch(url, max_bytes).await,
            // A Windows drive letter parses as a scheme; anything else with one is a URL of a
            // kind this server does not fetch.
            Ok(url) if url.scheme().len() > 1 => {
                Err(LoadError::Refused(format!("only http and https URLs are fetched, not {}:", url.scheme())))
            }
            _ => self.local(path, max_bytes).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn only_ordinary_public_addresses_are_public() {
        for private in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.9.9.9",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:0101::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "100::1",
        ] {
            assert!(!is_public(ip(private)), "{private} is not public");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert!(is_public(ip(public)), "{public} is public");
        }
    }

    #[test]
    fn the_operator_can_allow_networks() {
        let p =
            Policy { allow_private: false, allow: vec!["10.1.2.0/24".parse().unwrap_or_else(|_| IpNet::default())] };
        assert!(p.allows(ip("10.1.2.3")) && !p.allows(ip("10.1.3.3")) && p.allows(ip("8.8.8.8")));
        assert!(p.allows(ip("::ffff:10.1.2.3")), "a mapped address is judged as its IPv4 address");
        assert!(Policy { allow_private: true, allow: vec![] }.allows(ip("127.0.0.1")));
    }
}
