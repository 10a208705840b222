//! Open and click tracking and one-click unsubscribe links: signed tokens, the HTML rewrite,
//! and the judgement of whether a hit came from a person or a machine.
//!
//! A link is `<base>/t/c/<head>/<target>`: `head` is `base64url(kind ‖ email id ‖ account ‖
//! tag)`, `target` the original URL percent-escaped into one path segment, and the tag the
//! first 10 bytes of SipHash-2-4-128, keyed from the server's link key, over the head's
//! fields and the target. So a link works as long as the key does, whatever retention removed; the server
//! redirects only to URLs it signed (never an open redirect); nothing can be forged or
//! altered without the key (80-bit tags, compared in constant time, behind a per-address
//! limit). The pixel is `<base>/t/o/<head>.gif`, the unsubscribe link
//! `<base>/unsubscribe/<head>/<recipient>`.
//!
//! Why this shape: every tracked link makes the message longer, and rendering time follows
//! its length; the URL as it is (escaped, not base64) and a short head keep a 100-link email
//! within the benchmark's budget (`benches/tracking.rs`).
//!
//! Head: kind (1) · email id (16, big-endian) · account length (1) · account (empty for the
//! default account) · tag (10).

use crate::email::{AccountId, EmailId};
use base64::Engine as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::borrow::Cow;

const TAG: usize = 10;
/// Heads and targets longer than this are refused unread.
pub const MAX_TOKEN: usize = 8192;
/// Links longer than this are left as they are.
pub const MAX_URL: usize = 2048;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The open pixel.
    Open = 1,
    /// A rewritten link.
    Click = 2,
    /// The one-click unsubscribe link of one recipient.
    Unsubscribe = 3,
    /// A received message's (or one of its attachments') download link.
    Download = 4,
}

/// A token's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is for.
    pub kind: Kind,
    /// The email.
    pub email: EmailId,
    /// Its account.
    pub account: AccountId,
    /// The original URL (clicks) or the recipient (unsubscribes); empty for opens.
    pub rest: String,
}

/// The server's key for link tokens: the HMAC key other keys are derived from, and the
/// derived SipHash key of link tags.
#[derive(Clone)]
pub struct LinkKey(Hmac<Sha256>, [u64; 2]);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

/// Bytes kept as they are in an escaped target: unreserved and the sub-delimiters that mean
/// nothing in a path segment or an HTML attribute (`&`, quotes, `/`, `?`, `#`, `%` are
/// escaped, so no character reference, segment or query can form).
fn keep(b: u8) -> bool {
    KEEP[usize::from(b)]
}

const KEEP: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'_' | b'~' | b':' | b'@' | b'!' | b'$' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            );
        b += 1;
    }
    t
};

/// `s` percent-escaped into one path segment.
pub fn escape(s: &str, out: &mut String) {
    escape_unless_control(s, out, false);
}

/// [`escape`]; with `refuse_control`, stops at the first white space, control character or
/// markup character (`<`, `>`, quotes, backtick) and answers `false` (what it wrote so far
/// stays: the caller truncates). One pass does both
/// because the rewrite needs both of every link, and the check costs nothing on kept bytes.
fn escape_unless_control(s: &str, out: &mut String, refuse_control: bool) -> bool {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Written a chunk at a time into a buffer on the stack, then appended at once: byte
    // stores instead of a `push` per character (each checks the char's UTF-8 length and the
    // string's capacity); a URL's `/`, `?` and `&` are escaped a dozen times in a typical
    // link. Every byte written is ASCII (all others are escaped), so the check that makes the
    // buffer a `str` always passes.
    let mut buf = [0u8; 3 * 64];
    for chunk in s.as_bytes().chunks(64) {
        let mut n = 0;
        for &b in chunk {
            if keep(b) {
                buf[n] = b;
                n += 1;
            } else {
                if refuse_control && (b <= 0x20 || b == 0x7f || matches!(b, b'<' | b'>' | b'"' | b'\'' | b'`')) {
                    return false;
                }
                buf[n] = b'%';
                buf[n + 1] = HEX[usize::from(b >> 4)];
                buf[n + 2] = HEX[usize::from(b & 15)];
                n += 3;
            }
        }
        match std::str::from_utf8(&buf[..n]) {
            Ok(ascii) => out.push_str(ascii),
            Err(_) => return false,
        }
    }
    true
}

