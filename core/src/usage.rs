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
//! costs time in proportion to the period's mail. Completed days never change, so their
//! counts are kept ([`Days`]) and a month is read once: each answer reads only today.

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

/// The counts of completed UTC days, per account, kept by the engine: such a day's mail
/// never changes (ids carry their time; retention removes bodies, not emails), so it is read
/// once. Days before the current month are dropped, so the map holds at most one month per
/// account that asked.
#[derive(Debug, Default)]
pub struct Days(Mutex<HashMap<(AccountId, NaiveDate), Counts>>);

impl Days {
    fn get(&self, account: &AccountId, day: NaiveDate) -> Option<Counts> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&(account.clone(), day)).copied()
    }

    fn keep(&self, account: &AccountId, day: NaiveDate, counts: Counts, month_start: NaiveDate) {
        let mut days = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        days.retain(|(_, d), _| *d >= month_start);
        days.insert((account.clone(), day), counts);
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The first day of the month after `d`'s.
fn next_month(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 { (d.year() + 1, 1) } else { (d.year(), d.month() + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(NaiveDate::MAX)
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

/// `account`'s usage at `now`: today read from the store, the month's earlier days from
/// `days` or, the first time, from the store.
pub async fn measure(
    storage: &dyn Storage,
    days: &Days,
    account: &AccountId,
    now: DateTime<Utc>,
) -> Result<Usage, Error> {
    let today = now.date_naive();
    let month_start = today.with_day(1).unwrap_or(today);
    let day = count(storage, account, midnight(today), midnight(today) + Duration::days(1)).await?;
    let mut month = day;
    let mut d = month_start;
    while d < today {
        let counts = match days.get(account, d) {
            Some(c) => c,
            None => {
                let c = count(storage, account, midnight(d), midnight(d) + Duration::days(1)).await?;
                days.keep(account, d, c, month_start);
                c
            }
        };
        month = month.add(counts);
        d = d.succ_opt().unwrap_or(today);
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

        // The completed days are kept: a second answer reads the store for today only.
        let fresh = StorageDouble::counting(store.clone());
        measure(&*fresh, &Days::default(), &account, now).await.unwrap();
        let kept = StorageDouble::counting(store.clone());
        assert_eq!(measure(&*kept, &days, &account, now).await.unwrap(), u);
        assert!(kept.calls() < fresh.calls(), "kept days spare reads: {} against {}", kept.calls(), fresh.calls());

        // Mail accepted later today counts at once; a new month starts from nothing.
        seq += 1;
        accept(&store, "default", "2026-12-07T11:00:00Z", seq).await;
        let u = measure(&store, &days, &account, now).await.unwrap();
        assert_eq!((u.day.sent, u.month.sent), (5, 9));
        let u = measure(&store, &days, &account, at("2027-01-01T00:00:00Z")).await.unwrap();
        assert_eq!((u.day, u.month), (Counts::default(), Counts::default()));
    }
}
