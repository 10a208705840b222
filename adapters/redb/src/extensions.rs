//! The extensions a store may offer beside `Storage`: API keys, request logs (domains:
//! `domains.rs`; the event log and webhooks: `events.rs`). Each write goes through the group committer like every other.

use crate::codec::{decode, decode_key, encode, encode_key};
use crate::{API_KEYS, LOG_TIMES, LOGS, RedbStorage, backend, optional_table};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailroom_core::email::AccountId;
use mailroom_core::ports::{
    ApiKeyRecord, ApiKeyStore, KeyChange, LogFilter, RequestLog, RequestLogStore, StorageResult,
};
use redb::{ReadableTable, ReadableTableMetadata};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The API keys as last committed, by token hash: every authenticated request looks its key
/// up, and a read transaction opened after each commit reads again the pages that commit
/// rewrote (the table tree's among them), which cost more than the rest of the lookup.
///
/// Why this is exact: every change to the key table is a write of this store (redb holds its
/// file for one process). Each write records the row it leaves (its whole value, not a
/// difference) inside the writer, and the writer's `settle` — after the group's commit,
/// before any of its writes is answered, and whether or not the caller still waits — applies
/// a committed group's rows to the map and starts a new generation, or forgets an aborted
/// group's. A lookup that loaded the table installs its map only if no generation began
/// meanwhile; a map installed between a commit and its settling already holds the commit's
/// rows, and setting them again changes nothing.
///
/// Why rows and not "drop the map": a change then costs one insertion, not a reload of every
/// key at the next request (creating N keys one after another would read the table N times).
///
/// Bounded: a table of more than [`MAX_CACHED_KEYS`] keys is not held (clients with a
/// full-access key create keys; memory must not grow with them). Past it, each lookup reads
/// its one key in a read transaction, as without the cache. A table past the bound is taken
/// to stay past it (only revoked keys past an account's kept number are ever removed).
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    generation: u64,
    /// The rows the group being written leaves, in the order written (`None`: removed).
    pending: Vec<([u8; 32], Option<KeyRow>)>,
    map: Option<KeysByHash>,
    /// The table holds more keys than are cached.
    too_many: bool,
    /// How many times the table was read whole (tests).
    loads: u64,
}

/// The most API keys [`KeyCache`] holds in memory (a few MB).
const MAX_CACHED_KEYS: usize = 10_000;

/// A key with its account.
type KeyRow = (AccountId, ApiKeyRecord);

/// Every key, by the SHA-256 of its token.
type KeysByHash = HashMap<[u8; 32], KeyRow>;

impl KeyCache {
    /// After a group: a committed group's rows enter the map; an aborted group's never were.
    pub(crate) fn settle(&mut self, committed: bool) {
        let rows = std::mem::take(&mut self.pending);
        if !committed || rows.is_empty() {
            return;
        }
        self.generation += 1;
        if let Some(map) = self.map.as_mut() {
            for (hash, row) in rows {
                match row {
                    Some(row) => map.insert(hash, row),
                    None => map.remove(&hash),
                };
            }
            if map.len() > MAX_CACHED_KEYS {
                self.map = None;
                self.too_many = true;
            }
        }
    }
}

pub(crate) type SharedKeyCache = Arc<Mutex<KeyCache>>;

fn cache(c: &SharedKeyCache) -> std::sync::MutexGuard<'_, KeyCache> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// A row of the key table, decoded.
fn key_row(value: &[u8]) -> StorageResult<(AccountId, ApiKeyRecord)> {
    decode_key(value).map(|(a, k)| (AccountId::new(&a), k))
}

/// Records, inside the writer, the row a write of the key table leaves.
fn wrote(c: &SharedKeyCache, account: &str, key: &ApiKeyRecord) {
    cache(c).pending.push((key.token_sha256, Some((AccountId::new(account), key.clone()))));
}

