//! The engine's side of domains for one account: add (with a fresh DKIM key), read, list,
//! change, remove, ask for verification, rotate the key; and the domain's JSON as the hosted
//! service shows it.

use super::{DkimAlgorithm, DkimEntry, Domain, DomainConfig, REGIONS, TlsMode, generate_dkim_key};
use crate::email::{rfc3339, wire_time};
use crate::engine::Engine;
use crate::error::{Error, FieldError, Rule, StorageError, quoted};
use crate::events::DomainEvent;
use crate::ports::{DnsResolver, DomainStore};
use serde_json::{Value, json};

/// Domains one account may have (each is read when its account lists them).
pub const MAX_DOMAINS: usize = 1000;

/// A domain to add. Only `name` is required.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NewDomain {
    /// The domain.
    pub name: String,
    /// One of [`REGIONS`] (default `us-east-1`).
    pub region: Option<String>,
    /// The return-path label (default `send`).
    pub custom_return_path: Option<String>,
    /// Changes to the capabilities (sending on, receiving off by default).
    pub sending: Option<bool>,
    /// Receiving on.
    pub receiving: Option<bool>,
    /// Open tracking.
    pub open_tracking: Option<bool>,
    /// Click tracking.
    pub click_tracking: Option<bool>,
    /// TLS on hand-over.
    pub tls: Option<TlsMode>,
    /// The tracking host's label.
    pub tracking_subdomain: Option<String>,
    /// The key's algorithm (default: the server's).
    pub dkim_algorithm: Option<DkimAlgorithm>,
}

impl NewDomain {
    /// `name` with every default.
    pub fn new(name: impl Into<String>) -> Self {
        NewDomain { name: name.into(), ..Self::default() }
    }
}

/// Changes to a domain; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DomainUpdate {
    /// Open tracking.
    pub open_tracking: Option<bool>,
    /// Click tracking.
    pub click_tracking: Option<bool>,
    /// TLS on hand-over.
    pub tls: Option<TlsMode>,
    /// Sending on or off.
    pub sending: Option<bool>,
    /// Receiving on or off.
    pub receiving: Option<bool>,
    /// A new tracking host label (it can be changed, not removed).
    pub tracking_subdomain: Option<String>,
}

impl DomainUpdate {
    /// No change.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A domain name as stored: trimmed, without the final dot, lower-case ASCII (an
/// internationalised name in its `xn--` form), with a registrable part under a public suffix.
pub fn normalize_name(raw: &str) -> Result<String, FieldError> {
    let bad = |why: &str| FieldError::new("name", Rule::Shape(format!("{} is not a domain name: {why}", quoted(raw))));
    let trimmed = raw.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(FieldError::new("name", Rule::Empty));
    }
    // Longer than any name IDNA could bring under 253: refused before it is converted.
    if trimmed.len() > 1024 {
        return Err(FieldError::new("name", Rule::TooLong { max: 253, got: trimmed.chars().count() }));
    }
    // An ASCII name's labels are judged before IDNA's conversion, which refuses an empty, long
    // or hyphen-edged label too but would say only that it does not encode; its output for an
    // ASCII name is the same labels, lower-cased, so they are judged once. Other names' labels
    // are judged in their converted form.
    let was_ascii = trimmed.is_ascii();
    if was_ascii {
        for label in trimmed.to_ascii_lowercase().split('.') {
            check_label(label).map_err(|why| bad(&why))?;
        }
        // Its length too: IDNA refuses a name over 253 characters but says only that it
        // does not encode.
        if trimmed.len() > 253 {
            return Err(FieldError::new("name", Rule::TooLong { max: 253, got: trimmed.len() }));
        }
    }
    let ascii = idna::domain_to_ascii_strict(trimmed).map_err(|_| bad("it does not encode as IDNA"))?;
    if ascii.len() > 253 {
        return Err(FieldError::new("name", Rule::TooLong { max: 253, got: ascii.len() }));
    }
    if !was_ascii {
        for label in ascii.split('.') {
            check_label(label).map_err(|why| bad(&why))?;
        }
    }
    // A top-level label of digits only is no domain (RFC 3696 §2): `1.2.3.4` is an IPv4
    // address, and the public suffix list's default rule would give it a registrable part
    // (`3.4`) and records under it. Mail from such a name is refused too (`address`).
    if ascii.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad("its last label is all digits (an IP address is not a domain name)"));
    }
    match psl::domain_str(&ascii) {
        Some(_) => Ok(ascii),
        None => Err(bad("it has no registrable part (a name under a public suffix)")),
    }
}

