//! The worker's hand-over permits: at most `handovers` emails at once between their durable
//! hand-over mark and their durable outcome (the emails a crash can leave in doubt).
//!
//! Why not a semaphore: an email that takes a released permit writes its mark after the
//! outcome that released it is durable, so every hand-over waited for two commits (its mark's
//! and its outcome's) besides its SMTP exchange, and the store's writer, busy with both,
//! set the pace of delivery. Here an email whose outcome is ready takes the first email in
//! line with it: one storage write records its outcome and marks the other
//! ([`crate::ports::Storage::record_outcomes_then_begin_handover`]), and the permit passes
//! with that write. The mark is never durable before the outcome that freed its permit, so
//! the bound holds; the next email waits for one commit, not two.
//!
//! Invariants:
//! - every permit is one [`Permit`] value (or counted free), and dropping it gives it back:
//!   to the first email in line, or to the count;
//! - a permit travels inside the answer to an email in line ([`Grant`]), so an answer that
//!   cannot be delivered, or is never read, drops its permit and so gives it back.

use crate::email::EmailId;
use crate::error::StorageError;
use crate::ports::ClaimRef;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// What an email in line is told, with the permit it now holds.
#[derive(Debug)]
pub(crate) enum Grant {
    /// No mark: the email marks itself.
    Free(Permit),
    /// The answer of the write that marked it (the claims found lost, or the error of a
    /// write that failed as a whole).
    Marked(Permit, Result<Vec<EmailId>, StorageError>),
}

/// An email waiting for a permit, as the email that takes it from the line sees it.
#[derive(Debug)]
pub(crate) struct Waiter {
    /// The claim to mark.
    pub(crate) claim: ClaimRef,
    answer: oneshot::Sender<Grant>,
}

impl Waiter {
    /// Answers the email in line. Should it no longer listen, the grant and its permit are
    /// dropped, which gives the permit to the next in line.
    pub(crate) fn grant(self, grant: Grant) {
        let _ = self.answer.send(grant);
    }
}

#[derive(Debug)]
struct Line {
    free: usize,
    waiting: VecDeque<Waiter>,
}

/// The permits and the line.
#[derive(Debug)]
pub(crate) struct Gate {
    line: Mutex<Line>,
}

/// A permit held; dropping it gives it back.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<Gate>,
}

/// What [`Gate::enter`] gives.
#[derive(Debug)]
pub(crate) enum Entry {
    /// A permit at once.
    Now(Permit),
    /// A place in line: the answer comes with a permit.
    Wait(oneshot::Receiver<Grant>),
}

impl Gate {
    pub(crate) fn new(permits: usize) -> Arc<Gate> {
        Arc::new(Gate { line: Mutex::new(Line { free: permits.max(1), waiting: VecDeque::new() }) })
    }

    fn line(&self) -> std::sync::MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit for `claim`'s hand-over now, or a place in line. First come, first served:
    /// a free permit is taken only when nobody waits.
    pub(crate) fn enter(self: &Arc<Self>, claim: ClaimRef) -> Entry {
        let mut line = self.line();
        if line.free > 0 && line.waiting.is_empty() {
            line.free -= 1;
            return Entry::Now(Permit { gate: Arc::clone(self) });
        }
        let (answer, answered) = oneshot::channel();
        line.waiting.push_back(Waiter { claim, answer });
        Entry::Wait(answered)
    }

    /// The first email in line, to be marked in the same write as the caller's outcome and
    /// then [`granted`](Waiter::grant) the caller's permit. `None`: nobody waits.
    pub(crate) fn next_in_line(&self) -> Option<Waiter> {
        self.line().waiting.pop_front()
    }

    /// A permit given back: to the first email in line, else counted free. The answer is sent
    /// outside the lock: one that cannot be delivered (the email left the line) drops its
    /// permit, which comes back here for the next in line.
    fn release(self: &Arc<Self>) {
        let waiter = {
            let mut line = self.line();
            match line.waiting.pop_front() {
                Some(w) => w,
                None => {
                    line.free += 1;
                    return;
                }
            }
        };
        waiter.grant(Grant::Free(Permit { gate: Arc::clone(self) }));
    }

