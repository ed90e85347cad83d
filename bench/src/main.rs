//! `switchboard-bench`: a load generator for a Switchboard hub running on this machine.
//!
//! Owns traffic and measurement only. It signs requests exactly as the providers do (through
//! `switchboard-connectors`), sends them to the hub's public endpoints and reports acks,
//! latency and, given the hub's pid, the hub's CPU cost per event. It never touches the hub's
//! database, queue or broker, and it refuses any target that is not loopback, so it cannot be
//! pointed at a real hub by mistake.
//!
//! Scenarios: `ingest` (signed inbound webhooks, WhatsApp or Twilio SMS), `api` (authenticated
//! REST reads with an access token or API key), `login` (password sign-ins), `route` (the
//! assignment engine's decision core in process, no hub) and `fill` (how fast the engine of a
//! running hub fills a slot an agent frees by resolving a conversation); and the live consoles
//! over WebSocket: `ws-idle` (hub memory per idle console), `ws-latency` (webhook accepted →
//! console frame) and `ws-fanout` (frames a second to many consoles).

mod api;
mod fill;
mod http;
mod ingest;
mod payload;
mod proc_cpu;
mod proc_mem;
mod report;
mod route;
mod ws;

use std::future::Future;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Load generator for a Switchboard hub on loopback"
)]
struct Cli {
    /// Runtime worker threads for the generator (default: one per CPU). On a small machine
    /// shared with the hub, fewer threads leave more CPU to the hub.
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Signed inbound provider webhooks, each a new event (or a duplicate with --duplicates).
    Ingest(ingest::IngestArgs),
    /// Authenticated GETs with one bearer (access token or API key): the cost of authentication
    /// and access control per REST request.
    Api(api::ApiArgs),
    /// Password sign-ins (`POST /v1/auth/login`) of one user: argon2id and a new session each.
    Login(api::LoginArgs),
    /// The assignment engine in process, no hub: `order` over a large queue and the latency
    /// of each decision (`decide_planned` + `take`) against a large account.
    Route(route::RouteArgs),
    /// Freed capacity filled, end to end: agents and a backlog set up over REST and signed
    /// webhooks, then each round an agent resolves a conversation and the time until the engine
    /// assigns it the next one is measured (client-side and from the routing traces).
    ///
    /// Raise the hub's rate_limits.login_per_minute above --agents (each agent signs in once)
    /// and rate_limits.api_per_second (each agent polls every --poll-interval-ms) for a run.
    Fill(fill::FillArgs),
    /// Idle consoles on GET /v1/ws: the hub's memory (and the generator's) per open socket,
    /// read at several socket counts so the slope per connection shows.
    WsIdle(ws::idle::IdleArgs),
    /// Webhook accepted → `message.created` frame on a console: signed WhatsApp webhooks
    /// open-loop at --rate, each matched to its frame by a marker in its text.
    WsLatency(ws::latency::LatencyArgs),
    /// Many consoles watching one account: frames delivered per second over all sockets, every
    /// socket checked for every event, hub and generator CPU.
    WsFanout(ws::fanout::FanoutArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.scenario {
        Scenario::Ingest(args) => on_runtime(cli.threads, ingest::run(args)),
        Scenario::Api(args) => on_runtime(cli.threads, api::run_api(args)),
        Scenario::Login(args) => on_runtime(cli.threads, api::run_login(args)),
        Scenario::Fill(args) => on_runtime(cli.threads, fill::run(args)),
        Scenario::WsIdle(args) => on_runtime(cli.threads, ws::idle::run(args)),
        Scenario::WsLatency(args) => on_runtime(cli.threads, ws::latency::run(args)),
        Scenario::WsFanout(args) => on_runtime(cli.threads, ws::fanout::run(args)),
        // Single-threaded and synchronous: no runtime.
        Scenario::Route(args) => route::run(&args),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a load scenario on a multi-threaded runtime (`--threads` workers).
fn on_runtime(
    threads: Option<u16>,
    scenario: impl Future<Output = anyhow::Result<bool>>,
) -> anyhow::Result<bool> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = threads {
        runtime.worker_threads(threads.into());
    }
    runtime.build()?.block_on(scenario)
}
