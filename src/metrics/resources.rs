//! A server's resources over a long run (the soak): resident memory, open descriptors and CPU
//! sampled at an interval from the stream's origin, like the per-second latency intervals, and
//! the trends that tell a leak from a plateau: least-squares slopes after the first interval.

use serde::{Deserialize, Serialize};

/// The server's processes at one moment of the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResourceSample {
    /// When, ms since the intervals' origin (the stream's start).
    pub at_ms: u64,
    /// Resident memory, bytes (summed over the server's processes).
    pub rss_bytes: u64,
    /// Open file descriptors (sockets included), summed over the server's processes.
    pub open_fds: u64,
    /// CPU time used so far, us.
    pub cpu_us: u64,
    /// Deliveries the subscribers received since the previous sample (warm-up excluded).
    pub deliveries: u64,
    /// Server CPU per delivery since the previous sample, us (none without deliveries).
    #[serde(default)]
    pub cpu_us_per_delivery: Option<f64>,
}

/// How the resources moved after the first interval (while connections and buffers settle).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Trend {
    /// Samples the trend is fitted to.
    pub samples: usize,
    /// Their span, minutes.
    pub span_minutes: f64,
    /// Resident memory's median over them, bytes: the plateau a slope is judged against.
    pub rss_plateau_bytes: f64,
    /// Resident memory's slope, bytes per 10 minutes.
    pub rss_bytes_per_10_minutes: f64,
    /// Open descriptors' slope, per 10 minutes.
    pub fds_per_10_minutes: f64,
    /// Descriptors at the last sample less those at the first.
    pub fd_growth: i64,
    /// CPU per delivery's slope, us per 10 minutes (none where fewer than two intervals
    /// delivered).
    pub cpu_us_per_delivery_per_10_minutes: Option<f64>,
    /// Why this is a leak, if it is one: resident memory growing by more than
    /// [`LEAK_SHARE_PER_10_MINUTES`] of its plateau per 10 minutes, or descriptors growing.
    pub leak: Option<String>,
}

/// A resident-memory slope above this share of its plateau per 10 minutes is a leak.
pub const LEAK_SHARE_PER_10_MINUTES: f64 = 0.01;

/// Ten minutes in ms: the unit every slope is given in.
const TEN_MINUTES_MS: f64 = 600_000.0;

/// The trend of `samples` after the first `settle_ms` (none with fewer than three samples
/// left: two points make a line, not a trend).
pub fn trend(samples: &[ResourceSample], settle_ms: u64) -> Option<Trend> {
    let kept: Vec<&ResourceSample> = samples.iter().filter(|s| s.at_ms >= settle_ms).collect();
    if kept.len() < 3 {
        return None;
    }
    let at = |s: &&ResourceSample| s.at_ms as f64;
    let rss = slope(kept.iter().map(|s| (at(s), s.rss_bytes as f64)))? * TEN_MINUTES_MS;
    let fds = slope(kept.iter().map(|s| (at(s), s.open_fds as f64)))? * TEN_MINUTES_MS;
    let cpu = slope(
        kept.iter()
            .filter_map(|s| Some((at(s), s.cpu_us_per_delivery?))),
    )
    .map(|per_ms| per_ms * TEN_MINUTES_MS);
    let mut memory: Vec<u64> = kept.iter().map(|s| s.rss_bytes).collect();
    memory.sort_unstable();
    let plateau = memory[memory.len() / 2] as f64;
    let (first, last) = (kept[0], kept[kept.len() - 1]);
    let fd_growth = last.open_fds as i64 - first.open_fds as i64;
    let leak = if fd_growth > 0 && fds > 0.0 {
        Some(format!(
            "open descriptors grew by {fd_growth} ({fds:+.1} per 10 minutes)"
        ))
    } else if rss > LEAK_SHARE_PER_10_MINUTES * plateau {
        Some(format!(
            "resident memory grew {:.1}% of its plateau per 10 minutes (more than {:.0}%)",
            100.0 * rss / plateau.max(1.0),
            100.0 * LEAK_SHARE_PER_10_MINUTES
        ))
    } else {
        None
    };
    Some(Trend {
        samples: kept.len(),
        span_minutes: (last.at_ms - first.at_ms) as f64 / 60_000.0,
        rss_plateau_bytes: plateau,
        rss_bytes_per_10_minutes: rss,
        fds_per_10_minutes: fds,
        fd_growth,
        cpu_us_per_delivery_per_10_minutes: cpu,
        leak,
    })
}

/// The least-squares slope of `points` (y per x), if they span more than one x.
fn slope(points: impl Iterator<Item = (f64, f64)>) -> Option<f64> {
    let points: Vec<(f64, f64)> = points.collect();
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let spread: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if spread == 0.0 {
        return None;
    }
    let together: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    Some(together / spread)
}

