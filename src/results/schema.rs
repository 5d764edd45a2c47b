//! The results schema: one `results.json` per run, with the machine, the scenario, the
//! calibration and one entry per measured combination, histograms included so runs can be merged
//! and re-plotted. The JSON Schema generated from these types is committed as
//! `docs/results.schema.json` and checked by a test.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::key::RowKey;
use super::scenario::{Scenario, Stepped};
use crate::event::Rate;
use crate::metrics::faults::{FaultEffect, FaultWindow, SlowConsumer};
use crate::metrics::latency::Lateness;
use crate::metrics::latency::{IntervalLatency, Percentiles};
use crate::metrics::machine::Machine;
use crate::metrics::recorder::Timeline;
use crate::metrics::resources::{ResourceSample, Trend};
use crate::metrics::storm::StormEffect;
use crate::transport::{SettingValues, Transport};

/// Bumped whenever a field changes meaning or disappears; older files are migrated on reading
/// ([`migrate`]).
///
/// - 1: the first format.
/// - 2: `connection.server_cpu_us_per_event` became `server_cpu_us_per_delivery` (it always
///   was per delivery, and from 2 on it leaves out the publisher's own CPU); rows gained what
///   limited them, load CPU per delivery, steal, publisher lateness and the last receiver's
///   latency. Version-1 files read with those absent.
/// - 3: each transport's own settings are recorded per row as the server and load processes
///   ran with them (`runs[].settings`), with the swept ones that tell rows apart
///   (`runs[].variant`); the scenario keeps the settings given (`scenario.settings`). The
///   long-poll hold, WebSocket read buffer, poll interval and webhook connection switch moved
///   there from `settings` and `scenario`.
/// - 4: `connection.server_cpu_us_per_delivery` and `server_rss_per_conn_bytes` may be absent,
///   with `server_unmeasured` saying why (part of the server ran in a process nobody named).
///   Earlier files read as they are.
/// - 5: every row (and every `max_rates` entry) has one typed key ([`RowKey`]): to the
///   transport, subscribers, payload and swept settings it adds `server_impl` and
///   `client_impl` (which implementation ran), `server` (an outside server's profile),
///   `workload` (its shape and parameters) and `round`; rows gained `not_applied`, the
///   settings given that their transport does not take. Earlier files read with pushbench's
///   own implementations and server, broadcast, round 0, and nothing unapplied.
/// - 6: MQTT's `mqtt-broker-pid` setting is gone: a broker pushbench measures is one a profile
///   starts (`server`, `--server mosquitto`). Earlier rows read without it (every committed
///   one had it at 0, none).
pub const SCHEMA_VERSION: u32 = 6;

/// Above this share of its CPUs a process counts as saturated.
pub const SATURATED: f64 = 0.9;

/// What limited a row: the reader must know whether the figures measure the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Bound {
    /// The load used at least 90% of its CPUs and the server less: the figures understate the
    /// transport (capacity is still right: it is per server core-second).
    LoadBound,
    /// The server used at least 90% of its CPUs: the transport's capacity was reached.
    ServerBound,
    /// Neither was saturated: the offered schedule set the pace.
    ScheduleBound,
}

impl Bound {
    /// The rule, from the shares of their CPUs the load and the server used during the stream.
    pub fn of(load_share: f64, server_share: f64) -> Self {
        if server_share >= SATURATED {
            Bound::ServerBound
        } else if load_share >= SATURATED {
            Bound::LoadBound
        } else {
            Bound::ScheduleBound
        }
    }

    /// As shown in tables.
    pub fn label(self) -> &'static str {
        match self {
            Bound::LoadBound => "load-bound",
            Bound::ServerBound => "server-bound",
            Bound::ScheduleBound => "schedule-bound",
        }
    }
}

