//! # mailroom-http
//!
//! The hosted service's REST API over a mailroom [`Engine`], as an axum [`Router`] a host can
//! mount or serve: `POST /emails`, `POST /emails/batch`, `GET /emails`, `GET /emails/{id}`,
//! `PATCH /emails/{id}`, `POST /emails/{id}/cancel`.
//!
//! Invariants: every response is JSON, errors included (`{"statusCode", "message", "name"}`,
//! the catalogue's names and statuses) — malformed JSON, a wrong content type, an oversize
//! body, an unknown path or method all get one, never HTML or plain text; a handler never
//! panics on input; the engine decides every rule, this layer only translates.

mod attachments;
mod keys;
mod limit;
mod logs;

pub use keys::{AuthError, KeyRing};
pub use limit::{Quota, RateLimiter};
pub use logs::sdk_name;
pub use mailroom_core::ports::{ApiKeyRecord, KeyPermission};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use mailroom_core::email::{AccountId, EmailId, PageRequest};
use mailroom_core::request::{EmailRequest, batch_from_json};
use mailroom_core::{BatchMode, BatchOptions, Engine, Error, SendOptions};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// The largest request body: the hosted service's 40 MB per email, plus room for base64 and
/// JSON around it.
pub const MAX_BODY_BYTES: usize = 56 << 20;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct Api {
    engine: Engine,
    keys: KeyRing,
    limiter: Arc<RateLimiter>,
    logs: Option<Arc<dyn mailroom_core::ports::RequestLogStore>>,
    /// Signs attachment download URLs; random per process, so links die with a restart
    /// (they last an hour at most anyway).
    url_key: [u8; 32],
}

impl Api {
    /// The API over `engine`, accepting the keys in `keys`, at the default 10 requests per
    /// second per key. Each key acts for its own account (`Engine::with_account`).
    pub fn new(engine: Engine, keys: KeyRing) -> Api {
        let mut url_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut url_key);
        Api { engine, keys, limiter: Arc::new(RateLimiter::new(10)), logs: None, url_key }
    }

    /// Records every authenticated request (redacted) in `logs`, and serves `GET /logs` and
    /// `GET /logs/export` from it.
    pub fn request_logs(mut self, logs: Arc<dyn mailroom_core::ports::RequestLogStore>) -> Api {
        self.logs = Some(logs);
        self
    }

    /// Requests per second per key (0: unlimited).
    pub fn rate_limit(mut self, per_second: u32) -> Api {
        self.limiter = Arc::new(RateLimiter::new(per_second));
        self
    }
}

/// The API's routes over `api`.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/emails", post(send).get(list))
        .route("/emails/batch", post(batch))
        .route("/emails/{id}", get(get_email).patch(reschedule))
        .route("/emails/{id}/cancel", post(cancel))
        .route("/emails/export", get(logs::export_emails))
        .route("/emails/{id}/attachments", get(attachments::list))
        .route("/emails/{id}/attachments/{attachment_id}", get(attachments::get))
        .route("/emails/{id}/attachments/{attachment_id}/content", get(attachments::download))
        .route("/logs", get(logs::list))
        .route("/logs/export", get(logs::export_logs))
        .route("/api-keys", post(create_key).get(list_keys))
        .route("/api-keys/{id}", delete(revoke_key))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(api.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

/// Authentication and the rate limit, before any handler: the key must exist, be active and
/// be allowed on the endpoint; every answer to an identified key carries the RateLimit
/// headers, and a request over the limit gets 429 with `retry-after`.
async fn guard(State(api): State<Api>, mut req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // A signed attachment download needs no key: its handler checks the signature.
    if req.method() == Method::GET && req.uri().path().starts_with("/emails/") && req.uri().path().ends_with("/content")
    {
        return next.run(req).await;
    }
    let sending = req.method() == Method::POST && matches!(req.uri().path(), "/emails" | "/emails/batch");
    let endpoint = if sending { Endpoint::Sending } else { Endpoint::Other };
    let (account, key) = match authenticate(&api, req.headers(), endpoint).await {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let started = std::time::Instant::now();
    let quota = api.limiter.check(&key.id, started);
    // The log keeps the request body: read it here (bounded as the handlers bound it) and
    // hand the same bytes on.
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let user_agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut request_body = None;
    if api.logs.is_some() {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return ApiError::new(
                    413,
                    "validation_error",
                    format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
                )
                .into_response();
            }
        };
        request_body = logs::redact(&bytes);
        req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    let mut response = if quota.allowed {
        req.extensions_mut().insert(api.engine.with_account(account.0.as_ref()).with_api_key(&key.id));
        req.extensions_mut().insert(account.clone());
        req.extensions_mut().insert(key.clone());
        next.run(req).await
    } else {
        let mut r = ApiError::new(
            429,
            "rate_limit_exceeded",
            "Too many requests. You can only make a limited number of requests per second.",
        )
        .into_response();
        r.headers_mut().insert(header::RETRY_AFTER, quota.reset.into());
        r
    };
    if quota.limit > 0 {
        let h = response.headers_mut();
        h.insert("ratelimit-limit", quota.limit.into());
        h.insert("ratelimit-remaining", quota.remaining.into());
        h.insert("ratelimit-reset", quota.reset.into());
    }
    let Some(store) = &api.logs else { return response };
    // Exports stream: their bodies are not logged (nor held).
    let streamed = path.ends_with("/export");
    let response_body = if streamed {
        None
    } else {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        response = Response::from_parts(parts, axum::body::Body::from(bytes.clone()));
        logs::redact(&bytes)
    };
    let log = mailroom_core::ports::RequestLog {
        // Time-ordered, so that a store lists newest first by id.
        id: uuid::Uuid::now_v7().as_u128(),
        at: api.engine.clock().now(),
        method,
        endpoint: path,
        status: response.status().as_u16(),
        user_agent,
        api_key_id: Some(key.id),
        request_body,
        response_body,
        duration_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
    };
    // A failed write of the log must not fail the request it records.
    if let Err(e) = store.log_append(&account, log).await {
        tracing::warn!(error = %e, "a request log could not be written");
    }
    response
}

/// An error in the wire format.
#[derive(Debug)]
struct ApiError {
    status: u16,
    name: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: u16, name: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, name, message: message.into() }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let body = e.body();
        ApiError { status: body.status_code, name: body.name.as_str(), message: body.message }
    }
}

