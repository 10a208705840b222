//! Mail in: which recipients the engine takes mail for, what it keeps of a received message,
//! and how the receiving API shows it.
//!
//! A message that reaches the inbound listener goes one of two ways, by recipient:
//! - to a **bounce address** (`bounces+<email id>@<bounce domain>`, or at a domain's return-path
//!   subdomain): it is a DSN, a feedback report or an auto-reply answering mail we sent. It goes
//!   through the bounce reader and is applied to the email it answers; it is never shown as
//!   received mail.
//! - to any address at a **receiving domain** (an added domain with receiving on and its MX
//!   record verified): it is kept, once per account, with `email.received` in the event log.
//!
//! Everything else is refused at `RCPT` (`550 5.7.1`): the listener is never a relay.
//!
//! The message is kept as it arrived (raw, with the listener's `Received:` line on top); the
//! summary the list and the webhook show is read from it once, at arrival. Bodies, headers and
//! attachments are read from the raw message when asked for.

use crate::email::{AccountId, EmailId};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use mail_parser::{Address, MessageParser, MimeHeaders};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The result of one authentication check, as the receiving API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthResult {
    /// Passed.
    Pass,
    /// Failed.
    Fail,
    /// Neither: soft fail, neutral, none, or a temporary error.
    Gray,
    /// The check could not be made (a permanent error in the record).
    ProcessingFailed,
    /// Not checked.
    #[default]
    Unknown,
}

/// SPF, DKIM and DMARC results of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Authentication {
    /// SPF of the envelope sender (or the HELO name when the sender is empty).
    pub spf: AuthResult,
    /// The best DKIM signature's result.
    pub dkim: AuthResult,
    /// DMARC of the From domain.
    pub dmarc: AuthResult,
}

/// What the listener knew of a message's arrival.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Arrival {
    /// The envelope sender (`MAIL FROM`), empty for bounces.
    pub mail_from: String,
    /// The envelope recipients this message is kept for.
    pub rcpt_to: Vec<String>,
    /// The client's address.
    pub client_ip: String,
    /// The name the client gave in `EHLO`/`HELO`.
    pub helo: String,
    /// Whether the session was encrypted (STARTTLS).
    pub tls: bool,
}

/// One attachment of a received message, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedAttachment {
    /// Its id (stable: derived from the email's id and the part's position).
    pub id: String,
    /// The file name, when the message gives one.
    pub filename: Option<String>,
    /// The media type.
    pub content_type: String,
    /// `inline` or `attachment`, when the message says.
    pub content_disposition: Option<String>,
    /// The content id (without angle brackets), for inline images.
    pub content_id: Option<String>,
    /// Decoded size in bytes.
    pub size: u64,
    /// The part's position among the message's parts.
    pub part: u32,
}

/// A received message: its summary (what lists and webhooks show) and how it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedEmail {
    /// Its id.
    pub id: EmailId,
    /// When it arrived.
    pub created_at: DateTime<Utc>,
    /// The bare From address.
    pub from: String,
    /// `To` addresses (bare).
    pub to: Vec<String>,
    /// `Cc` addresses.
    pub cc: Vec<String>,
    /// `Bcc` addresses (rarely present in received mail).
    pub bcc: Vec<String>,
    /// `Reply-To` addresses.
    pub reply_to: Vec<String>,
    /// The subject.
    pub subject: String,
    /// The Message-ID, with angle brackets.
    pub message_id: String,
    /// The envelope recipients it was received for.
    pub received_for: Vec<String>,
    /// Its attachments.
    pub attachments: Vec<ReceivedAttachment>,
    /// SPF, DKIM and DMARC, when checked.
    pub authentication: Option<Authentication>,
    /// The raw message's size in bytes.
    pub size: u64,
    /// How it arrived.
    pub arrival: Arrival,
}

/// Where a recipient's mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A bounce address: the message answers mail we sent.
    Bounce,
    /// A receiving domain of this account.
    Receive(AccountId),
}

/// Why a recipient is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a domain we receive for: relaying denied.
    Relay,
    /// A receiving domain whose MX record is not verified yet.
    NotVerified,
    /// The store could not be asked; try later.
    Unavailable,
}

impl Refusal {
    /// The SMTP reply for this refusal.
    pub fn reply(&self) -> (u16, &'static str, &'static str) {
        match self {
            Refusal::Relay => (550, "5.7.1", "Relaying denied: this server takes mail only for its own domains"),
            Refusal::NotVerified => (550, "5.7.1", "Receiving for this domain is not verified"),
            Refusal::Unavailable => (451, "4.3.0", "Temporary failure, try again later"),
        }
    }
}

