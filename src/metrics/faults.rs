//! What an injected fault did to latency, read from the run's timeline (worst latency and
//! events per 100 ms of receive time): when each fault was on, the latency it is judged
//! against, the worst latency while it was on and after, and how long each took to recover
//! from. The slow consumer of the slow-consumer fault is described here too.
//!
//! Recovery is judged against the *baseline*: the median, over 100 ms bins clear of every fault,
//! of each bin's worst latency (bins before the first fault when there are at least
//! [`BASELINE_BINS`] of them, since a fault's wake may linger). A fault has recovered at the end of
//! the first bin after it from which [`SETTLED_BINS`] bins in a row (or fewer, when the next fault
//! or the stream's end comes first) hold events that all arrived within the baseline: one lucky
//! bin amid a backlog is not a recovery. The resolution is one bin, and the figure an upper bound.

use serde::{Deserialize, Serialize};

use super::recorder::{Timeline, TIMELINE_BIN_MS};

/// Bins before the first fault that make a baseline of their own.
pub const BASELINE_BINS: usize = 5;

/// Bins in a row within the baseline that make a recovery.
pub const SETTLED_BINS: usize = 3;

/// When one fault was on, in milliseconds since the run's interval origin (an instant, such as
/// one cut of the drop fault, has `start_ms == end_ms`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FaultWindow {
    /// Which fault: the name of the setting that planted it.
    pub fault: String,
    /// When it began.
    pub start_ms: f64,
    /// When it was over.
    pub end_ms: f64,
}

/// What the faults of one row did to its latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FaultEffect {
    /// The typical worst latency per 100 ms with no fault on (see the module's text), us.
    pub baseline_us: u64,
    /// Worst latency in the bins while a fault was on, us.
    pub during_max_us: u64,
    /// Worst latency from the last fault's end to the end of the stream, us (0: no event
    /// arrived after it).
    pub after_max_us: u64,
    /// Per fault that recovered before the next began: milliseconds from its end until latency
    /// was back within the baseline (median and worst), to one bin.
    pub recovery_ms: Option<Recovery>,
    /// Faults after which latency was not back within the baseline before the next fault or
    /// the stream's end.
    pub unrecovered: usize,
}

/// Recovery times over the faults of a row.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Recovery {
    /// Median over the faults that recovered, ms.
    pub median: f64,
    /// Longest, ms.
    pub max: f64,
    /// How many faults recovered.
    pub faults: usize,
}

/// What the slow consumer of the slow-consumer fault went through; its latencies are not in
/// the row's histograms, which show what it did to the others.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SlowConsumer {
    /// The rate it read at, bytes per second.
    pub read_rate: u64,
    /// Distinct events it received.
    pub delivered: u64,
    /// Events it never received.
    pub lost: u64,
    /// Its worst latency, us.
    pub worst_latency_us: u64,
    /// Whether its subscription ended with an error (the server dropped it, say).
    pub ended_early: bool,
}

/// The bin a moment falls in.
fn bin_of(ms: f64) -> usize {
    (ms.max(0.0) / TIMELINE_BIN_MS as f64) as usize
}

