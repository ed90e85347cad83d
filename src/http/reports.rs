//! Reports: `GET /v1/reports/sla` — volumes and first-response times over the conversations
//! the caller's `view_sla_reports` scope reaches (an agent: their own; a team lead: their
//! teams'; a branch manager: their branch's).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiQuery, AppState, parse_instant};
use crate::access::{Permission, Principal};
use crate::error::ApiError;
use crate::ids;
use crate::store::reports::SlaReport;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/reports/sla", get(sla))
}

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlaQuery {
    /// RFC 3339 or Unix milliseconds; default: 7 days before `until`.
    since: Option<String>,
    /// RFC 3339 or Unix milliseconds; default: now.
    until: Option<String>,
}

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
