//! The `ingest` scenario: signed inbound webhooks, each a new event, timed from send to the
//! end of the hub's answer.
//!
//! Two load models. The closed loop keeps `--concurrency` requests in flight and measures the
//! most the hub sustains. The open model (`--rate`) starts events on a fixed schedule whatever
//! the answers, with at most `--concurrency` in flight, and counts the events that could not
//! start on their slot, so a saturated hub shows up as lateness rather than hiding in a slower
//! send rate.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::{Args, ValueEnum};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, Url};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::http::{self, Job, closed_loop};
use crate::payload::{Prepared, Target, TwilioEvents, WhatsappEvents, run_id};
use crate::proc_cpu::{HubProbe, Process, cpu_time};
use crate::report::{Latency, Outcome, Report, Tally};

/// How far behind its slot an open-model event may start and still count as on time (tokio's
/// timer has millisecond granularity).
const ON_TIME_SLACK: Duration = Duration::from_millis(5);

#[derive(Args)]
pub struct IngestArgs {
    /// Base URL of the hub. Only loopback hosts are accepted: 127.0.0.0/8, localhost, ::1.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = http::loopback_url)]
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
    /// A token that may read reports (`view_sla_reports`: an access token or API key). After
    /// the run (and the settle wait), the hub's volume report is read until the customer
    /// messages stored since the run began equal the events it accepted, or for up to
    /// `--verify-seconds`; the report says which, and a mismatch fails the run (loss or
    /// duplicates). Only meaningful when nothing else sends to the hub meanwhile.
    #[arg(long, env = "SWITCHBOARD_BENCH_TOKEN", hide_env_values = true)]
    verify_token: Option<String>,
    /// How long to wait for the stored count to reach the accepted count.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    verify_seconds: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Channel {
    Whatsapp,
    Twilio,
}

pub fn digits(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_owned())
    } else {
        Err("expected digits only".to_owned())
    }
}

