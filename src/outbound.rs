//! Outbound delivery (docs/OUTBOUND.md): the worker side of an agent's reply.
//!
//! The reply endpoint stores the message as `pending` with a delivery record and queues a
//! `DeliverOutbound` job. A worker claims the record, waits for the sender's pace, calls the
//! provider (connectors build the request and classify the answer), and records one of three
//! outcomes: `sent` (with the provider's id; status reports that beat the answer are applied
//! then), a retry at a time set by exponential backoff with full jitter (or the provider's
//! `Retry-After`, when longer), or dead — `failed` with the provider's code and reason, listed
//! under `/v1/admin/dead-letters` for an operator to replay. Every status move is a
//! `message.status` event.
//!
//! What a retry can and cannot promise: neither WhatsApp Cloud API nor Twilio's Messages API
//! takes an idempotency key on sends. A retry after a timeout or a 5xx (or after a worker died
//! mid-call) may therefore send a second copy when the provider had accepted the first; the
//! hub never drops such a message silently, and accepts that rare duplicate instead. Throttling
//! answers (WhatsApp 130429/131056, Twilio 20429) are documented as not processed, so their
//! retries cannot duplicate. WhatsApp sends carry our message id as `biz_opaque_callback_data`,
//! so a duplicate's status reports can still be told apart.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::Rng;
use secrecy::ExposeSecret;
use switchboard_connectors::{
    Channel, OutboundMessage, Retry, SendFailure, SendOutcome, twilio, whatsapp,
};
use switchboard_workers::{DeliverOutbound, OutboundPort, PortError, Queue};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, OutboundConfig};
use crate::ids;
use crate::inboxes::{InboxRuntime, Registry};
use crate::live::Events;
use crate::store::Store;
use crate::store::outbound::{Claimed, Transition};

/// A pacing wait up to this long is slept through; a longer one gives the slot back and the
/// delivery is due again when the pace allows.
const MAX_PACING_SLEEP: Duration = Duration::from_secs(2);
/// How often the sweep looks for due retries and lost jobs.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// The sender-side limits, per worker node (governor's GCRA, keyed by sender and recipient).
pub struct Pacing {
    whatsapp_number: DefaultKeyedRateLimiter<String>,
    whatsapp_pair: DefaultKeyedRateLimiter<String>,
    twilio_number: DefaultKeyedRateLimiter<String>,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Pacing {
    pub fn new(config: &OutboundConfig) -> Self {
        let pair = Quota::with_period(Duration::from_millis(config.whatsapp_pair_interval_ms))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(nonzero(config.whatsapp_pair_burst));
        Pacing {
            whatsapp_number: RateLimiter::keyed(Quota::per_second(nonzero(
                config.whatsapp_per_number_per_second,
            ))),
            whatsapp_pair: RateLimiter::keyed(pair),
            twilio_number: RateLimiter::keyed(Quota::per_second(nonzero(
                config.twilio_per_number_per_second,
            ))),
        }
    }

    /// The limits a message from `sender` to `recipient` must pass, in order. Each is waited
    /// for on its own: a slot taken from the first is kept while waiting for the next, not
    /// taken again on every look (which would spend a customer's pair allowance while waiting
    /// for the phone number's pace). The number's wait is at most one interval, under a second,
    /// so it never hands a delivery back and loses the pair slot.
    fn limits(&self, channel: Channel, sender: &str, recipient: &str) -> Vec<Limit<'_>> {
        match channel {
            Channel::Whatsapp => vec![
                Limit {
                    limiter: &self.whatsapp_pair,
                    key: format!("{sender}>{recipient}"),
                },
                Limit {
                    limiter: &self.whatsapp_number,
                    key: sender.to_owned(),
                },
            ],
            Channel::Sms => vec![Limit {
                limiter: &self.twilio_number,
                key: sender.to_owned(),
            }],
            Channel::Webchat => Vec::new(),
        }
    }

