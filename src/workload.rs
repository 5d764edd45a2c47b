//! The workload's shape: which streams a server publishes and which of them each subscriber
//! follows. Broadcast is one stream for all; topics are rooms (each subscriber joins a few,
//! drawn uniformly or by Zipf so room sizes are skewed); unicast is one stream per subscriber.
//!
//! A server publishes one global sequence. With `K` streams, event `seq` belongs to stream
//! `seq % K` and is number `seq / K` of it, so every stream gets the same rate and the global
//! stream interleaves them; no table is needed to route or to check an event.

use std::fmt;

use rand::seq::IndexedRandom as _;
use rand::SeedableRng as _;
use serde::{Deserialize, Serialize};

/// How room membership is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Membership {
    /// Every topic as likely as every other: rooms about the same size.
    Uniform,
    /// Topic `k` (from 0) weighted `1 / (k + 1)^s`: a few big rooms, many small ones.
    Zipf(f64),
    /// Dealt in turn, not drawn: subscriber `i` joins topics `i·M, i·M + 1, ...` (mod the
    /// topics), so every room holds the same number of members (rooms of exactly 8 for 8 times
    /// as many subscribers as topics, one each), as a game's lobbies are filled.
    Even,
}

impl Membership {
    /// The text form: `uniform`, `even` or `zipf:S`.
    pub fn show(&self) -> String {
        match self {
            Membership::Uniform => "uniform".into(),
            Membership::Even => "even".into(),
            Membership::Zipf(s) => format!("zipf:{s}"),
        }
    }

    /// Reads `uniform`, `even` or `zipf:S` (S a positive number).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "uniform" => Ok(Membership::Uniform),
            None if text == "even" => Ok(Membership::Even),
            Some(("zipf", s)) => match s.parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 => Ok(Membership::Zipf(s)),
                _ => Err(format!(
                    "membership {text:?}: the Zipf exponent must be a positive number (zipf:1.0)"
                )),
            },
            _ => Err(format!(
                "membership {text:?}: expected `uniform`, `even` or `zipf:S` (such as zipf:1.0)"
            )),
        }
    }

    /// The weight of topic `k`.
    fn weight(&self, k: u32) -> f64 {
        match self {
            Membership::Uniform | Membership::Even => 1.0,
            Membership::Zipf(s) => 1.0 / f64::from(k + 1).powf(*s),
        }
    }
}

impl From<Membership> for String {
    fn from(m: Membership) -> String {
        m.show()
    }
}

impl TryFrom<String> for Membership {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Membership::parse(&text)
    }
}

/// The shape of what the server sends to whom.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "kebab-case")]
pub enum Workload {
    /// One stream, every event to every subscriber.
    #[default]
    Broadcast,
    /// `topics` streams (rooms, channels); each subscriber follows `per_subscriber` of them.
    Topics {
        /// Streams published.
        topics: u32,
        /// Streams each subscriber joins.
        per_subscriber: u32,
        /// How each subscriber's topics are drawn.
        membership: Membership,
    },
    /// One stream per subscriber: subscriber `i` follows stream `i` alone.
    Unicast,
}

