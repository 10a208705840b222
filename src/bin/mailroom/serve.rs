//! `mailroom serve`: the composition root. It wires the adapters the settings name around one
//! engine — the redb store, the REST API on the hardened server, the delivery worker, the
//! admin socket, metrics — and decides nothing itself.
//!
//! Order matters: the database is opened and the port bound before anything is written, so a
//! server that cannot start (a port in use, another server on the file) changes nothing.

use crate::admin;
use crate::commands::Context;
use crate::config::{DeliveryMode, Settings};
use mailroom::core::Engine;
use mailroom::core::Transport;
use mailroom::core::sandbox::{OutboxMessage, SandboxTransport, WithTestAddresses};
use mailroom::core::worker::{HANDOVERS_PER_CONNECTION, WorkerConfig, in_flight_for};
use mailroom::dns::HickoryResolver;
use mailroom::fetch::Fetcher;
use mailroom::http::{Api, router};
use mailroom::redb::{OpenError, Options, RedbStorage};
use mailroom::smtp::{DkimKey, RelayTarget, SmtpConfig, SmtpTransport};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Opens the store the settings name, telling "another process holds it" apart.
pub fn open_store(settings: &Settings) -> Result<RedbStorage, OpenError> {
    let store = RedbStorage::try_open_with(&settings.db, Options::default().quick_repair(settings.quick_repair))?;
    if let Some(took) = store.repaired_on_open() {
        tracing::warn!(
            target: "mailroom::serve",
            seconds = took.as_secs_f64(),
            "the database was repaired after an unclean shutdown; `database.quick_repair = true` makes that \
             immediate at a cost to every commit"
        );
    }
    Ok(store)
}

/// The engine the settings describe, on `store`.
pub fn build_engine(settings: &Settings, store: Arc<dyn mailroom::core::Storage>) -> Result<Engine, String> {
    let loader = Fetcher::new(settings.fetch.clone()).map_err(|e| format!("the attachment loader: {e}"))?;
    let mut builder = Engine::builder(store)
        .limits(settings.limits)
        .test_domain(&settings.test_domain)
        .attachment_loader(Arc::new(loader))
        .request_log_retention(settings.log_retention)
        .domains(settings.domains.clone())
        .link_key(link_key(&settings.link_key_file)?);
    if let Some(url) = &settings.api.public_url {
        builder = builder.public_url(url);
    }
    if let Some(keep) = settings.email_retention {
        builder = builder.retention(keep);
    }
    if settings.database_url.is_some() {
        // A killed process's in-flight keys are answered again within half a minute.
        builder = builder.idempotency_in_flight_lease(SHARED_LEASE);
    }
    if let Some(domain) = &settings.bounce_domain {
        builder = builder.bounce_domain(domain);
    }
    Ok(builder.build())
}

