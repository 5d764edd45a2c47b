//! What a load worker is asked to do and what it hands back: the [`LoadJob`] `run` sends (or
//! `pushbench load` builds from its flags) and the [`LoadPart`] it returns, with the delivery
//! counts and the one rule for a failed combination. The harness makes and merges them; the
//! protocol owns their shape.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::probe::ClockSync;
use crate::event::StreamSpec;
use crate::metrics::faults::SlowConsumer;
use crate::metrics::process::ProcessSample;
use crate::metrics::recorder::{FanoutClock, Timeline};
use crate::metrics::sockets::SocketTotals;
use crate::metrics::storm::Reconnection;
use crate::transport::{ClientConfig, SettingValues, Target, Transport};

/// Reconnections one part carries: enough for a storm of every subscriber a worker can hold
/// several times over, and a bound on the part's size under heavy churn.
pub const RECONNECTIONS_KEPT: usize = 200_000;

/// Delivery counts summed over subscribers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCounts {
    /// Subscribers counted.
    pub subscribers: usize,
    /// Subscribers that received the identical stream: the source digest, nothing lost,
    /// duplicated or malformed, and no error.
    pub intact: usize,
    /// Subscribers that did not, but whose every missing event is accounted for: gaps the
    /// server named, or the tail a drop cut off with resuming off. Nothing duplicated or
    /// garbled.
    #[serde(default)]
    pub accounted: usize,
    /// Subscribers whose digest differs from the source's.
    pub digest_mismatches: usize,
    /// Subscribers that ended with an error.
    pub errors: usize,
    /// Events received, duplicates included.
    pub received: u64,
    /// Distinct events received.
    pub delivered: u64,
    /// Events never received.
    pub lost: u64,
    /// Extra copies received.
    pub duplicated: u64,
    /// Events received after a later one.
    pub reordered: u64,
    /// Messages that were not valid events of the stream.
    pub malformed: u64,
    /// Arrivals too far out of order to be tracked (they also count as lost).
    pub beyond_window: u64,
    /// Times a subscription was established again after its connection dropped.
    #[serde(default)]
    pub reconnects: u64,
    /// Events missing because the server said it no longer held them (gaps).
    #[serde(default)]
    pub gapped: u64,
    /// Events missing after a drop that the subscription did not resume from (resume off).
    #[serde(default)]
    pub cut_off: u64,
    /// Events the network dropped where the transport promises at most once (datagrams):
    /// missing, and a class of their own.
    #[serde(default)]
    pub dropped: u64,
}

impl DeliveryCounts {
    /// Sums another part's counts in.
    pub fn merge(&mut self, other: &DeliveryCounts) {
        self.subscribers += other.subscribers;
        self.intact += other.intact;
        self.digest_mismatches += other.digest_mismatches;
        self.errors += other.errors;
        self.received += other.received;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.malformed += other.malformed;
        self.beyond_window += other.beyond_window;
        self.reconnects += other.reconnects;
        self.gapped += other.gapped;
        self.cut_off += other.cut_off;
        self.dropped += other.dropped;
        self.accounted += other.accounted;
    }

    /// The one rule for a failed combination, used by `run` and `load` alike: some subscriber
    /// neither received the identical stream nor can account for every event it missed. Loss
    /// a fault explains (a gap past the replay window, a drop with resuming off) is judged by
    /// the ledger; loss nothing explains fails.
    pub fn failed(&self) -> bool {
        self.intact + self.accounted < self.subscribers
    }

    /// Whether the subscribers' loss is all accounted for, but some is there.
    pub fn loss_accounted(&self) -> bool {
        !self.failed() && self.accounted > 0
    }
}

/// Histograms of a part, HdrHistogram V2 + deflate, base64.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartHistograms {
    /// Receive minus scheduled send time, us, warm-up excluded.
    pub latency_us: String,
    /// Receive minus actual send time, us, warm-up excluded.
    pub service_time_us: String,
    /// Connect plus handshake per subscriber, us.
    pub handshake_us: String,
    /// First event's send to receive per subscriber, us.
    pub first_event_us: String,
    /// Events per response, for batching transports.
    pub events_per_response: Option<String>,
    /// TLS handshakes this worker timed (its subscribers', or the ones its webhook consumers
    /// accepted), us; absent without TLS.
    #[serde(default)]
    pub tls_handshake_us: Option<String>,
    /// Latency per second since `interval_origin_ns`.
    pub seconds: Vec<String>,
    /// Two-way traffic: a sender's own messages from their schedule back to it, us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_trip_us: Option<String>,
    /// Two-way traffic: messages from their sender's schedule to the other members of its
    /// room, us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies_us: Option<String>,
}

