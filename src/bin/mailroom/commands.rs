//! The commands that read or change the database, as data: the command line builds a
//! [`Request`] (with its inputs read), and [`execute`] runs it against an engine — the
//! command line's own, or a running server's when it holds the database (through the admin
//! socket). Either way the answer is the same JSON.

use mailroom::core::email::{EmailId, PageRequest};
use mailroom::core::ports::{KeyPermission, SuppressionReason};
use mailroom::core::request::{EmailRequest, batch_from_json};
use mailroom::core::{BatchMode, BatchOptions, Engine, Error, FieldError, Rule, SendOptions};
use mailroom::dns::HickoryResolver;
use mailroom::redb::RedbStorage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The engine refused (a typed error with its catalogue body).
    Engine(Error),
    /// The command's input or the situation is wrong (a bad domain name, a file that cannot be
    /// read, a database in use); said in words.
    Usage(String),
    /// A running server's answer, through the admin socket (already an error body).
    Remote(Value),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Engine(e)
    }
}

impl From<mailroom::core::FieldError> for Failure {
    fn from(e: mailroom::core::FieldError) -> Self {
        Failure::Engine(e.into())
    }
}

impl From<mailroom::core::StorageError> for Failure {
    fn from(e: mailroom::core::StorageError) -> Self {
        Failure::Engine(e.into())
    }
}

impl Failure {
    /// The error body the command line prints.
    pub fn body(&self) -> Value {
        match self {
            Failure::Engine(e) => serde_json::to_value(e.body()).unwrap_or(Value::Null),
            Failure::Usage(m) => json!({"statusCode": 400, "name": "validation_error", "message": m}),
            Failure::Remote(body) => body.clone(),
        }
    }
}

/// A command with its inputs already read (so that a server can run it for the command line).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Send {
        body: String,
        idempotency_key: Option<String>,
    },
    Batch {
        body: String,
        permissive: bool,
        idempotency_key: Option<String>,
    },
    Get {
        id: String,
    },
    List {
        limit: Option<usize>,
        after: Option<String>,
        before: Option<String>,
    },
    /// The query parameters of `GET /emails/metrics`.
    Metrics {
        query: std::collections::BTreeMap<String, String>,
    },
    Usage,
    Reschedule {
        id: String,
        when: String,
    },
    Cancel {
        id: String,
    },
    /// One page: the whole list could be millions of entries, read into one answer (also by a
    /// running server, through its admin socket).
    SuppressionsList {
        limit: Option<usize>,
        after: Option<String>,
        before: Option<String>,
        origin: Option<String>,
    },
    SuppressionsAdd {
        address: String,
        reason: String,
    },
    SuppressionsRemove {
        address: String,
    },
    DomainsAdd {
        domain: String,
        options: DomainOptions,
    },
    DomainsList,
    DomainsShow {
        domain: String,
    },
    DomainsVerify {
        domain: String,
        dns: Option<SocketAddr>,
    },
    DomainsRotateKey {
        domain: String,
    },
    DomainsRemove {
        domain: String,
    },
    KeysCreate {
        name: String,
        sending_access: bool,
        domain: Option<String>,
    },
    KeysList,
    KeysRevoke {
        id: String,
    },
    Insights {
        id: Option<String>,
        draft: Option<String>,
        dns: Option<SocketAddr>,
    },
    IngestBounce {
        message: Vec<u8>,
    },
    Prune {
        older_than_days: u32,
    },
    Backup {
        path: PathBuf,
    },
    WebhooksAdd {
        url: String,
        events: Vec<String>,
    },
    WebhooksList,
    EventsAfter {
        after: u64,
        limit: usize,
    },
}

impl Request {
    /// Whether the command only reads or changes what a database already holds, so that on
    /// a database file that does not exist it has nothing to do. Why it matters: opening a
    /// file creates it, so `mailroom list --db typo.redb` made an empty database and printed
    /// an empty list, a typo answered as if the data were gone.
    pub fn needs_a_database(&self) -> bool {
        !matches!(
            self,
            Request::Send { .. }
                | Request::Batch { .. }
                | Request::SuppressionsAdd { .. }
                | Request::DomainsAdd { .. }
                | Request::KeysCreate { .. }
                | Request::WebhooksAdd { .. }
                | Request::IngestBounce { .. }
                | Request::Insights { id: None, .. }
        )
    }

