//! # mailroom
//!
//! An embeddable transactional email engine: what a hosted email API does behind its HTTP
//! surface (send, batch, idempotency, scheduling, delivery, bounces, suppressions), as crates a
//! host application links in.
//!
//! This facade only re-exports. The engine and its rules live in [`core`] (`mailroom-core`);
//! each adapter implements one port with a real dependency and sits behind a cargo feature:
//!
//! | feature | module | what |
//! | --- | --- | --- |
//! | `redb` (default) | [`redb`] | the embedded, durable [`Storage`](core::Storage) on a redb file |
//! | `smtp` (default) | [`smtp`] | the SMTP [`Transport`](core::Transport): relay or direct to MX |
//! | `dns` (default) | [`dns`] | the [`DnsResolver`](core::DnsResolver) on hickory-resolver |
//! | `http` (default) | [`http`] | the REST API (the hosted service's wire format) as an axum `Router`, and a hardened server for it |
//! | `fetch` (default) | [`fetch`] | the [`AttachmentLoader`](core::AttachmentLoader) for `path` attachments: URLs under an address policy, one confined directory |
//! | `postgres` (default) | [`postgres`] | a [`Storage`](core::Storage) on PostgreSQL that several processes share |
//! | `cli` (default) | — | the `mailroom` binary (command line, `serve`, configuration) |
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mailroom::prelude::*;
//!
//! let store = mailroom::redb::RedbStorage::open("mailroom.redb")?;
//! let engine = Engine::builder(std::sync::Arc::new(store)).build();
//! let request: EmailRequest = serde_json::from_str(r#"{
//!     "from": "Acme <onboarding@acme.test>",
//!     "to": "delivered@resend.dev",
//!     "subject": "Hello",
//!     "html": "<p>It works</p>"
//! }"#)?;
//! let sent = engine.send(request, SendOptions::default()).await?;
//! println!("queued {}", sent.id);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![doc(html_no_source)]

pub use mailroom_core as core;
pub use mailroom_core::prelude;

#[cfg(feature = "redb")]
pub use mailroom_redb as redb;

#[cfg(feature = "smtp")]
pub use mailroom_smtp as smtp;

#[cfg(feature = "dns")]
pub use mailroom_dns as dns;

#[cfg(feature = "http")]
pub use mailroom_http as http;

#[cfg(feature = "fetch")]
pub use mailroom_fetch as fetch;

#[cfg(feature = "postgres")]
pub use mailroom_postgres as postgres;

/// The inbound SMTP listener (receiving domains and the bounce loop).
#[cfg(feature = "inbound")]
pub use mailroom_inbound as inbound;

/// The README's examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
