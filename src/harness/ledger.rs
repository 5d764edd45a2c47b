//! One subscriber's ledger: a [`Tally`] per stream it follows, so each stream is judged on its
//! own (every event once, in order, digested against that stream's source), and an event from
//! a stream it does not follow is caught and named rather than counted as delivered. For the
//! one broadcast stream the ledger is a single tally of the global sequence, as before shapes.

use std::collections::HashMap;

use crate::event::{Digest, Event, Gap, StreamSpec, Tally, TallyCounts};
use crate::workload::place;

/// The source digest of every stream, computed once per process and shared by its ledgers.
#[derive(Debug)]
pub struct SourceDigests {
    /// By stream (one entry, stream 0, for broadcast).
    digests: HashMap<u32, Digest>,
}

impl SourceDigests {
    /// Every stream's digest of `spec`.
    pub fn of(spec: &StreamSpec) -> Self {
        let digests = if spec.tagged() {
            (0..spec.streams as u32)
                .map(|topic| (topic, spec.stream_digest(topic)))
                .collect()
        } else {
            HashMap::from([(0, spec.digest())])
        };
        Self { digests }
    }

    fn of_stream(&self, topic: u32) -> Option<Digest> {
        self.digests.get(&topic).copied()
    }
}

/// An event that reached a subscriber outside the streams it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Misrouted {
    /// Its sequence number.
    pub seq: u64,
    /// The stream it belongs to (`None`: it carried none, on a workload whose events do).
    pub topic: Option<u32>,
}

/// What one subscriber received, stream by stream.
#[derive(Clone, Debug)]
pub struct Ledger {
    /// The subscriber's index in the run, to name it.
    subscriber: usize,
    /// Each stream followed with its tally; for broadcast, stream 0 over the global sequence.
    streams: Vec<(u32, Tally)>,
    /// Streams the server's global sequence interleaves.
    interleaved: u64,
    /// Whether events carry their stream.
    tagged: bool,
    /// Events outside the subscriber's streams.
    misrouted: u64,
    /// The first of them.
    first_misrouted: Option<Misrouted>,
}

impl Ledger {
    /// A ledger of the one broadcast stream of `expected` events.
    pub fn broadcast(expected: u64) -> Self {
        Self {
            subscriber: 0,
            streams: vec![(0, Tally::new(expected))],
            interleaved: 1,
            tagged: false,
            misrouted: 0,
            first_misrouted: None,
        }
    }

    /// A ledger of subscriber `subscriber` following `topics` (each of `per_stream` events) of
    /// `interleaved` streams.
    pub fn of_streams(
        subscriber: usize,
        topics: &[u32],
        per_stream: u64,
        interleaved: u64,
    ) -> Self {
        Self {
            subscriber,
            streams: topics
                .iter()
                .map(|&t| (t, Tally::new(per_stream)))
                .collect(),
            interleaved,
            tagged: true,
            misrouted: 0,
            first_misrouted: None,
        }
    }

