//! `scheduled_at`: from the wire's text to one UTC instant, resolved once at acceptance.
//!
//! Accepted: ISO 8601 / RFC 3339 date-times with an offset (extended or basic; `+02` as well
//! as `+02:00`), RFC 2822 dates with a numeric offset or GMT (`toUTCString()`), JavaScript's
//! `Date.toString()`, and plain English relative to the engine's clock — `in 5 min`,
//! `in an hour`, `30 minutes`, `tomorrow`, `tomorrow at 9am`, `tomorrow 9:00`, `today 17:00`,
//! `friday 3pm`, `Friday at 3pm ET`, `next friday 8pm`, `next day at 9am PST`,
//! `monday at noon`, `midnight`, `9am tomorrow`, `2026-12-01 09:00 Europe/Berlin`,
//! `Dec 24 at 9am`, `December 24th, 2026 5pm ET`, `24 Dec 9:00`,
//! `the 24th of December at noon`, `tonight at 8`, `tomorrow morning at 9`,
//! `friday evening at 7:30 ET`, `8 in the evening`, `the day after tomorrow at 10am`,
//! `Dec 10 2026 10:00:15 EST`, `2026-12-10T10:00 UTC`, `in 1.5 hours`, `tomorrow at 9.30am`,
//! `now`.
//!
//! The rules, so that nothing is ever guessed silently:
//! - Every word must be understood; a phrase with anything left over is an error that quotes
//!   the input (`tomorrow at 9am please` is refused, not read as "tomorrow").
//! - Without a zone, clock times are in the engine's default zone (UTC unless configured).
//! - Zone abbreviations name a region's civil time on that date: `ET`, `EST` and `EDT` all mean
//!   New York time, EST or EDT as the date falls (people write "EST" all year). Likewise
//!   CT/CST/CDT (Chicago), MT/MST/MDT (Denver), PT/PST/PDT (Los Angeles), CET/CEST (Paris),
//!   BST (London), AEST/AEDT (Sydney), JST (Tokyo), UTC/GMT/Z. IANA names (`Europe/Berlin`)
//!   work too. Ambiguous abbreviations (IST, CST-as-China, …) are not accepted.
//! - A local time that does not exist (the hour skipped when clocks go forward) is read with
//!   the offset in force before the change, which moves it forward by the gap: 02:30 on the
//!   US spring-forward day is 03:30 EDT. A local time that exists twice (clocks go back) is
//!   the first of the two.
//! - `in 3 days at 9am` (whole days or weeks, then a clock time) is that day at that time;
//!   `in 2 hours at 9am` and `in 1.5 days at 9am` are refused. A duration may have up to three
//!   decimals (`in 1.5 hours`); a dot in a clock time is read only before am or pm (`9.30am`,
//!   as British English writes it), since `at 9.5` could be a fraction or a typo.
//! - A part of the day (`morning`, `afternoon`, `evening`, `night`; `tonight`, `this evening`)
//!   decides how a bare hour reads: `tonight at 8` is 20:00, `tomorrow morning at 8` 08:00. A
//!   written time must lie inside it (`tonight at 8am` is refused, as is a bare `12` anywhere but
//!   the afternoon: noon or midnight?). A part of the day alone is no time (`tomorrow morning`
//!   is refused: which hour would be a guess).
//! - `tomorrow` alone is the same clock time tomorrow (`the day after tomorrow` alone: two
//!   days on); `today`/`tomorrow`/a weekday with a time is that day at that time. A bare time
//!   (`9am`, `noon`, `midnight`) is its next occurrence. A weekday (`friday`) is the nearest
//!   one whose time is still ahead (today included); `next friday` is the first Friday after
//!   today. `next day` is tomorrow.
//! - A month and day without a year (`dec 24`) is this year's, unless that day has passed
//!   (then next year's, which the window then refuses; `feb 29`: the next leap day).
//!   Numeric forms such as `12/24` are not accepted: which number is the month differs by
//!   country.
//! - A time with a day that lies in the past (`today 9am` at noon) is an error, not moved.
//! - The instant must lie after `now - GRACE` and at most `max_days` ahead.

use crate::error::Rule;
use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc, Weekday,
};
use chrono_tz::Tz;

/// How far in the past a time may lie and still be accepted (it is then due at once). Clients
/// compute "now + a few seconds" on clocks that drift and over slow networks; refusing those
/// would make the simplest use flaky. Anything older is a mistake worth reporting.
pub const GRACE: Duration = Duration::seconds(60);

/// The longest phrase considered (anything longer is refused before parsing).
const MAX_INPUT: usize = 200;

/// Parses a date-time that carries its own offset: ISO 8601 (extended or basic), RFC 2822 with
/// a numeric offset or GMT/UT (what `Date.toUTCString()` and e-mail `Date:` headers give), and
/// JavaScript's `Date.toString()`. A value without an offset is refused: guessing a zone is the
/// silent wrong answer this module exists to prevent.
pub fn parse_instant(input: &str) -> Option<DateTime<Utc>> {
    let s = input.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.to_utc());
    }
    // ISO 8601 forms RFC 3339 does not cover: a `t`/space separator, `+0200` offsets, the hour
    // alone as offset (`+02`, ISO 8601's own short form, and how PostgreSQL prints `+00`: this
    // API's `created_at` is written that way, so a client may send one back), and the basic
    // format (`20261210T100000Z`). `%#z` reads `Z`, `+02`, `+0200` and `+02:00`.
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M%#z",
        "%Y-%m-%d %H:%M%#z",
        "%Y%m%dT%H%M%S%.f%#z",
        "%Y%m%dT%H%M%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.to_utc());
        }
    }
    rfc2822(s).or_else(|| javascript_date(s))
}

