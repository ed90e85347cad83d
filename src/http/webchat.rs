//! Web chat, our own channel: visitor sessions and visitor messages.
//!
//! A session may be bound to a customer the business already knows: the widget sends the
//! business's `identifier` for them with `identifier_hash`, the hex HMAC-SHA256 of the identifier
//! under the inbox's identity secret (computed by the business's server, never in the browser).
//! Visitor messages take the same durable path as provider webhooks, and `client_message_id`
//! makes a retried send idempotent.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use rand::distr::{Alphanumeric, SampleString};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchboard_connectors::{Channel, webchat};
use switchboard_workers::SourceKind;
use utoipa::ToSchema;

use super::{AppState, RawBody, parse_json};
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
#[openapi(paths(start_session, post_message))]
pub struct WebchatApi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webchat/{inbox}/sessions", post(start_session))
        .route("/v1/webchat/{inbox}/messages", post(post_message))
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
    let token = bearer(&headers).ok_or_else(|| {
        ApiError::unauthenticated(
            "missing_visitor_token",
            "send the visitor token as `Authorization: Bearer <token>`",
        )
    })?;
    let now = ids::now_ms();
    let session = state
        .store
        .visitor_session(&inbox.id, &token_hash(token), now)
        .await?
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "invalid_visitor_token",
                "the visitor token is unknown or expired",
            )
        })?;
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
