//! Reading bounce messages: RFC 3464 DSNs, RFC 5965 feedback reports (complaints), and the
//! free-text wording of MTAs that send neither, into per-recipient bounces classified in the
//! hosted service's terms.
//!
//! Invariants: the parser is total (any bytes give an answer, never a panic); auto-replies
//! (RFC 3834) and success DSNs give no bounces; every bounce keeps its diagnostic text; the
//! classification is one function of (status, reply code, text), shared with SMTP replies.

pub use crate::bounce::reason::Reason;
use crate::bounce::reason::{
    Basis, Context, Head, Rules, Stage, find_code, find_status, inferred_status, judge_with, verdict,
};
use crate::bounce::{BounceSubtype, BounceType, EnhancedStatus};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::LazyLock;

mod dsn;
mod family;
mod mime;
pub(crate) use mime::parts_within;
mod ses;
mod text;

use dsn::{DsnBlock, dsn_blocks, header_in, headers_in, last_report_declaration};
pub use family::Family;
use ses::ses_notification;
use text::{
    addresses, block_for, clean_address, inline_original_at, is_failure_subject, is_text_complaint,
    is_vacation_subject, looks_like_failure_lower, says_still_trying, strip_tags,
};

/// Input above this size is cut before parsing: bounces carry the original message, and
/// nothing needed to classify one lies past the first megabyte.
const MAX_INPUT: usize = 1 << 20;

/// A report is read for at most this many recipients. Each one costs a search of the human
/// account for its lines, so a hostile report (anyone may mail the bounce address) listing
/// ten thousand recipients cost 7–10 s of CPU. A real one answers an email of ours, which
/// has at most 50 addresses in each of to, cc and bcc.
const MAX_RECIPIENTS: usize = 200;

/// A feedback report's type as kept: its first word, lower-cased, and at most this many bytes.
/// The registered types are short tokens (`auth-failure` is the longest); the sender of a
/// report chooses the field, and a 300 kB one was carried whole into every reading and
/// printed by `classify`. A type cut short is no registered type, so it still reads as a
/// recipient's complaint, as an unknown type does.
const MAX_FEEDBACK_TYPE: usize = 64;

/// A feedback type from its field's value (see [`MAX_FEEDBACK_TYPE`]); `None` when empty.
fn feedback_token(value: &str) -> Option<String> {
    let word = value.split_whitespace().next()?;
    let mut end = word.len().min(MAX_FEEDBACK_TYPE);
    while !word.is_char_boundary(end) {
        end -= 1;
    }
    Some(word[..end].to_ascii_lowercase())
}

/// One failed recipient read from a bounce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BounceRecord {
    /// The failed address; empty when the notice names the recipient without one (Exchange
    /// 5.5's display names: see `family::read`). Such failures are one record however many.
    pub recipient: String,
    /// The address the sender gave, when the report names it apart from `recipient`: a DSN's
    /// `Original-Recipient` where the failed address is the target of an alias or a
    /// forward. It is the address the email was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_recipient: Option<String>,
    /// The enhanced status (`5.1.1`), as given or inferred from the text.
    pub status: String,
    /// The SMTP reply code, when the report gives one.
    pub reply_code: Option<u16>,
    /// Permanent, Transient or Undetermined.
    #[serde(rename = "type")]
    pub kind: BounceType,
    /// The reason within the type.
    pub subtype: BounceSubtype,
    /// The finer reason.
    pub reason: Reason,
    /// The server's words.
    pub diagnostic: String,
    /// The address itself is unusable: the email's sender suppresses it ([`crate::bounce::reason::verdict`]).
    pub suppress: bool,
    /// The SMTP step the server refused at, where the report says.
    pub stage: Stage,
    /// What decided the reason.
    pub basis: Basis,
    /// `status` was inferred from the reason: the report gave none.
    pub status_inferred: bool,
    /// The reporting server is still trying (`Action: delayed`): a warning, not a failure.
    pub delayed: bool,
}

/// What a message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A delivery failure (DSN or MTA text).
    Bounce,
    /// A complaint (an ARF feedback report).
    Complaint,
    /// An auto-reply (vacation notice and the like).
    AutoReply,
    /// A success report (DSN `delivered`/`relayed`).
    Delivered,
    /// A delay notice (DSN `Action: delayed`, "this is a warning only"): the reporting server
    /// is still trying. Its recipients are in [`Parsed::bounces`] with `delayed` set.
    Delayed,
    /// Nothing of the above.
    NotBounce,
}

/// What links a bounce to the email it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The local part of a VERP return path (`bounces+<email id>@…`) found in the bounce.
    pub verp: Option<String>,
    /// The Message-ID of the original message, when the bounce quotes it.
    pub original_message_id: Option<String>,
}

/// The reading of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Parsed {
    /// What the message was.
    pub kind: MessageKind,
    /// One record per failed (or, with `delayed`, delayed) recipient.
    pub bounces: Vec<BounceRecord>,
    /// Whether it is a complaint.
    pub complaint: bool,
    /// The recipients a complaint is about (a feedback report may name several), lower-cased;
    /// empty when it names none.
    pub complainants: Vec<String>,
    /// A feedback report's type, lower-cased, when it gives one: ARF's `Feedback-Type` (RFC
    /// 5965 §3.1: `abuse`, `fraud`, `virus`, `other`, `not-spam`, RFC 6591's
    /// `auth-failure`) or an SES notification's `complaintFeedbackType`. Whether the report is
    /// a recipient's complaint at all turns on it: see [`Parsed::is_recipient_complaint`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_type: Option<String>,
    /// What links it to the email it answers.
    pub links: Links,
    /// The family of MTA that wrote it, as its fingerprints tell.
    #[serde(default)]
    pub reporter: Family,
}

impl Parsed {
    /// A reading with no bounces and no complaint.
    fn empty(kind: MessageKind, links: Links) -> Parsed {
        Parsed {
            kind,
            bounces: vec![],
            complaint: false,
            complainants: vec![],
            feedback_type: None,
            links,
            reporter: Family::Unknown,
        }
    }

    /// Whether this is a recipient's complaint, which marks the email `complained` and
    /// suppresses the recipient: a feedback report of any type but the two that carry no
    /// complaint. `auth-failure` (RFC 6591) reports that the message failed SPF, DKIM or DMARC
    /// at the receiver: it goes to the sending domain's owner whatever the recipient thought
    /// of the message. `not-spam` (RFC 5965's registry) says the reporter judged the message
    /// *not* to be spam. A report that names no type, or a type this list does not know, is
    /// a complaint, as every feedback loop's reports were before types existed.
    pub fn is_recipient_complaint(&self) -> bool {
        self.complaint && !matches!(self.feedback_type.as_deref(), Some("auth-failure" | "not-spam"))
    }
}

/// Reads one message. Total: any input gives an answer.
pub fn parse(raw: &[u8]) -> Parsed {
    parse_with(raw, Rules::standard())
}

/// [`parse`] with other reason rules (a cross-validation's, built without some words).
pub fn parse_with(raw: &[u8], rules: &Rules) -> Parsed {
    parse_guarded(raw, rules, None)
}

/// [`parse_with`] with `family`'s own reader left out: a cross-validation's, scoring the
/// generic reader on a family whose reader was written from its mail.
pub fn parse_without_reader(raw: &[u8], rules: &Rules, family: Family) -> Parsed {
    parse_guarded(raw, rules, Some(family))
}

fn parse_guarded(raw: &[u8], rules: &Rules, without: Option<Family>) -> Parsed {
    // The MIME layer is our own and total, but the header decoders are mail-parser's, and
    // mail-parser 0.11's tree parser once panicked on a malformed message (found by the
    // `bounce` fuzz target). A message we cannot read is not a bounce we can act on; it must
    // never take the process down.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse_inner(raw, rules, without)))
        .unwrap_or_else(|_| Parsed::empty(MessageKind::NotBounce, Links::default()))
}

