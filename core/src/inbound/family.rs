//! Who wrote a bounce, and the readers for the formats the generic reader misreads.
//!
//! [`identify`] names the reporting MTA's family from its fingerprints: fixed wordings it
//! writes into every notice, its headers, its subjects. A family with a reader of its own
//! ([`read`]) has its notice read by that reader; the generic reader stays the fallback for
//! every other message, and for a notice its family's reader cannot follow.
//!
//! Why readers per family: some formats put the failed address and its reason in separate
//! sections (Domino's "was not delivered to:" / "because:"), list addresses in a block the
//! generic line search misreads (Exim's indented "failed:" list), or report a refusal of the
//! server's own with no SMTP step at all (a local delivery: qmail's "no mailbox here by that
//! name", Exim's "Unrouteable address"). Only the family's format says which lines belong to
//! which recipient, and whether the server that refused holds the mailbox
//! ([`Stage::Local`]).
//!
//! Invariants: identification is a pure function of the headers and the human account;
//! a reader either returns every failed recipient its format lists, or nothing (and the
//! generic reader takes over) — never a partial list.

use super::mime::Headers;
use super::text::addresses;
use crate::bounce::reason::Stage;
use serde::{Deserialize, Serialize};

/// The family of MTA (or mail service) that wrote a bounce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Family {
    /// Postfix: "This is the mail system at host …".
    Postfix,
    /// Sendmail: "----- Transcript of session follows -----".
    Sendmail,
    /// Exim: "This message was created automatically by mail delivery software."
    Exim,
    /// qmail: "Hi. This is the qmail-send program at …".
    Qmail,
    /// Courier: "… running the Courier mail server".
    Courier,
    /// OpenSMTPD: "This is the MAILER-DAEMON, please DO NOT REPLY to this e-mail."
    // (Serialized as `name()` spells it, not `open_smtpd`: one spelling everywhere.)
    #[serde(rename = "opensmtpd")]
    OpenSmtpd,
    /// Microsoft Exchange, on premises or online (Office 365, Outlook.com).
    Exchange,
    /// HCL (formerly Lotus/IBM) Domino: "DELIVERY FAILURE:" subjects.
    Domino,
    /// Ipswitch IMail Server: `X-Mailer: <SMTP32 v…>`.
    #[serde(rename = "imailserver")]
    IMailServer,
    /// Google's mail (Gmail, Workspace): notices from `mailer-daemon@googlemail.com`.
    Google,
    /// AOL's own notices (its AIRmail mailer): "Your mail to the following recipients could
    /// not be delivered because …", then the recipients by screen name.
    Aol,
    /// Not recognised: the generic reader.
    #[default]
    Unknown,
}

impl Family {
    /// The family's name as the corpus and logs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Postfix => "postfix",
            Family::Sendmail => "sendmail",
            Family::Exim => "exim",
            Family::Qmail => "qmail",
            Family::Courier => "courier",
            Family::OpenSmtpd => "opensmtpd",
            Family::Exchange => "exchange",
            Family::Domino => "domino",
            Family::IMailServer => "imailserver",
            Family::Google => "google",
            Family::Aol => "aol",
            Family::Unknown => "unknown",
        }
    }

    /// Every family with a reader of its own.
    pub const WITH_READERS: &[Family] = &[
        Family::Aol,
        Family::Domino,
        Family::Exchange,
        Family::Exim,
        Family::Google,
        Family::IMailServer,
        Family::Qmail,
    ];
}

/// The fixed wordings [`identify`] looks for, lower-case.
const WORDINGS: &[&str] = &[
    "not listed in domino directory",
    "was not delivered to:",
    "because:",
    "this is the qmail-send program",
    "created automatically by mail delivery software",
    "this is the mail system at host",
    "the postfix program",
    "transcript of session follows",
    "had permanent fatal errors",
    "courier mail server",
    "this is the mailer-daemon, please do not reply",
    "delivery has failed to these recipients or groups",
    "your message did not reach some or all of the intended recipients",
    "diagnostic information for administrators",
    "did not reach the following recipient(s)",
    "your mail to the following recipients could not be delivered",
];
const _: () = assert!(WORDINGS.len() <= 32);

// (Leftmost-first, so that aho-corasick's vectorised prefilter skips ahead: it is used only
// under leftmost semantics. No wording holds another, so every wording present is found.)
static FINGERPRINTS: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> = std::sync::LazyLock::new(|| {
    aho_corasick::AhoCorasick::builder().match_kind(aho_corasick::MatchKind::LeftmostFirst).build(WORDINGS).ok()
});

