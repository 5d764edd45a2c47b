//! The server under test as a unit: bind, serve one transport, start the stream once enough
//! subscribers are there, publish it on schedule, wait until it is delivered, stop. `pushbench
//! serve` is this in a process of its own (speaking to people, or in the typed protocol to
//! `pushbench run`), or in several sharing one port ([`fleet`]); tests run it in-process.
//! [`link_process`] is `pushbench link`, the link emulator as a process of its own in front of
//! any server.

pub mod fleet;
pub mod link_process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ns;
use crate::clock::probe::{answer_probes, bind_responder, LastProbe};
use crate::event::StreamSpec;
use crate::hub::{Hub, HubOptions};
use crate::metrics::kernel;
use crate::metrics::process::{self, ProcessSample};
use crate::metrics::sockets::{SocketCounters, SocketTotals};
use crate::protocol::{self, stdout, Command, Report};
use crate::protocol::{PartFile, ServeOptions, ServeStats, ServerPart, StartOn};
use crate::publisher::{publish_stream, Published};
use crate::transport::resume::{reconnect_grace, replay_window};
use crate::transport::tls::TLS;
use crate::transport::{Faults, Outside, ServerConfig, SettingValues, Side, Transport};

/// A transport's server, running, with the hub it publishes through.
pub struct Server {
    addr: SocketAddr,
    hub: Arc<Hub>,
    counters: Arc<SocketCounters>,
    faults: Faults,
    settings: SettingValues,
    /// How long the stream's end waits for a subscriber that dropped to come back.
    grace: Duration,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    /// When a load worker of another host last timed this server's clock.
    last_probe: LastProbe,
    /// The server pushbench did not write that serves the subscribers, where the settings name
    /// one (stopped when this is dropped).
    outside: Option<crate::outside::Running>,
}

impl Server {
    /// Binds `listen` and starts serving `transport` for a stream of `expected` events.
    pub async fn start(
        transport: Transport,
        listen: SocketAddr,
        expected: u64,
        config: ServerConfig,
    ) -> anyhow::Result<Self> {
        Self::start_shared(transport, listen, false, expected, config).await
    }

    /// As [`Server::start`]; with `reuse_port`, the port is shared with other server processes
    /// (SO_REUSEPORT: the kernel spreads new connections over them).
    pub async fn start_shared(
        transport: Transport,
        listen: SocketAddr,
        reuse_port: bool,
        expected: u64,
        config: ServerConfig,
    ) -> anyhow::Result<Self> {
        // QUIC has no plaintext: `--tls` means nothing to a transport carried on it.
        if transport.traits().udp && config.settings.0.contains_key(TLS.name) {
            anyhow::bail!(
                "{transport} is always TLS 1.3 (QUIC has no plaintext): it takes no --tls; its \
                 certificate is --tls-cert/--tls-key, or one made at start"
            );
        }
        // A setting the transport does not take, or a value that does not parse, is refused
        // here rather than run at its default.
        config
            .settings
            .check(&transport.settings())
            .map_err(|why| anyhow::anyhow!("{transport}: {why}"))?;
        let listener = bind_listener(listen, reuse_port)
            .with_context(|| format!("cannot listen on {listen} (is the port already in use?)"))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        // Load workers on other hosts time round trips to this clock over UDP at the same port
        // number. Without it only they lose something, and they say so.
        // A transport carried on UDP takes that port itself, and the probes go unanswered.
        let last_probe = LastProbe::default();
        if transport.traits().udp {
            tracing::info!(
                "clock probes are not answered on {addr}/udp: {transport} serves QUIC there"
            );
        } else {
            match bind_responder(addr, reuse_port) {
                Ok(socket) => drop(tokio::spawn(answer_probes(
                    socket,
                    Arc::clone(&last_probe),
                    shutdown.clone(),
                ))),
                Err(e) => tracing::warn!("cannot answer clock probes on {addr}/udp: {e}"),
            }
        }
        let hub = Hub::with_options(
            expected,
            HubOptions {
                replay_window: replay_window(&config.settings),
                delivery_delay: config.faults.delivery_delay,
                streams: config.streams,
                upstream: config.upstream,
            },
        );
        let counters = Arc::clone(&config.counters);
        let faults = config.faults;
        // What this server runs with, defaults included, so results record it.
        let settings = config
            .settings
            .effective(&transport.settings(), Side::Server);
        let grace = reconnect_grace(&config.settings);
        let (task, outside) = match crate::profile::SERVER.read(&config.settings).0 {
            None => {
                let serving = transport.serve(listener, Arc::clone(&hub), config, shutdown.clone());
                (tokio::spawn(serving), None)
            }
            // A server pushbench did not write takes the address; the stream is published
            // through it.
            Some(profile) => {
                if let Some(why) = crate::outside::refuses(transport, &config.settings) {
                    anyhow::bail!(why);
                }
                let hub = Arc::clone(&hub);
                let (running, publishing) = crate::outside::start(
                    profile,
                    transport,
                    listener,
                    hub,
                    config,
                    shutdown.clone(),
                )
                .await?;
                (tokio::spawn(publishing), Some(running))
            }
        };
        Ok(Self {
            addr,
            hub,
            counters,
            faults,
            settings,
            grace,
            shutdown,
            task,
            last_probe,
            outside,
        })
    }