/// Everything one `pushbench run` measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Results {
    /// Version of this schema.
    pub schema_version: u32,
    /// Identifies the run: `<UTC date>-<time>-<scenario>`.
    pub run_id: String,
    /// When the run started, Unix seconds.
    pub started_unix: u64,
    /// False when the run was interrupted or a server crashed: some combinations are missing.
    pub complete: bool,
    /// Where the numbers come from.
    pub machine: Machine,
    /// Which CPUs the load and the server under test ran on.
    pub placement: Placement,
    /// The machine's own round-trip floor between the two processes.
    pub calibration: Calibration,
    /// Transport settings every run used (buffer sizes, batch limits, intervals).
    pub settings: Settings,
    /// What was run.
    pub scenario: Scenario,
    /// One entry per transport, subscriber count, payload and round (and, with `find_max`,
    /// offered rate), in run order.
    pub runs: Vec<TransportResult>,
    /// With `find_max`: the highest offered rate that held, per combination.
    pub max_rates: Vec<MaxRate>,
    /// With `--repeat K` (K > 1): how each round was ordered, and the machine's floor at its
    /// start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<Rounds>,
}

/// Randomized interleaved rounds: every combination once per round, each round in an order
/// drawn from the seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rounds {
    /// Seeds the order of every round.
    pub seed: u64,
    /// Each round's combinations, by label, in the order they ran.
    pub orders: Vec<Vec<String>>,
    /// The machine's floor (the same ping-pong as `calibration`), measured as each round
    /// began.
    pub floors: Vec<Calibration>,
}

impl TransportResult {
    /// What the row ran without, when the run was given settings its transport does not take
    /// (`ran without --compression, which tcp does not take`): shown wherever the row is.
    pub fn not_applied_note(&self) -> Option<String> {
        if self.not_applied.is_empty() {
            return None;
        }
        let flags: Vec<String> = self.not_applied.iter().map(|n| format!("--{n}")).collect();
        Some(format!(
            "ran without {}, which {} does not take",
            flags.join(", "),
            self.key.transport
        ))
    }
}

/// The highest offered rate at which a transport kept p99 within budget and lost nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MaxRate {
    /// The series whose offered rate was stepped up (its fields sit at the top level).
    #[serde(flatten)]
    pub key: RowKey,
    /// The last offered rate that held, events per second per stream (0: not even the first).
    pub events_per_s: f64,
    /// p99 latency at that rate, us.
    pub p99_us: u64,
    /// Why the next level failed.
    pub stopped_because: String,
    /// What was stepped up (left out: the offered rate).
    #[serde(default, skip_serializing_if = "Stepped::is_rate")]
    pub stepped: Stepped,
    /// With the subscribers stepped: the most that held at the key's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers_held: Option<usize>,
    /// Deliveries per second at the last level that held (every subscriber's events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries_per_s: Option<f64>,
    /// The server's CPU quota in cores (`--server-cpu-limit`), where it had one: capacity is
    /// quoted per core of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cores: Option<f64>,
    /// The server's resident memory at the last level that held, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_rss_bytes: Option<u64>,
    /// The server's CPU share (of its CPUs or quota) at the last level that held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_share: Option<f64>,
    /// What gave out at the knee: what was saturated at the nearest level above it that
    /// failed (absent such a level, what bound the last that held).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<Bound>,
    /// What the search did on its own that a reader should know (rerun at half the limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// CPU placement of the two processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Placement {
    /// Whether the server was pinned apart from the load.
    pub pinned: bool,
    /// CPUs of the load process (subscribers).
    pub load_cpus: Vec<usize>,
    /// CPUs of the server under test.
    pub server_cpus: Vec<usize>,
}

/// A raw TCP ping-pong between the load and a server process placed like the server under test:
/// how much of any latency is the machine's wake-up cost rather than the transport.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Calibration {
    /// Round trips timed.
    pub round_trips: u64,
    /// Round-trip time of a 64-byte message, microseconds.
    pub rtt_us: Percentiles,
}

/// Server settings every transport shares, recorded with the results (each transport's own
/// settings are recorded per row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Settings {
    /// Most events per write or response.
    pub batch_events: usize,
    /// Most bytes per write or response (at least one event).
    pub batch_bytes: usize,
    /// Keep-alive interval (WebSocket ping, SSE comment), seconds.
    pub heartbeat_secs: f64,
}

