//! Reports over the conversations the caller's `view_sla_reports` scope reaches (an agent: their
//! own; a team lead: their teams'; a branch manager: their branch's):
//! `GET /v1/reports/sla` (volumes and first-response times) and `GET /v1/reports/volume`
//! (conversations and messages per channel, inbox, team or agent). Both answer JSON, or CSV
//! with `format=csv`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiQuery, AppState, parse_instant};
use crate::access::{Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::reports::{GroupBy, SlaFigures, SlaReport, VolumeRow};

/// This module's part of the OpenAPI document (merged by `super::openapi::document`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(sla, volume))]
pub struct ReportsApi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/reports/sla", get(sla))
        .route("/v1/reports/volume", get(volume))
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
    /// `json` (default) or `csv`: one row per assignee, then a `total` row.
    format: Option<String>,
}

/// `since`/`until` checked: a window of at most 366 days, 7 days by default.
fn window(since: Option<&str>, until: Option<&str>) -> Result<(i64, i64), ApiError> {
    let until = match until {
        Some(v) => parse_instant("until", v)?,
        None => ids::now_ms(),
    };
    let since = match since {
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
    Ok((since, until))
}

/// Whether `format` asks for CSV.
fn csv_wanted(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(_) => Err(ApiError::invalid_field("format", "must be json or csv")),
    }
}

/// A CSV attachment of `rows` under `header`, every cell made inert for spreadsheets.
fn csv_response(
    name: &'static str,
    header_row: &[&str],
    rows: Vec<Vec<String>>,
) -> Result<Response, ApiError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(header_row)
        .map_err(ApiError::internal)?;
    for row in rows {
        writer
            .write_record(row.into_iter().map(super::audit::inert))
            .map_err(ApiError::internal)?;
    }
    let body = writer.into_inner().map_err(ApiError::internal)?;
    Ok(super::audit::csv_attachment(body, name))
}

fn opt(v: Option<i64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_default()
}

#[utoipa::path(
    get,
    path = "/v1/reports/sla",
    tag = "reports",
    summary = "SLA report",
    description = "Volumes and first-response times over the conversations created in the window that the caller's `view_sla_reports` scope reaches, in total and per assignee. `format=csv` answers a CSV attachment (one row per assignee, then `total`). The window is at most 366 days.",
    params(SlaQuery),
    responses(
        (status = 200, description = "The report (JSON, or `text/csv` with `format=csv`).", body = SlaReport),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `view_sla_reports`.", body = ErrorEnvelope),
        (status = 422, description = "`since`/`until` unparseable, `since` not before `until`, a window over 366 days, an unknown `format`, or an unknown query parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn sla(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<SlaQuery>,
) -> Result<Response, ApiError> {
    let scope = who.require(Permission::ViewSlaReports)?;
    let (since, until) = window(query.since.as_deref(), query.until.as_deref())?;
    let csv = csv_wanted(query.format.as_deref())?;
    let report = state
        .store
        .sla_report(&who.account_id, &scope, since, until)
        .await?;
    if !csv {
        return Ok(Json(report).into_response());
    }
    let row = |who: String, f: &SlaFigures| {
        vec![
            who,
            f.conversations.to_string(),
            f.open.to_string(),
            f.resolved.to_string(),
            f.responded.to_string(),
            opt(f.first_response_median_ms),
            opt(f.first_response_p90_ms),
        ]
    };
    let mut rows: Vec<Vec<String>> = report
        .by_assignee
        .iter()
        .map(|a| row(a.assignee_id.clone().unwrap_or_default(), &a.figures))
        .collect();
    rows.push(row("total".to_owned(), &report.totals));
    csv_response(
        "sla",
        &[
            "assignee_id",
            "conversations",
            "open",
            "resolved",
            "responded",
            "first_response_median_ms",
            "first_response_p90_ms",
        ],
        rows,
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct VolumeQuery {
    /// RFC 3339 or Unix milliseconds; default: 7 days before `until`.
    since: Option<String>,
    /// RFC 3339 or Unix milliseconds; default: now.
    until: Option<String>,
    /// `channel` (default), `inbox`, `team` or `agent`.
    group_by: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// A volume report.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct VolumeReport {
    pub since_ms: i64,
    pub until_ms: i64,
    pub scope: String,
    pub group_by: String,
    pub rows: Vec<VolumeRow>,
}

#[utoipa::path(
    get,
    path = "/v1/reports/volume",
    tag = "reports",
    summary = "Volume report",
    description = "Conversations created (and how many of them are resolved) and messages exchanged in the window, per channel, inbox, team or agent, over what the caller's `view_sla_reports` scope reaches. `format=csv` answers a CSV attachment. The window is at most 366 days.",
    params(VolumeQuery),
    responses(
        (status = 200, description = "The report (JSON, or `text/csv` with `format=csv`).", body = VolumeReport),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `view_sla_reports`.", body = ErrorEnvelope),
        (status = 422, description = "`since`/`until` unparseable or out of order, a window over 366 days, an unknown `group_by` or `format`, or an unknown query parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn volume(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<VolumeQuery>,
) -> Result<Response, ApiError> {
    let scope = who.require(Permission::ViewSlaReports)?;
    let (since, until) = window(query.since.as_deref(), query.until.as_deref())?;
    let csv = csv_wanted(query.format.as_deref())?;
    let group_name = query.group_by.as_deref().unwrap_or("channel");
    let group_by = GroupBy::parse(group_name).ok_or_else(|| {
        ApiError::invalid_field("group_by", "must be channel, inbox, team or agent")
    })?;
    let rows = state
        .store
        .volume_report(&who.account_id, &scope, group_by, since, until)
        .await?;
    if csv {
        let cells = rows
            .iter()
            .map(|r| {
                vec![
                    r.key.clone().unwrap_or_default(),
                    r.conversations.to_string(),
                    r.resolved.to_string(),
                    r.inbound_messages.to_string(),
                    r.outbound_messages.to_string(),
                ]
            })
            .collect();
        return csv_response(
            "volume",
            &[
                group_name,
                "conversations",
                "resolved",
                "inbound_messages",
                "outbound_messages",
            ],
            cells,
        );
    }
    Ok(Json(VolumeReport {
        since_ms: since,
        until_ms: until,
        scope: scope.kind().to_owned(),
        group_by: group_name.to_owned(),
        rows,
    })
    .into_response())
}