    /// The transport's server settings this server runs with, defaults included.
    pub fn settings(&self) -> &SettingValues {
        &self.settings
    }

    /// The address subscribers connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How late the events were published into the server pushbench did not write, where
    /// they were published over HTTP.
    pub fn outside_lateness(&self) -> Option<crate::metrics::latency::Lateness> {
        self.outside.as_ref()?.publisher_lateness()
    }

    /// The processes of the server pushbench did not write that serves here, if one does.
    pub fn outside(&self) -> Option<Outside> {
        let running = self.outside.as_ref()?;
        Some(match running.publishes_only() {
            true => Outside::Instead(running.pids()),
            false => Outside::Processes(running.pids()),
        })
    }

    /// The hub the server publishes through.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Connections and bytes counted at the server's sockets so far.
    pub fn sockets(&self) -> SocketTotals {
        self.counters.totals()
    }

    /// Waits until `start_after` subscribers are connected, then publishes the stream on its
    /// schedule. Fails if the server stops first.
    pub async fn publish(
        &mut self,
        spec: &StreamSpec,
        start_after: usize,
    ) -> anyhow::Result<Published> {
        self.publish_after(spec, start_after, Duration::ZERO).await
    }

    /// As [`Server::publish`], holding the connected subscribers idle for `delay` first (so
    /// memory per idle connection can be sampled).
    pub async fn publish_after(
        &mut self,
        spec: &StreamSpec,
        start_after: usize,
        delay: Duration,
    ) -> anyhow::Result<Published> {
        self.wait_for_start(start_after, delay).await?;
        self.publish_from(spec, None).await
    }

    /// Waits until `start_after` subscribers are connected, then `delay` more. Fails if the
    /// server stops first.
    pub async fn wait_for_start(
        &mut self,
        start_after: usize,
        delay: Duration,
    ) -> anyhow::Result<()> {
        let hub = Arc::clone(&self.hub);
        tokio::select! {
            _ = async {
                hub.wait_for_subscribers(start_after).await;
                tokio::time::sleep(delay).await;
            } => Ok(()),
            ended = &mut self.task => Err(server_ended(ended)),
        }
    }

    /// Publishes the stream on its schedule from `origin_ns` (monotonic; `None`: now), at once
    /// for every event already due. Fails if the server stops first.
    pub async fn publish_from(
        &mut self,
        spec: &StreamSpec,
        origin_ns: Option<u64>,
    ) -> anyhow::Result<Published> {
        let (spec, hub, stall) = (spec.clone(), Arc::clone(&self.hub), self.faults.stall);
        // An OS thread of its own: see `publisher` for why not a task.
        let publishing =
            tokio::task::spawn_blocking(move || publish_stream(&spec, &hub, stall, origin_ns));
        tokio::select! {
            published = publishing => published.context("publisher thread failed"),
            ended = &mut self.task => {
                self.hub.close();
                Err(server_ended(ended))
            }
        }
    }

