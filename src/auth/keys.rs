//! API keys: minting, hashing, and the extractor that turns `Authorization: Bearer <key>` into
//! a principal scoped to one account.
//!
//! Keys are 160 random bits, so a plain SHA-256 of the key is a safe lookup hash (argon2 is for
//! low-entropy passwords). The key is shown once, at creation; only its hash and a short prefix
//! for recognition are stored.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use crate::access::{ClientMeta, Principal};
use crate::error::ApiError;
use crate::http::AppState;
use crate::store::audit::Actor;

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

/// Turns a bearer API key into a principal: a live key of an account, with its role's grants.
pub async fn authenticate(
    state: &AppState,
    key: &str,
    meta: ClientMeta,
) -> Result<Principal, ApiError> {
    let key = state
        .store
        .authenticate_api_key(&hash_key(key))
        .await?
        .ok_or_else(invalid)?;
    let grants = state
        .store
        .role_grants(&key.account_id, &key.role)
        .await?
        .unwrap_or_default();
    Ok(Principal {
        account_id: key.account_id,
        actor: Actor::ApiKey(key.key_id),
        role: key.role,
        grants,
        user_id: None,
        branch_id: None,
        session_id: None,
        meta,
    })
}

fn invalid() -> ApiError {
    ApiError::unauthenticated(
        "invalid_api_key",
        "the API key is unknown, revoked or expired",
    )
}
