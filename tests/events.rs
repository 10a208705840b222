//! The event-log example run twice on the same files, as a host following the log across a
//! restart would: the second run prints exactly what came after the first, no gap, no repeat.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use serde_json::Value;
use std::process::Command;

fn run(db: &std::path::Path, cursor: &std::path::Path, emails: &str) -> Vec<Value> {
    let out = Command::new(common::example("events")).arg(db).arg(cursor).arg(emails).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_follower_resumes_from_its_cursor_with_no_gap_and_no_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let (db, cursor) = (dir.path().join("app.redb"), dir.path().join("cursor"));
    let first = run(&db, &cursor, "3");
    let second = run(&db, &cursor, "2");
    let seqs: Vec<u64> = first.iter().chain(&second).map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{first:?} {second:?}");
    let types: Vec<&str> = first.iter().map(|e| e["type"].as_str().unwrap()).collect();
    // delivered@, bounced@ and complained@: each queued, sent, then its outcome; the bounce
    // and the complaint put their addresses on the suppression list.
    for t in ["email.queued", "email.sent", "email.delivered", "email.bounced", "email.complained", "suppression.added"]
    {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    // The second run's emails are all in the second run's output, and only there.
    let ids = |run: &[Value]| -> std::collections::BTreeSet<String> {
        run.iter().filter_map(|e| e["email_id"].as_str().map(str::to_string)).collect()
    };
    assert_eq!(ids(&second).len(), 2);
    assert!(ids(&first).is_disjoint(&ids(&second)));
}
