//! The request model in the hosted service's wire format (JSON, snake_case).
//!
//! These types accept what the official SDKs send (a string or a list for address fields,
//! `content` as base64 or as an array of byte values, `inline_content_id` as an alias) and
//! hold it unchanged; [`crate::validate`] turns them into a checked [`crate::email::NewEmail`].

use crate::error::{FieldError, Rule};
use serde::{Deserialize, Serialize};

/// `to`, `cc`, `bcc`, `reply_to`: one address or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One address.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The addresses, one or many.
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

impl From<&str> for OneOrMany {
    fn from(s: &str) -> Self {
        OneOrMany::One(s.to_string())
    }
}

impl From<Vec<&str>> for OneOrMany {
    fn from(v: Vec<&str>) -> Self {
        OneOrMany::Many(v.into_iter().map(str::to_string).collect())
    }
}

/// An attachment's bytes: base64 text (Node, curl) or an array of byte values (Python).
///
/// Parsing decodes base64 at once (into [`AttachmentContent::Bytes`]), so a request never
/// holds an attachment twice, and refuses one whose decoded size alone is over the limit
/// given to [`EmailRequest::from_json_limited`] without decoding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AttachmentContent {
    /// Base64 text, as a host building a request in code may give it.
    Base64(String),
    /// The bytes themselves.
    Bytes(Vec<u8>),
}

/// Marks a serde error raised for an attachment's content, so that [`parse_json`] can turn it
/// into the rule it stands for (serde errors carry only text).
const BASE64_MARK: &str = "\u{1}base64";
const TOO_LARGE_MARK: &str = "\u{1}too-large:";

thread_local! {
    /// The most one attachment may decode to while [`parse_json`] runs on this thread
    /// (deserialization is synchronous, so the value cannot leak into another request).
    static DECODE_LIMIT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// Decodes standard base64, tolerating the line breaks and spaces of MIME-style encoders
/// (copying the text only when it has some).
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let engine = &base64::engine::general_purpose::STANDARD;
    match engine.decode(s.as_bytes()) {
        Ok(b) => Some(b),
        Err(_) if s.bytes().any(|b| b.is_ascii_whitespace()) => {
            let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            engine.decode(compact).ok()
        }
        Err(_) => None,
    }
}

impl<'de> Deserialize<'de> for AttachmentContent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AttachmentContent;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("base64 text or an array of byte values")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<AttachmentContent, E> {
                // The decoded size is known before decoding: refuse what is too large unread.
                let decoded = s.len() / 4 * 3;
                let limit = DECODE_LIMIT.with(std::cell::Cell::get);
                if decoded > limit.saturating_add(3) {
                    return Err(E::custom(format!("{TOO_LARGE_MARK}{decoded}")));
                }
                decode_base64(s).map(AttachmentContent::Bytes).ok_or_else(|| E::custom(BASE64_MARK))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<AttachmentContent, A::Error> {
                let limit = DECODE_LIMIT.with(std::cell::Cell::get);
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    if out.len() == limit {
                        return Err(serde::de::Error::custom(format!("{TOO_LARGE_MARK}{}", out.len() + 1)));
                    }
                    out.push(b);
                }
                Ok(AttachmentContent::Bytes(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `Deserialize` (a JSON object only) and `Serialize` for a request struct derived with
/// `#[serde(remote = "Self")]`, whose derived functions they call. Why: serde's derive also
/// reads a struct from an array, field by field in declaration order, so the body
/// `["a@x.test", "b@x.test", "Hi", "<p>Hi</p>"]` would have been an email, and `["n", "v"]` a
/// tag. The hosted API takes objects only.
macro_rules! objects_only {
    ($t:ident, $what:literal) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<$t, A::Error> {
                        $t::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                d.deserialize_map(V)
            }
        }
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $t::serialize(self, s)
            }
        }
    };
}

objects_only!(AttachmentRequest, "an attachment (a JSON object)");
objects_only!(TagRequest, "a tag (a JSON object with `name` and `value`)");
objects_only!(EmailRequest, "an email (a JSON object)");

