//! The `mailroom` binary: the command line and `serve`, the composition root of the product.
//!
//! Every command prints JSON on stdout (`when` prints a bare RFC 3339 instant; `config check`
//! prints its findings as text). A command that fails prints the error body
//! `{"statusCode", "name", "message"}` on stdout and exits with status 1; `serve` says why it
//! could not start on stderr. Logs go to stderr.

// Many small allocations on several threads (requests, renders, records) are the server's
// pattern; mimalloc serves them with less contention and fragmentation than glibc's malloc.
//
// Built without asking for transparent huge pages (the `no_thp` feature). Why: mimalloc gives
// freed memory back to the system after a short delay and touches it again at the next
// burst; on a huge page each such touch had the kernel zero a whole 2 MB page. `work`
// delivering 20,000 emails spent 17 % of its time there (`clear_page_erms` under
// `do_huge_pmd_anonymous_page`, perf) and ran at 17–23 k emails/s, against a steady 22–23 k
// without huge pages, alternated in one run. The process uses a few tens of MB: too little
// for huge pages to save anything on address translation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod cli;
mod commands;
mod config;
mod opening;
mod serve;

use clap::Parser;
use cli::{
    Cli, Command, ConfigCommand, DomainCommand, EventsCommand, KeyCommand, Page, Store, SuppressionCommand,
    WebhookCommand,
};
use commands::{Context, DomainOptions, Failure, Request, execute};
use config::{Layers, Settings};
use mailroom::core::email::EmailView;
use mailroom::core::request::EmailRequest;
use mailroom::core::worker::WorkerConfig;
use mailroom::core::{BatchOptions, Engine, FieldError, Rule};
use mailroom::redb::OpenError;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

fn print(v: &impl serde::Serialize) {
    out(serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
}

/// Writes one line to stdout. A reader that closed the pipe (`mailroom classify … | head`)
/// wants no more: the process ends at once with the status of a tool that SIGPIPE ended
/// (128 + 13), where `println!` panicked with a backtrace. Another failure to write is
/// reported on stderr.
fn out(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("mailroom: cannot write the output: {e}");
        std::process::exit(1);
    }
}

fn read_input(file: Option<&Path>) -> Result<Vec<u8>, Failure> {
    match file {
        Some(p) => std::fs::read(p).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", p.display()))),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
            Ok(buf)
        }
    }
}

fn read_text(file: Option<&Path>) -> Result<String, Failure> {
    String::from_utf8(read_input(file)?).map_err(|_| Failure::Usage("the input is not UTF-8 text".into()))
}

/// The settings from the configuration file, the environment and `flags`.
fn settings(config: Option<&Path>, db: Option<&Path>, flags: impl FnOnce(&mut Layers)) -> Result<Settings, Failure> {
    let mut layers = Layers::new(config, std::env::vars().collect());
    layers.flag("database.path", "--db", db.map(|p| p.display().to_string()));
    flags(&mut layers);
    layers.resolve().map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        Failure::Usage(format!("the configuration has problems: {}", lines.join("; ")))
    })
}

fn store_settings(store: &Store) -> Result<Settings, Failure> {
    settings(store.config.as_deref(), store.db.as_deref(), |_| {})
}

