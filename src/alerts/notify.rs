//! Delivering notices to Slack and PagerDuty. The store is the queue: each notice is a row in
//! `alert_deliveries`, claimed by one sender at a time, so notices survive restarts and a
//! sender that dies mid-call leaves its claim to go stale and be taken again. Each row ends
//! `sent`, `broken` (the destination refused it for good, and says why) or `failed` (out of
//! attempts); until then it is `due` at its next attempt.
//!
//! Slack takes one message per second per webhook URL: a governor limiter per URL paces the
//! sender on this node (a notice that would wait longer than a moment is put back as due).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use switchboard_connectors::alerts::{Notice, pagerduty, slack};
use switchboard_connectors::{ProviderRequest, SendFailure};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::ids;
use crate::store::Store;
use crate::store::alerts::ClaimedNotice;

/// How often due retries are looked for when nothing wakes the sender.
const POLL: Duration = Duration::from_millis(250);
/// A claim older than this belongs to a sender that died.
const STALE: Duration = Duration::from_secs(60);
/// A notice waits at most this long for Slack's pace before it is put back.
const MAX_PACE_WAIT: Duration = Duration::from_secs(2);

enum Target {
    Slack { url: String },
    PagerDuty { routing_key: String },
}

pub struct Sender {
    store: Store,
    http: reqwest::Client,
    /// (account id, destination name) → where it goes.
    targets: HashMap<(String, String), Target>,
    pagerduty_base_url: String,
    max_attempts: i64,
    retry_base_ms: u64,
    retry_max_secs: u64,
    slack_pace: DefaultKeyedRateLimiter<String>,
    pub wake: Arc<Notify>,
}

impl Sender {
    pub async fn new(store: Store, config: &Config, wake: Arc<Notify>) -> anyhow::Result<Self> {
        let alerts = &config.alerts;
        let mut targets = HashMap::new();
        for d in &alerts.destinations {
            let account = store.ensure_account(config.account_of(&d.account)).await?;
            let secret = |s: &Option<secrecy::SecretString>| {
                s.as_ref()
                    .map(|s| s.expose_secret().to_owned())
                    .unwrap_or_default()
            };
            let target = if d.kind == "slack" {
                Target::Slack {
                    url: secret(&d.url),
                }
            } else {
                Target::PagerDuty {
                    routing_key: secret(&d.routing_key),
                }
            };
            targets.insert((account, d.name.clone()), target);
        }
        Ok(Sender {
            store,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
                .build()?,
            targets,
            pagerduty_base_url: alerts.pagerduty_base_url.trim_end_matches('/').to_owned(),
            max_attempts: i64::from(alerts.max_attempts),
            retry_base_ms: alerts.retry_base_ms,
            retry_max_secs: alerts.retry_max_secs,
            slack_pace: RateLimiter::keyed(Quota::per_second(NonZeroU32::MIN)),
            wake,
        })
    }

    /// Sends what is due until `shutdown`: woken by the evaluator, and every `POLL` for retries.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.targets.is_empty() {
            return;
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            let now = ids::now_ms();
            let stale = now - i64::try_from(STALE.as_millis()).unwrap_or(0);
            match self.store.claim_notices(now, stale, 50).await {
                Ok(claimed) => {
                    for notice in claimed {
                        if let Err(e) = self.attempt(&notice).await {
                            warn!(delivery = %notice.id, error = %e, "Could not record a notice's outcome; its claim will go stale and be retried.");
                        }
                    }
                }
                Err(e) => warn!(error = %e, "Could not read due alert notices."),
            }
        }
    }

    /// One attempt at one notice, and its outcome recorded.
    async fn attempt(&self, claimed: &ClaimedNotice) -> anyhow::Result<()> {
        let Some(target) = self
            .targets
            .get(&(claimed.account_id.clone(), claimed.destination.clone()))
        else {
            return Ok(self
                .store
                .notice_outcome(
                    &claimed.id,
                    "broken",
                    ids::now_ms(),
                    Some("unknown_destination"),
                    Some("The destination is no longer configured."),
                )
                .await?);
        };
        let notice: Notice = serde_json::from_str(&claimed.notice)?;
        let (url, request, kind) = match target {
            Target::Slack { url } => {
                let now = DefaultClock::default().now();
                if let Err(not_until) = self.slack_pace.check_key(url) {
                    let wait = not_until.wait_time_from(now);
                    if wait > MAX_PACE_WAIT {
                        // Not an attempt: give it back, due when the pace allows.
                        let due = ids::now_ms() + i64::try_from(wait.as_millis()).unwrap_or(0);
                        return Ok(self
                            .store
                            .notice_outcome(&claimed.id, "due", due, None, None)
                            .await?);
                    }
                    tokio::time::sleep(wait).await;
                    self.slack_pace.check_key(url).ok();
                }
                (url.clone(), slack::request(&notice), "slack")
            }
            Target::PagerDuty { routing_key } => {
                let request = pagerduty::request(routing_key, &notice);
                (
                    format!("{}{}", self.pagerduty_base_url, request.path_and_query),
                    request,
                    "pagerduty",
                )
            }
        };
        let outcome = self.call(&url, request, kind).await;
        let result = if outcome.is_ok() { "sent" } else { "failed" };
        metrics::counter!("switchboard_alert_notices_total", "destination" => kind, "outcome" => result)
            .increment(1);
        let now = ids::now_ms();
        match outcome {
            Ok(()) => {
                info!(delivery = %claimed.id, destination = %claimed.destination, key = %notice.key, "Alert notice sent.");
                self.store
                    .notice_outcome(&claimed.id, "sent", now, None, None)
                    .await?;
            }
            Err(f) if f.is_transient() && claimed.attempt < self.max_attempts => {
                let after = match f.retry {
                    switchboard_connectors::Retry::Transient { after } => after,
                    switchboard_connectors::Retry::Permanent => None,
                };
                let delay = crate::outbound::backoff(
                    self.retry_base_ms,
                    self.retry_max_secs,
                    claimed.attempt,
                    after,
                );
                let due = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                warn!(delivery = %claimed.id, code = %f.code, "Alert notice not delivered; will retry.");
                self.store
                    .notice_outcome(&claimed.id, "due", due, Some(&f.code), Some(&f.reason))
                    .await?;
            }
            Err(f) => {
                let state = if f.is_transient() { "failed" } else { "broken" };
                warn!(delivery = %claimed.id, destination = %claimed.destination, code = %f.code, reason = %f.reason, "Alert notice given up on.");
                self.store
                    .notice_outcome(&claimed.id, state, now, Some(&f.code), Some(&f.reason))
                    .await?;
            }
        }
        Ok(())
    }

    async fn call(
        &self,
        url: &str,
        request: ProviderRequest,
        kind: &str,
    ) -> Result<(), SendFailure> {
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, request.content_type)
            .body(request.body);
        let (status, retry_after, body) = crate::outbound::exchange(request).await?;
        if kind == "slack" {
            slack::outcome(status, retry_after.as_deref(), &body)
        } else {
            pagerduty::outcome(status, retry_after.as_deref(), &body)
        }
    }
}
