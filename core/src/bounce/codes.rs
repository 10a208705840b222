//! Mailbox providers' own reason codes: the refusals of some large providers carry a code
//! that their documentation explains, and that says more than the words around it.
//!
//! | provider | how the code is written | example |
//! | --- | --- | --- |
//! | Cox | `AUP#` and a letter code | `554 … AUP#CXBL` |
//! | Spectrum (Charter) | `AUP#`, an optional `I`/`O`/`In-`/`Out-`, four digits | `550 5.1.0 … AUP#In-1310` |
//! | Orange, La Poste | `LPN`/`LPNAAA`/`OFR`/`OUK`, `_` and three digits, or three digits, `_`/`-` and three | `… Invalid recipient. LPN007_416` |
//! | i.ua | the help link `…i.ua/err/<n>` | `550 Mailbox is frozen. See http://mail.i.ua/err/3/` |
//! | Yahoo, AOL | `delivery error: dd` and Yahoo's fixed words after it | `554 delivery error: dd This user doesn't have a yahoo.com account (…)` |
//!
//! The tables are those of Sisimai 4.25.15 (`Sisimai/Rhost/{Cox,Spectrum,FrancePTT,IUA}.pm`,
//! © 2014-2022 azumakuniyuki, BSD-2-Clause), which took them from the providers' published
//! lists of their error codes. A code that a table leaves undecided ("please try later"
//! without a cause) decides nothing: the words and the status are read as usual.
//!
//! Yahoo's `dd` replies are its mailbox store's verdict on the recipient, given at the end
//! of `DATA`: Yahoo (and AOL, whose mail it runs) accepts every `RCPT TO` and checks the
//! recipients after the message. Its error-code page says "This user doesn't have a
//! yahoo.com account" means the address does not exist; a sender who tries a made-up
//! address gets exactly that reply after `DATA`; and Sisimai 5 reads these words from
//! Yahoo's hosts as an unknown user (`Sisimai::Rhost::YahooInc`, since 5.0.4). Without
//! this, the policy that reads "no such user" after `DATA` as a content filter's answer
//! (gateways say it there) kept every unknown Yahoo address off the suppression list.
//!
//! Why codes before words: the words are often generic ("Service refused, please try later",
//! "Mail rejected") or say the wrong thing for our purpose ("Client host blocked for spamming
//! issues" is a block of our IP, not a judgement of the message), while the code is the
//! provider's own classification.
//!
//! Invariants: total and allocation-free; a code counts only as a whole token (no letter or
//! digit glued to either end), so a longer number or identifier that merely contains one is not
//! read as one.

use super::reason::Reason;

/// A provider whose reason codes the reader knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// Cox Communications (`cox.net`).
    Cox,
    /// Spectrum / Charter (`charter.net`, `rr.com`, `spectrum.net`).
    Spectrum,
    /// Orange and La Poste (`orange.fr`, `wanadoo.fr`, `laposte.net`).
    OrangeLaPoste,
    /// i.ua (`i.ua`, `email.ua`).
    IUa,
    /// Yahoo Inc. (`yahoo.com`, `aol.com` and their hosts `*.yahoodns.net`).
    Yahoo,
}

impl Provider {
    /// Every provider.
    pub const ALL: [Provider; 5] =
        [Provider::Cox, Provider::Spectrum, Provider::OrangeLaPoste, Provider::IUa, Provider::Yahoo];

    /// Its bit in a set of providers.
    pub(crate) const fn bit(self) -> u8 {
        1 << self as u8
    }
}

use Reason as R;

