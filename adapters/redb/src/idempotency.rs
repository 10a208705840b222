//! Idempotency keys: the requests in flight (memory only), the records of recent completions
//! (a time-ordered log in the file, indexed in memory), and the settled records (a table keyed
//! by account and key).
//!
//! Why a log in front of the key table: clients choose keys at random (UUIDs), so a table
//! ordered by key takes every completion into a leaf of its own, and with it a branch page,
//! that no other write of its group commit shares (keyed single sends ran at about 0.7 × the
//! unkeyed rate; pages written per request also follow how many requests share a commit, so
//! the pages alone do not say how much of that they were). Appended in completion order, a
//! record shares its pages with the rest of its group commit. The log holds at most [`DEFAULT_RECENT`] records (plus one
//! chunk): past that, the completion that crosses the line also moves the oldest
//! [`CHUNK`] records into the key table, in its own transaction, where many records land in
//! the same leaves and every branch above them is written once.
//!
//! Invariants:
//! - `recent` mirrors the log's committed rows exactly: a row's entry is added after the
//!   commit that wrote it, and dropped after the commit that moved or removed it. It is
//!   rebuilt from the log when the file is opened, so it never holds more than the log does.
//! - A key has at most one live record, in the log or in the key table. A lookup tries the
//!   index first and reads the row in a snapshot taken after; a row missing there was moved by
//!   a commit that the snapshot holds, so the key table of the same snapshot has it.
//! - `pending` and `gone` hold what the group being written adds to and takes from the log;
//!   the writer settles them into the index after the group's commit (or drops them when it
//!   aborts), before any write of the group is answered. A second completion of a key in the
//!   same group therefore meets the first, as it would in a transaction of its own, and a key
//!   is never without its record between the commit and the index.

use crate::codec::{decode, encode};
use crate::{IDEMPOTENCY, backend, get_idempotency};
use chrono::{DateTime, Utc};
use mailroom_core::error::StorageError;
use mailroom_core::idempotency::{Fingerprint, IdempotencyRecord};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// seq → (account, key, record): completions in the order they were committed.
pub(crate) const RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("idempotency_recent_v1");

/// The log's size past which its oldest records move to the key table: a store that
/// completes fewer keyed requests a day never writes the key table at all (records lapse in
/// the log). The index then holds about 4 MB, and an opening reads it back in milliseconds.
pub const DEFAULT_RECENT: usize = 32768;
/// How many records one move takes: enough to share leaves in a large key table, few enough
/// that the move's commit stays short.
pub(crate) const CHUNK: usize = 1024;

/// (account, key).
pub(crate) type Slot = (String, String);

/// An idempotency key in flight, held in memory only (see the crate's docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) until: DateTime<Utc>,
}

/// What the index keeps of a record in the log: where it is, and until when it answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recent {
    pub(crate) seq: u64,
    pub(crate) expires_at: DateTime<Utc>,
}

/// The keys' state in memory, under one lock (see the module's invariants).
#[derive(Debug, Default)]
pub(crate) struct Keys {
    pub(crate) in_flight: HashMap<Slot, InFlight>,
    pub(crate) recent: HashMap<Slot, Recent>,
    pending: HashMap<Slot, Recent>,
    gone: Vec<(Slot, u64)>,
    /// Whether the group being written changed the key table.
    touched: bool,
    /// A read snapshot of the key table that lookups of keys the index does not hold share
    /// (see [`Keys::key_table`]).
    snapshot: Option<(std::sync::Arc<redb::ReadTransaction>, std::time::Instant)>,
    /// While set (a compaction runs), no snapshot is kept: redb compacts only a file no
    /// transaction reads.
    no_snapshot: bool,
    /// The next row's number (rows are numbered by the one writer thread).
    pub(crate) next: u64,
}

impl Keys {
    /// The index and counter of the log in a file being opened.
    pub(crate) fn load(tx: &redb::ReadTransaction) -> Result<Keys, StorageError> {
        let mut keys = Keys::default();
        let log = tx.open_table(RECENT).map_err(backend)?;
        for item in log.iter().map_err(backend)? {
            let (seq, row) = item.map_err(backend)?;
            let (seq, row): (u64, Row) = (seq.value(), decode(row.value())?);
            keys.recent.insert((row.account, row.key), Recent { seq, expires_at: row.record.expires_at });
            keys.next = seq + 1;
        }
        Ok(keys)
    }

