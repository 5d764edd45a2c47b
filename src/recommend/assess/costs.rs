//! What a design would cost over a transport, estimated from measured figures: latency, server
//! CPU, bandwidth, memory held and requests, each for the whole design. They rank the
//! transports that fit; the rules that use them live in `rules`.

use super::super::design::Design;
use super::Facts;
use crate::transport::Requests;

/// The figures that rank fitting transports, each for the whole design; `None` where not
/// measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Costs {
    /// p99 latency, us.
    pub p99_us: Option<f64>,
    /// Server CPU, cores.
    pub cpu_cores: Option<f64>,
    /// Wire bandwidth, bytes/s.
    pub wire_bytes_per_s: Option<f64>,
    /// Memory the server holds, bytes.
    pub memory_bytes: Option<f64>,
    /// Requests the server answers (or makes) per second.
    pub requests_per_s: Option<f64>,
}

impl Costs {
    /// Each cost with the amount below which it hardly matters to the design: a twentieth of
    /// the latency budget, a twentieth of a core, 1 MB/s, 100 MB held, 100 requests/s.
    /// Differences within those count for little, so a design with ten subscribers is not
    /// ranked by memory it will never miss. Paired here, by name, so no cost meets another's
    /// floor.
    pub fn with_floors(&self, design: &Design) -> [(Option<f64>, f64); 5] {
        [
            (self.p99_us, design.p99_budget_ms * 1000.0 / 20.0),
            (self.cpu_cores, 0.05),
            (self.wire_bytes_per_s, 1e6),
            (self.memory_bytes, 100e6),
            (self.requests_per_s, 100.0),
        ]
    }
}

/// Deliveries per second the whole design asks for.
pub fn deliveries_per_s(design: &Design) -> f64 {
    design.rate * design.subscribers as f64
}

/// Server cores for the design's deliveries, from CPU per delivery (us).
pub fn cores(us_per_delivery: f64, design: &Design) -> f64 {
    us_per_delivery * deliveries_per_s(design) / 1e6
}

/// Bytes per second on the wire, from bytes per event.
pub fn wire_bytes_per_s(bytes_per_event: f64, design: &Design) -> f64 {
    bytes_per_event * deliveries_per_s(design)
}

/// Memory the server holds for every subscriber's connection, bytes.
pub fn memory_held(per_connection: f64, design: &Design) -> f64 {
    per_connection * design.subscribers as f64
}

/// The polling interval that keeps p99 within the budget: half of it, seconds.
pub fn polling_interval(design: &Design) -> f64 {
    design.p99_budget_ms / 2e3
}

/// Requests the server answers (or, for webhooks, makes) per second, for the whole design.
pub fn requests_per_s(facts: &Facts<'_>) -> f64 {
    let design = facts.design;
    let per_subscriber = match facts.transport.traits().requests {
        Requests::Stream => 0.0,
        Requests::PerAnswer(_) => design.rate.max(1.0 / facts.hold),
        Requests::PerInterval(_) => 1.0 / polling_interval(design),
        Requests::PerEvent => design.rate,
    };
    per_subscriber * design.subscribers as f64
}
