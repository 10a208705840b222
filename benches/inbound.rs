//! `inbound`: mail in as users run it, against postfix in the same run.
//!
//! - `inbound/mailroom`: postfix's `smtp-source -s 8` (8 sessions, 2 KB messages) into
//!   `mailroom serve --inbound` on a durable redb file, for a receiving domain verified against
//!   a dnsmasq started here. Every message is routed, authenticated (SPF, DKIM, DMARC through
//!   the configured nameserver), summarized and committed before its `250`.
//! - `inbound/postfix_smtpd_baseline`: the same into a loopback postfix's own `smtpd`, which
//!   also writes each message to its queue (the hold queue) before answering.
//!
//! Throughput is messages per second; the ratio that matters is mailroom / postfix (goal ≥ 2).
//! After criterion's two figures it runs nine back-to-back pairs (`INBOUND_PAIRS=n` for more)
//! and prints each pair's ratio and their median: the figure to quote on a shared machine.
//! `cargo bench --bench inbound` (needs postfix, smtp-source and dnsmasq: `./scripts/test.sh`
//! installs them).

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../adapters/dns/tests/support/dnsmasq.rs"]
mod dnsmasq;
#[path = "../adapters/smtp/tests/peers/mod.rs"]
mod peers;

const TOKEN: &str = "re_bench_inbound_key_01";
const MESSAGES: u64 = 1000;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn postfix(dir: &Path) -> peers::Postfix {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/setup-postfix.sh");
    // Accepted mail waits in the hold queue: smtpd writes it to the queue, nothing delivers it.
    let hold = "smtpd_recipient_restrictions = check_recipient_access static:HOLD, permit_mynetworks, reject_unauth_destination\n";
    peers::Postfix::start(&script, &dir.join("postfix"), None, hold)
}

/// `mailroom serve --inbound` with `in.test` receiving and verified.
fn mailroom(dir: &Path, rt: &tokio::runtime::Runtime) -> (Killed, dnsmasq::Dnsmasq, u16) {
    let (port, smtp, dns_port) = (peers::free_port(), peers::free_port(), dnsmasq::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-key", TOKEN, "--rate-limit", "0", "--db"])
        .arg(dir.join("inbound.redb"))
        .args(["--inbound", &format!("127.0.0.1:{smtp}"), "--dns", &format!("127.0.0.1:{dns_port}")])
        .env("MAILROOM_DOMAINS_HOST", "mx.mailroom.test")
        .env("MAILROOM_INBOUND_MESSAGES_PER_MINUTE", "100000000")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    peers::wait_listening(port, &mut child, "mailroom serve");
    let server = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let dns = rt.block_on(async {
        let client = reqwest::Client::new();
        let d: serde_json::Value = client
            .post(format!("{base}/domains"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"name": "in.test", "capabilities": {"receiving": "enabled"}}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        // Records with a TTL, as published records have (dnsmasq's default for its own is 0,
        // which would make every message ask the nameserver again).
        let mut options = vec!["--host-record=mx.mailroom.test,127.0.0.1".to_string(), "--local-ttl=300".to_string()];
        for r in d["records"].as_array().expect("records") {
            let name = r["name"].as_str().expect("name");
            let fqdn = if name == "@" { "in.test".to_string() } else { format!("{name}.in.test") };
            let value = match r["type"].as_str().expect("type") {
                "MX" => format!("{} {}", r["priority"], r["value"].as_str().expect("value")),
                _ => r["value"].as_str().expect("value").to_string(),
            };
            options.push(dnsmasq::record(&fqdn, r["type"].as_str().expect("type"), &value));
        }
        options.push(dnsmasq::record("sender.test", "TXT", "v=spf1 ip4:127.0.0.1 -all"));
        options.push(dnsmasq::record("_dmarc.sender.test", "TXT", "v=DMARC1; p=none"));
        let dns = dnsmasq::start_at(dns_port, &options);
        let id = d["id"].as_str().expect("id");
        client.post(format!("{base}/domains/{id}/verify")).bearer_auth(TOKEN).send().await.expect("verify");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: serde_json::Value = client
                .get(format!("{base}/domains/{id}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if got["status"] == "verified" {
                break;
            }
            assert!(Instant::now() < deadline, "not verified: {got}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        dns
    });
    (server, dns, smtp)
}

/// `smtp-source -s 8` sending `MESSAGES` 2 KB messages to `to` at `port`; the time it took.
fn source(port: u16, to: &str) -> Duration {
    let start = Instant::now();
    let out = Command::new("smtp-source")
        .args(["-s", "8", "-m", &MESSAGES.to_string(), "-l", "2048", "-f", "s@sender.test", "-t", to])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("smtp-source is installed with postfix");
    let took = start.elapsed();
    assert!(out.status.success(), "smtp-source: {}", String::from_utf8_lossy(&out.stderr));
    took
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let postfix = postfix(dir.path());
    let postfix_port = postfix.port;
    let (_serve, _dns, smtp) = mailroom(dir.path(), &rt);

    let mut g = c.benchmark_group("inbound");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.throughput(Throughput::Elements(MESSAGES));
    g.bench_function("mailroom", |b| b.iter_custom(|iters| (0..iters).map(|_| source(smtp, "anyone@in.test")).sum()));
    g.bench_function("postfix_smtpd_baseline", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| source(postfix_port, "r@mx.test")).sum())
    });
    g.finish();
    paired(smtp, postfix_port);
}

/// The ratio as pairs taken back to back. Why beside criterion's figures: criterion measures
/// one side for seconds and then the other, and on a shared machine the load changes between
/// them (single runs ranged from 1.1 × to 2.3 ×); a pair shares its moment, and the order
/// alternates (mailroom first, then postfix first) so neither side always runs on a warmer
/// disk. Prints each pair's ratio and their median.
fn paired(mailroom: u16, postfix: u16) {
    let rounds: usize = std::env::var("INBOUND_PAIRS").ok().and_then(|v| v.parse().ok()).unwrap_or(9);
    let mut ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (m, p) = if round % 2 == 0 {
            let m = source(mailroom, "anyone@in.test");
            (m, source(postfix, "r@mx.test"))
        } else {
            let p = source(postfix, "r@mx.test");
            (source(mailroom, "anyone@in.test"), p)
        };
        let per_s = |d: Duration| MESSAGES as f64 / d.as_secs_f64();
        let ratio = p.as_secs_f64() / m.as_secs_f64();
        println!(
            "inbound/paired {round}: mailroom {:.0} msgs/s, postfix {:.0} msgs/s, {ratio:.2} ×",
            per_s(m),
            per_s(p)
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(median) = ratios.get(ratios.len() / 2) {
        println!("inbound/paired median: {median:.2} × postfix over {rounds} pairs (goal ≥ 2)");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
