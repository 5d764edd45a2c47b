//! Two-way traffic on the load side: what each subscriber sends up (its [`Plan`]), what copies
//! of everyone's messages it must get back in its rooms, and its ledger of those copies (each
//! once, and each sender's in the order sent), with the round trip of its own.

use std::collections::HashMap;

use crate::event::StreamSpec;
use crate::settings::SettingValues;
use crate::transport::upstream::{per_sender, UPSTREAM_ECHO, UPSTREAM_RATE};
use crate::upstream::{CopyCounts, Message, Plan};
use crate::workload::Workload;

/// The run's two-way traffic, shared by its subscribers.
#[derive(Clone, Debug, PartialEq)]
pub struct TwoWayPlan {
    /// Messages per second per subscriber.
    pub rate: f64,
    /// Messages each subscriber sends.
    pub per_sender: u64,
    /// Whether the server copies each message to its room.
    pub echo: bool,
    /// With the echo on: copies each room gets over the run (one room for a broadcast).
    room_copies: Vec<u64>,
    /// Subscribers of the run, whose senders are spread over one interval.
    population: usize,
}

impl TwoWayPlan {
    /// The plan `settings` ask for over `spec`'s stream, for `population` subscribers in the
    /// rooms its workload draws; `None` when nobody sends up.
    pub fn of(spec: &StreamSpec, settings: &SettingValues, population: usize) -> Option<Self> {
        let rate = settings.get(&UPSTREAM_RATE).ok().flatten().unwrap_or(0.0);
        if rate <= 0.0 {
            return None;
        }
        let per_sender = per_sender(rate, spec);
        let echo = settings.get(&UPSTREAM_ECHO).ok().flatten().unwrap_or(false);
        let mut plan = Self {
            rate,
            per_sender,
            echo,
            room_copies: Vec::new(),
            population: population.max(1),
        };
        if echo {
            // Every sender's messages go to its rooms in turn: count what lands in each.
            let rooms = if spec.workload == Workload::Broadcast {
                1
            } else {
                spec.streams.max(1) as usize
            };
            plan.room_copies = vec![0; rooms];
            for index in 0..population {
                let sender = plan.sender(index, spec.workload.topics_of(index, spec.seed));
                match sender.topics.as_deref() {
                    None | Some([]) => plan.room_copies[0] += per_sender,
                    Some(topics) => {
                        for seq in 0..per_sender {
                            let room = topics[(seq % topics.len() as u64) as usize] as usize;
                            if let Some(copies) = plan.room_copies.get_mut(room) {
                                *copies += 1;
                            }
                        }
                    }
                }
            }
        }
        Some(plan)
    }

    /// What subscriber `index`, in `topics`, sends: its phase is its place in the population.
    pub fn sender(&self, index: usize, topics: Option<Vec<u32>>) -> Plan {
        let interval_ns = 1e9 / self.rate;
        let place = (index % self.population) as f64 / self.population as f64;
        Plan {
            from: index as u64,
            rate: self.rate,
            count: self.per_sender,
            phase_ns: (interval_ns * place) as u64,
            echo: self.echo,
            topics,
        }
    }

    /// An empty ledger of the copies subscriber `index`, in `topics`, must get back.
    pub fn ledger(&self, index: usize, topics: Option<&[u32]>) -> CopyLedger {
        let expected = if !self.echo {
            0
        } else {
            match topics {
                None => self.room_copies.iter().sum(),
                Some(topics) => topics
                    .iter()
                    .filter_map(|&t| self.room_copies.get(t as usize))
                    .sum(),
            }
        };
        CopyLedger {
            me: index as u64,
            counts: CopyCounts {
                expected,
                own_expected: if self.echo { self.per_sender } else { 0 },
                ..CopyCounts::default()
            },
            last_seq: HashMap::new(),
        }
    }
}

/// What kind of copy arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyKind {
    /// The subscriber's own message, back: its round trip is timed.
    Own,
    /// Someone else's message in one of its rooms.
    Other,
    /// A copy not after the last one from the same sender: a duplicate or out of order.
    Disordered,
}

