//! What a report says, built once from a results file: the summary (scenario, machine, date,
//! revision, winners with margins), "which to pick", one table per section with the raw TCP
//! floor as the reference row, the noise, the plots and the method.

use super::charts;
use super::headline::bound_of;
use crate::document::{Block, Document};
use crate::event::Rate;
use crate::results::figures::{
    at_setting, headline_setting, margin, rows, settings, Better, Figure, Metric, Row, Section,
    SettingKey, Unit, METRICS,
};
use crate::results::format::{micros, rate, thousands};
use crate::results::pairing::{self, floor_for, PAIRED};
use crate::results::scenario::Stepped;
use crate::results::{utc_stamp, Results};

/// Fewer connections than this make RSS growth per connection mostly allocator noise.
pub(crate) const MEANINGFUL_CONNECTIONS: usize = 100;

/// Figures the summary names a winner for.
const WINNER_METRICS: [Figure; 7] = [
    Figure::LatencyP50,
    Figure::LatencyP99,
    Figure::EventsPerS,
    Figure::HandshakeP50,
    Figure::ServerRssPerConn,
    Figure::ServerCpuUsPerDelivery,
    Figure::WireBytesPerEvent,
];

/// The whole report for one results file.
pub fn document(results: &Results, which_to_pick: Vec<Block>) -> anyhow::Result<Document> {
    let rows = rows(results);
    let mut doc = Document {
        title: format!("pushbench report: {}", results.scenario.name),
        blocks: Vec::new(),
    };
    summary(&mut doc, results, &rows);
    doc.heading("which-to-pick", "Which to pick");
    doc.blocks.extend(which_to_pick);
    for (section, heading, meaning) in Section::ALL {
        doc.heading(&format!("{section:?}").to_lowercase(), heading);
        doc.paragraph(meaning);
        if section == Section::Connection
            && rows
                .iter()
                .all(|r| r.key.subscribers < MEANINGFUL_CONNECTIONS)
        {
            doc.paragraph(format!(
                "With fewer than {MEANINGFUL_CONNECTIONS} connections, RSS growth per connection is \
                 mostly the allocator's arenas, not the connections: see the idle-connections \
                 preset for memory."
            ));
        }
        // Results before load workers measured the client in one long-lived process.
        let shared_load_process = results.runs.iter().any(|r| r.load_workers.is_none());
        if section == Section::Connection && rows.len() > 1 && shared_load_process {
            doc.paragraph(
                "Client RSS per connection is reliable only for the first combination of a run: \
                 later ones reuse memory the load process freed, and show less growth than they \
                 cost. For client memory, run one transport per invocation.",
            );
        }
        doc.push(section_table(section, &rows));
    }
    super::faults::section(&mut doc, &rows)?;
    super::storms::section(&mut doc, &rows)?;
    super::resources::section(&mut doc, &rows)?;
    super::two_way::section(&mut doc, &rows);
    super::deployed::section(&mut doc, &rows);
    max_rates(&mut doc, results);
    super::noise::section(&mut doc, results, &rows);
    doc.heading("plots", "Plots");
    doc.blocks.extend(charts::figures(&rows)?);
    method(&mut doc, results);
    Ok(doc)
}

/// The scenario in one sentence.
pub fn scenario_sentence(results: &Results) -> String {
    let s = &results.scenario;
    let names: Vec<&str> = s.transports.iter().map(|t| t.name()).collect();
    let join = |v: Vec<String>| v.join(", ");
    let offered = match s.rate {
        Rate::PerSecond(r) => format!("at {} events/s", rate(r)),
        Rate::Max => "as fast as each transport could take them".into(),
    };
    let payloads = join(s.payloads.iter().map(|p| format!("{p} B")).collect());
    let subscribers = join(s.subscribers.iter().map(|n| thousands(*n as f64)).collect());
    let mut sentence = format!(
        "{} each delivered the same stream of {} events ({payloads} payloads) {offered} to {subscribers} \
         subscriber(s), one transport at a time",
        join(names.iter().map(|n| n.to_string()).collect()),
        thousands(s.events as f64),
    );
    if s.find_max {
        let stepped = match s.find_max_of {
            Stepped::Rate => "the offered rate",
            Stepped::Subscribers => "the subscribers",
        };
        sentence.push_str(&format!(
            ", doubling {stepped} until p99 passed {} ms",
            s.p99_budget_ms
        ));
    }
    if s.repeat > 1 {
        sentence.push_str(&format!(", in {} rounds", s.repeat));
    }
    if !s.idle.is_zero() {
        sentence.push_str(&format!(
            ", after holding every subscriber idle for {} s",
            s.idle.as_secs_f64()
        ));
    }
    sentence.push('.');
    sentence
}

