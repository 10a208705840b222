//! Helpers shared by the process-level tests.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use mailroom::core::email::{AccountId, EmailId, EmailRecord, PageRequest};
use mailroom::core::ports::Storage;
use mailroom::redb::RedbStorage;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The path of example `name`, built by cargo once per test process. Always asking cargo
/// (a no-op right after `cargo test` built the examples) keeps a stale binary from an earlier
/// build from being tested, as `cargo test --test NAME` alone would not rebuild it.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    // Integration tests live in target/<profile>/deps; examples are built beside them.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    if built.insert(name.to_string()) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--example", name]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "building example {name} failed");
    }
    dir.join("examples").join(name)
}

/// xorshift64*: plenty for picking kill times in the crash tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Every email in the redb file at `db` (opened after its process is gone), by id.
pub fn load_all(db: &Path) -> BTreeMap<EmailId, EmailRecord> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = RedbStorage::open(db).unwrap_or_else(|e| panic!("reopen {}: {e}", db.display()));
        let account = AccountId::default();
        let mut all = BTreeMap::new();
        let mut after = None;
        loop {
            let page = store.list_emails(&account, PageRequest::new(Some(100), after, None).unwrap()).await.unwrap();
            for s in &page.items {
                let rec = store.get_email(&account, s.id).await.unwrap().expect("listed emails exist");
                all.insert(s.id, rec);
            }
            if !page.has_more {
                return all;
            }
            after = page.items.last().map(|s| s.id);
        }
    })
}

/// How many times each email reached an SMTP server that saved every message it accepted in
/// `dir` (one file each), by the email id in its Message-ID.
pub fn saved_counts(dir: &Path) -> HashMap<EmailId, usize> {
    let mut counts = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        // Beside each message N.eml the server writes its envelope, N.json.
        if entry.path().extension().is_none_or(|e| e != "eml") {
            continue;
        }
        let raw = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let id = raw
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <").or_else(|| l.strip_prefix("Message-Id: <")))
            .and_then(|v| v.split('@').next())
            .and_then(|v| v.parse::<EmailId>().ok());
        *counts.entry(id.unwrap_or_else(|| panic!("saved message without our Message-ID: {raw}"))).or_default() += 1;
    }
    counts
}

/// What the crash tests share (`exchange`, `batch`, `Serve`).
pub mod crash;

/// The real peers (smtp-sink, aiosmtpd) and the free-port / wait-for-listener helpers, shared
/// with the SMTP adapter's tests.
#[path = "../../adapters/smtp/tests/peers/mod.rs"]
pub mod peers;
