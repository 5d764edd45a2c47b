//! The last step of `pushbench run`: one row of the results from what was measured (the merged
//! load parts, the server's stats and the process samples become a [`TransportResult`], with
//! its interval log and fault windows), and the results the rows go in. `run` builds its rows
//! here, and `merge` builds rows of parts measured across hosts the same way.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use super::settings::RESTART_AFTER;
use crate::clock::now_ns;
use crate::event::StreamSpec;
use crate::link::netns::LinkFigures;
use crate::metrics::faults::{self, FaultWindow};
use crate::metrics::latency::{self, Percentiles};
use crate::metrics::machine::Machine;
use crate::metrics::process::TimedSample;
use crate::metrics::resources::{self, ResourceSample};
use crate::metrics::storm::StormEffect;
use crate::protocol::ServeStats;
use crate::results::key::RowKey;
use crate::results::scenario::Scenario;
use crate::results::two_way::TwoWay;
use crate::results::{
    Bound, Calibration, ClockOffsets, Connection, HandshakeTimes, Histograms, Placement, Results,
    Settings, Throughput, TransportResult, WorkerClock, SCHEMA_VERSION,
};
use crate::transport::listener::DROP_EVERY;
use crate::transport::resume::OUTAGE;
use crate::transport::storm::{Storm, StormKind, STORM_AFTER};
use crate::transport::upstream::UPSTREAM_RATE;
use crate::transport::ServerConfig;
use crate::transport::SettingValues;

use super::part::Merged;

/// What tells a row from the others (its key), and which repeat of it this is.
pub(super) struct Row<'a> {
    pub key: &'a RowKey,
    pub repeat: u32,
}

impl Row<'_> {
    /// How the row is named wherever it is shown.
    pub fn label(&self) -> String {
        self.key.label()
    }
}

/// A server killed and started again mid-stream (the restart fault).
#[derive(Clone, Copy, Debug)]
pub(super) struct Restarted {
    /// The stream's schedule origin, which both lives share (monotonic ns).
    pub origin_ns: u64,
    /// From the kill until the new server listened, monotonic ns.
    pub down_ns: (u64, u64),
    /// CPU time of the first server process, us: at the kill (then, less what it had used
    /// before the stream).
    pub first_life_cpu_us: u64,
}

/// Most fault windows a row keeps (they are instants for the drop fault, which may cut often).
const FAULT_WINDOWS_KEPT: usize = 1000;

/// When the storm was on (monotonic ns): the close storm's cut, as the server noted it, or the
/// blackout `run` struck on the link.
fn storm_window(
    settings: &SettingValues,
    stats: &ServeStats,
    blackout: Option<(u64, u64)>,
) -> Option<StormWindow> {
    let storm = Storm::planned(settings)?;
    let window = match storm.kind {
        StormKind::Close => stats.storm_ns.map(|at| (at, at)),
        StormKind::Blackhole => blackout,
    }?;
    Some((storm, window))
}

/// When the injected faults were on, in milliseconds since the intervals' origin: each cut of
/// the drop fault (an instant, from the server), the consumer outage (from the first
/// subscriber going down to the last coming back), the restart (from the kill until the
/// new server listened), and the storm.
fn fault_windows(
    stats: &ServeStats,
    merged: &Merged,
    restarted: Option<Restarted>,
    storm: Option<(u64, u64)>,
    settings: &SettingValues,
    origin_ns: u64,
) -> Vec<FaultWindow> {
    let ms = |ns: u64| ns.saturating_sub(origin_ns) as f64 / 1e6;
    let end = merged.last_received_ns.unwrap_or(u64::MAX);
    // A killed server's cuts died with it; they fell every period from the stream's start.
    let first_life_cuts: Vec<u64> = match (restarted, DROP_EVERY.read(settings)) {
        (Some(r), period) if !period.is_zero() => (1..)
            .map(|k| r.origin_ns + k * period.as_nanos() as u64)
            .take_while(|&at| at < r.down_ns.0)
            .collect(),
        _ => Vec::new(),
    };
    let cuts = first_life_cuts
        .iter()
        .chain(&stats.faults_ns)
        .filter(|&&at| at >= origin_ns && at <= end)
        .map(|&at| FaultWindow {
            fault: DROP_EVERY.name.to_owned(),
            start_ms: ms(at),
            end_ms: ms(at),
        });
    let outage = merged.outage_ns.map(|(start, stop)| FaultWindow {
        fault: OUTAGE.name.to_owned(),
        start_ms: ms(start),
        end_ms: ms(stop),
    });
    let restart = restarted.map(|r| FaultWindow {
        fault: RESTART_AFTER.name.to_owned(),
        start_ms: ms(r.down_ns.0),
        end_ms: ms(r.down_ns.1),
    });
    let storm = storm.map(|(start, end)| FaultWindow {
        fault: STORM_AFTER.name.to_owned(),
        start_ms: ms(start),
        end_ms: ms(end),
    });
    cuts.chain(outage)
        .chain(restart)
        .chain(storm)
        .take(FAULT_WINDOWS_KEPT)
        .collect()
}

