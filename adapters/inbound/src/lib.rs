//! An inbound SMTP listener (RFC 5321) for the mailroom engine.
//!
//! It takes mail only for what the engine routes ([`Engine::route`]): bounce addresses and
//! receiving domains. Everything else is refused at `RCPT` with `550 5.7.1`: it is never a
//! relay. A message is handed to [`Engine::receive`] and acknowledged with `250` only once
//! that returned, so every acknowledged message is durable (kept, or applied to the email it
//! answers).
//!
//! Extensions: PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, STARTTLS (when a
//! certificate is configured). Limits: message size, recipients per message, connections in
//! all and per client address, messages per minute per client address, errors per session,
//! and the RFC 5321 §4.5.3.2 timeouts.
//!
//! Why a hand-written server: the protocol is a dozen commands, and what matters here — the
//! bounded reads, the end-of-data rule that refuses SMTP smuggling, the pipelining buffer
//! dropped at STARTTLS — is easier to see and to test in one file than through a framework.

use mailroom_core::clients::client_network;
use mailroom_core::engine::Engine;
use mailroom_core::ports::MessageAuth;
use mailroom_core::receiving::{Arrival, Route, received_line};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

mod command;
pub use command::{Command, parse_command};

/// The listener's settings.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    /// The name it greets with and puts in `Received:` lines.
    pub hostname: String,
    /// The largest message accepted, in bytes (advertised with SIZE).
    pub max_message_size: usize,
    /// Message data held in memory by all sessions together, in bytes: a session whose message
    /// would pass it waits (up to the data timeout) for others to finish, then gets `451`.
    /// Without it, every session at the size limit at once would need sessions × size.
    pub max_data_in_memory: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Sessions open at once, from everyone.
    pub max_connections: usize,
    /// Sessions open at once from one client address (an IPv6 client by its /64:
    /// [`client_network`]).
    pub max_connections_per_ip: usize,
    /// Messages per minute from one client address (likewise).
    pub messages_per_minute_per_ip: u32,
    /// Rejected commands before the session is closed.
    pub max_errors: u32,
    /// Waiting for a command (RFC 5321: 5 minutes), and for the client to take a reply.
    pub command_timeout: Duration,
    /// Waiting for each block of message data (RFC 5321: 3 minutes).
    pub data_timeout: Duration,
    /// The whole session, however busy (a slow drip of bytes cannot hold a slot forever).
    pub session_timeout: Duration,
    /// STARTTLS, when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// SPF, DKIM and DMARC of received mail (not of bounces), when set.
    pub auth: Option<Arc<dyn MessageAuth>>,
    /// How long those checks may take before the message is kept without them.
    pub auth_timeout: Duration,
    /// Close a session whose client sends commands ahead of the replies where RFC 5321 and
    /// RFC 2920 §3.1 do not let it (before `EHLO`, or behind a command that ends a group) with
    /// `554 5.5.0`. On by default, as in Exim
    /// (`smtp_enforce_sync`) and postfix 3.9 (`smtpd_forbid_unauth_pipelining`): mail servers
    /// wait for each reply where they must; bulk-mail software that does not is what it stops.
    pub enforce_sync: bool,
    /// Wait this long before the greeting and close a session whose client talks first
    /// (sendmail's `greet_pause`, postscreen's pregreet test): RFC 5321 §3.1 has the client
    /// wait for the greeting. Zero (the default) greets at once and checks nothing, because
    /// the pause delays every sender's connection.
    pub greet_pause: Duration,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            hostname: "localhost".into(),
            max_message_size: 40 << 20,
            max_data_in_memory: 512 << 20,
            max_recipients: 100,
            max_connections: 512,
            max_connections_per_ip: 20,
            messages_per_minute_per_ip: 600,
            max_errors: 10,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            session_timeout: Duration::from_secs(1800),
            tls: None,
            auth: None,
            auth_timeout: Duration::from_secs(10),
            enforce_sync: true,
            greet_pause: Duration::ZERO,
        }
    }
}

