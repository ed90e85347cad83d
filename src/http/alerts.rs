//! Alert history and the rules behind it (docs/ALERTS.md), for operators
//! (`configure_routing`): each episode with the notices sent for it and how each went, and
//! the rules and destinations in force (never their secrets).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::{cut_page, id_cursor, page_limit};
use super::{ApiQuery, AppState, RawBody, parse_json};
use crate::access::{Permission, Principal};
use crate::alerts::{RuleSpec, Signal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::alerts::Alert;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/alerts", get(list_alerts))
        .route(
            "/v1/admin/alert-rules",
            get(list_alert_rules).post(create_alert_rule),
        )
        .route(
            "/v1/admin/alert-rules/{name}",
            put(replace_alert_rule).delete(delete_alert_rule),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_alerts,
    list_alert_rules,
    create_alert_rule,
    replace_alert_rule,
    delete_alert_rule
))]
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
    description = "Alert episodes of the caller's account, newest first: the rule and scope (`account`, `provider:whatsapp`, `team:team_…`, `inbox:inb_…`), when each fired and resolved, the signal's value, and every notice sent for it (`sent`, `due` with the last error, `broken` when the destination refused it for good, `failed` when out of attempts). Requires `configure_routing`.",
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
pub struct AlertRuleOut {
    /// `config` (declared in `[alerts]`, or shipped) or `api` (added over REST).
    pub source: &'static str,
    pub name: String,
    pub signal: String,
    pub threshold: f64,
    pub window_secs: Option<u64>,
    pub for_secs: u64,
    pub hold_down_secs: u64,
    pub severity: String,
    pub destinations: Vec<String>,
    /// `provider`, `team` or `inbox`: one alert per scope of this kind; `null`: one for the
    /// account.
    pub per: Option<String>,
    /// The one provider, team or inbox the rule watches, if restricted.
    pub only: Option<String>,
    /// inbound_silence: the opening hours silence counts in, if the rule names them.
    pub hours: Option<crate::sla::HoursSpec>,
}