/// The load worker's own process, sampled three times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerProcess {
    /// Before the first subscriber.
    pub before: ProcessSample,
    /// With every subscriber connected, before the stream.
    pub connected: ProcessSample,
    /// Once every subscriber was done.
    pub end: ProcessSample,
}

/// Everything one load worker measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadPart {
    /// Which worker (from 0).
    pub worker: usize,
    /// The transport its subscribers used.
    pub transport: Transport,
    /// The stream they should have received: parts of different streams never merge.
    pub spec: StreamSpec,
    /// Monotonic origin of the per-second intervals.
    pub interval_origin_ns: u64,
    /// Delivery counts over its subscribers.
    pub counts: DeliveryCounts,
    /// The first few distinct errors, word for word.
    pub errors: Vec<String>,
    /// Send time of the first event any of its subscribers received.
    pub first_sent_ns: Option<u64>,
    /// When its last event arrived.
    pub last_received_ns: Option<u64>,
    /// Its histograms.
    pub histograms: PartHistograms,
    /// When the last of its subscribers had each followed event.
    pub fanout: FanoutClock,
    /// Its process: memory and CPU.
    pub process: WorkerProcess,
    /// Connections and bytes at sockets it accepted (webhook consumers).
    pub sockets: SocketTotals,
    /// The transport's client settings its subscribers ran with (defaults filled in).
    #[serde(default)]
    pub settings: SettingValues,
    /// Worst latency and events per bin of receive time since `interval_origin_ns`.
    #[serde(default)]
    pub timeline: Timeline,
    /// When subscribers were down for the outage fault (monotonic ns): from the first going
    /// down to the last coming back.
    #[serde(default)]
    pub outage_ns: Option<(u64, u64)>,
    /// Every reconnection of this worker's subscribers (what a storm's curve is read from),
    /// at most [`RECONNECTIONS_KEPT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reconnections: Vec<Reconnection>,
    /// Two-way traffic with the echo on: the copies its subscribers had to get back, and got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<crate::upstream::CopyCounts>,
    /// The slow consumer, if this worker ran it.
    #[serde(default)]
    pub slow_consumer: Option<SlowConsumer>,
    /// This worker's clock against the server's, when it measured it (a worker on another
    /// host): every time in this part is on the server's clock, corrected by it.
    #[serde(default)]
    pub clock: Option<ClockSync>,
    /// CPUs this worker could run on.
    #[serde(default)]
    pub cpus: usize,
}

/// One load worker's share of a measurement: sent by `run` over the typed protocol, or built
/// from `pushbench load`'s flags.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadJob {
    /// Which worker this is (from 0).
    pub worker: usize,
    /// The transport to subscribe with.
    pub transport: Transport,
    /// Where its subscribers subscribe.
    pub target: Target,
    /// How many subscribers this worker runs.
    pub subscribers: usize,
    /// Index of its first subscriber among every worker's (spreads source addresses).
    pub first_subscriber: usize,
    /// The stream the server publishes (for the source digest and counts).
    pub spec: StreamSpec,
    /// Events scheduled this long after the stream's start are the first recorded.
    pub warmup: Duration,
    /// Monotonic origin of per-second intervals, the same for every worker of a run.
    pub interval_origin_ns: u64,
    /// Client settings (secret included).
    pub config: ClientConfig,
    /// Longest a subscriber may take.
    pub timeout: Duration,
    /// CPUs to pin this worker to.
    pub cpus: Option<Vec<usize>>,
    /// Measure this host's clock against the server's (before and after the stream) and
    /// correct every time by it: a worker that may be on another host (`pushbench load`; a
    /// server on loopback is on this host). Workers `run` starts share the server's clock.
    #[serde(default)]
    pub measure_clock: bool,
    /// The link to put in front of each endpoint its subscribers listen on (webhook
    /// consumers, which the server dials), where the row has one: its toxics as `--link`
    /// takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_link: Option<String>,
}