/// `2026-11-23 12:51:02 UTC` for Unix seconds.
pub fn readable_utc(unix: u64) -> String {
    let stamp = utc_stamp(unix);
    format!(
        "{}-{}-{} {}:{}:{} UTC",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    )
}

fn summary(doc: &mut Document, results: &Results, rows: &[Row<'_>]) {
    doc.paragraph(scenario_sentence(results));
    let m = &results.machine;
    let placement = if merged_from_parts(results) {
        "merged from parts (`pushbench merge`): the server and load workers were placed by \
         whoever started them"
            .into()
    } else if results.placement.pinned {
        let cpus = |cpus: &[usize]| {
            let list: Vec<String> = cpus.iter().map(usize::to_string).collect();
            list.join(", ")
        };
        format!(
            "load on CPU {}, server under test on CPU {}",
            cpus(&results.placement.load_cpus),
            cpus(&results.placement.server_cpus)
        )
    } else {
        "not pinned (load and server share CPUs)".into()
    };
    let facts = [
        (
            "machine",
            format!("{}, {} CPUs, Linux {}", m.cpu_model, m.cores, m.kernel),
        ),
        ("placement", placement),
        ("date", readable_utc(results.started_unix)),
        ("revision", format!("git {} ({})", m.git_revision, m.rustc)),
        ("machine floor", machine_floor(results)),
        ("run", format!("`{}`", results.run_id)),
    ];
    doc.push(Block::Facts(
        facts
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    ));
    let clocks = clock_notes(results);
    if !clocks.is_empty() {
        doc.push(Block::Paragraph(format!(
            "Clocks: load workers on other hosts measured their offset to the server's clock \
             (least-delay UDP round trips before and after the stream) and corrected every \
             receive time by it. {}",
            clocks.join(" ")
        )));
    }
    // Rows whose server ran partly in a process nobody named have no server CPU or memory.
    for row in rows {
        if let Some(why) = row
            .runs
            .iter()
            .find_map(|r| r.connection.server_unmeasured.as_deref())
        {
            doc.push(Block::Paragraph(format!(
                "{}: the server's CPU and memory are unmeasured: {why}.",
                row.key.label()
            )));
        }
    }
    if !results.complete {
        doc.push(Block::Warning(
            "this run is incomplete (interrupted, or a server crashed): some combinations are missing."
                .into(),
        ));
    }
    for row in rows.iter().filter(|r| !r.ok()) {
        doc.push(Block::Warning(format!(
            "{} with {} subscriber(s) did not deliver the identical stream in {} of {} run(s){}; {}",
            row.key.label(),
            row.key.subscribers,
            row.failed,
            row.runs.len(),
            row.runs
                .iter()
                .find_map(|r| r.error.as_deref())
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            // Figures come from the runs that passed; with none, from the failed ones.
            if row.failed < row.runs.len() {
                "those runs are left out of its figures."
            } else {
                "its figures come from those failed runs and are not comparable."
            }
        )));
    }
    let Some(headline) = headline_setting(rows) else {
        doc.paragraph("No combination was measured.");
        return;
    };
    doc.heading("summary", "Winners");
    doc.paragraph(format!(
        "At {} subscriber(s), {} B payloads, offered {} ev/s; the raw TCP floor is the reference, \
         not a contender.",
        headline.0, headline.1, headline.2
    ));
    doc.push(Block::List(winners(rows, headline)));
}

/// "metric: best transport value, margin than runner-up (value); floor value" per metric. A
/// figure paired with the floor ranks by its ratio to the floor row of the same round, and
/// leads with it: the ratio survives a rerun on another day or machine, the absolute follows.
pub fn winners(rows: &[Row<'_>], setting: SettingKey<'_>) -> Vec<String> {
    let at = at_setting(rows, setting);
    let floor = at.iter().find(|r| r.is_floor());
    let mut lines = Vec::new();
    for figure in WINNER_METRICS {
        let metric = figure.metric();
        // At a fixed offered rate every transport delivers the offered rate: no contest.
        if figure == Figure::EventsPerS && setting.2 != Rate::Max {
            continue;
        }
        // With few connections, RSS growth per connection is allocator noise.
        if figure == Figure::ServerRssPerConn && setting.0 < MEANINGFUL_CONNECTIONS {
            continue;
        }
        let paired = PAIRED.contains(&figure);
        // (label, what ranks it, how it reads)
        let mut contenders: Vec<(String, f64, String)> = at
            .iter()
            .filter(|r| r.ok() && !r.is_floor())
            .filter_map(|r| {
                let absolute = r.figure(figure).median;
                let ratio = paired
                    .then(|| floor_for(r, rows).map(|f| pairing::ratio(r, f, figure)))
                    .flatten()
                    .filter(|ratio| ratio.n > 0);
                let (rank, reads) = match ratio {
                    Some(ratio) => (
                        ratio.median,
                        format!(
                            "{} the floor ({})",
                            ratio.show(Unit::Times),
                            metric.unit.show(absolute)
                        ),
                    ),
                    None => (absolute, metric.unit.show(absolute)),
                };
                rank.is_finite().then(|| (r.key.label(), rank, reads))
            })
            .collect();
        contenders.sort_by(|a, b| match metric.better {
            Better::Lower => a.1.total_cmp(&b.1),
            Better::Higher => b.1.total_cmp(&a.1),
        });
        let Some((best, value, reads)) = contenders.first().cloned() else {
            continue;
        };
        let mut line = format!("**{}**: **{best}** {reads}", metric.qualified_label());
        if let Some((second, other, other_reads)) = contenders.get(1).cloned() {
            line.push_str(&format!(
                ", {} {second} ({other_reads})",
                margin(value, other, metric.better),
            ));
        }
        if let Some(floor) = floor {
            line.push_str(&format!(
                "; {} floor {}",
                floor.key.label(),
                metric.unit.show(floor.figure(figure).median)
            ));
        }
        lines.push(line);
    }
    lines
}

/// One section's table: every row, the floor set apart, repeats as median (min–max).
fn section_table(section: Section, rows: &[Row<'_>]) -> Block {
    let all = settings(rows);
    let vary = |f: fn(&SettingKey<'_>) -> String| {
        let mut seen: Vec<String> = all.iter().map(f).collect();
        seen.dedup();
        seen.len() > 1
    };
    let (show_subs, show_payload, show_rate) = (
        vary(|s| s.0.to_string()),
        vary(|s| s.1.to_string()),
        vary(|s| s.2.to_string()),
    );
    // A figure no row has (TLS handshakes in a plain run, say) is left out, not a column of
    // dashes.
    let measured = |m: &&Metric| {
        rows.iter()
            .flat_map(|row| &row.runs)
            .any(|run| !(m.value)(run).is_nan())
    };
    let metrics: Vec<_> = METRICS
        .iter()
        .filter(|m| m.section == section)
        .filter(measured)
        .collect();
    let mut head = vec!["transport".to_string()];
    head.extend(show_subs.then(|| "subs".to_string()));
    head.extend(show_payload.then(|| "payload B".to_string()));
    head.extend(show_rate.then(|| "offered/s".to_string()));
    head.extend(metrics.iter().map(|m| m.label.to_string()));
    if section == Section::Latency {
        head.push("p50 ÷ floor".into());
    }
    if section == Section::Delivery {
        head.push("check".into());
    }
    if section == Section::Throughput {
        head.push("bound".into());
    }
    let mut ordered: Vec<&Row<'_>> = Vec::new();
    for setting in &all {
        ordered.extend(at_setting(rows, *setting));
    }
    let mut table_rows = Vec::new();
    for row in &ordered {
        let mut cells = vec![row.key.label()];
        cells.extend(show_subs.then(|| thousands(row.key.subscribers as f64)));
        cells.extend(show_payload.then(|| row.key.payload.to_string()));
        cells.extend(show_rate.then(|| row.rate.to_string()));
        cells.extend(metrics.iter().map(|m| row.figure(m.figure).show(m.unit)));
        if section == Section::Latency {
            let floor = ordered
                .iter()
                .find(|r| r.is_floor() && r.key.setting() == row.key.setting())
                .map(|f| f.figure(Figure::LatencyP50).median);
            cells.push(match floor {
                Some(f) if f > 0.0 => format!("{:.2}×", row.figure(Figure::LatencyP50).median / f),
                _ => "–".into(),
            });
        }
        if section == Section::Throughput {
            cells.push(bound_of(row));
        }
        if section == Section::Delivery {
            cells.push(if row.ok() && row.loss_accounted() {
                "ledger ok".into()
            } else if row.ok() {
                "ok".into()
            } else {
                format!("FAILED {} of {}", row.failed, row.runs.len())
            });
        }
        table_rows.push(cells);
    }
    Block::Table {
        head,
        emphasis: ordered.iter().map(|r| r.is_floor()).collect(),
        rows: table_rows,
    }
}

fn max_rates(doc: &mut Document, results: &Results) {
    if results.max_rates.is_empty() {
        return;
    }
    let subscribers = results.scenario.find_max_of == Stepped::Subscribers;
    if subscribers {
        doc.heading("knee", "The subscriber knee");
        doc.paragraph(format!(
            "The subscribers doubled at {} ev/s each until p99 passed {} ms, an event was lost \
             or a connection refused{}: the last level that held is the knee, with the \
             server's memory and CPU there.",
            results.scenario.rate,
            results.scenario.p99_budget_ms,
            results
                .scenario
                .memory_budget_mb
                .map(|mb| format!(", or the server's memory passed {mb} MB"))
                .unwrap_or_default()
        ));
    } else {
        doc.heading("max-rate", "Highest rate within the p99 budget");
        doc.paragraph(format!(
            "The offered rate doubled until p99 passed {} ms or an event was lost. Capacity is \
             the deliveries per second at the last level that held, per core of the server's \
             CPU limit where it had one.",
            results.scenario.p99_budget_ms
        ));
    }
    let held = if subscribers {
        "subscribers held"
    } else {
        "held ev/s per stream"
    };
    doc.push(Block::Table {
        head: [
            "transport",
            "subs",
            "payload B",
            held,
            "deliveries/s",
            "per core",
            "p99 there",
            "server memory",
            "server CPU",
            "bound",
            "next level",
        ]
        .map(String::from)
        .to_vec(),
        rows: results.max_rates.iter().map(knee_cells).collect(),
        emphasis: results
            .max_rates
            .iter()
            .map(|m| m.key.transport.traits().floor)
            .collect(),
    });
    for note in results.max_rates.iter().filter_map(|m| {
        m.note
            .as_ref()
            .map(|note| format!("{}: {note}.", m.key.label()))
    }) {
        doc.push(Block::Warning(note));
    }
}

/// One knee's row of the max-rate (or subscriber knee) table.
fn knee_cells(m: &crate::results::MaxRate) -> Vec<String> {
    let dash = || "—".to_string();
    let held = match m.subscribers_held {
        Some(n) => thousands(n as f64),
        None => thousands(m.events_per_s),
    };
    vec![
        m.key.label(),
        thousands(m.key.subscribers as f64),
        m.key.payload.to_string(),
        held,
        m.deliveries_per_s.map_or_else(dash, thousands),
        match (m.deliveries_per_s, m.server_cores) {
            (Some(d), Some(cores)) => format!("{} on {cores} core(s)", thousands(d / cores)),
            _ => dash(),
        },
        micros(m.p99_us),
        m.server_rss_bytes
            .map_or_else(dash, |b| crate::results::format::bytes(b as f64)),
        m.server_cpu_share
            .map_or_else(dash, |s| format!("{:.0}%", s * 100.0)),
        m.bound.map_or_else(dash, |b| b.label().to_string()),
        m.stopped_because.clone(),
    ]
}

fn method(doc: &mut Document, results: &Results) {
    doc.heading("method", "Method");
    // Rows that ran without a setting the run was given: said before anything else.
    let mut notes: Vec<String> = Vec::new();
    for run in &results.runs {
        if let Some(note) = run.not_applied_note() {
            let note = format!("{} {note}.", run.key.label());
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
    for note in notes {
        doc.push(Block::Warning(note));
    }
    let s = &results.settings;
    doc.push(Block::List(vec![
        "Every transport carries the same deterministic stream (seed, sizes, schedule); each \
         subscriber folds what it receives into an order-sensitive digest, and a run whose digest \
         differs from the source's is marked FAILED and left out of the figures."
            .into(),
        "Latency is receive time minus the event's scheduled send time (the wrk2 method, free of \
         coordinated omission); service time is receive minus actual send. Both are HdrHistograms \
         (1 us to 60 s, 3 significant digits) on the one CLOCK_MONOTONIC the two processes share; \
         the warm-up is left out."
            .into(),
        "The server under test is a child process of its own, pinned apart from the load, so \
         its CPU time, RSS and socket bytes are its own; its publisher sleeps short of each \
         deadline and spins the rest on a thread whose CPU time is left out of the server's. \
         The subscribers run in load worker processes (one per load CPU unless set), fresh for \
         every combination, each recording into per-thread histograms that are merged exactly."
            .into(),
        "Each row says what limited it: load-bound when the load used at least 90% of its CPUs \
         and the server less, server-bound when the server did, schedule-bound otherwise. \
         Capacity is server deliveries per core-second (1 / server CPU per delivery), which a \
         saturated load cannot distort. Steal is the share of the machine's CPU time the \
         hypervisor took during the row."
            .into(),
        "Last receiver: per event, the time from its scheduled send until the last subscriber \
         had it (over events every subscriber received; streams of more than 65,536 events are \
         followed at evenly spaced events)."
            .into(),
        format!(
            "Settings: at most {} events or {} B per write or response; keep-alive every {} s. \
             Each transport's own, as its server and load processes ran with them: {}.",
            s.batch_events,
            s.batch_bytes,
            s.heartbeat_secs,
            transport_settings(results)
        ),
        "The full histograms are kept in `results.json` (HdrHistogram V2, base64), so runs can \
         be merged and re-plotted."
            .into(),
    ]));
}

/// Every distinct `name=value` of the transports' own settings over the runs, in run order
/// ("none" when no transport has settings).
fn transport_settings(results: &Results) -> String {
    let mut seen: Vec<String> = Vec::new();
    for run in &results.runs {
        for (name, value) in &run.settings.0 {
            let pair = format!("`{name}={value}`");
            if !seen.contains(&pair) {
                seen.push(pair);
            }
        }
    }
    if seen.is_empty() {
        "none".into()
    } else {
        seen.join(", ")
    }
}

/// Whether the results were merged from parts of processes `run` did not start.
fn merged_from_parts(results: &Results) -> bool {
    results.calibration.round_trips == 0 && !results.placement.pinned
}

/// The machine's round-trip floor, or why there is none.
pub(crate) fn machine_floor(results: &Results) -> String {
    if results.calibration.round_trips == 0 {
        return "not measured (merged from parts; the clock probes' round trips are beside \
                each row's clock offsets)"
            .into();
    }
    let rtt = &results.calibration.rtt_us;
    format!(
        "TCP ping-pong between the two processes: p50 {} p99 {} per round trip",
        micros(rtt.p50),
        micros(rtt.p99)
    )
}

/// One sentence per row whose load workers corrected their clocks: each worker's offset, and
/// how far the row's latencies may be off because of it.
pub(crate) fn clock_notes(results: &Results) -> Vec<String> {
    results
        .runs
        .iter()
        .filter_map(|run| {
            let clock = run.clock.as_ref()?;
            let workers: Vec<String> = clock
                .workers
                .iter()
                .map(|w| {
                    format!(
                        "worker {} {:+.1} us (+/- {:.1} us, least round trip {:.1} us)",
                        w.worker, w.offset_us, w.uncertainty_us, w.rtt_us
                    )
                })
                .collect();
            Some(format!(
                "{} x{}: offsets {}; latencies may be off by up to {:.1} us.",
                run.key.label(),
                run.key.subscribers,
                workers.join(", "),
                clock.uncertainty_us
            ))
        })
        .collect()
}
