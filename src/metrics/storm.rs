//! What a reconnect storm cost, from every subscriber's reconnections: how long until half,
//! 99% and all of them were back (their subscription established again) and caught up (the
//! first event scheduled after their return received, so the backlog is behind them), the
//! curve of both over time, how long reconnecting took while everyone did it at once, how many
//! attempts failed, and how fast the server took them back.
//!
//! Times count from the storm's end: the cut itself for `close`, the path's return for
//! `blackhole` (whose silence is shown beside as its length). A subscriber counts from its first
//! reconnection at or after the storm's start, so churn or drops before it are not mistaken for
//! its return.

use serde::{Deserialize, Serialize};

use super::latency;
use super::process::TimedSample;

/// One reconnection of one subscriber (monotonic ns), as a load worker recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconnection {
    /// The subscriber's index in the run.
    pub subscriber: u32,
    /// When the attempt that got through began (after the client's backoff).
    pub attempt_ns: u64,
    /// When the subscription was established again.
    pub at_ns: u64,
    /// When the first event scheduled at or after `at_ns` arrived, or, if the stream ended
    /// first, its last event (`None`: never caught up).
    pub caught_up_ns: Option<u64>,
    /// Attempts before it that failed to establish the subscription.
    pub failed_attempts: u32,
}

/// The share of subscribers back by each moment: milliseconds at 50%, 99% and 100%, each
/// `None` when that share never came back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Wave {
    /// Half of them.
    pub p50_ms: Option<f64>,
    /// 99% of them.
    pub p99_ms: Option<f64>,
    /// Every one.
    pub all_ms: Option<f64>,
}

/// One point of the reconnection curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CurvePoint {
    /// Milliseconds since the storm's end.
    pub ms: f64,
    /// Share of the subscribers back (0 to 1).
    pub back: f64,
    /// Share caught up.
    pub caught_up: f64,
}

/// What one storm did to a row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StormEffect {
    /// `close` or `blackhole`.
    pub kind: String,
    /// When the storm began, ms since the intervals' origin.
    pub start_ms: f64,
    /// How long the path was silent (0 for `close`), ms.
    pub length_ms: f64,
    /// Subscribers the storm struck (every subscriber of the row).
    pub subscribers: usize,
    /// Time until they were back.
    pub back: Wave,
    /// Time until they were caught up.
    pub caught_up: Wave,
    /// Subscribers never back.
    pub not_back: usize,
    /// Back and caught up over time, at most [`CURVE_POINTS`] points.
    pub curve: Vec<CurvePoint>,
    /// From starting the attempt that got through to being subscribed again, us (p50, p99).
    pub reconnect_us: (u64, u64),
    /// Attempts that failed (refused, closed, timed out) before the ones that got through.
    pub failed_attempts: u64,
    /// The most subscribers re-established in any 100 ms, per second: the server's connect
    /// capacity when the clients' spread of backoffs did not bound it.
    pub peak_reconnects_per_s: f64,
    /// The server's busiest sampling interval from the storm's start until every subscriber
    /// was back (or the stream's end), as a share of its CPUs (`None`: not sampled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_peak_cpu_share: Option<f64>,
    /// The server's largest resident memory over the same stretch, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_peak_rss_bytes: Option<u64>,
}

/// Points the curve keeps (one per percent of the population, and the start).
pub const CURVE_POINTS: usize = 101;

impl StormEffect {
    /// The storm from `start_ns` to `end_ns` as the reconnections show it, for `subscribers`
    /// subscribers, times relative to `origin_ns` where they are moments.
    pub fn of(
        kind: &str,
        (start_ns, end_ns): (u64, u64),
        subscribers: usize,
        reconnections: &[Reconnection],
        origin_ns: u64,
    ) -> Self {
        let returns = first_returns(reconnections, start_ns);
        let since_end = |ns: u64| ns.saturating_sub(end_ns) as f64 / 1e6;
        let mut back: Vec<f64> = returns.iter().map(|r| since_end(r.at_ns)).collect();
        let mut caught: Vec<f64> = returns
            .iter()
            .filter_map(|r| r.caught_up_ns.map(since_end))
            .collect();
        back.sort_by(f64::total_cmp);
        caught.sort_by(f64::total_cmp);
        let mut reconnect = latency::histogram();
        for r in &returns {
            reconnect.saturating_record(latency::micros_between(r.attempt_ns, r.at_ns));
        }
        Self {
            kind: kind.to_owned(),
            start_ms: start_ns.saturating_sub(origin_ns) as f64 / 1e6,
            length_ms: end_ns.saturating_sub(start_ns) as f64 / 1e6,
            subscribers,
            back: wave(&back, subscribers),
            caught_up: wave(&caught, subscribers),
            not_back: subscribers.saturating_sub(back.len()),
            curve: curve(&back, &caught, subscribers),
            reconnect_us: if reconnect.is_empty() {
                (0, 0)
            } else {
                (
                    reconnect.value_at_quantile(0.5),
                    reconnect.value_at_quantile(0.99),
                )
            },
            failed_attempts: returns.iter().map(|r| u64::from(r.failed_attempts)).sum(),
            peak_reconnects_per_s: peak_per_s(&back),
            server_peak_cpu_share: None,
            server_peak_rss_bytes: None,
        }
    }

