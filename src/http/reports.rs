//! Reports: `GET /v1/reports/sla` — volumes and first-response times over the conversations
//! the caller's `view_sla_reports` scope reaches (an agent: their own; a team lead: their
//! teams'; a branch manager: their branch's).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiQuery, AppState, parse_instant};
use crate::access::{Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::reports::SlaReport;

/// This module's part of the OpenAPI document (merged by `super::openapi::document`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(sla))]
pub struct ReportsApi;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/reports/sla", get(sla))
}

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SlaQuery {
    /// RFC 3339 or Unix milliseconds; default: 7 days before `until`.
    since: Option<String>,
    /// RFC 3339 or Unix milliseconds; default: now.
    until: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/reports/sla",
    tag = "reports",
    summary = "SLA report",
    description = "Volumes and first-response times over the conversations created in the window that the caller's `view_sla_reports` scope reaches, in total and per assignee. The window is at most 366 days.",
    params(SlaQuery),
    responses(
        (status = 200, description = "The report.", body = SlaReport),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `view_sla_reports`.", body = ErrorEnvelope),
        (status = 422, description = "`since`/`until` unparseable, `since` not before `until`, a window over 366 days, or an unknown query parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn sla(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<SlaQuery>,
) -> Result<Json<SlaReport>, ApiError> {
    let scope = who.require(Permission::ViewSlaReports)?;
    let until = match &query.until {
        Some(v) => parse_instant("until", v)?,
        None => ids::now_ms(),
    };
    let since = match &query.since {
        Some(v) => parse_instant("since", v)?,
        None => until - 7 * DAY_MS,
    };
    if since >= until {
        return Err(ApiError::invalid_field("since", "must be before until"));
    }
    if until - since > 366 * DAY_MS {
        return Err(ApiError::invalid_field(
            "since",
            "the window must be at most 366 days",
        ));
    }
    Ok(Json(
        state
            .store
            .sla_report(&who.account_id, &scope, since, until)
            .await?,
    ))
}
