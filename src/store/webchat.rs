//! Web-chat visitor sessions: the durable half of the visitor token.

use sqlx::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone)]
pub struct VisitorSession {
    pub id: String,
    pub account_id: String,
    pub inbox_id: String,
    pub visitor_id: String,
    pub identifier: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub expires_at_ms: i64,
}

impl Store {
    pub async fn create_visitor_session(
        &self,
        session: &VisitorSession,
        token_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webchat_sessions (id, account_id, inbox_id, visitor_id, identifier, name, \
             email, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&session.id)
        .bind(&session.account_id)
        .bind(&session.inbox_id)
        .bind(&session.visitor_id)
        .bind(session.identifier.as_deref())
        .bind(session.name.as_deref())
        .bind(session.email.as_deref())
        .bind(token_hash)
        .bind(now)
        .bind(session.expires_at_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The live session behind a token hash for `inbox_id`.
    pub async fn visitor_session(
        &self,
        inbox_id: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<VisitorSession>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, inbox_id, visitor_id, identifier, name, email, expires_at \
             FROM webchat_sessions WHERE token_hash = $1 AND inbox_id = $2 AND expires_at > $3",
        )
        .bind(token_hash)
        .bind(inbox_id)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| VisitorSession {
            id: r.get(0),
            account_id: r.get(1),
            inbox_id: r.get(2),
            visitor_id: r.get(3),
            identifier: r.get(4),
            name: r.get(5),
            email: r.get(6),
            expires_at_ms: r.get(7),
        }))
    }
}
