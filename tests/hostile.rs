//! The server attacked as a hostile API client would: every finding of the review that found
//! it giving way, as a regression test over a real socket, against the real `mailroom serve`
//! started from a configuration file on a real redb file.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OPERATOR: &str = "re_operator_key_0001";

struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Server {
    /// `mailroom serve` with the operator's key and `extra` configuration (TOML sections).
    fn start(extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    /// `extra` may begin with a `[server]` table: its lines join the server's own.
    fn start_in(dir: tempfile::TempDir, extra: &str) -> Server {
        let port = common::peers::free_port();
        let config = dir.path().join("mailroom.toml");
        let db = dir.path().join("h.redb");
        let (server_lines, rest) = match extra.strip_prefix("[server]\n") {
            Some(after) => after.split_at(after.find("\n[").map_or(after.len(), |i| i + 1)),
            None => ("", extra),
        };
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{server_lines}\n[database]\npath = \"{}\"\n\n[[api_keys]]\nname = \"operator\"\ntoken = \"{OPERATOR}\"\n\n{rest}\n",
            db.display()
        );
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        common::peers::wait_listening(port, &mut child, "mailroom serve");
        let s = Server { child, port, dir, config };
        // Listening is not serving yet: wait for an answer.
        let deadline = Instant::now() + Duration::from_secs(20);
        while request(s.port, "GET", "/health", None, b"", &[]).status != 200 {
            assert!(Instant::now() < deadline, "serve did not answer /health");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("h.redb")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> (String, tempfile::TempDir) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).ok();
        (err, std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// One HTTP/1.1 exchange written by hand (the tests need to send what no library sends).
fn raw(port: u16, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "no answer to {:?}: {:?}",
            String::from_utf8_lossy(&request[..request.len().min(200)]),
            String::from_utf8_lossy(&out)
        )
    });
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, headers: head, body: out[split + 4..].to_vec() }
}

fn request(port: u16, method: &str, path: &str, key: Option<&str>, body: &[u8], extra: &[(&str, &str)]) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n");
    if let Some(k) = key {
        head.push_str(&format!("authorization: Bearer {k}\r\n"));
    }
    if !body.is_empty() && !extra.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
        head.push_str("content-type: application/json\r\n");
    }
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    raw(port, &bytes)
}

fn post(s: &Server, path: &str, key: &str, body: &Value) -> Reply {
    request(s.port, "POST", path, Some(key), body.to_string().as_bytes(), &[])
}

fn get(s: &Server, path: &str, key: &str) -> Reply {
    request(s.port, "GET", path, Some(key), b"", &[])
}

fn email(to: &str) -> Value {
    json!({"from": "Acme <hi@acme.test>", "to": to, "subject": "Hi", "html": "<p>hi</p>"})
}

fn count_emails(s: &Server) -> usize {
    get(s, "/emails?limit=100", OPERATOR).json()["data"].as_array().map_or(0, Vec::len)
}

