//! What the host configures: where mail goes, how long each step may take, how many
//! connections may be open.

use mailroom_core::DnsResolver;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A configuration the transport cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A relay URL that breaks a rule.
    #[error("relay URL {url:?}: {rule}")]
    RelayUrl {
        /// The URL given.
        url: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The TLS set-up failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// A DKIM key could not be used.
    #[error("DKIM key {0}")]
    Dkim(String),
}

/// How the connection to a relay is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain TCP, upgraded with STARTTLS when the server offers it.
    Opportunistic,
    /// STARTTLS is required: a server that does not offer it gets no mail.
    StartTlsRequired,
    /// TLS from the first byte (`smtps://`, port 465).
    Implicit,
    /// Never TLS (a relay on loopback, a test server).
    None,
}

/// A smarthost: `smtp://[user:pass@]host[:port][?tls=required|none]` or
/// `smtps://[user:pass@]host[:port]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayTarget {
    /// The relay's host name or address.
    pub host: String,
    /// Its port (587 for `smtp://`, 465 for `smtps://` by default).
    pub port: u16,
    /// How the connection is secured.
    pub security: Security,
    /// AUTH PLAIN/LOGIN credentials (user, password).
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for RelayTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches a log.
        f.debug_struct("RelayTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish()
    }
}

impl RelayTarget {
    /// Parses a relay URL. Percent-escapes in the user and password are decoded.
    pub fn parse(url: &str) -> Result<RelayTarget, ConfigError> {
        let err = |rule| ConfigError::RelayUrl { url: redact(url), rule };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| err("must start with smtp:// or smtps://"))?;
        let (mut security, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "smtp" => (Security::Opportunistic, 587),
            "smtps" => (Security::Implicit, 465),
            _ => return Err(err("the scheme must be smtp or smtps")),
        };
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a.trim_end_matches('/'), Some(q)),
            None => (rest.trim_end_matches('/'), None),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let credentials = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').ok_or_else(|| err("credentials must be user:password"))?;
                Some((mailroom_core::tracking::unescape(user).ok_or_else(|| err("bad %-escape in the user"))?, {
                    mailroom_core::tracking::unescape(pass).ok_or_else(|| err("bad %-escape in the password"))?
                }))
            }
            None => None,
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || p.bytes().all(|b| b.is_ascii_digit()) => {
                (h, p.parse::<u16>().map_err(|_| err("the port must be a number from 1 to 65535"))?)
            }
            _ => (hostport, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(err("a host and a non-zero port are required"));
        }
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair {
                "tls=required" if security == Security::Opportunistic => security = Security::StartTlsRequired,
                "tls=none" if security == Security::Opportunistic => security = Security::None,
                "tls=opportunistic" => {}
                _ => return Err(err("the only option is tls=required|opportunistic|none (smtp:// only)")),
            }
        }
        Ok(RelayTarget { host: host.to_string(), port, security, credentials })
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Every message to one smarthost, which relays it (recipients end `sent`, not
    /// `delivered`: the relay's own fate is unknown to us).
    Relay(RelayTarget),
    /// Each recipient domain's MX hosts, found through the resolver. `port` is 25 except in
    /// tests (a server on a high loopback port).
    Direct {
        /// Where MX, A and AAAA records come from.
        resolver: Arc<dyn DnsResolver>,
        /// The port MX hosts listen on.
        port: u16,
    },
}

/// A deadline for every step of a session: none may hang.
///
/// The defaults are shorter than RFC 5321 §4.5.3.2's (5 minutes per command) because a
/// transactional sender would rather retry on another connection than wait, except for
/// the reply to the end of data: cutting that one short turns a slow "250" into an ambiguous
/// outcome (the message may well have been accepted), so it keeps the RFC's 10 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the TCP connection.
    pub connect: Duration,
    /// The server's greeting.
    pub greeting: Duration,
    /// The answer to EHLO.
    pub ehlo: Duration,
    /// The STARTTLS exchange and handshake.
    pub starttls: Duration,
    /// MAIL, RCPT, DATA, RSET, NOOP, AUTH.
    pub command: Duration,
    /// Writing the message body.
    pub data_body: Duration,
    /// The reply after the end-of-data dot.
    pub final_reply: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            connect: s(15),
            greeting: s(60),
            ehlo: s(60),
            starttls: s(60),
            command: s(60),
            data_body: s(120),
            final_reply: s(600),
        }
    }
}

