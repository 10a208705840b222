//! The official SDKs against `mailroom serve`: npm `resend` 6.x and PyPI `resend` 2.x, pointed
//! at a server started here on a free 127.0.0.1 port, changing only the base URL
//! (`tests/sdk/node_sdk.mjs`, `tests/sdk/python_sdk.py`; `./scripts/test.sh` installs both).
//! The server is then stopped with SIGTERM and must exit cleanly.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_script(program: &str, script: &str, env: &[(&str, String)], checks: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let out = Command::new(program)
        .arg(script)
        .current_dir(&dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("{program} ({e}): ./scripts/test.sh installs the SDKs"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{program} {script}:\n{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("FAIL") && stdout.lines().filter(|l| l.starts_with("ok ")).count() >= checks, "{stdout}");
}

#[test]
fn the_official_node_and_python_sdks_work_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::peers::free_port();
    let key = "re_sdk_test_key";
    let mut server = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        // The scripts poll in tight loops; the limit itself is tested in mailroom-http.
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-key", key, "--rate-limit", "0", "--db"])
        .arg(dir.path().join("sdk.redb"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::peers::wait_listening(port, &mut server, "mailroom serve");
    let base = format!("http://127.0.0.1:{port}");
    run_script("node", "node_sdk.mjs", &[("RESEND_BASE_URL", base.clone()), ("KEY", key.into())], 15);
    run_script("python3", "python_sdk.py", &[("RESEND_API_URL", base.clone()), ("KEY", key.into())], 15);
    // Webhooks, each SDK with a receiver of its own on 127.0.0.1: create, get, list, update,
    // events, attempts, replay, rotation, remove; deliveries verified by the SDKs' `verify`.
    run_script("node", "node_webhooks.mjs", &[("RESEND_BASE_URL", base.clone()), ("KEY", key.into())], 25);
    run_script("python3", "python_webhooks.py", &[("RESEND_API_URL", base), ("KEY", key.into())], 13);

    // SIGTERM: the server stops accepting, the worker finishes, the process exits 0.
    let _ = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut err).ok();
    assert!(status.success(), "serve exited with {status}: {err}");
    assert!(err.contains("shutting down") && err.contains("stopped"), "{err}");
}
