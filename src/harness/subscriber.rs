//! One subscriber's record of its streams, filled by the transport's client through the
//! [`Sink`] contract: the ledger (digest, loss, duplicates, order, per stream) and its connect and
//! first-event times, all O(1) in memory. Latencies go straight to the run's shared
//! [`Recording`], which keeps them per thread, not per subscriber.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::ledger::Ledger;
use super::two_way::{CopyKind, CopyLedger, TwoWayPlan};
use crate::event::{DecodeError, Event, Gap, Rate, StreamSpec};
use crate::metrics::latency;
use crate::metrics::recorder::Recording;
use crate::metrics::storm::Reconnection;
use crate::settings::SettingValues;
use crate::transport::Guarantee;
use crate::transport::{Flow, Reconnected, Sink};
use crate::upstream::CopyCounts;
use crate::workload::Workload;

/// What every subscriber of one run shares: the stream's shape, the warm-up, the recording
/// and a count of subscribers connected so far.
#[derive(Debug)]
pub struct RecordPlan {
    /// Events in the stream.
    pub expected: u64,
    /// The offered rate, to find each event's place in the schedule.
    pub rate: Rate,
    /// Events scheduled within this many nanoseconds of the stream's start are not recorded in
    /// the latency histograms (they are still checked for delivery).
    pub warmup_ns: u64,
    /// Latency, service time, batches, per-second intervals and the fan-out clock.
    pub recording: Recording,
    /// Subscribers whose subscription is established.
    pub connected: AtomicUsize,
    /// The workload's shape, with the streams the global sequence interleaves and the seed
    /// room membership is drawn from.
    pub workload: Workload,
    /// Streams the global sequence interleaves.
    pub streams: u64,
    /// Seeds room membership.
    pub seed: u64,
    /// What subscribers send up and get back, where they do.
    pub two_way: Option<TwoWayPlan>,
}

impl RecordPlan {
    /// A plan for a stream of `expected` events at `rate`, with `warmup_ns` excluded and
    /// per-second intervals counted from `origin_ns`.
    pub fn new(expected: u64, rate: Rate, warmup_ns: u64, origin_ns: u64) -> Arc<Self> {
        Arc::new(Self {
            expected,
            rate,
            warmup_ns,
            recording: Recording::new(expected, origin_ns),
            connected: AtomicUsize::new(0),
            workload: Workload::Broadcast,
            streams: 1,
            seed: 0,
            two_way: None,
        })
    }

    /// A plan for `spec`'s global stream, its workload's shape included, and the two-way
    /// traffic `settings` ask of its `population` subscribers.
    pub fn of(
        spec: &StreamSpec,
        warmup_ns: u64,
        origin_ns: u64,
        settings: &SettingValues,
        population: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            expected: spec.count,
            rate: spec.rate,
            warmup_ns,
            recording: Recording::new(spec.count, origin_ns),
            connected: AtomicUsize::new(0),
            workload: spec.workload,
            streams: spec.streams,
            seed: spec.seed,
            two_way: TwoWayPlan::of(spec, settings, population),
        })
    }

    /// The streams subscriber `index` follows (`None`: the one broadcast stream).
    pub fn topics_of(&self, index: usize) -> Option<Vec<u32>> {
        self.workload.topics_of(index, self.seed)
    }

    /// An empty ledger for subscriber `index`, following `topics`.
    fn ledger(&self, index: usize, topics: Option<&[u32]>) -> Ledger {
        match topics {
            None => Ledger::broadcast(self.expected),
            Some(topics) => Ledger::of_streams(
                index,
                topics,
                self.expected / self.streams.max(1),
                self.streams,
            ),
        }
    }
}

/// A sink that tallies every event, records its latency, and stops once the whole stream has
/// arrived.
#[derive(Debug)]
pub struct TallySink {
    plan: Arc<RecordPlan>,
    ledger: Ledger,
    started_ns: u64,
    connected_ns: Option<u64>,
    first_event: Option<(u64, u64)>,
    last_received_ns: Option<u64>,
    /// Start of the schedule as this subscriber sees it, from its first event.
    stream_start_ns: Option<u64>,
    /// Its index in the run.
    index: usize,
    /// Each time the subscription was established again after a drop, and when it caught up.
    reconnections: Vec<Reconnection>,
    /// When the subscriber was down for the outage fault, if it was.
    outage_ns: Option<(u64, u64)>,
    /// Its latencies stay out of the shared recording (the slow consumer, whose own lateness
    /// would hide what it does to the others).
    apart: bool,
    /// Its worst latency, us.
    worst_latency_us: u64,
    /// The copies of messages up it must get back, where the echo is on.
    copies: Option<CopyLedger>,
}

