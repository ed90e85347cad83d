//! Outbound webhooks' records (migration 0010, docs/WEBHOOKS_OUT.md): endpoints (their secrets
//! sealed; this module only moves the sealed text) and deliveries, the store being the queue.
//!
//! Several worker nodes tail the event log for the same endpoints: an endpoint's cursor moves
//! by compare-and-set in the transaction that inserts its deliveries, and `(endpoint_id,
//! event_id)` is unique, so an event becomes one delivery per endpoint whatever the nodes do.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::audit::AuditRecord;
use super::{Store, StoreError};
use crate::ids;

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookEndpoint {
    /// `whe_…`
    pub id: String,
    pub url: String,
    pub description: String,
    /// Subscribed event types, groups (`conversation.*`) or `*`.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Deliver in event order: a delivery waits until the one before it succeeded or failed.
    pub ordered: bool,
    /// Why the hub disabled the endpoint, when it did.
    pub disabled_reason: Option<String>,
    /// Deliveries in a row that failed for good.
    pub consecutive_failures: i64,
    /// Until when the previous secret still signs (after a rotation).
    pub previous_secret_until_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const ENDPOINT_COLUMNS: &str = "id, url, description, event_types, enabled, ordered, \
    disabled_reason, consecutive_failures, previous_until, created_at, updated_at";

fn endpoint(r: &AnyRow) -> WebhookEndpoint {
    let types: String = r.get(3);
    WebhookEndpoint {
        id: r.get(0),
        url: r.get(1),
        description: r.get(2),
        event_types: serde_json::from_str(&types).unwrap_or_default(),
        enabled: r.get::<i64, _>(4) != 0,
        ordered: r.get::<i64, _>(5) != 0,
        disabled_reason: r.get(6),
        consecutive_failures: r.get(7),
        previous_secret_until_ms: r.get(8),
        created_at_ms: r.get(9),
        updated_at_ms: r.get(10),
    }
}

/// The changeable fields of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointFields {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub ordered: bool,
}

/// One attempt's worth of a delivery, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookDelivery {
    /// `whd_…`
    pub id: String,
    pub endpoint_id: String,
    /// The `webhook-id` header: the same on every attempt and on a replay.
    pub msg_id: String,
    pub event_type: String,
    /// The event-log id; none for test events and replays.
    pub event_id: Option<i64>,
    /// `due` (waiting for its next attempt), `sending`, `succeeded` or `failed` (out of
    /// attempts).
    pub state: String,
    pub attempts: i64,
    /// When the next attempt is due (state `due`).
    pub next_attempt_at_ms: Option<i64>,
    /// The receiver's last HTTP status; none when it did not answer.
    pub response_status: Option<i64>,
    /// The start of the receiver's last answer (at most `webhooks_out.max_response_bytes`).
    pub response_body: Option<String>,
    /// Why the last attempt failed (`timeout`, `connection failed`, `HTTP 503`, …).
    pub last_error: Option<String>,
    /// The delivery this one replays.
    pub replay_of: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, msg_id, event_type, event_id, state, attempts, \
    next_attempt_at, response_status, response_body, last_error, replay_of, created_at, updated_at";

fn delivery(r: &AnyRow) -> WebhookDelivery {
    let state: String = r.get(5);
    let next: i64 = r.get(7);
    WebhookDelivery {
        id: r.get(0),
        endpoint_id: r.get(1),
        msg_id: r.get(2),
        event_type: r.get(3),
        event_id: r.get(4),
        next_attempt_at_ms: (state == "due").then_some(next),
        state,
        attempts: r.get(6),
        response_status: r.get(8),
        response_body: r.get(9),
        last_error: r.get(10),
        replay_of: r.get(11),
        created_at_ms: r.get(12),
        updated_at_ms: r.get(13),
    }
}

/// An enabled endpoint whose account's log has events past its cursor.
#[derive(Debug, Clone)]
pub struct Behind {
    pub id: String,
    pub account_id: String,
    pub cursor: i64,
    pub event_types: Vec<String>,
}

