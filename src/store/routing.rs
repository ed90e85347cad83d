//! The assignment engine's side of the store (docs/ROUTING-DESIGN.md): reading an account's
//! picture, and the transactions that are the arbiter of every routing change.
//!
//! Every change of who holds a conversation is one transaction that re-checks, in SQL, what
//! the decision assumed. Rows are always locked conversation first, agent second, so two
//! writers never wait on each other in a cycle. The guards:
//!
//! * the conversation is still `waiting` with no assignee (one assignee, ever);
//! * `UPDATE agent_load SET active = active + 1 … WHERE active < capacity` (no overrun: the row
//!   lock serialises every commit for that agent and channel, across nodes);
//! * the agent is active, `online`, with a heartbeat newer than the presence timeout (no
//!   assignment to an agent who went offline a moment ago);
//! * the agent is not excluded from the conversation.
//!
//! A guard that fails rolls the whole transaction back; the caller refreshes and decides again.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::{AnyConnection, Row};
use switchboard_routing::engine::{Agent, CHANNEL_COUNT, LastAgent, Waiting, channel_index};
use switchboard_routing::expr::{AgentView, CHANNELS, ConvView, Value};

use super::audit::{AuditRecord, append};
use super::conversations::{Conversation, conversation};
use super::{Locked, Store, StoreError, lock_row};
use crate::http::routing_rules::attribute;
use crate::ids;

/// How long the WhatsApp customer-service window stays open after the customer's last message.
pub const WHATSAPP_WINDOW_MS: i64 = 24 * 3_600_000;

/// A pending (or decided) offer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Offer {
    pub id: String,
    pub conversation_id: String,
    pub agent_id: String,
    /// The conversation's channel (`whatsapp`, `sms`, `webchat`).
    pub channel: String,
    /// Who is waiting: the conversation's contact's name, if known.
    pub contact_name: Option<String>,
    /// `pending`, `accepted`, `declined`, `expired` or `withdrawn`.
    pub state: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// One routing trace entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TraceEntry {
    pub id: String,
    pub at_ms: i64,
    /// `assigned`, `offered`, `waiting`, `offer_accepted`, `offer_declined`, `offer_expired`,
    /// `offer_withdrawn`, `grace_expired`, `no_reply`, `unassigned`, `manual`, `resolved`,
    /// `snoozed`, `reopened`.
    pub kind: String,
    /// The engine's reasons (for decisions: rule, step, counts, top candidates, tie-break).
    #[schema(value_type = Object)]
    pub trace: serde_json::Value,
}

/// What an engine placement did.
#[derive(Debug)]
pub enum Placed {
    Assigned(Conversation),
    Offered(Conversation, Offer),
    /// A guard failed: `conversation` (taken, resolved or excluded meanwhile) or `agent`
    /// (full, offline or deactivated meanwhile).
    Lost(&'static str),
}

/// A placement the engine decided.
pub struct Placement<'a> {
    pub account_id: &'a str,
    pub conversation_id: &'a str,
    pub agent_id: &'a str,
    pub channel: &'a str,
    pub step: i64,
    /// `Some(expires_at)`: offer, otherwise assign.
    pub offer_expires_at: Option<i64>,
    /// The agent's heartbeat must be at least this recent (ms).
    pub fresh_after: i64,
    pub trace: &'a str,
    pub now: i64,
}

/// A conversation an assignee holds, with what decides whether it goes back to the queue.
#[derive(Debug, Clone)]
pub struct Held {
    pub conversation_id: String,
    pub agent_id: String,
    pub assigned_at: i64,
    /// When the assignee went offline (effective presence), if they are.
    pub offline_since: Option<i64>,
    /// When the assignee's presence goes stale unless another heartbeat comes, if they are
    /// not offline.
    pub fresh_until: Option<i64>,
    /// Whether anyone replied since the assignment.
    pub replied: bool,
}

/// Why a conversation went back to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// The assignee stayed offline past the grace period.
    GraceExpired,
    /// The assignee did not reply in time (they are excluded from it).
    NoReply,
}

impl Requeue {
    pub fn as_str(self) -> &'static str {
        match self {
            Requeue::GraceExpired => "grace_expired",
            Requeue::NoReply => "no_reply",
        }
    }

    fn excludes(self) -> bool {
        !matches!(self, Requeue::GraceExpired)
    }
}

/// Queue statistics of one inbox or team.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    pub id: String,
    pub name: String,
    /// The inbox's channel (inbox rows only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub waiting: i64,
    pub offered: i64,
    pub assigned: i64,
    /// How long the longest-waiting conversation has waited (ms; 0 when none waits).
    pub longest_wait_ms: i64,
    /// Agents online with a free slot on the channel (inbox) or any channel (team).
    pub available_agents: i64,
    /// Slots of online agents: configured, and free.
    pub capacity_total: i64,
    pub capacity_free: i64,
}

