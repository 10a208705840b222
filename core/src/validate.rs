//! Validation: a wire [`EmailRequest`] becomes checked [`EmailContent`], or a list of every
//! field error it has (not just the first), each naming its path and rule.

use crate::address::Mailbox;
use crate::email::{Attachment, EmailContent, Tag};
use crate::error::{FieldError, Rule};
use crate::request::{AttachmentContent, EmailRequest, OneOrMany};
use crate::schedule;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The longest custom header name, in characters. Why a bound: a name cannot be folded, so
/// RFC 5322's 998-character line must hold it whole; 200 leaves room and is far beyond any
/// header name in use.
pub const MAX_HEADER_NAME: usize = 200;

/// What one email may carry: the hosted service's documented limits, and caps on what it
/// leaves open (so that one request can never fan out without bound).
///
/// A host changes a field of [`Limits::default`]; new limits may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Recipients in `to` (the hosted service's 50).
    pub max_to: usize,
    /// Deliveries one email may cause: `to`, `cc` and `bcc` together.
    pub max_recipients: usize,
    /// Addresses in `reply_to`.
    pub max_reply_to: usize,
    /// Tags on one email.
    pub max_tags: usize,
    /// Custom headers on one email.
    pub max_headers: usize,
    /// The length of one custom header value, in characters.
    pub max_header_value: usize,
    /// Attachments on one email (inline images included).
    pub max_attachments: usize,
    /// The length of an attachment's filename, in characters.
    pub max_filename: usize,
    /// How long loading one email's `path` attachments may take in all.
    pub attachment_load_timeout: std::time::Duration,
    /// The whole email: bodies, headers and decoded attachments.
    pub max_email_bytes: usize,
    /// Tag names and values, and idempotency keys.
    pub max_tag_len: usize,
    /// `content_id` must be shorter than this.
    pub max_content_id: usize,
    /// How far ahead an email may be scheduled.
    pub max_schedule_days: u32,
    /// The zone of clock times in `scheduled_at` phrases that name none.
    pub schedule_zone: chrono_tz::Tz,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_to: 50,
            max_recipients: 50,
            max_reply_to: 50,
            max_tags: 50,
            max_headers: 50,
            max_header_value: 2048,
            max_attachments: 50,
            max_filename: 255,
            attachment_load_timeout: std::time::Duration::from_secs(60),
            max_email_bytes: 40 * 1024 * 1024,
            max_tag_len: 256,
            max_content_id: 128,
            max_schedule_days: 30,
            schedule_zone: chrono_tz::Tz::UTC,
        }
    }
}

/// Headers a custom header may not set: those the engine writes itself (addresses, subject,
/// date, ids, MIME structure), those that name the envelope or another sender (`Sender`,
/// `Return-Path`, `Resent-*`: a key limited to one domain must not speak for another), and
/// the trace and authentication headers that only servers on the path write (`Received`,
/// `DKIM-Signature`, `ARC-*`, `Authentication-Results`).
pub fn is_reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "from"
            | "to"
            | "cc"
            | "bcc"
            | "reply-to"
            | "sender"
            | "return-path"
            | "subject"
            | "date"
            | "message-id"
            | "mime-version"
            | "received"
            | "received-spf"
            | "dkim-signature"
            | "domainkey-signature"
            | "authentication-results"
            | "delivered-to"
    ) || n.starts_with("content-")
        || n.starts_with("resent-")
        || n.starts_with("arc-")
}

/// A checked email whose `path` attachments still need loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// `message_id` is empty until the engine assigns the id.
    pub content: EmailContent,
    /// When it is scheduled for, resolved to UTC.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// `(index into content.attachments, path)` for attachments to load.
    pub to_load: Vec<(usize, String)>,
    /// The email's size as the 40 MB limit counts it (bodies, subject, headers, decoded
    /// attachments), before `path` attachments are loaded.
    pub size: usize,
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, rule: Rule) {
        self.0.push(FieldError::new(path, rule));
    }
}

