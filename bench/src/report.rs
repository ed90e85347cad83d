//! What a run counted, and how it is printed: a table for people, one JSON object with `--json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies above this (µs) are recorded as this; the client times out long before.
const MAX_LATENCY_US: u64 = 120_000_000;

/// An "idle" hub above this many cores was still working (e.g. normalizing a previous run), so
/// taking its rate off the per-event figures is wrong.
const BUSY_IDLE_CORES: f64 = 0.2;

/// The hub's answer to one request, as far as the bench can tell.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx with `{"status":"accepted"}`.
    Accepted,
    /// 2xx with `{"status":"duplicate"}`.
    Duplicate,
    /// 2xx that does not say which (Twilio's empty TwiML).
    Acked,
    /// Not 2xx; the key is the status code, the text a short excerpt of the body.
    Refused(u16, String),
    /// No HTTP answer: `timeout` or `transport`.
    Failed(&'static str, String),
}

/// Counters and the latency histogram of one worker, merged at the end.
pub struct Tally {
    pub events: u64,
    pub requests: u64,
    pub acked: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Microseconds.
    pub latency: Histogram<u64>,
}

/// An empty latency histogram in microseconds, 1 µs to [`MAX_LATENCY_US`], 3 significant
/// digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

impl Tally {
    pub fn new() -> Self {
        Self {
            events: 0,
            requests: 0,
            acked: 0,
            accepted: 0,
            duplicates: 0,
            errors: BTreeMap::new(),
            first_error: None,
            latency: latency_histogram(),
        }
    }

    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        self.requests += 1;
        self.latency
            .saturating_record(u64::try_from(latency.as_micros()).unwrap_or(MAX_LATENCY_US));
        let (key, detail) = match outcome {
            Outcome::Accepted => return self.ack(|t| t.accepted += 1),
            Outcome::Duplicate => return self.ack(|t| t.duplicates += 1),
            Outcome::Acked => return self.ack(|_| {}),
            Outcome::Refused(status, body) => {
                (status.to_string(), format!("HTTP {status}: {body}"))
            }
            Outcome::Failed(kind, message) => (kind.to_owned(), format!("{kind}: {message}")),
        };
        *self.errors.entry(key).or_default() += 1;
        self.first_error.get_or_insert(detail);
    }

    fn ack(&mut self, classify: impl FnOnce(&mut Self)) {
        self.acked += 1;
        classify(self);
    }

    /// Answers that were not 2xx (with this status, if given); requests that got no HTTP
    /// answer are not counted.
    pub fn refused(&self, status: Option<u16>) -> u64 {
        self.errors
            .iter()
            .filter(|(key, _)| {
                key.parse::<u16>()
                    .is_ok_and(|code| status.is_none_or(|s| s == code))
            })
            .map(|(_, n)| n)
            .sum()
    }

    pub fn merge(&mut self, other: Tally) {
        self.events += other.events;
        self.requests += other.requests;
        self.acked += other.acked;
        self.accepted += other.accepted;
        self.duplicates += other.duplicates;
        for (key, n) in other.errors {
            *self.errors.entry(key).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Same bounds on both sides, so this cannot fail.
        let _ = self.latency.add(&other.latency);
    }
}

#[derive(Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub channel: &'static str,
    pub url: String,
    pub run_id: String,
    pub concurrency: usize,
    /// Target arrivals per second (open model); absent for the closed loop.
    pub rate: Option<f64>,
    pub duplicates_mode: bool,
    pub events_planned: u64,
    pub events: u64,
    pub requests: u64,
    pub acked: u64,
    /// Absent when the provider's ack does not say (Twilio answers empty TwiML either way).
    pub accepted: Option<u64>,
    pub duplicates: Option<u64>,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Open model only: events not sent on their slot (all slots busy, or the generator behind).
    pub late: Option<u64>,
    /// The run hit --max-seconds before sending every event.
    pub stopped_early: bool,
    pub elapsed_s: f64,
    pub acks_per_s: f64,
    pub latency_ms: Latency,
    pub hub_cpu: Option<HubCpu>,
    /// This generator's own CPU during the timed run: if it nears cores × elapsed, the
    /// generator, not the hub, is the limit.
    pub bench_cpu_s: f64,
    /// With `--verify-token`: customer messages the hub stored since the run began, read back
    /// through its volume report, and how many it should have (the events it accepted).
    pub stored: Option<u64>,
    pub expected_stored: Option<u64>,
}

