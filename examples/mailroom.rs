//! The mailroom command line: the engine on its embedded redb default.
//!
//! ```text
//! cargo run --release --example mailroom -- [--db PATH] COMMAND
//! ```
//!
//! Every command prints JSON on stdout (`when` prints a bare RFC 3339 instant). Every error prints the hosted service's error body
//! `{"statusCode", "name", "message"}` on stdout and exits with status 1.

use clap::{Args, Parser, Subcommand};
use mailroom::core::Transport;
use mailroom::core::email::{EmailId, EmailView, PageRequest};
use mailroom::core::ports::{AttachmentLoader, LoadedAttachment, SuppressionReason};
use mailroom::core::request::{EmailRequest, batch_from_json};
use mailroom::core::sandbox::{DEFAULT_TEST_DOMAIN, OutboxMessage, SandboxTransport, WithTestAddresses};
use mailroom::core::worker::WorkerConfig;
use mailroom::core::{BatchMode, BatchOptions, Engine, Error, FieldError, Rule, SendOptions};
use mailroom::dns::HickoryResolver;
use mailroom::redb::RedbStorage;
use mailroom::smtp::{RelayTarget, SmtpConfig, SmtpTransport};
use serde_json::json;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "mailroom", about = "An embeddable email engine, driven from the command line.")]
struct Cli {
    /// The redb file that holds everything.
    #[arg(long, global = true, default_value = "./mailroom.redb")]
    db: PathBuf,
    /// The domain of the test addresses (delivered@, bounced@, complained@, suppressed@).
    #[arg(long, global = true, default_value = DEFAULT_TEST_DOMAIN)]
    test_domain: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send one email (a JSON email object from FILE or stdin).
    Send {
        file: Option<PathBuf>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Send a batch (a JSON array of up to 100 email objects from FILE or stdin).
    Batch {
        file: Option<PathBuf>,
        /// Store the valid items and report the invalid ones, instead of refusing the batch.
        #[arg(long)]
        permissive: bool,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Print one email with its `last_event` and its events.
    Get { id: String },
    /// List emails, newest first.
    List(ListArgs),
    /// Deliver due emails: through the sandbox (default), a relay (--smtp), or direct to MX.
    Work {
        /// Stop once nothing is due (otherwise run until Ctrl-C).
        #[arg(long)]
        until_idle: bool,
        /// Messages in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[command(flatten)]
        delivery: Delivery,
    },
    /// Serve the REST API (the hosted service's wire format) and deliver in the same process,
    /// until SIGTERM or Ctrl-C.
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: std::net::SocketAddr,
        /// A full-access API key to accept (`re_...`); repeatable. Without one, a key is
        /// created and printed.
        #[arg(long = "api-key", value_name = "KEY")]
        api_keys: Vec<String>,
        /// Requests per second per API key (0: unlimited).
        #[arg(long, default_value_t = 10)]
        rate_limit: u32,
        #[command(flatten)]
        delivery: Delivery,
    },
    /// Manage sending domains and their tracking settings.
    Domains {
        #[command(subcommand)]
        action: DomainCommand,
    },
    /// The eight deliverability checks for a stored email (ID) or a draft (--json FILE), as a
    /// JSON array.
    Insights {
        /// A stored email's id.
        #[arg(required_unless_present = "json", conflicts_with = "json")]
        id: Option<String>,
        /// A draft in the wire format (JSON email object).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// The nameserver to ask (default: the system's).
        #[arg(long, value_name = "ADDR:PORT")]
        dns: Option<std::net::SocketAddr>,
    },
    /// Manage the suppression list.
    Suppressions {
        #[command(subcommand)]
        action: SuppressionCommand,
    },
    /// Resolve a `scheduled_at` value (ISO 8601 or English) to a UTC instant.
    When {
        /// The phrase, e.g. "tomorrow at 9am ET" (quote it, or give it as several words).
        #[arg(required = true, num_args = 1..)]
        phrase: Vec<String>,
        /// The "now" to resolve against (RFC 3339; default: the clock).
        #[arg(long)]
        now: Option<String>,
    },
    /// Move a scheduled email to another time (ISO 8601 or English).
    Reschedule {
        id: String,
        #[arg(required = true, num_args = 1..)]
        when: Vec<String>,
    },
    /// Cancel a scheduled email (for good).
    Cancel { id: String },
    /// Read bounce, complaint or auto-reply messages and print what they say, one JSON object
    /// per file.
    Classify {
        files: Vec<PathBuf>,
        /// Read the paths from stdin, one per line, and print one JSON line per path.
        #[arg(long)]
        batch: bool,
    },
    /// Apply a bounce or complaint message to the email it answers (events, suppressions).
    IngestBounce { file: Option<PathBuf> },
    /// Prune the bodies and old events of finished emails (ids and metadata stay).
    Prune {
        /// Keep emails younger than this many days whole.
        #[arg(long)]
        older_than_days: u32,
    },
    /// Rewrite the database file to give back the space that deletions and pruning freed.
    Compact,
    /// Send a batch to each test address, deliver it, and print each email's events.
    Demo,
}

#[derive(Args, Debug)]
struct ListArgs {
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, conflicts_with = "before")]
    after: Option<String>,
    #[arg(long)]
    before: Option<String>,
}

