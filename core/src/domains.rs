//! Sending domains' DNS records and their verification, as pure functions: which records a
//! domain must publish ([`records`]), whether what DNS answers matches one ([`check`]), how a
//! record's status moves with each check ([`next_status`]: pending until found, `failed` after
//! 72 hours, a verified record that disappears is a `temporary_failure` for 72 hours and then
//! `failed`), the domain's status from its records' ([`domain_status`]), and when to look again
//! ([`next_check_after`]).
//!
//! The shapes are the hosted service's (`records[]` with `record`, `name`, `type`, `value`,
//! `ttl`, `status`, `priority`); the values are this server's own: its bounce MX host, its SPF
//! policy, the domain's own DKIM key.

mod api;
mod model;
mod verify;

pub use api::{
    DomainUpdate, MAX_DOMAINS, NewDomain, Sender, domain_event_json, domain_json, governing_domain, governing_names,
    normalize_name, records_json,
};
pub use model::{DkimEntry, Domain, DomainConfig, REGIONS, TlsMode};
pub use verify::{Verifier, check_domain};

use crate::ports::DnsError;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How long a record may stay unfound (or gone, once verified) before it is `failed`.
pub const GIVE_UP_AFTER: Duration = Duration::hours(72);

/// What a record is for (the `record` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordPurpose {
    /// The return path: MX and TXT on `<return path>.<domain>`.
    #[serde(rename = "SPF")]
    Spf,
    /// The DKIM public key on `<selector>._domainkey.<domain>`.
    #[serde(rename = "DKIM")]
    Dkim,
    /// The MX that brings the domain's mail to this server.
    #[serde(rename = "Receiving")]
    Receiving,
    /// The tracking host's CNAME.
    #[serde(rename = "Tracking")]
    Tracking,
}

/// A DNS record type this module publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordType {
    /// Mail exchanger.
    #[serde(rename = "MX")]
    Mx,
    /// Text.
    #[serde(rename = "TXT")]
    Txt,
    /// Canonical name.
    #[serde(rename = "CNAME")]
    Cname,
}

/// A record's status (the hosted service's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Never checked.
    NotStarted,
    /// Checked, not found yet.
    Pending,
    /// Found as published.
    Verified,
    /// Not found for 72 hours (or gone for 72 hours after it was verified).
    Failed,
    /// Verified once, not found now: rechecked for 72 hours.
    TemporaryFailure,
}

/// A domain's status (the hosted service's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainStatus {
    /// No record checked yet.
    NotStarted,
    /// Records not all found yet.
    Pending,
    /// Every record found.
    Verified,
    /// Every record failed.
    Failed,
    /// Some records verified, the others still pending.
    PartiallyVerified,
    /// Some records failed, others verified or pending.
    PartiallyFailed,
    /// Verified before; a record has gone since and is being rechecked.
    TemporaryFailure,
}

/// One record to publish, with its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// What it is for.
    pub record: RecordPurpose,
    /// Its name relative to the registrable domain (`send.mail` for `mail.acme.com`), as the
    /// hosted service shows it.
    pub name: String,
    /// Its full name (what is looked up).
    pub fqdn: String,
    /// Its type.
    #[serde(rename = "type")]
    pub rtype: RecordType,
    /// Its value.
    pub value: String,
    /// The MX preference, for MX records.
    pub priority: Option<u16>,
    /// Where it stands.
    pub status: RecordStatus,
    /// When it was first checked and not found, or found gone (the 72 hours run from here).
    pub missing_since: Option<DateTime<Utc>>,
}

/// What this server asks a domain to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The return-path label (`send`: bounces come back to `send.<domain>`).
    pub return_path: String,
    /// The host that receives bounces for the return path (its MX).
    pub bounce_mx: String,
    /// The SPF policy for the return path, e.g. `v=spf1 ip4:192.0.2.1 ~all`.
    pub spf: String,
    /// The DKIM selector.
    pub dkim_selector: String,
    /// The DKIM record's value: `v=DKIM1; k=rsa; p=<base64 public key>`.
    pub dkim_value: String,
    /// The tracking host's label and the CNAME target, when tracking is on.
    pub tracking: Option<(String, String)>,
    /// The inbound MX host, when receiving is on.
    pub receiving: Option<String>,
}

