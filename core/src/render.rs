//! Rendering a stored email into RFC 5322 bytes with mail-builder.
//!
//! Structure: `text` + `html` → multipart/alternative; inline images (attachments with a
//! `content_id`) → multipart/related around the html; other attachments → multipart/mixed
//! around the rest. Bcc never appears in the headers (only in the envelope). Invariant: the
//! bytes carry the Message-ID fixed at acceptance, so every attempt is the same message.
//!
//! The text part: the client's `text`; none when it sent `text: ""` beside `html` (the hosted
//! service's way to opt out); otherwise, for html sent alone, the plain-text version of the
//! html ([`crate::html::to_text`]) that the engine derives at each hand-over ([`Extras::text`];
//! not stored, so `GET /emails/{id}` shows what the client sent).

use crate::address::Mailbox;
use crate::email::EmailContent;
use chrono::{DateTime, Utc};
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;

mod transfer;

fn address(m: &Mailbox) -> Address<'static> {
    Address::new_address(m.name.clone(), m.address())
}

fn list(ms: &[Mailbox]) -> Address<'static> {
    Address::new_list(ms.iter().map(address).collect())
}

/// The id part of a Message-ID (`<id@domain>` without the angle brackets).
pub(crate) fn message_id_for(id: &crate::email::EmailId, from: &Mailbox) -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = id.0.hyphenated().encode_lower(&mut buf);
    let mut out = String::with_capacity(id.len() + 1 + from.domain.len());
    out.push_str(id);
    out.push('@');
    out.push_str(&from.domain);
    out
}

