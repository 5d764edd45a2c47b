//! The aligned terminal table printed at the end of a run: one row per measured combination,
//! its rounds folded (median, with the interval or range across rounds), its figures read from
//! the catalogue like every other output.

use std::fmt::Write as _;

use crate::results::figures::{rows, Figure, Row};
use crate::results::format::{micros, thousands};
use crate::results::{Bound, Results, SATURATED};

/// How a row fills one of the cells that are not figures.
type Cell = fn(&Row<'_>) -> String;

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

    fn cell(&self, row: &Row<'_>) -> String {
        match self {
            Column::Row(_, cell) => cell(row),
            // "—" for a figure no round could measure (a server outside the process, no TLS).
            Column::Figure(_, figure) => row.figure(*figure).show(figure.metric().unit),
        }
    }
}

/// The columns: the row's key, then its figures from the catalogue, then what limited it and
/// whether it delivered.
const COLUMNS: [Column; 19] = [
    Column::Row("transport", |r| r.key.label()),
    Column::Row("subs", |r| r.key.subscribers.to_string()),
    Column::Row("payload", |r| r.key.payload.to_string()),
    Column::Row("offered/s", |r| r.rate.to_string()),
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
    Column::Row("bound", bound),
    Column::Row("check", check),
];

/// What limited the row's rounds, each once.
fn bound(row: &Row<'_>) -> String {
    let mut bounds: Vec<&str> = Vec::new();
    for run in &row.runs {
        let label = run.bound.map_or("—", |b| b.label());
        if !bounds.contains(&label) {
            bounds.push(label);
        }
    }
    bounds.join("/")
}

/// Renders the results as an aligned table, with the calibration line and any warnings.
pub fn render(results: &Results) -> String {
    let folded = rows(results);
    let rows: Vec<Vec<String>> = folded
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
        let held = match max.subscribers_held {
            Some(n) => format!(
                "{} subscribers at {} ev/s",
                thousands(n as f64),
                max.events_per_s
            ),
            None => format!(
                "{} ev/s offered to {} subscribers",
                thousands(max.events_per_s),
                max.key.subscribers
            ),
        };
        let per_core = match (max.deliveries_per_s, max.server_cores) {
            (Some(d), Some(cores)) => {
                format!(
                    ", {} deliveries/s per core of {cores}",
                    thousands(d / cores)
                )
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "knee: {} held {held} (p99 {}{per_core}); next level: {}",
            max.key.label(),
            micros(max.p99_us),
            max.stopped_because
        );
        if let Some(note) = &max.note {
            let _ = writeln!(out, "note: {} {note}", max.key.label());
        }
    }
    // Once per row and subscriber count: a capacity search's levels are rows of their own, and
    // each would otherwise repeat what its series ran without.
    let mut notes: Vec<String> = Vec::new();
    for row in &folded {
        if let Some(note) = row.runs.first().and_then(|r| r.not_applied_note()) {
            let note = format!(
                "note: {} with {} subscribers {note}",
                row.key.label(),
                row.key.subscribers
            );
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    for row in &folded {
        let load_bound = |run: &&&crate::results::TransportResult| {
            run.bound == Some(Bound::LoadBound)
                || (run.bound.is_none() && run.load_cpu_share >= SATURATED)
        };
        if let Some(run) = row.runs.iter().find(load_bound) {
            let _ = writeln!(
                out,
                "warning: {} with {} subscribers: the load used {:.0}% of its CPUs, so the load \
                 generator limited this row; its capacity (server deliveries per core-second, \
                 1 / srv us/dl) still holds",
                row.key.label(),
                row.key.subscribers,
                run.load_cpu_share * 100.0
            );
        }
    }
    out
}

/// `ok`, or how many rounds failed and why the first did.
fn check(row: &Row<'_>) -> String {
    let Some(r) = row.runs.iter().find(|r| r.failed) else {
        return "ok".into();
    };
    let rounds = if row.runs.len() > 1 {
        format!(" {} of {} rounds", row.failed, row.runs.len())
    } else {
        String::new()
    };
    match &r.error {
        Some(error) => format!("FAILED{rounds}: {error}"),
        None => format!(
            "FAILED{rounds}: lost {} dup {} reordered {}",
            r.lost, r.duplicated, r.reordered
        ),
    }
}
