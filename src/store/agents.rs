//! Agents as routable resources: the account's skill catalogue, each user's routing profile
//! (skill and language levels, capacity per channel) and presence (migration 0004).
//!
//! An agent is any active user of the account; a user without rows here has an empty profile
//! and reads as `offline`. Profile writes replace skills and languages wholesale but only
//! *upsert* `agent_load.capacity`: `active`, the live count the assignment commit guards, is
//! the engine's and is never touched here. Whether a presence is stale is decided on read by
//! [`PresenceRow::effective`], the one place that rule lives.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};

/// The channels an agent has capacity on, in output order.
pub const CHANNELS: [&str; 3] = ["whatsapp", "sms", "webchat"];

/// The routable part of an agent, written whole by `PUT …/profile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub skills: BTreeMap<String, i64>,
    pub languages: BTreeMap<String, i64>,
    /// Every channel of [`CHANNELS`]; 0 means never routed that channel.
    pub capacity: BTreeMap<String, i64>,
}

/// A presence row as stored: the status the agent chose and their last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRow {
    pub status: String,
    pub heartbeat_at: i64,
    pub changed_at: i64,
}

impl PresenceRow {
    /// The status routing sees at `now_ms`: the chosen one while heartbeats are fresh,
    /// `offline` once the last heartbeat is more than `timeout_ms` old (or there is no row).
    pub fn effective(row: Option<&PresenceRow>, now_ms: i64, timeout_ms: i64) -> &'static str {
        match row {
            Some(p) if now_ms - p.heartbeat_at <= timeout_ms => match p.status.as_str() {
                "online" => "online",
                "away" => "away",
                _ => "offline",
            },
            _ => "offline",
        }
    }
}

/// One agent as the admin list shows it.
#[derive(Debug, Clone)]
pub struct Agent {
    pub user_id: String,
    pub name: String,
    pub branch_id: Option<String>,
    pub team_ids: Vec<String>,
    pub profile: Profile,
    /// The live count per channel (every channel of [`CHANNELS`]).
    pub active: BTreeMap<String, i64>,
    pub presence: Option<PresenceRow>,
}

/// A skill of the catalogue, with how many users hold it.
#[derive(Debug, Clone)]
pub struct Skill {
    pub name: String,
    pub agents: i64,
    pub created_at: i64,
}

/// What refused a skill's removal: an expected conflict, answered as 409.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkillRemoval {
    Removed,
    Missing,
    /// Held by this many agents.
    Held(i64),
}

fn zeroed() -> BTreeMap<String, i64> {
    CHANNELS.iter().map(|c| ((*c).to_owned(), 0)).collect()
}

