//! One row per measured combination with its repeats folded into median and min-max, and the
//! catalogue of figures every output shows. One list, so the Markdown, the HTML, `compare` and
//! `recommend` agree on what a figure is called, its unit and which way is better.

use hdrhistogram::Histogram;

use super::format::{bytes, micros, rate, thousands};
pub use super::key::RowKey;
use super::schema::{Results, TransportResult};
use super::stats;
use crate::event::{PayloadSizes, Rate};
use crate::metrics::latency;
use crate::transport::Transport;

/// How a figure is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds, shown in us, ms or s.
    Micros,
    /// A rate, with thousands separators (and its fraction below 10).
    PerSecond,
    /// Bytes (or bytes per second), shown in B, KB or MB.
    Bytes,
    /// A share, shown as a percentage.
    Share,
    /// A count.
    Count,
    /// A number with this many decimals.
    Decimals(usize),
    /// A ratio to another figure, shown as `1.08×`.
    Times,
}

impl Unit {
    /// The value in this unit, for people.
    pub fn show(self, value: f64) -> String {
        match self {
            Unit::Micros => micros(value.round().max(0.0) as u64),
            Unit::PerSecond => rate(value),
            Unit::Count => thousands(value),
            Unit::Bytes => bytes(value),
            Unit::Share => format!("{:.1}%", value * 100.0),
            Unit::Decimals(places) => format!("{value:.places$}"),
            Unit::Times => format!("{value:.2}×"),
        }
    }
}

/// Which way a figure improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Smaller is better (latency, cost).
    Lower,
    /// Larger is better (throughput, reach).
    Higher,
}

/// The report section a figure belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Receive minus scheduled send time.
    Latency,
    /// Receive minus actual send time.
    ServiceTime,
    /// Delivered rates and reach.
    Throughput,
    /// What connections cost.
    Connection,
    /// Lost, duplicated, reordered.
    Delivery,
}

impl Section {
    /// Every section, in report order, with its heading and what it means.
    pub const ALL: [(Section, &'static str, &'static str); 5] = [
        (
            Section::Latency,
            "Latency (receive − scheduled send, coordinated-omission free)",
            "What a consumer waits: from the moment the schedule said the event should go out \
             to its arrival, so a stalled sender is charged for every event it held back.",
        ),
        (
            Section::ServiceTime,
            "Service time (receive − actual send)",
            "From the moment the server handed the event to the transport to its arrival.",
        ),
        (
            Section::Throughput,
            "Throughput and reach",
            "All subscribers together, from the first event sent to the last received. Reach is \
             delivered over expected events.",
        ),
        (
            Section::Connection,
            "Connection cost",
            "Handshake: connect and upgrade (polling: first answer; webhooks: registration). \
             RSS growth per connected subscriber, server and load process. Wire bytes count both \
             directions at the sockets, headers and framing included.",
        ),
        (
            Section::Delivery,
            "Delivery check",
            "Every subscriber's stream is folded into an order-sensitive digest and compared with \
             the source's. Loss a fault explains is judged by the ledger instead: events a server \
             no longer held (lost to gaps past its replay window) and events after a drop that a \
             subscriber told not to resume never asked for (cut off) are counted, and a row \
             whose every missing event is one of those reads \"ledger ok\"; any other loss fails.",
        ),
    ];
}

