//! The dashboard in a real browser: `mailroom serve` on a redb file, Debian's headless
//! Chromium driven over WebDriver by `chromedriver`, DNS from a real dnsmasq. Each page's
//! screenshot is written to `target/dashboard-screenshots/` for a person to look at.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;
#[path = "../adapters/dns/tests/support/dnsmasq.rs"]
mod dnsmasq;
mod webdriver;

use webdriver::Browser;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const KEY: &str = "re_dashboard_operator_0123456789abcdef";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(candidates: &[&str]) -> &'static str {
    let found = candidates.iter().find(|p| std::path::Path::new(p).exists());
    let found = found.unwrap_or_else(|| panic!("none of {candidates:?} is installed: ./scripts/test.sh installs them"));
    Box::leak(found.to_string().into_boxed_str())
}

/// A TCP listener that counts connections: a request from the hostile email would land here.
fn beacon() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut s = stream;
            let mut buf = [0u8; 2048];
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, hits)
}

/// A webhook endpoint answering 200 to everything.
fn webhook_receiver() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = vec![0u8; 1 << 16];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            });
        }
    });
    port
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(KEY);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// Writes a screenshot of the page, after checking that every control on it has a label (a
/// `<label>` or an `aria-label`) a screen reader can read.
async fn shot(c: &Browser, name: &str) {
    let unlabelled = c
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]\
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())\
             .map(e => e.outerHTML)",
        )
        .await;
    assert_eq!(unlabelled, json!([]), "controls without a label on {name}");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await;
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn text_of(c: &Browser, css: &str) -> String {
    c.find(css).await.text().await
}

