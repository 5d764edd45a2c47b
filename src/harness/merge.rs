//! `pushbench merge`: the parts of one measurement taken across hosts (the server's, from
//! `serve --stats-out`, and every load worker's, from `load --out`) combined exactly into
//! results.json, as if `run` had measured them: histograms added, counts summed, every worker's
//! digests already checked against the source, and parts of another run refused with the
//! reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context as _};

use crate::link::netns::LinkFigures;
use crate::metrics::latency::Percentiles;
use crate::results::key::RowKey;
use crate::results::scenario::Scenario;
use crate::results::{Calibration, Placement, Results};
use crate::transport::{SettingValues, Side};

use super::part::Merged;
use super::plan::with_implementations;
use super::summary::{no_rows_yet, summarise, write_interval_log, Row, Summary};
use crate::protocol::{LoadPart, PartFile, ServerPart};

/// What `merge` wrote.
#[derive(Debug)]
pub struct MergeOutcome {
    /// Where results.json was written.
    pub path: PathBuf,
    /// The results.
    pub results: Results,
}

/// Reads the parts at `inputs` (files, or directories whose `*.json` files are all parts),
/// merges them, and writes `out/<run-id>/results.json`.
pub fn merge(inputs: &[PathBuf], out: &Path) -> anyhow::Result<MergeOutcome> {
    let files = part_files(inputs)?;
    let mut server: Option<(PathBuf, ServerPart)> = None;
    let mut loads: Vec<(PathBuf, LoadPart)> = Vec::new();
    for file in files {
        match PartFile::read(&file)? {
            PartFile::Server(part) => {
                if let Some((first, _)) = &server {
                    bail!(
                        "two server parts, {} and {}: one measurement has one server (a fleet \
                         of processes writes one part)",
                        first.display(),
                        file.display()
                    );
                }
                server = Some((file, *part));
            }
            PartFile::Load(part) => loads.push((file, *part)),
        }
    }
    let Some((server_file, server)) = server else {
        bail!("no server part among the inputs: add the file `pushbench serve --stats-out` wrote");
    };
    if loads.is_empty() {
        bail!("no load parts among the inputs: add the files `pushbench load --out` wrote");
    }
    check_one_run(&server_file, &server, &loads)?;
    let parts: Vec<LoadPart> = loads.iter().map(|(_, part)| part.clone()).collect();
    let merged = Merged::of(&parts).map_err(|error| {
        let files: Vec<String> = loads
            .iter()
            .map(|(file, part)| format!("worker {} = {}", part.worker, file.display()))
            .collect();
        anyhow::anyhow!("{error} ({})", files.join(", "))
    })?;
    results(&server, &merged, out)
}

/// Every part file named: files as given, directories' `*.json` files in name order.
fn part_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("reading the directory {}", input.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(input.clone());
        }
    }
    if files.is_empty() {
        bail!("no part files in {inputs:?}");
    }
    Ok(files)
}

/// Refuses parts that are not of one measurement: another stream or transport than the
/// server's, a worker given twice, or load parts that hold other than the subscribers the
/// server waited for (a part missing, or one from another run).
fn check_one_run(
    server_file: &Path,
    server: &ServerPart,
    loads: &[(PathBuf, LoadPart)],
) -> anyhow::Result<()> {
    let describe = |transport: &dyn std::fmt::Display, spec: &crate::event::StreamSpec| {
        format!(
            "{transport} with seed {}, {} events, payload {} ({}), rate {}",
            spec.seed, spec.count, spec.payload, spec.kind, spec.rate
        )
    };
    let served = describe(&server.transport, &server.spec);
    let mut workers: BTreeMap<usize, &Path> = BTreeMap::new();
    for (file, part) in loads {
        if part.transport != server.transport || part.spec != server.spec {
            bail!(
                "{} measured {}, but the server ({}) published {served}: parts of different \
                 runs cannot be merged",
                file.display(),
                describe(&part.transport, &part.spec),
                server_file.display()
            );
        }
        if let Some(other) = workers.insert(part.worker, file) {
            bail!(
                "worker {} has two parts, {} and {}: give each load worker its own --worker",
                part.worker,
                other.display(),
                file.display()
            );
        }
    }
    let subscribers: usize = loads.iter().map(|(_, p)| p.counts.subscribers).sum();
    if subscribers != server.start_after {
        bail!(
            "the load parts hold {subscribers} subscribers, but the server ({}) waited for {}: \
             a part is missing, or one is from another run",
            server_file.display(),
            server.start_after
        );
    }
    Ok(())
}

