//! Ingests many emails through the engine into a redb file, with durable commits, and
//! reports the rate and the bytes on disk per email against the payload (the clients' JSON):
//! the memory check of the performance section runs this under
//! `/usr/bin/time -v`.
//!
//! ```text
//! cargo build --release --example ingest
//! /usr/bin/time -v target/release/examples/ingest --db /tmp/million.redb --emails 1000000
//! ```
//!
//! Each email is the benchmarks' shape: 2 KB of html, 2 recipients, 2 tags; 100 per batch.

use mailroom::core::{BatchOptions, Engine};
use mailroom::redb::RedbStorage;
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut db = std::path::PathBuf::from("ingest.redb");
    let mut emails: u64 = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--db" => db = args.next().ok_or("--db needs a path")?.into(),
            "--emails" => emails = args.next().ok_or("--emails needs a number")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let engine = Engine::builder(Arc::new(RedbStorage::open(&db)?)).build();
    let started = Instant::now();
    let rounds = emails.div_ceil(100);
    // The payload: what the clients sent, as JSON (the body of their requests).
    let mut payload = 0u64;
    for round in 0..rounds {
        let batch = mailroom::core::testkit::sample_batch(round);
        payload += batch.iter().map(|r| serde_json::to_vec(r).map_or(0, |v| v.len() as u64)).sum::<u64>();
        engine.send_batch(batch, BatchOptions::default()).await?;
        if (round + 1) % 1000 == 0 {
            let done = (round + 1) * 100;
            eprintln!("{done} emails, {:.0}/s", done as f64 / started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    drop(engine);
    let file = std::fs::metadata(&db)?.len();
    let n = rounds * 100;
    println!(
        "{{\"emails\": {n}, \"seconds\": {secs:.1}, \"emails_per_second\": {:.0}, \"file_bytes\": {file}, \"bytes_per_email\": {}, \"payload_bytes_per_email\": {}, \"file_to_payload\": {:.2}}}",
        n as f64 / secs,
        file / n.max(1),
        payload / n.max(1),
        file as f64 / payload.max(1) as f64
    );
    Ok(())
}
