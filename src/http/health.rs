//! Liveness, readiness and metrics.
//!
//! `/health/live` answers while the process serves HTTP. `/health/ready` checks every
//! dependency this node uses (database, queue, and in distributed mode Redis for dedup and
//! pub/sub) and answers 503 naming the ones that are down, so a load balancer stops sending
//! webhooks that could not be made durable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::AppState;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/health/live",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/health/ready", get(ready))
}

async fn ready(State(state): State<AppState>) -> Response {
    let mut checks = Map::new();
    let mut healthy = true;
    let mut record = |name: &str, result: Result<(), String>| {
        healthy &= result.is_ok();
        checks.insert(
            name.to_owned(),
            match result {
                Ok(()) => json!({ "status": "ok" }),
                Err(e) => json!({ "status": "down", "error": e }),
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
    let body: Value =
        json!({ "status": if healthy { "ready" } else { "unavailable" }, "checks": checks });
    (status, Json(body)).into_response()
}

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
