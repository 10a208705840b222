//! JSON → request → validation: never panics, and every refusal names what it refuses: a
//! field path (`to[3]`, `emails[2].tags[0].name`) and a rule, except the size of the whole
//! email and a body that is not JSON at all.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::error::Rule;
use mailroom_core::request::{EmailRequest, batch_from_json};
use mailroom_core::validate::{Limits, validate};

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("valid time");
    match EmailRequest::from_json(data) {
        Ok(r) => {
            if let Err(errors) = validate(&r, now, &Limits::default()) {
                assert!(!errors.is_empty());
                for e in errors {
                    assert!(
                        !e.path.is_empty() || matches!(e.rule, Rule::EmailTooLarge { .. }),
                        "a refusal without a field: {e:?}"
                    );
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        Err(e) => assert!(!e.to_string().is_empty() && !e.rule.to_string().is_empty()),
    }
    // A batch's refusal names an item or field under `emails`, or the body when it is not
    // JSON at all.
    if let Err(e) = batch_from_json(data) {
        assert!(e.path.starts_with("emails") || e.path == "body", "{e:?}");
    }
});
