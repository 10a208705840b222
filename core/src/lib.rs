//! # mailroom-core
//!
//! The domain model, every rule, the engine and its worker, and the ports through which it
//! reaches the world. Pure: no sockets, no files, no DNS. See `ARCHITECTURE.md` at the
//! repository root for the map and the invariants each module keeps.
#![warn(missing_docs)]

pub mod address;
pub mod bounce;
pub mod clients;
#[cfg(feature = "zstd")]
pub mod compression;
pub mod domains;
pub mod email;
pub mod email_metrics;
pub mod engine;
pub mod error;
pub mod events;
pub mod html;
pub mod idempotency;
pub mod inbound;
pub mod insights;
pub mod json_entries;
pub mod keys;
pub mod lifecycle;
pub mod memory;
pub mod mx;
pub mod ports;
pub mod receiving;
pub mod render;
pub mod request;
pub mod retry;
pub mod sandbox;
pub mod schedule;
pub mod share;
pub mod store;
pub mod suppressions;
pub mod tracking;
pub mod usage;
pub mod validate;
pub mod webhooks;
pub mod worker;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use engine::{BatchMode, BatchOptions, BatchResponse, EmailRef, Engine, EngineBuilder, SendOptions, SendResponse};
pub use error::{Error, ErrorBody, ErrorName, FieldError, Rule, StorageError};
pub use ports::{AttachmentLoader, Clock, DnsResolver, Storage, SystemClock, Transport};

/// What a host usually needs, in one import.
pub mod prelude {
    pub use crate::address::Mailbox;
    pub use crate::email::{AccountId, EmailId, EmailView, PageRequest};
    pub use crate::engine::{BatchMode, BatchOptions, BatchResponse, Engine, SendOptions, SendResponse};
    pub use crate::error::{Error, ErrorBody};
    pub use crate::lifecycle::EventKind;
    pub use crate::memory::MemoryStorage;
    pub use crate::ports::{Clock, Storage, SystemClock, Transport};
    pub use crate::request::{EmailRequest, OneOrMany};
    pub use crate::sandbox::SandboxTransport;
    pub use crate::worker::{Worker, WorkerConfig};
}

#[cfg(test)]
mod storage_failure_tests;
