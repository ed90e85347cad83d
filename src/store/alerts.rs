//! Alerting's records (migrations 0009 and 0011, docs/ALERTS.md): signal counters per scope
//! and when each last counted, each alert's phase
//! (moved by compare-and-set, so evaluators on several nodes send each transition once), the
//! alert history and the notices to destinations with their retry schedule.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{Store, StoreError};
use crate::ids;

/// A phase change an evaluator wants to make: from the state it read (`version`, `None` when
/// there was no row) to `phase`.
pub struct PhaseChange<'a> {
    pub account_id: &'a str,
    pub rule: &'a str,
    pub scope: &'a str,
    pub version: Option<i64>,
    pub phase: &'a str,
    pub value: f64,
    pub now_ms: i64,
}

/// What firing or resolving records, with the change.
pub enum Episode<'a> {
    /// Nothing to send.
    Quiet,
    /// Opens an alert and queues one notice per destination.
    Fired {
        alert: &'a NewAlert,
        notices: Vec<(String, String)>,
    },
    /// Closes the open alert of (rule, scope) and queues the resolve notices.
    Resolved { notices: Vec<(String, String)> },
}

pub struct NewAlert {
    pub id: String,
    pub severity: String,
    pub summary: String,
    pub dedup_key: String,
    pub threshold: f64,
}

/// One alert episode, for the history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alert {
    /// `alr_…`
    pub id: String,
    pub rule: String,
    pub scope: String,
    pub severity: String,
    pub summary: String,
    /// The key PagerDuty deduplicates on; stable for the episode.
    pub dedup_key: String,
    /// The signal's value when it fired.
    pub value: Option<f64>,
    pub threshold: f64,
    /// `firing` or `resolved`.
    pub state: String,
    pub fired_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub deliveries: Vec<AlertDelivery>,
}

/// One notice to one destination and how it went.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertDelivery {
    pub id: String,
    pub destination: String,
    /// `firing` or `resolved`.
    pub transition: String,
    /// `due` (waiting for an attempt), `sending`, `sent`, or `broken` (refused for good; the
    /// destination needs fixing) or `failed` (out of attempts).
    pub state: String,
    pub attempts: i64,
    pub last_code: Option<String>,
    pub last_reason: Option<String>,
    pub updated_at_ms: i64,
}

/// What one node counted of one signal in one scope (`account`, `provider:…`, …) and bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalCount {
    pub account_id: String,
    pub name: &'static str,
    pub scope: String,
    pub bucket_ms: i64,
    pub n: i64,
}

/// A notice a sender claimed for one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedNotice {
    pub id: String,
    pub account_id: String,
    pub destination: String,
    /// The `Notice` as JSON.
    pub notice: String,
    /// Including this one.
    pub attempt: i64,
}

