//! A throw-away PostgreSQL cluster from Debian's `postgresql` package: `initdb` in a
//! temporary folder, `postgres` on a free 127.0.0.1 port, killed and removed on drop. Run as
//! the `postgres` user when the tests run as root (PostgreSQL refuses to run as root).
#![allow(dead_code, clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The folder of PostgreSQL's programs (Debian keeps them out of `PATH`).
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("PostgreSQL is not installed: ./scripts/test.sh installs it"))
}

/// The uid and gid to run as: the `postgres` user's when we are root.
fn run_as() -> Option<(u32, u32)> {
    let me = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("a postgres user (the package makes one)")
    };
    Some((id("-u"), id("-g")))
}

fn command(program: PathBuf, user: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(program);
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c.env_remove("PGDATA").env("LC_ALL", "C");
    c
}

#[path = "../../../smtp/tests/peers/ports.rs"]
// A crate that takes both the SMTP peers and dnsmasq has two copies of this file: harmless,
// since the ports are held by file locks, which the two copies share.
#[allow(clippy::duplicate_mod)]
mod ports;
use ports::free_port;

impl Cluster {
    pub fn start() -> Cluster {
        let bin = bin_dir();
        let user = run_as();
        let dir = tempfile::Builder::new().prefix("mailroom-pg").tempdir().unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let out = command(bin.join("initdb"), user)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let child = command(bin.join("postgres"), user)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-k"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let cluster = Cluster { port, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

/// A store on a fresh cluster: connecting retries while the server is still starting up.
pub async fn store(cluster: &Cluster) -> mailroom_postgres::PostgresStorage {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match mailroom_postgres::PostgresStorage::connect(&cluster.url(), 8).await {
            Ok(s) => return s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Cluster {
    /// A new empty database `name` in this cluster, and its URL.
    pub async fn database(&self, name: &str) -> String {
        let (client, connection) =
            mailroom_postgres::tokio_postgres::connect(&self.url(), mailroom_postgres::tokio_postgres::NoTls)
                .await
                .unwrap();
        let driver = tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        drop(client);
        let _ = driver.await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}
