//! Provider webhooks: `/webhooks/whatsapp/{app}` (Meta handshake and events) and
//! `/webhooks/twilio/{inbox}` (+ `/status`).
//!
//! Signatures are checked on the raw body bytes, in constant time, before anything is parsed or
//! stored. A forged or unsigned request leaves a counter and a log line, nothing else.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use switchboard_connectors::{Channel, SignatureError, twilio, whatsapp};
use switchboard_workers::SourceKind;
use tracing::warn;

use super::{AppState, RawBody};
use crate::error::{ApiError, ErrorEnvelope};
use crate::intake::event_key;
use crate::store::inbound::NewEvent;

/// This module's part of the OpenAPI document (merged by `super::openapi::document`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(whatsapp_handshake, whatsapp_events, twilio_message, twilio_status))]
pub struct WebhooksApi;

/// What a WhatsApp events webhook answers once the body is durable.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WebhookAck {
    /// `accepted` when the event is new, `duplicate` when it was already recorded.
    #[schema(example = "accepted")]
    pub status: &'static str,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/webhooks/whatsapp/{app}",
            get(whatsapp_handshake).post(whatsapp_events),
        )
        .route("/webhooks/twilio/{inbox}", post(twilio_message))
        .route("/webhooks/twilio/{inbox}/status", post(twilio_status))
}

/// Meta's verification handshake: echo `hub.challenge` when `hub.verify_token` matches.
#[utoipa::path(
    get,
    path = "/webhooks/whatsapp/{app}",
    tag = "webhooks",
    summary = "WhatsApp verification handshake",
    description = "Meta's subscription check: answers `hub.challenge` as plain text when `hub.mode` is `subscribe` and `hub.verify_token` matches the app's verify token.",
    params(
        ("app" = String, Path, description = "The WhatsApp app's name in the hub's config."),
        ("hub.mode" = String, Query, description = "Must be `subscribe`."),
        ("hub.verify_token" = String, Query, description = "The app's configured verify token."),
        ("hub.challenge" = String, Query, description = "Echoed back on success."),
    ),
    responses(
        (status = 200, description = "The challenge, echoed.", body = String, content_type = "text/plain"),
        (status = 403, description = "The verify token does not match, or `hub.mode`/`hub.challenge` is missing.", body = ErrorEnvelope),
        (status = 404, description = "No such WhatsApp app.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests from this address.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
async fn whatsapp_handshake(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let app = state
        .registry
        .app(&app)
        .ok_or_else(|| ApiError::not_found("WhatsApp app"))?;
    let token = query
        .get("hub.verify_token")
        .map(String::as_bytes)
        .unwrap_or_default();
    let expected = app.verify_token.expose_secret().as_bytes();
    let mode_ok = query.get("hub.mode").map(String::as_str) == Some("subscribe");
    match query.get("hub.challenge") {
        Some(challenge) if mode_ok && bool::from(token.ct_eq(expected)) => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            challenge.clone(),
        )
            .into_response()),
        _ => {
            warn!(app = %app.name, "WhatsApp verification handshake refused.");
            Err(ApiError::Forbidden(
                "hub.verify_token does not match, or hub.mode/hub.challenge is missing".to_owned(),
            ))
        }
    }
}

