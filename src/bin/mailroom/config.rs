//! The configuration: a TOML file (`--config`), environment variables and flags, in that
//! order of precedence (a flag beats a variable beats the file beats the default).
//!
//! Every setting `section.key` of the file is also the variable `MAILROOM_SECTION_KEY`
//! (`server.listen` is `MAILROOM_SERVER_LISTEN`); API keys also come from `MAILROOM_API_KEYS`
//! (tokens separated by commas) and from `--api-key`. Problems are collected, not stopped
//! at: `mailroom config check` names each with where it came from (the file's line, the
//! variable, the flag) and the rule it breaks. An unknown setting is a problem, never
//! silently ignored.
//!
//! This module only reads and checks; what each setting does is decided where it is used.

use ipnet::IpNet;
use mailroom::core::email::AccountId;
use mailroom::core::keys::ManagedKey;
use mailroom::core::ports::KeyPermission;
use mailroom::core::validate::Limits;
use mailroom::core::worker::InDoubt;
use mailroom::fetch::FetchConfig;
use mailroom::http::{ApiConfig, RateLimits, ServerConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File { path: PathBuf, line: usize },
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(n) => write!(f, "flag {n}"),
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub origin: Origin,
    pub setting: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.origin, self.setting, self.message)
    }
}

/// How mail leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Nothing leaves the machine: every recipient is simulated (test addresses by their
    /// outcome, others into the outbox folder).
    Sandbox,
    /// Through one smarthost.
    Relay(String),
    /// Straight to each recipient domain's MX hosts.
    Direct,
}

/// One DKIM key from the configuration.
#[derive(Debug, Clone)]
pub struct DkimSpec {
    pub domain: String,
    pub selector: String,
    pub key_file: PathBuf,
    pub ed25519: bool,
    pub origin: Origin,
}

/// Everything the composition root needs, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub db: PathBuf,
    /// `database.url`: PostgreSQL instead of the redb file at `db`.
    pub database_url: Option<String>,
    /// Connections to PostgreSQL at most (per process).
    pub database_connections: usize,
    /// `database.quick_repair`: each redb commit records the allocator state, so that a
    /// restart after a crash does not read the whole file first.
    pub quick_repair: bool,
    pub admin_socket: PathBuf,
    /// The secret that signs tracking and unsubscribe links (made at first start).
    pub link_key_file: PathBuf,
    pub metrics: bool,
    pub keys: Vec<ManagedKey>,
    pub delivery: DeliveryMode,
    pub connections: usize,
    /// `delivery.concurrency`: emails in flight at once; `None`: twice the hand-overs, at
    /// least 64 (resolved with them, in `serve::worker_config`).
    pub concurrency: Option<usize>,
    /// `delivery.handovers`: hand-overs at once (marked, being sent); `None`: the worker's
    /// default for the mode.
    pub handovers: Option<usize>,
    pub in_doubt: InDoubt,
    pub helo: String,
    pub bounce_domain: Option<String>,
    pub test_domain: String,
    pub dkim: Vec<DkimSpec>,
    pub dns: Option<SocketAddr>,
    pub limits: Limits,
    pub api: ApiConfig,
    pub server: ServerConfig,
    pub fetch: FetchConfig,
    pub webhooks: WebhookSettings,
    pub inbound: InboundSettings,
    pub domains: mailroom::core::domains::DomainConfig,
    /// Whether `serve` checks domains' DNS records on their schedule.
    pub verify_domains: bool,
    pub email_retention: Option<Duration>,
    pub log_retention: Option<Duration>,
    pub log_level: String,
    pub log_json: bool,
    /// Where each setting's value came from (for `config check`).
    pub origins: BTreeMap<String, Origin>,
    /// What looks like a mistake but does not stop the server (an unknown `MAILROOM_*`
    /// variable: the environment carries variables of other programs too).
    pub warnings: Vec<Problem>,
}

/// A value as given: from the file (typed), or from a variable or flag (text).
#[derive(Debug, Clone)]
enum Raw {
    Toml(toml::Value),
    Text(String),
}

impl Raw {
    fn text(&self) -> Result<String, String> {
        match self {
            Raw::Text(s) | Raw::Toml(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Toml(v) => Err(format!("must be a string, not {}", v.type_str())),
        }
    }
    fn int(&self) -> Result<u64, String> {
        match self {
            Raw::Toml(toml::Value::Integer(i)) => u64::try_from(*i).map_err(|_| "must not be negative".to_string()),
            Raw::Text(s) => s.trim().parse().map_err(|_| format!("must be a whole number, not {s:?}")),
            Raw::Toml(v) => Err(format!("must be a whole number, not {}", v.type_str())),
        }
    }
    fn boolean(&self) -> Result<bool, String> {
        match self {
            Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("must be true or false, not {s:?}")),
            },
            Raw::Toml(v) => Err(format!("must be true or false, not {}", v.type_str())),
        }
    }
    /// A list: a TOML array of strings, or text with commas.
    fn list(&self) -> Result<Vec<String>, String> {
        match self {
            Raw::Toml(toml::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| "must be a list of strings".to_string()))
                .collect(),
            Raw::Text(s) | Raw::Toml(toml::Value::String(s)) => {
                Ok(s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect())
            }
            Raw::Toml(v) => Err(format!("must be a list, not {}", v.type_str())),
        }
    }
}

/// `"250ms"`, `"10s"`, `"5m"`, `"2h"`, `"30d"`, or a whole number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration like \"30s\", \"5m\" or \"30d\""))?;
    let secs = |k: u64| Duration::from_secs(n.saturating_mul(k));
    match unit.trim() {
        "" | "s" => Ok(secs(1)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" | "min" => Ok(secs(60)),
        "h" => Ok(secs(3600)),
        "d" => Ok(secs(86_400)),
        other => Err(format!("{other:?} is not a unit of time (ms, s, m, h, d)")),
    }
}

/// A byte count: a whole number, or with a unit (`"56MiB"`, `"40MB"`, `"64KiB"`).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: usize = n.parse().map_err(|_| format!("{s:?} is not a size like \"40MiB\""))?;
    let k = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("{other:?} is not a unit of size (KiB, MiB, GiB, KB, MB, GB)")),
    };
    Ok(n.saturating_mul(k))
}

/// A list of addresses or networks (`10.0.0.0/8`, `127.0.0.1`).
fn parse_networks(raw: &Raw) -> Result<Vec<IpNet>, String> {
    raw.list()?
        .iter()
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{p:?} is not an address or network like 10.0.0.0/8"))
        })
        .collect()
}