/// Runs a request on the database: here when the file is free, through the running server's
/// admin socket when a server holds it.
async fn run_request(settings: &Settings, request: Request) -> Result<Value, Failure> {
    if request.needs_a_database() && !settings.db.exists() {
        return Err(Failure::Usage(format!(
            "there is no database at {}: `mailroom serve` and `mailroom send` create it; \
             or name the one meant with --db or --config",
            settings.db.display()
        )));
    }
    let new_file = !settings.db.exists();
    match serve::open_store(settings) {
        Ok(store) => {
            let result = match serve::build_engine(settings, Arc::new(store.clone())) {
                Ok(engine) => {
                    let context = Context {
                        engine,
                        store: Some(store.clone()),
                        dns: settings.dns,
                        rate_limits: settings.api.rate_limits,
                    };
                    execute(&context, request).await
                }
                Err(why) => Err(Failure::Usage(why)),
            };
            if new_file && result.is_err() {
                // A refused command accepted nothing, so the file it made holds nothing: a typo'd
                // `--db` with bad input leaves no stray database. Unlinked while this process still
                // holds the file's lock, so no other process can have opened it meanwhile.
                if let Err(e) = std::fs::remove_file(&settings.db) {
                    tracing::warn!(target: "mailroom::cli", path = %settings.db.display(), "could not remove the database this refused command created: {e}");
                }
            }
            drop(store);
            result
        }
        Err(OpenError::InUse) => match admin::call(&settings.admin_socket, &request).await {
            Ok(result) => result,
            Err(why) => Err(Failure::Usage(format!(
                "the database {} is in use by another process and no server answers on its admin socket ({why}): \
                 stop that process, or point --config at the server's configuration",
                settings.db.display()
            ))),
        },
        Err(OpenError::Failed(e)) => Err(e.into()),
    }
}

/// Opens the database for a command that needs it to itself (not through a server).
fn open_alone(settings: &Settings, what: &str) -> Result<mailroom::redb::RedbStorage, Failure> {
    serve::open_store(settings).map_err(|e| match e {
        OpenError::InUse => Failure::Usage(format!(
            "the database {} is in use (a running `mailroom serve`?); {what}",
            settings.db.display()
        )),
        OpenError::Failed(e) => e.into(),
    })
}

fn delivery_flags(layers: &mut Layers, d: &cli::Delivery) {
    layers.flag("delivery.relay", "--smtp", d.relay.clone());
    if d.direct {
        layers.flag("delivery.mode", "--direct", Some("direct".into()));
    }
    layers.flag("dns.nameserver", "--dns", d.dns.map(|a| a.to_string()));
    layers.flag("delivery.connections", "--connections", d.connections.map(|c| c.to_string()));
    layers.flag("delivery.handovers", "--handovers", d.handovers.map(|c| c.to_string()));
    layers.flag("delivery.helo", "--helo", d.helo.clone());
}

