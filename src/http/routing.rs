//! The assignment engine over REST: offers (accept, decline), resolving a conversation (which
//! frees its agent's slot), each conversation's routing trace, live queue statistics, and the
//! contact attributes rules read.

use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json_, json};
use switchboard_routing::expr::Type;
use utoipa::ToSchema;

use super::agents::own_user;
use super::api::visible_conversation;
use super::routing_rules::rule_schema;
use super::{AppState, RawBody, parse_json};
use crate::access::{Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::conversations::Conversation;
use crate::store::routing::{
    Offer, OfferEnd, OfferRefusal, OtherOpen, QueueStats, Resolved, TraceEntry,
};

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    update_conversation,
    list_offers,
    accept_offer,
    decline_offer,
    resolve,
    reopen,
    snooze,
    routing_trace,
    queue_stats,
    put_attributes
))]
pub struct RoutingApi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/offers", get(list_offers))
        .route("/v1/offers/{id}/accept", post(accept_offer))
        .route("/v1/offers/{id}/decline", post(decline_offer))
        .route("/v1/conversations/{id}/resolve", post(resolve))
        .route("/v1/conversations/{id}/reopen", post(reopen))
        .route("/v1/conversations/{id}/snooze", post(snooze))
        .route("/v1/conversations/{id}/routing-trace", get(routing_trace))
        .route("/v1/queues/stats", get(queue_stats))
        .route("/v1/contacts/{id}/attributes", put(put_attributes))
}

const E401: &str = "Missing, invalid or expired credentials";
const E429: &str = "Too many requests by this caller";

#[derive(Serialize, ToSchema)]
pub struct OfferList {
    pub data: Vec<Offer>,
}

