//! The routes a person's browser or mail client opens, not an API client: tracking links,
//! the open pixel, one-click unsubscribe. They need no key (the token in the path is the
//! authority), answer HTML or an image rather than JSON, and record at most what the
//! per-address limit allows (the pixel and the redirect are answered regardless).

use crate::guard::{client_ip, peer};
use crate::{Api, PathParam};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mailroom_core::tracking::{Followed, PIXEL_GIF};

/// Marks a response as a page on purpose (the JSON error layer leaves it alone).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page;

/// Escapes text for HTML.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A small page: no script, no outside resource, not framable, not cached.
pub(crate) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}}\
         button{{font:inherit;padding:.5rem 1rem}}</style></head><body><h1>{title}</h1>{body}</body></html>",
        title = esc(title)
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    secure(h);
    r.extensions_mut().insert(Page);
    r
}

fn secure(h: &mut axum::http::HeaderMap) {
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn too_many() -> Response {
    let mut r = page(StatusCode::TOO_MANY_REQUESTS, "Try again", "<p>Too many requests; try again in a moment.</p>");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn not_a_link() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "This link is not valid",
        "<p>The link is incomplete or was changed. Open it from the email again.</p>",
    )
}

/// Whether this client may cause a write now (the per-address download limit).
fn may_record(api: &Api, req: &Request) -> (Option<std::net::IpAddr>, bool) {
    let ip = client_ip(api, peer(req), req.headers());
    let subject = crate::guard::ip_key(ip);
    (ip, api.limiters.downloads.check(&subject, std::time::Instant::now()).allowed)
}

fn user_agent(req: &Request) -> Option<String> {
    req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The token after `prefix` in the request's path, as sent (not percent-decoded: the token's
/// own escapes are part of what is signed).
fn raw_token<'a>(req: &'a Request, prefix: &str) -> Option<&'a str> {
    req.uri().path().strip_prefix(prefix).filter(|t| !t.is_empty())
}

/// `GET /t/o/{token}.gif`: the open pixel.
pub(crate) async fn open(State(api): State<Api>, req: Request) -> Response {
    let (ip, record) = may_record(&api, &req);
    let token = raw_token(&req, "/t/o/").unwrap_or_default();
    let token = token.strip_suffix(".gif").unwrap_or(token);
    // Any answer but the image would show a broken picture in the reader's mail.
    let _ = api.engine.follow(token, ip, user_agent(&req).as_deref(), record).await;
    let mut r = Response::new(Body::from(PIXEL_GIF));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/gif"));
    secure(r.headers_mut());
    r.extensions_mut().insert(Page);
    r
}

/// `GET /t/c/{token}`: a tracked link, redirected to the URL it signs.
pub(crate) async fn click(State(api): State<Api>, req: Request) -> Response {
    let Some(token) = raw_token(&req, "/t/c/") else { return not_a_link() };
    let (ip, record) = may_record(&api, &req);
    match api.engine.follow(token, ip, user_agent(&req).as_deref(), record).await {
        Ok(Followed::Click(url)) => match HeaderValue::from_str(&url) {
            Ok(location) => {
                let mut r = StatusCode::FOUND.into_response();
                r.headers_mut().insert(header::LOCATION, location);
                secure(r.headers_mut());
                r.extensions_mut().insert(Page);
                r
            }
            Err(_) => not_a_link(),
        },
        // A failed write must not keep the reader from the link: the token was checked first.
        Err(mailroom_core::Error::Storage(_)) => match api.engine.follow(token, ip, None, false).await {
            Ok(Followed::Click(url)) => HeaderValue::from_str(&url).map_or_else(
                |_| not_a_link(),
                |location| {
                    let mut r = StatusCode::FOUND.into_response();
                    r.headers_mut().insert(header::LOCATION, location);
                    r.extensions_mut().insert(Page);
                    r
                },
            ),
            _ => not_a_link(),
        },
        _ => not_a_link(),
    }
}