    /// Waits until every subscriber has left and confirmed the end in its transport's idiom,
    /// and none that left unconfirmed is on its way back: while more subscribers left without
    /// confirming than resumed, it waits up to the reconnect grace from the last sign of life
    /// (a subscriber connecting, or a request resuming) for one to return. It gives up only
    /// when delivery has made no progress for `idle`; returns how many were still connected.
    /// Progress, not total time, is what counts: a slow transport still delivering a backlog
    /// is not cut off.
    pub async fn drain(&self, idle: Duration) -> usize {
        loop {
            let before = self.hub.progress();
            let gone = tokio::time::timeout(idle, self.hub.wait_until_no_subscribers())
                .await
                .is_ok();
            if gone {
                // A closed connection's handler may still hold its reader for a moment.
                let _ = tokio::time::timeout(idle, self.hub.wait_until_no_readers()).await;
                // Counted before the check, so a resume between the two still wakes the wait.
                let resumes = self.hub.resumes();
                if self.hub.unresumed() == 0 {
                    return 0;
                }
                let back = tokio::time::timeout(self.grace, async {
                    tokio::select! {
                        _ = self.hub.wait_for_subscribers(1) => {}
                        _ = self.hub.wait_for_resume_after(resumes) => {}
                    }
                });
                if back.await.is_ok() {
                    continue;
                }
                return 0;
            }
            if self.hub.progress() == before {
                return self.hub.subscribers();
            }
        }
    }

    /// If load workers of other hosts timed this server's clock, keeps answering until their
    /// probes have been quiet for [`PROBE_QUIET`] since the stream was delivered (each worker
    /// measures once more as its subscribers finish), at most [`PROBE_LINGER_MAX`]. Servers
    /// nobody probed stop at once.
    pub async fn linger_for_probes(&self) {
        if self.last_probe.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return;
        }
        let start = now_ns();
        let until = start + PROBE_LINGER_MAX.as_nanos() as u64;
        loop {
            // Quiet since the stream ended, or since the last probe after it.
            let quiet_since = self
                .last_probe
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(start);
            let now = now_ns();
            if now >= until || now.saturating_sub(quiet_since) >= PROBE_QUIET.as_nanos() as u64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ends every subscription and stops the server.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.hub.close();
        self.shutdown.cancel();
        match self.task.await {
            Ok(result) => result.context("server failed"),
            Err(e) => Err(anyhow::anyhow!("server task failed: {e}")),
        }
    }
}

/// A TCP listener on `addr`, sharing its port with other processes when `reuse_port`.
fn bind_listener(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // What `TcpListener::bind` does too: a restarted server may take its port back at once.
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// How long the probes must be quiet before a probed server stops: longer than a worker
/// takes from its last subscriber finishing to its first probe.
const PROBE_QUIET: Duration = Duration::from_millis(1500);
/// The longest a probed server stays after the stream for workers' last measurements.
pub const PROBE_LINGER_MAX: Duration = Duration::from_secs(10);

fn server_ended(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match ended {
        Ok(Ok(())) => anyhow::anyhow!("server stopped before the stream was delivered"),
        Ok(Err(e)) => anyhow::anyhow!("server failed: {e}"),
        Err(e) => anyhow::anyhow!("server task failed: {e}"),
    }
}

/// How `pushbench serve` speaks: to a person, or in the typed protocol's reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Sentences on stdout.
    Human,
    /// [`Report`] lines on stdout (for `run` and for scripts); sentences go to stderr.
    Json,
}