/// The family whose fingerprints a notice carries. `lower` is its human-readable account,
/// lower-cased.
pub(crate) fn identify(top: &Headers<'_>, subject: &str, lower: &str) -> Family {
    let has = |h: &str| top.raw(h).is_some();
    let header_starts = |h: &str, p: &str| {
        top.raw(h).is_some_and(|v| {
            let v = String::from_utf8_lossy(v);
            v.trim_start().to_ascii_lowercase().starts_with(p)
        })
    };
    let subject = subject.trim().to_ascii_lowercase();
    // The fixed first lines sit near the top of the account; 2 KB covers every family's.
    let end = (0..=lower.len().min(2048)).rev().find(|i| lower.is_char_boundary(*i)).unwrap_or(0);
    // Every fingerprint wording in one pass (a search per wording was eleven passes).
    let mut seen = 0u32;
    // (No wording holds another, and where one ends with the start of another it is one
    // letter, in words no sentence runs together (`…directory` + `your…`): a plain search
    // finds all of them, and it skips ahead with a prefilter where an overlapping one read
    // every byte. `wordings_do_not_overlap` keeps that true.)
    for m in FINGERPRINTS.as_ref().map(|ac| ac.find_iter(&lower[..end])).into_iter().flatten() {
        seen |= 1 << m.pattern().as_u32();
    }
    let says = |w: &str| WORDINGS.iter().position(|x| *x == w).is_some_and(|i| seen & (1 << i) != 0);
    if header_starts("X-Mailer", "<smtp32 v") {
        Family::IMailServer
    } else if header_starts("Mailer", "airmail") || says("your mail to the following recipients could not be delivered")
    {
        Family::Aol
    } else if subject.starts_with("delivery failure:")
        || subject.starts_with("delivery_failure:")
        || says("not listed in domino directory")
        || (says("was not delivered to:") && says("because:"))
    {
        Family::Domino
    } else if says("this is the qmail-send program") {
        Family::Qmail
    } else if says("created automatically by mail delivery software")
        || subject.starts_with("mail delivery failed: returning message to sender")
    {
        Family::Exim
    } else if says("this is the mail system at host") || says("the postfix program") {
        Family::Postfix
    } else if says("transcript of session follows") || says("had permanent fatal errors") {
        Family::Sendmail
    } else if says("courier mail server") {
        Family::Courier
    } else if says("this is the mailer-daemon, please do not reply") {
        Family::OpenSmtpd
    } else if has("X-MS-Exchange-Message-Is-Ndr")
        || says("delivery has failed to these recipients or groups")
        || says("your message did not reach some or all of the intended recipients")
        || says("diagnostic information for administrators")
        || says("did not reach the following recipient(s)")
    {
        Family::Exchange
    } else if top
        .address("From")
        .is_some_and(|f| f.ends_with("@googlemail.com") || f.ends_with("@google.com") || f == "mailer-daemon@gmail.com")
    {
        Family::Google
    } else {
        Family::Unknown
    }
}

/// One failed recipient as its family's format states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The address, lower-cased.
    pub(crate) recipient: String,
    /// The lines about it: the server's words.
    pub(crate) diagnostic: String,
    /// The step, where the format says (`Some(Stage::Local)` for a local delivery).
    pub(crate) stage: Option<Stage>,
    /// The RFC 3463 status a fixed wording of the format stands for, where it gives none.
    pub(crate) status: Option<&'static str>,
    /// The line that named a recipient without an address (Exchange's display name): what
    /// stands for its words when no line says more, as the address does otherwise.
    named_by: Option<String>,
}

/// A diagnostic is kept to this many bytes: an SMTP reply is a few lines, and anyone may
/// mail the bounce address a notice whose "reason" is a megabyte.
const MAX_DIAGNOSTIC: usize = 4096;

impl Found {
    fn new(address: &str) -> Found {
        Found {
            recipient: address.to_ascii_lowercase(),
            diagnostic: String::new(),
            stage: None,
            status: None,
            named_by: None,
        }
    }

    /// A failure its line names without an address.
    fn unnamed(line: &str) -> Found {
        Found { named_by: Some(line.to_string()), ..Found::new("") }
    }

    /// Adds one more line of the server's words (space-joined, up to [`MAX_DIAGNOSTIC`]).
    fn say(&mut self, line: &str) {
        if self.diagnostic.len() >= MAX_DIAGNOSTIC {
            return;
        }
        if !self.diagnostic.is_empty() {
            self.diagnostic.push(' ');
        }
        self.diagnostic.push_str(line.trim());
        let mut end = self.diagnostic.len().min(MAX_DIAGNOSTIC);
        while !self.diagnostic.is_char_boundary(end) {
            end -= 1;
        }
        self.diagnostic.truncate(end);
    }
}

/// The failed recipients of `family`'s notice, read in its format (at most
/// [`super::MAX_RECIPIENTS`]); `None` when the family has no reader or the notice does not
/// follow it (the generic reader then reads it). `from` is the notice's own `From` address.
pub(crate) fn read(family: Family, human: &str, from: &str) -> Option<Vec<Found>> {
    let mut found = match family {
        Family::Aol => aol(human, from),
        Family::Domino => domino(human),
        Family::Exim => exim(human),
        Family::IMailServer => imail(human),
        Family::Qmail => qmail(human),
        Family::Exchange => exchange(human),
        Family::Google => google(human),
        _ => return None,
    };
    found.truncate(super::MAX_RECIPIENTS);
    for f in &mut found {
        // (A format that gives an address and no words: the address is all it says; or the
        // line that named the recipient, where it gave no address.)
        // (`say` keeps it to MAX_DIAGNOSTIC, as any line.)
        match f.named_by.take() {
            Some(line) if f.diagnostic.is_empty() => f.say(&line),
            _ if f.diagnostic.is_empty() => f.diagnostic = f.recipient.clone(),
            _ => {}
        }
    }
    (!found.is_empty()).then_some(found)
}

/// A reader has as many recipients as a notice may name ([`super::MAX_RECIPIENTS`]): it
/// stops there, so that a notice listing millions costs no more than one listing the most
/// (`read` keeps the first that many in any case).
fn full(out: &[Found]) -> bool {
    out.len() >= super::MAX_RECIPIENTS
}

