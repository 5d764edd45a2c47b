//! What payload bytes look like: random printable text (the default; compresses about as badly
//! as encrypted data) or structured JSON shaped like a real event (compresses as real events
//! do). Both are pure functions of a 64-bit state drawn from the seed and sequence number, and
//! both give exactly the size asked for, so the digest rules and payload sizes are the same.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Characters a random payload is drawn from: printable, and needing no escape in JSON, SSE or
/// URLs, so every transport carries the payload bytes unchanged.
pub const RANDOM_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// What payloads look like.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// Printable characters drawn at random: no structure for a compressor to find.
    #[default]
    Random,
    /// Compact JSON like an order-update event (type, id, account, line items, a note) drawn
    /// from small vocabularies: the structure and repetition real events have. Its quotes must
    /// be escaped inside the event's JSON, so every transport is checked carrying escapes.
    Json,
}

impl PayloadKind {
    /// Whether this is the default (left out of documents, so older ones read the same).
    pub fn is_random(&self) -> bool {
        *self == PayloadKind::Random
    }

    /// `len` bytes of this kind, drawn from `state`.
    pub fn generate(self, len: usize, state: &mut u64) -> String {
        match self {
            PayloadKind::Random => random_text(len, state),
            PayloadKind::Json => json_event(len, state),
        }
    }
}

impl FromStr for PayloadKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "random" => Ok(PayloadKind::Random),
            "json" => Ok(PayloadKind::Json),
            other => Err(format!(
                "unknown payload kind {other:?}: expected random or json"
            )),
        }
    }
}

impl fmt::Display for PayloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadKind::Random => "random",
            PayloadKind::Json => "json",
        })
    }
}

/// splitmix64: a tiny, well-known generator; good enough to make payloads look random and cheap
/// enough that generating them never limits the publisher.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn random_text(len: usize, state: &mut u64) -> String {
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        // Each 64-bit draw yields ten 6-bit characters.
        let mut word = splitmix64(state);
        for _ in 0..10.min(len - bytes.len()) {
            bytes.push(RANDOM_ALPHABET[(word & 63) as usize]);
            word >>= 6;
        }
    }
    // Every byte comes from the ASCII alphabet above.
    String::from_utf8(bytes).unwrap_or_default()
}

const EVENT_TYPES: &[&str] = &[
    "order.created",
    "order.updated",
    "order.paid",
    "order.shipped",
    "invoice.finalized",
    "customer.updated",
];
const NAMES: &[&str] = &[
    "Ada Lovelace",
    "Grace Hopper",
    "Alan Turing",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Donald Knuth",
    "Frances Allen",
    "Ken Thompson",
];
const PLANS: &[&str] = &["free", "starter", "pro", "enterprise"];
const REGIONS: &[&str] = &["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1"];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP"];
const WORDS: &[&str] = &[
    "please",
    "leave",
    "the",
    "parcel",
    "at",
    "front",
    "door",
    "ring",
    "twice",
    "gift",
    "wrap",
    "deliver",
    "after",
    "six",
    "call",
    "on",
    "arrival",
    "back",
    "office",
    "reception",
];

/// One of `list`, chosen by `value`.
fn pick(list: &[&'static str], value: u64) -> &'static str {
    list[(value % list.len() as u64) as usize]
}

/// The shortest JSON document the generator writes: `{"note":""}`. Below it, a number.
const SMALLEST_DOCUMENT: usize = 11;

/// A JSON event of exactly `len` bytes: fields are added while they fit, then a `note` of words
/// fills the rest to the byte. Below [`SMALLEST_DOCUMENT`] bytes, a JSON number of that many
/// digits (and nothing at all for 0).
fn json_event(len: usize, state: &mut u64) -> String {
    let mut draw = || splitmix64(state);
    if len < SMALLEST_DOCUMENT {
        // No leading zero: a JSON number does not allow one.
        return (0..len)
            .map(|i| {
                let digit = if i == 0 { 1 + draw() % 9 } else { draw() % 10 };
                char::from(b'0' + digit as u8)
            })
            .collect();
    }
    let fields = [
        format!("\"type\":\"{}\"", pick(EVENT_TYPES, draw())),
        format!("\"id\":\"evt_{:012x}\"", draw() & 0xffff_ffff_ffff),
        format!(
            "\"account\":{{\"id\":{},\"name\":\"{}\",\"plan\":\"{}\",\"region\":\"{}\"}}",
            10_000 + draw() % 90_000,
            pick(NAMES, draw()),
            pick(PLANS, draw()),
            pick(REGIONS, draw())
        ),
    ];
    let currency = pick(CURRENCIES, draw());
    // `{`, fields each with its comma, then `"note":"` + text + `"}`: room for the note first.
    let room_after = |doc: usize| len.saturating_sub(doc + SMALLEST_DOCUMENT - 1);
    let mut doc = String::with_capacity(len);
    doc.push('{');
    for field in fields {
        if field.len() < room_after(doc.len()) {
            doc.push_str(&field);
            doc.push(',');
        }
    }
    // Line items while they fit: most of a large payload, as in real order events.
    let items_open = "\"items\":[";
    if items_open.len() + 2 <= room_after(doc.len()) {
        let mut items = String::from(items_open);
        loop {
            let value = draw();
            let item = format!(
                "{{\"sku\":\"SKU-{:04}\",\"qty\":{},\"unit_price\":{},\"currency\":\"{currency}\"}}",
                value % 10_000,
                1 + (value >> 20) % 5,
                99 + (value >> 32) % 50_000,
            );
            let comma = usize::from(!items.ends_with('['));
            // The item, its comma, `],` after it.
            if items.len() + comma + item.len() + 2 > room_after(doc.len()) {
                break;
            }
            if comma == 1 {
                items.push(',');
            }
            items.push_str(&item);
        }
        items.push_str("],");
        doc.push_str(&items);
    }
    // The note fills the rest exactly.
    doc.push_str("\"note\":\"");
    let text_len = len - doc.len() - 2;
    let mut text = String::with_capacity(text_len + 12);
    while text.len() < text_len {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(pick(WORDS, draw()));
    }
    text.truncate(text_len);
    doc.push_str(&text);
    doc.push_str("\"}");
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size comes out exactly, as valid JSON (from 1 byte up), the same for the same state.
    #[test]
    fn json_payloads_are_exact_valid_and_deterministic() {
        for len in (0..300).chain([1000, 4096, 65_536]) {
            let text = PayloadKind::Json.generate(len, &mut 7);
            assert_eq!(text.len(), len, "{text}");
            if len > 0 {
                serde_json::from_str::<serde_json::Value>(&text)
                    .unwrap_or_else(|e| panic!("{len} B is not JSON ({e}): {text}"));
            }
            assert_eq!(text, PayloadKind::Json.generate(len, &mut 7));
        }
        assert_ne!(
            PayloadKind::Json.generate(200, &mut 7),
            PayloadKind::Json.generate(200, &mut 8)
        );
    }

    /// A large JSON payload is mostly line items, which is what makes it compress.
    #[test]
    fn large_json_payloads_are_structured() {
        let text = PayloadKind::Json.generate(4096, &mut 1);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(value["items"].as_array().unwrap().len() > 20, "{text}");
        assert!(value["type"].as_str().unwrap().contains('.'));
    }

    #[test]
    fn kinds_parse_and_show() {
        for kind in [PayloadKind::Random, PayloadKind::Json] {
            assert_eq!(kind.to_string().parse::<PayloadKind>(), Ok(kind));
        }
        assert!("xml"
            .parse::<PayloadKind>()
            .unwrap_err()
            .contains("random or json"));
    }
}
