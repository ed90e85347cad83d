//! Routing rules over admin REST (docs/ROUTING-DESIGN.md, "Rules and steps"), all
//! `configure_routing`:
//!
//! - `/v1/admin/routing-rules`: create, list (by position), read, patch, delete, and
//!   `PUT …/order` to reorder. Every expression is compiled with `switchboard_routing` against
//!   [`rule_schema`] *before* anything is written: a rule that does not parse or type-check is
//!   refused 422 with one detail per problem (`field`, `message`, `line`, `column`, `offset`)
//!   and nothing changes. Every change is audited in the same transaction.
//! - `POST …/validate`: the same checks, saving nothing.
//! - `POST …/simulate`: which rule a described conversation would take and, per step, which
//!   agents are eligible now. A dry run: nothing is assigned.
//!
//! In target expressions, `team` and `agent.teams` hold team **names** (`team == "payments"`),
//! and `agent.branch` the branch **name**: that is what an administrator writes in a rule.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json_, json};
use switchboard_routing::expr::{
    CHANNELS, ConvView, Diagnostic, MatchExpr, RuleError, Schema, TargetExpr, Type, Value,
};
use utoipa::ToSchema;

use super::{AppState, RawBody, parse_json};
use crate::access::{Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::audit;
use crate::store::routing_rules::{self as rows, RoutingRule, Step};
use switchboard_routing::engine::{Waiting, channel_index};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/routing-rules", get(list_rules).post(create_rule))
        .route("/v1/admin/routing-rules/order", put(reorder_rules))
        .route("/v1/admin/routing-rules/validate", post(validate_rule))
        .route("/v1/admin/routing-rules/simulate", post(simulate))
        .route(
            "/v1/admin/routing-rules/{id}",
            get(get_rule).patch(patch_rule).delete(delete_rule),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        create_rule,
        list_rules,
        get_rule,
        patch_rule,
        delete_rule,
        reorder_rules,
        validate_rule,
        simulate
    ),
    components(schemas(
        RuleIn,
        StepIn,
        RuleOut,
        StepOut,
        RulePage,
        OrderIn,
        ValidateIn,
        ValidateOut,
        RuleProblem,
        SimulateIn,
        ConversationIn,
        SimulateOut,
        RuleRef,
        SimStep,
        EligibleAgent
    ))
)]
pub struct RoutingRulesApi;

const MAX_NAME: usize = 200;
const MAX_EXPR: usize = 4_000;
const MAX_STEPS: usize = 20;
const MAX_PRIORITY: i64 = 100;
const MAX_TIMEOUT: i64 = 7 * 24 * 3600;
const MAX_OFFER_TIMEOUT: i64 = 3600;
const DEFAULT_OFFER_TIMEOUT: i64 = 30;
const MODES: [&str; 2] = ["auto", "offer"];

/// The schema every rule is checked against: the conversation and agent fields are the
/// language's own; the contact attributes are declared here (one place, for now fixed).
pub fn rule_schema() -> Schema {
    Schema::default()
        .contact("vip", Type::Bool)
        .contact("tier", Type::String)
}

/// [`rule_schema`] with the account's skill catalogue and team names, so a rule naming a
/// skill or team the account does not have is refused with its position.
async fn account_schema(
    conn: &mut sqlx::AnyConnection,
    account_id: &str,
) -> Result<Schema, ApiError> {
    let skills = crate::store::agents::known_skills(&mut *conn, account_id).await?;
    let teams: Vec<String> = sqlx::query_scalar("SELECT name FROM teams WHERE account_id = $1")
        .bind(account_id)
        .fetch_all(&mut *conn)
        .await
        .map_err(crate::store::StoreError::from)?;
    Ok(rule_schema().catalogues(skills.into_iter().collect(), teams.into_iter().collect()))
}

