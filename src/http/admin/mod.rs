//! The admin API: users, branches, teams, custom roles and API keys of the caller's account.
//!
//! Every route requires `manage_users`. Each mutation runs in one store transaction that also
//! appends its audit record (with `before`/`after` snapshots, never secrets), so a change
//! without its record cannot be committed. Records of other accounts are 404; references in a
//! body to records that do not exist in the account (a branch, a team, a role) are 422 naming
//! the field.

mod keys;
mod org;
mod roles;
mod users;

use axum::Router;
use serde::{Deserialize, Deserializer};

use super::AppState;
use crate::access::{Permission, Principal};
use crate::error::ApiError;
use crate::store::StoreError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(users::routes())
        .merge(org::routes())
        .merge(roles::routes())
        .merge(keys::routes())
}

/// The admin API's OpenAPI description (merged into `/v1/openapi.json` by the lead).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        users::create_user,
        users::list_users,
        users::get_user,
        users::update_user,
        users::reset_password,
        users::reset_second_factor,
        org::create_branch,
        org::list_branches,
        org::get_branch,
        org::update_branch,
        org::create_team,
        org::list_teams,
        org::get_team,
        org::update_team,
        org::replace_members,
        roles::list_roles,
        roles::get_role,
        roles::create_role,
        roles::update_role,
        roles::delete_role,
        keys::create_key,
        keys::list_keys,
        keys::get_key,
        keys::revoke_key,
    ),
    components(schemas(
        users::UserIn,
        users::UserPatch,
        users::PasswordIn,
        users::UserOut,
        users::UserPage,
        org::BranchIn,
        org::BranchPatch,
        org::BranchOut,
        org::BranchPage,
        org::TeamIn,
        org::TeamPatch,
        org::TeamOut,
        org::TeamPage,
        org::MembersIn,
        roles::RoleIn,
        roles::RolePatch,
        roles::RoleOut,
        roles::RolePage,
        keys::ApiKeyIn,
        keys::ApiKeyOut,
        keys::ApiKeyCreated,
        keys::ApiKeyPage,
        crate::error::ErrorEnvelope,
    )),
    modifiers(&BearerAuth)
)]
pub struct AdminApi;

/// Declares the `bearer` security scheme the paths name: an access token or an API key.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// Every admin route starts here: 403 unless the caller holds `manage_users`.
fn admin(who: &Principal) -> Result<(), ApiError> {
    who.require(Permission::ManageUsers).map(|_| ())
}

/// A trimmed display name of 1–100 characters without control characters.
fn name_field(field: &str, value: &str) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid_field(field, "must not be empty"));
    }
    if trimmed.chars().count() > 100 {
        return Err(ApiError::invalid_field(
            field,
            "must be at most 100 characters",
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

/// Maps a unique-constraint refusal to 409 naming what clashed; other failures stay 500s.
fn duplicate(what: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| {
        if e.is_unique_violation() {
            ApiError::conflict(format!("{what} is already taken"))
        } else {
            e.into()
        }
    }
}

/// For PATCH fields where `null` means "clear" and absence means "keep":
/// absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
fn nullable<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Removes repeated ids, keeping the first occurrence's order.
fn dedup(ids: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_describes_every_admin_route() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(AdminApi::openapi()).unwrap();
        for path in [
            "/v1/admin/users",
            "/v1/admin/users/{id}",
            "/v1/admin/users/{id}/password",
            "/v1/admin/branches",
            "/v1/admin/branches/{id}",
            "/v1/admin/teams",
            "/v1/admin/teams/{id}",
            "/v1/admin/teams/{id}/members",
            "/v1/admin/roles",
            "/v1/admin/roles/{id}",
            "/v1/admin/api-keys",
            "/v1/admin/api-keys/{id}",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
        assert!(doc["components"]["schemas"]["UserOut"].is_object());
        let audit = serde_json::to_value(crate::http::audit::AuditApi::openapi()).unwrap();
        assert!(audit["paths"]["/v1/audit/export.csv"]["get"].is_object());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name_field("name", "  Ops  ").unwrap(), "Ops");
        for bad in ["", "   ", "a\u{7}b", &"x".repeat(101)] {
            let err = name_field("name", bad).unwrap_err().to_string();
            assert!(err.starts_with("name:"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn nullable_tells_absent_from_null() {
        #[derive(Deserialize)]
        struct P {
            #[serde(default, deserialize_with = "nullable")]
            b: Option<Option<String>>,
        }
        let absent: P = serde_json::from_str("{}").unwrap();
        let null: P = serde_json::from_str(r#"{"b":null}"#).unwrap();
        let set: P = serde_json::from_str(r#"{"b":"x"}"#).unwrap();
        assert_eq!(absent.b, None);
        assert_eq!(null.b, Some(None));
        assert_eq!(set.b, Some(Some("x".into())));
    }
}