#[async_trait]
impl ApiKeyStore for RedbStorage {
    async fn key_insert(&self, account: &AccountId, key: ApiKeyRecord) -> StorageResult<()> {
        let value = encode_key(&account.0, &key)?;
        let keys = Arc::clone(&self.api_keys);
        let account = account.0.to_string();
        self.write(move |tx| {
            let mut t = tx.open_table(API_KEYS).map_err(backend)?;
            if t.get(key.token_sha256.as_slice()).map_err(backend)?.is_none() {
                t.insert(key.token_sha256.as_slice(), value.as_slice()).map_err(backend)?;
                wrote(&keys, &account, &key);
            }
            Ok(())
        })
        .await
    }

    async fn key_put(&self, account: &AccountId, key: ApiKeyRecord) -> StorageResult<()> {
        let value = encode_key(&account.0, &key)?;
        let keys = Arc::clone(&self.api_keys);
        let account = account.0.to_string();
        self.write(move |tx| {
            let mut t = tx.open_table(API_KEYS).map_err(backend)?;
            t.insert(key.token_sha256.as_slice(), value.as_slice()).map_err(backend)?;
            wrote(&keys, &account, &key);
            Ok(())
        })
        .await
    }

    async fn key_all(&self) -> StorageResult<Vec<(AccountId, ApiKeyRecord)>> {
        self.read_now(move |tx| match optional_table(tx, API_KEYS)? {
            Some(t) => t.iter().map_err(backend)?.map(|item| key_row(item.map_err(backend)?.1.value())).collect(),
            None => Ok(vec![]),
        })
    }

    async fn key_by_hash(&self, sha256: &[u8; 32]) -> StorageResult<Option<(AccountId, ApiKeyRecord)>> {
        let (generation, too_many) = {
            let c = cache(&self.api_keys);
            if let Some(map) = &c.map {
                return Ok(map.get(sha256).cloned());
            }
            (c.generation, c.too_many)
        };
        let h = *sha256;
        // The whole table when it fits the bound (`None`: it does not), and the key asked for.
        let (map, found) = self.read_now(move |tx| {
            let Some(t) = optional_table(tx, API_KEYS)? else { return Ok((Some(KeysByHash::new()), None)) };
            if too_many || t.len().map_err(backend)? > MAX_CACHED_KEYS as u64 {
                let one = t.get(h.as_slice()).map_err(backend)?.map(|v| key_row(v.value())).transpose()?;
                return Ok((None, one));
            }
            let mut map = KeysByHash::new();
            for item in t.iter().map_err(backend)? {
                let (account, key) = key_row(item.map_err(backend)?.1.value())?;
                map.insert(key.token_sha256, (account, key));
            }
            let found = map.get(&h).cloned();
            Ok((Some(map), found))
        })?;
        let mut c = cache(&self.api_keys);
        match map {
            Some(map) => {
                c.loads += 1;
                if c.generation == generation && c.map.is_none() {
                    c.map = Some(map);
                }
            }
            None => c.too_many = true,
        }
        Ok(found)
    }