/// One subscriber's ledger of copies: counts, and the last message number seen per sender.
#[derive(Clone, Debug)]
pub struct CopyLedger {
    me: u64,
    counts: CopyCounts,
    last_seq: HashMap<u64, u64>,
}

impl CopyLedger {
    /// Counts one copy.
    pub fn record(&mut self, message: &Message<'_>) -> CopyKind {
        self.counts.received += 1;
        let in_order = match self.last_seq.insert(message.from, message.seq) {
            Some(last) => message.seq > last,
            None => true,
        };
        if !in_order {
            self.counts.disordered += 1;
            return CopyKind::Disordered;
        }
        if message.from == self.me {
            self.counts.own_received += 1;
            CopyKind::Own
        } else {
            CopyKind::Other
        }
    }

    /// Whether every copy it must get has come.
    pub fn is_complete(&self) -> bool {
        self.counts.received >= self.counts.expected
    }

    /// Its counts.
    pub fn counts(&self) -> &CopyCounts {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Rate;

    fn spec(workload: Workload, subscribers: usize) -> StreamSpec {
        StreamSpec::new(
            1,
            100,
            crate::event::PayloadSizes::fixed(16),
            Rate::PerSecond(50.0),
        )
        .unwrap()
        .with_workload(workload, subscribers)
    }

    fn settings(rate: &str, echo: &str) -> SettingValues {
        SettingValues::from_pairs([
            ("upstream-rate".to_string(), rate.to_string()),
            ("upstream-echo".to_string(), echo.to_string()),
        ])
    }

    /// In a broadcast every subscriber gets every sender's copies; in rooms, its rooms' only,
    /// and the copies over all rooms are every message once.
    #[test]
    fn copies_expected_follow_the_rooms() {
        let broadcast = TwoWayPlan::of(&spec(Workload::Broadcast, 4), &settings("5", "on"), 4);
        let broadcast = broadcast.unwrap();
        // 2 s of stream at 5 messages a second.
        assert_eq!(broadcast.per_sender, 10);
        assert_eq!(broadcast.ledger(0, None).counts().expected, 40);

        let rooms = Workload::Topics {
            topics: 3,
            per_subscriber: 1,
            membership: crate::workload::Membership::Uniform,
        };
        let spec = spec(rooms, 9);
        let plan = TwoWayPlan::of(&spec, &settings("5", "on"), 9).unwrap();
        let mut total = 0;
        for index in 0..9 {
            let topics = spec.workload.topics_of(index, spec.seed);
            let ledger = plan.ledger(index, topics.as_deref());
            // Its own room holds its own messages at least.
            assert!(ledger.counts().expected >= 10);
            total += ledger.counts().expected;
        }
        // Each room's copies reach each of its members.
        let members: Vec<u64> = (0..3)
            .map(|room| {
                (0..9)
                    .filter(|&i| {
                        spec.workload
                            .topics_of(i, spec.seed)
                            .unwrap()
                            .contains(&room)
                    })
                    .count() as u64
            })
            .collect();
        let expected: u64 = members.iter().map(|m| m * m * 10).sum();
        assert_eq!(total, expected);
        assert!(TwoWayPlan::of(&spec, &settings("0", "on"), 9).is_none());
    }

    /// A duplicate and an out-of-order copy are counted; the own copy is told apart.
    #[test]
    fn the_copy_ledger_counts_disorder() {
        let plan = TwoWayPlan::of(&spec(Workload::Broadcast, 2), &settings("1", "on"), 2).unwrap();
        let mut ledger = plan.ledger(1, None);
        let message = |from: u64, seq: u64| plan.sender(from as usize, None).message(seq, 0);
        let mut kinds = Vec::new();
        for (from, seq) in [(0, 0), (1, 0), (0, 1), (0, 1), (1, 1)] {
            let bytes = message(from, seq);
            kinds.push(ledger.record(&Message::decode(&bytes).unwrap()));
        }
        assert_eq!(
            kinds,
            [
                CopyKind::Other,
                CopyKind::Own,
                CopyKind::Other,
                CopyKind::Disordered,
                CopyKind::Own
            ]
        );
        assert_eq!(ledger.counts().disordered, 1);
        assert!(!ledger.counts().is_exact());
    }
}
