//! Contacts, conversations and messages: where normalized inbound items land, and the reads
//! the API serves.
//!
//! Each item is one transaction. The schema settles every race between workers and nodes:
//! `contact_identities`' primary key (one contact per identity), `conversations_one_open` (one
//! open conversation per contact per inbox) and `messages_provider_id` (one message per provider
//! id) — inserts use `ON CONFLICT DO NOTHING` and then read the winner, so a re-run or a
//! concurrent duplicate changes nothing.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use switchboard_connectors::{ContactRef, InboundMessage, MessageContent, StatusUpdate};

use super::{Store, StoreError};
use crate::access::RecordScope;
use crate::ids;

/// Statuses that count as "open" for threading: anything not resolved.
const RESOLVED: &str = "resolved";

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Conversation {
    pub id: String,
    pub account_id: String,
    pub inbox_id: String,
    pub contact_id: String,
    pub channel: String,
    pub status: String,
    pub priority: i64,
    pub assignee_id: Option<String>,
    pub team_id: Option<String>,
    pub branch_id: Option<String>,
    pub last_message_at_ms: i64,
    pub last_inbound_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// `waiting` (queued for an agent), `offered`, `assigned`, or `idle` (resolved).
    pub routing_state: String,
    /// The conversation's place in the queue; kept when it returns to the queue.
    pub queued_at_ms: Option<i64>,
    pub assigned_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    pub labels: Vec<String>,
    /// The customer's language (a code such as `es` or `pt-br`), if known.
    pub language: Option<String>,
    /// When a `snoozed` conversation wakes (becomes `open` again); null otherwise.
    pub snoozed_until_ms: Option<i64>,
}

/// The contact as a conversation list shows it: enough to tell conversations apart.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ContactSummary {
    pub id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
}

/// A conversation in a list, with its contact (read by the same query).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ConversationListItem {
    #[serde(flatten)]
    pub conversation: Conversation,
    pub contact: ContactSummary,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub inbox_id: String,
    pub direction: String,
    pub content_type: String,
    /// The normalized content, tagged by `type` (`text`, `image`, …; `erased` after erasure).
    #[schema(value_type = Object)]
    pub content: serde_json::Value,
    pub provider_message_id: Option<String>,
    pub reply_to: Option<String>,
    pub forwarded: bool,
    pub status: String,
    pub error: Option<String>,
    pub sent_at_ms: i64,
    pub created_at_ms: i64,
    /// The agent who wrote a reply or note; null for the customer's messages.
    pub author_id: Option<String>,
    /// That agent's name (as it is now); null for the customer's messages.
    pub author_name: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Identity {
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Contact {
    pub id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub identities: Vec<Identity>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Set when the contact's personal data was erased (`DELETE /v1/contacts/{id}`).
    pub erased_at_ms: Option<i64>,
}

/// What storing one inbound message did, for the events published after commit.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The message as `GET …/messages` shows it (what `message.created` carries).
    pub message: Message,
    pub conversation_id: String,
    pub conversation_created: bool,
    /// The conversation, when this message woke it from `snoozed` (for `conversation.updated`).
    pub woken: Option<Conversation>,
    pub account_id: String,
}

/// Optional filters of [`Store::list_conversations`].
#[derive(Debug, Default)]
pub struct ConversationFilter<'a> {
    pub inbox_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub assignee_id: Option<&'a str>,
    /// Only conversations nobody is assigned to.
    pub unassigned: bool,
    pub team_id: Option<&'a str>,
    pub contact_id: Option<&'a str>,
    /// Case-insensitive text matched anywhere in the contact's name, phone or an identity value.
    pub text: Option<&'a str>,
}

/// The order of [`Store::list_conversations`], with where the previous page ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationOrder {
    /// Most recently created first (ids are time-ordered); after this conversation id.
    Newest(Option<String>),
    /// Latest message first; after this `(last_message_at, id)`.
    LastActivity(Option<(i64, String)>),
}

/// `text` as a `LIKE` pattern that matches it anywhere, its own `%`, `_` and `\` taken
/// literally (the queries say `ESCAPE '\'`).
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

