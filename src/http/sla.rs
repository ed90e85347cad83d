//! SLA policies over REST (`configure_routing`, audited) and a conversation's SLA clocks
//! (`view_conversations` in scope). docs/ALERTS.md, "SLA".

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AppState, RawBody, parse_json};
use crate::access::{Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::sla::watch::{covering, policies};
use crate::sla::{BusinessHours, Clock, HoursSpec, Policy, clocks};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/sla-policies",
            get(list_policies).post(create_policy),
        )
        .route(
            "/v1/admin/sla-policies/{id}",
            put(replace_policy).delete(delete_policy),
        )
        .route("/v1/conversations/{id}/sla", get(conversation_sla))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_policies,
    create_policy,
    replace_policy,
    delete_policy,
    conversation_sla
))]
pub struct SlaApi;

/// An SLA policy as given.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyIn {
    /// 1 to 100 characters; unique in the account.
    pub name: String,
    /// Exactly one of `inbox_id` and `team_id`: what the policy covers.
    pub inbox_id: Option<String>,
    pub team_id: Option<String>,
    /// 1 s to 30 days, business time.
    pub first_response_secs: i64,
    pub next_response_secs: Option<i64>,
    pub resolution_secs: Option<i64>,
    /// How long before each deadline the warning comes; less than every budget. Default 0.
    #[serde(default)]
    pub warning_secs: i64,
    /// Opening hours; leave out for round the clock.
    pub business_hours: Option<HoursSpec>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    pub data: Vec<Policy>,
}

const MONTH_SECS: i64 = 30 * 24 * 3600;

/// Checks `input` against the account; every refusal names its field.
async fn checked(
    state: &AppState,
    who: &Principal,
    input: PolicyIn,
    id: String,
    created_at_ms: i64,
) -> Result<Policy, ApiError> {
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 100 characters",
        ));
    }
    match (&input.inbox_id, &input.team_id) {
        (Some(inbox), None) => {
            if state
                .store
                .get_inbox(&who.account_id, inbox)
                .await?
                .is_none()
            {
                return Err(ApiError::invalid_field(
                    "inbox_id",
                    "is not an inbox of the account",
                ));
            }
        }
        (None, Some(team)) => {
            if state.store.get_team(&who.account_id, team).await?.is_none() {
                return Err(ApiError::invalid_field(
                    "team_id",
                    "is not a team of the account",
                ));
            }
        }
        _ => {
            return Err(ApiError::invalid_field(
                "inbox_id",
                "give exactly one of inbox_id and team_id",
            ));
        }
    }
    let budgets = [
        ("first_response_secs", Some(input.first_response_secs)),
        ("next_response_secs", input.next_response_secs),
        ("resolution_secs", input.resolution_secs),
    ];
    for (field, secs) in budgets {
        if let Some(secs) = secs {
            if !(1..=MONTH_SECS).contains(&secs) {
                return Err(ApiError::invalid_field(
                    field,
                    "must be 1 to 2592000 seconds",
                ));
            }
            if input.warning_secs >= secs {
                return Err(ApiError::invalid_field(
                    "warning_secs",
                    format!("must be less than {field}"),
                ));
            }
        }
    }
    if input.warning_secs < 0 {
        return Err(ApiError::invalid_field(
            "warning_secs",
            "must not be negative",
        ));
    }
    if let Some(spec) = &input.business_hours {
        BusinessHours::parse(spec).map_err(|e| {
            ApiError::invalid_field(&format!("business_hours.{}", e.field), e.message)
        })?;
    }
    Ok(Policy {
        id,
        name,
        inbox_id: input.inbox_id,
        team_id: input.team_id,
        first_response_secs: input.first_response_secs,
        next_response_secs: input.next_response_secs,
        resolution_secs: input.resolution_secs,
        warning_secs: input.warning_secs,
        business_hours: input.business_hours,
        created_at_ms,
        updated_at_ms: ids::now_ms(),
    })
}

const NAME_TAKEN: &str = "the account has an SLA policy of this name";

