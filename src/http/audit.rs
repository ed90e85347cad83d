//! The audit log API: `GET /v1/audit` (newest first, cursor paged) and
//! `GET /v1/audit/export.csv` (the same filters, one CSV of at most [`EXPORT_ROW_CAP`] rows).
//! Both require `view_audit_log`. The log itself is append-only (see `store::audit`).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::admin::BearerAuth;
use super::api::{id_cursor, page, page_limit};
use super::{ApiQuery, AppState, parse_instant};
use crate::access::{Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::audit::{AuditFilter, AuditRecord};

/// The most rows one export returns; narrow the filters (`since`/`until`) for more.
pub const EXPORT_ROW_CAP: usize = 100_000;
/// Says how many rows an export may hold at most.
pub const ROW_CAP_HEADER: &str = "x-export-row-cap";
/// `true` when the export stopped at the cap and older matching records were left out.
pub const TRUNCATED_HEADER: &str = "x-export-truncated";
const EXPORT_BATCH: i64 = 1_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list_audit))
        .route("/v1/audit/export.csv", get(export_csv))
}

/// The audit API's OpenAPI description (merged into `/v1/openapi.json` by the lead).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_audit, export_csv),
    components(schemas(AuditOut, AuditPage)),
    modifiers(&BearerAuth)
)]
pub struct AuditApi;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// 1–100, default 25 (ignored by the export).
    limit: Option<i64>,
    /// The `next_cursor` of the previous page (ignored by the export).
    cursor: Option<String>,
    actor_id: Option<String>,
    /// e.g. `user.created`.
    action: Option<String>,
    /// e.g. `user`, `team`, `api_key`.
    entity_type: Option<String>,
    entity_id: Option<String>,
    /// RFC 3339; records at or after it.
    since: Option<String>,
    /// RFC 3339; records before it.
    until: Option<String>,
}

impl AuditQuery {
    fn filter(&self) -> Result<AuditFilter, ApiError> {
        let since_ms = self
            .since
            .as_deref()
            .map(|s| parse_instant("since", s))
            .transpose()?;
        let until_ms = self
            .until
            .as_deref()
            .map(|s| parse_instant("until", s))
            .transpose()?;
        if let (Some(since), Some(until)) = (since_ms, until_ms)
            && since >= until
        {
            return Err(ApiError::invalid_field("until", "must be after `since`"));
        }
        Ok(AuditFilter {
            actor_id: self.actor_id.clone(),
            action: self.action.clone(),
            entity_type: self.entity_type.clone(),
            entity_id: self.entity_id.clone(),
            since_ms,
            until_ms,
        })
    }
}

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
fn format_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// One audit record. `at` is Unix milliseconds; `before`/`after` are snapshots of the entity.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditOut {
    id: String,
    at: i64,
    /// `user`, `api_key`, `system` or `anonymous`.
    actor_type: String,
    actor_id: Option<String>,
    action: String,
    entity_type: String,
    entity_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    after: Option<Value>,
    ip: Option<String>,
    user_agent: Option<String>,
    correlation_id: Option<String>,
}