/// A retention: a duration, or `"off"` (keep for ever).
fn parse_retention(raw: &Raw) -> Result<Option<Duration>, String> {
    let s = raw.text()?;
    if s.trim().eq_ignore_ascii_case("off") { Ok(None) } else { parse_duration(&s).map(Some) }
}

/// The settings a file, a variable or a flag may name, with the variable's name.
const SETTINGS: &[&str] = &[
    "server.listen",
    "server.tls_cert",
    "server.tls_key",
    "server.public_url",
    "server.link_key_file",
    "server.trusted_proxies",
    "server.header_read_timeout",
    "server.body_timeout",
    "server.idle_timeout",
    "server.max_connections",
    "server.max_concurrent_requests",
    "server.max_body_bytes",
    "server.max_body_memory",
    "server.admin_socket",
    "server.metrics",
    "dashboard.enabled",
    "dashboard.path",
    "database.path",
    "database.url",
    "database.max_connections",
    "database.quick_repair",
    "delivery.mode",
    "delivery.relay",
    "delivery.connections",
    "delivery.concurrency",
    "delivery.handovers",
    "delivery.in_doubt",
    "delivery.helo",
    "delivery.bounce_domain",
    "delivery.test_domain",
    "dns.nameserver",
    "limits.max_to",
    "limits.max_recipients",
    "limits.max_reply_to",
    "limits.max_tags",
    "limits.max_headers",
    "limits.max_attachments",
    "limits.max_email_bytes",
    "limits.attachment_load_timeout",
    "rate_limits.per_key",
    "rate_limits.per_account",
    "rate_limits.unauthenticated_per_ip",
    "rate_limits.downloads_per_ip",
    "attachments.fetch_urls",
    "attachments.allow_private",
    "attachments.allow_networks",
    "attachments.local_dir",
    "attachments.connect_timeout",
    "attachments.timeout",
    "attachments.max_redirects",
    "domains.host",
    "domains.spf",
    "domains.dkim_selector",
    "domains.dkim_algorithm",
    "domains.require_verified",
    "domains.recheck",
    "domains.verify",
    "domains.tracking_url",
    "inbound.listen",
    "inbound.hostname",
    "inbound.tls_cert",
    "inbound.tls_key",
    "inbound.max_message_size",
    "inbound.max_data_in_memory",
    "inbound.max_recipients",
    "inbound.max_connections",
    "inbound.max_connections_per_ip",
    "inbound.messages_per_minute",
    "inbound.enforce_sync",
    "inbound.greet_pause",
    "webhooks.enabled",
    "webhooks.allow_private",
    "webhooks.allow_networks",
    "webhooks.per_endpoint",
    "retention.emails",
    "retention.request_logs",
    "log.level",
    "log.format",
];

/// The inbound SMTP listener: off unless `inbound.listen` is given.
#[derive(Debug, Clone, Default)]
pub struct InboundSettings {
    pub listen: Option<SocketAddr>,
    /// STARTTLS certificate chain and key (PEM); the server's own when not given.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Everything else (its `tls` is set at start from the files above).
    pub config: mailroom::inbound::InboundConfig,
}

/// Webhook delivery: on by default; endpoints on private networks allowed unless restricted.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub enabled: bool,
    pub sender: mailroom::fetch::WebhookConfig,
    pub per_endpoint: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings { enabled: true, sender: mailroom::fetch::WebhookConfig::default(), per_endpoint: 32 }
    }
}

/// The tables of arrays the file may hold besides the settings above.
const LISTS: &[&str] = &["api_keys", "delivery.dkim"];

/// The variable for a setting: `server.listen` → `MAILROOM_SERVER_LISTEN`.
pub fn env_name(setting: &str) -> String {
    format!("MAILROOM_{}", setting.replace('.', "_").to_ascii_uppercase())
}

/// The layers, and what was read of them.
pub struct Layers {
    path: Option<PathBuf>,
    text: String,
    file: toml::Table,
    env: HashMap<String, String>,
    flags: HashMap<&'static str, (String, String)>,
    flag_keys: Vec<String>,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    origins: BTreeMap<String, Origin>,
}

/// Variables of mailroom's own that are not settings.
const OTHER_VARIABLES: &[&str] = &["MAILROOM_API_KEYS", "MAILROOM_CONFIG"];

