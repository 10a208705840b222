//! The free-text side of a bounce: the human-readable account, the addresses it names,
//! the lines about each recipient, and the words that say what kind of message it is.

use crate::bounce::reason::{find_code, find_status};
use aho_corasick::AhoCorasick;
use std::sync::LazyLock;

pub(super) fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("&nbsp;", " ")
}

/// Where a text body quotes the original message (its length when it does not), given
/// the body lower-cased.
pub(super) fn inline_original_at(lower: &str) -> usize {
    const MARKERS: &[&str] = &[
        "below this line is a copy of the message",
        "----- original message -----",
        "------ this is a copy of the message",
        "original message follows",
        "--- original message ---",
        "---- start of returned message ----",
        "----- unsent message follows -----",
        "----- message header follows -----",
        "----- original message header -----",
        "the original message was:",
        "original message headers",
        "your message reads (in part)",
        "message headers follow",
        // Quoted headers without a marker: a `Return-Path:` or `Received:` line that starts
        // a block of them (the cut is at the newline before it; see `LINE_STARTS`).
        "return-path:",
        "received: from",
    ];
    /// The last markers count only at the start of a line.
    const LINE_STARTS: usize = 2;
    // (The markers are lower-case and searched for in the lower-cased text: a plain search
    // skips ahead where a case-blind one read every byte, and ASCII lower-casing keeps every
    // byte where it was, so the cut is the same in both. The line-start markers are searched
    // without their newline: a newline in the pattern made every line a candidate.)
    // (Leftmost-first: aho-corasick skips ahead with its vectorised (Teddy) prefilter only
    // under leftmost semantics, and with it this search stopped being a tenth of the reader's
    // time. It also cuts where a marker starts: "----- original message -----" holds
    // "--- original message ---", whose earlier end the standard semantics reported, leaving
    // two dashes in the account.)
    static FINDER: LazyLock<Option<AhoCorasick>> =
        LazyLock::new(|| AhoCorasick::builder().match_kind(aho_corasick::MatchKind::LeftmostFirst).build(MARKERS).ok());
    let b = lower.as_bytes();
    let at = |m: aho_corasick::Match| {
        if m.pattern().as_usize() < MARKERS.len() - LINE_STARTS {
            Some(m.start())
        } else {
            m.start().checked_sub(1).filter(|&nl| b[nl] == b'\n')
        }
    };
    // The earliest marker (a session transcript is part of the human account and stays).
    // (Every cut is at an ASCII byte — a marker's first byte or a newline — or the end: a
    // character boundary.)
    FINDER.as_ref().and_then(|ac| ac.find_iter(lower).filter_map(at).find(|&i| i > 0)).unwrap_or(lower.len())
}

pub(super) fn clean_address(s: &str) -> String {
    let s = s.trim().trim_start_matches("rfc822;").trim_start_matches("RFC822;").trim();
    // A source route (`@relay:user@host`) names the mailbox after its colon.
    let s = match s.strip_prefix('@').and_then(|r| r.split_once(':')) {
        Some((_, rest)) => rest,
        None => s,
    };
    let s = match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if b > a => &s[a + 1..b],
        _ => s,
    };
    // A quoted local part (`"john..doe"@example.org`, RFC 5321 §4.1.2) keeps its quotes.
    // An angle bracket left alone at either end is the rest of a pair the writer broke
    // (NTT docomo's mopera writes `Final-Recipient: RFC822; user@mopera.ne.jp>`): no address
    // holds one there.
    let s = s.trim();
    if s.starts_with('"') && s.find("\"@").is_some_and(|q| q > 0) {
        return s.trim_end_matches(['.', ',', ';', ':', '>']).to_ascii_lowercase();
    }
    s.trim_matches(|c: char| matches!(c, '"' | '\'' | '.' | ',' | ';' | ':' | '<' | '>')).to_ascii_lowercase()
}

/// Whether `a` (as [`clean_address`] leaves it) has the shape of a mailbox: a local part and
/// a domain around its last `@`, with no space outside a quoted local part. (A DSN may name a
/// local host without a dot: `user@mailhub0`. Exim names a pipe a forward file made as
/// `|/usr/bin/prog user@example.com /home/user`: a command line, not a mailbox.)
pub(super) fn is_mailbox(a: &str) -> bool {
    a.rsplit_once('@').is_some_and(|(local, domain)| {
        let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
        !local.is_empty()
            && !domain.is_empty()
            && !domain.contains(char::is_whitespace)
            && (quoted || !local.contains(char::is_whitespace))
    })
}

/// Whether `c` may stand in an unquoted local part as the reader accepts one.
pub(super) fn local_part_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._%+-=!#$&'*/?^`{|}~".contains(&c)
}