impl TallySink {
    /// A sink for one subscriber of `plan`'s broadcast stream, whose subscription starts at
    /// `started_ns`.
    pub fn new(plan: Arc<RecordPlan>, started_ns: u64) -> Self {
        Self::following(plan, started_ns, 0, None)
    }

    /// A sink for subscriber `index` of `plan`, following `topics` (`None`: the broadcast
    /// stream).
    pub fn following(
        plan: Arc<RecordPlan>,
        started_ns: u64,
        index: usize,
        topics: Option<&[u32]>,
    ) -> Self {
        let copies = plan
            .two_way
            .as_ref()
            .filter(|t| t.echo)
            .map(|t| t.ledger(index, topics));
        Self {
            ledger: plan.ledger(index, topics),
            plan,
            started_ns,
            connected_ns: None,
            first_event: None,
            last_received_ns: None,
            stream_start_ns: None,
            index,
            reconnections: Vec::new(),
            outage_ns: None,
            apart: false,
            worst_latency_us: 0,
            copies,
        }
    }

    /// A sink whose latencies are kept apart from the run's recording (only its worst is
    /// reported): for the slow consumer.
    pub fn apart(mut self) -> Self {
        self.apart = true;
        self
    }

    /// What the subscriber ended with.
    pub fn finish(mut self, error: Option<String>) -> SubscriberRecord {
        // An event of a stream it does not follow fails the subscriber, named, even when its
        // own streams arrived whole.
        let error = error.or_else(|| self.ledger.misrouting());
        // Back after the stream's last event was scheduled, it caught up once that arrived.
        if let (Some(last), Some(latest), true) = (
            self.reconnections.last_mut(),
            self.last_received_ns,
            self.ledger.is_complete(),
        ) {
            last.caught_up_ns.get_or_insert(latest.max(last.at_ns));
        }
        SubscriberRecord {
            ledger: self.ledger,
            handshake_us: self
                .connected_ns
                .map(|at| latency::micros_between(self.started_ns, at)),
            first_event_us: self
                .first_event
                .map(|(sent, received)| latency::micros_between(sent, received)),
            first_sent_ns: self.first_event.map(|(sent, _)| sent),
            last_received_ns: self.last_received_ns,
            reconnects: self.reconnections.len() as u64,
            reconnections: self.reconnections,
            cut_off: 0,
            outage_ns: self.outage_ns,
            apart: self.apart,
            worst_latency_us: self.worst_latency_us,
            copies: self.copies.map(|c| *c.counts()),
            error,
        }
    }

    /// The schedule's start, from the first event this subscriber received.
    fn note_start(&mut self, event: &Event<'_>) -> u64 {
        *self
            .stream_start_ns
            .get_or_insert_with(|| match self.plan.rate {
                Rate::PerSecond(rate) => event
                    .scheduled_ns
                    .saturating_sub((event.seq as f64 * 1e9 / rate) as u64),
                // No schedule: the first event's send time is as close to the start as we know.
                Rate::Max => event.sent_ns,
            })
    }

    /// Whether this event is past the warm-up, judged against the schedule's start.
    fn past_warmup(&mut self, event: &Event<'_>) -> bool {
        let start = self.note_start(event);
        event.scheduled_ns >= start + self.plan.warmup_ns
    }

    /// Whether it has everything: its streams' events, and every copy it must get back.
    fn has_everything(&self) -> bool {
        self.ledger.is_complete() && self.copies.as_ref().is_none_or(CopyLedger::is_complete)
    }
}

