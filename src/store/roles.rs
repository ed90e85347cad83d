//! Custom roles: a name, a description and grants (permission → scope) per account. Built-in
//! roles live in code (`crate::access::builtin`) and are never stored.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::access::Grants;
use crate::ids;

#[derive(Debug, Clone, Serialize)]
pub struct Role {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub description: String,
    pub grants: Grants,
    pub created_at: i64,
    pub updated_at: i64,
}

fn role(r: &AnyRow) -> Role {
    Role {
        id: r.get(0),
        account_id: r.get(1),
        name: r.get(2),
        description: r.get(3),
        // Grants were validated when written; an unreadable value grants nothing.
        grants: serde_json::from_str(&r.get::<String, _>(4)).unwrap_or_default(),
        created_at: r.get(5),
        updated_at: r.get(6),
    }
}

fn grants_json(grants: &Grants) -> Result<String, StoreError> {
    serde_json::to_string(grants).map_err(|e| StoreError::Setup(format!("grants: {e}")))
}

/// Inserts a custom role on the caller's transaction; returns its id.
pub async fn insert_role(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
    description: &str,
    grants: &Grants,
) -> Result<String, StoreError> {
    let id = ids::new(ids::ROLE);
    sqlx::query(
        "INSERT INTO roles (id, account_id, name, description, grants, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(&id)
    .bind(account_id)
    .bind(name)
    .bind(description)
    .bind(grants_json(grants)?)
    .bind(ids::now_ms())
    .execute(conn)
    .await?;
    Ok(id)
}

pub async fn fetch_role(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Role>, StoreError> {
    let row = sqlx::query(
        "SELECT id, account_id, name, description, grants, created_at, updated_at FROM roles \
         WHERE account_id = $1 AND id = $2",
    )
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(role))
}

/// Locks a role row for the rest of the transaction and reads it.
pub async fn lock_role(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Role>, StoreError> {
    if !super::lock_row(conn, super::Locked::Roles, account_id, id).await? {
        return Ok(None);
    }
    fetch_role(conn, account_id, id).await
}

pub async fn update_role(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    name: &str,
    description: &str,
    grants: &Grants,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE roles SET name = $3, description = $4, grants = $5, updated_at = $6 \
         WHERE account_id = $1 AND id = $2",
    )
    .bind(account_id)
    .bind(id)
    .bind(name)
    .bind(description)
    .bind(grants_json(grants)?)
    .bind(ids::now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// How many users, and how many unrevoked API keys, hold the role.
pub async fn role_holders(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<(i64, i64), StoreError> {
    let users = sqlx::query("SELECT COUNT(*) FROM users WHERE account_id = $1 AND role = $2")
        .bind(account_id)
        .bind(id)
        .fetch_one(&mut *conn)
        .await?
        .get(0);
    let keys = sqlx::query(
        "SELECT COUNT(*) FROM api_keys WHERE account_id = $1 AND role = $2 AND revoked_at IS NULL",
    )
    .bind(account_id)
    .bind(id)
    .fetch_one(conn)
    .await?
    .get(0);
    Ok((users, keys))
}

pub async fn delete_role(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM roles WHERE account_id = $1 AND id = $2")
        .bind(account_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

impl Store {
    pub async fn get_role(&self, account_id: &str, id: &str) -> Result<Option<Role>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        fetch_role(&mut conn, account_id, id).await
    }

    /// Every custom role of the account, by id (accounts have a handful).
    pub async fn list_roles(&self, account_id: &str) -> Result<Vec<Role>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, name, description, grants, created_at, updated_at FROM roles \
             WHERE account_id = $1 ORDER BY id",
        )
        .bind(account_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(role).collect())
    }
}
