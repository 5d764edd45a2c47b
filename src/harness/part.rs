//! What one load worker measured (a [`LoadPart`]) and how parts combine exactly: histograms
//! added, counts summed, the fan-out clock merged by maximum, and every worker's digests already
//! checked against the source. `run` merges its workers' parts; a part written to a file by
//! `pushbench load --out` (or the server's, by `pushbench serve --stats-out`: a [`ServerPart`])
//! carries everything needed to merge it later.

use std::fmt;

use hdrhistogram::Histogram;

use super::ledger::SourceDigests;
use super::subscriber::SubscriberRecord;
use crate::clock::probe::ClockSync;
use crate::event::{StreamSpec, TallyCounts};
use crate::metrics::faults::SlowConsumer;
use crate::metrics::latency::{self, Percentiles};
use crate::metrics::recorder::{FanoutClock, Recorded, Timeline};
use crate::metrics::sockets::SocketTotals;
use crate::metrics::storm::Reconnection;
use crate::protocol::{
    DeliveryCounts, LoadPart, PartHistograms, WorkerProcess, RECONNECTIONS_KEPT,
};
use crate::transport::{Guarantee, SettingValues, Transport};

/// How many distinct subscriber errors a part keeps word for word (the rest are counted).
const ERRORS_KEPT: usize = 8;

/// Keeps `error` among the distinct errors `kept`, at most [`ERRORS_KEPT`], a subscriber's own
/// failure before the load's timeout: the first error kept is what a failed row says, and
/// subscribers that waited for a stream that never started (because others failed to
/// connect) time out whatever their index.
fn keep_error(kept: &mut Vec<String>, error: &str) {
    if kept.iter().any(|e| e == error) {
        return;
    }
    let timeout = super::load::is_timeout(error);
    if kept.len() >= ERRORS_KEPT {
        // Full: a failure of its own takes the place of a timeout, if one is kept.
        match (
            timeout,
            kept.iter().rposition(|e| super::load::is_timeout(e)),
        ) {
            (false, Some(last)) => {
                kept.remove(last);
            }
            _ => return,
        }
    }
    // A timeout goes last; a failure of its own before the first timeout.
    let at = match timeout {
        true => kept.len(),
        false => kept
            .iter()
            .position(|e| super::load::is_timeout(e))
            .unwrap_or(kept.len()),
    };
    kept.insert(at, error.to_owned());
}

impl DeliveryCounts {
    /// Adds one subscriber's record, judged against its streams' source digests and what its
    /// transport's `guarantee` lets happen (repeats, reordering, events the network dropped),
    /// which is counted and accounted for, not failed.
    pub(crate) fn add(
        &mut self,
        record: &SubscriberRecord,
        sources: &SourceDigests,
        guarantee: Guarantee,
    ) {
        let counts: TallyCounts = record.ledger.counts();
        let lost = record.ledger.lost();
        let digest_ok = record.ledger.digests_match(sources);
        self.subscribers += 1;
        self.digest_mismatches += usize::from(!digest_ok);
        self.errors += usize::from(record.error.is_some());
        self.received += counts.received;
        self.delivered += counts.distinct;
        self.lost += lost;
        self.duplicated += counts.duplicated;
        self.reordered += counts.reordered;
        self.malformed += counts.malformed;
        self.beyond_window += counts.beyond_window;
        self.reconnects += record.reconnects;
        self.gapped += counts.gapped;
        self.cut_off += record.cut_off;
        self.dropped += record.dropped(guarantee);
        let intact = digest_ok
            && lost == 0
            && counts.duplicated == 0
            && (counts.reordered == 0 || guarantee.reorders)
            && counts.malformed == 0
            && record.error.is_none();
        self.intact += usize::from(intact);
        self.accounted += usize::from(!intact && record.ledger_balances(guarantee));
    }
}