impl Sink for TallySink {
    fn connected(&mut self, at_ns: u64) {
        if self.connected_ns.is_none() {
            self.connected_ns = Some(at_ns);
            self.plan.connected.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn event(&mut self, event: &Event<'_>, received_ns: u64) -> Flow {
        self.ledger.record(event);
        self.first_event.get_or_insert((event.sent_ns, received_ns));
        self.last_received_ns = Some(received_ns);
        // Caught up after a reconnection: the first event scheduled since it arrived, so
        // what it missed while away is behind it.
        if let Some(last) = self
            .reconnections
            .last_mut()
            .filter(|r| r.caught_up_ns.is_none() && event.scheduled_ns >= r.at_ns)
        {
            last.caught_up_ns = Some(received_ns);
        }
        if self.apart {
            self.note_start(event);
            let us = latency::micros_between(event.scheduled_ns, received_ns);
            self.worst_latency_us = self.worst_latency_us.max(us);
        } else if self.past_warmup(event) {
            self.plan
                .recording
                .event(event.seq, event.scheduled_ns, event.sent_ns, received_ns);
        }
        if self.has_everything() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn copy(&mut self, message: &crate::upstream::Message<'_>, received_ns: u64) -> Flow {
        let Some(copies) = self.copies.as_mut() else {
            // A copy nobody asked for: not part of what this subscriber follows.
            self.ledger.record_malformed();
            return Flow::Continue;
        };
        let warm = self
            .stream_start_ns
            .is_some_and(|start| message.scheduled_ns >= start + self.plan.warmup_ns);
        match copies.record(message) {
            CopyKind::Own if warm && !self.apart => {
                self.plan
                    .recording
                    .round_trip(message.scheduled_ns, received_ns);
            }
            CopyKind::Other if warm && !self.apart => {
                self.plan.recording.copy(message.scheduled_ns, received_ns);
            }
            _ => {}
        }
        if self.has_everything() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn stream_origin(&self) -> Option<u64> {
        self.stream_start_ns
    }

    fn malformed(&mut self, error: &DecodeError) -> Flow {
        tracing::debug!(%error, "malformed event");
        self.ledger.record_malformed();
        Flow::Continue
    }

    fn batch(&mut self, events: usize) {
        self.plan.recording.batch(events);
    }

    fn reconnected(&mut self, reconnect: Reconnected) {
        self.reconnections.push(Reconnection {
            subscriber: self.index as u32,
            attempt_ns: reconnect.attempt_ns,
            at_ns: reconnect.at_ns,
            caught_up_ns: None,
            failed_attempts: reconnect.failed_attempts,
        });
    }

    fn gap(&mut self, gap: Gap) {
        self.ledger.record_gap(gap);
    }

    fn outage(&mut self, start_ns: u64, end_ns: u64) {
        self.outage_ns = Some((start_ns, end_ns));
    }
}

/// What one subscriber received, and when: O(1) in the stream's length.
#[derive(Debug)]
pub struct SubscriberRecord {
    /// The ledger of its streams.
    pub ledger: Ledger,
    /// From starting to subscribe to the subscription being established (connect, handshake;
    /// for polling, the first answer; for webhooks, registration).
    pub handshake_us: Option<u64>,
    /// From the first event's send to its receipt by this subscriber.
    pub first_event_us: Option<u64>,
    /// Send time of the first event it received.
    pub first_sent_ns: Option<u64>,
    /// When its last event arrived.
    pub last_received_ns: Option<u64>,
    /// Times the subscription was established again after its connection dropped.
    pub reconnects: u64,
    /// Each of those, with when it caught up.
    pub reconnections: Vec<Reconnection>,
    /// Events missing because the connection dropped and the subscription, told not to resume,
    /// ended there (see [`SubscriberRecord::cut_off_by_drop`]).
    pub cut_off: u64,
    /// When it was down for the outage fault (monotonic ns), if it was.
    pub outage_ns: Option<(u64, u64)>,
    /// Its latencies were kept out of the run's recording (the slow consumer).
    pub apart: bool,
    /// Its worst latency, us, when kept apart.
    pub worst_latency_us: u64,
    /// What came of the copies it had to get back, where the echo was on.
    pub copies: Option<CopyCounts>,
    /// Why the subscription ended early, if it did.
    pub error: Option<String>,
}

impl SubscriberRecord {
    /// The subscription was established, then its connection dropped and it did not resume
    /// (`--resume off`): the events after the drop are missing because of it. They are counted
    /// as cut off when what arrived is a prefix of the stream (gaps included); a hole before
    /// the drop stays unexplained.
    pub fn cut_off_by_drop(&mut self) {
        if self.handshake_us.is_some() && self.error.is_some() {
            self.cut_off = self.ledger.missing_tail().unwrap_or(0);
        }
    }

    /// Whether every missing event is accounted for (by gaps the server named, a tail a drop
    /// cut off, and, where the transport's guarantee is at most once, what the network
    /// dropped), nothing arrived garbled, nothing twice unless the guarantee is at least once,
    /// and nothing out of order unless it may be: the ledger balances even when the stream is
    /// not identical.
    pub fn ledger_balances(&self, guarantee: Guarantee) -> bool {
        let counts = self.ledger.counts();
        self.ledger.lost() == counts.gapped + self.cut_off + self.dropped(guarantee)
            && (counts.duplicated == 0 || guarantee.repeats)
            && (counts.reordered == 0 || guarantee.reorders)
            && counts.malformed == 0
            && (self.error.is_none() || self.cut_off > 0)
    }

    /// Events the network dropped, where the transport's guarantee is at most once: every
    /// missing event no gap or cut accounts for (none otherwise).
    pub fn dropped(&self, guarantee: Guarantee) -> u64 {
        if !guarantee.drops {
            return 0;
        }
        let explained = self.ledger.counts().gapped + self.cut_off;
        self.ledger.lost().saturating_sub(explained)
    }
}
