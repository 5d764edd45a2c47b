//! CPU time and resident memory of a process, read from /proc, and CPU placement: how the
//! server under test is kept apart from the load that measures it.

use std::io;

use rustix::process::Pid;
use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// CPU time and memory of one process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessSample {
    /// User plus system CPU time, in microseconds.
    pub cpu_us: u64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
    /// The largest resident set size so far (VmHWM), in bytes.
    #[serde(default)]
    pub peak_rss_bytes: u64,
}

impl std::ops::Add for ProcessSample {
    type Output = Self;

    /// Several processes as one (a server spread over processes): CPU and memory summed, the
    /// peaks too (an upper bound of the peak of the sum).
    fn add(self, other: Self) -> Self {
        Self {
            cpu_us: self.cpu_us + other.cpu_us,
            rss_bytes: self.rss_bytes + other.rss_bytes,
            peak_rss_bytes: self.peak_rss_bytes + other.peak_rss_bytes,
        }
    }
}

/// Samples processes `pids` and sums them (those already gone count nothing).
pub fn sample_sum(pids: &[u32]) -> ProcessSample {
    pids.iter()
        .filter_map(|&pid| sample(Some(pid)).ok())
        .fold(ProcessSample::default(), |sum, s| sum + s)
}

/// One sample of processes at a moment (monotonic ns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimedSample {
    /// When it was taken.
    pub at_ns: u64,
    /// What the processes had used and held.
    pub sample: ProcessSample,
}

/// Samples processes `pids` (summed) every `every` until `stop`: how their CPU and memory
/// moved over a stretch (a reconnect storm's), not only from its start to its end.
pub async fn sample_until(
    pids: Vec<u32>,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<TimedSample> {
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticks.tick() => samples.push(TimedSample {
                at_ns: crate::clock::now_ns(),
                sample: sample_sum(&pids),
            }),
            () = stop.cancelled() => return samples,
        }
    }
}

/// Samples process `pid` (`None`: this process).
pub fn sample(pid: Option<u32>) -> io::Result<ProcessSample> {
    let base = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{base}/stat"))?;
    let status = std::fs::read_to_string(format!("{base}/status"))?;
    Ok(ProcessSample {
        cpu_us: parse_cpu_us(&stat, clock_ticks())?,
        rss_bytes: parse_kb_field(&status, "VmRSS:")?,
        peak_rss_bytes: parse_kb_field(&status, "VmHWM:").unwrap_or_default(),
    })
}

/// Clock ticks per second for /proc/*/stat times; USER_HZ is 100 on every Linux ABI.
fn clock_ticks() -> u64 {
    100
}

/// utime + stime (fields 14 and 15 of /proc/PID/stat), counted after the `(comm)` field, which
/// may itself contain spaces.
fn parse_cpu_us(stat: &str, ticks: u64) -> io::Result<u64> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected /proc/PID/stat format",
        )
    };
    let after_comm = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields
        .get(11)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    let stime: u64 = fields
        .get(12)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)?;
    Ok((utime + stime) * 1_000_000 / ticks)
}

/// A `kB` field (VmRSS, VmHWM) from /proc/PID/status, in bytes.
fn parse_kb_field(status: &str, field: &str) -> io::Result<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no {field} in /proc/PID/status"),
            )
        })
}

/// The whole machine's CPU time, from the `cpu` line of /proc/stat: how much of it the
/// hypervisor took (steal) while a row ran. Steal is time this VM wanted to run and could not;
/// a row measured under heavy steal measured a busy neighbour too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// All ticks (user, nice, system, idle, iowait, irq, softirq, steal).
    pub total: u64,
    /// Ticks stolen by the hypervisor.
    pub steal: u64,
}

impl MachineCpu {
    /// Reads /proc/stat now.
    pub fn sample() -> io::Result<Self> {
        parse_machine_cpu(&std::fs::read_to_string("/proc/stat")?)
    }

    /// The share of the machine's CPU time stolen between `self` and `later` (0 to 1).
    pub fn steal_share_until(&self, later: &MachineCpu) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        later.steal.saturating_sub(self.steal) as f64 / total as f64
    }
}

/// The aggregate `cpu` line: user nice system idle iowait irq softirq steal (guest time is
/// already inside user and nice, so it is not added again).
fn parse_machine_cpu(stat: &str) -> io::Result<MachineCpu> {
    let fields: Vec<u64> = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if fields.len() < 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no aggregate cpu line in /proc/stat",
        ));
    }
    Ok(MachineCpu {
        total: fields[..8].iter().sum(),
        steal: fields[7],
    })
}

/// CPUs this process may run on.
pub fn available_cpus() -> Vec<usize> {
    match sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Splits the available CPUs between load and server: the server gets the upper half, the
/// load the lower; `None` when there is only one CPU to share.
pub fn split_cpus() -> Option<(Vec<usize>, Vec<usize>)> {
    let cpus = available_cpus();
    if cpus.len() < 2 {
        return None;
    }
    let (load, server) = cpus.split_at(cpus.len() / 2);
    Some((load.to_vec(), server.to_vec()))
}

/// Pins every thread of this process to `cpus` (threads started later inherit the mask).
pub fn pin_this_process(cpus: &[usize]) -> io::Result<()> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    for entry in std::fs::read_dir("/proc/self/task")? {
        let tid: i32 = match entry?.file_name().to_string_lossy().parse() {
            Ok(tid) => tid,
            Err(_) => continue,
        };
        // A thread may exit between listing and pinning; that is fine.
        if let Some(pid) = Pid::from_raw(tid) {
            let _ = sched_setaffinity(Some(pid), &set);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields are found after a process name with spaces and parentheses.
    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 99";
        assert_eq!(parse_cpu_us(stat, 100).unwrap(), 3_000_000);
        let status = "Name:\tx\nVmPeak:\t 9999 kB\nVmHWM:\t 4096 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_kb_field(status, "VmRSS:").unwrap(), 2048 * 1024);
        assert_eq!(parse_kb_field(status, "VmHWM:").unwrap(), 4096 * 1024);
    }

    /// Steal is the eighth field of the aggregate line, and its share is of all ticks.
    #[test]
    fn parses_machine_cpu() {
        let before = parse_machine_cpu("cpu  100 0 50 800 0 0 0 50 7 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!((before.total, before.steal), (1000, 50));
        let after = parse_machine_cpu("cpu  200 0 50 850 0 0 0 100 0 0\n").unwrap();
        assert!((before.steal_share_until(&after) - 0.25).abs() < 1e-9);
        assert!(parse_machine_cpu("intr 1 2\n").is_err());
        assert!(MachineCpu::sample().is_ok());
    }

    /// This process can be sampled and has some memory and CPU.
    #[test]
    fn samples_self() {
        let s = sample(None).unwrap();
        assert!(s.rss_bytes > 0);
        assert!(!available_cpus().is_empty());
    }
}
