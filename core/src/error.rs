//! Typed errors whose names and HTTP statuses follow the hosted service's catalogue.
//!
//! Invariant: every error a caller can cause names the field path (`to[3]`,
//! `emails[7].tags[0].name`) and the rule it broke; every error maps to exactly one
//! `{statusCode, name, message}` body.

use crate::address::AddressError;
use crate::lifecycle::TransitionError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How many characters of a value a client sent an error quotes.
pub const QUOTED_CHARS: usize = 100;

/// `value` quoted as a refusal shows it: in double quotes, escaped, at most
/// [`QUOTED_CHARS`] characters of it (then `…`). Why: the value is the client's, and an answer
/// (and the request log that keeps it) should not grow with what was sent.
pub fn quoted(value: &str) -> String {
    let shown: String = value.chars().take(QUOTED_CHARS).collect();
    if shown.len() < value.len() { format!("{shown:?}…") } else { format!("{shown:?}") }
}

/// The catalogue's error names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorName {
    /// A field breaks a rule (422; 403 for a forbidden sender).
    ValidationError,
    /// A required field is missing (422).
    MissingRequiredField,
    /// An attachment has no usable content (422).
    InvalidAttachment,
    /// A parameter is malformed, such as an id that is not a UUID (422).
    InvalidParameter,
    /// A domain's region is not one the hosted service names (422).
    InvalidRegion,
    /// The idempotency key is not 1 to 256 characters (400).
    InvalidIdempotencyKey,
    /// The idempotency key was used with another payload (409).
    InvalidIdempotentRequest,
    /// The idempotency key's first request is still running (409).
    ConcurrentIdempotentRequests,
    /// No such thing (404).
    NotFound,
    /// Something failed on the server's side (500).
    ApplicationError,
}

