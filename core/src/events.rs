//! The event log: every state change, in the order it was committed, per account.
//!
//! Stores append to it inside the same transaction as the change that caused it (an email's
//! new events, a suppression added or removed), so the log and the records never disagree: an
//! event is in the log exactly when it is on its email. Each entry has a sequence number,
//! assigned in commit order and never reused; a reader that has seen `n` has seen every entry
//! below `n` that it will ever see (numbers may skip — an aborted group's — never go back).
//! Readers follow the log by cursor ([`crate::Engine::events`], [`crate::Engine::subscribe`]);
//! the webhooks dispatcher is one of them.

use crate::email::{AccountId, EmailId, Event};
use crate::lifecycle::EventKind;
use crate::ports::SuppressionEntry;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What one log entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Subject {
    /// An event pushed onto an email.
    Email {
        /// The email.
        id: EmailId,
        /// The event, exactly as the email holds it.
        event: Event,
    },
    /// An address was put on the suppression list (it was not on it).
    SuppressionAdded(SuppressionEntry),
    /// An address was taken off the suppression list.
    SuppressionRemoved(SuppressionEntry),
    /// A domain was added, changed (settings or status) or removed; as it stood after the
    /// change, without its keys.
    Domain {
        /// `domain.created`, `domain.updated` or `domain.deleted`.
        change: DomainEvent,
        /// The domain.
        domain: Box<crate::domains::Domain>,
    },
    /// A message arrived for one of the account's receiving domains.
    Received(Box<crate::receiving::ReceivedEmail>),
}

/// What happened to a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainEvent {
    /// Added.
    Created,
    /// Changed.
    Updated,
    /// Removed.
    Deleted,
}

/// One entry of an account's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// Its place in the log: larger is later, across all accounts.
    pub seq: u64,
    /// The account whose log it is in.
    pub account: AccountId,
    /// When it happened (the time of the change, from the engine's clock).
    pub at: DateTime<Utc>,
    /// What happened.
    pub subject: Subject,
}

/// Every event type the log can hold, as the hosted service names them in webhooks.
pub const EVENT_TYPES: [&str; 18] = [
    "email.sent",
    "email.scheduled",
    "email.delivered",
    "email.delivery_delayed",
    "email.complained",
    "email.bounced",
    "email.opened",
    "email.clicked",
    "email.failed",
    "email.canceled",
    "email.suppressed",
    "email.queued",
    "suppression.added",
    "suppression.removed",
    "domain.created",
    "domain.updated",
    "domain.deleted",
    "email.received",
];

/// The event types the hosted service defines beyond [`EVENT_TYPES`], which this engine will
/// emit as its features land (receiving, domains, contacts, topics): accepted in a webhook's
/// `events` so that endpoints written for the hosted service subscribe unchanged.
pub const LATER_TYPES: [&str; 7] = [
    "contact.created",
    "contact.updated",
    "contact.deleted",
    "contact.topics.updated",
    "topic.created",
    "topic.updated",
    "topic.deleted",
];

/// Whether `name` is an event type a webhook may subscribe to (the hosted service's set, plus
/// this engine's own `email.queued` and `email.canceled`).
pub fn is_known_type(name: &str) -> bool {
    EVENT_TYPES.contains(&name) || LATER_TYPES.contains(&name)
}

impl LoggedEvent {
    /// The event's type as webhooks name it (`email.delivered`, `suppression.added`, …).
    pub fn type_name(&self) -> &'static str {
        match &self.subject {
            Subject::Email { event, .. } => email_type(event.kind),
            Subject::SuppressionAdded(_) => "suppression.added",
            Subject::SuppressionRemoved(_) => "suppression.removed",
            Subject::Domain { change: DomainEvent::Created, .. } => "domain.created",
            Subject::Domain { change: DomainEvent::Updated, .. } => "domain.updated",
            Subject::Domain { change: DomainEvent::Deleted, .. } => "domain.deleted",
            Subject::Received(_) => "email.received",
        }
    }

    /// The email it is about, for email events.
    pub fn email_id(&self) -> Option<EmailId> {
        match &self.subject {
            Subject::Email { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// The webhook type of an email event kind.
pub fn email_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Queued => "email.queued",
        EventKind::Scheduled => "email.scheduled",
        EventKind::Sent => "email.sent",
        EventKind::Delivered => "email.delivered",
        EventKind::DeliveryDelayed => "email.delivery_delayed",
        EventKind::Bounced => "email.bounced",
        EventKind::Complained => "email.complained",
        EventKind::Opened => "email.opened",
        EventKind::Clicked => "email.clicked",
        EventKind::Failed => "email.failed",
        EventKind::Canceled => "email.canceled",
        EventKind::Suppressed => "email.suppressed",
    }
}

/// An entry not yet numbered: what a store appends (it assigns `seq` when it writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The account.
    pub account: AccountId,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub subject: Subject,
}

impl Pending {
    /// The entry for a domain change (its keys left out).
    pub fn for_domain(
        account: &AccountId,
        at: DateTime<Utc>,
        change: DomainEvent,
        domain: &crate::domains::Domain,
    ) -> Pending {
        Pending { account: account.clone(), at, subject: Subject::Domain { change, domain: Box::new(domain.public()) } }
    }

    /// The entries for the events `events` just pushed onto email `id`.
    pub fn for_email<'a>(account: &AccountId, id: EmailId, events: &'a [Event]) -> impl Iterator<Item = Pending> + 'a {
        let account = account.clone();
        events.iter().map(move |e| Pending {
            account: account.clone(),
            at: e.at,
            subject: Subject::Email { id, event: e.clone() },
        })
    }

    /// Numbered.
    pub fn numbered(self, seq: u64) -> LoggedEvent {
        LoggedEvent { seq, account: self.account, at: self.at, subject: self.subject }
    }
}
