//! Webhooks as the hosted service sends them: endpoints, messages (one per endpoint and
//! event), Standard Webhooks / Svix signatures, the retry schedule, and the payloads.
//!
//! Everything here is data and pure functions; the [`crate::webhooks::Dispatcher`] (in
//! `dispatch`) drives them with a store and a [`WebhookSender`].

use crate::email::{AccountId, EmailContent, EmailState};
use crate::events::{LoggedEvent, Subject};
use crate::lifecycle::EventKind;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt::Debug;
use std::time::Duration;

mod api;
mod dispatch;
pub use api::{MAX_ENDPOINT_LEN, MAX_WEBHOOKS, WebhookUpdate, check_endpoint, check_events};
pub use dispatch::{DispatchConfig, Dispatcher, RunReport};

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);
/// An endpoint failing without a success for this long is disabled.
pub const DISABLE_AFTER: chrono::Duration = chrono::Duration::days(5);
/// A delivery succeeds only with a 2xx within this time.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// The delays before each attempt, the first counted from the event and each next one from the
/// previous failure: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// Attempts kept per message (the newest); a message is tried at most 8 times on schedule, but
/// replays add more.
pub const ATTEMPTS_KEPT: usize = 32;
/// A receiver's answer is kept up to this many bytes.
pub const RESPONSE_KEPT: usize = 4096;

/// One webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Its id (a UUID).
    pub id: String,
    /// The URL events are posted to.
    pub endpoint: String,
    /// The event types it receives.
    pub events: Vec<String>,
    /// `false`: disabled (by the user, or after failing for five days).
    pub enabled: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The signing secret (`whsec_` + base64).
    pub secret: String,
    /// The secret it replaced and until when that one still signs.
    pub previous_secret: Option<(String, DateTime<Utc>)>,
    /// The number of the last event fanned out to it: it receives events numbered above it.
    pub cursor: u64,
    /// Its deliveries' health.
    pub health: Health,
}

/// An endpoint's delivery health, updated with each attempt's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Health {
    /// Since when every attempt has failed (`None`: the last one succeeded).
    pub failing_since: Option<DateTime<Utc>>,
    /// Disabled for failing (the store turns the endpoint off).
    pub disabled: bool,
}

impl Webhook {
    /// Whether it receives events of type `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.events.iter().any(|e| e == name)
    }

    /// The `svix-signature` header for `body` sent as message `id` at `ts`: the current
    /// secret's signature, then the previous one's while it is still valid at `now`.
    pub fn signature(&self, id: &str, ts: i64, body: &[u8], now: DateTime<Utc>) -> String {
        let mut out = sign(&self.secret, id, ts, body);
        if let Some((old, until)) = &self.previous_secret
            && *until > now
        {
            out.push(' ');
            out.push_str(&sign(old, id, ts, body));
        }
        out
    }
}

/// A new signing secret: `whsec_` and the base64 of 24 random bytes (Svix's length).
pub fn new_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", B64.encode(bytes))
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{ts}.{body}")>` with the key the base64 after `whsec_`.
pub fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    // A secret we made always decodes; one that does not is used as raw bytes, as Svix does.
    let key = B64.decode(encoded).unwrap_or_else(|_| encoded.as_bytes().to_vec());
    #[allow(clippy::expect_used)] // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Not tried yet.
    Pending,
    /// Tried, failed, to be tried again.
    Attempting,
    /// A receiver answered 2xx.
    Success,
    /// Every attempt on the schedule failed (or the endpoint was disabled).
    Failed,
}

impl MessageStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Attempting => "attempting",
            MessageStatus::Success => "success",
            MessageStatus::Failed => "failed",
        }
    }
}

/// One attempt to deliver a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// `atmpt_…`.
    pub id: String,
    /// When it was made.
    pub sent_at: DateTime<Utc>,
    /// The receiver's status (`None`: no answer — a refused connection, a timeout).
    pub status_code: Option<u16>,
    /// The receiver's answer, cut to [`RESPONSE_KEPT`] bytes, or why there was none.
    pub response: String,
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The account.
    pub account: AccountId,
    /// The endpoint.
    pub webhook_id: String,
    /// The event's number in the log.
    pub seq: u64,
    /// `msg_…`: the `svix-id`, the same on every attempt.
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// The body, byte for byte what every attempt sends.
    pub payload: String,
    /// Where it stands.
    pub status: MessageStatus,
    /// Failed attempts on the schedule so far.
    pub failures: u32,
    /// The next scheduled attempt.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// A replay asked for (one extra attempt, outside the schedule).
    pub replay_at: Option<DateTime<Utc>>,
    /// The attempts made, oldest first (the newest [`ATTEMPTS_KEPT`]).
    pub attempts: Vec<Attempt>,
}

