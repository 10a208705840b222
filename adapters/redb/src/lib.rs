//! # mailroom-redb
//!
//! mailroom's embedded default [`Storage`]: one redb file, durable (fsync) commits. The file
//! is the only source of truth: nothing is cached across operations, so a restart sees
//! exactly what was committed. (Two exceptions, both rebuilt from the file after every
//! opening: the in-memory index of recent idempotency records, `idempotency`; and the API
//! keys by token hash, read whole at the first lookup and kept in step by every commit that
//! changes the key table, `extensions::KeyCache`.)
//!
//! Writes go through one writer thread that commits concurrent writes together (`writer`:
//! group commit, each write still atomic on its own); reads run in parallel on their own
//! read transactions.
//!
//! **A restart recovers at once.** redb opens a file in one process at a time, so whatever
//! the previous process held when it died is dead. This store therefore keeps what a process
//! holds only in memory: an idempotency key in flight (a retry after a restart starts
//! afresh), and the workers' claims (an email claimed by a dead process is due at once after
//! a restart, not when its lease would have lapsed; the hand-over mark, which is durable,
//! still sends it through recovery). A claim then costs no write at all. The shared rules
//! (`mailroom_core::store`) see the claims as usual: the store lays them over the states it
//! reads and takes them off the states it writes. Stores shared by several processes keep
//! leases instead.
//!
//! Tables (all versioned by name, so a future layout can live beside this one):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `emails_v1` | (account, id) | content (zstd-compressed postcard) — also the listing index: ids are UUIDv7, time-ordered |
//! | `states_v1` | id | events and delivery state |
//! | `due_v1` | (due µs, id) | () — what the worker should look at, earliest first |
//! | `idempotency_recent_v1` | number | (account, key, completed record): the recent completions, in commit order, indexed in memory (`idempotency`) |
//! | `idempotency_v1` | (account, key) | completed record, once moved out of the recent log |
//! | `idempotency_expiry_v1` | (expiry ns, account, key) | () — `idempotency_v1`'s records in the order they lapse, for the purge |
//! | `suppressions_v1` | (account, address) | entry |
//! | `suppression_ids_v1` | (account, id's 128 bits) | address — the entries by id (ids are derived from addresses; `suppressions`) |
//! | `suppression_origins_v1` | (account, origin code, address) | () — each origin's entries in address order |
//! | `api_keys_v1`, `request_logs_v1`, `request_log_times_v1`, `domains_v1` | | the extensions |
#![warn(missing_docs)]

mod codec;
mod create;
mod domains;
mod events;
mod extensions;
mod idempotency;
mod receiving;
mod suppressions;
mod writer;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use codec::{decode, decode_content, decode_state, encode, encode_content, encode_state};
use events::log_pending;
pub use idempotency::DEFAULT_RECENT as DEFAULT_RECENT_IDEMPOTENCY;
use mailroom_core::email::{
    AccountId, Claim, Cursor, EmailContent, EmailId, EmailRecord, EmailState, EmailSummary, Event, NewEmail, Page,
    PageRequest,
};
use mailroom_core::error::StorageError;
use mailroom_core::events::{Pending, Subject};
use mailroom_core::idempotency::{Fingerprint, IdempotencyRecord};
use mailroom_core::ports::{
    ApiKeyStore, ClaimRef, ClaimedEmail, DomainStore, EmailFacts, IdempotencyBegin, IdempotencyCompletion, Outcome,
    RequestLogStore, ScheduleChange, ScheduleOp, Storage, StorageResult, SuppressionEntry,
};
use mailroom_core::store::{self, due_key};
pub use redb::StorageBackend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

const EMAILS: TableDefinition<(&str, u128), &[u8]> = TableDefinition::new("emails_v1");
const STATES: TableDefinition<u128, &[u8]> = TableDefinition::new("states_v1");
const DUE: TableDefinition<(i64, u128), ()> = TableDefinition::new("due_v1");
const IDEMPOTENCY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency_v1");
const SUPPRESSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("suppressions_v1");
/// token SHA-256 → (account, key record). Few keys: listing an account's scans them all.
const API_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_keys_v1");
/// (account, log id) → request log; ids are time-ordered, so a reverse range is newest first.
const LOGS: TableDefinition<(&str, u128), &[u8]> = TableDefinition::new("request_logs_v1");
/// (account, domain name) → sending domain and its settings.
const DOMAINS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("domains_v1");
/// log id → account: the request logs in time order across accounts, for retention.
const LOG_TIMES: TableDefinition<u128, &str> = TableDefinition::new("request_log_times_v1");

/// Every table this store writes, by name: a backup copies each, and refuses a file holding a
/// table it does not know (it would be lost).
const TABLE_NAMES: [&str; 21] = [
    "events_v1",
    "webhooks_v1",
    "webhook_messages_v1",
    "webhook_due_v1",
    "emails_v1",
    "states_v1",
    "due_v1",
    "idempotency_v1",
    "idempotency_recent_v1",
    "idempotency_expiry_v1",
    "suppressions_v1",
    "suppression_ids_v1",
    "suppression_origins_v1",
    "api_keys_v1",
    "request_logs_v1",
    "domains_v1",
    "domain_ids_v1",
    "domain_due_v1",
    "request_log_times_v1",
    "received_v1",
    "received_raw_v1",
];

fn backend_err(e: impl std::fmt::Display) -> StorageError {
    backend(e)
}

/// Makes the store file at `path` if there is none, so that a process killed while it is
/// being made leaves no half-made file behind (`create`).
fn make_if_missing(path: &Path) -> Result<(), StorageError> {
    if path.try_exists().map_err(backend)? {
        // Leftovers of a creation killed after its link: harmless, but not kept.
        create::sweep_beside(path);
        return Ok(());
    }
    // Closed again before it is linked: redb holds a lock per open file, and the caller opens it next.
    create::create_beside(path, |tmp| Database::builder().create(tmp).map(drop).map_err(backend)).map(drop)
}

/// Copies every table of `snapshot` into a new database at `path`, in one commit; the rows copied.
fn copy_into(snapshot: &redb::ReadTransaction, path: &Path) -> Result<u64, StorageError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| StorageError::Backend(format!("cannot create {}: {e}", path.display())))?;
    let file = redb::backends::FileBackend::new(file).map_err(backend)?;
    let copy = Database::builder().create_with_backend(file).map_err(backend)?;
    let tx = copy.begin_write().map_err(backend)?;
    let mut rows = 0;
    rows += copy_table(snapshot, &tx, EMAILS)?;
    rows += copy_table(snapshot, &tx, STATES)?;
    rows += copy_table(snapshot, &tx, DUE)?;
    rows += copy_table(snapshot, &tx, IDEMPOTENCY)?;
    rows += copy_table(snapshot, &tx, idempotency::RECENT)?;
    rows += copy_table(snapshot, &tx, idempotency::EXPIRY)?;
    rows += copy_table(snapshot, &tx, SUPPRESSIONS)?;
    rows += copy_table(snapshot, &tx, suppressions::SUPPRESSION_IDS)?;
    rows += copy_table(snapshot, &tx, suppressions::SUPPRESSION_ORIGINS)?;
    rows += copy_table(snapshot, &tx, API_KEYS)?;
    rows += copy_table(snapshot, &tx, LOGS)?;
    rows += copy_table(snapshot, &tx, DOMAINS)?;
    rows += copy_table(snapshot, &tx, domains::DOMAIN_IDS)?;
    rows += copy_table(snapshot, &tx, domains::DOMAIN_DUE)?;
    rows += copy_table(snapshot, &tx, LOG_TIMES)?;
    rows += copy_table(snapshot, &tx, events::EVENTS)?;
    rows += copy_table(snapshot, &tx, events::WEBHOOKS)?;
    rows += copy_table(snapshot, &tx, events::MESSAGES)?;
    rows += copy_table(snapshot, &tx, events::MESSAGE_DUE)?;
    rows += copy_table(snapshot, &tx, receiving::RECEIVED)?;
    rows += copy_table(snapshot, &tx, receiving::RECEIVED_RAW)?;
    tx.commit().map_err(backend)?;
    Ok(rows)
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// The bytes the store writes for an email's content (benchmarks write the same bytes raw,
/// to measure the store against the disk's limit).
pub fn encode_record(email: &NewEmail) -> Vec<u8> {
    encode_content(&email.content).unwrap_or_default()
}

