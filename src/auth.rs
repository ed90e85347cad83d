//! API keys: minting, hashing, and the extractor that turns `Authorization: Bearer <key>` into
//! a principal scoped to one account.
//!
//! Keys are 160 random bits, so a plain SHA-256 of the key is a safe lookup hash (argon2 is for
//! low-entropy passwords). The key is shown once, at creation; only its hash and a short prefix
//! for recognition are stored.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::http::AppState;
use crate::http::webchat::bearer;
use crate::store::accounts::ApiKeyPrincipal;

/// The five built-in roles (custom roles arrive with the access-control work).
pub const ROLES: [&str; 5] = [
    "super_admin",
    "operations",
    "team_lead",
    "agent",
    "branch_manager",
];

pub struct MintedKey {
    pub key: String,
    pub prefix: String,
    pub hash: String,
}

pub fn mint_key() -> MintedKey {
    let mut rng = rand::rng();
    let prefix = Alphanumeric.sample_string(&mut rng, 8).to_ascii_lowercase();
    let secret = Alphanumeric.sample_string(&mut rng, 32);
    let key = format!("sbk_{prefix}_{secret}");
    MintedKey {
        hash: hash_key(&key),
        prefix,
        key,
    }
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// An authenticated API caller. Every query it makes is filtered by `account_id`.
pub struct Principal(pub ApiKeyPrincipal);

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthenticated(
                "missing_credentials",
                "send an API key as `Authorization: Bearer <key>`",
            )
        })?;
        if !key.starts_with("sbk_") {
            return Err(invalid());
        }
        state
            .store
            .authenticate_api_key(&hash_key(key))
            .await?
            .map(Principal)
            .ok_or_else(invalid)
    }
}

fn invalid() -> ApiError {
    ApiError::unauthenticated(
        "invalid_api_key",
        "the API key is unknown, revoked or expired",
    )
}
