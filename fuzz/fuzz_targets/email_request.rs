//! JSON → request → validation: never panics, errors always name a rule.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::request::{EmailRequest, batch_from_json};
use mailroom_core::validate::{Limits, validate};

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("valid time");
    if let Ok(r) = EmailRequest::from_json(data) {
        if let Err(errors) = validate(&r, now, &Limits::default()) {
            assert!(!errors.is_empty());
            for e in errors {
                let _ = e.to_string();
            }
        }
    }
    let _ = batch_from_json(data);
});