#[utoipa::path(
    post,
    path = "/webhooks/whatsapp/{app}",
    tag = "webhooks",
    summary = "WhatsApp Cloud API events",
    description = "Meta's webhook delivery. The signature is checked on the raw body bytes before anything is parsed; the body is then made durable (exactly once per provider event) before the answer. A signed body that cannot be read is still kept, and quarantined.",
    params(
        ("app" = String, Path, description = "The WhatsApp app's name in the hub's config."),
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the raw body under the app secret."),
    ),
    request_body(
        content = Object,
        content_type = "application/json",
        description = "Meta's webhook payload (`{\"object\":\"whatsapp_business_account\",\"entry\":[…]}`), verbatim: the signature covers the exact bytes.",
    ),
    responses(
        (status = 200, description = "The event is durable (or was already).", body = WebhookAck),
        (status = 400, description = "The body could not be read.", body = ErrorEnvelope),
        (status = 401, description = "The signature header is missing or malformed (`invalid_signature`).", body = ErrorEnvelope),
        (status = 403, description = "The signature does not match.", body = ErrorEnvelope),
        (status = 404, description = "No such WhatsApp app.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests from this address.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "The event could not be made durable; retry.", body = ErrorEnvelope),
    ),
)]
async fn whatsapp_events(
    State(state): State<AppState>,
    Path(app): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let app = state
        .registry
        .app(&app)
        .ok_or_else(|| ApiError::not_found("WhatsApp app"))?;
    let signature = headers
        .get(whatsapp::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    if let Err(e) =
        whatsapp::verify_signature(app.app_secret.expose_secret().as_bytes(), &body, signature)
    {
        return Err(rejected(&state, &app.account_id, "whatsapp", &app.name, e));
    }
    // A signed body we cannot read is still kept (and quarantined by the worker).
    let keys = whatsapp::dedup_keys(&body).unwrap_or_default();
    let source = SourceKind::Whatsapp.source(&app.name);
    let accepted = state
        .intake
        .accept(
            NewEvent {
                account_id: &app.account_id,
                channel: Channel::Whatsapp.as_str(),
                source: &source,
                inbox_id: None,
                event_key: &event_key(&keys, &body),
                content_type: "application/json",
                body: body.clone(),
            },
            &keys,
        )
        .await?;
    Ok(Json(WebhookAck {
        status: accepted.as_str(),
    })
    .into_response())
}

/// The empty TwiML document: Switchboard replies asynchronously through the REST API.
const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response></Response>"#;

#[utoipa::path(
    post,
    path = "/webhooks/twilio/{inbox}",
    tag = "webhooks",
    summary = "Twilio incoming message",
    description = "Twilio's incoming-message webhook for an SMS inbox. The `X-Twilio-Signature` is checked against the configured public URL and the parameters (form bodies) or the body hash (JSON bodies, signalled by a `bodySHA256` query parameter) before anything is stored. Answers an empty TwiML document: replies go out through the REST API.",
    params(
        ("inbox" = String, Path, description = "The SMS inbox's slug."),
        ("bodySHA256" = Option<String>, Query, description = "Present when Twilio sends a JSON body: the hex SHA-256 of the body, covered by the signature."),
        ("X-Twilio-Signature" = String, Header, description = "Base64 HMAC-SHA1 under the inbox's auth token of the URL (plus, for form bodies, the sorted parameters)."),
    ),
    request_body(
        description = "Twilio's message parameters (`MessageSid`, `From`, `To`, `Body`, …), usually form-encoded; a raw JSON body when `bodySHA256` is in the URL.",
        content(
            (Object = "application/x-www-form-urlencoded"),
            (Object = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "The event is durable (or was already): an empty TwiML `<Response/>`.", body = String, content_type = "text/xml"),
        (status = 400, description = "The body could not be read.", body = ErrorEnvelope),
        (status = 401, description = "The signature header is missing or malformed (`invalid_signature`).", body = ErrorEnvelope),
        (status = 403, description = "The signature does not match.", body = ErrorEnvelope),
        (status = 404, description = "No such SMS inbox.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests from this address.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "The event could not be made durable; retry.", body = ErrorEnvelope),
    ),
)]
async fn twilio_message(
    state: State<AppState>,
    path: Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    twilio_event(state, path, uri, headers, body, SourceKind::TwilioMessage).await
}

#[utoipa::path(
    post,
    path = "/webhooks/twilio/{inbox}/status",
    tag = "webhooks",
    summary = "Twilio status callback",
    description = "Twilio's delivery-status callback for messages sent from an SMS inbox (`MessageSid`, `MessageStatus`, …). Signed and answered like the incoming-message webhook.",
    params(
        ("inbox" = String, Path, description = "The SMS inbox's slug."),
        ("bodySHA256" = Option<String>, Query, description = "Present when Twilio sends a JSON body: the hex SHA-256 of the body, covered by the signature."),
        ("X-Twilio-Signature" = String, Header, description = "Base64 HMAC-SHA1 under the inbox's auth token of the URL (plus, for form bodies, the sorted parameters)."),
    ),
    request_body(
        description = "Twilio's status parameters, usually form-encoded; a raw JSON body when `bodySHA256` is in the URL.",
        content(
            (Object = "application/x-www-form-urlencoded"),
            (Object = "application/json"),
        ),
    ),
    responses(
        (status = 200, description = "The event is durable (or was already): an empty TwiML `<Response/>`.", body = String, content_type = "text/xml"),
        (status = 400, description = "The body could not be read.", body = ErrorEnvelope),
        (status = 401, description = "The signature header is missing or malformed (`invalid_signature`).", body = ErrorEnvelope),
        (status = 403, description = "The signature does not match.", body = ErrorEnvelope),
        (status = 404, description = "No such SMS inbox.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests from this address.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "The event could not be made durable; retry.", body = ErrorEnvelope),
    ),
)]
async fn twilio_status(
    state: State<AppState>,
    path: Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    twilio_event(state, path, uri, headers, body, SourceKind::TwilioStatus).await
}

