//! Agents as routable resources, for the assignment engine (docs/ROUTING-DESIGN.md):
//!
//! - `/v1/admin/skills`: the account's skill catalogue (`configure_routing`);
//! - `/v1/admin/agents`: every active user's routing profile — skill and language levels,
//!   capacity per channel — read, and replaced wholesale (`configure_routing`, audited in the
//!   same transaction);
//! - `/v1/agents/me`: the signed-in user's own profile and presence, status changes and
//!   heartbeats. API keys have no user, so these answer them 403.
//!
//! Presence is not an admin mutation and is not audited. Whether a presence is stale is
//! computed on read (`PresenceRow::effective`, `routing.presence_timeout_secs`); a change of the
//! status others see is published as `presence.changed` on the account's topic after it
//! commits. Going stale publishes nothing: nobody writes at that moment, and the engine keeps
//! its own deadline for it.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::api::{id_cursor, page_limit};
use super::{ApiQuery, AppState, RawBody, parse_json};
use crate::access::{Permission, Principal};
use crate::config::is_slug;
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::agents::{self as rows, Agent, CHANNELS, PresenceRow, Profile, SkillRemoval};
use crate::store::audit;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/skills", get(list_skills).post(create_skill))
        .route("/v1/admin/skills/{name}", delete(delete_skill))
        .route("/v1/admin/agents", get(list_agents))
        .route("/v1/admin/agents/{user_id}", get(get_agent))
        .route("/v1/admin/agents/{user_id}/profile", put(put_profile))
        .route("/v1/agents/me", get(get_me))
        .route("/v1/agents/me/presence", put(put_presence))
        .route("/v1/agents/me/heartbeat", post(heartbeat))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        create_skill,
        list_skills,
        delete_skill,
        list_agents,
        get_agent,
        put_profile,
        get_me,
        put_presence,
        heartbeat
    ),
    components(schemas(
        SkillIn,
        SkillOut,
        SkillPage,
        ProfileIn,
        AgentOut,
        AgentPage,
        PresenceIn,
        PresenceOut
    ))
)]
pub struct AgentsApi;

/// Highest skill or language level.
const MAX_LEVEL: i64 = 5;
/// Highest capacity on one channel.
const MAX_CAPACITY: i64 = 100;
/// Most languages one agent may list.
const MAX_LANGUAGES: usize = 50;
const STATUSES: [&str; 3] = ["online", "away", "offline"];

/// A new skill of the catalogue.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkillIn {
    /// 1 to 64 lowercase letters, digits, `-` and `_`.
    #[schema(required = true, value_type = String, example = "billing")]
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SkillOut {
    pub name: String,
    /// How many users hold it (at any level).
    pub agents: i64,
    pub created_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct SkillPage {
    pub data: Vec<SkillOut>,
    pub next_cursor: Option<String>,
}

/// A routing profile, replacing the stored one wholesale: an absent map is empty.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileIn {
    /// Skill (from the catalogue) → level 0–5.
    #[serde(default)]
    #[schema(example = json!({"billing": 3}))]
    pub skills: BTreeMap<String, i64>,
    /// Language code (2–8 lowercase letters or `-`) → level 0–5.
    #[serde(default)]
    #[schema(example = json!({"es": 2}))]
    pub languages: BTreeMap<String, i64>,
    /// `whatsapp`, `sms`, `webchat` → conversations at once, 0–100. 0 or absent: never routed
    /// that channel.
    #[serde(default)]
    #[schema(example = json!({"whatsapp": 4, "sms": 6, "webchat": 3}))]
    pub capacity: BTreeMap<String, i64>,
}

/// The status the signed-in agent chooses.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceIn {
    /// `online`, `away` or `offline`.
    #[schema(required = true, value_type = String, example = "online")]
    pub status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PresenceOut {
    /// What routing sees: the chosen status while heartbeats are fresh, else `offline`.
    #[schema(example = "online")]
    pub status: String,
    /// The status the agent chose last (`offline` when never set).
    pub chosen_status: String,
    pub heartbeat_at_ms: Option<i64>,
    pub changed_at_ms: Option<i64>,
}

/// An agent: an active user with its routing profile, live load and presence.
#[derive(Serialize, ToSchema)]
pub struct AgentOut {
    pub user_id: String,
    pub name: String,
    pub branch_id: Option<String>,
    pub team_ids: Vec<String>,
    pub skills: BTreeMap<String, i64>,
    pub languages: BTreeMap<String, i64>,
    /// Every channel; 0 means never routed that channel.
    pub capacity: BTreeMap<String, i64>,
    /// Conversations counted against the capacity now, per channel.
    pub active: BTreeMap<String, i64>,
    pub presence: PresenceOut,
}

