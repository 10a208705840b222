//! A sending domain as the store keeps it: its settings, its DKIM keys and its records with
//! their statuses; the records it must publish are always recomputed from the operator's
//! [`DomainConfig`], and the statuses carried over for the records that did not change.

use super::{DkimAlgorithm, DkimKeyPair, DnsRecord, DomainStatus, Plan, RecordPurpose, RecordStatus};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The regions the hosted service names; mailroom keeps the value (it runs where it runs).
pub const REGIONS: [&str; 4] = ["us-east-1", "eu-west-1", "sa-east-1", "ap-northeast-1"];

/// What the operator's server asks every domain to publish, and how domains are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DomainConfig {
    /// The MX host of every domain's return-path subdomain: where bounces come back (this
    /// server's inbound listener).
    pub return_path_mx: String,
    /// The SPF policy published on the return-path subdomain (`v=spf1 ip4:… ~all`).
    pub spf: String,
    /// The DKIM selector of a domain's first key; rotated keys get `-2`, `-3`, ….
    pub dkim_selector: String,
    /// The algorithm of generated keys.
    pub dkim_algorithm: DkimAlgorithm,
    /// The CNAME target of tracking hosts (this server's public host).
    pub tracking_target: String,
    /// The MX host of receiving domains.
    pub receiving_mx: String,
    /// Refuse sending from a domain that is not verified (test addresses exempt).
    pub require_verified: bool,
    /// How often a verified domain is checked again (a record removed later shows).
    pub recheck_verified: Duration,
    /// The base URL of tracking links, `{host}` standing for a domain's tracking host
    /// (default `https://{host}`).
    pub tracking_url: String,
}

impl Default for DomainConfig {
    fn default() -> Self {
        DomainConfig {
            return_path_mx: "localhost".into(),
            spf: "v=spf1 a:localhost ~all".into(),
            dkim_selector: "mailroom".into(),
            dkim_algorithm: DkimAlgorithm::Rsa2048,
            tracking_target: "localhost".into(),
            receiving_mx: "localhost".into(),
            require_verified: false,
            recheck_verified: Duration::hours(6),
            tracking_url: "https://{host}".into(),
        }
    }
}

impl DomainConfig {
    /// With the host that receives bounces and mail (the MX of return paths and receiving
    /// domains) and is the tracking target; SPF authorises it by name.
    pub fn host(mut self, host: &str) -> Self {
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        self.spf = format!("v=spf1 a:{host} ~all");
        self.return_path_mx = host.clone();
        self.tracking_target = host.clone();
        self.receiving_mx = host;
        self
    }
    /// With an SPF policy of its own.
    pub fn spf(mut self, spf: impl Into<String>) -> Self {
        self.spf = spf.into();
        self
    }
    /// With another selector for first keys.
    pub fn dkim_selector(mut self, selector: impl Into<String>) -> Self {
        self.dkim_selector = selector.into();
        self
    }
    /// Generates keys of this algorithm.
    pub fn dkim_algorithm(mut self, algorithm: DkimAlgorithm) -> Self {
        self.dkim_algorithm = algorithm;
        self
    }
    /// Refuses (or allows) sending from unverified domains.
    pub fn require_verified(mut self, on: bool) -> Self {
        self.require_verified = on;
        self
    }
    /// Another CNAME target for tracking hosts.
    pub fn tracking_target(mut self, host: impl Into<String>) -> Self {
        self.tracking_target = host.into();
        self
    }
    /// Another receiving MX.
    pub fn receiving_mx(mut self, host: impl Into<String>) -> Self {
        self.receiving_mx = host.into();
        self
    }
    /// Another return-path MX.
    pub fn return_path_mx(mut self, host: impl Into<String>) -> Self {
        self.return_path_mx = host.into();
        self
    }
    /// The base URL of tracking links (`{host}` is replaced by the tracking host).
    pub fn tracking_url(mut self, template: impl Into<String>) -> Self {
        self.tracking_url = template.into();
        self
    }
    /// How often verified domains are checked again.
    pub fn recheck_verified(mut self, every: std::time::Duration) -> Self {
        self.recheck_verified = Duration::from_std(every).unwrap_or(self.recheck_verified);
        self
    }
}

/// How a domain's mail is handed over: the hosted service's `tls` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Try TLS, fall back to plain.
    #[default]
    Opportunistic,
    /// No TLS, no send.
    Enforced,
}