async fn twilio_event(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
    kind: SourceKind,
) -> Result<Response, ApiError> {
    let inbox = state
        .registry
        .inbox(&slug, Channel::Sms)
        .ok_or_else(|| ApiError::not_found("Twilio inbox"))?;
    let token = inbox
        .twilio_auth_token
        .as_ref()
        .map(|t| t.expose_secret().as_bytes())
        .unwrap_or_default();
    // Twilio signs the URL it was configured with; rebuild it from the public base URL, never
    // from the Host header, and keep the query string exactly as received.
    let url = match uri.query() {
        Some(q) => format!("{}{}?{q}", state.config.server.public_url, uri.path()),
        None => format!("{}{}", state.config.server.public_url, uri.path()),
    };
    let signature = headers
        .get(twilio::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let is_json = uri.query().is_some_and(|q| q.contains("bodySHA256="));
    let params = if is_json {
        Vec::new()
    } else {
        twilio::parse_form(&body)
    };
    let verified = if is_json {
        twilio::verify_json_signature(token, &url, &body, signature)
    } else {
        twilio::verify_signature(token, &url, &params, signature)
    };
    if let Err(e) = verified {
        return Err(rejected(&state, &inbox.account_id, "sms", &inbox.slug, e));
    }
    let key = twilio::dedup_key(&params);
    let keys: Vec<String> = key.into_iter().collect();
    let source = kind.source(&inbox.slug);
    state
        .intake
        .accept(
            NewEvent {
                account_id: &inbox.account_id,
                channel: Channel::Sms.as_str(),
                source: &source,
                inbox_id: Some(&inbox.id),
                event_key: &event_key(&keys, &body),
                content_type: if is_json {
                    "application/json"
                } else {
                    "application/x-www-form-urlencoded"
                },
                body: body.clone(),
            },
            &keys,
        )
        .await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        EMPTY_TWIML,
    )
        .into_response())
}

/// Counts and logs a refused signature; the request leaves nothing else behind.
fn rejected(
    state: &AppState,
    account_id: &str,
    channel: &'static str,
    source: &str,
    e: SignatureError,
) -> ApiError {
    metrics::counter!("switchboard_webhooks_total", "channel" => channel, "outcome" => "bad_signature")
        .increment(1);
    state
        .intake
        .tally
        .count(account_id, crate::alerts::watch::WEBHOOKS_REFUSED, None);
    warn!(channel, source, reason = %e, "Signature check failed.");
    match e {
        SignatureError::Missing | SignatureError::Malformed => ApiError::unauthenticated(
            "invalid_signature",
            format!(
                "the signature header is {}",
                if e == SignatureError::Missing {
                    "missing"
                } else {
                    "malformed"
                }
            ),
        ),
        SignatureError::Mismatch => ApiError::Forbidden("the signature does not match".to_owned()),
    }
}
