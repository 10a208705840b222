//! The answers this process was given, kept until their TTL runs out.
//!
//! hickory's own cache keeps records, but reaching it means parsing the name, building a
//! query and running the lookup future: about 1.6 µs a hit, as much as the insights spend on
//! everything but the links of an email. This front memo of final answers costs a hash lookup.
//! It keeps what hickory's answer says: a found record until its `valid_until` (the smallest
//! TTL), an absence for its SOA's negative TTL (at least `NEGATIVE_MIN`); a failed lookup is
//! never kept, so the next question asks again.

use mailroom_core::ports::DnsError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an absence without an SOA (or with a shorter negative TTL) is kept. dnsmasq's
/// local records and some forwarders send none, and every insight would ask again for the
/// `_dmarc` name that does not exist; 30 s keeps that cheap while a record published a moment
/// ago is seen soon after.
pub(crate) const NEGATIVE_MIN: Duration = Duration::from_secs(30);

/// Bounded so that a stream of distinct names (every recipient domain of a large send) cannot
/// grow the process: past this, expired answers go first, then those expiring soonest.
const CAPACITY: usize = 4096;

/// An answer and the instant it stops being true.
type Entry<T> = (Instant, Result<T, DnsError>);

#[derive(Debug)]
pub(crate) struct Memo<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo { entries: Mutex::new(HashMap::new()) }
    }
}

/// DNS names compare without regard to ASCII case or a final dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl<T: Clone> Memo<T> {
    pub(crate) fn get(&self, name: &str, now: Instant) -> Option<Result<T, DnsError>> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Most names are asked in lower case already: look up without allocating first.
        let hit = match entries.get(name) {
            Some(hit) => Some(hit),
            None => entries.get(&key(name)),
        };
        hit.filter(|(until, _)| *until > now).map(|(_, answer)| answer.clone())
    }

    /// Keeps `answer` until `until`; a failure is not kept.
    pub(crate) fn put(&self, name: &str, until: Instant, answer: &Result<T, DnsError>, now: Instant) {
        if matches!(answer, Err(DnsError::Failed { .. })) || until <= now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY {
            entries.retain(|_, (u, _)| *u > now);
        }
        if entries.len() >= CAPACITY
            && let Some(soonest) = entries.iter().min_by_key(|(_, (u, _))| *u).map(|(k, _)| k.clone())
        {
            entries.remove(&soonest);
        }
        entries.insert(key(name), (until, answer.clone()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_live_until_their_ttl_and_failures_are_not_kept() {
        let memo: Memo<Vec<String>> = Memo::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        memo.put("_DMARC.Acme.test.", t0 + 60 * s, &Ok(vec!["v=DMARC1; p=none".into()]), t0);
        assert_eq!(memo.get("_dmarc.acme.test", t0 + 59 * s), Some(Ok(vec!["v=DMARC1; p=none".into()])));
        assert_eq!(memo.get("_dmarc.acme.test", t0 + 60 * s), None, "expired at its TTL");
        let absent = Err(DnsError::NotFound { name: "x.test".into(), rtype: "TXT" });
        memo.put("x.test", t0 + 30 * s, &absent, t0);
        assert_eq!(memo.get("X.TEST", t0 + s), Some(absent));
        let failed = Err(DnsError::Failed { name: "y.test".into(), rtype: "TXT", message: "timeout".into() });
        memo.put("y.test", t0 + 30 * s, &failed, t0);
        assert_eq!(memo.get("y.test", t0), None);
        memo.put("zero.test", t0, &Ok(vec![]), t0);
        assert_eq!(memo.get("zero.test", t0), None, "a TTL of 0 is not kept");
    }

    #[test]
    fn it_stays_bounded_dropping_the_expired_then_the_soonest() {
        let memo: Memo<u32> = Memo::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        for i in 0..CAPACITY {
            // Half of them expire after 10 s.
            let ttl = if i % 2 == 0 { 10 } else { 1000 + i as u32 };
            memo.put(&format!("n{i}.test"), t0 + ttl * s, &Ok(0), t0);
        }
        assert_eq!(memo.len(), CAPACITY);
        memo.put("late.test", t0 + 100 * s, &Ok(1), t0 + 20 * s);
        assert_eq!(memo.len(), CAPACITY / 2 + 1, "the expired half went");
        assert_eq!(memo.get("late.test", t0 + 21 * s), Some(Ok(1)));
        // Full of live answers: the one expiring soonest makes room.
        for i in 0..CAPACITY {
            memo.put(&format!("m{i}.test"), t0 + (5000 + i as u32) * s, &Ok(2), t0 + 20 * s);
        }
        assert_eq!(memo.len(), CAPACITY);
        assert_eq!(memo.get("late.test", t0 + 21 * s), None, "late.test expired soonest and went first");
    }
}
