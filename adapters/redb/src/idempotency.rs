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
//! Why the index holds a keyed hash of each slot rather than its strings: the index is what
//! decides how many records a store can complete before records move (and each moved record
//! costs a random insert into the key table, in the one writer: under sustained keyed load
//! about a tenth of its time). A slot named by its strings took about 150 bytes; a
//! [`SlotId`] with its [`Recent`] takes 32 (about 66 with the table's slack), so the default
//! log holds eight times as many records as before in about 3.5 times the memory: a store
//! that completes fewer than [`DEFAULT_RECENT`] keyed requests in 24 hours (three a second)
//! never moves any. The hash is SipHash-1-3 with 128 bits of output under a key drawn at every
//! opening (the index is rebuilt then), so clients cannot aim keys at each other; two live
//! slots share an id with a probability of about n² / 2¹²⁹ (below 2⁻⁹⁰ for a full log), and
//! a row read through the index is checked against its account and key all the same.
//!
//! Invariants:
//! - `recent` mirrors the log's committed rows exactly: a row's entry is added after the
//!   commit that wrote it, and dropped after the commit that moved or removed it. It is
//!   rebuilt from the log when the file is opened, so it never holds more than the log does.
//! - A key has at most one live record, in the log or in the key table. A lookup tries the
//!   index first and reads the row in a snapshot taken after; a row missing there was moved by
//!   a commit that the snapshot holds, so the key table of the same snapshot has it.
//! - Every record of the key table has exactly one entry in [`EXPIRY`], under its own expiry,
//!   and the index holds nothing else: each write of the key table writes both.
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
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// seq → (account, key, record): completions in the order they were committed.
pub(crate) const RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("idempotency_recent_v1");

/// (expiry in nanoseconds since 1970, account, key) → (): the key table's records in the
/// order they lapse. Why: a purge that read the whole key table to find its lapsed records
/// did so inside the writer, every minute, with every other write of the store waiting; under
/// keyed load past the log's threshold the table holds up to a day of records. Kept exact by
/// every write of the key table (a move, a purge, a key taken over from a lapsed record).
pub(crate) const EXPIRY: TableDefinition<(i64, &str, &str), ()> = TableDefinition::new("idempotency_expiry_v1");

/// How many lapsed records of the key table one write removes: a purge of more takes several
/// writes, so that other writes are not held up behind one long one.
pub(crate) const PURGE_STEP: usize = 4096;

/// The log's size past which its oldest records move to the key table: a store that
/// completes fewer keyed requests a day never writes the key table at all (records lapse in
/// the log). A full index holds about 17 MB (32 bytes an entry in a table kept at most 7/8
/// full, sized in powers of two), and an opening reads the log back in well under a second.
pub const DEFAULT_RECENT: usize = 1 << 18;
/// How many records one move takes: enough to share leaves in a large key table, few enough
/// that the move's commit stays short.
pub(crate) const CHUNK: usize = 1024;

/// A slot (account, key) as the index names it: a keyed 128-bit hash (see the module's
/// docs). Two words, not a `u128`, so that an entry of the index packs into 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotId([u64; 2]);

impl Hash for SlotId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a keyed hash: its first word is the table's hash as it is.
        state.write_u64(self.0[0]);
    }
}

/// Passes a [`SlotId`]'s first word through as the table's hash (SipHash over it again would
/// only cost time).
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for a `SlotId`; folded all the same, so that any key still hashes.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(crate) type SlotMap<V> = HashMap<SlotId, V, BuildHasherDefault<PassThrough>>;

/// The key of the slots' hash, drawn when the store opens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotKey([u8; 16]);

impl SlotKey {
    pub(crate) fn random() -> SlotKey {
        // The standard library's per-process random seeds, so that no dependency is needed for
        // sixteen random bytes: every `RandomState` is seeded from the operating system's
        // randomness (then counted up), and hashing the same value under two of them gives two
        // independent words.
        use std::hash::BuildHasher;
        let (a, b) = (std::collections::hash_map::RandomState::new(), std::collections::hash_map::RandomState::new());
        let mut key = [0; 16];
        key[..8].copy_from_slice(&a.hash_one(0x6d61_696c_726f_6f6d_u64).to_le_bytes());
        key[8..].copy_from_slice(&b.hash_one(0x6964_656d_706f_7465_u64).to_le_bytes());
        SlotKey(key)
    }