/// `events tail`: pages of the log as JSON lines; following, it asks again for what came after
/// the last entry printed (through the server when one holds the file).
async fn tail(mut after: u64, limit: usize, follow: bool, store: &Store) -> Result<(), Failure> {
    let settings = store_settings(store)?;
    loop {
        let page =
            run_request(&settings, Request::EventsAfter { after, limit: if follow { 500 } else { limit } }).await?;
        let entries = page["data"].as_array().cloned().unwrap_or_default();
        for e in &entries {
            out(e);
            after = e["seq"].as_u64().unwrap_or(after);
        }
        if !follow {
            return Ok(());
        }
        if entries.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

async fn run(command: Command) -> Result<(), Failure> {
    let request = match command {
        // `main` runs `serve` itself (it owns the runtime's lifetime and reports on stderr).
        Command::Serve(_) => return Err(Failure::Usage("`serve` cannot run here".into())),
        Command::Send { file, idempotency_key, store } => {
            let body = read_text(file.as_deref())?;
            (store, Request::Send { body, idempotency_key })
        }
        Command::Batch { file, permissive, idempotency_key, store } => {
            let body = read_text(file.as_deref())?;
            (store, Request::Batch { body, permissive, idempotency_key })
        }
        Command::Get { id, store } => (store, Request::Get { id }),
        Command::List { page: Page { limit, after, before }, store } => (store, Request::List { limit, after, before }),
        Command::Metrics { start, end, by, granularity, timezone, metrics, domain_ids, email_ids, store } => {
            // The API's query parameters, so that the command answers exactly what it does.
            let lists =
                [("dimensions", by.join(",")), ("domain_id", domain_ids.join(",")), ("email_id", email_ids.join(","))];
            let single = [
                ("start_date", start),
                ("end_date", end),
                ("granularity", granularity),
                ("timezone", timezone),
                ("metrics", metrics),
            ];
            let query = single
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .chain(lists.into_iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v)))
                .collect();
            (store, Request::Metrics { query })
        }
        Command::Usage { store } => (store, Request::Usage),
        Command::Reschedule { id, when, store } => (store, Request::Reschedule { id, when: when.join(" ") }),
        Command::Cancel { id, store } => (store, Request::Cancel { id }),
        Command::Suppressions { action } => match action {
            SuppressionCommand::List { page: Page { limit, after, before }, origin, store } => {
                (store, Request::SuppressionsList { limit, after, before, origin })
            }
            SuppressionCommand::Add { address, reason, store } => (store, Request::SuppressionsAdd { address, reason }),
            SuppressionCommand::Remove { address, store } => (store, Request::SuppressionsRemove { address }),
        },
        Command::Domains { action } => match action {
            DomainCommand::Add {
                domain,
                click_tracking,
                open_tracking,
                receiving,
                tracking_subdomain,
                return_path,
                ed25519,
                store,
            } => {
                let options = DomainOptions {
                    click_tracking,
                    open_tracking,
                    receiving,
                    tracking_subdomain,
                    return_path,
                    ed25519,
                };
                (store, Request::DomainsAdd { domain, options })
            }
            DomainCommand::List { store } => (store, Request::DomainsList),
            DomainCommand::Show { domain, store } => (store, Request::DomainsShow { domain }),
            DomainCommand::Verify { domain, dns, store } => (store, Request::DomainsVerify { domain, dns }),
            DomainCommand::RotateKey { domain, store } => (store, Request::DomainsRotateKey { domain }),
            DomainCommand::Remove { domain, store } => (store, Request::DomainsRemove { domain }),
        },
        Command::Webhooks { action } => match action {
            WebhookCommand::Add { url, events, store } => (store, Request::WebhooksAdd { url, events }),
            WebhookCommand::List { store } => (store, Request::WebhooksList),
        },
        Command::Events { action: EventsCommand::Tail { after, limit, follow, store } } => {
            return tail(after, limit, follow, &store).await;
        }
        Command::Keys { action } => match action {
            KeyCommand::Create { name, sending_access, domain, store } => {
                (store, Request::KeysCreate { name, sending_access, domain })
            }
            KeyCommand::List { store } => (store, Request::KeysList),
            KeyCommand::Revoke { id, store } => (store, Request::KeysRevoke { id }),
            KeyCommand::Token => {
                print(&json!({"token": mailroom::core::keys::generate_token()}));
                return Ok(());
            }
        },
        Command::Insights { id, json, dns, store } => {
            let draft = json.as_deref().map(|f| read_text(Some(f))).transpose()?;
            (store, Request::Insights { id, draft, dns })
        }
        Command::IngestBounce { file, store } => {
            (store, Request::IngestBounce { message: read_input(file.as_deref())? })
        }
        Command::Prune { older_than_days, store } => (store, Request::Prune { older_than_days }),
        Command::Backup { path, store } => {
            // The server may run elsewhere in the file system: the path must not depend on it.
            let path = std::path::absolute(&path).map_err(|e| Failure::Usage(e.to_string()))?;
            (store, Request::Backup { path })
        }
        Command::Classify { files, batch } => return classify(&files, batch),
        Command::When { phrase, now } => return when(&phrase.join(" "), now.as_deref()),
        Command::Work { until_idle, concurrency, database_url, delivery, store } => {
            return work(until_idle, concurrency, database_url, &delivery, &store).await;
        }
        Command::Compact { store } => return compact(&store).await,
        Command::Restore { backup, force, store } => return restore(&backup, force, &store),
        Command::Config { action } => return config_command(action),
        Command::Demo { store } => return demo(&store).await,
    };
    let (store, request) = request;
    let settings = store_settings(&store)?;
    print(&run_request(&settings, request).await?);
    Ok(())
}

