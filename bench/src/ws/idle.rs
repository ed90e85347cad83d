//! `ws-idle`: what an idle console costs the hub in memory.
//!
//! Reads the hub's memory with no socket open, then opens sockets up to each of `--sockets`
//! (e.g. 1000, 5000, 10000, 19500; every socket waits for its `hello`), lets the hub settle,
//! and reads it again. Each point gives the memory per connection against the start (fixed
//! costs included) and the slope from the previous point (the marginal cost of one more
//! connection, which is the figure that scales). Sockets stay open and are read until the end
//! (tungstenite answers the hub's pings). After the last point the sockets can be held open
//! for a while (`--hold-seconds`, e.g. past a 25 s ping round) and read once more; then all are
//! closed and the hub read a last time (does it give the memory back?).
//!
//! The generator's own memory and the kernel's TCP buffers (both ends of every loopback
//! connection, `/proc/net/sockstat`) are reported beside the hub's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::ensure;
use clap::Args;
use serde::Serialize;
use tokio::sync::watch;

use super::{ConsoleArgs, Dialer, Ends, Hello, Ws, open_sockets, read_until};
use crate::proc_cpu::{Process, cpu_time};
use crate::proc_mem::{Memory, MemoryDelta, PerConnection, TcpKernel};
use crate::report::{Latency, errors_cell, write_rows};

#[derive(Args)]
pub struct IdleArgs {
    #[command(flatten)]
    console: ConsoleArgs,
    /// Sockets open at each measuring point, increasing (comma-separated). This process and
    /// the hub each need one file descriptor per socket: stay under `ulimit -n`.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000,19500")]
    sockets: Vec<u64>,
    /// The hub's pid, whose memory is read (Linux /proc).
    #[arg(long)]
    hub_pid: u32,
    /// Seconds to let the hub settle after each point's sockets are open, before reading.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    settle_seconds: u64,
    /// After the last point, keep every socket open (and read) this long and read again.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3600))]
    hold_seconds: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Memory at one moment: the hub's, the generator's, the kernel's TCP.
#[derive(Serialize, Clone, Copy)]
struct Reading {
    hub: Memory,
    bench: Memory,
    tcp: TcpKernel,
}

impl Reading {
    fn take(hub_pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            hub: Memory::read(Process::Pid(hub_pid))?,
            bench: Memory::read(Process::Myself)?,
            tcp: TcpKernel::read()?,
        })
    }
}

#[derive(Serialize)]
struct Point {
    /// `sockets` or `held` (the last point again, after --hold-seconds).
    label: String,
    target: u64,
    /// Sockets open (hello received) in all.
    open: u64,
    /// Sockets of this point that failed to open.
    failed: u64,
    failures: std::collections::BTreeMap<String, u64>,
    first_error: Option<String>,
    /// Opening this point's sockets: wall time, and connect → hello per socket.
    open_s: f64,
    open_ms: Option<Latency>,
    reading: Reading,
    /// Against the reading with no socket open, per open socket (fixed costs included).
    hub_per_conn: PerConnection,
    bench_per_conn: PerConnection,
    /// Against the previous point, per socket opened since: the marginal cost.
    hub_slope: Option<PerConnection>,
    bench_slope: Option<PerConnection>,
    /// Kernel TCP buffer memory per socket, against the start (both ends together).
    tcp_bytes_per_conn: f64,
    /// Hub CPU while it settled with these sockets idle, in cores.
    hub_idle_cores: f64,
}

#[derive(Serialize)]
struct IdleReport {
    scenario: &'static str,
    uri: String,
    hub_pid: u32,
    settle_seconds: u64,
    start: Reading,
    points: Vec<Point>,
    /// After every socket was closed and the hub had settled.
    closed: Option<Reading>,
    hub_closed_vs_start: Option<MemoryDelta>,
    /// Frames after the hello, on all sockets (an idle super_admin console gets only what
    /// happens on the account).
    frames_after_hello: u64,
    ends: Ends,
    /// Largest `hello.last_event_id` seen.
    last_event_id: Option<u64>,
}

