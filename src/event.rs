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

use crate::payload::PayloadKind;
use crate::workload::Workload;

/// The largest payload one event may carry. Transports size their frame and body limits from it,
/// so a stream that passes validation fits every transport.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;

/// Room for the JSON envelope around a payload (`seq`, times, field names, quotes).
pub const ENVELOPE_BYTES: usize = 256;

/// The largest encoded event any transport must accept.
pub const MAX_EVENT_BYTES: usize = MAX_PAYLOAD_BYTES + ENVELOPE_BYTES;

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
    /// What the payloads look like (left out when random, so older documents read the same).
    #[serde(default, skip_serializing_if = "PayloadKind::is_random")]
    pub kind: PayloadKind,
    /// The workload's shape (left out for broadcast, so older documents read the same).
    #[serde(default, skip_serializing_if = "is_broadcast")]
    pub workload: Workload,
    /// Streams the global sequence interleaves (1 for broadcast): event `seq` is number
    /// `seq / streams` of stream `seq % streams`. `count` and `rate` are the global ones.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub streams: u64,
}

fn is_broadcast(workload: &Workload) -> bool {
    *workload == Workload::Broadcast
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
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
            kind: PayloadKind::Random,
            workload: Workload::Broadcast,
            streams: 1,
        })
    }

    /// The same stream with payloads of `kind`.
    pub fn with_kind(self, kind: PayloadKind) -> Self {
        Self { kind, ..self }
    }

    /// The global stream of `workload` for `subscribers`, where this spec's count and rate
    /// are each stream's: every stream gets them, so the global count and rate are this
    /// many times the streams.
    pub fn with_workload(self, workload: Workload, subscribers: usize) -> Self {
        let streams = workload.streams(subscribers);
        Self {
            count: self.count * streams,
            rate: match self.rate {
                Rate::PerSecond(rate) => Rate::PerSecond(rate * streams as f64),
                Rate::Max => Rate::Max,
            },
            workload,
            streams,
            ..self
        }
    }

    /// Events in each stream.
    pub fn per_stream(&self) -> u64 {
        self.count / self.streams.max(1)
    }

    /// Each stream's rate: what `--rate` offered (the global rate is this times the streams).
    pub fn per_stream_rate(&self) -> Rate {
        match self.rate {
            Rate::PerSecond(rate) => Rate::PerSecond(rate / self.streams.max(1) as f64),
            Rate::Max => Rate::Max,
        }
    }

    /// Events each subscriber should receive: the whole stream for broadcast, its streams'
    /// events otherwise.
    pub fn deliveries_per_subscriber(&self) -> u64 {
        match self.workload {
            Workload::Broadcast => self.count,
            Workload::Unicast => self.per_stream(),
            Workload::Topics { per_subscriber, .. } => {
                self.per_stream() * u64::from(per_subscriber)
            }
        }
    }

    /// Whether events carry their stream (every shape but broadcast).
    pub fn tagged(&self) -> bool {
        self.workload != Workload::Broadcast
    }

    /// The digest a subscriber of stream `topic` must reach, folding each event's number
    /// within the stream.
    pub fn stream_digest(&self, topic: u32) -> Digest {
        (0..self.per_stream()).fold(Digest::EMPTY, |digest, number| {
            let seq = crate::workload::global_seq(topic, number, self.streams);
            digest.fold(number, self.payload(seq).as_bytes())
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

    /// The payload of event `seq`: bytes of the stream's kind derived from the seed and
    /// sequence number only.
    pub fn payload(&self, seq: u64) -> String {
        let mut state = self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.kind.generate(self.payload.size(seq), &mut state)
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
    /// Position in the stream (the server's global sequence), from 0.
    pub seq: u64,
    /// The stream it belongs to, where the workload has more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<u32>,
    /// Its number within that stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_seq: Option<u64>,
    /// When the schedule said the event should go out (equal to `sent_ns` at an unlimited rate).
    pub scheduled_ns: u64,
    /// When the server actually published it to its transport.
    pub sent_ns: u64,
    /// The payload bytes, as printable text.
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
}

/// Events a server no longer holds, answered to a subscriber that asked to resume from before
/// its replay window: `count` events from sequence number `from` will never arrive. Every
/// transport frames it in its own idiom; the JSON form is `{"gap":{"from":F,"count":N}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The first event missed.
    pub from: u64,
    /// How many events in a row were missed.
    pub count: u64,
}

/// The JSON envelope a gap travels in, so it cannot be mistaken for an event.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GapMessage {
    gap: Gap,
}

impl Gap {
    /// The last event missed: where a subscriber's cursor stands after the gap.
    pub fn last_seq(&self) -> u64 {
        self.from + self.count.max(1) - 1
    }

    /// The gap's JSON form.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising two integers into memory cannot fail.
        serde_json::to_vec(&GapMessage { gap: *self }).unwrap_or_default()
    }

    /// Reads a gap's JSON form; `None` when the bytes are not one (an event, most likely).
    pub fn decode(bytes: &[u8]) -> Option<Gap> {
        // A cheap test first: this runs on the receive path of clients that share one message
        // type between events and gaps.
        if !bytes.starts_with(b"{\"gap\"") {
            return None;
        }
        serde_json::from_slice::<GapMessage>(bytes)
            .ok()
            .map(|m| m.gap)
    }
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
    ///
    /// The canonical form ([`Event::encode`]'s output) is read in place without allocating:
    /// the receive path of every client runs through here millions of times a second. Anything
    /// else (escapes, other field order, whitespace) goes through serde_json, so the answer is
    /// the same either way.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if let Some(event) = Self::decode_canonical(bytes) {
            return Ok(event);
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
    }

    /// `{"seq":N,"scheduled_ns":N,"sent_ns":N,"payload":"TEXT"}` with no escapes in TEXT and
    /// integers as serde_json writes them, or `None`.
    fn decode_canonical(bytes: &'a [u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(b"{\"seq\":")?;
        let (seq, rest) = leading_u64(rest)?;
        // The stream and number, present only where the workload has several streams.
        let (topic, topic_seq, rest) = match rest.strip_prefix(b",\"topic\":") {
            Some(rest) => {
                let (topic, rest) = leading_u64(rest)?;
                let rest = rest.strip_prefix(b",\"topic_seq\":")?;
                let (number, rest) = leading_u64(rest)?;
                (Some(u32::try_from(topic).ok()?), Some(number), rest)
            }
            None => (None, None, rest),
        };
        let rest = rest.strip_prefix(b",\"scheduled_ns\":")?;
        let (scheduled_ns, rest) = leading_u64(rest)?;
        let rest = rest.strip_prefix(b",\"sent_ns\":")?;
        let (sent_ns, rest) = leading_u64(rest)?;
        let rest = rest.strip_prefix(b",\"payload\":\"")?;
        let text = rest.strip_suffix(b"\"}")?;
        // A quote or backslash inside means escapes (or trailing fields): leave it to serde.
        // Control characters must be escaped in JSON, so serde refuses them too. A fold without
        // an early exit, so the compiler checks many bytes per instruction.
        let needs_serde = text.iter().fold(false, |seen, &b| {
            seen | (b == b'"') | (b == b'\\') | (b < 0x20)
        });
        if needs_serde {
            return None;
        }
        let payload = std::str::from_utf8(text).ok()?;
        Some(Event {
            seq,
            topic,
            topic_seq,
            scheduled_ns,
            sent_ns,
            payload: Cow::Borrowed(payload),
        })
    }
}

