//! Email metrics (`GET /emails/metrics`, the SDKs' `emails.metrics`): counts and rates of an
//! account's emails over a date range, in total and broken down by period, sending domain or
//! email.
//!
//! What is counted, and why so:
//! - Every metric describes the emails **accepted** in the range, whatever the time of their
//!   later events: a period's `bounce_rate` is the share of that period's emails that
//!   bounced, not bounces that happened to arrive then divided by unrelated sends. (A
//!   bounce that arrives after the range still counts for its email.) The range is
//!   half-open, `[start_date, end_date)`, where a date (`2026-07-01`) stands for its whole day
//!   in the zone: as a start, its first instant; as an end, the first instant of the next
//!   day, so a date range includes both its dates (`start_date` may equal `end_date`).
//! - Counts are of emails, each counted once however many recipients or events it has:
//!   `received` (accepted), `sent` (reached a server: a `sent`, `delivered`,
//!   `delivery_delayed`, `bounced`, `complained`, `opened` or `clicked` event), `delivered`,
//!   `delivery_delayed`, `bounced`, `complained`, `suppressed`, `failed`, `unique_opened`,
//!   `unique_clicked`, and `unsubscribed` (a recipient used its one-click unsubscribe link,
//!   as the suppression list records it). `opened` and `clicked` count every hit.
//! - `bounced` splits into `bounced_permanent`, `bounced_transient` and
//!   `bounced_undetermined` by the email's most severe bounce (permanent over transient over
//!   undetermined), so the three add up to `bounced`.
//! - Rates are percentages with two decimals, recomputed from the counts of their row (never
//!   averaged across rows), and 0 where the denominator is 0: `delivery_rate` and
//!   `bounce_rate` over `sent`; `open_rate`, `click_rate`, `complaint_rate` and
//!   `unsubscribe_rate` over `delivered` (through a relay, whose fate beyond it is unknown,
//!   nothing is `delivered` and these stay 0).
//! - mailroom has no broadcasts: the `broadcast` dimension has no rows, and a `broadcast_id`
//!   filter matches nothing.
//!
//! The metrics are computed when asked, from the emails the store keeps (retention bounds
//! how far back they go), reading them [`CHUNK`] at a time: memory is bounded by the answer
//! (at most [`MAX_PERIODS`] periods and [`MAX_ROWS`] rows of any breakdown), and time by the
//! emails in the range.

use crate::domains::Domain;
use crate::email::{AccountId, EmailId};
use crate::error::{Error, FieldError, Rule};
use crate::lifecycle::EventKind;
use crate::ports::{EmailFacts, Storage};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The most periods one answer breaks down into (the hosted API's limit).
pub const MAX_PERIODS: usize = 10_000;
/// The most rows a breakdown gives (one per email, per sending domain, per period and domain):
/// past it, the range must be narrowed.
pub const MAX_ROWS: usize = 10_000;
/// The most ids `email_id` or `domain_id` may name.
pub const MAX_IDS: usize = 100;
/// Emails read from the store at a time.
pub const CHUNK: usize = 1_000;

/// A metric, in the order the API lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Emails accepted.
    Received,
    /// Emails delivered to a recipient's server.
    Delivered,
    /// Emails a recipient marked as spam.
    Complained,
    /// Emails with a suppressed recipient.
    Suppressed,
    /// Emails that bounced.
    Bounced,
    /// … whose most severe bounce was transient.
    BouncedTransient,
    /// … permanent.
    BouncedPermanent,
    /// … undetermined.
    BouncedUndetermined,
    /// Open hits.
    Opened,
    /// Click hits.
    Clicked,
    /// Emails whose recipient unsubscribed by their link.
    Unsubscribed,
    /// Emails delayed at least once.
    DeliveryDelayed,
    /// Emails that failed.
    Failed,
    /// Emails that reached a server.
    Sent,
    /// Emails opened at least once.
    UniqueOpened,
    /// Emails clicked at least once.
    UniqueClicked,
    /// `delivered` / `sent`, in percent.
    DeliveryRate,
    /// `unique_opened` / `delivered`.
    OpenRate,
    /// `unique_clicked` / `delivered`.
    ClickRate,
    /// `bounced` / `sent`.
    BounceRate,
    /// `complained` / `delivered`.
    ComplaintRate,
    /// `unsubscribed` / `delivered`.
    UnsubscribeRate,
}

impl Metric {
    /// Every metric, in the API's order (the default selection).
    pub const ALL: [Metric; 22] = [
        Metric::Received,
        Metric::Delivered,
        Metric::Complained,
        Metric::Suppressed,
        Metric::Bounced,
        Metric::BouncedTransient,
        Metric::BouncedPermanent,
        Metric::BouncedUndetermined,
        Metric::Opened,
        Metric::Clicked,
        Metric::Unsubscribed,
        Metric::DeliveryDelayed,
        Metric::Failed,
        Metric::Sent,
        Metric::UniqueOpened,
        Metric::UniqueClicked,
        Metric::DeliveryRate,
        Metric::OpenRate,
        Metric::ClickRate,
        Metric::BounceRate,
        Metric::ComplaintRate,
        Metric::UnsubscribeRate,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Received => "received",
            Metric::Delivered => "delivered",
            Metric::Complained => "complained",
            Metric::Suppressed => "suppressed",
            Metric::Bounced => "bounced",
            Metric::BouncedTransient => "bounced_transient",
            Metric::BouncedPermanent => "bounced_permanent",
            Metric::BouncedUndetermined => "bounced_undetermined",
            Metric::Opened => "opened",
            Metric::Clicked => "clicked",
            Metric::Unsubscribed => "unsubscribed",
            Metric::DeliveryDelayed => "delivery_delayed",
            Metric::Failed => "failed",
            Metric::Sent => "sent",
            Metric::UniqueOpened => "unique_opened",
            Metric::UniqueClicked => "unique_clicked",
            Metric::DeliveryRate => "delivery_rate",
            Metric::OpenRate => "open_rate",
            Metric::ClickRate => "click_rate",
            Metric::BounceRate => "bounce_rate",
            Metric::ComplaintRate => "complaint_rate",
            Metric::UnsubscribeRate => "unsubscribe_rate",
        }
    }

    fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// What the rows break down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// One row per period of the granularity.
    Period,
    /// One row per sending domain.
    Domain,
    /// One row per email.
    Email,
    /// One row per broadcast (mailroom has none).
    Broadcast,
}

impl Dimension {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Period => "period",
            Dimension::Domain => "domain",
            Dimension::Email => "email",
            Dimension::Broadcast => "broadcast",
        }
    }
}

/// The size of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// An hour of the time zone.
    Hourly,
    /// A day (from midnight in the time zone).
    Daily,
    /// A week, Monday to Sunday.
    Weekly,
    /// A calendar month.
    Monthly,
}

