//! One transport against one design: hard rules from what the transport is ([`Traits`])
//! exclude; measured figures decide whether it fits the budgets and how well. Every reason
//! names the constraint it answers and, where there is one, the measured figure behind it.

use serde::Serialize;

use super::design::{Consumers, Delivery, Design, Direction};
use super::evidence::{Evidence, REGIME};
use crate::results::figures::Figure;
use crate::results::format::{bytes, micros, thousands};
use crate::transport::{KeepAlive, Redelivery, Requests, Transport};

/// Downtime beyond a reconnect: the consumer restarts and must remember where it was.
const RESTART_DOWNTIME_SECS: f64 = 60.0;
/// Measured fan-out or rate this many times below the design's is an extrapolation.
const EXTRAPOLATION: f64 = 2.0;

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

/// How a transport fits a design.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Meets every constraint.
    Fits,
    /// Meets the hard constraints, with costs or work to know about.
    FitsWithCaveats,
    /// Breaks a constraint.
    Excluded,
}

/// Whether a reason supports, qualifies or excludes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Weight {
    /// In its favour.
    Supports,
    /// A cost or work to know about.
    Caveat,
    /// Rules it out.
    Excludes,
    /// The results lack the figure: says so, and does not change the verdict (the gap is in
    /// the measurements, not in the transport).
    Unmeasured,
}

/// One reason: the constraint it answers and what was found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    /// Which way it counts.
    pub weight: Weight,
    /// The design constraint (or `evidence`).
    pub constraint: &'static str,
    /// What was found, with the measured figure where there is one.
    pub text: String,
}

/// A transport assessed against a design.
#[derive(Clone, Debug, Serialize)]
pub struct Assessment {
    /// Transport name.
    pub transport: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// Its reasons, in the order checked.
    pub reasons: Vec<Reason>,
    /// The figures that rank fitting transports, for the whole design.
    #[serde(skip)]
    pub costs: Costs,
    /// A `pushbench run` command that would measure what is missing.
    pub to_measure: Option<String>,
}

