//! Users, their sessions and refresh tokens, and custom roles.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};
use crate::access::{self, Grants};
use crate::ids;

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub branch_id: Option<String>,
    pub team_ids: Vec<String>,
    pub active: bool,
    pub totp_enabled: bool,
    pub locked_until: Option<i64>,
    pub last_login_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What sign-in needs to see of a user (never serialized).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: String,
    pub account_id: String,
    pub password_hash: String,
    pub active: bool,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    pub totp_secret: Option<String>,
    pub totp_enabled: bool,
}

/// What an access token's holder is, loaded on every authenticated request.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub user_id: String,
    pub account_id: String,
    pub role: String,
    pub branch_id: Option<String>,
    pub active: bool,
    pub session_revoked: bool,
}

pub struct NewUser<'a> {
    pub account_id: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    pub branch_id: Option<&'a str>,
}

macro_rules! user_columns {
    () => {
        "id, account_id, email, name, role, branch_id, active, totp_enabled, locked_until, \
         last_login_at, created_at, updated_at"
    };
}

/// A row of `user_columns!()` (also used by [`super::user_admin`]).
pub(super) fn user(r: &AnyRow) -> User {
    User {
        id: r.get(0),
        account_id: r.get(1),
        email: r.get(2),
        name: r.get(3),
        role: r.get(4),
        branch_id: r.get(5),
        team_ids: Vec::new(),
        active: r.get::<i64, _>(6) != 0,
        totp_enabled: r.get::<i64, _>(7) != 0,
        locked_until: r.get(8),
        last_login_at: r.get(9),
        created_at: r.get(10),
        updated_at: r.get(11),
    }
}

impl Store {
    /// Inserts a user on `conn` (a transaction, so the audit record goes with it).
    pub async fn insert_user(
        conn: &mut sqlx::AnyConnection,
        new: &NewUser<'_>,
    ) -> Result<String, StoreError> {
        let id = ids::new(ids::USER);
        let now = ids::now_ms();
        sqlx::query(
            "INSERT INTO users (id, account_id, email, name, password_hash, role, branch_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(&id)
        .bind(new.account_id)
        .bind(new.email.to_lowercase())
        .bind(new.name)
        .bind(new.password_hash)
        .bind(new.role)
        .bind(new.branch_id)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(id)
    }

    pub async fn get_user(&self, account_id: &str, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut user = user(&row);
        user.team_ids = self.user_teams(&user.id).await?;
        Ok(Some(user))
    }

    pub async fn user_teams(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT team_id FROM team_members WHERE user_id = $1 ORDER BY team_id")
                .bind(user_id)
                .fetch_all(self.pool())
                .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Every user's display name by id, in one read.
    pub async fn user_names(
        &self,
        account_id: &str,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        Ok(
            sqlx::query("SELECT id, name FROM users WHERE account_id = $1")
                .bind(account_id)
                .fetch_all(self.pool())
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        )
    }

    pub async fn list_users(
        &self,
        account_id: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE account_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(account_id)
        .bind(cursor)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut users: Vec<User> = rows.iter().map(user).collect();
        for u in &mut users {
            u.team_ids = self.user_teams(&u.id).await?;
        }
        Ok(users)
    }

    pub async fn credentials_by_email(
        &self,
        email: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, password_hash, active, failed_logins, locked_until, \
             totp_secret, totp_enabled FROM users WHERE email = $1",
        )
        .bind(email.trim().to_lowercase())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| Credentials {
            user_id: r.get(0),
            account_id: r.get(1),
            password_hash: r.get(2),
            active: r.get::<i64, _>(3) != 0,
            failed_logins: r.get(4),
            locked_until: r.get(5),
            totp_secret: r.get(6),
            totp_enabled: r.get::<i64, _>(7) != 0,
        }))
    }

    /// The user behind an access token, with its session's state, in one round trip.
    pub async fn session_user(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<Option<SessionUser>, StoreError> {
        let row = sqlx::query(
            "SELECT u.id, u.account_id, u.role, u.branch_id, u.active, s.revoked_at \
             FROM users u JOIN sessions s ON s.user_id = u.id WHERE u.id = $1 AND s.id = $2",
        )
        .bind(user_id)
        .bind(session_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|r| SessionUser {
            user_id: r.get(0),
            account_id: r.get(1),
            role: r.get(2),
            branch_id: r.get(3),
            active: r.get::<i64, _>(4) != 0,
            session_revoked: r.get::<Option<i64>, _>(5).is_some(),
        }))
    }

    /// The grants of a built-in role name or a custom role id of the account; None when the
    /// role no longer exists (the caller then has no permissions).
    pub async fn role_grants(
        &self,
        account_id: &str,
        role: &str,
    ) -> Result<Option<Grants>, StoreError> {
        if let Some(grants) = access::builtin(role) {
            return Ok(Some(grants));
        }
        let row = sqlx::query("SELECT grants FROM roles WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(role)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.and_then(|r| serde_json::from_str::<Grants>(&r.get::<String, _>(0)).ok()))
    }

    /// Whether any user exists (the CLI's first-admin command refuses a second "first").
    pub async fn count_users(&self, account_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM users WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(self.pool())
            .await?;
        Ok(row.get(0))
    }
}
