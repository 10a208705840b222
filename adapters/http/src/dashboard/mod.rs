//! The dashboard: server-rendered pages over the same engine calls the API makes, for a person
//! signed in with a full-access API key.
//!
//! Invariants:
//! - every page is HTML from a template in `templates/` (compiled into the binary; values
//!   auto-escaped), styled by one stylesheet and helped by one small script, both served from
//!   `assets/` under the dashboard's path — no build step, no CDN, nothing from elsewhere;
//! - every answer carries a policy that runs only that script (`script-src 'self'`), loads
//!   nothing from elsewhere and cannot be framed; an email's HTML is never part of a dashboard
//!   page: it is served by its own route under `sandbox` (an opaque origin, no script), and
//!   shown in a sandboxed frame, with remote images only when asked for;
//! - a page is reached only with a session ([`session`]) whose key still exists, is not
//!   revoked and has full access; every change is a POST that carries the session's CSRF
//!   token and, when the browser names one, our own origin;
//! - each session sees its own account only: every call goes through the engine acting for
//!   the session's account and key, exactly as an API request with that key would;
//! - a page's work is bounded: lists are pages, a filtered email list reads at most
//!   [`SCAN_LIMIT`] emails per page, form bodies are at most 16 KB.

mod help;
mod session;

use crate::guard::{client_ip, peer};
use crate::{Api, ApiError, Auth};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use mailroom_core::email::{EmailId, PageRequest};
use mailroom_core::ports::{KeyPermission, LogFilter};
use serde::Deserialize;
use serde_json::{Value, json};
use session::{COOKIE, Session, Sessions};
use std::collections::HashMap;
use std::sync::OnceLock;

pub(crate) use help::for_name as help_for;

/// Where the dashboard is served and how its cookie is marked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DashboardConfig {
    /// The path it is served under (`/dashboard`): a path of its own, since the API's
    /// routes (`/emails`, `/logs`, …) own the top-level names. `/` redirects there.
    pub path: String,
    /// Mark the session cookie `Secure` (the server is reached over TLS).
    pub secure_cookie: bool,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig { path: "/dashboard".into(), secure_cookie: false }
    }
}

/// The top-level names the API (and the public pages) use: the dashboard may not take them.
const RESERVED: &[&str] = &[
    "emails",
    "logs",
    "api-keys",
    "domains",
    "webhooks",
    "shared",
    "t",
    "unsubscribe",
    "receiving",
    "health",
    "ready",
    "metrics",
];

impl DashboardConfig {
    /// The configuration for `path`, checked: `/` then lower-case letters, digits, `-` and
    /// `_` in segments, not `/` alone and not under a name the API uses.
    pub fn new(path: &str, secure_cookie: bool) -> Result<DashboardConfig, String> {
        let path = path.trim_end_matches('/');
        let segments: Vec<&str> = path.strip_prefix('/').map(|p| p.split('/').collect()).unwrap_or_default();
        let ok_segment = |s: &&str| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if segments.is_empty() || !segments.iter().all(ok_segment) {
            return Err(format!(
                "the dashboard's path must be like `/dashboard` (lower-case letters, digits, `-`, `_`), not {path:?}"
            ));
        }
        if RESERVED.contains(&segments[0]) {
            return Err(format!("the dashboard's path may not be under `/{}`: the API uses it", segments[0]));
        }
        Ok(DashboardConfig { path: path.to_string(), secure_cookie })
    }
}

/// The dashboard's state, shared by its handlers.
pub(crate) struct Dashboard {
    sessions: Sessions,
    base: String,
    secure_cookie: bool,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Dashboard {
    pub(crate) fn new(config: &DashboardConfig, secret: &[u8; 32]) -> Dashboard {
        Dashboard { sessions: Sessions::new(secret), base: config.path.clone(), secure_cookie: config.secure_cookie }
    }
}

/// How many emails a filtered list reads at most to fill one page (the rest is one click on).
pub(crate) const SCAN_LIMIT: usize = 2_000;

/// Emails per page.
const PAGE: usize = 25;

/// Suppressed addresses per page: the API's largest page.
const SUPPRESSIONS_PAGE: usize = 100;

/// The dashboard's routes, to be nested under its path.
pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/", get(root))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .route("/emails", get(emails))
        .route("/emails/export", get(export_emails))
        .route("/emails/{id}", get(email))
        .route("/emails/{id}/preview", get(preview))
        .route("/emails/{id}/share", post(share))
        .route("/emails/{id}/attachments/{index}", get(attachment))
        .route("/logs", get(logs))
        .route("/logs/export", get(export_logs))
        .route("/metrics", get(metrics))
        .route("/suppressions", get(suppressions))
        .route("/suppressions/remove", post(remove_suppression))
        .route("/domains", get(domains))
        .route("/domains/{id}", get(domain))
        .route("/domains/{id}/verify", post(verify_domain))
        .route("/webhooks", get(webhooks))
        .route("/webhooks/{id}", get(webhook))
        .route("/webhooks/{id}/events/{event}/replay", post(replay))
        .route("/api-keys", get(api_keys).post(create_key))
        .route("/api-keys/{id}/revoke", post(revoke_key))
        .fallback(missing)
        // Forms are small; nothing here takes an upload.
        .layer(DefaultBodyLimit::max(16 << 10))
}

fn dash(api: &Api) -> &Dashboard {
    // The routes are only mounted when the dashboard is configured.
    api.dashboard.as_deref().unwrap_or_else(|| unreachable!("dashboard routes without a dashboard"))
}