/// The longest command line read (RFC 5321 §4.5.3.1.4 says 512; SMTPUTF8 addresses and
/// parameters can need more).
const MAX_COMMAND: usize = 2048;
/// The most message data read in one step. A text line is at most 1,000 bytes (RFC 5321), but
/// mail with longer lines exists: those are kept whole, read a step at a time.
const DATA_STEP: usize = 64 << 10;

/// Per-address counts shared by the sessions, keyed by [`client_network`].
#[derive(Debug, Default)]
struct Clients {
    open: HashMap<IpAddr, usize>,
    /// (window start, messages in it).
    rate: HashMap<IpAddr, (Instant, u32)>,
    total: usize,
}

/// A running listener's shared state.
#[derive(Debug)]
pub struct Inbound {
    engine: Engine,
    config: InboundConfig,
    clients: Mutex<Clients>,
    /// One permit per [`MEMORY_UNIT`] of message data held.
    memory: tokio::sync::Semaphore,
}

/// The unit in which sessions take their share of `max_data_in_memory`.
const MEMORY_UNIT: usize = 1 << 20;

/// A slot held by one session; gives it back when dropped.
struct Slot<'a>(&'a Inbound, IpAddr);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut c = self.0.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                c.open.remove(&self.1);
            }
        }
    }
}

impl Inbound {
    /// A listener's state over `engine`.
    pub fn new(engine: Engine, config: InboundConfig) -> Arc<Inbound> {
        let units = (config.max_data_in_memory / MEMORY_UNIT).clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Arc::new(Inbound {
            engine,
            config,
            clients: Mutex::new(Clients::default()),
            memory: tokio::sync::Semaphore::new(units),
        })
    }

    /// A slot for a session from `ip`, counted against its network
    /// ([`client_network`]); `None` past the limits.
    fn admit(&self, ip: IpAddr) -> Option<Slot<'_>> {
        let ip = client_network(ip);
        let mut c = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = c.open.get(&ip).copied().unwrap_or(0);
        if c.total >= self.config.max_connections || open >= self.config.max_connections_per_ip {
            return None;
        }
        c.total += 1;
        c.open.insert(ip, open + 1);
        Some(Slot(self, ip))
    }

    /// Counts one message from `ip`; whether it is within the rate.
    fn take_message(&self, ip: IpAddr) -> bool {
        let ip = client_network(ip);
        let mut c = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        if c.rate.len() > 100_000 {
            // Bounded: forget windows that ended (a flood of addresses cannot grow it).
            c.rate.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let e = c.rate.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= self.config.messages_per_minute_per_ip
    }

    /// Accepts sessions on `listener` until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "inbound accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                let budget = me.config.session_timeout;
                let _ = tokio::time::timeout(budget, me.session(stream, peer)).await;
            });
        }
    }

    /// Runs one session on `stream` from `peer` to its end (what `serve` does for each
    /// connection; tests and the fuzzer drive it over an in-memory stream).
    pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S, peer: SocketAddr) {
        let Some(_slot) = self.admit(peer.ip()) else {
            metrics::counter!("mailroom_inbound_refused_sessions_total").increment(1);
            let _ = stream.write_all(b"421 4.7.0 Too many connections, try again later\r\n").await;
            return;
        };
        metrics::counter!("mailroom_inbound_sessions_total").increment(1);
        let mut s = Session::new(self, peer, false);
        let mut reader = BufReader::new(stream);
        if !self.config.greet_pause.is_zero() {
            // (`fill_buf` is cancel-safe: a timeout leaves nothing half read.)
            match tokio::time::timeout(self.config.greet_pause, reader.fill_buf()).await {
                Err(_) => {}
                Ok(Ok([])) | Ok(Err(_)) => return,
                Ok(Ok(_)) => {
                    metrics::counter!("mailroom_inbound_sync_errors_total").increment(1);
                    tracing::info!(peer = %peer, "inbound client talked before the greeting");
                    let bye = b"554 5.5.0 SMTP synchronization error: input before the greeting\r\n";
                    let _ = write_within(reader.get_mut(), bye, self.config.command_timeout).await;
                    return;
                }
            }
        }
        let greeting = format!("220 {} ESMTP mailroom\r\n", self.config.hostname);
        if !write_within(reader.get_mut(), greeting.as_bytes(), self.config.command_timeout).await {
            return;
        }
        match s.run(&mut reader).await {
            End::StartTls => {
                let Some(tls) = self.config.tls.clone() else { return };
                // Anything the client pipelined after STARTTLS was sent in the clear: it is
                // dropped with the buffer, never read as commands of the encrypted session
                // (CVE-2011-0411).
                let stream = reader.into_inner();
                let Ok(Ok(tls_stream)) = tokio::time::timeout(
                    self.config.command_timeout,
                    tokio_rustls::TlsAcceptor::from(tls).accept(stream),
                )
                .await
                else {
                    return;
                };
                let mut s = Session::new(self, peer, true);
                let mut reader = BufReader::new(tls_stream);
                let _ = s.run(&mut reader).await;
            }
            End::Closed => {}
        }
    }
}