/// The page cache an opened store may fill. redb's own default (1 GiB) lets an embedded
/// store's memory grow to a gigabyte under sustained writes; the working set of accepting and
/// delivering mail is the newest pages of each table, which fit in far less. 64 MiB keeps
/// ingestion at the disk's pace (see the `ingest` benchmark) and a host's memory predictable.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The redb store. Cheap to clone (clones share the open database).
#[derive(Clone)]
pub struct RedbStorage {
    /// Every operation holds the read side (uncontended, so nearly free); only compaction,
    /// which needs the database to itself, takes the write side.
    db: Arc<RwLock<Database>>,
    writer: Arc<writer::Writer>,
    fsync: Arc<AtomicBool>,
    /// Idempotency keys in flight, by (account, key) — a dead process's die with it — and the
    /// index of the recent records (`idempotency`).
    keys: Arc<Mutex<idempotency::Keys>>,
    /// The key the index's slot ids are hashed under, drawn at the opening and never changed:
    /// held outside `keys`, so that ids are made without the lock.
    slot_ids: idempotency::SlotKey,
    /// How many records the recent log holds before its oldest move to the key table.
    recent_limit: usize,
    /// The workers' claims, by email id (see the crate's docs).
    claims: Claims,
    /// The event log's counter: the last number given (`None`: no log is written, only to
    /// measure what it costs).
    log: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The API keys as last committed (`extensions::KeyCache`).
    api_keys: extensions::SharedKeyCache,
    /// How long the opening's full repair took (`None`: none was needed).
    repaired: Option<Duration>,
}

/// How a file store is opened ([`RedbStorage::open_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// The page cache the store may fill, in bytes (default [`DEFAULT_CACHE_BYTES`]).
    pub cache_bytes: usize,
    /// Every commit also records redb's allocator state (and commits in two phases), so that
    /// opening the file after a crash is immediate. Off by default, because each commit then
    /// writes the state of every region of the file, a cost that grows with the file.
    ///
    /// Why it matters: a file its process did not close (a crash, a SIGKILL, a power loss)
    /// is repaired when it is opened next, and that repair reads the whole file to rebuild
    /// which pages are free; nothing is served until it is done. Measured on `serve` (the
    /// README's "Restarts"): a 6.4 GB file restarts in 0.05 s after a clean stop, and in
    /// 5.7–21 s after a SIGKILL with its pages mostly in the OS cache (longer from a cold disk);
    /// 0.05 s with this option, whose commits cost more the larger the file (single sends on
    /// that file ran at 0.74–0.78 × the default's rate).
    pub quick_repair: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { cache_bytes: DEFAULT_CACHE_BYTES, quick_repair: false }
    }
}

impl Options {
    /// These options with [`quick_repair`](Self::quick_repair) set to `on`.
    pub fn quick_repair(self, on: bool) -> Options {
        Options { quick_repair: on, ..self }
    }
}

/// Watches an opening's repair: says in the log that it runs and how far it is (it can take
/// minutes on a large file, with nothing served meanwhile, and an operator should see why),
/// and how long it took.
struct RepairWatch {
    file: String,
    state: Arc<Mutex<RepairState>>,
}

#[derive(Default)]
struct RepairState {
    began: Option<std::time::Instant>,
    /// The progress last logged, in tenths.
    logged: u8,
}

impl RepairWatch {
    fn new(path: &Path) -> RepairWatch {
        RepairWatch { file: path.display().to_string(), state: Arc::default() }
    }

    /// The callback redb calls while it repairs (at least once, so never when no repair runs).
    fn callback(&self) -> impl Fn(&mut redb::RepairSession) + 'static {
        let (file, state) = (self.file.clone(), Arc::clone(&self.state));
        move |session| {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            if s.began.is_none() {
                s.began = Some(std::time::Instant::now());
                tracing::warn!(
                    target: "mailroom::redb",
                    file = %file,
                    "the database was not closed cleanly (a crash?): repairing it, which reads the whole file"
                );
            }
            // (Progress is a fraction; a tenth is logged once.)
            let tenths = (session.progress().clamp(0.0, 1.0) * 10.0) as u8;
            if tenths > s.logged {
                s.logged = tenths;
                tracing::info!(target: "mailroom::redb", file = %file, "repairing: {}%", u32::from(tenths) * 10);
            }
        }
    }

    /// How long the repair took, logged; `None` when none ran.
    fn finished(&self) -> Option<Duration> {
        let took = self.state.lock().unwrap_or_else(|p| p.into_inner()).began.map(|b| b.elapsed());
        if let Some(t) = took {
            tracing::info!(target: "mailroom::redb", file = %self.file, seconds = t.as_secs_f64(), "repaired");
        }
        took
    }
}

/// Claims held by this process, by email id.
type Claims = Arc<Mutex<HashMap<u128, Claim>>>;

fn locked(claims: &Claims) -> std::sync::MutexGuard<'_, HashMap<u128, Claim>> {
    claims.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state as the shared rules see it: with this process's claim over it (while claimed,
/// due when the claim lapses), or none — a claim written by an older version of this store is
/// not this process's. Returns the due time the state has on disk.
fn overlay(claims: &HashMap<u128, Claim>, state: &mut EmailState) -> Option<DateTime<Utc>> {
    let on_disk = state.due_at;
    state.claim = claims.get(&state.id.as_u128()).copied();
    if let Some(c) = state.claim {
        state.due_at = Some(c.until);
    }
    on_disk
}

/// The state as it is written: no claim, and `due` on disk (a claim does not move it).
fn to_disk(state: &EmailState, due: Option<DateTime<Utc>>) -> StorageResult<Vec<u8>> {
    encode_state(state, None, due)
}

impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage").field("fsync", &self.fsync.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

/// How the writer has grouped writes so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitStats {
    /// Transactions committed (or aborted).
    pub commits: u64,
    /// Writes they held.
    pub writes: u64,
}

/// Why a store could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Another process holds the file (redb opens a file in one process at a time).
    InUse,
    /// Anything else.
    Failed(StorageError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::InUse => f.write_str("another process has the database open"),
            OpenError::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}