/// Where an item is stored.
pub struct Target<'a> {
    pub account_id: &'a str,
    pub inbox_id: &'a str,
    pub channel: &'a str,
    pub event_id: &'a str,
    /// A new conversation starts in the inbox's team and branch.
    pub team_id: Option<&'a str>,
    pub branch_id: Option<&'a str>,
}

/// Column lists as macros so that queries stay `&'static str` (sqlx refuses unaudited dynamic
/// SQL).
/// `conversation_columns!("c.")` qualifies each column for queries that join.
macro_rules! conversation_columns {
    () => {
        conversation_columns!("")
    };
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "account_id, ",
            $p,
            "inbox_id, ",
            $p,
            "contact_id, ",
            $p,
            "channel, ",
            $p,
            "status, ",
            $p,
            "priority, ",
            $p,
            "assignee_id, ",
            $p,
            "team_id, ",
            $p,
            "last_message_at, ",
            $p,
            "last_inbound_at, ",
            $p,
            "created_at, ",
            $p,
            "updated_at, ",
            $p,
            "branch_id, ",
            $p,
            "routing_state, ",
            $p,
            "queued_at, ",
            $p,
            "assigned_at, ",
            $p,
            "resolved_at, ",
            $p,
            "labels, ",
            $p,
            "language, ",
            $p,
            "snoozed_until"
        )
    };
}

/// The record-scope filter on `conversations` columns, given the placeholders of the scope's
/// kind, the caller's branch and the caller's user id (see `crate::access::RecordScope`). One
/// static SQL text for every scope: the kind selects which arm can be true.
macro_rules! in_scope {
    ($kind:literal, $branch:literal, $user:literal) => {
        concat!(
            " AND (",
            $kind,
            " = 'all' OR (",
            $kind,
            " = 'branch' AND branch_id = ",
            $branch,
            ") OR (",
            $kind,
            " = 'team' AND team_id IN (SELECT team_id FROM team_members WHERE user_id = ",
            $user,
            ")) OR (",
            $kind,
            " IN ('assigned', 'self') AND assignee_id = ",
            $user,
            "))"
        )
    };
}

/// Every query that uses it reads `FROM messages` (unaliased): the author's name is looked up
/// by a subquery rather than a join, so the column list fits them all.
macro_rules! message_columns {
    () => {
        "id, conversation_id, inbox_id, direction, content_type, content, provider_message_id, \
         reply_to, forwarded, status, error, sent_at, created_at, author_id, \
         (SELECT u.name FROM users u WHERE u.id = messages.author_id)"
    };
}
pub(crate) use message_columns;

