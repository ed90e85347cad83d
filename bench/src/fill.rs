//! The `fill` scenario: how fast the assignment engine fills freed capacity, end to end, on a
//! real hub on loopback.
//!
//! Set-up, over REST only (the bench never touches the hub's database): `--agents` agent users
//! are created (`POST /v1/admin/users`), signed in (`POST /v1/auth/login`), given
//! `--capacity` WhatsApp slots each (`PUT /v1/admin/agents/{id}/profile`) and set online
//! (`PUT /v1/agents/me/presence`; heartbeats keep them alive in the background). Then
//! agents × capacity + `--backlog` signed WhatsApp messages, each from a customer of its own,
//! open as many conversations: the engine assigns the first agents × capacity and the backlog
//! waits (`GET /v1/queues/stats` says when). The rounds start once the engine has also traced
//! the newest waiting conversation: until then a pass may still be writing the backlog's
//! `waiting` traces, and a freed slot would wait behind it (a burst's cost, not a fill's).
//!
//! Each of `--rounds` rounds, one agent at a time (in turn) resolves its oldest conversation
//! (`POST /v1/conversations/{id}/resolve`), which frees exactly one slot on the whole floor,
//! so the engine must give the head of the queue to that agent. The fill time is measured two
//! ways:
//!
//! - **client**: from sending the resolve to the agent seeing the new conversation in its own
//!   open list (`GET /v1/conversations?assignee=…&status=open`, polled every
//!   `--poll-interval-ms`; there is no push channel yet). An upper bound: it includes the
//!   resolve request itself and up to one poll interval and one poll round trip. The send time
//!   of the last poll that did not show it is reported too, as a lower bound;
//! - **server**: from the routing traces, the resolved conversation's `resolved` entry to the
//!   new one's `assigned` entry (`at_ms`, so millisecond resolution), read after the rounds so
//!   they do not load the hub while it is measured. The hub stamps a placement with the time
//!   its dispatcher pass *started*, so this figure is the wake-up delay and leaves out the
//!   pass's own work (reading the account from the store, deciding, committing); the client
//!   figures include it.
//!
//! Afterwards (unless `--keep`) the run's agents go offline, every conversation it left open
//! is resolved and the agents are deactivated, so the next run starts from a clean inbox.
//!
//! The hub's limits apply to all of this: each agent signs in once (`rate_limits.login_per_minute`
//! counts per IP per minute, default 20: raise it above `--agents`, or use fewer agents) and
//! polls up to once per `--poll-interval-ms` (`rate_limits.api_per_second` counts per user, default
//! 50: raise it, e.g. to 100000, or polls get 429 and the rounds fail). The run must also fit
//! within the access token's lifetime (`auth.access_token_ttl_secs`, 15 minutes by default),
//! and within `routing.no_reply_secs` (default 300 s), after which conversations nobody
//! replied to are routed again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::http::{self, closed_loop};
use crate::ingest::Load;
use crate::payload::{WhatsappEvents, run_id};
use crate::report::{FillCleanup, FillReport, FillSetup, Latency, latency_histogram};

/// What the engine should meet: a freed slot filled within this.
const TARGET_MS: f64 = 50.0;
/// Webhooks in flight while the conversations are opened.
const INGEST_CONCURRENCY: usize = 16;
/// Set-up and clean-up requests refused with 429 are retried this often, when the hub asks for
/// a short wait (the REST bucket refills within a second; the sign-in limit does not).
const RETRIES_429: u32 = 30;
const MAX_RETRY_AFTER_S: u64 = 2;
/// How often the queue statistics are read while the set-up settles.
const SETTLE_POLL: Duration = Duration::from_millis(20);

