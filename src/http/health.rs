//! Liveness, readiness and metrics.
//!
//! `/health/live` answers while the process serves HTTP. `/health/ready` checks every
//! dependency this node uses (database, queue, and in distributed mode Redis for dedup and
//! pub/sub) and answers 503 naming the ones that are down, so a load balancer stops sending
//! webhooks that could not be made durable.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::{ApiError, ErrorEnvelope};

/// This module's part of the OpenAPI document (merged by `super::openapi::document`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(live, ready, metrics))]
pub struct HealthApi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

#[derive(Debug, Serialize, ToSchema)]
struct Liveness {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Readiness of this node and of each dependency it uses.
#[derive(Debug, Serialize, ToSchema)]
struct Readiness {
    /// `ready` or `unavailable`.
    #[schema(example = "ready")]
    status: &'static str,
    /// One entry per dependency: `database`, `queue`, and in distributed mode `redis_dedup` and
    /// `redis_broker`.
    checks: BTreeMap<String, DependencyCheck>,
}

#[derive(Debug, Serialize, ToSchema)]
struct DependencyCheck {
    /// `ok` or `down`.
    #[schema(example = "ok")]
    status: &'static str,
    /// Why the dependency is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[utoipa::path(
    get,
    path = "/health/live",
    tag = "health",
    summary = "Liveness",
    responses((status = 200, description = "The process serves HTTP.", body = Liveness)),
)]
async fn live() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    summary = "Readiness",
    description = "Checks every dependency this node uses; a load balancer should stop sending webhooks while this answers 503.",
    responses(
        (status = 200, description = "Every dependency is up.", body = Readiness),
        (status = 503, description = "At least one dependency is down; `checks` names it. Not the error envelope.", body = Readiness),
    ),
)]
async fn ready(State(state): State<AppState>) -> Response {
    let mut checks = BTreeMap::new();
    let mut healthy = true;
    let mut record = |name: &str, result: Result<(), String>| {
        healthy &= result.is_ok();
        checks.insert(
            name.to_owned(),
            match result {
                Ok(()) => DependencyCheck {
                    status: "ok",
                    error: None,
                },
                Err(e) => DependencyCheck {
                    status: "down",
                    error: Some(e),
                },
            },
        );
    };
    let (db, queue) = tokio::join!(state.store.ping(), state.queue.ping());
    record("database", db.map_err(|e| e.to_string()));
    record("queue", queue.map_err(|e| e.to_string()));
    if state.config.mode() == crate::config::Mode::Distributed {
        let (dedup, broker) = tokio::join!(state.intake.dedup.ping(), state.broker.ping());
        record("redis_dedup", dedup.map_err(|e| e.to_string()));
        record("redis_broker", broker.map_err(|e| e.to_string()));
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if healthy { "ready" } else { "unavailable" },
        checks,
    };
    (status, Json(body)).into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Metrics in the Prometheus text exposition format.", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 404, description = "No metrics recorder is installed in this process.", body = ErrorEnvelope),
    ),
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            handle.render(),
        )
            .into_response(),
        None => ApiError::NotFound("no metrics recorder is installed".to_owned()).into_response(),
    }
}