impl Store {
    /// Stores one inbound message: contact, open conversation, message. `Ok(None)` when the
    /// message was already stored (a redelivery or a re-run).
    pub async fn store_inbound_message(
        &self,
        target: &Target<'_>,
        message: &InboundMessage,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let mut tx = self.begin().await?;
        let stored = store_inbound_in(&mut tx, target, message).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Records a provider status report and applies it to the outbound message it names, only
    /// ever forward. Returns the move when a message's status moved.
    pub async fn store_status(
        &self,
        account_id: &str,
        channel: &str,
        event_id: &str,
        status: &StatusUpdate,
    ) -> Result<Option<super::outbound::Transition>, StoreError> {
        let mut tx = self.begin().await?;
        let moved = self
            .store_status_in(&mut tx, account_id, channel, event_id, status)
            .await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// [`Store::store_status`] inside `tx`.
    pub(crate) async fn store_status_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        account_id: &str,
        channel: &str,
        event_id: &str,
        status: &StatusUpdate,
    ) -> Result<Option<super::outbound::Transition>, StoreError> {
        self.lock_provider_id(tx, account_id, &status.provider_message_id)
            .await?;
        let errors = serde_json::to_string(&status.errors)
            .map_err(|e| StoreError::Setup(format!("errors do not serialize: {e}")))?;
        let lifecycle = status.status.map(|s| s.as_str());
        let inserted = sqlx::query(
            "INSERT INTO message_status_events (id, account_id, channel, provider_message_id, \
             provider_status, status, at, errors, inbound_event_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
        )
        .bind(ids::new(ids::STATUS_EVENT))
        .bind(account_id)
        .bind(channel)
        .bind(&status.provider_message_id)
        .bind(&status.provider_status)
        .bind(lifecycle)
        .bind(status.at_ms)
        .bind(&errors)
        .bind(event_id)
        .bind(ids::now_ms())
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        let mut moved = None;
        if let (true, Some(new)) = (inserted, status.status) {
            let error = (!status.errors.is_empty()).then_some(errors.as_str());
            moved = sqlx::query(
                "UPDATE messages SET status = $1, status_rank = $2, error = COALESCE($3, error) \
                 WHERE account_id = $4 AND direction = 'outbound' AND provider_message_id = $5 \
                 AND status_rank < $2 RETURNING id, conversation_id",
            )
            .bind(new.as_str())
            .bind(new.rank())
            .bind(error)
            .bind(account_id)
            .bind(&status.provider_message_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| super::outbound::Transition {
                message_id: r.get(0),
                conversation_id: r.get(1),
                status: new,
                error: error.map(str::to_owned),
            });
        }
        Ok(moved)
    }

    /// Conversations the scope reaches, each with its contact (one join), in `order` from
    /// where the previous page ended.
    pub async fn list_conversations(
        &self,
        account_id: &str,
        scope: &RecordScope,
        filter: &ConversationFilter<'_>,
        order: &ConversationOrder,
        limit: i64,
    ) -> Result<Vec<ConversationListItem>, StoreError> {
        // One static text per order; the filters are the same.
        macro_rules! listing {
            ($after:literal, $order:literal) => {
                concat!(
                    "SELECT ",
                    conversation_columns!("c."),
                    ", ct.name, ct.phone FROM conversations c \
                     JOIN contacts ct ON ct.id = c.contact_id WHERE c.account_id = $1 \
                     AND ($2 IS NULL OR c.inbox_id = $2) AND ($3 IS NULL OR c.status = $3) \
                     AND ($4 IS NULL OR c.assignee_id = $4) AND ($5 = 0 OR c.assignee_id IS NULL) \
                     AND ($6 IS NULL OR c.team_id = $6) AND ($7 IS NULL OR c.contact_id = $7) \
                     AND ($8 IS NULL OR LOWER(ct.name) LIKE LOWER($8) ESCAPE '\\' \
                     OR LOWER(ct.phone) LIKE LOWER($8) ESCAPE '\\' \
                     OR EXISTS (SELECT 1 FROM contact_identities i WHERE i.contact_id = c.contact_id \
                     AND LOWER(i.value) LIKE LOWER($8) ESCAPE '\\')) AND ",
                    $after,
                    in_scope!("$11", "$12", "$13"),
                    " ORDER BY ",
                    $order,
                    " LIMIT $14"
                )
            };
        }
        let (sql, after_ms, after_id) = match order {
            ConversationOrder::Newest(after) => (
                listing!("($9 IS NULL OR c.id < $9) AND $10 IS NULL", "c.id DESC"),
                None,
                after.as_deref(),
            ),
            ConversationOrder::LastActivity(after) => (
                listing!(
                    "($10 IS NULL OR c.last_message_at < $10 \
                     OR (c.last_message_at = $10 AND c.id < $9))",
                    "c.last_message_at DESC, c.id DESC"
                ),
                after.as_ref().map(|(at, _)| *at),
                after.as_ref().map(|(_, id)| id.as_str()),
            ),
        };
        let pattern = filter.text.map(contains_pattern);
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(sql)
            .bind(account_id)
            .bind(filter.inbox_id)
            .bind(filter.status)
            .bind(filter.assignee_id)
            .bind(i64::from(filter.unassigned))
            .bind(filter.team_id)
            .bind(filter.contact_id)
            .bind(pattern.as_deref())
            .bind(after_id)
            .bind(after_ms)
            .bind(scope.kind())
            .bind(scope.branch_id.as_deref())
            .bind(scope.user_id.as_deref())
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| ConversationListItem {
                conversation: conversation(r),
                contact: ContactSummary {
                    id: r.get(3),
                    name: r.get(21),
                    phone: r.get(22),
                },
            })
            .collect())
    }

    /// One conversation, if it exists and the scope reaches it (otherwise `None`: out of scope
    /// and missing look the same).
    pub async fn get_conversation(
        &self,
        account_id: &str,
        scope: &RecordScope,
        id: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE account_id = $1 AND id = $2",
            in_scope!("$3", "$4", "$5")
        ))
        .bind(account_id)
        .bind(id)
        .bind(scope.kind())
        .bind(scope.branch_id.as_deref())
        .bind(scope.user_id.as_deref())
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(conversation))
    }

    /// Messages in provider order (provider timestamp, then arrival), after `cursor`. The
    /// caller has checked the conversation is in scope.
    pub async fn list_messages(
        &self,
        account_id: &str,
        conversation_id: &str,
        after: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let (after_ts, after_id) = after.unwrap_or((i64::MIN, ""));
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE account_id = $1 AND conversation_id = $2 \
             AND (sent_at > $3 OR (sent_at = $3 AND id > $4)) ORDER BY sent_at, id LIMIT $5"
        ))
        .bind(account_id)
        .bind(conversation_id)
        .bind(after_ts)
        .bind(after_id)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(message).collect())
    }

    /// A contact, if the scope reaches one of its conversations (or is `all`).
    pub async fn get_contact(
        &self,
        account_id: &str,
        scope: &RecordScope,
        id: &str,
    ) -> Result<Option<Contact>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let Some(row) = sqlx::query(concat!(
            "SELECT id, name, phone, email, created_at, updated_at, erased_at FROM contacts \
             WHERE account_id = $1 AND id = $2 AND ($3 = 'all' OR EXISTS (SELECT 1 FROM conversations \
             WHERE account_id = $1 AND contact_id = $2",
            in_scope!("$3", "$4", "$5"),
            "))"
        ))
        .bind(account_id)
        .bind(id)
        .bind(scope.kind())
        .bind(scope.branch_id.as_deref())
        .bind(scope.user_id.as_deref())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let identities = sqlx::query(
            "SELECT kind, value FROM contact_identities WHERE account_id = $1 AND contact_id = $2 \
             ORDER BY created_at, kind",
        )
        .bind(account_id)
        .bind(id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Identity {
            kind: r.get(0),
            value: r.get(1),
        })
        .collect();
        tx.commit().await?;
        Ok(Some(Contact {
            id: row.get(0),
            name: row.get(1),
            phone: row.get(2),
            email: row.get(3),
            identities,
            created_at_ms: row.get(4),
            updated_at_ms: row.get(5),
            erased_at_ms: row.get(6),
        }))
    }
    /// Sets (or clears) the assignee; returns the updated conversation.
    pub async fn assign_conversation(
        &self,
        account_id: &str,
        conversation_id: &str,
        assignee_id: Option<&str>,
    ) -> Result<Option<Conversation>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        sqlx::query(
            "UPDATE conversations SET assignee_id = $1, updated_at = $2 WHERE account_id = $3 AND id = $4",
        )
        .bind(assignee_id)
        .bind(ids::now_ms())
        .bind(account_id)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversations WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(conversation_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(conversation))
    }
}