#[derive(Subcommand, Debug)]
enum DomainCommand {
    /// Register a sending domain (or change its settings).
    Add {
        domain: String,
        #[arg(long)]
        click_tracking: bool,
        #[arg(long)]
        open_tracking: bool,
    },
    /// Print the registered domains.
    List,
}

#[derive(Subcommand, Debug)]
enum SuppressionCommand {
    /// Print every suppressed address.
    List,
    /// Suppress an address by hand.
    Add {
        address: String,
        #[arg(long, value_parser = ["bounced", "complained"], default_value = "bounced")]
        reason: String,
    },
    /// Take an address off the list.
    Remove { address: String },
}

/// Loads `path` attachments from local files (relative to the working directory).
#[derive(Debug)]
struct FileLoader;

#[async_trait::async_trait]
impl AttachmentLoader for FileLoader {
    async fn load(&self, path: &str) -> Result<LoadedAttachment, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{path}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{path}: not a regular file"));
        }
        let content = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        Ok(LoadedAttachment { content, content_type: None })
    }
}

/// How `work` and `serve` deliver.
#[derive(Args, Debug)]
struct Delivery {
    /// Relay through this SMTP server (`smtp://[user:pass@]host[:port][?tls=required|none]`
    /// or `smtps://...`) instead of the sandbox. Test addresses stay simulated.
    #[arg(long, value_name = "URL", conflicts_with = "direct")]
    smtp: Option<String>,
    /// Deliver straight to each recipient domain's MX hosts (port 25).
    #[arg(long)]
    direct: bool,
    /// The nameserver for --direct (default: the system's).
    #[arg(long, value_name = "ADDR:PORT", requires = "direct")]
    dns: Option<std::net::SocketAddr>,
    /// Open SMTP connections at most (in total, and to one destination).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// The name to give in EHLO.
    #[arg(long, default_value = "localhost")]
    helo: String,
}

impl Delivery {
    /// The transport, and whether it is SMTP.
    fn transport(self, sandbox: SandboxTransport) -> Result<(Arc<dyn Transport>, bool), Failure> {
        let mut config = match (self.smtp, self.direct) {
            (Some(url), _) => SmtpConfig::relay(RelayTarget::parse(&url)?),
            (None, true) => {
                let resolver = match self.dns {
                    Some(addr) => HickoryResolver::with_nameserver(addr),
                    None => HickoryResolver::system().map_err(|e| Failure::Other(e.to_string()))?,
                };
                SmtpConfig::direct(Arc::new(resolver))
            }
            (None, false) => return Ok((Arc::new(sandbox), false)),
        };
        config.max_connections = self.connections;
        config.max_per_destination = self.connections;
        config.helo_name = self.helo;
        Ok((Arc::new(WithTestAddresses::new(sandbox, Arc::new(SmtpTransport::new(config)?))), true))
    }
}

