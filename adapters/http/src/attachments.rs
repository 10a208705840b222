//! `GET /emails/{id}/attachments[/{attachment_id}]`, and the signed download URLs they hand
//! out (valid for one hour, like the hosted service's).
//!
//! Invariants: a download URL works without an API key only while its HMAC-SHA256 signature
//! over (account, email, attachment, expiry) checks out (compared in constant time, by ring)
//! and the expiry has not passed on the engine's clock; downloads are rate-limited per client
//! address; a URL's host is the configured public URL's, or a `Host` header that is a plain
//! host name (anything else is not echoed back).

use crate::guard::{client_ip, peer};
use crate::{Api, ApiError, ApiResult, Auth, PathParam, QueryParam, email_id, ok, path, query};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use mailroom_core::Engine;
use mailroom_core::email::{AccountId, Attachment, EmailId};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

/// What a query value keeps as it is: RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// What an RFC 8187 `filename*` value keeps as it is: its `attr-char`s.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// How long a download URL works.
const URL_LIFETIME_SECS: i64 = 3600;

fn signed_part(account: &str, email: &EmailId, attachment: &str, expires: i64) -> String {
    format!("{account}\n{email}\n{attachment}\n{expires}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A host name and optional port, and nothing else (no scheme, path, user info or spaces).
fn plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        && !h.starts_with(['.', '-', ':'])
}

/// Where the URLs the API hands out point: the configured public URL, or the request's host.
pub(crate) fn base_url(api: &Api, headers: &HeaderMap) -> String {
    if let Some(base) = &api.config.public_url {
        return base.trim_end_matches('/').to_string();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| plain_host(h));
    format!("http://{}", host.unwrap_or("localhost"))
}

fn view(api: &Api, headers: &HeaderMap, account: &AccountId, email: &EmailId, a: &Attachment) -> Value {
    let now = api.engine.clock().now();
    let expires = now.timestamp() + URL_LIFETIME_SECS;
    let id = a.id.to_string();
    let tag = ring::hmac::sign(&api.url_key, signed_part(&account.0, email, &id, expires).as_bytes());
    let account_q = utf8_percent_encode(&account.0, QUERY_VALUE).to_string();
    json!({
        "object": "attachment",
        "id": id,
        "filename": a.filename,
        "content_type": a.content_type,
        "content_id": a.content_id,
        "content_disposition": if a.content_id.is_some() { "inline" } else { "attachment" },
        "size": a.content.len(),
        "download_url": format!(
            "{}/emails/{email}/attachments/{id}/content?account={account_q}&expires={expires}&signature={}",
            base_url(api, headers),
            hex(tag.as_ref())
        ),
        // Written as every other time the API gives (`…T…Z`, milliseconds).
        "expires_at": chrono::DateTime::from_timestamp(expires, 0).map(mailroom_core::email::rfc3339),
    })
}

async fn attachments_of(engine: &Engine, id: &str) -> Result<(EmailId, Vec<Attachment>), ApiError> {
    let id = email_id(id)?;
    Ok((id, engine.get_record(id).await?.content.attachments))
}

/// `GET /emails/{id}/attachments`: the email's attachments in order, paged by `limit`,
/// `after` and `before` (an attachment id) as every list is.
pub(crate) async fn list(
    State(api): State<Api>,
    auth: Auth,
    headers: HeaderMap,
    id: PathParam<String>,
    q: crate::QueryParam,
) -> ApiResult {
    let q = crate::query(q)?;
    let (email, list) = attachments_of(&auth.engine, &path(id)?).await?;
    let ids: Vec<(String, &Attachment)> = list.iter().map(|a| (a.id.to_string(), a)).collect();
    let (page, has_more) = crate::page_by_id(&ids, |(id, _)| id.as_str(), &q)?;
    let data: Vec<Value> = page.iter().map(|(_, a)| view(&api, &headers, &auth.account, &email, a)).collect();
    ok(json!({"object": "list", "has_more": has_more, "data": data}))
}

/// `GET /emails/{id}/attachments/{attachment_id}`.
pub(crate) async fn get(
    State(api): State<Api>,
    auth: Auth,
    headers: HeaderMap,
    ids: PathParam<(String, String)>,
) -> ApiResult {
    let (id, attachment) = path(ids)?;
    let (email, list) = attachments_of(&auth.engine, &id).await?;
    let a = list
        .iter()
        .find(|a| a.id.to_string() == attachment)
        .ok_or_else(|| ApiError::new(404, "not_found", "Attachment not found"))?;
    ok(view(&api, &headers, &auth.account, &email, a))
}

/// The headers of a file served from a download link: its declared type, a download
/// disposition, no sniffing, and a policy that runs nothing. The files come from whoever sent
/// the email (a received message's attachment is a stranger's), and a link opens on this
/// server's origin: should a browser show one (an `text/html` or `image/svg+xml` file opened
/// from a download list, a PDF viewer), `sandbox` puts it in an origin of its own with scripts
/// off, so it can reach neither the dashboard's session nor the API.
pub(crate) fn file_headers(content_type: String, filename: &str) -> [(header::HeaderName, String); 4] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_DISPOSITION, disposition(filename)),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".to_string()),
    ]
}