    /// After a group: its rows enter the index and the rows it moved or removed leave it when
    /// it `committed`; nothing changes when it aborted.
    pub(crate) fn settle(&mut self, committed: bool) {
        let (pending, gone) = (std::mem::take(&mut self.pending), std::mem::take(&mut self.gone));
        let touched = std::mem::take(&mut self.touched);
        if !committed {
            return;
        }
        if touched {
            self.snapshot = None;
        }
        self.recent.extend(pending);
        for (slot, seq) in gone {
            if self.recent.get(&slot).is_some_and(|r| r.seq == seq) {
                self.recent.remove(&slot);
            }
        }
    }

    /// Records that the group being written removed row `seq` of `slot` from the log.
    pub(crate) fn removed(&mut self, slot: Slot, seq: u64) {
        self.gone.push((slot, seq));
    }

    /// Records that the group being written changes the key table.
    pub(crate) fn touch(&mut self) {
        self.touched = true;
    }

    /// A read transaction that sees the key table as committed now. Why shared: a keyed
    /// request looks its key up before it runs, and a read transaction of its own read the
    /// table's pages again after every commit (each commit rewrites the root of the file's
    /// table of tables): measured, about 30 µs of a keyed single send's CPU. The key table
    /// changes only in a group that calls [`touch`](Self::touch), and that group's settling
    /// drops the snapshot, so a snapshot kept since is exact for the key table (not for the
    /// log, which lookups read in a transaction of their own). It is renewed every second all
    /// the same: an open read transaction keeps every page freed after it from being reused.
    pub(crate) fn key_table(
        &mut self,
        db: &redb::Database,
    ) -> Result<std::sync::Arc<redb::ReadTransaction>, StorageError> {
        use redb::ReadableDatabase;
        if let Some((tx, at)) = &self.snapshot
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return Ok(std::sync::Arc::clone(tx));
        }
        let tx = std::sync::Arc::new(db.begin_read().map_err(backend)?);
        if !self.no_snapshot {
            self.snapshot = Some((std::sync::Arc::clone(&tx), std::time::Instant::now()));
        }
        Ok(tx)
    }

    /// Drops the shared snapshot and keeps none until [`allow_snapshot`](Self::allow_snapshot).
    pub(crate) fn forbid_snapshot(&mut self) {
        self.no_snapshot = true;
        self.snapshot = None;
    }

    /// Ends [`forbid_snapshot`](Self::forbid_snapshot).
    pub(crate) fn allow_snapshot(&mut self) {
        self.no_snapshot = false;
    }
}

/// A row of the log.
#[derive(Serialize, Deserialize)]
struct Row {
    account: String,
    key: String,
    record: IdempotencyRecord,
}

/// The record of `slot` as of `tx`: its row in the log (when the index points there and the
/// row is still in this snapshot), else the key table's.
pub(crate) fn read_record(
    tx: &redb::ReadTransaction,
    slot: &Slot,
    recent: Option<&Recent>,
) -> Result<Option<IdempotencyRecord>, StorageError> {
    if let Some(r) = recent {
        let log = tx.open_table(RECENT).map_err(backend)?;
        if let Some(row) = log.get(r.seq).map_err(backend)? {
            let row: Row = decode(row.value())?;
            return Ok(Some(row.record));
        }
    }
    get_idempotency(&tx.open_table(IDEMPOTENCY).map_err(backend)?, &slot.0, &slot.1)
}

/// A completed record as the log keeps it (encoded on the caller's thread: the writer thread
/// only writes).
pub(crate) struct Completed {
    slot: Slot,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    row: Vec<u8>,
}

impl Completed {
    pub(crate) fn new(slot: Slot, record: IdempotencyRecord) -> Result<Completed, StorageError> {
        let (created_at, expires_at) = (record.created_at, record.expires_at);
        let row = encode(&Row { account: slot.0.clone(), key: slot.1.clone(), record })?;
        Ok(Completed { slot, created_at, expires_at, row })
    }
}

