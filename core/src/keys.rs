//! API keys: their tokens, the rules for creating, revoking and checking them, and the keys a
//! server's configuration manages.
//!
//! Invariants:
//! - only a SHA-256 of a token is stored; the token is shown once, at creation;
//! - a key's id is random (it reveals nothing about the token, so a listed id cannot be used
//!   to test guesses offline);
//! - a revoked key never authenticates;
//! - a key named in the configuration ([`ManagedKey`]) is changed only there: the API cannot
//!   revoke it, starting with it configured makes it active again, and starting without it
//!   revokes it;
//! - a `sending_access` key limited to a domain sends only from that domain or its subdomains
//!   (checked by the engine on every send, see [`Engine::with_key`]).

use crate::address::Mailbox;
use crate::email::AccountId;
use crate::engine::Engine;
use crate::error::{Error, FieldError, Rule};
use crate::ports::{ApiKeyRecord, ApiKeyStore, KEY_USE_GRANULARITY, KeyPermission};
use crate::request::EmailRequest;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// Every generated token starts with this (as the hosted service's do).
pub const TOKEN_PREFIX: &str = "re_";

/// The longest key name.
pub const MAX_NAME: usize = 50;

/// The most active keys an account may create (as domains and webhooks are capped): every key
/// list, the dashboard's included, is read whole, so its length must have a bound. Revoked
/// keys do not count; keys the configuration manages are not created here.
pub const MAX_ACTIVE_KEYS: usize = 1000;

/// The most revoked keys an account keeps, for the record (the dashboard and the logs name
/// them): revoking one more removes the longest-revoked. Why a bound: revoked keys do not
/// count against [`MAX_ACTIVE_KEYS`], so a client looping create and revoke would grow the
/// key table, and every key list with it, for ever.
pub const MAX_REVOKED_KEPT: usize = 1000;

/// A fresh token: `re_` and 24 random bytes in hex (192 bits: not guessable, so an unsalted
/// hash of it is safe to keep).
pub fn generate_token() -> String {
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 48);
    token.push_str(TOKEN_PREFIX);
    for b in raw {
        token.push_str(&format!("{b:02x}"));
    }
    token
}

/// What the store keeps of a token.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A random, uuid-shaped key id.
fn new_key_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// The token in an `Authorization` header value (`Bearer re_…`, the scheme in any case).
/// `None`: there is none.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let v = authorization?.trim_start();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl KeyPermission {
    /// The wire's `permission` (`full_access`, the default, or `sending_access`) and `domain`
    /// (only with `sending_access`).
    pub fn parse(permission: Option<&str>, domain: Option<&str>) -> Result<KeyPermission, FieldError> {
        let domain = domain.map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase()).filter(|d| !d.is_empty());
        match permission.map(str::trim) {
            None | Some("full_access") => match domain {
                None => Ok(KeyPermission::FullAccess),
                Some(_) => Err(FieldError::new("domain", Rule::Exclusive("permission: full_access"))),
            },
            Some("sending_access") => {
                if let Some(d) = &domain {
                    crate::address::Mailbox::parse(&format!("x@{d}"))
                        .map_err(|_| FieldError::new("domain", Rule::Shape(format!("{d:?} is not a domain name"))))?;
                }
                Ok(KeyPermission::SendingAccess { domain })
            }
            Some(other) => Err(FieldError::new(
                "permission",
                Rule::Shape(format!("must be full_access or sending_access, not {}", crate::error::quoted(other))),
            )),
        }
    }

    /// Whether `sender` may send with this permission.
    pub fn allows_sender(&self, sender: &Mailbox) -> bool {
        match self {
            KeyPermission::SendingAccess { domain: Some(d) } => {
                sender.domain == *d || sender.domain.strip_suffix(d.as_str()).is_some_and(|p| p.ends_with('.'))
            }
            _ => true,
        }
    }
}

/// A key name: 1 to [`MAX_NAME`] characters, no control characters.
pub(crate) fn check_name(name: Option<&str>) -> Result<String, FieldError> {
    let name = name.map(str::trim).filter(|n| !n.is_empty()).ok_or_else(|| FieldError::new("name", Rule::Required))?;
    let n = name.chars().count();
    if n > MAX_NAME {
        return Err(FieldError::new("name", Rule::TooLong { max: MAX_NAME, got: n }));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(FieldError::new("name", Rule::ControlCharacter(c)));
    }
    Ok(name.to_string())
}

