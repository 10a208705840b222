//! `/domains…`: the hosted service's domain endpoints, as the official SDKs call them. The
//! engine decides every rule (`mailroom_core::domains`); this translates.

use crate::{ApiError, ApiResult, Auth, PathParam, QueryParam, json_object, path, query};
use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use mailroom_core::domains::{Domain, DomainUpdate, NewDomain, TlsMode, domain_json, records_json};
use mailroom_core::error::quoted;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
pub(crate) struct Capabilities {
    sending: Option<String>,
    receiving: Option<String>,
}

fn capability(field: &str, v: Option<&str>) -> Result<Option<bool>, ApiError> {
    match v {
        None => Ok(None),
        Some("enabled") => Ok(Some(true)),
        Some("disabled") => Ok(Some(false)),
        Some(other) => Err(ApiError::new(
            422,
            "validation_error",
            format!("`capabilities.{field}` must be `enabled` or `disabled`, not {}.", quoted(other)),
        )),
    }
}

fn tls(v: Option<&str>) -> Result<Option<TlsMode>, ApiError> {
    match v {
        None => Ok(None),
        Some("opportunistic") => Ok(Some(TlsMode::Opportunistic)),
        Some("enforced") => Ok(Some(TlsMode::Enforced)),
        Some(other) => Err(ApiError::new(
            422,
            "validation_error",
            format!("`tls` must be `opportunistic` or `enforced`, not {}.", quoted(other)),
        )),
    }
}

#[derive(Deserialize)]
pub(crate) struct Create {
    name: Option<String>,
    region: Option<String>,
    custom_return_path: Option<String>,
    capabilities: Option<Capabilities>,
    open_tracking: Option<bool>,
    click_tracking: Option<bool>,
    tls: Option<String>,
    tracking_subdomain: Option<String>,
}

/// The domain with its records (what create and get answer).
fn full(d: &Domain) -> Value {
    let mut v = domain_json(d);
    v["records"] = Value::Array(records_json(d));
    v
}

pub(crate) async fn create(auth: Auth, headers: HeaderMap, body: Bytes) -> ApiResult {
    let c: Create = json_object(&headers, body)?;
    let name = c.name.ok_or_else(|| ApiError::new(422, "missing_required_field", "Missing `name` field."))?;
    let caps = c.capabilities.unwrap_or_default();
    let mut new = NewDomain::new(name);
    new.region = c.region;
    new.custom_return_path = c.custom_return_path;
    new.sending = capability("sending", caps.sending.as_deref())?;
    new.receiving = capability("receiving", caps.receiving.as_deref())?;
    new.open_tracking = c.open_tracking;
    new.click_tracking = c.click_tracking;
    new.tls = tls(c.tls.as_deref())?;
    new.tracking_subdomain = c.tracking_subdomain;
    let d = auth.engine.create_domain(new).await?;
    Ok((StatusCode::CREATED, Json(full(&d))).into_response())
}

pub(crate) async fn get(auth: Auth, id: PathParam<String>) -> ApiResult {
    let d = auth.engine.domain(&path(id)?).await?;
    let mut v = full(&d);
    v["object"] = json!("domain");
    crate::ok(v)
}

pub(crate) async fn list(auth: Auth, q: QueryParam) -> ApiResult {
    let q = query(q)?;
    let all = auth.engine.domains().await?;
    let (page, has_more) = crate::page_by_id(&all, |d| d.id.as_str(), &q)?;
    let data: Vec<Value> = page.iter().map(domain_json).collect();
    crate::ok(json!({"object": "list", "has_more": has_more, "data": data}))
}

#[derive(Deserialize)]
pub(crate) struct Update {
    open_tracking: Option<bool>,
    click_tracking: Option<bool>,
    tls: Option<String>,
    capabilities: Option<Capabilities>,
    tracking_subdomain: Option<String>,
}

pub(crate) async fn update(auth: Auth, headers: HeaderMap, id: PathParam<String>, body: Bytes) -> ApiResult {
    let id = path(id)?;
    // Python also sends `id` in the body: unknown fields are ignored.
    let u: Update = json_object(&headers, body)?;
    let caps = u.capabilities.unwrap_or_default();
    let mut change = DomainUpdate::new();
    change.open_tracking = u.open_tracking;
    change.click_tracking = u.click_tracking;
    change.tls = tls(u.tls.as_deref())?;
    change.sending = capability("sending", caps.sending.as_deref())?;
    change.receiving = capability("receiving", caps.receiving.as_deref())?;
    change.tracking_subdomain = u.tracking_subdomain;
    let d = auth.engine.update_domain(&id, change).await?;
    crate::ok(json!({"object": "domain", "id": d.id}))
}

pub(crate) async fn remove(auth: Auth, id: PathParam<String>) -> ApiResult {
    let d = auth.engine.delete_domain(&path(id)?).await?;
    crate::ok(json!({"object": "domain", "id": d.id, "deleted": true}))
}

pub(crate) async fn verify(auth: Auth, id: PathParam<String>) -> ApiResult {
    let d = auth.engine.verify_domain(&path(id)?).await?;
    crate::ok(json!({"object": "domain", "id": d.id}))
}
