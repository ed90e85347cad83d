//! What live consoles stand on (migration 0007, docs/LIVE.md): the event log they resume from,
//! single-use WebSocket tickets, and the open consoles behind agents' presence.
//!
//! Event ids are taken under the account's `event_heads` row: the row's lock is held until
//! the events commit, so when any node sees event `n`, every event below `n` of the account
//! has committed and can be read. That is what lets a reader fill a hole from the log instead
//! of guessing whether it is still in flight.

use sqlx::{Any, AnyConnection, Row, Transaction};

use super::agents::{PresenceRow, read_presence, write_presence};
use super::{Store, StoreError};

/// One event to append; its scope columns are read from the conversation as it is now.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub account_id: String,
    pub kind: String,
    /// The event's `data`, JSON.
    pub data: String,
    pub conversation_id: Option<String>,
    /// For events that name a message but not its conversation (`message.status`).
    pub message_id: Option<String>,
    pub agent_id: Option<String>,
}

/// Who may see an event: the conversation's placement when the event happened, and the agent
/// the event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventScope {
    pub conversation_id: Option<String>,
    pub contact_id: Option<String>,
    pub inbox_id: Option<String>,
    pub team_id: Option<String>,
    pub branch_id: Option<String>,
    pub assignee_id: Option<String>,
    pub agent_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub id: i64,
    pub kind: String,
    pub data: String,
    pub scope: EventScope,
}

/// Where an account's log stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    pub last_id: i64,
    /// Events up to this id have been pruned by retention.
    pub pruned_through: i64,
}

/// A ticket taken: who may open the socket, and until when their token was valid.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub account_id: String,
    pub user_id: String,
    pub session_id: String,
    /// The minting access token's expiry (Unix seconds).
    pub token_exp: i64,
}

/// The agent's presence before and after a console opened or closed.
pub type PresenceChange = (Option<PresenceRow>, Option<PresenceRow>);

const EVENT_COLUMNS: &str = "id, kind, data, conversation_id, contact_id, inbox_id, team_id, \
                             branch_id, assignee_id, agent_id";

fn scope_at(r: &sqlx::any::AnyRow, first: usize) -> EventScope {
    EventScope {
        conversation_id: r.get(first),
        contact_id: r.get(first + 1),
        inbox_id: r.get(first + 2),
        team_id: r.get(first + 3),
        branch_id: r.get(first + 4),
        assignee_id: r.get(first + 5),
        agent_id: r.get(first + 6),
    }
}

fn logged(r: &sqlx::any::AnyRow) -> LoggedEvent {
    LoggedEvent {
        id: r.get(0),
        kind: r.get(1),
        data: r.get(2),
        scope: scope_at(r, 3),
    }
}

