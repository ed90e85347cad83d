//! Accounts (tenants) and API keys.
//!
//! Accounts declared in config are upserted at start under ids derived from their slugs, so
//! every node converges on the same rows whatever order they start in. Inbox rows live in
//! [`super::inboxes`].

use sqlx::Row;

use super::{Store, StoreError};
use crate::ids;

/// What an API key proves about its bearer.
#[derive(Debug, Clone)]
pub struct ApiKeyPrincipal {
    pub key_id: String,
    pub account_id: String,
    pub role: String,
}

/// How often `last_used_at` is written at most, so a busy integration does not turn every
/// read into a write.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

impl Store {
    pub async fn ensure_account(&self, slug: &str) -> Result<String, StoreError> {
        let id = ids::from_slug(ids::ACCOUNT, slug);
        sqlx::query(
            "INSERT INTO accounts (id, slug, name, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(slug)
        .bind(slug)
        .bind(ids::now_ms())
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// Finds an account by id (`acc_…`) or slug.
    pub async fn find_account(&self, id_or_slug: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT id FROM accounts WHERE id = $1 OR slug = $1")
            .bind(id_or_slug)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Stores a new API key by its hash; the key itself is never stored.
    pub async fn create_api_key(
        &self,
        account_id: &str,
        name: &str,
        role: &str,
        prefix: &str,
        key_hash: &str,
        expires_at: Option<i64>,
    ) -> Result<String, StoreError> {
        let id = ids::new(ids::API_KEY);
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, role, prefix, key_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(account_id)
        .bind(name)
        .bind(role)
        .bind(prefix)
        .bind(key_hash)
        .bind(ids::now_ms())
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// The principal behind a live (unrevoked, unexpired) key hash.
    pub async fn authenticate_api_key(
        &self,
        key_hash: &str,
    ) -> Result<Option<ApiKeyPrincipal>, StoreError> {
        let now = ids::now_ms();
        let row = sqlx::query(
            "SELECT id, account_id, role, last_used_at FROM api_keys \
             WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(key_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let principal = ApiKeyPrincipal {
            key_id: row.get(0),
            account_id: row.get(1),
            role: row.get(2),
        };
        let last_used: Option<i64> = row.get(3);
        if last_used.is_none_or(|t| now - t > LAST_USED_GRANULARITY_MS) {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&principal.key_id)
                .execute(self.pool())
                .await?;
        }
        Ok(Some(principal))
    }
}
