//! Access control, in one place: permissions, the scopes they are granted at, the five
//! built-in roles, and the [`Principal`] extractor that authenticates a request (access token
//! or API key) and answers "may this caller do P, and over which records?".
//!
//! Handlers never compare role names. They ask `who.require(Permission::X)?` (403 when the role
//! lacks it) and pass the returned [`RecordScope`] to the store, whose queries filter by it — so
//! a record outside the caller's scope is simply not found (404), indistinguishable from one
//! that does not exist.
//!
//! Scopes: `all` (the whole account), `branch` (records of the caller's branch), `team`
//! (records of the caller's teams), `assigned` (conversations assigned to the caller) and
//! `self` (the caller's own figures: SLA reports). Account-wide powers (routing, users, raw
//! data, audit) can only be granted at `all`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::http::AppState;
use crate::http::webchat::bearer;
use crate::store::audit::{Actor, AuditRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    ViewConversations,
    ReplyToCustomer,
    ReassignConversations,
    ConfigureRouting,
    ManageUsers,
    ViewSlaReports,
    ExportRawData,
    ViewAuditLog,
}

impl Permission {
    pub const ALL: [Permission; 8] = [
        Permission::ViewConversations,
        Permission::ReplyToCustomer,
        Permission::ReassignConversations,
        Permission::ConfigureRouting,
        Permission::ManageUsers,
        Permission::ViewSlaReports,
        Permission::ExportRawData,
        Permission::ViewAuditLog,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ViewConversations => "view_conversations",
            Permission::ReplyToCustomer => "reply_to_customer",
            Permission::ReassignConversations => "reassign_conversations",
            Permission::ConfigureRouting => "configure_routing",
            Permission::ManageUsers => "manage_users",
            Permission::ViewSlaReports => "view_sla_reports",
            Permission::ExportRawData => "export_raw_data",
            Permission::ViewAuditLog => "view_audit_log",
        }
    }

    /// The scopes this permission may be granted at.
    pub fn allowed_scopes(self) -> &'static [Scope] {
        use Scope::*;
        match self {
            Permission::ViewConversations
            | Permission::ReplyToCustomer
            | Permission::ReassignConversations => &[All, Branch, Team, Assigned],
            Permission::ViewSlaReports => &[All, Branch, Team, Own],
            Permission::ConfigureRouting
            | Permission::ManageUsers
            | Permission::ExportRawData
            | Permission::ViewAuditLog => &[All],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    All,
    Branch,
    Team,
    Assigned,
    #[serde(rename = "self")]
    Own,
}

impl Scope {
    /// How much a scope reaches, for comparing grants: all > branch > team > assigned/self.
    fn reach(self) -> u8 {
        match self {
            Scope::All => 3,
            Scope::Branch => 2,
            Scope::Team => 1,
            Scope::Assigned | Scope::Own => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Branch => "branch",
            Scope::Team => "team",
            Scope::Assigned => "assigned",
            Scope::Own => "self",
        }
    }
}

/// What a role grants: each permission it has, at one scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Grants(pub BTreeMap<Permission, Scope>);

impl Grants {
    pub fn scope(&self, permission: Permission) -> Option<Scope> {
        self.0.get(&permission).copied()
    }

    /// The first permission of `other` that these grants do not hold at the same or a wider
    /// scope (None: `other` is covered).
    pub fn missing_from(&self, other: &Grants) -> Option<Permission> {
        other
            .0
            .iter()
            .find_map(|(permission, scope)| match self.scope(*permission) {
                Some(mine) if mine.reach() >= scope.reach() => None,
                _ => Some(*permission),
            })
    }