    /// Forgets idle keys.
    pub fn shrink(&self) {
        for limiter in [
            &self.whatsapp_number,
            &self.whatsapp_pair,
            &self.twilio_number,
        ] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// One keyed limit a delivery must pass.
struct Limit<'a> {
    limiter: &'a DefaultKeyedRateLimiter<String>,
    key: String,
}

impl Limit<'_> {
    /// `None` when the message may go now (and counts it), else how long to wait.
    fn wait(&self) -> Option<Duration> {
        let now = DefaultClock::default().now();
        self.limiter
            .check_key(&self.key)
            .err()
            .map(|not_until| not_until.wait_time_from(now))
    }
}

/// The delivery worker's port implementation.
pub struct Deliverer {
    pub store: Store,
    pub events: Events,
    pub registry: Arc<Registry>,
    pub config: Arc<Config>,
    pub http: reqwest::Client,
    pub pacing: Arc<Pacing>,
    /// Counts attempts for the `outbound_failure_ratio` alert signal.
    pub tally: Arc<crate::alerts::watch::Tally>,
}

/// The one HTTP client for provider calls, with the configured timeout.
pub fn http_client(config: &OutboundConfig) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(config.request_timeout_secs))
        .connect_timeout(Duration::from_secs(config.request_timeout_secs.min(10)))
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

fn transient(e: impl std::fmt::Display) -> PortError {
    PortError::Transient(e.to_string())
}

impl Deliverer {
    /// One attempt's provider call.
    async fn call(&self, inbox: &InboxRuntime, message: &OutboundMessage) -> SendOutcome {
        let out = &self.config.outbound;
        let provider_ref = inbox.provider_ref.as_deref().unwrap_or_default();
        let (base, request, auth) = match inbox.channel {
            Channel::Whatsapp => {
                let Some(token) = &inbox.access_token else {
                    return config_failure("the WhatsApp inbox has no access_token");
                };
                let request =
                    whatsapp::send_request(&out.whatsapp_api_version, provider_ref, message);
                (
                    &out.whatsapp_base_url,
                    request,
                    Auth::Bearer(token.expose_secret().to_owned()),
                )
            }
            Channel::Sms => {
                let (Some(sid), Some(token)) =
                    (&inbox.twilio_account_sid, &inbox.twilio_auth_token)
                else {
                    return config_failure(
                        "the SMS inbox needs twilio_account_sid and twilio_auth_token",
                    );
                };
                let callback = format!(
                    "{}/webhooks/twilio/{}/status",
                    self.config.server.public_url, inbox.slug
                );
                let request = twilio::send_request(sid, provider_ref, Some(&callback), message);
                (
                    &out.twilio_base_url,
                    request,
                    Auth::Basic(sid.clone(), token.expose_secret().to_owned()),
                )
            }
            Channel::Webchat => {
                return SendOutcome::Failed(SendFailure {
                    code: "not_a_provider_channel".to_owned(),
                    reason: "Web chat replies are not sent through a provider.".to_owned(),
                    retry: Retry::Permanent,
                });
            }
        };
        let builder = self
            .http
            .post(format!("{base}{}", request.path_and_query))
            .header(reqwest::header::CONTENT_TYPE, request.content_type)
            .body(request.body);
        let builder = match auth {
            Auth::Bearer(token) => builder.bearer_auth(token),
            Auth::Basic(user, password) => builder.basic_auth(user, Some(password)),
        };
        let (status, retry_after, body) = match exchange(builder).await {
            Ok(answer) => answer,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        match inbox.channel {
            Channel::Whatsapp => whatsapp::send_outcome(status, retry_after.as_deref(), &body),
            _ => twilio::send_outcome(status, retry_after.as_deref(), &body),
        }
    }

    fn backoff(&self, attempt: i64, after: Option<Duration>) -> Duration {
        let out = &self.config.outbound;
        backoff(out.retry_base_ms, out.retry_max_secs, attempt, after)
    }

    async fn publish(&self, account_id: &str, moves: &[Transition]) {
        for t in moves {
            self.events
                .publish(account_id, "message.status", status_event(t))
                .await;
        }
    }

    async fn fail(
        &self,
        claimed: &Claimed,
        channel: Channel,
        failure: &SendFailure,
    ) -> Result<(), PortError> {
        let max = i64::from(self.config.outbound.max_attempts);
        let retry_at = match failure.retry {
            Retry::Transient { after } if claimed.attempt < max => {
                let delay = self.backoff(claimed.attempt, after);
                Some(ids::now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2))
            }
            _ => None,
        };
        let outcome = if retry_at.is_some() { "retry" } else { "dead" };
        metrics::counter!("switchboard_outbound_attempts_total", "channel" => channel.as_str(), "outcome" => outcome).increment(1);
        let provider = provider_scope(channel);
        self.tally.count(
            &claimed.account_id,
            crate::alerts::watch::OUTBOUND_FAILED,
            provider.as_deref(),
        );
        let refused_credentials = match channel {
            Channel::Whatsapp => whatsapp::send::credentials_rejected(&failure.code),
            Channel::Sms => twilio::send::credentials_rejected(&failure.code),
            Channel::Webchat => false,
        };
        if refused_credentials {
            self.tally.count(
                &claimed.account_id,
                crate::alerts::watch::CREDENTIALS_REJECTED,
                provider.as_deref(),
            );
        }
        if retry_at.is_some() {
            info!(message = %claimed.message_id, attempt = claimed.attempt, code = %failure.code, "Delivery failed; retrying.");
        } else {
            warn!(message = %claimed.message_id, attempt = claimed.attempt, code = %failure.code, reason = %failure.reason, "Delivery given up; dead-lettered.");
        }
        let moved = self
            .store
            .delivery_failed(claimed, &failure.code, &failure.reason, retry_at)
            .await
            .map_err(transient)?;
        self.publish(&claimed.account_id, moved.as_slice()).await;
        Ok(())
    }
}