impl Granularity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hourly => "hourly",
            Granularity::Daily => "daily",
            Granularity::Weekly => "weekly",
            Granularity::Monthly => "monthly",
        }
    }
}

/// A checked metrics request.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsQuery {
    /// The range's start (inclusive).
    pub start: DateTime<Utc>,
    /// The range's end (exclusive), never after the time of the request.
    pub end: DateTime<Utc>,
    /// The time zone periods are reckoned in.
    pub zone: Tz,
    /// The period size.
    pub granularity: Granularity,
    /// The metrics asked for, in the order asked.
    pub metrics: Vec<Metric>,
    /// The dimensions, in the order asked.
    pub dimensions: Vec<Dimension>,
    /// Only emails from these sending domains (by id), when given.
    pub domain_ids: Option<Vec<String>>,
    /// Only these emails, when given.
    pub email_ids: Option<Vec<EmailId>>,
    /// Only emails of these broadcasts (there are none), when given.
    pub broadcast_ids: Option<Vec<String>>,
}

fn invalid(field: &str, why: impl Into<String>) -> FieldError {
    FieldError::new(field, Rule::Shape(why.into()))
}

/// A comma-separated list, blanks dropped, repeats kept once (in linear time: a query string
/// of tens of thousands of distinct names is a request like any other).
fn list(value: Option<&String>) -> Vec<String> {
    let mut seen = HashSet::new();
    value
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && seen.insert(*s))
        .map(str::to_string)
        .collect()
}

/// A bound of the range as the client wrote it.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// A date (`2026-07-01`): a whole day of the zone.
    Day(NaiveDate),
    /// A date-time (RFC 3339, or without an offset: in the zone).
    At(DateTime<Utc>),
}

impl Bound {
    /// `field` read in `zone`: a date the zone's calendar has, or a date-time that exists there.
    fn parse(field: &str, s: &str, zone: Tz) -> Result<Bound, FieldError> {
        let s = s.trim();
        let local = |n: NaiveDateTime| zone.from_local_datetime(&n).earliest().map(|t| t.with_timezone(&Utc));
        let parsed = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            Some(Bound::At(t.with_timezone(&Utc)))
        } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            midnight(zone, d).map(|_| Bound::Day(d))
        } else if let Ok(n) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
            local(n).map(Bound::At)
        } else {
            None
        };
        parsed.ok_or_else(|| {
            invalid(field, "must be an ISO 8601 date (2026-07-01) or date-time (2026-07-01T00:00:00Z) that exists")
        })
    }

    /// Where a range starting here starts: a day's first instant.
    fn start(self, zone: Tz) -> Option<DateTime<Utc>> {
        match self {
            Bound::Day(d) => midnight(zone, d),
            Bound::At(t) => Some(t),
        }
    }

    /// Where a range ending here ends (exclusive): after the whole day, at the first instant of
    /// the next day the zone's calendar has. Why a date includes its day: `start_date` and
    /// `end_date` may be the same date ("on or before"), which would otherwise be an empty
    /// range, and `2026-07-01` to `2026-07-31` is July, not July less its last day.
    fn end(self, zone: Tz) -> Option<DateTime<Utc>> {
        match self {
            Bound::Day(d) => first_midnight_from(zone, d.succ_opt()?),
            Bound::At(t) => Some(t),
        }
    }
}

/// The first instant of `d` in `zone`: midnight, or where clocks move forward at midnight the
/// end of the gap (read with the offset before it, as `scheduled_at` reads such a time), which
/// is not always a whole hour (Lord Howe Island went from +10:00 to +10:30 at midnight on
/// 1 March 1981: that day began at 00:30). `None` for a day the zone's calendar skipped.
fn midnight(zone: Tz, d: NaiveDate) -> Option<DateTime<Utc>> {
    let t = crate::schedule::local_to_utc(zone, d.and_hms_opt(0, 0, 0)?)?;
    (t.with_timezone(&zone).date_naive() == d).then_some(t)
}

/// The first instant of the first day from `d` on that `zone`'s calendar has: a zone can skip
/// a whole day (Samoa went from 29 to 31 December 2011), and what follows goes on after it.
fn first_midnight_from(zone: Tz, d: NaiveDate) -> Option<DateTime<Utc>> {
    (0..3).find_map(|k| midnight(zone, d.checked_add_days(chrono::Days::new(k))?))
}

