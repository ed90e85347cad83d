//! `ws-latency`: how long after the hub accepts a webhook its message reaches a console.
//!
//! `--sockets` super_admin consoles (one by default) are opened first. Then signed WhatsApp
//! webhooks go out open-loop at `--rate` for `--seconds` (`ingest`'s open model: each event
//! starts on its slot whatever the answers, late ones are counted). Each text carries a marker
//! of the run and the event number (`[wsb:{run}:{i}]`), so the `message.created` frame it
//! becomes is matched to it exactly. For every event the hub accepted and every socket:
//!
//! - **accepted → frame**: the frame's arrival minus the arrival of the webhook's
//!   `{"status":"accepted"}` answer (the figure the target is about: what the hub adds after
//!   it has taken the event);
//! - **sent → frame**: the frame's arrival minus the moment the webhook was sent.
//!
//! An accepted event whose frame never came (within `--drain-seconds` after the last ack) is
//! missing; a second frame for the same event on the same socket is a duplicate; both must be
//! 0. Event ids must increase on each socket (a repeat or a step back is counted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::ensure;
use clap::Args;
use serde::Serialize;
use tokio::sync::watch;

use super::{
    ConsoleArgs, Dialer, End, Ends, Envelope, WebhookArgs, bytes_of, drain, open_sockets,
    read_until,
};
use crate::http;
use crate::ingest::{Load, Stamps};
use crate::payload::{MarkerFinder, WhatsappEvents, run_id};
use crate::proc_cpu::{HubProbe, Process, cpu_time};
use crate::report::{
    HubCpu, Latency, errors_cell, hub_cpu_rows, latency_cell, latency_histogram, write_rows,
};

#[derive(Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    console: ConsoleArgs,
    #[command(flatten)]
    webhooks: WebhookArgs,
    /// Consoles that each must receive every event.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    sockets: u64,
    /// The messages come from this many contacts in turn (of the 1000 `ingest` uses).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    senders: u64,
    /// The hub's pid, to report its CPU time per event (Linux /proc).
    #[arg(long)]
    hub_pid: Option<u32>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// What one socket saw.
struct SocketLog {
    /// First arrival of each event's frame, ns after the stamps' base plus one (0: none).
    arrivals: Vec<u64>,
    duplicates: u64,
    frames: u64,
    by_type: BTreeMap<String, u64>,
    /// `message.created` frames without this run's marker.
    foreign_messages: u64,
    /// An event id at or below the previous one.
    ids_backwards: u64,
    /// An event id more than one above the previous one (informational: ids need not be
    /// consecutive in what one socket sees).
    id_gaps: u64,
    end: End,
}

#[derive(Serialize)]
struct LatencyReport {
    scenario: &'static str,
    uri: String,
    webhook_url: String,
    run_id: String,
    sockets: u64,
    sockets_open: u64,
    open_failures: BTreeMap<String, u64>,
    rate: f64,
    seconds: u64,
    concurrency: u64,
    events_planned: u64,
    events: u64,
    accepted: u64,
    /// Acks that said `duplicate` (the hub had the event already: nothing new to push).
    duplicate_acks: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    late: u64,
    sending_s: f64,
    acks_per_s: f64,
    /// Webhook sent → ack.
    ack_ms: Latency,
    frames_expected: u64,
    frames_matched: u64,
    missing: u64,
    duplicate_frames: u64,
    /// Frames that arrived before their webhook's ack (recorded as 0 accepted → frame).
    frames_before_ack: u64,
    /// Frames for events whose webhook was not acknowledged as accepted.
    unacked_frames: u64,
    accepted_to_frame_ms: Latency,
    sent_to_frame_ms: Latency,
    /// From the last ack to the last matched frame.
    last_frame_after_last_ack_s: f64,
    drained: bool,
    frames: u64,
    by_type: BTreeMap<String, u64>,
    foreign_messages: u64,
    ids_backwards: u64,
    id_gaps: u64,
    ends: Ends,
    hub_cpu: Option<HubCpu>,
    bench_cpu_s: f64,
}

