//! The webhook dispatcher: follows each endpoint's place in the event log, turns the events it
//! wants into messages (stored with the cursor's move, once), and delivers due messages through
//! a [`WebhookSender`], recording every attempt and the schedule's decision.
//!
//! At least once: a message is stored before it is sent and marked done only after a 2xx, so
//! a crash between the two sends it again — with the same `svix-id`, which receivers dedupe on.

use super::{
    Attempt, AttemptResult, MessageStatus, RESPONSE_KEPT, Webhook, WebhookSender, after_attempt, after_replay,
    attempt_id, message_id, payload,
};
use crate::email::{AccountId, EmailId, EmailRecord};
use crate::error::Error;
use crate::events::LoggedEvent;
use crate::ports::{Clock, Storage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Pages of the log fanned out per endpoint and pass.
const FAN_OUT_PAGES: usize = 8;

/// How the dispatcher works. Change fields of [`DispatchConfig::default`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DispatchConfig {
    /// Deliveries in flight to one endpoint at most.
    pub per_endpoint: usize,
    /// Events read, or due messages taken, per step.
    pub batch: usize,
    /// How long an idle dispatcher sleeps before it looks at the log again (it is woken
    /// earlier through [`Dispatcher::waker`]).
    pub idle: Duration,
    /// The time a receiver has to answer 2xx.
    pub timeout: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            per_endpoint: 32,
            batch: 512,
            idle: Duration::from_millis(100),
            timeout: super::ATTEMPT_TIMEOUT,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Messages created from the log.
    pub fanned_out: usize,
    /// Attempts made.
    pub attempted: usize,
    /// Attempts answered 2xx.
    pub delivered: usize,
}

