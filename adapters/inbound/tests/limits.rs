//! The listener's bounds, driven over loopback against an engine on the in-memory store: the
//! memory all sessions' message data may take together.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use mailroom_core::Engine;
use mailroom_core::memory::MemoryStorage;
use mailroom_inbound::{Inbound, InboundConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

async fn start(config: InboundConfig) -> u16 {
    let engine = Engine::builder(Arc::new(MemoryStorage::new())).bounce_domain("bounces.test").build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(Inbound::new(engine, config).serve(listener, std::future::pending()));
    port
}

/// Reads one reply (all its lines); "" when the server closed the connection.
async fn reply_of(r: &mut BufReader<TcpStream>) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await.expect("a reply in time");
        if n.unwrap_or(0) == 0 {
            return all;
        }
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

/// Opens a session and reads its greeting.
async fn connect(port: u16) -> BufReader<TcpStream> {
    let mut r = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    assert!(reply_of(&mut r).await.starts_with("220 "));
    r
}

/// Sends one message of `size` bytes of body; the reply to its end of data (or the reply that
/// ended the session).
async fn send(port: u16, size: usize) -> String {
    let mut r = connect(port).await;
    for cmd in ["EHLO t.test\r\n", "MAIL FROM:<>\r\n", "RCPT TO:<bounces+x@bounces.test>\r\n", "DATA\r\n"] {
        r.get_mut().write_all(cmd.as_bytes()).await.unwrap();
        reply_of(&mut r).await;
    }
    let body = format!("{}\r\n", "x".repeat(998));
    let mut sent = 0;
    while sent < size {
        if r.get_mut().write_all(body.as_bytes()).await.is_err() {
            break;
        }
        sent += body.len();
    }
    let _ = r.get_mut().write_all(b".\r\n").await;
    reply_of(&mut r).await
}

/// Replies to pipelined commands are held only while the next command is buffered whole: a
/// part of a line after them (a client still writing, or one that waits for the replies
/// before it goes on) does not hold them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_not_held_behind_a_part_line() {
    let port = start(InboundConfig::default()).await;
    let mut r = connect(port).await;
    let mut line = String::new();
    r.get_mut().write_all(b"EHLO t.test\r\n").await.unwrap();
    reply_of(&mut r).await;
    // A group and the start of the next command, in one write.
    r.get_mut().write_all(b"MAIL FROM:<>\r\nRSET\r\nNO").await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..2 {
        line.clear();
        tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
            .await
            .expect("the replies to the whole commands come without the rest of the line")
            .unwrap();
        replies.push(line.clone());
    }
    assert!(replies[0].starts_with("250") && replies[1].starts_with("250"), "{replies:?}");
    r.get_mut().write_all(b"OP\r\n").await.unwrap();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("250"), "the rest of the line completes the command: {line}");
}

/// A parameter the server does not offer is answered 555 (RFC 5321 §4.1.1.11), not as a
/// syntax error, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_not_offered_are_answered_555() {
    let port = start(InboundConfig::default()).await;
    let mut r = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let mut ask = async |cmd: &str| {
        r.get_mut().write_all(cmd.as_bytes()).await.unwrap();
        line.clear();
        r.read_line(&mut line).await.unwrap();
        line.clone()
    };
    assert!(ask("HELO t.test\r\n").await.starts_with("250"));
    let body = ask("MAIL FROM:<a@t.test> BODY=BINARYMIME\r\n").await;
    assert!(body.starts_with("555 5.5.4 "), "{body}");
    assert!(ask("MAIL FROM:<>\r\n").await.starts_with("250"));
    let notify = ask("RCPT TO:<bounces+x@bounces.test> NOTIFY=NEVER\r\n").await;
    assert!(notify.starts_with("555 5.5.4 "), "{notify}");
    assert!(ask("RSET\r\n").await.starts_with("250"));
    let bad = ask("MAIL FROM:<a@t.test> SIZE=big\r\n").await;
    assert!(bad.starts_with("501 5.5.4 "), "a malformed value stays a syntax error: {bad}");
}

/// A client that sends commands and never reads the replies fills the socket's buffers; the
/// server then gives up on writing to it within the command timeout and frees its slot (here
/// the one slot its address may hold), instead of waiting out the session budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_let_go() {
    let port = start(InboundConfig {
        max_connections_per_ip: 1,
        command_timeout: Duration::from_secs(1),
        session_timeout: Duration::from_secs(3600),
        ..InboundConfig::default()
    })
    .await;
    let mut deaf = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // NOOPs until the server stops taking them (its writes wait on us, so it reads no more),
    // or the connection is closed; never a byte read.
    let noops = "NOOP\r\n".repeat(10_000);
    let mut sent = 0usize;
    while sent < 256 << 20 {
        match tokio::time::timeout(Duration::from_secs(3), deaf.write_all(noops.as_bytes())).await {
            Ok(Ok(())) => sent += noops.len(),
            _ => break,
        }
    }
    assert!(sent < 256 << 20, "the server kept reading commands whose replies were never read");
    // Its slot comes free once the server gives up writing (1 s), while this client still
    // holds the connection open and unread.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let greeting = loop {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        if line.starts_with("220") || std::time::Instant::now() > deadline {
            break line;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(greeting.starts_with("220"), "the deaf client's slot was never freed: {greeting}");
    drop(deaf);
}

