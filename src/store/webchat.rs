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

    /// A visitor's public messages in one inbox (theirs and the agents' replies, never notes),
    /// the newest `limit`, oldest first, with the account's event-log head read in the same
    /// transaction: a widget that resumes from that id misses nothing and repeats nothing.
    pub async fn visitor_messages(
        &self,
        account_id: &str,
        inbox_id: &str,
        contact_id: &str,
        limit: i64,
    ) -> Result<(Vec<crate::store::conversations::Message>, i64), StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let head: Option<i64> =
            sqlx::query_scalar("SELECT last_id FROM event_heads WHERE account_id = $1")
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
        let mut rows = sqlx::query(concat!(
            "SELECT ",
            crate::store::conversations::message_columns!(),
            " FROM messages WHERE account_id = $1 AND direction IN ('inbound', 'outbound') \
             AND conversation_id IN (SELECT id FROM conversations \
             WHERE account_id = $1 AND inbox_id = $2 AND contact_id = $3) \
             ORDER BY sent_at DESC, id DESC LIMIT $4"
        ))
        .bind(account_id)
        .bind(inbox_id)
        .bind(contact_id)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.reverse();
        Ok((
            rows.iter()
                .map(crate::store::conversations::message)
                .collect(),
            head.unwrap_or(0),
        ))
    }
}
