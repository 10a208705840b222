//! Open and click tracking and one-click unsubscribe links: signed tokens, the HTML rewrite,
//! and the judgement of whether a hit came from a person or a machine.
//!
//! A token is `base64url(payload ‖ tag)`, the tag the first 16 bytes of HMAC-SHA256 over the
//! payload with the server's link key. The payload names the email, the account, when the
//! token was made and what it is for — for a click the original URL itself, so that a link
//! works as long as the key does, whatever retention removed, and the server redirects only
//! to URLs it signed (never an open redirect). Tokens cannot be forged or altered without the
//! key; they are compared in constant time.
//!
//! Payload: version (1) · kind (1) · email id (16, big-endian) · made at (8, seconds,
//! big-endian) · account length (1) · account · the rest (URL or recipient, UTF-8).

use crate::email::{AccountId, EmailId};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: u8 = 1;
const TAG: usize = 16;
/// Tokens longer than this are refused unread (a URL of at most [`MAX_URL`] fits).
pub const MAX_TOKEN: usize = 4096;
/// Links longer than this are left as they are (their token would be too long for some
/// clients).
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
    /// When the token was made (when the message was rendered for hand-over).
    pub made_at: DateTime<Utc>,
    /// The original URL (clicks) or the recipient (unsubscribes); empty for opens.
    pub rest: String,
}

/// The server's key for link tokens.
#[derive(Clone)]
pub struct LinkKey(Hmac<Sha256>);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(..)")
    }
}

