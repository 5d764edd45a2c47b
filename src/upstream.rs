//! Messages subscribers send to the server (chat lines, edits, moves): their wire form, the
//! schedule each sender keeps, and the server's ledger of them, one tally per sender.
//!
//! A sender's messages are as deterministic as the stream: message `k` of sender `s` is due at
//! `k / rate` after the stream's start (plus the sender's phase, which spreads a population's
//! senders over one interval), carries a payload drawn from `(s, k)` alone, and goes to
//! one of the sender's rooms (round robin over them), so the server can judge every sender's
//! messages (each once, in order, with the digest of the payloads it should have) without
//! being told what was sent.

use std::borrow::Cow;
use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::event::{Digest, Seen, Tally, TallyCounts};
use crate::metrics::latency;

/// Payload bytes of one upstream message: a chat line's size.
pub const PAYLOAD_BYTES: usize = 48;

/// One message from a subscriber, as it travels up, and as the server's copy of it travels
/// down to the sender's room. The JSON form is `{"up":{...}}`, so it cannot be mistaken for an
/// event or a gap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message<'a> {
    /// The sender: its index in the run.
    pub from: u64,
    /// Its number among the sender's messages, from 0.
    pub seq: u64,
    /// The room it is for (`None` in a broadcast workload: everyone's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<u32>,
    /// When the sender's schedule said it should go (monotonic ns): latency counts from here,
    /// so a sender that stalls cannot hide the stall by sending late.
    pub scheduled_ns: u64,
    /// The payload, printable text.
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
}

/// The JSON envelope a message travels in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    up: Message<'a>,
}

impl<'a> Message<'a> {
    /// The message's JSON form.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising integers and a string into memory cannot fail.
        serde_json::to_vec(&Envelope { up: self.clone() }).unwrap_or_default()
    }

    /// Reads a message's JSON form; `None` when the bytes are not one.
    pub fn decode(bytes: &'a [u8]) -> Option<Self> {
        // A cheap test first: copies share the receive path with events.
        if !bytes.starts_with(b"{\"up\"") {
            return None;
        }
        serde_json::from_slice::<Envelope<'a>>(bytes)
            .ok()
            .map(|e| e.up)
    }
}

/// The payload of message `seq` of sender `from`: printable, [`PAYLOAD_BYTES`] long, drawn from
/// the pair alone so the server can check it.
pub fn payload(from: u64, seq: u64) -> String {
    let mut state = from.rotate_left(32) ^ seq ^ 0x7570_7374_7265_616d; // "upstream"
    crate::payload::PayloadKind::Random.generate(PAYLOAD_BYTES, &mut state)
}

/// The digest of a sender's first `count` messages, received once each and in order.
pub fn digest_of(from: u64, count: u64) -> Digest {
    (0..count).fold(Digest::EMPTY, |d, seq| {
        d.fold(seq, payload(from, seq).as_bytes())
    })
}

/// Messages each sender sends over a stream of `events` events at `stream_rate` events per
/// second: one every `1 / rate` seconds for as long as the stream lasts (at least one).
pub fn per_sender(rate: f64, events: u64, stream_rate: f64) -> u64 {
    if rate <= 0.0 || stream_rate <= 0.0 {
        return 0;
    }
    let seconds = events as f64 / stream_rate;
    ((seconds * rate).ceil() as u64).max(1)
}

/// One sender's messages: how many, how often, and to which rooms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The sender's index in the run.
    pub from: u64,
    /// Messages per second.
    pub rate: f64,
    /// Messages in all.
    pub count: u64,
    /// Where in the interval between two messages this sender's fall, so that a population
    /// does not send in lockstep: senders are spread evenly over one interval.
    #[serde(default)]
    pub phase_ns: u64,
    /// Whether the server copies each message to the sender's room (and so back to it).
    pub echo: bool,
    /// The sender's rooms (`None`: the one broadcast stream).
    pub topics: Option<Vec<u32>>,
}

