//! Property tests of the engine against a brute-force model.
//!
//! Random agents (teams, skill and language levels, capacities per channel including 0,
//! presence), random rules with steps, a random engine config and a random sequence of
//! operations: arrivals, presence flaps, resolutions that free a slot, declines that put a
//! conversation back in the queue with its agent excluded, and dispatch passes where the
//! driver orders the queue with [`Picture::order`], asks [`Picture::decide_planned`] for each
//! conversation in turn and calls [`Picture::take`] on the chosen agent.
//!
//! A model keeps its own copy of every agent's presence, slots and last assignment, and after
//! every operation the engine must agree with it: no agent above capacity, at most one
//! assignee per conversation, nobody assigned who is offline, excluded, full or outside the
//! step's target, `has_free` exact, and after a pass no conversation left waiting that some
//! agent could have taken (checked by brute force over every agent with the plain,
//! unindexed, unbound expression evaluation). Each plan must equal the model's (first
//! matching rule, cumulative step timeouts, tier, urgency, key), `order` must be sorted by it,
//! and each chosen agent must be the brute-force best under the documented agent order.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::tests::{agent, waiting};
use super::*;
use crate::expr::{Type, Value};

const TEAMS: [&str; 3] = ["t0", "t1", "t2"];
const SKILLS: [&str; 2] = ["billing", "tech"];
const LANGS: [&str; 2] = ["es", "en"];
const INBOXES: [&str; 2] = ["support", "sales"];
const MATCHERS: [&str; 6] = [
    "true",
    "channel == \"sms\"",
    "priority >= 1",
    "inbox == \"sales\"",
    "contact.vip == true",
    "not (channel == \"webchat\") and priority < 2",
];
const TARGETS: [&str; 9] = [
    "true",
    "team == \"t0\"",
    "skill(\"billing\") >= 2",
    "skill(\"billing\") >= 1 and lang(\"es\") >= 2",
    "team == \"t1\" or skill(\"tech\") >= 3",
    "not (team == \"t2\")",
    "team == \"t0\" and team == \"t1\"",
    "lang(\"en\") > 3 and id != \"a0\"",
    "skill(\"tech\") >= 1 and (conv.priority >= 2 or team == \"t2\")",
];

#[derive(Debug, Clone)]
struct AgentSpec {
    teams: Vec<usize>,
    skills: Vec<(usize, u8)>,
    langs: Vec<(usize, u8)>,
    capacity: [u32; CHANNEL_COUNT],
    online: bool,
    last_assigned_at: i64,
}

#[derive(Debug, Clone)]
struct RuleSpec {
    matcher: usize,
    /// (target, priority, timeout)
    steps: Vec<(usize, i64, Option<i64>)>,
    offer: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Arrive {
        channel: usize,
        inbox: usize,
        priority: i64,
        vip: bool,
        /// How long before now it was queued (it may be a returning conversation).
        queued_ago: i64,
        /// Reply deadline, relative to now.
        deadline_in: Option<i64>,
        inbox_team: Option<usize>,
        /// (agent, how long ago)
        last_agent: Option<(usize, i64)>,
        excluded: Vec<usize>,
    },
    Presence {
        agent: usize,
        online: bool,
    },
    /// An assignment ends: its slot is freed.
    Resolve {
        pick: usize,
    },
    /// The assignee hands it back: slot freed, agent excluded, back in the queue.
    Decline {
        pick: usize,
    },
    /// An administrator assigns a waiting conversation by hand, capacity or not; the engine
    /// only hears of it through `take`.
    Manual {
        pick: usize,
        agent: usize,
    },
    Pass,
}

