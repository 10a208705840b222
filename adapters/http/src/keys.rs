//! `POST /api-keys`, `GET /api-keys`, `PATCH /api-keys/{id}`, `DELETE /api-keys/{id}`: the wire side of the engine's
//! key rules (`mailroom_core::keys`). Nothing is decided here.

use crate::{ApiError, ApiResult, Auth, PathParam, QueryParam, json_object, ok, path, query};
use axum::body::Bytes;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub(crate) struct NewKey {
    name: Option<String>,
    permission: Option<String>,
    /// The one sending domain a `sending_access` key may send from, by name.
    domain: Option<String>,
    /// The same, by the id of one of the account's domains (what the SDKs send).
    domain_id: Option<String>,
}

pub(crate) async fn create(auth: Auth, headers: HeaderMap, body: Bytes) -> ApiResult {
    let k: NewKey = json_object(&headers, body)?;
    let permission =
        auth.engine.key_permission(k.permission.as_deref(), k.domain.as_deref(), k.domain_id.as_deref()).await?;
    let created = auth.engine.create_api_key(k.name.as_deref(), permission).await?;
    ok(json!({"id": created.record.id, "token": created.token}))
}

/// `GET /api-keys`: the active keys, newest first as every list of the API, paged by `limit`,
/// `after` and `before` (an id) as the others are; each with when it was created and last
/// used (to the minute; `null` if never). Why paged: it had answered every key with
/// `has_more: false` whatever `limit` said, so a client paging as the SDKs do saw one page.
pub(crate) async fn list(auth: Auth, q: QueryParam) -> ApiResult {
    let q = query(q)?;
    let keys = auth.engine.list_api_keys().await?;
    let active: Vec<_> = keys.iter().rev().filter(|k| k.revoked_at.is_none()).collect();
    let (page, has_more) = crate::page_by_id(&active, |k| k.id.as_str(), &q)?;
    // Times as the hosted API writes them here (`2023-04-08T00:11:13.110779+00:00`).
    let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let data: Vec<_> = page
        .iter()
        .map(|k| {
            json!({"id": k.id, "name": k.name, "created_at": time(&k.created_at),
                   "last_used_at": k.last_used_at.as_ref().map(time)})
        })
        .collect();
    ok(json!({"object": "list", "has_more": has_more, "data": data}))
}

#[derive(Deserialize)]
pub(crate) struct Rename {
    name: Option<String>,
}

/// `PATCH /api-keys/{id}` `{name}`: the SDKs' `apiKeys.update`.
pub(crate) async fn rename(auth: Auth, headers: HeaderMap, id: PathParam<String>, body: Bytes) -> ApiResult {
    let id = path(id)?;
    let r: Rename = json_object(&headers, body)?;
    let key = auth.engine.rename_api_key(&id, r.name.as_deref()).await?;
    ok(json!({"object": "api_key", "id": key.id}))
}

pub(crate) async fn revoke(auth: Auth, id: PathParam<String>) -> ApiResult {
    auth.engine.revoke_api_key(&path(id)?).await.map_err(ApiError::from)?;
    ok(json!({}))
}