/// Cox: `AUP#<code>`.
const COX: &[(&str, Reason)] = &[
    ("CXBL", R::Blocked),         // IP blocked for spam-like behaviour
    ("CXTHRT", R::SecurityError), // sending limited: suspicious account activity
    ("CXMJ", R::SecurityError),   // sending blocked: suspicious activity on the primary account
    ("CXDNS", R::Blocked),        // a DNS problem with the connecting IP
    ("CXSNDR", R::Rejected),      // a problem with the sender's domain
    ("CXSMTP", R::Rejected),      // could not verify a legitimate sender
    ("CXCNCT", R::TooManyConn),   // concurrent connections per IP
    ("CXMXRT", R::TooManyConn),   // the sender's maximum of sent mail
    ("CDRBL", R::Blocked),        // IP temporarily blocked for spam-like behaviour
    ("IPBL0001", R::Blocked),     // Spamhaus ZEN
    ("IPBL0010", R::Blocked),     // Return Path
    ("IPBL0100", R::Blocked),     // Invaluement ivmSIP
    ("IPBL0011", R::Blocked),     // …and combinations of those lists
    ("IPBL0101", R::Blocked),
    ("IPBL0110", R::Blocked),
    ("IPBL0111", R::Blocked),
    ("IPBL1000", R::Blocked), // Cloudmark CSI
    ("IPBL1001", R::Blocked),
    ("IPBL1010", R::Blocked),
    ("IPBL1011", R::Blocked),
    ("IPBL1100", R::Blocked),
    ("IPBL1101", R::Blocked),
    ("IPBL1110", R::Blocked),
    ("IPBL1111", R::Blocked),
    ("IPBL00001", R::Blocked),      // a Spamhaus list
    ("URLBL011", R::SpamDetected),  // a URL in the body on SURBL and Spamhaus DBL
    ("URLBL101", R::SpamDetected),  // …on SURBL and ivmURI
    ("URLBL110", R::SpamDetected),  // …on Spamhaus DBL and ivmURI
    ("URLBL1001", R::SpamDetected), // …on a Spamhaus list
];

/// Spectrum: `AUP#` and four digits, one by one and then by ranges.
fn spectrum(code: u16) -> Option<Reason> {
    Some(match code {
        1000 => R::Blocked,                // IP blocked for suspicious activity
        1010 => R::Rejected,               // the sending account blocked for suspicious activity
        1090 => R::SystemError,            // cannot be processed, try later
        1260 => R::NetworkError,           // IPv6 not processed
        1500 | 1520 => R::Rejected,        // sending as another address or domain
        1530 => R::MesgTooBig,             // over 20 MB
        1540 | 1550 => R::TooManyConn,     // too many in one session, too many recipients
        1560 => R::PolicyViolation,        // too many invalid recipients
        1020..=1080 => R::Rejected,        // the sending account's access limited
        1100..=1150 => R::Blocked,         // the connecting IP's DNS
        1160..=1190 => R::PolicyViolation, // the domain's security policies
        1200..=1250 => R::Blocked,         // Cloudmark CSI, Spamhaus
        1300..=1490 => R::TooManyConn,     // connection, message and recipient limits
        _ => return None,
    })
}

/// Orange and La Poste: the last three digits of the code. `None`: the table leaves it
/// undecided ("service refused, please try later" with no cause).
fn orange(code: u16) -> Option<Reason> {
    Some(match code {
        101..=103 => R::Blocked,       // the sending IP on a blocklist, refused for spam incidents
        104 => R::TooManyConn,         // too many connections
        305 | 402 => R::SecurityError, // invalid authentication, authentication required
        401 => R::Blocked,             // SPF: not allowed to send
        403 | 405 | 415 | 421 => R::Rejected, // invalid sender; MAIL FROM not owned by the user
        416 | 418 => R::UserUnknown,   // invalid recipient
        417 => R::MailboxFull,         // recipient over quota
        420 | 426 => R::Suspend,       // archived recipient, recipient account blocked
        505 => R::SystemError,
        506 => R::SpamDetected, // mail rejected
        510 => R::Blocked,
        514 => R::MesgTooBig,
        517 | 630 => R::PolicyViolation, // DMARC verification failed; client host rejected
        999 => R::Blocked,
        _ => return None,
    })
}

/// i.ua: `…i.ua/err/<n>`.
fn iua(code: u16) -> Option<Reason> {
    Some(match code {
        1 | 6 => R::NoRelaying, // SMTP used as a mail gate; use your provider's SMTP
        2 => R::UserUnknown,
        3 => R::Suspend, // unused for more than three months ("frozen")
        4 => R::MailboxFull,
        5 => R::TooManyConn, // sending limit exceeded
        7 => R::Blocked,     // a wrong HELO
        8 => R::Rejected,    // the sender address could not be checked
        9 => R::Blocked,     // the sender's IP is blacklisted
        10 => R::Filtered,   // not in the address management list
        _ => return None,
    })
}