/// One of a domain's DKIM keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimEntry {
    /// Its selector (`<selector>._domainkey.<domain>`).
    pub selector: String,
    /// The key.
    pub key: DkimKeyPair,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A sending (and receiving) domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Random, uuid-shaped.
    pub id: String,
    /// Bumped by every write (the store's compare-and-set): 1 when created.
    pub version: u64,
    /// The domain, lower-case, ASCII (an internationalised name in its `xn--` form).
    pub name: String,
    /// One of [`REGIONS`].
    pub region: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// Mail may be sent from it.
    pub sending: bool,
    /// Mail is received for it.
    pub receiving: bool,
    /// Open tracking is on (it works once the tracking host is verified).
    pub open_tracking: bool,
    /// Click tracking is on (likewise).
    pub click_tracking: bool,
    /// The tracking host's label (`links` → `links.<domain>`).
    pub tracking_subdomain: Option<String>,
    /// The return-path label (`send` → bounces come back to `send.<domain>`).
    pub return_path: String,
    /// TLS on hand-over.
    pub tls: TlsMode,
    /// Its DKIM keys, oldest first: the newest is published; the one signing is the newest
    /// whose record is verified (a rotation signs with the old key until the new one is).
    pub keys: Vec<DkimEntry>,
    /// The records as last checked (statuses and when each went missing).
    pub records: Vec<DnsRecord>,
    /// Checks made since verification was last requested (the backoff counts them).
    pub checks: u32,
    /// When it is checked next; `None`: only when asked.
    pub next_check: Option<DateTime<Utc>>,
    /// When it was last checked.
    pub checked_at: Option<DateTime<Utc>>,
}

impl Domain {
    /// A new domain with one fresh key, nothing checked yet.
    pub fn new(id: String, name: String, key: DkimKeyPair, config: &DomainConfig, now: DateTime<Utc>) -> Domain {
        let mut d = Domain {
            id,
            version: 1,
            name,
            region: REGIONS[0].into(),
            created_at: now,
            sending: true,
            receiving: false,
            open_tracking: false,
            click_tracking: false,
            tracking_subdomain: None,
            return_path: "send".into(),
            tls: TlsMode::Opportunistic,
            keys: vec![DkimEntry { selector: config.dkim_selector.clone(), key, created_at: now }],
            records: Vec::new(),
            checks: 0,
            next_check: None,
            checked_at: None,
        };
        d.refresh(config);
        d
    }

    /// A domain added before domains had keys and records (a name and two tracking flags):
    /// no key (verification adds one), nothing checked, its id derived from account and
    /// name so that it is the same at every read.
    pub fn legacy(
        account: &str,
        name: String,
        click_tracking: bool,
        open_tracking: bool,
        created_at: DateTime<Utc>,
    ) -> Domain {
        use sha2::{Digest, Sha256};
        let h = Sha256::new().chain_update(account).chain_update([0]).chain_update(&name).finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        Domain {
            id: uuid::Builder::from_random_bytes(b).into_uuid().to_string(),
            version: 1,
            name,
            region: REGIONS[0].into(),
            created_at,
            sending: true,
            receiving: false,
            open_tracking,
            click_tracking,
            tracking_subdomain: None,
            return_path: "send".into(),
            tls: TlsMode::Opportunistic,
            keys: Vec::new(),
            records: Vec::new(),
            checks: 0,
            next_check: None,
            checked_at: None,
        }
    }

    /// What this domain must publish now.
    fn plan(&self, config: &DomainConfig) -> Plan {
        let newest = self.keys.last();
        Plan {
            return_path: self.return_path.clone(),
            bounce_mx: config.return_path_mx.clone(),
            spf: config.spf.clone(),
            dkim_selector: newest.map_or_else(|| config.dkim_selector.clone(), |k| k.selector.clone()),
            dkim_value: newest.map_or_else(String::new, |k| k.key.record.clone()),
            tracking: self.tracking_subdomain.clone().map(|l| (l, config.tracking_target.clone())),
            receiving: self.receiving.then(|| config.receiving_mx.clone()),
        }
    }

