//! API keys: only a SHA-256 of each token is kept; the token itself is shown once, at creation.
//!
//! Invariants: a revoked key never authenticates again; a `sending_access` key authenticates
//! only the sending endpoints (and only for its domain, when it names one).

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "permission")]
pub enum Permission {
    FullAccess,
    /// `POST /emails` and `/emails/batch` only, optionally only from one sending domain.
    SendingAccess {
        domain: Option<String>,
    },
}

/// A key as listed (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub permission: Permission,
    pub revoked: bool,
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header: 401 `missing_api_key`.
    Missing,
    /// Unknown or revoked: 403 `invalid_api_key`.
    Invalid,
}

/// The keys this server accepts.
#[derive(Debug, Default)]
pub struct KeyRing {
    by_hash: RwLock<HashMap<[u8; 32], ApiKey>>,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl KeyRing {
    pub fn new() -> KeyRing {
        KeyRing::default()
    }

    /// Creates a key with a fresh random token (`re_` and 32 hex bytes), returned once.
    pub fn create(&self, name: &str, permission: Permission) -> (ApiKey, String) {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let token = format!("re_{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let key = self.insert(&token, name, permission);
        (key, token)
    }

    /// Accepts a token the host chose (a server started with `--api-key re_…`). Idempotent.
    pub fn insert(&self, token: &str, name: &str, permission: Permission) -> ApiKey {
        let h = hash(token);
        let mut map = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        map.entry(h)
            .or_insert_with(|| ApiKey {
                // The id names the key without revealing it: a prefix of its hash.
                id: h[..8].iter().map(|b| format!("{b:02x}")).collect(),
                name: name.to_string(),
                permission,
                revoked: false,
            })
            .clone()
    }

    pub fn list(&self) -> Vec<ApiKey> {
        let map = self.by_hash.read().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<ApiKey> = map.values().cloned().collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        keys
    }

    /// Revokes the key with `id`; `false` if there is none.
    pub fn revoke(&self, id: &str) -> bool {
        let mut map = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        match map.values_mut().find(|k| k.id == id) {
            Some(k) => {
                k.revoked = true;
                true
            }
            None => false,
        }
    }

    /// The key an `Authorization` header value names.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<ApiKey, AuthError> {
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let map = self.by_hash.read().unwrap_or_else(|p| p.into_inner());
        match map.get(&hash(token)) {
            Some(k) if !k.revoked => Ok(k.clone()),
            _ => Err(AuthError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_authenticate_until_revoked_and_only_hashes_are_kept() {
        let ring = KeyRing::new();
        let (key, token) = ring.create("ci", Permission::FullAccess);
        assert!(token.starts_with("re_") && token.len() == 51);
        let header = format!("Bearer {token}");
        assert_eq!(ring.authenticate(Some(&header)).map(|k| k.id), Ok(key.id.clone()));
        assert_eq!(ring.authenticate(None), Err(AuthError::Missing));
        assert_eq!(ring.authenticate(Some("Bearer re_nope")), Err(AuthError::Invalid));
        assert!(!format!("{:?}", ring).contains(&token[3..]), "the token itself is not stored");
        assert!(ring.revoke(&key.id));
        assert_eq!(ring.authenticate(Some(&header)), Err(AuthError::Invalid));
        assert!(ring.list()[0].revoked);
    }
}
