//! Sign-in flows: password login with an optional TOTP second factor, refresh-token rotation,
//! logout, the caller's own profile, password change, and TOTP enrolment.
//!
//! What this module guarantees:
//! - a failed login never says why: unknown email, wrong password, locked or inactive user all
//!   answer the same 401 `invalid_credentials`, and an unknown email still costs one argon2
//!   verification (against `passwords::dummy_hash`);
//! - the per-IP login limit is checked before anything else (it holds across nodes in the
//!   distributed mode, see `crate::limits`);
//! - refresh tokens are 256 random bits, stored only as SHA-256, used once; they travel in the
//!   body or in an HttpOnly cookie scoped to `/v1/auth`, and come back the way they came.
//!
//! Sessions and rotation live in `store::sessions`, lockout and TOTP state in
//! `store::signin`; this module holds no SQL.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use totp_rs::{Algorithm, Totp};
use utoipa::ToSchema;

use super::{AppState, RawBody, parse_json};
use crate::access::{ClientMeta, Grants, Principal};
use crate::auth::{hash_key, passwords, tokens};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::audit::{Actor, AuditRecord};
use crate::store::sessions::{NewSession, Rotation};
use crate::store::signin::{SecondFactor, TotpEnabled};
use crate::store::users::{Credentials, User};

pub const REFRESH_COOKIE: &str = "sb_refresh";
const COOKIE_PATH: &str = "/v1/auth";
const TOTP_ISSUER: &str = "Switchboard";
const BACKUP_CODES: usize = 10;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/logout-all", post(logout_all))
        .route("/v1/auth/me", get(me))
        .route("/v1/auth/password", post(change_password))
        .route("/v1/auth/totp/enrol", post(totp_enrol))
        .route("/v1/auth/totp/verify", post(totp_verify))
        .route("/v1/auth/totp/disable", post(totp_disable))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        login,
        refresh,
        logout,
        logout_all,
        me,
        change_password,
        totp_enrol,
        totp_verify,
        totp_disable
    ),
    components(schemas(
        LoginRequest,
        RefreshIn,
        RefreshRequest,
        TokenResponse,
        UserSummary,
        MeResponse,
        PasswordChangeRequest,
        SessionsRevoked,
        TotpEnrolment,
        TotpCodeRequest,
        BackupCodes,
        PasswordConfirmation
    ))
)]
pub struct AuthApi;

/// Where the refresh token travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RefreshIn {
    /// An HttpOnly `sb_refresh` cookie scoped to `/v1/auth` (browsers).
    Cookie,
    /// The `refresh_token` field of the response (other clients).
    Body,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
    /// The current 6-digit code, when the user has TOTP enabled.
    totp_code: Option<String>,
    /// One unused backup code, instead of `totp_code`.
    backup_code: Option<String>,
    /// Defaults to `cookie` when the request comes from a browser (`Origin` or
    /// `Sec-Fetch-Site` present), else `body`.
    refresh_in: Option<RefreshIn>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// Omit to use the `sb_refresh` cookie.
    refresh_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserSummary {
    id: String,
    email: String,
    name: String,
    role: String,
    account_id: String,
}

