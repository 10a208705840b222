//! The command line's shape (clap). Each command takes only the options it uses.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "mailroom",
    version,
    about = "mailroom: a self-hosted email engine speaking the hosted service's REST API.",
    long_about = "mailroom: a self-hosted email engine speaking the hosted service's REST API.\n\n\
        `mailroom serve` runs the API and delivers mail. The other commands work on the same \
        database; while a server holds it, they ask the server (through its admin socket).\n\n\
        Every command prints JSON on stdout; errors print the error body \
        {\"statusCode\", \"name\", \"message\"} and exit with status 1."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the data is: the configuration file and the database it names (a flag beats both).
#[derive(Args, Debug, Clone, Default)]
pub struct Store {
    /// The configuration file (TOML). Settings also come from MAILROOM_* variables.
    #[arg(long, short = 'c', value_name = "FILE", env = "MAILROOM_CONFIG")]
    pub config: Option<PathBuf>,
    /// The database file (default ./mailroom.redb; `database.path` in the configuration).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

/// How mail leaves (overrides `[delivery]` in the configuration).
/// Which page of a list, as the API's `limit`, `after` and `before` name it.
#[derive(Args, Debug, Clone, Default)]
pub struct Page {
    /// How many (1-100, default 20).
    #[arg(long)]
    pub limit: Option<usize>,
    /// The items after this id, in the list's order.
    #[arg(long, value_name = "ID", conflicts_with = "before")]
    pub after: Option<String>,
    /// The items before this id, in the list's order.
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Delivery {
    /// Relay through this SMTP server: smtp://[user:pass@]host[:port][?tls=required|none]
    /// or smtps://… (test addresses stay simulated).
    #[arg(long = "smtp", value_name = "URL", conflicts_with = "direct")]
    pub relay: Option<String>,
    /// Deliver straight to each recipient domain's MX hosts (port 25).
    #[arg(long)]
    pub direct: bool,
    /// The nameserver for every lookup (default: the system's).
    #[arg(long, value_name = "ADDR:PORT")]
    pub dns: Option<SocketAddr>,
    /// SMTP connections open at most (in total, and to one destination).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Hand-overs at once: emails durably marked as being handed over whose outcome is not
    /// yet durable (default: 8 per connection when relaying). More keep the connections
    /// busier while marks and outcomes commit; each is one email a crash can leave in doubt.
    #[arg(long, value_name = "N")]
    pub handovers: Option<usize>,
    /// The name to give in EHLO.
    #[arg(long, value_name = "NAME")]
    pub helo: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the REST API and deliver mail, until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Send one email: a JSON email object from FILE or stdin.
    Send {
        /// A file holding the email object (the hosted service's JSON); stdin when absent.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Makes a retry safe: the same key and body within 24 hours answers the first
        /// result instead of sending again (1-256 characters).
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        #[command(flatten)]
        store: Store,
    },
    /// Send a batch: a JSON array of up to 100 email objects from FILE or stdin.
    Batch {
        /// A file holding the array; stdin when absent.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Store the valid items and report the invalid ones, instead of refusing the batch.
        #[arg(long)]
        permissive: bool,
        /// Makes a retry safe: the same key and body within 24 hours answers the first
        /// result instead of sending again (1-256 characters).
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        #[command(flatten)]
        store: Store,
    },
    /// Print one email with its `last_event` and its events.
    Get {
        /// The email's id.
        id: String,
        #[command(flatten)]
        store: Store,
    },
    /// List emails, newest first (`--after`: older ones; `--before`: newer ones).
    List {
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        store: Store,
    },
    /// Email metrics, as `GET /emails/metrics` answers them: counts and rates of the emails
    /// accepted in a range, in total and by period, sending domain or email.
    Metrics {
        /// The range's start: an ISO 8601 date (midnight in --timezone) or date-time
        /// (default: six days before the end).
        #[arg(long, value_name = "DATE")]
        start: Option<String>,
        /// The range's end, not included (default, and at most: now).
        #[arg(long, value_name = "DATE")]
        end: Option<String>,
        /// Break down by `period`, `domain` or `email` (repeatable; `period` with one of the
        /// others).
        #[arg(long = "by", value_name = "DIMENSION")]
        by: Vec<String>,
        /// The period: hourly, daily (default), weekly or monthly.
        #[arg(long)]
        granularity: Option<String>,
        /// The IANA time zone periods and dates are reckoned in (default UTC).
        #[arg(long, value_name = "ZONE")]
        timezone: Option<String>,
        /// Only these metrics, comma-separated (default: all 22).
        #[arg(long, value_name = "LIST")]
        metrics: Option<String>,
        /// Only emails from this sending domain (its id; repeatable).
        #[arg(long = "domain-id", value_name = "ID")]
        domain_ids: Vec<String>,
        /// Only this email (repeatable).
        #[arg(long = "email-id", value_name = "ID")]
        email_ids: Vec<String>,
        #[command(flatten)]
        store: Store,
    },
    /// Usage, as `GET /usage` answers it: emails sent and received today and this month (UTC),
    /// domains, and the rate limit API keys run under. mailroom keeps no quotas
    Usage {
        #[command(flatten)]
        store: Store,
    },
    /// Move a scheduled email to another time (ISO 8601 or English).
    Reschedule {
        /// The email's id.
        id: String,
        /// When: "in 2 hours", "tomorrow at 9am ET", "2026-12-24T09:00:00Z".
        #[arg(required = true, num_args = 1..)]
        when: Vec<String>,
        #[command(flatten)]
        store: Store,
    },
    /// Cancel a scheduled email (for good).
    Cancel {
        /// The email's id.
        id: String,
        #[command(flatten)]
        store: Store,
    },
    /// Deliver due emails without serving the API (not while a server holds the database:
    /// it delivers already).
    Work {
        /// Stop once nothing is due (otherwise run until Ctrl-C).
        #[arg(long)]
        until_idle: bool,
        /// Emails in flight at once (default: twice the hand-overs, at least 64).
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
        /// Work the queue of this PostgreSQL database (`database.url`) instead of the redb
        /// file; several `work` processes and servers may share it.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        #[command(flatten)]
        delivery: Delivery,
        #[command(flatten)]
        store: Store,
    },
    /// Manage the suppression list.
    Suppressions {
        #[command(subcommand)]
        action: SuppressionCommand,
    },
    /// Manage domains: DNS records, DKIM keys, verification.
    Domains {
        #[command(subcommand)]
        action: DomainCommand,
    },
    /// Manage webhook endpoints.
    Webhooks {
        #[command(subcommand)]
        action: WebhookCommand,
    },
    /// Read the event log.
    Events {
        #[command(subcommand)]
        action: EventsCommand,
    },
    /// Manage API keys (the configuration's own keys are managed in the configuration).
    Keys {
        #[command(subcommand)]
        action: KeyCommand,
    },
    /// The eight deliverability checks for a stored email (ID) or a draft (--json FILE).
    Insights {
        /// A stored email's id.
        #[arg(required_unless_present = "json", conflicts_with = "json")]
        id: Option<String>,
        /// A draft in the wire format (a JSON email object).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// The nameserver to ask (default: the configuration's, else the system's).
        #[arg(long, value_name = "ADDR:PORT")]
        dns: Option<SocketAddr>,
        #[command(flatten)]
        store: Store,
    },
    /// Apply a bounce or complaint message (from FILE or stdin) to the email it answers.
    IngestBounce {
        /// The message (RFC 5322 bytes); stdin when absent.
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        store: Store,
    },
    /// Read bounce, complaint or auto-reply messages and print what they say, one JSON
    /// object per file. Needs no database.
    Classify {
        /// The messages.
        #[arg(value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Read the paths from stdin, one per line, and print one JSON line per path.
        #[arg(long)]
        batch: bool,
    },
    /// Resolve a `scheduled_at` value (ISO 8601 or English) to a UTC instant. Needs no
    /// database.
    When {
        /// The phrase, e.g. "tomorrow at 9am ET" (quoted, or as several words).
        #[arg(required = true, num_args = 1..)]
        phrase: Vec<String>,
        /// The "now" to resolve against (RFC 3339; default: the clock).
        #[arg(long, value_name = "RFC3339")]
        now: Option<String>,
    },
    /// Prune the bodies and old events of finished emails (ids and metadata stay).
    Prune {
        /// Keep emails younger than this many days whole.
        #[arg(long, value_name = "DAYS")]
        older_than_days: u32,
        #[command(flatten)]
        store: Store,
    },
    /// Rewrite the database file to give back the space pruning freed (not while a server
    /// holds it).
    Compact {
        #[command(flatten)]
        store: Store,
    },
    /// Write a consistent copy of the database to PATH; works while a server runs.
    Backup {
        /// Where to write it (must not exist).
        path: PathBuf,
        #[command(flatten)]
        store: Store,
    },
    /// Replace the database with a backup (the server must be stopped).
    Restore {
        /// The backup file.
        backup: PathBuf,
        /// Replace an existing database (it is kept beside as <db>.before-restore).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        store: Store,
    },
    /// Check or show the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Send a batch to each test address, deliver it in the sandbox, print each email's events.
    Demo {
        #[command(flatten)]
        store: Store,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where to listen (default 127.0.0.1:3000; `server.listen`).
    #[arg(long, alias = "addr", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// A full-access API key to accept (at least 12 characters); repeatable. Keys given here
    /// are managed by the configuration: the API cannot revoke them.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,
    /// Requests per second per key and per account (0: unlimited).
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Receive mail by SMTP on this address (`inbound.listen`): receiving domains and
    /// bounces to the bounce domain.
    #[arg(long, value_name = "ADDR:PORT")]
    pub inbound: Option<String>,
    /// Keep everything in this PostgreSQL database (`database.url`) instead of the redb
    /// file: several `serve` processes may share it.
    #[arg(long, value_name = "postgres://…")]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub delivery: Delivery,
    #[command(flatten)]
    pub store: Store,
}

#[derive(Subcommand, Debug)]
pub enum SuppressionCommand {
    /// Print one page of the list, in address order, as `GET /suppressions` answers (each
    /// entry with the id a cursor takes).
    List {
        #[command(flatten)]
        page: Page,
        /// Only entries of this origin.
        #[arg(long, value_parser = ["bounce", "complaint", "manual", "unsubscribe"])]
        origin: Option<String>,
        #[command(flatten)]
        store: Store,
    },
    /// Suppress an address by hand.
    Add {
        /// The address.
        address: String,
        /// Why.
        #[arg(long, value_parser = ["bounced", "complained"], default_value = "bounced")]
        reason: String,
        #[command(flatten)]
        store: Store,
    },
    /// Take an address off the list.
    Remove {
        /// The address.
        address: String,
        #[command(flatten)]
        store: Store,
    },
}

#[derive(Subcommand, Debug)]
pub enum DomainCommand {
    /// Add a domain: a DKIM key is generated and the DNS records to publish are printed.
    Add {
        /// The domain, e.g. mail.acme.test.
        domain: String,
        /// Turn click tracking on.
        #[arg(long)]
        click_tracking: bool,
        /// Turn open tracking on.
        #[arg(long)]
        open_tracking: bool,
        /// Receive mail for it (adds the MX record).
        #[arg(long)]
        receiving: bool,
        /// The tracking host's label (links → links.<domain>).
        #[arg(long)]
        tracking_subdomain: Option<String>,
        /// The return-path label (default send → send.<domain>).
        #[arg(long)]
        return_path: Option<String>,
        /// An Ed25519 key instead of RSA-2048.
        #[arg(long)]
        ed25519: bool,
        #[command(flatten)]
        store: Store,
    },
    /// Print the domains.
    List {
        #[command(flatten)]
        store: Store,
    },
    /// Print a domain with its records and their statuses.
    Show {
        domain: String,
        #[command(flatten)]
        store: Store,
    },
    /// Look the domain's records up now and print what was found.
    Verify {
        domain: String,
        /// The nameserver to ask (default: the configuration's, or the system's).
        #[arg(long)]
        dns: Option<std::net::SocketAddr>,
        #[command(flatten)]
        store: Store,
    },
    /// Publish a new DKIM key beside the current one (which signs until the new one verifies).
    RotateKey {
        domain: String,
        #[command(flatten)]
        store: Store,
    },
    /// Remove a domain (its mail is no longer signed).
    Remove {
        domain: String,
        #[command(flatten)]
        store: Store,
    },
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Add an endpoint; its signing secret is printed.
    Add {
        /// Where events are posted (http or https).
        url: String,
        /// The event types it receives (comma-separated or repeated), e.g. email.delivered.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        #[command(flatten)]
        store: Store,
    },
    /// Print the endpoints.
    List {
        #[command(flatten)]
        store: Store,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Print the event log as JSON lines, from after `--after`; with `--follow`, keep printing
    /// new entries as they are written.
    Tail {
        /// Start after this entry number (0: from the start).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Print at most this many entries (without --follow).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Keep following the log.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        store: Store,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create a key; its token is printed once.
    Create {
        /// What to call it.
        name: String,
        /// Only the sending endpoints.
        #[arg(long)]
        sending_access: bool,
        /// With --sending-access: send only from this domain (and its subdomains).
        #[arg(long, value_name = "DOMAIN", requires = "sending_access")]
        domain: Option<String>,
        #[command(flatten)]
        store: Store,
    },
    /// List the keys (never their tokens).
    List {
        #[command(flatten)]
        store: Store,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key's id.
        id: String,
        #[command(flatten)]
        store: Store,
    },
    /// Print a fresh random token, for a configuration file (nothing is stored).
    Token,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the configuration: every problem with its line, variable or flag; exit 1 if any.
    Check {
        /// The configuration file.
        #[arg(long, short = 'c', value_name = "FILE", env = "MAILROOM_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the effective settings and where each came from (tokens hidden).
    Show {
        /// The configuration file.
        #[arg(long, short = 'c', value_name = "FILE", env = "MAILROOM_CONFIG")]
        config: Option<PathBuf>,
    },
}
