//! Deliverability insights: the hosted service's eight checks, each pass / fail / unknown with
//! its group and advice a person can act on.
//!
//! Invariants: a DNS lookup that fails is `unknown`, never `pass`; links are read with a real
//! HTML parser (lol_html) and domains compared by their organisational domain from the Public
//! Suffix List (the `psl` crate), never by a hand-written list; the DMARC validator names the
//! tag and the rule of every problem it finds.

use crate::address::Mailbox;
use crate::ports::{DnsError, DnsResolver};
use serde::Serialize;
use serde_json::Value;

/// The eight checks' names, in the order [`insights`] returns them.
pub const CHECKS: [&str; 8] = [
    "link_domains_match",
    "dmarc_valid",
    "plain_text_included",
    "no_reply_sender",
    "body_size",
    "subdomain_sender",
    "click_tracking_disabled",
    "open_tracking_disabled",
];

/// Gmail clips a message whose HTML exceeds about 102 KB (the hosted service's figure).
pub const GMAIL_CLIP_BYTES: usize = 102 * 1024;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The email does what the check asks.
    Pass,
    /// It does not: the advice says what to change.
    Fail,
    /// It cannot be told (a DNS lookup failed, the body was pruned, …): the advice says why.
    Unknown,
}

/// How much a check matters, as the hosted service groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// Needs attention: it hurts deliverability.
    Attention,
    /// Could be better.
    Improvement,
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Insight {
    /// The check's name (one of [`CHECKS`]).
    pub check: &'static str,
    /// Its verdict.
    pub status: Status,
    /// Its group.
    pub group: Group,
    /// What to do, in words a person can act on.
    pub advice: String,
    /// What the check looked at (sizes, mismatching hosts, the record found, ...).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// A sending domain's settings, as the host registered them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
pub struct DomainSettings {
    /// Links are rewritten to count clicks.
    pub click_tracking: bool,
    /// A pixel counts opens.
    pub open_tracking: bool,
}

/// What the checks read of an email (sent, scheduled or a draft).
#[derive(Debug, Clone, Copy)]
pub struct Draft<'a> {
    /// The sender, or why it could not be read (a draft may be unfinished).
    pub from: Result<&'a Mailbox, &'a str>,
    /// The body; `None` when it is no longer kept (retention pruned it).
    pub body: Option<Body<'a>>,
}

/// An email's body parts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Body<'a> {
    /// The HTML body, if any.
    pub html: Option<&'a str>,
    /// The plain-text body, if any.
    pub text: Option<&'a str>,
}

/// The organisational domain ("registrable domain") of `host`, lower-cased.
pub(crate) fn organisational_domain(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    psl::domain_str(&host).map(str::to_string)
}

/// The distinct hosts that the links of `html` lead to (`a` and `area`; relative links through
/// the first `<base href>`), lower-case and in ASCII, in order of first appearance. Links to
/// other schemes (mailto:, tel:, cid:, #anchors) and relative links without a base lead to no
/// host; neither does a URL the WHATWG URL parser rejects.
pub fn link_hosts(html: &str) -> Vec<String> {
    let found = crate::html::links(html);
    let base = found.iter().find(|l| l.kind == crate::html::LinkKind::Base).and_then(|l| url::Url::parse(&l.href).ok());
    let mut hosts: Vec<String> = Vec::new();
    for link in found.iter().filter(|l| l.kind == crate::html::LinkKind::Anchor) {
        // Most links repeat a host already seen: compare before allocating.
        if let Some(host) = plain_http_host(&link.href) {
            if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                hosts.push(host.to_ascii_lowercase());
            }
        } else if let Some(host) = parsed_http_host(&link.href, base.as_ref())
            && !hosts.contains(&host)
        {
            hosts.push(host);
        }
    }
    hosts
}

/// The host of an `http(s)` link, as the WHATWG URL parser (the `url` crate) reads it.
fn parsed_http_host(href: &str, base: Option<&url::Url>) -> Option<String> {
    let url = url::Url::options().base_url(base).parse(href).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.host_str().map(str::to_string)).flatten()
}

