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
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttachmentContent {
    Base64(String),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<AttachmentContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// A location the host's [`crate::ports::AttachmentLoader`] resolves at acceptance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "contentType")]
    pub content_type: Option<String>,
    /// Makes the attachment inline, referenced from the html as `cid:<content_id>`.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "inline_content_id", alias = "contentId")]
    pub content_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

/// One email as the wire carries it (`POST /emails`, or one item of a batch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bcc: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "replyTo")]
    pub reply_to: Option<OneOrMany>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Custom headers, in the order given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<AttachmentRequest>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<TagRequest>>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "scheduledAt")]
    pub scheduled_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "topicId")]
    pub topic_id: Option<String>,
    /// Hosted templates; not supported by this engine (refused with a typed error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<serde_json::Value>,
}

impl EmailRequest {
    /// Parses one email from JSON, naming the field of any type error.
    pub fn from_json(json: &[u8]) -> Result<EmailRequest, FieldError> {
        parse_json(json)
    }
}

/// Parses a batch (a JSON array of email objects), naming `emails[i].field` on type errors.
pub fn batch_from_json(json: &[u8]) -> Result<Vec<EmailRequest>, FieldError> {
    parse_json::<Vec<EmailRequest>>(json).map_err(|mut e| {
        if e.path.starts_with('[') {
            e.path = format!("emails{}", e.path);
        } else if e.path.is_empty() {
            e.path = "emails".into();
        }
        e
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, FieldError> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        let msg = if inner.is_syntax() || inner.is_eof() {
            format!("the body is not valid JSON ({inner})")
        } else {
            // serde's own words name the expected type; drop its line/column suffix.
            let text = inner.to_string();
            match text.rfind(" at line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        };
        FieldError::new(path, Rule::Shape(msg))
    })
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
}
