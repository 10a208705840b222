//! Real peers for the tests and benchmarks, started on free 127.0.0.1 ports and stopped on
//! drop: Debian postfix's `smtp-sink`, and `smtpd.py` (aiosmtpd) beside this file. Shared by
//! the root package's tests and benches (`#[path]`), so it names nothing by manifest directory.
#![allow(dead_code, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "ports.rs"]
// A crate that takes both the SMTP peers and dnsmasq has two copies of this file: harmless,
// since the ports are held by file locks, which the two copies share.
#[allow(clippy::duplicate_mod)]
mod ports;
/// A free TCP port on 127.0.0.1 (for a peer about to be started), handed out once.
pub use ports::free_port;

/// Waits until `child` accepts connections on 127.0.0.1:`port`; fails with its stderr if it
/// exits first. `what` names it (and how to install it) in the failure.
pub fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Someone listens; unless `child` has ended: then it is someone else, and `child`
            // could not bind (its error is in its stderr, below).
            std::thread::sleep(Duration::from_millis(20));
            if matches!(child.try_wait(), Ok(None)) {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what} exited ({status}) before listening: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 20 s");
}

/// Reads `child`'s stdout up to the end of the first line, which must start with `prefix`
/// within 90 s; fails with its stderr if it ends, prints something else or stays silent. One
/// byte at a time, so what follows stays in the pipe for [`Peer::stop`].
pub fn wait_line(child: &mut Child, prefix: &str, what: &str) {
    let mut out = child.stdout.take().expect("stdout is piped");
    // Read on a thread of its own, so a peer that never prints cannot hang the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let _ = tx.send((out, line));
    });
    let line = match rx.recv_timeout(Duration::from_secs(90)) {
        Ok((out, line)) => {
            child.stdout = Some(out);
            line
        }
        Err(_) => {
            let _ = child.kill();
            b"(nothing within 90 s)".to_vec()
        }
    };
    if line.starts_with(prefix.as_bytes()) {
        return;
    }
    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    panic!("{what} did not start ({status}): printed {:?}; {err}", String::from_utf8_lossy(&line));
}

/// A running peer; killed (SIGTERM, then waited for) on drop.
pub struct Peer {
    pub port: u16,
    child: Option<Child>,
    what: String,
}

impl Peer {
    /// Stops the peer and returns what it printed.
    pub fn stop(mut self) -> String {
        self.terminate()
    }

    fn terminate(&mut self) -> String {
        let Some(mut child) = self.child.take() else { return String::new() };
        // SIGTERM lets smtpd.py print its counters.
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut out = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        out
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = &self.what;
        self.terminate();
    }
}

fn need(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} is not installed: run ./scripts/test.sh, which installs the test peers");
}

/// `smtp-sink` with extra options (`-f RCPT -B "550 ..."`, `-q .`, `-W rcpt:30`, ...).
pub fn smtp_sink(options: &[&str]) -> Peer {
    let port = free_port();
    let mut cmd = Command::new(need("smtp-sink"));
    // As root, smtp-sink must drop to an unprivileged user.
    if nix_is_root() {
        cmd.args(["-u", "postfix"]);
    }
    cmd.args(options).arg(format!("127.0.0.1:{port}")).arg("1024");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("smtp-sink starts");
    wait_listening(port, &mut child, "smtp-sink");
    Peer { port, child: Some(child), what: "smtp-sink".into() }
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// `smtpd.py` (aiosmtpd) with `--tls CERT KEY` / `--auth USER:PASS` options.
pub fn smtpd(options: &[&str]) -> Peer {
    let port = free_port();
    // The script travels inside the including crate, wherever that crate lives.
    let mut child = Command::new("python3")
        .args(["-c", include_str!("smtpd.py")])
        .arg("127.0.0.1")
        .arg(port.to_string())
        .args(options)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("SMTPD_DEBUG").is_some() { Stdio::inherit() } else { Stdio::piped() })
        .spawn()
        .expect("python3 starts");
    // Not a connection probe: aiosmtpd's `Controller.start` listens first and then checks itself
    // with a connection of its own, and gives up (exiting) if that check is slow, as it can be
    // on a loaded machine with TLS. A probe could succeed in that window and leave the test
    // facing a closed port. The script prints its line only once `start` has returned.
    wait_line(&mut child, "listening on", "smtpd.py (is aiosmtpd installed? ./scripts/test.sh installs it)");
    Peer { port, child: Some(child), what: "smtpd.py".into() }
}

/// A self-signed certificate and key for `localhost` in `dir`.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new(need("openssl"))
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl made no certificate");
    (cert, key)
}

/// A throw-away postfix on 127.0.0.1 written by `script` (the root's
/// `tests/peers/setup-postfix.sh`) under `base`; mail for `bounces.test` goes by SMTP to
/// `inbound` when given; `main_cf` lines are appended to its main.cf. Stopped on drop
/// (`postfix stop`: killing `start-fg` does not stop the master).
pub struct Postfix {
    pub base: PathBuf,
    pub port: u16,
    child: Child,
}

impl Postfix {
    pub fn start(script: &Path, base: &Path, inbound: Option<u16>, main_cf: &str) -> Postfix {
        assert!(Path::new("/usr/sbin/postfix").exists(), "postfix is not installed: run ./scripts/test.sh");
        let port = free_port();
        let mut setup = Command::new("bash");
        setup.arg(script).arg(base).arg(port.to_string());
        if let Some(p) = inbound {
            setup.arg(p.to_string());
        }
        let out = setup.output().unwrap();
        assert!(out.status.success(), "setup-postfix.sh: {}", String::from_utf8_lossy(&out.stderr));
        if !main_cf.is_empty() {
            let file = base.join("etc/main.cf");
            let mut cf = std::fs::read_to_string(&file).unwrap();
            cf.push_str(main_cf);
            std::fs::write(&file, cf).unwrap();
        }
        let mut child = Command::new("postfix")
            .arg("-c")
            .arg(base.join("etc"))
            .arg("start-fg")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(port, &mut child, "postfix");
        Postfix { base: base.to_path_buf(), port, child }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("-c").arg(self.base.join("etc")).arg("stop").stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
