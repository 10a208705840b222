//! When to try a deferred delivery again: a pure function of data, property-tested.
//!
//! The default schedule — 2 m, 5 m, 15 m, 30 m, 1 h, 2 h, 4 h, 8 h, then every 8 h — follows
//! what long-lived MTAs do (postfix backs off from minutes to hours; RFC 5321 §4.5.4.1 asks
//! for at least 30 minutes between tries once a failure persists and for giving up after
//! 4–5 days). Early tries are close together because most deferrals (greylisting, a busy
//! server) clear within minutes; the 72 h window is shorter than RFC 5321's 4–5 days because a
//! transactional email (a login code, a receipt) is worthless days late, and the sender
//! should learn of the failure while it can still act.

use chrono::{DateTime, Duration, Utc};

/// When a deferred delivery is tried again: a fixed schedule of waits, then a steady wait,
/// within a window that starts at the first attempt (the hosted service gives up after 72 h).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the 1st, 2nd, … failed attempt.
    pub schedule: Vec<Duration>,
    /// The wait once the schedule is used up.
    pub then_every: Duration,
    /// No attempt starts later than this after the first.
    pub window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let m = Duration::minutes;
        let h = Duration::hours;
        RetryPolicy {
            schedule: vec![m(2), m(5), m(15), m(30), h(1), h(2), h(4), h(8)],
            then_every: h(8),
            window: h(72),
        }
    }
}

impl RetryPolicy {
    /// The time of the next attempt after `failed_attempts` attempts (≥ 1) that began at
    /// `first_attempt`, the last one failing at `now`; `hint` is a server's "try again in N".
    /// `None`: the window is closed, give up.
    pub fn next_attempt(
        &self,
        failed_attempts: u32,
        first_attempt: DateTime<Utc>,
        now: DateTime<Utc>,
        hint: Option<Duration>,
    ) -> Option<DateTime<Utc>> {
        let idx = usize::try_from(failed_attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        let base = self.schedule.get(idx).copied().unwrap_or(self.then_every);
        // A server's hint can only lengthen the wait (retrying sooner than asked is refused
        // anyway) and is capped by the window.
        let wait = hint.map_or(base, |h| h.max(base));
        let at = now + wait;
        let deadline = first_attempt + self.window;
        (at <= deadline).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn default_schedule() {
        let p = RetryPolicy::default();
        let mut now = t0();
        let mut waits = vec![];
        for n in 1.. {
            match p.next_attempt(n, t0(), now, None) {
                Some(at) => {
                    waits.push((at - now).num_minutes());
                    now = at;
                }
                None => break,
            }
        }
        assert_eq!(&waits[..8], &[2, 5, 15, 30, 60, 120, 240, 480]);
        assert!(waits[8..].iter().all(|&w| w == 480));
        assert!(now <= t0() + Duration::hours(72));
    }

    proptest! {
        #[test]
        fn never_before_now_never_past_window_never_shorter_than_hint(
            attempts in 1u32..100, elapsed_min in 0i64..6000, hint_min in proptest::option::of(0i64..3000)
        ) {
            let p = RetryPolicy::default();
            let now = t0() + Duration::minutes(elapsed_min);
            let hint = hint_min.map(Duration::minutes);
            match p.next_attempt(attempts, t0(), now, hint) {
                Some(at) => {
                    prop_assert!(at > now);
                    prop_assert!(at <= t0() + p.window);
                    if let Some(h) = hint { prop_assert!(at - now >= h); }
                }
                None => prop_assert!(now + p.schedule.get(attempts as usize - 1).copied().unwrap_or(p.then_every).max(hint.unwrap_or(Duration::zero())) > t0() + p.window),
            }
        }

        #[test]
        fn waits_never_shrink(attempts in 1u32..50) {
            let p = RetryPolicy::default();
            let w = |n| p.next_attempt(n, t0(), t0(), None).map(|at| at - t0());
            if let (Some(a), Some(b)) = (w(attempts), w(attempts + 1)) { prop_assert!(b >= a); }
        }
    }
}
