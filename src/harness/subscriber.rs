//! One subscriber's record of its stream: the tally (digest, loss, duplicates, order), latency
//! histograms and the timings around it, filled by the transport's client through the [`Sink`]
//! contract.

use hdrhistogram::Histogram;

use crate::event::{DecodeError, Event, Tally};
use crate::transport::{Flow, Sink};

/// Latency histograms span 1 us to 60 s at 3 significant digits (DESIGN.md, principle 2).
const HISTOGRAM_MAX_US: u64 = 60_000_000;
const HISTOGRAM_DIGITS: u8 = 3;

/// An empty latency histogram with pushbench's range and precision.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS).expect("valid bounds")
}

/// Latency of one event in microseconds: receive time minus `since`, at least 1 us (the
/// histogram's floor), values beyond 60 s clamped to the top.
fn micros(received_ns: u64, since_ns: u64) -> u64 {
    (received_ns.saturating_sub(since_ns) / 1000).clamp(1, HISTOGRAM_MAX_US)
}

/// A sink that tallies every event and stops once the whole stream has arrived.
#[derive(Debug)]
pub struct TallySink {
    tally: Tally,
    connected_ns: Option<u64>,
    first_sent_ns: Option<u64>,
    last_received_ns: Option<u64>,
    /// Receive minus scheduled time (what a user waits), allocated on the first event so idle
    /// subscribers cost no histogram memory.
    latency: Option<Histogram<u64>>,
    /// Receive minus actual send time.
    service_time: Option<Histogram<u64>>,
}

impl TallySink {
    /// A sink for a stream of `expected` events.
    pub fn new(expected: u64) -> Self {
        Self {
            tally: Tally::new(expected),
            connected_ns: None,
            first_sent_ns: None,
            last_received_ns: None,
            latency: None,
            service_time: None,
        }
    }

    /// What the subscriber ended with.
    pub fn finish(self, error: Option<String>) -> SubscriberRecord {
        SubscriberRecord {
            tally: self.tally,
            connected_ns: self.connected_ns,
            first_sent_ns: self.first_sent_ns,
            last_received_ns: self.last_received_ns,
            latency_us: self.latency.unwrap_or_else(latency_histogram),
            service_time_us: self.service_time.unwrap_or_else(latency_histogram),
            error,
        }
    }
}

impl Sink for TallySink {
    fn connected(&mut self, at_ns: u64) {
        self.connected_ns.get_or_insert(at_ns);
    }

    fn event(&mut self, event: &Event<'_>, received_ns: u64) -> Flow {
        self.tally.record(event.seq, event.payload.as_bytes());
        self.latency
            .get_or_insert_with(latency_histogram)
            .saturating_record(micros(received_ns, event.scheduled_ns));
        self.service_time
            .get_or_insert_with(latency_histogram)
            .saturating_record(micros(received_ns, event.sent_ns));
        let first = self.first_sent_ns.get_or_insert(event.sent_ns);
        *first = (*first).min(event.sent_ns);
        self.last_received_ns = Some(received_ns);
        if self.tally.is_complete() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn malformed(&mut self, error: &DecodeError) -> Flow {
        tracing::debug!(%error, "malformed event");
        self.tally.record_malformed();
        Flow::Continue
    }
}

/// What one subscriber received, and when.
#[derive(Debug)]
pub struct SubscriberRecord {
    /// The tally of its stream.
    pub tally: Tally,
    /// When its subscription was established (monotonic ns).
    pub connected_ns: Option<u64>,
    /// Earliest send time among the events it received.
    pub first_sent_ns: Option<u64>,
    /// When its last event arrived.
    pub last_received_ns: Option<u64>,
    /// Receive minus scheduled send time, per event, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Receive minus actual send time, per event, in microseconds.
    pub service_time_us: Histogram<u64>,
    /// Why the subscription ended early, if it did.
    pub error: Option<String>,
}