#[derive(Args)]
pub struct FillArgs {
    /// Base URL of the hub. Only loopback hosts are accepted: 127.0.0.0/8, localhost, ::1.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = http::loopback_url)]
    url: Url,
    /// An admin's bearer: an access token (from /v1/auth/login) or an `sbk_` API key, with
    /// super_admin (it creates users, sets routing profiles, reads and resolves conversations).
    #[arg(long, env = "SWITCHBOARD_BENCH_TOKEN", hide_env_values = true)]
    token: String,
    /// The Meta app name in /webhooks/whatsapp/{app}.
    #[arg(long, default_value = "demo")]
    app: String,
    /// The app secret that signs the bodies.
    #[arg(long, default_value = "test_app_secret_0123456789abcdef")]
    app_secret: String,
    /// metadata.phone_number_id, which picks the inbox.
    #[arg(long, default_value = "800000000000001", value_parser = digits)]
    phone_number_id: String,
    /// The slug of the inbox that phone number belongs to (its queue is watched).
    #[arg(long, default_value = "support-wa")]
    inbox: String,
    /// Agent users to create, sign in and set online (each signs in once).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    agents: u64,
    /// WhatsApp slots per agent (conversations at once).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=100))]
    capacity: u64,
    /// Conversations left waiting beyond the agents' capacity.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    backlog: u64,
    /// Resolutions to measure, each filled from the backlog (at most --backlog).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    rounds: u64,
    /// Pause between two polls of the agent's open conversations; 0 polls back to back.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=1000))]
    poll_interval_ms: u64,
    /// A round whose fill is not seen within this fails (and the run goes on).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    round_timeout_ms: u64,
    /// How long the set-up may take to open the conversations and settle.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    setup_timeout_s: u64,
    /// Seconds between the agents' heartbeats (must be well under the hub's
    /// routing.presence_timeout_secs, 90 by default).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    heartbeat_s: u64,
    /// The password the agents are created with (must meet the hub's password policy).
    #[arg(
        long,
        env = "SWITCHBOARD_BENCH_AGENT_PASSWORD",
        hide_env_values = true,
        default_value = "Kestrel-Lantern-58"
    )]
    agent_password: String,
    /// Leave the agents online and the conversations open after the run.
    #[arg(long)]
    keep: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

fn digits(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err("expected digits only".to_owned())
    }
}

/// Runs the scenario and prints the report; `Ok(false)` when no round was measured.
pub async fn run(args: FillArgs) -> anyhow::Result<bool> {
    ensure!(
        args.rounds <= args.backlog,
        "--rounds ({}) must be at most --backlog ({}): each round is filled from the backlog",
        args.rounds,
        args.backlog
    );
    let hub = Hub {
        client: http::client(INGEST_CONCURRENCY)?,
        base: args.url.clone(),
        admin: bearer(&args.token).context("--token")?,
    };
    let run_id = run_id();
    let before = hub.preflight(&args.inbox).await?;
    let rules = hub.account_rules().await?;

    let mut floor = Floor::default();
    let measured = measure(&hub, &args, &run_id, before.assigned, &mut floor).await;
    let cleanup = if args.keep {
        None
    } else {
        Some(hub.clean_up(&args.inbox, &floor).await)
    };
    let mut report = match measured {
        Ok(report) => report,
        Err(e) => {
            if let Some(c) = &cleanup {
                eprintln!("{}", cleanup_line(c));
            }
            return Err(e);
        }
    };
    report.run_id = run_id;
    report.account_rules = rules;
    report.cleanup = cleanup;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    if report.rounds == 0 {
        eprintln!("error: no round was measured");
    }
    Ok(report.rounds > 0)
}

fn cleanup_line(c: &FillCleanup) -> String {
    format!(
        "clean-up: {} agents offline, {} conversations resolved, {} agents deactivated, {} errors{}",
        c.offline,
        c.resolved,
        c.deactivated,
        c.errors,
        c.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    )
}

/// What the run put on the hub, for the clean-up: users created, and those signed in.
#[derive(Default)]
struct Floor {
    users: Vec<String>,
    agents: Vec<Agent>,
}

/// One agent user, signed in.
#[derive(Clone)]
struct Agent {
    id: String,
    bearer: HeaderValue,
    /// `GET /v1/conversations?assignee={id}&status=open&limit=100`.
    open: Url,
}

/// One measured fill.
struct Fill {
    resolved: String,
    filled: String,
    /// Resolve sent → the poll answer that showed the new conversation.
    client: Duration,
    /// Resolve sent → the last poll that did not show it was sent (its snapshot came later,
    /// so the assignment came later still); zero when the first poll showed it.
    not_before: Duration,
}

