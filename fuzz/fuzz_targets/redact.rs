//! The request log's redaction of bodies: never panics on any bytes, keeps at most its limit,
//! and never keeps an attachment's content whatever surrounds it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_http::{LOG_BODY_LIMIT, redact_for_log};

fuzz_target!(|data: &[u8]| {
    if let Some(kept) = redact_for_log(data) {
        assert!(kept.len() <= LOG_BODY_LIMIT + 64, "{} bytes kept", kept.len());
    }
    // The same bytes as an attachment's content, after a valid start: never kept. (The marker
    // is taken out of the bytes first: they may spell it somewhere else, say in a key.)
    let mut rest = data.to_vec();
    while let Some(i) = rest.windows(6).position(|w| w == b"MARKER") {
        rest.drain(i..i + 6);
    }
    let mut body = br#"{"from":"a@b.test","attachments":[{"content":"MARKER"#.to_vec();
    body.extend_from_slice(&rest);
    let kept = redact_for_log(&body).unwrap_or_default();
    assert!(!kept.contains("MARKER"), "{kept}");
});