/// One event of the log, as the tailer reads it.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub id: i64,
    pub kind: String,
    pub data: String,
    pub at_ms: i64,
}

/// A delivery to queue: `(event id, event type, payload)`.
pub type Queued = (i64, String, String);

/// A delivery a sender claimed for one attempt, with what it needs to sign and send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: String,
    pub account_id: String,
    pub endpoint_id: String,
    pub url: String,
    pub msg_id: String,
    pub payload: String,
    /// Including this one.
    pub attempt: i64,
    /// Sealed.
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_until: Option<i64>,
}

/// How an attempt went, to record.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// `succeeded`, `due` (a retry at `next_ms`) or `failed`.
    pub state: &'static str,
    pub next_ms: i64,
    pub status: Option<i64>,
    pub body: Option<String>,
    pub error: Option<String>,
}

impl Store {
    /// Creates an endpoint with its audit record. Its cursor starts at the account's log head:
    /// it gets events from now on, not the history.
    pub async fn create_webhook_endpoint(
        &self,
        account_id: &str,
        id: &str,
        fields: &EndpointFields,
        sealed_secret: &str,
        record: AuditRecord,
    ) -> Result<WebhookEndpoint, StoreError> {
        let now = ids::now_ms();
        let mut tx = self.begin_scoped(account_id).await?;
        let head = log_head(&mut tx, account_id).await?;
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, account_id, url, description, event_types, enabled, \
             ordered, secret, cursor, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(id)
        .bind(account_id)
        .bind(&fields.url)
        .bind(&fields.description)
        .bind(types_json(&fields.event_types))
        .bind(i64::from(fields.enabled))
        .bind(i64::from(fields.ordered))
        .bind(sealed_secret)
        .bind(head)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let created = read_endpoint(&mut tx, account_id, id)
            .await?
            .ok_or_else(|| StoreError::Setup("the endpoint just written is gone".to_owned()))?;
        super::audit::append(&mut tx, &record.after(&created)).await?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn list_webhook_endpoints(
        &self,
        account_id: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<WebhookEndpoint>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE account_id = $1 \
             AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        )))
        .bind(account_id)
        .bind(cursor)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(endpoint).collect())
    }

    pub async fn webhook_endpoint(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let found = read_endpoint(&mut tx, account_id, id).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Changes an endpoint with its audit record (`before`/`after`); `None` when there is no
    /// such endpoint. `fields` gets the current values and returns the new ones (or the
    /// refusal, which changes nothing). Enabling a disabled endpoint starts it at the log's
    /// head and clears its failure count; deliveries still due go out again.
    pub async fn update_webhook_endpoint<E>(
        &self,
        account_id: &str,
        id: &str,
        fields: impl FnOnce(EndpointFields) -> Result<EndpointFields, E>,
        record: AuditRecord,
    ) -> Result<Option<Result<WebhookEndpoint, E>>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let touched = sqlx::query(
            "UPDATE webhook_endpoints SET updated_at = updated_at WHERE account_id = $1 AND id = $2",
        )
        .bind(account_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if touched == 0 {
            return Ok(None);
        }
        let Some(before) = read_endpoint(&mut tx, account_id, id).await? else {
            return Ok(None);
        };
        let new = match fields(EndpointFields {
            url: before.url.clone(),
            description: before.description.clone(),
            event_types: before.event_types.clone(),
            enabled: before.enabled,
            ordered: before.ordered,
        }) {
            Ok(new) => new,
            Err(e) => return Ok(Some(Err(e))),
        };
        let now = ids::now_ms();
        sqlx::query(
            "UPDATE webhook_endpoints SET url = $3, description = $4, event_types = $5, \
             enabled = $6, ordered = $7, updated_at = $8 WHERE account_id = $1 AND id = $2",
        )
        .bind(account_id)
        .bind(id)
        .bind(&new.url)
        .bind(&new.description)
        .bind(types_json(&new.event_types))
        .bind(i64::from(new.enabled))
        .bind(i64::from(new.ordered))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if new.enabled && !before.enabled {
            let head = log_head(&mut tx, account_id).await?;
            sqlx::query(
                "UPDATE webhook_endpoints SET cursor = $3, consecutive_failures = 0, \
                 disabled_reason = NULL WHERE account_id = $1 AND id = $2",
            )
            .bind(account_id)
            .bind(id)
            .bind(head)
            .execute(&mut *tx)
            .await?;
        }
        let after = read_endpoint(&mut tx, account_id, id)
            .await?
            .ok_or_else(|| StoreError::Setup("the endpoint just written is gone".to_owned()))?;
        super::audit::append(&mut tx, &record.before(&before).after(&after)).await?;
        tx.commit().await?;
        Ok(Some(Ok(after)))
    }

    /// Removes an endpoint and its deliveries with the audit record; `false` when none.
    pub async fn delete_webhook_endpoint(
        &self,
        account_id: &str,
        id: &str,
        record: AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let Some(before) = read_endpoint(&mut tx, account_id, id).await? else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM webhook_deliveries WHERE account_id = $1 AND endpoint_id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_endpoints WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        super::audit::append(&mut tx, &record.before(&before)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Puts a new (sealed) secret in place; the current one keeps signing until
    /// `previous_until_ms`. `None` when there is no such endpoint.
    pub async fn rotate_webhook_secret(
        &self,
        account_id: &str,
        id: &str,
        sealed_secret: &str,
        previous_until_ms: i64,
        record: AuditRecord,
    ) -> Result<Option<WebhookEndpoint>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let rotated = sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3, \
             previous_until = $4, updated_at = $5 WHERE account_id = $1 AND id = $2",
        )
        .bind(account_id)
        .bind(id)
        .bind(sealed_secret)
        .bind(previous_until_ms)
        .bind(ids::now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if rotated == 0 {
            return Ok(None);
        }
        let after = read_endpoint(&mut tx, account_id, id).await?;
        super::audit::append(
            &mut tx,
            &record.after(serde_json::json!({ "previous_secret_until_ms": previous_until_ms })),
        )
        .await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Queues one message to an endpoint outside the event stream (a test event, a replay),
    /// due now, with its audit record (the new delivery as its `after`). Returns the delivery.
    #[allow(clippy::too_many_arguments)]
    pub async fn queue_webhook_message(
        &self,
        account_id: &str,
        endpoint_id: &str,
        event_type: &str,
        payload: &str,
        msg_id: &str,
        replay_of: Option<&str>,
        record: AuditRecord,
    ) -> Result<WebhookDelivery, StoreError> {
        let now = ids::now_ms();
        let id = ids::new(ids::WEBHOOK_DELIVERY);
        let mut tx = self.begin_scoped(account_id).await?;
        let seq: i64 = sqlx::query_scalar(
            "UPDATE webhook_endpoints SET next_seq = next_seq + 1 WHERE account_id = $1 AND id = $2 \
             RETURNING next_seq - 1",
        )
        .bind(account_id)
        .bind(endpoint_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, account_id, endpoint_id, seq, event_id, msg_id, \
             event_type, payload, state, next_attempt_at, replay_of, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, 'due', $8, $9, $8, $8)",
        )
        .bind(&id)
        .bind(account_id)
        .bind(endpoint_id)
        .bind(seq)
        .bind(msg_id)
        .bind(event_type)
        .bind(payload)
        .bind(now)
        .bind(replay_of)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
        )))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        let queued = delivery(&row);
        super::audit::append(&mut tx, &record.after(&queued)).await?;
        tx.commit().await?;
        Ok(queued)
    }

    /// An endpoint's deliveries, newest first (by the endpoint's sequence, which is event
    /// order; ids made in the same millisecond do not sort by time); only `state` ones when
    /// given. `cursor` is the last delivery id of the previous page.
    pub async fn list_webhook_deliveries(
        &self,
        account_id: &str,
        endpoint_id: &str,
        state: Option<&str>,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE account_id = $1 \
             AND endpoint_id = $2 AND ($3 IS NULL OR state = $3) AND ($4 IS NULL OR seq < \
               (SELECT c.seq FROM webhook_deliveries c WHERE c.endpoint_id = $2 AND c.id = $4)) \
             ORDER BY seq DESC LIMIT $5"
        )))
        .bind(account_id)
        .bind(endpoint_id)
        .bind(state)
        .bind(cursor)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(delivery).collect())
    }

    /// One delivery of an endpoint with its message: `(delivery, payload)`.
    pub async fn webhook_delivery(
        &self,
        account_id: &str,
        endpoint_id: &str,
        id: &str,
    ) -> Result<Option<(WebhookDelivery, String)>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS}, payload FROM webhook_deliveries WHERE account_id = $1 \
             AND endpoint_id = $2 AND id = $3"
        )))
        .bind(account_id)
        .bind(endpoint_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| (delivery(&r), r.get(14))))
    }

    /// Enabled endpoints (of every account) whose account's log has moved past their cursor.
    pub async fn webhook_endpoints_behind(&self) -> Result<Vec<Behind>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id, e.account_id, e.cursor, e.event_types FROM webhook_endpoints e \
             JOIN event_heads h ON h.account_id = e.account_id \
             WHERE e.enabled = 1 AND h.last_id > e.cursor ORDER BY e.id",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let types: String = r.get(3);
                Behind {
                    id: r.get(0),
                    account_id: r.get(1),
                    cursor: r.get(2),
                    event_types: serde_json::from_str(&types).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Events of the account's log after `after`, in id order, at most `limit`.
    pub async fn log_events_after(
        &self,
        account_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogEvent>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(
            "SELECT id, kind, data, created_at FROM events WHERE account_id = $1 AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(account_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| LogEvent {
                id: r.get(0),
                kind: r.get(1),
                data: r.get(2),
                at_ms: r.get(3),
            })
            .collect())
    }

    /// Moves an endpoint's cursor from where it was read to `to` and queues its deliveries
    /// for the events in between, due at `due_ms`, in one transaction. `false`: another node
    /// moved it first; nothing changed.
    pub async fn queue_webhook_events(
        &self,
        endpoint: &Behind,
        to: i64,
        deliveries: &[Queued],
        due_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = ids::now_ms();
        let mut tx = self.begin().await?;
        let n = deliveries.len() as i64;
        let first: Option<i64> = sqlx::query_scalar(
            "UPDATE webhook_endpoints SET cursor = $3, next_seq = next_seq + $4 \
             WHERE id = $1 AND cursor = $2 RETURNING next_seq - $4",
        )
        .bind(&endpoint.id)
        .bind(endpoint.cursor)
        .bind(to)
        .bind(n)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(first) = first else {
            return Ok(false);
        };
        for (k, (event_id, event_type, payload)) in deliveries.iter().enumerate() {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, account_id, endpoint_id, seq, event_id, msg_id, \
                 event_type, payload, state, next_attempt_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'due', $10, $9, $9) \
                 ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            )
            .bind(ids::new(ids::WEBHOOK_DELIVERY))
            .bind(&endpoint.account_id)
            .bind(&endpoint.id)
            .bind(first + k as i64)
            .bind(*event_id)
            .bind(ids::new(ids::WEBHOOK_MESSAGE))
            .bind(event_type)
            .bind(payload)
            .bind(now)
            .bind(due_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Claims up to `limit` deliveries that are due (or whose claim is older than
    /// `stale_before_ms`: a sender that died) on enabled endpoints, counting the attempt. An
    /// ordered endpoint offers only its oldest unfinished delivery. Each row goes to one
    /// sender only.
    pub async fn claim_webhook_deliveries(
        &self,
        now_ms: i64,
        stale_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let mut tx = self.begin().await?;
        let ids: Vec<String> = sqlx::query(
            "SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE e.enabled = 1 AND ((d.state = 'due' AND d.next_attempt_at <= $1) \
               OR (d.state = 'sending' AND d.claimed_at < $2)) \
             AND (e.ordered = 0 OR d.seq = (SELECT MIN(o.seq) FROM webhook_deliveries o \
               WHERE o.endpoint_id = d.endpoint_id AND o.state IN ('due', 'sending'))) \
             ORDER BY d.next_attempt_at, d.seq LIMIT $3",
        )
        .bind(now_ms)
        .bind(stale_before_ms)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(
                "UPDATE webhook_deliveries SET state = 'sending', claimed_at = $2, \
                 attempts = attempts + 1, updated_at = $2 WHERE id = $1 \
                 AND ((state = 'due' AND next_attempt_at <= $2) OR (state = 'sending' AND claimed_at < $3)) \
                 RETURNING id, account_id, endpoint_id, msg_id, payload, attempts",
            )
            .bind(&id)
            .bind(now_ms)
            .bind(stale_before_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(r) = row else { continue };
            let endpoint_id: String = r.get(2);
            let e = sqlx::query(
                "SELECT url, secret, previous_secret, previous_until FROM webhook_endpoints WHERE id = $1",
            )
            .bind(&endpoint_id)
            .fetch_one(&mut *tx)
            .await?;
            claimed.push(ClaimedDelivery {
                id: r.get(0),
                account_id: r.get(1),
                endpoint_id,
                msg_id: r.get(3),
                payload: r.get(4),
                attempt: r.get(5),
                url: e.get(0),
                secret: e.get(1),
                previous_secret: e.get(2),
                previous_until: e.get(3),
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records an attempt's outcome and, when the delivery is finished, the endpoint's run of
    /// failures: a success clears it; a failure that makes it `disable_after` disables the
    /// endpoint. Returns whether this outcome disabled the endpoint.
    pub async fn record_webhook_attempt(
        &self,
        claimed: &ClaimedDelivery,
        outcome: &AttemptOutcome,
        disable_after: i64,
    ) -> Result<bool, StoreError> {
        let now = ids::now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET state = $2, next_attempt_at = $3, response_status = $4, \
             response_body = $5, last_error = $6, claimed_at = NULL, updated_at = $7 WHERE id = $1",
        )
        .bind(&claimed.id)
        .bind(outcome.state)
        .bind(outcome.next_ms)
        .bind(outcome.status)
        .bind(outcome.body.as_deref())
        .bind(outcome.error.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut disabled = false;
        match outcome.state {
            "succeeded" => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1 \
                     AND consecutive_failures <> 0",
                )
                .bind(&claimed.endpoint_id)
                .execute(&mut *tx)
                .await?;
            }
            "failed" => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1 \
                     WHERE id = $1",
                )
                .bind(&claimed.endpoint_id)
                .execute(&mut *tx)
                .await?;
                // Only the outcome whose update flips `enabled` reports it (row lock).
                disabled = sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $3, updated_at = $4 \
                     WHERE id = $1 AND enabled = 1 AND consecutive_failures >= $2",
                )
                .bind(&claimed.endpoint_id)
                .bind(disable_after)
                .bind(format!(
                    "{disable_after} deliveries in a row failed (the last: {})",
                    claimed.id
                ))
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
            }
            _ => {}
        }
        tx.commit().await?;
        Ok(disabled)
    }

    /// Deletes finished deliveries (`succeeded`, `failed`) last touched before `before_ms`.
    pub async fn prune_webhook_deliveries(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM webhook_deliveries WHERE state IN ('succeeded', 'failed') AND updated_at < $1",
        )
        .bind(before_ms)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// Deliveries waiting (due or in flight), and since when the oldest, for the backlog gauge.
    pub async fn webhook_backlog(&self) -> Result<(i64, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE state IN ('due', 'sending')",
        )
        .fetch_one(self.pool())
        .await?;
        Ok((row.get(0), row.get(1)))
    }
}

fn types_json(types: &[String]) -> String {
    serde_json::to_string(types).unwrap_or_else(|_| "[]".to_owned())
}

async fn log_head(conn: &mut sqlx::AnyConnection, account_id: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT last_id FROM event_heads WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(conn)
            .await?
            .unwrap_or(0),
    )
}

async fn read_endpoint(
    conn: &mut sqlx::AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<WebhookEndpoint>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE account_id = $1 AND id = $2"
    )))
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(endpoint))
}