#[derive(Serialize, ToSchema)]
pub struct AgentPage {
    pub data: Vec<AgentOut>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn timeout_ms(state: &AppState) -> i64 {
    i64::try_from(
        state
            .config
            .routing
            .presence_timeout_secs
            .saturating_mul(1000),
    )
    .unwrap_or(i64::MAX)
}

fn presence_out(row: Option<&PresenceRow>, now_ms: i64, timeout_ms: i64) -> PresenceOut {
    PresenceOut {
        status: PresenceRow::effective(row, now_ms, timeout_ms).to_owned(),
        chosen_status: row.map_or("offline", |p| p.status.as_str()).to_owned(),
        heartbeat_at_ms: row.map(|p| p.heartbeat_at),
        changed_at_ms: row.map(|p| p.changed_at),
    }
}

fn agent_out(agent: Agent, now_ms: i64, timeout_ms: i64) -> AgentOut {
    AgentOut {
        presence: presence_out(agent.presence.as_ref(), now_ms, timeout_ms),
        user_id: agent.user_id,
        name: agent.name,
        branch_id: agent.branch_id,
        team_ids: agent.team_ids,
        skills: agent.profile.skills,
        languages: agent.profile.languages,
        capacity: agent.profile.capacity,
        active: agent.active,
    }
}

/// The signed-in user behind the request; API keys have no presence or profile of their own.
pub(crate) fn own_user(who: &Principal) -> Result<&str, ApiError> {
    who.user_id.as_deref().ok_or_else(|| {
        ApiError::Forbidden(
            "API keys have no presence or routing profile; sign in as a user".to_owned(),
        )
    })
}

pub(crate) fn is_language(code: &str) -> bool {
    (2..=8).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
}

fn check_level(field: &str, level: i64) -> Result<(), ApiError> {
    if (0..=MAX_LEVEL).contains(&level) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            field,
            format!("must be an integer from 0 to {MAX_LEVEL}"),
        ))
    }
}

/// Checks everything about a profile that needs no database; returns it with every channel's
/// capacity filled in (absent = 0).
fn valid_profile(input: ProfileIn) -> Result<Profile, ApiError> {
    for (skill, level) in &input.skills {
        check_level(&format!("skills.{skill}"), *level)?;
    }
    if input.languages.len() > MAX_LANGUAGES {
        return Err(ApiError::invalid_field(
            "languages",
            format!("at most {MAX_LANGUAGES} languages"),
        ));
    }
    for (lang, level) in &input.languages {
        let field = format!("languages.{lang}");
        if !is_language(lang) {
            return Err(ApiError::invalid_field(
                &field,
                "a language code is 2 to 8 lowercase letters or `-`, like `es` or `pt-br`",
            ));
        }
        check_level(&field, *level)?;
    }
    let mut capacity: BTreeMap<String, i64> =
        CHANNELS.iter().map(|c| ((*c).to_owned(), 0)).collect();
    for (channel, n) in input.capacity {
        let field = format!("capacity.{channel}");
        let Some(slot) = capacity.get_mut(&channel) else {
            return Err(ApiError::invalid_field(
                &field,
                format!("unknown channel; expected one of {}", CHANNELS.join(", ")),
            ));
        };
        if !(0..=MAX_CAPACITY).contains(&n) {
            return Err(ApiError::invalid_field(
                &field,
                format!("must be an integer from 0 to {MAX_CAPACITY}"),
            ));
        }
        *slot = n;
    }
    Ok(Profile {
        skills: input.skills,
        languages: input.languages,
        capacity,
    })
}

