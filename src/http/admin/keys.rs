//! `/v1/admin/api-keys`: create (the key is shown once), list, read and revoke.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{admin, name_field};
use crate::access::Principal;
use crate::auth::mint_key;
use crate::error::{ApiError, ErrorEnvelope};
use crate::http::api::{id_cursor, page, page_limit};
use crate::http::{ApiQuery, AppState, RawBody, parse_json};
use crate::ids;
use crate::store::api_keys::{self, ApiKey, NewApiKey};
use crate::store::audit;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/api-keys", post(create_key).get(list_keys))
        .route("/v1/admin/api-keys/{id}", get(get_key).delete(revoke_key))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyIn {
    name: String,
    /// A built-in role name or a custom role id (`rol_…`) of the account.
    role: String,
    /// RFC 3339 time or Unix milliseconds; must be in the future. Absent: never expires.
    #[schema(value_type = Option<String>)]
    expires_at: Option<Value>,
}

/// An API key as administrators see it: never the key or its hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyOut {
    id: String,
    name: String,
    role: String,
    /// The recognisable start of the key: `sbk_<prefix>_…`.
    prefix: String,
    created_at: i64,
    /// The user or key that created it (None for the CLI).
    created_by: Option<String>,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl From<ApiKey> for ApiKeyOut {
    fn from(k: ApiKey) -> Self {
        ApiKeyOut {
            id: k.id,
            name: k.name,
            role: k.role,
            prefix: k.prefix,
            created_at: k.created_at,
            created_by: k.created_by,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// The creation response: the only time the key itself is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyCreated {
    /// The key, `sbk_…`. Store it now: it cannot be shown again.
    key: String,
    #[serde(flatten)]
    api_key: ApiKeyOut,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyPage {
    data: Vec<ApiKeyOut>,
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

/// `expires_at` as Unix ms: an RFC 3339 string or an integer of milliseconds, in the future.
fn expiry(value: Option<&Value>, now_ms: i64) -> Result<Option<i64>, ApiError> {
    let field = "expires_at";
    let ms = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ApiError::invalid_field(field, "must be whole Unix milliseconds"))?,
        Some(Value::String(s)) => crate::http::parse_instant(field, s)?,
        Some(_) => {
            return Err(ApiError::invalid_field(
                field,
                "must be an RFC 3339 time or Unix milliseconds",
            ));
        }
    };
    if ms <= now_ms {
        return Err(ApiError::invalid_field(field, "must be in the future"));
    }
    Ok(Some(ms))
}

#[utoipa::path(
    post, path = "/v1/admin/api-keys", tag = "admin",
    request_body = ApiKeyIn,
    responses(
        (status = 201, description = "The key, shown once, and its record", body = ApiKeyCreated),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "A field is invalid", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create_key(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<ApiKeyCreated>), ApiError> {
    admin(&who)?;
    let input: ApiKeyIn = parse_json(&body)?;
    let name = name_field("name", &input.name)?;
    let expires_at = expiry(input.expires_at.as_ref(), ids::now_ms())?;
    let minted = mint_key();
    let mut tx = state.store.begin().await?;
    super::roles::known_role(&mut tx, &who, &input.role, "role").await?;
    let key = api_keys::insert_api_key(
        &mut tx,
        &NewApiKey {
            account_id: &who.account_id,
            name: &name,
            role: &input.role,
            prefix: &minted.prefix,
            key_hash: &minted.hash,
            expires_at,
            created_by: who.actor.id(),
        },
    )
    .await?;
    let out = ApiKeyOut::from(key);
    audit::append(
        &mut tx,
        &who.audit("api_key.created", "api_key", Some(&out.id))
            .after(&out),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            key: minted.key,
            api_key: out,
        }),
    ))
}

#[utoipa::path(
    get, path = "/v1/admin/api-keys", tag = "admin",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of keys, by id", body = ApiKeyPage),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or a query parameter this list does not take", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list_keys(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    admin(&who)?;
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::API_KEY)?;
    let keys = state
        .store
        .list_api_keys(&who.account_id, cursor.as_deref(), limit + 1)
        .await?;
    let out: Vec<ApiKeyOut> = keys.into_iter().map(ApiKeyOut::from).collect();
    Ok(page(out, limit, |k| k.id.clone()))
}

#[utoipa::path(
    get, path = "/v1/admin/api-keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "API key id (key_…)")),
    responses(
        (status = 200, description = "The key's record", body = ApiKeyOut),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such key in the account", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get_key(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyOut>, ApiError> {
    admin(&who)?;
    let key = state
        .store
        .get_api_key(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(Json(key.into()))
}

#[utoipa::path(
    delete, path = "/v1/admin/api-keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "API key id (key_…)")),
    responses(
        (status = 200, description = "The key is revoked; the next request with it is 401", body = ApiKeyOut),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The caller lacks manage_users", body = ErrorEnvelope),
        (status = 404, description = "No such key in the account", body = ErrorEnvelope),
        (status = 409, description = "The key was already revoked", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = []))
)]
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyOut>, ApiError> {
    admin(&who)?;
    let mut tx = state.store.begin().await?;
    let before = api_keys::lock_api_key(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    if before.revoked_at.is_some() {
        return Err(ApiError::conflict("the API key is already revoked"));
    }
    api_keys::revoke_api_key(&mut tx, &who.account_id, &id, ids::now_ms()).await?;
    let after = api_keys::lock_api_key(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::internal("revoked key vanished"))?;
    let (before, after) = (ApiKeyOut::from(before), ApiKeyOut::from(after));
    audit::append(
        &mut tx,
        &who.audit("api_key.revoked", "api_key", Some(&id))
            .before(&before)
            .after(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expiry_takes_rfc3339_or_ms_in_the_future() {
        let now = 1_760_000_000_000;
        assert_eq!(expiry(None, now).unwrap(), None);
        assert_eq!(
            expiry(Some(&json!(now + 1000)), now).unwrap(),
            Some(now + 1000)
        );
        assert_eq!(
            expiry(Some(&json!("2025-10-09T09:00:00Z")), 0).unwrap(),
            Some(1_760_000_400_000)
        );
        for bad in [
            json!(now),
            json!("2020-01-01T00:00:00Z"),
            json!("soon"),
            json!(true),
        ] {
            let err = expiry(Some(&bad), now).unwrap_err().to_string();
            assert!(err.starts_with("expires_at:"), "{bad}: {err}");
        }
    }
}