    async fn key_list(&self, account: &AccountId) -> StorageResult<Vec<ApiKeyRecord>> {
        // From the keys held in memory when they are (the dashboard checks its session by
        // the account's keys on every page): otherwise every row of the table is read and
        // decoded, every account's.
        let cached =
            self.cached_keys(|keys| keys.values().filter(|(a, _)| a == account).map(|(_, k)| k.clone()).collect());
        let mut out: Vec<ApiKeyRecord> = match cached {
            Some(keys) => keys,
            None => self.key_all().await?.into_iter().filter(|(a, _)| a == account).map(|(_, k)| k).collect(),
        };
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn key_by_id(&self, account: &AccountId, id: &str) -> StorageResult<Option<ApiKeyRecord>> {
        let cached =
            |keys: &KeysByHash| keys.values().find(|(a, k)| a == account && k.id == id).map(|(_, k)| k.clone());
        if let Some(found) = self.cached_keys(cached) {
            return Ok(found);
        }
        Ok(self.key_row_by_id(&account.0, id)?.map(|(_, key)| key))
    }

    async fn key_revoke(&self, account: &AccountId, id: &str, at: DateTime<Utc>) -> StorageResult<bool> {
        self.change_key(account, id, move |key| KeyChange::revoke(key, at)).await
    }

    async fn key_rename(&self, account: &AccountId, id: &str, name: &str) -> StorageResult<bool> {
        let name = name.to_string();
        self.change_key(account, id, move |key| KeyChange::rename(key, &name)).await
    }

    async fn key_touch(&self, account: &AccountId, id: &str, at: DateTime<Utc>) -> StorageResult<bool> {
        self.change_key(account, id, move |key| KeyChange::touch(key, at)).await
    }

    async fn key_remove_revoked(&self, account: &AccountId, id: &str) -> StorageResult<bool> {
        // Judged in the writer: a key the configuration brought back meanwhile (`key_put`)
        // is active, and stays.
        self.change_key(account, id, |key| KeyChange::remove_revoked(key)).await
    }
}

impl RedbStorage {
    /// `read` over every key, when the keys are held in memory (see [`KeyCache`]); `None`
    /// when they are not (not yet looked up, or past the bound).
    fn cached_keys<T>(&self, read: impl FnOnce(&KeysByHash) -> T) -> Option<T> {
        cache(&self.api_keys).map.as_ref().map(read)
    }

    /// The account's key `id` with its table key (the token's hash), found in a read snapshot
    /// by reading the table (rows are keyed by hash; see [`Self::change_key`] for why not in
    /// the writer).
    fn key_row_by_id(&self, account: &str, id: &str) -> StorageResult<Option<(Vec<u8>, ApiKeyRecord)>> {
        let (account, id) = (account.to_string(), id.to_string());
        self.read_now(move |tx| {
            let Some(t) = optional_table(tx, API_KEYS)? else { return Ok(None) };
            for item in t.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let (a, key) = decode_key(v.value())?;
                if a == account && key.id == id {
                    return Ok(Some((k.value().to_vec(), key)));
                }
            }
            Ok(None)
        })
    }