/// `Content-Disposition` for a download (RFC 6266): a plain ASCII fallback and the exact name
/// encoded (RFC 8187), so no byte of a filename reaches the header unencoded.
pub(crate) fn disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    let encoded = utf8_percent_encode(filename, ATTR_CHAR);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// The `429` for a client address past the download rate (every keyless download counts
/// against it), or `None`.
pub(crate) fn over_download_rate(api: &Api, req: &Request) -> Option<axum::response::Response> {
    let ip = client_ip(api, peer(req), req.headers());
    let subject = crate::guard::ip_key(ip);
    if api.limiters.downloads.check(&subject, std::time::Instant::now()).allowed {
        return None;
    }
    let mut r = ApiError::new(429, "rate_limit_exceeded", "Too many downloads; try again in a moment.").into_response();
    r.headers_mut().insert(header::RETRY_AFTER, 1.into());
    Some(r)
}

/// `GET /emails/{id}/attachments/{attachment_id}/content?account&expires&signature`: the
/// bytes, for whoever holds an unexpired signed URL (no API key).
pub(crate) async fn download(
    State(api): State<Api>,
    ids: PathParam<(String, String)>,
    q: QueryParam,
    req: Request,
) -> ApiResult {
    if let Some(refused) = over_download_rate(&api, &req) {
        return Ok(refused);
    }
    let (id, attachment) = path(ids)?;
    let q = query(q)?;
    let denied = || ApiError::new(403, "invalid_access", "The download link is invalid or has expired.");
    let (Some(account), Some(expires), Some(signature)) = (q.get("account"), q.get("expires"), q.get("signature"))
    else {
        return Err(denied());
    };
    let email = email_id(&id)?;
    let expires: i64 = expires.parse().map_err(|_| denied())?;
    let tag = unhex(signature).ok_or_else(denied)?;
    ring::hmac::verify(&api.url_key, signed_part(account, &email, &attachment, expires).as_bytes(), &tag)
        .map_err(|_| denied())?;
    if api.engine.clock().now().timestamp() > expires {
        return Err(denied());
    }
    let engine = api.engine.with_account(account);
    let (_, list) = attachments_of(&engine, &id).await?;
    let a = list
        .into_iter()
        .find(|a| a.id.to_string() == attachment)
        .ok_or_else(|| ApiError::new(404, "not_found", "Attachment not found"))?;
    let name = a.filename.unwrap_or_else(|| "attachment".into());
    Ok((file_headers(a.content_type, &name), a.content).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_encoded_and_hosts_checked() {
        let d = disposition("a\r\nb\u{1}\"ü.pdf");
        assert!(d.bytes().all(|b| (0x20..0x7f).contains(&b)), "{d:?}");
        assert!(d.ends_with("filename*=UTF-8''a%0D%0Ab%01%22%C3%BC.pdf"), "{d}");
        assert!(plain_host("mail.example.com:3000") && plain_host("[::1]:80"));
        assert!(!plain_host("evil.test/x?") && !plain_host("a b") && !plain_host("user@host"));
    }
}