/// Whether the address that starts at `at` in `line` follows the word "from" ("mail from
/// <a@b>"): a sender, never a failed recipient.
pub(super) fn follows_from(line: &str, at: usize) -> bool {
    let before = line.as_bytes().get(..at).unwrap_or_default();
    let mut end = before.len();
    while end > 0 && matches!(before[end - 1], b'<' | b'"' | b'\'' | b'(' | b' ' | b'\t') {
        end -= 1;
    }
    end >= 4
        && before[end - 4..end].eq_ignore_ascii_case(b"from")
        && (end == 4 || !before[end - 5].is_ascii_alphanumeric())
}

/// Every address-looking token in `text`, in order.
pub(super) fn addresses(text: &str) -> Vec<String> {
    addresses_at(text).map(|(_, a)| a.to_string()).collect()
}

/// [`addresses`], each borrowed from `text` with where it starts there.
pub(super) fn addresses_at(text: &str) -> impl Iterator<Item = (usize, &str)> {
    /// Punctuation around an unquoted address that is the sentence's, not the address's.
    const AROUND: [char; 4] = ['.', '-', '\'', '='];
    let b = text.as_bytes();
    let host = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
    text.match_indices('@').filter_map(move |(k, _)| {
        let mut start = k;
        while start > 0 && local_part_byte(b[start - 1]) {
            start -= 1;
        }
        // A quoted local part (`"john..doe"@example.org`): back to its opening quote, on
        // one line and within the 64 octets a local part may have.
        if start == k && k > 1 && b[k - 1] == b'"' {
            let open = b[..k - 1].iter().rposition(|&c| c == b'"' || c == b'\n').filter(|&o| b[o] == b'"');
            if let Some(o) = open.filter(|&o| k - o <= 66 && k - o > 2) {
                start = o;
            }
        }
        let mut end = k + 1;
        while end < b.len() && host(b[end]) {
            // No label of a domain is empty: `a@b.net...user` is `a@b.net` and text.
            if b[end] == b'.' && b.get(end + 1) == Some(&b'.') {
                break;
            }
            end += 1;
        }
        if start == k || end == k + 1 {
            return None;
        }
        // Both ends sit on ASCII bytes, so these are char boundaries.
        let raw = text.get(start..end)?;
        let (at, a) = if raw.starts_with('"') {
            (start, raw.trim_end_matches(['.', '-']))
        } else {
            let a = raw.trim_start_matches(AROUND);
            (start + raw.len() - a.len(), a.trim_end_matches(AROUND))
        };
        let domain = a.rsplit('@').next().unwrap_or_default();
        (!a.starts_with('@') && domain.contains('.')).then_some((at, a))
    })
}

/// The lines that talk about `rcpt`: from its first mention to the next blank line (or the
/// next few lines), which is where MTAs put the reason.
/// `lower` is `text` lower-cased (ASCII), computed once by the caller.
pub(super) fn block_for(text: &str, lower: &str, rcpt: &str) -> Option<String> {
    // The lines that mention `rcpt`, by where they start, each read once: a walk per mention
    // back to its line's start would take time quadratic in a line that repeats the address.
    // A mention in a quoted header line ("Your message  To: x  Subject: ...") is not the
    // account of the failure (every mention in such a line follows the same header name).
    // (One search over the whole text, not one per line: a searcher built for every line was
    // a tenth of the reader's time. Mentions after the first on a line are skipped, and each
    // line's start and end are looked for once, so the work stays linear.)
    let b = lower.as_bytes();
    let mut line_end = 0;
    let mut mentions = memchr::memmem::find_iter(b, rcpt.as_bytes()).filter_map(move |at| {
        if at < line_end {
            return None;
        }
        let start = memchr::memrchr(b'\n', &b[line_end..at]).map_or(line_end, |i| line_end + i + 1);
        line_end = memchr::memchr(b'\n', &b[at..]).map_or(b.len(), |i| at + i + 1);
        let head = lower.get(start..at).unwrap_or_default().trim_start();
        let quoted = ["to:", "from:", "cc:", "bcc:", "subject:", "date:", "sent:", "reply-to:"]
            .iter()
            .any(|h| head.starts_with(h));
        Some((start, quoted))
    });
    let (first, quoted) = mentions.next()?;
    // The first mention outside a quoted header line, else the first.
    let at = if quoted { mentions.find(|&(_, q)| !q).map_or(first, |(s, _)| s) } else { first };
    let block = block_at(text, at, rcpt);
    // Many notices list the failed addresses first and give each one's refusal further down
    // ("Technical details: … 553 5.3.0 <a@b>… No such user"): when the first account carries
    // no reply code or status, a later mention that does is the account of the failure.
    let says_why = |b: &str| find_code(b).is_some() || find_status(b).is_some();
    if says_why(&block) {
        return Some(block);
    }
    // (`mentions` goes on after `at`'s line whichever branch found it.)
    let later = mentions.filter(|&(_, q)| !q).take(8).map(|(s, _)| block_at(text, s, rcpt)).find(|b| says_why(b));
    Some(later.unwrap_or(block))
}