/// The key that signs tracking and unsubscribe links, from its file; made (32 random bytes,
/// hex, mode 0600) when the file does not exist yet. Links in mail already sent depend on it:
/// the file is kept beside the database and belongs in its backups.
pub fn link_key(file: &Path) -> Result<mailroom::core::tracking::LinkKey, String> {
    let parse = |text: &str| -> Option<[u8; 32]> {
        let t = text.trim();
        let mut out = [0u8; 32];
        if t.len() != 64 {
            return None;
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(t.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(out)
    };
    match std::fs::read_to_string(file) {
        Ok(text) => parse(&text)
            .map(|k| mailroom::core::tracking::LinkKey::new(&k))
            .ok_or_else(|| format!("{}: not a link key (64 hex digits)", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = mailroom::core::tracking::random_secret();
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .map_err(|e| format!("cannot create {}: {e}", file.display()))?;
            f.write_all(format!("{hex}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("{}: {e}", file.display()))?;
            Ok(mailroom::core::tracking::LinkKey::new(&key))
        }
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// The folder the sandbox writes messages for ordinary recipients to: `<db>.outbox/`.
pub fn outbox_dir(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".outbox");
    db.with_file_name(name)
}

/// The sandbox, writing every outbox message to `<db>.outbox/<email id>.eml` so that other
/// processes (and people) can read what was "sent".
///
/// Each message is written under a hidden name and then renamed, so a file named `….eml` is
/// always whole: a reader that polls the folder (a test, a script) had been able to open one
/// while it was still empty and read no message.
///
/// The folder is made by the first message written to it, not here: every command builds the
/// sandbox (test addresses are always simulated), and one that relays over SMTP, or stops on a
/// bad setting, had left an empty `<db>.outbox/` beside a file it never wrote.
pub fn sandbox(db: &Path, test_domain: &str) -> SandboxTransport {
    let dir = outbox_dir(db);
    SandboxTransport::new(test_domain).with_hook(move |m: &OutboxMessage| {
        let file = dir.join(format!("{}.eml", m.envelope.email_id));
        let part = dir.join(format!(".{}.eml.part", m.envelope.email_id));
        let write = || std::fs::write(&part, &m.message).and_then(|()| std::fs::rename(&part, &file));
        // The first write finds no folder and makes it; later ones only if someone removed it.
        if write().is_err() && std::fs::create_dir_all(&dir).is_ok() {
            let _ = write();
        }
    })
}

/// The resolver every lookup goes through (`dns.nameserver`, or the system's).
pub fn resolver(settings: &Settings) -> Result<Arc<HickoryResolver>, String> {
    Ok(Arc::new(match settings.dns {
        Some(addr) => HickoryResolver::with_nameserver(addr),
        None => HickoryResolver::system().map_err(|e| e.to_string())?,
    }))
}

/// The transport the settings name (test addresses always simulated), and whether it is SMTP.
pub fn transport(settings: &Settings) -> Result<(Arc<dyn Transport>, bool), String> {
    let sandbox = sandbox(&settings.db, &settings.test_domain);
    let resolver = || resolver(settings);
    let mut config = match &settings.delivery {
        DeliveryMode::Sandbox => return Ok((Arc::new(sandbox), false)),
        DeliveryMode::Relay(url) => SmtpConfig::relay(RelayTarget::parse(url).map_err(|e| e.to_string())?),
        DeliveryMode::Direct => SmtpConfig::direct(resolver()?),
    };
    config.max_connections = settings.connections;
    config.max_per_destination = settings.connections;
    config.helo_name = settings.helo.clone();
    for d in &settings.dkim {
        let pem = std::fs::read_to_string(&d.key_file).map_err(|e| format!("{}: {e}", d.key_file.display()))?;
        let key = if d.ed25519 {
            DkimKey::ed25519_pem(&d.domain, &d.selector, &pem)
        } else {
            DkimKey::rsa_pem(&d.domain, &d.selector, &pem)
        };
        config.dkim.push(Arc::new(key.map_err(|e| format!("{}: {e}", d.origin))?));
    }
    let smtp = SmtpTransport::new(config).map_err(|e| e.to_string())?;
    Ok((Arc::new(WithTestAddresses::new(sandbox, Arc::new(smtp))), true))
}

/// The worker the settings describe.
pub fn worker_config(settings: &Settings, relaying: bool) -> WorkerConfig {
    // Why eight per connection: see `HANDOVERS_PER_CONNECTION`.
    let handovers = match settings.handovers {
        Some(n) => n,
        None if relaying => settings.connections * HANDOVERS_PER_CONNECTION,
        None => WorkerConfig::default().handovers,
    };
    // Unless set, twice the hand-overs just resolved (`in_flight_for`).
    let concurrency = settings.concurrency.unwrap_or_else(|| in_flight_for(handovers));
    // Fewer emails in flight than connections would leave connections idle.
    let concurrency = if relaying { concurrency.max(settings.connections) } else { concurrency };
    let config = WorkerConfig::default().concurrency(concurrency).handovers(handovers).in_doubt(settings.in_doubt);
    match settings.database_url {
        // Several processes share the queue: a claim lasts 30 s and is renewed every 10 s
        // while its hand-over runs, so a killed process's emails are taken over within about
        // half a minute (a redb file has one process, whose claims are released at start).
        Some(_) => config.lease(SHARED_LEASE).heartbeat(SHARED_LEASE / 3),
        None => config,
    }
}

/// The claim lease, and the in-flight marker's, when several processes share the store.
const SHARED_LEASE: Duration = Duration::from_secs(30);

/// Installs the Prometheus recorder; the renderer for `/metrics`.
fn metrics() -> Result<Arc<dyn Fn() -> String + Send + Sync>, String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    // The store's writer works in tenths of a millisecond.
    let writer = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("mailroom_http_request_duration_seconds".into()), &buckets)
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(Matcher::Full("mailroom_redb_commit_seconds".into()), &writer)
        .map_err(|e| e.to_string())?
        .set_buckets_for_metric(Matcher::Full("mailroom_redb_group_write_seconds".into()), &writer)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(move || handle.render()))
}

/// Keeps the queue gauges current (a scrape reads them; counting needs the store).
///
/// Every 5 seconds, or less often when counting is slow: the interval is at least 100 times
/// what the last count took. Why: counting is linear in the queue on a store without a kept
/// total (PostgreSQL reads every waiting row: 0.6 s at 400,000 queued), and at a fixed 5 s a
/// deep backlog made the gauges take a tenth of a core from the work that drains it. The
/// cost stays at 1 % of the time whatever the queue's length; the gauges lag at most a
/// hundred counts' time (a minute at that depth).
async fn queue_gauges(engine: Engine) {
    loop {
        let now = engine.clock().now();
        let started = std::time::Instant::now();
        let stats = engine.storage().queue_stats(now).await;
        let pause = Duration::from_secs(5).max(started.elapsed().saturating_mul(100));
        if let Ok(Some(q)) = stats {
            metrics::gauge!("mailroom_queue_waiting").set(q.waiting as f64);
            metrics::gauge!("mailroom_queue_due").set(q.due as f64);
            let lag = q.oldest_due.filter(|t| *t < now).map_or(0.0, |t| (now - t).num_milliseconds() as f64 / 1000.0);
            metrics::gauge!("mailroom_queue_due_lag_seconds").set(lag);
        }
        tokio::time::sleep(pause).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// The PostgreSQL store at `url`, as the settings size its pool (`serve` and `work`).
pub async fn postgres(url: &str, settings: &Settings) -> Result<mailroom::postgres::PostgresStorage, String> {
    mailroom::postgres::PostgresStorage::connect(url, settings.database_connections)
        .await
        .map_err(|e| format!("cannot use the PostgreSQL database: {e}"))
}

/// How long the store may take to open before the port answers "starting" (a normal start
/// takes milliseconds, and its early requests wait for the API rather than get a 503).
const ANSWER_AFTER: Duration = Duration::from_secs(1);

/// The store the settings name: PostgreSQL when a URL is given (several processes may share
/// it), else the redb file (opened on a blocking thread: its repair after a crash reads the
/// whole file, and the port answers meanwhile).
async fn open_storage(settings: &Settings) -> Result<(Arc<dyn mailroom::core::Storage>, Option<RedbStorage>), String> {
    if let Some(url) = &settings.database_url {
        return Ok((Arc::new(postgres(url, settings).await?), None));
    }
    // (The blocking thread needs settings of its own; the runtime's threads go on answering.)
    let owned = settings.clone();
    let opened = tokio::task::spawn_blocking(move || open_store(&owned)).await.map_err(|e| e.to_string())?;
    match opened {
        Ok(s) => Ok((Arc::new(s.clone()), Some(s))),
        Err(OpenError::InUse) => Err(format!(
            "the database {} is in use by another process: is a `mailroom serve` already running on it?",
            settings.db.display()
        )),
        Err(OpenError::Failed(e)) => Err(format!("cannot open {}: {e}", settings.db.display())),
    }
}

/// Runs the server until SIGTERM or Ctrl-C. `Err`: it could not start (nothing was changed).
pub async fn serve(settings: Settings) -> Result<(), String> {
    // The port first (a port in use fails here, before anything is opened). Connections wait
    // in its backlog until the API serves them; but if the redb file takes longer than
    // `ANSWER_AFTER` to open (a file a crash left is repaired first, which can take minutes
    // on a large one), the port answers "starting" meanwhile (`opening`; plain HTTP only).
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let mut open = std::pin::pin!(open_storage(&settings));
    let answer = settings.tls.is_none() && settings.database_url.is_none();
    let (opened, listener) = match tokio::time::timeout(ANSWER_AFTER, open.as_mut()).await {
        Ok(opened) => (opened, listener),
        Err(_) if answer => {
            let answering = crate::opening::Opening::start(listener);
            let opened = open.await;
            (opened, answering.finish().await?)
        }
        Err(_) => (open.await, listener),
    };
    let (storage, redb) = opened?;
    // The admin socket before the API proper: once the API answers, so does the command line.
    let engine = build_engine(&settings, storage)?;
    let context =
        Context { engine: engine.clone(), store: redb, dns: settings.dns, rate_limits: settings.api.rate_limits };
    let admin = admin::listen(&settings.admin_socket, context).await?;
    let _cleanup = admin::Cleanup(settings.admin_socket.clone());
    let mut server_config = settings.server.clone();
    if let Some((cert, key)) = &settings.tls {
        server_config.tls = Some(mailroom::http::tls_config(cert, key).map_err(|e| format!("TLS: {e}"))?);
    }
    let (transport, relaying) = transport(&settings)?;
    let mut api_config = settings.api.clone();
    if settings.metrics {
        api_config.metrics = Some(metrics()?);
    }
    // The dashboard checks DNS on request (insights, "verify") through the same resolver.
    api_config.dns = Some(resolver(&settings)? as Arc<dyn mailroom::core::DnsResolver>);
    for w in &settings.warnings {
        tracing::warn!("configuration: {w}");
    }

    // Keys: the configuration's are brought in line; a server with no key at all gets one.
    let managed = engine.sync_managed_keys(&settings.keys).await.map_err(|e| format!("API keys: {e}"))?;
    let active = engine.list_api_keys().await.map_err(|e| e.to_string())?.iter().any(|k| k.revoked_at.is_none());
    if managed.is_empty() && !active {
        let created = engine
            .create_api_key(Some("created at start"), mailroom::core::ports::KeyPermission::FullAccess)
            .await
            .map_err(|e| e.to_string())?;
        // The token goes to stdout once, not into the logs.
        crate::out(serde_json::json!({"created_api_key": created.token, "id": created.record.id}));
        tracing::info!(id = %created.record.id, "no API key yet: created one (its token is printed once on stdout)");
    }

    let gauges = tokio::spawn(queue_gauges(engine.clone()));

    let scheme = if server_config.tls.is_some() { "https" } else { "http" };
    tracing::info!(
        listen = %settings.listen,
        %scheme,
        db = %settings.db.display(),
        delivery = ?settings.delivery,
        admin_socket = %settings.admin_socket.display(),
        "serving the API; the worker delivers in the same process"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let worker = engine.worker(transport, worker_config(&settings, relaying));
    let until = stopped(stop_rx.clone());
    let worker = tokio::spawn(async move { worker.run(until).await });
    let webhooks = if settings.webhooks.enabled && engine.storage().webhooks().is_some() {
        let sender = mailroom::fetch::WebhookPoster::new(settings.webhooks.sender.clone())
            .map_err(|e| format!("webhooks: {e}"))?;
        let mut config = mailroom::core::webhooks::DispatchConfig::default();
        config.per_endpoint = settings.webhooks.per_endpoint;
        let dispatcher = mailroom::core::webhooks::Dispatcher::new(
            engine.storage().clone(),
            engine.clock().clone(),
            Arc::new(sender),
            config,
        );
        let until = stopped(stop_rx.clone());
        Some(tokio::spawn(async move { dispatcher.run(until).await }))
    } else {
        None
    };
    // Domains are checked on their schedule through the configured nameserver.
    let verifier = if settings.verify_domains {
        let verifier = mailroom::core::domains::Verifier::new(
            engine.storage().clone(),
            engine.clock().clone(),
            resolver(&settings)?,
            settings.domains.clone(),
        );
        let until = stopped(stop_rx.clone());
        Some(tokio::spawn(async move { verifier.run(until).await }))
    } else {
        None
    };
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new requests; finishing deliveries in flight");
        let _ = stop_tx.send(true);
    });
    let inbound = match settings.inbound.listen.filter(|_| engine.storage().received().is_some()) {
        Some(addr) => {
            let mut config = settings.inbound.config.clone();
            config.auth = Some(resolver(&settings)? as Arc<dyn mailroom::core::ports::MessageAuth>);
            if let Some((cert, key)) = &settings.inbound.tls {
                // The HTTP server's loader, without its ALPN (SMTP offers none).
                let tls = mailroom::http::tls_config(cert, key).map_err(|e| format!("inbound TLS: {e}"))?;
                let mut tls = (*tls).clone();
                tls.alpn_protocols.clear();
                config.tls = Some(Arc::new(tls));
            }
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            tracing::info!(listen = %addr, tls = config.tls.is_some(), "receiving mail by SMTP");
            let inbound = mailroom::inbound::Inbound::new(engine.clone(), config);
            Some(tokio::spawn(inbound.serve(listener, stopped(stop_rx.clone()))))
        }
        None => None,
    };
    let api = Api::new(engine, api_config);
    let served = mailroom::http::serve(listener, router(api.clone()), server_config, stopped(stop_rx)).await;
    // The logs of the last answers are written beside them: keep them.
    api.logs_settled().await;
    admin.abort();
    gauges.abort();
    served.map_err(|e| e.to_string())?;
    let report = worker.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    if let Some(w) = webhooks {
        w.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    if let Some(v) = verifier {
        v.await.map_err(|e| e.to_string())?;
    }
    if let Some(i) = inbound {
        i.await.map_err(|e| e.to_string())?;
    }
    tracing::info!(processed = report.processed, released = report.released, "stopped");
    Ok(())
}