impl Workload {
    /// The shape's name: `broadcast`, `topics` or `unicast`.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Broadcast => "broadcast",
            Workload::Topics { .. } => "topics",
            Workload::Unicast => "unicast",
        }
    }

    /// Reads a shape and its parameters as flags and scenario files give them; a parameter
    /// the shape does not take is refused rather than ignored.
    pub fn parse(
        shape: &str,
        topics: Option<u32>,
        per_subscriber: Option<u32>,
        membership: Option<&str>,
    ) -> Result<Self, String> {
        let unused = |shape: &str| -> Result<(), String> {
            match (topics, per_subscriber, membership) {
                (None, None, None) => Ok(()),
                _ => Err(format!(
                    "--workload {shape} takes no --topics, --topics-per-subscriber or \
                     --membership (they shape `topics`)"
                )),
            }
        };
        match shape {
            "broadcast" => unused(shape).map(|()| Workload::Broadcast),
            "unicast" => unused(shape).map(|()| Workload::Unicast),
            "topics" => {
                let topics = topics.ok_or("--workload topics needs --topics K (how many rooms)")?;
                let per_subscriber = per_subscriber.unwrap_or(1);
                if topics == 0 {
                    return Err("--topics must be at least 1".into());
                }
                if per_subscriber == 0 || per_subscriber > topics {
                    return Err(format!(
                        "--topics-per-subscriber must be from 1 to --topics ({topics}), got \
                         {per_subscriber}"
                    ));
                }
                let membership = membership
                    .map(Membership::parse)
                    .transpose()?
                    .unwrap_or(Membership::Uniform);
                Ok(Workload::Topics {
                    topics,
                    per_subscriber,
                    membership,
                })
            }
            other => Err(format!(
                "--workload {other:?}: expected broadcast, topics or unicast"
            )),
        }
    }

    /// The parameters as `(name, text)` pairs, for the row key (none for broadcast and
    /// unicast).
    pub fn params(&self) -> Vec<(String, String)> {
        match self {
            Workload::Topics {
                topics,
                per_subscriber,
                membership,
            } => vec![
                ("topics".into(), topics.to_string()),
                ("topics-per-subscriber".into(), per_subscriber.to_string()),
                ("membership".into(), membership.show()),
            ],
            _ => Vec::new(),
        }
    }

    /// How many streams the server publishes for `subscribers` subscribers.
    pub fn streams(&self, subscribers: usize) -> u64 {
        match self {
            Workload::Broadcast => 1,
            Workload::Topics { topics, .. } => u64::from(*topics),
            Workload::Unicast => subscribers.max(1) as u64,
        }
    }

    /// The streams subscriber `index` follows, ascending (`None`: the one broadcast stream,
    /// which needs no subscription). Drawn from `seed` and the index alone, so the same seed
    /// gives the same rooms on every run and in every process.
    pub fn topics_of(&self, index: usize, seed: u64) -> Option<Vec<u32>> {
        match self {
            Workload::Broadcast => None,
            Workload::Unicast => Some(vec![index as u32]),
            Workload::Topics {
                topics,
                per_subscriber,
                membership,
            } if *membership == Membership::Even => {
                let first = (index as u64) * u64::from(*per_subscriber);
                let mut dealt: Vec<u32> = (0..u64::from(*per_subscriber))
                    .map(|j| ((first + j) % u64::from((*topics).max(1))) as u32)
                    .collect();
                dealt.sort_unstable();
                dealt.dedup();
                Some(dealt)
            }
            Workload::Topics {
                topics,
                per_subscriber,
                membership,
            } => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(
                    seed ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93),
                );
                let all: Vec<u32> = (0..*topics).collect();
                let mut chosen: Vec<u32> = all
                    .choose_multiple_weighted(&mut rng, *per_subscriber as usize, |&k| {
                        membership.weight(k)
                    })
                    // Weights are positive and finite: the draw cannot fail.
                    .map(|drawn| drawn.copied().collect())
                    .unwrap_or_else(|_| all[..*per_subscriber as usize].to_vec());
                chosen.sort_unstable();
                Some(chosen)
            }
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Topics {
                topics,
                per_subscriber,
                membership,
            } => write!(
                f,
                "topics ({topics} topics, {per_subscriber} per subscriber, {})",
                membership.show()
            ),
            other => f.write_str(other.name()),
        }
    }
}

/// Where one event of the global sequence belongs: its stream and its number in it.
pub fn place(seq: u64, streams: u64) -> (u32, u64) {
    let streams = streams.max(1);
    ((seq % streams) as u32, seq / streams)
}

/// The global sequence number of event `number` of stream `topic`.
pub fn global_seq(topic: u32, number: u64, streams: u64) -> u64 {
    number * streams.max(1) + u64::from(topic)
}

/// The streams a subscription named, as a query or message gives them: `1,5,9`, checked by
/// [`check_topics`].
pub fn parse_topics(text: &str, streams: u64) -> Result<Vec<u32>, String> {
    let topics = text
        .split(',')
        .map(|part| {
            part.trim()
                .parse()
                .map_err(|_| format!("topic {part:?} is not a stream number"))
        })
        .collect::<Result<Vec<u32>, String>>()?;
    check_topics(topics, streams)
}

