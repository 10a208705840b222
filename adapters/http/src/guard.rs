//! The layers every request passes, outermost first:
//!
//! 1. [`observe`] — one `info` line per request (method, path, status, latency, key id) and
//!    the latency histogram, whatever happened inside;
//! 2. [`catch_panic`] — a panic in a handler is logged and answered 500 JSON; the server
//!    lives on;
//! 3. [`json_errors`] — an error answer that is not JSON (axum's own rejections) is rewritten
//!    into the catalogue's shape with the same status;
//! 4. [`shed`] — more requests in progress than allowed: 503 at once;
//! 5. [`authenticated`] (on every route but the public ones) — in this order, each step
//!    before any byte of the body is read: the client address's allowance for requests
//!    without a valid key, the key, the key's endpoint rights, the key's and the account's
//!    rate limits, the declared body size, room in the body memory budget; then the body,
//!    read against the size limit and the body timeout; then the handler; then the request
//!    log (a bounded, redacted copy of each body).

use crate::limit::{Quota, ip_subject};
use crate::redact::{KEEP, redact};
use crate::{Api, ApiError, Auth};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use http_body_util::BodyExt;
use mailroom_core::email::AccountId;
use mailroom_core::keys::bearer_token;
use mailroom_core::ports::{KeyPermission, RequestLog};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The id of the key a request was made with, on the response (for [`observe`]).
#[derive(Clone, Debug)]
struct KeyId(String);

/// One `info` line per request and the latency histogram.
pub(crate) async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let response = next.run(req).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let key = response.extensions().get::<KeyId>().map(|k| k.0.clone());
    tracing::info!(
        target: "mailroom::http",
        %method,
        path = %path,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        key = key.as_deref().unwrap_or("-"),
        "request"
    );
    let class = format!("{}xx", status / 100);
    metrics::histogram!(
        "mailroom_http_request_duration_seconds",
        "method" => method.to_string(),
        "route" => route,
        "status" => class
    )
    .record(elapsed.as_secs_f64());
    response
}

/// A panic in a handler: logged, answered 500 JSON, and the server goes on.
pub(crate) async fn catch_panic(req: Request, next: Next) -> Response {
    match std::panic::AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(target: "mailroom::http", panic = %what, "a handler panicked");
            ApiError::new(500, "application_error", "An unexpected error occurred.").into_response()
        }
    }
}

/// The catalogue's name for a status the HTTP layer chose itself.
fn name_for(status: u16) -> &'static str {
    match status {
        401 => "missing_api_key",
        404 => "not_found",
        405 => "method_not_allowed",
        429 => "rate_limit_exceeded",
        503 => "service_unavailable",
        400..=499 => "validation_error",
        _ => "application_error",
    }
}

/// Rewrites an error answer that is not JSON into the catalogue's shape, keeping its status
/// (and its text as the message when it is short plain text; never a 5xx's, which may name
/// internals).
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if status.as_u16() < 400 || is_json || response.extensions().get::<crate::pages::Page>().is_some() {
        return response;
    }
    let code = status.as_u16();
    let (parts, body) = response.into_parts();
    let text = match Body::new(body).collect().await.map(|c| c.to_bytes()) {
        Ok(b) if b.len() <= 512 && code < 500 => String::from_utf8_lossy(&b).trim().to_string(),
        _ => String::new(),
    };
    let message = if text.is_empty() || text.chars().any(char::is_control) {
        status.canonical_reason().unwrap_or("Error").to_string()
    } else {
        text
    };
    let mut fixed = ApiError::new(code, name_for(code), message).into_response();
    // Keep what the original said beyond its body (retry-after, allow, rate-limit headers).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

/// Load shedding: beyond the configured number of requests in progress, 503 at once (a
/// queue would only hold memory and make every answer late).
pub(crate) async fn shed(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Ok(permit) = api.requests.clone().try_acquire_owned() else {
        metrics::counter!("mailroom_http_shed_total").increment(1);
        let mut r =
            ApiError::new(503, "service_unavailable", "The server is busy; try again in a moment.").into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let keyed = req.headers().contains_key("idempotency-key");
    let run = async move {
        let response = next.run(req).await;
        drop(permit);
        response
    };
    if !keyed {
        return run.await;
    }
    // A request with an idempotency key runs to its end even when its client hangs up (the
    // engine finishes it in a task of its own, so that the client's retry finds an answer).
    // Why here as well: that task would otherwise go on without this permit and without the
    // body-memory permit `authenticated` holds, so clients that post and hang up could keep
    // any number of requests (and their bodies) alive beyond both limits. Run in a task that
    // owns the permits, the request keeps them until it is done, however it ends.
    // (Inside it the engine runs the keyed send itself, without a task of its own.)
    match tokio::spawn(mailroom_core::engine::runs_to_its_end(run)).await {
        Ok(response) => response,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => ApiError::new(500, "application_error", "An unexpected error occurred.").into_response(),
    }
}

/// The client's address: the peer, or — when the peer is a trusted reverse proxy — the
/// nearest address in `X-Forwarded-For` that is not one. `None`: the server gave no peer (a
/// host serving the router without connect info).
pub(crate) fn client_ip(api: &Api, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer?.ip();
    let trusted = |ip: &IpAddr| api.config.trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let hops: Vec<IpAddr> = forwarded.flat_map(|v| v.split(',')).filter_map(|h| h.trim().parse().ok()).collect();
    Some(hops.into_iter().rev().find(|ip| !trusted(ip)).unwrap_or(peer))
}

pub(crate) fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// What a client address is rate-limited as ([`ip_subject`]; `unknown` without a peer).
pub(crate) fn ip_key(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_string(), ip_subject)
}

