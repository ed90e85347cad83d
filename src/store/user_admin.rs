//! The administrative side of users: reads that run inside a mutation's transaction (so the
//! audit record's `before` is the row that was changed), updates, password resets and the
//! filtered user list. Sign-in reads live in [`super::users`].
//!
//! Every write first "touches" its row (`SET updated_at = updated_at`): on PostgreSQL that takes
//! the row lock, so two concurrent edits serialise and each audit `before` is exact; on SQLite
//! the transaction already holds the write lock (`BEGIN IMMEDIATE`).

use sqlx::{AnyConnection, Row};

use super::users::{User, user};
use super::{Store, StoreError};
use crate::ids;

/// `SELECT <user columns> FROM users <rest>`, as one static SQL text.
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, account_id, email, name, role, branch_id, active, totp_enabled, \
             locked_until, last_login_at, created_at, updated_at FROM users ",
            $rest
        )
    };
}

/// Filters of the admin user list; `None` means "any".
#[derive(Debug, Default)]
pub struct UserFilter {
    pub role: Option<String>,
    pub team_id: Option<String>,
    pub branch_id: Option<String>,
    pub active: Option<bool>,
}

/// The editable state of a user, written whole.
#[derive(Debug)]
pub struct UserChange<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub branch_id: Option<&'a str>,
    pub active: bool,
}

async fn team_ids(conn: &mut AnyConnection, user_id: &str) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT team_id FROM team_members WHERE user_id = $1 ORDER BY team_id")
        .bind(user_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A user of the account, with its teams, read on `conn`.
pub async fn fetch_user(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<User>, StoreError> {
    let row = sqlx::query(select_users!("WHERE account_id = $1 AND id = $2"))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut found = user(&row);
    found.team_ids = team_ids(conn, &found.id).await?;
    Ok(Some(found))
}

/// Locks a user row for the rest of the transaction and reads it; None when it is not the
/// account's.
pub async fn lock_user(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<User>, StoreError> {
    if !super::lock_row(conn, super::Locked::Users, account_id, id).await? {
        return Ok(None);
    }
    fetch_user(conn, account_id, id).await
}

pub async fn update_user(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    change: &UserChange<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE users SET name = $3, role = $4, branch_id = $5, active = $6, updated_at = $7 \
         WHERE account_id = $1 AND id = $2",
    )
    .bind(account_id)
    .bind(id)
    .bind(change.name)
    .bind(change.role)
    .bind(change.branch_id)
    .bind(i64::from(change.active))
    .bind(ids::now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Sets a new password hash and lifts any lockout (an administrator's reset).
pub async fn set_password_hash(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    password_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE users SET password_hash = $3, failed_logins = 0, locked_until = NULL, \
         updated_at = $4 WHERE account_id = $1 AND id = $2",
    )
    .bind(account_id)
    .bind(id)
    .bind(password_hash)
    .bind(ids::now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a branch of the account exists, and if so whether it is active.
pub async fn branch_active(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<bool>, StoreError> {
    let row = sqlx::query("SELECT active FROM branches WHERE account_id = $1 AND id = $2")
        .bind(account_id)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| r.get::<i64, _>(0) != 0))
}

/// Whether a team of the account exists, and if so whether it is active.
pub async fn team_active(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<bool>, StoreError> {
    let row = sqlx::query("SELECT active FROM teams WHERE account_id = $1 AND id = $2")
        .bind(account_id)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| r.get::<i64, _>(0) != 0))
}

/// Whether a user of the account exists.
pub async fn user_exists(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("SELECT 1 FROM users WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .fetch_optional(conn)
            .await?
            .is_some(),
    )
}

impl Store {
    /// Users of the account by id, filtered; `cursor` is the last id of the previous page.
    pub async fn list_users_filtered(
        &self,
        account_id: &str,
        filter: &UserFilter,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<User>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let rows = sqlx::query(select_users!(
            "WHERE account_id = $1 \
             AND ($2 IS NULL OR role = $2) AND ($3 IS NULL OR branch_id = $3) \
             AND ($4 IS NULL OR active = $4) \
             AND ($5 IS NULL OR id IN (SELECT user_id FROM team_members WHERE account_id = $1 AND team_id = $5)) \
             AND ($6 IS NULL OR id > $6) ORDER BY id LIMIT $7"
        ))
        .bind(account_id)
        .bind(filter.role.as_deref())
        .bind(filter.branch_id.as_deref())
        .bind(filter.active.map(i64::from))
        .bind(filter.team_id.as_deref())
        .bind(cursor)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        let mut users: Vec<User> = rows.iter().map(user).collect();
        for u in &mut users {
            u.team_ids = team_ids(&mut conn, &u.id).await?;
        }
        Ok(users)
    }

    /// A user of the account, with its teams.
    pub async fn admin_get_user(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        fetch_user(&mut conn, account_id, id).await
    }
}
