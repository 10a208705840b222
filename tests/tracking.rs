//! Tracking, one-click unsubscribe and share links through `mailroom serve`, as the world
//! uses them: a domain added and verified over the API against a dnsmasq publishing its
//! records (the tracking CNAME among them), an email sent through the API, its message read
//! from the sandbox's outbox, its tracked link followed by a real HTTP client (reqwest, the
//! tracking host resolved to the server) to a landing server started here, the pixel loaded,
//! the unsubscribe link POSTed as a mail provider does (RFC 8058), and the email shared.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;
#[path = "../adapters/dns/tests/support/dnsmasq.rs"]
mod dnsmasq;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "re_tracking_test_key";

/// An HTTP server on 127.0.0.1 that records each request line and answers `landed`.
#[derive(Debug)]
pub struct Landing {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Landing {
    pub fn start() -> Landing {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or("").to_string();
                log.lock().unwrap().push(line);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nlanded");
            }
        });
        Landing { port, seen }
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub dns_port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` on a fresh database, its nameserver a dnsmasq not started yet.
pub fn serve() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = common::peers::free_port();
    let dns_port = dnsmasq::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-key", KEY, "--rate-limit", "0", "--db"])
        .arg(dir.path().join("t.redb"))
        .args(["--dns", &format!("127.0.0.1:{dns_port}")])
        .env("MAILROOM_DOMAINS_HOST", "mx.mailroom.test")
        .env("MAILROOM_DOMAINS_TRACKING_URL", format!("http://{{host}}:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::peers::wait_listening(port, &mut child, "mailroom serve");
    Server { child, port, dns_port, dir }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A client that finds the tracking host at this server.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .resolve("links.acme.test", std::net::SocketAddr::from(([127, 0, 0, 1], self.port)))
            .build()
            .unwrap()
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.client().request(method, self.url(path)).bearer_auth(KEY);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Adds `acme.test` with tracking on, publishes its records in dnsmasq and waits until
    /// the server has verified it.
    pub async fn verified_domain(&self) -> dnsmasq::Dnsmasq {
        let (status, d) = self
            .call(
                reqwest::Method::POST,
                "/domains",
                Some(json!({"name": "acme.test", "tracking_subdomain": "links", "open_tracking": true, "click_tracking": true})),
            )
            .await;
        assert_eq!(status, 201, "{d}");
        let mut options = vec!["--host-record=mx.mailroom.test,127.0.0.1".to_string()];
        for r in d["records"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let fqdn = if name == "@" { "acme.test".to_string() } else { format!("{name}.acme.test") };
            let value = match r["type"].as_str().unwrap() {
                "MX" => format!("{} {}", r["priority"], r["value"].as_str().unwrap()),
                _ => r["value"].as_str().unwrap().to_string(),
            };
            options.push(dnsmasq::record(&fqdn, r["type"].as_str().unwrap(), &value));
        }
        let dns = dnsmasq::start_at(self.dns_port, &options);
        let id = d["id"].as_str().unwrap();
        self.call(reqwest::Method::POST, &format!("/domains/{id}/verify"), None).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, got) = self.call(reqwest::Method::GET, &format!("/domains/{id}"), None).await;
            if got["status"] == "verified" {
                break;
            }
            assert!(Instant::now() < deadline, "not verified: {got}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        dns
    }

    /// The message the sandbox wrote for email `id`.
    pub async fn outbox(&self, id: &str) -> Vec<u8> {
        let file = self.dir.path().join("t.redb.outbox").join(format!("{id}.eml"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(b) = std::fs::read(&file) {
                return b;
            }
            assert!(Instant::now() < deadline, "{} never written", file.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn last_event(&self, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, e) = self.call(reqwest::Method::GET, &format!("/emails/{id}"), None).await;
            if e["last_event"] == want || Instant::now() > deadline {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The URLs in `text` that start with `prefix` (up to the first quote, space or `>`).
fn urls(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            text[i..].chars().take_while(|c| !matches!(c, '"' | '\'' | ' ' | '>' | '<' | '\r' | '\n')).collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_links_the_pixel_unsubscribe_and_share_through_serve() {
    let server = serve();
    let _dns = server.verified_domain().await;
    let landing = Landing::start();
    let html = format!(
        "<html><body><p>Hello</p><a href=\"http://127.0.0.1:{}/landing?x=1&amp;y=2\">Shop</a></body></html>",
        landing.port
    );
    let (status, sent) = server
        .call(
            reqwest::Method::POST,
            "/emails",
            Some(json!({"from": "News <news@acme.test>", "to": "reader@example.com", "subject": "Tracked", "html": html, "text": "Hello", "unsubscribe": true})),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["id"].as_str().unwrap().to_string();
    let raw = server.outbox(&id).await;
    let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
    let body = message.body_html(0).unwrap().to_string();
    let base = format!("http://links.acme.test:{}", server.port);
    let clicks = urls(&body, &format!("{base}/t/c/"));
    let pixels = urls(&body, &format!("{base}/t/o/"));
    assert_eq!((clicks.len(), pixels.len()), (1, 1), "{body}");
    let unsubscribe = message.header_raw("List-Unsubscribe").unwrap().trim().trim_matches(['<', '>']).to_string();
    assert!(unsubscribe.starts_with(&format!("{base}/unsubscribe/")), "{unsubscribe}");
    assert_eq!(message.header_raw("List-Unsubscribe-Post").map(str::trim), Some("List-Unsubscribe=One-Click"));

    // A person's browser follows the link: the server redirects to the original URL.
    let client = server.client();
    let agent = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0";
    tokio::time::sleep(Duration::from_secs(5)).await; // past the scanner window
    let landed = client.get(&clicks[0]).header("user-agent", agent).send().await.unwrap();
    assert_eq!(landed.status(), 200);
    assert_eq!(landed.text().await.unwrap(), "landed");
    assert_eq!(landing.requests(), ["GET /landing?x=1&y=2 HTTP/1.1"]);
    let pixel = client.get(&pixels[0]).header("user-agent", agent).send().await.unwrap();
    assert_eq!(pixel.headers()["content-type"], "image/gif");
    assert!(pixel.bytes().await.unwrap().starts_with(b"GIF89a"));
    let e = server.last_event(&id, "opened").await;
    assert_eq!(e["last_event"], "opened", "{e}");

    // A forged link: 404 page, no redirect; a redirect is never to a URL the server did not sign.
    let no_redirects = reqwest::Client::builder()
        .resolve("links.acme.test", std::net::SocketAddr::from(([127, 0, 0, 1], server.port)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut forged = clicks[0].clone();
    forged.push('A');
    let r = no_redirects.get(&forged).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().get("location").is_none());
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let r = no_redirects.get(&clicks[0]).header("user-agent", agent).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], format!("http://127.0.0.1:{}/landing?x=1&y=2", landing.port));

    // RFC 8058: the provider POSTs `List-Unsubscribe=One-Click`; a GET only asks.
    let page = client.get(&unsubscribe).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\">"));
    let done = client
        .post(&unsubscribe)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["suppressions", "list", "--db"])
        .arg(server.dir.path().join("t.redb"))
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (listed["data"][0]["email"].as_str(), listed["data"][0]["origin"].as_str()),
        (Some("reader@example.com"), Some("unsubscribe")),
        "{listed}"
    );

    // Share: a link anyone can open, as the page shows it; a tampered or expired one shows nothing.
    let (status, shared) = server.call(reqwest::Method::POST, &format!("/emails/{id}/share"), Some(json!({}))).await;
    assert_eq!(status, 200, "{shared}");
    assert_eq!((shared["object"].as_str(), shared["id"].as_str()), (Some("email"), Some(id.as_str())));
    let url = shared["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&server.url("/shared?token=")), "{url}");
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{csp}");
    let text = page.text().await.unwrap();
    assert!(text.contains("<iframe title=\"Preview\" sandbox srcdoc=") && text.contains("Plain Text"), "{text}");
    let tampered = format!("{}x", url);
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 404);
    // Html sent alone: the Plain Text view shows the text part recipients got, derived from it.
    let alone = json!({"from": "News <news@acme.test>", "to": "reader@example.com", "subject": "Alone", "html": "<p>Only <b>html</b> here</p>"});
    let (_, alone) = server.call(reqwest::Method::POST, "/emails", Some(alone)).await;
    let alone = alone["id"].as_str().unwrap();
    let (_, link) = server.call(reqwest::Method::POST, &format!("/emails/{alone}/share"), Some(json!({}))).await;
    let page = reqwest::get(link["url"].as_str().unwrap()).await.unwrap().text().await.unwrap();
    assert!(page.contains("<section id=\"text\"><h2>Plain Text</h2><pre>Only html here</pre>"), "{page}");
    let (status, too_long) =
        server.call(reqwest::Method::POST, &format!("/emails/{id}/share"), Some(json!({"expires_in": "49h"}))).await;
    assert_eq!(status, 422, "{too_long}");
    assert!(too_long["message"].as_str().unwrap().contains("expires_in"), "{too_long}");
    let (_, short) =
        server.call(reqwest::Method::POST, &format!("/emails/{id}/share"), Some(json!({"expires_in": "1s"}))).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = reqwest::get(short["url"].as_str().unwrap()).await.unwrap();
    assert_eq!(expired.status(), 410);
    assert!(expired.text().await.unwrap().contains("expired"));
}

/// A hostile email shared and opened in a real browser (Debian's headless Chromium): no
/// script of it runs — not in `<script>`, not in `onerror`/`onload`/`onfocus`, not through a
/// `javascript:` link, a meta refresh, a nested frame, a form or a stylesheet — and its remote
/// image loads only when asked for (which also shows that the recorder would see a request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_email_runs_nothing_on_its_share_page() {
    let Some(chromium) =
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists())
    else {
        panic!("chromium is not installed: ./scripts/test.sh installs it");
    };
    let server = serve();
    let landing = Landing::start();
    let l = format!("http://127.0.0.1:{}", landing.port);
    let html = format!(
        r#"<html><head><script>fetch('{l}/pwned-script')</script><meta http-equiv="refresh" content="0;url={l}/pwned-refresh">
<link rel="stylesheet" href="{l}/pwned-link"><style>@import url({l}/pwned-css);</style></head>
<body onload="fetch('{l}/pwned-body')"><img src="x" onerror="fetch('{l}/pwned-onerror')">
<img src="{l}/remote.png" alt="remote"><a id="j" href="javascript:fetch('{l}/pwned-js')">click</a>
<svg onload="fetch('{l}/pwned-svg')"></svg><iframe src="{l}/pwned-iframe"></iframe>
<form action="{l}/pwned-form"><input autofocus onfocus="fetch('{l}/pwned-focus')"></form>
<object data="{l}/pwned-object"></object><video src="{l}/pwned-video" autoplay></video></body></html>"#
    );
    let (status, sent) = server
        .call(
            reqwest::Method::POST,
            "/emails",
            Some(json!({
                "from": "a@acme.test", "to": "delivered@resend.dev",
                "subject": format!("<script>fetch('{l}/pwned-subject')</script>"),
                "html": html,
                "text": format!("</pre><script>fetch('{l}/pwned-text')</script>"),
            })),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let id = sent["id"].as_str().unwrap();
    let (_, shared) = server.call(reqwest::Method::POST, &format!("/emails/{id}/share"), Some(json!({}))).await;
    let url = shared["url"].as_str().unwrap().to_string();

    let open = |url: String| {
        let profile = tempfile::tempdir().unwrap();
        let out = Command::new(chromium)
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--virtual-time-budget=5000", "--dump-dom"])
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let dom = open(url.clone());
    assert!(dom.contains("<iframe title=\"Preview\" sandbox=\"\""), "{dom}");
    assert!(dom.contains("&lt;script&gt;fetch("), "the subject and text are shown as text: {dom}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(landing.requests(), Vec::<String>::new(), "nothing of the email reached the network");

    // Asked for, remote images load — and still nothing runs.
    open(format!("{url}&images=1"));
    std::thread::sleep(Duration::from_millis(500));
    let seen = landing.requests();
    assert!(seen.iter().any(|r| r.starts_with("GET /remote.png")), "{seen:?}");
    assert!(seen.iter().all(|r| !r.contains("pwned")), "{seen:?}");
}
