//! The organisation: branches, teams and team membership.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::ids;

#[derive(Debug, Clone, Serialize)]
pub struct Branch {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Team {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub branch_id: Option<String>,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

fn branch(r: &AnyRow) -> Branch {
    Branch {
        id: r.get(0),
        account_id: r.get(1),
        name: r.get(2),
        active: r.get::<i64, _>(3) != 0,
        created_at: r.get(4),
        updated_at: r.get(5),
    }
}

fn team(r: &AnyRow) -> Team {
    Team {
        id: r.get(0),
        account_id: r.get(1),
        name: r.get(2),
        branch_id: r.get(3),
        active: r.get::<i64, _>(4) != 0,
        created_at: r.get(5),
        updated_at: r.get(6),
    }
}

/// Inserts a branch on `conn` (the caller's transaction).
pub async fn insert_branch(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
) -> Result<String, StoreError> {
    let id = ids::new(ids::BRANCH);
    let now = ids::now_ms();
    sqlx::query("INSERT INTO branches (id, account_id, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
        .bind(&id)
        .bind(account_id)
        .bind(name)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(id)
}

/// Inserts a team on `conn` (the caller's transaction).
pub async fn insert_team(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
    branch_id: Option<&str>,
) -> Result<String, StoreError> {
    let id = ids::new(ids::TEAM);
    let now = ids::now_ms();
    sqlx::query(
        "INSERT INTO teams (id, account_id, name, branch_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&id)
    .bind(account_id)
    .bind(name)
    .bind(branch_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(id)
}

/// Makes the user a member of exactly `team_ids` (on the caller's transaction).
pub async fn set_memberships(
    conn: &mut AnyConnection,
    account_id: &str,
    user_id: &str,
    team_ids: &[String],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM team_members WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for team_id in team_ids {
        sqlx::query("INSERT INTO team_members (account_id, team_id, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(account_id)
            .bind(team_id)
            .bind(user_id)
            .bind(ids::now_ms())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Store {
    pub async fn get_branch(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<Branch>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, name, active, created_at, updated_at FROM branches WHERE account_id = $1 AND id = $2",
        )
        .bind(account_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(branch))
    }

    pub async fn list_branches(&self, account_id: &str) -> Result<Vec<Branch>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, name, active, created_at, updated_at FROM branches WHERE account_id = $1 ORDER BY id",
        )
        .bind(account_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(branch).collect())
    }

    pub async fn get_team(&self, account_id: &str, id: &str) -> Result<Option<Team>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, name, branch_id, active, created_at, updated_at FROM teams WHERE account_id = $1 AND id = $2",
        )
        .bind(account_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(team))
    }

    pub async fn list_teams(&self, account_id: &str) -> Result<Vec<Team>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, name, branch_id, active, created_at, updated_at FROM teams WHERE account_id = $1 ORDER BY id",
        )
        .bind(account_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(team).collect())
    }
}

/// Locks a branch row for the rest of the transaction and reads it (see `user_admin` for why).
pub async fn lock_branch(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Branch>, StoreError> {
    if !super::lock_row(conn, super::Locked::Branches, account_id, id).await? {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT id, account_id, name, active, created_at, updated_at FROM branches WHERE account_id = $1 AND id = $2",
    )
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(branch))
}

pub async fn update_branch(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    name: &str,
    active: bool,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE branches SET name = $3, active = $4, updated_at = $5 WHERE account_id = $1 AND id = $2",
    )
    .bind(account_id)
    .bind(id)
    .bind(name)
    .bind(i64::from(active))
    .bind(ids::now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks a team row for the rest of the transaction and reads it.
pub async fn lock_team(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Team>, StoreError> {
    if !super::lock_row(conn, super::Locked::Teams, account_id, id).await? {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT id, account_id, name, branch_id, active, created_at, updated_at FROM teams WHERE account_id = $1 AND id = $2",
    )
    .bind(account_id)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(team))
}

pub async fn update_team(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    name: &str,
    branch_id: Option<&str>,
    active: bool,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE teams SET name = $3, branch_id = $4, active = $5, updated_at = $6 \
         WHERE account_id = $1 AND id = $2",
    )
    .bind(account_id)
    .bind(id)
    .bind(name)
    .bind(branch_id)
    .bind(i64::from(active))
    .bind(ids::now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// The user ids of a team's members, in id order.
pub async fn team_member_ids(
    conn: &mut AnyConnection,
    account_id: &str,
    team_id: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "SELECT user_id FROM team_members WHERE account_id = $1 AND team_id = $2 ORDER BY user_id",
    )
    .bind(account_id)
    .bind(team_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Makes `user_ids` exactly the members of the team (on the caller's transaction).
pub async fn replace_team_members(
    conn: &mut AnyConnection,
    account_id: &str,
    team_id: &str,
    user_ids: &[String],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM team_members WHERE account_id = $1 AND team_id = $2")
        .bind(account_id)
        .bind(team_id)
        .execute(&mut *conn)
        .await?;
    let now = ids::now_ms();
    for user_id in user_ids {
        sqlx::query("INSERT INTO team_members (account_id, team_id, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(account_id)
            .bind(team_id)
            .bind(user_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl Store {
    /// One page of the account's branches by id.
    pub async fn list_branches_page(
        &self,
        account_id: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Branch>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, name, active, created_at, updated_at FROM branches \
             WHERE account_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(account_id)
        .bind(cursor)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(branch).collect())
    }

    /// One page of the account's teams by id, optionally of one branch.
    pub async fn list_teams_page(
        &self,
        account_id: &str,
        branch_id: Option<&str>,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Team>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, name, branch_id, active, created_at, updated_at FROM teams \
             WHERE account_id = $1 AND ($2 IS NULL OR branch_id = $2) AND ($3 IS NULL OR id > $3) \
             ORDER BY id LIMIT $4",
        )
        .bind(account_id)
        .bind(branch_id)
        .bind(cursor)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(team).collect())
    }

    /// The user ids of a team's members.
    pub async fn team_members(
        &self,
        account_id: &str,
        team_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        team_member_ids(&mut conn, account_id, team_id).await
    }
}
