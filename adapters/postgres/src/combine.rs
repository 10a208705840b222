//! Combining: the worker's per-email writes become one write per burst.
//!
//! The worker marks each email's hand-over and records each outcome as it happens, one call
//! per email. Group commit already puts such calls in one transaction, but each still pays its
//! own statements (lock, log, update). A combiner is a task that takes every queued call of
//! one kind, runs them as **one** group write — one `SELECT … FOR UPDATE` for all their
//! emails (in id order), one log insert, one update — and answers each call its own part.
//! While that write waits for its commit, the next calls queue and form the next burst.
//!
//! Each call stays atomic on its own: its rules are applied to copies of its emails' states,
//! and a call that a rule refuses (an outcome's transition error) answers its error and
//! changes nothing, while the others in the burst are written. Only a backend error fails the
//! whole burst (none of it committed), as it fails a whole group.
//!
//! Order: calls are applied in the order queued, so an email named by two calls sees the
//! first's change. In the event log, a burst's emails' events come first (call by call), then
//! the suppressions its outcomes caused: within one outcome its events still precede the
//! suppressions they caused, which is the order every store keeps; between concurrent calls
//! no store promises an order.

use crate::group::Groups;
use crate::{locked_states, put_states, put_suppression};
use mailroom_core::email::{AccountId, EmailId, EmailState};
use mailroom_core::error::StorageError;
use mailroom_core::ports::{ClaimRef, Outcome, SuppressionEntry};
use mailroom_core::store;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

type StorageResult<T> = Result<T, StorageError>;

/// The most calls one burst combines.
const MAX_BURST: usize = 256;

type Marks = (Vec<ClaimRef>, oneshot::Sender<StorageResult<Vec<EmailId>>>);
type Outcomes = (Vec<Outcome>, oneshot::Sender<StorageResult<Vec<EmailId>>>);

/// The two combiners' queues. Dropping it ends their tasks.
#[derive(Debug)]
pub(crate) struct Combiners {
    marks: mpsc::UnboundedSender<Marks>,
    outcomes: mpsc::UnboundedSender<Outcomes>,
}

fn stopped() -> StorageError {
    StorageError::Backend("the store's writer has stopped".into())
}

impl Combiners {
    pub(crate) fn start(groups: Arc<Groups>) -> Combiners {
        let (marks, marks_rx) = mpsc::unbounded_channel();
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        tokio::spawn(combine(groups.clone(), marks_rx, |tx, calls| Box::pin(mark_all(tx, calls))));
        tokio::spawn(combine(groups, outcomes_rx, |tx, calls| Box::pin(apply_all(tx, calls))));
        Combiners { marks, outcomes }
    }

