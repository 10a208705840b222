//! Why a recipient was refused, and what follows from it.
//!
//! One reading of a refusal — its words, its RFC 3463 status, its reply code and the SMTP step
//! it answered — shared by live SMTP replies ([`super::classify_at`], the worker) and bounce
//! reports ([`crate::inbound`]), and the one suppression policy ([`Verdict::suppress`]).
//!
//! Invariants:
//! - Total: every input gets a verdict; nothing here panics.
//! - A live reply's verdict is a function of (text, status, code, stage) alone. A report may
//!   add what the rest of it says ([`Basis::Context`]) only where the refusal's own words and
//!   status say nothing known; otherwise both paths give the same verdict (tested on every
//!   message of the corpus).
//! - Only [`Verdict::suppress`] puts an address on the suppression list, and only on evidence
//!   that the address itself is unusable (see [`verdict`] for each mapping and its RFC).

use super::codes::Provider;
use super::{BounceSubtype, BounceType, EnhancedStatus};
use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::LazyLock;

/// The finer reason carried beside the type (Sisimai's vocabulary, which the corpus uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// The mailbox does not exist.
    UserUnknown,
    /// The domain does not exist or takes no mail.
    HostUnknown,
    /// The recipient has moved (a forwarding notice).
    HasMoved,
    /// The domain takes no mail (a null MX).
    NotAccept,
    /// The mailbox is full.
    MailboxFull,
    /// The message is larger than the server takes.
    MesgTooBig,
    /// A size or count limit of the recipient was exceeded.
    ExceedLimit,
    /// Refused as spam.
    SpamDetected,
    /// Refused for a virus.
    VirusDetected,
    /// The content was refused.
    ContentError,
    /// A policy of the receiving side refused it.
    PolicyViolation,
    /// The message does not follow the RFCs.
    NotCompliantRfc,
    /// The sending address or host is blocked.
    Blocked,
    /// The sender was refused.
    Rejected,
    /// A filter refused it (often an unknown user said after DATA).
    Filtered,
    /// The mailbox is suspended or disabled.
    Suspend,
    /// Delivery gave up after retrying.
    Expired,
    /// Sender authentication (SPF, DKIM, DMARC) failed.
    AuthFailure,
    /// The sending host lacks a PTR record.
    RequirePtr,
    /// A network failure.
    NetworkError,
    /// Too many connections.
    TooManyConn,
    /// A security (TLS) failure.
    SecurityError,
    /// A failure of the mailer itself.
    MailerError,
    /// A system failure on the receiving side.
    SystemError,
    /// The receiving system is out of space.
    SystemFull,
    /// The sender's reputation is bad.
    BadReputation,
    /// Too much mail too fast.
    Speeding,
    /// Relaying was refused.
    NoRelaying,
    /// An SMTP syntax error.
    SyntaxError,
    /// Held, its fate undecided.
    OnHold,
    /// No reason could be read.
    Undefined,
}

impl Reason {
    /// Whether the reason itself says the address cannot be delivered to, ever: no such user
    /// or host, moved away, a domain that takes no mail. What the policy (`verdict`) weighs
    /// against the step and the status before it suppresses.
    pub const fn names_the_address_gone(self) -> bool {
        matches!(self, Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved | Reason::NotAccept)
    }

    /// The hosted service's type and subtype for this reason; `code_class` is the reply's
    /// class (4 or 5) where known. `text` decides AttachmentRejected.
    pub fn classify(self, code_class: Option<u8>, text: &str) -> (BounceType, BounceSubtype) {
        use BounceSubtype as S;
        use BounceType as T;
        match self {
            // A 4xx reply is the server's word that the failure is transient (RFC 5321
            // §4.2.1): "421 4.1.1 … unverified address: Address verification in progress",
            // Mimecast's "451 Invalid Recipient" while its directory catches up. The words
            // name the reason; the class says it may pass.
            r if r.names_the_address_gone() && code_class != Some(4) => (T::Permanent, S::General),
            Reason::OnHold | Reason::Undefined => (T::Undetermined, S::Undetermined),
            Reason::MailboxFull => (T::Transient, S::MailboxFull),
            Reason::MesgTooBig | Reason::ExceedLimit => (T::Transient, S::MessageTooLarge),
            Reason::SpamDetected
            | Reason::ContentError
            | Reason::VirusDetected
            | Reason::PolicyViolation
            | Reason::NotCompliantRfc => {
                let t = text.to_ascii_lowercase();
                if t.contains("attachment") || t.contains("file type") || t.contains("extension") {
                    (T::Transient, S::AttachmentRejected)
                } else {
                    (T::Transient, S::ContentRejected)
                }
            }
            _ => (T::Transient, S::General),
        }
    }
}

/// The step of the SMTP dialogue a refusal answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// `RCPT TO`: the server judged the recipient.
    Recipient,
    /// `DATA` (or a step after `RCPT TO` not told apart): the server judged the message.
    Message,
    /// `MAIL FROM`: the server judged the sender or the connection. No recipient had been
    /// named yet, so nothing it says is evidence about one.
    Sender,
    /// No SMTP step: the reporting server holds the mailbox and looked it up itself (a
    /// Domino directory, a qmail or Exim local delivery). Its "no such user" is the mailbox
    /// store's own answer, as good as one given to `RCPT TO`.
    Local,
    /// Not said.
    Unknown,
}

impl Stage {
    /// The step a refusal's words name (`in reply to RCPT TO command`, `after end of data`),
    /// in any case. Words naming RCPT TO win over words naming another step.
    pub fn named_in(text: &str) -> Stage {
        Stage::named_in_any(&[text])
    }

    /// [`Stage::named_in`] over several texts read as one account.
    pub(crate) fn named_in_any(texts: &[&str]) -> Stage {
        let mut seen = [false; 3];
        // The words are searched for in a lower-cased copy, not case-blind: aho-corasick's
        // vectorised prefilter works only on an exact search, and with it the search runs
        // several times faster, copy included (a case-blind one reads every byte).
        let mut lower = String::new();
        for t in texts {
            lower.clear();
            lower.push_str(t);
            lower.make_ascii_lowercase();
            Stage::mark(&lower, &mut seen);
        }
        Stage::of(seen)
    }

    /// [`Stage::named_in`] of a text already lower-cased.
    pub(crate) fn named_in_lowercase(lower: &str) -> Stage {
        let mut seen = [false; 3];
        Stage::mark(lower, &mut seen);
        Stage::of(seen)
    }

    /// Marks which list's words occur in `lower`.
    fn mark(lower: &str, seen: &mut [bool; 3]) {
        // (A plain search, which skips ahead with a prefilter: no word of one list holds a
        // word of another or runs into one by more than a letter, so no match hides another
        // list's. `stage_words_do_not_overlap` keeps that true.)
        for m in STAGE_WORDS.as_ref().map(|ac| ac.find_iter(lower)).into_iter().flatten() {
            // (The automaton holds AT_RCPT, then AFTER_RCPT, then AT_MAIL.)
            let i = m.pattern().as_usize();
            let list = if i < AT_RCPT.len() {
                0
            } else if i < AT_RCPT.len() + AFTER_RCPT.len() {
                1
            } else {
                2
            };
            seen[list] = true;
        }
    }

    /// RCPT TO's words win (only the recipient was judged there), then DATA's; MAIL FROM's
    /// only when no later step is named (a notice that names both failed at the later one).
    fn of(seen: [bool; 3]) -> Stage {
        match seen {
            [true, _, _] => Stage::Recipient,
            [false, true, _] => Stage::Message,
            [false, false, true] => Stage::Sender,
            _ => Stage::Unknown,
        }
    }
}

/// Words saying the server refused at RCPT time.
const AT_RCPT: &[&str] = &[
    "rcpt to",
    "rcpt:",
    ":rcpt ",
    "rcpt_to",
    "in reply to rcpt",
    "after rcpt",
    "recipient address rejected",
    "not recognized",
    // qmail-remote's fixed words for a refused RCPT TO ("… does not like recipient. Remote
    // host said: 550 …").
    "does not like recipient",
];
/// Words saying the server refused after the message was sent.
const AFTER_RCPT: &[&str] = &["end of data", "after data", "reply to data", "after message"];
/// Words saying the server refused `MAIL FROM` (postfix's "in reply to MAIL FROM command",
/// Exim's "SMTP error from remote mail server after MAIL FROM:<…>").
const AT_MAIL: &[&str] = &["after mail from", "reply to mail from"];

/// Both word lists (lower-case) in one automaton: one pass over a lower-cased refusal instead
/// of a search per phrase. Leftmost-first, because aho-corasick uses its vectorised (Teddy)
/// prefilter only under leftmost semantics.
static STAGE_WORDS: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> = std::sync::LazyLock::new(|| {
    aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostFirst)
        .build(AT_RCPT.iter().chain(AFTER_RCPT).chain(AT_MAIL))
        .ok()
});

/// What decided a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The refusal's own words.
    Words,
    /// Its enhanced status code (RFC 3463).
    Status,
    /// The rest of the report (its other lines, its `Action: delayed`): reports only.
    Context,
    /// Nothing but the reply code's class, or nothing at all.
    Code,
    /// A mailbox provider's own reason code in the refusal ([`super::codes`]).
    Provider,
}

/// The reading of one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The finer reason.
    pub reason: Reason,
    /// Permanent, Transient or Undetermined.
    pub kind: BounceType,
    /// The subtype within the type.
    pub subtype: BounceSubtype,
    /// The address itself is unusable: it goes on the suppression list.
    pub suppress: bool,
    /// What decided the reason.
    pub basis: Basis,
}

/// Reads one refusal with the standard rules: its text, status and code, and the step it
/// answered.
pub fn judge(text: &str, status: Option<EnhancedStatus>, code: Option<u16>, stage: Stage) -> Verdict {
    judge_with(Rules::standard(), text, status, code, stage, None)
}

/// What the rest of a report says, for the recipients whose own lines say nothing known.
pub(crate) struct Context<'a> {
    /// The start of the report's human account, with its rule hits.
    pub(crate) head: &'a Head<'a>,
    /// The report's action for this recipient was `delayed`.
    pub(crate) delayed: bool,
    /// This is the report's only failed recipient, so all of the account is about it.
    pub(crate) only_recipient: bool,
}

/// [`judge`] with given rules and, for reports, their context.
pub(crate) fn judge_with(
    rules: &Rules,
    text: &str,
    status: Option<EnhancedStatus>,
    code: Option<u16>,
    stage: Stage,
    context: Option<&Context<'_>>,
) -> Verdict {
    let status = specific_status(status, text);
    let (reason, basis) = reason(rules, text, status, code, context);
    // A failure with no code and no status takes its class from the report when the report
    // calls it permanent (Exim's and qmail's fixed "This is a permanent error", Gmail's
    // "failed permanently"): with nothing else known it then reads as a bare 5xx does
    // (Permanent/General, never suppressed), not as a failure nobody can place (Undetermined).
    // The class decides nothing else where no status is given.
    let status = status.or_else(|| {
        let permanent = code.is_none() && context.is_some_and(|c| !c.delayed && c.head.says_permanent());
        permanent.then_some(EnhancedStatus { class: 5, subject: 0, detail: 0 })
    });
    verdict(reason, basis, status, code, stage, text)
}

/// The type, subtype and suppression that follow from a reason: the one policy.
///
/// - **Unknown user** (x.1.1 / x.1.3, RFC 3463 §3.2 "bad destination
///   mailbox address", or its words said at `RCPT TO`, by the server holding the mailbox
///   ([`Stage::Local`]), or under an x.1.x status other than the sender's x.1.7/x.1.8, or 5.2.1):
///   permanent, and suppressed. The same words at another step, or at a step not said with
///   no such status, are a filter's answer dressed as "no such user" (content gateways say it
///   after `DATA`): reason `filtered`, transient, never suppressed.
/// - **Unknown host** (x.1.2 "bad destination system address", x.4.4 in class 5 "unable to
///   route"), **moved** (x.1.6 "destination mailbox has moved"), **takes no mail** (a null MX,
///   x.1.10, RFC 7505, in class 5): permanent, suppressed.
/// - **Disabled mailbox in class 5** (5.2.1, RFC 3463 §3.3 "mailbox disabled, not accepting
///   messages" — permanent in class 5): permanent, suppressed. Disabled or suspended in words
///   only, or in class 4: transient (accounts are suspended and come back).
/// - **A permanent refusal whose words and status name nothing known** (5xx or 5.x.x only):
///   permanent/General, reason `undefined`, **not** suppressed. Why: RFC 5321 §4.2.1 says a
///   5yz reply must not be repeated as it was, so retrying or calling it transient is wrong,
///   and that is what the hosted service reports; but nothing says the address is gone, so it
///   stays off the list. (Transient, the earlier answer, lost most hard bounces whose wording
///   was new.)
/// - A 4xx refusal is never permanent and never suppresses, whatever its words: the server
///   itself says it may pass (RFC 5321 §4.2.1), and the live SMTP path ends such an email
///   transient when its retries run out.
///   Nor does an x.7.x one (RFC 3463 §3.8, security or policy: about the sender, its content
///   or standing); "user unknown" under x.7.x is read as `filtered` — except when said at
///   `RCPT TO` or by the server holding the mailbox, where only the recipient is judged and
///   servers do put x.7.1 on a missing mailbox (Gmail's "550 5.7.1 No such user", qmail's
///   badrcptto, "550 5.7.1 No mailbox found"; Sisimai and Mail::DeliveryStatus::BounceParser
///   both read them as unknown users): permanent and suppressed, as without the status.
/// - **A refusal of `MAIL FROM`** ([`Stage::Sender`]) that names the recipient unusable or
///   names nothing known is `rejected` (a refusal of the sender: no recipient had been named),
///   transient, never suppressed.
/// - Everything else: transient, by [`Reason::classify`]'s subtypes.
pub fn verdict(
    mut reason: Reason,
    basis: Basis,
    status: Option<EnhancedStatus>,
    code: Option<u16>,
    stage: Stage,
    text: &str,
) -> Verdict {
    let class = code.map(|c| (c / 100) as u8).or(status.map(|s| s.class));
    // x.1.7 / x.1.8 are the *sender's* address status (RFC 3463 §3.2). (Not x.7.27, which
    // RFC 7505 gives a sender's null MX: sendmail reports a recipient's under it.)
    let about_the_sender = status.is_some_and(|s| s.subject == 1 && matches!(s.detail, 7 | 8));
    // 551 ("user not local") answers RCPT TO alone (RFC 5321 §4.3.2): the code names the step
    // when nothing else does.
    let stage = if stage == Stage::Unknown && code == Some(551) { Stage::Recipient } else { stage };
    // x.1.x and 5.2.1 are the status's own evidence; otherwise "no such user" counts only when
    // the server said it to RCPT TO, or the server holding the mailbox said it of its own.
    let status_says_gone = !about_the_sender
        && status.is_some_and(|s| s.subject == 1 || (s.class == 5 && s.subject == 2 && s.detail == 1));
    // x.7.x is security or policy (RFC 3463 §3.8): whatever the words, a refusal about the
    // sender, its content or its standing, never evidence that the address is gone.
    // Except for a mailbox's absence said in words at RCPT TO (or by the server holding it):
    // servers do put x.7.1 on "No such user" there (Gmail's "550 5.7.1 No such user", qmail's
    // badrcptto), and at that step nothing but the recipient is being judged.
    let said_at_rcpt = matches!(stage, Stage::Recipient | Stage::Local);
    let policy_status = status.is_some_and(|s| s.subject == 7) && !(said_at_rcpt && reason == Reason::UserUnknown);
    // A provider's code for an invalid recipient is the mailbox provider's own statement,
    // whatever step it answered.
    let said_of_the_mailbox = said_at_rcpt || basis == Basis::Provider;
    if reason == Reason::UserUnknown && ((!said_of_the_mailbox && !status_says_gone) || policy_status) {
        reason = Reason::Filtered;
    }
    // A refusal of `MAIL FROM` judged the sender or the connection: no recipient had been
    // named. Words or a status that would name the recipient unusable ("550 5.1.1 User
    // unknown" from a server that verifies senders, Gmail's "550 5.7.27 … publishes a null
    // MX record" of our return path's domain, "550 5.2.1 … account disabled" of our sending
    // account), or no known cause at all, are a rejection of the sender there: transient,
    // never suppressed.
    if stage == Stage::Sender
        && (reason.names_the_address_gone() || matches!(reason, Reason::Filtered | Reason::Suspend | Reason::Undefined))
    {
        reason = Reason::Rejected;
    }
    // A status that says what was wrong, and that it was not the recipient, outweighs words
    // that would name the recipient unusable: the sender's address (postfix evaluates sender
    // restrictions at RCPT TO, so "550 5.1.7 Invalid address" can answer that step), or
    // x.5.1–x.5.6 the dialogue ("501 5.5.4 Invalid domain name" is our HELO's). (x.5.0 is
    // not among them: providers put "mailbox unavailable" under it.)
    let about_the_dialogue = status.is_some_and(|s| s.subject == 5 && (1..=6).contains(&s.detail));
    if (about_the_sender || about_the_dialogue) && reason.names_the_address_gone() {
        reason = if about_the_sender { Reason::Rejected } else { Reason::SyntaxError };
    }
    // A disabled or inactive mailbox is gone for good when the status says so: 5.2.1, or a
    // bad destination mailbox (5.1.x: iCloud's "550 5.1.1 <a@icloud.com>: inactive email
    // address"), the same evidence that makes "no such user" permanent.
    let disabled_for_good =
        reason == Reason::Suspend && class == Some(5) && status_says_gone && status.is_some_and(|s| s.class == 5);
    let said_nothing_known = basis == Basis::Code && reason == Reason::Undefined;
    let (kind, subtype) = if disabled_for_good || (said_nothing_known && class == Some(5)) {
        (BounceType::Permanent, BounceSubtype::General)
    } else if said_nothing_known && class == Some(4) {
        (BounceType::Transient, BounceSubtype::General)
    } else {
        reason.classify(class, text)
    };
    let unusable = reason.names_the_address_gone() || disabled_for_good;
    // (Permanent already says the class is not 4: `Reason::classify` keeps a 4xx transient,
    // and a disabled mailbox counts only under class 5.)
    let suppress = unusable && kind == BounceType::Permanent && !policy_status;
    Verdict { reason, kind, subtype, suppress, basis }
}

