//! Rate limits (governor's GCRA token buckets), answered with 429, `Retry-After` and
//! `X-RateLimit-Limit`/`-Remaining`:
//!
//! - per client IP on webhooks and the public web-chat endpoints (in-process: each node
//!   protects itself, and a provider's retries spread over nodes anyway);
//! - per user or API key on the REST API (in-process);
//! - per client IP on sign-in. This one must hold across nodes, or an attacker would get N
//!   times the attempts by spreading them over N nodes, so in the distributed mode it is a
//!   fixed one-minute window counted in Redis (`INCR` + `PEXPIRE` in one script).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::access::{ClientMeta, Principal};
use crate::config::RateLimitConfig;
use crate::error::ApiError;
use crate::http::AppState;
use crate::ids;

pub struct Limits {
    api: DefaultKeyedRateLimiter<String>,
    api_per_second: u32,
    webhooks: DefaultKeyedRateLimiter<String>,
    webhooks_per_second: u32,
    login: LoginLimiter,
    login_per_minute: u32,
}

enum LoginLimiter {
    Memory(DefaultKeyedRateLimiter<String>),
    Redis {
        conn: redis::aio::ConnectionManager,
        prefix: String,
    },
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    /// `redis`: the connection and key prefix in the distributed mode.
    pub fn new(
        config: &RateLimitConfig,
        redis: Option<(redis::aio::ConnectionManager, String)>,
    ) -> Self {
        let login = match redis {
            Some((conn, prefix)) => LoginLimiter::Redis { conn, prefix },
            None => LoginLimiter::Memory(RateLimiter::keyed(Quota::per_minute(nz(
                config.login_per_minute
            )))),
        };
        Limits {
            api: RateLimiter::keyed(Quota::per_second(nz(config.api_per_second))),
            api_per_second: config.api_per_second,
            webhooks: RateLimiter::keyed(Quota::per_second(nz(config.webhooks_per_second))),
            webhooks_per_second: config.webhooks_per_second,
            login,
            login_per_minute: config.login_per_minute,
        }
    }

    /// One REST request by this principal.
    pub fn check_api(&self, who: &Principal) -> Result<(), ApiError> {
        let key = who.actor.id().unwrap_or("anonymous").to_owned();
        check_keyed(&self.api, &key, self.api_per_second)
    }

    /// One webhook or public web-chat request from this address.
    pub fn check_webhook(&self, ip: &str) -> Result<(), ApiError> {
        check_keyed(&self.webhooks, ip, self.webhooks_per_second)
    }

    /// One sign-in attempt from this address.
    pub async fn check_login(&self, ip: &str) -> Result<(), ApiError> {
        match &self.login {
            LoginLimiter::Memory(limiter) => check_keyed(limiter, ip, self.login_per_minute),
            LoginLimiter::Redis { conn, prefix } => {
                let now = ids::now_ms();
                let window = now / 60_000;
                let key = format!("{prefix}ratelimit:login:{ip}:{window}");
                let script = redis::Script::new(
                    "local n = redis.call('INCR', KEYS[1]) \
                     if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n",
                );
                let mut conn = conn.clone();
                let count: u64 = script
                    .key(&key)
                    .arg(61_000)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| ApiError::Unavailable(format!("redis: {e}")))?;
                let limit = u64::from(self.login_per_minute);
                if count > limit {
                    let retry_ms = (window + 1) * 60_000 - now;
                    return Err(ApiError::RateLimited {
                        retry_after_secs: (retry_ms as u64).div_ceil(1000).max(1),
                        limit: self.login_per_minute,
                    });
                }
                Ok(())
            }
        }
    }

    /// Forgets idle keys so the in-process tables do not grow without bound.
    pub fn shrink(&self) {
        self.api.retain_recent();
        self.webhooks.retain_recent();
        if let LoginLimiter::Memory(l) = &self.login {
            l.retain_recent();
        }
    }
}

fn check_keyed(
    limiter: &DefaultKeyedRateLimiter<String>,
    key: &str,
    limit: u32,
) -> Result<(), ApiError> {
    let key = key.to_owned();
    limiter.check_key(&key).map(|_| ()).map_err(|not_until| {
        let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::RateLimited {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            limit,
        }
    })
}

/// Middleware for the unauthenticated provider and visitor routes: per-IP limit.
pub async fn per_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let meta = ClientMeta::from_parts(&parts, state.config.rate_limits.trust_forwarded_for);
    let ip = meta
        .ip
        .unwrap_or_else(|| IpAddr::from([0, 0, 0, 0]).to_string());
    if let Err(e) = state.limits.check_webhook(&ip) {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}
