//! The relay URL parser: any text gives a target or a typed error, never a panic; an
//! accepted target has a host and a non-zero port, and its Debug form never shows a password.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailroom_smtp::RelayTarget;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match RelayTarget::parse(text) {
        Ok(t) => {
            assert!(!t.host.is_empty() && t.port != 0);
            if let Some((user, password)) = &t.credentials {
                // (A password that also appears in the host or user name is printed as those.)
                let shown_anyway = t.host.contains(password.as_str()) || user.contains(password.as_str());
                if password.len() >= 4 && !shown_anyway {
                    assert!(!format!("{t:?}").contains(password.as_str()));
                }
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