/// One measured combination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TransportResult {
    /// What the row measured (its fields sit at the row's top level).
    #[serde(flatten)]
    pub key: RowKey,
    /// Offered rate, events per second, or `max`.
    #[schemars(with = "String")]
    pub offered_rate: Rate,
    /// Which round of this combination (from 0; the key's round too).
    pub repeat: u32,
    /// The transport's own settings as the server and load processes reported running with
    /// them (canonical text by setting name).
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub settings: SettingValues,
    /// Settings given to the run that this row's transport does not take, so it ran without
    /// them (the others in the run took them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<String>,
    /// Events the subscribers should have received in all (events x subscribers).
    pub events_expected: u64,
    /// Distinct events received, summed over subscribers.
    pub events_delivered: u64,
    /// Events never received, summed over subscribers.
    pub lost: u64,
    /// Extra copies received.
    pub duplicated: u64,
    /// Events received after a later one.
    pub reordered: u64,
    /// Messages that were not valid events.
    pub malformed: u64,
    /// Every subscriber's digest equals the source's.
    pub digest_ok: bool,
    /// The run failed: lost or corrupted events, or an error. Its figures are not comparable.
    pub failed: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Receive minus scheduled send time (coordinated-omission free), warm-up excluded.
    pub latency_us: Percentiles,
    /// Receive minus actual send time, warm-up excluded.
    pub service_time_us: Percentiles,
    /// Delivered rates.
    pub throughput: Throughput,
    /// What connections cost.
    pub connection: Connection,
    /// Events per response, for transports that deliver in batches.
    pub events_per_response: Option<Percentiles>,
    /// Share of the load workers' CPUs they used during the stream (near 1: the load generator
    /// was the bottleneck, and the figures understate the transport).
    pub load_cpu_share: f64,
    /// Share of the server's CPUs the transport used during the stream (publisher excluded).
    #[serde(default)]
    pub server_cpu_share: Option<f64>,
    /// Share of the machine's CPU time the hypervisor stole during the row.
    #[serde(default)]
    pub steal_share: Option<f64>,
    /// What limited the row.
    #[serde(default)]
    pub bound: Option<Bound>,
    /// Load worker processes the subscribers were spread over.
    #[serde(default)]
    pub load_workers: Option<usize>,
    /// How late the publisher sent events against their schedule: the harness's own share of
    /// every latency (absent at an unlimited rate, where there is no schedule).
    #[serde(default)]
    pub publisher_lateness_us: Option<Lateness>,
    /// Per event, from its scheduled send until the last subscriber had it (over events every
    /// subscriber received, warm-up excluded): what a broadcast waits for.
    #[serde(default)]
    pub last_receiver_us: Option<Percentiles>,
    /// Arrivals too far out of order to be tracked exactly (also counted as lost).
    #[serde(default)]
    pub beyond_window: u64,
    /// Times a subscription was established again after its connection dropped (summed over
    /// subscribers).
    #[serde(default)]
    pub reconnects: u64,
    /// Deliveries the server gave up on (webhook events whose retries ran out), summed over
    /// subscribers.
    #[serde(default)]
    pub abandoned: u64,
    /// Subscriptions that ended without their subscriber confirming the whole stream (a drop,
    /// or a cut after the last byte was written) and never resumed within the server's
    /// reconnect grace, as the server counted them.
    #[serde(default)]
    pub unresumed_drops: u64,
    /// Deliveries the server sent again after a failed attempt (webhook retries).
    #[serde(default)]
    pub retries: u64,
    /// Of `lost`: events the server said it no longer held (resumed from before its replay
    /// window), summed over subscribers.
    #[serde(default)]
    pub gapped: u64,
    /// Of `lost`: events after a drop that a subscription told not to resume never asked for.
    #[serde(default)]
    pub cut_off: u64,
    /// Of `lost`: events the network dropped where the transport promises at most once
    /// (datagrams), summed over subscribers.
    #[serde(default)]
    pub dropped: u64,
    /// Events lost but accounted for (gaps, cut off, dropped datagrams): the row is judged by its ledger, not
    /// failed for the loss itself.
    #[serde(default)]
    pub loss_accounted: bool,
    /// Per-second latency histograms in HdrHistogram's interval-log format, relative to the
    /// results file.
    #[serde(default)]
    pub interval_log: Option<String>,
    /// p50 and p99 latency per second of the stream, so stalls show.
    pub latency_over_time: Vec<IntervalLatency>,
    /// The server's memory, descriptors and CPU per delivery through the stream, sampled at
    /// the scenario's `resources_every` (a soak; empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources_over_time: Vec<ResourceSample>,
    /// Their slopes after the first interval, and whether they make a leak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_trend: Option<Trend>,
    /// Worst latency and events per 100 ms of receive time since the intervals' origin; kept
    /// for rows with injected faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_timeline: Option<Timeline>,
    /// When injected faults were on, ms since the intervals' origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fault_windows: Vec<FaultWindow>,
    /// What the faults did to latency: baseline, worst during and after, recovery times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_effect: Option<FaultEffect>,
    /// What the reconnect storm cost, when one struck: how fast subscribers were back and
    /// caught up, the curve, reconnect times and failed attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<StormEffect>,
    /// What subscribers sent up and got back, where they sent up (two-way traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_way: Option<super::two_way::TwoWay>,
    /// The slow consumer of the slow-consumer fault (its latencies are not in this row's
    /// histograms, which show the other subscribers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_consumer: Option<SlowConsumer>,
    /// The server process's largest resident set size (VmHWM) over its life, bytes: what a
    /// subscriber it must buffer for (the slow consumer) costs it shows here.
    #[serde(default)]
    pub server_peak_rss_bytes: Option<u64>,
    /// Server processes sharing the port, when the server was a fleet of more than one (past
    /// one process's open-file limit); its CPU and memory are the fleet's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_processes: Option<usize>,
    /// Load workers on other hosts: their clocks' offsets to the server's, by which their
    /// latencies were corrected, and how far each may be off. Absent when every worker shared
    /// the server's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockOffsets>,
    /// The full histograms, HdrHistogram V2 + deflate, base64.
    pub histograms: Histograms,
}