impl RedbStorage {
    /// Opens (or creates) the file at `path`, with durable commits.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStorage, StorageError> {
        Self::open_with(path, Options::default())
    }

    /// [`open`](Self::open), telling a file another process holds apart from other failures.
    pub fn try_open(path: impl AsRef<Path>) -> Result<RedbStorage, OpenError> {
        Self::try_open_with(path, Options::default())
    }

    /// [`try_open`](Self::try_open) with `options`.
    pub fn try_open_with(path: impl AsRef<Path>, options: Options) -> Result<RedbStorage, OpenError> {
        make_if_missing(path.as_ref()).map_err(OpenError::Failed)?;
        let watch = RepairWatch::new(path.as_ref());
        match Database::builder()
            .set_cache_size(options.cache_bytes)
            .set_repair_callback(watch.callback())
            .create(path.as_ref())
        {
            Ok(db) => Self::init(db, options, watch.finished()).map_err(OpenError::Failed),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(OpenError::InUse),
            Err(e) => Err(OpenError::Failed(backend(e))),
        }
    }

    /// [`open`](Self::open) with a page cache of `bytes`.
    pub fn open_with_cache(path: impl AsRef<Path>, bytes: usize) -> Result<RedbStorage, StorageError> {
        Self::open_with(path, Options { cache_bytes: bytes, ..Options::default() })
    }

    /// [`open`](Self::open) with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<RedbStorage, StorageError> {
        Self::try_open_with(path, options).map_err(|e| match e {
            OpenError::InUse => backend(redb::DatabaseError::DatabaseAlreadyOpen),
            OpenError::Failed(e) => e,
        })
    }

    /// A store on any redb storage backend (a host's own medium, or a test's counting and
    /// failing doubles around a real backend).
    pub fn with_backend(backend: impl StorageBackend) -> Result<RedbStorage, StorageError> {
        let db = Database::builder()
            .set_cache_size(DEFAULT_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(backend_err)?;
        Self::init(db, Options::default(), None)
    }

    /// A store whose redb database lives in memory (tests and fuzzing: the same code paths
    /// as a file, without the disk).
    pub fn in_memory() -> Result<RedbStorage, StorageError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).map_err(backend)?;
        Self::init(db, Options::default(), None)
    }

    /// The store over an opened `db`; `repaired`: how long the opening's full repair took.
    fn init(db: Database, options: Options, repaired: Option<Duration>) -> Result<RedbStorage, StorageError> {
        // A file written before the key table's expiry index existed gets it now.
        let indexed = optional_table(&db.begin_read().map_err(backend)?, idempotency::EXPIRY)?.map(drop);
        let mut tx = db.begin_write().map_err(backend)?;
        tx.set_quick_repair(options.quick_repair);
        {
            tx.open_table(EMAILS).map_err(backend)?;
            tx.open_table(STATES).map_err(backend)?;
            tx.open_table(DUE).map_err(backend)?;
            tx.open_table(IDEMPOTENCY).map_err(backend)?;
            tx.open_table(idempotency::RECENT).map_err(backend)?;
            if indexed.is_none() {
                idempotency::index_expiry(&tx)?;
            }
            tx.open_table(SUPPRESSIONS).map_err(backend)?;
            suppressions::ensure_indexed(&tx)?;
            index_request_logs(&tx)?;
        }
        tx.commit().map_err(backend)?;
        // The counter lives in memory (numbers are given by the one writer thread, in commit
        // order): a durable counter would cost a page per commit. At open it resumes after the
        // highest number in the file.
        let seq = events::last_number(&db)?;
        let slot_ids = idempotency::SlotKey::random();
        let keys = Arc::new(Mutex::new(idempotency::Keys::load(&db.begin_read().map_err(backend)?, &slot_ids)?));
        let db = Arc::new(RwLock::new(db));
        let fsync = Arc::new(AtomicBool::new(true));
        let settled = Arc::clone(&keys);
        let api_keys = extensions::SharedKeyCache::default();
        let api_keys_settled = Arc::clone(&api_keys);
        let settle = Box::new(move |committed| {
            settled.lock().unwrap_or_else(|p| p.into_inner()).settle(committed);
            api_keys_settled.lock().unwrap_or_else(|p| p.into_inner()).settle(committed);
        });
        let writer =
            Arc::new(writer::Writer::start(Arc::clone(&db), Arc::clone(&fsync), options.quick_repair, settle)?);
        Ok(RedbStorage {
            db,
            writer,
            fsync,
            keys,
            slot_ids,
            recent_limit: idempotency::DEFAULT_RECENT,
            claims: Arc::default(),
            log: Some(Arc::new(seq.into())),
            api_keys,
            repaired,
        })
    }

    /// How long opening the file took to repair it, when the process that wrote it last did
    /// not close it (a crash, a SIGKILL) and its last commit did not record the allocator
    /// state (see [`Options::quick_repair`]); `None` when no repair was needed.
    pub fn repaired_on_open(&self) -> Option<Duration> {
        self.repaired
    }

    /// How many transactions the writer committed, holding how many writes (group commit at
    /// work: fewer commits than writes under concurrency).
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.writer.stats.groups.load(Ordering::Relaxed),
            writes: self.writer.stats.writes.load(Ordering::Relaxed),
        }
    }

    /// Applies a reschedule or cancel (`change`) to one email of `account`, with its due index,
    /// in one write transaction.
    async fn mutate_scheduled(
        &self,
        account: &AccountId,
        id: EmailId,
        change: impl FnOnce(&mut EmailState) -> StorageResult<ScheduleChange> + Send + 'static,
    ) -> StorageResult<ScheduleChange> {
        let log = self.log.clone();
        let account = account.0.to_string();
        let claims = Arc::clone(&self.claims);
        self.write(move |tx| {
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let mut due = tx.open_table(DUE).map_err(backend)?;
            let key = id.as_u128();
            let Some(mut state) = get_state(&states, key)?.filter(|s| s.account.as_str() == account) else {
                return Ok(ScheduleChange::NotFound);
            };
            let old = overlay(&locked(&claims), &mut state);
            let before = state.events.len();
            let result = change(&mut state)?;
            if result == ScheduleChange::Applied {
                let bytes = to_disk(&state, state.due_at)?;
                set_due(&mut due, key, old, state.due_at)?;
                states.insert(key, bytes.as_slice()).map_err(backend)?;
                drop((states, due));
                log_pending(tx, log.as_deref(), gained(&state, before))?;
            }
            Ok(result)
        })
        .await
    }

    /// Rewrites the file to drop the space freed by deletions and pruning. Waits for running
    /// operations and holds all others off while it runs. Returns whether anything changed.
    pub async fn compact(&self) -> Result<bool, StorageError> {
        let db = Arc::clone(&self.db);
        // redb compacts only a file no transaction reads: the idempotency lookups' shared
        // snapshot goes first, and none is kept until the compaction is over.
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).forbid_snapshot();
        let compacted = tokio::task::spawn_blocking(move || {
            let mut db = db.write().map_err(backend)?;
            db.compact().map_err(backend)
        })
        .await
        .map_err(backend);
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).allow_snapshot();
        compacted?
    }

    /// Writes a consistent copy of the whole store to a new file at `path` while the store
    /// stays in use: every table is read in one read transaction (a snapshot: writes that
    /// commit meanwhile are not in the copy) and written to the new file, which is synced
    /// before this returns. Refuses to overwrite an existing file. Returns the rows copied.
    pub async fn backup(&self, path: impl AsRef<Path>) -> Result<u64, StorageError> {
        let path = path.as_ref().to_path_buf();
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let db = db.read().map_err(backend)?;
            let snapshot = db.begin_read().map_err(backend)?;
            if let Some(unknown) = snapshot
                .list_tables()
                .map_err(backend)?
                .map(|t| t.name().to_string())
                .find(|n| !TABLE_NAMES.contains(&n.as_str()))
            {
                return Err(StorageError::Backend(format!(
                    "the store holds a table this version does not know ({unknown}); use the version that wrote it"
                )));
            }
            // Never over an existing file (a backup over the live file would destroy it), and
            // never a half copy at the path: the copy is made beside it and linked into place
            // once committed (`create`, which looks for an existing file before copying).
            match create::create_beside(&path, |tmp| copy_into(&snapshot, tmp))? {
                create::Created::Linked(rows) => Ok(rows),
                create::Created::Existed => {
                    Err(StorageError::Backend(format!("cannot create {}: the file exists", path.display())))
                }
            }
        })
        .await
        .map_err(backend)?
    }

    /// Checks that the file at `path` is a store this version can open and read (a backup
    /// before it is restored): opens it, lists its tables and counts its emails.
    pub fn verify(path: impl AsRef<Path>) -> Result<u64, StorageError> {
        let db = Database::open(path.as_ref()).map_err(backend)?;
        let tx = db.begin_read().map_err(backend)?;
        for t in tx.list_tables().map_err(backend)? {
            if !TABLE_NAMES.contains(&t.name()) {
                return Err(StorageError::Backend(format!("unknown table {}", t.name())));
            }
        }
        let Some(states) = optional_table(&tx, STATES)? else {
            return Err(StorageError::Backend("not a mailroom store (no states table)".into()));
        };
        let mut n = 0;
        for item in states.iter().map_err(backend)? {
            let (_, v) = item.map_err(backend)?;
            decode_state(v.value())?;
            n += 1;
        }
        Ok(n)
    }

    /// A store that writes no event log and offers none (`event_log()` is `None`): for
    /// measuring what the log costs (the `ingest` benchmark), never for serving.
    #[doc(hidden)]
    pub fn without_event_log(mut self) -> Self {
        self.log = None;
        self
    }

    /// Commits without fsync. Faster, but a power loss (not a process crash) may lose the
    /// newest commits: only for hosts that accept that, and for tests.
    pub fn without_fsync(self) -> Self {
        self.fsync.store(false, Ordering::Relaxed);
        self
    }

    /// How many completed idempotency records the time-ordered log holds before its oldest
    /// move to the table ordered by key (default [`DEFAULT_RECENT_IDEMPOTENCY`]; the index in
    /// memory holds as many). Tests set it low to make the move happen.
    pub fn recent_idempotency_limit(mut self, records: usize) -> Self {
        self.recent_limit = records.max(1);
        self
    }

    /// Runs `f` in the writer's next group (see `writer`): `f` must make every check that can
    /// refuse before its first change.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        self.writer.write(f).await
    }

    /// A read on the calling thread, for point lookups (a few pages, almost always in the page
    /// cache): handing them to the blocking pool costs two thread switches, more than the
    /// lookup itself.
    fn read_now<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> StorageResult<T>) -> StorageResult<T> {
        let db = self.db.read().map_err(backend)?;
        let tx = db.begin_read().map_err(backend)?;
        f(&tx)
    }

    /// A read on the blocking pool, for scans.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let db = db.read().map_err(backend)?;
            let tx = db.begin_read().map_err(backend)?;
            f(&tx)
        })
        .await
        .map_err(backend)?
    }
}

