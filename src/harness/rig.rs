//! The second step of `pushbench run`: everything one combination runs on. The server under
//! test as a child process (under its CPU limit), the path to it (nginx, the link emulator)
//! and the load workers, each told its job over the typed protocol; all torn down when the
//! rig is dropped, whatever ended the row.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::cpu_limit::CpuLimit;
use super::plan::Combination;
use super::run::Placed;
use super::settings::RESTART_AFTER;
use crate::clock::now_ns;
use crate::event::StreamSpec;
use crate::link::netns::LinkFigures;
use crate::link::via::{Nginx, Via, VIA};
use crate::link::{Blackout, BlackoutSwitch, Dialer, LinkStats, LINK};
use crate::metrics::kernel;
use crate::metrics::process::{self, MachineCpu, ProcessSample};
use crate::protocol::child::{LoadWorker, ServerChild, WorkerConnected};
use crate::protocol::{Command, Job, LoadJob, ServeOptions, StartOn, START_MARGIN};
use crate::results::scenario::Scenario;
use crate::transport::storm::{Storm, StormKind};
use crate::transport::tls::{TlsMaterial, TLS};
use crate::transport::{ClientConfig, Credentials, ServerConfig, SettingValues, Side, Target};

/// Idle hold before every stream, at least: long enough to sample memory with everyone
/// connected.
const MIN_START_DELAY: Duration = Duration::from_millis(300);

/// What both sides of one combination are told, before anything starts.
pub(super) struct Setup {
    /// The stream.
    pub spec: StreamSpec,
    /// The server's job (kept to start its successor after the restart fault).
    pub serve: ServeOptions,
    /// What every subscriber runs with.
    pub client: ClientConfig,
    /// When the restart fault kills the server (zero: never).
    pub restart_after: Duration,
    /// The storm the row goes through, if any.
    pub storm: Option<Storm>,
    /// The CPU limit on the server's processes, if any.
    pub limit: Option<CpuLimit>,
}

impl Setup {
    /// Every setting and credential for one combination; both reach the children over the
    /// protocol, not argv. A combination the run cannot measure as asked is refused here.
    pub fn of(
        scenario: &Scenario,
        combination: &Combination,
        placed: &Placed<'_>,
    ) -> anyhow::Result<Self> {
        let subscribers = combination.key.subscribers;
        let spec = scenario.spec(&combination.key.payload, combination.workload, subscribers);
        // The run's own certificate (self-signed, for the server's address) and the
        // transport's credentials, made fresh for this server: both sides are pushbench, so
        // the clients trust exactly that certificate. Every peer of the server is the run's
        // own (on loopback or in its namespaces), so the consents a run gives are given here.
        let tls = TlsMaterial::self_signed(&[placed.server_ip])?;
        let credentials = Credentials::for_run(combination.key.transport.spec());
        // Each child gets its transport's settings; the harness's own (link, proxy, restart)
        // are this process's to act on.
        let settings = combination
            .settings
            .effective(&combination.key.transport.settings(), Side::Both);
        // Behind a reverse proxy the server counts the proxy's connections, not subscribers:
        // nginx pools its upstream connections, so 500 short-polling subscribers may reach the
        // server over a few dozen, and a server waiting for 500 would wait for ever. There the
        // run starts the stream once the load says every subscriber is subscribed.
        let behind_proxy = VIA.read(&combination.settings) != Via::Direct;
        let serve = ServeOptions {
            transport: combination.key.transport,
            listen: SocketAddr::new(placed.server_ip, 0),
            spec: spec.clone(),
            start_after: subscribers,
            config: ServerConfig {
                settings: settings.clone(),
                tls: tls.clone(),
                credentials: credentials.clone(),
                ..ServerConfig::default()
            },
            drain_timeout: Duration::from_secs(15),
            start_delay: scenario.idle.max(MIN_START_DELAY),
            cpus: placed.server_cpus.map(<[usize]>::to_vec),
            announce: Vec::new(),
            schedule_origin_ns: None,
            returning: 0,
            processes: scenario.server_processes(subscribers),
            reuse_port: false,
            start_on: match behind_proxy {
                true => StartOn::CountOrCommand,
                false => StartOn::Count,
            },
            stats_out: None,
        };
        let setup = Self {
            restart_after: RESTART_AFTER.read(&combination.settings),
            storm: Storm::planned(&combination.settings),
            limit: CpuLimit::for_row(&combination.settings).map_err(anyhow::Error::msg)?,
            client: ClientConfig {
                settings,
                credentials: credentials.for_subscribers(),
                tls,
                population: subscribers,
                ..ClientConfig::default()
            },
            spec,
            serve,
        };
        setup.refuse()?;
        refuse_outside(&setup, combination)?;
        Ok(setup)
    }