impl From<AuditRecord> for AuditOut {
    fn from(r: AuditRecord) -> Self {
        AuditOut {
            id: r.id,
            at: r.at,
            actor_type: r.actor_type,
            actor_id: r.actor_id,
            action: r.action,
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            before: r.before,
            after: r.after,
            ip: r.ip,
            user_agent: r.user_agent,
            correlation_id: r.correlation_id,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    data: Vec<AuditOut>,
    next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of records, newest first", body = AuditPage),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks view_audit_log", body = ErrorEnvelope),
        (status = 422, description = "A filter is invalid (named in details)", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    who.require(Permission::ViewAuditLog)?;
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::AUDIT)?;
    let filter = query.filter()?;
    let records = state
        .store
        .list_audit(&who.account_id, &filter, cursor.as_deref(), limit + 1)
        .await?;
    let out: Vec<AuditOut> = records.into_iter().map(AuditOut::from).collect();
    Ok(page(out, limit, |r| r.id.clone()))
}

const CSV_HEADER: [&str; 12] = [
    "id",
    "at",
    "actor_type",
    "actor_id",
    "action",
    "entity_type",
    "entity_id",
    "ip",
    "user_agent",
    "correlation_id",
    "before",
    "after",
];

/// `body` as a `text/csv` attachment named `{name}.csv` (`name` is one of the hub's own).
pub(crate) fn csv_attachment(body: Vec<u8>, name: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.csv\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response
}

/// A cell a spreadsheet will not run: text starting with `=`, `+`, `-`, `@`, tab or CR is
/// prefixed with `'` (OWASP's advice against CSV injection). Audit cells hold values anyone can
/// choose, such as a failed login's user agent.
pub(crate) fn inert(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

fn csv_row(r: &AuditRecord) -> [String; 12] {
    let opt = |v: &Option<String>| inert(v.clone().unwrap_or_default());
    let json = |v: &Option<Value>| v.as_ref().map(Value::to_string).unwrap_or_default();
    [
        r.id.clone(),
        format_rfc3339(r.at),
        r.actor_type.clone(),
        opt(&r.actor_id),
        r.action.clone(),
        inert(r.entity_type.clone()),
        opt(&r.entity_id),
        opt(&r.ip),
        opt(&r.user_agent),
        opt(&r.correlation_id),
        json(&r.before),
        json(&r.after),
    ]
}

#[utoipa::path(
    get, path = "/v1/audit/export.csv", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "`text/csv` with a header row, newest first, at most 100 000 rows \
          (`X-Export-Row-Cap`; `X-Export-Truncated: true` when more matched)", content_type = "text/csv", body = String),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks view_audit_log", body = ErrorEnvelope),
        (status = 422, description = "A filter is invalid (named in details)", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn export_csv(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    who.require(Permission::ViewAuditLog)?;
    let filter = query.filter()?;
    // Built in memory: the cap bounds it (a record is well under 1 KiB on average).
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(CSV_HEADER)
        .map_err(ApiError::internal)?;
    let mut written = 0usize;
    let mut cursor: Option<String> = None;
    let mut truncated = false;
    loop {
        let batch = state
            .store
            .list_audit(&who.account_id, &filter, cursor.as_deref(), EXPORT_BATCH)
            .await?;
        let full = batch.len() as i64 == EXPORT_BATCH;
        for record in &batch {
            if written == EXPORT_ROW_CAP {
                truncated = true;
                break;
            }
            writer
                .write_record(csv_row(record))
                .map_err(ApiError::internal)?;
            written += 1;
        }
        if truncated || !full {
            break;
        }
        if written == EXPORT_ROW_CAP {
            // Exactly at the cap: one more look tells whether anything was left out.
            let last = batch.last().map(|r| r.id.clone());
            truncated = !state
                .store
                .list_audit(&who.account_id, &filter, last.as_deref(), 1)
                .await?
                .is_empty();
            break;
        }
        cursor = batch.last().map(|r| r.id.clone());
    }
    let body = writer.into_inner().map_err(ApiError::internal)?;
    let mut response = csv_attachment(body, "audit");
    let headers = response.headers_mut();
    headers.insert(ROW_CAP_HEADER, EXPORT_ROW_CAP.into());
    headers.insert(
        TRUNCATED_HEADER,
        HeaderValue::from_static(if truncated { "true" } else { "false" }),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let ms = parse_instant("since", "2025-10-09T09:00:00.250+02:00").unwrap();
        assert_eq!(ms, 1_759_993_200_250);
        assert_eq!(format_rfc3339(ms), "2025-10-09T07:00:00.25Z");
        let err = parse_instant("since", "yesterday").unwrap_err().to_string();
        assert!(err.starts_with("since:"), "{err}");
    }
}