impl MetricsQuery {
    /// Checks the query parameters (`start_date`, `end_date`, `timezone`, `granularity`,
    /// `metrics`, `dimensions`, `domain_id`, `email_id`, `broadcast_id`; others are ignored,
    /// as the hosted API ignores them) at `now`.
    pub fn parse(q: &HashMap<String, String>, now: DateTime<Utc>) -> Result<MetricsQuery, FieldError> {
        let zone = match q.get("timezone").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Tz::UTC,
            Some(z) => {
                z.parse::<Tz>().map_err(|_| invalid("timezone", "must be an IANA time zone, e.g. America/New_York"))?
            }
        };
        let granularity = match q.get("granularity").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None | Some("daily") => Granularity::Daily,
            Some("hourly") => Granularity::Hourly,
            Some("weekly") => Granularity::Weekly,
            Some("monthly") => Granularity::Monthly,
            Some(_) => return Err(invalid("granularity", "must be `hourly`, `daily`, `weekly` or `monthly`")),
        };
        // Values in the future are the present (the hosted API clamps them).
        let end_bound = match q.get("end_date").filter(|s| !s.trim().is_empty()) {
            Some(s) => Some(Bound::parse("end_date", s, zone)?),
            None => None,
        };
        let unreadable = |field| invalid(field, "must be a date or date-time mailroom can count to");
        let end_at = match end_bound {
            Some(b) => b.end(zone).ok_or_else(|| unreadable("end_date"))?,
            None => now,
        };
        let end = end_at.min(now);
        // By default the six days before the end: a date's six whole days before it (with
        // it, a week of dates), an instant's 144 hours; and never after the 144 hours before
        // now (an end date in the future ends now).
        let start = match q.get("start_date").filter(|s| !s.trim().is_empty()) {
            Some(s) => Bound::parse("start_date", s, zone)?.start(zone).ok_or_else(|| unreadable("start_date"))?,
            None => match end_bound {
                Some(Bound::Day(d)) => d
                    .checked_sub_days(chrono::Days::new(6))
                    .and_then(|d| first_midnight_from(zone, d))
                    .ok_or_else(|| unreadable("end_date"))?
                    .min(end - Duration::days(6)),
                _ => end - Duration::days(6),
            },
        };
        // A start on the end date's last instant or later is after that date, not on it.
        if start > end || (matches!(end_bound, Some(Bound::Day(_))) && start >= end_at) {
            return Err(invalid("start_date", "must be on or before `end_date` (and not in the future)"));
        }
        let mut metrics = Vec::new();
        for m in list(q.get("metrics")) {
            metrics.push(Metric::parse(&m).ok_or_else(|| {
                invalid(
                    "metrics",
                    format!("{m:?} is not a metric; the metrics are {}", names(&Metric::ALL.map(Metric::as_str))),
                )
            })?);
        }
        if metrics.is_empty() {
            metrics = Metric::ALL.to_vec();
        }
        let mut dimensions = Vec::new();
        for d in list(q.get("dimensions")) {
            dimensions.push(match d.as_str() {
                "period" => Dimension::Period,
                "domain" => Dimension::Domain,
                "email" => Dimension::Email,
                "broadcast" => Dimension::Broadcast,
                _ => {
                    return Err(invalid(
                        "dimensions",
                        format!("{d:?} is not a dimension; they are `period`, `domain`, `email` and `broadcast`"),
                    ));
                }
            });
        }
        let ids = |field: &str| -> Result<Option<Vec<String>>, FieldError> {
            let v = list(q.get(field));
            if v.len() > MAX_IDS {
                return Err(FieldError::new(field, Rule::TooMany { max: MAX_IDS, got: v.len() }));
            }
            Ok((!v.is_empty()).then_some(v))
        };
        let domain_ids = ids("domain_id")?;
        let broadcast_ids = ids("broadcast_id")?;
        let email_ids = match ids("email_id")? {
            None => None,
            Some(v) => Some(
                v.iter()
                    .map(|s| s.parse::<EmailId>().map_err(|_| FieldError::new("email_id", Rule::InvalidId)))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let asked = dimensions.clone();
        let has = |d| asked.contains(&d);
        if has(Dimension::Domain) && has(Dimension::Email) {
            return Err(invalid("dimensions", "`domain` cannot be combined with `email`"));
        }
        if email_ids.is_some() && has(Dimension::Domain) {
            return Err(invalid("email_id", "cannot be combined with the `domain` dimension"));
        }
        if (has(Dimension::Broadcast) || broadcast_ids.is_some()) && (has(Dimension::Email) || email_ids.is_some()) {
            return Err(invalid(
                "dimensions",
                "the `broadcast` dimension or `broadcast_id` cannot be combined with the `email` dimension or `email_id`",
            ));
        }
        let query =
            MetricsQuery { start, end, zone, granularity, metrics, dimensions, domain_ids, email_ids, broadcast_ids };
        if has(Dimension::Period) && query.periods().nth(MAX_PERIODS).is_some() {
            return Err(invalid(
                "granularity",
                format!(
                    "the range holds more than {MAX_PERIODS} periods at this granularity: use a coarser one or a shorter range"
                ),
            ));
        }
        Ok(query)
    }

    /// The period `at` falls in: its first instant and its label (`2026-07-01` for days,
    /// weeks (from Monday) and months (from the 1st); the hour with its offset for hours).
    pub fn period_of(&self, at: DateTime<Utc>) -> (DateTime<Utc>, String) {
        let local = at.with_timezone(&self.zone);
        let day = |d: NaiveDate| (midnight(self.zone, d).unwrap_or(at), d.format("%Y-%m-%d").to_string());
        match self.granularity {
            Granularity::Hourly => {
                // Back to the hour of the zone's clock (a zone may be :30 or :45 off UTC).
                let into = i64::from(local.minute() * 60 + local.second());
                let mut start = at - Duration::seconds(into) - Duration::nanoseconds(i64::from(local.nanosecond()));
                // Unless the offset changed since then: where clocks move by less than an hour
                // (Lord Howe Island's by 30 minutes), `start` read the other offset, and an
                // hour of the clock is cut in two at the change. The period then starts at the
                // change (the first second that reads `at`'s offset); without this, the start
                // of a period lay in the period before it.
                let offset = |t: i64| {
                    DateTime::from_timestamp(t, 0).map(|t| chrono::Offset::fix(t.with_timezone(&self.zone).offset()))
                };
                // `at`'s offset is `local`'s: one more lookup per call (for `start`), not two.
                let new = Some(chrono::Offset::fix(local.offset()));
                let (mut before, mut after) = (start.timestamp(), at.timestamp());
                if offset(before) != new {
                    // Offsets change on whole seconds, at most once in an hour: `before` reads
                    // the old one, `after` the new.
                    while after - before > 1 {
                        let mid = before + (after - before) / 2;
                        if offset(mid) == new { after = mid } else { before = mid }
                    }
                    start = DateTime::from_timestamp(after, 0).unwrap_or(start);
                }
                (start, start.with_timezone(&self.zone).format("%Y-%m-%dT%H:%M:%S%:z").to_string())
            }
            Granularity::Daily => day(local.date_naive()),
            Granularity::Weekly => {
                let d = local.date_naive();
                day(d - Duration::days(i64::from(d.weekday().num_days_from_monday())))
            }
            Granularity::Monthly => day(local.date_naive().with_day(1).unwrap_or(local.date_naive())),
        }
    }

    /// Every period the range touches, in order.
    pub fn periods(&self) -> impl Iterator<Item = (DateTime<Utc>, String)> + '_ {
        let first = (self.start < self.end).then(|| self.period_of(self.start));
        std::iter::successors(first, move |(start, _)| {
            let local = start.with_timezone(&self.zone).date_naive();
            let from = |d: NaiveDate| first_midnight_from(self.zone, d);
            let next = match self.granularity {
                Granularity::Hourly => *start + Duration::hours(1),
                Granularity::Daily => from(local + Duration::days(1))?,
                Granularity::Weekly => from(local + Duration::days(7))?,
                Granularity::Monthly => from(local.checked_add_months(chrono::Months::new(1))?)?,
            };
            // The period `next` falls in, whose start may lie before `next` (an hour an offset
            // change cut short ends early): it is in the range when its start is.
            let period = self.period_of(next);
            (period.0 > *start && period.0 < self.end).then_some(period)
        })
    }

    fn has(&self, d: Dimension) -> bool {
        self.dimensions.contains(&d)
    }
}

fn names(all: &[&str]) -> String {
    all.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// The counts of a set of emails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    received: u64,
    sent: u64,
    delivered: u64,
    delivery_delayed: u64,
    bounced_permanent: u64,
    bounced_transient: u64,
    bounced_undetermined: u64,
    complained: u64,
    suppressed: u64,
    failed: u64,
    opened: u64,
    clicked: u64,
    unique_opened: u64,
    unique_clicked: u64,
    unsubscribed: u64,
}

