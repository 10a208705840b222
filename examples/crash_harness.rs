//! A process for the crash tests (`tests/crash.rs`): it accepts deterministic batches (every
//! other one with an idempotency key) on a redb file while a worker delivers them, and it is
//! killed with SIGKILL at random moments.
//!
//! ```text
//! crash_harness --db PATH --outbox PATH --run K --start N   # accept batches N, N+1, … and deliver
//! crash_harness --db PATH --outbox PATH --drain             # deliver until nothing is left
//! crash_harness ... --smtp URL                               # deliver over SMTP instead
//! ```
//!
//! stdout: `ACK <batch> <run> <id>,<id>,…` once a batch is acknowledged (flushed at once).
//! The outbox file gets one line `<email id>` per message handed to the transport, written
//! with a single append, so the test can count duplicates after any kill. With `--smtp`, the
//! SMTP transport relays to URL instead, and the test counts what the server received.

use async_trait::async_trait;
use mailroom::core::email::EmailId;
use mailroom::core::ports::{DeliveryReport, Envelope, RecipientStatus, Storage, Transport, TransportError};
use mailroom::core::request::EmailRequest;
use mailroom::core::worker::WorkerConfig;
use mailroom::core::{BatchMode, BatchOptions, Engine, Error};
use mailroom::redb::RedbStorage;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The lease the crash tests run with: short, so that emails a killed worker held are
/// picked up again within the test's time.
const LEASE: Duration = Duration::from_millis(800);
/// Likewise for a killed request's idempotency marker.
const IN_FLIGHT: Duration = Duration::from_millis(500);

/// The content of item `i` of batch `n`: the test regenerates it to check what was stored.
/// Unkeyed batches are tagged with the run that sent them (a batch cut off by a kill and
/// sent again by the next run is a second, separate batch); keyed ones are not (their retry
/// must be the same payload).
pub fn batch(n: u64, run: u64) -> Vec<EmailRequest> {
    let size = 1 + (n * 7 + 3) % 10;
    let run = if key(n).is_some() { "keyed".to_string() } else { run.to_string() };
    (0..size)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "from": "Crash Test <crash@acme.test>",
                "to": [format!("user{n}-{i}@example.com")],
                "subject": format!("batch {n} item {i}"),
                "html": format!("<p>batch {n} item {i} of {size}</p>"),
                "tags": [
                    {"name": "batch", "value": n.to_string()},
                    {"name": "run", "value": run},
                    {"name": "item", "value": i.to_string()},
                    {"name": "size", "value": size.to_string()},
                ],
            }))
            .unwrap_or_default()
        })
        .collect()
}

/// Every other batch carries an idempotency key; its key does not depend on the run, so a
/// retry after a kill is a replay.
pub fn key(n: u64) -> Option<String> {
    n.is_multiple_of(2).then(|| format!("batch-{n}"))
}

#[derive(Debug)]
struct FileOutbox(Mutex<std::fs::File>);

#[async_trait]
impl Transport for FileOutbox {
    async fn send_raw(&self, envelope: &Envelope, _message: &[u8]) -> Result<DeliveryReport, TransportError> {
        let line = format!("{}\n", envelope.email_id);
        if let Ok(mut f) = self.0.lock() {
            // One write of a short line to an O_APPEND file: atomic with respect to a kill.
            let _ = f.write_all(line.as_bytes());
        }
        Ok(DeliveryReport::uniform(envelope, RecipientStatus::Delivered))
    }
}

struct Args {
    db: PathBuf,
    outbox: PathBuf,
    run: u64,
    start: u64,
    drain: bool,
    smtp: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args { db: PathBuf::new(), outbox: PathBuf::new(), run: 0, start: 0, drain: false, smtp: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => a.db = value()?.into(),
            "--outbox" => a.outbox = value()?.into(),
            "--run" => a.run = value()?.parse().map_err(|e| format!("--run: {e}"))?,
            "--start" => a.start = value()?.parse().map_err(|e| format!("--start: {e}"))?,
            "--drain" => a.drain = true,
            "--smtp" => a.smtp = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), String> {
    let a = args()?;
    let store = Arc::new(RedbStorage::open(&a.db).map_err(|e| e.to_string())?);
    let engine = Engine::builder(store.clone()).idempotency_in_flight_lease(IN_FLIGHT).build();
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&a.outbox).map_err(|e| e.to_string())?;
    let transport: Arc<dyn Transport> = match &a.smtp {
        None => Arc::new(FileOutbox(Mutex::new(file))),
        Some(url) => {
            let target = mailroom::smtp::RelayTarget::parse(url).map_err(|e| e.to_string())?;
            Arc::new(
                mailroom::smtp::SmtpTransport::new(mailroom::smtp::SmtpConfig::relay(target))
                    .map_err(|e| e.to_string())?,
            )
        }
    };
    let config = WorkerConfig::default().concurrency(4).claim_batch(8).lease(LEASE).max_idle(Duration::from_millis(50));
    let worker = engine.worker(transport, config);

    if a.drain {
        // Deliver until nothing is due or held: leases of killed workers lapse on their own.
        loop {
            worker.run_until_idle().await.map_err(|e| e.to_string())?;
            if store.next_due().await.map_err(|e| e.to_string())?.is_none() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    tokio::spawn(async move { worker.run(std::future::pending()).await });
    let mut out = std::io::stdout();
    for n in a.start.. {
        let options = BatchOptions::new(BatchMode::Strict).keyed(key(n));
        let accepted = loop {
            match engine.send_batch(batch(n, a.run), options.clone()).await {
                Ok(r) => break r,
                // The killed run's in-flight marker still holds the key: retry shortly, as a
                // client would.
                Err(Error::ConcurrentIdempotentRequests) => tokio::time::sleep(IN_FLIGHT / 4).await,
                Err(e) => return Err(e.to_string()),
            }
        };
        let ids: Vec<String> = accepted.data.iter().map(|r| r.id.to_string()).collect();
        if key(n).is_some() {
            // A retry of ours: the same answer, nothing stored twice.
            let again = engine.send_batch(batch(n, a.run), options).await.map_err(|e| e.to_string())?;
            let again: Vec<EmailId> = again.data.iter().map(|r| r.id).collect();
            if again != accepted.data.iter().map(|r| r.id).collect::<Vec<_>>() {
                return Err(format!("replay of batch {n} answered other ids"));
            }
        }
        writeln!(out, "ACK {n} {} {}", a.run, ids.join(",")).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}
