//! Access tokens: HS256 JWTs of `auth.access_token_ttl_secs` (15 minutes by default) naming the
//! user, the account and the sign-in session. Every request re-checks the session and the
//! user, so logout, deactivation and breach detection take effect on the next request, not
//! when the token expires.

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::access::{ClientMeta, Principal};
use crate::crypto::Keys;
use crate::error::ApiError;
use crate::http::AppState;
use crate::ids;
use crate::store::audit::Actor;

pub const AUDIENCE: &str = "switchboard-api";
pub const ISSUER: &str = "switchboard";

#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub acc: String,
    pub sid: String,
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

/// Signs an access token; returns it with its expiry (Unix seconds).
pub fn issue(
    keys: &Keys,
    ttl_secs: u64,
    user_id: &str,
    account_id: &str,
    session_id: &str,
) -> Result<(String, i64), ApiError> {
    let now = ids::now_ms() / 1000;
    let exp = now + ttl_secs as i64;
    let claims = AccessClaims {
        sub: user_id.to_owned(),
        acc: account_id.to_owned(),
        sid: session_id.to_owned(),
        aud: AUDIENCE.to_owned(),
        iss: ISSUER.to_owned(),
        iat: now,
        exp,
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.jwt_encoding)
        .map_err(ApiError::internal)?;
    Ok((token, exp))
}

/// Verifies signature, algorithm, audience, issuer and expiry (no leeway).
pub fn verify(keys: &Keys, token: &str) -> Result<AccessClaims, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<AccessClaims>(token, &keys.jwt_decoding, &validation)
        .map(|data| data.claims)
        .map_err(|e| {
            let expired = matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature);
            if expired {
                ApiError::unauthenticated(
                    "token_expired",
                    "the access token has expired; refresh it",
                )
            } else {
                invalid()
            }
        })
}

fn invalid() -> ApiError {
    ApiError::unauthenticated(
        "invalid_token",
        "the access token is invalid or has been revoked",
    )
}

/// Turns a bearer access token into a principal: valid signature and claims, a live session, an
/// active user, and a role that still exists.
pub async fn authenticate(
    state: &AppState,
    token: &str,
    meta: ClientMeta,
) -> Result<Principal, ApiError> {
    let claims = verify(&state.keys, token)?;
    session_principal(state, &claims.acc, &claims.sub, &claims.sid, meta).await
}

/// The principal of a live sign-in session (what a verified token, or a WebSocket ticket it
/// minted, names): the session not revoked, the user active, the role's grants.
pub async fn session_principal(
    state: &AppState,
    account_id: &str,
    user_id: &str,
    session_id: &str,
    meta: ClientMeta,
) -> Result<Principal, ApiError> {
    let user = state
        .store
        .session_user(user_id, session_id)
        .await?
        .filter(|u| u.account_id == account_id && u.active && !u.session_revoked)
        .ok_or_else(invalid)?;
    let grants = state
        .store
        .role_grants(&user.account_id, &user.role)
        .await?
        .unwrap_or_default();
    Ok(Principal {
        account_id: user.account_id,
        actor: Actor::User(user.user_id.clone()),
        role: user.role,
        grants,
        user_id: Some(user.user_id),
        branch_id: user.branch_id,
        session_id: Some(session_id.to_owned()),
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let keys = Keys::from_master(b"0123456789abcdef0123456789abcdef");
        let (token, _) = issue(&keys, 900, "usr_1", "acc_1", "ses_1").unwrap();
        let claims = verify(&keys, &token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.sid.as_str()),
            ("usr_1", "ses_1")
        );

        let other = Keys::from_master(b"another-master-key-of-32-chars!!");
        assert!(verify(&other, &token).is_err(), "wrong key");

        let mut tampered = token.clone();
        tampered.insert(tampered.len() - 3, 'x');
        assert!(verify(&keys, &tampered).is_err(), "tampered");

        let wrong_aud = AccessClaims {
            sub: "usr_1".into(),
            acc: "acc_1".into(),
            sid: "ses_1".into(),
            aud: "someone-else".into(),
            iss: ISSUER.into(),
            iat: 0,
            exp: ids::now_ms() / 1000 + 600,
        };
        let t = jsonwebtoken::encode(&Header::default(), &wrong_aud, &keys.jwt_encoding).unwrap();
        assert!(verify(&keys, &t).is_err(), "wrong audience");

        let expired = AccessClaims {
            aud: AUDIENCE.into(),
            exp: ids::now_ms() / 1000 - 5,
            ..wrong_aud
        };
        let t = jsonwebtoken::encode(&Header::default(), &expired, &keys.jwt_encoding).unwrap();
        let err = verify(&keys, &t).unwrap_err();
        assert!(matches!(
            err,
            ApiError::Unauthenticated {
                code: "token_expired",
                ..
            }
        ));
    }
}