impl Counts {
    /// The counts of one email with these events.
    pub fn of(events: &[crate::email::Event], unsubscribed: bool) -> Counts {
        use crate::bounce::BounceType;
        let mut c = Counts { received: 1, unsubscribed: u64::from(unsubscribed), ..Counts::default() };
        let (mut sent, mut delivered, mut delayed, mut complained, mut suppressed, mut failed) =
            (false, false, false, false, false, false);
        // 0: none, 1: undetermined, 2: transient, 3: permanent.
        let mut bounce = 0u8;
        for e in events {
            match e.kind {
                EventKind::Sent => sent = true,
                EventKind::Delivered => (sent, delivered) = (true, true),
                EventKind::DeliveryDelayed => (sent, delayed) = (true, true),
                EventKind::Bounced => {
                    sent = true;
                    let severity = match e.bounce.as_ref().map(|b| b.kind) {
                        Some(BounceType::Permanent) => 3,
                        Some(BounceType::Transient) => 2,
                        Some(BounceType::Undetermined) | None => 1,
                    };
                    bounce = bounce.max(severity);
                }
                EventKind::Complained => (sent, complained) = (true, true),
                EventKind::Opened => (sent, c.opened) = (true, c.opened + 1),
                EventKind::Clicked => (sent, c.clicked) = (true, c.clicked + 1),
                EventKind::Suppressed => suppressed = true,
                EventKind::Failed => failed = true,
                EventKind::Queued | EventKind::Scheduled | EventKind::Canceled => {}
            }
        }
        let one = u64::from;
        c.sent = one(sent);
        c.delivered = one(delivered);
        c.delivery_delayed = one(delayed);
        c.complained = one(complained);
        c.suppressed = one(suppressed);
        c.failed = one(failed);
        c.unique_opened = one(c.opened > 0);
        c.unique_clicked = one(c.clicked > 0);
        c.bounced_permanent = one(bounce == 3);
        c.bounced_transient = one(bounce == 2);
        c.bounced_undetermined = one(bounce == 1);
        c
    }

    fn add(&mut self, o: &Counts) {
        self.received += o.received;
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.delivery_delayed += o.delivery_delayed;
        self.bounced_permanent += o.bounced_permanent;
        self.bounced_transient += o.bounced_transient;
        self.bounced_undetermined += o.bounced_undetermined;
        self.complained += o.complained;
        self.suppressed += o.suppressed;
        self.failed += o.failed;
        self.opened += o.opened;
        self.clicked += o.clicked;
        self.unique_opened += o.unique_opened;
        self.unique_clicked += o.unique_clicked;
        self.unsubscribed += o.unsubscribed;
    }

    /// One metric's value: a count, or a percentage with two decimals (0 over nothing).
    pub fn value(&self, m: Metric) -> Value {
        let rate = |n: u64, d: u64| -> Value {
            if d == 0 {
                // A number of the rates' own kind (0.0), so that a rate is always a float.
                return json!(0.0);
            }
            #[allow(clippy::cast_precision_loss)]
            let r = (n as f64 * 10_000.0 / d as f64).round() / 100.0;
            json!(r)
        };
        let bounced = self.bounced_permanent + self.bounced_transient + self.bounced_undetermined;
        match m {
            Metric::Received => json!(self.received),
            Metric::Delivered => json!(self.delivered),
            Metric::Complained => json!(self.complained),
            Metric::Suppressed => json!(self.suppressed),
            Metric::Bounced => json!(bounced),
            Metric::BouncedTransient => json!(self.bounced_transient),
            Metric::BouncedPermanent => json!(self.bounced_permanent),
            Metric::BouncedUndetermined => json!(self.bounced_undetermined),
            Metric::Opened => json!(self.opened),
            Metric::Clicked => json!(self.clicked),
            Metric::Unsubscribed => json!(self.unsubscribed),
            Metric::DeliveryDelayed => json!(self.delivery_delayed),
            Metric::Failed => json!(self.failed),
            Metric::Sent => json!(self.sent),
            Metric::UniqueOpened => json!(self.unique_opened),
            Metric::UniqueClicked => json!(self.unique_clicked),
            Metric::DeliveryRate => rate(self.delivered, self.sent),
            Metric::OpenRate => rate(self.unique_opened, self.delivered),
            Metric::ClickRate => rate(self.unique_clicked, self.delivered),
            Metric::BounceRate => rate(bounced, self.sent),
            Metric::ComplaintRate => rate(self.complained, self.delivered),
            Metric::UnsubscribeRate => rate(self.unsubscribed, self.delivered),
        }
    }

    fn row(&self, metrics: &[Metric], mut row: Map<String, Value>) -> Value {
        for m in metrics {
            row.insert(m.as_str().to_string(), self.value(*m));
        }
        Value::Object(row)
    }
}

/// The sending domain an email's rows and filter go by: the account's registered domain that
/// governs its `From` domain (itself or a parent), else the `From` domain alone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Sender {
    name: String,
    id: Option<String>,
}

/// Finds the registered domain of a `From` domain, remembering what it found.
struct Senders {
    by_name: HashMap<String, (String, String)>,
    seen: HashMap<String, Sender>,
}

impl Senders {
    fn new(domains: &[Domain]) -> Senders {
        let by_name = domains.iter().map(|d| (d.name.to_ascii_lowercase(), (d.id.clone(), d.name.clone()))).collect();
        Senders { by_name, seen: HashMap::new() }
    }

    fn of(&mut self, from_domain: &str) -> &Sender {
        if !self.seen.contains_key(from_domain) {
            // The names `domains::governing_domain` looks up, matched against the list.
            let found =
                crate::domains::governing_names(from_domain).find_map(|name| self.by_name.get(name)).map_or_else(
                    || Sender { name: from_domain.to_string(), id: None },
                    |(id, n)| Sender { name: n.clone(), id: Some(id.clone()) },
                );
            self.seen.insert(from_domain.to_string(), found);
        }
        &self.seen[from_domain]
    }
}

/// A row's key: its period's start, its sending domain, its email (as dimensions ask).
type RowKey = (Option<DateTime<Utc>>, Option<Sender>, Option<u128>);

/// One breakdown being counted: its query (the range, filters and metrics shared, its own
/// dimensions), the totals and the rows so far.
struct Tally {
    q: MetricsQuery,
    totals: Counts,
    rows: BTreeMap<RowKey, (String, Counts)>,
}

impl Tally {
    /// Adds one email of the range, from `sender`, with these counts.
    fn add(&mut self, facts: &EmailFacts, sender: &Sender, counts: &Counts) -> Result<(), Error> {
        let q = &self.q;
        self.totals.add(counts);
        if q.dimensions.is_empty() || q.has(Dimension::Broadcast) {
            return Ok(());
        }
        let (period, label) = if q.has(Dimension::Period) {
            let (start, label) = q.period_of(facts.created_at);
            (Some(start), label)
        } else {
            (None, String::new())
        };
        let key = (
            period,
            q.has(Dimension::Domain).then(|| sender.clone()),
            q.has(Dimension::Email).then_some(facts.id.as_u128()),
        );
        if self.rows.len() >= MAX_ROWS && !self.rows.contains_key(&key) {
            let why = if key.2.is_some() {
                format!(
                    "the `email` dimension gives one row per email, and the range holds more than {MAX_ROWS}: narrow `start_date` and `end_date`, or name the emails with `email_id`"
                )
            } else {
                format!(
                    "this breakdown has more than {MAX_ROWS} rows: narrow `start_date` and `end_date`, use a coarser `granularity`, or filter by `domain_id`"
                )
            };
            return Err(invalid("dimensions", why).into());
        }
        self.rows.entry(key).or_insert_with(|| (label, Counts::default())).1.add(counts);
        Ok(())
    }