/// Every figure, by name: code refers to a figure only through this, so a misspelt figure does
/// not compile. Each variant's position is its entry in [`METRICS`] (a test checks it).
///
/// ```compile_fail
/// // A misspelt figure is a compile error, not a silent zero.
/// let _ = pushbench::results::figures::Figure::LatencyP99x;
/// ```
///
/// ```
/// use pushbench::results::figures::Figure;
/// assert_eq!(Figure::LatencyP99.key(), "latency_p99");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Figure {
    /// `latency_p50`: see its [`Metric`].
    LatencyP50,
    /// `latency_p90`: see its [`Metric`].
    LatencyP90,
    /// `latency_p99`: see its [`Metric`].
    LatencyP99,
    /// `latency_p999`: see its [`Metric`].
    LatencyP999,
    /// `latency_max`: see its [`Metric`].
    LatencyMax,
    /// `last_receiver_p50`: see its [`Metric`].
    LastReceiverP50,
    /// `last_receiver_p99`: see its [`Metric`].
    LastReceiverP99,
    /// `round_trip_p50`: see its [`Metric`].
    RoundTripP50,
    /// `round_trip_p99`: see its [`Metric`].
    RoundTripP99,
    /// `publisher_late_p50`: see its [`Metric`].
    PublisherLateP50,
    /// `publisher_late_p99`: see its [`Metric`].
    PublisherLateP99,
    /// `service_p50`: see its [`Metric`].
    ServiceP50,
    /// `service_p90`: see its [`Metric`].
    ServiceP90,
    /// `service_p99`: see its [`Metric`].
    ServiceP99,
    /// `service_p999`: see its [`Metric`].
    ServiceP999,
    /// `service_max`: see its [`Metric`].
    ServiceMax,
    /// `events_per_s`: see its [`Metric`].
    EventsPerS,
    /// `published_per_s`: see its [`Metric`].
    PublishedPerS,
    /// `bytes_per_s`: see its [`Metric`].
    BytesPerS,
    /// `reach`: see its [`Metric`].
    Reach,
    /// `capacity`: see its [`Metric`].
    Capacity,
    /// `server_cpu_share`: see its [`Metric`].
    ServerCpuShare,
    /// `load_cpu_share`: see its [`Metric`].
    LoadCpuShare,
    /// `load_cpu_us_per_delivery`: see its [`Metric`].
    LoadCpuUsPerDelivery,
    /// `steal`: see its [`Metric`].
    Steal,
    /// `handshake_p50`: see its [`Metric`].
    HandshakeP50,
    /// `tls_handshake_p50`: see its [`Metric`].
    TlsHandshakeP50,
    /// `tls_share_of_connect`: see its [`Metric`].
    TlsShareOfConnect,
    /// `first_event`: see its [`Metric`].
    FirstEvent,
    /// `server_rss_per_conn`: see its [`Metric`].
    ServerRssPerConn,
    /// `client_rss_per_conn`: see its [`Metric`].
    ClientRssPerConn,
    /// `kernel_socket_per_conn`: see its [`Metric`].
    KernelSocketPerConn,
    /// `load_peak_rss_per_subscriber`: see its [`Metric`].
    LoadPeakRssPerSubscriber,
    /// `server_cpu_us_per_delivery`: see its [`Metric`].
    ServerCpuUsPerDelivery,
    /// `wire_bytes_per_event`: see its [`Metric`].
    WireBytesPerEvent,
    /// `link_bytes_per_event`: see its [`Metric`].
    LinkBytesPerEvent,
    /// `connections_per_1000_events`: see its [`Metric`].
    ConnectionsPer1000Events,
    /// `connections_per_subscriber`: see its [`Metric`].
    ConnectionsPerSubscriber,
    /// `lost`: see its [`Metric`].
    Lost,
    /// `duplicated`: see its [`Metric`].
    Duplicated,
    /// `reordered`: see its [`Metric`].
    Reordered,
    /// `reconnects`: see its [`Metric`].
    Reconnects,
    /// `abandoned`: see its [`Metric`].
    Abandoned,
    /// `gapped`: see its [`Metric`].
    Gapped,
    /// `cut_off`: see its [`Metric`].
    CutOff,
    /// `dropped`: see its [`Metric`].
    Dropped,
    /// `retries`: see its [`Metric`].
    Retries,
}

impl Figure {
    /// Its entry in the catalogue: label, section, unit, direction and how it is read.
    pub fn metric(self) -> &'static Metric {
        &METRICS[self as usize]
    }

    /// Its stable key, as tools and `compare` files name it.
    pub fn key(self) -> &'static str {
        self.metric().key
    }
}

/// A figure: its key (stable, for tools), label, section, unit, direction and how to read it
/// from one run.
#[derive(Clone, Copy)]
pub struct Metric {
    /// Which figure this is.
    pub figure: Figure,
    /// Stable identifier.
    pub key: &'static str,
    /// Column heading.
    pub label: &'static str,
    /// Where it is shown.
    pub section: Section,
    /// How it is shown.
    pub unit: Unit,
    /// Which way is better.
    pub better: Better,
    /// Reads it from one run.
    pub value: fn(&TransportResult) -> f64,
}