    /// The same, with the server's peak CPU and memory read from `samples` of its processes
    /// (on `cpus` CPUs) from the storm's start until the last subscriber was back (or the
    /// samples end, when some never were).
    pub fn with_server(mut self, samples: &[TimedSample], start_ns: u64, cpus: f64) -> Self {
        let end_ns = match self.back.all_ms {
            Some(ms) => start_ns + ((self.length_ms + ms) * 1e6) as u64,
            None => u64::MAX,
        };
        // Each interval that overlaps the stretch, so a storm shorter than one still has one.
        let spans: Vec<_> = samples
            .windows(2)
            .filter(|w| w[1].at_ns >= start_ns && w[0].at_ns <= end_ns)
            .collect();
        self.server_peak_cpu_share = spans
            .iter()
            .filter(|w| w[1].at_ns > w[0].at_ns)
            .map(|w| {
                let cpu_us = w[1].sample.cpu_us.saturating_sub(w[0].sample.cpu_us) as f64;
                cpu_us * 1e3 / ((w[1].at_ns - w[0].at_ns) as f64 * cpus.max(f64::MIN_POSITIVE))
            })
            .reduce(f64::max);
        self.server_peak_rss_bytes = spans.iter().map(|w| w[1].sample.rss_bytes).max();
        self
    }
}

/// Each subscriber's first reconnection at or after `start_ns`, caught up at the first moment
/// any of its reconnections since did (one that dropped again before catching up, as calls on a
/// shared HTTP/2 connection do while it is re-established, caught up on a later one).
fn first_returns(reconnections: &[Reconnection], start_ns: u64) -> Vec<Reconnection> {
    let mut first: std::collections::BTreeMap<u32, Reconnection> = Default::default();
    for r in reconnections.iter().filter(|r| r.at_ns >= start_ns) {
        first
            .entry(r.subscriber)
            .and_modify(|kept| {
                let caught_up_ns = match (kept.caught_up_ns, r.caught_up_ns) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if r.at_ns < kept.at_ns {
                    *kept = *r;
                }
                kept.caught_up_ns = caught_up_ns;
            })
            .or_insert(*r);
    }
    first.into_values().collect()
}

/// The moment by which each share of `population` is in `sorted` (ascending ms).
fn wave(sorted: &[f64], population: usize) -> Wave {
    let at = |share: f64| {
        let needed = ((population as f64 * share).ceil() as usize).max(1);
        sorted.get(needed - 1).copied()
    };
    Wave {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        all_ms: at(1.0),
    }
}

/// The curve at every percent of the population back, with the share caught up by then.
fn curve(back: &[f64], caught: &[f64], population: usize) -> Vec<CurvePoint> {
    if population == 0 {
        return Vec::new();
    }
    let share =
        |sorted: &[f64], ms: f64| sorted.partition_point(|&t| t <= ms) as f64 / population as f64;
    let mut moments: Vec<f64> = (0..CURVE_POINTS - 1)
        .filter_map(|k| back.get(k * back.len() / (CURVE_POINTS - 1)).copied())
        .chain(back.last().copied())
        .chain(caught.last().copied())
        .collect();
    moments.insert(0, 0.0);
    moments.sort_by(f64::total_cmp);
    moments.dedup();
    moments
        .into_iter()
        .map(|ms| CurvePoint {
            ms,
            back: share(back, ms),
            caught_up: share(caught, ms),
        })
        .collect()
}