/// The lines from `start` (a line's start in `text`) to the next blank line, at most 8, or to
/// another recipient's own line.
fn block_at(text: &str, start: usize, rcpt: &str) -> String {
    let mut out = String::new();
    let mut lines = 0;
    // A session transcript's command (`>>> RCPT To:<a@b>`) is answered by the `<<<` lines
    // under it: that reply is the server's own account; what follows is the MTA's
    // commentary, often about other hosts or a later retry ("421 … Deferred: Connection timed
    // out").
    let transcript = text[start..].trim_start().starts_with(">>>");
    for line in text[start..].lines() {
        if transcript && lines > 0 && !line.trim_start().starts_with("<<<") {
            break;
        }
        if line.trim().is_empty() && lines > 0 {
            // Some MTAs put a blank line between the address and the reason.
            if lines == 1 && out.trim().ends_with(':') {
                continue;
            }
            break;
        }
        // Another recipient's own line starts its own block.
        if lines > 0 {
            let first = line.split_whitespace().next().unwrap_or_default();
            let token = first.trim_matches(|c: char| c == '<' || c == '>' || c == ':' || c == ',').to_ascii_lowercase();
            if token.contains('@') && token != rcpt && (first.starts_with('<') || first.ends_with(':')) {
                break;
            }
            // So does sendmail's result line for another target: it writes "550 example.org
            // (smtp)... 550 Host unknown" for a host *before* the line of the address it
            // concerns ("554 <b@example.org>... 550 Host unknown"), so such a line under this
            // address is the next address's account, not this one's.
            // (`rcpt` is lower-cased, as `clean_address` gives it.)
            if sendmail_target(line).is_some_and(|t| !crate::bounce::reason::contains_ascii_ci(t, rcpt)) {
                break;
            }
        }
        out.push_str(line.trim());
        out.push(' ');
        lines += 1;
        if lines >= 8 {
            break;
        }
    }
    out.trim().to_string()
}

/// The whole of a multi-line reply of which a report gives the first line only. sendmail puts
/// the first line of the server's reply in `Diagnostic-Code` ("552-5.7.0 This message was
/// blocked because its content presents a potential"); its transcript quotes every line
/// (`<<< 552-5.7.0 security issue. …`, then `<<< 552 5.7.0 …`, the last). `None` unless
/// `first` says more lines follow (its code has a `-` after it) and `human` quotes them.
/// (At most 8 of its quotes are tried, and 16 lines after each: linear in `human`.)
pub(super) fn whole_reply(human: &str, first: &str) -> Option<String> {
    let first = first.trim();
    let code = first.get(..3).filter(|c| c.bytes().all(|b| b.is_ascii_digit()))?;
    if first.as_bytes().get(3) != Some(&b'-') || first.len() < 12 {
        return None;
    }
    // (The first line is quoted more than once: sendmail's "(reason: …)" line, then the
    // transcript. The first quote that lines follow is the one; at most 8 are tried.)
    memchr::memmem::find_iter(human.as_bytes(), first.as_bytes()).take(8).find_map(|at| {
        let line_end = memchr::memchr(b'\n', &human.as_bytes()[at..]).map_or(human.len(), |i| at + i);
        let mut out = human[at..line_end].trim().to_string();
        let mut more = 0;
        for line in human[line_end..].lines().skip(1).take(16) {
            let t = line.trim_start().trim_start_matches("<<<").trim();
            let Some(rest) = t.strip_prefix(code) else { break };
            out.push(' ');
            out.push_str(t);
            more += 1;
            // `NNN ` is the last line.
            if !rest.starts_with('-') {
                break;
            }
        }
        (more > 0).then_some(out)
    })
}

