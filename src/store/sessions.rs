//! Sign-in sessions and their refresh tokens.
//!
//! A session is the family of refresh tokens one sign-in starts. Each refresh token works
//! once: [`Store::rotate_refresh_token`] marks it used and issues the next in one transaction.
//! Presenting a used token again means someone kept a copy, so the whole session is revoked
//! (breach detection, as in RFC 6819 §5.2.2.3 and OAuth 2.1's refresh token rotation).

use sqlx::Row;

use super::{Store, StoreError};
use crate::ids;

pub struct NewSession<'a> {
    pub account_id: &'a str,
    pub user_id: &'a str,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Rotation {
    /// The token was live: here is the session's next one.
    Rotated {
        session_id: String,
        user_id: String,
        account_id: String,
    },
    /// The token had been used before: the session is now revoked.
    Reused {
        session_id: String,
        user_id: String,
        account_id: String,
    },
    /// Unknown, expired, or of a revoked session.
    Invalid,
}

impl Store {
    /// Creates a session and its first refresh token (stored as `token_hash`).
    pub async fn create_session(
        &self,
        new: &NewSession<'_>,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<String, StoreError> {
        let id = ids::new(ids::SESSION);
        let now = ids::now_ms();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, account_id, user_id, ip, user_agent, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(new.account_id)
        .bind(new.user_id)
        .bind(new.ip)
        .bind(new.user_agent)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        insert_refresh(&mut tx, new.account_id, &id, token_hash, expires_at).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Uses `presented_hash` once and stores `next_hash` as its successor.
    pub async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        next_hash: &str,
        expires_at: i64,
    ) -> Result<Rotation, StoreError> {
        let now = ids::now_ms();
        // A plain read first: an unknown token (a guess, garbage) must not take SQLite's one
        // write lock, or a flood of them would stall every writer.
        let known = sqlx::query("SELECT 1 FROM refresh_tokens WHERE token_hash = $1")
            .bind(presented_hash)
            .fetch_optional(self.pool())
            .await?
            .is_some();
        if !known {
            return Ok(Rotation::Invalid);
        }
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT t.id, t.session_id, t.used_at, t.expires_at, s.revoked_at, s.user_id, s.account_id \
             FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
        )
        .bind(presented_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Rotation::Invalid);
        };
        let token_id: String = row.get(0);
        let session_id: String = row.get(1);
        let used_at: Option<i64> = row.get(2);
        let expires: i64 = row.get(3);
        let revoked: Option<i64> = row.get(4);
        let user_id: String = row.get(5);
        let account_id: String = row.get(6);
        if revoked.is_some() || expires <= now {
            return Ok(Rotation::Invalid);
        }
        if used_at.is_some() {
            revoke(&mut tx, &session_id, "refresh_token_reused").await?;
            tx.commit().await?;
            return Ok(Rotation::Reused {
                session_id,
                user_id,
                account_id,
            });
        }
        // `used_at IS NULL` in the WHERE makes two racing refreshes with the same token resolve
        // to one winner; the loser sees zero rows and is treated as a reuse.
        let updated =
            sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
                .bind(now)
                .bind(&token_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if updated == 0 {
            revoke(&mut tx, &session_id, "refresh_token_reused").await?;
            tx.commit().await?;
            return Ok(Rotation::Reused {
                session_id,
                user_id,
                account_id,
            });
        }
        insert_refresh(&mut tx, &account_id, &session_id, next_hash, expires_at).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated {
            session_id,
            user_id,
            account_id,
        })
    }

    /// The session a (used or unused) refresh token belongs to.
    pub async fn session_of_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT s.id, s.user_id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    pub async fn revoke_session(&self, session_id: &str, why: &str) -> Result<(), StoreError> {
        let mut conn = self.pool().acquire().await?;
        revoke(&mut conn, session_id, why).await
    }

    /// Revokes every live session of a user; returns how many.
    pub async fn revoke_user_sessions(&self, user_id: &str, why: &str) -> Result<u64, StoreError> {
        let mut conn = self.pool().acquire().await?;
        revoke_user_sessions(&mut conn, user_id, why).await
    }
}

/// Revokes every live session of a user on `conn` — in an admin change's own transaction, so a
/// password reset or deactivation never commits without ending the sessions.
pub async fn revoke_user_sessions(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    why: &str,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoked_why = $2 WHERE user_id = $3 AND revoked_at IS NULL",
    )
    .bind(ids::now_ms())
    .bind(why)
    .bind(user_id)
    .execute(conn)
    .await?
    .rows_affected())
}

async fn revoke(
    conn: &mut sqlx::AnyConnection,
    session_id: &str,
    why: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE sessions SET revoked_at = $1, revoked_why = $2 WHERE id = $3 AND revoked_at IS NULL")
        .bind(ids::now_ms())
        .bind(why)
        .bind(session_id)
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert_refresh(
    conn: &mut sqlx::AnyConnection,
    account_id: &str,
    session_id: &str,
    token_hash: &str,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, account_id, session_id, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(ids::new(ids::REFRESH_TOKEN))
    .bind(account_id)
    .bind(session_id)
    .bind(token_hash)
    .bind(ids::now_ms())
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(())
}