// ---------------------------------------------------------------------------------------------
// Templates and answers

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, source) in TEMPLATES {
            // The templates are constants of this crate; `every_template_renders` parses each.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "a dashboard template does not parse");
            }
        }
        env.add_filter("when", when);
        env.add_filter("bytes", |n: u64| human_bytes(n));
        env.add_filter("code", code);
        env
    })
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("emails.html", include_str!("templates/emails.html")),
    ("email.html", include_str!("templates/email.html")),
    ("logs.html", include_str!("templates/logs.html")),
    ("suppressions.html", include_str!("templates/suppressions.html")),
    ("metrics.html", include_str!("templates/metrics.html")),
    ("domains.html", include_str!("templates/domains.html")),
    ("domain.html", include_str!("templates/domain.html")),
    ("webhooks.html", include_str!("templates/webhooks.html")),
    ("webhook.html", include_str!("templates/webhook.html")),
    ("api_keys.html", include_str!("templates/api_keys.html")),
    ("error.html", include_str!("templates/error.html")),
];

/// `2 minutes ago`, with the exact time on hover, for an RFC 3339 time or the wire's
/// `2023-04-03 22:13:42.674981+00`.
fn when(state: &minijinja::State, value: String) -> minijinja::Value {
    let Some(t) = parse_time(&value) else { return minijinja::Value::from(value) };
    let now = state.lookup("now").and_then(|n| n.as_str().and_then(parse_time)).unwrap_or_else(Utc::now);
    let exact = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    minijinja::Value::from_safe_string(format!(
        "<time datetime=\"{}\" title=\"{exact}\">{}</time>",
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        relative(t, now)
    ))
}

/// Text with `backticked` spans as `<code>`, everything escaped.
fn code(text: String) -> minijinja::Value {
    let mut out = String::with_capacity(text.len() + 16);
    for (i, part) in text.split('`').enumerate() {
        let escaped = crate::pages::esc(part);
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(&escaped);
            out.push_str("</code>");
        } else {
            out.push_str(&escaped);
        }
    }
    minijinja::Value::from_safe_string(out)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
        chrono::NaiveDateTime::parse_from_str(s.trim_end_matches("+00"), "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|t| t.and_utc())
    })
}

/// `just now`, `5 minutes ago`, `in 3 hours`, `2 days ago`.
pub(crate) fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, future) = (secs.unsigned_abs(), secs < 0);
    let (count, unit) = match n {
        0..45 => return "just now".into(),
        45..3_600 => (n.div_ceil(60).max(1), "minute"),
        3_600..86_400 => (n / 3_600, "hour"),
        86_400..2_592_000 => (n / 86_400, "day"),
        2_592_000..31_536_000 => (n / 2_592_000, "month"),
        _ => (n / 31_536_000, "year"),
    };
    let s = if count == 1 { "" } else { "s" };
    if future { format!("in {count} {unit}{s}") } else { format!("{count} {unit}{s} ago") }
}

fn human_bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KB", n as f64 / 1024.0),
        _ => format!("{:.1} MB", n as f64 / 1_048_576.0),
    }
}

/// The policy of every dashboard page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn headers(r: &mut Response, csp: &str) {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Why `same-origin` and not `no-referrer`: under `no-referrer` Chromium sends
    // `Origin: null` with our own form posts, and the origin check would refuse them; links
    // to other sites still get no referrer.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.extensions_mut().insert(crate::pages::Page);
}

fn html(status: StatusCode, body: String, csp: &str) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers(&mut r, csp);
    r
}

/// What every page's template gets.
struct Frame<'a> {
    api: &'a Api,
    session: Option<(&'a Session, String)>,
    nav: &'static str,
}

fn render(frame: Frame<'_>, template: &str, status: StatusCode, page: Value) -> Response {
    let d = dash(frame.api);
    let mut ctx = json!({
        "base": d.base,
        "nav": frame.nav,
        "now": frame.api.engine.clock().now().to_rfc3339(),
    });
    if let Some((s, csrf)) = &frame.session {
        ctx["csrf"] = json!(csrf);
        ctx["account"] = json!(s.account);
        ctx["key_id"] = json!(s.key_id);
    }
    if let (Value::Object(c), Value::Object(p)) = (&mut ctx, page) {
        c.extend(p);
    }
    let out = templates().get_template(template).and_then(|t| t.render(minijinja::Value::from_serialize(&ctx)));
    match out {
        Ok(body) => html(status, body, CSP),
        Err(e) => {
            tracing::error!(target: "mailroom::dashboard", template, error = %e, "a page failed to render");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error</title><p>This page failed to render.".into(),
                CSP,
            )
        }
    }
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    headers(&mut r, CSP);
    r
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// A signed-in request: the session, and the engine acting for its account and key.
struct Signed {
    api: Api,
    session: Session,
    auth: Auth,
    csrf: String,
}

