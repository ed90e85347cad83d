//! `/v1/admin/users`: create, list, read, edit (including deactivation) and password reset.
//! There is no hard delete: a user's id stays meaningful in conversations and the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::AnyConnection;

use super::{admin, dedup, duplicate, name_field, nullable};
use crate::access::{Permission, Principal};
use crate::auth::passwords;
use crate::error::{ApiError, ErrorEnvelope};
use crate::http::api::{id_cursor, page, page_limit};
use crate::http::{ApiQuery, AppState, RawBody, parse_json};
use crate::ids;
use crate::store::user_admin::{self, UserChange, UserFilter};
use crate::store::users::{NewUser, User};
use crate::store::{Store, org};
use crate::store::{sessions, signin};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", post(create_user).get(list_users))
        .route("/v1/admin/users/{id}", get(get_user).patch(update_user))
        .route("/v1/admin/users/{id}/password", post(reset_password))
        .route(
            "/v1/admin/users/{id}/second-factor",
            delete(reset_second_factor),
        )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    email: String,
    name: String,
    /// Must meet the password policy (length, three character classes, not the email, not
    /// a common password).
    password: String,
    /// A built-in role name or a custom role id (`rol_…`) of the account.
    role: String,
    branch_id: Option<String>,
    #[serde(default)]
    team_ids: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    name: Option<String>,
    role: Option<String>,
    /// `null` removes the user from their branch.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    branch_id: Option<Option<String>>,
    /// Replaces the user's teams.
    team_ids: Option<Vec<String>>,
    /// `false` deactivates the user and ends all their sessions at once.
    active: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordIn {
    password: String,
}