/// Judges one transport.
pub fn assess(transport: Transport, design: &Design, evidence: &Evidence) -> Assessment {
    let traits = transport.traits();
    let name = transport.name();
    let mut reasons = Vec::new();
    // Whether a hard rule or a budget has excluded it so far (it then needs no measuring).
    let excluded = std::cell::Cell::new(false);
    let mut say = |weight: Weight, constraint, text: String| {
        excluded.set(excluded.get() || weight == Weight::Excludes);
        reasons.push(Reason {
            weight,
            constraint,
            text,
        })
    };
    let heartbeat = evidence.heartbeat_secs().unwrap_or(15.0);
    // The interval or hold that paces this transport's requests, as its evidence measured it
    // (the transport declares which of its settings that is).
    let pace = traits.requests.pace();
    let pace_secs = pace.map(|setting| evidence.setting(name, setting).as_secs_f64());
    let per_interval = matches!(traits.requests, Requests::PerInterval(_));
    let (poll_interval, hold) = (pace_secs.unwrap_or(0.0), pace_secs.unwrap_or(heartbeat));

    // Hard rules: what the transport is.
    if design.direction == Direction::Bidirectional && !traits.duplex {
        say(
            Weight::Excludes,
            "direction",
            "one-way: consumers cannot send on it, and the design needs both ways".into(),
        );
    }
    if design.consumers == Consumers::Browsers {
        match (traits.browser_api, traits.needs_inbound_http) {
            (_, true) => say(
                Weight::Excludes,
                "consumers",
                "a browser cannot accept inbound HTTP: a webhook needs a reachable URL".into(),
            ),
            (None, false) => say(
                Weight::Excludes,
                "consumers",
                "browsers have no API for it".into(),
            ),
            (Some(api), false) => say(
                Weight::Supports,
                "consumers",
                format!("browsers receive it with {api}"),
            ),
        }
    } else if traits.needs_inbound_http && !design.inbound_http {
        say(Weight::Excludes, "inbound HTTP", "consumers cannot accept inbound HTTP, and a webhook needs a URL the provider can reach".into());
    } else if traits.needs_inbound_http {
        say(
            Weight::Supports,
            "inbound HTTP",
            "consumers accept inbound HTTP: they need an endpoint, not a connection or a cursor"
                .into(),
        );
    }
    if traits.needs_upgrade && !design.websocket_upgrades {
        say(
            Weight::Excludes,
            "network",
            "the network refuses the WebSocket upgrade".into(),
        );
    }
    if traits.streams_response && design.buffering_proxy {
        say(Weight::Excludes, "network", "a buffering proxy holds a streamed response back: events arrive when its buffer fills, not when sent".into());
    }
    if !traits.http && (design.buffering_proxy || !design.websocket_upgrades) {
        say(
            Weight::Excludes,
            "network",
            "not HTTP: it does not pass the proxies in the path".into(),
        );
    }
    if design.http1_only && traits.multiplexed {
        say(
            Weight::Excludes,
            "HTTP/1.1",
            "it needs HTTP/2 end to end, and only HTTP/1.1 reaches the consumers".into(),
        );
    } else if design.http1_only
        && design.consumers == Consumers::Browsers
        && traits.holds_connection
        && !traits.needs_upgrade
    {
        say(Weight::Caveat, "HTTP/1.1", "browsers allow six HTTP/1.1 connections per origin, and every open tab holds one of them".into());
    } else if design.consumers == Consumers::Browsers && traits.multiplexed {
        say(Weight::Supports, "HTTP/2", "a browser multiplexes every stream of an origin over one HTTP/2 connection: no six-connections-per-origin limit across tabs".into());
    }
    if design.subscribers_per_host > 1 && traits.holds_connection {
        let per_host = design.subscribers_per_host;
        let hosts = design.subscribers.div_ceil(per_host);
        if traits.multiplexed {
            say(Weight::Supports, "subscribers per host", format!("a host's {per_host} subscriptions share its HTTP/2 connections: about {} connections in all, not {}", thousands(hosts as f64), thousands(design.subscribers as f64)));
        } else {
            say(Weight::Caveat, "subscribers per host", format!("each of a host's {per_host} subscriptions holds a connection of its own: {} connections through every proxy, load balancer and TLS session on the path, where shared connections would need about {}", thousands(design.subscribers as f64), thousands(hosts as f64)));
        }
    }
    if let (Some(idle), true) = (design.idle_timeout_secs, traits.holds_connection) {
        // What a quiet connection carries, and how often, as the evidence measured it.
        let keepalive = match traits.keep_alive {
            KeepAlive::Heartbeat => Some(heartbeat),
            KeepAlive::Requests => Some(hold),
            KeepAlive::ClientPing(setting) => Some(evidence.setting(name, setting).as_secs_f64()),
            KeepAlive::Nothing => None,
        };
        match keepalive {
            None => say(Weight::Caveat, "idle timeout", format!("no keep-alive of its own: the network's {idle} s idle timeout will cut quiet connections")),
            Some(keepalive) if keepalive >= idle => say(Weight::Caveat, "idle timeout", format!("the network cuts connections idle for {idle} s, sooner than the measured {keepalive} s keep-alive or hold: shorten it")),
            Some(_) => {}
        }
    }

    // Delivery guarantees: how missed events come back.
    if design.delivery == Delivery::AtLeastOnce {
        let backlog = design.rate * design.downtime_secs;
        match traits.redelivery {
            Redelivery::BuiltIn(how) if design.downtime_secs > RESTART_DOWNTIME_SECS => say(
                Weight::Caveat,
                "delivery",
                format!("{how}, but across {} s of downtime the consumer must persist its cursor and the server keep {} events", design.downtime_secs, thousands(backlog)),
            ),
            Redelivery::BuiltIn(how) => say(Weight::Supports, "delivery", how.into()),
            Redelivery::Retries(how, span) => {
                // Retries carry events across downtime only while the schedule runs: say how
                // long it runs with the settings measured, against the design's downtime.
                let span = span(&evidence.settings(name)).as_secs_f64();
                let text = if span >= design.downtime_secs {
                    format!("{how}; the schedule measured spans up to {span:.1} s, enough for {} s of downtime ({} events per consumer to retry)", design.downtime_secs, thousands(backlog))
                } else {
                    format!("{how}; {} s of downtime needs a retry schedule that spans it, and the one measured spans at most {span:.1} s: configure more attempts or a longer cap (Standard Webhooks' schedule spans about 27 h), or events are abandoned", design.downtime_secs)
                };
                say(Weight::Supports, "delivery", text)
            }
            Redelivery::Application(how) => say(Weight::Caveat, "delivery", how.into()),
        }
        // What the results measured, where they went through consumer outages.
        if let Some((outage, lost)) = evidence.outage_survived(name) {
            let covers = outage >= design.downtime_secs;
            match (lost, covers) {
                (0, true) => say(Weight::Supports, "downtime (measured)", format!("lost nothing across a measured {outage:.0} s consumer outage, as long as the design's {} s", design.downtime_secs)),
                (0, false) => say(Weight::Unmeasured, "downtime (measured)", format!("lost nothing across a measured {outage:.0} s consumer outage, shorter than the design's {} s", design.downtime_secs)),
                (lost, _) => say(Weight::Caveat, "downtime (measured)", format!("lost {lost} events across a measured {outage:.0} s consumer outage")),
            }
        }
    }

    // Measured figures.
    let mut costs = Costs::default();
    let budget_us = design.p99_budget_ms * 1000.0;
    let budget = format!("{} ms", design.p99_budget_ms);
    let mut to_measure = None;
    match evidence.span(name) {
        None => {
            say(
                Weight::Caveat,
                "evidence",
                "not measured in these results".into(),
            );
            to_measure = Some(run_command(name, design));
        }
        Some((subscribers, rate)) => {
            if (design.subscribers as f64) > subscribers as f64 * EXTRAPOLATION
                || design.rate > rate * EXTRAPOLATION
            {
                say(Weight::Unmeasured, "evidence", format!(
                    "measured up to {} subscribers and {} ev/s, short of the design's {} and {}: the figures below are extrapolated",
                    thousands(subscribers as f64), thousands(rate.min(1e12)), thousands(design.subscribers as f64), design.rate
                ));
                to_measure = Some(run_command(name, design));
            }
        }
    }
    if per_interval {
        // Latency is the polling interval: poll at half the budget to stay within it.
        let interval = design.p99_budget_ms / 2e3;
        if interval < poll_interval / 2.0 {
            say(Weight::Unmeasured, "evidence", format!(
                "measured polling every {} ms; the {} ms the budget needs was not measured, so its CPU cost is unknown",
                (poll_interval * 1e3).round(), round(interval * 1e3)
            ));
            to_measure = pace.map(|setting| {
                format!(
                    "{} --{} {}ms",
                    run_command(name, design),
                    setting.name,
                    (interval * 1e3).floor().max(1.0)
                )
            });
        }
        if let Some(p99) = evidence.comparable(name, design, Figure::LatencyP99, true) {
            say(Weight::Supports, "latency", format!(
                "latency follows the polling interval: p99 {} with a {} ms interval {}; polling every {} meets the {} budget",
                micros(p99.value as u64), (poll_interval * 1e3).round(), p99.at(), micros((interval * 1e6) as u64), budget
            ));
        }
        costs.p99_us = Some(interval * 1e6);
        let empty_polls = (1.0 / design.rate) / interval - 1.0;
        if empty_polls >= 1.0 {
            say(Weight::Caveat, "event rate", format!(
                "an event every {} s but a poll every {} s to meet the budget: {:.0} empty poll(s) per event, {} requests/s in all",
                round(1.0 / design.rate), round(interval), empty_polls, thousands(design.subscribers as f64 / interval)
            ));
        }
    } else if let Some(p99) = evidence.comparable(name, design, Figure::LatencyP99, true) {
        costs.p99_us = Some(p99.value);
        let within = p99.value <= budget_us;
        say(
            if within {
                Weight::Supports
            } else {
                Weight::Excludes
            },
            "latency",
            format!(
                "p99 {} {}, {} the {} budget",
                micros(p99.value as u64),
                p99.at(),
                if within { "within" } else { "over" },
                budget
            ),
        );
    }
    if traits.holds_connection {
        let server = evidence.most_connections(name, Figure::ServerRssPerConn);
        let client = evidence.most_connections(name, Figure::ClientRssPerConn);
        if let (Some(server), Some(client)) = (server, client) {
            costs.memory_bytes = Some(server.value * design.subscribers as f64);
            let worst = server.value.max(client.value);
            let text = format!(
                "{} per connection on the server and {} on the client, measured with {} connections ({}): {} held for {} subscribers",
                bytes(server.value), bytes(client.value), thousands(server.subscribers as f64), server.scenario,
                bytes(server.value * design.subscribers as f64), thousands(design.subscribers as f64)
            );
            match design.memory_per_connection {
                Some(budget) if worst > budget as f64 => say(
                    Weight::Excludes,
                    "memory",
                    format!("{text}, over the {} budget", bytes(budget as f64)),
                ),
                _ => say(Weight::Supports, "memory", text),
            }
        }
        if 1.0 / design.rate > heartbeat {
            say(Weight::Caveat, "event rate", format!(
                "an event every {} s per subscriber: the connection sits idle between events, holding memory and sending keep-alives every {heartbeat} s",
                round(1.0 / design.rate)
            ));
        }
    } else {
        costs.memory_bytes = Some(0.0);
        say(
            Weight::Supports,
            "memory",
            "holds no connection per subscriber between deliveries".into(),
        );
    }
    let latency_known = per_interval || costs.p99_us.is_some();
    let cpu = evidence.comparable(name, design, Figure::ServerCpuUsPerDelivery, false);
    // An excluded transport needs no further measurement.
    if (cpu.is_none() || !latency_known) && !excluded.get() {
        say(
            Weight::Unmeasured,
            "regime",
            format!(
                "no run within {REGIME}× of the design's {} subscriber(s) and {} ev/s each: its {} \
                 at this load {} not measured, and a figure from another regime is not scaled",
                thousands(design.subscribers as f64),
                design.rate,
                match (cpu.is_none(), latency_known) {
                    (true, false) => "CPU and latency",
                    (true, true) => "CPU",
                    _ => "latency",
                },
                if cpu.is_none() && !latency_known { "are" } else { "is" },
            ),
        );
        to_measure.get_or_insert_with(|| run_command(name, design));
    }
    if let Some(cpu) = cpu {
        let cores = cpu.value * design.rate * design.subscribers as f64 / 1e6;
        // A poll's CPU cost depends on its interval; measured at another, it is not known.
        let known = !(per_interval && design.p99_budget_ms / 2e3 < poll_interval / 2.0);
        costs.cpu_cores = known.then_some(cores);
        let text = format!(
            "{:.2} us of server CPU per delivery {}: {:.2} cores for the design's {} deliveries/s",
            cpu.value,
            cpu.at(),
            cores,
            thousands(design.rate * design.subscribers as f64)
        );
        match design.cpu_cores {
            Some(budget) if cores > budget => say(
                Weight::Excludes,
                "CPU",
                format!("{text}, over the {budget} core budget"),
            ),
            _ => say(Weight::Supports, "CPU", text),
        }
    }
    if let Some(wire) = evidence.nearest(name, design, Figure::WireBytesPerEvent, false) {
        costs.wire_bytes_per_s = Some(wire.value * design.rate * design.subscribers as f64);
        say(
            Weight::Supports,
            "bandwidth",
            format!("{:.0} wire bytes per event {}", wire.value, wire.at()),
        );
    }
    if let Some(capacity) = evidence.capacity(name) {
        let needed = design.rate * design.subscribers as f64;
        if needed > capacity.value && capacity.load_bound {
            // A saturated load measured itself: the transport's ceiling lies higher, unknown.
            say(
                Weight::Unmeasured,
                "throughput",
                format!(
                    "the design needs {} deliveries/s; the most measured was {} {}, but the load \
                     was the limit there, so the transport's own ceiling was not reached",
                    thousands(needed),
                    thousands(capacity.value),
                    capacity.at()
                ),
            );
        } else if needed > capacity.value {
            say(
                Weight::Excludes,
                "throughput",
                format!(
                    "the design needs {} deliveries/s; the most measured was {} {}",
                    thousands(needed),
                    thousands(capacity.value),
                    capacity.at()
                ),
            );
        }
    }

    // Requests the server answers (or, for webhooks, makes) per second, for the whole design.
    let per_subscriber = match traits.requests {
        Requests::Stream => 0.0,
        Requests::PerAnswer(_) => design.rate.max(1.0 / hold),
        Requests::PerInterval(_) => 2e3 / design.p99_budget_ms,
        Requests::PerEvent => design.rate,
    };
    costs.requests_per_s = Some(per_subscriber * design.subscribers as f64);

    let verdict = if reasons.iter().any(|r| r.weight == Weight::Excludes) {
        Verdict::Excluded
    } else if reasons.iter().any(|r| r.weight == Weight::Caveat) {
        Verdict::FitsWithCaveats
    } else {
        Verdict::Fits
    };
    Assessment {
        transport: name,
        verdict,
        reasons,
        costs,
        to_measure,
    }
}

/// The `pushbench run` command that measures a transport at the design's fan-out and rate.
pub fn run_command(transport: &str, design: &Design) -> String {
    format!(
        "pushbench run --transports {transport} --subscribers {} --rate {} --payload {} --duration {}",
        design.subscribers,
        design.rate,
        design.payload,
        // Enough events for a p99 per subscriber, at least ten seconds.
        (100.0 / design.rate).max(10.0).ceil()
    )
}

/// A number of seconds without needless decimals.
fn round(secs: f64) -> String {
    if secs >= 10.0 {
        format!("{secs:.0}")
    } else {
        format!("{:.2}", secs)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}