fn addresses(field: &str, value: Option<&OneOrMany>, errors: &mut Errors) -> Vec<Mailbox> {
    let Some(value) = value else { return Vec::new() };
    let list = value.as_slice();
    let single = matches!(value, OneOrMany::One(_));
    list.iter()
        .enumerate()
        .filter_map(|(i, a)| {
            Mailbox::parse(a)
                .map_err(|e| {
                    // Paths are built only on failure: the common case allocates nothing here.
                    let path = if single { field.to_string() } else { format!("{field}[{i}]") };
                    errors.push(path, Rule::Address(e))
                })
                .ok()
        })
        .collect()
}

fn check_charset(path: impl FnOnce() -> String, s: &str, max: usize, errors: &mut Errors) {
    let n = s.chars().count();
    if n == 0 {
        errors.push(path(), Rule::Empty);
    } else if n > max {
        errors.push(path(), Rule::TooLong { max, got: n });
    } else if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        errors.push(path(), Rule::TagCharset(c));
    }
}

fn has_line_break(s: &str) -> bool {
    s.contains(['\r', '\n'])
}

/// A control character other than tab: not allowed in a header (RFC 5322 §2.2).
fn control_char(s: &str) -> Option<char> {
    s.chars().find(|c| c.is_control() && *c != '\t')
}

/// `to`, `cc` and `bcc` together are capped: the first field that takes the count over the
/// cap is the one named.
fn check_recipients(req: &EmailRequest, limits: &Limits, errors: &mut Errors) {
    let mut total = 0;
    for (field, value) in [("to", &req.to), ("cc", &req.cc), ("bcc", &req.bcc)] {
        let before = total;
        total += value.as_ref().map_or(0, |v| v.as_slice().len());
        if before <= limits.max_recipients && total > limits.max_recipients && !(field == "to" && total > limits.max_to)
        {
            errors.push(field, Rule::TooManyRecipients { max: limits.max_recipients, got: total });
        }
    }
}

/// A list field capped at `max` items.
fn check_count(field: &str, n: usize, max: usize, errors: &mut Errors) -> bool {
    if n > max {
        errors.push(field, Rule::TooMany { max, got: n });
        return false;
    }
    true
}

/// Validates one email at `now`. Every field error is reported.
pub fn validate(req: &EmailRequest, now: DateTime<Utc>, limits: &Limits) -> Result<Validated, Vec<FieldError>> {
    validate_owned(req.clone(), now, limits)
}

