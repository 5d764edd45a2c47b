//! The load half: N subscribers of one transport against a server, each tallying its stream,
//! judged together against the source digest. `pushbench run` starts it as worker processes
//! (a [`LoadJob`] each, over the typed protocol) so each combination gets fresh processes whose
//! memory and CPU are their own; `pushbench load` runs one in this process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::probe::{self, ClockSync};
use crate::clock::{self, now_ns};
use crate::event::Rate;
use crate::link::{Blackout, Dialer, Link, LinkStats};
use crate::metrics::faults::SlowConsumer;
use crate::metrics::latency;
use crate::metrics::process::{self, ProcessSample};
use crate::transport::client_stream::{slow_read_rate, SLOW_CONSUMER};
use crate::transport::linger::Linger;
use crate::transport::relay::Relay;
use crate::transport::resume::RESUME;
use crate::transport::{ClientConfig, Side, Target, Transport, LOOPBACK_SOURCES};
use tokio_util::sync::CancellationToken;

use super::subscriber::{RecordPlan, SubscriberRecord, TallySink};
use crate::protocol::{LoadJob, LoadPart, WorkerProcess};

/// Subscribers started between pauses, so a burst of connects never overflows the server's
/// accept backlog.
const CONNECT_BURST: usize = 100;
const CONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Runs `count` subscribers concurrently, each until it has the whole stream, its subscription
/// ends, or `timeout` passes; returns their records in order. Connects are paced, and against
/// a loopback server spread over several 127.0.0.x source addresses (numbered from
/// `first_index`, so several workers spread over them together).
pub async fn run_subscribers(
    transport: Transport,
    target: &Target,
    count: usize,
    first_index: usize,
    plan: &Arc<RecordPlan>,
    config: &ClientConfig,
    timeout: Duration,
) -> Vec<SubscriberRecord> {
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        if i > 0 && i % CONNECT_BURST == 0 {
            tokio::time::sleep(CONNECT_PAUSE).await;
        }
        let mut config = config.clone();
        // The slow consumer is one subscriber of the whole run: the first.
        let slow = config.read_rate.is_some() && first_index + i == 0;
        if !slow {
            config.read_rate = None;
        }
        if config.bind.is_none() && target.addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
            let source = 1 + ((first_index + i) % LOOPBACK_SOURCES) as u8;
            config.bind = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)));
        }
        // Which streams it follows: drawn from the run's seed and its index in the run, so
        // every process draws the same rooms for it.
        let index = first_index + i;
        config.topics = plan.topics_of(index);
        config.upstream = plan
            .two_way
            .as_ref()
            .map(|two_way| two_way.sender(index, config.topics.clone()));
        let plan = Arc::clone(plan);
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut sink = TallySink::following(plan, now_ns(), index, config.topics.as_deref());
            if slow {
                sink = sink.apart();
            }
            let outcome =
                tokio::time::timeout(timeout, transport.subscribe(&target, &config, &mut sink))
                    .await;
            let (error, dropped) = match outcome {
                Ok(Ok(())) => (None, false),
                Ok(Err(e)) => (Some(e.to_string()), true),
                Err(_) => (Some(timed_out(timeout)), false),
            };
            if let Some(linger) = &config.linger {
                linger.ended();
            }
            let mut record = sink.finish(error);
            // Told not to resume, a subscription ends at its first drop: what it missed after
            // that is the cost of not resuming, which the ledger accounts for.
            if dropped && !RESUME.read(&config.settings) {
                record.cut_off_by_drop();
            }
            record
        }));
    }
    let mut records = Vec::with_capacity(count);
    for task in tasks {
        match task.await {
            Ok(record) => records.push(record),
            Err(e) => {
                let error = Some(format!("subscriber task failed: {e}"));
                records.push(TallySink::new(Arc::clone(plan), now_ns()).finish(error));
            }
        }
    }
    records
}

/// The error of a subscriber still going when the job's `timeout` ran out.
fn timed_out(timeout: Duration) -> String {
    format!("timed out after {timeout:?}")
}

/// Whether `error` is [`timed_out`]'s: more often a consequence than a cause (subscribers
/// waiting for a stream that never started, because others failed to connect).
pub(super) fn is_timeout(error: &str) -> bool {
    error.starts_with("timed out after ")
}

