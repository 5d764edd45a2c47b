//! The deterministic event stream: its spec, the events it yields, their one wire encoding, the
//! order-sensitive stream digest and the tally each subscriber keeps of what it received.
//!
//! Everything here is a pure function of the [`StreamSpec`], so the server and every subscriber,
//! in whatever process, agree on what the stream *should* be without exchanging it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The largest payload one event may carry. Transports size their frame and body limits from it,
/// so a stream that passes validation fits every transport.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// Room for the JSON envelope around a payload (`seq`, times, field names, quotes).
pub const ENVELOPE_BYTES: usize = 256;

/// The largest encoded event any transport must accept.
pub const MAX_EVENT_BYTES: usize = MAX_PAYLOAD_BYTES + ENVELOPE_BYTES;

/// Characters a payload is drawn from: printable, and needing no escape in JSON, SSE or URLs, so
/// every transport carries the payload bytes unchanged.
const PAYLOAD_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// What a stream is: everything needed to regenerate every event, byte for byte.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// Seeds the payload bytes; two specs differing only in seed carry different bytes.
    pub seed: u64,
    /// How many events the stream has; sequence numbers run from 0 to `count - 1`.
    pub count: u64,
    /// Payload sizes in bytes, cycled by sequence number.
    pub payload: PayloadSizes,
    /// How fast events are scheduled.
    pub rate: Rate,
}

/// Why a stream spec cannot be used.
#[derive(Debug, Error, PartialEq)]
pub enum SpecError {
    /// A stream of no events measures nothing.
    #[error("the stream must have at least one event (--events 0 given)")]
    NoEvents,
    /// A payload size beyond [`MAX_PAYLOAD_BYTES`].
    #[error("payload size {size} B exceeds the maximum of {MAX_PAYLOAD_BYTES} B")]
    PayloadTooLarge {
        /// The offending size.
        size: usize,
    },
    /// Rate text that is neither a positive number nor `max`.
    #[error("invalid rate {0:?}: expected events per second (a positive number) or `max`")]
    BadRate(String),
    /// Payload text that is not a comma-separated list of sizes.
    #[error(
        "invalid payload sizes {0:?}: expected bytes, or a comma-separated list such as 0,1,65536"
    )]
    BadPayload(String),
}

impl StreamSpec {
    /// A spec, checked: at least one event, every payload size within the maximum.
    pub fn new(
        seed: u64,
        count: u64,
        payload: PayloadSizes,
        rate: Rate,
    ) -> Result<Self, SpecError> {
        if count == 0 {
            return Err(SpecError::NoEvents);
        }
        if let Some(&size) = payload.0.iter().find(|&&s| s > MAX_PAYLOAD_BYTES) {
            return Err(SpecError::PayloadTooLarge { size });
        }
        Ok(Self {
            seed,
            count,
            payload,
            rate,
        })
    }

    /// When event `seq` is due, in nanoseconds after the stream starts; `None` at an unlimited
    /// rate, where events have no schedule and go out as fast as they can be published.
    pub fn offset_ns(&self, seq: u64) -> Option<u64> {
        match self.rate {
            Rate::PerSecond(rate) => Some((seq as f64 * 1e9 / rate) as u64),
            Rate::Max => None,
        }
    }

    /// The payload of event `seq`: printable bytes derived from the seed and sequence number only.
    pub fn payload(&self, seq: u64) -> String {
        let len = self.payload.size(seq);
        let mut state = self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            // Each 64-bit draw yields ten 6-bit characters.
            let mut word = splitmix64(&mut state);
            for _ in 0..10.min(len - bytes.len()) {
                bytes.push(PAYLOAD_ALPHABET[(word & 63) as usize]);
                word >>= 6;
            }
        }
        // Every byte comes from the ASCII alphabet above.
        String::from_utf8(bytes).unwrap_or_default()
    }

    /// The digest a subscriber must reach after receiving the whole stream in order.
    pub fn digest(&self) -> Digest {
        (0..self.count).fold(Digest::EMPTY, |digest, seq| {
            digest.fold(seq, self.payload(seq).as_bytes())
        })
    }

    /// Total payload bytes in the stream, for bytes-per-second figures.
    pub fn payload_bytes(&self) -> u64 {
        (0..self.count)
            .map(|seq| self.payload.size(seq) as u64)
            .sum()
    }
}

