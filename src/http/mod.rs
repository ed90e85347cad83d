//! HTTP adapters: routing, the correlation id, and extractors whose rejections use the error
//! envelope. Handlers translate between HTTP and the intake/store; they hold no SQL and no
//! provider logic.

pub mod admin;
pub mod agents;
pub mod alerts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod compose;
pub mod dead_letters;
pub mod health;
pub mod inboxes;
pub mod openapi;
pub mod reports;
pub mod routing;
pub mod routing_rules;
pub mod saved_replies;
pub mod setup;
pub mod sla;
pub mod ui;
pub mod webchat;
pub mod webhooks;
pub mod webhooks_out;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::broker::Broker;
use crate::config::Config;
use crate::error::{ApiError, CORRELATION_ID};
use crate::inboxes::Registry;
use crate::intake::Intake;
use crate::store::Store;

pub const CORRELATION_HEADER: &str = "x-correlation-id";

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub broker: Broker,
    pub queue: switchboard_workers::Queue,
    pub intake: Intake,
    pub registry: Arc<Registry>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub keys: Arc<crate::crypto::Keys>,
    pub limits: Arc<crate::limits::Limits>,
    pub events: crate::live::Events,
    pub live: Arc<crate::live::Node>,
    /// Asks media URLs whether they answer, before a media reply is accepted.
    pub media: reqwest::Client,
    /// The first-run setup token, while the hub has no administrator.
    pub setup: Arc<setup::FirstRun>,
}

pub fn router(state: AppState) -> Router {
    let limit = state.config.server.max_body_bytes;
    Router::new()
        .merge(
            // Unauthenticated provider and visitor routes: limited per client IP.
            webhooks::routes()
                .merge(webchat::routes())
                .merge(ws::visitor_routes())
                .route_layer(middleware::from_fn_with_state(
                    state.clone(),
                    crate::limits::per_ip,
                )),
        )
        .merge(api::routes())
        .merge(reports::routes())
        .merge(admin::routes())
        .merge(audit::routes())
        .merge(auth::routes())
        .merge(inboxes::routes())
        .merge(agents::routes())
        .merge(routing_rules::routes())
        .merge(dead_letters::routes())
        .merge(saved_replies::routes())
        .merge(alerts::routes())
        .merge(sla::routes())
        .merge(webhooks_out::routes())
        .merge(routing::routes())
        .merge(ws::routes())
        .merge(health::routes())
        .merge(openapi::routes())
        .merge(setup::routes())
        .merge(ui::routes())
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .method_not_allowed_fallback(|| async {
            ApiError::bad_request(
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(correlation))
        .with_state(state)
}

/// Takes the caller's `X-Correlation-Id` when it is sane, or mints one; puts it on the tracing
/// span, in the task-local the error envelope reads, and on the response.
async fn correlation(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| ulid::Ulid::new().to_string().to_ascii_lowercase());
    let span = tracing::info_span!("request", correlation_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = CORRELATION_ID
        .scope(id.clone(), next.run(request).instrument(span))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(CORRELATION_HEADER), value);
    }
    response
}

/// The raw body, with oversize answered as 413 in the envelope.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.config.server.max_body_bytes;
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge { limit })
            }
            Err(rejection) => Err(ApiError::bad_request(
                "unreadable_body",
                rejection.body_text(),
            )),
        }
    }
}

/// Parses a JSON body: 400 when it is not JSON, 422 naming the field when it does not fit.
/// Handlers call it after authenticating, so a stranger learns nothing about the schema.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let mut path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            // serde names a missing field only in its message; the envelope names it as the
            // field (`media.kind`), not as the object that lacks it (`media`, or `.`).
            let message = inner.to_string();
            if let Some(name) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                path = if path == "." {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                };
            }
            ApiError::invalid_field(&path, message)
        } else {
            ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            )
        }
    })
}

/// Query string whose rejections use the envelope.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| ApiError::invalid_field(&e.path().to_string(), e.into_inner().to_string()))
    }
}

/// A point in time given as RFC 3339 (`2026-11-22T10:00:00Z`) or Unix milliseconds.
pub fn parse_instant(field: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .ok_or_else(|| {
            ApiError::invalid_field(
                field,
                "must be RFC 3339 (2026-11-22T10:00:00Z) or Unix milliseconds",
            )
        })
}