enum End {
    Closed,
    StartTls,
}

/// Whether input already waiting behind `command` was sent out of turn: before `EHLO` (no
/// pipelining granted: `HELO` sessions, or commands before any greeting command) every
/// command waits for its reply (RFC 5321 §4.3.1); after it, the commands RFC 2920 §3.1 says
/// end a group (they change state the client must see: `EHLO`, `HELO`, `DATA`, `VRFY`,
/// `EXPN`, `NOOP`) must still be answered before the client goes on. `QUIT` and `STARTTLS`
/// are not judged: the session ends at the first, and the second drops what follows it.
fn out_of_turn(command: &Command, pipelining: bool) -> bool {
    match command {
        Command::Quit | Command::StartTls => false,
        Command::Ehlo(_) | Command::Helo(_) | Command::Data | Command::Vrfy | Command::Noop => true,
        _ => !pipelining,
    }
}

/// Writes `bytes` and flushes them, giving up after `limit`: whether all went out.
///
/// Why a limit on writes too: a client that sends commands and never reads their replies
/// fills the socket's buffers, and the write then waits for it for ever. Without this, such
/// a session held its connection slot (and its per-address share) until the session budget
/// ran out, half an hour; with it, as long as a client that sends nothing (RFC 5321
/// §4.5.3.2's five minutes, the same rule postfix's `smtpd_timeout` applies to both).
async fn write_within<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8], limit: Duration) -> bool {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())))
}

/// One SMTP session's state.
struct Session<'a> {
    inbound: &'a Inbound,
    peer: SocketAddr,
    tls: bool,
    helo: Option<String>,
    /// The client greeted with `EHLO` and was offered PIPELINING.
    pipelining: bool,
    mail_from: Option<String>,
    rcpts: Vec<(String, Route)>,
    errors: u32,
    out: Vec<u8>,
}

/// How reading one line ended.
enum Line {
    /// A whole line (with its line break, if any) is in the buffer.
    Ok,
    /// The line was longer than allowed: read to its end and dropped.
    TooLong,
    /// The client went away.
    Eof,
}

/// Appends one line (up to and including `\n`) to `out`, at most `max` bytes of it; the rest
/// of a longer line is read and dropped.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, out: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    let mut taken = 0usize;
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if taken == 0 && !too_long { Line::Eof } else { Line::Ok });
        }
        let (n, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = max.saturating_sub(taken);
        if n <= room && !too_long {
            out.extend_from_slice(&buf[..n]);
            taken += n;
        } else {
            too_long = true;
        }
        r.consume(n);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Ok });
        }
    }
}

/// How reading a piece of message data ended.
enum Piece {
    /// At a `\n` (included).
    LineEnd,
    /// After `max` bytes, in the middle of a line.
    Partial,
    /// The client went away.
    Eof,
}

