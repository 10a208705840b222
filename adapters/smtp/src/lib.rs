//! # mailroom-smtp
//!
//! mailroom's SMTP [`Transport`]: relay every message to a smarthost, or deliver each
//! recipient domain's share to its MX hosts (found through the core's [`DnsResolver`](mailroom_core::DnsResolver) port).
//! Sessions are pooled per destination and reused (with RSET only after a transaction that
//! did not finish), pipelined when the server offers PIPELINING (with mail queued for the same
//! destination, a message's end-of-data dot travels with the next message's envelope: one
//! round trip per message), and every step runs under its own deadline.
//!
//! ## The no-duplicates policy
//!
//! A failure before the end-of-data dot was written hands nothing over: the message is tried
//! again (on a fresh session when a reused one turns out dead, or later by the worker's retry
//! policy). A failure after the dot — the connection lost, the final reply late or garbled —
//! is *ambiguous*: the server may have accepted the message. It is reported as
//! [`TransportErrorKind::Ambiguous`] and never retried here; the worker's in-doubt policy
//! decides (by default the email ends `failed` with the reason; an operator who prefers
//! duplicates to losses has it sent again).
#![warn(missing_docs)]

mod config;
mod dkim;
mod pool;
mod session;
mod tls;

pub use config::{ConfigError, Mode, RelayTarget, Security, SmtpConfig, Timeouts};
pub use dkim::DkimKey;

use async_trait::async_trait;
use mailroom_core::bounce::{EnhancedStatus, SmtpReply, Stage};
use mailroom_core::mx::{Route, route};
use mailroom_core::ports::{
    DeliveryReport, DnsError, Envelope, RecipientReport, RecipientStatus, Transport, TransportError, TransportErrorKind,
};
use pool::Pool;
use session::{DataOutcome, Open, Session, StepError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// Delivers over SMTP. Cheap to share (`Arc` inside); one per process.
#[derive(Clone)]
pub struct SmtpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    config: SmtpConfig,
    pool: Pool,
    /// For relays: the system's roots (unless the host accepts any certificate).
    verifying: TlsConnector,
    /// For MX hosts: opportunistic, unauthenticated TLS.
    opportunistic: TlsConnector,
    /// Signers built from the keys envelopes carry (a sending domain's, from the store), by
    /// domain, selector and key: parsing a PEM key for every message would cost more than
    /// signing it.
    envelope_keys: std::sync::Mutex<std::collections::HashMap<(String, String, String), Arc<dkim::DkimKey>>>,
}

/// Signers kept for envelope keys at most (rotations leave old ones behind; past this the
/// cache starts over).
const ENVELOPE_KEYS: usize = 1024;

impl std::fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTransport").field("mode", &self.inner.config.mode).finish()
    }
}

impl SmtpTransport {
    /// A transport with `config` (loads the system's root certificates for relays that need
    /// TLS verified).
    pub fn new(config: SmtpConfig) -> Result<SmtpTransport, ConfigError> {
        let opportunistic = tls::unverified()?;
        // The system's roots are loaded only when a relay will verify them (loading them is
        // the slowest part of start-up).
        let verifies = matches!(&config.mode, Mode::Relay(t) if t.security != Security::None);
        let verifying =
            if config.accept_invalid_certs || !verifies { opportunistic.clone() } else { tls::verifying()? };
        let pool = Pool::new(config.max_connections, config.max_per_destination, config.idle_timeout);
        let envelope_keys = std::sync::Mutex::new(std::collections::HashMap::new());
        Ok(SmtpTransport { inner: Arc::new(Inner { config, pool, verifying, opportunistic, envelope_keys }) })
    }

    /// The signer for the key an envelope carries.
    fn envelope_key(&self, k: &mailroom_core::ports::SigningKey) -> Result<Arc<dkim::DkimKey>, TransportError> {
        let id = (k.domain.clone(), k.selector.clone(), k.private_pem.clone());
        let mut cache = self.inner.envelope_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(key) = cache.get(&id) {
            return Ok(Arc::clone(key));
        }
        let key = match k.algorithm {
            mailroom_core::domains::DkimAlgorithm::Rsa2048 => {
                dkim::DkimKey::rsa_pem(&k.domain, &k.selector, &k.private_pem)
            }
            mailroom_core::domains::DkimAlgorithm::Ed25519 => {
                dkim::DkimKey::ed25519_pem(&k.domain, &k.selector, &k.private_pem)
            }
        }
        .map_err(|e| TransportError {
            kind: TransportErrorKind::Transient,
            reply: None,
            stage: Stage::Unknown,
            message: e.to_string(),
        })?;
        if cache.len() >= ENVELOPE_KEYS {
            cache.clear();
        }
        let key = Arc::new(key);
        cache.insert(id, Arc::clone(&key));
        Ok(key)
    }
}