impl Layers {
    /// Reads the file (when given) and the environment. A file that cannot be read or parsed
    /// is a problem with its line.
    pub fn new(path: Option<&Path>, env: HashMap<String, String>) -> Layers {
        let mut layers = Layers {
            path: path.map(Path::to_path_buf),
            text: String::new(),
            file: toml::Table::new(),
            env,
            flags: HashMap::new(),
            flag_keys: Vec::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
            origins: BTreeMap::new(),
        };
        let Some(path) = path else { return layers };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                match text.parse::<toml::Table>() {
                    Ok(t) => layers.file = t,
                    Err(e) => {
                        let line = e.span().map_or(1, |s| line_of(&text, s.start));
                        let message = e.message().to_string();
                        layers.problems.push(Problem {
                            origin: Origin::File { path: path.to_path_buf(), line },
                            setting: "(file)".into(),
                            message,
                        });
                    }
                }
                layers.text = text;
            }
            Err(e) => layers.problems.push(Problem {
                origin: Origin::File { path: path.to_path_buf(), line: 0 },
                setting: "(file)".into(),
                message: format!("cannot be read: {e}"),
            }),
        }
        layers
    }

    /// A flag's value for a setting (the flag's own name is kept for messages).
    pub fn flag(&mut self, setting: &'static str, flag: &str, value: Option<String>) {
        if let Some(v) = value {
            self.flags.insert(setting, (flag.to_string(), v));
        }
    }

    /// API keys given as flags.
    pub fn flag_keys(&mut self, tokens: &[String]) {
        self.flag_keys.extend(tokens.iter().cloned());
    }

    fn file_value(&self, setting: &str) -> Option<&toml::Value> {
        let mut parts = setting.split('.');
        let mut v = self.file.get(parts.next()?)?;
        for p in parts {
            v = v.get(p)?;
        }
        Some(v)
    }

    /// The line of `setting` (a dotted path; `api_keys.2.token` for the third key's token).
    fn file_origin(&self, setting: &str) -> Origin {
        let path = self.path.clone().unwrap_or_default();
        let line = locate(&self.text, setting).unwrap_or(1);
        Origin::File { path, line }
    }

    /// A setting's raw value and origin, by precedence.
    fn raw(&self, setting: &'static str) -> Option<(Raw, Origin)> {
        if let Some((flag, v)) = self.flags.get(setting) {
            return Some((Raw::Text(v.clone()), Origin::Flag(flag.clone())));
        }
        let var = env_name(setting);
        if let Some(v) = self.env.get(&var) {
            return Some((Raw::Text(v.clone()), Origin::Env(var)));
        }
        self.file_value(setting).map(|v| (Raw::Toml(v.clone()), self.file_origin(setting)))
    }

    /// The checked value of `setting`, or `default` (a problem is recorded when it is given
    /// but wrong).
    fn get<T>(&mut self, setting: &'static str, default: T, parse: impl FnOnce(&Raw) -> Result<T, String>) -> T {
        match self.raw(setting) {
            None => {
                self.origins.insert(setting.into(), Origin::Default);
                default
            }
            Some((raw, origin)) => match parse(&raw) {
                Ok(v) => {
                    self.origins.insert(setting.into(), origin);
                    v
                }
                Err(message) => {
                    self.problems.push(Problem { origin, setting: setting.into(), message });
                    default
                }
            },
        }
    }

    fn problem(&mut self, origin: Origin, setting: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { origin, setting: setting.into(), message: message.into() });
    }

    /// Unknown settings in the file: every key that is neither a setting nor a list.
    fn unknown_settings(&mut self) {
        let mut unknown = Vec::new();
        for (section, value) in &self.file {
            if LISTS.contains(&section.as_str()) {
                continue;
            }
            match value.as_table() {
                Some(table) => {
                    for key in table.keys() {
                        let setting = format!("{section}.{key}");
                        if !SETTINGS.contains(&setting.as_str()) && !LISTS.contains(&setting.as_str()) {
                            unknown.push(setting);
                        }
                    }
                }
                None => unknown.push(section.clone()),
            }
        }
        for setting in unknown {
            let origin = self.file_origin(&setting);
            self.problem(origin, setting, "is not a setting mailroom knows");
        }
        // Variables the file itself names (`token_env`) hold tokens, not settings.
        let named: BTreeSet<&str> = match self.file.get("api_keys") {
            Some(toml::Value::Array(keys)) => {
                keys.iter().filter_map(|k| k.get("token_env").and_then(toml::Value::as_str)).collect()
            }
            _ => BTreeSet::new(),
        };
        for var in self.env.keys() {
            let known = OTHER_VARIABLES.contains(&var.as_str())
                || named.contains(var.as_str())
                || SETTINGS.iter().any(|s| env_name(s) == *var);
            if var.starts_with("MAILROOM_") && !known {
                self.warnings.push(Problem {
                    origin: Origin::Env(var.clone()),
                    setting: var.clone(),
                    message: "is not a setting mailroom knows".into(),
                });
            }
        }
    }

    /// Checks everything and builds the settings; every problem at once.
    pub fn resolve(mut self) -> Result<Settings, Vec<Problem>> {
        self.unknown_settings();
        let addr = |raw: &Raw| -> Result<SocketAddr, String> {
            let s = raw.text()?;
            s.parse().map_err(|_| format!("{s:?} is not an address like 127.0.0.1:3000"))
        };
        let path = |raw: &Raw| raw.text().map(PathBuf::from);
        let opt_path = |raw: &Raw| raw.text().map(|s| Some(PathBuf::from(s)));
        let count = |raw: &Raw| -> Result<usize, String> {
            let n = raw.int()?;
            if n == 0 { Err("must be at least 1".into()) } else { Ok(n as usize) }
        };
        let rate =
            |raw: &Raw| -> Result<u32, String> { u32::try_from(raw.int()?).map_err(|_| "is too large".to_string()) };
        // A duration as written: a whole number of seconds, or with a unit ("250ms", "5m").
        let written = |raw: &Raw| -> Result<Duration, String> {
            match raw {
                Raw::Toml(toml::Value::Integer(i)) => {
                    u64::try_from(*i).map(Duration::from_secs).map_err(|_| "must not be negative".into())
                }
                _ => parse_duration(&raw.text()?),
            }
        };
        let duration = |raw: &Raw| -> Result<Duration, String> {
            let d = written(raw)?;
            if d.is_zero() { Err("must be longer than zero".into()) } else { Ok(d) }
        };
        let size = |raw: &Raw| -> Result<usize, String> {
            match raw {
                Raw::Toml(toml::Value::Integer(i)) => usize::try_from(*i).map_err(|_| "must not be negative".into()),
                _ => parse_bytes(&raw.text()?),
            }
        };
        let domain = |raw: &Raw| -> Result<Option<String>, String> {
            let d = raw.text()?.trim().trim_end_matches('.').to_ascii_lowercase();
            mailroom::core::address::Mailbox::parse(&format!("x@{d}"))
                .map(|_| Some(d.clone()))
                .map_err(|_| format!("{d:?} is not a domain name"))
        };

        let listen = self.get("server.listen", SocketAddr::from(([127, 0, 0, 1], 3000)), addr);
        let tls_cert = self.get("server.tls_cert", None, opt_path);
        let tls_key = self.get("server.tls_key", None, opt_path);
        let tls = match (tls_cert, tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                let origin = self.origins.get("server.tls_cert").cloned().unwrap_or(Origin::Default);
                self.problem(origin, "server.tls_cert", "tls_cert and tls_key go together: give both or neither");
                None
            }
        };
        let public_url = self.get("server.public_url", None, |raw| {
            let s = raw.text()?;
            let u = url::Url::parse(&s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
            if !matches!(u.scheme(), "http" | "https") || u.host().is_none() || u.query().is_some() {
                return Err(format!("{s:?} must be an http(s) URL with a host and no query"));
            }
            Ok(Some(s.trim_end_matches('/').to_string()))
        });
        let trusted_proxies = self.get("server.trusted_proxies", Vec::new(), parse_networks);
        let mut server = ServerConfig::default();
        server.header_read_timeout = self.get("server.header_read_timeout", server.header_read_timeout, duration);
        server.idle_timeout = self.get("server.idle_timeout", server.idle_timeout, duration);
        server.max_connections = self.get("server.max_connections", server.max_connections, count);
        let mut api = ApiConfig::default();
        api.body_timeout = self.get("server.body_timeout", api.body_timeout, duration);
        api.max_concurrent_requests = self.get("server.max_concurrent_requests", api.max_concurrent_requests, count);
        api.max_body_bytes = self.get("server.max_body_bytes", api.max_body_bytes, size);
        api.max_body_memory = self.get("server.max_body_memory", api.max_body_memory, size);
        api.trusted_proxies = trusted_proxies;
        api.public_url = public_url;
        let metrics = self.get("server.metrics", true, Raw::boolean);
        // The dashboard: on by default; its cookie is `Secure` when the server or the proxy in
        // front of it speaks TLS.
        let secure = tls.is_some() || api.public_url.as_deref().is_some_and(|u| u.starts_with("https:"));
        if self.get("dashboard.enabled", true, Raw::boolean) {
            let default = mailroom::http::DashboardConfig::new("/dashboard", secure).ok();
            api.dashboard = self.get("dashboard.path", default, |raw| {
                mailroom::http::DashboardConfig::new(&raw.text()?, secure).map(Some)
            });
        }

        let db = self.get("database.path", PathBuf::from("./mailroom.redb"), path);
        // A PostgreSQL database instead of the redb file: several processes may share it.
        let database_url = self.get("database.url", None, |raw| {
            let s = raw.text()?;
            if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
                return Err("must be a postgres:// URL".to_string());
            }
            Ok(Some(s))
        });
        let database_connections = self.get("database.max_connections", 16, count);
        let quick_repair = self.get("database.quick_repair", false, Raw::boolean);
        let admin_socket = self.get("server.admin_socket", admin_socket_for(&db), path);
        let link_key_file = self.get("server.link_key_file", beside(&db, ".link-key"), path);

        let relay = self.get("delivery.relay", None, |raw| {
            let url = raw.text()?;
            mailroom::smtp::RelayTarget::parse(&url).map_err(|e| e.to_string())?;
            Ok(Some(url))
        });
        let mode = self.get("delivery.mode", None, |raw| match raw.text()?.as_str() {
            "sandbox" => Ok(Some(0)),
            "relay" => Ok(Some(1)),
            "direct" => Ok(Some(2)),
            other => Err(format!("must be sandbox, relay or direct, not {other:?}")),
        });
        let delivery = match (mode, relay) {
            (None | Some(1), Some(url)) => DeliveryMode::Relay(url),
            (Some(1), None) => {
                let origin = self.origins.get("delivery.mode").cloned().unwrap_or(Origin::Default);
                self.problem(origin, "delivery.mode", "relay needs delivery.relay (an smtp:// URL)");
                DeliveryMode::Sandbox
            }
            (Some(2), _) => DeliveryMode::Direct,
            _ => DeliveryMode::Sandbox,
        };
        let connections = self.get("delivery.connections", 8, count);
        let handovers = self.get("delivery.handovers", None, |raw| count(raw).map(Some));
        let concurrency = self.get("delivery.concurrency", None, |raw| count(raw).map(Some));
        let in_doubt = self.get("delivery.in_doubt", InDoubt::Fail, |raw| {
            let s = raw.text()?;
            InDoubt::parse(&s).ok_or_else(|| format!("must be fail or resend, not {s:?}"))
        });
        let helo = self.get("delivery.helo", "localhost".to_string(), |raw| {
            let h = raw.text()?;
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b)) {
                return Err(format!("{h:?} is not a host name"));
            }
            Ok(h)
        });
        let bounce_domain = self.get("delivery.bounce_domain", None, domain);
        let test_domain = self
            .get("delivery.test_domain", None, domain)
            .unwrap_or_else(|| mailroom::core::sandbox::DEFAULT_TEST_DOMAIN.to_string());
        let dns = self.get("dns.nameserver", None, |raw| addr(raw).map(Some));

        // A list's limit past the most entries a request's list is read with could never be
        // reached (`core::json_entries`).
        let list = |raw: &Raw| -> Result<usize, String> {
            let max = mailroom::core::json_entries::MAX_ENTRIES;
            match count(raw)? {
                n if n > max => {
                    Err(format!("must be at most {max}: a request's lists are read with at most {max} entries"))
                }
                n => Ok(n),
            }
        };
        let mut limits = Limits::default();
        limits.max_to = self.get("limits.max_to", limits.max_to, list);
        limits.max_recipients = self.get("limits.max_recipients", limits.max_recipients, list);
        limits.max_reply_to = self.get("limits.max_reply_to", limits.max_reply_to, list);
        limits.max_tags = self.get("limits.max_tags", limits.max_tags, list);
        limits.max_headers = self.get("limits.max_headers", limits.max_headers, list);
        limits.max_attachments = self.get("limits.max_attachments", limits.max_attachments, list);
        limits.max_email_bytes = self.get("limits.max_email_bytes", limits.max_email_bytes, size);
        limits.attachment_load_timeout =
            self.get("limits.attachment_load_timeout", limits.attachment_load_timeout, duration);
        if limits.max_email_bytes > api.max_body_bytes {
            let origin = self.origins.get("limits.max_email_bytes").cloned().unwrap_or(Origin::Default);
            self.problem(
                origin,
                "limits.max_email_bytes",
                "is larger than server.max_body_bytes: such emails could never arrive",
            );
        }

        let mut rates = RateLimits::default();
        rates.per_key = self.get("rate_limits.per_key", rates.per_key, rate);
        rates.per_account = self.get("rate_limits.per_account", rates.per_account, rate);
        rates.unauthenticated_per_ip =
            self.get("rate_limits.unauthenticated_per_ip", rates.unauthenticated_per_ip, rate);
        rates.downloads_per_ip = self.get("rate_limits.downloads_per_ip", rates.downloads_per_ip, rate);
        api.rate_limits = rates;

        let mut fetch = FetchConfig::default();
        fetch.fetch_urls = self.get("attachments.fetch_urls", fetch.fetch_urls, Raw::boolean);
        fetch.allow_private = self.get("attachments.allow_private", fetch.allow_private, Raw::boolean);
        fetch.allow_networks = self.get("attachments.allow_networks", Vec::new(), parse_networks);
        fetch.local_dir = self.get("attachments.local_dir", None, |raw| {
            let p = PathBuf::from(raw.text()?);
            if !p.is_dir() {
                return Err(format!("{} is not a directory", p.display()));
            }
            Ok(Some(p))
        });
        fetch.connect_timeout = self.get("attachments.connect_timeout", fetch.connect_timeout, duration);
        fetch.timeout = self.get("attachments.timeout", fetch.timeout, duration);
        fetch.max_redirects =
            self.get("attachments.max_redirects", fetch.max_redirects, |r| r.int().map(|n| n as usize));

        let mut webhooks = WebhookSettings::default();
        webhooks.enabled = self.get("webhooks.enabled", webhooks.enabled, Raw::boolean);
        webhooks.sender.allow_private = self.get("webhooks.allow_private", webhooks.sender.allow_private, Raw::boolean);
        webhooks.sender.allow_networks = self.get("webhooks.allow_networks", Vec::new(), parse_networks);
        webhooks.per_endpoint = self.get("webhooks.per_endpoint", webhooks.per_endpoint, |r| {
            r.int().and_then(|n| if (1..=1024).contains(&n) { Ok(n as usize) } else { Err("1 to 1024".into()) })
        });

        let mut inbound = InboundSettings {
            listen: self.get("inbound.listen", None, |raw| addr(raw).map(Some)),
            ..InboundSettings::default()
        };
        let in_cert = self.get("inbound.tls_cert", None, opt_path);
        let in_key = self.get("inbound.tls_key", None, opt_path);
        inbound.tls = match (in_cert, in_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => tls.clone(),
            _ => {
                let origin = self.origins.get("inbound.tls_cert").cloned().unwrap_or(Origin::Default);
                self.problem(origin, "inbound.tls_cert", "tls_cert and tls_key go together: give both or neither");
                None
            }
        };
        let c = &mut inbound.config;
        c.hostname = self.get("inbound.hostname", Some(helo.clone()), domain).unwrap_or_else(|| helo.clone());
        c.max_message_size = self.get("inbound.max_message_size", c.max_message_size, size);
        c.max_data_in_memory = self.get("inbound.max_data_in_memory", c.max_data_in_memory, size);
        c.max_recipients = self.get("inbound.max_recipients", c.max_recipients, count);
        c.max_connections = self.get("inbound.max_connections", c.max_connections, count);
        c.max_connections_per_ip = self.get("inbound.max_connections_per_ip", c.max_connections_per_ip, count);
        c.messages_per_minute_per_ip = self.get("inbound.messages_per_minute", c.messages_per_minute_per_ip, |r| {
            r.int().and_then(|n| u32::try_from(n).map_err(|_| "a number of messages".to_string()))
        });
        c.enforce_sync = self.get("inbound.enforce_sync", c.enforce_sync, Raw::boolean);
        c.greet_pause = self.get("inbound.greet_pause", c.greet_pause, |raw| {
            let d = written(raw)?;
            // Every sender's connection waits this long; past a minute it is a denial of service
            // of one's own mail.
            if d > Duration::from_secs(60) { Err("must be at most 60s (0 turns it off)".into()) } else { Ok(d) }
        });

        // Domains: the host that receives bounces (and mail) and serves tracking links is the
        // server's own name unless given.
        let host = self.get("domains.host", Some(helo.clone()), domain).unwrap_or_else(|| helo.clone());
        // Why a warning, not an error: `localhost` is right for trying the API out, and wrong
        // in every record a domain's owner would publish from it.
        if host.trim_end_matches('.').eq_ignore_ascii_case("localhost") {
            // `domains.host` itself must be a domain name (checked above): `localhost` here
            // is `delivery.helo`'s, given or by default.
            let (setting, origin) = match self.raw("delivery.helo") {
                Some((_, origin)) => ("delivery.helo", origin),
                None => ("domains.host", Origin::Default),
            };
            self.warnings.push(Problem {
                origin,
                setting: setting.into(),
                message: "is `localhost`: the DNS records the domains API lists (the return path's MX and SPF, \
                          the receiving MX, the tracking CNAME) name it; set `domains.host` (or `delivery.helo`) \
                          to this server's public name before anyone publishes them"
                    .into(),
            });
        }
        let mut domains = mailroom::core::domains::DomainConfig::default().host(&host);
        if let Some(spf) = self.get("domains.spf", None, |raw| {
            let v = raw.text()?;
            if !v.starts_with("v=spf1 ") || v.len() > 450 || v.chars().any(|c| c.is_control() || c == '"') {
                return Err(format!("{v:?} is not an SPF record (v=spf1 …, at most 450 characters)"));
            }
            Ok(Some(v))
        }) {
            domains = domains.spf(spf);
        }
        domains = domains.dkim_selector(self.get("domains.dkim_selector", "mailroom".to_string(), |raw| {
            let v = raw.text()?;
            let ok = !v.is_empty()
                && v.len() <= 40
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !v.starts_with('-');
            if ok { Ok(v) } else { Err(format!("{v:?} is not a selector (letters, digits and -)")) }
        }));
        domains = domains.dkim_algorithm(self.get(
            "domains.dkim_algorithm",
            mailroom::core::domains::DkimAlgorithm::Rsa2048,
            |raw| match raw.text()?.as_str() {
                "rsa" | "rsa-sha256" => Ok(mailroom::core::domains::DkimAlgorithm::Rsa2048),
                "ed25519" | "ed25519-sha256" => Ok(mailroom::core::domains::DkimAlgorithm::Ed25519),
                other => Err(format!("must be rsa or ed25519, not {other:?}")),
            },
        ));
        domains = domains.require_verified(self.get("domains.require_verified", false, Raw::boolean));
        domains = domains.recheck_verified(self.get("domains.recheck", Duration::from_secs(6 * 3600), duration));
        let verify_domains = self.get("domains.verify", true, Raw::boolean);
        domains = domains.tracking_url(self.get("domains.tracking_url", "https://{host}".to_string(), |raw| {
            let v = raw.text()?;
            let probe = v.replace("{host}", "links.example.com");
            match url::Url::parse(&probe) {
                Ok(u) if v.contains("{host}") && matches!(u.scheme(), "http" | "https") && u.query().is_none() => Ok(v),
                _ => Err(format!("{v:?} is not an http(s) base URL with {{host}} in it")),
            }
        }));

        let email_retention = self.get("retention.emails", None, parse_retention);
        let log_retention = self.get("retention.request_logs", Some(Duration::from_secs(30 * 86_400)), parse_retention);
        let log_level = self.get("log.level", "info".to_string(), |raw| {
            let l = raw.text()?;
            tracing_subscriber::EnvFilter::try_new(&l).map_err(|e| format!("{l:?} is not a log filter: {e}"))?;
            Ok(l)
        });
        let log_json = self.get("log.format", false, |raw| match raw.text()?.as_str() {
            "text" => Ok(false),
            "json" => Ok(true),
            other => Err(format!("must be text or json, not {other:?}")),
        });

        let keys = self.keys();
        let dkim = self.dkim();
        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        Ok(Settings {
            listen,
            tls,
            db,
            database_url,
            database_connections,
            quick_repair,
            admin_socket,
            link_key_file,
            metrics,
            keys,
            delivery,
            connections,
            concurrency,
            handovers,
            in_doubt,
            helo,
            bounce_domain,
            test_domain,
            dkim,
            dns,
            limits,
            api,
            server,
            fetch,
            webhooks,
            inbound,
            domains,
            verify_domains,
            email_retention,
            log_retention,
            log_level,
            log_json,
            origins: self.origins,
            warnings: self.warnings,
        })
    }

    /// `[[api_keys]]`, `MAILROOM_API_KEYS` and `--api-key`: every key the configuration
    /// manages. A token is given inline, by variable (`token_env`) or by file (`token_file`).
    fn keys(&mut self) -> Vec<ManagedKey> {
        let mut keys = Vec::new();
        let mut seen = BTreeSet::new();
        let entries = match self.file.get("api_keys") {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a.clone(),
            Some(_) => {
                let origin = self.file_origin("api_keys");
                self.problem(origin, "api_keys", "must be a list of tables ([[api_keys]])");
                Vec::new()
            }
        };
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("api_keys.{i}");
            let origin = self.file_origin(&at);
            let Some(t) = entry.as_table() else {
                self.problem(origin, at, "must be a table");
                continue;
            };
            for k in t.keys() {
                if !["name", "token", "token_env", "token_file", "permission", "domain", "account"]
                    .contains(&k.as_str())
                {
                    let o = self.file_origin(&format!("{at}.{k}"));
                    self.problem(
                        o,
                        format!("{at}.{k}"),
                        "is not a key setting (name, token, token_env, token_file, permission, domain, account)",
                    );
                }
            }
            let s = |k: &str| t.get(k).and_then(toml::Value::as_str).map(str::to_string);
            let token = match (s("token"), s("token_env"), s("token_file")) {
                (Some(t), None, None) => Ok(t),
                (None, Some(var), None) => self.env.get(&var).cloned().ok_or(format!("the variable {var} is not set")),
                (None, None, Some(file)) => std::fs::read_to_string(&file)
                    .map(|t| t.trim().to_string())
                    .map_err(|e| format!("token_file {file}: {e}")),
                _ => Err("give exactly one of token, token_env and token_file".to_string()),
            };
            let permission = KeyPermission::parse(s("permission").as_deref(), s("domain").as_deref());
            match (token, permission) {
                (Ok(token), Ok(permission)) => {
                    if let Err(m) = check_token(&token) {
                        self.problem(origin, at, m);
                        continue;
                    }
                    let name = s("name").unwrap_or_else(|| format!("configured key {}", i + 1));
                    let account = AccountId::new(s("account").unwrap_or_else(|| AccountId::default().0.to_string()));
                    if seen.insert(token.clone()) {
                        keys.push(ManagedKey::full_access(token, name).with(account, permission));
                    }
                }
                (Err(m), _) => self.problem(origin, at, m),
                (_, Err(e)) => self.problem(origin, format!("{at}.{}", e.path), e.rule.to_string()),
            }
        }
        let env_keys = self.env.get("MAILROOM_API_KEYS").cloned();
        let flag_keys = std::mem::take(&mut self.flag_keys);
        let listed = env_keys
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| (t.trim().to_string(), Origin::Env("MAILROOM_API_KEYS".into()), "environment"))
            .chain(flag_keys.into_iter().map(|t| (t, Origin::Flag("--api-key".into()), "command line")));
        for (token, origin, name) in listed.collect::<Vec<_>>() {
            if token.is_empty() {
                continue;
            }
            if let Err(m) = check_token(&token) {
                self.problem(origin, "api_keys", m);
                continue;
            }
            if seen.insert(token.clone()) {
                keys.push(ManagedKey::full_access(token, name));
            }
        }
        keys
    }

    fn dkim(&mut self) -> Vec<DkimSpec> {
        let entries = match self.file.get("delivery").and_then(|d| d.get("dkim")) {
            None => return Vec::new(),
            Some(toml::Value::Array(a)) => a.clone(),
            Some(_) => {
                let origin = self.file_origin("delivery.dkim");
                self.problem(origin, "delivery.dkim", "must be a list of tables ([[delivery.dkim]])");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = format!("delivery.dkim.{i}");
            let origin = self.file_origin(&at);
            let s = |k: &str| entry.get(k).and_then(toml::Value::as_str).map(str::to_string);
            let (Some(domain), Some(selector), Some(key_file)) = (s("domain"), s("selector"), s("key_file")) else {
                self.problem(origin, at, "needs domain, selector and key_file");
                continue;
            };
            let ed25519 = match s("algorithm").as_deref() {
                None | Some("rsa-sha256") => false,
                Some("ed25519-sha256") => true,
                Some(other) => {
                    self.problem(
                        origin,
                        format!("{at}.algorithm"),
                        format!("must be rsa-sha256 or ed25519-sha256, not {other:?}"),
                    );
                    continue;
                }
            };
            let key_file = PathBuf::from(key_file);
            let pem = match std::fs::read_to_string(&key_file) {
                Ok(p) => p,
                Err(e) => {
                    self.problem(origin, format!("{at}.key_file"), format!("{}: {e}", key_file.display()));
                    continue;
                }
            };
            let key = if ed25519 {
                mailroom::smtp::DkimKey::ed25519_pem(&domain, &selector, &pem)
            } else {
                mailroom::smtp::DkimKey::rsa_pem(&domain, &selector, &pem)
            };
            if let Err(e) = key {
                self.problem(origin, format!("{at}.key_file"), e.to_string());
                continue;
            }
            out.push(DkimSpec { domain, selector, key_file, ed25519, origin });
        }
        out
    }
}

