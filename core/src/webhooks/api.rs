//! The engine's side of the event log and webhooks: reading the log by cursor, following it,
//! and managing endpoints and their messages for one account.

use super::{Message, Webhook, new_secret, parse_message_id};
use crate::engine::Engine;
use crate::error::{Error, FieldError, Rule, StorageError};
use crate::events::LoggedEvent;
use crate::ports::{EventLog, WebhookStore};
use futures::Stream;
use std::time::Duration;

/// The longest endpoint URL accepted.
pub const MAX_ENDPOINT_LEN: usize = 2048;
/// Endpoints one account may have: each one multiplies every event into a message and is
/// read on every dispatcher pass.
pub const MAX_WEBHOOKS: usize = 100;

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct WebhookUpdate {
    /// A new URL.
    pub endpoint: Option<String>,
    /// A new set of event types.
    pub events: Option<Vec<String>>,
    /// Enable (`true`) or disable (`false`).
    pub enabled: Option<bool>,
}

impl WebhookUpdate {
    /// No change.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the URL.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }
    /// Sets the event types.
    pub fn events(mut self, events: Vec<String>) -> Self {
        self.events = Some(events);
        self
    }
    /// Enables or disables.
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = Some(on);
        self
    }
}

fn unsupported(what: &str) -> Error {
    Error::Storage(StorageError::Backend(format!("this store keeps no {what}")))
}

/// Checks an endpoint URL: absolute `http(s)`, a host, no credentials, bounded length.
pub fn check_endpoint(url: &str) -> Result<String, FieldError> {
    let bad = |why: &str| FieldError::new("endpoint", Rule::Url(why.to_string()));
    if url.chars().count() > MAX_ENDPOINT_LEN {
        return Err(FieldError::new("endpoint", Rule::TooLong { max: MAX_ENDPOINT_LEN, got: url.chars().count() }));
    }
    let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(&format!("the scheme is {}", parsed.scheme())));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("credentials in the URL are not accepted"));
    }
    Ok(parsed.to_string())
}