/// One attachment as the wire carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct AttachmentRequest {
    /// The bytes (base64 text or byte values): this or `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<AttachmentContent>,
    /// The file name to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// A location the host's [`crate::ports::AttachmentLoader`] resolves at acceptance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The MIME type (guessed from the name when absent).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "contentType")]
    pub content_type: Option<String>,
    /// Makes the attachment inline, referenced from the html as `cid:<content_id>`.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "inline_content_id", alias = "contentId")]
    pub content_id: Option<String>,
}

/// One tag as the wire carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct TagRequest {
    /// The tag's name.
    #[serde(default)]
    pub name: Option<String>,
    /// The tag's value.
    #[serde(default)]
    pub value: Option<String>,
}

/// One email as the wire carries it (`POST /emails`, or one item of a batch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct EmailRequest {
    /// The sender, `addr@x` or `Name <addr@x>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The recipients (at most 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<OneOrMany>,
    /// Carbon-copy recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc: Option<OneOrMany>,
    /// Blind-copy recipients (never in a header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bcc: Option<OneOrMany>,
    /// Where replies go.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "replyTo")]
    pub reply_to: Option<OneOrMany>,
    /// The subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The HTML body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// The plain-text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Custom headers, in the order given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
    /// Attachments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<AttachmentRequest>>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<TagRequest>>,
    /// When to send: ISO 8601, or English (`tomorrow at 9am ET`).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "scheduledAt")]
    pub scheduled_at: Option<String>,
    /// The hosted service's topic, kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "topicId")]
    pub topic_id: Option<String>,
    /// Hosted templates; not supported by this engine (refused with a typed error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<serde_json::Value>,
    /// Beyond the hosted service: add RFC 8058 one-click unsubscribe (`List-Unsubscribe` with
    /// a signed link, `List-Unsubscribe-Post`). Needs exactly one recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<bool>,
}

impl EmailRequest {
    /// Parses one email from JSON, naming the field of any type error. The body must be one
    /// JSON value and nothing else (trailing bytes are malformed JSON).
    pub fn from_json(json: &[u8]) -> Result<EmailRequest, FieldError> {
        Self::from_json_limited(json, usize::MAX)
    }

    /// [`from_json`](Self::from_json), refusing without decoding it any attachment whose
    /// content alone would decode to more than `max_attachment_bytes` (the email size limit):
    /// a request then holds at most one decoded copy of what it carries.
    pub fn from_json_limited(json: &[u8], max_attachment_bytes: usize) -> Result<EmailRequest, FieldError> {
        // A body that is not an object at all is the body's error.
        parse_json(json, max_attachment_bytes).map_err(|mut e| {
            if e.path.is_empty() {
                e.path = "body".into();
            }
            e
        })
    }
}

/// Parses a batch (a JSON array of email objects), naming `emails[i].field` on type errors.
pub fn batch_from_json(json: &[u8]) -> Result<Vec<EmailRequest>, FieldError> {
    batch_from_json_limited(json, usize::MAX)
}

/// [`batch_from_json`] with [`EmailRequest::from_json_limited`]'s attachment limit.
pub fn batch_from_json_limited(json: &[u8], max_attachment_bytes: usize) -> Result<Vec<EmailRequest>, FieldError> {
    parse_json::<Vec<EmailRequest>>(json, max_attachment_bytes).map_err(|mut e| {
        // A batch too long to be read is refused by the batch's own rule, with its count.
        if let (true, Rule::TooManyEntries { got, .. }) = (e.path.is_empty(), &e.rule) {
            e.rule = Rule::TooMany { max: crate::engine::MAX_BATCH, got: *got };
        }
        if e.path.starts_with('[') {
            e.path = format!("emails{}", e.path);
        } else if e.path.is_empty() {
            e.path = "emails".into();
        }
        e
    })
}

/// Restores the decode limit when parsing ends, however it ends.
struct LimitGuard(usize);