/// Set-up, rounds and the server-side figures; everything but the clean-up.
async fn measure(
    hub: &Hub,
    args: &FillArgs,
    run_id: &str,
    assigned_before: i64,
    floor: &mut Floor,
) -> anyhow::Result<FillReport> {
    let n = usize::try_from(args.agents)?;
    let slots = args.agents * args.capacity;
    let conversations = usize::try_from(slots + args.backlog)?;

    // Agents: created, signed in, given slots, online.
    let started = Instant::now();
    for i in 0..n {
        let created: Created = hub
            .call_json(
                &format!("creating agent user {} of {n}", i + 1),
                Method::POST,
                hub.url("/v1/admin/users")?,
                &hub.admin,
                Some(&json!({
                    "email": format!("fill-{run_id}-{i:04}@bench.example.com"),
                    "name": format!("Fill Agent {i}"),
                    "password": args.agent_password,
                    "role": "agent",
                })),
            )
            .await?;
        floor.users.push(created.id);
    }
    let users_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut login_us = latency_histogram();
    for i in 0..n {
        let t = Instant::now();
        let signed_in: SignedIn = hub
            .call_json(
                &format!("signing agent {} of {n} in", i + 1),
                Method::POST,
                hub.url("/v1/auth/login")?,
                &HeaderValue::from_static(""),
                Some(&json!({
                    "email": format!("fill-{run_id}-{i:04}@bench.example.com"),
                    "password": args.agent_password,
                    "refresh_in": "body",
                })),
            )
            .await?;
        login_us.saturating_record(micros(t.elapsed()));
        let mut open = hub.url("/v1/conversations")?;
        open.query_pairs_mut()
            .append_pair("assignee", &signed_in.user.id)
            .append_pair("status", "open")
            .append_pair("limit", "100");
        floor.agents.push(Agent {
            id: signed_in.user.id,
            bearer: bearer(&signed_in.access_token)?,
            open,
        });
    }
    let logins_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for agent in &floor.agents {
        let _: Value = hub
            .call_json(
                "setting an agent's routing profile",
                Method::PUT,
                hub.url(&format!("/v1/admin/agents/{}/profile", agent.id))?,
                &hub.admin,
                Some(&json!({ "capacity": { "whatsapp": args.capacity } })),
            )
            .await?;
    }
    let profiles_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    for agent in &floor.agents {
        let _: Value = hub
            .call_json(
                "setting an agent online",
                Method::PUT,
                hub.url("/v1/agents/me/presence")?,
                &agent.bearer,
                Some(&json!({ "status": "online" })),
            )
            .await?;
    }
    let presence_s = started.elapsed().as_secs_f64();

    // Heartbeats for as long as the run lasts.
    let heartbeat_failures = Arc::new(AtomicU64::new(0));
    let heartbeats = tokio::spawn(heartbeat(
        hub.clone(),
        floor.agents.clone(),
        Duration::from_secs(args.heartbeat_s),
        heartbeat_failures.clone(),
    ));
    let outcome = rounds_after_setup(
        hub,
        args,
        run_id,
        conversations,
        slots,
        assigned_before,
        floor,
    )
    .await;
    heartbeats.abort();
    let (setup_tail, fills, failures, client) = outcome?;

    // Server side, from the traces, now that nothing is being timed.
    let mut server_us = latency_histogram();
    let mut server_negative = 0;
    let mut server_over = 0;
    for fill in &fills {
        let resolved = hub.trace_at(&fill.resolved, "resolved").await?;
        let assigned = hub.trace_at(&fill.filled, "assigned").await?;
        if let (Some(resolved), Some(assigned)) = (resolved, assigned) {
            let ms = assigned - resolved;
            if ms < 0 {
                server_negative += 1;
            }
            if ms as f64 > TARGET_MS {
                server_over += 1;
            }
            server_us.saturating_record(u64::try_from(ms.max(0)).unwrap_or(0) * 1000);
        }
    }

    let client_over = fills
        .iter()
        .filter(|f| f.client.as_secs_f64() * 1000.0 > TARGET_MS)
        .count() as u64;
    Ok(FillReport {
        scenario: "fill",
        url: hub.base.to_string(),
        inbox: args.inbox.clone(),
        run_id: String::new(),
        agents: args.agents,
        capacity: args.capacity,
        backlog: args.backlog,
        rounds_planned: args.rounds,
        poll_interval_ms: args.poll_interval_ms,
        round_timeout_ms: args.round_timeout_ms,
        account_rules: 0,
        setup: FillSetup {
            users_s,
            logins_s,
            login_ms: Latency::from_histogram(&login_us),
            profiles_s,
            presence_s,
            webhooks: setup_tail.webhooks,
            accepted: setup_tail.accepted,
            ingest_s: setup_tail.ingest_s,
            settle_s: setup_tail.settle_s,
            traced_s: setup_tail.traced_s,
        },
        rounds: fills.len() as u64,
        failed: failures.count,
        errors: failures.by_kind,
        first_error: failures.first,
        client_ms: Latency::from_histogram(&client.fill_us),
        client_not_before_ms: Latency::from_histogram(&client.not_before_us),
        resolve_ms: Latency::from_histogram(&client.resolve_us),
        poll_ms: Latency::from_histogram(&client.poll_us),
        polls_per_round: client.polls as f64 / (fills.len() as u64 + failures.count).max(1) as f64,
        server_ms: Latency::from_histogram(&server_us),
        server_samples: server_us.len(),
        server_negative,
        target_ms: TARGET_MS,
        client_over_target: client_over,
        server_over_target: server_over,
        heartbeat_failures: heartbeat_failures.load(Ordering::Relaxed),
        cleanup: None,
    })
}

