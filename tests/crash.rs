//! Crash tests: a real process accepts batches and delivers them on a redb file; it is killed
//! with SIGKILL at random moments and restarted on the same file, at least 50 times. After
//! every kill the file is opened and checked; at the end the survivors are drained and the
//! outbox (one line per hand-over) is checked for duplicates.
//!
//! `MAILROOM_CRASH_KILLS` (default 50) and `MAILROOM_CRASH_SEED` (default: the clock) tune it;
//! a failure prints the seed.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;

use mailroom::core::email::{EmailId, EmailRecord};
use mailroom::core::lifecycle::EventKind;
use mailroom::core::worker::AMBIGUOUS_REASON;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The batch shape `crash_harness` uses (kept in step with `batch` there).
fn size_of(n: u64) -> usize {
    (1 + (n * 7 + 3) % 10) as usize
}
fn keyed(n: u64) -> bool {
    n.is_multiple_of(2)
}

fn tag<'a>(r: &'a EmailRecord, name: &str) -> &'a str {
    r.content.tags.iter().find(|t| t.name == name).map(|t| t.value.as_str()).unwrap_or_else(|| panic!("no tag {name}"))
}

fn outbox_counts(path: &Path) -> HashMap<EmailId, usize> {
    let mut counts = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts.entry(line.trim().parse::<EmailId>().expect("outbox line is an id")).or_default() += 1;
    }
    counts
}

#[derive(Default)]
struct Ledger {
    /// (batch, run tag) → ids, for every acknowledged batch.
    acked: BTreeMap<(u64, String), Vec<EmailId>>,
    /// Claimed but not handed over when a process was killed: must be delivered later.
    stranded: BTreeSet<EmailId>,
    /// Handed over but not recorded when a process was killed: must never be tried again.
    in_doubt: BTreeMap<EmailId, usize>,
}

/// How many times each email reached the other side: the harness's outbox file, or the
/// messages an SMTP server saved (one file each, named by their Message-ID's email id).
type Counter<'a> = &'a dyn Fn() -> HashMap<EmailId, usize>;

fn check(db: &Path, count: Counter<'_>, ledger: &mut Ledger, seed: u64) {
    let all = common::load_all(db);
    let handed = count();
    // Every acknowledged id exists, with all its content and its first event.
    for ((n, _), ids) in &ledger.acked {
        for (i, id) in ids.iter().enumerate() {
            let r = all.get(id).unwrap_or_else(|| panic!("seed {seed}: acknowledged {id} (batch {n}) is lost"));
            assert_eq!(r.content.subject, format!("batch {n} item {i}"), "seed {seed}");
            assert_eq!(
                r.content.html.as_deref(),
                Some(format!("<p>batch {n} item {i} of {}</p>", size_of(*n)).as_str())
            );
            assert_eq!(r.content.to[0].address(), format!("user{n}-{i}@example.com"));
            assert_eq!(r.state.events.first().map(|e| e.kind), Some(EventKind::Queued), "seed {seed}");
        }
    }
    // Batches are all or nothing, and an idempotent batch exists once.
    let mut groups: BTreeMap<(u64, String), Vec<(usize, EmailId)>> = BTreeMap::new();
    for (id, r) in &all {
        let n: u64 = tag(r, "batch").parse().unwrap();
        groups.entry((n, tag(r, "run").to_string())).or_default().push((tag(r, "item").parse().unwrap(), *id));
    }
    for ((n, run), items) in &groups {
        let mut idx: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
        idx.sort_unstable();
        assert_eq!(idx, (0..size_of(*n)).collect::<Vec<_>>(), "seed {seed}: batch {n} run {run} is partial or doubled");
        assert_eq!(keyed(*n), run == "keyed", "seed {seed}");
        if let Some(acked) = ledger.acked.get(&(*n, run.clone())) {
            let mut stored: Vec<(usize, EmailId)> = items.clone();
            stored.sort_unstable();
            assert_eq!(&stored.into_iter().map(|(_, id)| id).collect::<Vec<_>>(), acked, "seed {seed}");
        }
    }
    // Nothing is handed over twice, and nothing is handed over before its hand-over is durable.
    for (id, n) in &handed {
        assert!(*n <= 1, "seed {seed}: {id} handed over {n} times");
        let r = all.get(id).unwrap_or_else(|| panic!("seed {seed}: handed over {id} is not stored"));
        let recorded = r.state.events.iter().any(|e| matches!(e.kind, EventKind::Sent | EventKind::Failed));
        assert!(r.state.handed_over || recorded, "seed {seed}: {id} left without a durable hand-over mark");
    }
    for (id, r) in &all {
        if r.state.handed_over {
            ledger.in_doubt.entry(*id).or_insert_with(|| handed.get(id).copied().unwrap_or(0));
        } else if r.state.claim.is_some() && r.state.last_event() == Some(EventKind::Queued) {
            ledger.stranded.insert(*id);
        }
    }
}

