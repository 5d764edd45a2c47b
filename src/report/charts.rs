//! Which plots a report draws and from which figures: the percentile spectrum, latency over
//! time, figures against fan-out, and the cost bars. Drawing itself is [`super::plots`].

use plotters::chart::SeriesLabelPosition;

use super::plots::{bar_chart, colour, line_chart, Axis, BarChart, LineChart, Series};
use crate::document::Block;
use crate::results::figures::{at_setting, headline_setting, settings, Figure, Row};
use crate::results::format::{bytes, thousands};

/// Latency axis (log scale, microseconds).
pub(crate) const LATENCY: Axis = Axis {
    title: "latency",
    log: true,
    label: axis_micros,
};

/// Microseconds as an axis label: whole units where they are whole (`1ms`, not `1.00ms`).
fn axis_micros(us: f64) -> String {
    let (value, unit) = match us {
        v if v < 1e3 => (v, "us"),
        v if v < 1e6 => (v / 1e3, "ms"),
        v => (v / 1e6, "s"),
    };
    let text = format!("{value:.2}");
    format!("{}{unit}", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Every plot the rows support, as figures.
pub fn figures(rows: &[Row<'_>]) -> anyhow::Result<Vec<Block>> {
    let Some(headline) = headline_setting(rows) else {
        return Ok(Vec::new());
    };
    let at = at_setting(rows, headline);
    let where_ = format!(
        "{} subscriber(s), {} B, offered {} ev/s",
        headline.0, headline.1, headline.2
    );
    let mut out = vec![
        figure(
            "spectrum",
            format!(
                "Latency by percentile ({where_}); the horizontal axis is 1/(1-p) on a log scale, \
                 so the tail gets the room it deserves."
            ),
            line_chart(&spectrum(&at))?,
        ),
        figure(
            "p99-over-time",
            format!("p99 latency per second of the stream ({where_}): stalls show as spikes."),
            line_chart(&over_time(&at, "p99 latency per second", |i| i.p99_us))?,
        ),
        figure(
            "p50-over-time",
            format!("Median latency per second of the stream ({where_})."),
            line_chart(&over_time(&at, "p50 latency per second", |i| i.p50_us))?,
        ),
    ];
    if let Some((throughput, p99)) = fanout(rows) {
        out.push(figure(
            "fanout-throughput",
            "Delivered events/s (all subscribers) against subscriber count.".into(),
            line_chart(&throughput)?,
        ));
        out.push(figure(
            "fanout-p99",
            "p99 latency against subscriber count.".into(),
            line_chart(&p99)?,
        ));
    }
    let name = |r: &Row<'_>| r.key.label();
    out.push(figure(
        "memory",
        format!(
            "RSS growth per connected subscriber, server and load process ({where_}); the load \
             process's figure is reliable only for the run's first combination."
        ),
        bar_chart(&BarChart {
            title: "Memory per connection".into(),
            axis: Axis {
                title: "bytes per connection",
                log: false,
                label: bytes,
            },
            segments: vec!["server", "client (load process)"],
            bars: at
                .iter()
                .map(|r| {
                    let server = r.figure(Figure::ServerRssPerConn).median;
                    let client = r.figure(Figure::ClientRssPerConn).median;
                    (name(r), colour(r.key.transport), vec![server, client])
                })
                .collect(),
        })?,
    ));
    out.push(figure(
        "cpu",
        format!("Server CPU time per delivery ({where_})."),
        bar_chart(&BarChart {
            title: "Server CPU per delivery".into(),
            axis: Axis {
                title: "microseconds per delivery",
                log: false,
                label: |v| format!("{v:.2}"),
            },
            segments: vec!["server CPU"],
            bars: at
                .iter()
                .map(|r| {
                    (
                        name(r),
                        colour(r.key.transport),
                        vec![r.figure(Figure::ServerCpuUsPerDelivery).median],
                    )
                })
                .collect(),
        })?,
    ));
    out.push(figure(
        "wire",
        format!("Bytes on the wire per delivered event, both directions: payload against headers, framing and requests ({where_})."),
        bar_chart(&BarChart {
            title: "Wire bytes per event".into(),
            axis: Axis { title: "bytes per event", log: false, label: |v| format!("{v:.0}") },
            segments: vec!["payload", "overhead"],
            bars: at
                .iter()
                .map(|r| {
                    let wire = r.figure(Figure::WireBytesPerEvent).median;
                    let events = r.figure(Figure::EventsPerS).median;
                    let payload = if events > 0.0 { r.figure(Figure::BytesPerS).median / events } else { 0.0 };
                    (name(r), colour(r.key.transport), vec![payload.min(wire), (wire - payload).max(0.0)])
                })
                .collect(),
        })?,
    ));
    Ok(out)
}

/// A drawn chart as a report figure.
pub(crate) fn figure(id: &str, caption: String, svg: String) -> Block {
    Block::Figure {
        id: id.into(),
        caption,
        svg,
    }
}

/// Latency against percentile, from each row's merged histogram.
fn spectrum(rows: &[&Row<'_>]) -> LineChart {
    let series = rows
        .iter()
        .filter_map(|row| {
            let h = row.latency_histogram();
            if h.is_empty() {
                return None;
            }
            // Only as deep into the tail as the sample supports: 10^x events resolve 1/(1-p) = 10^x.
            let depth = (h.len() as f64).log10().clamp(1.0, 6.0);
            let points = (0..=(depth * 20.0) as usize)
                .map(|k| {
                    let x = k as f64 / 20.0;
                    (x, h.value_at_quantile(1.0 - 10f64.powf(-x)) as f64)
                })
                .collect();
            Some(Series {
                name: row.key.label(),
                colour: colour(row.key.transport),
                points,
            })
        })
        .collect();
    LineChart {
        title: "Latency by percentile".into(),
        legend: SeriesLabelPosition::LowerRight,
        shaded: Vec::new(),
        x: Axis {
            title: "percentile",
            log: false,
            label: percentile_label,
        },
        y: LATENCY,
        series,
    }
}

/// `x` on the 1/(1-p) axis as a percentile: 0 → 0%, 1 → 90%, 2 → 99%, 3 → 99.9%.
fn percentile_label(x: f64) -> String {
    let p = (1.0 - 10f64.powf(-x)) * 100.0;
    let places = (x.ceil() as usize).saturating_sub(2);
    format!("{p:.places$}%")
}

/// One figure per second of the first passing repeat.
fn over_time(
    rows: &[&Row<'_>],
    title: &str,
    value: fn(&crate::metrics::latency::IntervalLatency) -> u64,
) -> LineChart {
    let series = rows
        .iter()
        .map(|row| {
            let run = row.runs.iter().find(|r| !r.failed).unwrap_or(&row.runs[0]);
            let points = run
                .latency_over_time
                .iter()
                .filter(|i| i.events > 0)
                .map(|i| (i.second as f64, value(i) as f64))
                .collect();
            Series {
                name: row.key.label(),
                colour: colour(row.key.transport),
                points,
            }
        })
        .collect();
    LineChart {
        title: title.into(),
        legend: SeriesLabelPosition::UpperRight,
        shaded: Vec::new(),
        x: Axis {
            title: "second of the stream",
            log: false,
            label: |s| format!("{s:.0}"),
        },
        y: LATENCY,
        series,
    }
}

/// Delivered events/s and p99 against subscriber count, when the run swept fan-out at one
/// payload and rate.
fn fanout(rows: &[Row<'_>]) -> Option<(LineChart, LineChart)> {
    let all = settings(rows);
    let (_, payload, rate) = *all.first()?;
    let swept: Vec<usize> = all
        .iter()
        .filter(|s| s.1 == payload && s.2 == rate)
        .map(|s| s.0)
        .collect();
    if swept.len() < 2 {
        return None;
    }
    let mut transports: Vec<&Row<'_>> = Vec::new();
    for row in rows {
        if !transports.iter().any(|t| t.key.label() == row.key.label()) {
            transports.push(row);
        }
    }
    transports.sort_by_key(|r| r.transport_index());
    let line = |metric: Figure| -> Vec<Series> {
        transports
            .iter()
            .map(|t| Series {
                name: t.key.label(),
                colour: colour(t.key.transport),
                points: rows
                    .iter()
                    .filter(|r| {
                        r.key.label() == t.key.label()
                            && r.key.payload == *payload
                            && r.rate == rate
                    })
                    .map(|r| (r.key.subscribers as f64, r.figure(metric).median))
                    .collect(),
            })
            .collect()
    };
    let subscribers = Axis {
        title: "subscribers",
        log: true,
        label: |n| thousands(n),
    };
    Some((
        LineChart {
            title: "Delivered events/s against fan-out".into(),
            legend: SeriesLabelPosition::UpperLeft,
            shaded: Vec::new(),
            x: subscribers,
            y: Axis {
                title: "events/s",
                log: true,
                label: |n| thousands(n),
            },
            series: line(Figure::EventsPerS),
        },
        LineChart {
            title: "p99 latency against fan-out".into(),
            legend: SeriesLabelPosition::UpperLeft,
            shaded: Vec::new(),
            x: subscribers,
            y: LATENCY,
            series: line(Figure::LatencyP99),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The percentile axis reads the way people say it.
    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
        assert_eq!(axis_micros(1000.0), "1ms");
        assert_eq!(axis_micros(316.2), "316.2us");
        assert_eq!(axis_micros(2.5e7), "25s");
    }
}
