//! The official SDKs against `mailroom serve`: npm `resend` 6.x and PyPI `resend` 2.x, pointed
//! at a server started here on a free 127.0.0.1 port, changing only the base URL
//! (`tests/sdk/node_sdk.mjs`, `tests/sdk/python_sdk.py`; `./scripts/test.sh` installs both).
//! The server is then stopped with SIGTERM and must exit cleanly.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;
#[path = "../adapters/dns/tests/support/dnsmasq.rs"]
mod dnsmasq;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn run_script(program: &str, script: &str, env: &[(&str, String)], checks: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let mut words = script.split(' ');
    let out = Command::new(program)
        .args(words.by_ref())
        .current_dir(&dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("{program} ({e}): ./scripts/test.sh installs the SDKs"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{program} {script}:\n{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("FAIL") && stdout.lines().filter(|l| l.starts_with("ok ")).count() >= checks, "{stdout}");
}

#[test]
fn the_official_node_and_python_sdks_work_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::peers::free_port();
    let dns_port = dnsmasq::free_port();
    let smtp_port = common::peers::free_port();
    let key = "re_sdk_test_key";
    let mut server = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        // The scripts poll in tight loops; the limit itself is tested in mailroom-http.
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-key", key, "--rate-limit", "0", "--db"])
        .arg(dir.path().join("sdk.redb"))
        .args(["--dns", &format!("127.0.0.1:{dns_port}"), "--inbound", &format!("127.0.0.1:{smtp_port}")])
        .env("MAILROOM_DOMAINS_HOST", "mx.mailroom.test")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::peers::wait_listening(port, &mut server, "mailroom serve");
    // A failed check must not leave the server running: killed on the way out unless it
    // already stopped.
    let mut server = Reaped(server);
    let server = &mut server.0;
    let base = format!("http://127.0.0.1:{port}");
    run_script("node", "node_sdk.mjs", &[("RESEND_BASE_URL", base.clone()), ("KEY", key.into())], 15);
    run_script("python3", "python_sdk.py", &[("RESEND_API_URL", base.clone()), ("KEY", key.into())], 15);
    // The account's resources: the suppression list (add, list and page by origin, get and
    // remove by id or address, the batch calls, a sandbox bounce listed with its email), the
    // request logs of those calls (paged both ways, read one by one), the API keys (renamed, and
    // when each was last used), the email metrics (totals, one email, by day and hour, by
    // domain), the usage.
    run_script("node", "node_account.mjs", &[("RESEND_BASE_URL", base.clone()), ("KEY", key.into())], 35);
    run_script("python3", "python_account.py", &[("RESEND_API_URL", base.clone()), ("KEY", key.into())], 22);
    // Webhooks, each SDK with a receiver of its own on 127.0.0.1: create, get, list, update,
    // events, attempts, replay, rotation, remove; deliveries verified by the SDKs' `verify`.
    run_script("node", "node_webhooks.mjs", &[("RESEND_BASE_URL", base.clone()), ("KEY", key.into())], 26);
    run_script("python3", "python_webhooks.py", &[("RESEND_API_URL", base.clone()), ("KEY", key.into())], 13);

    // Domains: each SDK creates one and writes its records; a dnsmasq then publishes them on
    // the port the server was told; each SDK verifies, updates, pages and removes.
    let node_records = dir.path().join("node-records.json");
    let py_records = dir.path().join("py-records.json");
    let node_env = |f: &std::path::Path| {
        vec![("RESEND_BASE_URL", base.clone()), ("KEY", key.to_string()), ("RECORDS", f.display().to_string())]
    };
    let py_env = |f: &std::path::Path| {
        vec![("RESEND_API_URL", base.clone()), ("KEY", key.to_string()), ("RECORDS", f.display().to_string())]
    };
    run_script("node", "node_domains.mjs create", &node_env(&node_records), 11);
    run_script("python3", "python_domains.py create", &py_env(&py_records), 5);
    let mut options = vec!["--host-record=mx.mailroom.test,127.0.0.1".to_string()];
    for file in [&node_records, &py_records] {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let domain = v["domain"].as_str().unwrap();
        for r in v["records"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let fqdn = if name == "@" { domain.to_string() } else { format!("{name}.{domain}") };
            let value = match r["type"].as_str().unwrap() {
                "MX" => format!("{} {}", r["priority"], r["value"].as_str().unwrap()),
                _ => r["value"].as_str().unwrap().to_string(),
            };
            options.push(dnsmasq::record(&fqdn, r["type"].as_str().unwrap(), &value));
        }
    }
    let _dns = dnsmasq::start_at(dns_port, &options);
    run_script("node", "node_domains.mjs verify", &node_env(&node_records), 10);
    run_script("python3", "python_domains.py verify", &py_env(&py_records), 6);

    // Receiving: the Node script's domain asked for receiving and is verified; two messages
    // arrive by SMTP, then the SDK lists, reads, downloads and forwards them.
    std::thread::sleep(Duration::from_secs(11)); // the listener's route cache
    let pdf = dir.path().join("invoice.pdf");
    std::fs::write(&pdf, b"%PDF-1.4\n% a test document\n%%EOF\n").unwrap();
    let png = dir.path().join("logo.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n0000").unwrap();
    let server_at = format!("127.0.0.1:{smtp_port}");
    let html = "<p>Your invoice <img src=\"cid:logo@sdk\"></p>";
    let mime = format!(
        "From: Ann <ann@sender.test>\r\nTo: billing@sdk-node.test\r\nSubject: Invoice\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: multipart/related; boundary=\"r\"\r\n\r\n\
         --r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--r\r\nContent-Type: image/png\r\n\
         Content-ID: <logo@sdk>\r\nContent-Disposition: inline; filename=\"logo.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {}\r\n--r--\r\n--m\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--m--\r\n",
        b64(&std::fs::read(&png).unwrap()),
        b64(&std::fs::read(&pdf).unwrap())
    );
    let eml = dir.path().join("invoice.eml");
    std::fs::write(&eml, mime).unwrap();
    for args in [
        vec!["--from", "ann@sender.test", "--to", "billing@sdk-node.test", "--data", eml.to_str().unwrap()],
        vec!["--from", "bob@sender.test", "--to", "hello@sdk-node.test", "--header", "Subject: Plain note"],
    ] {
        let out = Command::new("swaks").args(["--server", &server_at]).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("250 2.0.0 OK"), "swaks: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    run_script("node", "node_receiving.mjs", &[("RESEND_BASE_URL", base.clone()), ("KEY", key.into())], 20);
    run_script("python3", "python_receiving.py", &[("RESEND_API_URL", base.clone()), ("KEY", key.into())], 8);

    // SIGTERM: the server stops accepting, the worker finishes, the process exits 0.
    let _ = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut err).ok();
    assert!(status.success(), "serve exited with {status}: {err}");
    assert!(err.contains("shutting down") && err.contains("stopped"), "{err}");
}
