//! One row of the results from what was measured: the merged load parts, the server's stats
//! and the process samples become a [`TransportResult`], with its interval log and fault
//! windows. `run` builds its rows here, and `merge` builds rows of parts measured across hosts
//! the same way.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use super::settings::RESTART_AFTER;
use crate::clock::now_ns;
use crate::event::StreamSpec;
use crate::metrics::faults::{self, FaultWindow};
use crate::metrics::latency::{self, Percentiles};
use crate::metrics::process::TimedSample;
use crate::metrics::storm::StormEffect;
use crate::protocol::ServeStats;
use crate::results::key::RowKey;
use crate::results::two_way::TwoWay;
use crate::results::{
    Bound, ClockOffsets, Connection, HandshakeTimes, Histograms, Throughput, TransportResult,
    WorkerClock,
};
use crate::transport::listener::DROP_EVERY;
use crate::transport::resume::OUTAGE;
use crate::transport::storm::{Storm, StormKind, STORM_AFTER};
use crate::transport::upstream::UPSTREAM_RATE;
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
) -> Option<(Storm, (u64, u64))> {
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
    /// The server's processes sampled through the stream (for a storm's peak; empty when not
    /// sampled).
    pub server_samples: Vec<TimedSample>,
}

/// Turns the merged load parts, the server's stats and the process samples into one result.
pub(super) fn summarise(s: Summary<'_>) -> TransportResult {
    let merged = s.merged;
    let counts = &merged.counts;
    let subscribers = counts.subscribers.max(1);
    let delivered = counts.delivered;
    let span_secs = merged.span_secs();
    let per_sec = |n: f64| if span_secs > 0.0 { n / span_secs } else { 0.0 };
    let per_delivery = |n: f64| {
        if delivered > 0 {
            n / delivered as f64
        } else {
            0.0
        }
    };
    let share = |cpu_us: f64, cpus: f64| {
        if span_secs > 0.0 && cpus > 0.0 {
            cpu_us / (span_secs * 1e6 * cpus)
        } else {
            0.0
        }
    };
    let payload_bytes = s.spec.payload_bytes() as f64 * delivered as f64 / s.spec.count as f64;
    let expected = s.spec.deliveries_per_subscriber() * subscribers as u64;
    let sockets = s.stats.sockets + merged.sockets;
    let load_cpu_us: u64 = merged
        .workers
        .iter()
        .map(|w| w.end.cpu_us.saturating_sub(w.connected.cpu_us))
        .sum();
    // A restarted server's CPU is its two lives' (the first sampled at its kill).
    let server_cpu_us =
        (s.stats.transport_cpu_us() + s.restarted.map_or(0, |r| r.first_life_cpu_us)) as f64;
    let load_share = share(load_cpu_us as f64, s.load_cpus.max(1) as f64);
    // The server's CPU and memory, unless part of it ran in a process nobody named.
    let measured = s.stats.unmeasured.is_none();
    let server_share = share(server_cpu_us, s.server_cpus);
    // What the server refused to send explains what the subscribers then missed.
    let error = s
        .stats
        .refusal
        .clone()
        .or_else(|| merged.errors.first().cloned());
    let handshake = |q: f64| {
        let h = &merged.handshakes;
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    let last_receiver = merged.fanout.last_receiver_us(counts.subscribers);
    let storm = storm_window(&s.settings, s.stats, s.blackout);
    let fault_windows = fault_windows(
        s.stats,
        merged,
        s.restarted,
        storm.map(|(_, window)| window),
        &s.settings,
        s.origin_ns,
    );
    let fault_effect = faults::effect(&fault_windows, &merged.timeline);
    let two_way = s.stats.upstream.as_ref().map(|report| {
        TwoWay::of(
            UPSTREAM_RATE.read(&s.settings),
            report,
            counts.subscribers as u64,
            merged.copies,
            merged.round_trip.as_ref(),
            merged.copy_latency.as_ref(),
            measured.then_some(server_cpu_us),
        )
    });
    // Traffic up or back that was not exact fails the row, and says how.
    let two_way_failure = two_way.as_ref().and_then(TwoWay::failure);
    let error = error.or_else(|| two_way_failure.clone());

    TransportResult {
        key: RowKey {
            subscribers: counts.subscribers,
            ..s.row.key.clone()
        },
        offered_rate: s.spec.per_stream_rate(),
        repeat: s.row.repeat,
        settings: s.settings,
        not_applied: s.not_applied,
        events_expected: expected,
        events_delivered: delivered,
        lost: counts.lost,
        duplicated: counts.duplicated,
        reordered: counts.reordered,
        reconnects: counts.reconnects,
        abandoned: s.stats.abandoned,
        unresumed_drops: s.stats.unresumed_drops,
        retries: s.stats.retries,
        gapped: counts.gapped,
        cut_off: counts.cut_off,
        loss_accounted: counts.loss_accounted(),
        malformed: counts.malformed,
        digest_ok: counts.digest_mismatches == 0,
        failed: counts.failed() || two_way_failure.is_some(),
        error,
        latency_us: Percentiles::of(&merged.latency),
        service_time_us: Percentiles::of(&merged.service),
        throughput: Throughput {
            events_per_s: per_sec(delivered as f64),
            published_per_s: Some(per_sec(s.spec.count as f64)),
            bytes_per_s: per_sec(payload_bytes),
            events_per_s_per_subscriber: per_sec(delivered as f64) / subscribers as f64,
            reach: delivered as f64 / expected.max(1) as f64,
        },
        connection: Connection {
            handshake_us: HandshakeTimes {
                p50: handshake(0.5),
                p99: handshake(0.99),
            },
            tls_handshake_us: (!merged.tls_handshakes.is_empty()).then(|| HandshakeTimes {
                p50: merged.tls_handshakes.value_at_quantile(0.5),
                p99: merged.tls_handshakes.value_at_quantile(0.99),
            }),
            first_event_us: if merged.first_events.is_empty() {
                0
            } else {
                merged.first_events.value_at_quantile(0.5)
            },
            server_rss_per_conn_bytes: measured
                .then(|| s.server_rss as f64 / s.established.max(1) as f64),
            client_rss_per_conn_bytes: s.client_rss as f64 / s.established.max(1) as f64,
            kernel_socket_bytes_per_conn: s
                .kernel_socket_bytes
                .map(|bytes| bytes as f64 / s.established.max(1) as f64),
            server_cpu_us_per_delivery: measured.then(|| per_delivery(server_cpu_us)),
            server_unmeasured: s.stats.unmeasured.clone(),
            load_cpu_us_per_delivery: Some(per_delivery(load_cpu_us as f64)),
            load_peak_rss_per_subscriber_bytes: Some(
                merged
                    .workers
                    .iter()
                    .map(|w| w.end.peak_rss_bytes)
                    .sum::<u64>() as f64
                    / subscribers as f64,
            ),
            wire_bytes_per_event: per_delivery((sockets.bytes_in + sockets.bytes_out) as f64),
            connections_per_1000_events: per_delivery(sockets.connections as f64 * 1000.0),
            connections_per_subscriber: Some(sockets.connections as f64 / subscribers as f64),
        },
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
        interval_log: s.interval_log,
        latency_over_time: latency::interval_summary(&merged.seconds),
        // The fine timeline is kept where faults make it worth reading.
        latency_timeline: (!fault_windows.is_empty()).then(|| merged.timeline.clone()),
        fault_windows,
        fault_effect,
        storm: storm.map(|(storm, window)| {
            let effect = StormEffect::of(
                &crate::settings::Value::show(storm.kind),
                window,
                counts.subscribers,
                &merged.reconnections,
                s.origin_ns,
            );
            match (measured, s.server_samples.is_empty()) {
                (true, false) => effect.with_server(&s.server_samples, window.0, s.server_cpus),
                _ => effect,
            }
        }),
        two_way,
        slow_consumer: merged.slow_consumer,
        server_peak_rss_bytes: Some(s.stats.peak_rss_bytes).filter(|&b| b > 0),
        server_processes: (s.server_processes > 1).then_some(s.server_processes),
        clock: clock_offsets(merged),
        histograms: Histograms {
            latency_us: latency::encode(&merged.latency),
            service_time_us: latency::encode(&merged.service),
        },
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
