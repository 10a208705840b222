//! Webhooks with real processes: `mailroom serve` on a redb file posting to a receiver that
//! records every request (an HTTP server on 127.0.0.1 in this test).
//!
//! - Killed with SIGKILL at random moments while clients send and the dispatcher delivers:
//!   after the restarts every event of every acknowledged email reaches the receiver, each
//!   under one `svix-id` (the same on a repeat, with the same body), none lost.
//! - A receiver that hangs: the attempt fails after 15 s and the event is delivered on the
//!   schedule's next try, 5 s later.
//!
//! `MAILROOM_WEBHOOK_CRASH_KILLS` (default 12) and `MAILROOM_CRASH_SEED` tune the first.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "re_webhook_crash_0001";

/// One request the receiver got: (svix-id, body).
type Got = (String, String);

/// A receiver on 127.0.0.1: records every request; the first `hang_first` requests get no
/// answer for `hang` (the connection is then dropped), the others 200 after `delay`.
fn receiver(delay: Duration, hang_first: usize, hang: Duration) -> (u16, Arc<Mutex<Vec<Got>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let seen = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let (g, seen) = (g.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut len, mut id) = (0usize, String::new());
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap_or((h, ""));
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            "svix-id" => id = v.trim().to_string(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    g.lock().unwrap().push((id, String::from_utf8_lossy(&body).into_owned()));
                    if seen.fetch_add(1, Ordering::SeqCst) < hang_first {
                        std::thread::sleep(hang);
                        return;
                    }
                    std::thread::sleep(delay);
                    if out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, got)
}

fn exchange(port: u16, method: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
    let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(body).unwrap() };
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(&body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(&out[9..12]).ok()?.parse().ok()?;
    Some((status, serde_json::from_slice(&out[split + 4..]).unwrap_or(Value::Null)))
}