/// The words of a message that routing rules read (`keyword()`): a text, or a caption.
fn routing_text(content: &MessageContent) -> Option<&str> {
    match content {
        MessageContent::Text { text } => Some(text),
        MessageContent::Media { caption, .. } => caption.as_deref(),
        _ => None,
    }
}

/// Stores one inbound message inside `tx`: contact, open conversation, message. `Ok(None)`
/// when the message was already stored (a redelivery or a re-run).
pub(crate) async fn store_inbound_in(
    tx: &mut Transaction<'static, Any>,
    target: &Target<'_>,
    message: &InboundMessage,
) -> Result<Option<StoredMessage>, StoreError> {
    // Known already (a redelivery, or a re-run of an event that stored it): nothing is
    // opened for it. Read first, so that one duplicate never undoes the rest of a batch.
    let known = sqlx::query(
        "SELECT 1 FROM messages WHERE inbox_id = $1 AND direction = 'inbound' \
         AND provider_message_id = $2",
    )
    .bind(target.inbox_id)
    .bind(&message.provider_message_id)
    .fetch_optional(&mut **tx)
    .await?;
    if known.is_some() {
        return Ok(None);
    }
    let now = ids::now_ms();
    let contact_id = resolve_contact(tx, target.account_id, &message.sender, now).await?;
    let (conversation_id, conversation_created) =
        open_conversation(tx, target, &contact_id, message.sent_at_ms, now).await?;
    let message_id = ids::new(ids::MESSAGE);
    let content_value = serde_json::to_value(&message.content)
        .map_err(|e| StoreError::Setup(format!("content does not serialize: {e}")))?;
    let content = content_value.to_string();
    let inserted = sqlx::query(
        "INSERT INTO messages (id, account_id, conversation_id, inbox_id, direction, content_type, \
         content, provider_message_id, reply_to, forwarded, status, status_rank, sent_at, created_at, \
         inbound_event_id, raw) \
         VALUES ($1, $2, $3, $4, 'inbound', $5, $6, $7, $8, $9, 'received', 0, $10, $11, $12, $13) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&message_id)
    .bind(target.account_id)
    .bind(&conversation_id)
    .bind(target.inbox_id)
    .bind(message.content.kind())
    .bind(content)
    .bind(&message.provider_message_id)
    .bind(message.reply_to.as_deref())
    .bind(i64::from(message.forwarded))
    .bind(message.sent_at_ms)
    .bind(now)
    .bind(target.event_id)
    .bind(message.raw.to_string())
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        // A concurrent writer stored it between the read and the insert (PostgreSQL;
        // SQLite writers are serialized). The conversation opened here may be this
        // duplicate's alone: the caller rolls everything back and tries again, and the
        // read above then finds the message.
        return Err(StoreError::Raced("an inbound message stored concurrently"));
    }
    sqlx::query(
        "UPDATE conversations SET last_message_at = CASE WHEN last_message_at > $1 \
         THEN last_message_at ELSE $1 END, last_inbound_at = CASE WHEN last_inbound_at > $1 \
         THEN last_inbound_at ELSE $1 END, first_message = COALESCE(first_message, $4), \
         updated_at = $2 WHERE id = $3",
    )
    .bind(message.sent_at_ms)
    .bind(now)
    .bind(&conversation_id)
    .bind(routing_text(&message.content))
    .execute(&mut **tx)
    .await?;
    // The customer writing ends a snooze at once.
    let woken = if conversation_created {
        None
    } else {
        wake_in(tx, &conversation_id, now).await?
    };
    Ok(Some(StoredMessage {
        message: Message {
            id: message_id,
            conversation_id: conversation_id.clone(),
            inbox_id: target.inbox_id.to_owned(),
            direction: "inbound".to_owned(),
            content_type: message.content.kind().to_owned(),
            content: content_value,
            provider_message_id: Some(message.provider_message_id.clone()),
            reply_to: message.reply_to.clone(),
            forwarded: message.forwarded,
            status: "received".to_owned(),
            error: None,
            sent_at_ms: message.sent_at_ms,
            created_at_ms: now,
            author_id: None,
            author_name: None,
        },
        conversation_id,
        conversation_created,
        woken,
        account_id: target.account_id.to_owned(),
    }))
}