/// The bounce address's local part prefix (VERP: `bounces+<email id>`).
pub const BOUNCE_PREFIX: &str = "bounces+";

/// Whether `local` is a bounce address's local part (`bounces` or `bounces+…`).
pub fn is_bounce_local(local: &str) -> bool {
    local.eq_ignore_ascii_case("bounces")
        || local.get(..BOUNCE_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(BOUNCE_PREFIX))
}

/// The id of a received message's attachment: stable for one email and part.
fn attachment_id(email: EmailId, part: u32) -> String {
    // A v4-shaped UUID from the email's id and the part number: unique per email, the same on
    // every read, no table needed.
    let mut b = email.as_u128().to_be_bytes();
    let p = part.to_be_bytes();
    for (i, x) in p.iter().enumerate() {
        b[12 + i] ^= x;
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).to_string()
}

fn addresses(a: Option<&Address<'_>>) -> Vec<String> {
    a.map(|a| a.iter().filter_map(|x| x.address.as_deref().map(str::to_string)).collect()).unwrap_or_default()
}

/// The most attachments a received message's summary lists. A message of tiny parts would
/// otherwise make a summary (kept, logged, sent in webhooks, listed 100 to a page) as large as
/// the message; the rest stay in the raw message.
pub const MAX_LISTED_ATTACHMENTS: usize = 1000;

/// The most MIME parts a received message is read with (at arrival, and for the receiving
/// API). A message that could have more is kept whole with an empty summary, as one that
/// mail-parser cannot read: mail-parser takes about 160 bytes a part however small the part,
/// so a 40 MB message of empty parts would take a gigabyte to read (and again at each read of
/// it through the API). Real mail has a few dozen.
pub const MAX_MIME_PARTS: usize = 10_000;

/// `raw` read by mail-parser, when it has at most [`MAX_MIME_PARTS`] parts and can be read.
fn parse_bounded(raw: &[u8]) -> Option<mail_parser::Message<'_>> {
    if !crate::inbound::parts_within(raw, MAX_MIME_PARTS) {
        return None;
    }
    MessageParser::default().parse(raw)
}

/// Reads a message once, at arrival, into its summary. Total: a message mail-parser cannot
/// read is kept with an empty summary (the raw message is still there).
pub fn summarize(
    id: EmailId,
    raw: &[u8],
    arrival: Arrival,
    authentication: Option<Authentication>,
    now: DateTime<Utc>,
) -> ReceivedEmail {
    let empty = ReceivedEmail {
        id,
        created_at: now,
        from: arrival.mail_from.clone(),
        to: vec![],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: String::new(),
        message_id: String::new(),
        received_for: arrival.rcpt_to.clone(),
        attachments: vec![],
        authentication,
        size: raw.len() as u64,
        arrival: arrival.clone(),
    };
    // mail-parser 0.11 can panic on some malformed MIME trees (see `inbound::parse`).
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(m) = parse_bounded(raw) else { return empty.clone() };
        let attachments = m
            .attachments()
            .take(MAX_LISTED_ATTACHMENTS)
            .enumerate()
            .map(|(i, p)| {
                let part = m.attachments.get(i).copied().unwrap_or(i as u32);
                ReceivedAttachment {
                    id: attachment_id(id, part),
                    filename: p.attachment_name().map(str::to_string),
                    content_type: p.content_type().map_or_else(|| "application/octet-stream".into(), media_type),
                    content_disposition: p.content_disposition().map(|d| d.ctype().to_ascii_lowercase()),
                    content_id: p.content_id().map(|c| c.trim_matches(['<', '>']).to_string()),
                    size: p.contents().len() as u64,
                    part,
                }
            })
            .collect();
        ReceivedEmail {
            from: addresses(m.from()).into_iter().next().unwrap_or_else(|| arrival.mail_from.clone()),
            to: addresses(m.to()),
            cc: addresses(m.cc()),
            bcc: addresses(m.bcc()),
            reply_to: addresses(m.reply_to()),
            subject: m.subject().unwrap_or_default().to_string(),
            message_id: m.message_id().map(|i| format!("<{i}>")).unwrap_or_default(),
            attachments,
            ..empty.clone()
        }
    }))
    .unwrap_or(empty)
}

/// How inline images appear in a received message's html.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HtmlFormat {
    /// `cid:` references replaced by `data:` URIs (the default).
    #[default]
    DataUri,
    /// `cid:` references kept; each matches an attachment's `content_id`.
    Cid,
}