impl Signed {
    fn frame(&self, nav: &'static str) -> Frame<'_> {
        Frame { api: &self.api, session: Some((&self.session, self.csrf.clone())), nav }
    }

    fn page(&self, nav: &'static str, template: &str, page: Value) -> Response {
        render(self.frame(nav), template, StatusCode::OK, page)
    }

    /// An error page for what the engine refused (its status, its message).
    fn error(&self, e: impl Into<ApiError>) -> Response {
        let e = e.into();
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let help = help_for(e.name);
        render(
            self.frame(""),
            "error.html",
            status,
            json!({"status": e.status, "name": e.name, "message": e.message, "help": help}),
        )
    }

    fn url(&self, rest: &str) -> String {
        format!("{}{rest}", dash(&self.api).base)
    }

    /// The refusal of a change without this session's CSRF token, or sent from another
    /// origin; `None`: the change may go ahead.
    fn refused(&self, headers: &HeaderMap, token: &str) -> Option<Response> {
        if same_origin(headers) && dash(&self.api).sessions.csrf_ok(&self.session, token) {
            return None;
        }
        Some(self.error(ApiError::new(
            403,
            "validation_error",
            "This form is out of date or came from another site. Reload the page and try again.",
        )))
    }
}

/// Whether a change comes from our own pages: a browser names the page's origin in `Origin`
/// on every POST; it must be this host. (Without the header — an old browser — the CSRF token
/// alone decides.)
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let authority = origin.split_once("://").map_or("", |(_, a)| a);
    !host.is_empty() && authority.eq_ignore_ascii_case(host)
}

impl FromRequestParts<Api> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Response> {
        let d = dash(api);
        let sign_in = || redirect(&format!("{}/sign-in", d.base));
        let now = api.engine.clock().now();
        let Some(session) = session::cookie(&parts.headers, COOKIE).and_then(|v| d.sessions.check(v, now)) else {
            return Err(sign_in());
        };
        // The key must still be there, unrevoked, with full access: revoking it ends the session.
        let engine = api.engine.with_account(&session.account);
        let key = match engine.api_key(&session.key_id).await {
            Ok(k) => k,
            Err(e) => return Err(plain_error(api, e.into())),
        };
        let Some(key) = key.filter(|k| k.revoked_at.is_none() && k.permission == KeyPermission::FullAccess) else {
            return Err(sign_in());
        };
        let account = engine.account().clone();
        let auth = Auth { engine: api.engine.with_key(&account, &key), account };
        let csrf = d.sessions.csrf(&session);
        Ok(Signed { api: api.clone(), session, auth, csrf })
    }
}

fn plain_error(api: &Api, e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    render(
        Frame { api, session: None, nav: "" },
        "error.html",
        status,
        json!({"status": e.status, "name": e.name, "message": e.message}),
    )
}

fn session_cookie(d: &Dashboard, value: &str, max_age: i64) -> HeaderValue {
    let secure = if d.secure_cookie { "; Secure" } else { "" };
    let text = format!("{COOKIE}={value}; Path={}; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}", d.base);
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("mailroom_session=; Max-Age=0"))
}

/// `GET /` of the server and of the dashboard: the emails page (or sign-in, when signed out).
pub(crate) async fn root(State(api): State<Api>) -> Response {
    redirect(&format!("{}/emails", dash(&api).base))
}

async fn sign_in_page(State(api): State<Api>) -> Response {
    render(Frame { api: &api, session: None, nav: "sign-in" }, "sign_in.html", StatusCode::OK, json!({}))
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    key: String,
}

async fn sign_in(State(api): State<Api>, req: Request) -> Response {
    let d = dash(&api);
    let frame = || Frame { api: &api, session: None, nav: "sign-in" };
    let refuse = |status: StatusCode, message: &str| render(frame(), "sign_in.html", status, json!({"error": message}));
    let ip = client_ip(&api, peer(&req), req.headers());
    let subject = crate::guard::ip_key(ip);
    let now = std::time::Instant::now();
    // The same allowance as API requests without a valid key: guessing keys here is no faster.
    if api.limiters.unauthenticated.exhausted(&subject, now).is_some() {
        return refuse(StatusCode::TOO_MANY_REQUESTS, "Too many failed attempts. Wait a moment and try again.");
    }
    if !same_origin(req.headers()) {
        return refuse(StatusCode::FORBIDDEN, "This form came from another site.");
    }
    let Ok(Form(form)) = Form::<SignIn>::from_request(req, &api).await else {
        return refuse(StatusCode::BAD_REQUEST, "The form could not be read. Reload the page and try again.");
    };
    let token = form.key.trim();
    let found = match api.engine.authenticate(token).await {
        Ok(found) => found,
        Err(e) => return plain_error(&api, e.into()),
    };
    match found {
        Some((account, key)) if key.permission == KeyPermission::FullAccess => {
            let session = d.sessions.start(account.as_str(), &key.id, api.engine.clock().now());
            let mut r = redirect(&format!("{}/emails", d.base));
            let age = session::LIFETIME.num_seconds();
            r.headers_mut().insert(header::SET_COOKIE, session_cookie(d, &d.sessions.cookie_value(&session), age));
            r
        }
        Some(_) => refuse(StatusCode::FORBIDDEN, "This key may only send emails. Sign in with a full-access key."),
        None => {
            api.limiters.unauthenticated.check(&subject, now);
            refuse(StatusCode::UNAUTHORIZED, "That is not a valid API key for this server.")
        }
    }
}

use axum::extract::FromRequest as _;

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(signed: Signed, headers: HeaderMap, Form(f): Form<CsrfOnly>) -> Response {
    if let Some(r) = signed.refused(&headers, &f.csrf) {
        return r;
    }
    let d = dash(&signed.api);
    d.sessions.sign_out(&signed.session, signed.api.engine.clock().now());
    let mut r = redirect(&format!("{}/sign-in", d.base));
    r.headers_mut().insert(header::SET_COOKIE, session_cookie(d, "", 0));
    r
}

