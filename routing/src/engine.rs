//! The decision core of the assignment engine (docs/ROUTING-DESIGN.md): given a picture of the
//! account's agents and rules, which step a waiting conversation is at, where it stands in the
//! queue, and which agent should take it, with a trace that says why.
//!
//! Pure and synchronous. The hub builds a [`Picture`] from the store, asks it for decisions,
//! and commits each one in one guarded transaction; the store, not this module, is the arbiter
//! of what actually happened.
//!
//! # Queue order
//!
//! Every waiting conversation has a fixed *order key*; the smaller key is served first:
//!
//! 1. **Deadline urgency.** A conversation whose reply window (WhatsApp's 24 hours) ends within
//!    [`EngineConfig::urgency_margin_ms`] goes before every other, earliest deadline first.
//! 2. **Priority tiers, aged.** Otherwise the key is `queued_at − tier × tier_weight_ms`: a tier
//!    is worth a fixed head start. Between two conversations whose arrival differs by less than
//!    the tier gap × `tier_weight_ms`, the higher tier always wins (strict); a lower tier that
//!    has waited longer than that goes first, so no tier starves for longer than a bound the
//!    operator sets. Equal tiers are strictly first come, first served.
//! 3. `queued_at`, then the conversation id: deterministic.
//!
//! The tier is the current step's priority plus the conversation's own priority.
//!
//! # Steps
//!
//! Step timeouts are cumulative from `queued_at` (TaskRouter's semantics): step *k* applies
//! while `now < queued_at + Σ timeout[0..=k]`. The last step applies forever, whatever its
//! timeout, so a conversation is never dropped.
//!
//! # Agent order
//!
//! Among eligible agents (the step's target holds, not excluded from this conversation,
//! online, a free slot on the channel), compared lexicographically:
//!
//! 1. affinity: the contact's last agent, within [`EngineConfig::affinity_window_ms`];
//! 2. skill fit: Σ over the step's required skills and languages of (level − minimum);
//! 3. spare capacity ratio on the channel (free ÷ capacity, compared exactly);
//! 4. least recently assigned;
//! 5. agent id.
//!
//! # Cost
//!
//! A step's target that reads no conversation field selects the same agents for every
//! conversation: the first decision on that step finds them (with their skill fit) once per
//! picture. After that a decision walks those agents checking only exclusion, presence and a
//! free slot on a packed per-agent record, and keeps the best [`TOP`] with integer
//! comparisons (ids compared by their precomputed rank). Targets that read the conversation
//! are bound to it and evaluated per agent, from the smallest index list. `switchboard-bench
//! route` measures it at 10,000 agents and 100,000 waiting conversations.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;

use crate::expr::{AgentView, CHANNELS, ConvView, MatchExpr, Requirements, Schema, TargetExpr};

/// The index of `channel` in [`CHANNELS`].
pub fn channel_index(channel: &str) -> Option<usize> {
    CHANNELS.iter().position(|c| *c == channel)
}

/// How many channels there are; capacities are arrays indexed by [`channel_index`].
pub const CHANNEL_COUNT: usize = 3;

/// Knobs of the ordering.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// What one tier point is worth in waiting time, in ms.
    pub tier_weight_ms: i64,
    /// A conversation whose reply window ends within this many ms jumps the queue.
    pub urgency_margin_ms: i64,
    /// The contact's last agent is preferred if they last handled the contact this recently.
    pub affinity_window_ms: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            tier_weight_ms: 60_000,
            urgency_margin_ms: 2 * 3_600_000,
            affinity_window_ms: 24 * 3_600_000,
        }
    }
}

/// An agent as the engine sees it.
#[derive(Debug, Clone)]
pub struct Agent {
    pub view: AgentView,
    /// Online with a fresh heartbeat.
    pub online: bool,
    /// Slots per channel, indexed by [`channel_index`]. 0: never routed that channel.
    pub capacity: [u32; CHANNEL_COUNT],
    /// Slots in use (assigned and offered) per channel.
    pub active: [u32; CHANNEL_COUNT],
    /// When the agent was last given a conversation (ms; 0: never).
    pub last_assigned_at: i64,
}

impl Agent {
    fn free(&self, ch: usize) -> u32 {
        self.capacity[ch].saturating_sub(self.active[ch])
    }
}