    /// The answer, as `GET /emails/metrics` gives it.
    fn finish(self) -> Value {
        let q = &self.q;
        let mut out = json!({
            "object": "metrics",
            "start_date": crate::email::rfc3339(q.start),
            "end_date": crate::email::rfc3339(q.end),
            "metrics": q.metrics.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            "dimensions": q.dimensions.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
            "granularity": q.granularity.as_str(),
            "totals": self.totals.row(&q.metrics, Map::new()),
        });
        if !q.dimensions.is_empty()
            && let Some(o) = out.as_object_mut()
        {
            o.insert("data".into(), Value::Array(data_rows(q, self.rows)));
        }
        out
    }
}

/// The metrics of `account` as `q` asks, read from `storage`.
pub async fn compute(storage: &dyn Storage, account: &AccountId, q: &MetricsQuery) -> Result<Value, Error> {
    let mut answers = compute_breakdowns(storage, account, q, std::slice::from_ref(&q.dimensions)).await?;
    Ok(answers.pop().unwrap_or_default())
}

/// The metrics of `q`'s range, filters and metrics broken down each way `breakdowns` names
/// (each a combination [`MetricsQuery::parse`] accepts), in that order, from one reading of
/// the range. Why: a page showing the same range by period and by sending domain would
/// otherwise read every email of the range twice.
pub async fn compute_breakdowns(
    storage: &dyn Storage,
    account: &AccountId,
    q: &MetricsQuery,
    breakdowns: &[Vec<Dimension>],
) -> Result<Vec<Value>, Error> {
    let domains = match storage.domains() {
        Some(store) => store.domain_list(account).await?,
        None => Vec::new(),
    };
    let mut senders = Senders::new(&domains);
    // The sending domain is read (it is in the content) only when a breakdown or the filter
    // needs it.
    let senders_wanted = q.domain_ids.is_some() || breakdowns.iter().any(|d| d.contains(&Dimension::Domain));
    // Only the ids the filter names; `None`: any domain.
    let wanted_domains: Option<HashSet<&str>> =
        q.domain_ids.as_ref().map(|ids| ids.iter().map(String::as_str).collect());
    let unsubscribed: HashSet<u128> =
        if q.metrics.iter().any(|m| matches!(m, Metric::Unsubscribed | Metric::UnsubscribeRate)) {
            storage.suppression_unsubscribe_sources(account).await?.into_iter().map(EmailId::as_u128).collect()
        } else {
            HashSet::new()
        };
    let mut tallies: Vec<Tally> = breakdowns
        .iter()
        .map(|d| Tally {
            q: MetricsQuery { dimensions: d.clone(), ..q.clone() },
            totals: Counts::default(),
            rows: BTreeMap::new(),
        })
        .collect();
    let broadcasts_only = q.broadcast_ids.is_some();
    let mut take = |facts: EmailFacts, senders: &mut Senders| -> Result<(), Error> {
        if broadcasts_only || facts.created_at < q.start || facts.created_at >= q.end {
            return Ok(());
        }
        let sender = senders.of(&facts.from_domain);
        if let Some(wanted) = &wanted_domains
            && !sender.id.as_deref().is_some_and(|id| wanted.contains(id))
        {
            return Ok(());
        }
        let counts = Counts::of(&facts.events, unsubscribed.contains(&facts.id.as_u128()));
        tallies.iter_mut().try_for_each(|t| t.add(&facts, sender, &counts))
    };
    if let Some(ids) = &q.email_ids {
        // A few named emails: read each, not the range (the content only when its sending
        // domain is wanted, as the range's reading does).
        for id in ids {
            let facts = if senders_wanted {
                storage.get_email(account, *id).await?.map(|r| EmailFacts::of(r.state, Some(&r.content.from.domain)))
            } else {
                storage.get_state(account, *id).await?.map(|state| EmailFacts::of(state, None))
            };
            if let Some(facts) = facts {
                take(facts, &mut senders)?;
            }
        }
    } else if !broadcasts_only {
        let (lo, hi) = (id_floor(q.start), id_floor(q.end));
        let mut from = lo;
        while from < hi {
            let chunk = storage.email_facts(account, from..hi, CHUNK, senders_wanted).await?;
            let Some(last) = chunk.last().map(|f| f.id.as_u128()) else { break };
            for facts in chunk {
                take(facts, &mut senders)?;
            }
            if last == u128::MAX {
                break;
            }
            from = last + 1;
        }
    }
    Ok(tallies.into_iter().map(Tally::finish).collect())
}

/// The smallest id accepted at `at` or later (UUIDv7: milliseconds in the top 48 bits).
pub fn id_floor(at: DateTime<Utc>) -> u128 {
    u128::from(u64::try_from(at.timestamp_millis()).unwrap_or(0) & 0xffff_ffff_ffff) << 80
}