/// Appends a completed record to the log, inside a group's transaction, after checking that no
/// live record of its key exists (in the log, the key table, or this group); then, when the
/// log is past `limit`, moves its oldest chunk. `keys` is the store's lock.
pub(crate) fn append(
    tx: &WriteTransaction,
    keys: &std::sync::Mutex<Keys>,
    done: Completed,
    limit: usize,
) -> Result<(), StorageError> {
    let Completed { slot, created_at, expires_at, row } = done;
    // The key table is this transaction's own: read before the lock, which lookups on request
    // threads wait for.
    let settled = get_idempotency(&tx.open_table(IDEMPOTENCY).map_err(backend)?, &slot.0, &slot.1)?;
    mailroom_core::store::may_complete(settled.as_ref(), created_at)?;
    let mut k = keys.lock().unwrap_or_else(|p| p.into_inner());
    // A live record in the log, or one completed earlier in this group, is the same conflict.
    if k.recent.get(&slot).is_some_and(|r| r.expires_at > created_at) || k.pending.contains_key(&slot) {
        return Err(StorageError::IdempotencyConflict);
    }
    let seq = k.next;
    let mut log = tx.open_table(RECENT).map_err(backend)?;
    log.insert(seq, row.as_slice()).map_err(backend)?;
    k.next += 1;
    k.pending.insert(slot, Recent { seq, expires_at });
    // Not held while a chunk moves: lookups on request threads wait for this lock.
    drop(k);
    let first = log.first().map_err(backend)?.map(|(s, _)| s.value()).unwrap_or(seq);
    if usize::try_from(seq - first).unwrap_or(usize::MAX) >= limit {
        // The record is in the log already: a move that fails now fails the write halfway, so
        // any error spoils the whole group (only backend errors do: see `writer`), and the
        // group's additions never reach the index.
        let moved = move_oldest(tx, &mut log, CHUNK).map_err(|e| match e {
            StorageError::Backend(_) => e,
            other => StorageError::Backend(format!("moving idempotency records to the key table: {other}")),
        })?;
        let mut k = keys.lock().unwrap_or_else(|p| p.into_inner());
        k.touch();
        for (slot, seq) in moved {
            k.removed(slot, seq);
        }
    }
    Ok(())
}

/// Moves the log's oldest `n` rows into the key table (a newer row of the same key, which
/// cannot be live beside them, replaces them there later).
fn move_oldest(
    tx: &WriteTransaction,
    log: &mut redb::Table<u64, &[u8]>,
    n: usize,
) -> Result<Vec<(Slot, u64)>, StorageError> {
    let mut rows = Vec::with_capacity(n);
    for item in log.iter().map_err(backend)?.take(n) {
        let (seq, bytes) = item.map_err(backend)?;
        rows.push((seq.value(), bytes.value().to_vec()));
    }
    let mut table = tx.open_table(IDEMPOTENCY).map_err(backend)?;
    let mut moved = Vec::with_capacity(rows.len());
    for (seq, bytes) in rows {
        let row: Row = decode(&bytes)?;
        table.insert((row.account.as_str(), row.key.as_str()), encode(&row.record)?.as_slice()).map_err(backend)?;
        log.remove(seq).map_err(backend)?;
        moved.push(((row.account, row.key), seq));
    }
    Ok(moved)
}

/// Removes the log's rows whose records lapsed by `now`; how many there were. The rows are
/// found in the index (and among this group's own additions), not by reading the log: every
/// row there has an answer, and the index knows when each lapses.
pub(crate) fn purge_log(
    tx: &WriteTransaction,
    keys: &std::sync::Mutex<Keys>,
    now: DateTime<Utc>,
) -> Result<usize, StorageError> {
    let mut k = keys.lock().unwrap_or_else(|p| p.into_inner());
    let lapsed: Vec<(Slot, u64)> = k
        .recent
        .iter()
        .chain(k.pending.iter())
        .filter(|(_, r)| r.expires_at <= now)
        .map(|(slot, r)| (slot.clone(), r.seq))
        .collect();
    let mut log = tx.open_table(RECENT).map_err(backend)?;
    let mut expired = 0;
    for (slot, seq) in lapsed {
        // A row an earlier write of this group moved is in the key table now, and counted
        // there.
        if log.remove(seq).map_err(backend)?.is_some() {
            expired += 1;
            k.removed(slot, seq);
        }
    }
    Ok(expired)
}

/// Removes the row `seq` of `slot` from the log when it holds a lapsed record (a key taken
/// over after its record lapsed).
pub(crate) fn remove_lapsed(
    tx: &WriteTransaction,
    keys: &std::sync::Mutex<Keys>,
    slot: Slot,
    seq: u64,
    now: DateTime<Utc>,
) -> Result<(), StorageError> {
    let mut log = tx.open_table(RECENT).map_err(backend)?;
    let lapsed = match log.get(seq).map_err(backend)? {
        Some(bytes) => {
            let row: Row = decode(bytes.value())?;
            row.record.expires_at <= now || row.record.response.is_none()
        }
        None => false,
    };
    if lapsed {
        log.remove(seq).map_err(backend)?;
        keys.lock().unwrap_or_else(|p| p.into_inner()).removed(slot, seq);
    }
    Ok(())
}