/// A key the server's configuration names (a file, an environment variable, a flag).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagedKey {
    /// The account it acts for.
    pub account: AccountId,
    /// The token itself (from the configuration; never stored).
    pub token: String,
    /// Its name in listings.
    pub name: String,
    /// What it may do.
    pub permission: KeyPermission,
}

impl ManagedKey {
    /// A full-access key of the default account.
    pub fn full_access(token: impl Into<String>, name: impl Into<String>) -> ManagedKey {
        ManagedKey {
            account: AccountId::default(),
            token: token.into(),
            name: name.into(),
            permission: KeyPermission::FullAccess,
        }
    }

    /// The same key for `account`, with `permission`.
    pub fn with(mut self, account: AccountId, permission: KeyPermission) -> ManagedKey {
        self.account = account;
        self.permission = permission;
        self
    }
}

/// A key just created, with its token (shown this once).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreatedKey {
    /// What is stored.
    pub record: ApiKeyRecord,
    /// The token: only its hash is kept.
    pub token: String,
}

/// The last use of each API key this process wrote (or is writing), so that requests of one
/// key arriving together write it once ([`Engine::note_key_use`]).
#[derive(Debug, Default)]
pub(crate) struct KeyUses(std::sync::Mutex<HashMap<String, DateTime<Utc>>>);

/// Past this many keys, those written longer than [`KEY_USE_GRANULARITY`] ago are forgotten:
/// the map holds the keys in use, not every key ever used.
const KEY_USES_HELD: usize = 4096;

impl KeyUses {
    /// Whether a use of key `id` at `now` should be written (none was within
    /// [`KEY_USE_GRANULARITY`]); if so it counts as written from now on.
    fn claim(&self, id: &str, now: DateTime<Utc>) -> bool {
        let mut uses = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if uses.get(id).is_some_and(|t| now - *t < KEY_USE_GRANULARITY) {
            return false;
        }
        if uses.len() >= KEY_USES_HELD {
            uses.retain(|_, t| now - *t < KEY_USE_GRANULARITY);
        }
        uses.insert(id.to_string(), now);
        true
    }
}

/// The key an engine acts for (see [`Engine::with_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyScope {
    pub(crate) id: String,
    pub(crate) permission: KeyPermission,
}

impl KeyScope {
    /// Refuses the requests whose sender this key may not use (a key limited to one domain).
    /// A request whose `from` does not parse is left to validation, which names it.
    pub(crate) fn check_senders(&self, requests: &[EmailRequest]) -> Result<(), Error> {
        let KeyPermission::SendingAccess { domain: Some(domain) } = &self.permission else { return Ok(()) };
        for r in requests {
            let Some(from) = r.from.as_deref().and_then(|f| Mailbox::parse(f).ok()) else { continue };
            if !self.permission.allows_sender(&from) {
                return Err(Error::Forbidden(format!(
                    "This API key can only send from {domain}, not from {}.",
                    from.domain
                )));
            }
        }
        Ok(())
    }
}

impl Engine {
    fn key_store(&self) -> Result<&dyn ApiKeyStore, Error> {
        self.storage().api_keys().ok_or_else(|| Error::Forbidden("This store keeps no API keys.".into()))
    }

    /// Creates a key for this engine's account with a fresh token, returned once (only its hash
    /// is stored). `name` is required (1 to 50 characters).
    pub async fn create_api_key(&self, name: Option<&str>, permission: KeyPermission) -> Result<CreatedKey, Error> {
        let name = check_name(name)?;
        let store = self.key_store()?;
        let _creating = self.creating().await?;
        let active = store.key_list(self.account()).await?.iter().filter(|k| k.revoked_at.is_none()).count();
        if active >= MAX_ACTIVE_KEYS {
            return Err(FieldError::new("api_keys", Rule::TooMany { max: MAX_ACTIVE_KEYS, got: active + 1 }).into());
        }
        let token = generate_token();
        let record = ApiKeyRecord::new(new_key_id(), name, token_sha256(&token), permission, self.clock().now());
        store.key_insert(self.account(), record.clone()).await?;
        Ok(CreatedKey { record, token })
    }