enum Failure {
    Engine(Error),
    Other(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Engine(e)
    }
}

impl From<mailroom::smtp::ConfigError> for Failure {
    fn from(e: mailroom::smtp::ConfigError) -> Self {
        Failure::Other(e.to_string())
    }
}

impl From<mailroom::core::FieldError> for Failure {
    fn from(e: mailroom::core::FieldError) -> Self {
        Failure::Engine(e.into())
    }
}

fn read_input(file: Option<&Path>) -> Result<Vec<u8>, Failure> {
    match file {
        Some(p) => std::fs::read(p).map_err(|e| Failure::Other(format!("cannot read {}: {e}", p.display()))),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| Failure::Other(format!("cannot read stdin: {e}")))?;
            Ok(buf)
        }
    }
}

fn print(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
}

fn outbox_dir(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".outbox");
    db.with_file_name(name)
}

/// The sandbox, writing every outbox message to `<db>.outbox/<email id>.eml` so that other
/// processes (and people) can read what was "sent".
fn sandbox(db: &Path, test_domain: &str) -> SandboxTransport {
    let dir = outbox_dir(db);
    SandboxTransport::new(test_domain).with_hook(move |m: &OutboxMessage| {
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join(format!("{}.eml", m.envelope.email_id)), &m.message);
        }
    })
}

