//! # mailroom-redb
//!
//! mailroom's embedded default [`Storage`]: one redb file, one write transaction per atomic
//! operation, durable (fsync) commits. The file is the only source of truth: nothing is
//! cached across operations, so a restart sees exactly what was committed.
//!
//! Tables (all versioned by name, so a future layout can live beside this one):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `emails_v1` | (account, id) | content (JSON) — also the listing index: ids are UUIDv7, time-ordered |
//! | `states_v1` | id | events and delivery state (JSON) |
//! | `due_v1` | (due µs, id) | () — what the worker should look at, earliest first |
//! | `idempotency_v1` | (account, key) | record (JSON) |
//! | `suppressions_v1` | (account, address) | entry (JSON) |
#![warn(missing_docs)]

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailroom_core::email::{
    AccountId, Cursor, EmailContent, EmailId, EmailRecord, EmailState, EmailSummary, Event, NewEmail, Page, PageRequest,
};
use mailroom_core::error::StorageError;
use mailroom_core::idempotency::{Fingerprint, IdempotencyRecord};
use mailroom_core::ports::{
    ApiKeyRecord, ApiKeyStore, ClaimRef, ClaimedEmail, DomainRecord, DomainStore, IdempotencyBegin,
    IdempotencyCompletion, LogFilter, Outcome, RequestLog, RequestLogStore, ScheduleChange, Storage, StorageResult,
    SuppressionEntry,
};
use mailroom_core::store::{self, due_key};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::{Arc, RwLock};
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
const TABLE_NAMES: [&str; 9] = [
    "emails_v1",
    "states_v1",
    "due_v1",
    "idempotency_v1",
    "suppressions_v1",
    "api_keys_v1",
    "request_logs_v1",
    "domains_v1",
    "request_log_times_v1",
];

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

/// The first byte of every stored value: its encoding's version. Version 1 is postcard, a
/// compact binary serde format without field names (bodies are stored as they are, not
/// escaped as JSON would). A later layout gets a new version and a decoder beside this one.
const FORMAT_V1: u8 = 1;
/// Email content from the version that added `api_key_id` (an `Option`, last): a version-1
/// content record reads as version 2 with postcard's `None` (one zero byte) appended.
const CONTENT_V2: u8 = 2;

fn encode_content(c: &EmailContent) -> StorageResult<Vec<u8>> {
    // Sized up front: a 40 MB attachment must not be copied through a doubling buffer.
    let hint = c.attachments.iter().map(|a| a.content.len() + 256).sum::<usize>()
        + c.html.as_ref().map_or(0, String::len)
        + c.text.as_ref().map_or(0, String::len)
        + 4096;
    let mut out = Vec::with_capacity(hint);
    out.push(CONTENT_V2);
    postcard::to_io(c, &mut out).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(out)
}

