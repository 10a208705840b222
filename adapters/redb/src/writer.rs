//! Group commit: one writer thread, a queue, one durable transaction per group.
//!
//! Every write of the store is a closure sent to the writer. The writer takes whatever is
//! queued (up to [`MAX_GROUP`] writes), runs the writes one after the other inside one write
//! transaction, commits it once (one fsync for the group), and only then answers each caller.
//!
//! Invariants:
//! - **nothing is acknowledged before it is durable**: a caller's answer is sent after the
//!   commit that holds its write, and an error of that commit is every caller's error;
//! - **each write stays atomic on its own**: a write either changes nothing and answers an
//!   error, or makes all its changes. The store's writes are written so that every error they
//!   can answer by themselves (a lifecycle refusal, an idempotency conflict, a corrupt record)
//!   happens before their first change ("compute, then write"); only the backend can fail a
//!   write halfway, and then the whole group is aborted and every write in it answers that
//!   error (none was committed) — the writes not yet run wait for the next group;
//! - writes run in the order they were queued, so a write sees every earlier one, committed
//!   or in the same group, exactly as if each had its own transaction.
//!
//! Why a thread and not a lock: redb allows one write transaction at a time; with one
//! transaction per write, concurrent callers each wait for their own fsync. The queue turns N
//! concurrent writes into one transaction and one fsync.

use mailroom_core::error::StorageError;
use redb::{Database, Durability, WriteTransaction};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};

/// The most writes one transaction holds: large enough to absorb any realistic burst, small
/// enough that one group's transaction stays short.
pub(crate) const MAX_GROUP: usize = 1024;

/// What a write leaves for after the commit: its caller's answer, and whether it failed in a
/// way that spoils the whole group.
struct Done {
    deliver: Box<dyn FnOnce(Result<(), StorageError>) + Send>,
    poisoned: Option<StorageError>,
}

/// One queued write.
trait Job: Send {
    /// Runs the write in the group's transaction.
    fn run(self: Box<Self>, txn: &WriteTransaction) -> Done;
    /// Answers the caller without running (no transaction could be begun).
    fn fail(self: Box<Self>, e: StorageError);
}

struct WriteJob<F, T> {
    f: F,
    answer: tokio::sync::oneshot::Sender<Result<T, StorageError>>,
}

impl<F, T> Job for WriteJob<F, T>
where
    F: FnOnce(&WriteTransaction) -> Result<T, StorageError> + Send,
    T: Send + 'static,
{
    fn run(self: Box<Self>, txn: &WriteTransaction) -> Done {
        let WriteJob { f, answer } = *self;
        let result = f(txn);
        // Only the backend fails a write after it began changing things (see the module's
        // invariants): then the transaction holds half a write and cannot be committed.
        let poisoned = match &result {
            Err(e @ StorageError::Backend(_)) => Some(e.clone()),
            _ => None,
        };
        Done {
            poisoned,
            deliver: Box::new(move |commit| {
                let _ = answer.send(match (result, commit) {
                    (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                    (Ok(v), Ok(())) => Ok(v),
                });
            }),
        }
    }

    fn fail(self: Box<Self>, e: StorageError) {
        let _ = self.answer.send(Err(e));
    }
}

/// Counts of what the writer did (tests and metrics).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) groups: AtomicU64,
    pub(crate) writes: AtomicU64,
}