    /// Faults and traffic that cannot run together, refused with the reason.
    fn refuse(&self) -> anyhow::Result<()> {
        let processes = self.serve.processes;
        if self.storm.is_some() && !self.restart_after.is_zero() {
            bail!(
                "a storm and the restart fault both take every subscriber's connection: \
                 measure them in rows of their own"
            );
        }
        refuse_two_way(
            &self.client.settings,
            &self.spec,
            processes,
            self.restart_after,
        )?;
        if processes > 1 && self.serve.start_on != StartOn::Count {
            bail!(
                "{} subscribers need {processes} server processes, and a reverse proxy in front \
                 is one process under the same open-file limit: measure --via with fewer \
                 subscribers",
                self.serve.start_after
            );
        }
        if processes > 1 && !self.restart_after.is_zero() {
            bail!(
                "{} subscribers need {processes} server processes, and the restart fault kills \
                 one server process: measure the restart with fewer subscribers",
                self.serve.start_after
            );
        }
        Ok(())
    }

    /// The blackhole storm, which `run` strikes on the link itself.
    pub fn blackhole(&self) -> Option<Storm> {
        self.storm
            .filter(|storm| storm.kind == StormKind::Blackhole)
    }

    /// Puts a process under the server's CPU limit, if there is one.
    pub fn place(&self, pid: u32) -> Result<(), String> {
        self.limit.as_ref().map_or(Ok(()), |limit| limit.add(pid))
    }
}

/// What a server pushbench did not write cannot do, refused with the reason: the settings its
/// profile does not take, and what only pushbench's own server does (the restart fault, a
/// workload of several streams, a fleet of processes).
fn refuse_outside(setup: &Setup, combination: &Combination) -> anyhow::Result<()> {
    let settings = &setup.client.settings;
    let Some(profile) = crate::profile::SERVER.read(settings).0 else {
        return Ok(());
    };
    if let Some(why) = crate::outside::refuses(combination.key.transport, settings) {
        bail!(why);
    }
    let name = &profile.name;
    if !setup.restart_after.is_zero() {
        bail!("--server {name}: the restart fault restarts pushbench's own server only");
    }
    let http_publisher = matches!(profile.publish, crate::profile::Publish::Http(_));
    if http_publisher && !combination.key.workload.is_broadcast() {
        bail!(
            "--server {name}: its profile publishes one broadcast stream; workload {} is \
             measured on pushbench's own server",
            combination.workload
        );
    }
    if setup.serve.processes > 1 {
        bail!(
            "--server {name}: {} subscribers need {} processes of pushbench's own server; \
             a profile's server is one",
            setup.serve.start_after,
            setup.serve.processes
        );
    }
    Ok(())
}

/// One combination's processes and path, running: the server, whatever stands in front of
/// it, and the load workers.
pub(super) struct Rig {
    /// The server under test.
    pub server: ServerChild,
    /// The processes that serve: the server child, or its fleet's members.
    pub pids: Vec<u32>,
    /// The load workers, until their parts are collected.
    pub workers: Vec<LoadWorker>,
    /// The switch that strikes a blackhole storm on the link, when there is one.
    pub blackout: Option<BlackoutSwitch>,
    /// The monotonic origin of the workers' intervals.
    pub origin_ns: u64,
    /// The server's processes before any subscriber connected.
    pub server_before: ProcessSample,
    /// The kernel's socket memory before any subscriber connected.
    pub kernel_before: Option<u64>,
    /// The server's link as the row began (its loss set, its bytes counted from here).
    pub link: LinkFigures,
    /// nginx, killed when the rig is dropped.
    _nginx: Option<Nginx>,
    /// Stops the link emulator when the rig is dropped.
    _stop_emulator: DropGuard,
}

/// The workers and the server with every subscriber connected (or given up): the memory
/// samples the connection cost is read from.
pub(super) struct Connected {
    /// Each worker's samples, before and connected.
    pub workers: Vec<WorkerConnected>,
    /// The server's processes before any subscriber connected, and with all connected.
    pub server_before: ProcessSample,
    pub server: ProcessSample,
    /// The kernel's socket memory, likewise.
    pub kernel_before: Option<u64>,
    pub kernel: Option<u64>,
    /// The machine's CPU counters as the stream is about to start (for steal).
    pub machine: MachineCpu,
}