impl From<&User> for UserSummary {
    fn from(u: &User) -> Self {
        UserSummary {
            id: u.id.clone(),
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role.clone(),
            account_id: u.account_id.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds the access token lives.
    expires_in: u64,
    /// Present only when the refresh token travels in the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    user: UserSummary,
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    id: String,
    email: String,
    name: String,
    role: String,
    account_id: String,
    branch_id: Option<String>,
    team_ids: Vec<String>,
    /// Permission name → scope.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    grants: Grants,
    totp_enabled: bool,
    last_login_at: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    current_password: String,
    new_password: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionsRevoked {
    sessions_revoked: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// Base32, for manual entry in an authenticator app.
    secret: String,
    /// `otpauth://totp/…`, for a QR code.
    otpauth_url: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCodeRequest {
    code: String,
}

#[derive(Serialize, ToSchema)]
pub struct BackupCodes {
    /// Shown once; each works once in place of a TOTP code.
    backup_codes: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordConfirmation {
    password: String,
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthenticated(
        "invalid_credentials",
        "wrong email or password, or the account is locked",
    )
}

fn invalid_refresh() -> ApiError {
    ApiError::unauthenticated(
        "invalid_refresh_token",
        "the refresh token is unknown, expired or revoked; sign in again",
    )
}

/// The signed-in user behind a principal; API keys have none.
fn user_of(who: &Principal) -> Result<&str, ApiError> {
    who.user_id.as_deref().ok_or_else(|| {
        ApiError::Forbidden("this endpoint is for signed-in users; an API key has no user".into())
    })
}

/// A 422 that names no field (a state conflict the client can resolve).
fn unprocessable(message: &str) -> ApiError {
    ApiError::Unprocessable {
        message: message.to_owned(),
        details: Vec::new(),
    }
}

/// Argon2 is deliberately slow; keep it off the async workers.
async fn verify_password(password: String, hash: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || passwords::verify(&password, &hash))
        .await
        .map_err(ApiError::internal)
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || passwords::hash(&password))
        .await
        .map_err(ApiError::internal)?
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn totp(secret: Vec<u8>, email: &str) -> Result<Totp, ApiError> {
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1)
        .with_secret(secret)
        .with_issuer(Some(TOTP_ISSUER))
        .with_account_name(email.replace(':', ""))
        .build()
        .map_err(ApiError::internal)
}

/// The user's TOTP from its sealed base32 secret.
fn open_totp(state: &AppState, sealed: &str, email: &str) -> Result<Totp, ApiError> {
    let base32 = state.keys.sealer.open(sealed).map_err(ApiError::internal)?;
    let secret = totp_rs::Secret::try_from_base32(base32.expose_secret())
        .map_err(|e| ApiError::internal(format!("stored TOTP secret: {e:?}")))?;
    totp(secret.as_bytes().to_vec(), email)
}

/// The time step a code matches (within one step of skew), if any.
fn check_totp(totp: &Totp, code: &str) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    totp.check_current(&code).map(|step| step as i64)
}

/// Backup codes are compared case- and dash-insensitively.
fn backup_code_hash(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hash_key(&normal)
}

fn new_backup_code() -> String {
    // 10 characters of a 32-letter alphabet without look-alikes: 50 bits.
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

/// Browsers (which send `Origin` or `Sec-Fetch-Site`) get the cookie unless they ask otherwise.
fn delivery(asked: Option<RefreshIn>, headers: &HeaderMap) -> RefreshIn {
    asked.unwrap_or(
        if headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-site") {
            RefreshIn::Cookie
        } else {
            RefreshIn::Body
        },
    )
}

/// CSRF guard for cookie-authenticated calls, on top of the cookie's `SameSite=Strict`: a
/// browser says where a request comes from (`Sec-Fetch-Site`, or at least `Origin`), and only
/// the hub's own pages may spend its cookie. Clients that send neither are not browsers.
fn cross_site(state: &AppState, headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| {
            o.trim_end_matches('/') != state.config.server.public_url.trim_end_matches('/')
        })
}

fn refresh_cookie(state: &AppState, value: Option<&str>) -> Result<HeaderValue, ApiError> {
    let builder = cookie::Cookie::build((REFRESH_COOKIE, value.unwrap_or_default().to_owned()))
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .secure(state.config.auth.cookie_secure);
    let cookie = match value {
        Some(_) => builder
            .max_age(cookie::time::Duration::seconds(
                state.config.auth.refresh_token_ttl_secs as i64,
            ))
            .build(),
        None => builder.removal().build(),
    };
    HeaderValue::from_str(&cookie.to_string()).map_err(ApiError::internal)
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| cookie::Cookie::split_parse(v.to_owned()))
        .filter_map(Result::ok)
        .find(|c| c.name() == REFRESH_COOKIE && !c.value().is_empty())
        .map(|c| c.value().to_owned())
}