/// One DNS label: 1 to 63 letters, digits and `-`, not at either end.
fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > 63 {
        return Err(format!("a label must be 1 to 63 characters, got {}", label.len()));
    }
    if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(format!("{label:?} may hold only letters, digits and `-`"));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("{label:?} may not begin or end with `-`"));
    }
    Ok(())
}

/// A subdomain label a client chose (`custom_return_path`, `tracking_subdomain`).
fn subdomain(field: &str, raw: &str) -> Result<String, FieldError> {
    let label = raw.trim().to_ascii_lowercase();
    check_label(&label).map_err(|why| FieldError::new(field, Rule::Shape(why)))?;
    Ok(label)
}

fn region(raw: &str) -> Result<String, FieldError> {
    if REGIONS.contains(&raw) {
        Ok(raw.to_string())
    } else {
        Err(FieldError::new("region", Rule::Region(raw.chars().take(64).collect())))
    }
}

fn unsupported() -> Error {
    Error::Storage(StorageError::Backend("this store keeps no domains".into()))
}

/// A domain that kept changing under a request ([`RETRIES`] times).
fn busy() -> Error {
    Error::Storage(StorageError::Backend("the domain kept changing during the request; try again".into()))
}

fn not_found() -> Error {
    Error::NotFound { what: "Domain" }
}

/// Writes that lose a compare-and-set to a concurrent one are read again and redone; a
/// domain changed this often by others is a conflict worth reporting.
const RETRIES: usize = 8;

impl Engine {
    fn domain_store(&self) -> Result<&dyn DomainStore, Error> {
        self.storage().domains().ok_or_else(unsupported)
    }

    /// A fresh key. Why off the async threads: an RSA-2048 key takes tens of milliseconds
    /// (sometimes hundreds) to find.
    async fn new_key(&self, algorithm: DkimAlgorithm) -> Result<super::DkimKeyPair, Error> {
        tokio::task::spawn_blocking(move || generate_dkim_key(algorithm))
            .await
            .map_err(|e| Error::Storage(StorageError::Backend(e.to_string())))?
            .map_err(|e| Error::Storage(StorageError::Backend(format!("generating a DKIM key failed: {e}"))))
    }

    /// The operator's settings for domains.
    pub fn domain_config(&self) -> &DomainConfig {
        self.domain_settings()
    }

    /// Adds a domain with a fresh DKIM key; its records are to be published, nothing is
    /// checked until verification is asked for.
    pub async fn create_domain(&self, new: NewDomain) -> Result<Domain, Error> {
        let name = normalize_name(&new.name)?;
        let region = new.region.as_deref().map(region).transpose()?;
        let return_path = new.custom_return_path.as_deref().map(|r| subdomain("custom_return_path", r)).transpose()?;
        let tracking = new.tracking_subdomain.as_deref().map(|t| subdomain("tracking_subdomain", t)).transpose()?;
        let store = self.domain_store()?;
        let over_the_cap = || async {
            let count = store.domain_list(self.account()).await?.len();
            if count >= MAX_DOMAINS {
                return Err(FieldError::new("domains", Rule::TooMany { max: MAX_DOMAINS, got: count + 1 }).into());
            }
            Ok::<_, Error>(())
        };
        // Counted before the key is made (an account at its cap is refused without the cost of
        // an RSA key), and again under the lock, which is not held while the key is made: the
        // lock is shared, and an RSA key takes a while.
        over_the_cap().await?;
        let config = self.domain_config();
        let algorithm = new.dkim_algorithm.unwrap_or(config.dkim_algorithm);
        let key = self.new_key(algorithm).await?;
        let _creating = self.creating().await?;
        over_the_cap().await?;
        let now = self.clock().now();
        let mut d = Domain::new(uuid::Uuid::new_v4().to_string(), name, key, config, now);
        d.region = region.unwrap_or(d.region);
        d.return_path = return_path.unwrap_or(d.return_path);
        d.sending = new.sending.unwrap_or(true);
        d.receiving = new.receiving.unwrap_or(false);
        d.open_tracking = new.open_tracking.unwrap_or(false);
        d.click_tracking = new.click_tracking.unwrap_or(false);
        d.tls = new.tls.unwrap_or_default();
        d.tracking_subdomain = tracking;
        d.refresh(config);
        if !store.domain_put(self.account(), d.clone(), Some((DomainEvent::Created, now))).await? {
            return Err(
                FieldError::new("name", Rule::Shape(format!("the domain {} has been added already", d.name))).into()
            );
        }
        Ok(d)
    }

