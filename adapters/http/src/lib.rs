//! # mailroom-http
//!
//! The hosted service's REST API over a mailroom [`Engine`], as an axum [`Router`] a host can
//! mount ([`router`]), and a server hardened for the open internet ([`serve`]): header, body
//! and idle timeouts, a connection cap, TLS from certificate files, and JSON for every answer,
//! the HTTP layer's own included.
//!
//! ```no_run
//! use mailroom_core::{Engine, memory::MemoryStorage};
//! use mailroom_http::{Api, ApiConfig, ServerConfig, router, serve};
//! use std::sync::Arc;
//!
//! # async fn run() -> std::io::Result<()> {
//! let engine = Engine::builder(Arc::new(MemoryStorage::new())).build();
//! let app = router(Api::new(engine, ApiConfig::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! serve(listener, app, ServerConfig::default(), std::future::pending()).await
//! # }
//! ```
//!
//! Invariants: every response is JSON, errors included (`{"statusCode", "message", "name"}`,
//! the catalogue's names and statuses) — malformed JSON, a wrong content type, an oversize
//! body, an unknown path or method, a panic in a handler all get one; a request's memory is
//! bounded (its body limit is enforced while reading, request logs keep a bounded copy, and
//! a body is not read at all for a request that is refused before it); the engine decides
//! every rule, this layer only translates.
#![warn(missing_docs)]

mod attachments;
mod dashboard;
mod domains;
mod guard;
mod keys;
mod limit;
mod logs;
mod ops;
mod pages;
mod receiving;
mod redact;
mod server;
mod suppressions;
mod webhooks;

pub use dashboard::DashboardConfig;
pub use limit::{Quota, RateLimiter, ip_subject};
pub use logs::sdk_name;
pub use mailroom_core::ports::{ApiKeyRecord, KeyPermission};
pub use redact::{KEEP as LOG_BODY_LIMIT, redact as redact_for_log};
pub use server::{ServerConfig, TlsError, serve, tls_config};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use mailroom_core::email::{AccountId, EmailId, PageRequest};
use mailroom_core::request::{EmailRequest, batch_from_json_limited};
use mailroom_core::{BatchMode, BatchOptions, Engine, Error, SendOptions};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The largest request body by default: the hosted service's 40 MB per email, plus room for
/// base64 and JSON around it.
pub const MAX_BODY_BYTES: usize = 56 << 20;

/// Requests per second by default, per key and per account.
pub const DEFAULT_RATE_LIMIT: u32 = 10;

/// Rate limits, each in requests per second (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimits {
    /// Per API key.
    pub per_key: u32,
    /// Per account, whatever key it uses (so minting keys does not multiply the allowance).
    pub per_account: u32,
    /// Per client address, for requests without a valid key (floods and key guessing).
    pub unauthenticated_per_ip: u32,
    /// Per client address, for signed attachment downloads (which need no key).
    pub downloads_per_ip: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_key: DEFAULT_RATE_LIMIT,
            per_account: DEFAULT_RATE_LIMIT,
            unauthenticated_per_ip: 10,
            downloads_per_ip: 20,
        }
    }
}

impl RateLimits {
    /// The requests per second an API key may make: the stricter of the per-key and
    /// per-account limits; `None` when both are off.
    pub fn for_keys(&self) -> Option<u32> {
        [self.per_key, self.per_account].into_iter().filter(|&l| l > 0).min()
    }

    /// No limits at all (tests, trusted networks).
    pub fn none() -> RateLimits {
        RateLimits { per_key: 0, per_account: 0, unauthenticated_per_ip: 0, downloads_per_ip: 0 }
    }
}