fn decode_content(bytes: &[u8]) -> StorageResult<EmailContent> {
    let corrupt = |e: postcard::Error| StorageError::Corrupt(e.to_string());
    match bytes.split_first() {
        Some((&CONTENT_V2, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&FORMAT_V1, rest)) => {
            let mut v2 = rest.to_vec();
            v2.push(0);
            postcard::from_bytes(&v2).map_err(corrupt)
        }
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown content format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

/// API keys from the version that added `managed` (a bool, last): a version-1 key record reads
/// as version 2 with postcard's `false` (one zero byte) appended.
const KEY_V2: u8 = 2;

fn encode_key(account: &str, key: &ApiKeyRecord) -> StorageResult<Vec<u8>> {
    let mut out = vec![KEY_V2];
    postcard::to_io(&(account, key), &mut out).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(out)
}

fn decode_key(bytes: &[u8]) -> StorageResult<(String, ApiKeyRecord)> {
    let corrupt = |e: postcard::Error| StorageError::Corrupt(e.to_string());
    match bytes.split_first() {
        Some((&KEY_V2, rest)) => postcard::from_bytes(rest).map_err(corrupt),
        Some((&FORMAT_V1, rest)) => {
            let mut v2 = rest.to_vec();
            v2.push(0);
            postcard::from_bytes(&v2).map_err(corrupt)
        }
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown key format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

fn encode<T: Serialize>(v: &T) -> StorageResult<Vec<u8>> {
    let mut out = vec![FORMAT_V1];
    postcard::to_io(v, &mut out).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> StorageResult<T> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => postcard::from_bytes(rest).map_err(|e| StorageError::Corrupt(e.to_string())),
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown record format {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
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
    durability: Durability,
}

impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage").field("durability", &self.durability).finish_non_exhaustive()
    }
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
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`open`](Self::open), telling a file another process holds apart from other failures.
    pub fn try_open(path: impl AsRef<Path>) -> Result<RedbStorage, OpenError> {
        match Database::builder().set_cache_size(DEFAULT_CACHE_BYTES).create(path.as_ref()) {
            Ok(db) => Self::init(db).map_err(OpenError::Failed),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(OpenError::InUse),
            Err(e) => Err(OpenError::Failed(backend(e))),
        }
    }

    /// [`open`](Self::open) with a page cache of `bytes`.
    pub fn open_with_cache(path: impl AsRef<Path>, bytes: usize) -> Result<RedbStorage, StorageError> {
        let db = Database::builder().set_cache_size(bytes).create(path.as_ref()).map_err(backend)?;
        Self::init(db)
    }

    /// A store whose redb database lives in memory (tests and fuzzing: the same code paths
    /// as a file, without the disk).
    pub fn in_memory() -> Result<RedbStorage, StorageError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).map_err(backend)?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<RedbStorage, StorageError> {
        let tx = db.begin_write().map_err(backend)?;
        {
            tx.open_table(EMAILS).map_err(backend)?;
            tx.open_table(STATES).map_err(backend)?;
            tx.open_table(DUE).map_err(backend)?;
            tx.open_table(IDEMPOTENCY).map_err(backend)?;
            tx.open_table(SUPPRESSIONS).map_err(backend)?;
            index_request_logs(&tx)?;
        }
        tx.commit().map_err(backend)?;
        Ok(RedbStorage { db: Arc::new(RwLock::new(db)), durability: Durability::Immediate })
    }

    /// Applies a reschedule or cancel (`change`) to one email of `account`, with its due index,
    /// in one write transaction.
    async fn change_schedule(
        &self,
        account: &AccountId,
        id: EmailId,
        change: impl FnOnce(&mut EmailState) -> StorageResult<ScheduleChange> + Send + 'static,
    ) -> StorageResult<ScheduleChange> {
        let account = account.0.to_string();
        self.write(move |tx| {
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let mut due = tx.open_table(DUE).map_err(backend)?;
            let key = id.as_u128();
            let Some(mut state) = get_state(&states, key)?.filter(|s| s.account.as_str() == account) else {
                return Ok(ScheduleChange::NotFound);
            };
            let old = state.due_at;
            let result = change(&mut state)?;
            if result == ScheduleChange::Applied {
                set_due(&mut due, key, old, state.due_at)?;
                states.insert(key, encode(&state)?.as_slice()).map_err(backend)?;
            }
            Ok(result)
        })
        .await
    }

    /// Rewrites the file to drop the space freed by deletions and pruning. Waits for running
    /// operations and holds all others off while it runs. Returns whether anything changed.
    pub async fn compact(&self) -> Result<bool, StorageError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let mut db = db.write().map_err(backend)?;
            db.compact().map_err(backend)
        })
        .await
        .map_err(backend)?
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
            // create_new: never overwrite (a backup over the live file would destroy it).
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| StorageError::Backend(format!("cannot create {}: {e}", path.display())))?;
            let file = redb::backends::FileBackend::new(file).map_err(backend)?;
            let copy = Database::builder().create_with_backend(file).map_err(backend)?;
            let tx = copy.begin_write().map_err(backend)?;
            let mut rows = 0;
            rows += copy_table(&snapshot, &tx, EMAILS)?;
            rows += copy_table(&snapshot, &tx, STATES)?;
            rows += copy_table(&snapshot, &tx, DUE)?;
            rows += copy_table(&snapshot, &tx, IDEMPOTENCY)?;
            rows += copy_table(&snapshot, &tx, SUPPRESSIONS)?;
            rows += copy_table(&snapshot, &tx, API_KEYS)?;
            rows += copy_table(&snapshot, &tx, LOGS)?;
            rows += copy_table(&snapshot, &tx, DOMAINS)?;
            rows += copy_table(&snapshot, &tx, LOG_TIMES)?;
            tx.commit().map_err(backend)?;
            Ok(rows)
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
            decode::<EmailState>(v.value())?;
            n += 1;
        }
        Ok(n)
    }

    /// Commits without fsync. Faster, but a power loss (not a process crash) may lose the
    /// newest commits: only for hosts that accept that, and for tests.
    pub fn without_fsync(mut self) -> Self {
        self.durability = Durability::None;
        self
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> StorageResult<T> + Send + 'static,
    ) -> StorageResult<T> {
        let db = Arc::clone(&self.db);
        let durability = self.durability;
        // redb is blocking (and fsyncs): keep it off the async runtime's threads.
        tokio::task::spawn_blocking(move || {
            let db = db.read().map_err(backend)?;
            let mut tx = db.begin_write().map_err(backend)?;
            tx.set_durability(durability).map_err(backend)?;
            // On error the transaction is dropped, which aborts it: nothing is half-written.
            let out = f(&tx)?;
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
        .map_err(backend)?
    }

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
    let mut out = Vec::new();
    for item in table.range((account, "")..).map_err(backend)? {
        let (k, v) = item.map_err(backend)?;
        if k.value().0 != account {
            break;
        }
        out.push(decode(v.value())?);
    }
    Ok(out)
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
    table.get(id).map_err(backend)?.map(|v| decode(v.value())).transpose()
}

fn get_content(
    table: &impl ReadableTable<(&'static str, u128), &'static [u8]>,
    account: &str,
    id: u128,
) -> StorageResult<Option<EmailContent>> {
    table.get((account, id)).map_err(backend)?.map(|v| decode_content(v.value())).transpose()
}

fn get_idempotency(
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
        let (account, key, fingerprint) = (account.0.to_string(), key.to_string(), *fingerprint);
        self.write(move |tx| {
            let mut t = tx.open_table(IDEMPOTENCY).map_err(backend)?;
            let existing = get_idempotency(&t, &account, &key)?;
            if let Some(found) = existing.and_then(|r| r.meet(&fingerprint, now)) {
                return Ok(found);
            }
            let rec = IdempotencyRecord { fingerprint, created_at: now, expires_at: in_flight_until, response: None };
            t.insert((account.as_str(), key.as_str()), encode(&rec)?.as_slice()).map_err(backend)?;
            Ok(IdempotencyBegin::Started)
        })
        .await
    }

    async fn idempotency_release(&self, account: &AccountId, key: &str) -> StorageResult<()> {
        let (account, key) = (account.0.to_string(), key.to_string());
        self.write(move |tx| {
            let mut t = tx.open_table(IDEMPOTENCY).map_err(backend)?;
            let existing = get_idempotency(&t, &account, &key)?;
            if existing.is_some_and(|r| r.response.is_none()) {
                t.remove((account.as_str(), key.as_str())).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn insert_emails(
        &self,
        account: &AccountId,
        emails: Vec<NewEmail>,
        idempotency: Option<IdempotencyCompletion>,
    ) -> StorageResult<()> {
        let account = account.0.to_string();
        self.write(move |tx| {
            if let Some(c) = &idempotency {
                let t = tx.open_table(IDEMPOTENCY).map_err(backend)?;
                let existing = get_idempotency(&t, &account, &c.key)?;
                store::may_complete(existing.as_ref(), c.created_at)?;
            }
            {
                let mut contents = tx.open_table(EMAILS).map_err(backend)?;
                let mut states = tx.open_table(STATES).map_err(backend)?;
                let mut due = tx.open_table(DUE).map_err(backend)?;
                for e in emails {
                    let id = e.id.as_u128();
                    let state = e.initial_state();
                    let bytes = encode_content(&e.content)?;
                    // The decoded content goes before redb copies the bytes into its pages: a
                    // large email is never held three times.
                    drop(e);
                    contents.insert((account.as_str(), id), bytes.as_slice()).map_err(backend)?;
                    drop(bytes);
                    states.insert(id, encode(&state)?.as_slice()).map_err(backend)?;
                    set_due(&mut due, id, None, state.due_at)?;
                }
            }
            if let Some(c) = idempotency {
                let mut t = tx.open_table(IDEMPOTENCY).map_err(backend)?;
                let rec = IdempotencyRecord {
                    fingerprint: c.fingerprint,
                    created_at: c.created_at,
                    expires_at: c.expires_at,
                    response: Some(c.response),
                };
                t.insert((account.as_str(), c.key.as_str()), encode(&rec)?.as_slice()).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> StorageResult<usize> {
        self.write(move |tx| {
            let mut t = tx.open_table(IDEMPOTENCY).map_err(backend)?;
            let mut removed = 0;
            let mut corrupt = None;
            t.retain(|_, v| match decode::<IdempotencyRecord>(v) {
                Ok(r) if r.expires_at <= now => {
                    removed += 1;
                    false
                }
                Ok(_) => true,
                Err(e) => {
                    corrupt = Some(e.to_string());
                    true
                }
            })
            .map_err(backend)?;
            match corrupt {
                Some(e) => Err(StorageError::Corrupt(e)),
                None => Ok(removed),
            }
        })
        .await
    }

    async fn get_email(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<EmailRecord>> {
        let account = account.0.to_string();
        self.read(move |tx| {
            let contents = tx.open_table(EMAILS).map_err(backend)?;
            let states = tx.open_table(STATES).map_err(backend)?;
            let Some(content) = get_content(&contents, &account, id.as_u128())? else { return Ok(None) };
            let state = get_state(&states, id.as_u128())?
                .ok_or_else(|| StorageError::Corrupt(format!("email {id} has content but no state")))?;
            Ok(Some(EmailRecord { content, state }))
        })
        .await
    }

    async fn list_emails(&self, account: &AccountId, page: PageRequest) -> StorageResult<Page<EmailSummary>> {
        let account = account.0.to_string();
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
                let state = get_state(&states, id)?
                    .ok_or_else(|| StorageError::Corrupt(format!("email {id:x} has content but no state")))?;
                items.push(EmailSummary::from(&EmailRecord { content, state }));
            }
            Ok(Page { items, has_more })
        })
        .await
    }

    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> StorageResult<Vec<ClaimedEmail>> {
        self.write(move |tx| {
            let mut due = tx.open_table(DUE).map_err(backend)?;
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let contents = tx.open_table(EMAILS).map_err(backend)?;
            let candidates: Vec<u128> = due
                .range(..=(due_key(now), u128::MAX))
                .map_err(backend)?
                .take(limit)
                .map(|r| r.map(|(k, _)| k.value().1).map_err(backend))
                .collect::<StorageResult<_>>()?;
            let mut out = Vec::with_capacity(candidates.len());
            for id in candidates {
                let Some(mut state) = get_state(&states, id)? else { continue };
                let old = state.due_at;
                let token = rand_token();
                if !store::claim(&mut state, now, lease, token)? {
                    continue;
                }
                set_due(&mut due, id, old, state.due_at)?;
                states.insert(id, encode(&state)?.as_slice()).map_err(backend)?;
                let content = get_content(&contents, state.account.as_str(), id)?
                    .ok_or_else(|| StorageError::Corrupt(format!("email {id:x} has state but no content")))?;
                out.push(ClaimedEmail { record: EmailRecord { content, state }, token });
            }
            Ok(out)
        })
        .await
    }

    async fn begin_handover(&self, claims: &[ClaimRef]) -> StorageResult<Vec<EmailId>> {
        let claims = claims.to_vec();
        self.write(move |tx| {
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let mut lost = Vec::new();
            for c in claims {
                let id = c.id.as_u128();
                let mut state = get_state(&states, id)?;
                let marked = state.as_mut().is_some_and(|s| store::begin_handover(s, c.token));
                match state {
                    Some(s) if marked => {
                        states.insert(id, encode(&s)?.as_slice()).map_err(backend)?;
                    }
                    _ => lost.push(c.id),
                }
            }
            Ok(lost)
        })
        .await
    }

    async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> StorageResult<Vec<EmailId>> {
        self.write(move |tx| {
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let mut due = tx.open_table(DUE).map_err(backend)?;
            let mut sup = tx.open_table(SUPPRESSIONS).map_err(backend)?;
            let mut lost = Vec::new();
            for o in &outcomes {
                let id = o.claim.id.as_u128();
                let Some(mut state) = get_state(&states, id)? else {
                    lost.push(o.claim.id);
                    continue;
                };
                let old = state.due_at;
                // A transition error returns early, dropping (aborting) the whole transaction.
                if !store::apply_outcome(&mut state, o)? {
                    lost.push(o.claim.id);
                    continue;
                }
                set_due(&mut due, id, old, state.due_at)?;
                states.insert(id, encode(&state)?.as_slice()).map_err(backend)?;
                for s in &o.suppressions {
                    sup.insert((state.account.as_str(), s.address.as_str()), encode(s)?.as_slice()).map_err(backend)?;
                }
            }
            Ok(lost)
        })
        .await
    }

    async fn release_claims(&self, claims: &[ClaimRef], now: DateTime<Utc>) -> StorageResult<()> {
        let claims = claims.to_vec();
        self.write(move |tx| {
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let mut due = tx.open_table(DUE).map_err(backend)?;
            for c in claims {
                let id = c.id.as_u128();
                let Some(mut state) = get_state(&states, id)? else { continue };
                let old = state.due_at;
                if store::release(&mut state, c.token, now) {
                    set_due(&mut due, id, old, state.due_at)?;
                    states.insert(id, encode(&state)?.as_slice()).map_err(backend)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn next_due(&self) -> StorageResult<Option<DateTime<Utc>>> {
        self.read(move |tx| {
            let due = tx.open_table(DUE).map_err(backend)?;
            let first = due.first().map_err(backend)?;
            Ok(first.and_then(|(k, _)| DateTime::from_timestamp_micros(k.value().0)))
        })
        .await
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

    async fn reschedule(&self, account: &AccountId, id: EmailId, at: DateTime<Utc>) -> StorageResult<ScheduleChange> {
        self.change_schedule(account, id, move |state| Ok(store::reschedule(state, at))).await
    }

    async fn cancel(&self, account: &AccountId, id: EmailId, now: DateTime<Utc>) -> StorageResult<ScheduleChange> {
        self.change_schedule(account, id, move |state| Ok(store::cancel(state, now)?)).await
    }

    async fn append_events(
        &self,
        id: EmailId,
        events: Vec<Event>,
        suppressions: Vec<SuppressionEntry>,
    ) -> StorageResult<Option<AccountId>> {
        self.write(move |tx| {
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let mut sup = tx.open_table(SUPPRESSIONS).map_err(backend)?;
            let Some(mut state) = get_state(&states, id.as_u128())? else { return Ok(None) };
            for e in events {
                state.push(e)?;
            }
            for s in &suppressions {
                sup.insert((state.account.as_str(), s.address.as_str()), encode(s)?.as_slice()).map_err(backend)?;
            }
            states.insert(id.as_u128(), encode(&state)?.as_slice()).map_err(backend)?;
            Ok(Some(state.account))
        })
        .await
    }

    async fn prune(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        self.write(move |tx| {
            let mut states = tx.open_table(STATES).map_err(backend)?;
            let mut contents = tx.open_table(EMAILS).map_err(backend)?;
            // Ids start with their creation millisecond: everything created before the cutoff
            // sorts below this id.
            let ms = u128::try_from(cutoff.timestamp_millis().max(0)).unwrap_or(0);
            let below = (ms & 0xffff_ffff_ffff) << 80;
            let mut picked = Vec::new();
            for item in states.range(..below).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let state: EmailState = decode(v.value())?;
                if store::prunable(&state, cutoff) {
                    picked.push((k.value(), state));
                    if picked.len() == limit {
                        break;
                    }
                }
            }
            for (id, mut state) in picked.iter().cloned() {
                let account = state.account.0.to_string();
                let Some(mut content) = get_content(&contents, &account, id)? else { continue };
                store::prune(&mut state, &mut content, cutoff, now);
                contents.insert((account.as_str(), id), encode_content(&content)?.as_slice()).map_err(backend)?;
                states.insert(id, encode(&state)?.as_slice()).map_err(backend)?;
            }
            Ok(picked.len())
        })
        .await
    }

    async fn suppression_add(&self, account: &AccountId, entry: SuppressionEntry) -> StorageResult<()> {
        let account = account.0.to_string();
        self.write(move |tx| {
            let mut t = tx.open_table(SUPPRESSIONS).map_err(backend)?;
            t.insert((account.as_str(), entry.address.as_str()), encode(&entry)?.as_slice()).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn suppression_remove(&self, account: &AccountId, address: &str) -> StorageResult<bool> {
        let (account, address) = (account.0.to_string(), address.to_string());
        self.write(move |tx| {
            let mut t = tx.open_table(SUPPRESSIONS).map_err(backend)?;
            Ok(t.remove((account.as_str(), address.as_str())).map_err(backend)?.is_some())
        })
        .await
    }

    async fn suppression_lookup(
        &self,
        account: &AccountId,
        addresses: &[String],
    ) -> StorageResult<Vec<SuppressionEntry>> {
        let (account, addresses) = (account.0.to_string(), addresses.to_vec());
        self.read(move |tx| {
            let t = tx.open_table(SUPPRESSIONS).map_err(backend)?;
            let mut out = Vec::new();
            for a in &addresses {
                if let Some(v) = t.get((account.as_str(), a.as_str())).map_err(backend)? {
                    out.push(decode(v.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn suppression_list(&self, account: &AccountId) -> StorageResult<Vec<SuppressionEntry>> {
        let account = account.0.to_string();
        self.read(move |tx| {
            let t = tx.open_table(SUPPRESSIONS).map_err(backend)?;
            account_values(&t, &account)
        })
        .await
    }
}

#[async_trait]
impl ApiKeyStore for RedbStorage {
    async fn key_insert(&self, account: &AccountId, key: ApiKeyRecord) -> StorageResult<()> {
        let value = encode_key(&account.0, &key)?;
        self.write(move |tx| {
            let mut t = tx.open_table(API_KEYS).map_err(backend)?;
            if t.get(key.token_sha256.as_slice()).map_err(backend)?.is_none() {
                t.insert(key.token_sha256.as_slice(), value.as_slice()).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn key_put(&self, account: &AccountId, key: ApiKeyRecord) -> StorageResult<()> {
        let value = encode_key(&account.0, &key)?;
        self.write(move |tx| {
            let mut t = tx.open_table(API_KEYS).map_err(backend)?;
            t.insert(key.token_sha256.as_slice(), value.as_slice()).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn key_all(&self) -> StorageResult<Vec<(AccountId, ApiKeyRecord)>> {
        self.read(move |tx| {
            let Some(t) = optional_table(tx, API_KEYS)? else { return Ok(vec![]) };
            let mut out = Vec::new();
            for item in t.iter().map_err(backend)? {
                let (_, v) = item.map_err(backend)?;
                let (a, key) = decode_key(v.value())?;
                out.push((AccountId::new(&a), key));
            }
            Ok(out)
        })
        .await
    }

    async fn key_by_hash(&self, sha256: &[u8; 32]) -> StorageResult<Option<(AccountId, ApiKeyRecord)>> {
        let h = *sha256;
        self.read(move |tx| {
            let Some(t) = optional_table(tx, API_KEYS)? else { return Ok(None) };
            match t.get(h.as_slice()).map_err(backend)? {
                Some(v) => {
                    let (account, key) = decode_key(v.value())?;
                    Ok(Some((AccountId::new(&account), key)))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn key_list(&self, account: &AccountId) -> StorageResult<Vec<ApiKeyRecord>> {
        let mut out: Vec<ApiKeyRecord> =
            self.key_all().await?.into_iter().filter(|(a, _)| a == account).map(|(_, k)| k).collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn key_revoke(&self, account: &AccountId, id: &str, at: DateTime<Utc>) -> StorageResult<bool> {
        let (account, id) = (account.0.to_string(), id.to_string());
        self.write(move |tx| {
            let mut t = tx.open_table(API_KEYS).map_err(backend)?;
            let mut found = None;
            for item in t.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let (a, key) = decode_key(v.value())?;
                if a == account && key.id == id {
                    found = Some((k.value().to_vec(), a, key));
                    break;
                }
            }
            let Some((hash, a, mut key)) = found else { return Ok(false) };
            key.revoked_at.get_or_insert(at);
            t.insert(hash.as_slice(), encode_key(&a, &key)?.as_slice()).map_err(backend)?;
            Ok(true)
        })
        .await
    }
}

#[async_trait]
impl RequestLogStore for RedbStorage {
    async fn log_append(&self, account: &AccountId, log: RequestLog) -> StorageResult<()> {
        let (account, value) = (account.0.to_string(), encode(&log)?);
        self.write(move |tx| {
            let mut t = tx.open_table(LOGS).map_err(backend)?;
            t.insert((account.as_str(), log.id), value.as_slice()).map_err(backend)?;
            tx.open_table(LOG_TIMES).map_err(backend)?.insert(log.id, account.as_str()).map_err(backend)?;
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
}

#[async_trait]
impl DomainStore for RedbStorage {
    async fn domain_put(&self, account: &AccountId, domain: DomainRecord) -> StorageResult<()> {
        let (account, value) = (account.0.to_string(), encode(&domain)?);
        self.write(move |tx| {
            let mut t = tx.open_table(DOMAINS).map_err(backend)?;
            t.insert((account.as_str(), domain.name.as_str()), value.as_slice()).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn domain_get(&self, account: &AccountId, name: &str) -> StorageResult<Option<DomainRecord>> {
        let (account, name) = (account.0.to_string(), name.to_string());
        self.read(move |tx| {
            let Some(t) = optional_table(tx, DOMAINS)? else { return Ok(None) };
            t.get((account.as_str(), name.as_str())).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })
        .await
    }

    async fn domain_list(&self, account: &AccountId) -> StorageResult<Vec<DomainRecord>> {
        let account = account.0.to_string();
        self.read(move |tx| {
            let Some(t) = optional_table(tx, DOMAINS)? else { return Ok(vec![]) };
            account_values(&t, &account)
        })
        .await
    }
}

fn rand_token() -> u128 {
    // Claim tokens only need to differ between claims; uuid's v4 generator is already a
    // dependency and uses the OS's randomness.
    uuid::Uuid::new_v4().as_u128()
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn content_written_before_api_key_ids_still_reads() {
        let mut new = mailroom_core::testkit::new_email("a", mailroom_core::testkit::t0(), 1, None);
        let v2 = encode_content(&new.content).unwrap_or_default();
        // A version-1 record is the same bytes without the trailing `None`.
        assert_eq!(v2.last(), Some(&0));
        let mut v1 = v2[..v2.len() - 1].to_vec();
        v1[0] = FORMAT_V1;
        assert_eq!(decode_content(&v1).ok(), Some(new.content.clone()));
        new.content.api_key_id = Some("key-1".into());
        let with_key = encode_content(&new.content).unwrap_or_default();
        assert_eq!(decode_content(&with_key).ok(), Some(new.content));
        assert!(decode_content(&[9, 0]).is_err());
    }

    #[test]
    fn keys_written_before_the_managed_flag_still_read() {
        let key = ApiKeyRecord::new(
            "k",
            "ops",
            [5; 32],
            mailroom_core::ports::KeyPermission::FullAccess,
            mailroom_core::testkit::t0(),
        );
        let v2 = encode_key("acct", &key).unwrap_or_default();
        assert_eq!(v2.last(), Some(&0), "managed = false is one zero byte, last");
        let mut v1 = v2[..v2.len() - 1].to_vec();
        v1[0] = FORMAT_V1;
        assert_eq!(decode_key(&v1).ok(), Some(("acct".to_string(), key)));
    }
}
