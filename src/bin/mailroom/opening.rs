//! The port while the store opens. Opening a redb file that a crash left unclosed repairs it
//! first, which reads the whole file: seconds per few gigabytes, nothing served meanwhile (see
//! `mailroom_redb::Options::quick_repair`). Why answer at all: a refused connection looks like a
//! dead server, and a liveness probe that sees one restarts the process, which starts the repair
//! over — a restart loop that never ends on a large enough file. So the port is bound first and,
//! once opening has taken a second (`serve::ANSWER_AFTER`; before that, connections wait in
//! the backlog for the API, as in a normal start), until the store is open, `GET /health` answers 200 `{"status":"starting"}` (the process is
//! alive) and every other request 503 `service_unavailable` with `Retry-After` (`/ready`
//! included: nothing can be served yet).
//!
//! Deliberately small: one request per connection, its head read to at most 8 KB within 5 s,
//! at most 256 connections answered at once (others are closed unanswered), then the
//! connection is closed. Plain HTTP only: with `server.tls_*` set, the port is bound once the
//! store is open, as before.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections answered at once.
const AT_ONCE: usize = 256;
/// The most of a request head read.
const HEAD_BYTES: usize = 8 * 1024;
/// How long a client has to send its request head, and then to take the answer.
const WITHIN: Duration = Duration::from_secs(5);

/// The port answering "starting" until [`Opening::finish`].
pub struct Opening {
    listener: Arc<TcpListener>,
    task: tokio::task::JoinHandle<()>,
}

impl Opening {
    /// Starts answering on `listener`.
    pub fn start(listener: TcpListener) -> Opening {
        let listener = Arc::new(listener);
        let accepting = Arc::clone(&listener);
        let task = tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
            loop {
                let Ok((socket, _)) = accepting.accept().await else {
                    // (Out of file descriptors, say: a pause, not a loop that spins on the error.)
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Past the bound, the connection is closed at once: nothing queues up.
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else { continue };
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(2 * WITHIN, answer(socket)).await;
                    drop(permit);
                });
            }
        });
        Opening { listener, task }
    }

    /// Stops answering; the listener, for the server. Connections accepted meanwhile are
    /// answered to their end by their own tasks.
    pub async fn finish(self) -> Result<TcpListener, String> {
        self.task.abort();
        // (The aborted task is dropped, with its clone of the listener, before this returns.)
        let _ = self.task.await;
        Arc::try_unwrap(self.listener).map_err(|_| "the listener is still shared".to_string())
    }
}

/// Reads one request head and answers it by its path.
async fn answer(mut socket: TcpStream) {
    let mut head = vec![0u8; HEAD_BYTES];
    let mut read = 0;
    let _ = tokio::time::timeout(WITHIN, async {
        while read < head.len() {
            let n = match socket.read(&mut head[read..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Only what arrived, and the three bytes before it, can complete the blank line:
            // scanning the whole head again on every read was quadratic for a client that
            // sends its head a byte at a time.
            let from = read.saturating_sub(3);
            read += n;
            if head[from..read].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let reply = reply_to(&head[..read]);
    let _ = socket.write_all(reply.as_bytes()).await;
    let _ = socket.shutdown().await;
    // What the client still sends (a body) is read and dropped for a moment: closing a socket
    // with unread bytes resets it, and a reset can destroy the answer before it is read.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(n) = socket.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The whole HTTP/1.1 answer to a request whose head starts `head`.
fn reply_to(head: &[u8]) -> String {
    // The request line: `GET /health HTTP/1.1`; the path without its query.
    let line = head.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, body) = if method == b"GET" && path == b"/health" {
        ("200 OK", serde_json::json!({"status": "starting"}))
    } else {
        (
            "503 Service Unavailable",
            serde_json::json!({
                "statusCode": 503,
                "name": "service_unavailable",
                "message": "The server is starting: its database is being opened (after an unclean shutdown, \
                            repaired). Retry shortly.",
            }),
        )
    };
    let body = body.to_string();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 5\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request over a fresh connection; the whole answer.
    async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        s.write_all(request.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[tokio::test]
    async fn while_opening_health_says_starting_and_the_rest_is_unavailable_then_the_port_is_handed_over() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let opening = Opening::start(listener);

        let health = exchange(addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        assert!(health.ends_with(r#"{"status":"starting"}"#), "{health}");

        let ready = exchange(addr, "GET /ready?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ready.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{ready}");
        assert!(
            ready.contains("\r\nretry-after: 5\r\n") && ready.contains(r#""name":"service_unavailable""#),
            "{ready}"
        );

        // A send with its body: answered, not reset.
        let body = "{\"from\":\"a@b.test\",\"to\":\"c@d.test\",\"subject\":\"s\",\"text\":\"t\"}";
        let post = format!(
            "POST /emails HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sent = exchange(addr, &post).await;
        assert!(sent.starts_with("HTTP/1.1 503"), "{sent}");
        let json = sent.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {sent}"));
        assert_eq!(json["statusCode"], 503);

        // Garbage is answered too, and never taken for the health check.
        assert!(exchange(addr, "\u{1}\u{2}\r\n\r\n").await.starts_with("HTTP/1.1 503"));
        assert!(exchange(addr, "POST /health HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 503"));

        // Handed over: the same port now belongs to whoever takes the listener.
        let listener = opening.finish().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(listener.local_addr().ok(), Some(addr));
        let accepted = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        let _client = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(accepted.await.is_ok_and(|r| r.is_ok()));
    }

    /// A head sent a few bytes at a time, its blank line split between two reads, is answered
    /// as soon as it is whole (not after the 5 s a head may take).
    #[tokio::test]
    async fn a_head_that_arrives_in_pieces_is_answered_when_its_blank_line_completes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let opening = Opening::start(listener);
        let mut s = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{e}"));
        s.set_nodelay(true).unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        for piece in ["GET /hea", "lth HTTP/1.1\r\nHost: x\r", "\n\r", "\n"] {
            s.write_all(piece.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(started.elapsed() < WITHIN, "answered when whole, not at the deadline");
        drop(opening.finish().await);
    }

    #[test]
    fn the_request_line_decides_and_nothing_else() {
        assert!(reply_to(b"GET /health HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(reply_to(b"GET /health?verbose HTTP/1.0\n\n").starts_with("HTTP/1.1 200"));
        for head in [&b""[..], b"GET /healthz HTTP/1.1\r\n", b"GET /emails HTTP/1.1\r\n", b"get /health HTTP/1.1\r\n"] {
            assert!(reply_to(head).starts_with("HTTP/1.1 503"), "{}", String::from_utf8_lossy(head));
        }
    }
}
