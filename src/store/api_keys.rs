//! API key administration: creation with its audit record in one transaction, listing and
//! revocation. Authentication by key is [`Store::authenticate_api_key`] in `accounts`; no key
//! or hash ever leaves this module.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::ids;

/// An API key as administrators see it: never the key, never its hash.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub created_at: i64,
    pub created_by: Option<String>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

pub struct NewApiKey<'a> {
    pub account_id: &'a str,
    pub name: &'a str,
    pub role: &'a str,
    pub prefix: &'a str,
    pub key_hash: &'a str,
    pub expires_at: Option<i64>,
    pub created_by: Option<&'a str>,
}

macro_rules! select_keys {
    ($rest:literal) => {
        concat!(
            "SELECT id, account_id, name, role, prefix, created_at, created_by, expires_at, \
             revoked_at, last_used_at FROM api_keys ",
            $rest
        )
    };
}

fn api_key(r: &AnyRow) -> ApiKey {
    ApiKey {
        id: r.get(0),
        account_id: r.get(1),
        name: r.get(2),
        role: r.get(3),
        prefix: r.get(4),
        created_at: r.get(5),
        created_by: r.get(6),
        expires_at: r.get(7),
        revoked_at: r.get(8),
        last_used_at: r.get(9),
    }
}

/// Stores a new key by its hash on the caller's transaction and returns it as stored.
pub async fn insert_api_key(
    conn: &mut AnyConnection,
    new: &NewApiKey<'_>,
) -> Result<ApiKey, StoreError> {
    let key = ApiKey {
        id: ids::new(ids::API_KEY),
        account_id: new.account_id.to_owned(),
        name: new.name.to_owned(),
        role: new.role.to_owned(),
        prefix: new.prefix.to_owned(),
        created_at: ids::now_ms(),
        created_by: new.created_by.map(str::to_owned),
        expires_at: new.expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, role, prefix, key_hash, created_at, created_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&key.id)
    .bind(&key.account_id)
    .bind(&key.name)
    .bind(&key.role)
    .bind(&key.prefix)
    .bind(new.key_hash)
    .bind(key.created_at)
    .bind(key.created_by.as_deref())
    .bind(key.expires_at)
    .execute(conn)
    .await?;
    Ok(key)
}

/// Locks a key row for the rest of the transaction and reads it.
pub async fn lock_api_key(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<ApiKey>, StoreError> {
    if !super::lock_row(conn, super::Locked::ApiKeys, account_id, id).await? {
        return Ok(None);
    }
    let row = sqlx::query(select_keys!("WHERE account_id = $1 AND id = $2"))
        .bind(account_id)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.as_ref().map(api_key))
}

/// Revokes the key: the next request that presents it is refused.
pub async fn revoke_api_key(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE api_keys SET revoked_at = $3 WHERE account_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(account_id)
    .bind(id)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    pub async fn get_api_key(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(select_keys!("WHERE account_id = $1 AND id = $2"))
            .bind(account_id)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(api_key))
    }

    /// One page of the account's keys by id; `cursor` is the last id of the previous page.
    pub async fn list_api_keys(
        &self,
        account_id: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(select_keys!(
            "WHERE account_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(account_id)
        .bind(cursor)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(api_key).collect())
    }
}