/// What `windows` did to the latency `timeline` shows; `None` without windows or events.
pub fn effect(windows: &[FaultWindow], timeline: &Timeline) -> Option<FaultEffect> {
    let bin_ms = TIMELINE_BIN_MS as f64;
    let mut windows: Vec<&FaultWindow> = windows.iter().collect();
    windows.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    let first = windows.first()?;
    let bins = timeline.max_us.len();
    // Bins touched by a fault: from the one its start falls in to the one its end falls in.
    let mut touched = vec![false; bins];
    for w in &windows {
        for flag in touched
            .iter_mut()
            .take(bin_of(w.end_ms) + 1)
            .skip(bin_of(w.start_ms))
        {
            *flag = true;
        }
    }
    let clear = |range: std::ops::Range<usize>| -> Vec<u32> {
        range
            .filter(|&b| !touched[b] && timeline.events[b] > 0)
            .map(|b| timeline.max_us[b])
            .collect()
    };
    let before = clear(0..bin_of(first.start_ms).min(bins));
    let mut typical = if before.len() >= BASELINE_BINS {
        before
    } else {
        clear(0..bins)
    };
    if typical.is_empty() {
        return None;
    }
    typical.sort_unstable();
    let baseline_us = u64::from(typical[typical.len() / 2]);

    let worst = |range: std::ops::Range<usize>, only_touched: bool| -> u64 {
        range
            .filter(|&b| !only_touched || touched[b])
            .map(|b| u64::from(timeline.max_us[b]))
            .max()
            .unwrap_or(0)
    };
    let last_end = windows.iter().map(|w| w.end_ms).fold(0.0, f64::max);
    let during_max_us = worst(0..bins, true);
    let after_max_us = worst(bin_of(last_end).min(bins)..bins, false);

    let mut recoveries = Vec::new();
    let mut unrecovered = 0;
    for (i, w) in windows.iter().enumerate() {
        let next_start = windows.get(i + 1).map_or(f64::INFINITY, |n| n.start_ms);
        // Whole bins after the fault's end, up to the next fault.
        let from = (w.end_ms / bin_ms).ceil() as usize;
        let until = (from..bins)
            .find(|&b| (b as f64) * bin_ms >= next_start)
            .unwrap_or(bins);
        let within = |b: usize| u64::from(timeline.max_us[b]) <= baseline_us;
        let good = (from..until).find(|&b| {
            // Events in this bin, all within the baseline, and so in the bins that follow
            // (empty bins count for nothing either way).
            timeline.events[b] > 0 && (b..(b + SETTLED_BINS).min(until)).all(within)
        });
        match good {
            Some(b) => recoveries.push((b + 1) as f64 * bin_ms - w.end_ms),
            None => unrecovered += 1,
        }
    }
    recoveries.sort_by(f64::total_cmp);
    let recovery_ms = (!recoveries.is_empty()).then(|| Recovery {
        median: recoveries[recoveries.len() / 2],
        max: recoveries[recoveries.len() - 1],
        faults: recoveries.len(),
    });
    Some(FaultEffect {
        baseline_us,
        during_max_us,
        after_max_us,
        recovery_ms,
        unrecovered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start_ms: f64, end_ms: f64) -> FaultWindow {
        FaultWindow {
            fault: "outage".into(),
            start_ms,
            end_ms,
        }
    }

    /// A quiet second, a fault from 1.0 s to 1.5 s, then latency that takes two bins to come
    /// back, with one lucky bin amid the backlog: the baseline is the quiet bins' median, the
    /// worst during the fault is its peak, and the recovery ends with the first bin of three
    /// in a row back within the baseline.
    #[test]
    fn recovery_is_timed_from_the_fault_to_the_first_good_bin() {
        let mut max_us = vec![100; 10];
        max_us[3] = 140; // one noisy quiet bin does not move the median
        max_us.extend([0, 0, 0, 0, 0]); // 1.0–1.5 s: down, nothing arrives
        max_us.extend([500_000, 100, 90_000, 100, 100, 100]); // the backlog, then back
        let events = max_us.iter().map(|&us| u32::from(us > 0)).collect();
        let timeline = Timeline { max_us, events };
        let effect = effect(&[window(1000.0, 1500.0)], &timeline).unwrap();
        assert_eq!(effect.baseline_us, 100);
        assert_eq!(effect.during_max_us, 500_000);
        assert_eq!(effect.after_max_us, 500_000);
        let recovery = effect.recovery_ms.unwrap();
        // Bin 16 is within but bin 17 is not; bins 18–20 (from 1.8 s) are back.
        assert_eq!(
            (recovery.median, recovery.max, recovery.faults),
            (400.0, 400.0, 1)
        );
        assert_eq!(effect.unrecovered, 0);
    }

    /// A fault whose wake lasts until the next one is counted as not recovered; no windows,
    /// no effect.
    #[test]
    fn unrecovered_faults_are_counted() {
        let max_us = vec![100, 100, 100, 100, 100, 900, 900, 900, 900, 100];
        let events = vec![1; max_us.len()];
        let timeline = Timeline { max_us, events };
        let effect = effect(&[window(500.0, 500.0), window(800.0, 800.0)], &timeline).unwrap();
        assert_eq!(effect.baseline_us, 100);
        assert_eq!(effect.unrecovered, 1);
        assert_eq!(effect.recovery_ms.unwrap().median, 200.0);
        assert!(super::effect(&[], &timeline).is_none());
    }
}
