//! The report's fault section, for runs with injected faults: per row, the delivery ledger
//! (lost, and what accounts for it), reconnects and abandoned deliveries, and what the faults
//! did to latency (baseline, worst during and after, recovery time); then one chart per row of
//! its worst latency per 100 ms with the fault windows shaded.

use plotters::chart::SeriesLabelPosition;

use super::charts::{figure, LATENCY};
use super::plots::{colour, line_chart, Axis, LineChart, Series};
use crate::document::{Block, Document};
use crate::metrics::faults::FaultWindow;
use crate::metrics::recorder::TIMELINE_BIN_MS;
use crate::results::figures::{Figure, Row, Unit};
use crate::results::format::{bytes, micros};
use crate::results::schema::TransportResult;

/// Most rows that get a chart of their own.
const CHARTS_KEPT: usize = 12;

/// The repeat a row's fault figures are read from: the first that passed, else the first.
pub(super) fn shown_run<'a>(row: &Row<'a>) -> &'a TransportResult {
    row.runs
        .iter()
        .copied()
        .find(|r| !r.failed)
        .unwrap_or(row.runs[0])
}

/// Whether a row went through injected faults or lost what its ledger accounts for.
fn faulted(row: &Row<'_>) -> bool {
    row.runs.iter().any(|r| {
        !r.fault_windows.is_empty() || r.gapped > 0 || r.cut_off > 0 || r.slow_consumer.is_some()
    })
}

/// The faults of a row in words: each fault's name, how often or how long.
fn describe(run: &TransportResult) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !run.fault_windows.is_empty() {
        parts.push(describe_windows(&run.fault_windows));
    }
    if let Some(slow) = &run.slow_consumer {
        parts.push(format!(
            "slow consumer at {}/s",
            bytes(slow.read_rate as f64)
        ));
    }
    parts.join(", ")
}

/// The windowed faults in words.
fn describe_windows(windows: &[FaultWindow]) -> String {
    let mut names: Vec<&str> = windows.iter().map(|w| w.fault.as_str()).collect();
    names.dedup();
    names
        .iter()
        .map(|name| {
            let of: Vec<&FaultWindow> = windows.iter().filter(|w| w.fault == *name).collect();
            let total_ms: f64 = of.iter().map(|w| w.end_ms - w.start_ms).sum();
            if total_ms >= 1000.0 {
                format!("{name} {:.1} s", total_ms / 1000.0)
            } else if total_ms > 0.0 {
                format!("{name} {total_ms:.0} ms")
            } else {
                format!("{name} ×{}", of.len())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds the fault section when some row has faults; nothing otherwise.
pub fn section(doc: &mut Document, rows: &[Row<'_>]) -> anyhow::Result<()> {
    let faulted: Vec<&Row<'_>> = rows.iter().filter(|r| faulted(r)).collect();
    if faulted.is_empty() {
        return Ok(());
    }
    doc.heading("faults", "Faults");
    doc.paragraph(
        "What the injected faults cost each row. Lost events are accounted for by gaps (a \
         resume from before the server's replay window, named by the server) and cut-offs (a \
         drop a subscriber told not to resume ended its stream); any other loss fails the row. \
         Drops not resumed: subscribers the server saw leave without the whole stream and not \
         come back within its reconnect grace. \
         Baseline: the median over 100 ms bins clear of faults of each bin's worst latency. \
         Recovery: from a fault's end to the end of the first 100 ms bin whose events all \
         arrived within the baseline (median and worst over the row's faults; an upper bound, \
         to one bin).",
    );
    let count = |row: &Row<'_>, figure: Figure| row.figure(figure).show(Unit::Count);
    let mut table_rows = Vec::new();
    for row in &faulted {
        let run = shown_run(row);
        let effect = run.fault_effect.as_ref();
        let us = |value: Option<u64>| value.map_or("–".to_string(), micros);
        table_rows.push(vec![
            row.key.label(),
            describe(run),
            count(row, Figure::Lost),
            count(row, Figure::Gapped),
            count(row, Figure::CutOff),
            count(row, Figure::Reconnects),
            run.unresumed_drops.to_string(),
            count(row, Figure::Retries),
            count(row, Figure::Abandoned),
            us(effect.map(|e| e.baseline_us)),
            // 0: no event arrived then (every figure of an event is at least 1 us).
            us(effect.map(|e| e.during_max_us).filter(|&v| v > 0)),
            us(effect.map(|e| e.after_max_us).filter(|&v| v > 0)),
            match effect.and_then(|e| e.recovery_ms) {
                Some(r) => format!("{:.0} ms ({:.0} ms)", r.median, r.max),
                None => "–".into(),
            },
            effect.map_or("–".into(), |e| e.unrecovered.to_string()),
        ]);
    }
    doc.push(Block::Table {
        head: [
            "transport",
            "faults",
            "lost",
            "lost to gaps",
            "cut off",
            "reconnects",
            "drops not resumed",
            "retries",
            "abandoned",
            "baseline",
            "worst during",
            "worst after",
            "recovery (worst)",
            "not recovered",
        ]
        .map(String::from)
        .to_vec(),
        emphasis: faulted.iter().map(|r| r.is_floor()).collect(),
        rows: table_rows,
    });
    let slow: Vec<String> = faulted
        .iter()
        .filter_map(|row| {
            let run = shown_run(row);
            let s = run.slow_consumer?;
            Some(format!(
                "{}: the slow consumer, reading at {}/s, received {} events ({} lost){}, its \
                 worst latency {}; the server's peak RSS was {}. The latency figures above are \
                 the other subscribers'.",
                row.key.label(),
                bytes(s.read_rate as f64),
                s.delivered,
                s.lost,
                if s.ended_early {
                    " and was cut off"
                } else {
                    ""
                },
                micros(s.worst_latency_us),
                run.server_peak_rss_bytes
                    .map_or("not measured".into(), |b| bytes(b as f64)),
            ))
        })
        .collect();
    for line in slow {
        doc.paragraph(line);
    }
    for (i, row) in faulted.iter().take(CHARTS_KEPT).enumerate() {
        let run = shown_run(row);
        let Some(chart) = timeline_chart(row, run) else {
            continue;
        };
        doc.push(figure(
            &format!("faults-{i}"),
            format!(
                "{}: worst latency per 100 ms of the stream, the faults shaded ({}).",
                row.key.label(),
                describe(run)
            ),
            line_chart(&chart)?,
        ));
    }
    Ok(())
}

/// A row's worst latency per 100 ms, with its fault windows shaded; `None` without a timeline.
fn timeline_chart(row: &Row<'_>, run: &TransportResult) -> Option<LineChart> {
    let timeline = run.latency_timeline.as_ref()?;
    let bin_s = TIMELINE_BIN_MS as f64 / 1000.0;
    let points = timeline
        .max_us
        .iter()
        .zip(&timeline.events)
        .enumerate()
        .filter(|(_, (_, &events))| events > 0)
        .map(|(bin, (&us, _))| (bin as f64 * bin_s, f64::from(us.max(1))))
        .collect();
    Some(LineChart {
        title: format!("{}: worst latency per 100 ms", row.key.label()),
        x: Axis {
            title: "second since the load started",
            log: false,
            label: |s| format!("{s:.1}"),
        },
        y: LATENCY,
        series: vec![Series {
            name: row.key.label(),
            colour: colour(row.key.transport),
            points,
        }],
        legend: SeriesLabelPosition::UpperRight,
        shaded: run
            .fault_windows
            .iter()
            .map(|w| (w.start_ms / 1000.0, w.end_ms / 1000.0))
            .collect(),
    })
}