    /// Parses and validates a custom role's grants; errors name the permission.
    pub fn parse(value: &serde_json::Value) -> Result<Self, ApiError> {
        let object = value
            .as_object()
            .ok_or_else(|| ApiError::invalid_field("grants", "must be an object"))?;
        let mut grants = BTreeMap::new();
        for (name, scope) in object {
            let field = format!("grants.{name}");
            let permission: Permission =
                serde_json::from_value(serde_json::json!(name)).map_err(|_| {
                    ApiError::invalid_field(
                        &field,
                        format!(
                            "unknown permission; expected one of {}",
                            Permission::ALL.map(Permission::as_str).join(", ")
                        ),
                    )
                })?;
            let scope: Scope = serde_json::from_value(scope.clone()).map_err(|_| {
                ApiError::invalid_field(&field, "must be one of all, branch, team, assigned, self")
            })?;
            if !permission.allowed_scopes().contains(&scope) {
                return Err(ApiError::invalid_field(
                    &field,
                    format!(
                        "cannot be granted at `{}`; allowed: {}",
                        scope.as_str(),
                        permission
                            .allowed_scopes()
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            grants.insert(permission, scope);
        }
        Ok(Grants(grants))
    }
}

/// The five built-in roles, by name.
pub const BUILTIN_ROLES: [&str; 5] = [
    "super_admin",
    "operations",
    "team_lead",
    "agent",
    "branch_manager",
];

/// The built-in role presets (the table in the access-control issue, verbatim).
pub fn builtin(role: &str) -> Option<Grants> {
    use Permission::*;
    use Scope::*;
    let rows: &[(Permission, Scope)] = match role {
        "super_admin" => &[
            (ViewConversations, All),
            (ReplyToCustomer, All),
            (ReassignConversations, All),
            (ConfigureRouting, All),
            (ManageUsers, All),
            (ViewSlaReports, All),
            (ExportRawData, All),
            (ViewAuditLog, All),
        ],
        "operations" => &[
            (ViewConversations, All),
            (ReplyToCustomer, All),
            (ReassignConversations, All),
            (ConfigureRouting, All),
            (ViewSlaReports, All),
            (ExportRawData, All),
            (ViewAuditLog, All),
        ],
        "team_lead" => &[
            (ViewConversations, Team),
            (ReplyToCustomer, Team),
            (ReassignConversations, Team),
            (ViewSlaReports, Team),
        ],
        "agent" => &[
            (ViewConversations, Assigned),
            (ReplyToCustomer, Assigned),
            (ViewSlaReports, Own),
        ],
        "branch_manager" => &[
            (ViewConversations, Branch),
            (ReassignConversations, Branch),
            (ViewSlaReports, Branch),
        ],
        _ => return None,
    };
    Some(Grants(rows.iter().copied().collect()))
}

/// The records a permission reaches for one caller; store queries filter by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordScope {
    pub scope: Scope,
    /// The caller's user id (None for API keys: `team`, `assigned` and `self` then match
    /// nothing).
    pub user_id: Option<String>,
    pub branch_id: Option<String>,
}

impl RecordScope {
    /// The whole account: for work done on the hub's own behalf.
    pub fn all() -> Self {
        RecordScope {
            scope: Scope::All,
            user_id: None,
            branch_id: None,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.scope.as_str()
    }
}

/// The client's address and user agent, for the audit log and per-IP limits.
#[derive(Debug, Clone, Default)]
pub struct ClientMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientMeta {
    pub fn from_parts(parts: &Parts, trust_forwarded_for: bool) -> Self {
        let forwarded = trust_forwarded_for
            .then(|| {
                parts
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    // The last entry is the one our proxy appended (the client's address as the
                    // proxy saw it); earlier ones are whatever the client sent.
                    .and_then(|v| v.rsplit(',').next())
                    .and_then(|v| v.trim().parse::<IpAddr>().ok())
            })
            .flatten();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        ClientMeta {
            ip: forwarded.or(peer).map(|ip| ip.to_string()),
            user_agent: parts
                .headers
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(512).collect()),
        }
    }
}

impl FromRequestParts<AppState> for ClientMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientMeta::from_parts(
            parts,
            state.config.rate_limits.trust_forwarded_for,
        ))
    }
}

/// An authenticated caller: a signed-in user or an API key, always of one account.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: String,
    pub actor: Actor,
    /// Built-in role name or custom role id.
    pub role: String,
    pub grants: Grants,
    pub user_id: Option<String>,
    pub branch_id: Option<String>,
    pub session_id: Option<String>,
    pub meta: ClientMeta,
}

