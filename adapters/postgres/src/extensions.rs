//! API keys, request logs and domains: the extensions the HTTP API and the verifier use.

use crate::sql;
use crate::{PostgresStorage, backend, decode, encode, encode_packed, log};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailroom_core::domains::Domain;
use mailroom_core::email::AccountId;
use mailroom_core::error::StorageError;
use mailroom_core::events::{DomainEvent, Pending};
use mailroom_core::ports::{ApiKeyRecord, ApiKeyStore, DomainStore, KeyChange, LogFilter, RequestLog, RequestLogStore};
use uuid::Uuid;

type Result<T> = std::result::Result<T, StorageError>;

fn account_of(s: String) -> AccountId {
    AccountId::new(s)
}

/// The first byte of a key record from the version that added `last_used_at` (an `Option`,
/// last): a key written before it (`encode`'s version 1) reads with postcard's `None` (one
/// zero byte) appended. Why its own version: postcard has no field names, so a field added
/// at the end makes an older record one byte short.
const KEY_V2: u8 = 3;

/// `encode`'s layout under [`KEY_V2`].
fn encode_key(key: &ApiKeyRecord) -> Result<Vec<u8>> {
    let mut out = encode(key)?;
    out[0] = KEY_V2;
    Ok(out)
}

fn decode_key(bytes: &[u8]) -> Result<ApiKeyRecord> {
    match bytes.split_first() {
        Some((&KEY_V2, rest)) => crate::from_postcard(rest),
        Some((&crate::V1, _)) => decode(&[bytes, &[0]].concat()),
        _ => decode(bytes),
    }
}

#[async_trait]
impl ApiKeyStore for PostgresStorage {
    async fn key_insert(&self, account: &AccountId, key: ApiKeyRecord) -> Result<()> {
        let c = self.client().await?;
        sql::execute(
            &c,
            "INSERT INTO mailroom_api_keys (token_sha256, account, id, created_at, record) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (token_sha256) DO NOTHING",
            &[&&key.token_sha256[..], &account.as_str(), &key.id, &key.created_at, &encode_key(&key)?],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn key_put(&self, account: &AccountId, key: ApiKeyRecord) -> Result<()> {
        let c = self.client().await?;
        sql::execute(
            &c,
            "INSERT INTO mailroom_api_keys (token_sha256, account, id, created_at, record) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (token_sha256) DO UPDATE SET account = EXCLUDED.account, id = EXCLUDED.id, \
             created_at = EXCLUDED.created_at, record = EXCLUDED.record",
            &[&&key.token_sha256[..], &account.as_str(), &key.id, &key.created_at, &encode_key(&key)?],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn key_all(&self) -> Result<Vec<(AccountId, ApiKeyRecord)>> {
        let c = self.client().await?;
        let rows = sql::query(&c, "SELECT account, record FROM mailroom_api_keys", &[]).await.map_err(backend)?;
        rows.iter().map(|r| Ok((account_of(r.get(0)), decode_key(r.get(1))?))).collect()
    }

    async fn key_by_hash(&self, sha256: &[u8; 32]) -> Result<Option<(AccountId, ApiKeyRecord)>> {
        let c = self.client().await?;
        let row = sql::query_opt(
            &c,
            "SELECT account, record FROM mailroom_api_keys WHERE token_sha256 = $1",
            &[&&sha256[..]],
        )
        .await
        .map_err(backend)?;
        row.map(|r| Ok((account_of(r.get(0)), decode_key(r.get(1))?))).transpose()
    }

    async fn key_list(&self, account: &AccountId) -> Result<Vec<ApiKeyRecord>> {
        let c = self.client().await?;
        let rows = sql::query(
            &c,
            "SELECT record FROM mailroom_api_keys WHERE account = $1 ORDER BY created_at, id COLLATE \"C\"",
            &[&account.as_str()],
        )
        .await
        .map_err(backend)?;
        rows.iter().map(|r| decode_key(r.get(0))).collect()
    }

    async fn key_by_id(&self, account: &AccountId, id: &str) -> Result<Option<ApiKeyRecord>> {
        let c = self.client().await?;
        let row = sql::query_opt(
            &c,
            "SELECT record FROM mailroom_api_keys WHERE account = $1 AND id = $2",
            &[&account.as_str(), &id],
        )
        .await
        .map_err(backend)?;
        row.map(|r| decode_key(r.get(0))).transpose()
    }

    async fn key_revoke(&self, account: &AccountId, id: &str, at: DateTime<Utc>) -> Result<bool> {
        self.change_key(account, id, move |key| KeyChange::revoke(key, at)).await
    }

    async fn key_rename(&self, account: &AccountId, id: &str, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.change_key(account, id, move |key| KeyChange::rename(key, &name)).await
    }

    async fn key_touch(&self, account: &AccountId, id: &str, at: DateTime<Utc>) -> Result<bool> {
        self.change_key(account, id, move |key| KeyChange::touch(key, at)).await
    }

    async fn key_remove_revoked(&self, account: &AccountId, id: &str) -> Result<bool> {
        // Judged on the locked row: a key the configuration brings back (`key_put`) is
        // active again, and stays.
        self.change_key(account, id, |key| KeyChange::remove_revoked(key)).await
    }
}

impl PostgresStorage {
    /// Changes the account's key `id` by `change` (which answers what became of the row), the
    /// row locked for the change (a revocation and a rename racing each other both hold);
    /// whether a key was changed.
    async fn change_key(
        &self,
        account: &AccountId,
        id: &str,
        change: impl FnOnce(&mut ApiKeyRecord) -> KeyChange + Send + 'static,
    ) -> Result<bool> {
        let (account, id) = (account.as_str().to_string(), id.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                let row = sql::query_opt(
                    tx,
                    "SELECT token_sha256, record FROM mailroom_api_keys WHERE account = $1 AND id = $2 FOR UPDATE",
                    &[&account, &id],
                )
                .await
                .map_err(backend)?;
                let Some(row) = row else { return Ok(false) };
                let hash: Vec<u8> = row.get(0);
                let mut key: ApiKeyRecord = decode_key(row.get(1))?;
                match change(&mut key) {
                    KeyChange::Unchanged => return Ok(false),
                    KeyChange::Updated => sql::execute(
                        tx,
                        "UPDATE mailroom_api_keys SET record = $2 WHERE token_sha256 = $1",
                        &[&hash, &encode_key(&key)?],
                    )
                    .await
                    .map_err(backend)?,
                    KeyChange::Removed => {
                        sql::execute(tx, "DELETE FROM mailroom_api_keys WHERE token_sha256 = $1", &[&hash])
                            .await
                            .map_err(backend)?
                    }
                };
                Ok(true)
            })
        })
        .await
    }
}

/// Logs read per query step while filtering in memory.
const LOG_CHUNK: i64 = 500;

#[async_trait]
impl RequestLogStore for PostgresStorage {
    async fn log_append(&self, account: &AccountId, log: RequestLog) -> Result<()> {
        // A write per request: it joins the requests' group (see `group`). Compressed here: a
        // batch's log holds its request body (tens of KB of repetitive JSON), which PostgreSQL
        // would otherwise compress itself on the shared database's CPU.
        let hint = log.request_body.as_ref().map_or(0, String::len) + log.response_body.as_ref().map_or(0, String::len);
        let (account, record) = (account.as_str().to_string(), encode_packed(&log, hint + 256)?);
        self.write(move |c| {
            Box::pin(async move {
                sql::execute(c,
                    "INSERT INTO mailroom_request_logs (id, account, at, api_key_id, record) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (id) DO NOTHING",
                    &[&Uuid::from_u128(log.id), &account, &log.at, &log.api_key_id, &record],
                )
                .await
                .map_err(backend)?;
                Ok(())
            })
        })
        .await
    }