/// Whether a transaction needs SMTPUTF8: a non-ASCII envelope address, or non-ASCII bytes in
/// the message's headers (RFC 6532 puts addresses there as they are).
fn needs_smtputf8(from: &str, to: &[String], message: &[u8]) -> bool {
    let headers_end = memchr::memmem::find(message, b"\r\n\r\n").unwrap_or(message.len());
    !from.is_ascii() || to.iter().any(|r| !r.is_ascii()) || !message[..headers_end].is_ascii()
}

/// Where one transaction goes.
struct Destination<'a> {
    key: String,
    addrs: Vec<SocketAddr>,
    tls_name: String,
    security: Security,
    credentials: Option<&'a (String, String)>,
    tls: &'a TlsConnector,
    /// Accepted recipients are `Delivered` (their own server) or `Relayed` (a smarthost).
    accepted: RecipientStatus,
}

/// A transaction's outcome for each of its recipients, or why it could not run.
enum Outcome {
    Done(Vec<RecipientReport>),
    /// No session could be opened, or it broke before the dot: nothing was handed over.
    NotHandedOver {
        message: String,
        reply: Option<SmtpReply>,
    },
    /// The dot may have reached the server.
    Ambiguous(String),
}

#[async_trait]
impl Transport for SmtpTransport {
    async fn send_raw(&self, envelope: &Envelope, message: &[u8]) -> Result<DeliveryReport, TransportError> {
        let signed;
        // The sending domain's verified key first (the domain published it and the server
        // checked it); else a key the host configured for the From domain.
        let from_envelope = envelope.dkim.as_deref().map(|k| self.envelope_key(k)).transpose()?;
        let key = from_envelope.as_deref().or_else(|| dkim::key_for(&self.inner.config.dkim, message));
        let message = match key {
            Some(key) => {
                let header = key.signature(message).map_err(|message| TransportError {
                    kind: TransportErrorKind::Transient,
                    reply: None,
                    stage: Stage::Unknown,
                    message,
                })?;
                signed = [header.as_bytes(), message].concat();
                &signed[..]
            }
            None => message,
        };
        match &self.inner.config.mode {
            Mode::Relay(target) => self.relay(target, envelope, message).await,
            Mode::Direct { resolver, port } => self.direct(resolver.as_ref(), *port, envelope, message).await,
        }
    }
}

