//! The DMARC record validator: any text gives an answer, never a panic; every problem names a
//! tag and a rule.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::insights::validate_dmarc;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Err(problems) = validate_dmarc(s) {
        assert!(problems.iter().all(|p| !p.tag.is_empty() && !p.rule.is_empty()));
    }
});