/// Every figure a report shows, in order.
pub const METRICS: &[Metric] = &[
    metric(
        Figure::LatencyP50,
        "latency_p50",
        "p50",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| r.latency_us.p50 as f64,
    ),
    metric(
        Figure::LatencyP90,
        "latency_p90",
        "p90",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| r.latency_us.p90 as f64,
    ),
    metric(
        Figure::LatencyP99,
        "latency_p99",
        "p99",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| r.latency_us.p99 as f64,
    ),
    metric(
        Figure::LatencyP999,
        "latency_p999",
        "p99.9",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| r.latency_us.p999 as f64,
    ),
    metric(
        Figure::LatencyMax,
        "latency_max",
        "max",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| r.latency_us.max as f64,
    ),
    metric(
        Figure::LastReceiverP50,
        "last_receiver_p50",
        "last receiver p50",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| option(r.last_receiver_us.map(|p| p.p50 as f64)),
    ),
    metric(
        Figure::LastReceiverP99,
        "last_receiver_p99",
        "last receiver p99",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| option(r.last_receiver_us.map(|p| p.p99 as f64)),
    ),
    metric(
        Figure::RoundTripP50,
        "round_trip_p50",
        "round trip p50",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| option(round_trip(r).map(|p| p.p50 as f64)),
    ),
    metric(
        Figure::RoundTripP99,
        "round_trip_p99",
        "round trip p99",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| option(round_trip(r).map(|p| p.p99 as f64)),
    ),
    metric(
        Figure::PublisherLateP50,
        "publisher_late_p50",
        "publisher late p50",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| option(r.publisher_lateness_us.map(|l| l.p50_us)),
    ),
    metric(
        Figure::PublisherLateP99,
        "publisher_late_p99",
        "publisher late p99",
        Section::Latency,
        Unit::Micros,
        Better::Lower,
        |r| option(r.publisher_lateness_us.map(|l| l.p99_us)),
    ),
    metric(
        Figure::ServiceP50,
        "service_p50",
        "p50",
        Section::ServiceTime,
        Unit::Micros,
        Better::Lower,
        |r| r.service_time_us.p50 as f64,
    ),
    metric(
        Figure::ServiceP90,
        "service_p90",
        "p90",
        Section::ServiceTime,
        Unit::Micros,
        Better::Lower,
        |r| r.service_time_us.p90 as f64,
    ),
    metric(
        Figure::ServiceP99,
        "service_p99",
        "p99",
        Section::ServiceTime,
        Unit::Micros,
        Better::Lower,
        |r| r.service_time_us.p99 as f64,
    ),
    metric(
        Figure::ServiceP999,
        "service_p999",
        "p99.9",
        Section::ServiceTime,
        Unit::Micros,
        Better::Lower,
        |r| r.service_time_us.p999 as f64,
    ),
    metric(
        Figure::ServiceMax,
        "service_max",
        "max",
        Section::ServiceTime,
        Unit::Micros,
        Better::Lower,
        |r| r.service_time_us.max as f64,
    ),
    metric(
        Figure::EventsPerS,
        "events_per_s",
        "events/s",
        Section::Throughput,
        Unit::PerSecond,
        Better::Higher,
        |r| r.throughput.events_per_s,
    ),
    metric(
        Figure::PublishedPerS,
        "published_per_s",
        "published/s",
        Section::Throughput,
        Unit::PerSecond,
        // As offered: what the server encoded, every stream together (deliveries above).
        Better::Higher,
        |r| option(r.throughput.published_per_s),
    ),
    metric(
        Figure::BytesPerS,
        "bytes_per_s",
        "payload bytes/s",
        Section::Throughput,
        Unit::Bytes,
        Better::Higher,
        |r| r.throughput.bytes_per_s,
    ),
    metric(
        Figure::Reach,
        "reach",
        "reach",
        Section::Throughput,
        Unit::Share,
        Better::Higher,
        |r| r.throughput.reach,
    ),
    metric(
        Figure::Capacity,
        "capacity",
        "server deliveries/core-s",
        Section::Throughput,
        Unit::PerSecond,
        Better::Higher,
        |r| match r.connection.server_cpu_us_per_delivery {
            Some(us) if us > 0.0 => 1e6 / us,
            _ => f64::NAN,
        },
    ),
    metric(
        Figure::ServerCpuShare,
        "server_cpu_share",
        "server CPU",
        Section::Throughput,
        Unit::Share,
        Better::Lower,
        |r| option(r.server_cpu_share),
    ),
    metric(
        Figure::LoadCpuShare,
        "load_cpu_share",
        "load CPU",
        Section::Throughput,
        Unit::Share,
        Better::Lower,
        |r| r.load_cpu_share,
    ),
    metric(
        Figure::LoadCpuUsPerDelivery,
        "load_cpu_us_per_delivery",
        "load CPU us/delivery",
        Section::Throughput,
        Unit::Decimals(2),
        Better::Lower,
        |r| option(r.connection.load_cpu_us_per_delivery),
    ),
    metric(
        Figure::Steal,
        "steal",
        "steal",
        Section::Throughput,
        Unit::Share,
        Better::Lower,
        |r| option(r.steal_share),
    ),
    metric(
        Figure::HandshakeP50,
        "handshake_p50",
        "handshake",
        Section::Connection,
        Unit::Micros,
        Better::Lower,
        |r| r.connection.handshake_us.p50 as f64,
    ),
    metric(
        Figure::TlsHandshakeP50,
        "tls_handshake_p50",
        "TLS handshake",
        Section::Connection,
        Unit::Micros,
        Better::Lower,
        |r| option(r.connection.tls_handshake_us.map(|h| h.p50 as f64)),
    ),
    metric(
        Figure::TlsShareOfConnect,
        "tls_share_of_connect",
        "TLS share of connect",
        Section::Connection,
        Unit::Share,
        Better::Lower,
        |r| option(r.connection.tls_share_of_connect()),
    ),
    metric(
        Figure::FirstEvent,
        "first_event",
        "first event",
        Section::Connection,
        Unit::Micros,
        Better::Lower,
        |r| r.connection.first_event_us as f64,
    ),
    metric(
        Figure::ServerRssPerConn,
        "server_rss_per_conn",
        "server RSS/conn",
        Section::Connection,
        Unit::Bytes,
        Better::Lower,
        |r| option(r.connection.server_rss_per_conn_bytes),
    ),
    metric(
        Figure::ClientRssPerConn,
        "client_rss_per_conn",
        "client RSS/conn",
        Section::Connection,
        Unit::Bytes,
        Better::Lower,
        |r| r.connection.client_rss_per_conn_bytes,
    ),
    metric(
        Figure::KernelSocketPerConn,
        "kernel_socket_per_conn",
        "kernel socket mem/conn",
        Section::Connection,
        Unit::Bytes,
        Better::Lower,
        |r| option(r.connection.kernel_socket_bytes_per_conn),
    ),
    metric(
        Figure::LoadPeakRssPerSubscriber,
        "load_peak_rss_per_subscriber",
        "load peak RSS/sub",
        Section::Connection,
        Unit::Bytes,
        Better::Lower,
        |r| option(r.connection.load_peak_rss_per_subscriber_bytes),
    ),
    metric(
        Figure::ServerCpuUsPerDelivery,
        "server_cpu_us_per_delivery",
        "server CPU us/delivery",
        Section::Connection,
        Unit::Decimals(2),
        Better::Lower,
        |r| option(r.connection.server_cpu_us_per_delivery),
    ),
    metric(
        Figure::WireBytesPerEvent,
        "wire_bytes_per_event",
        "wire B/event",
        Section::Connection,
        Unit::Decimals(0),
        Better::Lower,
        |r| r.connection.wire_bytes_per_event,
    ),
    metric(
        Figure::LinkBytesPerEvent,
        "link_bytes_per_event",
        "link B/event",
        Section::Connection,
        Unit::Decimals(0),
        Better::Lower,
        |r| option(r.connection.link_bytes_per_event),
    ),
    metric(
        Figure::ConnectionsPer1000Events,
        "connections_per_1000_events",
        "conns/1k events",
        Section::Connection,
        Unit::Decimals(2),
        Better::Lower,
        |r| r.connection.connections_per_1000_events,
    ),
    metric(
        Figure::ConnectionsPerSubscriber,
        "connections_per_subscriber",
        "conns/subscriber",
        Section::Connection,
        Unit::Decimals(2),
        Better::Lower,
        |r| option(r.connection.connections_per_subscriber),
    ),
    metric(
        Figure::Lost,
        "lost",
        "lost",
        Section::Delivery,
        Unit::Count,
        Better::Lower,
        |r| r.lost as f64,
    ),
    metric(
        Figure::Duplicated,
        "duplicated",
        "duplicated",
        Section::Delivery,
        Unit::Count,
        Better::Lower,
        |r| r.duplicated as f64,
    ),
    metric(
        Figure::Reordered,
        "reordered",
        "reordered",
        Section::Delivery,
        Unit::Count,
        Better::Lower,
        |r| r.reordered as f64,
    ),
    metric(
        Figure::Reconnects,
        "reconnects",
        "reconnects",
        Section::Delivery,
        Unit::Count,
        Better::Lower,
        |r| r.reconnects as f64,
    ),
    metric(
        Figure::Abandoned,
        "abandoned",
        "abandoned",
        Section::Delivery,
        Unit::Count,
        Better::Lower,
        |r| r.abandoned as f64,
    ),
    metric(
        Figure::Gapped,
        "gapped",
        "lost to gaps",
        Section::Delivery,
        Unit::Count,
        Better::Lower,
        |r| r.gapped as f64,
    ),
    metric(
        Figure::CutOff,
        "cut_off",
        "cut off",
        Section::Delivery,
        Unit::Count,
        Better::Lower,
        |r| r.cut_off as f64,
    ),
    metric(
        Figure::Dropped,
        "dropped",
        "dropped (at most once)",
        Section::Delivery,
        Unit::Count,
        Better::Lower,
        |r| r.dropped as f64,
    ),
    metric(
        Figure::Retries,
        "retries",
        "retries",
        Section::Delivery,
        Unit::Count,
        Better::Lower,
        |r| r.retries as f64,
    ),
];

