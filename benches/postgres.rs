//! `postgres`: ingest through `mailroom serve` as users run it, on PostgreSQL with 1, 2 and 4
//! processes sharing one database, against one process on the default redb file, in the same
//! run. Each configuration has a database (or file) of its own on one throw-away cluster
//! (`initdb` in a temp folder); every process relays what it accepts to postfix's
//! `smtp-sink`, so delivery runs beside ingest as it does in production.
//!
//! One iteration: 8 clients post 40 batches of 100 emails (`POST /emails/batch`), spread over
//! the processes in turn. Throughput is emails per second; the ratios that matter are
//! `pg1 / redb` (goal ≥ 0.5) and `pg2`, `pg4` against `pg1` (goal: never lower).
//!
//! Then delivery (group `deliver`), once the servers are gone: each iteration queues the same
//! 4,000 emails (loaded through the engine, not timed) and times 1, 2 or 4
//! `mailroom work --until-idle --connections 8` processes draining them to `smtp-sink`
//! together (process start-up included, as a user pays it), against one on the redb file.
//! `cargo bench --bench postgres` (needs PostgreSQL and postfix: `./scripts/test.sh` installs them)

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use mailroom::core::testkit::sample_batch;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../adapters/smtp/tests/peers/mod.rs"]
mod peers;
#[path = "../adapters/postgres/tests/support/mod.rs"]
mod pg;

const TOKEN: &str = "re_bench_operator_key_01";
const CLIENTS: usize = 8;
const BATCHES: usize = 40;

/// `mailroom serve` with `database` (a `[database]` table's lines), killed on drop.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(dir: &Path, name: &str, database: &str, smtp: u16) -> Serve {
        let port = peers::free_port();
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_socket = \"{}\"\nlink_key_file = \"{}\"\n\n[database]\n{database}\n\n\
             [[api_keys]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\n\n[rate_limits]\nper_key = 1000000\nper_account = 1000000\n\n\
             [delivery]\nrelay = \"smtp://127.0.0.1:{smtp}?tls=none\"\n",
            dir.join(format!("{name}.sock")).display(),
            dir.join("link-key").display(),
        );
        std::fs::write(&config, text).expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve");
        peers::wait_listening(port, &mut child, "mailroom serve");
        Serve { child, base: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `CLIENTS` tasks posting the batches, each to the processes in turn.
async fn post_all(client: &reqwest::Client, bases: Arc<Vec<String>>, bodies: Arc<Vec<Vec<u8>>>) {
    let per = bodies.len() / CLIENTS;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (client, bases, bodies) = (client.clone(), bases.clone(), bodies.clone());
            tokio::spawn(async move {
                for (i, body) in bodies[c * per..(c + 1) * per].iter().enumerate() {
                    let base = &bases[(c + i) % bases.len()];
                    let r = client
                        .post(format!("{base}/emails/batch"))
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("request");
                    assert!(r.status().is_success(), "{}", r.status());
                    let _ = r.bytes().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client");
    }
}

fn postgres(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = peers::smtp_sink(&[]);
    let cluster = pg::Cluster::start();
    drop(rt.block_on(pg::store(&cluster)));

    // Each configuration's servers start just before it is measured and stop right after:
    // a server measured earlier would still be delivering its backlog (tens of thousands of
    // emails ingested faster than they go out) and take CPU from the next one.
    let start = |name: &str| -> Vec<Serve> {
        if name == "redb" {
            let redb = format!("path = \"{}\"", dir.path().join("bench.redb").display());
            return vec![Serve::start(dir.path(), "redb", &redb, sink.port)];
        }
        let n: usize = name.trim_start_matches("pg").parse().expect("pgN");
        let url = rt.block_on(cluster.database(&format!("bench_{n}")));
        // The schema first, so that the processes do not all wait on the migration lock.
        drop(rt.block_on(mailroom::postgres::PostgresStorage::connect(&url, 1)).expect("schema"));
        (0..n)
            .map(|i| {
                Serve::start(
                    dir.path(),
                    &format!("pg{n}-{i}"),
                    &format!("url = \"{url}\"\nmax_connections = 8"),
                    sink.port,
                )
            })
            .collect()
    };

    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..BATCHES).map(|i| serde_json::to_vec(&sample_batch(i as u64)).expect("json")).collect());
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().expect("client");
    let mut group = c.benchmark_group("ingest");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements((BATCHES * 100) as u64));
    for name in ["redb", "pg1", "pg2", "pg4"] {
        let servers = start(name);
        let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.base.clone()).collect());
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (client, bases, bodies) = (client.clone(), bases.clone(), bodies.clone());
                async move {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        post_all(&client, bases.clone(), bodies.clone()).await;
                    }
                    t0.elapsed()
                }
            });
        });
        drop(servers);
    }
    group.finish();
    deliver(c, &rt, &cluster, dir.path(), sink.port);
}

/// Queues one iteration's emails (the ingest's batches) through an engine on `store`.
async fn queue(store: Arc<dyn mailroom::core::Storage>) {
    let engine = mailroom::core::Engine::builder(store).build();
    for i in 0..BATCHES {
        let batch = sample_batch(i as u64);
        engine.send_batch(batch, mailroom::core::BatchOptions::default()).await.expect("queued");
    }
}

/// `n` `mailroom work --until-idle` processes on one store (`store`: the flags that name it),
/// waited for; how many emails they handed over together.
fn work(n: usize, store: &[String], smtp: u16) -> u64 {
    let relay = format!("smtp://127.0.0.1:{smtp}?tls=none");
    let children: Vec<Child> = (0..n)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_mailroom"))
                .args(["work", "--until-idle", "--connections", "8", "--smtp", &relay])
                .args(store)
                .env_remove("RUST_LOG")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start work")
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().expect("work");
            assert!(out.status.success(), "work failed");
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("work's report");
            report["handed_over"].as_u64().expect("handed_over")
        })
        .sum()
}

fn deliver(c: &mut Criterion, rt: &tokio::runtime::Runtime, cluster: &pg::Cluster, dir: &Path, smtp: u16) {
    let emails = (BATCHES * 100) as u64;
    let file = dir.join("deliver.redb");
    let mut configs: Vec<(String, usize, Vec<String>)> =
        vec![("redb".into(), 1, vec!["--db".into(), file.display().to_string()])];
    let mut stores: Vec<Option<Arc<dyn mailroom::core::Storage>>> = vec![None];
    for n in [1usize, 2, 4] {
        let url = rt.block_on(cluster.database(&format!("deliver_{n}")));
        let store = rt.block_on(mailroom::postgres::PostgresStorage::connect(&url, 8)).expect("store");
        stores.push(Some(Arc::new(store)));
        configs.push((
            format!("pg{n}"),
            n,
            vec!["--db".into(), dir.join("unused.redb").display().to_string(), "--database-url".into(), url],
        ));
    }
    let mut group = c.benchmark_group("deliver");
    group.sample_size(10).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(emails));
    for ((name, n, flags), store) in configs.iter().zip(&stores) {
        group.bench_function(name.as_str(), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    match store {
                        Some(s) => rt.block_on(queue(s.clone())),
                        // The file is opened for the load and closed before `work` takes it.
                        None => {
                            let s = mailroom::redb::RedbStorage::open(&file).expect("redb");
                            rt.block_on(queue(Arc::new(s)));
                        }
                    }
                    let t0 = Instant::now();
                    let handed = work(*n, flags, smtp);
                    spent += t0.elapsed();
                    assert_eq!(handed, emails, "{name}: every queued email handed over once");
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group!(benches, postgres);
criterion_main!(benches);
