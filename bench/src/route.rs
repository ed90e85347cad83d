//! The `route` scenario: what the assignment engine's decision core costs, in process, with no
//! hub. It builds one [`Picture`] the size of a large account (by default 10,000 online agents
//! in 20 teams with 30 skills and 3 languages, 100,000 waiting conversations over the three
//! channels, a handful of realistic rules and the default rule) and times:
//!
//! 1. `order` over the whole queue (a dispatcher pass starts with it);
//! 2. one `decide_planned` per conversation, plus `take` when an agent is chosen, over the
//!    queue in order (conversations of a channel with no free slot are skipped, as the
//!    dispatcher skips them) until the queue ends;
//! 3. then, until `--decisions` decisions in all, the conversations still waiting in turn, with
//!    one random agent's slot on the conversation's channel released before each decision (as
//!    if a conversation had been resolved), so every decision runs against a nearly full floor.
//!
//! Only `decide_planned` + `take` are inside the per-decision timer; making the plan for
//! phase 3, releasing the slot and the bookkeeping are outside it. Everything is seeded
//! (`--seed`), so a run is repeatable.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use switchboard_routing::engine::{
    Agent, CHANNEL_COUNT, EngineConfig, LastAgent, Mode, Picture, Plan, Rule, Waiting,
    channel_index, compile_rule,
};
use switchboard_routing::expr::{AgentView, CHANNELS, ConvView, Schema, Type, Value};

use crate::report::{RouteReport, Spread};

#[derive(Args)]
pub struct RouteArgs {
    /// Agents in the account, all online.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    agents: u64,
    /// Conversations waiting.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    waiting: u64,
    /// Decisions to time in all (the pass over the queue, then with a slot freed before each).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    decisions: u64,
    /// How many times to time `order` over the whole queue.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    order_runs: u64,
    /// Seed of the generated account and of the slots released.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Decisions slower than this (ns) are recorded as this.
const MAX_NS: u64 = 60_000_000_000;

const HOUR: i64 = 3_600_000;

/// Teams and how many agents in a hundred are on each (an agent is on one or two).
const TEAMS: [(&str, u64); 20] = [
    ("support", 30),
    ("payments", 12),
    ("sales", 10),
    ("vip", 2),
    ("onboarding", 6),
    ("retention", 5),
    ("tier2", 6),
    ("fraud", 3),
    ("shipping", 5),
    ("returns", 5),
    ("partners", 2),
    ("enterprise", 3),
    ("smb", 4),
    ("mobile", 4),
    ("web", 4),
    ("api", 2),
    ("latam", 6),
    ("emea", 6),
    ("apac", 4),
    ("night", 3),
];

const SKILLS: [&str; 30] = [
    "billing",
    "refunds",
    "tech",
    "account_management",
    "onboarding",
    "shipping",
    "returns",
    "fraud",
    "kyc",
    "api",
    "mobile_app",
    "web_app",
    "integrations",
    "invoicing",
    "tax",
    "payouts",
    "chargebacks",
    "subscriptions",
    "pricing",
    "upsell",
    "compliance",
    "security",
    "data_export",
    "reporting",
    "sso",
    "hardware",
    "logistics",
    "warranty",
    "escalations",
    "social",
];

const LANGS: [&str; 3] = ["en", "es", "pt"];

/// (inbox, its team for the default rule, weight)
const INBOXES: [(&str, Option<&str>, u64); 4] = [
    ("billing", Some("payments"), 30),
    ("support", Some("support"), 35),
    ("sales", Some("sales"), 15),
    ("general", None, 20),
];

const MESSAGES: [&str; 6] = [
    "Hi, I was charged twice this month",
    "The app shows an error when I log in",
    "Can I upgrade my plan?",
    "Where is my order?",
    "It keeps crashing since the update, error 500",
    "Hola, necesito ayuda con mi factura",
];

/// (name, match, steps as (target, priority, timeout ms), mode)
type RuleSpec = (
    &'static str,
    &'static str,
    &'static [(&'static str, i64, Option<i64>)],
    Mode,
);