async fn missing(State(api): State<Api>) -> Response {
    plain_error(&api, ApiError::new(404, "not_found", "There is no such page."))
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("assets/app.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r.extensions_mut().insert(crate::pages::Page);
    r
}

// ---------------------------------------------------------------------------------------------
// Filters shared by pages and exports

/// The page's query, with the date inputs (`YYYY-MM-DD`) made into the API's RFC 3339 bounds
/// (`from` at the day's start, `to` at its end, UTC).
fn api_query(q: &HashMap<String, String>) -> HashMap<String, String> {
    let mut out: HashMap<String, String> =
        q.iter().filter(|(_, v)| !v.trim().is_empty()).map(|(k, v)| (k.clone(), v.trim().to_string())).collect();
    for (name, time) in [("from", "T00:00:00Z"), ("to", "T23:59:59.999Z")] {
        if let Some(v) = out.get_mut(name)
            && chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()
        {
            v.push_str(time);
        }
    }
    out
}

/// The page's query as a string (for links that keep the filters), without `drop`.
fn query_string(q: &HashMap<String, String>, drop: &[&str]) -> String {
    let mut pairs: Vec<(&String, &String)> =
        q.iter().filter(|(k, v)| !drop.contains(&k.as_str()) && !v.is_empty()).collect();
    pairs.sort();
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

type Q = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn q_of(q: Q) -> HashMap<String, String> {
    q.map(|Query(q)| q).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Emails

const LAST_EVENTS: &[&str] = &[
    "queued",
    "scheduled",
    "sent",
    "delivered",
    "delivery_delayed",
    "bounced",
    "complained",
    "opened",
    "clicked",
    "failed",
    "canceled",
    "suppressed",
];

async fn emails(signed: Signed, q: Q) -> Response {
    let q = q_of(q);
    let filter = match crate::logs::EmailFilter::parse(&api_query(&q)) {
        Ok(f) => f,
        Err(e) => return signed.error(e),
    };
    let mut after = match q.get("after").filter(|a| !a.is_empty()).map(|a| crate::email_id(a)).transpose() {
        Ok(a) => a,
        Err(e) => return signed.error(e),
    };
    let mut rows = Vec::new();
    let (mut scanned, mut more, mut last_seen) = (0, false, None);
    // Pages of 100 from the cursor until a page of matches is full, the scan budget is
    // spent, or the emails end; `more`: emails remain after the last one read.
    'pages: loop {
        let request = match PageRequest::new(Some(100), after, None) {
            Ok(r) => r,
            Err(e) => return signed.error(e),
        };
        let list = match signed.auth.engine.list(request).await {
            Ok(l) => l,
            Err(e) => return signed.error(e),
        };
        for (i, e) in list.data.iter().enumerate() {
            scanned += 1;
            last_seen = Some(e.id);
            let last = e.last_event.map_or("", |k| k.as_str());
            if filter.matches(e, last) {
                rows.push(json!({
                    "id": e.id.to_string(), "to": e.to.join(", "), "subject": e.subject,
                    "from": e.from, "last_event": last, "created_at": e.created_at,
                }));
            }
            if rows.len() == PAGE || scanned >= SCAN_LIMIT {
                more = i + 1 < list.data.len() || list.has_more;
                break 'pages;
            }
        }
        match list.data.last() {
            Some(e) if list.has_more => after = Some(e.id),
            _ => break,
        }
    }
    let next = last_seen.filter(|_| more).map(|id| {
        let mut keep = q.clone();
        keep.insert("after".into(), id.to_string());
        query_string(&keep, &[])
    });
    let filtered = ["last_event", "from", "to", "q"].iter().any(|k| q.get(*k).is_some_and(|v| !v.is_empty()));
    signed.page(
        "emails",
        "emails.html",
        json!({
            "rows": rows, "q": q, "next": next, "filtered": filtered, "scanned": scanned,
            "scan_limit_hit": scanned >= SCAN_LIMIT && rows.len() < PAGE,
            "last_events": LAST_EVENTS, "export": query_string(&q, &["after"]),
            "first_page": !q.contains_key("after"),
        }),
    )
}

async fn export_emails(signed: Signed, q: Q) -> Response {
    let q = api_query(&q_of(q));
    match crate::logs::export_emails(signed.auth.clone(), Ok(Query(q))).await {
        Ok(r) => r,
        Err(e) => signed.error(e),
    }
}

/// One email's page: metadata, events, the three views, attachments, the share action, its
/// request log and its insights.
async fn email(signed: Signed, id: Path<String>, q: Q) -> Response {
    email_page(signed, &id.0, q_of(q), None).await
}

async fn email_page(signed: Signed, id: &str, q: HashMap<String, String>, shared: Option<Value>) -> Response {
    let engine = &signed.auth.engine;
    let id = match crate::email_id(id) {
        Ok(id) => id,
        Err(e) => return signed.error(e),
    };
    // One read: the wire view is derived from the record (an email may carry 40 MB).
    let record = match engine.get_record(id).await {
        Ok(r) => r,
        Err(e) => return signed.error(e),
    };
    let view = mailroom_core::email::EmailView::from(&record);
    let events: Vec<Value> = record
        .state
        .events
        .iter()
        .map(|e| {
            json!({
                "kind": e.kind.as_str(), "at": e.at.to_rfc3339(), "recipient": e.recipient, "reason": e.reason,
                "reply": e.reply.as_ref().map(ToString::to_string),
                "bounce": e.bounce.as_ref().map(|b| json!(b)),
                "link": e.hit.as_ref().and_then(|h| h.link.clone()),
            })
        })
        .collect();
    let attachments: Vec<Value> = record
        .content
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({"index": i, "filename": a.filename, "content_type": a.content_type, "size": a.content.len(),
                   "content_id": a.content_id})
        })
        .collect();
    // The email's requests: the logs naming its id.
    let requests = match engine.storage().request_logs() {
        Some(store) => {
            signed.api.logs_settled().await;
            let f = LogFilter { search: Some(id.to_string()), ..LogFilter::default() };
            match store.log_page(&signed.auth.account, &f, None, 10).await {
                Ok((page, _)) => page.iter().map(log_row).collect(),
                Err(_) => Vec::new(),
            }
        }
        None => Vec::new(),
    };
    let insights = match &signed.api.config.dns {
        Some(dns) => {
            match tokio::time::timeout(std::time::Duration::from_secs(5), engine.insights(id, dns.as_ref())).await {
                Ok(Ok(list)) => Value::Array(
                    list.iter()
                        .map(|i| {
                            let mut v = json!(i);
                            v["title"] = json!(check_title(i.check));
                            v
                        })
                        .collect(),
                ),
                Ok(Err(e)) => json!({"error": ApiError::from(e).message}),
                Err(_) => json!({"error": "The DNS checks took longer than 5 seconds; reload to try again."}),
            }
        }
        None => json!({"error": "This server has no resolver configured for the DNS checks."}),
    };
    let c = &record.content;
    // The text part as recipients got it: derived from the html when the client sent none.
    let text = engine.text_part(c);
    let images = q.get("images").is_some_and(|v| v == "1");
    signed.page(
        "emails",
        "email.html",
        json!({
            "email": view, "id": id.to_string(), "events": events, "attachments": attachments,
            "requests": requests, "insights": insights, "shared": shared, "images": images,
            "has_html": c.html.is_some(), "text": text, "html_source": c.html,
            "headers": c.headers, "tags": c.tags,
        }),
    )
}

