//! What the crash tests share: the operator's key, one HTTP exchange that tolerates a server
//! dying mid-request, the keyed batches clients post, and `serve` as a child process.
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The operator's key in every crash test's configuration.
pub const KEY: &str = "re_crash_operator_0001";

/// How many emails batch `n` has (1 to 10).
pub fn size_of(n: u64) -> usize {
    (1 + (n * 7 + 3) % 10) as usize
}

/// One HTTP/1.1 exchange; `None` when the server is not there or died before answering.
pub fn exchange(port: u16, method: &str, path: &str, body: &[u8], extra: &[(&str, &str)]) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = std::str::from_utf8(out.get(9..12)?).ok()?.parse().ok()?;
    let json = serde_json::from_slice(&out[split + 4..]).unwrap_or(Value::Null);
    Some((status, json))
}

/// Batch `n`: `size_of(n)` emails, each naming its batch and place.
pub fn batch(n: u64) -> Value {
    let items: Vec<Value> = (0..size_of(n))
        .map(|i| {
            json!({
                "from": "Acme <hi@acme.test>",
                "to": format!("user{n}-{i}@example.com"),
                "subject": format!("batch {n} item {i}"),
                "html": format!("<p>batch {n} item {i} of {}</p>", size_of(n)),
            })
        })
        .collect();
    Value::Array(items)
}

/// `mailroom serve` with a configuration file, logging warnings to a pipe; killed on drop.
pub struct Serve {
    child: Child,
}

impl Serve {
    pub fn start(config: &Path, port: u16) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env("MAILROOM_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        super::peers::wait_listening(port, &mut child, "mailroom serve");
        Serve { child }
    }

    /// SIGKILL; what it had written to stderr.
    pub fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).ok();
        }
        err
    }

    /// SIGTERM, and waits (30 s at most) for it to stop.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