/// The set-up figures from the webhooks on.
struct SetupTail {
    webhooks: u64,
    accepted: u64,
    ingest_s: f64,
    settle_s: f64,
    traced_s: f64,
}

/// Failed rounds by kind, and the first one in full.
#[derive(Default)]
struct Failures {
    count: u64,
    by_kind: BTreeMap<String, u64>,
    first: Option<String>,
}

impl Failures {
    fn add(&mut self, kind: &str, detail: String) {
        self.count += 1;
        *self.by_kind.entry(kind.to_owned()).or_default() += 1;
        self.first.get_or_insert(detail);
    }
}

/// Client-side timings, in microseconds.
struct ClientTimes {
    fill_us: Histogram<u64>,
    not_before_us: Histogram<u64>,
    resolve_us: Histogram<u64>,
    poll_us: Histogram<u64>,
    polls: u64,
}

/// Opens the conversations, waits for the floor to fill, then runs the rounds.
async fn rounds_after_setup(
    hub: &Hub,
    args: &FillArgs,
    run_id: &str,
    conversations: usize,
    slots: u64,
    assigned_before: i64,
    floor: &Floor,
) -> anyhow::Result<(SetupTail, Vec<Fill>, Failures, ClientTimes)> {
    let setup_deadline = Instant::now() + Duration::from_secs(args.setup_timeout_s);
    let events = WhatsappEvents {
        app_secret: args.app_secret.as_bytes(),
        phone_number_id: &args.phone_number_id,
        run_id,
    }
    .build_new_customers(conversations)?;
    let load = Load::once(
        hub.client.clone(),
        WhatsappEvents::target(&hub.base, &args.app)?,
        events,
    );
    let started = Instant::now();
    let tally = closed_loop(&load, INGEST_CONCURRENCY, conversations, setup_deadline).await;
    let ingest_s = started.elapsed().as_secs_f64();
    if tally.accepted != conversations as u64 {
        bail!(
            "the hub accepted {} of {conversations} webhooks ({} duplicates; errors {:?}){}",
            tally.accepted,
            tally.duplicates,
            tally.errors,
            tally
                .first_error
                .as_deref()
                .map(|e| format!("; first: {e}"))
                .unwrap_or_default()
        );
    }

    // The engine assigns agents × capacity of them; the rest wait.
    let started = Instant::now();
    let (want_assigned, want_waiting) = (i64::try_from(slots)?, i64::try_from(args.backlog)?);
    loop {
        let now = hub.inbox_stats(&args.inbox).await?;
        let assigned = now.assigned - assigned_before;
        if assigned == want_assigned && now.waiting == want_waiting {
            break;
        }
        // More waiting than the backlog is normal while the engine catches up with the
        // arrivals; more assigned than the slots, or offers, is not.
        if assigned > want_assigned || now.offered > 0 {
            bail!(
                "the inbox's queue went astray: {assigned} assigned (want {want_assigned}), \
                 {} waiting (want {want_waiting}), {} offered; is something else writing to \
                 {}, or an offer-mode routing rule in force?",
                now.waiting,
                now.offered,
                args.inbox
            );
        }
        if Instant::now() >= setup_deadline {
            bail!(
                "set-up timed out after {} s: {assigned} of {want_assigned} conversations \
                 assigned and {} of {want_waiting} waiting; the hub reports {} free slots on {} \
                 available agents. {}",
                args.setup_timeout_s,
                now.waiting,
                now.capacity_free,
                now.available_agents,
                if now.waiting > want_waiting && now.capacity_free > 0 {
                    "The engine left slots free while conversations waited"
                } else {
                    "The hub's workers may still be normalizing (see --setup-timeout-s)"
                }
            );
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    let settle_s = started.elapsed().as_secs_f64();
    // The counts are right as soon as the conversations exist, but the engine may still be
    // writing a `waiting` trace for each (one transaction apiece, in queue order), and a
    // freed slot would wait behind that pass. The newest conversation is last in the queue:
    // once it is explained, the backlog is.
    let last = hub.newest_waiting(&args.inbox).await?;
    loop {
        if hub.trace_at(&last, "waiting").await?.is_some() {
            break;
        }
        if Instant::now() >= setup_deadline {
            bail!(
                "set-up timed out after {} s: the engine had not traced the newest waiting \
                 conversation {last} yet (see --setup-timeout-s)",
                args.setup_timeout_s
            );
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    let setup = SetupTail {
        webhooks: tally.events,
        accepted: tally.accepted,
        ingest_s,
        settle_s,
        traced_s: started.elapsed().as_secs_f64(),
    };

    let mut fills = Vec::new();
    let mut failures = Failures::default();
    let mut times = ClientTimes {
        fill_us: latency_histogram(),
        not_before_us: latency_histogram(),
        resolve_us: latency_histogram(),
        poll_us: latency_histogram(),
        polls: 0,
    };
    let timeout = Duration::from_millis(args.round_timeout_ms);
    let interval = Duration::from_millis(args.poll_interval_ms);
    for r in 0..args.rounds {
        let agent = &floor.agents[usize::try_from(r)? % floor.agents.len()];
        match hub.round(agent, timeout, interval, &mut times).await {
            Ok(fill) => {
                times.fill_us.saturating_record(micros(fill.client));
                times
                    .not_before_us
                    .saturating_record(micros(fill.not_before));
                fills.push(fill);
            }
            Err((kind, detail)) => failures.add(&kind, format!("round {r}: {detail}")),
        }
    }
    Ok((setup, fills, failures, times))
}

/// Keeps every agent's presence fresh until aborted.
async fn heartbeat(hub: Hub, agents: Vec<Agent>, every: Duration, failures: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tick.tick().await;
        for agent in &agents {
            let ok = match hub.url("/v1/agents/me/heartbeat") {
                Ok(url) => hub
                    .exchange(Method::POST, url, &agent.bearer, None)
                    .await
                    .is_ok_and(|a| a.status.is_success()),
                Err(_) => false,
            };
            if !ok {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
    value.set_sensitive(true);
    Ok(value)
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct SignedIn {
    access_token: String,
    user: Created,
}

#[derive(Deserialize)]
struct Conversation {
    id: String,
    routing_state: String,
    assignee_id: Option<String>,
    assigned_at_ms: Option<i64>,
}

#[derive(Deserialize)]
struct ConversationPage {
    data: Vec<Conversation>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Stats {
    inboxes: Vec<InboxStats>,
}

#[derive(Deserialize)]
struct InboxStats {
    /// The slug.
    name: String,
    channel: Option<String>,
    waiting: i64,
    offered: i64,
    assigned: i64,
    available_agents: i64,
    capacity_total: i64,
    capacity_free: i64,
}

#[derive(Deserialize)]
struct Trace {
    entries: Vec<TraceEntry>,
}

#[derive(Deserialize)]
struct TraceEntry {
    at_ms: i64,
    kind: String,
}

#[derive(Deserialize)]
struct RulePage {
    data: Vec<Value>,
}

/// An answer: its status, the wait a 429 asks for, and the body.
struct Answer {
    status: StatusCode,
    retry_after_s: Option<u64>,
    body: Bytes,
}

/// The hub, and the admin's bearer.
#[derive(Clone)]
struct Hub {
    client: Client,
    base: Url,
    admin: HeaderValue,
}

impl Hub {
    fn url(&self, path: &str) -> anyhow::Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("{}{path}", self.base))
    }

    /// One request (JSON body if any; no Authorization header for an empty bearer).
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        bearer: &HeaderValue,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut request = self.client.request(method, url);
        if !bearer.is_empty() {
            request = request.header(AUTHORIZATION, bearer.clone());
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(serde_json::to_vec(body)?);
        }
        let response = request.send().await.map_err(cause_chain)?;
        let status = response.status();
        let retry_after_s = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = response.bytes().await.map_err(cause_chain)?;
        Ok(Answer {
            status,
            retry_after_s,
            body,
        })
    }

    /// A set-up or clean-up request: a short 429 wait is honoured, any other refusal is an
    /// error naming `what` and quoting the hub's error envelope.
    async fn call(
        &self,
        what: &str,
        method: Method,
        url: Url,
        bearer: &HeaderValue,
        body: Option<&Value>,
    ) -> anyhow::Result<Bytes> {
        let mut retries = 0;
        loop {
            let answer = self
                .exchange(method.clone(), url.clone(), bearer, body)
                .await
                .with_context(|| format!("{what}: {method} {url}"))?;
            if answer.status.is_success() {
                return Ok(answer.body);
            }
            let wait = answer.retry_after_s.unwrap_or(1);
            if answer.status == StatusCode::TOO_MANY_REQUESTS
                && retries < RETRIES_429
                && wait <= MAX_RETRY_AFTER_S
            {
                retries += 1;
                tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
                continue;
            }
            bail!(
                "{what}: the hub refused {method} {}: {}",
                url.path(),
                refusal(answer.status, &answer.body)
            );
        }
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        url: Url,
        bearer: &HeaderValue,
        body: Option<&Value>,
    ) -> anyhow::Result<T> {
        let body = self.call(what, method, url, bearer, body).await?;
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "{what}: unexpected answer {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )
        })
    }

    async fn inbox_stats(&self, slug: &str) -> anyhow::Result<InboxStats> {
        let stats: Stats = self
            .call_json(
                "reading the queue statistics",
                Method::GET,
                self.url("/v1/queues/stats")?,
                &self.admin,
                None,
            )
            .await?;
        let names: Vec<String> = stats.inboxes.iter().map(|i| i.name.clone()).collect();
        stats
            .inboxes
            .into_iter()
            .find(|i| i.name == slug)
            .with_context(|| {
                format!(
                    "the hub's account has no inbox {slug:?} (it has: {}); see --inbox",
                    names.join(", ")
                )
            })
    }

    /// The inbox before the run: a WhatsApp inbox with an empty queue and no online agent
    /// holding a slot on it, or the rounds would not fill from this run's backlog alone.
    async fn preflight(&self, slug: &str) -> anyhow::Result<InboxStats> {
        let inbox = self.inbox_stats(slug).await?;
        ensure!(
            inbox.channel.as_deref() == Some("whatsapp"),
            "inbox {slug} is a {} inbox; the fill scenario sends WhatsApp messages (see --inbox, \
             --phone-number-id)",
            inbox.channel.as_deref().unwrap_or("?")
        );
        ensure!(
            inbox.waiting == 0 && inbox.offered == 0,
            "inbox {slug} already has {} waiting and {} offered conversations; the engine would \
             fill freed slots from those first. Resolve them, or run against a fresh hub",
            inbox.waiting,
            inbox.offered
        );
        ensure!(
            inbox.capacity_total == 0,
            "online agents already hold {} WhatsApp slots on inbox {slug}; they would take part \
             in the rounds. Set them offline (after a crashed run, its agents read offline \
             routing.presence_timeout_secs after their last heartbeat)",
            inbox.capacity_total
        );
        Ok(inbox)
    }

    async fn account_rules(&self) -> anyhow::Result<usize> {
        let rules: RulePage = self
            .call_json(
                "listing the routing rules",
                Method::GET,
                self.url("/v1/admin/routing-rules")?,
                &self.admin,
                None,
            )
            .await?;
        Ok(rules.data.len())
    }

    /// One round: the agent resolves its oldest conversation and waits to see the next one.
    /// Errors are (kind, detail).
    async fn round(
        &self,
        agent: &Agent,
        timeout: Duration,
        interval: Duration,
        times: &mut ClientTimes,
    ) -> Result<Fill, (String, String)> {
        // What the agent holds now (not timed).
        let held = self
            .open_of(agent)
            .await
            .map_err(|e| ("listing".to_owned(), format!("{e:#}")))?;
        let Some(victim) = held
            .iter()
            .filter(|c| c.routing_state == "assigned")
            .min_by_key(|c| (c.assigned_at_ms, c.id.clone()))
        else {
            return Err((
                "nothing held".to_owned(),
                format!(
                    "agent {} holds no conversation (an earlier fill never came?)",
                    agent.id
                ),
            ));
        };
        let resolved = victim.id.clone();
        let known: HashSet<&str> = held.iter().map(|c| c.id.as_str()).collect();
        let resolve = self
            .url(&format!("/v1/conversations/{resolved}/resolve"))
            .map_err(|e| ("url".to_owned(), format!("{e:#}")))?;

        let started = Instant::now();
        let timed = tokio::time::timeout(timeout, async {
            let answer = self
                .exchange(Method::POST, resolve, &agent.bearer, None)
                .await
                .map_err(|e| ("transport".to_owned(), format!("resolve: {e:#}")))?;
            times
                .resolve_us
                .saturating_record(micros(started.elapsed()));
            if !answer.status.is_success() {
                return Err((
                    format!("resolve {}", answer.status.as_u16()),
                    format!(
                        "resolving {resolved}: {}",
                        refusal(answer.status, &answer.body)
                    ),
                ));
            }
            let mut not_before = Duration::ZERO;
            loop {
                let sent = Instant::now();
                let answer = self
                    .exchange(Method::GET, agent.open.clone(), &agent.bearer, None)
                    .await
                    .map_err(|e| ("transport".to_owned(), format!("poll: {e:#}")))?;
                let seen = Instant::now();
                times.polls += 1;
                times.poll_us.saturating_record(micros(seen - sent));
                if !answer.status.is_success() {
                    return Err((
                        format!("poll {}", answer.status.as_u16()),
                        format!("polling: {}", refusal(answer.status, &answer.body)),
                    ));
                }
                let page: ConversationPage = serde_json::from_slice(&answer.body)
                    .map_err(|e| ("poll answer".to_owned(), e.to_string()))?;
                if let Some(new) = page.data.iter().find(|c| {
                    c.routing_state == "assigned"
                        && c.assignee_id.as_deref() == Some(agent.id.as_str())
                        && !known.contains(c.id.as_str())
                }) {
                    return Ok((new.id.clone(), seen - started, not_before));
                }
                not_before = sent - started;
                if !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
            }
        })
        .await;
        match timed {
            Ok(Ok((filled, client, not_before))) => Ok(Fill {
                resolved,
                filled,
                client,
                not_before,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err((
                "timeout".to_owned(),
                format!(
                    "agent {} resolved {resolved} and got nothing new within {} ms",
                    agent.id,
                    timeout.as_millis()
                ),
            )),
        }
    }

    /// The agent's open conversations, as the agent sees them.
    async fn open_of(&self, agent: &Agent) -> anyhow::Result<Vec<Conversation>> {
        let page: ConversationPage = self
            .call_json(
                "listing an agent's conversations",
                Method::GET,
                agent.open.clone(),
                &agent.bearer,
                None,
            )
            .await?;
        Ok(page.data)
    }

    /// The most recently created conversation of the inbox that waits.
    async fn newest_waiting(&self, slug: &str) -> anyhow::Result<String> {
        let mut url = self.url("/v1/conversations")?;
        url.query_pairs_mut()
            .append_pair("inbox", slug)
            .append_pair("status", "open")
            .append_pair("limit", "100");
        let page: ConversationPage = self
            .call_json(
                "listing the inbox's newest conversations",
                Method::GET,
                url,
                &self.admin,
                None,
            )
            .await?;
        page.data
            .into_iter()
            .find(|c| c.routing_state == "waiting")
            .map(|c| c.id)
            .with_context(|| format!("none of the newest 100 open conversations of {slug} waits"))
    }

    /// When the conversation's last trace entry of this kind was written.
    async fn trace_at(&self, conversation: &str, kind: &str) -> anyhow::Result<Option<i64>> {
        let trace: Trace = self
            .call_json(
                "reading a routing trace",
                Method::GET,
                self.url(&format!("/v1/conversations/{conversation}/routing-trace"))?,
                &self.admin,
                None,
            )
            .await?;
        Ok(trace
            .entries
            .iter()
            .rev()
            .find(|e| e.kind == kind)
            .map(|e| e.at_ms))
    }

    /// Puts the hub back as it was, as far as REST allows: the run's agents offline, every
    /// conversation it left open resolved (all that wait in the inbox, which was empty before,
    /// and all the agents hold), the agents deactivated. Failures are counted, not fatal.
    async fn clean_up(&self, slug: &str, floor: &Floor) -> FillCleanup {
        let mut c = FillCleanup::default();
        let failed = |c: &mut FillCleanup, e: anyhow::Error| {
            c.errors += 1;
            c.first_error.get_or_insert(format!("{e:#}"));
        };
        for agent in &floor.agents {
            match self
                .call(
                    "setting an agent offline",
                    Method::PUT,
                    self.url("/v1/agents/me/presence")
                        .unwrap_or_else(|_| self.base.clone()),
                    &agent.bearer,
                    Some(&json!({ "status": "offline" })),
                )
                .await
            {
                Ok(_) => c.offline += 1,
                Err(e) => failed(&mut c, e),
            }
        }
        let ours: HashSet<&str> = floor.users.iter().map(String::as_str).collect();
        let mut leftover = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self
                .url("/v1/conversations")
                .unwrap_or_else(|_| self.base.clone());
            url.query_pairs_mut()
                .append_pair("inbox", slug)
                .append_pair("status", "open")
                .append_pair("limit", "100");
            if let Some(cursor) = &cursor {
                url.query_pairs_mut().append_pair("cursor", cursor);
            }
            match self
                .call_json::<ConversationPage>(
                    "listing the inbox's open conversations",
                    Method::GET,
                    url,
                    &self.admin,
                    None,
                )
                .await
            {
                Ok(page) => {
                    leftover.extend(page.data.into_iter().filter(|conv| {
                        conv.routing_state == "waiting"
                            || conv
                                .assignee_id
                                .as_deref()
                                .is_some_and(|a| ours.contains(a))
                    }));
                    match page.next_cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                Err(e) => {
                    failed(&mut c, e);
                    break;
                }
            }
        }
        for conv in leftover {
            let url = self
                .url(&format!("/v1/conversations/{}/resolve", conv.id))
                .unwrap_or_else(|_| self.base.clone());
            match self
                .call(
                    "resolving a leftover conversation",
                    Method::POST,
                    url,
                    &self.admin,
                    None,
                )
                .await
            {
                Ok(_) => c.resolved += 1,
                Err(e) => failed(&mut c, e),
            }
        }
        for user in &floor.users {
            let url = self
                .url(&format!("/v1/admin/users/{user}"))
                .unwrap_or_else(|_| self.base.clone());
            match self
                .call(
                    "deactivating an agent user",
                    Method::PATCH,
                    url,
                    &self.admin,
                    Some(&json!({ "active": false })),
                )
                .await
            {
                Ok(_) => c.deactivated += 1,
                Err(e) => failed(&mut c, e),
            }
        }
        c
    }
}

/// reqwest's own message is generic; the cause is down the source chain.
fn cause_chain(e: reqwest::Error) -> anyhow::Error {
    let kind = if e.is_timeout() {
        "timeout"
    } else {
        "no answer"
    };
    let mut message = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    anyhow::anyhow!(message)
}

/// A refusal as the hub put it: status, code, message, the fields named, the correlation id;
/// plus what to do about the refusals a bench run typically meets.
fn refusal(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: Problem,
    }
    #[derive(Deserialize)]
    struct Problem {
        code: String,
        message: String,
        #[serde(default)]
        details: Vec<Value>,
        correlation_id: Option<String>,
    }
    let mut text = match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error: p }) => {
            let mut text = format!("HTTP {} {}: {}", status.as_u16(), p.code, p.message);
            // Details the message already says (a single invalid field) are not repeated.
            let details: Vec<String> = p
                .details
                .iter()
                .map(|d| match (d.get("field"), d.get("message")) {
                    (Some(Value::String(f)), Some(Value::String(m))) => format!("{f}: {m}"),
                    _ => d.to_string(),
                })
                .filter(|d| !p.message.contains(d.as_str()))
                .collect();
            if !details.is_empty() {
                text.push_str(&format!(" ({})", details.join("; ")));
            }
            if let Some(id) = p.correlation_id {
                text.push_str(&format!(" [correlation id {id}]"));
            }
            text
        }
        Err(_) => format!(
            "HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    };
    let hint = match status.as_u16() {
        401 => {
            " — is --token a live access token (they last auth.access_token_ttl_secs) or an sbk_ key?"
        }
        403 => {
            " — --token needs super_admin (manage_users, configure_routing, view_conversations, reply_to_customer)"
        }
        429 => {
            " — the hub's rate limit: raise rate_limits.login_per_minute (sign-ins per IP per minute; above --agents) and rate_limits.api_per_second (REST per user; polls come every --poll-interval-ms) for the run"
        }
        _ => "",
    };
    text.push_str(hint);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_quote_the_envelope() {
        let body = br#"{"error":{"code":"validation_failed","message":"invalid request","details":[{"field":"password","message":"must be at least 12 characters"}],"correlation_id":"01abc"}}"#;
        let text = refusal(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(
            text,
            "HTTP 422 validation_failed: invalid request (password: must be at least 12 \
             characters) [correlation id 01abc]"
        );
        let body = br#"{"error":{"code":"validation_failed","message":"password: too short","details":[{"field":"password","message":"too short"}],"correlation_id":"01abd"}}"#;
        let text = refusal(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(
            text,
            "HTTP 422 validation_failed: password: too short [correlation id 01abd]"
        );
        let text = refusal(StatusCode::TOO_MANY_REQUESTS, b"slow down");
        assert!(text.starts_with("HTTP 429: slow down"), "{text}");
        assert!(text.contains("rate_limits.login_per_minute"), "{text}");
    }

    #[test]
    fn rounds_never_outrun_the_backlog() {
        let url = http::loopback_url("http://127.0.0.1:9").unwrap();
        let args = FillArgs {
            url,
            token: "t".into(),
            app: "demo".into(),
            app_secret: "s".into(),
            phone_number_id: "1".into(),
            inbox: "support-wa".into(),
            agents: 1,
            capacity: 1,
            backlog: 5,
            rounds: 6,
            poll_interval_ms: 1,
            round_timeout_ms: 10,
            setup_timeout_s: 1,
            heartbeat_s: 1,
            agent_password: "x".into(),
            keep: true,
            json: false,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime.block_on(run(args)).unwrap_err();
        assert!(err.to_string().contains("--rounds (6)"), "{err}");
    }
}