    /// A new key's permission as the wire gives it: `permission`, and the one domain a
    /// `sending_access` key may send from, by name (`domain`) or by the id of one of this
    /// account's domains (`domain_id`, what the official SDKs send). Why here: a `domain_id`
    /// the server did not read would leave the key free to send from any domain, the opposite
    /// of what its creator asked.
    pub async fn key_permission(
        &self,
        permission: Option<&str>,
        domain: Option<&str>,
        domain_id: Option<&str>,
    ) -> Result<KeyPermission, Error> {
        let Some(id) = domain_id else { return Ok(KeyPermission::parse(permission, domain)?) };
        if domain.is_some() {
            return Err(FieldError::new("domain_id", Rule::Exclusive("domain")).into());
        }
        let name = match self.domain(id).await {
            Ok(d) => d.name,
            Err(Error::NotFound { .. }) => {
                let why = format!("{} is the id of no domain of this account", crate::error::quoted(id));
                return Err(FieldError::new("domain_id", Rule::Shape(why)).into());
            }
            Err(e) => return Err(e),
        };
        // The rules are `parse`'s; a refusal names the field the request used.
        KeyPermission::parse(permission, Some(&name))
            .map_err(|e| if e.path == "domain" { FieldError { path: "domain_id".into(), ..e } } else { e }.into())
    }