impl Message {
    /// When it should next be tried.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        match (self.next_attempt_at, self.replay_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The `msg_` id of event `seq` at endpoint `webhook`: 27 base62 characters, the event number
/// and a hash of the pair, so that it is the same however often it is computed (a fan-out
/// repeated after a crash gives the same id) and names its event ([`parse_message_id`]).
pub fn message_id(webhook: &str, seq: u64) -> String {
    let v = (u128::from(seq) << 64) | u128::from(pair_hash(webhook, seq));
    format!("msg_{}", base62(v, 27))
}

/// The event number a `msg_` id of endpoint `webhook` names, if it is one of its ids.
pub fn parse_message_id(webhook: &str, id: &str) -> Option<u64> {
    let digits = id.strip_prefix("msg_")?;
    if digits.len() != 27 {
        return None;
    }
    let mut v: u128 = 0;
    for c in digits.bytes() {
        let d = ALPHABET.iter().position(|&a| a == c)? as u128;
        v = v.checked_mul(62)?.checked_add(d)?;
    }
    let seq = u64::try_from(v >> 64).ok()?;
    (pair_hash(webhook, seq) == v as u64).then_some(seq)
}

/// An attempt's id: unique enough (random), in the hosted service's shape.
pub fn attempt_id() -> String {
    format!("atmpt_{}", base62(rand::random::<u128>(), 27))
}

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn base62(mut v: u128, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn pair_hash(webhook: &str, seq: u64) -> u64 {
    let d = Sha256::new().chain_update(webhook.as_bytes()).chain_update(seq.to_be_bytes()).finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// What one attempt came to, as the schedule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// 2xx within the timeout.
    Delivered,
    /// Anything else: another status (3xx included), a timeout, no connection.
    Failed,
}

/// What to do after an attempt: a pure function of the message's place on the schedule, the
/// result and the time, so that it can be tested exhaustively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The message's new status.
    pub status: MessageStatus,
    /// Failed scheduled attempts after this one.
    pub failures: u32,
    /// The next scheduled attempt.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// After a scheduled attempt that was the `failures + 1`-th: delivered ends it; a failure waits
/// the schedule's next delay, and the eighth failure ends it `failed`.
pub fn after_attempt(failures: u32, result: AttemptResult, now: DateTime<Utc>) -> Decision {
    match result {
        AttemptResult::Delivered => Decision { status: MessageStatus::Success, failures, next_attempt_at: None },
        AttemptResult::Failed => {
            let failures = failures.saturating_add(1);
            match SCHEDULE.get(failures as usize) {
                Some(delay) => Decision {
                    status: MessageStatus::Attempting,
                    failures,
                    next_attempt_at: Some(now + chrono::Duration::from_std(*delay).unwrap_or_default()),
                },
                None => Decision { status: MessageStatus::Failed, failures, next_attempt_at: None },
            }
        }
    }
}

/// After a replay (an extra attempt outside the schedule): success ends the message as
/// delivered; a failure leaves its status and schedule as they were.
pub fn after_replay(m: &Message, result: AttemptResult) -> Decision {
    match result {
        AttemptResult::Delivered => {
            Decision { status: MessageStatus::Success, failures: m.failures, next_attempt_at: None }
        }
        AttemptResult::Failed => {
            Decision { status: m.status, failures: m.failures, next_attempt_at: m.next_attempt_at }
        }
    }
}

/// The endpoint's health after an attempt at `now`: a success clears it, a failure starts or
/// continues a failing streak, and a streak of [`DISABLE_AFTER`] disables the endpoint.
pub fn health_after(before: Health, result: AttemptResult, now: DateTime<Utc>) -> Health {
    match result {
        AttemptResult::Delivered => Health { failing_since: None, disabled: false },
        AttemptResult::Failed => {
            let since = before.failing_since.unwrap_or(now);
            Health { failing_since: Some(since), disabled: now - since >= DISABLE_AFTER }
        }
    }
}

/// What a receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookReply {
    /// The HTTP status.
    pub status: u16,
    /// The body, cut to [`RESPONSE_KEPT`] bytes.
    pub body: String,
}

/// The port through which webhooks leave: one POST with these headers and body, answered
/// within `timeout` or failed. A redirect is an answer (3xx), never followed.
#[async_trait]
pub trait WebhookSender: Send + Sync + Debug {
    /// Posts `body` to `url`. `Err`: no answer (why, for the attempt's record).
    async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<WebhookReply, String>;
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The webhook body for a log entry, exactly as the hosted service shapes it: `{type,
/// created_at, data}`. Email events need the email (`from`, `to`, `subject`, tags as an
/// object, custom headers); `None` when an email event's email is not given.
pub fn payload(event: &LoggedEvent, email: Option<(&EmailContent, &EmailState)>) -> Option<Value> {
    let data = match &event.subject {
        Subject::Email { id, event: e } => {
            let (content, state) = email?;
            let mut data = json!({
                "email_id": id.to_string(),
                "created_at": iso(state.created_at),
                "from": content.from.to_string(),
                "to": content.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "subject": content.subject,
                "message_id": format!("<{}>", content.message_id.trim_matches(['<', '>'])),
            });
            let obj = data.as_object_mut()?;
            if !content.tags.is_empty() {
                let tags: serde_json::Map<String, Value> =
                    content.tags.iter().map(|t| (t.name.clone(), Value::String(t.value.clone()))).collect();
                obj.insert("tags".into(), Value::Object(tags));
            }
            if !content.headers.is_empty() {
                let headers: Vec<Value> =
                    content.headers.iter().map(|(n, v)| json!({ "name": n, "value": v })).collect();
                obj.insert("headers".into(), Value::Array(headers));
            }
            if let Some(r) = &e.recipient {
                obj.insert("recipient".into(), Value::String(r.clone()));
            }
            match e.kind {
                EventKind::Bounced => {
                    let b = e.bounce.as_ref();
                    let diagnostic: Vec<String> = b
                        .map(|b| b.diagnostic.clone())
                        .filter(|d| !d.is_empty())
                        .or_else(|| e.reply.as_ref().map(|r| vec![format!("smtp; {r}")]))
                        .unwrap_or_default();
                    obj.insert(
                        "bounce".into(),
                        json!({
                            "message": b.map_or_else(|| e.reason.clone().unwrap_or_default(), |b| b.message.clone()),
                            "subType": b.map_or(Value::String("Undetermined".into()), |b| json!(b.subtype)),
                            "type": b.map_or(Value::String("Undetermined".into()), |b| json!(b.kind)),
                            "diagnosticCode": diagnostic,
                        }),
                    );
                }
                EventKind::Failed => {
                    obj.insert("failed".into(), json!({ "reason": e.reason.clone().unwrap_or_default() }));
                }
                EventKind::Suppressed => {
                    obj.insert(
                        "suppressed".into(),
                        json!({
                            "message": e.reason.clone().unwrap_or_else(|| "The recipient is on the suppression list.".into()),
                            "type": "OnAccountSuppressionList",
                        }),
                    );
                }
                // The hosted service's click detail; opens get the same detail under `open`
                // (beyond the hosted service, which sends none), both with `machine` set when
                // a prefetcher or scanner made the hit.
                EventKind::Clicked | EventKind::Opened => {
                    if let Some(h) = e.hit.as_deref() {
                        let mut detail = json!({
                            "ipAddress": h.ip,
                            "timestamp": iso(e.at),
                            "userAgent": h.user_agent,
                            "machine": h.machine,
                        });
                        let field = if e.kind == EventKind::Clicked {
                            detail["link"] = json!(h.link);
                            "click"
                        } else {
                            "open"
                        };
                        obj.insert(field.into(), detail);
                    }
                }
                EventKind::Canceled => {
                    if let Some(r) = &e.reason {
                        obj.insert("canceled".into(), json!({ "reason": r }));
                    }
                }
                _ => {}
            }
            data
        }
        Subject::SuppressionAdded(s) | Subject::SuppressionRemoved(s) => crate::suppressions::json(&event.account, s),
        Subject::Domain { domain, .. } => crate::domains::domain_event_json(domain),
        Subject::Received(e) => crate::receiving::webhook_json(e),
    };
    Some(json!({ "type": event.type_name(), "created_at": iso(event.at), "data": data }))
}

/// A suppression's stable id ([`crate::suppressions::id`]).
pub use crate::suppressions::id as suppression_id;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + s, 0).unwrap()
    }

