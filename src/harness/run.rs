//! `pushbench run`: one driver for every scenario and every transport, as a pipeline. It
//! plans every combination ([`plan`]), and for each rigs a fresh server child pinned apart
//! from the load, the path to it and fresh load worker processes ([`rig`]), measures the
//! stream (striking the row's faults, [`disrupt`]), merges what the workers measured exactly
//! and summarises it as one entry of the results ([`summary`]). Load shape is data (the
//! [`Scenario`]); nothing here depends on which transport runs.
//!
//! [`plan`]: super::plan
//! [`rig`]: super::rig
//! [`disrupt`]: super::disrupt
//! [`summary`]: super::summary

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::calibrate::calibrate;
use super::disrupt;
use super::knee;
use super::part::Merged;
use super::plan::{self, Combination};
use super::rig::{Connected, Rig, Setup};
use super::settings::settings_of;
use super::summary::{
    no_rows_yet, summarise, wall_time_of, write_interval_log, Restarted, Summary,
};
use crate::link::netns::LinkFigures;
use crate::metrics::machine::Machine;
use crate::metrics::process::{self, MachineCpu, TimedSample};
use crate::metrics::resources::{self, ResourceSample};
use crate::protocol::child::{LoadWorker, ServerChild};
use crate::protocol::open_files::raise_open_file_limit;
use crate::protocol::{LoadPart, ServeStats, StartOn};
use crate::results::scenario::Scenario;
use crate::results::{utc_stamp, Placement, Results, TransportResult};
use crate::transport::{SettingValues, Side};

/// What `pushbench run` needs besides the scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// What to measure.
    pub scenario: Scenario,
    /// Results go to `out/<run-id>/`.
    pub out: PathBuf,
    /// The `pushbench` executable that serves (normally this one).
    pub exe: PathBuf,
    /// Pin the load and the server to separate CPUs (off only where the caller's own threads
    /// must not be pinned, as in tests).
    pub pin: bool,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Where results.json was written.
    pub path: PathBuf,
    /// The results.
    pub results: Results,
}