const RULES: [RuleSpec; 5] = [
    (
        "VIP",
        "contact.vip == true",
        &[
            (
                "team == \"vip\" and skill(\"account_management\") >= 3",
                10,
                Some(60_000),
            ),
            (
                "skill(\"account_management\") >= 2 or team == \"enterprise\"",
                10,
                None,
            ),
        ],
        Mode::Offer { timeout_ms: 30_000 },
    ),
    (
        "Billing in Spanish",
        "inbox == \"billing\" and language == \"es\"",
        &[
            (
                "skill(\"billing\") >= 3 and lang(\"es\") >= 2 and team == \"payments\"",
                2,
                Some(120_000),
            ),
            (
                "skill(\"billing\") >= 1 and lang(\"es\") >= 1",
                2,
                Some(300_000),
            ),
            ("lang(\"es\") >= 1", 1, None),
        ],
        Mode::Auto,
    ),
    (
        "Billing",
        "inbox == \"billing\"",
        &[
            (
                "skill(\"billing\") >= 3 and team == \"payments\"",
                1,
                Some(120_000),
            ),
            (
                "skill(\"billing\") >= 1 or skill(\"invoicing\") >= 2",
                1,
                None,
            ),
        ],
        Mode::Auto,
    ),
    (
        "Errors and crashes",
        "keyword(\"error\") or keyword(\"crash\") or keyword(\"crashing\")",
        &[
            (
                "skill(\"tech\") >= 3 and lang(\"en\") >= 3",
                0,
                Some(180_000),
            ),
            ("team == \"support\" or skill(\"tech\") >= 1", 0, None),
        ],
        Mode::Auto,
    ),
    (
        "Sales",
        "inbox == \"sales\" and priority >= 1",
        &[("team == \"sales\" and skill(\"upsell\") >= 2", 1, None)],
        Mode::Auto,
    ),
];

/// xorshift64*: deterministic and cheap; the bench needs repeatability, not quality.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Never zero; spread small seeds.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn weighted<'a, T>(&mut self, items: &'a [(T, u64)]) -> &'a T {
        let total: u64 = items.iter().map(|(_, w)| w).sum();
        let mut pick = self.below(total);
        for (item, w) in items {
            if pick < *w {
                return item;
            }
            pick -= w;
        }
        &items[items.len() - 1].0
    }
}

fn agent_id(i: u64) -> String {
    format!("agent-{i:06}")
}

fn make_agents(rng: &mut Rng, n: u64, now: i64) -> Vec<Agent> {
    (0..n)
        .map(|i| {
            let mut teams = vec![(*rng.weighted(&TEAMS)).to_owned()];
            if rng.chance(40) {
                let second = (*rng.weighted(&TEAMS)).to_owned();
                if !teams.contains(&second) {
                    teams.push(second);
                }
            }
            let mut skills = BTreeMap::new();
            for _ in 0..rng.range(2, 6) {
                // The first few skills are the common ones.
                let s = if rng.chance(60) {
                    rng.below(6)
                } else {
                    rng.below(SKILLS.len() as u64)
                };
                skills.insert(SKILLS[s as usize].to_owned(), rng.range(0, 5) as u8);
            }
            let mut languages = BTreeMap::new();
            if rng.chance(90) {
                languages.insert(LANGS[0].to_owned(), rng.range(2, 5) as u8);
            }
            if rng.chance(35) {
                languages.insert(LANGS[1].to_owned(), rng.range(1, 5) as u8);
            }
            if rng.chance(15) {
                languages.insert(LANGS[2].to_owned(), rng.range(1, 5) as u8);
            }
            let mut capacity = [0u32; CHANNEL_COUNT];
            for c in &mut capacity {
                *c = rng.range(2, 6) as u32;
            }
            Agent {
                view: AgentView {
                    id: agent_id(i),
                    teams,
                    branch: None,
                    skills,
                    languages,
                },
                online: true,
                capacity,
                active: [0; CHANNEL_COUNT],
                last_assigned_at: now - rng.below(HOUR as u64) as i64,
            }
        })
        .collect()
}