impl Plan {
    /// When message `seq` is due, after the stream's start.
    pub fn offset_ns(&self, seq: u64) -> u64 {
        self.phase_ns + (seq as f64 * 1e9 / self.rate) as u64
    }

    /// The room message `seq` goes to: the sender's rooms in turn.
    pub fn topic_of(&self, seq: u64) -> Option<u32> {
        let topics = self.topics.as_deref().filter(|t| !t.is_empty())?;
        Some(topics[(seq % topics.len() as u64) as usize])
    }

    /// Message `seq`'s wire form, due at `origin_ns + offset`.
    pub fn message(&self, seq: u64, origin_ns: u64) -> Vec<u8> {
        Message {
            from: self.from,
            seq,
            topic: self.topic_of(seq),
            scheduled_ns: origin_ns + self.offset_ns(seq),
            payload: Cow::Owned(payload(self.from, seq)),
        }
        .encode()
    }
}

/// What one sender's messages came to at the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderTally {
    /// The sender's index in the run.
    pub from: u64,
    /// Its tally's counts.
    pub counts: TallyCounts,
    /// The digest of its distinct messages in arrival order.
    pub digest: Digest,
}

/// The server's ledger of upstream messages: a tally per sender and the latency of each
/// message from its schedule to its receipt.
#[derive(Debug)]
pub struct Ledger {
    /// Messages each sender has in all.
    per_sender: u64,
    /// The tallies, by sender.
    senders: HashMap<u64, Tally>,
    /// Scheduled send to receipt, us.
    latency: Histogram<u64>,
    /// Messages whose payload was not the one their sender and number call for.
    corrupt: u64,
    /// Bytes of the messages' wire form (as the transport's framing carried them, framing
    /// left out).
    bytes: u64,
}

impl Ledger {
    /// An empty ledger for senders of `per_sender` messages each.
    pub fn new(per_sender: u64) -> Self {
        Self {
            per_sender,
            senders: HashMap::new(),
            latency: latency::histogram(),
            corrupt: 0,
            bytes: 0,
        }
    }

    /// Counts one message received at `received_ns`, `wire` bytes long. What [`Tally::record`]
    /// made of it: a message to put in the sender's room only when new.
    pub fn record(&mut self, message: &Message<'_>, wire: usize, received_ns: u64) -> Seen {
        self.bytes += wire as u64;
        self.latency
            .saturating_record(latency::micros_between(message.scheduled_ns, received_ns));
        if message.payload != payload(message.from, message.seq) {
            self.corrupt += 1;
        }
        let per_sender = self.per_sender;
        self.senders
            .entry(message.from)
            .or_insert_with(|| Tally::new(per_sender))
            .record(message.seq, message.payload.as_bytes())
    }

    /// Whether `from` has sent a message already.
    pub fn knows(&self, from: u64) -> bool {
        self.senders.contains_key(&from)
    }

    /// Senders heard from.
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    /// The ledger's totals so far.
    pub fn totals(&self) -> Totals {
        let mut senders: Vec<SenderTally> = self
            .senders
            .iter()
            .map(|(&from, tally)| SenderTally {
                from,
                counts: tally.counts().clone(),
                digest: tally.digest(),
            })
            .collect();
        senders.sort_by_key(|s| s.from);
        Totals {
            per_sender: self.per_sender,
            senders,
            latency: self.latency.clone(),
            corrupt: self.corrupt,
            bytes: self.bytes,
        }
    }
}

/// A ledger's totals, as the server reports them.
#[derive(Clone, Debug)]
pub struct Totals {
    /// Messages each sender has in all.
    pub per_sender: u64,
    /// Every sender heard from, by index.
    pub senders: Vec<SenderTally>,
    /// Scheduled send to receipt, us.
    pub latency: Histogram<u64>,
    /// Messages with a payload other than their own.
    pub corrupt: u64,
    /// Bytes of the messages' wire form.
    pub bytes: u64,
}