/// The wall-clock time of `origin_ns` on this host's monotonic clock: now, less how long ago
/// it was.
pub(super) fn wall_time_of(origin_ns: u64) -> SystemTime {
    SystemTime::now() - Duration::from_nanos(now_ns().saturating_sub(origin_ns))
}

/// Writes the row's per-second latency as an HdrHistogram interval log beside the
/// results; returns its path relative to them.
pub(super) fn write_interval_log(
    dir: &Path,
    row: &Row<'_>,
    merged: &Merged,
    start: SystemTime,
) -> anyhow::Result<Option<String>> {
    if merged.seconds.iter().all(|h| h.is_empty()) {
        return Ok(None);
    }
    let name = format!(
        "intervals/{}-{}subs-{}B-r{}.hlog",
        row.label().replace([' ', '='], "_"),
        row.key.subscribers,
        row.key.payload.to_string().replace(',', "_"),
        row.repeat
    );
    let path = dir.join(&name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    let comment = format!(
        "pushbench latency (us) per second: {} x{} subscribers, payload {} B",
        row.label(),
        row.key.subscribers,
        row.key.payload
    );
    latency::write_interval_log(&mut file, start, &comment, &merged.seconds)
        .and_then(|()| std::io::Write::flush(&mut file))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(name))
}

/// What one combination's figures are made of.
pub(super) struct Summary<'a> {
    pub row: Row<'a>,
    pub spec: &'a StreamSpec,
    pub merged: &'a Merged,
    pub stats: &'a ServeStats,
    /// Server processes (a fleet when above one).
    pub server_processes: usize,
    /// Server RSS growth from start to every subscriber connected, bytes.
    pub server_rss: u64,
    /// Load workers' RSS growth from start to every subscriber connected, bytes.
    pub client_rss: u64,
    /// The kernel's socket memory growth over the same span, machine-wide, bytes.
    pub kernel_socket_bytes: Option<u64>,
    /// Subscribers established when memory was sampled (what the growth is divided by).
    pub established: usize,
    /// CPUs the server had: its pinned CPUs, or fewer under a CPU limit (its share of them is
    /// what tells a server-bound row).
    pub server_cpus: f64,
    /// CPUs the load workers had.
    pub load_cpus: usize,
    /// The machine's steal time over the stream (unknown for parts from several hosts).
    pub steal_share: Option<f64>,
    pub interval_log: Option<String>,
    /// The transport's settings as the server and load processes reported them.
    pub settings: SettingValues,
    /// Settings given to the run that the transport does not take.
    pub not_applied: Vec<String>,
    /// Monotonic origin of the intervals and the timeline.
    pub origin_ns: u64,
    /// When the restart fault killed the server, if it did.
    pub restarted: Option<Restarted>,
    /// When `run` silenced the link for a blackhole storm (monotonic ns), if it did.
    pub blackout: Option<(u64, u64)>,
    /// The server's link: the share of packets it loses, where known (what an at-most-once
    /// transport's drops are judged against), and the bytes that crossed it.
    pub link: LinkFigures,
    /// The server's processes sampled through the stream (for a storm's peak; empty when not
    /// sampled).
    pub server_samples: Vec<TimedSample>,
    /// The server's resources sampled at the soak's interval (empty when not asked for), and
    /// that interval.
    pub resources: (Vec<ResourceSample>, std::time::Duration),
}