/// RFC 2822 (`Thu, 10 Dec 2026 10:00:00 +0000`, `… GMT`), as JavaScript's `toUTCString()`,
/// Python's `email.utils.format_datetime` and mail headers write it. Only with a numeric offset
/// or GMT/UT: RFC 2822 reads `EST` as a fixed -0500 all year, where the English reader below
/// reads it as New York's civil time (people write "EST" in July); such a date is left to it,
/// so one word has one meaning whichever form it comes in.
fn rfc2822(s: &str) -> Option<DateTime<Utc>> {
    let zone = s.rsplit(char::is_whitespace).next()?;
    let numeric = zone.starts_with(['+', '-']) && zone.len() == 5;
    if !(numeric || zone.eq_ignore_ascii_case("gmt") || zone.eq_ignore_ascii_case("ut")) {
        return None;
    }
    DateTime::parse_from_rfc2822(s).ok().map(|t| t.to_utc())
}

/// JavaScript's `Date.prototype.toString()`: `Thu Dec 10 2026 10:00:00 GMT+0100 (Central
/// European Standard Time)` — what `String(date)` gives. The zone's name in parentheses is the
/// runtime's description of the offset before it, and is not read.
fn javascript_date(s: &str) -> Option<DateTime<Utc>> {
    let s = match s.split_once(" (") {
        Some((head, name)) if name.ends_with(')') => head,
        _ => s,
    };
    DateTime::parse_from_str(s, "%a %b %d %Y %H:%M:%S GMT%z").ok().map(|t| t.to_utc())
}

/// Why an ISO 8601 date-time with a `T` but no offset (`2026-12-07T09:00`, what an HTML
/// `datetime-local` field gives) is refused, saying what to write instead; `None` for anything
/// else. Without this the English reader took it for a word and answered that
/// `2026-12-07t09:00` (lower-cased) was not understood, which does not say what is missing.
fn iso_without_offset(input: &str) -> Option<String> {
    let s = input.trim();
    let (date, time) = s.split_once(['T', 't'])?;
    // `%.f` reads a fraction of a second or none.
    let naive = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .any(|f| NaiveDateTime::parse_from_str(&format!("{date}T{time}"), f).is_ok());
    naive.then(|| {
        format!(
            "an ISO 8601 time needs its offset, as in `{date}T{time}Z` (UTC) or `{date}T{time}+01:00`; \
             `{date} {time}` is read in the server's default zone"
        )
    })
}

/// Resolves `input` relative to `now`, clock times in UTC. See the module docs for the rules.
pub fn resolve(input: &str, now: DateTime<Utc>, max_days: u32) -> Result<DateTime<Utc>, Rule> {
    resolve_in(input, now, max_days, Tz::UTC)
}

/// [`resolve`] with clock times in `zone` unless the phrase names one.
pub fn resolve_in(input: &str, now: DateTime<Utc>, max_days: u32, zone: Tz) -> Result<DateTime<Utc>, Rule> {
    let at = parse_when(input, now, zone).map_err(|why| Rule::Schedule { input: input.to_string(), why })?;
    if at <= now - GRACE {
        return Err(Rule::SchedulePast);
    }
    if at > now + Duration::days(i64::from(max_days)) {
        return Err(Rule::ScheduleTooFar { max_days });
    }
    Ok(at)
}

/// Parses `input` into an instant (ISO 8601, or English relative to `now`), without the
/// window checks. The error says what was not understood.
pub(crate) fn parse_when(input: &str, now: DateTime<Utc>, zone: Tz) -> Result<DateTime<Utc>, String> {
    if input.len() > MAX_INPUT {
        return Err(format!("longer than {MAX_INPUT} characters"));
    }
    if let Some(t) = parse_instant(input) {
        return Ok(t);
    }
    if let Some(why) = iso_without_offset(input) {
        return Err(why);
    }
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Err("it is empty".into());
    }
    Parser { tokens: &tokens, pos: 0, part: None }.phrase(now, zone)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Num(u32),
    /// A number with a fraction (`1.5`), in thousandths; only durations take one (`in 1.5
    /// hours`).
    Milli(u64),
    /// `9:30` or `9:30:15` (hour, minute, second).
    Clock(u32, u32, u32),
    /// A calendar date `2026-12-01`.
    Date(NaiveDate),
}