/// A destination, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertDestinationOut {
    pub name: String,
    /// `slack` or `pagerduty`.
    pub kind: String,
    /// How its latest finished notice went: `ok`, `broken` (it refused for good: fix the
    /// webhook URL or routing key), `failing` (out of attempts) or `unused` (nothing sent yet).
    pub status: &'static str,
    /// The destination's code and reason when its latest notice was not delivered.
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertRulesOut {
    pub rules: Vec<AlertRuleOut>,
    pub destinations: Vec<AlertDestinationOut>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/alert-rules",
    tag = "alerts",
    summary = "Alert rules and destinations in force",
    description = "The rules of the caller's account, from the config (`[alerts]`, including the shipped defaults) and added over REST, and its destinations, without their secrets. Requires `configure_routing`.",
    responses(
        (status = 200, description = "The rules and destinations.", body = AlertRulesOut),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_alert_rules(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<AlertRulesOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let config = &state.config;
    let mine = |account: &Option<String>| is_mine(&state, &who, account);
    let rules = config
        .alerts
        .effective_rules(&config.accounts.default)
        .into_iter()
        .filter(|r| mine(&r.account))
        .map(|r| (r, "config"))
        .chain(
            state
                .store
                .alert_rules(&who.account_id)
                .await?
                .iter()
                .filter_map(|json| serde_json::from_str::<RuleSpec>(json).ok())
                .map(|r| (r, "api")),
        )
        .map(|(r, source)| AlertRuleOut {
            source,
            per: Signal::parse(&r.signal)
                .and_then(|s| r.check_scoping(s))
                .map(|d| d.as_str().to_owned()),
            only: r.only().map(str::to_owned),
            hours: r.hours,
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
    let mut destinations = Vec::new();
    for d in config
        .alerts
        .destinations
        .iter()
        .filter(|d| mine(&d.account))
    {
        let last = state.store.last_notice(&who.account_id, &d.name).await?;
        let (status, last_error) = match last {
            None => ("unused", None),
            Some((state, _, _)) if state == "sent" => ("ok", None),
            Some((state, code, reason)) => (
                if state == "broken" {
                    "broken"
                } else {
                    "failing"
                },
                Some(format!(
                    "{}: {}",
                    code.unwrap_or_default(),
                    reason.unwrap_or_default()
                )),
            ),
        };
        destinations.push(AlertDestinationOut {
            name: d.name.clone(),
            kind: d.kind.clone(),
            status,
            last_error,
        });
    }
    Ok(Json(AlertRulesOut {
        rules,
        destinations,
    }))
}

/// Whether a config entry with `account` belongs to the caller's account.
fn is_mine(state: &AppState, who: &Principal, account: &Option<String>) -> bool {
    ids::from_slug(ids::ACCOUNT, state.config.account_of(account)) == who.account_id
}

/// The caller's account's destination names, and whether a config rule has `name`.
fn account_config<'a>(state: &'a AppState, who: &Principal, name: &str) -> (Vec<&'a str>, bool) {
    let config = &state.config;
    let mine = |account: &Option<String>| is_mine(state, who, account);
    let destinations = config
        .alerts
        .destinations
        .iter()
        .filter(|d| mine(&d.account))
        .map(|d| d.name.as_str())
        .collect();
    let in_config = config
        .alerts
        .effective_rules(&config.accounts.default)
        .iter()
        .any(|r| mine(&r.account) && r.name == name);
    (destinations, in_config)
}

/// Parses and checks a rule body; every refusal names its field. A `team` or `inbox` the rule
/// is restricted to must be one of the caller's account.
async fn checked_rule(
    state: &AppState,
    who: &Principal,
    body: &[u8],
) -> Result<(RuleSpec, bool), ApiError> {
    let spec: RuleSpec = parse_json(body)?;
    if spec.account.is_some() {
        return Err(ApiError::invalid_field(
            "account",
            "a rule over REST watches the caller's account; leave it out",
        ));
    }
    let (destinations, in_config) = account_config(state, who, &spec.name);
    spec.check(&destinations)
        .map_err(|e| ApiError::invalid_field(&e.field, e.message))?;
    if let Some(team) = &spec.team
        && state.store.get_team(&who.account_id, team).await?.is_none()
    {
        return Err(ApiError::invalid_field(
            "team",
            "is not a team of the account",
        ));
    }
    if let Some(inbox) = &spec.inbox
        && state
            .store
            .get_inbox(&who.account_id, inbox)
            .await?
            .is_none()
    {
        return Err(ApiError::invalid_field(
            "inbox",
            "is not an inbox of the account",
        ));
    }
    Ok((spec, in_config))
}

const IN_CONFIG: &str = "a rule of this name is declared in the config; choose another name";

#[utoipa::path(
    post,
    path = "/v1/admin/alert-rules",
    tag = "alerts",
    summary = "Add an alert rule",
    description = "A rule over a live signal of the caller's account, to the configured destinations (docs/ALERTS.md). Evaluated from the next round on every worker node. Audited as `alert_rule.created`. Requires `configure_routing`.",
    request_body = RuleSpec,
    responses(
        (status = 201, description = "Added.", body = RuleSpec),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 409, description = "The account has a rule of this name (in the config or added before).", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "An unknown signal, a threshold or window out of range, an unknown severity, a destination that is not configured, a scope field the signal does not have (`per`, `provider`, `team`, `inbox`, `hours`), or a team or inbox that is not the account's (details name the field).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn create_alert_rule(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<RuleSpec>), ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let (spec, in_config) = checked_rule(&state, &who, &body).await?;
    if in_config {
        return Err(ApiError::conflict_field("name", IN_CONFIG));
    }
    let record = who.audit("alert_rule.created", "alert_rule", Some(&spec.name));
    let json = serde_json::to_string(&spec).map_err(ApiError::internal)?;
    if !state
        .store
        .save_alert_rule(&who.account_id, &spec.name, &json, false, record)
        .await?
    {
        return Err(ApiError::conflict_field(
            "name",
            "the account has an alert rule of this name",
        ));
    }
    Ok((StatusCode::CREATED, Json(spec)))
}

#[utoipa::path(
    put,
    path = "/v1/admin/alert-rules/{name}",
    tag = "alerts",
    summary = "Change an alert rule",
    description = "Replaces a rule added over REST (config rules change in the config). The body's `name` must be the path's. Audited as `alert_rule.updated`. Requires `configure_routing`.",
    params(("name" = String, Path, description = "The rule's name.")),
    request_body = RuleSpec,
    responses(
        (status = 200, description = "Replaced.", body = RuleSpec),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 404, description = "No rule of this name was added over REST.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "A field out of range or unknown, a scope field the signal does not have, a team or inbox that is not the account's, or a name that differs from the path's (details name the field).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn replace_alert_rule(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<RuleSpec>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let (spec, _) = checked_rule(&state, &who, &body).await?;
    if spec.name != name {
        return Err(ApiError::invalid_field(
            "name",
            "must be the name in the path",
        ));
    }
    let record = who.audit("alert_rule.updated", "alert_rule", Some(&name));
    let json = serde_json::to_string(&spec).map_err(ApiError::internal)?;
    if !state
        .store
        .save_alert_rule(&who.account_id, &name, &json, true, record)
        .await?
    {
        return Err(ApiError::not_found("alert rule"));
    }
    Ok(Json(spec))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/alert-rules/{name}",
    tag = "alerts",
    summary = "Remove an alert rule",
    description = "Removes a rule added over REST; it is no longer evaluated (an alert it had firing stays in the history as it was). Audited as `alert_rule.deleted`. Requires `configure_routing`.",
    params(("name" = String, Path, description = "The rule's name.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 404, description = "No rule of this name was added over REST.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn delete_alert_rule(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let record = who.audit("alert_rule.deleted", "alert_rule", Some(&name));
    if !state
        .store
        .delete_alert_rule(&who.account_id, &name, record)
        .await?
    {
        return Err(ApiError::not_found("alert rule"));
    }
    Ok(StatusCode::NO_CONTENT)
}
