//! Mail in through `mailroom serve --inbound`, with real clients: a receiving domain added and
//! verified over the API against a dnsmasq publishing its MX; swaks sending a message with an
//! attachment (in the clear and over STARTTLS) that the receiving API then shows, with its raw
//! bytes and attachment downloadable without a key; postfix's `smtp-source` pipelining many
//! messages; relay attempts, unverified domains, oversize messages, too many recipients and
//! an SMTP-smuggling attempt answered as they must be; and the bounce loop closed: a loopback
//! postfix returns a genuine DSN to the listener and the email ends `bounced` on its own.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;
#[path = "../adapters/dns/tests/support/dnsmasq.rs"]
mod dnsmasq;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "re_inbound_test_key";

struct Server {
    child: Child,
    port: u16,
    smtp: u16,
    dns_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(db: &Path, port: u16, smtp: u16, dns_port: u16, extra: &[&str], env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailroom"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-key", KEY, "--rate-limit", "0", "--db"])
        .arg(db)
        .args(["--inbound", &format!("127.0.0.1:{smtp}"), "--dns", &format!("127.0.0.1:{dns_port}")])
        .args(extra)
        .env("MAILROOM_DOMAINS_HOST", "mx.mailroom.test")
        .env("MAILROOM_INBOUND_HOSTNAME", "mx.mailroom.test")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    common::peers::wait_listening(port, &mut child, "mailroom serve");
    common::peers::wait_listening(smtp, &mut child, "mailroom inbound");
    child
}

