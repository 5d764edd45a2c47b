//! The report's resources-over-time section, for soaks (runs that sampled the server through
//! each stream): per row, how resident memory, open descriptors and CPU per delivery moved
//! after the first interval, each slope stated and a leak called by its rule; then each of the
//! three over time, one line per row.

use plotters::chart::SeriesLabelPosition;

use super::charts::figure;
use super::faults::shown_run;
use super::plots::{colour, line_chart, Axis, LineChart, Series};
use crate::document::{Block, Document};
use crate::metrics::resources::{ResourceSample, Trend, LEAK_SHARE_PER_10_MINUTES};
use crate::results::figures::Row;
use crate::results::format::bytes;

/// One figure of a sample, for a chart of it.
type Reading = fn(&ResourceSample) -> Option<f64>;

/// The three charts: id, title, axis and what each reads of a sample.
const CHARTS: [(&str, &str, Axis, Reading); 3] = [
    (
        "resources-rss",
        "Server resident memory",
        Axis {
            title: "MiB",
            log: false,
            label: |v| format!("{v:.0}"),
        },
        |s| Some(s.rss_bytes as f64 / 1_048_576.0),
    ),
    (
        "resources-fds",
        "Server open descriptors",
        Axis {
            title: "descriptors",
            log: false,
            label: |v| format!("{v:.0}"),
        },
        |s| Some(s.open_fds as f64),
    ),
    (
        "resources-cpu",
        "Server CPU per delivery",
        Axis {
            title: "us per delivery",
            log: false,
            label: |v| format!("{v:.1}"),
        },
        |s| s.cpu_us_per_delivery,
    ),
];

/// Adds the section when some row sampled its server through the stream; nothing otherwise.
pub fn section(doc: &mut Document, rows: &[Row<'_>]) -> anyhow::Result<()> {
    let sampled: Vec<(&Row<'_>, &[ResourceSample], Option<&Trend>)> = rows
        .iter()
        .map(|row| {
            let run = shown_run(row);
            (
                row,
                &run.resources_over_time[..],
                run.resource_trend.as_ref(),
            )
        })
        .filter(|(_, samples, _)| !samples.is_empty())
        .collect();
    if sampled.is_empty() {
        return Ok(());
    }
    doc.heading("resources", "Resources over time");
    doc.paragraph(format!(
        "The server's processes sampled through each stream, a quarter interval past each \
         interval's mark (so faults that strike on the marks do not catch every connection \
         mid-reconnect): resident memory, open descriptors, and CPU per delivery since the \
         previous sample. Slopes are least-squares fits after the first interval, while \
         connections and buffers settle. A leak is resident memory growing by more than {:.0}% \
         of its plateau (the median) per 10 minutes, or any growth in descriptors from the \
         first sample to the last.",
        100.0 * LEAK_SHARE_PER_10_MINUTES
    ));
    let table_rows = sampled
        .iter()
        .map(|(row, samples, trend)| trend_cells(row, samples, *trend))
        .collect();
    doc.push(Block::Table {
        head: [
            "transport",
            "samples",
            "minutes",
            "RSS plateau",
            "RSS slope / 10 min",
            "descriptors first → last",
            "CPU/delivery first → last",
            "CPU/delivery slope / 10 min",
            "verdict",
        ]
        .map(String::from)
        .to_vec(),
        emphasis: sampled.iter().map(|(r, _, _)| r.is_floor()).collect(),
        rows: table_rows,
    });
    for (id, title, axis, reading) in CHARTS {
        let chart = LineChart {
            title: title.to_owned(),
            x: Axis {
                title: "minutes into the stream",
                log: false,
                label: |v| format!("{v:.0}"),
            },
            y: axis,
            series: sampled
                .iter()
                .map(|(row, samples, _)| Series {
                    name: row.key.label(),
                    colour: colour(row.key.transport),
                    points: samples
                        .iter()
                        .filter_map(|s| Some((s.at_ms as f64 / 60_000.0, reading(s)?)))
                        .collect(),
                })
                .collect(),
            legend: SeriesLabelPosition::UpperRight,
            shaded: Vec::new(),
        };
        doc.push(figure(
            id,
            format!("{title} over the stream, one line per row."),
            line_chart(&chart)?,
        ));
    }
    Ok(())
}

/// A row's line of the table: its trend, or what is missing for one.
fn trend_cells(row: &Row<'_>, samples: &[ResourceSample], trend: Option<&Trend>) -> Vec<String> {
    let (first, last) = (samples.first(), samples.last());
    let us = |s: Option<&ResourceSample>| {
        s.and_then(|s| s.cpu_us_per_delivery)
            .map_or("–".to_owned(), |v| format!("{v:.2} us"))
    };
    let cpu_first = samples.iter().find(|s| s.cpu_us_per_delivery.is_some());
    let mut cells = vec![row.key.label(), samples.len().to_string()];
    match trend {
        Some(trend) => cells.extend([
            format!("{:.1}", trend.span_minutes),
            bytes(trend.rss_plateau_bytes),
            format!(
                "{} ({:+.2}%)",
                signed_bytes(trend.rss_bytes_per_10_minutes),
                100.0 * trend.rss_bytes_per_10_minutes / trend.rss_plateau_bytes.max(1.0)
            ),
            format!(
                "{} → {} ({:+})",
                first.map_or(0, |s| s.open_fds),
                last.map_or(0, |s| s.open_fds),
                trend.fd_growth
            ),
            format!("{} → {}", us(cpu_first), us(last)),
            trend
                .cpu_us_per_delivery_per_10_minutes
                .map_or("–".to_owned(), |v| format!("{v:+.3} us")),
            trend
                .leak
                .as_ref()
                .map_or("no leak".to_owned(), |why| format!("LEAK: {why}")),
        ]),
        None => cells.extend(
            std::iter::repeat_n("–".to_owned(), 6)
                .chain(["too few samples for a trend".to_owned()]),
        ),
    }
    cells
}

/// Bytes with their sign.
fn signed_bytes(value: f64) -> String {
    let sign = if value < 0.0 { "-" } else { "+" };
    format!("{sign}{}", bytes(value.abs()))
}
