//! What a reason answers: each constraint of a design (and the evidence itself), named once.

use serde::{Serialize, Serializer};

/// The design constraint a reason answers, or what the results measured of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// One-way or both ways.
    Direction,
    /// Who receives: browsers or services.
    Consumers,
    /// Whether consumers accept inbound HTTP (an endpoint the provider reaches).
    InboundHttp,
    /// What the network passes: upgrades, buffering proxies, only HTTP.
    Network,
    /// Only HTTP/1.1 reaches the consumers.
    Http1,
    /// HTTP/2's multiplexing, where browsers have it.
    Http2,
    /// Several subscriptions per consuming host.
    SubscribersPerHost,
    /// The network cuts idle connections.
    IdleTimeout,
    /// At-least-once delivery: how missed events come back.
    Delivery,
    /// Consumer downtime the results measured.
    DowntimeMeasured,
    /// What the results measured at all.
    Evidence,
    /// The p99 latency budget.
    Latency,
    /// The p99 budget, for a two-way design, as a message's round trip to its room and back.
    RoundTrip,
    /// Every consumer reconnects at once after a deploy or a network blip.
    Storms,
    /// Consumers come and go all the time.
    Churn,
    /// How often events come.
    EventRate,
    /// Memory per connection.
    Memory,
    /// Whether a run of a comparable fan-out and rate exists.
    Regime,
    /// The server CPU budget.
    Cpu,
    /// Wire bandwidth.
    Bandwidth,
    /// Deliveries per second.
    Throughput,
}

impl Constraint {
    /// As written in answers (text and JSON).
    pub fn name(self) -> &'static str {
        match self {
            Constraint::Direction => "direction",
            Constraint::Consumers => "consumers",
            Constraint::InboundHttp => "inbound HTTP",
            Constraint::Network => "network",
            Constraint::Http1 => "HTTP/1.1",
            Constraint::Http2 => "HTTP/2",
            Constraint::SubscribersPerHost => "subscribers per host",
            Constraint::IdleTimeout => "idle timeout",
            Constraint::Delivery => "delivery",
            Constraint::DowntimeMeasured => "downtime (measured)",
            Constraint::Evidence => "evidence",
            Constraint::Latency => "latency",
            Constraint::RoundTrip => "round trip",
            Constraint::Storms => "storms",
            Constraint::Churn => "churn",
            Constraint::EventRate => "event rate",
            Constraint::Memory => "memory",
            Constraint::Regime => "regime",
            Constraint::Cpu => "CPU",
            Constraint::Bandwidth => "bandwidth",
            Constraint::Throughput => "throughput",
        }
    }

    /// Whether it is about what the transport is (the consumers, the direction), not about
    /// figures: what relaxing the design can change.
    pub fn is_hard(self) -> bool {
        matches!(
            self,
            Constraint::Consumers | Constraint::InboundHttp | Constraint::Direction
        )
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}
