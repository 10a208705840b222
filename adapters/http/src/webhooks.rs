//! `/webhooks…`: the hosted service's webhook endpoints, as the official SDKs call them. The
//! engine decides every rule (`mailroom_core::webhooks`); this translates.

use crate::{ApiError, ApiResult, Auth, PathParam, QueryParam, json_object, path, query};
use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, SecondsFormat, Utc};
use mailroom_core::error::quoted;
use mailroom_core::webhooks::{Message, Webhook, WebhookUpdate};
use serde::Deserialize;
use serde_json::{Value, json};

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn status(h: &Webhook) -> &'static str {
    if h.enabled { "enabled" } else { "disabled" }
}

#[derive(Deserialize)]
pub(crate) struct NewWebhook {
    endpoint: Option<String>,
    events: Option<Vec<String>>,
}

pub(crate) async fn create(auth: Auth, headers: HeaderMap, body: Bytes) -> ApiResult {
    let w: NewWebhook = json_object(&headers, body)?;
    let endpoint =
        w.endpoint.ok_or_else(|| ApiError::new(422, "missing_required_field", "Missing `endpoint` field."))?;
    let events = w.events.ok_or_else(|| ApiError::new(422, "missing_required_field", "Missing `events` field."))?;
    let hook = auth.engine.create_webhook(&endpoint, &events).await?;
    let body = json!({"object": "webhook", "id": hook.id, "signing_secret": hook.secret});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) async fn get(auth: Auth, id: PathParam<String>) -> ApiResult {
    let h = auth.engine.webhook(&path(id)?).await?;
    crate::ok(json!({
        "object": "webhook",
        "id": h.id,
        "created_at": iso(h.created_at),
        "status": status(&h),
        "endpoint": h.endpoint,
        "events": h.events,
        "signing_secret": h.secret,
    }))
}

pub(crate) async fn list(auth: Auth, q: QueryParam) -> ApiResult {
    let q = query(q)?;
    let all = auth.engine.webhooks().await?;
    let (page, has_more) = crate::page_by_id(&all, |h| h.id.as_str(), &q)?;
    let data: Vec<Value> = page
        .iter()
        .map(|h| {
            json!({"id": h.id, "endpoint": h.endpoint, "created_at": iso(h.created_at), "status": status(h), "events": h.events})
        })
        .collect();
    crate::ok(json!({"object": "list", "has_more": has_more, "data": data}))
}

#[derive(Deserialize)]
pub(crate) struct Update {
    endpoint: Option<String>,
    events: Option<Vec<String>>,
    status: Option<String>,
}

pub(crate) async fn update(auth: Auth, headers: HeaderMap, id: PathParam<String>, body: Bytes) -> ApiResult {
    let id = path(id)?;
    // Python also sends `webhook_id` in the body: unknown fields are ignored.
    let u: Update = json_object(&headers, body)?;
    let mut change = WebhookUpdate::new();
    if let Some(e) = u.endpoint {
        change = change.endpoint(e);
    }
    if let Some(ev) = u.events {
        change = change.events(ev);
    }
    match u.status.as_deref() {
        None => {}
        Some("enabled") => change = change.enabled(true),
        Some("disabled") => change = change.enabled(false),
        Some(other) => {
            return Err(ApiError::new(
                422,
                "validation_error",
                format!("`status` must be \"enabled\" or \"disabled\", not {}.", quoted(other)),
            ));
        }
    }
    let h = auth.engine.update_webhook(&id, change).await?;
    crate::ok(json!({"object": "webhook", "id": h.id}))
}

pub(crate) async fn remove(auth: Auth, id: PathParam<String>) -> ApiResult {
    let id = path(id)?;
    auth.engine.delete_webhook(&id).await?;
    crate::ok(json!({"object": "webhook", "id": id, "deleted": true}))
}

pub(crate) async fn rotate(auth: Auth, id: PathParam<String>) -> ApiResult {
    let h = auth.engine.rotate_webhook_secret(&path(id)?).await?;
    crate::ok(json!({"object": "webhook", "id": h.id, "signing_secret": h.secret}))
}

fn next_attempt(m: &Message) -> Value {
    m.due_at().map_or(Value::Null, |t| Value::String(iso(t)))
}

pub(crate) async fn events(auth: Auth, id: PathParam<String>, q: QueryParam) -> ApiResult {
    let id = path(id)?;
    let q = query(q)?;
    if q.contains_key("before") {
        return Err(ApiError::new(422, "validation_error", "Webhook events are paged with `after` only."));
    }
    let (page, has_more) =
        auth.engine.webhook_messages(&id, q.get("after").map(String::as_str), crate::page_limit(&q)?).await?;
    let data: Vec<Value> = page
        .iter()
        .map(
            |m| json!({"id": m.id, "type": m.event_type, "created_at": iso(m.created_at), "status": m.status.as_str()}),
        )
        .collect();
    crate::ok(json!({"object": "list", "has_more": has_more, "data": data}))
}

pub(crate) async fn event(auth: Auth, ids: PathParam<(String, String)>) -> ApiResult {
    let (id, msg) = path(ids)?;
    let m = auth.engine.webhook_message(&id, &msg).await?;
    let payload: Value = serde_json::from_str(&m.payload).unwrap_or(Value::Null);
    crate::ok(json!({
        "object": "webhook_event",
        "id": m.id,
        "type": m.event_type,
        "created_at": iso(m.created_at),
        "status": m.status.as_str(),
        "next_attempt_at": next_attempt(&m),
        "payload": payload,
    }))
}

pub(crate) async fn replay(auth: Auth, ids: PathParam<(String, String)>) -> ApiResult {
    let (id, msg) = path(ids)?;
    let m = auth.engine.replay_webhook_message(&id, &msg).await?;
    crate::ok(json!({"object": "webhook_event", "id": m.id}))
}

pub(crate) async fn attempts(auth: Auth, ids: PathParam<(String, String)>, q: QueryParam) -> ApiResult {
    let (id, msg) = path(ids)?;
    let q = query(q)?;
    let m = auth.engine.webhook_message(&id, &msg).await?;
    // A message keeps its newest `ATTEMPTS_KEPT` (32) attempts, so paging the list held whole
    // is cheap; `page_by_id` honours `before` as every other list does.
    let newest_first: Vec<_> = m.attempts.iter().rev().collect();
    let (page, has_more) = crate::page_by_id(&newest_first, |a| a.id.as_str(), &q)?;
    let data: Vec<Value> = page
        .iter()
        .map(|a| json!({"id": a.id, "http_status_code": a.status_code, "response": a.response, "sent_at": iso(a.sent_at)}))
        .collect();
    crate::ok(json!({"object": "list", "has_more": has_more, "data": data}))
}
