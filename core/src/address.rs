//! RFC 5322 mailbox parsing: `addr@example.com`, `Name <addr@example.com>`,
//! `"Quoted, Name" <"quoted local"@example.com>`, internationalised domains.
//!
//! Invariants: a [`Mailbox`] always holds a syntactically valid local part (dot-atom, or a
//! quoted string kept in its quoted wire form) and an ASCII (IDNA-encoded, lower-case) domain
//! with at least two labels; neither part nor the display name contains CR, LF or NUL.
//! Addresses are parsed, never pattern-matched: every rejection names what was wrong.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest local part in octets (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// Longest forward-path in octets (RFC 5321 §4.5.3.1.3 less the angle brackets).
const MAX_ADDRESS: usize = 254;
/// Longest domain name in octets (RFC 1035).
const MAX_DOMAIN: usize = 253;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Nothing was given.
    #[error("the address is empty")]
    Empty,
    /// There is no `@`.
    #[error("the address has no `@`")]
    MissingAt,
    /// Nothing before the `@`.
    #[error("the local part (before `@`) is empty")]
    EmptyLocalPart,
    /// The local part is longer than RFC 5321's 64 octets.
    #[error("the local part is longer than 64 octets")]
    LocalPartTooLong,
    /// A character that the local part allows only inside quotes.
    #[error("the local part has `{0}`, which is only allowed inside quotes")]
    InvalidLocalChar(char),
    /// The local part has an empty dot-separated segment (`a..b`, `.a`).
    #[error("the local part has an empty dot-separated segment")]
    LocalPartDots,
    /// A quoted string is not closed.
    #[error("a quoted string is not closed")]
    UnterminatedQuote,
    /// `<` is not closed by `>`.
    #[error("`<` is not closed by `>`")]
    UnterminatedAngle,
    /// Text follows the address.
    #[error("unexpected text after the address: `{0}`")]
    TrailingText(String),
    /// Nothing after the `@`.
    #[error("the domain (after `@`) is empty")]
    EmptyDomain,
    /// A domain literal (`[192.0.2.1]`): not accepted.
    #[error("domain literals such as `[192.0.2.1]` are not accepted")]
    DomainLiteral,
    /// The domain is not a valid host name (after IDNA).
    #[error("the domain `{0}` is not a valid host name")]
    InvalidDomain(String),
    /// The domain has one label only (`localhost`).
    #[error("the domain `{0}` is not fully qualified")]
    UnqualifiedDomain(String),
    /// The domain is longer than 253 octets.
    #[error("the domain is longer than 253 octets")]
    DomainTooLong,
    /// The whole address is longer than 254 octets.
    #[error("the address is longer than 254 octets")]
    AddressTooLong,
    /// A character the display name allows only inside quotes.
    #[error("the display name has `{0}`; put the name in double quotes")]
    InvalidDisplayNameChar(char),
    /// A line break or control character.
    #[error("line breaks and control characters are not allowed")]
    ControlCharacter,
    /// Several addresses in one string (`a@x.test, b@y.test`): each string holds one
    /// address, as in the hosted API, which refuses such a list with a 422 too.
    #[error("this holds {0} addresses separated by `,` or `;`; give one address per string, several as an array")]
    SeveralAddresses(usize),
}

/// One parsed mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mailbox {
    /// The display name, unquoted (`Acme, Inc.`), if any.
    pub name: Option<String>,
    /// The local part in wire form: a dot-atom, or a quoted string with its quotes.
    pub local: String,
    /// The domain, IDNA (punycode) encoded and lower-cased.
    pub domain: String,
}

impl Mailbox {
    /// Parses `addr`, `Name <addr>` or `"Name" <addr>`.
    pub fn parse(input: &str) -> Result<Mailbox, AddressError> {
        // Why only on the error path: a list never parses as one mailbox, and an accepted
        // address should not pay for the second look. The look names the mistake users make
        // (a comma- or semicolon-separated list, as a mail client's To field takes it)
        // instead of whichever rule the list happened to break first.
        Mailbox::parse_one(input).map_err(|e| match several(input) {
            Some(n) => AddressError::SeveralAddresses(n),
            None => e,
        })
    }

