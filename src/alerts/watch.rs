//! Watching the signals: the [`Tally`] every node keeps of what its request path and workers
//! see (webhooks accepted and refused, send attempts and failures), flushed into shared
//! 10-second buckets in the store; and the [`Evaluator`] each worker node runs, which reads the
//! signals, moves each alert's [`Phase`] and queues the notices of a transition.
//!
//! Every count is kept for the account and, when the caller knows it, for a finer scope too
//! (the provider of a send, the team of a breached conversation, the inbox of a customer
//! message), so an account-wide rule reads the total and a rule kept per scope reads its part.
//! A rule's alerts are one per scope it measures; a scope that is no longer measured (the
//! provider went quiet, the rule was narrowed) is observed as clear, so its alert resolves.
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

use super::{ACCOUNT, Checked, Dimension, Phase, RuleSpec, Signal};
use crate::config::Config;
use crate::ids;
use crate::sla::BusinessHours;
use crate::store::Store;
use crate::store::alerts::{Episode, NewAlert, PhaseChange, SignalCount};

/// Counter names in `signal_counts`.
pub const WEBHOOKS_ACCEPTED: &str = "webhooks.accepted";
pub const WEBHOOKS_REFUSED: &str = "webhooks.refused";
pub const OUTBOUND_SENT: &str = "outbound.sent";
pub const OUTBOUND_FAILED: &str = "outbound.failed";
pub const SLA_BREACHES: &str = "sla.breaches";
pub const CREDENTIALS_REJECTED: &str = "outbound.credentials_rejected";
/// Customer messages stored (new ones, not redeliveries), per inbox: `inbound_silence`.
pub const INBOUND_MESSAGES: &str = "inbound.messages";
/// Outbound webhook endpoints disabled for failing deliveries: `webhook_endpoints_disabled`.
pub const WEBHOOK_ENDPOINTS_DISABLED: &str = "webhooks_out.endpoints_disabled";

/// Width of a counter bucket.
const BUCKET_MS: i64 = 10_000;
/// How long counter buckets are kept (longer than any window).
const KEEP_MS: i64 = 2 * 24 * 60 * 60 * 1000;
/// How far back an inbox's silence is measured: past any threshold (which is at most
/// 1,000,000 s), and it bounds the walk through business hours of an inbox silent for years.
const SILENCE_LOOKBACK_MS: i64 = 60 * 24 * 60 * 60 * 1000;

/// What this node counted since its last flush. Counting is a map update in memory; the
/// store sees the sums once a second.
#[derive(Debug, Default)]
pub struct Tally {
    counts: DashMap<(String, &'static str, String), i64>,
}

impl Tally {
    /// Counts one `name` for the account and, when given, for `scope` as well
    /// (`provider:whatsapp`, from [`Dimension::scope`]): the account's total is always kept.
    pub fn count(&self, account_id: &str, name: &'static str, scope: Option<&str>) {
        for scope in std::iter::once(ACCOUNT).chain(scope) {
            *self
                .counts
                .entry((account_id.to_owned(), name, scope.to_owned()))
                .or_insert(0) += 1;
        }
    }

