//! Reopening a file whose process was killed (SIGKILL) while it wrote: redb repairs such a file
//! when it is opened, by reading all of it, unless the last commit recorded the allocator state
//! (`Options::quick_repair`). Either way every write the store acknowledged is there.
//!
//! The writer is a real process (this test binary run again, told what to do by a variable),
//! killed while it commits; the test then opens the file as `serve` would.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use mailroom_core::email::{AccountId, EmailId};
use mailroom_core::ports::Storage;
use mailroom_core::testkit::{new_email, t0};
use mailroom_redb::{Options, RedbStorage};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Set in the writer process: `<quick_repair>:<file>`.
const WRITER: &str = "MAILROOM_REPAIR_TEST_WRITER";
/// Acknowledged writes the test waits for before it kills the writer.
const ACKED_BEFORE_KILL: usize = 40;

/// The writer: inserts one email per write, printing its id once the write is durable, until
/// it is killed.
fn writer(spec: &str) {
    let (quick, file) = spec.split_once(':').expect("quick:file");
    let store = RedbStorage::open_with(file, Options::default().quick_repair(quick == "true")).expect("opens");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async {
        let account = AccountId::default();
        for i in 0u32.. {
            let at = t0() + chrono::Duration::seconds(i64::from(i));
            let email = new_email("default", at, (i % 60_000) as u16, None);
            let id = email.id;
            store.insert_emails(&account, vec![email], None).await.expect("a durable write");
            println!("acked {}", id.as_u128());
        }
    });
}

#[test]
fn a_killed_writers_file_reopens_with_every_acknowledged_write() {
    if let Ok(spec) = std::env::var(WRITER) {
        writer(&spec);
        return;
    }
    for quick in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store.redb");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_killed_writers_file_reopens_with_every_acknowledged_write", "--nocapture"])
            .env(WRITER, format!("{quick}:{}", file.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(id) = line.strip_prefix("acked ") {
                acked.push(EmailId::from_u128(id.parse().unwrap()));
                if acked.len() == ACKED_BEFORE_KILL {
                    // (`kill` is SIGKILL: the writer is mid-write, its file left unclosed.)
                    child.kill().unwrap();
                    break;
                }
            }
        }
        child.wait().unwrap();
        assert_eq!(acked.len(), ACKED_BEFORE_KILL, "the writer acknowledged too few writes (quick_repair {quick})");

        let store = RedbStorage::open_with(&file, Options::default().quick_repair(quick)).unwrap();
        // Without the recorded state the opening reads the whole file; with it, it reads none.
        assert_eq!(store.repaired_on_open().is_some(), !quick, "quick_repair {quick}");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            for id in &acked {
                let got = store.get_email(&AccountId::default(), *id).await.unwrap();
                assert!(got.is_some(), "acknowledged email {id} lost (quick_repair {quick})");
            }
            // And the reopened store writes.
            store
                .insert_emails(&AccountId::default(), vec![new_email("default", t0(), 60_001, None)], None)
                .await
                .unwrap();
        });
        drop(store);
        // Closed cleanly now: the next opening repairs nothing, whichever the mode.
        let again = RedbStorage::open_with(&file, Options::default()).unwrap();
        assert_eq!(again.repaired_on_open(), None);
    }
}