#[derive(Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The hub's CPU time over the timed run, and again once it has gone quiet (the queue workers
/// normalize after the ack, so the second figure is the whole cost of an event). Seconds are
/// raw; the per-event figures have the idle rate taken off.
#[derive(Serialize)]
pub struct HubCpu {
    pub pid: u32,
    /// CPU seconds per second the hub used before the run, doing nothing.
    pub idle_cores: f64,
    pub during_s: f64,
    pub during_us_per_event: f64,
    pub until_idle_s: f64,
    pub until_idle_us_per_event: f64,
    /// How long after the last ack the hub kept working.
    pub idle_after_s: f64,
    /// False when --settle-seconds ran out with the hub still busy: `until_idle` is then short.
    pub settled: bool,
}

impl Report {
    pub fn to_table(&self) -> String {
        let mode = match self.rate {
            Some(rate) => format!(
                "open model, {rate}/s, at most {} in flight",
                self.concurrency
            ),
            None => format!("closed loop, concurrency {}", self.concurrency),
        };
        let unknown = || "n/a (ack does not say)".to_owned();
        let errors = errors_cell(&self.errors);
        let mut rows: Vec<(&str, String)> = vec![
            ("target", format!("{} ({})", self.url, self.channel)),
            ("run", format!("{}, {mode}", self.run_id)),
            (
                "events",
                format!(
                    "{} of {}{}",
                    self.events,
                    self.events_planned,
                    if self.duplicates_mode {
                        ", each sent twice"
                    } else {
                        ""
                    }
                ),
            ),
            ("requests", self.requests.to_string()),
            ("acked", self.acked.to_string()),
            (
                "accepted",
                self.accepted.map_or_else(unknown, |n| n.to_string()),
            ),
            (
                "duplicates",
                self.duplicates.map_or_else(unknown, |n| n.to_string()),
            ),
            ("errors", errors),
        ];
        if let Some(first) = &self.first_error {
            rows.push(("first error", first.clone()));
        }
        if let Some(late) = self.late {
            rows.push(("late", late.to_string()));
        }
        if self.stopped_early {
            rows.push(("stopped", "at --max-seconds".to_owned()));
        }
        rows.push(("elapsed s", format!("{:.3}", self.elapsed_s)));
        rows.push(("acks/s", format!("{:.1}", self.acks_per_s)));
        rows.push(("latency ms", latency_cell(&self.latency_ms)));
        hub_cpu_rows(self.hub_cpu.as_ref(), "event", &mut rows);
        rows.push(("bench cpu", format!("{:.2} s", self.bench_cpu_s)));
        if let (Some(stored), Some(expected)) = (self.stored, self.expected_stored) {
            let verdict = if stored == expected {
                "no loss, no duplicate"
            } else {
                "MISMATCH"
            };
            rows.push((
                "stored",
                format!("{stored} messages for {expected} accepted events: {verdict}"),
            ));
        }
        write_rows(&rows)
    }
}

/// What an `api` or `login` run measured: authenticated requests (or sign-ins) in a closed
/// loop, each one request.
#[derive(Serialize)]
pub struct ApiReport {
    pub scenario: &'static str,
    /// Method and URL, e.g. `GET http://127.0.0.1:8080/v1/conversations?limit=25`.
    pub target: String,
    /// `api key`, `access token` or `password`.
    pub credential: &'static str,
    pub concurrency: usize,
    pub requests_planned: u64,
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Answers that were not 2xx, 429s included.
    pub non_2xx: u64,
    /// 429s: the hub's per-caller (API) or per-IP (sign-in) rate limit.
    pub rate_limited: u64,
    /// Every failure by status code, or `timeout` / `transport`.
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// The run hit --max-seconds before sending every request.
    pub stopped_early: bool,
    pub elapsed_s: f64,
    /// 2xx answers per second.
    pub ok_per_s: f64,
    /// Every request's latency, whatever its answer.
    pub latency_ms: Latency,
    /// The hub's CPU; the `…_per_event` figures are per request here.
    pub hub_cpu: Option<HubCpu>,
    pub bench_cpu_s: f64,
}

