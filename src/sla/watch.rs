//! The SLA watcher, one per worker node: every `sla.check_every_ms` it reads each account's
//! policies and open conversations, works out their clocks, and records each warning and
//! breach once (a unique key in the store, whatever the number of nodes). What it records is
//! published to consoles (`sla.warning`, `sla.breached`) and counted for the `sla_breaches`
//! alert signal, for the account and for the conversation's team.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{BusinessHours, Policy, clocks};
use crate::alerts::Dimension;
use crate::alerts::watch::{SLA_BREACHES, Tally};
use crate::ids;
use crate::live::Events;
use crate::store::Store;
use crate::store::sla::Watched;

/// Open conversations looked at per account and round.
const MAX_WATCHED: i64 = 10_000;

pub struct Watcher {
    pub store: Store,
    pub events: Events,
    pub tally: Arc<Tally>,
    pub every: Duration,
}

/// The policy covering a conversation: its inbox's, else its team's.
pub fn covering<'a>(
    policies: &'a [(Policy, BusinessHours)],
    inbox_id: &str,
    team_id: Option<&str>,
) -> Option<&'a (Policy, BusinessHours)> {
    policies
        .iter()
        .find(|(p, _)| p.inbox_id.as_deref() == Some(inbox_id))
        .or_else(|| {
            policies
                .iter()
                .find(|(p, _)| p.team_id.is_some() && p.team_id.as_deref() == team_id)
        })
}

/// The account's policies with their hours parsed (a policy whose hours no longer parse is
/// left out, and said so).
pub async fn policies(
    store: &Store,
    account_id: &str,
) -> anyhow::Result<Vec<(Policy, BusinessHours)>> {
    Ok(store
        .list_sla_policies(account_id)
        .await?
        .into_iter()
        .filter_map(|p| {
            let hours = match &p.business_hours {
                None => Ok(BusinessHours::always()),
                Some(spec) => BusinessHours::parse(spec),
            };
            match hours {
                Ok(h) => Some((p, h)),
                Err(e) => {
                    warn!(policy = %p.id, field = %e.field, "An SLA policy's hours do not parse; skipped.");
                    None
                }
            }
        })
        .collect())
}

impl Watcher {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.every) => {}
            }
            if let Err(e) = self.round(ids::now_ms()).await {
                warn!(error = %e, "The SLA watcher's round failed; trying again next round.");
            }
        }
    }

    async fn round(&self, now: i64) -> anyhow::Result<()> {
        for account in self.store.sla_accounts().await? {
            let policies = policies(&self.store, &account).await?;
            for conv in self
                .store
                .sla_watched(&account, None, false, MAX_WATCHED)
                .await?
            {
                if let Some((policy, hours)) =
                    covering(&policies, &conv.inbox_id, conv.team_id.as_deref())
                {
                    self.check(&account, &conv, policy, hours, now).await?;
                }
            }
        }
        Ok(())
    }

    async fn check(
        &self,
        account: &str,
        conv: &Watched,
        policy: &Policy,
        hours: &BusinessHours,
        now: i64,
    ) -> anyhow::Result<()> {
        for clock in clocks(policy, hours, &conv.moments, now) {
            if clock.stopped_at_ms.is_some() {
                continue;
            }
            let kind = match clock.state {
                "breached" => "breach",
                "warning" => "warning",
                _ => continue,
            };
            let recorded = self
                .store
                .record_sla_event(
                    account,
                    &conv.id,
                    &policy.id,
                    clock.metric,
                    kind,
                    clock.started_at_ms,
                    clock.due_at_ms,
                )
                .await?;
            if !recorded {
                continue;
            }
            if kind == "breach" {
                let team = conv.team_id.as_deref().map(|t| Dimension::Team.scope(t));
                self.tally.count(account, SLA_BREACHES, team.as_deref());
                metrics::counter!("switchboard_sla_breaches_total", "metric" => clock.metric.as_str())
                    .increment(1);
            }
            let event = if kind == "breach" {
                "sla.breached"
            } else {
                "sla.warning"
            };
            self.events
                .publish(
                    account,
                    event,
                    json!({ "conversation_id": conv.id, "policy_id": policy.id,
                            "metric": clock.metric.as_str(), "started_at_ms": clock.started_at_ms,
                            "due_at_ms": clock.due_at_ms }),
                )
                .await;
        }
        Ok(())
    }
}