fn spawn(harness: &Path, db: &Path, outbox: &Path, extra: &[String]) -> std::process::Child {
    Command::new(harness)
        .arg("--db")
        .arg(db)
        .arg("--outbox")
        .arg(outbox)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the harness")
}

#[test]
fn killed_at_random_moments_nothing_is_lost_or_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.log");
    let kills: u64 = std::env::var("MAILROOM_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    crash_test(dir.path(), kills, (20, 250), &[], &|| outbox_counts(&outbox), EventKind::Delivered);
}

/// The same over SMTP: the harness relays to an aiosmtpd server that saves every message it
/// accepts, and is killed mid-transaction as often as anywhere else.
#[test]
fn killed_while_delivering_over_smtp_nothing_is_lost_or_received_twice() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved");
    std::fs::create_dir(&saved).unwrap();
    // Offering PIPELINING: kills also land while a dot waits for the next envelope.
    let server = common::peers::smtpd(&["--save", saved.to_str().unwrap(), "--pipelining"]);
    let port = server.port;
    let kills: u64 = std::env::var("MAILROOM_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(50) / 2;
    let url = format!("smtp://127.0.0.1:{port}?tls=none");
    // Longer lives: a hand-over over SMTP takes round trips, and a debug build starts slower.
    crash_test(
        dir.path(),
        kills,
        (60, 700),
        &["--smtp".into(), url],
        &|| common::saved_counts(&saved),
        EventKind::Sent,
    );
    drop(server);
}

/// The first start on a new file, killed at moments spread over the making of the file. redb
/// writes a new file in place and its magic number last; a process killed in between (about a
/// millisecond) used to leave a file no later start could open. Now the path holds nothing or
/// a whole store, and a store that opens again after every kill.
#[test]
fn killed_while_making_its_file_the_store_still_opens() {
    let seed: u64 = std::env::var("MAILROOM_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7) | 1
    });
    let mut rng = common::Rng(seed);
    let harness = common::example("crash_harness");
    let start = |dir: &Path| {
        let (db, outbox) = (dir.join("new.redb"), dir.join("outbox.log"));
        let args = ["--run".to_string(), "0".into(), "--start".into(), "0".into()];
        (spawn(&harness, &db, &outbox, &args), db)
    };
    // How long after its start a process has made its file, on this machine and build: the
    // kills below are spread over twice that.
    let dir = tempfile::tempdir().unwrap();
    let begun = Instant::now();
    let (mut child, db) = start(dir.path());
    while !db.exists() {
        assert!(begun.elapsed() < Duration::from_secs(30), "the harness made no file");
        std::thread::sleep(Duration::from_micros(200));
    }
    let made = begun.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    println!("crash test seed {seed}; a file is made {made:?} after the start");

    let (mut existed, mut absent) = (0, 0);
    for round in 0..80 {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, db) = start(dir.path());
        std::thread::sleep(Duration::from_micros(rng.range(0, 2 * made.as_micros() as u64)));
        child.kill().unwrap();
        child.wait().unwrap();
        if !db.exists() {
            absent += 1;
            continue;
        }
        existed += 1;
        // Opens, and then the directory holds nothing but the store and the outbox.
        let emails = common::load_all(&db);
        assert!(emails.values().all(|r| !r.state.events.is_empty()), "seed {seed}, round {round}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "new.redb" && n != "outbox.log")
            .collect();
        assert!(names.is_empty(), "seed {seed}, round {round}: left behind {names:?}");
    }
    println!("{existed} kills after the file was made, {absent} before");
    assert!(existed > 0 && absent > 0, "seed {seed}: the kills missed the making of the file");
}