/// A JSON unsigned integer at the start of `bytes` (no sign, no leading zero, no overflow) and
/// what follows it.
fn leading_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(bytes.len());
    if digits == 0 || digits > 20 || (digits > 1 && bytes[0] == b'0') {
        return None;
    }
    let mut value: u64 = 0;
    if digits == 20 {
        // Only a 20-digit number can overflow a u64: check every step.
        for &digit in &bytes[..20] {
            value = value
                .checked_mul(10)?
                .checked_add(u64::from(digit - b'0'))?;
        }
        return Some((value, &bytes[20..]));
    }
    // Eight digits at a time (timestamps have 13 or more), then the rest one by one.
    let mut at = 0;
    while digits - at >= 8 {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&bytes[at..at + 8]);
        value = value * 100_000_000 + eight_digits(eight);
        at += 8;
    }
    for &digit in &bytes[at..digits] {
        value = value * 10 + u64::from(digit - b'0');
    }
    Some((value, &bytes[digits..]))
}

/// The number eight ASCII digits spell, combined in three multiply-adds (pairs, then fours,
/// then eights) instead of eight dependent ones.
fn eight_digits(ascii: [u8; 8]) -> u64 {
    // The first digit lands in the lowest byte.
    let v = u64::from_le_bytes(ascii) - 0x3030_3030_3030_3030;
    let v = (v.wrapping_mul(10) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v.wrapping_mul(100) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    (v.wrapping_mul(10_000) + (v >> 32)) & 0xffff_ffff
}

/// An order-sensitive digest of a stream: each event folds its sequence number and payload into
/// the digest so far, so a lost, extra or misplaced event changes the result. A [`Tally`] folds
/// what arrived in sequence order, and counts the order it arrived in apart.
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

/// How far ahead of the first missing event an arrival may be and still be tracked exactly, by
/// default: 65,536 events (8 KiB of bits, allocated only once something arrives out of order).
/// Every preset delivers in order or nearly, so none comes close.
pub const DEFAULT_REORDER_WINDOW: u64 = 1 << 16;

/// What one subscriber received, judged against the stream it should have received, in O(1)
/// memory whatever the stream's length.
///
/// Events below a contiguous-prefix cursor have all arrived; a bounded window of bits above it
/// tracks the ones that arrived early. So lost, duplicated and reordered counts are exact for
/// arrivals up to `window` events ahead of the first missing one; an arrival further ahead
/// cannot be remembered and is counted as `beyond_window` instead (it also shows as lost, and
/// the digest, which it does not enter, fails), never silently.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Events the stream has.
    expected: u64,
    /// Every sequence number below this one has arrived.
    contiguous: u64,
    /// Bits for sequence numbers `contiguous .. contiguous + window` that arrived early, at
    /// index `seq % window`; allocated on the first early arrival.
    early: Option<Box<[u64]>>,
    /// How many bits of `early` are set (0: the in-order fast path).
    early_count: u64,
    /// Size of the window, in events (a multiple of 64).
    window: u64,
    /// Highest sequence number received so far; anything lower and new arrived out of order.
    highest: Option<u64>,
    /// The digest of distinct events in sequence order, folded up to the first missing one.
    digest: Digest,
    /// Events that arrived early (past a missing one), kept until the events before them are
    /// in and they can be folded in turn: so a transport that may reorder (a stream per
    /// event) is digested in sequence order, its reordering counted, not failed. Empty while
    /// events arrive in order.
    held: std::collections::BTreeMap<u64, Box<[u8]>>,
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
    /// Arrivals too far ahead of the first missing event to be tracked (see [`Tally`]).
    #[serde(default)]
    pub beyond_window: u64,
    /// Events the server said it no longer holds (a [`Gap`]): missing, and accounted for.
    #[serde(default)]
    pub gapped: u64,
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
    /// Too far ahead of the first missing event to be tracked.
    BeyondWindow,
}