/// How a rule hands a conversation over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Mode {
    /// Assigned at once.
    Auto,
    /// Offered; the agent has `timeout_ms` to accept.
    Offer { timeout_ms: i64 },
}

/// One step of a rule.
#[derive(Debug, Clone)]
pub struct Step {
    pub target: TargetExpr,
    pub priority: i64,
    /// `None`: no timeout (only meaningful on the last step).
    pub timeout_ms: Option<i64>,
}

/// A compiled routing rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub matcher: MatchExpr,
    pub steps: Vec<Step>,
    pub mode: Mode,
}

/// The contact's previous agent.
#[derive(Debug, Clone)]
pub struct LastAgent {
    pub id: String,
    /// When they were last assigned one of the contact's conversations (ms).
    pub at: i64,
}

/// A conversation waiting for an agent.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub id: String,
    pub conv: ConvView,
    /// The inbox's team (name), which the default rule routes to; `None`: any agent.
    pub inbox_team: Option<String>,
    /// Its place in the queue (ms); kept when it returns to the queue.
    pub queued_at: i64,
    /// When the provider's reply window closes (ms), if the channel has one.
    pub reply_deadline: Option<i64>,
    pub last_agent: Option<LastAgent>,
    /// Agents who declined it, let an offer lapse, or were taken off it.
    pub excluded: Vec<String>,
}

/// Which rule applies: one of the account's, or the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// `None`: the default rule.
    pub id: Option<String>,
    pub name: String,
}

/// Where a conversation stands at a moment: its rule, step, tier and order key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Index into the picture's rules; `None`: the default rule.
    pub rule: Option<usize>,
    pub step: usize,
    pub tier: i64,
    pub urgent: bool,
    pub key: OrderKey,
    /// When the plan next changes on its own (a step times out or urgency starts), if ever.
    pub next_change_at: Option<i64>,
}

/// The queue order key: smaller goes first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderKey {
    /// 0 when urgent, 1 otherwise.
    pub class: u8,
    /// The deadline when urgent, the aged arrival otherwise.
    pub value: i64,
    pub queued_at: i64,
    pub id: String,
}

/// One candidate's score parts, as compared.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Score {
    pub agent_id: String,
    pub affinity: bool,
    pub skill_fit: u32,
    /// Free slots ÷ capacity on the channel.
    pub spare_ratio: f64,
    pub free: u32,
    pub capacity: u32,
    pub last_assigned_at_ms: i64,
}

/// The candidate count after each filter, in the order applied.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
pub struct Counts {
    /// Agents in the account.
    pub agents: usize,
    /// After the index lookup on the step's hard requirements (teams, skills, languages).
    pub indexed: usize,
    /// After the full target expression.
    pub target: usize,
    /// After removing agents excluded from this conversation.
    pub not_excluded: usize,
    /// After presence (online, fresh heartbeat).
    pub online: usize,
    /// After capacity (a free slot on the channel).
    pub with_capacity: usize,
}

/// Why the engine chose what it chose.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Trace {
    pub rule: RuleRef,
    pub step: usize,
    pub target: String,
    pub tier: i64,
    pub urgent: bool,
    pub waited_ms: i64,
    pub counts: Counts,
    /// The best candidates, best first (at most [`TOP`]).
    pub top: Vec<Score>,
    /// Which score part separated the winner from the runner-up (`only_candidate` when
    /// there was one, absent when there was none).
    pub decided_by: Option<&'static str>,
    pub chosen: Option<String>,
    pub mode: Mode,
}

/// How many candidates a trace keeps.
pub const TOP: usize = 5;

/// A decision for one conversation.
#[derive(Debug, Clone)]
pub struct Decision {
    pub agent: Option<String>,
    pub plan: Plan,
    pub mode: Mode,
    pub trace: Trace,
}

/// The account as the engine sees it.
#[derive(Debug, Clone)]
pub struct Picture {
    config: EngineConfig,
    rules: Vec<Rule>,
    default: Rule,
    agents: Vec<Agent>,
    by_id: HashMap<String, usize>,
    by_team: HashMap<String, Vec<usize>>,
    by_skill: HashMap<String, Vec<usize>>,
    by_lang: HashMap<String, Vec<usize>>,
    /// Free slots among online agents, per channel.
    free: [u64; CHANNEL_COUNT],
    /// What a decision reads of each agent after the target, packed (index as in `agents`).
    hot: Vec<Hot>,
    /// Per rule, per step: what the engine keeps about the step's target.
    steps: Vec<Vec<StepCache>>,
    /// The same for the default rule's one step.
    default_step: StepCache,
}