    /// Permits free now (tests).
    #[cfg(test)]
    fn free(&self) -> usize {
        self.line().free
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(n: u128) -> ClaimRef {
        ClaimRef { id: EmailId::from_u128(n), token: 0 }
    }

    #[tokio::test]
    async fn permits_are_given_in_order_and_never_more_than_there_are() {
        let gate = Gate::new(2);
        let Entry::Now(a) = gate.enter(claim(1)) else { panic!("a free permit") };
        let Entry::Now(b) = gate.enter(claim(2)) else { panic!("a free permit") };
        let Entry::Wait(c) = gate.enter(claim(3)) else { panic!("in line: both permits are held") };
        let Entry::Wait(d) = gate.enter(claim(4)) else { panic!("in line") };
        assert_eq!(gate.free(), 0);
        // A dropped permit goes to the first in line.
        drop(a);
        let Ok(Grant::Free(c)) = c.await else { panic!("a free permit for the first in line") };
        // A permit passed with a mark goes to whoever was taken from the line.
        let w = gate.next_in_line().expect("d waits");
        assert_eq!(w.claim.id, EmailId::from_u128(4));
        w.grant(Grant::Marked(b, Ok(vec![])));
        let Ok(Grant::Marked(d, Ok(lost))) = d.await else { panic!("a permit with its mark") };
        assert!(lost.is_empty());
        assert_eq!(gate.free(), 0);
        drop((c, d));
        assert_eq!(gate.free(), 2);
    }

    #[tokio::test]
    async fn a_waiter_that_left_does_not_swallow_a_permit() {
        let gate = Gate::new(1);
        let Entry::Now(a) = gate.enter(claim(1)) else { panic!("a free permit") };
        let Entry::Wait(gone) = gate.enter(claim(2)) else { panic!("in line") };
        let Entry::Wait(next) = gate.enter(claim(3)) else { panic!("in line") };
        drop(gone);
        drop(a);
        let next = next.await;
        assert!(matches!(next, Ok(Grant::Free(_))), "the permit skipped the waiter that left");
        drop(next);
        assert_eq!(gate.free(), 1);
        // Passed to a waiter that left, it goes on to the count.
        let Entry::Now(a) = gate.enter(claim(4)) else { panic!("a free permit") };
        let Entry::Wait(gone) = gate.enter(claim(5)) else { panic!("in line") };
        let w = gate.next_in_line().expect("5 waits");
        drop(gone);
        w.grant(Grant::Marked(a, Ok(vec![])));
        assert_eq!(gate.free(), 1);
    }

    #[tokio::test]
    async fn a_free_permit_is_not_taken_ahead_of_the_line() {
        let gate = Gate::new(1);
        let Entry::Now(a) = gate.enter(claim(1)) else { panic!("a free permit") };
        let Entry::Wait(first) = gate.enter(claim(2)) else { panic!("in line") };
        drop(a);
        // The permit went to the first in line; a newcomer waits behind it.
        assert!(matches!(gate.enter(claim(3)), Entry::Wait(_)));
        assert!(matches!(first.await, Ok(Grant::Free(_))));
    }

    /// What a test step does to the gate.
    #[derive(Debug, Clone)]
    enum Step {
        /// An email asks for a permit.
        Enter,
        /// The `n`-th holder (modulo) drops its permit.
        Drop(usize),
        /// The `n`-th holder finishes: it takes the first in line and passes its permit, with
        /// a mark or without one (as after a failed write); with nobody in line it keeps it.
        Pass(usize, bool),
        /// The `n`-th email in line (modulo) stops waiting.
        Leave(usize),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => Just(Step::Enter),
            2 => any::<usize>().prop_map(Step::Drop),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(n, m)| Step::Pass(n, m)),
            1 => any::<usize>().prop_map(Step::Leave),
        ]
    }

    proptest::proptest! {
        /// Against a model: permits are never more than there are, none is lost (held plus
        /// free is always the total), nobody waits while one is free, and the line is served
        /// first come, first served.
        #[test]
        fn permits_are_conserved_and_the_line_is_served_in_order(
            total in 1usize..5,
            steps in proptest::collection::vec(step(), 0..80),
        ) {
            let gate = Gate::new(total);
            let mut holders: Vec<(u128, Permit)> = Vec::new();
            let mut line: VecDeque<(u128, oneshot::Receiver<Grant>)> = VecDeque::new();
            let mut next = 0u128;
            let mut served: Vec<u128> = Vec::new();
            for s in steps {
                match s {
                    Step::Enter => {
                        next += 1;
                        match gate.enter(claim(next)) {
                            Entry::Now(p) => holders.push((next, p)),
                            Entry::Wait(rx) => line.push_back((next, rx)),
                        }
                    }
                    Step::Drop(n) if !holders.is_empty() => {
                        let i = n % holders.len();
                        drop(holders.remove(i));
                    }
                    Step::Pass(n, marked) if !holders.is_empty() => {
                        let i = n % holders.len();
                        if let Some(w) = gate.next_in_line() {
                            let (_, p) = holders.remove(i);
                            w.grant(if marked { Grant::Marked(p, Ok(vec![])) } else { Grant::Free(p) });
                        }
                    }
                    Step::Leave(n) if !line.is_empty() => {
                        let i = n % line.len();
                        drop(line.remove(i));
                    }
                    _ => {}
                }
                // Whoever was answered holds a permit now, in the order they came.
                while let Some((id, rx)) = line.front_mut() {
                    match rx.try_recv() {
                        Ok(Grant::Free(p) | Grant::Marked(p, _)) => {
                            let id = *id;
                            line.pop_front();
                            served.push(id);
                            holders.push((id, p));
                        }
                        Err(_) => break,
                    }
                }
                proptest::prop_assert!(line.iter().all(|(_, rx)| rx.is_empty()), "only the front may be answered first");
                proptest::prop_assert_eq!(holders.len() + gate.free(), total, "held plus free is the total");
                proptest::prop_assert!(gate.free() == 0 || line.is_empty(), "nobody waits while a permit is free");
            }
            proptest::prop_assert!(served.windows(2).all(|w| w[0] < w[1]), "served in order: {:?}", served);
        }
    }
}