/// The dispatcher. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    sender: Arc<dyn WebhookSender>,
    config: DispatchConfig,
    wake: Arc<Notify>,
    gates: Arc<std::sync::Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl Dispatcher {
    /// A dispatcher over `storage` (which must offer the event log and webhooks), with the
    /// engine's clock.
    pub fn new(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        sender: Arc<dyn WebhookSender>,
        config: DispatchConfig,
    ) -> Dispatcher {
        Dispatcher { storage, clock, sender, config, wake: Arc::new(Notify::new()), gates: Default::default() }
    }

    /// Notifying it wakes an idle dispatcher at once (new events, a replay).
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Runs until `shutdown` completes, then finishes the attempts in flight.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        tokio::pin!(shutdown);
        loop {
            let report = match self.run_once().await {
                Ok(r) => r,
                Err(e) => {
                    // A store that fails now may work in a moment: the log keeps everything.
                    tracing::warn!(target: "mailroom::webhooks", error = %e, "a dispatch pass failed");
                    RunReport::default()
                }
            };
            if report.fanned_out > 0 || report.attempted > 0 {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.idle) => {}
            }
        }
    }

    /// One pass: fans out every event available to every enabled endpoint, then attempts every
    /// message due now, and waits for those attempts.
    pub async fn run_once(&self) -> Result<RunReport, Error> {
        let (log, hooks) = match (self.storage.event_log(), self.storage.webhooks()) {
            (Some(l), Some(h)) => (l, h),
            _ => return Ok(RunReport::default()),
        };
        let mut report = RunReport::default();
        let all = hooks.webhook_all().await?;
        for (account, hook) in all.iter().filter(|(_, h)| h.enabled) {
            let mut cursor = hook.cursor;
            // A bounded share per pass, so that a long backlog does not hold up deliveries.
            for _ in 0..FAN_OUT_PAGES {
                let events = log.events_after(account, cursor, self.config.batch).await?;
                let Some(last) = events.last().map(|e| e.seq) else { break };
                let messages = self.messages_for(account, hook, &events).await?;
                let n = messages.len();
                if !hooks.messages_enqueue(account, &hook.id, cursor, last, messages).await? {
                    break; // changed under us (updated, deleted): the next pass sees it anew
                }
                report.fanned_out += n;
                cursor = last;
            }
        }
        let now = self.clock.now();
        let due = hooks.messages_due(now, self.config.batch).await?;
        let by_id: HashMap<&str, &Webhook> = all.iter().map(|(_, h)| (h.id.as_str(), h)).collect();
        let mut tasks = Vec::with_capacity(due.len());
        for mut m in due {
            let Some(hook) = by_id.get(m.webhook_id.as_str()).map(|h| (*h).clone()) else { continue };
            if !hook.enabled {
                // A disabled endpoint gets no further attempts.
                m.status = MessageStatus::Failed;
                m.next_attempt_at = None;
                m.replay_at = None;
                hooks.message_put(m, None).await?;
                continue;
            }
            let gate = self.gate(&hook.id);
            let this = self.clone();
            tasks.push(tokio::spawn(async move {
                let Ok(_permit) = gate.acquire_owned().await else { return Ok((false, false)) };
                this.attempt(&hook, m).await
            }));
        }
        for t in tasks {
            match t.await {
                Ok(Ok((tried, ok))) => {
                    report.attempted += usize::from(tried);
                    report.delivered += usize::from(ok);
                }
                Ok(Err(e)) => return Err(e),
                Err(e) => tracing::error!(target: "mailroom::webhooks", error = %e, "an attempt task failed"),
            }
        }
        Ok(report)
    }

    fn gate(&self, id: &str) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(gates.entry(id.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.config.per_endpoint))))
    }

    /// The messages `hook` gets for `events` (those of the types it wants), with their bodies
    /// fixed now: every attempt sends the same bytes.
    async fn messages_for(
        &self,
        account: &AccountId,
        hook: &Webhook,
        events: &[LoggedEvent],
    ) -> Result<Vec<super::Message>, Error> {
        let mut emails: HashMap<EmailId, Option<EmailRecord>> = HashMap::new();
        let mut out = Vec::new();
        for e in events.iter().filter(|e| hook.wants(e.type_name())) {
            let email = match e.email_id() {
                Some(id) => {
                    if let std::collections::hash_map::Entry::Vacant(slot) = emails.entry(id) {
                        slot.insert(self.storage.get_email(account, id).await?);
                    }
                    emails.get(&id).and_then(Option::as_ref).map(|r| (&r.content, &r.state))
                }
                None => None,
            };
            let Some(body) = payload(e, email) else {
                tracing::warn!(target: "mailroom::webhooks", seq = e.seq, "an event's email is gone; not sent");
                continue;
            };
            out.push(super::Message {
                account: account.clone(),
                webhook_id: hook.id.clone(),
                seq: e.seq,
                id: message_id(&hook.id, e.seq),
                event_type: e.type_name().to_string(),
                created_at: e.at,
                payload: body.to_string(),
                status: MessageStatus::Pending,
                failures: 0,
                next_attempt_at: Some(e.at),
                replay_at: None,
                attempts: Vec::new(),
            });
        }
        Ok(out)
    }

    /// One attempt; `(attempted, delivered)`.
    async fn attempt(&self, hook: &Webhook, mut m: super::Message) -> Result<(bool, bool), Error> {
        let sent_at = self.clock.now();
        let ts = sent_at.timestamp();
        let body = m.payload.as_bytes();
        let signature = hook.signature(&m.id, ts, body, sent_at);
        let headers = [
            ("svix-id", m.id.clone()),
            ("svix-timestamp", ts.to_string()),
            ("svix-signature", signature.clone()),
            ("webhook-id", m.id.clone()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", signature),
        ];
        let answer = self.sender.post(&hook.endpoint, &headers, body, self.config.timeout).await;
        let (result, status_code, response) = match answer {
            Ok(r) if (200..300).contains(&r.status) => (AttemptResult::Delivered, Some(r.status), r.body),
            Ok(r) => (AttemptResult::Failed, Some(r.status), r.body),
            Err(why) => (AttemptResult::Failed, None, why),
        };
        // The schedule counts each delay from the failure, which a timeout makes 15 s later
        // than the attempt began.
        let now = self.clock.now();
        let mut response = response;
        if response.len() > RESPONSE_KEPT {
            let mut cut = RESPONSE_KEPT;
            while !response.is_char_boundary(cut) {
                cut -= 1;
            }
            response.truncate(cut);
        }
        m.attempts.push(Attempt { id: attempt_id(), sent_at, status_code, response });
        if m.attempts.len() > super::ATTEMPTS_KEPT {
            let extra = m.attempts.len() - super::ATTEMPTS_KEPT;
            m.attempts.drain(..extra);
        }
        // A replay is an extra attempt: it leaves the schedule alone unless it succeeds.
        let scheduled = m.next_attempt_at.is_some_and(|t| t <= now);
        let decision = if scheduled { after_attempt(m.failures, result, now) } else { after_replay(&m, result) };
        if m.replay_at.is_some_and(|t| t <= now) {
            m.replay_at = None;
        }
        m.status = decision.status;
        m.failures = decision.failures;
        m.next_attempt_at = decision.next_attempt_at;
        if result == AttemptResult::Failed {
            tracing::debug!(target: "mailroom::webhooks", id = %m.id, endpoint = %hook.endpoint, "a delivery failed");
        }
        self.storage.webhooks().ok_or_else(no_webhooks)?.message_put(m, Some((result, now))).await?;
        metrics::counter!("mailroom_webhook_attempts_total", "result" => if result == AttemptResult::Delivered { "delivered" } else { "failed" }).increment(1);
        Ok((true, result == AttemptResult::Delivered))
    }
}

fn no_webhooks() -> Error {
    Error::Storage(crate::error::StorageError::Backend("this store keeps no webhooks".into()))
}