/// `GET /unsubscribe/{token}`: a page asking to confirm (a GET must not unsubscribe: mail
/// scanners follow links).
pub(crate) async fn unsubscribe_page(State(api): State<Api>, req: Request) -> Response {
    let Some(token) = raw_token(&req, "/unsubscribe/") else { return not_a_link() };
    match api.engine.unsubscribe_token(token) {
        Some((_, _, recipient)) => page(
            StatusCode::OK,
            "Unsubscribe",
            &format!(
                "<p>Stop emails from this sender to <strong>{}</strong>?</p>\
                 <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
                 <button type=\"submit\">Unsubscribe</button></form>",
                esc(&recipient)
            ),
        ),
        None => not_a_link(),
    }
}

/// `POST /unsubscribe/{token}`: RFC 8058 one-click (`List-Unsubscribe=One-Click`), or the
/// confirmation form.
pub(crate) async fn unsubscribe(State(api): State<Api>, req: Request) -> Response {
    let Some(token) = raw_token(&req, "/unsubscribe/") else { return not_a_link() };
    let (_, allowed) = may_record(&api, &req);
    if !allowed {
        return too_many();
    }
    match api.engine.unsubscribe(token).await {
        Ok(recipient) => page(
            StatusCode::OK,
            "You are unsubscribed",
            &format!("<p>No more emails from this sender will be sent to <strong>{}</strong>.</p>", esc(&recipient)),
        ),
        Err(mailroom_core::Error::NotFound { .. }) => not_a_link(),
        Err(_) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            "<p>Something went wrong on our side; try again in a moment.</p>",
        ),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct ShareBody {
    expires_in: Option<String>,
}

/// `POST /emails/{id}/share {expires_in}` → `{object, id, url}`.
pub(crate) async fn share(
    State(api): State<Api>,
    auth: crate::Auth,
    headers: axum::http::HeaderMap,
    id: PathParam<String>,
    body: axum::body::Bytes,
) -> crate::ApiResult {
    let id = crate::email_id(&crate::path(id)?)?;
    let b: ShareBody = crate::json_object(&headers, body)?;
    let (token, _) = auth.engine.share(id, b.expires_in.as_deref()).await?;
    let url = format!("{}/shared?token={token}", crate::attachments::base_url(&api, &headers));
    crate::ok(serde_json::json!({"object": "email", "id": id.to_string(), "url": url}))
}

#[derive(serde::Deserialize)]
pub(crate) struct SharedQuery {
    token: Option<String>,
    images: Option<String>,
}

/// Inline images (`cid:`) as `data:` URLs, so the preview shows them without a request: in
/// one pass, adding at most 5 MB however often an image is named.
pub(crate) fn inline_images(html: &str, r: &mailroom_core::email::EmailRecord) -> String {
    let inline: std::collections::HashMap<&str, (String, &[u8])> = r
        .content
        .attachments
        .iter()
        .filter(|a| a.content_type.starts_with("image/"))
        .filter_map(|a| {
            let mime = a.content_type.split(';').next().unwrap_or("image/png").trim().to_string();
            Some((a.content_id.as_deref()?, (mime, &a.content[..])))
        })
        .collect();
    mailroom_core::receiving::inline_images(html, &inline, 5 << 20)
}

/// The preview's html with its embedding elements (`iframe`, `frame`, `object`, `embed`)
/// renamed into unknown elements: the policy stops their loads, but Chromium opens a
/// connection to a frame's host before it checks — enough to tell a tracker the email was
/// looked at. A tag name is only ever spelled out in the source (scripts, which could make
/// one otherwise, never run), so renaming every spelling ignoring case is complete.
pub(crate) fn without_frames(html: &str) -> String {
    const TAGS: [&str; 4] = ["<iframe", "<frame", "<object", "<embed"];
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() + 64);
    let mut i = 0;
    while let Some(off) = lower[i..].find('<') {
        let at = i + off;
        out.push_str(&html[i..at]);
        match TAGS.iter().find(|t| lower[at..].starts_with(**t)) {
            Some(t) => {
                out.push_str("<x-blocked-");
                out.push_str(&html[at + 1..at + t.len()]);
                i = at + t.len();
            }
            None => {
                out.push('<');
                i = at + 1;
            }
        }
    }
    out.push_str(&html[i..]);
    out
}

