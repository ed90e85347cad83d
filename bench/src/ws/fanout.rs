//! `ws-fanout`: how many console frames a second the hub delivers when many consoles watch the
//! same account.
//!
//! `--sockets` super_admin consoles (10,000 by default) are opened first (`--in-flight` at a
//! time). Then signed WhatsApp webhooks from a few contacts (`--contacts`, each with its
//! conversation opened by a warm-up message beforehand, so every event is one
//! `message.created`) go out open-loop at `--rate` for `--seconds`; every socket should receive
//! every one. The generator counts, per socket, each event's frame once (a bitset), so it
//! reports the frames delivered per second over all sockets, and exactly which are missing or
//! repeated. Frames are recognised by a byte search (type and the run's marker), not parsed,
//! to keep the generator's cost per frame small; one socket in `--sample-every` also times
//! each frame against its webhook's ack.
//!
//! Both processes' CPU is reported, so the limit can be told: the hub's cores and the
//! generator's cores add up to at most the machine's.
//!
//! `--source api` makes the events without webhooks: each is a `PATCH /v1/conversations/{id}`
//! of one of the warmed-up conversations that sets its labels to the event's marker, so every
//! socket receives one `conversation.updated`. No provider payload is normalized on the way,
//! so the run measures the push path (and the API's write) rather than the intake pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use memchr::memmem;
use serde::Serialize;
use tokio::sync::watch;

use super::{
    ConsoleArgs, Dialer, End, Ends, WebhookArgs, bytes_of, drain, open_sockets, read_until,
};
use crate::http;
use crate::ingest::{Load, Stamps};
use crate::payload::{MarkerFinder, WhatsappEvents, marker, run_id};
use crate::proc_cpu::{HubProbe, Process, cpu_time};
use crate::proc_mem::Memory;
use crate::report::{
    HubCpu, Latency, errors_cell, hub_cpu_rows, latency_cell, latency_histogram, write_rows,
};

/// What marks a frame as a message (with the marker, one of this run's events): the type's
/// value, whatever the spacing around the `type` key.
const MESSAGE_CREATED: &[u8] = br#""message.created""#;
/// The same for `--source api` events.
const CONVERSATION_UPDATED: &[u8] = br#""conversation.updated""#;

/// What makes the events.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// Signed WhatsApp webhooks: one `message.created` each, through the intake pipeline.
    Webhooks,
    /// REST `PATCH`es of the conversations' labels: one `conversation.updated` each.
    Api,
}
/// Seconds after the warm-up messages for their conversations to be opened.
const WARM_UP_WAIT: Duration = Duration::from_secs(3);

#[derive(Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    console: ConsoleArgs,
    #[command(flatten)]
    webhooks: WebhookArgs,
    /// Consoles that each must receive every event.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    sockets: u64,
    /// The events come from this many contacts in turn (of the 1000 `ingest` uses); each gets
    /// one warm-up message before the sockets open.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    contacts: u64,
    /// What makes the events: webhooks (the whole pipeline) or REST API writes (the push path
    /// without normalization).
    #[arg(long, value_enum, default_value_t = Source::Webhooks)]
    source: Source,
    /// One socket in this many times every frame against its webhook's ack.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    sample_every: u64,
    /// The hub's pid, to report its CPU per frame (Linux /proc).
    #[arg(long)]
    hub_pid: Option<u32>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// What one socket saw.
struct SocketLog {
    /// Bit i: event i's frame arrived.
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
    /// Last matched frame, ns after the stamps' base.
    last_ns: u64,
    /// Sampled sockets: webhook accepted → frame, µs; frames before their ack.
    lag: Option<(Histogram<u64>, u64)>,
    end: End,
}

#[derive(Serialize)]
struct FanoutReport {
    scenario: &'static str,
    source: &'static str,
    uri: String,
    run_id: String,
    sockets: u64,
    sockets_open: u64,
    open_failures: std::collections::BTreeMap<String, u64>,
    open_first_error: Option<String>,
    open_s: f64,
    open_ms: Latency,
    contacts: u64,
    rate: f64,
    seconds: u64,
    events_planned: u64,
    events: u64,
    accepted: u64,
    duplicate_acks: u64,
    errors: std::collections::BTreeMap<String, u64>,
    first_error: Option<String>,
    late: u64,
    acks_per_s: f64,
    ack_ms: Latency,
    frames_expected: u64,
    frames_delivered: u64,
    missing: u64,
    sockets_missing_frames: u64,
    duplicate_frames: u64,
    /// Every text frame received during the run, of any type.
    frames_all: u64,
    /// Delivered frames / (last frame − first webhook sent).
    frames_per_s: f64,
    /// Mean of the whole seconds of sending after the first.
    steady_frames_per_s: Option<f64>,
    peak_frames_per_s: u64,
    /// Frames delivered in each second from the first webhook sent.
    per_second: Vec<u64>,
    sending_s: f64,
    last_frame_s: f64,
    last_frame_after_last_ack_s: f64,
    drained: bool,
    sampled_sockets: u64,
    accepted_to_frame_ms: Latency,
    sampled_frames_before_ack: u64,
    ends: Ends,
    hub_cpu: Option<HubCpu>,
    hub_cores: Option<f64>,
    bench_cpu_s: f64,
    bench_cores: f64,
    bench_us_per_frame: f64,
    bench_memory: Memory,
}