/// Runs the scenario and prints the report; `Ok(false)` when a socket failed to open or ended
/// before it was stopped.
pub async fn run(args: IdleArgs) -> anyhow::Result<bool> {
    ensure!(!args.sockets.is_empty(), "--sockets: at least one point");
    ensure!(
        args.sockets.windows(2).all(|w| w[0] < w[1]) && args.sockets[0] > 0,
        "--sockets must increase and be positive"
    );
    let dialer = Arc::new(Dialer::new(&args.console)?);
    let in_flight = usize::try_from(args.console.in_flight)?;
    let settle = Duration::from_secs(args.settle_seconds);
    let (stop_tx, stop) = watch::channel(false);
    let frames = Arc::new(AtomicU64::new(0));

    let start = Reading::take(args.hub_pid)?;
    let mut points: Vec<Point> = Vec::new();
    let mut tasks = Vec::new();
    let mut open = 0u64;
    let mut opened_up_to = 0usize;
    let mut last_event_id = None;
    let mut failures = false;
    for &target in &args.sockets {
        let target_usize = usize::try_from(target)?;
        let reader = {
            let stop = stop.clone();
            let frames = frames.clone();
            move |_: usize, ws: Ws, _: Hello| {
                let stop = stop.clone();
                let frames = frames.clone();
                read_until(ws, stop, move |_| {
                    frames.fetch_add(1, Ordering::Relaxed);
                })
            }
        };
        let opened = open_sockets(&dialer, opened_up_to..target_usize, in_flight, reader).await;
        opened_up_to = target_usize;
        open += opened.ok;
        if let Some((_, hi)) = opened.hello_ids {
            last_event_id = Some(last_event_id.map_or(hi, |id: u64| id.max(hi)));
        }
        let cpu_before = cpu_time(Process::Pid(args.hub_pid))?;
        tokio::time::sleep(settle).await;
        let cpu = cpu_time(Process::Pid(args.hub_pid))?.saturating_sub(cpu_before);
        let reading = Reading::take(args.hub_pid)?;
        let previous = points.last();
        let slope =
            |now: &Memory, then: &Memory, opened_since: u64| now.minus(then).per(opened_since);
        let failed = opened.failed_total();
        failures |= failed > 0;
        let point = Point {
            label: "sockets".to_owned(),
            target,
            open,
            failed,
            failures: opened.failed.clone(),
            first_error: opened.first_error.clone(),
            open_s: opened.elapsed.as_secs_f64(),
            open_ms: (opened.ok > 0).then(|| Latency::from_histogram(&opened.open_us)),
            hub_per_conn: reading.hub.minus(&start.hub).per(open),
            bench_per_conn: reading.bench.minus(&start.bench).per(open),
            hub_slope: previous.map(|p| slope(&reading.hub, &p.reading.hub, open - p.open)),
            bench_slope: previous.map(|p| slope(&reading.bench, &p.reading.bench, open - p.open)),
            tcp_bytes_per_conn: (reading.tcp.mem_bytes as f64 - start.tcp.mem_bytes as f64)
                / open.max(1) as f64,
            hub_idle_cores: cpu.as_secs_f64() / settle.as_secs_f64().max(1e-9),
            reading,
        };
        points.push(point);
        tasks.extend(opened.tasks);
        if failed > 0 {
            eprintln!(
                "{failed} sockets failed to open at {target}: stopping before the next point"
            );
            break;
        }
    }
    if args.hold_seconds > 0
        && let Some((last_target, last_open)) = points.last().map(|p| (p.target, p.open))
    {
        let cpu_before = cpu_time(Process::Pid(args.hub_pid))?;
        let hold = Duration::from_secs(args.hold_seconds);
        tokio::time::sleep(hold).await;
        let cpu = cpu_time(Process::Pid(args.hub_pid))?.saturating_sub(cpu_before);
        let reading = Reading::take(args.hub_pid)?;
        points.push(Point {
            label: format!("held {} s", args.hold_seconds),
            target: last_target,
            open: last_open,
            failed: 0,
            failures: Default::default(),
            first_error: None,
            open_s: 0.0,
            open_ms: None,
            hub_per_conn: reading.hub.minus(&start.hub).per(last_open),
            bench_per_conn: reading.bench.minus(&start.bench).per(last_open),
            hub_slope: None,
            bench_slope: None,
            tcp_bytes_per_conn: (reading.tcp.mem_bytes as f64 - start.tcp.mem_bytes as f64)
                / last_open.max(1) as f64,
            hub_idle_cores: cpu.as_secs_f64() / hold.as_secs_f64(),
            reading,
        });
    }

    let _ = stop_tx.send(true);
    let mut ends = Ends::default();
    for task in tasks {
        if let Ok(Some(end)) = task.await {
            ends.record(&end);
        }
    }
    tokio::time::sleep(settle).await;
    let closed = Reading::take(args.hub_pid).ok();
    let report = IdleReport {
        scenario: "ws-idle",
        uri: dialer.uri().to_owned(),
        hub_pid: args.hub_pid,
        settle_seconds: args.settle_seconds,
        start,
        hub_closed_vs_start: closed.map(|c| c.hub.minus(&start.hub)),
        closed,
        points,
        frames_after_hello: frames.load(Ordering::Relaxed),
        ends,
        last_event_id,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    let ok = !failures && report.ends.unexpected() == 0 && open > 0;
    if !ok {
        eprintln!("error: sockets failed to open or ended before they were stopped");
    }
    Ok(ok)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn per_conn(p: &PerConnection) -> String {
    format!(
        "private dirty {:.0} B, VmRSS {:.0} B",
        p.private_dirty, p.vm_rss
    )
}

impl IdleReport {
    fn to_table(&self) -> String {
        let memory = |r: &Reading| {
            format!(
                "hub VmRSS {} (private dirty {}), bench VmRSS {} (private dirty {}), \
                 kernel TCP {} in {} sockets",
                mib(r.hub.vm_rss),
                mib(r.hub.private_dirty),
                mib(r.bench.vm_rss),
                mib(r.bench.private_dirty),
                mib(r.tcp.mem_bytes),
                r.tcp.inuse
            )
        };
        let mut rows: Vec<(&str, String)> = vec![
            ("target", format!("{} (hub pid {})", self.uri, self.hub_pid)),
            ("start", memory(&self.start)),
        ];
        for p in &self.points {
            rows.push((
                "point",
                format!(
                    "{} {}: {} open{}",
                    p.label,
                    p.target,
                    p.open,
                    if p.failed > 0 {
                        format!(
                            ", {} FAILED ({}; first: {})",
                            p.failed,
                            errors_cell(&p.failures),
                            p.first_error.as_deref().unwrap_or("")
                        )
                    } else {
                        String::new()
                    }
                ),
            ));
            if let Some(open_ms) = &p.open_ms {
                rows.push((
                    "  opened",
                    format!(
                        "in {:.2} s; connect → hello ms p50 {:.2} p99 {:.2} max {:.2}",
                        p.open_s, open_ms.p50, open_ms.p99, open_ms.max
                    ),
                ));
            }
            rows.push(("  memory", memory(&p.reading)));
            rows.push((
                "  hub/conn",
                format!(
                    "{} since start; slope from the previous point: {}",
                    per_conn(&p.hub_per_conn),
                    p.hub_slope.as_ref().map_or("—".to_owned(), per_conn)
                ),
            ));
            rows.push((
                "  bench/conn",
                format!(
                    "{} since start; slope: {}",
                    per_conn(&p.bench_per_conn),
                    p.bench_slope.as_ref().map_or("—".to_owned(), per_conn)
                ),
            ));
            rows.push((
                "  kernel",
                format!(
                    "{:.0} B of TCP buffers per connection (both ends)",
                    p.tcp_bytes_per_conn
                ),
            ));
            rows.push((
                "  hub cpu",
                format!("{:.3} cores while idle", p.hub_idle_cores),
            ));
        }
        if let Some(closed) = &self.closed {
            rows.push(("closed", memory(closed)));
        }
        if let Some(d) = &self.hub_closed_vs_start {
            rows.push((
                "  vs start",
                format!(
                    "hub VmRSS {:+.1} MiB, private dirty {:+.1} MiB",
                    d.vm_rss as f64 / 1048576.0,
                    d.private_dirty as f64 / 1048576.0
                ),
            ));
        }
        rows.push(("frames", format!("{} after hello", self.frames_after_hello)));
        rows.push(("ends", self.ends.cell()));
        write_rows(&rows)
    }
}
