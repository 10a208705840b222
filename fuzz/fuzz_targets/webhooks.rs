//! What clients name in the webhook API: `msg_` ids in paths, endpoint URLs and event lists.
//! Any text gives an answer, never a panic; an id parses only if it is exactly the one the
//! engine would give that event; an accepted endpoint is an http(s) URL with a host and no
//! credentials; accepted events are known types without duplicates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_core::webhooks::{check_endpoint, check_events, message_id, parse_message_id};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (hook, rest) = text.split_once('\n').unwrap_or(("hook", text));
    if let Some(seq) = parse_message_id(hook, rest) {
        assert_eq!(message_id(hook, seq), rest);
    }
    let n = u64::from_le_bytes(data.iter().copied().chain([0; 8]).take(8).collect::<Vec<_>>().try_into().unwrap());
    assert_eq!(parse_message_id(hook, &message_id(hook, n)), Some(n));
    if let Ok(url) = check_endpoint(rest) {
        let u = url::Url::parse(&url).unwrap();
        assert!(matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()));
        assert!(u.username().is_empty() && u.password().is_none());
    }
    let events: Vec<String> = rest.split(',').map(str::to_string).collect();
    if let Ok(ok) = check_events(&events) {
        assert!(!ok.is_empty() && ok.iter().all(|e| mailroom_core::events::is_known_type(e)));
        let mut dedup = ok.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), ok.len());
    }
});