impl Output {
    /// Says a sentence where this output puts them: stdout for a person, stderr beside the
    /// reports.
    pub fn say(self, text: &str) {
        match self {
            Output::Human => {
                stdout::line(text);
            }
            Output::Json => eprintln!("{text}"),
        }
    }
}

/// SIGINT and SIGTERM, what stops a server (or a fleet) before its stream is delivered, and a
/// closed stdout.
/// Installed before anyone can know where it listens, so a SIGTERM sent the moment it says so
/// stops it cleanly rather than killing it.
pub(crate) struct Stops {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Stops {
    /// Installs both handlers.
    pub fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// Waits for either, or for stdout to be found closed (whoever read what the server says
    /// has gone), and says which: "interrupted", "terminated" or "stdout closed".
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "terminated",
            () = stdout::closed() => "stdout closed",
        }
    }
}

/// Runs one server process: says where it listens, publishes the stream once `start_after`
/// subscribers are connected (or, as a member of a fleet, when `commands` says), and exits
/// when it is delivered (or on Ctrl-C or SIGTERM). With `processes` above one it runs the
/// fleet instead.
pub async fn run(
    options: ServeOptions,
    output: Output,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
) -> anyhow::Result<()> {
    if let Some(why) = crate::transport::upstream::refusal(&options.config.settings, &options.spec)
    {
        anyhow::bail!(why);
    }
    if options.processes > 1 {
        return fleet::run(options, output).await;
    }
    if let Some(cpus) = &options.cpus {
        crate::metrics::process::pin_this_process(cpus)
            .context("pinning the server to its CPUs")?;
    }
    let transport = options.transport;
    let say = |text: String| output.say(&text);
    announce_credentials(&options, output)?;
    let mut stops = Stops::install()?;
    let mut server = Server::start_shared(
        transport,
        options.listen,
        options.reuse_port,
        options.spec.count,
        options.config.clone().serving(&options.spec),
    )
    .await?;
    // Listening, nobody connected: what each subscriber adds is measured from here.
    let outside = server
        .outside()
        .unwrap_or_else(|| (transport.spec().outside)(&options.config.settings));
    let pids = serving_pids(&outside);
    let before = Before::sample(&pids);
    // `run` samples the memory of every process named here (none named: the child itself).
    let named = if pids != [std::process::id()] {
        &pids[..]
    } else {
        &[]
    };
    // What a client that trusts the certificate by its hash is given (`load --cert-hash`, a
    // browser's WebTransport `serverCertificateHashes`).
    let cert_sha256 = options.config.tls.cert_hash().ok();
    announce_listening(
        transport,
        (server.addr(), cert_sha256),
        server.settings(),
        named,
        output,
    )?;
    say(format!(
        "waiting for {} subscriber(s); stream: {} events, payload {} B ({}), rate {}",
        options.start_after,
        options.spec.count,
        options.spec.payload,
        options.spec.kind,
        options.spec.rate
    ));

    let mut ending = Ending {
        options: &options,
        output,
        before,
        connected: None,
        outside,
    };
    server.hub().expect_returns(options.returning as u64);
    let origin_ns = match (options.schedule_origin_ns, commands) {
        // A restarted server continues the stream it was killed in.
        (Some(origin_ns), _) => origin_ns,
        // A member of a fleet starts when the fleet has all its subscribers.
        // A member of a fleet starts when the fleet has all its subscribers; a server behind a
        // proxy when it has them or its parent says the load has.
        (None, Some(commands)) if options.start_on != StartOn::Count => {
            let counted = (options.start_on == StartOn::CountOrCommand)
                .then_some((options.start_after, options.start_delay));
            tokio::select! {
                origin = wait_for_command(&mut server, commands, counted) => origin?,
                why = stops.next() => return ending.stop(server, None, why).await,
            }
        }
        (None, _) => {
            tokio::select! {
                started = server.wait_for_start(options.start_after, options.start_delay) => started?,
                why = stops.next() => return ending.stop(server, None, why).await,
            }
            now_ns()
        }
    };
    ending.connected = Some(Connected::sample(
        server.hub().subscribers(),
        &ending.outside,
    ));
    if output == Output::Json {
        // The parent times faults (a restart) from the stream's start.
        protocol::report(&Report::Publishing { origin_ns })?;
    }
    let published = tokio::select! {
        published = server.publish_from(&options.spec, Some(origin_ns)) => published?,
        why = stops.next() => return ending.stop(server, None, why).await,
    };
    say(format!(
        "published {} events in {:.3} s",
        options.spec.count,
        (published.end_ns - published.start_ns) as f64 / 1e9
    ));
    let (left, why) = tokio::select! {
        left = server.drain(options.drain_timeout) => (left, "done"),
        why = stops.next() => (server.hub().subscribers(), why),
    };
    if why != "done" {
        return ending.stop(server, Some(published), why).await;
    }
    let unconfirmed = server.hub().unresumed();
    if left > 0 {
        eprintln!("warning: {left} subscriber(s) still connected with no progress for the drain timeout; stopping");
    } else if unconfirmed > 0 {
        // Written is not received: these subscribers' connections ended without the
        // confirmation of their transport, and they did not come back within the grace.
        eprintln!(
            "warning: {unconfirmed} subscription(s) ended without confirming the end and did not \
             resume within the reconnect grace ({:?}); stopping",
            server.grace
        );
    } else {
        say("stream delivered and confirmed by every subscriber; stopping".into());
    }
    server.linger_for_probes().await;
    ending.stop(server, Some(published), why).await
}