/// Yahoo: the words after `delivery error: dd`. `None`: words the table does not know
/// (they are read as usual).
fn yahoo(words: &[u8]) -> Option<Reason> {
    // (The reply's first line is enough, `dd` replies are one line, and the words come within
    // an address's length of the mark: "dd Sorry, your message to <address> cannot be
    // delivered. This mailbox is disabled". Bounded, so a hostile line costs no more.)
    let words = &words[..words.len().min(512)];
    let line = &words[..memchr::memchr(b'\n', words).unwrap_or(words.len())];
    let says = |w: &str| line.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w.as_bytes()));
    if says("doesn't have a") || says("not a valid recipient") || says("mailbox not found") {
        Some(R::UserUnknown)
    } else if says("is no longer valid") || says("mailbox is disabled") || says("has been disabled") {
        // An account closed or disabled (Yahoo's 554.30, "[#102]"): Sisimai's `suspend`.
        Some(R::Suspend)
    } else {
        None
    }
}

/// Whether `b` ends a token at `i` (nothing alphanumeric there).
fn boundary(b: &[u8], i: usize) -> bool {
    !b.get(i).is_some_and(u8::is_ascii_alphanumeric)
}

/// The value of exactly `n` ASCII digits at `b[at..]`.
fn digits(b: &[u8], at: usize, n: usize) -> Option<u16> {
    let d = b.get(at..at.checked_add(n)?)?;
    d.iter().all(u8::is_ascii_digit).then(|| d.iter().fold(0u16, |v, c| v * 10 + u16::from(c - b'0')))
}

/// A Cox or Spectrum code after `AUP#` (at `b[at..]`).
fn aup(b: &[u8], at: usize) -> Option<(Provider, Option<Reason>)> {
    let rest = b.get(at..)?;
    let token = &rest[..rest.iter().position(|c| !c.is_ascii_alphanumeric()).unwrap_or(rest.len())];
    if let Some((_, r)) = COX.iter().find(|(c, _)| c.as_bytes().eq_ignore_ascii_case(token)) {
        return Some((Provider::Cox, Some(*r)));
    }
    // Spectrum: `[-A-Za-z]*` then four digits.
    let skip = rest.iter().position(|c| !(c.is_ascii_alphabetic() || *c == b'-')).unwrap_or(rest.len());
    let code = digits(rest, skip, 4)?;
    boundary(rest, skip + 4).then_some((Provider::Spectrum, spectrum(code)))
}

/// An Orange or La Poste code whose separator (`_` or `-`) is at `b[i]`.
fn orange_code(b: &[u8], i: usize) -> Option<(Provider, Option<Reason>)> {
    let code = digits(b, i + 1, 3)?;
    if !boundary(b, i + 4) {
        return None;
    }
    let prefix = |end: usize| {
        ["LPNAAA", "LPN", "OFR", "OUK"].iter().any(|p| {
            end.checked_sub(p.len())
                .is_some_and(|s| b[s..end].eq_ignore_ascii_case(p.as_bytes()) && (s == 0 || boundary(b, s - 1)))
        })
    };
    // `OFR_506`, `LPNAAA_101`: a prefix, `_`, three digits.
    let short = b[i] == b'_' && prefix(i);
    // `LPN007_416`, `OFR006_102`, `LPN105-104`: a prefix, three digits, a separator, three.
    let long = i >= 3 && digits(b, i - 3, 3).is_some() && prefix(i - 3);
    (short || long).then_some((Provider::OrangeLaPoste, orange(code)))
}

