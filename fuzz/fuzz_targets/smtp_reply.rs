//! SMTP reply parsing and classification: never panics, always classifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::bounce::{SmtpReply, classify};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(r) = SmtpReply::parse(s) {
        let _ = classify(&r);
        assert!((200..600).contains(&r.code));
    }
});