impl LoadPart {
    /// A part from one worker's subscriber records and recording.
    pub fn new(
        worker: usize,
        (transport, settings): (Transport, &SettingValues),
        spec: &StreamSpec,
        interval_origin_ns: u64,
        records: &[SubscriberRecord],
        recorded: &Recorded,
    ) -> Self {
        let sources = SourceDigests::of(spec);
        let mut counts = DeliveryCounts::default();
        let mut errors = Vec::new();
        let mut handshakes = latency::histogram();
        let mut first_events = latency::histogram();
        let guarantee = (transport.spec().guarantee)(settings);
        for record in records {
            counts.add(record, &sources, guarantee);
            if let Some(error) = &record.error {
                keep_error(&mut errors, error);
            }
            if let Some(us) = record.handshake_us {
                handshakes.saturating_record(us);
            }
            if let Some(us) = record.first_event_us {
                first_events.saturating_record(us);
            }
        }
        Self {
            settings: SettingValues::default(),
            worker,
            transport,
            spec: spec.clone(),
            interval_origin_ns,
            counts,
            errors,
            first_sent_ns: records.iter().filter_map(|r| r.first_sent_ns).min(),
            last_received_ns: records.iter().filter_map(|r| r.last_received_ns).max(),
            histograms: PartHistograms {
                latency_us: latency::encode(&recorded.latency),
                service_time_us: latency::encode(&recorded.service),
                handshake_us: latency::encode(&handshakes),
                first_event_us: latency::encode(&first_events),
                events_per_response: recorded.batches.as_ref().map(latency::encode),
                tls_handshake_us: None,
                seconds: recorded.seconds.iter().map(latency::encode).collect(),
                round_trip_us: recorded.round_trip.as_ref().map(latency::encode),
                copies_us: recorded.copies.as_ref().map(latency::encode),
            },
            fanout: recorded.fanout.clone(),
            process: WorkerProcess::default(),
            sockets: SocketTotals::default(),
            timeline: recorded.timeline.clone(),
            outage_ns: records.iter().filter_map(|r| r.outage_ns).reduce(span),
            reconnections: records
                .iter()
                .flat_map(|r| &r.reconnections)
                .copied()
                .take(RECONNECTIONS_KEPT)
                .collect(),
            copies: records
                .iter()
                .filter_map(|r| r.copies)
                .reduce(|mut sum, c| {
                    sum.add(&c);
                    sum
                }),
            slow_consumer: None,
            clock: None,
            cpus: 0,
        }
    }
}

/// Why parts cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No part at all.
    #[error("no load parts to merge")]
    Empty,
    /// Parts measured different streams or transports: their figures do not add up.
    #[error("part of worker {worker} measured {what}, the first part {first}: parts of different runs cannot be merged")]
    Mismatch {
        /// The worker whose part differs.
        worker: usize,
        /// What it measured.
        what: String,
        /// What the first part measured.
        first: String,
    },
    /// A histogram in a part does not decode.
    #[error("part of worker {worker}: {why}")]
    Histogram {
        /// The worker whose part is damaged.
        worker: usize,
        /// What is wrong.
        why: String,
    },
}

/// Several parts combined exactly.
#[derive(Debug)]
pub struct Merged {
    /// The transport.
    pub transport: Transport,
    /// The client settings every part ran with.
    pub settings: SettingValues,
    /// The stream.
    pub spec: StreamSpec,
    /// Delivery counts over every subscriber.
    pub counts: DeliveryCounts,
    /// The first few distinct errors.
    pub errors: Vec<String>,
    /// Send time of the first event any subscriber received.
    pub first_sent_ns: Option<u64>,
    /// When the last event arrived anywhere.
    pub last_received_ns: Option<u64>,
    /// Latency, us.
    pub latency: Histogram<u64>,
    /// Service time, us.
    pub service: Histogram<u64>,
    /// TLS handshakes, us (empty without TLS).
    pub tls_handshakes: Histogram<u64>,
    /// Handshakes, us.
    pub handshakes: Histogram<u64>,
    /// First events, us.
    pub first_events: Histogram<u64>,
    /// Events per response.
    pub batches: Option<Histogram<u64>>,
    /// Latency per second.
    pub seconds: Vec<Histogram<u64>>,
    /// The fan-out clock.
    pub fanout: FanoutClock,
    /// Worst latency and events per bin of receive time.
    pub timeline: Timeline,
    /// When subscribers were down for the outage fault, over every worker.
    pub outage_ns: Option<(u64, u64)>,
    /// Every worker's subscribers' reconnections.
    pub reconnections: Vec<Reconnection>,
    /// Two-way traffic with the echo on: the copies every subscriber had to get back, and got.
    pub copies: Option<crate::upstream::CopyCounts>,
    /// Two-way traffic: a sender's own messages back, us.
    pub round_trip: Option<Histogram<u64>>,
    /// Two-way traffic: others' messages in a subscriber's rooms, us.
    pub copy_latency: Option<Histogram<u64>>,
    /// The slow consumer, if there was one.
    pub slow_consumer: Option<SlowConsumer>,
    /// Every worker's process samples.
    pub workers: Vec<WorkerProcess>,
    /// Sockets accepted on the load side.
    pub sockets: SocketTotals,
    /// Monotonic origin of `seconds` and `timeline`: the earliest of the parts'.
    pub interval_origin_ns: u64,
    /// Each worker's clock against the server's, where it measured it.
    pub clocks: Vec<(usize, ClockSync)>,
    /// CPUs the workers could run on, summed (0 where their parts do not say).
    pub cpus: usize,
}