/// Files written before the time index of request logs existed get it once, at open, so that
/// retention reaches their logs too.
fn index_request_logs(tx: &WriteTransaction) -> StorageResult<()> {
    let exists =
        |name: &str| -> StorageResult<bool> { Ok(tx.list_tables().map_err(backend)?.any(|t| t.name() == name)) };
    if exists("request_log_times_v1")? || !exists("request_logs_v1")? {
        return Ok(());
    }
    let logs = tx.open_table(LOGS).map_err(backend)?;
    let mut times = tx.open_table(LOG_TIMES).map_err(backend)?;
    for item in logs.iter().map_err(backend)? {
        let (k, _) = item.map_err(backend)?;
        let (account, id) = k.value();
        times.insert(id, account).map_err(backend)?;
    }
    Ok(())
}

/// Copies every row of `def` from `from` into `to`.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> StorageResult<u64> {
    let Some(src) = optional_table(from, def)? else { return Ok(0) };
    let mut dst = to.open_table(def).map_err(backend)?;
    let mut n = 0;
    for item in src.iter().map_err(backend)? {
        let (k, v) = item.map_err(backend)?;
        dst.insert(k.value(), v.value()).map_err(backend)?;
        n += 1;
    }
    Ok(n)
}

/// Every value of `account` in a table keyed by (account, name), in name order.
fn account_values<T: DeserializeOwned>(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    account: &str,
) -> StorageResult<Vec<T>> {
    account_values_with(table, account, decode)
}

/// [`account_values`], each value read by `read`.
fn account_values_with<T>(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    account: &str,
    read: impl Fn(&[u8]) -> StorageResult<T>,
) -> StorageResult<Vec<T>> {
    let mut out = Vec::new();
    each_account_value(table, account, |v| {
        out.push(read(v)?);
        Ok(())
    })?;
    Ok(out)
}

/// Calls `visit` with each value of `account`'s rows, in key order, keeping none of them.
fn each_account_value(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    account: &str,
    mut visit: impl FnMut(&[u8]) -> StorageResult<()>,
) -> StorageResult<()> {
    for item in table.range((account, "")..).map_err(backend)? {
        let (k, v) = item.map_err(backend)?;
        if k.value().0 != account {
            break;
        }
        visit(v.value())?;
    }
    Ok(())
}

/// A table of one of the extensions, read before anything was ever written to it: `None`
/// (the table does not exist yet), which every reader takes as "empty".
fn optional_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> StorageResult<Option<redb::ReadOnlyTable<K, V>>> {
    match tx.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(backend(e)),
    }
}

fn get_state(table: &impl ReadableTable<u128, &'static [u8]>, id: u128) -> StorageResult<Option<EmailState>> {
    table.get(id).map_err(backend)?.map(|v| decode_state(v.value())).transpose()
}