    /// The command's name, as the wire tags it (`send`, `keys-create`…).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Send { .. } => "send",
            Request::Batch { .. } => "batch",
            Request::Get { .. } => "get",
            Request::List { .. } => "list",
            Request::Metrics { .. } => "metrics",
            Request::Usage => "usage",
            Request::Reschedule { .. } => "reschedule",
            Request::Cancel { .. } => "cancel",
            Request::SuppressionsList { .. } => "suppressions-list",
            Request::SuppressionsAdd { .. } => "suppressions-add",
            Request::SuppressionsRemove { .. } => "suppressions-remove",
            Request::DomainsAdd { .. } => "domains-add",
            Request::DomainsList => "domains-list",
            Request::DomainsShow { .. } => "domains-show",
            Request::DomainsVerify { .. } => "domains-verify",
            Request::DomainsRotateKey { .. } => "domains-rotate-key",
            Request::DomainsRemove { .. } => "domains-remove",
            Request::KeysCreate { .. } => "keys-create",
            Request::KeysList => "keys-list",
            Request::KeysRevoke { .. } => "keys-revoke",
            Request::Insights { .. } => "insights",
            Request::IngestBounce { .. } => "ingest-bounce",
            Request::Prune { .. } => "prune",
            Request::Backup { .. } => "backup",
            Request::WebhooksAdd { .. } => "webhooks-add",
            Request::WebhooksList => "webhooks-list",
            Request::EventsAfter { .. } => "events-after",
        }
    }
}

/// A new domain's settings, as the command line takes them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DomainOptions {
    pub click_tracking: bool,
    pub open_tracking: bool,
    pub receiving: bool,
    pub tracking_subdomain: Option<String>,
    pub return_path: Option<String>,
    pub ed25519: bool,
}

/// A domain as the command line prints it: the API's view with its records.
fn domain_view(d: &mailroom::core::domains::Domain) -> Value {
    let mut v = mailroom::core::domains::domain_json(d);
    v["object"] = json!("domain");
    v["records"] = json!(mailroom::core::domains::records_json(d));
    v["signing_selector"] = json!(d.signing_key().map(|k| k.selector.clone()));
    v
}

/// The domain the command line names (by name, not id).
async fn named_domain(engine: &Engine, name: &str) -> Result<mailroom::core::domains::Domain, Failure> {
    engine.domain_named(name).await?.ok_or(Failure::Engine(Error::NotFound { what: "Domain" }))
}

/// What a command runs against.
#[derive(Debug, Clone)]
pub struct Context {
    pub engine: Engine,
    /// The redb store itself (for backups); `None` on PostgreSQL, whose backups are its own.
    pub store: Option<RedbStorage>,
    /// The configured nameserver.
    pub dns: Option<SocketAddr>,
    /// The configured rate limits (what `usage` reports, as `GET /usage` does).
    pub rate_limits: mailroom::http::RateLimits,
}

fn resolver(dns: Option<SocketAddr>) -> Result<HickoryResolver, Failure> {
    match dns {
        Some(addr) => Ok(HickoryResolver::with_nameserver(addr)),
        None => HickoryResolver::system().map_err(|e| Failure::Usage(e.to_string())),
    }
}

