//! The inbound event log: every signed provider request, kept raw before it is acknowledged.
//!
//! Status lifecycle: `received` (durable, not yet normalized) → `processed` | `unrouted` (some
//! items matched no inbox; kept for an operator) | `quarantined` (signed but unparseable).
//! Bodies are never deleted by the hub: they are the replay source.

use sqlx::Row;
use sqlx::any::AnyRow;
use switchboard_workers::RawEvent;

use super::{Store, StoreError};
use crate::ids;

/// A new event about to be made durable.
pub struct NewEvent<'a> {
    pub account_id: &'a str,
    pub channel: &'static str,
    pub source: &'a str,
    pub inbox_id: Option<&'a str>,
    pub event_key: &'a str,
    pub content_type: &'static str,
    pub body: bytes::Bytes,
}

impl NewEvent<'_> {
    pub fn to_row(&self) -> EventRow {
        EventRow {
            id: ids::new(ids::INBOUND_EVENT),
            account_id: self.account_id.to_owned(),
            channel: self.channel,
            source: self.source.to_owned(),
            inbox_id: self.inbox_id.map(str::to_owned),
            event_key: self.event_key.to_owned(),
            content_type: self.content_type,
            body: self.body.clone(),
        }
    }
}

/// An event ready for the durable write, owned so it can wait for a group commit.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: String,
    pub account_id: String,
    pub channel: &'static str,
    pub source: String,
    pub inbox_id: Option<String>,
    pub event_key: String,
    pub content_type: &'static str,
    pub body: bytes::Bytes,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct EventSummary {
    pub id: String,
    pub channel: String,
    pub source: String,
    pub inbox_id: Option<String>,
    pub event_key: String,
    pub status: String,
    pub error: Option<String>,
    pub received_at_ms: i64,
    pub processed_at_ms: Option<i64>,
    pub content_type: String,
    /// The raw body as text, cut at [`BODY_PREVIEW_BYTES`]; `body_truncated` says when.
    pub body: String,
    pub body_truncated: bool,
}

/// How much of each raw body a listing shows, so a page of events stays small.
pub const BODY_PREVIEW_BYTES: usize = 16 * 1024;

impl Store {
    /// Makes a batch of events durable in one transaction (one commit, one fsync, however many
    /// events). Returns, per event, whether it is new (`false`: its key was already recorded,
    /// earlier or earlier in this same batch), and the time recorded as their `received_at`.
    pub async fn record_events(&self, events: &[EventRow]) -> Result<(Vec<bool>, i64), StoreError> {
        let mut tx = self.begin().await?;
        let now = ids::now_ms();
        let mut new = Vec::with_capacity(events.len());
        for event in events {
            let inserted = sqlx::query(
                "INSERT INTO inbound_events (id, account_id, channel, source, inbox_id, event_key, \
                 content_type, body, status, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'received', $9) ON CONFLICT DO NOTHING",
            )
            .bind(&event.id)
            .bind(&event.account_id)
            .bind(event.channel)
            .bind(&event.source)
            .bind(event.inbox_id.as_deref())
            .bind(&event.event_key)
            .bind(event.content_type)
            .bind(&event.body[..])
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            new.push(inserted);
        }
        tx.commit().await?;
        Ok((new, now))
    }

    pub async fn load_event(&self, id: &str) -> Result<Option<RawEvent>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, source, inbox_id, body, status, received_at \
             FROM inbound_events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| RawEvent {
            id: r.get(0),
            account_id: r.get(1),
            source: r.get(2),
            inbox_id: r.get(3),
            body: r.get(4),
            status: r.get(5),
            received_at_ms: r.get(6),
        }))
    }

    /// Moves an event out of `received`. Only `received` events move, so a late or repeated
    /// run never overwrites a later decision.
    pub async fn finish_event(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        finish_event_in(&mut tx, id, status, error).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` events still `received` whose last queueing is older than
    /// `horizon_ms`, stamping them so that the next sweep (on any node) leaves them alone for
    /// another period. Their job was lost (a crash between the durable write and the queue
    /// push), exhausted its retries, or is waiting behind a backlog; an extra job is harmless.
    pub async fn claim_stale_events(
        &self,
        horizon_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "UPDATE inbound_events SET queued_at = $1 WHERE id IN (SELECT id FROM inbound_events \
             WHERE status = 'received' AND COALESCE(queued_at, received_at) < $2 \
             ORDER BY received_at LIMIT $3) AND status = 'received' \
             AND COALESCE(queued_at, received_at) < $2 RETURNING id",
        )
        .bind(ids::now_ms())
        .bind(horizon_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    pub async fn list_events(
        &self,
        account_id: &str,
        status: Option<&str>,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, channel, source, inbox_id, event_key, status, error, received_at, \
             processed_at, content_type, body FROM inbound_events \
             WHERE account_id = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(account_id)
        .bind(status)
        .bind(cursor)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(event_summary).collect())
    }
}

fn event_summary(r: &AnyRow) -> EventSummary {
    let body: Vec<u8> = r.get(10);
    let shown = &body[..body.len().min(BODY_PREVIEW_BYTES)];
    EventSummary {
        id: r.get(0),
        channel: r.get(1),
        source: r.get(2),
        inbox_id: r.get(3),
        event_key: r.get(4),
        status: r.get(5),
        error: r.get(6),
        received_at_ms: r.get(7),
        processed_at_ms: r.get(8),
        content_type: r.get(9),
        body: String::from_utf8_lossy(shown).into_owned(),
        body_truncated: shown.len() < body.len(),
    }
}

/// [`Store::finish_event`] inside `tx`.
pub(crate) async fn finish_event_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
    status: &str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE inbound_events SET status = $1, error = $2, processed_at = $3, \
         attempts = attempts + 1 WHERE id = $4 AND status = 'received'",
    )
    .bind(status)
    .bind(error)
    .bind(ids::now_ms())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