impl Store {
    /// Every rule added over REST, of every account: `(account id, spec JSON)`.
    pub async fn all_alert_rules(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query("SELECT account_id, spec FROM alert_rules ORDER BY account_id, name")
                .fetch_all(self.pool())
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        )
    }

    /// The account's rules added over REST, as spec JSON, by name.
    pub async fn alert_rules(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query("SELECT spec FROM alert_rules WHERE account_id = $1 ORDER BY name")
            .bind(account_id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Adds (`replace: false`) or replaces (`true`) the rule `name` with its audit record.
    /// `false`: adding found the name taken, or replacing found no such rule.
    pub async fn save_alert_rule(
        &self,
        account_id: &str,
        name: &str,
        spec: &str,
        replace: bool,
        record: super::audit::AuditRecord,
    ) -> Result<bool, StoreError> {
        let now = ids::now_ms();
        let mut tx = self.begin_scoped(account_id).await?;
        let before: Option<String> = sqlx::query(
            "UPDATE alert_rules SET updated_at = updated_at WHERE account_id = $1 AND name = $2 RETURNING spec",
        )
        .bind(account_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get(0));
        if before.is_some() != replace {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO alert_rules (account_id, name, spec, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (account_id, name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
        )
        .bind(account_id)
        .bind(name)
        .bind(spec)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_default();
        let mut record = record.after(json(spec));
        if let Some(before) = before {
            record = record.before(json(&before));
        }
        super::audit::append(&mut tx, &record).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes the rule `name` with its audit record; `false` when there is none. Its alert,
    /// if firing, stays in the history as it was.
    pub async fn delete_alert_rule(
        &self,
        account_id: &str,
        name: &str,
        record: super::audit::AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let gone: Option<String> = sqlx::query(
            "DELETE FROM alert_rules WHERE account_id = $1 AND name = $2 RETURNING spec",
        )
        .bind(account_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get(0));
        let Some(gone) = gone else {
            return Ok(false);
        };
        let before = serde_json::from_str::<serde_json::Value>(&gone).unwrap_or_default();
        super::audit::append(&mut tx, &record.before(before)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The latest notice to `destination` of the account: its state, code and reason.
    pub async fn last_notice(
        &self,
        account_id: &str,
        destination: &str,
    ) -> Result<Option<(String, Option<String>, Option<String>)>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let row = sqlx::query(
            "SELECT state, last_code, last_reason FROM alert_deliveries WHERE account_id = $1 \
             AND destination = $2 AND state IN ('sent', 'broken', 'failed') ORDER BY updated_at DESC, id DESC LIMIT 1",
        )
        .bind(account_id)
        .bind(destination)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    /// Adds counts to the shared buckets, and moves each counter's last-seen time on to
    /// `now_ms`.
    pub async fn add_signal_counts(
        &self,
        counts: &[SignalCount],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for c in counts {
            sqlx::query(
                "INSERT INTO signal_counts (account_id, name, scope, bucket_ms, count) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (account_id, name, scope, bucket_ms) DO UPDATE SET count = signal_counts.count + excluded.count",
            )
            .bind(&c.account_id)
            .bind(c.name)
            .bind(&c.scope)
            .bind(c.bucket_ms)
            .bind(c.n)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO signal_seen (account_id, name, scope, last_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (account_id, name, scope) DO UPDATE SET last_ms = CASE \
                 WHEN excluded.last_ms > signal_seen.last_ms THEN excluded.last_ms ELSE signal_seen.last_ms END",
            )
            .bind(&c.account_id)
            .bind(c.name)
            .bind(&c.scope)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The sums of `names` in `scope` since `since_ms` for one account, in the order asked.
    pub async fn signal_sums(
        &self,
        account_id: &str,
        scope: &str,
        names: &[&str],
        since_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let mut out = Vec::with_capacity(names.len());
        let mut tx = self.scoped(account_id).await?;
        for name in names {
            let sum: Option<i64> = sqlx::query(
                "SELECT CAST(SUM(count) AS BIGINT) FROM signal_counts WHERE account_id = $1 AND name = $2 \
                 AND scope = $3 AND bucket_ms >= $4",
            )
            .bind(account_id)
            .bind(*name)
            .bind(scope)
            .bind(since_ms)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
            out.push(sum.unwrap_or(0));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The sums of `names` since `since_ms` in every scope starting with `prefix`
    /// (`provider:`) that counted any of them: scope → sums in the order asked.
    pub async fn signal_sums_per_scope(
        &self,
        account_id: &str,
        prefix: &str,
        names: &[&str],
        since_ms: i64,
    ) -> Result<HashMap<String, Vec<i64>>, StoreError> {
        let mut out: HashMap<String, Vec<i64>> = HashMap::new();
        let mut tx = self.scoped(account_id).await?;
        for (i, name) in names.iter().enumerate() {
            let rows = sqlx::query(
                "SELECT scope, CAST(SUM(count) AS BIGINT) FROM signal_counts WHERE account_id = $1 AND name = $2 \
                 AND scope LIKE $3 AND bucket_ms >= $4 GROUP BY scope",
            )
            .bind(account_id)
            .bind(*name)
            .bind(format!("{prefix}%"))
            .bind(since_ms)
            .fetch_all(&mut *tx)
            .await?;
            for r in rows {
                let sums = out.entry(r.get(0)).or_insert_with(|| vec![0; names.len()]);
                sums[i] = r.get::<Option<i64>, _>(1).unwrap_or(0);
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// When counter `name` last counted, in every scope starting with `prefix`: (scope, ms).
    pub async fn signal_last_seen(
        &self,
        account_id: &str,
        name: &str,
        prefix: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(
            "SELECT scope, last_ms FROM signal_seen WHERE account_id = $1 AND name = $2 AND scope LIKE $3 ORDER BY scope",
        )
        .bind(account_id)
        .bind(name)
        .bind(format!("{prefix}%"))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Drops counter buckets older than `before_ms`.
    pub async fn prune_signal_counts(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM signal_counts WHERE bucket_ms < $1")
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Work waiting per job type, across accounts: how many, and since when the oldest
    /// (`normalize_inbound`: events still `received`; `deliver_outbound`: deliveries not yet
    /// sent or given up; `alert_notice`: notices not yet sent or given up).
    pub async fn job_backlogs(&self) -> Result<Vec<(&'static str, i64, Option<i64>)>, StoreError> {
        let mut out = Vec::with_capacity(3);
        for (job, sql) in [
            (
                "normalize_inbound",
                "SELECT COUNT(*), MIN(received_at) FROM inbound_events WHERE status = 'received'",
            ),
            (
                "deliver_outbound",
                "SELECT COUNT(*), MIN(created_at) FROM outbound_deliveries WHERE state IN ('queued', 'sending', 'retry')",
            ),
            (
                "alert_notice",
                "SELECT COUNT(*), MIN(created_at) FROM alert_deliveries WHERE state IN ('due', 'sending')",
            ),
        ] {
            let row = sqlx::query(sql).fetch_one(self.pool()).await?;
            out.push((job, row.get(0), row.get(1)));
        }
        Ok(out)
    }

    /// Conversations waiting for an agent in the account.
    pub async fn waiting_count(&self, account_id: &str) -> Result<i64, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM conversations WHERE account_id = $1 AND routing_state = 'waiting'",
        )
        .bind(account_id)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        tx.commit().await?;
        Ok(n)
    }

    /// Every alert of a rule that has a row: scope → (phase JSON, version).
    pub async fn alert_phases(
        &self,
        account_id: &str,
        rule: &str,
    ) -> Result<HashMap<String, (String, i64)>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(
            "SELECT scope, phase, version FROM alert_states WHERE account_id = $1 AND rule = $2",
        )
        .bind(account_id)
        .bind(rule)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect())
    }

    /// Moves an alert's phase if nobody moved it since it was read, recording the episode in
    /// the same transaction. `false`: another evaluator got there first and nothing changed.
    pub async fn move_alert(
        &self,
        change: PhaseChange<'_>,
        episode: Episode<'_>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let moved = match change.version {
            None => sqlx::query(
                "INSERT INTO alert_states (account_id, rule, scope, phase, version, value, updated_at) \
                 VALUES ($1, $2, $3, $4, 1, $5, $6) ON CONFLICT (account_id, rule, scope) DO NOTHING",
            )
            .bind(change.account_id)
            .bind(change.rule)
            .bind(change.scope)
            .bind(change.phase)
            .bind(change.value)
            .bind(change.now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            Some(version) => sqlx::query(
                "UPDATE alert_states SET phase = $4, version = version + 1, value = $5, updated_at = $6 \
                 WHERE account_id = $1 AND rule = $2 AND scope = $3 AND version = $7",
            )
            .bind(change.account_id)
            .bind(change.rule)
            .bind(change.scope)
            .bind(change.phase)
            .bind(change.value)
            .bind(change.now_ms)
            .bind(version)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if moved == 0 {
            return Ok(false);
        }
        let (alert_id, transition, notices) = match episode {
            Episode::Quiet => {
                tx.commit().await?;
                return Ok(true);
            }
            Episode::Fired { alert, notices } => {
                sqlx::query(
                    "INSERT INTO alerts (id, account_id, rule, scope, severity, summary, dedup_key, value, \
                     threshold, state, fired_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'firing', $10)",
                )
                .bind(&alert.id)
                .bind(change.account_id)
                .bind(change.rule)
                .bind(change.scope)
                .bind(&alert.severity)
                .bind(&alert.summary)
                .bind(&alert.dedup_key)
                .bind(change.value)
                .bind(alert.threshold)
                .bind(change.now_ms)
                .execute(&mut *tx)
                .await?;
                (alert.id.clone(), "firing", notices)
            }
            Episode::Resolved { notices } => {
                let open = sqlx::query(
                    "UPDATE alerts SET state = 'resolved', resolved_at = $4 WHERE account_id = $1 \
                     AND rule = $2 AND scope = $3 AND state = 'firing' RETURNING id",
                )
                .bind(change.account_id)
                .bind(change.rule)
                .bind(change.scope)
                .bind(change.now_ms)
                .fetch_optional(&mut *tx)
                .await?;
                match open {
                    Some(row) => (row.get::<String, _>(0), "resolved", notices),
                    None => {
                        tx.commit().await?;
                        return Ok(true);
                    }
                }
            }
        };
        for (destination, notice) in notices {
            sqlx::query(
                "INSERT INTO alert_deliveries (id, account_id, alert_id, destination, transition, notice, \
                 state, next_attempt_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'due', $7, $7, $7)",
            )
            .bind(ids::new(ids::ALERT_DELIVERY))
            .bind(change.account_id)
            .bind(&alert_id)
            .bind(&destination)
            .bind(transition)
            .bind(&notice)
            .bind(change.now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Claims up to `limit` notices that are due (or whose claim is older than
    /// `stale_before_ms`: a sender that died), counting the attempt. Each row goes to one
    /// sender only. Oldest first, so a destination gets its trigger before its resolve.
    pub async fn claim_notices(
        &self,
        now_ms: i64,
        stale_before_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedNotice>, StoreError> {
        let mut tx = self.begin().await?;
        let ids: Vec<String> = sqlx::query(
            "SELECT id FROM alert_deliveries WHERE (state = 'due' AND next_attempt_at <= $1) \
             OR (state = 'sending' AND claimed_at < $2) ORDER BY id LIMIT $3",
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
                "UPDATE alert_deliveries SET state = 'sending', claimed_at = $2, attempts = attempts + 1, \
                 updated_at = $2 WHERE id = $1 AND ((state = 'due' AND next_attempt_at <= $2) \
                 OR (state = 'sending' AND claimed_at < $3)) \
                 RETURNING id, account_id, destination, notice, attempts",
            )
            .bind(&id)
            .bind(now_ms)
            .bind(stale_before_ms)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = row {
                claimed.push(ClaimedNotice {
                    id: r.get(0),
                    account_id: r.get(1),
                    destination: r.get(2),
                    notice: r.get(3),
                    attempt: r.get(4),
                });
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records how an attempt went: `sent`, `due` again at `next_ms`, `broken` or `failed`.
    pub async fn notice_outcome(
        &self,
        id: &str,
        state: &str,
        next_ms: i64,
        code: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alert_deliveries SET state = $2, next_attempt_at = $3, last_code = $4, \
             last_reason = $5, claimed_at = NULL, updated_at = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(next_ms)
        .bind(code)
        .bind(reason)
        .bind(ids::now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Alert episodes, newest first, with their deliveries; only `state` ones when given.
    pub async fn list_alerts(
        &self,
        account_id: &str,
        state: Option<&str>,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(
            "SELECT id, rule, scope, severity, summary, dedup_key, value, threshold, state, fired_at, \
             resolved_at FROM alerts WHERE account_id = $1 AND ($2 IS NULL OR state = $2) \
             AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(account_id)
        .bind(state)
        .bind(cursor)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut alerts: Vec<Alert> = rows.iter().map(alert).collect();
        for a in &mut alerts {
            a.deliveries = sqlx::query(
                "SELECT id, destination, transition, state, attempts, last_code, last_reason, updated_at \
                 FROM alert_deliveries WHERE account_id = $1 AND alert_id = $2 ORDER BY id",
            )
            .bind(account_id)
            .bind(&a.id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| AlertDelivery {
                id: r.get(0),
                destination: r.get(1),
                transition: r.get(2),
                state: r.get(3),
                attempts: r.get(4),
                last_code: r.get(5),
                last_reason: r.get(6),
                updated_at_ms: r.get(7),
            })
            .collect();
        }
        tx.commit().await?;
        Ok(alerts)
    }
}

fn alert(r: &AnyRow) -> Alert {
    Alert {
        id: r.get(0),
        rule: r.get(1),
        scope: r.get(2),
        severity: r.get(3),
        summary: r.get(4),
        dedup_key: r.get(5),
        value: r.get(6),
        threshold: r.get(7),
        state: r.get(8),
        fired_at_ms: r.get(9),
        resolved_at_ms: r.get(10),
        deliveries: Vec::new(),
    }
}