    async fn log_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<usize> {
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let n = sql::execute(
            &c,
            "DELETE FROM mailroom_request_logs WHERE id IN \
                 (SELECT id FROM mailroom_request_logs WHERE at < $1 ORDER BY id LIMIT $2)",
            &[&cutoff, &limit],
        )
        .await
        .map_err(backend)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn log_page(
        &self,
        account: &AccountId,
        filter: &LogFilter,
        before: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<RequestLog>, bool)> {
        let c = self.client().await?;
        // Times and the key are narrowed in SQL; every condition is then decided by
        // `LogFilter::matches`, the one function all stores share.
        let mut upper = Uuid::from_u128(before.unwrap_or(u128::MAX));
        let mut out = Vec::new();
        loop {
            let rows = sql::query(
                &c,
                "SELECT record FROM mailroom_request_logs WHERE account = $1 AND id < $2 \
                     AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::timestamptz IS NULL OR at <= $4) \
                     AND ($5::text IS NULL OR api_key_id = $5) ORDER BY id DESC LIMIT $6",
                &[&account.as_str(), &upper, &filter.from, &filter.to, &filter.api_key_id, &LOG_CHUNK],
            )
            .await
            .map_err(backend)?;
            let n = rows.len();
            for r in &rows {
                let l: RequestLog = decode(r.get(0))?;
                upper = Uuid::from_u128(l.id);
                if filter.matches(&l) {
                    if out.len() == limit {
                        return Ok((out, true));
                    }
                    out.push(l);
                }
            }
            if i64::try_from(n).unwrap_or(0) < LOG_CHUNK {
                return Ok((out, false));
            }
        }
    }
}

#[async_trait]
impl DomainStore for PostgresStorage {
    async fn domain_put(
        &self,
        account: &AccountId,
        domain: Domain,
        change: Option<(DomainEvent, DateTime<Utc>)>,
    ) -> Result<bool> {
        let account = account.clone();
        let record = encode(&domain)?;
        self.write(move |tx| {
            Box::pin(async move {
                let version = i64::try_from(domain.version).unwrap_or(i64::MAX);
                // Compare-and-set: insert version 1 over nothing, or replace version n - 1.
                let written = if domain.version == 1 {
                    sql::execute(
                        tx,
                        "INSERT INTO mailroom_domains (account, name, id, version, next_check, record) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account, name) DO NOTHING",
                        &[&account.as_str(), &domain.name, &domain.id, &version, &domain.next_check, &record],
                    )
                    .await
                } else {
                    sql::execute(
                        tx,
                        "UPDATE mailroom_domains SET id = $3, version = $4::bigint, next_check = $5, record = $6 \
                         WHERE account = $1 AND name = $2 AND version = $4::bigint - 1",
                        &[&account.as_str(), &domain.name, &domain.id, &version, &domain.next_check, &record],
                    )
                    .await
                }
                .map_err(backend)?;
                if written == 0 {
                    return Ok(false);
                }
                if let Some((change, at)) = change {
                    log(tx, [Pending::for_domain(&account, at, change, &domain)]).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn domain_get(&self, account: &AccountId, name: &str) -> Result<Option<Domain>> {
        let c = self.client().await?;
        let row = sql::query_opt(
            &c,
            "SELECT record FROM mailroom_domains WHERE account = $1 AND name = $2",
            &[&account.as_str(), &name],
        )
        .await
        .map_err(backend)?;
        row.map(|r| decode(r.get(0))).transpose()
    }

    async fn domain_by_id(&self, account: &AccountId, id: &str) -> Result<Option<Domain>> {
        let c = self.client().await?;
        let row = sql::query_opt(
            &c,
            "SELECT record FROM mailroom_domains WHERE account = $1 AND id = $2",
            &[&account.as_str(), &id],
        )
        .await
        .map_err(backend)?;
        row.map(|r| decode(r.get(0))).transpose()
    }

    async fn domain_list(&self, account: &AccountId) -> Result<Vec<Domain>> {
        let c = self.client().await?;
        let rows = sql::query(
            &c,
            "SELECT record FROM mailroom_domains WHERE account = $1 ORDER BY name COLLATE \"C\"",
            &[&account.as_str()],
        )
        .await
        .map_err(backend)?;
        rows.iter().map(|r| decode(r.get(0))).collect()
    }

    async fn domain_delete(&self, account: &AccountId, name: &str, at: DateTime<Utc>) -> Result<bool> {
        let (account, name) = (account.clone(), name.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                let row = sql::query_opt(
                    tx,
                    "DELETE FROM mailroom_domains WHERE account = $1 AND name = $2 RETURNING record",
                    &[&account.as_str(), &name],
                )
                .await
                .map_err(backend)?;
                let Some(row) = row else { return Ok(false) };
                let d: Domain = decode(row.get(0))?;
                log(tx, [Pending::for_domain(&account, at, DomainEvent::Deleted, &d)]).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn domain_owners(&self, name: &str) -> Result<Vec<(AccountId, Domain)>> {
        let c = self.client().await?;
        let rows = sql::query(
            &c,
            "SELECT account, record FROM mailroom_domains WHERE name = $1 ORDER BY account COLLATE \"C\"",
            &[&name],
        )
        .await
        .map_err(backend)?;
        rows.iter().map(|r| Ok((account_of(r.get(0)), decode(r.get(1))?))).collect()
    }

    async fn domains_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<(AccountId, Domain)>> {
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sql::query(
            &c,
            "SELECT account, record FROM mailroom_domains WHERE next_check <= $1 ORDER BY next_check LIMIT $2",
            &[&now, &limit],
        )
        .await
        .map_err(backend)?;
        rows.iter().map(|r| Ok((account_of(r.get(0)), decode(r.get(1))?))).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_written_before_the_last_use_still_read() {
        let mut key = mailroom_core::testkit::sample_key();
        let now = encode_key(&key).unwrap();
        assert_eq!((now[0], now.last()), (KEY_V2, Some(&0)), "last_used_at = None is one zero byte, last");
        // What `encode` wrote before the field: version 1, the same bytes without it.
        let mut before = now[..now.len() - 1].to_vec();
        before[0] = crate::V1;
        assert_eq!(decode_key(&before).unwrap(), key);
        assert_eq!(encode(&(1u8,)).unwrap()[0], crate::V1, "the layout the old keys were written in");
        assert!(key.touch(mailroom_core::testkit::t0() + chrono::Duration::seconds(90)));
        assert_eq!(decode_key(&encode_key(&key).unwrap()).unwrap(), key);
        assert!(matches!(decode_key(&[9, 1]), Err(StorageError::Corrupt(_))));
    }
}