/// The reason, from the words first (they are more specific than codes), then the status,
/// then (reports only) the rest of the report, then the code.
fn reason(
    rules: &Rules,
    text: &str,
    status: Option<EnhancedStatus>,
    code: Option<u16>,
    context: Option<&Context<'_>>,
) -> (Reason, Basis) {
    use Reason as R;
    // A permanent "unable to route" (5.4.4) is a destination that cannot be found, whatever
    // the resolver's words ("name service error") say about how — unless they say the lookup
    // itself broke (a malformed or unexpected reply, a server that said "try again"): that is
    // the resolver's failure, not evidence that the destination is gone, and it passes.
    // (Read only for a network error under 5.4.4, and in place, without a lower-cased copy.)
    let unroutable = status.is_some_and(|s| s.class == 5 && s.subject == 4 && s.detail == 4);
    let broke_in = |text: &str| {
        ["malformed", "unexpected name server", "try again", "servfail"].iter().any(|w| contains_ascii_ci(text, w))
    };
    let lookup_broke = || broke_in(text);
    let routed = |r: Reason| if r == R::NetworkError && unroutable && !lookup_broke() { R::HostUnknown } else { r };
    // "DNS Error" and "Name service error" say that a lookup failed, not how; words that say
    // the name does not exist ("DNS Error: Domain name not found", Gmail's; postfix's "Host or
    // domain name not found. Name service error for name=…") say how, unless the same words
    // say the lookup itself broke (sendmail's "Host not found, try again", a SERVFAIL) or the
    // status is temporary (Gmail files an NXDOMAIN it gave up on under `Status: 4.0.0`; the
    // labels read that as a network error, and a 4.x.x status never makes an address unusable).
    let temporary = status.is_some_and(|s| s.class == 4);
    let named = |r: Reason, hits: u64, text: &str| {
        if r == R::NetworkError && !temporary && first_rule(hits, |x| x == R::HostUnknown).is_some() && !broke_in(text)
        {
            R::HostUnknown
        } else {
            r
        }
    };
    // An explicit "bad destination mailbox" (x.1.1, x.1.3, x.1.10) is the server's own
    // verdict on the address. Words about the content (a scanner's disclaimer in the same
    // text or in the report around it: "virus", "spam") or a retry story do not outweigh it;
    // words that say why the address was refused (a block, a rate, a sender or SPF refusal)
    // still do — servers do put 5.1.x on those.
    // (The statuses whose own reason says the address is unusable: see `reason_of_status`.)
    let bad_mailbox = status.and_then(reason_of_status).is_some_and(|r| matches!(r, R::UserUnknown | R::NotAccept));
    let outweighed = |r: Reason| {
        bad_mailbox
            && matches!(r, R::VirusDetected | R::SpamDetected | R::ContentError | R::NotCompliantRfc | R::Expired)
    };
    // Microsoft's directory-based edge blocking says the mailbox is not in the tenant as
    // "550 5.4.1 [a@b]: Recipient address rejected: Access denied". The same words under
    // any other status, or none, are postfix's default answer for an access(5) REJECT, a
    // policy of the receiving site: a block, never evidence that the address is gone.
    let edge_blocked = |text: &str| {
        status.is_some_and(|s| s.class == 5 && s.subject == 4 && s.detail == 1)
            && contains_ascii_ci(text, "recipient address rejected: access denied")
    };
    if edge_blocked(text) {
        return (R::UserUnknown, Basis::Words);
    }
    // (Words are read across the lines of a multi-line reply: "… content presents a potential
    // 552-5.7.0 security issue" holds a rule's words once the line's code is gone.)
    let hits = rules.hits(&joined_reply(text));
    // A provider's documented code says what its generic words do not. (The tables predate
    // the `authfailure` reason and file SPF refusals as blocks and DMARC failures as policy:
    // words that name a sender-authentication failure keep that finer reason.)
    if let Some(r) = super::codes::reason(text, rules.providers) {
        if matches!(r, R::Blocked | R::PolicyViolation) && first_rule(hits, |w| w == R::AuthFailure).is_some() {
            return (R::AuthFailure, Basis::Words);
        }
        return (r, Basis::Provider);
    }
    if let Some(r) = first_rule(hits, |_| true) {
        let r = named(r, hits, text);
        if outweighed(r) {
            return (R::UserUnknown, Basis::Status);
        }
        // Postfix's bare "Recipient address rejected:" prefixes every RCPT restriction, so
        // when nothing after it is known, a status that names another cause says more
        // ("554 5.3.4 …: Recipient address rejected: <new words about size>" is a size). So
        // does one beside the weak words of an expired queue ("550 5.2.1 Account expired").
        if hits & !YIELDS_TO_STATUS == 0
            && let Some(by_status) = status.and_then(reason_of_status)
            && (hits != CATCH_ALL || by_status != R::UserUnknown)
        {
            return (routed(by_status), Basis::Status);
        }
        return (routed(r), Basis::Words);
    }
    // The refusal said nothing useful: the report's own words. With one failed recipient
    // the whole account is about it; with several, only the reasons a whole message can
    // speak for (a queue that expired, a host that does not exist).
    if let Some(c) = context
        && (c.only_recipient || text.len() < 120)
    {
        if edge_blocked(c.head.text) {
            return (R::UserUnknown, Basis::Context);
        }
        // A message still being retried was not refused for its content: in a delay notice,
        // words about content are a scanner's footer ("analizado con NOD32 antivirus"), not
        // the reason of the delay.
        let content = |r: Reason| matches!(r, R::VirusDetected | R::SpamDetected | R::ContentError);
        let hits = c.head.hits(rules);
        if let Some(r) = first_rule(hits, |r| {
            (c.only_recipient || matches!(r, R::Expired | R::MailboxFull | R::HostUnknown | R::MesgTooBig | R::Suspend))
                && !(c.delayed && content(r))
        }) {
            let r = named(r, hits, c.head.text);
            // (A gateway's footer under a report that says 5.1.1: the status speaks.)
            if outweighed(r) {
                return (R::UserUnknown, Basis::Status);
            }
            return (routed(r), Basis::Context);
        }
    }
    if let Some(r) = status.and_then(reason_of_status) {
        return (r, Basis::Status);
    }
    if let Some(c) = context {
        if let Some(r) = first_rule(c.head.hits(rules), |r| {
            matches!(r, R::UserUnknown | R::MailboxFull | R::HostUnknown | R::Expired | R::MesgTooBig)
        }) {
            return (r, Basis::Context);
        }
        if c.delayed {
            return (R::Expired, Basis::Context);
        }
    }
    // Nothing but a code: a refusal whose cause the server kept to itself.
    match code {
        Some(552) => (R::MailboxFull, Basis::Code),
        _ => (R::Undefined, Basis::Code),
    }
}

