//! `GET /emails/{id}/attachments[/{attachment_id}]`, and the signed download URLs they hand
//! out (valid for one hour, like the hosted service's).
//!
//! Invariant: a download URL works without an API key only while its HMAC-SHA256 signature
//! over (account, email, attachment, expiry) checks out and the expiry has not passed.

use crate::{Api, ApiError, ApiResult, email_id, ok};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use mailroom_core::Engine;
use mailroom_core::email::{AccountId, Attachment, EmailId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// How long a download URL works.
const URL_LIFETIME_SECS: i64 = 3600;

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
fn hmac(key: &[u8; 32], message: &str) -> String {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(key);
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message.as_bytes()).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

fn signed_part(account: &str, email: &EmailId, attachment: &str, expires: i64) -> String {
    format!("{account}\n{email}\n{attachment}\n{expires}")
}

fn view(api: &Api, headers: &HeaderMap, account: &AccountId, email: &EmailId, a: &Attachment) -> Value {
    let now = api.engine.clock().now();
    let expires = now.timestamp() + URL_LIFETIME_SECS;
    let id = a.id.to_string();
    let signature = hmac(&api.url_key, &signed_part(&account.0, email, &id, expires));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let account_q: String = account.0.bytes().map(|b| format!("%{b:02X}")).collect();
    json!({
        "object": "attachment",
        "id": id,
        "filename": a.filename,
        "content_type": a.content_type,
        "content_id": a.content_id,
        "content_disposition": if a.content_id.is_some() { "inline" } else { "attachment" },
        "size": a.content.len(),
        "download_url": format!(
            "http://{host}/emails/{email}/attachments/{id}/content?account={account_q}&expires={expires}&signature={signature}"
        ),
        "expires_at": chrono::DateTime::from_timestamp(expires, 0).map(|t| t.to_rfc3339()),
    })
}

async fn attachments_of(engine: &Engine, id: &str) -> Result<(EmailId, Vec<Attachment>), ApiError> {
    let id = email_id(id)?;
    Ok((id, engine.get_record(id).await?.content.attachments))
}

/// `GET /emails/{id}/attachments`: every attachment of the email, in order.
pub(crate) async fn list(
    State(api): State<Api>,
    Extension(engine): Extension<Engine>,
    Extension(account): Extension<AccountId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let (email, list) = attachments_of(&engine, &id).await?;
    let data: Vec<Value> = list.iter().map(|a| view(&api, &headers, &account, &email, a)).collect();
    ok(json!({"object": "list", "has_more": false, "data": data}))
}

/// `GET /emails/{id}/attachments/{attachment_id}`.
pub(crate) async fn get(
    State(api): State<Api>,
    Extension(engine): Extension<Engine>,
    Extension(account): Extension<AccountId>,
    headers: HeaderMap,
    Path((id, attachment)): Path<(String, String)>,
) -> ApiResult {
    let (email, list) = attachments_of(&engine, &id).await?;
    let a = list
        .iter()
        .find(|a| a.id.to_string() == attachment)
        .ok_or_else(|| ApiError::new(404, "not_found", "Attachment not found"))?;
    ok(view(&api, &headers, &account, &email, a))
}

/// `GET /emails/{id}/attachments/{attachment_id}/content?account&expires&signature`: the
/// bytes, for whoever holds an unexpired signed URL (no API key).
pub(crate) async fn download(
    State(api): State<Api>,
    Path((id, attachment)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let denied = || ApiError::new(403, "invalid_access", "The download link is invalid or has expired.");
    let (Some(account), Some(expires), Some(signature)) = (q.get("account"), q.get("expires"), q.get("signature"))
    else {
        return Err(denied());
    };
    let email = email_id(&id)?;
    let expires: i64 = expires.parse().map_err(|_| denied())?;
    let expected = hmac(&api.url_key, &signed_part(account, &email, &attachment, expires));
    // Compared whole, without an early exit on the first differing byte.
    let same = expected.len() == signature.len()
        && expected.bytes().zip(signature.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if !same || api.engine.clock().now().timestamp() > expires {
        return Err(denied());
    }
    let engine = api.engine.with_account(account);
    let (_, list) = attachments_of(&engine, &id).await?;
    let a = list
        .into_iter()
        .find(|a| a.id.to_string() == attachment)
        .ok_or_else(|| ApiError::new(404, "not_found", "Attachment not found"))?;
    let disposition = format!("attachment; filename=\"{}\"", a.filename.unwrap_or_default().replace('"', ""));
    Ok(([(header::CONTENT_TYPE, a.content_type), (header::CONTENT_DISPOSITION, disposition)], a.content)
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1: a 20-byte key of 0x0b (zero-padded, as HMAC pads every short key).
        let mut key = [0u8; 32];
        key[..20].fill(0x0b);
        assert_eq!(hmac(&key, "Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    }
}