/// The transport's configuration.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Relay or direct.
    pub mode: Mode,
    /// The name this client gives in EHLO.
    pub helo_name: String,
    /// Every step's deadline.
    pub timeouts: Timeouts,
    /// Open connections, in total.
    pub max_connections: usize,
    /// Open connections to one destination (a relay, or one MX host).
    pub max_per_destination: usize,
    /// Transactions on one connection before it is closed (servers limit it too).
    pub max_messages_per_connection: usize,
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
    /// An idle connection older than this gets a NOOP before it is reused.
    pub health_check_after: Duration,
    /// Accept any TLS certificate (test servers with self-signed certificates only).
    pub accept_invalid_certs: bool,
    /// DKIM keys: a message is signed with the key of its From domain (or a parent domain).
    pub dkim: Vec<Arc<crate::dkim::DkimKey>>,
}

impl SmtpConfig {
    /// Relay everything to `target`, with defaults for the rest.
    pub fn relay(target: RelayTarget) -> SmtpConfig {
        SmtpConfig::with_mode(Mode::Relay(target))
    }

    /// Deliver to each domain's MX hosts, found through `resolver`.
    pub fn direct(resolver: Arc<dyn DnsResolver>) -> SmtpConfig {
        SmtpConfig::with_mode(Mode::Direct { resolver, port: 25 })
    }

    fn with_mode(mode: Mode) -> SmtpConfig {
        SmtpConfig {
            mode,
            helo_name: "localhost".into(),
            timeouts: Timeouts::default(),
            // Eight connections keep a loopback relay busy; a host sending to many domains
            // raises it.
            max_connections: 8,
            // Large providers throttle clients that open many parallel connections.
            max_per_destination: 8,
            // Postfix's smtp_connection_reuse_count_limit is unlimited; Exchange and Gmail
            // accept a few hundred per session. 100 keeps sessions short-lived enough.
            max_messages_per_connection: 100,
            // Postfix's smtp_connection_cache_time_limit is 2 s; servers drop idle clients
            // after 30 s to 5 min. 30 s keeps warm connections for bursts without holding them.
            idle_timeout: Duration::from_secs(30),
            // Reusing a connection that sat idle briefly needs no probe: a dead one fails at
            // MAIL FROM, before anything was handed over, and is replaced.
            health_check_after: Duration::from_secs(5),
            accept_invalid_certs: false,
            dkim: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls() {
        let r = RelayTarget::parse("smtp://relay.example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (r.host.as_str(), r.port, r.security, r.credentials),
            ("relay.example.com", 587, Security::Opportunistic, None)
        );
        let r = RelayTarget::parse("smtps://u%40x:p%3Aw@mail.example.com:2465").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.port, r.security), (2465, Security::Implicit));
        assert_eq!(r.credentials, Some(("u@x".into(), "p:w".into())));
        let r = RelayTarget::parse("smtp://127.0.0.1:2525?tls=none").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.host.as_str(), r.port, r.security), ("127.0.0.1", 2525, Security::None));
        let r = RelayTarget::parse("smtp://[::1]:25?tls=required").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.host.as_str(), r.security), ("::1", Security::StartTlsRequired));
    }

    #[test]
    fn bad_relay_urls_name_the_rule_and_hide_the_password() {
        for bad in ["relay.example.com", "http://x", "smtp://x:0", "smtp://x:port", "smtp://u@x", "smtps://x?tls=none"]
        {
            assert!(RelayTarget::parse(bad).is_err(), "{bad} was accepted");
        }
        let e = RelayTarget::parse("smtp://user:secret@x:99999").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!e.contains("secret") && e.contains("port"), "{e}");
        let dbg = format!("{:?}", RelayTarget::parse("smtp://user:secret@x").ok());
        assert!(!dbg.contains("secret"), "{dbg}");
    }
}
