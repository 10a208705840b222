//! Helpers shared by the process-level tests.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::path::PathBuf;
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

/// The real peers (smtp-sink, aiosmtpd) and the free-port / wait-for-listener helpers, shared
/// with the SMTP adapter's tests.
#[path = "../../adapters/smtp/tests/peers/mod.rs"]
pub mod peers;
