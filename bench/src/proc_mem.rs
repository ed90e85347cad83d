//! Memory of a process (Linux `/proc`), and the kernel's TCP memory, for the idle-connection
//! figures.

use anyhow::Context;
use serde::Serialize;

use crate::proc_cpu::Process;

/// One reading of a process's memory, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    /// `VmRSS` of `/proc/PID/status`: resident pages, shared ones included.
    pub vm_rss: u64,
    /// `Rss` of `/proc/PID/smaps_rollup` (0 when the kernel has no rollup).
    pub rss: u64,
    /// `Private_Dirty` of the rollup: pages only this process wrote, i.e. its heap and stacks.
    /// The closest figure to "what this process's own data costs".
    pub private_dirty: u64,
    /// `Anonymous` of the rollup: anonymous pages (heap, stacks, anonymous mmaps).
    pub anonymous: u64,
}

impl Memory {
    pub fn read(process: Process) -> anyhow::Result<Self> {
        let dir = match process {
            Process::Pid(pid) => format!("/proc/{pid}"),
            Process::Myself => "/proc/self".to_owned(),
        };
        let status = std::fs::read_to_string(format!("{dir}/status"))
            .with_context(|| format!("reading {dir}/status"))?;
        let mut memory = Self {
            vm_rss: kib_field(&status, "VmRSS:").with_context(|| format!("{dir}/status"))?,
            ..Self::default()
        };
        // Readable for our own processes (and as root); the rollup exists since Linux 4.14.
        if let Ok(rollup) = std::fs::read_to_string(format!("{dir}/smaps_rollup")) {
            memory.rss = kib_field(&rollup, "Rss:").unwrap_or_default();
            memory.private_dirty = kib_field(&rollup, "Private_Dirty:").unwrap_or_default();
            memory.anonymous = kib_field(&rollup, "Anonymous:").unwrap_or_default();
        }
        Ok(memory)
    }

    /// Field by field `self - before`, in bytes (negative when memory was given back).
    pub fn minus(&self, before: &Self) -> MemoryDelta {
        let d = |a: u64, b: u64| a as i64 - b as i64;
        MemoryDelta {
            vm_rss: d(self.vm_rss, before.vm_rss),
            rss: d(self.rss, before.rss),
            private_dirty: d(self.private_dirty, before.private_dirty),
            anonymous: d(self.anonymous, before.anonymous),
        }
    }
}

/// The difference of two [`Memory`] readings, in bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MemoryDelta {
    pub vm_rss: i64,
    pub rss: i64,
    pub private_dirty: i64,
    pub anonymous: i64,
}

impl MemoryDelta {
    /// Each field divided by `n` (bytes per connection).
    pub fn per(&self, n: u64) -> PerConnection {
        let n = n.max(1) as f64;
        PerConnection {
            vm_rss: self.vm_rss as f64 / n,
            private_dirty: self.private_dirty as f64 / n,
            anonymous: self.anonymous as f64 / n,
        }
    }
}

/// Bytes per connection.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PerConnection {
    pub vm_rss: f64,
    pub private_dirty: f64,
    pub anonymous: f64,
}

/// The whole machine's TCP sockets and their kernel buffers (`/proc/net/sockstat`): both ends
/// of every loopback connection, the hub's and the generator's alike.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TcpKernel {
    pub inuse: u64,
    pub time_wait: u64,
    /// `mem`, pages of socket buffers, converted to bytes.
    pub mem_bytes: u64,
}

impl TcpKernel {
    pub fn read() -> anyhow::Result<Self> {
        let sockstat =
            std::fs::read_to_string("/proc/net/sockstat").context("reading /proc/net/sockstat")?;
        Self::parse(&sockstat).context("no TCP line in /proc/net/sockstat")
    }

    fn parse(sockstat: &str) -> Option<Self> {
        let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| -> Option<u64> {
            let at = words.iter().position(|w| *w == name)?;
            words.get(at + 1)?.parse().ok()
        };
        Some(Self {
            inuse: field("inuse")?,
            time_wait: field("tw")?,
            mem_bytes: field("mem")? * 4096,
        })
    }
}

/// A `Name:   1234 kB` line of a `/proc` file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let m = Memory::read(Process::Myself).unwrap();
        assert!(m.vm_rss > 0);
        // A kernel with the rollup agrees with status within a few pages.
        if m.rss > 0 {
            assert!(m.private_dirty <= m.rss);
        }
    }

    #[test]
    fn parses_proc_fields() {
        let status = "Name:\tx\nVmHWM:\t  2000 kB\nVmRSS:\t  1536 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(1536 * 1024));
        assert_eq!(kib_field(status, "Private_Dirty:"), None);
        let sockstat = "sockets: used 290\nTCP: inuse 20012 orphan 0 tw 3 alloc 20015 mem 12\n\
                        UDP: inuse 2 mem 0\n";
        let tcp = TcpKernel::parse(sockstat).unwrap();
        assert_eq!(tcp.inuse, 20012);
        assert_eq!(tcp.time_wait, 3);
        assert_eq!(tcp.mem_bytes, 12 * 4096);
        let delta = Memory {
            vm_rss: 10_000,
            ..Memory::default()
        }
        .minus(&Memory {
            vm_rss: 12_000,
            ..Memory::default()
        });
        assert_eq!(delta.vm_rss, -2000);
        assert_eq!(delta.per(4).vm_rss, -500.0);
    }
}