fn agent_spec() -> impl Strategy<Value = AgentSpec> {
    (
        prop::collection::vec(0..TEAMS.len(), 0..3),
        prop::collection::vec((0..SKILLS.len(), 0u8..=5), 0..3),
        prop::collection::vec((0..LANGS.len(), 0u8..=5), 0..3),
        prop::array::uniform3(prop_oneof![2 => Just(0u32), 5 => 1u32..4]),
        prop::bool::weighted(0.75),
        ms(0..10),
    )
        .prop_map(
            |(teams, skills, langs, capacity, online, last_assigned_at)| AgentSpec {
                teams,
                skills,
                langs,
                capacity,
                online,
                last_assigned_at,
            },
        )
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    let step = (
        0..TARGETS.len(),
        -2i64..5,
        prop_oneof![1 => Just(None), 4 => ms(0..8).prop_map(Some)],
    );
    (
        0..MATCHERS.len(),
        prop::collection::vec(step, 1..4),
        any::<bool>(),
    )
        .prop_map(|(matcher, steps, offer)| RuleSpec {
            matcher,
            steps,
            offer,
        })
}

fn op() -> impl Strategy<Value = Op> {
    let arrive = (
        (0..CHANNEL_COUNT, 0..INBOXES.len(), -1i64..4, any::<bool>()),
        (
            ms(0..16),
            prop::option::weighted(0.4, ms(-2..24)),
            prop::option::weighted(0.5, 0..TEAMS.len()),
            prop::option::weighted(0.4, (0usize..16, ms(0..30))),
            prop::collection::vec(0usize..16, 0..3),
        ),
    )
        .prop_map(
            |(
                (channel, inbox, priority, vip),
                (queued_ago, deadline_in, inbox_team, last_agent, excluded),
            )| Op::Arrive {
                channel,
                inbox,
                priority,
                vip,
                queued_ago,
                deadline_in,
                inbox_team,
                last_agent,
                excluded,
            },
        );
    prop_oneof![
        6 => arrive,
        2 => (0usize..16, any::<bool>()).prop_map(|(agent, online)| Op::Presence { agent, online }),
        3 => any::<usize>().prop_map(|pick| Op::Resolve { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Decline { pick }),
        1 => (any::<usize>(), 0usize..16).prop_map(|(pick, agent)| Op::Manual { pick, agent }),
        4 => Just(Op::Pass),
    ]
}

/// Times in whole half seconds, so that boundaries (step ends, urgency, the affinity
/// window, equal aged keys) are often hit exactly.
fn ms(units: std::ops::Range<i64>) -> impl Strategy<Value = i64> {
    units.prop_map(|t| t * 500)
}

fn config() -> impl Strategy<Value = EngineConfig> {
    (ms(0..6), ms(0..20), ms(0..40)).prop_map(|(tier, urgency, affinity)| EngineConfig {
        tier_weight_ms: tier,
        urgency_margin_ms: urgency,
        affinity_window_ms: affinity,
    })
}

fn build_agent(i: usize, spec: &AgentSpec) -> Agent {
    let mut a = agent(&format!("a{i}"), &[], &[], 0);
    a.view.teams = spec.teams.iter().map(|t| TEAMS[*t].to_owned()).collect();
    a.view.skills = spec
        .skills
        .iter()
        .map(|(s, l)| (SKILLS[*s].to_owned(), *l))
        .collect::<BTreeMap<_, _>>();
    a.view.languages = spec
        .langs
        .iter()
        .map(|(s, l)| (LANGS[*s].to_owned(), *l))
        .collect::<BTreeMap<_, _>>();
    a.capacity = spec.capacity;
    a.online = spec.online;
    a.last_assigned_at = spec.last_assigned_at;
    a
}

fn build_rule(i: usize, spec: &RuleSpec) -> Rule {
    let schema = Schema::default().contact("vip", Type::Bool);
    let steps: Vec<(String, i64, Option<i64>)> = spec
        .steps
        .iter()
        .map(|(t, p, to)| (TARGETS[*t].to_owned(), *p, *to))
        .collect();
    let mode = if spec.offer {
        Mode::Offer { timeout_ms: 30_000 }
    } else {
        Mode::Auto
    };
    compile_rule(
        &format!("rr_{i}"),
        &format!("rule {i}"),
        MATCHERS[spec.matcher],
        &steps,
        mode,
        &schema,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", MATCHERS[spec.matcher]))
}

/// The model's own view of where a conversation stands.
#[derive(Debug, PartialEq, Eq)]
struct ModelPlan {
    rule: Option<usize>,
    step: usize,
    tier: i64,
    urgent: bool,
    key: (u8, i64, i64, String),
    next_change_at: Option<i64>,
}

/// The whole state the engine should agree with.
struct Model {
    config: EngineConfig,
    rules: Vec<Rule>,
    /// Presence, slots and last assignment as the model tracks them.
    agents: Vec<Agent>,
    waiting: Vec<Waiting>,
    /// Active assignments: conversation, agent index, channel, made by hand.
    assigned: Vec<(Waiting, usize, usize, bool)>,
    next_id: usize,
}

impl Model {
    fn plan(&self, w: &Waiting, now: i64) -> ModelPlan {
        let rule = self
            .rules
            .iter()
            .position(|r| !r.steps.is_empty() && r.matcher.matches(&w.conv));
        // (priority, timeout) per step; the default rule is one step, priority 0.
        let steps: Vec<(i64, Option<i64>)> = match rule {
            Some(r) => self.rules[r]
                .steps
                .iter()
                .map(|s| (s.priority, s.timeout_ms))
                .collect(),
            None => vec![(0, None)],
        };
        // Step k ends at queued_at + Σ timeout[0..=k] (never, once a timeout is missing); the
        // current step is how many ends have passed, the last one never ending.
        let end = |k: usize| -> Option<i64> {
            steps[..=k]
                .iter()
                .try_fold(w.queued_at, |at, (_, t)| t.map(|t| at + t))
        };
        let last = steps.len() - 1;
        let step = (0..last)
            .filter(|&k| end(k).is_some_and(|e| e <= now))
            .count();
        let step_change = if step < last { end(step) } else { None };
        let tier = steps[step].0 + w.conv.priority;
        let urgent_from = w.reply_deadline.map(|d| d - self.config.urgency_margin_ms);
        let urgent = urgent_from.is_some_and(|u| now >= u);
        let urgency_change = urgent_from.filter(|_| !urgent);
        let next_change_at = match (step_change, urgency_change) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let key = match (urgent, w.reply_deadline) {
            (true, Some(d)) => (0, d, w.queued_at, w.id.clone()),
            _ => (
                1,
                w.queued_at - tier * self.config.tier_weight_ms,
                w.queued_at,
                w.id.clone(),
            ),
        };
        ModelPlan {
            rule,
            step,
            tier,
            urgent,
            key,
            next_change_at,
        }
    }

    /// Brute force: whether agent `i` could take `w` right now under `plan`.
    fn eligible(&self, w: &Waiting, plan: &ModelPlan, i: usize) -> bool {
        let a = &self.agents[i];
        let Some(ch) = channel_index(&w.conv.channel) else {
            return false;
        };
        let target_holds = match plan.rule {
            Some(r) => self.rules[r].steps[plan.step]
                .target
                .matches(&w.conv, &a.view),
            None => w
                .inbox_team
                .as_ref()
                .is_none_or(|t| a.view.teams.contains(t)),
        };
        a.online
            && a.active[ch] < a.capacity[ch]
            && target_holds
            && !w.excluded.contains(&a.view.id)
    }

    /// The documented agent order as a sort key (smaller is better), for one eligible agent.
    fn rank(&self, w: &Waiting, plan: &ModelPlan, i: usize, now: i64) -> Rank {
        let a = &self.agents[i];
        let ch = channel_index(&w.conv.channel).unwrap_or(0);
        let affinity = w
            .last_agent
            .as_ref()
            .is_some_and(|l| l.id == a.view.id && now - l.at <= self.config.affinity_window_ms);
        let fit: u32 = match plan.rule {
            Some(r) => {
                let req = self.rules[r].steps[plan.step].target.requirements();
                let over = |have: Option<&u8>, min: &u8| {
                    u32::from(have.copied().unwrap_or(0).saturating_sub(*min))
                };
                req.skills
                    .iter()
                    .map(|(s, m)| over(a.view.skills.get(s), m))
                    .chain(
                        req.languages
                            .iter()
                            .map(|(l, m)| over(a.view.languages.get(l), m)),
                    )
                    .sum()
            }
            None => 0,
        };
        // Spare ratio as an exact fraction, larger first.
        let spare = Reverse(Ratio(a.capacity[ch] - a.active[ch], a.capacity[ch]));
        Rank(
            Reverse(affinity),
            Reverse(fit),
            spare,
            a.last_assigned_at,
            a.view.id.clone(),
        )
    }

    fn has_free(&self, ch: usize) -> bool {
        self.agents
            .iter()
            .any(|a| a.online && a.active[ch] < a.capacity[ch])
    }

    fn index(&self, id: &str) -> usize {
        self.agents
            .iter()
            .position(|a| a.view.id == id)
            .unwrap_or_else(|| panic!("unknown agent {id}"))
    }
}

/// The documented agent order, field by field; smaller is better.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rank(Reverse<bool>, Reverse<u32>, Reverse<Ratio>, i64, String);

impl Rank {
    /// The first part that tells `self` from `other` apart, by the trace's names.
    fn separating(&self, other: &Rank) -> &'static str {
        if self.0 != other.0 {
            "affinity"
        } else if self.1 != other.1 {
            "skill_fit"
        } else if self.2 != other.2 {
            "spare_capacity"
        } else if self.3 != other.3 {
            "least_recently_assigned"
        } else {
            "agent_id"
        }
    }
}

/// `free / capacity`, compared exactly (capacity > 0 for every eligible agent).
#[derive(Eq)]
struct Ratio(u32, u32);

impl PartialEq for Ratio {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        (u64::from(self.0) * u64::from(other.1)).cmp(&(u64::from(other.0) * u64::from(self.1)))
    }
}

