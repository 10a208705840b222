//! Group commit: a process's concurrent writes share transactions and commits.
//!
//! Every write of the store is a job sent to one of a few *lanes*. A lane is a task that
//! takes a pooled connection, begins a transaction, and runs whatever jobs are queued (up to
//! [`MAX_GROUP`]) one after the other, each inside a savepoint; when its queue is empty it
//! commits once and only then answers each job's caller.
//!
//! Invariants:
//! - **nothing is acknowledged before it is durable**: a caller's answer is sent after the
//!   commit that holds its write; an error of that commit (or a broken connection) is every
//!   caller's error in the group, and none of their writes was committed;
//! - **each write stays atomic on its own**: a job that answers an error is rolled back to its
//!   savepoint (its own changes and the row locks it took are undone) and fails alone; the
//!   others in the group go on;
//! - jobs of one lane run in the order they were queued, so a write sees every earlier one of
//!   its lane, committed or in the same group.
//!
//! Why lanes and not one transaction per write: PostgreSQL flushes its WAL once per commit,
//! and each transaction costs a `BEGIN` and a `COMMIT` round trip; a burst of requests (or a
//! worker's marks and outcomes beside them) then pays those per write. Why a task and not the
//! caller's own future: a caller can be cancelled at any await (a client that hangs up), and a
//! job left half-run would leave the group's transaction in an unknown state. Why several
//! lanes: one connection runs one statement at a time; a second lane lets PostgreSQL work on
//! two groups at once while the first waits for its flush.
//!
//! What grouping adds, and how it is bounded: a group holds its row locks until it commits,
//! so a lock another process wants waits for the group, not only for the write that took it;
//! groups stay short ([`MAX_GROUP`] jobs, committed as soon as the queue is empty). Locks taken
//! by different jobs of one group are not taken in one global order, so two processes' groups
//! can deadlock; PostgreSQL detects it, fails one statement, and that job alone answers the
//! error (a transient backend error: its caller retries as for any lost connection). Savepoints
//! beyond 64 in one transaction make every snapshot in the cluster slower (PostgreSQL's
//! subtransaction cache overflows), which is why [`MAX_GROUP`] stays below that.

use crate::{backend, futures_lite::BoxFuture};
use deadpool_postgres::{ClientWrapper, Object, Pool};
use mailroom_core::error::StorageError;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{mpsc, oneshot};

/// The most jobs one transaction holds (below PostgreSQL's 64 cached subtransactions).
pub(crate) const MAX_GROUP: usize = 48;

/// What a job's closure runs on: the group's connection, inside the job's savepoint.
pub type Conn = ClientWrapper;

/// What a job leaves for after the commit: whether it succeeded (else it is rolled back to
/// its savepoint) and its caller's answer.
struct Ran {
    ok: bool,
    deliver: Deliver,
}

/// Answers a job's caller, given its group's commit.
type Deliver = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// One queued write.
trait Job: Send {
    /// Runs the write on the group's connection.
    fn run<'c>(self: Box<Self>, conn: &'c Conn) -> BoxFuture<'c, Ran>;
    /// Answers the caller without running it.
    fn fail(self: Box<Self>, e: StorageError);
}

struct WriteJob<F, T> {
    f: F,
    answer: oneshot::Sender<Result<T, StorageError>>,
}

impl<F, T> Job for WriteJob<F, T>
where
    F: for<'c> FnOnce(&'c Conn) -> BoxFuture<'c, Result<T, StorageError>> + Send + 'static,
    T: Send + 'static,
{
    fn run<'c>(self: Box<Self>, conn: &'c Conn) -> BoxFuture<'c, Ran> {
        let WriteJob { f, answer } = *self;
        Box::pin(async move {
            let result = f(conn).await;
            Ran {
                ok: result.is_ok(),
                deliver: Box::new(move |commit| {
                    let _ = answer.send(match (result, commit) {
                        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                        (Ok(v), Ok(())) => Ok(v),
                    });
                }),
            }
        })
    }

    fn fail(self: Box<Self>, e: StorageError) {
        let _ = self.answer.send(Err(e));
    }
}

