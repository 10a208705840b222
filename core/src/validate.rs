//! Validation: a wire [`EmailRequest`] becomes checked [`EmailContent`], or a list of every
//! field error it has (not just the first), each naming its path and rule.

use crate::address::Mailbox;
use crate::email::{Attachment, EmailContent, Tag};
use crate::error::{FieldError, Rule};
use crate::request::{AttachmentContent, EmailRequest, OneOrMany};
use crate::schedule;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The limits the hosted service documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Recipients in `to`.
    pub max_to: usize,
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
            max_email_bytes: 40 * 1024 * 1024,
            max_tag_len: 256,
            max_content_id: 128,
            max_schedule_days: 30,
            schedule_zone: chrono_tz::Tz::UTC,
        }
    }
}

/// Headers the engine writes itself; a custom header may not override them.
fn is_reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "from" | "to" | "cc" | "bcc" | "subject" | "date" | "message-id" | "mime-version")
        || n.starts_with("content-")
}

/// A checked email whose `path` attachments still need loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// `message_id` is empty until the engine assigns the id.
    pub content: EmailContent,
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

/// Validates one email at `now`. Every field error is reported.
pub fn validate(req: &EmailRequest, now: DateTime<Utc>, limits: &Limits) -> Result<Validated, Vec<FieldError>> {
    validate_owned(req.clone(), now, limits)
}

/// [`validate`], taking the request by value so bodies move instead of being copied.
pub fn validate_owned(
    mut req: EmailRequest,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Validated, Vec<FieldError>> {
    let mut errors = Errors(Vec::new());

    if req.template.is_some() {
        errors.push("template", Rule::Unsupported("hosted templates"));
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
    let to = addresses("to", req.to.as_ref(), &mut errors);
    let cc = addresses("cc", req.cc.as_ref(), &mut errors);
    let bcc = addresses("bcc", req.bcc.as_ref(), &mut errors);
    let reply_to = addresses("reply_to", req.reply_to.as_ref(), &mut errors);

    let subject = match req.subject.take() {
        None => {
            errors.push("subject", Rule::Required);
            String::new()
        }
        Some(s) if has_line_break(&s) => {
            errors.push("subject", Rule::HeaderLineBreak);
            String::new()
        }
        Some(s) => s,
    };

    let html = req.html.take().filter(|s| !s.is_empty());
    let text = req.text.take().filter(|s| !s.is_empty());
    if html.is_none() && text.is_none() {
        errors.push("html", Rule::BodyRequired);
    }

    let mut size = subject.len() + html.as_ref().map_or(0, String::len) + text.as_ref().map_or(0, String::len);

    let mut headers = Vec::new();
    for (name, value) in req.headers.iter().flatten() {
        let path = || format!("headers.{name}");
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            errors.push(path(), Rule::HeaderName);
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
        size += name.len() + value.len() + 4;
        headers.push((name.clone(), value.to_string()));
    }

    let mut tags = Vec::new();
    for (i, tag) in req.tags.take().into_iter().flatten().enumerate() {
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
    for (i, a) in req.attachments.iter().flatten().enumerate() {
        let p = |f: &str| format!("attachments[{i}].{f}");
        if let Some(f) = &a.filename
            && (has_line_break(f) || f.contains('\0'))
        {
            errors.push(p("filename"), Rule::HeaderLineBreak);
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
                    errors.push(p("content_type"), Rule::Shape(format!("{ct:?} is not a MIME type like `image/png`")));
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
        let content = match (&a.content, &a.path) {
            (Some(_), Some(_)) => {
                errors.push(format!("attachments[{i}]"), Rule::AttachmentBothSources);
                continue;
            }
            (None, None) => {
                errors.push(format!("attachments[{i}]"), Rule::AttachmentSource);
                continue;
            }
            (None, Some(path)) => {
                to_load.push((attachments.len(), path.clone()));
                Vec::new()
            }
            (Some(AttachmentContent::Bytes(b)), None) => b.clone(),
            (Some(AttachmentContent::Base64(s)), None) => {
                let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
                    Ok(b) => b,
                    Err(_) => {
                        errors.push(p("content"), Rule::Base64);
                        continue;
                    }
                }
            }
        };
        size += content.len();
        attachments.push(Attachment {
            id: Uuid::new_v4(),
            filename: a.filename.clone(),
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
        assert_eq!(errs(&r), vec![("template".into(), Rule::Unsupported("hosted templates"))]);
    }
}
