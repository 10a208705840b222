//! The phrase table: plain-English and ISO `scheduled_at` values with the instants they must
//! resolve to, around US and EU daylight-saving changes and month and year ends.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use mailroom_core::error::Rule;
use mailroom_core::schedule::resolve_in;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

/// (now, phrase, expected instant). Clock times without a zone are UTC.
const TABLE: &[(&str, &str, &str)] = &[
    // Wednesday 5 August 2026, 11:52:01 UTC (New York on EDT, Paris on CEST).
    ("2026-08-05T11:52:01Z", "in 1 min", "2026-08-05T11:53:01Z"),
    ("2026-08-05T11:52:01Z", "in 1 mins", "2026-08-05T11:53:01Z"),
    ("2026-08-05T11:52:01Z", "in 1 minute", "2026-08-05T11:53:01Z"),
    ("2026-08-05T11:52:01Z", "in 5 minutes", "2026-08-05T11:57:01Z"),
    ("2026-08-05T11:52:01Z", "in 1min", "2026-08-05T11:53:01Z"),
    ("2026-08-05T11:52:01Z", "in a minute", "2026-08-05T11:53:01Z"),
    ("2026-08-05T11:52:01Z", "in 1 hour", "2026-08-05T12:52:01Z"),
    ("2026-08-05T11:52:01Z", "in 2 hours", "2026-08-05T13:52:01Z"),
    ("2026-08-05T11:52:01Z", "in an hour", "2026-08-05T12:52:01Z"),
    ("2026-08-05T11:52:01Z", "In An Hour", "2026-08-05T12:52:01Z"),
    ("2026-08-05T11:52:01Z", "in half an hour", "2026-08-05T12:22:01Z"),
    ("2026-08-05T11:52:01Z", "in 1 hour 30 minutes", "2026-08-05T13:22:01Z"),
    ("2026-08-05T11:52:01Z", "in 90 seconds", "2026-08-05T11:53:31Z"),
    ("2026-08-05T11:52:01Z", "in 1 day", "2026-08-06T11:52:01Z"),
    ("2026-08-05T11:52:01Z", "in 3 days", "2026-08-08T11:52:01Z"),
    ("2026-08-05T11:52:01Z", "in 1 week", "2026-08-12T11:52:01Z"),
    ("2026-08-05T11:52:01Z", "in 2 weeks", "2026-08-19T11:52:01Z"),
    ("2026-08-05T11:52:01Z", "30 minutes", "2026-08-05T12:22:01Z"),
    ("2026-08-05T11:52:01Z", "45 mins", "2026-08-05T12:37:01Z"),
    ("2026-08-05T11:52:01Z", "10 min from now", "2026-08-05T12:02:01Z"),
    ("2026-08-05T11:52:01Z", "tomorrow", "2026-08-06T11:52:01Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 9am", "2026-08-06T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow 9:00", "2026-08-06T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 17:30", "2026-08-06T17:30:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 12am", "2026-08-06T00:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 12pm", "2026-08-06T12:00:00Z"),
    ("2026-08-05T11:52:01Z", "today 17:00", "2026-08-05T17:00:00Z"),
    ("2026-08-05T11:52:01Z", "today at 5pm", "2026-08-05T17:00:00Z"),
    ("2026-08-05T11:52:01Z", "tonight at 11pm", "2026-08-05T23:00:00Z"),
    ("2026-08-05T11:52:01Z", "friday 3pm", "2026-08-07T15:00:00Z"),
    ("2026-08-05T11:52:01Z", "Friday at 3pm ET", "2026-08-07T19:00:00Z"),
    ("2026-08-05T11:52:01Z", "next friday 8pm", "2026-08-07T20:00:00Z"),
    ("2026-08-05T11:52:01Z", "next day at 9am PST", "2026-08-06T16:00:00Z"),
    ("2026-08-05T11:52:01Z", "monday at noon", "2026-08-10T12:00:00Z"),
    ("2026-08-05T11:52:01Z", "on monday at 9:30am", "2026-08-10T09:30:00Z"),
    ("2026-08-05T11:52:01Z", "this friday at 10am", "2026-08-07T10:00:00Z"),
    ("2026-08-05T11:52:01Z", "wednesday 11am", "2026-08-12T11:00:00Z"),
    ("2026-08-05T11:52:01Z", "wednesday 1pm", "2026-08-05T13:00:00Z"),
    ("2026-08-05T11:52:01Z", "next wednesday 1pm", "2026-08-12T13:00:00Z"),
    ("2026-08-05T11:52:01Z", "midnight", "2026-08-06T00:00:00Z"),
    ("2026-08-05T11:52:01Z", "noon", "2026-08-05T12:00:00Z"),
    ("2026-08-05T11:52:01Z", "3pm", "2026-08-05T15:00:00Z"),
    ("2026-08-05T11:52:01Z", "9am", "2026-08-06T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "9am tomorrow", "2026-08-06T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "9 am tomorrow", "2026-08-06T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 9am CET", "2026-08-06T07:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 9am CEST", "2026-08-06T07:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 9am Europe/Berlin", "2026-08-06T07:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 9am JST", "2026-08-06T00:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 9am AEST", "2026-08-05T23:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow 9am BST", "2026-08-06T08:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow 9am GMT", "2026-08-06T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow 9am UTC", "2026-08-06T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow 9am CT", "2026-08-06T14:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow 9am MDT", "2026-08-06T15:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow 9am EST", "2026-08-06T13:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow 9am EDT", "2026-08-06T13:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow 9am pt", "2026-08-06T16:00:00Z"),
    ("2026-08-05T11:52:01Z", "2026-08-10 09:00 Europe/Berlin", "2026-08-10T07:00:00Z"),
    ("2026-08-05T11:52:01Z", "2026-08-05T13:52:01.858+02:00", "2026-08-05T11:52:01.858Z"),
    ("2026-08-05T11:52:01Z", "2026-08-20T09:00:00Z", "2026-08-20T09:00:00Z"),
    // US spring forward: Sunday 8 March 2026, 02:00 EST → 03:00 EDT.
    ("2026-03-07T12:00:00Z", "tomorrow at 9am ET", "2026-03-08T13:00:00Z"),
    ("2026-03-07T12:00:00Z", "tomorrow at 1am ET", "2026-03-08T06:00:00Z"),
    ("2026-03-07T12:00:00Z", "tomorrow at 2:30am ET", "2026-03-08T07:30:00Z"),
    ("2026-03-07T12:00:00Z", "in 1 day", "2026-03-08T12:00:00Z"),
    ("2026-03-07T12:00:00Z", "monday 9am ET", "2026-03-09T13:00:00Z"),
    ("2026-03-07T12:00:00Z", "friday 9am EST", "2026-03-13T13:00:00Z"),
    ("2026-03-07T12:00:00Z", "tomorrow at 9am PT", "2026-03-08T16:00:00Z"),
    ("2026-03-07T12:00:00Z", "today at 11pm ET", "2026-03-08T04:00:00Z"),
    // US fall back: Sunday 1 November 2026, 02:00 EDT → 01:00 EST (01:30 happens twice).
    ("2026-10-31T12:00:00Z", "tomorrow at 1:30am ET", "2026-11-01T05:30:00Z"),
    ("2026-10-31T12:00:00Z", "tomorrow at 9am ET", "2026-11-01T14:00:00Z"),
    ("2026-10-31T12:00:00Z", "tomorrow at 9am", "2026-11-01T09:00:00Z"),
    // EU spring forward: Sunday 29 March 2026, 01:00 UTC.
    ("2026-03-28T12:00:00Z", "tomorrow at 2:30am CET", "2026-03-29T01:30:00Z"),
    ("2026-03-28T12:00:00Z", "tomorrow at 9am CET", "2026-03-29T07:00:00Z"),
    ("2026-03-28T12:00:00Z", "tomorrow 9am Europe/Berlin", "2026-03-29T07:00:00Z"),
    ("2026-03-28T12:00:00Z", "tomorrow at 9am BST", "2026-03-29T08:00:00Z"),
    // EU fall back: Sunday 25 October 2026 (02:30 happens twice).
    ("2026-10-24T12:00:00Z", "tomorrow at 2:30am CET", "2026-10-25T00:30:00Z"),
    ("2026-10-24T12:00:00Z", "tomorrow at 9am CET", "2026-10-25T08:00:00Z"),
    // Month and year ends.
    ("2026-01-31T22:00:00Z", "tomorrow at 9am", "2026-02-01T09:00:00Z"),
    ("2026-01-31T22:00:00Z", "in 1 day", "2026-02-01T22:00:00Z"),
    ("2026-01-31T22:00:00Z", "monday 8am", "2026-02-02T08:00:00Z"),
    ("2026-01-31T22:00:00Z", "in 2 hours", "2026-02-01T00:00:00Z"),
    ("2026-01-31T22:00:00Z", "midnight", "2026-02-01T00:00:00Z"),
    ("2026-01-31T22:00:00Z", "tomorrow at 9am JST", "2026-02-02T00:00:00Z"),
    ("2026-02-28T23:30:00Z", "tomorrow at 9am", "2026-03-01T09:00:00Z"),
    ("2026-02-28T23:30:00Z", "in 45 minutes", "2026-03-01T00:15:00Z"),
    ("2026-02-28T23:30:00Z", "tomorrow at 10am PT", "2026-03-01T18:00:00Z"),
    ("2026-12-31T20:00:00Z", "tomorrow at 9am", "2027-01-01T09:00:00Z"),
    ("2026-12-31T20:00:00Z", "friday at noon", "2027-01-01T12:00:00Z"),
    ("2026-12-31T20:00:00Z", "in 5 hours", "2027-01-01T01:00:00Z"),
    ("2026-12-31T20:00:00Z", "tomorrow at 9am AEDT", "2027-01-01T22:00:00Z"),
    // A month and day in words, either way round, with or without a year.
    ("2026-08-05T11:52:01Z", "aug 20 at 9am", "2026-08-20T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "August 20th at 9am", "2026-08-20T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "20 aug 9am", "2026-08-20T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "9am aug 20", "2026-08-20T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "the 20th of August at noon", "2026-08-20T12:00:00Z"),
    ("2026-08-05T11:52:01Z", "August 20, 2026 5pm ET", "2026-08-20T21:00:00Z"),
    ("2026-08-05T11:52:01Z", "20 August 2026 at 17:00", "2026-08-20T17:00:00Z"),
    ("2026-08-05T11:52:01Z", "sept 1 at 8:30", "2026-09-01T08:30:00Z"),
    ("2026-08-05T11:52:01Z", "on aug 5 at 11pm", "2026-08-05T23:00:00Z"),
    ("2026-08-05T11:52:01Z", "Aug 23rd 2026 9am", "2026-08-23T09:00:00Z"),
    ("2026-12-31T20:00:00Z", "jan 2 at 9am", "2027-01-02T09:00:00Z"),
    ("2026-12-31T20:00:00Z", "dec 31 at 11pm CET", "2026-12-31T22:00:00Z"),
    ("2026-03-07T12:00:00Z", "march 8 at 2:30am ET", "2026-03-08T07:30:00Z"),
    ("2028-02-10T12:00:00Z", "feb 29 at 9am", "2028-02-29T09:00:00Z"),
    // A part of the day decides how a bare hour reads; a written time must lie inside it.
    ("2026-08-05T11:52:01Z", "tonight at 8", "2026-08-05T20:00:00Z"),
    ("2026-08-05T11:52:01Z", "tonight at 8:30", "2026-08-05T20:30:00Z"),
    ("2026-08-05T11:52:01Z", "8 tonight", "2026-08-05T20:00:00Z"),
    ("2026-08-05T11:52:01Z", "tonight at 23:15", "2026-08-05T23:15:00Z"),
    ("2026-08-05T11:52:01Z", "this evening at 6", "2026-08-05T18:00:00Z"),
    ("2026-08-05T11:52:01Z", "this afternoon at 3", "2026-08-05T15:00:00Z"),
    ("2026-08-05T11:52:01Z", "8 this evening", "2026-08-05T20:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow morning at 8", "2026-08-06T08:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow afternoon at 12", "2026-08-06T12:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow evening at 7", "2026-08-06T19:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow night at 11", "2026-08-06T23:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 8 at night", "2026-08-06T20:00:00Z"),
    ("2026-08-05T11:52:01Z", "tomorrow at 20:00 in the evening", "2026-08-06T20:00:00Z"),
    ("2026-08-05T11:52:01Z", "friday evening at 7:30 ET", "2026-08-07T23:30:00Z"),
    ("2026-08-05T11:52:01Z", "monday morning 9", "2026-08-10T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "9 in the morning tomorrow", "2026-08-06T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "7 in the evening on friday", "2026-08-07T19:00:00Z"),
    ("2026-08-05T11:52:01Z", "in 2 days at 8 in the evening", "2026-08-07T20:00:00Z"),
    // The day after tomorrow: alone, the same clock time (as `tomorrow`).
    ("2026-08-05T11:52:01Z", "day after tomorrow", "2026-08-07T11:52:01Z"),
    ("2026-08-05T11:52:01Z", "the day after tomorrow at 9am", "2026-08-07T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "day after tomorrow morning at 10", "2026-08-07T10:00:00Z"),
    ("2026-12-31T20:00:00Z", "the day after tomorrow at 9am", "2027-01-02T09:00:00Z"),
    // Whole days ahead, at a clock time.
    ("2026-08-05T11:52:01Z", "in 3 days at 9am", "2026-08-08T09:00:00Z"),
    ("2026-08-05T11:52:01Z", "in 1 week at 17:00 ET", "2026-08-12T21:00:00Z"),
    ("2026-08-05T11:52:01Z", "in a day at noon", "2026-08-06T12:00:00Z"),
    ("2026-08-05T11:52:01Z", "2 days from now at 8am", "2026-08-07T08:00:00Z"),
    ("2026-03-07T12:00:00Z", "in 1 day at 2:30am ET", "2026-03-08T07:30:00Z"),
];

#[test]
fn every_phrase_resolves_to_its_instant() {
    assert!(TABLE.len() >= 60);
    let mut wrong = Vec::new();
    for (now, phrase, want) in TABLE {
        match resolve_in(phrase, t(now), 30, chrono_tz::Tz::UTC) {
            Ok(got) if got == t(want) => {}
            other => wrong.push(format!("{phrase:?} at {now}: want {want}, got {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), TABLE.len(), wrong.join("\n"));
}

#[test]
fn unclear_phrases_are_refused_with_the_input_quoted() {
    let now = t("2026-08-05T11:52:01Z");
    for phrase in [
        "whenever",
        "tomorrow at 9am please",
        "25:00",
        "tomorrow at 13pm",
        "today",
        "friday",
        "next",
        "in 5 parsecs",
        "tomorrow at 9am IST",
        "2026-13-01 09:00",
        "",
        "in -5 minutes",
        "at",
        "9am tomorrow tomorrow",
        "yesterday",
        "tomorrow at 9:7",
        "2024-08-05T11:52:01",
        "aug 20",
        "feb 30 at 9am",
        "12/25 9am",
        "aug at 9am",
        "the aug 20 at 9am",
        "august 20th of 9am",
        "june 31st 2026 at 9am",
        "in 2 hours at 9am",
        "in 3 days at",
        "in 3 days at 9am please",
        "in 3 days tomorrow",
        "dec 25 1730",
        // A part of the day is no clock time, and never contradicts the one written.
        "tonight",
        "tomorrow morning",
        "this evening",
        "friday afternoon",
        "tomorrow morning at 8pm",
        "tonight at 8am",
        "7 this afternoon",
        "tomorrow at 20:00 in the morning",
        "tomorrow night at 12",
        "tomorrow morning at 12",
        "tonight in the evening at 8",
        "tomorrow morning at 9 in the evening",
        "in the morning",
        "day after",
        "the day after tomorrow tomorrow",
    ] {
        match resolve_in(phrase, now, 30, chrono_tz::Tz::UTC) {
            Err(Rule::Schedule { input, why }) => {
                assert_eq!(input, phrase);
                assert!(!why.is_empty());
            }
            other => panic!("{phrase:?} should be refused, got {other:?}"),
        }
    }
    assert_eq!(
        resolve_in("today at 9am", now, 30, chrono_tz::Tz::UTC),
        Err(Rule::SchedulePast),
        "never moved silently"
    );
    // `this morning` is today's: its passed hour is not moved to tomorrow.
    assert_eq!(resolve_in("9 this morning", now, 30, chrono_tz::Tz::UTC), Err(Rule::SchedulePast));
    assert_eq!(resolve_in("in 31 days", now, 30, chrono_tz::Tz::UTC), Err(Rule::ScheduleTooFar { max_days: 30 }));
    // A date in words follows the same rules: today's passed hour is not moved, and a date
    // gone by this year is next year's, beyond the window.
    assert_eq!(resolve_in("aug 5 at 9am", now, 30, chrono_tz::Tz::UTC), Err(Rule::SchedulePast));
    assert_eq!(resolve_in("aug 1 at 9am", now, 30, chrono_tz::Tz::UTC), Err(Rule::ScheduleTooFar { max_days: 30 }));
    assert_eq!(resolve_in("aug 1 2026 at 9am", now, 30, chrono_tz::Tz::UTC), Err(Rule::SchedulePast));
    // Without a year a leap day is a date (the next one); with a year that has none, not.
    assert!(matches!(resolve_in("feb 29 2026 at 9am", now, 30, chrono_tz::Tz::UTC), Err(Rule::Schedule { .. })));
}

#[test]
fn the_default_zone_applies_to_phrases_without_one() {
    let now = t("2026-08-05T11:52:01Z");
    let got = resolve_in("tomorrow at 9am", now, 30, chrono_tz::America::New_York).unwrap();
    assert_eq!(got, t("2026-08-06T13:00:00Z"));
    let got = resolve_in("tomorrow at 9am UTC", now, 30, chrono_tz::America::New_York).unwrap();
    assert_eq!(got, t("2026-08-06T09:00:00Z"), "a named zone wins");
}