/// A two-way row's round trip: a sender's message from its schedule back to it.
fn round_trip(r: &TransportResult) -> Option<latency::Percentiles> {
    r.two_way.as_ref()?.round_trip_us
}

/// A figure a run may not have (older results, no schedule): absent values are left out of
/// spreads, and a row with none shows "—".
fn option(value: Option<f64>) -> f64 {
    value.unwrap_or(f64::NAN)
}

/// Builds a [`Metric`] in one line (a `const fn`, so the catalogue stays a constant).
const fn metric(
    figure: Figure,
    key: &'static str,
    label: &'static str,
    section: Section,
    unit: Unit,
    better: Better,
    value: fn(&TransportResult) -> f64,
) -> Metric {
    Metric {
        figure,
        key,
        label,
        section,
        unit,
        better,
        value,
    }
}

/// The figure with this key (for keys read from files; code names figures by [`Figure`]).
pub fn metric_named(key: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.key == key)
}

impl Metric {
    /// The label with its section where the label alone is ambiguous: `latency p99`,
    /// `service p99`, `events/s`.
    pub fn qualified_label(&self) -> String {
        match self.section {
            Section::Latency => format!("latency {}", self.label),
            Section::ServiceTime => format!("service {}", self.label),
            _ => self.label.to_string(),
        }
    }
}