fn with_header(mut response: Response, name: header::HeaderName, value: HeaderValue) -> Response {
    response.headers_mut().append(name, value);
    response
}

/// The token response for a live session, with the refresh token delivered as asked.
fn token_response(
    state: &AppState,
    user: &User,
    session_id: &str,
    refresh: String,
    how: RefreshIn,
) -> Result<Response, ApiError> {
    let ttl = state.config.auth.access_token_ttl_secs;
    let (access_token, _) =
        tokens::issue(&state.keys, ttl, &user.id, &user.account_id, session_id)?;
    let cookie = match how {
        RefreshIn::Cookie => Some(refresh_cookie(state, Some(&refresh))?),
        RefreshIn::Body => None,
    };
    let body = TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: ttl,
        refresh_token: (how == RefreshIn::Body).then_some(refresh),
        user: UserSummary::from(user),
    };
    let mut response = with_header(
        Json(body).into_response(),
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    if let Some(cookie) = cookie {
        response = with_header(response, header::SET_COOKIE, cookie);
    }
    Ok(response)
}

fn refresh_expiry(state: &AppState) -> i64 {
    ids::now_ms() + state.config.auth.refresh_token_ttl_secs as i64 * 1000
}

/// Counts a failed attempt against a known user (locking it at the threshold) and audits it.
async fn login_failed(
    state: &AppState,
    creds: &Credentials,
    meta: &ClientMeta,
    reason: &str,
) -> Result<(), ApiError> {
    let auth = &state.config.auth;
    let actor = Actor::User(creds.user_id.clone());
    let record = |action: &str| {
        AuditRecord::new(
            Some(creds.account_id.clone()),
            actor.clone(),
            action,
            "user",
            Some(&creds.user_id),
            meta,
        )
    };
    // A locked or inactive user's attempts are not counted: they cannot extend a lock.
    if matches!(reason, "wrong_password" | "wrong_mfa_code") {
        let until = ids::now_ms() + auth.lockout_secs as i64 * 1000;
        let locked = state
            .store
            .record_failed_login(&creds.user_id, i64::from(auth.lockout_threshold), until)
            .await?;
        if locked {
            tracing::warn!(user = %creds.user_id, "Too many failed sign-ins; user locked.");
            state
                .store
                .append_audit(&record("auth.locked").after(json!({ "locked_until": until })))
                .await?;
        }
    }
    state
        .store
        .append_audit(&record("auth.login_failed").after(json!({ "reason": reason })))
        .await?;
    Ok(())
}

