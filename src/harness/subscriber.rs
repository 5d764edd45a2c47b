//! One subscriber's record of its stream: the tally (digest, loss, duplicates, order) and the
//! timings around it, filled by the transport's client through the [`Sink`] contract.

use crate::event::{DecodeError, Event, Tally};
use crate::transport::{Flow, Sink};

/// A sink that tallies every event and stops once the whole stream has arrived.
#[derive(Debug)]
pub struct TallySink {
    tally: Tally,
    connected_ns: Option<u64>,
    first_sent_ns: Option<u64>,
    last_received_ns: Option<u64>,
}

impl TallySink {
    /// A sink for a stream of `expected` events.
    pub fn new(expected: u64) -> Self {
        Self {
            tally: Tally::new(expected),
            connected_ns: None,
            first_sent_ns: None,
            last_received_ns: None,
        }
    }

    /// What the subscriber ended with.
    pub fn finish(self, error: Option<String>) -> SubscriberRecord {
        SubscriberRecord {
            tally: self.tally,
            connected_ns: self.connected_ns,
            first_sent_ns: self.first_sent_ns,
            last_received_ns: self.last_received_ns,
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
    /// Why the subscription ended early, if it did.
    pub error: Option<String>,
}
