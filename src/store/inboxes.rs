//! Inbox rows: the config-declared ones (upserted at start, `managed_by = 'config'`) and the
//! ones admins create over REST (`managed_by = 'api'`).
//!
//! `credentials` holds the provider secrets as sealed JSON (see `crypto::Sealer`); this module
//! only moves the sealed text, it never sees a plaintext secret. `credentials_hint` is the
//! masked JSON shown to admins.
//!
//! Two reads cross accounts on purpose, like the recovery sweep: [`Store::active_inboxes`] and
//! [`Store::inbox_fingerprint`] feed the node-wide routing registry (webhook paths name an inbox
//! by slug, before any account is known). Every admin read and write is filtered by account.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::ids;

/// One inbox row. Not `Serialize`: it carries the sealed credentials, and the API builds its
/// own view without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    pub id: String,
    pub account_id: String,
    pub slug: String,
    pub channel: String,
    pub name: String,
    /// WhatsApp `phone_number_id`, Twilio number (E.164), or `None` for web chat.
    pub provider_ref: Option<String>,
    pub whatsapp_app: Option<String>,
    pub team_id: Option<String>,
    pub branch_id: Option<String>,
    /// Sealed JSON of the provider secrets.
    pub credentials: Option<String>,
    /// JSON object of masked secrets, e.g. `{"twilio_auth_token":"••••cdef"}`.
    pub credentials_hint: Option<String>,
    pub managed_by: String,
    pub active: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Which uniqueness rule a new inbox broke: an expected conflict, answered as 409.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Slug,
    ProviderRef,
}

macro_rules! inbox_columns {
    () => {
        "id, account_id, slug, channel, name, provider_ref, whatsapp_app, team_id, branch_id, \
         credentials, credentials_hint, managed_by, active, created_at, updated_at"
    };
}

fn inbox(r: &AnyRow) -> InboxRow {
    InboxRow {
        id: r.get(0),
        account_id: r.get(1),
        slug: r.get(2),
        channel: r.get(3),
        name: r.get(4),
        provider_ref: r.get(5),
        whatsapp_app: r.get(6),
        team_id: r.get(7),
        branch_id: r.get(8),
        credentials: r.get(9),
        credentials_hint: r.get(10),
        managed_by: r.get(11),
        active: r.get::<i64, _>(12) != 0,
        created_at_ms: r.get(13),
        updated_at_ms: r.get(14),
    }
}

/// Maps a unique violation on `inboxes` to the rule it broke (SQLite names the columns in the
/// message, PostgreSQL names the constraint: `inboxes_slug_key`, `inboxes_provider_ref`).
fn taken(e: &sqlx::Error) -> Option<Taken> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    if !db.is_unique_violation() {
        return None;
    }
    let text = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
    Some(if text.contains("slug") {
        Taken::Slug
    } else {
        Taken::ProviderRef
    })
}

