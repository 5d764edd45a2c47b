//! What two-way traffic came to in one row: the server's ledger of the messages sent up and
//! their latency, the copies every room member got back with the round trip of each sender's
//! own, and what a message up cost the server.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::metrics::latency::{self, Percentiles};
use crate::upstream::{CopyCounts, Report, Verdict};

/// Two-way traffic in one row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TwoWay {
    /// Messages per second each subscriber sent up.
    pub rate_per_subscriber: f64,
    /// Whether the server copied each message to the sender's room.
    pub echo: bool,
    /// The messages up, judged at the server: each sender's once, in order, as sent.
    pub upstream: Verdict,
    /// From a message's scheduled send to the server's receipt, us.
    pub upstream_latency_us: Percentiles,
    /// From a message's scheduled send back to its sender, us (with the echo on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_trip_us: Option<Percentiles>,
    /// From a message's scheduled send to the other members of its room, us (with the echo on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies_latency_us: Option<Percentiles>,
    /// The copies every subscriber had to get back, and got (with the echo on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<CopyCounts>,
    /// Copies of messages the server's rooms handed out in all (each to every member).
    pub copies_sent: u64,
    /// Bytes of a message's wire form, on average (the transport's framing and headers left
    /// out).
    pub bytes_per_message: f64,
    /// The server's CPU over the stream per message received, us: all of its work (the
    /// events and the copies it sent included) over the messages up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_us_per_message: Option<f64>,
    /// Whether every message up and every copy arrived once and in order.
    pub exact: bool,
}

impl TwoWay {
    /// The row's two-way traffic: the server's `report` on `senders` subscribers each sending
    /// `rate` a second, the copies the subscribers counted, their round trips and copy
    /// latencies, and the server's CPU over the stream (when measured).
    pub fn of(
        rate: f64,
        report: &Report,
        senders: u64,
        copies: Option<CopyCounts>,
        round_trip: Option<&Histogram<u64>>,
        copy_latency: Option<&Histogram<u64>>,
        server_cpu_us: Option<f64>,
    ) -> Self {
        let upstream = Verdict::of(report.per_sender, senders, &report.senders, report.corrupt);
        let received = upstream.received.max(1) as f64;
        let upstream_latency =
            latency::decode(&report.latency_us).unwrap_or_else(|_| latency::histogram());
        let exact = upstream.is_exact() && copies.as_ref().is_none_or(CopyCounts::is_exact);
        Self {
            rate_per_subscriber: rate,
            echo: copies.is_some(),
            upstream,
            upstream_latency_us: Percentiles::of(&upstream_latency),
            round_trip_us: round_trip.map(Percentiles::of),
            copies_latency_us: copy_latency.map(Percentiles::of),
            copies,
            copies_sent: report.copies,
            bytes_per_message: report.bytes as f64 / received,
            server_cpu_us_per_message: server_cpu_us.map(|us| us / received),
            exact,
        }
    }

    /// Why the row fails, when the traffic up or back was not exact.
    pub fn failure(&self) -> Option<String> {
        if self.exact {
            return None;
        }
        let u = &self.upstream;
        let mut why = Vec::new();
        if !u.is_exact() {
            why.push(format!(
                "messages up: {} lost, {} duplicated, {} reordered, {} corrupt, {} senders' \
                 digests wrong of {} expected",
                u.lost, u.duplicated, u.reordered, u.corrupt, u.wrong_digests, u.expected
            ));
        }
        if let Some(c) = self.copies.filter(|c| !c.is_exact()) {
            why.push(format!(
                "copies back: {} received of {} ({} out of order or twice), own {} of {}",
                c.received, c.expected, c.disordered, c.own_received, c.own_expected
            ));
        }
        Some(format!("two-way traffic not exact: {}", why.join("; ")))
    }
}