    /// The domain `id`, its records as this server asks for them now.
    pub async fn domain(&self, id: &str) -> Result<Domain, Error> {
        let mut d = self.domain_store()?.domain_by_id(self.account(), id).await?.ok_or_else(not_found)?;
        d.refresh(self.domain_config());
        Ok(d)
    }

    /// The domain named `name` (any letter case, with or without the final dot), if added.
    pub async fn domain_named(&self, name: &str) -> Result<Option<Domain>, Error> {
        let Some(store) = self.storage().domains() else { return Ok(None) };
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut d = store.domain_get(self.account(), &name).await?;
        if let Some(d) = &mut d {
            d.refresh(self.domain_config());
        }
        Ok(d)
    }

    /// This account's domains, newest first.
    pub async fn domains(&self) -> Result<Vec<Domain>, Error> {
        let Some(store) = self.storage().domains() else { return Ok(Vec::new()) };
        let mut all = store.domain_list(self.account()).await?;
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        for d in &mut all {
            d.refresh(self.domain_config());
        }
        Ok(all)
    }

    /// Reads domain `id`, applies `change`, writes it over the version read (again on a
    /// concurrent change). `change` answers whether anything changed and what to log.
    async fn modify_domain(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Domain) -> Result<Option<DomainEvent>, Error>,
    ) -> Result<Domain, Error> {
        let store = self.domain_store()?;
        for _ in 0..RETRIES {
            let mut d = store.domain_by_id(self.account(), id).await?.ok_or_else(not_found)?;
            d.refresh(self.domain_config());
            let event = change(&mut d)?;
            d.version += 1;
            let at = self.clock().now();
            if store.domain_put(self.account(), d.clone(), event.map(|e| (e, at))).await? {
                return Ok(d);
            }
        }
        Err(busy())
    }

    /// Changes a domain's settings. A new tracking host or receiving on adds its record.
    pub async fn update_domain(&self, id: &str, update: DomainUpdate) -> Result<Domain, Error> {
        let tracking = update.tracking_subdomain.as_deref().map(|t| subdomain("tracking_subdomain", t)).transpose()?;
        let config = self.domain_config().clone();
        let now = self.clock().now();
        self.modify_domain(id, |d| {
            let before = d.clone();
            d.open_tracking = update.open_tracking.unwrap_or(d.open_tracking);
            d.click_tracking = update.click_tracking.unwrap_or(d.click_tracking);
            d.tls = update.tls.unwrap_or(d.tls);
            d.sending = update.sending.unwrap_or(d.sending);
            d.receiving = update.receiving.unwrap_or(d.receiving);
            if tracking.is_some() {
                d.tracking_subdomain.clone_from(&tracking);
            }
            d.refresh(&config);
            // A new record is looked for at once if checks are running.
            if d.records != before.records && d.next_check.is_some() {
                d.checks = 0;
                d.next_check = Some(now);
            }
            Ok((*d != before).then_some(DomainEvent::Updated))
        })
        .await
    }

    /// Removes a domain (its key with it: mail from it is no longer signed).
    pub async fn delete_domain(&self, id: &str) -> Result<Domain, Error> {
        let store = self.domain_store()?;
        let d = store.domain_by_id(self.account(), id).await?.ok_or_else(not_found)?;
        if !store.domain_delete(self.account(), &d.name, self.clock().now()).await? {
            return Err(not_found());
        }
        Ok(d)
    }

    /// Asks for verification: the records not verified are looked for from now on (soon,
    /// then less often), with 72 hours to appear.
    pub async fn verify_domain(&self, id: &str) -> Result<Domain, Error> {
        let now = self.clock().now();
        // A domain added before domains had keys gets its first one now.
        let key = match self.domain(id).await?.keys.is_empty() {
            true => Some(self.new_key(self.domain_config().dkim_algorithm).await?),
            false => None,
        };
        let config = self.domain_config().clone();
        self.modify_domain(id, |d| {
            let before = d.status();
            if let (true, Some(key)) = (d.keys.is_empty(), &key) {
                d.keys.push(DkimEntry { selector: config.dkim_selector.clone(), key: key.clone(), created_at: now });
                d.refresh(&config);
            }
            d.restart_checks(now);
            Ok((d.status() != before).then_some(DomainEvent::Updated))
        })
        .await
    }

    /// Checks domain `id` now through `dns` (the command line's `domains verify`).
    pub async fn check_domain_now(&self, id: &str, dns: &dyn DnsResolver) -> Result<Domain, Error> {
        let store = self.domain_store()?;
        let config = self.domain_config().clone();
        for _ in 0..RETRIES {
            let mut d = store.domain_by_id(self.account(), id).await?.ok_or_else(not_found)?;
            if d.checks == 0 && d.next_check.is_none() {
                d.restart_checks(self.clock().now());
            }
            let now = self.clock().now();
            let changed = super::check_domain(&mut d, dns, &config, now).await;
            d.version += 1;
            if store.domain_put(self.account(), d.clone(), changed.then_some((DomainEvent::Updated, now))).await? {
                return Ok(d);
            }
        }
        Err(busy())
    }

    /// Rotates the DKIM key: a new key under a new selector is published beside the old one,
    /// which keeps signing until the new record is verified (then the old one is dropped).
    pub async fn rotate_domain_key(&self, id: &str) -> Result<Domain, Error> {
        let current = self.domain(id).await?;
        let algorithm = current.keys.last().map_or(self.domain_config().dkim_algorithm, |k| k.key.algorithm);
        let key = self.new_key(algorithm).await?;
        let base = self.domain_config().dkim_selector.clone();
        let config = self.domain_config().clone();
        let now = self.clock().now();
        self.modify_domain(id, |d| {
            let n = d.keys.len() + 1;
            let mut selector = format!("{base}-{n}");
            let mut i = n;
            while d.keys.iter().any(|k| k.selector == selector) {
                i += 1;
                selector = format!("{base}-{i}");
            }
            // Only one rotation at a time: an unverified newest key is replaced.
            if d.keys.len() > 1 && d.signing_key().is_some_and(|s| Some(s) != d.keys.last()) {
                d.keys.pop();
            }
            d.keys.push(DkimEntry { selector, key: key.clone(), created_at: now });
            d.refresh(&config);
            // The new record is looked for at once, then with the usual backoff.
            if d.next_check.is_some() || d.checks > 0 {
                d.checks = 0;
                d.next_check = Some(now);
            }
            Ok(Some(DomainEvent::Updated))
        })
        .await
    }
}