impl Drop for LimitGuard {
    fn drop(&mut self) {
        DECODE_LIMIT.with(|l| l.set(self.0));
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(json: &[u8], max_attachment_bytes: usize) -> Result<T, FieldError> {
    // Lists too long for any limit are refused before they are read into values, each of
    // which takes many times the bytes it took in the body.
    crate::json_entries::check(json)?;
    let _restore = LimitGuard(DECODE_LIMIT.with(|l| l.replace(max_attachment_bytes)));
    let de = &mut serde_json::Deserializer::from_slice(json);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        let text = inner.to_string();
        if text.starts_with(BASE64_MARK) {
            return FieldError::new(path, Rule::Base64);
        }
        if let Some(got) = text.strip_prefix(TOO_LARGE_MARK).and_then(|t| t.split(' ').next()?.parse().ok()) {
            return FieldError::new(path, Rule::EmailTooLarge { max: max_attachment_bytes, got });
        }
        if inner.is_syntax() || inner.is_eof() {
            // Malformed JSON is the body's fault, not the field the parser had reached.
            return not_json(&inner);
        }
        FieldError::new(path, Rule::Shape(type_error(&text)))
    })?;
    // One JSON value and nothing after it: `{…} x` is malformed, not a request plus noise.
    de.end().map_err(|e| not_json(&e))?;
    Ok(value)
}

/// The error for a body that is not one JSON value.
fn not_json(e: &serde_json::Error) -> FieldError {
    FieldError::new("body", Rule::Shape(format!("the body is not valid JSON ({e})")))
}

