//! What `deploy/` ships: the systemd unit passes `systemd-analyze verify` (with `ExecStart`
//! pointed at the binary just built, the one thing a checkout cannot have in place), and the
//! example configuration passes `mailroom config check`, every setting in it known.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy("mailroom.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/mailroom serve --config /etc/mailroom/mailroom.toml"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailroom.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/mailroom", env!("CARGO_BIN_EXE_mailroom"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze ({e}): ./scripts/test.sh installs it"));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn the_example_configuration_is_valid() {
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["config", "check", "--config"])
        .arg(deploy("mailroom.toml"))
        .env("MAILROOM_OPERATOR_KEY", "re_example_operator_key")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.starts_with("ok"), "{said}{}", String::from_utf8_lossy(&out.stderr));
    // Nothing to warn of: the variable holds the key the file names, and the example gives
    // this server a public name for the records domains publish.
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "", "no warnings");
    // Without the variable its key names, the check says so, by line.
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["config", "check", "--config"])
        .arg(deploy("mailroom.toml"))
        .env_remove("MAILROOM_OPERATOR_KEY")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && said.contains("mailroom.toml:") && said.contains("MAILROOM_OPERATOR_KEY"),
        "{said}"
    );
}