/// `s` with its percent-escapes decoded; `None` when that is not UTF-8 or an escape is broken.
pub fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl LinkKey {
    /// A key from 32 secret bytes (keep them: links in mail already sent use them).
    pub fn new(secret: &[u8; 32]) -> LinkKey {
        #[allow(clippy::expect_used)]
        let hmac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
        let mut mac = hmac.clone();
        mac.update(b"mailroom link tags v1");
        let d = mac.finalize().into_bytes();
        let half = |r: std::ops::Range<usize>| u64::from_le_bytes(d[r].try_into().unwrap_or([0; 8]));
        LinkKey(hmac, [half(0..8), half(8..16)])
    }

    /// A fresh random key (links break when the process that made them stops).
    pub fn random() -> LinkKey {
        LinkKey::new(&random_secret())
    }

    /// A key for another purpose derived from this one (HMAC of `label`): one secret, keys
    /// that never stand for each other.
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(label);
        mac.finalize().into_bytes().into()
    }

    /// The tag of a link: SipHash-2-4-128 keyed with a key derived from the link key. Why not
    /// HMAC-SHA256 as elsewhere: a tracked email signs a hundred links at every hand-over, and
    /// SipHash — a pseudo-random function made to authenticate short inputs — does it ten
    /// times faster; its 128-bit key and output (80 bits kept, checked behind a per-address
    /// limit) leave forging a link out of reach.
    fn tag(&self, fields: &[u8], rest: &[u8]) -> [u8; 16] {
        tag_after(self.hasher_over(fields), rest)
    }

    /// The tag's hash with the head's fields fed in: what every link of an email shares.
    fn hasher_over(&self, fields: &[u8]) -> siphasher::sip128::SipHasher24 {
        use std::hash::Hasher;
        let mut h = siphasher::sip128::SipHasher24::new_with_keys(self.1[0], self.1[1]);
        h.write(fields);
        h
    }

    /// The head of a token for `t` (its `rest` travels beside it, escaped); `None` when the
    /// account name is too long to carry.
    pub fn head(&self, kind: Kind, email: EmailId, account: &AccountId, rest: &str) -> Option<String> {
        let mut s = String::with_capacity(40);
        self.head_into(kind, email, account, rest, &mut s).then_some(s)
    }

    /// [`head`](Self::head), appended to `out`; whether it was.
    pub fn head_into(&self, kind: Kind, email: EmailId, account: &AccountId, rest: &str, out: &mut String) -> bool {
        let Some(heads) = Heads::new(self, kind, email, account, false) else { return false };
        heads.head_into(rest, out);
        true
    }

    /// A full token as one string: the head, and `/` and the escaped rest when there is one;
    /// `None` when the account name is too long to carry or the escaped rest is over
    /// [`MAX_TOKEN`] (a token [`verify`](Self::verify) would refuse).
    pub fn sign(&self, t: &Token) -> Option<String> {
        let mut s = self.head(t.kind, t.email, &t.account, &t.rest)?;
        if !t.rest.is_empty() {
            s.push('/');
            let at = s.len();
            escape(&t.rest, &mut s);
            // No token that `verify` would refuse as too long.
            if s.len() - at > MAX_TOKEN {
                return None;
            }
        }
        Some(s)
    }

    /// The token's content if `head` (and the escaped `rest` after it) is one this key made,
    /// unaltered.
    pub fn verify_parts(&self, head: &str, rest: Option<&str>) -> Option<Token> {
        if head.len() > 512 || rest.is_some_and(|r| r.len() > MAX_TOKEN) {
            return None;
        }
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).ok()?;
        let rest = match rest {
            Some(r) => unescape(r)?,
            None => String::new(),
        };
        let (fields, tag) = b.split_at(b.len().checked_sub(TAG)?);
        let want = self.tag(fields, rest.as_bytes());
        // Constant time: the comparison does not stop at the first differing byte.
        if want[..TAG].iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0 {
            return None;
        }
        let kind = match *fields.first()? {
            1 => Kind::Open,
            2 => Kind::Click,
            3 => Kind::Unsubscribe,
            4 => Kind::Download,
            _ => return None,
        };
        let email = EmailId::from_u128(u128::from_be_bytes(fields.get(1..17)?.try_into().ok()?));
        let n = usize::from(*fields.get(17)?);
        let name = std::str::from_utf8(fields.get(18..18 + n)?).ok()?;
        if fields.len() != 18 + n {
            return None;
        }
        let account = if name.is_empty() { AccountId::default() } else { AccountId::new(name) };
        Some(Token { kind, email, account, rest })
    }

    /// [`verify_parts`](Self::verify_parts) of a token as [`sign`](Self::sign) wrote it.
    pub fn verify(&self, token: &str) -> Option<Token> {
        match token.split_once('/') {
            Some((head, rest)) => self.verify_parts(head, Some(rest)),
            None => self.verify_parts(token, None),
        }
    }
}

/// 32 fresh random bytes for a [`LinkKey`] a server keeps.
pub fn random_secret() -> [u8; 32] {
    rand::random()
}

/// The tag of `rest` from a hash that has taken the head's fields.
fn tag_after(mut h: siphasher::sip128::SipHasher24, rest: &[u8]) -> [u8; 16] {
    use std::hash::Hasher;
    h.write(&(rest.len() as u64).to_be_bytes());
    h.write(rest);
    siphasher::sip128::Hasher128::finish128(&h).as_bytes()
}

/// The heads of the tokens of one kind for one email, which differ only in their tags: the
/// fields are hashed once, and when they fill whole base64 groups (18 bytes for the default
/// account) they are encoded once too, since base64 of a concatenation at a group boundary is
/// the concatenation of the encodings. Why: a tracked email signs a hundred links at every
/// hand-over; the same heads byte for byte as one [`LinkKey::head`] each
/// (`tests::heads_of_an_email_are_the_heads_signed_one_by_one`).
struct Heads {
    /// The fields (`len` bytes), with room for the tag after them.
    fields: [u8; 1 + 16 + 1 + 255 + TAG],
    len: usize,
    hasher: siphasher::sip128::SipHasher24,
    /// The fields in base64, when they are shared and `len` is a multiple of 3.
    prefix: Option<String>,
}