impl HtmlFormat {
    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HtmlFormat::DataUri => "data_uri",
            HtmlFormat::Cid => "cid",
        }
    }
}

/// The attachment's JSON (`download_url` and `expires_at` added by the caller when it has them).
pub fn attachment_json(a: &ReceivedAttachment) -> Value {
    json!({
        "id": a.id,
        "filename": a.filename,
        "content_type": a.content_type,
        "content_disposition": a.content_disposition,
        "content_id": a.content_id,
        "size": a.size,
    })
}

/// A list item (`GET /emails/receiving`).
pub fn list_json(e: &ReceivedEmail) -> Value {
    json!({
        "id": e.id.to_string(),
        "to": e.to,
        "from": e.from,
        "created_at": crate::email::rfc3339(e.created_at),
        "subject": e.subject,
        "bcc": e.bcc,
        "cc": e.cc,
        "reply_to": e.reply_to,
        "received_for": e.received_for,
        "message_id": e.message_id,
        "attachments": e.attachments.iter().map(attachment_json).collect::<Vec<_>>(),
    })
}

/// `data.` of the `email.received` webhook (no body, headers or sizes).
pub fn webhook_json(e: &ReceivedEmail) -> Value {
    json!({
        "email_id": e.id.to_string(),
        "created_at": crate::email::rfc3339(e.created_at),
        "from": e.from,
        "to": e.to,
        "bcc": e.bcc,
        "cc": e.cc,
        "received_for": e.received_for,
        "message_id": e.message_id,
        "subject": e.subject,
        "attachments": e.attachments.iter().map(|a| json!({
            "id": a.id,
            "filename": a.filename,
            "content_type": a.content_type,
            "content_disposition": a.content_disposition,
            "content_id": a.content_id,
        })).collect::<Vec<_>>(),
    })
}

/// `GET /emails/receiving/{id}`: the summary with the bodies and headers read from `raw`;
/// `raw_link` is the raw message's download URL and its expiry.
pub fn detail_json(e: &ReceivedEmail, raw: &[u8], format: HtmlFormat, raw_link: Option<(String, String)>) -> Value {
    let mut v = list_json(e);
    let (html, text, headers) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(m) = parse_bounded(raw) else { return (None, None, Value::Null) };
        let mut html = own_body(&m, &m.html_body, true);
        if format == HtmlFormat::DataUri
            && let Some(h) = html.as_mut()
        {
            let inline: std::collections::HashMap<&str, (String, &[u8])> = m
                .attachments()
                .filter_map(|a| {
                    let (cid, ct) = (a.content_id()?, a.content_type()?);
                    Some((cid.trim_matches(['<', '>']), (media_type(ct), a.contents())))
                })
                .collect();
            // The html may grow by at most twice the raw message: a message that names one
            // inline image a million times must not make one GET answer gigabytes.
            *h = inline_images(h, &inline, 2 * raw.len());
        }
        let text = own_body(&m, &m.text_body, false);
        let mut headers = serde_json::Map::new();
        for h in m.headers() {
            let name = h.name().to_ascii_lowercase();
            let value = raw
                .get(h.offset_start() as usize..h.offset_end() as usize)
                .map(|b| String::from_utf8_lossy(b).split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            // The first of a repeated header (the newest `Received:` line) stands for it.
            headers.entry(name).or_insert(Value::String(value));
        }
        (html, text, Value::Object(headers))
    }))
    .unwrap_or((None, None, Value::Null));
    if let Some(o) = v.as_object_mut() {
        o.insert("object".into(), json!("email"));
        o.insert("html".into(), json!(html));
        o.insert("text".into(), json!(text));
        o.insert("html_format".into(), json!(format.as_str()));
        o.insert("headers".into(), headers);
        o.insert("authentication".into(), json!(e.authentication));
        o.insert(
            "raw".into(),
            raw_link.map_or(Value::Null, |(url, expires)| json!({"download_url": url, "expires_at": expires})),
        );
    }
    v
}

/// The first body of `parts` (the message's html or text bodies) that the message itself
/// carries in that form: `html` an html part, otherwise a text one. Why not mail-parser's
/// `body_html` / `body_text`: each makes one from the other form when the message has only
/// one (`<html><body>…<br/></body></html>` around a plain-text message), and the API answers
/// `null` for a body the sender did not write, as the hosted service does.
fn own_body(m: &mail_parser::Message<'_>, parts: &[u32], html: bool) -> Option<String> {
    use mail_parser::PartType;
    parts.iter().filter_map(|&i| m.parts.get(i as usize)).find_map(|p| match &p.body {
        PartType::Html(b) if html => Some(b.to_string()),
        PartType::Text(b) if !html => Some(b.to_string()),
        _ => None,
    })
}

