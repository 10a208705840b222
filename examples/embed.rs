//! Embedding mailroom in a host application: the engine on its own redb file, the host's own
//! routes beside mailroom's REST API (nested under `/mailroom`, where an official SDK's base
//! URL can point), and the delivery worker in the same process.
//!
//! ```text
//! cargo run --example embed
//! ```
//!
//! It sends one email through the library and one through the API (to itself, over HTTP),
//! lets the worker deliver both through the sandbox, prints what happened and stops.

use axum::Router;
use axum::routing::get;
use mailroom::http::{Api, ApiConfig, KeyPermission, ServerConfig, router, serve};
use mailroom::prelude::*;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = mailroom::redb::RedbStorage::open(dir.path().join("app.redb"))?;
    let engine = Engine::builder(Arc::new(store)).build();

    // The library, called directly.
    let welcome: EmailRequest = serde_json::from_value(serde_json::json!({
        "from": "Acme <hello@acme.test>",
        "to": "delivered@resend.dev",
        "subject": "Welcome",
        "html": "<p>Welcome aboard</p>"
    }))?;
    let direct = engine.send(welcome, SendOptions::idempotency_key("welcome/42")).await?;

    // The REST API, mounted beside the host's own routes.
    let key = engine.create_api_key(Some("the app itself"), KeyPermission::FullAccess).await?;
    let app = Router::new()
        .route("/app/health", get(|| async { "the host's own route" }))
        .nest("/mailroom", router(Api::new(engine.clone(), ApiConfig::default())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/mailroom", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app, ServerConfig::default(), async {
        let _ = stopped.await;
    }));

    let over_http: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/emails"))
        .bearer_auth(&key.token)
        .json(&serde_json::json!({
            "from": "Acme <hello@acme.test>",
            "to": "bounced@resend.dev",
            "subject": "Your receipt",
            "text": "Thanks!"
        }))
        .send()
        .await?
        .json()
        .await?;
    let via_api: EmailId = over_http["id"].as_str().ok_or("no id in the answer")?.parse()?;

    // The worker delivers what is due (the sandbox simulates the test addresses).
    engine.worker(Arc::new(SandboxTransport::default()), WorkerConfig::default()).run_until_idle().await?;
    for (how, id) in [("library", direct.id), ("REST API", via_api)] {
        let email = engine.get(id).await?;
        println!("{how}: {id} → {:?}", email.last_event.map(|k| k.as_str()));
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}