/// The common case without the URL parser (which costs more than reading the whole email):
/// `http(s)://` followed by a host of plain LDH labels whose last label starts with a letter
/// (so it is neither an IPv4 address in any notation nor punycode to validate), then `/`, `?`,
/// `#` or the end (what follows cannot change the host, not even the tabs and newlines the
/// parser strips). For such a URL the parser's host is this label text, lower-cased; anything
/// else (userinfo, ports, percent-escapes, backslashes, Unicode, IP literals) goes to the
/// parser.
/// `tests::the_shortcut_agrees_with_the_url_parser` holds the two together.
fn plain_http_host(href: &str) -> Option<&str> {
    let b = href.as_bytes();
    let start = if b.len() > 8 && b[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else {
        return None;
    };
    let punycode = |l: &[u8]| l.len() >= 4 && l[..4].eq_ignore_ascii_case(b"xn--");
    let mut end = start;
    let mut label = start;
    while end < b.len() && !matches!(b[end], b'/' | b'?' | b'#') {
        match b[end] {
            b'.' if end > label && !punycode(&b[label..end]) => label = end + 1,
            c if c.is_ascii_alphanumeric() || c == b'-' => {}
            _ => return None,
        }
        end += 1;
    }
    // The last label: not empty, a letter first, not punycode.
    let last = &b[label..end];
    (last.first().is_some_and(u8::is_ascii_alphabetic) && !punycode(last)).then(|| &href[start..end])
}

/// One problem with a DMARC record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmarcProblem {
    /// The tag the problem is in (`p`, `pct`, …, or the text of a part that is no tag).
    pub tag: String,
    /// The rule it breaks.
    pub rule: String,
}

