//! SMTP reply parsing and classification: never panics, always classifies, and a policy
//! refusal (x.7.x: the sender, its content or reputation) never suppresses the address unless
//! it names the mailbox missing (an unknown user said at RCPT TO, which `classify` reads at:
//! "550 5.7.1 No such user", the policy's one exception under x.7.x).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::bounce::{Reason, SmtpReply, classify};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Some(r) = SmtpReply::parse(s) {
        let c = classify(&r);
        assert!((200..600).contains(&r.code));
        if r.enhanced.is_some_and(|e| e.subject == 7) {
            assert!(!c.suppress || c.reason == Reason::UserUnknown, "a 5.7.x reply suppressed the address: {s:?}");
        }
        if r.code < 500 {
            assert!(!c.suppress, "a transient reply suppressed the address: {s:?}");
        }
    }
});
