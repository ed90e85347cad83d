//! CPU time of a process (user + system, all threads) from `/proc/PID/stat`.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use crate::report::HubCpu;

/// `/proc` reports clock ticks in USER_HZ, which the kernel fixes at 100 for user space on
/// every mainstream Linux architecture (whatever CONFIG_HZ is).
const USER_HZ: u64 = 100;

/// Which process to read: the hub by pid, or this generator.
#[derive(Debug, Clone, Copy)]
pub enum Process {
    Pid(u32),
    Myself,
}

/// utime + stime of the whole process so far (10 ms resolution).
pub fn cpu_time(process: Process) -> anyhow::Result<Duration> {
    let path = match process {
        Process::Pid(pid) => format!("/proc/{pid}/stat"),
        Process::Myself => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'; the fixed-format
    // fields start after the last ')'. There, field 3 (state) is index 0, so utime (14) is
    // index 11 and stime (15) index 12.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected format in {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        bail!("unexpected format in {path}");
    };
    let ticks = utime.parse::<u64>()? + stime.parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// The hub's CPU clock, read around the run. An idle hub is not at zero (the embedded queue
/// polls SQLite), so its idle rate is measured first and taken off the per-event figures.
pub struct HubProbe {
    pid: u32,
    idle: Duration,
    before: Duration,
}

impl HubProbe {
    /// Takes one second to measure the idle rate.
    pub async fn start(pid: u32) -> anyhow::Result<Self> {
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
    pub async fn finish(
        self,
        run: Duration,
        settle: Duration,
        count: u64,
    ) -> anyhow::Result<HubCpu> {
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
        let per_event = |seconds: f64| seconds.max(0.0) * 1e6 / count.max(1) as f64;
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
