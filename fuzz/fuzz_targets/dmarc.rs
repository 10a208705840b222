//! The DMARC record validator and the link reader: any text gives an answer, never a panic;
//! every problem names a tag.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::insights::{links, validate_dmarc};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Err(problems) = validate_dmarc(s) {
        assert!(problems.iter().all(|p| !p.rule.is_empty()));
    }
    let _ = links(s);
});