impl Tally {
    /// An empty tally for a stream of `expected` events, with the default reorder window.
    pub fn new(expected: u64) -> Self {
        Self::with_window(expected, DEFAULT_REORDER_WINDOW)
    }

    /// An empty tally that tracks arrivals up to `window` events early (rounded up to 64).
    pub fn with_window(expected: u64, window: u64) -> Self {
        Self {
            expected,
            contiguous: 0,
            early: None,
            early_count: 0,
            window: window.max(1).div_ceil(64) * 64,
            highest: None,
            digest: Digest::EMPTY,
            held: std::collections::BTreeMap::new(),
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
        if seq < self.contiguous {
            self.counts.duplicated += 1;
            return Seen::Duplicate;
        }
        if seq == self.contiguous && self.early_count == 0 {
            // The common case: the next event in order, nothing pending above it.
            self.contiguous += 1;
            self.digest = self.digest.fold(seq, payload);
        } else if seq - self.contiguous >= self.window {
            self.counts.beyond_window += 1;
            return Seen::BeyondWindow;
        } else {
            let in_turn = seq == self.contiguous;
            if !self.mark_early(seq) {
                self.counts.duplicated += 1;
                return Seen::Duplicate;
            }
            if in_turn {
                self.digest = self.digest.fold(seq, payload);
            } else {
                self.held.insert(seq, payload.into());
            }
            self.fold_held();
        }
        self.counts.distinct += 1;
        match self.highest {
            Some(highest) if seq < highest => self.counts.reordered += 1,
            _ => self.highest = Some(seq),
        }
        Seen::New
    }

    /// Folds, in sequence order, every held event the contiguous prefix has now reached.
    fn fold_held(&mut self) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() >= self.contiguous {
                return;
            }
            let (seq, payload) = entry.remove_entry();
            self.digest = self.digest.fold(seq, &payload);
        }
    }

    /// Marks `seq` (within the window) as arrived and moves the contiguous prefix past every
    /// arrived event; `false` if it had already arrived.
    fn mark_early(&mut self, seq: u64) -> bool {
        let words = (self.window / 64) as usize;
        let early = self
            .early
            .get_or_insert_with(|| vec![0u64; words].into_boxed_slice());
        let bit = |seq: u64| (((seq % self.window) / 64) as usize, 1u64 << (seq % 64));
        let (word, mask) = bit(seq);
        if early[word] & mask != 0 {
            return false;
        }
        early[word] |= mask;
        self.early_count += 1;
        // Advance over every event that has now arrived, clearing its bit for reuse.
        loop {
            let (word, mask) = bit(self.contiguous);
            if early[word] & mask == 0 {
                break;
            }
            early[word] &= !mask;
            self.early_count -= 1;
            self.contiguous += 1;
        }
        true
    }

    /// Counts the events of a gap as missing and accounted for: they will never arrive, so the
    /// stream is complete without them. A gap that names events outside the stream is
    /// malformed; events of it that already arrived stay delivered.
    pub fn record_gap(&mut self, gap: Gap) {
        let end = match gap.from.checked_add(gap.count) {
            Some(end) if end <= self.expected => end,
            _ => {
                self.counts.malformed += 1;
                return;
            }
        };
        if gap.from == self.contiguous && self.early_count == 0 {
            // The usual case: the gap starts right after the last event received.
            self.contiguous = end;
            self.counts.gapped += gap.count;
            return;
        }
        for seq in gap.from.max(self.contiguous)..end {
            if seq < self.contiguous {
                continue;
            }
            if seq - self.contiguous >= self.window {
                self.counts.beyond_window += 1;
            } else if self.mark_early(seq) {
                self.counts.gapped += 1;
            }
        }
        // Events held past the gap are in turn now.
        self.fold_held();
    }

    /// Counts a message that could not be decoded as an event.
    pub fn record_malformed(&mut self) {
        self.counts.malformed += 1;
    }

    /// Whether every event of the stream has arrived or was reported gone in a gap.
    pub fn is_complete(&self) -> bool {
        self.counts.distinct + self.counts.gapped == self.expected
    }

    /// Events of the stream never received (arrivals beyond the window and gaps included).
    pub fn lost(&self) -> u64 {
        self.expected - self.counts.distinct
    }

    /// Events missing that no gap accounts for: lost without a word from the server.
    pub fn unexplained_loss(&self) -> u64 {
        self.lost() - self.counts.gapped
    }

    /// When everything up to some event arrived (or was gapped) and nothing after it: how many
    /// events that tail holds. `None` when something arrived past a hole.
    pub fn missing_tail(&self) -> Option<u64> {
        (self.early_count == 0).then(|| self.expected - self.contiguous)
    }

    /// The digest of what arrived, in sequence order (up to the first event still missing).
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
        assert!(a
            .payload(3)
            .bytes()
            .all(|c| crate::payload::RANDOM_ALPHABET.contains(&c)));
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
            topic: None,
            topic_seq: None,
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
        // An event of one stream of several says which, and its number there.
        let tagged = Event {
            topic: Some(2),
            topic_seq: Some(1),
            ..e.clone()
        };
        let bytes = tagged.encode();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"seq":5,"topic":2,"topic_seq":1,"scheduled_ns":10,"sent_ns":12,"payload":"abc"}"#
        );
        assert!(matches!(Event::decode_canonical(&bytes), Some(ref d) if *d == tagged));
        assert!(Event::decode(b"{\"seq\":1}").is_err());
        assert!(Event::decode(b"\xff\x00garbage").is_err());
    }

    /// The in-place reader and serde_json agree on every input: canonical ones are borrowed,
    /// others (escapes, spacing, field order, leading zeros, overflow, bad UTF-8) fall back
    /// and decode, or fail, exactly as serde_json does.
    #[test]
    fn canonical_reader_agrees_with_serde() {
        let cases: &[&[u8]] = &[
            br#"{"seq":5,"scheduled_ns":10,"sent_ns":12,"payload":"abc"}"#,
            br#"{"seq":0,"scheduled_ns":0,"sent_ns":0,"payload":""}"#,
            br#"{"seq":7,"topic":1,"topic_seq":2,"scheduled_ns":0,"sent_ns":0,"payload":"x"}"#,
            br#"{"seq":7,"topic":4294967296,"topic_seq":2,"scheduled_ns":0,"sent_ns":0,"payload":"x"}"#,
            br#"{"seq":7,"topic":1,"scheduled_ns":0,"sent_ns":0,"payload":"x"}"#,
            br#"{"seq":18446744073709551615,"scheduled_ns":1,"sent_ns":2,"payload":"x"}"#,
            br#"{"seq":18446744073709551616,"scheduled_ns":1,"sent_ns":2,"payload":"x"}"#,
            br#"{"seq":99999999999999999999,"scheduled_ns":1,"sent_ns":2,"payload":"x"}"#,
            br#"{"seq":1234567890123456789,"scheduled_ns":98765432,"sent_ns":9876543210987,"payload":"x"}"#,
            br#"{"seq":05,"scheduled_ns":10,"sent_ns":12,"payload":"abc"}"#,
            br#"{"seq":5,"scheduled_ns":10,"sent_ns":12,"payload":"a"b"}"#,
            br#"{"seq":5,"scheduled_ns":10,"sent_ns":12,"payload":"aAb"}"#,
            br#"{"seq":5, "scheduled_ns":10,"sent_ns":12,"payload":"abc"}"#,
            br#"{"sent_ns":12,"seq":5,"scheduled_ns":10,"payload":"abc"}"#,
            br#"{"seq":5,"scheduled_ns":10,"sent_ns":12,"payload":"abc","x":1}"#,
            br#"{"seq":5,"scheduled_ns":10,"sent_ns":12,"payload":"abc"}x"#,
            br#"{"seq":-5,"scheduled_ns":10,"sent_ns":12,"payload":"abc"}"#,
            b"{\"seq\":5,\"scheduled_ns\":10,\"sent_ns\":12,\"payload\":\"a\xffb\"}",
            b"{\"seq\":5,\"scheduled_ns\":10,\"sent_ns\":12,\"payload\":\"a\x01b\"}",
        ];
        for case in cases {
            let serde: Result<Event<'_>, _> = serde_json::from_slice(case);
            let ours = Event::decode(case);
            assert_eq!(ours.ok(), serde.ok(), "{}", String::from_utf8_lossy(case));
        }
        let canonical = br#"{"seq":5,"scheduled_ns":10,"sent_ns":12,"payload":"abc"}"#;
        assert!(matches!(
            Event::decode(canonical).unwrap().payload,
            Cow::Borrowed(_)
        ));
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

        // Digested in sequence order: the reordering is counted, the content still checked.
        let reordered = send(&[0, 2, 3, 1]);
        assert_eq!(reordered.counts().reordered, 1);
        assert!(reordered.is_complete());
        assert_eq!(reordered.digest(), s.digest());
        let mut garbled = Tally::new(s.count);
        for q in [0, 2, 3, 1] {
            let payload = if q == 2 {
                "12345678".into()
            } else {
                s.payload(q)
            };
            garbled.record(q, payload.as_bytes());
        }
        assert_ne!(
            garbled.digest(),
            s.digest(),
            "an early event is digested as it came"
        );

        let mut t = Tally::new(4);
        assert_eq!(t.record(9, b""), Seen::OutOfRange);
        assert_eq!(t.counts().malformed, 1);
    }

    /// A gap completes the stream without its events: they count as lost and accounted for,
    /// never as delivered, and a gap past the stream's end is malformed.
    #[test]
    fn gaps_are_lost_and_accounted_for() {
        let mut tally = Tally::new(10);
        for seq in 0..3 {
            tally.record(seq, b"x");
        }
        let gap = Gap { from: 3, count: 4 };
        assert_eq!(Gap::decode(&gap.encode()), Some(gap));
        assert_eq!(Gap::decode(b"{\"seq\":3}"), None);
        assert_eq!(gap.last_seq(), 6);
        tally.record_gap(gap);
        assert!(!tally.is_complete());
        for seq in 7..10 {
            tally.record(seq, b"x");
        }
        assert!(tally.is_complete());
        assert_eq!((tally.lost(), tally.counts().gapped), (4, 4));
        assert_eq!(tally.unexplained_loss(), 0);
        assert_eq!(tally.counts().reordered, 0);
        tally.record_gap(Gap { from: 8, count: 5 });
        assert_eq!(tally.counts().malformed, 1);

        // A gap that arrives after a later event still counts each missing event once.
        let mut late = Tally::new(10);
        late.record(0, b"x");
        late.record(5, b"x");
        late.record_gap(Gap { from: 1, count: 6 });
        assert_eq!(late.counts().gapped, 5);
        // Events 7, 8 and 9 neither arrived nor were named in a gap.
        assert_eq!(late.unexplained_loss(), 3);
    }

    /// Planted loss, duplicates and reordering are counted exactly inside the window, and an
    /// arrival past it is counted as `beyond_window`, never silently dropped.
    #[test]
    fn windowed_tally_is_exact_inside_and_counts_beyond() {
        let s = spec(1000, "4");
        let mut t = Tally::with_window(s.count, 64);
        // 0..100 with 10..20 arriving after 20..40, 50 twice, 60 never.
        let mut order: Vec<u64> = (0..10).chain(20..40).chain(10..20).chain(40..100).collect();
        order.retain(|&q| q != 60);
        order.insert(45, 50);
        for &q in &order {
            t.record(q, s.payload(q).as_bytes());
        }
        let c = t.counts().clone();
        assert_eq!(c.distinct, 99);
        assert_eq!(c.duplicated, 1);
        // 10..20 each arrived after 39, and 45..50 after the early 50.
        assert_eq!(c.reordered, 15);
        assert_eq!(c.beyond_window, 0);
        assert_eq!(t.lost(), 901);
        // 60 is missing, so the window spans 60..124: 123 fits, 124 does not.
        assert_eq!(t.record(123, s.payload(123).as_bytes()), Seen::New);
        assert_eq!(t.record(124, s.payload(124).as_bytes()), Seen::BeyondWindow);
        assert_eq!(t.counts().beyond_window, 1);
        // Once 60 arrives the prefix moves past everything that had arrived.
        assert_eq!(t.record(60, s.payload(60).as_bytes()), Seen::New);
        assert_eq!(t.record(99, s.payload(99).as_bytes()), Seen::Duplicate);
        assert_eq!(t.record(123, s.payload(123).as_bytes()), Seen::Duplicate);
        assert_eq!(t.counts().distinct, 101);
    }

    /// A tally holds no per-event memory in order, and a bounded window out of order, however
    /// long the stream.
    #[test]
    fn tally_memory_does_not_grow_with_the_stream() {
        let mut t = Tally::new(u64::MAX / 2);
        for q in 0..100_000 {
            t.record(q, b"");
        }
        assert!(t.early.is_none());
        t.record(100_001, b"");
        assert_eq!(t.early.as_ref().map(|w| w.len()), Some(1024));
        assert_eq!(t.counts().distinct, 100_001);
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
