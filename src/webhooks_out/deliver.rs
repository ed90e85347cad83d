//! The worker side of outbound webhooks, run by every worker node. The store is the queue:
//!
//! - The tailer reads each enabled endpoint's account log past its cursor and, for the events
//!   the endpoint subscribes to, inserts one delivery row each, moving the cursor in the same
//!   transaction (compare-and-set; see `store::webhooks_out`). A node that dies mid-way leaves
//!   the cursor where it was, and the next round does the work: at least once, never twice.
//! - The sender claims due deliveries (a claim older than the request timeout belongs to a
//!   dead sender and is taken again), signs and POSTs each, and records the outcome: a 2xx in
//!   time succeeds; anything else is retried after the schedule's next delay (or the
//!   receiver's `Retry-After`, when longer, up to a day), and after the last it is failed.
//!   A run of failed deliveries disables the endpoint and counts for the
//!   `webhook_endpoints_disabled` alert signal.
//!
//! Every attempt checks the URL with the SSRF guard again, and the HTTP client resolves names
//! through the guard, so a name that turned private after it was saved is refused at connect
//! time. Redirects are not followed (they could lead anywhere); a receiver's answer is read up
//! to `webhooks_out.max_response_bytes` and the rest is never read.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::alerts::watch::{Tally, WEBHOOK_ENDPOINTS_DISABLED};
use crate::config::Config;
use crate::crypto::Keys;
use crate::ids;
use crate::ssrf::{Guard, GuardedResolver};
use crate::store::Store;
use crate::store::webhooks_out::{AttemptOutcome, Behind, ClaimedDelivery, Queued};

/// Events one tailer round reads per endpoint.
const TAIL_BATCH: i64 = 500;
/// Finished deliveries are kept this long (for the list and replays), then pruned hourly.
const KEEP_MS: i64 = 30 * 24 * 60 * 60 * 1000;
const PRUNE_EVERY_MS: i64 = 60 * 60 * 1000;
/// How long shutdown waits for attempts in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// What one attempt got back: status, `Retry-After` and the start of the body.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

pub struct Worker {
    store: Store,
    keys: Arc<Keys>,
    tally: Arc<Tally>,
    http: reqwest::Client,
    guard: Arc<Guard>,
    schedule: Vec<u64>,
    max_body: usize,
    disable_after: i64,
    poll: Duration,
    stale_ms: i64,
    permits: Arc<Semaphore>,
}