fn parse_inner(raw: &[u8], rules: &Rules, without: Option<Family>) -> Parsed {
    let raw = &raw[..raw.len().min(MAX_INPUT)];
    let normalized = normalize_newlines(raw);
    let (top, leaves) = mime::read(&normalized);
    let header = |name: &str| top.get(name);
    let subject = top.text("Subject").unwrap_or_default();
    let from = top.address("From").unwrap_or_default();
    let to = top.address("To").unwrap_or_default();

    let mut dsn_text = String::new();
    let mut feedback = None::<String>;
    let mut human = String::new();
    let mut original = String::new();
    let last_report = last_report_declaration(&normalized);
    for (i, part) in leaves.iter().enumerate() {
        let ct = part.content_type.mime.as_str();
        // The returned original (an enclosed message, or its headers alone) says nothing
        // about the failure beyond its headers; the rest of it is read only when a report
        // part follows it (a relay that forwards another bounce carries the report inside).
        let quoted = match part.kind {
            mime::Kind::Message => Some(part.decoded()),
            _ if ct == "text/rfc822-headers" || ct == "message/rfc822-headers" => {
                Some(Cow::Owned(part.text().into_bytes()))
            }
            _ => None,
        };
        if let Some(quoted) = quoted {
            // (Blank lines before the enclosed headers are skipped, as mail readers do.)
            let quoted = quoted.trim_ascii_start();
            if original.is_empty() && last_report.is_none_or(|r| r < part.offset) {
                // Only its headers are kept, so only they are made text: the body of a
                // returned original can be most of the bounce.
                original.push_str(&utf8(mime::split(quoted).0));
                break;
            }
            original.push_str(&utf8(quoted));
            continue;
        }
        match part.kind {
            _ if ct.ends_with("/delivery-status") || ct == "message/global-delivery-status" => {
                dsn_text.push_str(&utf8(&part.decoded()));
                dsn_text.push('\n');
            }
            _ if ct == "message/feedback-report" => {
                feedback = Some(utf8(&part.decoded()).into_owned());
            }
            mime::Kind::Text if original.is_empty() && (i == 0 || human.is_empty() || !ct.is_empty()) => {
                human.push_str(&part.text());
                human.push('\n');
            }
            mime::Kind::Html if human.trim().is_empty() && original.is_empty() => {
                human.push_str(&strip_tags(&part.text()))
            }
            _ => {}
        }
    }
    if human.is_empty() {
        // The first text part, wherever it is; else the multipart's preamble, where some
        // mailers write their account (Courier 0.40's delay notices); else an html part
        // stripped of its tags. Not the returned headers (`text/rfc822-headers` is a text
        // type): their words ("Content-Type: multipart/alternative") are no failure's.
        if let Some(t) =
            leaves.iter().find(|l| l.kind == mime::Kind::Text && l.content_type.mime != "text/rfc822-headers")
        {
            human = t.text();
        } else if let Some(preamble) = Some(mime::preamble(&normalized)).filter(|p| !p.trim_ascii().is_empty()) {
            human = utf8(preamble).into_owned();
        } else if let Some(t) = leaves.iter().find(|l| l.kind == mime::Kind::Text) {
            human = t.text();
        } else if let Some(h) = leaves.iter().find(|l| l.kind == mime::Kind::Html) {
            human = strip_tags(&h.text());
        }
    }
    // A broken MIME tree (a multipart whose boundary parameter fell off its folded header)
    // leaves no readable text part: read the raw body instead of reporting nothing.
    if human.trim().is_empty() && original.is_empty() && dsn_text.is_empty() {
        human = utf8(mime::split(&normalized).1).into_owned();
    }
    // A single-part bounce quotes the original inline: split it off.
    // Lower-cased once: every word test below reads this.
    let mut lower_human = human.to_ascii_lowercase();
    let cut = inline_original_at(&lower_human);
    let inline_original = human.split_off(cut);
    lower_human.truncate(cut);
    let reporter = family::identify(&top, &subject, &lower_human);
    let reader = Some(reporter).filter(|f| without != Some(*f));
    // (Every answer below names the reporter: the decision runs in a closure so that its
    // early returns need not each set it.)
    let mut parsed = (|| -> Parsed {
        original.push_str(&inline_original);
        // Lower-cased once for the quoted-header lookups and the forwarded-report search.
        let lower_original = original.to_ascii_lowercase();
        // A VERP return path is where the bounce was sent: its own To (or the delivery headers).
        let envelope_to = ["X-Original-To", "Delivered-To", "Envelope-To", "To"]
            .iter()
            .filter_map(|h| header(h))
            .collect::<Vec<_>>()
            .join("\n");
        let links = links(&envelope_to, &original, &lower_original, &human, &dsn_text);

        // Amazon SES notifications delivered by e-mail carry their verdict as JSON.
        if let Some(parsed) = ses_notification(&human, &links, rules) {
            return parsed;
        }

        // Apple Mail's "Unsubscribe" button mails the `List-Unsubscribe` mailto address a
        // note marked with this header, from the recipient who pressed it: an opt-out, which
        // is counted with complaints as ARF's `opt-out` feedback type is. The note quotes
        // nothing, so its sender is the one who asked.
        if header("X-Apple-Unsubscribe").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            let complainants = Some(from.to_ascii_lowercase()).filter(|f| f.contains('@')).into_iter().collect();
            return Parsed { complaint: true, complainants, ..Parsed::empty(MessageKind::Complaint, links) };
        }

        let report_type = top.content_type().report_type.unwrap_or_default();
        if feedback.is_some() || report_type == "feedback-report" || is_text_complaint(&subject, &lower_human) {
            // RFC 5965 §3.2: `Original-Rcpt-To` may repeat, one per recipient the report is
            // about; `Removal-Recipient` is the older drafts' name. Each address once, and no
            // more of them than a bounce may name (the report is the sender's word).
            let mut complainants = Vec::new();
            let mut feedback_type = None;
            if let Some(f) = feedback.as_deref() {
                let lower = f.to_ascii_lowercase();
                // (Its first word, lower-cased: "abuse", "auth-failure"; the field is one token.)
                feedback_type = header_in(f, &lower, "feedback-type").and_then(|t| feedback_token(&t));
                for name in ["original-rcpt-to", "removal-recipient"] {
                    for a in headers_in(f, &lower, name).map(|a| clean_address(&a)) {
                        if complainants.len() == MAX_RECIPIENTS {
                            break;
                        }
                        if !a.is_empty() && !complainants.contains(&a) {
                            complainants.push(a);
                        }
                    }
                    if !complainants.is_empty() {
                        break;
                    }
                }
            }
            if complainants.is_empty() {
                // Most feedback loops (AOL's, Yahoo's, Microsoft's) name no recipient in the
                // report; the enclosed original's `To` then names the one who complained,
                // when it names one address alone.
                if let Some(to) = header_in(&original, &lower_original, "to")
                    && let [one] = addresses(&to).as_slice()
                {
                    complainants.push(one.to_ascii_lowercase());
                }
            }
            return Parsed {
                complaint: true,
                complainants,
                feedback_type,
                ..Parsed::empty(MessageKind::Complaint, links)
            };
        }

        // RFC 3464 fields, from a delivery-status part or quoted in the text.
        let mut fields_source = dsn_text.as_str();
        if fields_source.is_empty() && lower_human.contains("final-recipient:") {
            fields_source = &human;
        }
        // A bounce that forwards another bounce (a relay returning what it got) carries the
        // report only inside the quoted message.
        if fields_source.is_empty() {
            // (Two searches in the lower-cased copy: a case-blind automaton read every byte of
            // the original at a fraction of the speed.)
            static FINAL: LazyLock<memchr::memmem::Finder<'static>> =
                LazyLock::new(|| memchr::memmem::Finder::new("final-recipient:"));
            static FAILED: LazyLock<memchr::memmem::Finder<'static>> =
                LazyLock::new(|| memchr::memmem::Finder::new("action: failed"));
            let lower = lower_original.as_bytes();
            let seen = [FINAL.find(lower).is_some(), FAILED.find(lower).is_some()];
            if seen == [true, true] {
                fields_source = &original;
            }
        }
        let blocks = dsn_blocks(fields_source);
        // A report whose every recipient went on is a success notice, whatever its text says
        // around the addresses (the free-text reader below would take "<a@b>: delivery via …"
        // for a failure).
        let silent = |b: &DsnBlock| b.action.is_none() && b.status.is_none();
        if blocks.iter().any(|b| !silent(b)) && blocks.iter().all(|b| b.succeeded() || silent(b)) {
            return Parsed::empty(MessageKind::Delivered, links);
        }

        let failure_subject = is_failure_subject(&subject);
        let failure_words = failure_subject || looks_like_failure_lower(&lower_human);
        let auto_reply = header("Auto-Submitted").is_some_and(|v| v.to_ascii_lowercase().starts_with("auto-replied"))
            || header("X-Autoreply").is_some()
            || header("X-Autorespond").is_some()
            || header("X-Autoresponse").is_some()
            // Exchange marks what a mailbox's own rules sent (its out-of-office reply among
            // them); its transport's reports carry neither mark.
            || header("X-MS-Exchange-Inbox-Rules-Loop").is_some()
            || header("X-MS-Exchange-Generated-Message-Source")
                .is_some_and(|v| crate::bounce::reason::contains_ascii_ci(&v, "mailbox rules agent"))
            || is_vacation_subject(&subject);
        // Some MTAs mark their bounces auto-replied too (RFC 3834 allows it); a failure subject
        // from a mailer daemon is a bounce all the same.
        let auto_reply = auto_reply && !(failure_subject || from.starts_with("mailer-daemon@"));
        // An auto-reply that says its own address is gone is that address's bounce (below).
        let says_gone =
            auto_reply && rules.names(&lower_human, |r| matches!(r, Reason::UserUnknown | Reason::HasMoved));
        if auto_reply && blocks.is_empty() && !failure_words && !says_gone {
            return Parsed::empty(MessageKind::AutoReply, links);
        }

        let mut bounces = Vec::new();
        // The whole-text fallback of the reason rules reads the start of the account only: the
        // reason sits near the top, and scanning every quoted line costs time for nothing.
        let head_end = (0..=lower_human.len().min(4000)).rev().find(|i| lower_human.is_char_boundary(*i)).unwrap_or(0);
        let lower_head = Head::new(&lower_human[..head_end]);
        let failed: Vec<&DsnBlock> = blocks
            .iter()
            .filter(|b| {
                // (`undeliverable`: postfix's address-verification answer for a bad address.)
                b.recipient.is_some()
                    && !b.succeeded()
                    && b.action.as_deref().is_none_or(|a| matches!(a, "failed" | "delayed" | "undeliverable"))
            })
            .take(MAX_RECIPIENTS)
            .collect();
        for b in &failed {
            let Some(rcpt) = b.recipient.clone() else { continue };
            // The human account often says at which step the server refused ("in reply to RCPT
            // TO command") where the report's Diagnostic-Code does not.
            let account = block_for(&human, &lower_human, &rcpt).unwrap_or_default();
            let mut diag = b.diagnostic.clone().unwrap_or_default();
            if diag.trim().is_empty() || diag.trim().eq_ignore_ascii_case("smtp;") {
                diag = account.clone();
            } else if let Some(whole) = text::whole_reply(&human, &diag) {
                // The report gave the first line of a longer reply; the transcript has it all.
                diag = whole;
            }
            let status = b.status.clone();
            let delayed = b.action.as_deref() == Some("delayed");
            let mut r = record(
                &rcpt,
                &Evidence {
                    status: status.as_deref(),
                    diag: &diag,
                    account: &account,
                    head: &lower_head,
                    rules,
                    delayed,
                    only_recipient: failed.len() == 1,
                    // (Else the words say the step: "in reply to RCPT TO command".)
                    stage: b.decided_locally().then_some(Stage::Local),
                },
            );
            r.original_recipient = b.original.clone().filter(|o| !o.eq_ignore_ascii_case(&rcpt));
            bounces.push(r);
        }

        // A family with a format of its own: its reader says which lines are whose. (Its
        // reader alone may list a failure without an address: see `family::read`.)
        let mut read_by_family = false;
        if bounces.is_empty()
            && !auto_reply
            && let Some(found) = reader.and_then(|f| family::read(f, &human, &from))
        {
            // (`family::read` keeps to MAX_RECIPIENTS itself.)
            let n = found.len();
            for f in &found {
                let e = Evidence {
                    status: f.status,
                    diag: &f.diagnostic,
                    account: "",
                    head: &lower_head,
                    rules,
                    delayed: false,
                    only_recipient: n == 1,
                    stage: f.stage,
                };
                bounces.push(record(&f.recipient, &e));
            }
            read_by_family = true;
        }

        if bounces.is_empty() {
            // Free text: failed recipients are the addresses the human-readable part names, less
            // the bounce's own parties and the MTA's mailboxes.
            let mut rcpts: Vec<String> = Vec::new();
            let listed: Vec<String> = header("X-Failed-Recipients")
                .map(|h| h.split(',').map(clean_address).filter(|a| a.contains('@')).take(MAX_RECIPIENTS).collect())
                .unwrap_or_default();
            // The MTA's own list of failures is read first, as long as the account mentions
            // one of them. A list that names no one the account mentions, beside an account
            // that names others on its failure lines, is about someone else (a notice whose
            // header was rewritten on its way, or anonymised apart from its text): the
            // account's addresses are read then, and the list only when they are none.
            let contact = |a: &String| {
                matches!(
                    a.split('@').next(),
                    Some("support" | "help" | "helpdesk" | "webmaster" | "hostmaster" | "admin")
                )
            };
            // (The first few listed are enough to tell: each search reads the whole account,
            // and a hostile list of 200 unmentioned names would read 1 MB 200 times.)
            // (`clean_address` gives them lower-cased, as `lower_human` is.)
            if listed.iter().take(8).any(|a| lower_human.contains(a.as_str())) {
                rcpts.clone_from(&listed);
            }
            if rcpts.is_empty() {
                // Addresses on a quoted sender line ("MAIL FROM:", "From:") are the sender's; an
                // envelope line ("RCPT TO:") names the recipient outright and wins over the rest.
                let mut named = Vec::new();
                let mut enveloped = Vec::new();
                let mut addressed = Vec::new();
                // (Only lines with an address are read, from the lower-cased copy: ASCII
                // lower-casing keeps every line where it was.)
                for line in lower_human.lines().filter(|l| l.contains('@')) {
                    // (Quote marks and list bullets before a quoted header: `> From:`, `* From:`.)
                    let quoted = line.trim_start().trim_start_matches(['>', ' ', '\t', '*']);
                    const NOT_RECIPIENTS: &[&str] = &[
                        "from:",
                        "mail from:",
                        "sender:",
                        "reply-to:",
                        "return-path:",
                        "message-id:",
                        "in-reply-to:",
                        "references:",
                    ];
                    if NOT_RECIPIENTS.iter().any(|p| quoted.starts_with(p)) {
                        continue;
                    }
                    // "x@a (expanded from y@b)": the alias it came from did not fail.
                    let lower_line = line.trim_start();
                    let line = match lower_line.find("generated from").or_else(|| lower_line.find("expanded from")) {
                        Some(i) => &lower_line[..i],
                        None => lower_line,
                    };
                    // (A session transcript's ">>> RCPT TO:" lists every recipient tried, not only
                    // the failed one: it counts as a mention.)
                    let envelope_line = line.starts_with("rcpt to:") && !line.starts_with('>');
                    // A quoted `To:` line names where the original was addressed (a list, an
                    // alias), which another line may name as the failure: it counts only when
                    // no other line names anyone.
                    let target = if envelope_line {
                        &mut enveloped
                    } else if quoted.starts_with("to:") {
                        &mut addressed
                    } else {
                        &mut named
                    };
                    // An address said to be what mail came *from* ("not accepting mail from
                    // list@example.com:") is the sender's, wherever the line puts it.
                    target.extend(
                        text::addresses_at(line)
                            .filter(|(at, _)| !text::follows_from(line, *at))
                            .map(|(_, a)| a.to_string()),
                    );
                }
                let candidates = [enveloped, named, addressed].into_iter().find(|c| !c.is_empty()).unwrap_or_default();
                for a in candidates {
                    let l = a.to_ascii_lowercase();
                    // An X.400 address's SMTP element (`c=US;…;dda:SMTP=user@example.com`).
                    let l = match l.strip_prefix("smtp=") {
                        Some(element) => element.to_string(),
                        None => l,
                    };
                    let local = l.split('@').next().unwrap_or_default();
                    let mtaish = matches!(local, "mailer-daemon" | "postmaster" | "root" | "mailerdaemon" | "abuse")
                        || local.starts_with("mailer-daemon")
                        || local.starts_with("bounce")
                        || local.starts_with("noreply")
                        || local.starts_with("no-reply");
                    // Message-IDs and encoded return paths look like addresses but are not.
                    let id_like = (local.len() >= 16
                        && local.bytes().all(|b| b.is_ascii_hexdigit() || b".-_$".contains(&b))
                        && local.bytes().any(|b| b.is_ascii_digit()))
                        || local.contains('=');
                    if l == from || l == to || mtaish || id_like || rcpts.contains(&l) {
                        continue;
                    }
                    rcpts.push(l);
                    if rcpts.len() >= MAX_RECIPIENTS {
                        break;
                    }
                }
                // (A help-desk address the text points to does not outweigh the list.)
                if !listed.is_empty() && rcpts.iter().all(contact) {
                    rcpts.clone_from(&listed);
                }
                // Someone who wrote to themselves gets their own bounce: when the bounce's own
                // recipient is the only address the account names as failing, it is the one.
                let names_to = |l: &str| {
                    let l = l.trim_start().trim_start_matches('<');
                    l.strip_prefix(to.as_str())
                        .is_some_and(|rest| rest.starts_with(['>', ':']) || rest.trim().is_empty())
                };
                if rcpts.is_empty()
                    && !to.is_empty()
                    && (lower_human.contains(&format!("<{to}>")) || lower_human.lines().any(names_to))
                {
                    rcpts.push(to.clone());
                }
                // A help-desk address the MTA points to is no recipient when a real one is named.
                if rcpts.iter().any(|a| !contact(a)) {
                    rcpts.retain(|a| !contact(a));
                }
            }
            // An auto-reply that says its own address is gone ("this address no longer exists",
            // "user unknown") is the bounce of its sender: the address that answered.
            // (The addresses it names are where to write instead.)
            if says_gone && !from.is_empty() && header("X-Failed-Recipients").is_none() {
                rcpts = vec![from.clone()];
            }
            // Where a bare local name stands for a recipient (below), its lines are the account.
            let mut listed_as = None;
            if rcpts.is_empty() && failure_words {
                // sendmail lists a local recipient by its name alone (AOL's notices name only the
                // screen name): the mailbox is the quoted original's recipient with that local
                // part, or else that name at the domain that wrote the notice.
                if let Some(name) = bare_listed_name(&lower_human) {
                    let quoted = header_in(&original, &lower_original, "to").map(|t| addresses(&t)).unwrap_or_default();
                    let same_local = quoted
                        .into_iter()
                        .map(|a| a.to_ascii_lowercase())
                        .find(|a| a.rsplit_once('@').is_some_and(|(l, _)| l == name));
                    let at_reporter = from.rsplit_once('@').map(|(_, d)| format!("{name}@{d}"));
                    if let Some(a) = same_local.or(at_reporter) {
                        rcpts.push(a);
                        listed_as = Some(name);
                    }
                }
            }
            // Whether a mail system wrote this: a person's mail that forwards a message as an
            // attachment and says "error" or "bounce" in its text is no notice about the
            // message it carries.
            let from_a_mailer = || {
                let local = from.split('@').next().unwrap_or_default();
                failure_subject
                    || header("Auto-Submitted").is_some_and(|v| !v.trim().eq_ignore_ascii_case("no"))
                    || header("Return-Path").is_some_and(|v| v.trim().trim_matches(['<', '>']).trim().is_empty())
                    || from.is_empty()
                    || ["mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster", "mmdf", "nobody"]
                        .iter()
                        .any(|m| local.starts_with(m))
            };
            if rcpts.is_empty() && failure_words && from_a_mailer() {
                // The failed address is only in the quoted original's To header.
                if let Some(t) = header_in(&original, &lower_original, "to") {
                    rcpts.extend(addresses(&t).into_iter().map(|a| a.to_ascii_lowercase()).take(1));
                }
            }
            // A free-text notice that says it is a warning while the server keeps trying is a delay.
            let warning_only = !rcpts.is_empty() && says_still_trying(&lower_human);
            if failure_words || says_gone || header("X-Failed-Recipients").is_some() {
                for r in &rcpts {
                    let diag = block_for(&human, &lower_human, r)
                        .or_else(|| listed_as.as_deref().and_then(|name| block_for(&human, &lower_human, name)))
                        .unwrap_or_else(|| human.chars().take(2000).collect());
                    let e = Evidence {
                        status: None,
                        diag: &diag,
                        account: "",
                        head: &lower_head,
                        rules,
                        delayed: warning_only,
                        only_recipient: rcpts.len() == 1,
                        stage: None,
                    };
                    bounces.push(record(r, &e));
                }
            }
        }

        // Auto-replies and other mail that merely passes through here.
        if bounces.is_empty() {
            let kind = if auto_reply { MessageKind::AutoReply } else { MessageKind::NotBounce };
            return Parsed::empty(kind, links);
        }
        // A report that repeats a recipient (a relay's report spliced with its own) names one
        // failure: the first account of it stands.
        // Every recipient is a mailbox (a header mail-parser read oddly can name something else),
        // or, from a family's reader, one the notice names without an address (empty).
        let mut seen = std::collections::HashSet::new();
        bounces.retain(|b| {
            (b.recipient.contains('@') || (read_by_family && b.recipient.is_empty()))
                && seen.insert(b.recipient.clone())
        });
        if bounces.is_empty() {
            return Parsed::empty(MessageKind::NotBounce, links);
        }
        // A report whose every recipient is still being tried is a warning: a delay, not a bounce.
        let kind = if bounces.iter().all(|b| b.delayed) { MessageKind::Delayed } else { MessageKind::Bounce };
        Parsed { bounces, ..Parsed::empty(kind, links) }
    })();
    parsed.reporter = reporter;
    parsed
}

