//! `scheduled_at` phrases: never panic, bounded time (the input is capped and the parser is
//! linear), and an accepted phrase lies inside the window it was checked against.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::schedule::resolve_in;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let now = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("valid time");
    for zone in [chrono_tz::Tz::UTC, chrono_tz::America::New_York] {
        if let Ok(at) = resolve_in(s, now, 30, zone) {
            assert!(at > now - chrono::Duration::seconds(61) && at <= now + chrono::Duration::days(30));
        }
    }
});