/// A subscription's streams, ascending and none twice, each below `streams` (one past the
/// last is refused with the streams there are).
pub fn check_topics(mut topics: Vec<u32>, streams: u64) -> Result<Vec<u32>, String> {
    if let Some(&past) = topics.iter().find(|&&t| u64::from(t) >= streams) {
        return Err(format!(
            "topic {past} does not exist: this server publishes streams 0 to {}",
            streams.saturating_sub(1)
        ));
    }
    topics.sort_unstable();
    topics.dedup();
    Ok(topics)
}

/// The text form of a subscription's streams: `1,5,9`.
pub fn show_topics(topics: &[u32]) -> String {
    let shown: Vec<String> = topics.iter().map(u32::to_string).collect();
    shown.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed draws the same rooms; another seed, others; each within range.
    #[test]
    fn membership_is_deterministic() {
        let rooms = Workload::Topics {
            topics: 100,
            per_subscriber: 3,
            membership: Membership::Zipf(1.0),
        };
        let draw = |seed| -> Vec<Vec<u32>> {
            (0..50).map(|i| rooms.topics_of(i, seed).unwrap()).collect()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        for topics in draw(7) {
            assert_eq!(topics.len(), 3);
            assert!(topics.windows(2).all(|w| w[0] < w[1]) && topics[2] < 100);
        }
    }

    /// Even membership deals rooms in turn: every room the same size, each subscriber's rooms
    /// distinct.
    #[test]
    fn even_membership_fills_rooms_alike() {
        let w = Workload::Topics {
            topics: 4,
            per_subscriber: 2,
            membership: Membership::Even,
        };
        let mut sizes = [0; 4];
        for i in 0..16 {
            let rooms = w.topics_of(i, 7).unwrap();
            assert_eq!(rooms.len(), 2);
            for r in rooms {
                sizes[r as usize] += 1;
            }
        }
        assert_eq!(sizes, [8; 4]);
        assert_eq!(Membership::parse("even"), Ok(Membership::Even));
    }

    /// Zipf membership skews room sizes: the first room is far fuller than the median one.
    #[test]
    fn zipf_skews_rooms() {
        let rooms = Workload::Topics {
            topics: 100,
            per_subscriber: 1,
            membership: Membership::Zipf(1.0),
        };
        let mut sizes = [0u32; 100];
        for i in 0..5000 {
            sizes[rooms.topics_of(i, 1).unwrap()[0] as usize] += 1;
        }
        let mut sorted = sizes;
        sorted.sort_unstable();
        assert!(sizes[0] > 10 * sorted[50].max(1), "{sizes:?}");
    }

    /// Events interleave their streams; placing and numbering round-trip.
    #[test]
    fn streams_interleave() {
        assert_eq!(place(7, 3), (1, 2));
        assert_eq!(global_seq(1, 2, 3), 7);
        assert_eq!(place(7, 1), (0, 7));
    }

    /// Shapes parse with their parameters; a parameter a shape does not take is refused.
    #[test]
    fn shapes_parse() {
        assert_eq!(
            Workload::parse("topics", Some(10), Some(2), Some("zipf:1.5")).unwrap(),
            Workload::Topics {
                topics: 10,
                per_subscriber: 2,
                membership: Membership::Zipf(1.5)
            }
        );
        assert!(Workload::parse("unicast", Some(3), None, None)
            .unwrap_err()
            .contains("takes no"));
        assert!(Workload::parse("topics", Some(2), Some(3), None)
            .unwrap_err()
            .contains("from 1 to"));
        assert!(Workload::parse("rooms", None, None, None).is_err());
        assert!(parse_topics("1,x", 4).unwrap_err().contains("\"x\""));
        assert!(parse_topics("4", 4).unwrap_err().contains("does not exist"));
        assert_eq!(parse_topics("3,1,3", 4).unwrap(), vec![1, 3]);
    }
}