/// How the API treats requests. Change fields of [`ApiConfig::default`]; new ones may be added.
#[derive(Clone)]
#[non_exhaustive]
pub struct ApiConfig {
    /// The largest request body; larger ones get 413 before they are read.
    pub max_body_bytes: usize,
    /// How long reading one request body may take in all (408 after).
    pub body_timeout: Duration,
    /// Requests handled at once; beyond, 503 `service_unavailable` at once (load shedding).
    pub max_concurrent_requests: usize,
    /// Request bodies held in memory at once, in bytes (each counted twice: it is parsed).
    /// A large body waits up to `body_timeout` for room, then gets 503.
    pub max_body_memory: usize,
    /// Rate limits.
    pub rate_limits: RateLimits,
    /// Addresses of reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The base of the URLs the API hands out (`https://mail.example.com`); without it they
    /// are built from the request's (checked) `Host` header.
    pub public_url: Option<String>,
    /// The key that signs download URLs; random per process when `None` (links die with a
    /// restart; they last an hour at most anyway).
    pub url_key: Option<[u8; 32]>,
    /// Renders `/metrics` (Prometheus text); `None`: no such route.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The dashboard in the browser, and where; `None`: none (the API alone).
    pub dashboard: Option<DashboardConfig>,
    /// The resolver for what the dashboard checks in DNS on request (an email's insights, a
    /// domain's records now); `None`: insights say so, domains are checked on schedule.
    pub dns: Option<Arc<dyn mailroom_core::DnsResolver>>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_timeout", &self.body_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("max_body_memory", &self.max_body_memory)
            .field("rate_limits", &self.rate_limits)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("public_url", &self.public_url)
            .field("metrics", &self.metrics.is_some())
            .field("dashboard", &self.dashboard)
            .field("dns", &self.dns.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: MAX_BODY_BYTES,
            body_timeout: Duration::from_secs(60),
            max_concurrent_requests: 256,
            max_body_memory: 512 << 20,
            rate_limits: RateLimits::default(),
            trusted_proxies: Vec::new(),
            public_url: None,
            url_key: None,
            metrics: None,
            dashboard: None,
            dns: None,
        }
    }
}

/// The limiters of one API.
#[derive(Debug)]
struct Limiters {
    key: RateLimiter,
    account: RateLimiter,
    unauthenticated: RateLimiter,
    downloads: RateLimiter,
}

/// What the handlers share. Cheap to clone: one reference count. Why one `Arc` around all of
/// it: every layer of the router clones its state for every request (four layers, then the
/// handler), and the eleven reference counts of the parts (the engine's three included),
/// each an atomic shared by both cores, were a measurable share of a single send's CPU.
#[derive(Clone)]
pub struct Api(Arc<ApiInner>);

impl std::ops::Deref for Api {
    type Target = ApiInner;
    fn deref(&self) -> &ApiInner {
        &self.0
    }
}

/// The shared parts of an [`Api`].
pub struct ApiInner {
    engine: Engine,
    config: Arc<ApiConfig>,
    limiters: Arc<Limiters>,
    /// Requests in progress (load shedding).
    requests: Arc<tokio::sync::Semaphore>,
    /// Body memory, in KiB.
    body_memory: Arc<tokio::sync::Semaphore>,
    /// All of it, in KiB: the most one request is charged.
    body_memory_kib: u32,
    /// Request-log writes under way (see [`Api::logs_settled`]); as many permits as requests
    /// in progress, so the logs waiting for the disk hold no more memory than the requests
    /// that made them could.
    log_writes: Arc<tokio::sync::Semaphore>,
    log_permits: u32,
    /// The queue of the task that writes request logs in batches, started by the first log
    /// (and again should the runtime it ran on be gone).
    log_queue: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<guard::QueuedLog>>>,
    url_key: Arc<ring::hmac::Key>,
    dashboard: Option<Arc<dashboard::Dashboard>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for ApiInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("engine", &self.engine).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Api {
    /// The API over `engine`. Keys, request logs and domains come from the engine's store
    /// (its extensions); each key acts for its own account.
    pub fn new(engine: Engine, config: ApiConfig) -> Api {
        let key = config.url_key.unwrap_or_else(|| {
            let mut k = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut k);
            k
        });
        let r = config.rate_limits;
        let limiters = Limiters {
            key: RateLimiter::new(r.per_key),
            account: RateLimiter::new(r.per_account),
            unauthenticated: RateLimiter::new(r.unauthenticated_per_ip),
            downloads: RateLimiter::new(r.downloads_per_ip),
        };
        let kib = u32::try_from((config.max_body_memory >> 10).max(1)).unwrap_or(u32::MAX);
        let log_permits = u32::try_from(config.max_concurrent_requests.max(1)).unwrap_or(u32::MAX);
        Api(Arc::new(ApiInner {
            requests: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests.max(1))),
            body_memory: Arc::new(tokio::sync::Semaphore::new(kib as usize)),
            body_memory_kib: kib,
            log_writes: Arc::new(tokio::sync::Semaphore::new(log_permits as usize)),
            log_permits,
            log_queue: std::sync::Mutex::new(None),
            url_key: Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key)),
            dashboard: config.dashboard.as_ref().map(|d| Arc::new(dashboard::Dashboard::new(d, &engine.session_key()))),
            limiters: Arc::new(limiters),
            config: Arc::new(config),
            engine,
        }))
    }

    /// The engine behind the API.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Waits until every request-log write begun before the call is durable: a client that
    /// reads its logs sees the requests it was already answered for, and a server stopping
    /// keeps the logs of its last answers.
    pub async fn logs_settled(&self) {
        // The semaphore is fair: this waits for every earlier writer, not for later ones.
        drop(self.log_writes.acquire_many(self.log_permits).await);
    }
}