/// What waking a snoozed conversation sets: `open`, no wake time, and back in the queue (at
/// its original place) when nobody holds it; an assignee keeps it. `$1` is now. The `CASE`s
/// read the row as it was before the update.
macro_rules! wake_set {
    () => {
        "status = 'open', snoozed_until = NULL, \
         routing_state = CASE WHEN routing_state = 'idle' THEN 'waiting' ELSE routing_state END, \
         route_step = CASE WHEN routing_state = 'idle' THEN NULL ELSE route_step END, \
         queued_at = CASE WHEN routing_state = 'idle' THEN COALESCE(queued_at, $1) \
         ELSE queued_at END, updated_at = $1"
    };
}

/// Wakes one conversation if it is snoozed (the customer wrote, or an agent reopened it);
/// returns it as it is now, or `None` when it was not snoozed.
pub(crate) async fn wake_in(
    conn: &mut sqlx::AnyConnection,
    conversation_id: &str,
    now: i64,
) -> Result<Option<Conversation>, StoreError> {
    Ok(sqlx::query(concat!(
        "UPDATE conversations SET ",
        wake_set!(),
        " WHERE id = $2 AND status = 'snoozed' RETURNING ",
        conversation_columns!()
    ))
    .bind(now)
    .bind(conversation_id)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(conversation))
}

