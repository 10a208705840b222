//! Open sessions kept for reuse, per destination, bounded per destination and in total.
//!
//! Invariants: at most `max_per_destination` sessions to one destination are in use at once
//! and at most `max_connections` in total (semaphores taken before a session is checked out
//! or opened); sessions open (idle + in use) never exceed `max_connections`, because opening
//! one when the limit is reached first closes the longest-idle session of another
//! destination; an idle session past `idle_timeout` is never reused. An idle session may owe
//! an earlier transaction its end-of-data dot (see `SmtpTransport::finish`): whoever takes it
//! next writes that dot before anything else.

use crate::session::Session;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub(crate) struct Pool {
    in_use_total: Arc<Semaphore>,
    per_destination: Mutex<HashMap<String, Arc<Destination>>>,
    idle: Mutex<HashMap<String, Vec<Session>>>,
    open: AtomicUsize,
    max_connections: usize,
    max_per_destination: usize,
    idle_timeout: Duration,
}

/// One destination's limit, and how many checkouts wait for it.
#[derive(Debug)]
struct Destination {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Sessions handed off with a dot owed (or about to be) that no checkout has taken yet:
    /// each stands for one of the waiting checkouts.
    held: AtomicUsize,
}

/// Counts a checkout as waiting until it has its permits (or is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The right to use one session to one destination; returned by [`Pool::checkin`] or dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) key: String,
    _total: OwnedSemaphorePermit,
    _destination: OwnedSemaphorePermit,
}

impl Pool {
    pub(crate) fn new(max_connections: usize, max_per_destination: usize, idle_timeout: Duration) -> Pool {
        let max_connections = max_connections.max(1);
        Pool {
            in_use_total: Arc::new(Semaphore::new(max_connections)),
            per_destination: Mutex::new(HashMap::new()),
            idle: Mutex::new(HashMap::new()),
            open: AtomicUsize::new(0),
            max_connections,
            max_per_destination: max_per_destination.max(1),
            idle_timeout,
        }
    }