/// The API and the worker in one process; both stop on SIGTERM or Ctrl-C, the worker
/// finishing what it has in flight.
async fn serve(
    engine: Engine,
    addr: std::net::SocketAddr,
    (keys, api_keys, logs): (mailroom::http::KeyRing, Vec<String>, Arc<dyn mailroom::core::ports::RequestLogStore>),
    rate_limit: u32,
    transport: Arc<dyn Transport>,
) -> Result<(), Failure> {
    use mailroom::http::{Api, KeyPermission};
    let account = engine.account().clone();
    for k in &api_keys {
        keys.insert(&account, k, "command line", KeyPermission::FullAccess)
            .await
            .map_err(|e| Failure::Engine(e.into()))?;
    }
    if api_keys.is_empty() && keys.list(&account).await.map_err(|e| Failure::Engine(e.into()))?.is_empty() {
        let (_, token) = keys
            .create(&account, "created at start", KeyPermission::FullAccess)
            .await
            .map_err(|e| Failure::Engine(e.into()))?;
        tracing::info!("no API key yet; created {token} (shown once)");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Other(format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(%addr, "serving the API; the worker delivers in the same process");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let worker = engine.worker(transport, WorkerConfig::default());
    let until = stopped(stop_rx.clone());
    let worker = tokio::spawn(async move { worker.run(until).await });
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new requests; finishing deliveries in flight");
        let _ = stop_tx.send(true);
    });
    let app = mailroom::http::router(Api::new(engine, keys).rate_limit(rate_limit).request_logs(logs));
    axum::serve(listener, app)
        .with_graceful_shutdown(stopped(stop_rx))
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    let report = worker.await.map_err(|e| Failure::Other(e.to_string()))??;
    tracing::info!(processed = report.processed, released = report.released, "stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::When { phrase, now } = &cli.command {
        return when(&phrase.join(" "), now.as_deref());
    }
    if let Command::Classify { files, batch } = &cli.command {
        return classify(files, *batch);
    }
    let store = RedbStorage::open(&cli.db).map_err(|e| Failure::Engine(e.into()))?;
    let engine = Engine::builder(Arc::new(store.clone()))
        .test_domain(&cli.test_domain)
        .attachment_loader(Arc::new(FileLoader))
        .api_keys(Arc::new(store.clone()))
        .build();
    match cli.command {
        Command::Send { file, idempotency_key } => {
            let request = EmailRequest::from_json(&read_input(file.as_deref())?)?;
            let sent = engine.send(request, SendOptions { idempotency_key }).await?;
            print(&sent);
        }
        Command::Batch { file, permissive, idempotency_key } => {
            let requests = batch_from_json(&read_input(file.as_deref())?)?;
            let mode = if permissive { BatchMode::Permissive } else { BatchMode::Strict };
            print(&engine.send_batch(requests, BatchOptions { mode, idempotency_key }).await?);
        }
        Command::Get { id } => {
            let id: EmailId = id.parse()?;
            print(&engine.get(id).await?);
        }
        Command::List(args) => {
            let after = args.after.as_deref().map(str::parse::<EmailId>).transpose()?;
            let before = args.before.as_deref().map(str::parse::<EmailId>).transpose()?;
            print(&engine.list(PageRequest::new(args.limit, after, before)?).await?);
        }
        Command::Work { until_idle, concurrency, delivery } => {
            let connections = delivery.connections;
            let (transport, relaying) = delivery.transport(sandbox(&cli.db, &cli.test_domain))?;
            // More messages in flight than connections would only queue for a connection.
            let concurrency = if relaying { concurrency.max(connections) } else { concurrency };
            let worker = engine.worker(transport, WorkerConfig { concurrency, ..Default::default() });
            let report = if until_idle {
                worker.run_until_idle().await?
            } else {
                worker.run(async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await?
            };
            print(&json!({
                "processed": report.processed,
                "handed_over": report.handed_over,
                "released": report.released,
                "outbox": outbox_dir(&cli.db),
            }));
        }
        Command::Domains { action } => {
            use mailroom::core::ports::{DomainRecord, DomainStore};
            match action {
                DomainCommand::Add { domain, click_tracking, open_tracking } => {
                    let name = domain.trim().trim_end_matches('.').to_ascii_lowercase();
                    if !name.contains('.') || name.contains(['@', ' ', '/']) {
                        return Err(Failure::Other(format!("{domain:?} is not a domain name")));
                    }
                    let record = DomainRecord { name, click_tracking, open_tracking, created_at: engine.clock().now() };
                    store.domain_put(engine.account(), record.clone()).await.map_err(|e| Failure::Engine(e.into()))?;
                    print(&record);
                }
                DomainCommand::List => {
                    let list = store.domain_list(engine.account()).await.map_err(|e| Failure::Engine(e.into()))?;
                    print(&json!({"object": "list", "data": list}));
                }
            }
        }
        Command::Insights { id, json, dns } => {
            let resolver = match dns {
                Some(addr) => HickoryResolver::with_nameserver(addr),
                None => HickoryResolver::system().map_err(|e| Failure::Other(e.to_string()))?,
            };
            let all = match (id, json) {
                (Some(id), _) => engine.insights(id.parse::<EmailId>()?, &store, &resolver).await?,
                (None, Some(file)) => {
                    // A draft need not be complete: what it lacks shows as `unknown`.
                    let draft = EmailRequest::from_json(&read_input(Some(&file))?)?;
                    engine.draft_insights(&draft, &store, &resolver).await?
                }
                (None, None) => return Err(Failure::Other("give an email id or --json FILE".into())),
            };
            print(&all);
        }
        Command::Suppressions { action } => match action {
            SuppressionCommand::List => print(&json!({"object": "list", "data": engine.suppressions().await?})),
            SuppressionCommand::Add { address, reason } => {
                let reason =
                    if reason == "complained" { SuppressionReason::Complained } else { SuppressionReason::Bounced };
                print(&engine.suppress(&address, reason).await?);
            }
            SuppressionCommand::Remove { address } => {
                engine.unsuppress(&address).await?;
                print(&json!({"object": "suppression", "address": address, "deleted": true}));
            }
        },
        Command::When { .. } | Command::Classify { .. } => {}
        Command::IngestBounce { file } => {
            print(&engine.ingest_bounce(&read_input(file.as_deref())?).await?);
        }
        Command::Reschedule { id, when } => {
            let id: EmailId = id.parse()?;
            print(&engine.reschedule(id, &when.join(" ")).await?);
        }
        Command::Cancel { id } => {
            let id: EmailId = id.parse()?;
            print(&engine.cancel(id).await?);
        }
        Command::Prune { older_than_days } => {
            let pruned = engine.prune_older_than(chrono::Duration::days(i64::from(older_than_days))).await?;
            print(&json!({"pruned": pruned}));
        }
        Command::Compact => {
            let size = || std::fs::metadata(&cli.db).map(|m| m.len()).unwrap_or(0);
            let before = size();
            let mut changed = false;
            // redb compacts incrementally: repeat until a pass moves nothing.
            while store.compact().await.map_err(|e| Failure::Engine(e.into()))? {
                changed = true;
            }
            print(&json!({"compacted": changed, "bytes_before": before, "bytes_after": size()}));
        }
        Command::Demo => demo(&engine, &cli.db, &cli.test_domain).await?,
        Command::Serve { addr, api_keys, rate_limit, delivery } => {
            let transport = delivery.transport(sandbox(&cli.db, &cli.test_domain))?.0;
            let keys = mailroom::http::KeyRing::new(Arc::new(store.clone()));
            serve(engine, addr, (keys, api_keys, Arc::new(store.clone())), rate_limit, transport).await?;
        }
    }
    Ok(())
}

/// `classify`: the reading of each message, in the corpus scorer's output shape.
fn classify(files: &[PathBuf], batch: bool) -> Result<(), Failure> {
    let one = |path: &Path| -> serde_json::Value {
        let raw = match std::fs::read(path) {
            Ok(r) => r,
            Err(e) => return json!({"file": path, "error": e.to_string()}),
        };
        let p = mailroom::core::inbound::parse(&raw);
        let bounces: Vec<serde_json::Value> = p
            .bounces
            .iter()
            .map(|b| {
                json!({"recipient": b.recipient, "status": b.status, "type": b.kind, "subtype": b.subtype,
                       "reason": b.reason, "diagnostic": b.diagnostic})
            })
            .collect();
        json!({"file": path, "bounces": bounces, "complaint": p.complaint})
    };
    if batch {
        let mut input = String::new();
        std::io::stdin().read_to_string(&mut input).map_err(|e| Failure::Other(format!("cannot read stdin: {e}")))?;
        for line in input.lines().filter(|l| !l.trim().is_empty()) {
            println!("{}", one(Path::new(line.trim())));
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
            Failure::Engine(FieldError::new("now", Rule::Shape(format!("{n:?} is not an RFC 3339 time"))).into())
        })?,
        None => chrono::Utc::now(),
    };
    let at = mailroom::core::schedule::resolve(phrase, now, 30)
        .map_err(|rule| Failure::Engine(FieldError::new("scheduled_at", rule).into()))?;
    // The one command whose answer is not JSON: a bare RFC 3339 instant, for scripts.
    println!("{}", mailroom::core::email::rfc3339(at));
    Ok(())
}

