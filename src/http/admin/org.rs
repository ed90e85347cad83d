//! `/v1/admin/branches` and `/v1/admin/teams`, with team membership.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{admin, dedup, duplicate, name_field, nullable};
use crate::access::Principal;
use crate::error::{ApiError, ErrorEnvelope};
use crate::http::api::{id_cursor, page, page_limit};
use crate::http::{ApiQuery, AppState, RawBody, parse_json};
use crate::ids;
use crate::store::audit;
use crate::store::org::{self, Branch, Team};
use crate::store::user_admin;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/branches", post(create_branch).get(list_branches))
        .route(
            "/v1/admin/branches/{id}",
            get(get_branch).patch(update_branch),
        )
        .route("/v1/admin/teams", post(create_team).get(list_teams))
        .route("/v1/admin/teams/{id}", get(get_team).patch(update_team))
        .route("/v1/admin/teams/{id}/members", put(replace_members))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchIn {
    name: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BranchPatch {
    name: Option<String>,
    active: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BranchOut {
    id: String,
    name: String,
    active: bool,
    created_at: i64,
    updated_at: i64,
}

impl From<Branch> for BranchOut {
    fn from(b: Branch) -> Self {
        BranchOut {
            id: b.id,
            name: b.name,
            active: b.active,
            created_at: b.created_at,
            updated_at: b.updated_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BranchPage {
    data: Vec<BranchOut>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamIn {
    name: String,
    branch_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamPatch {
    name: Option<String>,
    /// `null` detaches the team from its branch.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    branch_id: Option<Option<String>>,
    active: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersIn {
    /// The team's members after the call (replaces the current list).
    user_ids: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TeamOut {
    id: String,
    name: String,
    branch_id: Option<String>,
    active: bool,
    created_at: i64,
    updated_at: i64,
    /// Present on single-team responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    member_ids: Option<Vec<String>>,
}

impl TeamOut {
    fn new(t: Team, member_ids: Option<Vec<String>>) -> Self {
        TeamOut {
            id: t.id,
            name: t.name,
            branch_id: t.branch_id,
            active: t.active,
            created_at: t.created_at,
            updated_at: t.updated_at,
            member_ids,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TeamPage {
    data: Vec<TeamOut>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PageQuery {
    /// 1–100, default 25.
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TeamQuery {
    /// 1–100, default 25.
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    branch_id: Option<String>,
}

/// A team's branch must exist in the account and be active.
async fn check_branch(
    conn: &mut sqlx::AnyConnection,
    account_id: &str,
    branch_id: &str,
) -> Result<(), ApiError> {
    match user_admin::branch_active(conn, account_id, branch_id).await? {
        Some(true) => Ok(()),
        Some(false) => Err(ApiError::invalid_field(
            "branch_id",
            "the branch is inactive",
        )),
        None => Err(ApiError::invalid_field("branch_id", "no such branch")),
    }
}

#[utoipa::path(
    post, path = "/v1/admin/branches", tag = "admin",
    request_body = BranchIn,
    responses(
        (status = 201, description = "The branch was created", body = BranchOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 409, description = "The name is already taken", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A field is invalid", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create_branch(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<BranchOut>), ApiError> {
    admin(&who)?;
    let input: BranchIn = parse_json(&body)?;
    let name = name_field("name", &input.name)?;
    let mut tx = state.store.begin().await?;
    let id = org::insert_branch(&mut tx, &who.account_id, &name)
        .await
        .map_err(duplicate("branch name"))?;
    let branch = org::lock_branch(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("created branch vanished"))?;
    let out = BranchOut::from(branch);
    audit::append(
        &mut tx,
        &who.audit("branch.created", "branch", Some(&id)).after(&out),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(
    get, path = "/v1/admin/branches", tag = "admin",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of branches, by id", body = BranchPage),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or a query parameter this list does not take", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list_branches(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    admin(&who)?;
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::BRANCH)?;
    let branches = state
        .store
        .list_branches_page(&who.account_id, cursor.as_deref(), limit + 1)
        .await?;
    let out: Vec<BranchOut> = branches.into_iter().map(BranchOut::from).collect();
    Ok(page(out, limit, |b| b.id.clone()))
}

#[utoipa::path(
    get, path = "/v1/admin/branches/{id}", tag = "admin",
    params(("id" = String, Path, description = "Branch id (br_…)")),
    responses(
        (status = 200, description = "The branch", body = BranchOut),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such branch in the account", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get_branch(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<BranchOut>, ApiError> {
    admin(&who)?;
    let branch = state
        .store
        .get_branch(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("branch"))?;
    Ok(Json(branch.into()))
}

#[utoipa::path(
    patch, path = "/v1/admin/branches/{id}", tag = "admin",
    params(("id" = String, Path, description = "Branch id (br_…)")),
    request_body = BranchPatch,
    responses(
        (status = 200, description = "The updated branch", body = BranchOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such branch in the account", body = ErrorEnvelope),
        (status = 409, description = "The name is already taken", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A field is invalid", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn update_branch(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<BranchOut>, ApiError> {
    admin(&who)?;
    let patch: BranchPatch = parse_json(&body)?;
    let name = patch
        .name
        .as_deref()
        .map(|n| name_field("name", n))
        .transpose()?;
    let mut tx = state.store.begin().await?;
    let before = org::lock_branch(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("branch"))?;
    org::update_branch(
        &mut tx,
        &who.account_id,
        &id,
        name.as_deref().unwrap_or(&before.name),
        patch.active.unwrap_or(before.active),
    )
    .await
    .map_err(duplicate("branch name"))?;
    let after = org::lock_branch(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("updated branch vanished"))?;
    let (before, after) = (BranchOut::from(before), BranchOut::from(after));
    audit::append(
        &mut tx,
        &who.audit("branch.updated", "branch", Some(&id))
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

#[utoipa::path(
    post, path = "/v1/admin/teams", tag = "admin",
    request_body = TeamIn,
    responses(
        (status = 201, description = "The team was created", body = TeamOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 409, description = "The name is already taken", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A field is invalid", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create_team(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<TeamOut>), ApiError> {
    admin(&who)?;
    let input: TeamIn = parse_json(&body)?;
    let name = name_field("name", &input.name)?;
    let mut tx = state.store.begin().await?;
    if let Some(branch_id) = &input.branch_id {
        check_branch(&mut tx, &who.account_id, branch_id).await?;
    }
    let id = org::insert_team(&mut tx, &who.account_id, &name, input.branch_id.as_deref())
        .await
        .map_err(duplicate("team name"))?;
    let team = org::lock_team(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("created team vanished"))?;
    let out = TeamOut::new(team, Some(Vec::new()));
    audit::append(
        &mut tx,
        &who.audit("team.created", "team", Some(&id)).after(&out),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(
    get, path = "/v1/admin/teams", tag = "admin",
    params(TeamQuery),
    responses(
        (status = 200, description = "One page of teams, by id", body = TeamPage),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or a query parameter this list does not take", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list_teams(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<TeamQuery>,
) -> Result<Json<Value>, ApiError> {
    admin(&who)?;
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::TEAM)?;
    let teams = state
        .store
        .list_teams_page(
            &who.account_id,
            query.branch_id.as_deref(),
            cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let out: Vec<TeamOut> = teams.into_iter().map(|t| TeamOut::new(t, None)).collect();
    Ok(page(out, limit, |t| t.id.clone()))
}

#[utoipa::path(
    get, path = "/v1/admin/teams/{id}", tag = "admin",
    params(("id" = String, Path, description = "Team id (team_…)")),
    responses(
        (status = 200, description = "The team with its member ids", body = TeamOut),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such team in the account", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get_team(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<TeamOut>, ApiError> {
    admin(&who)?;
    let team = state
        .store
        .get_team(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("team"))?;
    let members = state.store.team_members(&who.account_id, &id).await?;
    Ok(Json(TeamOut::new(team, Some(members))))
}

#[utoipa::path(
    patch, path = "/v1/admin/teams/{id}", tag = "admin",
    params(("id" = String, Path, description = "Team id (team_…)")),
    request_body = TeamPatch,
    responses(
        (status = 200, description = "The updated team", body = TeamOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such team in the account", body = ErrorEnvelope),
        (status = 409, description = "The name is already taken", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A field is invalid", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn update_team(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<TeamOut>, ApiError> {
    admin(&who)?;
    let patch: TeamPatch = parse_json(&body)?;
    let name = patch
        .name
        .as_deref()
        .map(|n| name_field("name", n))
        .transpose()?;
    let mut tx = state.store.begin().await?;
    let before = org::lock_team(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("team"))?;
    if let Some(Some(branch_id)) = &patch.branch_id
        && before.branch_id.as_deref() != Some(branch_id.as_str())
    {
        check_branch(&mut tx, &who.account_id, branch_id).await?;
    }
    let branch_id = match &patch.branch_id {
        Some(new) => new.as_deref(),
        None => before.branch_id.as_deref(),
    };
    org::update_team(
        &mut tx,
        &who.account_id,
        &id,
        name.as_deref().unwrap_or(&before.name),
        branch_id,
        patch.active.unwrap_or(before.active),
    )
    .await
    .map_err(duplicate("team name"))?;
    let members = org::team_member_ids(&mut tx, &who.account_id, &id).await?;
    let after = org::lock_team(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("updated team vanished"))?;
    let before = TeamOut::new(before, None);
    let after = TeamOut::new(after, Some(members));
    audit::append(
        &mut tx,
        &who.audit("team.updated", "team", Some(&id))
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

#[utoipa::path(
    put, path = "/v1/admin/teams/{id}/members", tag = "admin",
    params(("id" = String, Path, description = "Team id (team_…)")),
    request_body = MembersIn,
    responses(
        (status = 200, description = "The team with its new member ids", body = TeamOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such team in the account", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A user id is unknown (named in details)", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn replace_members(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<TeamOut>, ApiError> {
    admin(&who)?;
    let input: MembersIn = parse_json(&body)?;
    let user_ids = dedup(input.user_ids);
    let mut tx = state.store.begin().await?;
    let team = org::lock_team(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("team"))?;
    for (i, user_id) in user_ids.iter().enumerate() {
        if !user_admin::user_exists(&mut tx, &who.account_id, user_id).await? {
            return Err(ApiError::invalid_field(
                &format!("user_ids[{i}]"),
                "no such user",
            ));
        }
    }
    let before = org::team_member_ids(&mut tx, &who.account_id, &id).await?;
    org::replace_team_members(&mut tx, &who.account_id, &id, &user_ids).await?;
    let after = org::team_member_ids(&mut tx, &who.account_id, &id).await?;
    audit::append(
        &mut tx,
        &who.audit("team.members_replaced", "team", Some(&id))
            .before(serde_json::json!({ "member_ids": before }))
            .after(serde_json::json!({ "member_ids": after })),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(TeamOut::new(team, Some(after))))
}
