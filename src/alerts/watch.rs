//! Watching the signals: the [`Tally`] every node keeps of what its request path and workers
//! see (webhooks accepted and refused, send attempts and failures), flushed into shared
//! 10-second buckets in the store; and the [`Evaluator`] each worker node runs, which reads the
//! signals, moves each alert's [`Phase`] and queues the notices of a transition.
//!
//! Several worker nodes evaluate the same rules. They agree through the store: a phase moves
//! only from the version that was read (compare-and-set), and the notices of a transition are
//! written in the same transaction, so a transition is recorded, and notified, once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde_json::json;
use switchboard_connectors::alerts::{Notice, Transition, dedup_key};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Checked, Phase, RuleSpec, Signal};
use crate::config::Config;
use crate::ids;
use crate::store::Store;
use crate::store::alerts::{Episode, NewAlert, PhaseChange};

/// Counter names in `signal_counts`.
pub const WEBHOOKS_ACCEPTED: &str = "webhooks.accepted";
pub const WEBHOOKS_REFUSED: &str = "webhooks.refused";
pub const OUTBOUND_SENT: &str = "outbound.sent";
pub const OUTBOUND_FAILED: &str = "outbound.failed";
pub const SLA_BREACHES: &str = "sla.breaches";
pub const CREDENTIALS_REJECTED: &str = "outbound.credentials_rejected";
pub const WEBHOOK_ENDPOINTS_DISABLED: &str = "webhooks_out.endpoints_disabled";

/// Width of a counter bucket.
const BUCKET_MS: i64 = 10_000;
/// How long counter buckets are kept (longer than any window).
const KEEP_MS: i64 = 2 * 24 * 60 * 60 * 1000;

/// What this node counted since its last flush. Counting is a map update in memory; the
/// store sees the sums once a second.
#[derive(Debug, Default)]
pub struct Tally {
    counts: DashMap<(String, &'static str), i64>,
}

impl Tally {
    pub fn count(&self, account_id: &str, name: &'static str) {
        *self
            .counts
            .entry((account_id.to_owned(), name))
            .or_insert(0) += 1;
    }

    /// Moves what was counted into the store's current bucket. What cannot be written is
    /// counted again next time rather than lost.
    pub async fn flush(&self, store: &Store) {
        let keys: Vec<(String, &'static str)> =
            self.counts.iter().map(|e| e.key().clone()).collect();
        if keys.is_empty() {
            return;
        }
        let bucket = ids::now_ms() / BUCKET_MS * BUCKET_MS;
        let taken: Vec<(String, &'static str, i64, i64)> = keys
            .into_iter()
            .filter_map(|k| self.counts.remove(&k))
            .filter(|(_, n)| *n > 0)
            .map(|((account, name), n)| (account, name, bucket, n))
            .collect();
        if let Err(e) = store.add_signal_counts(&taken).await {
            warn!(error = %e, "Could not flush signal counts; keeping them for the next flush.");
            for (account, name, _, n) in taken {
                *self.counts.entry((account, name)).or_insert(0) += n;
            }
        }
    }

    /// Flushes every second until `shutdown`, then once more.
    pub async fn run(self: Arc<Self>, store: Store, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => self.flush(&store).await,
            }
        }
        self.flush(&store).await;
    }
}

/// A rule ready to evaluate.
#[derive(Clone)]
struct Rule {
    account_id: String,
    spec: RuleSpec,
    checked: Checked,
}

/// Evaluates the configured rules on one worker node.
pub struct Evaluator {
    store: Store,
    /// The rules of the config (declared and shipped); rules added over REST are read each round.
    rules: Vec<Rule>,
    /// Each account's destination names.
    destinations: HashMap<String, Vec<String>>,
    every: Duration,
    /// Where the alert history can be seen (for links in notices).
    source: String,
    /// Woken when notices were queued, so they go out at once.
    pub queued: Arc<Notify>,
}

impl Evaluator {
    /// The rules of `config` (declared and shipped), their accounts resolved.
    pub async fn new(store: Store, config: &Config, queued: Arc<Notify>) -> anyhow::Result<Self> {
        let mut destinations: HashMap<String, Vec<String>> = HashMap::new();
        for d in &config.alerts.destinations {
            let account = store.ensure_account(config.account_of(&d.account)).await?;
            destinations
                .entry(account)
                .or_default()
                .push(d.name.clone());
        }
        let mut rules = Vec::new();
        for spec in config.alerts.effective_rules(&config.accounts.default) {
            let account = config.account_of(&spec.account).to_owned();
            let destinations: Vec<&str> = config
                .alerts
                .destinations
                .iter()
                .filter(|d| config.account_of(&d.account) == account)
                .map(|d| d.name.as_str())
                .collect();
            let checked = spec.check(&destinations).map_err(|e| {
                anyhow::anyhow!("alert rule {}: {}: {}", spec.name, e.field, e.message)
            })?;
            rules.push(Rule {
                account_id: store.ensure_account(&account).await?,
                spec,
                checked,
            });
        }
        Ok(Evaluator {
            store,
            rules,
            destinations,
            every: Duration::from_millis(config.alerts.evaluate_every_ms),
            source: config.server.public_url.clone(),
            queued,
        })
    }