/// Contact attributes as rules read them (unknown JSON shapes read as null).
pub fn attributes(json: &str) -> BTreeMap<String, Value> {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), attribute(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

async fn release_slot(
    conn: &mut AnyConnection,
    agent_id: &str,
    channel: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE agent_load SET active = active - 1 WHERE user_id = $1 AND channel = $2 AND active > 0",
    )
    .bind(agent_id)
    .bind(channel)
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_trace(
    conn: &mut AnyConnection,
    account_id: &str,
    conversation_id: &str,
    kind: &str,
    trace: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO routing_traces (id, account_id, conversation_id, at, kind, trace) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(ids::new(ids::TRACE))
    .bind(account_id)
    .bind(conversation_id)
    .bind(now)
    .bind(kind)
    .bind(trace)
    .execute(conn)
    .await?;
    Ok(())
}

async fn exclude(
    conn: &mut AnyConnection,
    account_id: &str,
    conversation_id: &str,
    agent_id: &str,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO routing_exclusions (account_id, conversation_id, agent_id, reason, at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(account_id)
    .bind(conversation_id)
    .bind(agent_id)
    .bind(reason)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives `agent_id` the conversation outside the engine (a manual assignment, a reopen): one
/// more active conversation on the channel, even past capacity, and the assignment on record.
#[allow(clippy::too_many_arguments)]
async fn take_slot(
    conn: &mut AnyConnection,
    account_id: &str,
    conversation_id: &str,
    agent_id: &str,
    channel: &str,
    reason: &str,
    by: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO agent_load (account_id, user_id, channel, capacity, active, last_assigned_at) \
         VALUES ($1, $2, $3, 0, 1, $4) ON CONFLICT (user_id, channel) \
         DO UPDATE SET active = agent_load.active + 1, last_assigned_at = $4",
    )
    .bind(account_id)
    .bind(agent_id)
    .bind(channel)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    start_assignment(conn, account_id, conversation_id, agent_id, reason, by, now).await
}

async fn start_assignment(
    conn: &mut AnyConnection,
    account_id: &str,
    conversation_id: &str,
    agent_id: &str,
    reason: &str,
    by: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO assignments (id, account_id, conversation_id, contact_id, agent_id, reason, \
         by_user_id, at) SELECT $1, $2, $3, contact_id, $4, $5, $6, $7 FROM conversations WHERE id = $3",
    )
    .bind(ids::new(ids::ASSIGNMENT))
    .bind(account_id)
    .bind(conversation_id)
    .bind(agent_id)
    .bind(reason)
    .bind(by)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE contacts SET last_agent_id = $1, last_agent_at = $2 \
         WHERE id = (SELECT contact_id FROM conversations WHERE id = $3)",
    )
    .bind(agent_id)
    .bind(now)
    .bind(conversation_id)
    .execute(conn)
    .await?;
    Ok(())
}

async fn end_assignment(
    conn: &mut AnyConnection,
    conversation_id: &str,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE assignments SET ended_at = $1, end_reason = $2 WHERE conversation_id = $3 \
         AND ended_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(conversation_id)
    .execute(conn)
    .await?;
    Ok(())
}

async fn read_conversation(
    conn: &mut AnyConnection,
    conversation_id: &str,
) -> Result<Conversation, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        conversation_columns!(),
        " FROM conversations WHERE id = $1"
    ))
    .bind(conversation_id)
    .fetch_one(conn)
    .await?;
    Ok(conversation(&row))
}

fn offer(r: &sqlx::any::AnyRow) -> Offer {
    Offer {
        id: r.get(0),
        conversation_id: r.get(1),
        agent_id: r.get(2),
        channel: r.get(3),
        contact_name: None,
        state: r.get(4),
        created_at_ms: r.get(5),
        expires_at_ms: r.get(6),
    }
}

macro_rules! offer_columns {
    () => {
        offer_columns!("")
    };
    ($p:literal) => {
        concat!(
            $p,
            "id, ",
            $p,
            "conversation_id, ",
            $p,
            "agent_id, ",
            $p,
            "channel, ",
            $p,
            "state, ",
            $p,
            "created_at, ",
            $p,
            "expires_at"
        )
    };
}

/// The name of the contact waiting in a conversation (what an offer shows).
async fn contact_name(
    conn: &mut AnyConnection,
    conversation_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query(
        "SELECT ct.name FROM conversations c JOIN contacts ct ON ct.id = c.contact_id \
         WHERE c.id = $1",
    )
    .bind(conversation_id)
    .fetch_optional(conn)
    .await?
    .and_then(|r| r.get(0)))
}

/// An offer's outcome other than acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferEnd {
    Declined,
    Expired,
}

impl OfferEnd {
    fn state(self) -> &'static str {
        match self {
            OfferEnd::Declined => "declined",
            OfferEnd::Expired => "expired",
        }
    }
}

/// A resolved conversation cannot be snoozed (reopen it first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved;

/// The contact's other unresolved conversation in the inbox, which keeps a resolved one
/// from reopening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherOpen(pub String);

/// Why an agent's answer to an offer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferRefusal {
    /// No such offer to this agent.
    NotFound,
    /// It was already answered, expired or withdrawn.
    NotPending,
}

