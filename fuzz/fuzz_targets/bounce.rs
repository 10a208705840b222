//! The bounce reader on arbitrary bytes: never panics; every bounce it reports names a
//! recipient (or, from Exchange's notice, one named by display name alone: empty) and
//! carries a class. Seed with the corpus:
//! `cargo fuzz run -s none bounce fuzz/corpus/bounce ../tests/corpus/bounces/bsd`.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "mail_parser_hook.rs"]
mod mail_parser_hook;

fuzz_target!(|data: &[u8]| {
    mail_parser_hook::let_mail_parser_panics_unwind();
    let p = mailroom_core::inbound::parse(data);
    for b in &p.bounces {
        assert!(b.recipient.contains('@') || b.recipient.is_empty());
        assert!(!b.status.is_empty());
    }
    assert!(!(p.complaint && !p.bounces.is_empty()), "a complaint is not also a bounce");
});