#[derive(Serialize, ToSchema)]
pub struct Trace {
    pub conversation_id: String,
    pub routing_state: String,
    pub assignee_id: Option<String>,
    /// Oldest first.
    pub entries: Vec<TraceEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct Stats {
    /// When these figures were read (they are read per request, never cached).
    pub generated_at_ms: i64,
    pub inboxes: Vec<QueueStats>,
    pub teams: Vec<QueueStats>,
}

fn refused(refusal: OfferRefusal) -> ApiError {
    match refusal {
        OfferRefusal::NotFound => ApiError::not_found("offer"),
        OfferRefusal::NotPending => {
            ApiError::conflict("the offer was already answered, has expired or was withdrawn")
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/offers",
    tag = "routing",
    summary = "The signed-in agent's pending offers",
    responses(
        (status = 200, description = "Pending offers, oldest first", body = OfferList),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = "An API key: it has no user", body = ErrorEnvelope),
        (status = 429, description = E429, body = ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn list_offers(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<OfferList>, ApiError> {
    let me = own_user(&who)?;
    Ok(Json(OfferList {
        data: state.store.pending_offers(me).await?,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/offers/{id}/accept",
    tag = "routing",
    summary = "Accept an offer",
    description = "The conversation becomes the caller's. Only the agent the offer was made to may accept it, and only while it is pending.",
    params(("id" = String, Path, description = "Offer id (`ofr_…`).")),
    responses(
        (status = 200, description = "The conversation, now assigned to the caller", body = Conversation),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = "An API key: it has no user", body = ErrorEnvelope),
        (status = 404, description = "No such offer to the caller", body = ErrorEnvelope),
        (status = 409, description = "The offer was already answered, expired or was withdrawn", body = ErrorEnvelope),
        (status = 429, description = E429, body = ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn accept_offer(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    let me = own_user(&who)?;
    let conv = state
        .store
        .accept_offer(&who.account_id, &id, me, ids::now_ms())
        .await?
        .map_err(refused)?;
    state
        .events
        .publish(&who.account_id, "conversation.assigned", json!(conv))
        .await;
    // The dispatcher learns the new assignment's deadlines (no reply, grace) at once.
    crate::dispatch::wake(&state.broker, &who.account_id).await;
    Ok(Json(conv))
}

#[utoipa::path(
    post,
    path = "/v1/offers/{id}/decline",
    tag = "routing",
    summary = "Decline an offer",
    description = "The caller is excluded from the conversation, their slot is freed and the conversation is routed again at once.",
    params(("id" = String, Path, description = "Offer id (`ofr_…`).")),
    responses(
        (status = 200, description = "The offer, now declined", body = Offer),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = "An API key: it has no user", body = ErrorEnvelope),
        (status = 404, description = "No such offer to the caller", body = ErrorEnvelope),
        (status = 409, description = "The offer was already answered, expired or was withdrawn", body = ErrorEnvelope),
        (status = 429, description = E429, body = ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn decline_offer(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Offer>, ApiError> {
    let me = own_user(&who)?;
    let offer = state
        .store
        .end_offer(
            &who.account_id,
            &id,
            Some(me),
            OfferEnd::Declined,
            ids::now_ms(),
        )
        .await?
        .map_err(refused)?;
    state
        .events
        .publish(&who.account_id, "offer.declined", json!(offer))
        .await;
    Ok(Json(offer))
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/resolve",
    tag = "conversations",
    summary = "Resolve a conversation",
    description = "Closes the conversation: it leaves routing and its agent's slot is freed at once (the engine fills it from the queue). A new customer message opens a new conversation. Idempotent. Requires `reply_to_customer` within scope.",
    params(("id" = String, Path, description = "Conversation id (`conv_…`).")),
    responses(
        (status = 200, description = "The resolved conversation", body = Conversation),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `reply_to_customer`", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope", body = ErrorEnvelope),
        (status = 429, description = E429, body = ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn resolve(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    visible_conversation(&state, &who, Permission::ReplyToCustomer, &id).await?;
    let (conv, changed) = state
        .store
        .resolve(&who.account_id, &id, who.user_id.as_deref(), ids::now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?;
    if changed {
        state
            .events
            .publish(&who.account_id, "conversation.resolved", json!(conv))
            .await;
    }
    Ok(Json(conv))
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/reopen",
    tag = "conversations",
    summary = "Reopen a resolved or snoozed conversation",
    description = "The conversation is `open` again. A snoozed one keeps its assignee (one that was waiting returns to the queue at its original place). A resolved one goes back to its last assignee if they are still an active user (taking a slot as a manual assignment does), otherwise into the queue as a new conversation would. Reopening an open conversation changes nothing. Publishes `conversation.updated`. Requires `reply_to_customer` within scope.",
    params(("id" = String, Path, description = "Conversation id (`conv_…`).")),
    responses(
        (status = 200, description = "The conversation, open", body = Conversation),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `reply_to_customer`", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope", body = ErrorEnvelope),
        (status = 409, description = "The contact has another conversation open in the inbox (`details` names it as `conversation_id`)", body = ErrorEnvelope),
        (status = 429, description = E429, body = ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn reopen(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Conversation>, ApiError> {
    visible_conversation(&state, &who, Permission::ReplyToCustomer, &id).await?;
    let (conv, changed) = state
        .store
        .reopen(&who.account_id, &id, who.user_id.as_deref(), ids::now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?
        .map_err(|OtherOpen(other)| ApiError::Conflict {
            message: format!("the contact already has an open conversation in this inbox: {other}"),
            details: vec![json!({ "field": "conversation_id", "message": "already open", "conversation_id": other })],
        })?;
    if changed {
        // `conversation.updated` also wakes the dispatchers: a reopened conversation with no
        // assignee is waiting for one.
        state
            .events
            .publish(&who.account_id, "conversation.updated", json!(conv))
            .await;
    }
    Ok(Json(conv))
}

/// The longest a conversation may be snoozed.
const MAX_SNOOZE_MS: i64 = 90 * 24 * 3_600_000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeIn {
    /// When the conversation wakes (Unix ms): in the future, at most 90 days ahead.
    pub until_ms: i64,
}

#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/snooze",
    tag = "conversations",
    summary = "Snooze a conversation until a time",
    description = "Status `snoozed` until `until_ms`, when it is `open` again (a `conversation.updated`); a new message from the customer wakes it at once. The assignee keeps it; a conversation waiting for an agent leaves the queue until it wakes (a pending offer is withdrawn) and then returns at its original place. Snoozing a snoozed conversation moves its wake time. Publishes `conversation.updated`. Requires `reply_to_customer` within scope.",
    params(("id" = String, Path, description = "Conversation id (`conv_…`).")),
    request_body = SnoozeIn,
    responses(
        (status = 200, description = "The conversation, snoozed", body = Conversation),
        (status = 400, description = "The body is not valid JSON", body = ErrorEnvelope),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `reply_to_customer`", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope", body = ErrorEnvelope),
        (status = 409, description = "The conversation is resolved (reopen it instead)", body = ErrorEnvelope),
        (status = 422, description = "`until_ms` is missing, not in the future or more than 90 days ahead, or the body has unknown fields (`details` names the field)", body = ErrorEnvelope),
        (status = 429, description = E429, body = ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn snooze(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Conversation>, ApiError> {
    visible_conversation(&state, &who, Permission::ReplyToCustomer, &id).await?;
    let input: SnoozeIn = parse_json(&body)?;
    let now = ids::now_ms();
    if input.until_ms <= now {
        return Err(ApiError::invalid_field("until_ms", "must be in the future"));
    }
    if input.until_ms > now + MAX_SNOOZE_MS {
        return Err(ApiError::invalid_field(
            "until_ms",
            "must be at most 90 days ahead",
        ));
    }
    let conv = state
        .store
        .snooze(
            &who.account_id,
            &id,
            input.until_ms,
            who.user_id.as_deref(),
            now,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?
        .map_err(|Resolved| {
            ApiError::conflict("the conversation is resolved; reopen it to work on it again")
        })?;
    state
        .events
        .publish(&who.account_id, "conversation.updated", json!(conv))
        .await;
    Ok(Json(conv))
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/routing-trace",
    tag = "conversations",
    summary = "Why the conversation was routed as it was",
    description = "Every routing decision and outcome, oldest first: for a decision, the rule and step matched, the candidate count after each filter, the top candidates with their score parts, which part decided and the agent chosen; then offers, returns to the queue, manual changes. Requires `view_conversations` within scope.",
    params(("id" = String, Path, description = "Conversation id (`conv_…`).")),
    responses(
        (status = 200, description = "The trace", body = Trace),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `view_conversations`", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope", body = ErrorEnvelope),
        (status = 429, description = E429, body = ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn routing_trace(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Trace>, ApiError> {
    let conv = visible_conversation(&state, &who, Permission::ViewConversations, &id).await?;
    let entries = state.store.routing_trace(&who.account_id, &id).await?;
    Ok(Json(Trace {
        conversation_id: conv.id,
        routing_state: conv.routing_state,
        assignee_id: conv.assignee_id,
        entries,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/queues/stats",
    tag = "routing",
    summary = "Live queue statistics per inbox and per team",
    description = "Waiting, offered and assigned counts, the longest wait, the agents available now (online, fresh heartbeat, a free slot) and the online agents' slots, per inbox (its channel and team) and per team. Read from the store on each request, so never older than the request. Requires `view_conversations`.",
    responses(
        (status = 200, description = "The statistics", body = Stats),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `view_conversations`", body = ErrorEnvelope),
        (status = 429, description = E429, body = ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn queue_stats(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<Stats>, ApiError> {
    who.require(Permission::ViewConversations)?;
    let now = ids::now_ms();
    let fresh_after = now - state.config.routing.presence_timeout_ms();
    let (inboxes, teams) = state
        .store
        .queue_stats(&who.account_id, fresh_after, now)
        .await?;
    Ok(Json(Stats {
        generated_at_ms: now,
        inboxes,
        teams,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationPatch {
    /// 0–100; added to the routing step's priority to give the queue tier. Needs
    /// `reassign_conversations`.
    pub priority: Option<i64>,
    /// Replaces the labels (at most 20, each 1–50 characters; duplicates are dropped).
    pub labels: Option<Vec<String>>,
    /// The customer's language (`es`, `pt-br`), or null to clear it.
    #[serde(default, deserialize_with = "some_or_null")]
    #[schema(value_type = Option<String>)]
    pub language: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit null (`Some(None)`).
fn some_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

const MAX_LABELS: usize = 20;
const MAX_LABEL: usize = 50;
const MAX_PRIORITY: i64 = 100;

#[utoipa::path(
    patch,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    summary = "Change a conversation's priority, labels or language",
    description = "What routing rules read (`conv.priority`, `conv.labels`, `conv.language`) and the queue orders by. Labels and language need `reply_to_customer`, priority `reassign_conversations`, each within scope. A waiting conversation is routed again at once with the new values.",
    params(("id" = String, Path, description = "Conversation id (`conv_…`).")),
    request_body = ConversationPatch,
    responses(
        (status = 200, description = "The conversation now", body = Conversation),
        (status = 400, description = "The body is not valid JSON", body = ErrorEnvelope),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = "The caller's role lacks the permission a field needs", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope", body = ErrorEnvelope),
        (status = 422, description = "A field is out of range (`details` names it)", body = ErrorEnvelope),
        (status = 429, description = E429, body = ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn update_conversation(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Conversation>, ApiError> {
    let input: ConversationPatch = parse_json(&body)?;
    if input.priority.is_some() {
        visible_conversation(&state, &who, Permission::ReassignConversations, &id).await?;
    }
    if input.labels.is_some() || input.language.is_some() || input.priority.is_none() {
        visible_conversation(&state, &who, Permission::ReplyToCustomer, &id).await?;
    }
    if let Some(p) = input.priority
        && !(0..=MAX_PRIORITY).contains(&p)
    {
        return Err(ApiError::invalid_field(
            "priority",
            format!("must be an integer from 0 to {MAX_PRIORITY}"),
        ));
    }
    let labels = match input.labels {
        Some(labels) => {
            let mut clean: Vec<String> = Vec::new();
            for (i, label) in labels.iter().enumerate() {
                let label = label.trim();
                if label.is_empty() || label.chars().count() > MAX_LABEL {
                    return Err(ApiError::invalid_field(
                        &format!("labels[{i}]"),
                        format!("must be 1 to {MAX_LABEL} characters"),
                    ));
                }
                if !clean.iter().any(|l| l == label) {
                    clean.push(label.to_owned());
                }
            }
            if clean.len() > MAX_LABELS {
                return Err(ApiError::invalid_field(
                    "labels",
                    format!("at most {MAX_LABELS} labels"),
                ));
            }
            Some(clean)
        }
        None => None,
    };
    if let Some(Some(code)) = &input.language
        && !super::agents::is_language(code)
    {
        return Err(ApiError::invalid_field(
            "language",
            "must be a language code such as `es` or `pt-br` (lowercase)",
        ));
    }
    let conv = state
        .store
        .update_conversation(
            &who.account_id,
            &id,
            input.priority,
            labels.as_deref(),
            input.language.as_ref().map(Option::as_deref),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?;
    state
        .events
        .publish(&who.account_id, "conversation.updated", json!(conv))
        .await;
    Ok(Json(conv))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributesIn {
    /// Attribute name → value, checked against the declared types (`vip`: boolean, `tier`:
    /// string); null removes the attribute; attributes not named are kept.
    #[schema(value_type = Object, example = json!({"vip": true, "tier": "gold"}))]
    pub attributes: Map<String, Json_>,
}

#[derive(Serialize, ToSchema)]
pub struct AttributesOut {
    pub contact_id: String,
    #[schema(value_type = Object)]
    pub attributes: Map<String, Json_>,
}

fn fits(ty: &Type, v: &Json_) -> bool {
    match ty {
        Type::Bool => v.is_boolean(),
        Type::Number => v.is_number(),
        Type::String => v.is_string(),
        Type::List(of) => v
            .as_array()
            .is_some_and(|items| items.iter().all(|i| fits(of, i))),
    }
}

#[utoipa::path(
    put,
    path = "/v1/contacts/{id}/attributes",
    tag = "contacts",
    summary = "Set contact attributes that routing rules read",
    description = "Merges the given attributes into the contact's (`conv.contact.<name>` in rules). Each must be declared with its type; null removes one. Requires `configure_routing`.",
    params(("id" = String, Path, description = "Contact id (`ctc_…`).")),
    request_body = AttributesIn,
    responses(
        (status = 200, description = "The contact's attributes now", body = AttributesOut),
        (status = 400, description = "The body is not valid JSON", body = ErrorEnvelope),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`", body = ErrorEnvelope),
        (status = 404, description = "No such contact", body = ErrorEnvelope),
        (status = 422, description = "An attribute is not declared or has the wrong type (`details` names it)", body = ErrorEnvelope),
        (status = 429, description = E429, body = ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn put_attributes(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<AttributesOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: AttributesIn = parse_json(&body)?;
    let schema = rule_schema();
    for (name, value) in &input.attributes {
        let field = format!("attributes.{name}");
        let Some(ty) = schema.contact.get(name) else {
            let known: Vec<&str> = schema.contact.keys().map(String::as_str).collect();
            return Err(ApiError::invalid_field(
                &field,
                format!(
                    "is not a declared attribute (declared: {})",
                    known.join(", ")
                ),
            ));
        };
        if !value.is_null() && !fits(ty, value) {
            return Err(ApiError::invalid_field(&field, format!("must be a {ty}")));
        }
    }
    let attributes = state
        .store
        .merge_contact_attributes(&who.account_id, &id, &input.attributes)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    // Logged for integrations (outbound webhooks); it names no conversation or agent, so no
    // console socket receives it.
    state
        .events
        .publish(
            &who.account_id,
            "contact.updated",
            serde_json::json!({ "contact_id": id, "attributes": attributes }),
        )
        .await;
    Ok(Json(AttributesOut {
        contact_id: id,
        attributes,
    }))
}