/// `GET /shared?token=…`: the email as Preview, Plain Text and HTML, for whoever holds the
/// link. Its HTML is shown only inside a sandboxed frame without scripts, under a policy that
/// runs no script and loads nothing from elsewhere — remote images only when asked for
/// (`&images=1`).
pub(crate) async fn shared(State(api): State<Api>, q: axum::extract::Query<SharedQuery>, req: Request) -> Response {
    let (_, allowed) = may_record(&api, &req);
    if !allowed {
        return too_many();
    }
    let Some(token) = q.token.as_deref() else { return not_a_link() };
    let record = match api.engine.shared(token).await {
        Ok(r) => r,
        Err(mailroom_core::share::ShareError::Expired) => {
            return page(
                StatusCode::GONE,
                "This link has expired",
                "<p>Share links last at most 48 hours. Ask for a new one.</p>",
            );
        }
        Err(mailroom_core::share::ShareError::Invalid) => return not_a_link(),
    };
    let images = q.images.as_deref() == Some("1");
    let c = &record.content;
    let list =
        |v: &[mailroom_core::address::Mailbox]| esc(&v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
    let html = c.html.as_deref().map(|h| inline_images(h, &record));
    let preview = match &html {
        Some(h) => format!(
            "<iframe title=\"Preview\" sandbox srcdoc=\"{}\" referrerpolicy=\"no-referrer\"></iframe>{}",
            esc(&without_frames(h)),
            if images {
                String::new()
            } else {
                format!(
                    "<p class=\"note\">Remote images are not loaded. <a href=\"?token={}&amp;images=1#preview\">Load remote images</a></p>",
                    esc(token)
                )
            }
        ),
        None => "<p>This email has no HTML part.</p>".into(),
    };
    // The text part as recipients got it: derived from the html when the client sent none.
    let text = api
        .engine
        .text_part(c)
        .map_or_else(|| "<p>This email has no plain-text part.</p>".into(), |t| format!("<pre>{}</pre>", esc(&t)));
    let source = html
        .as_deref()
        .map_or_else(|| "<p>This email has no HTML part.</p>".into(), |h| format!("<pre>{}</pre>", esc(h)));
    let when = mailroom_core::email::rfc3339(record.state.created_at);
    let body = format!(
        "<dl><dt>From</dt><dd>{from}</dd><dt>To</dt><dd>{to}</dd>{cc}<dt>Subject</dt><dd>{subject}</dd>\
         <dt>Sent</dt><dd><time datetime=\"{when}\">{when}</time></dd></dl>\
         <nav aria-label=\"Views\"><a href=\"#preview\">Preview</a> <a href=\"#text\">Plain Text</a> <a href=\"#html\">HTML</a></nav>\
         <div class=\"views\"><section id=\"text\"><h2>Plain Text</h2>{text}</section>\
         <section id=\"html\"><h2>HTML</h2>{source}</section>\
         <section id=\"preview\"><h2>Preview</h2>{preview}</section></div>",
        from = esc(&c.from.to_string()),
        to = list(&c.to),
        cc = if c.cc.is_empty() { String::new() } else { format!("<dt>Cc</dt><dd>{}</dd>", list(&c.cc)) },
        subject = esc(&c.subject),
    );
    let mut r = page(StatusCode::OK, &c.subject, &format!("<style>{SHARE_CSS}</style>{body}"));
    let img = if images { "data: https: http:" } else { "data:" };
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src {img}; font-src data:; frame-src 'self'; \
         form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// Tabs without script: the section named in the URL's fragment shows; with none, the preview.
const SHARE_CSS: &str = "body{max-width:60rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}\
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}nav a{margin-right:1rem}\
.views section{display:none}.views section:target{display:block}\
.views:not(:has(section:target)) #preview{display:block}\
iframe{width:100%;min-height:70vh;border:1px solid #ccc}pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f6f6;padding:1rem}\
.note{font-size:.9rem;color:#555}";

#[cfg(test)]
mod tests {
    use super::without_frames;

    #[test]
    fn embedding_elements_are_renamed_whatever_their_case() {
        assert_eq!(
            without_frames("<p>a<IFRAME src=x></iframe><Frame><object data=y><embed src=z><img src=w>"),
            "<p>a<x-blocked-IFRAME src=x></iframe><x-blocked-Frame><x-blocked-object data=y><x-blocked-embed src=z><img src=w>"
        );
        assert_eq!(without_frames("é<iframeö"), "é<x-blocked-iframeö");
    }
}