    /// Moves what was counted into the store's current bucket. What cannot be written is
    /// counted again next time rather than lost.
    pub async fn flush(&self, store: &Store) {
        let keys: Vec<(String, &'static str, String)> =
            self.counts.iter().map(|e| e.key().clone()).collect();
        if keys.is_empty() {
            return;
        }
        let now = ids::now_ms();
        let bucket_ms = now / BUCKET_MS * BUCKET_MS;
        let taken: Vec<SignalCount> = keys
            .into_iter()
            .filter_map(|k| self.counts.remove(&k))
            .filter(|(_, n)| *n > 0)
            .map(|((account_id, name, scope), n)| SignalCount {
                account_id,
                name,
                scope,
                bucket_ms,
                n,
            })
            .collect();
        if let Err(e) = store.add_signal_counts(&taken, now).await {
            warn!(error = %e, "Could not flush signal counts; keeping them for the next flush.");
            for c in taken {
                *self
                    .counts
                    .entry((c.account_id, c.name, c.scope))
                    .or_insert(0) += c.n;
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
            let account_id = store.ensure_account(&account).await?;
            // A team or inbox that does not exist (yet) is not an error in the config: teams
            // come and go over REST. The rule measures nothing until it exists; say so.
            let missing = match (&spec.team, &spec.inbox) {
                (Some(team), _) => store.get_team(&account_id, team).await?.is_none(),
                (_, Some(inbox)) => store.get_inbox(&account_id, inbox).await?.is_none(),
                _ => false,
            };
            if missing {
                warn!(rule = %spec.name, team = ?spec.team, inbox = ?spec.inbox, "An alert rule names a team or inbox the account does not have; it measures nothing until it does.");
            }
            rules.push(Rule {
                account_id,
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

    /// One round: every rule's signal in each of its scopes, phase and transition.
    pub async fn evaluate(&self, now: i64) -> anyhow::Result<()> {
        type Key = (String, Signal, u64, Option<Dimension>);
        let mut measured: HashMap<Key, HashMap<String, f64>> = HashMap::new();
        for rule in &self.rules().await? {
            let (signal, per) = (rule.checked.signal, rule.checked.per);
            let window = rule.spec.window_secs.unwrap_or(0);
            // Silence depends on the rule's hours: measured for each rule.
            let key = (rule.account_id.clone(), signal, window, per);
            let mut values = match measured.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let v = self.measure(rule, window, now).await?;
                    if signal != Signal::InboundSilence {
                        measured.insert(key, v.clone());
                    }
                    v
                }
            };
            if let (Some(d), Some(only)) = (per, rule.spec.only()) {
                let scope = d.scope(only);
                let value = values.remove(&scope).unwrap_or(0.0);
                values = HashMap::from([(scope, value)]);
            }
            let mut stored = self
                .store
                .alert_phases(&rule.account_id, &rule.spec.name)
                .await?;
            // An alert whose scope is not measured now (the provider went quiet, the rule was
            // narrowed) is observed as clear, so it resolves rather than fire forever.
            for (scope, (phase, _)) in &stored {
                let idle = serde_json::from_str::<Phase>(phase).is_ok_and(|p| p == Phase::Idle);
                if !idle && !values.contains_key(scope) {
                    values.insert(scope.clone(), 0.0);
                }
            }
            let mut scopes: Vec<(String, f64)> = values.into_iter().collect();
            scopes.sort_by(|a, b| a.0.cmp(&b.0));
            for (scope, value) in scopes {
                let state = stored.remove(&scope);
                self.step(rule, &scope, value, state, now).await?;
            }
        }
        Ok(())
    }

    /// A rule's signal now, in each scope it measures (`account` for an account-wide rule).
    async fn measure(
        &self,
        rule: &Rule,
        window_secs: u64,
        now: i64,
    ) -> anyhow::Result<HashMap<String, f64>> {
        let account_id = rule.account_id.as_str();
        let signal = rule.checked.signal;
        let since = now - i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        fn ratio(s: &[i64]) -> f64 {
            let total = s[0] + s[1];
            if total == 0 {
                0.0
            } else {
                s[0] as f64 * 100.0 / total as f64
            }
        }
        fn count(s: &[i64]) -> f64 {
            s[0] as f64
        }
        /// The counters a signal reads, and its value from their sums.
        type Reading = (&'static [&'static str], fn(&[i64]) -> f64);
        let (names, value): Reading = match signal {
            Signal::QueueBacklog => {
                let n = self.store.waiting_count(account_id).await? as f64;
                return Ok(HashMap::from([(ACCOUNT.to_owned(), n)]));
            }
            Signal::InboundSilence => return self.silences(rule, now).await,
            Signal::WebhookErrorRatio => (&[WEBHOOKS_REFUSED, WEBHOOKS_ACCEPTED], ratio),
            Signal::OutboundFailureRatio => (&[OUTBOUND_FAILED, OUTBOUND_SENT], ratio),
            Signal::SlaBreaches => (&[SLA_BREACHES], count),
            Signal::CredentialsRejected => (&[CREDENTIALS_REJECTED], count),
            Signal::WebhookEndpointsDisabled => (&[WEBHOOK_ENDPOINTS_DISABLED], count),
        };
        Ok(match rule.checked.per {
            None => {
                let sums = self
                    .store
                    .signal_sums(account_id, ACCOUNT, names, since)
                    .await?;
                HashMap::from([(ACCOUNT.to_owned(), value(&sums))])
            }
            Some(d) => self
                .store
                .signal_sums_per_scope(account_id, &d.scope(""), names, since)
                .await?
                .into_iter()
                .map(|(scope, sums)| (scope, value(&sums)))
                .collect(),
        })
    }

    /// Each active inbox's silence: the business time, in seconds, since its last customer
    /// message, in the rule's hours, else its SLA policy's, else round the clock. An inbox that
    /// never had a customer message is not measured: it is unused, not silent.
    async fn silences(&self, rule: &Rule, now: i64) -> anyhow::Result<HashMap<String, f64>> {
        let account_id = rule.account_id.as_str();
        let seen = self
            .store
            .signal_last_seen(account_id, INBOUND_MESSAGES, &Dimension::Inbox.scope(""))
            .await?;
        let mut out = HashMap::new();
        if seen.is_empty() {
            return Ok(out);
        }
        let rule_hours = rule
            .spec
            .hours
            .as_ref()
            .and_then(|h| BusinessHours::parse(h).ok());
        let policies = match rule_hours {
            Some(_) => Vec::new(),
            None => crate::sla::watch::policies(&self.store, account_id).await?,
        };
        let always = BusinessHours::always();
        for (scope, last_ms) in seen {
            let Some(inbox) = Dimension::Inbox.value_of(&scope) else {
                continue;
            };
            if rule.spec.inbox.as_deref().is_some_and(|only| only != inbox) {
                continue;
            }
            if !self
                .store
                .get_inbox(account_id, inbox)
                .await?
                .is_some_and(|i| i.active)
            {
                continue;
            }
            let hours = rule_hours
                .as_ref()
                .or_else(|| {
                    policies
                        .iter()
                        .find(|(p, _)| p.inbox_id.as_deref() == Some(inbox))
                        .map(|(_, h)| h)
                })
                .unwrap_or(&always);
            out.insert(scope, silent_secs(hours, last_ms, now));
        }
        Ok(out)
    }

    /// How a notice names a scope: the provider, the team's or inbox's name with its id.
    async fn scope_label(&self, account_id: &str, scope: &str) -> String {
        if let Some(p) = Dimension::Provider.value_of(scope) {
            return p.to_owned();
        }
        if let Some(id) = Dimension::Team.value_of(scope) {
            return match self.store.get_team(account_id, id).await {
                Ok(Some(t)) => format!("team {} ({id})", t.name),
                _ => format!("team {id}"),
            };
        }
        if let Some(id) = Dimension::Inbox.value_of(scope) {
            return match self.store.get_inbox(account_id, id).await {
                Ok(Some(i)) => format!("inbox {} ({id})", i.name),
                _ => format!("inbox {id}"),
            };
        }
        scope.to_owned()
    }

    /// Moves one alert (the rule over `scope`) by what its signal reads there now; `stored`
    /// is its phase and version, if it has a row.
    async fn step(
        &self,
        rule: &Rule,
        scope: &str,
        value: f64,
        stored: Option<(String, i64)>,
        now: i64,
    ) -> anyhow::Result<()> {
        let spec = &rule.spec;
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
        let key = dedup_key(&rule.account_id, &spec.name, scope);
        let summary = match transition {
            None => String::new(),
            Some(_) if scope == ACCOUNT => summary(rule.checked.signal, value, spec, None),
            Some(_) => {
                let label = self.scope_label(&rule.account_id, scope).await;
                summary(rule.checked.signal, value, spec, Some(&label))
            }
        };
        let notices = |t: Transition| -> anyhow::Result<Vec<(String, String)>> {
            let notice = Notice {
                transition: t,
                key: key.clone(),
                rule: spec.name.clone(),
                scope: scope.to_owned(),
                severity: rule.checked.severity,
                summary: summary.clone(),
                source: self.source.clone(),
                details: json!({ "signal": rule.checked.signal.as_str(), "scope": scope,
                                 "value": value, "threshold": spec.threshold,
                                 "window_secs": spec.window_secs }),
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
                    scope,
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

/// Seconds of opening hours between an inbox's last customer message and `now` (looking back
/// at most [`SILENCE_LOOKBACK_MS`]): silence outside the hours does not count, so a quiet night
/// never pages, and a silence that passed the threshold in the day stays breached until a
/// customer writes.
fn silent_secs(hours: &BusinessHours, last_ms: i64, now: i64) -> f64 {
    hours.elapsed(last_ms.max(now - SILENCE_LOOKBACK_MS), now) as f64 / 1000.0
}

/// One line for people; `scope` names the provider, team or inbox of a scoped alert.
fn summary(signal: Signal, value: f64, spec: &RuleSpec, scope: Option<&str>) -> String {
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
            "{value:.1}% of {}send attempts failed over {} s (threshold {}%)",
            scope.map(|p| format!("{p} ")).unwrap_or_default(),
            spec.window_secs.unwrap_or(0),
            spec.threshold
        ),
        Signal::SlaBreaches => format!(
            "{value} SLA breaches{} over {} s (threshold {})",
            scope.map(|t| format!(" in {t}")).unwrap_or_default(),
            spec.window_secs.unwrap_or(0),
            spec.threshold
        ),
        Signal::InboundSilence => format!(
            "no customer message on {} for {value:.0} s of business hours (threshold {} s)",
            scope.unwrap_or("an inbox"),
            spec.threshold
        ),
        Signal::CredentialsRejected => format!(
            "{} refused an inbox's credentials {value} times over {} s; replace the token",
            scope.unwrap_or("a provider"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sla::HoursSpec;

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn silence_counts_only_open_hours() {
        let week = ["mon", "tue", "wed", "thu", "fri"]
            .map(|d| (d.to_owned(), "09:00-17:00".to_owned()))
            .into();
        let berlin = BusinessHours::parse(&HoursSpec {
            time_zone: "Europe/Berlin".to_owned(),
            week,
        })
        .unwrap();
        // The last message came on Friday 2026-12-04 at 15:00 in Berlin (14:00Z).
        let last = at("2026-12-04T14:00:00Z");
        let cases = [
            ("Friday, an hour later", "2026-12-04T15:00:00Z", 3600.0),
            ("Friday after closing", "2026-12-04T20:00:00Z", 7200.0),
            ("all weekend: nothing more", "2026-12-06T12:00:00Z", 7200.0),
            (
                "Monday, an hour after opening",
                "2026-12-07T09:00:00Z",
                10800.0,
            ),
        ];
        for (name, now, secs) in cases {
            assert_eq!(silent_secs(&berlin, last, at(now)), secs, "{name}");
        }
        let always = BusinessHours::always();
        assert_eq!(silent_secs(&always, last, last + 5_000), 5.0);
        // Silent for years: measured over the look-back only.
        assert_eq!(
            silent_secs(&always, 0, at("2026-12-04T14:00:00Z")),
            (SILENCE_LOOKBACK_MS / 1000) as f64
        );
    }
}