/// The part of `domain` below its registrable domain (`mail` for `mail.acme.com`, empty for
/// `acme.com`).
fn below_zone(domain: &str) -> &str {
    match psl::domain_str(domain) {
        Some(zone) if zone.len() < domain.len() => domain[..domain.len() - zone.len()].trim_end_matches('.'),
        _ => "",
    }
}

fn relative(label: &str, domain: &str) -> String {
    let sub = below_zone(domain);
    match (label.is_empty(), sub.is_empty()) {
        (true, true) => "@".into(),
        (true, false) => sub.into(),
        (false, true) => label.into(),
        (false, false) => format!("{label}.{sub}"),
    }
}

fn fqdn(label: &str, domain: &str) -> String {
    if label.is_empty() { domain.to_string() } else { format!("{label}.{domain}") }
}

/// The records `domain` must publish under `plan`, all `not_started`.
pub fn records(domain: &str, plan: &Plan) -> Vec<DnsRecord> {
    let rec = |record, label: &str, rtype, value: &str, priority| DnsRecord {
        record,
        name: relative(label, domain),
        fqdn: fqdn(label, domain),
        rtype,
        value: value.to_string(),
        priority,
        status: RecordStatus::NotStarted,
        missing_since: None,
    };
    let dkim = format!("{}._domainkey", plan.dkim_selector);
    let mut out = vec![
        rec(RecordPurpose::Spf, &plan.return_path, RecordType::Mx, &plan.bounce_mx, Some(10)),
        rec(RecordPurpose::Spf, &plan.return_path, RecordType::Txt, &plan.spf, None),
        rec(RecordPurpose::Dkim, &dkim, RecordType::Txt, &plan.dkim_value, None),
    ];
    if let Some(mx) = &plan.receiving {
        out.push(rec(RecordPurpose::Receiving, "", RecordType::Mx, mx, Some(10)));
    }
    if let Some((label, target)) = &plan.tracking {
        out.push(rec(RecordPurpose::Tracking, label, RecordType::Cname, target, None));
    }
    out
}

/// What one lookup of a record found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Published as asked.
    Found,
    /// Not there, or there with another value.
    Missing,
    /// The lookup failed: no answer either way.
    Unknown,
}

