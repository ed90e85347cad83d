//! `/v1/admin/roles`: the five built-in roles (read-only, from `crate::access`) and the
//! account's custom roles.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::AnyConnection;

use super::{admin, duplicate, name_field};
use crate::access::{self, BUILTIN_ROLES, Grants, Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::http::{AppState, RawBody, parse_json};
use crate::store::audit;
use crate::store::roles::{self, Role};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/roles", get(list_roles).post(create_role))
        .route(
            "/v1/admin/roles/{id}",
            get(get_role).patch(update_role).delete(delete_role),
        )
}

/// The grants of a built-in role name or a custom role id of the account; 422 naming `field`
/// when it is neither, 403 when they reach further than the caller's own.
pub(super) async fn known_role(
    conn: &mut AnyConnection,
    who: &Principal,
    role: &str,
    field: &str,
) -> Result<Grants, ApiError> {
    let grants = match access::builtin(role) {
        Some(grants) => grants,
        None => roles::fetch_role(conn, &who.account_id, role)
            .await?
            .map(|r| r.grants)
            .ok_or_else(|| {
                ApiError::invalid_field(
                    field,
                    format!(
                        "must be a built-in role ({}) or a custom role id of the account",
                        BUILTIN_ROLES.join(", ")
                    ),
                )
            })?,
    };
    who.may_confer(&grants)?;
    Ok(grants)
}

