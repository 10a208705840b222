//! Following the event log from a library host: every event once, in order, across restarts.
//!
//! ```text
//! cargo run --example events -- DB CURSOR_FILE [EMAILS]
//! ```
//!
//! Opens (or creates) the redb file DB, sends EMAILS (default 3) to the test addresses, lets
//! the worker deliver them through the sandbox, and follows the log with `Engine::subscribe`
//! from the number saved in CURSOR_FILE (0 when there is none), printing each entry as a JSON
//! line and saving its number after handling it. It stops when the log has been quiet for half
//! a second. Run it again on the same files: it prints only what came after.

use futures::StreamExt;
use mailroom::prelude::*;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(db), Some(cursor_file)) = (args.get(1), args.get(2)) else {
        return Err("usage: events DB CURSOR_FILE [EMAILS]".into());
    };
    let emails: usize = args.get(3).map(|n| n.parse()).transpose()?.unwrap_or(3);
    let engine = Engine::builder(Arc::new(mailroom::redb::RedbStorage::open(db)?)).build();

    let to = ["delivered@resend.dev", "bounced@resend.dev", "complained@resend.dev"];
    for i in 0..emails {
        let email: EmailRequest = serde_json::from_value(serde_json::json!({
            "from": "Acme <hello@acme.test>",
            "to": to[i % to.len()],
            "subject": format!("Hello {i}"),
            "text": "Hello",
        }))?;
        engine.send(email, SendOptions::default()).await?;
    }
    engine.worker(Arc::new(SandboxTransport::default()), WorkerConfig::default()).run_until_idle().await?;

    // Where the last run stopped: the number of the last entry it handled.
    let from: u64 = std::fs::read_to_string(cursor_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let mut log = Box::pin(engine.subscribe(from));
    loop {
        let next = match tokio::time::timeout(Duration::from_millis(500), log.next()).await {
            Ok(Some(entry)) => entry?,
            Ok(None) | Err(_) => break, // quiet: done for this run
        };
        let mut line = serde_json::json!({"seq": next.seq, "type": next.type_name(), "at": next.at.to_rfc3339()});
        if let Some(id) = next.email_id() {
            line["email_id"] = serde_json::json!(id.to_string());
        }
        println!("{line}");
        // Handled: remember it (a crash before this line shows the entry again next time).
        std::fs::write(cursor_file, next.seq.to_string())?;
    }
    Ok(())
}