/// A run's results before any row: the machine, where the processes ran, its floor, the
/// settings every server shares, and what is measured.
pub(super) fn no_rows_yet(
    (run_id, started_unix): (String, u64),
    machine: Machine,
    placement: Placement,
    calibration: Calibration,
    scenario: Scenario,
) -> Results {
    // Every server child runs with these (each gets its config over the protocol; each
    // transport's own settings are recorded per row, as the children report them).
    let defaults = ServerConfig::default();
    Results {
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
        scenario,
        runs: Vec::new(),
        max_rates: Vec::new(),
        rounds: None,
    }
}

/// The stream's span and deliveries, which every rate and cost is divided by.
struct Per {
    span_secs: f64,
    delivered: u64,
}

impl Per {
    /// `n` a second over the stream's span (0 for an empty span).
    fn second(&self, n: f64) -> f64 {
        if self.span_secs > 0.0 {
            n / self.span_secs
        } else {
            0.0
        }
    }

    /// `n` per event delivered (0 when none was).
    fn delivery(&self, n: f64) -> f64 {
        if self.delivered > 0 {
            n / self.delivered as f64
        } else {
            0.0
        }
    }

    /// The share of `cpus` CPUs that `cpu_us` of CPU time kept busy over the span.
    fn share(&self, cpu_us: f64, cpus: f64) -> f64 {
        if self.span_secs > 0.0 && cpus > 0.0 {
            cpu_us / (self.span_secs * 1e6 * cpus)
        } else {
            0.0
        }
    }
}

/// CPU time both sides spent on the stream, us.
struct CpuSpent {
    load_us: u64,
    /// A restarted server's is its two lives' (the first sampled at its kill).
    server_us: f64,
    /// Whether the server's CPU and memory were measured (no part ran in a process nobody
    /// named).
    server_measured: bool,
}

impl CpuSpent {
    fn of(s: &Summary<'_>) -> Self {
        Self {
            load_us: s
                .merged
                .workers
                .iter()
                .map(|w| w.end.cpu_us.saturating_sub(w.connected.cpu_us))
                .sum(),
            server_us: (s.stats.transport_cpu_us() + s.restarted.map_or(0, |r| r.first_life_cpu_us))
                as f64,
            server_measured: s.stats.unmeasured.is_none(),
        }
    }
}

/// Why the row fails beyond its ledger, if it does: traffic up or back that was not exact, or
/// drops of an at-most-once transport beyond what its link loses.
fn judged(s: &Summary<'_>, two_way: Option<&TwoWay>) -> Option<String> {
    let counts = &s.merged.counts;
    let dropped = super::dropped::judge(
        counts.dropped,
        counts.delivered + counts.dropped,
        s.link.loss,
    );
    two_way.and_then(TwoWay::failure).or(dropped)
}