/// serde's words for a value of the wrong type, without its line and column; an address
/// field, which takes one of two shapes, says which (serde would name the Rust type: "did
/// not match any variant of untagged enum OneOrMany").
fn type_error(text: &str) -> String {
    if text.contains("untagged enum OneOrMany") {
        return "expected a string or an array of strings".into();
    }
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sdk_shapes_are_accepted() {
        let r = EmailRequest::from_json(
            br#"{"from":"a@x.test","to":"b@x.test","subject":"s","text":"t",
                 "attachments":[{"content":[104,105],"filename":"a.txt","inline_content_id":"c1"}]}"#,
        )
        .unwrap();
        assert_eq!(r.to, Some(OneOrMany::One("b@x.test".into())));
        let a = &r.attachments.unwrap()[0];
        assert_eq!(a.content, Some(AttachmentContent::Bytes(vec![104, 105])));
        assert_eq!(a.content_id.as_deref(), Some("c1"));
    }

    #[test]
    fn type_errors_name_the_path() {
        let e = EmailRequest::from_json(br#"{"from":"a@x.test","tags":[{"name":5}]}"#).unwrap_err();
        assert_eq!(e.path, "tags[0].name");
        let e = batch_from_json(br#"[{"to":"a@x.test"},{"to":7}]"#).unwrap_err();
        assert_eq!(e.path, "emails[1].to");
        let e = batch_from_json(br#"{"to":"a"}"#).unwrap_err();
        assert_eq!(e.path, "emails");
        let e = EmailRequest::from_json(b"{not json").unwrap_err();
        assert!(matches!(e.rule, Rule::Shape(ref m) if m.contains("not valid JSON")));
    }

    #[test]
    fn malformed_json_names_the_body_not_the_field_it_stopped_in() {
        for body in [&br#"{"from":"#[..], br#"{"from":"a@x.test","to":["b@x.test""#, br#"{"from":"a@x.test"} x"#] {
            let e = EmailRequest::from_json(body).unwrap_err();
            assert_eq!(e.path, "body", "{}", String::from_utf8_lossy(body));
            assert!(e.to_string().starts_with("Invalid `body` field: the body is not valid JSON"), "{e}");
        }
        let e = batch_from_json(br#"[{"from":"a@x.test"},{"to":"#).unwrap_err();
        assert_eq!(e.path, "body");
    }

    #[test]
    fn requests_are_objects_not_arrays_read_field_by_field() {
        let e = EmailRequest::from_json(br#"["a@x.test","b@x.test","Hi","<p>Hi</p>"]"#).unwrap_err();
        assert_eq!(e.to_string(), "Invalid `body` field: invalid type: sequence, expected an email (a JSON object).");
        for body in [&br#""a@x.test""#[..], b"null", b"5"] {
            assert_eq!(EmailRequest::from_json(body).unwrap_err().path, "body");
        }
        let e = batch_from_json(br#"[{"from":"a@x.test"},["a@x.test","b@x.test","Hi","t"]]"#).unwrap_err();
        assert_eq!(e.path, "emails[1]");
        let e = EmailRequest::from_json(br#"{"tags":[["n","v"]]}"#).unwrap_err();
        assert_eq!(e.path, "tags[0]");
        let e = EmailRequest::from_json(br#"{"attachments":[["aGk=","a.txt"]]}"#).unwrap_err();
        assert_eq!(e.path, "attachments[0]");
        // Objects read as before, and write back as the same object.
        let r = EmailRequest::from_json(
            br#"{"from":"a@x.test","to":["b@x.test"],"tags":[{"name":"n","value":"v"}],"attachments":[{"content":"aGk=","filename":"a.txt"}]}"#,
        )
        .unwrap();
        assert_eq!(r.tags.as_ref().unwrap()[0].name.as_deref(), Some("n"));
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["tags"][0]["value"], "v");
        assert_eq!(EmailRequest::from_json(back.to_string().as_bytes()).unwrap(), r);
    }

    #[test]
    fn a_field_of_two_shapes_says_what_it_takes() {
        let e = EmailRequest::from_json(br#"{"to":5}"#).unwrap_err();
        assert_eq!(e.to_string(), "Invalid `to` field: expected a string or an array of strings.");
        let e = EmailRequest::from_json(br#"{"attachments":[{"content":{"a":1}}]}"#).unwrap_err();
        assert_eq!(e.path, "attachments[0].content");
        assert!(e.to_string().contains("expected base64 text or an array of byte values"), "{e}");
        // Other type errors keep serde's words, without its position.
        let e = EmailRequest::from_json(br#"{"subject":5}"#).unwrap_err();
        assert!(e.to_string().contains("expected a string") && !e.to_string().contains("line"), "{e}");
    }

    #[test]
    fn one_json_value_and_nothing_after_it() {
        let e = EmailRequest::from_json(br#"{"from":"a@x.test"} x"#).unwrap_err();
        assert!(matches!(e.rule, Rule::Shape(ref m) if m.contains("not valid JSON")), "{e}");
        let e = batch_from_json(br#"[{"from":"a@x.test"}]]"#).unwrap_err();
        assert!(matches!(e.rule, Rule::Shape(ref m) if m.contains("not valid JSON")), "{e}");
        assert!(EmailRequest::from_json(b"{\"from\":\"a@x.test\"}\n  ").is_ok(), "trailing white space is fine");
    }

    #[test]
    fn base64_is_decoded_while_parsing_and_refused_unread_when_too_large() {
        let r = EmailRequest::from_json(br#"{"attachments":[{"content":"aGVs\nbG8="}]}"#).unwrap();
        assert_eq!(r.attachments.unwrap()[0].content, Some(AttachmentContent::Bytes(b"hello".to_vec())));
        let e = EmailRequest::from_json(br#"{"attachments":[{"content":"***"}]}"#).unwrap_err();
        assert_eq!((e.path.as_str(), &e.rule), ("attachments[0].content", &Rule::Base64));
        let big = format!(r#"{{"attachments":[{{"content":"{}"}}]}}"#, "QUJD".repeat(100));
        let e = EmailRequest::from_json_limited(big.as_bytes(), 100).unwrap_err();
        assert_eq!((e.path.as_str(), &e.rule), ("attachments[0].content", &Rule::EmailTooLarge { max: 100, got: 300 }));
        assert!(EmailRequest::from_json_limited(big.as_bytes(), 300).is_ok());
        let bytes = format!(r#"{{"attachments":[{{"content":[{}]}}]}}"#, vec!["1"; 101].join(","));
        let e = EmailRequest::from_json_limited(bytes.as_bytes(), 100).unwrap_err();
        assert!(matches!(e.rule, Rule::EmailTooLarge { max: 100, .. }), "{e:?}");
        // The limit holds only while its parse runs.
        assert!(EmailRequest::from_json(big.as_bytes()).is_ok());
    }
}