impl ErrorName {
    /// The HTTP status the hosted service answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorName::ValidationError
            | ErrorName::MissingRequiredField
            | ErrorName::InvalidAttachment
            | ErrorName::InvalidParameter
            | ErrorName::InvalidRegion => 422,
            ErrorName::InvalidIdempotencyKey => 400,
            ErrorName::InvalidIdempotentRequest | ErrorName::ConcurrentIdempotentRequests => 409,
            ErrorName::NotFound => 404,
            ErrorName::ApplicationError => 500,
        }
    }

    /// The wire name (`validation_error`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorName::ValidationError => "validation_error",
            ErrorName::MissingRequiredField => "missing_required_field",
            ErrorName::InvalidAttachment => "invalid_attachment",
            ErrorName::InvalidParameter => "invalid_parameter",
            ErrorName::InvalidRegion => "invalid_region",
            ErrorName::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorName::InvalidIdempotentRequest => "invalid_idempotent_request",
            ErrorName::ConcurrentIdempotentRequests => "concurrent_idempotent_requests",
            ErrorName::NotFound => "not_found",
            ErrorName::ApplicationError => "application_error",
        }
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule a field broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The field is required and absent (or null).
    Required,
    /// The value has the wrong JSON type or shape.
    Shape(String),
    /// An address that does not parse.
    Address(AddressError),
    /// More items than allowed.
    TooMany {
        /// The most allowed.
        max: usize,
        /// How many were given.
        got: usize,
    },
    /// An array or object of a request body with more entries than any is read with
    /// ([`crate::json_entries`]).
    TooManyEntries {
        /// The most entries one array or object is read with.
        max: usize,
        /// How many it holds.
        got: usize,
    },
    /// A request body whose arrays and objects hold more entries in all than one is read with.
    TooManyValues {
        /// The most entries a body is read with.
        max: usize,
        /// How many it holds.
        got: usize,
    },
    /// Fewer items than allowed.
    TooFew {
        /// The fewest allowed.
        min: usize,
        /// How many were given.
        got: usize,
    },
    /// Longer than allowed (characters).
    TooLong {
        /// The most characters allowed.
        max: usize,
        /// How many were given.
        got: usize,
    },
    /// Empty where a value is needed.
    Empty,
    /// Only ASCII letters, digits, `_` and `-`.
    TagCharset(char),
    /// A header name with characters outside printable ASCII or with `:`.
    HeaderName,
    /// A header value with CR or LF.
    HeaderLineBreak,
    /// A header value with a control character other than tab.
    ControlCharacter(char),
    /// `to`, `cc` and `bcc` together name more recipients than one email may have.
    TooManyRecipients {
        /// The most recipients one email may have.
        max: usize,
        /// How many `to`, `cc` and `bcc` name together.
        got: usize,
    },
    /// A header the engine writes itself.
    HeaderReserved(String),
    /// Neither `html` nor `text`.
    BodyRequired,
    /// An attachment with neither `content` nor `path`.
    AttachmentSource,
    /// An attachment with both `content` and `path`.
    AttachmentBothSources,
    /// `content` is not valid base64.
    Base64,
    /// A `path` attachment that could not be loaded.
    AttachmentLoad(String),
    /// The whole email is over the size limit.
    EmailTooLarge {
        /// The limit in bytes.
        max: usize,
        /// The email's size in bytes (at least).
        got: usize,
    },
    /// A `scheduled_at` that does not parse: the input, and what was not understood.
    Schedule {
        /// What was given.
        input: String,
        /// What was not understood.
        why: String,
    },
    /// A scheduled time that is not in the future.
    SchedulePast,
    /// A scheduled time too far ahead.
    ScheduleTooFar {
        /// How many days ahead are allowed.
        max_days: u32,
    },
    /// A field this engine does not support (`what` reads as a plural: "hosted templates").
    Unsupported(&'static str),
    /// Not a valid id.
    InvalidId,
    /// Two fields that exclude each other.
    Exclusive(&'static str),
    /// Not an absolute `http` or `https` URL: why.
    Url(String),
    /// Not an event type a webhook can receive.
    EventType(String),
    /// Not a region the hosted service names.
    Region(String),
}

impl Rule {
    /// The catalogue name an error of this rule carries.
    pub fn error_name(&self) -> ErrorName {
        match self {
            Rule::Required => ErrorName::MissingRequiredField,
            Rule::AttachmentSource | Rule::AttachmentBothSources | Rule::Base64 | Rule::AttachmentLoad(_) => {
                ErrorName::InvalidAttachment
            }
            Rule::InvalidId | Rule::Exclusive(_) => ErrorName::InvalidParameter,
            Rule::Region(_) => ErrorName::InvalidRegion,
            _ => ErrorName::ValidationError,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Required => f.write_str("it is required"),
            Rule::Shape(s) => write!(f, "{s}"),
            Rule::Address(e) => write!(f, "{e}"),
            Rule::TooMany { max, got } => write!(f, "at most {max} allowed, got {got}"),
            Rule::TooManyEntries { max, got } => {
                write!(f, "a list or object is read with at most {max} entries, got {got}")
            }
            Rule::TooManyValues { max, got } => {
                write!(f, "the lists and objects of a body are read with at most {max} entries in all, got {got}")
            }
            Rule::TooFew { min, got } => write!(f, "at least {min} needed, got {got}"),
            Rule::TooLong { max, got } => write!(f, "at most {max} characters, got {got}"),
            Rule::Empty => f.write_str("it must not be empty"),
            Rule::TagCharset(c) => {
                write!(f, "only ASCII letters, digits, underscores and dashes are allowed, got {c:?}")
            }
            Rule::HeaderName => f.write_str("a header name is printable ASCII without `:`"),
            Rule::HeaderLineBreak => f.write_str("header values must not contain CR or LF"),
            Rule::ControlCharacter(c) => write!(f, "header values must not contain control characters, got {c:?}"),
            Rule::TooManyRecipients { max, got } => {
                write!(f, "`to`, `cc` and `bcc` together may name at most {max} recipients, got {got}")
            }
            Rule::HeaderReserved(h) => write!(f, "the `{h}` header is set by mailroom and cannot be overridden"),
            Rule::BodyRequired => f.write_str("at least one of `html` or `text` is required"),
            Rule::AttachmentSource => f.write_str("Attachment must have either a `content` or `path`."),
            Rule::AttachmentBothSources => f.write_str("Attachment must have either a `content` or `path`, not both."),
            Rule::Base64 => f.write_str("`content` is not valid base64"),
            Rule::AttachmentLoad(why) => write!(f, "`path` could not be loaded: {why}"),
            Rule::EmailTooLarge { max, got } => {
                write!(f, "the email is {got} bytes; the limit is {max} bytes including attachments")
            }
            Rule::Schedule { input, why } => write!(
                f,
                "{} is not a time mailroom understands ({why}); use ISO 8601 such as \
                 `2024-08-05T11:52:01.858Z` or a phrase such as `in 1 hour` or `tomorrow at 9am ET`",
                quoted(input)
            ),
            Rule::SchedulePast => f.write_str("the scheduled time must be in the future"),
            Rule::ScheduleTooFar { max_days } => {
                write!(f, "the scheduled time must be at most {max_days} days ahead")
            }
            Rule::Unsupported(what) => write!(f, "{what} are not supported"),
            Rule::Url(why) => write!(f, "an absolute http or https URL is required: {why}"),
            Rule::EventType(t) => write!(f, "{} is not an event type a webhook can receive", quoted(t)),
            Rule::InvalidId => f.write_str("must be a valid UUID"),
            Rule::Region(r) => {
                write!(f, "{r:?} is not a region; use one of us-east-1, eu-west-1, sa-east-1, ap-northeast-1")
            }
            Rule::Exclusive(other) => write!(f, "cannot be used together with `{other}`"),
        }
    }
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where: `to[3]`, `emails[7].tags[0].name`.
    pub path: String,
    /// What it broke.
    pub rule: Rule,
}

impl FieldError {
    /// `rule`, broken at `path`.
    pub fn new(path: impl Into<String>, rule: Rule) -> Self {
        FieldError { path: path.into(), rule }
    }

    /// The same error one level down: `to[0]` under `emails[3]` is `emails[3].to[0]`.
    pub fn under(mut self, prefix: &str) -> Self {
        self.path = if self.path.is_empty() {
            prefix.to_string()
        } else if self.path.starts_with('[') {
            format!("{prefix}{}", self.path)
        } else {
            format!("{prefix}.{}", self.path)
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Rule::Required => write!(f, "Missing `{}` field.", self.path),
            Rule::AttachmentSource | Rule::AttachmentBothSources => {
                write!(f, "{} (`{}`)", self.rule, self.path)
            }
            Rule::Address(e) => write!(
                f,
                "Invalid `{}` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format: {e}.",
                self.path
            ),
            rule => write!(f, "Invalid `{}` field: {rule}.", self.path),
        }
    }
}

impl std::error::Error for FieldError {}

/// A storage failure. Storage never half-applies an operation: when this is returned,
/// nothing of the operation was committed (unless the variant says otherwise).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The backend failed (I/O, corruption, a full disk).
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// A stored record does not decode.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The operation would break the email lifecycle; nothing was written.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A keyed insert found its key already completed by a twin whose in-flight marker had
    /// lapsed; nothing was written.
    #[error("the idempotency key was completed by another request")]
    IdempotencyConflict,
    /// A double injected a failure (tests only).
    #[error("injected failure at call {0}")]
    Injected(u64),
}