/// splitmix64: a tiny, well-known generator; good enough to make payloads look random and cheap
/// enough that generating them never limits the publisher.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Payload sizes in bytes, cycled by sequence number: event `seq` has `sizes[seq % len]` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NumberOrText", into = "String")]
pub struct PayloadSizes(Vec<usize>);

/// What a config file may give for a rate or a size: a number, text (`"max"`, `"0,1,64"`), or
/// a list of numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(f64),
    Text(String),
    List(Vec<f64>),
}

impl NumberOrText {
    fn into_text(self) -> String {
        match self {
            NumberOrText::Number(n) => n.to_string(),
            NumberOrText::Text(text) => text,
            NumberOrText::List(list) => {
                let parts: Vec<String> = list.iter().map(|n| n.to_string()).collect();
                parts.join(",")
            }
        }
    }
}

impl PayloadSizes {
    /// One size for every event.
    pub fn fixed(size: usize) -> Self {
        Self(vec![size])
    }

    /// The size of event `seq`'s payload.
    pub fn size(&self, seq: u64) -> usize {
        self.0[(seq % self.0.len() as u64) as usize]
    }

    /// The sizes, in cycle order.
    pub fn sizes(&self) -> &[usize] {
        &self.0
    }
}

impl FromStr for PayloadSizes {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let sizes: Result<Vec<usize>, _> = text.split(',').map(|s| s.trim().parse()).collect();
        match sizes {
            Ok(sizes) if !sizes.is_empty() => Ok(Self(sizes)),
            _ => Err(SpecError::BadPayload(text.to_owned())),
        }
    }
}

impl TryFrom<NumberOrText> for PayloadSizes {
    type Error = SpecError;
    fn try_from(value: NumberOrText) -> Result<Self, Self::Error> {
        value.into_text().parse()
    }
}

impl From<PayloadSizes> for String {
    fn from(sizes: PayloadSizes) -> String {
        sizes.to_string()
    }
}

impl fmt::Display for PayloadSizes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|s| s.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// How fast the stream is offered.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "NumberOrText", into = "String")]
pub enum Rate {
    /// A fixed schedule: event `seq` is due `seq / rate` seconds after the start.
    PerSecond(f64),
    /// No schedule: publish as fast as possible (latency is then service time).
    Max,
}

impl FromStr for Rate {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match text.parse::<f64>() {
            Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(Rate::PerSecond(rate)),
            _ => Err(SpecError::BadRate(text.to_owned())),
        }
    }
}

impl TryFrom<NumberOrText> for Rate {
    type Error = SpecError;
    fn try_from(value: NumberOrText) -> Result<Self, Self::Error> {
        value.into_text().parse()
    }
}

