//! Three `mailroom serve` processes on one PostgreSQL database, relaying to an SMTP server that
//! saves what it accepts, SIGKILLed at random while clients post keyed batches to any of them
//! (a client whose server died retries the same key on another).
//!
//! Checked: every acknowledged id survives with its content; a key is never answered with two
//! different results; nothing reaches the SMTP server twice; and when a process is killed for
//! good, the emails it had claimed are taken over by the others once its lease lapses (30 s):
//! nothing is left waiting a minute and a half after the last kill.
//!
//! `MAILROOM_PG_CRASH_KILLS` (default 12) and `MAILROOM_CRASH_SEED` tune it.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;
#[path = "../adapters/postgres/tests/support/mod.rs"]
mod pg;

use common::crash::{KEY, Serve, batch, exchange, size_of};

use mailroom::core::Storage;
use mailroom::core::email::{AccountId, EmailId, EmailRecord, PageRequest};
use mailroom::core::lifecycle::EventKind;
use mailroom::core::worker::AMBIGUOUS_REASON;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: u64 = 4;
const SERVERS: usize = 3;

#[derive(Default)]
struct Shared {
    /// batch → its acknowledged ids.
    acked: BTreeMap<u64, Vec<EmailId>>,
    /// Answers no client should ever see.
    wrong: Vec<String>,
    /// 409s for a key whose first request died with its process (retried until answered).
    in_flight_409s: usize,
}

/// A client: posts keyed batches one after another to the servers in turn, retrying each key
/// (on another server when one is down) until it is answered.
fn client(c: u64, ports: Vec<u16>, shared: Arc<Mutex<Shared>>, stop: Arc<AtomicBool>) {
    let mut k = 0;
    let mut turn = c as usize;
    while !stop.load(Ordering::Relaxed) {
        let n = c + k * CLIENTS;
        k += 1;
        let body = batch(n).to_string();
        let key = format!("pg-crash-batch-{n}");
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            turn += 1;
            let port = ports[turn % ports.len()];
            let Some((status, reply)) =
                exchange(port, "POST", "/emails/batch", body.as_bytes(), &[("idempotency-key", &key)])
            else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let mut s = shared.lock().unwrap();
            if status == 503 || (status == 409 && reply["name"] == "concurrent_idempotent_requests") {
                // Shedding at start, or the key's first request died with its process and its
                // marker has not lapsed yet: a client retries.
                s.in_flight_409s += usize::from(status == 409);
                drop(s);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if status != 200 {
                s.wrong.push(format!("batch {n}: {status} {reply}"));
                return;
            }
            let ids: Vec<EmailId> =
                reply["data"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().parse().unwrap()).collect();
            if let Some(before) = s.acked.get(&n).filter(|b| **b != ids) {
                let wrong = format!("batch {n}: answered {ids:?} after {before:?}");
                s.wrong.push(wrong);
            }
            s.acked.insert(n, ids);
            break;
        }
    }
}

