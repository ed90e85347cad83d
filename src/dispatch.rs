//! The dispatcher: the assignment engine's loop on every worker node (docs/ROUTING-DESIGN.md).
//!
//! It sleeps until something could change a routing outcome, then runs a *pass* over the
//! account concerned:
//!
//! 1. offers past their timeout expire (the agent is excluded, the conversation waits again);
//! 2. conversations held by an agent offline longer than the grace period go back to the queue
//!    at their original position; those whose assignee has not replied in time are routed
//!    again, without that agent;
//! 3. the account's picture is read from the store (agents, rules, waiting conversations), the
//!    queue is put in order, and each conversation that some available agent can take is
//!    placed by one guarded transaction ([`Store::place`]).
//!
//! What wakes it: a wake message on [`WAKE_TOPIC`] from any node (published with the events
//! that can free or add capacity or work: see [`wakes`]), the earliest deadline a pass found
//! (a step timeout, an offer timeout, a grace period's end, a no-reply limit, urgency), and a
//! slow safety-net resync. Nothing polls: freed capacity is filled by the event that freed it.
//!
//! Several nodes may run passes over the same account at once; the store's guards make that
//! safe (one commit wins, the loser's next pass sees the new state).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchboard_routing::engine::{Mode, Picture, Rule, Waiting, channel_index, compile_rule};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::broker::{Broker, Received};
use crate::config::Config;
use crate::http::routing_rules::rule_schema;
use crate::ids;
use crate::store::routing::{OfferEnd, Placed, Placement, Requeue};
use crate::store::{Store, StoreError};

/// The broker topic wake messages travel on; the payload is an account id.
pub const WAKE_TOPIC: &str = "routing:wake";

/// Whether an event of this kind can let the engine place something, so its publication also
/// wakes the dispatchers.
pub fn wakes(kind: &str) -> bool {
    matches!(
        kind,
        "conversation.created"
            | "conversation.requeued"
            | "conversation.updated"
            | "conversation.resolved"
            | "presence.changed"
            | "capacity.changed"
            | "offer.declined"
            | "routing.rules_changed"
    )
}

/// Wakes every node's dispatcher for the account.
pub async fn wake(broker: &Broker, account_id: &str) {
    if let Err(e) = broker.publish(WAKE_TOPIC, account_id.into()).await {
        warn!(error = %e, "Could not wake the dispatchers.");
    }
}

pub struct Dispatcher {
    pub store: Store,
    pub broker: Broker,
    pub events: crate::live::Events,
    pub config: Arc<Config>,
}

/// The queue figures last pushed for an account, by inbox, and when.
#[derive(Default)]
struct QueuePush {
    at: i64,
    figures: HashMap<String, String>,
}

/// When a pass lost a commit to another writer, the next one comes this soon.
const RETRY_MS: i64 = 50;