/// The lines after the one that is `title` (compared trimmed, case-blind) up to the next
/// line that ends a section (`stop` says which), blank lines skipped.
fn section<'a>(human: &'a str, title: &str, stop: impl Fn(&str) -> bool) -> Vec<&'a str> {
    let mut lines = human.lines();
    if !lines.by_ref().any(|l| l.trim().eq_ignore_ascii_case(title)) {
        return Vec::new();
    }
    lines.map(str::trim).skip_while(|l| l.is_empty()).take_while(|l| !stop(l)).filter(|l| !l.is_empty()).collect()
}

/// Domino: "was not delivered to:" lists the addresses, "because:" the one reason for all
/// of them. Domino holds the mailbox it looked up ("not listed in Domino Directory").
fn domino(human: &str) -> Vec<Found> {
    let is_title = |l: &str| l.eq_ignore_ascii_case("because:") || l.eq_ignore_ascii_case("was not delivered to:");
    let to = section(human, "was not delivered to:", is_title);
    // The one reason, copied to each address: both kept bounded.
    let mut because = Found::new("");
    for l in section(human, "because:", |l| l.is_empty() || is_title(l)) {
        because.say(l);
    }
    let local = because.diagnostic.to_ascii_lowercase().contains("domino directory");
    to.iter()
        .flat_map(|l| addresses(l))
        .take(super::MAX_RECIPIENTS)
        .map(|a| Found {
            diagnostic: because.diagnostic.clone(),
            stage: local.then_some(Stage::Local),
            ..Found::new(&a)
        })
        .collect()
}

/// Exim: after "The following address(es) failed:" (or "The following address failed:"),
/// each address on a line of its own, indented two spaces, its
/// reason on the more deeply indented lines below. A reason that quotes no remote server
/// ("SMTP error from remote mail server", "host … said") is Exim's own local verdict.
fn exim(human: &str) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mut lines = human.lines().peekable();
    // The list starts after the sentence that announces it.
    let mut started = false;
    for l in lines.by_ref() {
        let lower = l.to_ascii_lowercase();
        if lower.contains("address(es) failed") || lower.contains("following address failed") {
            started = true;
            break;
        }
    }
    if !started {
        return out;
    }
    while let Some(l) = lines.next() {
        if l.trim().is_empty() {
            if out.is_empty() {
                continue;
            }
            // A blank line ends an entry; the list goes on while the next line is another.
            match lines.peek() {
                Some(n) if n.starts_with("  ") && !n.starts_with("    ") && n.contains('@') => continue,
                _ => break,
            }
        }
        let indent = l.len() - l.trim_start().len();
        if indent < 4 {
            // Exim hides an address that a redirection (a `.forward`, a filter) made and that
            // is not to be shown: "an undisclosed address", then "(generated from x@y)" below
            // it. The address the sender wrote is the one generated from; that is the failure
            // the sender can act on.
            if full(&out) {
                break;
            }
            if l.trim().eq_ignore_ascii_case("an undisclosed address") {
                let Some(addr) = lines.peek().and_then(|n| generated_from(n)) else { break };
                out.push(Found::new(&addr));
                lines.next();
                continue;
            }
            // An address line: "  user@example.org" (maybe "<…>", maybe a note after it).
            let first = l.split_whitespace().next().unwrap_or_default();
            let Some(addr) = addresses(first).into_iter().next() else { break };
            out.push(Found::new(&addr));
        } else if let Some(last) = out.last_mut() {
            last.say(l);
        }
    }
    for f in &mut out {
        let d = f.diagnostic.to_ascii_lowercase();
        let remote = d.contains("remote mail server") || d.contains("said:") || d.contains("host ");
        if !remote && !d.is_empty() {
            f.stage = Some(Stage::Local);
        }
    }
    out
}

/// AOL: "Sorry <sender>. Your mail to the following recipients could not be delivered
/// because <why>:", then one recipient per indented line, named by AOL screen name (the
/// address without its domain, which is the notice's own: `MAILER-DAEMON@aol.com`). The
/// sentence is the reason for all of them.
fn aol(human: &str, from: &str) -> Vec<Found> {
    const SAYS: &str = "your mail to the following recipients could not be delivered";
    let mut lines = human.lines();
    let Some(sentence) = lines.by_ref().find_map(|l| l.to_ascii_lowercase().find(SAYS).map(|at| &l[at..])) else {
        return Vec::new();
    };
    let mut because = Found::new("");
    because.say(sentence.trim_end().trim_end_matches(':'));
    let domain = from.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
    let mut out = Vec::new();
    for l in lines {
        // Checked before the line is read: a line past the most a notice may name is never
        // read, so it cannot undo the names before it (an odd line makes the list no list).
        if full(&out) {
            break;
        }
        if l.trim().is_empty() {
            if out.is_empty() {
                continue;
            }
            break;
        }
        if !l.starts_with([' ', '\t']) {
            break;
        }
        let address = if l.contains('@') {
            addresses(l).into_iter().next()
        } else {
            // One word, as an address's local part: a line of words is no screen name (AOL
            // writes its members' names without their spaces).
            let name = l.trim().to_ascii_lowercase();
            let fits = !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-+".contains(&c));
            (fits && !domain.is_empty()).then(|| format!("{name}@{domain}"))
        };
        let Some(address) = address else { return Vec::new() };
        out.push(Found { diagnostic: because.diagnostic.clone(), ..Found::new(&address) });
    }
    out
}

/// The address of Exim's "(generated from x@y)" line, indented below the address it made.
fn generated_from(line: &str) -> Option<String> {
    let t = line.trim();
    let rest = t.strip_prefix('(')?.strip_suffix(')')?;
    let (word, addr) = rest.split_at_checked("generated from ".len())?;
    if !word.eq_ignore_ascii_case("generated from ") || line.len() - line.trim_start().len() < 4 {
        return None;
    }
    addresses(addr.trim()).into_iter().next()
}