impl From<Rate> for String {
    fn from(rate: Rate) -> String {
        rate.to_string()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::PerSecond(rate) => write!(f, "{rate}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

/// One event as it travels: the canonical JSON object every transport carries unchanged.
///
/// Times are CLOCK_MONOTONIC nanoseconds ([`crate::clock`]): on one host, a subscriber subtracts
/// them from its own receive time directly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event<'a> {
    /// Position in the stream, from 0.
    pub seq: u64,
    /// When the schedule said the event should go out (equal to `sent_ns` at an unlimited rate).
    pub scheduled_ns: u64,
    /// When the server actually published it to its transport.
    pub sent_ns: u64,
    /// The payload bytes, as printable text.
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
}

/// Bytes that claimed to be an event and are not one.
#[derive(Debug, Error)]
#[error("malformed event: {0}")]
pub struct DecodeError(String);

impl DecodeError {
    /// An event that failed for a reason outside JSON decoding (a wrong frame type, say).
    pub fn new(why: impl Into<String>) -> Self {
        Self(why.into())
    }
}

impl<'a> Event<'a> {
    /// The canonical wire encoding: compact JSON with fields in declaration order.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of integers and a string into memory cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an event from its wire encoding, borrowing the payload where it can.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
    }
}

/// An order-sensitive digest of a stream: each event folds its sequence number and payload into
/// the digest so far, so a lost, extra or reordered event changes the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Digest(u64);

impl Digest {
    /// The digest of an empty stream.
    pub const EMPTY: Digest = Digest(0x5055_5348_4245_4e43); // "PUSHBENC"

    /// The digest after one more event.
    pub fn fold(self, seq: u64, payload: &[u8]) -> Digest {
        // xxh3 seeded with the chain so far and the sequence number: fast on short payloads and
        // chaining makes it order-sensitive.
        let seed = self.0 ^ seq.wrapping_mul(0xA076_1D64_78BD_642F);
        Digest(xxhash_rust::xxh3::xxh3_64_with_seed(payload, seed))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.to_string()
    }
}

impl TryFrom<String> for Digest {
    type Error = std::num::ParseIntError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        u64::from_str_radix(&text, 16).map(Digest)
    }
}

/// What one subscriber received, judged against the stream it should have received.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Events the stream has.
    expected: u64,
    /// One bit per sequence number already received; exact duplicate counting at 1 bit/event.
    seen: Vec<u64>,
    /// Highest sequence number received so far; anything lower and new arrived out of order.
    highest: Option<u64>,
    /// The digest of distinct events, in arrival order.
    digest: Digest,
    /// Counts reported at the end.
    counts: TallyCounts,
}

/// The counts of a [`Tally`], as reported.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyCounts {
    /// Events received, duplicates included.
    pub received: u64,
    /// Distinct events received.
    pub distinct: u64,
    /// Events received more than once (each extra copy counts one).
    pub duplicated: u64,
    /// Events received after one with a higher sequence number.
    pub reordered: u64,
    /// Messages that could not be decoded, or named a sequence number outside the stream.
    pub malformed: u64,
}

/// What [`Tally::record`] made of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First copy of this event.
    New,
    /// This event was received before.
    Duplicate,
    /// The sequence number is not part of the stream.
    OutOfRange,
}

impl Tally {
    /// An empty tally for a stream of `expected` events.
    pub fn new(expected: u64) -> Self {
        Self {
            expected,
            seen: vec![0; expected.div_ceil(64) as usize],
            highest: None,
            digest: Digest::EMPTY,
            counts: TallyCounts::default(),
        }
    }

    /// Counts one received event.
    pub fn record(&mut self, seq: u64, payload: &[u8]) -> Seen {
        if seq >= self.expected {
            self.counts.malformed += 1;
            return Seen::OutOfRange;
        }
        self.counts.received += 1;
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen[word] & bit != 0 {
            self.counts.duplicated += 1;
            return Seen::Duplicate;
        }
        self.seen[word] |= bit;
        self.counts.distinct += 1;
        match self.highest {
            Some(highest) if seq < highest => self.counts.reordered += 1,
            _ => self.highest = Some(seq),
        }
        self.digest = self.digest.fold(seq, payload);
        Seen::New
    }

    /// Counts a message that could not be decoded as an event.
    pub fn record_malformed(&mut self) {
        self.counts.malformed += 1;
    }

    /// Whether every event of the stream has arrived.
    pub fn is_complete(&self) -> bool {
        self.counts.distinct == self.expected
    }

    /// Events of the stream never received.
    pub fn lost(&self) -> u64 {
        self.expected - self.counts.distinct
    }