/// Every provider code in `text`, in order, with its reason where the provider's table
/// decides one.
pub fn codes(text: &str) -> impl Iterator<Item = (Provider, Option<Reason>)> + '_ {
    let b = text.as_bytes();
    let marks = memchr::memchr3_iter(b'#', b'_', b'-', b).filter_map(move |i| match b[i] {
        b'#' if i >= 3 && b[i - 3..i].eq_ignore_ascii_case(b"AUP") && (i == 3 || boundary(b, i - 4)) => aup(b, i + 1),
        b'_' | b'-' => orange_code(b, i),
        _ => None,
    });
    // i.ua's help links are written in lower case. (The finder is built once: building one
    // per text cost more than the search.)
    static LINK: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"i.ua/err/"));
    let links = LINK.find_iter(b).filter_map(move |i| {
        let at = i + "i.ua/err/".len();
        let n = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        let code = (1..=2).contains(&n).then(|| digits(b, at, n)).flatten()?;
        Some((Provider::IUa, iua(code)))
    });
    static DD: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"delivery error: dd "));
    // (One reply has one mark: only the first is read, so that a text repeating it is read
    // once, not once per mark.)
    let dd = DD
        .find(b)
        .filter(|&i| i == 0 || boundary(b, i - 1))
        .map(move |i| (Provider::Yahoo, yahoo(&b[i + "delivery error: dd ".len()..])));
    marks.chain(links).chain(dd)
}