/// The clocks of load workers on other hosts against the server's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClockOffsets {
    /// Each worker that measured its clock.
    pub workers: Vec<WorkerClock>,
    /// The largest of their uncertainties, us: every latency of the row may be off by up to
    /// this much.
    pub uncertainty_us: f64,
}

/// One load worker's clock against the server's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkerClock {
    /// The worker's index.
    pub worker: usize,
    /// The server's clock minus the worker's, us: added to every receive time.
    pub offset_us: f64,
    /// How far the corrected clock may have been from the server's during the stream, us:
    /// half the least round trip before it, or what was left after it plus that measurement's
    /// own half round trip, whichever is larger.
    pub uncertainty_us: f64,
    /// The least round trip of the probes before the stream, us.
    pub rtt_us: f64,
}

/// Delivered rates over the stream (first event sent to last received).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Throughput {
    /// Delivered events per second, all subscribers together.
    pub events_per_s: f64,
    /// Events the server published per second over the same span, every stream together:
    /// each encoded once, so with rooms or one stream per subscriber this differs from the
    /// deliveries by the shape, not the transport (absent in results from before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_per_s: Option<f64>,
    /// Delivered payload bytes per second, all subscribers together.
    pub bytes_per_s: f64,
    /// Delivered events per second per subscriber.
    pub events_per_s_per_subscriber: f64,
    /// Delivered over expected.
    pub reach: f64,
}

/// Connection cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Connection {
    /// Connect plus handshake (for polling: first answer; webhooks: registration), us.
    pub handshake_us: HandshakeTimes,
    /// The TLS handshake alone (part of `handshake_us`), us, timed where the connection was
    /// opened (webhooks: where the consumer accepted it); absent without TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake_us: Option<HandshakeTimes>,
    /// Median over subscribers of the first event's send-to-receive time, us.
    pub first_event_us: u64,
    /// Server RSS growth per connected subscriber, bytes; absent where part of the server ran
    /// in a process nobody named (`server_unmeasured` says which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_rss_per_conn_bytes: Option<f64>,
    /// Load-process RSS growth per connected subscriber, bytes.
    pub client_rss_per_conn_bytes: f64,
    /// The kernel's socket memory (TCP buffers from `/proc/net/sockstat` and unreclaimable slab
    /// from `/proc/meminfo`) growth per connected subscriber, machine-wide (both ends on one
    /// machine), bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_socket_bytes_per_conn: Option<f64>,
    /// Server CPU time per delivery (one event to one subscriber), us: the transport's, the
    /// publisher's own thread left out; absent where part of the server ran in a process
    /// nobody named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Why the server's CPU and memory are not measured (an external broker whose process
    /// was not named), where they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_unmeasured: Option<String>,
    /// Load workers' CPU time per delivery, us.
    #[serde(default)]
    pub load_cpu_us_per_delivery: Option<f64>,
    /// The load workers' peak RSS (VmHWM, summed over workers) per subscriber, bytes: all the
    /// load cost, histograms and buffers included.
    #[serde(default)]
    pub load_peak_rss_per_subscriber_bytes: Option<f64>,
    /// Bytes through the sockets per delivered event, both directions, headers and framing
    /// included.
    pub wire_bytes_per_event: f64,
    /// Bytes per delivered event at the server's network-namespace link (its interfaces,
    /// both ways: every layer's headers, acknowledgements and retransmissions, for TCP and
    /// QUIC alike), where the server ran in one; `wire_bytes_per_event` counts at the
    /// server's sockets (TCP payload, TLS included; QUIC's UDP payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_bytes_per_event: Option<f64>,
    /// TCP connections opened per 1,000 delivered events.
    pub connections_per_1000_events: f64,
    /// Connections the subscribers' deliveries used, per subscriber: 1 when each holds its
    /// own, less when they share (HTTP/2 streams), more when they reconnect or each delivery
    /// opens one. Absent in runs before it was recorded.
    #[serde(default)]
    pub connections_per_subscriber: Option<f64>,
}

