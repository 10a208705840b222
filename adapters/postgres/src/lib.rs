//! # mailroom-postgres
//!
//! A [`Storage`] on PostgreSQL, for several mailroom processes sharing one queue.
//!
//! ```no_run
//! # async fn run() -> Result<(), mailroom_core::StorageError> {
//! let store = mailroom_postgres::PostgresStorage::connect("postgres://mailroom@127.0.0.1/mailroom", 16).await?;
//! # Ok(()) }
//! ```
//!
//! Invariants:
//! - every trait method is one transaction; a method that reads before it writes locks the
//!   rows it reads (`SELECT … FOR UPDATE`), so the rules the core's `store` functions apply
//!   see the row as it is committed, whichever process wrote it last;
//! - the worker's claims take due rows with `FOR UPDATE SKIP LOCKED`: two processes claiming
//!   at once take different emails and never wait on each other's rows; a claim is a lease
//!   in the row (the core's `store::claim`), so a dead process's claims lapse and are taken
//!   over when they fall due again;
//! - migrations are versioned (`migrations/`), applied at connection under an advisory lock
//!   (processes starting together migrate once), each in the transaction that records it;
//! - content and state are stored as postcard with a version byte; the columns beside them
//!   (`account`, `created_at`, `due_at`, `pruned`) are kept equal to what the state says, in
//!   the same statement that writes it.
//!
//! Every extension is kept: the event log, API keys, request logs, domains, webhooks and
//! received mail.

mod combine;
mod create_lock;
mod extensions;
mod group;
mod webhooks;

pub use group::GroupStats;

/// The driver this store speaks through, for a host (or a test) that runs its own SQL beside it.
pub use tokio_postgres;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use group::{Conn, Groups};
use mailroom_core::email::{
    AccountId, Cursor, EmailContent, EmailId, EmailRecord, EmailState, EmailSummary, Event, NewEmail, Page, PageRequest,
};
use mailroom_core::error::StorageError;
use mailroom_core::events::{LoggedEvent, Pending, Subject};
use mailroom_core::idempotency::{Fingerprint, IdempotencyRecord};
use mailroom_core::ports::{
    ClaimRef, ClaimedEmail, EventLog, IdempotencyBegin, IdempotencyCompletion, Outcome, QueueStats, ScheduleChange,
    ScheduleOp, Storage, StorageResult, SuppressionEntry,
};
use mailroom_core::store;
use std::time::Duration;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

/// The schema's versions, in order; each runs once, in the transaction that records it.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_emails.sql")),
    (2, include_str!("../migrations/0002_event_log.sql")),
    (3, include_str!("../migrations/0003_keys_logs_domains.sql")),
    (4, include_str!("../migrations/0004_webhooks_received.sql")),
    (5, include_str!("../migrations/0005_event_log_numbered_indexes.sql")),
    (6, include_str!("../migrations/0006_compressed_columns_external.sql")),
    (7, include_str!("../migrations/0007_suppression_ids_and_origins.sql")),
];

/// The advisory lock under which readers number the event log's new entries.
const SEQUENCER_LOCK: i64 = 0x6d61_696c_6c6f_6773; // "maillogs"

/// The advisory lock that serialises migrations between processes starting at once.
const MIGRATION_LOCK: i64 = 0x6d61_696c_726f_6f6d; // "mailroom"

/// The version byte of postcard-encoded values.
const V1: u8 = 1;

/// The channel on which writers announce that something became due.
const DUE_CHANNEL: &str = "mailroom_due";

/// The lanes of group commit (see [`group`]): two, so that PostgreSQL works on one group while
/// the other waits for its WAL flush; more would split bursts into smaller groups.
const WRITE_LANES: usize = 2;

/// The store: a pool of connections to one database, and a listener for other processes'
/// announcements.
#[derive(Clone)]
pub struct PostgresStorage {
    pool: Pool,
    wake: std::sync::Arc<tokio::sync::Notify>,
    groups: std::sync::Arc<Groups>,
    combiners: std::sync::Arc<combine::Combiners>,
    create_locks: create_lock::CreateLocks,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage").field("pool", &self.pool.status()).finish()
    }
}

/// A backend error with its causes (the driver's own text is only "db error"; the server's
/// message is its source).
fn backend(e: impl std::error::Error) -> StorageError {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    StorageError::Backend(text)
}

