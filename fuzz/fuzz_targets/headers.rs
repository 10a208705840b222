//! Header parsing in the bounce reader: arbitrary bytes as the header block of a message, and
//! as the fields of an RFC 3464 delivery-status part (Final-Recipient, Action, Status,
//! Diagnostic-Code, folded lines). Never panics; every reported bounce names a mailbox.
//! Seed with the corpus: `cargo fuzz run -s none headers fuzz/corpus/headers ../tests/corpus/bounces/bsd`.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "mail_parser_hook.rs"]
mod mail_parser_hook;

fuzz_target!(|data: &[u8]| {
    mail_parser_hook::let_mail_parser_panics_unwind();
    // 1. The bytes as a header block.
    let mut headers = data.to_vec();
    headers.extend_from_slice(b"\n\nbody\n");
    check(&mailroom_core::inbound::parse(&headers));
    // 2. The bytes as delivery-status fields.
    let mut report = b"From: MAILER-DAEMON@mx.example.net\nTo: s@example.com\nSubject: Undelivered Mail\n\
MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
--b\nContent-Type: text/plain\n\nsorry\n\n--b\nContent-Type: message/delivery-status\n\n"
        .to_vec();
    report.extend_from_slice(data);
    report.extend_from_slice(b"\n\n--b--\n");
    check(&mailroom_core::inbound::parse(&report));
});

fn check(p: &mailroom_core::inbound::Parsed) {
    for b in &p.bounces {
        assert!(b.recipient.contains('@'));
        assert!(!b.status.is_empty());
    }
}
