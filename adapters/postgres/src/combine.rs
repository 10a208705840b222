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
//! Three combiners: hand-over marks, outcomes, and outcomes each followed by the next email's
//! mark (how the worker passes a hand-over permit: both in one write, so the mark is never
//! committed before the outcome that freed its permit; a call whose outcome is refused marks
//! nothing).
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

type Answer<R> = oneshot::Sender<StorageResult<R>>;
type Marks = (Vec<ClaimRef>, Answer<Vec<EmailId>>);
type Outcomes = (Vec<Outcome>, Answer<Vec<EmailId>>);
/// An outcome call and the marks that follow it (`Storage::record_outcomes_then_begin_handover`).
type Finished = ((Vec<Outcome>, Vec<ClaimRef>), Answer<(Vec<EmailId>, StorageResult<Vec<EmailId>>)>);

/// The three combiners' queues. Dropping it ends their tasks.
#[derive(Debug)]
pub(crate) struct Combiners {
    marks: mpsc::UnboundedSender<Marks>,
    outcomes: mpsc::UnboundedSender<Outcomes>,
    finished: mpsc::UnboundedSender<Finished>,
}

fn stopped() -> StorageError {
    StorageError::Backend("the store's writer has stopped".into())
}

impl Combiners {
    pub(crate) fn start(groups: Arc<Groups>) -> Combiners {
        let (marks, marks_rx) = mpsc::unbounded_channel();
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        let (finished, finished_rx) = mpsc::unbounded_channel();
        tokio::spawn(combine(groups.clone(), marks_rx, |tx, calls| Box::pin(mark_all(tx, calls))));
        tokio::spawn(combine(groups.clone(), outcomes_rx, |tx, calls| Box::pin(apply_all(tx, calls))));
        tokio::spawn(combine(groups, finished_rx, |tx, calls| Box::pin(finish_and_mark_all(tx, calls))));
        Combiners { marks, outcomes, finished }
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

    /// Outcomes, then marks of other emails, in one write (both or neither).
    pub(crate) async fn record_outcomes_then_begin_handover(
        &self,
        outcomes: Vec<Outcome>,
        claims: Vec<ClaimRef>,
    ) -> StorageResult<(Vec<EmailId>, StorageResult<Vec<EmailId>>)> {
        let (answer, answered) = oneshot::channel();
        self.finished.send(((outcomes, claims), answer)).map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// One combiner: a burst of queued calls, one group write for all of them, each answered.
async fn combine<I, R, W>(groups: Arc<Groups>, mut calls: mpsc::UnboundedReceiver<(I, Answer<R>)>, write: W)
where
    I: Send + 'static,
    R: Send + 'static,
    W: for<'c> Fn(
            &'c crate::group::Conn,
            Vec<I>,
        ) -> crate::futures_lite::BoxFuture<'c, StorageResult<Vec<StorageResult<R>>>>
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
    let (answers, marked) = mark_on(&mut states, &calls);
    put_states(tx, &marks_written(&states, &marked)).await?;
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
    let applied = apply_on(&mut states, &calls);
    put_states(tx, &outcomes_written(&states, &before, &applied.changed)).await?;
    for (account, sup) in applied.listed {
        put_suppression(tx, &account, sup).await?;
    }
    Ok(applied.answers)
}

/// Each call's outcomes, then its marks (of other emails), as one write: the rows of both
/// locked in one statement (id order), a call whose outcomes a rule refuses marks nothing and
/// answers that refusal; one update for every changed row.
async fn finish_and_mark_all(
    tx: &crate::group::Conn,
    calls: Vec<(Vec<Outcome>, Vec<ClaimRef>)>,
) -> StorageResult<Vec<StorageResult<(Vec<EmailId>, StorageResult<Vec<EmailId>>)>>> {
    let (outcomes, marks): (Vec<Vec<Outcome>>, Vec<Vec<ClaimRef>>) = calls.into_iter().unzip();
    let ids: Vec<EmailId> =
        outcomes.iter().flatten().map(|o| o.claim.id).chain(marks.iter().flatten().map(|c| c.id)).collect();
    let mut states = locked_states(tx, &ids).await?;
    let before: HashMap<EmailId, usize> = states.iter().map(|(id, s)| (*id, s.events.len())).collect();
    let applied = apply_on(&mut states, &outcomes);
    let marks: Vec<Vec<ClaimRef>> = applied
        .answers
        .iter()
        .zip(marks)
        .map(|(answer, claims)| if answer.is_ok() { claims } else { Vec::new() })
        .collect();
    // Marks are judged on the states the outcomes left: an outcome ends its email's claim, so
    // an email both finished and marked is reported lost, and no row is written twice.
    let (marked_answers, marked) = mark_on(&mut states, &marks);
    // The outcomes' rows (their events logged in call order), then the marks' (no event).
    let mut written = outcomes_written(&states, &before, &applied.changed);
    written.extend(marks_written(&states, &marked));
    put_states(tx, &written).await?;
    for (account, sup) in applied.listed {
        put_suppression(tx, &account, sup).await?;
    }
    Ok(applied.answers.into_iter().zip(marked_answers).map(|(a, m)| a.map(|refused| (refused, m))).collect())
}

/// Marks each call's claims on the locked `states`: each call's lost claims, and the emails
/// marked.
fn mark_on(
    states: &mut HashMap<EmailId, EmailState>,
    calls: &[Vec<ClaimRef>],
) -> (Vec<StorageResult<Vec<EmailId>>>, Vec<EmailId>) {
    let mut marked: Vec<EmailId> = Vec::new();
    let mut answers = Vec::with_capacity(calls.len());
    for claims in calls {
        let mut lost = Vec::new();
        for c in claims {
            let handed = states.get_mut(&c.id).is_some_and(|state| store::begin_handover(state, c.token));
            if handed { marked.push(c.id) } else { lost.push(c.id) }
        }
        answers.push(Ok(lost));
    }
    (answers, marked)
}

/// The marked rows to write. A mark adds no event: nothing gained, only the rows change.
fn marks_written<'s>(states: &'s HashMap<EmailId, EmailState>, marked: &[EmailId]) -> Vec<(usize, &'s EmailState)> {
    marked.iter().filter_map(|id| states.get(id)).map(|s| (s.events.len(), s)).collect()
}