/// The alert scope of the provider a channel sends through (`provider:whatsapp`); none for
/// web chat, which no provider carries.
fn provider_scope(channel: Channel) -> Option<String> {
    let provider = match channel {
        Channel::Whatsapp => "whatsapp",
        Channel::Sms => "twilio",
        Channel::Webchat => return None,
    };
    Some(crate::alerts::Dimension::Provider.scope(provider))
}

enum Auth {
    Bearer(String),
    Basic(String, String),
}

fn config_failure(reason: &str) -> SendOutcome {
    SendOutcome::Failed(SendFailure {
        code: "inbox_not_configured".to_owned(),
        reason: format!("Cannot send: {reason}."),
        retry: Retry::Permanent,
    })
}

/// The `message.status` event's data. Every published transition is built here, so this is
/// also where transitions are counted (`switchboard_message_status_total`).
pub fn status_event(t: &Transition) -> serde_json::Value {
    metrics::counter!("switchboard_message_status_total", "status" => t.status.as_str())
        .increment(1);
    let error = t
        .error
        .as_deref()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok());
    serde_json::json!({
        "message_id": t.message_id,
        "conversation_id": t.conversation_id,
        "status": t.status.as_str(),
        "error": error,
    })
}

#[async_trait]
impl OutboundPort for Deliverer {
    async fn deliver(&self, message_id: &str) -> Result<(), PortError> {
        let Some(claimed) = self
            .store
            .claim_delivery(message_id)
            .await
            .map_err(transient)?
        else {
            return Ok(());
        };
        let inbox = self.registry.inbox_by_id(&claimed.inbox_id);
        let message = serde_json::from_str::<OutboundMessage>(&claimed.request);
        let (inbox, message) = match (inbox, message) {
            (Some(inbox), Ok(message)) => (inbox, message),
            (None, _) => {
                let failure = SendFailure {
                    code: "inbox_gone".to_owned(),
                    reason: "The inbox this reply belongs to no longer exists.".to_owned(),
                    retry: Retry::Permanent,
                };
                return self.fail(&claimed, Channel::Webchat, &failure).await;
            }
            (Some(inbox), Err(e)) => {
                let failure = SendFailure {
                    code: "bad_request_record".to_owned(),
                    reason: format!("The stored request cannot be read: {e}"),
                    retry: Retry::Permanent,
                };
                return self.fail(&claimed, inbox.channel, &failure).await;
            }
        };
        let sender = inbox.provider_ref.as_deref().unwrap_or_default();
        for limit in self.pacing.limits(inbox.channel, sender, &message.to) {
            loop {
                match limit.wait() {
                    None => break,
                    Some(wait) if wait <= MAX_PACING_SLEEP => tokio::time::sleep(wait).await,
                    Some(wait) => {
                        metrics::counter!("switchboard_outbound_paced_total", "channel" => inbox.channel.as_str()).increment(1);
                        let due = ids::now_ms() + i64::try_from(wait.as_millis()).unwrap_or(0);
                        return self
                            .store
                            .defer_delivery(&claimed.message_id, due)
                            .await
                            .map_err(transient);
                    }
                }
            }
        }
        let started = std::time::Instant::now();
        let outcome = self.call(&inbox, &message).await;
        metrics::histogram!("switchboard_outbound_call_seconds", "channel" => inbox.channel.as_str())
            .record(started.elapsed().as_secs_f64());
        match outcome {
            SendOutcome::Accepted {
                provider_message_id,
                ..
            } => {
                metrics::counter!("switchboard_outbound_attempts_total", "channel" => inbox.channel.as_str(), "outcome" => "sent").increment(1);
                self.tally.count(
                    &claimed.account_id,
                    crate::alerts::watch::OUTBOUND_SENT,
                    provider_scope(inbox.channel).as_deref(),
                );
                let moves = self
                    .store
                    .delivery_sent(&claimed, inbox.channel.as_str(), &provider_message_id)
                    .await
                    .map_err(transient)?;
                self.publish(&claimed.account_id, &moves).await;
                Ok(())
            }
            SendOutcome::Failed(failure) => self.fail(&claimed, inbox.channel, &failure).await,
        }
    }
}

