//! What agents reply with besides free text (migration 0008): the account's canned responses
//! (saved replies with `{{variables}}`) and the message templates each inbox may send, as
//! approved on the provider's side. The reply endpoint reads them; admins change them, each
//! change audited in its own transaction.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::audit::{self, AuditRecord};
use super::{Store, StoreError};

/// A saved reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CannedResponse {
    /// `cnd_…`
    pub id: String,
    /// What an agent types to find it (`shipping-delay`); unique in the account.
    pub short_code: String,
    /// The text, with `{{variables}}` filled in when it is used (docs/OUTBOUND.md).
    pub body: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A message template an inbox may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Template {
    /// `tpl_…`
    pub id: String,
    pub inbox_id: String,
    /// WhatsApp: the template's name as approved by Meta. SMS (Twilio): the Content SID
    /// (`HX…`).
    pub name: String,
    /// WhatsApp language code (`en_US`); for Twilio, a label of the Content template's language.
    pub language: String,
    /// How many positional body parameters (`{{1}}`, `{{2}}`, …) a send must fill.
    pub parameters: i64,
    /// The approved text, for agents to read; `{{n}}` marks parameter n.
    pub body: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What a write that can collide with a unique key did.
#[derive(Debug)]
pub enum Saved<T> {
    Done(T),
    /// The unique key (short code; inbox, name and language) belongs to another row.
    Taken,
    /// No such row in the account.
    Missing,
}

const CANNED_COLUMNS: &str = "id, short_code, body, created_at, updated_at";
const TEMPLATE_COLUMNS: &str =
    "id, inbox_id, name, language, parameters, body, created_at, updated_at";

fn canned(row: &AnyRow) -> CannedResponse {
    CannedResponse {
        id: row.get(0),
        short_code: row.get(1),
        body: row.get(2),
        created_at_ms: row.get(3),
        updated_at_ms: row.get(4),
    }
}

fn template(row: &AnyRow) -> Template {
    Template {
        id: row.get(0),
        inbox_id: row.get(1),
        name: row.get(2),
        language: row.get(3),
        parameters: row.get(4),
        body: row.get(5),
        created_at_ms: row.get(6),
        updated_at_ms: row.get(7),
    }
}

/// A unique violation is a value, anything else an error.
fn taken<T>(result: Result<T, sqlx::Error>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// Canned responses by id, after `cursor`; only short codes starting with `prefix` when
    /// given (what a console's "/" picker asks for).
    pub async fn list_canned(
        &self,
        account_id: &str,
        prefix: Option<&str>,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CannedResponse>, StoreError> {
        let sql = format!(
            "SELECT {CANNED_COLUMNS} FROM canned_responses WHERE account_id = $1 \
             AND ($2 IS NULL OR substr(short_code, 1, length($2)) = $2) \
             AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
        );
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .bind(prefix)
            .bind(cursor)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(canned).collect())
    }

    /// One canned response by its id (`cnd_…`) or its short code.
    pub async fn find_canned(
        &self,
        account_id: &str,
        id_or_short_code: &str,
    ) -> Result<Option<CannedResponse>, StoreError> {
        let sql = format!(
            "SELECT {CANNED_COLUMNS} FROM canned_responses WHERE account_id = $1 \
             AND (id = $2 OR short_code = $2)"
        );
        let mut tx = self.scoped(account_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .bind(id_or_short_code)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(canned))
    }

    /// Adds `c` with its audit record; `Taken` when the short code is in use.
    pub async fn create_canned(
        &self,
        account_id: &str,
        c: CannedResponse,
        record: AuditRecord,
    ) -> Result<Saved<CannedResponse>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let inserted = taken(
            sqlx::query(
                "INSERT INTO canned_responses (id, account_id, short_code, body, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(&c.id)
            .bind(account_id)
            .bind(&c.short_code)
            .bind(&c.body)
            .bind(c.created_at_ms)
            .execute(&mut *tx)
            .await,
        )?;
        if inserted.is_none() {
            return Ok(Saved::Taken);
        }
        audit::append(&mut tx, &record.after(&c)).await?;
        tx.commit().await?;
        Ok(Saved::Done(c))
    }

    /// Replaces the short code and body of `id`, auditing before and after.
    pub async fn update_canned(
        &self,
        account_id: &str,
        id: &str,
        short_code: &str,
        body: &str,
        now_ms: i64,
        record: AuditRecord,
    ) -> Result<Saved<CannedResponse>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let before = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE canned_responses SET updated_at = updated_at WHERE account_id = $1 AND id = $2 \
             RETURNING {CANNED_COLUMNS}"
        )))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before.as_ref().map(canned) else {
            return Ok(Saved::Missing);
        };
        let updated = taken(
            sqlx::query(
                "UPDATE canned_responses SET short_code = $3, body = $4, updated_at = $5 \
                 WHERE account_id = $1 AND id = $2",
            )
            .bind(account_id)
            .bind(id)
            .bind(short_code)
            .bind(body)
            .bind(now_ms)
            .execute(&mut *tx)
            .await,
        )?;
        if updated.is_none() {
            return Ok(Saved::Taken);
        }
        let after = CannedResponse {
            short_code: short_code.to_owned(),
            body: body.to_owned(),
            updated_at_ms: now_ms,
            ..before.clone()
        };
        audit::append(&mut tx, &record.before(&before).after(&after)).await?;
        tx.commit().await?;
        Ok(Saved::Done(after))
    }

    /// Removes `id`, auditing what it was; `None` when there is no such canned response.
    pub async fn delete_canned(
        &self,
        account_id: &str,
        id: &str,
        record: AuditRecord,
    ) -> Result<Option<CannedResponse>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM canned_responses WHERE account_id = $1 AND id = $2 \
             RETURNING {CANNED_COLUMNS}"
        )))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(gone) = row.as_ref().map(canned) else {
            return Ok(None);
        };
        audit::append(&mut tx, &record.before(&gone)).await?;
        tx.commit().await?;
        Ok(Some(gone))
    }

    /// Templates by id, after `cursor`, of one inbox when given.
    pub async fn list_templates(
        &self,
        account_id: &str,
        inbox_id: Option<&str>,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Template>, StoreError> {
        let sql = format!(
            "SELECT {TEMPLATE_COLUMNS} FROM message_templates WHERE account_id = $1 \
             AND ($2 IS NULL OR inbox_id = $2) AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
        );
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .bind(inbox_id)
            .bind(cursor)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows.iter().map(template).collect())
    }

    pub async fn get_template(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<Template>, StoreError> {
        let sql = format!(
            "SELECT {TEMPLATE_COLUMNS} FROM message_templates WHERE account_id = $1 AND id = $2"
        );
        let mut tx = self.scoped(account_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(template))
    }

    /// The template `name` in `language` that `inbox_id` may send.
    pub async fn find_template(
        &self,
        account_id: &str,
        inbox_id: &str,
        name: &str,
        language: &str,
    ) -> Result<Option<Template>, StoreError> {
        let sql = format!(
            "SELECT {TEMPLATE_COLUMNS} FROM message_templates WHERE account_id = $1 \
             AND inbox_id = $2 AND name = $3 AND language = $4"
        );
        let mut tx = self.scoped(account_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .bind(inbox_id)
            .bind(name)
            .bind(language)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.as_ref().map(template))
    }

    /// Adds `t` with its audit record; `Taken` when the inbox has the name in that language.
    pub async fn create_template(
        &self,
        account_id: &str,
        t: Template,
        record: AuditRecord,
    ) -> Result<Saved<Template>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let inserted = taken(
            sqlx::query(
                "INSERT INTO message_templates (id, account_id, inbox_id, name, language, \
                 parameters, body, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            )
            .bind(&t.id)
            .bind(account_id)
            .bind(&t.inbox_id)
            .bind(&t.name)
            .bind(&t.language)
            .bind(t.parameters)
            .bind(t.body.as_deref())
            .bind(t.created_at_ms)
            .execute(&mut *tx)
            .await,
        )?;
        if inserted.is_none() {
            return Ok(Saved::Taken);
        }
        audit::append(&mut tx, &record.after(&t)).await?;
        tx.commit().await?;
        Ok(Saved::Done(t))
    }

    /// Replaces what `id` says (name, language, parameters, body; the inbox stays), auditing
    /// before and after.
    pub async fn update_template(
        &self,
        account_id: &str,
        id: &str,
        change: Template,
        record: AuditRecord,
    ) -> Result<Saved<Template>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let before = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE message_templates SET updated_at = updated_at WHERE account_id = $1 \
             AND id = $2 RETURNING {TEMPLATE_COLUMNS}"
        )))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before.as_ref().map(template) else {
            return Ok(Saved::Missing);
        };
        let updated = taken(
            sqlx::query(
                "UPDATE message_templates SET name = $3, language = $4, parameters = $5, \
                 body = $6, updated_at = $7 WHERE account_id = $1 AND id = $2",
            )
            .bind(account_id)
            .bind(id)
            .bind(&change.name)
            .bind(&change.language)
            .bind(change.parameters)
            .bind(change.body.as_deref())
            .bind(change.updated_at_ms)
            .execute(&mut *tx)
            .await,
        )?;
        if updated.is_none() {
            return Ok(Saved::Taken);
        }
        let after = Template {
            id: before.id.clone(),
            inbox_id: before.inbox_id.clone(),
            created_at_ms: before.created_at_ms,
            ..change
        };
        audit::append(&mut tx, &record.before(&before).after(&after)).await?;
        tx.commit().await?;
        Ok(Saved::Done(after))
    }

    /// Removes `id`, auditing what it was; `None` when there is no such template.
    pub async fn delete_template(
        &self,
        account_id: &str,
        id: &str,
        record: AuditRecord,
    ) -> Result<Option<Template>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM message_templates WHERE account_id = $1 AND id = $2 \
             RETURNING {TEMPLATE_COLUMNS}"
        )))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(gone) = row.as_ref().map(template) else {
            return Ok(None);
        };
        audit::append(&mut tx, &record.before(&gone)).await?;
        tx.commit().await?;
        Ok(Some(gone))
    }
}