impl Principal {
    /// The scope at which the caller holds `permission`, or 403.
    pub fn require(&self, permission: Permission) -> Result<RecordScope, ApiError> {
        let scope = self.grants.scope(permission).ok_or_else(|| {
            ApiError::Forbidden(format!(
                "your role does not grant `{}`",
                permission.as_str()
            ))
        })?;
        Ok(RecordScope {
            scope,
            user_id: self.user_id.clone(),
            branch_id: self.branch_id.clone(),
        })
    }

    /// Refuses (403) to confer grants the caller does not hold itself, so holding
    /// `manage_users` through a narrow custom role does not lead to `super_admin`: a role given
    /// to a user or an API key, or written into a custom role, must be covered by the caller's
    /// own grants.
    pub fn may_confer(&self, grants: &Grants) -> Result<(), ApiError> {
        match self.grants.missing_from(grants) {
            None => Ok(()),
            Some(permission) => Err(ApiError::Forbidden(format!(
                "you cannot confer `{}` at a wider scope than you hold it",
                permission.as_str()
            ))),
        }
    }

    /// True when the caller holds `permission` at any scope.
    pub fn can(&self, permission: Permission) -> bool {
        self.grants.scope(permission).is_some()
    }

    /// An audit record with this caller as the actor; the caller fills in the change.
    pub fn audit(&self, action: &str, entity_type: &str, entity_id: Option<&str>) -> AuditRecord {
        AuditRecord::new(
            Some(self.account_id.clone()),
            self.actor.clone(),
            action,
            entity_type,
            entity_id,
            &self.meta,
        )
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let meta = ClientMeta::from_parts(parts, state.config.rate_limits.trust_forwarded_for);
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthenticated(
                "missing_credentials",
                "send an access token or API key as `Authorization: Bearer <token>`",
            )
        })?;
        let principal = if token.starts_with("sbk_") {
            crate::auth::keys::authenticate(state, token, meta).await?
        } else {
            crate::auth::tokens::authenticate(state, token, meta).await?
        };
        state.limits.check_api(&principal)?;
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_grant_only_allowed_scopes() {
        for role in BUILTIN_ROLES {
            let grants = builtin(role).unwrap();
            for (permission, scope) in &grants.0 {
                assert!(
                    permission.allowed_scopes().contains(scope),
                    "{role}: {permission:?} at {scope:?}"
                );
            }
        }
        assert!(builtin("root").is_none());
    }

    #[test]
    fn coverage_compares_scopes() {
        let admin = builtin("super_admin").unwrap();
        let lead = builtin("team_lead").unwrap();
        let agent = builtin("agent").unwrap();
        assert_eq!(admin.missing_from(&lead), None);
        assert_eq!(
            lead.missing_from(&agent),
            None,
            "team covers assigned and self"
        );
        assert_eq!(
            agent.missing_from(&lead),
            Some(Permission::ViewConversations)
        );
        assert_eq!(
            builtin("operations").unwrap().missing_from(&admin),
            Some(Permission::ManageUsers)
        );
    }

    #[test]
    fn custom_grants_are_validated() {
        let ok = Grants::parse(
            &serde_json::json!({"view_conversations": "team", "view_sla_reports": "self"}),
        )
        .unwrap();
        assert_eq!(ok.scope(Permission::ViewSlaReports), Some(Scope::Own));
        for (bad, field) in [
            (serde_json::json!({"fly": "all"}), "grants.fly"),
            (
                serde_json::json!({"manage_users": "team"}),
                "grants.manage_users",
            ),
            (
                serde_json::json!({"view_conversations": "self"}),
                "grants.view_conversations",
            ),
            (
                serde_json::json!({"view_conversations": 3}),
                "grants.view_conversations",
            ),
            (serde_json::json!([]), "grants"),
        ] {
            let err = Grants::parse(&bad).unwrap_err().to_string();
            assert!(err.starts_with(field), "{bad}: {err}");
        }
    }
}