    /// Evaluates every `alerts.evaluate_every_ms` until `shutdown`; also prunes old counters.
    pub async fn run(self, shutdown: CancellationToken) {
        // A rule needs a destination; without any, there is nothing to evaluate.
        if self.destinations.is_empty() {
            return;
        }
        let mut pruned_at = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
            let now = ids::now_ms();
            if let Err(e) = self.evaluate(now).await {
                warn!(error = %e, "Alert evaluation failed; trying again next round.");
            }
            if now - pruned_at > 60 * 60 * 1000 {
                pruned_at = now;
                if let Err(e) = self.store.prune_signal_counts(now - KEEP_MS).await {
                    warn!(error = %e, "Could not prune old signal counts.");
                }
            }
        }
    }

    /// The config's rules and those added over REST (a REST rule named like a config rule of
    /// its account, possible only if the config changed since, is left out: config wins).
    async fn rules(&self) -> anyhow::Result<Vec<Rule>> {
        let mut rules = self.rules.clone();
        for (account_id, json) in self.store.all_alert_rules().await? {
            let Ok(spec) = serde_json::from_str::<RuleSpec>(&json) else {
                warn!(account = %account_id, "An alert rule in the store does not parse; skipped.");
                continue;
            };
            if rules
                .iter()
                .any(|r| r.account_id == account_id && r.spec.name == spec.name)
            {
                continue;
            }
            let names: Vec<&str> = self
                .destinations
                .get(&account_id)
                .map(|d| d.iter().map(String::as_str).collect())
                .unwrap_or_default();
            match spec.check(&names) {
                Ok(checked) => rules.push(Rule {
                    account_id,
                    spec,
                    checked,
                }),
                Err(e) => {
                    warn!(account = %account_id, rule = %spec.name, field = %e.field, reason = %e.message, "An alert rule no longer checks (a destination left the config?); skipped.")
                }
            }
        }
        Ok(rules)
    }

    /// One round: every rule's signal, phase and transition.
    pub async fn evaluate(&self, now: i64) -> anyhow::Result<()> {
        let mut sums: HashMap<(String, Signal, u64), f64> = HashMap::new();
        for rule in &self.rules().await? {
            let window = rule.spec.window_secs.unwrap_or(0);
            let key = (rule.account_id.clone(), rule.checked.signal, window);
            let value = match sums.get(&key) {
                Some(v) => *v,
                None => {
                    let v = self
                        .measure(&rule.account_id, rule.checked.signal, window, now)
                        .await?;
                    sums.insert(key, v);
                    v
                }
            };
            self.step(rule, value, now).await?;
        }
        Ok(())
    }

    /// A signal's value now.
    async fn measure(
        &self,
        account_id: &str,
        signal: Signal,
        window_secs: u64,
        now: i64,
    ) -> anyhow::Result<f64> {
        let since = now - i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let ratio = |bad: i64, good: i64| {
            let total = bad + good;
            if total == 0 {
                0.0
            } else {
                bad as f64 * 100.0 / total as f64
            }
        };
        Ok(match signal {
            Signal::QueueBacklog => self.store.waiting_count(account_id).await? as f64,
            Signal::WebhookErrorRatio => {
                let s = self
                    .store
                    .signal_sums(account_id, &[WEBHOOKS_REFUSED, WEBHOOKS_ACCEPTED], since)
                    .await?;
                ratio(s[0], s[1])
            }
            Signal::OutboundFailureRatio => {
                let s = self
                    .store
                    .signal_sums(account_id, &[OUTBOUND_FAILED, OUTBOUND_SENT], since)
                    .await?;
                ratio(s[0], s[1])
            }
            Signal::SlaBreaches | Signal::CredentialsRejected => {
                let name = if signal == Signal::SlaBreaches {
                    SLA_BREACHES
                } else {
                    CREDENTIALS_REJECTED
                };
                self.store.signal_sums(account_id, &[name], since).await?[0] as f64
            }
            Signal::WebhookEndpointsDisabled => {
                self.store
                    .signal_sums(account_id, &[WEBHOOK_ENDPOINTS_DISABLED], since)
                    .await?[0] as f64
            }
        })
    }

