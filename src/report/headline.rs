//! The headline tables the README shows for a run: first every transport's figures as ratios
//! to the floor row of the same round, with their intervals (they hold across reruns and
//! machines), then the absolute figures, with the machine they were measured on named beside
//! them (they hold only there). Generated from a results file, never typed by hand.

use super::content::MEANINGFUL_CONNECTIONS;
use crate::document::{Block, Document};
use crate::event::Rate;
use crate::results::figures::{at_setting, headline_setting, rows, Figure, Row, Unit};
use crate::results::pairing::{self, floor_for, PAIRED};
use crate::results::{Bound, Results};

/// The headline of `results`: the ratio table, then the absolute one under a line naming the
/// setting, the run and the machine. Empty when the run has no row to head with.
pub fn tables(results: &Results) -> String {
    let rows = rows(results);
    let Some(setting) = headline_setting(&rows) else {
        return String::new();
    };
    let mut at = at_setting(&rows, setting);
    // Rows as the scenario lists their transports, each transport's variants together (rounds
    // ran in a shuffled order), the floor's last.
    let listed = |row: &Row<'_>| {
        let transports = &results.scenario.transports;
        transports
            .iter()
            .position(|&t| t == row.key.transport)
            .unwrap_or(transports.len())
    };
    at.sort_by_key(|row| (row.is_floor(), listed(row), row.key.label()));
    let floor = at
        .iter()
        .find(|r| r.is_floor())
        .map_or("floor", |r| r.key.transport.name());
    // Deliveries per second are a contest only where the rate was not offered.
    let ratios: Vec<Figure> = PAIRED
        .into_iter()
        .filter(|&f| f != Figure::EventsPerS || setting.2 == Rate::Max)
        .collect();
    let ratio_table = ratio_table(&at, &rows, &ratios, floor);
    let mut figures = vec![
        Figure::LatencyP50,
        Figure::LatencyP99,
        Figure::LatencyP999,
        Figure::EventsPerS,
        Figure::ServerCpuUsPerDelivery,
        Figure::LoadCpuUsPerDelivery,
        Figure::WireBytesPerEvent,
    ];
    // Memory per connection only where there were enough connections to measure it. The load
    // process's figure is left out: it is only reliable for a run's first combination.
    if setting.0 >= MEANINGFUL_CONNECTIONS {
        figures.push(Figure::ServerRssPerConn);
    }
    let absolute_table = absolute_table(&at, &figures);
    let machine = &results.machine;
    let rounds = results.scenario.repeat.max(1);
    format!(
        "{ratios}\n{}\n\n{absolute}\n",
        format_args!(
            "{} subscriber(s), {} B payloads, offered {} ev/s, {rounds} round(s): {}. Absolute \
             figures on {}, {} CPUs, kernel {}, TCP floor p50 {} us (run `{}`, git {}):",
            setting.0,
            setting.1,
            setting.2,
            spread_said(rounds),
            machine.cpu_model,
            machine.cores,
            machine.kernel,
            results.calibration.rtt_us.p50,
            results.run_id,
            machine.git_revision,
        ),
        ratios = markdown(ratio_table),
        absolute = markdown(absolute_table),
    )
}

/// What the brackets after a figure are, for a run of `rounds` rounds.
fn spread_said(rounds: u32) -> &'static str {
    if rounds as usize >= crate::results::stats::MIN_ROUNDS_FOR_INTERVAL {
        "each figure is the median over the rounds, [its 95% interval]"
    } else if rounds > 1 {
        "each figure is the median over the rounds, (their range)"
    } else {
        "one round, no interval"
    }
}

/// Every row's paired ratios to the floor of its round, with their intervals.
fn ratio_table(at: &[&Row<'_>], rows: &[Row<'_>], ratios: &[Figure], floor: &str) -> Block {
    let mut head = vec!["transport".to_string()];
    head.extend(ratios.iter().map(|&f| {
        let name = match f {
            Figure::LatencyP50 => "p50",
            Figure::LatencyP99 => "p99",
            Figure::EventsPerS => "events/s",
            _ => "server CPU",
        };
        format!("{name} ÷ {floor}")
    }));
    head.push("check".into());
    Block::Table {
        head,
        emphasis: at.iter().map(|r| r.is_floor()).collect(),
        rows: at
            .iter()
            .map(|r| {
                let mut cells = vec![r.key.label()];
                cells.extend(ratios.iter().map(|&f| match floor_for(r, rows) {
                    Some(floor) => pairing::ratio(r, floor, f).show(Unit::Times),
                    None if r.is_floor() => Unit::Times.show(1.0),
                    None => "—".into(),
                }));
                cells.push(if r.ok() { "ok".into() } else { "FAILED".into() });
                cells
            })
            .collect(),
    }
}

/// Every row's absolute `figures` and what bound it.
fn absolute_table(at: &[&Row<'_>], figures: &[Figure]) -> Block {
    let mut head = vec!["transport".to_string()];
    head.extend(figures.iter().map(|f| f.metric().qualified_label()));
    head.push("bound".into());
    Block::Table {
        head,
        emphasis: at.iter().map(|r| r.is_floor()).collect(),
        rows: at
            .iter()
            .map(|r| {
                let mut cells = vec![r.key.label()];
                cells.extend(figures.iter().map(|&f| r.figure(f).show(f.metric().unit)));
                cells.push(bound_of(r));
                cells
            })
            .collect(),
    }
}

/// One table as Markdown.
fn markdown(table: Block) -> String {
    Document {
        title: String::new(),
        blocks: vec![table],
    }
    .markdown_body()
}

/// What limited a row, over its repeats: one label, or several joined when repeats differ;
/// "—" for results recorded before rows carried it.
pub fn bound_of(row: &Row<'_>) -> String {
    let mut labels: Vec<&str> = row
        .runs
        .iter()
        .filter_map(|r| r.bound.map(Bound::label))
        .collect();
    labels.sort_unstable();
    labels.dedup();
    if labels.is_empty() {
        "—".into()
    } else {
        labels.join("/")
    }
}
