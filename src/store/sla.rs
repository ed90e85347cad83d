//! SLA policies and the warnings and breaches recorded against conversations (migration 0009,
//! `crate::sla`).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::{self, AuditRecord};
use super::{Store, StoreError};
use crate::ids;
use crate::sla::{Metric, Moments, Policy};

const POLICY_COLUMNS: &str = "id, name, inbox_id, team_id, first_response_secs, next_response_secs, \
     resolution_secs, warning_secs, hours, created_at, updated_at";

fn policy(r: &AnyRow) -> Policy {
    let hours: Option<String> = r.get(8);
    Policy {
        id: r.get(0),
        name: r.get(1),
        inbox_id: r.get(2),
        team_id: r.get(3),
        first_response_secs: r.get(4),
        next_response_secs: r.get(5),
        resolution_secs: r.get(6),
        warning_secs: r.get(7),
        business_hours: hours.and_then(|h| serde_json::from_str(&h).ok()),
        created_at_ms: r.get(9),
        updated_at_ms: r.get(10),
    }
}

/// An open conversation a policy may cover, with the moments its clocks read.
#[derive(Debug, Clone)]
pub struct Watched {
    pub id: String,
    pub inbox_id: String,
    pub team_id: Option<String>,
    pub moments: Moments,
}

impl Store {
    pub async fn list_sla_policies(&self, account_id: &str) -> Result<Vec<Policy>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {POLICY_COLUMNS} FROM sla_policies WHERE account_id = $1 ORDER BY id"
        )))
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(policy).collect())
    }

    /// Accounts that have at least one policy.
    pub async fn sla_accounts(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query("SELECT DISTINCT account_id FROM sla_policies")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Writes `p` (a new one, or a replacement when `replace`) with its audit record. `Ok(None)`:
    /// the name is taken; `Ok(Some(false))`: replacing found no such policy.
    pub async fn save_sla_policy(
        &self,
        account_id: &str,
        p: &Policy,
        replace: bool,
        record: AuditRecord,
    ) -> Result<Option<bool>, StoreError> {
        let hours = p
            .business_hours
            .as_ref()
            .map(|h| serde_json::to_string(h).unwrap_or_default());
        let mut tx = self.begin_scoped(account_id).await?;
        let before = if replace {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE sla_policies SET updated_at = updated_at WHERE account_id = $1 AND id = $2 \
                 RETURNING {POLICY_COLUMNS}"
            )))
            .bind(account_id)
            .bind(&p.id)
            .fetch_optional(&mut *tx)
            .await?;
            match row {
                Some(r) => Some(policy(&r)),
                None => return Ok(Some(false)),
            }
        } else {
            None
        };
        let written = if replace {
            sqlx::query(
                "UPDATE sla_policies SET name = $3, inbox_id = $4, team_id = $5, first_response_secs = $6, \
                 next_response_secs = $7, resolution_secs = $8, warning_secs = $9, hours = $10, updated_at = $11 \
                 WHERE account_id = $1 AND id = $2",
            )
        } else {
            sqlx::query(
                "INSERT INTO sla_policies (account_id, id, name, inbox_id, team_id, first_response_secs, \
                 next_response_secs, resolution_secs, warning_secs, hours, updated_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
            )
        }
        .bind(account_id)
        .bind(&p.id)
        .bind(&p.name)
        .bind(p.inbox_id.as_deref())
        .bind(p.team_id.as_deref())
        .bind(p.first_response_secs)
        .bind(p.next_response_secs)
        .bind(p.resolution_secs)
        .bind(p.warning_secs)
        .bind(hours.as_deref())
        .bind(p.updated_at_ms)
        .execute(&mut *tx)
        .await;
        match written {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Ok(None),
            other => {
                other?;
            }
        }
        let mut record = record.after(p);
        if let Some(before) = before {
            record = record.before(before);
        }
        audit::append(&mut tx, &record).await?;
        tx.commit().await?;
        Ok(Some(true))
    }

    /// Removes a policy with its audit record; `false` when there is none.
    pub async fn delete_sla_policy(
        &self,
        account_id: &str,
        id: &str,
        record: AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM sla_policies WHERE account_id = $1 AND id = $2 RETURNING {POLICY_COLUMNS}"
        )))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(gone) = row.as_ref().map(policy) else {
            return Ok(false);
        };
        audit::append(&mut tx, &record.before(gone)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Conversations of the account whose clocks may still run (not resolved), newest first,
    /// at most `limit`; with `waiting`, only those waiting for an agent; with `only`, that one
    /// conversation whatever its status.
    pub async fn sla_watched(
        &self,
        account_id: &str,
        only: Option<&str>,
        waiting: bool,
        limit: i64,
    ) -> Result<Vec<Watched>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(
            "SELECT c.id, c.inbox_id, c.team_id, c.created_at, c.resolved_at, \
             (SELECT MIN(sent_at) FROM messages m WHERE m.conversation_id = c.id AND m.direction = 'inbound'), \
             (SELECT MIN(created_at) FROM messages m WHERE m.conversation_id = c.id AND m.direction = 'outbound'), \
             (SELECT MAX(created_at) FROM messages m WHERE m.conversation_id = c.id AND m.direction = 'outbound') \
             FROM conversations c WHERE c.account_id = $1 AND ($2 IS NULL OR c.id = $2) \
             AND ($2 IS NOT NULL OR c.status <> 'resolved') \
             AND ($4 = 0 OR c.routing_state = 'waiting') ORDER BY c.id DESC LIMIT $3",
        )
        .bind(account_id)
        .bind(only)
        .bind(limit)
        .bind(i64::from(waiting))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.get(0);
            let last_outbound: Option<i64> = r.get(7);
            let after: Option<i64> = match last_outbound {
                Some(last) => sqlx::query(
                    "SELECT MIN(created_at) FROM messages WHERE conversation_id = $1 \
                     AND direction = 'inbound' AND created_at > $2",
                )
                .bind(&id)
                .bind(last)
                .fetch_one(&mut *tx)
                .await?
                .get(0),
                None => None,
            };
            out.push(Watched {
                inbox_id: r.get(1),
                team_id: r.get(2),
                moments: Moments {
                    created_at: r.get(3),
                    resolved_at: r.get(4),
                    first_inbound_at: r.get(5),
                    first_outbound_at: r.get(6),
                    last_outbound_at: last_outbound,
                    inbound_after_last_reply_at: after,
                },
                id,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records a warning or breach once; `true` when this call recorded it.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_sla_event(
        &self,
        account_id: &str,
        conversation_id: &str,
        policy_id: &str,
        metric: Metric,
        kind: &str,
        started_at: i64,
        due_at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO sla_events (id, account_id, conversation_id, policy_id, metric, kind, started_at, \
             due_at, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (conversation_id, policy_id, metric, kind, started_at) DO NOTHING",
        )
        .bind(ids::new(ids::SLA_EVENT))
        .bind(account_id)
        .bind(conversation_id)
        .bind(policy_id)
        .bind(metric.as_str())
        .bind(kind)
        .bind(started_at)
        .bind(due_at)
        .bind(ids::now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