fn make_waiting(rng: &mut Rng, n: u64, agents: u64, now: i64) -> Vec<Waiting> {
    let channels: [(usize, u64); CHANNEL_COUNT] = [(0, 60), (1, 15), (2, 25)];
    let inboxes: Vec<((&str, Option<&str>), u64)> =
        INBOXES.iter().map(|(i, t, w)| ((*i, *t), *w)).collect();
    let languages = [("en", 60), ("es", 30), ("pt", 10)];
    (0..n)
        .map(|i| {
            let channel = *rng.weighted(&channels);
            let (inbox, team) = *rng.weighted(&inboxes);
            let language = *rng.weighted(&languages);
            let queued_at = now - rng.below(2 * HOUR as u64) as i64;
            let mut contact = BTreeMap::new();
            if rng.chance(3) {
                contact.insert("vip".to_owned(), Value::Bool(true));
            }
            let priority = match rng.below(100) {
                0..=1 => 2,
                2..=11 => 1,
                _ => 0,
            };
            // WhatsApp's window: 24 h from the customer's last message, within the last day.
            let reply_deadline =
                (channel == 0).then(|| queued_at - rng.below(22 * HOUR as u64) as i64 + 24 * HOUR);
            let last_agent = rng.chance(30).then(|| LastAgent {
                id: agent_id(rng.below(agents)),
                at: now - rng.below(48 * HOUR as u64) as i64,
            });
            let excluded = if rng.chance(5) {
                (0..rng.range(1, 2))
                    .map(|_| agent_id(rng.below(agents)))
                    .collect()
            } else {
                Vec::new()
            };
            Waiting {
                id: format!("conv-{i:08}"),
                conv: ConvView {
                    channel: CHANNELS[channel].to_owned(),
                    inbox: inbox.to_owned(),
                    language: Some(language.to_owned()),
                    labels: Vec::new(),
                    priority,
                    first_message: Some(
                        MESSAGES[rng.below(MESSAGES.len() as u64) as usize].to_owned(),
                    ),
                    contact,
                },
                inbox_team: team.map(str::to_owned),
                queued_at,
                reply_deadline,
                last_agent,
                excluded,
            }
        })
        .collect()
}

fn make_rules() -> anyhow::Result<Vec<Rule>> {
    let schema = Schema::default().contact("vip", Type::Bool);
    RULES
        .iter()
        .enumerate()
        .map(|(i, (name, matcher, steps, mode))| {
            let steps: Vec<(String, i64, Option<i64>)> = steps
                .iter()
                .map(|(t, p, to)| ((*t).to_owned(), *p, *to))
                .collect();
            compile_rule(&format!("rr_{i}"), name, matcher, &steps, *mode, &schema)
                .map_err(|e| anyhow::anyhow!("rule {name:?}: {e}"))
        })
        .collect()
}

/// The timed decisions.
struct Decisions {
    /// Every decision, ns.
    all: Histogram<u64>,
    /// Those that chose an agent (and took its slot).
    assigned: Histogram<u64>,
    /// Those that found nobody.
    none: Histogram<u64>,
    /// Σ eligible candidates (the trace's `with_capacity`).
    candidates: u64,
    /// Σ of the timed spans.
    busy_ns: u64,
}

impl Decisions {
    fn new() -> anyhow::Result<Self> {
        let h = || Histogram::new_with_bounds(1, MAX_NS, 3).context("histogram bounds");
        Ok(Decisions {
            all: h()?,
            assigned: h()?,
            none: h()?,
            candidates: 0,
            busy_ns: 0,
        })
    }

    fn count(&self) -> u64 {
        self.all.len()
    }

    /// Times `decide_planned`, plus `take` when an agent is chosen; whether one was.
    fn decide(&mut self, picture: &mut Picture, w: &Waiting, plan: Plan, now: i64) -> bool {
        let ch = channel_index(&w.conv.channel).unwrap_or(0);
        let started = Instant::now();
        let d = picture.decide_planned(w, plan, now);
        if let Some(agent) = &d.agent {
            picture.take(agent, ch, now);
        }
        let chosen = d.agent.is_some();
        let candidates = d.trace.counts.with_capacity as u64;
        // Dropping the decision (its trace) is part of its cost.
        drop(d);
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(MAX_NS);
        self.all.saturating_record(ns);
        self.busy_ns += ns;
        self.candidates += candidates;
        if chosen {
            self.assigned.saturating_record(ns);
            true
        } else {
            self.none.saturating_record(ns);
            false
        }
    }
}

