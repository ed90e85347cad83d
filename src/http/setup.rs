//! First run: the first administrator, created from the browser.
//!
//! A hub whose default account has no user yet mints a one-time setup token at start and prints
//! `Open <public_url>/#setup=<token>` on its standard output, where only whoever started it
//! sees it. `POST /v1/setup` with that token creates the first `super_admin` (the same checks
//! as `switchboard admin create`), once; after that the token is gone and the route answers
//! 409. Attempts count against the sign-in limit of the caller's address.

use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use super::{AppState, RawBody, parse_json};
use crate::access::ClientMeta;
use crate::auth::passwords;
use crate::error::{ApiError, ErrorEnvelope};

/// The node's setup token while the account has no user.
#[derive(Default)]
pub struct FirstRun {
    token: Mutex<Option<String>>,
}

impl FirstRun {
    /// Opens setup when `users` is zero, with the configured token or a random one; returns
    /// the token to be printed.
    pub fn open_if_empty(&self, users: i64, configured: &str) -> Option<String> {
        if users > 0 {
            return None;
        }
        let token = if configured.is_empty() {
            let mut bytes = [0u8; 18];
            rand::rng().fill_bytes(&mut bytes);
            URL_SAFE_NO_PAD.encode(bytes)
        } else {
            configured.to_owned()
        };
        *self.lock() = Some(token.clone());
        Some(token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.token.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the token if `presented` is it: one setup at a time, and only one ever.
    fn take(&self, presented: &str) -> Option<String> {
        let mut slot = self.lock();
        let matches = slot
            .as_deref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(presented.as_bytes())));
        if matches { slot.take() } else { None }
    }

    fn put_back(&self, token: String) {
        *self.lock() = Some(token);
    }

    fn open(&self) -> bool {
        self.lock().is_some()
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(setup_status, create_first_admin))]
pub struct SetupApi;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/setup", get(setup_status).post(create_first_admin))
}

#[derive(Debug, Serialize, ToSchema)]
struct SetupStatus {
    /// Whether this node is waiting for its first administrator (`POST /v1/setup`).
    needed: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SetupIn {
    /// The token the hub printed at start (`…/#setup=<token>`).
    token: String,
    email: String,
    name: String,
    /// Must pass the password policy.
    password: String,
}

#[derive(Debug, Serialize, ToSchema)]
struct SetupOut {
    user_id: String,
    email: String,
}

/// Whether the hub is waiting for its first administrator.
#[utoipa::path(
    get,
    path = "/v1/setup",
    tag = "auth",
    responses((status = 200, description = "Whether setup is open", body = SetupStatus)),
)]
async fn setup_status(State(state): State<AppState>) -> Json<SetupStatus> {
    Json(SetupStatus {
        needed: state.setup.open(),
    })
}

/// Create the first administrator with the token the hub printed at start.
#[utoipa::path(
    post,
    path = "/v1/setup",
    tag = "auth",
    request_body = SetupIn,
    responses(
        (status = 201, description = "The first `super_admin` exists; sign in with it", body = SetupOut),
        (status = 400, description = "The body is not valid JSON", body = ErrorEnvelope),
        (status = 401, description = "`invalid_setup_token`: not the token this node printed", body = ErrorEnvelope),
        (status = 409, description = "The hub already has its administrator", body = ErrorEnvelope),
        (status = 422, description = "A field does not fit (the email, the name, the password policy)", body = ErrorEnvelope),
        (status = 429, description = "Too many attempts from this address", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
)]
async fn create_first_admin(
    State(state): State<AppState>,
    meta: ClientMeta,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let ip = meta.ip.clone().unwrap_or_else(|| "unknown".to_owned());
    state.limits.check_login(&ip).await?;
    if !state.setup.open() {
        return Err(ApiError::conflict(
            "this hub already has its administrator: sign in",
        ));
    }
    let input: SetupIn = parse_json(&body)?;
    let email = input.email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 254 {
        return Err(ApiError::invalid_field("email", "must be an email address"));
    }
    if input.name.trim().is_empty() || input.name.chars().count() > 200 {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 200 characters",
        ));
    }
    passwords::check_policy(
        &input.password,
        state.config.auth.min_password_length,
        &email,
    )?;
    let Some(token) = state.setup.take(input.token.trim()) else {
        return Err(ApiError::unauthenticated(
            "invalid_setup_token",
            "that is not the setup token this hub printed when it started",
        ));
    };
    let store = &state.store;
    let created: anyhow::Result<Option<String>> = async {
        let account = store.ensure_account(&state.config.accounts.default).await?;
        if store.count_users(&account).await? > 0 {
            return Ok(None);
        }
        crate::auth::admin::create_admin(
            store,
            &state.config,
            &email,
            &input.name,
            &input.password,
            None,
        )
        .await
        .map(Some)
    }
    .await;
    match created {
        Ok(Some(user_id)) => {
            tracing::info!("The first administrator was created from the browser.");
            Ok((StatusCode::CREATED, Json(SetupOut { user_id, email })).into_response())
        }
        // Another node's setup (or the CLI) got there first: setup is over here too.
        Ok(None) => Err(ApiError::conflict(
            "this hub already has its administrator: sign in",
        )),
        Err(e) => {
            state.setup.put_back(token);
            Err(ApiError::internal(e))
        }
    }
}