fn new_key(s: &Server, body: Value) -> String {
    let r = post(s, "/api-keys", OPERATOR, &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["token"].as_str().unwrap().to_string()
}

/// Peak resident memory of a process so far, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn path_attachments_never_read_the_servers_files() {
    let s = Server::start("[rate_limits]\nper_key = 0\nper_account = 0\n");
    let sender = new_key(&s, json!({"name": "sender", "permission": "sending_access"}));
    let db = s.db().display().to_string();
    let config = s.config.display().to_string();
    let mut answers = std::collections::BTreeSet::new();
    for path in [
        "/etc/passwd",
        "/etc/shadow",
        "/proc/self/environ",
        "/proc/self/cmdline",
        "../../etc/hostname",
        "/etc/no-such-file",
        db.as_str(),
        config.as_str(),
        "mailroom.toml",
    ] {
        for key in [OPERATOR, sender.as_str()] {
            let mut body = email("outside@example.com");
            body["attachments"] = json!([{"path": path, "filename": "x.txt"}]);
            let r = post(&s, "/emails", key, &body);
            assert_eq!((r.status, r.json()["name"].as_str()), (422, Some("invalid_attachment")), "{path}");
            answers.insert(r.json()["message"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(answers.len(), 1, "one answer, whether the file exists or not: {answers:?}");
    assert_eq!(count_emails(&s), 0, "nothing was accepted");
    // A URL on the loopback interface is refused by default too.
    let mut body = email("outside@example.com");
    body["attachments"] = json!([{"path": format!("http://127.0.0.1:{}/health", s.port)}]);
    let r = post(&s, "/emails", OPERATOR, &body);
    assert_eq!(r.status, 422);
    assert!(r.json()["message"].as_str().unwrap().contains("does not fetch from"), "{}", r.json());
}

/// A plain HTTP server that serves one file, for `path` URLs.
fn file_server(content: &'static [u8]) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/pdf\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                content.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(content);
        }
    });
    port
}

#[test]
fn path_means_a_url_the_server_fetches_or_a_file_in_the_named_directory() {
    let files = file_server(b"%PDF-1.4 quarterly");
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    std::fs::write(public.join("terms.txt"), b"the terms").unwrap();
    let extra = format!("[attachments]\nallow_networks = [\"127.0.0.1/32\"]\nlocal_dir = \"{}\"\n", public.display());
    let s = Server::start_in(dir, &extra);
    let mut body = email("outside@example.com");
    body["attachments"] = json!([
        {"path": format!("http://127.0.0.1:{files}/reports/Q3%20report.pdf")},
        {"path": "terms.txt"},
    ]);
    let r = post(&s, "/emails", OPERATOR, &body);
    assert_eq!(r.status, 200, "{}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let list = get(&s, &format!("/emails/{id}/attachments"), OPERATOR).json();
    let items = list["data"].as_array().unwrap();
    assert_eq!(items[0]["filename"], "Q3 report.pdf");
    assert_eq!(items[0]["content_type"], "application/pdf");
    assert_eq!(items[1]["filename"], "terms.txt");
    let url = items[0]["download_url"].as_str().unwrap();
    let path = url.split_once(&format!("{}", s.port)).unwrap().1;
    let got = request(s.port, "GET", path, None, b"", &[]);
    assert_eq!((got.status, got.body.as_slice()), (200, &b"%PDF-1.4 quarterly"[..]));
    // Outside the directory, whatever the spelling: the same refusal as a missing file.
    let mut answers = std::collections::BTreeSet::new();
    for bad in ["../h.redb", "../mailroom.toml", "/etc/passwd", "missing.txt", "public/../../x"] {
        let mut body = email("outside@example.com");
        body["attachments"] = json!([{"path": bad}]);
        let r = post(&s, "/emails", OPERATOR, &body);
        assert_eq!(r.status, 422, "{bad}");
        answers.insert(r.json()["message"].as_str().unwrap().to_string());
    }
    assert_eq!(answers.len(), 1, "{answers:?}");
}

/// A 55 MB request (one attachment, base64): refused, and the process's peak memory rises by
/// less than 100 MB; eight at once by less than 500 MB. Prints the figures.
#[test]
fn memory_per_request_is_bounded() {
    let s = Server::start("[rate_limits]\nper_key = 0\nper_account = 0\n");
    // Warm up (allocator arenas, the first commit) with a small accepted email.
    assert_eq!(post(&s, "/emails", OPERATOR, &email("a@example.com")).status, 200);
    let base = peak_rss(s.pid());
    let payload = "QUJD".repeat(55 << 20 >> 2); // 55 MiB of base64 (41 MiB decoded)
    let body = format!(
        r#"{{"from":"Acme <hi@acme.test>","to":"a@example.com","subject":"big","html":"x","attachments":[{{"filename":"big.bin","content":"{payload}"}}]}}"#
    );
    let started = Instant::now();
    let r = request(s.port, "POST", "/emails", Some(OPERATOR), body.as_bytes(), &[]);
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["message"].as_str().unwrap().contains("limit"), "{}", r.json());
    let one = peak_rss(s.pid()).saturating_sub(base);
    println!(
        "one 55 MB request: peak RSS {} MB → {} MB (+{} MB), answered in {:.2} s",
        base >> 20,
        (base + one) >> 20,
        one >> 20,
        started.elapsed().as_secs_f64()
    );
    assert!(one < 100 << 20, "one 55 MB request raised peak RSS by {} MB", one >> 20);

    let body = std::sync::Arc::new(body);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (body, port) = (body.clone(), s.port);
            std::thread::spawn(move || request(port, "POST", "/emails", Some(OPERATOR), body.as_bytes(), &[]).status)
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 422 || *s == 503), "{statuses:?}");
    let eight = peak_rss(s.pid()).saturating_sub(base);
    println!("eight concurrent 55 MB requests: +{} MB peak RSS; answers {statuses:?}", eight >> 20);
    assert!(eight < 500 << 20, "eight 55 MB requests raised peak RSS by {} MB", eight >> 20);
    assert_eq!(count_emails(&s), 1);
}

