//! The `ingest` scenario: signed inbound webhooks, each a new event, timed from send to the
//! end of the hub's answer.
//!
//! Two load models. The closed loop keeps `--concurrency` requests in flight and measures the
//! most the hub sustains. The open model (`--rate`) starts events on a fixed schedule whatever
//! the answers, with at most `--concurrency` in flight, and counts the events that could not
//! start on their slot, so a saturated hub shows up as lateness rather than hiding in a slower
//! send rate.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Url};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::payload::{Prepared, Target, TwilioEvents, WhatsappEvents, run_id};
use crate::proc_cpu::{Process, cpu_time};
use crate::report::{HubCpu, Latency, Outcome, Report, Tally};

/// Per-request ceiling: a hub slower than this is broken, not slow.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How far behind its slot an open-model event may start and still count as on time (tokio's
/// timer has millisecond granularity).
const ON_TIME_SLACK: Duration = Duration::from_millis(5);

#[derive(Args)]
pub struct IngestArgs {
    /// Base URL of the hub. Only loopback hosts are accepted: 127.0.0.0/8, localhost, ::1.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = loopback_url)]
    url: Url,
    #[arg(long, value_enum, default_value_t = Channel::Whatsapp)]
    channel: Channel,
    /// WhatsApp: the Meta app name in /webhooks/whatsapp/{app}.
    #[arg(long, default_value = "demo")]
    app: String,
    /// WhatsApp: the app secret that signs the bodies.
    #[arg(long, default_value = "test_app_secret_0123456789abcdef")]
    app_secret: String,
    /// WhatsApp: metadata.phone_number_id, which picks the inbox.
    #[arg(long, default_value = "800000000000001", value_parser = digits)]
    phone_number_id: String,
    /// Twilio: the inbox slug in /webhooks/twilio/{inbox}.
    #[arg(long, default_value = "support-sms")]
    inbox: String,
    /// Twilio: the inbox's auth token that signs the requests.
    #[arg(long, default_value = "0123456789abcdef0123456789abcdef")]
    auth_token: String,
    /// Twilio: the hub's server.public_url; the hub checks signatures against
    /// {public_url}/webhooks/twilio/{inbox}, whatever address the request came to.
    #[arg(long, default_value = "http://localhost:8080")]
    public_url: String,
    /// Events to send. Bodies are built before timing starts, about 0.7 KB of memory each.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    requests: u64,
    /// Most requests in flight (closed loop: exactly this many).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Open model: start events at this fixed rate per second, whatever the answers.
    #[arg(long, value_parser = positive_rate)]
    rate: Option<f64>,
    /// Send every event twice, the second right after the first is answered.
    #[arg(long)]
    duplicates: bool,
    /// Stop starting events after this many seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    max_seconds: u64,
    /// The hub's pid, to report its CPU time per event (Linux /proc).
    #[arg(long)]
    hub_pid: Option<u32>,
    /// With --hub-pid: how long to wait, after the last answer, for the hub to go idle (its
    /// workers normalize events after the ack); 0 skips the wait.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(0..=3600))]
    settle_seconds: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Channel {
    Whatsapp,
    Twilio,
}

fn loopback_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "only http:// is supported (got {}://); the hub is on loopback",
            url.scheme()
        ));
    }
    let host = url.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!(
            "refusing host {host:?}: switchboard-bench only targets loopback \
             (127.0.0.0/8, localhost, ::1), never a hub reachable from elsewhere"
        ));
    }
    Ok(url)
}

fn digits(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err("expected digits only".to_owned())
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err("expected a rate per second in (0, 10000000]".to_owned()),
    }
}