impl Store {
    /// Every account id (the dispatcher's starting set).
    pub async fn account_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query("SELECT id FROM accounts ORDER BY id")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// The account's routable agents (active users with a slot on some channel) as the engine
    /// sees them. `fresh_after`: a heartbeat older than this reads offline.
    pub async fn routable_agents(
        &self,
        account_id: &str,
        fresh_after: i64,
    ) -> Result<Vec<Agent>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let mut agents: HashMap<String, Agent> = HashMap::new();
        for r in sqlx::query(
            "SELECT l.user_id, l.channel, l.capacity, l.active, l.last_assigned_at \
             FROM agent_load l JOIN users u ON u.id = l.user_id \
             WHERE l.account_id = $1 AND u.active = 1",
        )
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await?
        {
            let id: String = r.get(0);
            let Some(ch) = channel_index(&r.get::<String, _>(1)) else {
                continue;
            };
            let a = agents.entry(id.clone()).or_insert_with(|| Agent {
                view: AgentView {
                    id,
                    ..AgentView::default()
                },
                online: false,
                capacity: [0; CHANNEL_COUNT],
                active: [0; CHANNEL_COUNT],
                last_assigned_at: 0,
            });
            a.capacity[ch] = u32::try_from(r.get::<i64, _>(2)).unwrap_or(0);
            a.active[ch] = u32::try_from(r.get::<i64, _>(3)).unwrap_or(0);
            a.last_assigned_at = a.last_assigned_at.max(r.get(4));
        }
        agents.retain(|_, a| a.capacity.iter().any(|c| *c > 0));
        for r in sqlx::query(
            "SELECT u.id, b.name FROM users u JOIN branches b ON b.id = u.branch_id \
             WHERE u.account_id = $1",
        )
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await?
        {
            if let Some(a) = agents.get_mut(&r.get::<String, _>(0)) {
                a.view.branch = Some(r.get(1));
            }
        }
        for r in sqlx::query(
            "SELECT m.user_id, t.name FROM team_members m JOIN teams t ON t.id = m.team_id \
             WHERE t.account_id = $1",
        )
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await?
        {
            if let Some(a) = agents.get_mut(&r.get::<String, _>(0)) {
                a.view.teams.push(r.get(1));
            }
        }
        for (sql, skills) in [
            (
                "SELECT user_id, skill, level FROM agent_skills WHERE account_id = $1",
                true,
            ),
            (
                "SELECT user_id, lang, level FROM agent_languages WHERE account_id = $1",
                false,
            ),
        ] {
            for r in sqlx::query(sql)
                .bind(account_id)
                .fetch_all(&mut *conn)
                .await?
            {
                if let Some(a) = agents.get_mut(&r.get::<String, _>(0)) {
                    let level = u8::try_from(r.get::<i64, _>(2).clamp(0, 5)).unwrap_or(0);
                    let map = if skills {
                        &mut a.view.skills
                    } else {
                        &mut a.view.languages
                    };
                    map.insert(r.get(1), level);
                }
            }
        }
        for r in sqlx::query(
            "SELECT user_id FROM presence WHERE account_id = $1 AND status = 'online' \
             AND heartbeat_at >= $2",
        )
        .bind(account_id)
        .bind(fresh_after)
        .fetch_all(&mut *conn)
        .await?
        {
            if let Some(a) = agents.get_mut(&r.get::<String, _>(0)) {
                a.online = true;
            }
        }
        let mut out: Vec<Agent> = agents.into_values().collect();
        out.sort_by(|a, b| a.view.id.cmp(&b.view.id));
        Ok(out)
    }

    /// The account's waiting conversations as the engine sees them, each with the step last
    /// traced for it. The contact's last agent counts when assigned after `affinity_since`.
    pub async fn waiting_conversations(
        &self,
        account_id: &str,
        affinity_since: i64,
    ) -> Result<Vec<(Waiting, Option<i64>)>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        let rows = sqlx::query(
            "SELECT c.id, c.channel, c.priority, c.queued_at, c.last_inbound_at, c.route_step, \
             ct.last_agent_id, i.slug, t.name, ct.attributes, c.first_message, c.labels, c.language, \
             ct.last_agent_at \
             FROM conversations c JOIN inboxes i ON i.id = c.inbox_id \
             JOIN contacts ct ON ct.id = c.contact_id LEFT JOIN teams t ON t.id = c.team_id \
             WHERE c.account_id = $1 AND c.routing_state = 'waiting'",
        )
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut excluded: HashMap<String, Vec<String>> = HashMap::new();
        for r in sqlx::query(
            "SELECT e.conversation_id, e.agent_id FROM routing_exclusions e \
             JOIN conversations c ON c.id = e.conversation_id \
             WHERE c.account_id = $1 AND c.routing_state = 'waiting'",
        )
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await?
        {
            excluded.entry(r.get(0)).or_default().push(r.get(1));
        }
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                let channel: String = r.get(1);
                let last_inbound: Option<i64> = r.get(4);
                let last_agent_id: Option<String> = r.get(6);
                let last_agent_at: Option<i64> = r.get(13);
                let waiting = Waiting {
                    conv: ConvView {
                        channel: channel.clone(),
                        inbox: r.get(7),
                        language: r.get(12),
                        labels: serde_json::from_str(&r.get::<String, _>(11)).unwrap_or_default(),
                        priority: r.get(2),
                        first_message: r.get(10),
                        contact: attributes(&r.get::<String, _>(9)),
                    },
                    inbox_team: r.get(8),
                    queued_at: r.get::<Option<i64>, _>(3).unwrap_or(0),
                    reply_deadline: (channel == CHANNELS[0])
                        .then_some(last_inbound)
                        .flatten()
                        .map(|t| t.saturating_add(WHATSAPP_WINDOW_MS)),
                    last_agent: match (last_agent_id, last_agent_at) {
                        (Some(id), Some(at)) if at >= affinity_since => Some(LastAgent { id, at }),
                        _ => None,
                    },
                    excluded: excluded.remove(&id).unwrap_or_default(),
                    id,
                };
                (waiting, r.get(5))
            })
            .collect())
    }

    /// Commits one engine decision, or reports which guard failed.
    pub async fn place(&self, p: &Placement<'_>) -> Result<Placed, StoreError> {
        let mut tx = self.begin().await?;
        let state = if p.offer_expires_at.is_some() {
            "offered"
        } else {
            "assigned"
        };
        let taken = sqlx::query(
            "UPDATE conversations SET routing_state = $1, \
             assignee_id = CASE WHEN $1 = 'assigned' THEN $2 ELSE NULL END, \
             assigned_at = CASE WHEN $1 = 'assigned' THEN $3 ELSE NULL END, route_step = $4, \
             updated_at = $3 \
             WHERE id = $5 AND account_id = $6 AND routing_state = 'waiting' AND assignee_id IS NULL \
             AND status <> 'resolved' AND NOT EXISTS (SELECT 1 FROM routing_exclusions e \
             WHERE e.conversation_id = $5 AND e.agent_id = $2)",
        )
        .bind(state)
        .bind(p.agent_id)
        .bind(p.now)
        .bind(p.step)
        .bind(p.conversation_id)
        .bind(p.account_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken == 0 {
            tx.rollback().await?;
            return Ok(Placed::Lost("conversation"));
        }
        let slot = sqlx::query(
            "UPDATE agent_load SET active = active + 1, last_assigned_at = $1 \
             WHERE user_id = $2 AND channel = $3 AND account_id = $4 AND active < capacity \
             AND EXISTS (SELECT 1 FROM presence p WHERE p.user_id = $2 AND p.status = 'online' \
             AND p.heartbeat_at >= $5) \
             AND EXISTS (SELECT 1 FROM users u WHERE u.id = $2 AND u.active = 1)",
        )
        .bind(p.now)
        .bind(p.agent_id)
        .bind(p.channel)
        .bind(p.account_id)
        .bind(p.fresh_after)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if slot == 0 {
            tx.rollback().await?;
            return Ok(Placed::Lost("agent"));
        }
        insert_trace(
            &mut tx,
            p.account_id,
            p.conversation_id,
            state,
            p.trace,
            p.now,
        )
        .await?;
        let placed = match p.offer_expires_at {
            None => {
                start_assignment(
                    &mut tx,
                    p.account_id,
                    p.conversation_id,
                    p.agent_id,
                    "auto",
                    None,
                    p.now,
                )
                .await?;
                Placed::Assigned(read_conversation(&mut tx, p.conversation_id).await?)
            }
            Some(expires_at) => {
                let id = ids::new(ids::OFFER);
                sqlx::query(
                    "INSERT INTO offers (id, account_id, conversation_id, agent_id, channel, state, \
                     created_at, expires_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
                )
                .bind(&id)
                .bind(p.account_id)
                .bind(p.conversation_id)
                .bind(p.agent_id)
                .bind(p.channel)
                .bind(p.now)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
                let offer = Offer {
                    id,
                    conversation_id: p.conversation_id.to_owned(),
                    agent_id: p.agent_id.to_owned(),
                    channel: p.channel.to_owned(),
                    contact_name: contact_name(&mut tx, p.conversation_id).await?,
                    state: "pending".to_owned(),
                    created_at_ms: p.now,
                    expires_at_ms: expires_at,
                };
                Placed::Offered(read_conversation(&mut tx, p.conversation_id).await?, offer)
            }
        };
        tx.commit().await?;
        Ok(placed)
    }

    /// Records why conversations still wait, once per step each: `(conversation id, step,
    /// trace)`, all in one transaction (a burst of arrivals must not take the write lock once
    /// per conversation).
    pub async fn trace_waiting(
        &self,
        account_id: &str,
        items: &[(String, i64, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for (conversation_id, step, trace) in items {
            let moved = sqlx::query(
                "UPDATE conversations SET route_step = $1 WHERE id = $2 \
                 AND routing_state = 'waiting' AND (route_step IS NULL OR route_step <> $1)",
            )
            .bind(step)
            .bind(conversation_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 1 {
                insert_trace(&mut tx, account_id, conversation_id, "waiting", trace, now).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Pending offers of the account due at or before `now`, and the earliest one after.
    pub async fn due_offers(
        &self,
        account_id: &str,
        now: i64,
    ) -> Result<(Vec<Offer>, Option<i64>), StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            offer_columns!(),
            " FROM offers WHERE account_id = $1 AND state = 'pending' ORDER BY expires_at"
        ))
        .bind(account_id)
        .fetch_all(self.pool())
        .await?;
        let (due, later): (Vec<Offer>, Vec<Offer>) =
            rows.iter().map(offer).partition(|o| o.expires_at_ms <= now);
        Ok((due, later.first().map(|o| o.expires_at_ms)))
    }

    /// An agent's pending offers, each with who is waiting.
    pub async fn pending_offers(&self, agent_id: &str) -> Result<Vec<Offer>, StoreError> {
        Ok(sqlx::query(concat!(
            "SELECT ",
            offer_columns!("o."),
            ", ct.name FROM offers o JOIN conversations c ON c.id = o.conversation_id \
             JOIN contacts ct ON ct.id = c.contact_id \
             WHERE o.agent_id = $1 AND o.state = 'pending' ORDER BY o.created_at, o.id"
        ))
        .bind(agent_id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| Offer {
            contact_name: r.get(7),
            ..offer(r)
        })
        .collect())
    }

    /// The agent accepts an offer: the conversation is theirs.
    pub async fn accept_offer(
        &self,
        account_id: &str,
        offer_id: &str,
        agent_id: &str,
        now: i64,
    ) -> Result<Result<Conversation, OfferRefusal>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let Some(row) = sqlx::query(
            "UPDATE offers SET state = 'accepted', decided_at = $1 WHERE id = $2 AND agent_id = $3 \
             AND account_id = $4 AND state = 'pending' AND expires_at > $1 RETURNING conversation_id",
        )
        .bind(now)
        .bind(offer_id)
        .bind(agent_id)
        .bind(account_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            tx.rollback().await?;
            return Ok(Err(self.offer_refusal(account_id, offer_id, agent_id).await?));
        };
        let conversation_id: String = row.get(0);
        sqlx::query(
            "UPDATE conversations SET routing_state = 'assigned', assignee_id = $1, assigned_at = $2, \
             updated_at = $2 WHERE id = $3 AND routing_state = 'offered'",
        )
        .bind(agent_id)
        .bind(now)
        .bind(&conversation_id)
        .execute(&mut *tx)
        .await?;
        start_assignment(
            &mut tx,
            account_id,
            &conversation_id,
            agent_id,
            "offer_accepted",
            Some(agent_id),
            now,
        )
        .await?;
        let trace = serde_json::json!({ "offer_id": offer_id, "agent_id": agent_id }).to_string();
        insert_trace(
            &mut tx,
            account_id,
            &conversation_id,
            "offer_accepted",
            &trace,
            now,
        )
        .await?;
        let conv = read_conversation(&mut tx, &conversation_id).await?;
        tx.commit().await?;
        Ok(Ok(conv))
    }

    async fn offer_refusal(
        &self,
        account_id: &str,
        offer_id: &str,
        agent_id: &str,
    ) -> Result<OfferRefusal, StoreError> {
        let exists =
            sqlx::query("SELECT 1 FROM offers WHERE id = $1 AND agent_id = $2 AND account_id = $3")
                .bind(offer_id)
                .bind(agent_id)
                .bind(account_id)
                .fetch_optional(self.pool())
                .await?
                .is_some();
        Ok(if exists {
            OfferRefusal::NotPending
        } else {
            OfferRefusal::NotFound
        })
    }

    /// Ends a pending offer without acceptance (declined by `agent_id`, or expired): the
    /// agent is excluded, their slot freed, and the conversation waits again.
    pub async fn end_offer(
        &self,
        account_id: &str,
        offer_id: &str,
        agent_id: Option<&str>,
        end: OfferEnd,
        now: i64,
    ) -> Result<Result<Offer, OfferRefusal>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let Some(row) = sqlx::query(concat!(
            "UPDATE offers SET state = $1, decided_at = $2 WHERE id = $3 AND account_id = $4 \
             AND state = 'pending' AND ($5 IS NULL OR agent_id = $5) \
             RETURNING ",
            offer_columns!()
        ))
        .bind(end.state())
        .bind(now)
        .bind(offer_id)
        .bind(account_id)
        .bind(agent_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            tx.rollback().await?;
            let refusal = match agent_id {
                Some(agent) => self.offer_refusal(account_id, offer_id, agent).await?,
                None => OfferRefusal::NotPending,
            };
            return Ok(Err(refusal));
        };
        let mut ended = offer(&row);
        ended.contact_name = contact_name(&mut tx, &ended.conversation_id).await?;
        sqlx::query(
            "UPDATE conversations SET routing_state = 'waiting', route_step = NULL, updated_at = $1 \
             WHERE id = $2 AND routing_state = 'offered'",
        )
        .bind(now)
        .bind(&ended.conversation_id)
        .execute(&mut *tx)
        .await?;
        release_slot(&mut tx, &ended.agent_id, &ended.channel).await?;
        let reason = format!("offer_{}", end.state());
        exclude(
            &mut tx,
            account_id,
            &ended.conversation_id,
            &ended.agent_id,
            &reason,
            now,
        )
        .await?;
        let trace =
            serde_json::json!({ "offer_id": ended.id, "agent_id": ended.agent_id }).to_string();
        insert_trace(
            &mut tx,
            account_id,
            &ended.conversation_id,
            &reason,
            &trace,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(ended))
    }

    /// Assigned conversations of the account with what decides their return to the queue.
    /// `fresh_after`: a heartbeat older than this reads offline; `timeout_ms` is the presence
    /// timeout, to date when a silent agent went offline.
    pub async fn held_conversations(
        &self,
        account_id: &str,
        fresh_after: i64,
        timeout_ms: i64,
    ) -> Result<Vec<Held>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.id, c.assignee_id, c.assigned_at, p.status, p.heartbeat_at, p.changed_at, \
             CASE WHEN EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id \
             AND m.direction = 'outbound' AND m.created_at >= c.assigned_at) THEN 1 ELSE 0 END \
             FROM conversations c LEFT JOIN presence p ON p.user_id = c.assignee_id \
             WHERE c.account_id = $1 AND c.routing_state = 'assigned' AND c.assignee_id IS NOT NULL \
             AND c.status <> 'snoozed'",
        )
        .bind(account_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let assigned_at: i64 = r.get::<Option<i64>, _>(2).unwrap_or(0);
                let status: Option<String> = r.get(3);
                let heartbeat: Option<i64> = r.get(4);
                let changed: Option<i64> = r.get(5);
                let offline_since = match (status.as_deref(), heartbeat, changed) {
                    (Some("offline"), _, Some(changed)) => Some(changed),
                    (Some(_), Some(hb), _) if hb < fresh_after => Some(hb + timeout_ms),
                    (Some(_), _, _) => None,
                    // Never signed in to routing: offline since the assignment.
                    (None, _, _) => Some(assigned_at),
                }
                .map(|t| t.max(assigned_at));
                let fresh_until = match (status.as_deref(), heartbeat) {
                    (Some(s), Some(hb)) if s != "offline" && hb >= fresh_after => {
                        Some(hb + timeout_ms)
                    }
                    _ => None,
                };
                Held {
                    fresh_until,
                    conversation_id: r.get(0),
                    agent_id: r.get(1),
                    assigned_at,
                    offline_since,
                    replied: r.get::<i64, _>(6) == 1,
                }
            })
            .collect())
    }

    /// Puts an assigned conversation back in the queue at its original position, if
    /// `agent_id` still holds it. Returns the conversation when it moved.
    pub async fn requeue(
        &self,
        account_id: &str,
        conversation_id: &str,
        agent_id: &str,
        why: Requeue,
        now: i64,
    ) -> Result<Option<Conversation>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let Some(row) = sqlx::query(
            "UPDATE conversations SET routing_state = 'waiting', assignee_id = NULL, \
             assigned_at = NULL, route_step = NULL, updated_at = $1 \
             WHERE id = $2 AND account_id = $3 AND routing_state = 'assigned' AND assignee_id = $4 \
             AND status <> 'snoozed' RETURNING channel",
        )
        .bind(now)
        .bind(conversation_id)
        .bind(account_id)
        .bind(agent_id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let channel: String = row.get(0);
        release_slot(&mut tx, agent_id, &channel).await?;
        end_assignment(&mut tx, conversation_id, why.as_str(), now).await?;
        if why.excludes() {
            exclude(
                &mut tx,
                account_id,
                conversation_id,
                agent_id,
                why.as_str(),
                now,
            )
            .await?;
        }
        let trace = serde_json::json!({ "agent_id": agent_id }).to_string();
        insert_trace(
            &mut tx,
            account_id,
            conversation_id,
            why.as_str(),
            &trace,
            now,
        )
        .await?;
        let conv = read_conversation(&mut tx, conversation_id).await?;
        tx.commit().await?;
        Ok(Some(conv))
    }

    /// Manual assignment (a supervisor's override): the conversation goes to `agent_id`
    /// whatever its routing state, counting against the agent's load. Capacity is not a
    /// guard here: a person decided. The previous holder's slot (or pending offer) is freed.
    pub async fn assign_manually(
        &self,
        account_id: &str,
        conversation_id: &str,
        agent_id: &str,
        record: AuditRecord,
        now: i64,
    ) -> Result<Option<Conversation>, StoreError> {
        let by = record
            .actor_id
            .clone()
            .unwrap_or_else(|| "system".to_owned());
        let by = by.as_str();
        let mut tx = self.begin_scoped(account_id).await?;
        if !lock_row(&mut tx, Locked::Conversations, account_id, conversation_id).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let before = read_conversation(&mut tx, conversation_id).await?;
        if before.routing_state == "assigned" && before.assignee_id.as_deref() == Some(agent_id) {
            tx.rollback().await?;
            return Ok(Some(before));
        }
        self::free_holder(&mut tx, &before, "reassigned", now).await?;
        sqlx::query(
            "UPDATE conversations SET assignee_id = $1, routing_state = CASE WHEN status = 'resolved' \
             THEN 'idle' ELSE 'assigned' END, assigned_at = $2, updated_at = $2 WHERE id = $3",
        )
        .bind(agent_id)
        .bind(now)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
        if before.status != "resolved" {
            take_slot(
                &mut tx,
                account_id,
                conversation_id,
                agent_id,
                &before.channel,
                "manual",
                Some(by),
                now,
            )
            .await?;
        }
        let trace =
            serde_json::json!({ "agent_id": agent_id, "by": by, "previous": before.assignee_id });
        finish_manual(tx, &before, "manual", &trace, record, now)
            .await
            .map(Some)
    }

    /// Takes a conversation off its assignee (or withdraws its offer) and queues it again,
    /// excluding that agent. An unassigned conversation is returned unchanged.
    pub async fn unassign(
        &self,
        account_id: &str,
        conversation_id: &str,
        record: AuditRecord,
        now: i64,
    ) -> Result<Option<Conversation>, StoreError> {
        let by = record
            .actor_id
            .clone()
            .unwrap_or_else(|| "system".to_owned());
        let mut tx = self.begin_scoped(account_id).await?;
        if !lock_row(&mut tx, Locked::Conversations, account_id, conversation_id).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let before = read_conversation(&mut tx, conversation_id).await?;
        let holder = before.assignee_id.clone();
        self::free_holder(&mut tx, &before, "unassigned", now).await?;
        // A snoozed conversation waits for its wake time, not for an agent.
        let open = before.status != "resolved" && before.status != "snoozed";
        sqlx::query(
            "UPDATE conversations SET assignee_id = NULL, assigned_at = NULL, route_step = NULL, \
             routing_state = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(if open { "waiting" } else { "idle" })
        .bind(now)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
        if let (true, Some(agent)) = (open, holder.as_deref()) {
            exclude(
                &mut tx,
                account_id,
                conversation_id,
                agent,
                "unassigned",
                now,
            )
            .await?;
        }
        let trace = serde_json::json!({ "agent_id": holder, "by": by });
        finish_manual(tx, &before, "unassigned", &trace, record, now)
            .await
            .map(Some)
    }

    /// Resolves a conversation: it leaves routing and its holder's slot is freed. Resolving a
    /// resolved conversation changes nothing.
    pub async fn resolve(
        &self,
        account_id: &str,
        conversation_id: &str,
        by: Option<&str>,
        now: i64,
    ) -> Result<Option<(Conversation, bool)>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        if !lock_row(&mut tx, Locked::Conversations, account_id, conversation_id).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let before = read_conversation(&mut tx, conversation_id).await?;
        if before.status == "resolved" {
            tx.rollback().await?;
            return Ok(Some((before, false)));
        }
        self::free_holder(&mut tx, &before, "resolved", now).await?;
        sqlx::query(
            "UPDATE conversations SET status = 'resolved', resolved_at = $1, routing_state = 'idle', \
             updated_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
        let trace = serde_json::json!({ "by": by }).to_string();
        insert_trace(
            &mut tx,
            account_id,
            conversation_id,
            "resolved",
            &trace,
            now,
        )
        .await?;
        let conv = read_conversation(&mut tx, conversation_id).await?;
        tx.commit().await?;
        Ok(Some((conv, true)))
    }

    /// Snoozes a conversation until `until`: status `snoozed`. An assignee keeps it (and their
    /// slot); one waiting for an agent leaves the queue (a pending offer is withdrawn) and
    /// returns at its original place when it wakes. Snoozing a snoozed conversation moves its
    /// wake time. A resolved one is refused.
    pub async fn snooze(
        &self,
        account_id: &str,
        conversation_id: &str,
        until: i64,
        by: Option<&str>,
        now: i64,
    ) -> Result<Option<Result<Conversation, Resolved>>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        if !lock_row(&mut tx, Locked::Conversations, account_id, conversation_id).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let before = read_conversation(&mut tx, conversation_id).await?;
        if before.status == "resolved" {
            tx.rollback().await?;
            return Ok(Some(Err(Resolved)));
        }
        if before.routing_state == "offered" {
            self::free_holder(&mut tx, &before, "snoozed", now).await?;
        }
        sqlx::query(
            "UPDATE conversations SET status = 'snoozed', snoozed_until = $1, updated_at = $2, \
             routing_state = CASE WHEN routing_state IN ('waiting', 'offered') THEN 'idle' \
             ELSE routing_state END WHERE id = $3",
        )
        .bind(until)
        .bind(now)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
        let trace = serde_json::json!({ "by": by, "until_ms": until }).to_string();
        insert_trace(&mut tx, account_id, conversation_id, "snoozed", &trace, now).await?;
        let conv = read_conversation(&mut tx, conversation_id).await?;
        tx.commit().await?;
        Ok(Some(Ok(conv)))
    }

    /// Reopens a resolved or snoozed conversation: `open` again. A snoozed one wakes as its
    /// wake time would wake it. A resolved one goes back to its last assignee if they are
    /// still an active user (a slot taken as an override, like a manual assignment), else into
    /// the queue as a new conversation would. An open conversation is returned unchanged
    /// (`false`). Refused when the contact has another unresolved conversation in the inbox
    /// (the `conversations_one_open` index): its id is returned.
    pub async fn reopen(
        &self,
        account_id: &str,
        conversation_id: &str,
        by: Option<&str>,
        now: i64,
    ) -> Result<Option<Result<(Conversation, bool), OtherOpen>>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        if !lock_row(&mut tx, Locked::Conversations, account_id, conversation_id).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let before = read_conversation(&mut tx, conversation_id).await?;
        let trace = serde_json::json!({ "by": by, "from": before.status }).to_string();
        match before.status.as_str() {
            "snoozed" => {
                super::conversations::wake_in(&mut tx, conversation_id, now).await?;
            }
            "resolved" => {
                let other = "SELECT id FROM conversations WHERE inbox_id = $1 AND contact_id = $2 \
                             AND status <> 'resolved' AND id <> $3";
                if let Some(row) = sqlx::query(other)
                    .bind(&before.inbox_id)
                    .bind(&before.contact_id)
                    .bind(conversation_id)
                    .fetch_optional(&mut *tx)
                    .await?
                {
                    tx.rollback().await?;
                    return Ok(Some(Err(OtherOpen(row.get(0)))));
                }
                let holder = match before.assignee_id.as_deref() {
                    Some(agent) => sqlx::query(
                        "SELECT id FROM users WHERE id = $1 AND account_id = $2 AND active = 1",
                    )
                    .bind(agent)
                    .bind(account_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.get::<String, _>(0)),
                    None => None,
                };
                let reopened = sqlx::query(
                    "UPDATE conversations SET status = 'open', resolved_at = NULL, \
                     snoozed_until = NULL, assignee_id = $1, route_step = NULL, \
                     routing_state = CASE WHEN $1 IS NULL THEN 'waiting' ELSE 'assigned' END, \
                     assigned_at = CASE WHEN $1 IS NULL THEN NULL ELSE $2 END, \
                     queued_at = CASE WHEN $1 IS NULL THEN $2 ELSE queued_at END, updated_at = $2 \
                     WHERE id = $3",
                )
                .bind(holder.as_deref())
                .bind(now)
                .bind(conversation_id)
                .execute(&mut *tx)
                .await;
                match reopened {
                    Ok(_) => {}
                    // A new conversation opened for the contact since the read above.
                    Err(e)
                        if e.as_database_error()
                            .is_some_and(|d| d.is_unique_violation()) =>
                    {
                        tx.rollback().await?;
                        let row = sqlx::query(other)
                            .bind(&before.inbox_id)
                            .bind(&before.contact_id)
                            .bind(conversation_id)
                            .fetch_one(self.pool())
                            .await?;
                        return Ok(Some(Err(OtherOpen(row.get(0)))));
                    }
                    Err(e) => return Err(e.into()),
                }
                if let Some(agent) = holder.as_deref() {
                    take_slot(
                        &mut tx,
                        account_id,
                        conversation_id,
                        agent,
                        &before.channel,
                        "reopened",
                        by,
                        now,
                    )
                    .await?;
                }
            }
            _ => {
                tx.rollback().await?;
                return Ok(Some(Ok((before, false))));
            }
        }
        insert_trace(
            &mut tx,
            account_id,
            conversation_id,
            "reopened",
            &trace,
            now,
        )
        .await?;
        let conv = read_conversation(&mut tx, conversation_id).await?;
        tx.commit().await?;
        Ok(Some(Ok((conv, true))))
    }

    /// Changes what rules read of a conversation; `None` leaves a field as it is. Returns the
    /// conversation after, or `None` when there is no such conversation.
    pub async fn update_conversation(
        &self,
        account_id: &str,
        conversation_id: &str,
        priority: Option<i64>,
        labels: Option<&[String]>,
        language: Option<Option<&str>>,
    ) -> Result<Option<Conversation>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        let labels = labels.map(|l| serde_json::Value::from(l.to_vec()).to_string());
        let changed = sqlx::query(
            "UPDATE conversations SET priority = COALESCE($1, priority), \
             labels = COALESCE($2, labels), \
             language = CASE WHEN $3 = 1 THEN $4 ELSE language END, updated_at = $5 \
             WHERE account_id = $6 AND id = $7",
        )
        .bind(priority)
        .bind(labels)
        .bind(i64::from(language.is_some()))
        .bind(language.flatten())
        .bind(ids::now_ms())
        .bind(account_id)
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let conv = read_conversation(&mut tx, conversation_id).await?;
        tx.commit().await?;
        Ok(Some(conv))
    }

    /// Merges attributes into a contact's (null removes one); the attributes after, or `None`
    /// when there is no such contact.
    pub async fn merge_contact_attributes(
        &self,
        account_id: &str,
        contact_id: &str,
        changes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError> {
        let mut tx = self.begin_scoped(account_id).await?;
        // A no-op write first: it takes the row lock, so concurrent merges serialise.
        let found = sqlx::query(
            "UPDATE contacts SET attributes = attributes WHERE account_id = $1 AND id = $2",
        )
        .bind(account_id)
        .bind(contact_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if found == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let current: String = sqlx::query("SELECT attributes FROM contacts WHERE id = $1")
            .bind(contact_id)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let mut attrs: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&current).unwrap_or_default();
        for (k, v) in changes {
            if v.is_null() {
                attrs.remove(k);
            } else {
                attrs.insert(k.clone(), v.clone());
            }
        }
        sqlx::query("UPDATE contacts SET attributes = $1, updated_at = $2 WHERE id = $3")
            .bind(serde_json::Value::Object(attrs.clone()).to_string())
            .bind(ids::now_ms())
            .bind(contact_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(attrs))
    }

    /// A conversation's routing history, oldest first.
    pub async fn routing_trace(
        &self,
        account_id: &str,
        conversation_id: &str,
    ) -> Result<Vec<TraceEntry>, StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let rows = sqlx::query(
            "SELECT id, at, kind, trace FROM routing_traces WHERE account_id = $1 \
             AND conversation_id = $2 ORDER BY at, id",
        )
        .bind(account_id)
        .bind(conversation_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| TraceEntry {
                id: r.get(0),
                at_ms: r.get(1),
                kind: r.get(2),
                trace: serde_json::from_str(&r.get::<String, _>(3))
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect())
    }

    /// Live queue statistics per inbox and per team, read now.
    pub async fn queue_stats(
        &self,
        account_id: &str,
        fresh_after: i64,
        now: i64,
    ) -> Result<(Vec<QueueStats>, Vec<QueueStats>), StoreError> {
        let mut tx = self.scoped(account_id).await?;
        let mut inboxes: Vec<QueueStats> = Vec::new();
        let mut by_inbox: HashMap<String, usize> = HashMap::new();
        let mut inbox_team: HashMap<String, Option<String>> = HashMap::new();
        for r in sqlx::query(
            "SELECT id, slug, channel, team_id FROM inboxes WHERE account_id = $1 ORDER BY slug",
        )
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?
        {
            by_inbox.insert(r.get(0), inboxes.len());
            inbox_team.insert(r.get(0), r.get(3));
            inboxes.push(QueueStats {
                id: r.get(0),
                name: r.get(1),
                channel: Some(r.get(2)),
                ..QueueStats::default()
            });
        }
        let mut teams: Vec<QueueStats> = Vec::new();
        let mut by_team: HashMap<String, usize> = HashMap::new();
        for r in sqlx::query("SELECT id, name FROM teams WHERE account_id = $1 ORDER BY name")
            .bind(account_id)
            .fetch_all(&mut *tx)
            .await?
        {
            by_team.insert(r.get(0), teams.len());
            teams.push(QueueStats {
                id: r.get(0),
                name: r.get(1),
                ..QueueStats::default()
            });
        }
        for r in sqlx::query(
            "SELECT inbox_id, team_id, routing_state, count(*), min(queued_at) FROM conversations \
             WHERE account_id = $1 AND routing_state <> 'idle' GROUP BY inbox_id, team_id, routing_state",
        )
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?
        {
            let inbox: String = r.get(0);
            let team: Option<String> = r.get(1);
            let state: String = r.get(2);
            let count: i64 = r.get(3);
            let oldest: Option<i64> = r.get(4);
            let apply = |s: &mut QueueStats| match state.as_str() {
                "waiting" => {
                    s.waiting += count;
                    if let Some(o) = oldest {
                        s.longest_wait_ms = s.longest_wait_ms.max(now - o);
                    }
                }
                "offered" => s.offered += count,
                _ => s.assigned += count,
            };
            if let Some(&i) = by_inbox.get(&inbox) {
                apply(&mut inboxes[i]);
            }
            if let Some(&i) = team.as_ref().and_then(|t| by_team.get(t)) {
                apply(&mut teams[i]);
            }
        }
        // Online agents' slots: per channel, and per team.
        let loads = sqlx::query(
            "SELECT l.user_id, l.channel, l.capacity, l.active FROM agent_load l \
             JOIN users u ON u.id = l.user_id JOIN presence p ON p.user_id = l.user_id \
             WHERE l.account_id = $1 AND u.active = 1 AND p.status = 'online' \
             AND p.heartbeat_at >= $2 AND l.capacity > 0",
        )
        .bind(account_id)
        .bind(fresh_after)
        .fetch_all(&mut *tx)
        .await?;
        let mut member_of: HashMap<String, Vec<String>> = HashMap::new();
        for r in sqlx::query(
            "SELECT m.user_id, m.team_id FROM team_members m JOIN teams t ON t.id = m.team_id \
             WHERE t.account_id = $1",
        )
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?
        {
            member_of.entry(r.get(0)).or_default().push(r.get(1));
        }
        tx.commit().await?;
        let mut team_agents: HashMap<usize, std::collections::HashSet<String>> = HashMap::new();
        for r in &loads {
            let user: String = r.get(0);
            let channel: String = r.get(1);
            let capacity: i64 = r.get(2);
            let free = (capacity - r.get::<i64, _>(3)).max(0);
            let teams_of = member_of.get(&user).cloned().unwrap_or_default();
            for s in inboxes.iter_mut() {
                let team = inbox_team.get(&s.id).cloned().flatten();
                let serves = s.channel.as_deref() == Some(channel.as_str())
                    && team.is_none_or(|t| teams_of.contains(&t));
                if serves {
                    s.capacity_total += capacity;
                    s.capacity_free += free;
                    s.available_agents += i64::from(free > 0);
                }
            }
            for t in &teams_of {
                if let Some(&i) = by_team.get(t) {
                    teams[i].capacity_total += capacity;
                    teams[i].capacity_free += free;
                    if free > 0 {
                        team_agents.entry(i).or_default().insert(user.clone());
                    }
                }
            }
        }
        for (i, agents) in team_agents {
            teams[i].available_agents = agents.len() as i64;
        }
        Ok((inboxes, teams))
    }
}