fn too_many(quota: Quota) -> Response {
    let mut r = ApiError::new(
        429,
        "rate_limit_exceeded",
        "Too many requests. You can only make a limited number of requests per second.",
    )
    .into_response();
    r.headers_mut().insert(header::RETRY_AFTER, quota.reset.into());
    rate_headers(&mut r, quota);
    r
}

fn rate_headers(r: &mut Response, quota: Quota) {
    if quota.limit > 0 {
        let h = r.headers_mut();
        h.insert("ratelimit-limit", quota.limit.into());
        h.insert("ratelimit-remaining", quota.remaining.into());
        h.insert("ratelimit-reset", quota.reset.into());
    }
}

/// Whether a key may call this route: `sending_access` keys reach only the sending routes.
fn sending_route(method: &Method, route: &str) -> bool {
    method == Method::POST && matches!(route, "/emails" | "/emails/batch")
}

/// The request's `Content-Encoding` when it names anything but `identity` (the whole header
/// value, trimmed; a value that is not text reads as itself, unprintable).
fn unsupported_coding(headers: &HeaderMap) -> Option<String> {
    let mut codings = headers.get_all(header::CONTENT_ENCODING).iter().peekable();
    codings.peek()?;
    let values: Vec<String> = codings.map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string()).collect();
    let all_identity = values.iter().flat_map(|v| v.split(',')).all(|c| {
        let c = c.trim();
        c.is_empty() || c.eq_ignore_ascii_case("identity")
    });
    (!all_identity).then(|| values.join(", "))
}

/// Reads a body against the size limit and the deadline, into one buffer sized from its
/// declared length (no second copy while collecting).
async fn read_body(api: &Api, body: Body, declared: Option<usize>) -> Result<Bytes, ApiError> {
    let max = api.config.max_body_bytes;
    let too_large = || ApiError::new(413, "validation_error", format!("The request body is larger than {max} bytes."));
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(max));
    let mut body = body;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
                    too_large()
                } else {
                    ApiError::new(400, "validation_error", format!("The request body could not be read: {e}"))
                }
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(api.config.body_timeout, reading).await {
        Ok(Ok(())) => Ok(buf.freeze()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::new(
            408,
            "validation_error",
            format!("The request body did not arrive within {} s.", api.config.body_timeout.as_secs()),
        )),
    }
}