impl Totals {
    /// The totals as the server reports them, with the copies its rooms handed out.
    pub fn report(&self, copies: u64) -> Report {
        Report {
            per_sender: self.per_sender,
            senders: self.senders.clone(),
            latency_us: latency::encode(&self.latency),
            corrupt: self.corrupt,
            bytes: self.bytes,
            copies,
        }
    }
}

/// A server's upstream ledger as it travels to `run` (the histogram encoded).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Messages each sender has in all.
    pub per_sender: u64,
    /// Every sender heard from, by index.
    pub senders: Vec<SenderTally>,
    /// Scheduled send to receipt, us (HdrHistogram, encoded).
    pub latency_us: String,
    /// Messages with a payload other than their own.
    pub corrupt: u64,
    /// Bytes of the messages' wire form.
    pub bytes: u64,
    /// Copies of messages the server's rooms hold (each handed to every member).
    pub copies: u64,
}

impl Report {
    /// Folds in another server's report (a fleet member's): its senders, latencies and counts.
    pub fn merge(&mut self, other: &Report) {
        self.per_sender = self.per_sender.max(other.per_sender);
        self.senders.extend(other.senders.iter().cloned());
        self.senders.sort_by_key(|s| s.from);
        if let (Ok(mut mine), Ok(theirs)) = (
            latency::decode(&self.latency_us),
            latency::decode(&other.latency_us),
        ) {
            latency::merge(&mut mine, &theirs);
            self.latency_us = latency::encode(&mine);
        } else if self.latency_us.is_empty() {
            self.latency_us = other.latency_us.clone();
        }
        self.corrupt += other.corrupt;
        self.bytes += other.bytes;
        self.copies += other.copies;
    }
}

/// What copies of messages sent up came back to the subscribers (counted at each, summed
/// over a part's or a run's).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct CopyCounts {
    /// Copies its rooms get over the run (its own included).
    pub expected: u64,
    /// Copies received.
    pub received: u64,
    /// Copies received that were not after the last from their sender (duplicates, or out
    /// of order).
    pub disordered: u64,
    /// Its own messages it must get back.
    pub own_expected: u64,
    /// Its own messages back.
    pub own_received: u64,
}

impl CopyCounts {
    /// Adds another subscriber's counts.
    pub fn add(&mut self, other: &CopyCounts) {
        self.expected += other.expected;
        self.received += other.received;
        self.disordered += other.disordered;
        self.own_expected += other.own_expected;
        self.own_received += other.own_received;
    }

    /// Whether every copy arrived once, in order per sender.
    pub fn is_exact(&self) -> bool {
        self.received == self.expected
            && self.disordered == 0
            && self.own_received == self.own_expected
    }
}

/// What the senders' messages came to, judged against what each should have sent.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Verdict {
    /// Messages the senders were due to send.
    pub expected: u64,
    /// Messages received, duplicates included.
    pub received: u64,
    /// Messages never received.
    pub lost: u64,
    /// Extra copies received.
    pub duplicated: u64,
    /// Messages received after a later one of the same sender.
    pub reordered: u64,
    /// Messages with a wrong payload, or numbered outside their sender's messages.
    pub corrupt: u64,
    /// Senders whose digest is not the one their messages call for.
    pub wrong_digests: u64,
}

impl Verdict {
    /// Judges `senders` (as the server tallied them) against `senders_expected` senders
    /// numbered from 0, each due `per_sender` messages.
    pub fn of(
        per_sender: u64,
        senders_expected: u64,
        senders: &[SenderTally],
        corrupt: u64,
    ) -> Self {
        let mut verdict = Verdict {
            expected: per_sender * senders_expected,
            corrupt,
            ..Verdict::default()
        };
        let mut distinct = 0;
        for sender in senders {
            verdict.received += sender.counts.received;
            verdict.duplicated += sender.counts.duplicated;
            verdict.reordered += sender.counts.reordered;
            verdict.corrupt += sender.counts.malformed;
            let known = sender.from < senders_expected;
            if known {
                distinct += sender.counts.distinct;
            }
            if !known || sender.digest != digest_of(sender.from, per_sender) {
                verdict.wrong_digests += 1;
            }
        }
        // Senders never heard from have no tally: all their messages are lost, and their
        // digest is wrong unless they were due none.
        let heard = senders.iter().filter(|s| s.from < senders_expected).count() as u64;
        if per_sender > 0 {
            verdict.wrong_digests += senders_expected.saturating_sub(heard);
        }
        verdict.lost = verdict.expected.saturating_sub(distinct);
        verdict
    }

