//! The statistics rounds are judged by: the median, a bootstrap confidence interval of it, a
//! two-sample bootstrap test of a change between two sets of rounds, and the
//! Benjamini–Hochberg procedure that keeps the false discovery rate across many figures in
//! check. Resampling is seeded, so the same figures always give the same interval.
//!
//! Why these: a round's figure is one number from a noisy shared machine, with no known
//! distribution, so intervals are resampled rather than assumed normal (Abedi and Brecht, ICPE
//! 2017, on cloud VMs); medians resist the one round a neighbour's burst spoilt; and comparing
//! forty figures at once would flag two by chance at 5% each without a correction.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// Bootstrap resamples per interval or test.
const RESAMPLES: usize = 2000;

/// The confidence of every interval, and the false discovery rate `compare` allows.
pub const CONFIDENCE: f64 = 0.95;

/// Rounds from which an interval is computed; below, the range is shown instead.
pub const MIN_ROUNDS_FOR_INTERVAL: usize = 5;

/// The seed every resampling starts from: intervals are a function of the figures alone.
const SEED: u64 = 0x7075_7368_6265_6e63; // "pushbenc"

/// The median of `values` (finite ones; `None` when there are none).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Some(if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    })
}

/// The median of a resample of `values` (drawn with replacement), into `scratch`.
fn resampled_median(values: &[f64], rng: &mut StdRng, scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend((0..values.len()).map(|_| values[rng.random_range(0..values.len())]));
    median(scratch).unwrap_or(f64::NAN)
}

/// The `q` quantile of sorted `values` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The percentile bootstrap [`CONFIDENCE`] interval of the median of `values`, or `None` with
/// fewer than [`MIN_ROUNDS_FOR_INTERVAL`] finite values.
pub fn median_interval(values: &[f64]) -> Option<(f64, f64)> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < MIN_ROUNDS_FOR_INTERVAL {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut scratch = Vec::with_capacity(finite.len());
    let mut medians: Vec<f64> = (0..RESAMPLES)
        .map(|_| resampled_median(&finite, &mut rng, &mut scratch))
        .collect();
    medians.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    Some((quantile(&medians, tail), quantile(&medians, 1.0 - tail)))
}

/// What a two-sample bootstrap found of the change from `a` to `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    /// The change in medians, relative to `a`'s (0.2: 20% more).
    pub relative: f64,
    /// Its [`CONFIDENCE`] interval.
    pub interval: (f64, f64),
    /// The two-sided bootstrap p-value of "no change".
    pub p: f64,
}

/// The change from `a`'s median to `b`'s, relative to `a`'s, with a bootstrap interval and
/// p-value: each side resampled apart, [`RESAMPLES`] times. `None` when either side has
/// fewer than two finite values or `a`'s median is zero.
pub fn change(a: &[f64], b: &[f64]) -> Option<Change> {
    let a: Vec<f64> = a.iter().copied().filter(|v| v.is_finite()).collect();
    let b: Vec<f64> = b.iter().copied().filter(|v| v.is_finite()).collect();
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let base = median(&a)?;
    if base == 0.0 {
        return None;
    }
    let relative = median(&b)? / base - 1.0;
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut scratch = Vec::with_capacity(a.len().max(b.len()));
    let mut changes: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let ma = resampled_median(&a, &mut rng, &mut scratch);
            let mb = resampled_median(&b, &mut rng, &mut scratch);
            if ma == 0.0 {
                f64::NAN
            } else {
                mb / ma - 1.0
            }
        })
        .filter(|c| c.is_finite())
        .collect();
    if changes.is_empty() {
        return None;
    }
    changes.sort_by(f64::total_cmp);
    let tail = (1.0 - CONFIDENCE) / 2.0;
    // Two-sided: how often the resampled change falls on the far side of zero, doubled.
    let below = changes.iter().filter(|&&c| c <= 0.0).count() as f64;
    let above = changes.iter().filter(|&&c| c >= 0.0).count() as f64;
    let p = (2.0 * below.min(above) / changes.len() as f64).min(1.0);
    Some(Change {
        relative,
        interval: (quantile(&changes, tail), quantile(&changes, 1.0 - tail)),
        p,
    })
}