/// The writer thread and its queue. Dropping it lets the thread finish its group and stop.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub(crate) stats: Arc<Stats>,
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl Writer {
    /// Starts the writer over `db`; `fsync` says whether commits are durable, `quick_repair`
    /// whether each commit records the allocator state ([`crate::Options::quick_repair`]).
    /// `settle` runs after each group, told whether it committed, before any of its writes is
    /// answered (the store settles its in-memory indexes there).
    pub(crate) fn start(
        db: Arc<RwLock<Database>>,
        fsync: Arc<AtomicBool>,
        quick_repair: bool,
        settle: Box<dyn Fn(bool) + Send>,
    ) -> Result<Writer, StorageError> {
        let (queue, jobs) = mpsc::channel::<Box<dyn Job>>();
        let stats = Arc::new(Stats::default());
        let counted = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || run(&db, &fsync, quick_repair, &jobs, &counted, &*settle))
            .map_err(backend)?;
        Ok(Writer { queue: Mutex::new(Some(queue)), thread: Mutex::new(Some(thread)), stats })
    }

    /// Runs `f` in the next group's transaction; its result once the group is durable.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<T, StorageError>>();
        let job: Box<dyn Job> = Box::new(WriteJob { f, answer });
        {
            let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let sender = queue.as_ref().ok_or_else(|| backend("the store is closed"))?;
            sender.send(job).map_err(|_| backend("the store's writer stopped"))?;
        }
        answered.await.map_err(|_| backend("the store's writer stopped"))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread after its current group; waiting for it means
        // the file is closed when the store is gone (a reopen right after must succeed).
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn run(
    db: &RwLock<Database>,
    fsync: &AtomicBool,
    quick_repair: bool,
    jobs: &mpsc::Receiver<Box<dyn Job>>,
    stats: &Stats,
    settle: &(dyn Fn(bool) + Send),
) {
    let mut pending: std::collections::VecDeque<Box<dyn Job>> = std::collections::VecDeque::new();
    loop {
        if pending.is_empty() {
            match jobs.recv() {
                Ok(j) => pending.push_back(j),
                Err(_) => return,
            }
        }
        while pending.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(j) => pending.push_back(j),
                Err(_) => break,
            }
        }
        let began = std::time::Instant::now();
        let db = db.read().unwrap_or_else(|p| p.into_inner());
        let txn = db.begin_write().map_err(backend).and_then(|mut t| {
            let durability = if fsync.load(Ordering::Relaxed) { Durability::Immediate } else { Durability::None };
            t.set_durability(durability).map_err(backend)?;
            t.set_quick_repair(quick_repair);
            Ok(t)
        });
        let txn = match txn {
            Ok(t) => t,
            Err(e) => {
                // No transaction at all: every queued write answers why.
                tracing::warn!(target: "mailroom::redb", error = %e, "a write transaction could not begin");
                for job in pending.drain(..) {
                    job.fail(e.clone());
                }
                continue;
            }
        };
        let mut done: Vec<Done> = Vec::with_capacity(pending.len());
        let mut poisoned = None;
        while let Some(job) = pending.pop_front() {
            let d = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&txn))) {
                Ok(d) => d,
                Err(_) => {
                    poisoned = Some(backend("a write panicked"));
                    break;
                }
            };
            let spoiled = d.poisoned.clone();
            done.push(d);
            if let Some(e) = spoiled {
                poisoned = Some(e);
                break;
            }
        }
        let written = std::time::Instant::now();
        let outcome = match poisoned {
            // Dropping the transaction aborts it: nothing of the group was written.
            Some(e) => {
                drop(txn);
                Err(e)
            }
            None => txn.commit().map_err(backend),
        };
        settle(outcome.is_ok());
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats.writes.fetch_add(done.len() as u64, Ordering::Relaxed);
        metrics::counter!("mailroom_redb_commits_total").increment(1);
        metrics::histogram!("mailroom_redb_group_writes").record(done.len() as f64);
        // Why both: the writer is the store's one lane. When writes wait (their callers'
        // latency grows), these say whether the group's own work or the commit's fixed cost
        // (page writes and the flush) is what keeps it busy.
        metrics::histogram!("mailroom_redb_group_write_seconds").record((written - began).as_secs_f64());
        metrics::histogram!("mailroom_redb_commit_seconds").record(written.elapsed().as_secs_f64());
        for d in done {
            (d.deliver)(outcome.clone());
        }
    }
}