/// The grants a role name or id stands for now (none when a custom role is gone).
pub(super) async fn grants_of(
    conn: &mut AnyConnection,
    account_id: &str,
    role: &str,
) -> Result<Grants, ApiError> {
    Ok(match access::builtin(role) {
        Some(grants) => grants,
        None => roles::fetch_role(conn, account_id, role)
            .await?
            .map(|r| r.grants)
            .unwrap_or_default(),
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleIn {
    name: String,
    description: Option<String>,
    /// Permission → scope, e.g. `{"view_conversations":"team","view_audit_log":"all"}`.
    #[schema(value_type = Object)]
    grants: Value,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    name: Option<String>,
    description: Option<String>,
    /// Replaces the role's grants.
    #[schema(value_type = Option<Object>)]
    grants: Option<Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleOut {
    /// The name for built-in roles, `rol_…` for custom ones.
    id: String,
    name: String,
    description: String,
    builtin: bool,
    #[schema(value_type = Object)]
    grants: Grants,
    created_at: Option<i64>,
    updated_at: Option<i64>,
}

impl From<Role> for RoleOut {
    fn from(r: Role) -> Self {
        RoleOut {
            id: r.id,
            name: r.name,
            description: r.description,
            builtin: false,
            grants: r.grants,
            created_at: Some(r.created_at),
            updated_at: Some(r.updated_at),
        }
    }
}

fn builtin_out(name: &str) -> Option<RoleOut> {
    access::builtin(name).map(|grants| RoleOut {
        id: name.to_owned(),
        name: name.to_owned(),
        description: "built-in role".to_owned(),
        builtin: true,
        grants,
        created_at: None,
        updated_at: None,
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RolePage {
    data: Vec<RoleOut>,
    /// Always null: every role is on the one page.
    next_cursor: Option<String>,
}

/// A custom role's name: 1–100 characters, not a built-in's name in any case.
fn role_name(value: &str) -> Result<String, ApiError> {
    let name = name_field("name", value)?;
    if BUILTIN_ROLES.iter().any(|b| b.eq_ignore_ascii_case(&name)) {
        return Err(ApiError::conflict(format!(
            "`{name}` is the name of a built-in role"
        )));
    }
    Ok(name)
}

fn description_field(value: Option<&str>) -> Result<Option<String>, ApiError> {
    match value.map(str::trim) {
        Some(d) if d.chars().count() > 500 => Err(ApiError::invalid_field(
            "description",
            "must be at most 500 characters",
        )),
        other => Ok(other.map(str::to_owned)),
    }
}

fn read_only(id: &str) -> ApiError {
    ApiError::conflict(format!("`{id}` is a built-in role and cannot be changed"))
}

#[utoipa::path(
    get, path = "/v1/admin/roles", tag = "admin",
    responses(
        (status = 200, description = "The built-in roles, then the account's custom roles", body = RolePage),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list_roles(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<RolePage>, ApiError> {
    admin(&who)?;
    let mut data: Vec<RoleOut> = BUILTIN_ROLES
        .iter()
        .filter_map(|r| builtin_out(r))
        .collect();
    data.extend(
        state
            .store
            .list_roles(&who.account_id)
            .await?
            .into_iter()
            .map(RoleOut::from),
    );
    Ok(Json(RolePage {
        data,
        next_cursor: None,
    }))
}

#[utoipa::path(
    get, path = "/v1/admin/roles/{id}", tag = "admin",
    params(("id" = String, Path, description = "A built-in role name or a custom role id (rol_…)")),
    responses(
        (status = 200, description = "The role", body = RoleOut),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such role in the account", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get_role(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<RoleOut>, ApiError> {
    admin(&who)?;
    if let Some(out) = builtin_out(&id) {
        return Ok(Json(out));
    }
    let role = state
        .store
        .get_role(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))?;
    Ok(Json(role.into()))
}

#[utoipa::path(
    post, path = "/v1/admin/roles", tag = "admin",
    request_body = RoleIn,
    responses(
        (status = 201, description = "The custom role was created", body = RoleOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 409, description = "The name is taken (by a custom or a built-in role)", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A field is invalid; grant errors name `grants.<permission>`", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create_role(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<RoleOut>), ApiError> {
    admin(&who)?;
    let input: RoleIn = parse_json(&body)?;
    let name = role_name(&input.name)?;
    let description = description_field(input.description.as_deref())?.unwrap_or_default();
    let grants = Grants::parse(&input.grants)?;
    who.may_confer(&grants)?;
    let mut tx = state.store.begin().await?;
    let id = roles::insert_role(&mut tx, &who.account_id, &name, &description, &grants)
        .await
        .map_err(duplicate("role name"))?;
    let role = roles::fetch_role(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("created role vanished"))?;
    let out = RoleOut::from(role);
    audit::append(
        &mut tx,
        &who.audit("role.created", "role", Some(&id)).after(&out),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(
    patch, path = "/v1/admin/roles/{id}", tag = "admin",
    params(("id" = String, Path, description = "Custom role id (rol_…)")),
    request_body = RolePatch,
    responses(
        (status = 200, description = "The updated role; its holders get the new grants on their next request", body = RoleOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such role in the account", body = ErrorEnvelope),
        (status = 409, description = "A built-in role, or the name is taken", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A field is invalid, or the change would drop the caller's own manage_users", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn update_role(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<RoleOut>, ApiError> {
    admin(&who)?;
    if access::builtin(&id).is_some() {
        return Err(read_only(&id));
    }
    let patch: RolePatch = parse_json(&body)?;
    let name = patch.name.as_deref().map(role_name).transpose()?;
    let description = description_field(patch.description.as_deref())?;
    let grants = patch.grants.as_ref().map(Grants::parse).transpose()?;
    if let Some(grants) = &grants {
        who.may_confer(grants)?;
    }
    if let Some(grants) = &grants
        && who.role == id
        && grants.scope(Permission::ManageUsers).is_none()
    {
        return Err(ApiError::invalid_field(
            "grants",
            "you hold this role: it cannot drop manage_users",
        ));
    }
    let mut tx = state.store.begin().await?;
    let before = roles::lock_role(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))?;
    roles::update_role(
        &mut tx,
        &who.account_id,
        &id,
        name.as_deref().unwrap_or(&before.name),
        description.as_deref().unwrap_or(&before.description),
        grants.as_ref().unwrap_or(&before.grants),
    )
    .await
    .map_err(duplicate("role name"))?;
    let after = roles::fetch_role(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("updated role vanished"))?;
    let (before, after) = (RoleOut::from(before), RoleOut::from(after));
    audit::append(
        &mut tx,
        &who.audit("role.updated", "role", Some(&id))
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

#[utoipa::path(
    delete, path = "/v1/admin/roles/{id}", tag = "admin",
    params(("id" = String, Path, description = "Custom role id (rol_…)")),
    responses(
        (status = 204, description = "The role was deleted"),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such role in the account", body = ErrorEnvelope),
        (status = 409, description = "A built-in role, or users or live API keys still hold it", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn delete_role(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&who)?;
    if access::builtin(&id).is_some() {
        return Err(read_only(&id));
    }
    let mut tx = state.store.begin().await?;
    let before = roles::lock_role(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))?;
    let (users, keys) = roles::role_holders(&mut tx, &who.account_id, &id).await?;
    if users > 0 || keys > 0 {
        return Err(ApiError::conflict(format!(
            "the role is still held by {users} user(s) and {keys} API key(s); reassign them first"
        )));
    }
    roles::delete_role(&mut tx, &who.account_id, &id).await?;
    audit::append(
        &mut tx,
        &who.audit("role.deleted", "role", Some(&id))
            .before(RoleOut::from(before)),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