/// Turns the merged load parts, the server's stats and the process samples into one result.
pub(super) fn summarise(s: Summary<'_>) -> TransportResult {
    let merged = s.merged;
    let counts = &merged.counts;
    let per = Per {
        span_secs: merged.span_secs(),
        delivered: counts.delivered,
    };
    let cpu = CpuSpent::of(&s);
    let load_share = per.share(cpu.load_us as f64, s.load_cpus.max(1) as f64);
    let server_share = per.share(cpu.server_us, s.server_cpus);
    let measured = cpu.server_measured;
    let (storm, fault_windows) = faults_of(&s);
    let two_way = two_way(&s, &cpu);
    let judged_failure = judged(&s, two_way.as_ref());
    // What the server refused to send explains what the subscribers then missed.
    let error = s
        .stats
        .refusal
        .clone()
        .or_else(|| merged.errors.first().cloned())
        .or_else(|| judged_failure.clone());
    let last_receiver = merged.fanout.last_receiver_us(counts.subscribers);
    let latency_over_time = latency::interval_summary(&merged.seconds);
    let (resources_over_time, resource_trend) = resources_of(&s, &latency_over_time);
    TransportResult {
        key: RowKey {
            subscribers: counts.subscribers,
            ..s.row.key.clone()
        },
        offered_rate: s.spec.per_stream_rate(),
        repeat: s.row.repeat,
        events_expected: s.spec.deliveries_per_subscriber() * counts.subscribers.max(1) as u64,
        events_delivered: counts.delivered,
        lost: counts.lost,
        duplicated: counts.duplicated,
        reordered: counts.reordered,
        reconnects: counts.reconnects,
        abandoned: s.stats.abandoned,
        unresumed_drops: s.stats.unresumed_drops,
        retries: s.stats.retries,
        gapped: counts.gapped,
        cut_off: counts.cut_off,
        dropped: counts.dropped,
        loss_accounted: counts.loss_accounted(),
        malformed: counts.malformed,
        digest_ok: counts.digest_mismatches == 0,
        failed: counts.failed() || judged_failure.is_some(),
        error,
        latency_us: Percentiles::of(&merged.latency),
        service_time_us: Percentiles::of(&merged.service),
        throughput: throughput(&s, &per),
        connection: connection(&s, &per, &cpu),
        events_per_response: merged.batches.as_ref().map(Percentiles::of),
        load_cpu_share: load_share,
        server_cpu_share: measured.then_some(server_share),
        steal_share: s.steal_share,
        // Unmeasured, the server's share is unknown, and so is what bound the row.
        bound: measured.then(|| Bound::of(load_share, server_share)),
        load_workers: Some(merged.workers.len()),
        publisher_lateness_us: s.stats.publisher_lateness,
        last_receiver_us: (!last_receiver.is_empty()).then(|| Percentiles::of(&last_receiver)),
        beyond_window: counts.beyond_window,
        latency_over_time,
        resources_over_time,
        resource_trend,
        // The fine timeline is kept where faults make it worth reading.
        latency_timeline: (!fault_windows.is_empty()).then(|| merged.timeline.clone()),
        fault_effect: faults::effect(&fault_windows, &merged.timeline),
        fault_windows,
        storm: storm.map(|(storm, window)| storm_effect(&s, storm, window, measured)),
        two_way,
        slow_consumer: merged.slow_consumer,
        server_peak_rss_bytes: Some(s.stats.peak_rss_bytes).filter(|&b| b > 0),
        server_processes: (s.server_processes > 1).then_some(s.server_processes),
        clock: clock_offsets(merged),
        histograms: Histograms {
            latency_us: latency::encode(&merged.latency),
            service_time_us: latency::encode(&merged.service),
        },
        interval_log: s.interval_log,
        settings: s.settings,
        not_applied: s.not_applied,
    }
}

/// The server's resources through the stream, each sample with its deliveries and CPU per
/// delivery from the same per-second intervals as the latencies, and their trend, which leaves
/// out the first interval while connections and buffers settle.
fn resources_of(
    s: &Summary<'_>,
    latency_over_time: &[latency::IntervalLatency],
) -> (Vec<ResourceSample>, Option<resources::Trend>) {
    let (samples, every) = s.resources.clone();
    let per_second = latency_over_time.iter().map(|i| (i.second, i.events));
    let samples = resources::with_deliveries(samples, per_second);
    let trend = resources::trend(&samples, every.as_millis() as u64);
    (samples, trend)
}

/// A storm and when it was on (monotonic ns).
type StormWindow = (Storm, (u64, u64));

/// The storm the row went through (with its window), and every fault's window.
fn faults_of(s: &Summary<'_>) -> (Option<StormWindow>, Vec<FaultWindow>) {
    let storm = storm_window(&s.settings, s.stats, s.blackout);
    let windows = fault_windows(
        s.stats,
        s.merged,
        s.restarted,
        storm.map(|(_, window)| window),
        &s.settings,
        s.origin_ns,
    );
    (storm, windows)
}

/// Events and payload bytes a second, and how much of what was due arrived.
fn throughput(s: &Summary<'_>, per: &Per) -> Throughput {
    let delivered = per.delivered as f64;
    let subscribers = s.merged.counts.subscribers.max(1);
    let expected = s.spec.deliveries_per_subscriber() * subscribers as u64;
    let payload_bytes = s.spec.payload_bytes() as f64 * delivered / s.spec.count as f64;
    Throughput {
        events_per_s: per.second(delivered),
        published_per_s: Some(per.second(s.spec.count as f64)),
        bytes_per_s: per.second(payload_bytes),
        events_per_s_per_subscriber: per.second(delivered) / subscribers as f64,
        reach: delivered / expected.max(1) as f64,
    }
}