fn get_content(
    table: &impl ReadableTable<(&'static str, u128), &'static [u8]>,
    account: &str,
    id: u128,
) -> StorageResult<Option<EmailContent>> {
    table.get((account, id)).map_err(backend)?.map(|v| decode_content(v.value())).transpose()
}

pub(crate) fn get_idempotency(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    account: &str,
    key: &str,
) -> StorageResult<Option<IdempotencyRecord>> {
    table.get((account, key)).map_err(backend)?.map(|v| decode(v.value())).transpose()
}

fn set_due(
    due: &mut redb::Table<(i64, u128), ()>,
    id: u128,
    old: Option<DateTime<Utc>>,
    new: Option<DateTime<Utc>>,
) -> StorageResult<()> {
    if old == new {
        return Ok(());
    }
    if let Some(o) = old {
        due.remove((due_key(o), id)).map_err(backend)?;
    }
    if let Some(n) = new {
        due.insert((due_key(n), id), ()).map_err(backend)?;
    }
    Ok(())
}

/// Hand-over marks to write: each email's id and its state as written.
type Marks = Vec<(u128, Vec<u8>)>;

/// A due time, or none.
type Due = Option<DateTime<Utc>>;

/// The hand-over marks of `refs` as they are to be written, and the claims found lost;
/// nothing is written yet. `ending` are the claims whose outcomes the same write records
/// (before the marks): a claim one of them holds ends with its outcome, so its mark is lost,
/// exactly as if the marks were planned after the outcomes.
fn plan_handover(
    tx: &WriteTransaction,
    claims: &Claims,
    refs: &[ClaimRef],
    ending: &[ClaimRef],
) -> StorageResult<(Marks, Vec<EmailId>)> {
    let states = tx.open_table(STATES).map_err(backend)?;
    let held = locked(claims);
    let mut lost = Vec::new();
    let mut marks = Vec::with_capacity(refs.len());
    for c in refs {
        let id = c.id.as_u128();
        let Some(mut state) = get_state(&states, id)? else {
            lost.push(c.id);
            continue;
        };
        let on_disk = overlay(&held, &mut state);
        let ended = ending.iter().any(|e| e.id == c.id && state.claim.is_some_and(|h| h.token == e.token));
        if !ended && store::begin_handover(&mut state, c.token) {
            marks.push((id, to_disk(&state, on_disk)?));
        } else {
            lost.push(c.id);
        }
    }
    Ok((marks, lost))
}

/// Writes marks [`plan_handover`] made.
fn write_marks(tx: &WriteTransaction, marks: Marks) -> StorageResult<()> {
    let mut states = tx.open_table(STATES).map_err(backend)?;
    for (id, bytes) in marks {
        states.insert(id, bytes.as_slice()).map_err(backend)?;
    }
    Ok(())
}

/// The outcomes applied in `tx` (compute, then write: a transition the lifecycle refuses
/// returns before anything is written); the ones whose claim was lost are returned.
fn apply_outcomes(
    tx: &WriteTransaction,
    log: Option<&std::sync::atomic::AtomicU64>,
    claims: &Claims,
    outcomes: &[Outcome],
) -> StorageResult<Vec<EmailId>> {
    let mut states = tx.open_table(STATES).map_err(backend)?;
    let mut due = tx.open_table(DUE).map_err(backend)?;
    let mut held = locked(claims);
    let mut lost = Vec::new();
    // Every outcome is applied before anything is written: a transition the lifecycle
    // refuses returns here and the whole call changes nothing.
    let mut changed: Vec<(u128, Option<DateTime<Utc>>, EmailState)> = Vec::new();
    // The number of events each changed email had on disk.
    let mut before: HashMap<u128, usize> = HashMap::new();
    let mut suppressions = Vec::new();
    for o in outcomes {
        let id = o.claim.id.as_u128();
        // An email named twice in one call sees its first outcome.
        let at = changed.iter().position(|(c, _, _)| *c == id);
        let (current, on_disk) = match at {
            Some(i) => (Some(changed[i].2.clone()), changed[i].1),
            None => match get_state(&states, id)? {
                Some(mut s) => {
                    let d = overlay(&held, &mut s);
                    (Some(s), d)
                }
                None => (None, None),
            },
        };
        let Some(mut state) = current else {
            lost.push(o.claim.id);
            continue;
        };
        before.entry(id).or_insert(state.events.len());
        let old = on_disk;
        if !store::apply_outcome(&mut state, o)? {
            lost.push(o.claim.id);
            continue;
        }
        for s in &o.suppressions {
            suppressions.push((state.account.0.to_string(), s.clone(), encode(s)?));
        }
        match at {
            Some(i) => changed[i].2 = state,
            None => changed.push((id, old, state)),
        }
    }
    let mut pending = Vec::new();
    // (id, due on disk, due now, the state as written)
    let encoded: Vec<(u128, Due, Due, Vec<u8>)> = changed
        .into_iter()
        .map(|(id, old, state)| {
            pending.extend(gained(&state, before.get(&id).copied().unwrap_or(0)));
            Ok((id, old, state.due_at, to_disk(&state, state.due_at)?))
        })
        .collect::<StorageResult<_>>()?;
    for (id, old, new, bytes) in encoded {
        set_due(&mut due, id, old, new)?;
        states.insert(id, bytes.as_slice()).map_err(backend)?;
        // The outcome ends the claim (should this group fail to commit, the email is
        // due again and its durable hand-over mark sends it through recovery).
        held.remove(&id);
    }
    drop((states, due));
    // The list's three tables are opened only by the outcomes that list someone (few do).
    if !suppressions.is_empty() {
        let mut sup = suppressions::Tables::open(tx)?;
        for (account, entry, bytes) in suppressions {
            if sup.put(&account, &entry, &bytes)? {
                pending.push(added(&account, entry));
            }
        }
    }
    log_pending(tx, log, pending)?;
    Ok(lost)
}

#[async_trait]
impl Storage for RedbStorage {
    async fn idempotency_begin(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &Fingerprint,
        now: DateTime<Utc>,
        in_flight_until: DateTime<Utc>,
    ) -> StorageResult<IdempotencyBegin> {
        use idempotency::InFlight;
        let names = (&*account.0, key);
        // The marker is held in memory (no write, no fsync): this process holds the file, so
        // a marker dies exactly when the request it stands for can no longer complete. The
        // completed record is read and the marker set under one lock, so a completion (whose
        // record enters the index, under this lock, before its marker is dropped) is always
        // seen one way or the other.
        // What the read under the lock found: an answer, or the key taken (over a lapsed
        // record still in the file — in the recent log at this row, or in the key table — or
        // not).
        enum Begun {
            Answer(IdempotencyBegin),
            Taken { lapsed: bool, row: Option<u64> },
        }
        let slot = self.slot_ids.id(names.0, names.1);
        let begun = {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            let recent = keys.recent.get(&slot).copied();
            // The snapshot is taken after the index was read (see `idempotency`). A key the
            // index does not hold can only be in the key table, which the shared snapshot
            // shows as committed; while that table has held no row since the store opened,
            // there is nothing to read (the common case: a new key).
            let stored = match recent {
                Some(_) => self.read_now(|tx| idempotency::read_record(tx, names, recent.as_ref()))?,
                None if !keys.settled_rows => None,
                None => {
                    let db = self.db.read().map_err(backend)?;
                    idempotency::read_record(&*keys.key_table(&db)?, names, None)?
                }
            };
            // A stored record without a response is an older version's marker: dead.
            let done = stored.as_ref().filter(|r| r.response.is_some());
            match done.and_then(|r| r.meet(fingerprint, now)) {
                Some(found) => Begun::Answer(found),
                None => match keys.in_flight.get(&slot).filter(|m| m.until > now) {
                    Some(m) if m.fingerprint == *fingerprint => Begun::Answer(IdempotencyBegin::InFlight),
                    Some(_) => Begun::Answer(IdempotencyBegin::Mismatch),
                    None => {
                        keys.in_flight.insert(slot, InFlight { fingerprint: *fingerprint, until: in_flight_until });
                        Begun::Taken { lapsed: stored.is_some(), row: recent.map(|r| r.seq) }
                    }
                },
            }
        };
        let row = match begun {
            Begun::Answer(answer) => return Ok(answer),
            Begun::Taken { lapsed: false, .. } => return Ok(IdempotencyBegin::Started),
            Begun::Taken { lapsed: true, row } => row,
        };
        // The key is taken over from a lapsed record that no purge has removed yet. The record
        // goes now, as it does in every store where the marker overwrites it: otherwise a later
        // purge would count a record this request had already replaced, and one left behind by
        // a request that then released the key would answer for it. Rare (a key reused between
        // its expiry and the next purge), so the write it costs is paid rarely. Only a lapsed
        // record is removed: the holder's own completion, the only other writer of this key,
        // cannot have happened before this call returns.
        let keys = Arc::clone(&self.keys);
        let taken = (names.0.to_string(), names.1.to_string());
        let removed = self
            .write(move |tx| {
                // Both reads (which can find a corrupt record) before either removal: see the
                // writer's "compute, then write".
                let mut t = tx.open_table(IDEMPOTENCY).map_err(backend)?;
                let settled_lapsed =
                    get_idempotency(&t, &taken.0, &taken.1)?.filter(|r| r.expires_at <= now || r.response.is_none());
                if let Some(seq) = row {
                    idempotency::remove_lapsed(tx, &keys, slot, seq, now)?;
                }
                if let Some(lapsed) = settled_lapsed {
                    idempotency::forget_expiry(tx, (&taken.0, &taken.1), &lapsed)?;
                    t.remove((taken.0.as_str(), taken.1.as_str())).map_err(backend)?;
                    keys.lock().unwrap_or_else(|p| p.into_inner()).touch();
                }
                Ok(())
            })
            .await;
        if let Err(err) = removed {
            // This request fails and will not complete: the key is free for its retry.
            self.keys.lock().unwrap_or_else(|p| p.into_inner()).in_flight.remove(&slot);
            return Err(err);
        }
        Ok(IdempotencyBegin::Started)
    }

    async fn idempotency_release(&self, account: &AccountId, key: &str) -> StorageResult<()> {
        let slot = self.slot_ids.id(&account.0, key);
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).in_flight.remove(&slot);
        Ok(())
    }

    async fn insert_emails(
        &self,
        account: &AccountId,
        emails: Vec<NewEmail>,
        idempotency: Option<IdempotencyCompletion>,
    ) -> StorageResult<()> {
        let log = self.log.clone();
        let account = account.0.to_string();
        let slot = idempotency.as_ref().map(|c| self.slot_ids.id(&account, &c.key));
        // Encoded here, on the caller's thread: the writer thread only writes. Each email's
        // decoded content goes as soon as it is encoded (a large email is held once).
        let mut rows = Vec::with_capacity(emails.len());
        let mut pending = Vec::with_capacity(emails.len());
        for e in emails {
            let state = e.initial_state();
            if log.is_some() {
                pending.extend(gained(&state, 0));
            }
            rows.push((e.id.as_u128(), encode_content(&e.content)?, to_disk(&state, state.due_at)?, state.due_at));
        }
        let pending = events::encode_chunks(pending)?;
        let completed = idempotency
            .as_ref()
            .zip(slot)
            .map(|(c, slot)| {
                let record = IdempotencyRecord {
                    fingerprint: c.fingerprint,
                    created_at: c.created_at,
                    expires_at: c.expires_at,
                    response: Some(c.response.clone()),
                };
                idempotency::Completed::new(slot, account.clone(), c.key.clone(), record)
            })
            .transpose()?;
        let (keys, ids, limit) = (Arc::clone(&self.keys), self.slot_ids, self.recent_limit);
        let written = self
            .write(move |tx| {
                // First, the one check that can refuse (a live record of the key): see the
                // writer's "compute, then write".
                if let Some(done) = completed {
                    idempotency::append(tx, &keys, &ids, done, limit)?;
                }
                let mut contents = tx.open_table(EMAILS).map_err(backend)?;
                let mut states = tx.open_table(STATES).map_err(backend)?;
                let mut due = tx.open_table(DUE).map_err(backend)?;
                for (id, content, state, due_at) in rows {
                    contents.insert((account.as_str(), id), content.as_slice()).map_err(backend)?;
                    states.insert(id, state.as_slice()).map_err(backend)?;
                    set_due(&mut due, id, None, due_at)?;
                }
                drop((contents, states, due));
                events::log_chunks(tx, log.as_deref(), pending)?;
                Ok(())
            })
            .await;
        // The completed record is durable and in the index (or the insert failed, and the
        // engine releases the key): the marker goes either way.
        if let (Ok(()), Some(slot)) = (&written, slot) {
            self.keys.lock().unwrap_or_else(|p| p.into_inner()).in_flight.remove(&slot);
        }
        written
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> StorageResult<usize> {
        // Markers of requests that neither completed nor released (a handler that died with
        // its task) lapse here, uncounted: they are not records.
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).in_flight.retain(|_, m| m.until > now);
        let keys = Arc::clone(&self.keys);
        // The key table's lapsed records first, in steps (each its own write), then the log's
        // in one (the index in memory names them all; see `idempotency`).
        let mut expired = 0;
        loop {
            let keys = Arc::clone(&keys);
            let (removed, more) = self.write(move |tx| idempotency::purge_settled(tx, &keys, now)).await?;
            expired += removed;
            if !more {
                break;
            }
        }
        expired += self.write(move |tx| idempotency::purge_log(tx, &keys, now)).await?;
        Ok(expired)
    }

    async fn get_email(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<EmailRecord>> {
        let account = account.0.to_string();
        let claims = Arc::clone(&self.claims);
        self.read_now(move |tx| {
            let contents = tx.open_table(EMAILS).map_err(backend)?;
            let states = tx.open_table(STATES).map_err(backend)?;
            let Some(content) = get_content(&contents, &account, id.as_u128())? else { return Ok(None) };
            let mut state = get_state(&states, id.as_u128())?
                .ok_or_else(|| StorageError::Corrupt(format!("email {id} has content but no state")))?;
            overlay(&locked(&claims), &mut state);
            Ok(Some(EmailRecord { content, state }))
        })
    }

    async fn get_state(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<EmailState>> {
        let account = account.clone();
        let claims = Arc::clone(&self.claims);
        self.read_now(move |tx| {
            let states = tx.open_table(STATES).map_err(backend)?;
            let Some(mut state) = get_state(&states, id.as_u128())?.filter(|s| s.account == account) else {
                return Ok(None);
            };
            overlay(&locked(&claims), &mut state);
            Ok(Some(state))
        })
    }

    async fn email_facts(
        &self,
        account: &AccountId,
        ids: std::ops::Range<u128>,
        limit: usize,
        senders: bool,
    ) -> StorageResult<Vec<EmailFacts>> {
        let account = account.0.to_string();
        // One read of the range: the state's events of each email, and its content's `From`
        // when asked (decompressing the content is two thirds of the cost).
        self.read(move |tx| {
            let contents = tx.open_table(EMAILS).map_err(backend)?;
            let states = tx.open_table(STATES).map_err(backend)?;
            let a = account.as_str();
            let mut out = Vec::new();
            for item in contents.range((a, ids.start)..(a, ids.end)).map_err(backend)?.take(limit) {
                let (k, v) = item.map_err(backend)?;
                let id = k.value().1;
                let Some(state) = get_state(&states, id)? else { continue };
                let content = if senders { Some(decode_content(v.value())?) } else { None };
                out.push(EmailFacts::of(state, content.as_ref().map(|c| c.from.domain.as_str())));
            }
            Ok(out)
        })
        .await
    }

    async fn list_emails(&self, account: &AccountId, page: PageRequest) -> StorageResult<Page<EmailSummary>> {
        let account = account.0.to_string();
        let claims = Arc::clone(&self.claims);
        self.read(move |tx| {
            let contents = tx.open_table(EMAILS).map_err(backend)?;
            let states = tx.open_table(STATES).map_err(backend)?;
            let a = account.as_str();
            let take = page.limit + 1;
            let mut rows = Vec::with_capacity(take);
            let mut collect = |iter: &mut dyn Iterator<
                Item = Result<(redb::AccessGuard<'_, (&str, u128)>, redb::AccessGuard<'_, &[u8]>), redb::StorageError>,
            >|
             -> StorageResult<()> {
                for item in iter.take(take) {
                    let (k, v) = item.map_err(backend)?;
                    let id = k.value().1;
                    let content: EmailContent = decode_content(v.value())?;
                    rows.push((id, content));
                }
                Ok(())
            };
            let reversed = match page.cursor {
                Cursor::Start => {
                    collect(&mut contents.range((a, 0u128)..=(a, u128::MAX)).map_err(backend)?.rev())?;
                    false
                }
                Cursor::After(c) => {
                    collect(&mut contents.range((a, 0u128)..(a, c.as_u128())).map_err(backend)?.rev())?;
                    false
                }
                Cursor::Before(c) => {
                    let lo = c.as_u128().saturating_add(1);
                    if c.as_u128() < u128::MAX {
                        collect(&mut contents.range((a, lo)..=(a, u128::MAX)).map_err(backend)?)?;
                    }
                    true
                }
            };
            let has_more = rows.len() > page.limit;
            rows.truncate(page.limit);
            if reversed {
                rows.reverse();
            }
            let mut items = Vec::with_capacity(rows.len());
            for (id, content) in rows {
                let mut state = get_state(&states, id)?
                    .ok_or_else(|| StorageError::Corrupt(format!("email {id:x} has content but no state")))?;
                overlay(&locked(&claims), &mut state);
                items.push(EmailSummary::from(&EmailRecord { content, state }));
            }
            Ok(Page { items, has_more })
        })
        .await
    }

    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> StorageResult<Vec<ClaimedEmail>> {
        let log = self.log.clone();
        let claims = Arc::clone(&self.claims);
        // The claims are taken in the writer (so that a cancel or reschedule queued beside them
        // sees them, and they see it); only a `scheduled` email that becomes `queued` is written.
        let taken = self
            .write(move |tx| {
                let due = tx.open_table(DUE).map_err(backend)?;
                let mut states = tx.open_table(STATES).map_err(backend)?;
                let mut held = locked(&claims);
                // Candidates in order of when they are due: an unclaimed email at its place in
                // the index, a lapsed claim at the time it lapsed (the index keeps a claimed
                // email at its original time). Lapsed claims are few: they wait in a heap and
                // are merged into the index's order.
                let mut order: Vec<u128> = Vec::new();
                let mut lapsed: std::collections::BinaryHeap<std::cmp::Reverse<(i64, u128)>> = Default::default();
                let enough =
                    |order: &Vec<u128>, lapsed: &std::collections::BinaryHeap<_>| order.len() >= limit + lapsed.len();
                for item in due.range(..=(due_key(now), u128::MAX)).map_err(backend)? {
                    let (at, id) = item.map_err(backend)?.0.value();
                    match held.get(&id) {
                        Some(c) if c.until > now => continue,
                        Some(c) => lapsed.push(std::cmp::Reverse((due_key(c.until), id))),
                        None => {
                            while lapsed.peek().is_some_and(|std::cmp::Reverse(l)| *l < (at, id)) {
                                if let Some(std::cmp::Reverse((_, l))) = lapsed.pop() {
                                    order.push(l);
                                }
                            }
                            order.push(id);
                        }
                    }
                    if enough(&order, &lapsed) {
                        break;
                    }
                }
                while let Some(std::cmp::Reverse((_, l))) = lapsed.pop() {
                    order.push(l);
                }
                let mut out = Vec::new();
                let mut writes = Vec::new();
                let mut pending = Vec::new();
                for id in order {
                    if out.len() == limit {
                        break;
                    }
                    let Some(mut state) = get_state(&states, id)? else { continue };
                    let on_disk = overlay(&held, &mut state);
                    let events = state.events.len();
                    let token = rand_token();
                    if !store::claim(&mut state, now, lease, token)? {
                        continue;
                    }
                    if state.events.len() != events {
                        writes.push((id, to_disk(&state, on_disk)?));
                        pending.extend(gained(&state, events));
                    }
                    out.push((state, token));
                }
                drop(due);
                for (id, bytes) in writes {
                    states.insert(id, bytes.as_slice()).map_err(backend)?;
                }
                drop(states);
                log_pending(tx, log.as_deref(), pending)?;
                for (state, token) in &out {
                    if let Some(c) = state.claim.filter(|c| c.token == *token) {
                        held.insert(state.id.as_u128(), c);
                    }
                }
                Ok(out)
            })
            .await?;
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        // Content never changes after acceptance: it is read outside the writer.
        self.read_now(move |tx| {
            let contents = tx.open_table(EMAILS).map_err(backend)?;
            taken
                .into_iter()
                .map(|(state, token)| {
                    let id = state.id.as_u128();
                    let content = get_content(&contents, state.account.as_str(), id)?
                        .ok_or_else(|| StorageError::Corrupt(format!("email {id:x} has state but no content")))?;
                    Ok(ClaimedEmail { record: EmailRecord { content, state }, token })
                })
                .collect()
        })
    }

    async fn begin_handover(&self, claims: &[ClaimRef]) -> StorageResult<Vec<EmailId>> {
        let refs = claims.to_vec();
        let claims = Arc::clone(&self.claims);
        self.write(move |tx| {
            let (marks, lost) = plan_handover(tx, &claims, &refs, &[])?;
            write_marks(tx, marks)?;
            Ok(lost)
        })
        .await
    }

    async fn record_outcomes_then_begin_handover(
        &self,
        outcomes: Vec<Outcome>,
        claims: &[ClaimRef],
    ) -> StorageResult<(Vec<EmailId>, StorageResult<Vec<EmailId>>)> {
        // One write, so one commit: the next email's mark is durable with the outcome that
        // freed its permit (both or neither), and it waits for one commit instead of two.
        let refs = claims.to_vec();
        let log = self.log.clone();
        let claims = Arc::clone(&self.claims);
        self.write(move |tx| {
            // Compute, then write (the writer's rule for a write's atomicity): the marks are
            // planned first, reading only; the outcomes compute before their first change; the
            // marks' own writes can then fail only in the backend, which aborts the group. (An
            // email both finished and marked here is planned as its outcome leaves it.)
            let ending: Vec<ClaimRef> = outcomes.iter().map(|o| o.claim).collect();
            let (marks, lost) = plan_handover(tx, &claims, &refs, &ending)?;
            let refused = apply_outcomes(tx, log.as_deref(), &claims, &outcomes)?;
            write_marks(tx, marks)?;
            Ok((refused, Ok(lost)))
        })
        .await
    }

    async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> StorageResult<Vec<EmailId>> {
        let log = self.log.clone();
        let claims = Arc::clone(&self.claims);
        self.write(move |tx| apply_outcomes(tx, log.as_deref(), &claims, &outcomes)).await
    }

    async fn release_claims(&self, refs: &[ClaimRef], now: DateTime<Utc>) -> StorageResult<()> {
        let refs = refs.to_vec();
        let claims = Arc::clone(&self.claims);
        self.write(move |tx| {
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let mut due = tx.open_table(DUE).map_err(backend)?;
            let mut held = locked(&claims);
            let mut writes = Vec::new();
            for c in refs {
                let id = c.id.as_u128();
                let Some(mut state) = get_state(&states, id)? else { continue };
                let on_disk = overlay(&held, &mut state);
                if store::release(&mut state, c.token, now) {
                    writes.push((id, on_disk, state.due_at, to_disk(&state, state.due_at)?));
                }
            }
            for (id, old, new, bytes) in writes {
                set_due(&mut due, id, old, new)?;
                states.insert(id, bytes.as_slice()).map_err(backend)?;
                held.remove(&id);
            }
            Ok(())
        })
        .await
    }

    async fn next_due(&self) -> StorageResult<Option<DateTime<Utc>>> {
        let claims = Arc::clone(&self.claims);
        self.read_now(move |tx| {
            let due = tx.open_table(DUE).map_err(backend)?;
            let held = locked(&claims);
            // A claimed email is due when its claim lapses; the others when the index says.
            // Claimed ones are few and sort first (they were due when claimed).
            let mut earliest: Option<DateTime<Utc>> = None;
            for item in due.iter().map_err(backend)? {
                let (k, _) = item.map_err(backend)?;
                let (at, id) = k.value();
                let at = match held.get(&id) {
                    Some(c) => Some(c.until),
                    None => DateTime::from_timestamp_micros(at),
                };
                earliest = match (earliest, at) {
                    (Some(e), Some(a)) => Some(e.min(a)),
                    (e, a) => e.or(a),
                };
                if !held.contains_key(&id) {
                    break;
                }
            }
            Ok(earliest)
        })
    }

    async fn queue_stats(&self, now: DateTime<Utc>) -> StorageResult<Option<mailroom_core::ports::QueueStats>> {
        use redb::ReadableTableMetadata;
        self.read(move |tx| {
            let due = tx.open_table(DUE).map_err(backend)?;
            let waiting = due.len().map_err(backend)?;
            let oldest = due.first().map_err(backend)?.and_then(|(k, _)| DateTime::from_timestamp_micros(k.value().0));
            let cap = mailroom_core::ports::QueueStats::COUNT_CAP;
            let mut n = 0;
            for item in due.range(..=(due_key(now), u128::MAX)).map_err(backend)? {
                item.map_err(backend)?;
                n += 1;
                if n == cap {
                    break;
                }
            }
            Ok(Some(mailroom_core::ports::QueueStats::new(waiting, n, oldest)))
        })
        .await
    }

    fn api_keys(&self) -> Option<&dyn ApiKeyStore> {
        Some(self)
    }

    fn request_logs(&self) -> Option<&dyn RequestLogStore> {
        Some(self)
    }

    fn domains(&self) -> Option<&dyn DomainStore> {
        Some(self)
    }

    fn event_log(&self) -> Option<&dyn mailroom_core::ports::EventLog> {
        self.log.is_some().then_some(self as &dyn mailroom_core::ports::EventLog)
    }

    fn webhooks(&self) -> Option<&dyn mailroom_core::ports::WebhookStore> {
        Some(self)
    }

    fn received(&self) -> Option<&dyn mailroom_core::ports::ReceivedStore> {
        Some(self)
    }

    async fn change_schedule(&self, account: &AccountId, id: EmailId, op: ScheduleOp) -> StorageResult<ScheduleChange> {
        self.mutate_scheduled(account, id, move |state| Ok(store::change_schedule(state, op)?)).await
    }

    async fn append_events(
        &self,
        id: EmailId,
        events: Vec<Event>,
        suppressions: Vec<SuppressionEntry>,
    ) -> StorageResult<Option<AccountId>> {
        let log = self.log.clone();
        self.write(move |tx| {
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let Some(mut state) = get_state(&states, id.as_u128())? else { return Ok(None) };
            let before = state.events.len();
            for e in events {
                state.push(e)?;
            }
            let entries: Vec<(&SuppressionEntry, Vec<u8>)> =
                suppressions.iter().map(|s| Ok((s, encode(s)?))).collect::<StorageResult<_>>()?;
            let bytes = to_disk(&state, state.due_at)?;
            let mut pending = gained(&state, before);
            // Opens, clicks and delays list no one: the list's tables only for those that do.
            if !entries.is_empty() {
                let mut sup = suppressions::Tables::open(tx)?;
                for (entry, value) in entries {
                    if sup.put(state.account.as_str(), entry, &value)? {
                        pending.push(added(state.account.as_str(), entry.clone()));
                    }
                }
            }
            states.insert(id.as_u128(), bytes.as_slice()).map_err(backend)?;
            drop(states);
            log_pending(tx, log.as_deref(), pending)?;
            Ok(Some(state.account))
        })
        .await
    }

    async fn prune(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        let claims = Arc::clone(&self.claims);
        self.write(move |tx| {
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let mut contents = tx.open_table(EMAILS).map_err(backend)?;
            // Ids start with their creation millisecond: everything created before the cutoff
            // sorts below this id.
            let ms = u128::try_from(cutoff.timestamp_millis().max(0)).unwrap_or(0);
            let below = (ms & 0xffff_ffff_ffff) << 80;
            let mut picked = Vec::new();
            let held = locked(&claims);
            for item in states.range(..below).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let mut state = decode_state(v.value())?;
                overlay(&held, &mut state);
                if store::prunable(&state, cutoff) {
                    picked.push((k.value(), state));
                    if picked.len() == limit {
                        break;
                    }
                }
            }
            let mut writes = Vec::with_capacity(picked.len());
            for (id, mut state) in picked.iter().cloned() {
                let account = state.account.0.to_string();
                let Some(mut content) = get_content(&contents, &account, id)? else { continue };
                store::prune(&mut state, &mut content, cutoff, now);
                writes.push((account, id, encode_content(&content)?, to_disk(&state, state.due_at)?));
            }
            for (account, id, content, state) in writes {
                contents.insert((account.as_str(), id), content.as_slice()).map_err(backend)?;
                states.insert(id, state.as_slice()).map_err(backend)?;
            }
            Ok(picked.len())
        })
        .await
    }

    async fn suppression_add(&self, account: &AccountId, entry: SuppressionEntry) -> StorageResult<()> {
        let log = self.log.clone();
        let account = account.0.to_string();
        let value = encode(&entry)?;
        self.write(move |tx| {
            let mut t = suppressions::Tables::open(tx)?;
            let fresh = t.put(&account, &entry, &value)?;
            drop(t);
            if fresh {
                log_pending(tx, log.as_deref(), vec![added(&account, entry)])?;
            }
            Ok(())
        })
        .await
    }

    async fn suppression_add_if_absent(
        &self,
        account: &AccountId,
        entry: SuppressionEntry,
    ) -> StorageResult<SuppressionEntry> {
        let log = self.log.clone();
        let account = account.0.to_string();
        let value = encode(&entry)?;
        self.write(move |tx| {
            let mut t = suppressions::Tables::open(tx)?;
            if let Some(listed) = t.get(&account, &entry.address)? {
                return Ok(listed);
            }
            t.put(&account, &entry, &value)?;
            drop(t);
            log_pending(tx, log.as_deref(), vec![added(&account, entry.clone())])?;
            Ok(entry)
        })
        .await
    }

    async fn suppression_remove(&self, account: &AccountId, address: &str, at: DateTime<Utc>) -> StorageResult<bool> {
        let log = self.log.clone();
        let (account, address) = (account.0.to_string(), address.to_string());
        self.write(move |tx| {
            let mut t = suppressions::Tables::open(tx)?;
            let removed = t.remove(&account, &address)?;
            drop(t);
            let Some(entry) = removed else { return Ok(false) };
            log_pending(
                tx,
                log.as_deref(),
                vec![Pending { account: AccountId::new(&account), at, subject: Subject::SuppressionRemoved(entry) }],
            )?;
            Ok(true)
        })
        .await
    }

    async fn suppression_lookup(
        &self,
        account: &AccountId,
        addresses: &[String],
    ) -> StorageResult<Vec<SuppressionEntry>> {
        self.read_now(move |tx| {
            let t = tx.open_table(SUPPRESSIONS).map_err(backend)?;
            let mut out = Vec::new();
            for a in addresses {
                if let Some(v) = t.get((account.as_str(), a.as_str())).map_err(backend)? {
                    out.push(decode(v.value())?);
                }
            }
            Ok(out)
        })
    }

    async fn suppression_list(&self, account: &AccountId) -> StorageResult<Vec<SuppressionEntry>> {
        let account = account.0.to_string();
        self.read(move |tx| {
            let t = tx.open_table(SUPPRESSIONS).map_err(backend)?;
            account_values(&t, &account)
        })
        .await
    }

    // The unsubscribes' addresses come from the origin index, and only their entries are
    // decoded: the answer and the work are per unsubscribe, not per entry of the list.
    async fn suppression_unsubscribe_sources(&self, account: &AccountId) -> StorageResult<Vec<EmailId>> {
        let account = account.0.to_string();
        self.read(move |tx| {
            let origins = tx.open_table(suppressions::SUPPRESSION_ORIGINS).map_err(backend)?;
            let t = tx.open_table(SUPPRESSIONS).map_err(backend)?;
            let mut out = Vec::new();
            for address in
                suppressions::addresses_of_origin(&origins, &account, mailroom_core::suppressions::Origin::Unsubscribe)?
            {
                if let Some(v) = t.get((account.as_str(), address.as_str())).map_err(backend)? {
                    let e: SuppressionEntry = decode(v.value())?;
                    out.extend(e.unsubscribed_from());
                }
            }
            Ok(out)
        })
        .await
    }

    // Read from the cursor, which the id index names: only the entries the page needs are
    // read, nearest first (with an origin, through that origin's index).
    async fn suppression_page(
        &self,
        account: &AccountId,
        q: &mailroom_core::suppressions::PageQuery,
    ) -> StorageResult<Option<mailroom_core::email::Page<SuppressionEntry>>> {
        let (account, q) = (account.clone(), q.clone());
        self.read(move |tx| suppressions::page(tx, account.as_str(), &q)).await
    }

    async fn suppression_by_id(&self, account: &AccountId, id: &str) -> StorageResult<Option<SuppressionEntry>> {
        let (account, id) = (account.clone(), id.to_string());
        self.read(move |tx| {
            let ids = tx.open_table(suppressions::SUPPRESSION_IDS).map_err(backend)?;
            let Some(address) = suppressions::address_of(&ids, account.as_str(), &id)? else { return Ok(None) };
            let t = tx.open_table(SUPPRESSIONS).map_err(backend)?;
            t.get((account.as_str(), address.as_str())).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })
        .await
    }
}

/// The log entries for the events `state` gained beyond its first `before`.
fn gained(state: &EmailState, before: usize) -> Vec<Pending> {
    Pending::for_email(&state.account, state.id, state.events.get(before..).unwrap_or(&[])).collect()
}

/// The log entry for an address newly listed.
fn added(account: &str, entry: SuppressionEntry) -> Pending {
    Pending { account: AccountId::new(account), at: entry.created_at, subject: Subject::SuppressionAdded(entry) }
}

fn rand_token() -> u128 {
    // Claim tokens only need to differ between the claims of this process (claims live in its
    // memory and die with it): a random prefix drawn once and a counter, rather than a
    // system call for fresh randomness per claimed email.
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    (u128::from(prefix) << 64) | u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}