fn norm_host(h: &str) -> String {
    h.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// TXT values compared as DNS carries them: the strings of one record joined, quotes and
/// spacing around `;` ignored.
fn norm_txt(t: &str) -> String {
    t.trim().trim_matches('"').split(';').map(str::trim).filter(|p| !p.is_empty()).collect::<Vec<_>>().join(";")
}

/// Whether the answer to a lookup of `record` (MX hosts with preferences, TXT strings or a
/// CNAME target, as the resolver gave them) shows it published. A failed lookup is never read
/// as absence.
pub fn check(record: &DnsRecord, answer: &Result<Vec<(u16, String)>, DnsError>) -> Check {
    match answer {
        Err(DnsError::Failed { .. }) => Check::Unknown,
        Err(DnsError::NotFound { .. }) => Check::Missing,
        Ok(values) => {
            // Mail reaches us only if our MX is the most preferred of the name: another host
            // at a lower value would take it first.
            let best = values.iter().map(|(p, _)| *p).min().unwrap_or(0);
            let found = values.iter().any(|(pref, v)| match record.rtype {
                RecordType::Mx if record.record == RecordPurpose::Receiving => {
                    norm_host(v) == norm_host(&record.value) && *pref == best
                }
                RecordType::Mx => {
                    norm_host(v) == norm_host(&record.value) && record.priority.is_none_or(|p| p == *pref)
                }
                RecordType::Cname => norm_host(v) == norm_host(&record.value),
                RecordType::Txt => norm_txt(v) == norm_txt(&record.value),
            });
            if found { Check::Found } else { Check::Missing }
        }
    }
}

/// A record after a check at `now`.
pub fn next_status(record: &DnsRecord, check: &Check, now: DateTime<Utc>) -> (RecordStatus, Option<DateTime<Utc>>) {
    use RecordStatus::*;
    let since = record.missing_since.unwrap_or(now);
    let expired = now - since >= GIVE_UP_AFTER;
    match (record.status, check) {
        (_, Check::Found) => (Verified, None),
        // No answer: nothing learned, nothing changes (but a never-checked record is now pending).
        (NotStarted, Check::Unknown) => (Pending, record.missing_since),
        (s, Check::Unknown) => (s, record.missing_since),
        (Verified, Check::Missing) => (TemporaryFailure, Some(now)),
        (TemporaryFailure, Check::Missing) => (if expired { Failed } else { TemporaryFailure }, Some(since)),
        (Failed, Check::Missing) => (Failed, Some(since)),
        (NotStarted | Pending, Check::Missing) => (if expired { Failed } else { Pending }, Some(since)),
    }
}

/// A domain's status from its records'.
pub fn domain_status(records: &[RecordStatus]) -> DomainStatus {
    use RecordStatus as R;
    let all = |s: R| records.iter().all(|r| *r == s);
    let any = |s: R| records.contains(&s);
    if records.is_empty() || all(R::NotStarted) {
        DomainStatus::NotStarted
    } else if all(R::Verified) {
        DomainStatus::Verified
    } else if any(R::TemporaryFailure) {
        DomainStatus::TemporaryFailure
    } else if all(R::Failed) {
        DomainStatus::Failed
    } else if any(R::Failed) {
        DomainStatus::PartiallyFailed
    } else if any(R::Verified) {
        DomainStatus::PartiallyVerified
    } else {
        DomainStatus::Pending
    }
}

/// When to check a domain again after its `n`-th check (1-based) found it not verified: soon at
/// first (1, 2, 4, … minutes), then every hour; `None` once it is verified or failed for good.
pub fn next_check_after(n: u32, status: DomainStatus) -> Option<Duration> {
    match status {
        DomainStatus::Verified | DomainStatus::Failed => None,
        _ => Some(Duration::minutes(1i64 << n.saturating_sub(1).min(6)).min(Duration::hours(1))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn plan() -> Plan {
        Plan {
            return_path: "send".into(),
            bounce_mx: "bounces.mailroom.example".into(),
            spf: "v=spf1 ip4:192.0.2.1 ~all".into(),
            dkim_selector: "mailroom".into(),
            dkim_value: "v=DKIM1; k=rsa; p=MIIB".into(),
            tracking: Some(("links".into(), "track.mailroom.example".into())),
            receiving: None,
        }
    }

    #[test]
    fn a_bad_name_says_which_label_breaks_which_rule() {
        let why = |raw: &str| normalize_name(raw).unwrap_err().to_string();
        assert!(why(&format!("{}.test", "a".repeat(64))).contains("a label must be 1 to 63 characters, got 64"));
        assert!(why("acme..test").contains("a label must be 1 to 63 characters, got 0"));
        assert!(why("-acme.test").contains("\"-acme\" may not begin or end with `-`"));
        assert!(why("ac_me.test").contains("\"ac_me\" may hold only letters, digits and `-`"));
        assert!(why("xn--a.test").contains("does not encode as IDNA"));
        // A long name of short labels is too long, not unencodable.
        let long = format!("{}test", "a.".repeat(510));
        assert!(why(&long).contains("253"), "{}", why(&long));
        assert!(why(&format!("{}test", "a.".repeat(125))).contains("253"));
        assert!(normalize_name(&format!("{}test.com", "a.".repeat(120))).is_ok());
        assert_eq!(normalize_name(" Acme.TEST. ").unwrap(), "acme.test");
        assert_eq!(normalize_name("bücher.de").unwrap(), "xn--bcher-kva.de");
        // An IP address is no domain, nor is any name whose last label is all digits; digits
        // elsewhere are fine.
        for ip in ["1.2.3.4", "192.168.1.1.", "example.123"] {
            assert!(why(ip).contains("an IP address is not a domain name"), "{ip}: {}", why(ip));
        }
        assert_eq!(normalize_name("123.com").unwrap(), "123.com");
        assert_eq!(normalize_name("10.0.0.1.example").unwrap(), "10.0.0.1.example");
    }

    #[test]
    fn names_are_relative_to_the_registrable_domain() {
        let r = records("mail.acme.co.uk", &plan());
        let names: Vec<(&str, &str)> = r.iter().map(|r| (r.name.as_str(), r.fqdn.as_str())).collect();
        assert_eq!(
            names,
            [
                ("send.mail", "send.mail.acme.co.uk"),
                ("send.mail", "send.mail.acme.co.uk"),
                ("mailroom._domainkey.mail", "mailroom._domainkey.mail.acme.co.uk"),
                ("links.mail", "links.mail.acme.co.uk"),
            ]
        );
        let top = records("acme.com", &Plan { receiving: Some("in.mailroom.example".into()), ..plan() });
        assert_eq!(top[0].name, "send");
        assert_eq!((top[3].name.as_str(), top[3].fqdn.as_str(), top[3].rtype), ("@", "acme.com", RecordType::Mx));
    }

    #[test]
    fn a_record_matches_as_dns_carries_it() {
        let r = records("acme.com", &plan());
        let ok = |v: &str| Ok(vec![(0, v.to_string())]);
        assert_eq!(check(&r[1], &ok("\"v=spf1 ip4:192.0.2.1 ~all\"")), Check::Found);
        assert_eq!(check(&r[2], &ok("v=DKIM1;k=rsa; p=MIIB")), Check::Found);
        assert_eq!(check(&r[2], &ok("v=DKIM1; k=rsa; p=OTHER")), Check::Missing);
        assert_eq!(check(&r[0], &Ok(vec![(10, "Bounces.Mailroom.Example.".into())])), Check::Found);
        assert_eq!(check(&r[0], &Ok(vec![(20, "bounces.mailroom.example".into())])), Check::Missing);
        let rx = &records("acme.com", &Plan { receiving: Some("in.mailroom.example".into()), ..plan() })[3];
        let mx = |v: &[(u16, &str)]| Ok(v.iter().map(|(p, h)| (*p, h.to_string())).collect());
        assert_eq!(check(rx, &mx(&[(10, "in.mailroom.example")])), Check::Found);
        assert_eq!(check(rx, &mx(&[(5, "in.mailroom.example"), (20, "mx.other.example")])), Check::Found);
        assert_eq!(
            check(rx, &mx(&[(10, "in.mailroom.example"), (5, "mx.other.example")])),
            Check::Missing,
            "another host is preferred: mail would not reach us"
        );
        let failed = Err(DnsError::Failed { name: "x".into(), rtype: "TXT", message: "timeout".into() });
        assert_eq!(check(&r[1], &failed), Check::Unknown, "a failed lookup is not an absence");
        assert_eq!(check(&r[1], &Err(DnsError::NotFound { name: "x".into(), rtype: "TXT" })), Check::Missing);
    }

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).unwrap() + Duration::hours(h)
    }

    #[test]
    fn pending_then_failed_after_72_hours_and_verified_then_temporary() {
        let mut r = records("acme.com", &plan()).remove(1);
        let mut step = |check: Check, at: i64| {
            let (s, since) = next_status(&r, &check, t(at));
            r.status = s;
            r.missing_since = since;
            s
        };
        assert_eq!(step(Check::Missing, 0), RecordStatus::Pending);
        assert_eq!(step(Check::Unknown, 71), RecordStatus::Pending);
        assert_eq!(step(Check::Missing, 71), RecordStatus::Pending);
        assert_eq!(step(Check::Missing, 72), RecordStatus::Failed);
        assert_eq!(step(Check::Found, 80), RecordStatus::Verified, "published late: verified after all");
        assert_eq!(step(Check::Missing, 90), RecordStatus::TemporaryFailure);
        assert_eq!(step(Check::Missing, 161), RecordStatus::TemporaryFailure);
        assert_eq!(step(Check::Missing, 162), RecordStatus::Failed);
    }

    fn status() -> impl Strategy<Value = RecordStatus> {
        prop_oneof![
            Just(RecordStatus::NotStarted),
            Just(RecordStatus::Pending),
            Just(RecordStatus::Verified),
            Just(RecordStatus::Failed),
            Just(RecordStatus::TemporaryFailure),
        ]
    }

    proptest! {
        /// The domain is verified exactly when every record is; failed exactly when every
        /// record is; a record gone after verification always shows.
        #[test]
        fn domain_status_follows_its_records(rs in proptest::collection::vec(status(), 1..6)) {
            let d = domain_status(&rs);
            prop_assert_eq!(d == DomainStatus::Verified, rs.iter().all(|s| *s == RecordStatus::Verified));
            prop_assert_eq!(d == DomainStatus::Failed, rs.iter().all(|s| *s == RecordStatus::Failed));
            if rs.contains(&RecordStatus::TemporaryFailure) {
                prop_assert_eq!(d, DomainStatus::TemporaryFailure);
            }
        }

        /// Whatever the checks, a record is failed only after 72 h missing, verified only when
        /// found at the last check, and an unknown answer never changes a known status.
        #[test]
        fn record_status_moves_only_on_evidence(checks in proptest::collection::vec((0u8..3, 0i64..40), 1..30)) {
            let mut r = records("acme.com", &plan()).remove(2);
            let mut now = 0;
            for (c, gap) in checks {
                now += gap;
                let check = [Check::Found, Check::Missing, Check::Unknown][usize::from(c)].clone();
                let before = r.status;
                let (s, since) = next_status(&r, &check, t(now));
                match check {
                    Check::Found => prop_assert_eq!(s, RecordStatus::Verified),
                    Check::Unknown if before != RecordStatus::NotStarted => prop_assert_eq!(s, before),
                    _ => {}
                }
                if s == RecordStatus::Failed {
                    prop_assert!(since.is_some_and(|m| t(now) - m >= GIVE_UP_AFTER));
                }
                r.status = s;
                r.missing_since = since;
            }
        }
    }

    #[test]
    fn checks_back_off_to_hourly_and_stop_when_settled() {
        let waits: Vec<i64> =
            (1..=9).map(|n| next_check_after(n, DomainStatus::Pending).unwrap().num_minutes()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(next_check_after(3, DomainStatus::Verified), None);
        assert_eq!(next_check_after(3, DomainStatus::Failed), None);
        assert!(next_check_after(3, DomainStatus::TemporaryFailure).is_some());
    }
}

/// A DKIM key algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DkimAlgorithm {
    /// RSA-2048 with SHA-256 (what every receiver verifies).
    #[default]
    Rsa2048,
    /// Ed25519 with SHA-256 (RFC 8463; not every receiver verifies it yet).
    Ed25519,
}

/// A generated DKIM key: the private key to sign with and the value of its DNS record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimKeyPair {
    /// The algorithm.
    pub algorithm: DkimAlgorithm,
    /// The private key, PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub private_pem: String,
    /// The TXT record's value: `v=DKIM1; k=rsa|ed25519; p=<base64>`.
    pub record: String,
}