/// A text part, its transfer encoding chosen and applied here (see [`transfer`]).
fn text_part(content_type: &'static str, text: &str) -> MimePart<'static> {
    let encoded = transfer::encode_text(text.as_bytes());
    MimePart::new(ContentType::new(content_type).attribute("charset", "utf-8"), encoded.body)
        .transfer_encoding(encoded.encoding)
}

/// What the engine adds to an email's content when it hands one message of it over.
#[derive(Debug, Default, Clone)]
pub struct Extras {
    /// The html with tracked links and the pixel, in place of the content's.
    pub html: Option<String>,
    /// The text part of an email sent with html and without `text` ([`derived_text`]).
    pub text: Option<String>,
    /// Headers the engine adds (`List-Unsubscribe`, `List-Unsubscribe-Post`).
    pub headers: Vec<(String, String)>,
}

/// The text part derived from `content`'s html, for content sent without `text` (`None`
/// otherwise, and when the html shows no text).
pub fn derived_text(content: &EmailContent) -> Option<String> {
    match (&content.text, &content.html) {
        (None, Some(html)) => derived_part(crate::html::to_text(html)),
        _ => None,
    }
}

/// The text derived from an html as a text part: none when the html shows no text.
pub(crate) fn derived_part(text: String) -> Option<String> {
    Some(text).filter(|t| !t.is_empty())
}

/// The text part `content` goes out with, given the one `derived` from its html: the client's
/// `text`; none for `text: ""` beside html (the sender wants none); else the derived one.
pub fn text_of<'a>(content: &'a EmailContent, derived: Option<&'a str>) -> Option<&'a str> {
    match content.text.as_deref() {
        Some("") => None,
        Some(t) => Some(t),
        None => derived,
    }
}

/// Renders `content` with `Date: at`, as the engine does by default: a text part derived
/// from html sent alone.
pub fn render(content: &EmailContent, at: DateTime<Utc>) -> std::io::Result<Vec<u8>> {
    render_with(content, at, &Extras { text: derived_text(content), ..Extras::default() })
}

/// [`render`] with what the engine adds: the html replaced (links rewritten for tracking), the
/// text part for html sent alone, headers (`List-Unsubscribe`).
pub fn render_with(content: &EmailContent, at: DateTime<Utc>, extras: &Extras) -> std::io::Result<Vec<u8>> {
    let (html, extra_headers) = (extras.html.as_deref(), &extras.headers);
    let mut b = MessageBuilder::new()
        .from(address(&content.from))
        .to(list(&content.to))
        .subject(content.subject.clone())
        .message_id(content.message_id.trim_start_matches('<').trim_end_matches('>').to_string())
        .date(at.timestamp());
    if !content.cc.is_empty() {
        b = b.cc(list(&content.cc));
    }
    if !content.reply_to.is_empty() {
        b = b.reply_to(list(&content.reply_to));
    }
    for (name, value) in &content.headers {
        b = b.header(name.clone(), Text::new(value.clone()));
    }
    // The engine's own headers are ASCII by construction and must stay as written (a URL in
    // `List-Unsubscribe` as an encoded word is no URL to a mail client).
    for (name, value) in extra_headers.iter() {
        b = b.header(name.clone(), Raw::new(value.clone()));
    }

    let text = text_of(content, extras.text.as_deref()).map(|t| text_part("text/plain", t));
    let inline: Vec<MimePart<'static>> = content
        .attachments
        .iter()
        .filter_map(|a| {
            let cid = a.content_id.clone()?;
            Some(MimePart::new(a.content_type.clone(), a.content.clone()).inline().cid(cid))
        })
        .collect();
    let html = html.or(content.html.as_deref()).map(|h| {
        let html = text_part("text/html", h);
        if inline.is_empty() {
            html
        } else {
            let mut parts = vec![html];
            parts.extend(inline.iter().cloned());
            MimePart::new("multipart/related", parts)
        }
    });
    let mut body = match (text, html) {
        (Some(t), Some(h)) => MimePart::new("multipart/alternative", vec![t, h]),
        (Some(t), None) if !inline.is_empty() => {
            // Inline parts with no html to reference them are attached as they are.
            let mut parts = vec![t];
            parts.extend(inline.iter().cloned());
            MimePart::new("multipart/mixed", parts)
        }
        (Some(t), None) => t,
        (None, Some(h)) => h,
        (None, None) => text_part("text/plain", "\n"),
    };
    let attached: Vec<MimePart<'static>> = content
        .attachments
        .iter()
        .filter(|a| a.content_id.is_none())
        .map(|a| {
            let name = a.filename.as_deref().unwrap_or("attachment");
            MimePart::new(a.content_type.clone(), a.content.clone())
                .header("Content-Disposition", Raw::new(content_disposition("attachment", name)))
        })
        .collect();
    if !attached.is_empty() {
        let mut parts = vec![body];
        parts.extend(attached);
        body = MimePart::new("multipart/mixed", parts);
    }
    b.body(body).write_to_vec()
}

/// Filename characters written as they are inside a quoted string: printable ASCII but
/// space (mail-builder folds long header lines at white space, which would change the name),
/// the quote and the backslash (escapes some readers get wrong).
fn plain_filename_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// The longest filename written as one plain quoted string; longer ones are split into RFC
/// 2231 continuations so that no header line grows past what readers accept.
const PLAIN_FILENAME_MAX: usize = 60;

/// `attachment; filename="report.pdf"`, or, for a name with anything else in it (spaces,
/// non-ASCII letters, control characters, quotes) or a long one, RFC 2231's encoded and
/// continued form only (`filename*0*=utf-8''%E2%80%A6; filename*1*=…`: a plain fallback beside
/// it is merged into the name by some readers). Whatever the name holds, the header carries
/// only printable ASCII: no CR, LF or control byte can reach it.
pub fn content_disposition(kind: &str, filename: &str) -> String {
    if !filename.is_empty() && filename.len() <= PLAIN_FILENAME_MAX && filename.bytes().all(plain_filename_char) {
        return format!("{kind}; filename=\"{filename}\"");
    }
    // RFC 2231 §7: attribute-char is printable ASCII but space, `*`, `'`, `%` and tspecials.
    let attr_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b);
    let mut out = kind.to_string();
    let mut piece = String::new();
    let mut n = 0;
    let count = filename.chars().count();
    for (i, c) in filename.chars().enumerate() {
        let mut buf = [0u8; 4];
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            if attr_char(b) {
                piece.push(b as char);
            } else {
                piece.push_str(&format!("%{b:02X}"));
            }
        }
        // Break between characters, never inside one's encoding.
        if piece.len() >= PLAIN_FILENAME_MAX || i + 1 == count {
            let charset = if n == 0 { "utf-8''" } else { "" };
            out.push_str(&format!("; filename*{n}*={charset}{piece}"));
            piece.clear();
            n += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::email::{Attachment, EmailId, Tag};
    use mail_parser::{MessageParser, MimeHeaders};

    fn content() -> EmailContent {
        let from = Mailbox::parse("Acme Billing <billing@acme.test>").unwrap();
        let id = EmailId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        EmailContent {
            message_id: message_id_for(&id, &from),
            api_key_id: None,
            unsubscribe: false,
            from,
            to: vec![Mailbox::parse("Ann <ann@example.com>").unwrap(), Mailbox::parse("bob@example.com").unwrap()],
            cc: vec![Mailbox::parse("cc@example.com").unwrap()],
            bcc: vec![Mailbox::parse("hidden@example.com").unwrap()],
            reply_to: vec![Mailbox::parse("support@acme.test").unwrap()],
            subject: "Your invoice — März".into(),
            html: Some("<p>Hello <img src=\"cid:logo\"></p>".into()),
            text: Some("Hello".into()),
            headers: vec![
                ("X-Entity-Ref-ID".into(), "abc-123".into()),
                ("List-Unsubscribe".into(), "<mailto:u@acme.test>".into()),
            ],
            attachments: vec![
                Attachment {
                    id: uuid::Uuid::nil(),
                    filename: Some("logo.png".into()),
                    content_type: "image/png".into(),
                    content_id: Some("logo".into()),
                    content: vec![137, 80, 78, 71, 1, 2, 3],
                },
                Attachment {
                    id: uuid::Uuid::nil(),
                    filename: Some("invoice.pdf".into()),
                    content_type: "application/pdf".into(),
                    content_id: None,
                    content: b"%PDF-1.4 fake".to_vec(),
                },
            ],
            tags: vec![Tag { name: "category".into(), value: "invoice".into() }],
            topic_id: None,
        }
    }

    #[test]
    fn rendered_bytes_parse_back_field_by_field() {
        let c = content();
        let at = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").unwrap().to_utc();
        let bytes = render(&c, at).unwrap();
        let m = MessageParser::default().parse(&bytes).unwrap();

        let from = m.from().unwrap().first().unwrap();
        assert_eq!((from.name(), from.address()), (Some("Acme Billing"), Some("billing@acme.test")));
        let to: Vec<_> = m.to().unwrap().iter().map(|a| a.address().unwrap().to_string()).collect();
        assert_eq!(to, ["ann@example.com", "bob@example.com"]);
        assert_eq!(m.cc().unwrap().first().unwrap().address(), Some("cc@example.com"));
        assert!(m.bcc().is_none(), "Bcc must not appear in headers");
        assert!(!String::from_utf8_lossy(&bytes).contains("hidden@example.com"));
        assert_eq!(m.reply_to().unwrap().first().unwrap().address(), Some("support@acme.test"));
        assert_eq!(m.subject(), Some("Your invoice — März"));
        assert_eq!(m.message_id(), Some(c.message_id.as_str()));
        assert!(c.message_id.ends_with("@acme.test"));
        assert_eq!(m.date().unwrap().to_timestamp(), at.timestamp());
        assert_eq!(m.header_raw("X-Entity-Ref-ID").map(str::trim), Some("abc-123"));
        assert_eq!(m.header_raw("List-Unsubscribe").map(str::trim), Some("<mailto:u@acme.test>"));

        // Structure: mixed[ alternative[ text, related[ html, logo ] ], pdf ].
        assert_eq!(m.root_part().content_type().unwrap().subtype(), Some("mixed"));
        assert_eq!(m.body_text(0).as_deref(), Some("Hello"));
        assert_eq!(m.body_html(0).as_deref(), Some("<p>Hello <img src=\"cid:logo\"></p>"));
        let related = m.parts.iter().find(|p| p.content_type().is_some_and(|ct| ct.subtype() == Some("related")));
        assert!(related.is_some(), "inline image must sit in multipart/related");
        let logo = m.parts.iter().find(|p| p.content_id() == Some("logo")).unwrap();
        assert_eq!(logo.contents(), &[137, 80, 78, 71, 1, 2, 3]);
        assert_eq!(logo.content_disposition().unwrap().ctype(), "inline");
        let pdf = m.attachments().find(|p| p.attachment_name() == Some("invoice.pdf")).unwrap();
        assert_eq!(pdf.contents(), b"%PDF-1.4 fake");
        assert_eq!(pdf.content_type().unwrap().ctype(), "application");
    }

    #[test]
    fn filenames_with_control_characters_and_non_ascii_are_encoded() {
        assert_eq!(content_disposition("attachment", "report.pdf"), "attachment; filename=\"report.pdf\"");
        let evil = "a\r\nBcc: victim@example.com\u{1}\"x.pdf";
        let d = content_disposition("attachment", evil);
        assert!(d.bytes().all(|b| (0x20..0x7f).contains(&b)), "{d:?}");
        assert!(d.contains("filename*0*=utf-8''a%0D%0ABcc%3A%20victim%40example.com%01%22x.pdf"), "{d}");
        let mut c = content();
        c.attachments[1].filename = Some(format!("März {evil} {}", "ü".repeat(100)));
        let bytes = render(&c, Utc::now()).unwrap();
        let m = MessageParser::default().parse(&bytes).unwrap();
        let pdf = m.attachments().find(|p| p.content_type().is_some_and(|t| t.ctype() == "application")).unwrap();
        assert_eq!(pdf.attachment_name(), c.attachments[1].filename.as_deref(), "decoded back exactly");
        let head = &bytes[..bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap()];
        assert!(!String::from_utf8_lossy(head).contains("\r\nBcc:"), "no header injected");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.lines().all(|l| l.len() <= 998), "no line over RFC 5322's limit");
    }

    /// A custom header at the validator's limits (a 200-character name, a 2,048-character
    /// value with nothing to fold at) still makes lines within RFC 5322's 998: the name on a
    /// line of its own, the value in encoded words.
    #[test]
    fn custom_headers_at_their_limits_keep_lines_short() {
        let mut c = content();
        let name = format!("X-{}", "N".repeat(crate::validate::MAX_HEADER_NAME - 2));
        c.headers = vec![(name.clone(), "v".repeat(2048)), ("X-Spaced".into(), "word ".repeat(400))];
        let bytes = render(&c, Utc::now()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.lines().all(|l| l.len() <= 998), "a line over RFC 5322's limit");
        assert!(text.contains(&format!("\r\n{name}:")), "the name is written whole");
    }

    /// RFC 6532: an address with a UTF-8 local part is written as it is (the transport then
    /// needs SMTPUTF8); an ASCII message's headers stay ASCII.
    #[test]
    fn internationalised_addresses_are_written_as_utf8() {
        let at = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").unwrap().to_utc();
        let mut c = content();
        let ascii = render(&c, at).unwrap();
        let head = |b: &[u8]| b[..b.windows(4).position(|w| w == b"\r\n\r\n").unwrap()].to_vec();
        assert!(head(&ascii).is_ascii());
        c.to = vec![Mailbox::parse("Jörg <jörg@bücher.example>").unwrap()];
        let utf8 = String::from_utf8(head(&render(&c, at).unwrap())).unwrap();
        assert!(utf8.contains("jörg@"), "{utf8}");
    }

    #[test]
    fn text_only_is_a_single_part() {
        let mut c = content();
        c.html = None;
        c.attachments.clear();
        let bytes = render(&c, Utc::now()).unwrap();
        let m = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(m.root_part().content_type().unwrap().subtype(), Some("plain"));
        assert_eq!(m.body_text(0).as_deref(), Some("Hello"));
    }
}
