//! The address parser: never panics; what it accepts re-parses to the same mailbox.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::address::Mailbox;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(m) = Mailbox::parse(s) {
        assert!(!m.address().contains(['\r', '\n']));
        let again = Mailbox::parse(&m.to_string()).expect("a parsed mailbox re-parses");
        assert_eq!(again.address(), m.address());
    }
});
