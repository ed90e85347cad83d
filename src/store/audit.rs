//! The audit log: append-only (the database refuses UPDATE and DELETE, see migration 0002).
//!
//! Admin mutations write their record in the same transaction as the change, through
//! [`append`], so a change without its record (or the reverse) cannot be committed.

use serde::Serialize;
use serde_json::Value;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::access::ClientMeta;
use crate::ids;

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(String),
    ApiKey(String),
    /// The CLI or the hub itself.
    System,
    /// A failed sign-in with an unknown email.
    Anonymous,
}

impl Actor {
    pub fn kind(&self) -> &'static str {
        match self {
            Actor::User(_) => "user",
            Actor::ApiKey(_) => "api_key",
            Actor::System => "system",
            Actor::Anonymous => "anonymous",
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            Actor::User(id) | Actor::ApiKey(id) => Some(id),
            Actor::System | Actor::Anonymous => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    pub id: String,
    pub account_id: Option<String>,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub correlation_id: Option<String>,
    pub at: i64,
}

impl AuditRecord {
    pub fn new(
        account_id: Option<String>,
        actor: Actor,
        action: &str,
        entity_type: &str,
        entity_id: Option<&str>,
        meta: &ClientMeta,
    ) -> Self {
        let correlation = crate::error::correlation_id();
        AuditRecord {
            id: ids::new(ids::AUDIT),
            account_id,
            actor_type: actor.kind().to_owned(),
            actor_id: actor.id().map(str::to_owned),
            action: action.to_owned(),
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.map(str::to_owned),
            before: None,
            after: None,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            correlation_id: (correlation != "none").then_some(correlation),
            at: ids::now_ms(),
        }
    }

    pub fn before(mut self, value: impl Serialize) -> Self {
        self.before = serde_json::to_value(value).ok();
        self
    }

    pub fn after(mut self, value: impl Serialize) -> Self {
        self.after = serde_json::to_value(value).ok();
        self
    }

    pub fn entity(mut self, id: &str) -> Self {
        self.entity_id = Some(id.to_owned());
        self
    }
}

/// Filters for [`Store::list_audit`].
#[derive(Debug, Default)]
pub struct AuditFilter {
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// Appends one record on the given connection (normally the mutation's own transaction).
pub async fn append(conn: &mut AnyConnection, record: &AuditRecord) -> Result<(), StoreError> {
    let json = |v: &Option<Value>| v.as_ref().map(Value::to_string);
    sqlx::query(
        "INSERT INTO audit_log (id, account_id, actor_type, actor_id, action, entity_type, \
         entity_id, before, after, ip, user_agent, correlation_id, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&record.id)
    .bind(record.account_id.as_deref())
    .bind(&record.actor_type)
    .bind(record.actor_id.as_deref())
    .bind(&record.action)
    .bind(&record.entity_type)
    .bind(record.entity_id.as_deref())
    .bind(json(&record.before))
    .bind(json(&record.after))
    .bind(record.ip.as_deref())
    .bind(record.user_agent.as_deref())
    .bind(record.correlation_id.as_deref())
    .bind(record.at)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Appends a record on its own (for events that change nothing else, like a failed login).
    pub async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        append(&mut conn, record).await
    }

    /// Newest first; `cursor` is the last id of the previous page.
    pub async fn list_audit(
        &self,
        account_id: &str,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, actor_type, actor_id, action, entity_type, entity_id, \
             before, after, ip, user_agent, correlation_id, at FROM audit_log \
             WHERE account_id = $1 AND ($2 IS NULL OR actor_id = $2) AND ($3 IS NULL OR action = $3) \
             AND ($4 IS NULL OR entity_type = $4) AND ($5 IS NULL OR entity_id = $5) \
             AND ($6 IS NULL OR at >= $6) AND ($7 IS NULL OR at < $7) AND ($8 IS NULL OR id < $8) \
             ORDER BY id DESC LIMIT $9",
        )
        .bind(account_id)
        .bind(filter.actor_id.as_deref())
        .bind(filter.action.as_deref())
        .bind(filter.entity_type.as_deref())
        .bind(filter.entity_id.as_deref())
        .bind(filter.since_ms)
        .bind(filter.until_ms)
        .bind(cursor)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                id: r.get(0),
                account_id: r.get(1),
                actor_type: r.get(2),
                actor_id: r.get(3),
                action: r.get(4),
                entity_type: r.get(5),
                entity_id: r.get(6),
                before: json(r.get(7)),
                after: json(r.get(8)),
                ip: r.get(9),
                user_agent: r.get(10),
                correlation_id: r.get(11),
                at: r.get(12),
            })
            .collect())
    }
}
