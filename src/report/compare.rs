//! `pushbench compare A B`: the same figures of two runs side by side, each with its change,
//! judged as a test rather than a glance. Each figure's values over the rounds of A and of B
//! (for latency, deliveries per second and server CPU, the ratio to the floor row of the same
//! round) go through a two-sample bootstrap; a change is flagged when its p-value survives the
//! Benjamini–Hochberg procedure across every figure compared (false discovery rate 5%) and it
//! is at least the threshold. Runs of different CPUs compare the ratios alone. A run without
//! rounds has nothing to judge noise by: its figures are shown, never flagged; a delivery that
//! failed in B only always is.

use crate::document::{Block, Document};
use crate::event::Rate;
use crate::results::figures::{
    metric_named, rows, Better, Figure, Metric, Row, RowKey, Spread, METRICS,
};
use crate::results::pairing::{self, floor_for, PAIRED};
use crate::results::stats::{self, Change};
use crate::results::Results;

/// The figures a change is judged on: the paired ratios and the costs a reader compares
/// transports by. Every figure is shown; judging all forty of them would make the false
/// discovery rate's bar too high for any real change to clear.
const JUDGED: [Figure; 9] = [
    Figure::LatencyP50,
    Figure::LatencyP99,
    Figure::LatencyP999,
    Figure::EventsPerS,
    Figure::ServerCpuUsPerDelivery,
    Figure::LoadCpuUsPerDelivery,
    Figure::HandshakeP50,
    Figure::ServerRssPerConn,
    Figure::WireBytesPerEvent,
];

/// A change beyond the noise.
#[derive(Clone, Debug, PartialEq)]
pub struct Flag {
    /// Which combination.
    pub key: RowKey,
    /// At which offered rate.
    pub rate: Rate,
    /// Which figure.
    pub metric: &'static str,
    /// Change relative to A, in percent.
    pub change_percent: f64,
    /// Whether it got worse.
    pub worse: bool,
}

/// The comparison: a document to print or write, and the flagged changes.
#[derive(Debug)]
pub struct Comparison {
    /// Text for the terminal and `compare.md`.
    pub document: Document,
    /// Changes beyond the noise.
    pub flags: Vec<Flag>,
}

impl Comparison {
    /// Changes for the worse.
    pub fn regressions(&self) -> impl Iterator<Item = &Flag> {
        self.flags.iter().filter(|f| f.worse)
    }
}

/// One figure of one row in both runs, as compared.
struct Compared<'m> {
    key: RowKey,
    rate: Rate,
    metric: &'m Metric,
    /// Whether the values are ratios to the floor.
    ratio: bool,
    a: Spread,
    b: Spread,
    /// The bootstrap's verdict, where both runs had rounds enough.
    change: Option<Change>,
}