impl LinkKey {
    /// A key from 32 secret bytes (keep them: links in mail already sent use them).
    pub fn new(secret: &[u8; 32]) -> LinkKey {
        #[allow(clippy::expect_used)]
        LinkKey(Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"))
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

    /// A token for `t`; `None` when the account name is too long to carry.
    pub fn sign(&self, t: &Token) -> Option<String> {
        let account = t.account.as_str().as_bytes();
        let n = u8::try_from(account.len()).ok()?;
        let mut b = Vec::with_capacity(27 + account.len() + t.rest.len() + TAG);
        b.push(VERSION);
        b.push(t.kind as u8);
        b.extend_from_slice(&t.email.as_u128().to_be_bytes());
        b.extend_from_slice(&t.made_at.timestamp().to_be_bytes());
        b.push(n);
        b.extend_from_slice(account);
        b.extend_from_slice(t.rest.as_bytes());
        let mut mac = self.0.clone();
        mac.update(&b);
        b.extend_from_slice(&mac.finalize().into_bytes()[..TAG]);
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
    }

    /// The token's content if `token` is one this key made, unaltered.
    pub fn verify(&self, token: &str) -> Option<Token> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
        let (payload, tag) = b.split_at(b.len().checked_sub(TAG)?);
        let mut mac = self.0.clone();
        mac.update(payload);
        mac.verify_truncated_left(tag).ok()?;
        // Signed by us: the layout is ours, but read it defensively all the same.
        let (&version, rest) = payload.split_first()?;
        if version != VERSION {
            return None;
        }
        let (&kind, rest) = rest.split_first()?;
        let kind = match kind {
            1 => Kind::Open,
            2 => Kind::Click,
            3 => Kind::Unsubscribe,
            _ => return None,
        };
        let email = EmailId::from_u128(u128::from_be_bytes(rest.get(..16)?.try_into().ok()?));
        let made_at = DateTime::from_timestamp(i64::from_be_bytes(rest.get(16..24)?.try_into().ok()?), 0)?;
        let n = usize::from(*rest.get(24)?);
        let account = std::str::from_utf8(rest.get(25..25 + n)?).ok()?;
        let tail = std::str::from_utf8(rest.get(25 + n..)?).ok()?;
        Some(Token { kind, email, account: AccountId::new(account), made_at, rest: tail.to_string() })
    }
}

/// 32 fresh random bytes for a [`LinkKey`] a server keeps.
pub fn random_secret() -> [u8; 32] {
    rand::random()
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

/// The URL of the open pixel, or of a click through to `url`.
fn tracked_url(
    base: &str,
    key: &LinkKey,
    kind: Kind,
    email: EmailId,
    account: &AccountId,
    at: DateTime<Utc>,
    rest: &str,
) -> Option<String> {
    let token = key.sign(&Token { kind, email, account: account.clone(), made_at: at, rest: rest.to_string() })?;
    Some(match kind {
        Kind::Open => format!("{base}/t/o/{token}.gif"),
        Kind::Click => format!("{base}/t/c/{token}"),
        Kind::Unsubscribe => format!("{base}/unsubscribe/{token}"),
    })
}

/// The one-click unsubscribe URL for `recipient` of this email.
pub fn unsubscribe_url(
    base: &str,
    key: &LinkKey,
    email: EmailId,
    account: &AccountId,
    at: DateTime<Utc>,
    recipient: &str,
) -> Option<String> {
    tracked_url(base, key, Kind::Unsubscribe, email, account, at, recipient)
}

/// Whether an `href` is a link to rewrite: an absolute `http(s)` URL with a host, not too
/// long, not already a tracking link.
fn trackable(href: &str, base: &str) -> bool {
    let h = href.trim();
    let lower_scheme = h.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    (lower_scheme.starts_with("http://") || lower_scheme.starts_with("https://"))
        && h.len() <= MAX_URL
        && !h.starts_with(base)
        && url::Url::parse(h).is_ok_and(|u| u.host_str().is_some_and(|x| !x.is_empty()))
}

/// `html` with its links (`<a>`, `<area>`) pointing through the tracking host and the open
/// pixel added before `</body>` (or at the end), as `t` asks. Links that are not absolute
/// `http(s)` URLs (`mailto:`, anchors, relative ones, `javascript:`) are left alone.
pub fn rewrite_html(
    html: &str,
    t: &Tracking,
    key: &LinkKey,
    email: EmailId,
    account: &AccountId,
    at: DateTime<Utc>,
) -> String {
    let mut out = String::with_capacity(html.len() + html.len() / 4 + 256);
    let mut copied = 0;
    if t.click {
        for link in crate::html::links(html) {
            if link.kind != crate::html::LinkKind::Anchor || link.span.is_empty() || !trackable(&link.href, &t.base) {
                continue;
            }
            let Some(url) = tracked_url(&t.base, key, Kind::Click, email, account, at, link.href.trim()) else {
                continue;
            };
            out.push_str(&html[copied..link.span.start]);
            out.push_str(&url);
            copied = link.span.end;
        }
    }
    let rest = &html[copied..];
    let pixel = if t.open { tracked_url(&t.base, key, Kind::Open, email, account, at, "") } else { None };
    match pixel {
        Some(src) => {
            let img = format!(
                r#"<img src="{src}" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0;margin:0;padding:0">"#
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

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap()
    }

    #[test]
    fn a_token_round_trips_and_any_change_breaks_it() {
        let t = Token {
            kind: Kind::Click,
            email: EmailId::from_u128(42),
            account: AccountId::new("acct"),
            made_at: at(),
            rest: "https://acme.test/a?b=1&c=ü".into(),
        };
        let s = key().sign(&t).unwrap();
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{s}");
        assert_eq!(key().verify(&s), Some(t.clone()));
        assert_eq!(LinkKey::new(&[8; 32]).verify(&s), None, "another key");
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&s).unwrap();
        bytes[30] ^= 1;
        assert_eq!(key().verify(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes)), None);
        for bad in ["", "x", "!!!!", &"A".repeat(MAX_TOKEN + 1)] {
            assert_eq!(key().verify(bad), None, "{bad:?}");
        }
        let long = Token { account: AccountId::new("a".repeat(256)), ..t };
        assert_eq!(key().sign(&long), None);
    }

    proptest! {
        /// No input but a token this key made verifies; every token it made does.
        #[test]
        fn only_signed_tokens_verify(id in any::<u128>(), rest in ".{0,64}", junk in "[A-Za-z0-9_-]{0,200}") {
            let t = Token { kind: Kind::Unsubscribe, email: EmailId::from_u128(id), account: AccountId::new("a"), made_at: at(), rest };
            let s = key().sign(&t).unwrap();
            prop_assert_eq!(key().verify(&s), Some(t));
            prop_assert_eq!(key().verify(&junk), None);
        }
    }

    #[test]
    fn links_are_rewritten_and_the_pixel_added() {
        let t = Tracking { base: "https://links.acme.test".into(), open: true, click: true };
        let html = concat!(
            r##"<html><body><a href="https://acme.test/a?x=1&amp;y=2">a</a> <A HREF='http://b.test'>b</A> "##,
            r##"<a href=https://c.test/p>c</a> <a href="mailto:x@acme.test">m</a> <a href="#top">t</a> "##,
            r##"<a href="javascript:alert(1)">j</a> <a href="/relative">r</a> <area href="https://d.test/">"##,
            r##"<!-- <a href="https://comment.test"> --></BODY></html>"##
        );
        let out = rewrite_html(html, &t, &key(), EmailId::from_u128(1), &AccountId::new("a"), at());
        let links: Vec<String> = crate::html::links(&out).into_iter().map(|l| l.href.into_owned()).collect();
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
            ]
        );
        assert!(out.contains("<!-- <a href=\"https://comment.test\"> -->"), "comments untouched");
        let pixel = out.find("/t/o/").unwrap();
        assert!(pixel < out.find("</BODY>").unwrap(), "the pixel goes inside the body");
        let none = Tracking { open: false, click: false, ..t };
        assert_eq!(rewrite_html(html, &none, &key(), EmailId::from_u128(1), &AccountId::new("a"), at()), html);
        let no_body = rewrite_html(
            "<p>hi",
            &Tracking { click: false, ..none },
            &key(),
            EmailId::from_u128(1),
            &AccountId::new("a"),
            at(),
        );
        assert_eq!(no_body, "<p>hi");
    }