/// A token from the configuration: long enough not to be guessed, and without spaces.
fn check_token(token: &str) -> Result<(), String> {
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("an API key token may not contain white space".into());
    }
    if token.len() < 12 {
        return Err(format!(
            "an API key token must be at least 12 characters (got {}); `mailroom keys token` makes a random one",
            token.len()
        ));
    }
    Ok(())
}

/// The admin socket beside the database: `<db>.sock`.
pub fn admin_socket_for(db: &Path) -> PathBuf {
    beside(db, ".sock")
}

/// `<db file name><suffix>` in the database's folder.
pub fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    db.with_file_name(name)
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// The line where a dotted setting path is written in the file (`api_keys.1.token`: the
/// second `[[api_keys]]` table's token).
fn locate(text: &str, setting: &str) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut span = root.span();
    let mut table: &DeTable<'_> = root.get_ref();
    let mut current: Option<&Spanned<DeValue<'_>>> = None;
    for part in setting.split('.') {
        if let Some(v) = current {
            match v.get_ref() {
                DeValue::Table(t) => table = t,
                DeValue::Array(a) => {
                    let item = a.get(part.parse::<usize>().ok()?)?;
                    span = item.span();
                    current = Some(item);
                    continue;
                }
                _ => return Some(line_of(text, span.start)),
            }
        }
        let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
        span = key.span();
        current = Some(value);
    }
    Some(line_of(text, span.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(text: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Layers) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("mailroom.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let l = Layers::new(Some(&path), env);
        (dir, l)
    }

    #[test]
    fn flags_beat_variables_beat_the_file_beats_the_default() {
        let (_d, mut l) = layers(
            "[server]\nlisten = \"127.0.0.1:4000\"\nbody_timeout = \"90s\"\n[rate_limits]\nper_key = 5\n",
            &[("MAILROOM_SERVER_LISTEN", "127.0.0.1:5000"), ("MAILROOM_RATE_LIMITS_PER_KEY", "7")],
        );
        l.flag("server.listen", "--listen", Some("127.0.0.1:6000".into()));
        let s = l.resolve().unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(s.listen.port(), 6000);
        assert_eq!(s.api.rate_limits.per_key, 7);
        assert_eq!(s.api.body_timeout, Duration::from_secs(90));
        assert_eq!(s.api.rate_limits.per_account, 10, "the default");
        assert_eq!(s.origins["server.listen"], Origin::Flag("--listen".into()));
        assert!(matches!(s.origins["server.body_timeout"], Origin::File { line: 3, .. }));
    }

    #[test]
    fn hand_overs_default_to_eight_per_relay_connection_and_a_setting_overrides_them() {
        let relay = "[delivery]\nrelay = \"smtp://127.0.0.1:2525\"\nconnections = 5\n";
        let (_d, l) = layers(relay, &[]);
        let s = l.resolve().unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(s.handovers, None);
        let w = crate::serve::worker_config(&s, true);
        assert_eq!((w.handovers, w.concurrency), (40, 80), "eight per connection, twice that in flight");
        let (_d, l) = layers(&format!("{relay}handovers = 7\n"), &[]);
        let s = l.resolve().unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!((s.handovers, crate::serve::worker_config(&s, true).handovers), (Some(7), 7));
        assert_eq!(crate::serve::worker_config(&s, true).concurrency, 64, "at least 64 in flight");
        let (_d, l) = layers(&format!("{relay}handovers = 50\n"), &[]);
        let s = l.resolve().unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(crate::serve::worker_config(&s, true).concurrency, 100, "twice a set hand-over bound");
        let (_d, l) = layers(&format!("{relay}handovers = 0\n"), &[]);
        let problems = l.resolve().err().unwrap_or_default();
        assert!(
            problems.iter().any(|p| p.setting == "delivery.handovers" && p.message.contains("at least 1")),
            "{problems:?}"
        );
    }

    #[test]
    fn problems_name_their_line_and_rule_all_at_once() {
        let text = "[server]\nlisten = \"nowhere\"\nmax_connections = 0\n\n[delivery]\nrelay = \"smtp://h:99999\"\ncolour = \"blue\"\n\n[[api_keys]]\ntoken = \"short\"\n\n[[api_keys]]\ntoken = \"re_long_enough_token\"\npermission = \"root\"\n";
        let (_d, l) = layers(text, &[("MAILROOM_SERVER_BODY_TIMEOUT", "soon"), ("MAILROOM_NOPE", "1")]);
        let problems = l.resolve().err().unwrap_or_default();
        let got: Vec<String> = problems.iter().map(|p| format!("{} | {}", p.origin, p.setting)).collect();
        let has = |needle: &str| got.iter().any(|g| g.contains(needle));
        assert!(has("mailroom.toml:2 | server.listen"), "{got:#?}");
        assert!(has("mailroom.toml:3 | server.max_connections"), "{got:#?}");
        assert!(has("mailroom.toml:6 | delivery.relay"), "{got:#?}");
        assert!(has("mailroom.toml:7 | delivery.colour"), "{got:#?}");
        assert!(has("mailroom.toml:9 | api_keys.0"), "{got:#?}");
        assert!(has("mailroom.toml:12 | api_keys.1.permission"), "{got:#?}");
        assert!(has("environment variable MAILROOM_SERVER_BODY_TIMEOUT | server.body_timeout"), "{got:#?}");
        assert_eq!(problems.len(), 7, "{got:#?}");
        // An unknown variable is a warning: the environment holds other programs' too.
        let (_d, l) = layers("", &[("MAILROOM_NOPE", "1")]);
        let s = l.resolve().unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(s.warnings[0].origin, Origin::Env("MAILROOM_NOPE".into()));
        // Unless the file names it as a key's variable.
        let file = "[[api_keys]]\nname = \"ops\"\ntoken_env = \"MAILROOM_OPS_KEY\"\n";
        let (_d, l) = layers(file, &[("MAILROOM_OPS_KEY", "re_ops_key_from_env"), ("MAILROOM_NOPE", "1")]);
        let s = l.resolve().unwrap_or_else(|p| panic!("{p:?}"));
        let unknown: Vec<&Origin> =
            s.warnings.iter().filter(|w| w.message == "is not a setting mailroom knows").map(|w| &w.origin).collect();
        assert_eq!(unknown, vec![&Origin::Env("MAILROOM_NOPE".into())]);
    }

    /// A list's limit may not pass the entries a request's list is read with: such a limit
    /// could never be reached.
    #[test]
    fn list_limits_stay_within_what_a_list_is_read_with() {
        let (_d, l) = layers("[limits]\nmax_to = 1000\nmax_tags = 1001\nmax_headers = 0\n", &[]);
        let problems = l.resolve().err().unwrap_or_default();
        let got: Vec<String> = problems.iter().map(|p| format!("{} | {}", p.setting, p.message)).collect();
        assert_eq!(problems.len(), 2, "{got:#?}");
        assert!(got.iter().any(|g| g.starts_with("limits.max_tags | must be at most 1000")), "{got:#?}");
        assert!(got.iter().any(|g| g.starts_with("limits.max_headers | must be at least 1")), "{got:#?}");
    }

    /// The example configuration says it lists every setting: each is there, set or in a
    /// comment, under its section.
    #[test]
    fn the_example_configuration_lists_every_setting() {
        let example = include_str!("../../../deploy/mailroom.toml");
        let mut section = "";
        let mut listed = BTreeSet::new();
        for line in example.lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
                continue;
            }
            let line = line.trim_start_matches(['#', ' ']);
            if let Some((key, _)) = line.split_once(" = ")
                && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                listed.insert(format!("{section}.{key}"));
            }
        }
        let missing: Vec<&&str> = SETTINGS.iter().filter(|s| !listed.contains(**s)).collect();
        assert!(missing.is_empty(), "not in deploy/mailroom.toml: {missing:?}");
    }

    #[test]
    fn a_localhost_domains_host_is_warned_of_where_it_was_set() {
        let localhost = |s: &Settings| s.warnings.iter().find(|w| w.message.starts_with("is `localhost`")).cloned();
        let (_d, l) = layers("", &[]);
        let w = localhost(&l.resolve().unwrap_or_else(|p| panic!("{p:?}"))).expect("the default is warned of");
        assert_eq!((w.origin, w.setting.as_str()), (Origin::Default, "domains.host"));
        let (_d, l) = layers("[delivery]\nhelo = \"localhost\"\n", &[]);
        let w = localhost(&l.resolve().unwrap_or_else(|p| panic!("{p:?}"))).expect("warned");
        assert_eq!(w.setting, "delivery.helo");
        assert!(matches!(w.origin, Origin::File { line: 2, .. }), "{w}");
        let (_d, l) = layers("", &[("MAILROOM_DELIVERY_HELO", "LOCALHOST.")]);
        let w = localhost(&l.resolve().unwrap_or_else(|p| panic!("{p:?}"))).expect("warned");
        assert_eq!(w.origin, Origin::Env("MAILROOM_DELIVERY_HELO".into()));
        for set in ["[delivery]\nhelo = \"mx.acme.test\"\n", "[domains]\nhost = \"mx.acme.test\"\n"] {
            let (_d, l) = layers(set, &[]);
            assert_eq!(localhost(&l.resolve().unwrap_or_else(|p| panic!("{p:?}"))), None, "{set}");
        }
    }

    #[test]
    fn quick_repair_is_off_unless_set_and_must_be_a_boolean() {
        let (_d, l) = layers("", &[]);
        assert!(!l.resolve().unwrap_or_else(|p| panic!("{p:?}")).quick_repair);
        let (_d, l) = layers("[database]\nquick_repair = true\n", &[]);
        assert!(l.resolve().unwrap_or_else(|p| panic!("{p:?}")).quick_repair);
        let (_d, l) = layers("", &[("MAILROOM_DATABASE_QUICK_REPAIR", "true")]);
        assert!(l.resolve().unwrap_or_else(|p| panic!("{p:?}")).quick_repair);
        let (_d, l) = layers("[database]\nquick_repair = \"soon\"\n", &[]);
        let problems = l.resolve().err().unwrap_or_default();
        assert!(problems.iter().any(|p| p.setting == "database.quick_repair"), "{problems:?}");
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let (_d, l) = layers("[server]\nlisten = \"127.0.0.1:1\"\nbroken = = 3\n", &[]);
        let p = l.resolve().err().unwrap_or_default();
        assert!(matches!(p[0].origin, Origin::File { line: 3, .. }), "{p:?}");
    }

    #[test]
    fn keys_come_from_the_file_variables_and_flags() {
        let text = "[[api_keys]]\nname = \"ops\"\ntoken_env = \"OPS_KEY\"\n\n[[api_keys]]\ntoken = \"re_sending_only_key\"\npermission = \"sending_access\"\ndomain = \"acme.test\"\n";
        let (_d, mut l) = layers(
            text,
            &[("OPS_KEY", "re_from_the_env_var"), ("MAILROOM_API_KEYS", "re_first_env_key, re_second_env_key")],
        );
        l.flag_keys(&["re_given_as_a_flag".to_string(), "re_first_env_key".to_string()]);
        let s = l.resolve().unwrap_or_else(|p| panic!("{p:?}"));
        let got: Vec<(&str, &str)> = s.keys.iter().map(|k| (k.token.as_str(), k.name.as_str())).collect();
        assert_eq!(
            got,
            [
                ("re_from_the_env_var", "ops"),
                ("re_sending_only_key", "configured key 2"),
                ("re_first_env_key", "environment"),
                ("re_second_env_key", "environment"),
                ("re_given_as_a_flag", "command line"),
            ]
        );
        assert_eq!(s.keys[1].permission, KeyPermission::SendingAccess { domain: Some("acme.test".into()) });
    }

    #[test]
    fn the_inbound_listeners_protocol_checks_are_settings() {
        let (_d, l) = layers("[inbound]\nlisten = \"127.0.0.1:2525\"\n", &[]);
        let s = l.resolve().unwrap_or_else(|p| panic!("{p:?}"));
        assert!(s.inbound.config.enforce_sync, "on by default");
        assert_eq!(s.inbound.config.greet_pause, Duration::ZERO, "off by default");
        let (_d, l) = layers("[inbound]\nenforce_sync = false\ngreet_pause = \"3s\"\n", &[]);
        let s = l.resolve().unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!((s.inbound.config.enforce_sync, s.inbound.config.greet_pause), (false, Duration::from_secs(3)));
        let (_d, l) = layers("[inbound]\ngreet_pause = \"2m\"\n", &[]);
        let problems = l.resolve().err().unwrap_or_default();
        assert!(
            problems.iter().any(|p| p.setting == "inbound.greet_pause" && p.message.contains("at most 60s")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_duration_given_as_a_number_is_held_to_the_rule_of_one_given_as_text() {
        // (Whole seconds: 0 and negatives were taken as 0s, where "0s" was refused.)
        for bad in ["0", "-5"] {
            let (_d, l) = layers(&format!("[server]\nidle_timeout = {bad}\n"), &[]);
            let problems = l.resolve().err().unwrap_or_default();
            assert!(problems.iter().any(|p| p.setting == "server.idle_timeout"), "{bad}: {problems:?}");
        }
        let (_d, l) = layers("[server]\nidle_timeout = 7\n[inbound]\ngreet_pause = 0\n", &[]);
        let s = l.resolve().unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(s.inbound.config.greet_pause, Duration::ZERO, "0 turns the pause off");
        let (_d, l) = layers("[inbound]\ngreet_pause = -1\n", &[]);
        let problems = l.resolve().err().unwrap_or_default();
        assert!(problems.iter().any(|p| p.setting == "inbound.greet_pause" && p.message.contains("negative")));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("56MiB"), Ok(56 << 20));
        assert_eq!(parse_bytes("40 MB"), Ok(40_000_000));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("1 fortnight").is_err());
    }
}