/// Handshake time percentiles over subscribers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HandshakeTimes {
    /// Median, us.
    pub p50: u64,
    /// 99th percentile, us.
    pub p99: u64,
}

impl Connection {
    /// The TLS handshake's share of the connection cost (medians), when there was TLS. For
    /// webhooks the handshakes are the provider's connections to the consumer, so the share
    /// is of the registration's cost and may exceed one.
    pub fn tls_share_of_connect(&self) -> Option<f64> {
        let tls = self.tls_handshake_us?;
        (self.handshake_us.p50 > 0).then(|| tls.p50 as f64 / self.handshake_us.p50 as f64)
    }
}

/// Encoded histograms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Histograms {
    /// Latency, us.
    pub latency_us: String,
    /// Service time, us.
    pub service_time_us: String,
}

impl TransportResult {
    /// A row whose measurement failed before it had figures (a child killed or hung, a
    /// refused connection, a transport error): FAILED with `error`, every figure zero and
    /// its histograms empty, so the run goes on and every reader shows it as failed.
    pub fn unmeasured(
        key: RowKey,
        (offered_rate, events_expected): (Rate, u64),
        settings: SettingValues,
        not_applied: Vec<String>,
        error: String,
    ) -> Self {
        let empty = crate::metrics::latency::encode(&crate::metrics::latency::histogram());
        Self {
            repeat: key.round,
            key,
            offered_rate,
            settings,
            not_applied,
            events_expected,
            events_delivered: 0,
            lost: events_expected,
            duplicated: 0,
            reordered: 0,
            malformed: 0,
            digest_ok: false,
            failed: true,
            error: Some(error),
            latency_us: Percentiles::default(),
            service_time_us: Percentiles::default(),
            throughput: Throughput::default(),
            connection: Connection::default(),
            events_per_response: None,
            load_cpu_share: 0.0,
            server_cpu_share: None,
            steal_share: None,
            bound: None,
            load_workers: None,
            publisher_lateness_us: None,
            last_receiver_us: None,
            beyond_window: 0,
            reconnects: 0,
            abandoned: 0,
            unresumed_drops: 0,
            retries: 0,
            gapped: 0,
            cut_off: 0,
            dropped: 0,
            loss_accounted: false,
            interval_log: None,
            latency_over_time: Vec::new(),
            resources_over_time: Vec::new(),
            resource_trend: None,
            latency_timeline: None,
            fault_windows: Vec::new(),
            fault_effect: None,
            storm: None,
            two_way: None,
            slow_consumer: None,
            server_peak_rss_bytes: None,
            server_processes: None,
            clock: None,
            histograms: Histograms {
                latency_us: empty.clone(),
                service_time_us: empty,
            },
        }
    }
}

impl Results {
    /// Writes `DIR/results.json` atomically: a temporary file, then a rename, so a reader never
    /// sees half a file and an interrupted write never replaces a good one.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("results.json");
        let tmp = dir.join(".results.json.tmp");
        let written = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            file.write_all(b"\n")?;
            file.sync_all()
        })();
        if let Err(error) = written {
            // A full disk, say: the half-written copy goes, the last good file stays.
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Reads a results file, migrating older schema versions.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        Ok(serde_json::from_value(migrate(value)?)?)
    }

    /// The JSON Schema of this format.
    pub fn schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(Results)).unwrap_or_default()
    }
}

