//! The `api` and `login` scenarios: what authentication and access control cost on the REST
//! API.
//!
//! `api` sends the same authenticated GET in a closed loop with one bearer (an access token or
//! an `sbk_` API key), so every request pays the hub's whole authentication path (token or key
//! check, session and user lookup, role grants, rate limit) plus the scoped query behind the
//! path. `login` signs one user in over and over (`POST /v1/auth/login`): argon2id
//! verification plus a new session each time, the cost a morning rush or a password-guessing
//! attacker imposes.
//!
//! The hub limits both per caller (`rate_limits.api_per_second`, `rate_limits.login_per_minute`);
//! raise those for a run, or the figures measure the limiter. 429s are counted apart.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Method, Url};
use tokio::time::Instant;

use crate::http::{self, Job, closed_loop};
use crate::proc_cpu::{HubProbe, Process, cpu_time};
use crate::report::{ApiReport, Latency, Outcome, Tally};

/// What both scenarios share: where, how much, how long, how to report.
#[derive(Args)]
pub struct LoadArgs {
    /// Base URL of the hub. Only loopback hosts are accepted: 127.0.0.0/8, localhost, ::1.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = http::loopback_url)]
    url: Url,
    /// Requests to send at most; the run usually ends at --max-seconds first.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    requests: u64,
    /// Requests in flight (closed loop: exactly this many).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Stop starting requests after this many seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    max_seconds: u64,
    /// The hub's pid, to report its CPU time per request (Linux /proc).
    #[arg(long)]
    hub_pid: Option<u32>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ApiArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// The bearer: an access token (from /v1/auth/login) or an `sbk_` API key.
    #[arg(long, env = "SWITCHBOARD_BENCH_TOKEN", hide_env_values = true)]
    token: String,
    /// Path and query to GET, on the hub's URL.
    #[arg(long, default_value = "/v1/conversations?limit=25", value_parser = absolute_path)]
    path: String,
}

#[derive(Args)]
pub struct LoginArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[arg(long)]
    email: String,
    #[arg(long, env = "SWITCHBOARD_BENCH_PASSWORD", hide_env_values = true)]
    password: String,
}

fn absolute_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.starts_with("//") {
        Ok(s.to_owned())
    } else {
        Err("expected a path on the hub, starting with a single '/'".to_owned())
    }
}

/// One request, sent again and again.
#[derive(Clone)]
struct Repeat {
    client: Client,
    request: Arc<Request>,
}

struct Request {
    method: Method,
    url: Url,
    authorization: Option<HeaderValue>,
    json_body: Option<Bytes>,
}

impl Job for Repeat {
    async fn run(&self, _: usize, tally: &mut Tally) {
        tally.events += 1;
        let started = Instant::now();
        let outcome = self.send().await;
        tally.record(outcome, started.elapsed());
    }
}

impl Repeat {
    async fn send(&self) -> Outcome {
        let r = &self.request;
        let mut builder = self.client.request(r.method.clone(), r.url.clone());
        if let Some(authorization) = &r.authorization {
            builder = builder.header(AUTHORIZATION, authorization.clone());
        }
        if let Some(body) = &r.json_body {
            builder = builder
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
        }
        match http::answer(builder.send().await).await {
            Ok((status, _)) if status.is_success() => Outcome::Acked,
            Ok((status, body)) => http::refused(status, &body),
            Err(outcome) => outcome,
        }
    }
}

/// Runs `api` and prints the report; `Ok(false)` when no request got a 2xx.
pub async fn run_api(args: ApiArgs) -> anyhow::Result<bool> {
    let url = args
        .load
        .url
        .join(&args.path)
        .map_err(|e| anyhow::anyhow!("{}{}: {e}", args.load.url, args.path))?;
    let mut authorization = HeaderValue::try_from(format!("Bearer {}", args.token))
        .map_err(|_| anyhow::anyhow!("--token holds characters a header cannot carry"))?;
    authorization.set_sensitive(true);
    let credential = if args.token.starts_with("sbk_") {
        "api key"
    } else {
        "access token"
    };
    let request = Request {
        method: Method::GET,
        url,
        authorization: Some(authorization),
        json_body: None,
    };
    drive("api", credential, request, &args.load).await
}