/// The part of an [`Agent`] that every candidate's check reads, kept next to the others'
/// (40 bytes an agent instead of the whole view) and in step with `agents` by every update.
#[derive(Debug, Clone, Copy)]
struct Hot {
    last_assigned_at: i64,
    /// The agent's place in id order (equal ids, equal rank): the last tie-break, and the
    /// exclusion and affinity tests, compare these instead of strings.
    rank: u32,
    capacity: [u32; CHANNEL_COUNT],
    active: [u32; CHANNEL_COUNT],
    online: bool,
}

impl Hot {
    fn of(a: &Agent, rank: u32) -> Self {
        Hot {
            last_assigned_at: a.last_assigned_at,
            rank,
            capacity: a.capacity,
            active: a.active,
            online: a.online,
        }
    }
}

/// A step's target text and, when the target does not read the conversation, the agents it
/// selects: the same for every conversation, so found once, on first use. Agents' views never
/// change within a picture; only presence and slots do, and those are checked per decision.
#[derive(Debug, Clone)]
struct StepCache {
    text: String,
    /// `None`: the target reads the conversation, so it is evaluated per decision.
    selected: Option<OnceLock<Selected>>,
}

impl StepCache {
    fn new(step: &Step) -> Self {
        StepCache {
            text: step.target.to_string(),
            selected: (!step.target.reads_conv()).then(OnceLock::new),
        }
    }
}

/// The agents a conversation-independent target selects.
#[derive(Debug, Clone, Default)]
struct Selected {
    /// How many meet the indexed requirements ([`Counts::indexed`]).
    indexed: usize,
    /// Those for whom the whole target holds, with their skill fit, in agent order.
    members: Vec<(usize, u32)>,
}

impl Picture {
    /// `rules` in the account's order; the default rule is built in.
    pub fn new(agents: Vec<Agent>, rules: Vec<Rule>, config: EngineConfig) -> Self {
        let always = TargetExpr::compile("true", &Schema::default())
            .unwrap_or_else(|_| unreachable!("`true` compiles"));
        let matcher = MatchExpr::compile("true", &Schema::default())
            .unwrap_or_else(|_| unreachable!("`true` compiles"));
        let default = Rule {
            id: String::new(),
            name: "default: any available agent of the inbox's team".to_owned(),
            matcher,
            steps: vec![Step {
                target: always,
                priority: 0,
                timeout_ms: None,
            }],
            mode: Mode::Auto,
        };
        let steps = rules
            .iter()
            .map(|r| r.steps.iter().map(StepCache::new).collect())
            .collect();
        let default_step = StepCache::new(&default.steps[0]);
        let mut picture = Picture {
            config,
            rules,
            default,
            agents: Vec::new(),
            by_id: HashMap::new(),
            by_team: HashMap::new(),
            by_skill: HashMap::new(),
            by_lang: HashMap::new(),
            free: [0; CHANNEL_COUNT],
            hot: Vec::new(),
            steps,
            default_step,
        };
        for agent in agents {
            picture.add(agent);
        }
        picture.hot = id_ranks(&picture.agents)
            .into_iter()
            .zip(&picture.agents)
            .map(|(rank, a)| Hot::of(a, rank))
            .collect();
        picture
    }