/// The API's routes over `api`.
pub fn router(api: Api) -> Router {
    let max_body = api.config.max_body_bytes;
    let mut public = Router::new()
        .route("/emails/{id}/attachments/{attachment_id}/content", get(attachments::download))
        .route("/shared", get(pages::shared))
        .route("/t/o/{token}", get(pages::open))
        .route("/t/c/{*token}", get(pages::click))
        .route("/unsubscribe/{*token}", get(pages::unsubscribe_page).post(pages::unsubscribe))
        .route("/receiving/download/{*token}", get(receiving::download))
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready));
    if api.config.metrics.is_some() {
        public = public.route("/metrics", get(ops::metrics));
    }
    if let Some(d) = &api.config.dashboard {
        public = public
            .route("/", get(dashboard::root))
            .route(&format!("{}/", d.path), get(dashboard::root))
            .nest(&d.path, dashboard::routes());
    }
    let authenticated = Router::new()
        .route("/emails", post(send).get(list))
        .route("/emails/batch", post(batch))
        .route("/emails/metrics", get(metrics))
        .route("/usage", get(usage))
        .route("/emails/{id}", get(get_email).patch(reschedule))
        .route("/emails/{id}/cancel", post(cancel))
        .route("/emails/{id}/share", post(pages::share))
        .route("/emails/export", get(logs::export_emails))
        .route("/emails/receiving", get(receiving::list))
        .route("/emails/receiving/{id}", get(receiving::get))
        .route("/emails/receiving/{id}/attachments", get(receiving::attachments))
        .route("/emails/receiving/{id}/attachments/{attachment_id}", get(receiving::attachment))
        .route("/emails/{id}/attachments", get(attachments::list))
        .route("/emails/{id}/attachments/{attachment_id}", get(attachments::get))
        .route("/suppressions", post(suppressions::add).get(suppressions::list))
        .route("/suppressions/{id}", get(suppressions::get).delete(suppressions::remove))
        .route("/suppressions/batch/add", post(suppressions::batch_add))
        .route("/suppressions/batch/remove", post(suppressions::batch_remove))
        .route("/logs", get(logs::list))
        .route("/logs/export", get(logs::export_logs))
        .route("/logs/{id}", get(logs::get))
        .route("/api-keys", post(keys::create).get(keys::list))
        .route("/api-keys/{id}", delete(keys::revoke).patch(keys::rename))
        .route("/domains", post(domains::create).get(domains::list))
        .route("/domains/{id}", get(domains::get).patch(domains::update).delete(domains::remove))
        .route("/domains/{id}/verify", post(domains::verify))
        .route("/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/webhooks/{id}", get(webhooks::get).patch(webhooks::update).delete(webhooks::remove))
        .route("/webhooks/{id}/signing-secret/rotate", post(webhooks::rotate))
        .route("/webhooks/{id}/events", get(webhooks::events))
        .route("/webhooks/{id}/events/{event_id}", get(webhooks::event))
        .route("/webhooks/{id}/events/{event_id}/replay", post(webhooks::replay))
        .route("/webhooks/{id}/events/{event_id}/attempts", get(webhooks::attempts))
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), guard::authenticated));
    Router::new()
        .merge(public)
        .merge(authenticated)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(api.clone(), guard::shed))
        .layer(axum::middleware::from_fn(guard::json_errors))
        .layer(axum::middleware::from_fn(guard::catch_panic))
        .layer(axum::middleware::from_fn(guard::observe))
        .with_state(api)
}

/// An error in the wire format.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: u16,
    name: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, name: &'static str, message: impl Into<String>) -> ApiError {
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

impl From<mailroom_core::StorageError> for ApiError {
    fn from(e: mailroom_core::StorageError) -> ApiError {
        Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({"statusCode": self.status, "message": self.message, "name": self.name}))).into_response()
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// The key a request was authenticated with, and the engine acting for it (set by the guard
/// on every authenticated route).
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    pub(crate) engine: Engine,
    pub(crate) account: AccountId,
}

impl<S: Send + Sync> FromRequestParts<S> for Auth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Auth>()
            .cloned()
            .ok_or_else(|| ApiError::new(401, "missing_api_key", "Missing API key in the authorization header"))
    }
}