    /// Recomputes the records from the settings and `config`: a record that did not change
    /// keeps its status; a new or changed one starts `not_started` (`pending` once checks
    /// run). The DKIM records of older keys stay while they still sign.
    pub fn refresh(&mut self, config: &DomainConfig) {
        let mut fresh = if self.keys.is_empty() {
            super::records(&self.name, &self.plan(config))
                .into_iter()
                .filter(|r| r.record != RecordPurpose::Dkim)
                .collect()
        } else {
            super::records(&self.name, &self.plan(config))
        };
        // The signing key's record, when it is not the newest (a rotation in progress).
        if let Some(i) = self.signing_index()
            && i + 1 < self.keys.len()
        {
            let k = &self.keys[i];
            let plan =
                Plan { dkim_selector: k.selector.clone(), dkim_value: k.key.record.clone(), ..self.plan(config) };
            fresh.extend(super::records(&self.name, &plan).into_iter().filter(|r| r.record == RecordPurpose::Dkim));
        }
        let same = |a: &DnsRecord, b: &DnsRecord| {
            a.record == b.record
                && a.fqdn == b.fqdn
                && a.rtype == b.rtype
                && a.value == b.value
                && a.priority == b.priority
        };
        for r in &mut fresh {
            if let Some(old) = self.records.iter().find(|o| same(o, r)) {
                r.status = old.status;
                r.missing_since = old.missing_since;
            }
        }
        self.records = fresh;
    }

    /// The key that signs: the newest whose DKIM record is verified.
    fn signing_index(&self) -> Option<usize> {
        self.keys.iter().rposition(|k| {
            self.records.iter().any(|r| {
                r.record == RecordPurpose::Dkim && r.value == k.key.record && r.status == RecordStatus::Verified
            })
        })
    }

    /// The key mail from this domain is signed with, if any is verified.
    pub fn signing_key(&self) -> Option<&DkimEntry> {
        self.signing_index().and_then(|i| self.keys.get(i))
    }

    /// Drops keys older than the signing one (their records need not stay published).
    pub fn retire_old_keys(&mut self) -> bool {
        match self.signing_index() {
            Some(i) if i > 0 => {
                self.keys.drain(..i);
                true
            }
            _ => false,
        }
    }

    fn required(&self, r: &DnsRecord) -> bool {
        match r.record {
            RecordPurpose::Spf => self.sending,
            // The signing key's record, or (none verified yet) the newest key's.
            RecordPurpose::Dkim => {
                let key = self.signing_key().or(self.keys.last());
                self.sending && key.is_some_and(|k| k.key.record == r.value)
            }
            RecordPurpose::Receiving => self.receiving,
            RecordPurpose::Tracking => false,
        }
    }

    /// The domain's status: from the records sending and receiving need (the tracking host
    /// gates tracking only; a rotation's new key, until verified, gates nothing: the old one
    /// still signs).
    pub fn status(&self) -> DomainStatus {
        let statuses: Vec<RecordStatus> = self.records.iter().filter(|r| self.required(r)).map(|r| r.status).collect();
        super::domain_status(&statuses)
    }

    /// Mail from it may be sent as verified: its return path and a key are verified.
    pub fn verified_for_sending(&self) -> bool {
        self.sending && self.spf_verified() && self.signing_key().is_some()
    }

    /// Both SPF records are verified: bounces may come back to the return-path subdomain.
    pub fn spf_verified(&self) -> bool {
        let mut spf = self.records.iter().filter(|r| r.record == RecordPurpose::Spf).peekable();
        spf.peek().is_some() && spf.all(|r| r.status == RecordStatus::Verified)
    }

    /// The tracking host, once its CNAME is verified.
    pub fn tracking_host(&self) -> Option<&str> {
        self.records
            .iter()
            .find(|r| r.record == RecordPurpose::Tracking && r.status == RecordStatus::Verified)
            .map(|r| r.fqdn.as_str())
    }

    /// The key mail from this domain is signed with, as transports take it.
    pub fn signing(&self) -> Option<crate::ports::SigningKey> {
        self.signing_key().map(|k| crate::ports::SigningKey {
            domain: self.name.clone(),
            selector: k.selector.clone(),
            algorithm: k.key.algorithm,
            private_pem: k.key.private_pem.clone(),
        })
    }

    /// The return-path host (`send.<domain>`).
    pub fn return_path_host(&self) -> String {
        format!("{}.{}", self.return_path, self.name)
    }

    /// The domain without its private keys (what the event log and webhooks carry).
    pub fn public(&self) -> Domain {
        Domain { keys: Vec::new(), ..self.clone() }
    }

    /// Verification asked for: every record not verified is checked again from now, with a
    /// fresh 72 hours.
    pub fn restart_checks(&mut self, now: DateTime<Utc>) {
        for r in &mut self.records {
            // A temporary failure keeps its 72 hours: asking again does not extend them.
            if matches!(r.status, RecordStatus::NotStarted | RecordStatus::Pending | RecordStatus::Failed) {
                r.status = RecordStatus::Pending;
                r.missing_since = None;
            }
        }
        self.checks = 0;
        self.next_check = Some(now);
    }
}