/// A relay that puts `link` in front of each endpoint, until `stop`.
fn link_relay(link: Link, stop: &CancellationToken) -> Relay {
    let stop = stop.clone();
    Relay::new(move |endpoint| {
        let stop = stop.clone();
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind((endpoint.ip(), 0)).await?;
            let addr = listener.local_addr()?;
            let stats = Arc::new(LinkStats::default());
            tokio::spawn(crate::link::serve(
                (listener, Dialer::Server),
                endpoint,
                link,
                stats,
                Blackout::never(),
                stop,
            ));
            Ok(addr)
        })
    })
}

/// Longest a subscriber with the whole stream keeps its connection for the others (a share of
/// the job's timeout, so it never runs into its own).
const LINGER_LONGEST: Duration = Duration::from_secs(10);

/// Runs a load job in this process: connects its subscribers, calls `on_connected` with
/// the process sampled before and after (so memory per idle connection is measured before
/// the stream), holds each subscriber that has the whole stream on its connection until
/// every one does and `all_holding` (the run's other workers) lets them go, waits for every
/// subscriber, and returns the part.
pub async fn run_job<Held>(
    job: &LoadJob,
    on_connected: impl FnOnce(usize, ProcessSample, ProcessSample),
    all_holding: impl FnOnce() -> Held,
) -> anyhow::Result<LoadPart>
where
    Held: std::future::Future<Output = ()>,
{
    refuse(job)?;
    if let Some(cpus) = &job.cpus {
        process::pin_this_process(cpus)?;
    }
    let before = process::sample(None).unwrap_or_default();
    let mut job = job.clone();
    // On a server pushbench did not write, subscribers go where its profile says.
    job.target = crate::outside::subscriber_target(job.transport, &job.config.settings, job.target)
        .map_err(anyhow::Error::msg)?;
    let clock_before = sync_clock(&mut job).await?;
    let plan = RecordPlan::of(
        &job.spec,
        job.warmup.as_nanos() as u64,
        job.interval_origin_ns,
        &job.config.settings,
        job.config.population,
    );
    job.config.read_rate = slow_read_rate(
        SLOW_CONSUMER.read(&job.config.settings),
        job.spec.count,
        job.spec.payload_bytes(),
        match job.spec.rate {
            Rate::PerSecond(rate) => Some(rate),
            Rate::Max => None,
        },
    );
    // Where the server dials its subscribers (webhooks), the row's link stands in front of
    // each endpoint they listen on, in this process, until every subscriber is done.
    let relays = CancellationToken::new();
    let _stop_relays = relays.clone().drop_guard();
    if let Some(link) = &job.relay_link {
        let link: Link = link
            .parse()
            .map_err(|e| anyhow::anyhow!("the load job's link {link:?}: {e}"))?;
        job.config.relay = Some(link_relay(link, &relays));
    }
    let linger = Arc::new(Linger::new(LINGER_LONGEST.min(job.timeout / 4)));
    job.config.linger = Some(Arc::clone(&linger));
    let job = &job;
    let load = {
        let (job, plan) = (job.clone(), Arc::clone(&plan));
        tokio::spawn(async move {
            run_subscribers(
                job.transport,
                &job.target,
                job.subscribers,
                job.first_subscriber,
                &plan,
                &job.config,
                job.timeout,
            )
            .await
        })
    };
    // Every subscriber established, or some gave up (the load task ends), or time is up.
    let deadline = now_ns() + job.timeout.as_nanos() as u64;
    while plan.connected.load(Ordering::Relaxed) < job.subscribers
        && !load.is_finished()
        && now_ns() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connected = process::sample(None).unwrap_or_default();
    on_connected(plan.connected.load(Ordering::Relaxed), before, connected);

    release_together(&linger, job.subscribers, &load, deadline, all_holding).await;
    let records = load.await?;
    let end = process::sample(None).unwrap_or_default();
    // What is left of the offset after the stream: drift plus error, part of the uncertainty.
    let clock = match clock_before {
        Some(before) => Some(ClockSync {
            before,
            after: probe::measure(job.target.addr, job.config.bind).await.ok(),
        }),
        None => None,
    };
    let mut part = part_of(job, &plan, &records);
    part.process = WorkerProcess {
        before,
        connected,
        end,
    };
    part.clock = clock;
    Ok(part)
}

