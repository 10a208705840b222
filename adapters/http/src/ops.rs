//! `GET /health` (the process answers), `GET /ready` (its store answers too) and
//! `GET /metrics` (Prometheus text, when the host gave a renderer). None needs a key; none
//! says more than an operator's load balancer or scraper needs.

use crate::{Api, ApiError, ApiResult, ok};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;

pub(crate) async fn health() -> ApiResult {
    ok(json!({"status": "ok"}))
}

/// Ready when the store answers a read (the next due time: one cheap lookup).
pub(crate) async fn ready(State(api): State<Api>) -> ApiResult {
    match api.engine.storage().next_due().await {
        Ok(_) => ok(json!({"status": "ready"})),
        Err(e) => {
            tracing::warn!(target: "mailroom::http", error = %e, "not ready: the store does not answer");
            Err(ApiError::new(503, "service_unavailable", "The store does not answer."))
        }
    }
}

pub(crate) async fn metrics(State(api): State<Api>) -> ApiResult {
    let render = api.config.metrics.clone().ok_or_else(|| ApiError::new(404, "not_found", "No metrics here."))?;
    let text = render();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