impl Heads {
    /// `None` when the account name is too long to carry. `shared`: heads for many tokens
    /// will be made (the fields' base64 is then worth making once).
    fn new(key: &LinkKey, kind: Kind, email: EmailId, account: &AccountId, shared: bool) -> Option<Heads> {
        let name = if account.is_default() { &b""[..] } else { account.as_str().as_bytes() };
        let n = u8::try_from(name.len()).ok()?;
        let mut fields = [0u8; 1 + 16 + 1 + 255 + TAG];
        fields[0] = kind as u8;
        fields[1..17].copy_from_slice(&email.as_u128().to_be_bytes());
        fields[17] = n;
        let len = 18 + name.len();
        fields[18..len].copy_from_slice(name);
        let hasher = key.hasher_over(&fields[..len]);
        let prefix =
            (shared && len % 3 == 0).then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&fields[..len]));
        Some(Heads { fields, len, hasher, prefix })
    }

    /// The head of the token for `rest`, appended to `out`.
    fn head_into(&self, rest: &str, out: &mut String) {
        let tag = tag_after(self.hasher, rest.as_bytes());
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        if let Some(prefix) = &self.prefix {
            out.push_str(prefix);
            b64.encode_string(&tag[..TAG], out);
        } else {
            let mut b = self.fields;
            b[self.len..self.len + TAG].copy_from_slice(&tag[..TAG]);
            b64.encode_string(&b[..self.len + TAG], out);
        }
    }
}

/// Where tracking links of one email point and what they track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    /// The tracking host's base URL, e.g. `https://links.acme.com` (no trailing slash).
    pub base: String,
    /// Add the open pixel.
    pub open: bool,
    /// Rewrite links.
    pub click: bool,
}

/// The one-click unsubscribe URL for `recipient` of this email.
pub fn unsubscribe_url(
    base: &str,
    key: &LinkKey,
    email: EmailId,
    account: &AccountId,
    recipient: &str,
) -> Option<String> {
    let token =
        key.sign(&Token { kind: Kind::Unsubscribe, email, account: account.clone(), rest: recipient.to_string() })?;
    Some(format!("{base}/unsubscribe/{token}"))
}

