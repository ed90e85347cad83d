//! Outbound delivery records (migration 0008, docs/OUTBOUND.md): one row per reply that goes
//! through a provider, carrying its own retry schedule, so that the queue is only the carrier
//! and the store is the record of what is due, in flight, sent or given up on.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use switchboard_connectors::{DeliveryStatus, MessageContent};

use super::conversations::{Conversation, Message};
use super::{Dialect, Store, StoreError};
use crate::ids;

/// What a reply asks for, as the reply endpoint validated it.
pub struct NewReply<'a> {
    /// The message id, chosen by the caller (it is also the provider request's reference).
    pub id: &'a str,
    pub conversation: &'a Conversation,
    pub author_id: Option<&'a str>,
    pub content: &'a MessageContent,
    /// The provider id of the customer's message this answers.
    pub reply_to: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    /// An internal note: stored and shown to agents, never sent.
    pub private: bool,
    /// The provider request's inputs (JSON) when the reply goes through a provider; `None` for
    /// notes and web chat (whose visitor reads it from the event log).
    pub delivery: Option<String>,
}

/// The reply as stored, and whether this call stored it (`false`: the idempotency key was
/// seen before and this is the earlier reply).
pub struct StoredReply {
    pub message: Message,
    pub created: bool,
    /// The earlier reply's content differs from this request's.
    pub conflicting: bool,
}

/// A delivery a worker claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub message_id: String,
    pub account_id: String,
    pub inbox_id: String,
    pub conversation_id: String,
    pub request: String,
    /// Including this one.
    pub attempt: i64,
}

/// A forward move of a message's status, for `message.status` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub message_id: String,
    pub conversation_id: String,
    pub status: DeliveryStatus,
    pub error: Option<String>,
}

impl Transition {
    fn of(claimed: &Claimed, status: DeliveryStatus, error: Option<String>) -> Self {
        Transition {
            message_id: claimed.message_id.clone(),
            conversation_id: claimed.conversation_id.clone(),
            status,
            error,
        }
    }
}

/// One entry of the dead-letter list.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The message's id; also the dead letter's id.
    pub id: String,
    pub conversation_id: String,
    pub inbox_id: String,
    pub attempts: i64,
    /// The provider's code (`131047`, `21211`, `http_503`, `timeout`, …).
    pub code: Option<String>,
    pub reason: Option<String>,
    /// How often an operator replayed it before.
    pub replays: i64,
    pub failed_at_ms: i64,
    pub created_at_ms: i64,
}

impl Store {
    /// Stores an agent's reply (and its delivery record) in one transaction. With an
    /// idempotency key seen before in the account, stores nothing and returns the earlier reply.
    pub async fn insert_reply(&self, reply: NewReply<'_>) -> Result<StoredReply, StoreError> {
        let conversation = reply.conversation;
        let now = ids::now_ms();
        let body = serde_json::to_string(reply.content)
            .map_err(|e| StoreError::Setup(format!("content does not serialize: {e}")))?;
        let mut tx = self.begin_scoped(&conversation.account_id).await?;
        if let Some(key) = reply.idempotency_key
            && let Some(row) = sqlx::query(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE account_id = $1 AND idempotency_key = $2"
            ))
            .bind(&conversation.account_id)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
        {
            tx.commit().await?;
            let message = super::conversations::message(&row);
            let same = message.conversation_id == conversation.id
                && serde_json::from_str::<serde_json::Value>(&body).ok()
                    == Some(message.content.clone())
                && (message.direction == "note") == reply.private;
            return Ok(StoredReply {
                message,
                created: false,
                conflicting: !same,
            });
        }
        let id = reply.id;
        let (direction, status, rank) = match (reply.private, &reply.delivery) {
            (true, _) => ("note", "note", 0),
            (false, Some(_)) => ("outbound", "pending", DeliveryStatus::Pending.rank()),
            // Web chat: the event log is the visitor's delivery.
            (false, None) => ("outbound", "sent", DeliveryStatus::Sent.rank()),
        };
        sqlx::query(
            "INSERT INTO messages (id, account_id, conversation_id, inbox_id, direction, content_type, \
             content, status, status_rank, sent_at, created_at, author_id, idempotency_key, \
             reply_to) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13)",
        )
        .bind(id)
        .bind(&conversation.account_id)
        .bind(&conversation.id)
        .bind(&conversation.inbox_id)
        .bind(direction)
        .bind(reply.content.kind())
        .bind(&body)
        .bind(status)
        .bind(rank)
        .bind(now)
        .bind(reply.author_id)
        .bind(reply.idempotency_key)
        .bind(reply.reply_to)
        .execute(&mut *tx)
        .await?;
        if let (false, Some(request)) = (reply.private, &reply.delivery) {
            sqlx::query(
                "INSERT INTO outbound_deliveries (message_id, account_id, inbox_id, conversation_id, \
                 request, state, next_attempt_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6, $6, $6)",
            )
            .bind(id)
            .bind(&conversation.account_id)
            .bind(&conversation.inbox_id)
            .bind(&conversation.id)
            .bind(request)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if !reply.private {
            sqlx::query(
                "UPDATE conversations SET last_message_at = $1, updated_at = $1 WHERE account_id = $2 AND id = $3",
            )
            .bind(now)
            .bind(&conversation.account_id)
            .bind(&conversation.id)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StoredReply {
            message: super::conversations::message(&row),
            created: true,
            conflicting: false,
        })
    }

