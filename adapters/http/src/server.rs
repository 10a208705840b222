//! Serving the router on a socket, hardened for clients that do not play fair.
//!
//! Invariants:
//! - at most [`ServerConfig::max_connections`] connections are open; past that the server
//!   stops accepting (the kernel's backlog holds the rest) instead of spawning without bound;
//! - a request's headers must arrive within [`ServerConfig::header_read_timeout`], counted
//!   from when the server starts waiting for them — so a kept-alive connection left idle
//!   between requests is closed after the same time; a TLS handshake gets the same time;
//! - a response that the client stops reading (no byte moves for
//!   [`ServerConfig::idle_timeout`]) closes the connection;
//! - the answers hyper writes on its own, before any handler runs (400 for a request it
//!   cannot parse, 414, 431 for headers over [`ServerConfig::max_header_bytes`]), carry a JSON
//!   body in the catalogue's shape like every other answer;
//! - the client's address reaches the handlers as `ConnectInfo<SocketAddr>`.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tower::ServiceExt;

/// How connections are served. Change fields of [`ServerConfig::default`]; new ones may be
/// added.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// From waiting for a request to having its headers (and for a TLS handshake).
    pub header_read_timeout: Duration,
    /// How long a response may make no progress (a client that stopped reading).
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// The request line and headers together (at least 8 KiB).
    pub max_header_bytes: usize,
    /// How long a graceful stop waits for requests in progress.
    pub grace: Duration,
    /// Serve HTTPS with this (see [`tls_config`]); `None`: plain HTTP (behind a TLS proxy).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("grace", &self.grace)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_header_bytes: 16 << 10,
            grace: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// Why a certificate or key could not be used.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the kind wanted.
    Pem(String),
    /// rustls refused the pair (a key that does not match, an unsupported algorithm).
    Config(String),
}

impl std::error::Error for TlsError {}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Pem(m) | TlsError::Config(m) => f.write_str(m),
        }
    }
}

/// A TLS configuration from a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or
/// SEC1), with ring as the provider and HTTP/1.1 offered by ALPN.
pub fn tls_config(cert_chain: &Path, private_key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_chain)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem(format!("{}: {e}", cert_chain.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!("{}: no certificate in it", cert_chain.display())));
    }
    let key = PrivateKeyDer::from_pem_file(private_key)
        .map_err(|e| TlsError::Pem(format!("{}: {e}", private_key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits up
/// to [`ServerConfig::grace`] for the requests in progress.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.map_err(io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(target: "mailroom::http", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        metrics::gauge!("mailroom_http_connections").increment(1.0);
        let (app, config, acceptor) = (app.clone(), config.clone(), acceptor.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(Guarded::new(stream, config.idle_timeout), peer, app, &config, watcher).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(config.header_read_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            serve_connection(Guarded::new(tls, config.idle_timeout), peer, app, &config, watcher).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(target: "mailroom::http", %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(target: "mailroom::http", %peer, "TLS handshake timed out"),
                    }
                }
            }
            metrics::gauge!("mailroom_http_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(config.grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(target: "mailroom::http", "requests still in progress after the grace period were cut off");
    }
    Ok(())
}

async fn serve_connection<IO>(
    io: Guarded<IO>,
    peer: SocketAddr,
    app: Router,
    config: &ServerConfig,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(target: "mailroom::http", %peer, error = %e, "connection ended");
    }
}

/// An I/O stream that closes a stalled response and gives hyper's own error answers a JSON
/// body.
struct Guarded<IO> {
    io: IO,
    idle: Duration,
    /// Set while a write makes no progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A rewritten answer still to be written (hyper was told it was).
    pending: Vec<u8>,
}

impl<IO> Guarded<IO> {
    fn new(io: IO, idle: Duration) -> Self {
        Guarded { io, idle, stalled: None, pending: Vec::new() }
    }
}

impl<IO: AsyncWrite + Unpin> Guarded<IO> {
    /// Writes what is pending; `Ready(Ok)` once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(self.write_inner(cx, true))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// One write of `pending` (or of `buf`), with the stall deadline.
    fn write_inner(&mut self, cx: &mut Context<'_>, pending: bool) -> Poll<io::Result<usize>> {
        self.write_buf(cx, None, pending)
    }

    fn write_buf(&mut self, cx: &mut Context<'_>, buf: Option<&[u8]>, pending: bool) -> Poll<io::Result<usize>> {
        let data: &[u8] = if pending { &self.pending } else { buf.unwrap_or_default() };
        match Pin::new(&mut self.io).poll_write(cx, data) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let idle = self.idle;
                let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")));
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        if let Some(fixed) = json_error_answer(buf) {
            self.pending = fixed;
            // Taken whole: what is left goes out on the next write or flush.
            if let Poll::Ready(Err(e)) = self.drain(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        self.write_buf(cx, Some(buf), false)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    // hyper then writes each message as one buffer (head and, for its own errors, no body),
    // which is what `json_error_answer` reads.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// When `buf` is an answer hyper wrote by itself (a 4xx head with no body and no
/// `Content-Type`: every answer the router writes has one), the same answer with a JSON body.
fn json_error_answer(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.1 4") || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line.get(9..12)?.parse().ok()?;
    let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let lower = |l: &str| l.to_ascii_lowercase();
    if headers.iter().any(|l| lower(l).starts_with("content-type:")) {
        return None;
    }
    if !headers.iter().any(|l| lower(l).starts_with("content-length: 0")) {
        return None;
    }
    let message = match code {
        400 => "The request is not valid HTTP/1.1.",
        414 => "The request's path and query are too long.",
        431 => "The request's headers are too large.",
        _ => "The request could not be read.",
    };
    let body = serde_json::json!({"statusCode": code, "message": message, "name": "validation_error"}).to_string();
    let mut out = format!("{status_line}\r\n");
    for h in headers.iter().filter(|l| !lower(l).starts_with("content-length:")) {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str(&format!("content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()));
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_error_heads_get_a_json_body_and_router_answers_are_left_alone() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let fixed = String::from_utf8(json_error_answer(head).unwrap_or_default()).unwrap_or_default();
        assert!(fixed.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n"), "{fixed}");
        let (head, body) = fixed.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains("content-type: application/json") && !head.contains("content-length: 0"), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(v["statusCode"], 431);
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n";
        assert!(json_error_answer(ours).is_none());
        assert!(json_error_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(json_error_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\n").is_none());
    }
}