/// Exchange's plain notice (5.5/2000/2003, sent without a delivery-status part): after "did
/// not reach the following recipient(s):", each address starts a line ("a@b on <date>"),
/// its reason on the lines below (indented, though a long MTS-ID wraps to the margin);
/// the list ends at a `-----` rule or the end of the text. (The quoted "To:" above the list
/// names the message's recipients, not the failed ones.) The later notices carry a
/// delivery-status part, which the generic reader reads.
/// Exchange 5.5 may name a recipient of its own directory by display name alone ("Jane
/// Doe on Fri, 14 Sep 2007 …"): a failure all the same, read with an empty address (a
/// recipient the notice does not give), which the engine gives to the email's only
/// recipient, or records without one.
fn exchange(human: &str) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mut lines = human.lines();
    if !lines.by_ref().any(|l| l.trim().eq_ignore_ascii_case("did not reach the following recipient(s):")) {
        return out;
    }
    for l in lines {
        if l.trim().is_empty() {
            continue;
        }
        if l.starts_with("-----") {
            break;
        }
        let first = l.split_whitespace().next().unwrap_or_default();
        let at_margin = !l.starts_with([' ', '\t']);
        match addresses(first).into_iter().next() {
            Some(addr) if at_margin => {
                if full(&out) {
                    break;
                }
                out.push(Found::new(&addr));
            }
            None if at_margin && named_on_a_date(l) => {
                if full(&out) {
                    break;
                }
                out.push(Found::unnamed(l));
            }
            _ => {
                let Some(last) = out.last_mut() else { break };
                last.say(l);
            }
        }
    }
    out
}

/// Whether an Exchange list line names a recipient by display name and the time it failed:
/// "<name> on <date>", the date a weekday's abbreviation and a comma ("Fri, 14 Sep 2007 …") or
/// digits ("9/14/2007 6:52 PM"), and no address anywhere on the line.
fn named_on_a_date(line: &str) -> bool {
    const DAYS: [&str; 7] = ["mon,", "tue,", "wed,", "thu,", "fri,", "sat,", "sun,"];
    let Some(at) = line.find(" on ") else { return false };
    let (name, date) = (line[..at].trim(), line[at + 4..].trim_start());
    !name.is_empty()
        && !line.contains('@')
        && (date.starts_with(|c: char| c.is_ascii_digit()) || DAYS.iter().any(|d| starts_with_ci(date.as_bytes(), d)))
}

/// Google's notices of 2005–2015 (Gmail, Google Apps): "Delivery to the following
/// recipient failed permanently:", the addresses indented one to a line, then "Technical
/// details of permanent failure:" and one account for all of them, up to the `-----` rule
/// before the original (the oldest name no details at all). The account need not quote the
/// address ("… The error that the other server returned was: 550 550 Address unknown (state
/// 14)."), which is why the generic reader, looking for the reason next to the address,
/// misses it. A remote server's reply ends with Google's number for the step it answered,
/// as Sisimai's Gmail reader documents them: 13 `MAIL FROM`, 14 `RCPT TO`, 15, 17 and 18
/// after it (`DATA`). Delay warnings ("has been delayed") are left to the generic reader,
/// which reads them as delays.
fn google(human: &str) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mut lines = human.lines();
    let opening = |l: &str| {
        let l = l.trim().as_bytes();
        starts_with_ci(l, "delivery to the following recipient") && ends_with_ci(l, "failed permanently:")
    };
    if !lines.by_ref().any(opening) {
        return out;
    }
    let mut details = false;
    for l in lines.by_ref() {
        let t = l.trim();
        if t.is_empty() {
            continue;
        }
        if starts_with_ci(t.as_bytes(), "technical details of permanent failure") {
            details = true;
            break;
        }
        // One address alone on its line, or the list has ended.
        match addresses(t).into_iter().next() {
            Some(a) if !t.contains(char::is_whitespace) && !full(&out) => out.push(Found::new(&a)),
            _ => break,
        }
    }
    let mut account = Found::new("");
    if details {
        for l in lines.map(str::trim).take_while(|l| !l.starts_with("-----")).filter(|l| !l.is_empty()) {
            account.say(l);
        }
    }
    let stage = google_state(&account.diagnostic);
    for f in &mut out {
        f.diagnostic.clone_from(&account.diagnostic);
        f.stage = stage;
    }
    out
}

/// Whether `s` begins (ends) with ASCII `word`, in any case: without a lower-cased copy of
/// each line the reader tests.
fn starts_with_ci(s: &[u8], word: &str) -> bool {
    s.get(..word.len()).is_some_and(|p| p.eq_ignore_ascii_case(word.as_bytes()))
}

fn ends_with_ci(s: &[u8], word: &str) -> bool {
    s.len() >= word.len() && s[s.len() - word.len()..].eq_ignore_ascii_case(word.as_bytes())
}

/// The SMTP step Google's "(state N)" names (see [`google`]).
fn google_state(account: &str) -> Option<Stage> {
    let after = &account[account.rfind("(state ")? + "(state ".len()..];
    match &after[..after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len())] {
        "13" => Some(Stage::Sender),
        "14" => Some(Stage::Recipient),
        "15" | "17" | "18" => Some(Stage::Message),
        _ => None,
    }
}