async fn wait_for_text(c: &Browser, css: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(e) = c.try_find(css).await
            && e.try_text().await.unwrap_or_default().contains(want)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{css} never showed {want:?}: {}", c.source().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the address contains `part` (a click does not wait for the navigation it starts).
async fn wait_for_url(c: &Browser, part: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !c.current_url().await.contains(part) {
        assert!(Instant::now() < deadline, "never reached an address with {part:?}: {}", c.current_url().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(c: &Browser, base: &str) {
    c.goto(&format!("{base}/dashboard/")).await;
    assert!(c.current_url().await.ends_with("/dashboard/sign-in"), "signed out: the sign-in page");
    c.find("#key").await.send_keys(KEY).await;
    c.find("form button[type=submit]").await.click().await;
    wait_for_text(c, "h1", "Emails").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let chromium = binary(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
    let chromedriver = binary(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    let dns_port = dnsmasq::free_port();
    let (beacon_port, beacon_hits) = beacon();
    let hook_port = webhook_receiver();

    // The server: redb, DNS from dnsmasq (started once the domain's records are known), the
    // background domain checks off so that only the dashboard's "Verify" looks.
    let dir = tempfile::tempdir().unwrap();
    let port = common::peers::free_port();
    let config = dir.path().join("mailroom.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[database]\npath = \"{}\"\n[dns]\nnameserver = \"127.0.0.1:{dns_port}\"\n\
             [domains]\nverify = false\n[webhooks]\nallow_private = true\n[rate_limits]\nper_key = 0\nper_account = 0\n\
             [[api_keys]]\nname = \"operator\"\ntoken = \"{KEY}\"\n",
            dir.path().join("d.redb").display()
        ),
    )
    .unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::peers::wait_listening(port, &mut serve, "mailroom serve");
    let _serve = Killed(serve);
    let base = format!("http://127.0.0.1:{port}");
    let api = Api { http: reqwest::Client::new(), base: base.clone() };

    // What the pages will show, made through the API as an SDK would.
    let (s, report) = api
        .call(
            reqwest::Method::POST,
            "/emails",
            Some(json!({
                "from": "Acme <news@acme.test>", "to": ["delivered@resend.dev"], "subject": "Quarterly report",
                "html": "<h1>Quarterly report</h1><p>Numbers are up.</p>", "text": "Quarterly report: numbers are up.",
            })),
        )
        .await;
    assert_eq!(s, 200, "{report}");
    let report = report["id"].as_str().unwrap().to_string();
    let hostile_html = format!(
        "<p id=x>hello</p><script>document.title='pwned';parent.document.title='pwned';new Image().src='http://127.0.0.1:{beacon_port}/script'</script>\
         <img src=\"http://127.0.0.1:{beacon_port}/remote.png\" onerror=\"parent.document.title='pwned'\">\
         <svg onload=\"parent.document.title='pwned'\"></svg><iframe src=\"http://127.0.0.1:{beacon_port}/frame\"></iframe>\
         <meta http-equiv=\"refresh\" content=\"0;url=http://127.0.0.1:{beacon_port}/refresh\">\
         <link rel=stylesheet href=\"http://127.0.0.1:{beacon_port}/style.css\"><a href=\"javascript:parent.document.title='pwned'\">x</a>"
    );
    let (s, hostile) = api
        .call(
            reqwest::Method::POST,
            "/emails",
            Some(json!({"from": "news@acme.test", "to": "delivered+hostile@resend.dev",
                        "subject": "<script>alert('subject')</script>", "html": hostile_html})),
        )
        .await;
    assert_eq!(s, 200, "{hostile}");
    let hostile = hostile["id"].as_str().unwrap().to_string();
    let (s, _) = api
        .call(
            reqwest::Method::POST,
            "/emails",
            Some(json!({"from": "news@acme.test", "to": "bounced@resend.dev", "subject": "Bounce me", "text": "x"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, invalid) = api
        .call(
            reqwest::Method::POST,
            "/emails",
            Some(json!({"from": "not an address", "to": "a@b.test", "subject": "x", "text": "x"})),
        )
        .await;
    assert_eq!((s, invalid["name"].as_str()), (422, Some("validation_error")));
    let (s, domain) = api.call(reqwest::Method::POST, "/domains", Some(json!({"name": "acme.test"}))).await;
    assert_eq!(s, 201, "{domain}");
    let (s, hook) = api
        .call(
            reqwest::Method::POST,
            "/webhooks",
            Some(json!({"endpoint": format!("http://127.0.0.1:{hook_port}/hook"), "events": ["email.sent", "email.delivered"]})),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    // One more email after the webhook exists, so that it has deliveries.
    let (s, _) = api
        .call(reqwest::Method::POST, "/emails", Some(json!({"from": "news@acme.test", "to": "delivered@resend.dev", "subject": "For the webhook", "text": "x"})))
        .await;
    assert_eq!(s, 200);

    // The browser.
    let driver_port = common::peers::free_port();
    let mut driver = Command::new(chromedriver)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::peers::wait_listening(driver_port, &mut driver, "chromedriver");
    let _driver = Killed(driver);
    let caps = json!({"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args":
        ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]}});
    let c = Browser::start(&format!("http://127.0.0.1:{driver_port}"), caps).await;

    // Signed out, every page leads to sign-in; a wrong key is refused there.
    c.goto(&format!("{base}/dashboard/emails/{report}")).await;
    assert!(c.current_url().await.ends_with("/sign-in"));
    c.find("#key").await.send_keys("re_wrong").await;
    c.find("form button[type=submit]").await.click().await;
    wait_for_text(&c, "[role=alert]", "not a valid API key").await;
    shot(&c, "sign-in").await;
    sign_in(&c, &base).await;
    shot(&c, "emails").await;

    // Find the email by search, open it, switch its tabs.
    c.find("#q").await.send_keys("quarterly").await;
    c.find("form.filters button[type=submit]").await.click().await;
    wait_for_url(&c, "q=quarterly").await;
    wait_for_text(&c, "table.list tbody", "Quarterly report").await;
    let rows = c.find_all("table.list tbody tr").await;
    assert_eq!(rows.len(), 1, "only the matching email");
    c.link("delivered@resend.dev").await.click().await;
    wait_for_text(&c, "h1", "Quarterly report").await;
    assert!(c.find("#preview").await.displayed().await, "Preview first");
    assert!(!c.find("#plain").await.displayed().await);
    c.link("Plain Text").await.click().await;
    assert!(c.find("#plain").await.displayed().await);
    assert!(!c.find("#preview").await.displayed().await);
    assert!(text_of(&c, "#plain").await.contains("numbers are up"));
    c.link("HTML").await.click().await;
    assert!(text_of(&c, "#source").await.contains("<h1>Quarterly report</h1>"), "the source, as text");
    c.link("Preview").await.click().await;
    let events = text_of(&c, ".timeline").await;
    assert!(events.contains("delivered"), "{events}");
    // The request that sent it, with its log.
    assert!(text_of(&c, "#req-h + ul").await.contains("POST /emails"));
    shot(&c, "email").await;

    // Share it, then open the link signed out.
    c.find("form[action$='/share'] button").await.click().await;
    wait_for_text(&c, ".share", "Anyone with this link").await;
    let url = c.find("#share-url").await.prop("value").await.unwrap();
    assert!(url.starts_with(&format!("{base}/shared?token=")), "{url}");
    c.delete_cookies().await;
    c.goto(&url).await;
    wait_for_text(&c, "h1", "Quarterly report").await;
    shot(&c, "shared").await;
    c.goto(&format!("{base}/dashboard/emails")).await;
    assert!(c.current_url().await.ends_with("/sign-in"), "the share link signs no one in");
    sign_in(&c, &base).await;

    // Logs: errors only, the details, "Help me fix".
    c.goto(&format!("{base}/dashboard/logs")).await;
    c.find("#status option[value=error]").await.click().await;
    c.find("form.filters button[type=submit]").await.click().await;
    wait_for_url(&c, "status=error").await;
    wait_for_text(&c, "ul.logs", "422").await;
    let statuses = c.find_all("ul.logs .status").await;
    for s in &statuses {
        assert!(s.text().await.parse::<u16>().unwrap() >= 400, "errors only");
    }
    c.find("ul.logs > li > details > summary").await.click().await;
    assert!(text_of(&c, "ul.logs details").await.contains("not an address"), "the request body");
    c.find("details.drawer > summary").await.click().await;
    let panel = c.find("details.drawer .panel").await;
    assert!(panel.displayed().await);
    assert!(panel.text().await.contains("names the field"), "the guidance for validation_error");
    shot(&c, "logs").await;

    // Suppressions: the bounced address, removed.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.goto(&format!("{base}/dashboard/suppressions")).await;
        if c.source().await.contains("bounced@resend.dev") {
            break;
        }
        assert!(Instant::now() < deadline, "the hard bounce never reached the suppression list");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shot(&c, "suppressions").await;

    // Metrics: the four emails accepted, one of them bounced (it has, by now: it is listed).
    c.goto(&format!("{base}/dashboard/metrics")).await;
    assert_eq!(text_of(&c, "#total-received").await, "4");
    let rate: f64 = text_of(&c, "#total-bounce-rate").await.trim_end_matches(" %").parse().unwrap();
    let days = c.find_all("table.metrics tbody tr").await;
    assert!((7..=8).contains(&days.len()), "a row a day for a week: {}", days.len());
    // Sent counts every email that reached a server: the bounce among them.
    assert!((25.0..=33.34).contains(&rate), "one bounce among the three or four sent so far: {rate}");
    assert!(text_of(&c, "table.domains").await.contains("acme.test"), "the sending domain's row");
    c.find("#range option[value='24h']").await.click().await;
    c.find("form.filters button[type=submit]").await.click().await;
    wait_for_url(&c, "range=24h").await;
    assert!(text_of(&c, "main").await.contains("By hour"), "the last day, hour by hour");
    shot(&c, "metrics").await;
    c.goto(&format!("{base}/dashboard/suppressions")).await;
    c.find("button[aria-label='Remove bounced@resend.dev']").await.click().await;
    wait_for_text(&c, "[role=status]", "bounced@resend.dev was removed").await;
    assert!(c.try_find("table.list").await.is_err(), "the list is empty now");

    // Domains: verify against dnsmasq, which publishes what the page asks for.
    let mut records = vec![];
    for r in domain["records"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        let fqdn = if name.is_empty() || name == "@" { "acme.test".to_string() } else { format!("{name}.acme.test") };
        let rtype = r["type"].as_str().unwrap();
        let value = r["value"].as_str().unwrap();
        if rtype == "MX" {
            records.push(dnsmasq::record(&fqdn, "MX", &format!("{} {value}", r["priority"])));
            records.push(format!("--host-record={value},127.0.0.1"));
        } else {
            records.push(dnsmasq::record(&fqdn, rtype, value));
        }
    }
    let _dns = dnsmasq::start_at(dns_port, &records);
    c.goto(&format!("{base}/dashboard/domains")).await;
    shot(&c, "domains").await;
    c.link("acme.test").await.click().await;
    wait_for_text(&c, "h1", "acme.test").await;
    assert_eq!(text_of(&c, "#domain-status").await, "not started");
    assert!(!c.find_all("button.copy").await.is_empty(), "copy buttons");
    c.find("form[action$='/verify'] button").await.click().await;
    wait_for_text(&c, "[role=status]", "Checked just now").await;
    assert_eq!(text_of(&c, "#domain-status").await, "verified", "{}", c.source().await);
    shot(&c, "domain").await;

    // Webhooks: the endpoint, its deliveries, a replay.
    c.goto(&format!("{base}/dashboard/webhooks")).await;
    shot(&c, "webhooks").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.goto(&format!("{base}/dashboard/webhooks/{}", hook["id"].as_str().unwrap())).await;
        if c.source().await.contains("badge success") {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery succeeded: {}", c.source().await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    c.find("ul.logs > li > details > summary").await.click().await;
    shot(&c, "webhook").await;
    c.find("form[action$='/replay'] button").await.click().await;
    wait_for_text(&c, "[role=status]", "will be delivered again").await;

    // API keys: created (shown once), then revoked.
    c.goto(&format!("{base}/dashboard/api-keys")).await;
    c.find("#name").await.send_keys("From the browser").await;
    c.find("form[action$='/api-keys'] button[type=submit]").await.click().await;
    wait_for_text(&c, "[role=status]", "not shown again").await;
    let token = c.find("#new-token").await.prop("value").await.unwrap();
    let check = reqwest::Client::new().get(format!("{base}/emails")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(check.status().as_u16(), 200, "the new key works");
    shot(&c, "api-keys").await;
    c.find("button[aria-label='Revoke From the browser']").await.click().await;
    wait_for_text(&c, "table.list", "revoked").await;
    let check = reqwest::Client::new().get(format!("{base}/emails")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(check.status().as_u16(), 403, "revoked");

    // The hostile email: its subject is text, its HTML runs nothing and fetches nothing.
    c.goto(&format!("{base}/dashboard/emails/{hostile}")).await;
    assert_eq!(text_of(&c, "h1").await, "<script>alert('subject')</script>");
    let frame = c.find("#preview iframe").await;
    assert_eq!(frame.attr("sandbox").await.as_deref(), Some(""), "a sandbox without exceptions");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(c.title().await, "pwned");
    let ran: Value = c.execute("return [document.title, window.frames.length]").await;
    assert_ne!(ran[0], "pwned", "{ran}");
    // Inside the frame: the page is there, its script did not run.
    c.enter_frame(0).await;
    assert_eq!(text_of(&c, "#x").await, "hello");
    let inner: Value = c.execute("return document.title").await;
    assert_ne!(inner, "pwned");
    c.enter_parent_frame().await;
    shot(&c, "hostile-email").await;
    assert_eq!(beacon_hits.load(Ordering::SeqCst), 0, "the hostile email reached the network");
    // Remote images only on request: then the image (and only the image) is fetched.
    c.link("Load remote images").await.click().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while beacon_hits.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the remote image was not loaded on request");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(beacon_hits.load(Ordering::SeqCst), 1, "only the image, nothing the script or frames asked for");
    assert_ne!(c.title().await, "pwned");

    // On a phone-sized screen, the email page reflows (no sideways scrolling of the page).
    c.set_window_size(390, 844).await;
    c.goto(&format!("{base}/dashboard/emails/{report}")).await;
    let widths: Value = c.execute("return [document.documentElement.scrollWidth, window.innerWidth]").await;
    assert!(widths[0].as_u64().unwrap() <= widths[1].as_u64().unwrap() + 1, "no horizontal scroll: {widths}");
    shot(&c, "email-phone").await;

    // Signing out ends the session: the old cookie no longer opens a page.
    c.set_window_size(1280, 1000).await;
    let cookie = c.cookie("mailroom_session").await.expect("the session cookie");
    c.find("form.signout button").await.click().await;
    wait_for_url(&c, "/sign-in").await;
    let replayed = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/dashboard/emails"))
        .header("cookie", format!("mailroom_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status().as_u16(), 303, "a signed-out session's cookie is refused");
    c.close().await;
}