/// Appends to `out` the bytes up to and including the next `\n`, at most `max` of them.
async fn read_piece<R: AsyncBufRead + Unpin>(r: &mut R, out: &mut Vec<u8>, max: usize) -> std::io::Result<Piece> {
    let mut taken = 0usize;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Piece::Eof);
        }
        let window = &buf[..buf.len().min(max - taken)];
        if let Some(i) = memchr::memchr(b'\n', window) {
            out.extend_from_slice(&window[..=i]);
            r.consume(i + 1);
            return Ok(Piece::LineEnd);
        }
        let n = window.len();
        out.extend_from_slice(window);
        r.consume(n);
        taken += n;
        if taken >= max {
            return Ok(Piece::Partial);
        }
    }
}

impl<'a> Session<'a> {
    fn new(inbound: &'a Inbound, peer: SocketAddr, tls: bool) -> Self {
        Session {
            inbound,
            peer,
            tls,
            helo: None,
            pipelining: false,
            mail_from: None,
            rcpts: vec![],
            errors: 0,
            out: Vec::new(),
        }
    }

    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    fn error(&mut self, line: &str) {
        self.errors += 1;
        self.reply(line);
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
    }

    /// Writes what is pending unless the client's next command is already buffered whole
    /// (PIPELINING: one write answers a whole group of commands). Why not "unless anything is
    /// buffered": the next read would then wait for the rest of a part line, and a client may
    /// wait for these replies before it sends that rest (RFC 2920 §3.2: a server sends its
    /// replies before it blocks to read).
    async fn flush<S: AsyncRead + AsyncWrite + Unpin>(&mut self, r: &mut BufReader<S>, force: bool) -> bool {
        if self.out.is_empty() || (!force && memchr::memchr(b'\n', r.buffer()).is_some()) {
            return true;
        }
        let ok = write_within(r.get_mut(), &self.out, self.inbound.config.command_timeout).await;
        self.out.clear();
        ok
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, r: &mut BufReader<S>) -> End {
        let config = &self.inbound.config;
        let mut line = Vec::with_capacity(256);
        loop {
            if !self.flush(r, false).await {
                return End::Closed;
            }
            if self.errors >= config.max_errors {
                self.reply("421 4.7.0 Too many errors, closing");
                self.flush(r, true).await;
                return End::Closed;
            }
            line.clear();
            let read = tokio::time::timeout(config.command_timeout, read_line(r, &mut line, MAX_COMMAND)).await;
            match read {
                Err(_) => {
                    self.reply("421 4.4.2 Timeout waiting for a command, closing");
                    self.flush(r, true).await;
                    return End::Closed;
                }
                Ok(Err(_)) | Ok(Ok(Line::Eof)) => return End::Closed,
                Ok(Ok(Line::TooLong)) => {
                    self.error("500 5.5.2 Line too long");
                    continue;
                }
                Ok(Ok(Line::Ok)) => {}
            }
            let command = parse_command(&line);
            // Checked on what is already read: a client that wrote ahead in the same burst,
            // which is how the software this stops writes. (Bytes still in flight are not
            // waited for: that would slow every client.)
            if config.enforce_sync && !r.buffer().is_empty() && out_of_turn(&command, self.pipelining) {
                metrics::counter!("mailroom_inbound_sync_errors_total").increment(1);
                tracing::info!(peer = %self.peer, command = ?command, "inbound client sent commands out of turn");
                self.reply("554 5.5.0 SMTP synchronization error: commands sent before the reply they must wait for");
                self.flush(r, true).await;
                return End::Closed;
            }
            match command {
                Command::Ehlo(name) => {
                    self.reset();
                    self.helo = Some(name);
                    self.pipelining = true;
                    let mut lines = vec![
                        format!("250-{} greets {}", config.hostname, self.peer.ip()),
                        "250-PIPELINING".into(),
                        format!("250-SIZE {}", config.max_message_size),
                        "250-8BITMIME".into(),
                        "250-SMTPUTF8".into(),
                        "250-ENHANCEDSTATUSCODES".into(),
                    ];
                    if config.tls.is_some() && !self.tls {
                        lines.push("250-STARTTLS".into());
                    }
                    lines.push("250 HELP".into());
                    for l in lines {
                        self.reply(&l);
                    }
                }
                Command::Helo(name) => {
                    self.reset();
                    self.helo = Some(name);
                    self.pipelining = false;
                    let l = format!("250 {}", config.hostname);
                    self.reply(&l);
                }
                Command::StartTls => {
                    if config.tls.is_none() || self.tls {
                        self.error("502 5.5.1 STARTTLS not available");
                    } else {
                        self.reply("220 2.0.0 Ready to start TLS");
                        self.flush(r, true).await;
                        return End::StartTls;
                    }
                }
                Command::Mail { from, size } => {
                    if self.helo.is_none() {
                        self.error("503 5.5.1 Say EHLO first");
                    } else if self.mail_from.is_some() {
                        self.error("503 5.5.1 Sender already given");
                    } else if size.is_some_and(|s| s > config.max_message_size as u64) {
                        self.error("552 5.3.4 Message size exceeds the fixed limit");
                    } else if !self.inbound.take_message(self.peer.ip()) {
                        self.error("450 4.7.1 Too many messages from your address, try again later");
                    } else {
                        self.mail_from = Some(from);
                        self.reply("250 2.1.0 Sender OK");
                    }
                }
                Command::Rcpt(to) => {
                    if self.mail_from.is_none() {
                        self.error("503 5.5.1 Need MAIL before RCPT");
                    } else if self.rcpts.len() >= config.max_recipients {
                        // Not an error of the client: the rest go in another transaction.
                        self.reply("452 4.5.3 Too many recipients");
                    } else {
                        match self.inbound.engine.route(&to).await {
                            Ok(route) => {
                                self.rcpts.push((to, route));
                                self.reply("250 2.1.5 Recipient OK");
                            }
                            Err(refusal) => {
                                let (code, status, text) = refusal.reply();
                                metrics::counter!("mailroom_inbound_refused_recipients_total").increment(1);
                                self.error(&format!("{code} {status} {text}"));
                            }
                        }
                    }
                }
                Command::Data => {
                    if self.mail_from.is_none() {
                        self.error("503 5.5.1 Need MAIL before DATA");
                        continue;
                    }
                    if self.rcpts.is_empty() {
                        self.error("554 5.5.1 No valid recipients");
                        continue;
                    }
                    self.reply("354 End data with <CR><LF>.<CR><LF>");
                    if !self.flush(r, true).await {
                        return End::Closed;
                    }
                    match self.data(r).await {
                        Some(reply) => self.reply(&reply),
                        None => return End::Closed,
                    }
                    self.reset();
                }
                Command::Rset => {
                    self.reset();
                    self.reply("250 2.0.0 OK");
                }
                Command::Noop => self.reply("250 2.0.0 OK"),
                Command::Vrfy => self.reply("252 2.5.2 Cannot verify the user, but will accept the message"),
                Command::Help => self.reply("214 2.0.0 See RFC 5321"),
                Command::Quit => {
                    self.reply("221 2.0.0 Bye");
                    self.flush(r, true).await;
                    return End::Closed;
                }
                Command::Auth => self.error("502 5.5.1 No authentication here: this server only receives"),
                Command::Bdat => self.error("502 5.5.1 CHUNKING not offered"),
                Command::Syntax(what) => self.error(&format!("501 5.5.4 Syntax error: {what}")),
                Command::Parameter(what) => self.error(&format!("555 5.5.4 {what}")),
                Command::Unknown => self.error("500 5.5.2 Command not recognized"),
            }
        }
    }