/// Everything the engine can answer with instead of a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// One or more invalid fields. For a strict batch, every invalid item is listed.
    #[error("{}", join(.0))]
    Invalid(Vec<FieldError>),
    /// The idempotency key is not 1 to 256 characters.
    #[error("The key must be between 1-256 chars.")]
    InvalidIdempotencyKey,
    /// The key was used with another payload within 24 hours.
    #[error(
        "This idempotency key has already been used on a request with a different payload. Retrying this request is useless without changing the idempotency key or payload."
    )]
    InvalidIdempotentRequest,
    /// The key's first request is still being processed.
    #[error("Same idempotency key used while original request is still in progress. Try the request again later.")]
    ConcurrentIdempotentRequests,
    /// No such email (in this account).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for (`Email`, `API key`, …).
        what: &'static str,
    },
    /// The email is not in a state that allows this operation.
    #[error("{0}")]
    Transition(TransitionError),
    /// Only a `scheduled` email can be rescheduled or canceled.
    #[error("This email cannot be {action}: its last event is `{}`; only scheduled emails can be rescheduled or canceled.", .last_event.map_or("(none)", crate::lifecycle::EventKind::as_str))]
    NotScheduled {
        /// `rescheduled` or `canceled`.
        action: &'static str,
        /// Where the email is instead.
        last_event: Option<crate::lifecycle::EventKind>,
    },
    /// The caller may not do this: a key limited to one domain sending from another, or a
    /// change to a key the server's configuration manages. 403 `validation_error`, as the
    /// hosted service answers a sender it does not allow.
    #[error("{0}")]
    Forbidden(String),
    /// Storage failed; nothing was acknowledged.
    #[error(transparent)]
    Storage(StorageError),
}