/// Runs the scenario and prints the report; `Ok(false)` when the hub acknowledged nothing.
pub async fn run(args: IngestArgs) -> anyhow::Result<bool> {
    let n = usize::try_from(args.requests)?;
    let concurrency = usize::try_from(args.concurrency)?;
    let run_id = run_id();
    let (target, events) = match args.channel {
        Channel::Whatsapp => (
            WhatsappEvents::target(&args.url, &args.app)?,
            WhatsappEvents {
                app_secret: args.app_secret.as_bytes(),
                phone_number_id: &args.phone_number_id,
                run_id: &run_id,
            }
            .build(n)?,
        ),
        Channel::Twilio => (
            TwilioEvents::target(&args.url, &args.inbox)?,
            TwilioEvents {
                auth_token: args.auth_token.as_bytes(),
                signed_url: format!(
                    "{}/webhooks/twilio/{}",
                    args.public_url.trim_end_matches('/'),
                    args.inbox
                ),
                run_id: &run_id,
            }
            .build(n)?,
        ),
    };
    let client = Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let load = Load {
        client,
        target: Arc::new(target),
        events: Arc::new(events),
        duplicates: args.duplicates,
    };

    let hub = match args.hub_pid {
        Some(pid) => Some(HubProbe::start(pid).await?),
        None => None,
    };
    let bench_before = cpu_time(Process::Myself)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_seconds);
    let (tally, late) = match args.rate {
        None => (load.closed(concurrency, deadline).await, None),
        Some(rate) => {
            let (tally, late) = load.open(concurrency, rate, start, deadline).await;
            (tally, Some(late))
        }
    };
    let elapsed = start.elapsed();
    let bench_cpu = cpu_time(Process::Myself)?.saturating_sub(bench_before);
    let hub_cpu = match hub {
        Some(hub) => Some(
            hub.finish(
                elapsed,
                Duration::from_secs(args.settle_seconds),
                tally.events,
            )
            .await?,
        ),
        None => None,
    };

    let says_which = args.channel == Channel::Whatsapp;
    let report = Report {
        scenario: "ingest",
        channel: match args.channel {
            Channel::Whatsapp => "whatsapp",
            Channel::Twilio => "twilio",
        },
        url: load.target.url.to_string(),
        run_id,
        concurrency,
        rate: args.rate,
        duplicates_mode: args.duplicates,
        events_planned: args.requests,
        events: tally.events,
        requests: tally.requests,
        acked: tally.acked,
        accepted: says_which.then_some(tally.accepted),
        duplicates: says_which.then_some(tally.duplicates),
        errors: tally.errors.clone(),
        first_error: tally.first_error.clone(),
        late,
        stopped_early: tally.events < args.requests,
        elapsed_s: elapsed.as_secs_f64(),
        acks_per_s: tally.acked as f64 / elapsed.as_secs_f64(),
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
        eprintln!("error: the hub acknowledged no request");
    }
    Ok(tally.acked > 0)
}

/// The hub's CPU clock, read around the run. An idle hub is not at zero (the embedded queue
/// polls SQLite), so its idle rate is measured first and taken off the per-event figures.
struct HubProbe {
    pid: u32,
    idle: Duration,
    before: Duration,
}

impl HubProbe {
    /// Takes one second to measure the idle rate.
    async fn start(pid: u32) -> anyhow::Result<Self> {
        let first = cpu_time(Process::Pid(pid))?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = cpu_time(Process::Pid(pid))?;
        Ok(Self {
            pid,
            idle: before.saturating_sub(first),
            before,
        })
    }

    /// Reads the clock at the end of the run, then again once the hub has gone back to its
    /// idle rate (within 20 ms a second), at most `settle` later.
    async fn finish(self, run: Duration, settle: Duration, events: u64) -> anyhow::Result<HubCpu> {
        let pid = self.pid;
        let during = cpu_time(Process::Pid(pid))?.saturating_sub(self.before);
        let acked_at = Instant::now();
        let mut last = cpu_time(Process::Pid(pid))?;
        while !settle.is_zero() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = cpu_time(Process::Pid(pid))?;
            let quiet = now.saturating_sub(last) <= self.idle + Duration::from_millis(20);
            last = now;
            if quiet || acked_at.elapsed() >= settle {
                break;
            }
        }
        let until_idle = last.saturating_sub(self.before);
        let tail = acked_at.elapsed();
        let net = |cpu: Duration, wall: Duration| {
            cpu.as_secs_f64() - self.idle.as_secs_f64() * wall.as_secs_f64()
        };
        let per_event = |seconds: f64| seconds.max(0.0) * 1e6 / events.max(1) as f64;
        Ok(HubCpu {
            pid,
            idle_cores: self.idle.as_secs_f64(),
            during_s: during.as_secs_f64(),
            during_us_per_event: per_event(net(during, run)),
            until_idle_s: until_idle.as_secs_f64(),
            until_idle_us_per_event: per_event(net(until_idle, run + tail)),
            // The final quiet second is not work.
            idle_after_s: (tail.as_secs_f64() - 1.0).max(0.0),
            settled: settle.is_zero() || tail < settle,
        })
    }
}