    /// Waits for the right to use a session to `key`, then hands out an idle one if there is
    /// one (the caller opens a session otherwise, after [`Pool::make_room`]).
    pub(crate) async fn checkout(&self, key: &str) -> (Lease, Option<Session>) {
        let lease = self.lease(key, true).await;
        let mut expired = Vec::new();
        let session = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle.entry(key.to_string()).or_default();
            // A session that owes a dot first: its message waits for whoever takes it.
            let mut found = list.iter().rposition(|s| s.owed_token().is_some()).map(|at| list.remove(at));
            // Else newest first: the most recently used session is the most likely to be alive.
            while found.is_none()
                && let Some(s) = list.pop()
            {
                if s.last_used.elapsed() > self.idle_timeout {
                    expired.push(s);
                } else {
                    found = Some(s);
                    break;
                }
            }
            found
        };
        if let Some(s) = &session {
            self.left_idle(key, s);
        }
        self.close(expired);
        self.report();
        (lease, session)
    }

    /// The right to use a session to `key`, once a session to it and one in total are free;
    /// `counted`: seen by [`Pool::waiting`] meanwhile (a checkout takes any session, so a
    /// session handed off goes to it; a [`Pool::take_back`] takes only its own).
    async fn lease(&self, key: &str, counted: bool) -> Lease {
        let dest = self.destination(key);
        dest.waiting.fetch_add(usize::from(counted), Ordering::SeqCst);
        let _waiting = counted.then(|| Waiting(&dest.waiting));
        // Destination first: waiting for a busy destination must not hold a total permit
        // that another destination could use.
        let destination = dest.permits.clone().acquire_owned().await.unwrap_or_else(|_| unreachable_closed());
        let total = self.in_use_total.clone().acquire_owned().await.unwrap_or_else(|_| unreachable_closed());
        Lease { key: key.to_string(), _total: total, _destination: destination }
    }

    fn destination(&self, key: &str) -> Arc<Destination> {
        let mut m = self.per_destination.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Destination {
                    permits: Arc::new(Semaphore::new(self.max_per_destination)),
                    waiting: AtomicUsize::new(0),
                    held: AtomicUsize::new(0),
                })
            })
            .clone()
    }

    /// Reserves a waiting checkout for `key` to take a session handed off with its dot owed:
    /// `true` when more checkouts wait than sessions already handed off (each hand-off has a
    /// taker, so no message waits for a grace period because another took its taker).
    /// Undone by [`Pool::untake`] when such a session leaves the idle list, or at once when
    /// the hand-off does not happen.
    pub(crate) fn reserve_taker(&self, key: &str) -> bool {
        let m = self.per_destination.lock().unwrap_or_else(|p| p.into_inner());
        let Some(d) = m.get(key) else { return false };
        d.held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| {
                (d.waiting.load(Ordering::SeqCst) > h).then_some(h + 1)
            })
            .is_ok()
    }

    /// A session of `key` has left the idle list: if it owes a dot, its hand-off no longer
    /// waits for a taker. Called outside the idle list's lock, which is never held while
    /// taking the destinations'.
    fn left_idle(&self, key: &str, session: &Session) {
        if session.owed_token().is_some() {
            self.untake(key);
        }
    }

    /// One hand-off of `key` fewer waits for a taker.
    pub(crate) fn untake(&self, key: &str) {
        let m = self.per_destination.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = m.get(key) {
            let _ = d.held.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| h.checked_sub(1));
        }
    }

    /// The idle session that owes the end of data of hand-off `token`, with a lease to use
    /// it, if no checkout has taken it (then that checkout ends the message). For a
    /// transaction that handed its session off and saw nobody take it.
    pub(crate) async fn take_back(&self, key: &str, token: u64) -> Option<(Lease, Session)> {
        let lease = self.lease(key, false).await;
        let session = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle.get_mut(key)?;
            let at = list.iter().position(|s| s.owed_token() == Some(token))?;
            list.remove(at)
        };
        self.left_idle(key, &session);
        Some((lease, session))
    }

    /// The pool's gauges: sessions open, and in use, across destinations.
    fn report(&self) {
        metrics::gauge!("mailroom_smtp_connections_open").set(self.open.load(Ordering::SeqCst) as f64);
        let in_use = self.max_connections.saturating_sub(self.in_use_total.available_permits());
        metrics::gauge!("mailroom_smtp_connections_in_use").set(in_use as f64);
    }

    /// Called before opening a session: closes the longest-idle session elsewhere if the
    /// total is reached, and counts the new one.
    pub(crate) fn make_room(&self) {
        metrics::counter!("mailroom_smtp_connections_opened_total").increment(1);
        if self.open.fetch_add(1, Ordering::SeqCst) < self.max_connections {
            self.report();
            return;
        }
        let victim = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let oldest = idle
                .iter()
                .filter_map(|(k, v)| v.first().map(|s| (k.clone(), s.last_used)))
                .min_by_key(|(_, t)| *t)
                .map(|(k, _)| k);
            oldest.and_then(|k| idle.get_mut(&k).map(|v| (k, v.remove(0))))
        };
        let victim = victim.map(|(k, s)| {
            self.left_idle(&k, &s);
            s
        });
        self.close(victim.into_iter().collect());
    }

    /// A session counted by [`Pool::make_room`] could not be opened after all.
    pub(crate) fn not_opened(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        self.report();
    }

    /// A session that will not be reused (broken, or its lease ends with it).
    pub(crate) fn discard(&self, session: Option<Session>) {
        self.close(session.into_iter().collect());
    }

    /// Puts a healthy session back for reuse (or closes it when it has done its share).
    pub(crate) fn checkin(&self, lease: Lease, session: Session, max_messages: usize) {
        if session.messages >= max_messages {
            self.close(vec![session]);
        } else {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.entry(lease.key.clone()).or_default().push(session);
        }
        drop(lease);
        self.report();
    }

    fn close(&self, sessions: Vec<Session>) {
        for s in sessions {
            self.open.fetch_sub(1, Ordering::SeqCst);
            // QUIT in the background: closing must not hold up a delivery. Without a runtime
            // (a drop at shutdown) the socket just closes.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(s.quit());
            }
        }
        self.report();
    }
}

#[allow(clippy::panic)]
fn unreachable_closed() -> OwnedSemaphorePermit {
    // The pool never closes its semaphores.
    panic!("the pool's semaphore was closed")
}