    fn add(&mut self, agent: Agent) {
        let i = self.agents.len();
        self.by_id.insert(agent.view.id.clone(), i);
        for team in &agent.view.teams {
            // An agent who lists a team twice is still one entry (and one candidate).
            let list = self.by_team.entry(team.clone()).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
        for skill in agent.view.skills.keys() {
            self.by_skill.entry(skill.clone()).or_default().push(i);
        }
        for lang in agent.view.languages.keys() {
            self.by_lang.entry(lang.clone()).or_default().push(i);
        }
        if agent.online {
            for ch in 0..CHANNEL_COUNT {
                self.free[ch] += u64::from(agent.free(ch));
            }
        }
        self.agents.push(agent);
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.by_id.get(id).map(|&i| &self.agents[i])
    }

    /// Whether any online agent has a free slot on the channel: when not, no waiting
    /// conversation of that channel can be placed and a pass may skip them all.
    pub fn has_free(&self, channel: usize) -> bool {
        self.free.get(channel).is_some_and(|f| *f > 0)
    }

    /// Records that `agent` took a slot on `channel` at `now`.
    pub fn take(&mut self, agent: &str, channel: usize, now: i64) {
        let Some(&i) = self.by_id.get(agent) else {
            return;
        };
        if channel >= CHANNEL_COUNT {
            return;
        }
        let a = &mut self.agents[i];
        if a.online && a.free(channel) > 0 {
            self.free[channel] -= 1;
        }
        a.active[channel] += 1;
        a.last_assigned_at = a.last_assigned_at.max(now);
        self.sync(i);
    }

    /// Copies agent `i`'s presence and slots to its packed state.
    fn sync(&mut self, i: usize) {
        let rank = self.hot[i].rank;
        self.hot[i] = Hot::of(&self.agents[i], rank);
    }

    /// Records that `agent` gave a slot on `channel` back.
    pub fn release(&mut self, agent: &str, channel: usize) {
        let Some(&i) = self.by_id.get(agent) else {
            return;
        };
        if channel >= CHANNEL_COUNT {
            return;
        }
        let a = &mut self.agents[i];
        if a.active[channel] == 0 {
            return;
        }
        a.active[channel] -= 1;
        if a.online && a.active[channel] < a.capacity[channel] {
            self.free[channel] += 1;
        }
        self.sync(i);
    }

    /// Records a presence change.
    pub fn set_online(&mut self, agent: &str, online: bool) {
        let Some(&i) = self.by_id.get(agent) else {
            return;
        };
        let a = &mut self.agents[i];
        if a.online == online {
            return;
        }
        a.online = online;
        for ch in 0..CHANNEL_COUNT {
            let f = u64::from(a.free(ch));
            if online {
                self.free[ch] += f;
            } else {
                self.free[ch] -= f;
            }
        }
        self.sync(i);
    }

    /// A rule by the index a [`Plan`] names; `None`: the default rule.
    pub fn rule(&self, index: Option<usize>) -> &Rule {
        index.map_or(&self.default, |i| &self.rules[i])
    }

    /// The rule, step, tier and queue key of `w` at `now`.
    pub fn plan(&self, w: &Waiting, now: i64) -> Plan {
        // A rule without steps could route nowhere (`compile_rule` refuses one): passed over.
        let rule = self
            .rules
            .iter()
            .position(|r| !r.steps.is_empty() && r.matcher.matches(&w.conv));
        let steps = &self.rule(rule).steps;
        let mut step = steps.len().saturating_sub(1);
        let mut boundary = w.queued_at;
        let mut next_change_at = None;
        for (k, s) in steps.iter().enumerate() {
            if k + 1 == steps.len() {
                break;
            }
            let Some(timeout) = s.timeout_ms else {
                // No timeout: this step applies for good and no timer is due.
                step = k;
                break;
            };
            boundary = boundary.saturating_add(timeout);
            if now < boundary {
                step = k;
                next_change_at = Some(boundary);
                break;
            }
        }
        let tier = steps
            .get(step)
            .map_or(0, |s| s.priority)
            .saturating_add(w.conv.priority);
        let urgent_from = w
            .reply_deadline
            .map(|d| d.saturating_sub(self.config.urgency_margin_ms));
        let urgent = urgent_from.is_some_and(|u| now >= u);
        if let (false, Some(u)) = (urgent, urgent_from) {
            next_change_at = Some(next_change_at.map_or(u, |n: i64| n.min(u)));
        }
        let key = OrderKey {
            class: u8::from(!urgent),
            value: if urgent {
                w.reply_deadline.unwrap_or(i64::MIN)
            } else {
                w.queued_at
                    .saturating_sub(tier.saturating_mul(self.config.tier_weight_ms))
            },
            queued_at: w.queued_at,
            id: w.id.clone(),
        };
        Plan {
            rule,
            step,
            tier,
            urgent,
            key,
            next_change_at,
        }
    }

    /// The waiting conversations' indices in queue order at `now`, each with its plan.
    pub fn order(&self, waiting: &[Waiting], now: i64) -> Vec<(usize, Plan)> {
        let mut planned: Vec<(usize, Plan)> = waiting
            .iter()
            .enumerate()
            .map(|(i, w)| (i, self.plan(w, now)))
            .collect();
        planned.sort_by(|a, b| a.1.key.cmp(&b.1.key));
        planned
    }

    /// Picks the best available agent for `w` at `now`. Does not change the picture: call
    /// [`Self::take`] once the assignment has committed.
    pub fn decide(&self, w: &Waiting, now: i64) -> Decision {
        self.decide_planned(w, self.plan(w, now), now)
    }

    /// [`Self::decide`] with a plan already computed (as by [`Self::order`]).
    pub fn decide_planned(&self, w: &Waiting, plan: Plan, now: i64) -> Decision {
        let rule = self.rule(plan.rule);
        // Only a hand-made plan can name a rule without steps: nobody is eligible then.
        let step_index = plan.step.min(rule.steps.len().saturating_sub(1));
        let step = rule.steps.get(step_index);
        let cache = match plan.rule {
            Some(r) => self.steps.get(r).and_then(|s| s.get(step_index)),
            None => Some(&self.default_step),
        };
        let inbox_team = if plan.rule.is_none() {
            w.inbox_team.as_deref()
        } else {
            None
        };
        let rank_of = |id: &str| self.by_id.get(id).map(|&i| self.hot[i].rank);
        let affinity = w
            .last_agent
            .as_ref()
            .filter(|l| now.saturating_sub(l.at) <= self.config.affinity_window_ms)
            .and_then(|l| rank_of(&l.id));
        let mut pick = Picker {
            hot: &self.hot,
            channel: channel_index(&w.conv.channel),
            affinity,
            // Ids the picture does not know cannot exclude anybody.
            excluded: w.excluded.iter().filter_map(|x| rank_of(x)).collect(),
            counts: Counts {
                agents: self.agents.len(),
                ..Counts::default()
            },
            top: Vec::with_capacity(TOP),
        };
        match step {
            None => {}
            // The default rule: the target is `true`; the inbox's team is the one requirement.
            Some(_) if plan.rule.is_none() => {
                let list =
                    inbox_team.map(|team| self.by_team.get(team).map_or(&[][..], Vec::as_slice));
                let n = list.map_or(self.agents.len(), <[usize]>::len);
                pick.counts.indexed = n;
                pick.counts.target = n;
                match list {
                    Some(list) => list.iter().for_each(|&i| pick.consider(i, 0)),
                    None => (0..self.agents.len()).for_each(|i| pick.consider(i, 0)),
                }
            }
            Some(step) => match cache.and_then(|c| c.selected.as_ref()) {
                Some(once) => {
                    let selected = once.get_or_init(|| self.select(step));
                    pick.counts.indexed = selected.indexed;
                    pick.counts.target = selected.members.len();
                    for &(i, fit) in &selected.members {
                        pick.consider(i, fit);
                    }
                }
                None => {
                    let req = step.target.requirements();
                    let bound = step.target.bind(&w.conv);
                    let mut visit = |i: usize| {
                        let a = &self.agents[i];
                        if !meets(a, req) {
                            return;
                        }
                        pick.counts.indexed += 1;
                        if bound.constant() != Some(true) && !bound.matches(&a.view) {
                            return;
                        }
                        pick.counts.target += 1;
                        pick.consider(i, skill_fit(a, req));
                    };
                    match self.smallest_index(req) {
                        Some(list) => list.iter().copied().for_each(&mut visit),
                        None => (0..self.agents.len()).for_each(&mut visit),
                    }
                }
            },
        }
        let Picker { top, counts, .. } = pick;
        let decided_by = match top.as_slice() {
            [] => None,
            [_] => Some("only_candidate"),
            [a, b, ..] => Some(a.separating(b)),
        };
        let top: Vec<Score> = top
            .iter()
            .map(|c| Score {
                agent_id: self.agents[c.agent].view.id.clone(),
                affinity: c.affinity,
                skill_fit: c.fit,
                spare_ratio: f64::from(c.free) / f64::from(c.capacity),
                free: c.free,
                capacity: c.capacity,
                last_assigned_at_ms: c.last_assigned_at,
            })
            .collect();
        let agent = top.first().map(|s| s.agent_id.clone());
        let trace = Trace {
            rule: RuleRef {
                id: plan.rule.map(|_| rule.id.clone()),
                name: rule.name.clone(),
            },
            step: plan.step,
            target: match inbox_team {
                Some(team) => format!("team == {team:?}"),
                None => cache.map_or_else(String::new, |c| {
                    if step.is_some() {
                        c.text.clone()
                    } else {
                        String::new()
                    }
                }),
            },
            tier: plan.tier,
            urgent: plan.urgent,
            waited_ms: now.saturating_sub(w.queued_at),
            counts,
            top,
            decided_by,
            chosen: agent.clone(),
            mode: rule.mode,
        };
        Decision {
            agent,
            mode: rule.mode,
            plan,
            trace,
        }
    }

    /// The agents a conversation-independent `step` selects.
    fn select(&self, step: &Step) -> Selected {
        let req = step.target.requirements();
        // The target reads no conversation field, so any conversation binds it the same.
        let bound = step.target.bind(&ConvView::default());
        let mut selected = Selected::default();
        let mut visit = |i: usize| {
            let a = &self.agents[i];
            if !meets(a, req) {
                return;
            }
            selected.indexed += 1;
            if bound.constant() != Some(true) && !bound.matches(&a.view) {
                return;
            }
            selected.members.push((i, skill_fit(a, req)));
        };
        match self.smallest_index(req) {
            Some(list) => list.iter().copied().for_each(&mut visit),
            None => (0..self.agents.len()).for_each(&mut visit),
        }
        selected
    }

    /// The shortest agent list that every candidate must be on, if any requirement is
    /// indexed; an unknown team, skill or language yields the empty list.
    fn smallest_index(&self, req: &Requirements) -> Option<&[usize]> {
        let teams = req.teams.iter().map(|t| self.by_team.get(t));
        let skills = req.skills.keys().map(|s| self.by_skill.get(s));
        let langs = req.languages.keys().map(|l| self.by_lang.get(l));
        teams
            .chain(skills)
            .chain(langs)
            .map(|list| list.map_or(&[][..], Vec::as_slice))
            .min_by_key(|list| list.len())
    }
}

/// Each agent's rank in id order; equal ids share one.
fn id_ranks(agents: &[Agent]) -> Vec<u32> {
    let mut by_id: Vec<usize> = (0..agents.len()).collect();
    by_id.sort_unstable_by(|&a, &b| agents[a].view.id.cmp(&agents[b].view.id));
    let mut ranks = vec![0; agents.len()];
    let mut rank = 0;
    for (k, &i) in by_id.iter().enumerate() {
        if k > 0 && agents[by_id[k - 1]].view.id != agents[i].view.id {
            rank += 1;
        }
        ranks[i] = rank;
    }
    ranks
}

/// The filters after the target (exclusion, presence, capacity) and the running top
/// [`TOP`], for one decision.
struct Picker<'a> {
    hot: &'a [Hot],
    channel: Option<usize>,
    /// The id rank of the contact's last agent, within the affinity window.
    affinity: Option<u32>,
    /// The id ranks of the excluded agents.
    excluded: Vec<u32>,
    counts: Counts,
    /// Best first.
    top: Vec<Candidate>,
}