/// Everything a sender needs; cheap to clone into tasks.
#[derive(Clone)]
struct Load {
    client: Client,
    target: Arc<Target>,
    events: Arc<Vec<Prepared>>,
    duplicates: bool,
}

impl Load {
    /// `concurrency` workers, each sending its next event as soon as the last is answered.
    async fn closed(&self, concurrency: usize, deadline: Instant) -> Tally {
        let next = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let load = self.clone();
                let next = next.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= load.events.len() || Instant::now() >= deadline {
                            break;
                        }
                        load.event(i, &mut tally).await;
                    }
                    tally
                })
            })
            .collect();
        let mut total = Tally::new();
        for worker in workers {
            match worker.await {
                Ok(tally) => total.merge(tally),
                Err(e) => eprintln!("a load worker failed: {e}"),
            }
        }
        total
    }

    /// Event `i` starts at `start + i / rate`, on a free slot if there is one; if not (or the
    /// generator is behind), it starts as soon as it can and counts as late.
    async fn open(
        &self,
        concurrency: usize,
        rate: f64,
        start: Instant,
        deadline: Instant,
    ) -> (Tally, u64) {
        let slots = Arc::new(Semaphore::new(concurrency));
        let total = Arc::new(Mutex::new(Tally::new()));
        let mut late = 0;
        for i in 0..self.events.len() {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due >= deadline {
                break;
            }
            tokio::time::sleep_until(due).await;
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    if Instant::now() > due + ON_TIME_SLACK {
                        late += 1;
                    }
                    slot
                }
                Err(_) => {
                    late += 1;
                    match slots.clone().acquire_owned().await {
                        Ok(slot) => slot,
                        Err(_) => break, // never closed
                    }
                }
            };
            let load = self.clone();
            let total = total.clone();
            tokio::spawn(async move {
                let mut tally = Tally::new();
                load.event(i, &mut tally).await;
                total
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .merge(tally);
                drop(slot);
            });
        }
        // Every slot back means every request has been answered.
        let _ = slots.acquire_many(concurrency as u32).await;
        let tally = std::mem::replace(
            &mut *total.lock().unwrap_or_else(PoisonError::into_inner),
            Tally::new(),
        );
        (tally, late)
    }

    /// Sends event `i` (twice with --duplicates) and records the answers.
    async fn event(&self, i: usize, tally: &mut Tally) {
        tally.events += 1;
        let sends = if self.duplicates { 2 } else { 1 };
        for _ in 0..sends {
            let started = Instant::now();
            let outcome = self.send(&self.events[i]).await;
            tally.record(outcome, started.elapsed());
        }
    }

    async fn send(&self, event: &Prepared) -> Outcome {
        let target = &self.target;
        let sent = self
            .client
            .post(target.url.clone())
            .header(CONTENT_TYPE, target.content_type.clone())
            .header(target.signature_header.clone(), event.signature.clone())
            .body(event.body.clone())
            .send()
            .await;
        let failed = |e: reqwest::Error| {
            let kind = if e.is_timeout() {
                "timeout"
            } else {
                "transport"
            };
            // reqwest's own message is generic; the cause is down the source chain.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            Outcome::Failed(kind, message)
        };
        let response = match sent {
            Ok(response) => response,
            Err(e) => return failed(e),
        };
        let status = response.status();
        // Read the whole body: the answer is not complete (nor the connection reusable) before.
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return failed(e),
        };
        if !status.is_success() {
            let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Outcome::Refused(status.as_u16(), excerpt);
        }
        #[derive(Deserialize)]
        struct Ack<'a> {
            status: &'a str,
        }
        match serde_json::from_slice::<Ack>(&body) {
            Ok(Ack { status: "accepted" }) => Outcome::Accepted,
            Ok(Ack {
                status: "duplicate",
            }) => Outcome::Duplicate,
            _ => Outcome::Acked,
        }
    }
}