async fn work(
    until_idle: bool,
    concurrency: Option<usize>,
    database_url: Option<String>,
    delivery: &cli::Delivery,
    store: &Store,
) -> Result<(), Failure> {
    let settings = settings(store.config.as_deref(), store.db.as_deref(), |l| {
        delivery_flags(l, delivery);
        l.flag("database.url", "--database-url", database_url);
        l.flag("delivery.concurrency", "--concurrency", concurrency.map(|c| c.to_string()));
    })?;
    // On PostgreSQL, `work` may run beside servers and other `work` processes (they share the
    // queue); a redb file has one process, so not while a server holds it.
    let storage: Arc<dyn mailroom::core::Storage> = match &settings.database_url {
        Some(url) => Arc::new(serve::postgres(url, &settings).await.map_err(Failure::Usage)?),
        None => Arc::new(open_alone(&settings, "the server delivers already: `work` is for when none runs")?),
    };
    let engine = serve::build_engine(&settings, storage).map_err(Failure::Usage)?;
    let (transport, relaying) = serve::transport(&settings).map_err(Failure::Usage)?;
    let worker = engine.worker(transport, serve::worker_config(&settings, relaying));
    // On a task of the runtime, as `serve` runs it: awaited in place, the worker's loop would
    // run on this thread (the one blocked on the runtime), and every email's answer would wake
    // it from another thread. Measured: about 7 % more emails per second spawned.
    let task = tokio::spawn(async move {
        if until_idle {
            worker.run_until_idle().await
        } else {
            worker.run(async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await
        }
    });
    let report = match task.await {
        Ok(report) => report?,
        // A panic in the worker is this command's panic, as it was when awaited in place.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(Failure::Usage(format!("the worker stopped: {e}"))),
    };
    print(&json!({
        "processed": report.processed,
        "handed_over": report.handed_over,
        "released": report.released,
        "outbox": serve::outbox_dir(&settings.db),
    }));
    Ok(())
}

async fn compact(store: &Store) -> Result<(), Failure> {
    let settings = store_settings(store)?;
    let db = open_alone(&settings, "stop the server to compact")?;
    let size = || std::fs::metadata(&settings.db).map(|m| m.len()).unwrap_or(0);
    let before = size();
    let mut changed = false;
    // redb compacts incrementally: repeat until a pass moves nothing.
    while db.compact().await? {
        changed = true;
    }
    print(&json!({"compacted": changed, "bytes_before": before, "bytes_after": size()}));
    Ok(())
}

/// `restore`: checks the backup opens and reads, then puts a copy in the database's place (the
/// file it replaces is kept as `<db>.before-restore`).
fn restore(backup: &Path, force: bool, store: &Store) -> Result<(), Failure> {
    let settings = store_settings(store)?;
    let emails = mailroom::redb::RedbStorage::verify(backup)
        .map_err(|e| Failure::Usage(format!("{} is not a usable backup: {e}", backup.display())))?;
    let db = &settings.db;
    if db.exists() {
        drop(open_alone(&settings, "stop the server before restoring")?);
        if !force {
            return Err(Failure::Usage(format!("{} exists: give --force to replace it", db.display())));
        }
    }
    // Copy beside the target, sync it, then rename it over the target: whenever the process
    // dies, the path holds the old database or the whole backup, never a part or nothing.
    let staging = db.with_extension("restoring");
    std::fs::copy(backup, &staging)
        .and_then(|_| std::fs::File::open(&staging)?.sync_all())
        .map_err(|e| Failure::Usage(format!("cannot copy the backup: {e}")))?;
    let kept = db.exists().then(|| {
        let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".before-restore");
        db.with_file_name(name)
    });
    if let Some(k) = &kept {
        // A second name for the old file (an older one under that name is replaced); the
        // rename below then takes the first. Without hard links, the old file moves aside
        // first, as before.
        let _ = std::fs::remove_file(k);
        if std::fs::hard_link(db, k).is_err() {
            std::fs::rename(db, k).map_err(|e| Failure::Usage(format!("cannot move the old database aside: {e}")))?;
        }
    }
    std::fs::rename(&staging, db).map_err(|e| Failure::Usage(format!("cannot put the backup in place: {e}")))?;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The renames are only as durable as the directory.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    print(&json!({"restored": db, "from": backup, "emails": emails, "previous": kept}));
    Ok(())
}