/// One eligible agent's score parts, as compared.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    agent: usize,
    rank: u32,
    affinity: bool,
    fit: u32,
    free: u32,
    capacity: u32,
    last_assigned_at: i64,
}

impl Picker<'_> {
    /// Agent `i`, for whom the step's target holds with skill fit `fit`.
    fn consider(&mut self, i: usize, fit: u32) {
        let a = &self.hot[i];
        let rank = a.rank;
        if !self.excluded.is_empty() && self.excluded.contains(&rank) {
            return;
        }
        self.counts.not_excluded += 1;
        if !a.online {
            return;
        }
        self.counts.online += 1;
        let Some(ch) = self.channel else { return };
        let free = a.capacity[ch].saturating_sub(a.active[ch]);
        if free == 0 {
            return;
        }
        self.counts.with_capacity += 1;
        let c = Candidate {
            agent: i,
            rank,
            affinity: self.affinity == Some(rank),
            fit,
            free,
            capacity: a.capacity[ch],
            last_assigned_at: a.last_assigned_at,
        };
        // Most candidates lose to the worst of a full top at once.
        if self.top.len() == TOP && !c.before(&self.top[TOP - 1]) {
            return;
        }
        let pos = self
            .top
            .iter()
            .position(|t| c.before(t))
            .unwrap_or(self.top.len());
        if self.top.len() == TOP {
            self.top.pop();
        }
        self.top.insert(pos, c);
    }
}