impl Store {
    /// Wakes up to `limit` snoozed conversations whose time has come (any account), and
    /// returns them. The `status = 'snoozed'` guard is re-checked on each row as it is
    /// updated, so when several nodes sweep at once each conversation wakes exactly once.
    pub async fn wake_due_snoozed(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Conversation>, StoreError> {
        // A read on the partial index first: most seconds nothing is due, and the write
        // transaction (on SQLite, the one writer every intake batch waits for) is not needed.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM conversations WHERE status = 'snoozed' AND snoozed_until <= $1 LIMIT 1",
        )
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let rows = sqlx::query(concat!(
            "UPDATE conversations SET ",
            wake_set!(),
            " WHERE status = 'snoozed' AND snoozed_until <= $1 AND id IN (SELECT id FROM \
             conversations WHERE status = 'snoozed' AND snoozed_until <= $1 \
             ORDER BY snoozed_until LIMIT $2) RETURNING ",
            conversation_columns!()
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(conversation).collect())
    }
}

/// Finds the contact behind the sender's identities, creating it (and attaching any identity it
/// lacks) as needed. Threading uses the first identity; later ones are aliases.
async fn resolve_contact(
    tx: &mut Transaction<'static, Any>,
    account_id: &str,
    sender: &ContactRef,
    now: i64,
) -> Result<String, StoreError> {
    // The contact behind the first known identity, which identity that was, and whether its
    // name or phone is still missing (one read, no write, for a returning customer).
    let mut found: Option<(String, usize, bool)> = None;
    for (index, identity) in sender.identities.iter().enumerate() {
        found = sqlx::query(
            "SELECT i.contact_id, \
             CAST(CASE WHEN c.name IS NULL OR c.phone IS NULL THEN 1 ELSE 0 END AS BIGINT) \
             FROM contact_identities i JOIN contacts c ON c.id = i.contact_id \
             WHERE i.account_id = $1 AND i.kind = $2 AND i.value = $3",
        )
        .bind(account_id)
        .bind(identity.kind.as_str())
        .bind(&identity.value)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| (r.get::<String, _>(0), index, r.get::<i64, _>(1) == 1));
        if found.is_some() {
            break;
        }
    }
    let created = found.is_none();
    let known = found.as_ref().map(|(_, index, _)| *index);
    let contact_id = match found {
        Some((id, _, incomplete)) => {
            if incomplete && (sender.display_name.is_some() || sender.phone.is_some()) {
                sqlx::query(
                    "UPDATE contacts SET name = COALESCE(name, $1), phone = COALESCE(phone, $2), \
                     updated_at = $3 WHERE id = $4 AND (name IS NULL OR phone IS NULL)",
                )
                .bind(sender.display_name.as_deref())
                .bind(sender.phone.as_deref())
                .bind(now)
                .bind(&id)
                .execute(&mut **tx)
                .await?;
            }
            id
        }
        None => {
            let id = ids::new(ids::CONTACT);
            sqlx::query(
                "INSERT INTO contacts (id, account_id, name, phone, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(&id)
            .bind(account_id)
            .bind(sender.display_name.as_deref())
            .bind(sender.phone.as_deref())
            .bind(now)
            .execute(&mut **tx)
            .await?;
            id
        }
    };
    for (index, identity) in sender.identities.iter().enumerate() {
        if Some(index) == known {
            continue; // the identity the contact was found by is attached already
        }
        let attached = sqlx::query(
            "INSERT INTO contact_identities (account_id, kind, value, contact_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(account_id)
        .bind(identity.kind.as_str())
        .bind(&identity.value)
        .bind(&contact_id)
        .bind(now)
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if !attached {
            let owner: String = sqlx::query(
                "SELECT contact_id FROM contact_identities WHERE account_id = $1 AND kind = $2 AND value = $3",
            )
            .bind(account_id)
            .bind(identity.kind.as_str())
            .bind(&identity.value)
            .fetch_one(&mut **tx)
            .await?
            .get(0);
            if created && owner != contact_id {
                // Another worker created this person a moment ago (PostgreSQL; SQLite writers
                // are serialized). Use theirs: the contact made here is removed before anything
                // refers to it. (An alias already owned by another existing contact is left
                // with it; merging contacts is an operator's decision, not the intake's.)
                sqlx::query(
                    "DELETE FROM contacts WHERE id = $1 AND NOT EXISTS \
                     (SELECT 1 FROM contact_identities WHERE contact_id = $1)",
                )
                .bind(&contact_id)
                .execute(&mut **tx)
                .await?;
                return Box::pin(resolve_contact(tx, account_id, sender, now)).await;
            }
        }
    }
    Ok(contact_id)
}

/// The contact's open conversation in the inbox, opened if there is none. A message to a
/// resolved conversation starts a new one.
async fn open_conversation(
    tx: &mut Transaction<'static, Any>,
    target: &Target<'_>,
    contact_id: &str,
    sent_at: i64,
    now: i64,
) -> Result<(String, bool), StoreError> {
    let select =
        "SELECT id FROM conversations WHERE inbox_id = $1 AND contact_id = $2 AND status <> $3";
    if let Some(row) = sqlx::query(select)
        .bind(target.inbox_id)
        .bind(contact_id)
        .bind(RESOLVED)
        .fetch_optional(&mut **tx)
        .await?
    {
        return Ok((row.get(0), false));
    }
    let id = ids::new(ids::CONVERSATION);
    let created = sqlx::query(
        "INSERT INTO conversations (id, account_id, inbox_id, contact_id, channel, status, priority, \
         last_message_at, last_inbound_at, created_at, updated_at, team_id, branch_id, routing_state, \
         queued_at) \
         VALUES ($1, $2, $3, $4, $5, 'open', 0, $6, $6, $7, $7, $8, $9, 'waiting', $7) ON CONFLICT DO NOTHING",
    )
    .bind(&id)
    .bind(target.account_id)
    .bind(target.inbox_id)
    .bind(contact_id)
    .bind(target.channel)
    .bind(sent_at)
    .bind(now)
    .bind(target.team_id)
    .bind(target.branch_id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if created {
        return Ok((id, true));
    }
    // Lost the race to a concurrent worker; its conversation is committed and visible now.
    let row = sqlx::query(select)
        .bind(target.inbox_id)
        .bind(contact_id)
        .bind(RESOLVED)
        .fetch_one(&mut **tx)
        .await?;
    Ok((row.get(0), false))
}

pub(crate) fn conversation(r: &AnyRow) -> Conversation {
    Conversation {
        id: r.get(0),
        account_id: r.get(1),
        inbox_id: r.get(2),
        contact_id: r.get(3),
        channel: r.get(4),
        status: r.get(5),
        priority: r.get(6),
        assignee_id: r.get(7),
        team_id: r.get(8),
        last_message_at_ms: r.get(9),
        last_inbound_at_ms: r.get(10),
        created_at_ms: r.get(11),
        updated_at_ms: r.get(12),
        branch_id: r.get(13),
        routing_state: r.get(14),
        queued_at_ms: r.get(15),
        assigned_at_ms: r.get(16),
        resolved_at_ms: r.get(17),
        labels: serde_json::from_str(&r.get::<String, _>(18)).unwrap_or_default(),
        language: r.get(19),
        snoozed_until_ms: r.get(20),
    }
}

pub(crate) fn message(r: &AnyRow) -> Message {
    let content: String = r.get(5);
    let forwarded: i64 = r.get(8);
    Message {
        id: r.get(0),
        conversation_id: r.get(1),
        inbox_id: r.get(2),
        direction: r.get(3),
        content_type: r.get(4),
        content: serde_json::from_str(&content).unwrap_or(serde_json::Value::String(content)),
        provider_message_id: r.get(6),
        reply_to: r.get(7),
        forwarded: forwarded != 0,
        status: r.get(9),
        error: r.get(10),
        sent_at_ms: r.get(11),
        created_at_ms: r.get(12),
        author_id: r.get(13),
        author_name: r.get(14),
    }
}
