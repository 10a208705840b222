//! Account usage (`GET /usage`, the SDKs' `usage.get`): the emails an account sent and
//! received today and this month, its domains, and the rate limit it runs under, in the
//! hosted service's shape.
//!
//! What is counted, and why so:
//! - Days and months are UTC, as the hosted quotas' `resets_at` are: a day is
//!   `[00:00, 24:00)`, a month runs from its first day's midnight.
//! - `sent` is the emails the account's requests **accepted** in the period (one per email,
//!   however many recipients; canceled, suppressed and failed ones too): what a quota on
//!   sending would count. `received` is the messages the inbound listener kept for the
//!   account. `used` is both together: mail in and mail out is what a self-hosted server
//!   spends its relay, disk and reputation on.
//! - mailroom keeps **no quotas**. Where the SDKs type a limit as possibly `null` ("no
//!   limit"), it is `null`. Where they type it as always a number: the monthly email limit is
//!   2^53 − 1, the largest integer every JSON reader keeps exactly, so that a client comparing
//!   `used >= limit` (which in JavaScript is true for `null`) never stops itself; contacts and
//!   automation runs, which mailroom does not have, are `0` of `0`. Segments, broadcasts and
//!   AI credits, also absent, are `0` used.
//!
//! Counting reads the ids of the period (ids are UUIDv7: an id range is a time range), so it
//! costs time in proportion to the period's mail. Mail older than a few minutes ([`SETTLE`])
//! no longer changes, so its counts are kept ([`Days`]): each process reads a month's mail
//! once, and each answer reads only the last minutes' mail.

use crate::domains::MAX_DOMAINS;
use crate::email::{AccountId, Cursor, EmailId, PageRequest};
use crate::email_metrics::{CHUNK, id_floor};
use crate::error::Error;
use crate::ports::Storage;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;

/// The largest integer a JSON number keeps exactly in every reader (JavaScript's
/// `Number.MAX_SAFE_INTEGER`): the monthly limit of a server with no quota.
pub const NO_LIMIT: u64 = (1 << 53) - 1;

/// Emails out and in over one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Emails accepted for sending.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
}

impl Counts {
    fn add(self, o: Counts) -> Counts {
        Counts { sent: self.sent + o.sent, received: self.received + o.received }
    }
}

/// An account's usage at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// When it was measured.
    pub at: DateTime<Utc>,
    /// Today (UTC).
    pub day: Counts,
    /// This month (UTC), today included.
    pub month: Counts,
    /// The account's domains.
    pub domains: usize,
}

/// How long after an instant its mail is taken as complete: ids carry the time they were
/// given at acceptance, and the email is stored within its request, so by then nothing new
/// can appear before the instant. (An acceptance that took longer, or a process whose clock
/// is this far behind another's on a shared store, would go uncounted; the counts inform,
/// they are no quota.)
pub const SETTLE: Duration = Duration::minutes(5);

/// What is known of one UTC day of one account: its counts up to `until`.
#[derive(Debug, Clone, Copy)]
struct Settled {
    until: DateTime<Utc>,
    counts: Counts,
}

/// The settled counts of each UTC day of the month, per account, kept by the engine: a day's
/// mail before `now − SETTLE` no longer changes (ids carry their time; retention removes
/// bodies, not emails), so it is read once, and an answer reads only the last minutes'
/// mail. Days before the current month are dropped, so the map holds at most one month per
/// account that asked.
#[derive(Debug, Default)]
pub struct Days {
    settled: Mutex<HashMap<(AccountId, NaiveDate), Settled>>,
    /// Held while an answer reads mail to settle: answers that come together (a fresh
    /// process, a client asking many times at once) wait for the first one and find the
    /// month read, instead of each reading it side by side.
    settling: tokio::sync::Mutex<()>,
}

