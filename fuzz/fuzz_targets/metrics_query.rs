//! `GET /emails/metrics` parameters: never panic, and an accepted query is one the metrics
//! can answer within their bounds: a range that ends by the time of the request and starts
//! by its end, at least one metric, at most `MAX_PERIODS` periods when periods are asked
//! for, each period after the one before and its own period's start, and none left out
//! between them or before the range's end.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::email_metrics::{Dimension, MAX_PERIODS, MetricsQuery};
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // `name=value&…`, as the router hands the decoded query over.
    let q: HashMap<String, String> = s
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let now = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("valid time");
    let Ok(query) = MetricsQuery::parse(&q, now) else { return };
    assert!(query.start <= query.end && query.end <= now);
    assert!(!query.metrics.is_empty());
    if query.dimensions.contains(&Dimension::Period) {
        let mut last = None;
        let mut n = 0;
        let instant_before = |t: chrono::DateTime<chrono::Utc>| t - chrono::Duration::nanoseconds(1);
        for (start, label) in query.periods() {
            assert!(!label.is_empty());
            assert_eq!(query.period_of(start).0, start, "a period starts where its own period does");
            assert!(last.is_none_or(|l| l < start), "periods go forward");
            // None is left out: the instant before a period is in the one listed before it.
            if let Some(l) = last {
                assert_eq!(query.period_of(instant_before(start)).0, l, "no period between {l} and {start}");
            }
            last = Some(start);
            n += 1;
        }
        assert!(n <= MAX_PERIODS);
        // The range's last instant is in the last period listed.
        if let Some(l) = last {
            assert_eq!(query.period_of(instant_before(query.end)).0, l, "the range's end is in the last period");
        }
    }
});