/// One step as sent.
#[derive(Deserialize, Serialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct StepIn {
    /// A target expression over `agent.*` and `conv.*`.
    #[schema(required = true, value_type = String, example = "skill(\"billing\") >= 3 and team == \"payments\"")]
    pub target: Option<String>,
    /// 0–100.
    #[schema(required = true, value_type = i64, example = 50)]
    pub priority: Option<i64>,
    /// Seconds before the next step (≥ 0); only the last step may be null: no timeout.
    #[schema(example = 120)]
    pub timeout_secs: Option<i64>,
}

/// A rule as sent: every field for `POST`, any of them for `PATCH`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleIn {
    #[schema(required = true, value_type = String, example = "WhatsApp billing")]
    pub name: Option<String>,
    /// A match expression over `conv.*`.
    #[serde(rename = "match")]
    #[schema(required = true, value_type = String, example = "conv.channel == \"whatsapp\"")]
    pub match_expr: Option<String>,
    /// At least one step, tried in order.
    #[schema(required = true, value_type = Vec<StepIn>)]
    pub steps: Option<Vec<StepIn>>,
    /// `auto` (default) or `offer`.
    #[schema(value_type = String, example = "auto")]
    pub mode: Option<String>,
    /// 1–3600, default 30: how long an offer waits for the agent.
    #[schema(value_type = i64, example = 30)]
    pub offer_timeout_secs: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct StepOut {
    pub target: String,
    pub priority: i64,
    pub timeout_secs: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RuleOut {
    pub id: String,
    /// 1-based rank; the first matching rule wins.
    pub position: i64,
    pub name: String,
    #[serde(rename = "match")]
    #[schema(rename = "match")]
    pub match_expr: String,
    pub steps: Vec<StepOut>,
    pub mode: String,
    pub offer_timeout_secs: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct RulePage {
    /// Every rule of the account, by position.
    pub data: Vec<RuleOut>,
    /// Always null: the list is not paged.
    pub next_cursor: Option<String>,
}

/// The new order: exactly the account's rule ids, each once.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderIn {
    #[schema(required = true, value_type = Vec<String>)]
    pub ids: Option<Vec<String>>,
}

/// Expressions to check without saving.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateIn {
    #[serde(rename = "match")]
    #[schema(value_type = String)]
    pub match_expr: Option<String>,
    pub steps: Option<Vec<StepIn>>,
}

/// One problem with a rule. Expression problems carry their position in the expression.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct RuleProblem {
    /// `match`, `steps`, `steps[1].target`, `steps[0].priority`, …
    pub field: String,
    pub message: String,
    /// 1-based line in the expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// 0-based byte offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct ValidateOut {
    pub valid: bool,
    pub errors: Vec<RuleProblem>,
}

/// A conversation as a rule sees it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationIn {
    /// `whatsapp`, `sms` or `webchat`.
    #[schema(required = true, value_type = String, example = "whatsapp")]
    pub channel: Option<String>,
    /// The inbox slug.
    #[schema(required = true, value_type = String, example = "support")]
    pub inbox: Option<String>,
    pub language: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub priority: i64,
    pub first_message: Option<String>,
    /// Contact attributes (`vip`: Bool, `tier`: String); anything else reads as null.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"vip": true, "tier": "gold"}))]
    pub contact: BTreeMap<String, Json_>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateIn {
    #[schema(required = true, value_type = ConversationIn)]
    pub conversation: Option<ConversationIn>,
}