/// Compares run B against run A.
pub fn compare(a: &Results, b: &Results, threshold_percent: f64) -> Comparison {
    let (rows_a, rows_b) = (rows(a), rows(b));
    let mut doc = Document {
        title: format!("pushbench compare: {} → {}", a.run_id, b.run_id),
        blocks: Vec::new(),
    };
    doc.paragraph(format!(
        "A is `{}` ({}), B is `{}` ({}). Each figure's rounds in A and B go through a two-sample \
         bootstrap (latency, deliveries per second and server CPU as ratios to the floor row of \
         the same round); a change is flagged when it survives the Benjamini–Hochberg procedure \
         at a {:.0}% false discovery rate over every figure judged (latency p50, p99 and p99.9, \
         deliveries per second, server and load CPU per delivery, connecting, server memory per \
         connection, wire bytes; the others are shown) and is at least {threshold_percent}%.",
        a.run_id,
        a.machine.git_revision,
        b.run_id,
        b.machine.git_revision,
        (1.0 - stats::CONFIDENCE) * 100.0
    ));
    let same_cpu = (&a.machine.cpu_model, &a.machine.cpu_id, a.machine.cores)
        == (&b.machine.cpu_model, &b.machine.cpu_id, b.machine.cores);
    if !same_cpu {
        doc.push(Block::Warning(format!(
            "the runs come from different CPUs ({}, {} {} CPUs, against {}, {} {} CPUs): \
             absolute figures are not comparable, and only the ratios to the floor are judged.",
            a.machine.cpu_model,
            a.machine.cpu_id,
            a.machine.cores,
            b.machine.cpu_model,
            b.machine.cpu_id,
            b.machine.cores
        )));
    }
    if a.scenario.repeat <= 1 || b.scenario.repeat <= 1 {
        doc.push(Block::Warning(
            "at least one run has no rounds, so there is no measured spread to tell a change from \
             noise: figures are shown, but only failed deliveries are flagged. Run both with \
             `--repeat 5` (or more) for a judgement."
                .into(),
        ));
    }
    for (run, rows) in [(a, &rows_a), (b, &rows_b)] {
        for warning in super::noise::warnings(run, rows) {
            doc.push(Block::Warning(format!("`{}`: {warning}", run.run_id)));
        }
    }
    let mut compared = Vec::new();
    let mut unmatched = Vec::new();
    let mut flags = Vec::new();
    for row_b in &rows_b {
        let Some(row_a) = rows_a.iter().find(|r| r.same_as(row_b)) else {
            unmatched.push(format!("{} only in B", describe(&row_b.key, row_b.rate)));
            continue;
        };
        for metric in METRICS {
            let paired = PAIRED.contains(&metric.figure);
            let mut figure = match figure_of(metric, paired, (row_a, &rows_a), (row_b, &rows_b)) {
                Some(figure) => figure,
                None if same_cpu => absolute(metric, row_a, row_b),
                None => continue,
            };
            if !JUDGED.contains(&metric.figure) {
                figure.change = None;
            }
            // A figure neither run measured (round trips of a one-way run) is left out.
            if figure.a.n > 0 || figure.b.n > 0 {
                compared.push(figure);
            }
        }
        delivery_flags(row_a, row_b, &mut flags);
    }
    for row_a in &rows_a {
        if !rows_b.iter().any(|r| r.same_as(row_a)) {
            unmatched.push(format!("{} only in A", describe(&row_a.key, row_a.rate)));
        }
    }
    // Every figure judged at once: the false discovery rate is over all of them.
    let judged: Vec<usize> = (0..compared.len())
        .filter(|&i| compared[i].change.is_some())
        .collect();
    let p_values: Vec<f64> = judged
        .iter()
        .filter_map(|&i| compared[i].change.map(|c| c.p))
        .collect();
    let found = stats::discoveries(&p_values, 1.0 - stats::CONFIDENCE);
    let mut verdicts = vec![None; compared.len()];
    for (&i, discovered) in judged.iter().zip(found) {
        let figure = &compared[i];
        let Some(change) = figure.change else {
            continue;
        };
        if !discovered || change.relative.abs() * 100.0 < threshold_percent {
            continue;
        }
        let worse = match figure.metric.better {
            Better::Lower => change.relative > 0.0,
            Better::Higher => change.relative < 0.0,
        };
        verdicts[i] = Some(worse);
        flags.push(Flag {
            key: figure.key.clone(),
            rate: figure.rate,
            metric: figure.metric.key,
            change_percent: change.relative * 100.0,
            worse,
        });
    }
    flagged_section(&mut doc, &flags, a, b);
    if !unmatched.is_empty() {
        doc.paragraph(format!("Not compared: {}.", unmatched.join("; ")));
    }
    doc.heading("figures", "Every figure");
    let table = compared
        .iter()
        .zip(&verdicts)
        .map(|(figure, verdict)| {
            let unit = if figure.ratio {
                crate::results::figures::Unit::Times
            } else {
                figure.metric.unit
            };
            let name = if figure.ratio {
                format!("{} ÷ floor", figure.metric.qualified_label())
            } else {
                figure.metric.qualified_label()
            };
            vec![
                figure.key.label(),
                figure.key.subscribers.to_string(),
                name,
                figure.a.show(unit),
                figure.b.show(unit),
                change_text(figure),
                match verdict {
                    Some(true) => "**worse**".into(),
                    Some(false) => "**better**".into(),
                    None => String::new(),
                },
            ]
        })
        .collect::<Vec<_>>();
    doc.push(Block::Table {
        head: [
            "transport",
            "subs",
            "figure",
            "A",
            "B",
            "change [95%]",
            "flag",
        ]
        .map(String::from)
        .to_vec(),
        emphasis: vec![false; table.len()],
        rows: table,
    });
    Comparison {
        document: doc,
        flags,
    }
}

