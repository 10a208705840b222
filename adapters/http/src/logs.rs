//! Request logs: their query, and the CSV exports (what the guard records is redacted by
//! `redact`).
//!
//! Invariants: exports stream page by page (no table is ever held whole in memory); every
//! CSV cell goes through the `csv` crate's quoting, and a cell that a spreadsheet would run
//! as a formula (starting with `=`, `+`, `-`, `@`, tab or CR) is neutralised with a leading
//! `'`, as OWASP recommends.

use crate::{Api, ApiError, ApiResult, Auth, PathParam, QueryParam, email_id, ok, path, query};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use mailroom_core::email::{EmailId, PageRequest};
use mailroom_core::lifecycle::EventKind;
use mailroom_core::ports::{LogFilter, RequestLog};
use mailroom_core::{Engine, Error};
use serde_json::{Value, json};
use std::collections::HashMap;

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

/// The filters `/logs` and `/logs/export` take.
pub(crate) fn filter(q: &HashMap<String, String>) -> Result<LogFilter, ApiError> {
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
    // A body was kept as the (redacted) JSON text it was; the API answers it as JSON again,
    // as the hosted service does (the SDKs type it as any value).
    let body = |b: &Option<String>| match b {
        Some(text) => serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.clone())),
        None => Value::Null,
    };
    json!({
        "object": "log",
        "id": EmailId::from_u128(l.id).to_string(),
        "created_at": l.at.to_rfc3339(),
        "method": l.method,
        "endpoint": l.endpoint,
        // The hosted API's name, and this API's own earlier one.
        "response_status": l.status,
        "status": l.status,
        "user_agent": l.user_agent,
        "sdk": l.user_agent.as_deref().and_then(sdk_name),
        "api_key_id": l.api_key_id,
        "duration_ms": l.duration_ms,
        "request_body": body(&l.request_body),
        "response_body": body(&l.response_body),
    })
}

fn no_logs() -> ApiError {
    ApiError::new(404, "not_found", "Request logs are not kept here.")
}

/// `GET /logs`: newest first, `limit` 1–100 (default 20); `after` a log id: the older logs
/// after it, `before` a log id: the newer ones just before it (the hosted API's cursors).
pub(crate) async fn list(State(api): State<Api>, auth: Auth, q: QueryParam) -> ApiResult {
    let q = query(q)?;
    api.logs_settled().await;
    let store = auth.engine.storage().request_logs().ok_or_else(no_logs)?;
    let account = &auth.account;
    let limit = match q.get("limit") {
        None => 20,
        Some(l) => l.parse::<usize>().ok().filter(|l| (1..=100).contains(l)).ok_or_else(|| {
            ApiError::new(422, "validation_error", "The `limit` parameter must be a number from 1 to 100.")
        })?,
    };
    let cursor = |name: &str| q.get(name).map(|c| EmailId::parse_as(name, c).map(EmailId::as_u128)).transpose();
    let filter = filter(&q)?;
    let (page, has_more) = match (cursor("after")?, cursor("before")?) {
        (Some(_), Some(_)) => return Err(ApiError::new(422, "validation_error", "Use `after` or `before`, not both.")),
        (after, None) => store.log_page(account, &filter, after, limit).await,
        (None, Some(before)) => store.log_page_newer(account, &filter, before, limit).await,
    }
    .map_err(Error::from)?;
    ok(json!({"object": "list", "has_more": has_more, "data": page.iter().map(view).collect::<Vec<_>>()}))
}

/// `GET /logs/{id}`: one log, or 404.
pub(crate) async fn get(State(api): State<Api>, auth: Auth, id: PathParam<String>) -> ApiResult {
    let id = email_id(&path(id)?)?.as_u128();
    api.logs_settled().await;
    let store = auth.engine.storage().request_logs().ok_or_else(no_logs)?;
    match store.log_get(&auth.account, id).await.map_err(Error::from)? {
        Some(log) => ok(view(&log)),
        None => Err(ApiError::new(404, "not_found", "Log not found")),
    }
}

/// A cell a spreadsheet would read as a formula gets a leading `'` (OWASP's CSV injection
/// advice); every other cell is left as it is.
fn neutral(s: &str) -> std::borrow::Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}").into(),
        _ => s.into(),
    }
}