impl From<mailroom_core::FieldError> for ApiError {
    fn from(e: mailroom_core::FieldError) -> ApiError {
        Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({"statusCode": self.status, "message": self.message, "name": self.name}))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Which endpoints a key may call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Sending,
    Other,
}

async fn authenticate(
    api: &Api,
    headers: &HeaderMap,
    endpoint: Endpoint,
) -> Result<(AccountId, ApiKeyRecord), ApiError> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let (account, key) = api.keys.authenticate(value).await.map_err(|e| match e {
        AuthError::Missing => ApiError::new(401, "missing_api_key", "Missing API key in the authorization header"),
        AuthError::Invalid => ApiError::new(403, "invalid_api_key", "API key is invalid"),
        AuthError::Store(e) => Error::from(e).into(),
    })?;
    if endpoint == Endpoint::Other && matches!(key.permission, KeyPermission::SendingAccess { .. }) {
        return Err(ApiError::new(401, "restricted_api_key", "This API key is restricted to only send emails"));
    }
    Ok((account, key))
}

/// A sending key limited to a domain sends only from that domain (or its subdomains).
fn check_sender(key: &ApiKeyRecord, requests: &[EmailRequest]) -> Result<(), ApiError> {
    let KeyPermission::SendingAccess { domain: Some(domain) } = &key.permission else { return Ok(()) };
    for r in requests {
        let from = r.from.as_deref().unwrap_or_default();
        let sender_domain = mailroom_core::address::Mailbox::parse(from).map(|m| m.domain).unwrap_or_default();
        let allowed = sender_domain == *domain || sender_domain.ends_with(&format!(".{domain}"));
        if !from.is_empty() && !allowed {
            return Err(ApiError::new(403, "validation_error", format!("This API key can only send from {domain}.")));
        }
    }
    Ok(())
}

/// The request body, checked to be JSON (an empty body reads as `{}`, as Node sends for
/// cancel). `None`: there was no body.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Option<Bytes>, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(413, "validation_error", format!("The request body is larger than {MAX_BODY_BYTES} bytes."))
        } else {
            ApiError::new(400, "validation_error", format!("The request body could not be read: {e}"))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if mime != "application/json" {
        return Err(ApiError::new(
            400,
            "validation_error",
            format!("The Content-Type must be application/json (got {content_type:?})."),
        ));
    }
    Ok(Some(body))
}

/// A small JSON object body (`{}` when there is none) as `T`; a type error is 422.
fn json_object<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = json_body(headers, body)?.unwrap_or_else(|| Bytes::from_static(b"{}"));
    serde_json::from_slice(&body).map_err(|e| ApiError::new(422, "validation_error", format!("Invalid JSON body: {e}")))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| ApiError::new(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")),
    }
}

fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok((StatusCode::OK, Json(value)).into_response())
}

fn email_id(id: &str) -> Result<EmailId, ApiError> {
    Ok(id.parse::<EmailId>()?)
}

async fn send(
    Extension(engine): Extension<Engine>,
    Extension(key): Extension<ApiKeyRecord>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let body = json_body(&headers, body)?.unwrap_or_else(|| Bytes::from_static(b"{}"));
    let request = EmailRequest::from_json(&body)?;
    check_sender(&key, std::slice::from_ref(&request))?;
    let sent = engine.send(request, SendOptions { idempotency_key: idempotency_key(&headers)? }).await?;
    ok(sent)
}