/// IMail: one line per failure, "<reason>: <address>", above "Original message follows.".
/// The reason is the server's own (its local delivery, or its final word after retries).
fn imail(human: &str) -> Vec<Found> {
    let mut out = Vec::new();
    for l in human.lines().take_while(|l| !l.trim().eq_ignore_ascii_case("original message follows.")) {
        let Some((reason, rest)) = l.rsplit_once(": ") else { continue };
        let Some(addr) = addresses(rest).into_iter().next() else { continue };
        let lower = reason.to_ascii_lowercase();
        let remote = lower.contains("smtp") || lower.contains("said") || lower.contains("host");
        // IMail's own fixed reasons: "Delivery failed <n> attempts" is its queue giving up
        // (X.4.7, delivery time expired); "Invalid final delivery userid" is its local
        // delivery finding no such mailbox (X.1.1).
        let status = if lower.starts_with("delivery failed") && lower.ends_with("attempts") {
            Some("5.4.7")
        } else if lower == "invalid final delivery userid" {
            Some("5.1.1")
        } else {
            None
        };
        if full(&out) {
            break;
        }
        let mut f = Found { stage: (!remote).then_some(Stage::Local), status, ..Found::new(&addr) };
        f.say(l);
        out.push(f);
    }
    out
}

/// qmail: each failure is a paragraph that starts with "<address>:". A paragraph that
/// quotes no remote server ("Remote host said:", "does not like recipient", "didn't like")
/// is qmail's own local delivery's verdict.
fn qmail(human: &str) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    let mut current: Option<Found> = None;
    for l in human.lines() {
        let t = l.trim();
        // ("--- Below this line is a copy of the message.", "--- Enclosed is a copy…")
        if t.starts_with("--- ") {
            break;
        }
        if t.starts_with('<') && t.ends_with(">:") {
            out.extend(current.take());
            if full(&out) {
                break;
            }
            if let Some(a) = addresses(t).into_iter().next() {
                current = Some(Found::new(&a));
            }
        } else if t.is_empty() {
            out.extend(current.take());
        } else if let Some(c) = current.as_mut() {
            c.say(t);
        }
    }
    out.extend(current);
    for f in &mut out {
        let d = f.diagnostic.to_ascii_lowercase();
        f.stage = if d.contains("does not like recipient") {
            Some(Stage::Recipient)
        } else if d.contains("remote host said") || d.contains("didn't like") || d.contains("connected to") {
            None
        } else {
            Some(Stage::Local)
        };
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn family_of(message: &str) -> Family {
        let (head, body) = super::super::mime::split(message.as_bytes());
        let top = Headers::new(head);
        let subject = top.text("Subject").unwrap_or_default();
        identify(&top, &subject, &std::str::from_utf8(body).unwrap().to_ascii_lowercase())
    }

    #[test]
    fn a_family_serializes_as_its_name() {
        for f in [Family::OpenSmtpd, Family::IMailServer, Family::Exchange, Family::Unknown] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.name());
        }
    }

    #[test]
    fn every_wording_identify_asks_for_is_in_the_automaton() {
        // `says` answers false for a wording the automaton lacks: a typo there would
        // silently turn a fingerprint off.
        let source = include_str!("family.rs");
        let body =
            &source[source.find("pub(crate) fn identify").unwrap()..source.find("/// One failed recipient").unwrap()];
        let asked: Vec<&str> = body.split("says(\"").skip(1).map(|a| &a[..a.find('"').unwrap()]).collect();
        assert!(asked.len() >= WORDINGS.len(), "{asked:?}");
        for w in asked {
            assert!(WORDINGS.contains(&w), "{w} is not in WORDINGS");
        }
    }

    #[test]
    fn wordings_do_not_overlap() {
        for a in WORDINGS {
            for b in WORDINGS.iter().filter(|b| *b != a) {
                assert!(!a.contains(b), "{a} holds {b}");
                // An overlap of one letter needs two words run together; more would be a
                // real sentence the plain search could read as one wording only.
                let overlap = (2..a.len().min(b.len())).find(|k| a.ends_with(&b[..*k]));
                assert!(overlap.is_none(), "{a} ends with the start of {b}");
            }
        }
    }

    #[test]
    fn families_are_told_by_their_fixed_wordings_and_headers() {
        let cases = [
            ("From: a@b\n\nHi. This is the qmail-send program at mx.example.org.\n", Family::Qmail),
            ("Subject: Mail delivery failed: returning message to sender\n\nx\n", Family::Exim),
            ("From: a@b\n\nThis is the mail system at host mx.example.org.\n", Family::Postfix),
            ("From: a@b\n\n   ----- Transcript of session follows -----\n", Family::Sendmail),
            ("Subject: DELIVERY FAILURE: User x not listed\n\nYour message\n", Family::Domino),
            ("X-Mailer: <SMTP32 v8.22>\n\nUnknown user: a@example.org\n", Family::IMailServer),
            ("From: a@b\n\nDelivery has failed to these recipients or groups:\n", Family::Exchange),
            ("From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\n\nx\n", Family::Google),
            ("Mailer: AIRmail [v110.15]\n\nSorry.\n", Family::Aol),
            (
                "From: a@b\n\nSorry a@b. Your mail to the following recipients could not be delivered because x:\n",
                Family::Aol,
            ),
            ("From: a@b\n\nSorry.\n", Family::Unknown),
        ];
        for (m, f) in cases {
            assert_eq!(family_of(m), f, "{m}");
        }
    }

    #[test]
    fn domino_names_the_address_and_its_reason_in_separate_sections() {
        let human = "Your message\n\n  Subject: Hi\n\nwas not delivered to:\n\n  kijitora@example.jp\n\nbecause:\n\n  User some.name (kijitora@example.jp) not listed in Domino Directory\n\n";
        let found = read(Family::Domino, human, "").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].recipient, "kijitora@example.jp");
        assert!(found[0].diagnostic.contains("not listed in Domino Directory"));
        assert_eq!(found[0].stage, Some(Stage::Local));
        // A reason that is not the directory's is no local lookup.
        let human = "was not delivered to:\n\n  a@example.jp\n  b@example.jp\n\nbecause:\n\n  Router: timed out\n";
        let found = read(Family::Domino, human, "").unwrap();
        assert_eq!(found.iter().map(|f| f.recipient.as_str()).collect::<Vec<_>>(), ["a@example.jp", "b@example.jp"]);
        assert!(found.iter().all(|f| f.stage.is_none() && f.diagnostic == "Router: timed out"));
    }

    #[test]
    fn exim_lists_each_address_with_its_indented_reason() {
        let human = "This message was created automatically by mail delivery software.\n\n\
            A message that you sent could not be delivered to one or more of its\n\
            recipients. This is a permanent error. The following address(es) failed:\n\n\
            \x20 a@example.or.jp\n    SMTP error from remote mail server after end of data:\n    host mx.example.jp [192.0.2.20]: 554 5.7.0 Header error\n\
            \x20 b@example.org\n    Unrouteable address\n\n\
            \x20 c@example.net\n    unknown user\n\n\
            ------ This is a copy of the message, including all the headers. ------\n\n  To: z@example.com\n";
        let found = read(Family::Exim, human, "").unwrap();
        let r: Vec<_> = found.iter().map(|f| (f.recipient.as_str(), f.stage)).collect();
        assert_eq!(
            r,
            [("a@example.or.jp", None), ("b@example.org", Some(Stage::Local)), ("c@example.net", Some(Stage::Local))]
        );
        assert!(found[0].diagnostic.contains("554 5.7.0 Header error"));
        // No announced list: the generic reader's turn.
        assert!(read(Family::Exim, "Something else entirely.\n  a@example.org\n", "").is_none());
    }

    #[test]
    fn aol_names_recipients_by_screen_name_at_its_own_domain() {
        let human = "Sorry app@example.com. Your mail to the following recipients could not be delivered because \
            they are not accepting mail with attachments or embedded images:\n\tkewlone\n\tb@example.net\n\nThanks\n";
        let found = read(Family::Aol, human, "mailer-daemon@aol.com").unwrap();
        let r: Vec<_> = found.iter().map(|f| f.recipient.as_str()).collect();
        assert_eq!(r, ["kewlone@aol.com", "b@example.net"]);
        assert!(found.iter().all(|f| f.diagnostic.starts_with("Your mail to the following recipients")
            && f.diagnostic.ends_with("embedded images")));
        // The reason is a rule on the content, never an address that takes no mail.
        let v = crate::bounce::reason::judge(&found[0].diagnostic, None, None, Stage::Unknown);
        assert_eq!((v.reason, v.suppress), (crate::bounce::reason::Reason::PolicyViolation, false));
        // A name that is no address part, or no domain to put it at: nobody is named (the
        // generic reader's turn), never a made-up address.
        assert!(read(Family::Aol, human, "").is_none());
        let odd = "Your mail to the following recipients could not be delivered because x:\n\tno such user\n";
        assert!(read(Family::Aol, odd, "mailer-daemon@aol.com").is_none());
    }

    #[test]
    fn aol_keeps_the_most_names_a_notice_may_hold_whatever_line_follows_them() {
        let max = super::super::MAX_RECIPIENTS;
        let names: Vec<String> = (0..max).map(|i| format!("\tm{i}")).collect();
        let text = |after: &str| {
            format!(
                "Your mail to the following recipients could not be delivered because x:\n{}\n{after}\n",
                names.join("\n")
            )
        };
        // A line that is no screen name, after as many names as a notice may hold: it is never
        // read, and the names stand.
        let found = aol(&text("\tno such user"), "mailer-daemon@aol.com");
        assert_eq!(found.len(), max);
        assert_eq!(found.last().map(|f| f.recipient.clone()), Some(format!("m{}@aol.com", max - 1)));
        // The same line among the names makes the list no list: nothing is read from it.
        let mut early = names.clone();
        early.insert(1, "\tno such user".into());
        let within =
            format!("Your mail to the following recipients could not be delivered because x:\n{}\n", early.join("\n"));
        assert!(aol(&within, "mailer-daemon@aol.com").is_empty());
    }

    #[test]
    fn readers_stop_at_the_most_recipients_a_notice_may_name() {
        // A hostile notice may list millions; each reader keeps the first that many and reads
        // no further (the AOL reader copies its one reason to every recipient).
        let n = super::super::MAX_RECIPIENTS + 50;
        let list = |line: &dyn Fn(usize) -> String| (0..n).map(line).collect::<Vec<_>>().join("\n");
        let aol_text = format!(
            "Your mail to the following recipients could not be delivered because x:\n{}\n",
            list(&|i| format!("\tm{i}"))
        );
        let exim_text = format!("The following address(es) failed:\n\n{}\n", list(&|i| format!("  a{i}@example.org")));
        let exchange_text = format!(
            "did not reach the following recipient(s):\n\n{}\n",
            list(&|i| format!("e{i}@example.org on Thu\n    no such user"))
        );
        let imail_text = list(&|i| format!("Unknown user: i{i}@example.org"));
        let qmail_text = list(&|i| format!("<q{i}@example.org>:\nSorry, no mailbox here by that name.\n"));
        for (name, found) in [
            ("aol", aol(&aol_text, "mailer-daemon@aol.com")),
            ("exim", exim(&exim_text)),
            ("exchange", exchange(&exchange_text)),
            ("imail", imail(&imail_text)),
            ("qmail", qmail(&qmail_text)),
        ] {
            assert_eq!(found.len(), super::super::MAX_RECIPIENTS, "{name}");
            // The last one kept is whole: its reason is read, not cut off by the stop.
            assert!(!found[found.len() - 1].diagnostic.is_empty() || name == "exim", "{name}");
        }
    }

    #[test]
    fn exim_names_an_undisclosed_address_by_the_address_it_was_generated_from() {
        let human = "The following address(es) failed:\n\n\
            \x20 an undisclosed address\n    (generated from alias@example.com)\n    Mailbox quota exceeded\n\
            \x20 b@example.org\n    Unrouteable address\n";
        let found = read(Family::Exim, human, "").unwrap();
        let r: Vec<_> = found.iter().map(|f| (f.recipient.as_str(), f.diagnostic.as_str())).collect();
        assert_eq!(r, [("alias@example.com", "Mailbox quota exceeded"), ("b@example.org", "Unrouteable address")]);
        // Without the line that says where it came from, nobody can be named: the list ends.
        let human = "The following address(es) failed:\n\n  an undisclosed address\n    Mailbox quota exceeded\n";
        assert!(read(Family::Exim, human, "").is_none_or(|f| f.is_empty()));
    }

    #[test]
    fn qmail_paragraphs_say_whether_a_remote_server_refused() {
        let human = "Hi. This is the qmail-send program at example.org.\n\n\
            <a@example.net>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n\
            <b@example.net>:\n192.0.2.25 does not like recipient.\nRemote host said: 550 5.1.1 User unknown\n\n\
            <c@example.net>:\nConnected to 192.0.2.25 but sender was rejected.\nRemote host said: 553 denied\n\n\
            --- Below this line is a copy of the message.\n\n<d@example.net>:\n";
        let found = read(Family::Qmail, human, "").unwrap();
        let r: Vec<_> = found.iter().map(|f| (f.recipient.as_str(), f.stage)).collect();
        assert_eq!(
            r,
            [("a@example.net", Some(Stage::Local)), ("b@example.net", Some(Stage::Recipient)), ("c@example.net", None)]
        );
    }

    #[test]
    fn exchange_reads_a_recipient_named_by_display_name_alone_as_a_failure_without_an_address() {
        let human = "Your message\n\n  To:      Team\n\n\
            did not reach the following recipient(s):\n\n\
            M\u{101}rti\u{146}\u{161} Luka on Fri, 14 Sep 2007 18:52:54 +0300\n    The recipient was unavailable\n\
            Jane Doe on 9/14/2007 6:52 PM\n    The recipient name is not recognized\n\
            b@example.jp on Thu, 29 Apr 2010 00:00:00 -0000\n    no such user\n";
        let found = read(Family::Exchange, human, "").unwrap();
        let r: Vec<_> = found.iter().map(|f| (f.recipient.as_str(), f.diagnostic.as_str())).collect();
        assert_eq!(
            r,
            [
                ("", "The recipient was unavailable"),
                ("", "The recipient name is not recognized"),
                ("b@example.jp", "no such user")
            ]
        );
        // A line at the margin that is no "<name> on <date>" ends nothing and names no one.
        for line in ["Please call us on the number below", "Kijitora Cat on", " on Fri, 14 Sep 2007", "Sent on Tuesday"]
        {
            assert!(!named_on_a_date(line), "{line}");
        }
        let human = "did not reach the following recipient(s):\n\nPlease call us on the number below\n";
        assert!(read(Family::Exchange, human, "").is_none());
        // With no reason below it, the line that named the failure is its words.
        let human = "did not reach the following recipient(s):\n\nJane Doe on Fri, 14 Sep 2007 18:52:54 +0300\n-----\n";
        let found = read(Family::Exchange, human, "").unwrap();
        assert_eq!(found[0].diagnostic, "Jane Doe on Fri, 14 Sep 2007 18:52:54 +0300");
    }

    #[test]
    fn exchange_lists_the_recipients_that_failed_not_the_quoted_ones() {
        let human = "Your message\n\n  To:      a@example.net\n  Subject: Hi\n\n\
            did not reach the following recipient(s):\n\n\
            b@example.jp on Thu, 29 Apr 2010 00:00:00 -0000\n    The recipient name is not recognized\n    MSEXCH:IMS:X 0 (000C05A6)\n\
            c@example.jp on Thu, 29 Apr 2010 00:00:00 -0000\n    The e-mail account does not exist\n\tThe MTS-ID is: c=jp;a= ;p=x\n;l=EXCHANGE0\n\n\
            ------ a rule\nd@example.jp is not in the list\n";
        let found = read(Family::Exchange, human, "").unwrap();
        let r: Vec<_> = found.iter().map(|f| (f.recipient.as_str(), f.diagnostic.as_str())).collect();
        assert_eq!(
            r,
            [
                ("b@example.jp", "The recipient name is not recognized MSEXCH:IMS:X 0 (000C05A6)"),
                ("c@example.jp", "The e-mail account does not exist The MTS-ID is: c=jp;a= ;p=x ;l=EXCHANGE0")
            ]
        );
    }

    #[test]
    fn imail_reads_one_failure_per_line() {
        let human = "Unknown user: a@example.com\nDelivery failed 20 attempts: b@example.com\nOriginal message follows.\n\nTo: c@example.com\n";
        let found = read(Family::IMailServer, human, "").unwrap();
        let r: Vec<_> = found.iter().map(|f| f.recipient.as_str()).collect();
        assert_eq!(r, ["a@example.com", "b@example.com"]);
        assert_eq!(found[0].stage, Some(Stage::Local));
        // IMail's fixed wordings stand for their statuses (after Sisimai's IMailServer module).
        assert_eq!((found[0].status, found[1].status), (None, Some("5.4.7")));
        let found = read(Family::IMailServer, "Invalid final delivery userid: d@example.com\n", "").unwrap();
        assert_eq!((found[0].status, found[0].stage), (Some("5.1.1"), Some(Stage::Local)));
    }

    #[test]
    fn google_reads_its_account_for_every_address_and_the_step_it_names() {
        // The account need not quote the address; its "(state 14)" is Google's RCPT TO.
        let human = "This is an automatically generated Delivery Status Notification\n\n\
Delivery to the following recipients failed permanently:\n\n     a@example.org\n     b@example.org\n\n\
Technical details of permanent failure: \nGoogle tried to deliver your message, but it was rejected by the \
recipient domain. The error that the other server returned was: 550 550 Address unknown (state 14).\n\n\
   ----- Original message -----\n\nTo: c@example.org\n";
        let found = read(Family::Google, human, "mailer-daemon@googlemail.com").unwrap();
        let r: Vec<_> = found.iter().map(|f| f.recipient.as_str()).collect();
        assert_eq!(r, ["a@example.org", "b@example.org"]);
        assert!(found.iter().all(|f| f.diagnostic.ends_with("550 550 Address unknown (state 14).")));
        assert!(found.iter().all(|f| f.stage == Some(Stage::Recipient)));
        // Other steps, and none.
        let with = |state: &str| {
            let human = format!(
                "Delivery to the following recipient failed permanently:\n\n     a@example.org\n\n\
Technical details of permanent failure:\nThe error that the other server returned was: 550 550 No {state}.\n"
            );
            read(Family::Google, &human, "").unwrap()[0].stage
        };
        assert_eq!(with("(state 13)"), Some(Stage::Sender));
        assert_eq!(with("(state 18)"), Some(Stage::Message));
        assert_eq!(with("(state 9)"), None);
        assert_eq!(with(""), None);
        // The oldest notices give no details: the address is all they say.
        let found =
            read(Family::Google, "Delivery to the following recipient failed permanently:\n\n    a@example.org\n", "");
        assert_eq!(found.unwrap()[0].diagnostic, "a@example.org");
        // A delay warning is the generic reader's (it reads it as one).
        let delay = "THIS IS A WARNING MESSAGE ONLY.\n\nDelivery to the following recipient has been delayed:\n\n\
     a@example.org\n\nTechnical details of temporary failure:\n450 450 4.2.2 Mailbox Full (state 14).\n";
        assert_eq!(read(Family::Google, delay, ""), None);
        // A later format (a sentence, not a list) is the generic reader's too.
        assert_eq!(
            read(
                Family::Google,
                "Delivery to the following recipient failed permanently:\nYour message to a@example.org was not delivered.\n",
                ""
            ),
            None
        );
    }

    proptest::proptest! {
        /// Every reader is total on any mix of its own format's pieces and noise, and names
        /// only addresses that occur in the text, each with its lines.
        #[test]
        fn readers_are_total_and_name_only_what_the_text_names(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "was not delivered to:", "because:", "The following address(es) failed:",
                "Original message follows.", "Hi. This is the qmail-send program", "--- Below this line",
                "  a@example.org", "    Unrouteable address", "<b@example.net>:", "Unknown user: c@example.com",
                "Remote host said: 550 5.1.1 no", "does not like recipient.", "", " ", "<@>:", ": @", "\u{e9}\u{20ac}",
                "did not reach the following recipient(s):", "e@example.jp on Thu", "\tno such user",
                "Jane Doe on Fri, 14 Sep 2007 18:52:54 +0300",
                "  an undisclosed address", "    (generated from g@example.org)",
                "Your mail to the following recipients could not be delivered because x:", "\tkewlone",
                "Delivery to the following recipient failed permanently:", "     h@example.org",
                "Technical details of permanent failure: ", "550 550 Address unknown (state 14).", "-----",
            ]), 0..40),
        ) {
            let text = pieces.join("\n");
            let lower = text.to_ascii_lowercase();
            for f in Family::WITH_READERS {
                for found in read(*f, &text, "mailer-daemon@aol.com").unwrap_or_default() {
                    // (Exchange lists a recipient of its own directory by display name alone.)
                    let unnamed = *f == Family::Exchange && found.recipient.is_empty();
                    proptest::prop_assert!(found.recipient.contains('@') || unnamed);
                    // (AOL names its members by screen name: the address is that at its domain.)
                    let named = match found.recipient.strip_suffix("@aol.com") {
                        Some(name) if *f == Family::Aol => lower.contains(name),
                        _ => lower.contains(&found.recipient),
                    };
                    proptest::prop_assert!(named, "{} not in {text:?}", found.recipient);
                    proptest::prop_assert!(!found.diagnostic.is_empty());
                }
            }
        }
    }
}
