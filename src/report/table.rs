//! The aligned terminal table printed at the end of a run: one row per measured combination,
//! its figures read from the catalogue like every other output.

use std::fmt::Write as _;

use crate::results::figures::Figure;
use crate::results::format::{micros, thousands};
use crate::results::{Bound, Results, TransportResult, SATURATED};

/// How a row fills one of the cells that are not figures.
type Cell = fn(&TransportResult) -> String;

/// Which side a column's cells line up on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// One column: what tells the row apart, or a figure of the catalogue (shown in its unit,
/// as every other output shows it).
enum Column {
    Row(&'static str, Cell),
    Figure(&'static str, Figure),
}

impl Column {
    fn heading(&self) -> &'static str {
        match self {
            Column::Row(heading, _) | Column::Figure(heading, _) => heading,
        }
    }

    fn align(&self) -> Align {
        match self {
            Column::Row(..) => Align::Left,
            Column::Figure(..) => Align::Right,
        }
    }

    fn cell(&self, run: &TransportResult) -> String {
        match self {
            Column::Row(_, cell) => cell(run),
            Column::Figure(_, figure) => {
                let metric = figure.metric();
                let value = (metric.value)(run);
                // A figure the run could not measure (a server outside the process, no TLS).
                if value.is_nan() {
                    "—".into()
                } else {
                    metric.unit.show(value)
                }
            }
        }
    }
}

/// The columns: the row's key, then its figures from the catalogue, then what limited it and
/// whether it delivered.
const COLUMNS: [Column; 19] = [
    Column::Row("transport", |r| r.key.label()),
    Column::Row("subs", |r| r.key.subscribers.to_string()),
    Column::Row("payload", |r| r.key.payload.to_string()),
    Column::Row("offered/s", |r| r.offered_rate.to_string()),
    Column::Figure("delivered/s", Figure::EventsPerS),
    Column::Figure("lat p50", Figure::LatencyP50),
    Column::Figure("p99", Figure::LatencyP99),
    Column::Figure("p99.9", Figure::LatencyP999),
    Column::Figure("svc p50", Figure::ServiceP50),
    Column::Figure("last p99", Figure::LastReceiverP99),
    Column::Figure("pub late", Figure::PublisherLateP50),
    Column::Figure("connect", Figure::HandshakeP50),
    Column::Figure("tls", Figure::TlsHandshakeP50),
    Column::Figure("B/event", Figure::WireBytesPerEvent),
    Column::Figure("srv us/dl", Figure::ServerCpuUsPerDelivery),
    Column::Figure("load us/dl", Figure::LoadCpuUsPerDelivery),
    Column::Figure("srv RSS/conn", Figure::ServerRssPerConn),
    Column::Row("bound", |r| r.bound.map_or("—", |b| b.label()).to_string()),
    Column::Row("check", check),
];

/// Renders the results as an aligned table, with the calibration line and any warnings.
pub fn render(results: &Results) -> String {
    let rows: Vec<Vec<String>> = results
        .runs
        .iter()
        .map(|r| COLUMNS.iter().map(|column| column.cell(r)).collect())
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, column)| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([column.heading().len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(COLUMNS.iter().map(Column::align))
            .map(|((cell, &w), align)| {
                // `{:w$}` pads by chars; "—" and "≥" are one char of several bytes.
                let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
                match align {
                    Align::Left => format!("{cell}{pad}"),
                    Align::Right => format!("{pad}{cell}"),
                }
            })
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(
        COLUMNS.iter().map(|c| c.heading().to_string()).collect(),
        &mut out,
    );
    for row in rows {
        line(row, &mut out);
    }
    let _ = writeln!(
        out,
        "machine floor: {}",
        super::content::machine_floor(results)
    );
    for note in super::content::clock_notes(results) {
        let _ = writeln!(out, "clock: {note}");
    }
    for max in &results.max_rates {
        let _ = writeln!(
            out,
            "max rate: {} with {} subscribers held {} ev/s offered (p99 {}); next level: {}",
            max.key.label(),
            max.key.subscribers,
            thousands(max.events_per_s),
            micros(max.p99_us),
            max.stopped_because
        );
    }
    for run in &results.runs {
        if let Some(note) = run.not_applied_note() {
            let _ = writeln!(
                out,
                "note: {} with {} subscribers {note}",
                run.key.label(),
                run.key.subscribers
            );
        }
    }
    for run in &results.runs {
        if run.bound == Some(Bound::LoadBound)
            || (run.bound.is_none() && run.load_cpu_share >= SATURATED)
        {
            let _ = writeln!(
                out,
                "warning: {} with {} subscribers: the load used {:.0}% of its CPUs, so the load \
                 generator limited this row; its capacity (server deliveries per core-second, \
                 1 / srv us/dl) still holds",
                run.key.label(),
                run.key.subscribers,
                run.load_cpu_share * 100.0
            );
        }
    }
    out
}

fn check(r: &TransportResult) -> String {
    match (&r.error, r.failed) {
        (_, false) => "ok".into(),
        (Some(error), true) => format!("FAILED: {error}"),
        (None, true) => format!(
            "FAILED: lost {} dup {} reordered {}",
            r.lost, r.duplicated, r.reordered
        ),
    }
}