/// `type/subtype`, lower case.
fn media_type(ct: &mail_parser::ContentType<'_>) -> String {
    match ct.subtype() {
        Some(s) => format!("{}/{}", ct.ctype(), s),
        None => ct.ctype().to_string(),
    }
    .to_ascii_lowercase()
}

/// `html` with each `cid:<id>` reference to one of `inline` replaced by a `data:` URI, in one
/// pass, adding at most `budget` bytes (references past it stay `cid:`, which the listed
/// attachments' `content_id` still resolves).
pub fn inline_images(html: &str, inline: &std::collections::HashMap<&str, (String, &[u8])>, budget: usize) -> String {
    if inline.is_empty() {
        return html.to_string();
    }
    let mut out = String::with_capacity(html.len());
    let mut added = 0usize;
    let mut copied = 0;
    for at in memchr::memmem::find_iter(html.as_bytes(), b"cid:") {
        if at < copied {
            continue;
        }
        let start = at + 4;
        let end = html[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | '<'))
            .map_or(html.len(), |i| start + i);
        let Some((mime, content)) = inline.get(&html[start..end]) else { continue };
        let len = 13 + mime.len() + content.len().div_ceil(3) * 4;
        if added + len > budget {
            break;
        }
        added += len;
        out.push_str(&html[copied..at]);
        out.push_str("data:");
        out.push_str(mime);
        out.push_str(";base64,");
        base64::engine::general_purpose::STANDARD.encode_string(content, &mut out);
        copied = end;
    }
    out.push_str(&html[copied..]);
    out
}

/// The decoded content of attachment `id` of a raw message, with its listing.
pub fn attachment_content(e: &ReceivedEmail, raw: &[u8], id: &str) -> Option<(ReceivedAttachment, Vec<u8>)> {
    let a = e.attachments.iter().find(|a| a.id == id)?.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let m = parse_bounded(raw)?;
        let p = m.part(a.part)?;
        Some(p.contents().to_vec())
    }))
    .ok()
    .flatten()
    .map(|c| (a, c))
}

/// The `Received:` line the listener puts on top of a message it accepts (RFC 5321 §4.4).
pub fn received_line(arrival: &Arrival, host: &str, id: &str, at: DateTime<Utc>) -> String {
    let clean = |s: &str| s.chars().filter(|c| c.is_ascii_graphic()).take(255).collect::<String>();
    let with = if arrival.tls { "ESMTPS" } else { "ESMTP" };
    // `for` only with one recipient: naming the others would disclose Bcc recipients.
    let for_clause = match arrival.rcpt_to.as_slice() {
        [one] => format!("\r\n\tfor <{}>", clean(one)),
        _ => String::new(),
    };
    format!(
        "Received: from {} ([{}])\r\n\tby {} (mailroom) with {with} id {}{for_clause};\r\n\t{}\r\n",
        clean(&arrival.helo),
        clean(&arrival.client_ip),
        clean(host),
        clean(id),
        at.to_rfc2822()
    )
}

/// Recent answers to "who receives mail for this domain", so that a session's `RCPT`s do not
/// each read the store: kept [`ROUTE_TTL`], at most [`ROUTE_CACHE`] domains (all dropped when
/// full — a flood of made-up domains cannot grow it).
#[derive(Debug, Default)]
pub struct RouteCache(std::sync::Mutex<std::collections::HashMap<String, CachedRoute>>);

/// When a routing answer was found, and the answer.
type CachedRoute = (DateTime<Utc>, Result<Route, Refusal>);

/// How long a routing answer is reused (a domain verified or removed takes effect within it).
pub const ROUTE_TTL: chrono::Duration = chrono::Duration::seconds(10);
/// The most domains the route cache holds.
pub const ROUTE_CACHE: usize = 10_000;

impl RouteCache {
    fn get(&self, domain: &str, now: DateTime<Utc>) -> Option<Result<Route, Refusal>> {
        let m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.get(domain).filter(|(at, _)| now - *at < ROUTE_TTL).map(|(_, r)| r.clone())
    }

    fn put(&self, domain: &str, now: DateTime<Utc>, route: Result<Route, Refusal>) {
        let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() >= ROUTE_CACHE {
            m.clear();
        }
        m.insert(domain.to_string(), (now, route));
    }
}

/// What [`crate::Engine::receive`] did with one arrival.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ReceiveReport {
    /// The received messages kept, one per account.
    pub kept: Vec<(AccountId, EmailId)>,
    /// What the bounce reader made of it, when it went to a bounce address.
    pub bounce: Option<crate::engine::IngestReport>,
}