/// Which of `p_values` are discoveries at false discovery rate `q` (Benjamini–Hochberg): the
/// largest k whose k-th smallest p is at most k·q/m, and every p up to it.
pub fn discoveries(p_values: &[f64], q: f64) -> Vec<bool> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let cutoff = order
        .iter()
        .enumerate()
        .filter(|(k, &i)| p_values[i] <= (k + 1) as f64 * q / m as f64)
        .map(|(k, _)| k + 1)
        .max()
        .unwrap_or(0);
    let mut found = vec![false; m];
    for &i in &order[..cutoff] {
        found[i] = true;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Medians of odd and even counts; non-finite values are left out.
    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, f64::NAN]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    /// No interval below five rounds; from five, one that holds the median, the same every
    /// time.
    #[test]
    fn intervals_need_five_rounds_and_are_reproducible() {
        assert_eq!(median_interval(&[1.0, 2.0, 3.0, 4.0]), None);
        let values = [10.0, 12.0, 11.0, 30.0, 10.5, 11.5];
        let (lo, hi) = median_interval(&values).unwrap();
        assert!(lo <= 11.25 && 11.25 <= hi, "{lo}..{hi}");
        assert_eq!(median_interval(&values), Some((lo, hi)));
    }

    /// A planted 20% change is found, with an interval around it and a small p; identical
    /// samples show none.
    #[test]
    fn a_planted_change_is_found() {
        let a = [100.0, 103.0, 98.0, 101.0, 99.0, 102.0];
        let b: Vec<f64> = a.iter().map(|v| v * 1.2).collect();
        let found = change(&a, &b).unwrap();
        assert!((found.relative - 0.2).abs() < 1e-9);
        assert!(
            found.interval.0 > 0.1 && found.interval.1 < 0.3,
            "{found:?}"
        );
        assert!(found.p < 0.01, "{found:?}");
        let none = change(&a, &a).unwrap();
        assert!(none.p > 0.5, "{none:?}");
        assert_eq!(change(&[1.0], &[2.0, 3.0]), None);
    }

    /// Benjamini–Hochberg: the step-up keeps every p under the largest that passes its rank's
    /// line, even one above its own rank's line.
    #[test]
    fn the_false_discovery_rate_is_controlled() {
        let p = [0.01, 0.04, 0.03, 0.2, 0.5];
        // Sorted: 0.01 <= 0.01, 0.03 <= 0.02? no, 0.04 <= 0.03? no: only the first.
        assert_eq!(discoveries(&p, 0.05), [true, false, false, false, false]);
        let p = [0.001, 0.008, 0.039, 0.041, 0.042];
        // 0.042 <= 5 * 0.05 / 5: every one.
        assert_eq!(discoveries(&p, 0.05), [true; 5]);
        assert_eq!(discoveries(&[], 0.05), Vec::<bool>::new());
    }

    /// The interval of a known distribution covers its true median in about 95% of simulated
    /// trials of nine rounds each (normal noise, median 100).
    #[test]
    fn intervals_cover_the_true_median() {
        let mut rng = StdRng::seed_from_u64(7);
        let normal = |rng: &mut StdRng| {
            // Box–Muller.
            let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        };
        let trials = 400;
        let covered = (0..trials)
            .filter(|_| {
                let values: Vec<f64> = (0..9).map(|_| 100.0 + 10.0 * normal(&mut rng)).collect();
                let (lo, hi) = median_interval(&values).unwrap();
                lo <= 100.0 && 100.0 <= hi
            })
            .count();
        let share = covered as f64 / trials as f64;
        assert!(
            (0.90..=0.99).contains(&share),
            "covered in {share} of trials"
        );
    }
}