/// Sign in with email and password (and a TOTP or backup code when enabled).
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; `Set-Cookie: sb_refresh=…` when the refresh token goes in a cookie", body = TokenResponse),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "`invalid_credentials` (wrong email or password, locked or inactive), `mfa_required` (send `totp_code` or `backup_code`), `invalid_mfa_code`", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "The body does not fit", body = ErrorEnvelope),
        (status = 429, description = "Too many sign-in attempts from this address", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
async fn login(
    State(state): State<AppState>,
    meta: ClientMeta,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let ip = meta.ip.clone().unwrap_or_else(|| "unknown".to_owned());
    state.limits.check_login(&ip).await?;
    // Only JSON: a cross-site HTML form cannot send it without a CORS preflight, so another
    // site cannot sign a visitor's browser in to the attacker's account (login CSRF).
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return Err(ApiError::bad_request(
            "unsupported_media_type",
            "send the credentials as `Content-Type: application/json`",
        ));
    }
    let input: LoginRequest = parse_json(&body)?;

    let creds = state.store.credentials_by_email(&input.email).await?;
    let stored = creds
        .as_ref()
        .map(|c| c.password_hash.clone())
        .unwrap_or_else(|| passwords::dummy_hash().to_owned());
    let password_ok = verify_password(input.password, stored).await?;

    let Some(creds) = creds else {
        let record = AuditRecord::new(
            None,
            Actor::Anonymous,
            "auth.login_failed",
            "user",
            None,
            &meta,
        )
        .after(json!({ "reason": "unknown_email", "email": input.email.trim().to_lowercase() }));
        state.store.append_audit(&record).await?;
        return Err(invalid_credentials());
    };
    let refusal = if creds.locked_until.is_some_and(|t| t > ids::now_ms()) {
        Some("locked")
    } else if !creds.active {
        Some("inactive")
    } else if !password_ok {
        Some("wrong_password")
    } else {
        None
    };
    if let Some(reason) = refusal {
        login_failed(&state, &creds, &meta, reason).await?;
        return Err(invalid_credentials());
    }

    let mut second_factor = None;
    if creds.totp_enabled {
        let (ok, method) = match (&input.totp_code, &input.backup_code) {
            (None, None) => {
                return Err(ApiError::unauthenticated(
                    "mfa_required",
                    "this user signs in with a second factor; send `totp_code` or `backup_code`",
                ));
            }
            (Some(code), _) => {
                let sealed = creds.totp_secret.as_deref().unwrap_or_default();
                let email = input.email.trim().to_lowercase();
                // A code is accepted once: its step must be later than the last one used.
                let ok = match check_totp(&open_totp(&state, sealed, &email)?, code) {
                    Some(step) => state.store.claim_totp_step(&creds.user_id, step).await?,
                    None => false,
                };
                (ok, "totp")
            }
            (None, Some(code)) => (
                state
                    .store
                    .use_backup_code(&creds.user_id, &backup_code_hash(code))
                    .await?,
                "backup_code",
            ),
        };
        if !ok {
            login_failed(&state, &creds, &meta, "wrong_mfa_code").await?;
            return Err(ApiError::unauthenticated(
                "invalid_mfa_code",
                "the authentication code is wrong, expired or already used",
            ));
        }
        second_factor = Some(method);
    }

    if !state.store.record_login(&creds.user_id).await? {
        login_failed(&state, &creds, &meta, "locked").await?;
        return Err(invalid_credentials());
    }
    let user = state
        .store
        .get_user(&creds.account_id, &creds.user_id)
        .await?
        .ok_or_else(|| ApiError::internal("signed-in user vanished"))?;
    let refresh = random_token();
    let session_id = state
        .store
        .create_session(
            &NewSession {
                account_id: &user.account_id,
                user_id: &user.id,
                ip: meta.ip.as_deref(),
                user_agent: meta.user_agent.as_deref(),
            },
            &hash_key(&refresh),
            refresh_expiry(&state),
        )
        .await?;
    let record = AuditRecord::new(
        Some(user.account_id.clone()),
        Actor::User(user.id.clone()),
        "auth.login",
        "session",
        Some(&session_id),
        &meta,
    )
    .after(json!({ "second_factor": second_factor }));
    state.store.append_audit(&record).await?;
    token_response(
        &state,
        &user,
        &session_id,
        refresh,
        delivery(input.refresh_in, &headers),
    )
}