    /// The id of (`account`, `key`). The account goes in with its length, so no two pairs
    /// write the same bytes.
    pub(crate) fn id(&self, account: &str, key: &str) -> SlotId {
        use siphasher::sip128::Hasher128;
        let mut h = siphasher::sip128::SipHasher13::new_with_key(&self.0);
        h.write_usize(account.len());
        h.write(account.as_bytes());
        h.write(key.as_bytes());
        let hash = h.finish128();
        SlotId([hash.h1, hash.h2])
    }
}

/// An idempotency key in flight, held in memory only (see the crate's docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) until: DateTime<Utc>,
}

/// What the index keeps of a record in the log: where it is, and until when it answers (in
/// nanoseconds since 1970, which holds every expiry until 2262 in 8 bytes instead of 12).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recent {
    pub(crate) seq: u64,
    expires: i64,
}

impl Recent {
    pub(crate) fn new(seq: u64, expires_at: DateTime<Utc>) -> Recent {
        Recent { seq, expires: nanos(expires_at) }
    }

    /// Whether the record still answers at `at`.
    pub(crate) fn live_at(&self, at: DateTime<Utc>) -> bool {
        self.expires > nanos(at)
    }
}

/// `t` in nanoseconds since 1970, clamped to what an `i64` holds (a clamped time keeps its
/// order against every time that is not).
fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 { i64::MIN } else { i64::MAX })
}