/// The receiving MX record of `d` is verified.
fn receives(d: &crate::domains::Domain) -> bool {
    d.receiving
        && d.records.iter().any(|r| {
            r.record == crate::domains::RecordPurpose::Receiving && r.status == crate::domains::RecordStatus::Verified
        })
}

impl crate::engine::Engine {
    /// Where mail for `recipient` goes (asked at `RCPT TO`, for any account: this engine's own
    /// account does not matter).
    pub async fn route(&self, recipient: &str) -> Result<Route, Refusal> {
        let (local, domain) = recipient.rsplit_once('@').ok_or(Refusal::Relay)?;
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if local.is_empty() || domain.is_empty() || domain.starts_with('[') {
            return Err(Refusal::Relay);
        }
        if is_bounce_local(local) && self.bounce_domain_name() == Some(domain.as_str()) {
            return Ok(Route::Bounce);
        }
        let now = self.clock().now();
        let cache = self.route_cache();
        let key = if is_bounce_local(local) { format!("bounce:{domain}") } else { domain.clone() };
        if let Some(r) = cache.get(&key, now) {
            return r;
        }
        let r = self.route_uncached(local, &domain).await;
        if r != Err(Refusal::Unavailable) {
            cache.put(&key, now, r.clone());
        }
        r
    }

    async fn route_uncached(&self, local: &str, domain: &str) -> Result<Route, Refusal> {
        let Some(store) = self.storage().domains() else { return Err(Refusal::Relay) };
        if is_bounce_local(local)
            && let Some((label, parent)) = domain.split_once('.')
        {
            // The return-path subdomain of an added domain (`send.acme.com`): its MX points
            // here so that asynchronous bounces come back.
            let owners = store.domain_owners(parent).await.map_err(|_| Refusal::Unavailable)?;
            if owners.iter().any(|(_, d)| d.return_path == label) {
                return Ok(Route::Bounce);
            }
        }
        let mut owners = store.domain_owners(domain).await.map_err(|_| Refusal::Unavailable)?;
        owners.retain(|(_, d)| d.receiving);
        if owners.is_empty() {
            return Err(Refusal::Relay);
        }
        // Two accounts that both verified the name: the first to add it receives.
        owners.sort_by_key(|(_, d)| d.created_at);
        match owners.into_iter().find(|(_, d)| receives(d)) {
            Some((account, _)) => Ok(Route::Receive(account)),
            None => Err(Refusal::NotVerified),
        }
    }

