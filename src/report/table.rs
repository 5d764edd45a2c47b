//! The aligned terminal table printed at the end of a run: one row per measured combination.

use std::fmt::Write as _;

use crate::results::format::{bytes, micros, thousands};
use crate::results::{Bound, Results, TransportResult, SATURATED};

/// How a row fills one cell.
type Cell = fn(&TransportResult) -> String;

/// Which side a column's cells line up on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// Column headings, alignment, and how each row fills them.
const COLUMNS: [(&str, Align, Cell); 18] = [
    ("transport", Align::Left, |r| r.key.label()),
    ("subs", Align::Left, |r| r.key.subscribers.to_string()),
    ("payload", Align::Left, |r| r.key.payload.to_string()),
    ("offered/s", Align::Right, |r| r.offered_rate.to_string()),
    ("delivered/s", Align::Right, |r| {
        thousands(r.throughput.events_per_s)
    }),
    ("lat p50", Align::Right, |r| micros(r.latency_us.p50)),
    ("p99", Align::Right, |r| micros(r.latency_us.p99)),
    ("p99.9", Align::Right, |r| micros(r.latency_us.p999)),
    ("svc p50", Align::Right, |r| micros(r.service_time_us.p50)),
    ("last p99", Align::Right, |r| {
        r.last_receiver_us.map_or("—".into(), |p| micros(p.p99))
    }),
    ("pub late", Align::Right, |r| {
        r.publisher_lateness_us
            .map_or("—".into(), |l| format!("{:.1}us", l.p50_us))
    }),
    ("connect", Align::Right, |r| {
        let connect = micros(r.connection.handshake_us.p50);
        match r.connection.tls_handshake_us {
            Some(tls) => format!("{connect} (tls {})", micros(tls.p50)),
            None => connect,
        }
    }),
    ("B/event", Align::Right, |r| {
        format!("{:.0}", r.connection.wire_bytes_per_event)
    }),
    ("srv us/dl", Align::Right, |r| {
        r.connection
            .server_cpu_us_per_delivery
            .map_or("unmeasured".into(), |us| format!("{us:.3}"))
    }),
    ("load us/dl", Align::Right, |r| {
        r.connection
            .load_cpu_us_per_delivery
            .map_or("—".into(), |us| format!("{us:.3}"))
    }),
    ("srv RSS/conn", Align::Right, |r| {
        r.connection
            .server_rss_per_conn_bytes
            .map_or("unmeasured".into(), bytes)
    }),
    ("bound", Align::Left, |r| {
        r.bound.map_or("—", |b| b.label()).to_string()
    }),
    ("check", Align::Left, |r| check(r)),
];

/// Renders the results as an aligned table, with the calibration line and any warnings.
pub fn render(results: &Results) -> String {
    let rows: Vec<Vec<String>> = results
        .runs
        .iter()
        .map(|r| COLUMNS.iter().map(|(_, _, cell)| cell(r)).collect())
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (head, _, _))| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([head.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .zip(COLUMNS.iter().map(|(_, align, _)| *align))
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
        COLUMNS.iter().map(|(h, _, _)| h.to_string()).collect(),
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
