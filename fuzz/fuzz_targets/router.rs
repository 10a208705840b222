//! The whole REST API (every layer: shedding, JSON errors, the guard, the handlers) driven with
//! arbitrary requests: every answer is JSON in the catalogue's shape when it is an error (the
//! pages a browser opens, HTML), and the server still answers `/health` afterwards.
//!
//! Input layout: byte 0 picks the method and whether a valid key is sent; the rest, split at
//! NUL, is the path and query, then header lines (`name: value`), then the body.
#![no_main]
use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use mailroom_core::Engine;
use mailroom_core::memory::MemoryStorage;
use mailroom_core::ports::KeyPermission;
use mailroom_http::{Api, ApiConfig, RateLimits, router};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

struct State {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let engine = Engine::builder(Arc::new(MemoryStorage::new())).build();
        let token = rt.block_on(engine.create_api_key(Some("fuzz"), KeyPermission::FullAccess)).expect("key").token;
        let mut config = ApiConfig::default();
        config.rate_limits = RateLimits::none();
        config.max_body_bytes = 1 << 20;
        // The dashboard too: its pages parse queries, forms and cookies from anyone.
        config.dashboard = mailroom_http::DashboardConfig::new("/dashboard", false).ok();
        State { app: router(Api::new(engine, config)), rt, token }
    })
}

async fn call(app: &axum::Router, req: Request<Body>) -> (u16, Option<String>, Vec<u8>) {
    let r = app.clone().oneshot(req).await.expect("the router is infallible");
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = axum::body::to_bytes(r.into_body(), 16 << 20).await.expect("a body");
    (status, ct, body.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let s = state();
    let methods =
        [Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::PUT, Method::OPTIONS, Method::HEAD];
    let method = methods[usize::from(first & 7) % methods.len()].clone();
    let mut parts = rest.split(|b| *b == 0);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
    let path = if path.starts_with('/') { path } else { format!("/{path}") };
    let Ok(uri) = path.parse::<axum::http::Uri>() else { return };
    let mut builder = Request::builder().method(method.clone()).uri(uri);
    if first & 0x80 != 0 {
        builder = builder.header("authorization", format!("Bearer {}", s.token));
    }
    let header_block = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
    for line in header_block.lines() {
        if let Some((n, v)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) =
                (axum::http::HeaderName::try_from(n.trim()), axum::http::HeaderValue::try_from(v.trim()))
            {
                builder = builder.header(n, v);
            }
        }
    }
    let body: Vec<u8> = parts.flat_map(|p| p.iter().copied().chain([0])).collect();
    let Ok(req) = builder.body(Body::from(body)) else { return };
    let (status, ct, body) = s.rt.block_on(call(&s.app, req));
    // The pages a person's browser or mail client opens answer HTML, errors included (the
    // documented exception to "every answer is JSON").
    let page = ["/shared", "/t/o/", "/t/c/", "/unsubscribe/", "/dashboard"].iter().any(|p| path.starts_with(p))
        && ct.as_deref().is_some_and(|c| c.starts_with("text/html"));
    if status >= 400 && method != Method::HEAD && !page {
        assert!(ct.as_deref().is_some_and(|c| c.starts_with("application/json")), "{status} without JSON: {ct:?}");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("the error body is JSON");
        assert_eq!(v["statusCode"].as_u64(), Some(u64::from(status)), "{v}");
        assert!(v["name"].as_str().is_some_and(|n| !n.is_empty()) && v["message"].is_string(), "{v}");
    }
    let health = Request::builder().uri("/health").body(Body::empty()).expect("a request");
    let (status, _, _) = s.rt.block_on(call(&s.app, health));
    assert_eq!(status, 200, "the server stopped answering");
});