/// Bodies of about 40 MB whose lists are far too long for any limit — a batch of 13 million
/// `{}`, 5 million addresses in `to`, 13 million attachments `{}`, a suppression batch of 5
/// million addresses, a webhook with 4 million events — are refused naming the list, before
/// they are read into values: together they raise the peak memory by less than 150 MB. (Read
/// first, the batch took the server to 8 GB, each of the others to 230–670 MB.)
#[test]
fn lists_too_long_for_any_limit_are_refused_unread() {
    let s = Server::start("[rate_limits]\nper_key = 0\nper_account = 0\n");
    assert_eq!(post(&s, "/emails", OPERATOR, &email("a@example.com")).status, 200);
    let base = peak_rss(s.pid());
    let items = |n: usize, item: &str| {
        let mut out = String::with_capacity(n * (item.len() + 1) + 2);
        out.push('[');
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            out.push_str(item);
        }
        out.push(']');
        out
    };
    let head = r#""from":"Acme <hi@acme.test>","subject":"Hi","html":"<p>hi</p>""#;
    let cases = [
        ("/emails/batch", items(13_000_000, "{}"), "`emails`", "at most 100 allowed, got 13000000"),
        ("/emails", format!(r#"{{{head},"to":{}}}"#, items(5_000_000, r#""a@b.c""#)), "`to`", "got 5000000"),
        (
            "/emails",
            format!(r#"{{{head},"to":"a@example.com","attachments":{}}}"#, items(13_000_000, "{}")),
            "`attachments`",
            "got 13000000",
        ),
        (
            "/suppressions/batch/add",
            format!(r#"{{"emails":{}}}"#, items(5_000_000, r#""a@b.c""#)),
            "`emails`",
            "got 5000000",
        ),
        (
            "/webhooks",
            format!(r#"{{"endpoint":"https://hooks.example.com/a","events":{}}}"#, items(4_000_000, r#""email.sent""#)),
            "`events`",
            "got 4000000",
        ),
    ];
    for (path, body, field, count) in &cases {
        let r = request(s.port, "POST", path, Some(OPERATOR), body.as_bytes(), &[]);
        assert_eq!(r.status, 422, "{path}: {}", String::from_utf8_lossy(&r.body));
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(field) && message.contains(count), "{path}: {message}");
    }
    let grown = peak_rss(s.pid()).saturating_sub(base);
    println!("five bodies of 40 MB with lists far past every limit: +{} MB peak RSS", grown >> 20);
    assert!(grown < 150 << 20, "+{} MB", grown >> 20);
    assert_eq!(count_emails(&s), 1);
}

/// The largest email the limits accept (a 39.5 MiB attachment, a 53 MB request), stored on
/// the durable default store: what one accepted request costs at its peak (scheduled for
/// later, so that the worker's rendering is not counted with it). Prints it.
#[test]
fn memory_for_the_largest_accepted_email() {
    let s = Server::start("[rate_limits]\nper_key = 0\nper_account = 0\n");
    assert_eq!(post(&s, "/emails", OPERATOR, &email("a@example.com")).status, 200);
    let base = peak_rss(s.pid());
    let payload = "QUJD".repeat((79 << 20) / 6); // 52.7 MiB of base64: 39.5 MiB decoded
    let body = format!(
        r#"{{"from":"Acme <hi@acme.test>","to":"someone@example.com","subject":"big","html":"x","scheduled_at":"in 1 hour","attachments":[{{"filename":"big.bin","content":"{payload}"}}]}}"#
    );
    let r = request(s.port, "POST", "/emails", Some(OPERATOR), body.as_bytes(), &[]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let grown = peak_rss(s.pid()).saturating_sub(base);
    println!("the largest accepted email ({} MB request): +{} MB peak RSS", body.len() >> 20, grown >> 20);
    // Measured +120–124 MB before events gained `hit` and +144–154 MB after (the accept path
    // allocates nothing more: the shift is the allocator's; see the issue note). The bound
    // still says what matters: about three copies of the attachment, not more.
    assert!(grown < 170 << 20, "{} MB", grown >> 20);
}

/// Requests refused before their body matters are not read: the answer arrives while the
/// client is still sending.
#[test]
fn refused_requests_are_not_parsed() {
    let s = Server::start("[rate_limits]\nper_key = 1\nper_account = 1\n");
    let big_head = |key: Option<&str>| {
        let mut h = format!(
            "POST /emails HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            55 << 20
        );
        if let Some(k) = key {
            h.push_str(&format!("authorization: Bearer {k}\r\n"));
        }
        h.push_str("\r\n{\"from\":\"");
        h
    };
    let unauthenticated = raw(s.port, big_head(None).as_bytes());
    assert_eq!(unauthenticated.status, 401);
    assert_eq!(post(&s, "/emails", OPERATOR, &email("a@example.com")).status, 200);
    let limited = raw(s.port, big_head(Some(OPERATOR)).as_bytes());
    assert_eq!(limited.status, 429, "{}", limited.headers);
    assert!(limited.header("retry-after").is_some());
}

#[test]
fn compressed_bodies_are_refused_not_misread() {
    let s = Server::start("");
    let body = email("a@example.com").to_string();
    for coding in ["gzip", "br", "identity, deflate"] {
        let r = request(s.port, "POST", "/emails", Some(OPERATOR), body.as_bytes(), &[("content-encoding", coding)]);
        assert_eq!(r.status, 415, "{coding}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["name"], "validation_error");
        assert!(r.json()["message"].as_str().unwrap().contains(coding), "{coding}: the coding is named");
        assert_eq!(r.header("accept-encoding").as_deref(), Some("identity"));
    }
    assert_eq!(count_emails(&s), 0, "nothing refused was stored");
    // Without a body the header describes nothing.
    let r = request(s.port, "GET", "/emails", Some(OPERATOR), b"", &[("content-encoding", "gzip")]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = request(s.port, "POST", "/emails", Some(OPERATOR), body.as_bytes(), &[("content-encoding", "identity")]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(count_emails(&s), 1);
}

#[test]
fn one_email_causes_at_most_fifty_deliveries_and_lists_are_capped() {
    let s = Server::start("");
    // 1,000 entries: as many as a list is read with, so that every list's own limit answers.
    let many: Vec<String> = (0..1_000).map(|i| format!("u{i}@example.com")).collect();
    for field in ["cc", "bcc", "reply_to"] {
        let mut body = email("a@example.com");
        body[field] = json!(many);
        let r = post(&s, "/emails", OPERATOR, &body);
        assert_eq!(r.status, 422, "{field}");
        assert!(r.json()["message"].as_str().unwrap().contains(&format!("`{field}`")), "{}", r.json());
    }
    let mut body = email("a@example.com");
    body["tags"] = json!((0..1_000).map(|i| json!({"name": format!("t{i}"), "value": "v"})).collect::<Vec<_>>());
    body["headers"] = json!((0..1_000).map(|i| (format!("X-H{i}"), json!("v"))).collect::<serde_json::Map<_, _>>());
    let r = post(&s, "/emails", OPERATOR, &body);
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(r.status == 422 && message.contains("`tags`") && message.contains("`headers`"), "{message}");
    // 30 + 20: fifty deliveries are fine; one more is not.
    let mut body = email("a@example.com");
    body["to"] = json!(many[..30]);
    body["cc"] = json!(many[30..50]);
    assert_eq!(post(&s, "/emails", OPERATOR, &body).status, 200);
    body["bcc"] = json!([many[50]]);
    assert_eq!(post(&s, "/emails", OPERATOR, &body).status, 422);
    assert_eq!(count_emails(&s), 1);
}

#[test]
fn stalled_connections_are_closed_and_every_answer_is_json() {
    let s = Server::start(
        "[server]\nheader_read_timeout = \"1s\"\nbody_timeout = \"1s\"\n[rate_limits]\nper_key = 0\nper_account = 0\n",
    );
    // 100 connections stop mid-header, 100 mid-body.
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        if i % 2 == 0 {
            c.write_all(b"POST /emails HTTP/1.1\r\nhost: x\r\nx-slow: ").unwrap();
        } else {
            let head = format!(
                "POST /emails HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {OPERATOR}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"from\""
            );
            c.write_all(head.as_bytes()).unwrap();
        }
        stalled.push(c);
    }
    let started = Instant::now();
    let mut timed_out_bodies = 0;
    for (i, mut c) in stalled.into_iter().enumerate() {
        let mut out = Vec::new();
        let r = c.read_to_end(&mut out);
        assert!(r.is_ok(), "connection {i} was not closed by the server: {r:?}");
        if i % 2 == 1 {
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with("HTTP/1.1 408") && text.contains("\"statusCode\":408"), "{text}");
            timed_out_bodies += 1;
        }
    }
    assert_eq!(timed_out_bodies, 100);
    assert!(started.elapsed() < Duration::from_secs(8), "closed within the timeouts: {:?}", started.elapsed());

    // hyper's own answers carry JSON bodies.
    let bad = raw(s.port, b"GARBAGE\r\n\r\n");
    assert_eq!((bad.status, bad.json()["statusCode"].as_u64()), (400, Some(400)), "{}", bad.headers);
    let huge = format!("GET /emails HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(64 << 10));
    let r = raw(s.port, huge.as_bytes());
    assert_eq!((r.status, r.json()["statusCode"].as_u64()), (431, Some(431)));
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    // The download route without a signature, and an attachment route without a key.
    let r = request(s.port, "GET", "/emails/x/attachments/content", None, b"", &[]);
    assert_eq!((r.status, r.json()["name"].as_str()), (401, Some("missing_api_key")));
    let r =
        request(s.port, "GET", "/emails/00000000-0000-7000-8000-000000000000/attachments/a/content", None, b"", &[]);
    assert_eq!((r.status, r.json()["name"].as_str()), (403, Some("invalid_access")));
    let r = request(s.port, "GET", "/emails/%FF%FE", Some(OPERATOR), b"", &[]);
    assert!(r.status >= 400 && r.json()["statusCode"].as_u64() == Some(u64::from(r.status)), "{}", r.status);
}

#[test]
fn keys_cannot_be_escalated_or_guessed_offline() {
    let s = Server::start("[rate_limits]\nper_key = 5\nper_account = 5\nunauthenticated_per_ip = 5\n");
    let keys = get(&s, "/api-keys", OPERATOR).json();
    let operator_id = keys["data"][0]["id"].as_str().unwrap().to_string();
    // The id says nothing about the token.
    let digest = {
        let out = Command::new("sh").arg("-c").arg(format!("printf %s {OPERATOR} | sha256sum")).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
    };
    assert!(!digest.starts_with(&operator_id.replace('-', "")[..8]), "{operator_id} vs {digest}");
    // A full-access key made over the API cannot revoke the operator's.
    let minted = new_key(&s, json!({"name": "minted"}));
    let r = request(s.port, "DELETE", &format!("/api-keys/{operator_id}"), Some(&minted), b"", &[]);
    assert_eq!((r.status, r.json()["name"].as_str()), (403, Some("validation_error")), "{}", r.json());
    assert_eq!(get(&s, "/api-keys", OPERATOR).status, 200, "the operator's key still works");

    // Minting keys does not multiply the allowance: the account has five per second.
    std::thread::sleep(Duration::from_millis(1100));
    let minted: Vec<String> = (0..4).map(|i| new_key(&s, json!({"name": format!("k{i}")}))).collect();
    std::thread::sleep(Duration::from_millis(1100));
    let ok = (0..20).filter(|i| get(&s, "/emails", &minted[i % minted.len()]).status == 200).count();
    assert!(ok <= 5, "{ok} requests passed in one second across minted keys");

    // Guessing keys: after five failures in a second, the address is refused outright.
    std::thread::sleep(Duration::from_millis(1100));
    let statuses: Vec<u16> = (0..10).map(|i| get(&s, "/emails", &format!("re_guess_{i:012}")).status).collect();
    assert_eq!(statuses[..5], [403; 5]);
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[test]
fn logs_and_exports_keep_no_secrets_and_no_formulas() {
    let s = Server::start("[rate_limits]\nper_key = 0\nper_account = 0\n");
    // Not JSON: refused and never logged in clear.
    let r = request(s.port, "POST", "/emails", Some(OPERATOR), b"content=U0VDUkVUX0FUVEFDSE1FTlQ&to=x", &[]);
    assert_eq!(r.status, 422);
    // Valid JSON with bytes after it: malformed, not sent, not logged in clear.
    let mut trailing = email("a@example.com");
    trailing["attachments"] = json!([{"filename": "s.txt", "content": "U0VDUkVUX0FUVEFDSE1FTlQ="}]);
    let body = format!("{trailing} U0VDUkVUX0FUVEFDSE1FTlQ");
    let r = request(s.port, "POST", "/emails", Some(OPERATOR), body.as_bytes(), &[]);
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(count_emails(&s), 0);
    // Secret-looking custom headers are not logged either.
    let mut with_header = email("a@example.com");
    with_header["headers"] = json!({"X-Api-Token": "tok_SECRET_HEADER_VALUE", "X-Entity-Ref-ID": "42"});
    with_header["subject"] = json!("=HYPERLINK(\"http://evil.test\",\"click\")");
    assert_eq!(post(&s, "/emails", OPERATOR, &with_header).status, 200);
    let logs = get(&s, "/logs?limit=100", OPERATOR);
    let text = String::from_utf8_lossy(&logs.body).to_string();
    assert!(text.contains("X-Entity-Ref-ID"), "the log keeps what is harmless: {text}");
    for secret in ["U0VDUkVUX0FUVEFDSE1FTlQ", "tok_SECRET_HEADER_VALUE", OPERATOR] {
        assert!(!text.contains(secret), "{secret} is in the logs: {text}");
    }
    let csv = String::from_utf8_lossy(&get(&s, "/emails/export", OPERATOR).body).to_string();
    assert!(csv.contains("\"'=HYPERLINK(\"\"http://evil.test\"\",\"\"click\"\")\""), "{csv}");
    assert!(!csv.lines().any(|l| l.split(',').any(|cell| cell.starts_with('='))), "{csv}");
}

#[test]
fn envelope_and_authentication_headers_are_reserved_and_filenames_encoded() {
    let s = Server::start("");
    let limited = new_key(&s, json!({"name": "acme", "permission": "sending_access", "domain": "acme.test"}));
    for name in ["Reply-To", "Sender", "Return-Path", "DKIM-Signature", "Resent-From", "Received"] {
        let mut body = email("a@example.com");
        body["headers"] = json!({name: "ceo@bank.test"});
        let r = post(&s, "/emails", &limited, &body);
        assert_eq!(r.status, 422, "{name}");
        assert!(r.json()["message"].as_str().unwrap().contains(&format!("headers.{name}")), "{}", r.json());
    }
    let mut other = email("a@example.com");
    other["from"] = json!("CEO <ceo@bank.test>");
    assert_eq!(post(&s, "/emails", &limited, &other).status, 403);
    // A control byte in a filename reaches the message only encoded.
    let mut body = email("person@example.com");
    body["attachments"] = json!([{"filename": "a\u{1}b\r\nBcc: victim@example.com.txt", "content": "aGk="}]);
    let r = post(&s, "/emails", OPERATOR, &body);
    assert_eq!(r.status, 200, "{}", r.json());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let outbox = s.dir.path().join("h.redb.outbox").join(format!("{id}.eml"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !outbox.exists() {
        assert!(Instant::now() < deadline, "not delivered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let eml = std::fs::read(&outbox).unwrap();
    let text = String::from_utf8_lossy(&eml);
    assert!(text.contains("filename*0*=utf-8''a%01b%0D%0ABcc%3A%20victim%40example.com.txt"), "{text}");
    assert!(!eml.contains(&1u8) && !text.contains("\r\nBcc:"), "{text}");
}

/// A refusal quotes a value the client sent in part: an answer (and the request log that keeps
/// it) does not grow with what was sent.
#[test]
fn refusals_quote_what_was_sent_in_part() {
    let s = Server::start("");
    let big = "x".repeat(200_000);
    let mut att = email("a@example.com");
    att["attachments"] = json!([{"content": "aGk=", "filename": "a.txt", "content_type": big}]);
    let mut sched = email("a@example.com");
    sched["scheduled_at"] = json!(big);
    let mut header = email("a@example.com");
    header["headers"] = json!({ format!("X {big}"): "v" });
    for (path, body) in [
        ("/emails", att),
        ("/emails", sched),
        ("/emails", header),
        ("/api-keys", json!({"name": "k", "permission": big})),
        ("/domains", json!({"name": big})),
        ("/domains", json!({"name": "acme.test", "tls": big})),
        ("/webhooks", json!({"endpoint": "https://example.com/h", "events": [big]})),
    ] {
        let r = post(&s, path, OPERATOR, &body);
        assert_eq!(r.status, 422, "{path}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.body.len() < 2_000, "{path}: an answer of {} bytes", r.body.len());
    }
}

#[test]
fn operations_health_metrics_backup_and_restore() {
    let s = Server::start("");
    assert_eq!(request(s.port, "GET", "/health", None, b"", &[]).json()["status"], "ok");
    assert_eq!(request(s.port, "GET", "/ready", None, b"", &[]).json()["status"], "ready");
    let id = post(&s, "/emails", OPERATOR, &email("delivered@resend.dev")).json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&s, &format!("/emails/{id}"), OPERATOR).json()["last_event"] != "delivered" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(6)); // the queue gauges refresh every 5 s
    let metrics = String::from_utf8_lossy(&request(s.port, "GET", "/metrics", None, b"", &[]).body).to_string();
    for line in [
        "mailroom_emails_accepted_total 1",
        "mailroom_events_total{event=\"delivered\"} 1",
        "mailroom_queue_waiting 0",
        "mailroom_queue_due_lag_seconds",
        "mailroom_http_request_duration_seconds_bucket{method=\"POST\",route=\"/emails\",status=\"2xx\"",
        "mailroom_http_connections",
        "mailroom_redb_commits_total",
        "mailroom_redb_commit_seconds_bucket{le=\"0.0001\"}",
        "mailroom_redb_group_write_seconds_bucket",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    // A backup while serving, through the command line (the server holds the file).
    let backup = s.dir.path().join("backup.redb");
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["backup", backup.to_str().unwrap(), "--config", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Never over a file that exists (the live database, or an earlier backup).
    let again = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["backup", backup.to_str().unwrap(), "--config", s.config.to_str().unwrap()])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&again.stdout), String::from_utf8_lossy(&again.stderr));
    assert!(!again.status.success() && said.contains("exists"), "{said}");
    let (log, dir) = s.stop();
    assert!(log.contains("request") && log.contains("status=200"), "per-request logs at info: {log}");
    // Restore it over the (stopped) server's file and find the email again.
    let config = dir.path().join("mailroom.toml");
    let restore = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["restore", backup.to_str().unwrap(), "--force", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stdout));
    // The old file is kept beside it; no staging or half-made file is left.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with(".before-restore")), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".restoring") || n.contains(".partial-")), "{names:?}");
    let got = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["get", &id, "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let got: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(got["last_event"], "delivered");
}

#[test]
fn what_a_newcomer_hit() {
    let s = Server::start("");
    // The command line works while the server holds the database.
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(args)
            .args(["--config", s.config.to_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let out = c.wait_with_output().unwrap();
        (out.status.success(), serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null))
    };
    let (ok, sent) = cli(&["send"], Some(&email("bounced@resend.dev").to_string()));
    assert!(ok, "{sent}");
    let first = sent["id"].as_str().unwrap().to_string();
    // A test address simulates its outcome every time, the suppression list notwithstanding.
    let wait_for = |id: &str, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = get(&s, &format!("/emails/{id}"), OPERATOR).json()["last_event"].clone();
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "{id} is {got}, not {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(&first, "bounced");
    let second = post(&s, "/emails", OPERATOR, &email("bounced@resend.dev")).json()["id"].as_str().unwrap().to_string();
    wait_for(&second, "bounced");
    let (ok, listed) = cli(&["list"], None);
    assert!(ok && listed["data"].as_array().unwrap().len() == 2, "{listed}");
    // The running server answers `usage` as `GET /usage` does.
    let (ok, usage) = cli(&["usage"], None);
    let over_http = get(&s, "/usage", OPERATOR).json();
    assert!(ok && usage["emails"]["daily"]["sent"] == 2, "{usage}");
    assert_eq!((&usage["emails"], &usage["rate_limit"]), (&over_http["emails"], &over_http["rate_limit"]));

    // A port in use: a clear error, and nothing written (no key created).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("other.redb");
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--listen", &format!("127.0.0.1:{}", s.port), "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot listen on") && err.contains("in use"), "{err}");
    assert!(out.stdout.is_empty(), "no key was created or printed");
    assert!(!db.exists(), "nor a database");
    let keys = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["keys", "list", "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    let keys: Value = serde_json::from_slice(&keys.stdout).unwrap();
    assert!(keys["message"].as_str().unwrap().starts_with("there is no database at "), "{keys}");

    let version = Command::new(env!("CARGO_BIN_EXE_mailroom")).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("mailroom {}", env!("CARGO_PKG_VERSION")));
    let help = Command::new(env!("CARGO_BIN_EXE_mailroom")).args(["send", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for line in help.lines().filter(|l| l.trim_start().starts_with("[FILE]") || l.contains("--idempotency-key")) {
        assert!(line.split_whitespace().count() > 3, "a help line without text: {line:?}");
    }
    let when = Command::new(env!("CARGO_BIN_EXE_mailroom")).args(["when", "--help"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&when.stdout).contains("--db"), "when takes no database");
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(licence).is_file(), "{licence}");
    }
}

/// HTTPS from certificate files: the API answers over TLS (checked by curl against the
/// certificate), download URLs use the configured public URL, and a plain-HTTP client gets no
/// answer from the TLS port.
#[test]
fn tls_from_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let port = common::peers::free_port();
    let config = dir.path().join("mailroom.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\npublic_url = \"https://localhost:{port}\"\n[database]\npath = \"{}\"\n[[api_keys]]\ntoken = \"{OPERATOR}\"\n",
            cert.display(),
            key.display(),
            dir.path().join("tls.redb").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::peers::wait_listening(port, &mut child, "mailroom serve (TLS)");
    let curl = |args: &[&str]| {
        let out =
            Command::new("curl").args(["-sS", "--max-time", "10", "--cacert"]).arg(&cert).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let (ok, body) = curl(&[&format!("https://localhost:{port}/health")]);
        if ok || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(health.trim(), r#"{"status":"ok"}"#);
    let mut body = email("a@example.com");
    body["attachments"] = json!([{"filename": "a.txt", "content": "aGk="}]);
    let auth = format!("Authorization: Bearer {OPERATOR}");
    let (ok, sent) = curl(&[
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        &body.to_string(),
        &format!("https://localhost:{port}/emails"),
    ]);
    assert!(ok, "{sent}");
    let id = serde_json::from_str::<Value>(&sent).unwrap()["id"].as_str().unwrap().to_string();
    let (_, list) = curl(&["-H", &auth, &format!("https://localhost:{port}/emails/{id}/attachments")]);
    let list: Value = serde_json::from_str(&list).unwrap();
    let url = list["data"][0]["download_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("https://localhost:{port}/emails/")), "{url}");
    assert_eq!(curl(&[url]).1, "hi");
    // Plain HTTP to the TLS port: the handshake fails, no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    plain.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"), "plain HTTP was served");
    let _ = child.kill();
    let _ = child.wait();
}

/// Signed downloads need no key, so they are limited per client address instead.
#[test]
fn downloads_are_rate_limited_per_address() {
    let s = Server::start("[rate_limits]\ndownloads_per_ip = 3\nper_key = 0\nper_account = 0\n");
    let mut body = email("a@example.com");
    body["attachments"] = json!([{"filename": "a.txt", "content": "aGk="}]);
    let id = post(&s, "/emails", OPERATOR, &body).json()["id"].as_str().unwrap().to_string();
    let list = get(&s, &format!("/emails/{id}/attachments"), OPERATOR).json();
    let url = list["data"][0]["download_url"].as_str().unwrap().to_string();
    let path = url.split_once(&s.port.to_string()).unwrap().1.to_string();
    let statuses: Vec<u16> = (0..5).map(|_| request(s.port, "GET", &path, None, b"", &[]).status).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

/// A server that takes one request at a time and fetches attachments from the loopback
/// interface with `timeout_s` seconds' timeout, and the port of a server there that accepts
/// connections and never answers: an attachment URL on it holds a request in progress.
fn one_request_at_a_time_beside_a_silent_server(timeout_s: u32) -> (Server, u16) {
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hang.incoming().flatten() {
            held.push(c); // accepted, never answered
        }
    });
    let s = Server::start(&format!(
        "[server]\nmax_concurrent_requests = 1\n[attachments]\nallow_networks = [\"127.0.0.1/32\"]\ntimeout = \"{timeout_s}s\"\n[rate_limits]\nper_key = 0\nper_account = 0\n",
    ));
    (s, hang_port)
}

/// Beyond the requests it may handle at once, the server answers 503 JSON at once instead of
/// queueing (here: one request in progress, held by an attachment URL that never answers).
#[test]
fn load_is_shed_with_503_json() {
    let (s, hang_port) = one_request_at_a_time_beside_a_silent_server(4);
    let port = s.port;
    let slow = std::thread::spawn(move || {
        let mut body = email("a@example.com");
        body["attachments"] = json!([{"path": format!("http://127.0.0.1:{hang_port}/never")}]);
        request(port, "POST", "/emails", Some(OPERATOR), body.to_string().as_bytes(), &[]).status
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let shed = get(&s, "/emails", OPERATOR);
    assert_eq!((shed.status, shed.json()["name"].as_str()), (503, Some("service_unavailable")));
    assert!(shed.header("retry-after").is_some() && started.elapsed() < Duration::from_secs(1));
    assert_eq!(slow.join().unwrap(), 422, "the slow request ends when its fetch times out");
    assert_eq!(get(&s, "/emails", OPERATOR).status, 200, "and the server takes requests again");
}

/// A keyed request is finished even when its client hangs up (so that the retry finds its
/// answer), and it keeps its place among the requests in progress until it is: clients that
/// post and hang up cannot pile up unfinished requests, and their bodies, beyond the limits.
#[test]
fn a_keyed_request_whose_client_hangs_up_keeps_its_place_until_done() {
    let (s, hang_port) = one_request_at_a_time_beside_a_silent_server(3);
    let mut body = email("a@example.com");
    body["attachments"] = json!([{"path": format!("http://127.0.0.1:{hang_port}/never")}]);
    let body = body.to_string();
    let head = format!(
        "POST /emails HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {OPERATOR}\r\ncontent-type: application/json\r\n\
         idempotency-key: hang-up-1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(body.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    } // the client hangs up while the attachment is being fetched
    std::thread::sleep(Duration::from_millis(300));
    let held = get(&s, "/emails", OPERATOR);
    assert!(started.elapsed() < Duration::from_secs(3), "checked while the fetch still waits");
    assert_eq!(held.status, 503, "the abandoned keyed request still holds its place");
    // When its fetch times out, the request ends (nothing stored, the key freed) and so does
    // its hold.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&s, "/emails", OPERATOR);
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the place was never given back: {}", r.status);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(started.elapsed() >= Duration::from_millis(2900), "given back when the request ended, not before");
    let retry = request(
        s.port,
        "POST",
        "/emails",
        Some(OPERATOR),
        email("a@example.com").to_string().as_bytes(),
        &[("idempotency-key", "hang-up-1")],
    );
    assert_eq!(retry.status, 200, "the key was freed, so a corrected retry uses it: {}", retry.json());
    assert_eq!(count_emails(&s), 1);
}

/// With a body-memory budget below twice the largest body an operator allows, a request
/// without a body (every GET) is not charged for one, and the largest declared body is
/// charged the whole budget (it waits for the others): neither waits for room that can
/// never be.
#[test]
fn a_small_body_memory_budget_still_serves_every_request() {
    let s = Server::start(
        "[server]\nmax_body_bytes = \"8MB\"\nmax_body_memory = \"4MB\"\nbody_timeout = \"3s\"\n[limits]\nmax_email_bytes = \"4MB\"\n",
    );
    let started = Instant::now();
    // Without a Content-Length, as clients send a GET.
    let head =
        format!("GET /emails HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {OPERATOR}\r\nconnection: close\r\n\r\n");
    let list = raw(s.port, head.as_bytes());
    assert_eq!(list.status, 200, "{}", String::from_utf8_lossy(&list.body));
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once, not after the body timeout");
    let mut body = email("big@example.com");
    body["html"] = json!(format!("<p>{}</p>", "x".repeat(3 << 20)));
    let big = post(&s, "/emails", OPERATOR, &body);
    assert_eq!(big.status, 200, "a 3 MB email (charged 6 MB, over the 4 MB budget) is taken: {}", big.json());
}