    #[test]
    fn the_signature_is_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(sign(secret, id, 1614265330, body), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn message_ids_are_stable_and_name_their_event() {
        let a = message_id("hook-1", 42);
        assert_eq!(a, message_id("hook-1", 42));
        assert!(a.starts_with("msg_") && a.len() == 31, "{a}");
        assert_eq!(parse_message_id("hook-1", &a), Some(42));
        assert_eq!(parse_message_id("hook-2", &a), None, "another endpoint's id");
        assert_eq!(parse_message_id("hook-1", "msg_x"), None);
        assert_ne!(a, message_id("hook-1", 43));
    }

    #[test]
    fn rotation_signs_with_both_secrets_for_a_day() {
        let mut h = Webhook {
            id: "h".into(),
            endpoint: "http://x".into(),
            events: vec![],
            enabled: true,
            created_at: t(0),
            secret: new_secret(),
            previous_secret: None,
            cursor: 0,
            health: Health::default(),
        };
        let old = h.secret.clone();
        h.secret = new_secret();
        h.previous_secret = Some((old.clone(), t(0) + ROTATION_OVERLAP));
        let both = h.signature("msg", 5, b"{}", t(10));
        assert_eq!(both, format!("{} {}", sign(&h.secret, "msg", 5, b"{}"), sign(&old, "msg", 5, b"{}")));
        assert_eq!(h.signature("msg", 5, b"{}", t(86_400)), sign(&h.secret, "msg", 5, b"{}"));
    }

    #[test]
    fn a_click_carries_the_hosted_click_detail() {
        let new = crate::testkit::new_email("a", t(0), 1, None);
        let state = new.initial_state();
        let hit = crate::email::Hit {
            link: Some("https://shop.test/x".into()),
            ip: Some("198.51.100.9".into()),
            user_agent: Some("UA".into()),
            machine: None,
        };
        let event = crate::email::Event::new(EventKind::Clicked, t(60)).hit(hit);
        let logged = LoggedEvent {
            seq: 1,
            account: state.account.clone(),
            at: t(60),
            subject: Subject::Email { id: state.id, event },
        };
        let body = payload(&logged, Some((&new.content, &state))).unwrap();
        assert_eq!(body["type"], "email.clicked");
        assert_eq!(
            body["data"]["click"],
            json!({"ipAddress": "198.51.100.9", "link": "https://shop.test/x", "timestamp": iso(t(60)), "userAgent": "UA", "machine": null})
        );
    }

    #[test]
    fn the_schedule_is_the_hosted_one() {
        // Three failures, then a success: about 35 min 5 s after the first attempt.
        let mut now = t(0);
        let mut failures = 0;
        let mut at = vec![];
        for _ in 0..3 {
            let d = after_attempt(failures, AttemptResult::Failed, now);
            failures = d.failures;
            now = d.next_attempt_at.unwrap();
            at.push(now);
        }
        assert_eq!(now - t(0), chrono::Duration::seconds(5 + 300 + 1800));
        let d = after_attempt(failures, AttemptResult::Delivered, now);
        assert_eq!((d.status, d.next_attempt_at), (MessageStatus::Success, None));
    }

    proptest! {
        /// Whatever the order of results: at most 8 scheduled attempts, each wait the
        /// schedule's, success final, and the eighth failure ends it failed.
        #[test]
        fn retry_decisions_follow_the_schedule(results in proptest::collection::vec(any::<bool>(), 1..20), start in 0i64..1_000_000) {
            let mut failures = 0u32;
            let mut now = t(start);
            let mut attempts = 0;
            for ok in results {
                attempts += 1;
                let r = if ok { AttemptResult::Delivered } else { AttemptResult::Failed };
                let d = after_attempt(failures, r, now);
                prop_assert!(attempts <= 8);
                if ok {
                    prop_assert_eq!(d.status, MessageStatus::Success);
                    prop_assert_eq!(d.next_attempt_at, None);
                    break;
                }
                prop_assert_eq!(d.failures, failures + 1);
                if d.failures as usize == SCHEDULE.len() {
                    prop_assert_eq!(d.status, MessageStatus::Failed);
                    prop_assert_eq!(d.next_attempt_at, None);
                    break;
                }
                let next = d.next_attempt_at.unwrap();
                prop_assert_eq!(next - now, chrono::Duration::from_std(SCHEDULE[d.failures as usize]).unwrap());
                prop_assert_eq!(d.status, MessageStatus::Attempting);
                failures = d.failures;
                now = next;
            }
        }

        /// Health: any success clears the streak; disabled exactly when failing for 5 days.
        #[test]
        fn health_disables_after_five_days_of_failure(steps in proptest::collection::vec((any::<bool>(), 0i64..200_000), 1..40)) {
            let mut h = Health::default();
            let mut now = t(0);
            let mut since: Option<DateTime<Utc>> = None;
            for (ok, gap) in steps {
                now += chrono::Duration::seconds(gap);
                let r = if ok { AttemptResult::Delivered } else { AttemptResult::Failed };
                h = health_after(h, r, now);
                since = if ok { None } else { since.or(Some(now)) };
                prop_assert_eq!(h.failing_since, since);
                prop_assert_eq!(h.disabled, since.is_some_and(|s| now - s >= DISABLE_AFTER));
            }
        }
    }
}
