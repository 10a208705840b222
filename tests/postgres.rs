//! Two `mailroom serve` processes on one PostgreSQL database (a throw-away cluster): what one
//! accepts the other lists, an idempotency key means one email whichever server it reaches,
//! every email is delivered once, and a dashboard session works on both; and two
//! `mailroom work` processes drain one queue, each email sent once.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;
#[path = "../adapters/postgres/tests/support/mod.rs"]
mod pg;

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "re_postgres_operator_0123456789abcdef";

struct Serve(Child, u16);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &std::path::Path, name: &str, url: &str) -> Serve {
    let port = common::peers::free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\nlink_key_file = \"{}\"\n\
             [database]\nurl = \"{url}\"\n[rate_limits]\nper_key = 0\nper_account = 0\n\
             [[api_keys]]\nname = \"operator\"\ntoken = \"{KEY}\"\n",
            dir.join(format!("{name}.sock")).display(),
            dir.join("shared.link-key").display(),
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::peers::wait_listening(port, &mut child, "mailroom serve");
    Serve(child, port)
}

async fn call(port: u16, method: reqwest::Method, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut r = reqwest::Client::new().request(method, format!("http://127.0.0.1:{port}{path}")).bearer_auth(KEY);
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_database() {
    let cluster = pg::Cluster::start();
    // The schema is made once, before the servers race to it.
    drop(pg::store(&cluster).await);
    let dir = tempfile::tempdir().unwrap();
    let a = serve(dir.path(), "a", &cluster.url());
    let b = serve(dir.path(), "b", &cluster.url());
    let post = reqwest::Method::POST;

    // Emails accepted by either server, half with keys; the same key on the other server is
    // the same email.
    let mut ids = Vec::new();
    for i in 0..40 {
        let port = if i % 2 == 0 { a.1 } else { b.1 };
        let key = (i % 4 == 0).then(|| format!("key-{i}"));
        let body = json!({"from": "a@acme.test", "to": format!("delivered+{i}@resend.dev"), "subject": format!("n{i}"), "text": "x"});
        let (s, r) = call(port, post.clone(), "/emails", key.as_deref(), Some(body.clone())).await;
        assert_eq!(s, 200, "{r}");
        let id = r["id"].as_str().unwrap().to_string();
        if let Some(k) = &key {
            let other = if port == a.1 { b.1 } else { a.1 };
            let (s, again) = call(other, post.clone(), "/emails", Some(k), Some(body)).await;
            assert_eq!((s, again["id"].as_str()), (200, Some(id.as_str())), "a key is one email on every server");
        }
        ids.push(id);
    }

    // Every email is delivered, once, whichever worker claimed it; both servers see all.
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let (s, e) = call(b.1, reqwest::Method::GET, &format!("/emails/{id}"), None, None).await;
            assert_eq!(s, 200, "{e}");
            if e["last_event"] == "delivered" {
                let kinds: Vec<&str> =
                    e["events"].as_array().unwrap().iter().map(|v| v["type"].as_str().unwrap()).collect();
                assert_eq!(kinds.iter().filter(|k| **k == "sent").count(), 1, "{kinds:?}");
                assert_eq!(kinds.iter().filter(|k| **k == "delivered").count(), 1, "{kinds:?}");
                break;
            }
            assert!(Instant::now() < deadline, "{id} not delivered: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (_, page) = call(a.1, reqwest::Method::GET, "/emails?limit=100", None, None).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 40, "one email per key, none twice");
    // Usage is the database's: both servers count the 40, each one once.
    for port in [a.1, b.1] {
        let (s, u) = call(port, reqwest::Method::GET, "/usage", None, None).await;
        assert_eq!(
            (s, &u["emails"]["daily"]["sent"], &u["emails"]["monthly"]["sent"]),
            (200, &json!(40), &json!(40)),
            "{u}"
        );
    }

    // A dashboard session made on one server opens pages on the other (one link key).
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r =
        http.post(format!("http://127.0.0.1:{}/dashboard/sign-in", a.1)).form(&[("key", KEY)]).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let r =
        http.get(format!("http://127.0.0.1:{}/dashboard/emails", b.1)).header("cookie", cookie).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("n39"));
}

/// `mailroom work` on PostgreSQL: two processes drain one queue together, each email handed to
/// the SMTP server once, and every email ends `sent` (a relay took it; what happens beyond is
/// the relay's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_work_processes_drain_one_queue_once() {
    use mailroom::core::{BatchOptions, Engine};
    let cluster = pg::Cluster::start();
    let store = std::sync::Arc::new(pg::store(&cluster).await);
    let engine = Engine::builder(store.clone()).build();
    let mut ids = Vec::new();
    for round in 0..3 {
        let batch = mailroom::core::testkit::sample_batch(round);
        let sent = engine.send_batch(batch, BatchOptions::default()).await.unwrap();
        ids.extend(sent.data.into_iter().map(|s| s.id));
    }
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let smtp = common::peers::smtpd(&["--save", saved.to_str().unwrap()]);
    let relay = format!("smtp://127.0.0.1:{}?tls=none", smtp.port);
    let workers: Vec<_> = (0..2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_mailroom"))
                .args([
                    "work",
                    "--until-idle",
                    "--connections",
                    "2",
                    "--database-url",
                    &cluster.url(),
                    "--smtp",
                    &relay,
                ])
                .arg("--db")
                .arg(dir.path().join(format!("unused-{i}.redb")))
                .env_remove("RUST_LOG")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut handed = 0;
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        handed += report["handed_over"].as_u64().unwrap();
    }
    assert_eq!(handed, 300, "every email handed over once, by one of the two");
    let counts = common::saved_counts(&saved);
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|n| *n == 1), "an email reached the server twice");
    let account = mailroom::core::email::AccountId::default();
    for id in ids {
        let record = mailroom::core::Storage::get_email(&*store, &account, id).await.unwrap().unwrap();
        assert_eq!(record.state.last_event().map(|e| e.as_str()), Some("sent"), "{id}");
    }
}
