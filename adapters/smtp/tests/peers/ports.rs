//! Free 127.0.0.1 ports for the servers a test starts, each handed out once at a time across
//! every test and process of this user on the machine.
//!
//! Why: a port found free by binding port 0 is free only until someone else binds it. Tests
//! run in parallel threads (and binaries with their own copies of these helpers), and two of
//! them could be handed the same port: one test's server then failed to bind while the other's
//! answered its requests (seen: an HTTP request to a port where another test's SMTP listener
//! ran, reset). Each port handed out is held by an advisory lock on a file named after it,
//! taken by this process until it exits; whoever asks next skips a port another holds.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// The locks this process holds, one per port it handed out.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A TCP port on 127.0.0.1 that is free now and that no other caller of this function, in
/// this process or another of the same user, has been given while it holds it.
pub fn free_port() -> u16 {
    let dir = lock_dir();
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Without a folder for the locks, a port is as free as binding found it.
        let Some(dir) = &dir else { return port };
        let Ok(lock) =
            OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(format!("{port}.lock")))
        else {
            return port;
        };
        // Held already (by this process or another): ask the system for another port.
        if lock.try_lock().is_ok() {
            HELD.lock().unwrap().push(lock);
            return port;
        }
    }
}

/// The folder of the lock files: one per user (by the uid of `/proc/self`, this process's),
/// so that files another user left are never in the way.
fn lock_dir() -> Option<PathBuf> {
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let dir = std::env::temp_dir().join(format!("mailroom-test-ports-{uid}"));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}