/// Deliveries between samples, from the subscribers' per-second counts (`events` received in
/// second `s` since the same origin): each sample gets what arrived since the one before, and
/// its CPU per delivery. Samples from the last second anything arrived on (the stream ending,
/// then the server draining) are left out: the trend is the stream's.
pub fn with_deliveries(
    mut samples: Vec<ResourceSample>,
    per_second: impl Iterator<Item = (u64, u64)> + Clone,
) -> Vec<ResourceSample> {
    let last_ms = per_second
        .clone()
        .filter(|&(_, events)| events > 0)
        .map(|(second, _)| second * 1000)
        .max()
        .unwrap_or(0);
    samples.retain(|s| s.at_ms <= last_ms);
    let mut previous: Option<(u64, u64)> = None;
    for sample in &mut samples {
        let (from_ms, cpu_before) = previous.unwrap_or((0, sample.cpu_us));
        let delivered: u64 = per_second
            .clone()
            .filter(|&(second, _)| {
                let ms = second * 1000;
                ms >= from_ms && ms < sample.at_ms
            })
            .map(|(_, events)| events)
            .sum();
        sample.deliveries = delivered;
        sample.cpu_us_per_delivery = (previous.is_some() && delivered > 0)
            .then(|| sample.cpu_us.saturating_sub(cpu_before) as f64 / delivered as f64);
        previous = Some((sample.at_ms, sample.cpu_us));
    }
    samples
}

/// Samples processes `pids` (summed) every `every` from `origin_ns` (monotonic) until `stop`,
/// each a quarter interval past its mark: faults that strike on the marks (a drop every 30 s
/// against samples every minute) would otherwise catch every connection mid-reconnect.
pub async fn sample_every(
    pids: Vec<u32>,
    every: std::time::Duration,
    origin_ns: u64,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<ResourceSample> {
    let every_ns = every.as_nanos().max(1) as u64;
    let mut samples = Vec::new();
    for mark in 1.. {
        let at_ns = origin_ns + mark * every_ns - every_ns * 3 / 4;
        tokio::select! {
            () = crate::clock::sleep_until_ns(at_ns) => {}
            () = stop.cancelled() => return samples,
        }
        let process = super::process::sample_sum(&pids);
        samples.push(ResourceSample {
            at_ms: crate::clock::now_ns().saturating_sub(origin_ns) / 1_000_000,
            rss_bytes: process.rss_bytes,
            open_fds: pids.iter().filter_map(|&pid| open_fds(pid)).sum(),
            cpu_us: process.cpu_us,
            ..ResourceSample::default()
        });
    }
    samples
}

/// Open descriptors of process `pid` (`None` if it is gone).
pub fn open_fds(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|entries| entries.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u64, rss: u64, fds: u64) -> ResourceSample {
        ResourceSample {
            at_ms: minute * 60_000,
            rss_bytes: rss,
            open_fds: fds,
            ..ResourceSample::default()
        }
    }

    /// Flat memory and descriptors after the first minute are no leak, whatever the first
    /// minute did; memory growing 2% of its plateau per 10 minutes is one, and so is a single
    /// descriptor more at the end than at the start.
    #[test]
    fn a_leak_is_told_from_a_plateau() {
        let flat: Vec<_> = (0..=10)
            .map(|m| at(m, if m == 0 { 10 } else { 100_000 }, 50))
            .collect();
        let trend = trend(&flat, 60_000).unwrap();
        assert_eq!((trend.samples, trend.leak), (10, None));
        assert_eq!(trend.rss_bytes_per_10_minutes, 0.0);

        let growing: Vec<_> = (1..=10).map(|m| at(m, 100_000 + m * 200, 50)).collect();
        let trend = super::trend(&growing, 60_000).unwrap();
        assert!((trend.rss_bytes_per_10_minutes - 2_000.0).abs() < 1e-6);
        assert!(trend.leak.unwrap().contains("resident memory"));

        let leaking: Vec<_> = (1..=10).map(|m| at(m, 100_000, 50 + m / 10)).collect();
        let trend = super::trend(&leaking, 60_000).unwrap();
        assert_eq!(trend.fd_growth, 1);
        assert!(trend.leak.unwrap().contains("descriptors"));
    }

    /// Two samples make no trend.
    #[test]
    fn too_few_samples_make_no_trend() {
        assert_eq!(trend(&[at(1, 1, 1), at(2, 1, 1)], 0), None);
    }

    /// Each sample gets the deliveries since the one before and the CPU they cost.
    #[test]
    fn deliveries_are_shared_out_between_samples() {
        let samples = vec![
            ResourceSample {
                at_ms: 2_000,
                cpu_us: 1_000,
                ..ResourceSample::default()
            },
            ResourceSample {
                at_ms: 4_000,
                cpu_us: 3_000,
                ..ResourceSample::default()
            },
        ];
        let seconds = [(0, 10), (1, 10), (2, 100), (3, 100), (4, 7), (5, 1)];
        let mut after = samples[1];
        after.at_ms = 9_000;
        let samples = with_deliveries([samples, vec![after]].concat(), seconds.iter().copied());
        assert_eq!(samples.len(), 2, "the sample after the stream is left out");
        assert_eq!((samples[0].deliveries, samples[1].deliveries), (20, 200));
        assert_eq!(samples[0].cpu_us_per_delivery, None);
        assert_eq!(samples[1].cpu_us_per_delivery, Some(10.0));
    }
}