fn encode<T: serde::Serialize>(v: &T) -> StorageResult<Vec<u8>> {
    let mut out = vec![V1];
    postcard::to_io(v, &mut out).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StorageResult<T> {
    match bytes.split_first() {
        Some((&V1, rest)) => from_postcard(rest),
        Some((&ZSTD, rest)) => from_postcard(&mailroom_core::compression::unpack(rest)?),
        Some((v, _)) => Err(StorageError::Corrupt(format!("unknown record version {v}"))),
        None => Err(StorageError::Corrupt("empty record".into())),
    }
}

/// Postcard bytes (no version byte) read as a `T`.
fn from_postcard<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StorageResult<T> {
    postcard::from_bytes(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// The version byte of a record stored as zstd-compressed postcard ([`encode_packed`]).
const ZSTD: u8 = 2;

/// A large record (an email's content, a request's log) as stored: compressed in the process,
/// not in the database, when that saves a tenth; [`decode`] reads both forms. Why: the
/// database is what several processes share, and PostgreSQL compresses a value over ~2 KB
/// itself (pglz, on its own CPU, and again when it reads it back); compressed here, a 2 KB
/// email is well under that, never TOASTed, and a third of the WAL. `size_hint`: the encoded
/// size expected, so that a large record is not encoded through a doubling buffer.
fn encode_packed<T: serde::Serialize>(v: &T, size_hint: usize) -> StorageResult<Vec<u8>> {
    let mut plain = Vec::with_capacity(size_hint + 1);
    plain.push(V1);
    postcard::to_io(v, &mut plain).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    Ok(mailroom_core::compression::pack(plain, ZSTD))
}

fn encode_content(c: &EmailContent) -> StorageResult<Vec<u8>> {
    encode_packed(c, c.encoded_size_hint())
}

fn uuid(id: EmailId) -> Uuid {
    Uuid::from_u128(id.as_u128())
}

impl PostgresStorage {
    /// The address of the account's suppression whose id is `id`: one indexed lookup (ids
    /// are derived from addresses and kept beside them, in the `id` column).
    async fn suppression_address(&self, c: &Object, account: &AccountId, id: &str) -> StorageResult<Option<String>> {
        let Some(bits) = mailroom_core::suppressions::parse_id(id) else { return Ok(None) };
        let row = sql::query_opt(
            c,
            "SELECT address FROM mailroom_suppressions WHERE account = $1 AND id = $2",
            &[&account.as_str(), &Uuid::from_u128(bits)],
        )
        .await
        .map_err(backend)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Gives rows written before suppressions had an `id` and an `origin` column (migration 7)
    /// both, a chunk at a time, found through the partial index of rows without an id (every
    /// write sets both): each row is read once, and a connect after that reads nothing.
    async fn index_suppressions(&self) -> StorageResult<()> {
        let c = self.client().await?;
        loop {
            let rows = sql::query(
                &c,
                "SELECT account, address, entry FROM mailroom_suppressions WHERE id IS NULL LIMIT $1",
                &[&SUPPRESSION_CHUNK],
            )
            .await
            .map_err(backend)?;
            if rows.is_empty() {
                return Ok(());
            }
            let (mut accounts, mut addresses, mut ids, mut origins) = (vec![], vec![], vec![], vec![]);
            for r in &rows {
                let (account, address): (String, String) = (r.get(0), r.get(1));
                let entry: SuppressionEntry = decode(r.get(2))?;
                let (id, origin) = suppression_columns(&AccountId::new(&account), &entry);
                accounts.push(account);
                addresses.push(address);
                ids.push(id);
                origins.push(origin);
            }
            sql::execute(
                &c,
                "UPDATE mailroom_suppressions s SET id = u.id, origin = u.origin \
                 FROM unnest($1::text[], $2::text[], $3::uuid[], $4::smallint[]) AS u(account, address, id, origin) \
                 WHERE s.account = u.account AND s.address = u.address",
                &[&accounts, &addresses, &ids, &origins],
            )
            .await
            .map_err(backend)?;
        }
    }

    /// Connects to `url` (`postgres://user:password@host:port/database`) with at most
    /// `max_connections` connections, and brings the schema up to date. Give it at least 2:
    /// the lock that keeps the per-account caps across processes
    /// ([`Storage::hold_create_lock`]) holds a connection beside the ones its create works
    /// on, so with one connection the caps hold only within this process.
    pub async fn connect(url: &str, max_connections: usize) -> StorageResult<PostgresStorage> {
        let config: tokio_postgres::Config = url.parse().map_err(backend)?;
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(max_connections.max(1)).build().map_err(backend)?;
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let groups = std::sync::Arc::new(Groups::start(pool.clone(), WRITE_LANES));
        let combiners = std::sync::Arc::new(combine::Combiners::start(groups.clone()));
        let create_locks = create_lock::CreateLocks::new(pool.clone());
        let store = PostgresStorage { pool, wake: wake.clone(), groups, combiners, create_locks };
        store.migrate().await?;
        store.index_suppressions().await?;
        tokio::spawn(listen(config, std::sync::Arc::downgrade(&wake)));
        Ok(store)
    }

    /// The schema versions applied, oldest first.
    pub async fn schema_versions(&self) -> StorageResult<Vec<i32>> {
        let c = self.client().await?;
        let rows =
            sql::query(&c, "SELECT version FROM mailroom_migrations ORDER BY version", &[]).await.map_err(backend)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn client(&self) -> StorageResult<Object> {
        self.pool.get().await.map_err(backend)
    }

    async fn migrate(&self) -> StorageResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(backend)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS mailroom_migrations \
             (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(backend)?;
        let done: Vec<i32> = tx
            .query("SELECT version FROM mailroom_migrations", &[])
            .await
            .map_err(backend)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (version, sql) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            tx.batch_execute(sql).await.map_err(backend)?;
            tx.execute("INSERT INTO mailroom_migrations (version) VALUES ($1)", &[version]).await.map_err(backend)?;
            tracing::info!(target: "mailroom::postgres", version, "schema migrated");
        }
        tx.commit().await.map_err(backend)
    }

    /// Runs `work` as one write of the next group (see [`group`]): atomic on its own, its
    /// result answered once the group's transaction is committed.
    async fn write<T, F>(&self, work: F) -> StorageResult<T>
    where
        F: for<'c> FnOnce(&'c Conn) -> futures_lite::BoxFuture<'c, StorageResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.groups.write(work).await
    }

    /// How many group transactions this store's writes have shared, and how many writes ran
    /// in them (their ratio is the writes per commit).
    pub fn group_stats(&self) -> &GroupStats {
        &self.groups.stats
    }
}

/// Keeps a connection that `LISTEN`s on [`DUE_CHANNEL`] and signals `wake` at each
/// notification; reconnects after a second when the connection drops. Ends once the store
/// (the last holder of `wake`) is gone, at its next notification or reconnection.
async fn listen(config: tokio_postgres::Config, wake: std::sync::Weak<tokio::sync::Notify>) {
    loop {
        if wake.strong_count() == 0 {
            return;
        }
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                // The connection's messages are read here; the client only sends LISTEN.
                let sql = format!("LISTEN {DUE_CHANNEL}");
                let mut listening = Box::pin(client.batch_execute(&sql));
                let mut listened = false;
                loop {
                    if !listened {
                        tokio::select! {
                            r = &mut listening => {
                                listened = true;
                                if r.is_err() { break; }
                                continue;
                            }
                            m = std::future::poll_fn(|cx| connection.poll_message(cx)) => {
                                if !matches!(m, Some(Ok(_))) { break; }
                                continue;
                            }
                        }
                    }
                    match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => match wake.upgrade() {
                            Some(w) => w.notify_one(),
                            None => return,
                        },
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
                tracing::warn!(target: "mailroom::postgres", "the LISTEN connection ended; reconnecting");
            }
            Err(e) => tracing::warn!(target: "mailroom::postgres", error = %e, "cannot LISTEN; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Announces, at commit, that something became due (idle workers of every process look).
async fn announce_due(tx: &Conn) -> StorageResult<()> {
    tx.batch_execute(&format!("NOTIFY {DUE_CHANNEL}")).await.map_err(backend)
}

/// Statements prepared once per connection and kept (deadpool's statement cache): with a
/// plain string, the driver prepares the statement on every call, a round trip of its own
/// and a parse and plan on the server before each execution.
mod sql {
    use deadpool_postgres::ClientWrapper;
    use tokio_postgres::types::ToSql;
    use tokio_postgres::{Error, Row};

    type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

    pub(crate) async fn execute(c: &ClientWrapper, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        let statement = c.prepare_cached(sql).await?;
        c.execute(&statement, params).await
    }

    pub(crate) async fn query(c: &ClientWrapper, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let statement = c.prepare_cached(sql).await?;
        c.query(&statement, params).await
    }

    pub(crate) async fn query_one(c: &ClientWrapper, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        let statement = c.prepare_cached(sql).await?;
        c.query_one(&statement, params).await
    }

    pub(crate) async fn query_opt(c: &ClientWrapper, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        let statement = c.prepare_cached(sql).await?;
        c.query_opt(&statement, params).await
    }
}

mod futures_lite {
    /// A boxed future borrowing for `'a`.
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

/// The states of the emails `ids` that exist, locked for update in one statement and in id
/// order (two transactions locking overlapping sets cannot deadlock).
async fn locked_states(tx: &Conn, ids: &[EmailId]) -> StorageResult<std::collections::HashMap<EmailId, EmailState>> {
    let keys: Vec<Uuid> = ids.iter().map(|id| uuid(*id)).collect();
    let rows = sql::query(tx, "SELECT state FROM mailroom_emails WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&keys])
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|r| {
            let state: EmailState = decode(r.get(0))?;
            Ok((state.id, state))
        })
        .collect()
}

/// One email row's state, locked for update.
async fn locked_state(tx: &Conn, id: EmailId) -> StorageResult<Option<EmailState>> {
    let row = sql::query_opt(tx, "SELECT state FROM mailroom_emails WHERE id = $1 FOR UPDATE", &[&uuid(id)])
        .await
        .map_err(backend)?;
    row.map(|r| decode::<EmailState>(r.get(0))).transpose()
}

/// Writes a state back, with the columns that mirror it, and logs the events it gained over
/// the `before` it had when read.
async fn put_state(tx: &Conn, before: usize, state: &EmailState) -> StorageResult<()> {
    put_states(tx, &[(before, state)]).await
}

/// [`put_state`] for many emails in two statements (their log entries, then their rows), in
/// the order given: the worker's paths change a batch of emails at once, and a round trip per
/// email was most of their cost.
async fn put_states(tx: &Conn, changed: &[(usize, &EmailState)]) -> StorageResult<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let gained = changed.iter().flat_map(|(before, state)| {
        Pending::for_email(&state.account, state.id, state.events.get(*before..).unwrap_or(&[]))
    });
    log(tx, gained).await?;
    let (mut ids, mut states, mut due, mut pruned) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (_, state) in changed {
        ids.push(uuid(state.id));
        states.push(encode(*state)?);
        due.push(state.due_at);
        pruned.push(state.pruned_at.is_some());
    }
    sql::execute(
        tx,
        "UPDATE mailroom_emails e SET state = u.st, due_at = u.d, pruned = u.p \
         FROM unnest($1::uuid[], $2::bytea[], $3::timestamptz[], $4::bool[]) AS u(i, st, d, p) WHERE e.id = u.i",
        &[&ids, &states, &due, &pruned],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

/// Rows a suppression page or the indexing of old rows reads per query.
const SUPPRESSION_CHUNK: i64 = 500;

/// An account's entries after an address (`""`: from the start), in address order ("C"), a
/// chunk at a time: `$1` account, `$2` address, `$3` chunk.
const SUPPRESSIONS_AFTER: &str = "SELECT address, entry FROM mailroom_suppressions WHERE account = $1 \
     AND address COLLATE \"C\" > $2 ORDER BY address COLLATE \"C\" LIMIT $3";
/// The same before an address, nearest first.
const SUPPRESSIONS_BEFORE: &str = "SELECT address, entry FROM mailroom_suppressions WHERE account = $1 \
     AND address COLLATE \"C\" < $2 ORDER BY address COLLATE \"C\" DESC LIMIT $3";
/// The statements that read pages of the suppression list (for tests of their plans).
#[doc(hidden)]
pub const SUPPRESSION_PAGE_STATEMENTS: [&str; 4] =
    [SUPPRESSIONS_AFTER, SUPPRESSIONS_BEFORE, SUPPRESSIONS_OF_ORIGIN_AFTER, SUPPRESSIONS_OF_ORIGIN_BEFORE];
/// [`SUPPRESSIONS_AFTER`] of one origin (`$4`, its code).
const SUPPRESSIONS_OF_ORIGIN_AFTER: &str = "SELECT address, entry FROM mailroom_suppressions \
     WHERE account = $1 AND origin = $4 AND address COLLATE \"C\" > $2 ORDER BY address COLLATE \"C\" LIMIT $3";
/// [`SUPPRESSIONS_BEFORE`] of one origin (`$4`, its code).
const SUPPRESSIONS_OF_ORIGIN_BEFORE: &str = "SELECT address, entry FROM mailroom_suppressions \
     WHERE account = $1 AND origin = $4 AND address COLLATE \"C\" < $2 ORDER BY address COLLATE \"C\" DESC LIMIT $3";

/// The `id` and `origin` columns of `entry`'s row: what lookups by id and pages of one origin
/// find it by.
fn suppression_columns(account: &AccountId, entry: &SuppressionEntry) -> (Uuid, i16) {
    use mailroom_core::suppressions::{Origin, id_bits};
    (Uuid::from_u128(id_bits(account, &entry.address)), i16::from(Origin::of(entry).code()))
}

/// Lists an address (replacing its entry), logging `suppression.added` when it was not listed.
async fn put_suppression(tx: &Conn, account: &AccountId, entry: &SuppressionEntry) -> StorageResult<()> {
    let (id, origin) = suppression_columns(account, entry);
    // `xmax = 0` tells an inserted row from an updated one.
    let row = sql::query_one(
        tx,
        "INSERT INTO mailroom_suppressions (account, address, entry, id, origin) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (account, address) DO UPDATE SET entry = EXCLUDED.entry, id = EXCLUDED.id, \
             origin = EXCLUDED.origin RETURNING (xmax = 0)",
        &[&account.as_str(), &entry.address, &encode(entry)?, &id, &origin],
    )
    .await
    .map_err(backend)?;
    if row.get::<_, bool>(0) {
        let added = Pending {
            account: account.clone(),
            at: entry.created_at,
            subject: Subject::SuppressionAdded(entry.clone()),
        };
        log(tx, [added]).await?;
    }
    Ok(())
}

/// Appends entries to the event log, unnumbered (see the migration's comment), in one
/// statement: their insertion order (and so their numbers) is the order given.
async fn log(tx: &Conn, entries: impl IntoIterator<Item = Pending>) -> StorageResult<()> {
    let (mut accounts, mut ats, mut subjects) = (Vec::new(), Vec::new(), Vec::new());
    for p in entries {
        accounts.push(p.account.as_str().to_string());
        ats.push(p.at);
        subjects.push(encode(&p.subject)?);
    }
    if accounts.is_empty() {
        return Ok(());
    }
    sql::execute(
        tx,
        "INSERT INTO mailroom_events (account, at, subject) \
         SELECT a, t, s FROM unnest($1::text[], $2::timestamptz[], $3::bytea[]) WITH ORDINALITY AS u(a, t, s, n) \
         ORDER BY n",
        &[&accounts, &ats, &subjects],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

fn record_of(row: &Row) -> StorageResult<EmailRecord> {
    let content: EmailContent = decode(row.get("content"))?;
    let state: EmailState = decode(row.get("state"))?;
    Ok(EmailRecord { content, state })
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn idempotency_begin(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &Fingerprint,
        now: DateTime<Utc>,
        in_flight_until: DateTime<Utc>,
    ) -> StorageResult<IdempotencyBegin> {
        let marker = IdempotencyRecord {
            fingerprint: *fingerprint,
            created_at: now,
            expires_at: in_flight_until,
            response: None,
        };
        let bytes = encode(&marker)?;
        let (account, key, fingerprint) = (account.as_str().to_string(), key.to_string(), *fingerprint);
        self.write(move |tx| {
            Box::pin(async move {
                // A new key: the marker goes in and this request holds it.
                let inserted = sql::execute(
                    tx,
                    "INSERT INTO mailroom_idempotency (account, key, expires_at, completed, record) \
                         VALUES ($1, $2, $3, false, $4) ON CONFLICT (account, key) DO NOTHING",
                    &[&account, &key, &in_flight_until, &bytes],
                )
                .await
                .map_err(backend)?;
                if inserted == 1 {
                    return Ok(IdempotencyBegin::Started);
                }
                // A known key: locked, then judged as every store judges it.
                let row = sql::query_one(
                    tx,
                    "SELECT record FROM mailroom_idempotency WHERE account = $1 AND key = $2 FOR UPDATE",
                    &[&account, &key],
                )
                .await
                .map_err(backend)?;
                let existing: IdempotencyRecord = decode(row.get(0))?;
                if let Some(found) = existing.meet(&fingerprint, now) {
                    return Ok(found);
                }
                sql::execute(
                    tx,
                    "UPDATE mailroom_idempotency SET expires_at = $3, completed = false, record = $4 \
                     WHERE account = $1 AND key = $2",
                    &[&account, &key, &in_flight_until, &bytes],
                )
                .await
                .map_err(backend)?;
                Ok(IdempotencyBegin::Started)
            })
        })
        .await
    }

    async fn idempotency_release(&self, account: &AccountId, key: &str) -> StorageResult<()> {
        let (account, key) = (account.as_str().to_string(), key.to_string());
        self.write(move |c| {
            Box::pin(async move {
                sql::execute(
                    c,
                    "DELETE FROM mailroom_idempotency WHERE account = $1 AND key = $2 AND NOT completed",
                    &[&account, &key],
                )
                .await
                .map_err(backend)?;
                Ok(())
            })
        })
        .await
    }

    async fn insert_emails(
        &self,
        account: &AccountId,
        emails: Vec<NewEmail>,
        idempotency: Option<IdempotencyCompletion>,
    ) -> StorageResult<()> {
        // Encoded before the transaction: no row is locked while a large email is encoded.
        let mut rows = Vec::with_capacity(emails.len());
        let mut initial = Vec::new();
        for e in emails {
            let state = e.initial_state();
            initial.extend(Pending::for_email(&e.account, e.id, &state.events));
            rows.push((uuid(e.id), e.created_at, state.due_at, encode_content(&e.content)?, encode(&state)?));
        }
        let completion = match &idempotency {
            Some(c) => Some((
                c.key.clone(),
                c.created_at,
                c.expires_at,
                encode(&IdempotencyRecord {
                    fingerprint: c.fingerprint,
                    created_at: c.created_at,
                    expires_at: c.expires_at,
                    response: Some(c.response.clone()),
                })?,
            )),
            None => None,
        };
        let account = account.as_str().to_string();
        self.write(move |tx| {
            Box::pin(async move {
                if let Some((key, created_at, expires_at, record)) = &completion {
                    let row = sql::query_opt(tx,
                            "SELECT record FROM mailroom_idempotency WHERE account = $1 AND key = $2 FOR UPDATE",
                            &[&account, key],
                        )
                        .await
                        .map_err(backend)?;
                    let existing = row.map(|r| decode::<IdempotencyRecord>(r.get(0))).transpose()?;
                    store::may_complete(existing.as_ref(), *created_at)?;
                    sql::execute(tx,
                        "INSERT INTO mailroom_idempotency (account, key, expires_at, completed, record) \
                         VALUES ($1, $2, $3, true, $4) ON CONFLICT (account, key) \
                         DO UPDATE SET expires_at = EXCLUDED.expires_at, completed = true, record = EXCLUDED.record",
                        &[&account, key, expires_at, record],
                    )
                    .await
                    .map_err(backend)?;
                }
                // One statement for the whole batch: a round trip per email was most of the cost.
                let (mut ids, mut created, mut due, mut contents, mut states) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for (id, created_at, due_at, content, state) in rows {
                    ids.push(id);
                    created.push(created_at);
                    due.push(due_at);
                    contents.push(content);
                    states.push(state);
                }
                sql::execute(tx,
                    "INSERT INTO mailroom_emails (id, account, created_at, due_at, content, state) \
                     SELECT i, $1, c, d, ct, st FROM \
                     unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[], $5::bytea[], $6::bytea[]) AS u(i, c, d, ct, st)",
                    &[&account, &ids, &created, &due, &contents, &states],
                )
                .await
                .map_err(backend)?;
                log(tx, initial).await?;
                announce_due(tx).await
            })
        })
        .await
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> StorageResult<usize> {
        let c = self.client().await?;
        // Lapsed in-flight markers go too, uncounted: they are not records.
        let rows =
            sql::query(&c, "DELETE FROM mailroom_idempotency WHERE expires_at <= $1 RETURNING completed", &[&now])
                .await
                .map_err(backend)?;
        Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count())
    }

    async fn get_email(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<EmailRecord>> {
        let c = self.client().await?;
        let row = sql::query_opt(
            &c,
            "SELECT content, state FROM mailroom_emails WHERE id = $1 AND account = $2",
            &[&uuid(id), &account.as_str()],
        )
        .await
        .map_err(backend)?;
        row.as_ref().map(record_of).transpose()
    }

    async fn get_state(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<EmailState>> {
        let c = self.client().await?;
        let row = sql::query_opt(
            &c,
            "SELECT state FROM mailroom_emails WHERE id = $1 AND account = $2",
            &[&uuid(id), &account.as_str()],
        )
        .await
        .map_err(backend)?;
        row.map(|r| decode::<EmailState>(r.get(0))).transpose()
    }

    async fn email_facts(
        &self,
        account: &AccountId,
        ids: std::ops::Range<u128>,
        limit: usize,
        senders: bool,
    ) -> StorageResult<Vec<mailroom_core::ports::EmailFacts>> {
        let c = self.client().await?;
        let take = i64::try_from(limit).unwrap_or(i64::MAX);
        let (lo, hi) = (uuid(EmailId::from_u128(ids.start)), uuid(EmailId::from_u128(ids.end)));
        // One query for the range, by the (account, id) index; the content (compressed, most
        // of a row) is fetched and decoded only when its sending domain is wanted.
        let query = if senders {
            "SELECT content, state FROM mailroom_emails WHERE account = $1 AND id >= $2 AND id < $3 \
                 ORDER BY id ASC LIMIT $4"
        } else {
            "SELECT state FROM mailroom_emails WHERE account = $1 AND id >= $2 AND id < $3 ORDER BY id ASC LIMIT $4"
        };
        let rows = sql::query(&c, query, &[&account.as_str(), &lo, &hi, &take]).await.map_err(backend)?;
        rows.iter()
            .map(|row| {
                let state: EmailState = decode(row.get("state"))?;
                let content: Option<EmailContent> = if senders { Some(decode(row.get("content"))?) } else { None };
                Ok(mailroom_core::ports::EmailFacts::of(state, content.as_ref().map(|c| c.from.domain.as_str())))
            })
            .collect()
    }

    async fn list_emails(&self, account: &AccountId, page: PageRequest) -> StorageResult<Page<EmailSummary>> {
        let c = self.client().await?;
        let take = i64::try_from(page.limit + 1).unwrap_or(i64::MAX);
        let acct = account.as_str();
        let rows = match page.cursor {
            Cursor::Start => {
                sql::query(
                    &c,
                    "SELECT content, state FROM mailroom_emails WHERE account = $1 ORDER BY id DESC LIMIT $2",
                    &[&acct, &take],
                )
                .await
            }
            Cursor::After(id) => sql::query(
                &c,
                "SELECT content, state FROM mailroom_emails WHERE account = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                &[&acct, &uuid(id), &take],
            )
            .await,
            Cursor::Before(id) => sql::query(
                &c,
                "SELECT content, state FROM mailroom_emails WHERE account = $1 AND id > $2 ORDER BY id ASC LIMIT $3",
                &[&acct, &uuid(id), &take],
            )
            .await,
        }
        .map_err(backend)?;
        let mut records = rows.iter().map(record_of).collect::<StorageResult<Vec<_>>>()?;
        let has_more = records.len() > page.limit;
        records.truncate(page.limit);
        if matches!(page.cursor, Cursor::Before(_)) {
            records.reverse();
        }
        Ok(Page { items: records.iter().map(EmailSummary::from).collect(), has_more })
    }

    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> StorageResult<Vec<ClaimedEmail>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |tx| {
            Box::pin(async move {
                // Rows another process holds are skipped, not waited for.
                let rows = sql::query(
                    tx,
                    "SELECT content, state FROM mailroom_emails WHERE due_at <= $1 \
                         ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    &[&now, &limit],
                )
                .await
                .map_err(backend)?;
                let mut out = Vec::with_capacity(rows.len());
                let mut before = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut record = record_of(row)?;
                    let events = record.state.events.len();
                    let token = rand::random::<u128>();
                    if !store::claim(&mut record.state, now, lease, token)? {
                        continue;
                    }
                    before.push(events);
                    out.push(ClaimedEmail { record, token });
                }
                let changed: Vec<(usize, &EmailState)> =
                    before.iter().zip(&out).map(|(b, c)| (*b, &c.record.state)).collect();
                put_states(tx, &changed).await?;
                Ok(out)
            })
        })
        .await
    }

    async fn begin_handover(&self, claims: &[ClaimRef]) -> StorageResult<Vec<EmailId>> {
        // Combined with the other marks queued meanwhile (see `combine`).
        self.combiners.begin_handover(claims.to_vec()).await
    }

    async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> StorageResult<Vec<EmailId>> {
        // Combined with the other outcomes queued meanwhile (see `combine`).
        self.combiners.record_outcomes(outcomes).await
    }

    async fn record_outcomes_then_begin_handover(
        &self,
        outcomes: Vec<Outcome>,
        claims: &[ClaimRef],
    ) -> StorageResult<(Vec<EmailId>, StorageResult<Vec<EmailId>>)> {
        // One write (both or neither), combined with the others queued meanwhile: the next
        // email's mark commits with the outcome that freed its permit.
        self.combiners.record_outcomes_then_begin_handover(outcomes, claims.to_vec()).await
    }

    async fn release_claims(&self, claims: &[ClaimRef], now: DateTime<Utc>) -> StorageResult<()> {
        let claims = claims.to_vec();
        self.write(move |tx| {
            Box::pin(async move {
                let ids: Vec<EmailId> = claims.iter().map(|c| c.id).collect();
                let mut states = locked_states(tx, &ids).await?;
                let mut released = Vec::new();
                for c in &claims {
                    if let Some(state) = states.get_mut(&c.id)
                        && store::release(state, c.token, now)
                    {
                        released.push(c.id);
                    }
                }
                let changed: Vec<(usize, &EmailState)> =
                    released.iter().filter_map(|id| states.get(id)).map(|s| (s.events.len(), s)).collect();
                put_states(tx, &changed).await?;
                if !claims.is_empty() {
                    announce_due(tx).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn renew_claims(&self, claims: &[ClaimRef], until: DateTime<Utc>) -> StorageResult<Vec<EmailId>> {
        // Answered in id order (the order the rows are locked in).
        let mut claims = claims.to_vec();
        claims.sort_by_key(|c| c.id.as_u128());
        self.write(move |tx| {
            Box::pin(async move {
                let ids: Vec<EmailId> = claims.iter().map(|c| c.id).collect();
                let mut states = locked_states(tx, &ids).await?;
                let mut lost = Vec::new();
                let mut renewed = Vec::new();
                for c in &claims {
                    let Some(state) = states.get_mut(&c.id) else {
                        lost.push(c.id);
                        continue;
                    };
                    if !store::renew(state, c.token, until) {
                        lost.push(c.id);
                        continue;
                    }
                    renewed.push(c.id);
                }
                let changed: Vec<(usize, &EmailState)> =
                    renewed.iter().filter_map(|id| states.get(id)).map(|s| (s.events.len(), s)).collect();
                put_states(tx, &changed).await?;
                Ok(lost)
            })
        })
        .await
    }

    async fn next_due(&self) -> StorageResult<Option<DateTime<Utc>>> {
        let c = self.client().await?;
        let row = sql::query_one(&c, "SELECT min(due_at) FROM mailroom_emails", &[]).await.map_err(backend)?;
        Ok(row.get(0))
    }

    async fn suppression_add(&self, account: &AccountId, entry: SuppressionEntry) -> StorageResult<()> {
        let account = account.clone();
        self.write(move |tx| Box::pin(async move { put_suppression(tx, &account, &entry).await })).await
    }

    async fn suppression_add_if_absent(
        &self,
        account: &AccountId,
        entry: SuppressionEntry,
    ) -> StorageResult<SuppressionEntry> {
        let account = account.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let (id, origin) = suppression_columns(&account, &entry);
                let inserted = sql::query_opt(
                    tx,
                    "INSERT INTO mailroom_suppressions (account, address, entry, id, origin) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account, address) DO NOTHING RETURNING address",
                    &[&account.as_str(), &entry.address, &encode(&entry)?, &id, &origin],
                )
                .await
                .map_err(backend)?;
                if inserted.is_none() {
                    // Listed already: the row that is there (the conflicting insert waited for
                    // the transaction that wrote it, so it is visible now).
                    let row = sql::query_one(
                        tx,
                        "SELECT entry FROM mailroom_suppressions WHERE account = $1 AND address = $2",
                        &[&account.as_str(), &entry.address],
                    )
                    .await
                    .map_err(backend)?;
                    return decode(row.get(0));
                }
                let added = Pending {
                    account: account.clone(),
                    at: entry.created_at,
                    subject: Subject::SuppressionAdded(entry.clone()),
                };
                log(tx, [added]).await?;
                Ok(entry)
            })
        })
        .await
    }

    async fn suppression_remove(&self, account: &AccountId, address: &str, at: DateTime<Utc>) -> StorageResult<bool> {
        let (account, address) = (account.clone(), address.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                let row = sql::query_opt(
                    tx,
                    "DELETE FROM mailroom_suppressions WHERE account = $1 AND address = $2 RETURNING entry",
                    &[&account.as_str(), &address],
                )
                .await
                .map_err(backend)?;
                let Some(row) = row else { return Ok(false) };
                let entry: SuppressionEntry = decode(row.get(0))?;
                log(tx, [Pending { account, at, subject: Subject::SuppressionRemoved(entry) }]).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn suppression_lookup(
        &self,
        account: &AccountId,
        addresses: &[String],
    ) -> StorageResult<Vec<SuppressionEntry>> {
        let c = self.client().await?;
        let rows = sql::query(
            &c,
            "SELECT address, entry FROM mailroom_suppressions WHERE account = $1 AND address = ANY($2)",
            &[&account.as_str(), &addresses],
        )
        .await
        .map_err(backend)?;
        let mut found: std::collections::HashMap<String, SuppressionEntry> = Default::default();
        for r in &rows {
            found.insert(r.get(0), decode(r.get(1))?);
        }
        // In the order asked, as every store answers.
        Ok(addresses.iter().filter_map(|a| found.get(a).cloned()).collect())
    }

    async fn suppression_list(&self, account: &AccountId) -> StorageResult<Vec<SuppressionEntry>> {
        let c = self.client().await?;
        let rows = sql::query(
            &c,
            "SELECT entry FROM mailroom_suppressions WHERE account = $1 ORDER BY address COLLATE \"C\"",
            &[&account.as_str()],
        )
        .await
        .map_err(backend)?;
        rows.iter().map(|r| decode(r.get(0))).collect()
    }

    // The unsubscribes alone, by the origin index: the work and the answer are per unsubscribe.
    async fn suppression_unsubscribe_sources(&self, account: &AccountId) -> StorageResult<Vec<EmailId>> {
        let c = self.client().await?;
        let unsubscribe = i16::from(mailroom_core::suppressions::Origin::Unsubscribe.code());
        let rows = sql::query(
            &c,
            "SELECT entry FROM mailroom_suppressions WHERE account = $1 AND origin = $2",
            &[&account.as_str(), &unsubscribe],
        )
        .await
        .map_err(backend)?;
        let mut out = Vec::new();
        for row in &rows {
            let e: SuppressionEntry = decode(row.get(0))?;
            out.extend(e.unsubscribed_from());
        }
        Ok(out)
    }

    // A page reads rows from its cursor on, in chunks, until it is full (of one origin, through
    // the origin index, when it asks for one); the cursor's address is found by its id.
    async fn suppression_page(
        &self,
        account: &AccountId,
        q: &mailroom_core::suppressions::PageQuery,
    ) -> StorageResult<Option<mailroom_core::email::Page<SuppressionEntry>>> {
        use mailroom_core::suppressions::{PageBuilder, cursor_id};
        let c = self.client().await?;
        // From the start is from after "" (every address sorts after it in "C" order).
        let mut from = match cursor_id(q) {
            None => String::new(),
            Some(id) => match self.suppression_address(&c, account, id).await? {
                Some(address) => address,
                None => return Ok(None),
            },
        };
        let mut page = PageBuilder::new(q);
        // Four statements, not one with optional conditions, so that each is planned for the
        // index it reads: (account, address) or (account, origin, address).
        let (query, origin) = match (page.upwards(), q.origin) {
            (false, None) => (SUPPRESSIONS_AFTER, None),
            (true, None) => (SUPPRESSIONS_BEFORE, None),
            (false, Some(o)) => (SUPPRESSIONS_OF_ORIGIN_AFTER, Some(i16::from(o.code()))),
            (true, Some(o)) => (SUPPRESSIONS_OF_ORIGIN_BEFORE, Some(i16::from(o.code()))),
        };
        'chunks: loop {
            let rows = match &origin {
                None => sql::query(&c, query, &[&account.as_str(), &from, &SUPPRESSION_CHUNK]).await,
                Some(o) => sql::query(&c, query, &[&account.as_str(), &from, &SUPPRESSION_CHUNK, o]).await,
            }
            .map_err(backend)?;
            for row in &rows {
                from = row.get(0);
                if page.push(decode(row.get(1))?) {
                    break 'chunks;
                }
            }
            if (rows.len() as i64) < SUPPRESSION_CHUNK {
                break;
            }
        }
        Ok(Some(page.finish()))
    }

    async fn suppression_by_id(&self, account: &AccountId, id: &str) -> StorageResult<Option<SuppressionEntry>> {
        let c = self.client().await?;
        let Some(address) = self.suppression_address(&c, account, id).await? else { return Ok(None) };
        Ok(self.suppression_lookup(account, &[address]).await?.pop())
    }

    async fn change_schedule(&self, account: &AccountId, id: EmailId, op: ScheduleOp) -> StorageResult<ScheduleChange> {
        let account = account.clone();
        self.write(move |tx| {
            Box::pin(async move {
                let Some(mut state) = locked_state(tx, id).await?.filter(|s| s.account == account) else {
                    return Ok(ScheduleChange::NotFound);
                };
                let before = state.events.len();
                let change = store::change_schedule(&mut state, op)?;
                if change == ScheduleChange::Applied {
                    put_state(tx, before, &state).await?;
                    // A moved email is due at another time: idle workers look again.
                    if matches!(op, ScheduleOp::MoveTo(_)) {
                        announce_due(tx).await?;
                    }
                }
                Ok(change)
            })
        })
        .await
    }

    async fn append_events(
        &self,
        id: EmailId,
        events: Vec<Event>,
        suppressions: Vec<SuppressionEntry>,
    ) -> StorageResult<Option<AccountId>> {
        self.write(move |tx| {
            Box::pin(async move {
                let Some(mut state) = locked_state(tx, id).await? else { return Ok(None) };
                let before = state.events.len();
                for e in events {
                    state.push(e)?;
                }
                put_state(tx, before, &state).await?;
                for sup in &suppressions {
                    put_suppression(tx, &state.account, sup).await?;
                }
                Ok(Some(state.account))
            })
        })
        .await
    }

    async fn prune(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |tx| {
            Box::pin(async move {
                // The columns say what `store::prunable` says (no due time means no claim).
                let rows = sql::query(
                    tx,
                    "SELECT content, state FROM mailroom_emails \
                         WHERE created_at < $1 AND due_at IS NULL AND NOT pruned \
                         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    &[&cutoff, &limit],
                )
                .await
                .map_err(backend)?;
                let mut n = 0;
                for row in &rows {
                    let mut r = record_of(row)?;
                    if !store::prunable(&r.state, cutoff) {
                        continue;
                    }
                    store::prune(&mut r.state, &mut r.content, cutoff, now);
                    sql::execute(
                        tx,
                        "UPDATE mailroom_emails SET content = $2, state = $3, pruned = true WHERE id = $1",
                        &[&uuid(r.state.id), &encode_content(&r.content)?, &encode(&r.state)?],
                    )
                    .await
                    .map_err(backend)?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .await
    }

    fn event_log(&self) -> Option<&dyn EventLog> {
        Some(self)
    }

    fn api_keys(&self) -> Option<&dyn mailroom_core::ports::ApiKeyStore> {
        Some(self)
    }

    fn request_logs(&self) -> Option<&dyn mailroom_core::ports::RequestLogStore> {
        Some(self)
    }

    fn domains(&self) -> Option<&dyn mailroom_core::ports::DomainStore> {
        Some(self)
    }

    fn webhooks(&self) -> Option<&dyn mailroom_core::ports::WebhookStore> {
        Some(self)
    }

    fn received(&self) -> Option<&dyn mailroom_core::ports::ReceivedStore> {
        Some(self)
    }

    fn wakeups(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.wake.clone())
    }

    async fn hold_create_lock(&self, account: &AccountId) -> StorageResult<Option<mailroom_core::ports::HeldLock>> {
        self.create_locks.hold(account).await
    }

    async fn queue_stats(&self, now: DateTime<Utc>) -> StorageResult<Option<QueueStats>> {
        let c = self.client().await?;
        let cap = i64::try_from(QueueStats::COUNT_CAP).unwrap_or(i64::MAX);
        let row = sql::query_one(
            &c,
            "SELECT (SELECT count(*) FROM mailroom_emails WHERE due_at IS NOT NULL), \
                        (SELECT count(*) FROM (SELECT 1 FROM mailroom_emails WHERE due_at <= $1 LIMIT $2) d), \
                        (SELECT min(due_at) FROM mailroom_emails WHERE due_at <= $1)",
            &[&now, &cap],
        )
        .await
        .map_err(backend)?;
        let waiting: i64 = row.get(0);
        let due: i64 = row.get(1);
        Ok(Some(QueueStats::new(u64::try_from(waiting).unwrap_or(0), u64::try_from(due).unwrap_or(0), row.get(2))))
    }
}

impl PostgresStorage {
    /// Numbers the event log's committed, unnumbered entries in insertion order, after the
    /// last number given; returns that last number.
    async fn sequence(&self) -> StorageResult<u64> {
        // A transaction of its own, not a group's: the advisory lock it takes is held until
        // commit, and a group would hold it across the writes queued behind.
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let head = {
            let tx = &tx;
            async move {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEQUENCER_LOCK]).await.map_err(backend)?;
                let head: i64 = tx.query_one("SELECT n FROM mailroom_event_head", &[]).await.map_err(backend)?.get(0);
                let numbered = tx
                    .execute(
                        "UPDATE mailroom_events e SET seq = $1 + n.rn FROM \
                         (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM mailroom_events WHERE seq IS NULL) n \
                         WHERE e.id = n.id",
                        &[&head],
                    )
                    .await
                    .map_err(backend)?;
                let head = head + i64::try_from(numbered).unwrap_or(0);
                if numbered > 0 {
                    tx.execute("UPDATE mailroom_event_head SET n = $1", &[&head]).await.map_err(backend)?;
                }
                Ok::<_, StorageError>(u64::try_from(head).unwrap_or(0))
            }
        }
        .await?;
        tx.commit().await.map_err(backend)?;
        Ok(head)
    }
}

#[async_trait]
impl EventLog for PostgresStorage {
    async fn events_after(&self, account: &AccountId, after: u64, limit: usize) -> StorageResult<Vec<LoggedEvent>> {
        self.sequence().await?;
        let c = self.client().await?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sql::query(
            &c,
            "SELECT seq, at, subject FROM mailroom_events WHERE account = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&account.as_str(), &after, &limit],
        )
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(LoggedEvent {
                    seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                    account: account.clone(),
                    at: r.get(1),
                    subject: decode(r.get(2))?,
                })
            })
            .collect()
    }

    async fn events_head(&self) -> StorageResult<u64> {
        self.sequence().await
    }

    async fn events_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        // Only numbered entries: an unnumbered one has not been seen by any reader yet.
        self.sequence().await?;
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let n = sql::execute(
            &c,
            "DELETE FROM mailroom_events WHERE id IN \
                 (SELECT id FROM mailroom_events WHERE seq IS NOT NULL AND at < $1 ORDER BY seq LIMIT $2)",
            &[&cutoff, &limit],
        )
        .await
        .map_err(backend)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_stored_compressed_and_both_forms_read() {
        let email = mailroom_core::testkit::new_email("a", mailroom_core::testkit::t0(), 1, None);
        let mut content = email.content;
        content.html = Some("<p>Hello there, reader.</p>".repeat(100));
        let stored = encode_content(&content).unwrap();
        assert_eq!(stored[0], ZSTD);
        let plain = encode(&content).unwrap();
        assert!(stored.len() * 3 < plain.len(), "{} of {}", stored.len(), plain.len());
        assert_eq!(decode::<EmailContent>(&stored).unwrap(), content);
        // Rows written before compression (plain postcard, version 1) still read.
        assert_eq!(decode::<EmailContent>(&plain).unwrap(), content);
        let mut damaged = stored.clone();
        damaged.truncate(stored.len() / 2);
        assert!(matches!(decode::<EmailContent>(&damaged), Err(StorageError::Corrupt(_))));
    }

    #[test]
    fn values_round_trip_and_unknown_versions_are_corrupt() {
        let v = (7u128 << 100, "tête".to_string(), Some(3u32));
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], V1);
        assert_eq!(decode::<(u128, String, Option<u32>)>(&bytes).unwrap(), v);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(decode::<(u128, String, Option<u32>)>(&other), Err(StorageError::Corrupt(_))));
        assert!(matches!(decode::<u8>(&[]), Err(StorageError::Corrupt(_))));
        assert!(matches!(decode::<(u128, String)>(&bytes[..4]), Err(StorageError::Corrupt(_))));
    }

    #[test]
    fn a_request_log_is_stored_compressed_and_plain_ones_still_read() {
        let body = r#"{"from":"a@acme.test","to":["b@acme.test"],"html":"<p>Hello</p>"}"#.repeat(100);
        let log = mailroom_core::ports::RequestLog {
            id: 1,
            at: chrono::DateTime::from_timestamp(1_780_000_000, 0).unwrap(),
            method: "POST".into(),
            endpoint: "/emails/batch".into(),
            status: 200,
            user_agent: None,
            api_key_id: Some("k".into()),
            request_body: Some(body),
            response_body: None,
            duration_ms: 3,
        };
        let stored = encode_packed(&log, 0).unwrap();
        assert_eq!(stored[0], ZSTD);
        let plain = encode(&log).unwrap();
        assert!(stored.len() * 10 < plain.len(), "{} of {}", stored.len(), plain.len());
        let read: mailroom_core::ports::RequestLog = decode(&stored).unwrap();
        assert_eq!(read.request_body, log.request_body);
        let read: mailroom_core::ports::RequestLog = decode(&plain).unwrap();
        assert_eq!(read.request_body, log.request_body);
        // A small record gains nothing and stays plain.
        assert_eq!(encode_packed(&1u8, 0).unwrap(), encode(&1u8).unwrap());
    }
}
