//! The event lifecycle of one email, as a transition function.
//!
//! ```text
//! (new) ─► scheduled ─► queued ─► sent ─► delivered | delivery_delayed | bounced | failed
//!             │   └──► failed      │  ▲        │           (delivered/bounced: per recipient,
//!             ▼                    ▼  │        ▼            so each may follow the other)
//!          canceled             suppressed   opened | clicked | complained
//! ```
//!
//! Invariants: `canceled` and `failed` are final; nothing is `sent` without having been
//! `queued`; an outcome (delivered, bounced, delay) needs a `sent` first; engagement (opened,
//! clicked, complained) needs the message to have left. `delivery_delayed` follows `sent` once
//! per attempt window (never itself). An email with several recipients carries one event per
//! recipient outcome, which is why `delivered` may follow `bounced` and the reverse.
//! `suppressed` may be followed by `sent` when some recipients were suppressed and the rest
//! were sent to.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The twelve event kinds, in the wire's snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Accepted, waiting to be sent now.
    Queued,
    /// Accepted for a later time.
    Scheduled,
    /// Handed to a server (a relay: its fate beyond is unknown).
    Sent,
    /// The recipient's server accepted it.
    Delivered,
    /// A server deferred it; it will be retried.
    DeliveryDelayed,
    /// A server refused it, or the retry window closed.
    Bounced,
    /// The recipient marked it as spam.
    Complained,
    /// The recipient opened it (tracking).
    Opened,
    /// The recipient clicked a link (tracking).
    Clicked,
    /// It was not sent, for the reason the event gives.
    Failed,
    /// The sender canceled it before it was sent.
    Canceled,
    /// The recipient is on the suppression list: no server was contacted.
    Suppressed,
}

impl EventKind {
    /// Every kind, in the order the lifecycle introduces them.
    pub const ALL: [EventKind; 12] = [
        EventKind::Queued,
        EventKind::Scheduled,
        EventKind::Sent,
        EventKind::Delivered,
        EventKind::DeliveryDelayed,
        EventKind::Bounced,
        EventKind::Complained,
        EventKind::Opened,
        EventKind::Clicked,
        EventKind::Failed,
        EventKind::Canceled,
        EventKind::Suppressed,
    ];

    /// The wire name (`delivery_delayed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Queued => "queued",
            EventKind::Scheduled => "scheduled",
            EventKind::Sent => "sent",
            EventKind::Delivered => "delivered",
            EventKind::DeliveryDelayed => "delivery_delayed",
            EventKind::Bounced => "bounced",
            EventKind::Complained => "complained",
            EventKind::Opened => "opened",
            EventKind::Clicked => "clicked",
            EventKind::Failed => "failed",
            EventKind::Canceled => "canceled",
            EventKind::Suppressed => "suppressed",
        }
    }

    /// No event may follow.
    pub fn is_final(self) -> bool {
        matches!(self, EventKind::Canceled | EventKind::Failed)
    }

    /// Still waiting to be sent: the worker may claim it.
    pub fn is_pending(self) -> bool {
        matches!(self, EventKind::Queued | EventKind::Scheduled)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event that may not follow the email's current `last_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an email whose last event is `{}` cannot become `{to}`", .from.map_or("(none)", EventKind::as_str))]
pub struct TransitionError {
    /// The current last event (`None`: nothing yet).
    pub from: Option<EventKind>,
    /// The event that was refused.
    pub to: EventKind,
}

/// Whether `to` may follow `from` (`None`: the email is new).
pub fn allowed(from: Option<EventKind>, to: EventKind) -> bool {
    use EventKind::*;
    let Some(from) = from else {
        return matches!(to, Queued | Scheduled);
    };
    match from {
        Scheduled => matches!(to, Queued | Canceled | Failed),
        Queued => matches!(to, Sent | Suppressed | Failed),
        // Suppressed recipients are recorded before the rest are sent to, and again on a retry.
        Suppressed => matches!(to, Sent | Suppressed | Failed | Delivered | Bounced | DeliveryDelayed),
        Sent => matches!(to, Delivered | DeliveryDelayed | Bounced | Failed | Opened | Clicked | Complained),
        DeliveryDelayed => matches!(to, Delivered | Bounced | Failed | Suppressed),
        Delivered | Bounced => matches!(to, Delivered | Bounced | DeliveryDelayed | Opened | Clicked | Complained),
        Opened | Clicked | Complained => matches!(to, Opened | Clicked | Complained | Bounced),
        Canceled | Failed => false,
    }
}

/// The transition function: `Ok` when `to` may follow `from`.
pub fn transition(from: Option<EventKind>, to: EventKind) -> Result<EventKind, TransitionError> {
    if allowed(from, to) { Ok(to) } else { Err(TransitionError { from, to }) }
}

#[cfg(test)]
mod tests {
    use super::EventKind::*;
    use super::*;

    #[test]
    fn the_happy_paths_are_allowed() {
        let paths: &[&[EventKind]] = &[
            &[Queued, Sent, Delivered, Opened, Clicked],
            &[Scheduled, Queued, Sent, Bounced],
            &[Scheduled, Canceled],
            &[Queued, Suppressed],
            &[Queued, Suppressed, Sent, Delivered],
            &[Queued, Sent, Delivered, Complained],
            &[Queued, Sent, DeliveryDelayed, Delivered],
            &[Queued, Sent, DeliveryDelayed, Bounced],
            &[Queued, Sent, Delivered, Bounced, Delivered],
            &[Queued, Failed],
        ];
        for path in paths {
            let mut last = None;
            for &e in *path {
                last = Some(transition(last, e).unwrap_or_else(|err| panic!("{path:?}: {err}")));
            }
        }
    }

    #[test]
    fn illegal_transitions_are_rejected() {
        let bad: &[(Option<EventKind>, EventKind)] = &[
            (None, Sent),
            (None, Delivered),
            (Some(Canceled), Queued),
            (Some(Canceled), Sent),
            (Some(Failed), Sent),
            (Some(Scheduled), Sent),
            (Some(Queued), Delivered),
            (Some(Queued), Canceled),
            (Some(Sent), Queued),
            (Some(Delivered), Queued),
            (Some(Delivered), Sent),
            (Some(DeliveryDelayed), DeliveryDelayed),
            (Some(Opened), Delivered),
        ];
        for &(from, to) in bad {
            assert_eq!(transition(from, to), Err(TransitionError { from, to }));
        }
    }

    #[test]
    fn final_states_accept_nothing() {
        for from in [Canceled, Failed] {
            assert!(from.is_final());
            for to in EventKind::ALL {
                assert!(!allowed(Some(from), to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn serde_names_match_the_wire() {
        for k in EventKind::ALL {
            let json = serde_json::to_string(&k).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
    }
}