/// The most returns in any 100 ms window starting at a return, per second.
fn peak_per_s(sorted: &[f64]) -> f64 {
    let most = (0..sorted.len())
        .map(|i| sorted[i..].partition_point(|&t| t < sorted[i] + 100.0))
        .max()
        .unwrap_or(0);
    most as f64 * 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn back(subscriber: u32, at_ms: u64, caught_ms: Option<u64>) -> Reconnection {
        Reconnection {
            subscriber,
            attempt_ns: at_ms * 1_000_000 - 500_000,
            at_ns: at_ms * 1_000_000,
            caught_up_ns: caught_ms.map(|ms| ms * 1_000_000),
            failed_attempts: u32::from(subscriber == 3),
        }
    }

    /// Five subscribers, one never back: the waves are read from the population, not from
    /// those that returned; reconnections before the storm do not count, and one that dropped
    /// again before catching up caught up on its next.
    #[test]
    fn the_wave_counts_the_whole_population() {
        let reconnections = [
            back(0, 500, Some(600)), // before the storm: churn, not its return
            back(0, 1_010, Some(1_020)),
            back(1, 1_030, Some(1_050)),
            back(2, 1_100, None),
            back(0, 1_200, Some(1_300)), // a later one of subscriber 0
            back(4, 1_150, None),        // dropped again before it caught up...
            back(4, 1_170, Some(1_180)), // ...and caught up on the next
        ];
        let storm = StormEffect::of(
            "close",
            (1_000_000_000, 1_000_000_000),
            5,
            &reconnections,
            0,
        );
        assert_eq!(storm.not_back, 1);
        assert_eq!(storm.back.p50_ms, Some(100.0));
        assert_eq!(storm.back.p99_ms, None);
        assert_eq!(storm.caught_up.p50_ms, Some(180.0));
        assert_eq!(storm.start_ms, 1000.0);
        assert_eq!(storm.reconnect_us, (500, 500));
        assert_eq!(storm.peak_reconnects_per_s, 30.0);
        let last = storm.curve.last().unwrap();
        assert_eq!((last.back, last.caught_up), (0.8, 0.6));
        assert_eq!(storm.curve[0].ms, 0.0);
    }

    #[test]
    fn everyone_back_reads_as_the_last_return() {
        let reconnections: Vec<_> = (0..200)
            .map(|i| back(i, 2_000 + u64::from(i), Some(2_100 + u64::from(i))))
            .collect();
        let storm = StormEffect::of(
            "blackhole",
            (1_000_000_000, 2_000_000_000),
            200,
            &reconnections,
            0,
        );
        assert_eq!(storm.length_ms, 1000.0);
        assert_eq!(storm.back.all_ms, Some(199.0));
        assert_eq!(storm.back.p99_ms, Some(197.0));
        assert_eq!(storm.not_back, 0);
        assert_eq!(storm.failed_attempts, 1);
        assert!(storm.curve.len() <= CURVE_POINTS + 2);
        assert_eq!(storm.curve.last().unwrap().caught_up, 1.0);
    }

    /// The server's peak is its busiest interval within the storm, not before or after it.
    #[test]
    fn the_server_peak_is_read_within_the_storm() {
        use crate::metrics::process::ProcessSample;
        let at = |ms: u64, cpu_ms: u64, rss: u64| TimedSample {
            at_ns: ms * 1_000_000,
            sample: ProcessSample {
                cpu_us: cpu_ms * 1000,
                rss_bytes: rss,
                peak_rss_bytes: rss,
            },
        };
        // Busy before the storm (100 ms of CPU in 100 ms), half busy in it, idle after.
        let samples = [
            at(800, 0, 10),
            at(900, 100, 10),
            at(1_000, 100, 20),
            at(1_100, 150, 40),
            at(1_200, 160, 30),
            at(1_300, 160, 90),
            at(1_400, 160, 90),
        ];
        let reconnections = [back(0, 1_150, Some(1_160))];
        let storm = StormEffect::of(
            "close",
            (1_000_000_000, 1_000_000_000),
            1,
            &reconnections,
            0,
        )
        .with_server(&samples, 1_000_000_000, 1.0);
        assert_eq!(storm.server_peak_cpu_share, Some(0.5));
        assert_eq!(storm.server_peak_rss_bytes, Some(40));
    }
}
