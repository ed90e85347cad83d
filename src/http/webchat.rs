//! Web chat, our own channel: visitor sessions and visitor messages.
//!
//! A session may be bound to a customer the business already knows: the widget sends the
//! business's `identifier` for them with `identifier_hash`, the hex HMAC-SHA256 of the identifier
//! under the inbox's identity secret (computed by the business's server, never in the browser).
//! Visitor messages take the same durable path as provider webhooks, and `client_message_id`
//! makes a retried send idempotent.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchboard_connectors::{Channel, webchat};
use switchboard_workers::SourceKind;
use tower_http::cors::{Any, CorsLayer};
use utoipa::ToSchema;

use super::{ApiQuery, AppState, RawBody, parse_json};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::inboxes::InboxRuntime;
use crate::store::inbound::NewEvent;
use crate::store::webchat::VisitorSession;

/// Visitor sessions last 30 days; the widget starts a new one after that.
const SESSION_TTL_MS: i64 = 30 * 24 * 3600 * 1000;
const MAX_TEXT_CHARS: usize = 4096;

/// This module's part of the OpenAPI document (merged by `super::openapi::document`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(start_session, post_message, visitor_history))]
pub struct WebchatApi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/webchat/{inbox}/sessions",
            post(start_session).options(preflight),
        )
        .route(
            "/v1/webchat/{inbox}/messages",
            post(post_message).get(visitor_history).options(preflight),
        )
        // The widget runs on the business's own site: these calls are cross-origin. They carry
        // the visitor token in a header and never a cookie, so any origin may make them. (The
        // layer answers preflights itself; `options` only routes them to it.)
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .expose_headers([header::RETRY_AFTER])
                .max_age(Duration::from_secs(3600)),
        )
}

/// A new visitor session; every field is optional and an anonymous visitor may send no body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SessionIn {
    /// The business's own id for a known customer (at most 256 characters); needs
    /// `identifier_hash` and an inbox with an identity secret.
    identifier: Option<String>,
    /// Hex HMAC-SHA256 of `identifier` under the inbox's identity secret, computed server-side.
    identifier_hash: Option<String>,
    /// At most 256 characters.
    name: Option<String>,
    /// At most 320 characters.
    email: Option<String>,
}

/// A started visitor session.
#[derive(Debug, Serialize, ToSchema)]
struct SessionOut {
    /// Send as `Authorization: Bearer <visitor_token>` with visitor messages; shown only once.
    visitor_token: String,
    visitor_id: String,
    /// Whether the session is bound to a verified `identifier`.
    identified: bool,
    expires_at_ms: i64,
}

/// What a visitor message answers once it is durable.
#[derive(Debug, Serialize, ToSchema)]
struct MessageAccepted {
    /// `accepted` when the message is new, `duplicate` for a retried `client_message_id`.
    #[schema(example = "accepted")]
    status: &'static str,
    client_message_id: String,
}

pub(crate) fn webchat_inbox(state: &AppState, slug: &str) -> Result<Arc<InboxRuntime>, ApiError> {
    state
        .registry
        .inbox(slug, Channel::Webchat)
        .ok_or_else(|| ApiError::not_found("web-chat inbox"))
}

pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn optional_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(ApiError::invalid_field(field, "must not be empty")),
        Some(v) if v.chars().count() > max => Err(ApiError::invalid_field(
            field,
            format!("must be at most {max} characters"),
        )),
        other => Ok(other),
    }
}

