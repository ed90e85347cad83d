//! Conversations, messages, contacts and the inbound event log. Every list has the shape
//! `{"data":[…],"next_cursor":…}` with `limit` (1–100, default 25) and `cursor`.
//!
//! Access is decided by `crate::access`: each handler asks for the permission it exercises and
//! hands the resulting scope to the store, so a record outside the caller's scope is a 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::compose::{ReplyBody, compose};
use super::{ApiQuery, AppState, RawBody, parse_json};
use crate::access::{Permission, Principal, RecordScope, Scope};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::agents::{AgentReach, PresenceRow};
use crate::store::conversations::{
    Contact, Conversation, ConversationFilter, ConversationListItem, ConversationOrder, Message,
};
use crate::store::inbound::EventSummary;
use crate::store::privacy::Erasure;

/// This module's part of the OpenAPI document (merged by `super::openapi::document`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_conversations,
    get_conversation,
    list_messages,
    reply,
    assign,
    assignable_agents,
    get_contact,
    erase_contact,
    list_events
))]
pub struct ConversationsApi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations", get(list_conversations))
        .route(
            "/v1/conversations/{id}",
            get(get_conversation).patch(super::routing::update_conversation),
        )
        .route(
            "/v1/conversations/{id}/messages",
            get(list_messages).post(reply),
        )
        .route("/v1/conversations/{id}/assignment", put(assign))
        .route(
            "/v1/conversations/{id}/assignable-agents",
            get(assignable_agents),
        )
        .route("/v1/contacts/{id}", get(get_contact).delete(erase_contact))
        .route("/v1/inbound-events", get(list_events))
}

const DEFAULT_LIMIT: i64 = 25;
const MAX_LIMIT: i64 = 100;

/// The page size of a list: 1–100, default 25.
pub(crate) fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    status: Option<String>,
    inbox: Option<String>,
    assignee: Option<String>,
    team: Option<String>,
    contact: Option<String>,
    q: Option<String>,
    sort: Option<String>,
}

impl ListQuery {
    fn limit(&self) -> Result<i64, ApiError> {
        page_limit(self.limit)
    }

    fn reject_filters(&self, allowed: &[&str]) -> Result<(), ApiError> {
        for (name, present) in [
            ("status", self.status.is_some()),
            ("inbox", self.inbox.is_some()),
            ("assignee", self.assignee.is_some()),
            ("team", self.team.is_some()),
            ("contact", self.contact.is_some()),
            ("q", self.q.is_some()),
            ("sort", self.sort.is_some()),
        ] {
            if present && !allowed.contains(&name) {
                return Err(ApiError::invalid_field(
                    name,
                    "is not a filter of this list",
                ));
            }
        }
        Ok(())
    }
}

/// The paging parameters every list takes. Documentation only: the lists parse [`ListQuery`],
/// which also rejects the filters a list does not have.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct PageParams {
    /// Page size, 1 to 100.
    #[param(default = 25, minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page; omit for the first page.
    cursor: Option<String>,
}

/// One page of conversations, most recently created (or, with `sort=last_activity`, most
/// recently active) first, each with its contact.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPage {
    pub data: Vec<ConversationListItem>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One page of a conversation's messages, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub data: Vec<Message>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// One page of raw inbound events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundEventPage {
    pub data: Vec<EventSummary>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A conversation with its contact (null when the contact is outside the caller's scope).
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub conversation: Conversation,
    pub contact: Option<Contact>,
}

/// Cuts a page fetched with one extra row (to know whether another page exists) to `limit`,
/// and names the cursor of the next page.
pub(crate) fn cut_page<T>(
    mut items: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = if more {
        items.last().map(cursor_of)
    } else {
        None
    };
    (items, next)
}

