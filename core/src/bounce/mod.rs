//! SMTP replies and their classification into the hosted service's bounce types.
//!
//! Invariant: classification is total. Every reply is `Permanent`, `Transient` or
//! `Undetermined`, and the raw reply travels with the result, never lost.

use serde::{Deserialize, Serialize};
use std::fmt;

pub mod codes;
pub mod reason;
pub use reason::{Basis, Reason, Stage, Verdict, judge};

/// An RFC 3463 enhanced status code, `class.subject.detail`. Serialised as its text, `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// What the status is about: 1 addressing, 2 mailbox, 3 mail system, 4 network and routing, 5 delivery protocol, 6 content, 7 security and policy.
    pub subject: u16,
    /// The detail within the subject (`5.1.1`: the mailbox does not exist).
    pub detail: u16,
}

impl EnhancedStatus {
    /// Parses `5.1.1` (class 2, 4 or 5; subject and detail up to three digits).
    pub fn parse(s: &str) -> Option<EnhancedStatus> {
        let mut it = s.split('.');
        let class: u8 = it.next()?.parse().ok()?;
        let sub = it.next()?;
        let det = it.next()?;
        if it.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        let digits = |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(sub) || !digits(det) {
            return None;
        }
        Some(EnhancedStatus { class, subject: sub.parse().ok()?, detail: det.parse().ok()? })
    }
}

impl Serialize for EnhancedStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EnhancedStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EnhancedStatus::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an enhanced status code")))
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A server's reply, kept exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpReply {
    /// The three-digit reply code.
    pub code: u16,
    /// The RFC 3463 status at the start of the text, when the server gave one.
    pub enhanced: Option<EnhancedStatus>,
    /// The rest of the reply, as the server wrote it.
    pub text: String,
}

impl SmtpReply {
    /// Parses `550 5.1.1 User unknown` (the enhanced code is optional).
    pub fn parse(line: &str) -> Option<SmtpReply> {
        let line = line.trim();
        let code_str = line.get(..3)?;
        let code: u16 = code_str.parse().ok()?;
        if !(200..600).contains(&code) {
            return None;
        }
        let rest = line.get(3..).unwrap_or("").trim_start_matches(['-', ' ']);
        let (enhanced, text) = match rest.split_once(' ') {
            Some((first, tail)) => match EnhancedStatus::parse(first) {
                Some(e) => (Some(e), tail.to_string()),
                None => (None, rest.to_string()),
            },
            None => match EnhancedStatus::parse(rest) {
                Some(e) => (Some(e), String::new()),
                None => (None, rest.to_string()),
            },
        };
        Some(SmtpReply { code, enhanced, text })
    }

    /// A reply from its parts (`enhanced` may be empty or not a status: then there is none).
    pub fn new(code: u16, enhanced: &str, text: &str) -> SmtpReply {
        SmtpReply { code, enhanced: EnhancedStatus::parse(enhanced), text: text.to_string() }
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

/// The hosted service's bounce type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BounceType {
    /// The address or domain does not take mail, for good.
    Permanent,
    /// It may succeed later (a full mailbox, a policy refusal, a delay past the retry window).
    Transient,
    /// The answer could not be read as either.
    Undetermined,
}

/// The hosted service's bounce subtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BounceSubtype {
    /// No more specific reason.
    General,
    /// The recipient does not exist (as reported by the provider).
    NoEmail,
    /// The recipient's mailbox is full.
    MailboxFull,
    /// The message is larger than the recipient's server takes.
    MessageTooLarge,
    /// The content was refused (spam, policy).
    ContentRejected,
    /// An attachment was refused.
    AttachmentRejected,
    /// No reason could be read.
    Undetermined,
}

/// The bounce detail an event carries (the webhook's `bounce` object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceInfo {
    /// Permanent, Transient or Undetermined.
    #[serde(rename = "type")]
    pub kind: BounceType,
    /// The reason within the type.
    #[serde(rename = "subType")]
    pub subtype: BounceSubtype,
    /// A sentence for people.
    pub message: String,
    /// The server's own words, exactly.
    #[serde(rename = "diagnosticCode", default)]
    pub diagnostic: Vec<String>,
}

/// The class of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    /// Permanent, Transient or Undetermined.
    pub kind: BounceType,
    /// The reason within the type.
    pub subtype: BounceSubtype,
    /// The address itself is unusable: only these feed the suppression list.
    pub suppress: bool,
    /// The finer reason.
    pub reason: Reason,
}

/// Classifies a reply to `RCPT TO` (see [`classify_at`]).
pub fn classify(reply: &SmtpReply) -> Classification {
    classify_at(reply, Stage::Recipient)
}