/// Runs `login` and prints the report; `Ok(false)` when no sign-in succeeded.
pub async fn run_login(args: LoginArgs) -> anyhow::Result<bool> {
    let url = crate::payload::endpoint(&args.load.url, &["v1", "auth", "login"])?;
    let body = serde_json::to_vec(&serde_json::json!({
        "email": args.email,
        "password": args.password,
        "refresh_in": "body",
    }))?;
    let request = Request {
        method: Method::POST,
        url,
        authorization: None,
        json_body: Some(body.into()),
    };
    drive("login", "password", request, &args.load).await
}

async fn drive(
    scenario: &'static str,
    credential: &'static str,
    request: Request,
    args: &LoadArgs,
) -> anyhow::Result<bool> {
    let count = usize::try_from(args.requests)?;
    let concurrency = usize::try_from(args.concurrency)?;
    let target = format!("{} {}", request.method, request.url);
    let job = Repeat {
        client: http::client(concurrency)?,
        request: Arc::new(request),
    };

    let hub = match args.hub_pid {
        Some(pid) => Some(HubProbe::start(pid).await?),
        None => None,
    };
    let bench_before = cpu_time(Process::Myself)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_seconds);
    let tally = closed_loop(&job, concurrency, count, deadline).await;
    let elapsed = start.elapsed();
    let bench_cpu = cpu_time(Process::Myself)?.saturating_sub(bench_before);
    // Nothing runs after the answer (no queue behind these routes): no settling.
    let hub_cpu = match hub {
        Some(hub) => Some(hub.finish(elapsed, Duration::ZERO, tally.requests).await?),
        None => None,
    };

    let report = ApiReport {
        scenario,
        target,
        credential,
        concurrency,
        requests_planned: args.requests,
        requests: tally.requests,
        ok: tally.acked,
        non_2xx: tally.refused(None),
        rate_limited: tally.refused(Some(429)),
        errors: tally.errors.clone(),
        first_error: tally.first_error.clone(),
        stopped_early: tally.requests < args.requests,
        elapsed_s: elapsed.as_secs_f64(),
        ok_per_s: tally.acked as f64 / elapsed.as_secs_f64(),
        latency_ms: Latency::from_histogram(&tally.latency),
        hub_cpu,
        bench_cpu_s: bench_cpu.as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    if tally.acked == 0 {
        eprintln!("error: no request got a 2xx answer");
    }
    Ok(tally.acked > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_on_the_hub() {
        assert!(absolute_path("/v1/conversations?limit=25").is_ok());
        for bad in ["v1/conversations", "//evil.example/x", "http://10.0.0.1/"] {
            assert!(absolute_path(bad).is_err(), "{bad}");
        }
        let base = http::loopback_url("http://127.0.0.1:8080").unwrap();
        let url = base.join("/v1/conversations?limit=25").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/v1/conversations?limit=25"
        );
    }

    #[test]
    fn refusals_are_counted_by_status() {
        let mut tally = Tally::new();
        tally.record(Outcome::Acked, Duration::from_millis(1));
        tally.record(
            Outcome::Refused(429, String::new()),
            Duration::from_millis(1),
        );
        tally.record(
            Outcome::Refused(429, String::new()),
            Duration::from_millis(1),
        );
        tally.record(
            Outcome::Refused(401, String::new()),
            Duration::from_millis(1),
        );
        tally.record(
            Outcome::Failed("timeout", String::new()),
            Duration::from_millis(1),
        );
        assert_eq!(tally.acked, 1);
        assert_eq!(tally.refused(None), 3);
        assert_eq!(tally.refused(Some(429)), 2);
        assert_eq!(tally.refused(Some(500)), 0);
    }
}