    fn parse_one(input: &str) -> Result<Mailbox, AddressError> {
        if input.chars().any(|c| matches!(c, '\r' | '\n' | '\0')) {
            return Err(AddressError::ControlCharacter);
        }
        let s = input.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        match find_unquoted(s, '<')? {
            Some(lt) => {
                let rest = &s[lt + 1..];
                let gt = find_unquoted(rest, '>')?.ok_or(AddressError::UnterminatedAngle)?;
                let trailing = rest[gt + 1..].trim();
                if !trailing.is_empty() {
                    return Err(AddressError::TrailingText(trailing.to_string()));
                }
                let name = parse_display_name(s[..lt].trim())?;
                let (local, domain) = parse_addr_spec(rest[..gt].trim())?;
                Ok(Mailbox { name, local, domain })
            }
            None => {
                let (local, domain) = parse_addr_spec(s)?;
                Ok(Mailbox { name: None, local, domain })
            }
        }
    }

    /// `local@domain`, as it goes into an SMTP envelope.
    pub fn address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    /// The key the suppression list and test-address matching use: the address with the
    /// domain lower-cased (already) and the local part lower-cased too. RFC 5321 lets a host
    /// treat local parts as case-sensitive, but no mailbox provider in practice does, and a
    /// suppression that misses `Bob@` after `bob@` bounced would hurt the sender.
    pub fn key(&self) -> String {
        format!("{}@{}", self.local.to_lowercase(), self.domain)
    }

    /// The local part without quotes and escapes.
    pub fn local_unquoted(&self) -> String {
        unquote(&self.local)
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) if needs_quotes(n) => {
                write!(f, "\"{}\" <{}>", n.replace('\\', "\\\\").replace('"', "\\\""), self.address())
            }
            Some(n) => write!(f, "{n} <{}>", self.address()),
            None => f.write_str(&self.address()),
        }
    }
}

/// Normalises a bare address (as given to the suppression list) to its [`Mailbox::key`].
pub fn normalize(address: &str) -> Result<String, AddressError> {
    Ok(Mailbox::parse(address)?.key())
}

fn needs_quotes(name: &str) -> bool {
    name.chars().any(|c| "()<>[]:;@\\,.\"".contains(c))
}

/// Calls `each` with the byte index of every character outside a quoted string (quotes and
/// quoted-pairs honoured; the quotes themselves are not passed); fails when a quote is left
/// open.
fn each_unquoted(s: &str, mut each: impl FnMut(usize, char)) -> Result<(), AddressError> {
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            c if !in_quote => each(i, c),
            _ => {}
        }
    }
    if in_quote { Err(AddressError::UnterminatedQuote) } else { Ok(()) }
}

/// Calls `found` with the byte index of every `needle` outside a quoted string.
fn scan_unquoted(s: &str, needle: char, mut found: impl FnMut(usize)) -> Result<(), AddressError> {
    each_unquoted(s, |i, c| {
        if c == needle {
            found(i)
        }
    })
}

/// How many mailboxes `s` holds when it is a list of two or more, each part separated by an
/// unquoted `,` or `;` (outside `<…>` too) and each a valid mailbox on its own; `None`
/// otherwise (so `Doe, John <j@x.test>` stays a display-name mistake).
fn several(s: &str) -> Option<usize> {
    // Why a bound: this runs on what a client sent, after it was refused; 50 addresses of the
    // longest kind fit in it, and a longer string is not looked at twice.
    const LONGEST_LIST: usize = 50 * 256;
    if s.len() > LONGEST_LIST || !s.contains([',', ';']) {
        return None;
    }
    let (mut parts, mut start, mut angle) = (Vec::new(), 0, false);
    each_unquoted(s, |i, c| match c {
        '<' => angle = true,
        '>' => angle = false,
        ',' | ';' if !angle => {
            parts.push(&s[start..i]);
            start = i + 1;
        }
        _ => {}
    })
    .ok()?;
    parts.push(&s[start..]);
    parts.retain(|p| !p.trim().is_empty());
    (parts.len() >= 2 && parts.iter().all(|p| Mailbox::parse_one(p).is_ok())).then_some(parts.len())
}