    /// The digest of what arrived, in arrival order.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The counts so far.
    pub fn counts(&self) -> &TallyCounts {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(count: u64, sizes: &str) -> StreamSpec {
        StreamSpec::new(7, count, sizes.parse().unwrap(), Rate::Max).unwrap()
    }

    /// The same spec gives the same payloads; another seed gives other bytes.
    #[test]
    fn payloads_are_deterministic_and_seeded() {
        let a = spec(10, "100");
        let mut b = a.clone();
        assert_eq!(a.payload(3), a.payload(3));
        assert_eq!(a.payload(3).len(), 100);
        b.seed = 8;
        assert_ne!(a.payload(3), b.payload(3));
        assert!(a.payload(3).bytes().all(|c| PAYLOAD_ALPHABET.contains(&c)));
    }

    /// Sizes cycle by sequence number, zero included.
    #[test]
    fn payload_sizes_cycle() {
        let s = spec(6, "0,1,65536");
        let lens: Vec<usize> = (0..6).map(|q| s.payload(q).len()).collect();
        assert_eq!(lens, [0, 1, 65536, 0, 1, 65536]);
    }

    /// Encoding then decoding gives back the same event, and the encoding is canonical.
    #[test]
    fn wire_round_trip() {
        let e = Event {
            seq: 5,
            scheduled_ns: 10,
            sent_ns: 12,
            payload: "abc".into(),
        };
        let bytes = e.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"seq":5,"scheduled_ns":10,"sent_ns":12,"payload":"abc"}"#
        );
        assert_eq!(Event::decode(&bytes).unwrap(), e);
        assert!(Event::decode(b"{\"seq\":1}").is_err());
        assert!(Event::decode(b"\xff\x00garbage").is_err());
    }

    /// A tally of the whole stream in order matches the source digest; any change does not.
    #[test]
    fn tally_detects_loss_duplicates_and_reordering() {
        let s = spec(4, "8");
        let send = |order: &[u64]| {
            let mut t = Tally::new(s.count);
            for &q in order {
                t.record(q, s.payload(q).as_bytes());
            }
            t
        };
        let ok = send(&[0, 1, 2, 3]);
        assert!(ok.is_complete());
        assert_eq!(ok.digest(), s.digest());

        let lost = send(&[0, 1, 3]);
        assert_eq!(lost.lost(), 1);
        assert_ne!(lost.digest(), s.digest());

        let dup = send(&[0, 1, 1, 2, 3]);
        assert_eq!(dup.counts().duplicated, 1);
        assert_eq!(dup.digest(), s.digest(), "duplicates are not folded twice");

        let reordered = send(&[0, 2, 1, 3]);
        assert_eq!(reordered.counts().reordered, 1);
        assert!(reordered.is_complete());
        assert_ne!(reordered.digest(), s.digest());

        let mut t = Tally::new(4);
        assert_eq!(t.record(9, b""), Seen::OutOfRange);
        assert_eq!(t.counts().malformed, 1);
    }

    /// Bad rates and payload lists are refused with the text that was given.
    #[test]
    fn spec_validation() {
        assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
        assert_eq!("250".parse::<Rate>().unwrap(), Rate::PerSecond(250.0));
        assert!(matches!("0".parse::<Rate>(), Err(SpecError::BadRate(_))));
        assert!(matches!("fast".parse::<Rate>(), Err(SpecError::BadRate(_))));
        assert!("1,x".parse::<PayloadSizes>().is_err());
        assert_eq!(
            StreamSpec::new(1, 0, PayloadSizes::fixed(1), Rate::Max),
            Err(SpecError::NoEvents)
        );
        assert!(matches!(
            StreamSpec::new(1, 1, PayloadSizes::fixed(MAX_PAYLOAD_BYTES + 1), Rate::Max),
            Err(SpecError::PayloadTooLarge { .. })
        ));
    }
}
