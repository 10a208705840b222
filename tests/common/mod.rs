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

/// A free TCP port on 127.0.0.1 (for a peer the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts connections on 127.0.0.1:`port`; `what` names it (and how to
/// install it) in the failure.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not listen on 127.0.0.1:{port}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