impl Merged {
    /// Merges parts of one stream, refusing parts of another stream or transport.
    pub fn of(parts: &[LoadPart]) -> Result<Self, MergeError> {
        let first = parts.first().ok_or(MergeError::Empty)?;
        let origin_ns = parts.iter().map(|p| p.interval_origin_ns).min();
        let mut merged = Self::empty(first, origin_ns.unwrap_or(0));
        for part in parts {
            let later = merged.seconds_later(first, part)?;
            merged.add(part, later)?;
        }
        Ok(merged)
    }

    /// Nothing merged yet, of `first`'s stream, with intervals from `interval_origin_ns`.
    fn empty(first: &LoadPart, interval_origin_ns: u64) -> Self {
        Merged {
            transport: first.transport,
            settings: first.settings.clone(),
            spec: first.spec.clone(),
            counts: DeliveryCounts::default(),
            errors: Vec::new(),
            first_sent_ns: None,
            last_received_ns: None,
            latency: latency::histogram(),
            service: latency::histogram(),
            handshakes: latency::histogram(),
            tls_handshakes: latency::histogram(),
            first_events: latency::histogram(),
            batches: None,
            seconds: Vec::new(),
            fanout: FanoutClock::default(),
            timeline: Timeline::default(),
            outage_ns: None,
            reconnections: Vec::new(),
            copies: None,
            round_trip: None,
            copy_latency: None,
            slow_consumer: None,
            workers: Vec::new(),
            sockets: SocketTotals::default(),
            interval_origin_ns,
            clocks: Vec::new(),
            cpus: 0,
        }
    }

    /// How many whole seconds after the merged intervals' origin `part`'s begin, once it is
    /// known to be of `first`'s stream, transport and settings.
    fn seconds_later(&self, first: &LoadPart, part: &LoadPart) -> Result<usize, MergeError> {
        let describe = |p: &LoadPart| {
            format!(
                "{} with seed {}, {} events, payload {}, rate {}",
                p.transport, p.spec.seed, p.spec.count, p.spec.payload, p.spec.rate
            ) + &if p.settings.is_empty() {
                String::new()
            } else {
                format!(", {}", p.settings.label())
            }
        };
        if part.spec != first.spec
            || part.transport != first.transport
            || part.settings != first.settings
        {
            return Err(MergeError::Mismatch {
                worker: part.worker,
                what: describe(part),
                first: describe(first),
            });
        }
        // Workers started apart (on several hosts) count their seconds from whole seconds
        // of the server's clock, so their intervals line up by whole seconds.
        let later_ns = part.interval_origin_ns - self.interval_origin_ns;
        if !later_ns.is_multiple_of(1_000_000_000) {
            return Err(MergeError::Mismatch {
                worker: part.worker,
                what: format!("intervals from {} ns", part.interval_origin_ns),
                first: format!(
                    "{} ns, not a whole number of seconds apart",
                    self.interval_origin_ns
                ),
            });
        }
        Ok((later_ns / 1_000_000_000) as usize)
    }

    /// Adds one part, whose intervals begin `later` seconds after the merged ones.
    fn add(&mut self, part: &LoadPart, later: usize) -> Result<(), MergeError> {
        self.counts.merge(&part.counts);
        for error in &part.errors {
            keep_error(&mut self.errors, error);
        }
        self.first_sent_ns = min_some(self.first_sent_ns, part.first_sent_ns);
        self.last_received_ns = self.last_received_ns.max(part.last_received_ns);
        self.add_histograms(part, later)?;
        self.fanout.merge(&part.fanout);
        self.timeline.merge_later(&part.timeline, later);
        self.outage_ns = match (self.outage_ns, part.outage_ns) {
            (Some(a), Some(b)) => Some(span(a, b)),
            (a, b) => a.or(b),
        };
        self.reconnections.extend(&part.reconnections);
        if let Some(copies) = &part.copies {
            self.copies.get_or_insert_with(Default::default).add(copies);
        }
        self.slow_consumer = self.slow_consumer.or(part.slow_consumer);
        self.workers.push(part.process);
        self.sockets = self.sockets + part.sockets;
        self.clocks
            .extend(part.clock.map(|clock| (part.worker, clock)));
        self.cpus += part.cpus;
        Ok(())
    }