/// Rows as CSV text, through the `csv` crate's quoting.
fn csv_rows<'a>(rows: impl IntoIterator<Item = Vec<std::borrow::Cow<'a, str>>>) -> Result<String, String> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    for row in rows {
        w.write_record(row.iter().map(|c| neutral(c).into_owned())).map_err(|e| e.to_string())?;
    }
    let bytes = w.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
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
pub(crate) async fn export_logs(State(api): State<Api>, auth: Auth, q: QueryParam) -> ApiResult {
    let q = query(q)?;
    api.logs_settled().await;
    auth.engine.storage().request_logs().ok_or_else(no_logs)?;
    let f = filter(&q)?;
    let header = "id,created_at,method,endpoint,status,user_agent,sdk,api_key_id,duration_ms\n";
    let (engine, account) = (auth.engine, auth.account);
    Ok(csv_export("logs.csv", header, move |before: Option<u128>| {
        let (engine, account, f) = (engine.clone(), account.clone(), f.clone());
        async move {
            let store = engine.storage().request_logs().ok_or("request logs are not kept here")?;
            let (page, more) = store.log_page(&account, &f, before, EXPORT_PAGE).await.map_err(|e| e.to_string())?;
            let rows = page.iter().map(|l| {
                let ua = l.user_agent.as_deref().unwrap_or_default();
                vec![
                    EmailId::from_u128(l.id).to_string().into(),
                    l.at.to_rfc3339().into(),
                    l.method.as_str().into(),
                    l.endpoint.as_str().into(),
                    l.status.to_string().into(),
                    ua.into(),
                    sdk_name(ua).unwrap_or_default().into(),
                    l.api_key_id.as_deref().unwrap_or_default().into(),
                    l.duration_ms.to_string().into(),
                ]
            });
            Ok((csv_rows(rows)?, page.last().map(|l| l.id).filter(|_| more)))
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
pub(crate) struct EmailFilter {
    last_event: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    search: Option<String>,
}

impl EmailFilter {
    pub(crate) fn parse(q: &HashMap<String, String>) -> Result<EmailFilter, ApiError> {
        let f = filter(q)?;
        // A value that is no event would match no email: an export empty for a typo, silently.
        let last_event = match q.get("last_event").map(|s| s.trim().to_ascii_lowercase()) {
            Some(l) if l.is_empty() => None,
            Some(l) if !EventKind::ALL.iter().any(|k| k.as_str() == l) => {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(ApiError::new(
                    422,
                    "validation_error",
                    format!("`last_event` must be one of {}, not {l:?}.", names.join(", ")),
                ));
            }
            l => l,
        };
        Ok(EmailFilter { last_event, from: f.from, to: f.to, search: f.search.map(|s| s.to_lowercase()) })
    }

    pub(crate) fn matches(&self, e: &mailroom_core::email::EmailSummary, last: &str) -> bool {
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
pub(crate) async fn export_emails(auth: Auth, q: QueryParam) -> ApiResult {
    let wanted = EmailFilter::parse(&query(q)?)?;
    let engine: Engine = auth.engine;
    let header = "id,created_at,from,to,subject,last_event,scheduled_at\n";
    Ok(csv_export("emails.csv", header, move |after: Option<EmailId>| {
        let (engine, wanted) = (engine.clone(), wanted.clone());
        async move {
            let request = PageRequest::new(Some(EXPORT_PAGE), after, None).map_err(|e| e.to_string())?;
            let list = engine.list(request).await.map_err(|e| e.to_string())?;
            let mut rows = Vec::new();
            for e in &list.data {
                let last = e.last_event.map_or("", |k| k.as_str());
                if !wanted.matches(e, last) {
                    continue;
                }
                rows.push(vec![
                    e.id.to_string().into(),
                    e.created_at.as_str().into(),
                    e.from.as_str().into(),
                    e.to.join(", ").into(),
                    e.subject.as_str().into(),
                    last.into(),
                    e.scheduled_at.as_deref().unwrap_or_default().into(),
                ]);
            }
            Ok((csv_rows(rows)?, list.data.last().map(|e| e.id).filter(|_| list.has_more)))
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
    fn csv_cells_cannot_be_formulas_and_are_quoted() {
        let rows = vec![vec![
            "=HYPERLINK(\"http://evil.test\",\"x\")".into(),
            "+1".into(),
            "-2".into(),
            "@SUM(A1)".into(),
            "\tx".into(),
            "a,b".into(),
            "plain".into(),
        ]];
        let text = csv_rows(rows).unwrap_or_default();
        assert_eq!(text, "\"'=HYPERLINK(\"\"http://evil.test\"\",\"\"x\"\")\",'+1,'-2,'@SUM(A1),'\tx,\"a,b\",plain\n");
    }
}