/// What connections cost: handshakes, first events, memory per connection, CPU, wire bytes
/// and connections per delivery.
fn connection(s: &Summary<'_>, per: &Per, cpu: &CpuSpent) -> Connection {
    let merged = s.merged;
    let subscribers = merged.counts.subscribers.max(1);
    let established = s.established.max(1) as f64;
    let sockets = s.stats.sockets + merged.sockets;
    let quantile = |h: &hdrhistogram::Histogram<u64>, q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    let handshakes = |h| HandshakeTimes {
        p50: quantile(h, 0.5),
        p99: quantile(h, 0.99),
    };
    let load_peak_rss: u64 = merged.workers.iter().map(|w| w.end.peak_rss_bytes).sum();
    Connection {
        handshake_us: handshakes(&merged.handshakes),
        tls_handshake_us: (!merged.tls_handshakes.is_empty())
            .then(|| handshakes(&merged.tls_handshakes)),
        first_event_us: quantile(&merged.first_events, 0.5),
        server_rss_per_conn_bytes: cpu
            .server_measured
            .then(|| s.server_rss as f64 / established),
        client_rss_per_conn_bytes: s.client_rss as f64 / established,
        kernel_socket_bytes_per_conn: s
            .kernel_socket_bytes
            .map(|bytes| bytes as f64 / established),
        server_cpu_us_per_delivery: cpu.server_measured.then(|| per.delivery(cpu.server_us)),
        server_unmeasured: s.stats.unmeasured.clone(),
        load_cpu_us_per_delivery: Some(per.delivery(cpu.load_us as f64)),
        load_peak_rss_per_subscriber_bytes: Some(load_peak_rss as f64 / subscribers as f64),
        wire_bytes_per_event: per.delivery((sockets.bytes_in + sockets.bytes_out) as f64),
        link_bytes_per_event: s.link.bytes.map(|bytes| per.delivery(bytes as f64)),
        connections_per_1000_events: per.delivery(sockets.connections as f64 * 1000.0),
        connections_per_subscriber: Some(sockets.connections as f64 / subscribers as f64),
    }
}

/// The two-way figures, where subscribers sent upstream.
fn two_way(s: &Summary<'_>, cpu: &CpuSpent) -> Option<TwoWay> {
    let merged = s.merged;
    s.stats.upstream.as_ref().map(|report| {
        TwoWay::of(
            UPSTREAM_RATE.read(&s.settings),
            report,
            merged.counts.subscribers as u64,
            merged.copies,
            merged.round_trip.as_ref(),
            merged.copy_latency.as_ref(),
            cpu.server_measured.then_some(cpu.server_us),
        )
    })
}

/// What a storm did: who came back when, and (sampled through it) the server's peak.
fn storm_effect(s: &Summary<'_>, storm: Storm, window: (u64, u64), measured: bool) -> StormEffect {
    let effect = StormEffect::of(
        &crate::settings::Value::show(storm.kind),
        window,
        s.merged.counts.subscribers,
        &s.merged.reconnections,
        s.origin_ns,
    );
    match (measured, s.server_samples.is_empty()) {
        (true, false) => effect.with_server(&s.server_samples, window.0, s.server_cpus),
        _ => effect,
    }
}

/// The load workers' clocks against the server's, where they measured them (workers on other
/// hosts): each one's correction and how far it may be off, and the worst of those.
fn clock_offsets(merged: &Merged) -> Option<ClockOffsets> {
    if merged.clocks.is_empty() {
        return None;
    }
    let workers: Vec<WorkerClock> = merged
        .clocks
        .iter()
        .map(|(worker, clock)| WorkerClock {
            worker: *worker,
            offset_us: clock.applied_ns() as f64 / 1e3,
            uncertainty_us: clock.uncertainty_ns() as f64 / 1e3,
            rtt_us: clock.before.rtt_ns as f64 / 1e3,
        })
        .collect();
    let uncertainty_us = workers.iter().map(|w| w.uncertainty_us).fold(0.0, f64::max);
    Some(ClockOffsets {
        workers,
        uncertainty_us,
    })
}
