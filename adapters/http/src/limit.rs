//! Per-key rate limits: a fixed one-second window per API key.
//!
//! A fixed window is what the hosted service documents ("N requests per second") and what
//! its `ratelimit-reset` header (whole seconds) can describe; a client that spends its quota at
//! the end of one window and the start of the next can briefly reach twice the rate, which
//! the hosted service accepts too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The IETF RateLimit header values for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets (≥ 1).
    pub reset: u64,
    pub allowed: bool,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimiter {
    /// `per_second` requests per key per second (0 means no limit).
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter { per_second, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one request by `key` at `now`.
    pub fn check(&self, key: &str, now: Instant) -> Quota {
        if self.per_second == 0 {
            return Quota { limit: 0, remaining: 0, reset: 1, allowed: true };
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        // Old windows are dropped as they are met again; a map of every key ever seen is
        // bounded by the number of keys.
        let entry = windows.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        let allowed = entry.1 < self.per_second;
        if allowed {
            entry.1 += 1;
        }
        let left = Duration::from_secs(1).saturating_sub(now.duration_since(entry.0));
        Quota {
            limit: self.per_second,
            remaining: self.per_second - entry.1,
            reset: left.as_secs_f64().ceil().max(1.0) as u64,
            allowed,
        }
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
        // Another key has its own window; the next second starts afresh.
        assert!(r.check("other", t0).allowed);
        assert_eq!(r.check("k", t0 + Duration::from_millis(1000)).remaining, 2);
        assert_eq!(r.check("k", t0 + Duration::from_millis(1500)).reset, 1);
    }
}
