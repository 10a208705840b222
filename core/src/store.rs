//! The state changes every [`crate::ports::Storage`] performs inside its transactions,
//! written once so that every store applies exactly the same rules.
//!
//! A store's job is to load the affected records, call these functions, and write the
//! results (and its due-time index) back atomically. Invariants kept here: a claim is only
//! taken when due and unheld; only the claim's holder records outcomes; events only pass
//! the lifecycle's transition function; the due time is `None` once nothing more will happen.

use crate::email::{Claim, EmailState, Event};
use crate::lifecycle::{EventKind, TransitionError};
use crate::ports::{Next, Outcome, ScheduleChange};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Whether a keyed insert may complete its record: not when a twin already completed it
/// (possible only if this request outlived its in-flight marker). Checked inside the insert's
/// transaction, so two requests can never both store emails under one key.
pub fn may_complete(
    existing: Option<&crate::idempotency::IdempotencyRecord>,
    now: DateTime<Utc>,
) -> Result<(), crate::error::StorageError> {
    match existing {
        Some(r) if r.response.is_some() && r.expires_at > now => Err(crate::error::StorageError::IdempotencyConflict),
        _ => Ok(()),
    }
}

/// Retention: whether an email created before `cutoff` may be pruned now (it is finished —
/// nothing more is due — and not pruned yet).
pub fn prunable(state: &EmailState, cutoff: DateTime<Utc>) -> bool {
    state.created_at < cutoff && state.due_at.is_none() && state.claim.is_none() && state.pruned_at.is_none()
}

/// Retention: drops the bodies (html, text, attachments) and the events older than `cutoff`,
/// always keeping the newest event so `last_event` stays true. Ids and metadata (from, to,
/// subject, tags, headers, times) stay.
pub fn prune(
    state: &mut EmailState,
    content: &mut crate::email::EmailContent,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
) {
    content.html = None;
    content.text = None;
    content.attachments = Vec::new();
    let last = state.events.pop();
    state.events.retain(|e| e.at >= cutoff);
    state.events.extend(last);
    state.pruned_at = Some(now);
}

/// Reschedules a `scheduled` email to `at` (its due time moves with it).
pub fn reschedule(state: &mut EmailState, at: DateTime<Utc>) -> ScheduleChange {
    if state.last_event() != Some(EventKind::Scheduled) || state.claim.is_some() {
        return ScheduleChange::NotScheduled(state.last_event());
    }
    state.scheduled_at = Some(at);
    state.due_at = Some(at);
    ScheduleChange::Applied
}

/// Cancels a `scheduled` email: a final `canceled` event, and nothing is due any more.
pub fn cancel(state: &mut EmailState, now: DateTime<Utc>) -> Result<ScheduleChange, TransitionError> {
    if state.last_event() != Some(EventKind::Scheduled) || state.claim.is_some() {
        return Ok(ScheduleChange::NotScheduled(state.last_event()));
    }
    state.push(Event::new(EventKind::Canceled, now))?;
    state.due_at = None;
    Ok(ScheduleChange::Applied)
}

/// Applies a [`ScheduleOp`](crate::ports::ScheduleOp): [`reschedule`] or [`cancel`].
pub fn change_schedule(
    state: &mut EmailState,
    op: crate::ports::ScheduleOp,
) -> Result<ScheduleChange, TransitionError> {
    match op {
        crate::ports::ScheduleOp::MoveTo(at) => Ok(reschedule(state, at)),
        crate::ports::ScheduleOp::Cancel(at) => cancel(state, at),
    }
}