/// What mail from one sending domain goes out with: the key it is signed with, the host its
/// bounces come back to, whether TLS is required; taken from the domain that governs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sender {
    /// The verified DKIM key.
    pub key: Option<std::sync::Arc<crate::ports::SigningKey>>,
    /// The return-path host (`send.<domain>`), once its SPF records are verified.
    pub return_path: Option<String>,
    /// TLS enforced.
    pub require_tls: bool,
    /// The domain is verified for sending.
    pub verified: bool,
    /// Open and click tracking, once the tracking host is verified and either is on.
    pub tracking: Option<crate::tracking::Tracking>,
    /// The verified tracking host's base URL (unsubscribe links go there when it exists).
    pub link_base: Option<String>,
}

/// The domain that governs mail from `domain` in `account`: itself if added, else its
/// nearest added parent below the public suffix (a subdomain's mail aligns with its parent's
/// under DMARC's relaxed rules).
pub async fn governing_domain(
    store: &dyn DomainStore,
    account: &crate::email::AccountId,
    domain: &str,
) -> Result<Option<Domain>, StorageError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    for name in governing_names(&domain) {
        if let Some(d) = store.domain_get(account, name).await? {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// The names that may govern mail from `domain` (lower-cased, no trailing dot), nearest
/// first: itself, then each parent down to the registrable domain below the public suffix;
/// none when it has no registrable domain. What [`governing_domain`] looks up, and what the
/// email metrics match against an account's domains read at once.
pub fn governing_names(domain: &str) -> impl Iterator<Item = &str> {
    let zone = psl::domain_str(domain).map_or(usize::MAX, str::len);
    std::iter::successors(Some(domain), |name| name.split_once('.').map(|(_, parent)| parent))
        .take_while(move |name| name.len() >= zone)
}

impl Sender {
    /// How mail from `d` goes out, tracking links on `config`'s base URL.
    pub fn of(d: &Domain, config: &DomainConfig) -> Sender {
        let link_base =
            d.tracking_host().map(|h| config.tracking_url.replace("{host}", h).trim_end_matches('/').to_string());
        let tracking = link_base
            .clone()
            .filter(|_| d.open_tracking || d.click_tracking)
            .map(|base| crate::tracking::Tracking { base, open: d.open_tracking, click: d.click_tracking });
        Sender {
            tracking,
            link_base,
            key: d.signing().map(std::sync::Arc::new),
            return_path: d.spf_verified().then(|| d.return_path_host()),
            require_tls: d.tls == TlsMode::Enforced,
            verified: d.verified_for_sending(),
        }
    }
}

impl Engine {
    /// Refuses requests sent from a domain that is not verified, when the operator requires
    /// it; mail only to test addresses, and mail from the test domain, is exempt (it never
    /// leaves the machine). A `from` that does not parse is left to validation.
    pub(crate) async fn check_verified_senders(&self, requests: &[crate::request::EmailRequest]) -> Result<(), Error> {
        if !self.domain_config().require_verified {
            return Ok(());
        }
        let test_domain = self.test_domain().to_string();
        let only_tests = |r: &crate::request::EmailRequest| {
            let all: Vec<&String> =
                [&r.to, &r.cc, &r.bcc].into_iter().flatten().flat_map(|l| l.as_slice().iter()).collect();
            !all.is_empty()
                && all.iter().all(|a| {
                    crate::address::Mailbox::parse(a)
                        .is_ok_and(|m| crate::sandbox::TestAddress::parse(&m.key(), &test_domain).is_some())
                })
        };
        let mut checked: Vec<String> = Vec::new();
        for r in requests {
            let Some(from) = r.from.as_deref().and_then(|f| crate::address::Mailbox::parse(f).ok()) else { continue };
            if from.domain == test_domain || only_tests(r) || checked.contains(&from.domain) {
                continue;
            }
            let verified = match self.storage().domains() {
                Some(store) => governing_domain(store, self.account(), &from.domain).await?.is_some_and(|mut d| {
                    d.refresh(self.domain_config());
                    d.verified_for_sending()
                }),
                None => false,
            };
            if !verified {
                return Err(Error::Forbidden(format!(
                    "The {} domain is not verified. Please, add and verify your domain.",
                    from.domain
                )));
            }
            checked.push(from.domain);
        }
        Ok(())
    }
}

/// `records[]` as the hosted service shows them.
pub fn records_json(d: &Domain) -> Vec<Value> {
    d.records
        .iter()
        .map(|r| {
            let mut v = json!({
                "record": r.record,
                "name": r.name,
                "type": r.rtype,
                "ttl": "Auto",
                "status": r.status,
                "value": r.value,
            });
            if let (Some(p), Some(o)) = (r.priority, v.as_object_mut()) {
                o.insert("priority".into(), json!(p));
            }
            v
        })
        .collect()
}

/// The fields every view of a domain has.
pub fn domain_json(d: &Domain) -> Value {
    let on = |b: bool| if b { "enabled" } else { "disabled" };
    json!({
        "id": d.id,
        "name": d.name,
        "status": d.status(),
        "created_at": wire_time(d.created_at),
        "region": d.region,
        "capabilities": {"sending": on(d.sending), "receiving": on(d.receiving)},
        "open_tracking": d.open_tracking,
        "click_tracking": d.click_tracking,
        "tracking_subdomain": d.tracking_subdomain,
    })
}

/// The `data` of `domain.*` webhooks: the domain with its records.
pub fn domain_event_json(d: &Domain) -> Value {
    let mut v = domain_json(d);
    if let Some(o) = v.as_object_mut() {
        o.insert("created_at".into(), json!(rfc3339(d.created_at)));
        o.insert("records".into(), Value::Array(records_json(d)));
    }
    v
}