/// The insights' names as the hosted service's dashboard shows them.
fn check_title(check: &str) -> &str {
    match check {
        "link_domains_match" => "Link URLs match sending domain",
        "dmarc_valid" => "Valid DMARC record",
        "plain_text_included" => "Include plain text version",
        "no_reply_sender" => "Don't use \"no-reply\"",
        "body_size" => "Keep email body size small",
        "subdomain_sender" => "Use a subdomain",
        "click_tracking_disabled" => "Disable click tracking",
        "open_tracking_disabled" => "Disable open tracking",
        other => other,
    }
}

/// `GET …/emails/{id}/preview`: the email's HTML alone, for the sandboxed frame. Its own
/// policy repeats the sandbox (so it runs no script even opened on its own), loads nothing
/// from elsewhere (remote images only with `images=1`) and lets only our pages frame it.
async fn preview(signed: Signed, id: Path<String>, q: Q) -> Response {
    let id = match crate::email_id(&id.0) {
        Ok(id) => id,
        Err(e) => return signed.error(e),
    };
    let record = match signed.auth.engine.get_record(id).await {
        Ok(r) => r,
        Err(e) => return signed.error(e),
    };
    let images = q_of(q).get("images").is_some_and(|v| v == "1");
    let body = match record.content.html.as_deref() {
        Some(h) => crate::pages::without_frames(&crate::pages::inline_images(h, &record)),
        None => "<p>This email has no HTML part.</p>".into(),
    };
    let img = if images { "data: https: http:" } else { "data:" };
    let csp = format!(
        "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src {img}; font-src data:; \
         form-action 'none'; frame-ancestors 'self'; base-uri 'none'"
    );
    html(StatusCode::OK, body, &csp)
}

#[derive(Deserialize)]
struct ShareForm {
    #[serde(default)]
    csrf: String,
    expires_in: Option<String>,
}

async fn share(signed: Signed, headers: HeaderMap, id: Path<String>, Form(f): Form<ShareForm>) -> Response {
    if let Some(r) = signed.refused(&headers, &f.csrf) {
        return r;
    }
    let email = match crate::email_id(&id.0) {
        Ok(id) => id,
        Err(e) => return signed.error(e),
    };
    let expires = f.expires_in.as_deref().filter(|s| !s.is_empty());
    match signed.auth.engine.share(email, expires).await {
        Ok((token, until)) => {
            let url = format!("{}/shared?token={token}", crate::attachments::base_url(&signed.api, &headers));
            let shared = json!({"url": url, "expires_at": until.to_rfc3339()});
            email_page(signed, &id.0, HashMap::new(), Some(shared)).await
        }
        Err(e) => signed.error(e),
    }
}

async fn attachment(signed: Signed, ids: Path<(String, usize)>) -> Response {
    let (id, index) = ids.0;
    let id = match crate::email_id(&id) {
        Ok(id) => id,
        Err(e) => return signed.error(e),
    };
    let record = match signed.auth.engine.get_record(id).await {
        Ok(r) => r,
        Err(e) => return signed.error(e),
    };
    let Some(a) = record.content.attachments.get(index) else {
        return signed.error(ApiError::new(404, "not_found", "Attachment not found"));
    };
    // Always a download, never shown in our origin: the type is the sender's claim.
    let name: String = a
        .filename
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
        .collect();
    let name = if name.trim().is_empty() { "attachment".to_string() } else { name };
    let mut r = a.content.to_vec().into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    headers(&mut r, "default-src 'none'; sandbox");
    r
}

// ---------------------------------------------------------------------------------------------
// Logs