/// One dispatch pass, checked decision by decision.
fn pass(model: &mut Model, picture: &mut Picture, now: i64) -> Result<(), TestCaseError> {
    let order = picture.order(&model.waiting, now);
    // Each conversation once, each plan the model's, sorted by the key.
    let mut seen: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    seen.sort_unstable();
    prop_assert_eq!(seen, (0..model.waiting.len()).collect::<Vec<_>>());
    for (i, plan) in &order {
        let w = &model.waiting[*i];
        let mine = model.plan(w, now);
        let theirs = ModelPlan {
            rule: plan.rule,
            step: plan.step,
            tier: plan.tier,
            urgent: plan.urgent,
            key: (
                plan.key.class,
                plan.key.value,
                plan.key.queued_at,
                plan.key.id.clone(),
            ),
            next_change_at: plan.next_change_at,
        };
        prop_assert_eq!(&theirs, &mine, "plan of {}", w.id);
        prop_assert_eq!(plan, &picture.plan(w, now));
    }
    prop_assert!(order.windows(2).all(|p| p[0].1.key < p[1].1.key));

    let mut taken: Vec<usize> = Vec::new();
    for (i, plan) in order {
        let w = &model.waiting[i];
        let mine = model.plan(w, now);
        let eligible: Vec<usize> = (0..model.agents.len())
            .filter(|&a| model.eligible(w, &mine, a))
            .collect();
        let mut ranked: Vec<(Rank, usize)> = eligible
            .iter()
            .map(|&a| (model.rank(w, &mine, a, now), a))
            .collect();
        ranked.sort();
        let best = ranked.first().map(|(_, a)| *a);
        let decided_by = match ranked.as_slice() {
            [] => None,
            [_] => Some("only_candidate"),
            [(a, _), (b, _), ..] => Some(a.separating(b)),
        };
        let top: Vec<&str> = ranked
            .iter()
            .take(TOP)
            .map(|(_, a)| model.agents[*a].view.id.as_str())
            .collect();
        let d = picture.decide_planned(w, plan, now);
        let c = d.trace.counts;
        prop_assert!(
            c.agents >= c.indexed
                && c.indexed >= c.target
                && c.target >= c.not_excluded
                && c.not_excluded >= c.online
                && c.online >= c.with_capacity,
            "{:?}",
            c
        );
        prop_assert_eq!(c.agents, model.agents.len());
        prop_assert_eq!(c.with_capacity, eligible.len(), "candidates for {}", w.id);
        prop_assert_eq!(
            d.trace
                .top
                .iter()
                .map(|s| s.agent_id.as_str())
                .collect::<Vec<_>>(),
            top
        );
        prop_assert_eq!(d.trace.decided_by, decided_by);
        prop_assert_eq!(d.trace.chosen.clone(), d.agent.clone());
        prop_assert_eq!(
            d.agent.clone(),
            best.map(|b| model.agents[b].view.id.clone()),
            "best agent for {}",
            w.id
        );
        let Some(id) = d.agent else { continue };
        let a = model.index(&id);
        let ch = channel_index(&w.conv.channel).unwrap_or(usize::MAX);
        // The invariants, spelled out (they also follow from `best` being eligible).
        prop_assert!(model.agents[a].online, "{} is offline", id);
        prop_assert!(!w.excluded.contains(&id), "{} is excluded", id);
        prop_assert!(model.eligible(w, &mine, a), "{} not eligible", id);
        prop_assert!(
            model.assigned.iter().all(|(x, ..)| x.id != w.id),
            "{} assigned twice",
            w.id
        );
        picture.take(&id, ch, now);
        let agent = &mut model.agents[a];
        agent.active[ch] += 1;
        agent.last_assigned_at = agent.last_assigned_at.max(now);
        // The engine never takes an agent past capacity.
        prop_assert!(agent.active[ch] <= agent.capacity[ch]);
        model.assigned.push((w.clone(), a, ch, false));
        taken.push(i);
    }
    let mut k = 0;
    model.waiting.retain(|_| {
        k += 1;
        !taken.contains(&(k - 1))
    });

    // Nobody left waiting could have been placed.
    for w in &model.waiting {
        let mine = model.plan(w, now);
        let could = (0..model.agents.len()).find(|&a| model.eligible(w, &mine, a));
        prop_assert!(
            could.is_none(),
            "{} still waiting though {:?} could take it",
            w.id,
            could.map(|a| &model.agents[a].view.id)
        );
    }
    Ok(())
}

