//! Received mail on redb: the summary under (account, id), and the raw bytes under the same
//! key in a table of their own, so that listing never reads a message's body. One arrival's
//! copies and their `email.received` entries are one write of the writer's group.

use crate::codec::{decode, encode};
use crate::events::log_pending;
use crate::{RedbStorage, backend, optional_table};
use async_trait::async_trait;
use mailroom_core::email::{AccountId, Cursor, EmailId, Page, PageRequest};
use mailroom_core::events::{Pending, Subject};
use mailroom_core::ports::{ReceivedStore, StorageResult};
use mailroom_core::receiving::ReceivedEmail;
use redb::TableDefinition;

/// (account, id) → summary.
pub(crate) const RECEIVED: TableDefinition<(&str, u128), &[u8]> = TableDefinition::new("received_v1");
/// (account, id) → the message as it arrived.
pub(crate) const RECEIVED_RAW: TableDefinition<(&str, u128), &[u8]> = TableDefinition::new("received_raw_v1");

#[async_trait]
impl ReceivedStore for RedbStorage {
    async fn received_put(&self, copies: Vec<(AccountId, ReceivedEmail)>, raw: Vec<u8>) -> StorageResult<()> {
        let log = self.log.clone();
        let encoded = copies.iter().map(|(_, e)| encode(e)).collect::<StorageResult<Vec<_>>>()?;
        self.write(move |tx| {
            let mut t = tx.open_table(RECEIVED).map_err(backend)?;
            let mut r = tx.open_table(RECEIVED_RAW).map_err(backend)?;
            for ((account, e), bytes) in copies.iter().zip(&encoded) {
                let key = (account.as_str(), e.id.as_u128());
                t.insert(key, bytes.as_slice()).map_err(backend)?;
                // The raw bytes are written from the listener's own buffer, not copied into a
                // record first: a 25 MB message is held once.
                r.insert(key, raw.as_slice()).map_err(backend)?;
            }
            drop((t, r));
            let pending = copies
                .into_iter()
                .map(|(account, e)| Pending { account, at: e.created_at, subject: Subject::Received(Box::new(e)) })
                .collect();
            log_pending(tx, log.as_deref(), pending)
        })
        .await
    }

    async fn received_get(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<ReceivedEmail>> {
        let account = account.as_str().to_string();
        self.read_now(move |tx| {
            let Some(t) = optional_table(tx, RECEIVED)? else { return Ok(None) };
            t.get((account.as_str(), id.as_u128())).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn received_raw(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<Vec<u8>>> {
        let account = account.as_str().to_string();
        self.read(move |tx| {
            let Some(t) = optional_table(tx, RECEIVED_RAW)? else { return Ok(None) };
            Ok(t.get((account.as_str(), id.as_u128())).map_err(backend)?.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn received_page(&self, account: &AccountId, page: PageRequest) -> StorageResult<Page<ReceivedEmail>> {
        let account = account.as_str().to_string();
        self.read(move |tx| {
            let Some(t) = optional_table(tx, RECEIVED)? else { return Ok(Page { items: vec![], has_more: false }) };
            let a = account.as_str();
            let take = page.limit + 1;
            let mut items = Vec::with_capacity(take);
            let (rows, reversed): (Box<dyn Iterator<Item = _>>, bool) = match page.cursor {
                Cursor::Start => (Box::new(t.range((a, 0u128)..=(a, u128::MAX)).map_err(backend)?.rev()), false),
                Cursor::After(c) => (Box::new(t.range((a, 0u128)..(a, c.as_u128())).map_err(backend)?.rev()), false),
                Cursor::Before(c) => match c.as_u128().checked_add(1) {
                    Some(lo) => (Box::new(t.range((a, lo)..=(a, u128::MAX)).map_err(backend)?), true),
                    None => (Box::new(std::iter::empty()), true),
                },
            };
            for item in rows.take(take) {
                let (_, v) = item.map_err(backend)?;
                items.push(decode::<ReceivedEmail>(v.value())?);
            }
            let has_more = items.len() > page.limit;
            items.truncate(page.limit);
            if reversed {
                items.reverse();
            }
            Ok(Page { items, has_more })
        })
        .await
    }
}