/// Every email, whole, from the database.
async fn load_all(store: &dyn Storage) -> BTreeMap<EmailId, EmailRecord> {
    let account = AccountId::default();
    let mut all = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.list_emails(&account, PageRequest::new(Some(100), after, None).unwrap()).await.unwrap();
        for e in &page.items {
            let r = store.get_email(&account, e.id).await.unwrap().unwrap();
            all.insert(e.id, r);
        }
        if !page.has_more {
            return all;
        }
        after = page.items.last().map(|e| e.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_killed_at_random_lose_nothing_and_send_nothing_twice() {
    let kills: u64 = std::env::var("MAILROOM_PG_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let seed: u64 = std::env::var("MAILROOM_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7) | 1
    });
    println!("postgres crash test: seed {seed}, {kills} kills over {SERVERS} servers");
    let mut rng = common::Rng(seed);
    let cluster = pg::Cluster::start();
    let store = pg::store(&cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    let smtp = common::peers::smtpd(&["--save", saved.to_str().unwrap()]);
    let ports: Vec<u16> = (0..SERVERS).map(|_| common::peers::free_port()).collect();
    let configs: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let config = dir.path().join(format!("s{i}.toml"));
            let text = format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\nlink_key_file = \"{}\"\n\
                 [database]\nurl = \"{}\"\nmax_connections = 8\n[[api_keys]]\nname = \"operator\"\ntoken = \"{KEY}\"\n\
                 [delivery]\nrelay = \"smtp://127.0.0.1:{}?tls=none\"\nconnections = 2\n\
                 [rate_limits]\nper_key = 100000\nper_account = 100000\n",
                dir.path().join(format!("s{i}.sock")).display(),
                dir.path().join("link-key").display(),
                cluster.url(),
                smtp.port
            );
            std::fs::write(&config, text).unwrap();
            config
        })
        .collect();
    let mut servers: Vec<Option<Serve>> = Vec::new();
    for (config, port) in configs.iter().zip(&ports) {
        servers.push(Some(Serve::start(config, *port)));
    }

    let shared = Arc::new(Mutex::new(Shared::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (shared, stop, ports) = (shared.clone(), stop.clone(), ports.clone());
            std::thread::spawn(move || client(c, ports, shared, stop))
        })
        .collect();
    let started = Instant::now();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.range(200, 1500))).await;
        let victim = rng.range(0, SERVERS as u64) as usize;
        let err = servers[victim].take().unwrap().kill();
        assert!(!err.contains("panicked"), "seed {seed}: {err}");
        tokio::time::sleep(Duration::from_millis(rng.range(0, 500))).await;
        servers[victim] = Some(Serve::start(&configs[victim], ports[victim]));
        assert!(shared.lock().unwrap().wrong.is_empty(), "seed {seed}: {:?}", shared.lock().unwrap().wrong);
    }
    // The last kill is for good: what that process had claimed must be taken over.
    tokio::time::sleep(Duration::from_millis(rng.range(200, 800))).await;
    let gone = rng.range(0, SERVERS as u64) as usize;
    let err = servers[gone].take().unwrap().kill();
    assert!(!err.contains("panicked"), "seed {seed}: {err}");
    let last_kill = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    // Everything ends sent or failed (in doubt) once the dead process's leases lapse.
    loop {
        let all = load_all(&store).await;
        let waiting: Vec<_> = all
            .values()
            .filter(|r| !matches!(r.state.last_event(), Some(EventKind::Sent | EventKind::Failed)))
            .map(|r| (r.state.id, r.state.last_event()))
            .collect();
        if waiting.is_empty() {
            break;
        }
        assert!(
            last_kill.elapsed() < Duration::from_secs(90),
            "seed {seed}: {} emails still waiting 90 s after the last kill, e.g. {:?}",
            waiting.len(),
            waiting.first()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained = last_kill.elapsed();
    drop(servers);
    let shared = Arc::try_unwrap(shared).ok().unwrap().into_inner().unwrap();
    assert!(shared.wrong.is_empty(), "seed {seed}: {:?}", shared.wrong);
    let all = load_all(&store).await;
    let received = common::saved_counts(&saved);
    drop(smtp);

    // Every acknowledged id survives, with its content; no email exists without an answer.
    for (n, ids) in &shared.acked {
        assert_eq!(ids.len(), size_of(*n), "seed {seed}");
        for (i, id) in ids.iter().enumerate() {
            let r = all.get(id).unwrap_or_else(|| panic!("seed {seed}: acknowledged {id} (batch {n}) is lost"));
            assert_eq!(r.content.subject, format!("batch {n} item {i}"), "seed {seed}");
        }
    }
    let acked: usize = shared.acked.values().map(Vec::len).sum();
    assert_eq!(all.len(), acked, "seed {seed}: stored emails no client was answered for (a key replayed as new?)");
    // Nothing twice; sent means received once; failed only for a hand-over in doubt.
    let mut failed = 0;
    for (id, r) in &all {
        let n = received.get(id).copied().unwrap_or(0);
        assert!(n <= 1, "seed {seed}: {id} reached the server {n} times");
        match r.state.last_event() {
            Some(EventKind::Sent) => assert_eq!(n, 1, "seed {seed}: {id} sent but received {n} times"),
            Some(EventKind::Failed) => {
                failed += 1;
                let reason = r.state.events.last().and_then(|e| e.reason.as_deref()).unwrap_or_default();
                assert!(reason.starts_with(AMBIGUOUS_REASON), "seed {seed}: {id} failed: {reason}");
            }
            other => panic!("seed {seed}: {id} ended {other:?}"),
        }
    }
    println!(
        "{} emails in {} batches over {} kills; {failed} in doubt ended failed; {} received; {} retries met a dead \
         process's in-flight key; queue drained {drained:?} after the last kill; {:?} in all",
        all.len(),
        shared.acked.len(),
        kills + 1,
        received.values().sum::<usize>(),
        shared.in_flight_409s,
        started.elapsed()
    );
    assert!(all.len() > 100, "seed {seed}: too little work to prove anything");
}