/// Trade a refresh token (body or `sb_refresh` cookie) for a new access and refresh token.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body(content = RefreshRequest, description = "Optional when the `sb_refresh` cookie is sent"),
    responses(
        (status = 200, description = "Rotated; the new refresh token comes back the way the old one came", body = TokenResponse),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "`invalid_refresh_token`, `missing_refresh_token`, or `refresh_token_reused` (the whole session is revoked)", body = ErrorEnvelope),
        (status = 403, description = "The cookie was sent from another site (`Sec-Fetch-Site` or `Origin`): refused", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
    ),
)]
async fn refresh(
    State(state): State<AppState>,
    meta: ClientMeta,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        parse_json::<RefreshRequest>(&body)?.refresh_token
    };
    let (presented, how) = match from_body {
        Some(token) => (token, RefreshIn::Body),
        None if cross_site(&state, &headers) => {
            return Err(ApiError::Forbidden(
                "the refresh cookie is accepted only from the hub's own pages".into(),
            ));
        }
        None => (
            cookie_token(&headers).ok_or_else(|| {
                ApiError::unauthenticated(
                    "missing_refresh_token",
                    "send `refresh_token` in the body or the `sb_refresh` cookie",
                )
            })?,
            RefreshIn::Cookie,
        ),
    };
    let next = random_token();
    let rotation = state
        .store
        .rotate_refresh_token(
            &hash_key(&presented),
            &hash_key(&next),
            refresh_expiry(&state),
        )
        .await?;
    let refused = |e: ApiError| -> Result<Response, ApiError> {
        let response = e.into_response();
        Ok(match how {
            RefreshIn::Cookie => {
                with_header(response, header::SET_COOKIE, refresh_cookie(&state, None)?)
            }
            RefreshIn::Body => response,
        })
    };
    match rotation {
        Rotation::Rotated {
            session_id,
            user_id,
            account_id,
        } => {
            let user = state.store.get_user(&account_id, &user_id).await?;
            match user.filter(|u| u.active) {
                Some(user) => token_response(&state, &user, &session_id, next, how),
                None => {
                    state
                        .store
                        .revoke_session(&session_id, "user_inactive")
                        .await?;
                    refused(invalid_refresh())
                }
            }
        }
        Rotation::Reused {
            session_id,
            user_id,
            account_id,
        } => {
            tracing::warn!(session = %session_id, "Refresh token reused; session revoked.");
            let record = AuditRecord::new(
                Some(account_id),
                Actor::User(user_id),
                "auth.refresh_reuse_detected",
                "session",
                Some(&session_id),
                &meta,
            );
            state.store.append_audit(&record).await?;
            refused(ApiError::unauthenticated(
                "refresh_token_reused",
                "this refresh token was already used; the session has been revoked, sign in again",
            ))
        }
        Rotation::Invalid => refused(invalid_refresh()),
    }
}

fn cleared_cookie(state: &AppState, response: Response) -> Result<Response, ApiError> {
    Ok(with_header(
        response,
        header::SET_COOKIE,
        refresh_cookie(state, None)?,
    ))
}

/// End the current session (its access and refresh tokens stop working).
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    responses(
        (status = 204, description = "Signed out; the refresh cookie is cleared"),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key has no session", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn logout(State(state): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    user_of(&who)?;
    let session = who
        .session_id
        .as_deref()
        .ok_or_else(|| ApiError::Forbidden("an API key has no session".into()))?;
    state.store.revoke_session(session, "logout").await?;
    state
        .store
        .append_audit(&who.audit("auth.logout", "session", Some(session)))
        .await?;
    cleared_cookie(&state, StatusCode::NO_CONTENT.into_response())
}

/// End every session of the caller, on every device.
#[utoipa::path(
    post,
    path = "/v1/auth/logout-all",
    tag = "auth",
    responses(
        (status = 200, description = "Every session revoked", body = SessionsRevoked),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key has no sessions", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn logout_all(State(state): State<AppState>, who: Principal) -> Result<Response, ApiError> {
    let user_id = user_of(&who)?;
    let sessions_revoked = state
        .store
        .revoke_user_sessions(user_id, "logout_all")
        .await?;
    let record = who
        .audit("auth.logout_all", "user", Some(user_id))
        .after(json!({ "sessions_revoked": sessions_revoked }));
    state.store.append_audit(&record).await?;
    cleared_cookie(
        &state,
        Json(SessionsRevoked { sessions_revoked }).into_response(),
    )
}

/// The signed-in user: profile, role, grants and teams.
#[utoipa::path(
    get,
    path = "/v1/auth/me",
    tag = "auth",
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key is not a user", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn me(State(state): State<AppState>, who: Principal) -> Result<Json<MeResponse>, ApiError> {
    let user_id = user_of(&who)?;
    let user = state
        .store
        .get_user(&who.account_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the user"))?;
    Ok(Json(MeResponse {
        id: user.id,
        email: user.email,
        name: user.name,
        role: user.role,
        account_id: user.account_id,
        branch_id: user.branch_id,
        team_ids: user.team_ids,
        grants: who.grants.clone(),
        totp_enabled: user.totp_enabled,
        last_login_at: user.last_login_at,
    }))
}

