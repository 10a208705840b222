//! Whatever validates renders, and no field can make a header of its own: every header line
//! of the message and of each MIME part is one the engine writes (or a custom header the
//! request named), every CR is followed by LF, Bcc never appears, and the html and text
//! bodies decode back to what was sent.
//!
//! Two inputs: the bytes as a JSON request, and the bytes split at NUL into the values of a
//! fixed request's free-text fields (subject, display names, a custom header, filenames,
//! content id, content type, html, text), which reaches control characters in every field at
//! once.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mail_parser::MimeHeaders;
use mailroom_core::request::{AttachmentContent, AttachmentRequest, EmailRequest, OneOrMany};
use mailroom_core::validate::{Limits, validate};

const TOP: &[&str] = &[
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "message-id",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];
const PART: &[&str] = &["content-type", "content-transfer-encoding", "content-disposition", "content-id"];

fn check_head(head: &[u8], allowed: &dyn Fn(&str) -> bool) {
    let text = String::from_utf8_lossy(head);
    for (i, b) in head.iter().enumerate() {
        if *b == b'\r' {
            assert_eq!(head.get(i + 1), Some(&b'\n'), "a bare CR in a header: {text:?}");
        }
        if *b == b'\n' {
            assert!(i > 0 && head[i - 1] == b'\r', "a bare LF in a header: {text:?}");
        }
    }
    for line in text.split("\r\n") {
        if line.is_empty() || line.starts_with([' ', '\t']) {
            continue;
        }
        let name = line.split(':').next().unwrap_or_default().to_ascii_lowercase();
        assert!(allowed(&name), "a header no field may create: {line:?} in {text:?}");
    }
}

fn rendered(r: &EmailRequest) {
    let now = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("valid time");
    let Ok(mut v) = validate(r, now, &Limits::default()) else { return };
    v.content.message_id = "fuzz@example.com".into();
    let bytes = mailroom_core::render::render(&v.content, now).expect("renders");
    let custom: Vec<String> = v.content.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    check_head(&bytes[..head_end + 2], &|n| TOP.contains(&n) || custom.iter().any(|c| c == n));
    let message = mail_parser::MessageParser::default().parse(&bytes).expect("parses back");
    // The bodies decode back to what was sent (line breaks aside: they go as CRLF).
    let unix = |s: &str| s.replace("\r\n", "\n");
    if let Some(html) = &v.content.html {
        let got = message.body_html(0).expect("an html body");
        assert_eq!(unix(&got), unix(html), "the html body changed on the way");
    }
    // The text part: as sent; none for `text: ""`; derived from html sent alone.
    let expected = match v.content.text.as_deref() {
        Some("") => None,
        Some(t) => Some(t.to_string()),
        None => mailroom_core::render::derived_text(&v.content),
    };
    let plain = message.parts.iter().find(|p| p.content_type().is_some_and(|c| c.ctype() == "text" && c.subtype() == Some("plain")));
    match expected {
        Some(text) => {
            let got = message.body_text(0).expect("a text body");
            assert_eq!(unix(&got), unix(&text), "the text body changed on the way");
        }
        None => assert!(plain.is_none(), "a text part nobody asked for"),
    }
    for part in message.parts.iter().skip(1) {
        for h in part.headers() {
            let name = h.name().to_ascii_lowercase();
            assert!(PART.contains(&name.as_str()), "a part header no field may create: {name}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = EmailRequest::from_json(data) {
        rendered(&r);
    }
    let text = String::from_utf8_lossy(data);
    let mut f = text.split('\0').map(str::to_string);
    let mut next = || f.next().unwrap_or_default();
    let (subject, name, value, file1, file2, cid, ct) = (next(), next(), next(), next(), next(), next(), next());
    let (html, plain) = (next(), next());
    let mut headers = serde_json::Map::new();
    headers.insert("X-Fuzz".into(), value.into());
    let r = EmailRequest {
        from: Some(format!("\"{name}\" <a@acme.test>")),
        to: Some(OneOrMany::One(format!("{name} <b@example.com>"))),
        bcc: Some(OneOrMany::One("hidden@example.com".into())),
        subject: Some(subject),
        html: Some(if html.is_empty() { "<p>x</p>".into() } else { html }),
        text: Some(if plain.is_empty() { "x".into() } else { plain }),
        headers: Some(headers),
        attachments: Some(vec![
            AttachmentRequest {
                content: Some(AttachmentContent::Bytes(vec![1, 2])),
                filename: Some(file1),
                ..Default::default()
            },
            AttachmentRequest {
                content: Some(AttachmentContent::Bytes(vec![3])),
                filename: Some(file2),
                content_id: Some(cid),
                content_type: Some(ct),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    rendered(&r);
});