impl SmtpTransport {
    async fn relay(
        &self,
        target: &RelayTarget,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<DeliveryReport, TransportError> {
        let addrs = resolve_host(&target.host, target.port).await.map_err(|message| TransportError {
            kind: TransportErrorKind::Transient,
            reply: None,
            stage: Stage::Unknown,
            message,
        })?;
        let security = match (envelope.require_tls, target.security) {
            (true, Security::None) => {
                return Err(TransportError {
                    kind: TransportErrorKind::Permanent,
                    reply: Some(synthetic(
                        550,
                        (5, 7, 10),
                        "the sending domain requires TLS; the relay is set to plain",
                    )),
                    stage: Stage::Unknown,
                    message: "the sending domain requires TLS, and the relay is configured without it".into(),
                });
            }
            (true, Security::Opportunistic) => Security::StartTlsRequired,
            (_, s) => s,
        };
        let dest = Destination {
            // A connection opened without TLS is never reused for mail that requires it.
            key: format!("relay:{}:{}:{security:?}", target.host, target.port),
            addrs,
            tls_name: target.host.clone(),
            security,
            credentials: target.credentials.as_ref(),
            tls: &self.inner.verifying,
            accepted: RecipientStatus::Relayed,
        };
        match self.transaction(&dest, &envelope.from, &envelope.to, message).await {
            Ok(Outcome::Done(recipients)) => Ok(DeliveryReport { recipients }),
            Ok(Outcome::NotHandedOver { message, reply }) => {
                Err(TransportError { kind: TransportErrorKind::Transient, reply, stage: Stage::Unknown, message })
            }
            Ok(Outcome::Ambiguous(message)) => {
                Err(TransportError { kind: TransportErrorKind::Ambiguous, reply: None, stage: Stage::Unknown, message })
            }
            Err(refused) => Err(refused),
        }
    }

    async fn direct(
        &self,
        resolver: &dyn mailroom_core::DnsResolver,
        port: u16,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<DeliveryReport, TransportError> {
        // One transaction per recipient domain (each has its own MX hosts), in the order the
        // recipients came.
        let mut domains: Vec<(String, Vec<String>)> = Vec::new();
        for r in &envelope.to {
            let d = r.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
            match domains.iter_mut().find(|(k, _)| *k == d) {
                Some((_, v)) => v.push(r.clone()),
                None => domains.push((d, vec![r.clone()])),
            }
        }
        let mut recipients = Vec::with_capacity(envelope.to.len());
        let mut ambiguous = None;
        for (domain, rcpts) in domains {
            let every = |status: RecipientStatus, reply: SmtpReply, stage: Stage| -> Vec<RecipientReport> {
                rcpts
                    .iter()
                    .map(|r| RecipientReport {
                        recipient: r.clone(),
                        status,
                        reply: Some(reply.clone()),
                        stage,
                        feedback: None,
                    })
                    .collect()
            };
            let hosts = match self.route(resolver, &domain).await {
                Route::Hosts(h) => h,
                Route::NullMx => {
                    recipients.extend(every(
                        RecipientStatus::Rejected,
                        synthetic(556, (5, 1, 10), &format!("{domain} does not accept mail (null MX, RFC 7505)")),
                        Stage::Unknown,
                    ));
                    continue;
                }
                Route::NoSuchDomain => {
                    recipients.extend(every(
                        RecipientStatus::Rejected,
                        synthetic(
                            550,
                            (5, 1, 2),
                            &format!("{domain} has no MX and no address: the domain does not exist"),
                        ),
                        Stage::Unknown,
                    ));
                    continue;
                }
                Route::Unknown(why) => {
                    recipients.extend(every(
                        RecipientStatus::Deferred,
                        synthetic(451, (4, 4, 3), &format!("DNS lookup for {domain} failed: {why}")),
                        Stage::Unknown,
                    ));
                    continue;
                }
            };
            let mut last_failure = format!("{domain}: no MX host could be reached");
            let mut done = false;
            for host in hosts {
                let addrs = match resolver.ips(&host).await {
                    Ok(ips) if !ips.is_empty() => ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(),
                    Ok(_) | Err(_) => {
                        last_failure = format!("{host}: no address");
                        continue;
                    }
                };
                let security = if envelope.require_tls { Security::StartTlsRequired } else { Security::Opportunistic };
                let dest = Destination {
                    key: format!("mx:{host}:{port}:{security:?}"),
                    addrs,
                    tls_name: host.clone(),
                    security,
                    credentials: None,
                    tls: &self.inner.opportunistic,
                    accepted: RecipientStatus::Delivered,
                };
                match self.transaction(&dest, &envelope.from, &rcpts, message).await {
                    Ok(Outcome::Done(r)) => {
                        recipients.extend(r);
                        done = true;
                    }
                    // The next MX host may do better (RFC 5321 §5.1).
                    Ok(Outcome::NotHandedOver { message, .. }) => {
                        last_failure = message;
                        continue;
                    }
                    Ok(Outcome::Ambiguous(m)) => {
                        ambiguous = Some(m);
                        done = true;
                    }
                    // MAIL FROM refused by this domain's server: its recipients share the refusal.
                    Err(e) => {
                        let status = if e.kind == TransportErrorKind::Permanent {
                            RecipientStatus::Rejected
                        } else {
                            RecipientStatus::Deferred
                        };
                        let reply = e.reply.unwrap_or_else(|| synthetic(451, (4, 0, 0), &e.message));
                        recipients.extend(every(status, reply, Stage::Sender));
                        done = true;
                    }
                }
                break;
            }
            if !done {
                recipients.extend(every(
                    RecipientStatus::Deferred,
                    synthetic(451, (4, 4, 1), &last_failure),
                    Stage::Unknown,
                ));
            }
        }
        // One ambiguous domain makes the whole hand-over ambiguous: the email is never sent
        // again, so no recipient can get it twice (the others' outcomes are in the log).
        if let Some(message) = ambiguous {
            return Err(TransportError {
                kind: TransportErrorKind::Ambiguous,
                reply: None,
                stage: Stage::Unknown,
                message,
            });
        }
        Ok(DeliveryReport { recipients })
    }

    async fn route(&self, resolver: &dyn mailroom_core::DnsResolver, domain: &str) -> Route {
        let mx = resolver.mx(domain).await;
        let needs_address = matches!(&mx, Ok(v) if v.is_empty()) || matches!(mx, Err(DnsError::NotFound { .. }));
        let mut has_address = false;
        if needs_address {
            match resolver.ips(domain).await {
                Ok(ips) => has_address = !ips.is_empty(),
                Err(DnsError::NotFound { .. }) => {}
                Err(DnsError::Failed { message, .. }) => return Route::Unknown(message),
            }
        }
        route(domain, mx, || has_address)
    }

    /// One transaction to `dest`: a pooled session (or a new one), MAIL/RCPT, DATA.
    /// `Err` is MAIL FROM's refusal (the message as a whole is refused).
    async fn transaction(
        &self,
        dest: &Destination<'_>,
        from: &str,
        to: &[String],
        message: &[u8],
    ) -> Result<Outcome, TransportError> {
        let cfg = &self.inner.config;
        let pool = &self.inner.pool;
        let (lease, pooled) = pool.checkout(&dest.key).await;
        let mut session = match pooled {
            Some(mut s) => {
                if s.last_used.elapsed() > cfg.health_check_after && !s.healthy(cfg.timeouts.command).await {
                    pool.discard(Some(s));
                    match self.open(dest).await {
                        Ok(s) => s,
                        Err(o) => return Ok(o),
                    }
                } else {
                    s
                }
            }
            None => match self.open(dest).await {
                Ok(s) => s,
                Err(o) => return Ok(o),
            },
        };
        // RFC 6531: an address with a UTF-8 local part, or UTF-8 in the headers, goes only to
        // a server that takes SMTPUTF8; anywhere else each recipient fails for good with
        // 5.6.7 — an address is never rewritten to make it fit.
        let utf8 = needs_smtputf8(from, to, message);
        if utf8 && !session.smtputf8 {
            pool.checkin(lease, session, cfg.max_messages_per_connection);
            let reply = synthetic(
                553,
                (5, 6, 7),
                "the message has internationalised addresses (RFC 6531) and this server does not offer SMTPUTF8",
            );
            return Ok(Outcome::Done(
                to.iter()
                    .map(|r| RecipientReport {
                        recipient: r.clone(),
                        status: RecipientStatus::Rejected,
                        reply: Some(reply.clone()),
                        stage: Stage::Unknown,
                        feedback: None,
                    })
                    .collect(),
            ));
        }
        let mut retried = false;
        let exchange = loop {
            // Hold the dot back for the next transaction when one is waiting for a session to
            // this destination (see `finish`).
            let max = cfg.max_messages_per_connection;
            let reserved = std::sync::atomic::AtomicBool::new(false);
            let hold = |s: &Session| {
                let r = s.can_owe(max) && pool.reserve_taker(&dest.key);
                reserved.store(r, std::sync::atomic::Ordering::SeqCst);
                r
            };
            let result = session.transaction(from, to, message, &cfg.timeouts, utf8, &hold).await;
            // A reservation whose hand-off does not follow (the write failed) is given back.
            if reserved.load(std::sync::atomic::Ordering::SeqCst)
                && !matches!(&result, Ok(x) if matches!(x.data, DataOutcome::Held))
            {
                pool.untake(&dest.key);
            }
            match result {
                Ok(x) => break x,
                Err(StepError::Reply(reply)) => {
                    session.aborted();
                    pool.checkin(lease, session, cfg.max_messages_per_connection);
                    let kind = if reply.code / 100 == 5 {
                        TransportErrorKind::Permanent
                    } else {
                        TransportErrorKind::Transient
                    };
                    return Err(TransportError {
                        kind,
                        message: format!("MAIL FROM refused: {reply}"),
                        reply: Some(reply),
                        stage: Stage::Sender,
                    });
                }
                Err(StepError::Lost { what, after_dot: true }) => {
                    pool.discard(Some(session));
                    return Ok(Outcome::Ambiguous(what));
                }
                Err(StepError::Lost { what, after_dot: false }) => {
                    pool.discard(Some(session));
                    // A reused session may have been closed by the server while idle; nothing
                    // was handed over, so one fresh session gets the transaction.
                    if retried {
                        return Ok(Outcome::NotHandedOver { message: what, reply: None });
                    }
                    retried = true;
                    session = match self.open(dest).await {
                        Ok(s) => s,
                        Err(o) => return Ok(o),
                    };
                }
            }
        };
        let mut reports: Vec<RecipientReport> = Vec::with_capacity(to.len());
        for (r, reply) in to.iter().zip(exchange.rcpt) {
            let status = match reply.code / 100 {
                2 => dest.accepted,
                4 => RecipientStatus::Deferred,
                _ => RecipientStatus::Rejected,
            };
            let stage = Stage::Recipient;
            reports.push(RecipientReport { recipient: r.clone(), status, reply: Some(reply), stage, feedback: None });
        }
        // The accepted recipients share the fate of the message: the final reply, or DATA's
        // refusal.
        let shared = match exchange.data {
            DataOutcome::NotSent => None,
            DataOutcome::Refused(reply) => {
                session.aborted();
                Some(reply)
            }
            DataOutcome::Final(reply) => Some(reply),
            DataOutcome::Held => match self.finish(lease, session).await {
                Ok(reply) => {
                    share(&mut reports, reply, dest.accepted);
                    return Ok(Outcome::Done(reports));
                }
                Err(what) => return Ok(Outcome::Ambiguous(what)),
            },
        };
        if let Some(reply) = shared {
            share(&mut reports, reply, dest.accepted);
        }
        pool.checkin(lease, session, cfg.max_messages_per_connection);
        Ok(Outcome::Done(reports))
    }

    /// A message written without its end-of-data dot (a transaction was waiting for a session
    /// to the same destination): the session goes to that transaction at once, which writes
    /// the dot in one segment with its own MAIL FROM, RCPT TO and DATA and reads all their
    /// replies together, so each message costs one round trip instead of two (RFC 2920 §3.1
    /// lets message content open a group). Why the dot waits rather than the reply: written
    /// apart, the next transaction's commands arrive in a segment of their own, and a server
    /// that answered the dot at once holds the next answers (Nagle) until our delayed ACK —
    /// measured, ~40 ms per message.
    ///
    /// The final reply; `Err`: none came (the message may have been accepted).
    async fn finish(&self, lease: pool::Lease, mut session: Session) -> Result<SmtpReply, String> {
        let cfg = &self.inner.config;
        let pool = &self.inner.pool;
        static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let token = TOKENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = lease.key.clone();
        let (to, mut reply) = tokio::sync::oneshot::channel();
        session.owe(to, token, &cfg.timeouts);
        pool.checkin(lease, session, cfg.max_messages_per_connection);
        // A dropped sender: the session went away without a word (a transaction holding it
        // was cancelled, perhaps mid-write of the dot; a QUIT writes the dot first). Whether
        // the dot went out is unknown, so the message is in doubt, never tried again here.
        let answer = |r: Result<Result<SmtpReply, String>, _>| {
            r.unwrap_or_else(|_| {
                Err("the session carrying the end of data closed; the message may have been accepted".into())
            })
        };
        // The waiting transaction takes the session within moments. If it went away instead
        // (its task ended), nobody would write the dot: after a grace period this transaction
        // takes its session back and ends the message itself, unless someone has it by then.
        tokio::select! {
            r = &mut reply => return answer(r),
            () = tokio::time::sleep(HAND_OFF_GRACE) => {}
        }
        tokio::select! {
            r = &mut reply => return answer(r),
            back = pool.take_back(&key, token) => {
                if let Some((lease, mut session)) = back {
                    match session.settle_owed().await {
                        Ok(()) => pool.checkin(lease, session, cfg.max_messages_per_connection),
                        Err(_) => pool.discard(Some(session)),
                    }
                }
            }
        }
        // Answered by whoever wrote the dot (ourselves just now, or the transaction holding
        // the session, which reads under the final-reply deadline).
        match tokio::time::timeout(cfg.timeouts.final_reply + cfg.timeouts.command, reply).await {
            Ok(r) => answer(r),
            Err(_) => Err(format!("no reply to the end of data within {} s", cfg.timeouts.final_reply.as_secs())),
        }
    }

    /// Opens a session to the first of `dest.addrs` that answers.
    async fn open(&self, dest: &Destination<'_>) -> Result<Session, Outcome> {
        let cfg = &self.inner.config;
        let pool = &self.inner.pool;
        let mut last = String::from("no address to connect to");
        let mut last_reply = None;
        for addr in &dest.addrs {
            pool.make_room();
            let opened = Session::open(Open {
                addr: *addr,
                tls_name: &dest.tls_name,
                helo: &cfg.helo_name,
                security: dest.security,
                credentials: dest.credentials,
                timeouts: &cfg.timeouts,
                tls: dest.tls,
            })
            .await;
            match opened {
                Ok(s) => return Ok(s),
                Err(StepError::Reply(r)) => {
                    pool.not_opened();
                    last = format!("{addr}: {r}");
                    last_reply = Some(r);
                }
                Err(StepError::Lost { what, .. }) => {
                    pool.not_opened();
                    last = what;
                }
            }
        }
        Err(Outcome::NotHandedOver { message: last, reply: last_reply })
    }
}

/// How long a transaction that handed its session off (dot owed) waits for the waiting
/// transaction to take it before taking it back.
const HAND_OFF_GRACE: std::time::Duration = std::time::Duration::from_millis(20);

/// Every recipient the server accepted shares the fate of the message: the final reply, or
/// DATA's refusal.
fn share(reports: &mut [RecipientReport], reply: SmtpReply, accepted: RecipientStatus) {
    let status = match reply.code / 100 {
        2 => accepted,
        4 => RecipientStatus::Deferred,
        _ => RecipientStatus::Rejected,
    };
    for r in reports.iter_mut().filter(|r| r.status == accepted) {
        r.status = status;
        r.reply = Some(reply.clone());
        // The reply to the message, after `DATA`: every accepted recipient shares it.
        r.stage = Stage::Message;
    }
}

async fn resolve_host(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.map_err(|e| format!("resolving {host}: {e}"))?.collect();
    if addrs.is_empty() { Err(format!("{host} has no address")) } else { Ok(addrs) }
}

/// A reply made up here for a failure no server answered (DNS, unreachable hosts), in the
/// same shape as a server's so that the classifier reads both alike.
fn synthetic(code: u16, (class, subject, detail): (u8, u16, u16), text: &str) -> SmtpReply {
    SmtpReply { code, enhanced: Some(EnhancedStatus { class, subject, detail }), text: text.to_string() }
}

#[cfg(test)]
#[path = "../tests/peers/mod.rs"]
mod test_peers;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod hand_off_tests {
    use super::*;
    use crate::test_peers as peers;
    use std::time::Instant;

    /// The grace path of [`SmtpTransport::finish`]: a message written with its dot held for a
    /// next transaction that never comes is ended by its own transaction, and the session is
    /// reusable after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_dot_that_nobody_takes_is_written_by_its_own_transaction() {
        let peer = peers::smtpd(&["--pipelining"]);
        let url = format!("smtp://127.0.0.1:{}?tls=none", peer.port);
        let t = SmtpTransport::new(SmtpConfig::relay(RelayTarget::parse(&url).unwrap())).unwrap();
        let cfg = &t.inner.config;
        let key = "held".to_string();
        let (lease, idle) = t.inner.pool.checkout(&key).await;
        assert!(idle.is_none());
        t.inner.pool.make_room();
        let mut session = Session::open(Open {
            addr: SocketAddr::from(([127, 0, 0, 1], peer.port)),
            tls_name: "localhost",
            helo: "client.test",
            security: Security::None,
            credentials: None,
            timeouts: &cfg.timeouts,
            tls: &t.inner.verifying,
        })
        .await
        .unwrap();
        let to = vec!["b@example.test".to_string()];
        let message = b"From: a@sender.test\r\nSubject: held\r\n\r\n.a dotted line\r\nbody\r\n";
        let x = session.transaction("a@sender.test", &to, message, &cfg.timeouts, false, &|_| true).await.unwrap();
        assert!(matches!(x.data, DataOutcome::Held), "the dot was not held");
        assert!(!t.inner.pool.reserve_taker(&key), "nobody waits for the session");
        let started = Instant::now();
        let reply = t.finish(lease, session).await.unwrap();
        assert_eq!(reply.code, 250, "{reply}");
        assert!(started.elapsed() >= HAND_OFF_GRACE, "answered before the grace period ended");
        // Back in the pool, clean: the next transaction on it goes through.
        let (lease, again) = t.inner.pool.checkout(&key).await;
        let mut session = again.expect("the session went back to the pool");
        let x = session.transaction("a@sender.test", &to, message, &cfg.timeouts, false, &|_| false).await.unwrap();
        assert!(matches!(x.data, DataOutcome::Final(ref r) if r.code == 250));
        t.inner.pool.checkin(lease, session, cfg.max_messages_per_connection);
        let printed = peer.stop();
        assert!(printed.contains("accepted=2") && printed.contains("resets=0"), "{printed}");
    }
}