/// Whether an `href` is a link to rewrite: an absolute `http(s)` URL with a host, not too
/// long, not already a tracking link. (Links with white space or control characters are
/// refused as they are escaped.)
fn trackable(href: &str, base: &str) -> bool {
    let b = href.as_bytes();
    let rest = if b.len() >= 8 && b[..8].eq_ignore_ascii_case(b"https://") {
        &href[8..]
    } else if b.len() >= 7 && b[..7].eq_ignore_ascii_case(b"http://") {
        &href[7..]
    } else {
        return false;
    };
    let host_end = rest.bytes().position(|c| matches!(c, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    href.len() <= MAX_URL && host_end > 0 && !href.starts_with(base)
}

/// The `href` values of the `<a>` and `<area>` start tags of `html`, each with where its raw
/// value stands: exactly the anchors of [`crate::html::links`] (the standard's tokenizer, so a
/// quoted attribute value of another tag that holds `<a href=…>` is text, as a reader sees
/// it), and those inside Outlook's conditional comments (`<!--[if mso]> … <![endif]-->`, real
/// buttons in real mail), whose bodies are read as markup of their own.
///
/// Why not a reader of its own that skips the attributes of tags other than anchors: it was
/// faster, and the fuzzer kept finding inputs on which it saw anchors that no browser sees.
pub fn anchor_hrefs(html: &str) -> impl Iterator<Item = (std::ops::Range<usize>, Cow<'_, str>)> {
    // An iterator, not a second vector: the rewrite reads each link once, in order.
    crate::html::links_with_conditionals(html)
        .into_iter()
        .filter(|l| l.kind == crate::html::LinkKind::Anchor)
        .map(|l| (l.span, l.href))
}

/// `html` with its links (`<a>`, `<area>`) pointing through the tracking host and the open
/// pixel added before `</body>` (or at the end), as `t` asks. Links that are not absolute
/// `http(s)` URLs (`mailto:`, anchors, relative ones, `javascript:`) are left alone.
pub fn rewrite_html(html: &str, t: &Tracking, key: &LinkKey, email: EmailId, account: &AccountId) -> String {
    rewrite_html_with(html, anchor_hrefs(html), t, key, email, account)
}

/// [`rewrite_html`] of `html`, and the text part derived from it ([`crate::html::to_text`],
/// its links as the sender wrote them), from one pass of the tokenizer
/// ([`crate::html::text_and_links`]): what the hand-over of tracked html sent alone needs.
pub fn rewrite_html_and_text(
    html: &str,
    t: &Tracking,
    key: &LinkKey,
    email: EmailId,
    account: &AccountId,
) -> (String, String) {
    let (text, links) = crate::html::text_and_links(html);
    let anchors = links.into_iter().filter(|l| l.kind == crate::html::LinkKind::Anchor).map(|l| (l.span, l.href));
    (rewrite_html_with(html, anchors, t, key, email, account), text)
}

fn rewrite_html_with<'h>(
    html: &str,
    anchors: impl Iterator<Item = (std::ops::Range<usize>, Cow<'h, str>)>,
    t: &Tracking,
    key: &LinkKey,
    email: EmailId,
    account: &AccountId,
) -> String {
    let mut out = String::with_capacity(html.len() + html.len() / 4 + 256);
    let mut copied = 0;
    let heads = if t.click { Heads::new(key, Kind::Click, email, account, true) } else { None };
    if let Some(heads) = heads {
        for (span, href) in anchors {
            let href = href.trim();
            if !trackable(href, &t.base) {
                continue;
            }
            let mark = out.len();
            out.push_str(&html[copied..span.start]);
            out.push_str(&t.base);
            out.push_str("/t/c/");
            heads.head_into(href, &mut out);
            out.push('/');
            // A link with white space, control or markup characters in it is left as it is
            // (markup characters: replacing the value would take away a `>` or a quote that a
            // reader might see as ending something else, a comment or a tag; no real URL has
            // them unescaped). The escape finds them in the same pass: a character as written
            // is one decoded too, so the decoded value is the one to look at.
            if !escape_unless_control(href, &mut out, true) {
                out.truncate(mark);
                continue;
            }
            copied = span.end;
        }
    }
    let rest = &html[copied..];
    let pixel = if t.open { key.head(Kind::Open, email, account, "") } else { None };
    match pixel {
        Some(head) => {
            let img = format!(
                r#"<img src="{}/t/o/{head}.gif" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0">"#,
                t.base
            );
            match rfind_ascii_ci(rest, "</body") {
                Some(i) => {
                    out.push_str(&rest[..i]);
                    out.push_str(&img);
                    out.push_str(&rest[i..]);
                }
                None => {
                    out.push_str(rest);
                    out.push_str(&img);
                }
            }
        }
        None => out.push_str(rest),
    }
    out
}

/// The last occurrence of ASCII `needle` in `hay`, ignoring ASCII case.
fn rfind_ascii_ci(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    (0..=h.len().checked_sub(n.len())?).rev().find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}

/// Agents of the mail gateways and link scanners that fetch links before (or instead of) the
/// reader, and of programs that are not mail clients; matched case-insensitively.
const MACHINE_AGENTS: &[(&str, &str)] = &[
    ("barracuda", "link_scanner:barracuda"),
    ("proofpoint", "link_scanner:proofpoint"),
    ("mimecast", "link_scanner:mimecast"),
    ("symantec", "link_scanner:symantec"),
    ("messagelabs", "link_scanner:symantec"),
    ("trendmicro", "link_scanner:trend_micro"),
    ("fortiguard", "link_scanner:fortinet"),
    ("sophos", "link_scanner:sophos"),
    ("zscaler", "link_scanner:zscaler"),
    ("ironport", "link_scanner:cisco"),
    ("safelinks", "link_scanner:microsoft"),
    ("bingpreview", "link_scanner:microsoft"),
    ("headlesschrome", "headless_browser"),
    ("phantomjs", "headless_browser"),
    ("python-requests", "script"),
    ("python-urllib", "script"),
    ("curl/", "script"),
    ("wget/", "script"),
    ("go-http-client", "script"),
    ("java/", "script"),
    ("okhttp", "script"),
    ("libwww-perl", "script"),
    ("bot", "bot"),
    ("crawler", "bot"),
    ("spider", "bot"),
    ("preview", "link_preview"),
];

/// Seconds after a message was rendered within which a click is taken for a scanner's:
/// gateways follow every link while the message is in transit; people take longer to open,
/// read and click.
pub const SCANNER_WINDOW_SECS: i64 = 5;

/// Whether a hit was made by a machine rather than a person, and which: a mail-privacy
/// prefetcher (Apple Mail Privacy Protection loads every image from Apple's network, 17.0.0.0/8,
/// whether or not the message is read), a link scanner or gateway (by its user agent, or a
/// click within [`SCANNER_WINDOW_SECS`] of rendering), a script or a bot. `None`: nothing
/// says it was not a person.
pub fn machine(
    kind: Kind,
    ip: Option<std::net::IpAddr>,
    user_agent: Option<&str>,
    after_secs: i64,
) -> Option<&'static str> {
    let ua = user_agent.map(str::trim).unwrap_or("");
    if ua.is_empty() {
        return Some("no_user_agent");
    }
    let lower = ua.to_ascii_lowercase();
    if let Some((_, what)) = MACHINE_AGENTS.iter().find(|(needle, _)| lower.contains(needle)) {
        return Some(what);
    }
    if kind == Kind::Open && matches!(ip, Some(std::net::IpAddr::V4(v4)) if v4.octets()[0] == 17) {
        return Some("mail_privacy_prefetch:apple");
    }
    if kind == Kind::Click && (0..SCANNER_WINDOW_SECS).contains(&after_secs) {
        return Some("link_scanner:too_fast");
    }
    None
}

/// The transparent 1×1 GIF the open pixel answers with.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn key() -> LinkKey {
        LinkKey::new(&[7; 32])
    }

    /// Links in mail already sent must keep working: the tag of a given token never changes
    /// (whatever way the signer feeds its hash).
    #[test]
    fn a_token_signed_today_is_the_token_signed_before() {
        let t = Token {
            kind: Kind::Click,
            email: EmailId::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            account: AccountId::new("acct"),
            rest: "https://acme.test/p/12?utm_source=mail&utm_medium=email".into(),
        };
        assert_eq!(
            key().sign(&t).unwrap(),
            "AgGQAAAAAHAAgAAAAAAAAAEEYWNjdMybpPQmBO4cDfE/https:%2F%2Facme.test%2Fp%2F12%3Futm_source=mail%26utm_medium=email"
        );
        let open = Token { kind: Kind::Open, account: AccountId::default(), rest: String::new(), ..t };
        assert_eq!(key().sign(&open).unwrap(), "AQGQAAAAAHAAgAAAAAAAAAEAMmvXL2u4q2x5nw");
    }

    /// The head as first written: every field and the tag in one buffer, hashed and encoded
    /// whole. What the shared work of [`Heads`] must reproduce.
    fn head_written_whole(key: &LinkKey, kind: Kind, email: EmailId, account: &AccountId, rest: &str) -> String {
        use std::hash::Hasher;
        let name = if account.is_default() { &b""[..] } else { account.as_str().as_bytes() };
        let mut b = vec![kind as u8];
        b.extend_from_slice(&email.as_u128().to_be_bytes());
        b.push(u8::try_from(name.len()).unwrap());
        b.extend_from_slice(name);
        let mut h = siphasher::sip128::SipHasher24::new_with_keys(key.1[0], key.1[1]);
        h.write(&b);
        h.write(&(rest.len() as u64).to_be_bytes());
        h.write(rest.as_bytes());
        b.extend_from_slice(&siphasher::sip128::Hasher128::finish128(&h).as_bytes()[..TAG]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b)
    }

    proptest! {
        /// Whatever the account's length (so whether or not the fields end on a base64 group),
        /// the heads made for one email are those made one by one, whole.
        #[test]
        fn heads_of_an_email_are_the_heads_signed_one_by_one(
            id in any::<u128>(),
            account in "[a-z0-9_-]{0,40}",
            rests in prop::collection::vec(".{0,80}", 1..4),
        ) {
            let account = if account.is_empty() { AccountId::default() } else { AccountId::new(&account) };
            let email = EmailId::from_u128(id);
            let heads = Heads::new(&key(), Kind::Click, email, &account, true).unwrap();
            for rest in &rests {
                let mut shared = String::from("x");
                heads.head_into(rest, &mut shared);
                prop_assert_eq!(&shared[1..], head_written_whole(&key(), Kind::Click, email, &account, rest));
                prop_assert_eq!(key().head(Kind::Click, email, &account, rest).unwrap(), &shared[1..]);
            }
        }
    }

    proptest! {
        /// The rewrite and the text part from one pass are the rewrite and the text part each
        /// made alone: links in and out of conditional comments, `area`, `base`, links that are
        /// not tracked, text around them.
        #[test]
        fn the_rewrite_and_the_text_from_one_pass_are_each_made_alone(parts in prop::collection::vec(
            prop::sample::select(vec![
                "<p>Hello ",
                "there</p>",
                "<a href=\"https://shop.test/a?x=1&amp;y=2\">Shop</a>",
                "<a href=\"mailto:a@acme.test\">mail</a>",
                "<area href=\"https://map.test/\">",
                "<base href=\"https://base.test/\">",
                "<!--[if mso]><a href=\"https://mso.test/\">Button</a><![endif]-->",
                "<img alt=\"Logo\" src=\"cid:logo\">",
                "<a href='https://b.test/ x'>bad</a>",
                "<br>",
                "<li>item",
                "</body>",
                "<script>var a = '<a href=\"https://no.test/\">';</script>",
            ]),
            0..20,
        )) {
            let html = parts.concat();
            let t = Tracking { base: "https://l.test".into(), open: true, click: true };
            let (email, account) = (EmailId::from_u128(7), AccountId::new("acct"));
            let (tracked, text) = rewrite_html_and_text(&html, &t, &key(), email, &account);
            prop_assert_eq!(tracked, rewrite_html(&html, &t, &key(), email, &account), "{:?}", html);
            prop_assert_eq!(text, crate::html::to_text(&html), "{:?}", html);
        }
    }

    #[test]
    fn a_link_with_white_space_control_or_markup_characters_is_left_as_it_is() {
        let t = Tracking { base: "https://l.test".into(), open: false, click: true };
        // Markup characters as written (a quote, a backtick) or as character references
        // (`&lt;`, `&quot;`): a reader might see them end something else.
        for href in [
            "https://a.test/x y",
            "https://a.test/\u{7f}",
            "https://a.test/&#9;x",
            "https://a.test/it's",
            "https://a.test/`x`",
            "https://a.test/&lt;x&gt;",
            "https://a.test/&quot;",
            "https://a.test/ok",
        ] {
            let html = format!(r#"<a href="{href}">a</a><a href="https://b.test/">b</a>"#);
            let out = rewrite_html(&html, &t, &key(), EmailId::from_u128(1), &AccountId::default());
            let links: Vec<_> = crate::html::links(&out).into_iter().map(|l| l.href.into_owned()).collect();
            assert_eq!(links.len(), 2);
            assert_eq!(links[0].starts_with("https://l.test/t/c/"), href.ends_with("/ok"), "{href}: {out}");
            assert!(links[1].starts_with("https://l.test/t/c/"), "{out}");
        }
    }

    #[test]
    fn a_token_round_trips_and_any_change_breaks_it() {
        let t = Token {
            kind: Kind::Click,
            email: EmailId::from_u128(42),
            account: AccountId::new("acct"),
            rest: "https://acme.test/a?b=1&c=ü#top".into(),
        };
        let s = key().sign(&t).unwrap();
        let (head, target) = s.split_once('/').unwrap();
        assert!(head.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{s}");
        assert!(!target.contains(['/', '?', '#', '&', '"', '\'']), "one path segment, no reference: {target}");
        assert_eq!(key().verify(&s), Some(t.clone()));
        assert_eq!(LinkKey::new(&[8; 32]).verify(&s), None, "another key");
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).unwrap();
        bytes[5] ^= 1;
        let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(key().verify(&format!("{other}/{target}")), None, "another email");
        assert_eq!(key().verify(&format!("{head}/{target}x")), None, "another URL");
        assert_eq!(key().verify(head), None, "the URL left out");
        for bad in ["", "x", "!!!!", "a/b", &"A".repeat(MAX_TOKEN + 1), &format!("{head}/%zz")] {
            assert_eq!(key().verify(bad), None, "{bad:?}");
        }
        let long = Token { account: AccountId::new("a".repeat(256)), ..t.clone() };
        assert_eq!(key().sign(&long), None);
        let default = Token { account: AccountId::default(), ..t };
        assert_eq!(key().verify(&key().sign(&default).unwrap()), Some(default));
    }

    proptest! {
        /// No input but a token this key made verifies; every token it made does.
        #[test]
        fn only_signed_tokens_verify(id in any::<u128>(), rest in ".{0,64}", junk in "[A-Za-z0-9_/%-]{0,200}") {
            let t = Token { kind: Kind::Unsubscribe, email: EmailId::from_u128(id), account: AccountId::new("a"), rest };
            let s = key().sign(&t).unwrap();
            prop_assert_eq!(key().verify(&s), Some(t));
            prop_assert_eq!(key().verify(&junk), None);
        }

        /// Escaping round-trips and leaves one path segment.
        #[test]
        fn escape_round_trips(s in ".{0,80}") {
            let mut e = String::new();
            escape(&s, &mut e);
            prop_assert!(e.bytes().all(|b| keep(b) || b == b'%' || b.is_ascii_hexdigit()));
            prop_assert_eq!(unescape(&e), Some(s));
        }
    }

    #[test]
    fn outlook_conditional_links_are_found_and_raw_text_is_not() {
        let html = concat!(
            r#"<!--[if mso]><v:roundrect href="x"><a href="https://mso.test/button">Go</a><![endif]-->"#,
            r#"<script>var s = '<a href="https://script.test">';</script><STYLE>a{}</style >"#,
            r#"<a title="t" HREF = "https://a.test/?q=1&amp;r=2">a</a><areax href="https://no.test">"#
        );
        let found: Vec<String> = anchor_hrefs(html).map(|(_, h)| h.into_owned()).collect();
        assert_eq!(found, ["https://mso.test/button", "https://a.test/?q=1&r=2"]);
    }

    /// The links a standard tokenizer sees in `html`, each tracked one read back to its URL.
    fn seen(html: &str) -> Vec<String> {
        crate::html::links(html)
            .into_iter()
            .map(|l| match l.href.strip_prefix("https://l.test/t/c/") {
                Some(tok) => key().verify(tok).map_or_else(|| format!("unverified {tok}"), |t| t.rest),
                None => l.href.trim().to_string(),
            })
            .collect()
    }

    #[test]
    fn comments_are_read_as_the_tokenizer_reads_them() {
        let t = Tracking { base: "https://l.test".into(), open: false, click: true };
        for html in [
            // The fuzzer's: a bogus comment (`<!*…>`) held `<a href="`, whose open quote ran
            // on over a real anchor, and a link inside that anchor's href was rewritten.
            "<!*<a href=\"h<ml><body><a href=\"https://a.test/x?y=1&amp;z[if msd>\u{ff}<a href=http://b.test>b</a>t<p:![endif]--><sc/>\"ript>",
            "<!DOCTYPE html <a href=\"x><a href=\"https://a.test/<a href=http://b.test>\">a</a>",
            "<? <a href=\"x ?><a href=\"https://a.test/<a href=http://b.test>\">a</a>",
            "</ <a href=\"x><a href=\"https://a.test/<a href=http://b.test>\">a</a>",
            "<!-- <a href=\"x --><a href=\"https://a.test/<a href=http://b.test>\">a</a>",
            "<!----><a href=https://a.test/1>1</a><!---><a href=https://a.test/2>2</a><!-- ---><a href=https://a.test/3>3</a>",
            "<!-- x --!><a href=https://a.test/4>4</a>",
            "<!--[if mso]><a href=\"x --><a href=\"https://a.test/<a href=http://b.test>\">a</a>",
            // A tag whose name only starts like an anchor's, and a raw-text end tag that is not one.
            "<a\u{10}ref=\"h<b>x<a href=\"https://a.test/<a href=http://b.test>\">a</a>",
            "<script></scriptx><a href=\"</script><a href=\"https://a.test/<a href=http://b.test>\">a</a>",
            // An end tag whose name holds `<!--[if`: the anchor after it is real, whole.
            "</a\u{c2}<!--[if mso]><a href=http://b.test--><p>",
            // Another tag's quoted attribute value that holds an anchor is text (the fuzzer's
            // fourth case, then a start tag's and an end tag's attributes by hand).
            "<a\u{10}/e=\"<a e=\"><a href=\"href=http://\0>\">",
            "<img alt=\"<a href=http://b.test>\"><a href=https://a.test/1>1</a>",
            "</p title='<a href=http://b.test>'><a href=https://a.test/1>1</a>",
        ] {
            let out = rewrite_html(html, &t, &key(), EmailId::from_u128(7), &AccountId::new("a"));
            assert_eq!(seen(&out), seen(html), "{html}");
        }
        // Links the tokenizer sees outside comments are still tracked.
        let html = "<!----><a href=https://a.test/1>1</a><!---><a href=https://a.test/2>2</a>";
        let out = rewrite_html(html, &t, &key(), EmailId::from_u128(7), &AccountId::new("a"));
        assert_eq!(out.matches("https://l.test/t/c/").count(), 2, "{out}");
    }

    #[test]
    fn links_are_rewritten_and_the_pixel_added() {
        let t = Tracking { base: "https://links.acme.test".into(), open: true, click: true };
        let html = concat!(
            r##"<html><body><a href="https://acme.test/a?x=1&amp;y=2">a</a> <A HREF='http://b.test'>b</A> "##,
            r##"<a href=https://c.test/p>c</a> <a href="mailto:x@acme.test">m</a> <a href="#top">t</a> "##,
            r##"<a href="javascript:alert(1)">j</a> <a href="/relative">r</a> <area href="https://d.test/">"##,
            r##"<!-- <a href="https://comment.test"> --><!--[if mso]><a href="https://mso.test">o</a><![endif]-->"##,
            r##"</BODY></html>"##
        );
        let out = rewrite_html(html, &t, &key(), EmailId::from_u128(1), &AccountId::new("a"));
        let unhidden = out.replace("<!--", "").replace("-->", "");
        let links: Vec<String> = crate::html::links(&unhidden).into_iter().map(|l| l.href.into_owned()).collect();
        let originals: Vec<String> = links
            .iter()
            .map(|l| match l.strip_prefix("https://links.acme.test/t/c/") {
                Some(token) => key().verify(token).unwrap().rest,
                None => format!("kept {l}"),
            })
            .collect();
        assert_eq!(
            originals,
            [
                "https://acme.test/a?x=1&y=2",
                "http://b.test",
                "https://c.test/p",
                "kept mailto:x@acme.test",
                "kept #top",
                "kept javascript:alert(1)",
                "kept /relative",
                "https://d.test/",
                // No reader sees an ordinary comment; Outlook shows its conditional ones.
                "kept https://comment.test",
                "https://mso.test",
            ]
        );
        let pixel = out.find("/t/o/").unwrap();
        assert!(pixel < out.find("</BODY>").unwrap(), "the pixel goes inside the body");
        let none = Tracking { open: false, click: false, ..t };
        assert_eq!(rewrite_html(html, &none, &key(), EmailId::from_u128(1), &AccountId::new("a")), html);
        let no_body = rewrite_html(
            "<p>hi",
            &Tracking { click: false, ..none },
            &key(),
            EmailId::from_u128(1),
            &AccountId::new("a"),
        );
        assert_eq!(no_body, "<p>hi");
    }

    proptest! {
        /// Whatever the HTML, the rewrite keeps every byte outside the rewritten hrefs, and
        /// every tracked link leads back to the link it replaced.
        #[test]
        fn the_rewrite_changes_only_hrefs(html in r#"([a-z <>="'/&;]|href|<a |https://x\.test/[a-z]{0,5}|</body>){0,40}"#) {
            let t = Tracking { base: "https://l.test".into(), open: false, click: true };
            let out = rewrite_html(&html, &t, &key(), EmailId::from_u128(1), &AccountId::new("a"));
            let before: Vec<String> = crate::html::links(&html).into_iter().map(|l| l.href.trim().to_string()).collect();
            let after: Vec<String> = crate::html::links(&out)
                .into_iter()
                .map(|l| match l.href.strip_prefix("https://l.test/t/c/") {
                    Some(tok) => key().verify(tok).map(|t| t.rest).unwrap_or_default(),
                    None => l.href.trim().to_string(),
                })
                .collect();
            prop_assert_eq!(before, after);
        }
    }

    #[test]
    fn machines_are_told_from_people() {
        let person = Some("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)");
        let apple: Option<std::net::IpAddr> = Some("17.58.1.2".parse().unwrap());
        let home: Option<std::net::IpAddr> = Some("198.51.100.7".parse().unwrap());
        assert_eq!(machine(Kind::Open, home, person, 3600), None);
        assert_eq!(machine(Kind::Open, apple, person, 3), Some("mail_privacy_prefetch:apple"));
        assert_eq!(machine(Kind::Click, apple, person, 3600), None, "a person on Apple's network clicks");
        assert_eq!(machine(Kind::Click, home, person, 2), Some("link_scanner:too_fast"));
        assert_eq!(
            machine(Kind::Click, home, Some("Mozilla/5.0 (compatible; Barracuda Sentinel)"), 999),
            Some("link_scanner:barracuda")
        );
        assert_eq!(machine(Kind::Click, home, Some("python-requests/2.31"), 999), Some("script"));
        assert_eq!(machine(Kind::Open, home, None, 999), Some("no_user_agent"));
        assert_eq!(machine(Kind::Open, home, Some("Googlebot/2.1"), 999), Some("bot"));
    }

    #[test]
    fn the_pixel_is_a_gif() {
        assert!(PIXEL_GIF.starts_with(b"GIF89a") && PIXEL_GIF.ends_with(b";"));
    }
}