/// Runs the scenario and prints the report; `Ok(false)` unless every accepted event reached
/// every socket exactly once.
pub async fn run(args: FanoutArgs) -> anyhow::Result<bool> {
    let n = args.webhooks.events()?;
    let w = &args.webhooks;
    let run_id = run_id();
    let concurrency = usize::try_from(w.concurrency)?;
    let client = http::client(concurrency)?;
    warm_up(&args, &client).await?;

    let (target, events, kind) = match args.source {
        Source::Webhooks => (
            WhatsappEvents::target(&args.console.url, &w.app)?,
            WhatsappEvents {
                app_secret: w.app_secret.as_bytes(),
                phone_number_id: &w.phone_number_id,
                run_id: &run_id,
            }
            .build_marked(n, args.contacts)?,
            MESSAGE_CREATED,
        ),
        Source::Api => {
            let ids = conversations(&args, &client).await?;
            let events = (0..n)
                .map(|i| {
                    let url = crate::payload::endpoint(
                        &args.console.url,
                        &["v1", "conversations", &ids[i % ids.len()]],
                    )?;
                    let body = serde_json::json!({ "labels": [marker(&run_id, i as u64)] });
                    Ok(crate::payload::Prepared {
                        body: body.to_string().into(),
                        signature: reqwest::header::HeaderValue::from_static(""),
                        url: Some(url),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            (api_target(&args)?, events, CONVERSATION_UPDATED)
        }
    };
    let stamps = Arc::new(Stamps::new(n, std::time::Instant::now()));
    let finder = Arc::new(MarkerFinder::new(&run_id));
    let message = Arc::new(memmem::Finder::new(kind));
    let delivered = Arc::new(AtomicU64::new(0));
    let frames_all = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop) = watch::channel(false);
    let dialer = Arc::new(Dialer::new(&args.console)?);
    let sample_every = usize::try_from(args.sample_every)?;
    let reader = {
        let (stop, stamps, finder, message, delivered, frames_all) = (
            stop.clone(),
            stamps.clone(),
            finder.clone(),
            message.clone(),
            delivered.clone(),
            frames_all.clone(),
        );
        move |i: usize, ws: super::Ws, _: super::Hello| {
            let (stop, stamps, finder, message, delivered, frames_all) = (
                stop.clone(),
                stamps.clone(),
                finder.clone(),
                message.clone(),
                delivered.clone(),
                frames_all.clone(),
            );
            async move {
                let mut log = SocketLog {
                    seen: vec![0; n.div_ceil(64)],
                    unique: 0,
                    duplicates: 0,
                    last_ns: 0,
                    lag: i
                        .is_multiple_of(sample_every)
                        .then(|| (latency_histogram(), 0)),
                    end: End::Stopped,
                };
                let end = read_until(ws, stop, |text| {
                    frames_all.fetch_add(1, Ordering::Relaxed);
                    let bytes = bytes_of(&text);
                    if message.find(bytes).is_none() {
                        return;
                    }
                    let Some(e) = finder.find(bytes).and_then(|e| usize::try_from(e).ok()) else {
                        return;
                    };
                    if e >= n {
                        return;
                    }
                    let (word, bit) = (e / 64, 1u64 << (e % 64));
                    if log.seen[word] & bit != 0 {
                        log.duplicates += 1;
                        return;
                    }
                    log.seen[word] |= bit;
                    log.unique += 1;
                    delivered.fetch_add(1, Ordering::Release);
                    let at = stamps.base.elapsed();
                    log.last_ns = u64::try_from(at.as_nanos()).unwrap_or(u64::MAX);
                    if let Some((lag, before_ack)) = &mut log.lag {
                        match stamps.accepted(e) {
                            Some(acked) if acked <= at => lag.saturating_record(
                                u64::try_from((at - acked).as_micros()).unwrap_or(u64::MAX),
                            ),
                            // Not acked yet (or not accepted): the frame beat the answer.
                            _ => {
                                *before_ack += 1;
                                lag.saturating_record(0);
                            }
                        }
                    }
                })
                .await;
                log.end = end;
                log
            }
        }
    };
    let in_flight = usize::try_from(args.console.in_flight)?;
    let sockets = usize::try_from(args.sockets)?;
    let opened = open_sockets(&dialer, 0..sockets, in_flight, reader).await;
    eprintln!(
        "{} sockets open ({} failed) in {:.1} s; sending",
        opened.ok,
        opened.failed_total(),
        opened.elapsed.as_secs_f64()
    );
    if opened.ok == 0 {
        let _ = stop_tx.send(true);
        anyhow::bail!(
            "no socket opened ({}); first: {}",
            errors_cell(&opened.failed),
            opened.first_error.as_deref().unwrap_or("")
        );
    }
    // Frames that arrived while the sockets opened (a presence change, …) are not the run's.
    let frames_before = frames_all.load(Ordering::Relaxed);

    let load = Load::stamped(client, target, events, stamps.clone());
    let hub = match args.hub_pid {
        Some(pid) => Some(HubProbe::start(pid).await?),
        None => None,
    };
    let bench_before = cpu_time(Process::Myself)?;
    let start = tokio::time::Instant::now();
    let sending_from = stamps.base.elapsed();
    let (sampler_stop, mut sampler_stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = {
        let delivered = delivered.clone();
        tokio::spawn(async move {
            let mut per_second = Vec::new();
            let mut last = 0;
            let second = Duration::from_secs(1);
            let mut tick = tokio::time::interval_at(start + second, second);
            loop {
                tokio::select! {
                    _ = &mut sampler_stopped => return per_second,
                    _ = tick.tick() => {
                        let now = delivered.load(Ordering::Acquire);
                        per_second.push(now - last);
                        last = now;
                    }
                }
            }
        })
    };
    let deadline = start + Duration::from_secs(w.seconds);
    let (tally, late) = load.open(concurrency, w.rate, start, deadline).await;
    let sending = start.elapsed();
    let expected = tally.accepted * opened.ok;
    drain(&delivered, expected, Duration::from_secs(w.drain_seconds)).await;
    let drained = delivered.load(Ordering::Acquire) >= expected;
    let run = start.elapsed();
    let bench_cpu = cpu_time(Process::Myself)?.saturating_sub(bench_before);
    let bench_memory = Memory::read(Process::Myself)?;
    let frames_total = delivered.load(Ordering::Acquire);
    let hub_cpu = match hub {
        Some(hub) => Some(hub.finish(run, Duration::ZERO, frames_total).await?),
        None => None,
    };
    let _ = sampler_stop.send(());
    // Whole seconds only (the one under way when it stopped is left out).
    let per_second = sampler.await.unwrap_or_default();
    let frames_all_run = frames_all.load(Ordering::Relaxed) - frames_before;
    let _ = stop_tx.send(true);

    let accepted: Vec<usize> = (0..n).filter(|&i| stamps.accepted(i).is_some()).collect();
    let mut ends = Ends::default();
    let (mut unique, mut duplicates, mut sockets_missing) = (0u64, 0u64, 0u64);
    let mut missing = 0u64;
    let mut last_ns = 0u64;
    let mut lag = latency_histogram();
    let (mut sampled, mut before_ack) = (0u64, 0u64);
    for task in opened.tasks {
        let Ok(Some(log)) = task.await else { continue };
        ends.record(&log.end);
        unique += log.unique;
        duplicates += log.duplicates;
        last_ns = last_ns.max(log.last_ns);
        let lost = accepted
            .iter()
            .filter(|&&e| log.seen[e / 64] & (1u64 << (e % 64)) == 0)
            .count() as u64;
        if lost > 0 {
            sockets_missing += 1;
            missing += lost;
        }
        if let Some((h, b)) = &log.lag {
            sampled += 1;
            before_ack += b;
            lag.add(h).context("merging latency histograms")?;
        }
    }
    let last_ack = (0..n)
        .filter_map(|i| stamps.accepted(i))
        .max()
        .unwrap_or_default();
    let last_frame = Duration::from_nanos(last_ns);
    let window = last_frame.saturating_sub(sending_from);
    let whole_seconds = per_second.len().min(w.seconds as usize);
    let steady = (whole_seconds >= 2).then(|| {
        let s = &per_second[1..whole_seconds];
        s.iter().sum::<u64>() as f64 / s.len() as f64
    });
    let report = FanoutReport {
        scenario: "ws-fanout",
        source: match args.source {
            Source::Webhooks => "webhooks",
            Source::Api => "api",
        },
        uri: dialer.uri().to_owned(),
        run_id,
        sockets: args.sockets,
        sockets_open: opened.ok,
        open_failures: opened.failed.clone(),
        open_first_error: opened.first_error.clone(),
        open_s: opened.elapsed.as_secs_f64(),
        open_ms: Latency::from_histogram(&opened.open_us),
        contacts: args.contacts,
        rate: w.rate,
        seconds: w.seconds,
        events_planned: n as u64,
        events: tally.events,
        accepted: tally.accepted,
        duplicate_acks: tally.duplicates,
        errors: tally.errors.clone(),
        first_error: tally.first_error.clone(),
        late,
        acks_per_s: tally.acked as f64 / sending.as_secs_f64(),
        ack_ms: Latency::from_histogram(&tally.latency),
        frames_expected: expected,
        frames_delivered: unique,
        missing,
        sockets_missing_frames: sockets_missing,
        duplicate_frames: duplicates,
        frames_all: frames_all_run,
        frames_per_s: unique as f64 / window.as_secs_f64().max(1e-9),
        steady_frames_per_s: steady,
        peak_frames_per_s: per_second.iter().copied().max().unwrap_or_default(),
        per_second,
        sending_s: sending.as_secs_f64(),
        last_frame_s: window.as_secs_f64(),
        last_frame_after_last_ack_s: last_frame.saturating_sub(last_ack).as_secs_f64(),
        drained,
        sampled_sockets: sampled,
        accepted_to_frame_ms: Latency::from_histogram(&lag),
        sampled_frames_before_ack: before_ack,
        ends,
        hub_cores: hub_cpu.as_ref().map(|c| c.during_s / run.as_secs_f64()),
        hub_cpu,
        bench_cpu_s: bench_cpu.as_secs_f64(),
        bench_cores: bench_cpu.as_secs_f64() / run.as_secs_f64(),
        bench_us_per_frame: bench_cpu.as_secs_f64() * 1e6 / unique.max(1) as f64,
        bench_memory,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    let ok = report.accepted > 0
        && report.missing == 0
        && report.duplicate_frames == 0
        && report.ends.unexpected() == 0
        && report.open_failures.is_empty();
    if !ok {
        eprintln!(
            "error: sockets failed to open, frames missing or repeated, or sockets closed early"
        );
    }
    Ok(ok)
}

/// `--source api`: where the events go (the `PATCH` carries the console token).
fn api_target(args: &FanoutArgs) -> anyhow::Result<crate::payload::Target> {
    use reqwest::header::{HeaderName, HeaderValue};
    Ok(crate::payload::Target {
        url: crate::payload::endpoint(&args.console.url, &["v1", "conversations"])?,
        content_type: HeaderValue::from_static("application/json"),
        signature_header: HeaderName::from_static("x-unused"),
        api_bearer: Some(HeaderValue::try_from(format!(
            "Bearer {}",
            args.console.token
        ))?),
    })
}

/// `--source api`: the ids of up to `--contacts` open conversations (the warm-up's), newest
/// first as the list gives them.
async fn conversations(args: &FanoutArgs, client: &reqwest::Client) -> anyhow::Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Page {
        data: Vec<Conversation>,
    }
    #[derive(serde::Deserialize)]
    struct Conversation {
        id: String,
    }
    let wanted = args.contacts.min(100);
    let mut url = crate::payload::endpoint(&args.console.url, &["v1", "conversations"])?;
    url.query_pairs_mut()
        .append_pair("limit", &wanted.to_string());
    // The warm-up's messages are acknowledged before their conversations exist: wait for them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let answer = client
            .get(url.clone())
            .bearer_auth(&args.console.token)
            .send()
            .await
            .context("listing conversations")?;
        let status = answer.status();
        let body = answer.bytes().await.context("listing conversations")?;
        anyhow::ensure!(
            status.is_success(),
            "listing conversations: HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        let page: Page = serde_json::from_slice(&body).context("listing conversations")?;
        if page.data.len() as u64 >= wanted || tokio::time::Instant::now() >= deadline {
            anyhow::ensure!(!page.data.is_empty(), "no conversation to update");
            return Ok(page.data.into_iter().map(|c| c.id).collect());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One message from each contact (run tag of its own), so the run's messages join open
/// conversations: each event is then one `message.created`.
async fn warm_up(args: &FanoutArgs, client: &reqwest::Client) -> anyhow::Result<()> {
    let w = &args.webhooks;
    let warm_id = run_id();
    let events = WhatsappEvents {
        app_secret: w.app_secret.as_bytes(),
        phone_number_id: &w.phone_number_id,
        run_id: &warm_id,
    }
    .build_marked(usize::try_from(args.contacts)?, args.contacts)?;
    let target = WhatsappEvents::target(&args.console.url, &w.app)?;
    let stamps = Arc::new(Stamps::new(events.len(), std::time::Instant::now()));
    let count = events.len();
    let load = Load::stamped(client.clone(), target, events, stamps.clone());
    let start = tokio::time::Instant::now();
    let (tally, _) = load
        .open(4, 1000.0, start, start + Duration::from_secs(60))
        .await;
    anyhow::ensure!(
        tally.acked == count as u64,
        "warm-up: {} of {count} webhooks acknowledged ({}; first: {})",
        tally.acked,
        errors_cell(&tally.errors),
        tally.first_error.as_deref().unwrap_or("")
    );
    tokio::time::sleep(WARM_UP_WAIT).await;
    Ok(())
}

impl FanoutReport {
    fn to_table(&self) -> String {
        let seconds: Vec<String> = self.per_second.iter().map(|n| n.to_string()).collect();
        let mut rows: Vec<(&str, String)> = vec![
            ("target", self.uri.clone()),
            (
                "sockets",
                format!(
                    "{} open of {} in {:.1} s (connect → hello p50 {:.1} ms, p99 {:.1} ms){}",
                    self.sockets_open,
                    self.sockets,
                    self.open_s,
                    self.open_ms.p50,
                    self.open_ms.p99,
                    if self.open_failures.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; FAILED {} (first: {})",
                            errors_cell(&self.open_failures),
                            self.open_first_error.as_deref().unwrap_or("")
                        )
                    }
                ),
            ),
            (
                "run",
                format!(
                    "{}: {} contacts, open model {}/s for {} s",
                    self.run_id, self.contacts, self.rate, self.seconds
                ),
            ),
            (
                match self.source {
                    "api" => "api writes",
                    _ => "webhooks",
                },
                format!(
                    "{} of {} sent, {} accepted, {} duplicate, errors {}, {} late; {:.1} acks/s; \
                     ack p50 {:.2} ms p99 {:.2} ms",
                    self.events,
                    self.events_planned,
                    self.accepted,
                    self.duplicate_acks,
                    errors_cell(&self.errors),
                    self.late,
                    self.acks_per_s,
                    self.ack_ms.p50,
                    self.ack_ms.p99
                ),
            ),
        ];
        if let Some(first) = &self.first_error {
            rows.push(("first error", first.clone()));
        }
        rows.push((
            "frames",
            format!(
                "{} expected, {} delivered, MISSING {} (on {} sockets), DUPLICATE {}; {} text \
                 frames in all{}",
                self.frames_expected,
                self.frames_delivered,
                self.missing,
                self.sockets_missing_frames,
                self.duplicate_frames,
                self.frames_all,
                if self.drained {
                    String::new()
                } else {
                    " (NOT DRAINED within --drain-seconds)".to_owned()
                }
            ),
        ));
        rows.push((
            "frames/s",
            format!(
                "{:.0} (first send → last frame, {:.2} s); steady {}; peak second {}",
                self.frames_per_s,
                self.last_frame_s,
                self.steady_frames_per_s
                    .map_or("n/a".to_owned(), |s| format!("{s:.0}")),
                self.peak_frames_per_s
            ),
        ));
        rows.push(("per second", seconds.join(" ")));
        rows.push((
            "tail",
            format!(
                "sending took {:.2} s; last frame {:.3} s after the last ack",
                self.sending_s, self.last_frame_after_last_ack_s
            ),
        ));
        rows.push((
            "accepted→frame",
            format!(
                "{} ms ({} sampled sockets; {} frames before their ack)",
                latency_cell(&self.accepted_to_frame_ms),
                self.sampled_sockets,
                self.sampled_frames_before_ack
            ),
        ));
        rows.push(("ends", self.ends.cell()));
        hub_cpu_rows(self.hub_cpu.as_ref(), "frame", &mut rows);
        rows.push((
            "cores",
            format!(
                "hub {} , bench {:.2} (machine: {})",
                self.hub_cores
                    .map_or("n/a".to_owned(), |c| format!("{c:.2}")),
                self.bench_cores,
                std::thread::available_parallelism().map_or(0, |n| n.get())
            ),
        ));
        rows.push((
            "bench cpu",
            format!(
                "{:.2} s ({:.2} µs/frame); VmRSS {:.0} MiB",
                self.bench_cpu_s,
                self.bench_us_per_frame,
                self.bench_memory.vm_rss as f64 / 1048576.0
            ),
        ));
        write_rows(&rows)
    }
}
