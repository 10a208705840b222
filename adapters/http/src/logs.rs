//! Request logs: what the guard records (redacted), their query, and the CSV exports.
//!
//! Invariants: the Authorization header and API key tokens are never recorded; attachment
//! contents are replaced by their size; a body is kept up to 64 KB. Exports stream page by
//! page: no table is ever held whole in memory.

use crate::{Api, ApiError, ApiResult, email_id, ok};
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use mailroom_core::email::{AccountId, EmailId, PageRequest};
use mailroom_core::ports::{LogFilter, RequestLog};
use mailroom_core::{Engine, Error};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The most of a body a log keeps.
const KEEP: usize = 64 << 10;

/// "Resend Node.js 6.38.0" for `resend-node:6.38.0`, and likewise for the other official
/// SDKs; `None` for any other client.
pub fn sdk_name(user_agent: &str) -> Option<String> {
    let (name, version) = user_agent.split_whitespace().next()?.split_once(':')?;
    let sdk = match name {
        "resend-node" => "Node.js",
        "resend-python" => "Python",
        "resend-ruby" => "Ruby",
        "resend-go" => "Go",
        "resend-php" => "PHP",
        "resend-java" => "Java",
        "resend-rust" => "Rust",
        "resend-elixir" => "Elixir",
        "resend-dotnet" => ".NET",
        _ => return None,
    };
    Some(format!("Resend {sdk} {version}"))
}

/// A body as the log keeps it: JSON with secrets and attachment contents replaced, cut at
/// 64 KB; `None` when empty.
pub(crate) fn redact(body: &[u8]) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            scrub(&mut v);
            v.to_string()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let cut = (0..=text.len().min(KEEP)).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    Some(text[..cut].to_string())
}

fn scrub(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                match (k.as_str(), &*val) {
                    ("token" | "api_key" | "password", Value::String(_)) => *val = json!("[redacted]"),
                    ("content", Value::String(s)) => *val = json!(format!("[{} characters]", s.len())),
                    ("content", Value::Array(a)) => *val = json!(format!("[{} bytes]", a.len())),
                    _ => scrub(val),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// The filters `/logs` and `/logs/export` take.
fn filter(q: &HashMap<String, String>) -> Result<LogFilter, ApiError> {
    let bad = |name: &str, rule: &str| ApiError::new(422, "validation_error", format!("`{name}` {rule}."));
    let date = |name: &str| -> Result<Option<DateTime<Utc>>, ApiError> {
        q.get(name)
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|d| d.with_timezone(&Utc))
                    .map_err(|_| bad(name, "must be an RFC 3339 time"))
            })
            .transpose()
    };
    let mut f = LogFilter { from: date("from")?, to: date("to")?, ..LogFilter::default() };
    match q.get("status").map(String::as_str) {
        None | Some("all") => {}
        Some("success") => f.success = Some(true),
        Some("error") => f.success = Some(false),
        Some(codes) => {
            f.statuses = codes
                .split(',')
                .map(|c| c.trim().parse::<u16>().ok().filter(|c| (100..600).contains(c)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("status", "must be all, success, error or a list of status codes"))?;
        }
    }
    f.user_agent = q.get("user_agent").cloned();
    f.api_key_id = q.get("api_key_id").cloned();
    f.search = q.get("q").cloned();
    Ok(f)
}

fn view(l: &RequestLog) -> Value {
    json!({
        "object": "log",
        "id": EmailId::from_u128(l.id).to_string(),
        "created_at": l.at.to_rfc3339(),
        "method": l.method,
        "endpoint": l.endpoint,
        "status": l.status,
        "user_agent": l.user_agent,
        "sdk": l.user_agent.as_deref().and_then(sdk_name),
        "api_key_id": l.api_key_id,
        "duration_ms": l.duration_ms,
        "request_body": l.request_body,
        "response_body": l.response_body,
    })
}

type Q = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn query(q: Q) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::new(422, "validation_error", format!("Invalid query string: {e}")))
}