impl Days {
    fn get(&self, account: &AccountId, day: NaiveDate) -> Option<Settled> {
        self.settled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&(account.clone(), day)).copied()
    }

    /// Moves `day`'s settled counts from `from` to `to.until`, unless another answer already
    /// moved them (it counted the same mail: adding both would count it twice), and drops the
    /// days before `first` (the month's first day). Returns what is settled now.
    fn advance(&self, account: &AccountId, day: NaiveDate, from: Settled, to: Settled, first: NaiveDate) -> Settled {
        let mut days = self.settled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        days.retain(|(_, d), _| *d >= first);
        let entry = days.entry((account.clone(), day)).or_insert(from);
        if entry.until == from.until {
            *entry = to;
        }
        *entry
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The first day of `d`'s month.
fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

/// The first day of the month after `d`'s.
fn next_month(d: NaiveDate) -> NaiveDate {
    month_start(d).checked_add_months(chrono::Months::new(1)).unwrap_or(NaiveDate::MAX)
}

/// Emails accepted and messages received by `account` from `from` (included) to `to`
/// (excluded).
async fn count(
    storage: &dyn Storage,
    account: &AccountId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Counts, Error> {
    let (lo, hi) = (id_floor(from), id_floor(to));
    let mut sent = 0u64;
    let mut next = lo;
    while next < hi {
        let chunk = storage.email_facts(account, next..hi, CHUNK, false).await?;
        let Some(last) = chunk.last().map(|f| f.id.as_u128()) else { break };
        sent += chunk.len() as u64;
        if last == u128::MAX {
            break;
        }
        next = last + 1;
    }
    let mut received = 0u64;
    // `Before(c)`: the page of ids just above `c`, so the period is walked upwards from its
    // start. (A period starting at the epoch has nothing older: it starts at the first id.)
    if let Some(store) = storage.received() {
        let mut cursor = EmailId::from_u128(lo.saturating_sub(1));
        loop {
            let page = PageRequest { limit: PageRequest::MAX_LIMIT, cursor: Cursor::Before(cursor) };
            let page = store.received_page(account, page).await?;
            received += page.items.iter().filter(|r| (lo..hi).contains(&r.id.as_u128())).count() as u64;
            let Some(top) = page.items.iter().map(|r| r.id.as_u128()).max() else { break };
            if !page.has_more || top >= hi {
                break;
            }
            cursor = EmailId::from_u128(top);
        }
    }
    Ok(Counts { sent, received })
}

/// `account`'s usage at `now`: for each day of the month, what `days` has settled, what
/// settled since (read once), and the mail of the last [`SETTLE`] (read every time).
pub async fn measure(
    storage: &dyn Storage,
    days: &Days,
    account: &AccountId,
    now: DateTime<Utc>,
) -> Result<Usage, Error> {
    let today = now.date_naive();
    let first = month_start(today);
    // First what has settled, one answer at a time: each day's counts up to `now − SETTLE`.
    let mut settled = Vec::new();
    {
        let _one = days.settling.lock().await;
        let mut d = first;
        while d <= today {
            let (start, end) = (midnight(d), midnight(d) + Duration::days(1));
            let settle = (now - SETTLE).clamp(start, end);
            let known = days.get(account, d).unwrap_or(Settled { until: start, counts: Counts::default() });
            let now_settled = if known.until < settle {
                let more = count(storage, account, known.until, settle).await?;
                days.advance(account, d, known, Settled { until: settle, counts: known.counts.add(more) }, first)
            } else {
                known
            };
            settled.push((d, end, now_settled));
            let Some(next) = d.succ_opt() else { break };
            d = next;
        }
    }
    // Then the last minutes' mail, read by every answer (today's, and yesterday's just after
    // midnight).
    let (mut day, mut month) = (Counts::default(), Counts::default());
    for (d, end, s) in settled {
        let recent = if s.until < end { count(storage, account, s.until, end).await? } else { Counts::default() };
        let counts = s.counts.add(recent);
        month = month.add(counts);
        if d == today {
            day = counts;
        }
    }
    let domains = match storage.domains() {
        Some(store) => store.domain_list(account).await?.len(),
        None => 0,
    };
    Ok(Usage { at: now, day, month, domains })
}

impl Usage {
    /// The answer of `GET /usage`, with `rate_limit` the requests per second the caller's key
    /// may make (`None`: no limit, given as `null`).
    pub fn to_json(&self, rate_limit: Option<u32>) -> Value {
        let today = self.at.date_naive();
        let tomorrow = midnight(today) + Duration::days(1);
        let next_month = midnight(next_month(today));
        let at = |t: DateTime<Utc>| crate::email::rfc3339(t);
        json!({
            "object": "usage",
            "emails": {
                "daily": {
                    "used": self.day.sent + self.day.received,
                    "limit": null,
                    "sent": self.day.sent,
                    "received": self.day.received,
                    "resets_at": at(tomorrow),
                },
                "monthly": {
                    "used": self.month.sent + self.month.received,
                    "limit": NO_LIMIT,
                    "sent": self.month.sent,
                    "received": self.month.received,
                    "resets_at": at(next_month),
                },
            },
            "contacts": {"used": 0, "limit": 0},
            "segments": {"used": 0, "limit": null},
            "broadcasts": {"used": 0, "limit": null},
            "ai_credits": {"used": 0, "limit": null, "next_increase_at": null},
            "automation_runs": {"used": 0, "limit": 0, "resets_at": at(next_month)},
            "domains": {"used": self.domains, "limit": MAX_DOMAINS},
            "rate_limit": {"limit": rate_limit, "duration": "1000ms"},
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::memory::MemoryStorage;
    use crate::receiving::{Arrival, summarize};
    use crate::testkit::doubles::StorageDouble;
    use crate::testkit::new_email;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn periods_reset_at_the_next_utc_midnight_and_month() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(next_month(day(2026, 12, 7)), day(2027, 1, 1));
        assert_eq!(next_month(day(2027, 1, 31)), day(2027, 2, 1));
        let u = Usage { at: at("2026-12-31T23:59:59Z"), day: Counts::default(), month: Counts::default(), domains: 0 };
        let v = u.to_json(Some(10));
        assert_eq!(v["object"], "usage");
        assert_eq!(v["emails"]["daily"]["resets_at"], "2027-01-01T00:00:00.000Z");
        assert_eq!(v["emails"]["monthly"]["resets_at"], "2027-01-01T00:00:00.000Z");
        assert_eq!(v["rate_limit"], json!({"limit": 10, "duration": "1000ms"}));
        assert_eq!(u.to_json(None)["rate_limit"]["limit"], Value::Null);
        let u = Usage { at: at("2027-02-10T08:00:00Z"), ..u };
        assert_eq!(u.to_json(None)["emails"]["daily"]["resets_at"], "2027-02-11T00:00:00.000Z");
        assert_eq!(u.to_json(None)["automation_runs"]["resets_at"], "2027-03-01T00:00:00.000Z");
    }

    #[test]
    fn two_answers_that_settled_the_same_mail_add_it_once() {
        let days = Days::default();
        let account = AccountId::default();
        let d = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let start = Settled { until: midnight(d), counts: Counts::default() };
        let to = Settled { until: midnight(d) + Duration::hours(6), counts: Counts { sent: 3, received: 1 } };
        // Both read the store from `start`; the second to arrive keeps the first's result.
        assert_eq!(days.advance(&account, d, start, to, d).counts, to.counts);
        let twice = Settled { counts: Counts { sent: 6, received: 2 }, ..to };
        assert_eq!(days.advance(&account, d, start, twice, d).counts, to.counts);
        assert_eq!(days.get(&account, d).unwrap().counts, to.counts);
        // Days before the month are dropped when another is settled.
        let next_month = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        let fresh = Settled { until: midnight(next_month), counts: Counts::default() };
        days.advance(&account, next_month, fresh, fresh, next_month);
        assert!(days.get(&account, d).is_none());
    }

    async fn accept(store: &MemoryStorage, account: &str, t: &str, seq: u16) {
        let email = new_email(account, at(t), seq, None);
        store.insert_emails(&AccountId::new(account), vec![email], None).await.unwrap();
    }

    async fn receive(store: &MemoryStorage, account: &str, t: &str, seq: u16) {
        let id = crate::testkit::id_at(at(t).timestamp_millis(), seq);
        let arrival = Arrival {
            mail_from: "a@example.com".into(),
            rcpt_to: vec!["in@acme.test".into()],
            client_ip: "192.0.2.1".into(),
            helo: "example.com".into(),
            tls: false,
        };
        let raw = b"From: a@example.com\r\nTo: in@acme.test\r\nSubject: hi\r\n\r\nhello\r\n".to_vec();
        let summary = summarize(id, &raw, arrival, None, at(t));
        store.received().unwrap().received_put(vec![(AccountId::new(account), summary)], raw).await.unwrap();
    }

    #[tokio::test]
    async fn today_and_the_month_count_each_email_of_their_period_once() {
        let store = MemoryStorage::new();
        let account = AccountId::default();
        let mut seq = 0;
        // Accepted: two on 30 Nov (last month), one at the month's first instant, two on
        // 3 Dec, one in the last millisecond of 6 Dec, four today (7 Dec).
        for (t, k) in [
            ("2026-11-30T12:00:00Z", 2),
            ("2026-12-01T00:00:00Z", 1),
            ("2026-12-03T08:00:00Z", 2),
            ("2026-12-06T23:59:59.999Z", 1),
            ("2026-12-07T00:00:00Z", 1),
            ("2026-12-07T09:30:00Z", 3),
        ] {
            for _ in 0..k {
                seq += 1;
                accept(&store, "default", t, seq).await;
            }
        }
        // Received: one last month, one on 2 Dec, two today; 150 on 4 Dec (more than a page).
        receive(&store, "default", "2026-11-29T10:00:00Z", 1).await;
        receive(&store, "default", "2026-12-02T10:00:00Z", 2).await;
        receive(&store, "default", "2026-12-07T01:00:00Z", 3).await;
        receive(&store, "default", "2026-12-07T11:59:00Z", 4).await;
        for n in 0..150 {
            receive(&store, "default", "2026-12-04T10:00:00Z", 100 + n).await;
        }
        // Another account's mail is not counted.
        accept(&store, "other", "2026-12-07T10:00:00Z", 99).await;
        receive(&store, "other", "2026-12-07T10:00:00Z", 99).await;

        let days = Days::default();
        let now = at("2026-12-07T12:00:00Z");
        let u = measure(&store, &days, &account, now).await.unwrap();
        assert_eq!(u.day, Counts { sent: 4, received: 2 });
        assert_eq!(u.month, Counts { sent: 8, received: 153 });
        let v = u.to_json(Some(10));
        assert_eq!(v["emails"]["daily"]["used"], 6);
        assert_eq!(v["emails"]["monthly"]["used"], 161);
        assert_eq!(v["emails"]["monthly"]["sent"], 8);
        assert_eq!(v["emails"]["monthly"]["received"], 153);
        assert_eq!(v["emails"]["monthly"]["limit"], NO_LIMIT);
        assert_eq!(v["emails"]["daily"]["limit"], Value::Null);

        // What has settled is kept: a second answer reads only the last minutes' mail, in one
        // read of emails and one page of received messages.
        let fresh = StorageDouble::counting(store.clone());
        measure(&*fresh, &Days::default(), &account, now).await.unwrap();
        let kept = StorageDouble::counting(store.clone());
        assert_eq!(measure(&*kept, &days, &account, now).await.unwrap(), u);
        assert!(kept.calls() < fresh.calls(), "kept days spare reads: {} against {}", kept.calls(), fresh.calls());

        // Mail of the last minutes counts at once. Mail stamped before them, stored after an
        // answer settled them, is not counted (no acceptance takes minutes); a new month
        // starts from nothing.
        seq += 1;
        accept(&store, "default", "2026-12-07T11:58:00Z", seq).await;
        seq += 1;
        accept(&store, "default", "2026-12-07T11:00:00Z", seq).await;
        let u = measure(&store, &days, &account, now).await.unwrap();
        assert_eq!((u.day.sent, u.month.sent), (5, 9));
        let later = measure(&store, &days, &account, at("2026-12-07T12:30:00Z")).await.unwrap();
        assert_eq!((later.day.sent, later.month.sent), (5, 9));
        let u = measure(&store, &days, &account, at("2027-01-01T00:00:00Z")).await.unwrap();
        assert_eq!((u.day, u.month), (Counts::default(), Counts::default()));
    }
}