    /// Whether every message arrived once, in order, as sent.
    pub fn is_exact(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.corrupt == 0
            && self.wrong_digests == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(from: u64) -> Plan {
        Plan {
            from,
            rate: 10.0,
            count: 4,
            phase_ns: 0,
            echo: true,
            topics: Some(vec![3, 7]),
        }
    }

    /// A message round-trips through its JSON form and is told apart from an event.
    #[test]
    fn messages_round_trip() {
        let bytes = plan(2).message(1, 1_000);
        let message = Message::decode(&bytes).unwrap();
        assert_eq!(
            (
                message.from,
                message.seq,
                message.topic,
                message.scheduled_ns
            ),
            (2, 1, Some(7), 1_000 + 100_000_000)
        );
        assert_eq!(message.payload.len(), PAYLOAD_BYTES);
        assert_eq!(Message::decode(b"{\"seq\":1}"), None);
    }

    /// Every sender's messages in order make an exact verdict.
    #[test]
    fn an_exact_ledger() {
        let mut ledger = Ledger::new(4);
        for from in 0..3 {
            for seq in 0..4 {
                let bytes = plan(from).message(seq, 0);
                let m = Message::decode(&bytes).unwrap();
                assert_eq!(ledger.record(&m, bytes.len(), 5_000), Seen::New);
            }
        }
        let totals = ledger.totals();
        let verdict = Verdict::of(4, 3, &totals.senders, totals.corrupt);
        assert!(verdict.is_exact(), "{verdict:?}");
        assert_eq!((verdict.expected, verdict.received), (12, 12));
    }

    /// A planted duplicate and a planted loss are each counted, and break the digest of their
    /// sender only; a wrong payload is corrupt.
    #[test]
    fn a_planted_duplicate_and_loss_are_counted() {
        let mut ledger = Ledger::new(4);
        let mut send = |from: u64, seq: u64| {
            let bytes = plan(from).message(seq, 0);
            let m = Message::decode(&bytes).unwrap();
            ledger.record(&m, bytes.len(), 1)
        };
        // Sender 0 sends message 1 twice; sender 1 never sends message 2.
        for seq in [0, 1, 1, 2, 3] {
            send(0, seq);
        }
        for seq in [0, 1, 3] {
            send(1, seq);
        }
        let totals = ledger.totals();
        let verdict = Verdict::of(4, 2, &totals.senders, totals.corrupt);
        assert_eq!((verdict.duplicated, verdict.lost), (1, 1));
        assert_eq!(verdict.wrong_digests, 1);
        assert!(!verdict.is_exact());

        let wire = plan(0).message(0, 0);
        let mut forged = Message::decode(&wire).unwrap();
        forged.payload = Cow::Borrowed("not the payload");
        let mut ledger = Ledger::new(1);
        ledger.record(&forged, 10, 1);
        assert_eq!(ledger.totals().corrupt, 1);
    }

    /// A sender never heard from has lost every message.
    #[test]
    fn a_silent_sender_lost_everything() {
        let verdict = Verdict::of(5, 2, &[], 0);
        assert_eq!((verdict.lost, verdict.wrong_digests), (10, 2));
    }

    /// Messages last as long as the stream, at least one.
    #[test]
    fn messages_per_sender() {
        assert_eq!(per_sender(20.0, 100, 10.0), 200);
        assert_eq!(per_sender(0.1, 10, 10.0), 1);
        assert_eq!(per_sender(0.0, 10, 10.0), 0);
    }
}
