//! A received message, as the receiving API reads it, on arbitrary bytes: the summary taken at
//! arrival, the detail in both html formats, and every listed attachment's content. Never a
//! panic (mail-parser's own are caught, as `receiving` promises); at most
//! `MAX_LISTED_ATTACHMENTS` listed, each under an id of its own whose content has the listed
//! size; the data-URI html grows by at most twice the raw message over the cid one; a body
//! is a string or null.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailroom_core::email::EmailId;
use mailroom_core::receiving::{
    Arrival, HtmlFormat, MAX_LISTED_ATTACHMENTS, attachment_content, detail_json, summarize,
};
#[path = "mail_parser_hook.rs"]
mod mail_parser_hook;

fuzz_target!(|raw: &[u8]| {
    mail_parser_hook::let_mail_parser_panics_unwind();
    let arrival = Arrival { mail_from: "a@sender.test".into(), rcpt_to: vec!["b@in.test".into()], ..Arrival::default() };
    let at = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("a time");
    let e = summarize(EmailId::from_u128(7), raw, arrival, None, at);
    assert_eq!(e.size, raw.len() as u64);
    assert!(e.attachments.len() <= MAX_LISTED_ATTACHMENTS);
    let mut ids: Vec<&str> = e.attachments.iter().map(|a| a.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), e.attachments.len(), "attachment ids are unique");
    for a in &e.attachments {
        let (listed, content) = attachment_content(&e, raw, &a.id).expect("a listed attachment is found");
        assert_eq!(&listed, a);
        assert_eq!(content.len() as u64, a.size, "the listed size is the content's");
    }
    let cid = detail_json(&e, raw, HtmlFormat::Cid, None);
    let data = detail_json(&e, raw, HtmlFormat::DataUri, None);
    for d in [&cid, &data] {
        assert!(d["html"].is_null() || d["html"].is_string());
        assert!(d["text"].is_null() || d["text"].is_string());
    }
    assert_eq!(cid["text"], data["text"]);
    if let (Some(c), Some(d)) = (cid["html"].as_str(), data["html"].as_str()) {
        assert!(d.len() <= c.len() + 2 * raw.len(), "{} bytes of html from {} of message", d.len(), raw.len());
    }
});