fn tokenize(input: &str) -> Result<Vec<Tok>, String> {
    let lower = input.trim().trim_end_matches('.').to_lowercase();
    let mut out = Vec::new();
    let raws: Vec<&str> = lower.split(|c: char| c.is_whitespace() || c == ',').filter(|r| !r.is_empty()).collect();
    for (i, &raw) in raws.iter().enumerate() {
        // Split `9am`, `3pm`, `10min`, `2h` into number and word.
        let digits = raw.bytes().take_while(|b| b.is_ascii_digit() || *b == b':' || *b == b'-').count();
        let (head, tail) = raw.split_at(digits);
        if head.is_empty() {
            out.push(Tok::Word(raw.to_string()));
            continue;
        }
        if head.matches('-').count() == 2 && tail.is_empty() {
            let d = NaiveDate::parse_from_str(head, "%Y-%m-%d").map_err(|_| format!("`{raw}` is not a date"))?;
            out.push(Tok::Date(d));
            continue;
        }
        // ISO 8601's `T` between a date and a time, with the zone as a word after it
        // (`2026-12-10T10:00 UTC`): the date, then the time as its own token. Without a zone
        // such a value never gets here (`iso_without_offset` refuses it first).
        if head.matches('-').count() == 2
            && let Some(time) = tail.strip_prefix('t')
            && time.starts_with(|c: char| c.is_ascii_digit())
        {
            let d = NaiveDate::parse_from_str(head, "%Y-%m-%d").map_err(|_| format!("`{raw}` is not a date"))?;
            out.push(Tok::Date(d));
            out.extend(tokenize(time)?);
            continue;
        }
        if head.contains('-') {
            return Err(format!("`{raw}` is not understood"));
        }
        // A fraction after a plain number: `1.5`, `2.25h`.
        if !head.contains(':')
            && let Some(after) = tail.strip_prefix('.')
            && after.starts_with(|c: char| c.is_ascii_digit())
        {
            let frac: String = after.chars().take_while(char::is_ascii_digit).collect();
            if frac.len() > 3 {
                return Err(format!("`{raw}` has more than three decimals"));
            }
            let whole: u64 = head.parse().map_err(|_| format!("`{raw}` is too large"))?;
            let unit = &after[frac.len()..];
            // British English writes a clock time with a dot before am or pm (`9.30am`,
            // `9.30 pm`): two digits of minutes, never a fraction of an hour.
            let am_pm = |w: &str| meridiem(w).is_some();
            if frac.len() == 2 && (am_pm(unit) || (unit.is_empty() && raws.get(i + 1).is_some_and(|w| am_pm(w)))) {
                let (h, m) = (u32::try_from(whole).unwrap_or(u32::MAX), frac.parse::<u32>().unwrap_or(99));
                out.push(Tok::Clock(h, m, 0));
                if !unit.is_empty() {
                    out.push(Tok::Word(unit.to_string()));
                }
                continue;
            }
            let milli = format!("{frac:0<3}").parse::<u64>().unwrap_or(0);
            let value = whole.checked_mul(1000).and_then(|w| w.checked_add(milli));
            out.push(Tok::Milli(value.ok_or_else(|| format!("`{raw}` is too large"))?));
            if !unit.is_empty() {
                out.push(Tok::Word(unit.to_string()));
            }
            continue;
        }
        match head.split_once(':') {
            Some((h, ms)) => {
                let bad = || format!("`{raw}` is not a time");
                let h: u32 = h.parse().map_err(|_| bad())?;
                // Seconds as dates print them (`10:00:00`, in `Dec 10 2026 10:00:00 EST`).
                let (m, sec) = ms.split_once(':').unwrap_or((ms, "00"));
                if m.len() != 2 || sec.len() != 2 {
                    return Err(bad());
                }
                let m: u32 = m.parse().map_err(|_| bad())?;
                let sec: u32 = sec.parse().map_err(|_| bad())?;
                out.push(Tok::Clock(h, m, sec));
            }
            None => out.push(Tok::Num(head.parse().map_err(|_| format!("`{raw}` is too large"))?)),
        }
        if !tail.is_empty() {
            out.push(Tok::Word(tail.to_string()));
        }
    }
    Ok(out)
}

fn unit(word: &str) -> Option<Duration> {
    Some(match word {
        "s" | "sec" | "secs" | "second" | "seconds" => Duration::seconds(1),
        "m" | "min" | "mins" | "minute" | "minutes" => Duration::minutes(1),
        "h" | "hr" | "hrs" | "hour" | "hours" => Duration::hours(1),
        "d" | "day" | "days" => Duration::days(1),
        "w" | "wk" | "wks" | "week" | "weeks" => Duration::weeks(1),
        _ => return None,
    })
}

fn weekday(word: &str) -> Option<Weekday> {
    Some(match word {
        "monday" | "mon" => Weekday::Mon,
        "tuesday" | "tue" | "tues" => Weekday::Tue,
        "wednesday" | "wed" => Weekday::Wed,
        "thursday" | "thu" | "thur" | "thurs" => Weekday::Thu,
        "friday" | "fri" => Weekday::Fri,
        "saturday" | "sat" => Weekday::Sat,
        "sunday" | "sun" => Weekday::Sun,
        _ => return None,
    })
}

fn month(word: &str) -> Option<u32> {
    Some(match word {
        "january" | "jan" => 1,
        "february" | "feb" => 2,
        "march" | "mar" => 3,
        "april" | "apr" => 4,
        "may" => 5,
        "june" | "jun" => 6,
        "july" | "jul" => 7,
        "august" | "aug" => 8,
        "september" | "sep" | "sept" => 9,
        "october" | "oct" => 10,
        "november" | "nov" => 11,
        "december" | "dec" => 12,
        _ => return None,
    })
}

/// `st`, `nd`, `rd`, `th` after a day of the month (`25th`).
fn ordinal(word: &str) -> bool {
    matches!(word, "st" | "nd" | "rd" | "th")
}

/// Zone words: abbreviations for a region's civil time, and IANA names.
pub(crate) fn zone(word: &str) -> Option<Tz> {
    use chrono_tz::{America, Asia, Australia, Europe};
    Some(match word.to_ascii_lowercase().as_str() {
        "utc" | "gmt" | "z" => Tz::UTC,
        "et" | "est" | "edt" => America::New_York,
        "ct" | "cst" | "cdt" => America::Chicago,
        "mt" | "mst" | "mdt" => America::Denver,
        "pt" | "pst" | "pdt" => America::Los_Angeles,
        "cet" | "cest" => Europe::Paris,
        "bst" => Europe::London,
        "jst" => Asia::Tokyo,
        "aest" | "aedt" => Australia::Sydney,
        other if other.contains('/') => {
            // IANA names are case-sensitive in the database; match them case-insensitively.
            chrono_tz::TZ_VARIANTS.iter().copied().find(|tz| tz.name().eq_ignore_ascii_case(other))?
        }
        _ => return None,
    })
}

/// The instant of wall-clock `local` in `tz`, by the module's DST rules.
pub(crate) fn local_to_utc(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.to_utc()),
        // Clocks went back: the first occurrence.
        LocalResult::Ambiguous(first, _) => Some(first.to_utc()),
        // Clocks went forward: read it with the offset in force just before the gap.
        LocalResult::None => {
            let before = local - Duration::hours(3);
            let offset = *tz.from_local_datetime(&before).earliest()?.offset();
            let fixed = chrono::FixedOffset::east_opt(chrono::Offset::fix(&offset).local_minus_utc())?;
            fixed.from_local_datetime(&local).single().map(|t| t.to_utc())
        }
    }
}