impl ApiReport {
    pub fn to_table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("target", format!("{} ({})", self.target, self.credential)),
            (
                "run",
                format!(
                    "{}, closed loop, concurrency {}",
                    self.scenario, self.concurrency
                ),
            ),
            (
                "requests",
                format!("{} of {}", self.requests, self.requests_planned),
            ),
            ("2xx", self.ok.to_string()),
            (
                "non-2xx",
                format!("{} (429: {})", self.non_2xx, self.rate_limited),
            ),
            ("errors", errors_cell(&self.errors)),
        ];
        if let Some(first) = &self.first_error {
            rows.push(("first error", first.clone()));
        }
        if self.stopped_early {
            rows.push(("stopped", "at --max-seconds".to_owned()));
        }
        rows.push(("elapsed s", format!("{:.3}", self.elapsed_s)));
        rows.push((
            if self.scenario == "login" {
                "sign-ins/s"
            } else {
                "requests/s"
            },
            format!("{:.1} (2xx only)", self.ok_per_s),
        ));
        rows.push(("latency ms", latency_cell(&self.latency_ms)));
        hub_cpu_rows(self.hub_cpu.as_ref(), "request", &mut rows);
        rows.push(("bench cpu", format!("{:.2} s", self.bench_cpu_s)));
        write_rows(&rows)
    }
}

/// What a `fill` run measured: freed capacity filled by the engine, resolve to assignment.
#[derive(Serialize)]
pub struct FillReport {
    pub scenario: &'static str,
    pub url: String,
    /// The inbox slug whose queue the run fills.
    pub inbox: String,
    pub run_id: String,
    pub agents: u64,
    /// WhatsApp slots per agent.
    pub capacity: u64,
    /// Conversations waiting beyond the agents' slots at the start of the rounds.
    pub backlog: u64,
    pub rounds_planned: u64,
    pub poll_interval_ms: u64,
    pub round_timeout_ms: u64,
    /// The account's routing rules (the default rule comes on top).
    pub account_rules: usize,
    pub setup: FillSetup,
    /// Rounds measured (the fill was seen).
    pub rounds: u64,
    /// Rounds that failed, by kind in `errors`.
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Resolve sent → the agent's poll answer that shows the new assignment: an upper bound
    /// of the fill time.
    pub client_ms: Latency,
    /// Resolve sent → the last poll that did not show it was sent: a lower bound (0 when the
    /// first poll showed it).
    pub client_not_before_ms: Latency,
    /// The resolve request alone (sent → answered).
    pub resolve_ms: Latency,
    /// One poll of the agent's open conversations (sent → answered).
    pub poll_ms: Latency,
    pub polls_per_round: f64,
    /// From the routing traces: the new conversation's `assigned` entry minus the resolved
    /// one's `resolved` entry (millisecond resolution).
    pub server_ms: Latency,
    pub server_samples: u64,
    /// Trace pairs whose `assigned` came before `resolved` (recorded as 0).
    pub server_negative: u64,
    pub target_ms: f64,
    pub client_over_target: u64,
    pub server_over_target: u64,
    pub heartbeat_failures: u64,
    /// Absent with --keep.
    pub cleanup: Option<FillCleanup>,
}

/// The set-up, over REST and signed webhooks.
#[derive(Serialize)]
pub struct FillSetup {
    /// Creating the agent users (`POST /v1/admin/users`, one at a time).
    pub users_s: f64,
    /// Signing each agent in (`POST /v1/auth/login`, one at a time).
    pub logins_s: f64,
    pub login_ms: Latency,
    pub profiles_s: f64,
    pub presence_s: f64,
    pub webhooks: u64,
    pub accepted: u64,
    /// Sending the webhooks, each a new customer.
    pub ingest_s: f64,
    /// From the last webhook's ack until the agents' slots were all assigned and the backlog
    /// waited (normalization and the engine's first passes).
    pub settle_s: f64,
    /// From the last ack until the engine had also written the newest waiting conversation's
    /// `waiting` trace, i.e. was done with the backlog; the rounds start then.
    pub traced_s: f64,
}