/// The HTTP client of outbound webhooks: the request timeout covers the whole exchange, names
/// resolve through the SSRF guard, redirects are not followed.
pub fn client(config: &Config, guard: Arc<Guard>) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_millis(
            config.webhooks_out.request_timeout_ms,
        ))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver(guard)))
        .user_agent(concat!("switchboard-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

impl Worker {
    pub fn new(
        store: Store,
        config: &Config,
        keys: Arc<Keys>,
        tally: Arc<Tally>,
    ) -> anyhow::Result<Self> {
        let w = &config.webhooks_out;
        let guard = Arc::new(Guard::new(&w.allowed_hosts).map_err(anyhow::Error::msg)?);
        Ok(Worker {
            store,
            keys,
            tally,
            http: client(config, guard.clone())?,
            guard,
            schedule: w.schedule_ms.clone(),
            max_body: w.max_response_bytes,
            disable_after: i64::from(w.disable_after_failures),
            poll: Duration::from_millis(w.poll_ms),
            stale_ms: i64::try_from(w.request_timeout_ms).unwrap_or(i64::MAX / 2) + 30_000,
            permits: Arc::new(Semaphore::new(w.concurrency)),
        })
    }

    /// Tails and sends every `poll_ms` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let mut pruned_at = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.poll) => {}
            }
            if let Err(e) = self.tail().await {
                warn!(error = %e, "Could not queue webhook deliveries; trying again next round.");
            }
            self.send_due(&tracker).await;
            let now = ids::now_ms();
            if now - pruned_at > PRUNE_EVERY_MS {
                pruned_at = now;
                match self.store.prune_webhook_deliveries(now - KEEP_MS).await {
                    Ok(0) => {}
                    Ok(n) => info!(deliveries = n, "Pruned finished webhook deliveries."),
                    Err(e) => warn!(error = %e, "Could not prune webhook deliveries."),
                }
            }
        }
        // Attempts in flight get a moment to finish; one still waiting on its receiver is left
        // behind, and its claim goes stale and is taken again (at least once).
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!("Some webhook attempts were still in flight at shutdown; they will be retried.");
        }
    }

    /// One tailer round over the endpoints whose account log moved past their cursor.
    async fn tail(&self) -> anyhow::Result<()> {
        for endpoint in self.store.webhook_endpoints_behind().await? {
            let events = self
                .store
                .log_events_after(&endpoint.account_id, endpoint.cursor, TAIL_BATCH)
                .await?;
            let Some(last) = events.last().map(|e| e.id) else {
                continue;
            };
            if events[0].id > endpoint.cursor + 1 {
                warn!(endpoint = %endpoint.id, from = endpoint.cursor + 1, to = events[0].id - 1, "Events were pruned from the log before this endpoint got them.");
            }
            let queued: Vec<Queued> = events
                .iter()
                .filter(|e| super::matches(&endpoint.event_types, &e.kind))
                .map(|e| {
                    (
                        e.id,
                        e.kind.clone(),
                        super::payload(&e.kind, e.at_ms, &e.data),
                    )
                })
                .collect();
            self.queue(&endpoint, last, &queued).await?;
        }
        Ok(())
    }

    async fn queue(&self, endpoint: &Behind, to: i64, queued: &[Queued]) -> anyhow::Result<()> {
        let first = i64::try_from(self.schedule.first().copied().unwrap_or(0)).unwrap_or(0);
        // `false`: another node queued this stretch first.
        self.store
            .queue_webhook_events(endpoint, to, queued, ids::now_ms() + first)
            .await?;
        Ok(())
    }

    /// Claims as many due deliveries as there are free slots and attempts each in its own task.
    async fn send_due(self: &Arc<Self>, tracker: &TaskTracker) {
        let free = self.permits.available_permits();
        if free == 0 {
            return;
        }
        let now = ids::now_ms();
        let claimed = match self
            .store
            .claim_webhook_deliveries(now, now - self.stale_ms, free as i64)
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                warn!(error = %e, "Could not read due webhook deliveries.");
                return;
            }
        };
        for delivery in claimed {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            let me = self.clone();
            tracker.spawn(async move {
                me.attempt(delivery).await;
                drop(permit);
            });
        }
    }

    /// One attempt at one delivery, and its outcome recorded.
    async fn attempt(&self, claimed: ClaimedDelivery) {
        let answer = self.call(&claimed).await;
        let now = ids::now_ms();
        let attempts_left = usize::try_from(claimed.attempt)
            .map(|n| n < self.schedule.len())
            .unwrap_or(false);
        let (status, body, error, retry_after) = match &answer {
            Ok(a) => (
                Some(i64::from(a.status)),
                Some(a.body.clone()),
                (!(200..300).contains(&a.status)).then(|| format!("HTTP {}", a.status)),
                a.retry_after,
            ),
            Err(e) => (None, None, Some(e.clone()), None),
        };
        let (state, next_ms) = if error.is_none() {
            ("succeeded", now)
        } else if attempts_left {
            let scheduled = self
                .schedule
                .get(usize::try_from(claimed.attempt).unwrap_or(usize::MAX))
                .copied()
                .unwrap_or(0);
            let delay = Duration::from_millis(scheduled).max(retry_after.unwrap_or_default());
            ("due", now + i64::try_from(delay.as_millis()).unwrap_or(0))
        } else {
            ("failed", now)
        };
        let outcome = AttemptOutcome {
            state,
            next_ms,
            status,
            body,
            error,
        };
        let label = if state == "due" { "retry" } else { state };
        metrics::counter!("switchboard_webhook_deliveries_total", "outcome" => label).increment(1);
        match self
            .store
            .record_webhook_attempt(&claimed, &outcome, self.disable_after)
            .await
        {
            Ok(true) => {
                warn!(endpoint = %claimed.endpoint_id, account = %claimed.account_id, "Webhook endpoint disabled after a run of failed deliveries.");
                self.tally
                    .count(&claimed.account_id, WEBHOOK_ENDPOINTS_DISABLED, None);
            }
            Ok(false) => {}
            Err(e) => {
                warn!(delivery = %claimed.id, error = %e, "Could not record a webhook attempt; its claim will go stale and be retried.")
            }
        }
        if state == "failed" {
            info!(delivery = %claimed.id, endpoint = %claimed.endpoint_id, error = ?outcome.error, "Webhook delivery failed for good.");
        }
    }

    /// Signs and POSTs the delivery; `Err` is why there was no HTTP answer.
    async fn call(&self, claimed: &ClaimedDelivery) -> Result<Answer, String> {
        let url = url::Url::parse(&claimed.url).map_err(|_| "the URL does not parse".to_owned())?;
        self.guard
            .check_url(&url)
            .await
            .map_err(|e| format!("refused by the SSRF guard: the URL {e}"))?;
        let key = |sealed: &str| {
            self.keys
                .sealer
                .open(sealed)
                .ok()
                .and_then(|s| super::secret_key(s.expose_secret()))
        };
        let current = key(&claimed.secret).ok_or_else(|| {
            "the secret cannot be opened (was auth.secret_key changed?)".to_owned()
        })?;
        let previous = match (&claimed.previous_secret, claimed.previous_until) {
            (Some(sealed), Some(until)) => key(sealed).map(|k| (k, until)),
            _ => None,
        };
        let now = ids::now_ms();
        let timestamp = now / 1000;
        let signature = super::signature_header(
            &current,
            previous.as_ref().map(|(k, until)| (k.as_slice(), *until)),
            now,
            &claimed.msg_id,
            timestamp,
            claimed.payload.as_bytes(),
        );
        let response = self
            .http
            .post(url)
            .header("webhook-id", &claimed.msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(claimed.payload.clone())
            .send()
            .await
            .map_err(|e| failure(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let body = read_capped(response, self.max_body)
            .await
            .map_err(|e| failure(&e))?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// Reads at most `cap` bytes of the body, chunk by chunk; the rest is never read.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<String, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < cap {
        match response.chunk().await? {
            Some(chunk) => {
                let room = cap - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Why there was no answer, without the URL (which the endpoint already shows).
fn failure(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout: no complete answer within webhooks_out.request_timeout_ms".to_owned()
    } else if e.is_connect() {
        // A name the guard refused fails here too; say so when it is the cause.
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if text.starts_with("points at ") {
                return format!("refused by the SSRF guard: the URL {text}");
            }
            source = cause.source();
        }
        "connection failed".to_owned()
    } else {
        "the request failed".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connect-time half of the guard: a name that resolves to a refused address never
    /// gets a connection, whatever it resolved to when the endpoint was saved.
    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_never_connects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://localhost:{}/hook",
            listener.local_addr().unwrap().port()
        );
        let config = Config::from_layers(&[]).unwrap();
        let guarded = client(&config, Arc::new(Guard::default())).unwrap();
        let e = guarded.post(&url).send().await.unwrap_err();
        assert!(
            failure(&e).starts_with("refused by the SSRF guard: the URL points at "),
            "{}",
            failure(&e)
        );
        let listed = Arc::new(Guard::new(&["localhost".to_owned()]).unwrap());
        let allowed = client(&config, listed).unwrap();
        let call = tokio::spawn(async move { allowed.post(&url).send().await });
        let (socket, _) = listener.accept().await.unwrap();
        drop(socket);
        call.abort();
    }
}