/// A figure over rounds: median, smallest and largest, and from
/// [`stats::MIN_ROUNDS_FOR_INTERVAL`] rounds a bootstrap confidence interval of the median.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    /// Median over rounds.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many rounds.
    pub n: usize,
    /// The median's [`stats::CONFIDENCE`] interval, where there were rounds enough.
    pub interval: Option<(f64, f64)>,
}

/// An interval wider than this share of its median marks the figure as not to be trusted.
pub const NOISY_WIDTH: f64 = 0.2;

impl Spread {
    /// Median, range and interval of the values (all zero when there are none).
    pub fn of(values: Vec<f64>) -> Self {
        Self::drawn(values, true)
    }

    /// Median and range of the values, with no interval drawn.
    pub fn without_interval(values: Vec<f64>) -> Self {
        Self::drawn(values, false)
    }

    fn drawn(mut values: Vec<f64>, with_interval: bool) -> Self {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let Some(median) = stats::median(&values) else {
            return Self {
                median: 0.0,
                min: 0.0,
                max: 0.0,
                n,
                interval: None,
            };
        };
        Self {
            median,
            min: values[0],
            max: values[n - 1],
            n,
            interval: with_interval
                .then(|| stats::median_interval(&values))
                .flatten(),
        }
    }

    /// Whether its interval is wider than [`NOISY_WIDTH`] of its median: a figure not to
    /// trust.
    pub fn noisy(&self) -> bool {
        self.interval.is_some_and(|(lo, hi)| {
            self.median != 0.0 && (hi - lo) > NOISY_WIDTH * self.median.abs()
        })
    }