/// Clock time `t` on `date` in `tz`, by the module's DST rules.
fn on_day(tz: Tz, date: NaiveDate, t: NaiveTime) -> Result<DateTime<Utc>, String> {
    local_to_utc(tz, date.and_time(t)).ok_or_else(|| "that local time does not exist".to_string())
}

/// Day `d` of month `m` in `year`, or why not (`february 30`, `february 29 2026`).
fn month_day(year: i32, m: u32, d: u32) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(year, m, d).ok_or_else(|| format!("day {d} of month {m} of {year} is not a date"))
}

/// The first day `d` of month `m` from `today` on (a leap day: the next year that has one).
fn next_month_day(today: NaiveDate, m: u32, d: u32) -> Result<NaiveDate, String> {
    (today.year()..today.year() + 8)
        .filter_map(|y| NaiveDate::from_ymd_opt(y, m, d))
        .find(|date| *date >= today)
        .ok_or_else(|| format!("day {d} of month {m} is not a date"))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Day {
    Today,
    Tomorrow,
    /// `the day after tomorrow`.
    AfterTomorrow,
    /// The nearest such weekday whose time is still ahead (today included).
    Weekday(Weekday),
    /// The first such weekday after today.
    NextWeekday(Weekday),
    Date(NaiveDate),
    /// A month and day without a year (`dec 25`): this year's unless that day has passed.
    OfMonth(u32, u32),
}

struct Parser<'a> {
    tokens: &'a [Tok],
    pos: usize,
    /// The part of the day the phrase names (`tomorrow morning`, `8 tonight`), wherever it
    /// stood: it decides how a bare hour reads, so it is applied once the whole phrase is read.
    part: Option<Part>,
}

/// A part of the day: `morning`, `afternoon`, `evening`, `night` (and `tonight`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Morning,
    Afternoon,
    Evening,
    Night,
}