    /// Takes one accepted message (the listener has routed each recipient with
    /// [`route`](Self::route) and put its `Received:` line on top of `raw`): for bounce
    /// addresses, applies it to the email it answers; for receiving domains, keeps it once per
    /// account with `email.received`. Returns when that is durable; an error means nothing of
    /// it may be acknowledged.
    pub async fn receive(
        &self,
        arrival: Arrival,
        raw: Vec<u8>,
        routes: &[(String, Route)],
        authentication: Option<Authentication>,
    ) -> Result<ReceiveReport, crate::Error> {
        let mut report = ReceiveReport::default();
        if routes.iter().any(|(_, r)| *r == Route::Bounce) {
            match self.ingest_bounce(&raw).await {
                Ok(r) => report.bounce = Some(r),
                // A report that answers no email of ours (an old one, or spam to the bounce
                // address) is dropped, as an MTA drops mail for a discard address.
                Err(crate::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut accounts: Vec<(AccountId, Vec<String>)> = Vec::new();
        for (rcpt, route) in routes {
            if let Route::Receive(a) = route {
                match accounts.iter_mut().find(|(x, _)| x == a) {
                    Some((_, v)) => v.push(rcpt.clone()),
                    None => accounts.push((a.clone(), vec![rcpt.clone()])),
                }
            }
        }
        if accounts.is_empty() {
            return Ok(report);
        }
        let Some(store) = self.storage().received() else {
            return Err(crate::Error::Storage(crate::error::StorageError::Backend(
                "this store keeps no received mail".into(),
            )));
        };
        let now = self.clock().now();
        let mut copies = Vec::with_capacity(accounts.len());
        for (account, rcpts) in accounts {
            let id = self.next_id();
            let a = Arrival { rcpt_to: rcpts, ..arrival.clone() };
            copies.push((account.clone(), summarize(id, &raw, a, authentication, now)));
            report.kept.push((account, id));
        }
        store.received_put(copies, raw).await?;
        Ok(report)
    }

    fn received_store(&self) -> Result<&dyn crate::ports::ReceivedStore, crate::Error> {
        self.storage().received().ok_or(crate::Error::NotFound { what: "Email" })
    }

    /// `GET /emails/receiving`: a page of this account's received mail, newest first.
    pub async fn received_list(
        &self,
        page: crate::email::PageRequest,
    ) -> Result<crate::email::Page<ReceivedEmail>, crate::Error> {
        Ok(self.received_store()?.received_page(self.account(), page).await?)
    }

    /// One received message's summary.
    pub async fn received(&self, id: EmailId) -> Result<ReceivedEmail, crate::Error> {
        self.received_store()?.received_get(self.account(), id).await?.ok_or(crate::Error::NotFound { what: "Email" })
    }

    /// One received message's summary and raw bytes.
    pub async fn received_with_raw(&self, id: EmailId) -> Result<(ReceivedEmail, Vec<u8>), crate::Error> {
        let e = self.received(id).await?;
        let raw = self
            .received_store()?
            .received_raw(self.account(), id)
            .await?
            .ok_or(crate::Error::NotFound { what: "Email" })?;
        Ok((e, raw))
    }

    /// A signed, expiring token for downloading a received message (`attachment` `None`) or
    /// one of its attachments: `(token, expires_at)`.
    pub fn download_token(&self, id: EmailId, attachment: Option<&str>) -> (String, DateTime<Utc>) {
        let expires = self.clock().now() + DOWNLOAD_TTL;
        let t = crate::tracking::Token {
            kind: crate::tracking::Kind::Download,
            email: id,
            account: self.account().clone(),
            rest: format!("{}|{}", expires.timestamp(), attachment.unwrap_or("")),
        };
        (self.link_key().sign(&t).unwrap_or_default(), expires)
    }

    /// What a download token names, if it is genuine and not expired: the account, the
    /// message, and the attachment (if one).
    pub fn download_target(&self, token: &str) -> Option<(AccountId, EmailId, Option<String>)> {
        let t = self.link_key().verify(token)?;
        if t.kind != crate::tracking::Kind::Download {
            return None;
        }
        let (expires, attachment) = t.rest.split_once('|')?;
        let expires = DateTime::from_timestamp(expires.parse().ok()?, 0)?;
        if self.clock().now() >= expires {
            return None;
        }
        Some((t.account, t.email, (!attachment.is_empty()).then(|| attachment.to_string())))
    }
}

/// How long a download URL works.
pub const DOWNLOAD_TTL: chrono::Duration = chrono::Duration::hours(1);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MSG: &[u8] = b"From: Ann <ann@sender.test>\r\nTo: bob@in.test, carl@in.test\r\nCc: dee@in.test\r\n\
Subject: Hello\r\nMessage-ID: <m1@sender.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/related; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n\
<p>Hi <img src=\"cid:logo1\"></p>\r\n--b\r\nContent-Type: image/png\r\nContent-ID: <logo1>\r\n\
Content-Disposition: inline; filename=\"logo.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0K\r\n--b--\r\n";

    fn arrival() -> Arrival {
        Arrival {
            mail_from: "bounce@sender.test".into(),
            rcpt_to: vec!["bob@in.test".into()],
            client_ip: "127.0.0.1".into(),
            helo: "sender.test".into(),
            tls: false,
        }
    }

    /// A message of `n` empty parts, CRLF.
    fn parts(n: usize) -> String {
        let mut m = String::from(
            "From: a@sender.test\r\nSubject: Many\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=b\r\n\r\n",
        );
        for _ in 0..n {
            m.push_str("--b\r\n\r\n");
        }
        m.push_str("--b--\r\n");
        m
    }

    /// `inner` enclosed in a message as a `message/rfc822` part in base64.
    fn enclosing(inner: &str) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
        format!(
            "From: a@sender.test\r\nSubject: Outer\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n\
--o\r\nContent-Type: text/plain\r\n\r\nsee enclosed\r\n--o\r\nContent-Type: message/rfc822\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--o--\r\n"
        )
    }

    #[test]
    fn parts_are_counted_as_mail_parser_would_build_them() {
        assert!(crate::inbound::parts_within(parts(8).as_bytes(), 10));
        assert!(!crate::inbound::parts_within(parts(20).as_bytes(), 10));
        // LF and lone-CR line endings alike.
        assert!(!crate::inbound::parts_within(parts(20).replace("\r\n", "\n").as_bytes(), 10));
        assert!(!crate::inbound::parts_within(parts(20).replace("\r\n", "\r").as_bytes(), 10));
        // An enclosed message in base64 shows three delimiter lines; mail-parser decodes it
        // and reads its twenty parts too.
        let outer = enclosing(&parts(20));
        assert!(outer.matches("\n--").count() <= 3);
        assert!(!crate::inbound::parts_within(outer.as_bytes(), 10));
        assert!(crate::inbound::parts_within(enclosing(&parts(4)).as_bytes(), 10));
        // Inside an enclosed message read as it stands (its lines are counted once), the
        // one enclosed in base64 is decoded too.
        let plain = format!(
            "From: a@sender.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n\
--p\r\nContent-Type: message/rfc822\r\n\r\n{}\r\n--p--\r\n",
            enclosing(&parts(20))
        );
        assert!(plain.matches("\n--").count() <= 6);
        assert!(!crate::inbound::parts_within(plain.as_bytes(), 10));
        assert!(crate::inbound::parts_within(
            plain.replace(&enclosing(&parts(20)), &enclosing(&parts(2))).as_bytes(),
            10
        ));
    }

    #[test]
    fn a_message_with_more_parts_than_are_read_is_kept_unread() {
        let many = parts(MAX_MIME_PARTS + 1);
        let e = summarize(EmailId::from_u128(9), many.as_bytes(), arrival(), None, Utc::now());
        assert_eq!((e.subject.as_str(), e.size), ("", many.len() as u64), "kept, its summary empty");
        let v = detail_json(&e, many.as_bytes(), HtmlFormat::Cid, None);
        assert_eq!((v["html"].clone(), v["text"].clone()), (Value::Null, Value::Null));
        // Enclosed in base64, likewise.
        let hidden = enclosing(&many);
        assert_eq!(summarize(EmailId::from_u128(9), hidden.as_bytes(), arrival(), None, Utc::now()).subject, "");
        // Within the bound, read as ever.
        let e = summarize(EmailId::from_u128(9), parts(100).as_bytes(), arrival(), None, Utc::now());
        assert_eq!(e.subject, "Many");
        assert_eq!(
            summarize(EmailId::from_u128(9), enclosing(&parts(100)).as_bytes(), arrival(), None, Utc::now()).subject,
            "Outer"
        );
    }

    #[test]
    fn a_message_is_summarized_from_its_headers() {
        let id = EmailId::from_u128(7);
        let e = summarize(id, MSG, arrival(), None, Utc::now());
        assert_eq!(e.from, "ann@sender.test");
        assert_eq!(e.to, ["bob@in.test", "carl@in.test"]);
        assert_eq!(e.cc, ["dee@in.test"]);
        assert_eq!(e.subject, "Hello");
        assert_eq!(e.message_id, "<m1@sender.test>");
        assert_eq!(e.received_for, ["bob@in.test"]);
        assert_eq!(e.attachments.len(), 1);
        let a = &e.attachments[0];
        assert_eq!(
            (a.filename.as_deref(), a.content_type.as_str(), a.content_id.as_deref(), a.size),
            (Some("logo.png"), "image/png", Some("logo1"), 6)
        );
        assert_eq!(a.id, summarize(id, MSG, arrival(), None, Utc::now()).attachments[0].id, "ids are stable");
        let (_, content) = attachment_content(&e, MSG, &a.id).unwrap();
        assert_eq!(content, b"\x89PNG\r\n");
    }

    #[test]
    fn inline_images_become_data_uris_unless_cid_is_asked() {
        let e = summarize(EmailId::from_u128(7), MSG, arrival(), None, Utc::now());
        let d = detail_json(&e, MSG, HtmlFormat::DataUri, None);
        assert!(d["html"].as_str().unwrap().contains("src=\"data:image/png;base64,iVBORw0K\""), "{d}");
        assert_eq!(d["html_format"], "data_uri");
        assert_eq!(d["headers"]["subject"], "Hello");
        let c = detail_json(&e, MSG, HtmlFormat::Cid, None);
        assert!(c["html"].as_str().unwrap().contains("cid:logo1"));
    }

    /// A body the message does not carry is `null`, not one made from the other form.
    #[test]
    fn a_body_the_message_lacks_is_null() {
        let plain = b"From: a@b.test\r\nTo: c@d.test\r\n\r\nplain body\r\n";
        let e = summarize(EmailId::from_u128(1), plain, arrival(), None, Utc::now());
        let d = detail_json(&e, plain, HtmlFormat::DataUri, None);
        assert_eq!((d["html"].clone(), d["text"].as_str()), (Value::Null, Some("plain body\r\n")), "{d}");
        let html = b"From: a@b.test\r\nTo: c@d.test\r\nContent-Type: text/html\r\n\r\n<p>Hi <b>there</b></p>\r\n";
        let e = summarize(EmailId::from_u128(2), html, arrival(), None, Utc::now());
        let d = detail_json(&e, html, HtmlFormat::DataUri, None);
        assert_eq!((d["html"].as_str(), d["text"].clone()), (Some("<p>Hi <b>there</b></p>\r\n"), Value::Null), "{d}");
        // Both forms, as alternatives: each as written.
        let both = b"From: a@b.test\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nthe text\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>the html</p>\r\n--b--\r\n";
        let e = summarize(EmailId::from_u128(3), both, arrival(), None, Utc::now());
        let d = detail_json(&e, both, HtmlFormat::DataUri, None);
        assert_eq!((d["html"].as_str(), d["text"].as_str()), (Some("<p>the html</p>"), Some("the text")), "{d}");
    }

    #[test]
    fn inline_images_cannot_blow_up_the_html() {
        let image = vec![7u8; 100_000];
        let inline = std::collections::HashMap::from([("a", ("image/png".to_string(), image.as_slice()))]);
        let html = "<img src=\"cid:a\">".repeat(10_000);
        let out = inline_images(&html, &inline, 1_000_000);
        assert!(out.len() <= html.len() + 1_000_000, "{} bytes", out.len());
        assert_eq!(out.matches("data:image/png;base64,").count(), 7, "as many as the budget holds");
        assert!(out.ends_with("<img src=\"cid:a\">"), "the rest stay cid: references");
        let near = inline_images("<img src=\"cid:a0\"><img src=cid:a>", &inline, 1_000_000);
        assert!(near.starts_with("<img src=\"cid:a0\">"), "cid:a0 is not cid:a");
        assert!(near.contains("src=data:image/png;base64,"));
    }

    #[test]
    fn a_summary_lists_a_bounded_number_of_attachments() {
        let mut raw = String::from("From: a@b.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n");
        for i in 0..1500 {
            raw.push_str(&format!("--b\r\nContent-Disposition: attachment; filename=f{i}\r\n\r\nx\r\n"));
        }
        raw.push_str("--b--\r\n");
        let e = summarize(EmailId::from_u128(1), raw.as_bytes(), arrival(), None, Utc::now());
        assert_eq!(e.attachments.len(), MAX_LISTED_ATTACHMENTS);
    }

    #[test]
    fn garbage_is_kept_with_an_empty_summary() {
        let e = summarize(EmailId::from_u128(1), b"\x00\xff not mail", arrival(), None, Utc::now());
        assert_eq!(e.size, 11);
        assert_eq!(e.from, "bounce@sender.test");
    }

    #[test]
    fn the_received_line_names_one_recipient_only() {
        let mut a = arrival();
        let one = received_line(&a, "mx.test", "s1", Utc::now());
        assert!(one.contains("for <bob@in.test>") && one.ends_with("\r\n"), "{one}");
        a.rcpt_to.push("x@in.test".into());
        a.helo = "evil\r\nX-Injected: 1".into();
        let two = received_line(&a, "mx.test", "s1", Utc::now());
        assert!(!two.contains("for <") && !two.contains("X-Injected: 1\r\n"), "{two}");
    }

    #[test]
    fn the_received_webhook_has_the_hosted_shape() {
        let e = summarize(EmailId::from_u128(7), MSG, arrival(), None, Utc::now());
        let logged = crate::events::LoggedEvent {
            seq: 1,
            account: AccountId::default(),
            at: e.created_at,
            subject: crate::events::Subject::Received(Box::new(e.clone())),
        };
        let p = crate::webhooks::payload(&logged, None).unwrap();
        assert_eq!(p["type"], "email.received");
        let data = p["data"].as_object().unwrap();
        let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "attachments",
                "bcc",
                "cc",
                "created_at",
                "email_id",
                "from",
                "message_id",
                "received_for",
                "subject",
                "to"
            ]
        );
        assert_eq!(data["email_id"], e.id.to_string());
        let a = data["attachments"][0].as_object().unwrap();
        assert!(!a.contains_key("size"), "the webhook carries no sizes");
        assert_eq!(a["content_id"], "logo1");
        assert!(crate::events::EVENT_TYPES.contains(&"email.received"));
    }

    #[test]
    fn bounce_locals() {
        assert!(is_bounce_local("bounces+0190"));
        assert!(is_bounce_local("Bounces"));
        assert!(!is_bounce_local("bouncesx"));
        assert!(!is_bounce_local("ann"));
    }
}
