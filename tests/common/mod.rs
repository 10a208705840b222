//! Helpers shared by the process-level tests.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The path of example `name`, built first if `cargo test` has not built it (as with
/// `cargo test --test NAME`).
pub fn example(name: &str) -> PathBuf {
    static BUILD: OnceLock<Mutex<()>> = OnceLock::new();
    let _one_build_at_a_time = BUILD.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    // Integration tests live in target/<profile>/deps; examples are built beside them.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--example", name]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "building example {name} failed");
    }
    bin
}
