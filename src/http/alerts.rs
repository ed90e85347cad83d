//! Alert history and the rules behind it (docs/ALERTS.md), for operators
//! (`configure_routing`): each episode with the notices sent for it and how each went, and
//! the rules and destinations in force (never their secrets).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::{cut_page, id_cursor, page_limit};
use super::{ApiQuery, AppState};
use crate::access::{Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::alerts::Alert;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/alerts", get(list_alerts))
        .route("/v1/admin/alert-rules", get(list_rules))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list_alerts, list_rules))]
pub struct AlertsApi;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// `firing` or `resolved`.
    pub state: Option<String>,
    /// 1 to 100, default 25.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertPage {
    pub data: Vec<Alert>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/alerts",
    tag = "alerts",
    summary = "Alert history",
    description = "Alert episodes of the caller's account, newest first: when each fired and resolved, the signal's value, and every notice sent for it (`sent`, `due` with the last error, `broken` when the destination refused it for good, `failed` when out of attempts). Requires `configure_routing`.",
    params(AlertQuery),
    responses(
        (status = 200, description = "One page, newest first.", body = AlertPage),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 422, description = "A bad `state`, `limit` or `cursor`, or an unknown parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_alerts(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> Result<Json<AlertPage>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    if let Some(s) = query.state.as_deref()
        && !matches!(s, "firing" | "resolved")
    {
        return Err(ApiError::invalid_field(
            "state",
            "must be firing or resolved",
        ));
    }
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::ALERT)?;
    let items = state
        .store
        .list_alerts(
            &who.account_id,
            query.state.as_deref(),
            cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let (data, next_cursor) = cut_page(items, limit, |a| a.id.clone());
    Ok(Json(AlertPage { data, next_cursor }))
}

/// A rule in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleOut {
    pub name: String,
    pub signal: String,
    pub threshold: f64,
    pub window_secs: Option<u64>,
    pub for_secs: u64,
    pub hold_down_secs: u64,
    pub severity: String,
    pub destinations: Vec<String>,
}

/// A destination, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationOut {
    pub name: String,
    /// `slack` or `pagerduty`.
    pub kind: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RulesOut {
    pub rules: Vec<RuleOut>,
    pub destinations: Vec<DestinationOut>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/alert-rules",
    tag = "alerts",
    summary = "Alert rules and destinations in force",
    description = "The rules of the caller's account as configured (`[alerts]`, including the shipped defaults) and its destinations, without their secrets. Requires `configure_routing`.",
    responses(
        (status = 200, description = "The rules and destinations.", body = RulesOut),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_rules(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<RulesOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let config = &state.config;
    let mine = |account: &Option<String>| {
        ids::from_slug(ids::ACCOUNT, config.account_of(account)) == who.account_id
    };
    let rules = config
        .alerts
        .effective_rules(&config.accounts.default)
        .into_iter()
        .filter(|r| mine(&r.account))
        .map(|r| RuleOut {
            name: r.name,
            signal: r.signal,
            threshold: r.threshold,
            window_secs: r.window_secs,
            for_secs: r.for_secs,
            hold_down_secs: r.hold_down_secs,
            severity: r.severity,
            destinations: r.destinations,
        })
        .collect();
    let destinations = config
        .alerts
        .destinations
        .iter()
        .filter(|d| mine(&d.account))
        .map(|d| DestinationOut {
            name: d.name.clone(),
            kind: d.kind.clone(),
        })
        .collect();
    Ok(Json(RulesOut {
        rules,
        destinations,
    }))
}
