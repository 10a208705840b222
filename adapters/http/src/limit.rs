//! Rate limits: a fixed one-second window per subject (an API key, an account, a client
//! address).
//!
//! A fixed window is what the hosted service documents ("N requests per second") and what
//! its `ratelimit-reset` header (whole seconds) can describe; a client that spends its quota at
//! the end of one window and the start of the next can briefly reach twice the rate, which
//! the hosted service accepts too.
//!
//! Invariant: memory is bounded. Windows older than a second are dropped when the map is
//! full; past [`MAX_SUBJECTS`] live subjects (a flood from many addresses), new subjects share
//! one window, so a flood limits itself instead of growing the map.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The IETF RateLimit header values for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quota {
    /// Requests per window.
    pub limit: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// Seconds until the window resets (≥ 1).
    pub reset: u64,
    /// Whether this request is within the limit.
    pub allowed: bool,
}

impl Quota {
    /// The tighter of two quotas (a request must pass both).
    pub fn and(self, other: Quota) -> Quota {
        if other.limit == 0 {
            return self;
        }
        if self.limit == 0 {
            return other;
        }
        let tighter = if other.remaining < self.remaining { other } else { self };
        Quota { allowed: self.allowed && other.allowed, ..tighter }
    }
}

/// The most subjects with a live window; beyond, new ones share the overflow window.
pub const MAX_SUBJECTS: usize = 100_000;

const OVERFLOW: &str = "\u{0}overflow";

/// A fixed-window limiter over any number of subjects.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    /// `per_second` requests per subject per second (0 means no limit).
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter { per_second, windows: Mutex::new(HashMap::new()) }
    }

    /// The limit per second (0: none).
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Counts one request by `subject` at `now`.
    pub fn check(&self, subject: &str, now: Instant) -> Quota {
        self.count(subject, now, true)
    }

    /// Whether `subject` is over its limit at `now`, without counting a request.
    pub fn exhausted(&self, subject: &str, now: Instant) -> Option<Quota> {
        let q = self.count(subject, now, false);
        (!q.allowed).then_some(q)
    }

    fn count(&self, subject: &str, now: Instant, take: bool) -> Quota {
        if self.per_second == 0 {
            return Quota { limit: 0, remaining: 0, reset: 1, allowed: true };
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if !windows.contains_key(subject) && windows.len() >= MAX_SUBJECTS {
            windows.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(1));
        }
        let subject = if windows.contains_key(subject) || windows.len() < MAX_SUBJECTS { subject } else { OVERFLOW };
        let entry = windows.entry(subject.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        let allowed = entry.1 < self.per_second;
        if allowed && take {
            entry.1 += 1;
        }
        let left = Duration::from_secs(1).saturating_sub(now.duration_since(entry.0));
        Quota {
            limit: self.per_second,
            remaining: self.per_second.saturating_sub(entry.1),
            reset: left.as_secs_f64().ceil().max(1.0) as u64,
            allowed,
        }
    }
}

/// The subject a client address is limited as
/// ([`mailroom_core::clients::client_network`]): IPv4 addresses one by one, IPv6 by /64.
pub fn ip_subject(ip: IpAddr) -> String {
    match mailroom_core::clients::client_network(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(net) => format!("{net}/64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_allows_the_limit_then_refuses_until_it_resets() {
        let r = RateLimiter::new(3);
        let t0 = Instant::now();
        let got: Vec<(bool, u32)> = (0..5).map(|_| r.check("k", t0)).map(|q| (q.allowed, q.remaining)).collect();
        assert_eq!(got, [(true, 2), (true, 1), (true, 0), (false, 0), (false, 0)]);
        // Another subject has its own window; the next second starts afresh.
        assert!(r.check("other", t0).allowed);
        assert_eq!(r.check("k", t0 + Duration::from_millis(1000)).remaining, 2);
        assert_eq!(r.check("k", t0 + Duration::from_millis(1500)).reset, 1);
        // Peeking does not count.
        let p = RateLimiter::new(1);
        assert!(p.exhausted("x", t0).is_none());
        assert!(p.exhausted("x", t0).is_none());
        p.check("x", t0);
        assert!(p.exhausted("x", t0).is_some());
    }

    #[test]
    fn a_flood_of_subjects_does_not_grow_the_map_without_bound() {
        let r = RateLimiter::new(2);
        let t0 = Instant::now();
        for i in 0..(MAX_SUBJECTS + 500) {
            r.check(&format!("ip{i}"), t0);
        }
        let len = r.windows.lock().map(|w| w.len()).unwrap_or(0);
        assert!(len <= MAX_SUBJECTS + 1, "{len}");
        // The late subjects share the overflow window, which is spent.
        assert!(!r.check("newcomer", t0).allowed);
        // A second later the stale windows make room again.
        assert!(r.check("newcomer", t0 + Duration::from_secs(2)).allowed);
    }

    #[test]
    fn quotas_combine_to_the_tighter_one() {
        let a = Quota { limit: 10, remaining: 5, reset: 1, allowed: true };
        let b = Quota { limit: 20, remaining: 2, reset: 1, allowed: true };
        assert_eq!(a.and(b).remaining, 2);
        let none = Quota { limit: 0, remaining: 0, reset: 1, allowed: true };
        assert_eq!(a.and(none), a);
        assert!(!a.and(Quota { allowed: false, ..b }).allowed);
    }

    #[test]
    fn ipv6_clients_are_limited_by_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap_or(IpAddr::from([0u8; 16]));
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap_or(IpAddr::from([0u8; 16]));
        assert_eq!(ip_subject(a), ip_subject(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(IpAddr::from([0u8; 16]));
        assert_eq!(ip_subject(mapped), "192.0.2.7");
    }
}