fn start(dir: &Path, port: u16) -> Child {
    let config = dir.join("mailroom.toml");
    if !config.exists() {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\npath = \"{}\"\n\n[[api_keys]]\nname = \"operator\"\ntoken = \"{KEY}\"\n\n[rate_limits]\nper_key = 100000\nper_account = 100000\n",
            dir.join("serve.redb").display()
        );
        std::fs::write(&config, text).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("MAILROOM_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::peers::wait_listening(port, &mut child, "mailroom serve");
    child
}

/// Every (email id, event type) of a type in `types` the API shows for the emails in `ids`,
/// and how many of those emails are finished (delivered, or failed: a hand-over in doubt at a
/// kill ends `failed`).
fn expected(port: u16, ids: &BTreeSet<String>, types: &[&str]) -> (BTreeSet<(String, String)>, usize) {
    let mut out = BTreeSet::new();
    let mut finished = 0;
    for id in ids {
        let (status, e) = exchange(port, "GET", &format!("/emails/{id}"), &Value::Null).unwrap();
        assert_eq!(status, 200, "{e}");
        finished += usize::from(matches!(e["last_event"].as_str(), Some("delivered" | "failed")));
        for ev in e["events"].as_array().unwrap() {
            let t = format!("email.{}", ev["type"].as_str().unwrap());
            if types.contains(&t.as_str()) {
                out.insert((id.clone(), t));
            }
        }
    }
    (out, finished)
}

#[test]
fn a_killed_server_delivers_every_event_after_restart_under_the_same_ids() {
    let kills: u64 = std::env::var("MAILROOM_WEBHOOK_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let seed: u64 = std::env::var("MAILROOM_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0fc0_ffee);
    let mut rng = common::Rng(seed | 1);
    let dir = tempfile::tempdir().unwrap();
    let port = common::peers::free_port();
    // A slow receiver (20 ms per request), so that kills land while deliveries are in flight.
    let (hook_port, got) = receiver(Duration::from_millis(20), 0, Duration::ZERO);
    let mut server = start(dir.path(), port);
    let events = ["email.queued", "email.sent", "email.delivered"];
    let (status, hook) = exchange(
        port,
        "POST",
        "/webhooks",
        &json!({"endpoint": format!("http://127.0.0.1:{hook_port}/in"), "events": events}),
    )
    .unwrap();
    assert_eq!(status, 201, "{hook}");

    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut n = 0u64;
    for k in 0..kills {
        // Send for a random while, then kill mid-work.
        let until = Instant::now() + Duration::from_millis(rng.range(100, 600));
        while Instant::now() < until {
            n += 1;
            let items: Vec<Value> = (0..5)
                .map(|i| json!({"from": "Acme <a@acme.test>", "to": format!("delivered+{n}-{i}@resend.dev"), "subject": "x", "text": "x"}))
                .collect();
            if let Some((200, r)) = exchange(port, "POST", "/emails/batch", &json!(items)) {
                for d in r["data"].as_array().unwrap() {
                    acked.insert(d["id"].as_str().unwrap().to_string());
                }
            }
        }
        server.kill().unwrap();
        server.wait().unwrap();
        println!("kill {k}: {} acknowledged, {} requests received", acked.len(), got.lock().unwrap().len());
        server = start(dir.path(), port);
    }

    // After the last restart, everything arrives.
    let deadline = Instant::now() + Duration::from_secs(120);
    let want = loop {
        // Every email finished, so its events are final.
        let (want, finished) = expected(port, &acked, &events);
        let done = finished == acked.len();
        let have: BTreeSet<(String, String)> = got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| {
                let v: Value = serde_json::from_str(b).unwrap();
                (v["data"]["email_id"].as_str().unwrap().to_string(), v["type"].as_str().unwrap().to_string())
            })
            .collect();
        if done && want.is_subset(&have) {
            break want;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: {} of {} events still missing",
            want.difference(&have).count(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let got = got.lock().unwrap().clone();
    // One svix-id per event, one event per svix-id; a repeat sends the same bytes.
    let mut by_id: HashMap<&str, &str> = HashMap::new();
    let mut by_event: BTreeMap<(String, String), &str> = BTreeMap::new();
    for (id, body) in &got {
        if let Some(first) = by_id.insert(id, body) {
            assert_eq!(first, body, "seed {seed}: {id} was sent with two bodies");
        }
        let v: Value = serde_json::from_str(body).unwrap();
        let key = (v["data"]["email_id"].as_str().unwrap().to_string(), v["type"].as_str().unwrap().to_string());
        if let Some(other) = by_event.insert(key.clone(), id) {
            assert_eq!(other, id, "seed {seed}: {key:?} was sent under two ids");
        }
    }
    let unexpected: Vec<_> = by_event.keys().filter(|k| !want.contains(*k)).collect();
    assert!(unexpected.is_empty(), "seed {seed}: events no email shows: {unexpected:?}");
    let repeats = got.len() - by_id.len();
    println!(
        "{kills} kills: {} emails, {} events, {} requests ({repeats} repeats of a delivery a kill interrupted)",
        acked.len(),
        want.len(),
        got.len()
    );
    assert!(acked.len() > 50, "the test sent too little to mean anything");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn a_hanging_receiver_times_out_at_15_seconds_and_the_retry_follows() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::peers::free_port();
    let (hook_port, got) = receiver(Duration::ZERO, 1, Duration::from_secs(25));
    let mut server = start(dir.path(), port);
    let (status, hook) = exchange(
        port,
        "POST",
        "/webhooks",
        &json!({"endpoint": format!("http://127.0.0.1:{hook_port}/in"), "events": ["email.queued"]}),
    )
    .unwrap();
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap();
    let started = Instant::now();
    let (status, _) = exchange(
        port,
        "POST",
        "/emails",
        &json!({"from": "Acme <a@acme.test>", "to": "delivered@resend.dev", "subject": "x", "text": "x"}),
    )
    .unwrap();
    assert_eq!(status, 200);
    // The second request is the retry; it must come after the 15 s timeout and the 5 s wait.
    while got.lock().unwrap().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(40), "no retry: {:?}", got.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(19), "retried after {waited:?}");
    let got = got.lock().unwrap().clone();
    assert_eq!(got[0], got[1], "the retry is the same message");
    let (_, attempts) =
        exchange(port, "GET", &format!("/webhooks/{hook_id}/events/{}/attempts", got[0].0), &Value::Null).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut attempts = attempts;
    while attempts["data"].as_array().map_or(0, Vec::len) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        attempts = exchange(port, "GET", &format!("/webhooks/{hook_id}/events/{}/attempts", got[0].0), &Value::Null)
            .unwrap()
            .1;
    }
    let data = attempts["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{attempts}");
    assert_eq!(data[0]["http_status_code"], 200, "{attempts}");
    assert!(data[1]["http_status_code"].is_null(), "{attempts}");
    assert!(data[1]["response"].as_str().unwrap().contains("15 s"), "{attempts}");
    server.kill().unwrap();
    server.wait().unwrap();
}
