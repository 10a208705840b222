//! The lock an account's capped creates (API keys, domains, webhooks) hold across every
//! process sharing the database, from their count to their insert
//! ([`mailroom_core::ports::Storage::hold_create_lock`]).
//!
//! A session-level advisory lock on a pooled connection of its own, keyed by the account:
//! the count and the insert it guards run on other connections (the insert in a write
//! group), so a lock scoped to one transaction would not cover them. A process that dies
//! ends its sessions, and PostgreSQL frees their locks with them.

use crate::backend;
use deadpool_postgres::{Object, Pool};
use mailroom_core::email::AccountId;
use mailroom_core::error::StorageError;
use mailroom_core::ports::HeldLock;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first half of the two-key advisory locks this module takes (the two-key space does
/// not overlap the one-key space the migration and sequencer locks use).
const CREATE_LOCK_CLASS: i32 = 0x6d72_6372; // "mrcr"

/// The second half: the account, hashed (FNV-1a) so that every process and every build
/// computes the same key. Two accounts that share a key only queue behind each other.
fn account_key(account: &AccountId) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in account.as_str().bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// The process's share of the pool that lock holders may take.
#[derive(Clone)]
pub(crate) struct CreateLocks {
    pool: Pool,
    /// Why a bound: a holder keeps its connection while its count and insert need others;
    /// with as many holders as the pool has connections (creates for that many accounts at
    /// once) none of them could go on. Holders take at most half the pool.
    holders: Option<Arc<Semaphore>>,
}

impl CreateLocks {
    pub(crate) fn new(pool: Pool) -> CreateLocks {
        let max = pool.status().max_size;
        // A pool of one connection cannot hold a lock and work beside it: such a store keeps
        // only the engine's in-process lock (documented on `PostgresStorage::connect`).
        let holders = (max >= 2).then(|| Arc::new(Semaphore::new(max / 2)));
        CreateLocks { pool, holders }
    }

    pub(crate) async fn hold(&self, account: &AccountId) -> Result<Option<HeldLock>, StorageError> {
        let Some(holders) = &self.holders else { return Ok(None) };
        let permit = holders.clone().acquire_owned().await.map_err(backend)?;
        let (pool, key) = (self.pool.clone(), account_key(account));
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Why a task: PostgreSQL may make the lock wait; if the caller goes away meanwhile
        // (its client disconnected), the task still finishes taking it and the guard it could
        // not hand over frees it, instead of a pooled connection going back with it held.
        tokio::spawn(async move {
            let taken = async {
                let client = pool.get().await.map_err(backend)?;
                client
                    .execute("SELECT pg_advisory_lock($1, $2)", &[&CREATE_LOCK_CLASS, &key])
                    .await
                    .map_err(backend)?;
                Ok(Guard { client: Some(client), key, permit: Some(permit) })
            }
            .await;
            // A guard the caller no longer waits for is dropped here, which frees the lock.
            let _ = tx.send(taken);
        });
        match rx.await {
            Ok(taken) => taken.map(|g| Some(HeldLock::new(g))),
            Err(_) => Err(StorageError::Backend("the task taking the create lock ended".into())),
        }
    }
}

/// A held lock: its connection, until dropped.
struct Guard {
    client: Option<Object>,
    key: i32,
    /// Given back once the lock is freed, not before.
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        let (key, permit) = (self.key, self.permit.take());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to unlock on: closing the session frees the lock.
            drop(Object::take(client));
            return;
        };
        runtime.spawn(async move {
            let freed = client.query_one("SELECT pg_advisory_unlock($1, $2)", &[&CREATE_LOCK_CLASS, &key]).await;
            if !matches!(freed.as_ref().map(|r| r.get::<_, bool>(0)), Ok(true)) {
                // The lock may still be held on this session: close it rather than pool it.
                tracing::warn!(target: "mailroom::postgres", ?freed, "a create lock was not freed; its connection is closed");
                drop(Object::take(client));
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_key_is_the_same_in_every_build() {
        // FNV-1a of "default", fixed: processes of different builds must agree on it.
        assert_eq!(account_key(&AccountId::default()), i32::from_ne_bytes(0x933b_5bde_u32.to_ne_bytes()));
        assert_ne!(account_key(&AccountId::new("a")), account_key(&AccountId::new("b")));
    }
}