/// Inserts an API-managed inbox on `conn` (the caller's transaction, which also writes the
/// audit record). A taken slug or provider number is a value, not an error.
pub async fn insert(
    conn: &mut AnyConnection,
    row: &InboxRow,
) -> Result<Result<(), Taken>, StoreError> {
    let result = sqlx::query(
        "INSERT INTO inboxes (id, account_id, slug, channel, name, provider_ref, whatsapp_app, \
         team_id, branch_id, credentials, credentials_hint, managed_by, active, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&row.id)
    .bind(&row.account_id)
    .bind(&row.slug)
    .bind(&row.channel)
    .bind(&row.name)
    .bind(row.provider_ref.as_deref())
    .bind(row.whatsapp_app.as_deref())
    .bind(row.team_id.as_deref())
    .bind(row.branch_id.as_deref())
    .bind(row.credentials.as_deref())
    .bind(row.credentials_hint.as_deref())
    .bind(&row.managed_by)
    .bind(i64::from(row.active))
    .bind(row.created_at_ms)
    .bind(row.updated_at_ms)
    .execute(conn)
    .await;
    match result {
        Ok(_) => Ok(Ok(())),
        Err(e) => match taken(&e) {
            Some(t) => Ok(Err(t)),
            None => Err(e.into()),
        },
    }
}

/// Reads an inbox for change on `conn`, first taking its row lock (a no-op UPDATE works on
/// both databases; SQLite has no `FOR UPDATE`), so the audit's "before" is the row replaced.
pub async fn lock(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<InboxRow>, StoreError> {
    if !super::lock_row(conn, super::Locked::Inboxes, account_id, id).await? {
        return Ok(None);
    }
    let row = sqlx::query(concat!(
        "SELECT ",
        inbox_columns!(),
        " FROM inboxes WHERE account_id = $1 AND id = $2"
    ))
    .bind(account_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(inbox))
}

/// Writes the mutable fields of `row` (name, team, branch, credentials, active).
pub async fn update(conn: &mut AnyConnection, row: &InboxRow) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE inboxes SET name = $3, team_id = $4, branch_id = $5, credentials = $6, \
         credentials_hint = $7, active = $8, updated_at = $9 WHERE account_id = $1 AND id = $2",
    )
    .bind(&row.account_id)
    .bind(&row.id)
    .bind(&row.name)
    .bind(row.team_id.as_deref())
    .bind(row.branch_id.as_deref())
    .bind(row.credentials.as_deref())
    .bind(row.credentials_hint.as_deref())
    .bind(i64::from(row.active))
    .bind(row.updated_at_ms)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Creates or refreshes an inbox declared in config. Config wins for what it declares
    /// (account, channel, name, provider number, app, credentials); team, branch and `active`
    /// belong to the admins and survive a restart.
    pub async fn upsert_config_inbox(&self, row: &InboxRow) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO inboxes (id, account_id, slug, channel, name, provider_ref, whatsapp_app, \
             credentials, credentials_hint, managed_by, active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'config', 1, $10, $10) \
             ON CONFLICT (id) DO UPDATE SET account_id = excluded.account_id, \
             channel = excluded.channel, name = excluded.name, provider_ref = excluded.provider_ref, \
             whatsapp_app = excluded.whatsapp_app, credentials = excluded.credentials, \
             credentials_hint = excluded.credentials_hint, managed_by = 'config', \
             updated_at = excluded.updated_at",
        )
        .bind(&row.id)
        .bind(&row.account_id)
        .bind(&row.slug)
        .bind(&row.channel)
        .bind(&row.name)
        .bind(row.provider_ref.as_deref())
        .bind(row.whatsapp_app.as_deref())
        .bind(row.credentials.as_deref())
        .bind(row.credentials_hint.as_deref())
        .bind(ids::now_ms())
        .execute(self.pool())
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match taken(&e) {
                Some(t) => Err(StoreError::Setup(format!(
                    "inbox `{}` from config clashes with an inbox created over the API ({}); \
                     rename one of them or deactivate the API one",
                    row.slug,
                    match t {
                        Taken::Slug => "same slug",
                        Taken::ProviderRef => "same provider number",
                    }
                ))),
                None => Err(e.into()),
            },
        }
    }

    /// Every active inbox of every account, for the routing registry.
    pub async fn active_inboxes(&self) -> Result<Vec<InboxRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            inbox_columns!(),
            " FROM inboxes WHERE active = 1 ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(inbox).collect())
    }

    /// A cheap summary that changes whenever an inbox row does (row count, newest update), for
    /// nodes that cannot hear each other's pub/sub (embedded processes sharing one file).
    pub async fn inbox_fingerprint(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query("SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM inboxes")
            .fetch_one(self.pool())
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    pub async fn get_inbox(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<InboxRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            inbox_columns!(),
            " FROM inboxes WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(inbox))
    }

    /// Inboxes of an account by id; `cursor` is the last id of the previous page.
    pub async fn list_inboxes(
        &self,
        account_id: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            inbox_columns!(),
            " FROM inboxes WHERE account_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(account_id)
        .bind(cursor)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(inbox).collect())
    }
}
