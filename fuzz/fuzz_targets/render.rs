//! Whatever validates renders, and the bytes hold no bare header injection.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::request::EmailRequest;
use mailroom_core::validate::{Limits, validate};

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("valid time");
    let Ok(r) = EmailRequest::from_json(data) else { return };
    let Ok(mut v) = validate(&r, now, &Limits::default()) else { return };
    v.content.message_id = "fuzz@example.com".into();
    let bytes = mailroom_core::render::render(&v.content, now).expect("renders");
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(bytes.len());
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    assert!(!head.lines().any(|l| l.to_ascii_lowercase().starts_with("bcc:")), "Bcc leaked into headers");
});