    /// Reads the message after `354` and hands it over; the reply to give, or `None` when the
    /// session must end.
    async fn data<S: AsyncRead + AsyncWrite + Unpin>(&mut self, r: &mut BufReader<S>) -> Option<String> {
        let config = &self.inbound.config;
        let arrival = Arrival {
            mail_from: self.mail_from.clone().unwrap_or_default(),
            rcpt_to: self.rcpts.iter().map(|(t, _)| t.clone()).collect(),
            client_ip: self.peer.ip().to_string(),
            helo: self.helo.clone().unwrap_or_default(),
            tls: self.tls,
        };
        let session_id = format!("{:016x}", rand::random::<u64>());
        let now = self.inbound.engine.clock().now();
        // The message is built in one buffer, our `Received:` line first, and moved to the
        // store: it is never held twice.
        let mut msg = received_line(&arrival, &config.hostname, &session_id, now).into_bytes();
        let head = msg.len();
        let limit = head + config.max_message_size;
        let mut too_big = false;
        // Whether the last line ended in CRLF, whether the next piece starts a line, and
        // whether the last piece ended in CR (a CRLF split between two pieces).
        let mut previous_crlf = true;
        let mut line_start = true;
        let mut ended_in_cr = false;
        let mut scratch = Vec::new();
        // The share of the memory budget this message holds; given back when it is dropped.
        let mut held: Option<tokio::sync::SemaphorePermit<'_>> = None;
        let mut held_units = 0usize;
        loop {
            if !too_big && msg.len() >= held_units * MEMORY_UNIT {
                let more = tokio::time::timeout(config.data_timeout, self.inbound.memory.acquire()).await;
                match more {
                    Ok(Ok(p)) => {
                        match held.as_mut() {
                            Some(h) => h.merge(p),
                            None => held = Some(p),
                        }
                        held_units += 1;
                    }
                    _ => {
                        metrics::counter!("mailroom_inbound_memory_refusals_total").increment(1);
                        self.out.clear();
                        self.reply("451 4.3.1 Insufficient system resources, try again later");
                        self.flush(r, true).await;
                        return None;
                    }
                }
            }
            let start = msg.len();
            let target = if too_big { &mut scratch } else { &mut msg };
            if too_big {
                target.clear();
            }
            let at = target.len();
            let end = match tokio::time::timeout(config.data_timeout, read_piece(r, target, DATA_STEP)).await {
                Err(_) => {
                    self.out.clear();
                    self.reply("421 4.4.2 Timeout waiting for data, closing");
                    self.flush(r, true).await;
                    return None;
                }
                Ok(Err(_)) | Ok(Ok(Piece::Eof)) => return None,
                Ok(Ok(end)) => end,
            };
            let piece = &target[at..];
            let whole_line = line_start && matches!(end, Piece::LineEnd);
            // The end of data is <CRLF>.<CRLF> and nothing else: a `.` line after a bare LF,
            // or ending in a bare LF, does not end it (what SMTP smuggling relies on).
            if whole_line && piece == b".\r\n" && previous_crlf {
                target.truncate(at);
                break;
            }
            let dotted = line_start && piece.first() == Some(&b'.');
            if matches!(end, Piece::LineEnd) {
                previous_crlf = piece.ends_with(b"\r\n") || (piece == b"\n" && ended_in_cr);
            }
            ended_in_cr = piece.last() == Some(&b'\r');
            line_start = matches!(end, Piece::LineEnd);
            if dotted {
                // Dot-stuffing: a leading dot was doubled by the client.
                target.remove(at);
            }
            if !too_big && msg.len() > limit {
                too_big = true;
                msg.truncate(start);
                msg.shrink_to(head);
            }
        }
        if too_big {
            return Some("552 5.3.4 Message size exceeds the fixed limit".into());
        }
        let rcpts = std::mem::take(&mut self.rcpts);
        let receiving = rcpts.iter().any(|(_, r)| matches!(r, Route::Receive(_)));
        let authentication = match (&config.auth, receiving) {
            (Some(auth), true) => {
                let check = auth.authenticate(&msg[head..], self.peer.ip(), &arrival.helo, &arrival.mail_from);
                tokio::time::timeout(config.auth_timeout, check).await.ok()
            }
            _ => None,
        };
        match self.inbound.engine.receive(arrival, msg, &rcpts, authentication).await {
            Ok(report) => {
                metrics::counter!("mailroom_inbound_messages_total").increment(1);
                if report.bounce.is_some() {
                    metrics::counter!("mailroom_inbound_bounces_total").increment(1);
                }
                Some(format!("250 2.0.0 OK: queued as {session_id}"))
            }
            Err(e) => {
                tracing::warn!(error = %e, "inbound message not kept");
                Some("451 4.3.0 Temporary failure, try again later".into())
            }
        }
    }
}