#[utoipa::path(
    post,
    path = "/v1/webchat/{inbox}/sessions",
    tag = "webchat",
    summary = "Start a visitor session",
    description = "Called by the web-chat widget. Anonymous, or bound to a customer the business knows through `identifier` + `identifier_hash`. Sessions last 30 days.",
    params(("inbox" = String, Path, description = "The web-chat inbox's slug.")),
    request_body(content = Option<SessionIn>, description = "May be empty for an anonymous visitor."),
    responses(
        (status = 201, description = "The session and its visitor token.", body = SessionOut),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "`identifier_hash` does not match `identifier` (`invalid_identifier_hash`).", body = ErrorEnvelope),
        (status = 404, description = "No such web-chat inbox.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "A field is empty or too long, `identifier` and `identifier_hash` are not given together, the inbox cannot verify identities, or an unknown field.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests from this address.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
async fn start_session(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let inbox = webchat_inbox(&state, &slug)?;
    // An anonymous visitor may send no body at all.
    let input: SessionIn = if body.iter().all(u8::is_ascii_whitespace) {
        SessionIn::default()
    } else {
        parse_json(&body)?
    };
    let identifier = optional_text("identifier", input.identifier, 256)?;
    let name = optional_text("name", input.name, 256)?;
    let email = optional_text("email", input.email, 320)?;
    if let Some(identifier) = &identifier {
        let Some(secret) = &inbox.identity_secret else {
            return Err(ApiError::invalid_field(
                "identifier",
                "this inbox has no identity_secret, so identities cannot be verified",
            ));
        };
        let hash = input.identifier_hash.as_deref().ok_or_else(|| {
            ApiError::invalid_field("identifier_hash", "is required with identifier")
        })?;
        if webchat::verify_identity(secret.expose_secret().as_bytes(), identifier, hash).is_err() {
            return Err(ApiError::unauthenticated(
                "invalid_identifier_hash",
                "identifier_hash does not match identifier",
            ));
        }
    } else if input.identifier_hash.is_some() {
        return Err(ApiError::invalid_field(
            "identifier",
            "is required with identifier_hash",
        ));
    }
    let now = ids::now_ms();
    let token = format!("vst_{}", Alphanumeric.sample_string(&mut rand::rng(), 40));
    let session = VisitorSession {
        id: ids::new(ids::WEBCHAT_SESSION),
        account_id: inbox.account_id.clone(),
        inbox_id: inbox.id.clone(),
        visitor_id: ids::new(ids::VISITOR),
        identifier,
        name,
        email,
        expires_at_ms: now + SESSION_TTL_MS,
    };
    state
        .store
        .create_visitor_session(&session, &token_hash(&token), now)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(SessionOut {
            visitor_token: token,
            identified: session.identifier.is_some(),
            expires_at_ms: session.expires_at_ms,
            visitor_id: session.visitor_id,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageIn {
    /// The widget's id for this message (1 to 128 characters): a retry with the same id is
    /// recorded once.
    client_message_id: String,
    /// 1 to 4096 characters.
    text: String,
}

#[utoipa::path(
    post,
    path = "/v1/webchat/{inbox}/messages",
    tag = "webchat",
    summary = "Send a visitor message",
    description = "Takes the same durable path as provider webhooks; `client_message_id` makes a retried send idempotent. Authenticated by the visitor token from the session, not by an API credential.",
    params(("inbox" = String, Path, description = "The web-chat inbox's slug.")),
    request_body = MessageIn,
    responses(
        (status = 202, description = "The message is durable (or was already) and will be routed.", body = MessageAccepted),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "The visitor token is missing (`missing_visitor_token`), unknown or expired (`invalid_visitor_token`).", body = ErrorEnvelope),
        (status = 404, description = "No such web-chat inbox.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "`client_message_id` or `text` is missing, empty or too long, or an unknown field.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests from this address.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "The message could not be made durable; retry.", body = ErrorEnvelope),
    ),
    security(("visitor_token" = [])),
)]
async fn post_message(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let inbox = webchat_inbox(&state, &slug)?;
    let session = visitor(&state, &inbox, bearer(&headers)).await?;
    let now = ids::now_ms();
    // Authenticate before reading the body: a stranger learns nothing about the schema.
    let input: MessageIn = parse_json(&body)?;
    let id = input.client_message_id.trim();
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::invalid_field(
            "client_message_id",
            "must be 1 to 128 characters",
        ));
    }
    if input.text.trim().is_empty() {
        return Err(ApiError::invalid_field("text", "must not be empty"));
    }
    if input.text.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::invalid_field(
            "text",
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    let message = webchat::VisitorMessage {
        visitor_id: session.visitor_id.clone(),
        identifier: session.identifier.clone(),
        name: session.name.clone(),
        email: session.email.clone(),
        client_message_id: id.to_owned(),
        text: input.text,
        sent_at_ms: now,
    };
    let body = serde_json::to_vec(&message).map_err(ApiError::internal)?;
    let key = format!("msg:{}:{id}", session.visitor_id);
    let keys = [key.clone()];
    let source = SourceKind::Webchat.source(&inbox.slug);
    let accepted = state
        .intake
        .accept(
            NewEvent {
                account_id: &inbox.account_id,
                channel: Channel::Webchat.as_str(),
                source: &source,
                inbox_id: Some(&inbox.id),
                event_key: &key,
                content_type: "application/json",
                body: body.into(),
            },
            &keys,
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageAccepted {
            status: accepted.as_str(),
            client_message_id: id.to_owned(),
        }),
    )
        .into_response())
}