/// Checks a list of event types: at least one, at most 64, each known; duplicates dropped.
pub fn check_events(events: &[String]) -> Result<Vec<String>, FieldError> {
    if events.is_empty() {
        return Err(FieldError::new("events", Rule::TooFew { min: 1, got: 0 }));
    }
    if events.len() > 64 {
        return Err(FieldError::new("events", Rule::TooMany { max: 64, got: events.len() }));
    }
    let mut out: Vec<String> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        if !crate::events::is_known_type(e) {
            return Err(FieldError::new(format!("events[{i}]"), Rule::EventType(e.clone())));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

impl Engine {
    fn log(&self) -> Result<&dyn EventLog, Error> {
        self.storage().event_log().ok_or_else(|| unsupported("event log"))
    }

    fn hooks(&self) -> Result<&dyn WebhookStore, Error> {
        self.storage().webhooks().ok_or_else(|| unsupported("webhooks"))
    }

    /// Up to `limit` entries of this account's event log numbered above `after`, in order.
    /// Pass the last one's `seq` to read on.
    pub async fn events(&self, after: u64, limit: usize) -> Result<Vec<LoggedEvent>, Error> {
        Ok(self.log()?.events_after(self.account(), after, limit.clamp(1, 1000)).await?)
    }

    /// Follows this account's event log from after `from` (0: from the start; a stored `seq`:
    /// where a previous run stopped): every entry once, in order, waiting for new ones. A
    /// follower that keeps the `seq` of the last entry it handled and resumes from it sees no
    /// gap and no duplicate across restarts. A failed read ends the stream with its error.
    pub fn subscribe(&self, from: u64) -> impl Stream<Item = Result<LoggedEvent, Error>> + Send + 'static {
        const PAGE: usize = 256;
        // Why polling: the log is written by the store inside other operations, and a store
        // shared by several processes has no in-process signal; an idle follower looks every
        // 50 ms (one read of an index).
        const IDLE: Duration = Duration::from_millis(50);
        let engine = self.clone();
        let state = (engine, from, std::collections::VecDeque::<LoggedEvent>::new(), false);
        futures::stream::unfold(state, |(engine, mut cursor, mut buffer, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(e) = buffer.pop_front() {
                    cursor = e.seq;
                    return Some((Ok(e), (engine, cursor, buffer, false)));
                }
                match engine.events(cursor, PAGE).await {
                    Ok(page) if page.is_empty() => tokio::time::sleep(IDLE).await,
                    Ok(page) => buffer.extend(page),
                    Err(e) => return Some((Err(e), (engine, cursor, buffer, true))),
                }
            }
        })
    }

    /// Creates an endpoint receiving `events` at `endpoint`, from the next event on.
    pub async fn create_webhook(&self, endpoint: &str, events: &[String]) -> Result<Webhook, Error> {
        let endpoint = check_endpoint(endpoint)?;
        let events = check_events(events)?;
        let _creating = self.creating().await?;
        let existing = self.hooks()?.webhook_list(self.account()).await?.len();
        if existing >= MAX_WEBHOOKS {
            return Err(FieldError::new("webhooks", Rule::TooMany { max: MAX_WEBHOOKS, got: existing + 1 }).into());
        }
        let hook = Webhook {
            id: uuid::Uuid::new_v4().to_string(),
            endpoint,
            events,
            enabled: true,
            created_at: self.clock().now(),
            secret: new_secret(),
            previous_secret: None,
            cursor: self.log()?.events_head().await?,
            health: super::Health::default(),
        };
        self.hooks()?.webhook_put(self.account(), hook.clone()).await?;
        Ok(hook)
    }

    /// The endpoint `id`.
    pub async fn webhook(&self, id: &str) -> Result<Webhook, Error> {
        self.hooks()?.webhook_get(self.account(), id).await?.ok_or(Error::NotFound { what: "Webhook" })
    }

    /// This account's endpoints, newest first.
    pub async fn webhooks(&self) -> Result<Vec<Webhook>, Error> {
        let mut all = self.hooks()?.webhook_list(self.account()).await?;
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(all)
    }

    /// Changes an endpoint. Enabling a disabled one starts it at the next event (what happened
    /// while it was off is not sent) and clears its failing streak.
    pub async fn update_webhook(&self, id: &str, update: WebhookUpdate) -> Result<Webhook, Error> {
        let mut hook = self.webhook(id).await?;
        if let Some(e) = &update.endpoint {
            hook.endpoint = check_endpoint(e)?;
        }
        if let Some(ev) = &update.events {
            hook.events = check_events(ev)?;
        }
        if let Some(on) = update.enabled {
            if on && !hook.enabled {
                hook.cursor = self.log()?.events_head().await?;
                hook.health = super::Health::default();
            }
            hook.enabled = on;
        }
        self.hooks()?.webhook_put(self.account(), hook.clone()).await?;
        Ok(hook)
    }

    /// Removes an endpoint and its messages.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), Error> {
        if self.hooks()?.webhook_delete(self.account(), id).await? {
            Ok(())
        } else {
            Err(Error::NotFound { what: "Webhook" })
        }
    }

    /// A new signing secret; the old one keeps signing beside it for 24 hours.
    pub async fn rotate_webhook_secret(&self, id: &str) -> Result<Webhook, Error> {
        let mut hook = self.webhook(id).await?;
        let until = self.clock().now() + super::ROTATION_OVERLAP;
        hook.previous_secret = Some((std::mem::replace(&mut hook.secret, new_secret()), until));
        self.hooks()?.webhook_put(self.account(), hook.clone()).await?;
        Ok(hook)
    }

    /// Endpoint `id`'s messages, newest first, older than message `after` when given; and
    /// whether more follow.
    pub async fn webhook_messages(
        &self,
        id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), Error> {
        self.webhook(id).await?;
        let before = match after {
            // An event id is `msg_…`, not a UUID: the rule says which.
            Some(m) => Some(parse_message_id(id, m).ok_or_else(|| {
                FieldError::new("after", Rule::Shape("it is not the id of an event of this webhook (`msg_…`)".into()))
            })?),
            None => None,
        };
        Ok(self.hooks()?.message_page(self.account(), id, before, limit.clamp(1, 100)).await?)
    }

    /// Endpoint `id`'s message `message` (`msg_…`).
    pub async fn webhook_message(&self, id: &str, message: &str) -> Result<Message, Error> {
        let not_found = Error::NotFound { what: "Webhook event" };
        let Some(seq) = parse_message_id(id, message) else { return Err(not_found) };
        self.hooks()?.message_get(self.account(), id, seq).await?.ok_or(not_found)
    }

    /// Queues one extra delivery of a message at once; its retry schedule is left alone.
    pub async fn replay_webhook_message(&self, id: &str, message: &str) -> Result<Message, Error> {
        let mut m = self.webhook_message(id, message).await?;
        m.replay_at = Some(self.clock().now());
        if !self.hooks()?.message_put(m.clone(), None).await? {
            return Err(Error::NotFound { what: "Webhook event" });
        }
        Ok(m)
    }
}