impl Rig {
    /// Starts the server, the path to it and the load workers.
    pub async fn up(
        (exe, scenario): (&Path, &Scenario),
        setup: &Setup,
        combination: &Combination,
        placed: &Placed<'_>,
    ) -> anyhow::Result<Self> {
        let transport = combination.key.transport;
        // A CPU limit takes the server child before its job (so its fleet's members too) and
        // any process the transport's server works in besides (an outside broker).
        let place = |pid: u32| setup.place(pid);
        let job = Job::Serve(Box::new(setup.serve.clone()));
        let netns = scenario.server_netns.as_deref();
        let link = LinkFigures::before_row(netns, &combination.settings)?;
        // A server a profile names is started by the server child, so it is under the same
        // limit (a cgroup's processes' children stay in it).
        let server = ServerChild::spawn_placed(exe, job, netns, "server".into(), &place).await?;
        let pids = server.pids().to_vec();
        let server_before = process::sample_sum(&pids);
        let kernel_before = kernel::socket_bytes();
        let nginx = proxy_in_front(&combination.settings, server.addr()).await?;
        let behind_proxy = nginx.as_ref().map_or(server.addr(), Nginx::addr);
        let emulator = CancellationToken::new();
        let _stop_emulator = emulator.clone().drop_guard();
        // Where the server dials its subscribers (webhooks), the link stands in front of their
        // endpoints instead, in the load (`run_subscribers`).
        let (target, blackout) = match transport.spec().traits.needs_inbound_http {
            true => (behind_proxy, None),
            false => {
                link_in_front(
                    &combination.settings,
                    setup.blackhole(),
                    behind_proxy,
                    emulator,
                )
                .await?
            }
        };
        let origin_ns = now_ns();
        let workers = spawn_workers(
            (exe, scenario),
            setup,
            combination,
            placed,
            (target, origin_ns),
        )
        .await?;
        Ok(Self {
            server,
            pids,
            workers,
            blackout,
            origin_ns,
            server_before,
            kernel_before,
            link,
            _nginx: nginx,
            _stop_emulator,
        })
    }

    /// Starts the stream of a server that waits to be told (one behind a proxy): after
    /// `delay`, the idle hold the server would otherwise keep itself, on a schedule that
    /// begins a moment after the command is sent.
    pub async fn start_stream(&mut self, delay: Duration) -> anyhow::Result<()> {
        tokio::time::sleep(delay).await;
        let origin_ns = now_ns() + START_MARGIN.as_nanos() as u64;
        self.server
            .child()
            .send(&Command::Start { origin_ns })
            .await
    }

    /// Waits until every worker's subscribers are connected (or given up), then samples
    /// memory before the stream starts.
    pub async fn connected(&mut self, wait: Duration) -> anyhow::Result<Connected> {
        let mut workers = Vec::with_capacity(self.workers.len());
        for worker in &mut self.workers {
            workers.push(worker.connected(wait).await?);
        }
        Ok(Connected {
            workers,
            server_before: self.server_before,
            server: process::sample_sum(&self.pids),
            kernel_before: self.kernel_before,
            kernel: kernel::socket_bytes(),
            machine: MachineCpu::sample().unwrap_or_default(),
        })
    }
}

/// The load workers, one per share of the subscribers, each pinned to a load CPU of its own
/// and dialing `target`, their intervals from `origin_ns`.
async fn spawn_workers(
    (exe, scenario): (&Path, &Scenario),
    setup: &Setup,
    combination: &Combination,
    placed: &Placed<'_>,
    (target, origin_ns): (SocketAddr, u64),
) -> anyhow::Result<Vec<LoadWorker>> {
    let subscribers = combination.key.subscribers;
    let shares = worker_shares(
        subscribers,
        scenario.load_workers(placed.load_cpus, subscribers),
    );
    // Where the server dials its subscribers (webhooks), the link stands in front of their
    // endpoints, which the load runs: there it is the load's to put in place.
    let link = LINK.read(&combination.settings);
    let relay_link = (combination.key.transport.spec().traits.needs_inbound_http
        && !link.is_direct())
    .then(|| link.to_string());
    let mut workers = Vec::with_capacity(shares.len());
    for (index, &(first, count)) in shares.iter().enumerate() {
        let job = LoadJob {
            worker: index,
            transport: combination.key.transport,
            target: Target::at(target),
            subscribers: count,
            first_subscriber: first,
            spec: setup.spec.clone(),
            warmup: scenario.warmup,
            interval_origin_ns: origin_ns,
            config: setup.client.clone(),
            timeout: scenario.timeout,
            cpus: placed.load_cpus.map(|cpus| vec![cpus[index % cpus.len()]]),
            measure_clock: false,
            relay_link: relay_link.clone(),
        };
        workers.push(LoadWorker::spawn(exe, Job::Load(Box::new(job)), index).await?);
    }
    Ok(workers)
}

/// A reverse proxy in front of the server, when the row asks for one (nginx, killed when the
/// row ends).
async fn proxy_in_front(
    settings: &SettingValues,
    server: SocketAddr,
) -> anyhow::Result<Option<Nginx>> {
    match VIA.read(settings) {
        Via::Direct => Ok(None),
        via if TLS.read(settings) => {
            bail!("tls on behind {via:?}: the reverse proxy is set up for plain HTTP only")
        }
        via => {
            let dir = std::env::temp_dir().join(format!("pushbench-nginx-{}", std::process::id()));
            Ok(Some(Nginx::start(via, server, &dir).await?))
        }
    }
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
        (listener, Dialer::Subscriber),
        behind,
        link,
        stats,
        blackout,
        stop,
    ));
    Ok((addr, blackhole.map(|_| switch)))
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
    spec: &StreamSpec,
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