impl Candidate {
    /// The agent order, part by part, with each part's name.
    fn parts(&self, other: &Candidate) -> [(&'static str, Ordering); 5] {
        // Spare ratios compared exactly: a.free / a.cap vs b.free / b.cap.
        let spare = (u64::from(other.free) * u64::from(self.capacity))
            .cmp(&(u64::from(self.free) * u64::from(other.capacity)));
        [
            ("affinity", other.affinity.cmp(&self.affinity)),
            ("skill_fit", other.fit.cmp(&self.fit)),
            ("spare_capacity", spare),
            (
                "least_recently_assigned",
                self.last_assigned_at.cmp(&other.last_assigned_at),
            ),
            ("agent_id", self.rank.cmp(&other.rank)),
        ]
    }

    /// Whether `self` goes strictly before `other` (the hot path: stops at the first part
    /// that differs).
    fn before(&self, other: &Candidate) -> bool {
        let ord = other
            .affinity
            .cmp(&self.affinity)
            .then_with(|| other.fit.cmp(&self.fit))
            .then_with(|| {
                (u64::from(other.free) * u64::from(self.capacity))
                    .cmp(&(u64::from(self.free) * u64::from(other.capacity)))
            })
            .then_with(|| self.last_assigned_at.cmp(&other.last_assigned_at))
            .then_with(|| self.rank.cmp(&other.rank));
        ord == Ordering::Less
    }

    /// The name of the first score part that separates two candidates.
    fn separating(&self, other: &Candidate) -> &'static str {
        self.parts(other)
            .into_iter()
            .find(|(_, o)| *o != Ordering::Equal)
            .map_or("agent_id", |(name, _)| name)
    }
}