/// The rows in their order: periods in time order (every period when only `period` is
/// asked, empty ones included), then domains by `sent`, most first, then name; emails in
/// the order they were accepted.
fn data_rows(q: &MetricsQuery, mut rows: BTreeMap<RowKey, (String, Counts)>) -> Vec<Value> {
    if q.has(Dimension::Broadcast) {
        return Vec::new();
    }
    if q.dimensions == [Dimension::Period] {
        // Periods with no email are rows too: a chart has every point.
        for (start, label) in q.periods() {
            rows.entry((Some(start), None, None)).or_insert_with(|| (label, Counts::default()));
        }
    }
    let mut ordered: Vec<(RowKey, (String, Counts))> = rows.into_iter().collect();
    if q.has(Dimension::Domain) {
        ordered.sort_by(|(a, (_, ca)), (b, (_, cb))| {
            a.0.cmp(&b.0).then(cb.sent.cmp(&ca.sent)).then_with(|| a.1.cmp(&b.1))
        });
    }
    ordered
        .into_iter()
        .map(|((period, sender, email), (label, counts))| {
            let mut row = Map::new();
            if period.is_some() {
                row.insert("period".into(), json!(label));
            }
            if let Some(s) = sender {
                if let Some(id) = s.id {
                    row.insert("domain_id".into(), json!(id));
                }
                row.insert("domain_name".into(), json!(s.name));
            }
            if let Some(id) = email {
                row.insert("email_id".into(), json!(EmailId::from_u128(id).to_string()));
            }
            counts.row(&q.metrics, row)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounce::{BounceInfo, BounceSubtype, BounceType};
    use crate::email::Event;

    fn q(pairs: &[(&str, &str)]) -> Result<MetricsQuery, FieldError> {
        q_at(pairs, "2026-07-10T12:00:00Z")
    }

    /// [`q`] asked at `now`.
    fn q_at(pairs: &[(&str, &str)], now: &str) -> Result<MetricsQuery, FieldError> {
        let map = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        MetricsQuery::parse(&map, at(now))
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
    }

    fn bounce(kind: BounceType) -> Event {
        let mut e = Event::new(EventKind::Bounced, at("2026-07-02T00:00:00Z"));
        e.bounce =
            Some(BounceInfo { kind, subtype: BounceSubtype::General, message: String::new(), diagnostic: vec![] });
        e
    }

    #[test]
    fn defaults_are_the_last_six_days_daily_every_metric_no_dimension() {
        let d = q(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.start, d.end), (at("2026-07-04T12:00:00Z"), at("2026-07-10T12:00:00Z")));
        assert_eq!(d.granularity, Granularity::Daily);
        assert_eq!(d.metrics, Metric::ALL.to_vec());
        assert!(d.dimensions.is_empty());
    }

    #[test]
    fn dates_are_midnights_of_the_zone_and_the_future_is_now() {
        let d = q(&[("start_date", "2026-07-01"), ("end_date", "2027-01-01"), ("timezone", "America/New_York")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.start, at("2026-07-01T04:00:00Z"));
        assert_eq!(d.end, at("2026-07-10T12:00:00Z"), "an end in the future is now");
        let d = q(&[("start_date", "2026-07-01T10:00:00+02:00"), ("end_date", "2026-07-02T00:00:00")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((d.start, d.end), (at("2026-07-01T08:00:00Z"), at("2026-07-02T00:00:00Z")));
    }

    #[test]
    fn a_date_range_includes_both_its_dates() {
        let range = |pairs: &[(&str, &str)]| {
            let d = q(pairs).unwrap_or_else(|e| panic!("{e}"));
            (d.start, d.end)
        };
        // One day: the same date twice.
        let day = [("start_date", "2026-07-08"), ("end_date", "2026-07-08")];
        assert_eq!(range(&day), (at("2026-07-08T00:00:00Z"), at("2026-07-09T00:00:00Z")));
        // In a zone: its midnights.
        let tokyo = [("start_date", "2026-07-08"), ("end_date", "2026-07-08"), ("timezone", "Asia/Tokyo")];
        assert_eq!(range(&tokyo), (at("2026-07-07T15:00:00Z"), at("2026-07-08T15:00:00Z")));
        // Today: up to now. A date-time end is where it says.
        assert_eq!(range(&[("start_date", "2026-07-10"), ("end_date", "2026-07-10")]).1, at("2026-07-10T12:00:00Z"));
        assert_eq!(range(&[("end_date", "2026-07-08T06:00:00Z")]).1, at("2026-07-08T06:00:00Z"));
        // Without a start: the six dates before the end date, and it (a week of dates); before
        // an instant, 144 hours.
        assert_eq!(range(&[("end_date", "2026-07-07")]), (at("2026-07-01T00:00:00Z"), at("2026-07-08T00:00:00Z")));
        // An end date after today ends now, and the week before it is the one before now.
        assert_eq!(range(&[("end_date", "2027-01-01")]), (at("2026-07-04T12:00:00Z"), at("2026-07-10T12:00:00Z")));
        assert_eq!(range(&[("end_date", "2026-07-10")]), (at("2026-07-04T00:00:00Z"), at("2026-07-10T12:00:00Z")));
        let before_instant = range(&[("end_date", "2026-07-07T09:30:00Z")]);
        assert_eq!(before_instant, (at("2026-07-01T09:30:00Z"), at("2026-07-07T09:30:00Z")));
        // A day of July to a day of July is July whole, day by day.
        let july = q_at(
            &[("start_date", "2026-07-01"), ("end_date", "2026-07-31"), ("dimensions", "period")],
            "2026-12-01T00:00:00Z",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let days: Vec<String> = july.periods().map(|p| p.1).collect();
        assert_eq!(
            (days.len(), days.first().map(String::as_str), days.last().map(String::as_str)),
            (31, Some("2026-07-01"), Some("2026-07-31"))
        );
        // A start after the end date is still refused, and so is a date the zone skipped
        // (Samoa went from 29 to 31 December 2011).
        assert!(q(&[("start_date", "2026-07-09"), ("end_date", "2026-07-08")]).is_err());
        let skipped = [("end_date", "2011-12-30"), ("timezone", "Pacific/Apia")];
        assert_eq!(q(&skipped).err().map(|e| e.path).as_deref(), Some("end_date"));
        // The day before a skipped one ends where the next day the calendar has begins.
        let apia = q_at(
            &[("start_date", "2011-12-29"), ("end_date", "2011-12-29"), ("timezone", "Pacific/Apia")],
            "2026-12-01T00:00:00Z",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(apia.end - apia.start, Duration::hours(24));
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let field = |pairs: &[(&str, &str)]| q(pairs).err().map(|e| e.path);
        assert_eq!(field(&[("start_date", "yesterday")]).as_deref(), Some("start_date"));
        assert_eq!(field(&[("end_date", "2026-02-30")]).as_deref(), Some("end_date"));
        assert_eq!(field(&[("start_date", "2026-07-09"), ("end_date", "2026-07-08")]).as_deref(), Some("start_date"));
        assert_eq!(field(&[("timezone", "Mars/Olympus")]).as_deref(), Some("timezone"));
        assert_eq!(field(&[("granularity", "yearly")]).as_deref(), Some("granularity"));
        assert_eq!(field(&[("metrics", "sent,opens")]).as_deref(), Some("metrics"));
        assert_eq!(field(&[("dimensions", "country")]).as_deref(), Some("dimensions"));
        assert_eq!(field(&[("dimensions", "domain,email")]).as_deref(), Some("dimensions"));
        assert_eq!(
            field(&[("dimensions", "domain"), ("email_id", "0192d0c0-0000-7000-8000-000000000000")]).as_deref(),
            Some("email_id")
        );
        assert_eq!(
            field(&[("dimensions", "broadcast"), ("email_id", "0192d0c0-0000-7000-8000-000000000000")]).as_deref(),
            Some("dimensions")
        );
        assert_eq!(field(&[("email_id", "not-a-uuid")]).as_deref(), Some("email_id"));
        let many = (0..101).map(|i| format!("d{i}")).collect::<Vec<_>>().join(",");
        assert_eq!(field(&[("domain_id", &many)]).as_deref(), Some("domain_id"));
        // Over 10,000 hours (about 417 days), with periods asked for; without them it is fine.
        let long = [("start_date", "2025-01-01"), ("granularity", "hourly"), ("dimensions", "period")];
        assert_eq!(field(&long).as_deref(), Some("granularity"));
        assert!(q(&long[..2]).is_ok());
        // Unknown parameters are ignored, repeats collapse.
        let d = q(&[("colour", "blue"), ("metrics", "sent, sent,delivered")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.metrics, vec![Metric::Sent, Metric::Delivered]);
    }

    #[test]
    fn periods_follow_the_zone_clock_across_daylight_saving() {
        let d = q(&[
            ("start_date", "2026-03-07"),
            ("end_date", "2026-03-10"),
            ("timezone", "America/New_York"),
            ("dimensions", "period"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let days: Vec<String> = d.periods().map(|p| p.1).collect();
        assert_eq!(days, ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"]);
        // 8 March 2026 has 23 hours in New York.
        let starts: Vec<DateTime<Utc>> = d.periods().map(|p| p.0).collect();
        assert_eq!(starts[2] - starts[1], Duration::hours(23));
        let h = q(&[
            ("start_date", "2026-07-01T00:00:00Z"),
            ("end_date", "2026-07-01T03:00:00Z"),
            ("timezone", "Asia/Kolkata"),
            ("granularity", "hourly"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let hours: Vec<String> = h.periods().map(|p| p.1).collect();
        // UTC midnight is 05:30 in Kolkata: the first hour of the zone's clock began at 05:00.
        assert_eq!(
            hours,
            [
                "2026-07-01T05:00:00+05:30",
                "2026-07-01T06:00:00+05:30",
                "2026-07-01T07:00:00+05:30",
                "2026-07-01T08:00:00+05:30"
            ]
        );
        // Lord Howe Island moves its clocks by 30 minutes: on 4 October 2026 (UTC) 02:00 becomes
        // 02:30, and on 4 April 2026 02:00 becomes 01:30. Each period starts where its own
        // period does, and periods go forward; the hour cut by the change is two periods.
        // (Found by the `metrics_query` fuzz target.)
        for (start, end, want) in [
            (
                "2026-10-03T14:00:00Z",
                "2026-10-03T17:00:00Z",
                &[
                    "2026-10-04T00:00:00+10:30",
                    "2026-10-04T01:00:00+10:30",
                    "2026-10-04T02:30:00+11:00",
                    "2026-10-04T03:00:00+11:00",
                ][..],
            ),
            (
                "2026-04-04T13:30:00Z",
                "2026-04-04T16:00:00Z",
                &[
                    "2026-04-05T00:00:00+11:00",
                    "2026-04-05T01:00:00+11:00",
                    "2026-04-05T01:30:00+10:30",
                    "2026-04-05T02:00:00+10:30",
                ][..],
            ),
        ] {
            let pairs = [
                ("start_date", start),
                ("end_date", end),
                ("timezone", "Australia/Lord_Howe"),
                ("granularity", "hourly"),
                ("dimensions", "period"),
            ];
            let h = q_at(&pairs, "2026-12-01T00:00:00Z").unwrap_or_else(|e| panic!("{e}"));
            let periods: Vec<(DateTime<Utc>, String)> = h.periods().collect();
            let labels: Vec<&str> = periods.iter().map(|p| p.1.as_str()).collect();
            assert_eq!(labels, want);
            for w in periods.windows(2) {
                assert!(w[0].0 < w[1].0, "{w:?}");
            }
            for (p, label) in &periods {
                assert_eq!(&h.period_of(*p), &(*p, label.clone()));
                // Every instant of a period is in it.
                assert_eq!(h.period_of(*p + Duration::minutes(29)).0, *p);
            }
        }
        // Samoa skipped 30 December 2011: the days go on after it.
        let pairs = [
            ("start_date", "2011-12-28"),
            ("end_date", "2012-01-02"),
            ("timezone", "Pacific/Apia"),
            ("dimensions", "period"),
        ];
        let apia = q_at(&pairs, "2026-12-01T00:00:00Z").unwrap_or_else(|e| panic!("{e}"));
        let days: Vec<String> = apia.periods().map(|p| p.1).collect();
        assert_eq!(days, ["2011-12-28", "2011-12-29", "2011-12-31", "2012-01-01", "2012-01-02"]);
        // Lord Howe Island moved from +10:00 to +10:30 at midnight on 1 March 1981: that day, and
        // its month, began at 00:30 (14:00 UTC), not at 01:00. (Found by the fuzz target.)
        let pairs = [
            ("start_date", "1981-02-10"),
            ("end_date", "1981-03-10"),
            ("timezone", "Australia/Lord_Howe"),
            ("granularity", "monthly"),
            ("dimensions", "period"),
        ];
        let howe = q_at(&pairs, "2026-12-01T00:00:00Z").unwrap_or_else(|e| panic!("{e}"));
        let months: Vec<(DateTime<Utc>, String)> = howe.periods().collect();
        assert_eq!(
            months,
            [
                (at("1981-01-31T14:00:00Z"), "1981-02-01".to_string()),
                (at("1981-02-28T14:00:00Z"), "1981-03-01".to_string())
            ]
        );
        assert_eq!(howe.period_of(at("1981-02-28T14:15:00Z")).0, at("1981-02-28T14:00:00Z"));
        let w = q(&[("start_date", "2026-06-20"), ("end_date", "2026-07-20"), ("granularity", "weekly")])
            .unwrap_or_else(|e| panic!("{e}"));
        let weeks: Vec<String> = w.periods().map(|p| p.1).collect();
        // The end is now (10 July): a later one is clamped to it.
        assert_eq!(weeks, ["2026-06-15", "2026-06-22", "2026-06-29", "2026-07-06"], "weeks begin on Monday");
        let m = q(&[("start_date", "2026-01-31"), ("end_date", "2026-04-01"), ("granularity", "monthly")])
            .unwrap_or_else(|e| panic!("{e}"));
        let months: Vec<String> = m.periods().map(|p| p.1).collect();
        assert_eq!(months, ["2026-01-01", "2026-02-01", "2026-03-01", "2026-04-01"]);
    }

    #[test]
    fn an_email_counts_once_and_its_worst_bounce_decides_the_type() {
        let t = at("2026-07-02T00:00:00Z");
        let events = vec![
            Event::new(EventKind::Queued, t),
            Event::new(EventKind::Sent, t),
            Event::new(EventKind::DeliveryDelayed, t),
            Event::new(EventKind::DeliveryDelayed, t),
            bounce(BounceType::Transient),
            bounce(BounceType::Permanent),
            bounce(BounceType::Undetermined),
        ];
        let c = Counts::of(&events, false);
        let v = |m| c.value(m);
        assert_eq!((v(Metric::Sent), v(Metric::DeliveryDelayed), v(Metric::Bounced)), (json!(1), json!(1), json!(1)));
        assert_eq!(
            (v(Metric::BouncedPermanent), v(Metric::BouncedTransient), v(Metric::BouncedUndetermined)),
            (json!(1), json!(0), json!(0))
        );
        assert_eq!(v(Metric::BounceRate), json!(100.0));
        let opened = vec![
            Event::new(EventKind::Sent, t),
            Event::new(EventKind::Delivered, t),
            Event::new(EventKind::Opened, t),
            Event::new(EventKind::Opened, t),
            Event::new(EventKind::Clicked, t),
        ];
        let c = Counts::of(&opened, true);
        assert_eq!(
            (c.value(Metric::Opened), c.value(Metric::UniqueOpened), c.value(Metric::Clicked)),
            (json!(2), json!(1), json!(1))
        );
        assert_eq!((c.value(Metric::Unsubscribed), c.value(Metric::UnsubscribeRate)), (json!(1), json!(100.0)));
        // Nothing sent: rates over nothing are 0, not a division by zero.
        let c = Counts::of(&[Event::new(EventKind::Queued, t), Event::new(EventKind::Failed, t)], false);
        assert_eq!(
            (c.value(Metric::Sent), c.value(Metric::Failed), c.value(Metric::DeliveryRate)),
            (json!(0), json!(1), json!(0.0))
        );
    }

    #[test]
    fn rates_are_percentages_with_two_decimals() {
        let t = at("2026-07-02T00:00:00Z");
        let mut c = Counts::default();
        for i in 0..3 {
            let mut e = vec![Event::new(EventKind::Sent, t), Event::new(EventKind::Delivered, t)];
            if i == 0 {
                e.push(Event::new(EventKind::Opened, t));
            }
            c.add(&Counts::of(&e, false));
        }
        assert_eq!(c.value(Metric::OpenRate), json!(33.33));
        assert_eq!(c.value(Metric::DeliveryRate), json!(100.0));
    }

    /// 2,500 emails, one a minute from 1 June, every seventh one bounced: the metrics read
    /// them in chunks of 1,000 (and the provided page-by-page reading in pages of 100) and
    /// count each once.
    #[tokio::test]
    async fn every_email_of_the_range_is_read_once_across_chunks_and_pages() {
        use crate::memory::MemoryStorage;
        use crate::testkit::new_email;
        let store = MemoryStorage::new();
        let account = AccountId::new("a");
        let t0 = at("2026-06-01T00:00:00Z");
        let emails: Vec<_> =
            (0..2_500u16).map(|i| new_email("a", t0 + Duration::minutes(i64::from(i)), i, None)).collect();
        store.insert_emails(&account, emails.clone(), None).await.unwrap_or_else(|e| panic!("{e}"));
        for e in emails.iter().step_by(7) {
            store
                .append_events(e.id, vec![Event::new(EventKind::Sent, t0), bounce(BounceType::Permanent)], vec![])
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // From minute 100 to minute 2,300: 2,200 emails, of which those at multiples of 7.
        let map = [
            ("start_date", "2026-06-01T01:40:00Z"),
            ("end_date", "2026-06-02T14:20:00Z"),
            ("metrics", "received,sent,bounced_permanent"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let q = MetricsQuery::parse(&map, at("2026-07-01T00:00:00Z")).unwrap_or_else(|e| panic!("{e}"));
        let m = compute(&store, &account, &q).await.unwrap_or_else(|e| panic!("{e}"));
        let bounced = (100..2_300).filter(|i| i % 7 == 0).count();
        assert_eq!(m["totals"], json!({"received": 2_200, "sent": bounced, "bounced_permanent": bounced}));
        // Several breakdowns from one reading are each the breakdown computed alone.
        let ways = [vec![Dimension::Period], vec![Dimension::Domain], vec![]];
        let together = compute_breakdowns(&store, &account, &q, &ways).await.unwrap_or_else(|e| panic!("{e}"));
        for (way, answer) in ways.iter().zip(&together) {
            let alone = MetricsQuery { dimensions: way.clone(), ..q.clone() };
            assert_eq!(answer, &compute(&store, &account, &alone).await.unwrap_or_else(|e| panic!("{e}")), "{way:?}");
        }
        let (lo, hi) = (id_floor(q.start), id_floor(q.end));
        let paged = crate::ports::email_facts_by_pages(&store, &account, lo..hi, 2_500, true)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let own = store.email_facts(&account, lo..hi, 2_500, true).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((paged.len(), &paged), (2_200, &own));
    }

    /// A breakdown of more than 10,000 rows is refused, whatever its dimension, and says how
    /// to narrow; the totals of the same range are answered.
    #[tokio::test]
    async fn a_breakdown_over_ten_thousand_rows_is_refused() {
        use crate::memory::MemoryStorage;
        use crate::testkit::new_email;
        let store = MemoryStorage::new();
        let account = AccountId::new("a");
        let t0 = at("2026-06-01T00:00:00Z");
        let emails: Vec<_> = (0..=MAX_ROWS as u32)
            .map(|i| {
                let mut e = new_email("a", t0 + Duration::seconds(i64::from(i)), (i % 60_000) as u16, None);
                e.id = EmailId::from_u128(id_floor(e.created_at) | u128::from(i));
                e.content.from =
                    crate::address::Mailbox::parse(&format!("hi@d{i}.test")).unwrap_or_else(|e| panic!("{e}"));
                e
            })
            .collect();
        store.insert_emails(&account, emails, None).await.unwrap_or_else(|e| panic!("{e}"));
        let ask = |dimensions: &str| {
            let map = [
                ("start_date", "2026-06-01"),
                ("end_date", "2026-06-02"),
                ("metrics", "received"),
                ("dimensions", dimensions),
            ]
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            MetricsQuery::parse(&map, at("2026-07-01T00:00:00Z")).unwrap_or_else(|e| panic!("{e}"))
        };
        for (dimensions, says) in [("domain", "domain_id"), ("email", "email_id"), ("period,domain", "granularity")] {
            let refused =
                compute(&store, &account, &ask(dimensions)).await.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(refused.contains("dimensions") && refused.contains(says), "{dimensions}: {refused}");
        }
        let m = compute(&store, &account, &ask("")).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m["totals"]["received"], json!(MAX_ROWS + 1));
    }

    #[test]
    fn a_from_domain_goes_by_its_registered_parent() {
        use crate::domains::{DkimAlgorithm, DkimKeyPair, DomainConfig};
        let key = DkimKeyPair { algorithm: DkimAlgorithm::Ed25519, private_pem: String::new(), record: String::new() };
        let d = |id: &str, name: &str| {
            Domain::new(id.into(), name.into(), key.clone(), &DomainConfig::default(), Utc::now())
        };
        let mut s = Senders::new(&[d("d1", "acme.com"), d("d2", "mail.acme.com")]);
        assert_eq!(s.of("mail.acme.com").id.as_deref(), Some("d2"));
        assert_eq!(s.of("news.mail.acme.com").id.as_deref(), Some("d2"));
        assert_eq!(s.of("eu.acme.com").id.as_deref(), Some("d1"));
        let other = s.of("other.test").clone();
        assert_eq!((other.id, other.name.as_str()), (None, "other.test"));
    }
}
