//! `pushbench run`: one driver for every scenario and every transport. For each combination it
//! starts the server under test as a child process pinned apart from the load, and the
//! subscribers as load worker processes (one per load CPU by default), all fresh, all told their
//! job over the typed protocol; merges what the workers measured exactly, stops the server, and
//! adds one entry to the results. Load shape is data (the [`Scenario`]); nothing here depends on
//! which transport runs.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::settings::{settings_of, RESTART_AFTER};
use crate::clock::now_ns;
use crate::link::via::{Nginx, Via, VIA};
use crate::link::{Blackout, BlackoutSwitch, LinkStats, LINK};
use crate::metrics::kernel;
use crate::metrics::machine::Machine;
use crate::metrics::process::{self, MachineCpu};
use crate::protocol::open_files::raise_open_file_limit;
use crate::protocol::Job;
use crate::protocol::ServeOptions;
use crate::results::key::{RowKey, Workload as KeyWorkload};
use crate::results::scenario::Scenario;
use crate::results::{
    utc_stamp, Placement, Results, Rounds, Settings, TransportResult, SCHEMA_VERSION,
};
use crate::transport::storm::{Storm, StormKind};
use crate::transport::tls::{TlsMaterial, TLS};
use crate::transport::{
    ClientConfig, Credentials, Outside, ServerConfig, SettingValues, Side, Target, Transport,
    CLIENT_IMPL, SERVER_IMPL,
};
use crate::workload::Workload;

use super::calibrate::calibrate;
use super::cpu_limit::CpuLimit;
use super::knee;
use super::part::Merged;
use super::rounds;
use super::summary::{summarise, wall_time_of, write_interval_log, Restarted, Row, Summary};
use crate::protocol::child::{LoadWorker, Place, ServerChild};
use crate::protocol::LoadJob;

/// Idle hold before every stream, at least: long enough to sample memory with everyone
/// connected.
const MIN_START_DELAY: Duration = Duration::from_millis(300);

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

/// One combination to measure: a row of the results, in one round.
#[derive(Clone)]
pub(super) struct Combination {
    /// What tells its row from the others, and its round.
    pub key: RowKey,
    /// The workload that runs (the key records it).
    workload: Workload,
    /// Every setting the run of the transport takes for this row.
    pub settings: SettingValues,
    /// Settings given to the run that this transport does not take.
    not_applied: Vec<String>,
}

impl Combination {
    /// What tells its row from the others, and which round this is.
    fn row(&self) -> Row<'_> {
        Row {
            key: &self.key,
            repeat: self.key.round,
        }
    }

    /// The transport, with its swept settings when there are any (`longpoll longpoll-hold=1s`).
    fn label(&self) -> String {
        self.row().label()
    }
}

