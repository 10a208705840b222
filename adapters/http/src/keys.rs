//! API keys over the store's [`ApiKeyStore`]: only a SHA-256 of each token is kept; the
//! token itself is shown once, at creation.
//!
//! Invariants: a revoked key never authenticates again; a `sending_access` key authenticates
//! only the sending endpoints (and, when it names a domain, only senders at that domain).

use mailroom_core::email::AccountId;
use mailroom_core::error::StorageError;
use mailroom_core::ports::{ApiKeyRecord, ApiKeyStore, Clock, KeyPermission, SystemClock};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header: 401 `missing_api_key`.
    Missing,
    /// Unknown or revoked: 403 `invalid_api_key`.
    Invalid,
    /// The key store failed: 500.
    Store(StorageError),
}

/// The keys this server accepts, kept in the store.
#[derive(Debug, Clone)]
pub struct KeyRing {
    store: Arc<dyn ApiKeyStore>,
    clock: Arc<dyn Clock>,
}

pub(crate) fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl KeyRing {
    pub fn new(store: Arc<dyn ApiKeyStore>) -> KeyRing {
        KeyRing { store, clock: Arc::new(SystemClock) }
    }

    /// Creates a key with a fresh random token (`re_` and 24 random bytes in hex), returned
    /// once: only its hash is stored.
    pub async fn create(
        &self,
        account: &AccountId,
        name: &str,
        permission: KeyPermission,
    ) -> Result<(ApiKeyRecord, String), StorageError> {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let token = format!("re_{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let key = self.insert(account, &token, name, permission).await?;
        Ok((key, token))
    }

    /// Accepts a token the host chose (`serve --api-key re_…`). Idempotent: the same token
    /// again keeps the key it already names.
    pub async fn insert(
        &self,
        account: &AccountId,
        token: &str,
        name: &str,
        permission: KeyPermission,
    ) -> Result<ApiKeyRecord, StorageError> {
        let h = sha256(token);
        let key = ApiKeyRecord {
            id: uuid_like(&h),
            name: name.to_string(),
            token_sha256: h,
            permission,
            created_at: self.clock.now(),
            revoked_at: None,
        };
        self.store.key_insert(account, key).await?;
        Ok(self.store.key_by_hash(&h).await?.map(|(_, k)| k).unwrap_or_else(unreachable_stored))
    }

    pub async fn list(&self, account: &AccountId) -> Result<Vec<ApiKeyRecord>, StorageError> {
        self.store.key_list(account).await
    }

    /// Revokes `id`; `false` if the account has no such key.
    pub async fn revoke(&self, account: &AccountId, id: &str) -> Result<bool, StorageError> {
        self.store.key_revoke(account, id, self.clock.now()).await
    }

    /// The account and key an `Authorization` header value names.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<(AccountId, ApiKeyRecord), AuthError> {
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        match self.store.key_by_hash(&sha256(token)).await.map_err(AuthError::Store)? {
            Some((account, key)) if key.revoked_at.is_none() => Ok((account, key)),
            _ => Err(AuthError::Invalid),
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_stored() -> ApiKeyRecord {
    // key_insert either stored the key or found one with the same hash.
    panic!("an API key just stored is not in the store")
}

/// A stable id for a key, from its hash (uuid-shaped like the hosted service's ids), so that
/// the same token always names the same key and the id reveals nothing usable.
fn uuid_like(h: &[u8; 32]) -> String {
    let x: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_core::memory::MemoryStorage;

    #[tokio::test]
    async fn created_keys_authenticate_until_revoked_and_only_hashes_are_kept() {
        let store = Arc::new(MemoryStorage::new());
        let ring = KeyRing::new(store.clone());
        let acct = AccountId::default();
        let (key, token) = ring.create(&acct, "ci", KeyPermission::FullAccess).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(token.starts_with("re_") && token.len() == 51);
        let header = format!("Bearer {token}");
        assert_eq!(ring.authenticate(Some(&header)).await.map(|k| k.1.id), Ok(key.id.clone()));
        assert_eq!(ring.authenticate(None).await.err(), Some(AuthError::Missing));
        assert_eq!(ring.authenticate(Some("Bearer re_nope")).await.err(), Some(AuthError::Invalid));
        assert!(!format!("{store:?}").contains(&token[3..]), "the token itself is not stored");
        assert!(ring.revoke(&acct, &key.id).await.unwrap_or(false));
        assert_eq!(ring.authenticate(Some(&header)).await.err(), Some(AuthError::Invalid));
    }
}