pub fn positive_rate(s: &str) -> Result<f64, String> {
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
    let client = http::client(concurrency)?;
    let load = Load {
        client,
        target: Arc::new(target),
        events: Arc::new(events),
        duplicates: args.duplicates,
        stamps: None,
    };

    let hub = match args.hub_pid {
        Some(pid) => Some(HubProbe::start(pid).await?),
        None => None,
    };
    let bench_before = cpu_time(Process::Myself)?;
    // A millisecond early: the hub stamps a message when it stores it, on the same clock.
    let began_ms = unix_ms().saturating_sub(1);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_seconds);
    let (tally, late) = match args.rate {
        None => (closed_loop(&load, concurrency, n, deadline).await, None),
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
    // New events the hub took: WhatsApp's ack says which; Twilio's does not, so every
    // distinct event acknowledged counts (a `--duplicates` run sends each twice).
    let expected = if says_which {
        tally.accepted
    } else {
        tally.events.min(tally.acked)
    };
    let stored = match &args.verify_token {
        Some(token) => Some(
            stored_count(
                &args.url,
                token,
                began_ms,
                expected,
                Duration::from_secs(args.verify_seconds),
            )
            .await?,
        ),
        None => None,
    };
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
        stored,
        expected_stored: stored.map(|_| expected),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    if tally.acked == 0 {
        eprintln!("error: the hub acknowledged no request");
    }
    if let Some(stored) = stored
        && stored != expected
    {
        eprintln!("error: the hub stored {stored} messages for {expected} accepted events");
        return Ok(false);
    }
    Ok(tally.acked > 0)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// Customer messages the hub stored since `since_ms`, read from `GET /v1/reports/volume`
/// until they reach `expected` or `wait` has passed (normalization follows the acks).
async fn stored_count(
    url: &Url,
    token: &str,
    since_ms: u64,
    expected: u64,
    wait: Duration,
) -> anyhow::Result<u64> {
    #[derive(Deserialize)]
    struct Volume {
        rows: Vec<Row>,
    }
    #[derive(Deserialize)]
    struct Row {
        inbound_messages: u64,
    }
    let client = http::client(1)?;
    let mut report = url.join("/v1/reports/volume")?;
    report
        .query_pairs_mut()
        .append_pair("since", &since_ms.to_string());
    let deadline = Instant::now() + wait;
    loop {
        let answer = client
            .get(report.clone())
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await?;
        let status = answer.status();
        if !status.is_success() {
            anyhow::bail!(
                "GET /v1/reports/volume answered {status}: {}",
                answer.text().await.unwrap_or_default()
            );
        }
        let stored: u64 = answer
            .json::<Volume>()
            .await?
            .rows
            .iter()
            .map(|r| r.inbound_messages)
            .sum();
        if stored >= expected || Instant::now() >= deadline {
            return Ok(stored);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Everything a sender needs; cheap to clone into tasks.
#[derive(Clone)]
pub struct Load {
    client: Client,
    target: Arc<Target>,
    events: Arc<Vec<Prepared>>,
    duplicates: bool,
    /// When each event was sent and accepted, for scenarios that time what follows the ack.
    stamps: Option<Arc<Stamps>>,
}

/// When each event of a run was sent and when the hub accepted it, in nanoseconds after
/// `base` plus one (0: not yet, or not accepted), written by the senders and read by whoever
/// sees the event's consequences.
pub struct Stamps {
    pub base: std::time::Instant,
    sent: Vec<AtomicU64>,
    accepted: Vec<AtomicU64>,
}

impl Stamps {
    pub fn new(events: usize, base: std::time::Instant) -> Self {
        let zeros = || (0..events).map(|_| AtomicU64::new(0)).collect();
        Self {
            base,
            sent: zeros(),
            accepted: zeros(),
        }
    }

    fn stamp(&self, slot: &AtomicU64) {
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        slot.store(ns + 1, Ordering::Release);
    }

    fn read(slots: &[AtomicU64], i: usize) -> Option<Duration> {
        match slots.get(i)?.load(Ordering::Acquire) {
            0 => None,
            ns => Some(Duration::from_nanos(ns - 1)),
        }
    }

    /// When event `i` was sent, after `base`.
    pub fn sent(&self, i: usize) -> Option<Duration> {
        Self::read(&self.sent, i)
    }

    /// When the hub's `accepted` answer to event `i` arrived, after `base`; `None` if it has
    /// not (yet), or the answer was anything else.
    pub fn accepted(&self, i: usize) -> Option<Duration> {
        Self::read(&self.accepted, i)
    }
}

impl Job for Load {
    fn run(&self, i: usize, tally: &mut Tally) -> impl Future<Output = ()> + Send {
        self.event(i, tally)
    }
}

impl Load {
    /// Sends each of `events` once to `target` (the `fill` scenario's customers).
    pub fn once(client: Client, target: Target, events: Vec<Prepared>) -> Self {
        Self {
            client,
            target: Arc::new(target),
            events: Arc::new(events),
            duplicates: false,
            stamps: None,
        }
    }

    /// Sends each of `events` once to `target`, stamping when each was sent and accepted.
    pub fn stamped(
        client: Client,
        target: Target,
        events: Vec<Prepared>,
        stamps: Arc<Stamps>,
    ) -> Self {
        Self {
            stamps: Some(stamps),
            ..Self::once(client, target, events)
        }
    }

    /// Event `i` starts at `start + i / rate`, on a free slot if there is one; if not (or the
    /// generator is behind), it starts as soon as it can and counts as late.
    pub async fn open(
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
            if let Some(stamps) = &self.stamps {
                stamps.stamp(&stamps.sent[i]);
            }
            let outcome = self.send(&self.events[i]).await;
            if let (Some(stamps), Outcome::Accepted) = (&self.stamps, &outcome) {
                stamps.stamp(&stamps.accepted[i]);
            }
            tally.record(outcome, started.elapsed());
        }
    }

    async fn send(&self, event: &Prepared) -> Outcome {
        let target = &self.target;
        let request = match &target.api_bearer {
            Some(bearer) => self
                .client
                .patch(event.url.clone().unwrap_or_else(|| target.url.clone()))
                .header(AUTHORIZATION, bearer.clone()),
            None => self
                .client
                .post(target.url.clone())
                .header(target.signature_header.clone(), event.signature.clone()),
        };
        let sent = request
            .header(CONTENT_TYPE, target.content_type.clone())
            .body(event.body.clone())
            .send()
            .await;
        let (status, body) = match http::answer(sent).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        if !status.is_success() {
            return http::refused(status, &body);
        }
        if target.api_bearer.is_some() {
            return Outcome::Accepted;
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