/// Runs the scenario and prints the report; `Ok(false)` unless every accepted event reached
/// every socket exactly once.
pub async fn run(args: LatencyArgs) -> anyhow::Result<bool> {
    let n = args.webhooks.events()?;
    let run_id = run_id();
    let w = &args.webhooks;
    let events = WhatsappEvents {
        app_secret: w.app_secret.as_bytes(),
        phone_number_id: &w.phone_number_id,
        run_id: &run_id,
    }
    .build_marked(n, args.senders)?;
    let target = WhatsappEvents::target(&args.console.url, &w.app)?;
    let webhook_url = target.url.to_string();
    let stamps = Arc::new(Stamps::new(n, std::time::Instant::now()));
    let finder = Arc::new(MarkerFinder::new(&run_id));
    let matched = Arc::new(AtomicU64::new(0));
    let dialer = Arc::new(Dialer::new(&args.console)?);
    let (stop_tx, stop) = watch::channel(false);

    let reader = {
        let (stop, stamps, finder, matched) = (
            stop.clone(),
            stamps.clone(),
            finder.clone(),
            matched.clone(),
        );
        move |_: usize, ws: super::Ws, hello: super::Hello| {
            let (stop, stamps, finder, matched) = (
                stop.clone(),
                stamps.clone(),
                finder.clone(),
                matched.clone(),
            );
            async move {
                let mut log = SocketLog {
                    arrivals: vec![0; n],
                    duplicates: 0,
                    frames: 0,
                    by_type: BTreeMap::new(),
                    foreign_messages: 0,
                    ids_backwards: 0,
                    id_gaps: 0,
                    end: End::Stopped,
                };
                let mut last_id = hello.last_event_id;
                let end = read_until(ws, stop, |text| {
                    let at = stamps.base.elapsed();
                    log.frames += 1;
                    let Ok(envelope) = serde_json::from_slice::<Envelope>(bytes_of(&text)) else {
                        *log.by_type.entry("(not JSON)".to_owned()).or_default() += 1;
                        return;
                    };
                    if let Some(id) = envelope.id {
                        match last_id {
                            Some(last) if id <= last => log.ids_backwards += 1,
                            Some(last) if id > last + 1 => log.id_gaps += 1,
                            _ => {}
                        }
                        last_id = Some(last_id.map_or(id, |last| last.max(id)));
                    }
                    if envelope.kind == "message.created" {
                        match finder
                            .find(bytes_of(&text))
                            .and_then(|i| usize::try_from(i).ok())
                        {
                            Some(i) if i < n => {
                                if log.arrivals[i] == 0 {
                                    log.arrivals[i] =
                                        u64::try_from(at.as_nanos()).unwrap_or(u64::MAX - 1) + 1;
                                    matched.fetch_add(1, Ordering::Release);
                                } else {
                                    log.duplicates += 1;
                                }
                            }
                            _ => log.foreign_messages += 1,
                        }
                    }
                    *log.by_type.entry(envelope.kind.into_owned()).or_default() += 1;
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
    if opened.ok < args.sockets {
        let _ = stop_tx.send(true);
        anyhow::bail!(
            "{} of {} sockets failed to open ({}); first: {}",
            opened.failed_total(),
            args.sockets,
            errors_cell(&opened.failed),
            opened.first_error.as_deref().unwrap_or("")
        );
    }

    let concurrency = usize::try_from(w.concurrency)?;
    let load = Load::stamped(http::client(concurrency)?, target, events, stamps.clone());
    let hub = match args.hub_pid {
        Some(pid) => Some(HubProbe::start(pid).await?),
        None => None,
    };
    let bench_before = cpu_time(Process::Myself)?;
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(w.seconds);
    let (tally, late) = load.open(concurrency, w.rate, start, deadline).await;
    let sending = start.elapsed();
    let expected = tally.accepted * opened.ok;
    let drain_timeout = Duration::from_secs(w.drain_seconds);
    drain(&matched, expected, drain_timeout).await;
    let drained = matched.load(Ordering::Acquire) >= expected;
    let run = start.elapsed();
    let bench_cpu = cpu_time(Process::Myself)?.saturating_sub(bench_before);
    let hub_cpu = match hub {
        Some(hub) => Some(hub.finish(run, Duration::ZERO, tally.accepted).await?),
        None => None,
    };
    let _ = stop_tx.send(true);
    let mut logs = Vec::new();
    let mut ends = Ends::default();
    for task in opened.tasks {
        if let Ok(Some(log)) = task.await {
            ends.record(&log.end);
            logs.push(log);
        }
    }

    let mut accepted_to_frame = latency_histogram();
    let mut sent_to_frame = latency_histogram();
    let (mut missing, mut before_ack, mut unacked) = (0u64, 0u64, 0u64);
    let mut last_frame = Duration::ZERO;
    let mut last_ack = Duration::ZERO;
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    for i in 0..n {
        let accepted = stamps.accepted(i);
        if let Some(a) = accepted {
            last_ack = last_ack.max(a);
        }
        for log in &logs {
            let arrival = match log.arrivals[i] {
                0 => None,
                ns => Some(Duration::from_nanos(ns - 1)),
            };
            match (accepted, arrival) {
                (Some(_), None) => missing += 1,
                (None, Some(_)) => unacked += 1,
                (None, None) => {}
                (Some(acked), Some(frame)) => {
                    last_frame = last_frame.max(frame);
                    if frame < acked {
                        before_ack += 1;
                    }
                    accepted_to_frame.saturating_record(us(frame.saturating_sub(acked)));
                    if let Some(sent) = stamps.sent(i) {
                        sent_to_frame.saturating_record(us(frame.saturating_sub(sent)));
                    }
                }
            }
        }
    }
    let mut by_type = BTreeMap::new();
    for log in &logs {
        for (k, v) in &log.by_type {
            *by_type.entry(k.clone()).or_default() += v;
        }
    }
    let sum = |f: fn(&SocketLog) -> u64| logs.iter().map(f).sum::<u64>();
    let report = LatencyReport {
        scenario: "ws-latency",
        uri: dialer.uri().to_owned(),
        webhook_url,
        run_id,
        sockets: args.sockets,
        sockets_open: opened.ok,
        open_failures: opened.failed.clone(),
        rate: w.rate,
        seconds: w.seconds,
        concurrency: w.concurrency,
        events_planned: n as u64,
        events: tally.events,
        accepted: tally.accepted,
        duplicate_acks: tally.duplicates,
        errors: tally.errors.clone(),
        first_error: tally.first_error.clone(),
        late,
        sending_s: sending.as_secs_f64(),
        acks_per_s: tally.acked as f64 / sending.as_secs_f64(),
        ack_ms: Latency::from_histogram(&tally.latency),
        frames_expected: expected,
        frames_matched: accepted_to_frame.len(),
        missing,
        duplicate_frames: sum(|l| l.duplicates),
        frames_before_ack: before_ack,
        unacked_frames: unacked,
        accepted_to_frame_ms: Latency::from_histogram(&accepted_to_frame),
        sent_to_frame_ms: Latency::from_histogram(&sent_to_frame),
        last_frame_after_last_ack_s: last_frame.saturating_sub(last_ack).as_secs_f64(),
        drained,
        frames: sum(|l| l.frames),
        by_type,
        foreign_messages: sum(|l| l.foreign_messages),
        ids_backwards: sum(|l| l.ids_backwards),
        id_gaps: sum(|l| l.id_gaps),
        ends,
        hub_cpu,
        bench_cpu_s: bench_cpu.as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    let ok = report.accepted > 0
        && report.missing == 0
        && report.duplicate_frames == 0
        && report.ids_backwards == 0
        && report.ends.unexpected() == 0;
    if !ok {
        eprintln!("error: frames missing or repeated, ids out of order, or sockets closed early");
    }
    ensure!(report.accepted > 0, "the hub accepted no webhook");
    Ok(ok)
}

impl LatencyReport {
    fn to_table(&self) -> String {
        let types: Vec<String> = self
            .by_type
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let mut rows: Vec<(&str, String)> = vec![
            (
                "target",
                format!("{} ← {} (WhatsApp)", self.uri, self.webhook_url),
            ),
            (
                "run",
                format!(
                    "{}, {} sockets open of {}, open model {}/s for {} s, at most {} in flight",
                    self.run_id,
                    self.sockets_open,
                    self.sockets,
                    self.rate,
                    self.seconds,
                    self.concurrency
                ),
            ),
            (
                "webhooks",
                format!(
                    "{} of {} sent, {} accepted, {} duplicate, errors {}, {} late; {:.1} acks/s",
                    self.events,
                    self.events_planned,
                    self.accepted,
                    self.duplicate_acks,
                    errors_cell(&self.errors),
                    self.late,
                    self.acks_per_s
                ),
            ),
        ];
        if let Some(first) = &self.first_error {
            rows.push(("first error", first.clone()));
        }
        rows.push(("ack ms", latency_cell(&self.ack_ms)));
        rows.push((
            "frames",
            format!(
                "{} expected, {} matched, MISSING {}, DUPLICATE {}, {} before their ack, \
                 {} for unaccepted events{}",
                self.frames_expected,
                self.frames_matched,
                self.missing,
                self.duplicate_frames,
                self.frames_before_ack,
                self.unacked_frames,
                if self.drained {
                    String::new()
                } else {
                    " (NOT DRAINED within --drain-seconds)".to_owned()
                }
            ),
        ));
        rows.push((
            "accepted→frame",
            format!("{} ms", latency_cell(&self.accepted_to_frame_ms)),
        ));
        rows.push((
            "sent→frame",
            format!("{} ms", latency_cell(&self.sent_to_frame_ms)),
        ));
        rows.push((
            "tail",
            format!(
                "last frame {:.3} s after the last ack",
                self.last_frame_after_last_ack_s
            ),
        ));
        rows.push((
            "all frames",
            format!(
                "{} ({}); {} message.created of other runs; ids backwards {}, id gaps {}",
                self.frames,
                types.join(", "),
                self.foreign_messages,
                self.ids_backwards,
                self.id_gaps
            ),
        ));
        rows.push(("ends", self.ends.cell()));
        hub_cpu_rows(self.hub_cpu.as_ref(), "event", &mut rows);
        rows.push(("bench cpu", format!("{:.2} s", self.bench_cpu_s)));
        write_rows(&rows)
    }
}
