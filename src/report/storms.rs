//! The report's storm section, for runs with reconnect storms: per row, how long until half,
//! 99% and all of the subscribers were back and caught up, how long reconnecting took while
//! everyone did, the attempts that failed and the fastest the server took them back; then the
//! reconnection curve of every row, one chart per storm kind.

use plotters::chart::SeriesLabelPosition;

use super::charts::figure;
use super::faults::shown_run;
use super::plots::{colour, line_chart, Axis, LineChart, Series};
use crate::document::{Block, Document};
use crate::metrics::storm::{StormEffect, Wave};
use crate::results::figures::Row;
use crate::results::format::{bytes, micros};

/// A wave's three moments, `–` for a share that never came back.
fn wave(wave: &Wave) -> [String; 3] {
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |ms| format!("{ms:.0} ms"));
    [ms(wave.p50_ms), ms(wave.p99_ms), ms(wave.all_ms)]
}

/// The storm in words: its kind and, for a blackhole, how long the path was silent.
fn describe(storm: &StormEffect) -> String {
    if storm.length_ms > 0.0 {
        format!("{}, {:.1} s silent", storm.kind, storm.length_ms / 1000.0)
    } else {
        storm.kind.clone()
    }
}

/// Adds the storm section when some row went through a storm; nothing otherwise.
pub fn section(doc: &mut Document, rows: &[Row<'_>]) -> anyhow::Result<()> {
    let stormed: Vec<(&Row<'_>, &StormEffect)> = rows
        .iter()
        .filter_map(|row| Some((row, shown_run(row).storm.as_ref()?)))
        .collect();
    if stormed.is_empty() {
        return Ok(());
    }
    doc.heading("storms", "Reconnect storms");
    doc.paragraph(
        "Every subscriber lost its connection at once (close: the server cut them all, as a \
         deploy does; blackhole: the path passed nothing for a while, then every connection \
         through it was closed) and came back. Times count from the storm's end (the cut, or \
         the path's return). Back: subscribed again; caught up: the first event scheduled after \
         its return received, so the backlog is behind it. Reconnect: from the attempt that got \
         through to being subscribed. Failed: attempts refused, closed or timed out before it. \
         Peak: the most subscribers back in any 100 ms, per second (the server's connect \
         capacity, unless the clients' spread of backoffs or the load bounded it). Server peak: \
         its busiest 100 ms from the storm's start until the last subscriber was back, as a \
         share of its CPUs, and its largest resident memory then.",
    );
    let rows_of_table = stormed
        .iter()
        .map(|(row, storm)| {
            let [b50, b99, b100] = wave(&storm.back);
            let [c50, c99, c100] = wave(&storm.caught_up);
            vec![
                row.key.label(),
                describe(storm),
                storm.subscribers.to_string(),
                b50,
                b99,
                b100,
                c50,
                c99,
                c100,
                storm.not_back.to_string(),
                format!(
                    "{} / {}",
                    micros(storm.reconnect_us.0),
                    micros(storm.reconnect_us.1)
                ),
                storm.failed_attempts.to_string(),
                format!("{:.0}/s", storm.peak_reconnects_per_s),
                match (storm.server_peak_cpu_share, storm.server_peak_rss_bytes) {
                    (Some(cpu), Some(rss)) => {
                        format!("{:.0}% / {}", cpu * 100.0, bytes(rss as f64))
                    }
                    _ => "not measured".into(),
                },
            ]
        })
        .collect();
    doc.push(Block::Table {
        head: [
            "transport",
            "storm",
            "subscribers",
            "back 50%",
            "back 99%",
            "back all",
            "caught up 50%",
            "caught up 99%",
            "caught up all",
            "never back",
            "reconnect p50 / p99",
            "failed attempts",
            "peak back",
            "server peak CPU / RSS",
        ]
        .map(String::from)
        .to_vec(),
        emphasis: stormed.iter().map(|(r, _)| r.is_floor()).collect(),
        rows: rows_of_table,
    });
    let mut kinds: Vec<&str> = stormed.iter().map(|(_, s)| s.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let chart = curve_chart(kind, &stormed);
        doc.push(figure(
            &format!("storm-{kind}"),
            format!(
                "Share of subscribers back after a {kind} storm, by milliseconds since it ended, \
                 one line per row."
            ),
            line_chart(&chart)?,
        ));
    }
    Ok(())
}

/// The reconnection curves of the rows whose storm was of `kind`.
fn curve_chart(kind: &str, stormed: &[(&Row<'_>, &StormEffect)]) -> LineChart {
    let series = stormed
        .iter()
        .filter(|(_, storm)| storm.kind == kind)
        .map(|(row, storm)| Series {
            name: row.key.label(),
            colour: colour(row.key.transport),
            points: storm
                .curve
                .iter()
                .map(|point| (point.ms, point.back * 100.0))
                .collect(),
        })
        .collect();
    LineChart {
        title: format!("Back after a {kind} storm"),
        x: Axis {
            title: "ms since the storm ended",
            log: false,
            label: |ms| format!("{ms:.0}"),
        },
        y: Axis {
            title: "% of subscribers back",
            log: false,
            label: |share| format!("{share:.0}%"),
        },
        series,
        legend: SeriesLabelPosition::LowerRight,
        shaded: Vec::new(),
    }
}