/// The keys' state in memory, under one lock (see the module's invariants).
#[derive(Debug, Default)]
pub(crate) struct Keys {
    pub(crate) in_flight: SlotMap<InFlight>,
    pub(crate) recent: SlotMap<Recent>,
    pending: SlotMap<Recent>,
    gone: Vec<(SlotId, u64)>,
    /// Whether the group being written changed the key table.
    touched: bool,
    /// Whether the key table may hold a row: false only while it has held none since the
    /// store opened. Then a key the index does not hold has no record at all, and neither a
    /// lookup nor a completion reads the key table. Set by a group that writes the table
    /// before that group commits (so a reader sees it no later than the rows), and never
    /// cleared: a purge that empties the table leaves it set until the next opening.
    pub(crate) settled_rows: bool,
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
    /// The index and counter of the log in a file being opened, its slots named under `ids`
    /// (the store's one copy of the opening's key).
    pub(crate) fn load(tx: &redb::ReadTransaction, ids: &SlotKey) -> Result<Keys, StorageError> {
        let mut keys = Keys::default();
        let log = tx.open_table(RECENT).map_err(backend)?;
        keys.recent.reserve(usize::try_from(log.len().map_err(backend)?).unwrap_or(0));
        for item in log.iter().map_err(backend)? {
            let (seq, row) = item.map_err(backend)?;
            let (seq, row): (u64, Row) = (seq.value(), decode(row.value())?);
            keys.recent.insert(ids.id(&row.account, &row.key), Recent::new(seq, row.record.expires_at));
            keys.next = seq + 1;
        }
        keys.settled_rows = !tx.open_table(IDEMPOTENCY).map_err(backend)?.is_empty().map_err(backend)?;
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
    pub(crate) fn removed(&mut self, slot: SlotId, seq: u64) {
        self.gone.push((slot, seq));
    }

    /// Records that the group being written changes the key table.
    pub(crate) fn touch(&mut self) {
        self.touched = true;
        self.settled_rows = true;
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

/// The record of (`account`, `key`) as of `tx`: its row in the log (when the index points
/// there, the row is still in this snapshot, and it is this slot's), else the key table's.
pub(crate) fn read_record(
    tx: &redb::ReadTransaction,
    (account, key): (&str, &str),
    recent: Option<&Recent>,
) -> Result<Option<IdempotencyRecord>, StorageError> {
    if let Some(r) = recent {
        let log = tx.open_table(RECENT).map_err(backend)?;
        if let Some(row) = log.get(r.seq).map_err(backend)? {
            let row: Row = decode(row.value())?;
            if row.account == account && row.key == key {
                return Ok(Some(row.record));
            }
        }
    }
    get_idempotency(&tx.open_table(IDEMPOTENCY).map_err(backend)?, account, key)
}

/// A completed record as the log keeps it (encoded on the caller's thread: the writer thread
/// only writes).
pub(crate) struct Completed {
    slot: SlotId,
    account: String,
    key: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    bytes: Vec<u8>,
}

impl Completed {
    pub(crate) fn new(
        slot: SlotId,
        account: String,
        key: String,
        record: IdempotencyRecord,
    ) -> Result<Completed, StorageError> {
        let (created_at, expires_at) = (record.created_at, record.expires_at);
        let row = Row { account, key, record };
        let bytes = encode(&row)?;
        // The names stay for the key table's check; the record lives on only in `bytes`.
        let Row { account, key, .. } = row;
        Ok(Completed { slot, account, key, created_at, expires_at, bytes })
    }
}

/// Appends a completed record to the log, inside a group's transaction, after checking that no
/// live record of its key exists (in the log, the key table, or this group); then, when the
/// log is past `limit`, moves its oldest chunk. `keys` is the store's lock.
pub(crate) fn append(
    tx: &WriteTransaction,
    keys: &std::sync::Mutex<Keys>,
    ids: &SlotKey,
    done: Completed,
    limit: usize,
) -> Result<(), StorageError> {
    let Completed { slot, account, key, created_at, expires_at, bytes } = done;
    // Whether the key table may hold the key. Only this writer thread sets it, so it cannot
    // turn between this read and the transaction's own read below.
    let settled_rows = keys.lock().unwrap_or_else(|p| p.into_inner()).settled_rows;
    if settled_rows {
        // The key table is this transaction's own: read without the lock, which lookups on
        // request threads wait for.
        let settled = get_idempotency(&tx.open_table(IDEMPOTENCY).map_err(backend)?, &account, &key)?;
        mailroom_core::store::may_complete(settled.as_ref(), created_at)?;
    }
    let mut k = keys.lock().unwrap_or_else(|p| p.into_inner());
    // A live record in the log, or one completed earlier in this group, is the same conflict.
    if k.recent.get(&slot).is_some_and(|r| r.live_at(created_at)) || k.pending.contains_key(&slot) {
        return Err(StorageError::IdempotencyConflict);
    }
    let seq = k.next;
    let mut log = tx.open_table(RECENT).map_err(backend)?;
    log.insert(seq, bytes.as_slice()).map_err(backend)?;
    k.next += 1;
    k.pending.insert(slot, Recent::new(seq, expires_at));
    // Not held while a chunk moves: lookups on request threads wait for this lock.
    drop(k);
    let first = log.first().map_err(backend)?.map(|(s, _)| s.value()).unwrap_or(seq);
    if usize::try_from(seq - first).unwrap_or(usize::MAX) >= limit {
        // The record is in the log already: a move that fails now fails the write halfway, so
        // any error spoils the whole group (only backend errors do: see `writer`), and the
        // group's additions never reach the index.
        let moved = move_oldest(tx, &mut log, CHUNK, ids).map_err(|e| match e {
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
    ids: &SlotKey,
) -> Result<Vec<(SlotId, u64)>, StorageError> {
    let mut rows = Vec::with_capacity(n);
    for item in log.iter().map_err(backend)?.take(n) {
        let (seq, bytes) = item.map_err(backend)?;
        rows.push((seq.value(), bytes.value().to_vec()));
    }
    let mut table = tx.open_table(IDEMPOTENCY).map_err(backend)?;
    let mut expiry = tx.open_table(EXPIRY).map_err(backend)?;
    let mut moved = Vec::with_capacity(rows.len());
    for (seq, bytes) in rows {
        let row: Row = decode(&bytes)?;
        let (account, key) = (row.account.as_str(), row.key.as_str());
        let replaced = table
            .insert((account, key), encode(&row.record)?.as_slice())
            .map_err(backend)?
            .map(|old| decode::<IdempotencyRecord>(old.value()))
            .transpose()?;
        if let Some(old) = replaced {
            expiry.remove((nanos(old.expires_at), account, key)).map_err(backend)?;
        }
        expiry.insert((nanos(row.record.expires_at), account, key), ()).map_err(backend)?;
        log.remove(seq).map_err(backend)?;
        moved.push((ids.id(&row.account, &row.key), seq));
    }
    Ok(moved)
}

/// Removes up to [`PURGE_STEP`] of the key table's records that lapsed by `now`, found in the
/// expiry index (so only lapsed records are read); how many, and whether more may be left.
pub(crate) fn purge_settled(
    tx: &WriteTransaction,
    keys: &std::sync::Mutex<Keys>,
    now: DateTime<Utc>,
) -> Result<(usize, bool), StorageError> {
    let mut expiry = tx.open_table(EXPIRY).map_err(backend)?;
    // Every entry whose expiry is at or before `now`: below (now + 1 ns, "", ""), the least
    // key of the next nanosecond.
    let end = nanos(now).saturating_add(1);
    let mut lapsed = Vec::new();
    for item in expiry.range::<(i64, &str, &str)>(..(end, "", "")).map_err(backend)?.take(PURGE_STEP) {
        let (entry, _) = item.map_err(backend)?;
        let (at, account, key) = entry.value();
        lapsed.push((at, account.to_string(), key.to_string()));
    }
    let mut table = tx.open_table(IDEMPOTENCY).map_err(backend)?;
    // Read (and decoded) before anything is removed: see the writer's "compute, then write".
    let mut records = Vec::with_capacity(lapsed.len());
    for (at, account, key) in &lapsed {
        let record = get_idempotency(&table, account, key)?;
        records.push(record.filter(|r| nanos(r.expires_at) == *at));
    }
    let mut removed = 0;
    for ((at, account, key), record) in lapsed.iter().zip(records) {
        expiry.remove((*at, account.as_str(), key.as_str())).map_err(backend)?;
        // An entry whose record is gone or was replaced is only dropped (none is left so: every
        // write of the key table keeps the index exact; this is the cheap guard all the same).
        if record.is_some() {
            table.remove((account.as_str(), key.as_str())).map_err(backend)?;
            removed += 1;
        }
    }
    if removed > 0 {
        keys.lock().unwrap_or_else(|p| p.into_inner()).touch();
    }
    Ok((removed, lapsed.len() == PURGE_STEP))
}

/// Drops the expiry index's entry of a key-table record that is being removed.
pub(crate) fn forget_expiry(
    tx: &WriteTransaction,
    (account, key): (&str, &str),
    record: &IdempotencyRecord,
) -> Result<(), StorageError> {
    tx.open_table(EXPIRY).map_err(backend)?.remove((nanos(record.expires_at), account, key)).map_err(backend)?;
    Ok(())
}

/// Builds the expiry index of a file written before it existed, and removes the markers an
/// older version stored in the key table (records without a response: dead, see the crate's
/// docs), which the index does not hold. Called when the store opens a file without the index.
pub(crate) fn index_expiry(tx: &WriteTransaction) -> Result<(), StorageError> {
    let mut table = tx.open_table(IDEMPOTENCY).map_err(backend)?;
    let mut entries = Vec::new();
    let mut markers = Vec::new();
    for item in table.iter().map_err(backend)? {
        let (k, v) = item.map_err(backend)?;
        let (account, key) = k.value();
        let record: IdempotencyRecord = decode(v.value())?;
        match record.response {
            Some(_) => entries.push((nanos(record.expires_at), account.to_string(), key.to_string())),
            None => markers.push((account.to_string(), key.to_string())),
        }
    }
    let mut expiry = tx.open_table(EXPIRY).map_err(backend)?;
    for (at, account, key) in &entries {
        expiry.insert((*at, account.as_str(), key.as_str()), ()).map_err(backend)?;
    }
    for (account, key) in &markers {
        table.remove((account.as_str(), key.as_str())).map_err(backend)?;
    }
    Ok(())
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
    let lapsed: Vec<(SlotId, u64)> = k
        .recent
        .iter()
        .chain(k.pending.iter())
        .filter(|(_, r)| !r.live_at(now))
        .map(|(slot, r)| (*slot, r.seq))
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
    slot: SlotId,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::RedbStorage;
    use mailroom_core::email::AccountId;
    use mailroom_core::idempotency::StoredResponse;
    use mailroom_core::ports::{IdempotencyBegin, IdempotencyCompletion, Storage};
    use mailroom_core::testkit::t0;

    /// The size the module's memory figures are counted from.
    #[test]
    fn an_entry_of_the_index_takes_32_bytes() {
        assert_eq!(std::mem::size_of::<(SlotId, Recent)>(), 32);
    }

    /// The account's length is hashed with it, so moving a byte between account and key
    /// names another slot; the same names under the same key are the same slot, and under
    /// another opening's key another id.
    #[test]
    fn slot_ids_tell_accounts_and_keys_apart() {
        let ids = SlotKey::random();
        assert_eq!(ids.id("ab", "c"), ids.id("ab", "c"));
        assert_ne!(ids.id("ab", "c"), ids.id("a", "bc"));
        assert_ne!(ids.id("", "abc"), ids.id("abc", ""));
        assert_ne!(ids.id("ab", "c"), SlotKey::random().id("ab", "c"));
    }

    /// A row the index points to answers only for the slot written in it: an id shared by
    /// two slots (which the hash makes practically impossible) would not hand one slot's
    /// record to the other.
    #[test]
    fn a_row_of_another_slot_is_not_read_as_this_ones() {
        use redb::ReadableDatabase;
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("rows.redb")).unwrap();
        let record = IdempotencyRecord {
            fingerprint: Fingerprint([1; 32]),
            created_at: t0(),
            expires_at: t0() + chrono::Duration::hours(24),
            response: Some(StoredResponse { ids: vec![], errors: vec![] }),
        };
        let tx = db.begin_write().unwrap();
        tx.open_table(IDEMPOTENCY).unwrap();
        let row = Row { account: "acct".into(), key: "k1".into(), record: record.clone() };
        tx.open_table(RECENT).unwrap().insert(0, encode(&row).unwrap().as_slice()).unwrap();
        tx.commit().unwrap();
        let tx = db.begin_read().unwrap();
        let at = Recent::new(0, record.expires_at);
        assert_eq!(read_record(&tx, ("acct", "k1"), Some(&at)).unwrap(), Some(record));
        assert_eq!(read_record(&tx, ("acct", "k2"), Some(&at)).unwrap(), None);
        assert_eq!(read_record(&tx, ("other", "k1"), Some(&at)).unwrap(), None);
    }

    /// The key table is skipped only while it has held no row: a move sets the flag, and an
    /// opening of a file whose key table holds rows starts with it set, so the moved keys
    /// still answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_key_table_is_read_once_it_may_hold_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flag.redb");
        let a = AccountId::default();
        let day = chrono::Duration::hours(24);
        let settled = |s: &RedbStorage| s.keys.lock().unwrap().settled_rows;
        let complete = |key: &str| IdempotencyCompletion {
            key: key.into(),
            fingerprint: Fingerprint([1; 32]),
            response: StoredResponse { ids: vec![], errors: vec![] },
            created_at: t0(),
            expires_at: t0() + day,
        };
        {
            let s = RedbStorage::open(&path).unwrap().without_fsync().recent_idempotency_limit(2);
            assert!(!settled(&s), "a new file's key table is empty");
            for key in ["k0", "k1"] {
                s.insert_emails(&a, vec![], Some(complete(key))).await.unwrap();
            }
            assert!(!settled(&s), "nothing has moved yet");
            s.insert_emails(&a, vec![], Some(complete("k2"))).await.unwrap();
            assert!(settled(&s), "a move wrote the key table");
        }
        let s = RedbStorage::open(&path).unwrap().without_fsync().recent_idempotency_limit(2);
        assert!(settled(&s), "the key table holds the moved rows");
        assert!(s.keys.lock().unwrap().recent.len() < 3, "some rows moved");
        for key in ["k0", "k1", "k2"] {
            let begun = s.idempotency_begin(&a, key, &Fingerprint([1; 32]), t0(), t0() + day).await.unwrap();
            assert!(matches!(begun, IdempotencyBegin::Replay(_)), "{key}: {begun:?}");
        }
        let fresh = RedbStorage::open(dir.path().join("fresh.redb")).unwrap();
        assert!(!settled(&fresh));
    }

    fn done(key: &str, at: chrono::DateTime<Utc>) -> IdempotencyCompletion {
        IdempotencyCompletion {
            key: key.into(),
            fingerprint: Fingerprint([1; 32]),
            response: StoredResponse { ids: vec![], errors: vec![] },
            created_at: at,
            expires_at: at + chrono::Duration::hours(24),
        }
    }

    /// A purge removes exactly the key table's lapsed records, found through the expiry
    /// index, in writes of at most `PURGE_STEP` each; the records still live stay and answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_takes_the_lapsed_records_in_steps() {
        let s = RedbStorage::in_memory().unwrap().without_fsync().recent_idempotency_limit(1);
        let a = AccountId::default();
        let (early, late) = (PURGE_STEP + 100, 50);
        for i in 0..early + late {
            let at = if i < early { t0() } else { t0() + chrono::Duration::hours(1) };
            s.insert_emails(&a, vec![], Some(done(&format!("k{i}"), at))).await.unwrap();
        }
        let before = s.commit_stats().writes;
        let lapsed_at = t0() + chrono::Duration::hours(24);
        assert_eq!(s.purge_idempotency(lapsed_at).await.unwrap(), early);
        // Two steps of the key table (one full), and the log's.
        assert_eq!(s.commit_stats().writes - before, 3);
        for i in [0, early - 1] {
            let begun = s.idempotency_begin(&a, &format!("k{i}"), &Fingerprint([2; 32]), lapsed_at, lapsed_at).await;
            assert_eq!(begun.unwrap(), IdempotencyBegin::Started, "k{i} lapsed");
        }
        let begun = s.idempotency_begin(&a, &format!("k{}", early), &Fingerprint([2; 32]), lapsed_at, lapsed_at).await;
        assert_eq!(begun.unwrap(), IdempotencyBegin::Mismatch, "a live record stays");
        assert_eq!(s.purge_idempotency(lapsed_at + chrono::Duration::hours(1)).await.unwrap(), late);
    }

    /// A file written before the expiry index existed gets it when it is opened: its records
    /// are purged when they lapse, and an older version's markers (records without a
    /// response) are removed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_without_the_expiry_index_gets_it_at_opening() {
        use redb::ReadableDatabase;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        let a = AccountId::default();
        {
            let s = RedbStorage::open(&path).unwrap().without_fsync().recent_idempotency_limit(1);
            for i in 0..20 {
                s.insert_emails(&a, vec![], Some(done(&format!("k{i}"), t0()))).await.unwrap();
            }
        }
        {
            let db = redb::Database::open(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.delete_table(EXPIRY).unwrap();
            let marker = IdempotencyRecord {
                fingerprint: Fingerprint([3; 32]),
                created_at: t0(),
                expires_at: t0() + chrono::Duration::minutes(2),
                response: None,
            };
            tx.open_table(IDEMPOTENCY)
                .unwrap()
                .insert(("default", "marker"), encode(&marker).unwrap().as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        {
            let s = RedbStorage::open(&path).unwrap().without_fsync().recent_idempotency_limit(1);
            // 19 moved to the key table, one in the log; the marker is not a record.
            assert_eq!(s.purge_idempotency(t0() + chrono::Duration::hours(24)).await.unwrap(), 20);
        }
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_read().unwrap();
        assert!(tx.open_table(IDEMPOTENCY).unwrap().get(("default", "marker")).unwrap().is_none());
        assert!(tx.open_table(EXPIRY).unwrap().is_empty().unwrap());
    }
}