async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The visitor session behind a token (from the header or, on the socket, the query).
pub(crate) async fn visitor(
    state: &AppState,
    inbox: &InboxRuntime,
    token: Option<&str>,
) -> Result<VisitorSession, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::unauthenticated(
            "missing_visitor_token",
            "send the visitor token as `Authorization: Bearer <token>`",
        )
    })?;
    state
        .store
        .visitor_session(&inbox.id, &token_hash(token), ids::now_ms())
        .await?
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "invalid_visitor_token",
                "the visitor token is unknown or expired",
            )
        })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// How many of the newest messages, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// A message as the visitor sees it: no agent-internal fields.
#[derive(Debug, Serialize, ToSchema)]
struct VisitorMessage {
    id: String,
    conversation_id: String,
    /// `inbound` (the visitor's) or `outbound` (an agent's reply).
    direction: String,
    /// The widget's own id for the visitor's messages (`inbound` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    client_message_id: Option<String>,
    #[schema(value_type = Object)]
    content: serde_json::Value,
    status: String,
    created_at_ms: i64,
}

/// The visitor's history, and where their socket should resume.
#[derive(Debug, Serialize, ToSchema)]
struct VisitorHistory {
    /// Oldest first.
    data: Vec<VisitorMessage>,
    /// Open `GET /v1/webchat/{inbox}/ws?last_event_id=` with this to get every later message
    /// exactly once.
    last_event_id: i64,
}

#[utoipa::path(
    get,
    path = "/v1/webchat/{inbox}/messages",
    tag = "webchat",
    summary = "The visitor's history",
    description = "The visitor's public messages in this inbox (theirs and agents' replies, never private notes), newest `limit`, oldest first, and the event id to resume the visitor socket from. Lets the widget survive a page reload.",
    params(("inbox" = String, Path, description = "The web-chat inbox's slug."), HistoryQuery),
    responses(
        (status = 200, description = "The history.", body = VisitorHistory),
        (status = 401, description = "The visitor token is missing (`missing_visitor_token`), unknown or expired (`invalid_visitor_token`).", body = ErrorEnvelope),
        (status = 404, description = "No such web-chat inbox.", body = ErrorEnvelope),
        (status = 422, description = "`limit` out of range, or an unknown query parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests from this address.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("visitor_token" = [])),
)]
async fn visitor_history(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<VisitorHistory>, ApiError> {
    let inbox = webchat_inbox(&state, &slug)?;
    let session = visitor(&state, &inbox, bearer(&headers)).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid_field("limit", "must be 1 to 200"));
    }
    let identity = session.identifier.as_deref().unwrap_or(&session.visitor_id);
    let Some(contact_id) = state
        .store
        .visitor_contact(&session.account_id, identity)
        .await?
    else {
        // Not written yet: no contact, no messages; resume from the head.
        let head = state.store.event_head(&session.account_id).await?;
        return Ok(Json(VisitorHistory {
            data: Vec::new(),
            last_event_id: head.last_id,
        }));
    };
    let (messages, last_event_id) = state
        .store
        .visitor_messages(&session.account_id, &inbox.id, &contact_id, limit)
        .await?;
    Ok(Json(VisitorHistory {
        data: messages
            .into_iter()
            .map(|m| VisitorMessage {
                client_message_id: client_message_id(
                    &m.direction,
                    m.provider_message_id.as_deref(),
                )
                .map(str::to_owned),
                id: m.id,
                conversation_id: m.conversation_id,
                direction: m.direction,
                content: m.content,
                status: m.status,
                created_at_ms: m.created_at_ms,
            })
            .collect(),
        last_event_id,
    }))
}

/// The widget's id of a visitor message, from its stored provider id
/// (`<visitor_id>:<client_message_id>`), so the widget can match its own sends.
pub(crate) fn client_message_id<'a>(
    direction: &str,
    provider_message_id: Option<&'a str>,
) -> Option<&'a str> {
    (direction == "inbound")
        .then_some(provider_message_id?)
        .and_then(|p| p.split_once(':'))
        .map(|(_, id)| id)
}

/// The token in `Authorization: Bearer …`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}