/// The per-address session limit counts an IPv6 client by its /64: a client stepping through
/// the addresses of its network is one client. (Sessions over in-memory streams, as the
/// listener runs them for each connection, with the peer addresses a socket would give.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_limited_by_their_64() {
    let engine = Engine::builder(Arc::new(MemoryStorage::new())).bounce_domain("bounces.test").build();
    let inbound = Inbound::new(engine, InboundConfig { max_connections_per_ip: 1, ..InboundConfig::default() });
    let greeting = |peer: &str| {
        let (client, server) = tokio::io::duplex(4096);
        let peer: std::net::SocketAddr = peer.parse().unwrap();
        let inbound = Arc::clone(&inbound);
        tokio::spawn(async move { inbound.session(server, peer).await });
        async move {
            let mut r = BufReader::new(client);
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            (line, r)
        }
    };
    let (first, _held) = greeting("[2001:db8:1:2::1]:40000").await;
    assert!(first.starts_with("220"), "{first}");
    let (same_net, _) = greeting("[2001:db8:1:2:ffff::9]:40001").await;
    assert!(same_net.starts_with("421"), "another address of the same /64 is the same client: {same_net}");
    let (other_net, _) = greeting("[2001:db8:1:3::1]:40002").await;
    assert!(other_net.starts_with("220"), "the next /64 is another client: {other_net}");
    let (v4, _v4_held) = greeting("192.0.2.7:40003").await;
    assert!(v4.starts_with("220"), "{v4}");
    let (mapped, _) = greeting("[::ffff:192.0.2.7]:40004").await;
    assert!(mapped.starts_with("421"), "an IPv4-mapped address is its IPv4 address: {mapped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_data_in_memory_is_bounded() {
    let port = start(InboundConfig {
        max_data_in_memory: 2 << 20,
        data_timeout: Duration::from_millis(500),
        ..InboundConfig::default()
    })
    .await;
    assert!(send(port, 1 << 20).await.starts_with("250"), "a message within the budget");
    let over = send(port, 3 << 20).await;
    assert!(over.starts_with("451 4.3.1"), "a message past the whole budget waits, then is refused: {over}");
    assert!(send(port, 1 << 20).await.starts_with("250"), "the budget comes back when a session ends");
}

/// A line longer than the read step (and than RFC 5321's 1,000 bytes) is kept whole; dot
/// stuffing is undone only at the start of a line; a CRLF split across read steps still ends
/// a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_kept_whole() {
    use mailroom_core::domains::{DkimAlgorithm, Domain, DomainConfig, RecordPurpose, RecordStatus, generate_dkim_key};
    use mailroom_core::ports::DomainStore;
    let store = Arc::new(MemoryStorage::new());
    let engine = Engine::builder(store.clone()).build();
    let config = DomainConfig::default().receiving_mx("mx.test");
    let key = generate_dkim_key(DkimAlgorithm::Ed25519).unwrap();
    let now = engine.clock().now();
    let mut d = Domain::new("1".into(), "in.test".into(), key, &config, now);
    d.receiving = true;
    d.refresh(&config);
    for r in &mut d.records {
        if r.record == RecordPurpose::Receiving {
            r.status = RecordStatus::Verified;
        }
    }
    assert!(store.domain_put(&Default::default(), d, None).await.unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(Inbound::new(engine.clone(), InboundConfig::default()).serve(listener, std::future::pending()));

    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut r = BufReader::new(s);
    for cmd in ["", "EHLO t.test\r\n", "MAIL FROM:<a@b.test>\r\n", "RCPT TO:<x@in.test>\r\n", "DATA\r\n"] {
        r.get_mut().write_all(cmd.as_bytes()).await.unwrap();
        reply_of(&mut r).await;
    }
    let mut line = String::new();
    // 65,535 bytes then CRLF: the CR is the last byte of the first read step.
    let long = "y".repeat(200_000);
    let split = format!("{}\r\n", "z".repeat((64 << 10) - 1));
    let body = format!("Subject: long\r\n\r\n{long}\r\n..dot\r\n{split}.\r\n");
    r.get_mut().write_all(body.as_bytes()).await.unwrap();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("250"), "{line}");
    let page = engine.received_list(mailroom_core::email::PageRequest::new(None, None, None).unwrap()).await.unwrap();
    let (_, raw) = engine.received_with_raw(page.items[0].id).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(body, format!("{long}\r\n.dot\r\n{split}"));
}