/// `text` with the line prefixes of a multi-line SMTP reply taken out, so that words a line
/// break split are read whole. A multi-line reply repeats its code on every line, with `-`
/// after it on all but the last (RFC 5321 §4.2.1: "250-First line", "250 Last line"), and
/// servers repeat their enhanced status too ("550-5.1.1 … Please try 550-5.1.1 double-checking
/// …"; a transcript adds its `<<< `). Only the prefixes that repeat the code of the first
/// line that says more lines follow are taken out; any other text is returned as it is,
/// unallocated.
fn joined_reply(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    // The first line of a multi-line reply: a code (three digits, 2–5 first, at a word's
    // start) with `-` after it. Found from the dashes, so that the many texts with none cost
    // one vectorised scan: every text a rule reads passes here.
    let first = memchr::memchr_iter(b'-', b).filter(|&d| d >= 3).map(|d| d - 3).find(|&i| {
        matches!(b[i], b'2'..=b'5')
            && b[i + 1].is_ascii_digit()
            && b[i + 2].is_ascii_digit()
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
    });
    let Some(first) = first else { return Cow::Borrowed(text) };
    let code = &b[first..first + 3];
    // A continuation prefix after the first line: the same code, then `-` or a space, then an
    // optional enhanced status and its space.
    let prefix_len = |at: usize| -> Option<usize> {
        // (After white space only: "192.0.2.550 rejected" holds no prefix.)
        if at == 0 || !b[at - 1].is_ascii_whitespace() || b.get(at..at + 3)? != code {
            return None;
        }
        if !matches!(b.get(at + 3)?, b'-' | b' ') {
            return None;
        }
        // Then the line's enhanced status, if it repeats one, and the space after it. (A
        // status is at most 11 bytes: only that far is looked at.)
        let after_code = at + 4;
        let end = match b[after_code..].iter().take(12).position(u8::is_ascii_whitespace) {
            Some(p) if text.get(after_code..after_code + p).and_then(EnhancedStatus::parse).is_some() => {
                after_code + p + 1
            }
            _ => after_code,
        };
        Some(end - at)
    };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = first + 4;
    while let Some(off) = memchr::memmem::find(&b[at..], code) {
        let i = at + off;
        match prefix_len(i) {
            Some(len) => {
                // (A transcript's `<<< ` before the prefix goes with it. Cuts are at ASCII
                // bytes: a digit, a `<`, or just past a space.)
                let start = if text[copied..i].ends_with("<<< ") { i - 4 } else { i };
                out.push_str(&text[copied..start]);
                copied = i + len;
                at = copied;
            }
            None => at = i + 1,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Whether `hay` holds ASCII `needle` (lower-case), ignoring ASCII case; in place, without a
/// lower-cased copy. (Every text holds the empty needle.)
pub(crate) fn contains_ascii_ci(hay: &str, needle: &str) -> bool {
    needle.is_empty() || hay.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The reason an enhanced status names by itself, if any: RFC 3463's subjects and details,
/// RFC 7372's authentication statuses and RFC 7505's null MX ones.
fn reason_of_status(s: EnhancedStatus) -> Option<Reason> {
    use Reason as R;
    Some(match (s.subject, s.detail) {
        // x.1.1 bad destination mailbox, x.1.3 bad destination mailbox syntax. (Not x.1.0,
        // "other address status" (RFC 3463 §3.2): it does not say whose address, and servers
        // put it on refusals of the sender ("550 5.1.0 <bounce@…> sender rejected", an SPF
        // refusal). Alone it names nothing; it still backs words that name the recipient
        // unknown, as every x.1.x does in `verdict`.)
        (1, 1) | (1, 3) => R::UserUnknown,
        // x.1.10 the recipient's domain has a null MX (RFC 7505 §4.2): it takes no mail.
        (1, 10) => R::NotAccept,
        (1, 2) => R::HostUnknown,
        (1, 6) => R::HasMoved,
        // x.1.7 bad sender mailbox syntax, x.1.8 bad sender system address: about us.
        (1, 7) | (1, 8) => R::Rejected,
        // 5.2.0: "the mailbox exists, but something about the destination mailbox has caused
        // the sending of this DSN" (RFC 3463 §3.3). The address is good; the mailbox's own
        // settings refused this message (Japanese carriers' reception filters say no more).
        (2, 0) if s.class == 5 => R::Filtered,
        (2, 2) => R::MailboxFull,
        (2, 3) => R::ExceedLimit,
        (3, 1) => R::SystemFull,
        (3, 4) => R::MesgTooBig,
        (2, 1) => R::Suspend,
        // x.2.4 mailing list expansion problem: the list's, "permanent or persistent transient".
        (2, 4) => R::SystemError,
        (4, 7) => R::Expired,
        (4, 4) if s.class == 5 => R::HostUnknown,
        (4, _) => R::NetworkError,
        (7, 1) => R::Blocked,
        // RFC 7372: x.7.20–x.7.24 DKIM and SPF failures, x.7.26 several checks failed;
        // x.7.25 reverse DNS validation failed.
        (7, 20..=24) | (7, 26) => R::AuthFailure,
        (7, 25) => R::RequirePtr,
        // RFC 7505 §4.2: x.7.27 the *sender's* domain has a null MX.
        (7, 27) => R::Rejected,
        (7, _) => R::SecurityError,
        (6, _) => R::ContentError,
        // RFC 3463 §3.6, the dialogue itself: x.5.1 invalid command, x.5.2 syntax error, x.5.4
        // invalid arguments, x.5.5 wrong protocol version, x.5.6 (RFC 4954) authentication line
        // too long; x.5.3 too many recipients. (x.5.0 is used loosely, see `verdict`.)
        (5, 3) => R::TooManyConn,
        (5, 1..=6) => R::SyntaxError,
        (3, _) => R::SystemError,
        _ => return None,
    })
}

/// What the start of a report's human account says, read once for all its recipients.
pub(crate) struct Head<'a> {
    /// The text, lower-cased.
    text: &'a str,
    hits: std::cell::OnceCell<u64>,
    status: std::cell::OnceCell<Option<EnhancedStatus>>,
    code: std::cell::OnceCell<Option<u16>>,
    rcpt_stage: std::cell::OnceCell<bool>,
    not_found: std::cell::OnceCell<bool>,
    permanent: std::cell::OnceCell<bool>,
}

impl<'a> Head<'a> {
    pub(crate) fn new(text: &'a str) -> Head<'a> {
        Head {
            text,
            hits: Default::default(),
            status: Default::default(),
            code: Default::default(),
            rcpt_stage: Default::default(),
            not_found: Default::default(),
            permanent: Default::default(),
        }
    }

    /// The strong rules whose words occur here.
    fn hits(&self, rules: &Rules) -> u64 {
        *self.hits.get_or_init(|| strong(rules.hits(self.text)))
    }

    pub(crate) fn status(&self) -> Option<EnhancedStatus> {
        *self.status.get_or_init(|| find_status(self.text))
    }

    pub(crate) fn code(&self) -> Option<u16> {
        *self.code.get_or_init(|| find_code(self.text))
    }

    pub(crate) fn rcpt_stage(&self) -> bool {
        *self.rcpt_stage.get_or_init(|| Stage::named_in_lowercase(self.text) == Stage::Recipient)
    }

    /// Whether the account says, in a mailbox provider's own template, that the address was
    /// looked up and not found: Gmail's "wasn't delivered to … because the address couldn't
    /// be found", Exchange Online's and Outlook.com's "The email address you entered couldn't
    /// be found". Such a notice comes from the provider's directory, not from a filter, so its
    /// "no such user" is said of the mailbox ([`Stage::Local`]) even where no SMTP step is
    /// named.
    pub(crate) fn not_found_in_directory(&self) -> bool {
        *self.not_found.get_or_init(|| self.holds_any(NOT_FOUND_IN_DIRECTORY))
    }

    /// Whether the account calls the failure permanent in words (see [`PERMANENT`]).
    fn says_permanent(&self) -> bool {
        *self.permanent.get_or_init(|| self.holds_any(PERMANENT))
    }

    fn holds_any(&self, words: &[&str]) -> bool {
        words.iter().any(|w| memchr::memmem::find(self.text.as_bytes(), w.as_bytes()).is_some())
    }
}

/// Words of a notice calling its failure permanent, lower-case: Exim's and qmail's fixed
/// "This is a permanent error", Gmail's "failed permanently", and their kin.
const PERMANENT: &[&str] =
    &["permanent error", "permanent failure", "failed permanently", "permanently failed", "permanent fatal error"];

/// The templates of [`Head::not_found_in_directory`], lower-case.
const NOT_FOUND_IN_DIRECTORY: &[&str] = &[
    "address couldn't be found",
    "address could not be found",
    "address you entered couldn't be found",
    "address you entered could not be found",
    // Lotus Notes before Domino: its directory was the "Public Name & Address Book".
    "not listed in public name & address book",
    // The same two notices in Japanese: Notes' "not in the directory's list", Domino's "not
    // found in the Domino Directory".
    "ディレクトリのリストにありません",
    "ディレクトリには見つかりません",
];

pub(crate) fn inferred_status(reason: Reason, class: Option<u8>) -> String {
    let c = class.unwrap_or(5);
    match reason {
        Reason::UserUnknown => format!("{c}.1.1"),
        Reason::HostUnknown => format!("{c}.1.2"),
        Reason::HasMoved => format!("{c}.1.6"),
        Reason::MailboxFull => format!("{c}.2.2"),
        Reason::MesgTooBig => format!("{c}.3.4"),
        Reason::ExceedLimit => format!("{c}.2.3"),
        Reason::Expired => "4.4.7".into(),
        Reason::Suspend => format!("{c}.2.1"),
        Reason::Blocked | Reason::Rejected | Reason::PolicyViolation | Reason::SecurityError => format!("{c}.7.1"),
        Reason::NetworkError => format!("{c}.4.0"),
        Reason::ContentError | Reason::SpamDetected | Reason::VirusDetected => format!("{c}.6.0"),
        _ => format!("{c}.0.0"),
    }
}

pub(crate) fn find_status(text: &str) -> Option<EnhancedStatus> {
    statuses(text).next()
}

/// The enhanced statuses written in `text`, in order.
fn statuses(text: &str) -> impl Iterator<Item = EnhancedStatus> + '_ {
    // Tokens end at whitespace or punctuation; a status token is `[45].d{1,3}.d{1,3}`
    // (a trailing full stop is the sentence's). Byte-wise: this runs over every head.
    let b = text.as_bytes();
    let sep = |c: u8| c.is_ascii_whitespace() || b"()[]<>,;:\"'#".contains(&c);
    let mut i = 0;
    std::iter::from_fn(move || {
        while let Some(off) = memchr::memchr2(b'4', b'5', &b[i..]) {
            let start = i + off;
            i = start + 1;
            if start > 0 && !sep(b[start - 1]) {
                continue;
            }
            let end = b[start..].iter().position(|&c| sep(c)).map_or(b.len(), |p| start + p);
            if end - start < 5 || b.get(start + 1) != Some(&b'.') {
                continue;
            }
            if let Some(st) = text.get(start..end).and_then(|w| EnhancedStatus::parse(w.trim_end_matches('.'))) {
                i = end;
                return Some(st);
            }
        }
        None
    })
}

/// `status`, or when it is x.0.x ("other or undefined", RFC 3463 §3.1: it names no subject)
/// the first status of the same class in `text` that names one. Why: a relay that could not
/// deliver wraps the next hop's answer in a status of its own ("550 5.0.350 Remote server
/// returned an error -> 550 5.1.1 RESOLVER.ADR.RecipNotFound"; a DSN's `Status: 5.0.0` over
/// "550 5.1.1 user unknown"), and the inner status is the one that says what happened. A
/// status of the other class is no such detail (a 4.x.x quoted under a 5.0.0 is a history).
pub(crate) fn specific_status(status: Option<EnhancedStatus>, text: &str) -> Option<EnhancedStatus> {
    match status {
        Some(s) if s.subject == 0 => Some(statuses(text).find(|t| t.class == s.class && t.subject != 0).unwrap_or(s)),
        other => other,
    }
}

pub(crate) fn find_code(text: &str) -> Option<u16> {
    // Whole tokens only: the digits inside a Message-ID (`af2558de-437b`) are no reply code.
    // (IPv4 octets never reach 421.)
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'4', b'5', &b[i..]) {
        let start = i + off;
        i = start + 1;
        if start > 0 && b[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let Some(w) = b.get(start..start + 3) else { break };
        if !w.iter().all(u8::is_ascii_digit) || b.get(start + 3).is_some_and(u8::is_ascii_alphanumeric) {
            continue;
        }
        let c = u16::from(w[0] - b'0') * 100 + u16::from(w[1] - b'0') * 10 + u16::from(w[2] - b'0');
        if matches!(c, 421..=554) {
            return Some(c);
        }
    }
    None
}

/// The reason rules: words that name a reason, in priority order (the first rule with a
/// word in the text wins). Wordings marked "after Sisimai's … list" come from Sisimai's reason
/// modules (BSD-2-Clause; `core/LICENSE-SISIMAI`).
const RULES: &[(Reason, &[&str])] = &[
    // A local delivery agent's own failure, whatever words it passes on: procmail's, and
    // sendmail's fixed text for a delivery program that exited with a status it does not
    // know ("554 5.3.0 unknown mailer error 255", deliver.c) — no unknown user.
    (Reason::MailerError, &["procmail:", "unknown mailer error"]),
    // A refusal of the sender, before the null-MX words it holds ("this server does not accept
    // mail from <sender>" is no domain that takes no mail). After Sisimai's Rejected list.
    (
        Reason::Rejected,
        &[
            "does not accept mail from",
            "doesn't accept mail from",
            "list of senders to accept mail from",
            "unroutable sender address",
            "invalid sender",
            "sender email address rejected",
            "null sender is not allowed",
            "empty envelope senders not allowed",
            "bogus mail from",
            "batv failed",
            "batv validation failure",
            "sender not pre-approved",
            "mail from not owned by user",
        ],
    ),
    // A sending limit, before the quota words it holds ("Throttling failure: Daily message
    // quota exceeded" is the sender's quota, not the recipient's). After Sisimai's TooManyConn.
    (
        Reason::TooManyConn,
        &[
            "throttling failure",
            "too many errors from your ip",
            "too many smtp sessions",
            "too many concurrent smtp connections",
            "per-domain connection limit",
            "maximum connection limit",
            "max emails per hour",
            "trop de connexions",
            // Tencent QQ's rate refusals ("Ip frequency limited … Blocked IP"), after
            // Sisimai's TencentQQ host table: a rate, before the block words they hold.
            "frequency limited",
            // The sender's own quotas and the receiver's per-sender limits, in Google's and
            // Exchange Online's words (after Sisimai's host tables for them): "Daily sending
            // quota exceeded" is no full mailbox.
            "sending quota",
            "submission quota",
            "relay limit exceeded",
            "receive limit",
            "exceeded their limit",
            "thread limit exceeded",
            "limit for message recipients",
            "exceeded permitted limits",
        ],
    ),
    // Our host has no usable reverse DNS: the refusal is of our connection, whatever form it
    // takes. RFC 5321 §3.1's "554 No SMTP service here" is what a server says to a client it
    // refuses, so those words beside these ("554-No SMTP service 554-Bad DNS PTR resource
    // record") are the form and these the cause. Ahead of the NotAccept words for that.
    (Reason::RequirePtr, &["reverse dns", "ptr record", "ptr resource record", "no ptr"]),
    // (The last is RFC 3463 §3.5's own name for x.3.2, which servers quote: ahead of the
    // weak "network" below.)
    (
        Reason::NotAccept,
        &[
            "couldn't find a mail exchanger",
            "no smtp service",
            "does not accept mail",
            "null mx",
            "not accepting network messages",
        ],
    ),
    (
        Reason::Expired,
        &[
            "for a long time",
            "not delivered within",
            "retry timeout",
            "retry time",
            "delivery time expired",
            "envelope expired",
            "message expired",
            "multiple retries",
            "has been delayed",
            "timed out",
            "time out",
            "could not be delivered for",
            "maximum time",
            "too long",
            "retries exceeded",
            "retry period",
            "could not be delivered within",
            // Further wordings of a queue that gave up, after Sisimai's Expired list (not its
            // "giving up on": qmail ends every permanent refusal with "Giving up on <host>").
            "message timed out",
            "in the queue too long",
            "within the allowed queue period",
            "could not be delivered for more than",
            "failed to deliver to domain",
            "has not been collected after",
        ],
    ),
    (
        Reason::MailboxFull,
        &[
            "over quota",
            "quota exceeded",
            "exceeded storage",
            "exceeds quota",
            "mailbox size limit",
            "folder full",
            "folder is full",
            "insufficient storage",
            "disk quota",
            "user is over",
            "over the storage",
            "not enough storage",
            "is over its quota",
            "over its storage",
            "exceeds allowed size",
            // A mailbox counted in messages rather than bytes (before the weak "too many
            // messages", a rate).
            "has too many messages",
            // After Sisimai's MailboxFull list.
            "boite du destinataire pleine",
            "does not have enough space",
            "too much mail data",
            "space has been used up",
            "mail file size exceeds the maximum size allowed",
            "for exceeding receiving limits",
            "quota",
        ],
    ),
    (
        Reason::MesgTooBig,
        &[
            "message too large",
            "message is too large",
            "size exceeds",
            "message size exceeds",
            "too big",
            "exceeds the maximum",
            "message length exceeds",
            "size limit",
            "message size",
            "maximum email size",
        ],
    ),
    (Reason::VirusDetected, &["virus", "malware", "infected"]),
    // A blocklist named in a refusal is about the sending host, not the content: before the
    // spam words ("spamhaus" holds "spam"). So is a "spam IP" (Tencent's "Suspected spam ip").
    // The public DNS blocklists by name (their lookup domains, which no other word holds), so
    // that a refusal quoting one is never read by a status or words it also carries ("553
    // 5.1.3 http://www.spamhaus.org/query/bl?ip=…" is no bad mailbox).
    (
        Reason::Blocked,
        &[
            "spamhaus",
            "blocked using",
            "dnsbl",
            "blacklisted",
            "blocklisted",
            "spam ip",
            "spamcop.net",
            "uceprotect",
            "barracudacentral",
            "abuseat.org",
            "mailspike",
            "spamrats",
            "surriel.com",
        ],
    ),
    // A block of the sending IP *for* mailing invalid recipients (GoDaddy's IB112/IB113,
    // Cox's and Spectrum's host tables in Sisimai): about us, not this recipient — before the
    // missing-mailbox words it holds, which would suppress them.
    (Reason::Blocked, &["too many invalid recipients", "too many bad recipients"]),
    // A refusal of the sending client itself (postfix's client and HELO restrictions), whatever
    // follows: the words after it are about our host, not the recipient. Before the recipient
    // and host words, which they often hold: postfix names a client without reverse DNS
    // `unknown[192.0.2.1]`, and says "Helo command rejected: Host not found" of our HELO name.
    (
        Reason::RequirePtr,
        &["cannot find your hostname", "cannot find your reverse hostname", "client host rejected: cannot find"],
    ),
    (
        Reason::Blocked,
        &[
            "client host rejected",
            "helo command rejected",
            // "Error: no valid recipients from <our address>" refuses our host, not a recipient
            // (after Sisimai's Blocked list, as the ones below).
            "no valid recipients from",
            "accepting mail from your ip",
            "not accepting connections",
        ],
    ),
    // The server did not understand a command: a fault of the dialogue, not of the address
    // ("500 5.5.1 Unknown command" after a pipelining mishap holds "unknown").
    (
        Reason::SyntaxError,
        &[
            "unknown command",
            "unrecognized command",
            "unrecognised command",
            "command unrecognized",
            "command not recognized",
            // RFC 5321 §4.2.3's 503 is "Bad sequence of commands"; servers word it their own way
            // ("503 Improper sequence of commands").
            "sequence of commands",
            "command out of sequence",
        ],
    ),
    (Reason::SpamDetected, &["spam", "junk mail", "unsolicited", "bulk mail", "bulk email", "bulk e-mail"]),
    (
        Reason::Rejected,
        &[
            "sender address rejected",
            "sender rejected",
            "domain of sender",
            "sender denied",
            "sender verify",
            "after mail from",
            "'send mail as'",
            "envelope sender",
            "sender is not verified",
            "address is not verified",
            "identities failed",
            "sender domain",
            "sender's domain",
            // The sender, not the recipient, is the unknown one.
            "unknown sender",
            "sender unknown",
        ],
    ),
    (
        Reason::NetworkError,
        &[
            "dns error",
            "name service error",
            "unexpected name server",
            "mail loop",
            "message looping",
            "too many hops",
            "no route to host",
            "host is unreachable",
            "hop count",
            "loops back",
            "routing loop",
            "socket error",
            "requests to connect",
            "unable to connect",
            "could not connect",
            "cannot connect",
            // A lookup that failed for now, before the host words it holds ("Host not found,
            // try again" is sendmail's temporary DNS failure). After Sisimai's NetworkError list.
            "host not found, try again",
            "host name lookup failure",
            "malformed name server reply",
            "dns records for the destination computer could not be found",
            "unrouteable mail domain",
            "forwarding loop",
            "unable to resolve route",
        ],
    ),
    (
        Reason::Speeding,
        &[
            "receiving mail at a rate",
            "receiving mail too quickly",
            "sending too fast",
            "too many messages too quickly",
            "rate that prevents",
        ],
    ),
    (
        Reason::Suspend,
        &[
            "suspended",
            "disabled",
            "inactive",
            "deactivated",
            "locked",
            "frozen",
            "not active",
            "temporarily unavailable",
            // After Sisimai's Suspend list.
            "mailbox unavailable or access denied",
            "boite du destinataire archivee",
            "suspend the service",
            "invalid/inactive user",
            // La Poste's LPN007_426 (Sisimai's FrancePTT host table): the account, not the
            // sender, is blocked. Before the sender's "blocked" below.
            "recipient account is blocked",
        ],
    ),
    (Reason::HasMoved, &["has moved", "address has changed", "no longer", "moved to"]),
    (
        Reason::HostUnknown,
        &[
            "name or service not known",
            "unrouteable address",
            "unroutable",
            "no mx",
            "mx record",
            "nxdomain",
            "invalid domain",
            "host or domain name not found",
            "hostname not found",
            "domain is not reachable",
            // Exchange's name for a DNS answer of NXDOMAIN, in its NDRs' diagnostics:
            // "550 5.4.310 DNS domain example.org does not exist [Message=InfoDomainNonexistent]".
            "infodomainnonexistent",
            // qmail-remote's answer to a name the DNS says does not exist: "Sorry, I couldn't
            // find any host named example.org. (#5.1.2)" (and "… by that name.").
            "couldn't find any host",
            // After Sisimai's HostUnknown list.
            "domain must exist",
            "mail domain mentioned in email address is unknown",
            "unknown domain name",
        ],
    ),
    (
        Reason::Filtered,
        &[
            "after end of data",
            "after data",
            // The recipient's own rules (after Sisimai's Filtered list): before the weak
            // "not accepting", which reads as a domain that takes no mail.
            "is not accepting any mail",
            "refused due to recipient preferences",
            "message rejected due to user rules",
            "this account is protected by",
            "has restricted sms e-mail",
            "new mail is not currently being accepted",
            // A recipient's own block of the sender ("550 Your message was rejected by this
            // user and was not delivered").
            "rejected by this user",
        ],
    ),
    // A list's or an organisation's policy, in words (after Sisimai's PolicyViolation list).
    (
        Reason::PolicyViolation,
        &[
            "members-only list",
            "closed mailing list",
            "not subscribed to this group",
            "denied by policy",
            "local policy violation",
            "for policy reasons",
            "organization policy",
            "organizational settings",
            "security policies",
            "illegal attachment",
            "do not accept messages containing",
            // Gmail's refusal of an attachment or link it deems unsafe (its host table in
            // Sisimai): a policy on the content, before the block word it holds.
            "content presents a potential security issue",
            // AOL's notice for a member who takes no attachments: a rule on the content,
            // not an address that takes no mail (the weak "not accepting").
            "not accepting mail with attachments",
            // A filter's refusal of a message forged to look like another sender's
            // (Barracuda's "550 rejecting spoofed message").
            "spoofed",
        ],
    ),
    (
        Reason::UserUnknown,
        &[
            "user unknown",
            "unknown user",
            "no such user",
            "no such recipient",
            "no such mailbox",
            "does not exist",
            "doesn't exist",
            "not exist",
            "unknown recipient",
            "recipient unknown",
            "invalid recipient",
            "recipient not found",
            "user not found",
            "mailbox not found",
            "mailbox unavailable",
            "mailbox is unavailable",
            "unknown address",
            "address unknown",
            "no mailbox",
            "not a valid recipient",
            "invalid mailbox",
            "user doesn't",
            "unknown local part",
            "unknown or illegal alias",
            "account is unavailable",
            "no valid recipients",
            "not listed in domino directory",
            // Lotus Notes before Domino called the same directory this.
            "not listed in public name & address book",
            // Both in Japanese (see `NOT_FOUND_IN_DIRECTORY`).
            "ディレクトリのリストにありません",
            "ディレクトリには見つかりません",
            "bad destination mailbox",
            "address not found",
            "invalid address",
            "account that you tried to reach",
            "user account is unavailable",
            "no such person",
            "not our customer",
            "is not a valid",
            "unknown mailbox",
            "undeliverable address",
            "no account",
            "mailbox does not",
            "user does not",
            "addressee unknown",
            "not a known user",
            "no such address",
            "no such account",
            "unknown account",
            "invalid account",
            "recipient invalid",
            "address invalid",
            "mailbox unknown",
            "bad recipient",
            "no mailbox here",
            // Filtering gateways that hold the list of the domain's valid recipients:
            // ZeroSpam's "Recipient address rejected: Not in recipient list", Proofpoint's
            // "Recipient address rejected: User email address is marked as invalid".
            "not in recipient list",
            "address is marked as invalid",
            // The same in two words, as many servers write it ("No mail box available for
            // this user"; qmail's badrcptto: "user mail-box not found").
            "no mail box",
            "mail box not found",
            "mail-box not found",
            "address couldn't be found",
            "address could not be found",
            "destinataire inconnu",
            "destinataire invalide",
            "utilisateur inconnu",
            "adresse invalide",
            "existiert nicht",
            "unbekannt",
            "usuario desconocido",
            "no existe",
            "inexistente",
            "sconosciuto",
            "inesistente",
            // Not qmail's "does not like recipient": it says only that the refusal came at
            // RCPT TO (AT_RCPT). The server's reply after it says why ("550 5.7.606 Access
            // denied, banned sending IP" is a block of us, not an unknown mailbox).
            "badrcptto",
            "not a registered",
            // After Sisimai's UserUnknown list.
            "bad_recipient",
            "bad-recipient",
            "not an active address",
            "archived recipient",
            "can't accept user",
            "destination addresses were unknown",
            "destination server rejected recipients",
            "mailbox not present",
            "mailbox invalid",
            "nessun utente simile",
            "no matches to nameserver query",
            "account unavailable",
            "non-existent user",
            "nonexistent user",
            "non existent user",
            "not a valid user",
            "not a local address",
            "invalid user",
            "invalid-recipient",
            "recipient is not local",
            "recipient not ok",
            "recipientnotfound",
            "envelope recipient has been denied",
            "email name is not found",
            "no one at this address",
            "badrecipientto",
            "validrcptto",
            "missing home directory",
            "unknown",
        ],
    ),
    (
        Reason::RequirePtr,
        &[
            "reverse dns",
            "ptr record",
            "reverse lookup",
            "name lookup failed",
            "no ptr",
            "rdns",
            "does not resolve",
            // Outlook.com: the HELO domain does not match the connecting address.
            "mismatches client ip",
        ],
    ),
    // The receiver requires what our connection lacks (after Sisimai's SecurityError list and
    // Mimecast's host table): TLS, or a stronger one. Before the weak "command".
    (
        Reason::SecurityError,
        &[
            "requires encryption",
            "requires tls",
            "tls required",
            "must issue a starttls command first",
            "high-strength ciphers",
            "insecure mail relay",
            // The sending side requires TLS and the receiver could not give it (Gmail's "500
            // Remote server does not support TLS"; Sisimai's FailedSTARTTLS): the connection,
            // not the address.
            "does not support tls",
            "does not support starttls",
            "tls required but not supported",
            "starttls is required",
            "tls negotiation failed",
            "tls handshake failed",
        ],
    ),
    (Reason::AuthFailure, &["spf", "dkim", "dmarc", "authentication", "not authorized"]),
    // A refusal to relay, in the words servers use for it (postfix's "Relay access denied"),
    // before the block words ("access denied" alone is a block). Not the bare word "relay":
    // a report's account names relays (`relay=mx.example.com`) that refused nothing.
    (
        Reason::NoRelaying,
        &[
            "relay access denied",
            "relaying denied",
            "relay denied",
            "unable to relay",
            "relay not permitted",
            "relaying not permitted",
            "not permitted to relay",
            "relaying not allowed",
            "relay not allowed",
            "we do not relay",
            "no relaying",
            // After Sisimai's NoRelaying list.
            "as a relay",
            "insecure mail relay",
            "not allowed to relay",
            "not an open relay",
            "not a gateway",
            "not configured to relay",
            "list of allowed rcpthost",
            "we don't handle mail for",
        ],
    ),
    (
        Reason::Blocked,
        &[
            "blocked",
            "blacklist",
            "blocklist",
            "rbl",
            "listed",
            "banned",
            "poor reputation",
            "reputation",
            "client host rejected",
            "connection refused",
            "access denied",
            // Outlook.com's codes for refusing the sending address (SC: its reputation or
            // volume, DY: a dynamic range, OU: its policy), which it gives without other words
            // a rule knows ("550 SC-004 … too many unwanted messages have been sent from …").
            "sc-001",
            "sc-002",
            "sc-003",
            "sc-004",
            "dy-001",
            "dy-002",
            "ou-001",
            "ou-002",
            // After Sisimai's Blocked list.
            "confirm this mail server",
            "black list",
            "block list",
            "no access from mail server",
            "hosts with dynamic ip",
            "invalid ip for sending mail",
            "not allowed to send mail from",
            "use the smtp server of your isp",
        ],
    ),
];

/// The catch-all rules: single common words that name a reason only inside a server's own
/// diagnostic. In the rest of a bounce ("Message headers follow", "MAILER-DAEMON", a help
/// URL) they are noise, so the whole-message fallback never reads them.
const WEAK_RULES: &[(Reason, &[&str])] = &[
    (Reason::PolicyViolation, &["policy", "prohibited", "not allowed"]),
    // "media error" is RFC 3463's own name for x.6.0.
    (Reason::ContentError, &["content", "8-bit", "8bit", "header", "malformed", "mime", "media error"]),
    (
        Reason::TooManyConn,
        &[
            "too many connections",
            "too many recipients",
            "too many messages",
            "rate limit",
            "try again later",
            "exceeded the rate",
        ],
    ),
    // A queue that gave up, in words no strong rule holds ("Delivery failed 20 attempts",
    // "queue lifetime expired"): retrying was the server's, so the cause is its own and passes.
    // Weaker than a status that names a cause ("550 5.2.1 Account expired" is a disabled
    // mailbox): see `YIELDS_TO_STATUS`.
    (Reason::Expired, &["expired", "retries", "attempts"]),
    (Reason::NetworkError, &["network", "connection", "dns", "lookup"]),
    // sendmail's "Remote protocol error" (the remote server's reply broke the dialogue), and
    // a server's "protocol violation": a fault of the dialogue, never of the address.
    (Reason::SyntaxError, &["protocol error", "protocol violation"]),
    (Reason::SystemFull, &["system full", "insufficient system storage", "out of disk"]),
    (
        Reason::SystemError,
        &[
            "system error",
            "internal error",
            "server error",
            "temporary failure",
            "local error",
            "service unavailable",
            "currently unavailable",
            "transaction failed",
            // After Sisimai's SystemError list.
            "configuration error",
            "temporary local problem",
            "error while being processed",
            "queue file write error",
            "interrupted system call",
        ],
    ),
    (Reason::MailerError, &["procmail", "mailer error", "command", "pipe", "program"]),
    (Reason::Filtered, &["filter", "not accepted", "refused"]),
    (Reason::NotAccept, &["does not accept", "not accepting", "null mx", "no mail"]),
    // "Recipient address rejected: <why>" names the why after it (postfix says it of every
    // RCPT restriction: "Media error", "Internal system error", "User unknown"): the bare
    // words count only when no other rule, strong or weak, matched. Last for that reason.
    (Reason::UserUnknown, &["address rejected"]),
];

/// Rules written as a product, not as a list: a name for the thing (`things`) and what is
/// said of it, after the name (`after`: "domain not found") or before it (`before`: "no such
/// host"). Every pairing is a word of the rule, so a wording no mail has shown yet ("host does
/// not exist", "inbox is full") is read like the ones it has.
/// Why: each pairing alone is written by few servers, and a list of them learned from the
/// mail seen so far misses the next server's pairing of the same two parts; the parts
/// themselves are what many servers share. The cross-validation counts a phrase rule's
/// support over all its pairings ([`Rules::phrase_of`]).
/// A phrase rule takes the priority of the first rule of its reason in [`RULES`]: rules
/// before that one still win ("sender domain" of a refused sender, "host not found, try
/// again" of a lookup that broke).
struct Phrases {
    reason: Reason,
    things: &'static [&'static str],
    after: &'static [&'static str],
    before: &'static [&'static str],
}