#[derive(Serialize, ToSchema)]
pub struct RuleRef {
    pub id: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct EligibleAgent {
    pub user_id: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct SimStep {
    pub index: usize,
    pub target: String,
    pub priority: i64,
    pub timeout_secs: Option<i64>,
    /// Agents whose profile satisfies the target, who are online (fresh heartbeat) and have
    /// capacity left on the conversation's channel; by user id.
    pub eligible: Vec<EligibleAgent>,
    pub eligible_count: usize,
}

#[derive(Serialize, ToSchema)]
pub struct SimulateOut {
    /// The first rule by position whose match holds; null: the default rule (the inbox's team).
    pub rule: Option<RuleRef>,
    pub steps: Vec<SimStep>,
    /// The engine's decision for this conversation arriving now (no history, nobody
    /// excluded), with its trace: rule and step, candidate counts after each filter, the top
    /// candidates with their score parts, which part decided, and the agent chosen.
    #[schema(value_type = Object)]
    pub decision: Json_,
}

fn rule_out(r: RoutingRule) -> RuleOut {
    RuleOut {
        id: r.id,
        position: r.position,
        name: r.name,
        match_expr: r.match_expr,
        steps: r
            .steps
            .into_iter()
            .map(|s| StepOut {
                target: s.target,
                priority: s.priority,
                timeout_secs: s.timeout_secs,
            })
            .collect(),
        mode: r.mode,
        offer_timeout_secs: r.offer_timeout_secs,
        created_at_ms: r.created_at,
        updated_at_ms: r.updated_at,
    }
}

fn problem(field: &str, message: impl Into<String>) -> RuleProblem {
    RuleProblem {
        field: field.to_owned(),
        message: message.into(),
        line: None,
        column: None,
        offset: None,
    }
}

fn diagnostic(field: &str, d: Diagnostic) -> RuleProblem {
    RuleProblem {
        field: field.to_owned(),
        message: d.message,
        line: Some(d.line),
        column: Some(d.column),
        offset: Some(d.span.start),
    }
}

fn push_rule_error(out: &mut Vec<RuleProblem>, field: &str, result: Result<(), RuleError>) {
    if let Err(RuleError(diags)) = result {
        out.extend(diags.into_iter().map(|d| diagnostic(field, d)));
    }
}

/// Checks a match expression's text and compiles it; problems are appended to `out`.
fn check_match(src: &str, schema: &Schema, out: &mut Vec<RuleProblem>) {
    if src.len() > MAX_EXPR {
        out.push(problem("match", format!("at most {MAX_EXPR} bytes")));
        return;
    }
    push_rule_error(out, "match", MatchExpr::compile(src, schema).map(drop));
}

/// Checks the step list (shape, ranges, and every target compiled); returns it as stored when
/// there was no problem.
fn check_steps(steps: &[StepIn], schema: &Schema, out: &mut Vec<RuleProblem>) -> Vec<Step> {
    if steps.is_empty() {
        out.push(problem("steps", "at least one step is required"));
        return Vec::new();
    }
    if steps.len() > MAX_STEPS {
        out.push(problem("steps", format!("at most {MAX_STEPS} steps")));
        return Vec::new();
    }
    let mut valid = Vec::new();
    let last = steps.len() - 1;
    for (i, step) in steps.iter().enumerate() {
        let field = |name: &str| format!("steps[{i}].{name}");
        let before = out.len();
        match &step.target {
            None => out.push(problem(&field("target"), "is required")),
            Some(src) if src.len() > MAX_EXPR => {
                out.push(problem(
                    &field("target"),
                    format!("at most {MAX_EXPR} bytes"),
                ));
            }
            Some(src) => push_rule_error(
                out,
                &field("target"),
                TargetExpr::compile(src, schema).map(drop),
            ),
        }
        match step.priority {
            None => out.push(problem(&field("priority"), "is required")),
            Some(p) if !(0..=MAX_PRIORITY).contains(&p) => out.push(problem(
                &field("priority"),
                format!("must be an integer from 0 to {MAX_PRIORITY}"),
            )),
            Some(_) => {}
        }
        match step.timeout_secs {
            None if i != last => out.push(problem(
                &field("timeout_secs"),
                "is required on every step but the last (null there: no timeout)",
            )),
            Some(t) if !(0..=MAX_TIMEOUT).contains(&t) => out.push(problem(
                &field("timeout_secs"),
                format!("must be an integer from 0 to {MAX_TIMEOUT}"),
            )),
            _ => {}
        }
        if out.len() == before {
            valid.push(Step {
                target: step.target.clone().unwrap_or_default(),
                priority: step.priority.unwrap_or(0),
                timeout_secs: step.timeout_secs,
            });
        }
    }
    valid
}

fn refuse(problems: Vec<RuleProblem>) -> ApiError {
    let message = problems
        .iter()
        .map(|p| match (p.line, p.column) {
            (Some(l), Some(c)) => format!("{} {l}:{c}: {}", p.field, p.message),
            _ => format!("{}: {}", p.field, p.message),
        })
        .collect::<Vec<_>>()
        .join("; ");
    ApiError::Unprocessable {
        message,
        details: problems
            .iter()
            .map(|p| serde_json::to_value(p).unwrap_or(Json_::Null))
            .collect(),
    }
}

/// Applies `input` onto `rule` (every field for a new rule), checking everything and compiling
/// every expression; nothing is written by this function.
fn apply(
    rule: &mut RoutingRule,
    input: RuleIn,
    creating: bool,
    schema: &Schema,
) -> Result<(), ApiError> {
    let mut problems = Vec::new();
    if creating {
        for (absent, name) in [
            (input.name.is_none(), "name"),
            (input.match_expr.is_none(), "match"),
            (input.steps.is_none(), "steps"),
        ] {
            if absent {
                problems.push(problem(name, "is required"));
            }
        }
    }
    if let Some(name) = input.name {
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            problems.push(problem(
                "name",
                format!("must be 1 to {MAX_NAME} characters"),
            ));
        }
        rule.name = name;
    }
    if let Some(src) = input.match_expr {
        check_match(&src, schema, &mut problems);
        rule.match_expr = src;
    }
    if let Some(steps) = input.steps {
        rule.steps = check_steps(&steps, schema, &mut problems);
    }
    if let Some(mode) = input.mode {
        if !MODES.contains(&mode.as_str()) {
            problems.push(problem("mode", "must be `auto` or `offer`"));
        }
        rule.mode = mode;
    }
    if let Some(t) = input.offer_timeout_secs {
        if !(1..=MAX_OFFER_TIMEOUT).contains(&t) {
            problems.push(problem(
                "offer_timeout_secs",
                format!("must be an integer from 1 to {MAX_OFFER_TIMEOUT}"),
            ));
        }
        rule.offer_timeout_secs = t;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(refuse(problems))
    }
}

const E401: &str = "Missing, invalid or expired credentials";
const E403: &str = "The role lacks configure_routing";

#[utoipa::path(
    post,
    path = "/v1/admin/routing-rules",
    tag = "routing-rules",
    request_body = RuleIn,
    responses(
        (status = 201, description = "Created, last in the order", body = RuleOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = E403, body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "Invalid rule; one detail per problem: `{field, message}` plus `line`, `column`, `offset` for an expression that does not parse or type-check (`match`, `steps[1].target`). Nothing is saved", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn create_rule(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<RuleOut>), ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: RuleIn = parse_json(&body)?;
    let now = ids::now_ms();
    let mut rule = RoutingRule {
        id: ids::new(ids::ROUTING_RULE),
        position: 0,
        name: String::new(),
        match_expr: String::new(),
        steps: Vec::new(),
        mode: "auto".to_owned(),
        offer_timeout_secs: DEFAULT_OFFER_TIMEOUT,
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.store.begin_scoped(&who.account_id).await?;
    let schema = account_schema(&mut tx, &who.account_id).await?;
    apply(&mut rule, input, true, &schema)?;
    rule.position = rows::insert(&mut tx, &who.account_id, &rule).await?;
    let record = who
        .audit("routing_rule.created", "routing_rule", Some(&rule.id))
        .after(&rule);
    audit::append(&mut tx, &record).await?;
    tx.commit().await?;
    crate::dispatch::wake(&state.broker, &who.account_id).await;
    Ok((StatusCode::CREATED, Json(rule_out(rule))))
}

#[utoipa::path(
    get,
    path = "/v1/admin/routing-rules",
    tag = "routing-rules",
    responses(
        (status = 200, description = "Every rule of the account, by position (not paged)", body = RulePage),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = E403, body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn list_rules(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<RulePage>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let rules = state.store.list_routing_rules(&who.account_id).await?;
    Ok(Json(RulePage {
        data: rules.into_iter().map(rule_out).collect(),
        next_cursor: None,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/admin/routing-rules/{id}",
    tag = "routing-rules",
    params(("id" = String, Path, description = "rr_…")),
    responses(
        (status = 200, description = "The rule", body = RuleOut),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = E403, body = ErrorEnvelope),
        (status = 404, description = "No such rule in the account", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn get_rule(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<RuleOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let rule = state
        .store
        .get_routing_rule(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("routing rule"))?;
    Ok(Json(rule_out(rule)))
}

#[utoipa::path(
    patch,
    path = "/v1/admin/routing-rules/{id}",
    tag = "routing-rules",
    params(("id" = String, Path, description = "rr_…")),
    request_body = RuleIn,
    responses(
        (status = 200, description = "The rule after the change (steps are replaced wholesale)", body = RuleOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = E403, body = ErrorEnvelope),
        (status = 404, description = "No such rule in the account", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "Invalid rule, as for `POST`; nothing changes", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn patch_rule(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<RuleOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: RuleIn = parse_json(&body)?;
    let mut tx = state.store.begin_scoped(&who.account_id).await?;
    rows::lock_all(&mut tx, &who.account_id).await?;
    let before = rows::get(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("routing rule"))?;
    let mut after = before.clone();
    let schema = account_schema(&mut tx, &who.account_id).await?;
    apply(&mut after, input, false, &schema)?;
    after.updated_at = before.updated_at;
    if after == before {
        tx.rollback().await?;
        return Ok(Json(rule_out(before)));
    }
    after.updated_at = ids::now_ms();
    rows::update(&mut tx, &who.account_id, &after).await?;
    let record = who
        .audit("routing_rule.updated", "routing_rule", Some(&id))
        .before(&before)
        .after(&after);
    audit::append(&mut tx, &record).await?;
    tx.commit().await?;
    crate::dispatch::wake(&state.broker, &who.account_id).await;
    Ok(Json(rule_out(after)))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/routing-rules/{id}",
    tag = "routing-rules",
    params(("id" = String, Path, description = "rr_…")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = E403, body = ErrorEnvelope),
        (status = 404, description = "No such rule in the account", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn delete_rule(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let mut tx = state.store.begin_scoped(&who.account_id).await?;
    rows::lock_all(&mut tx, &who.account_id).await?;
    let before = rows::get(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("routing rule"))?;
    rows::delete(&mut tx, &who.account_id, &id).await?;
    let record = who
        .audit("routing_rule.deleted", "routing_rule", Some(&id))
        .before(&before);
    audit::append(&mut tx, &record).await?;
    tx.commit().await?;
    crate::dispatch::wake(&state.broker, &who.account_id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    put,
    path = "/v1/admin/routing-rules/order",
    tag = "routing-rules",
    request_body = OrderIn,
    responses(
        (status = 200, description = "Every rule in the new order", body = RulePage),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = E403, body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "`ids` is not exactly the account's rule ids, each once", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn reorder_rules(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<Json<RulePage>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: OrderIn = parse_json(&body)?;
    let order = input
        .ids
        .ok_or_else(|| ApiError::invalid_field("ids", "is required"))?;
    let mut tx = state.store.begin_scoped(&who.account_id).await?;
    rows::lock_all(&mut tx, &who.account_id).await?;
    let current = rows::list(&mut tx, &who.account_id).await?;
    let before: Vec<&str> = current.iter().map(|r| r.id.as_str()).collect();
    let given: BTreeSet<&str> = order.iter().map(String::as_str).collect();
    let known: BTreeSet<&str> = before.iter().copied().collect();
    if given.len() != order.len() || given != known {
        return Err(ApiError::invalid_field(
            "ids",
            "must list every routing rule id of the account exactly once",
        ));
    }
    let changed = before.iter().zip(&order).any(|(a, b)| *a != b.as_str());
    if changed {
        rows::set_order(&mut tx, &who.account_id, &order, ids::now_ms()).await?;
        let record = who
            .audit("routing_rule.reordered", "routing_rule", None)
            .before(json!({ "ids": before }))
            .after(json!({ "ids": order }));
        audit::append(&mut tx, &record).await?;
    }
    let rules = rows::list(&mut tx, &who.account_id).await?;
    tx.commit().await?;
    crate::dispatch::wake(&state.broker, &who.account_id).await;
    Ok(Json(RulePage {
        data: rules.into_iter().map(rule_out).collect(),
        next_cursor: None,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/routing-rules/validate",
    tag = "routing-rules",
    request_body = ValidateIn,
    responses(
        (status = 200, description = "Whether the expressions compile, with every problem (same shape as the 422 details); nothing is saved", body = ValidateOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = E403, body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A field of the wrong JSON type", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn validate_rule(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<Json<ValidateOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: ValidateIn = parse_json(&body)?;
    let mut tx = state.store.scoped(&who.account_id).await?;
    let schema = account_schema(&mut tx, &who.account_id).await?;
    tx.commit().await?;
    let mut errors = Vec::new();
    if let Some(src) = &input.match_expr {
        check_match(src, &schema, &mut errors);
    }
    if let Some(steps) = &input.steps {
        check_steps(steps, &schema, &mut errors);
    }
    Ok(Json(ValidateOut {
        valid: errors.is_empty(),
        errors,
    }))
}

/// A contact attribute as the rule language sees it; null and objects are absent (null).
pub fn attribute(v: &Json_) -> Option<Value> {
    match v {
        Json_::Bool(b) => Some(Value::Bool(*b)),
        Json_::Number(n) => n.as_f64().map(Value::Number),
        Json_::String(s) => Some(Value::String(s.clone())),
        Json_::Array(items) => Some(Value::List(items.iter().filter_map(attribute).collect())),
        Json_::Null | Json_::Object(_) => None,
    }
}

fn conv_view(input: ConversationIn) -> Result<ConvView, ApiError> {
    let channel = input
        .channel
        .ok_or_else(|| ApiError::invalid_field("conversation.channel", "is required"))?;
    if !CHANNELS.contains(&channel.as_str()) {
        return Err(ApiError::invalid_field(
            "conversation.channel",
            format!("must be one of {}", CHANNELS.join(", ")),
        ));
    }
    let inbox = input
        .inbox
        .ok_or_else(|| ApiError::invalid_field("conversation.inbox", "is required"))?;
    Ok(ConvView {
        channel,
        inbox,
        language: input.language,
        labels: input.labels,
        priority: input.priority,
        first_message: input.first_message,
        contact: input
            .contact
            .iter()
            .filter_map(|(k, v)| attribute(v).map(|v| (k.clone(), v)))
            .collect(),
    })
}

#[utoipa::path(
    post,
    path = "/v1/admin/routing-rules/simulate",
    tag = "routing-rules",
    request_body = SimulateIn,
    responses(
        (status = 200, description = "The rule the conversation would take (null: the default rule) and, per step, the agents eligible now: the target holds (teams and branch by name), online with a fresh heartbeat, and capacity left on the channel. A dry run: nothing is assigned", body = SimulateOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = E401, body = ErrorEnvelope),
        (status = 403, description = E403, body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "Invalid field (details name it, e.g. `conversation.channel`)", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn simulate(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<Json<SimulateOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: SimulateIn = parse_json(&body)?;
    let conv = conv_view(
        input
            .conversation
            .ok_or_else(|| ApiError::invalid_field("conversation", "is required"))?,
    )?;
    let account = &who.account_id;
    // The engine's own picture: the same agents, availability and compiled rules the
    // dispatcher decides from.
    let now = ids::now_ms();
    let fresh_after = now - state.config.routing.presence_timeout_ms();
    let picture =
        crate::dispatch::load_picture(&state.store, &state.config, account, fresh_after).await?;
    let inbox_team = match state
        .store
        .list_inboxes(account, None, 1000)
        .await?
        .into_iter()
        .find(|i| i.slug == conv.inbox)
        .and_then(|i| i.team_id)
    {
        Some(team) => state
            .store
            .list_teams(account)
            .await?
            .into_iter()
            .find(|t| t.id == team)
            .map(|t| t.name),
        None => None,
    };
    let waiting = Waiting {
        id: "simulated".to_owned(),
        conv,
        inbox_team,
        queued_at: now,
        reply_deadline: None,
        last_agent: None,
        excluded: Vec::new(),
    };
    let plan = picture.plan(&waiting, now);
    let rule_index = plan.rule;
    let decision = serde_json::to_value(picture.decide_planned(&waiting, plan, now).trace)
        .map_err(ApiError::internal)?;
    let Some(index) = rule_index else {
        return Ok(Json(SimulateOut {
            rule: None,
            steps: Vec::new(),
            decision,
        }));
    };
    let rule = picture.rule(Some(index));
    // The steps as the admin wrote them; the picture holds them compiled.
    let stored = state
        .store
        .get_routing_rule(account, &rule.id)
        .await?
        .ok_or_else(|| ApiError::not_found("routing rule"))?;
    let names = state.store.user_names(account).await?;
    let channel = channel_index(&waiting.conv.channel);
    let steps = stored
        .steps
        .iter()
        .zip(&rule.steps)
        .enumerate()
        .map(|(index, (text, compiled))| {
            let bound = compiled.target.bind(&waiting.conv);
            // Available now: online with a fresh heartbeat and a free slot on the channel.
            let eligible: Vec<EligibleAgent> = picture
                .agents()
                .iter()
                .filter(|a| {
                    a.online
                        && channel.is_some_and(|ch| a.active[ch] < a.capacity[ch])
                        && bound.matches(&a.view)
                })
                .map(|a| EligibleAgent {
                    user_id: a.view.id.clone(),
                    name: names.get(&a.view.id).cloned().unwrap_or_default(),
                })
                .collect();
            SimStep {
                index,
                target: text.target.clone(),
                priority: text.priority,
                timeout_secs: text.timeout_secs,
                eligible_count: eligible.len(),
                eligible,
            }
        })
        .collect();
    Ok(Json(SimulateOut {
        rule: Some(RuleRef {
            id: stored.id,
            name: stored.name,
        }),
        steps,
        decision,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(target: &str, timeout: Option<i64>) -> StepIn {
        StepIn {
            target: Some(target.to_owned()),
            priority: Some(10),
            timeout_secs: timeout,
        }
    }

    #[test]
    fn expression_problems_name_field_line_and_column() {
        let schema = rule_schema();
        let mut out = Vec::new();
        check_match(
            "conv.channel == \"whatsapp\" and contact.vip",
            &schema,
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        let steps = [
            step("skill(\"billing\") >= 3", Some(60)),
            step("skill(\"billing\") >= \"3\"", None),
        ];
        check_steps(&steps, &schema, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].field, "steps[1].target");
        assert_eq!((out[0].line, out[0].column), (Some(1), Some(1)));

        let mut out = Vec::new();
        check_match("channel ==", &schema, &mut out);
        assert_eq!(out[0].field, "match");
        assert_eq!(out[0].line, Some(1));
        assert!(out[0].column.is_some_and(|c| c > 1), "{out:?}");
    }

    #[test]
    fn only_the_last_step_may_run_forever() {
        let schema = rule_schema();
        let mut out = Vec::new();
        check_steps(&[step("true", None), step("true", None)], &schema, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].field, "steps[0].timeout_secs");
        let mut out = Vec::new();
        check_steps(&[], &schema, &mut out);
        assert_eq!(out[0].field, "steps");
    }
}