/// Brings a results document of any earlier schema version to the current one; refuses one
/// from a newer pushbench.
pub fn migrate(mut value: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let version = value
        .get("schema_version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| anyhow::anyhow!("not a pushbench results file: no schema_version"))?;
    if version > u64::from(SCHEMA_VERSION) {
        anyhow::bail!(
            "results schema version {version} is newer than this pushbench reads \
             ({SCHEMA_VERSION}); upgrade pushbench"
        );
    }
    if version < 3 {
        migrate_settings(&mut value);
    }
    if version < 6 {
        forget_setting(&mut value, "mqtt-broker-pid");
    }
    if version < 2 {
        let runs = value.get_mut("runs").and_then(|r| r.as_array_mut());
        for run in runs.into_iter().flatten() {
            if let Some(connection) = run.get_mut("connection").and_then(|c| c.as_object_mut()) {
                if let Some(cpu) = connection.remove("server_cpu_us_per_event") {
                    connection.insert("server_cpu_us_per_delivery".into(), cpu);
                }
            }
        }
    }
    value["schema_version"] = SCHEMA_VERSION.into();
    Ok(value)
}

/// Removes a setting that no longer exists from every row's settings and variant and from the
/// scenario's.
fn forget_setting(value: &mut serde_json::Value, name: &str) {
    let runs = value.get_mut("runs").and_then(|r| r.as_array_mut());
    for run in runs.into_iter().flatten() {
        for field in ["settings", "variant"] {
            if let Some(settings) = run.get_mut(field).and_then(|s| s.as_object_mut()) {
                settings.remove(name);
            }
        }
    }
    let given = value.pointer_mut("/scenario/settings");
    if let Some(settings) = given.and_then(|s| s.as_object_mut()) {
        settings.remove(name);
    }
}

/// Version 3 moved each transport's own settings into its rows: version 2 kept the long-poll
/// hold and WebSocket read buffer in `settings`, the poll interval and the webhook connection
/// switch in `scenario`, all under their own field names.
fn migrate_settings(value: &mut serde_json::Value) {
    const V2_SETTINGS: [&str; 5] = [
        "websocket-read-buffer",
        "longpoll-hold",
        "poll-interval",
        "webhook-new-connection",
        "webhook-attempts",
    ];
    use serde_json::Value;
    let secs = |v: Option<&Value>| {
        v.and_then(Value::as_f64)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map(crate::transport::settings::Value::show)
    };
    let mut old: std::collections::BTreeMap<&str, String> = Default::default();
    let settings = value.get("settings").cloned().unwrap_or_default();
    let scenario = value.get("scenario").cloned().unwrap_or_default();
    if let Some(bytes) = settings.get("ws_read_buffer_bytes").and_then(Value::as_u64) {
        old.insert("websocket-read-buffer", bytes.to_string());
    }
    if let Some(hold) = secs(settings.get("hold_secs")) {
        old.insert("longpoll-hold", hold);
    }
    if let Some(interval) = secs(scenario.get("poll_interval")) {
        old.insert("poll-interval", interval);
    }
    if let Some(new) = scenario
        .get("webhook_new_connection")
        .and_then(Value::as_bool)
    {
        old.insert(
            "webhook-new-connection",
            crate::transport::settings::Value::show(new),
        );
    }
    for run in value
        .get_mut("runs")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let transport = run.get("transport").and_then(Value::as_str);
        let Some(spec) = transport.and_then(Transport::named).map(Transport::spec) else {
            continue;
        };
        // Only the settings version 2 had; those added later read as their defaults.
        let recorded: serde_json::Map<String, Value> = spec
            .settings
            .iter()
            .filter(|s| V2_SETTINGS.contains(&s.name()))
            .map(|s| {
                let text = old
                    .get(s.name())
                    .cloned()
                    .unwrap_or_else(|| s.default_text());
                (s.name().to_owned(), Value::String(text))
            })
            .collect();
        run["settings"] = Value::Object(recorded);
    }
    // The scenario records settings given; version 2 recorded these two always, so keep them
    // only where they differ from the defaults.
    let given: serde_json::Map<String, Value> = ["poll-interval", "webhook-new-connection"]
        .into_iter()
        .filter_map(|name| {
            let setting = crate::transport::setting_named(name)?;
            let text = old.get(name)?;
            (*text != setting.default_text()).then(|| {
                (
                    name.to_owned(),
                    Value::Array(vec![Value::String(text.clone())]),
                )
            })
        })
        .collect();
    if let Some(scenario) = value.get_mut("scenario").and_then(Value::as_object_mut) {
        scenario.remove("poll_interval");
        scenario.remove("webhook_new_connection");
        scenario.insert("settings".into(), Value::Object(given));
    }
    if let Some(settings) = value.get_mut("settings").and_then(Value::as_object_mut) {
        settings.remove("ws_read_buffer_bytes");
        settings.remove("hold_secs");
    }
}

