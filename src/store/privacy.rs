//! Data-subject erasure: removes a contact's personal data and every message's content while
//! the conversation structure (ids, times, statuses, assignments) and the audit trail stay.

use serde::Serialize;
use sqlx::Row;

use super::audit::{self, AuditRecord};
use super::{Store, StoreError};
use crate::ids;

/// What an erasure touched (counts only: the record itself must hold no personal data).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Erasure {
    pub contact_id: String,
    pub conversations: i64,
    pub messages_erased: i64,
    pub raw_events_redacted: i64,
    pub identities_removed: i64,
    pub erased_at_ms: i64,
}

/// What erased content reads as.
pub const ERASED_CONTENT: &str = r#"{"type":"erased"}"#;
/// What an erased raw provider event's body reads as.
pub const ERASED_BODY: &[u8] = br#"{"erased":true}"#;

impl Store {
    /// Erases the contact in one transaction with its audit record. `None` when there is no
    /// such contact in the account. Erasing twice is harmless (and audited twice).
    pub async fn erase_contact(
        &self,
        account_id: &str,
        contact_id: &str,
        record: AuditRecord,
    ) -> Result<Option<Erasure>, StoreError> {
        let now = ids::now_ms();
        let mut tx = self.begin_scoped(account_id).await?;
        let exists = sqlx::query("SELECT 1 FROM contacts WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(contact_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let conversations: i64 = sqlx::query(
            "SELECT COUNT(*) FROM conversations WHERE account_id = $1 AND contact_id = $2",
        )
        .bind(account_id)
        .bind(contact_id)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        // Raw provider bodies that carried this contact's messages. A WhatsApp batch may also
        // carry other contacts' messages; the whole body is redacted (their normalized messages
        // are already stored, so nothing of theirs is lost).
        let raw_events_redacted = sqlx::query(
            "UPDATE inbound_events SET body = $1 WHERE account_id = $2 AND id IN \
             (SELECT inbound_event_id FROM messages WHERE account_id = $2 AND conversation_id IN \
             (SELECT id FROM conversations WHERE account_id = $2 AND contact_id = $3))",
        )
        .bind(ERASED_BODY.to_vec())
        .bind(account_id)
        .bind(contact_id)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
        let messages_erased = sqlx::query(
            "UPDATE messages SET content = $1, content_type = 'erased', raw = NULL, error = NULL \
             WHERE account_id = $2 AND conversation_id IN \
             (SELECT id FROM conversations WHERE account_id = $2 AND contact_id = $3)",
        )
        .bind(ERASED_CONTENT)
        .bind(account_id)
        .bind(contact_id)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
        sqlx::query(
            "UPDATE conversations SET first_message = NULL WHERE account_id = $1 AND contact_id = $2",
        )
        .bind(account_id)
        .bind(contact_id)
        .execute(&mut *tx)
        .await?;
        // The live event log holds message texts for consoles to resume from: the contact's
        // events go (a console resuming across them simply does not get them back).
        sqlx::query("DELETE FROM events WHERE account_id = $1 AND contact_id = $2")
            .bind(account_id)
            .bind(contact_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE webchat_sessions SET identifier = NULL, name = NULL, email = NULL \
             WHERE account_id = $1 AND visitor_id IN (SELECT value FROM contact_identities \
             WHERE account_id = $1 AND contact_id = $2 AND kind = 'web_visitor')",
        )
        .bind(account_id)
        .bind(contact_id)
        .execute(&mut *tx)
        .await?;
        let identities_removed =
            sqlx::query("DELETE FROM contact_identities WHERE account_id = $1 AND contact_id = $2")
                .bind(account_id)
                .bind(contact_id)
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64;
        sqlx::query(
            "UPDATE contacts SET name = NULL, phone = NULL, email = NULL, attributes = '{}', erased_at = $1, \
             updated_at = $1 WHERE account_id = $2 AND id = $3",
        )
        .bind(now)
        .bind(account_id)
        .bind(contact_id)
        .execute(&mut *tx)
        .await?;
        let erasure = Erasure {
            contact_id: contact_id.to_owned(),
            conversations,
            messages_erased,
            raw_events_redacted,
            identities_removed,
            erased_at_ms: now,
        };
        audit::append(&mut tx, &record.after(&erasure)).await?;
        tx.commit().await?;
        Ok(Some(erasure))
    }
}
