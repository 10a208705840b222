//! Idempotency keys: validation, payload fingerprints, and the stored records.
//!
//! Invariants: a key is 1 to 256 characters; a record is either in flight (with a short
//! lease) or done (with the exact response); a done record and the emails it names are
//! written in one storage transaction; records live 24 hours.

use crate::email::EmailId;
use crate::error::Error;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a completed key is kept.
pub const RETENTION: chrono::Duration = chrono::Duration::hours(24);

/// How long an in-flight marker holds the key. Long enough for any request to finish
/// (loading `path` attachments included), short enough that a request whose process died
/// does not block its retry for long.
pub const IN_FLIGHT_LEASE: chrono::Duration = chrono::Duration::minutes(2);

/// Checks the key's length (in characters, as the hosted service counts).
pub fn validate_key(key: &str) -> Result<(), Error> {
    let n = key.chars().count();
    if (1..=256).contains(&n) { Ok(()) } else { Err(Error::InvalidIdempotencyKey) }
}

/// SHA-256 of the canonical payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprints `payload` as the endpoint sees it. The canonical form is the parsed
    /// payload re-serialised (structs in field order, maps by sorted key: serde_json's map is
    /// ordered by key), so key order, white space and `null`-versus-absent do not make two
    /// equal requests differ; `endpoint` keeps a single send and a one-item batch with the
    /// same key apart. It is streamed into the hash: a 40 MB attachment is not copied for it.
    pub fn of<T: Serialize>(endpoint: &str, payload: &T) -> Fingerprint {
        struct Hashing(Sha256);
        impl std::io::Write for Hashing {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = Hashing(Sha256::new());
        h.0.update(endpoint.as_bytes());
        h.0.update([0]);
        // Serializing plain data into a sink that never fails cannot fail.
        let _ = serde_json::to_writer(&mut h, payload);
        Fingerprint(h.0.finalize().into())
    }
}

/// One permissive-batch error, as the wire reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItemError {
    /// The item's position in the batch.
    pub index: usize,
    /// Every problem of the item, in words.
    pub message: String,
}

/// The first answer to a keyed request, replayed verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// The ids the first request returned.
    pub ids: Vec<EmailId>,
    /// The permissive batch errors it returned.
    #[serde(default)]
    pub errors: Vec<BatchItemError>,
}

/// A stored idempotency record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The payload the key was first used with.
    pub fingerprint: Fingerprint,
    /// When the key was first used.
    pub created_at: DateTime<Utc>,
    /// When the record lapses (24 h after completion; the in-flight lease before).
    pub expires_at: DateTime<Utc>,
    /// `None` while the first request is in flight.
    pub response: Option<StoredResponse>,
}

impl IdempotencyRecord {
    /// What a new request with `fingerprint` at `now` meets, given this record. `None`: the
    /// record has lapsed and may be replaced.
    pub fn meet(&self, fingerprint: &Fingerprint, now: DateTime<Utc>) -> Option<crate::ports::IdempotencyBegin> {
        use crate::ports::IdempotencyBegin as B;
        if self.expires_at <= now {
            return None;
        }
        Some(match (&self.response, self.fingerprint == *fingerprint) {
            (_, false) => B::Mismatch,
            (None, true) => B::InFlight,
            (Some(r), true) => B::Replay(r.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_length_bounds() {
        assert!(validate_key("").is_err());
        assert!(validate_key("k").is_ok());
        assert!(validate_key(&"é".repeat(256)).is_ok());
        assert!(validate_key(&"k".repeat(257)).is_err());
    }

    #[test]
    fn fingerprint_ignores_key_order_but_not_values() {
        let a: serde_json::Value = serde_json::json!({"a": 1, "b": [1, 2]});
        let b: serde_json::Value = serde_json::from_str(r#"{ "b": [1,2], "a": 1 }"#).unwrap_or_default();
        let c: serde_json::Value = serde_json::json!({"a": 1, "b": [2, 1]});
        assert_eq!(Fingerprint::of("email", &a), Fingerprint::of("email", &b));
        assert_ne!(Fingerprint::of("email", &a), Fingerprint::of("email", &c));
        assert_ne!(Fingerprint::of("email", &a), Fingerprint::of("batch", &a));
    }

    #[test]
    fn requests_differing_only_in_header_order_and_layout_are_the_same() {
        use crate::request::EmailRequest;
        let a = EmailRequest::from_json(br#"{"to":"a@x.test","headers":{"X-A":"1","X-B":"2"},"subject":null}"#);
        let b = EmailRequest::from_json(b"{\"headers\": {\"X-B\": \"2\", \"X-A\": \"1\"},\n \"to\": \"a@x.test\"}");
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        assert_eq!(Fingerprint::of("email", &a), Fingerprint::of("email", &b));
    }
}