#[utoipa::path(
    get,
    path = "/v1/admin/sla-policies",
    tag = "sla",
    summary = "List SLA policies",
    description = "The account's SLA policies, oldest first. Requires `configure_routing`.",
    responses(
        (status = 200, description = "The policies.", body = PolicyList),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_policies(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<PolicyList>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    Ok(Json(PolicyList {
        data: state.store.list_sla_policies(&who.account_id).await?,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/sla-policies",
    tag = "sla",
    summary = "Add an SLA policy",
    description = "Response and resolution budgets for an inbox's or a team's conversations, counted in business hours. Audited as `sla_policy.created`. Requires `configure_routing`.",
    request_body = PolicyIn,
    responses(
        (status = 201, description = "Added.", body = Policy),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 409, description = "The name is taken.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "A budget out of range, a warning not before its deadline, an unknown inbox or team, or bad business hours (details name the field).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn create_policy(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Policy>), ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: PolicyIn = parse_json(&body)?;
    let policy = checked(
        &state,
        &who,
        input,
        ids::new(ids::SLA_POLICY),
        ids::now_ms(),
    )
    .await?;
    let record = who.audit("sla_policy.created", "sla_policy", Some(&policy.id));
    match state
        .store
        .save_sla_policy(&who.account_id, &policy, false, record)
        .await?
    {
        Some(_) => Ok((StatusCode::CREATED, Json(policy))),
        None => Err(ApiError::conflict_field("name", NAME_TAKEN)),
    }
}

#[utoipa::path(
    put,
    path = "/v1/admin/sla-policies/{id}",
    tag = "sla",
    summary = "Change an SLA policy",
    description = "Replaces the policy; clocks already running are read by the new budgets from the next check. Audited as `sla_policy.updated`. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The policy's id (`sla_…`).")),
    request_body = PolicyIn,
    responses(
        (status = 200, description = "Replaced.", body = Policy),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 404, description = "No such policy in the account.", body = ErrorEnvelope),
        (status = 409, description = "The name is taken.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "A field out of range or unknown (details name it).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn replace_policy(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Policy>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: PolicyIn = parse_json(&body)?;
    let current = state
        .store
        .list_sla_policies(&who.account_id)
        .await?
        .into_iter()
        .find(|p| p.id == id)
        .ok_or_else(|| ApiError::not_found("SLA policy"))?;
    let policy = checked(&state, &who, input, id.clone(), current.created_at_ms).await?;
    let record = who.audit("sla_policy.updated", "sla_policy", Some(&id));
    match state
        .store
        .save_sla_policy(&who.account_id, &policy, true, record)
        .await?
    {
        Some(true) => Ok(Json(policy)),
        Some(false) => Err(ApiError::not_found("SLA policy")),
        None => Err(ApiError::conflict_field("name", NAME_TAKEN)),
    }
}

#[utoipa::path(
    delete,
    path = "/v1/admin/sla-policies/{id}",
    tag = "sla",
    summary = "Remove an SLA policy",
    description = "Its conversations' clocks stop being watched; warnings and breaches already recorded stay. Audited as `sla_policy.deleted`. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The policy's id (`sla_…`).")),
    responses(
        (status = 204, description = "Removed."),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 404, description = "No such policy in the account.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn delete_policy(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let record = who.audit("sla_policy.deleted", "sla_policy", Some(&id));
    if !state
        .store
        .delete_sla_policy(&who.account_id, &id, record)
        .await?
    {
        return Err(ApiError::not_found("SLA policy"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// A conversation's SLA: the policy covering it and its clocks now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationSla {
    /// `null` when no policy covers the conversation (then `clocks` is empty).
    pub policy_id: Option<String>,
    pub clocks: Vec<Clock>,
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/sla",
    tag = "sla",
    summary = "A conversation's SLA clocks",
    description = "The policy covering the conversation (its inbox's, else its team's) and each clock: when it started, when it warns and is due (in business time), when it stopped, and its state (`running`, `warning`, `breached`, `met`). Requires `view_conversations` over the conversation.",
    params(("id" = String, Path, description = "Conversation id (`conv_…`).")),
    responses(
        (status = 200, description = "The clocks.", body = ConversationSla),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `view_conversations`.", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn conversation_sla(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConversationSla>, ApiError> {
    let conversation =
        super::api::visible_conversation(&state, &who, Permission::ViewConversations, &id).await?;
    let policies = policies(&state.store, &who.account_id)
        .await
        .map_err(ApiError::internal)?;
    let watched = state
        .store
        .sla_watched(&who.account_id, Some(&conversation.id), false, 1)
        .await?;
    let (Some(conv), Some((policy, hours))) = (
        watched.first(),
        covering(
            &policies,
            &conversation.inbox_id,
            conversation.team_id.as_deref(),
        ),
    ) else {
        return Ok(Json(ConversationSla {
            policy_id: None,
            clocks: Vec::new(),
        }));
    };
    Ok(Json(ConversationSla {
        policy_id: Some(policy.id.clone()),
        clocks: clocks(policy, hours, &conv.moments, ids::now_ms()),
    }))
}