/// Opens or clicks one email records at most (later ones still answer): each is an event on
/// the email, and a client replaying a link must not grow it without bound.
pub const MAX_HITS: usize = 32;

/// What a tracking request led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// An open: answer with the pixel.
    Open,
    /// A click: redirect here.
    Click(String),
}

impl crate::Engine {
    /// The tracked html, the derived text part and the unsubscribe headers for one message of
    /// `content`.
    pub(crate) fn render_extras(
        &self,
        content: &crate::email::EmailContent,
        id: EmailId,
        account: &AccountId,
        sender: Option<&crate::domains::Sender>,
        send_to: &[String],
    ) -> crate::render::Extras {
        let key = self.link_key();
        let mut extras = crate::render::Extras::default();
        match (sender.and_then(|s| s.tracking.as_ref()), content.html.as_deref()) {
            // Tracked html sent alone: its text part and its links from one reading of its tags.
            (Some(t), Some(html)) if content.text.is_none() && self.derives_text() => {
                let (tracked, text) = rewrite_html_and_text(html, t, key, id, account);
                extras.text = crate::render::derived_part(text);
                extras.html = Some(tracked);
            }
            (Some(t), Some(html)) => {
                extras.text = self.derived_text(content);
                extras.html = Some(rewrite_html(html, t, key, id, account));
            }
            _ => extras.text = self.derived_text(content),
        }
        if content.unsubscribe {
            let base = sender.and_then(|s| s.link_base.as_deref()).or(self.public_url());
            match (base, send_to) {
                (Some(base), [recipient]) => {
                    if let Some(url) = unsubscribe_url(base, key, id, account, recipient) {
                        extras.headers.push(("List-Unsubscribe".into(), format!("<{url}>")));
                        extras.headers.push(("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into()));
                    }
                }
                _ => {
                    tracing::warn!(email = %id, "one-click unsubscribe asked for, but no public URL or tracking host to serve it: sent without")
                }
            }
        }
        extras
    }

    /// Records an open or a click from `token` (what follows `/t/o/` or `/t/c/`), with the
    /// client's address and user agent; what to answer. A token this server did not sign is
    /// `NotFound` (nothing is recorded, nothing is redirected to).
    ///
    /// `record: false` answers without recording (the caller's rate limit for this client is
    /// spent: the reader still gets the pixel or the redirect, the store gets no write).
    pub async fn follow(
        &self,
        token: &str,
        ip: Option<std::net::IpAddr>,
        user_agent: Option<&str>,
        record: bool,
    ) -> Result<Followed, crate::Error> {
        let not_found = crate::Error::NotFound { what: "Link" };
        let t = self.link_key().verify(token).ok_or(not_found)?;
        let (kind, followed) = match t.kind {
            Kind::Open => (crate::lifecycle::EventKind::Opened, Followed::Open),
            Kind::Click => (crate::lifecycle::EventKind::Clicked, Followed::Click(t.rest.clone())),
            Kind::Unsubscribe | Kind::Download => return Err(crate::Error::NotFound { what: "Link" }),
        };
        if !record {
            return Ok(followed);
        }
        let now = self.clock().now();
        let storage = self.storage();
        // The state alone: a hit must not read the email's content (attachments included).
        let Some(state) = storage.get_state(&t.account, t.email).await? else { return Ok(followed) };
        if state.events.iter().filter(|e| e.kind == kind).count() >= MAX_HITS {
            return Ok(followed);
        }
        let user_agent = user_agent.map(|u| u.chars().take(512).collect::<String>());
        // Seconds since the message left: its hand-over's event (a hit before any is a
        // machine's too: nobody reads mail not sent yet).
        let sent = state
            .events
            .iter()
            .find(|e| matches!(e.kind, crate::lifecycle::EventKind::Sent | crate::lifecycle::EventKind::Delivered));
        let after = sent.map_or(0, |e| (now - e.at).num_seconds());
        let hit = crate::email::Hit {
            link: (t.kind == Kind::Click).then(|| t.rest.clone()),
            ip: ip.map(|i| i.to_string()),
            machine: machine(t.kind, ip, user_agent.as_deref(), after).map(str::to_string),
            user_agent,
        };
        let event = crate::email::Event::new(kind, now).hit(hit);
        // A lifecycle that refuses the event (an email never sent) records nothing; the
        // reader still gets the pixel or the page.
        let _ = storage.append_events(t.email, vec![event], vec![]).await;
        Ok(followed)
    }

    /// The recipient and email an unsubscribe token names, if this server signed it.
    pub fn unsubscribe_token(&self, token: &str) -> Option<(AccountId, EmailId, String)> {
        let t = self.link_key().verify(token).filter(|t| t.kind == Kind::Unsubscribe)?;
        Some((t.account, t.email, t.rest))
    }

    /// One-click unsubscribe: suppresses the token's recipient for the account that sent the
    /// email (reason `unsubscribed`, announced as `suppression.added`). Idempotent.
    pub async fn unsubscribe(&self, token: &str) -> Result<String, crate::Error> {
        let (account, email, recipient) =
            self.unsubscribe_token(token).ok_or(crate::Error::NotFound { what: "Link" })?;
        let now = self.clock().now();
        let entry = crate::ports::SuppressionEntry::caused_by(
            &recipient,
            crate::ports::SuppressionReason::Unsubscribed,
            email,
            now,
        );
        self.storage().suppression_add(&account, entry).await?;
        Ok(recipient)
    }
}

impl crate::Engine {
    /// Refuses one-click unsubscribe where no server would answer its link: neither a public
    /// URL configured nor a verified tracking host on the sending domain.
    pub(crate) async fn check_unsubscribe_links(
        &self,
        requests: &[crate::request::EmailRequest],
    ) -> Result<(), crate::Error> {
        if self.public_url().is_some() {
            return Ok(());
        }
        for (i, r) in requests.iter().enumerate() {
            if r.unsubscribe != Some(true) {
                continue;
            }
            let Some(from) = r.from.as_deref().and_then(|f| crate::address::Mailbox::parse(f).ok()) else { continue };
            let host = match self.storage().domains() {
                Some(store) => crate::domains::governing_domain(store, self.account(), &from.domain)
                    .await?
                    .and_then(|d| d.tracking_host().map(str::to_string)),
                None => None,
            };
            if host.is_none() {
                let path = if requests.len() > 1 { format!("emails[{i}].unsubscribe") } else { "unsubscribe".into() };
                return Err(crate::error::FieldError::new(
                    path,
                    crate::error::Rule::Shape(
                        "one-click unsubscribe needs a link this server answers: set server.public_url, or verify a tracking host for the sending domain".into(),
                    ),
                )
                .into());
            }
        }
        Ok(())
    }
}