    /// `median`; `median [lo–hi]` with an interval (and `*` after it when it is
    /// [`Spread::noisy`]); `median (min–max)` over fewer rounds than an interval takes; "—" when
    /// nothing was measured.
    pub fn show(&self, unit: Unit) -> String {
        if self.n == 0 {
            "—".into()
        } else if let Some((lo, hi)) = self.interval {
            format!(
                "{} [{}–{}]{}",
                unit.show(self.median),
                unit.show(lo),
                unit.show(hi),
                if self.noisy() { "*" } else { "" }
            )
        } else if self.n > 1 {
            format!(
                "{} ({}–{})",
                unit.show(self.median),
                unit.show(self.min),
                unit.show(self.max)
            )
        } else {
            unit.show(self.median)
        }
    }
}

/// Where rows of different transports line up: a subscriber count, a payload and an offered
/// rate.
pub type SettingKey<'r> = (usize, &'r PayloadSizes, Rate);

/// One combination with its repeats folded.
#[derive(Clone, Debug)]
pub struct Row<'a> {
    /// What was measured.
    pub key: RowKey,
    /// At which offered rate.
    pub rate: Rate,
    /// Every repeat, in run order.
    pub runs: Vec<&'a TransportResult>,
    /// Repeats that failed the delivery check (their figures are left out).
    pub failed: usize,
    /// One spread per entry of [`METRICS`], over the repeats that passed (all, if none did).
    pub figures: Vec<Spread>,
}

impl Row<'_> {
    /// How the row is named wherever it is shown.
    pub fn label(&self) -> String {
        self.key.label()
    }

    /// Whether `other` is the same row (of another run): the same key at the same rate.
    pub fn same_as(&self, other: &Row<'_>) -> bool {
        self.key == other.key && self.rate == other.rate
    }

    /// The subscribers, payload and rate it was measured at.
    pub fn setting(&self) -> SettingKey<'_> {
        (self.key.subscribers, &self.key.payload, self.rate)
    }

    /// The spread of one figure.
    pub fn figure(&self, figure: Figure) -> Spread {
        self.figures[figure as usize]
    }

    /// Whether this row is the physical floor the others are measured against.
    pub fn is_floor(&self) -> bool {
        self.key.transport.traits().floor
    }

    /// Whether every repeat delivered the identical stream, or lost only what its ledger
    /// accounts for.
    pub fn ok(&self) -> bool {
        self.failed == 0
    }

    /// Whether some repeat lost events that its ledger accounts for (gaps, drops not resumed).
    pub fn loss_accounted(&self) -> bool {
        self.runs.iter().any(|r| r.loss_accounted)
    }

    /// The latency histograms of every repeat, merged.
    pub fn latency_histogram(&self) -> Histogram<u64> {
        let mut merged = latency::histogram();
        for run in &self.runs {
            if let Ok(h) = latency::decode(&run.histograms.latency_us) {
                latency::merge(&mut merged, &h);
            }
        }
        merged
    }

    /// Position of this row's transport in the canonical order (for colours and sorting).
    pub fn transport_index(&self) -> usize {
        Transport::ALL
            .iter()
            .position(|&t| t == self.key.transport)
            .unwrap_or(Transport::ALL.len())
    }
}

/// Folds the runs into rows, one per combination over its rounds, in the order they were
/// first run, each figure with its interval where there were rounds enough.
pub fn rows(results: &Results) -> Vec<Row<'_>> {
    rows_of(results, Spread::of)
}

/// As [`rows`], each figure its median and range only: for readers of medians (a
/// recommendation's evidence), which would otherwise pay for every figure's bootstrap.
pub fn rows_without_intervals(results: &Results) -> Vec<Row<'_>> {
    rows_of(results, Spread::without_interval)
}