/// The end of a manual change: its trace, its audit record (who held it before and after),
/// the commit; returns the conversation as it is now.
async fn finish_manual(
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    before: &Conversation,
    kind: &str,
    trace: &serde_json::Value,
    record: AuditRecord,
    now: i64,
) -> Result<Conversation, StoreError> {
    let trace = trace.to_string();
    insert_trace(&mut tx, &before.account_id, &before.id, kind, &trace, now).await?;
    let conv = read_conversation(&mut tx, &before.id).await?;
    append(
        &mut tx,
        &record.before(holding(before)).after(holding(&conv)),
    )
    .await?;
    tx.commit().await?;
    Ok(conv)
}

/// What an audit record of a manual change shows of the conversation.
fn holding(c: &Conversation) -> serde_json::Value {
    serde_json::json!({ "assignee_id": c.assignee_id, "routing_state": c.routing_state })
}

/// Frees whatever holds a conversation before it changes hands: the assignee's slot (and
/// their open assignment), or a pending offer and its slot.
async fn free_holder(
    conn: &mut AnyConnection,
    before: &Conversation,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    match (before.routing_state.as_str(), before.assignee_id.as_deref()) {
        ("assigned", Some(agent)) => {
            release_slot(conn, agent, &before.channel).await?;
            end_assignment(conn, &before.id, reason, now).await?;
        }
        ("offered", _) => {
            if let Some(row) = sqlx::query(
                "UPDATE offers SET state = 'withdrawn', decided_at = $1 WHERE conversation_id = $2 \
                 AND state = 'pending' RETURNING agent_id, channel",
            )
            .bind(now)
            .bind(&before.id)
            .fetch_optional(&mut *conn)
            .await?
            {
                release_slot(conn, &row.get::<String, _>(0), &row.get::<String, _>(1)).await?;
            }
        }
        _ => {}
    }
    Ok(())
}