/// `YYYYMMDD-HHMMSS` (UTC) for Unix seconds, for run ids that sort by time.
pub fn utc_stamp(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 document reads as version 2 with the CPU figure renamed; a newer one is
    /// refused.
    #[test]
    fn migrates_version_one() {
        let v1 = serde_json::json!({
            "schema_version": 1,
            "runs": [{"connection": {"server_cpu_us_per_event": 9.5}}]
        });
        let v2 = migrate(v1).unwrap();
        assert_eq!(v2["schema_version"], SCHEMA_VERSION);
        assert_eq!(
            v2["runs"][0]["connection"]["server_cpu_us_per_delivery"],
            9.5
        );
        assert!(v2["runs"][0]["connection"]
            .get("server_cpu_us_per_event")
            .is_none());
        let future = serde_json::json!({"schema_version": 99});
        assert!(migrate(future).unwrap_err().to_string().contains("newer"));
    }

    /// Version 2's settings land in each row under the declared names, defaults filled in.
    #[test]
    fn migrates_version_two_settings() {
        let v2 = serde_json::json!({
            "schema_version": 2,
            "settings": {"ws_read_buffer_bytes": 4096, "hold_secs": 30.0, "batch_events": 256,
                         "batch_bytes": 65536, "heartbeat_secs": 15.0},
            "scenario": {"poll_interval": 0.05, "webhook_new_connection": false},
            "runs": [{"transport": "poll"}, {"transport": "longpoll"}, {"transport": "webhook"}]
        });
        let v3 = migrate(v2).unwrap();
        assert_eq!(
            v3["runs"][0]["settings"],
            serde_json::json!({"poll-interval": "50ms"})
        );
        assert_eq!(
            v3["runs"][1]["settings"],
            serde_json::json!({"longpoll-hold": "30s"})
        );
        assert_eq!(v3["runs"][2]["settings"]["webhook-attempts"], "8");
        assert_eq!(
            v3["scenario"]["settings"],
            serde_json::json!({"poll-interval": ["50ms"]})
        );
        assert!(v3["settings"].get("hold_secs").is_none());
    }

    /// Version 5's `mqtt-broker-pid` is gone from rows and the scenario; the rest stays.
    #[test]
    fn migrates_version_five_away_from_the_broker_pid() {
        let v5 = serde_json::json!({
            "schema_version": 5,
            "scenario": {"settings": {"mqtt-broker-pid": ["0"], "mqtt-qos": ["1"]}},
            "runs": [{"transport": "mqtt",
                      "settings": {"mqtt-broker-pid": "0", "mqtt-qos": "1"},
                      "variant": {"mqtt-broker-pid": "0"}}],
        });
        let v6 = migrate(v5).unwrap();
        assert_eq!(
            v6["runs"][0]["settings"],
            serde_json::json!({"mqtt-qos": "1"})
        );
        assert_eq!(v6["runs"][0]["variant"], serde_json::json!({}));
        assert_eq!(
            v6["scenario"]["settings"],
            serde_json::json!({"mqtt-qos": ["1"]})
        );
    }

    /// The bound rule: a saturated server wins; a saturated load alone is load-bound.
    #[test]
    fn bounds() {
        assert_eq!(Bound::of(1.0, 0.95), Bound::ServerBound);
        assert_eq!(Bound::of(0.97, 0.4), Bound::LoadBound);
        assert_eq!(Bound::of(0.3, 0.2), Bound::ScheduleBound);
    }

    /// Known dates format correctly.
    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(1_649_367_553), "20220407-213913");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
    }
}
