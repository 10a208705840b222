//! `scheduled_at`: from the wire's text to one UTC instant, resolved once at acceptance.
//!
//! Today this accepts ISO 8601 / RFC 3339 date-times with any offset; plain-English phrases
//! ("in 1 min", "tomorrow at 9am") plug in here. Invariant: the answer is an instant strictly
//! inside `(now - GRACE, now + max_days]`, or a typed error quoting the input: never a guess.

use crate::error::Rule;
use chrono::{DateTime, NaiveDateTime, Utc};

/// How far in the past a time may lie and still be accepted (it is then due at once). Clients
/// compute "now + a few seconds" on clocks that drift and over slow networks; refusing those
/// would make the simplest use flaky. Anything older is a mistake worth reporting.
pub const GRACE: chrono::Duration = chrono::Duration::seconds(60);

/// Parses an ISO 8601 date-time. A value without an offset is refused: guessing a zone is the
/// silent wrong answer this module exists to prevent.
pub fn parse_instant(input: &str) -> Option<DateTime<Utc>> {
    let s = input.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.to_utc());
    }
    // ISO 8601 forms RFC 3339 does not cover: a `t`/space separator, `+0200` offsets.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.to_utc());
        }
    }
    if let Some(naive) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))
        && let Ok(t) = NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M")
    {
        return Some(t.and_utc());
    }
    None
}

/// Resolves `input` relative to `now`. `Ok(None)` never happens today; it is kept for
/// inputs that mean "send now".
pub fn resolve(input: &str, now: DateTime<Utc>, max_days: u32) -> Result<Option<DateTime<Utc>>, Rule> {
    let at = parse_instant(input).ok_or_else(|| Rule::Timestamp(input.to_string()))?;
    if at <= now - GRACE {
        return Err(Rule::SchedulePast);
    }
    if at > now + chrono::Duration::days(i64::from(max_days)) {
        return Err(Rule::ScheduleTooFar { max_days });
    }
    Ok(Some(at))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn iso_forms() {
        let want = "2024-08-05T11:52:01.858Z";
        assert_eq!(parse_instant(want).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true), want);
        assert_eq!(parse_instant("2024-08-05T13:52:01.858+02:00"), parse_instant(want));
        assert_eq!(parse_instant("2024-08-05 13:52:01.858+0200"), parse_instant(want));
        assert!(parse_instant("2024-08-05T11:52:01").is_none(), "no offset: refused, not guessed");
        assert!(parse_instant("tomorrow").is_none());
    }

    #[test]
    fn window() {
        let now = parse_instant("2026-01-01T00:00:00Z").unwrap();
        assert!(resolve("2025-12-31T23:59:30Z", now, 30).is_ok(), "inside the grace");
        assert_eq!(resolve("2025-12-31T23:58:00Z", now, 30), Err(Rule::SchedulePast));
        assert!(resolve("2026-01-31T00:00:00Z", now, 30).is_ok());
        assert_eq!(resolve("2026-01-31T00:00:01Z", now, 30), Err(Rule::ScheduleTooFar { max_days: 30 }));
    }
}