#[utoipa::path(
    post,
    path = "/v1/admin/skills",
    tag = "agents",
    request_body = SkillIn,
    responses(
        (status = 201, description = "Added to the catalogue", body = SkillOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 409, description = "The account already has a skill of that name", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "Invalid field (details name it)", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn create_skill(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<SkillOut>), ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: SkillIn = parse_json(&body)?;
    let name = input
        .name
        .ok_or_else(|| ApiError::invalid_field("name", "is required"))?;
    if !is_slug(&name) {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 64 lowercase letters, digits, - and _",
        ));
    }
    let now = ids::now_ms();
    let out = SkillOut {
        name,
        agents: 0,
        created_at_ms: now,
    };
    let mut tx = state.store.begin_scoped(&who.account_id).await?;
    if !rows::insert_skill(&mut tx, &who.account_id, &out.name, now).await? {
        return Err(ApiError::conflict_field(
            "name",
            "the account already has a skill of that name",
        ));
    }
    let record = who
        .audit("skill.created", "skill", Some(&out.name))
        .after(json!({ "name": out.name }));
    audit::append(&mut tx, &record).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(
    get,
    path = "/v1/admin/skills",
    tag = "agents",
    params(
        ("limit" = Option<i64>, Query, description = "1 to 100, default 25"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "The catalogue by name", body = SkillPage),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or a query parameter this list does not take", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn list_skills(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<SkillPage>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let limit = page_limit(query.limit)?;
    if let Some(cursor) = &query.cursor
        && !is_slug(cursor)
    {
        return Err(ApiError::invalid_field(
            "cursor",
            "is not a cursor from this list",
        ));
    }
    let mut skills = state
        .store
        .list_skills(&who.account_id, query.cursor.as_deref(), limit + 1)
        .await?;
    let more = skills.len() as i64 > limit;
    skills.truncate(limit as usize);
    let next_cursor = more
        .then(|| skills.last().map(|s| s.name.clone()))
        .flatten();
    Ok(Json(SkillPage {
        data: skills
            .into_iter()
            .map(|s| SkillOut {
                name: s.name,
                agents: s.agents,
                created_at_ms: s.created_at,
            })
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/skills/{name}",
    tag = "agents",
    params(("name" = String, Path, description = "The skill's name")),
    responses(
        (status = 204, description = "Removed from the catalogue"),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 404, description = "No such skill", body = ErrorEnvelope),
        (status = 409, description = "An agent holds the skill; take it out of their profiles first", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn delete_skill(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let mut tx = state.store.begin_scoped(&who.account_id).await?;
    match rows::delete_skill(&mut tx, &who.account_id, &name).await? {
        SkillRemoval::Missing => return Err(ApiError::not_found("skill")),
        SkillRemoval::Held(n) => {
            return Err(ApiError::conflict(format!(
                "{n} agent(s) hold skill `{name}`; take it out of their profiles first"
            )));
        }
        SkillRemoval::Removed => {}
    }
    let record = who
        .audit("skill.deleted", "skill", Some(&name))
        .before(json!({ "name": name }));
    audit::append(&mut tx, &record).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/admin/agents",
    tag = "agents",
    params(
        ("limit" = Option<i64>, Query, description = "1 to 100, default 25"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "Active users by id, with profile, load and presence", body = AgentPage),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or a query parameter this list does not take", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn list_agents(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<AgentPage>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::USER)?;
    let mut agents = state
        .store
        .list_agents(
            &who.account_id,
            &rows::AgentReach::All,
            cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let more = agents.len() as i64 > limit;
    agents.truncate(limit as usize);
    let next_cursor = more
        .then(|| agents.last().map(|a| a.user_id.clone()))
        .flatten();
    let (now, timeout) = (ids::now_ms(), timeout_ms(&state));
    Ok(Json(AgentPage {
        data: agents
            .into_iter()
            .map(|a| agent_out(a, now, timeout))
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/admin/agents/{user_id}",
    tag = "agents",
    params(("user_id" = String, Path, description = "usr_…")),
    responses(
        (status = 200, description = "The agent", body = AgentOut),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 404, description = "No such active user in the account", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn get_agent(
    State(state): State<AppState>,
    who: Principal,
    Path(user_id): Path<String>,
) -> Result<Json<AgentOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let agent = state
        .store
        .get_agent(&who.account_id, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    Ok(Json(agent_out(agent, ids::now_ms(), timeout_ms(&state))))
}

#[utoipa::path(
    put,
    path = "/v1/admin/agents/{user_id}/profile",
    tag = "agents",
    params(("user_id" = String, Path, description = "usr_…")),
    request_body = ProfileIn,
    responses(
        (status = 200, description = "The agent with its new profile", body = AgentOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 404, description = "No such active user in the account", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "Invalid field (details name it, e.g. `skills.billing`): a level outside 0–5, a skill not in the catalogue, a bad language code, an unknown channel or a capacity outside 0–100", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn put_profile(
    State(state): State<AppState>,
    who: Principal,
    Path(user_id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<AgentOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: ProfileIn = parse_json(&body)?;
    let after = valid_profile(input)?;

    let mut tx = state.store.begin_scoped(&who.account_id).await?;
    if !rows::lock_agent(&mut tx, &who.account_id, &user_id).await? {
        return Err(ApiError::not_found("agent"));
    }
    let known = rows::known_skills(&mut tx, &who.account_id).await?;
    if let Some(unknown) = after.skills.keys().find(|s| !known.contains(s)) {
        return Err(ApiError::invalid_field(
            &format!("skills.{unknown}"),
            "is not in the account's skill catalogue (POST /v1/admin/skills)",
        ));
    }
    let (before, _) = rows::read_profile(&mut tx, &who.account_id, &user_id).await?;
    if before != after {
        rows::write_profile(&mut tx, &who.account_id, &user_id, &after).await?;
        let record = who
            .audit("agent.profile_updated", "agent", Some(&user_id))
            .before(&before)
            .after(&after);
        audit::append(&mut tx, &record).await?;
        tx.commit().await?;
        // Skills and capacity decide routing: the engine looks again at once.
        state
            .events
            .publish(
                &who.account_id,
                "capacity.changed",
                json!({ "user_id": user_id, "capacity": after.capacity }),
            )
            .await;
    } else {
        // Nothing changed: no write and no audit record.
        tx.rollback().await?;
    }
    let agent = state
        .store
        .get_agent(&who.account_id, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    Ok(Json(agent_out(agent, ids::now_ms(), timeout_ms(&state))))
}

#[utoipa::path(
    get,
    path = "/v1/agents/me",
    tag = "agents",
    responses(
        (status = 200, description = "The signed-in user's routing profile, load and presence", body = AgentOut),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key: it has no user", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn get_me(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<AgentOut>, ApiError> {
    let user_id = own_user(&who)?;
    let agent = state
        .store
        .get_agent(&who.account_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent"))?;
    Ok(Json(agent_out(agent, ids::now_ms(), timeout_ms(&state))))
}

/// Writes the caller's presence (`status` None: a heartbeat) and publishes `presence.changed`
/// after the commit when the status others see changed.
async fn record_presence(
    state: &AppState,
    account_id: &str,
    user_id: &str,
    status: Option<&str>,
) -> Result<Option<PresenceRow>, ApiError> {
    let (now, timeout) = (ids::now_ms(), timeout_ms(state));
    let mut tx = state.store.begin_scoped(account_id).await?;
    let before = rows::read_presence(&mut tx, account_id, user_id).await?;
    rows::write_presence(&mut tx, account_id, user_id, status, now).await?;
    let after = rows::read_presence(&mut tx, account_id, user_id).await?;
    tx.commit().await?;
    let was = PresenceRow::effective(before.as_ref(), now, timeout);
    let is = PresenceRow::effective(after.as_ref(), now, timeout);
    if was != is {
        state
            .events
            .publish(
                account_id,
                "presence.changed",
                json!({ "user_id": user_id, "status": is }),
            )
            .await;
    }
    Ok(after)
}

#[utoipa::path(
    put,
    path = "/v1/agents/me/presence",
    tag = "agents",
    request_body = PresenceIn,
    responses(
        (status = 200, description = "The presence now (setting it counts as a heartbeat)", body = PresenceOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key: it has no user", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "`status` is not online, away or offline", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn put_presence(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<Json<PresenceOut>, ApiError> {
    let user_id = own_user(&who)?;
    let input: PresenceIn = parse_json(&body)?;
    let status = input
        .status
        .ok_or_else(|| ApiError::invalid_field("status", "is required"))?;
    if !STATUSES.contains(&status.as_str()) {
        return Err(ApiError::invalid_field(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    let after = record_presence(&state, &who.account_id, user_id, Some(&status)).await?;
    Ok(Json(presence_out(
        after.as_ref(),
        ids::now_ms(),
        timeout_ms(&state),
    )))
}

#[utoipa::path(
    post,
    path = "/v1/agents/me/heartbeat",
    tag = "agents",
    responses(
        (status = 204, description = "Recorded; the chosen status stays in force"),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key: it has no user", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    who: Principal,
) -> Result<StatusCode, ApiError> {
    let user_id = own_user(&who)?;
    let now = ids::now_ms();
    // The common case, a fresh presence, is one UPDATE; only a first or reviving heartbeat
    // takes the transaction that can tell whether the status others see changed.
    let fresh = state
        .store
        .refresh_heartbeat(&who.account_id, user_id, now, now - timeout_ms(&state))
        .await?;
    if !fresh {
        record_presence(&state, &who.account_id, user_id, None).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(value: serde_json::Value) -> Result<Profile, String> {
        let input: ProfileIn = serde_json::from_value(value).map_err(|e| e.to_string())?;
        valid_profile(input).map_err(|e| e.to_string())
    }

    #[test]
    fn profiles_are_validated_naming_the_field() {
        let ok = profile(
            json!({"skills": {"billing": 5}, "languages": {"pt-br": 0}, "capacity": {"sms": 6}}),
        )
        .unwrap();
        assert_eq!(ok.capacity["sms"], 6);
        assert_eq!(ok.capacity["whatsapp"], 0, "absent channels are 0");
        for (bad, field) in [
            (json!({"skills": {"billing": 6}}), "skills.billing"),
            (json!({"skills": {"billing": -1}}), "skills.billing"),
            (json!({"languages": {"ES": 1}}), "languages.ES"),
            (json!({"languages": {"e": 1}}), "languages.e"),
            (json!({"languages": {"es": 9}}), "languages.es"),
            (json!({"capacity": {"fax": 1}}), "capacity.fax"),
            (json!({"capacity": {"sms": -1}}), "capacity.sms"),
            (json!({"capacity": {"sms": 101}}), "capacity.sms"),
        ] {
            let err = profile(bad.clone()).unwrap_err();
            assert!(err.starts_with(field), "{bad}: {err}");
        }
    }
}
