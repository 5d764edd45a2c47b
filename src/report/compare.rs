//! `pushbench compare A B`: the same figures of two runs side by side, each with its change,
//! flagged only when the change is larger than the noise: the two runs' ranges across repeats
//! do not overlap, and the change is at least a threshold. A single run has no measured range,
//! so its figures are shown but never flagged; a delivery that failed in B only always is.

use crate::document::{Block, Document};
use crate::event::Rate;
use crate::results::figures::{metric_named, rows, Better, Metric, Row, RowKey, Spread, METRICS};
use crate::results::Results;

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

/// Whether B differs from A by more than the noise, and which way.
fn judge(a: &Spread, b: &Spread, better: Better, threshold_percent: f64) -> Option<(f64, bool)> {
    let change = if a.median != 0.0 {
        (b.median - a.median) / a.median.abs() * 100.0
    } else if b.median != 0.0 {
        f64::INFINITY.copysign(b.median)
    } else {
        0.0
    };
    let apart = b.min > a.max || b.max < a.min;
    if !apart || change.abs() < threshold_percent {
        return None;
    }
    let worse = match better {
        Better::Lower => change > 0.0,
        Better::Higher => change < 0.0,
    };
    Some((change, worse))
}

/// Compares run B against run A.
pub fn compare(a: &Results, b: &Results, threshold_percent: f64) -> Comparison {
    let (rows_a, rows_b) = (rows(a), rows(b));
    let mut doc = Document {
        title: format!("pushbench compare: {} → {}", a.run_id, b.run_id),
        blocks: Vec::new(),
    };
    doc.paragraph(format!(
        "A is `{}` ({}), B is `{}` ({}). A change is flagged when the two runs' ranges across \
         repeats do not overlap and it is at least {threshold_percent}%.",
        a.run_id, a.machine.git_revision, b.run_id, b.machine.git_revision
    ));
    if (a.machine.cpu_model.as_str(), a.machine.cores)
        != (b.machine.cpu_model.as_str(), b.machine.cores)
    {
        doc.push(Block::Warning(format!(
            "the runs come from different machines ({}, {} CPUs against {}, {} CPUs): absolute \
             figures are not comparable.",
            a.machine.cpu_model, a.machine.cores, b.machine.cpu_model, b.machine.cores
        )));
    }
    if a.scenario.repeat <= 1 || b.scenario.repeat <= 1 {
        doc.push(Block::Warning(
            "at least one run has no repeats, so there is no measured spread to tell a change from \
             noise: figures are shown, but only failed deliveries are flagged. Run both with \
             `--repeat 3` (or more) for a judgement."
                .into(),
        ));
    }
    let mut flags = Vec::new();
    let mut table = Vec::new();
    let mut unmatched = Vec::new();
    for row_b in &rows_b {
        let Some(row_a) = rows_a.iter().find(|r| r.same_as(row_b)) else {
            unmatched.push(format!("{} only in B", describe(&row_b.key, row_b.rate)));
            continue;
        };
        for (i, metric) in METRICS.iter().enumerate() {
            let (fa, fb) = (row_a.figures[i], row_b.figures[i]);
            // One run on either side shows no spread: a difference cannot be told from noise.
            let judged = (fa.n > 1 && fb.n > 1)
                .then(|| judge(&fa, &fb, metric.better, threshold_percent))
                .flatten();
            if let Some((change, worse)) = judged {
                flags.push(Flag {
                    key: row_b.key.clone(),
                    rate: row_b.rate,
                    metric: metric.key,
                    change_percent: change,
                    worse,
                });
            }
            table.push(vec![
                row_b.key.label(),
                row_b.key.subscribers.to_string(),
                metric.qualified_label(),
                fa.show(metric.unit),
                fb.show(metric.unit),
                change_text(&fa, &fb),
                match judged {
                    Some((_, true)) => "**worse**".into(),
                    Some((_, false)) => "**better**".into(),
                    None => String::new(),
                },
            ]);
        }
        delivery_flags(row_a, row_b, &mut flags);
    }
    for row_a in &rows_a {
        if !rows_b.iter().any(|r| r.same_as(row_a)) {
            unmatched.push(format!("{} only in A", describe(&row_a.key, row_a.rate)));
        }
    }
    doc.heading("flagged", "Changes beyond the noise");
    if flags.is_empty() {
        doc.paragraph(if a.scenario.repeat > 1 && b.scenario.repeat > 1 {
            "None: every change is within the noise."
        } else {
            "None flagged: without repeats there is no noise to judge against."
        });
    } else {
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
    if !unmatched.is_empty() {
        doc.paragraph(format!("Not compared: {}.", unmatched.join("; ")));
    }
    doc.heading("figures", "Every figure");
    doc.push(Block::Table {
        head: ["transport", "subs", "figure", "A", "B", "change", "flag"]
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

fn change_text(a: &Spread, b: &Spread) -> String {
    if a.median == b.median {
        "0%".into()
    } else if a.median == 0.0 {
        "new".into()
    } else {
        format!("{:+.1}%", (b.median - a.median) / a.median.abs() * 100.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(values: &[f64]) -> Spread {
        Spread::of(values.to_vec())
    }

    /// Overlapping ranges are noise; apart and large enough is a change, with its direction.
    #[test]
    fn judging() {
        let a = spread(&[100.0, 110.0, 120.0]);
        assert_eq!(
            judge(&a, &spread(&[115.0, 125.0, 130.0]), Better::Lower, 5.0),
            None
        );
        let (change, worse) =
            judge(&a, &spread(&[200.0, 210.0, 220.0]), Better::Lower, 5.0).unwrap();
        assert!(worse && (change - 90.9).abs() < 0.1);
        let (_, worse) = judge(&a, &spread(&[200.0, 210.0, 220.0]), Better::Higher, 5.0).unwrap();
        assert!(!worse);
        // Apart but under the threshold: not flagged.
        assert_eq!(
            judge(&spread(&[100.0]), &spread(&[102.0]), Better::Lower, 5.0),
            None
        );
    }
}