/// Runs `request`; the JSON the command prints.
pub async fn execute(ctx: &Context, request: Request) -> Result<Value, Failure> {
    let engine = &ctx.engine;
    let out = match request {
        Request::Send { body, idempotency_key } => {
            let request = EmailRequest::from_json_limited(body.as_bytes(), engine.limits().max_email_bytes)?;
            json!(engine.send(request, SendOptions::keyed(idempotency_key)).await?)
        }
        Request::Batch { body, permissive, idempotency_key } => {
            let requests = batch_from_json(body.as_bytes())?;
            let mode = if permissive { BatchMode::Permissive } else { BatchMode::Strict };
            json!(engine.send_batch(requests, BatchOptions::new(mode).keyed(idempotency_key)).await?)
        }
        Request::Get { id } => json!(engine.get(id.parse::<EmailId>()?).await?),
        Request::List { limit, after, before } => {
            let after = after.as_deref().map(|a| EmailId::parse_as("after", a)).transpose()?;
            let before = before.as_deref().map(|b| EmailId::parse_as("before", b)).transpose()?;
            json!(engine.list(PageRequest::new(limit, after, before)?).await?)
        }
        Request::Metrics { query } => {
            let query =
                mailroom::core::email_metrics::MetricsQuery::parse(&query.into_iter().collect(), engine.clock().now())?;
            engine.email_metrics(&query).await?
        }
        Request::Usage => engine.usage().await?.to_json(ctx.rate_limits.for_keys()),
        Request::Reschedule { id, when } => json!(engine.reschedule(id.parse::<EmailId>()?, &when).await?),
        Request::Cancel { id } => json!(engine.cancel(id.parse::<EmailId>()?).await?),
        Request::SuppressionsList { limit, after, before, origin } => {
            use mailroom::core::suppressions::{Cursor, Origin, PageQuery};
            // The same checks as the page size of `list` (1 to 100, one cursor at most).
            let limit = PageRequest::new(limit, None, None)?.limit;
            let cursor = match (after, before) {
                (Some(_), Some(_)) => return Err(FieldError::new("before", Rule::Exclusive("after")).into()),
                (Some(a), None) => Cursor::After(a),
                (None, Some(b)) => Cursor::Before(b),
                (None, None) => Cursor::Start,
            };
            let origin = origin
                .map(|o| {
                    Origin::parse(&o).ok_or_else(|| {
                        FieldError::new("origin", Rule::Shape("bounce, complaint, manual or unsubscribe".into()))
                    })
                })
                .transpose()?;
            let page = engine.suppressions_page(&PageQuery { limit, cursor, origin }).await?;
            let data: Vec<Value> =
                page.data.iter().map(|e| mailroom::core::suppressions::json(engine.account(), e)).collect();
            json!({"object": "list", "has_more": page.has_more, "data": data})
        }
        Request::SuppressionsAdd { address, reason } => {
            let reason =
                if reason == "complained" { SuppressionReason::Complained } else { SuppressionReason::Bounced };
            // Printed as the API shows an entry (`GET /suppressions/{id}`), as the list prints it.
            let entry = engine.suppress(&address, reason).await?;
            let mut v = mailroom::core::suppressions::json(engine.account(), &entry);
            v["object"] = json!("suppression");
            v
        }
        Request::SuppressionsRemove { address } => {
            engine.unsuppress(&address).await?;
            let key = mailroom::core::address::normalize(&address).unwrap_or(address);
            json!({
                "object": "suppression",
                "id": mailroom::core::suppressions::id(engine.account(), &key),
                "email": key,
                "deleted": true
            })
        }
        Request::DomainsAdd { domain, options: o } => {
            let mut new = mailroom::core::domains::NewDomain::new(domain);
            new.click_tracking = Some(o.click_tracking);
            new.open_tracking = Some(o.open_tracking);
            new.receiving = Some(o.receiving);
            new.tracking_subdomain = o.tracking_subdomain;
            new.custom_return_path = o.return_path;
            if o.ed25519 {
                new.dkim_algorithm = Some(mailroom::core::domains::DkimAlgorithm::Ed25519);
            }
            domain_view(&engine.create_domain(new).await?)
        }
        Request::DomainsList => {
            let data: Vec<Value> = engine.domains().await?.iter().map(mailroom::core::domains::domain_json).collect();
            json!({"object": "list", "data": data})
        }
        Request::DomainsShow { domain } => domain_view(&named_domain(engine, &domain).await?),
        Request::DomainsVerify { domain, dns } => {
            let d = named_domain(engine, &domain).await?;
            let resolver = resolver(dns.or(ctx.dns))?;
            domain_view(&engine.check_domain_now(&d.id, &resolver).await?)
        }
        Request::DomainsRotateKey { domain } => {
            let d = named_domain(engine, &domain).await?;
            domain_view(&engine.rotate_domain_key(&d.id).await?)
        }
        Request::DomainsRemove { domain } => {
            let d = named_domain(engine, &domain).await?;
            engine.delete_domain(&d.id).await?;
            json!({"object": "domain", "id": d.id, "name": d.name, "deleted": true})
        }
        Request::KeysCreate { name, sending_access, domain } => {
            let permission = KeyPermission::parse(
                Some(if sending_access { "sending_access" } else { "full_access" }),
                domain.as_deref(),
            )?;
            let created = engine.create_api_key(Some(&name), permission).await?;
            json!({"id": created.record.id, "name": created.record.name, "token": created.token})
        }
        Request::KeysList => {
            let keys: Vec<Value> = engine
                .list_api_keys()
                .await?
                .into_iter()
                .map(|k| {
                    json!({"id": k.id, "name": k.name, "permission": k.permission, "managed": k.managed,
                           "created_at": k.created_at.to_rfc3339(), "revoked_at": k.revoked_at.map(|t| t.to_rfc3339()),
                           "last_used_at": k.last_used_at.map(|t| t.to_rfc3339())})
                })
                .collect();
            json!({"object": "list", "data": keys})
        }
        Request::KeysRevoke { id } => {
            engine.revoke_api_key(&id).await?;
            json!({"object": "api_key", "id": id, "revoked": true})
        }
        Request::Insights { id, draft, dns } => {
            let resolver = resolver(dns.or(ctx.dns))?;
            match (id, draft) {
                (Some(id), _) => json!(engine.insights(id.parse::<EmailId>()?, &resolver).await?),
                (None, Some(draft)) => {
                    // A draft need not be complete: what it lacks shows as `unknown`.
                    let draft = EmailRequest::from_json(draft.as_bytes())?;
                    json!(engine.draft_insights(&draft, &resolver).await?)
                }
                (None, None) => return Err(Failure::Usage("give an email id or --json FILE".into())),
            }
        }
        Request::IngestBounce { message } => json!(engine.ingest_bounce(&message).await?),
        Request::Prune { older_than_days } => {
            let pruned = engine.prune_older_than(chrono::Duration::days(i64::from(older_than_days))).await?;
            json!({"pruned": pruned})
        }
        Request::Backup { path } => {
            let started = std::time::Instant::now();
            let Some(store) = &ctx.store else {
                return Err(Failure::Usage(
                    "this server keeps its data in PostgreSQL: back it up with pg_dump or the database's own backups"
                        .into(),
                ));
            };
            let rows = store.backup(&path).await?;
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            json!({"backup": path, "rows": rows, "bytes": bytes, "seconds": started.elapsed().as_secs_f64()})
        }
        Request::WebhooksAdd { url, events } => {
            let h = engine.create_webhook(&url, &events).await?;
            json!({"object": "webhook", "id": h.id, "endpoint": h.endpoint, "events": h.events, "signing_secret": h.secret})
        }
        Request::WebhooksList => {
            let hooks: Vec<Value> = engine
                .webhooks()
                .await?
                .into_iter()
                .map(|h| {
                    json!({"id": h.id, "endpoint": h.endpoint, "events": h.events,
                           "status": if h.enabled { "enabled" } else { "disabled" },
                           "created_at": h.created_at.to_rfc3339()})
                })
                .collect();
            json!({"object": "list", "data": hooks})
        }
        Request::EventsAfter { after, limit } => {
            let entries: Vec<Value> = engine
                .events(after, limit)
                .await?
                .iter()
                .map(|e| {
                    let mut v = json!({"seq": e.seq, "type": e.type_name(), "at": e.at.to_rfc3339()});
                    if let Some(id) = e.email_id() {
                        v["email_id"] = json!(id.to_string());
                    }
                    match &e.subject {
                        mailroom::core::events::Subject::Email { event, .. } => {
                            if let Some(r) = &event.recipient {
                                v["recipient"] = json!(r);
                            }
                            if let Some(r) = &event.reason {
                                v["reason"] = json!(r);
                            }
                        }
                        mailroom::core::events::Subject::SuppressionAdded(s)
                        | mailroom::core::events::Subject::SuppressionRemoved(s) => v["address"] = json!(s.address),
                        mailroom::core::events::Subject::Domain { domain, .. } => {
                            v["domain"] = json!(domain.name);
                            v["status"] = json!(domain.status());
                        }
                        mailroom::core::events::Subject::Received(r) => {
                            v["from"] = json!(r.from);
                            v["received_for"] = json!(r.received_for);
                        }
                    }
                    v
                })
                .collect();
            json!({"object": "list", "data": entries})
        }
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_wire_tags() {
        let all = [
            Request::Send { body: String::new(), idempotency_key: None },
            Request::Batch { body: String::new(), permissive: false, idempotency_key: None },
            Request::Get { id: String::new() },
            Request::List { limit: None, after: None, before: None },
            Request::Metrics { query: Default::default() },
            Request::Usage,
            Request::Reschedule { id: String::new(), when: String::new() },
            Request::Cancel { id: String::new() },
            Request::SuppressionsList { limit: None, after: None, before: None, origin: None },
            Request::SuppressionsAdd { address: String::new(), reason: String::new() },
            Request::SuppressionsRemove { address: String::new() },
            Request::DomainsAdd { domain: String::new(), options: DomainOptions::default() },
            Request::DomainsList,
            Request::DomainsShow { domain: String::new() },
            Request::DomainsVerify { domain: String::new(), dns: None },
            Request::DomainsRotateKey { domain: String::new() },
            Request::DomainsRemove { domain: String::new() },
            Request::KeysCreate { name: String::new(), sending_access: false, domain: None },
            Request::KeysList,
            Request::KeysRevoke { id: String::new() },
            Request::Insights { id: None, draft: None, dns: None },
            Request::IngestBounce { message: vec![] },
            Request::Prune { older_than_days: 0 },
            Request::Backup { path: PathBuf::new() },
            Request::WebhooksAdd { url: String::new(), events: vec![] },
            Request::WebhooksList,
            Request::EventsAfter { after: 0, limit: 1 },
        ];
        for r in all {
            let tag = serde_json::to_value(&r).ok().and_then(|v| v["command"].as_str().map(str::to_string));
            assert_eq!(tag.as_deref(), Some(r.name()));
        }
    }
}