/// Classifies one reply given at `stage`. Total: every input gets a class. The reading is
/// the one bounce reports get ([`reason::judge`]): the words first, then the enhanced status,
/// then the code; see [`reason::verdict`] for the policy.
///
/// A reply that is no refusal (2xx, 3xx) is Undetermined. An enhanced status whose class
/// disagrees with the reply code's (`450 5.1.1`) is ignored: RFC 3463 §3.1 requires them to
/// agree, and the reply code is what the server's SMTP state machine acts on; such a
/// self-contradicting reply is no evidence that the address is gone, so it never suppresses.
pub fn classify_at(reply: &SmtpReply, stage: Stage) -> Classification {
    let class = reply.code / 100;
    if !matches!(class, 4 | 5) {
        return Classification {
            kind: BounceType::Undetermined,
            subtype: BounceSubtype::Undetermined,
            suppress: false,
            reason: Reason::Undefined,
        };
    }
    let agrees = reply.enhanced.is_none_or(|e| u16::from(e.class) == class);
    let v = judge(&reply.text, reply.enhanced.filter(|_| agrees), Some(reply.code), stage);
    Classification { kind: v.kind, subtype: v.subtype, suppress: v.suppress && agrees, reason: v.reason }
}

/// The event detail for a recipient rejected at `RCPT TO`.
pub fn bounce_info(reply: &SmtpReply) -> (BounceInfo, Classification) {
    bounce_info_at(reply, Stage::Recipient)
}

/// The event detail for a recipient whose refusal answered `stage`.
pub fn bounce_info_at(reply: &SmtpReply, stage: Stage) -> (BounceInfo, Classification) {
    let class = classify_at(reply, stage);
    let message = match class.kind {
        BounceType::Permanent => "The recipient's mail server permanently rejected the email.",
        BounceType::Transient => "The recipient's mail server temporarily rejected the email.",
        BounceType::Undetermined => "The recipient's mail server answered in a way that could not be classified.",
    };
    (
        BounceInfo {
            kind: class.kind,
            subtype: class.subtype,
            message: message.to_string(),
            diagnostic: vec![format!("smtp; {reply}")],
        },
        class,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replies_parse_with_and_without_enhanced_codes() {
        let r = SmtpReply::parse("550 5.1.1 Recipient address rejected: User unknown").unwrap();
        assert_eq!((r.code, r.enhanced.unwrap().to_string().as_str()), (550, "5.1.1"));
        assert_eq!(r.text, "Recipient address rejected: User unknown");
        let r = SmtpReply::parse("451 Try again later").unwrap();
        assert_eq!((r.code, r.enhanced, r.text.as_str()), (451, None, "Try again later"));
        assert!(SmtpReply::parse("xyz").is_none());
        assert!(SmtpReply::parse("999 nope").is_none());
    }

    #[test]
    fn classification_is_total_and_keeps_hard_bounces_apart() {
        let cases = [
            ("550 5.1.1 User unknown", BounceType::Permanent, BounceSubtype::General, true),
            ("452 4.2.2 Mailbox full", BounceType::Transient, BounceSubtype::MailboxFull, false),
            ("552 5.3.4 Message too big", BounceType::Transient, BounceSubtype::MessageTooLarge, false),
            ("554 5.7.1 Blocked by policy", BounceType::Transient, BounceSubtype::General, false),
            ("554 5.6.0 Content rejected", BounceType::Transient, BounceSubtype::ContentRejected, false),
            ("451 4.3.0 Try later", BounceType::Transient, BounceSubtype::General, false),
            ("550 Mailbox unavailable", BounceType::Permanent, BounceSubtype::General, true),
            ("250 2.0.0 Ok", BounceType::Undetermined, BounceSubtype::Undetermined, false),
            // A class that contradicts the reply code is ignored (found by the fuzzer).
            ("280 5.2.1 odd", BounceType::Undetermined, BounceSubtype::Undetermined, false),
            ("450 5.1.1 odd", BounceType::Transient, BounceSubtype::General, false),
            ("550 4.2.2 odd", BounceType::Permanent, BounceSubtype::General, false),
        ];
        for (line, kind, sub, suppress) in cases {
            let c = classify(&SmtpReply::parse(line).unwrap());
            assert_eq!((c.kind, c.subtype, c.suppress), (kind, sub, suppress), "{line}");
        }
        // Every possible code gets a class (no panic, no gap).
        for code in 200..600 {
            let _ = classify(&SmtpReply { code, enhanced: None, text: String::new() });
        }
    }
}