const PHRASES: &[Phrases] = &[
    // A destination name the DNS does not know (RFC 3463 x.1.2, "bad destination system
    // address"). Not "hostname" with "unknown": a client's own hostname that its reverse
    // lookup does not give is a PTR refusal ("client hostname unknown"), not the recipient's
    // domain.
    Phrases {
        reason: Reason::HostUnknown,
        things: &["domain", "domain name", "host"],
        after: &["not found", "does not exist", "doesn't exist", "unknown"],
        before: &["unknown", "no such", "non-existent", "nonexistent"],
    },
    // A mailbox over its quota (RFC 3463 x.2.2, "mailbox full").
    Phrases {
        reason: Reason::MailboxFull,
        things: &["mailbox", "mail box", "mailfolder", "inbox"],
        after: &["full", "is full", "exceeds", "exceeded", "has exceeded"],
        before: &["full"],
    },
];

/// Every pairing of every phrase rule: (phrase index, reason, word).
static PHRASE_WORDS: LazyLock<Vec<(usize, Reason, String)>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for (i, p) in PHRASES.iter().enumerate() {
        for thing in p.things {
            out.extend(p.after.iter().map(|said| (i, p.reason, format!("{thing} {said}"))));
            out.extend(p.before.iter().map(|said| (i, p.reason, format!("{said} {thing}"))));
        }
    }
    out
});