/// The one name listed, without a domain, under sendmail's "The following addresses had
/// permanent fatal errors" (`lower` is lower-cased): a local recipient of the host that wrote
/// the notice. `None` when that line is missing or the first line under it is an address, a
/// sentence or several names.
fn bare_listed_name(lower: &str) -> Option<String> {
    // sendmail's heading, or AOL's ("… could not be delivered because they are not accepting
    // mail from list@example.com:", the screen name on the next line).
    let after = lower
        .find("following addresses had permanent fatal errors")
        .or_else(|| lower.find("are not accepting mail from"))?;
    let rest = &lower[after..];
    let mut lines = rest.lines().skip(1).map(str::trim).skip_while(|l| l.is_empty());
    let name = lines.next()?.trim_start_matches('<').trim_end_matches('>');
    // A second name right under it: a list this rule does not read.
    let alone = lines.next().is_none_or(|l| l.is_empty() || l.starts_with('(') || l.starts_with("-----"));
    (alone && !name.is_empty() && name.len() <= 64 && name.bytes().all(text::local_part_byte)).then(|| name.to_string())
}

/// `b` as text: borrowed when it is valid UTF-8 (the usual case, checked on the fast
/// path), with replacement characters otherwise.
fn utf8(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

fn normalize_newlines(raw: &[u8]) -> Cow<'_, [u8]> {
    let Some(first) = memchr::memchr(b'\r', raw) else {
        return Cow::Borrowed(raw);
    };
    // Copied a run at a time between carriage returns: a byte at a time was a tenth of the
    // reader's time on CRLF mail.
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut i = first;
    while i < raw.len() {
        // raw[i] is a CR: CRLF and a lone CR both end a line.
        out.push(b'\n');
        i += if raw.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
        let next = memchr::memchr(b'\r', &raw[i..]).map_or(raw.len(), |p| i + p);
        out.extend_from_slice(&raw[i..next]);
        i = next;
    }
    Cow::Owned(out)
}

fn links(envelope_to: &str, original: &str, lower_original: &str, human: &str, dsn: &str) -> Links {
    let mut l = Links {
        original_message_id: header_in(original, lower_original, "message-id").map(|m| m.trim().to_string()),
        ..Links::default()
    };
    // (Searchers built once: building one per text and case cost more than the search.)
    static LOWER: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new("bounces+"));
    static UPPER: LazyLock<memchr::memmem::Finder<'static>> = LazyLock::new(|| memchr::memmem::Finder::new("BOUNCES+"));
    for text in [envelope_to, original, dsn, human] {
        if LOWER.find(text.as_bytes()).is_none() && UPPER.find(text.as_bytes()).is_none() {
            continue;
        }
        for a in addresses(text) {
            let local = a.split('@').next().unwrap_or_default().to_ascii_lowercase();
            if let Some(id) = local.strip_prefix("bounces+") {
                l.verp = Some(id.to_string());
                return l;
            }
        }
    }
    l
}

/// What a bounce says about one recipient.
struct Evidence<'a> {
    /// The report's `Status:` field, when there is one.
    status: Option<&'a str>,
    /// The diagnostic: the report's `Diagnostic-Code`, or the human lines about the recipient.
    diag: &'a str,
    /// The human-readable lines about this recipient, read for the SMTP step only.
    account: &'a str,
    /// The start of the human-readable part, lower-cased.
    head: &'a Head<'a>,
    /// The reason words to read with.
    rules: &'a Rules,
    /// The report's action was `delayed`.
    delayed: bool,
    /// This is the message's only failed recipient, so the whole account speaks for it.
    only_recipient: bool,
    /// The step, where the reporter's format says it (else the words decide).
    stage: Option<Stage>,
}

/// Whether a report's `status` says nothing the server's own code (found in its words) would
/// not: a generic `x.0.0`, or what an MTA writes for the bare reply `code` when the server
/// gave no enhanced code of its own — sendmail's `smtptodsn` table (deliver.c; `553` was
/// 5.1.3 in older releases, 5.1.0 since), from which other MTAs' tables were copied.
fn adds_nothing(status: EnhancedStatus, code: Option<u16>) -> bool {
    let table: &[(u8, u16, u16)] = match code {
        Some(450) => &[(4, 2, 0)],
        Some(451) => &[(4, 3, 0)],
        Some(452) => &[(4, 3, 1)],
        Some(500) => &[(5, 5, 2)],
        Some(501 | 504) => &[(5, 5, 4)],
        Some(502 | 503) => &[(5, 5, 1)],
        Some(550) => &[(5, 2, 0)],
        Some(551) => &[(5, 1, 6)],
        Some(552) => &[(5, 2, 2)],
        Some(553) => &[(5, 1, 0), (5, 1, 3)],
        _ => &[],
    };
    status.subject == 0 && status.detail == 0 || table.contains(&(status.class, status.subject, status.detail))
}