/// [`validate`], taking the request by value so bodies move instead of being copied.
pub(crate) fn validate_owned(
    mut req: EmailRequest,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Validated, Vec<FieldError>> {
    let mut errors = Errors(Vec::new());

    // A template stands in for the subject and the body in the hosted API; refused here, it
    // is the one error such a request gets, not also a missing subject and body it never had
    // to give.
    let templated = req.template.is_some();
    if templated {
        errors.push("template", Rule::Unsupported("hosted templates (send `subject` with `html` or `text`)"));
    }

    let from = match req.from.as_deref() {
        None => {
            errors.push("from", Rule::Required);
            None
        }
        Some(f) => Mailbox::parse(f).map_err(|e| errors.push("from", Rule::Address(e))).ok(),
    };

    match &req.to {
        None => errors.push("to", Rule::Required),
        Some(OneOrMany::Many(v)) if v.is_empty() => errors.push("to", Rule::TooFew { min: 1, got: 0 }),
        Some(OneOrMany::Many(v)) if v.len() > limits.max_to => {
            errors.push("to", Rule::TooMany { max: limits.max_to, got: v.len() })
        }
        Some(_) => {}
    }
    check_recipients(&req, limits, &mut errors);
    let within = |total: usize| total <= limits.max_recipients.max(limits.max_to);
    let all = [&req.to, &req.cc, &req.bcc].iter().map(|v| v.as_ref().map_or(0, |v| v.as_slice().len())).sum();
    // Past the cap the addresses are not parsed one by one: 10,000 of them make one error.
    let (to, cc, bcc) = if within(all) {
        (
            addresses("to", req.to.as_ref(), &mut errors),
            addresses("cc", req.cc.as_ref(), &mut errors),
            addresses("bcc", req.bcc.as_ref(), &mut errors),
        )
    } else {
        Default::default()
    };
    let n_reply_to = req.reply_to.as_ref().map_or(0, |v| v.as_slice().len());
    let reply_to = if check_count("reply_to", n_reply_to, limits.max_reply_to, &mut errors) {
        addresses("reply_to", req.reply_to.as_ref(), &mut errors)
    } else {
        Vec::new()
    };

    let subject = match req.subject.take() {
        None => {
            if !templated {
                errors.push("subject", Rule::Required);
            }
            String::new()
        }
        Some(s) if has_line_break(&s) => {
            errors.push("subject", Rule::HeaderLineBreak);
            String::new()
        }
        Some(s) if control_char(&s).is_some() => {
            errors.push("subject", Rule::ControlCharacter(control_char(&s).unwrap_or_default()));
            String::new()
        }
        Some(s) => s,
    };

    let html = req.html.take().filter(|s| !s.is_empty());
    // `text: ""` beside html is kept: it asks for no text part, where a missing `text` gets
    // one derived from the html (the hosted service's rule). Alone it is no body.
    let text = req.text.take().filter(|s| !s.is_empty() || html.is_some());
    if html.is_none() && text.is_none() && !templated {
        errors.push("html", Rule::BodyRequired);
    }

    let mut size = subject.len() + html.as_ref().map_or(0, String::len) + text.as_ref().map_or(0, String::len);

    let mut headers = Vec::new();
    let n_headers = req.headers.as_ref().map_or(0, serde_json::Map::len);
    let custom =
        if check_count("headers", n_headers, limits.max_headers, &mut errors) { req.headers.take() } else { None };
    for (name, value) in custom.iter().flatten() {
        // The name is the client's: a path quotes at most [`QUOTED_CHARS`] of it.
        let path = || {
            let shown: String = name.chars().take(crate::error::QUOTED_CHARS).collect();
            if shown.len() < name.len() { format!("headers.{shown}…") } else { format!("headers.{name}") }
        };
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            errors.push(path(), Rule::HeaderName);
            continue;
        }
        if name.len() > MAX_HEADER_NAME {
            errors.push(path(), Rule::TooLong { max: MAX_HEADER_NAME, got: name.len() });
            continue;
        }
        if is_reserved_header(name) {
            errors.push(path(), Rule::HeaderReserved(name.clone()));
            continue;
        }
        let Some(value) = value.as_str() else {
            errors.push(path(), Rule::Shape("a header value must be a string".into()));
            continue;
        };
        if has_line_break(value) {
            errors.push(path(), Rule::HeaderLineBreak);
            continue;
        }
        if let Some(c) = control_char(value) {
            errors.push(path(), Rule::ControlCharacter(c));
            continue;
        }
        let n = value.chars().count();
        if n > limits.max_header_value {
            errors.push(path(), Rule::TooLong { max: limits.max_header_value, got: n });
            continue;
        }
        size += name.len() + value.len() + 4;
        headers.push((name.clone(), value.to_string()));
    }

    // One-click unsubscribe names its one recipient in a signed link: with several, whose
    // click would it be? Its headers are written by the engine.
    let unsubscribe = req.unsubscribe.unwrap_or(false);
    if unsubscribe {
        if all != 1 {
            errors.push(
                "unsubscribe",
                Rule::Shape(format!(
                    "one-click unsubscribe needs exactly one recipient, got {all}; send one email per recipient (a batch)"
                )),
            );
        }
        if let Some((name, _)) = headers.iter().find(|(n, _)| n.to_ascii_lowercase().starts_with("list-unsubscribe")) {
            errors.push(format!("headers.{name}"), Rule::Exclusive("unsubscribe"));
        }
    }

    let mut tags = Vec::new();
    let n_tags = req.tags.as_ref().map_or(0, Vec::len);
    let given_tags = if check_count("tags", n_tags, limits.max_tags, &mut errors) { req.tags.take() } else { None };
    for (i, tag) in given_tags.into_iter().flatten().enumerate() {
        match tag.name.as_deref() {
            None => errors.push(format!("tags[{i}].name"), Rule::Required),
            Some(n) => check_charset(|| format!("tags[{i}].name"), n, limits.max_tag_len, &mut errors),
        }
        match tag.value.as_deref() {
            None => errors.push(format!("tags[{i}].value"), Rule::Required),
            Some(v) => check_charset(|| format!("tags[{i}].value"), v, limits.max_tag_len, &mut errors),
        }
        if let (Some(name), Some(value)) = (tag.name, tag.value) {
            tags.push(Tag { name, value });
        }
    }

    let mut attachments = Vec::new();
    let mut to_load = Vec::new();
    let n_attachments = req.attachments.as_ref().map_or(0, Vec::len);
    let given = if check_count("attachments", n_attachments, limits.max_attachments, &mut errors) {
        req.attachments.take()
    } else {
        None
    };
    for (i, a) in given.into_iter().flatten().enumerate() {
        let p = |f: &str| format!("attachments[{i}].{f}");
        // Any characters may name a file (rendering encodes them, RFC 2231); only the length
        // is capped.
        if let Some(f) = &a.filename
            && f.chars().count() > limits.max_filename
        {
            errors.push(p("filename"), Rule::TooLong { max: limits.max_filename, got: f.chars().count() });
        }
        let content_id = a.content_id.as_deref().map(|c| c.trim().trim_start_matches('<').trim_end_matches('>'));
        if let Some(cid) = content_id {
            let n = cid.chars().count();
            if n == 0 {
                errors.push(p("content_id"), Rule::Empty);
            } else if n >= limits.max_content_id {
                errors.push(p("content_id"), Rule::TooLong { max: limits.max_content_id - 1, got: n });
            } else if cid.chars().any(|c| c.is_control() || c.is_whitespace()) {
                errors.push(p("content_id"), Rule::HeaderLineBreak);
            }
        }
        let content_type = match a.content_type.as_deref() {
            Some(ct) => {
                let valid = ct
                    .split_once('/')
                    .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !ct.chars().any(|c| c.is_control()));
                if !valid {
                    errors.push(
                        p("content_type"),
                        Rule::Shape(format!("{} is not a MIME type like `image/png`", crate::error::quoted(ct))),
                    );
                }
                ct.to_string()
            }
            None => a
                .filename
                .as_deref()
                .or(a.path.as_deref())
                .map(|f| mime_guess::from_path(f).first_or_octet_stream().essence_str().to_string())
                .unwrap_or_else(|| "application/octet-stream".into()),
        };
        let content = match (a.content, a.path) {
            (Some(_), Some(_)) => {
                errors.push(format!("attachments[{i}]"), Rule::AttachmentBothSources);
                continue;
            }
            (None, None) => {
                errors.push(format!("attachments[{i}]"), Rule::AttachmentSource);
                continue;
            }
            (None, Some(path)) => {
                to_load.push((attachments.len(), path));
                Vec::new()
            }
            // Moved, not copied: an attachment is held once.
            (Some(AttachmentContent::Bytes(b)), None) => b,
            (Some(AttachmentContent::Base64(s)), None) => match crate::request::decode_base64(&s) {
                Some(b) => b,
                None => {
                    errors.push(p("content"), Rule::Base64);
                    continue;
                }
            },
        };
        size += content.len();
        attachments.push(Attachment {
            id: Uuid::new_v4(),
            filename: a.filename,
            content_type,
            content_id: content_id.map(str::to_string),
            content,
        });
    }

    if size > limits.max_email_bytes {
        errors.push("", Rule::EmailTooLarge { max: limits.max_email_bytes, got: size });
    }

    let scheduled_at = match req.scheduled_at.as_deref() {
        None => None,
        Some(s) => schedule::resolve_in(s, now, limits.max_schedule_days, limits.schedule_zone)
            .map_err(|rule| errors.push("scheduled_at", rule))
            .ok(),
    };

    match (errors.0.is_empty(), from) {
        (true, Some(from)) => Ok(Validated {
            content: EmailContent {
                from,
                to,
                cc,
                bcc,
                reply_to,
                subject,
                html,
                text,
                headers,
                attachments,
                tags,
                topic_id: req.topic_id.take(),
                message_id: String::new(),
                api_key_id: None,
                unsubscribe,
            },
            scheduled_at,
            to_load,
            size,
        }),
        _ => Err(errors.0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::error::ErrorName;
    use crate::request::{AttachmentRequest, TagRequest};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").unwrap().to_utc()
    }

    fn ok() -> EmailRequest {
        EmailRequest {
            from: Some("Acme <hi@acme.test>".into()),
            to: Some("a@example.com".into()),
            subject: Some("Hi".into()),
            html: Some("<p>hi</p>".into()),
            ..Default::default()
        }
    }

    fn errs(r: &EmailRequest) -> Vec<(String, Rule)> {
        validate(r, now(), &Limits::default()).err().unwrap_or_default().into_iter().map(|e| (e.path, e.rule)).collect()
    }

    #[test]
    fn a_valid_email_passes() {
        let v = validate(&ok(), now(), &Limits::default()).unwrap();
        assert_eq!(v.content.from.address(), "hi@acme.test");
        assert_eq!(v.content.to.len(), 1);
    }

    #[test]
    fn required_fields() {
        let r = EmailRequest::default();
        let e = errs(&r);
        assert!(e.contains(&("from".into(), Rule::Required)));
        assert!(e.contains(&("to".into(), Rule::Required)));
        assert!(e.contains(&("subject".into(), Rule::Required)));
        assert!(e.contains(&("html".into(), Rule::BodyRequired)));
        assert_eq!(Rule::Required.error_name(), ErrorName::MissingRequiredField);
    }

    #[test]
    fn to_is_limited_to_fifty_and_each_is_parsed() {
        let mut r = ok();
        r.to = Some(OneOrMany::Many((0..51).map(|i| format!("u{i}@example.com")).collect()));
        assert_eq!(errs(&r), vec![("to".into(), Rule::TooMany { max: 50, got: 51 })]);
        r.to = Some(OneOrMany::Many((0..50).map(|i| format!("u{i}@example.com")).collect()));
        assert!(errs(&r).is_empty());
        r.to = Some(vec!["a@example.com", "b@example.com", "c@example.com", "bad"].into());
        let e = errs(&r);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "to[3]");
        let mut r = ok();
        r.from = Some("not an address".into());
        assert_eq!(errs(&r)[0].0, "from");
        let mut r = ok();
        r.cc = Some("x@".into());
        r.bcc = Some(vec!["ok@example.com", "@x.com"].into());
        r.reply_to = Some("a@b".into());
        let paths: Vec<String> = errs(&r).into_iter().map(|e| e.0).collect();
        assert_eq!(paths, vec!["cc", "bcc[1]", "reply_to"]);
        // A comma-separated list in one string is named as such, as the hosted API refuses it.
        let mut r = ok();
        r.to = Some("a@example.com, b@example.com".into());
        let e = errs(&r);
        assert_eq!(e, vec![("to".into(), Rule::Address(crate::address::AddressError::SeveralAddresses(2)))]);
        let message = crate::error::FieldError::new(e[0].0.clone(), e[0].1.clone()).to_string();
        assert!(
            message.ends_with(
                "this holds 2 addresses separated by `,` or `;`; give one address per string, several as an array."
            ),
            "{message}"
        );
    }

    #[test]
    fn tags_charset_and_length() {
        let mut r = ok();
        r.tags = Some(vec![
            TagRequest { name: Some("category".into()), value: Some("confirm_email-1".into()) },
            TagRequest { name: Some("bad name".into()), value: Some("v".into()) },
            TagRequest { name: Some("n".into()), value: Some("x".repeat(257)) },
            TagRequest { name: None, value: Some("v".into()) },
            TagRequest { name: Some("ok".into()), value: Some("é".into()) },
        ]);
        assert_eq!(
            errs(&r),
            vec![
                ("tags[1].name".into(), Rule::TagCharset(' ')),
                ("tags[2].value".into(), Rule::TooLong { max: 256, got: 257 }),
                ("tags[3].name".into(), Rule::Required),
                ("tags[4].value".into(), Rule::TagCharset('é')),
            ]
        );
        r.tags = Some(vec![TagRequest { name: Some("x".repeat(256)), value: Some("y".into()) }]);
        assert!(errs(&r).is_empty());
    }

    #[test]
    fn a_header_name_is_bounded_and_quoted_in_part() {
        let mut r = ok();
        let mut h = serde_json::Map::new();
        h.insert(format!("X-{}", "a".repeat(MAX_HEADER_NAME - 2)), "v".into());
        r.headers = Some(h.clone());
        assert!(errs(&r).is_empty(), "{MAX_HEADER_NAME} characters are allowed");
        let long = format!("X-{}", "a".repeat(200_000));
        let spaced = format!("X {}", "b".repeat(200_000));
        let mut h = serde_json::Map::new();
        h.insert(long.clone(), "v".into());
        h.insert(spaced, "v".into());
        r.headers = Some(h);
        let e = errs(&r);
        let shown = format!("headers.X-{}…", "a".repeat(crate::error::QUOTED_CHARS - 2));
        assert!(e.contains(&(shown, Rule::TooLong { max: MAX_HEADER_NAME, got: long.len() })), "{e:?}");
        let shown = format!("headers.X {}…", "b".repeat(crate::error::QUOTED_CHARS - 2));
        assert!(e.contains(&(shown, Rule::HeaderName)), "{e:?}");
    }

    #[test]
    fn headers_cannot_inject_or_override() {
        let mut r = ok();
        let mut h = serde_json::Map::new();
        h.insert("X-Entity-Ref-ID".into(), "123".into());
        h.insert("X-Evil".into(), "a\r\nBcc: victim@example.com".into());
        h.insert("Subject".into(), "other".into());
        h.insert("content-type".into(), "text/plain".into());
        h.insert("Message-ID".into(), "<x@y>".into());
        h.insert("Bad Name".into(), "v".into());
        h.insert("X-Num".into(), serde_json::json!(5));
        r.headers = Some(h);
        let e = errs(&r);
        assert!(e.contains(&("headers.X-Evil".into(), Rule::HeaderLineBreak)));
        assert!(e.contains(&("headers.Subject".into(), Rule::HeaderReserved("Subject".into()))));
        assert!(e.contains(&("headers.content-type".into(), Rule::HeaderReserved("content-type".into()))));
        assert!(e.contains(&("headers.Message-ID".into(), Rule::HeaderReserved("Message-ID".into()))));
        assert!(e.contains(&("headers.Bad Name".into(), Rule::HeaderName)));
        assert!(e.iter().any(|(p, _)| p == "headers.X-Num"));
        assert!(!e.iter().any(|(p, _)| p == "headers.X-Entity-Ref-ID"));
        for name in ["From", "To", "Cc", "Bcc", "Date", "MIME-Version", "Content-Transfer-Encoding"] {
            let mut r = ok();
            let mut h = serde_json::Map::new();
            h.insert(name.into(), "x".into());
            r.headers = Some(h);
            assert_eq!(errs(&r).len(), 1, "{name}");
        }
        let mut r = ok();
        r.subject = Some("a\nb".into());
        assert_eq!(errs(&r), vec![("subject".into(), Rule::HeaderLineBreak)]);
    }

    #[test]
    fn one_email_is_capped_at_fifty_deliveries_and_bounded_lists() {
        let many = |n: usize| OneOrMany::Many((0..n).map(|i| format!("u{i}@example.com")).collect());
        let mut r = ok();
        r.to = Some(many(30));
        r.cc = Some(many(15));
        r.bcc = Some(many(10_000));
        assert_eq!(errs(&r), vec![("bcc".into(), Rule::TooManyRecipients { max: 50, got: 10_045 })]);
        r.bcc = Some(many(5));
        assert!(errs(&r).is_empty(), "exactly 50 deliveries");
        let mut r = ok();
        r.cc = Some(many(51));
        assert_eq!(errs(&r), vec![("cc".into(), Rule::TooManyRecipients { max: 50, got: 52 })]);
        let mut r = ok();
        r.reply_to = Some(many(10_000));
        r.tags = Some(vec![TagRequest { name: Some("n".into()), value: Some("v".into()) }; 10_000]);
        let mut h = serde_json::Map::new();
        for i in 0..10_000 {
            h.insert(format!("X-H{i}"), "v".into());
        }
        r.headers = Some(h);
        r.attachments =
            Some(vec![
                AttachmentRequest { content: Some(AttachmentContent::Bytes(vec![1])), ..Default::default() };
                10_000
            ]);
        assert_eq!(
            errs(&r),
            vec![
                ("reply_to".into(), Rule::TooMany { max: 50, got: 10_000 }),
                ("headers".into(), Rule::TooMany { max: 50, got: 10_000 }),
                ("tags".into(), Rule::TooMany { max: 50, got: 10_000 }),
                ("attachments".into(), Rule::TooMany { max: 50, got: 10_000 }),
            ]
        );
        let limits = Limits { max_recipients: 2, ..Limits::default() };
        let mut r = ok();
        r.cc = Some(many(2));
        let e = validate(&r, now(), &limits).unwrap_err();
        assert_eq!((e[0].path.as_str(), &e[0].rule), ("cc", &Rule::TooManyRecipients { max: 2, got: 3 }));
    }

    #[test]
    fn envelope_and_authentication_headers_are_reserved_and_control_characters_refused() {
        for name in [
            "Reply-To",
            "Sender",
            "Return-Path",
            "DKIM-Signature",
            "Resent-From",
            "resent-sender",
            "Received",
            "ARC-Seal",
            "Authentication-Results",
        ] {
            let mut r = ok();
            let mut h = serde_json::Map::new();
            h.insert(name.into(), "ceo@bank.test".into());
            r.headers = Some(h);
            assert_eq!(errs(&r), vec![(format!("headers.{name}"), Rule::HeaderReserved(name.into()))], "{name}");
        }
        let mut r = ok();
        let mut h = serde_json::Map::new();
        h.insert("X-Ctl".into(), "a\u{1}b".into());
        h.insert("X-Tab".into(), "a\tb".into());
        h.insert("X-Long".into(), "x".repeat(2049).into());
        r.headers = Some(h);
        r.subject = Some("hi\u{7f}".into());
        assert_eq!(
            errs(&r),
            vec![
                ("subject".into(), Rule::ControlCharacter('\u{7f}')),
                ("headers.X-Ctl".into(), Rule::ControlCharacter('\u{1}')),
                ("headers.X-Long".into(), Rule::TooLong { max: 2048, got: 2049 }),
            ]
        );
        // Any filename is accepted (rendering encodes it); only its length is capped.
        let mut r = ok();
        r.attachments = Some(vec![
            AttachmentRequest {
                content: Some(AttachmentContent::Bytes(vec![1])),
                filename: Some("a\r\nb\u{1}.pdf".into()),
                ..Default::default()
            },
            AttachmentRequest {
                content: Some(AttachmentContent::Bytes(vec![1])),
                filename: Some("x".repeat(256)),
                ..Default::default()
            },
        ]);
        assert_eq!(errs(&r), vec![("attachments[1].filename".into(), Rule::TooLong { max: 255, got: 256 })]);
    }

    #[test]
    fn attachments() {
        let mut r = ok();
        r.attachments = Some(vec![
            AttachmentRequest {
                content: Some(AttachmentContent::Base64("aGk=".into())),
                filename: Some("a.pdf".into()),
                ..Default::default()
            },
            AttachmentRequest { filename: Some("none.txt".into()), ..Default::default() },
            AttachmentRequest { content: Some(AttachmentContent::Base64("***".into())), ..Default::default() },
            AttachmentRequest {
                content: Some(AttachmentContent::Bytes(vec![1])),
                content_id: Some("x".repeat(128)),
                ..Default::default()
            },
            AttachmentRequest {
                content: Some(AttachmentContent::Bytes(vec![1])),
                path: Some("https://x.test/a".into()),
                ..Default::default()
            },
        ]);
        let e = errs(&r);
        assert_eq!(
            e,
            vec![
                ("attachments[1]".into(), Rule::AttachmentSource),
                ("attachments[2].content".into(), Rule::Base64),
                ("attachments[3].content_id".into(), Rule::TooLong { max: 127, got: 128 }),
                ("attachments[4]".into(), Rule::AttachmentBothSources),
            ]
        );
        assert_eq!(Rule::AttachmentSource.error_name(), ErrorName::InvalidAttachment);
        let mut r = ok();
        r.attachments = Some(vec![
            AttachmentRequest {
                content: Some(AttachmentContent::Base64("aGk=".into())),
                filename: Some("report.pdf".into()),
                ..Default::default()
            },
            AttachmentRequest {
                content: Some(AttachmentContent::Bytes(vec![137, 80])),
                filename: Some("logo.png".into()),
                content_id: Some("logo".into()),
                ..Default::default()
            },
            AttachmentRequest { path: Some("https://cdn.test/x.csv".into()), ..Default::default() },
        ]);
        let v = validate(&r, now(), &Limits::default()).unwrap();
        let a = &v.content.attachments;
        assert_eq!(a[0].content, b"hi");
        assert_eq!(a[0].content_type, "application/pdf");
        assert_eq!(a[1].content_type, "image/png");
        assert_eq!(a[1].content_id.as_deref(), Some("logo"));
        assert_eq!(a[2].content_type, "text/csv");
        assert_eq!(v.to_load, vec![(2, "https://cdn.test/x.csv".to_string())]);
    }

    #[test]
    fn forty_megabytes_in_all() {
        let mut r = ok();
        let half = vec![0u8; 20 * 1024 * 1024];
        r.attachments = Some(vec![
            AttachmentRequest { content: Some(AttachmentContent::Bytes(half.clone())), ..Default::default() },
            AttachmentRequest { content: Some(AttachmentContent::Bytes(half)), ..Default::default() },
        ]);
        let e = errs(&r);
        assert!(matches!(e.as_slice(), [(p, Rule::EmailTooLarge { .. })] if p.is_empty()));
    }

    #[test]
    fn scheduled_at_is_checked() {
        let mut r = ok();
        r.scheduled_at = Some("2026-03-02T09:00:00+02:00".into());
        let v = validate(&r, now(), &Limits::default()).unwrap();
        assert_eq!(v.scheduled_at.unwrap().to_rfc3339(), "2026-03-02T07:00:00+00:00");
        r.scheduled_at = Some("2026-04-15T00:00:00Z".into());
        assert_eq!(errs(&r), vec![("scheduled_at".into(), Rule::ScheduleTooFar { max_days: 30 })]);
        r.scheduled_at = Some("2026-02-01T00:00:00Z".into());
        assert_eq!(errs(&r), vec![("scheduled_at".into(), Rule::SchedulePast)]);
        r.scheduled_at = Some("whenever".into());
        assert!(matches!(errs(&r).as_slice(), [(p, Rule::Schedule { .. })] if p == "scheduled_at"));
    }

    #[test]
    fn templates_are_refused_not_ignored() {
        let mut r = ok();
        r.template = Some(serde_json::json!({"id": "t"}));
        let refused = ("template".into(), Rule::Unsupported("hosted templates (send `subject` with `html` or `text`)"));
        assert_eq!(errs(&r), vec![refused.clone()]);
        // As the hosted API takes it: a template instead of a subject and a body. Only the
        // template is named.
        r.subject = None;
        r.html = None;
        r.text = None;
        assert_eq!(errs(&r), vec![refused]);
        let message = FieldError::new("template", errs(&r)[0].1.clone()).to_string();
        assert_eq!(
            message,
            "Invalid `template` field: hosted templates (send `subject` with `html` or `text`) are not supported."
        );
    }
}