/// Runs `route` and prints the report.
pub fn run(args: &RouteArgs) -> anyhow::Result<bool> {
    let now: i64 = 1_750_000_000_000;
    let mut rng = Rng::new(args.seed);
    let built = Instant::now();
    let agents = make_agents(&mut rng, args.agents, now);
    let waiting = make_waiting(&mut rng, args.waiting, args.agents, now);
    let rules = make_rules()?;
    let rule_count = rules.len();
    let mut picture = Picture::new(agents, rules, EngineConfig::default());
    let build = built.elapsed();
    let slots: [u64; CHANNEL_COUNT] = std::array::from_fn(|ch| {
        picture
            .agents()
            .iter()
            .map(|a| u64::from(a.capacity[ch]))
            .sum()
    });
    let mut per_channel = [0u64; CHANNEL_COUNT];
    for w in &waiting {
        if let Some(ch) = channel_index(&w.conv.channel) {
            per_channel[ch] += 1;
        }
    }

    // 1. `order` over the whole queue.
    let mut order_ms = Vec::new();
    let mut order = Vec::new();
    for _ in 0..args.order_runs {
        let started = Instant::now();
        order = picture.order(&waiting, now);
        order_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let urgent = order.iter().filter(|(_, p)| p.urgent).count();
    let by_rule: Vec<usize> = (0..=rule_count)
        .map(|r| {
            order
                .iter()
                .filter(|(_, p)| p.rule.unwrap_or(rule_count) == r)
                .count()
        })
        .collect();

    // 2. One pass over the queue in order.
    let mut tally = Decisions::new()?;
    let mut assigned: u64 = 0;
    let mut skipped: u64 = 0;
    let mut left: VecDeque<usize> = VecDeque::new();
    let pass_started = Instant::now();
    let mut clock = now;
    for (i, plan) in order {
        if tally.count() >= args.decisions {
            left.push_back(i);
            continue;
        }
        let w = &waiting[i];
        let ch = channel_index(&w.conv.channel).unwrap_or(0);
        if !picture.has_free(ch) {
            skipped += 1;
            left.push_back(i);
            continue;
        }
        clock += 1;
        if tally.decide(&mut picture, w, plan, clock) {
            assigned += 1;
        } else {
            left.push_back(i);
        }
    }
    let pass_decisions = tally.count();
    let pass_elapsed = pass_started.elapsed();

    // 3. The floor is full: free one slot before each decision.
    let mut released = 0u64;
    let agent_ids: Vec<String> = picture.agents().iter().map(|a| a.view.id.clone()).collect();
    let freed_started = Instant::now();
    while tally.count() < args.decisions {
        let Some(i) = left.pop_front() else { break };
        let w = &waiting[i];
        let ch = channel_index(&w.conv.channel).unwrap_or(0);
        let victim = &agent_ids[rng.below(agent_ids.len() as u64) as usize];
        if picture.agent(victim).is_some_and(|a| a.active[ch] > 0) {
            picture.release(victim, ch);
            released += 1;
        }
        clock += 1;
        let plan = picture.plan(w, clock);
        if tally.decide(&mut picture, w, plan, clock) {
            assigned += 1;
        } else {
            left.push_back(i);
        }
    }
    let freed_decisions = tally.count() - pass_decisions;
    let freed_elapsed = freed_started.elapsed();
    let decisions = tally.count();

    let report = RouteReport {
        scenario: "route",
        seed: args.seed,
        agents: args.agents,
        slots,
        rules: rule_count,
        waiting: args.waiting,
        waiting_per_channel: per_channel,
        urgent: urgent as u64,
        by_rule: by_rule.iter().map(|n| *n as u64).collect(),
        build_ms: build.as_secs_f64() * 1e3,
        order_ms,
        decisions,
        pass_decisions,
        skipped_no_free_slot: skipped,
        freed_decisions,
        released,
        assigned,
        left_waiting: left.len() as u64,
        mean_candidates: tally.candidates as f64 / decisions.max(1) as f64,
        decisions_per_s: decisions as f64 / (tally.busy_ns as f64 / 1e9).max(1e-9),
        pass_s: pass_elapsed.as_secs_f64(),
        freed_s: freed_elapsed.as_secs_f64(),
        latency_us: Spread::from_ns(&tally.all),
        assigned_us: Spread::from_ns(&tally.assigned),
        no_agent_us: Spread::from_ns(&tally.none),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(decisions > 0)
}