/// Waits until every one of `subscribers` holds the whole stream or has ended (or the load
/// ended, or `deadline` passed), then for `all_holding` (the run's other workers), and lets
/// them all go: they leave together, after the stream rather than inside it.
async fn release_together<T, Held>(
    linger: &Linger,
    subscribers: usize,
    load: &tokio::task::JoinHandle<T>,
    deadline: u64,
    all_holding: impl FnOnce() -> Held,
) where
    Held: std::future::Future<Output = ()>,
{
    while linger.arrived() < subscribers && !load.is_finished() && now_ns() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Bounded: past it every hold has run out anyway.
    let _ = tokio::time::timeout(LINGER_LONGEST, all_holding()).await;
    linger.release();
}

/// A setting the transport does not take, a value that does not parse, a credential it does
/// not use, a client implementation that cannot do what the settings ask, or two-way traffic
/// it cannot carry: refused before anything connects rather than
/// run at its default.
fn refuse(job: &LoadJob) -> anyhow::Result<()> {
    job.config
        .settings
        .check(&job.transport.settings())
        .map_err(|why| anyhow::anyhow!("{}: {why}", job.transport))?;
    job.config
        .credentials
        .check(job.transport.spec(), Side::Client)
        .map_err(anyhow::Error::msg)?;
    job.transport
        .client_impl(&job.config.settings)
        .map_err(anyhow::Error::msg)?;
    if let Some(why) = crate::transport::upstream::refusal(&job.config.settings, &job.spec) {
        anyhow::bail!(why);
    }
    if let Some(why) = crate::outside::refuses(job.transport, &job.config.settings) {
        anyhow::bail!(why);
    }
    Ok(())
}

/// Against a server on another host, measures its clock and reads it from here on, counting
/// intervals from a whole second of it (so the intervals of workers started apart line up
/// when their parts are merged). A server on loopback shares this host's clock: nothing to
/// measure.
async fn sync_clock(job: &mut LoadJob) -> anyhow::Result<Option<probe::OffsetSample>> {
    if !job.measure_clock || job.target.addr.ip().is_loopback() {
        return Ok(None);
    }
    let sample = match probe::measure(job.target.addr, job.config.bind).await {
        Ok(sample) => sample,
        Err(error) => return Err(unreachable_or(job.target.addr, error).await),
    };
    clock::correct_by(sample.offset_ns);
    job.interval_origin_ns = now_ns() / 1_000_000_000 * 1_000_000_000;
    Ok(Some(sample))
}

/// The worker's part from its subscribers' records: what they recorded, the TLS handshakes,
/// the load side's sockets, the slow consumer, and the settings they ran with (defaults
/// included, so results record them).
fn part_of(job: &LoadJob, plan: &RecordPlan, records: &[SubscriberRecord]) -> LoadPart {
    let recorded = plan.recording.finish();
    let mut part = LoadPart::new(
        job.worker,
        (job.transport, &job.config.settings),
        &job.spec,
        job.interval_origin_ns,
        records,
        &recorded,
    );
    let tls = job.config.tls.handshakes.histogram();
    part.histograms.tls_handshake_us = (!tls.is_empty()).then(|| latency::encode(&tls));
    part.sockets = job.config.counters.totals();
    part.cpus = process::available_cpus().len();
    part.slow_consumer = records.iter().find(|r| r.apart).map(|r| SlowConsumer {
        read_rate: job.config.read_rate.unwrap_or_default(),
        delivered: r.ledger.counts().distinct,
        lost: r.ledger.lost(),
        worst_latency_us: r.worst_latency_us,
        ended_early: r.error.is_some(),
    });
    part.settings = job
        .config
        .settings
        .effective(&job.transport.settings(), Side::Client);
    part
}

/// Why the clock could not be measured: the server is not there at all (TCP says so), or it is
/// but its clock probes are not answered.
async fn unreachable_or(server: SocketAddr, probe_error: probe::ProbeError) -> anyhow::Error {
    let connect = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(server),
    )
    .await;
    match connect {
        Ok(Ok(_)) => {
            anyhow::Error::new(probe_error).context("measuring the clock offset to the server")
        }
        Ok(Err(e)) => anyhow::anyhow!("cannot reach the server at {server}: {e}"),
        Err(_) => anyhow::anyhow!("cannot reach the server at {server}: no answer within 5 s"),
    }
}