async fn batch(
    Extension(engine): Extension<Engine>,
    Extension(key): Extension<ApiKeyRecord>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let mode = match headers.get("x-batch-validation").map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase()) {
        None => BatchMode::Strict,
        Some(m) if m == "strict" => BatchMode::Strict,
        Some(m) if m == "permissive" => BatchMode::Permissive,
        Some(m) => {
            return Err(ApiError::new(
                422,
                "validation_error",
                format!("x-batch-validation must be strict or permissive, not {m:?}."),
            ));
        }
    };
    let body = json_body(&headers, body)?.unwrap_or_else(|| Bytes::from_static(b"[]"));
    let requests = batch_from_json(&body)?;
    check_sender(&key, &requests)?;
    let sent = engine.send_batch(requests, BatchOptions { mode, idempotency_key: idempotency_key(&headers)? }).await?;
    ok(sent)
}

async fn get_email(Extension(engine): Extension<Engine>, Path(id): Path<String>) -> ApiResult {
    ok(engine.get(email_id(&id)?).await?)
}

async fn list(
    Extension(engine): Extension<Engine>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = query.map_err(|e| ApiError::new(422, "validation_error", format!("Invalid query string: {e}")))?;
    // The core's default page size is the Node SDK's documented 20 (Python's docs say 10).
    let limit = q
        .get("limit")
        .map(|l| {
            l.parse::<usize>().map_err(|_| {
                ApiError::new(
                    422,
                    "validation_error",
                    format!("The `limit` parameter must be a number from 1 to 100, not {l:?}."),
                )
            })
        })
        .transpose()?;
    let cursor = |name: &str| q.get(name).map(|v| email_id(v)).transpose();
    let page = PageRequest::new(limit, cursor("after")?, cursor("before")?)?;
    ok(engine.list(page).await?)
}

#[derive(Deserialize)]
struct Reschedule {
    scheduled_at: Option<String>,
}

async fn reschedule(
    Extension(engine): Extension<Engine>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = email_id(&id)?;
    // The Python SDK also sends "id" in the body: any other field is ignored.
    let r: Reschedule = json_object(&headers, body)?;
    let when =
        r.scheduled_at.ok_or_else(|| ApiError::new(422, "missing_required_field", "Missing `scheduled_at` field."))?;
    ok(engine.reschedule(id, &when).await?)
}

async fn cancel(
    Extension(engine): Extension<Engine>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    // Node sends no body, Python `{}`: either is fine, anything else must still be JSON.
    json_body(&headers, body)?;
    ok(engine.cancel(email_id(&id)?).await?)
}

#[derive(Deserialize)]
struct NewKey {
    name: Option<String>,
    permission: Option<String>,
    /// The one sending domain a `sending_access` key may send from.
    domain: Option<String>,
}

async fn create_key(
    State(api): State<Api>,
    Extension(account): Extension<AccountId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let k: NewKey = json_object(&headers, body)?;
    let name = k
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::new(422, "missing_required_field", "Missing `name` field."))?;
    if name.chars().count() > 50 {
        return Err(ApiError::new(422, "validation_error", "The `name` field must be at most 50 characters."));
    }
    let permission = match k.permission.as_deref() {
        None | Some("full_access") => KeyPermission::FullAccess,
        Some("sending_access") => {
            KeyPermission::SendingAccess { domain: k.domain.map(|d| d.trim().to_ascii_lowercase()) }
        }
        Some(other) => {
            return Err(ApiError::new(
                422,
                "validation_error",
                format!("`permission` must be full_access or sending_access, not {other:?}."),
            ));
        }
    };
    let (key, token) = api.keys.create(&account, &name, permission).await.map_err(Error::from)?;
    ok(json!({"id": key.id, "token": token}))
}

async fn list_keys(State(api): State<Api>, Extension(account): Extension<AccountId>) -> ApiResult {
    let keys = api.keys.list(&account).await.map_err(Error::from)?;
    let data: Vec<_> = keys
        .iter()
        .filter(|k| k.revoked_at.is_none())
        .map(|k| json!({"id": k.id, "name": k.name, "created_at": k.created_at.to_rfc3339()}))
        .collect();
    ok(json!({"object": "list", "has_more": false, "data": data}))
}

async fn revoke_key(
    State(api): State<Api>,
    Extension(account): Extension<AccountId>,
    Path(id): Path<String>,
) -> ApiResult {
    if api.keys.revoke(&account, &id).await.map_err(Error::from)? {
        ok(json!({}))
    } else {
        Err(ApiError::new(404, "not_found", "API key not found"))
    }
}

async fn not_found() -> ApiError {
    ApiError::new(404, "not_found", "The requested endpoint could not be found.")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(405, "method_not_allowed", format!("Method {method} is not allowed on this endpoint."))
}