impl Store {
    /// Appends events in one transaction and returns them with their ids and scopes, in the
    /// order given (ids increase in that order within each account). Accounts are locked in
    /// sorted order so that two nodes' batches never deadlock.
    pub async fn append_events(&self, batch: &[NewEvent]) -> Result<Vec<LoggedEvent>, StoreError> {
        let mut tx = self.begin().await?;
        let logged = append_events_in(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(logged)
    }

    /// Events of the account with `after < id < before`, in id order, at most `limit`.
    pub async fn events_between(
        &self,
        account_id: &str,
        after: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE account_id = $1 AND id > $2 AND id < $3 \
             ORDER BY id LIMIT $4"
        )))
        .bind(account_id)
        .bind(after)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.iter().map(logged).collect())
    }

    pub async fn event_head(&self, account_id: &str) -> Result<Head, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let row =
            sqlx::query("SELECT last_id, pruned_through FROM event_heads WHERE account_id = $1")
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(row
            .map(|r| Head {
                last_id: r.get(0),
                pruned_through: r.get(1),
            })
            .unwrap_or_default())
    }

    /// Deletes events created before `cutoff_ms`, account by account, and records how far each
    /// account's log was pruned (what makes an older `last_event_id` ask for a resync).
    pub async fn prune_events(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        let accounts: Vec<String> = sqlx::query_scalar("SELECT account_id FROM event_heads")
            .fetch_all(self.pool())
            .await?;
        let mut deleted = 0;
        for account in accounts {
            let mut tx = self.begin().await?;
            let through: Option<i64> = sqlx::query_scalar(
                "SELECT max(id) FROM events WHERE account_id = $1 AND created_at < $2",
            )
            .bind(&account)
            .bind(cutoff_ms)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(through) = through {
                sqlx::query(
                    "UPDATE event_heads SET pruned_through = $2 \
                     WHERE account_id = $1 AND pruned_through < $2",
                )
                .bind(&account)
                .bind(through)
                .execute(&mut *tx)
                .await?;
                deleted += sqlx::query("DELETE FROM events WHERE account_id = $1 AND id <= $2")
                    .bind(&account)
                    .bind(through)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
        }
        Ok(deleted)
    }

    /// Stores a ticket's hash; it can be taken once, before `expires_at_ms`.
    pub async fn create_ws_ticket(
        &self,
        hash: &str,
        ticket: &Ticket,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_scoped(&ticket.account_id).await?;
        sqlx::query("DELETE FROM ws_tickets WHERE expires_at < $1")
            .bind(crate::ids::now_ms())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO ws_tickets (hash, account_id, user_id, session_id, token_exp, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash)
        .bind(&ticket.account_id)
        .bind(&ticket.user_id)
        .bind(&ticket.session_id)
        .bind(ticket.token_exp)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes a ticket: deletes it and returns it if it had not expired. A second take of the
    /// same ticket finds nothing.
    pub async fn take_ws_ticket(&self, hash: &str) -> Result<Option<Ticket>, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "DELETE FROM ws_tickets WHERE hash = $1 \
             RETURNING account_id, user_id, session_id, token_exp, expires_at",
        )
        .bind(hash)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row
            .filter(|r| r.get::<i64, _>(4) > crate::ids::now_ms())
            .map(|r| Ticket {
                account_id: r.get(0),
                user_id: r.get(1),
                session_id: r.get(2),
                token_exp: r.get(3),
            }))
    }

    /// Records an open console and keeps its agent's presence fresh; an agent who read
    /// `offline` becomes `online`. Returns the presence before and after.
    pub async fn open_console(
        &self,
        account_id: &str,
        user_id: &str,
        console_id: &str,
        node_id: &str,
        now_ms: i64,
        timeout_ms: i64,
    ) -> Result<PresenceChange, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        lock_presence(&mut tx, account_id, user_id).await?;
        let before = read_presence(&mut tx, account_id, user_id).await?;
        let status = (PresenceRow::effective(before.as_ref(), now_ms, timeout_ms) == "offline")
            .then_some("online");
        write_presence(&mut tx, account_id, user_id, status, now_ms).await?;
        sqlx::query(
            "INSERT INTO consoles (id, account_id, user_id, node_id, opened_at, seen_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(console_id)
        .bind(account_id)
        .bind(user_id)
        .bind(node_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let after = read_presence(&mut tx, account_id, user_id).await?;
        tx.commit().await?;
        Ok((before, after))
    }

    /// Forgets a closed console. When it was the agent's last live one (on any node), the agent
    /// becomes `offline`, which starts the routing engine's grace period.
    pub async fn close_console(
        &self,
        account_id: &str,
        user_id: &str,
        console_id: &str,
        now_ms: i64,
        timeout_ms: i64,
    ) -> Result<PresenceChange, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        lock_presence(&mut tx, account_id, user_id).await?;
        let before = read_presence(&mut tx, account_id, user_id).await?;
        sqlx::query("DELETE FROM consoles WHERE id = $1")
            .bind(console_id)
            .execute(&mut *tx)
            .await?;
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM consoles WHERE account_id = $1 AND user_id = $2 AND seen_at >= $3",
        )
        .bind(account_id)
        .bind(user_id)
        .bind(now_ms - timeout_ms)
        .fetch_one(&mut *tx)
        .await?;
        if others == 0 && before.as_ref().is_some_and(|p| p.status != "offline") {
            // Keeps the heartbeat as it was: only the status changes, dated now.
            sqlx::query(
                "UPDATE presence SET status = 'offline', changed_at = $3 \
                 WHERE account_id = $1 AND user_id = $2",
            )
            .bind(account_id)
            .bind(user_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        let after = read_presence(&mut tx, account_id, user_id).await?;
        tx.commit().await?;
        Ok((before, after))
    }

    /// The node's periodic heartbeat for its open consoles: they are seen, and their agents'
    /// presence stays fresh. Consoles of nodes silent for `forget_before_ms` are dropped.
    pub async fn refresh_consoles(
        &self,
        node_id: &str,
        now_ms: i64,
        forget_before_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE consoles SET seen_at = $2 WHERE node_id = $1")
            .bind(node_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE presence SET heartbeat_at = $2 \
             WHERE user_id IN (SELECT user_id FROM consoles WHERE node_id = $1)",
        )
        .bind(node_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM consoles WHERE seen_at < $1")
            .bind(forget_before_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Takes the agent's presence row lock (when there is a row) so that a console opening and
/// another closing serialise: the last one to commit decides the status, and it saw the other.
async fn lock_presence(
    conn: &mut AnyConnection,
    account_id: &str,
    user_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE presence SET changed_at = changed_at WHERE account_id = $1 AND user_id = $2",
    )
    .bind(account_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// The agents a `team` or `branch` viewer reaches, besides conversations: the members of
    /// the viewer's teams, or the users of the viewer's branch.
    pub async fn viewer_reach(
        &self,
        account_id: &str,
        user_id: &str,
        branch_id: Option<&str>,
        by_team: bool,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let ids = if by_team {
            sqlx::query_scalar(
                "SELECT DISTINCT user_id FROM team_members WHERE account_id = $1 AND team_id IN \
                 (SELECT team_id FROM team_members WHERE account_id = $1 AND user_id = $2)",
            )
            .bind(account_id)
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?
        } else {
            sqlx::query_scalar("SELECT id FROM users WHERE account_id = $1 AND branch_id = $2")
                .bind(account_id)
                .bind(branch_id)
                .fetch_all(&mut *tx)
                .await?
        };
        tx.commit().await?;
        Ok(ids)
    }
}

impl Store {
    /// The contact a web-chat visitor became (once their first message was stored).
    pub async fn visitor_contact(
        &self,
        account_id: &str,
        visitor_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let id = sqlx::query_scalar(
            "SELECT contact_id FROM contact_identities \
             WHERE account_id = $1 AND kind = 'web_visitor' AND value = $2",
        )
        .bind(account_id)
        .bind(visitor_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }
}

impl Store {
    /// Each inbox's team and branch: who may see its queue figures.
    pub async fn inbox_placements(
        &self,
        account_id: &str,
    ) -> Result<Vec<(String, Option<String>, Option<String>)>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query("SELECT id, team_id, branch_id FROM inboxes WHERE account_id = $1")
            .bind(account_id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }
}

/// [`Store::append_events`] inside `tx`: the events commit with the change they describe. The
/// account's head row stays locked until `tx` ends, so append last, just before the commit.
pub(crate) async fn append_events_in(
    tx: &mut Transaction<'static, Any>,
    batch: &[NewEvent],
) -> Result<Vec<LoggedEvent>, StoreError> {
    let now = crate::ids::now_ms();
    let mut accounts: Vec<&str> = batch.iter().map(|e| e.account_id.as_str()).collect();
    accounts.sort_unstable();
    accounts.dedup();
    let mut out: Vec<Option<LoggedEvent>> = vec![None; batch.len()];
    for account in accounts {
        let mine: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].account_id == account)
            .collect();
        let n = mine.len() as i64;
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO event_heads (account_id, last_id) VALUES ($1, $2) \
             ON CONFLICT (account_id) DO UPDATE SET last_id = event_heads.last_id + excluded.last_id \
             RETURNING last_id",
        )
        .bind(account)
        .bind(n)
        .fetch_one(&mut **tx)
        .await?;
        for (k, &i) in mine.iter().enumerate() {
            let e = &batch[i];
            let id = last - n + 1 + k as i64;
            let row = sqlx::query(
                "INSERT INTO events (account_id, id, kind, data, conversation_id, contact_id, \
                   inbox_id, team_id, branch_id, assignee_id, agent_id, created_at) \
                 SELECT $1, $2, $3, $4, c.id, c.contact_id, c.inbox_id, c.team_id, c.branch_id, \
                   c.assignee_id, $7, $8 \
                 FROM (SELECT 1 AS one) AS x LEFT JOIN conversations c ON c.account_id = $1 \
                   AND c.id = COALESCE($5, (SELECT m.conversation_id FROM messages m \
                                            WHERE m.account_id = $1 AND m.id = $6)) \
                 RETURNING conversation_id, contact_id, inbox_id, team_id, branch_id, \
                   assignee_id, agent_id",
            )
            .bind(account)
            .bind(id)
            .bind(&e.kind)
            .bind(&e.data)
            .bind(e.conversation_id.as_deref())
            .bind(e.message_id.as_deref())
            .bind(e.agent_id.as_deref())
            .bind(now)
            .fetch_one(&mut **tx)
            .await?;
            out[i] = Some(LoggedEvent {
                id,
                kind: e.kind.clone(),
                data: e.data.clone(),
                scope: scope_at(&row, 0),
            });
        }
    }
    Ok(out.into_iter().flatten().collect())
}