/// Tells whoever reads the output the credentials made for this server (nobody else knows
/// them): a line each for a person, one report for scripts.
fn announce_credentials(options: &ServeOptions, output: Output) -> anyhow::Result<()> {
    if options.announce.is_empty() {
        return Ok(());
    }
    let made = options.config.credentials.only(&options.announce);
    match output {
        Output::Human => {
            for (name, value) in made.iter() {
                stdout::line(&format!("{}: {value}", name.replace('-', " ")));
            }
        }
        Output::Json => protocol::report(&Report::Credentials { made })?,
    }
    Ok(())
}

/// Says where the server listens and the SHA-256 of its certificate (and, for a fleet, which
/// processes serve).
fn announce_listening(
    transport: Transport,
    (addr, cert_sha256): (SocketAddr, Option<String>),
    settings: &SettingValues,
    pids: &[u32],
    output: Output,
) -> anyhow::Result<()> {
    match output {
        Output::Human => {
            stdout::line(&format!("pushbench serve: {transport} listening on {addr}"));
            if let Some(hash) = &cert_sha256 {
                stdout::line(&format!("certificate SHA-256: {hash}"));
            }
        }
        Output::Json => protocol::report(&Report::Listening {
            addr,
            settings: settings.clone(),
            pids: pids.to_vec(),
            cert_sha256,
        })?,
    }
    Ok(())
}

/// Waits for the parent to say when the stream's schedule begins, or, where `counted` is
/// given, for that many subscribers and that idle hold (then the schedule begins now). A fleet
/// member (nothing counted) reports its subscriber count as it changes meanwhile, for its
/// coordinator to add up. Fails if the server stops or the parent goes away.
async fn wait_for_command(
    server: &mut Server,
    mut commands: mpsc::UnboundedReceiver<Command>,
    counted: Option<(usize, Duration)>,
) -> anyhow::Result<u64> {
    let hub = Arc::clone(server.hub());
    let enough = async {
        let Some((subscribers, delay)) = counted else {
            return std::future::pending().await;
        };
        hub.wait_for_subscribers(subscribers).await;
        tokio::time::sleep(delay).await;
    };
    tokio::pin!(enough);
    let mut told = None;
    loop {
        let connected = server.hub().subscribers();
        // Only a coordinator reads these while waiting: a parent that tells the start reads
        // nothing until the stats, and unread reports would fill the pipe.
        if counted.is_none() && told != Some(connected) {
            protocol::report(&Report::Subscribers { connected })?;
            told = Some(connected);
        }
        tokio::select! {
            () = &mut enough => return Ok(now_ns()),
            command = commands.recv() => match command {
                Some(Command::Start { origin_ns }) => return Ok(origin_ns),
                // Meant for a load worker: nothing to a server.
                Some(Command::Release) => {}
                None => anyhow::bail!("the fleet went away before the stream started"),
            },
            ended = &mut server.task => return Err(server_ended(ended)),
            _ = tokio::time::sleep(FLEET_REPORT_EVERY) => {}
        }
    }
}

