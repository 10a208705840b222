//! Checking a domain's records through the [`DnsResolver`] port, and the task that checks
//! every domain when it is due: soon and then less often until verified (1, 2, 4 … minutes,
//! then hourly), `failed` after 72 hours unfound, a verified domain again every few hours so
//! that a record removed later shows (`temporary_failure`, then `failed`).

use super::{Check, Domain, DomainConfig, DomainStatus, RecordStatus, RecordType, next_check_after, next_status};
use crate::email::AccountId;
use crate::error::Error;
use crate::events::DomainEvent;
use crate::ports::{Clock, DnsResolver, Storage};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Looks up every record of `domain` once and moves its statuses; schedules the next check.
/// Returns whether anything a client sees changed (a status, the signing key).
pub async fn check_domain(
    domain: &mut Domain,
    dns: &dyn DnsResolver,
    config: &DomainConfig,
    now: DateTime<Utc>,
) -> bool {
    domain.refresh(config);
    let before: Vec<RecordStatus> = domain.records.iter().map(|r| r.status).collect();
    let before_status = domain.status();
    for r in &mut domain.records {
        let answer = match r.rtype {
            RecordType::Mx => {
                dns.mx(&r.fqdn).await.map(|v| v.into_iter().map(|m| (m.preference, m.exchange)).collect())
            }
            RecordType::Txt => dns.txt(&r.fqdn).await.map(|v| v.into_iter().map(|t| (0, t)).collect()),
            RecordType::Cname => dns.cname(&r.fqdn).await.map(|v| v.into_iter().map(|t| (0, t)).collect()),
        };
        let found: Check = super::check(r, &answer);
        (r.status, r.missing_since) = next_status(r, &found, now);
    }
    // A rotation completes when the new key verifies: the old one stops being published.
    let retired = domain.retire_old_keys();
    domain.refresh(config);
    domain.checks = domain.checks.saturating_add(1);
    domain.checked_at = Some(now);
    let status = domain.status();
    // Soon again while any record (a tracking host, a rotated key's) is still being looked
    // for; a verified domain every few hours; one that has only failures left, when asked.
    let waiting = domain
        .records
        .iter()
        .any(|r| matches!(r.status, RecordStatus::NotStarted | RecordStatus::Pending | RecordStatus::TemporaryFailure));
    domain.next_check = match status {
        _ if waiting => next_check_after(domain.checks, DomainStatus::Pending).map(|d| now + d),
        DomainStatus::Verified => Some(now + config.recheck_verified),
        _ => None,
    };
    let after: Vec<RecordStatus> = domain.records.iter().map(|r| r.status).collect();
    retired || before != after || before_status != status
}

/// Checks domains as they fall due, across accounts.
#[derive(Debug, Clone)]
pub struct Verifier {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    dns: Arc<dyn DnsResolver>,
    config: DomainConfig,
    poll: Duration,
}

impl Verifier {
    /// A verifier over `storage` (which must keep domains), with the engine's clock and
    /// domain settings.
    pub fn new(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        dns: Arc<dyn DnsResolver>,
        config: DomainConfig,
    ) -> Verifier {
        Verifier { storage, clock, dns, config, poll: Duration::from_secs(1) }
    }

    /// How often it looks for due domains (default every second).
    pub fn poll(mut self, every: Duration) -> Verifier {
        self.poll = every;
        self
    }

    /// Checks up to 32 due domains; how many were checked.
    pub async fn run_once(&self) -> Result<usize, Error> {
        let Some(store) = self.storage.domains() else { return Ok(0) };
        let now = self.clock.now();
        let due = store.domains_due(now, 32).await?;
        let n = due.len();
        // Why one at a time: lookups are cheap and cached, and a domain is rarely due; a slow
        // nameserver then delays the next domain rather than holding many requests open.
        for (account, domain) in due {
            self.check_one(&account, domain).await?;
        }
        Ok(n)
    }

    async fn check_one(&self, account: &AccountId, mut domain: Domain) -> Result<(), Error> {
        let Some(store) = self.storage.domains() else { return Ok(()) };
        let now = self.clock.now();
        let changed = check_domain(&mut domain, self.dns.as_ref(), &self.config, now).await;
        domain.version += 1;
        // Lost to a concurrent change (an update, a verify request): that change set its own
        // next check, and the domain is looked at again then.
        store.domain_put(account, domain, changed.then_some((DomainEvent::Updated, now))).await?;
        Ok(())
    }

    /// Runs until `shutdown` completes.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let pause = match self.run_once().await {
                Ok(32) => Duration::ZERO,
                Ok(_) => self.poll,
                Err(e) => {
                    tracing::warn!(error = %e, "checking domains failed");
                    self.poll.max(Duration::from_secs(5))
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}