/// Runs the scenario, writing results as it goes (so an interrupted or failed run keeps what
/// it measured, marked incomplete).
pub async fn run(options: RunOptions) -> anyhow::Result<RunOutcome> {
    let scenario = &options.scenario;
    raise_open_file_limit();
    // Before pinning, so the machine's CPU count is the machine's, not the load's share.
    let machine = Machine::describe();
    let placement = match process::split_cpus().filter(|_| options.pin) {
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
    };
    let server_cpus: Option<Vec<usize>> = placement.pinned.then(|| placement.server_cpus.clone());
    let load_cpus: Option<Vec<usize>> = placement.pinned.then(|| placement.load_cpus.clone());
    let server_cpus = server_cpus.as_deref();
    let calibration = calibrate(&options.exe, server_cpus).await?;
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let run_id = format!("{}-{}", utc_stamp(started_unix), scenario.name);
    let dir = options.out.join(&run_id);
    let server_ip = match &scenario.server_netns {
        Some(netns) => netns_address(netns).await?,
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let placed = Placed {
        server_cpus,
        load_cpus: load_cpus.as_deref(),
        dir: &dir,
        server_ip,
    };
    // The shared settings every server child runs with (each gets its config over the
    // protocol; each transport's own settings are recorded per row, as the children report).
    let defaults = ServerConfig::default();
    let mut results = Results {
        schema_version: SCHEMA_VERSION,
        run_id,
        started_unix,
        complete: false,
        machine,
        placement,
        calibration,
        settings: Settings {
            batch_events: defaults.batch.events,
            batch_bytes: defaults.batch.bytes,
            heartbeat_secs: defaults.heartbeat.as_secs_f64(),
        },
        scenario: scenario.clone(),
        runs: Vec::new(),
        max_rates: Vec::new(),
        rounds: None,
    };

    let rounds = if scenario.find_max {
        1
    } else {
        scenario.repeat.max(1)
    };
    let plan = plan(scenario, rounds > 1)?;
    let seed = rounds::order_seed(scenario.seed);
    let combinations: Vec<Combination> = rounds::interleave(plan.len(), rounds, seed)
        .into_iter()
        .map(|(round, index)| {
            let mut combination = plan[index].clone();
            combination.key.round = round;
            combination
        })
        .collect();
    if rounds > 1 {
        let order = |round: u32| {
            combinations
                .iter()
                .filter(|c| c.key.round == round)
                .map(Combination::label)
                .collect()
        };
        results.rounds = Some(Rounds {
            seed,
            orders: (0..rounds).map(order).collect(),
            floors: vec![results.calibration.clone()],
        });
    }
    let progress = ProgressBar::new(combinations.len() as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut interrupted = false;
    for (i, combination) in combinations.iter().enumerate() {
        // Each round after the first measures the machine's floor again as it begins.
        let round = combination.key.round;
        let begins = i > 0 && combinations[i - 1].key.round != round;
        if let (true, Some(rounds)) = (begins, results.rounds.as_mut()) {
            rounds
                .floors
                .push(calibrate(&options.exe, server_cpus).await?);
        }
        progress.set_message(format!(
            "{} x{} {} B{}",
            combination.label(),
            combination.key.subscribers,
            combination.key.payload,
            if rounds > 1 {
                format!(" (round {} of {rounds})", round + 1)
            } else {
                String::new()
            }
        ));
        if scenario.find_max {
            let found = tokio::select! {
                found = knee::find_max(&options, combination, &placed, &mut results) => found,
                _ = tokio::signal::ctrl_c() => {
                    interrupted = true;
                    break;
                }
            };
            if let Err(error) = found {
                progress.finish_and_clear();
                let path = results.write(&dir)?;
                return Err(error.context(format!("partial results kept in {}", path.display())));
            }
            progress.inc(1);
            continue;
        }
        let measured = tokio::select! {
            measured = measure(&options, scenario, combination, &placed) => measured,
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                break;
            }
        };
        match measured {
            Ok(result) => {
                if result.failed {
                    progress.println(format!(
                        "FAILED: {} with {} subscribers did not deliver the identical stream: lost {}, \
                         duplicated {}, reordered {}, malformed {}{}",
                        result.key.transport,
                        result.key.subscribers,
                        result.lost,
                        result.duplicated,
                        result.reordered,
                        result.malformed,
                        result.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                    ));
                } else if result.loss_accounted {
                    progress.println(format!(
                        "{} with {} subscribers: lost {}, every one accounted for ({} in gaps past \
                         the replay window, {} cut off by drops not resumed)",
                        result.key.transport,
                        result.key.subscribers,
                        result.lost,
                        result.gapped,
                        result.cut_off,
                    ));
                }
                results.runs.push(result);
                results.write(&dir)?;
            }
            Err(error) => {
                // A crashed server ends the run: keep what was measured, marked incomplete.
                progress.finish_and_clear();
                let path = results.write(&dir)?;
                return Err(error.context(format!(
                    "{} with {} subscribers; partial results kept in {}",
                    combination.key.transport,
                    combination.key.subscribers,
                    path.display()
                )));
            }
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

/// Where a combination's processes run.
pub(super) struct Placed<'a> {
    /// CPUs of the server under test (`None`: unpinned).
    server_cpus: Option<&'a [usize]>,
    /// CPUs the load workers are spread over, one each (`None`: unpinned).
    load_cpus: Option<&'a [usize]>,
    /// The run's directory, for interval logs.
    pub dir: &'a Path,
    /// The address the server listens on: loopback, or its address in its network namespace.
    server_ip: IpAddr,
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

/// The plan: every combination the scenario measures, once, in order (payload, workload,
/// fan-out, transport, swept settings), each with its key, every setting its transport takes
/// and the given settings it does not. With `floor_in_every_round`, the floor transport is
/// measured too where the scenario did not select it: rounds pair every row with the floor's
/// row of the same round.
fn plan(scenario: &Scenario, floor_in_every_round: bool) -> anyhow::Result<Vec<Combination>> {
    let mut transports = scenario.transports.clone();
    if floor_in_every_round && !transports.iter().any(|t| t.traits().floor) {
        transports.extend(Transport::ALL.iter().copied().filter(|t| t.traits().floor));
    }
    let mut combinations = Vec::new();
    for payload in &scenario.payloads {
        for &workload in &scenario.workloads {
            for &subscribers in &scenario.subscribers {
                for &transport in &transports {
                    let takes = settings_of(transport);
                    // Given settings this transport does not take: it runs without them, and its
                    // rows say so (the scenario refused any that no transport takes).
                    let not_applied: Vec<String> = scenario
                        .settings
                        .keys()
                        .filter(|name| !takes.iter().any(|s| s.name() == name.as_str()))
                        .cloned()
                        .collect();
                    for (settings, mut variant) in scenario.variants(&takes) {
                        // The implementations are dimensions of the key, not swept settings.
                        for chosen in [SERVER_IMPL.name, CLIENT_IMPL.name] {
                            variant.0.remove(chosen);
                        }
                        let mut key = RowKey::own(transport, subscribers, payload.clone(), variant);
                        key.workload = KeyWorkload::of(&workload);
                        key.server_impl = transport
                            .server_impl(&settings)
                            .map_err(anyhow::Error::msg)?
                            .name
                            .to_owned();
                        key.client_impl = transport
                            .client_impl(&settings)
                            .map_err(anyhow::Error::msg)?
                            .name
                            .to_owned();
                        combinations.push(Combination {
                            key,
                            workload,
                            settings,
                            not_applied: not_applied.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(combinations)
}

/// Measures one combination with a fresh server child and fresh load workers.
pub(super) async fn measure(
    options: &RunOptions,
    scenario: &Scenario,
    combination: &Combination,
    placed: &Placed<'_>,
) -> anyhow::Result<TransportResult> {
    let subscribers = combination.key.subscribers;
    let spec = scenario.spec(&combination.key.payload, combination.workload, subscribers);
    // Every setting and credential reaches the children over the protocol, not argv. The
    // run's own certificate (self-signed, for the server's address) and the transport's
    // credentials, made fresh for this server: both sides get them over the protocol, and
    // both are pushbench, so the clients trust exactly that certificate. Every peer of the
    // server is the run's own (on loopback or in its namespaces), so the consents a run gives
    // are given here, explicitly.
    let tls = TlsMaterial::self_signed(&[placed.server_ip])?;
    let credentials = Credentials::for_run(combination.key.transport.spec());
    // Each child gets its transport's settings; the harness's own (link, proxy, restart)
    // are this process's to act on.
    let transport_settings = combination
        .settings
        .effective(&combination.key.transport.settings(), Side::Both);
    let server_config = ServerConfig {
        settings: transport_settings.clone(),
        tls: tls.clone(),
        credentials: credentials.clone(),
        ..ServerConfig::default()
    };
    let serve = ServeOptions {
        transport: combination.key.transport,
        listen: SocketAddr::new(placed.server_ip, 0),
        spec: spec.clone(),
        start_after: subscribers,
        config: server_config.clone(),
        drain_timeout: Duration::from_secs(15),
        start_delay: scenario.idle.max(MIN_START_DELAY),
        cpus: placed.server_cpus.map(<[usize]>::to_vec),
        announce: Vec::new(),
        schedule_origin_ns: None,
        returning: 0,
        processes: scenario.server_processes(subscribers),
        reuse_port: false,
        awaits_start: false,
        stats_out: None,
    };
    let restart_after = RESTART_AFTER.read(&combination.settings);
    let storm = Storm::planned(&combination.settings);
    if storm.is_some() && !restart_after.is_zero() {
        bail!(
            "a storm and the restart fault both take every subscriber's connection: measure \
             them in rows of their own"
        );
    }
    refuse_two_way(&transport_settings, &spec, serve.processes, restart_after)?;
    let blackhole = storm.filter(|storm| storm.kind == StormKind::Blackhole);
    let server_processes = serve.processes;
    if serve.processes > 1 && !restart_after.is_zero() {
        bail!(
            "{subscribers} subscribers need {} server processes, and the restart fault kills \
             one server process: measure the restart with fewer subscribers",
            serve.processes
        );
    }
    let netns = scenario.server_netns.as_deref();
    // A CPU limit takes the server child before its job (so its fleet's members too) and any
    // process the transport's server works in besides (an outside broker).
    let limit = CpuLimit::for_row(&combination.settings).map_err(anyhow::Error::msg)?;
    let place = |pid: u32| limit.as_ref().map_or(Ok(()), |limit| limit.add(pid));
    let job = Job::Serve(Box::new(serve.clone()));
    let server =
        ServerChild::spawn_placed(&options.exe, job, netns, "server".into(), &place).await?;
    if let Outside::Process(pid) = (combination.key.transport.spec().outside)(&transport_settings) {
        place(pid).map_err(anyhow::Error::msg)?;
    }
    // The processes that serve: the server child, or its fleet's members.
    let pids = server.pids().to_vec();
    let server_before = process::sample_sum(&pids);
    let kernel_before = kernel::socket_bytes();

    let client = ClientConfig {
        settings: transport_settings,
        credentials: credentials.for_subscribers(),
        tls,
        population: subscribers,
        ..ClientConfig::default()
    };
    let shares = worker_shares(
        subscribers,
        scenario.load_workers(placed.load_cpus, subscribers),
    );
    // A reverse proxy, when asked for, goes in front of the server (nginx, killed when this
    // row ends); a bad link in front of whatever subscribers would reach: the link emulator,
    // which runs here, apart from both the server's and the load's processes.
    let nginx = match VIA.read(&combination.settings) {
        Via::Direct => None,
        via if TLS.read(&combination.settings) => {
            bail!("tls on behind {via:?}: the reverse proxy is set up for plain HTTP only")
        }
        via => {
            let dir = std::env::temp_dir().join(format!("pushbench-nginx-{}", std::process::id()));
            Some(Nginx::start(via, server.addr(), &dir).await?)
        }
    };
    let behind_proxy = nginx.as_ref().map_or(server.addr(), Nginx::addr);
    let emulator = CancellationToken::new();
    let _stop_emulator = emulator.clone().drop_guard();
    let (target, blackout) =
        link_in_front(&combination.settings, blackhole, behind_proxy, emulator).await?;
    let origin_ns = now_ns();
    let mut workers = Vec::with_capacity(shares.len());
    for (index, &(first, count)) in shares.iter().enumerate() {
        let job = LoadJob {
            worker: index,
            transport: combination.key.transport,
            target: Target::at(target),
            subscribers: count,
            first_subscriber: first,
            spec: spec.clone(),
            warmup: scenario.warmup,
            interval_origin_ns: origin_ns,
            config: client.clone(),
            timeout: scenario.timeout,
            cpus: placed.load_cpus.map(|cpus| vec![cpus[index % cpus.len()]]),
            measure_clock: false,
        };
        workers.push(LoadWorker::spawn(&options.exe, Job::Load(Box::new(job)), index).await?);
    }

    // Everyone connected (or given up): sample memory before the stream starts.
    let wait = scenario.timeout + REPORT_SLACK;
    let mut connected = Vec::with_capacity(workers.len());
    for worker in &mut workers {
        connected.push(worker.connected(wait).await?);
    }
    let server_connected = process::sample_sum(&pids);
    let kernel_connected = kernel::socket_bytes();
    let machine_before = MachineCpu::sample().unwrap_or_default();

    // The parts come in once the stream is delivered; meanwhile the restart fault, if asked
    // for, kills the server and starts its successor.
    let collect = async {
        let mut parts = Vec::with_capacity(workers.len());
        for worker in workers {
            parts.push(worker.part(wait).await?);
        }
        anyhow::Ok(parts)
    };
    let restart = async {
        let mut server = server;
        if let (Some(storm), Some(switch)) = (blackhole, &blackout) {
            let origin_ns = server.stream_started(scenario.timeout).await?;
            let start = origin_ns + storm.after.as_nanos() as u64;
            let window = (start, start + storm.length.as_nanos() as u64);
            switch.strike(window.0, window.1);
            return Ok((server, None, Some(window)));
        }
        if restart_after.is_zero() {
            return Ok((server, None, None));
        }
        let (server, restarted) = restart_server(
            server,
            restart_after,
            (&options.exe, &place),
            serve,
            scenario,
        )
        .await?;
        anyhow::Ok((server, restarted, None))
    };
    // Through a storm, the server's CPU and memory are sampled every 100 ms for its peak.
    let sampling = CancellationToken::new();
    let sampler = storm.map(|_| {
        tokio::spawn(process::sample_until(
            pids.clone(),
            Duration::from_millis(100),
            sampling.clone(),
        ))
    });
    let (parts, restarted) = tokio::join!(collect, restart);
    sampling.cancel();
    let server_samples = match sampler {
        Some(sampler) => sampler.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let (mut server, restarted, blackout) = restarted?;
    let parts = parts?;
    let machine_after = MachineCpu::sample().unwrap_or_default();
    if let Some(status) = server.child().exited().filter(|s| !s.success()) {
        let stderr = server.child().stderr().await;
        anyhow::bail!("server {status} during the stream; its stderr:\n{stderr}");
    }
    let server_settings = server.settings().clone();
    let stats = server.finish(Duration::from_secs(30)).await?;
    let merged = Merged::of(&parts)?;
    // What the processes ran with, as they reported it: the server's settings and the load's.
    let mut settings = server_settings;
    settings.0.extend(merged.settings.0.clone());
    // ...and those only this process acts on (faults such as the restart).
    let all = combination
        .settings
        .effective(&settings_of(combination.key.transport), Side::Both);
    for (name, value) in all.0 {
        settings.0.entry(name).or_insert(value);
    }
    let interval_log = write_interval_log(
        placed.dir,
        &combination.row(),
        &merged,
        wall_time_of(origin_ns),
    )?;

    let client_rss: u64 = connected
        .iter()
        .map(|c| c.connected.rss_bytes.saturating_sub(c.before.rss_bytes))
        .sum();
    let established: usize = connected.iter().map(|c| c.subscribers).sum();
    Ok(summarise(Summary {
        row: combination.row(),
        not_applied: combination.not_applied.clone(),
        spec: &spec,
        merged: &merged,
        stats: &stats,
        server_processes,
        server_rss: server_connected
            .rss_bytes
            .saturating_sub(server_before.rss_bytes),
        client_rss,
        kernel_socket_bytes: kernel_before
            .zip(kernel_connected)
            .map(|(before, after)| after.saturating_sub(before)),
        established,
        server_cpus: {
            let cpus = placed
                .server_cpus
                .map_or(process::available_cpus().len(), <[usize]>::len);
            limit
                .as_ref()
                .map_or(cpus as f64, |limit| limit.cores().min(cpus as f64))
        },
        load_cpus: match placed.load_cpus {
            Some(cpus) => cpus.len().min(parts.len()),
            None => process::available_cpus().len(),
        },
        steal_share: Some(machine_before.steal_share_until(&machine_after)),
        interval_log,
        settings,
        origin_ns,
        restarted: restarted.map(|r| Restarted {
            // What the first server spent on the stream before it was killed.
            first_life_cpu_us: r.first_life_cpu_us.saturating_sub(server_connected.cpu_us),
            ..r
        }),
        blackout,
        server_samples,
    }))
}

/// What subscribers dial: `behind`, or in front of it the link emulator when the row asks for
/// a bad link or a blackhole storm (with the switch that strikes the storm's blackout). It
/// runs in this process, apart from both the server's and the load's, until `stop`.
async fn link_in_front(
    settings: &SettingValues,
    blackhole: Option<Storm>,
    behind: SocketAddr,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, Option<BlackoutSwitch>)> {
    let link = LINK.read(settings);
    if link.is_direct() && blackhole.is_none() {
        return Ok((behind, None));
    }
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let (switch, blackout) = Blackout::new();
    let stats = std::sync::Arc::new(LinkStats::default());
    tokio::spawn(crate::link::serve(
        listener, behind, link, stats, blackout, stop,
    ));
    Ok((addr, blackhole.map(|_| switch)))
}

/// The restart fault: waits until `after` past the stream's start, kills the server as a crash
/// would (SIGKILL), and starts a new one on the same address that serves the same stream on
/// the same schedule. A server that finished first is left alone.
async fn restart_server(
    mut server: ServerChild,
    after: Duration,
    (exe, place): (&Path, &Place<'_>),
    mut serve: ServeOptions,
    scenario: &Scenario,
) -> anyhow::Result<(ServerChild, Option<Restarted>)> {
    let origin_ns = server.stream_started(scenario.timeout).await?;
    crate::clock::sleep_until_ns(origin_ns + after.as_nanos() as u64).await;
    if server.child().exited().is_some() {
        return Ok((server, None));
    }
    let first_life_cpu_us = server
        .pid()
        .and_then(|pid| process::sample(Some(pid)).ok())
        .map_or(0, |s| s.cpu_us);
    let killed_ns = now_ns();
    let addr = server.addr();
    server.kill().await?;
    serve.listen = addr;
    serve.start_delay = Duration::ZERO;
    serve.schedule_origin_ns = Some(origin_ns);
    // Every subscriber of the killed server is expected back.
    serve.returning = std::mem::take(&mut serve.start_after).max(serve.returning);
    let netns = scenario.server_netns.as_deref();
    let job = Job::Serve(Box::new(serve));
    let server = ServerChild::spawn_placed(exe, job, netns, "server".into(), place)
        .await
        .context("starting the server again after the restart fault")?;
    let restarted = Restarted {
        origin_ns,
        down_ns: (killed_ns, now_ns()),
        first_life_cpu_us,
    };
    Ok((server, Some(restarted)))
}

/// Splits `subscribers` over at most `workers` workers: (index of the first, how many).
fn worker_shares(subscribers: usize, workers: usize) -> Vec<(usize, usize)> {
    let workers = workers.clamp(1, subscribers.max(1));
    let (each, extra) = (subscribers / workers, subscribers % workers);
    let mut first = 0;
    (0..workers)
        .map(|i| {
            let count = each + usize::from(i < extra);
            let share = (first, count);
            first += count;
            share
        })
        .collect()
}

/// Two-way traffic the run cannot measure as asked, refused with the reason: what the
/// transport's settings refuse alone, copies to rooms split over several server processes
/// (each holds its own rooms), and a server restart (which loses its ledger).
fn refuse_two_way(
    settings: &SettingValues,
    spec: &crate::event::StreamSpec,
    server_processes: usize,
    restart_after: Duration,
) -> anyhow::Result<()> {
    if let Some(why) = crate::transport::upstream::refusal(settings, spec) {
        bail!(why);
    }
    let Some(upstream) = crate::transport::upstream::options(settings, spec, usize::MAX) else {
        return Ok(());
    };
    if upstream.echo && server_processes > 1 {
        bail!(
            "--upstream-echo over {server_processes} server processes: each holds its own \
             rooms, so copies would miss the members on the others; measure the echo with \
             fewer subscribers"
        );
    }
    if !restart_after.is_zero() {
        bail!(
            "--upstream-rate with --restart-after: the restarted server starts a new ledger of \
             the messages sent up; measure the two apart"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subscribers are spread over workers as evenly as possible, every one counted once.
    #[test]
    fn shares_cover_every_subscriber_once() {
        assert_eq!(worker_shares(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(worker_shares(1, 4), vec![(0, 1)]);
        assert_eq!(worker_shares(9000, 1), vec![(0, 9000)]);
    }
}
