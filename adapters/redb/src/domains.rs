//! Domains on redb: one row per domain under (account, name), an index by id, and an index
//! of when each is checked next. Every write is a compare-and-set on the domain's version,
//! in the writer thread, and appends its change to the event log in the same transaction.

use crate::codec::{decode_domain, encode_domain};
use crate::events::log_pending;
use crate::{DOMAINS, RedbStorage, account_values_with, backend, optional_table};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailroom_core::domains::Domain;
use mailroom_core::email::AccountId;
use mailroom_core::events::{DomainEvent, Pending};
use mailroom_core::ports::{DomainStore, StorageResult};
use mailroom_core::store::due_key;
use redb::{ReadableTable, TableDefinition};

/// (account, domain id) → name.
pub(crate) const DOMAIN_IDS: TableDefinition<(&str, &str), &str> = TableDefinition::new("domain_ids_v1");
/// (next check µs, account, name): domains with a check scheduled.
pub(crate) const DOMAIN_DUE: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("domain_due_v1");

fn account_domains(
    t: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    account: &str,
) -> StorageResult<Vec<Domain>> {
    account_values_with(t, account, |v| decode_domain(account, v))
}

#[async_trait]
impl DomainStore for RedbStorage {
    async fn domain_put(
        &self,
        account: &AccountId,
        domain: Domain,
        change: Option<(DomainEvent, DateTime<Utc>)>,
    ) -> StorageResult<bool> {
        let log = self.log.clone();
        let account = account.0.clone();
        let bytes = encode_domain(&domain)?;
        self.write(move |tx| {
            let mut t = tx.open_table(DOMAINS).map_err(backend)?;
            let old = t
                .get((&*account, domain.name.as_str()))
                .map_err(backend)?
                .map(|v| decode_domain(&account, v.value()))
                .transpose()?;
            if old.as_ref().map_or(0, |d| d.version) + 1 != domain.version {
                return Ok(false);
            }
            t.insert((&*account, domain.name.as_str()), bytes.as_slice()).map_err(backend)?;
            drop(t);
            let mut due = tx.open_table(DOMAIN_DUE).map_err(backend)?;
            if let Some(at) = old.as_ref().and_then(|d| d.next_check) {
                due.remove((due_key(at), &*account, domain.name.as_str())).map_err(backend)?;
            }
            if let Some(at) = domain.next_check {
                due.insert((due_key(at), &*account, domain.name.as_str()), ()).map_err(backend)?;
            }
            drop(due);
            let mut ids = tx.open_table(DOMAIN_IDS).map_err(backend)?;
            ids.insert((&*account, domain.id.as_str()), domain.name.as_str()).map_err(backend)?;
            drop(ids);
            if let Some((change, at)) = change {
                log_pending(
                    tx,
                    log.as_deref(),
                    vec![Pending::for_domain(&AccountId::new(&*account), at, change, &domain)],
                )?;
            }
            Ok(true)
        })
        .await
    }

    async fn domain_get(&self, account: &AccountId, name: &str) -> StorageResult<Option<Domain>> {
        let account = account.0.clone();
        self.read_now(move |tx| {
            let Some(t) = optional_table(tx, DOMAINS)? else { return Ok(None) };
            t.get((&*account, name)).map_err(backend)?.map(|v| decode_domain(&account, v.value())).transpose()
        })
    }

    async fn domain_by_id(&self, account: &AccountId, id: &str) -> StorageResult<Option<Domain>> {
        let account = account.0.clone();
        self.read_now(move |tx| {
            let Some(t) = optional_table(tx, DOMAINS)? else { return Ok(None) };
            let name = match optional_table(tx, DOMAIN_IDS)? {
                Some(ids) => ids.get((&*account, id)).map_err(backend)?.map(|n| n.value().to_string()),
                None => None,
            };
            match name {
                Some(name) => t
                    .get((&*account, name.as_str()))
                    .map_err(backend)?
                    .map(|v| decode_domain(&account, v.value()))
                    .transpose(),
                // A domain written before the index (version 1) is found by its derived id.
                None => Ok(account_domains(&t, &account)?.into_iter().find(|d| d.id == id)),
            }
        })
    }

    async fn domain_list(&self, account: &AccountId) -> StorageResult<Vec<Domain>> {
        let account = account.0.clone();
        self.read_now(move |tx| match optional_table(tx, DOMAINS)? {
            Some(t) => account_domains(&t, &account),
            None => Ok(vec![]),
        })
    }

    async fn domain_delete(&self, account: &AccountId, name: &str, at: DateTime<Utc>) -> StorageResult<bool> {
        let log = self.log.clone();
        let (account, name) = (account.0.clone(), name.to_string());
        self.write(move |tx| {
            let mut t = tx.open_table(DOMAINS).map_err(backend)?;
            let Some(old) = t
                .remove((&*account, name.as_str()))
                .map_err(backend)?
                .map(|v| decode_domain(&account, v.value()))
                .transpose()?
            else {
                return Ok(false);
            };
            drop(t);
            tx.open_table(DOMAIN_IDS).map_err(backend)?.remove((&*account, old.id.as_str())).map_err(backend)?;
            if let Some(next) = old.next_check {
                tx.open_table(DOMAIN_DUE)
                    .map_err(backend)?
                    .remove((due_key(next), &*account, name.as_str()))
                    .map_err(backend)?;
            }
            log_pending(
                tx,
                log.as_deref(),
                vec![Pending::for_domain(&AccountId::new(&*account), at, DomainEvent::Deleted, &old)],
            )?;
            Ok(true)
        })
        .await
    }

    async fn domain_owners(&self, name: &str) -> StorageResult<Vec<(AccountId, Domain)>> {
        let name = name.to_string();
        // A scan of the keys (decoding only the matches): the listener caches its answers for
        // a while, so this runs once per domain per period, not once per recipient.
        self.read_now(move |tx| {
            let Some(t) = optional_table(tx, DOMAINS)? else { return Ok(vec![]) };
            let mut out = Vec::new();
            for item in t.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let (account, n) = k.value();
                if n == name {
                    out.push((AccountId::new(account), decode_domain(account, v.value())?));
                }
            }
            Ok(out)
        })
    }

    async fn domains_due(&self, now: DateTime<Utc>, limit: usize) -> StorageResult<Vec<(AccountId, Domain)>> {
        self.read_now(move |tx| {
            let (Some(due), Some(t)) = (optional_table(tx, DOMAIN_DUE)?, optional_table(tx, DOMAINS)?) else {
                return Ok(vec![]);
            };
            let mut out = Vec::new();
            for item in due.range(..(due_key(now).saturating_add(1), "", "")).map_err(backend)?.take(limit) {
                let (k, _) = item.map_err(backend)?;
                let (_, account, name) = k.value();
                if let Some(v) = t.get((account, name)).map_err(backend)? {
                    out.push((AccountId::new(account), decode_domain(account, v.value())?));
                }
            }
            Ok(out)
        })
    }
}