/// The index in [`RULES`] of the first rule of `reason` (a phrase rule's priority).
const fn first_of(reason: Reason) -> usize {
    let mut i = 0;
    while i < RULES.len() {
        if RULES[i].0 as u8 == reason as u8 {
            return i;
        }
        i += 1;
    }
    i
}
// (Kept true: every phrase rule's reason has a rule of its own in `RULES`.)
const _: () = {
    let mut i = 0;
    while i < PHRASES.len() {
        assert!(first_of(PHRASES[i].reason) < RULES.len());
        i += 1;
    }
};

// Rule hits are a bit set in a u64.
const _: () = assert!(RULES.len() + WEAK_RULES.len() <= 64);

/// The hits of the catch-all "address rejected" alone (the last weak rule).
const CATCH_ALL: u64 = 1 << (RULES.len() + WEAK_RULES.len() - 1);
// (Kept true: the last weak rule is that one word, read as an unknown user.)
const _: () = {
    const fn same(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
    let (reason, words) = WEAK_RULES[WEAK_RULES.len() - 1];
    assert!(
        matches!(reason, Reason::UserUnknown) && words.len() == 1 && same(words[0].as_bytes(), b"address rejected")
    );
};

/// The weak rules that a status naming a cause outweighs when no other rule matched: the
/// catch-all, and the weak words of an expired queue.
const YIELDS_TO_STATUS: u64 = CATCH_ALL | 1 << (RULES.len() + weak_expired());

/// The index of the weak expiry rule among [`WEAK_RULES`] (found, so that reordering them
/// cannot make [`YIELDS_TO_STATUS`] name another); past the end if there is none, which the
/// check below refuses to compile.
const fn weak_expired() -> usize {
    let mut i = 0;
    while i < WEAK_RULES.len() {
        if matches!(WEAK_RULES[i].0, Reason::Expired) {
            return i;
        }
        i += 1;
    }
    i
}
const _: () = assert!(weak_expired() < WEAK_RULES.len());

/// Every rule, strong ones first: index `i` is strong when `i < RULES.len()`.
fn rule(i: usize) -> Option<&'static (Reason, &'static [&'static str])> {
    RULES.get(i).or_else(|| WEAK_RULES.get(i.checked_sub(RULES.len())?))
}

/// The reason words, compiled: one automaton (ASCII case-insensitive) finds every rule whose
/// words occur in a text in one pass, instead of a substring search per word.
pub struct Rules {
    ac: AhoCorasick,
    /// The rule index of each pattern of `ac`.
    rule_of: Vec<u32>,
    /// Whether each pattern of `ac` counts only as a whole word ([`WHOLE_WORDS`]).
    whole: Vec<bool>,
    /// The words right after which each pattern of `ac` is passed over ([`PASSED_OVER_AFTER`]).
    passed_after: Vec<&'static [&'static str]>,
    /// The providers whose reason codes are read (a set of [`Provider::bit`]s).
    providers: u8,
}

/// Rule words that are also part of unrelated words, so they count only as whole words (no
/// letter or digit on either side): "locked" is in "blocked" (which read a block of the sender
/// as a suspended mailbox, Permanent under 5.2.1), "rbl" in "marble", "mime" in "Mimecast" (a
/// gateway many refusals name). The other words match anywhere, on purpose: compounds such as
/// "overquota", "bbSpamReject" or "dspam" are how real servers write them.
const WHOLE_WORDS: &[&str] = &["locked", "rbl", "mime"];

/// Rule words that say something else right after certain words, where they are passed over:
/// - a blocklist's "listed" is a directory's "not listed" (Lotus Domino's "User … not listed in
///   Domino Directory", a recipient unknown), which no blocklist refusal says of the client it
///   refuses;
/// - a suspended mailbox's "temporarily unavailable" is the server's own state after "service",
///   "server" or "system" ("421 4.3.2 Service temporarily unavailable", the reply of a server
///   closing the connection under load or for maintenance: RFC 5321's 421 "Service not
///   available"), which says nothing of the mailbox.
const PASSED_OVER_AFTER: &[(&str, &[&str])] =
    &[("listed", &["not "]), ("temporarily unavailable", &["service ", "server ", "system "])];

/// The words right after which rule word `p` is passed over.
fn passed_over_after(p: &str) -> &'static [&'static str] {
    PASSED_OVER_AFTER.iter().find(|(w, _)| *w == p).map_or(&[], |(_, after)| *after)
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").field("words", &self.rule_of.len()).finish()
    }
}

impl Rules {
    /// Every word of every rule: what the reader uses.
    pub fn standard() -> &'static Rules {
        static STANDARD: LazyLock<Rules> = LazyLock::new(|| Rules::without(|_, _| false));
        &STANDARD
    }

    /// The rules less the words `drop` names (by reason and word). Why it exists: a
    /// cross-validation scores the reader on a family of mail with the words only that
    /// family supports taken out, to show which rules are fitted to it.
    pub fn without(drop: impl Fn(Reason, &str) -> bool) -> Rules {
        let mut words = Vec::new();
        let mut rule_of = Vec::new();
        let mut whole = Vec::new();
        let mut passed_after = Vec::new();
        for (i, (reason, pats)) in RULES.iter().chain(WEAK_RULES).enumerate() {
            for p in pats.iter().filter(|p| !drop(*reason, p)) {
                words.push(*p);
                rule_of.push(u32::try_from(i).unwrap_or(u32::MAX));
                whole.push(WHOLE_WORDS.contains(p));
                passed_after.push(passed_over_after(p));
            }
        }
        for (_, reason, p) in PHRASE_WORDS.iter().filter(|(_, r, p)| !drop(*r, p)) {
            words.push(p.as_str());
            rule_of.push(u32::try_from(first_of(*reason)).unwrap_or(u32::MAX));
            whole.push(false);
            passed_after.push(passed_over_after(p));
        }
        // A DFA: its walk is the fastest per byte, and every refusal and report head is read
        // with it (an NFA here was a tenth of the reader's time).
        let ac = AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .ascii_case_insensitive(true)
            .build(&words)
            .unwrap_or_else(|_| {
                AhoCorasick::new(std::iter::empty::<&str>()).unwrap_or_else(|_| unreachable_automaton())
            });
        Rules { ac, rule_of, whole, passed_after, providers: u8::MAX }
    }

    /// These rules without the reason codes of the providers `drop` names.
    pub fn without_codes_of(mut self, drop: impl Fn(Provider) -> bool) -> Rules {
        for p in Provider::ALL.into_iter().filter(|p| drop(*p)) {
            self.providers &= !p.bit();
        }
        self
    }

    /// Every (reason, word, strong) of the standard rules, strong ones first (the pairings
    /// of the phrase rules among them).
    pub fn words() -> impl Iterator<Item = (Reason, &'static str, bool)> {
        let listed = |rules: &'static [(Reason, &'static [&'static str])], strong: bool| {
            rules.iter().flat_map(move |(reason, pats)| pats.iter().map(move |p| (*reason, *p, strong)))
        };
        listed(RULES, true)
            .chain(PHRASE_WORDS.iter().map(|(_, reason, p)| (*reason, p.as_str(), true)))
            .chain(listed(WEAK_RULES, false))
    }

    /// The phrase rule `word` is a pairing of, by index, if it is one: what a
    /// cross-validation counts a word's support by, since the rule is the product and not
    /// its pairings one by one.
    pub fn phrase_of(word: &str) -> Option<usize> {
        PHRASE_WORDS.iter().find(|(_, _, p)| p == word).map(|(i, _, _)| *i)
    }

    /// The rules whose words occur in `text`, as a bit set over rule indices.
    pub(crate) fn hits(&self, text: &str) -> u64 {
        let mut bits = 0u64;
        for m in self.ac.find_overlapping_iter(text) {
            let i = m.pattern().as_usize();
            let inside =
                |at: Option<usize>| at.and_then(|j| text.as_bytes().get(j)).is_some_and(u8::is_ascii_alphanumeric);
            if self.whole.get(i) == Some(&true) && (inside(m.start().checked_sub(1)) || inside(Some(m.end()))) {
                continue;
            }
            let right_after = |w: &&str| {
                m.start()
                    .checked_sub(w.len())
                    .and_then(|j| text.as_bytes().get(j..m.start()))
                    .is_some_and(|b| b.eq_ignore_ascii_case(w.as_bytes()))
            };
            if self.passed_after.get(i).is_some_and(|after| after.iter().any(right_after)) {
                continue;
            }
            if let Some(&r) = self.rule_of.get(i) {
                bits |= 1u64 << r.min(63);
            }
        }
        bits
    }

    /// Whether a rule word in `text` names a reason `keep` accepts (one pass, no allocation).
    pub(crate) fn names(&self, text: &str, keep: impl Fn(Reason) -> bool) -> bool {
        first_rule(self.hits(text), keep).is_some()
    }
}

#[allow(clippy::panic)]
fn unreachable_automaton() -> AhoCorasick {
    // Building from a fixed, valid word list cannot fail; an empty automaton cannot either.
    panic!("the rule automaton could not be built")
}

/// The first rule in `hits` whose reason `keep` accepts.
fn first_rule(hits: u64, keep: impl Fn(Reason) -> bool) -> Option<Reason> {
    (0..64).filter(|i| hits & (1 << i) != 0).filter_map(rule).map(|r| r.0).find(|r| keep(*r))
}

