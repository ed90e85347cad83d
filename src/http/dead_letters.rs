//! The dead-letter list: replies the hub gave up delivering (a permanent provider error, or the
//! last attempt), where an operator can see why and send them again (docs/OUTBOUND.md).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::{cut_page, id_cursor, page_limit};
use super::{ApiQuery, AppState};
use crate::access::{Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::outbound::DeadLetter;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/dead-letters", get(list_dead_letters))
        .route("/v1/admin/dead-letters/{id}/replay", post(replay))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list_dead_letters, replay))]
pub struct DeadLettersApi;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterQuery {
    /// 1 to 100, default 25.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub data: Vec<DeadLetter>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/dead-letters",
    tag = "delivery",
    summary = "List replies given up on",
    description = "Replies whose delivery ended without the provider accepting them: a permanent error (the provider's code and reason) or the last of `outbound.max_attempts`. Requires `configure_routing`.",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "One page, newest first.", body = DeadLetterPage),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or an unknown parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_dead_letters(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::MESSAGE)?;
    let items = state
        .store
        .dead_letters(&who.account_id, cursor.as_deref(), limit + 1)
        .await?;
    let (data, next_cursor) = cut_page(items, limit, |d| d.id.clone());
    Ok(Json(DeadLetterPage { data, next_cursor }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    pub message_id: String,
    /// `pending` again: queued with a fresh attempt budget.
    pub status: String,
}

#[utoipa::path(
    post,
    path = "/v1/admin/dead-letters/{id}/replay",
    tag = "delivery",
    summary = "Send a dead letter again",
    description = "Queues the reply again with a fresh attempt budget; its status returns to `pending` (a `message.status` event), the one way a status moves back, and only by an operator. Audited. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The message id (`msg_…`).")),
    responses(
        (status = 202, description = "Queued again.", body = Replayed),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 404, description = "No such dead letter in the account (or it was replayed already).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn replay(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<(axum::http::StatusCode, Json<Replayed>), ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let record = who.audit("dead_letter.replayed", "message", Some(&id));
    let moved = state
        .store
        .replay_dead_letter(&who.account_id, &id, &record)
        .await?
        .ok_or_else(|| ApiError::not_found("dead letter"))?;
    state
        .events
        .publish(
            &who.account_id,
            "message.status",
            crate::outbound::status_event(&moved),
        )
        .await;
    if let Err(e) = state
        .queue
        .enqueue_deliveries(vec![switchboard_workers::DeliverOutbound::new(&id)])
        .await
    {
        tracing::warn!(error = %e, message = %id, "Could not queue a replay; the sweep will.");
    }
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(Replayed {
            message_id: id,
            status: moved.status.as_str().to_owned(),
        }),
    ))
}
