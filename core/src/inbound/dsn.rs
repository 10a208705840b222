//! RFC 3464 delivery-status fields and the quoted headers a report carries.

use std::borrow::Cow;
use std::sync::LazyLock;

/// Where the last report part (`message/delivery-status`, `message/global-delivery-status`,
/// `message/feedback-report`) is declared in `b`: a returned original before it is read
/// whole. Found once per message (asking "does one follow?" at each enclosed message
/// rescanned the rest of the message each time). Searches for the end of the header's name
/// (`ype:` and `YPE:`, which cover the spellings mail uses) and checks the line of each
/// hit: walking every line start cost more, and so did a case-blind automaton over every
/// byte.
pub(super) fn last_report_declaration(b: &[u8]) -> Option<usize> {
    static ENDS: LazyLock<[memchr::memmem::Finder<'static>; 2]> =
        LazyLock::new(|| [memchr::memmem::Finder::new("ype:"), memchr::memmem::Finder::new("YPE:")]);
    let mut last = None;
    for finder in ENDS.iter() {
        for at in finder.find_iter(b) {
            // `content-t` + `ype:` at the start of a line.
            let Some(line_start) = at.checked_sub(9) else { continue };
            if (line_start > 0 && b[line_start - 1] != b'\n')
                || !b[line_start..line_start + 13].eq_ignore_ascii_case(b"content-type:")
            {
                continue;
            }
            // (The value on this line only: `trim_ascii_start` would also step over newlines.)
            let rest = &b[line_start + 13..];
            let value = rest[..memchr::memchr(b'\n', rest).unwrap_or(rest.len())].trim_ascii_start();
            let declares = |t: &[u8]| value.get(..t.len()).is_some_and(|v| v.eq_ignore_ascii_case(t));
            if (declares(b"message/delivery-status")
                || declares(b"message/global-delivery-status")
                || declares(b"message/feedback-report"))
                && last.is_none_or(|l| l < line_start)
            {
                last = Some(line_start);
            }
        }
    }
    last
}

/// The names [`header_in`] looks for.
pub(super) const QUOTED_HEADERS: &[&str] =
    &["message-id:", "to:", "original-rcpt-to:", "removal-recipient:", "feedback-type:"];

/// The value of header `name` (one of [`QUOTED_HEADERS`], without its colon) in a block of
/// quoted headers: the first line that starts with it, in any case.
/// `lower` is `text` lower-cased (ASCII), made once by the caller.
pub(super) fn header_in(text: &str, lower: &str, name: &str) -> Option<String> {
    headers_in(text, lower, name).next()
}

/// Every value of header `name` (one of [`QUOTED_HEADERS`]) in a block of headers, in order (a
/// feedback report may repeat `Original-Rcpt-To`), lazily. Searched for in a lower-cased copy
/// (one `memmem` pass) instead of walking every line: a returned original can be long, and a
/// case-blind automaton stopped at every `m`.
pub(super) fn headers_in<'t>(text: &'t str, lower: &'t str, name: &str) -> impl Iterator<Item = String> + 't {
    static NAMES: LazyLock<Vec<memchr::memmem::Finder<'static>>> =
        LazyLock::new(|| QUOTED_HEADERS.iter().map(|h| memchr::memmem::Finder::new(h.as_bytes())).collect());
    let wanted = QUOTED_HEADERS.iter().position(|h| h.strip_suffix(':') == Some(name));
    let b = lower.as_bytes();
    wanted.and_then(|w| Some((w, NAMES.get(w)?))).into_iter().flat_map(move |(w, finder)| {
        finder.find_iter(b).filter(move |&i| i == 0 || b[i - 1] == b'\n').map(move |start| {
            let rest = &text[start + QUOTED_HEADERS[w].len()..];
            rest[..rest.find('\n').unwrap_or(rest.len())].trim().to_string()
        })
    })
}

#[derive(Debug, Default)]
pub(super) struct DsnBlock {
    pub recipient: Option<String>,
    /// The `Original-Recipient` (RFC 3464 §2.3.1: the address as the sender gave it), when
    /// the block has one.
    pub original: Option<String>,
    /// The block has had its Final-Recipient line.
    final_seen: bool,
    pub action: Option<String>,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    /// The diagnostic is of the reporting MTA's own type (`X-Postfix`, `X-Unix`, …), not `smtp`.
    pub own_diagnostic: bool,
    /// The block names the remote MTA whose answer it reports.
    pub remote_mta: bool,
}

impl DsnBlock {
    /// The reporting MTA decided this failure itself, about a mailbox it delivers to: the
    /// diagnostic is of its own type (postfix's `X-Postfix; unknown user`, sendmail's local
    /// mailer `X-Unix`), not an SMTP answer, and no remote MTA is named.
    pub fn decided_locally(&self) -> bool {
        !self.remote_mta && self.own_diagnostic
    }

    /// The block reports a success: an action of RFC 3464 §2.3.3 that means the message went
    /// on (`delivered`, `relayed`, `expanded`), postfix's address-verification answer
    /// `deliverable` (`sendmail -bv`), or no action at all beside a 2.x.x status (RFC 3463
    /// §3.1: success). Why the status counts only without an action: a report that says
    /// `failed` means it, whatever status a careless MTA put beside it.
    pub fn succeeded(&self) -> bool {
        match self.action.as_deref() {
            Some(a) => matches!(a, "delivered" | "relayed" | "expanded" | "deliverable"),
            None => self.status.as_deref().is_some_and(|s| s.trim_start().starts_with("2.")),
        }
    }
}

/// The per-recipient blocks of an RFC 3464 report (folded lines joined).
pub(super) fn dsn_blocks(text: &str) -> Vec<DsnBlock> {
    let mut blocks = Vec::new();
    let mut cur = DsnBlock::default();
    let mut last_field: Option<String> = None;
    let flush = |cur: &mut DsnBlock, blocks: &mut Vec<DsnBlock>| {
        if cur.recipient.is_some() {
            // (Decoded once the folded lines are joined: each line closes its own JIS run.)
            if let Some(d) = cur.diagnostic.as_mut()
                && let Cow::Owned(decoded) = super::mime::unescaped_jis(d)
            {
                *d = decoded;
            }
            blocks.push(std::mem::take(cur));
        } else {
            *cur = DsnBlock::default();
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut cur, &mut blocks);
            last_field = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if last_field.as_deref() == Some("diagnostic-code")
                && let Some(d) = cur.diagnostic.as_mut()
            {
                d.push(' ');
                d.push_str(line.trim());
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        match name.as_str() {
            "final-recipient" | "original-recipient" | "x-actual-recipient" => {
                // A second Final-Recipient starts a new block even without a blank line. (Not
                // the first after an Original-Recipient: Sun's Messaging Server writes the
                // action and status first, then the original and the final recipient.)
                if name == "final-recipient" {
                    if cur.final_seen && cur.action.is_some() {
                        flush(&mut cur, &mut blocks);
                    }
                    cur.final_seen = true;
                }
                let raw_addr = value.split_once(';').map_or(value.as_str(), |(_, a)| a).trim();
                // A source route (`@relay:user@host`) names an internal hop's mailbox: the
                // Original-Recipient, when there is one, is the address we sent to.
                let routed = raw_addr.starts_with('@');
                let addr = super::text::clean_address(raw_addr);
                let usable = super::text::is_mailbox(&addr);
                if usable && name == "original-recipient" && cur.original.is_none() {
                    cur.original = Some(addr.clone());
                }
                if usable && (cur.recipient.is_none() || (name == "final-recipient" && !routed)) {
                    cur.recipient = Some(addr);
                }
            }
            // The action's word alone: a comment after it (`failed (Bad destination mailbox
            // address)`, as some gateways write) says nothing more.
            "action" => {
                let word = value.split(|c: char| c.is_whitespace() || c == '(' || c == ';').next().unwrap_or_default();
                cur.action = Some(word.to_ascii_lowercase());
            }
            "status" => cur.status = value.split_whitespace().next().map(str::to_string),
            "diagnostic-code" => {
                let (kind, d) = value.split_once(';').map_or(("", value.as_str()), |(k, d)| (k, d));
                cur.diagnostic = Some(d.trim().to_string());
                let kind = kind.trim();
                cur.own_diagnostic = !kind.is_empty() && !kind.eq_ignore_ascii_case("smtp");
            }
            "remote-mta" => cur.remote_mta = true,
            _ => {}
        }
        last_field = Some(name);
    }
    flush(&mut cur, &mut blocks);
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain reading: every line start, the name in any case.
    fn model(b: &[u8]) -> Option<usize> {
        let mut last = None;
        let mut at = 0;
        for line in b.split(|c| *c == b'\n') {
            let start = at;
            at += line.len() + 1;
            let Some(value) = line.get(13..) else { continue };
            if !line[..13].eq_ignore_ascii_case(b"content-type:") {
                continue;
            }
            let value = value.trim_ascii_start();
            let declares = |t: &[u8]| value.get(..t.len()).is_some_and(|v| v.eq_ignore_ascii_case(t));
            if declares(b"message/delivery-status")
                || declares(b"message/global-delivery-status")
                || declares(b"message/feedback-report")
            {
                last = Some(start);
            }
        }
        last
    }

    #[test]
    fn the_last_report_declaration_is_found() {
        let m = b"Content-Type: multipart/report\n\n--b\nContent-Type: message/delivery-status\n\nx\n--b\n\
content-type: message/rfc822\n\nContent-Type: text/plain\n  Content-Type: message/delivery-status\n";
        assert_eq!(last_report_declaration(m), Some(36));
        assert_eq!(last_report_declaration(b"CONTENT-TYPE:Message/Feedback-Report\n"), Some(0));
        assert_eq!(last_report_declaration(b"X-Content-Type: message/delivery-status\n"), None);
        assert_eq!(last_report_declaration(b"Content-Type: message/delivery-statusish"), Some(0));
        assert_eq!(last_report_declaration(b"Content-Type: text/plain; x=message/delivery-status"), None);
        assert_eq!(last_report_declaration(b"Content-Type:\n\nmessage/delivery-status\n"), None);
    }

    proptest! {
        /// The search agrees with reading every line, on lines made of the pieces that matter
        /// (the name in the cases mail spells it, the three types, other headers and text).
        #[test]
        fn the_search_agrees_with_reading_every_line(
            lines in proptest::collection::vec(
                (
                    prop::sample::select(vec!["Content-Type:", "content-type:", "CONTENT-TYPE:", "Content-type:",
                        "X-Content-Type:", " Content-Type:", "Subject:", "", "ype:"]),
                    prop::sample::select(vec!["", " ", "\t", "  "]),
                    prop::sample::select(vec!["message/delivery-status", "message/global-delivery-status",
                        "Message/Feedback-Report", "message/rfc822", "text/plain", "message/", "delivery-status",
                        ""]),
                    "[a-z;= ]{0,6}",
                ),
                0..12,
            )
        ) {
            let text: String = lines.iter().map(|(n, s, t, r)| format!("{n}{s}{t}{r}\n")).collect();
            prop_assert_eq!(last_report_declaration(text.as_bytes()), model(text.as_bytes()));
        }
    }
}
