//! Open sessions kept for reuse, per destination, bounded per destination and in total.
//!
//! Invariants: at most `max_per_destination` sessions to one destination are in use at once
//! and at most `max_connections` in total (semaphores taken before a session is checked out
//! or opened); sessions open (idle + in use) never exceed `max_connections`, because opening
//! one when the limit is reached first closes the longest-idle session of another
//! destination; an idle session past `idle_timeout` is never reused.

use crate::session::Session;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub(crate) struct Pool {
    in_use_total: Arc<Semaphore>,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    idle: Mutex<HashMap<String, Vec<Session>>>,
    open: AtomicUsize,
    max_connections: usize,
    max_per_destination: usize,
    idle_timeout: Duration,
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
        let dest = {
            let mut m = self.per_destination.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(key.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.max_per_destination))).clone()
        };
        // Destination first: waiting for a busy destination must not hold a total permit
        // that another destination could use.
        let destination = dest.acquire_owned().await.unwrap_or_else(|_| unreachable_closed());
        let total = self.in_use_total.clone().acquire_owned().await.unwrap_or_else(|_| unreachable_closed());
        let lease = Lease { key: key.to_string(), _total: total, _destination: destination };
        let mut expired = Vec::new();
        let session = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle.entry(key.to_string()).or_default();
            let mut found = None;
            // Newest first: the most recently used session is the most likely to be alive.
            while let Some(s) = list.pop() {
                if s.last_used.elapsed() > self.idle_timeout {
                    expired.push(s);
                } else {
                    found = Some(s);
                    break;
                }
            }
            found
        };
        self.close(expired);
        self.report();
        (lease, session)
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
            oldest.and_then(|k| idle.get_mut(&k).map(|v| v.remove(0)))
        };
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
