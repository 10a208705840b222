//! Ingests many emails through the engine into a redb file, with durable commits, and
//! reports the rate: the memory check of the performance section runs this under
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
    for round in 0..rounds {
        engine.send_batch(mailroom::core::testkit::sample_batch(round), BatchOptions::default()).await?;
        if (round + 1) % 1000 == 0 {
            let done = (round + 1) * 100;
            eprintln!("{done} emails, {:.0}/s", done as f64 / started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"emails\": {}, \"seconds\": {secs:.1}, \"emails_per_second\": {:.0}, \"file_bytes\": {}}}",
        rounds * 100,
        (rounds * 100) as f64 / secs,
        std::fs::metadata(&db)?.len()
    );
    Ok(())
}