/// Renames the field of `passwords::check_policy`'s error to the request's own field.
fn for_field(error: ApiError, field: &str) -> ApiError {
    match error {
        ApiError::Unprocessable { details, message } => {
            let rule = details
                .first()
                .and_then(|d| d["message"].as_str())
                .map(str::to_owned)
                .unwrap_or(message);
            ApiError::invalid_field(field, rule)
        }
        other => other,
    }
}

/// Change the caller's password; every other session of the user is revoked.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    request_body = PasswordChangeRequest,
    responses(
        (status = 200, description = "Changed; the other sessions are revoked", body = SessionsRevoked),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key has no password", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "`current_password` is wrong, or `new_password` breaks a rule (named in the message)", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller, or too many password checks from this address", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn change_password(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<Json<SessionsRevoked>, ApiError> {
    let user_id = user_of(&who)?;
    let input: PasswordChangeRequest = parse_json(&body)?;
    let current = own_password(
        &state,
        &who,
        user_id,
        input.current_password,
        "current_password",
    )
    .await?;
    passwords::check_policy(
        &input.new_password,
        state.config.auth.min_password_length,
        &current.email,
    )
    .map_err(|e| for_field(e, "new_password"))?;
    let hash = hash_password(input.new_password).await?;
    let record = who.audit("user.password_changed", "user", Some(user_id));
    let sessions_revoked = state
        .store
        .change_password(user_id, &hash, who.session_id.as_deref(), &record)
        .await?;
    Ok(Json(SessionsRevoked { sessions_revoked }))
}

/// Re-checks the signed-in user's own password before a change to how they sign in (a new
/// password, a second factor): a stolen access token alone must not be enough, nor become a
/// password-guessing oracle, so guesses count against the per-IP sign-in limit. A wrong one is
/// 422 naming `field`.
async fn own_password(
    state: &AppState,
    who: &Principal,
    user_id: &str,
    password: String,
    field: &str,
) -> Result<SecondFactor, ApiError> {
    let ip = who.meta.ip.clone().unwrap_or_else(|| "unknown".to_owned());
    state.limits.check_login(&ip).await?;
    let current = state
        .store
        .second_factor(user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the user"))?;
    if !verify_password(password, current.password_hash.clone()).await? {
        return Err(ApiError::invalid_field(field, "is wrong"));
    }
    Ok(current)
}

/// [`own_password`] with a `{"password"}` body.
async fn confirm_password(
    state: &AppState,
    who: &Principal,
    user_id: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    let input: PasswordConfirmation = parse_json(body)?;
    own_password(state, who, user_id, input.password, "password").await?;
    Ok(())
}

/// Start TOTP enrolment: a new secret, not yet enabled (replaces a pending one). Needs the
/// password again.
#[utoipa::path(
    post,
    path = "/v1/auth/totp/enrol",
    tag = "auth",
    request_body = PasswordConfirmation,
    responses(
        (status = 200, description = "The secret to put in an authenticator app; confirm with /v1/auth/totp/verify", body = TotpEnrolment),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key has no user", body = ErrorEnvelope),
        (status = 422, description = "Wrong password, or TOTP is already enabled", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn totp_enrol(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<Json<TotpEnrolment>, ApiError> {
    let user_id = user_of(&who)?;
    confirm_password(&state, &who, user_id, &body).await?;
    let current = state
        .store
        .second_factor(user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the user"))?;
    if current.totp_enabled {
        return Err(unprocessable(
            "TOTP is already enabled; disable it before enrolling again",
        ));
    }
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    let totp = totp(bytes.to_vec(), &current.email)?;
    let secret = totp.secret().to_base32();
    let otpauth_url = totp.to_url().map_err(ApiError::internal)?;
    if !state
        .store
        .set_pending_totp(user_id, &state.keys.sealer.seal(&secret))
        .await?
    {
        return Err(unprocessable(
            "TOTP is already enabled; disable it before enrolling again",
        ));
    }
    Ok(Json(TotpEnrolment {
        secret,
        otpauth_url,
    }))
}

/// Confirm enrolment with a first code: TOTP is enabled and backup codes are issued.
#[utoipa::path(
    post,
    path = "/v1/auth/totp/verify",
    tag = "auth",
    request_body = TotpCodeRequest,
    responses(
        (status = 200, description = "Enabled; the backup codes are shown only now", body = BackupCodes),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key has no user", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "Wrong code, nothing enrolled, or already enabled", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn totp_verify(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<Json<BackupCodes>, ApiError> {
    let user_id = user_of(&who)?;
    let input: TotpCodeRequest = parse_json(&body)?;
    let current = state
        .store
        .second_factor(user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("the user"))?;
    if current.totp_enabled {
        return Err(unprocessable("TOTP is already enabled"));
    }
    let sealed = current
        .totp_secret
        .as_deref()
        .ok_or_else(|| unprocessable("nothing to verify; call /v1/auth/totp/enrol first"))?;
    let step = check_totp(&open_totp(&state, sealed, &current.email)?, &input.code)
        .ok_or_else(|| ApiError::invalid_field("code", "is wrong or expired"))?;
    let codes: Vec<String> = (0..BACKUP_CODES).map(|_| new_backup_code()).collect();
    let hashes: Vec<String> = codes.iter().map(|c| backup_code_hash(c)).collect();
    let record = who.audit("auth.totp_enabled", "user", Some(user_id));
    match state
        .store
        .enable_totp(&current.account_id, user_id, sealed, step, &hashes, &record)
        .await?
    {
        TotpEnabled::Enabled => Ok(Json(BackupCodes {
            backup_codes: codes,
        })),
        TotpEnabled::NotPending => Err(unprocessable("TOTP is already enabled")),
    }
}

/// Turn TOTP off (confirmed with the password); the backup codes go with it.
#[utoipa::path(
    post,
    path = "/v1/auth/totp/disable",
    tag = "auth",
    request_body = PasswordConfirmation,
    responses(
        (status = 204, description = "Disabled"),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key has no user", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "Wrong password", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller, or too many password checks from this address", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn totp_disable(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<StatusCode, ApiError> {
    let user_id = user_of(&who)?;
    confirm_password(&state, &who, user_id, &body).await?;
    let record = who.audit("auth.totp_disabled", "user", Some(user_id));
    state.store.disable_totp(user_id, &record).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_codes_normalise() {
        let code = new_backup_code();
        assert_eq!(code.len(), 11);
        assert_eq!(
            backup_code_hash(&code),
            backup_code_hash(&code.to_uppercase().replace('-', " "))
        );
        assert_ne!(
            backup_code_hash(&code),
            backup_code_hash(&new_backup_code())
        );
    }

    #[test]
    fn totp_round_trip() {
        let t = totp(vec![7u8; 20], "ada@example.com").unwrap();
        assert!(
            t.to_url()
                .unwrap()
                .starts_with("otpauth://totp/Switchboard:")
        );
        assert!(check_totp(&t, &t.generate_current().to_string()).is_some());
        assert!(check_totp(&t, "000000x").is_none());
    }

    #[test]
    fn openapi_lists_every_route() {
        use utoipa::OpenApi;
        let doc = AuthApi::openapi();
        assert_eq!(doc.paths.paths.len(), 9);
        assert!(doc.paths.paths.contains_key("/v1/auth/totp/verify"));
        let schemas = doc.components.unwrap().schemas;
        assert!(schemas.contains_key("TokenResponse") && schemas.contains_key("LoginRequest"));
    }

    #[test]
    fn browsers_get_the_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(delivery(None, &h), RefreshIn::Body);
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert_eq!(delivery(None, &h), RefreshIn::Cookie);
        assert_eq!(delivery(Some(RefreshIn::Body), &h), RefreshIn::Body);
    }
}