/// Sends a provider request and reads its answer: the status, the `Retry-After` header and the
/// body. No answer at all is a [`SendFailure`] (timeout or unreachable), for the caller to
/// retry like a transient error.
pub async fn exchange(
    request: reqwest::RequestBuilder,
) -> Result<(u16, Option<String>, bytes::Bytes), SendFailure> {
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            SendFailure::timeout()
        } else {
            SendFailure::unreachable(e.without_url())
        }
    };
    let response = request.send().await.map_err(failed)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await.map_err(failed)?;
    Ok((status, retry_after, body))
}

/// The delay before attempt `attempt + 1`: full jitter over a ceiling that doubles from
/// `base_ms` up to `max_secs`, or what the other side asked (`Retry-After`) when that is longer.
pub fn backoff(base_ms: u64, max_secs: u64, attempt: i64, after: Option<Duration>) -> Duration {
    let shift = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let ceiling = Duration::from_millis(base_ms.saturating_mul(1 << shift))
        .min(Duration::from_secs(max_secs));
    let jittered = ceiling.mul_f64(rand::rng().random_range(0.0..=1.0));
    after.map_or(jittered, |asked| asked.max(jittered))
}

/// Queues what is due: retries whose time has come, and deliveries whose job was lost (queued
/// or in flight for longer than a call can take).
pub async fn sweep(store: Store, queue: Queue, config: Arc<Config>, shutdown: CancellationToken) {
    let stale = Duration::from_secs(config.outbound.request_timeout_secs * 2 + 30);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        let now = ids::now_ms();
        let stale_before = now - i64::try_from(stale.as_millis()).unwrap_or(0);
        match store.due_deliveries(now, stale_before, 500).await {
            Ok(due) if due.is_empty() => {}
            Ok(due) => {
                let jobs = due.into_iter().map(DeliverOutbound::new).collect();
                if let Err(e) = queue.enqueue_deliveries(jobs).await {
                    warn!(error = %e, "Could not queue due deliveries; they stay due.");
                }
            }
            Err(e) => warn!(error = %e, "The delivery sweep could not read the store."),
        }
    }
}