/// The rows outcomes changed, each with the events it had before (what it gained is logged).
fn outcomes_written<'s>(
    states: &'s HashMap<EmailId, EmailState>,
    before: &HashMap<EmailId, usize>,
    changed: &[EmailId],
) -> Vec<(usize, &'s EmailState)> {
    changed.iter().filter_map(|id| states.get(id).map(|s| (before.get(id).copied().unwrap_or(0), s))).collect()
}

/// What [`apply_on`] did: each call's answer, the emails changed (in the order first
/// changed), and the suppressions listed.
struct AppliedAll<'o> {
    answers: Vec<StorageResult<Vec<EmailId>>>,
    changed: Vec<EmailId>,
    listed: Vec<(AccountId, &'o SuppressionEntry)>,
}

/// Applies each call's outcomes on the locked `states`, each call atomic on its own.
fn apply_on<'o>(states: &mut HashMap<EmailId, EmailState>, calls: &'o [Vec<Outcome>]) -> AppliedAll<'o> {
    let mut all = AppliedAll { answers: Vec::with_capacity(calls.len()), changed: Vec::new(), listed: Vec::new() };
    for outcomes in calls {
        match apply_call(states, outcomes) {
            Ok(applied) => {
                for (id, state) in applied.states {
                    states.insert(id, state);
                    if !all.changed.contains(&id) {
                        all.changed.push(id);
                    }
                }
                all.listed.extend(applied.suppressions);
                all.answers.push(Ok(applied.lost));
            }
            Err(e) => all.answers.push(Err(e)),
        }
    }
    all
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