/// Checks a DMARC record against RFC 7489 §6.3: `v=DMARC1` first, a valid `p=`, and the
/// optional tags well-formed. Every problem is reported, each naming its tag.
pub fn validate_dmarc(record: &str) -> Result<(), Vec<DmarcProblem>> {
    let mut problems = Vec::new();
    let mut bad = |tag: &str, rule: &str| problems.push(DmarcProblem { tag: tag.into(), rule: rule.into() });
    let tags: Vec<(String, String)> = record
        .split(';')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim().to_string()),
            None => (t.to_ascii_lowercase(), String::new()),
        })
        .collect();
    match tags.first() {
        Some((k, v)) if k == "v" && v == "DMARC1" => {}
        _ => bad("v", "the record must start with v=DMARC1"),
    }
    let policy = |v: &str| matches!(v.to_ascii_lowercase().as_str(), "none" | "quarantine" | "reject");
    // RFC 7489 §6.4: a tag name is ALPHA *(ALPHA / DIGIT / "_").
    let is_name = |k: &str| {
        k.starts_with(|c: char| c.is_ascii_alphabetic()) && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut seen = std::collections::HashSet::new();
    for (k, v) in tags.iter().skip(1) {
        if !is_name(k) {
            // Named by its own text: there is no tag name to name it by.
            bad(&format!("{k}={v}"), "is not a tag=value pair (a tag name is a letter, then letters, digits or _)");
            continue;
        }
        if !seen.insert(k.clone()) {
            bad(k, "appears more than once");
            continue;
        }
        match k.as_str() {
            "p" | "sp" if !policy(v) => bad(k, "must be none, quarantine or reject"),
            "adkim" | "aspf" if !matches!(v.as_str(), "r" | "s") => bad(k, "must be r (relaxed) or s (strict)"),
            "pct" if !v.parse::<u8>().is_ok_and(|n| n <= 100) => bad(k, "must be a whole number from 0 to 100"),
            "rua" | "ruf" => {
                for uri in v.split(',').map(str::trim) {
                    // A size suffix (`!10m`) may follow the URI.
                    let uri = uri.split('!').next().unwrap_or_default();
                    let mailbox = uri
                        .strip_prefix("mailto:")
                        .filter(|m| m.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.')));
                    if mailbox.is_none() {
                        bad(k, "each address must be a mailto: URI with a valid address");
                    }
                }
            }
            "fo" if !v.split(':').all(|o| matches!(o.trim(), "0" | "1" | "d" | "s")) => {
                bad(k, "must be 0, 1, d or s (colon-separated)")
            }
            "rf" if !v.split(':').all(|o| o.trim().eq_ignore_ascii_case("afrf")) => bad(k, "must be afrf"),
            "ri" if v.parse::<u32>().is_err() => bad(k, "must be a number of seconds"),
            "v" => bad(k, "must come first, once"),
            _ => {}
        }
    }
    if !tags.iter().any(|(k, _)| k == "p") {
        bad("p", "is required (none, quarantine or reject)");
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// The eight checks for `draft` sent from a domain with `settings` (`None`: not registered).
/// A check that cannot tell says `unknown` and why: the sender could not be read, its domain
/// is not registrable, the body is no longer kept, a DNS lookup failed, the domain is not
/// registered.
pub async fn insights(draft: Draft<'_>, settings: Option<DomainSettings>, dns: &dyn DnsResolver) -> Vec<Insight> {
    use Group::{Attention, Improvement};
    let insight = |check, status, group, advice: String, detail| Insight { check, status, group, advice, detail };
    let unknown = |check, group, why: &str| insight(check, Status::Unknown, group, why.to_string(), Value::Null);
    let sender = draft.from.map(|m| (m, organisational_domain(&m.domain)));
    let body_gone = "The email's body is no longer kept (retention pruned it), so this cannot be checked.";
    let mut out = Vec::with_capacity(8);

    // 1. Link domains.
    out.push(match (&sender, draft.body) {
        (Err(why), _) => unknown("link_domains_match", Attention, why),
        (Ok((m, None)), _) => unknown(
            "link_domains_match",
            Attention,
            &format!("{:?} is not a registrable domain, so there is nothing to compare links with.", m.domain),
        ),
        (_, None) => unknown("link_domains_match", Attention, body_gone),
        (Ok((_, Some(org))), Some(body)) => {
            let mut foreign: Vec<String> = body
                .html
                .map(link_hosts)
                .unwrap_or_default()
                .into_iter()
                .filter(|h| organisational_domain(h).as_deref() != Some(org.as_str()))
                .collect();
            foreign.sort();
            if foreign.is_empty() {
                insight("link_domains_match", Status::Pass, Attention, format!("Every link points to {org}."), Value::Null)
            } else {
                insight(
                    "link_domains_match",
                    Status::Fail,
                    Attention,
                    format!(
                        "Links point to {} while the email comes from {org}. Mailbox providers distrust mail whose links lead elsewhere: link to your own domain (or a subdomain of it), e.g. through a redirect you host.",
                        foreign.join(", ")
                    ),
                    serde_json::json!({"hosts": foreign}),
                )
            }
        }
    });

    // 2. DMARC.
    out.push(match &sender {
        Err(why) => unknown("dmarc_valid", Attention, why),
        Ok((m, org)) => dmarc(&m.domain, org.as_deref(), dns).await,
    });

    // 3. Plain text.
    out.push(match draft.body {
        None => unknown("plain_text_included", Attention, body_gone),
        Some(b) if b.text.is_some_and(|t| !t.trim().is_empty()) => insight(
            "plain_text_included",
            Status::Pass,
            Attention,
            "The email has a plain-text version.".into(),
            Value::Null,
        ),
        Some(_) => insight(
            "plain_text_included",
            Status::Fail,
            Attention,
            "Add a plain-text version (`text`), or let the engine derive one from the HTML (`text_from_html`): spam filters score HTML-only mail lower, and some readers show only text.".into(),
            Value::Null,
        ),
    });

    // 4. No "no-reply" sender: the local part's letters and digits, so that `no.reply`,
    // `NoReply`, `do_not_reply` and `"no-reply"` are all caught.
    out.push(match &sender {
        Err(why) => unknown("no_reply_sender", Attention, why),
        Ok((m, _)) => {
            let squashed: String =
                m.local.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
            if ["noreply", "donotreply", "dontreply"].iter().any(|w| squashed.contains(w)) {
                insight(
                    "no_reply_sender",
                    Status::Fail,
                    Attention,
                    format!("Send from an address people can answer instead of {:?}: a no-reply sender discourages engagement and replies go nowhere.", m.local),
                    Value::Null,
                )
            } else {
                insight("no_reply_sender", Status::Pass, Attention, "The sender accepts replies.".into(), Value::Null)
            }
        }
    });

    // 5. Body size.
    out.push(match draft.body {
        None => unknown("body_size", Attention, body_gone),
        Some(b) => {
            let size = b.html.map_or(0, str::len);
            let detail = serde_json::json!({"bytes": size, "limit": GMAIL_CLIP_BYTES});
            if size < GMAIL_CLIP_BYTES {
                let advice = format!("The HTML is {size} bytes, under Gmail's {GMAIL_CLIP_BYTES}-byte clipping limit.");
                insight("body_size", Status::Pass, Attention, advice, detail)
            } else {
                let advice = format!("The HTML is {size} bytes: Gmail clips anything over {GMAIL_CLIP_BYTES} bytes and hides the rest (and your unsubscribe link). Trim inline styles and images.");
                insight("body_size", Status::Fail, Attention, advice, detail)
            }
        }
    });

    // 6. Sending from a subdomain.
    out.push(match &sender {
        Err(why) => unknown("subdomain_sender", Improvement, why),
        Ok((m, None)) => unknown("subdomain_sender", Improvement, &format!("{:?} is not a registrable domain.", m.domain)),
        Ok((m, Some(o))) if *o != m.domain => insight(
            "subdomain_sender",
            Status::Pass,
            Improvement,
            format!("Sending from {}, a subdomain of {o}.", m.domain),
            Value::Null,
        ),
        Ok((_, Some(o))) => insight(
            "subdomain_sender",
            Status::Fail,
            Improvement,
            format!("Send from a subdomain (e.g. mail.{o} or updates.{o}) so that this mail's reputation stays apart from {o}'s own."),
            Value::Null,
        ),
    });

    // 7 and 8. Tracking, from the domain's settings.
    for (check, what, on) in [
        ("click_tracking_disabled", "Click tracking", settings.map(|s| s.click_tracking)),
        ("open_tracking_disabled", "Open tracking", settings.map(|s| s.open_tracking)),
    ] {
        out.push(match (&sender, on) {
            (Err(why), _) => unknown(check, Improvement, why),
            (Ok((m, _)), None) => unknown(
                check,
                Improvement,
                &format!("{} is not a registered domain (`domains add {}`), so its tracking settings are unknown.", m.domain, m.domain),
            ),
            (Ok((m, _)), Some(false)) => {
                insight(check, Status::Pass, Improvement, format!("{what} is off for {}.", m.domain), Value::Null)
            }
            (Ok((m, _)), Some(true)) => insight(
                check,
                Status::Fail,
                Improvement,
                format!("{what} is on for {}: rewritten links and tracking pixels look like bulk mail to filters. Turn it off for transactional mail.", m.domain),
                Value::Null,
            ),
        });
    }
    out
}

async fn dmarc(domain: &str, org: Option<&str>, dns: &dyn DnsResolver) -> Insight {
    let verdict =
        |status, advice, detail| Insight { check: "dmarc_valid", status, group: Group::Attention, advice, detail };
    let suggestion = format!("v=DMARC1; p=none; rua=mailto:dmarc-reports@{}", org.unwrap_or(domain));
    let mut tried = Vec::new();
    for name in std::iter::once(domain).chain(org.filter(|o| *o != domain)) {
        let q = format!("_dmarc.{name}");
        tried.push(q.clone());
        let records = match dns.txt(&q).await {
            Ok(records) => records,
            Err(DnsError::NotFound { .. }) => Vec::new(),
            Err(DnsError::Failed { message, .. }) => {
                let advice = format!("The DNS lookup of {q} failed ({message}); try again.");
                return verdict(Status::Unknown, advice, Value::Null);
            }
        };
        let found: Vec<&String> = records
            .iter()
            .filter(|r| r.trim_start().get(..8).is_some_and(|v| v.eq_ignore_ascii_case("v=dmarc1")))
            .collect();
        match found.as_slice() {
            [] => {}
            [one] => {
                return match validate_dmarc(one) {
                    Ok(()) => verdict(
                        Status::Pass,
                        format!("{q} publishes a valid DMARC record."),
                        serde_json::json!({"record": one}),
                    ),
                    Err(problems) => {
                        let list: Vec<String> = problems.iter().map(|p| format!("{} {}", p.tag, p.rule)).collect();
                        let advice = format!(
                            "The DMARC record at {q} is not valid: {}. A valid start: \"{suggestion}\".",
                            list.join("; ")
                        );
                        verdict(Status::Fail, advice, serde_json::json!({"record": one, "problems": problems}))
                    }
                };
            }
            _ => {
                let advice = format!(
                    "{q} publishes more than one DMARC record; receivers then ignore them all (RFC 7489 §6.6.3). Keep one."
                );
                return verdict(Status::Fail, advice, serde_json::json!({"records": found}));
            }
        }
    }
    let advice = format!(
        "No DMARC record found (looked up {}). Publish a TXT record at _dmarc.{}: \"{suggestion}\".",
        tried.join(" and "),
        org.unwrap_or(domain)
    );
    verdict(Status::Fail, advice, Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MxRecord;
    use async_trait::async_trait;
    use std::collections::HashMap;

    /// TXT answers from a map; names listed in `failing` fail as a broken resolver would.
    #[derive(Debug, Default)]
    struct Txt {
        records: HashMap<String, Vec<String>>,
        failing: Vec<String>,
    }

    #[async_trait]
    impl DnsResolver for Txt {
        async fn mx(&self, d: &str) -> Result<Vec<MxRecord>, DnsError> {
            Err(DnsError::NotFound { name: d.into(), rtype: "MX" })
        }
        async fn ips(&self, h: &str) -> Result<Vec<std::net::IpAddr>, DnsError> {
            Err(DnsError::NotFound { name: h.into(), rtype: "A/AAAA" })
        }
        async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
            if self.failing.iter().any(|f| f == name) {
                return Err(DnsError::Failed { name: name.into(), rtype: "TXT", message: "SERVFAIL".into() });
            }
            self.records.get(name).cloned().ok_or(DnsError::NotFound { name: name.into(), rtype: "TXT" })
        }
    }

    fn mailbox(s: &str) -> Mailbox {
        Mailbox::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn status(all: &[Insight], check: &str) -> Status {
        all.iter().find(|i| i.check == check).map_or(Status::Unknown, |i| i.status)
    }

    #[test]
    fn dmarc_records_are_validated_tag_by_tag() {
        assert_eq!(
            validate_dmarc("v=DMARC1; p=reject; rua=mailto:d@acme.test,mailto:x@y.test!10m; pct=50; adkim=s"),
            Ok(())
        );
        let tags = |r: &str| validate_dmarc(r).err().unwrap_or_default().into_iter().map(|p| p.tag).collect::<Vec<_>>();
        assert_eq!(tags("v=DMARC1"), ["p"]);
        assert_eq!(tags("p=none; v=DMARC1"), ["v", "v"]);
        assert_eq!(tags("v=DMARC1; p=maybe; pct=150; rua=d@acme.test; aspf=x"), ["p", "pct", "rua", "aspf"]);
        assert_eq!(tags("v=DMARC1; p=none; p=reject"), ["p"]);
        // Found by the fuzzer: a part without a tag name is named by its own text.
        assert_eq!(tags("v=DMARC1; p=none; =x; 1a=b"), ["=x", "1a=b"]);
        assert_eq!(tags("];=;="), ["v", "=", "=", "p"]);
    }

    #[test]
    fn link_hosts_are_read_as_a_browser_would() {
        let html = r#"<a href="https://Click.Acme.test/x?a=1&amp;b=2">x</a><area href="mailto:a@b.test">
            <a href="https://evil&#46;test/">obfuscated</a><a href="HTTPS://user@Shop.Acme.co.uk:8443/p">
            <a href="//cdn.partner.test/img">protocol-relative, no base</a><a href="/relative">no base</a>
            <a href=" https://spaced.test/ ">x</a><a href="https:\\backslash.test\x">x</a>
            <a href="https://click.acme.test/again">dup</a><!-- <a href="https://hidden.test"> -->"#;
        assert_eq!(
            link_hosts(html),
            ["click.acme.test", "evil.test", "shop.acme.co.uk", "spaced.test", "backslash.test"]
        );
        // The first <base href> resolves relative links.
        let with_base = r#"<base href="https://tracker.test/r/"><a href="go?x=1">x</a><a href="//cdn.test/i">"#;
        assert_eq!(link_hosts(with_base), ["tracker.test", "cdn.test"]);
        assert_eq!(organisational_domain("a.b.acme.co.uk").as_deref(), Some("acme.co.uk"));
    }

    proptest::proptest! {
        /// Whenever the shortcut answers, the WHATWG URL parser gives the same host.
        #[test]
        fn the_shortcut_agrees_with_the_url_parser(
            scheme in "(?i)https?://",
            host in "[a-zA-Z0-9.-]{0,12}([xX][nN]--[a-z0-9]{1,4})?[a-zA-Z0-9.-]{0,6}",
            tail in "([/?#][ -~\t\n\r\x00]{0,10})?",
            space in proptest::sample::select(vec!["", " ", "\t", "\n"]),
        ) {
            let href = format!("{scheme}{host}{space}{tail}");
            if let Some(short) = plain_http_host(&href) {
                let parsed = url::Url::parse(&href).ok().and_then(|u| u.host_str().map(str::to_string));
                proptest::prop_assert_eq!(Some(short.to_ascii_lowercase()), parsed, "{:?}", href);
            }
        }
    }

    #[tokio::test]
    async fn a_good_email_passes_every_check() {
        let dns = Txt {
            records: HashMap::from([(
                "_dmarc.acme.test".into(),
                vec!["v=DMARC1; p=quarantine; rua=mailto:d@acme.test".into()],
            )]),
            ..Default::default()
        };
        let html = r#"<p>Hi</p><a href="https://www.acme.test/welcome">start</a>"#;
        let from = mailbox("Acme <hello@mail.acme.test>");
        let draft = Draft { from: Ok(&from), body: Some(Body { html: Some(html), text: Some("Hi") }) };
        let all = insights(draft, Some(DomainSettings::default()), &dns).await;
        assert_eq!(all.len(), 8);
        for i in &all {
            assert_eq!(i.status, Status::Pass, "{}: {}", i.check, i.advice);
        }
    }

    #[tokio::test]
    async fn a_bad_email_fails_and_a_failed_lookup_is_unknown() {
        let big = format!(r#"<a href="https://bit.ly/x">x</a>{}"#, "x".repeat(GMAIL_CLIP_BYTES));
        let from = mailbox("\"No.Reply\" <No.Reply@acme.test>");
        let draft = Draft { from: Ok(&from), body: Some(Body { html: Some(&big), text: None }) };
        let tracking = DomainSettings { click_tracking: true, open_tracking: true };
        let all = insights(draft, Some(tracking), &Txt::default()).await;
        assert_eq!(all.iter().map(|i| i.check).collect::<Vec<_>>(), CHECKS, "every check, in order");
        for check in CHECKS {
            assert_eq!(status(&all, check), Status::Fail, "{check}");
        }
        let dmarc = all.iter().find(|i| i.check == "dmarc_valid").map(|i| i.advice.clone()).unwrap_or_default();
        assert!(dmarc.contains("v=DMARC1; p=none"), "a record is suggested: {dmarc}");
        // A resolver that fails: unknown, never pass. An unregistered domain: tracking unknown.
        let broken = Txt { failing: vec!["_dmarc.acme.test".into()], ..Default::default() };
        let a = mailbox("a@acme.test");
        let all =
            insights(Draft { from: Ok(&a), body: Some(Body { html: None, text: Some("x") }) }, None, &broken).await;
        assert_eq!(status(&all, "dmarc_valid"), Status::Unknown);
        assert_eq!(status(&all, "click_tracking_disabled"), Status::Unknown);
        // The organisational domain's record covers a subdomain sender.
        let org = Txt {
            records: HashMap::from([("_dmarc.acme.test".into(), vec!["v=DMARC1; p=none".into()])]),
            ..Default::default()
        };
        let news = mailbox("a@news.acme.test");
        let all = insights(Draft { from: Ok(&news), body: Some(Body::default()) }, None, &org).await;
        assert_eq!(status(&all, "dmarc_valid"), Status::Pass);
    }

    #[tokio::test]
    async fn what_cannot_be_read_is_unknown_with_the_reason() {
        let dns = Txt::default();
        // A pruned body: the checks that read it cannot tell; the others still can.
        let from = mailbox("hello@mail.acme.test");
        let all = insights(Draft { from: Ok(&from), body: None }, Some(DomainSettings::default()), &dns).await;
        for check in ["link_domains_match", "plain_text_included", "body_size"] {
            assert_eq!(status(&all, check), Status::Unknown, "{check}");
        }
        for check in ["no_reply_sender", "subdomain_sender", "click_tracking_disabled"] {
            assert_eq!(status(&all, check), Status::Pass, "{check}");
        }
        // A sender that could not be read: everything about the sender is unknown, and says why.
        let all = insights(Draft { from: Err("from: not an address"), body: Some(Body::default()) }, None, &dns).await;
        for i in all.iter().filter(|i| !matches!(i.check, "plain_text_included" | "body_size")) {
            assert_eq!((i.check, i.status, i.advice.as_str()), (i.check, Status::Unknown, "from: not an address"));
        }
        // A sender on a public suffix itself: no organisational domain to compare with.
        let suffix = mailbox("a@github.io");
        let all = insights(Draft { from: Ok(&suffix), body: Some(Body::default()) }, None, &dns).await;
        assert_eq!(status(&all, "link_domains_match"), Status::Unknown);
        assert_eq!(status(&all, "subdomain_sender"), Status::Unknown);
    }
}