    /// The address to send to for a conversation's contact on `channel`: WhatsApp prefers the
    /// `wa_id` and falls back to the business-scoped id; SMS takes the phone number.
    pub async fn recipient(
        &self,
        account_id: &str,
        contact_id: &str,
        channel: &str,
    ) -> Result<Option<String>, StoreError> {
        let kinds: &[&str] = match channel {
            "whatsapp" => &["whatsapp_wa_id", "whatsapp_bsuid"],
            "sms" => &["phone"],
            _ => &[],
        };
        let mut tx = self.scoped(account_id).await?;
        let mut found = None;
        for kind in kinds {
            found = sqlx::query(
                "SELECT value FROM contact_identities WHERE account_id = $1 AND contact_id = $2 \
                 AND kind = $3 ORDER BY created_at LIMIT 1",
            )
            .bind(account_id)
            .bind(contact_id)
            .bind(*kind)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get::<String, _>(0));
            if found.is_some() {
                break;
            }
        }
        tx.commit().await?;
        Ok(found)
    }

    /// The provider id of one of the conversation's messages, for reply threading.
    pub async fn provider_message_id(
        &self,
        account_id: &str,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<Option<Option<String>>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let row = sqlx::query(
            "SELECT provider_message_id FROM messages WHERE account_id = $1 AND conversation_id = $2 AND id = $3",
        )
        .bind(account_id)
        .bind(conversation_id)
        .bind(message_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Claims a queued delivery for one attempt (counting it). `None` when nothing is due: a
    /// duplicate job, another worker's claim, or a delivery already sent or given up on.
    pub async fn claim_delivery(&self, message_id: &str) -> Result<Option<Claimed>, StoreError> {
        let now = ids::now_ms();
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE outbound_deliveries SET state = 'sending', attempts = attempts + 1, \
             claimed_at = $1, updated_at = $1 WHERE message_id = $2 AND state = 'queued' \
             RETURNING message_id, account_id, inbox_id, conversation_id, request, attempts",
        )
        .bind(now)
        .bind(message_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| Claimed {
            message_id: r.get(0),
            account_id: r.get(1),
            inbox_id: r.get(2),
            conversation_id: r.get(3),
            request: r.get(4),
            attempt: r.get(5),
        }))
    }

    /// Puts a claimed delivery back without counting the attempt (pacing said "not yet").
    pub async fn defer_delivery(&self, message_id: &str, due_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE outbound_deliveries SET state = 'retry', attempts = attempts - 1, \
             next_attempt_at = $1, updated_at = $2 WHERE message_id = $3 AND state = 'sending'",
        )
        .bind(due_ms)
        .bind(ids::now_ms())
        .bind(message_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The provider accepted the message: records its id, moves it to `sent`, and applies any
    /// status report that arrived before this (a webhook can beat the send response). Returns
    /// the forward moves, in order.
    pub async fn delivery_sent(
        &self,
        claimed: &Claimed,
        channel: &str,
        provider_message_id: &str,
    ) -> Result<Vec<Transition>, StoreError> {
        let now = ids::now_ms();
        let mut tx = self.begin().await?;
        self.lock_provider_id(&mut tx, &claimed.account_id, provider_message_id)
            .await?;
        sqlx::query(
            "UPDATE outbound_deliveries SET state = 'sent', last_code = NULL, last_reason = NULL, \
             updated_at = $1 WHERE message_id = $2",
        )
        .bind(now)
        .bind(&claimed.message_id)
        .execute(&mut *tx)
        .await?;
        let mut moves = Vec::new();
        let sent = DeliveryStatus::Sent;
        let moved = sqlx::query(
            "UPDATE messages SET provider_message_id = $1, status = $2, status_rank = $3 \
             WHERE id = $4 AND status_rank < $3 RETURNING id",
        )
        .bind(provider_message_id)
        .bind(sent.as_str())
        .bind(sent.rank())
        .bind(&claimed.message_id)
        .fetch_optional(&mut *tx)
        .await?;
        if moved.is_some() {
            moves.push(Transition::of(claimed, sent, None));
        }
        // Reports that came first: each forward one in rank order.
        let early = sqlx::query(
            "SELECT status, errors FROM message_status_events WHERE account_id = $1 AND channel = $2 \
             AND provider_message_id = $3 AND status IS NOT NULL",
        )
        .bind(&claimed.account_id)
        .bind(channel)
        .bind(provider_message_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut early: Vec<(DeliveryStatus, Option<String>)> = early
            .iter()
            .filter_map(|r| {
                let status = DeliveryStatus::parse(&r.get::<String, _>(0))?;
                let errors: Option<String> = r.get(1);
                Some((status, errors.filter(|e| e != "[]")))
            })
            .collect();
        early.sort_by_key(|(s, _)| s.rank());
        early.dedup_by_key(|(s, _)| *s);
        for (status, errors) in early {
            let moved = sqlx::query(
                "UPDATE messages SET status = $1, status_rank = $2, error = COALESCE($3, error) \
                 WHERE id = $4 AND status_rank < $2 RETURNING id",
            )
            .bind(status.as_str())
            .bind(status.rank())
            .bind(errors.as_deref())
            .bind(&claimed.message_id)
            .fetch_optional(&mut *tx)
            .await?;
            if moved.is_some() {
                moves.push(Transition::of(claimed, status, errors));
            }
        }
        tx.commit().await?;
        Ok(moves)
    }

    /// Records a failed attempt: due again at `retry_at_ms`, or (`None`) given up on — the
    /// message becomes `failed` with the provider's code and reason, and the delivery joins the
    /// dead-letter list. Returns the message's move to `failed`, if it moved.
    pub async fn delivery_failed(
        &self,
        claimed: &Claimed,
        code: &str,
        reason: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<Option<Transition>, StoreError> {
        let now = ids::now_ms();
        let mut tx = self.begin().await?;
        let state = if retry_at_ms.is_some() {
            "retry"
        } else {
            "dead"
        };
        sqlx::query(
            "UPDATE outbound_deliveries SET state = $1, next_attempt_at = $2, last_code = $3, \
             last_reason = $4, updated_at = $5 WHERE message_id = $6",
        )
        .bind(state)
        .bind(retry_at_ms.unwrap_or(now))
        .bind(code)
        .bind(reason)
        .bind(now)
        .bind(&claimed.message_id)
        .execute(&mut *tx)
        .await?;
        let mut moved = None;
        if retry_at_ms.is_none() {
            let error =
                serde_json::json!([{ "code": code, "title": reason, "details": null }]).to_string();
            let failed = DeliveryStatus::Failed;
            moved = sqlx::query(
                "UPDATE messages SET status = $1, status_rank = $2, error = $3 \
                 WHERE id = $4 AND status_rank < $2 RETURNING id",
            )
            .bind(failed.as_str())
            .bind(failed.rank())
            .bind(&error)
            .bind(&claimed.message_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|_| Transition::of(claimed, failed, Some(error)));
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// Moves every delivery that is due back to `queued` and returns their message ids, for
    /// jobs: retries whose time has come, `queued` ones whose job may have been lost (older
    /// than `stale_before_ms`), and `sending` ones whose worker died mid-attempt (claimed before
    /// `stale_before_ms`; the attempt counts as failed). Safe on many nodes at once: each row
    /// moves for one of them.
    pub async fn due_deliveries(
        &self,
        now_ms: i64,
        stale_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.begin().await?;
        // The condition is checked again outside the subquery: on PostgreSQL a sweep that
        // waited for another's row lock re-reads the row, and only the outer condition then
        // sees that the other sweep already took it.
        let rows = sqlx::query(
            "UPDATE outbound_deliveries SET state = 'queued', updated_at = $1 WHERE message_id IN \
             (SELECT message_id FROM outbound_deliveries WHERE \
              (state = 'retry' AND next_attempt_at <= $1) \
              OR (state = 'queued' AND updated_at < $2) \
              OR (state = 'sending' AND claimed_at < $2) LIMIT $3) \
             AND (state = 'retry' AND next_attempt_at <= $1 \
              OR state = 'queued' AND updated_at < $2 \
              OR state = 'sending' AND claimed_at < $2) \
             RETURNING message_id",
        )
        .bind(now_ms)
        .bind(stale_before_ms)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The account's dead letters, newest message first; `cursor` is the last id of the
    /// previous page.
    pub async fn dead_letters(
        &self,
        account_id: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(
            "SELECT message_id, conversation_id, inbox_id, attempts, last_code, last_reason, \
             replays, updated_at, created_at FROM outbound_deliveries \
             WHERE account_id = $1 AND state = 'dead' AND ($2 IS NULL OR message_id < $2) \
             ORDER BY message_id DESC LIMIT $3",
        )
        .bind(account_id)
        .bind(cursor)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(dead_letter).collect())
    }

    /// Puts a dead letter back in the queue with a fresh attempt budget; its message returns to
    /// `pending` (an operator's explicit decision, the one way a status moves back). `None` when
    /// the account has no such dead letter.
    pub async fn replay_dead_letter(
        &self,
        account_id: &str,
        message_id: &str,
        audit: &super::audit::AuditRecord,
    ) -> Result<Option<Transition>, StoreError> {
        let now = ids::now_ms();
        let mut tx = self.begin_scoped(account_id).await?;
        let row = sqlx::query(
            "UPDATE outbound_deliveries SET state = 'queued', attempts = 0, replays = replays + 1, \
             next_attempt_at = $1, updated_at = $1 \
             WHERE account_id = $2 AND message_id = $3 AND state = 'dead' RETURNING conversation_id",
        )
        .bind(now)
        .bind(account_id)
        .bind(message_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let pending = DeliveryStatus::Pending;
        sqlx::query(
            "UPDATE messages SET status = $1, status_rank = $2, error = NULL WHERE id = $3",
        )
        .bind(pending.as_str())
        .bind(pending.rank())
        .bind(message_id)
        .execute(&mut *tx)
        .await?;
        super::audit::append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some(Transition {
            message_id: message_id.to_owned(),
            conversation_id: row.get(0),
            status: pending,
            error: None,
        }))
    }

    /// Serialises the two writers of one provider message's status on PostgreSQL: the send
    /// response (which learns the provider id) and a status report (which names it). Without
    /// it a report committed between the send response's read of early reports and its commit
    /// would match no message and be lost. SQLite's writers are serial already.
    pub(crate) async fn lock_provider_id(
        &self,
        tx: &mut Transaction<'static, Any>,
        account_id: &str,
        provider_message_id: &str,
    ) -> Result<(), StoreError> {
        if self.dialect() == Dialect::Postgres {
            sqlx::query(
                "SELECT count(*) FROM (SELECT pg_advisory_xact_lock(hashtext($1))) AS held",
            )
            .bind(format!("{account_id}/{provider_message_id}"))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}

fn dead_letter(r: &AnyRow) -> DeadLetter {
    DeadLetter {
        id: r.get(0),
        conversation_id: r.get(1),
        inbox_id: r.get(2),
        attempts: r.get(3),
        code: r.get(4),
        reason: r.get(5),
        replays: r.get(6),
        failed_at_ms: r.get(7),
        created_at_ms: r.get(8),
    }
}
