//! The report's Noise section, said out loud as hyperfine does: how many rounds ran and in what
//! order, the machine's floor in each, what bound each row, and the warnings a reader needs
//! before trusting a figure: the floor drifting across rounds beyond its own spread, the
//! hypervisor's steal, intervals wider than a fifth of their median. A fact the machine does not
//! let us read (a VM has no cpufreq) is recorded as unknown and warns of nothing.

use crate::document::{Block, Document};
use crate::results::figures::{Figure, Row, Spread, METRICS, NOISY_WIDTH};
use crate::results::format::{micros, thousands};
use crate::results::stats::MIN_ROUNDS_FOR_INTERVAL;
use crate::results::{Bound, Results, SATURATED};

/// Noisy figures named in the warning; the rest are counted (each is marked in its table).
const NOISY_NAMED: usize = 8;

/// Steal above this share of a row's CPU time is said.
pub const STEAL_WARNING: f64 = 0.02;

/// The section.
pub(super) fn section(doc: &mut Document, results: &Results, rows: &[Row<'_>]) {
    doc.heading("noise", "Noise");
    doc.paragraph(rounds_said(results));
    doc.paragraph(format!(
        "The machine's own floor, a TCP ping-pong between the load and server processes placed \
         like the runs, was p50 {} p99 {} per round trip: latency below that is not the \
         transport's to win.",
        micros(results.calibration.rtt_us.p50),
        micros(results.calibration.rtt_us.p99)
    ));
    for warning in warnings(results, rows) {
        doc.push(Block::Warning(warning));
    }
    load_bound(doc, rows);
    let late = rows
        .iter()
        .map(|r| r.figure(Figure::PublisherLateP50))
        .filter(|s| s.n > 0)
        .map(|s| s.max)
        .fold(f64::NAN, f64::max);
    if late.is_finite() {
        doc.paragraph(format!(
            "The publisher sent events at most {late:.1} us after their scheduled time (p50, \
             worst row): that much of every latency is the harness's, not the transport's \
             (\"publisher late\" in the latency table)."
        ));
    }
}

/// How the figures were gathered: rounds, their order, and what a figure shows.
fn rounds_said(results: &Results) -> String {
    let repeats = results.scenario.repeat.max(1) as usize;
    let interleaved = match &results.rounds {
        Some(rounds) => format!(
            " in randomized interleaved rounds (each round every combination once, in an order \
             drawn from seed {}, recorded with the results), the floor row in every round",
            rounds.seed
        ),
        None => String::new(),
    };
    if repeats >= MIN_ROUNDS_FOR_INTERVAL {
        format!(
            "Every combination ran {repeats} times{interleaved}. Each figure is the median \
             across rounds with its bootstrap 95% confidence interval in square brackets; ratios \
             (÷ tcp) divide each round's figure by the floor row's of the same round. A figure \
             marked * has an interval wider than {:.0}% of its median: not to be trusted.",
            NOISY_WIDTH * 100.0
        )
    } else if repeats > 1 {
        format!(
            "Every combination ran {repeats} times{interleaved}. Each figure is the median with \
             the range across rounds (min–max) in brackets; no interval is computed below \
             {MIN_ROUNDS_FOR_INTERVAL} rounds. Differences within that range are noise."
        )
    } else {
        "Every combination ran once, so the spread is not measured here: differences of a few \
         percent may be noise. Run with `--repeat 5` (or more) for medians with confidence \
         intervals across randomized interleaved rounds."
            .into()
    }
}

/// What a reader should know before trusting the figures, one sentence each (the report's
/// Noise section, and `compare` for each of its runs).
pub fn warnings(results: &Results, rows: &[Row<'_>]) -> Vec<String> {
    let mut said = Vec::new();
    if let Some(drift) = floor_drift(results) {
        said.push(drift);
    }
    for row in rows {
        let steal = row
            .runs
            .iter()
            .filter_map(|r| r.steal_share)
            .fold(0.0, f64::max);
        if steal > STEAL_WARNING {
            said.push(format!(
                "{} with {} subscriber(s): the hypervisor took up to {:.1}% of the CPU time while \
                 it ran (steal): its figures may be a neighbour's as much as the transport's.",
                row.key.label(),
                thousands(row.key.subscribers as f64),
                steal * 100.0
            ));
        }
    }
    let noisy: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            METRICS
                .iter()
                .filter(|m| row.figure(m.figure).noisy())
                .map(move |m| format!("{} {}", row.key.label(), m.qualified_label()))
        })
        .collect();
    if !noisy.is_empty() {
        let more = match noisy.len().saturating_sub(NOISY_NAMED) {
            0 => String::new(),
            more => format!(" and {more} more"),
        };
        said.push(format!(
            "{} figure(s) have a confidence interval wider than {:.0}% of their median (marked \
             *): {}{more}.",
            noisy.len(),
            NOISY_WIDTH * 100.0,
            noisy[..noisy.len().min(NOISY_NAMED)].join("; ")
        ));
    }
    if results.machine.governor != "unknown" && results.machine.governor != "performance" {
        said.push(format!(
            "the CPU frequency governor was {}: the clock may have scaled during the run.",
            results.machine.governor
        ));
    }
    said
}

/// The floor's median round trip moved across rounds by more than one round's own spread
/// (p50 to p99): the machine changed under the run.
fn floor_drift(results: &Results) -> Option<String> {
    let floors = &results.rounds.as_ref()?.floors;
    if floors.len() < 2 {
        return None;
    }
    let p50s: Vec<f64> = floors.iter().map(|f| f.rtt_us.p50 as f64).collect();
    let spreads: Vec<f64> = floors
        .iter()
        .map(|f| f.rtt_us.p99.saturating_sub(f.rtt_us.p50) as f64)
        .collect();
    let drift = Spread::of(p50s);
    let own = Spread::of(spreads).median;
    (drift.max - drift.min > own).then(|| {
        format!(
            "the machine's floor drifted across rounds: its p50 round trip went from {} to {}, \
             more than one round's own spread (p50 to p99, {} at the median): the machine \
             changed under the run.",
            micros(drift.min as u64),
            micros(drift.max as u64),
            micros(own as u64)
        )
    })
}

/// Rows the load, not the server, limited.
fn load_bound(doc: &mut Document, rows: &[Row<'_>]) {
    for row in rows {
        let share = row.figure(Figure::LoadCpuShare);
        let bound = row.runs.iter().any(|r| match r.bound {
            Some(bound) => bound == Bound::LoadBound,
            None => r.load_cpu_share > SATURATED,
        });
        if bound {
            doc.push(Block::Warning(format!(
                "{} with {} subscriber(s) was load-bound: the load used up to {:.0}% of its CPUs \
                 while the server had room, so its rates and latencies understate the transport. \
                 Its capacity, server deliveries per core-second, still holds.",
                row.key.label(),
                thousands(row.key.subscribers as f64),
                share.max * 100.0
            )));
        }
    }
}