/// Runs the scenario, writing results as it goes (so an interrupted or failed run keeps what
/// it measured, marked incomplete).
pub async fn run(options: RunOptions) -> anyhow::Result<RunOutcome> {
    let scenario = &options.scenario;
    raise_open_file_limit();
    // Before pinning, so the machine's CPU count is the machine's, not the load's share.
    let machine = Machine::describe();
    let placement = pin_apart(options.pin)?;
    let server_cpus = placement.pinned.then(|| placement.server_cpus.clone());
    let load_cpus = placement.pinned.then(|| placement.load_cpus.clone());
    let calibration = calibrate(&options.exe, server_cpus.as_deref()).await?;
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let run_id = format!("{}-{}", utc_stamp(started_unix), scenario.name);
    let dir = options.out.join(&run_id);
    let placed = Placed {
        server_cpus: server_cpus.as_deref(),
        load_cpus: load_cpus.as_deref(),
        dir: &dir,
        server_ip: match &scenario.server_netns {
            Some(netns) => netns_address(netns).await?,
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        },
    };
    let (combinations, rounds) = plan::in_rounds(scenario)?;
    let mut results = no_rows_yet(
        (run_id, started_unix),
        machine,
        placement,
        calibration,
        scenario.clone(),
    );
    results.rounds = rounds.map(|mut rounds| {
        rounds.floors.push(results.calibration.clone());
        rounds
    });
    let progress = progress_bar(combinations.len());
    let mut interrupted = false;
    for (i, combination) in combinations.iter().enumerate() {
        // Each round after the first measures the machine's floor again as it begins.
        let previous = i.checked_sub(1).map(|p| combinations[p].key.round);
        if let (true, Some(rounds)) = (
            previous.is_some_and(|p| p != combination.key.round),
            results.rounds.as_mut(),
        ) {
            rounds
                .floors
                .push(calibrate(&options.exe, placed.server_cpus).await?);
        }
        progress.set_message(progress_message(
            combination,
            results.rounds.is_some(),
            scenario,
        ));
        let measured = tokio::select! {
            measured = into_results(&options, combination, &placed, &mut results, &progress) => measured,
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                break;
            }
        };
        if let Err(error) = measured {
            // What fails a row is in its row; what is left (the results cannot be written, a
            // knee search that cannot go on) ends the run: keep what was measured, marked
            // incomplete.
            progress.finish_and_clear();
            let path = results.write(&dir)?;
            return Err(error.context(format!("partial results kept in {}", path.display())));
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    results.complete = !interrupted;
    let path = results.write(&dir)?;
    // Interrupted or not, what was measured is returned (marked incomplete) for the caller
    // to show.
    Ok(RunOutcome { path, results })
}

/// Pins this process (the load's parent) to the load's CPUs, leaving the rest to the server,
/// when asked to and the machine has CPUs enough to split.
fn pin_apart(pin: bool) -> anyhow::Result<Placement> {
    Ok(match process::split_cpus().filter(|_| pin) {
        Some((load, server)) => {
            process::pin_this_process(&load).context("pinning the load process")?;
            Placement {
                pinned: true,
                load_cpus: load,
                server_cpus: server,
            }
        }
        None => Placement {
            pinned: false,
            load_cpus: process::available_cpus(),
            server_cpus: Vec::new(),
        },
    })
}

/// The bar `run` shows while it measures.
fn progress_bar(combinations: usize) -> ProgressBar {
    ProgressBar::new(combinations as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    )
}

/// What the bar says while a combination runs: its row, fan-out, payload and round.
fn progress_message(combination: &Combination, in_rounds: bool, scenario: &Scenario) -> String {
    let round = if in_rounds {
        format!(
            " (round {} of {})",
            combination.key.round + 1,
            scenario.repeat
        )
    } else {
        String::new()
    };
    format!(
        "{} x{} {} B{round}",
        combination.label(),
        combination.key.subscribers,
        combination.key.payload,
    )
}

/// Measures one combination (a knee search: every level of it) and adds what it measured to
/// the results, written at once. A delivery that failed its check, or loss every event of
/// which is accounted for, is said above the bar.
async fn into_results(
    options: &RunOptions,
    combination: &Combination,
    placed: &Placed<'_>,
    results: &mut Results,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    if options.scenario.find_max {
        return knee::find_max(options, combination, placed, results).await;
    }
    let result = match measure(options, &options.scenario, combination, placed).await {
        Ok(result) => result,
        // A child killed or hung, a refused connection, a transport error: the row fails with
        // the reason, its processes are gone (each is killed when its handle drops), and the
        // run goes on with the rest.
        Err(error) => unmeasured(&options.scenario, combination, &error),
    };
    if let Some(said) = verdict(&result) {
        progress.println(said);
    }
    results.runs.push(result);
    results
        .write(placed.dir)
        .with_context(|| format!("writing the results to {}", placed.dir.display()))?;
    Ok(())
}

/// The FAILED row of a combination whose measurement ended with `error` before it had figures.
fn unmeasured(
    scenario: &Scenario,
    combination: &Combination,
    error: &anyhow::Error,
) -> TransportResult {
    let key = &combination.key;
    let spec = scenario.spec(&key.payload, combination.workload, key.subscribers);
    let expected = spec.deliveries_per_subscriber() * key.subscribers.max(1) as u64;
    TransportResult::unmeasured(
        key.clone(),
        (spec.per_stream_rate(), expected),
        combination.settings.clone(),
        combination.not_applied.clone(),
        format!("not measured: {error:#}"),
    )
}

/// What a row's delivery check says when it is worth saying: that it failed, and how, or
/// that its losses are every one accounted for.
fn verdict(result: &TransportResult) -> Option<String> {
    let (transport, subscribers) = (result.key.transport, result.key.subscribers);
    if result.failed {
        return Some(format!(
            "FAILED: {transport} with {subscribers} subscribers did not deliver the identical \
             stream: lost {}, duplicated {}, reordered {}, malformed {}{}",
            result.lost,
            result.duplicated,
            result.reordered,
            result.malformed,
            result
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    result.loss_accounted.then(|| {
        format!(
            "{transport} with {subscribers} subscribers: lost {}, every one accounted for ({} \
             in gaps past the replay window, {} cut off by drops not resumed)",
            result.lost, result.gapped, result.cut_off,
        )
    })
}

/// Where a combination's processes run.
pub(super) struct Placed<'a> {
    /// CPUs of the server under test (`None`: unpinned).
    pub server_cpus: Option<&'a [usize]>,
    /// CPUs the load workers are spread over, one each (`None`: unpinned).
    pub load_cpus: Option<&'a [usize]>,
    /// The run's directory, for interval logs.
    pub dir: &'a Path,
    /// The address the server listens on: loopback, or its address in its network namespace.
    pub server_ip: IpAddr,
}

/// The IPv4 address of network namespace `netns` (its first global one), where its server
/// listens and subscribers reach it.
async fn netns_address(netns: &str) -> anyhow::Result<IpAddr> {
    let output = tokio::process::Command::new("ip")
        .args(["-n", netns, "-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .await
        .context("running `ip` to find the server namespace's address")?;
    let text = String::from_utf8_lossy(&output.stdout);
    // Lines look like "2: pb-srv    inet 10.200.0.2/24 brd ... scope global pb-srv".
    text.split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|ip| ip.parse().ok())
        .with_context(|| {
            format!(
                "network namespace {netns:?} has no IPv4 address ({}); set it up with \
                 `scripts/netns-link up {netns}`",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
}

/// How long the parent waits for a child's next report beyond the scenario's own timeout.
const REPORT_SLACK: Duration = Duration::from_secs(60);

/// Measures one combination with a fresh server child and fresh load workers: rig, stream,
/// summarise.
pub(super) async fn measure(
    options: &RunOptions,
    scenario: &Scenario,
    combination: &Combination,
    placed: &Placed<'_>,
) -> anyhow::Result<TransportResult> {
    let setup = Setup::of(scenario, combination, placed)?;
    let exe = options.exe.as_path();
    let mut rig = Rig::up((exe, scenario), &setup, combination, placed).await?;
    let wait = scenario.timeout + REPORT_SLACK;
    let connected = rig.connected(wait).await?;
    // A server that may not count its subscribers right (behind a proxy) starts when the load
    // has them all, if it has not already.
    if setup.serve.start_on == StartOn::CountOrCommand {
        rig.start_stream(setup.serve.start_delay).await?;
    }
    let streamed = stream(rig, &setup, (exe, scenario), wait).await?;
    summary(combination, &setup, placed, &connected, streamed)
}

/// What the stream left: the server's stats, the workers' parts merged, the fault struck and
/// the samples taken through it.
struct Streamed {
    stats: ServeStats,
    /// The settings the server reported running with.
    server_settings: SettingValues,
    merged: Merged,
    /// How many load workers reported parts.
    parts: usize,
    restarted: Option<Restarted>,
    blackout: Option<(u64, u64)>,
    server_samples: Vec<TimedSample>,
    resources: Vec<ResourceSample>,
    resources_every: Duration,
    machine_after: MachineCpu,
    origin_ns: u64,
    /// The server's link: the share of packets it lost, and the bytes that crossed it.
    link: LinkFigures,
}

/// The workers' parts, once the stream is delivered. Each worker's subscribers keep their
/// connections once they have the stream; when every worker's do, all are let go, so no
/// subscriber's goodbye falls among deliveries still on their way to another.
async fn parts_of(mut workers: Vec<LoadWorker>, wait: Duration) -> anyhow::Result<Vec<LoadPart>> {
    for worker in &mut workers {
        worker.holding(wait).await?;
    }
    for worker in &mut workers {
        worker.release().await?;
    }
    let mut parts = Vec::with_capacity(workers.len());
    for worker in workers {
        parts.push(worker.part(wait).await?);
    }
    Ok(parts)
}

/// Lets the stream flow: the workers' parts come in once it is delivered; meanwhile the row's
/// fault, if it has one, is struck, and through a storm the server's CPU and memory are
/// sampled every 100 ms for its peak. A server that died during the stream ends the row.
async fn stream(
    rig: Rig,
    setup: &Setup,
    (exe, scenario): (&Path, &Scenario),
    wait: Duration,
) -> anyhow::Result<Streamed> {
    let Rig {
        server,
        pids,
        workers,
        blackout,
        origin_ns,
        link,
        ..
    } = rig;
    let collect = parts_of(workers, wait);
    let disrupt = disrupt::during_stream(server, setup, blackout.as_ref(), exe, scenario);
    let sampling = CancellationToken::new();
    let sampler = setup.storm.map(|_| {
        tokio::spawn(process::sample_until(
            pids.clone(),
            Duration::from_millis(100),
            sampling.clone(),
        ))
    });
    // A soak samples the server's memory, descriptors and CPU through the stream.
    let every = scenario.resources_every;
    let resources = (!every.is_zero()).then(|| {
        tokio::spawn(resources::sample_every(
            pids.clone(),
            every,
            origin_ns,
            sampling.clone(),
        ))
    });
    let (parts, disrupted) = tokio::join!(collect, disrupt);
    sampling.cancel();
    let server_samples = match sampler {
        Some(sampler) => sampler.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let resources = match resources {
        Some(resources) => resources.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let (mut server, restarted, blackout) = disrupted?;
    let parts = parts?;
    let machine_after = MachineCpu::sample().unwrap_or_default();
    let link = link.crossed(scenario.server_netns.as_deref());
    if let Some(status) = server.child().exited().filter(|s| !s.success()) {
        let stderr = server.child().stderr().await;
        anyhow::bail!("server {status} during the stream; its stderr:\n{stderr}");
    }
    let server_settings = server.settings().clone();
    let stats = server_stats(server, &parts).await?;
    Ok(Streamed {
        stats,
        server_settings,
        merged: Merged::of(&parts)?,
        parts: parts.len(),
        restarted,
        blackout,
        server_samples,
        resources,
        resources_every: every,
        machine_after,
        origin_ns,
        link,
    })
}

/// The server's stats once the load's `parts` are in. Where every subscriber failed before a
/// single event, the server is still waiting for them and will not finish on its own: it is
/// stopped at once rather than after the whole wait, and the subscribers' own error leads.
async fn server_stats(server: ServerChild, parts: &[LoadPart]) -> anyhow::Result<ServeStats> {
    let nobody_came = parts
        .iter()
        .all(|part| part.first_sent_ns.is_none() && !part.errors.is_empty());
    let finish_within = match nobody_came {
        true => Duration::from_secs(1),
        false => Duration::from_secs(30),
    };
    server.finish(finish_within).await.map_err(|error| {
        // A server left waiting for subscribers that never came says less than why they did
        // not: their first error leads, a subscriber's own failure before another's timeout.
        let mut errors = parts.iter().flat_map(|part| &part.errors);
        let own = errors.clone().find(|e| !super::load::is_timeout(e));
        match own.or(errors.next()) {
            Some(why) => anyhow::anyhow!("the subscribers failed: {why} (then: {error})"),
            None => error,
        }
    })
}

/// The row: the stream's figures with the memory sampled at connection, the CPUs each side
/// had, the settings both sides and the harness ran with, and the interval log written.
fn summary(
    combination: &Combination,
    setup: &Setup,
    placed: &Placed<'_>,
    connected: &Connected,
    streamed: Streamed,
) -> anyhow::Result<TransportResult> {
    let merged = &streamed.merged;
    let interval_log = write_interval_log(
        placed.dir,
        &combination.row(),
        merged,
        wall_time_of(streamed.origin_ns),
    )?;
    let client_rss: u64 = connected
        .workers
        .iter()
        .map(|c| c.connected.rss_bytes.saturating_sub(c.before.rss_bytes))
        .sum();
    Ok(summarise(Summary {
        row: combination.row(),
        not_applied: combination.not_applied.clone(),
        spec: &setup.spec,
        merged,
        stats: &streamed.stats,
        server_processes: setup.serve.processes,
        server_rss: connected
            .server
            .rss_bytes
            .saturating_sub(connected.server_before.rss_bytes),
        client_rss,
        kernel_socket_bytes: connected
            .kernel_before
            .zip(connected.kernel)
            .map(|(before, after)| after.saturating_sub(before)),
        established: connected.workers.iter().map(|c| c.subscribers).sum(),
        server_cpus: server_cores(placed, setup),
        load_cpus: match placed.load_cpus {
            Some(cpus) => cpus.len().min(streamed.parts),
            None => process::available_cpus().len(),
        },
        steal_share: Some(connected.machine.steal_share_until(&streamed.machine_after)),
        interval_log,
        settings: settings_ran(combination, &streamed),
        origin_ns: streamed.origin_ns,
        restarted: streamed.restarted.map(|r| Restarted {
            // What the first server spent on the stream before it was killed.
            first_life_cpu_us: r.first_life_cpu_us.saturating_sub(connected.server.cpu_us),
            ..r
        }),
        blackout: streamed.blackout,
        link: streamed.link,
        server_samples: streamed.server_samples.clone(),
        resources: (streamed.resources.clone(), streamed.resources_every),
    }))
}

/// The cores the server had: its pinned CPUs (or the machine's), fewer under a CPU limit.
fn server_cores(placed: &Placed<'_>, setup: &Setup) -> f64 {
    let cpus = placed
        .server_cpus
        .map_or(process::available_cpus().len(), <[usize]>::len) as f64;
    setup
        .limit
        .as_ref()
        .map_or(cpus, |limit| limit.cores().min(cpus))
}

/// What the processes ran with, as they reported it: the server's settings and the load's,
/// then those only this process acts on (faults such as the restart).
fn settings_ran(combination: &Combination, streamed: &Streamed) -> SettingValues {
    let mut settings = streamed.server_settings.clone();
    settings.0.extend(streamed.merged.settings.0.clone());
    let all = combination
        .settings
        .effective(&settings_of(combination.key.transport), Side::Both);
    for (name, value) in all.0 {
        settings.0.entry(name).or_insert(value);
    }
    settings
}