    pub(crate) async fn begin_handover(&self, claims: Vec<ClaimRef>) -> StorageResult<Vec<EmailId>> {
        let (answer, answered) = oneshot::channel();
        self.marks.send((claims, answer)).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    pub(crate) async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> StorageResult<Vec<EmailId>> {
        let (answer, answered) = oneshot::channel();
        self.outcomes.send((outcomes, answer)).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// One combiner: a burst of queued calls, one group write for all of them, each answered.
async fn combine<I, W>(
    groups: Arc<Groups>,
    mut calls: mpsc::UnboundedReceiver<(I, oneshot::Sender<StorageResult<Vec<EmailId>>>)>,
    write: W,
) where
    I: Send + 'static,
    W: for<'c> Fn(
            &'c crate::group::Conn,
            Vec<I>,
        ) -> crate::futures_lite::BoxFuture<'c, StorageResult<Vec<StorageResult<Vec<EmailId>>>>>
        + Copy
        + Send
        + Sync
        + 'static,
{
    while let Some(first) = calls.recv().await {
        let mut burst = vec![first];
        while burst.len() < MAX_BURST {
            match calls.try_recv() {
                Ok(call) => burst.push(call),
                Err(_) => break,
            }
        }
        let (inputs, answers): (Vec<I>, Vec<_>) = burst.into_iter().unzip();
        match groups.write(move |tx| write(tx, inputs)).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Marks every call's claims as being handed over; each call's answer is its lost claims.
async fn mark_all(
    tx: &crate::group::Conn,
    calls: Vec<Vec<ClaimRef>>,
) -> StorageResult<Vec<StorageResult<Vec<EmailId>>>> {
    let ids: Vec<EmailId> = calls.iter().flatten().map(|c| c.id).collect();
    let mut states = locked_states(tx, &ids).await?;
    let mut marked: Vec<EmailId> = Vec::new();
    let mut answers = Vec::with_capacity(calls.len());
    for claims in &calls {
        let mut lost = Vec::new();
        for c in claims {
            let handed = states.get_mut(&c.id).is_some_and(|state| store::begin_handover(state, c.token));
            if handed { marked.push(c.id) } else { lost.push(c.id) }
        }
        answers.push(Ok(lost));
    }
    // A mark adds no event: nothing gained, only the rows change.
    let changed: Vec<(usize, &EmailState)> =
        marked.iter().filter_map(|id| states.get(id)).map(|s| (s.events.len(), s)).collect();
    put_states(tx, &changed).await?;
    Ok(answers)
}

/// Applies every call's outcomes (each call atomic on its own); each call's answer is its
/// lost claims, or the rule that refused it.
async fn apply_all(
    tx: &crate::group::Conn,
    calls: Vec<Vec<Outcome>>,
) -> StorageResult<Vec<StorageResult<Vec<EmailId>>>> {
    // Rows locked in id order, in one statement: two processes recording overlapping
    // outcomes cannot deadlock.
    let ids: Vec<EmailId> = calls.iter().flatten().map(|o| o.claim.id).collect();
    let mut states = locked_states(tx, &ids).await?;
    let before: HashMap<EmailId, usize> = states.iter().map(|(id, s)| (*id, s.events.len())).collect();
    let mut changed: Vec<EmailId> = Vec::new();
    let mut listed: Vec<(AccountId, &SuppressionEntry)> = Vec::new();
    let mut answers = Vec::with_capacity(calls.len());
    for outcomes in &calls {
        match apply_call(&states, outcomes) {
            Ok(applied) => {
                for (id, state) in applied.states {
                    states.insert(id, state);
                    if !changed.contains(&id) {
                        changed.push(id);
                    }
                }
                listed.extend(applied.suppressions);
                answers.push(Ok(applied.lost));
            }
            Err(e) => answers.push(Err(e)),
        }
    }
    let changed: Vec<(usize, &EmailState)> =
        changed.iter().filter_map(|id| states.get(id).map(|s| (before.get(id).copied().unwrap_or(0), s))).collect();
    put_states(tx, &changed).await?;
    for (account, sup) in listed {
        put_suppression(tx, &account, sup).await?;
    }
    Ok(answers)
}

/// What one call's outcomes change: its emails' new states (in the order first changed), the
/// suppressions they list, and the claims found lost.
struct Applied<'o> {
    states: Vec<(EmailId, EmailState)>,
    suppressions: Vec<(AccountId, &'o SuppressionEntry)>,
    lost: Vec<EmailId>,
}

/// Applies one call's outcomes, in the given order, to copies of its emails' `states`: a call
/// the lifecycle refuses answers its error and changes nothing. An email named twice sees its
/// first outcome.
fn apply_call<'o>(states: &HashMap<EmailId, EmailState>, outcomes: &'o [Outcome]) -> StorageResult<Applied<'o>> {
    let mut applied = Applied { states: Vec::new(), suppressions: Vec::new(), lost: Vec::new() };
    // The emails an outcome changed, in the order first changed (an email whose claim was
    // lost is copied but not written back).
    let mut order: Vec<EmailId> = Vec::new();
    for o in outcomes {
        let id = o.claim.id;
        let at = match applied.states.iter().position(|(i, _)| *i == id) {
            Some(at) => at,
            None => match states.get(&id) {
                Some(s) => {
                    applied.states.push((id, s.clone()));
                    applied.states.len() - 1
                }
                None => {
                    applied.lost.push(id);
                    continue;
                }
            },
        };
        let state = &mut applied.states[at].1;
        if !store::apply_outcome(state, o)? {
            applied.lost.push(id);
            continue;
        }
        applied.suppressions.extend(o.suppressions.iter().map(|sup| (state.account.clone(), sup)));
        if !order.contains(&id) {
            order.push(id);
        }
    }
    let mut copies = std::mem::take(&mut applied.states);
    for id in order {
        if let Some(at) = copies.iter().position(|(i, _)| *i == id) {
            applied.states.push(copies.swap_remove(at));
        }
    }
    Ok(applied)
}
