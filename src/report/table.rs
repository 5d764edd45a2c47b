//! The aligned terminal table printed at the end of a run: one row per measured combination.

use std::fmt::Write as _;

use super::results::{Bound, Results, TransportResult, SATURATED};

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
    ("transport", Align::Left, |r| r.transport.clone()),
    ("subs", Align::Left, |r| r.subscribers.to_string()),
    ("payload", Align::Left, |r| r.payload.clone()),
    ("offered/s", Align::Right, |r| r.offered_rate.clone()),
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
        micros(r.connection.handshake_us.p50)
    }),
    ("B/event", Align::Right, |r| {
        format!("{:.0}", r.connection.wire_bytes_per_event)
    }),
    ("srv us/dl", Align::Right, |r| {
        format!("{:.3}", r.connection.server_cpu_us_per_delivery)
    }),
    ("load us/dl", Align::Right, |r| {
        r.connection
            .load_cpu_us_per_delivery
            .map_or("—".into(), |us| format!("{us:.3}"))
    }),
    ("srv RSS/conn", Align::Right, |r| {
        bytes(r.connection.server_rss_per_conn_bytes)
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
    let rtt = &results.calibration.rtt_us;
    let _ = writeln!(
        out,
        "machine floor: TCP ping-pong between load and server processes p50 {} p99 {} round trip",
        micros(rtt.p50),
        micros(rtt.p99)
    );
    for max in &results.max_rates {
        let _ = writeln!(
            out,
            "max rate: {} with {} subscribers held {} ev/s offered (p99 {}); next level: {}",
            max.transport,
            max.subscribers,
            thousands(max.events_per_s),
            micros(max.p99_us),
            max.stopped_because
        );
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
                run.transport,
                run.subscribers,
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

/// Microseconds shown in the most readable unit; at the histograms' ceiling, as a bound.
pub fn micros(us: u64) -> String {
    match us {
        // Latencies are clamped to the histogram's range: the true value is at least this.
        _ if us >= crate::metrics::latency::MAX_US => {
            format!("≥{}s", crate::metrics::latency::MAX_US / 1_000_000)
        }
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// A count with thousands separators.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in the most readable unit.
pub fn bytes(value: f64) -> String {
    match value {
        v if v < 1e3 => format!("{v:.0}B"),
        v if v < 1e6 => format!("{:.1}KB", v / 1e3),
        v => format!("{:.1}MB", v / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units and separators.
    #[test]
    fn formats() {
        assert_eq!(micros(75), "75us");
        assert_eq!(micros(1_500), "1.50ms");
        assert_eq!(micros(60_030_000), "≥60s");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(bytes(6400.0), "6.4KB");
    }
}