/// The checks after every operation.
fn agree(model: &Model, picture: &Picture) -> Result<(), TestCaseError> {
    for (i, a) in model.agents.iter().enumerate() {
        let e = picture.agent(&a.view.id);
        prop_assert!(e.is_some());
        let e = e.unwrap_or_else(|| unreachable!());
        prop_assert_eq!(e.online, a.online);
        prop_assert_eq!(e.active, a.active);
        prop_assert_eq!(e.last_assigned_at, a.last_assigned_at);
        for ch in 0..CHANNEL_COUNT {
            // Only hand-made assignments may take an agent over capacity.
            let engine_made = model
                .assigned
                .iter()
                .filter(|(_, x, c, manual)| *x == i && *c == ch && !manual)
                .count();
            prop_assert!(
                engine_made as u32 <= a.capacity[ch],
                "{} over capacity on {}",
                a.view.id,
                ch
            );
        }
    }
    for ch in 0..CHANNEL_COUNT {
        prop_assert_eq!(picture.has_free(ch), model.has_free(ch), "has_free({})", ch);
    }
    let mut ids: Vec<&str> = model
        .assigned
        .iter()
        .map(|(w, ..)| w.id.as_str())
        .chain(model.waiting.iter().map(|w| w.id.as_str()))
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    prop_assert_eq!(ids.len(), n, "a conversation is in two places");
    Ok(())
}