fn log_row(l: &mailroom_core::ports::RequestLog) -> Value {
    let error_name = (l.status >= 400)
        .then(|| l.response_body.as_deref().and_then(|b| serde_json::from_str::<Value>(b).ok()))
        .flatten()
        .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string));
    json!({
        "id": EmailId::from_u128(l.id).to_string(),
        "at": l.at.to_rfc3339(),
        "method": l.method,
        "endpoint": l.endpoint,
        "status": l.status,
        "ok": l.status < 400,
        "user_agent": l.user_agent,
        "sdk": l.user_agent.as_deref().and_then(crate::logs::sdk_name),
        "api_key_id": l.api_key_id,
        "duration_ms": l.duration_ms,
        "request_body": l.request_body.as_deref().map(pretty),
        "response_body": l.response_body.as_deref().map(pretty),
        "error_name": error_name,
        "help": error_name.as_deref().and_then(help_for),
    })
}

/// JSON indented for reading; anything else as it is.
fn pretty(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.into())
}

async fn logs(signed: Signed, q: Q) -> Response {
    let q = q_of(q);
    let Some(store) = signed.auth.engine.storage().request_logs() else {
        return signed.error(ApiError::new(404, "not_found", "Request logs are not kept here."));
    };
    let f = match crate::logs::filter(&api_query(&q)) {
        Ok(f) => f,
        Err(e) => return signed.error(e),
    };
    let before = match q.get("before").filter(|b| !b.is_empty()).map(|b| crate::email_id(b)).transpose() {
        Ok(b) => b.map(EmailId::as_u128),
        Err(e) => return signed.error(e),
    };
    signed.api.logs_settled().await;
    let (page, more) = match store.log_page(&signed.auth.account, &f, before, PAGE).await {
        Ok(p) => p,
        Err(e) => return signed.error(ApiError::from(e)),
    };
    let keys = signed.auth.engine.list_api_keys().await.unwrap_or_default();
    let keys: Vec<Value> = keys.iter().map(|k| json!({"id": k.id, "name": k.name})).collect();
    let next = page.last().filter(|_| more).map(|l| {
        let mut keep = q.clone();
        keep.insert("before".into(), EmailId::from_u128(l.id).to_string());
        query_string(&keep, &[])
    });
    let rows: Vec<Value> = page.iter().map(log_row).collect();
    let filtered = ["status", "from", "to", "user_agent", "api_key_id", "q"]
        .iter()
        .any(|k| q.get(*k).is_some_and(|v| !v.is_empty()));
    signed.page(
        "logs",
        "logs.html",
        json!({"rows": rows, "q": q, "keys": keys, "next": next, "export": query_string(&q, &["before"]),
               "filtered": filtered}),
    )
}

