//! The admin socket: how the command line works on a database that `serve` holds (redb opens a
//! file in one process at a time). The server listens on a Unix socket beside the database
//! (`<db>.sock`, or `server.admin_socket`); the command line sends one [`Request`] as a JSON
//! line and reads one answer line.
//!
//! Invariants: only the user the server runs as can use it — the socket is made mode 0600 and
//! every connection's peer credentials are checked against the socket's owner; a request line
//! is bounded ([`MAX_REQUEST`]); a stale socket left by a killed server is replaced, a live
//! one (another server) is not.

use crate::commands::{Context, Failure, Request, execute};
use serde_json::{Value, json};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The longest request line: a batch of emails with attachments, JSON-encoded.
const MAX_REQUEST: u64 = 128 << 20;

/// Listens on `path` until the returned handle is aborted.
pub async fn listen(path: &Path, ctx: Context) -> Result<tokio::task::JoinHandle<()>, String> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(format!("another server answers on the admin socket {}", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("cannot replace the stale socket {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    let owner = std::fs::metadata(path).map_err(|e| e.to_string())?.uid();
    let path = path.to_path_buf();
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of file descriptors, say: a pause, not a loop that spins on the error (as
                // the HTTP and SMTP listeners do).
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let allowed = stream.peer_cred().is_ok_and(|c| c.uid() == owner || c.uid() == 0);
            if !allowed {
                tracing::warn!(socket = %path.display(), "refused an admin connection from another user");
                continue;
            }
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_one(stream, &ctx).await {
                    tracing::debug!(error = %e, "an admin connection failed");
                }
            });
        }
    }))
}

async fn serve_one(stream: UnixStream, ctx: &Context) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line).await?;
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            tracing::info!(command = request.name(), "admin request");
            match execute(ctx, request).await {
                Ok(output) => json!({"ok": true, "output": output}),
                Err(f) => json!({"ok": false, "error": f.body()}),
            }
        }
        Err(e) => json!({"ok": false, "error": {"statusCode": 400, "name": "validation_error",
                                                "message": format!("not an admin request: {e}")}}),
    };
    let mut out = answer.to_string();
    out.push('\n');
    write.write_all(out.as_bytes()).await?;
    write.shutdown().await
}

/// Asks the server behind `path` to run `request`. `Err`: no server answers there.
pub async fn call(path: &Path, request: &Request) -> Result<Result<Value, Failure>, String> {
    let stream = UnixStream::connect(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    write.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await.map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&answer).map_err(|e| format!("the server's answer is not JSON: {e}"))?;
    if v["ok"] == true { Ok(Ok(v["output"].clone())) } else { Ok(Err(Failure::Remote(v["error"].clone()))) }
}

/// Removes the socket file when the server stops.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