fn run(
    config: EngineConfig,
    agent_specs: Vec<AgentSpec>,
    rule_specs: Vec<RuleSpec>,
    ops: Vec<(i64, Op)>,
) -> Result<(), TestCaseError> {
    let agents: Vec<Agent> = agent_specs
        .iter()
        .enumerate()
        .map(|(i, s)| build_agent(i, s))
        .collect();
    let rules: Vec<Rule> = rule_specs
        .iter()
        .enumerate()
        .map(|(i, s)| build_rule(i, s))
        .collect();
    let mut picture = Picture::new(agents.clone(), rules.clone(), config.clone());
    let mut model = Model {
        config,
        rules,
        agents,
        waiting: Vec::new(),
        assigned: Vec::new(),
        next_id: 0,
    };
    let n = model.agents.len();
    let mut now = 20_000;
    agree(&model, &picture)?;
    for (dt, op) in ops {
        now += dt;
        match op {
            Op::Arrive {
                channel,
                inbox,
                priority,
                vip,
                queued_ago,
                deadline_in,
                inbox_team,
                last_agent,
                excluded,
            } => {
                let mut w = waiting(&format!("c{}", model.next_id), now - queued_ago);
                model.next_id += 1;
                w.conv.channel = CHANNELS[channel].to_owned();
                w.conv.inbox = INBOXES[inbox].to_owned();
                w.conv.priority = priority;
                if vip {
                    w.conv.contact.insert("vip".to_owned(), Value::Bool(true));
                }
                w.reply_deadline = deadline_in.map(|d| now + d);
                w.inbox_team = inbox_team.map(|t| TEAMS[t].to_owned());
                w.last_agent = last_agent.map(|(a, ago)| LastAgent {
                    id: format!("a{}", a % n.max(1)),
                    at: now - ago,
                });
                w.excluded = excluded
                    .into_iter()
                    .map(|a| format!("a{}", a % n.max(1)))
                    .collect();
                model.waiting.push(w);
            }
            Op::Presence { agent, online } => {
                if n > 0 {
                    let a = agent % n;
                    picture.set_online(&model.agents[a].view.id, online);
                    model.agents[a].online = online;
                }
            }
            Op::Resolve { pick } | Op::Decline { pick } if !model.assigned.is_empty() => {
                let (mut w, a, ch, _) = model.assigned.remove(pick % model.assigned.len());
                picture.release(&model.agents[a].view.id, ch);
                model.agents[a].active[ch] -= 1;
                if matches!(op, Op::Decline { .. }) {
                    // Back in the queue at its old place, without that agent.
                    w.excluded.push(model.agents[a].view.id.clone());
                    model.waiting.push(w);
                }
            }
            Op::Resolve { .. } | Op::Decline { .. } => {}
            Op::Manual { pick, agent } if !model.waiting.is_empty() && n > 0 => {
                let w = model.waiting.remove(pick % model.waiting.len());
                let a = agent % n;
                if let Some(ch) = channel_index(&w.conv.channel) {
                    picture.take(&model.agents[a].view.id, ch, now);
                    let agent = &mut model.agents[a];
                    agent.active[ch] += 1;
                    agent.last_assigned_at = agent.last_assigned_at.max(now);
                    model.assigned.push((w, a, ch, true));
                }
            }
            Op::Manual { .. } => {}
            Op::Pass => pass(&mut model, &mut picture, now)?,
        }
        agree(&model, &picture)?;
    }
    pass(&mut model, &mut picture, now)?;
    agree(&model, &picture)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    #[test]
    fn dispatch_keeps_the_invariants(
        config in config(),
        agents in prop::collection::vec(agent_spec(), 0..12),
        rules in prop::collection::vec(rule_spec(), 0..4),
        ops in prop::collection::vec((ms(0..6), op()), 1..80),
    ) {
        run(config, agents, rules, ops)?;
    }
}