/// Runs the harness `kills` times, killing it at a random moment each time, then lets it
/// drain, and checks the invariants after every kill and at the end. `count` says how often
/// each email reached the other side; a delivered email ends `done`.
/// Each run lives a random number of milliseconds within `life`.
fn crash_test(dir: &Path, kills: u64, life: (u64, u64), transport: &[String], count: Counter<'_>, done: EventKind) {
    let seed: u64 = std::env::var("MAILROOM_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7) | 1
    });
    println!("crash test seed {seed}, {kills} kills");
    let mut rng = common::Rng(seed);
    let harness = common::example("crash_harness");
    let (db, outbox) = (dir.join("crash.redb"), dir.join("outbox.log"));
    let mut ledger = Ledger::default();
    let mut next = 0u64;
    let started = Instant::now();

    for run in 0..kills {
        // Bounded in time: the whole test stays within a few minutes even on a slow machine.
        assert!(started.elapsed() < Duration::from_secs(600), "seed {seed}: crash test ran out of time");
        let mut args = vec!["--run".into(), run.to_string(), "--start".into(), next.to_string()];
        args.extend_from_slice(transport);
        let mut child = spawn(&harness, &db, &outbox, &args);
        let stdout = child.stdout.take().unwrap();
        let reader =
            std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>());
        std::thread::sleep(Duration::from_millis(rng.range(life.0, life.1)));
        child.kill().expect("SIGKILL");
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).ok();
        assert!(!status.success(), "seed {seed}: the harness stopped before it was killed");
        assert!(!err.contains("Error"), "seed {seed}: the harness failed on its own: {err}");
        for line in reader.join().unwrap() {
            let parts: Vec<&str> = line.split(' ').collect();
            let [_, n, r, ids] = parts[..] else { panic!("seed {seed}: bad line {line:?}") };
            let n: u64 = n.parse().unwrap();
            let run_tag = if keyed(n) { "keyed".to_string() } else { r.to_string() };
            let ids: Vec<EmailId> = ids.split(',').map(|s| s.parse().unwrap()).collect();
            if let Some(before) = ledger.acked.get(&(n, run_tag.clone())) {
                assert_eq!(before, &ids, "seed {seed}: a keyed batch answered differently after a restart");
            }
            ledger.acked.insert((n, run_tag), ids);
            next = next.max(n + 1);
        }
        check(&db, count, &mut ledger, seed);
    }

    // Let the last process deliver everything, with no more kills.
    let mut args = vec!["--drain".to_string()];
    args.extend_from_slice(transport);
    let mut child = spawn(&harness, &db, &outbox, &args);
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "seed {seed}: draining did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = common::load_all(&db);
    let handed = count();
    let mut failed = 0;
    for (id, r) in &all {
        let n = handed.get(id).copied().unwrap_or(0);
        match r.state.last_event() {
            Some(k) if k == done => assert_eq!(n, 1, "seed {seed}: delivered {id} handed over {n} times"),
            Some(EventKind::Failed) => {
                failed += 1;
                let reason = r.state.events.last().and_then(|e| e.reason.as_deref()).unwrap_or_default();
                assert!(reason.starts_with(AMBIGUOUS_REASON), "seed {seed}: {reason}");
                assert!(ledger.in_doubt.contains_key(id), "seed {seed}: {id} failed without being in doubt");
            }
            other => panic!("seed {seed}: {id} ended {other:?}"),
        }
    }
    for id in &ledger.stranded {
        // Picked up again after the lease: delivered, or handed over by a later run that was
        // itself killed mid-send (then it is in doubt and failed, never re-sent).
        let last = all[id].state.last_event();
        let ok = last == Some(done) || (last == Some(EventKind::Failed) && ledger.in_doubt.contains_key(id));
        assert!(ok, "seed {seed}: stranded claim {id} ended {last:?}");
    }
    for (id, at_kill) in &ledger.in_doubt {
        assert_eq!(handed.get(id).copied().unwrap_or(0), *at_kill, "seed {seed}: {id} was attempted again");
    }
    assert!(failed <= (kills as usize) * 4, "seed {seed}: more ambiguous failures than kills × concurrency");
    println!(
        "{} emails in {} acknowledged batches over {kills} kills; {} claims recovered after their lease, {} hand-overs in doubt ({} failed), in {:?}",
        all.len(),
        ledger.acked.len(),
        ledger.stranded.len(),
        ledger.in_doubt.len(),
        failed,
        started.elapsed()
    );
    assert!(all.len() > 100, "seed {seed}: the processes did too little work to prove anything");
}
