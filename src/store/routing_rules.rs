//! Routing rules (migration 0005): an ordered list per account; the first rule whose match
//! expression holds decides a conversation's steps. Expressions are compiled by the HTTP layer
//! before anything is written here; this module only stores them.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};

/// One step of a rule: who may take the conversation, and for how long to try.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub target: String,
    /// 0–100.
    pub priority: i64,
    /// Seconds before the next step; `None` (last step only): no timeout.
    pub timeout_secs: Option<i64>,
}

/// A stored rule, also the audit record's before/after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutingRule {
    pub id: String,
    pub position: i64,
    pub name: String,
    #[serde(rename = "match")]
    pub match_expr: String,
    pub steps: Vec<Step>,
    /// `auto` or `offer`.
    pub mode: String,
    pub offer_timeout_secs: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `SELECT <every column> FROM routing_rules <rest>`, as a static string.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT id, position, name, match_expr, steps, mode, offer_timeout_secs, \
             created_at, updated_at FROM routing_rules ",
            $rest
        )
    };
}

fn rule(r: &AnyRow) -> Result<RoutingRule, StoreError> {
    let steps: String = r.get(4);
    let steps = serde_json::from_str(&steps).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(RoutingRule {
        id: r.get(0),
        position: r.get(1),
        name: r.get(2),
        match_expr: r.get(3),
        steps,
        mode: r.get(5),
        offer_timeout_secs: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
    })
}

fn steps_json(steps: &[Step]) -> Result<String, StoreError> {
    serde_json::to_string(steps).map_err(|e| StoreError::Sql(sqlx::Error::Encode(e.into())))
}

/// Every rule of the account by position (then id), read on `conn`.
pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Vec<RoutingRule>, StoreError> {
    sqlx::query(select!("WHERE account_id = $1 ORDER BY position, id"))
        .bind(account_id)
        .fetch_all(conn)
        .await?
        .iter()
        .map(rule)
        .collect()
}

/// One rule, read on `conn`.
pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<RoutingRule>, StoreError> {
    sqlx::query(select!("WHERE account_id = $1 AND id = $2"))
        .bind(account_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(rule)
        .transpose()
}

/// Takes the row locks of every rule of the account (a no-op UPDATE, as `lock_row` does), so
/// inserts, reorders and edits serialise and each audit "before" is exact.
pub async fn lock_all(conn: &mut AnyConnection, account_id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE routing_rules SET position = position WHERE account_id = $1")
        .bind(account_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts `rule` on `conn` at the end of the account's list; returns its position.
pub async fn insert(
    conn: &mut AnyConnection,
    account_id: &str,
    rule: &RoutingRule,
) -> Result<i64, StoreError> {
    lock_all(&mut *conn, account_id).await?;
    let last: Option<i64> =
        sqlx::query("SELECT MAX(position) FROM routing_rules WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&mut *conn)
            .await?
            .get(0);
    let position = last.unwrap_or(0) + 1;
    sqlx::query(
        "INSERT INTO routing_rules (id, account_id, position, name, match_expr, steps, mode, \
         offer_timeout_secs, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&rule.id)
    .bind(account_id)
    .bind(position)
    .bind(&rule.name)
    .bind(&rule.match_expr)
    .bind(steps_json(&rule.steps)?)
    .bind(&rule.mode)
    .bind(rule.offer_timeout_secs)
    .bind(rule.created_at)
    .bind(rule.updated_at)
    .execute(conn)
    .await?;
    Ok(position)
}

/// Writes every editable field of `rule` (not its position) on `conn`.
pub async fn update(
    conn: &mut AnyConnection,
    account_id: &str,
    rule: &RoutingRule,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE routing_rules SET name = $3, match_expr = $4, steps = $5, mode = $6, \
         offer_timeout_secs = $7, updated_at = $8 WHERE account_id = $1 AND id = $2",
    )
    .bind(account_id)
    .bind(&rule.id)
    .bind(&rule.name)
    .bind(&rule.match_expr)
    .bind(steps_json(&rule.steps)?)
    .bind(&rule.mode)
    .bind(rule.offer_timeout_secs)
    .bind(rule.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes one rule on `conn`; false when there was none.
pub async fn delete(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM routing_rules WHERE account_id = $1 AND id = $2")
        .bind(account_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets positions 1, 2, … in the order of `ids` on `conn` (the caller checked they are
/// exactly the account's rules).
pub async fn set_order(
    conn: &mut AnyConnection,
    account_id: &str,
    ids: &[String],
    now_ms: i64,
) -> Result<(), StoreError> {
    for (i, id) in ids.iter().enumerate() {
        sqlx::query(
            "UPDATE routing_rules SET position = $3, updated_at = $4 \
             WHERE account_id = $1 AND id = $2",
        )
        .bind(account_id)
        .bind(id)
        .bind(i as i64 + 1)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Every rule of the account by position.
    pub async fn list_routing_rules(
        &self,
        account_id: &str,
    ) -> Result<Vec<RoutingRule>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rules = list(&mut tx, account_id).await?;
        tx.commit().await?;
        Ok(rules)
    }

    /// One rule of the account, or None.
    pub async fn get_routing_rule(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<RoutingRule>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let found = get(&mut tx, account_id, id).await?;
        tx.commit().await?;
        Ok(found)
    }
}