/// The due-index key of a time: microseconds since the epoch.
pub fn due_key(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Claims `state` at `now` for `lease` with `token`. `Ok(false)`: not claimable now (not due,
/// held, or finished). A `scheduled` email that falls due becomes `queued` here.
pub fn claim(
    state: &mut EmailState,
    now: DateTime<Utc>,
    lease: Duration,
    token: u128,
) -> Result<bool, TransitionError> {
    let Some(due) = state.due_at else { return Ok(false) };
    if due > now || state.is_claimed(now) || state.last_event().is_some_and(EventKind::is_final) {
        return Ok(false);
    }
    if state.last_event() == Some(EventKind::Scheduled) {
        state.push(Event::new(EventKind::Queued, now))?;
    }
    let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(5));
    state.claim = Some(Claim { token, until });
    // While claimed, the email is due again when the lease lapses: a worker that dies holding
    // it does not strand it.
    state.due_at = Some(until);
    Ok(true)
}

fn holds(state: &EmailState, token: u128) -> bool {
    state.claim.is_some_and(|c| c.token == token)
}

/// Marks the hand-over. `false`: the claim was lost, do not hand over.
pub fn begin_handover(state: &mut EmailState, token: u128) -> bool {
    if !holds(state, token) {
        return false;
    }
    state.handed_over = true;
    true
}

/// Applies an outcome. `Ok(false)`: the claim was lost and nothing changed.
pub fn apply_outcome(state: &mut EmailState, outcome: &Outcome) -> Result<bool, TransitionError> {
    if !holds(state, outcome.claim.token) {
        return Ok(false);
    }
    for e in &outcome.events {
        state.push(e.clone())?;
    }
    if state.handed_over {
        state.attempts += 1;
    }
    state.handed_over = false;
    state.claim = None;
    match &outcome.next {
        Next::Done => {
            state.due_at = None;
            state.pending.clear();
        }
        Next::RetryAt { at, pending } => {
            state.due_at = Some(*at);
            state.pending = pending.clone();
        }
    }
    Ok(true)
}

/// Renews a claim held with `token` until `until` (a heartbeat while its hand-over runs).
/// `false` when the claim was lost (another worker holds the email now).
pub fn renew(state: &mut EmailState, token: u128, until: DateTime<Utc>) -> bool {
    if !holds(state, token) {
        return false;
    }
    state.claim = Some(Claim { token, until });
    state.due_at = Some(until);
    true
}

/// Gives a claim back: due again at `now`. `false` when not held or already handed over (a
/// handed-over email must go through recovery, never be re-sent).
pub fn release(state: &mut EmailState, token: u128, now: DateTime<Utc>) -> bool {
    if !holds(state, token) || state.handed_over {
        return false;
    }
    state.claim = None;
    // Due again at the earlier of now and the lease's end: a release must never delay.
    state.due_at = Some(state.due_at.map_or(now, |d| d.min(now)));
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::email::{AccountId, EmailId};
    use crate::ports::ClaimRef;

    fn state(kind: EventKind, due: DateTime<Utc>) -> EmailState {
        EmailState {
            account: AccountId::default(),
            id: EmailId::from_u128(1),
            created_at: due,
            scheduled_at: None,
            events: vec![Event::new(kind, due)],
            due_at: Some(due),
            claim: None,
            handed_over: false,
            attempts: 0,
            pending: vec![],
            pruned_at: None,
        }
    }

    #[test]
    fn claim_respects_due_time_lease_and_finality() {
        let t0 = Utc::now();
        let lease = Duration::from_secs(60);
        let mut s = state(EventKind::Scheduled, t0 + chrono::Duration::seconds(10));
        assert!(!claim(&mut s, t0, lease, 1).unwrap(), "not due yet");
        let t1 = t0 + chrono::Duration::seconds(10);
        assert!(claim(&mut s, t1, lease, 1).unwrap());
        assert_eq!(s.last_event(), Some(EventKind::Queued));
        assert!(!claim(&mut s, t1, lease, 2).unwrap(), "held");
        let t2 = t1 + chrono::Duration::seconds(61);
        assert!(claim(&mut s, t2, lease, 3).unwrap(), "lease lapsed");
        let out =
            Outcome { claim: ClaimRef { id: s.id, token: 1 }, events: vec![], suppressions: vec![], next: Next::Done };
        assert!(!apply_outcome(&mut s, &out).unwrap(), "old token lost the claim");
        let mut f = state(EventKind::Canceled, t0);
        assert!(!claim(&mut f, t0, lease, 1).unwrap());
    }

    #[test]
    fn handed_over_is_never_released() {
        let t0 = Utc::now();
        let mut s = state(EventKind::Queued, t0);
        assert!(claim(&mut s, t0, Duration::from_secs(5), 9).unwrap());
        assert!(begin_handover(&mut s, 9));
        assert!(!release(&mut s, 9, t0));
        let out = Outcome {
            claim: ClaimRef { id: s.id, token: 9 },
            events: vec![Event::new(EventKind::Sent, t0), Event::new(EventKind::Delivered, t0)],
            suppressions: vec![],
            next: Next::Done,
        };
        assert!(apply_outcome(&mut s, &out).unwrap());
        assert_eq!((s.attempts, s.due_at, s.handed_over), (1, None, false));
    }
}