/// Whether the agent meets every indexed requirement.
fn meets(a: &Agent, req: &Requirements) -> bool {
    req.teams.iter().all(|t| a.view.teams.contains(t))
        && req
            .skills
            .iter()
            .all(|(s, min)| a.view.skills.get(s).is_some_and(|l| l >= min))
        && req
            .languages
            .iter()
            .all(|(l, min)| a.view.languages.get(l).is_some_and(|v| v >= min))
        && req
            .branches
            .iter()
            .all(|b| a.view.branch.as_deref() == Some(b.as_str()))
}

fn skill_fit(a: &Agent, req: &Requirements) -> u32 {
    let over = |have: Option<&u8>, min: &u8| u32::from(have.map_or(0, |h| h.saturating_sub(*min)));
    req.skills
        .iter()
        .map(|(s, min)| over(a.view.skills.get(s), min))
        .chain(
            req.languages
                .iter()
                .map(|(l, min)| over(a.view.languages.get(l), min)),
        )
        .sum()
}

/// Compiles a stored rule; `None` (with the reason) when it no longer compiles.
pub fn compile_rule(
    id: &str,
    name: &str,
    match_src: &str,
    steps: &[(String, i64, Option<i64>)],
    mode: Mode,
    schema: &Schema,
) -> Result<Rule, String> {
    let matcher = MatchExpr::compile(match_src, schema).map_err(|e| e.to_string())?;
    let steps = steps
        .iter()
        .map(|(target, priority, timeout_ms)| {
            Ok(Step {
                target: TargetExpr::compile(target, schema).map_err(|e| e.to_string())?,
                priority: *priority,
                timeout_ms: *timeout_ms,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if steps.is_empty() {
        return Err("no steps".to_owned());
    }
    Ok(Rule {
        id: id.to_owned(),
        name: name.to_owned(),
        matcher,
        steps,
        mode,
    })
}

#[cfg(test)]
mod fairness;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