fn config_command(action: ConfigCommand) -> Result<(), Failure> {
    let (file, show) = match action {
        ConfigCommand::Check { config } => (config, false),
        ConfigCommand::Show { config } => (config, true),
    };
    let layers = Layers::new(file.as_deref(), std::env::vars().collect());
    match layers.resolve() {
        Ok(s) => {
            for w in &s.warnings {
                eprintln!("warning: {w}");
            }
            if show {
                let origins: serde_json::Map<String, Value> =
                    s.origins.iter().map(|(k, o)| (k.clone(), json!(o.to_string()))).collect();
                print(&json!({
                    "listen": s.listen.to_string(),
                    "tls": s.tls.is_some(),
                    "database": s.db,
                    "admin_socket": s.admin_socket,
                    "delivery": format!("{:?}", s.delivery),
                    "api_keys": s.keys.iter().map(|k| json!({"name": k.name, "permission": k.permission})).collect::<Vec<_>>(),
                    "dkim": s.dkim.iter().map(|d| json!({"domain": d.domain, "selector": d.selector})).collect::<Vec<_>>(),
                    "origins": origins,
                }));
            } else {
                out(format_args!(
                    "ok: the configuration is valid ({} settings given, {} keys)",
                    s.origins.values().filter(|o| !matches!(o, config::Origin::Default)).count(),
                    s.keys.len()
                ));
            }
            Ok(())
        }
        Err(problems) => {
            for p in &problems {
                out(p);
            }
            Err(Failure::Usage(format!("{} problem(s) in the configuration", problems.len())))
        }
    }
}

/// `classify`: the reading of each message, in the corpus scorer's output shape.
fn classify(files: &[PathBuf], batch: bool) -> Result<(), Failure> {
    let one = |path: &Path| -> Value {
        let raw = match std::fs::read(path) {
            Ok(r) => r,
            Err(e) => return json!({"file": path, "error": e.to_string()}),
        };
        let p = mailroom::core::inbound::parse(&raw);
        let bounces: Vec<Value> = p
            .bounces
            .iter()
            .map(|b| {
                let mut v = json!({"recipient": b.recipient, "status": b.status, "type": b.kind,
                       "subtype": b.subtype, "reason": b.reason, "diagnostic": b.diagnostic,
                       "delayed": b.delayed, "suppress": b.suppress});
                // The address as sent, where a DSN names it apart from the failed one (an alias).
                if let Some(o) = &b.original_recipient {
                    v["original_recipient"] = json!(o);
                }
                v
            })
            .collect();
        // `kind` tells a delay notice (recipients listed, `delayed` set, nothing suppressed) and
        // a success report from a failure: a reader of `bounces` alone would take them for one.
        json!({"file": path, "kind": p.kind, "bounces": bounces, "complaint": p.complaint,
               "complainants": p.complainants, "feedback_type": p.feedback_type,
               "recipient_complaint": p.is_recipient_complaint(), "reporter": p.reporter.name()})
    };
    if batch {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input).map_err(|e| Failure::Usage(format!("cannot read stdin: {e}")))?;
        for line in input.lines().filter(|l| !l.trim().is_empty()) {
            out(one(Path::new(line.trim())));
        }
    } else {
        for f in files {
            print(&one(f));
        }
    }
    Ok(())
}