    /// This account's key `id`, revoked or not; `None` when it has none.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, Error> {
        Ok(self.key_store()?.key_by_id(self.account(), id).await?)
    }

    /// This account's keys, oldest first, revoked ones included.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, Error> {
        Ok(self.key_store()?.key_list(self.account()).await?)
    }

    /// Revokes this account's key `id`. A key the configuration manages is refused (403): it
    /// is changed there.
    pub async fn revoke_api_key(&self, id: &str) -> Result<(), Error> {
        let store = self.key_store()?;
        let key = store.key_by_id(self.account(), id).await?.ok_or(Error::NotFound { what: "API key" })?;
        if key.managed {
            return Err(Error::Forbidden(
                "This API key is managed by the server's configuration; remove it there.".into(),
            ));
        }
        store.key_revoke(self.account(), id, self.clock().now()).await?;
        let mut revoked: Vec<ApiKeyRecord> =
            store.key_list(self.account()).await?.into_iter().filter(|k| k.revoked_at.is_some()).collect();
        if revoked.len() > MAX_REVOKED_KEPT {
            revoked.sort_by(|a, b| a.revoked_at.cmp(&b.revoked_at).then_with(|| a.id.cmp(&b.id)));
            for old in &revoked[..revoked.len() - MAX_REVOKED_KEPT] {
                // Racing revocations may both pick a key; the second finds it gone.
                store.key_remove_revoked(self.account(), &old.id).await?;
            }
        }
        Ok(())
    }

    /// Renames this account's active key `id` (1 to 50 characters). A key the configuration
    /// manages is refused (403): it is named there. A revoked or unknown key is `NotFound`.
    pub async fn rename_api_key(&self, id: &str, name: Option<&str>) -> Result<ApiKeyRecord, Error> {
        let name = check_name(name)?;
        let store = self.key_store()?;
        let key = store
            .key_by_id(self.account(), id)
            .await?
            .filter(|k| k.revoked_at.is_none())
            .ok_or(Error::NotFound { what: "API key" })?;
        if key.managed {
            return Err(Error::Forbidden(
                "This API key is managed by the server's configuration; rename it there.".into(),
            ));
        }
        if !store.key_rename(self.account(), id, &name).await? {
            return Err(Error::NotFound { what: "API key" });
        }
        Ok(ApiKeyRecord { name, ..key })
    }

    /// Records that `account`'s `key` authenticated a request now, as its `last_used_at`: when
    /// the use it has recorded is older than [`KEY_USE_GRANULARITY`] and this process has not
    /// written a later one meanwhile. So a key costs one write a minute per process, however
    /// many requests it makes; concurrent requests of one key write once. Whether it wrote.
    /// ([`key_use_due`](Self::key_use_due), then [`record_key_use`](Self::record_key_use).)
    pub async fn note_key_use(&self, account: &AccountId, key: &ApiKeyRecord) -> Result<bool, Error> {
        match self.key_use_due(key) {
            Some(at) => self.record_key_use(account, &key.id, at).await,
            None => Ok(false),
        }
    }

    /// The time to record as `key`'s last use, if a use now is to be written (see
    /// [`note_key_use`](Self::note_key_use)); this process then counts it as written. Not
    /// async, so that a server can decide on the request's path and write in the background.
    pub fn key_use_due(&self, key: &ApiKeyRecord) -> Option<DateTime<Utc>> {
        let now = self.clock().now();
        (key.use_due(now) && self.key_uses().claim(&key.id, now)).then_some(now)
    }

    /// Writes `at` as the last use of `account`'s key `id` (a later use recorded stays);
    /// whether it changed.
    pub async fn record_key_use(&self, account: &AccountId, id: &str, at: DateTime<Utc>) -> Result<bool, Error> {
        Ok(self.key_store()?.key_touch(account, id, at).await?)
    }

    /// The account and key a token names, if it names an active one.
    pub async fn authenticate(&self, token: &str) -> Result<Option<(AccountId, ApiKeyRecord)>, Error> {
        let found = self.key_store()?.key_by_hash(&token_sha256(token)).await?;
        Ok(found.filter(|(_, k)| k.revoked_at.is_none()))
    }

    /// Brings the store's keys in line with the configuration's: each configured key is stored
    /// (or updated: name, permission) and active; a managed key no longer configured is revoked.
    /// Keys created through the API are untouched. Returns the configured keys as stored.
    pub async fn sync_managed_keys(&self, keys: &[ManagedKey]) -> Result<Vec<ApiKeyRecord>, Error> {
        let store = self.key_store()?;
        let now = self.clock().now();
        let existing = store.key_all().await?;
        let mut stored = Vec::with_capacity(keys.len());
        let mut configured = HashSet::new();
        for k in keys {
            let hash = token_sha256(&k.token);
            configured.insert(hash);
            let mut record = match existing.iter().find(|(_, r)| r.token_sha256 == hash) {
                Some((account, r)) if *account == k.account => r.clone(),
                // A token moved to another account is a new key there.
                _ => ApiKeyRecord::new(new_key_id(), "", hash, k.permission.clone(), now),
            };
            record.name = k.name.clone();
            record.permission = k.permission.clone();
            record.revoked_at = None;
            record.managed = true;
            store.key_put(&k.account, record.clone()).await?;
            stored.push(record);
        }
        for (account, r) in existing {
            if r.managed && r.revoked_at.is_none() && !configured.contains(&r.token_sha256) {
                store.key_revoke(&account, &r.id, now).await?;
            }
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::memory::MemoryStorage;
    use std::sync::Arc;

    fn engine() -> Engine {
        Engine::builder(Arc::new(MemoryStorage::new())).build()
    }

    /// A use is written when none is recorded within a minute, once for requests arriving
    /// together, never for a revoked key; the list shows it.
    #[tokio::test]
    async fn a_key_records_its_last_use_once_a_minute() {
        let clock = crate::ports::ManualClock::new(crate::testkit::t0());
        let e = Engine::builder(Arc::new(MemoryStorage::new())).clock(Arc::new(clock.clone())).build();
        let created = e.create_api_key(Some("ops"), KeyPermission::FullAccess).await.unwrap();
        let last_use = |e: Engine| async move { e.list_api_keys().await.unwrap()[0].last_used_at };
        assert_eq!(last_use(e.clone()).await, None, "never used");
        let (account, key) = e.authenticate(&created.token).await.unwrap().unwrap();
        assert!(e.note_key_use(&account, &key).await.unwrap());
        assert_eq!(last_use(e.clone()).await, Some(crate::testkit::t0()));
        // The same record again (requests that authenticated together): written once.
        assert!(!e.note_key_use(&account, &key).await.unwrap());
        // Within the minute: not written, whatever the record says.
        clock.advance(chrono::Duration::seconds(59));
        let (_, key) = e.authenticate(&created.token).await.unwrap().unwrap();
        assert!(!e.note_key_use(&account, &key).await.unwrap());
        assert_eq!(last_use(e.clone()).await, Some(crate::testkit::t0()));
        clock.advance(chrono::Duration::seconds(1));
        let (_, key) = e.authenticate(&created.token).await.unwrap().unwrap();
        assert!(e.note_key_use(&account, &key).await.unwrap());
        assert_eq!(last_use(e.clone()).await, Some(crate::testkit::t0() + chrono::Duration::minutes(1)));
        // Another process (an engine of its own over the same store) writes its own use.
        let other = Engine::builder(Arc::clone(e.storage())).clock(Arc::new(clock.clone())).build();
        clock.advance(chrono::Duration::minutes(2));
        let (_, key) = other.authenticate(&created.token).await.unwrap().unwrap();
        assert!(other.note_key_use(&account, &key).await.unwrap());
        // A revoked key records no use.
        clock.advance(chrono::Duration::minutes(2));
        e.revoke_api_key(&key.id).await.unwrap();
        let revoked = e.api_key(&key.id).await.unwrap().unwrap();
        assert!(!e.note_key_use(&account, &revoked).await.unwrap());
        assert_eq!(revoked.last_used_at, Some(crate::testkit::t0() + chrono::Duration::minutes(3)));
    }

    #[test]
    fn uses_held_are_bounded() {
        let uses = KeyUses::default();
        let t = crate::testkit::t0();
        for i in 0..KEY_USES_HELD {
            assert!(uses.claim(&format!("k{i}"), t));
        }
        // Full: the ones written over a minute ago are forgotten to make room.
        assert!(uses.claim("new", t + KEY_USE_GRANULARITY));
        assert_eq!(uses.0.lock().unwrap().len(), 1);
        assert!(!uses.claim("new", t + KEY_USE_GRANULARITY));
    }

    #[tokio::test]
    async fn created_keys_authenticate_until_revoked_and_ids_are_random() {
        let e = engine();
        let k = e.create_api_key(Some("ci"), KeyPermission::FullAccess).await.unwrap();
        assert!(k.token.starts_with("re_") && k.token.len() == 51);
        let hash_hex: String = token_sha256(&k.token).iter().map(|b| format!("{b:02x}")).collect();
        assert!(!hash_hex.starts_with(&k.record.id.replace('-', "")), "the id is not derived from the token");
        assert_eq!(e.authenticate(&k.token).await.unwrap().map(|(_, r)| r.id), Some(k.record.id.clone()));
        assert_eq!(e.authenticate("re_nope").await.unwrap(), None);
        e.revoke_api_key(&k.record.id).await.unwrap();
        assert_eq!(e.authenticate(&k.token).await.unwrap(), None);
        assert_eq!(e.revoke_api_key("nope").await, Err(Error::NotFound { what: "API key" }));
        assert!(matches!(
            e.create_api_key(Some(&"x".repeat(51)), KeyPermission::FullAccess).await,
            Err(Error::Invalid(_))
        ));
        assert!(matches!(e.create_api_key(None, KeyPermission::FullAccess).await, Err(Error::Invalid(_))));
    }

    #[tokio::test]
    async fn active_keys_are_capped_and_a_revoked_one_makes_room() {
        let e = engine();
        let mut last = None;
        for i in 0..MAX_ACTIVE_KEYS {
            last = Some(e.create_api_key(Some(&format!("k{i}")), KeyPermission::FullAccess).await.unwrap());
        }
        let err = e.create_api_key(Some("one more"), KeyPermission::FullAccess).await.unwrap_err();
        assert_eq!(err.to_string(), "Invalid `api_keys` field: at most 1000 allowed, got 1001.", "{err:?}");
        e.revoke_api_key(&last.unwrap().record.id).await.unwrap();
        assert!(e.create_api_key(Some("one more"), KeyPermission::FullAccess).await.is_ok());
    }

    /// Past the number of revoked keys an account keeps, revoking one more removes the
    /// longest-revoked: gone from the list, by id and by token, which still authenticates
    /// nothing. Active keys are never removed.
    #[tokio::test]
    async fn revoked_keys_kept_are_bounded_and_the_oldest_go() {
        let e = engine();
        let mut made = Vec::new();
        for i in 0..MAX_REVOKED_KEPT + 3 {
            let k = e.create_api_key(Some(&format!("k{i}")), KeyPermission::FullAccess).await.unwrap();
            e.revoke_api_key(&k.record.id).await.unwrap();
            made.push(k);
        }
        let active = e.create_api_key(Some("active"), KeyPermission::FullAccess).await.unwrap();
        let listed = e.list_api_keys().await.unwrap();
        assert_eq!(listed.len(), MAX_REVOKED_KEPT + 1);
        assert_eq!(listed.iter().filter(|k| k.revoked_at.is_none()).count(), 1);
        for (i, k) in made.iter().enumerate() {
            let kept = e.api_key(&k.record.id).await.unwrap();
            assert_eq!(kept.is_some(), i >= 3, "key {i}");
            assert_eq!(e.authenticate(&k.token).await.unwrap(), None, "key {i}");
        }
        assert!(e.authenticate(&active.token).await.unwrap().is_some());
        let err = e.revoke_api_key(&made[0].record.id).await.unwrap_err();
        assert_eq!(err, Error::NotFound { what: "API key" });
    }

    #[tokio::test]
    async fn managed_keys_cannot_be_revoked_by_the_api_and_come_back_on_restart() {
        let e = engine();
        let managed = ManagedKey::full_access("re_operator", "operator");
        let stored = e.sync_managed_keys(std::slice::from_ref(&managed)).await.unwrap();
        let id = stored[0].id.clone();
        let err = e.revoke_api_key(&id).await.unwrap_err();
        assert_eq!((err.status(), err.name().as_str()), (403, "validation_error"));
        // Revoked behind the API's back (an older version allowed it): a restart restores it,
        // under the same id.
        e.storage().api_keys().unwrap().key_revoke(e.account(), &id, e.clock().now()).await.unwrap();
        assert_eq!(e.authenticate("re_operator").await.unwrap(), None);
        let again = e.sync_managed_keys(std::slice::from_ref(&managed)).await.unwrap();
        assert_eq!(again[0].id, id);
        assert!(e.authenticate("re_operator").await.unwrap().is_some());
        // Dropped from the configuration: revoked; API-created keys are left alone.
        let own = e.create_api_key(Some("own"), KeyPermission::FullAccess).await.unwrap();
        e.sync_managed_keys(&[]).await.unwrap();
        assert_eq!(e.authenticate("re_operator").await.unwrap(), None);
        assert!(e.authenticate(&own.token).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_rename_changes_the_name_of_an_active_key_the_api_owns() {
        let e = engine();
        let own = e.create_api_key(Some("own"), KeyPermission::FullAccess).await.unwrap();
        let renamed = e.rename_api_key(&own.record.id, Some("  billing  ")).await.unwrap();
        assert_eq!(renamed.name, "billing");
        let (_, found) = e.authenticate(&own.token).await.unwrap().unwrap();
        assert_eq!(found, ApiKeyRecord { name: "billing".into(), ..own.record.clone() });
        let err = e.rename_api_key(&own.record.id, Some(&"x".repeat(51))).await.unwrap_err();
        assert_eq!(err.status(), 422);
        let err = e.rename_api_key(&own.record.id, None).await.unwrap_err();
        assert_eq!(err.status(), 422);
        // The configuration names its keys: renaming one through the API is refused.
        let stored = e.sync_managed_keys(&[ManagedKey::full_access("re_operator", "operator")]).await.unwrap();
        let err = e.rename_api_key(&stored[0].id, Some("mine")).await.unwrap_err();
        assert_eq!(err.status(), 403);
        // Revoked, unknown, or another account's: not found.
        e.revoke_api_key(&own.record.id).await.unwrap();
        for (engine, id) in
            [(&e, own.record.id.as_str()), (&e, "nope"), (&e.with_account("other"), stored[0].id.as_str())]
        {
            assert!(matches!(engine.rename_api_key(id, Some("x")).await, Err(Error::NotFound { .. })), "{id}");
        }
    }

    #[test]
    fn permissions_parse_and_limit_senders() {
        let p = KeyPermission::parse(Some("sending_access"), Some("Acme.Test.")).unwrap();
        assert_eq!(p, KeyPermission::SendingAccess { domain: Some("acme.test".into()) });
        let m = |a: &str| Mailbox::parse(a).unwrap();
        assert!(p.allows_sender(&m("a@acme.test")) && p.allows_sender(&m("a@mail.acme.test")));
        assert!(!p.allows_sender(&m("a@evilacme.test")) && !p.allows_sender(&m("a@bank.test")));
        assert_eq!(KeyPermission::parse(None, None).unwrap(), KeyPermission::FullAccess);
        assert_eq!(KeyPermission::parse(Some("root"), None).unwrap_err().path, "permission");
        assert_eq!(KeyPermission::parse(Some("sending_access"), Some("not a domain")).unwrap_err().path, "domain");
        assert_eq!(KeyPermission::parse(None, Some("acme.test")).unwrap_err().path, "domain");
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(Some("Bearer re_x")), Some("re_x"));
        assert_eq!(bearer_token(Some("bearer   re_x ")), Some("re_x"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }
}