    /// Adds one part's histograms, each decoded and checked before it is trusted.
    fn add_histograms(&mut self, part: &LoadPart, later: usize) -> Result<(), MergeError> {
        let w = part.worker;
        let decode = |text: &str| {
            latency::decode(text).map_err(|why| MergeError::Histogram { worker: w, why })
        };
        let h = &part.histograms;
        latency::merge(&mut self.latency, &decode(&h.latency_us)?);
        latency::merge(&mut self.service, &decode(&h.service_time_us)?);
        latency::merge(&mut self.handshakes, &decode(&h.handshake_us)?);
        latency::merge(&mut self.first_events, &decode(&h.first_event_us)?);
        if let Some(text) = &h.tls_handshake_us {
            latency::merge(&mut self.tls_handshakes, &decode(text)?);
        }
        if let Some(text) = &h.events_per_response {
            let b = decode(text)?;
            let into = self.batches.get_or_insert_with(|| Histogram::new_from(&b));
            into.add(&b).map_err(|e| MergeError::Histogram {
                worker: w,
                why: format!("events per response: {e:?}"),
            })?;
        }
        for (second, text) in h.seconds.iter().enumerate() {
            let second = second + later;
            if self.seconds.len() <= second {
                self.seconds.resize_with(second + 1, latency::histogram);
            }
            latency::merge(&mut self.seconds[second], &decode(text)?);
        }
        for (into, text) in [
            (&mut self.round_trip, &h.round_trip_us),
            (&mut self.copy_latency, &h.copies_us),
        ] {
            if let Some(text) = text {
                latency::merge(into.get_or_insert_with(latency::histogram), &decode(text)?);
            }
        }
        Ok(())
    }

    /// Seconds from the first event sent to the last event received, over all subscribers.
    pub fn span_secs(&self) -> f64 {
        match (self.first_sent_ns, self.last_received_ns) {
            (Some(first), Some(last)) if last > first => (last - first) as f64 / 1e9,
            _ => 0.0,
        }
    }
}