impl Dispatcher {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let resync = Duration::from_secs(self.config.routing.resync_secs);
        let mut subscription = None;
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut due: HashMap<String, i64> = HashMap::new();
        let mut next_resync = tokio::time::Instant::now();
        let mut pushed = HashMap::new();
        loop {
            if subscription.is_none() {
                match self.broker.subscribe(WAKE_TOPIC).await {
                    Ok(s) => {
                        subscription = Some(s);
                        // Whatever happened while we were not listening.
                        next_resync = tokio::time::Instant::now();
                    }
                    Err(e) => {
                        warn!(error = %e, "The dispatcher cannot subscribe to wakes; resyncing on a timer.")
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= next_resync {
                match self.store.account_ids().await {
                    Ok(all) => dirty.extend(all),
                    Err(e) => warn!(error = %e, "The dispatcher cannot list accounts."),
                }
                next_resync = now + resync;
            }
            let wall = ids::now_ms();
            due.retain(|account, at| {
                if *at <= wall {
                    dirty.insert(account.clone());
                    false
                } else {
                    true
                }
            });
            while let Some(account) = dirty.pop_first() {
                if shutdown.is_cancelled() {
                    return;
                }
                let mut passed = self.pass(&account).await;
                if let Ok(next) = &mut passed
                    && let Some(retry) = self.push_queue_stats(&account, &mut pushed).await
                {
                    *next = Some(next.map_or(retry, |at| at.min(retry)));
                }
                match passed {
                    Ok(Some(at)) => {
                        due.insert(account, at);
                    }
                    Ok(None) => {
                        due.remove(&account);
                    }
                    Err(e) => {
                        warn!(error = %e, account, "A routing pass failed; retrying shortly.");
                        due.insert(account, ids::now_ms() + 1000);
                    }
                }
                // Wakes that arrived during the pass: one more pass covers them all.
                if let Some(s) = subscription.as_mut() {
                    while let Some(Some(received)) = s.try_recv() {
                        note(received, &mut dirty, &mut next_resync);
                    }
                }
            }
            let wall = ids::now_ms();
            let deadline = due
                .values()
                .min()
                .map(|at| {
                    tokio::time::Instant::now()
                        + Duration::from_millis(u64::try_from(at - wall).unwrap_or(0))
                })
                .map_or(next_resync, |d| d.min(next_resync));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(deadline) => {}
                received = async {
                    match subscription.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                } => match received {
                    Some(received) => note(received, &mut dirty, &mut next_resync),
                    None => {
                        if shutdown.is_cancelled() {
                            return;
                        }
                        subscription = None;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
            }
        }
    }

    /// Pushes `queue.stats` (one frame per inbox whose figures changed) to the consoles that
    /// watch queues, at most once a second per account. `pushed` remembers what was sent.
    /// Returns when to come back when it is too soon to push now.
    async fn push_queue_stats(
        &self,
        account: &str,
        pushed: &mut HashMap<String, QueuePush>,
    ) -> Option<i64> {
        let last = pushed.entry(account.to_owned()).or_default();
        let now = ids::now_ms();
        if now - last.at < 1000 {
            return Some(last.at + 1000);
        }
        last.at = now;
        let fresh_after = now - self.config.routing.presence_timeout_ms();
        let (Ok((inboxes, _)), Ok(placements)) = (
            self.store.queue_stats(account, fresh_after, now).await,
            self.store.inbox_placements(account).await,
        ) else {
            return None;
        };
        for stats in inboxes {
            let mut data = json!(stats);
            // The wait grows every moment; what changes the picture is the rest.
            let figures = {
                let mut f = data.clone();
                f["longest_wait_ms"] = json!(null);
                f.to_string()
            };
            if last.figures.get(&stats.id) == Some(&figures) {
                continue;
            }
            let (team_id, branch_id) = placements
                .iter()
                .find(|(id, _, _)| *id == stats.id)
                .map(|(_, t, b)| (t.clone(), b.clone()))
                .unwrap_or_default();
            data["inbox_id"] = json!(stats.id);
            let scope = crate::store::live::EventScope {
                inbox_id: Some(stats.id.clone()),
                team_id,
                branch_id,
                ..Default::default()
            };
            self.events
                .ephemeral(account, "queue.stats", data, scope, None)
                .await;
            last.figures.insert(stats.id, figures);
        }
        None
    }

    /// One pass over an account; returns when the next one is due on its own, if ever.
    pub async fn pass(&self, account: &str) -> Result<Option<i64>, StoreError> {
        let routing = &self.config.routing;
        let now = ids::now_ms();
        let timeout = routing.presence_timeout_ms();
        let fresh_after = now - timeout;
        let mut next: Option<i64> = None;
        let mut soonest = |t: i64| next = Some(next.map_or(t, |n| n.min(t)));

        let (expired, later) = self.store.due_offers(account, now).await?;
        if let Some(t) = later {
            soonest(t);
        }
        for offer in expired {
            if let Ok(ended) = self
                .store
                .end_offer(account, &offer.id, None, OfferEnd::Expired, now)
                .await?
            {
                self.publish(account, "offer.withdrawn", json!(ended)).await;
            }
        }

        for held in self
            .store
            .held_conversations(account, fresh_after, timeout)
            .await?
        {
            let grace_due = held
                .offline_since
                .or(held.fresh_until)
                .map(|t| t.saturating_add(routing.grace_ms()));
            let reply_due = routing
                .no_reply_ms()
                .filter(|_| !held.replied)
                .map(|limit| held.assigned_at.saturating_add(limit));
            let why = match (grace_due, reply_due) {
                (Some(g), _) if g <= now && held.offline_since.is_some() => Requeue::GraceExpired,
                (_, Some(r)) if r <= now => Requeue::NoReply,
                _ => {
                    grace_due
                        .into_iter()
                        .chain(reply_due)
                        .for_each(&mut soonest);
                    continue;
                }
            };
            if let Some(conv) = self
                .store
                .requeue(account, &held.conversation_id, &held.agent_id, why, now)
                .await?
            {
                debug!(conversation = %conv.id, reason = why.as_str(), "Back to the queue.");
                let mut data = json!(conv);
                data["previous_assignee_id"] = json!(held.agent_id);
                self.publish(account, "conversation.requeued", data).await;
            }
        }

        let recheck = routing
            .no_reply_ms()
            .unwrap_or(i64::MAX)
            .min(timeout)
            .saturating_add(1);
        let mut picture = load_picture(&self.store, &self.config, account, fresh_after).await?;
        let (mut waiting, traced): (Vec<_>, Vec<_>) = self
            .store
            .waiting_conversations(account, now - routing.engine().affinity_window_ms)
            .await?
            .into_iter()
            .unzip();
        self.sla_urgency(account, &mut waiting).await?;
        let mut waits = Vec::new();
        let mut placed_here = 0;
        for (i, plan) in picture.order(&waiting, now) {
            if let Some(t) = plan.next_change_at {
                soonest(t);
            }
            let w = &waiting[i];
            let Some(ch) = channel_index(&w.conv.channel) else {
                continue;
            };
            let step = i64::try_from(plan.step).unwrap_or(i64::MAX);
            if !picture.has_free(ch) && traced[i] == Some(step) {
                // Nobody can take it and its wait at this step is already explained.
                continue;
            }
            let decision = picture.decide_planned(w, plan, now);
            let trace = || serde_json::to_string(&decision.trace).unwrap_or_default();
            let Some(agent) = decision.agent.clone() else {
                if traced[i] != Some(step) {
                    waits.push((w.id.clone(), step, trace()));
                }
                continue;
            };
            let trace = trace();
            // Decided on the pass's clock; committed (and timed) on the wall clock.
            let at = ids::now_ms();
            let offer_expires_at = match decision.mode {
                Mode::Offer { timeout_ms } => Some(at.saturating_add(timeout_ms)),
                Mode::Auto => None,
            };
            let placed = self
                .store
                .place(&Placement {
                    account_id: account,
                    conversation_id: &w.id,
                    agent_id: &agent,
                    channel: &w.conv.channel,
                    step,
                    offer_expires_at,
                    fresh_after,
                    trace: &trace,
                    now: at,
                })
                .await?;
            let outcome = match &placed {
                Placed::Assigned(_) => "assigned",
                Placed::Offered(..) => "offered",
                Placed::Lost(_) => "lost",
            };
            metrics::counter!("switchboard_routing_decisions_total", "outcome" => outcome)
                .increment(1);
            if !matches!(placed, Placed::Lost(_)) {
                placed_here += 1;
            }
            match placed {
                Placed::Assigned(conv) => {
                    picture.take(&agent, ch, now);
                    // Its no-reply limit, or the moment its holder could go stale, is a
                    // deadline the next pass reads exactly from the store.
                    soonest(now.saturating_add(recheck));
                    self.publish(account, "conversation.assigned", json!(conv))
                        .await;
                }
                Placed::Offered(_, offer) => {
                    picture.take(&agent, ch, now);
                    soonest(offer.expires_at_ms);
                    self.publish(account, "offer.created", json!(offer)).await;
                }
                Placed::Lost(what) => {
                    debug!(conversation = %w.id, agent, what, "Lost a placement to another writer.");
                    if what == "agent" {
                        // Full or offline by now: not for the rest of this pass.
                        picture.set_online(&agent, false);
                    }
                    soonest(now + RETRY_MS);
                }
            }
        }
        metrics::gauge!("switchboard_waiting_conversations", "account" => account.to_owned())
            .set((waiting.len() - placed_here) as f64);
        metrics::histogram!("switchboard_routing_pass_seconds")
            .record((ids::now_ms() - now).max(0) as f64 / 1000.0);
        // After the placements, so a burst of new arrivals never delays one.
        self.store.trace_waiting(account, &waits, now).await?;
        Ok(next)
    }

    async fn publish(&self, account: &str, kind: &str, data: serde_json::Value) {
        self.events.publish(account, kind, data).await;
    }

    /// SLA urgency: a waiting conversation whose response clock has reached its warning is
    /// urgent from then on. The engine makes a conversation urgent `urgency_margin` before its
    /// reply deadline, so the deadline it is given is the warning plus the margin (or the
    /// WhatsApp window's close, if earlier): urgent conversations are then served in the order
    /// they became urgent, whichever clock made them so. Nothing is read for an account
    /// without SLA policies.
    async fn sla_urgency(&self, account: &str, waiting: &mut [Waiting]) -> Result<(), StoreError> {
        if waiting.is_empty() {
            return Ok(());
        }
        let policies = match crate::sla::watch::policies(&self.store, account).await {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => return Ok(()),
            Err(e) => {
                warn!(error = %e, "Could not read SLA policies; routing without SLA urgency.");
                return Ok(());
            }
        };
        let margin = self.config.routing.engine().urgency_margin_ms;
        let watched = self
            .store
            .sla_watched(
                account,
                None,
                true,
                i64::try_from(waiting.len()).unwrap_or(i64::MAX),
            )
            .await?;
        let mut urgent: HashMap<String, i64> = HashMap::new();
        for conv in &watched {
            if let Some((policy, hours)) =
                crate::sla::watch::covering(&policies, &conv.inbox_id, conv.team_id.as_deref())
                && let Some(from) = crate::sla::urgent_from(policy, hours, &conv.moments)
            {
                urgent.insert(conv.id.clone(), from.saturating_add(margin));
            }
        }
        for w in waiting.iter_mut() {
            if let Some(deadline) = urgent.get(&w.id) {
                w.reply_deadline = Some(w.reply_deadline.map_or(*deadline, |d| d.min(*deadline)));
            }
        }
        Ok(())
    }
}

/// The account's picture now: its routable agents and its rules, compiled. A stored rule that
/// no longer compiles (the schema changed) is skipped with a warning.
pub async fn load_picture(
    store: &Store,
    config: &Config,
    account: &str,
    fresh_after: i64,
) -> Result<Picture, StoreError> {
    let schema = rule_schema();
    let rules: Vec<Rule> = store
        .list_routing_rules(account)
        .await?
        .into_iter()
        .filter_map(|r| {
            let steps: Vec<(String, i64, Option<i64>)> = r
                .steps
                .iter()
                .map(|s| {
                    (
                        s.target.clone(),
                        s.priority,
                        s.timeout_secs.map(|t| t.saturating_mul(1000)),
                    )
                })
                .collect();
            let mode = if r.mode == "offer" {
                Mode::Offer {
                    timeout_ms: r.offer_timeout_secs.saturating_mul(1000),
                }
            } else {
                Mode::Auto
            };
            compile_rule(&r.id, &r.name, &r.match_expr, &steps, mode, &schema)
                .inspect_err(|e| warn!(rule = %r.id, error = %e, "A stored rule no longer compiles; skipped."))
                .ok()
        })
        .collect();
    let agents = store.routable_agents(account, fresh_after).await?;
    Ok(Picture::new(agents, rules, config.routing.engine()))
}

fn note(received: Received, dirty: &mut BTreeSet<String>, next_resync: &mut tokio::time::Instant) {
    match received {
        Received::Message(account) => {
            dirty.insert(account.to_string());
        }
        // Wakes were missed: resync every account now.
        Received::Lagged(_) => *next_resync = tokio::time::Instant::now(),
    }
}