fn serve(extra: &[&str], env: &[(&str, String)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = common::peers::free_port();
    let smtp = common::peers::free_port();
    let dns_port = dnsmasq::free_port();
    let child = spawn(&dir.path().join("in.redb"), port, smtp, dns_port, extra, env);
    Server { child, port, smtp, dns_port, _dir: dir }
}

impl Server {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r =
            reqwest::Client::new().request(method, format!("http://127.0.0.1:{}{path}", self.port)).bearer_auth(KEY);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    /// Adds `in.test` with receiving on; publishes its records in dnsmasq (the receiving MX
    /// with `mx_priority`, and another host's MX at `other`) and asks for verification.
    async fn receiving_domain(&self, mx_priority: u16, other: Option<u16>) -> (String, dnsmasq::Dnsmasq) {
        let (status, d) = self
            .call(
                reqwest::Method::POST,
                "/domains",
                Some(json!({"name": "in.test", "capabilities": {"receiving": "enabled"}})),
            )
            .await;
        assert_eq!(status, 201, "{d}");
        let mut options = vec!["--host-record=mx.mailroom.test,127.0.0.1".to_string()];
        let records = d["records"].as_array().unwrap();
        assert!(
            records.iter().any(|r| r["record"] == "Receiving" && r["type"] == "MX" && r["name"] == "@"),
            "receiving adds the MX record: {d}"
        );
        for r in records {
            let name = r["name"].as_str().unwrap();
            let fqdn = if name == "@" { "in.test".to_string() } else { format!("{name}.in.test") };
            let (rtype, value) = (r["type"].as_str().unwrap(), r["value"].as_str().unwrap());
            let value = match (rtype, r["record"].as_str()) {
                ("MX", Some("Receiving")) => format!("{mx_priority} {value}"),
                ("MX", _) => format!("{} {value}", r["priority"]),
                _ => value.to_string(),
            };
            options.push(dnsmasq::record(&fqdn, rtype, &value));
        }
        if let Some(p) = other {
            options.push(format!("--mx-host=in.test,mx.elsewhere.test,{p}"));
        }
        // The sender's own policy: SPF allows the loopback client, DMARC asks for alignment.
        options.push(dnsmasq::record("sender.test", "TXT", "v=spf1 ip4:127.0.0.1 -all"));
        options.push(dnsmasq::record("_dmarc.sender.test", "TXT", "v=DMARC1; p=reject"));
        options.push(dnsmasq::record("forged.test", "TXT", "v=spf1 ip4:192.0.2.1 -all"));
        options.push(dnsmasq::record("_dmarc.forged.test", "TXT", "v=DMARC1; p=reject"));
        let dns = dnsmasq::start_at(self.dns_port, &options);
        let id = d["id"].as_str().unwrap().to_string();
        self.call(reqwest::Method::POST, &format!("/domains/{id}/verify"), None).await;
        (id, dns)
    }

    async fn wait_status(&self, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, got) = self.call(reqwest::Method::GET, &format!("/domains/{id}"), None).await;
            if got["status"] == want {
                return got;
            }
            assert!(Instant::now() < deadline, "not {want}: {got}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn received(&self) -> Vec<Value> {
        let (status, list) = self.call(reqwest::Method::GET, "/emails/receiving?limit=100", None).await;
        assert_eq!(status, 200, "{list}");
        list["data"].as_array().unwrap().clone()
    }
}

/// A plain SMTP conversation: each command's whole reply.
struct Smtp {
    reader: BufReader<TcpStream>,
}

impl Smtp {
    fn connect(port: u16) -> (Smtp, String) {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Smtp { reader: BufReader::new(s) };
        let greeting = c.reply();
        (c, greeting)
    }

    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn send(&mut self, raw: &[u8]) {
        self.reader.get_mut().write_all(raw).unwrap();
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }
}

/// swaks sending one message from `from` to `to` with `subject` through the listener; its
/// transcript (the last reply must be the `250`).
fn swaks_send(server: &Server, from: &str, to: &str, subject: &str, extra: &[&str]) -> String {
    let at = format!("127.0.0.1:{}", server.smtp);
    let subject = format!("Subject: {subject}");
    let mut args = vec!["--server", &at, "--from", from, "--to", to, "--header", &subject];
    args.extend_from_slice(extra);
    let out = swaks(&args);
    assert!(out.contains("250 2.0.0 OK"), "{out}");
    out
}

fn swaks(args: &[&str]) -> String {
    let out = Command::new("swaks").args(args).output().expect("swaks is installed by ./scripts/test.sh");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "swaks {args:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiving_domain_receives_and_nothing_else_is_relayed() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = common::peers::self_signed(certs.path());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = serve(
        &[],
        &[
            ("MAILROOM_INBOUND_TLS_CERT", cert),
            ("MAILROOM_INBOUND_TLS_KEY", key),
            ("MAILROOM_INBOUND_MAX_MESSAGE_SIZE", "200000".into()),
            ("MAILROOM_INBOUND_MAX_RECIPIENTS", "20".into()),
        ],
    );

    // Before the domain exists, and for any other domain: never a relay.
    let (mut c, greeting) = Smtp::connect(server.smtp);
    assert!(greeting.starts_with("220 mx.mailroom.test"), "{greeting}");
    let ehlo = c.cmd("EHLO client.test");
    for ext in ["PIPELINING", "SIZE 200000", "8BITMIME", "SMTPUTF8", "STARTTLS"] {
        assert!(ehlo.contains(ext), "EHLO offers {ext}: {ehlo}");
    }
    assert!(c.cmd("MAIL FROM:<a@sender.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<victim@elsewhere.test>").starts_with("550 5.7.1"), "a relay attempt is refused");
    assert!(c.cmd("RCPT TO:<x@in.test>").starts_with("550 5.7.1"), "no such receiving domain yet");
    assert!(c.cmd("RCPT TO:<x@[127.0.0.1]>").starts_with("550 5.7.1"), "nor an address literal");
    assert!(c.cmd("DATA").starts_with("554 5.5.1"), "no recipient, no data");
    assert!(c.cmd("QUIT").starts_with("221"));

    // Another host's MX is preferred: not verified, mail refused.
    let (id, dns) = server.receiving_domain(20, Some(10)).await;
    let d = server.wait_status(&id, "partially_verified").await;
    let rx = d["records"].as_array().unwrap().iter().find(|r| r["record"] == "Receiving").unwrap().clone();
    assert_ne!(rx["status"], "verified", "{d}");
    tokio::time::sleep(Duration::from_secs(11)).await; // the route cache's lifetime
    let (mut c, _) = Smtp::connect(server.smtp);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@sender.test>");
    assert!(c.cmd("RCPT TO:<x@in.test>").starts_with("550 5.7.1 Receiving for this domain is not verified"));
    drop(c);
    drop(dns);

    // Published as the lowest MX: verified, and every address at it is received (catch-all).
    let (status, _) = server.call(reqwest::Method::DELETE, &format!("/domains/{id}"), None).await;
    assert_eq!(status, 200);
    let (id, _dns) = server.receiving_domain(10, Some(20)).await;
    server.wait_status(&id, "verified").await;
    tokio::time::sleep(Duration::from_secs(11)).await;

    let attachment = certs.path().join("report.pdf");
    let pdf: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&attachment, &pdf).unwrap();
    let attach = format!("@{}", attachment.display());
    let extra = ["--body", "See the attachment.", "--attach", &attach];
    swaks_send(&server, "ann@sender.test", "anyone@in.test", "Quarterly report", &extra);
    swaks_send(&server, "ann@sender.test", "second@in.test", "Over TLS", &["--tls"]);
    // Kept, with its verdict.
    swaks_send(&server, "ceo@forged.test", "third@in.test", "Forged", &[]);

    let list = server.received().await;
    assert_eq!(list.len(), 3, "{list:?}");
    let (_, forged) = server
        .call(reqwest::Method::GET, &format!("/emails/receiving/{}", list[0]["id"].as_str().unwrap()), None)
        .await;
    assert_eq!(forged["subject"], "Forged");
    assert_eq!(
        forged["authentication"],
        json!({"spf": "fail", "dkim": "gray", "dmarc": "fail"}),
        "SPF fails for a client the domain does not name: {forged}"
    );
    let list = &list[1..];
    let tls_mail = &list[0];
    assert_eq!(tls_mail["subject"], "Over TLS");
    assert_eq!(tls_mail["received_for"], json!(["second@in.test"]));
    let mail = &list[1];
    assert_eq!((mail["from"].as_str(), mail["subject"].as_str()), (Some("ann@sender.test"), Some("Quarterly report")));
    assert_eq!(mail["to"], json!(["anyone@in.test"]));
    let created = mail["created_at"].as_str().unwrap();
    assert!(created.len() == 24 && created.ends_with('Z') && created.contains('T'), "ISO 8601: {created}");
    assert_eq!(mail["attachments"][0]["filename"], "report.pdf");
    assert_eq!(mail["attachments"][0]["size"], 50_000);

    let mid = mail["id"].as_str().unwrap();
    let (status, full) = server.call(reqwest::Method::GET, &format!("/emails/receiving/{mid}"), None).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["object"], "email");
    assert!(full["text"].as_str().unwrap().contains("See the attachment."), "{full}");
    assert_eq!(full["headers"]["subject"], "Quarterly report");
    assert_eq!(
        full["authentication"],
        json!({"spf": "pass", "dkim": "gray", "dmarc": "pass"}),
        "SPF passes for the loopback client and aligns with From (no DKIM signature): {full}"
    );
    assert!(full["headers"]["received"].as_str().unwrap().contains("by mx.mailroom.test"), "{full}");
    // The raw message and the attachment download without a key (the Node SDK's forward()).
    let raw_url = full["raw"]["download_url"].as_str().unwrap();
    let raw = reqwest::get(raw_url).await.unwrap();
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    let raw = raw.bytes().await.unwrap();
    assert!(raw.starts_with(b"Received: from client.test") || raw.starts_with(b"Received: from "), "our line on top");
    let a_url = full["attachments"][0]["download_url"].as_str().unwrap();
    let got = reqwest::get(a_url).await.unwrap();
    // A stranger's file on this server's origin: sandboxed should a browser show it.
    assert_eq!(got.headers()["content-security-policy"], "sandbox; default-src 'none'");
    let got = got.bytes().await.unwrap();
    assert_eq!(got.as_ref(), pdf.as_slice(), "the attachment comes back byte for byte");
    // A tampered link is refused.
    let tampered = format!("{}x", &raw_url[..raw_url.len() - 1]);
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 403);
    let (_, tls_full) = server
        .call(reqwest::Method::GET, &format!("/emails/receiving/{}", tls_mail["id"].as_str().unwrap()), None)
        .await;
    assert!(tls_full["headers"]["received"].as_str().unwrap().contains("with ESMTPS"), "{tls_full}");
    let (status, one) = server
        .call(
            reqwest::Method::GET,
            &format!("/emails/receiving/{mid}/attachments/{}", mail["attachments"][0]["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!((status, one["object"].as_str()), (200, Some("attachment")), "{one}");
    // The list pages as every list does: past its one attachment nothing is left, and a
    // cursor that names no attachment is refused under its name.
    let first = mail["attachments"][0]["id"].as_str().unwrap();
    let (status, rest) =
        server.call(reqwest::Method::GET, &format!("/emails/receiving/{mid}/attachments?after={first}"), None).await;
    assert_eq!(
        (status, rest["data"].as_array().map(Vec::len), rest["has_more"].as_bool()),
        (200, Some(0), Some(false))
    );
    let (status, bad) =
        server.call(reqwest::Method::GET, &format!("/emails/receiving/{mid}/attachments?after=nope"), None).await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("`after`"), "{bad}");

    // Limits: a declared size over the limit, data over it, too many recipients, and a bare
    // LF dot line that must not end the data (SMTP smuggling).
    let (mut c, _) = Smtp::connect(server.smtp);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<a@sender.test> SIZE=300000").starts_with("552 5.3.4"));
    // RFC 1870's 20 digits, more than a u64 holds: over the limit too, not a syntax error.
    assert!(c.cmd("MAIL FROM:<a@sender.test> SIZE=99999999999999999999").starts_with("552 5.3.4"));
    assert!(c.cmd("MAIL FROM:<a@sender.test>").starts_with("250"));
    for i in 0..20 {
        assert!(c.cmd(&format!("RCPT TO:<r{i}@in.test>")).starts_with("250"));
    }
    assert!(c.cmd("RCPT TO:<r20@in.test>").starts_with("452 4.5.3"), "the 21st recipient waits");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: big\r\n\r\n");
    let line = [b'x'; 998];
    for _ in 0..250 {
        c.send(&line);
        c.send(b"\r\n");
    }
    assert!(c.cmd(".").starts_with("552 5.3.4"), "data over the limit is refused whole");
    assert!(c.cmd("MAIL FROM:<a@sender.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<smuggle@in.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@sender.test>\r\nRCPT TO:<x@in.test>\r\n");
    let end = c.cmd(".");
    assert!(end.starts_with("250"), "{end}");
    assert!(c.cmd("QUIT").starts_with("221"));
    let list = server.received().await;
    assert_eq!(list.len(), 4, "one message, the smuggled commands inside it");
    assert_eq!(list[0]["subject"], "one");

    // Pipelined sessions from postfix's smtp-source.
    let out = Command::new("smtp-source")
        .args(["-s", "4", "-m", "40", "-l", "2048", "-f", "load@sender.test", "-t", "load@in.test"])
        .arg(format!("127.0.0.1:{}", server.smtp))
        .output()
        .unwrap();
    assert!(out.status.success(), "smtp-source: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.received().await.len(), 44);
}

/// The loop closed: mail to an unknown user is accepted by a loopback postfix, which returns
/// its genuine DSN to the VERP address; the DSN reaches mailroom's listener, is applied to the
/// email (bounced, suppressed) without any manual step, and is not shown as received mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsn_from_postfix_reaches_the_listener_and_bounces_the_email() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = common::peers::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/setup-postfix.sh");
    let postfix = common::peers::Postfix::start(&script, &dir.path().join("postfix"), Some(smtp), "");
    let postfix_port = postfix.port;

    let dir2 = tempfile::tempdir().unwrap();
    let port = common::peers::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-key", KEY, "--rate-limit", "0", "--db"])
        .arg(dir2.path().join("loop.redb"))
        .args(["--inbound", &format!("127.0.0.1:{smtp}")])
        .args(["--smtp", &format!("smtp://127.0.0.1:{postfix_port}?tls=none")])
        .env("MAILROOM_DELIVERY_BOUNCE_DOMAIN", "bounces.test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::peers::wait_listening(port, &mut child, "mailroom serve");
    let server = Server { child, port, smtp, dns_port: 0, _dir: dir2 };

    let (status, sent) = server
        .call(
            reqwest::Method::POST,
            "/emails",
            Some(json!({"from": "Acme <hello@acme.test>", "to": "nosuchuser@mx.test", "subject": "Welcome", "text": "Hello."})),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let email = loop {
        let (_, e) = server.call(reqwest::Method::GET, &format!("/emails/{id}"), None).await;
        if e["last_event"] == "bounced" {
            break e;
        }
        assert!(Instant::now() < deadline, "never bounced: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(email.to_string().contains("Permanent"), "a permanent bounce: {email}");
    // The address is suppressed: the next email to it is never handed to postfix.
    let (_, again) = server
        .call(
            reqwest::Method::POST,
            "/emails",
            Some(json!({"from": "hello@acme.test", "to": "nosuchuser@mx.test", "subject": "Again", "text": "Hi."})),
        )
        .await;
    let again_id = again["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, e) = server.call(reqwest::Method::GET, &format!("/emails/{again_id}"), None).await;
        if e["last_event"] == "suppressed" {
            break;
        }
        assert!(Instant::now() < deadline, "not suppressed: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.received().await.is_empty(), "a DSN is not received mail");
}

/// Nothing acknowledged is lost: a client sends numbered messages one after another while the
/// server is killed (SIGKILL) and restarted on the same file again and again; every message
/// that got its `250` is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_a_kill() {
    let mut server = serve(&[], &[]);
    let (id, _dns) = server.receiving_domain(10, None).await;
    server.wait_status(&id, "verified").await;
    let db = server._dir.path().join("in.redb");
    let smtp = server.smtp;
    const N: usize = 400;
    // The client sends at least N messages and goes on until the kills are over: on a quiet
    // machine N alone can pass between two kills (the test then proved nothing).
    let kills_over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let over = std::sync::Arc::clone(&kills_over);
    let client = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut i = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while (i < N || !over.load(std::sync::atomic::Ordering::Relaxed)) && Instant::now() < deadline {
            let attempt = || -> std::io::Result<bool> {
                let s = TcpStream::connect(("127.0.0.1", smtp))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut c = Smtp { reader: BufReader::new(s) };
                let mut step = |cmd: &[u8], want: &str| -> std::io::Result<bool> {
                    if !cmd.is_empty() {
                        c.reader.get_mut().write_all(cmd)?;
                    }
                    Ok(c.reply().starts_with(want))
                };
                Ok(step(b"", "220")?
                    && step(b"EHLO crash.test\r\n", "250")?
                    && step(b"MAIL FROM:<a@sender.test>\r\n", "250")?
                    && step(b"RCPT TO:<crash@in.test>\r\n", "250")?
                    && step(b"DATA\r\n", "354")?
                    && step(format!("Subject: crash-{i}\r\n\r\nbody {i}\r\n.\r\n").as_bytes(), "250")?)
            };
            match attempt() {
                Ok(true) => {
                    acked.push(i);
                    i += 1;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        acked
    });
    let mut rng = common::Rng(0x5eed_1b0c);
    let mut kills = 0;
    while !client.is_finished() && kills < 6 {
        std::thread::sleep(Duration::from_millis(rng.range(100, 400)));
        let _ = server.child.kill();
        let _ = server.child.wait();
        kills += 1;
        server.child = spawn(&db, server.port, smtp, server.dns_port, &[], &[]);
    }
    kills_over.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = client.join().unwrap();
    assert!(kills >= 3, "the server was killed while the client sent ({kills} kills)");
    assert!(acked.len() >= N, "the client got through {N} messages or more ({} acknowledged)", acked.len());
    let mut subjects = std::collections::BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/emails/receiving?limit=100&after={a}"),
            None => "/emails/receiving?limit=100".to_string(),
        };
        let (_, page) = server.call(reqwest::Method::GET, &path, None).await;
        let data = page["data"].as_array().unwrap();
        for m in data {
            subjects.insert(m["subject"].as_str().unwrap().to_string());
        }
        if page["has_more"] != true {
            break;
        }
        after = Some(data.last().unwrap()["id"].as_str().unwrap().to_string());
    }
    let lost: Vec<usize> = acked.iter().copied().filter(|i| !subjects.contains(&format!("crash-{i}"))).collect();
    assert!(lost.is_empty(), "acknowledged but lost after {kills} kills: {lost:?}");
}

/// A 25 MB attachment arrives whole (swaks, default limits), and one client address cannot
/// hold more than its share of sessions: the 21st concurrent one is told to come back later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_25_mb_attachment_arrives_and_sessions_per_client_are_bounded() {
    let server = serve(&[], &[]);
    let (id, _dns) = server.receiving_domain(10, None).await;
    server.wait_status(&id, "verified").await;

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let content: Vec<u8> = (0..25u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&big, &content).unwrap();
    let attach = format!("@{}", big.display());
    swaks_send(&server, "ann@sender.test", "big@in.test", "Big", &["--attach", &attach, "--suppress-data"]);
    let list = server.received().await;
    assert_eq!(list[0]["attachments"][0]["size"], 25 << 20);
    let mid = list[0]["id"].as_str().unwrap();
    let (_, full) = server.call(reqwest::Method::GET, &format!("/emails/receiving/{mid}/attachments"), None).await;
    let url = full["data"][0]["download_url"].as_str().unwrap();
    let got = reqwest::get(url).await.unwrap().bytes().await.unwrap();
    assert!(got.as_ref() == content.as_slice(), "25 MB back byte for byte ({} bytes)", got.len());

    // One inline image named 20,000 times: the html served with data URIs stays bounded
    // (unbounded, this GET would answer 2.6 GB).
    use base64::Engine as _;
    let image = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 100_000]);
    let refs = "<img src=\"cid:a\">".repeat(20_000);
    let mime = format!(
        "From: ann@sender.test\r\nTo: amp@in.test\r\nSubject: Amplified\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/related; boundary=\"r\"\r\n\r\n--r\r\nContent-Type: text/html\r\n\r\n{refs}\r\n\
         --r\r\nContent-Type: image/png\r\nContent-ID: <a>\r\nContent-Transfer-Encoding: base64\r\n\r\n{image}\r\n--r--\r\n"
    );
    let eml = dir.path().join("amp.eml");
    std::fs::write(&eml, &mime).unwrap();
    let data = eml.display().to_string();
    swaks_send(&server, "ann@sender.test", "amp@in.test", "Amplified", &["--data", &data]);
    let amp = server.received().await[0]["id"].as_str().unwrap().to_string();
    let got = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/emails/receiving/{amp}", server.port))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got.len() < 3 * mime.len() + 100_000, "the answer is bounded by the message: {} bytes", got.len());

    let mut open = Vec::new();
    for _ in 0..20 {
        let (c, greeting) = Smtp::connect(server.smtp);
        assert!(greeting.starts_with("220"), "{greeting}");
        open.push(c);
    }
    let (_, refused) = Smtp::connect(server.smtp);
    assert!(refused.starts_with("421 4.7.0"), "the 21st session from one address: {refused}");
    drop(open);
    std::thread::sleep(Duration::from_millis(200));
    let (_, again) = Smtp::connect(server.smtp);
    assert!(again.starts_with("220"), "slots come back when sessions end: {again}");
}