fn join(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Transition(t) => Error::Transition(t),
            StorageError::IdempotencyConflict => Error::ConcurrentIdempotentRequests,
            other => Error::Storage(other),
        }
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Error::Invalid(vec![e])
    }
}

impl Error {
    /// The catalogue name of the answer.
    pub fn name(&self) -> ErrorName {
        match self {
            Error::Invalid(errors) => {
                let first = errors.first().map_or(ErrorName::ValidationError, |e| e.rule.error_name());
                // One name for the whole answer: the shared one, or the general one.
                if errors.iter().all(|e| e.rule.error_name() == first) { first } else { ErrorName::ValidationError }
            }
            Error::InvalidIdempotencyKey => ErrorName::InvalidIdempotencyKey,
            Error::InvalidIdempotentRequest => ErrorName::InvalidIdempotentRequest,
            Error::ConcurrentIdempotentRequests => ErrorName::ConcurrentIdempotentRequests,
            Error::NotFound { .. } => ErrorName::NotFound,
            Error::Transition(_) | Error::NotScheduled { .. } | Error::Forbidden(_) => ErrorName::ValidationError,
            Error::Storage(_) => ErrorName::ApplicationError,
        }
    }

    /// The HTTP status of the answer: the name's, except where the catalogue gives the same
    /// name another status (403 for a forbidden sender).
    pub fn status(&self) -> u16 {
        match self {
            Error::Forbidden(_) => 403,
            _ => self.name().status(),
        }
    }

    /// The wire error body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { status_code: self.status(), name: self.name(), message: self.to_string() }
    }

    /// The field errors, if this is a validation failure.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            Error::Invalid(e) => e,
            _ => &[],
        }
    }
}

/// `{"statusCode": 422, "name": "validation_error", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "statusCode")]
    /// The HTTP status.
    pub status_code: u16,
    /// The catalogue name.
    pub name: ErrorName,
    /// What went wrong, naming the field and the rule.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_value_is_cut_to_its_first_characters() {
        assert_eq!(quoted("mars"), "\"mars\"");
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        let long = "é".repeat(100_000);
        assert_eq!(quoted(&long), format!("{:?}…", "é".repeat(QUOTED_CHARS)));
        assert_eq!(quoted(&"x".repeat(QUOTED_CHARS)), format!("{:?}", "x".repeat(QUOTED_CHARS)), "no mark when whole");
    }
}