/// Adds a skill to the catalogue on `conn`; `Ok(false)` when the name is taken.
pub async fn insert_skill(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result =
        sqlx::query("INSERT INTO skills (account_id, name, created_at) VALUES ($1, $2, $3)")
            .bind(account_id)
            .bind(name)
            .bind(now_ms)
            .execute(conn)
            .await;
    match result {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes a skill nobody holds. The count and the delete run in the caller's transaction; a
/// profile change racing it is caught by the foreign key and reported as held too.
pub async fn delete_skill(
    conn: &mut AnyConnection,
    account_id: &str,
    name: &str,
) -> Result<SkillRemoval, StoreError> {
    let held: i64 =
        sqlx::query("SELECT COUNT(*) FROM agent_skills WHERE account_id = $1 AND skill = $2")
            .bind(account_id)
            .bind(name)
            .fetch_one(&mut *conn)
            .await?
            .get(0);
    if held > 0 {
        return Ok(SkillRemoval::Held(held));
    }
    let result = sqlx::query("DELETE FROM skills WHERE account_id = $1 AND name = $2")
        .bind(account_id)
        .bind(name)
        .execute(&mut *conn)
        .await;
    match result {
        Ok(done) if done.rows_affected() == 0 => Ok(SkillRemoval::Missing),
        Ok(_) => Ok(SkillRemoval::Removed),
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Ok(SkillRemoval::Held(1)),
        Err(e) => Err(e.into()),
    }
}

/// Every skill name of the account's catalogue, read on `conn`.
pub async fn known_skills(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT name FROM skills WHERE account_id = $1")
        .bind(account_id)
        .fetch_all(conn)
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether `user_id` is an active user of the account, taking the user's row lock for the rest
/// of the transaction so concurrent profile changes serialise (and the audit's "before" is
/// exactly the profile replaced).
pub async fn lock_agent(
    conn: &mut AnyConnection,
    account_id: &str,
    user_id: &str,
) -> Result<bool, StoreError> {
    if !super::lock_row(conn, super::Locked::Users, account_id, user_id).await? {
        return Ok(false);
    }
    let active: Option<i64> =
        sqlx::query("SELECT active FROM users WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(user_id)
            .fetch_optional(conn)
            .await?
            .map(|r| r.get(0));
    Ok(active == Some(1))
}

/// The profile of one user, read on `conn` (empty when none was set).
pub async fn read_profile(
    conn: &mut AnyConnection,
    account_id: &str,
    user_id: &str,
) -> Result<(Profile, BTreeMap<String, i64>), StoreError> {
    let mut profile = Profile {
        capacity: zeroed(),
        ..Profile::default()
    };
    let mut active = zeroed();
    for row in
        sqlx::query("SELECT skill, level FROM agent_skills WHERE account_id = $1 AND user_id = $2")
            .bind(account_id)
            .bind(user_id)
            .fetch_all(&mut *conn)
            .await?
    {
        profile.skills.insert(row.get(0), row.get(1));
    }
    for row in sqlx::query(
        "SELECT lang, level FROM agent_languages WHERE account_id = $1 AND user_id = $2",
    )
    .bind(account_id)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?
    {
        profile.languages.insert(row.get(0), row.get(1));
    }
    for row in sqlx::query(
        "SELECT channel, capacity, active FROM agent_load WHERE account_id = $1 AND user_id = $2",
    )
    .bind(account_id)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?
    {
        let channel: String = row.get(0);
        profile.capacity.insert(channel.clone(), row.get(1));
        active.insert(channel, row.get(2));
    }
    Ok((profile, active))
}

/// Replaces a user's skills and languages and sets its capacity on every channel, on `conn`
/// (the caller's transaction, which also writes the audit record). `active` is left alone.
pub async fn write_profile(
    conn: &mut AnyConnection,
    account_id: &str,
    user_id: &str,
    profile: &Profile,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM agent_skills WHERE account_id = $1 AND user_id = $2")
        .bind(account_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for (skill, level) in &profile.skills {
        sqlx::query(
            "INSERT INTO agent_skills (account_id, user_id, skill, level) VALUES ($1, $2, $3, $4)",
        )
        .bind(account_id)
        .bind(user_id)
        .bind(skill)
        .bind(level)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DELETE FROM agent_languages WHERE account_id = $1 AND user_id = $2")
        .bind(account_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    for (lang, level) in &profile.languages {
        sqlx::query(
            "INSERT INTO agent_languages (account_id, user_id, lang, level) VALUES ($1, $2, $3, $4)",
        )
        .bind(account_id)
        .bind(user_id)
        .bind(lang)
        .bind(level)
        .execute(&mut *conn)
        .await?;
    }
    for channel in CHANNELS {
        let capacity = profile.capacity.get(channel).copied().unwrap_or(0);
        sqlx::query(
            "INSERT INTO agent_load (account_id, user_id, channel, capacity) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, channel) DO UPDATE SET capacity = excluded.capacity",
        )
        .bind(account_id)
        .bind(user_id)
        .bind(channel)
        .bind(capacity)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A user's presence row, read on `conn`.
pub async fn read_presence(
    conn: &mut AnyConnection,
    account_id: &str,
    user_id: &str,
) -> Result<Option<PresenceRow>, StoreError> {
    let row = sqlx::query(
        "SELECT status, heartbeat_at, changed_at FROM presence WHERE account_id = $1 AND user_id = $2",
    )
    .bind(account_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| PresenceRow {
        status: r.get(0),
        heartbeat_at: r.get(1),
        changed_at: r.get(2),
    }))
}

/// Writes a user's presence on `conn`: `status` (None keeps the stored one, or `offline` for a
/// first row) and a heartbeat at `now_ms`. `changed_at` moves only when the status does.
pub async fn write_presence(
    conn: &mut AnyConnection,
    account_id: &str,
    user_id: &str,
    status: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO presence (account_id, user_id, status, heartbeat_at, changed_at) \
         VALUES ($1, $2, COALESCE($3, 'offline'), $4, $4) \
         ON CONFLICT (user_id) DO UPDATE SET \
           changed_at = CASE WHEN presence.status = COALESCE($3, presence.status) \
                        THEN presence.changed_at ELSE excluded.changed_at END, \
           status = COALESCE($3, presence.status), \
           heartbeat_at = excluded.heartbeat_at",
    )
    .bind(account_id)
    .bind(user_id)
    .bind(status)
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// The users of one page of [`Store::list_agents`]: active, within the reach (`$4` kind,
/// `$5` branch, `$6` team), after the cursor (`$2`), at most `$3`.
macro_rules! agent_users {
    () => {
        "SELECT id FROM users WHERE account_id = $1 AND active = 1 AND ($2 IS NULL OR id > $2) \
         AND ($4 = 'all' OR ($4 = 'branch' AND branch_id = $5) \
         OR ($4 = 'team' AND id IN (SELECT user_id FROM team_members WHERE team_id = $6))) \
         ORDER BY id LIMIT $3"
    };
}

/// `SELECT … WHERE user_id IN (<this page of active users>)`: the same static page condition
/// in every batch read of [`Store::list_agents`] (`$1` account, `$2` cursor, `$3` limit, `$4`–`$6`
/// the reach).
macro_rules! agent_page {
    ($select:literal) => {
        concat!(
            $select,
            " WHERE account_id = $1 AND user_id IN (",
            agent_users!(),
            ")"
        )
    };
}

/// Which users an agent list covers: the whole account (the admin list), or the agents a
/// caller may assign a conversation to (a branch's users, a team's members, or nobody).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentReach {
    All,
    Branch(String),
    Team(String),
    Nobody,
}

impl AgentReach {
    /// Whether a user of `branch_id` and `team_ids` is within reach.
    pub fn admits(&self, branch_id: Option<&str>, team_ids: &[String]) -> bool {
        match self {
            AgentReach::All => true,
            AgentReach::Branch(b) => branch_id == Some(b.as_str()),
            AgentReach::Team(t) => team_ids.contains(t),
            AgentReach::Nobody => false,
        }
    }

    /// The `(kind, branch, team)` the page queries bind.
    fn binds(&self) -> (&'static str, Option<&str>, Option<&str>) {
        match self {
            AgentReach::All => ("all", None, None),
            AgentReach::Branch(b) => ("branch", Some(b), None),
            AgentReach::Team(t) => ("team", None, Some(t)),
            AgentReach::Nobody => ("none", None, None),
        }
    }
}

impl Store {
    /// The catalogue by name; `cursor` is the last name of the previous page.
    pub async fn list_skills(
        &self,
        account_id: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Skill>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(
            "SELECT s.name, s.created_at, \
             (SELECT COUNT(*) FROM agent_skills a WHERE a.account_id = s.account_id AND a.skill = s.name) \
             FROM skills s WHERE s.account_id = $1 AND ($2 IS NULL OR s.name > $2) \
             ORDER BY s.name LIMIT $3",
        )
        .bind(account_id)
        .bind(cursor)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| Skill {
                name: r.get(0),
                created_at: r.get(1),
                agents: r.get(2),
            })
            .collect())
    }

    /// Active users of the account within `reach` by id, each with teams, profile, load and
    /// presence, in a fixed number of queries per page; `cursor` is the last user id of the
    /// previous page.
    pub async fn list_agents(
        &self,
        account_id: &str,
        reach: &AgentReach,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Agent>, StoreError> {
        let (kind, branch, team) = reach.binds();
        let mut tx = self.scoped(account_id).await?;
        let users = sqlx::query(concat!(
            "SELECT id, name, branch_id FROM users WHERE id IN (",
            agent_users!(),
            ") ORDER BY id"
        ))
        .bind(account_id)
        .bind(cursor)
        .bind(limit)
        .bind(kind)
        .bind(branch)
        .bind(team)
        .fetch_all(&mut *tx)
        .await?;
        let mut agents: Vec<Agent> = users
            .iter()
            .map(|r| Agent {
                user_id: r.get(0),
                name: r.get(1),
                branch_id: r.get(2),
                team_ids: Vec::new(),
                profile: Profile {
                    capacity: zeroed(),
                    ..Profile::default()
                },
                active: zeroed(),
                presence: None,
            })
            .collect();
        let index: HashMap<String, usize> = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.user_id.clone(), i))
            .collect();
        macro_rules! batch {
            ($sql:expr) => {
                sqlx::query($sql)
                    .bind(account_id)
                    .bind(cursor)
                    .bind(limit)
                    .bind(kind)
                    .bind(branch)
                    .bind(team)
                    .fetch_all(&mut *tx)
                    .await?
            };
        }
        let at = |user: String| index.get(&user).copied();
        for r in batch!(agent_page!("SELECT user_id, team_id FROM team_members")) {
            if let Some(i) = at(r.get(0)) {
                agents[i].team_ids.push(r.get(1));
            }
        }
        for r in batch!(agent_page!(
            "SELECT user_id, skill, level FROM agent_skills"
        )) {
            if let Some(i) = at(r.get(0)) {
                agents[i].profile.skills.insert(r.get(1), r.get(2));
            }
        }
        for r in batch!(agent_page!(
            "SELECT user_id, lang, level FROM agent_languages"
        )) {
            if let Some(i) = at(r.get(0)) {
                agents[i].profile.languages.insert(r.get(1), r.get(2));
            }
        }
        for r in batch!(agent_page!(
            "SELECT user_id, channel, capacity, active FROM agent_load"
        )) {
            if let Some(i) = at(r.get(0)) {
                let channel: String = r.get(1);
                agents[i].profile.capacity.insert(channel.clone(), r.get(2));
                agents[i].active.insert(channel, r.get(3));
            }
        }
        for r in batch!(agent_page!(
            "SELECT user_id, status, heartbeat_at, changed_at FROM presence"
        )) {
            if let Some(i) = at(r.get(0)) {
                agents[i].presence = Some(PresenceRow {
                    status: r.get(1),
                    heartbeat_at: r.get(2),
                    changed_at: r.get(3),
                });
            }
        }
        tx.commit().await?;
        for agent in &mut agents {
            agent.team_ids.sort();
        }
        Ok(agents)
    }

    /// One active user of the account as an agent, or None.
    pub async fn get_agent(
        &self,
        account_id: &str,
        user_id: &str,
    ) -> Result<Option<Agent>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let user = sqlx::query(
            "SELECT id, name, branch_id FROM users WHERE account_id = $1 AND id = $2 AND active = 1",
        )
        .bind(account_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user) = user else {
            return Ok(None);
        };
        let team_ids = sqlx::query(
            "SELECT team_id FROM team_members WHERE account_id = $1 AND user_id = $2 ORDER BY team_id",
        )
        .bind(account_id)
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
        let (profile, active) = read_profile(&mut tx, account_id, user_id).await?;
        let presence = read_presence(&mut tx, account_id, user_id).await?;
        tx.commit().await?;
        Ok(Some(Agent {
            user_id: user.get(0),
            name: user.get(1),
            branch_id: user.get(2),
            team_ids,
            profile,
            active,
            presence,
        }))
    }

    /// The heartbeat's fast path: one statement that refreshes a presence still fresh at
    /// `fresh_since_ms`. False when there is no row or it had gone stale (the caller then takes
    /// the transactional path, which can tell a revival from a plain refresh).
    pub async fn refresh_heartbeat(
        &self,
        account_id: &str,
        user_id: &str,
        now_ms: i64,
        fresh_since_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let touched = sqlx::query(
            "UPDATE presence SET heartbeat_at = $3 WHERE account_id = $1 AND user_id = $2 \
             AND heartbeat_at >= $4",
        )
        .bind(account_id)
        .bind(user_id)
        .bind(now_ms)
        .bind(fresh_since_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(touched > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_presence_reads_offline() {
        let row = |status: &str, heartbeat_at| PresenceRow {
            status: status.to_owned(),
            heartbeat_at,
            changed_at: 0,
        };
        assert_eq!(PresenceRow::effective(None, 1_000, 90_000), "offline");
        let online = row("online", 10_000);
        assert_eq!(
            PresenceRow::effective(Some(&online), 100_000, 90_000),
            "online"
        );
        assert_eq!(
            PresenceRow::effective(Some(&online), 100_001, 90_000),
            "offline"
        );
        let away = row("away", 10_000);
        assert_eq!(PresenceRow::effective(Some(&away), 20_000, 90_000), "away");
        assert_eq!(
            PresenceRow::effective(Some(&away), 200_000, 90_000),
            "offline"
        );
    }
}
