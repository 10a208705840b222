//! An in-memory [`Storage`]: for embedding (a host that needs no durability) and for tests.
//!
//! One mutex guards all state, so every trait method is atomic and linearizable; no await
//! happens while it is held. It passes the same conformance suite as the durable stores.

use crate::email::{
    AccountId, Cursor, EmailContent, EmailId, EmailRecord, EmailState, EmailSummary, Event, NewEmail, Page, PageRequest,
};
use crate::error::StorageError;
use crate::events::{LoggedEvent, Pending, Subject};
use crate::idempotency::{Fingerprint, IdempotencyRecord};
use crate::ports::{
    ClaimRef, ClaimedEmail, IdempotencyBegin, IdempotencyCompletion, Outcome, ScheduleChange, ScheduleOp, Storage,
    StorageResult, SuppressionEntry,
};
use crate::store::{self, due_key};
use crate::webhooks::{Message, Webhook};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A received message and its raw bytes (shared by the copies of one arrival).
type Kept = (crate::receiving::ReceivedEmail, Arc<Vec<u8>>);

#[derive(Debug, Default)]
struct State {
    /// account → id → content; the id's time prefix makes each map its listing index.
    emails: HashMap<AccountId, BTreeMap<u128, Arc<EmailContent>>>,
    states: HashMap<u128, EmailState>,
    /// (due micros, id): what the worker should look at, earliest first.
    due: BTreeSet<(i64, u128)>,
    idempotency: HashMap<(AccountId, String), IdempotencyRecord>,
    suppressions: BTreeMap<(AccountId, String), SuppressionEntry>,
    api_keys: HashMap<[u8; 32], (AccountId, crate::ports::ApiKeyRecord)>,
    logs: BTreeMap<(AccountId, u128), crate::ports::RequestLog>,
    domains: BTreeMap<(AccountId, String), crate::domains::Domain>,
    /// The event log: (account, number) → entry; `seq` is the last number given.
    events: BTreeMap<(AccountId, u64), LoggedEvent>,
    seq: u64,
    webhooks: BTreeMap<(AccountId, String), Webhook>,
    /// (endpoint id, event number) → message.
    messages: BTreeMap<(String, u64), Message>,
    /// (due micros, endpoint id, event number): messages with an attempt to make.
    message_due: BTreeSet<(i64, String, u64)>,
    /// (account, id) → received message and its raw bytes (shared by its copies).
    received: BTreeMap<(AccountId, u128), Kept>,
}

impl State {
    fn set_due(&mut self, id: u128, old: Option<DateTime<Utc>>, new: Option<DateTime<Utc>>) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.due.remove(&(due_key(o), id));
        }
        if let Some(n) = new {
            self.due.insert((due_key(n), id));
        }
    }

    /// Stores an email's state, logging the events it gained over the stored one (every
    /// change of state goes through here, so the log and the emails never disagree).
    fn put_state(&mut self, id: u128, state: EmailState) {
        let before = self.states.get(&id).map_or(0, |s| s.events.len());
        let gained: Vec<Pending> =
            Pending::for_email(&state.account, state.id, state.events.get(before..).unwrap_or(&[])).collect();
        self.log(gained);
        self.states.insert(id, state);
    }

    /// Lists an address, logging `suppression.added` when it was not listed.
    fn put_suppression(&mut self, account: &AccountId, entry: SuppressionEntry) {
        let key = (account.clone(), entry.address.clone());
        if !self.suppressions.contains_key(&key) {
            self.log([Pending {
                account: account.clone(),
                at: entry.created_at,
                subject: Subject::SuppressionAdded(entry.clone()),
            }]);
        }
        self.suppressions.insert(key, entry);
    }

    fn log(&mut self, entries: impl IntoIterator<Item = Pending>) {
        for p in entries {
            self.seq += 1;
            self.events.insert((p.account.clone(), self.seq), p.numbered(self.seq));
        }
    }

    fn put_message(&mut self, m: Message) {
        let key = (m.webhook_id.clone(), m.seq);
        if let Some(old) = self.messages.get(&key).and_then(Message::due_at) {
            self.message_due.remove(&(due_key(old), key.0.clone(), key.1));
        }
        if let Some(at) = m.due_at() {
            self.message_due.insert((due_key(at), key.0.clone(), key.1));
        }
        self.messages.insert(key, m);
    }

    fn record(&self, account: &AccountId, id: u128) -> Option<EmailRecord> {
        let content = self.emails.get(account)?.get(&id)?;
        let state = self.states.get(&id)?;
        Some(EmailRecord { content: (**content).clone(), state: state.clone() })
    }
}