/// A user as administrators see it (never the password hash or TOTP secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserOut {
    id: String,
    email: String,
    name: String,
    role: String,
    branch_id: Option<String>,
    team_ids: Vec<String>,
    active: bool,
    totp_enabled: bool,
    locked_until: Option<i64>,
    last_login_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl From<User> for UserOut {
    fn from(u: User) -> Self {
        UserOut {
            id: u.id,
            email: u.email,
            name: u.name,
            role: u.role,
            branch_id: u.branch_id,
            team_ids: u.team_ids,
            active: u.active,
            totp_enabled: u.totp_enabled,
            locked_until: u.locked_until,
            last_login_at: u.last_login_at,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserPage {
    data: Vec<UserOut>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct UserQuery {
    /// 1–100, default 25.
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    role: Option<String>,
    team_id: Option<String>,
    branch_id: Option<String>,
    active: Option<bool>,
}

/// A plausible address: one `@`, a non-empty local part, a dotted domain, no spaces.
/// Lowercased; delivery is not checked.
fn email_field(value: &str) -> Result<String, ApiError> {
    let email = value.trim().to_lowercase();
    let plausible = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..")
        });
    if plausible {
        Ok(email)
    } else {
        Err(ApiError::invalid_field(
            "email",
            "must be an email address like name@example.com",
        ))
    }
}

/// The branch must exist in the account and be active (422 naming `branch_id` otherwise).
async fn check_branch(
    conn: &mut AnyConnection,
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

/// Every team must exist in the account and be active (422 naming `team_ids[i]` otherwise).
async fn check_teams(
    conn: &mut AnyConnection,
    account_id: &str,
    team_ids: &[String],
) -> Result<(), ApiError> {
    for (i, team_id) in team_ids.iter().enumerate() {
        let field = format!("team_ids[{i}]");
        match user_admin::team_active(conn, account_id, team_id).await? {
            Some(true) => {}
            Some(false) => return Err(ApiError::invalid_field(&field, "the team is inactive")),
            None => return Err(ApiError::invalid_field(&field, "no such team")),
        }
    }
    Ok(())
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    // argon2 is deliberately slow: keep it off the async workers.
    tokio::task::spawn_blocking(move || passwords::hash(&password))
        .await
        .map_err(ApiError::internal)?
}

#[utoipa::path(
    post, path = "/v1/admin/users", tag = "admin",
    request_body = UserIn,
    responses(
        (status = 201, description = "The user was created", body = UserOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 409, description = "The email is already taken", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A field is invalid (named in details)", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create_user(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<UserOut>), ApiError> {
    admin(&who)?;
    let input: UserIn = parse_json(&body)?;
    let email = email_field(&input.email)?;
    let name = name_field("name", &input.name)?;
    passwords::check_policy(
        &input.password,
        state.config.auth.min_password_length,
        &email,
    )?;
    let team_ids = dedup(input.team_ids);
    {
        let mut conn = state.store.pool().acquire().await?;
        super::roles::known_role(&mut conn, &who, &input.role, "role").await?;
        if let Some(branch_id) = &input.branch_id {
            check_branch(&mut conn, &who.account_id, branch_id).await?;
        }
        check_teams(&mut conn, &who.account_id, &team_ids).await?;
    }
    let password_hash = hash_password(input.password).await?;

    let mut tx = state.store.begin().await?;
    // Checked again inside the transaction: a role deleted or a branch or team deactivated
    // meanwhile is refused.
    super::roles::known_role(&mut tx, &who, &input.role, "role").await?;
    if let Some(branch_id) = &input.branch_id {
        check_branch(&mut tx, &who.account_id, branch_id).await?;
    }
    check_teams(&mut tx, &who.account_id, &team_ids).await?;
    let id = Store::insert_user(
        &mut tx,
        &NewUser {
            account_id: &who.account_id,
            email: &email,
            name: &name,
            password_hash: &password_hash,
            role: &input.role,
            branch_id: input.branch_id.as_deref(),
        },
    )
    .await
    .map_err(duplicate("email"))?;
    org::set_memberships(&mut tx, &who.account_id, &id, &team_ids).await?;
    let user = user_admin::fetch_user(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("created user vanished"))?;
    let out = UserOut::from(user);
    crate::store::audit::append(
        &mut tx,
        &who.audit("user.created", "user", Some(&id)).after(&out),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(out)))
}

#[utoipa::path(
    get, path = "/v1/admin/users", tag = "admin",
    params(UserQuery),
    responses(
        (status = 200, description = "One page of users, by id", body = UserPage),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 422, description = "A filter is invalid", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list_users(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> Result<Json<Value>, ApiError> {
    admin(&who)?;
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::USER)?;
    let filter = UserFilter {
        role: query.role,
        team_id: query.team_id,
        branch_id: query.branch_id,
        active: query.active,
    };
    let users = state
        .store
        .list_users_filtered(&who.account_id, &filter, cursor.as_deref(), limit + 1)
        .await?;
    let out: Vec<UserOut> = users.into_iter().map(UserOut::from).collect();
    Ok(page(out, limit, |u| u.id.clone()))
}

#[utoipa::path(
    get, path = "/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "User id (usr_…)")),
    responses(
        (status = 200, description = "The user", body = UserOut),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such user in the account", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get_user(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<UserOut>, ApiError> {
    admin(&who)?;
    let user = state
        .store
        .admin_get_user(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user.into()))
}

#[utoipa::path(
    patch, path = "/v1/admin/users/{id}", tag = "admin",
    params(("id" = String, Path, description = "User id (usr_…)")),
    request_body = UserPatch,
    responses(
        (status = 200, description = "The updated user", body = UserOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such user in the account", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A field is invalid, or the change would lock the caller out", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn update_user(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<UserOut>, ApiError> {
    admin(&who)?;
    let patch: UserPatch = parse_json(&body)?;
    let name = patch
        .name
        .as_deref()
        .map(|n| name_field("name", n))
        .transpose()?;
    let team_ids = patch.team_ids.map(dedup);
    let itself = who.user_id.as_deref() == Some(id.as_str());
    if itself && patch.active == Some(false) {
        return Err(ApiError::invalid_field(
            "active",
            "you cannot deactivate yourself",
        ));
    }

    let mut tx = state.store.begin().await?;
    let before = user_admin::lock_user(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    // Changing a user who holds more than the caller would be a way to that user's powers.
    who.may_confer(&super::roles::grants_of(&mut tx, &who.account_id, &before.role).await?)?;
    if let Some(role) = &patch.role {
        let grants = super::roles::known_role(&mut tx, &who, role, "role").await?;
        if itself && grants.scope(Permission::ManageUsers).is_none() {
            return Err(ApiError::invalid_field(
                "role",
                "you cannot drop your own manage_users permission",
            ));
        }
    }
    if let Some(Some(branch_id)) = &patch.branch_id
        && before.branch_id.as_deref() != Some(branch_id.as_str())
    {
        check_branch(&mut tx, &who.account_id, branch_id).await?;
    }
    if let Some(team_ids) = &team_ids {
        check_teams(&mut tx, &who.account_id, team_ids).await?;
    }
    let active = patch.active.unwrap_or(before.active);
    let change = UserChange {
        name: name.as_deref().unwrap_or(&before.name),
        role: patch.role.as_deref().unwrap_or(&before.role),
        branch_id: match &patch.branch_id {
            Some(new) => new.as_deref(),
            None => before.branch_id.as_deref(),
        },
        active,
    };
    user_admin::update_user(&mut tx, &who.account_id, &id, &change).await?;
    if let Some(team_ids) = &team_ids {
        org::set_memberships(&mut tx, &who.account_id, &id, team_ids).await?;
    }
    let after = user_admin::fetch_user(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("updated user vanished"))?;
    let deactivated = before.active && !active;
    let action = match (before.active, active) {
        (true, false) => "user.deactivated",
        (false, true) => "user.reactivated",
        _ => "user.updated",
    };
    let before = UserOut::from(before);
    let after = UserOut::from(after);
    crate::store::audit::append(
        &mut tx,
        &who.audit(action, "user", Some(&id))
            .before(&before)
            .after(&after),
    )
    .await?;
    if deactivated {
        sessions::revoke_user_sessions(&mut tx, &id, "user_deactivated").await?;
    }
    tx.commit().await?;
    Ok(Json(after))
}

#[utoipa::path(
    post, path = "/v1/admin/users/{id}/password", tag = "admin",
    params(("id" = String, Path, description = "User id (usr_…)")),
    request_body = PasswordIn,
    responses(
        (status = 204, description = "The password was replaced and the user's sessions ended"),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such user in the account", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "The password breaks a policy rule (named in the message)", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn reset_password(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<StatusCode, ApiError> {
    admin(&who)?;
    let input: PasswordIn = parse_json(&body)?;
    let user = state
        .store
        .admin_get_user(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    passwords::check_policy(
        &input.password,
        state.config.auth.min_password_length,
        &user.email,
    )?;
    let password_hash = hash_password(input.password).await?;
    let mut tx = state.store.begin().await?;
    let before = user_admin::lock_user(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    // Changing a user who holds more than the caller would be a way to that user's powers.
    who.may_confer(&super::roles::grants_of(&mut tx, &who.account_id, &before.role).await?)?;
    user_admin::set_password_hash(&mut tx, &who.account_id, &id, &password_hash).await?;
    let after = user_admin::fetch_user(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("user vanished"))?;
    crate::store::audit::append(
        &mut tx,
        &who.audit("user.password_reset", "user", Some(&id))
            .before(UserOut::from(before))
            .after(UserOut::from(after)),
    )
    .await?;
    sessions::revoke_user_sessions(&mut tx, &id, "password_reset").await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete, path = "/v1/admin/users/{id}/second-factor", tag = "admin",
    params(("id" = String, Path, description = "User id (usr_…)")),
    responses(
        (status = 204, description = "TOTP and backup codes removed, the user's sessions ended; they sign in with the password and may enrol again"),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users, or the user holds more than the caller", body = ErrorEnvelope),
        (status = 404, description = "No such user in the account", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
/// For a user who lost their authenticator (or whose token was used to enrol someone else's).
pub(super) async fn reset_second_factor(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    admin(&who)?;
    let mut tx = state.store.begin().await?;
    let before = user_admin::lock_user(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    who.may_confer(&super::roles::grants_of(&mut tx, &who.account_id, &before.role).await?)?;
    signin::clear_second_factor(&mut tx, &id).await?;
    let after = user_admin::fetch_user(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("user vanished"))?;
    crate::store::audit::append(
        &mut tx,
        &who.audit("user.second_factor_reset", "user", Some(&id))
            .before(UserOut::from(before))
            .after(UserOut::from(after)),
    )
    .await?;
    sessions::revoke_user_sessions(&mut tx, &id, "second_factor_reset").await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowercased_and_shape_checked() {
        assert_eq!(email_field(" Ada@Example.COM ").unwrap(), "ada@example.com");
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@.example.com",
            "ada@example..com",
        ] {
            let err = email_field(bad).unwrap_err().to_string();
            assert!(err.starts_with("email:"), "{bad:?}: {err}");
        }
    }
}