    /// Counts one received event in its stream's tally.
    pub fn record(&mut self, event: &Event<'_>) {
        if !self.tagged {
            self.streams[0]
                .1
                .record(event.seq, event.payload.as_bytes());
            return;
        }
        let (Some(topic), Some(number)) = (event.topic, event.topic_seq) else {
            return self.misroute(event.seq, None);
        };
        // The stream and number must be where the global sequence puts them.
        if place(event.seq, self.interleaved) != (topic, number) {
            self.streams[0].1.record_malformed();
            return;
        }
        match self.streams.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, tally)) => {
                tally.record(number, event.payload.as_bytes());
            }
            None => self.misroute(event.seq, Some(topic)),
        }
    }

    fn misroute(&mut self, seq: u64, topic: Option<u32>) {
        self.misrouted += 1;
        self.first_misrouted.get_or_insert(Misrouted { seq, topic });
    }

    /// Counts a message that was not an event.
    pub fn record_malformed(&mut self) {
        self.streams[0].1.record_malformed();
    }

    /// Counts a gap the server named, in global sequence numbers, against each stream
    /// followed: the share of its events that fall in the gap.
    pub fn record_gap(&mut self, gap: Gap) {
        if !self.tagged {
            return self.streams[0].1.record_gap(gap);
        }
        let k = self.interleaved;
        let end = gap.from.saturating_add(gap.count);
        for (topic, tally) in &mut self.streams {
            let t = u64::from(*topic);
            // Numbers j with t + jK in [from, end).
            let first = gap.from.saturating_sub(t).div_ceil(k);
            let past = end.saturating_sub(t).div_ceil(k);
            if past > first {
                tally.record_gap(Gap {
                    from: first,
                    count: past - first,
                });
            }
        }
    }

    /// Whether every stream followed is complete.
    pub fn is_complete(&self) -> bool {
        self.streams.iter().all(|(_, tally)| tally.is_complete())
    }

    /// Events of the subscriber's streams never received.
    pub fn lost(&self) -> u64 {
        self.streams.iter().map(|(_, tally)| tally.lost()).sum()
    }

    /// The counts summed over streams; misrouted events count as malformed.
    pub fn counts(&self) -> TallyCounts {
        let mut sum = TallyCounts::default();
        for (_, tally) in &self.streams {
            let c = tally.counts();
            sum.received += c.received;
            sum.distinct += c.distinct;
            sum.duplicated += c.duplicated;
            sum.reordered += c.reordered;
            sum.malformed += c.malformed;
            sum.beyond_window += c.beyond_window;
            sum.gapped += c.gapped;
        }
        sum.malformed += self.misrouted;
        sum
    }

    /// When every stream ends in a missing tail and nothing past a hole: the events those
    /// tails hold.
    pub fn missing_tail(&self) -> Option<u64> {
        self.streams
            .iter()
            .map(|(_, tally)| tally.missing_tail())
            .sum()
    }

    /// The digest of the broadcast stream (or of the first stream followed).
    pub fn digest(&self) -> Digest {
        self.streams[0].1.digest()
    }

    /// Whether every stream's digest is its source's.
    pub fn digests_match(&self, sources: &SourceDigests) -> bool {
        self.streams
            .iter()
            .all(|(topic, tally)| sources.of_stream(*topic) == Some(tally.digest()))
    }

    /// Why the row must fail for this subscriber though nothing is lost: it received events of
    /// streams it does not follow.
    pub fn misrouting(&self) -> Option<String> {
        let first = self.first_misrouted.as_ref()?;
        let topics: Vec<String> = self.streams.iter().map(|(t, _)| t.to_string()).collect();
        let of = match first.topic {
            Some(topic) => format!("of topic {topic}"),
            None => "with no topic".to_owned(),
        };
        Some(format!(
            "subscriber {} following topics [{}] received {} event(s) outside them, the first \
             event {} {of}",
            self.subscriber,
            topics.join(","),
            self.misrouted,
            first.seq
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Rate;
    use crate::workload::Workload;

    fn tagged(spec: &StreamSpec, seq: u64) -> (Event<'static>, String) {
        let (topic, number) = place(seq, spec.streams);
        let payload = spec.payload(seq);
        let event = Event {
            seq,
            topic: Some(topic),
            topic_seq: Some(number),
            scheduled_ns: 0,
            sent_ns: 0,
            payload: payload.clone().into(),
        };
        (event, payload)
    }

    /// A subscriber of two of four streams that gets exactly theirs balances against each
    /// stream's source; one event of another stream fails it, naming both.
    #[test]
    fn streams_are_judged_apart_and_misrouting_is_named() {
        let spec = StreamSpec::new(3, 10, "16".parse().unwrap(), Rate::Max)
            .unwrap()
            .with_workload(Workload::Unicast, 4);
        let sources = SourceDigests::of(&spec);
        let mut ledger = Ledger::of_streams(2, &[1, 3], spec.per_stream(), spec.streams);
        for seq in (0..spec.count).filter(|s| s % 4 == 1 || s % 4 == 3) {
            ledger.record(&tagged(&spec, seq).0);
        }
        assert!(ledger.is_complete() && ledger.digests_match(&sources));
        assert_eq!((ledger.lost(), ledger.misrouting()), (0, None));
        ledger.record(&tagged(&spec, 6).0);
        let why = ledger.misrouting().unwrap();
        assert!(
            why.contains("subscriber 2") && why.contains("topic 2"),
            "{why}"
        );
        assert_eq!(ledger.counts().malformed, 1);
    }

    /// A global gap is shared out to each stream followed.
    #[test]
    fn gaps_split_by_stream() {
        let mut ledger = Ledger::of_streams(0, &[0, 2], 10, 3);
        // Global 4..10 holds stream 0's numbers 2, 3 (6, 9) and stream 2's 1, 2 (5, 8).
        ledger.record_gap(Gap { from: 4, count: 6 });
        assert_eq!(ledger.counts().gapped, 4);
    }
}