/// The in-memory store. Cheap to clone (clones share state).
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    inner: Arc<Mutex<State>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a reschedule or cancel to one email of `account`, with its due index.
    fn mutate_scheduled(
        &self,
        account: &AccountId,
        id: EmailId,
        change: impl FnOnce(&mut EmailState) -> StorageResult<ScheduleChange>,
    ) -> StorageResult<ScheduleChange> {
        let mut s = self.lock();
        let key = id.as_u128();
        let Some(mut state) = s.states.get(&key).filter(|st| st.account == *account).cloned() else {
            return Ok(ScheduleChange::NotFound);
        };
        let old = state.due_at;
        let result = change(&mut state)?;
        if result == ScheduleChange::Applied {
            s.set_due(key, old, state.due_at);
            s.put_state(key, state);
        }
        Ok(result)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave half an operation behind: every method
        // computes its changes before it applies them. So a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn idempotency_begin(
        &self,
        account: &AccountId,
        key: &str,
        fingerprint: &Fingerprint,
        now: DateTime<Utc>,
        in_flight_until: DateTime<Utc>,
    ) -> StorageResult<IdempotencyBegin> {
        let mut s = self.lock();
        let k = (account.clone(), key.to_string());
        if let Some(found) = s.idempotency.get(&k).and_then(|r| r.meet(fingerprint, now)) {
            return Ok(found);
        }
        s.idempotency.insert(
            k,
            IdempotencyRecord {
                fingerprint: *fingerprint,
                created_at: now,
                expires_at: in_flight_until,
                response: None,
            },
        );
        Ok(IdempotencyBegin::Started)
    }

    async fn idempotency_release(&self, account: &AccountId, key: &str) -> StorageResult<()> {
        let mut s = self.lock();
        let k = (account.clone(), key.to_string());
        if s.idempotency.get(&k).is_some_and(|r| r.response.is_none()) {
            s.idempotency.remove(&k);
        }
        Ok(())
    }

    async fn insert_emails(
        &self,
        account: &AccountId,
        emails: Vec<NewEmail>,
        idempotency: Option<IdempotencyCompletion>,
    ) -> StorageResult<()> {
        let mut guard = self.lock();
        let s = &mut *guard;
        if let Some(c) = &idempotency {
            store::may_complete(s.idempotency.get(&(account.clone(), c.key.clone())), c.created_at)?;
        }
        let mut gained = Vec::new();
        let contents = s.emails.entry(account.clone()).or_default();
        for e in emails {
            let state = e.initial_state();
            let id = e.id.as_u128();
            if let Some(at) = state.due_at {
                s.due.insert((due_key(at), id));
            }
            contents.insert(id, Arc::new(e.content));
            gained.extend(Pending::for_email(account, e.id, &state.events));
            s.states.insert(id, state);
        }
        s.log(gained);
        if let Some(c) = idempotency {
            s.idempotency.insert(
                (account.clone(), c.key),
                IdempotencyRecord {
                    fingerprint: c.fingerprint,
                    created_at: c.created_at,
                    expires_at: c.expires_at,
                    response: Some(c.response),
                },
            );
        }
        Ok(())
    }

    async fn purge_idempotency(&self, now: DateTime<Utc>) -> StorageResult<usize> {
        let mut s = self.lock();
        // Lapsed in-flight markers go too, but only completed records are counted: a marker is
        // not a record (the redb store keeps them in memory), so every store counts alike.
        let expired = s.idempotency.values().filter(|r| r.response.is_some() && r.expires_at <= now).count();
        s.idempotency.retain(|_, r| r.expires_at > now);
        Ok(expired)
    }

    async fn get_email(&self, account: &AccountId, id: EmailId) -> StorageResult<Option<EmailRecord>> {
        Ok(self.lock().record(account, id.as_u128()))
    }

    async fn email_facts(
        &self,
        account: &AccountId,
        ids: std::ops::Range<u128>,
        limit: usize,
        senders: bool,
    ) -> StorageResult<Vec<crate::ports::EmailFacts>> {
        let s = self.lock();
        let Some(contents) = s.emails.get(account) else { return Ok(Vec::new()) };
        Ok(contents
            .range(ids)
            .take(limit)
            .filter_map(|(id, content)| {
                let state = s.states.get(id)?.clone();
                Some(crate::ports::EmailFacts::of(state, senders.then_some(content.from.domain.as_str())))
            })
            .collect())
    }

    async fn list_emails(&self, account: &AccountId, page: PageRequest) -> StorageResult<Page<EmailSummary>> {
        let s = self.lock();
        let empty = BTreeMap::new();
        let contents = s.emails.get(account).unwrap_or(&empty);
        let take = page.limit + 1;
        let mut ids: Vec<u128> = match page.cursor {
            Cursor::Start => contents.keys().rev().take(take).copied().collect(),
            Cursor::After(c) => contents.range(..c.as_u128()).rev().map(|(k, _)| *k).take(take).collect(),
            Cursor::Before(c) => {
                contents.range((Bound::Excluded(c.as_u128()), Bound::Unbounded)).map(|(k, _)| *k).take(take).collect()
            }
        };
        let has_more = ids.len() > page.limit;
        ids.truncate(page.limit);
        if matches!(page.cursor, Cursor::Before(_)) {
            ids.reverse();
        }
        let items = ids.iter().filter_map(|id| s.record(account, *id)).map(|r| EmailSummary::from(&r)).collect();
        Ok(Page { items, has_more })
    }

    async fn claim_due(&self, now: DateTime<Utc>, limit: usize, lease: Duration) -> StorageResult<Vec<ClaimedEmail>> {
        let mut s = self.lock();
        let due: Vec<(i64, u128)> = s.due.range(..=(due_key(now), u128::MAX)).take(limit).copied().collect();
        let mut out = Vec::new();
        for (_, id) in due {
            let Some(mut state) = s.states.get(&id).cloned() else { continue };
            let token = rand::random::<u128>();
            let old = state.due_at;
            if !store::claim(&mut state, now, lease, token)? {
                continue;
            }
            s.set_due(id, old, state.due_at);
            let content = s
                .emails
                .get(&state.account)
                .and_then(|m| m.get(&id))
                .ok_or_else(|| StorageError::Corrupt(format!("email {id:x} has state but no content")))?;
            out.push(ClaimedEmail {
                record: EmailRecord { content: (**content).clone(), state: state.clone() },
                token,
            });
            s.put_state(id, state);
        }
        Ok(out)
    }

    async fn begin_handover(&self, claims: &[ClaimRef]) -> StorageResult<Vec<EmailId>> {
        let mut s = self.lock();
        let mut lost = Vec::new();
        for c in claims {
            let marked = s.states.get_mut(&c.id.as_u128()).is_some_and(|state| store::begin_handover(state, c.token));
            if !marked {
                lost.push(c.id);
            }
        }
        Ok(lost)
    }

    async fn record_outcomes(&self, outcomes: Vec<Outcome>) -> StorageResult<Vec<EmailId>> {
        let mut s = self.lock();
        // Compute every change first, apply after: a transition error leaves nothing applied.
        let mut changed: Vec<(u128, Option<DateTime<Utc>>, EmailState)> = Vec::new();
        let mut listed: Vec<(AccountId, SuppressionEntry)> = Vec::new();
        let mut lost = Vec::new();
        for o in &outcomes {
            let id = o.claim.id.as_u128();
            // An email named twice in one call sees its first outcome (as in every store).
            let at = changed.iter().position(|(c, _, _)| *c == id);
            let current = match at {
                Some(i) => Some(changed[i].2.clone()),
                None => s.states.get(&id).cloned(),
            };
            let Some(mut state) = current else {
                lost.push(o.claim.id);
                continue;
            };
            let old = at.map_or(state.due_at, |i| changed[i].1);
            if !store::apply_outcome(&mut state, o)? {
                lost.push(o.claim.id);
                continue;
            }
            listed.extend(o.suppressions.iter().map(|sup| (state.account.clone(), sup.clone())));
            match at {
                Some(i) => changed[i].2 = state,
                None => changed.push((id, old, state)),
            }
        }
        for (id, old, state) in changed {
            s.set_due(id, old, state.due_at);
            s.put_state(id, state);
        }
        for (account, sup) in listed {
            s.put_suppression(&account, sup);
        }
        Ok(lost)
    }

    async fn release_claims(&self, claims: &[ClaimRef], now: DateTime<Utc>) -> StorageResult<()> {
        let mut s = self.lock();
        for c in claims {
            let id = c.id.as_u128();
            let Some(mut state) = s.states.get(&id).cloned() else { continue };
            let old = state.due_at;
            if store::release(&mut state, c.token, now) {
                s.set_due(id, old, state.due_at);
                s.put_state(id, state);
            }
        }
        Ok(())
    }

    async fn renew_claims(&self, claims: &[ClaimRef], until: DateTime<Utc>) -> StorageResult<Vec<EmailId>> {
        let mut s = self.lock();
        let mut lost = Vec::new();
        for c in claims {
            let id = c.id.as_u128();
            let Some(mut state) = s.states.get(&id).cloned() else {
                lost.push(c.id);
                continue;
            };
            let old = state.due_at;
            if store::renew(&mut state, c.token, until) {
                s.set_due(id, old, state.due_at);
                s.put_state(id, state);
            } else {
                lost.push(c.id);
            }
        }
        Ok(lost)
    }

    async fn next_due(&self) -> StorageResult<Option<DateTime<Utc>>> {
        let s = self.lock();
        Ok(s.due.first().and_then(|(k, _)| DateTime::from_timestamp_micros(*k)))
    }

    async fn suppression_add(&self, account: &AccountId, entry: SuppressionEntry) -> StorageResult<()> {
        self.lock().put_suppression(account, entry);
        Ok(())
    }

    async fn suppression_add_if_absent(
        &self,
        account: &AccountId,
        entry: SuppressionEntry,
    ) -> StorageResult<SuppressionEntry> {
        let mut s = self.lock();
        if let Some(listed) = s.suppressions.get(&(account.clone(), entry.address.clone())) {
            return Ok(listed.clone());
        }
        s.put_suppression(account, entry.clone());
        Ok(entry)
    }

    async fn suppression_remove(&self, account: &AccountId, address: &str, at: DateTime<Utc>) -> StorageResult<bool> {
        let mut s = self.lock();
        let Some(entry) = s.suppressions.remove(&(account.clone(), address.to_string())) else { return Ok(false) };
        s.log([Pending { account: account.clone(), at, subject: Subject::SuppressionRemoved(entry) }]);
        Ok(true)
    }

    async fn suppression_lookup(
        &self,
        account: &AccountId,
        addresses: &[String],
    ) -> StorageResult<Vec<SuppressionEntry>> {
        let s = self.lock();
        Ok(addresses.iter().filter_map(|a| s.suppressions.get(&(account.clone(), a.clone())).cloned()).collect())
    }

    async fn change_schedule(&self, account: &AccountId, id: EmailId, op: ScheduleOp) -> StorageResult<ScheduleChange> {
        self.mutate_scheduled(account, id, |state| Ok(store::change_schedule(state, op)?))
    }

    async fn append_events(
        &self,
        id: EmailId,
        events: Vec<Event>,
        suppressions: Vec<SuppressionEntry>,
    ) -> StorageResult<Option<AccountId>> {
        let mut s = self.lock();
        let Some(mut state) = s.states.get(&id.as_u128()).cloned() else { return Ok(None) };
        for e in events {
            state.push(e)?;
        }
        let account = state.account.clone();
        s.put_state(id.as_u128(), state);
        for sup in suppressions {
            s.put_suppression(&account, sup);
        }
        Ok(Some(account))
    }

    async fn prune(&self, cutoff: DateTime<Utc>, now: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let mut ids: Vec<u128> =
            s.states.iter().filter(|(_, st)| store::prunable(st, cutoff)).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.truncate(limit);
        for id in &ids {
            let Some(state) = s.states.get_mut(id) else { continue };
            let Some(content) = s.emails.get_mut(&state.account).and_then(|m| m.get_mut(id)) else { continue };
            // Readers hold clones of the Arc, never a borrow: make_mut copies only if one is live.
            store::prune(state, Arc::make_mut(content), cutoff, now);
        }
        Ok(ids.len())
    }

    async fn suppression_list(&self, account: &AccountId) -> StorageResult<Vec<SuppressionEntry>> {
        let s = self.lock();
        Ok(s.suppressions
            .range((account.clone(), String::new())..)
            .take_while(|((a, _), _)| a == account)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn queue_stats(&self, now: DateTime<Utc>) -> StorageResult<Option<crate::ports::QueueStats>> {
        let s = self.lock();
        let due = s.due.range(..=(due_key(now), u128::MAX)).take(crate::ports::QueueStats::COUNT_CAP as usize).count();
        let oldest = s.due.first().and_then(|(micros, _)| DateTime::from_timestamp_micros(*micros));
        Ok(Some(crate::ports::QueueStats::new(s.due.len() as u64, due as u64, oldest)))
    }

    fn api_keys(&self) -> Option<&dyn crate::ports::ApiKeyStore> {
        Some(self)
    }

    fn request_logs(&self) -> Option<&dyn crate::ports::RequestLogStore> {
        Some(self)
    }

    fn domains(&self) -> Option<&dyn crate::ports::DomainStore> {
        Some(self)
    }

    fn event_log(&self) -> Option<&dyn crate::ports::EventLog> {
        Some(self)
    }

    fn received(&self) -> Option<&dyn crate::ports::ReceivedStore> {
        Some(self)
    }

    fn webhooks(&self) -> Option<&dyn crate::ports::WebhookStore> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl crate::ports::EventLog for MemoryStorage {
    async fn events_after(&self, account: &AccountId, after: u64, limit: usize) -> StorageResult<Vec<LoggedEvent>> {
        let s = self.lock();
        let from = (account.clone(), after.saturating_add(1));
        let to = (account.clone(), u64::MAX);
        if after == u64::MAX {
            return Ok(Vec::new());
        }
        Ok(s.events.range(from..=to).take(limit).map(|(_, e)| e.clone()).collect())
    }

    async fn events_head(&self) -> StorageResult<u64> {
        Ok(self.lock().seq)
    }

    async fn events_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        let mut s = self.lock();
        let mut old: Vec<(u64, AccountId)> =
            s.events.iter().filter(|(_, e)| e.at < cutoff).map(|((a, n), _)| (*n, a.clone())).collect();
        old.sort();
        old.truncate(limit);
        for (n, a) in &old {
            s.events.remove(&(a.clone(), *n));
        }
        Ok(old.len())
    }
}

#[async_trait::async_trait]
impl crate::ports::WebhookStore for MemoryStorage {
    async fn webhook_put(&self, account: &AccountId, hook: Webhook) -> StorageResult<()> {
        self.lock().webhooks.insert((account.clone(), hook.id.clone()), hook);
        Ok(())
    }

    async fn webhook_get(&self, account: &AccountId, id: &str) -> StorageResult<Option<Webhook>> {
        Ok(self.lock().webhooks.get(&(account.clone(), id.to_string())).cloned())
    }

    async fn webhook_all(&self) -> StorageResult<Vec<(AccountId, Webhook)>> {
        Ok(self.lock().webhooks.iter().map(|((a, _), h)| (a.clone(), h.clone())).collect())
    }

    async fn webhook_list(&self, account: &AccountId) -> StorageResult<Vec<Webhook>> {
        let s = self.lock();
        Ok(s.webhooks
            .range((account.clone(), String::new())..)
            .take_while(|((a, _), _)| a == account)
            .map(|(_, h)| h.clone())
            .collect())
    }

    async fn webhook_delete(&self, account: &AccountId, id: &str) -> StorageResult<bool> {
        let mut s = self.lock();
        if s.webhooks.remove(&(account.clone(), id.to_string())).is_none() {
            return Ok(false);
        }
        let gone: Vec<(String, u64)> =
            s.messages.range((id.to_string(), 0)..=(id.to_string(), u64::MAX)).map(|(k, _)| k.clone()).collect();
        for k in gone {
            if let Some(at) = s.messages.remove(&k).and_then(|m| m.due_at()) {
                s.message_due.remove(&(due_key(at), k.0, k.1));
            }
        }
        Ok(true)
    }

    async fn messages_enqueue(
        &self,
        account: &AccountId,
        id: &str,
        from: u64,
        to: u64,
        messages: Vec<Message>,
    ) -> StorageResult<bool> {
        let mut s = self.lock();
        match s.webhooks.get_mut(&(account.clone(), id.to_string())) {
            Some(h) if h.cursor == from => h.cursor = to,
            _ => return Ok(false),
        }
        for m in messages {
            s.put_message(m);
        }
        Ok(true)
    }

    async fn messages_due(&self, now: DateTime<Utc>, limit: usize) -> StorageResult<Vec<Message>> {
        let s = self.lock();
        let upto = (due_key(now), String::from("\u{10ffff}"), u64::MAX);
        Ok(s.message_due
            .range(..=upto)
            .take(limit)
            .filter_map(|(_, h, n)| s.messages.get(&(h.clone(), *n)).cloned())
            .collect())
    }

    async fn message_put(
        &self,
        message: Message,
        attempt: Option<(crate::webhooks::AttemptResult, DateTime<Utc>)>,
    ) -> StorageResult<bool> {
        let mut s = self.lock();
        if !s.messages.contains_key(&(message.webhook_id.clone(), message.seq)) {
            return Ok(false);
        }
        if let Some((result, at)) = attempt
            && let Some(h) = s.webhooks.get_mut(&(message.account.clone(), message.webhook_id.clone()))
        {
            h.health = crate::webhooks::health_after(h.health, result, at);
            h.enabled &= !h.health.disabled;
        }
        s.put_message(message);
        Ok(true)
    }

    async fn messages_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> StorageResult<usize> {
        let mut s = self.lock();
        let old: Vec<(String, u64)> = s
            .messages
            .iter()
            .filter(|(_, m)| m.created_at < cutoff && m.due_at().is_none())
            .map(|(k, _)| k.clone())
            .take(limit)
            .collect();
        for k in &old {
            s.messages.remove(k);
        }
        Ok(old.len())
    }

    async fn message_get(&self, account: &AccountId, id: &str, seq: u64) -> StorageResult<Option<Message>> {
        Ok(self.lock().messages.get(&(id.to_string(), seq)).filter(|m| m.account == *account).cloned())
    }

    async fn message_page(
        &self,
        account: &AccountId,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StorageResult<(Vec<Message>, bool)> {
        let s = self.lock();
        let upper = before.unwrap_or(u64::MAX);
        let range = (Bound::Included((id.to_string(), 0)), Bound::Excluded((id.to_string(), upper)));
        let mut it = s.messages.range(range).rev().map(|(_, m)| m).filter(|m| m.account == *account);
        let page: Vec<Message> = it.by_ref().take(limit).cloned().collect();
        Ok((page, it.next().is_some()))
    }
}

#[async_trait::async_trait]
impl crate::ports::ApiKeyStore for MemoryStorage {
    async fn key_insert(&self, account: &AccountId, key: crate::ports::ApiKeyRecord) -> Result<(), StorageError> {
        self.lock().api_keys.entry(key.token_sha256).or_insert((account.clone(), key));
        Ok(())
    }

    async fn key_put(&self, account: &AccountId, key: crate::ports::ApiKeyRecord) -> Result<(), StorageError> {
        self.lock().api_keys.insert(key.token_sha256, (account.clone(), key));
        Ok(())
    }

    async fn key_all(&self) -> Result<Vec<(AccountId, crate::ports::ApiKeyRecord)>, StorageError> {
        Ok(self.lock().api_keys.values().cloned().collect())
    }

    async fn key_by_hash(
        &self,
        sha256: &[u8; 32],
    ) -> Result<Option<(AccountId, crate::ports::ApiKeyRecord)>, StorageError> {
        Ok(self.lock().api_keys.get(sha256).cloned())
    }

    async fn key_list(&self, account: &AccountId) -> Result<Vec<crate::ports::ApiKeyRecord>, StorageError> {
        let mut keys: Vec<_> =
            self.lock().api_keys.values().filter(|(a, _)| a == account).map(|(_, k)| k.clone()).collect();
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(keys)
    }

    async fn key_revoke(&self, account: &AccountId, id: &str, at: DateTime<Utc>) -> Result<bool, StorageError> {
        let mut s = self.lock();
        Ok(s.api_keys.values_mut().find(|(a, k)| a == account && k.id == id).is_some_and(|(_, k)| k.revoke(at)))
    }

    async fn key_rename(&self, account: &AccountId, id: &str, name: &str) -> Result<bool, StorageError> {
        let mut s = self.lock();
        Ok(s.api_keys.values_mut().find(|(a, k)| a == account && k.id == id).is_some_and(|(_, k)| k.rename(name)))
    }

    async fn key_touch(&self, account: &AccountId, id: &str, at: DateTime<Utc>) -> Result<bool, StorageError> {
        let mut s = self.lock();
        Ok(s.api_keys.values_mut().find(|(a, k)| a == account && k.id == id).is_some_and(|(_, k)| k.touch(at)))
    }

    async fn key_remove_revoked(&self, account: &AccountId, id: &str) -> Result<bool, StorageError> {
        let mut s = self.lock();
        let found = s.api_keys.iter().find(|(_, (a, k))| {
            a == account && k.id == id && crate::ports::KeyChange::remove_revoked(k) == crate::ports::KeyChange::Removed
        });
        let Some(hash) = found.map(|(h, _)| *h) else { return Ok(false) };
        Ok(s.api_keys.remove(&hash).is_some())
    }
}

#[async_trait::async_trait]
impl crate::ports::RequestLogStore for MemoryStorage {
    async fn log_append(&self, account: &AccountId, log: crate::ports::RequestLog) -> Result<(), StorageError> {
        self.lock().logs.insert((account.clone(), log.id), log);
        Ok(())
    }

    async fn log_prune(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<usize, StorageError> {
        let mut s = self.lock();
        let mut old: Vec<(u128, AccountId)> =
            s.logs.iter().filter(|(_, l)| l.at < cutoff).map(|((a, id), _)| (*id, a.clone())).collect();
        old.sort();
        old.truncate(limit);
        for (id, account) in &old {
            s.logs.remove(&(account.clone(), *id));
        }
        Ok(old.len())
    }

    async fn log_page(
        &self,
        account: &AccountId,
        filter: &crate::ports::LogFilter,
        before: Option<u128>,
        limit: usize,
    ) -> Result<(Vec<crate::ports::RequestLog>, bool), StorageError> {
        let s = self.lock();
        let upper = before.unwrap_or(u128::MAX);
        let range = (Bound::Included((account.clone(), 0)), Bound::Excluded((account.clone(), upper)));
        let mut matching = s.logs.range(range).rev().map(|(_, l)| l).filter(|l| filter.matches(l));
        let page: Vec<_> = matching.by_ref().take(limit).cloned().collect();
        Ok((page, matching.next().is_some()))
    }
}

#[async_trait::async_trait]
impl crate::ports::DomainStore for MemoryStorage {
    async fn domain_put(
        &self,
        account: &AccountId,
        domain: crate::domains::Domain,
        change: Option<(crate::events::DomainEvent, DateTime<Utc>)>,
    ) -> Result<bool, StorageError> {
        let mut s = self.lock();
        let key = (account.clone(), domain.name.clone());
        let current = s.domains.get(&key).map_or(0, |d| d.version);
        if current + 1 != domain.version {
            return Ok(false);
        }
        if let Some((change, at)) = change {
            s.log([Pending::for_domain(account, at, change, &domain)]);
        }
        s.domains.insert(key, domain);
        Ok(true)
    }

    async fn domain_get(
        &self,
        account: &AccountId,
        name: &str,
    ) -> Result<Option<crate::domains::Domain>, StorageError> {
        Ok(self.lock().domains.get(&(account.clone(), name.to_string())).cloned())
    }

    async fn domain_by_id(
        &self,
        account: &AccountId,
        id: &str,
    ) -> Result<Option<crate::domains::Domain>, StorageError> {
        let s = self.lock();
        Ok(s.domains.iter().find(|((a, _), d)| a == account && d.id == id).map(|(_, d)| d.clone()))
    }

    async fn domain_list(&self, account: &AccountId) -> Result<Vec<crate::domains::Domain>, StorageError> {
        Ok(self.lock().domains.iter().filter(|((a, _), _)| a == account).map(|(_, d)| d.clone()).collect())
    }

    async fn domain_delete(&self, account: &AccountId, name: &str, at: DateTime<Utc>) -> Result<bool, StorageError> {
        let mut s = self.lock();
        let Some(d) = s.domains.remove(&(account.clone(), name.to_string())) else { return Ok(false) };
        s.log([Pending::for_domain(account, at, crate::events::DomainEvent::Deleted, &d)]);
        Ok(true)
    }

    async fn domain_owners(&self, name: &str) -> Result<Vec<(AccountId, crate::domains::Domain)>, StorageError> {
        let s = self.lock();
        Ok(s.domains.iter().filter(|((_, n), _)| n == name).map(|((a, _), d)| (a.clone(), d.clone())).collect())
    }

    async fn domains_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(AccountId, crate::domains::Domain)>, StorageError> {
        let s = self.lock();
        let mut due: Vec<(AccountId, crate::domains::Domain)> = s
            .domains
            .iter()
            .filter(|(_, d)| d.next_check.is_some_and(|t| t <= now))
            .map(|((a, _), d)| (a.clone(), d.clone()))
            .collect();
        due.sort_by_key(|(_, d)| d.next_check);
        due.truncate(limit);
        Ok(due)
    }
}

#[async_trait]
impl crate::ports::ReceivedStore for MemoryStorage {
    async fn received_put(
        &self,
        copies: Vec<(AccountId, crate::receiving::ReceivedEmail)>,
        raw: Vec<u8>,
    ) -> Result<(), StorageError> {
        let raw = Arc::new(raw);
        let mut s = self.lock();
        for (account, email) in copies {
            s.log([Pending {
                account: account.clone(),
                at: email.created_at,
                subject: Subject::Received(Box::new(email.clone())),
            }]);
            s.received.insert((account, email.id.as_u128()), (email, Arc::clone(&raw)));
        }
        Ok(())
    }

    async fn received_get(
        &self,
        account: &AccountId,
        id: EmailId,
    ) -> Result<Option<crate::receiving::ReceivedEmail>, StorageError> {
        Ok(self.lock().received.get(&(account.clone(), id.as_u128())).map(|(e, _)| e.clone()))
    }

    async fn received_raw(&self, account: &AccountId, id: EmailId) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().received.get(&(account.clone(), id.as_u128())).map(|(_, r)| r.to_vec()))
    }

    async fn received_page(
        &self,
        account: &AccountId,
        page: PageRequest,
    ) -> Result<Page<crate::receiving::ReceivedEmail>, StorageError> {
        let s = self.lock();
        let lo = (account.clone(), 0u128);
        let hi = (account.clone(), u128::MAX);
        let take = page.limit + 1;
        let mut items: Vec<_> = match page.cursor {
            Cursor::Start => s.received.range(lo..=hi).rev().take(take).map(|(_, (e, _))| e.clone()).collect(),
            Cursor::After(c) => s
                .received
                .range(lo..(account.clone(), c.as_u128()))
                .rev()
                .take(take)
                .map(|(_, (e, _))| e.clone())
                .collect(),
            Cursor::Before(c) => {
                let mut v: Vec<_> = s
                    .received
                    .range((Bound::Excluded((account.clone(), c.as_u128())), Bound::Included(hi)))
                    .take(take)
                    .map(|(_, (e, _))| e.clone())
                    .collect();
                let more = v.len() > page.limit;
                v.truncate(page.limit);
                v.reverse();
                return Ok(Page { items: v, has_more: more });
            }
        };
        let has_more = items.len() > page.limit;
        items.truncate(page.limit);
        Ok(Page { items, has_more })
    }
}

#[cfg(test)]
mod conformance {
    use super::MemoryStorage;
    use crate::ports::Storage;
    use std::sync::Arc;

    crate::storage_conformance_tests!(((), Arc::new(MemoryStorage::new()) as Arc<dyn Storage>));

    #[tokio::test]
    async fn api_keys() {
        crate::testkit::api_keys_conformance(Arc::new(MemoryStorage::new())).await;
    }

    #[tokio::test]
    async fn domains() {
        crate::testkit::domains_conformance(Arc::new(MemoryStorage::new())).await;
    }

    #[tokio::test]
    async fn received() {
        crate::testkit::received_conformance(Arc::new(MemoryStorage::new())).await;
    }

    #[tokio::test]
    async fn webhooks() {
        crate::testkit::webhooks_conformance(Arc::new(MemoryStorage::new())).await;
    }

    #[tokio::test]
    async fn event_log() {
        crate::testkit::event_log_conformance(Arc::new(MemoryStorage::new())).await;
    }

    #[tokio::test]
    async fn request_logs() {
        crate::testkit::request_logs_conformance(Arc::new(MemoryStorage::new())).await;
    }
}