impl std::fmt::Debug for DkimKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("DkimKeyPair").field("algorithm", &self.algorithm).field("record", &self.record).finish()
    }
}

/// Generates a DKIM key. RSA: the record carries the SubjectPublicKeyInfo (RFC 6376 §3.6.1);
/// Ed25519: the raw 32-byte public key (RFC 8463 §4.2).
pub fn generate_dkim_key(algorithm: DkimAlgorithm) -> Result<DkimKeyPair, String> {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match algorithm {
        DkimAlgorithm::Rsa2048 => {
            use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
            let key = rsa::RsaPrivateKey::new(&mut rand_core_06::OsRng, 2048).map_err(|e| e.to_string())?;
            let private_pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?.to_string();
            let public = key.to_public_key().to_public_key_der().map_err(|e| e.to_string())?;
            Ok(DkimKeyPair { algorithm, private_pem, record: format!("v=DKIM1; k=rsa; p={}", b64(public.as_bytes())) })
        }
        DkimAlgorithm::Ed25519 => {
            use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
            let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
            let private_pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?.to_string();
            let public = key.verifying_key().to_bytes();
            Ok(DkimKeyPair { algorithm, private_pem, record: format!("v=DKIM1; k=ed25519; p={}", b64(&public)) })
        }
    }
}

#[cfg(test)]
mod key_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_fresh_pkcs8_with_their_public_half_in_the_record() {
        use base64::Engine as _;
        let a = generate_dkim_key(DkimAlgorithm::Rsa2048).unwrap();
        let b = generate_dkim_key(DkimAlgorithm::Rsa2048).unwrap();
        assert_ne!(a.private_pem, b.private_pem);
        assert!(a.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let p = a.record.strip_prefix("v=DKIM1; k=rsa; p=").unwrap();
        let spki = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let public = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(&a.private_pem).unwrap();
        assert_eq!(public, private.to_public_key());
        assert_eq!(rsa::traits::PublicKeyParts::size(&public), 256, "2048 bits");
        assert!(!format!("{a:?}").contains("PRIVATE"), "Debug never shows the private key");

        let e = generate_dkim_key(DkimAlgorithm::Ed25519).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(e.record.strip_prefix("v=DKIM1; k=ed25519; p=").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
        let k = ed25519_dalek::SigningKey::from_pkcs8_pem(&e.private_pem).unwrap();
        assert_eq!(k.verifying_key().to_bytes().to_vec(), raw);
    }
}