/// How often a fleet member says how many subscribers it has while waiting.
const FLEET_REPORT_EVERY: Duration = Duration::from_millis(20);

/// The server's process and the host's socket memory before anyone connected.
#[derive(Clone, Copy, Debug)]
struct Before {
    process: ProcessSample,
    kernel_socket_bytes: Option<u64>,
    unix_secs: u64,
}

impl Before {
    fn sample(pids: &[u32]) -> Self {
        Self {
            process: process::sample_sum(pids),
            kernel_socket_bytes: kernel::socket_bytes(),
            unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// The same with every subscriber connected, just before the stream.
#[derive(Clone, Copy, Debug)]
struct Connected {
    process: ProcessSample,
    kernel_socket_bytes: Option<u64>,
    subscribers: usize,
    /// CPU time of the processes outside this one that serve too, us.
    outside_cpu_us: u64,
}

impl Connected {
    fn sample(subscribers: usize, outside: &Outside) -> Self {
        Self {
            process: process::sample_sum(&serving_pids(outside)),
            kernel_socket_bytes: kernel::socket_bytes(),
            subscribers,
            outside_cpu_us: process::sample_sum(outside_pids(outside)).cpu_us,
        }
    }
}

/// The processes that serve: this one, then any the transport's server works in besides
/// ([`Outside::Processes`]).
fn serving_pids(outside: &Outside) -> Vec<u32> {
    let mut pids = match outside {
        Outside::Instead(_) => Vec::new(),
        _ => vec![std::process::id()],
    };
    pids.extend(outside_pids(outside));
    pids
}

/// The processes besides this one whose CPU time is the server's.
fn outside_pids(outside: &Outside) -> &[u32] {
    match outside {
        Outside::Processes(pids) | Outside::Instead(pids) => pids,
        Outside::Nothing | Outside::Unmeasured(_) => &[],
    }
}

/// What a server needs to stop and say what it counted.
struct Ending<'a> {
    options: &'a ServeOptions,
    output: Output,
    before: Before,
    /// Sampled once the stream started (none if it never did).
    connected: Option<Connected>,
    /// Where the server works besides this process.
    outside: Outside,
}

impl Ending<'_> {
    /// Stops the server and reports its stats last (and writes them with `--stats-out`).
    async fn stop(
        self,
        server: Server,
        published: Option<Published>,
        why: &str,
    ) -> anyhow::Result<()> {
        if why != "done" {
            eprintln!("{why}; stopping");
        }
        let process = crate::metrics::process::sample(None).unwrap_or_default();
        let connected = self.connected;
        let outside = outside_pids(&self.outside);
        let outside_cpu_us = match connected {
            Some(c) if !outside.is_empty() => process::sample_sum(outside)
                .cpu_us
                .saturating_sub(c.outside_cpu_us),
            _ => 0,
        };
        let stream_start_cpu_us = published.as_ref().map_or(0, |p| p.start_cpu_us);
        // Where the server is someone else's, this process only published into it: all of
        // its CPU time from the stream's start is the publisher's, and the largest resident
        // set is the server's processes'.
        let (publisher_cpu_us, peak_rss_bytes) = match &self.outside {
            Outside::Instead(pids) => (
                process.cpu_us.saturating_sub(stream_start_cpu_us),
                process::sample_sum(pids).peak_rss_bytes,
            ),
            _ => (
                published.as_ref().map_or(0, |p| p.publisher_cpu_us),
                process.peak_rss_bytes,
            ),
        };
        let stats = ServeStats {
            published: server.hub().published(),
            sockets: server.sockets(),
            left_connected: server.hub().subscribers(),
            abandoned: server.hub().abandoned_count(),
            gapped: server.hub().gapped(),
            unresumed_drops: server.hub().unresumed(),
            retries: server.hub().retries(),
            refusal: server.hub().refusal(),
            faults_ns: server.hub().faults(),
            storm_ns: server.hub().storm(),
            upstream: server
                .hub()
                .upstream_totals()
                .map(|t| t.report(server.hub().upstream_copies())),
            stream_start_cpu_us,
            cpu_us: process.cpu_us,
            peak_rss_bytes,
            publisher_cpu_us,
            // Into a server pushbench did not write, the lateness is of the requests that
            // published each event into it.
            publisher_lateness: match server.outside_lateness() {
                Some(late) => Some(late),
                None => published.as_ref().and_then(|p| p.lateness),
            },
            before: self.before.process,
            connected: connected.map_or(self.before.process, |c| c.process),
            subscribers_at_start: connected.map_or(0, |c| c.subscribers),
            kernel_socket_bytes: connected.and_then(|c| {
                Some(
                    c.kernel_socket_bytes?
                        .saturating_sub(self.before.kernel_socket_bytes?),
                )
            }),
            outside_cpu_us,
            unmeasured: match &self.outside {
                Outside::Unmeasured(why) => Some(why.clone()),
                _ => None,
            },
        };
        let settings = server.settings().clone();
        // Bounded whatever clients do: HTTP connections get the shutdown grace, and anything
        // still open after the deadline is dropped with the process.
        let stopped = tokio::time::timeout(SHUTDOWN_DEADLINE, server.stop())
            .await
            .unwrap_or_else(|_| {
                tracing::warn!("server still stopping after {SHUTDOWN_DEADLINE:?}; leaving it");
                Ok(())
            });
        finish(
            self.options,
            settings,
            stats,
            self.before.unix_secs,
            1,
            self.output,
        )?;
        stopped
    }
}

/// Reports a server's (or a fleet's) stats last, and writes its part with `--stats-out`.
fn finish(
    options: &ServeOptions,
    settings: SettingValues,
    stats: ServeStats,
    started_unix: u64,
    processes: usize,
    output: Output,
) -> anyhow::Result<()> {
    if let Some(path) = &options.stats_out {
        let part = PartFile::Server(Box::new(ServerPart {
            transport: options.transport,
            spec: options.spec.clone(),
            settings,
            start_after: options.start_after,
            processes,
            cpus: options
                .cpus
                .as_ref()
                .map_or_else(|| process::available_cpus().len(), Vec::len),
            machine: crate::metrics::machine::Machine::describe(),
            started_unix,
            stats: stats.clone(),
        }));
        part.write(path)?;
    }
    match output {
        Output::Json => protocol::report(&Report::Stats(Box::new(stats)))?,
        Output::Human => {
            stdout::line(&format!(
                "stats: published {}, sockets {} connection(s) {} B in {} B out, CPU {} us \
                 (publisher {} us), subscribers left {}",
                stats.published,
                stats.sockets.connections,
                stats.sockets.bytes_in,
                stats.sockets.bytes_out,
                stats.cpu_us,
                stats.publisher_cpu_us,
                stats.left_connected
            ));
            if let Some(late) = stats.publisher_lateness {
                stdout::line(&format!(
                    "publisher lateness: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
                    late.p50_us, late.p99_us, late.max_us
                ));
            }
            if stats.abandoned > 0 {
                stdout::line(&format!("abandoned deliveries: {}", stats.abandoned));
            }
            if let Some(refusal) = &stats.refusal {
                stdout::line(&format!("refused: {refusal}"));
            }
        }
    }
    Ok(())
}

/// The longest `serve` takes to stop once told to (SIGTERM, SIGINT, or the stream delivered).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