/// `GET /logs`: newest first, `limit` 1–100 (default 20), `before` a log id.
pub(crate) async fn list(State(api): State<Api>, Extension(account): Extension<AccountId>, q: Q) -> ApiResult {
    let q = query(q)?;
    let store = api.logs.as_ref().ok_or_else(|| ApiError::new(404, "not_found", "Request logs are not kept here."))?;
    let limit = match q.get("limit") {
        None => 20,
        Some(l) => l.parse::<usize>().ok().filter(|l| (1..=100).contains(l)).ok_or_else(|| {
            ApiError::new(422, "validation_error", "The `limit` parameter must be a number from 1 to 100.")
        })?,
    };
    let before = q.get("before").map(|b| email_id(b).map(EmailId::as_u128)).transpose()?;
    let (page, has_more) = store.log_page(&account, &filter(&q)?, before, limit).await.map_err(Error::from)?;
    ok(json!({"object": "list", "has_more": has_more, "data": page.iter().map(view).collect::<Vec<_>>()}))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn csv_response(name: &str, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        body,
    )
        .into_response()
}

/// How many rows one page of an export reads.
const EXPORT_PAGE: usize = 100;

/// `GET /logs/export`: the same filters as `/logs`, every match, as CSV, streamed a page at a
/// time.
pub(crate) async fn export_logs(State(api): State<Api>, Extension(account): Extension<AccountId>, q: Q) -> ApiResult {
    let q = query(q)?;
    let store = api.logs.clone().ok_or_else(|| ApiError::new(404, "not_found", "Request logs are not kept here."))?;
    let f = filter(&q)?;
    let header = "id,created_at,method,endpoint,status,user_agent,sdk,api_key_id,duration_ms\n";
    Ok(csv_export("logs.csv", header, move |before: Option<u128>| {
        let (store, account, f) = (store.clone(), account.clone(), f.clone());
        async move {
            let (page, more) = store.log_page(&account, &f, before, EXPORT_PAGE).await.map_err(|e| e.to_string())?;
            let mut out = String::new();
            for l in &page {
                let ua = l.user_agent.clone().unwrap_or_default();
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    EmailId::from_u128(l.id),
                    l.at.to_rfc3339(),
                    csv_field(&l.method),
                    csv_field(&l.endpoint),
                    l.status,
                    csv_field(&ua),
                    csv_field(&sdk_name(&ua).unwrap_or_default()),
                    csv_field(l.api_key_id.as_deref().unwrap_or_default()),
                    l.duration_ms
                ));
            }
            Ok((out, page.last().map(|l| l.id).filter(|_| more)))
        }
    }))
}

/// A CSV download streamed a page at a time: `header`, then what `page(cursor)` returns for
/// each page (its rows, and the cursor of the next page while there is one). An error ends
/// the stream (the client sees a cut-off download, not a partial file passed off as whole).
fn csv_export<C, F, Fut>(name: &str, header: &'static str, page: F) -> Response
where
    C: Send + 'static,
    F: Fn(Option<C>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(String, Option<C>), String>> + Send + 'static,
{
    // State: (cursor, done). Each step reads one page and yields its rows.
    let pages = futures::stream::unfold((None::<C>, false), move |(cursor, done)| {
        let next_page = (!done).then(|| page(cursor));
        async move {
            match next_page?.await {
                Ok((rows, next)) => {
                    let done = next.is_none();
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from(rows)), (next, done)))
                }
                Err(e) => Some((Err(std::io::Error::other(e)), (None, true))),
            }
        }
    });
    let stream = futures::StreamExt::chain(
        futures::stream::once(async move { Ok(Bytes::from_static(header.as_bytes())) }),
        pages,
    );
    csv_response(name, Body::from_stream(stream))
}

