//! The loader against a real HTTP server on loopback and a real directory: the address policy,
//! redirects, size limits, timeouts, and local files confined to their directory.
#![allow(clippy::unwrap_used, clippy::panic)]

use mailroom_core::ports::{AttachmentLoader, LoadError};
use mailroom_fetch::{FetchConfig, Fetcher};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A small HTTP/1.1 server on `ip`: each path answers as the test needs.
async fn server(ip: &str) -> u16 {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let head = |status: &str, extra: &str, len: Option<usize>| {
                    let len = len.map(|l| format!("content-length: {l}\r\n")).unwrap_or_default();
                    format!("HTTP/1.1 {status}\r\n{extra}{len}connection: close\r\n\r\n")
                };
                let out: Vec<u8> = match path.as_str() {
                    "/files/Quarterly%20report.pdf" => {
                        let mut r = head("200 OK", "content-type: application/pdf; x=1\r\n", Some(3)).into_bytes();
                        r.extend_from_slice(b"PDF");
                        r
                    }
                    "/big" => head("200 OK", "", Some(10 << 20)).into_bytes(),
                    "/big-chunked" => {
                        let _ = s.write_all(head("200 OK", "transfer-encoding: chunked\r\n", None).as_bytes()).await;
                        let chunk = vec![b'x'; 64 << 10];
                        for _ in 0..64 {
                            let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                            c.extend_from_slice(&chunk);
                            c.extend_from_slice(b"\r\n");
                            if s.write_all(&c).await.is_err() {
                                return;
                            }
                        }
                        b"0\r\n\r\n".to_vec()
                    }
                    "/redirect-ok" => {
                        head("302 Found", "location: /files/Quarterly%20report.pdf\r\n", Some(0)).into_bytes()
                    }
                    "/redirect-private" => {
                        let to = format!("location: http://127.0.0.2:{port}/files/Quarterly%20report.pdf\r\n");
                        head("302 Found", &to, Some(0)).into_bytes()
                    }
                    "/redirect-file" => head("302 Found", "location: file:///etc/passwd\r\n", Some(0)).into_bytes(),
                    "/loop" => head("302 Found", "location: /loop\r\n", Some(0)).into_bytes(),
                    "/hang" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    _ => head("404 Not Found", "", Some(0)).into_bytes(),
                };
                let _ = s.write_all(&out).await;
            });
        }
    });
    port
}

fn fetcher(config: FetchConfig) -> Fetcher {
    Fetcher::new(config).unwrap()
}

fn allowing_loopback_1() -> FetchConfig {
    let mut c = FetchConfig::default();
    c.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
    c.timeout = Duration::from_secs(2);
    c
}

fn refused(r: Result<mailroom_core::ports::LoadedAttachment, LoadError>) -> String {
    match r {
        Err(LoadError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_by_default_in_every_spelling() {
    let port = server("127.0.0.1").await;
    let f = fetcher(FetchConfig::default());
    for url in [
        format!("http://127.0.0.1:{port}/files/Quarterly%20report.pdf"),
        format!("http://localhost:{port}/files/Quarterly%20report.pdf"),
        format!("http://0x7f000001:{port}/files/Quarterly%20report.pdf"),
        format!("http://2130706433:{port}/files/Quarterly%20report.pdf"),
        format!("http://[::ffff:127.0.0.1]:{port}/x"),
        format!("http://[::1]:{port}/x"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/x".to_string(),
    ] {
        let why = refused(f.load(&url, 1 << 20).await);
        assert!(why.contains("does not fetch from"), "{url}: {why}");
    }
    for other in ["file:///etc/passwd", "ftp://example.com/x", "gopher://127.0.0.1:70/x"] {
        let why = refused(f.load(other, 1 << 20).await);
        assert!(why.contains("only http and https"), "{other}: {why}");
    }
    // No local directory named: no local files at all, absolute or relative.
    for local in ["/etc/passwd", "../../etc/hostname", "report.pdf"] {
        let why = refused(f.load(local, 1 << 20).await);
        assert!(why.contains("does not serve local files"), "{local}: {why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_urls_are_fetched_streamed_against_the_limit_and_redirects_checked() {
    let port = server("127.0.0.1").await;
    let f = fetcher(allowing_loopback_1());
    let base = format!("http://127.0.0.1:{port}");
    let got = f.load(&format!("{base}/files/Quarterly%20report.pdf"), 1 << 20).await.unwrap();
    assert_eq!(got.content, b"PDF");
    assert_eq!(got.content_type.as_deref(), Some("application/pdf"));
    assert_eq!(got.filename.as_deref(), Some("Quarterly report.pdf"));
    let via = f.load(&format!("{base}/redirect-ok"), 1 << 20).await.unwrap();
    assert_eq!(via.content, b"PDF");

    // 127.0.0.2 is loopback too, and not in the allowed network: a redirect there is refused.
    let why = refused(f.load(&format!("{base}/redirect-private"), 1 << 20).await);
    assert!(why.contains("127.0.0.2"), "{why}");
    // A redirect to another scheme is not followed (reqwest stops at it): the 302 is the answer.
    let r = f.load(&format!("{base}/redirect-file"), 1 << 20).await;
    assert!(matches!(r, Err(LoadError::Refused(_) | LoadError::Failed(_))), "{r:?}");
    let why = refused(f.load(&format!("{base}/loop"), 1 << 20).await);
    assert!(why.contains("redirects"), "{why}");

    assert_eq!(f.load(&format!("{base}/big"), 1 << 20).await.unwrap_err(), LoadError::TooLarge { max: 1 << 20 });
    let started = std::time::Instant::now();
    assert_eq!(
        f.load(&format!("{base}/big-chunked"), 100_000).await.unwrap_err(),
        LoadError::TooLarge { max: 100_000 }
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(f.load(&format!("{base}/nothing"), 100).await, Err(LoadError::Failed(ref m)) if m.contains("404"))
    );
    let started = std::time::Instant::now();
    let hung = f.load(&format!("{base}/hang"), 100).await.unwrap_err();
    assert!(matches!(hung, LoadError::Failed(ref m) if m.contains("longer than 2 s")), "{hung:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A closed port: a failure, not a refusal.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(matches!(f.load(&format!("http://127.0.0.1:{closed}/x"), 100).await, Err(LoadError::Failed(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_files_come_only_from_the_named_directory_and_refusals_look_alike() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("reports")).unwrap();
    std::fs::write(root.path().join("reports/q3.txt"), b"numbers").unwrap();
    std::fs::write(root.path().join("big.bin"), vec![0u8; 5000]).unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.path().join("escape.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", root.path().join("etc")).unwrap();
    let mut c = FetchConfig::default();
    c.local_dir = Some(root.path().to_path_buf());
    let f = fetcher(c);
    let got = f.load("reports/q3.txt", 100).await.unwrap();
    assert_eq!((got.content.as_slice(), got.filename.as_deref()), (&b"numbers"[..], Some("q3.txt")));
    let escape_dir = format!("../{}/secret.txt", outside.path().file_name().unwrap().to_str().unwrap());
    let mut answers = std::collections::BTreeSet::new();
    for bad in [
        "/etc/passwd",
        "../../etc/hostname",
        escape_dir.as_str(),
        "escape.txt",
        "etc/hostname",
        "reports",
        "reports/missing.txt",
        "reports/../../x",
        "/proc/self/environ",
    ] {
        answers.insert(refused(f.load(bad, 100).await));
    }
    assert_eq!(answers.len(), 1, "every refusal says the same: {answers:?}");
    assert_eq!(f.load("big.bin", 4000).await.unwrap_err(), LoadError::TooLarge { max: 4000 });
}