fn find_unquoted(s: &str, needle: char) -> Result<Option<usize>, AddressError> {
    // Fast path: no quotes at all (almost every real address).
    if !s.contains('"') {
        return Ok(s.find(needle));
    }
    let mut first = None;
    scan_unquoted(s, needle, |i| {
        first.get_or_insert(i);
    })?;
    Ok(first)
}

fn rfind_unquoted(s: &str, needle: char) -> Result<Option<usize>, AddressError> {
    if !s.contains('"') {
        return Ok(s.rfind(needle));
    }
    let mut last = None;
    scan_unquoted(s, needle, |i| last = Some(i))?;
    Ok(last)
}

fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return s.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_display_name(s: &str) -> Result<Option<String>, AddressError> {
    if s.is_empty() {
        return Ok(None);
    }
    if s.starts_with('"') {
        if !s.ends_with('"') || s.len() < 2 {
            return Err(AddressError::UnterminatedQuote);
        }
        let name = unquote(s);
        if name.chars().any(char::is_control) {
            return Err(AddressError::ControlCharacter);
        }
        return Ok(if name.trim().is_empty() { None } else { Some(name) });
    }
    // An unquoted phrase: atoms (UTF-8 allowed, as every modern client writes them) separated
    // by white space; obs-phrase also allows `.`. Other specials need quotes.
    for c in s.chars() {
        if c.is_control() {
            return Err(AddressError::ControlCharacter);
        }
        if "()<>[]:;@\\,\"".contains(c) {
            return Err(AddressError::InvalidDisplayNameChar(c));
        }
    }
    let mut name = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !name.is_empty() {
            name.push(' ');
        }
        name.push_str(word);
    }
    Ok(Some(name))
}

fn is_atext(c: char) -> bool {
    match c {
        'a'..='z' | 'A'..='Z' | '0'..='9' => true,
        '!' | '#' | '$' | '%' | '&' | '\'' | '*' | '+' | '-' | '/' | '=' | '?' | '^' | '_' | '`' | '{' | '|' | '}'
        | '~' => true,
        c => !c.is_ascii() && !c.is_control(),
    }
}

fn parse_addr_spec(s: &str) -> Result<(String, String), AddressError> {
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    if let Some(fast) = fast_addr_spec(s) {
        return Ok(fast);
    }
    // The `@` that separates local and domain is the last one outside quotes.
    let at = rfind_unquoted(s, '@')?;
    let at = at.ok_or(AddressError::MissingAt)?;
    let local = parse_local(&s[..at])?;
    let domain = parse_domain(&s[at + 1..])?;
    if local.len() + 1 + domain.len() > MAX_ADDRESS {
        return Err(AddressError::AddressTooLong);
    }
    Ok((local, domain))
}

/// One pass over a plain ASCII `dot-atom@host` (nearly every real address). Accepts a strict
/// subset of what [`parse_local`] and [`parse_domain`] accept, with the same result; anything
/// else (quotes, UTF-8, A-labels, a trailing dot, any error) takes the full path, which also
/// words the error.
fn fast_addr_spec(s: &str) -> Option<(String, String)> {
    let b = s.as_bytes();
    let at = b.iter().rposition(|&c| c == b'@')?;
    let (local, host) = (&b[..at], &b[at + 1..]);
    if local.is_empty() || local.len() > MAX_LOCAL || host.is_empty() || b.len() > MAX_ADDRESS {
        return None;
    }
    let mut prev_dot = true;
    for &c in local {
        if c == b'.' {
            if prev_dot {
                return None;
            }
            prev_dot = true;
        } else if c.is_ascii() && is_atext(c as char) {
            prev_dot = false;
        } else {
            return None;
        }
    }
    if prev_dot {
        return None;
    }
    let (mut labels, mut len, mut digits_only, mut last) = (1, 0usize, true, b'.');
    for (i, &c) in host.iter().enumerate() {
        match c {
            b'.' => {
                if len == 0 || last == b'-' {
                    return None;
                }
                labels += 1;
                len = 0;
                digits_only = true;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' => {
                if len == 0 && (c == b'-' || host.get(i..i + 4).is_some_and(|p| p.eq_ignore_ascii_case(b"xn--"))) {
                    return None;
                }
                if len == 63 {
                    return None;
                }
                len += 1;
                digits_only &= c.is_ascii_digit();
            }
            _ => return None,
        }
        last = c;
    }
    if len == 0 || last == b'-' || labels < 2 || digits_only {
        return None;
    }
    Some((s[..at].to_string(), s[at + 1..].to_ascii_lowercase()))
}

