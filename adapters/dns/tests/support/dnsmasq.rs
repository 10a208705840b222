//! A real `dnsmasq` (Debian's dnsmasq-base) on a free 127.0.0.1 port, serving only the
//! records a test gives it, authoritative for `test` (other `.test` names are NXDOMAIN);
//! stopped on drop. Shared by the DNS and SMTP adapters' tests.
#![allow(dead_code, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Dnsmasq {
    pub addr: SocketAddr,
    child: Child,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[path = "../../../smtp/tests/peers/ports.rs"]
// A crate that takes both the SMTP peers and dnsmasq has two copies of this file: harmless,
// since the ports are held by file locks, which the two copies share.
#[allow(clippy::duplicate_mod)]
mod ports;

/// A port free for both UDP and TCP, handed out once ([`ports::free_port`]).
pub fn free_port() -> u16 {
    loop {
        let port = ports::free_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts dnsmasq with `records`: dnsmasq options such as `--mx-host=a.test,mx.a.test,10`,
/// `--host-record=mx.a.test,127.0.0.1`, `--txt-record=_dmarc.a.test,"v=DMARC1; p=none"`.
pub fn start(records: &[String]) -> Dnsmasq {
    start_at(free_port(), records)
}

/// The dnsmasq options that publish one record: `rtype` MX (value `"pref host"`), TXT (a
/// long value split into strings of at most 255 bytes, as DNS carries them) or CNAME (whose
/// target dnsmasq must know: give it a `--host-record`).
pub fn record(name: &str, rtype: &str, value: &str) -> String {
    match rtype {
        "MX" => {
            let (pref, host) = value.split_once(' ').unwrap();
            format!("--mx-host={name},{host},{pref}")
        }
        "TXT" => {
            let parts: Vec<String> =
                value.as_bytes().chunks(255).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
            format!("--txt-record={name},{}", parts.join(","))
        }
        "CNAME" => format!("--cname={name},{value}"),
        other => panic!("no dnsmasq option for {other} records here"),
    }
}

/// Starts dnsmasq on `port` (chosen earlier, e.g. so that a server could be told it first).
pub fn start_at(port: u16, records: &[String]) -> Dnsmasq {
    let bin = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| panic!("dnsmasq is not installed: run ./scripts/test.sh, which installs it"));
    let mut child = Command::new(bin)
        .args(["--no-daemon", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts"])
        .args(["--no-poll", "--pid-file=", "--local=/test/", "--user=root"])
        .arg(format!("--port={port}"))
        .args(records)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dnsmasq starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("dnsmasq exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "dnsmasq did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Dnsmasq { addr: SocketAddr::from(([127, 0, 0, 1], port)), child }
}