/// Builds one record: status and code from the block (or the text), reason from both.
fn record(rcpt: &str, e: &Evidence<'_>) -> BounceRecord {
    let Evidence { status, diag, account, head: whole, delayed, only_recipient, .. } = *e;
    let diag_status = find_status(diag);
    let given = status.and_then(EnhancedStatus::parse);
    let code = find_code(diag).or_else(|| whole.code());
    // A report's generic `x.0.0` says less than the server's own code in the diagnostic
    // (`550 5.1.1 ...` under `Status: 5.0.0`): the specific one wins, in the same class. So
    // does a status the reporting MTA derived from the bare reply code (sendmail's table:
    // `553` → 5.1.3, `552` → 5.2.2…), which says nothing the code does not: under
    // `Status: 5.1.3`, "553 … in my badrcptto list (#5.7.1)" is the server's policy refusal,
    // not a malformed address.
    let status = match (given, diag_status) {
        (Some(g), Some(d)) if d.class == g.class && adds_nothing(g, code) => Some(d),
        (g, d) => g.or(d),
    }
    .or_else(|| whole.status());
    // The step the server refused at, as the recipient's own lines say, or the whole account
    // when it is about this recipient alone ("in reply to RCPT TO command").
    let stage = match e.stage.unwrap_or_else(|| Stage::named_in_any(&[diag, account])) {
        Stage::Unknown if only_recipient && whole.rcpt_stage() => Stage::Recipient,
        Stage::Unknown if only_recipient && whole.not_found_in_directory() => Stage::Local,
        s => s,
    };
    let context = Context { head: whole, delayed, only_recipient };
    let mut v = judge_with(e.rules, diag, status, code, stage, Some(&context));
    // Google Groups answers every refused post with the same localised letter and no code:
    // the group does not exist or the sender may not post to it. A refusal, not a mystery.
    if v.basis == Basis::Code && v.reason == Reason::Undefined && rcpt.ends_with("@googlegroups.com") {
        v = verdict(Reason::Rejected, Basis::Context, status, code, stage, diag);
    }
    let class = code.map(|c| (c / 100) as u8).or(status.map(|s| s.class));
    let status_inferred = status.is_none();
    let status = status.map_or_else(|| inferred_status(v.reason, class), |s| s.to_string());
    BounceRecord {
        recipient: rcpt.to_string(),
        original_recipient: None,
        status,
        reply_code: code,
        kind: v.kind,
        subtype: v.subtype,
        reason: v.reason,
        suppress: v.suppress,
        stage,
        basis: v.basis,
        status_inferred,
        delayed,
        // (A byte count at most 2000 holds at most 2000 characters: no walk for the usual short one.)
        diagnostic: if diag.len() <= 2000 { diag.to_string() } else { diag.chars().take(2000).collect() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inline_original_is_cut_at_its_marker_or_its_first_header_line() {
        let cut = |t: &str| inline_original_at(&t.to_ascii_lowercase());
        let t = "Sorry, no such user.\n------ This is a copy of the message\nTo: x@y\n";
        assert_eq!(cut(t), t.find("------").unwrap());
        // A marker that holds another is cut where it starts, not where the inner one does.
        let t = "Sorry, no such user.\n----- Original message -----\nTo: x@y\n";
        assert_eq!(cut(t), t.find("-----").unwrap());
        let t = "Sorry.\nReturn-Path: <a@b>\nReceived: from x\n";
        assert_eq!(cut(t), t.find("\nReturn").unwrap());
        // Only at the start of a line, and never at the very start of the text.
        let t = "Sorry. X-Return-Path: <a@b>\n";
        assert_eq!(cut(t), t.len());
        let t = "Received: from x\nhello";
        assert_eq!(cut(t), t.len());
        let field = |t: &str, name: &str| header_in(t, &t.to_ascii_lowercase(), name);
        assert_eq!(field("Subject: a\nmessage-ID: <1@x>\nTo: b@c\n", "message-id").as_deref(), Some("<1@x>"));
        assert_eq!(field("X-To: a@b\nTO: c@d\n", "to").as_deref(), Some("c@d"));
    }

    #[test]
    fn garbage_is_not_a_bounce() {
        for input in [&b""[..], b"\xff\xfe\x00", b"Subject: hello\n\nhi there", b"\r\r\r\n\n"] {
            let p = parse(input);
            assert!(p.bounces.is_empty());
            assert!(!p.complaint);
        }
    }

    #[test]
    fn a_mime_tree_that_panics_mail_parser_gives_an_answer() {
        // Found by the `bounce` fuzz target: mail-parser panics on this tree in debug builds
        // (an overflow check) and reads it in release builds. Either way there is an answer:
        // nothing, or the one recipient the report names, once.
        let raw = include_bytes!("../../tests/data/mail-parser-panic.eml");
        let p = parse(raw);
        match p.kind {
            MessageKind::NotBounce => assert!(p.bounces.is_empty()),
            MessageKind::Bounce => {
                let rcpts: Vec<&str> = p.bounces.iter().map(|b| b.recipient.as_str()).collect();
                assert_eq!(rcpts, ["neko-nyaan@example.ne.jp"]);
            }
            other => panic!("unexpected reading {other:?}"),
        }
    }

    #[test]
    fn a_minimal_dsn() {
        let raw = b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Undelivered Mail\n\
MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
--b\nContent-Type: text/plain\n\nI'm sorry.\n\n--b\nContent-Type: message/delivery-status\n\n\
Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; gone@example.org\nAction: failed\n\
Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown\n\n\
--b\nContent-Type: message/rfc822\n\nMessage-ID: <abc@example.com>\nFrom: sender@example.com\nTo: gone@example.org\n\nhi\n--b--\n";
        let p = parse(raw);
        assert_eq!(p.kind, MessageKind::Bounce);
        assert_eq!(p.bounces.len(), 1);
        let b = &p.bounces[0];
        assert_eq!((b.recipient.as_str(), b.status.as_str(), b.reply_code), ("gone@example.org", "5.1.1", Some(550)));
        assert_eq!((b.kind, b.reason), (BounceType::Permanent, Reason::UserUnknown));
        assert_eq!(p.links.original_message_id.as_deref(), Some("<abc@example.com>"));
        // Bare CR line endings read the same.
        let cr: Vec<u8> = raw.iter().map(|&c| if c == b'\n' { b'\r' } else { c }).collect();
        assert_eq!(parse(&cr).bounces, p.bounces);
    }

    /// A postfix-style DSN for one recipient with the given report fields and human text.
    fn dsn(human: &str, fields: &str) -> Vec<u8> {
        format!(
            "From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Undelivered Mail\n\
MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
--b\nContent-Type: text/plain\n\n{human}\n\n--b\nContent-Type: message/delivery-status\n\n\
Reporting-MTA: dns; mx.example.net\n\n{fields}\n\n--b--\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_recipient_with_half_an_angle_bracket_is_read_without_it() {
        // NTT docomo's mopera writes the Final-Recipient with a closing bracket and no
        // opening one; the address is the one before it.
        for (field, want) in [
            ("rfc822; user@mopera.example>", "user@mopera.example"),
            ("rfc822; <user@mopera.example", "user@mopera.example"),
            ("rfc822; \"a b\"@mopera.example>", "\"a b\"@mopera.example"),
        ] {
            let p = parse(&dsn("user unknown", &format!("Final-Recipient: {field}\nAction: failed\nStatus: 5.1.1")));
            let got: Vec<&str> = p.bounces.iter().map(|b| b.recipient.as_str()).collect();
            assert_eq!(got, [want], "{field}");
        }
    }

    #[test]
    fn a_permanent_status_that_says_the_mailbox_exists_is_no_hard_bounce() {
        // RFC 3463 §3.3: X.2.0 is "the mailbox exists, but something about the destination
        // mailbox has caused the sending of this DSN". A 5.2.0 whose words say nothing known
        // (softbank's "could not be delivered because of an error", in Japanese) is the
        // mailbox's own refusal of this message: transient, and the address stays usable.
        let human = "\u{6307}\u{5b9a}\u{3055}\u{308c}\u{305f}\u{9001}\u{4fe1}\u{5148}\u{306f}\u{30a8}\u{30e9}\u{30fc}";
        let b = &parse(&dsn(human, "Final-Recipient: rfc822; a@example.jp\nAction: failed\nStatus: 5.2.0")).bounces[0];
        assert_eq!((b.kind, b.reason, b.suppress), (BounceType::Transient, Reason::Filtered, false), "{b:?}");
        // Words still come first: a 5.2.0 over quota is a full mailbox, and 5.2.1 is still
        // a disabled mailbox (permanent).
        let b = &parse(&dsn(
            "",
            "Final-Recipient: rfc822; a@example.jp\nAction: failed\nStatus: 5.2.0\n\
Diagnostic-Code: smtp; 522 5.2.0 Delivery failed: Over quota",
        ))
        .bounces[0];
        assert_eq!((b.kind, b.reason), (BounceType::Transient, Reason::MailboxFull), "{b:?}");
        let b = &parse(&dsn("", "Final-Recipient: rfc822; a@example.jp\nAction: failed\nStatus: 5.2.1")).bounces[0];
        assert_eq!(b.kind, BounceType::Permanent, "{b:?}");
    }

    #[test]
    fn a_notice_that_calls_its_failure_permanent_and_says_nothing_else_is_permanent() {
        let notice = |words: &str| {
            format!(
                "From: Mail Delivery System <Mailer-Daemon@mx.example.net>\nTo: sender@example.com\n\
Subject: Mail delivery failed: returning message to sender\nX-Failed-Recipients: a@example.org\n\n\
This message was created automatically by mail delivery software.\n\n\
A message that you sent could not be delivered to one or more of its\nrecipients.{words} \
The following address(es) failed:\n\n  a@example.org\n\n------ This is a copy of the message ------\n"
            )
            .into_bytes()
        };
        let b = &parse(&notice(" This is a permanent error.")).bounces[0];
        assert_eq!(
            (b.kind, b.subtype, b.reason, b.suppress),
            (BounceType::Permanent, BounceSubtype::General, Reason::Undefined, false),
            "{b:?}"
        );
        // Without those words nothing places it.
        let b = &parse(&notice("")).bounces[0];
        assert_eq!((b.kind, b.suppress), (BounceType::Undetermined, false), "{b:?}");
    }

    #[test]
    fn a_providers_address_not_found_notice_is_said_of_the_mailbox() {
        // Outlook.com: "mailbox unavailable" under 5.5.0, no SMTP step named, and the
        // provider's own template saying the address was not found.
        let fields = "Final-Recipient: rfc822;someone@outlook.com\nAction: failed\nStatus: 5.5.0\n\
Diagnostic-Code: smtp;550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).";
        let human = "Delivery has failed to these recipients or groups:\n\nsomeone@outlook.com\n\
The email address you entered couldn't be found. Please check the recipient's email address and try to resend the message.";
        let b = &parse(&dsn(human, fields)).bounces[0];
        assert_eq!(
            (b.reason, b.stage, b.kind, b.suppress),
            (Reason::UserUnknown, Stage::Local, BounceType::Permanent, true),
            "{b:?}"
        );
        // Gmail's template.
        let fields = "Final-Recipient: rfc822; a@example.it\nAction: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; 550 No such user";
        let human = "Address not found\n\nYour message wasn't delivered to a@example.it because the address couldn't be found. \
Check for typos or unnecessary spaces and try again.";
        let b = &parse(&dsn(human, fields)).bounces[0];
        assert_eq!((b.reason, b.suppress), (Reason::UserUnknown, true), "{b:?}");
        // Without the template, the same refusal at a step not named stays a filter's answer.
        let b = &parse(&dsn("Delivery has failed to these recipients.", fields)).bounces[0];
        assert_eq!((b.reason, b.suppress), (Reason::Filtered, false), "{b:?}");
        // The template does not make anything else a missing mailbox: a full one stays full.
        let full = fields.replace("550 No such user", "552 Mailbox full");
        let b = &parse(&dsn(human, &full)).bounces[0];
        assert_eq!((b.reason, b.suppress), (Reason::MailboxFull, false), "{b:?}");
    }

    #[test]
    fn only_a_feedback_report_of_a_complaining_type_is_a_recipients_complaint() {
        let arf = |fields: &str| {
            format!(
                "From: staff@hotmail.example\nTo: fbl@acme.test\nSubject: report\nMIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"f\"\n\n--f\nContent-Type: text/plain\n\n\
A report.\n\n--f\nContent-Type: message/feedback-report\n\n{fields}Version: 1\n\
Original-Rcpt-To: reader@example.org\n\n--f\nContent-Type: message/rfc822\n\nFrom: news@acme.test\n\
To: reader@example.org\nSubject: Hello\n\nhi\n--f--\n"
            )
            .into_bytes()
        };
        for (fields, kind, complaint) in [
            ("Feedback-Type: abuse\n", Some("abuse"), true),
            ("Feedback-Type: Fraud\n", Some("fraud"), true),
            // No type (older loops): a complaint, as before types existed.
            ("", None, true),
            // RFC 6591: the message failed SPF/DKIM/DMARC; the recipient complained of nothing.
            ("Feedback-Type: auth-failure\nAuth-Failure: spf\n", Some("auth-failure"), false),
            // The reporter says the message is not spam.
            ("Feedback-Type: not-spam\n", Some("not-spam"), false),
        ] {
            let p = parse(&arf(fields));
            assert_eq!(p.kind, MessageKind::Complaint, "{fields}");
            assert_eq!(p.complainants, ["reader@example.org"], "{fields}");
            assert_eq!((p.feedback_type.as_deref(), p.is_recipient_complaint()), (kind, complaint), "{fields}");
        }
        // The sender chooses the field: a long one is kept cut to a bound (on a character's
        // edge), and, being no registered type, is still a complaint.
        let long = format!("Feedback-Type: auth-failure-{}\n", "é".repeat(150_000));
        let p = parse(&arf(&long));
        let kept = p.feedback_type.as_deref().unwrap_or_default();
        assert!(kept.starts_with("auth-failure-é") && kept.len() <= 64, "{}", kept.len());
        assert!(p.is_recipient_complaint());
    }

    #[test]
    fn lotus_notes_says_a_user_is_not_in_its_directory() {
        // Lotus Notes (before Domino) looks the recipient up in its "Public Name & Address
        // Book": not found there is the directory's own answer, not a listing on a blocklist
        // ("listed" alone names one).
        let raw = b"From: POSTMASTER@smtp-gw6-01.example.com\nTo: shironeko@example.com\n\
Subject: Undeliverable message\nMIME-Version: 1.0\nContent-Type: text/plain; charset=ISO-8859-1\n\n\
------- Failure Reasons  --------\n\nUser  not listed in public Name & Address Book\nkijitora@example.com\n\n\n\
------- Returned Message --------\nFrom: shironeko@example.com\nTo: kijitora@example.com\nSubject: Nyaaaan\n\nNyaan\n";
        let p = parse(raw);
        let b = &p.bounces[0];
        assert_eq!(b.recipient, "kijitora@example.com");
        assert_eq!((b.reason, b.kind, b.suppress), (Reason::UserUnknown, BounceType::Permanent, true), "{b:?}");
        // Its Japanese notice says the same ("not in the directory's list").
        let ja = String::from_utf8_lossy(raw)
            .replace("charset=ISO-8859-1", "charset=utf-8")
            .replace("User  not listed in public Name & Address Book", "\u{30c7}\u{30a3}\u{30ec}\u{30af}\u{30c8}\u{30ea}\u{306e}\u{30ea}\u{30b9}\u{30c8}\u{306b}\u{3042}\u{308a}\u{307e}\u{305b}\u{3093}");
        let b = &parse(ja.as_bytes()).bounces[0];
        assert_eq!((b.reason, b.kind, b.suppress), (Reason::UserUnknown, BounceType::Permanent, true), "{b:?}");
        // Listed on a blocklist is still a block.
        let v = crate::bounce::reason::judge(
            "554 Service unavailable; client host listed at zen.example",
            None,
            Some(554),
            Stage::Recipient,
        );
        assert_eq!(v.reason, Reason::Blocked);
    }

    #[test]
    fn an_unknown_user_the_reporting_mta_decided_itself_is_gone() {
        // Postfix's local delivery: its own diagnostic type, no remote MTA, a generic status.
        let fields = "Final-Recipient: rfc822; 1@mx.example.net\nOriginal-Recipient: rfc822; 1\nAction: failed\n\
Status: 5.0.0\nDiagnostic-Code: X-Postfix; unknown user: \"1\"";
        let b = &parse(&dsn("", fields)).bounces[0];
        assert_eq!((b.reason, b.stage, b.suppress), (Reason::UserUnknown, Stage::Local, true), "{b:?}");
        // The same words relayed from another server, at a step nobody names: a filter's
        // answer as far as anyone can tell, as before.
        let relayed =
            fields.replace("X-Postfix;", "smtp; 550").replace("Status:", "Remote-MTA: dns; mx.example.org\nStatus:");
        let b = &parse(&dsn("", &relayed)).bounces[0];
        assert_eq!((b.reason, b.suppress), (Reason::Filtered, false), "{b:?}");
        // Its own type but a remote MTA named: still the remote's answer.
        let b = &parse(&dsn("", &fields.replace("Status:", "Remote-MTA: dns; mx.example.org\nStatus:"))).bounces[0];
        assert_eq!((b.reason, b.suppress), (Reason::Filtered, false), "{b:?}");
    }

    #[test]
    fn a_gateways_footer_does_not_outweigh_a_bad_mailbox_status() {
        // Exchange behind a scanning gateway: no diagnostic, status 5.1.1, and the only words
        // in the report are the gateway's footer about viruses.
        let human = "Delivery to the following recipients failed.\n\n       a@example.org\n\n\
**** This email has been scanned for all viruses and potentially offensive content by a gateway **";
        let fields = "Original-Recipient: rfc822;a@example.org\nFinal-Recipient: rfc822;a@example.org\n\
Action: failed\nStatus: 5.1.1";
        let b = &parse(&dsn(human, fields)).bounces[0];
        assert_eq!((b.reason, b.kind, b.suppress), (Reason::UserUnknown, BounceType::Permanent, true), "{b:?}");
        // Under a status that names no mailbox, the same words are the reason.
        let b = &parse(&dsn(human, &fields.replace("5.1.1", "5.0.0"))).bounces[0];
        assert_eq!((b.reason, b.suppress), (Reason::VirusDetected, false), "{b:?}");
    }

    #[test]
    fn the_server_status_in_the_diagnostic_beats_a_generic_report_status() {
        let raw = dsn(
            "",
            "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; 550 #5.1.0 Address rejected.",
        );
        let b = &parse(&raw).bounces[0];
        assert_eq!((b.status.as_str(), b.kind), ("5.1.0", BounceType::Permanent));
        // A specific report status stays, whatever the diagnostic says.
        let raw = dsn(
            "",
            "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.2.2\nDiagnostic-Code: smtp; 550 5.1.1 full",
        );
        assert_eq!(parse(&raw).bounces[0].status, "5.2.2");
    }

    #[test]
    fn a_status_derived_from_the_bare_reply_code_gives_way_to_the_servers_own() {
        let read = |status: &str, diag: &str| {
            let raw = dsn(
                "",
                &format!(
                    "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: {status}\nDiagnostic-Code: smtp; {diag}"
                ),
            );
            let b = parse(&raw).bounces.remove(0);
            (b.status, b.kind, b.suppress)
        };
        // sendmail wrote 5.1.3 for the bare 553; the server said 5.7.1: a policy refusal,
        // not a malformed mailbox, and not suppressed.
        let (status, kind, suppress) =
            read("5.1.3", "553 sorry, your envelope recipient is in my badrcptto list (#5.7.1)");
        assert_eq!(status, "5.7.1");
        assert_ne!(kind, BounceType::Permanent);
        assert!(!suppress);
        // 552 is 5.2.2 (mailbox full) in the table; the server said the message is too big.
        assert_eq!(
            read("5.2.2", "552 5.3.4 Message size exceeds fixed limit"),
            ("5.3.4".into(), BounceType::Transient, false)
        );
        // Without a code of the server's own, the derived status is all there is.
        assert_eq!(read("5.1.3", "553 sorry, that domain isn't in my list of allowed rcpthosts").0, "5.1.3");
        // A status no table derives from that reply code stays, whatever the text says.
        assert_eq!(read("5.1.1", "553 5.7.1 refused").0, "5.1.1");
        // Nor does a code of another class replace it.
        assert_eq!(read("5.2.2", "552 4.3.1 try later").0, "5.2.2");
    }

    #[test]
    fn user_unknown_is_permanent_only_when_refused_at_rcpt_time() {
        let fields = "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.0.0\nDiagnostic-Code: smtp; 550 <a@example.org>: User unknown";
        // The report alone does not say when the server refused: a filter's answer, kept
        // transient (never suppresses).
        let b = &parse(&dsn("", fields)).bounces[0];
        assert_eq!((b.kind, b.reason), (BounceType::Transient, Reason::Filtered));
        // The human account says it was the RCPT command.
        let human = "<a@example.org>: host mx.example.org said: 550 <a@example.org>: User unknown (in reply to\n    RCPT TO command)";
        let b = &parse(&dsn(human, fields)).bounces[0];
        assert_eq!((b.kind, b.reason), (BounceType::Permanent, Reason::UserUnknown));
        assert!(b.suppress);
    }

    #[test]
    fn the_mention_that_gives_the_refusal_is_the_account_of_the_failure() {
        // Listed first, refused further down: the refusal is read, not the listing.
        let raw = "From: MAILER-DAEMON@mx.example.net\r\nTo: s@example.org\r\nSubject: Delivery failure\r\n\r\n\
Delivery to the following recipients failed permanently:\r\n\r\n   * a@example.com\r\n\r\n\
Technical details:\r\n\r\nSMTP:RCPT host 192.0.2.8: 553 5.3.0 <a@example.com>... No such user here\r\n";
        let p = parse(raw.as_bytes());
        let b = &p.bounces[0];
        assert_eq!(b.recipient, "a@example.com");
        assert!(b.diagnostic.contains("No such user here"), "{}", b.diagnostic);
        assert_eq!(
            (b.kind, b.reason, b.reply_code, b.stage),
            (BounceType::Permanent, Reason::UserUnknown, Some(553), Stage::Recipient)
        );
        // A first mention that gives the refusal itself stays the account.
        let raw = "From: MAILER-DAEMON@mx.example.net\r\nTo: s@example.org\r\nSubject: Delivery failure\r\n\r\n\
<a@example.com>: 552 5.2.2 Mailbox full\r\n\r\nLater: a@example.com was tried: 550 5.1.1 unknown\r\n";
        let b = &parse(raw.as_bytes()).bounces[0];
        assert_eq!(b.reason, Reason::MailboxFull, "{}", b.diagnostic);
    }

    #[test]
    fn a_source_routed_final_recipient_yields_to_the_original_one() {
        let fields = "Original-recipient: rfc822;a@example.net\nFinal-recipient: rfc822;@relay.example.net:a@server\nAction: failed\nStatus: 5.1.1";
        assert_eq!(parse(&dsn("", fields)).bounces[0].recipient, "a@example.net");
        // A dotless local host is still a mailbox when nothing better is given.
        let fields = "Final-Recipient: rfc822; a@mailhub0\nAction: failed\nStatus: 5.1.1";
        assert_eq!(parse(&dsn("", fields)).bounces[0].recipient, "a@mailhub0");
    }

    #[test]
    fn an_alias_targets_failure_keeps_the_address_the_sender_gave() {
        // Sun's Messaging Server: action and status first, then the original and the final
        // recipient, in one block (the final one is no second recipient).
        let fields = "Action: failed\nStatus: 5.0.0 (recipient reached disk quota)\n\
Original-recipient: rfc822;user@example.com\nFinal-recipient: rfc822;user@sims-ms-daemon";
        let p = parse(&dsn("", fields));
        assert_eq!(p.bounces.len(), 1, "{:?}", p.bounces);
        assert_eq!(p.bounces[0].recipient, "user@sims-ms-daemon");
        assert_eq!(p.bounces[0].original_recipient.as_deref(), Some("user@example.com"));
        // The usual order, a delay: the same two addresses.
        let fields = "Final-Recipient: rfc822; old@example.fi\nOriginal-Recipient: rfc822;user@example.fi\n\
Action: delayed\nStatus: 4.3.0";
        let b = &parse(&dsn("", fields)).bounces[0];
        assert_eq!(
            (b.recipient.as_str(), b.original_recipient.as_deref(), b.delayed),
            ("old@example.fi", Some("user@example.fi"), true)
        );
        // Two blocks without a blank line between them are still two.
        let fields = "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n\
Final-Recipient: rfc822; b@example.org\nAction: failed\nStatus: 5.1.1";
        let p = parse(&dsn("", fields));
        assert_eq!(
            p.bounces.iter().map(|b| b.recipient.as_str()).collect::<Vec<_>>(),
            ["a@example.org", "b@example.org"]
        );
        // An Original-Recipient that is the failed address says nothing more.
        let fields = "Original-Recipient: rfc822;A@example.org\nFinal-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1";
        assert_eq!(parse(&dsn("", fields)).bounces[0].original_recipient, None);
    }

    #[test]
    fn a_quoted_local_part_is_one_address() {
        let raw = dsn(
            "<\"john..doe\"@example.org>: host mx.example.org said: 550 5.1.1 User unknown",
            "Final-Recipient: rfc822; \"john..doe\"@example.org\nAction: failed\nStatus: 5.1.1",
        );
        let p = parse(&raw);
        assert_eq!(p.bounces.iter().map(|b| b.recipient.as_str()).collect::<Vec<_>>(), ["\"john..doe\"@example.org"]);
        let raw = b"From: postmaster@mx.example.net\nTo: me@example.com\nSubject: Undeliverable\n\n\
Delivery failed for \"a....b....\"@example.org: 550 no such user\n";
        let rcpts: Vec<String> = parse(raw).bounces.into_iter().map(|b| b.recipient).collect();
        assert_eq!(rcpts, ["\"a....b....\"@example.org"]);
    }

    #[test]
    fn out_of_office_replies_are_known_by_their_marks_and_their_subjects_in_other_languages() {
        // Mail clients' own subjects, in several languages, and the vendors' own headers: an
        // auto-reply, never read on into the bounce readers.
        let subjects = [
            "Automatic response",
            "OOO: traveling",
            "Abwesenheitsnotiz",
            "Réponse automatique : Hello",
            "Risposta automatica",
            "Respuesta automática: Hola",
            "Автоответ: Привет",
            "Automatisch antwoord: Hallo",
        ];
        for s in subjects {
            let raw = format!("From: a@example.org\nTo: me@example.com\nSubject: {s}\n\nBody\n");
            assert_eq!(parse(raw.as_bytes()).kind, MessageKind::AutoReply, "{s}");
        }
        for h in [
            "X-Autoresponse: auto",
            "X-MS-Exchange-Inbox-Rules-Loop: a@example.org",
            "X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent",
        ] {
            let raw = format!("From: a@example.org\nTo: me@example.com\nSubject: Re: Hello\n{h}\n\nBody\n");
            assert_eq!(parse(raw.as_bytes()).kind, MessageKind::AutoReply, "{h}");
        }
        // Neither mark makes a mailer's failure notice an auto-reply.
        let raw = b"From: MAILER-DAEMON@mx.example.org\nTo: me@example.com\nSubject: Undelivered Mail Returned to Sender\n\
X-Autoresponse: auto\n\n<gone@example.org>: host mx.example.org said: 550 5.1.1 User unknown (in reply to RCPT TO command)\n";
        let p = parse(raw);
        assert_eq!(p.kind, MessageKind::Bounce);
        assert_eq!(p.bounces.iter().map(|b| b.recipient.as_str()).collect::<Vec<_>>(), ["gone@example.org"]);
    }

    #[test]
    fn an_auto_reply_saying_its_address_is_gone_bounces_that_address() {
        let raw = b"From: Old Hand <old@example.org>\nTo: me@example.com\nSubject: Automatic reply: Hello\n\
Auto-Submitted: auto-replied\n\nThis address no longer exists. Please write to new@example.org.\n";
        let p = parse(raw);
        assert_eq!(p.kind, MessageKind::Bounce);
        assert_eq!(p.bounces.iter().map(|b| b.recipient.as_str()).collect::<Vec<_>>(), ["old@example.org"]);
        // An ordinary vacation notice stays an auto-reply.
        let raw = b"From: a@example.org\nTo: me@example.com\nSubject: Out of office\nAuto-Submitted: auto-replied\n\n\
I am away until Monday.\n";
        assert_eq!(parse(raw).kind, MessageKind::AutoReply);
    }

    #[test]
    fn a_warning_in_free_text_is_a_delay() {
        let raw = b"From: postmaster@mx.example.net\nTo: me@example.com\nSubject: Delivery delayed\n\n\
THIS IS A WARNING MESSAGE ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.\n\
Delivery to gone@example.org has been delayed: 451 4.4.1 connection timed out. It will be retried.\n";
        let p = parse(raw);
        assert_eq!(p.kind, MessageKind::Delayed);
        assert!(p.bounces.iter().all(|b| b.delayed && b.kind == BounceType::Transient && !b.suppress));
    }

    #[test]
    fn free_text_recipients_skip_senders_and_alias_sources() {
        let raw = b"From: postmaster@mx.example.net\nTo: me@example.com\nSubject: Undeliverable\n\n\
Error: Invalid user address\n550 - Requested action not taken: no such user here\n\
  MAIL FROM: me@example.com\n  RCPT TO: gone@example.org\n  From: someone-else@example.com\n";
        let rcpts: Vec<String> = parse(raw).bounces.into_iter().map(|b| b.recipient).collect();
        assert_eq!(rcpts, ["gone@example.org"]);
        let raw = b"From: Mailer-Daemon@mx.example.net\nTo: me@example.com\nSubject: Mail delivery failed\n\n\
A message that you sent could not be delivered to one or more of its recipients.\n\n\
  x@wanadoo.example\n    (generated from alias@example.com)\n    SMTP error from remote mail server after end of data:\n    550 spam\n";
        let rcpts: Vec<String> = parse(raw).bounces.into_iter().map(|b| b.recipient).collect();
        assert_eq!(rcpts, ["x@wanadoo.example"]);
    }

    #[test]
    fn a_local_recipient_listed_by_name_alone_is_a_mailbox_of_the_reporting_domain() {
        let notice = |extra: &str| {
            format!(
                "From: Mail Delivery Subsystem <MAILER-DAEMON@aol.com>\nTo: sender@acme.test\n\
Subject: Returned mail: User unknown\n\n\
   ----- The following addresses had permanent fatal errors -----\nscreenname456\n\
    (reason: 550 MAILBOX NOT FOUND)\n{extra}"
            )
        };
        let p = parse(notice("").as_bytes());
        assert_eq!(p.kind, MessageKind::Bounce);
        let b = &p.bounces[0];
        assert_eq!(b.recipient, "screenname456@aol.com");
        assert!(b.diagnostic.contains("550 MAILBOX NOT FOUND"), "{}", b.diagnostic);
        // The quoted original names the mailbox with that local part: it is the one.
        let quoted =
            notice("\n   ----- Original message follows -----\n\nTo: ScreenName456@aol.example\nSubject: hi\n\nhi\n");
        assert_eq!(parse(quoted.as_bytes()).bounces[0].recipient, "screenname456@aol.example");
        // A sentence under the line is not a name.
        let sentence = notice("").replace("screenname456\n", "your message could not be delivered\n");
        assert!(parse(sentence.as_bytes()).bounces.iter().all(|b| !b.recipient.starts_with("your")));
    }

    #[test]
    fn aol_names_the_screen_name_under_the_sender_it_refused() {
        let p = parse(
            b"From: \"Mail Delivery Subsystem\" <MAILER-DAEMON@AOL.com>\nTo: <list-bounces@lists.acme.test>\n\
Subject: Mail Delivery Problem\n\n\
Your mail to the following recipients could not be delivered because they are not accepting mail from list@lists.acme.test:\n\
\tscreenname\n",
        );
        let got: Vec<&str> = p.bounces.iter().map(|b| b.recipient.as_str()).collect();
        assert_eq!(got, ["screenname@aol.com"], "the address mail came from is the sender's, never the failure");
    }

    #[test]
    fn a_quoted_to_line_names_a_recipient_only_when_nothing_else_does() {
        // Exchange 5.5 names the original's addressee (a list) above the failed recipient,
        // which it writes as an X.400 address with an SMTP element.
        let notice = "From: System Administrator <postmaster@corp.test>\nTo: list-bounces@lists.acme.test\n\
Subject: Undeliverable: hello\n\n\
Your message\n\n  To:      list@lists.acme.test\n  Subject: hello\n\n\
did not reach the following recipient(s):\n\n\
c=US;a= ;p=CORP;o=Nexus2;dda:SMTP=gone@corp.test; on Fri, 4 Oct 2002\n\
    The recipient name is not recognized\n";
        let got: Vec<String> = parse(notice.as_bytes()).bounces.into_iter().map(|b| b.recipient).collect();
        assert_eq!(got, ["gone@corp.test"]);
        // A bulleted quoted header is the original's sender; a `To:` line alone still counts.
        let vade = "From: MAILER-DAEMON <mailer-daemon@mx.test>\nTo: list-bounces@acme.test\n\
Subject: Undeliverable: some subject\n\n\
Delivery has failed to these recipients or distribution lists:\n\
\t* [member@isp.test]: 550 member@isp.test...User account is overquota\n\
Original message details:\n\t* From: author@acme.test\n\t* To: list@acme.test\n";
        let got: Vec<String> = parse(vade.as_bytes()).bounces.into_iter().map(|b| b.recipient).collect();
        assert_eq!(got, ["member@isp.test"], "no empty domain label, no quoted sender, no addressee");
        let only_to = "From: MAILER-DAEMON@mx.test\nTo: me@acme.test\nSubject: Undeliverable\n\n\
Delivery has failed.\n  To: gone@isp.test\n";
        let got: Vec<String> = parse(only_to.as_bytes()).bounces.into_iter().map(|b| b.recipient).collect();
        assert_eq!(got, ["gone@isp.test"]);
    }

    #[test]
    fn exims_delay_warning_is_a_delay() {
        let p = parse(
            b"From: Mail Delivery System <Mailer-Daemon@mx.test>\nTo: me@acme.test\n\
Subject: Warning: message 14jRTi-0007jE-00 delayed 24 hours\n\n\
This message was created automatically by mail delivery software.\n\
A message that you sent has not yet been delivered to all its recipients\n\
after more than 24 hours on the queue on mx.test.\n\n\
The address to which the message has not yet been delivered is:\n\n  slow@isp.test\n\n\
No action is required on your part. Delivery attempts will continue for\n\
some time, and this warning may be repeated at intervals if the message\n\
remains undelivered.\n",
        );
        assert_eq!(p.kind, MessageKind::Delayed);
        assert!(p.bounces.iter().all(|b| b.delayed && !b.suppress && b.kind == BounceType::Transient));
    }

    #[test]
    fn gmails_dns_error_that_names_a_missing_domain_is_an_unknown_host() {
        // Gmail's older notice: no report, no status, "failed permanently", and a DNS error
        // whose words say the domain does not exist. "DNS Error" only says a lookup failed;
        // "Domain name not found" says how.
        let p = parse(
            b"Return-Path: <>\nFrom: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n\
To: me@acme.test\nX-Failed-Recipients: user@example.comm\n\
Subject: Delivery Status Notification (Failure)\n\n\
Delivery to the following recipient failed permanently:\n\n     user@example.comm\n\n\
Technical details of permanent failure: \nDNS Error: Domain name not found\n\n\
----- Original message -----\n\nSubject: Hi\nFrom: me@acme.test\nTo: user@example.comm\n\nHello\n",
        );
        let b = &p.bounces[0];
        assert_eq!(
            (b.recipient.as_str(), b.kind, b.reason, b.suppress),
            ("user@example.comm", BounceType::Permanent, Reason::HostUnknown, true)
        );
    }

    #[test]
    fn a_scanners_footer_is_not_the_reason_of_a_delay() {
        // A relay's antivirus signs every notice it passes; a message still being retried
        // was not refused for its content.
        let p = parse(
            b"From: Mail Delivery System <Mailer-Daemon@mx.test>\nTo: me@acme.test\n\
Subject: Warning: message 1Gdrvl-0006Gp-PU delayed 48 hours\n\n\
This message was created automatically by mail delivery software.\n\
A message that you sent has not yet been delivered to one or more of its\n\
recipients after more than 48 hours on the queue on mx.test.\n\n\
The address to which the message has not yet been delivered is:\n\n  slow@isp.test\n\n\
No action is required on your part. Delivery attempts will continue for\n\
some time, and this warning may be repeated at intervals if the message\n\
remains undelivered.\n\n\
__________ Informacion de NOD32, revision 1.1856 (20061106) __________\n\n\
Este mensaje ha sido analizado con  NOD32 antivirus system\nhttp://www.nod32.com\n",
        );
        assert_eq!(p.kind, MessageKind::Delayed);
        let b = &p.bounces[0];
        assert_eq!((b.recipient.as_str(), b.kind, b.suppress), ("slow@isp.test", BounceType::Transient, false));
        assert_eq!(b.reason, Reason::Expired);
    }

    #[test]
    fn qmail_names_the_rcpt_step_in_words_and_the_server_says_why() {
        // qmail writes "does not like recipient" for any refusal at RCPT TO: the step, not the
        // reason. The server's own words say why: no such user for the first address; a
        // refusal of our sending address, not of the mailbox, for the second.
        let p = parse(
            b"From: MAILER-DAEMON@mx.test\nTo: me@acme.test\nSubject: failure notice\n\n\
Hi. This is the qmail-send program at mx.test.\n\
I'm afraid I wasn't able to deliver your message to the following addresses.\n\
This is a permanent error; I've given up. Sorry it didn't work out.\n\n\
<gone@isp.test>:\n192.0.2.7 does not like recipient.\n\
Remote host said: 550 gone@isp.test... No such user\nGiving up on 192.0.2.7.\n\n\
<kept@isp.test>:\n192.0.2.7 does not like recipient.\n\
Remote host said: 550 5.7.606 Access denied, banned sending IP [192.0.2.225].\nGiving up on 192.0.2.7.\n",
        );
        let r: Vec<_> = p.bounces.iter().map(|b| (b.recipient.as_str(), b.kind, b.suppress)).collect();
        assert_eq!(
            r,
            [("gone@isp.test", BounceType::Permanent, true), ("kept@isp.test", BounceType::Transient, false)]
        );
        assert_eq!(p.bounces[1].reason, Reason::Blocked);
    }

    #[test]
    fn a_pipe_is_no_recipient_the_address_that_made_it_is() {
        // Exim's report of a `.forward` pipe that failed: its Final-Recipient is the command
        // line, which holds an address but is none.
        let p = parse(
            b"From: Mail Delivery System <mailer-daemon@mx.test>\nTo: me@acme.test\n\
X-Failed-Recipients: user@isp.test\nAuto-Submitted: auto-replied\n\
Subject: Mail delivery failed: returning message to sender\nMIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n\
--b\nContent-type: text/plain; charset=us-ascii\n\n\
This message was created automatically by mail delivery software.\n\n\
A message that you sent could not be delivered to one or more of its\n\
recipients. This is a permanent error. The following address(es) failed:\n\n\
  pipe to |/usr/local/bin/reply user@isp.test /home/user/.reply\n    generated by user@isp.test\n\n\
The following text was generated during the delivery attempt:\n\n\
------ pipe to |/usr/local/bin/reply user@isp.test /home/user/.reply\n       generated by user@isp.test ------\n\n\
Failed to read response template /home/user/.reply/user@isp.test: No such file or directory\n\n\
--b\nContent-type: message/delivery-status\n\nReporting-MTA: dns; mx.test\n\n\
Action: failed\nFinal-Recipient: rfc822;|/usr/local/bin/reply user@isp.test /home/user/.reply\nStatus: 5.0.0\n\n--b--\n",
        );
        let r: Vec<_> = p.bounces.iter().map(|b| (b.recipient.as_str(), b.suppress)).collect();
        assert_eq!(r, [("user@isp.test", false)]);
    }

    #[test]
    fn an_account_in_the_preamble_is_read_not_the_returned_headers() {
        let p = parse(
            b"From: postmaster@mx.test\nTo: me@acme.test\nSubject: WARNING: delayed mail.\nMime-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status;\n    boundary=\"=_courier_0\"\n\n\
This is a delivery status notification from mx.test,\nrunning the Courier mail server, version 0.40.0.\n\n\
                     DELAYS IN DELIVERING YOUR MESSAGE\n\n\
The delivery of the following E-mail message has been delayed.  This is an\n\
advisory notice only.\n\n\
<slow@isp.test>:\n    mx.isp.test [192.0.2.7]:\n>>> RCPT TO:<slow@isp.test>\n\
<<< 450 4.7.1 <slow@isp.test>: Recipient address rejected: Greylisted, try again later\n\n\
--=_courier_0\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.test\n\n\
Final-Recipient: rfc822; slow@isp.test\nAction: delayed\nStatus: 4.0.0\n\n\
--=_courier_0\nContent-Type: text/rfc822-headers; charset=us-ascii\n\n\
From: me@acme.test\nTo: \"Slow\" <slow@isp.test>\nContent-Type: multipart/alternative; boundary=\"x\"\nSubject: Hi\n\n\
--=_courier_0--\n",
        );
        assert_eq!(p.kind, MessageKind::Delayed);
        let b = &p.bounces[0];
        assert_eq!((b.recipient.as_str(), b.suppress), ("slow@isp.test", false));
        assert!(b.diagnostic.contains("Greylisted"), "{}", b.diagnostic);
        assert_ne!(b.reason, Reason::ContentError);
    }

    #[test]
    fn a_reply_the_report_cut_to_its_first_line_is_read_whole_from_the_transcript() {
        let p = parse(
            b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.test>\nTo: me@acme.test\nMIME-Version: 1.0\n\
Subject: Returned mail: see transcript for details\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\n\n\
   ----- The following addresses had permanent fatal errors -----\n<a@isp.test>\n\
    (reason: 552-5.7.0 This message was blocked because its content presents a potential)\n\n\
   ----- Transcript of session follows -----\n... while talking to mx.isp.test.:\n>>> DATA\n\
<<< 552-5.7.0 This message was blocked because its content presents a potential\n\
<<< 552-5.7.0 security issue. Please visit\n<<< 552 5.7.0 our message guidelines. - gsmtp\n\
554 5.0.0 Service unavailable\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.test\n\n\
Final-Recipient: RFC822; a@isp.test\nAction: failed\nStatus: 5.7.0\n\
Diagnostic-Code: SMTP; 552-5.7.0 This message was blocked because its content presents a potential\n\n--b--\n",
        );
        let b = &p.bounces[0];
        assert!(b.diagnostic.ends_with("our message guidelines. - gsmtp"), "{}", b.diagnostic);
        assert_eq!((b.reason, b.subtype, b.suppress), (Reason::PolicyViolation, BounceSubtype::ContentRejected, false));
    }

    #[test]
    fn a_comment_after_the_action_is_no_other_action() {
        let p = parse(
            b"From: mailer-daemon@gw.test\nTo: me@acme.test\nSubject: Delivery Report\nMIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
--b\nContent-Type: text/plain\n\n<gone@isp.test> (failed: Bad destination mailbox address)\n\
--b\nContent-Type: message/delivery-status\n\nReporting-MTA: gw.test\n\n\
Final-Recipient: rfc822;gone@isp.test\nAction: failed (Bad destination mailbox address)\nStatus: 5.1.1\n--b--\n",
        );
        let b = &p.bounces[0];
        assert_eq!((b.status.as_str(), b.kind, b.suppress), ("5.1.1", BounceType::Permanent, true));
    }

    #[test]
    fn a_transcripts_reply_is_the_refusal_not_the_commentary_after_it() {
        let p = parse(
            b"From: Mail Delivery Subsystem <MAILER-DAEMON@mx.test>\nTo: me@acme.test\n\
Subject: Returned mail: Deferred: Connection timed out during user open with isp.test\n\n\
   ----- Transcript of session follows -----\nWhile talking to smtp.isp.test:\n\
>>> RCPT To:<gone@isp.test>\n<<< 550 <gone@isp.test>, User Unknown\n\
550 <gone@isp.test>... User unknown\n\
421 isp.test (smtp)... Deferred: Connection timed out during user open with isp.test\n\n\
   ----- Unsent message follows -----\nTo: gone@isp.test\nSubject: hi\n\nhi\n",
        );
        let b = &p.bounces[0];
        assert_eq!((b.recipient.as_str(), b.kind, b.suppress), ("gone@isp.test", BounceType::Permanent, true));
        assert!(!b.diagnostic.contains("timed out"), "{}", b.diagnostic);
    }

    #[test]
    fn a_chinese_providers_notice_in_gb2312_is_a_bounce() {
        // Sina's wording, "邮件无法发送到您指定的地址中。" (the mail could not be sent to the
        // address you gave), in GB2312 as it is sent.
        let mut mail = b"From: MAILER-DAEMON@sina.test\nTo: me@acme.test\nSubject: failure\nMIME-Version: 1.0\n\
Content-Type: text/plain; charset=\"gb2312\"\n\n"
            .to_vec();
        mail.extend_from_slice(b"\xd3\xca\xbc\xfe\xce\xde\xb7\xa8\xb7\xa2\xcb\xcd\xb5\xbd\xc4\xfa\xd6\xb8\xb6\xa8\xb5\xc4\xb5\xd8\xd6\xb7\xd6\xd0\xa1\xa3\n\n");
        mail.extend_from_slice(b"<gone@sina.test>:\n\n");
        let p = parse(&mail);
        assert_eq!(p.kind, MessageKind::Bounce);
        assert_eq!(p.bounces.iter().map(|b| b.recipient.as_str()).collect::<Vec<_>>(), ["gone@sina.test"]);
    }

    #[test]
    fn amazon_ses_notifications_by_mail() {
        let mail = |json: &str| {
            format!("From: no-reply@sns.amazonaws.com\nTo: me@example.com\nSubject: AWS Notification Message\n\n{json}\n--\nunsubscribe\n").into_bytes()
        };
        let bounce = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":"gone@example.org","status":"5.1.1","action":"failed","diagnosticCode":"smtp; 550 5.1.1 user unknown"}]},"mail":{"source":"me@example.com"}}"#;
        let p = parse(&mail(bounce));
        assert_eq!(p.kind, MessageKind::Bounce);
        let b = &p.bounces[0];
        assert_eq!(
            (b.recipient.as_str(), b.status.as_str(), b.kind),
            ("gone@example.org", "5.1.1", BounceType::Permanent)
        );
        let complaint = r#"{"notificationType":"Complaint","complaint":{"complainedRecipients":[{"emailAddress":"angry@example.org"}],"complaintFeedbackType":"abuse"}}"#;
        let p = parse(&mail(complaint));
        assert!(p.complaint && p.bounces.is_empty());
        assert_eq!(p.complainants, ["angry@example.org"]);
        assert_eq!((p.feedback_type.as_deref(), p.is_recipient_complaint()), (Some("abuse"), true));
        // SES passes on the feedback type the mailbox provider gave: "not-spam" is none.
        let p = parse(&mail(&complaint.replace("\"abuse\"", "\"not-spam\"")));
        assert_eq!(
            (p.kind, p.feedback_type.as_deref(), p.is_recipient_complaint()),
            (MessageKind::Complaint, Some("not-spam"), false)
        );
        // Pretty-printed, as event publishing (`eventType`), and inside an SNS envelope.
        let pretty = "{\n  \"eventType\": \"Bounce\",\n  \"bounce\": {\"bounceType\": \"Permanent\", \"bouncedRecipients\": [{\"emailAddress\": \"bounce@simulator.amazonses.com\", \"diagnosticCode\": \"smtp; 550 5.1.1 user unknown\"}]}\n}";
        let p = parse(&mail(pretty));
        assert_eq!(
            p.bounces.iter().map(|b| b.recipient.as_str()).collect::<Vec<_>>(),
            ["bounce@simulator.amazonses.com"]
        );
        let envelope = serde_json::json!({"Type": "Notification", "MessageId": "x", "Message": bounce}).to_string();
        let p = parse(&mail(&envelope));
        assert_eq!(p.bounces.iter().map(|b| b.recipient.as_str()).collect::<Vec<_>>(), ["gone@example.org"]);
        let delivery = r#"{"notificationType":"Delivery","delivery":{"recipients":["ok@example.org"],"smtpResponse":"250 2.6.0 Message received"}}"#;
        let p = parse(&mail(delivery));
        assert_eq!((p.kind, p.bounces.len()), (MessageKind::Delivered, 0));
    }

    /// A report of the given per-recipient blocks, in postfix's layout (whose human part
    /// names each address beside the remote server's answer, success or not).
    fn postfix_report(subject: &str, blocks: &[(&str, Option<&str>, &str, &str)]) -> Vec<u8> {
        let human: String = blocks
            .iter()
            .map(|(r, _, _, d)| format!("<{r}>: delivery via mx.example.net[192.0.2.2]:25: {d}\n\n"))
            .collect();
        let fields: String = blocks
            .iter()
            .map(|(r, action, status, d)| {
                let action = action.map(|a| format!("Action: {a}\n")).unwrap_or_default();
                format!("Final-Recipient: rfc822; {r}\n{action}Status: {status}\nDiagnostic-Code: smtp; {d}\n\n")
            })
            .collect();
        format!(
            "From: MAILER-DAEMON@mx.example.jp (Mail Delivery System)\nTo: me@example.jp\nSubject: {subject}\n\
Auto-Submitted: auto-replied\nMIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
--b\nContent-Type: text/plain\n\nThis is the mail system at host mx.example.jp.\n\n\
Enclosed is the mail delivery report that you requested.\n\n{human}\
--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.jp\n\n{fields}\
--b\nContent-Type: text/rfc822-headers\n\nFrom: me@example.jp\nSubject: hi\n\n--b--\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_report_of_success_is_no_bounce_whatever_its_text_names() {
        // postfix's answer to `sendmail -bv` and a requested delivery report: the text names
        // each address beside "250 2.1.5 Ok", which alone would read as a failure's account.
        for action in [Some("deliverable"), Some("delivered"), Some("relayed"), Some("expanded"), None] {
            let raw = postfix_report(
                "Mail Delivery Status Report",
                &[("cat@example.net", action, "2.1.5", "250 2.1.5 Ok"), ("dog@example.net", action, "2.0.0", "250 Ok")],
            );
            let p = parse(&raw);
            assert_eq!((p.kind, p.bounces.len()), (MessageKind::Delivered, 0), "action {action:?}");
        }
        // One failure among successes is that one failure's bounce, and no one else's: a
        // block with no action is a failure unless its status says success.
        for (action, status) in [(Some("failed"), "5.1.1"), (Some("undeliverable"), "5.1.1"), (None, "5.1.1")] {
            let raw = postfix_report(
                "Undelivered Mail Returned to Sender",
                &[
                    ("cat@example.net", Some("delivered"), "2.1.5", "250 2.1.5 Ok"),
                    ("dog@example.net", action, status, "550 5.1.1 User unknown"),
                    ("fox@example.net", None, "2.0.0", "250 Ok"),
                ],
            );
            let p = parse(&raw);
            assert_eq!(p.kind, MessageKind::Bounce, "action {action:?}");
            assert_eq!(
                p.bounces.iter().map(|b| (b.recipient.as_str(), b.kind)).collect::<Vec<_>>(),
                [("dog@example.net", BounceType::Permanent)],
                "action {action:?}"
            );
        }
    }

    #[test]
    fn apple_mails_unsubscribe_note_is_an_opt_out_by_its_sender() {
        let note = |marker: &str| {
            format!(
                "From: Cat <Cat@icloud.example>\nTo: opt-out-1@lists.example.org\nSubject: unsubscribe\n\
Auto-Submitted: auto-replied\n{marker}Content-Type: text/plain; charset=UTF-8\n\n\
Apple Mail sent this email to unsubscribe from the message \"News\".\n"
            )
            .into_bytes()
        };
        let p = parse(&note("X-Apple-Unsubscribe: true\n"));
        assert_eq!((p.kind, p.complaint), (MessageKind::Complaint, true));
        assert_eq!(p.complainants, ["cat@icloud.example"]);
        assert!(p.bounces.is_empty());
        // Without the header it is the auto-reply it looks like.
        let p = parse(&note(""));
        assert_eq!((p.kind, p.complaint), (MessageKind::AutoReply, false));
    }

    #[test]
    fn a_failed_recipients_header_that_the_account_never_mentions_yields_to_the_account() {
        // Deutsche Telekom's notice lists each address and its reply below a ruler; here its
        // header names an address the text does not (as in an anonymised copy).
        let notice = |header: &str| {
            format!(
                "From: Mail Delivery System <Mailer-Daemon@t-online.example>\n{header}\
Subject: Mail delivery failed: returning message to sender\n\n\
|------------------------- Failed addresses follow: ---------------------|\n\
 <one@t-online.example>\n   552 5.2.2 <one@t-online.example> Quota exceeded (mailbox for user is full)\n\
 <two@t-online.example>\n   550 5.1.1 <two@t-online.example> unknown user\n\n\
|------------------------- Message header follows: ----------------------|\n\
From: Corp <corp@example.com>\nTo: <one@t-online.example>, <two@t-online.example>\nSubject: hi\n"
            )
            .into_bytes()
        };
        let read =
            |raw: &[u8]| parse(raw).bounces.iter().map(|b| (b.recipient.clone(), b.kind, b.reason)).collect::<Vec<_>>();
        let both = vec![
            ("one@t-online.example".to_string(), BounceType::Transient, Reason::MailboxFull),
            ("two@t-online.example".to_string(), BounceType::Permanent, Reason::UserUnknown),
        ];
        assert_eq!(read(&notice("X-Failed-Recipients: someone@t-online.example\n")), both);
        assert_eq!(read(&notice("X-Failed-Recipients: one@t-online.example, two@t-online.example\n")), both);
        assert_eq!(read(&notice("")), both);
        // A header the text does mention is the list, as before: only `two` here.
        let two = read(&notice("X-Failed-Recipients: two@t-online.example\n"));
        assert_eq!(two, both[1..]);
        // And a text that names no one leaves the header's address standing.
        let bare = b"From: Mail Delivery System <Mailer-Daemon@mx.example.org>\nX-Failed-Recipients: z@example.org\n\
Subject: Mail delivery failed: returning message to sender\n\nUser unknown (contact support@example.org)\n";
        assert_eq!(parse(bare).bounces.iter().map(|b| b.recipient.as_str()).collect::<Vec<_>>(), ["z@example.org"]);
    }

    #[test]
    fn a_persons_mail_that_carries_a_message_is_no_notice_about_it() {
        // A person forwards a message as an attachment and writes "bounce" and "error" in
        // the text: no mail system wrote it, so the attached message's recipient did not fail.
        let mail = |headers: &str, subject: &str| {
            format!(
                "{headers}From: Cat <cat@example.com>\nTo: Dog <dog@example.com>\nSubject: {subject}\n\
MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n\
--b\nContent-Type: text/plain\n\nThis is not a bounce, whatever the error said.\n\n\
--b\nContent-Type: message/rfc822\n\nFrom: Cat <cat@example.com>\nTo: Dog <dog@example.com>\nSubject: original\n\nsomething\n\n--b--\n"
            )
            .into_bytes()
        };
        let p = parse(&mail("Return-Path: <cat@example.com>\n", "original as attachment"));
        assert_eq!((p.kind, p.bounces.len()), (MessageKind::NotBounce, 0));
        // The same words from a mail system (a null return path, a failure subject) are a
        // notice whose only named recipient is the carried message's.
        for (headers, subject) in [("Return-Path: <>\n", "original as attachment"), ("", "Undeliverable: original")] {
            let p = parse(&mail(headers, subject));
            assert_eq!(
                p.bounces.iter().map(|b| b.recipient.as_str()).collect::<Vec<_>>(),
                ["dog@example.com"],
                "{headers}{subject}"
            );
        }
    }

    #[test]
    fn a_sendmail_result_line_for_the_next_target_is_not_the_account_of_this_one() {
        // sendmail writes a host's result line before the line of the address it concerns:
        // "Host unknown" below kit@ is the account of the two addresses after it.
        let raw = b"From: Mail Delivery Subsystem <MAILER-DAEMON@example.com>\nSubject: Returned mail: User unknown\n\
To: me@example.jp\n\n   ----- Transcript of session follows -----\nWhile talking to mx.example.edu:\n>>> DATA\n\
<<< 554 Transaction failed\n\
554 <kit@example.edu>... Remote protocol error: Connection reset by peer\n\
550 example.org (smtp)... 550 Host unknown\n\
554 <cat@example.org>... 550 Host unknown (Authoritative answer from name server)\n\
554 <dog@example.org>... 550 Host unknown (Authoritative answer from name server)\n\n\
   ----- Unsent message follows -----\nFrom: me@example.jp\nTo: cat@example.org\nSubject: hi\n\nhi\n";
        let p = parse(raw);
        let read: Vec<_> = p.bounces.iter().map(|b| (b.recipient.as_str(), b.kind, b.reason)).collect();
        assert_eq!(read.len(), 3, "{read:?}");
        assert_eq!(read[0].0, "kit@example.edu");
        assert_ne!(read[0].2, Reason::HostUnknown, "{read:?}");
        assert_eq!(read[0].1, BounceType::Transient);
        for r in &read[1..] {
            assert_eq!((r.1, r.2), (BounceType::Permanent, Reason::HostUnknown), "{read:?}");
        }
        // A reply that merely holds "..." further on, or the address's own result line, is
        // no other target's line.
        assert_eq!(text::sendmail_target("550 example.org (smtp)... 550 Host unknown"), Some("example.org (smtp)"));
        assert_eq!(text::sendmail_target("554 <b@example.org>... User unknown"), Some("<b@example.org>"));
        assert_eq!(text::sendmail_target("550 5.1.1 sorry... no such user"), None);
        assert_eq!(text::sendmail_target("<<< 550 <b@example.org>... User unknown"), None);
    }

    #[test]
    fn a_google_group_that_refuses_a_post_is_a_rejection() {
        let raw = b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\nTo: me@example.com\n\
Subject: Delivery Status Notification (Failure)\nX-Failed-Recipients: list@googlegroups.com\n\n\
Bonjour me@example.com,\n\nIl se peut que le groupe que vous avez essay\xc3\xa9 de contacter n'existe pas.\n";
        let b = &parse(raw).bounces[0];
        assert_eq!(
            (b.recipient.as_str(), b.kind, b.reason),
            ("list@googlegroups.com", BounceType::Transient, Reason::Rejected)
        );
    }

    #[test]
    fn every_recipient_is_a_mailbox() {
        // Found by the `bounce` fuzz target: a mangled To header read as "date:fri, ...".
        let raw = include_bytes!("../../tests/data/fuzz-recipient-without-at.eml");
        assert!(parse(raw).bounces.iter().all(|b| b.recipient.contains('@')));
    }

    #[test]
    fn a_report_part_after_the_returned_original_is_still_read() {
        // Most MTAs put the original last, and the reader skips its body; one that puts the
        // report after it must lose nothing.
        let raw = b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.com\nSubject: Undelivered Mail\n\
MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n\
--b\nContent-Type: text/plain\n\nI'm sorry.\n\n\
--b\nContent-Type: message/rfc822\n\nMessage-ID: <orig@example.com>\nTo: gone@example.org\n\nbody\n\n\
--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n\
Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.2.2\n\n--b--\n";
        let p = parse(raw);
        assert_eq!(p.bounces.len(), 1);
        assert_eq!((p.bounces[0].recipient.as_str(), p.bounces[0].reason), ("gone@example.org", Reason::MailboxFull));
        assert_eq!(p.links.original_message_id.as_deref(), Some("<orig@example.com>"));
    }

    #[test]
    fn a_report_is_read_for_a_bounded_number_of_recipients() {
        let blocks: String = (0..3 * MAX_RECIPIENTS)
            .map(|i| format!("Final-Recipient: rfc822;u{i}@example.org\nAction: failed\nStatus: 5.1.1\n\n"))
            .collect();
        let raw = format!(
            "From: MAILER-DAEMON@x.org\nSubject: Undelivered Mail\nContent-Type: multipart/report; boundary=b\n\n--b\n\nfailed\n--b\nContent-Type: message/delivery-status\n\n{blocks}--b--\n"
        );
        assert_eq!(parse(raw.as_bytes()).bounces.len(), MAX_RECIPIENTS);
        let named: String = (0..3 * MAX_RECIPIENTS).map(|i| format!("u{i}@example.org\n")).collect();
        let raw = format!("From: MAILER-DAEMON@x.org\nSubject: Undelivered Mail\n\nDelivery failed:\n{named}");
        assert_eq!(parse(raw.as_bytes()).bounces.len(), MAX_RECIPIENTS);
    }

    #[test]
    fn a_family_reader_reads_its_format_and_the_generic_reader_stays_the_fallback() {
        // Domino: the address and the directory's verdict in separate sections. The server
        // holds the mailbox, so "not listed" is its own answer: permanent and suppressed.
        let domino = "From: Postmaster@example.jp\nTo: s@example.com\nSubject: DELIVERY FAILURE: User K (k@example.jp) not listed in Domino Directory\n\n\
            Your message\n\n  Subject: Hi\n\nwas not delivered to:\n\n  k@example.jp\n\nbecause:\n\n  User K (k@example.jp) not listed in Domino Directory\n";
        let p = parse(domino.as_bytes());
        assert_eq!(p.reporter, Family::Domino);
        let b = &p.bounces[0];
        assert_eq!(
            (b.recipient.as_str(), b.kind, b.reason, b.suppress),
            ("k@example.jp", BounceType::Permanent, Reason::UserUnknown, true)
        );
        assert_eq!(b.stage, Stage::Local);
        // Without its reader the same notice is read by the generic one, which cannot tell
        // whose words "not listed" are: a filter's, never suppressed.
        let g = parse_without_reader(domino.as_bytes(), Rules::standard(), Family::Domino);
        assert_eq!(g.reporter, Family::Domino);
        assert!(g.bounces.iter().all(|b| !b.suppress));
        // Exim: the listed address is the failed one, whatever X-Failed-Recipients says.
        let exim = "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\nX-Failed-Recipients: a@example.jp\nSubject: Mail delivery failed: returning message to sender\n\n\
            This message was created automatically by mail delivery software.\n\nA message that you sent could not be delivered to one or more of its\n\
            recipients. This is a permanent error. The following address(es) failed:\n\n  a@example.or.jp\n    SMTP error from remote mail server after RCPT TO:<a@example.or.jp>:\n    host mx.example.or.jp [192.0.2.1]: 550 5.1.1 User unknown\n";
        let p = parse(exim.as_bytes());
        assert_eq!(p.reporter, Family::Exim);
        let r: Vec<_> = p.bounces.iter().map(|b| (b.recipient.as_str(), b.kind, b.stage)).collect();
        assert_eq!(r, [("a@example.or.jp", BounceType::Permanent, Stage::Recipient)]);
        // A notice its family's reader cannot follow still gets the generic reading.
        let odd = "From: Mail Delivery System <Mailer-Daemon@mx.example.org>\nX-Failed-Recipients: z@example.org\nSubject: Mail delivery failed: returning message to sender\n\nUser unknown\n";
        let p = parse(odd.as_bytes());
        assert_eq!((p.reporter, p.bounces.len()), (Family::Exim, 1));
        assert_eq!(p.bounces[0].recipient, "z@example.org");
    }

    #[test]
    fn a_family_reader_is_bounded_too() {
        // A Domino notice listing 20,000 addresses under one 600 KB reason: each address
        // must not carry its own copy of the reason (that was 12 GB), and at most
        // MAX_RECIPIENTS are read.
        let to: String = (0..20_000).map(|i| format!("  u{i}@example.org\n")).collect();
        let because = "x".repeat(600_000);
        let raw = format!(
            "From: Postmaster@example.jp\nSubject: DELIVERY FAILURE: x\n\nwas not delivered to:\n\n{to}\nbecause:\n\n  {because}\n"
        );
        let p = parse(raw.as_bytes());
        assert_eq!(p.reporter, Family::Domino);
        assert!(p.bounces.len() <= MAX_RECIPIENTS);
    }
}