    /// Changes the account's key `id` by `change` (which answers what became of the row), in
    /// the writer; whether a key was changed.
    async fn change_key(
        &self,
        account: &AccountId,
        id: &str,
        change: impl FnOnce(&mut ApiKeyRecord) -> KeyChange + Send + 'static,
    ) -> StorageResult<bool> {
        let (account, id) = (account.0.to_string(), id.to_string());
        // Why the row is found in a read snapshot, not in the writer: rows are keyed by the
        // token's hash, so finding one by its id reads the whole table, and inside the writer
        // that scan held up every other write of the store, as often as a client with a
        // full-access key cared to revoke (unknown ids included). A row's hash never changes,
        // so the row found here is the one the writer updates, unless it was removed
        // meanwhile (only a revoked key is, and the writer then finds nothing to change); an
        // id not found here did not exist when the call began (a key created meanwhile is not
        // changed by it, as if the change had come first), and is answered without a write.
        // The writer changes the row as it finds it then: a revocation and a rename racing
        // each other both hold.
        // The row's hash comes from the keys held in memory when they are (as `key_by_id`
        // answers), so a revocation does not read every account's keys once they are held.
        let held = self.cached_keys(|keys| {
            keys.iter().find(|(_, (a, k))| a.as_str() == account && k.id == id).map(|(hash, _)| hash.to_vec())
        });
        let hash = match held {
            Some(found) => found,
            None => self.key_row_by_id(&account, &id)?.map(|(hash, _)| hash),
        };
        let Some(hash) = hash else { return Ok(false) };
        let keys = Arc::clone(&self.api_keys);
        self.write(move |tx| {
            let mut t = tx.open_table(API_KEYS).map_err(backend)?;
            let row = t.get(hash.as_slice()).map_err(backend)?.map(|v| decode_key(v.value())).transpose()?;
            let Some((a, mut key)) = row.filter(|(a, key)| *a == account && key.id == id) else { return Ok(false) };
            match change(&mut key) {
                KeyChange::Unchanged => return Ok(false),
                KeyChange::Updated => {
                    t.insert(hash.as_slice(), encode_key(&a, &key)?.as_slice()).map_err(backend)?;
                    wrote(&keys, &a, &key);
                }
                KeyChange::Removed => {
                    t.remove(hash.as_slice()).map_err(backend)?;
                    cache(&keys).pending.push((key.token_sha256, None));
                }
            }
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl RequestLogStore for RedbStorage {
    async fn log_append(&self, account: &AccountId, log: RequestLog) -> StorageResult<()> {
        self.log_append_many(vec![(account.clone(), log)]).await
    }

    async fn log_append_many(&self, logs: Vec<(AccountId, RequestLog)>) -> StorageResult<()> {
        // Encoded before the writer takes them: one write with the tables opened once, instead
        // of one write per request.
        let rows = logs
            .into_iter()
            .map(|(account, log)| Ok((account.0.to_string(), log.id, encode(&log)?)))
            .collect::<StorageResult<Vec<_>>>()?;
        self.write(move |tx| {
            let mut t = tx.open_table(LOGS).map_err(backend)?;
            let mut times = tx.open_table(LOG_TIMES).map_err(backend)?;
            for (account, id, value) in &rows {
                t.insert((account.as_str(), *id), value.as_slice()).map_err(backend)?;
                times.insert(*id, account.as_str()).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn log_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        let below = RequestLog::first_id_at(cutoff);
        self.write(move |tx| {
            let mut times = tx.open_table(LOG_TIMES).map_err(backend)?;
            let mut logs = tx.open_table(LOGS).map_err(backend)?;
            let mut old = Vec::new();
            for item in times.range(..below).map_err(backend)?.take(limit) {
                let (k, v) = item.map_err(backend)?;
                old.push((k.value(), v.value().to_string()));
            }
            for (id, account) in &old {
                times.remove(id).map_err(backend)?;
                logs.remove((account.as_str(), *id)).map_err(backend)?;
            }
            Ok(old.len())
        })
        .await
    }

    async fn log_page(
        &self,
        account: &AccountId,
        filter: &LogFilter,
        before: Option<u128>,
        limit: usize,
    ) -> StorageResult<(Vec<RequestLog>, bool)> {
        let (account, filter) = (account.0.to_string(), filter.clone());
        self.read(move |tx| {
            let Some(t) = optional_table(tx, LOGS)? else { return Ok((vec![], false)) };
            let a = account.as_str();
            let upper = before.unwrap_or(u128::MAX);
            let mut page = Vec::new();
            for item in t.range((a, 0)..(a, upper)).map_err(backend)?.rev() {
                let (_, v) = item.map_err(backend)?;
                let log: RequestLog = decode(v.value())?;
                if !filter.matches(&log) {
                    continue;
                }
                if page.len() == limit {
                    return Ok((page, true));
                }
                page.push(log);
            }
            Ok((page, false))
        })
        .await
    }

    // Read upwards from the cursor: the page nearest to it, without the newer logs above.
    async fn log_page_newer(
        &self,
        account: &AccountId,
        filter: &LogFilter,
        after: u128,
        limit: usize,
    ) -> StorageResult<(Vec<RequestLog>, bool)> {
        let (account, filter) = (account.0.to_string(), filter.clone());
        self.read(move |tx| {
            let Some(t) = optional_table(tx, LOGS)? else { return Ok((vec![], false)) };
            let Some(lower) = after.checked_add(1) else { return Ok((vec![], false)) };
            let a = account.as_str();
            let mut page = Vec::new();
            for item in t.range((a, lower)..=(a, u128::MAX)).map_err(backend)? {
                let (_, v) = item.map_err(backend)?;
                let log: RequestLog = decode(v.value())?;
                if !filter.matches(&log) {
                    continue;
                }
                if page.len() == limit {
                    page.reverse();
                    return Ok((page, true));
                }
                page.push(log);
            }
            page.reverse();
            Ok((page, false))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mailroom_core::ports::KeyPermission;
    use mailroom_core::testkit::t0;

    fn key(n: u8) -> ApiKeyRecord {
        ApiKeyRecord::new(format!("k{n}"), "ops", [n; 32], KeyPermission::FullAccess, t0())
    }

    /// Keys created, replaced and revoked one after another are each seen by the next lookup,
    /// and the table is read whole once, not once per change.
    #[tokio::test]
    async fn changes_enter_the_cached_keys_without_reading_the_table_again() {
        let s = RedbStorage::in_memory().unwrap();
        let a = AccountId::new("a");
        s.key_insert(&a, key(1)).await.unwrap();
        assert!(s.key_by_hash(&[1; 32]).await.unwrap().is_some());
        for n in 2..40 {
            s.key_insert(&a, key(n)).await.unwrap();
            let (account, found) = s.key_by_hash(&[n; 32]).await.unwrap().unwrap();
            assert_eq!((account.as_str(), found.id.as_str()), ("a", format!("k{n}").as_str()));
        }
        // An insert of a token already stored changes nothing.
        let mut other = key(3);
        other.name = "not stored".into();
        s.key_insert(&AccountId::new("b"), other).await.unwrap();
        let (account, found) = s.key_by_hash(&[3; 32]).await.unwrap().unwrap();
        assert_eq!((account.as_str(), found.name.as_str()), ("a", "ops"));
        let mut renamed = key(5);
        renamed.name = "renamed".into();
        s.key_put(&a, renamed).await.unwrap();
        assert_eq!(s.key_by_hash(&[5; 32]).await.unwrap().unwrap().1.name, "renamed");
        assert!(s.key_revoke(&a, "k7", t0()).await.unwrap());
        assert_eq!(s.key_by_hash(&[7; 32]).await.unwrap().unwrap().1.revoked_at, Some(t0()));
        assert!(s.key_by_hash(&[99; 32]).await.unwrap().is_none());
        // A removal leaves the held keys too.
        assert!(s.key_remove_revoked(&a, "k7").await.unwrap());
        assert!(s.key_by_hash(&[7; 32]).await.unwrap().is_none());
        assert!(!s.key_remove_revoked(&a, "k8").await.unwrap(), "k8 is active");
        assert_eq!(cache(&s.api_keys).loads, 1);
        // What the cache says is what the file says.
        let mut file: Vec<_> = s.key_all().await.unwrap().into_iter().map(|(a, k)| (k.token_sha256, (a, k))).collect();
        let mut cached: Vec<_> = cache(&s.api_keys).map.clone().unwrap().into_iter().collect();
        file.sort_by_key(|(h, _)| *h);
        cached.sort_by_key(|(h, _)| *h);
        assert_eq!(cached, file);
    }

    /// An account's keys listed, or one found by id, read the same from the table and from
    /// the keys held in memory, and once they are held the table is not read again.
    #[tokio::test]
    async fn keys_by_account_and_id_come_from_memory_once_held() {
        let s = RedbStorage::in_memory().unwrap();
        let (a, b) = (AccountId::new("a"), AccountId::new("b"));
        for n in 1..=6 {
            s.key_insert(if n % 2 == 0 { &a } else { &b }, key(n)).await.unwrap();
        }
        let read = || async {
            let ids = |keys: Vec<ApiKeyRecord>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
            (
                ids(s.key_list(&a).await.unwrap()),
                s.key_by_id(&a, "k4").await.unwrap().map(|k| k.id),
                s.key_by_id(&b, "k4").await.unwrap(),
                s.key_by_id(&a, "k9").await.unwrap(),
            )
        };
        let from_the_table = read().await;
        assert!(cache(&s.api_keys).map.is_none(), "nothing looked up by token yet");
        assert_eq!(from_the_table, (vec!["k2".into(), "k4".into(), "k6".into()], Some("k4".into()), None, None));
        s.key_by_hash(&[1; 32]).await.unwrap();
        assert_eq!(read().await, from_the_table);
        // A row put in the table behind the cache's back (no write of the store does that) is
        // not seen: the answers come from memory.
        s.write(|tx| {
            let mut t = tx.open_table(API_KEYS).map_err(backend)?;
            t.insert([8u8; 32].as_slice(), encode_key("a", &key(8))?.as_slice()).map_err(backend)?;
            Ok(())
        })
        .await
        .unwrap();
        assert!(s.key_all().await.unwrap().iter().any(|(_, k)| k.id == "k8"), "it is in the table");
        assert_eq!(read().await, from_the_table);
        assert_eq!(s.key_by_id(&a, "k8").await.unwrap(), None);
        // A change finds its row in memory too: the row put behind the cache's back is not found.
        assert!(!s.key_revoke(&a, "k8", t0()).await.unwrap());
        assert!(s.key_revoke(&a, "k4", t0()).await.unwrap());
        assert_eq!(s.key_by_id(&a, "k4").await.unwrap().and_then(|k| k.revoked_at), Some(t0()));
        assert_eq!(cache(&s.api_keys).loads, 1);
    }

    /// `keys` written in one group, as that many key writes would leave them.
    async fn put_many(s: &RedbStorage, keys: Vec<ApiKeyRecord>) {
        let cached = Arc::clone(&s.api_keys);
        s.write(move |tx| {
            let mut t = tx.open_table(API_KEYS).map_err(backend)?;
            for k in keys {
                t.insert(k.token_sha256.as_slice(), encode_key("a", &k)?.as_slice()).map_err(backend)?;
                wrote(&cached, "a", &k);
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    /// Past the bound the keys are not held, and every lookup is still right: read from the
    /// table, whether the table was past the bound when first looked up or grew past it.
    #[tokio::test]
    async fn a_table_past_the_bound_is_not_held_in_memory() {
        let key = |n: usize| {
            let mut hash = [0; 32];
            hash[..8].copy_from_slice(&(n as u64).to_be_bytes());
            ApiKeyRecord::new(format!("k{n}"), "ops", hash, KeyPermission::FullAccess, t0())
        };
        let s = RedbStorage::in_memory().unwrap();
        let a = AccountId::new("a");
        put_many(&s, (0..MAX_CACHED_KEYS).map(key).collect()).await;
        assert!(s.key_by_hash(&key(7).token_sha256).await.unwrap().is_some());
        assert!(cache(&s.api_keys).map.is_some(), "at the bound: held");
        let last = key(MAX_CACHED_KEYS);
        s.key_insert(&a, last.clone()).await.unwrap();
        assert!(cache(&s.api_keys).map.is_none() && cache(&s.api_keys).too_many, "one past it: let go");
        assert_eq!(s.key_by_hash(&last.token_sha256).await.unwrap().map(|(_, k)| k.id), Some(last.id));
        assert!(s.key_revoke(&a, "k7", t0()).await.unwrap());
        assert_eq!(s.key_by_hash(&key(7).token_sha256).await.unwrap().unwrap().1.revoked_at, Some(t0()));
        assert!(s.key_by_hash(&[0xff; 32]).await.unwrap().is_none());
        assert!(cache(&s.api_keys).map.is_none());
        // A store whose table is past the bound at its first lookup never reads it whole.
        let fresh = RedbStorage::in_memory().unwrap();
        put_many(&fresh, (0..=MAX_CACHED_KEYS).map(key).collect()).await;
        assert!(fresh.key_by_hash(&key(3).token_sha256).await.unwrap().is_some());
        let c = cache(&fresh.api_keys);
        assert!(c.map.is_none() && c.too_many && c.loads == 0);
    }
}