/// Which emails an export wants: `last_event`, a `from`/`to` range on `created_at`, and `q`
/// (a case-insensitive substring of the sender, a recipient or the subject).
#[derive(Clone, Default)]
struct EmailFilter {
    last_event: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    search: Option<String>,
}

impl EmailFilter {
    fn parse(q: &HashMap<String, String>) -> Result<EmailFilter, ApiError> {
        let f = filter(q)?;
        Ok(EmailFilter {
            last_event: q.get("last_event").map(|s| s.to_ascii_lowercase()),
            from: f.from,
            to: f.to,
            search: f.search.map(|s| s.to_lowercase()),
        })
    }

    fn matches(&self, e: &mailroom_core::email::EmailSummary, last: &str) -> bool {
        // The wire's Postgres-style time, `2023-04-03 22:13:42.674981+00` (always UTC).
        let created =
            chrono::NaiveDateTime::parse_from_str(e.created_at.trim_end_matches("+00"), "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc());
        self.last_event.as_deref().is_none_or(|l| l == last)
            && self.from.is_none_or(|f| created.is_some_and(|c| c >= f))
            && self.to.is_none_or(|t| created.is_some_and(|c| c <= t))
            && self.search.as_deref().is_none_or(|q| {
                e.from.to_lowercase().contains(q)
                    || e.subject.to_lowercase().contains(q)
                    || e.to.iter().any(|t| t.to_lowercase().contains(q))
            })
    }
}

/// `GET /emails/export`: the account's emails matching the filters, newest first, as CSV,
/// streamed a page at a time.
pub(crate) async fn export_emails(Extension(engine): Extension<Engine>, q: Q) -> ApiResult {
    let wanted = EmailFilter::parse(&query(q)?)?;
    let header = "id,created_at,from,to,subject,last_event,scheduled_at\n";
    Ok(csv_export("emails.csv", header, move |after: Option<EmailId>| {
        let (engine, wanted) = (engine.clone(), wanted.clone());
        async move {
            let request = PageRequest::new(Some(EXPORT_PAGE), after, None).map_err(|e| e.to_string())?;
            let list = engine.list(request).await.map_err(|e| e.to_string())?;
            let mut out = String::new();
            for e in &list.data {
                let last = e.last_event.and_then(|k| serde_json::to_value(k).ok());
                let last_str = last.as_ref().and_then(Value::as_str).unwrap_or_default();
                if !wanted.matches(e, last_str) {
                    continue;
                }
                out.push_str(&format!(
                    "{},{},{},{},{},{},{}\n",
                    e.id,
                    csv_field(&e.created_at),
                    csv_field(&e.from),
                    csv_field(&e.to.join(", ")),
                    csv_field(&e.subject),
                    last_str,
                    csv_field(e.scheduled_at.as_deref().unwrap_or_default()),
                ));
            }
            Ok((out, list.data.last().map(|e| e.id).filter(|_| list.has_more)))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdks_are_recognised_from_the_user_agent() {
        assert_eq!(sdk_name("resend-node:6.38.0").as_deref(), Some("Resend Node.js 6.38.0"));
        assert_eq!(sdk_name("resend-python:2.51.0").as_deref(), Some("Resend Python 2.51.0"));
        assert_eq!(sdk_name("curl/8.5.0"), None);
    }

    #[test]
    fn secrets_and_attachment_contents_are_redacted() {
        let body = br#"{"from":"a@b.test","attachments":[{"filename":"x.pdf","content":"QUJD"},{"content":[1,2,3]}]}"#;
        let kept = redact(body).unwrap_or_default();
        assert!(kept.contains("[4 characters]") && kept.contains("[3 bytes]") && !kept.contains("QUJD"), "{kept}");
        let kept = redact(br#"{"id":"k","token":"re_secret"}"#).unwrap_or_default();
        assert!(!kept.contains("re_secret"), "{kept}");
        assert_eq!(redact(b"  "), None);
        assert_eq!(redact(&vec![b'x'; 100_000]).map(|s| s.len()), Some(KEEP));
    }
}