/// The smallest window holding both.
fn span(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0.min(b.0), a.1.max(b.1))
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl fmt::Display for Merged {
    /// What `pushbench load` prints: the delivery check, throughput, percentiles.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        let span = self.span_secs();
        let rate = if span > 0.0 {
            c.delivered as f64 / span
        } else {
            0.0
        };
        writeln!(f, "subscribers       {}", c.subscribers)?;
        writeln!(
            f,
            "intact            {} of {} (digest {})",
            c.intact,
            c.subscribers,
            self.spec.digest()
        )?;
        writeln!(
            f,
            "delivered         {} events in {span:.3} s = {rate:.0} deliveries/s",
            c.delivered
        )?;
        for (name, h) in [("latency us", &self.latency), ("service us", &self.service)] {
            let p = Percentiles::of(h);
            writeln!(
                f,
                "{name:<18}p50 {} p99 {} p99.9 {} max {}",
                p.p50, p.p99, p.p999, p.max
            )?;
        }
        if !self.tls_handshakes.is_empty() {
            let h = &self.tls_handshakes;
            writeln!(
                f,
                "tls handshake us  p50 {} p99 {} ({} handshakes)",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.len()
            )?;
        }
        let last = Percentiles::of(&self.fanout.last_receiver_us(c.subscribers));
        writeln!(
            f,
            "last receiver us  p50 {} p99 {} (per event, until every subscriber had it)",
            last.p50, last.p99
        )?;
        writeln!(
            f,
            "lost              {} (gaps {}, cut off by drops {}; {} subscribers accounted for)",
            c.lost, c.gapped, c.cut_off, c.accounted
        )?;
        writeln!(f, "duplicated        {}", c.duplicated)?;
        writeln!(f, "reordered         {}", c.reordered)?;
        writeln!(f, "beyond window     {}", c.beyond_window)?;
        writeln!(f, "reconnects        {}", c.reconnects)?;
        write!(f, "malformed         {}", c.malformed)?;
        for error in &self.errors {
            write!(f, "\nerror: {error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ledger::Ledger;
    use super::*;
    use crate::event::{Event, Rate};
    use crate::metrics::recorder::Recording;

    fn spec(seed: u64) -> StreamSpec {
        StreamSpec::new(seed, 100, "8".parse().unwrap(), Rate::Max).unwrap()
    }

    /// Subscribers' own failures are kept before the load's timeouts whatever their order,
    /// each once, and a full list gives a timeout's place to a failure.
    #[test]
    fn failures_are_kept_before_timeouts() {
        let mut kept = Vec::new();
        for error in [
            "timed out after 40s",
            "MQTT: Network timeout",
            "timed out after 40s",
        ] {
            keep_error(&mut kept, error);
        }
        assert_eq!(kept, ["MQTT: Network timeout", "timed out after 40s"]);
        let mut full: Vec<String> = (0..ERRORS_KEPT)
            .map(|i| format!("timed out after {i}s"))
            .collect();
        keep_error(&mut full, "refused");
        assert_eq!((full.len(), full[0].as_str()), (ERRORS_KEPT, "refused"));
        assert!(!full.contains(&format!("timed out after {}s", ERRORS_KEPT - 1)));
        keep_error(&mut full, "timed out after 99s");
        assert!(!full.iter().any(|e| e == "timed out after 99s"));
    }

    /// One worker's part: `subscribers` subscribers, each receiving `order`, with latencies
    /// of 1..=100 us recorded.
    fn part(worker: usize, spec: &StreamSpec, subscribers: usize, order: &[u64]) -> LoadPart {
        let recording = Recording::new(spec.count, 0);
        let records: Vec<SubscriberRecord> = (0..subscribers)
            .map(|_| {
                let mut ledger = Ledger::broadcast(spec.count);
                for &seq in order {
                    ledger.record(&Event {
                        seq,
                        topic: None,
                        topic_seq: None,
                        scheduled_ns: 0,
                        sent_ns: 0,
                        payload: spec.payload(seq).into(),
                    });
                    recording.event(seq, 0, 0, (seq + 1) * 1000);
                }
                SubscriberRecord {
                    ledger,
                    copies: None,
                    handshake_us: Some(10),
                    first_event_us: Some(5),
                    first_sent_ns: Some(0),
                    last_received_ns: Some(100_000),
                    reconnects: 1,
                    reconnections: Vec::new(),
                    cut_off: 0,
                    outage_ns: None,
                    apart: false,
                    worst_latency_us: 0,
                    error: None,
                }
            })
            .collect();
        LoadPart::new(
            worker,
            (Transport::Tcp, &SettingValues::default()),
            spec,
            0,
            &records,
            &recording.finish(),
        )
    }

    /// Two workers' parts merge into exactly what one recorder of every value holds, and the
    /// counts add up; a worker whose subscribers lost an event fails the merged row.
    #[test]
    fn parts_merge_exactly() {
        let s = spec(1);
        let all: Vec<u64> = (0..100).collect();
        let merged = Merged::of(&[part(0, &s, 2, &all), part(1, &s, 3, &all)]).unwrap();
        assert_eq!(merged.counts.subscribers, 5);
        assert_eq!(merged.counts.intact, 5);
        assert_eq!(merged.counts.delivered, 500);
        assert!(!merged.counts.failed());
        let mut one = latency::histogram();
        for _ in 0..5 {
            for seq in 0..100u64 {
                one.record(seq + 1).unwrap();
            }
        }
        assert_eq!(merged.latency, one);
        assert_eq!(merged.fanout.last_receiver_us(5).len(), 100);

        let lossy: Vec<u64> = (0..99).collect();
        let merged = Merged::of(&[part(0, &s, 2, &all), part(1, &s, 1, &lossy)]).unwrap();
        assert_eq!((merged.counts.intact, merged.counts.lost), (2, 1));
        assert_eq!(merged.counts.digest_mismatches, 1);
        assert!(merged.counts.failed());
    }

    /// Parts of another stream are refused with what each measured.
    #[test]
    fn parts_of_another_stream_are_refused() {
        let all: Vec<u64> = (0..100).collect();
        let error = Merged::of(&[part(0, &spec(1), 1, &all), part(1, &spec(2), 1, &all)])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("seed 2") && error.contains("seed 1"),
            "{error}"
        );
        assert!(Merged::of(&[]).is_err());
    }
}
