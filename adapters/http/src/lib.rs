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

mod keys;
mod limit;

pub use keys::{ApiKey, AuthError, KeyRing, Permission};
pub use limit::{Quota, RateLimiter};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mailroom_core::email::{EmailId, PageRequest};
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
    keys: Arc<KeyRing>,
    limiter: Arc<RateLimiter>,
}

impl Api {
    /// The API over `engine`, accepting `keys`, at the default 10 requests per second per key.
    pub fn new(engine: Engine, keys: Arc<KeyRing>) -> Api {
        Api { engine, keys, limiter: Arc::new(RateLimiter::new(10)) }
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
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(api.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

/// Authentication and the rate limit, before any handler: the key must exist, be active and
/// be allowed on the endpoint; every answer to an identified key carries the RateLimit
/// headers, and a request over the limit gets 429 with `retry-after`.
async fn guard(State(api): State<Api>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let sending = req.method() == Method::POST && matches!(req.uri().path(), "/emails" | "/emails/batch");
    let endpoint = if sending { Endpoint::Sending } else { Endpoint::Other };
    let key = match authenticate(&api, req.headers(), endpoint) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let quota = api.limiter.check(&key.id, std::time::Instant::now());
    let mut response = if quota.allowed {
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

fn authenticate(api: &Api, headers: &HeaderMap, endpoint: Endpoint) -> Result<ApiKey, ApiError> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let key = api.keys.authenticate(value).map_err(|e| match e {
        AuthError::Missing => ApiError::new(401, "missing_api_key", "Missing API key in the authorization header"),
        AuthError::Invalid => ApiError::new(403, "invalid_api_key", "API key is invalid"),
    })?;
    if endpoint == Endpoint::Other && matches!(key.permission, Permission::SendingAccess { .. }) {
        return Err(ApiError::new(401, "restricted_api_key", "This API key is restricted to only send emails"));
    }
    Ok(key)
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

async fn send(State(api): State<Api>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let body = json_body(&headers, body)?.unwrap_or_else(|| Bytes::from_static(b"{}"));
    let request = EmailRequest::from_json(&body)?;
    let sent = api.engine.send(request, SendOptions { idempotency_key: idempotency_key(&headers)? }).await?;
    ok(sent)
}

async fn batch(State(api): State<Api>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> ApiResult {
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
    let sent =
        api.engine.send_batch(requests, BatchOptions { mode, idempotency_key: idempotency_key(&headers)? }).await?;
    ok(sent)
}

async fn get_email(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    ok(api.engine.get(email_id(&id)?).await?)
}

async fn list(
    State(api): State<Api>,
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
    ok(api.engine.list(page).await?)
}

#[derive(Deserialize)]
struct Reschedule {
    scheduled_at: Option<String>,
}

async fn reschedule(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let id = email_id(&id)?;
    let body = json_body(&headers, body)?.unwrap_or_else(|| Bytes::from_static(b"{}"));
    // The Python SDK also sends "id" in the body: any other field is ignored.
    let r: Reschedule = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(422, "validation_error", format!("Invalid JSON body: {e}")))?;
    let when =
        r.scheduled_at.ok_or_else(|| ApiError::new(422, "missing_required_field", "Missing `scheduled_at` field."))?;
    ok(api.engine.reschedule(id, &when).await?)
}

async fn cancel(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    // Node sends no body, Python `{}`: either is fine, anything else must still be JSON.
    json_body(&headers, body)?;
    ok(api.engine.cancel(email_id(&id)?).await?)
}

async fn not_found() -> ApiError {
    ApiError::new(404, "not_found", "The requested endpoint could not be found.")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(405, "method_not_allowed", format!("Method {method} is not allowed on this endpoint."))
}