async fn demo(engine: &Engine, db: &Path, test_domain: &str) -> Result<(), Failure> {
    // A fresh label per run: `bounced+demo-1@` is suppressed after its bounce, so reusing it
    // would show `suppressed` the second time (which is right, but not the demo).
    let run = engine.clock().now().timestamp();
    let batch: Vec<EmailRequest> = ["delivered", "bounced", "complained", "suppressed"]
        .iter()
        .map(|kind| {
            serde_json::from_value(json!({
                "from": "Acme <onboarding@acme.test>",
                "to": format!("{kind}+demo-{run}@{test_domain}"),
                "subject": format!("Demo: {kind}"),
                "html": format!("<p>This email will be <strong>{kind}</strong>.</p>"),
                "text": format!("This email will be {kind}."),
                "tags": [{"name": "demo", "value": kind}],
            }))
            .map_err(|e| Failure::Other(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let accepted = engine.send_batch(batch, BatchOptions::default()).await?;
    let worker = engine.worker(Arc::new(sandbox(db, test_domain)), WorkerConfig::default());
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
    print(&json!({"db": db, "emails": out, "suppressions": engine.suppressions().await?}));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr (stdout carries the commands' JSON); RUST_LOG filters them.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Engine(e)) => {
            print(&e.body());
            ExitCode::FAILURE
        }
        Err(Failure::Other(message)) => {
            print(&json!({"statusCode": 400, "name": "validation_error", "message": message}));
            ExitCode::FAILURE
        }
    }
}