/// The first decided reason among the codes of the providers in `enabled` (a set of
/// [`Provider::bit`]s).
pub(crate) fn reason(text: &str, enabled: u8) -> Option<Reason> {
    codes(text).filter(|(p, _)| enabled & p.bit() != 0).find_map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn read(text: &str) -> Option<Reason> {
        reason(text, u8::MAX)
    }

    #[test]
    fn cox_codes_are_read_after_aup() {
        assert_eq!(read("554 5.7.1 Your IP is on a block list. AUP#CXBL"), Some(R::Blocked));
        assert_eq!(read("554 5.7.1 AUP#IPBL1001 listed"), Some(R::Blocked));
        assert_eq!(read("550 5.7.1 URL in body blocked AUP#URLBL011."), Some(R::SpamDetected));
        assert_eq!(read("421 4.7.0 too many connections AUP#CXCNCT"), Some(R::TooManyConn));
        // Not Cox's code, and no Spectrum code either.
        assert_eq!(read("554 AUP#CXBLX"), None);
        assert_eq!(read("554 XAUP#CXBL"), None);
    }

    #[test]
    fn spectrum_codes_are_read_one_by_one_and_by_range() {
        // Sisimai's rhost-spectrum-01: a "sender rejected" reply whose code is a rate limit.
        let r = "550 5.1.0 <x@amazonses.com> sender rejected. Please see https://www.spectrum.net/support/internet/understanding-email-error-codes for more information. AUP#In-1310";
        assert_eq!(read(r), Some(R::TooManyConn));
        assert_eq!(read("554 AUP#O-1000"), Some(R::Blocked));
        assert_eq!(read("554 AUP#1530"), Some(R::MesgTooBig));
        assert_eq!(read("554 AUP#I1160"), Some(R::PolicyViolation));
        assert_eq!(read("554 AUP#Out-1490"), Some(R::TooManyConn));
        // Outside every range, three or five digits: nothing.
        assert_eq!(read("554 AUP#1999"), None);
        assert_eq!(read("554 AUP#In-131"), None);
        assert_eq!(read("554 AUP#In-13100"), None);
    }

    #[test]
    fn orange_and_la_poste_codes_in_every_written_form() {
        assert_eq!(
            read("550 5.5.0 Adresse destinataire invalide. Invalid recipient. LPN007_416"),
            Some(R::UserUnknown)
        );
        assert_eq!(
            read("550 5.1.1 Invalid recipient. OFR_416 [416] (in reply to RCPT TO command)"),
            Some(R::UserUnknown)
        );
        assert_eq!(read("550 5.2.0 Mail rejete. Mail rejected. ofr_506 [506]"), Some(R::SpamDetected));
        assert_eq!(
            read(
                "550 mwinf5c04 ME Adresse IP source bloquee pour incident de spam. Client host blocked for spamming issues. OFR006_102 Ref"
            ),
            Some(R::Blocked)
        );
        assert_eq!(read("421 Too many connections, slow down. LPN105-104"), Some(R::TooManyConn));
        assert_eq!(read("https://www.spamhaus.org/lookup/ LPNAAA_101 (in reply to RCPT TO command)"), Some(R::Blocked));
        assert_eq!(read("550 5.5.0 Boite du destinataire archivee. Archived recipient. LPN007_420"), Some(R::Suspend));
        // Undecided codes decide nothing; codes glued to other tokens are not codes.
        assert_eq!(read("421 4.2.1 Service refuse. Veuillez essayer plus tard. LPN006_107"), None);
        assert_eq!(read("550 XLPN007_416"), None);
        assert_eq!(read("550 LPN007_4160"), None);
        assert_eq!(read("550 LPN07_416"), None);
        assert_eq!(read("550 OFR-416"), None);
        assert_eq!(read("queue id 8A3_416 deferred"), None);
    }

    #[test]
    fn i_ua_codes_are_read_from_the_help_link() {
        let r = "host mx3.email.ua[185.187.81.214] said: 550 Mailbox is frozen. See http://mail.i.ua/err/3/ (in reply to RCPT TO command)";
        assert_eq!(read(r), Some(R::Suspend));
        assert_eq!(read("550 See http://mail.i.ua/err/2/"), Some(R::UserUnknown));
        assert_eq!(read("550 See http://mail.i.ua/err/10"), Some(R::Filtered));
        assert_eq!(read("550 See http://mail.i.ua/err/11/"), None);
        assert_eq!(read("550 See http://mail.i.ua/err/123/"), None);
        assert_eq!(read("550 See http://mail.i.ua/err/"), None);
    }

    #[test]
    fn yahoo_dd_replies_are_read_by_their_words() {
        let unknown = "554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - mta1284.mail.bf1.yahoo.com";
        assert_eq!(read(unknown), Some(R::UserUnknown));
        assert_eq!(
            read("554 delivery error: dd Not a valid recipient - atlas318.free.mail.gq1.yahoo.com"),
            Some(R::UserUnknown)
        );
        assert_eq!(
            read("554 delivery error: dd This user doesn't have a aol.com account (x@aol.com) [0]"),
            Some(R::UserUnknown)
        );
        let disabled = "554 delivery error: dd Sorry, your message to x@yahoo.com cannot be delivered. This mailbox is disabled (554.30).";
        assert_eq!(read(disabled), Some(R::Suspend));
        assert_eq!(
            read("554 delivery error: dd x@yahoo.com is no longer valid. [-20] - mta1.mail.ne1.yahoo.com"),
            Some(R::Suspend)
        );
        // Other words after the marker decide nothing; the words without it are not Yahoo's.
        assert_eq!(read("554 delivery error: dd Message rejected"), None);
        assert_eq!(read("550 This user doesn't have a yahoo.com account"), None);
        assert_eq!(read("554 xdelivery error: dd Not a valid recipient"), None);
        assert_eq!(codes(unknown).map(|(p, _)| p).collect::<Vec<_>>(), [Provider::Yahoo]);
        // One mark is read, however often a text repeats it (each read scans the words after
        // it), and only the words near it: a hostile line of marks is read once.
        let hostile = "delivery error: dd ".repeat(10_000) + "doesn't have a yahoo.com account";
        assert_eq!(codes(&hostile).filter(|(p, _)| *p == Provider::Yahoo).count(), 1);
        assert_eq!(read(&hostile), None);
        let far = format!("554 delivery error: dd Sorry{} This mailbox is disabled", " ".repeat(600));
        assert_eq!(read(&far), None);
    }

    #[test]
    fn only_enabled_providers_are_read() {
        let text = "550 Invalid recipient. LPN007_416 AUP#CXBL";
        assert_eq!(reason(text, Provider::Cox.bit()), Some(R::Blocked));
        assert_eq!(reason(text, Provider::OrangeLaPoste.bit()), Some(R::UserUnknown));
        assert_eq!(reason(text, 0), None);
        assert_eq!(codes(text).map(|(p, _)| p).collect::<Vec<_>>(), [Provider::OrangeLaPoste, Provider::Cox]);
    }

    proptest! {
        #[test]
        fn total_on_any_text(s in "(?s).{0,200}") {
            let _ = codes(&s).count();
        }

        #[test]
        fn total_around_the_marks(s in "[AUPLNOFRK#_\\-0-9a-z./]{0,40}") {
            let _ = codes(&s).count();
        }
    }
}