/// A paired figure as ratios to each run's floor row, round by round; `None` when it is not
/// paired, or either run has no floor row beside it.
fn figure_of<'m>(
    metric: &'m Metric,
    paired: bool,
    (row_a, rows_a): (&Row<'_>, &[Row<'_>]),
    (row_b, rows_b): (&Row<'_>, &[Row<'_>]),
) -> Option<Compared<'m>> {
    if !paired {
        return None;
    }
    let a = pairing::ratios(row_a, floor_for(row_a, rows_a)?, metric.figure);
    let b = pairing::ratios(row_b, floor_for(row_b, rows_b)?, metric.figure);
    Some(Compared {
        key: row_b.key.clone(),
        rate: row_b.rate,
        metric,
        ratio: true,
        change: stats::change(&a, &b),
        a: Spread::of(a),
        b: Spread::of(b),
    })
}

/// A figure as it was measured, round by round (the rounds that passed).
fn absolute<'m>(metric: &'m Metric, row_a: &Row<'_>, row_b: &Row<'_>) -> Compared<'m> {
    let values = |row: &Row<'_>| -> Vec<f64> {
        row.runs
            .iter()
            .filter(|r| !r.failed)
            .map(|r| (metric.value)(r))
            .collect()
    };
    let (a, b) = (values(row_a), values(row_b));
    Compared {
        key: row_b.key.clone(),
        rate: row_b.rate,
        metric,
        ratio: false,
        change: stats::change(&a, &b),
        a: Spread::of(a),
        b: Spread::of(b),
    }
}

/// The flagged changes, or why there are none.
fn flagged_section(doc: &mut Document, flags: &[Flag], a: &Results, b: &Results) {
    doc.heading("flagged", "Changes beyond the noise");
    if flags.is_empty() {
        doc.paragraph(if a.scenario.repeat > 1 && b.scenario.repeat > 1 {
            "None: no change survives the test."
        } else {
            "None flagged: without rounds there is no noise to judge against."
        });
        return;
    }
    doc.push(Block::List(
        flags
            .iter()
            .map(|f| {
                let label = metric_named(f.metric)
                    .map(Metric::qualified_label)
                    .unwrap_or_else(|| f.metric.to_string());
                format!(
                    "**{}** {}: {label} {:+.1}%",
                    if f.worse { "worse" } else { "better" },
                    describe(&f.key, f.rate),
                    f.change_percent
                )
            })
            .collect(),
    ));
}

/// A run that passed in A and failed in B is a regression whatever the figures say.
fn delivery_flags(a: &Row<'_>, b: &Row<'_>, flags: &mut Vec<Flag>) {
    if a.ok() && !b.ok() {
        flags.push(Flag {
            key: b.key.clone(),
            rate: b.rate,
            metric: "digest",
            change_percent: 100.0 * b.failed as f64 / b.runs.len().max(1) as f64,
            worse: true,
        });
    }
}

/// The change in medians, with its bootstrap interval where there is one.
fn change_text(figure: &Compared<'_>) -> String {
    let (a, b) = (figure.a.median, figure.b.median);
    let point = if a == b {
        "0%".into()
    } else if a == 0.0 {
        "new".into()
    } else {
        format!("{:+.1}%", (b - a) / a.abs() * 100.0)
    };
    match figure.change {
        Some(change) => format!(
            "{point} [{:+.1}%…{:+.1}%]",
            change.interval.0 * 100.0,
            change.interval.1 * 100.0
        ),
        None => point,
    }
}

fn describe(key: &RowKey, rate: Rate) -> String {
    format!(
        "{} ({} subs, {} B, {rate} ev/s)",
        key.label(),
        key.subscribers,
        key.payload,
    )
}