async fn export_logs(signed: Signed, q: Q) -> Response {
    let q = api_query(&q_of(q));
    match crate::logs::export_logs(State(signed.api.clone()), signed.auth.clone(), Ok(Query(q))).await {
        Ok(r) => r,
        Err(e) => signed.error(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Suppressions

/// The ranges the metrics page offers: (name, label, days back, granularity).
const METRIC_RANGES: [(&str, &str, i64, &str); 4] = [
    ("24h", "Last 24 hours", 1, "hourly"),
    ("7d", "Last 7 days", 7, "daily"),
    ("30d", "Last 30 days", 30, "daily"),
    ("12w", "Last 12 weeks", 84, "weekly"),
];

/// The metrics the page shows, in its columns' order.
const METRIC_COLUMNS: &str = "received,sent,delivered,bounced,complained,unique_opened,unique_clicked,delivery_rate,bounce_rate,complaint_rate,open_rate,click_rate";

/// Email metrics of a range, period by period and by sending domain: what `GET /emails/metrics`
/// answers, as a page.
async fn metrics(signed: Signed, q: Q) -> Response {
    let q = q_of(q);
    let range = q.get("range").map(String::as_str).unwrap_or("7d");
    let (name, _, days, granularity) = METRIC_RANGES.iter().find(|r| r.0 == range).copied().unwrap_or(METRIC_RANGES[1]);
    let now = signed.auth.engine.clock().now();
    let zone = q.get("timezone").cloned().unwrap_or_else(|| "UTC".into());
    let params: HashMap<String, String> = [
        ("start_date", (now - chrono::Duration::days(days)).to_rfc3339()),
        ("granularity", granularity.to_string()),
        ("timezone", zone.clone()),
        ("metrics", METRIC_COLUMNS.to_string()),
        ("dimensions", "period".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let query = match mailroom_core::email_metrics::MetricsQuery::parse(&params, now) {
        Ok(query) => query,
        Err(e) => return signed.error(mailroom_core::Error::from(e)),
    };
    // By period and by sending domain from one reading of the range.
    use mailroom_core::email_metrics::Dimension;
    let breakdowns = [vec![Dimension::Period], vec![Dimension::Domain]];
    let mut answers = match signed.auth.engine.email_metrics_breakdowns(&query, &breakdowns).await {
        Ok(answers) => answers.into_iter(),
        Err(e) => return signed.error(e),
    };
    let (periods, domains) = (answers.next().unwrap_or_default(), answers.next().unwrap_or_default());
    // Each period's bar is its share of the busiest period's accepted emails.
    let rows = periods["data"].as_array().cloned().unwrap_or_default();
    let most = rows.iter().filter_map(|r| r["received"].as_u64()).max().unwrap_or(0).max(1);
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|mut r| {
            let share = r["received"].as_u64().unwrap_or(0) * 100 / most;
            r["bar"] = json!(share);
            r
        })
        .collect();
    let ranges: Vec<Value> = METRIC_RANGES.iter().map(|r| json!({"name": r.0, "label": r.1})).collect();
    signed.page(
        "metrics",
        "metrics.html",
        json!({"totals": periods["totals"], "rows": rows, "domains": domains["data"], "range": name,
               "ranges": ranges, "timezone": zone, "granularity": granularity}),
    )
}

/// Suppressed addresses on one page, in address order, from the `after` cursor (an entry's
/// id, as the API's). Why pages: the list grows with every hard bounce and has no bound, and
/// the page had held all of it (a million entries, some hundred megabytes of HTML).
async fn suppressions(signed: Signed, q: Q) -> Response {
    use mailroom_core::suppressions::{Cursor, PageQuery};
    let q = q_of(q);
    let cursor = match q.get("after").filter(|a| !a.is_empty()) {
        Some(after) => Cursor::After(after.clone()),
        None => Cursor::Start,
    };
    let first_page = cursor == Cursor::Start;
    let page =
        match signed.auth.engine.suppressions_page(&PageQuery { limit: SUPPRESSIONS_PAGE, cursor, origin: None }).await
        {
            Ok(page) => page,
            Err(e) => return signed.error(e),
        };
    let account = signed.auth.engine.account();
    let next = page.data.last().filter(|_| page.has_more).map(|s| {
        query_string(&HashMap::from([("after".to_string(), mailroom_core::suppressions::id(account, &s.address))]), &[])
    });
    let rows: Vec<Value> = page
        .data
        .iter()
        .map(|s| {
            json!({"address": s.address, "reason": s.reason, "created_at": s.created_at.to_rfc3339(),
                   "source_email": s.source_email.map(|e| e.to_string())})
        })
        .collect();
    signed.page(
        "suppressions",
        "suppressions.html",
        json!({"rows": rows, "removed": q.get("removed"), "next": next, "first_page": first_page}),
    )
}

#[derive(Deserialize)]
struct RemoveSuppression {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    address: String,
}

async fn remove_suppression(signed: Signed, headers: HeaderMap, Form(f): Form<RemoveSuppression>) -> Response {
    if let Some(r) = signed.refused(&headers, &f.csrf) {
        return r;
    }
    match signed.auth.engine.unsuppress(&f.address).await {
        Ok(()) => {
            let q = form_urlencoded::Serializer::new(String::new()).append_pair("removed", &f.address).finish();
            redirect(&signed.url(&format!("/suppressions?{q}")))
        }
        Err(e) => signed.error(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Domains

async fn domains(signed: Signed) -> Response {
    match signed.auth.engine.domains().await {
        Ok(all) => {
            let rows: Vec<Value> = all.iter().map(mailroom_core::domains::domain_json).collect();
            signed.page("domains", "domains.html", json!({"rows": rows}))
        }
        Err(e) => signed.error(e),
    }
}

async fn domain(signed: Signed, id: Path<String>, q: Q) -> Response {
    match signed.auth.engine.domain(&id.0).await {
        Ok(d) => {
            let mut v = mailroom_core::domains::domain_json(&d);
            v["records"] = Value::Array(mailroom_core::domains::records_json(&d));
            let checked = q_of(q).contains_key("checked");
            signed.page("domains", "domain.html", json!({"domain": v, "checked": checked}))
        }
        Err(e) => signed.error(e),
    }
}

async fn verify_domain(signed: Signed, headers: HeaderMap, id: Path<String>, Form(f): Form<CsrfOnly>) -> Response {
    if let Some(r) = signed.refused(&headers, &f.csrf) {
        return r;
    }
    let engine = &signed.auth.engine;
    // With a resolver the records are looked up now, so the page shows the outcome; without
    // one the checks restart on the verifier's schedule.
    let done = match &signed.api.config.dns {
        Some(dns) => {
            match tokio::time::timeout(std::time::Duration::from_secs(10), engine.check_domain_now(&id.0, dns.as_ref()))
                .await
            {
                Ok(r) => r.map(|_| ()),
                Err(_) => engine.verify_domain(&id.0).await.map(|_| ()),
            }
        }
        None => engine.verify_domain(&id.0).await.map(|_| ()),
    };
    match done {
        Ok(()) => redirect(&signed.url(&format!("/domains/{}?checked=1", urlencode(&id.0)))),
        Err(e) => signed.error(e),
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------
// Webhooks

async fn webhooks(signed: Signed) -> Response {
    match signed.auth.engine.webhooks().await {
        Ok(all) => {
            let rows: Vec<Value> = all
                .iter()
                .map(|h| {
                    json!({"id": h.id, "endpoint": h.endpoint, "created_at": h.created_at.to_rfc3339(),
                           "enabled": h.enabled, "events": h.events})
                })
                .collect();
            signed.page("webhooks", "webhooks.html", json!({"rows": rows}))
        }
        Err(e) => signed.error(e),
    }
}

async fn webhook(signed: Signed, id: Path<String>, q: Q) -> Response {
    let engine = &signed.auth.engine;
    let h = match engine.webhook(&id.0).await {
        Ok(h) => h,
        Err(e) => return signed.error(e),
    };
    let (messages, more) = match engine.webhook_messages(&id.0, None, 20).await {
        Ok(m) => m,
        Err(e) => return signed.error(e),
    };
    let deliveries: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attempts: Vec<Value> = m
                .attempts
                .iter()
                .rev()
                .take(10)
                .map(|a| json!({"status": a.status_code, "response": a.response, "at": a.sent_at.to_rfc3339()}))
                .collect();
            json!({"id": m.id, "type": m.event_type, "created_at": m.created_at.to_rfc3339(),
                   "status": m.status.as_str(), "attempts": attempts,
                   "next_attempt_at": m.due_at().map(|t| t.to_rfc3339())})
        })
        .collect();
    signed.page(
        "webhooks",
        "webhook.html",
        json!({
            "hook": {"id": h.id, "endpoint": h.endpoint, "enabled": h.enabled, "events": h.events,
                     "created_at": h.created_at.to_rfc3339()},
            "deliveries": deliveries, "more": more, "replayed": q_of(q).get("replayed"),
        }),
    )
}

async fn replay(signed: Signed, headers: HeaderMap, ids: Path<(String, String)>, Form(f): Form<CsrfOnly>) -> Response {
    if let Some(r) = signed.refused(&headers, &f.csrf) {
        return r;
    }
    let (id, event) = ids.0;
    match signed.auth.engine.replay_webhook_message(&id, &event).await {
        Ok(m) => redirect(&signed.url(&format!("/webhooks/{}?replayed={}", urlencode(&id), urlencode(&m.id)))),
        Err(e) => signed.error(e),
    }
}

// ---------------------------------------------------------------------------------------------
// API keys

async fn key_rows(signed: &Signed) -> Result<Vec<Value>, Response> {
    let keys = signed.auth.engine.list_api_keys().await.map_err(|e| signed.error(e))?;
    Ok(keys
        .iter()
        .map(|k| {
            let permission = match &k.permission {
                KeyPermission::FullAccess => "Full access".to_string(),
                KeyPermission::SendingAccess { domain: None } => "Sending access".to_string(),
                KeyPermission::SendingAccess { domain: Some(d) } => format!("Sending access ({d})"),
            };
            json!({"id": k.id, "name": k.name, "permission": permission, "created_at": k.created_at.to_rfc3339(),
                   "revoked_at": k.revoked_at.map(|t| t.to_rfc3339()), "managed": k.managed,
                   "last_used_at": k.last_used_at.map(|t| t.to_rfc3339()),
                   "current": k.id == signed.session.key_id})
        })
        .collect())
}

async fn api_keys(signed: Signed) -> Response {
    match key_rows(&signed).await {
        Ok(rows) => signed.page("api-keys", "api_keys.html", json!({"rows": rows})),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct NewKey {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    permission: Option<String>,
    domain: Option<String>,
}

async fn create_key(signed: Signed, headers: HeaderMap, Form(f): Form<NewKey>) -> Response {
    if let Some(r) = signed.refused(&headers, &f.csrf) {
        return r;
    }
    let domain = f.domain.as_deref().map(str::trim).filter(|d| !d.is_empty());
    let permission = match KeyPermission::parse(f.permission.as_deref(), domain) {
        Ok(p) => p,
        Err(e) => return signed.error(e),
    };
    let name = Some(f.name.trim()).filter(|n| !n.is_empty());
    match signed.auth.engine.create_api_key(name, permission).await {
        Ok(created) => match key_rows(&signed).await {
            // Shown once, on this answer only (not a redirect: the token never enters a URL).
            Ok(rows) => signed.page(
                "api-keys",
                "api_keys.html",
                json!({"rows": rows, "created": {"id": created.record.id, "token": created.token}}),
            ),
            Err(r) => r,
        },
        Err(e) => signed.error(e),
    }
}

async fn revoke_key(signed: Signed, headers: HeaderMap, id: Path<String>, Form(f): Form<CsrfOnly>) -> Response {
    if let Some(r) = signed.refused(&headers, &f.csrf) {
        return r;
    }
    match signed.auth.engine.revoke_api_key(&id.0).await {
        Ok(()) => redirect(&signed.url("/api-keys")),
        Err(e) => signed.error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut env = minijinja::Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn paths_that_the_api_owns_or_that_are_malformed_are_refused() {
        assert_eq!(DashboardConfig::new("/dashboard/", false).unwrap().path, "/dashboard");
        assert_eq!(DashboardConfig::new("/ops/mail", true).unwrap().path, "/ops/mail");
        for bad in ["/", "", "dashboard", "/emails", "/logs/ui", "/Dash", "/a b", "/a//b", "/../x", "/shared"] {
            assert!(DashboardConfig::new(bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relative_times_read_like_a_person_would_say_them() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let ago = |s: i64| relative(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(10), "just now");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(125), "3 minutes ago");
        assert_eq!(ago(7_200), "2 hours ago");
        assert_eq!(ago(86_400 * 3), "3 days ago");
        assert_eq!(ago(-7_200), "in 2 hours");
    }

    #[test]
    fn date_inputs_become_the_day_bounds_and_empty_fields_are_dropped() {
        let q: HashMap<String, String> =
            [("from", "2026-12-01"), ("to", "2026-12-02"), ("q", " "), ("status", "error")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let a = api_query(&q);
        assert_eq!(a.get("from").map(String::as_str), Some("2026-12-01T00:00:00Z"));
        assert_eq!(a.get("to").map(String::as_str), Some("2026-12-02T23:59:59.999Z"));
        assert!(!a.contains_key("q"));
        assert_eq!(query_string(&a, &["to"]), "from=2026-12-01T00%3A00%3A00Z&status=error");
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_over_tls() {
        for secure in [false, true] {
            let d = Dashboard::new(&DashboardConfig::new("/ui", secure).unwrap(), &[3; 32]);
            let c = session_cookie(&d, "v", 60);
            let c = c.to_str().unwrap();
            assert!(c.starts_with("mailroom_session=v; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=60"), "{c}");
            assert_eq!(c.ends_with("; Secure"), secure, "{c}");
        }
    }

    #[test]
    fn only_our_own_origin_may_post() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:3000"));
        assert!(same_origin(&h), "no Origin: the CSRF token decides");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:3000"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://evil.test"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }
}