    /// Moves one rule's alert by what its signal reads now.
    async fn step(&self, rule: &Rule, value: f64, now: i64) -> anyhow::Result<()> {
        const SCOPE: &str = "account";
        let spec = &rule.spec;
        let stored = self
            .store
            .alert_phase(&rule.account_id, &spec.name, SCOPE)
            .await?;
        let (phase, version) = match &stored {
            Some((json, version)) => (
                serde_json::from_str(json).unwrap_or(Phase::Idle),
                Some(*version),
            ),
            None => (Phase::Idle, None),
        };
        let (next, transition) = phase.observe(value > spec.threshold, now, rule.checked.timing);
        if next == phase && transition.is_none() {
            return Ok(());
        }
        let key = dedup_key(&rule.account_id, &spec.name, SCOPE);
        let summary = summary(rule.checked.signal, value, spec);
        let notices = |t: Transition| -> anyhow::Result<Vec<(String, String)>> {
            let notice = Notice {
                transition: t,
                key: key.clone(),
                rule: spec.name.clone(),
                scope: SCOPE.to_owned(),
                severity: rule.checked.severity,
                summary: summary.clone(),
                source: self.source.clone(),
                details: json!({ "signal": rule.checked.signal.as_str(), "value": value,
                                 "threshold": spec.threshold, "window_secs": spec.window_secs }),
                at: rfc3339(now),
                link: Some(format!(
                    "{}/v1/admin/alerts",
                    self.source.trim_end_matches('/')
                )),
            };
            let json = serde_json::to_string(&notice)?;
            Ok(spec
                .destinations
                .iter()
                .map(|d| (d.clone(), json.clone()))
                .collect())
        };
        let alert;
        let episode = match transition {
            None => Episode::Quiet,
            Some(Transition::Firing) => {
                alert = NewAlert {
                    id: ids::new(ids::ALERT),
                    severity: rule.checked.severity.as_str().to_owned(),
                    summary: summary.clone(),
                    dedup_key: key.clone(),
                    threshold: spec.threshold,
                };
                Episode::Fired {
                    alert: &alert,
                    notices: notices(Transition::Firing)?,
                }
            }
            Some(Transition::Resolved) => Episode::Resolved {
                notices: notices(Transition::Resolved)?,
            },
        };
        let moved = self
            .store
            .move_alert(
                PhaseChange {
                    account_id: &rule.account_id,
                    rule: &spec.name,
                    scope: SCOPE,
                    version,
                    phase: &serde_json::to_string(&next)?,
                    value,
                    now_ms: now,
                },
                episode,
            )
            .await?;
        if moved && transition.is_some() {
            metrics::counter!("switchboard_alert_transitions_total", "rule" => spec.name.clone(),
                "transition" => if transition == Some(Transition::Firing) { "firing" } else { "resolved" })
            .increment(1);
            self.queued.notify_one();
        }
        Ok(())
    }
}

/// One line for people.
fn summary(signal: Signal, value: f64, spec: &RuleSpec) -> String {
    match signal {
        Signal::QueueBacklog => format!(
            "{value} conversations waiting for an agent (threshold {})",
            spec.threshold
        ),
        Signal::WebhookErrorRatio => format!(
            "{value:.1}% of webhooks refused over {} s (threshold {}%)",
            spec.window_secs.unwrap_or(0),
            spec.threshold
        ),
        Signal::OutboundFailureRatio => format!(
            "{value:.1}% of send attempts failed over {} s (threshold {}%)",
            spec.window_secs.unwrap_or(0),
            spec.threshold
        ),
        Signal::SlaBreaches => format!(
            "{value} SLA breaches over {} s (threshold {})",
            spec.window_secs.unwrap_or(0),
            spec.threshold
        ),
        Signal::CredentialsRejected => format!(
            "a provider refused an inbox's credentials {value} times over {} s; replace the token",
            spec.window_secs.unwrap_or(0)
        ),
        Signal::WebhookEndpointsDisabled => format!(
            "{value} webhook endpoints disabled for failing deliveries over {} s (threshold {})",
            spec.window_secs.unwrap_or(0),
            spec.threshold
        ),
    }
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