    proptest! {
        /// Whatever the HTML, the rewrite keeps every byte outside the rewritten hrefs, and
        /// every tracked link leads back to the link it replaced.
        #[test]
        fn the_rewrite_changes_only_hrefs(html in r#"([a-z <>="'/&;]|href|<a |https://x\.test/[a-z]{0,5}|</body>){0,40}"#) {
            let t = Tracking { base: "https://l.test".into(), open: false, click: true };
            let out = rewrite_html(&html, &t, &key(), EmailId::from_u128(1), &AccountId::new("a"), at());
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

/// What the worker adds to one message when it renders it.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// The html with tracked links and the pixel.
    pub html: Option<String>,
    /// `List-Unsubscribe` and `List-Unsubscribe-Post`.
    pub headers: Vec<(String, String)>,
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
    /// The tracked html and the unsubscribe headers for one message of `content`.
    pub(crate) fn render_extras(
        &self,
        content: &crate::email::EmailContent,
        id: EmailId,
        account: &AccountId,
        sender: Option<&crate::domains::Sender>,
        send_to: &[String],
        now: DateTime<Utc>,
    ) -> Extras {
        let key = self.link_key();
        let mut extras = Extras::default();
        if let (Some(t), Some(html)) = (sender.and_then(|s| s.tracking.as_ref()), content.html.as_deref()) {
            extras.html = Some(rewrite_html(html, t, key, id, account, now));
        }
        if content.unsubscribe {
            let base = sender.and_then(|s| s.link_base.as_deref()).or(self.public_url());
            match (base, send_to) {
                (Some(base), [recipient]) => {
                    if let Some(url) = unsubscribe_url(base, key, id, account, now, recipient) {
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

    /// Records an open or a click from `token` (a path segment of a tracking URL), with the
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
            Kind::Unsubscribe => return Err(crate::Error::NotFound { what: "Link" }),
        };
        if !record {
            return Ok(followed);
        }
        let now = self.clock().now();
        let storage = self.storage();
        let Some(record) = storage.get_email(&t.account, t.email).await? else { return Ok(followed) };
        if record.state.events.iter().filter(|e| e.kind == kind).count() >= MAX_HITS {
            return Ok(followed);
        }
        let user_agent = user_agent.map(|u| u.chars().take(512).collect::<String>());
        let hit = crate::email::Hit {
            link: (t.kind == Kind::Click).then(|| t.rest.clone()),
            ip: ip.map(|i| i.to_string()),
            machine: machine(t.kind, ip, user_agent.as_deref(), (now - t.made_at).num_seconds()).map(str::to_string),
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