impl Part {
    fn of(word: &str) -> Option<Part> {
        Some(match word {
            "morning" => Part::Morning,
            "afternoon" => Part::Afternoon,
            "evening" => Part::Evening,
            "night" => Part::Night,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Part::Morning => "morning",
            Part::Afternoon => "afternoon",
            Part::Evening => "evening",
            Part::Night => "night",
        }
    }

    /// The clock times it spans, as people use the words (start inclusive, end exclusive):
    /// a written time outside them contradicts the phrase (`tonight at 8am`).
    fn span(self) -> (u32, u32) {
        match self {
            Part::Morning => (0, 12),
            Part::Afternoon => (12, 18),
            Part::Evening => (16, 24),
            Part::Night => (18, 24),
        }
    }

    /// `time` as this part of the day reads it. A bare hour (`8`, `8:30`: no am/pm, not a
    /// 24-hour time) is the one inside the part (`tonight at 8` is 20:00, never 08:00); a bare
    /// 12 is noon in the afternoon and refused elsewhere (noon or midnight: the phrase does
    /// not say). A written time must lie inside the part.
    fn read(self, time: Clock) -> Result<NaiveTime, String> {
        let (from, to) = self.span();
        let t = if time.bare {
            let h = time.at.hour();
            let h = match (self, h) {
                (Part::Afternoon, 12) => 12,
                (_, 12) => {
                    return Err(format!(
                        "`12` in the {} is noon or midnight: write `noon`, `midnight` or `12pm`",
                        self.name()
                    ));
                }
                (Part::Morning, h) => h,
                (_, h) => h + 12,
            };
            time.at.with_hour(h).ok_or_else(|| format!("{h} is not an hour"))?
        } else {
            time.at
        };
        if !(from..to).contains(&t.hour()) {
            return Err(format!("{} is not in the {}", t.format("%H:%M"), self.name()));
        }
        Ok(t)
    }
}

/// A clock time as written: `bare` when it was an hour of a 12-hour clock without am or pm
/// (`8`, `8:30`), which a part of the day may move to the afternoon.
#[derive(Debug, Clone, Copy)]
struct Clock {
    at: NaiveTime,
    bare: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }
    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }
    fn eat(&mut self, word: &str) -> bool {
        if self.peek_word() == Some(word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn rest(&self) -> String {
        self.tokens[self.pos..]
            .iter()
            .map(|t| match t {
                Tok::Word(w) => w.clone(),
                Tok::Num(n) => n.to_string(),
                Tok::Milli(n) => {
                    format!("{}.{:03}", n / 1000, n % 1000).trim_end_matches('0').trim_end_matches('.').to_string()
                }
                Tok::Clock(h, m, 0) => format!("{h}:{m:02}"),
                Tok::Clock(h, m, sec) => format!("{h}:{m:02}:{sec:02}"),
                Tok::Date(d) => d.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn phrase(mut self, now: DateTime<Utc>, default_zone: Tz) -> Result<DateTime<Utc>, String> {
        // `now` (`right now`): this instant, sent at once, as `in 0 minutes` is.
        if matches!(self.tokens, [Tok::Word(w)] if w == "now")
            || matches!(self.tokens, [Tok::Word(r), Tok::Word(w)] if r == "right" && w == "now")
        {
            return Ok(now);
        }
        if let Some(d) = self.relative()? {
            // `in 3 days at 9am`: whole days ahead, at a clock time on that day.
            let at_word = self.eat("at");
            if at_word || self.pos < self.tokens.len() {
                let Some(time) = self.time()? else {
                    let rest = format!("{}{}", if at_word { "at " } else { "" }, self.rest());
                    return Err(format!("`{}` was not understood", rest.trim_end()));
                };
                let time = self.read_clock(time)?;
                if d.num_seconds() % 86_400 != 0 {
                    return Err("a clock time goes with whole days or weeks ahead, as in `in 3 days at 9am`".into());
                }
                let tz = self.zone_or(default_zone);
                self.end()?;
                let today = now.with_timezone(&tz).date_naive();
                let date = today
                    .checked_add_signed(Duration::days(d.num_days()))
                    .ok_or_else(|| "that is too far ahead".to_string())?;
                return on_day(tz, date, time);
            }
            self.end()?;
            return now.checked_add_signed(d).ok_or_else(|| "that is too far ahead".to_string());
        }
        // Absolute: [day] [at] [time] [zone], or [time] [day] [zone], in any of these orders.
        let mut day = self.day()?;
        self.eat("at");
        let time = self.time()?;
        if day.is_none() && time.is_some() {
            day = self.day()?;
        }
        let tz = self.zone_or(default_zone);
        self.end()?;
        let time = self.read_time(time)?;
        let local_now = now.with_timezone(&tz).naive_local();
        let today = local_now.date();
        let at_time = |date: NaiveDate, t: NaiveTime| on_day(tz, date, t);
        match (day, time) {
            (None, None) => Err("no time or day was found".into()),
            // A bare time: its next occurrence.
            (None, Some(t)) => {
                let first = at_time(today, t)?;
                if first > now { Ok(first) } else { at_time(today + Duration::days(1), t) }
            }
            (Some(_), None) if self.part.is_some() => {
                let part = self.part.map_or("", Part::name);
                Err(format!("the {part} needs a clock time, as in `tomorrow {part} at 8`"))
            }
            (Some(Day::Tomorrow), None) => Ok(now + Duration::days(1)),
            (Some(Day::AfterTomorrow), None) => Ok(now + Duration::days(2)),
            (Some(Day::Today), None) => Err("`today` needs a time".into()),
            (Some(Day::Date(_) | Day::OfMonth(..)), None) => Err("a date needs a time".into()),
            (Some(Day::Weekday(_) | Day::NextWeekday(_)), None) => Err("a weekday needs a time".into()),
            (Some(Day::Today), Some(t)) => at_time(today, t),
            (Some(Day::Tomorrow), Some(t)) => at_time(today + Duration::days(1), t),
            (Some(Day::AfterTomorrow), Some(t)) => at_time(today + Duration::days(2), t),
            (Some(Day::Date(d)), Some(t)) => at_time(d, t),
            (Some(Day::OfMonth(m, d)), Some(t)) => at_time(next_month_day(today, m, d)?, t),
            (Some(Day::Weekday(w)), Some(t)) => {
                let mut date = today;
                for _ in 0..8 {
                    if date.weekday() == w {
                        let at = at_time(date, t)?;
                        if at > now {
                            return Ok(at);
                        }
                    }
                    date += Duration::days(1);
                }
                Err("no such day ahead".into())
            }
            (Some(Day::NextWeekday(w)), Some(t)) => {
                let mut date = today + Duration::days(1);
                while date.weekday() != w {
                    date += Duration::days(1);
                }
                at_time(date, t)
            }
        }
    }

    /// The clock time of the phrase, read with its part of the day if it named one.
    fn read_time(&self, time: Option<Clock>) -> Result<Option<NaiveTime>, String> {
        time.map(|t| self.read_clock(t)).transpose()
    }

    fn read_clock(&self, time: Clock) -> Result<NaiveTime, String> {
        match self.part {
            None => Ok(time.at),
            Some(part) => part.read(time),
        }
    }

    /// Records the part of the day `part`; a phrase names at most one.
    fn set_part(&mut self, part: Part) -> Result<(), String> {
        match self.part.replace(part) {
            Some(first) => Err(format!("both the {} and the {} were named", first.name(), part.name())),
            None => Ok(()),
        }
    }

    /// A part of the day after a day word (`tomorrow morning`, `friday evening`).
    fn part_after_day(&mut self) -> Result<(), String> {
        if let Some(part) = self.peek_word().and_then(Part::of) {
            self.pos += 1;
            self.set_part(part)?;
        }
        Ok(())
    }

    /// A part of the day after a clock time: `in the morning`, `in the evening`, `at night`
    /// (`tonight` and `this evening` name a day too, and are read as one).
    fn part_after_time(&mut self) -> Result<(), String> {
        let word = |p: &Self, k: usize| match p.tokens.get(p.pos + k) {
            Some(Tok::Word(w)) => Some(w.as_str()),
            _ => None,
        };
        let (len, part) = match (word(self, 0), word(self, 1).and_then(Part::of), word(self, 2).and_then(Part::of)) {
            (Some("in"), _, Some(part)) if word(self, 1) == Some("the") && part != Part::Night => (3, part),
            (Some("at"), Some(Part::Night), _) => (2, Part::Night),
            _ => return Ok(()),
        };
        self.pos += len;
        self.set_part(part)
    }

    /// A zone word here, or `default`.
    fn zone_or(&mut self, default: Tz) -> Tz {
        match self.peek_word().and_then(zone) {
            Some(z) => {
                self.pos += 1;
                z
            }
            None => default,
        }
    }

    fn end(&self) -> Result<(), String> {
        if self.pos == self.tokens.len() { Ok(()) } else { Err(format!("`{}` was not understood", self.rest())) }
    }

    /// `in 5 minutes`, `in an hour`, `5 min`, `5 minutes from now`, `in 1 hour 30 minutes`,
    /// `in 1.5 hours`.
    fn relative(&mut self) -> Result<Option<Duration>, String> {
        let start = self.pos;
        let had_in = self.eat("in");
        let mut total = Duration::zero();
        let mut parts = 0;
        loop {
            // How many units, in thousandths (`1.5` is 1500).
            let n: i64 = match self.peek() {
                Some(Tok::Num(n)) => i64::from(*n) * 1000,
                Some(Tok::Milli(n)) => i64::try_from(*n).unwrap_or(i64::MAX),
                Some(Tok::Word(w)) if w == "a" || w == "an" || w == "one" => 1000,
                Some(Tok::Word(w)) if w == "half" && parts == 0 => {
                    // `in half an hour`
                    self.pos += 1;
                    if !(self.eat("an") && self.eat("hour")) {
                        return Err(format!("`half {}` was not understood", self.rest()));
                    }
                    total += Duration::minutes(30);
                    parts += 1;
                    continue;
                }
                _ => break,
            };
            let Some(u) = self.tokens.get(self.pos + 1).and_then(|t| match t {
                Tok::Word(w) => unit(w),
                _ => None,
            }) else {
                break;
            };
            self.pos += 2;
            // Ten years at most, per part and in all: bigger numbers are errors, not overflow.
            const TEN_YEARS: i64 = 315_360_000;
            let part = u.num_seconds().saturating_mul(n) / 1000;
            if part > TEN_YEARS || total.num_seconds() + part > TEN_YEARS {
                return Err("that is too far ahead".into());
            }
            total += Duration::seconds(part);
            parts += 1;
            self.eat("and");
        }
        if parts == 0 {
            self.pos = start;
            return Ok(None);
        }
        if !had_in && self.eat("from") && !self.eat("now") {
            return Err(format!("`from {}` was not understood", self.rest()));
        }
        Ok(Some(total))
    }

    fn day(&mut self) -> Result<Option<Day>, String> {
        let day = self.day_word()?;
        if day.is_some() && self.part.is_none() {
            self.part_after_day()?;
        }
        Ok(day)
    }

    fn day_word(&mut self) -> Result<Option<Day>, String> {
        self.eat("on");
        // `the day after tomorrow`, `day after tomorrow`
        let at = usize::from(self.peek_word() == Some("the"));
        if self
            .tokens
            .get(self.pos + at..self.pos + at + 3)
            .is_some_and(|w| w == [Tok::Word("day".into()), Tok::Word("after".into()), Tok::Word("tomorrow".into())])
        {
            self.pos += at + 3;
            return Ok(Some(Day::AfterTomorrow));
        }
        if let Some(Tok::Date(d)) = self.peek() {
            let d = *d;
            self.pos += 1;
            return Ok(Some(Day::Date(d)));
        }
        if let Some(day) = self.calendar_day()? {
            return Ok(Some(day));
        }
        let Some(word) = self.peek_word().map(str::to_string) else { return Ok(None) };
        let day = match word.as_str() {
            "today" => Day::Today,
            "tonight" => {
                self.pos += 1;
                self.set_part(Part::Night)?;
                return Ok(Some(Day::Today));
            }
            "tomorrow" | "tmrw" => Day::Tomorrow,
            "next" => {
                self.pos += 1;
                return match self.peek_word() {
                    Some("day") => {
                        self.pos += 1;
                        Ok(Some(Day::Tomorrow))
                    }
                    Some(w) if weekday(w).is_some() => {
                        let d = weekday(w).map(Day::NextWeekday);
                        self.pos += 1;
                        Ok(d)
                    }
                    _ => Err(format!("`next {}` was not understood", self.rest())),
                };
            }
            "this" => {
                self.pos += 1;
                if let Some(part) = self.peek_word().and_then(Part::of) {
                    // `this morning`, `this evening`: today.
                    self.pos += 1;
                    self.set_part(part)?;
                    return Ok(Some(Day::Today));
                }
                return match self.peek_word().and_then(weekday) {
                    Some(w) => {
                        self.pos += 1;
                        Ok(Some(Day::Weekday(w)))
                    }
                    None => Err(format!("`this {}` was not understood", self.rest())),
                };
            }
            w => match weekday(w) {
                Some(d) => Day::Weekday(d),
                None => return Ok(None),
            },
        };
        self.pos += 1;
        Ok(Some(day))
    }

    /// A month and its day in words, either way round, with a year or without: `dec 25`,
    /// `December 25th, 2026`, `25 dec`, `the 25th of December`. Why no `12/25`: which number
    /// is the month differs by country, and this module never guesses.
    fn calendar_day(&mut self) -> Result<Option<Day>, String> {
        let start = self.pos;
        let the = self.eat("the");
        let first_month = self.peek_word().and_then(month).filter(|_| !the);
        let (m, d) = match (first_month, self.peek().cloned(), self.tokens.get(self.pos + 1).cloned()) {
            // `dec 25`, `december 25th`
            (Some(m), _, Some(Tok::Num(n))) => {
                self.pos += 2;
                if self.peek_word().is_some_and(ordinal) {
                    self.pos += 1;
                }
                (m, n)
            }
            // `25 dec`, `25th of december`
            (_, Some(Tok::Num(n)), _) => {
                let mut at = self.pos + 1;
                if matches!(self.tokens.get(at), Some(Tok::Word(w)) if ordinal(w)) {
                    at += 1;
                }
                if matches!(self.tokens.get(at), Some(Tok::Word(w)) if w == "of") {
                    at += 1;
                }
                match self.tokens.get(at).and_then(|t| match t {
                    Tok::Word(w) => month(w),
                    _ => None,
                }) {
                    Some(m) => {
                        self.pos = at + 1;
                        (m, n)
                    }
                    None => {
                        self.pos = start;
                        return Ok(None);
                    }
                }
            }
            _ => {
                self.pos = start;
                return Ok(None);
            }
        };
        // A year: four digits of this era (an hour never has them; `1730` is not a year
        // here, and then not an hour either, so it is refused).
        if let Some(&Tok::Num(y)) = self.peek()
            && (1970..=2200).contains(&y)
        {
            self.pos += 1;
            let year = i32::try_from(y).map_err(|_| format!("{y} is not a year"))?;
            return month_day(year, m, d).map(|date| Some(Day::Date(date)));
        }
        // Checked now (against a leap year), so that `february 30` is refused as written.
        NaiveDate::from_ymd_opt(2024, m, d).ok_or_else(|| format!("day {d} of month {m} is not a date"))?;
        Ok(Some(Day::OfMonth(m, d)))
    }

    /// A clock time, and a part of the day after it (`8 in the evening`).
    fn time(&mut self) -> Result<Option<Clock>, String> {
        let t = self.clock()?;
        if t.is_some() {
            self.part_after_time()?;
        }
        Ok(t)
    }

    /// `9am`, `9 am`, `9:30pm`, `17:00`, `noon`, `midnight`, `9` (after `at`: a 24-hour hour,
    /// unless a part of the day says otherwise).
    fn clock(&mut self) -> Result<Option<Clock>, String> {
        let written = |at: NaiveTime| Clock { at, bare: false };
        let bare = |at: NaiveTime| Clock { at, bare: (1..=12).contains(&at.hour()) };
        let t = |h: u32, m: u32, sec: u32| {
            NaiveTime::from_hms_opt(h, m, sec).ok_or_else(|| match sec {
                0 => format!("{h}:{m:02} is not a time of day"),
                _ => format!("{h}:{m:02}:{sec:02} is not a time of day"),
            })
        };
        match self.peek().cloned() {
            Some(Tok::Word(w)) if w == "noon" || w == "midday" => {
                self.pos += 1;
                Ok(Some(written(t(12, 0, 0)?)))
            }
            Some(Tok::Word(w)) if w == "midnight" => {
                self.pos += 1;
                Ok(Some(written(t(0, 0, 0)?)))
            }
            Some(Tok::Num(h)) => {
                self.pos += 1;
                match self.meridiem() {
                    Some(pm) => Ok(Some(written(t(twelve_hour(h, pm)?, 0, 0)?))),
                    None if h <= 23 => Ok(Some(bare(t(h, 0, 0)?))),
                    None => Err(format!("`{h}` is not an hour")),
                }
            }
            Some(Tok::Clock(h, m, sec)) => {
                self.pos += 1;
                match self.meridiem() {
                    Some(pm) => Ok(Some(written(t(twelve_hour(h, pm)?, m, sec)?))),
                    None => Ok(Some(bare(t(h, m, sec)?))),
                }
            }
            _ => Ok(None),
        }
    }

    fn meridiem(&mut self) -> Option<bool> {
        let pm = meridiem(self.peek_word()?)?;
        self.pos += 1;
        Some(pm)
    }
}

/// `Some(true)` for a word that says pm, `Some(false)` for am.
fn meridiem(word: &str) -> Option<bool> {
    match word {
        "am" | "a.m" | "a.m." => Some(false),
        "pm" | "p.m" | "p.m." => Some(true),
        _ => None,
    }
}

fn twelve_hour(h: u32, pm: bool) -> Result<u32, String> {
    match (h, pm) {
        (1..=11, false) => Ok(h),
        (12, false) => Ok(0),
        (1..=11, true) => Ok(h + 12),
        (12, true) => Ok(12),
        _ => Err(format!("`{h}` is not an hour on a 12-hour clock")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

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
    fn dates_that_carry_their_offset_in_other_common_forms() {
        let want = parse_instant("2026-12-10T10:00:00Z").unwrap();
        let east = parse_instant("2026-12-10T09:00:00Z").unwrap();
        for input in [
            // ISO 8601: the offset's hour alone, as PostgreSQL and this API's `created_at` print it.
            "2026-12-10 10:00:00+00",
            "2026-12-10 10:00:00.000000+00",
            "2026-12-10T11:00:00+01",
            "2026-12-10T10:00z",
            "2026-12-10 10:00Z",
            // ISO 8601's basic format.
            "20261210T100000Z",
            "20261210T1100+0100",
            // RFC 2822: JavaScript's `toUTCString()`, Python's `format_datetime`, mail headers.
            "Thu, 10 Dec 2026 10:00:00 GMT",
            "Thu, 10 Dec 2026 11:00:00 +0100",
            "10 Dec 2026 10:00 UT",
            // JavaScript's `Date.toString()`.
            "Thu Dec 10 2026 11:00:00 GMT+0100 (Central European Standard Time)",
            "Thu Dec 10 2026 10:00:00 GMT+0000",
        ] {
            assert_eq!(parse_instant(input), Some(want), "{input}");
        }
        assert_eq!(parse_instant("Thu, 10 Dec 2026 10:00:00 +0100"), Some(east));
        // RFC 2822 with a zone name other than GMT/UT is the English reader's (civil time).
        assert_eq!(parse_instant("Fri, 10 Jul 2026 10:00:00 EST"), None);
        let now = at("2026-07-01T00:00:00Z");
        assert_eq!(parse_when("10 Jul 2026 10:00:00 EST", now, Tz::UTC), Ok(at("2026-07-10T14:00:00Z")));
        // Still refused: no offset at all, and a weekday the date does not fall on.
        assert_eq!(parse_instant("2026-12-10 10:00:00"), None);
        assert_eq!(parse_instant("Fri, 10 Dec 2026 10:00:00 GMT"), None);
        let now = at("2026-12-01T00:00:00Z");
        assert!(parse_when("Fri, 10 Dec 2026 10:00:00 GMT", now, Tz::UTC).is_err());
    }

    #[test]
    fn clock_times_may_carry_seconds() {
        let now = at("2026-12-01T00:00:00Z");
        assert_eq!(parse_when("dec 10 2026 10:00:15 utc", now, Tz::UTC), Ok(at("2026-12-10T10:00:15Z")));
        assert_eq!(parse_when("tomorrow at 9:30:05pm", now, Tz::UTC), Ok(at("2026-12-02T21:30:05Z")));
        assert_eq!(parse_when("2026-12-10T10:00:00 UTC", now, Tz::UTC), Ok(at("2026-12-10T10:00:00Z")));
        assert_eq!(parse_when("2026-12-10T10:00 Europe/Berlin", now, Tz::UTC), Ok(at("2026-12-10T09:00:00Z")));
        for bad in ["tomorrow at 9:30:5", "tomorrow at 9:30:60", "tomorrow at 9:30:", "tomorrow at 9:30:00:00"] {
            assert!(parse_when(bad, now, Tz::UTC).is_err(), "{bad}");
        }
    }

    #[test]
    fn now_durations_with_a_fraction_and_british_clock_times() {
        let now = at("2026-12-01T00:00:00Z");
        assert_eq!(parse_when("in 1.5 hours", now, Tz::UTC), Ok(at("2026-12-01T01:30:00Z")));
        assert_eq!(parse_when("now", now, Tz::UTC), Ok(now));
        assert_eq!(parse_when("Right now.", now, Tz::UTC), Ok(now));
        assert!(parse_when("now at 9am", now, Tz::UTC).is_err());
        assert_eq!(parse_when("in 2.25h", now, Tz::UTC), Ok(at("2026-12-01T02:15:00Z")));
        assert_eq!(parse_when("in 0.5 days and 1.25 minutes", now, Tz::UTC), Ok(at("2026-12-01T12:01:15Z")));
        assert_eq!(parse_when("1.5 hours from now", now, Tz::UTC), Ok(at("2026-12-01T01:30:00Z")));
        assert_eq!(parse_when("tomorrow at 9.30am", now, Tz::UTC), Ok(at("2026-12-02T09:30:00Z")));
        assert_eq!(parse_when("tomorrow at 9.30 p.m.", now, Tz::UTC), Ok(at("2026-12-02T21:30:00Z")));
        assert_eq!(parse_when("dec 10 at 12.05pm europe/london", now, Tz::UTC), Ok(at("2026-12-10T12:05:00Z")));
        for (bad, why) in [
            ("in 1.2345 hours", "`1.2345` has more than three decimals"),
            ("tomorrow at 9.5", "not understood"),
            ("tomorrow at 9.75pm", "not a time"),
            ("in 1.5", "not understood"),
            ("in 1.5 days at 9am", ""),
        ] {
            let got = parse_when(bad, now, Tz::UTC).unwrap_err();
            assert!(got.contains(why), "{bad}: {got}");
        }
    }

    #[test]
    fn an_iso_time_without_its_offset_is_refused_saying_what_to_write() {
        let now = at("2024-08-01T00:00:00Z");
        for input in ["2024-08-05T11:52", "2024-08-05T11:52:01", "2024-08-05t11:52:01.858"] {
            let why = parse_when(input, now, Tz::UTC).unwrap_err();
            assert!(why.starts_with("an ISO 8601 time needs its offset"), "{input}: {why}");
            assert!(why.contains("Z` (UTC)") && why.contains("default zone"), "{why}");
        }
        // Not date-times: left to the English reader (and its own errors).
        assert!(parse_when("tomorrow at 9am", now, Tz::UTC).is_ok());
        assert!(!parse_when("2024-08-05Tnoon", now, Tz::UTC).unwrap_err().contains("offset"));
        assert!(parse_when("2024-08-05 11:52", now, Tz::UTC).is_ok(), "a space: the default zone");
    }

    #[test]
    fn window() {
        let now = at("2026-01-01T00:00:00Z");
        assert!(resolve("2025-12-31T23:59:30Z", now, 30).is_ok(), "inside the grace");
        assert_eq!(resolve("2025-12-31T23:58:00Z", now, 30), Err(Rule::SchedulePast));
        assert!(resolve("2026-01-31T00:00:00Z", now, 30).is_ok());
        assert_eq!(resolve("2026-01-31T00:00:01Z", now, 30), Err(Rule::ScheduleTooFar { max_days: 30 }));
        assert_eq!(resolve("in 31 days", now, 30), Err(Rule::ScheduleTooFar { max_days: 30 }));
    }

    #[test]
    fn huge_durations_are_errors_not_overflows() {
        // Found by the `schedule` fuzz target: the parts summed past what a date can hold.
        let now = at("2026-01-01T00:00:00Z");
        assert!(parse_when(",,,,9d\u{b}1919d\u{b}191919199d,,,,", now, Tz::UTC).is_err());
        assert!(parse_when("in 4294967295 weeks", now, Tz::UTC).is_err());
        assert!(
            parse_when("in 1000 days 1000 days", now, Tz::UTC).is_ok(),
            "five years parse; the window refuses them later"
        );
    }

    #[test]
    fn errors_quote_the_input_and_say_what_was_left() {
        let now = at("2026-01-01T00:00:00Z");
        let e = resolve("tomorrow at 9am please", now, 30).unwrap_err();
        let Rule::Schedule { input, why } = &e else { panic!("{e:?}") };
        assert_eq!(input, "tomorrow at 9am please");
        assert!(why.contains("please"), "{why}");
        assert!(e.to_string().contains("tomorrow at 9am please"));
        // A long phrase is quoted in part: the answer does not grow with the input.
        let long = "dec 24 ".repeat(5000);
        let e = resolve(&long, now, 30).unwrap_err();
        assert!(e.to_string().len() < 400, "{}", e.to_string().len());
        assert!(e.to_string().contains("…"));
    }
}
