//! Sign-in state of a user: failed attempts and lockout, the TOTP second factor and its backup
//! codes, password changes. Sessions and refresh tokens are `sessions.rs`; the user record
//! itself is `users.rs`.
//!
//! Every statement is keyed by the user id the caller already authenticated (or looked up by
//! email at sign-in), and changes that must be audited take the audit record and write it in
//! the same transaction.

use sqlx::Row;

use super::audit::{self, AuditRecord};
use super::{Store, StoreError};
use crate::ids;

/// What TOTP and password checks need to see of a signed-in user (never serialized).
#[derive(Debug, Clone)]
pub struct SecondFactor {
    pub account_id: String,
    pub email: String,
    pub password_hash: String,
    /// Sealed; present while enrolment is pending and once enabled.
    pub totp_secret: Option<String>,
    pub totp_enabled: bool,
}

/// What enabling TOTP led to.
#[derive(Debug, PartialEq, Eq)]
pub enum TotpEnabled {
    Enabled,
    /// Already enabled, or no pending secret (enrol first).
    NotPending,
}

impl Store {
    pub async fn second_factor(&self, user_id: &str) -> Result<Option<SecondFactor>, StoreError> {
        let row = sqlx::query(
            "SELECT account_id, email, password_hash, totp_secret, totp_enabled FROM users \
             WHERE id = $1",
        )
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| SecondFactor {
            account_id: r.get(0),
            email: r.get(1),
            password_hash: r.get(2),
            totp_secret: r.get(3),
            totp_enabled: r.get::<i64, _>(4) != 0,
        }))
    }

    /// Counts one failed sign-in. Reaching `threshold` locks the user until `locked_until` and
    /// starts the count again; returns true when this attempt started a lockout. One statement
    /// (the right-hand sides all see the old row), so concurrent failures cannot skip the lock.
    pub async fn record_failed_login(
        &self,
        user_id: &str,
        threshold: i64,
        locked_until: i64,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "UPDATE users SET \
             failed_logins = CASE WHEN failed_logins + 1 >= $1 THEN 0 ELSE failed_logins + 1 END, \
             locked_until = CASE WHEN failed_logins + 1 >= $1 THEN $2 ELSE locked_until END \
             WHERE id = $3 RETURNING locked_until",
        )
        .bind(threshold)
        .bind(locked_until)
        .bind(user_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some_and(|r| r.get::<Option<i64>, _>(0) == Some(locked_until)))
    }

    /// A successful sign-in: the failure count and any expired lock are cleared. False when
    /// the user is locked *now* — a lock written by parallel failed attempts after this one
    /// read the user wins, so a burst of guesses cannot slip a right one past the lockout.
    pub async fn record_login(&self, user_id: &str) -> Result<bool, StoreError> {
        let now = ids::now_ms();
        let updated = sqlx::query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = $1 \
             WHERE id = $2 AND active = 1 AND (locked_until IS NULL OR locked_until <= $1)",
        )
        .bind(now)
        .bind(user_id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Accepts a TOTP time step once: true when `step` is later than the last one accepted for
    /// the user (so a code cannot be replayed, even by a racing request).
    pub async fn claim_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE users SET totp_last_step = $1 \
             WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(user_id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Stores a pending (not yet enabled) sealed TOTP secret, replacing a pending one. False
    /// when TOTP is already enabled.
    pub async fn set_pending_totp(&self, user_id: &str, sealed: &str) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE users SET totp_secret = $1, totp_last_step = NULL, updated_at = $2 \
             WHERE id = $3 AND totp_enabled = 0",
        )
        .bind(sealed)
        .bind(ids::now_ms())
        .bind(user_id)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Enables the pending secret (`step` is the verified code's, now used) and replaces the
    /// user's backup codes (stored as hashes), with the audit record, in one transaction.
    pub async fn enable_totp(
        &self,
        account_id: &str,
        user_id: &str,
        verified_secret: &str,
        step: i64,
        backup_code_hashes: &[String],
        record: &AuditRecord,
    ) -> Result<TotpEnabled, StoreError> {
        let mut tx = self.begin().await?;
        // Enables exactly the secret the code was checked against: an enrolment racing in
        // between replaces the pending secret, and then nothing is enabled.
        let updated = sqlx::query(
            "UPDATE users SET totp_enabled = 1, totp_last_step = $1, updated_at = $2 \
             WHERE id = $3 AND totp_enabled = 0 AND totp_secret = $4",
        )
        .bind(step)
        .bind(ids::now_ms())
        .bind(user_id)
        .bind(verified_secret)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(TotpEnabled::NotPending);
        }
        sqlx::query("DELETE FROM backup_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for hash in backup_code_hashes {
            sqlx::query(
                "INSERT INTO backup_codes (account_id, user_id, code_hash) VALUES ($1, $2, $3)",
            )
            .bind(account_id)
            .bind(user_id)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        }
        audit::append(&mut tx, record).await?;
        tx.commit().await?;
        Ok(TotpEnabled::Enabled)
    }

    /// Turns TOTP off: the secret and the backup codes go, with the audit record.
    pub async fn disable_totp(
        &self,
        user_id: &str,
        record: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        clear_second_factor(&mut tx, user_id).await?;
        audit::append(&mut tx, record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses one backup code; false when it is unknown or was used before. The `used_at IS NULL`
    /// condition makes two racing uses resolve to one winner.
    pub async fn use_backup_code(
        &self,
        user_id: &str,
        code_hash: &str,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE backup_codes SET used_at = $1 \
             WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(ids::now_ms())
        .bind(user_id)
        .bind(code_hash)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Sets a new password hash and revokes every other live session of the user, with the
    /// audit record, in one transaction. Returns how many sessions were revoked.
    pub async fn change_password(
        &self,
        user_id: &str,
        password_hash: &str,
        keep_session: Option<&str>,
        record: &AuditRecord,
    ) -> Result<u64, StoreError> {
        let now = ids::now_ms();
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(password_hash)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoked_why = 'password_changed' \
             WHERE user_id = $2 AND revoked_at IS NULL AND ($3 IS NULL OR id <> $3)",
        )
        .bind(now)
        .bind(user_id)
        .bind(keep_session)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        audit::append(&mut tx, record).await?;
        tx.commit().await?;
        Ok(revoked)
    }
}

/// Turns TOTP off and forgets the secret and backup codes, on the caller's transaction (the
/// user's own `disable`, or an administrator's reset for a user who lost their device).
pub async fn clear_second_factor(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE users SET totp_enabled = 0, totp_secret = NULL, totp_last_step = NULL, \
         updated_at = $1 WHERE id = $2",
    )
    .bind(ids::now_ms())
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM backup_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
