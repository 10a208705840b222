//! `/emails/receiving…`: received mail as the official SDKs read it, and the public download
//! URLs of a message's raw bytes and its attachments (signed by the engine's link key, valid
//! for one hour, rate-limited per client address like attachment downloads).

use crate::attachments::{base_url, file_headers};
use crate::{Api, ApiError, ApiResult, Auth, PathParam, QueryParam, email_id, ok, path, query};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use mailroom_core::email::EmailId;
use mailroom_core::error::quoted;
use mailroom_core::receiving::{
    HtmlFormat, ReceivedAttachment, attachment_content, attachment_json, detail_json, list_json,
};
use serde_json::{Value, json};

/// A download URL for `id` (its raw bytes, or `attachment`) and when it expires.
fn link(api: &Api, auth: &Auth, headers: &HeaderMap, id: EmailId, attachment: Option<&str>) -> (String, String) {
    let (token, expires) = auth.engine.download_token(id, attachment);
    let mut url = format!("{}/receiving/download/", base_url(api, headers));
    // The token's head is URL-safe base64; what follows its `/` is already escaped.
    url.push_str(&token);
    (url, mailroom_core::email::rfc3339(expires))
}

fn attachment_view(api: &Api, auth: &Auth, headers: &HeaderMap, id: EmailId, a: &ReceivedAttachment) -> Value {
    let mut v = attachment_json(a);
    let (url, expires) = link(api, auth, headers, id, Some(&a.id));
    v["download_url"] = json!(url);
    v["expires_at"] = json!(expires);
    v
}

/// `GET /emails/receiving`.
pub(crate) async fn list(auth: Auth, q: QueryParam) -> ApiResult {
    let page = auth.engine.received_list(crate::email_page(&query(q)?)?).await?;
    let data: Vec<Value> = page.items.iter().map(list_json).collect();
    ok(json!({"object": "list", "has_more": page.has_more, "data": data}))
}

/// `GET /emails/receiving/{id}[?html_format=data_uri|cid]`.
pub(crate) async fn get(
    State(api): State<Api>,
    auth: Auth,
    headers: HeaderMap,
    id: PathParam<String>,
    q: QueryParam,
) -> ApiResult {
    let id = email_id(&path(id)?)?;
    let q = query(q)?;
    let format = match q.get("html_format").map(String::as_str) {
        None | Some("data_uri") => HtmlFormat::DataUri,
        Some("cid") => HtmlFormat::Cid,
        Some(other) => {
            return Err(ApiError::new(
                422,
                "validation_error",
                format!("`html_format` must be `data_uri` or `cid`, not {}.", quoted(other)),
            ));
        }
    };
    let (e, raw) = auth.engine.received_with_raw(id).await?;
    let raw_link = link(&api, &auth, &headers, id, None);
    let mut v = detail_json(&e, &raw, format, Some(raw_link));
    if let Some(list) = v.get_mut("attachments") {
        *list = json!(e.attachments.iter().map(|a| attachment_view(&api, &auth, &headers, id, a)).collect::<Vec<_>>());
    }
    ok(v)
}

/// `GET /emails/receiving/{id}/attachments`: in the message's order, paged by `limit`, `after`
/// and `before` (an attachment id) as every list is.
pub(crate) async fn attachments(
    State(api): State<Api>,
    auth: Auth,
    headers: HeaderMap,
    id: PathParam<String>,
    q: crate::QueryParam,
) -> ApiResult {
    let q = crate::query(q)?;
    let id = email_id(&path(id)?)?;
    let e = auth.engine.received(id).await?;
    let (page, has_more) = crate::page_by_id(&e.attachments, |a| a.id.as_str(), &q)?;
    let data: Vec<Value> = page.iter().map(|a| attachment_view(&api, &auth, &headers, id, a)).collect();
    ok(json!({"object": "list", "has_more": has_more, "data": data}))
}

/// `GET /emails/receiving/{id}/attachments/{attachment_id}`.
pub(crate) async fn attachment(
    State(api): State<Api>,
    auth: Auth,
    headers: HeaderMap,
    ids: PathParam<(String, String)>,
) -> ApiResult {
    let (id, attachment) = path(ids)?;
    let id = email_id(&id)?;
    let e = auth.engine.received(id).await?;
    let a = e
        .attachments
        .iter()
        .find(|a| a.id == attachment)
        .ok_or_else(|| ApiError::new(404, "not_found", "Attachment not found"))?;
    let mut v = attachment_view(&api, &auth, &headers, id, a);
    v["object"] = json!("attachment");
    ok(v)
}

/// `GET /receiving/download/{token}`: a received message's raw bytes (`message/rfc822`) or one
/// attachment's, for whoever holds an unexpired link (no API key: the Node SDK's `forward()`
/// fetches it plainly).
pub(crate) async fn download(State(api): State<Api>, token: PathParam<String>, req: Request) -> ApiResult {
    if let Some(refused) = crate::attachments::over_download_rate(&api, &req) {
        return Ok(refused);
    }
    let token = path(token)?;
    let denied = || ApiError::new(403, "invalid_access", "The download link is invalid or has expired.");
    let (account, id, attachment) = api.engine.download_target(&token).ok_or_else(denied)?;
    let engine = api.engine.with_account(account.as_str());
    let (e, raw) = engine.received_with_raw(id).await?;
    match attachment {
        None => Ok((file_headers("message/rfc822".to_string(), &format!("{id}.eml")), raw).into_response()),
        Some(aid) => {
            let (a, content) = attachment_content(&e, &raw, &aid)
                .ok_or_else(|| ApiError::new(404, "not_found", "Attachment not found"))?;
            let name = a.filename.unwrap_or_else(|| "attachment".into());
            Ok((file_headers(a.content_type, &name), content).into_response())
        }
    }
}
