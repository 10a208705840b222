//! Webhook endpoints and their messages, and received mail.

use crate::{PostgresStorage, backend, decode, encode, log, sql};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailroom_core::email::{AccountId, Cursor, EmailId, Page, PageRequest};
use mailroom_core::error::StorageError;
use mailroom_core::events::{Pending, Subject};
use mailroom_core::ports::{ReceivedStore, StorageResult, WebhookStore};
use mailroom_core::receiving::ReceivedEmail;
use mailroom_core::webhooks::{AttemptResult, Message, Webhook, health_after};
use uuid::Uuid;

fn seq(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl WebhookStore for PostgresStorage {
    async fn webhook_put(&self, account: &AccountId, hook: Webhook) -> StorageResult<()> {
        let c = self.client().await?;
        sql::execute(
            &c,
            "INSERT INTO mailroom_webhooks (account, id, record) VALUES ($1, $2, $3) \
             ON CONFLICT (account, id) DO UPDATE SET record = EXCLUDED.record",
            &[&account.as_str(), &hook.id, &encode(&hook)?],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn webhook_get(&self, account: &AccountId, id: &str) -> StorageResult<Option<Webhook>> {
        let c = self.client().await?;
        let row = sql::query_opt(
            &c,
            "SELECT record FROM mailroom_webhooks WHERE account = $1 AND id = $2",
            &[&account.as_str(), &id],
        )
        .await
        .map_err(backend)?;
        row.map(|r| decode(r.get(0))).transpose()
    }

    async fn webhook_all(&self) -> StorageResult<Vec<(AccountId, Webhook)>> {
        let c = self.client().await?;
        let rows = sql::query(
            &c,
            "SELECT account, record FROM mailroom_webhooks ORDER BY account COLLATE \"C\", id COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(backend)?;
        rows.iter().map(|r| Ok((AccountId::new(r.get::<_, String>(0)), decode(r.get(1))?))).collect()
    }

    async fn webhook_list(&self, account: &AccountId) -> StorageResult<Vec<Webhook>> {
        let c = self.client().await?;
        let rows = sql::query(
            &c,
            "SELECT record FROM mailroom_webhooks WHERE account = $1 ORDER BY id COLLATE \"C\"",
            &[&account.as_str()],
        )
        .await
        .map_err(backend)?;
        rows.iter().map(|r| decode(r.get(0))).collect()
    }

    async fn webhook_delete(&self, account: &AccountId, id: &str) -> StorageResult<bool> {
        let (account, id) = (account.as_str().to_string(), id.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                let n =
                    sql::execute(tx, "DELETE FROM mailroom_webhooks WHERE account = $1 AND id = $2", &[&account, &id])
                        .await
                        .map_err(backend)?;
                if n == 0 {
                    return Ok(false);
                }
                sql::execute(tx, "DELETE FROM mailroom_webhook_messages WHERE webhook_id = $1", &[&id])
                    .await
                    .map_err(backend)?;
                Ok(true)
            })
        })
        .await
    }

    async fn messages_enqueue(
        &self,
        account: &AccountId,
        id: &str,
        from: u64,
        to: u64,
        messages: Vec<Message>,
    ) -> StorageResult<bool> {
        let (account, id) = (account.as_str().to_string(), id.to_string());
        self.write(move |tx| {
            Box::pin(async move {
                // The cursor moves only from where the caller read it: a twin that enqueued the
                // same events first wins, and nothing is stored twice.
                let row = sql::query_opt(
                    tx,
                    "SELECT record FROM mailroom_webhooks WHERE account = $1 AND id = $2 FOR UPDATE",
                    &[&account, &id],
                )
                .await
                .map_err(backend)?;
                let Some(row) = row else { return Ok(false) };
                let mut hook: Webhook = decode(row.get(0))?;
                if hook.cursor != from {
                    return Ok(false);
                }
                hook.cursor = to;
                sql::execute(
                    tx,
                    "UPDATE mailroom_webhooks SET record = $3 WHERE account = $1 AND id = $2",
                    &[&account, &id, &encode(&hook)?],
                )
                .await
                .map_err(backend)?;
                for m in &messages {
                    put_message(tx, m).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn messages_due(&self, now: DateTime<Utc>, n: usize) -> StorageResult<Vec<Message>> {
        let c = self.client().await?;
        let rows = sql::query(
            &c,
            "SELECT record FROM mailroom_webhook_messages WHERE due_at <= $1 \
                 ORDER BY due_at, webhook_id COLLATE \"C\", seq LIMIT $2",
            &[&now, &limit(n)],
        )
        .await
        .map_err(backend)?;
        rows.iter().map(|r| decode(r.get(0))).collect()
    }

    async fn message_put(
        &self,
        message: Message,
        attempt: Option<(AttemptResult, DateTime<Utc>)>,
    ) -> StorageResult<bool> {
        self.write(move |tx| {
            Box::pin(async move {
                let exists = sql::query_opt(
                    tx,
                    "SELECT 1 FROM mailroom_webhook_messages WHERE webhook_id = $1 AND seq = $2 FOR UPDATE",
                    &[&message.webhook_id, &seq(message.seq)],
                )
                .await
                .map_err(backend)?;
                if exists.is_none() {
                    return Ok(false);
                }
                if let Some((result, at)) = attempt {
                    let row = sql::query_opt(
                        tx,
                        "SELECT record FROM mailroom_webhooks WHERE account = $1 AND id = $2 FOR UPDATE",
                        &[&message.account.as_str(), &message.webhook_id],
                    )
                    .await
                    .map_err(backend)?;
                    if let Some(row) = row {
                        let mut hook: Webhook = decode(row.get(0))?;
                        hook.health = health_after(hook.health, result, at);
                        hook.enabled &= !hook.health.disabled;
                        sql::execute(
                            tx,
                            "UPDATE mailroom_webhooks SET record = $3 WHERE account = $1 AND id = $2",
                            &[&message.account.as_str(), &message.webhook_id, &encode(&hook)?],
                        )
                        .await
                        .map_err(backend)?;
                    }
                }
                put_message(tx, &message).await?;
                Ok(true)
            })
        })
        .await
    }

    async fn message_get(&self, account: &AccountId, id: &str, n: u64) -> StorageResult<Option<Message>> {
        let c = self.client().await?;
        let row = sql::query_opt(
            &c,
            "SELECT record FROM mailroom_webhook_messages WHERE webhook_id = $1 AND seq = $2 AND account = $3",
            &[&id, &seq(n), &account.as_str()],
        )
        .await
        .map_err(backend)?;
        row.map(|r| decode(r.get(0))).transpose()
    }

    async fn messages_prune(&self, cutoff: DateTime<Utc>, n: usize) -> StorageResult<usize> {
        let c = self.client().await?;
        let deleted = sql::execute(
            &c,
            "DELETE FROM mailroom_webhook_messages WHERE (webhook_id, seq) IN \
                 (SELECT webhook_id, seq FROM mailroom_webhook_messages WHERE due_at IS NULL AND created_at < $1 \
                  ORDER BY webhook_id COLLATE \"C\", seq LIMIT $2)",
            &[&cutoff, &limit(n)],
        )
        .await
        .map_err(backend)?;
        Ok(usize::try_from(deleted).unwrap_or(0))
    }

    async fn message_page(
        &self,
        account: &AccountId,
        id: &str,
        before: Option<u64>,
        n: usize,
    ) -> StorageResult<(Vec<Message>, bool)> {
        let c = self.client().await?;
        let rows = sql::query(
            &c,
            "SELECT record FROM mailroom_webhook_messages WHERE webhook_id = $1 AND account = $2 AND seq < $3 \
                 ORDER BY seq DESC LIMIT $4",
            &[&id, &account.as_str(), &before.map_or(i64::MAX, seq), &limit(n + 1)],
        )
        .await
        .map_err(backend)?;
        let mut page = rows.iter().map(|r| decode(r.get(0))).collect::<StorageResult<Vec<Message>>>()?;
        let more = page.len() > n;
        page.truncate(n);
        Ok((page, more))
    }
}

async fn put_message(tx: &crate::group::Conn, m: &Message) -> StorageResult<()> {
    sql::execute(
        tx,
        "INSERT INTO mailroom_webhook_messages (webhook_id, seq, account, created_at, due_at, record) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (webhook_id, seq) DO UPDATE SET \
         due_at = EXCLUDED.due_at, record = EXCLUDED.record",
        &[&m.webhook_id, &seq(m.seq), &m.account.as_str(), &m.created_at, &m.due_at(), &encode(m)?],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl ReceivedStore for PostgresStorage {
    async fn received_put(&self, copies: Vec<(AccountId, ReceivedEmail)>, raw: Vec<u8>) -> Result<(), StorageError> {
        let encoded = copies.iter().map(|(_, e)| encode(e)).collect::<StorageResult<Vec<_>>>()?;
        self.write(move |tx| {
            Box::pin(async move {
                let raw_id: i64 =
                    sql::query_one(tx, "INSERT INTO mailroom_received_raw (raw) VALUES ($1) RETURNING id", &[&raw])
                        .await
                        .map_err(backend)?
                        .get(0);
                for ((account, email), record) in copies.iter().zip(&encoded) {
                    sql::execute(
                        tx,
                        "INSERT INTO mailroom_received (account, id, raw_id, record) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (account, id) DO NOTHING",
                        &[&account.as_str(), &Uuid::from_u128(email.id.as_u128()), &raw_id, record],
                    )
                    .await
                    .map_err(backend)?;
                    let arrived = Pending {
                        account: account.clone(),
                        at: email.created_at,
                        subject: Subject::Received(Box::new(email.clone())),
                    };
                    log(tx, [arrived]).await?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn received_get(&self, account: &AccountId, id: EmailId) -> Result<Option<ReceivedEmail>, StorageError> {
        let c = self.client().await?;
        let row = sql::query_opt(
            &c,
            "SELECT record FROM mailroom_received WHERE account = $1 AND id = $2",
            &[&account.as_str(), &Uuid::from_u128(id.as_u128())],
        )
        .await
        .map_err(backend)?;
        row.map(|r| decode(r.get(0))).transpose()
    }

    async fn received_raw(&self, account: &AccountId, id: EmailId) -> Result<Option<Vec<u8>>, StorageError> {
        let c = self.client().await?;
        let row = sql::query_opt(
            &c,
            "SELECT r.raw FROM mailroom_received m JOIN mailroom_received_raw r ON r.id = m.raw_id \
                 WHERE m.account = $1 AND m.id = $2",
            &[&account.as_str(), &Uuid::from_u128(id.as_u128())],
        )
        .await
        .map_err(backend)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn received_page(&self, account: &AccountId, page: PageRequest) -> Result<Page<ReceivedEmail>, StorageError> {
        let c = self.client().await?;
        let take = limit(page.limit + 1);
        let acct = account.as_str();
        let rows = match page.cursor {
            Cursor::Start => {
                sql::query(
                    &c,
                    "SELECT record FROM mailroom_received WHERE account = $1 ORDER BY id DESC LIMIT $2",
                    &[&acct, &take],
                )
                .await
            }
            Cursor::After(id) => {
                sql::query(
                    &c,
                    "SELECT record FROM mailroom_received WHERE account = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                    &[&acct, &Uuid::from_u128(id.as_u128()), &take],
                )
                .await
            }
            Cursor::Before(id) => {
                sql::query(
                    &c,
                    "SELECT record FROM mailroom_received WHERE account = $1 AND id > $2 ORDER BY id ASC LIMIT $3",
                    &[&acct, &Uuid::from_u128(id.as_u128()), &take],
                )
                .await
            }
        }
        .map_err(backend)?;
        let mut items = rows.iter().map(|r| decode(r.get(0))).collect::<StorageResult<Vec<ReceivedEmail>>>()?;
        let has_more = items.len() > page.limit;
        items.truncate(page.limit);
        if matches!(page.cursor, Cursor::Before(_)) {
            items.reverse();
        }
        Ok(Page { items, has_more })
    }
}