/// The list envelope `{"data":[…],"next_cursor":…}` from a page fetched with one extra row.
pub(crate) fn page<T: Serialize>(
    items: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> Json<Value> {
    let (data, next_cursor) = cut_page(items, limit, cursor_of);
    Json(json!({ "data": data, "next_cursor": next_cursor }))
}

fn check_status(status: Option<&str>, allowed: &[&str]) -> Result<(), ApiError> {
    match status {
        Some(s) if !allowed.contains(&s) => Err(ApiError::invalid_field(
            "status",
            format!("must be one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn id_cursor(cursor: Option<&str>, prefix: &str) -> Result<Option<String>, ApiError> {
    match cursor {
        Some(c) if !ids::has_prefix(c, prefix) => Err(ApiError::invalid_field(
            "cursor",
            "is not a cursor from this list",
        )),
        other => Ok(other.map(str::to_owned)),
    }
}

/// The longest `q` a conversation search takes.
const MAX_SEARCH: usize = 100;
/// What starts a `sort=last_activity` cursor (an id cursor is a bare `conv_…`).
const ACTIVITY_CURSOR: &str = "last_activity";

fn activity_cursor(at_ms: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{ACTIVITY_CURSOR}|{at_ms}|{id}"))
}

fn decode_activity_cursor(cursor: &str) -> Option<(i64, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let mut parts = raw.splitn(3, '|');
    (parts.next()? == ACTIVITY_CURSOR).then_some(())?;
    let at = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    ids::has_prefix(id, ids::CONVERSATION).then(|| (at, id.to_owned()))
}

#[utoipa::path(
    get,
    path = "/v1/conversations",
    tag = "conversations",
    summary = "List conversations",
    description = "The conversations within the caller's `view_conversations` scope, each with its contact (`id`, `name`, `phone`). A cursor belongs to the order it came from: another `sort` refuses it (422). With `sort=last_activity` a conversation that gets a message while you page moves to the front, so it may be missed by the pages after it or seen twice.",
    params(
        PageParams,
        ("status" = Option<String>, Query, description = "Only conversations in this status: `open`, `pending`, `snoozed` or `resolved`."),
        ("inbox" = Option<String>, Query, description = "Only conversations of this inbox (its slug or id)."),
        ("assignee" = Option<String>, Query, description = "Only conversations assigned to this user id; `none`: only those nobody is assigned to."),
        ("team" = Option<String>, Query, description = "Only conversations of this team id."),
        ("contact" = Option<String>, Query, description = "Only conversations of this contact (`ctc_…`)."),
        ("q" = Option<String>, Query, description = "Only conversations whose contact's name, phone or a channel identity contains this text (case-insensitive; 1 to 100 characters)."),
        ("sort" = Option<String>, Query, description = "`created` (the default: newest first) or `last_activity` (latest message first)."),
    ),
    responses(
        (status = 200, description = "One page of conversations.", body = ConversationPage),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `view_conversations`.", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit`, `cursor` (including a cursor of another `sort`), `status`, `inbox`, `contact`, `q` or `sort`, or an unknown query parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_conversations(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ConversationPage>, ApiError> {
    let limit = query.limit()?;
    check_status(
        query.status.as_deref(),
        &["open", "pending", "snoozed", "resolved"],
    )?;
    let inbox_id = match &query.inbox {
        Some(inbox) => Some(
            state
                .registry
                .find(inbox)
                .filter(|i| i.account_id == who.account_id)
                .map(|i| i.id.clone())
                .ok_or_else(|| ApiError::invalid_field("inbox", "no such inbox"))?,
        ),
        None => None,
    };
    if let Some(contact) = &query.contact
        && !ids::has_prefix(contact, ids::CONTACT)
    {
        return Err(ApiError::invalid_field(
            "contact",
            "must be a contact id (`ctc_…`)",
        ));
    }
    let text = match query.q.as_deref().map(str::trim) {
        Some(q) if q.is_empty() || q.chars().count() > MAX_SEARCH => {
            return Err(ApiError::invalid_field(
                "q",
                format!("must be 1 to {MAX_SEARCH} characters"),
            ));
        }
        other => other,
    };
    let scope = who.require(Permission::ViewConversations)?;
    let wrong_cursor =
        || ApiError::invalid_field("cursor", "is not a cursor from this list and sort");
    let order = match query.sort.as_deref() {
        None | Some("created") => {
            ConversationOrder::Newest(id_cursor(query.cursor.as_deref(), ids::CONVERSATION)?)
        }
        Some("last_activity") => ConversationOrder::LastActivity(match query.cursor.as_deref() {
            Some(c) => Some(decode_activity_cursor(c).ok_or_else(wrong_cursor)?),
            None => None,
        }),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "sort",
                "must be created or last_activity",
            ));
        }
    };
    let unassigned = query.assignee.as_deref() == Some("none");
    let filter = ConversationFilter {
        inbox_id: inbox_id.as_deref(),
        status: query.status.as_deref(),
        assignee_id: query.assignee.as_deref().filter(|_| !unassigned),
        unassigned,
        team_id: query.team.as_deref(),
        contact_id: query.contact.as_deref(),
        text,
    };
    let items = state
        .store
        .list_conversations(&who.account_id, &scope, &filter, &order, limit + 1)
        .await?;
    let (data, next_cursor) = match order {
        ConversationOrder::Newest(_) => cut_page(items, limit, |c| c.conversation.id.clone()),
        ConversationOrder::LastActivity(_) => cut_page(items, limit, |c| {
            activity_cursor(c.conversation.last_message_at_ms, &c.conversation.id)
        }),
    };
    Ok(Json(ConversationPage { data, next_cursor }))
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    summary = "Get a conversation",
    params(("id" = String, Path, description = "Conversation id (`conv_…`).")),
    responses(
        (status = 200, description = "The conversation and its contact.", body = ConversationDetail),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `view_conversations`.", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn get_conversation(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConversationDetail>, ApiError> {
    let scope = who.require(Permission::ViewConversations)?;
    let conversation =
        visible_conversation(&state, &who, Permission::ViewConversations, &id).await?;
    let contact = state
        .store
        .get_contact(&who.account_id, &scope, &conversation.contact_id)
        .await?;
    Ok(Json(ConversationDetail {
        conversation,
        contact,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/messages",
    tag = "conversations",
    summary = "List a conversation's messages",
    params(("id" = String, Path, description = "Conversation id (`conv_…`)."), PageParams),
    responses(
        (status = 200, description = "One page of messages, oldest first.", body = MessagePage),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `view_conversations`.", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope.", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or a query parameter this list does not take.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_messages(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    query.reject_filters(&[])?;
    let limit = query.limit()?;
    visible_conversation(&state, &who, Permission::ViewConversations, &id).await?;
    let after =
        match &query.cursor {
            Some(c) => Some(decode_message_cursor(c).ok_or_else(|| {
                ApiError::invalid_field("cursor", "is not a cursor from this list")
            })?),
            None => None,
        };
    let items = state
        .store
        .list_messages(
            &who.account_id,
            &id,
            after.as_ref().map(|(t, i)| (*t, i.as_str())),
            limit + 1,
        )
        .await?;
    let (data, next_cursor) = cut_page(items, limit, |m| {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", m.sent_at_ms, m.id))
    });
    Ok(Json(MessagePage { data, next_cursor }))
}

fn decode_message_cursor(cursor: &str) -> Option<(i64, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (ts, id) = raw.split_once('|')?;
    Some((ts.parse().ok()?, id.to_owned()))
}

#[utoipa::path(
    get,
    path = "/v1/contacts/{id}",
    tag = "contacts",
    summary = "Get a contact",
    params(("id" = String, Path, description = "Contact id.")),
    responses(
        (status = 200, description = "The contact with its channel identities.", body = Contact),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `view_conversations`.", body = ErrorEnvelope),
        (status = 404, description = "No such contact within the caller's scope.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn get_contact(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Contact>, ApiError> {
    let scope = who.require(Permission::ViewConversations)?;
    let contact = state
        .store
        .get_contact(&who.account_id, &scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    Ok(Json(contact))
}

#[utoipa::path(
    get,
    path = "/v1/inbound-events",
    tag = "inbound-events",
    summary = "List raw inbound events",
    description = "The inbound event log: every signed provider request as received, with a preview of its raw body. Requires `export_raw_data`.",
    params(
        PageParams,
        ("status" = Option<String>, Query, description = "Only events in this status: `received`, `processed`, `unrouted` or `quarantined`."),
    ),
    responses(
        (status = 200, description = "One page of events, newest first.", body = InboundEventPage),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `export_raw_data`.", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit`, `cursor` or `status`, or a query parameter this list does not take.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_events(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<InboundEventPage>, ApiError> {
    // Raw provider payloads are personal data in bulk: the export permission guards them.
    who.require(Permission::ExportRawData)?;
    query.reject_filters(&["status"])?;
    let limit = query.limit()?;
    check_status(
        query.status.as_deref(),
        &["received", "processed", "unrouted", "quarantined"],
    )?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::INBOUND_EVENT)?;
    let items = state
        .store
        .list_events(
            &who.account_id,
            query.status.as_deref(),
            cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let (data, next_cursor) = cut_page(items, limit, |e| e.id.clone());
    Ok(Json(InboundEventPage { data, next_cursor }))
}

/// The conversation `id` if the caller holds `permission` over it: 403 without the permission,
/// 404 when it is missing or outside the permission's scope.
pub(crate) async fn visible_conversation(
    state: &AppState,
    who: &Principal,
    permission: Permission,
    id: &str,
) -> Result<Conversation, ApiError> {
    let scope = who.require(permission)?;
    if !ids::has_prefix(id, ids::CONVERSATION) {
        return Err(ApiError::not_found("conversation"));
    }
    state
        .store
        .get_conversation(&who.account_id, &scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))
}

/// How long after the customer's last message WhatsApp accepts a free-form reply.
const WHATSAPP_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// An agent's reply. It is stored as a `pending` outbound message and a delivery job sends it
/// (web chat: the visitor's socket and its resume log deliver it, so it is `sent` at once).
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/messages",
    tag = "conversations",
    summary = "Reply to the customer",
    description = "Records an agent's reply (text, media by URL, a registered template, or a canned response with its variables filled) as a `pending` outbound message and queues its delivery (docs/OUTBOUND.md); `private: true` records an internal note that is never sent. An `Idempotency-Key` header makes retries safe: the same key in the account returns the first reply (200, `Idempotent-Replayed: true`) instead of sending again. Requires `reply_to_customer`.",
    params(
        ("id" = String, Path, description = "Conversation id (`conv_…`)."),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; a retry with the same key and body returns the first reply."),
    ),
    request_body = ReplyBody,
    responses(
        (status = 201, description = "The reply was recorded.", body = Message),
        (status = 200, description = "A retry with a known `Idempotency-Key`: the first reply.", body = Message),
        (status = 400, description = "The body is not valid JSON or could not be read, or the `Idempotency-Key` is malformed.", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `reply_to_customer`.", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "The body does not give exactly one of `text`, `media`, `template` or `canned_response`; text or a caption is empty or too long for the channel; a media URL does not answer 2xx, is private, serves another type or is too large; the inbox has no such template or the parameter count differs; a canned response's variable is missing or unused; `in_reply_to` is not in the conversation; or the body has unknown fields (`validation_failed`, details name the field); the WhatsApp customer last wrote more than 24 hours ago (`whatsapp_window_closed`: send a template); the contact has no address on the channel (`no_recipient`); the `Idempotency-Key` was used for a different reply (`idempotency_key_reused`).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn reply(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    RawBody(body): RawBody,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    use switchboard_connectors::{Channel, OutboundMessage};

    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value.to_str().ok().filter(|k| {
                (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic())
            });
            Some(key.ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_idempotency_key",
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                )
            })?)
        }
    };
    let conversation = visible_conversation(&state, &who, Permission::ReplyToCustomer, &id).await?;
    let body: ReplyBody = parse_json(&body)?;
    let private = body.private;
    let composed = compose(&state, &who, &conversation, body).await?;
    let channel = Channel::parse(&conversation.channel);
    let goes_out = !private && matches!(channel, Some(Channel::Whatsapp | Channel::Sms));
    if goes_out
        && composed.free_form
        && channel == Some(Channel::Whatsapp)
        && conversation
            .last_inbound_at_ms
            .is_none_or(|at| at < ids::now_ms() - WHATSAPP_WINDOW_MS)
    {
        return Err(ApiError::Refused {
            code: "whatsapp_window_closed",
            message: "the customer last wrote more than 24 hours ago; WhatsApp accepts only a template now".to_owned(),
            details: vec![json!({ "field": "template", "message": "send an approved template instead" })],
        });
    }
    let message_id = ids::new(ids::MESSAGE);
    let delivery = if goes_out {
        let to = state
            .store
            .recipient(
                &conversation.account_id,
                &conversation.contact_id,
                &conversation.channel,
            )
            .await?
            .ok_or_else(|| ApiError::Refused {
                code: "no_recipient",
                message: "the contact has no address on this conversation's channel".to_owned(),
                details: Vec::new(),
            })?;
        let request = OutboundMessage {
            to,
            content: composed.outbound,
            reply_to: composed.reply_to.clone(),
            reference: message_id.clone(),
        };
        Some(serde_json::to_string(&request).map_err(ApiError::internal)?)
    } else {
        None
    };
    let stored = state
        .store
        .insert_reply(crate::store::outbound::NewReply {
            id: &message_id,
            conversation: &conversation,
            author_id: who.user_id.as_deref(),
            content: &composed.content,
            reply_to: composed.reply_to.as_deref(),
            idempotency_key: key,
            private,
            delivery,
        })
        .await?;
    if !stored.created {
        if stored.conflicting {
            return Err(ApiError::Refused {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used for a different reply".to_owned(),
                details: vec![
                    json!({ "field": "Idempotency-Key", "message": "use a new key for a new reply" }),
                ],
            });
        }
        let mut response = (StatusCode::OK, Json(stored.message)).into_response();
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
        return Ok(response);
    }
    let message = stored.message;
    let value = serde_json::to_value(&message).map_err(ApiError::internal)?;
    let kind = if private {
        "note.created"
    } else {
        "message.created"
    };
    state.events.publish(&who.account_id, kind, value).await;
    if goes_out
        && let Err(e) = state
            .queue
            .enqueue_deliveries(vec![switchboard_workers::DeliverOutbound::new(&message.id)])
            .await
    {
        // Stored and due: the delivery sweep queues it again.
        tracing::warn!(error = %e, message = %message.id, "Could not queue a delivery; the sweep will.");
    }
    Ok((StatusCode::CREATED, Json(message)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// A user id, or null to unassign.
    pub assignee_id: Option<String>,
}

/// Reassigns a conversation. The conversation must be in the caller's reassign scope, and so
/// must the assignee: a team lead assigns within their teams, a branch manager within their
/// branch.
#[utoipa::path(
    put,
    path = "/v1/conversations/{id}/assignment",
    tag = "conversations",
    summary = "Reassign a conversation",
    description = "Sets or clears the assignee. Both the conversation and the assignee must be within the caller's `reassign_conversations` scope. A manual assignment is an override: it counts against the agent's load but is not refused for capacity, and frees the previous holder's slot (or withdraws a pending offer). Clearing the assignee queues the conversation again at its original position, excluding the agent taken off it.",
    params(("id" = String, Path, description = "Conversation id (`conv_…`).")),
    request_body = AssignBody,
    responses(
        (status = 200, description = "The updated conversation.", body = Conversation),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `reassign_conversations`, or the assignee is outside its scope.", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "`assignee_id` is not an active user of the account, or the body does not fit.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn assign(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Conversation>, ApiError> {
    let scope = who.require(Permission::ReassignConversations)?;
    let conversation =
        visible_conversation(&state, &who, Permission::ReassignConversations, &id).await?;
    let body: AssignBody = parse_json(&body)?;
    if let Some(assignee) = &body.assignee_id {
        let outside =
            || ApiError::invalid_field("assignee_id", "no such active user in this account");
        let user = state
            .store
            .get_user(&who.account_id, assignee)
            .await?
            .filter(|u| u.active)
            .ok_or_else(outside)?;
        if !assign_reach(&scope, &conversation).admits(user.branch_id.as_deref(), &user.team_ids) {
            return Err(ApiError::Forbidden(
                "the assignee is outside your reassign_conversations scope".to_owned(),
            ));
        }
    }
    let now = ids::now_ms();
    let record = who.audit("conversation.reassigned", "conversation", Some(&id));
    let updated = match body.assignee_id.as_deref() {
        Some(agent) => {
            state
                .store
                .assign_manually(&who.account_id, &id, agent, record, now)
                .await?
        }
        None => {
            state
                .store
                .unassign(&who.account_id, &id, record, now)
                .await?
        }
    }
    .ok_or_else(|| ApiError::not_found("conversation"))?;
    let mut value = serde_json::to_value(&updated).map_err(ApiError::internal)?;
    value["previous_assignee_id"] = serde_json::json!(conversation.assignee_id);
    state
        .events
        .publish(&who.account_id, "conversation.assigned", value)
        .await;
    // The previous holder's slot is free, or the conversation waits again.
    crate::dispatch::wake(&state.broker, &who.account_id).await;
    Ok(Json(updated))
}

/// The agents a caller whose `reassign_conversations` scope is `scope` may assign
/// `conversation` to: anyone active for `all`, the conversation's team for `team`, the caller's
/// branch for `branch`. The one rule both the assignment and the list of assignable agents
/// follow.
fn assign_reach(scope: &RecordScope, conversation: &Conversation) -> AgentReach {
    match scope.scope {
        Scope::All => AgentReach::All,
        Scope::Branch => scope
            .branch_id
            .clone()
            .map_or(AgentReach::Nobody, AgentReach::Branch),
        Scope::Team => conversation
            .team_id
            .clone()
            .map_or(AgentReach::Nobody, AgentReach::Team),
        Scope::Assigned | Scope::Own => AgentReach::Nobody,
    }
}

/// An agent the caller may assign a conversation to, with what decides whether they should.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignableAgent {
    /// The user id (what `PUT …/assignment` takes as `assignee_id`).
    pub id: String,
    pub name: String,
    /// What routing sees: `online`, `away` or `offline` (a stale heartbeat reads `offline`).
    pub presence: String,
    /// Conversations counted against the capacity now, per channel.
    pub load: std::collections::BTreeMap<String, i64>,
    /// Slots per channel; 0 means never routed that channel.
    pub capacity: std::collections::BTreeMap<String, i64>,
}

/// One page of assignable agents, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssignableAgentPage {
    pub data: Vec<AssignableAgent>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/assignable-agents",
    tag = "conversations",
    summary = "Agents the caller may assign the conversation to",
    description = "The active users that `PUT /v1/conversations/{id}/assignment` would accept from the caller: everyone for an `all` scope of `reassign_conversations`, the conversation's team members for `team`, the caller's branch for `branch`; each with presence, load and capacity per channel (as `GET /v1/admin/agents` computes them). Requires `reassign_conversations` within scope.",
    params(("id" = String, Path, description = "Conversation id (`conv_…`)."), PageParams),
    responses(
        (status = 200, description = "One page of agents, by id.", body = AssignableAgentPage),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `reassign_conversations`.", body = ErrorEnvelope),
        (status = 404, description = "No such conversation within the caller's scope.", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or a query parameter this list does not take.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn assignable_agents(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<AssignableAgentPage>, ApiError> {
    let scope = who.require(Permission::ReassignConversations)?;
    let conversation =
        visible_conversation(&state, &who, Permission::ReassignConversations, &id).await?;
    query.reject_filters(&[])?;
    let limit = query.limit()?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::USER)?;
    let agents = state
        .store
        .list_agents(
            &who.account_id,
            &assign_reach(&scope, &conversation),
            cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let (now, timeout) = (ids::now_ms(), state.config.routing.presence_timeout_ms());
    let (data, next_cursor) = cut_page(agents, limit, |a| a.user_id.clone());
    Ok(Json(AssignableAgentPage {
        data: data
            .into_iter()
            .map(|a| AssignableAgent {
                presence: PresenceRow::effective(a.presence.as_ref(), now, timeout).to_owned(),
                id: a.user_id,
                name: a.name,
                load: a.active,
                capacity: a.profile.capacity,
            })
            .collect(),
        next_cursor,
    }))
}

/// Data-subject erasure (requires the export-raw-data permission).
#[utoipa::path(
    delete,
    path = "/v1/contacts/{id}",
    tag = "contacts",
    summary = "Erase a contact's personal data",
    description = "Data-subject erasure: removes the contact's personal data, every message's content and the raw provider bodies, keeping the conversation structure and the audit trail. Idempotent. Requires `export_raw_data`.",
    params(("id" = String, Path, description = "Contact id.")),
    responses(
        (status = 200, description = "What the erasure touched (counts only).", body = Erasure),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `export_raw_data`.", body = ErrorEnvelope),
        (status = 404, description = "No such contact in the caller's account.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn erase_contact(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Erasure>, ApiError> {
    who.require(Permission::ExportRawData)?;
    let record = who.audit("contact.erased", "contact", Some(&id));
    let erasure = state
        .store
        .erase_contact(&who.account_id, &id, record)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    Ok(Json(erasure))
}