/// The merged measurement as results: one row, written with its interval log.
fn results(server: &ServerPart, merged: &Merged, out: &Path) -> anyhow::Result<MergeOutcome> {
    let transport = server.transport;
    let run_id = format!(
        "{}-merged-{}",
        crate::results::utc_stamp(server.started_unix),
        transport.name()
    );
    let dir = out.join(&run_id);
    let key = key_of(server, merged)?;
    let row = Row {
        key: &key,
        repeat: 0,
    };
    let started = UNIX_EPOCH + Duration::from_secs(server.started_unix);
    let interval_log = write_interval_log(&dir, &row, merged, started)?;
    let result = summarise(summary_of(server, merged, row, interval_log));
    let mut results = no_rows_yet(
        (run_id, server.started_unix),
        server.machine.clone(),
        Placement {
            pinned: false,
            load_cpus: Vec::new(),
            server_cpus: Vec::new(),
        },
        // Nothing was timed between the hosts before the stream but the clock probes, which
        // each row's clock offsets carry.
        Calibration {
            round_trips: 0,
            rtt_us: Percentiles::default(),
        },
        Scenario::of_one_stream("merged", transport, merged.counts.subscribers, &server.spec),
    );
    results.complete = true;
    results.runs.push(result);
    let path = results.write(&dir)?;
    Ok(MergeOutcome { path, results })
}

/// The row's key: the server's stream, with the implementations each side reported running.
fn key_of(server: &ServerPart, merged: &Merged) -> anyhow::Result<RowKey> {
    let mut key = RowKey::own(
        server.transport,
        merged.counts.subscribers,
        server.spec.payload.clone(),
        SettingValues::default(),
    );
    key.workload = crate::results::key::Workload::of(&server.spec.workload);
    with_implementations(&mut key, &server.settings, &merged.settings)?;
    Ok(key)
}

/// What the row is made of: the server's part (its stats and samples, taken on its host) and
/// the merged load parts.
fn summary_of<'a>(
    server: &'a ServerPart,
    merged: &'a Merged,
    row: Row<'a>,
    interval_log: Option<String>,
) -> Summary<'a> {
    let stats = &server.stats;
    // What the processes ran with: the server's settings and the load's.
    let mut settings: SettingValues = server.settings.clone();
    settings.0.extend(merged.settings.0.clone());
    let client_rss: u64 = merged
        .workers
        .iter()
        .map(|w| w.connected.rss_bytes.saturating_sub(w.before.rss_bytes))
        .sum();
    Summary {
        row,
        spec: &server.spec,
        merged,
        stats,
        server_processes: server.processes,
        server_rss: stats
            .connected
            .rss_bytes
            .saturating_sub(stats.before.rss_bytes),
        client_rss,
        kernel_socket_bytes: stats.kernel_socket_bytes,
        established: stats.subscribers_at_start,
        server_cpus: server.cpus as f64,
        load_cpus: load_cpus_of(merged).unwrap_or(merged.workers.len().max(1)),
        steal_share: None,
        interval_log,
        not_applied: Vec::new(),
        settings: settings.effective(&super::settings::settings_of(server.transport), Side::Both),
        origin_ns: merged.interval_origin_ns,
        restarted: None,
        blackout: None,
        // Parts from other hosts: their link is not this process's to know.
        link: LinkFigures::default(),
        server_samples: Vec::new(),
        resources: (Vec::new(), std::time::Duration::ZERO),
    }
}

/// CPUs the load workers had, summed, when their parts say.
fn load_cpus_of(merged: &Merged) -> Option<usize> {
    (merged.cpus > 0).then_some(merged.cpus)
}