/// `hits` without the weak rules.
fn strong(hits: u64) -> u64 {
    hits & ((1u64 << RULES.len()) - 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str, status: &str, code: u16, stage: Stage) -> Verdict {
        judge(text, EnhancedStatus::parse(status), Some(code), stage)
    }

    #[test]
    fn a_server_temporarily_unavailable_is_no_suspended_mailbox() {
        // The server's own state: whatever else it is read as, not the mailbox's.
        for text in [
            "421 4.3.2 Service temporarily unavailable",
            "421 Server temporarily unavailable. Try again later.",
            "451 System temporarily unavailable",
        ] {
            let v = at(text, "", 421, Stage::Recipient);
            assert_ne!(v.reason, Reason::Suspend, "{text}");
            assert_eq!((v.kind, v.suppress), (BounceType::Transient, false), "{text}");
        }
        // A mailbox that is: still suspended, and gone for good under 5.2.1.
        assert_eq!(at("450 Mailbox temporarily unavailable", "", 450, Stage::Recipient).reason, Reason::Suspend);
        let v = at("550 5.2.1 Mailbox temporarily unavailable", "5.2.1", 550, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::Suspend, true));
    }

    #[test]
    fn not_listed_is_no_blocklist() {
        // Domino's unknown user, read by rules that do not know Domino's phrase (as the
        // cross-validation reads it): no blocklist is named.
        let rules = Rules::without(|_, w| w == "not listed in domino directory");
        let domino = "User some.name (kijitora@example.jp) not listed in Domino Directory";
        assert!(!rules.names(domino, |r| r == Reason::Blocked), "{domino}");
        assert!(!rules.names("Recipient NOT LISTED in the address book", |r| r == Reason::Blocked));
        // A blocklist's own words still are.
        for text in [
            "554 5.7.1 Service unavailable; Client host [192.0.2.1] is listed by zen.spamhaus.org",
            "550 Your IP is blacklisted",
            "553 sender listed at bl.example",
        ] {
            assert!(rules.names(text, |r| r == Reason::Blocked), "{text}");
        }
        // The whole reading with every rule: Domino's words name an unknown user.
        assert_eq!(at(domino, "5.0.0", 550, Stage::Recipient).reason, Reason::UserUnknown);
    }

    #[test]
    fn other_address_status_alone_suppresses_no_one() {
        // x.1.0 does not say whose address: a refusal whose words name nothing known stays a
        // permanent failure (a 5xx), but no recipient is taken for gone on it.
        let v = at(
            "550 5.1.0 <0100abc@bounces.example.net> See https://isp.example/codes XY#123",
            "5.1.0",
            550,
            Stage::Unknown,
        );
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::Undefined, BounceType::Permanent, false));
        // Words that name the recipient unknown, it still backs, at any step.
        let v = at("5.1.0 - Unknown address error: User unknown in virtual alias table", "5.1.0", 550, Stage::Unknown);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::UserUnknown, BounceType::Permanent, true));
        // x.1.1 alone still does: it names the destination mailbox.
        let v = at("550 5.1.1 See https://isp.example/codes XY#123", "5.1.1", 550, Stage::Unknown);
        assert_eq!((v.reason, v.suppress), (Reason::UserUnknown, true));
    }

    #[test]
    fn a_4xx_reply_is_never_a_permanent_failure_whatever_it_names() {
        // The server says the failure may pass: the reason is kept, the type is transient
        // (as the live SMTP path ends such an email when its retries run out), and nothing
        // is suppressed.
        for (text, status, code, reason) in [
            (
                "421 4.1.1 <a@example.org>: Recipient address rejected: unverified address: Address verification in progress",
                "4.1.1",
                421,
                Reason::UserUnknown,
            ),
            (
                "451 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369#451",
                "4.0.0",
                451,
                Reason::UserUnknown,
            ),
            (
                "450 4.1.2 <a@example.invalid>: Recipient address rejected: Domain not found",
                "4.1.2",
                450,
                Reason::HostUnknown,
            ),
        ] {
            let v = at(text, status, code, Stage::Recipient);
            assert_eq!((v.reason, v.kind, v.suppress), (reason, BounceType::Transient, false), "{text}");
            // The same words under a 5xx are permanent.
            let five = text.replacen(&code.to_string(), "550", 1).replacen(status, &status.replacen('4', "5", 1), 1);
            let v = at(&five, &status.replacen('4', "5", 1), 550, Stage::Recipient);
            assert_eq!((v.reason, v.kind, v.suppress), (reason, BounceType::Permanent, true), "{five}");
        }
    }

    #[test]
    fn gateways_that_keep_the_list_of_valid_recipients_name_an_unknown_user() {
        for text in [
            "554 5.7.1 <a@example.org>: Recipient address rejected: Not in recipient list",
            "550 5.7.1 <a@example.org>: Recipient address rejected: User email address is marked as invalid.",
        ] {
            let v = at(text, "5.7.1", 554, Stage::Recipient);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::UserUnknown, BounceType::Permanent, true), "{text}");
        }
        // A full folder is a full mailbox; a recipient's own block of the sender is its filter.
        let v = at("550 5.2.5 Folder full", "5.2.5", 550, Stage::Message);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::MailboxFull, BounceType::Transient, false));
        let v = at("550-Your message was rejected by this user and was not delivered", "5.0.0", 550, Stage::Message);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::Filtered, BounceType::Transient, false));
        // A forged message refused is a policy on the message, never the address.
        let v = at("550 rejecting spoofed message", "5.0.0", 550, Stage::Message);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::PolicyViolation, BounceType::Transient, false));
    }

    #[test]
    fn yahoos_unknown_user_after_data_is_the_mailbox_stores_verdict() {
        // Yahoo checks recipients after the message: its "dd" reply at the end of DATA is
        // the mailbox store's answer (its error-code page: the address does not exist).
        let yahoo = "554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - mta1061.mail.ne1.yahoo.com";
        let v = at(yahoo, "5.0.0", 554, Stage::Message);
        assert_eq!(
            (v.reason, v.kind, v.suppress, v.basis),
            (Reason::UserUnknown, BounceType::Permanent, true, Basis::Provider)
        );
        // A disabled Yahoo mailbox stays a transient suspension (it may come back).
        let v = at(
            "554 delivery error: dd Sorry, your message to x@yahoo.com cannot be delivered. This mailbox is disabled (554.30).",
            "5.0.0",
            554,
            Stage::Message,
        );
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::Suspend, BounceType::Transient, false));
        // The policy for everyone else stands: "no such user" after DATA is a filter's answer.
        let v = at("554 5.0.0 no such user here", "5.0.0", 554, Stage::Message);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::Filtered, BounceType::Transient, false));
    }

    #[test]
    fn a_delivery_program_that_failed_is_no_unknown_user() {
        // sendmail's words for a local program (a pipe in .forward) that exited with a status
        // it does not know: the mailbox exists, its program broke. "unknown" alone would have
        // read it as an unknown user said by the server holding the mailbox, and suppressed.
        for stage in [Stage::Local, Stage::Unknown] {
            let v = at("554 5.3.0 unknown mailer error 255", "5.3.0", 554, stage);
            assert_eq!(
                (v.reason, v.kind, v.suppress),
                (Reason::MailerError, BounceType::Transient, false),
                "{stage:?}"
            );
        }
    }

    #[test]
    fn a_dns_error_is_an_unknown_host_only_when_its_words_and_status_say_so() {
        // The generic prefix names no cause; the words after it do, under a permanent status.
        let v = at("550 DNS Error: Domain name not found", "", 550, Stage::Unknown);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::HostUnknown, BounceType::Permanent, true));
        // A lookup that broke is no missing domain, whatever else the words say.
        let v = at("550 DNS Error: Host not found, try again", "", 550, Stage::Unknown);
        assert_eq!((v.reason, v.suppress), (Reason::NetworkError, false));
        // Nor is a reporter's temporary status overruled (Gmail gives up on an NXDOMAIN under
        // 4.0.0): no suppression on a 4.x.x.
        let gmail = "DNS Error: 80335577 DNS type 'mx' lookup of example.jp responded with code NXDOMAIN \
                     Domain name not found: example.jp";
        let v = judge(gmail, EnhancedStatus::parse("4.0.0"), None, Stage::Unknown);
        assert_eq!((v.reason, v.suppress), (Reason::NetworkError, false));
    }

    #[test]
    fn a_broken_command_sequence_is_a_fault_of_the_dialogue() {
        // RFC 5321's 503, in the standard's words and in another server's: never the address,
        // and not the delivery program its weak "command" would otherwise name.
        for text in ["503 5.5.1 Bad sequence of commands", "503 Improper sequence of commands"] {
            let v = at(text, "5.5.0", 503, Stage::Unknown);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::SyntaxError, BounceType::Transient, false), "{text}");
        }
    }

    #[test]
    fn a_refusal_of_our_reverse_dns_is_no_host_that_takes_no_mail() {
        // GMX refusing the connection of a client without a PTR record: "No SMTP service" is
        // the form of the refusal (RFC 5321 §3.1), the PTR record its cause. Never suppressed.
        let gmx = "554-mail.com (mxgmxus002) Nemesis ESMTP Service not available 554-No SMTP service \
                   554-Bad DNS PTR resource record. 554 For explanation visit \
                   http://postmaster.gmx.com/en/error-messages?ip=192.0.2.22&c=rdns";
        for status in ["", "4.0.0", "5.0.0"] {
            let v = at(gmx, status, 554, Stage::Unknown);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::RequirePtr, BounceType::Transient, false), "{status}");
        }
        // Without the PTR words the same refusal stays what it was: a host that takes no mail.
        let v = at("554 No SMTP service here", "", 554, Stage::Unknown);
        assert_eq!(v.reason, Reason::NotAccept);
    }

    #[test]
    fn a_word_inside_another_word_is_not_that_word() {
        // "locked" is in "blocked": a block of the sender is no suspended mailbox, and under
        // 5.2.1 a suspended one would be suppressed.
        for text in ["Message blocked", "Your message has been blocked", "Sender blocked"] {
            let v = at(text, "", 550, Stage::Recipient);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::Blocked, BounceType::Transient, false), "{text}");
        }
        let v = at("Sender IP blocked", "5.2.1", 550, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::Blocked, false));
        // As words of their own they still count.
        let v = at("Account locked", "5.2.1", 550, Stage::Recipient);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::Suspend, BounceType::Permanent, true));
        assert_eq!(at("user account is locked", "", 550, Stage::Recipient).reason, Reason::Suspend);
        assert_eq!(at("The recipient account is blocked.", "5.5.0", 550, Stage::Recipient).reason, Reason::Suspend);
        let v = at("Ip frequency limited [Blocked IP 192.0.2.22]", "", 550, Stage::Message);
        assert_eq!(v.reason, Reason::TooManyConn);
        // "rbl" is in "marble", "mime" in "Mimecast".
        assert_ne!(at("Rejected by marble-gw", "", 554, Stage::Message).reason, Reason::Blocked);
        assert_eq!(at("Listed by RBL zen", "", 554, Stage::Message).reason, Reason::Blocked);
        assert_eq!(at("Mimecast gateway", "", 554, Stage::Message).reason, Reason::Undefined);
        // Compounds that real servers write keep their word: "overquota", "dspam".
        assert_eq!(at("User account is overquota", "", 552, Stage::Recipient).reason, Reason::MailboxFull);
        assert_eq!(at("dspam check failed", "", 554, Stage::Message).reason, Reason::SpamDetected);
    }

    #[test]
    fn a_queue_that_gave_up_in_new_words_passes_unless_a_status_names_the_cause() {
        for (text, code) in [
            ("Delivery failed after 5 attempts", 550),
            ("Message could not be delivered: queue lifetime expired", 554),
            ("Too many retries, giving up", 554),
        ] {
            let v = at(text, "", code, Stage::Unknown);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::Expired, BounceType::Transient, false), "{text}");
        }
        // A status that names the cause speaks over those weak words.
        let v = at("Account expired", "5.2.1", 550, Stage::Recipient);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::Suspend, BounceType::Permanent, true));
        assert_eq!(at("Given up after 3 attempts", "5.2.2", 552, Stage::Recipient).reason, Reason::MailboxFull);
        // A generic one does not.
        assert_eq!(at("Delivery failed after 5 attempts", "5.0.0", 550, Stage::Unknown).reason, Reason::Expired);
        // Nor do they outweigh a strong rule.
        assert_eq!(at("User unknown, 3 attempts", "", 550, Stage::Recipient).reason, Reason::UserUnknown);
    }

    #[test]
    fn a_status_about_the_sender_or_the_dialogue_outweighs_words_about_the_recipient() {
        // Postfix checks the sender at RCPT TO: "invalid address" under 5.1.7 is ours.
        let v = at("Invalid address", "5.1.7", 550, Stage::Recipient);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::Rejected, BounceType::Transient, false));
        let v = at("Domain does not exist", "5.1.8", 550, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::Rejected, false));
        // Exchange's "invalid domain name" is our HELO's, under 5.5.4.
        let v = at("Invalid domain name", "5.5.4", 550, Stage::Recipient);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::SyntaxError, BounceType::Transient, false));
        // Postfix's access(5) REJECT says "Access denied" of a recipient: a policy of the site.
        // Only Exchange Online's edge blocking says it under 5.4.1, of a mailbox not in the tenant.
        let v = at("<a@b.test>: Recipient address rejected: Access denied", "", 554, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::Blocked, false));
        let v =
            at("[a@b.test]: Recipient address rejected: Access denied. AS(201806281)", "5.4.1", 550, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::UserUnknown, true));
        // x.5.0 is used loosely: Outlook's "mailbox unavailable" stays what it says.
        let v = at("Requested action not taken: mailbox unavailable", "5.5.0", 550, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::UserUnknown, true));
        // The dialogue's statuses alone, and a list's expansion.
        assert_eq!(at("xyzzy", "5.5.2", 555, Stage::Recipient).reason, Reason::SyntaxError);
        assert_eq!(at("xyzzy", "4.5.3", 452, Stage::Recipient).reason, Reason::TooManyConn);
        assert_eq!(at("xyzzy", "5.2.4", 550, Stage::Recipient).reason, Reason::SystemError);
    }

    #[test]
    fn a_block_for_mailing_invalid_recipients_never_suppresses() {
        for text in [
            "This IP has been temporarily blocked for attempting to mail too many invalid recipients. IB112",
            "Requested action not taken: too many bad recipients",
        ] {
            let v = at(text, "", 554, Stage::Recipient);
            assert_eq!((v.reason, v.suppress), (Reason::Blocked, false), "{text}");
        }
        assert_eq!(at("this route requires encryption (TLS)", "", 553, Stage::Recipient).reason, Reason::SecurityError);
        assert_eq!(
            at("Must issue a STARTTLS command first", "5.7.0", 530, Stage::Message).reason,
            Reason::SecurityError
        );
        // The sender's TLS requirement the receiver could not meet: transient, never suppressed.
        let v = at("500 Remote server does not support TLS (state 6).", "", 500, Stage::Unknown);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::SecurityError, BounceType::Transient, false));
        assert_eq!(at("Maximum email size exceeded", "", 554, Stage::Message).reason, Reason::MesgTooBig);
    }

    #[test]
    fn a_providers_code_outweighs_its_words_and_a_generic_status() {
        // La Poste's invalid recipient, at a step the report does not name, under the generic
        // x.5.0: the provider's own code is the evidence.
        let v = at("Adresse destinataire invalide. Invalid recipient. LPN007_416", "5.5.0", 550, Stage::Unknown);
        assert_eq!(
            (v.reason, v.kind, v.suppress, v.basis),
            (Reason::UserUnknown, BounceType::Permanent, true, Basis::Provider)
        );
        // Orange's full mailbox under 5.1.1: the status alone would have suppressed it.
        let v = at("Boite du destinataire pleine. Recipient overquota. OFR_417 [417]", "5.1.1", 552, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::MailboxFull, false));
        // "Client host blocked for spamming issues" is a block of our host, not spam content.
        let v = at(
            "mwinf5c04 ME Adresse IP source bloquee pour incident de spam. Client host blocked for spamming issues. OFR006_102",
            "",
            550,
            Stage::Unknown,
        );
        assert_eq!(v.reason, Reason::Blocked);
        // Undecided codes leave the words to speak; the policy guards still hold.
        let v = at("Service refuse. Veuillez essayer plus tard. LPN006_107 mailbox full", "", 452, Stage::Recipient);
        assert_eq!(v.reason, Reason::MailboxFull);
        let v = at("Invalid recipient. LPN007_416", "5.7.1", 550, Stage::Message);
        assert_eq!((v.reason, v.suppress), (Reason::Filtered, false));
        let v = at("Invalid recipient. LPN007_416", "4.5.0", 450, Stage::Recipient);
        assert!(!v.suppress);
        // Sender-authentication words keep their finer reason over a table's block or policy.
        let v = at("SPF: 192.0.2.1 is not allowed to send mail. LPN004_401", "5.5.0", 550, Stage::Message);
        assert_eq!(v.reason, Reason::AuthFailure);
        // Cox and Spectrum codes.
        assert_eq!(at("Your IP is on our block list AUP#CXBL", "5.7.1", 554, Stage::Unknown).reason, Reason::Blocked);
        assert_eq!(at("sender rejected. AUP#In-1310", "5.1.0", 550, Stage::Message).reason, Reason::TooManyConn);
    }

    #[test]
    fn a_spam_ip_is_a_block_of_the_sending_host_not_spam_content() {
        let v = at("Suspected spam ip, please try later", "", 550, Stage::Message);
        assert_eq!((v.reason, v.suppress), (Reason::Blocked, false));
        assert_eq!(at("Suspected spam", "", 550, Stage::Message).reason, Reason::SpamDetected);
    }

    #[test]
    fn the_senders_quotas_are_no_full_mailbox() {
        for text in [
            "Daily sending quota exceeded",
            "Submission quota exceeded",
            "Daily SMTP relay limit exceeded for user",
            "Recipient's per hour message receive limit exceeded",
            "STOREDRV.Deliver; recipient thread limit exceeded",
        ] {
            let v = at(text, "5.4.5", 550, Stage::Recipient);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::TooManyConn, BounceType::Transient, false), "{text}");
        }
        // The recipient's quota still is one.
        assert_eq!(at("Mailbox quota exceeded", "5.2.2", 552, Stage::Recipient).reason, Reason::MailboxFull);
        // Gmail's refusal of unsafe content is a policy on it, not a block of us.
        let v = at(
            "This message was blocked because its content presents a potential security issue.",
            "5.7.0",
            552,
            Stage::Message,
        );
        assert_eq!(v.reason, Reason::PolicyViolation);
    }

    #[test]
    fn an_undefined_status_yields_to_the_specific_one_it_wraps() {
        // Exchange relaying the next hop's refusal: the inner 5.1.1 says the mailbox is gone.
        let text = "Remote server returned an error -> 550 5.1.1 RESOLVER.ADR.RecipNotFound; not found";
        let v = at(text, "5.0.350", 550, Stage::Recipient);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::UserUnknown, BounceType::Permanent, true));
        // Only a status of the same class: a 4.x.x history under a 5.0.0 is not this failure.
        let earlier = "gave up; earlier: 451 4.2.2 (see above)";
        assert_eq!(specific_status(EnhancedStatus::parse("5.0.0"), earlier), EnhancedStatus::parse("5.0.0"));
        // A specific status is kept as it is.
        assert_eq!(specific_status(EnhancedStatus::parse("5.2.2"), "550 5.1.1"), EnhancedStatus::parse("5.2.2"));
        assert_eq!(specific_status(EnhancedStatus::parse("5.0.0"), "no status here"), EnhancedStatus::parse("5.0.0"));
    }

    #[test]
    fn an_unknown_user_is_permanent_only_on_evidence() {
        let v = at("User unknown", "", 550, Stage::Recipient);
        assert_eq!((v.kind, v.reason, v.suppress), (BounceType::Permanent, Reason::UserUnknown, true));
        // After DATA: a filter's answer.
        let v = at("User unknown", "", 550, Stage::Message);
        assert_eq!((v.kind, v.reason, v.suppress), (BounceType::Transient, Reason::Filtered, false));
        // Step not said: the status decides.
        let v = at("User unknown", "5.1.1", 550, Stage::Unknown);
        assert_eq!((v.kind, v.suppress), (BounceType::Permanent, true));
        let v = at("User unknown", "5.2.1", 550, Stage::Unknown);
        assert_eq!((v.kind, v.suppress), (BounceType::Permanent, true));
        let v = at("User unknown", "5.0.0", 550, Stage::Unknown);
        assert_eq!((v.kind, v.reason, v.suppress), (BounceType::Transient, Reason::Filtered, false));
        // …or the code, where it answers one step only: 551 answers RCPT TO.
        let v = at("551 user does not exist", "5.0.0", 551, Stage::Unknown);
        assert_eq!((v.kind, v.reason, v.suppress), (BounceType::Permanent, Reason::UserUnknown, true));
        let v = at("551 user does not exist", "5.0.0", 551, Stage::Message);
        assert_eq!((v.reason, v.suppress), (Reason::Filtered, false));
        // A 4xx never suppresses, whatever its words.
        let v = at("Recipient address rejected: User unknown", "4.1.1", 450, Stage::Recipient);
        assert!(!v.suppress);
    }

    #[test]
    fn a_missing_mailbox_under_a_policy_status_counts_only_at_rcpt_to() {
        for text in ["550 5.7.1 No such user c18si2365148hub", "550 5.7.1 No mailbox found"] {
            let v = at(text, "5.7.1", 550, Stage::Recipient);
            assert_eq!((v.kind, v.reason, v.suppress), (BounceType::Permanent, Reason::UserUnknown, true), "{text}");
            let v = at(text, "5.7.1", 550, Stage::Local);
            assert_eq!((v.reason, v.suppress), (Reason::UserUnknown, true), "{text}");
            // After DATA, or at a step not said: a filter's words.
            for stage in [Stage::Message, Stage::Unknown] {
                let v = at(text, "5.7.1", 550, stage);
                assert_eq!((v.reason, v.suppress), (Reason::Filtered, false), "{text} {stage:?}");
            }
        }
        // Other x.7.x refusals at RCPT TO stay what their words say, and are not suppressed.
        let v = at("550 5.7.1 Client host blocked using zen.spamhaus.org", "5.7.1", 550, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::Blocked, false));
        let v = at("554 5.7.1 Relay access denied", "5.7.1", 554, Stage::Recipient);
        assert!(!v.suppress, "{v:?}");
    }

    #[test]
    fn recipient_address_rejected_names_its_why_after_it() {
        // Postfix prefixes every RCPT restriction so: the words after it decide.
        let reason = |t: &str| at(t, "", 554, Stage::Recipient).reason;
        assert_eq!(reason("Recipient address rejected: Internal system error"), Reason::SystemError);
        assert_eq!(reason("Recipient address rejected: Mailer error"), Reason::MailerError);
        assert_eq!(reason("Recipient address rejected: Media error"), Reason::ContentError);
        assert_eq!(reason("Recipient address rejected: User unknown in local recipient table"), Reason::UserUnknown);
        // Nothing after it that the reader knows: the address was refused.
        assert_eq!(reason("Recipient address rejected: xyzzy"), Reason::UserUnknown);
    }

    #[test]
    fn words_that_refuse_the_sender_or_its_rate_never_blame_the_recipient() {
        // Each holds words of a reason that suppresses (a domain that takes no mail, a host
        // that does not exist, no valid recipient) or of a full mailbox, but is about us.
        for (text, want) in [
            ("550 5.7.1 This server does not accept mail from sender@example.com", Reason::Rejected),
            ("553 5.1.8 Unroutable sender address", Reason::Rejected),
            ("554 Throttling failure: Daily message quota exceeded.", Reason::TooManyConn),
            ("550 Error: no valid recipients from 192.0.2.1", Reason::Blocked),
            ("550 sabatora@example.com is not accepting any mail", Reason::Filtered),
            ("550 Host not found, try again", Reason::NetworkError),
            ("550 Unrouteable mail domain \"example.org\"", Reason::NetworkError),
        ] {
            let v = at(text, "", 550, Stage::Recipient);
            assert_eq!((v.reason, v.suppress), (want, false), "{text}");
        }
    }

    #[test]
    fn sisimais_wordings_of_a_missing_mailbox_are_read_at_rcpt() {
        for text in [
            "550 BAD_RECIPIENT - see http://mail.example.org/undelivered",
            "550-a@example.net is not an active address at this host (invalid 550 username)",
            "550 Recipient not OK",
            "550 5.1.1 RESOLVER.ADR.RecipientNotFound; not found",
            "553 sorry, your envelope recipient has been denied (#5.7.1)",
            "550 There is no one at this address",
        ] {
            let v = at(text, "", 550, Stage::Recipient);
            assert_eq!((v.reason, v.suppress), (Reason::UserUnknown, true), "{text}");
        }
        // And a full mailbox in French, a sender's block and a list's policy, none suppressed.
        assert_eq!(at("552 Boite du destinataire pleine", "", 552, Stage::Recipient).reason, Reason::MailboxFull);
        assert_eq!(
            at(
                "550 Your server requires confirmation. Visit http://x.example/ to confirm this mail server",
                "",
                550,
                Stage::Recipient
            )
            .reason,
            Reason::Blocked
        );
        assert_eq!(
            at("550 Post by non-member to a members-only list", "", 550, Stage::Message).reason,
            Reason::PolicyViolation
        );
        let v = at(
            "550 SC-004 (COL0-MC1-F1) Unfortunately, messages from 192.0.2.1 weren't sent.",
            "",
            550,
            Stage::Message,
        );
        assert_eq!((v.reason, v.kind), (Reason::Blocked, BounceType::Transient));
        let v = at("550 domain [example.com] mismatches client ip 192.0.2.225.", "5.5.0", 550, Stage::Recipient);
        assert_eq!((v.reason, v.kind), (Reason::RequirePtr, BounceType::Transient));
    }

    #[test]
    fn a_status_alone_names_its_reason_by_its_rfc() {
        let of = |status: &str| {
            let v = at("xyzzy", status, 550, Stage::Recipient);
            (v.reason, v.suppress)
        };
        // The recipient's domain takes no mail (RFC 7505): gone. The sender's: about us.
        assert_eq!(of("5.1.10"), (Reason::NotAccept, true));
        assert_eq!(of("5.7.27"), (Reason::Rejected, false));
        // A bad sender address (RFC 3463 x.1.7, x.1.8) never blames the recipient.
        assert_eq!(of("5.1.7"), (Reason::Rejected, false));
        assert_eq!(of("5.1.8"), (Reason::Rejected, false));
        // RFC 7372's authentication statuses.
        assert_eq!(of("5.7.23"), (Reason::AuthFailure, false));
        assert_eq!(of("5.7.26"), (Reason::AuthFailure, false));
        assert_eq!(of("5.7.25"), (Reason::RequirePtr, false));
        assert_eq!(of("5.3.1"), (Reason::SystemFull, false));
        assert_eq!(of("5.1.1"), (Reason::UserUnknown, true));
        // Nor does a sender's status make "no such user" at a step nobody names the
        // recipient's: it stays a filter's answer.
        let v = at("550 5.1.8 User unknown", "5.1.8", 550, Stage::Unknown);
        assert_eq!((v.reason, v.suppress), (Reason::Filtered, false));
        let v = at("550 5.1.2 User unknown", "5.1.2", 550, Stage::Unknown);
        assert_eq!((v.reason, v.suppress), (Reason::UserUnknown, true));
    }

    #[test]
    fn a_bare_recipient_address_rejected_yields_to_a_status_naming_another_cause() {
        // New words after the prefix, and a status that names the cause: never "gone".
        for (status, want) in [
            ("5.3.4", Reason::MesgTooBig),
            ("5.3.0", Reason::SystemError),
            ("5.2.2", Reason::MailboxFull),
            ("5.2.3", Reason::ExceedLimit),
            ("5.6.0", Reason::ContentError),
        ] {
            let v = at(
                &format!("554 {status} <a@b.example>: Recipient address rejected: Xyzzy plugh"),
                status,
                554,
                Stage::Recipient,
            );
            assert_eq!((v.reason, v.basis, v.suppress), (want, Basis::Status, false), "{status}");
        }
        // A status that names the mailbox, or none at all: the refusal of the address stands.
        let v = at("550 5.1.1 <a@b.example>: Recipient address rejected: Xyzzy", "5.1.1", 550, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::UserUnknown, true));
        let v = at("550 <a@b.example>: Recipient address rejected: Xyzzy", "", 550, Stage::Recipient);
        assert_eq!(v.reason, Reason::UserUnknown);
        // Known words after the prefix still speak for themselves.
        let v = at("554 5.3.0 <a@b.example>: Recipient address rejected: User unknown", "5.3.0", 554, Stage::Recipient);
        assert_eq!(v.reason, Reason::UserUnknown);
    }

    #[test]
    fn the_rcpt_command_named_after_a_colon_is_the_recipient_step() {
        assert_eq!(
            Stage::named_in("SMTP:RCPT host 192.0.2.8: 553 5.3.0 <a@b.example>... No such user here"),
            Stage::Recipient
        );
        let v = judge(
            "SMTP:RCPT host 192.0.2.8: 553 5.3.0 <a@b.example>... No such user here",
            EnhancedStatus::parse("5.3.0"),
            Some(553),
            Stage::named_in("SMTP:RCPT host"),
        );
        assert_eq!((v.kind, v.reason, v.suppress), (BounceType::Permanent, Reason::UserUnknown, true));
    }

    #[test]
    fn qmails_dns_verdict_is_an_unknown_host() {
        let v = judge("Sorry, I couldn't find any host named example.invalid. (#5.1.2)", None, None, Stage::Local);
        assert_eq!((v.reason, v.suppress), (Reason::HostUnknown, true));
        // As its 1990s notices word it, under its own "This is a permanent error".
        let v =
            judge("Sorry, I couldn't find any host by that name.", EnhancedStatus::parse("5.0.0"), None, Stage::Local);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::HostUnknown, BounceType::Permanent, true));
    }

    #[test]
    fn a_multi_line_reply_is_read_across_its_lines() {
        // Gmail's reply as a report unfolds it, and as a transcript quotes it.
        let gmail = "550-5.1.1 The email account that you tried to reach does not exist. Please try 550-5.1.1 \
            double-checking the recipient's email address for typos or 550-5.1.1 unnecessary spaces. Learn more at 550 5.1.1 \
            https://support.google.com/mail/?p=NoSuchUser";
        assert_eq!(
            joined_reply(gmail),
            "550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking the \
             recipient's email address for typos or unnecessary spaces. Learn more at https://support.google.com/mail/?p=NoSuchUser"
        );
        let transcript = "<<< 552-5.7.0 This message was blocked because its content presents a potential \
            <<< 552-5.7.0 security issue. Please visit <<< 552 5.7.0 content and attachment content guidelines.";
        assert_eq!(
            joined_reply(transcript),
            "<<< 552-5.7.0 This message was blocked because its content presents a potential security issue. \
             Please visit content and attachment content guidelines."
        );
        // The words a line break split now name their reason; "blocked" had (and the
        // guidelines it cites are about attachments).
        let v = at(transcript, "5.7.0", 552, Stage::Message);
        assert_eq!((v.reason, v.subtype), (Reason::PolicyViolation, BounceSubtype::AttachmentRejected));
        // A one-line reply, other numbers in the text, and a code that is not the first
        // line's are left alone (and not copied).
        for t in [
            "550 5.1.1 User unknown 550 5.1.1",
            "550-5.7.1 Message from 192.0.2.550 rejected, 5501 550x",
            "421-4.7.0 Try again 550 later",
        ] {
            assert!(matches!(joined_reply(t), Cow::Borrowed(_)), "{t}");
        }
        assert_eq!(joined_reply("550-a 550-b 550 c"), "550-a b c");
    }

    #[test]
    fn a_disabled_mailbox_is_permanent_in_class_5_only() {
        let v = at("The email account that you tried to reach is disabled", "5.2.1", 550, Stage::Recipient);
        assert_eq!((v.kind, v.reason, v.suppress), (BounceType::Permanent, Reason::Suspend, true));
        let v = at("mailbox disabled", "4.2.1", 450, Stage::Recipient);
        assert_eq!((v.kind, v.suppress), (BounceType::Transient, false));
        let v = at("account suspended", "5.0.0", 550, Stage::Recipient);
        assert_eq!((v.kind, v.suppress), (BounceType::Transient, false));
        // A bad destination mailbox that says it is inactive: gone for good too (iCloud's
        // reply, BounceParser's AT&T "[SUSPEND]" under 5.1.1), but never under a 4xx status,
        // nor under the sender's own status (5.1.8: our address, not the recipient's).
        let v = at("550 5.1.1 <a@icloud.com>: inactive email address", "5.1.1", 550, Stage::Recipient);
        assert_eq!((v.kind, v.reason, v.suppress), (BounceType::Permanent, Reason::Suspend, true));
        let v = at("450 4.1.1 mailbox inactive", "4.1.1", 450, Stage::Recipient);
        assert_eq!((v.kind, v.suppress), (BounceType::Transient, false));
        let v = at("550 5.1.8 sender account disabled", "5.1.8", 550, Stage::Recipient);
        assert_eq!((v.kind, v.suppress), (BounceType::Transient, false));
    }

    #[test]
    fn a_refusal_that_says_nothing_known_is_permanent_by_its_class_and_never_suppresses() {
        let v = at("xyzzy", "", 554, Stage::Recipient);
        assert_eq!(
            (v.kind, v.subtype, v.reason, v.suppress, v.basis),
            (BounceType::Permanent, BounceSubtype::General, Reason::Undefined, false, Basis::Code)
        );
        let v = at("xyzzy", "", 451, Stage::Recipient);
        assert_eq!((v.kind, v.suppress), (BounceType::Transient, false));
        let v = judge("xyzzy", None, None, Stage::Unknown);
        assert_eq!((v.kind, v.suppress), (BounceType::Undetermined, false));
        // A status with a known subject is not "nothing known".
        assert_eq!(at("xyzzy", "5.1.2", 550, Stage::Recipient).reason, Reason::HostUnknown);
        assert!(at("xyzzy", "5.4.4", 550, Stage::Recipient).suppress);
    }

    #[test]
    fn exchange_names_a_domain_that_does_not_exist_by_its_dns_answer() {
        // Exchange's NDRs say no step; the DNS answer's name is the evidence, whatever
        // status (5.4.310, 5.4.312) or words ("DNS query failed") go with it.
        for (text, status) in [
            (
                "550 5.4.310 DNS domain x.example does not exist [Message=InfoDomainNonexistent] \
                 [LastAttemptedServerName=x.example]",
                "5.4.310",
            ),
            ("550 5.4.312 DNS query failed [Message=InfoDomainNonexistent]", "5.4.312"),
        ] {
            let v = at(text, status, 550, Stage::Unknown);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::HostUnknown, BounceType::Permanent, true), "{text}");
        }
        // A lookup that failed in another way is no such evidence.
        let v = at("550 5.4.312 DNS query failed [Message=InfoNoMxRecordFound]", "5.4.312", 550, Stage::Unknown);
        assert!(!v.suppress);
    }

    #[test]
    fn a_broken_lookup_under_unable_to_route_is_no_evidence_the_domain_is_gone() {
        let gone = at(
            "Host or domain name not found. Name service error for name=x.test type=A: Host not found",
            "5.4.4",
            550,
            Stage::Unknown,
        );
        assert_eq!((gone.reason, gone.kind, gone.suppress), (Reason::HostUnknown, BounceType::Permanent, true));
        for words in [
            "Name service error for name=x.test type=MX: Malformed or unexpected name server reply",
            "Host or domain name not found. Name service error for name=x.test type=MX: Host not found, try again",
        ] {
            let v = at(words, "5.4.4", 550, Stage::Unknown);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::NetworkError, BounceType::Transient, false), "{words}");
        }
    }

    #[test]
    fn a_refusal_to_relay_is_told_by_its_words_not_by_the_word_relay() {
        let v = at("<a@b.test>: Relay access denied", "5.7.1", 554, Stage::Recipient);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::NoRelaying, BounceType::Transient, false));
        let v = at("sorry, that domain isn't in my list of allowed rcpthosts", "", 553, Stage::Recipient);
        assert_eq!(v.reason, Reason::NoRelaying);
        // A relay named by the account refused nothing.
        assert_ne!(at("delivery via relay mx.test: xyzzy", "", 550, Stage::Recipient).reason, Reason::NoRelaying);
    }

    #[test]
    fn stage_words_do_not_overlap() {
        let lists = [AT_RCPT, AFTER_RCPT, AT_MAIL];
        for (one, other) in lists.iter().flat_map(|a| lists.iter().map(move |b| (*a, *b))).filter(|(a, b)| a != b) {
            for a in one {
                for b in other {
                    assert!(!a.contains(b), "{a} holds {b}");
                    let overlap = (2..a.len().min(b.len())).find(|k| a.ends_with(&b[..*k]));
                    assert!(overlap.is_none(), "{a} ends with the start of {b}");
                }
            }
        }
        assert_eq!(Stage::named_in("550 in reply to RCPT TO command"), Stage::Recipient);
        assert_eq!(Stage::named_in("554 after end of data; in reply to rcpt to"), Stage::Recipient);
        assert_eq!(Stage::named_in("554 5.7.1 (in reply to end of DATA command)"), Stage::Message);
        assert_eq!(Stage::named_in("550 user unknown"), Stage::Unknown);
        assert_eq!(Stage::named_in("554 Transaction failed (in reply to MAIL FROM command)"), Stage::Sender);
        assert_eq!(Stage::named_in("SMTP error from remote mail server after MAIL FROM:<a@b.example>"), Stage::Sender);
        // A notice that names a later step too failed at that step.
        assert_eq!(Stage::named_in("after MAIL FROM … 554 (in reply to end of DATA command)"), Stage::Message);
    }

    #[test]
    fn a_refusal_of_mail_from_says_nothing_about_the_recipient() {
        // Nothing known, or words that would name the recipient unusable (a server that
        // verifies senders): a rejection of the sender, transient, never suppressed.
        for (text, status, code) in [
            ("554 xyzzy", "5.0.0", 554),
            ("553 Local user only,163 smtp5", "5.0.0", 553),
            ("550 5.1.1 User unknown", "5.1.1", 550),
            ("550 5.1.2 Host unknown", "5.1.2", 550),
            // Our return path's domain, not the recipient's, publishes no mail exchanger.
            (
                "550-5.7.27 The sender address <b@example.org> is not accepted because the domain \
                 example.org publishes a null MX record. - gsmtp",
                "5.7.27",
                550,
            ),
            // A disabled account there is ours: the status that makes a recipient's permanent
            // says nothing of a recipient at this step.
            ("550 5.2.1 Account disabled", "5.2.1", 550),
            ("550 5.1.1 <b@example.org>: inactive email address", "5.1.1", 550),
        ] {
            let v = at(text, status, code, Stage::Sender);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::Rejected, BounceType::Transient, false), "{text}");
        }
        // A cause it names stays: a block of our address is a block.
        let v = at("550 5.7.1 Client host blocked using zen.spamhaus.org", "5.7.1", 550, Stage::Sender);
        assert_eq!((v.reason, v.suppress), (Reason::Blocked, false));
        // The same unknown user at RCPT TO is one.
        let v = at("550 5.1.1 User unknown", "5.1.1", 550, Stage::Recipient);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::UserUnknown, BounceType::Permanent, true));
    }

    #[test]
    fn words_come_before_the_status() {
        // A 5.1.1 that names a block is a block: the address is not shown to be gone.
        let v = at("blocked using zen.spamhaus.org", "5.1.1", 550, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::Blocked, false));
        // So is one that only quotes a public blocklist, whatever else it says.
        for text in [
            "553 5.1.3 see http://www.spamcop.net/bl.shtml?192.0.2.1",
            "550 5.1.1 <a@example.org>: user unknown; 192.0.2.1 listed at dnsbl-1.uceprotect.net",
            "554 5.1.1 Rejected: 192.0.2.1 is on b.barracudacentral.org",
            "550 5.1.1 No such user; see http://cbl.abuseat.org/lookup.cgi?ip=192.0.2.1",
            "550 5.1.1 Mailspike reputation too low",
            "550 5.1.1 Listed in dyna.spamrats.com",
            "550 5.1.1 psbl.surriel.com lists 192.0.2.1",
        ] {
            let v = at(text, "5.1.1", 550, Stage::Recipient);
            assert_eq!((v.reason, v.suppress), (Reason::Blocked, false), "{text}");
        }
        let v = at(
            "The user you are trying to contact is receiving mail at a rate that prevents",
            "5.2.1",
            550,
            Stage::Recipient,
        );
        assert_eq!((v.reason, v.kind), (Reason::Speeding, BounceType::Transient));
    }

    #[test]
    fn a_system_not_accepting_network_messages_takes_no_mail_for_as_long_as_its_code_says() {
        // RFC 3463's own words for x.3.2, not a network failure: permanent (and suppressed)
        // under a 5xx such as RFC 7504's 521, transient under a 4xx.
        let text = "521 5.3.2 <a@example.org>: Recipient address rejected: System not accepting network messages";
        let v = at(text, "5.3.2", 521, Stage::Recipient);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::NotAccept, BounceType::Permanent, true));
        let v = at("450 4.3.2 System not accepting network messages", "4.3.2", 450, Stage::Recipient);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::NotAccept, BounceType::Transient, false));
    }

    #[test]
    fn a_broken_dialogue_is_no_fault_of_the_address() {
        for (text, code) in
            [("554 <a@example.org>... Remote protocol error", 554), ("451 SMTP protocol violation", 451)]
        {
            let v = judge(text, None, Some(code), Stage::Unknown);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::SyntaxError, BounceType::Transient, false), "{text}");
        }
        // (A weak word: the address's own words still speak.)
        assert_eq!(
            at("550 5.1.1 User unknown; protocol error", "5.1.1", 550, Stage::Recipient).reason,
            Reason::UserUnknown
        );
    }

    #[test]
    fn an_explicit_bad_mailbox_status_outweighs_content_words() {
        let text = "550 5.1.1 <a@example.org> user unknown. This message was scanned for viruses and spam.";
        let v = at(text, "5.1.1", 550, Stage::Unknown);
        assert_eq!((v.reason, v.kind, v.suppress), (Reason::UserUnknown, BounceType::Permanent, true));
        // A reason about the address itself still speaks.
        assert_eq!(at("mailbox full", "5.1.1", 550, Stage::Recipient).reason, Reason::MailboxFull);
        assert_eq!(at("relaying denied", "5.1.1", 550, Stage::Recipient).reason, Reason::NoRelaying);
    }

    #[test]
    fn a_refusal_of_the_sending_client_never_blames_the_recipient() {
        // Postfix names a client without reverse DNS `unknown[…]`, and says "Host not found"
        // of a HELO name: neither is about the recipient, at RCPT TO or anywhere.
        for (text, status, code, reason) in [
            ("554 <unknown[192.0.2.1]>: Client host rejected: Access denied", "5.0.0", 554, Reason::Blocked),
            ("554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied", "5.7.1", 554, Reason::Blocked),
            (
                "450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.1]",
                "4.7.1",
                450,
                Reason::RequirePtr,
            ),
            (
                "450 4.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.1]",
                "4.7.1",
                450,
                Reason::RequirePtr,
            ),
            ("550 5.7.1 <mail.example.com>: Helo command rejected: Host not found", "5.7.1", 550, Reason::Blocked),
            (
                "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
                "5.5.2",
                504,
                Reason::Blocked,
            ),
        ] {
            let v = at(text, status, code, Stage::Recipient);
            assert_eq!(v.reason, reason, "{text}");
            assert!(!v.suppress && v.kind == BounceType::Transient, "{text}: {v:?}");
        }
        // The recipient's own refusal, by the same server, is still read as one.
        let v =
            at("550 5.1.1 <a@example.org>: Recipient address rejected: User unknown", "5.1.1", 550, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::UserUnknown, true));
    }

    #[test]
    fn a_fault_of_the_dialogue_or_the_sender_never_blames_the_recipient() {
        for (text, reason) in [
            ("500 5.5.1 Unknown command", Reason::SyntaxError),
            ("500 Unknown command", Reason::SyntaxError),
            ("503 5.5.1 Bad sequence of commands", Reason::SyntaxError),
            ("550 Sender unknown", Reason::Rejected),
            ("553 Unknown sender address", Reason::Rejected),
        ] {
            let code = text[..3].parse().unwrap_or(550);
            let v = judge(text, find_status(text), Some(code), Stage::Recipient);
            assert_eq!(v.reason, reason, "{text}");
            assert!(!v.suppress, "{text}: {v:?}");
        }
        // Two words for a mailbox are still a mailbox.
        let v = judge("550 ** No mail box available for this user **", None, Some(550), Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::UserUnknown, true));
    }

    #[test]
    fn rules_without_a_word_no_longer_read_it() {
        let rules = Rules::without(|r, w| r == Reason::UserUnknown && w == "no such user");
        let v = judge_with(&rules, "no such user", None, Some(550), Stage::Recipient, None);
        assert_eq!(v.reason, Reason::Undefined);
        assert!(Rules::words().any(|(r, w, strong)| r == Reason::UserUnknown && w == "no such user" && strong));
    }

    #[test]
    fn a_phrase_rule_reads_pairings_no_list_holds_and_keeps_its_place() {
        // Pairings of a name and what is said of it that no rule lists word for word.
        for text in
            ["550 5.0.0 Host does not exist", "550 No such host example.org", "550 nonexistent domain example.org"]
        {
            let v = at(text, "5.0.0", 550, Stage::Recipient);
            assert_eq!((v.reason, v.kind, v.suppress), (Reason::HostUnknown, BounceType::Permanent, true), "{text}");
        }
        for text in ["450 Inbox is full", "450 mail box exceeded its allowance", "450 full inbox"] {
            let v = at(text, "", 450, Stage::Recipient);
            assert_eq!((v.reason, v.suppress), (Reason::MailboxFull, false), "{text}");
        }
        // Rules before the phrase rule's reason still win: a refused sender's domain, and a
        // lookup that broke.
        for text in ["553 Sender domain does not exist", "553 sender's domain not found"] {
            let v = at(text, "", 553, Stage::Unknown);
            assert_eq!((v.reason, v.suppress), (Reason::Rejected, false), "{text}");
        }
        let v = at("451 Host not found, try again", "", 451, Stage::Recipient);
        assert_eq!((v.reason, v.suppress), (Reason::NetworkError, false));
        // A client's hostname that its reverse lookup does not give is no pairing.
        assert_ne!(at("550 client hostname unknown", "", 550, Stage::Unknown).reason, Reason::HostUnknown);
        // Every pairing is a word of its phrase rule; a listed word is of none.
        let pairings: Vec<_> = Rules::words().filter(|(_, w, _)| Rules::phrase_of(w) == Some(0)).collect();
        assert!(pairings.iter().all(|(r, _, strong)| *r == Reason::HostUnknown && *strong));
        assert!(pairings.iter().any(|(_, w, _)| *w == "domain does not exist"));
        assert_eq!(Rules::phrase_of("no such user"), None);
        // Without its pairings, the rule reads none of them.
        let rules = Rules::without(|_, w| Rules::phrase_of(w) == Some(0));
        let v = judge_with(&rules, "Host does not exist", None, Some(550), Stage::Recipient, None);
        assert_ne!(v.reason, Reason::HostUnknown);
    }

    proptest! {
        /// The policy's invariants hold for any words, status, code and step: suppression
        /// only with a permanent type and never on a 4xx; a 4xx is never permanent unless the
        /// words say the address is gone.
        #[test]
        fn suppression_needs_a_permanent_refusal(
            words in prop::collection::vec(prop::sample::select(Rules::words().map(|w| w.1).collect::<Vec<_>>()), 0..3),
            noise in "[a-z ]{0,20}",
            class in 4u8..6, subject in 0u8..8, detail in 0u8..8,
            has_status in any::<bool>(), code_rest in 0u16..55,
            stage in prop::sample::select(vec![Stage::Recipient, Stage::Message, Stage::Sender, Stage::Unknown]),
        ) {
            let text = format!("{noise} {}", words.join(" "));
            let status = has_status.then_some(EnhancedStatus { class, subject: u16::from(subject), detail: u16::from(detail) });
            let code = u16::from(class) * 100 + code_rest;
            let v = judge(&text, status, Some(code), stage);
            prop_assert!(!v.suppress || v.kind == BounceType::Permanent);
            prop_assert!(!v.suppress || class == 5);
            // Nothing said to MAIL FROM is about a recipient.
            prop_assert!(!v.suppress || stage != Stage::Sender);
            // Nor is a status about the sender (x.1.7, x.1.8) or the dialogue (x.5.1–x.5.6).
            prop_assert!(
                !v.suppress
                    || !status.is_some_and(|s| (s.subject == 1 && matches!(s.detail, 7 | 8))
                        || (s.subject == 5 && (1..=6).contains(&s.detail)))
            );
            // Under x.7.x only a missing mailbox said at RCPT TO (which a 551 names).
            let at_rcpt = stage == Stage::Recipient || (stage == Stage::Unknown && code == 551);
            prop_assert!(
                !v.suppress
                    || status.is_none_or(|s| s.subject != 7)
                    || (at_rcpt && v.reason == Reason::UserUnknown)
            );
            if stage == Stage::Message && !status.is_some_and(|s| s.subject == 1 || (s.subject == 2 && s.detail == 1)) {
                prop_assert!(v.reason != Reason::UserUnknown);
            }
        }
    }
}