/// The request body, checked to be JSON (an empty body reads as `None`, as Node sends for
/// cancel).
fn json_body(headers: &HeaderMap, body: Bytes) -> Result<Option<Bytes>, ApiError> {
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

/// A small JSON object body (`{}` when there is none) as `T`; a type error is 422, and so is
/// anything after the object.
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: Bytes) -> Result<T, ApiError> {
    let body = json_body(headers, body)?.unwrap_or_else(|| Bytes::from_static(b"{}"));
    // serde's derive would also read a struct from an array, field by field in order.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(422, "validation_error", "Invalid JSON body: it must be a JSON object."));
    }
    // As an email's body: lists too long for any limit are refused before they are read.
    mailroom_core::json_entries::check(&body).map_err(|mut e| {
        if e.path.is_empty() {
            e.path = "body".into();
        }
        ApiError::from(e)
    })?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // A value of the wrong type is named by its field, as the email's fields are; a body
        // that is not JSON is the body's fault, wherever the parser had got to.
        let path = e.path().to_string();
        let inner = e.into_inner();
        match (inner.is_syntax() || inner.is_eof(), path.as_str()) {
            (false, p) if p != "." => {
                let why = inner.to_string();
                let why = why.rfind(" at line ").map_or(why.as_str(), |i| &why[..i]).to_string();
                ApiError::new(422, "validation_error", format!("Invalid `{p}` field: {why}."))
            }
            _ => ApiError::new(422, "validation_error", format!("Invalid JSON body: {inner}")),
        }
    })?;
    de.end().map_err(|e| ApiError::new(422, "validation_error", format!("Invalid JSON body: {e}")))?;
    Ok(value)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let refuse = |why: &str| ApiError::new(400, "invalid_idempotency_key", why);
    let mut keys = headers.get_all("idempotency-key").iter();
    let (Some(v), None) = (keys.next(), keys.next()) else {
        // Two keys (a client's and a proxy's, say) would leave which request this is a retry of
        // to a guess; taking either would silently drop the other.
        return match headers.contains_key("idempotency-key") {
            false => Ok(None),
            true => Err(refuse("Send one `Idempotency-Key` header, not several.")),
        };
    };
    // The length rule (1-256 chars) is the core's, with the hosted service's words.
    v.to_str()
        .map(|s| Some(s.to_string()))
        .map_err(|_| refuse("The key must be between 1-256 chars of visible ASCII (no control or non-ASCII bytes)."))
}

/// `limit` from 1 to 100 (default 20), as every list takes it.
pub(crate) fn page_limit(q: &std::collections::HashMap<String, String>) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(20),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(ApiError::new(
                422,
                "validation_error",
                format!("The `limit` parameter must be a number from 1 to 100, not {l:?}."),
            )),
        },
    }
}

/// The 422 for a cursor (`name`: `after` or `before`) that is the id of nothing on its list.
pub(crate) fn unknown_cursor(name: &str) -> ApiError {
    ApiError::new(422, "validation_error", format!("Invalid `{name}` field: it is the id of nothing on this list."))
}

/// One page of `all` (already in list order) by the `limit`, `after` and `before` parameters,
/// where a cursor is an item's id; and whether more follow in that direction.
pub(crate) fn page_by_id<'a, T>(
    all: &'a [T],
    id: impl Fn(&T) -> &str,
    q: &std::collections::HashMap<String, String>,
) -> Result<(&'a [T], bool), ApiError> {
    let limit = page_limit(q)?;
    if q.contains_key("after") && q.contains_key("before") {
        return Err(ApiError::new(422, "validation_error", "Use `after` or `before`, not both."));
    }
    let find = |name: &str, cursor: &str| all.iter().position(|t| id(t) == cursor).ok_or_else(|| unknown_cursor(name));
    Ok(if let Some(after) = q.get("after") {
        let rest = &all[find("after", after)? + 1..];
        (&rest[..rest.len().min(limit)], rest.len() > limit)
    } else if let Some(before) = q.get("before") {
        let head = &all[..find("before", before)?];
        let start = head.len().saturating_sub(limit);
        (&head[start..], start > 0)
    } else {
        (&all[..all.len().min(limit)], all.len() > limit)
    })
}

pub(crate) fn ok(value: impl serde::Serialize) -> ApiResult {
    Ok((StatusCode::OK, Json(value)).into_response())
}

pub(crate) fn email_id(id: &str) -> Result<EmailId, ApiError> {
    Ok(id.parse::<EmailId>()?)
}

pub(crate) type PathParam<T> = Result<Path<T>, axum::extract::rejection::PathRejection>;