/// Messages per minute from one client address: past the rate, `MAIL` is deferred with `450`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_per_client_address_are_rate_limited() {
    let port = start(InboundConfig { messages_per_minute_per_ip: 2, ..InboundConfig::default() }).await;
    assert!(send(port, 10).await.starts_with("250"));
    assert!(send(port, 10).await.starts_with("250"));
    let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    r.get_mut().write_all(b"HELO t.test\r\n").await.unwrap();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    r.get_mut().write_all(b"MAIL FROM:<>\r\n").await.unwrap();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("450 4.7.1"), "the third message in a minute: {line}");
}

/// RFC 2920: pipelining only after `EHLO`, and never past a command that ends a group (`EHLO`,
/// `DATA`, `NOOP`…). A client that writes ahead there is closed with `554 5.5.0` before the
/// command is answered; one that pipelines where it may (MAIL, RCPT, DATA; the next command
/// after the message's end) is served as before; with `enforce_sync` off, the first is too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_out_of_turn_end_the_session() {
    let port = start(InboundConfig::default()).await;
    let closed = async |r: &mut BufReader<TcpStream>| {
        let rest = reply_of(r).await;
        assert_eq!(rest, "", "the session is closed after the refusal");
    };

    // Commands behind EHLO, in the same write: refused before EHLO is answered.
    let mut r = connect(port).await;
    r.get_mut().write_all(b"EHLO t.test\r\nMAIL FROM:<>\r\n").await.unwrap();
    let refusal = reply_of(&mut r).await;
    assert!(refusal.starts_with("554 5.5.0 SMTP synchronization error"), "{refusal}");
    closed(&mut r).await;

    // A HELO session has no pipelining: MAIL and RCPT in one write are out of turn.
    let mut r = connect(port).await;
    r.get_mut().write_all(b"HELO t.test\r\n").await.unwrap();
    assert!(reply_of(&mut r).await.starts_with("250 "));
    r.get_mut().write_all(b"MAIL FROM:<>\r\nRCPT TO:<bounces+x@bounces.test>\r\n").await.unwrap();
    assert!(reply_of(&mut r).await.starts_with("554 5.5.0 "));
    closed(&mut r).await;

    // The message's content sent behind DATA, without waiting for 354.
    let mut r = connect(port).await;
    r.get_mut().write_all(b"EHLO t.test\r\n").await.unwrap();
    assert!(reply_of(&mut r).await.contains("250-PIPELINING"));
    r.get_mut()
        .write_all(b"MAIL FROM:<>\r\nRCPT TO:<bounces+x@bounces.test>\r\nDATA\r\nSubject: hi\r\n")
        .await
        .unwrap();
    assert!(reply_of(&mut r).await.starts_with("250 "));
    assert!(reply_of(&mut r).await.starts_with("250 "));
    assert!(reply_of(&mut r).await.starts_with("554 5.5.0 "), "DATA is answered before the content comes");
    closed(&mut r).await;

    // Pipelining as RFC 2920 has it: MAIL, RCPT and DATA in one write; the message's end
    // and QUIT in another.
    let mut r = connect(port).await;
    r.get_mut().write_all(b"EHLO t.test\r\n").await.unwrap();
    reply_of(&mut r).await;
    r.get_mut().write_all(b"MAIL FROM:<>\r\nRCPT TO:<bounces+x@bounces.test>\r\nDATA\r\n").await.unwrap();
    assert!(reply_of(&mut r).await.starts_with("250 "));
    assert!(reply_of(&mut r).await.starts_with("250 "));
    assert!(reply_of(&mut r).await.starts_with("354 "));
    r.get_mut().write_all(b"Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n").await.unwrap();
    let end = reply_of(&mut r).await;
    assert!(end.starts_with("250 ") || end.starts_with("550 ") || end.starts_with("554 5.6"), "{end}");
    assert!(reply_of(&mut r).await.starts_with("221 "));

    // With the check off, the first client is served.
    let port = start(InboundConfig { enforce_sync: false, ..InboundConfig::default() }).await;
    let mut r = connect(port).await;
    r.get_mut().write_all(b"EHLO t.test\r\nMAIL FROM:<>\r\n").await.unwrap();
    assert!(reply_of(&mut r).await.contains("250-PIPELINING"));
    assert!(reply_of(&mut r).await.starts_with("250 2.1.0"));
}

/// With a greeting pause, a client that talks before the greeting is closed with `554 5.5.0`
/// and no greeting; one that waits for it is greeted once the pause is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_talks_before_the_greeting_is_refused() {
    let pause = Duration::from_millis(400);
    let port = start(InboundConfig { greet_pause: pause, ..InboundConfig::default() }).await;
    let mut early = BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    early.get_mut().write_all(b"EHLO t.test\r\n").await.unwrap();
    let refusal = reply_of(&mut early).await;
    assert!(refusal.starts_with("554 5.5.0 SMTP synchronization error: input before the greeting"), "{refusal}");
    assert_eq!(reply_of(&mut early).await, "");

    let started = std::time::Instant::now();
    let mut polite = connect(port).await;
    assert!(started.elapsed() >= pause, "greeted after the pause, not before");
    polite.get_mut().write_all(b"EHLO t.test\r\n").await.unwrap();
    assert!(reply_of(&mut polite).await.contains("250-PIPELINING"));
}
