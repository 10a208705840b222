//! The bounce reader on arbitrary bytes: never panics; every bounce it reports names a
//! recipient and carries a class. Seed with the corpus:
//! `cargo fuzz run -s none bounce fuzz/corpus/bounce ../tests/corpus/bounces/bsd`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Once;

static HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // libFuzzer's hook aborts on any panic before it unwinds. mail-parser's own panics are
    // caught by `parse` (that is its contract), so let those unwind; any other still aborts.
    HOOK.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("mail-parser")) {
                return;
            }
            abort(info);
        }));
    });
    let p = mailroom_core::inbound::parse(data);
    for b in &p.bounces {
        assert!(b.recipient.contains('@'));
        assert!(!b.status.is_empty());
    }
    assert!(!(p.complaint && !p.bounces.is_empty()), "a complaint is not also a bounce");
});