/// A path parameter, or a JSON 400 naming it.
pub(crate) fn path<T>(p: PathParam<T>) -> Result<T, ApiError> {
    p.map(|Path(v)| v).map_err(|e| ApiError::new(400, "validation_error", format!("Invalid path: {e}")))
}

pub(crate) type QueryParam = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

pub(crate) fn query(q: QueryParam) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::new(422, "validation_error", format!("Invalid query string: {e}")))
}

async fn send(auth: Auth, headers: HeaderMap, body: Bytes) -> ApiResult {
    let body = json_body(&headers, body)?.unwrap_or_else(|| Bytes::from_static(b"{}"));
    let limit = auth.engine.limits().max_email_bytes;
    let request = EmailRequest::from_json_limited(&body, limit)?;
    // The parsed request holds what it needs (attachments decoded): the raw body goes now,
    // so that a large email is never held twice.
    drop(body);
    ok(auth.engine.send(request, SendOptions::keyed(idempotency_key(&headers)?)).await?)
}

async fn batch(auth: Auth, headers: HeaderMap, body: Bytes) -> ApiResult {
    // The Node SDK always sends the header, Python only when asked: absent means strict.
    let mode = match headers.get("x-batch-validation") {
        None => BatchMode::Strict,
        Some(v) => v.to_str().unwrap_or("").parse::<BatchMode>()?,
    };
    let body = json_body(&headers, body)?.unwrap_or_else(|| Bytes::from_static(b"[]"));
    let requests = batch_from_json_limited(&body, auth.engine.limits().max_email_bytes)?;
    drop(body);
    let options = BatchOptions::new(mode).keyed(idempotency_key(&headers)?);
    ok(auth.engine.send_batch(requests, options).await?)
}

async fn get_email(auth: Auth, id: PathParam<String>) -> ApiResult {
    ok(auth.engine.get(email_id(&path(id)?)?).await?)
}

async fn list(auth: Auth, q: QueryParam) -> ApiResult {
    ok(auth.engine.list(email_page(&query(q)?)?).await?)
}

/// `GET /emails/metrics`: the SDKs' `emails.metrics` (`mailroom_core::email_metrics`).
async fn metrics(auth: Auth, q: QueryParam) -> ApiResult {
    let now = auth.engine.clock().now();
    let query =
        mailroom_core::email_metrics::MetricsQuery::parse(&query(q)?, now).map_err(mailroom_core::Error::from)?;
    ok(auth.engine.email_metrics(&query).await?)
}

/// `GET /usage` (the SDKs' `usage.get`): the account's mail today and this month, its domains,
/// and the rate limit its keys run under: the stricter of the per-key and per-account limits
/// (`null` when both are off).
async fn usage(State(api): State<Api>, auth: Auth) -> ApiResult {
    ok(auth.engine.usage().await?.to_json(api.config.rate_limits.for_keys()))
}

/// A page of emails by the `limit`, `after` and `before` parameters, where a cursor is an
/// email id.
pub(crate) fn email_page(q: &std::collections::HashMap<String, String>) -> Result<PageRequest, ApiError> {
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
    // Refused under the cursor's own name: the request has no `id` in it.
    let cursor = |name: &str| q.get(name).map(|v| EmailId::parse_as(name, v)).transpose();
    Ok(PageRequest::new(limit, cursor("after")?, cursor("before")?)?)
}

#[derive(Deserialize)]
struct Reschedule {
    scheduled_at: Option<String>,
}

async fn reschedule(auth: Auth, headers: HeaderMap, id: PathParam<String>, body: Bytes) -> ApiResult {
    let id = email_id(&path(id)?)?;
    // The Python SDK also sends "id" in the body: any other field is ignored.
    let r: Reschedule = json_object(&headers, body)?;
    let when =
        r.scheduled_at.ok_or_else(|| ApiError::new(422, "missing_required_field", "Missing `scheduled_at` field."))?;
    ok(auth.engine.reschedule(id, &when).await?)
}

async fn cancel(auth: Auth, headers: HeaderMap, id: PathParam<String>, body: Bytes) -> ApiResult {
    // Node sends no body, Python `{}`: either is fine, anything else must still be JSON.
    json_body(&headers, body)?;
    ok(auth.engine.cancel(email_id(&path(id)?)?).await?)
}

async fn not_found() -> ApiError {
    ApiError::new(404, "not_found", "The requested endpoint could not be found.")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(405, "method_not_allowed", format!("Method {method} is not allowed on this endpoint."))
}