/// Authentication, rate limits, the body and the request log, for every non-public route.
pub(crate) async fn authenticated(State(api): State<Api>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let ip = client_ip(&api, peer(&req), req.headers());
    let ip_subject = ip_key(ip);
    let now = Instant::now();
    // A client that keeps failing to authenticate is refused before its key is even looked up.
    if let Some(q) = api.limiters.unauthenticated.exhausted(&ip_subject, now) {
        return too_many(q);
    }
    let token = bearer_token(req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let found = match token {
        None => Err(ApiError::new(401, "missing_api_key", "Missing API key in the authorization header")),
        Some(t) => match api.engine.authenticate(t).await {
            Ok(Some(k)) => Ok(k),
            Ok(None) => Err(ApiError::new(403, "invalid_api_key", "API key is invalid")),
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    let (account, key) = match found {
        Ok(k) => k,
        Err(e) => {
            api.limiters.unauthenticated.check(&ip_subject, now);
            return e.into_response();
        }
    };
    // The key's `last_used_at`, written at most once a minute per key, off the request's path:
    // a failed write costs the figure a minute, never the request.
    if let Some(at) = api.engine.key_use_due(&key) {
        let (engine, account, id) = (api.engine.clone(), account.clone(), key.id.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.record_key_use(&account, &id, at).await {
                tracing::warn!(key = %id, error = %e, "could not record the API key's last use");
            }
        });
    }
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let with_key = |mut r: Response| {
        r.extensions_mut().insert(KeyId(key.id.clone()));
        r
    };
    if matches!(key.permission, KeyPermission::SendingAccess { .. }) && !sending_route(req.method(), &route) {
        let e = ApiError::new(401, "restricted_api_key", "This API key is restricted to only send emails");
        return with_key(e.into_response());
    }
    let quota = api.limiters.key.check(&key.id, now).and(api.limiters.account.check(account.as_str(), now));
    if !quota.allowed {
        return with_key(too_many(quota));
    }

    // The body: refused unread when it says it is too large; read only with room for it.
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let max = api.config.max_body_bytes;
    if declared.is_some_and(|n| n > max) {
        let e = ApiError::new(413, "validation_error", format!("The request body is larger than {max} bytes."));
        return with_key(e.into_response());
    }
    // The body's length as declared; a request without one has no body unless it is chunked
    // (then it may be as large as allowed).
    let expected = declared
        .or_else(|| axum::body::HttpBody::size_hint(&body).exact().map(|n| usize::try_from(n).unwrap_or(max)))
        .unwrap_or(max);
    // A compressed body would be read as the JSON it is not (or, decompressed, could grow
    // past every bound above): refused unread, as RFC 9110 §15.5.16 says, naming the coding.
    // (Without a body the header describes nothing, and the request goes on.)
    if let Some(coding) = (expected > 0).then(|| unsupported_coding(&parts.headers)).flatten() {
        let e = ApiError::new(
            415,
            "validation_error",
            format!(
                "The request body's Content-Encoding {} is not supported: send it uncompressed.",
                mailroom_core::error::quoted(&coding)
            ),
        );
        let mut r = e.into_response();
        r.headers_mut().insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        return with_key(r);
    }
    // A body is held about twice while it is parsed; small ones are not worth counting.
    // Never more than the whole budget: with a budget below twice the largest body, a chunked
    // request would otherwise wait for room that can never be, and every GET with it.
    let cost_kib = u32::try_from((expected.saturating_mul(2)) >> 10).unwrap_or(u32::MAX).min(api.body_memory_kib);
    let _memory = if cost_kib > 64 {
        let wait = api.body_memory.clone().acquire_many_owned(cost_kib);
        match tokio::time::timeout(api.config.body_timeout, wait).await {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                let mut r =
                    ApiError::new(503, "service_unavailable", "The server is busy with large requests; try again.")
                        .into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return with_key(r);
            }
        }
    } else {
        None
    };
    let bytes = match read_body(&api, body, declared).await {
        Ok(b) => b,
        Err(e) => return with_key(e.into_response()),
    };
    let logs = api.engine.storage().request_logs().is_some();
    let request_body = if logs { redact(&bytes) } else { None };
    let (method, endpoint) = (parts.method.to_string(), parts.uri.path().to_string());
    let user_agent = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut req = Request::from_parts(parts, Body::from(bytes));
    let engine = api.engine.with_key(&account, &key);
    req.extensions_mut().insert(Auth { engine, account: account.clone() });

    let mut response = next.run(req).await;
    rate_headers(&mut response, quota);
    response.extensions_mut().insert(KeyId(key.id.clone()));
    if !logs {
        return response;
    }
    // Exports stream and downloads are bytes: neither is kept. A JSON answer is read back with
    // a bound; one known to be over it (email metrics by the hour answer megabytes) is sent
    // and not kept, rather than read into the log's copy.
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let over = axum::body::HttpBody::size_hint(response.body()).exact().is_some_and(|n| n > (KEEP * 4) as u64);
    let response_body = if json && !over {
        let (rparts, rbody) = response.into_parts();
        match axum::body::to_bytes(rbody, KEEP * 4).await {
            Ok(b) => {
                let kept = redact(&b);
                response = Response::from_parts(rparts, Body::from(b));
                kept
            }
            Err(_) => {
                response = ApiError::new(500, "application_error", "The answer could not be sent.").into_response();
                None
            }
        }
    } else {
        None
    };
    let at = api.engine.clock().now();
    let log = RequestLog {
        id: api.engine.request_log_id(at),
        at,
        method,
        endpoint,
        status: response.status().as_u16(),
        user_agent,
        api_key_id: Some(key.id.clone()),
        request_body,
        response_body,
        duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
    };
    // The log is written beside the answer, not before it: the answer waits for the commit
    // that holds what the request did, never for a second one holding its log. A crash can
    // lose the logs of the last instant (never an acknowledged email); readers of the logs
    // wait for writes under way (`logs_settled`). No more are under way than requests may be
    // in progress; past that, the request waits for its own (each holds up to two redacted
    // bodies of 64 KB).
    if let Ok(permit) = api.log_writes.clone().acquire_owned().await {
        queue_log(&api, QueuedLog { account, log, permit });
    }
    response
}

/// A request log on its way to the store, with the permit that counts it as under way.
pub(crate) struct QueuedLog {
    account: AccountId,
    log: RequestLog,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// The most logs one store write takes.
const LOG_BATCH: usize = 256;

/// Hands `log` to the task that writes logs, started here the first time (a request runs
/// inside the runtime; building the API need not), and again if the runtime that task ran on
/// is gone (an API may outlive a runtime: tests, embedders).
///
/// Why one task and batches: a write per request was a second store write for every request
/// (a task, a job for the store's writer, its tables opened), and measured about a sixth of
/// the throughput of single sends. The task takes whatever logs are waiting, up to
/// [`LOG_BATCH`], writes them in one `log_append_many`, and only then lets their permits go.
fn queue_log(api: &Api, mut log: QueuedLog) {
    let mut queue = api.log_queue.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(q) = queue.as_ref() {
        match q.send(log) {
            Ok(()) => return,
            // The writer's runtime is gone: the log comes back, for a writer on this one.
            Err(closed) => log = closed.0,
        }
    }
    let writer = start_log_writer(api.engine.clone());
    if writer.send(log).is_err() {
        // Cannot happen: the task holding the other end was spawned just now.
        tracing::warn!(target: "mailroom::http", "a request log could not be queued");
    }
    *queue = Some(writer);
}

/// The task that writes request logs in batches; its queue.
fn start_log_writer(engine: mailroom_core::Engine) -> tokio::sync::mpsc::UnboundedSender<QueuedLog> {
    let (queue, mut waiting) = tokio::sync::mpsc::unbounded_channel::<QueuedLog>();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(LOG_BATCH);
        // Ends when the API (the queue's sender) is dropped and every log is written.
        while waiting.recv_many(&mut batch, LOG_BATCH).await > 0 {
            let (logs, permits): (Vec<_>, Vec<_>) = batch.drain(..).map(|q| ((q.account, q.log), q.permit)).unzip();
            // A failed write of the logs must not fail the requests they record.
            if let Some(store) = engine.storage().request_logs()
                && let Err(e) = store.log_append_many(logs).await
            {
                tracing::warn!(target: "mailroom::http", error = %e, "request logs could not be written");
            }
            // The permits go after the write: `logs_settled` now sees these logs written.
            drop(permits);
        }
    });
    queue
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn only_identity_is_a_supported_content_encoding() {
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_ENCODING, HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("?")));
            }
            unsupported_coding(&h)
        };
        assert_eq!(with(&[]), None);
        assert_eq!(with(&["identity"]), None);
        assert_eq!(with(&[" Identity , identity"]), None);
        assert_eq!(with(&["gzip"]).as_deref(), Some("gzip"));
        assert_eq!(with(&["identity, br"]).as_deref(), Some("identity, br"));
        assert_eq!(with(&["identity", "deflate"]).as_deref(), Some("identity, deflate"));
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_json_and_the_router_lives_on() {
        #[allow(clippy::panic)]
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        async fn fine() -> &'static str {
            "fine"
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(fine))
            .route("/teapot", get(|| async { (axum::http::StatusCode::IM_A_TEAPOT, "short and stout") }))
            .layer(axum::middleware::from_fn(json_errors))
            .layer(axum::middleware::from_fn(catch_panic));
        let call = |path: &'static str| {
            let app = app.clone();
            async move {
                let r = app.oneshot(Request::builder().uri(path).body(Body::empty()).unwrap_or_default()).await;
                let r = r.unwrap_or_else(|e| match e {});
                let status = r.status().as_u16();
                let ct = r.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_string());
                let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap_or_default();
                (status, ct, serde_json::from_slice::<serde_json::Value>(&body).ok())
            }
        };
        let (status, ct, body) = call("/boom").await;
        assert_eq!((status, ct.as_deref()), (500, Some("application/json")));
        let body = body.unwrap_or_default();
        assert_eq!(body["name"], "application_error");
        assert!(!body.to_string().contains("handler bug"), "a panic's text is not shown: {body}");
        assert_eq!(call("/fine").await.0, 200, "the router lives on");
        // A plain-text error of the HTTP layer becomes JSON with its status and its words.
        let (status, _, body) = call("/teapot").await;
        let body = body.unwrap_or_default();
        assert_eq!(
            (status, body["statusCode"].as_u64(), body["message"].as_str()),
            (418, Some(418), Some("short and stout"))
        );
    }
}
