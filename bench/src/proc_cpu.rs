//! CPU time of a process (user + system, all threads) from `/proc/PID/stat`.

use std::time::Duration;

use anyhow::{Context, bail};

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