/// `when`: the instant a phrase resolves to, by the same rules as `scheduled_at`.
fn when(phrase: &str, now: Option<&str>) -> Result<(), Failure> {
    let now = match now {
        Some(n) => mailroom::core::schedule::parse_instant(n).ok_or_else(|| {
            Failure::from(FieldError::new("now", Rule::Shape(format!("{n:?} is not an RFC 3339 time"))))
        })?,
        None => chrono::Utc::now(),
    };
    let at =
        mailroom::core::schedule::resolve(phrase, now, 30).map_err(|rule| FieldError::new("scheduled_at", rule))?;
    // The one command whose answer is not JSON: a bare RFC 3339 instant, for scripts.
    out(mailroom::core::email::rfc3339(at));
    Ok(())
}

async fn demo(store: &Store) -> Result<(), Failure> {
    let settings = store_settings(store)?;
    let db = open_alone(&settings, "the demo delivers in its own process: stop the server or use another --db")?;
    let engine: Engine = serve::build_engine(&settings, Arc::new(db)).map_err(Failure::Usage)?;
    let test_domain = &settings.test_domain;
    let batch: Vec<EmailRequest> = ["delivered", "bounced", "complained", "suppressed"]
        .iter()
        .map(|kind| {
            serde_json::from_value(json!({
                "from": "Acme <onboarding@acme.test>",
                "to": format!("{kind}+demo@{test_domain}"),
                "subject": format!("Demo: {kind}"),
                "html": format!("<p>This email will be <strong>{kind}</strong>.</p>"),
                "text": format!("This email will be {kind}."),
                "tags": [{"name": "demo", "value": kind}],
            }))
            .map_err(|e| Failure::Usage(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let accepted = engine.send_batch(batch, BatchOptions::default()).await?;
    let worker = engine.worker(Arc::new(serve::sandbox(&settings.db, test_domain)), WorkerConfig::default());
    worker.run_until_idle().await?;
    let mut out = Vec::new();
    for r in &accepted.data {
        let view: EmailView = engine.get(r.id).await?;
        out.push(json!({
            "id": view.id,
            "to": view.to,
            "last_event": view.last_event,
            "events": view.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        }));
    }
    // The list as `suppressions list` and the API show it (a demo's list is four entries at most).
    let suppressions: Vec<Value> =
        engine.suppressions().await?.iter().map(|e| mailroom::core::suppressions::json(engine.account(), e)).collect();
    print(&json!({"db": settings.db, "emails": out, "suppressions": suppressions}));
    Ok(())
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

fn serve_main(args: cli::ServeArgs, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let settings = settings(args.store.config.as_deref(), args.store.db.as_deref(), |l| {
        l.flag("server.listen", "--listen", args.listen.clone());
        l.flag("inbound.listen", "--inbound", args.inbound.clone());
        l.flag("database.url", "--database-url", args.database_url.clone());
        l.flag("server.tls_cert", "--tls-cert", args.tls_cert.as_ref().map(|p| p.display().to_string()));
        l.flag("server.tls_key", "--tls-key", args.tls_key.as_ref().map(|p| p.display().to_string()));
        l.flag("rate_limits.per_key", "--rate-limit", args.rate_limit.map(|r| r.to_string()));
        l.flag("rate_limits.per_account", "--rate-limit", args.rate_limit.map(|r| r.to_string()));
        delivery_flags(l, &args.delivery);
        l.flag_keys(&args.api_keys);
    });
    let settings = match settings {
        Ok(s) => s,
        Err(f) => {
            eprintln!("mailroom: {}", f.body()["message"].as_str().unwrap_or("invalid configuration"));
            return ExitCode::FAILURE;
        }
    };
    init_logging(&settings.log_level, settings.log_json);
    match runtime.block_on(serve::serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            tracing::error!("{why}");
            eprintln!("mailroom: {why}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailroom: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Command::Serve(args) = cli.command {
        return serve_main(*args, &runtime);
    }
    // Commands log only warnings unless asked (stdout is their JSON).
    init_logging("warn", false);
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            print(&f.body());
            ExitCode::FAILURE
        }
    }
}