/// The target of a sendmail result line, `NNN <target>... <text>` (an address in angle
/// brackets, or a host and its mailer: `example.org (smtp)`); `None` for any other line.
pub(super) fn sendmail_target(line: &str) -> Option<&str> {
    let l = line.trim_start();
    let (code, rest) = (l.get(..3)?, l.get(3..)?);
    if !code.bytes().all(|b| b.is_ascii_digit()) || !rest.starts_with(' ') {
        return None;
    }
    // (The target is short: a reply whose text happens to hold "..." further on is no result
    // line.)
    let rest = &rest[1..];
    // (Only the line's start is searched: a long line costs no more than a short one.)
    let head = &rest.as_bytes()[..rest.len().min(324)];
    let end =
        memchr::memmem::find(head, b"... ").or_else(|| rest.strip_suffix("...").map(str::len)).filter(|&e| e <= 320)?;
    let target = &rest[..end];
    ((target.starts_with('<') && target.ends_with('>')) || target.ends_with(')')).then_some(target)
}

pub(super) fn looks_like_failure_lower(t: &str) -> bool {
    const WORDS: &[&str] = &[
        "fail",
        "undeliver",
        "not deliver",
        "could not be delivered",
        "unable to deliver",
        "returned",
        "rejected",
        "permanent",
        "error",
        "unknown",
        "does not exist",
        "not found",
        "no such",
        "refused",
        "bounce",
        "quota",
        "mailbox",
        "delivery",
        "denied",
        "blocked",
        "expired",
        "timed out",
        "550",
        "554",
        "553",
        "552",
        "551",
        "450",
        "451",
        "452",
        "421",
        "5.1.",
        "5.7.",
        "4.4.",
        // Chinese providers' notices (Sina, NetEase, QQ): "cannot be sent", "cannot be
        // delivered", "returned mail", "sending failed", "delivery failed".
        "无法发送",
        "无法送达",
        "退信",
        "发送失败",
        "投递失败",
    ];
    static FAILURE: LazyLock<Option<AhoCorasick>> =
        LazyLock::new(|| AhoCorasick::builder().kind(Some(aho_corasick::AhoCorasickKind::DFA)).build(WORDS).ok());
    FAILURE.as_ref().is_some_and(|ac| ac.is_match(t))
}

/// The notice says the server is still trying and this is a warning only (`lower` is
/// lower-cased), and nothing says it gave up.
pub(super) fn says_still_trying(lower: &str) -> bool {
    const STILL: &[&str] = &[
        "warning message only",
        "this is a warning only",
        "you do not need to resend",
        "will continue to try",
        "will keep trying",
        "will be retried",
        "still trying",
        // Exim's delay warning, and others like it.
        "delivery attempts will continue",
        "has not yet been delivered",
        "this warning may be repeated",
        "no action is required on your part",
    ];
    const GAVE_UP: &[&str] = &["permanent", "gave up", "giving up", "will not be retried", "no further attempts"];
    STILL.iter().any(|p| lower.contains(p)) && !GAVE_UP.iter().any(|p| lower.contains(p))
}

pub(super) fn is_failure_subject(subject: &str) -> bool {
    let s = subject.to_ascii_lowercase();
    [
        "delivery status notification (failure)",
        "undeliver",
        "returned mail",
        "failure notice",
        "delivery failure",
        "mail delivery failed",
        "delivery has failed",
        "could not be delivered",
        "non-delivery",
        "nondeliverable",
        "rejected:",
        "mail system error",
    ]
    .iter()
    .any(|p| s.contains(p))
}

pub(super) fn is_vacation_subject(subject: &str) -> bool {
    // (Unicode lower case: the subjects of other languages' mail clients are not ASCII.)
    let s = subject.to_lowercase();
    [
        "auto:",
        "automatic reply",
        "automatic response",
        "automated response",
        "autoreply",
        "auto-reply",
        "autoresponse",
        "auto-response",
        "out of office",
        "out of the office",
        "out-of-office",
        "ooo:",
        "vacation",
        "away from",
        // The out-of-office replies of mail clients in other languages (Outlook's and Gmail's
        // own wordings): German, French, Italian, Spanish, Portuguese, Dutch, Scandinavian,
        // Russian.
        "abwesenheit",
        "automatische antwort",
        "réponse automatique",
        "absence du bureau",
        "risposta automatica",
        "fuori ufficio",
        "respuesta automática",
        "fuera de la oficina",
        "resposta automática",
        "automatisch antwoord",
        "automatisk svar",
        "автоответ",
        "автоматический ответ",
        "ответ автоматически",
    ]
    .iter()
    .any(|p| s.contains(p))
}

/// `t` is the human-readable text, lower-cased.
pub(super) fn is_text_complaint(subject: &str, t: &str) -> bool {
    let s = subject.to_ascii_lowercase();
    s.contains("complaint about message")
        || ((s.contains("complaint") || s.contains("abuse report") || s.contains("spam report"))
            && (t.contains("complaint") || t.contains("feedback") || t.contains("abuse")))
}