fn rows_of(results: &Results, spread: fn(Vec<f64>) -> Spread) -> Vec<Row<'_>> {
    let mut rows: Vec<Row<'_>> = Vec::new();
    for run in &results.runs {
        // A row is its combination in every round.
        let (key, rate) = (&run.key.of_every_round(), run.offered_rate);
        match rows
            .iter_mut()
            .find(|row| row.key == *key && row.rate == rate)
        {
            Some(row) => row.runs.push(run),
            None => rows.push(Row {
                key: key.clone(),
                rate,
                runs: vec![run],
                failed: 0,
                figures: Vec::new(),
            }),
        }
    }
    for row in &mut rows {
        row.failed = row.runs.iter().filter(|r| r.failed).count();
        // A failed run's figures are not comparable; use them only if nothing passed.
        let passed: Vec<&TransportResult> =
            row.runs.iter().copied().filter(|r| !r.failed).collect();
        let counted = if passed.is_empty() {
            &row.runs
        } else {
            &passed
        };
        row.figures = METRICS
            .iter()
            .map(|m| spread(counted.iter().map(|r| (m.value)(r)).collect()))
            .collect();
    }
    rows
}

/// The distinct settings (subscribers, payload, rate) in run order.
pub fn settings<'r>(rows: &'r [Row<'_>]) -> Vec<SettingKey<'r>> {
    let mut settings = Vec::new();
    for row in rows {
        let setting = row.setting();
        if !settings.contains(&setting) {
            settings.push(setting);
        }
    }
    settings
}

/// The setting a summary leads with: the most subscribers, then the first payload and rate run.
pub fn headline_setting<'r>(rows: &'r [Row<'_>]) -> Option<SettingKey<'r>> {
    let settings = settings(rows);
    let most = settings.iter().map(|s| s.0).max()?;
    settings.into_iter().find(|s| s.0 == most)
}

/// The rows at one setting, in the canonical transport order.
pub fn at_setting<'r, 'a>(rows: &'r [Row<'a>], setting: SettingKey<'_>) -> Vec<&'r Row<'a>> {
    let mut at: Vec<&Row<'a>> = rows.iter().filter(|r| r.setting() == setting).collect();
    at.sort_by_key(|r| r.transport_index());
    at
}

/// "12% lower than", "3.0× lower than" or "level with": percent under 2x, a factor beyond.
pub fn margin(best: f64, other: f64, better: Better) -> String {
    let (small, large) = if best <= other {
        (best, other)
    } else {
        (other, best)
    };
    let word = match better {
        Better::Lower => "lower",
        Better::Higher => "higher",
    };
    if small <= 0.0 {
        return format!("{word} than");
    }
    let factor = large / small;
    let percent = match better {
        Better::Lower => (large - small) / large * 100.0,
        Better::Higher => (large - small) / small * 100.0,
    };
    if factor >= 2.0 {
        format!("{factor:.1}× {word} than")
    } else if percent < 1.0 {
        "level with".to_string()
    } else {
        format!("{percent:.0}% {word} than")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Median and range, odd and even counts, and how a spread is shown.
    #[test]
    fn spreads() {
        let s = Spread::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Spread::of(vec![1.0, 4.0]).median, 2.5);
        assert_eq!(s.show(Unit::Micros), "2us (1us–3us)");
        assert_eq!(Spread::of(vec![1500.0]).show(Unit::Micros), "1.50ms");
        assert_eq!(Spread::of(vec![f64::NAN]).show(Unit::Micros), "—");
    }

    /// Each figure is the catalogue entry at its own position, and keys are unique.
    #[test]
    fn figures_index_the_catalogue() {
        for (i, metric) in METRICS.iter().enumerate() {
            assert_eq!(metric.figure as usize, i, "{}", metric.key);
            assert_eq!(
                metric_named(metric.key).map(|m| m.figure),
                Some(metric.figure)
            );
        }
    }

    /// Margins read naturally both ways.
    #[test]
    fn margins() {
        assert_eq!(margin(90.0, 100.0, Better::Lower), "10% lower than");
        assert_eq!(margin(100.0, 300.0, Better::Lower), "3.0× lower than");
        assert_eq!(margin(3.58, 3.59, Better::Lower), "level with");
        assert_eq!(margin(120.0, 100.0, Better::Higher), "20% higher than");
    }
}