/// What the run undid afterwards.
#[derive(Serialize, Default)]
pub struct FillCleanup {
    pub offline: u64,
    pub resolved: u64,
    pub deactivated: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl FillReport {
    pub fn to_table(&self) -> String {
        let s = &self.setup;
        let mut rows: Vec<(&str, String)> = vec![
            ("target", format!("{} (inbox {})", self.url, self.inbox)),
            (
                "run",
                format!(
                    "{}: {} agents × {} WhatsApp slots, backlog {}, {} rounds, polling every {} ms",
                    self.run_id,
                    self.agents,
                    self.capacity,
                    self.backlog,
                    self.rounds_planned,
                    self.poll_interval_ms
                ),
            ),
            (
                "routing",
                if self.account_rules == 0 {
                    "the default rule only".to_owned()
                } else {
                    format!("{} account rules + the default rule", self.account_rules)
                },
            ),
            (
                "set-up",
                format!(
                    "users {:.2} s, sign-ins {:.2} s (p50 {:.1} ms each), profiles {:.2} s, \
                     presence {:.2} s",
                    s.users_s, s.logins_s, s.login_ms.p50, s.profiles_s, s.presence_s
                ),
            ),
            (
                "ingest",
                format!(
                    "{} webhooks in {:.2} s ({} accepted); after the last ack, slots full and \
                     backlog waiting in {:.2} s, backlog traced in {:.2} s",
                    s.webhooks, s.ingest_s, s.accepted, s.settle_s, s.traced_s
                ),
            ),
            (
                "rounds",
                format!(
                    "{} measured, {} failed (a round gives up after {} ms)",
                    self.rounds, self.failed, self.round_timeout_ms
                ),
            ),
            ("errors", errors_cell(&self.errors)),
        ];
        if let Some(first) = &self.first_error {
            rows.push(("first error", first.clone()));
        }
        rows.push((
            "fill client",
            format!("{}  (seen)", latency_cell(&self.client_ms)),
        ));
        rows.push((
            "  not before",
            format!(
                "{}  (last poll without it sent)",
                latency_cell(&self.client_not_before_ms)
            ),
        ));
        rows.push(("  resolve", latency_cell(&self.resolve_ms)));
        rows.push((
            "  poll",
            format!(
                "{}  ({:.1} polls per round)",
                latency_cell(&self.poll_ms),
                self.polls_per_round
            ),
        ));
        rows.push((
            "fill server",
            format!(
                "{}  (traces, ms resolution, n = {}{})",
                latency_cell(&self.server_ms),
                self.server_samples,
                if self.server_negative > 0 {
                    format!(", {} negative", self.server_negative)
                } else {
                    String::new()
                }
            ),
        ));
        rows.push((
            "target",
            format!(
                "{} ms: {} of {} over client-side, {} of {} server-side",
                self.target_ms,
                self.client_over_target,
                self.rounds,
                self.server_over_target,
                self.server_samples
            ),
        ));
        if self.heartbeat_failures > 0 {
            rows.push(("heartbeats", format!("{} failed", self.heartbeat_failures)));
        }
        if let Some(c) = &self.cleanup {
            rows.push((
                "clean-up",
                format!(
                    "{} agents offline, {} conversations resolved, {} agents deactivated, {} errors{}",
                    c.offline,
                    c.resolved,
                    c.deactivated,
                    c.errors,
                    c.first_error
                        .as_deref()
                        .map(|e| format!(" (first: {e})"))
                        .unwrap_or_default()
                ),
            ));
        }
        write_rows(&rows)
    }
}

pub fn errors_cell(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        "0".to_owned()
    } else {
        errors
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn latency_cell(l: &Latency) -> String {
    format!(
        "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        l.p50, l.p90, l.p99, l.p99_9, l.max
    )
}

/// The hub CPU line (and a warning when the hub was busy before the run); `unit` is what one
/// `…_per_event` figure is per.
pub fn hub_cpu_rows(cpu: Option<&HubCpu>, unit: &str, rows: &mut Vec<(&str, String)>) {
    let Some(cpu) = cpu else { return };
    let settle = if cpu.settled {
        "until idle"
    } else {
        "STILL BUSY"
    };
    rows.push((
        "hub cpu",
        format!(
            "{:.2} s during the run ({:.1} µs/{unit}); {:.2} s {settle} {:.1} s later \
             ({:.1} µs/{unit}); idle rate {:.3} cores taken off",
            cpu.during_s,
            cpu.during_us_per_event,
            cpu.until_idle_s,
            cpu.idle_after_s,
            cpu.until_idle_us_per_event,
            cpu.idle_cores
        ),
    ));
    if cpu.idle_cores > BUSY_IDLE_CORES {
        rows.push((
            "warning",
            format!("the hub was busy before the run (a backlog?): per-{unit} CPU is understated"),
        ));
    }
}

pub fn write_rows(rows: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (name, value) in rows {
        let _ = writeln!(out, "{name:<12} {value}");
    }
    out
}

/// Percentiles of a nanosecond histogram, in microseconds.
#[derive(Serialize)]
pub struct Spread {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Spread {
    pub fn from_ns(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }

    fn cell(&self) -> String {
        format!(
            "p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (n = {})",
            self.p50, self.p90, self.p99, self.p99_9, self.max, self.count
        )
    }
}

/// What a `route` run measured: the engine's decision core in process, no hub.
#[derive(Serialize)]
pub struct RouteReport {
    pub scenario: &'static str,
    pub seed: u64,
    pub agents: u64,
    /// Slots per channel across all agents.
    pub slots: [u64; 3],
    /// The account's rules (the default rule comes on top).
    pub rules: usize,
    pub waiting: u64,
    pub waiting_per_channel: [u64; 3],
    /// Conversations urgent (reply window closing) at the start.
    pub urgent: u64,
    /// Conversations per rule at the start, the default rule last.
    pub by_rule: Vec<u64>,
    pub build_ms: f64,
    /// Each timed `order` over the whole queue.
    pub order_ms: Vec<f64>,
    pub decisions: u64,
    /// Decisions in the pass over the queue in order.
    pub pass_decisions: u64,
    /// Conversations that pass skipped because their channel had no free slot.
    pub skipped_no_free_slot: u64,
    /// Decisions afterwards, each after a random agent's slot was released.
    pub freed_decisions: u64,
    /// Slots actually released (the random agent held one on that channel).
    pub released: u64,
    pub assigned: u64,
    pub left_waiting: u64,
    /// Eligible agents with a free slot per decision, on average.
    pub mean_candidates: f64,
    /// Decisions per second of decision time (the timed spans only).
    pub decisions_per_s: f64,
    pub pass_s: f64,
    pub freed_s: f64,
    /// Per decision (`decide_planned`, plus `take` when an agent is chosen).
    pub latency_us: Spread,
    pub assigned_us: Spread,
    pub no_agent_us: Spread,
}

impl RouteReport {
    pub fn to_table(&self) -> String {
        let channels = |v: &[u64; 3]| format!("whatsapp {}, sms {}, webchat {}", v[0], v[1], v[2]);
        let orders: Vec<String> = self.order_ms.iter().map(|ms| format!("{ms:.1}")).collect();
        let best = self.order_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let rows: Vec<(&str, String)> = vec![
            (
                "run",
                format!("route (engine in process, no hub), seed {}", self.seed),
            ),
            (
                "agents",
                format!("{} online; slots {}", self.agents, channels(&self.slots)),
            ),
            (
                "rules",
                format!(
                    "{} + default; conversations per rule {:?} (default last)",
                    self.rules, self.by_rule
                ),
            ),
            (
                "waiting",
                format!(
                    "{} ({}), {} urgent",
                    self.waiting,
                    channels(&self.waiting_per_channel),
                    self.urgent
                ),
            ),
            ("build", format!("{:.1} ms", self.build_ms)),
            (
                "order",
                format!(
                    "{} ms per run ({:.2} µs per conversation at best)",
                    orders.join(", "),
                    1000.0 * best / self.waiting.max(1) as f64
                ),
            ),
            (
                "decisions",
                format!(
                    "{}: {} in the pass over the queue ({} skipped, channel full; {:.2} s), \
                     then {} with a slot freed before each ({} released; {:.2} s)",
                    self.decisions,
                    self.pass_decisions,
                    self.skipped_no_free_slot,
                    self.pass_s,
                    self.freed_decisions,
                    self.released,
                    self.freed_s
                ),
            ),
            (
                "outcome",
                format!(
                    "{} assigned, {} still waiting; {:.1} eligible candidates per decision",
                    self.assigned, self.left_waiting, self.mean_candidates
                ),
            ),
            ("decisions/s", format!("{:.0}", self.decisions_per_s)),
            ("latency µs", self.latency_us.cell()),
            ("  assigned", self.assigned_us.cell()),
            ("  no agent", self.no_agent_us.cell()),
        ];
        write_rows(&rows)
    }
}