fn parse_local(s: &str) -> Result<String, AddressError> {
    if s.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    if s.len() > MAX_LOCAL {
        return Err(AddressError::LocalPartTooLong);
    }
    if s.starts_with('"') {
        // quoted-string: qtext or quoted-pair, the whole local part.
        if s.len() < 2 || !s.ends_with('"') {
            return Err(AddressError::UnterminatedQuote);
        }
        let inner = &s[1..s.len() - 1];
        let mut escaped = false;
        for c in inner.chars() {
            if c.is_control() && c != '\t' {
                return Err(AddressError::ControlCharacter);
            }
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                return Err(AddressError::InvalidLocalChar('"'));
            }
        }
        if escaped {
            return Err(AddressError::UnterminatedQuote);
        }
        if inner.is_empty() {
            return Err(AddressError::EmptyLocalPart);
        }
        return Ok(s.to_string());
    }
    for segment in s.split('.') {
        if segment.is_empty() {
            return Err(AddressError::LocalPartDots);
        }
        if let Some(c) = segment.chars().find(|&c| !is_atext(c)) {
            return Err(AddressError::InvalidLocalChar(c));
        }
    }
    Ok(s.to_string())
}

fn parse_domain(s: &str) -> Result<String, AddressError> {
    if s.is_empty() {
        return Err(AddressError::EmptyDomain);
    }
    if s.starts_with('[') {
        return Err(AddressError::DomainLiteral);
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(if c.is_control() {
            AddressError::ControlCharacter
        } else {
            AddressError::InvalidDomain(s.to_string())
        });
    }
    if s.is_ascii() && s.trim_end_matches('.').len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong);
    }
    let bare = s.trim_end_matches('.');
    // Plain ASCII host names (the common case) need only lower-casing: the label checks
    // below are exactly STD3's. IDNA runs for non-ASCII input and for A-labels (`xn--`),
    // which it must verify decode to valid U-labels.
    let has_a_label = bare.as_bytes().windows(4).any(|w| w.eq_ignore_ascii_case(b"xn--"));
    let ascii = if bare.is_ascii() && !has_a_label {
        bare.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii_strict(bare).map_err(|_| AddressError::InvalidDomain(s.to_string()))?
    };
    if ascii.len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong);
    }
    if !ascii.contains('.') {
        return Err(AddressError::UnqualifiedDomain(s.to_string()));
    }
    for label in ascii.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(AddressError::InvalidDomain(s.to_string()));
        }
    }
    // A top-level label of digits only would make `user@1.2.3.4` look like a host name.
    if ascii.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(AddressError::InvalidDomain(s.to_string()));
    }
    Ok(ascii)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plain_and_named() {
        let m = Mailbox::parse("onboarding@acme.test").unwrap();
        assert_eq!((m.name, m.local.as_str(), m.domain.as_str()), (None, "onboarding", "acme.test"));
        let m = Mailbox::parse("Acme Team <onboarding@Acme.TEST>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Acme Team"));
        assert_eq!(m.address(), "onboarding@acme.test");
    }

    #[test]
    fn quoted_display_name_and_local_part() {
        let m = Mailbox::parse(r#""Doe, John \"JD\"" <"john doe"@example.com>"#).unwrap();
        assert_eq!(m.name.as_deref(), Some(r#"Doe, John "JD""#));
        assert_eq!(m.local, "\"john doe\"");
        assert_eq!(m.local_unquoted(), "john doe");
        // A quoted `@` inside the local part does not split the address.
        let m = Mailbox::parse(r#""a@b"@example.com"#).unwrap();
        assert_eq!(m.domain, "example.com");
        // Display round-trips through the parser.
        let again = Mailbox::parse(&Mailbox::parse(r#""Doe, John" <j@example.com>"#).unwrap().to_string()).unwrap();
        assert_eq!(again.name.as_deref(), Some("Doe, John"));
    }

    #[test]
    fn internationalised_domain_is_encoded() {
        let m = Mailbox::parse("user@bücher.example").unwrap();
        assert_eq!(m.domain, "xn--bcher-kva.example");
        let m = Mailbox::parse("Ünïcode Näme <δοκιμή@παράδειγμα.δοκιμή>").unwrap();
        assert!(m.domain.starts_with("xn--"));
        assert_eq!(m.name.as_deref(), Some("Ünïcode Näme"));
    }

    #[test]
    fn rejections_name_the_rule() {
        let cases: &[(&str, AddressError)] = &[
            ("", AddressError::Empty),
            ("plainaddress", AddressError::MissingAt),
            ("@example.com", AddressError::EmptyLocalPart),
            ("a..b@example.com", AddressError::LocalPartDots),
            (".a@example.com", AddressError::LocalPartDots),
            ("a b@example.com", AddressError::InvalidLocalChar(' ')),
            ("a@", AddressError::EmptyDomain),
            ("a@localhost", AddressError::UnqualifiedDomain("localhost".into())),
            ("a@[192.0.2.1]", AddressError::DomainLiteral),
            ("a@-bad.example", AddressError::InvalidDomain("-bad.example".into())),
            ("a@1.2.3.4", AddressError::InvalidDomain("1.2.3.4".into())),
            ("Name <a@example.com", AddressError::UnterminatedAngle),
            ("Name <a@example.com> x", AddressError::TrailingText("x".into())),
            ("Doe, John <j@example.com>", AddressError::InvalidDisplayNameChar(',')),
            ("x@a.example, y@b.example", AddressError::SeveralAddresses(2)),
            ("x@a.example;y@b.example;", AddressError::SeveralAddresses(2)),
            ("X <x@a.example>, \"Roe, Y\" <y@b.example>, z@c.example", AddressError::SeveralAddresses(3)),
            // A list with one bad member is reported by the rule the whole string breaks.
            ("x@a.example, y", AddressError::InvalidDomain("a.example, y".into())),
            // Past the longest list of 50 addresses, the string is not read again as a list.
            (&"x@a.example,".repeat(2_000), AddressError::LocalPartTooLong),
            ("\"unterminated <a@example.com>", AddressError::UnterminatedQuote),
            ("a@example.com\r\nBcc: x@example.com", AddressError::ControlCharacter),
        ];
        for (input, want) in cases {
            assert_eq!(Mailbox::parse(input).as_ref().err(), Some(want), "{input:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(Mailbox::parse(&long_local), Err(AddressError::LocalPartTooLong));
        let long_domain = format!("a@{}.com", ["abcdefghij"; 25].join("."));
        assert_eq!(Mailbox::parse(&long_domain), Err(AddressError::DomainTooLong));
    }

    proptest::proptest! {
        /// The fast path never accepts what the full path refuses, nor answers differently.
        #[test]
        fn fast_path_agrees_with_the_full_path(s in "[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~@-]{1,40}") {
            if let Some(fast) = fast_addr_spec(&s) {
                let at = s.rfind('@').unwrap();
                let slow = (parse_local(&s[..at]), parse_domain(&s[at + 1..]));
                proptest::prop_assert_eq!((Ok(fast.0), Ok(fast.1)), slow);
            }
        }

        #[test]
        fn any_input_is_parsed_or_refused_without_panic(s in "\\PC{0,80}") {
            let _ = Mailbox::parse(&s);
        }
    }

    #[test]
    fn key_folds_case() {
        assert_eq!(Mailbox::parse("Bob@Example.COM").unwrap().key(), "bob@example.com");
    }
}