/// Counts of what the lanes did (tests and metrics).
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Transactions committed (or attempted).
    pub groups: AtomicU64,
    /// Jobs run in them.
    pub writes: AtomicU64,
}

/// The lanes and their queues. Dropping it ends the lanes once their queues are empty.
#[derive(Debug)]
pub(crate) struct Groups {
    lanes: Vec<mpsc::UnboundedSender<Box<dyn Job>>>,
    next: AtomicUsize,
    pub(crate) stats: Arc<GroupStats>,
}

impl Groups {
    /// Starts `lanes` lanes (at least one) taking connections from `pool`.
    pub(crate) fn start(pool: Pool, lanes: usize) -> Groups {
        let stats = Arc::new(GroupStats::default());
        let lanes = (0..lanes.max(1))
            .map(|_| {
                let (queue, jobs) = mpsc::unbounded_channel();
                tokio::spawn(lane(pool.clone(), jobs, stats.clone()));
                queue
            })
            .collect();
        Groups { lanes, next: AtomicUsize::new(0), stats }
    }

    /// Runs `f` in a lane's next group; its result once that group is committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: for<'c> FnOnce(&'c Conn) -> BoxFuture<'c, Result<T, StorageError>> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        // Round robin: a burst spreads over the lanes, and each lane's queue groups its share.
        let lane = &self.lanes[self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len()];
        lane.send(Box::new(WriteJob { f, answer }))
            .map_err(|_| StorageError::Backend("the store's writer has stopped".into()))?;
        answered.await.map_err(|_| StorageError::Backend("the store's writer dropped a write".into()))?
    }
}

/// One lane: a group per burst of queued jobs, until the queue is closed.
async fn lane(pool: Pool, mut jobs: mpsc::UnboundedReceiver<Box<dyn Job>>, stats: Arc<GroupStats>) {
    while let Some(first) = jobs.recv().await {
        let conn = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                first.fail(backend(e));
                continue;
            }
        };
        group(conn, first, &mut jobs, &stats).await;
    }
}

/// Runs `first` and whatever else is queued in one transaction on `conn`, commits, answers.
async fn group(
    conn: Object,
    first: Box<dyn Job>,
    jobs: &mut mpsc::UnboundedReceiver<Box<dyn Job>>,
    stats: &GroupStats,
) {
    stats.groups.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = conn.batch_execute("BEGIN; SAVEPOINT w").await {
        first.fail(backend(e));
        drop(Object::take(conn));
        return;
    }
    let mut ran: Vec<Deliver> = Vec::new();
    let mut job = Some(first);
    let mut broken: Option<StorageError> = None;
    while let Some(j) = job.take() {
        stats.writes.fetch_add(1, Ordering::Relaxed);
        let Ran { ok, deliver } = j.run(&conn).await;
        ran.push(deliver);
        // The next job, if one is queued and the group has room; else the group ends here.
        job = if ran.len() < MAX_GROUP { jobs.try_recv().ok() } else { None };
        // One round trip between two jobs: end this one's savepoint (keep or undo its
        // changes), and begin the next one's — or commit.
        let step = match (ok, job.is_some()) {
            (true, true) => "RELEASE SAVEPOINT w; SAVEPOINT w",
            // After a rollback the savepoint still stands, ready for the next job.
            (false, true) => "ROLLBACK TO SAVEPOINT w",
            (true, false) => "COMMIT",
            (false, false) => "ROLLBACK TO SAVEPOINT w; COMMIT",
        };
        if let Err(e) = conn.batch_execute(step).await {
            broken = Some(backend(e));
            if let Some(j) = job.take() {
                // Not run: its caller gets the same error as the group's.
                j.fail(broken.clone().unwrap_or_else(|| StorageError::Backend("broken".into())));
            }
        }
    }
    let commit = match broken {
        Some(e) => {
            // The connection's state is unknown (a transaction left open or aborted): it is
            // not given back to the pool.
            drop(Object::take(conn));
            Err(e)
        }
        None => Ok(()),
    };
    for deliver in ran {
        deliver(commit.clone());
    }
}
