//! The rules, one function each: each reads the [`Facts`] and adds its reasons (and the
//! costs it measured) to the [`Findings`]. `assess` runs them in order.

use super::super::design::{Consumers, Delivery, Design, Direction};
use super::super::evidence::{Measured, REGIME};
use super::costs;
use super::{round, run_command, Constraint, Facts, Findings, Weight};
use crate::harness::settings::settings_of;
use crate::results::figures::Figure;
use crate::results::format::{bytes, micros, thousands};
use crate::transport::upstream::UPSTREAM_RATE;
use crate::transport::{KeepAlive, Redelivery};

/// Downtime beyond a reconnect: the consumer restarts and must remember where it was.
const RESTART_DOWNTIME_SECS: f64 = 60.0;
/// Measured fan-out or rate this many times below the design's is an extrapolation.
const EXTRAPOLATION: f64 = 2.0;

/// A one-way transport serves a design that needs both ways only beside requests of the
/// consumers' own: each message up is an HTTP request (a POST, or a call of the provider's
/// API), which its round trip measures.
pub fn direction(facts: &Facts<'_>, found: &mut Findings) {
    if facts.design.direction == Direction::Bidirectional && !facts.transport.traits().duplex {
        found.say(
            Weight::Caveat,
            Constraint::Direction,
            "one-way: each message up is an HTTP request of its own beside the subscription \
             (pushbench's clients POST them), not a frame on it"
                .into(),
        );
    }
}

/// A design whose messages are copied to their rooms is judged by the round trip measured
/// in a comparable two-way run: a sender's message to its room and back within the budget.
pub fn round_trip(facts: &Facts<'_>, found: &mut Findings) {
    let design = facts.design;
    if design.upstream_rate <= 0.0 || !design.echo {
        return;
    }
    let budget = format!("{} ms", design.p99_budget_ms);
    let takes_upstream = settings_of(facts.transport)
        .iter()
        .any(|s| s.name() == UPSTREAM_RATE.name);
    match facts.evidence.round_trip(facts.transport, design) {
        Some(p99) => {
            let (weight, within) = against_budget(design, p99.value);
            found.say(
                weight,
                Constraint::RoundTrip,
                format!(
                    "round trip p99 {} with {} msg/s up per subscriber {}, {within} the {budget} budget",
                    micros(p99.value as u64),
                    UPSTREAM_RATE.read(&p99.settings),
                    p99.at(),
                ),
            );
        }
        None if takes_upstream => {
            found.say(
                Weight::Unmeasured,
                Constraint::RoundTrip,
                "no comparable two-way run: its round trip is unmeasured".into(),
            );
            found.to_measure = Some(format!(
                "{} --upstream-rate {} --upstream-echo on",
                run_command(facts.transport, design),
                design.upstream_rate
            ));
        }
        None => found.say(
            Weight::Unmeasured,
            Constraint::RoundTrip,
            "pushbench does not send messages up on it: its round trip is unmeasured".into(),
        ),
    }
}

/// Browsers need an API for it and cannot take inbound HTTP; services need an endpoint for
/// webhooks.
pub fn consumers(facts: &Facts<'_>, found: &mut Findings) {
    let (traits, design) = (facts.transport.traits(), facts.design);
    if design.consumers == Consumers::Browsers {
        match (traits.browser_api, traits.needs_inbound_http) {
            (_, true) => found.say(
                Weight::Excludes,
                Constraint::Consumers,
                "a browser cannot accept inbound HTTP: a webhook needs a reachable URL".into(),
            ),
            (None, false) => found.say(
                Weight::Excludes,
                Constraint::Consumers,
                "browsers have no API for it".into(),
            ),
            (Some(api), false) => found.say(
                Weight::Supports,
                Constraint::Consumers,
                format!("browsers receive it with {api}"),
            ),
        }
    } else if traits.needs_inbound_http && !design.inbound_http {
        found.say(
            Weight::Excludes,
            Constraint::InboundHttp,
            "consumers cannot accept inbound HTTP, and a webhook needs a URL the provider can \
             reach"
                .into(),
        );
    } else if traits.needs_inbound_http {
        found.say(
            Weight::Supports,
            Constraint::InboundHttp,
            "consumers accept inbound HTTP: they need an endpoint, not a connection or a cursor"
                .into(),
        );
    }
}

/// What the network passes: upgrades, streamed responses through buffering proxies, anything
/// but HTTP.
pub fn network(facts: &Facts<'_>, found: &mut Findings) {
    let (traits, design) = (facts.transport.traits(), facts.design);
    if traits.needs_upgrade && !design.websocket_upgrades {
        found.say(
            Weight::Excludes,
            Constraint::Network,
            "the network refuses the WebSocket upgrade".into(),
        );
    }
    if traits.streams_response && design.buffering_proxy {
        found.say(
            Weight::Excludes,
            Constraint::Network,
            "a buffering proxy holds a streamed response back: events arrive when its buffer \
             fills, not when sent"
                .into(),
        );
    }
    if !traits.http && (design.buffering_proxy || !design.websocket_upgrades) {
        found.say(
            Weight::Excludes,
            Constraint::Network,
            "not HTTP: it does not pass the proxies in the path".into(),
        );
    }
    if traits.udp && !design.udp {
        found.say(
            Weight::Excludes,
            Constraint::Network,
            "it rides on UDP (QUIC), which the network does not let through".into(),
        );
    }
}

/// HTTP/2 end to end, or browsers' six HTTP/1.1 connections per origin.
pub fn http_version(facts: &Facts<'_>, found: &mut Findings) {
    let (traits, design) = (facts.transport.traits(), facts.design);
    let browsers = design.consumers == Consumers::Browsers;
    if design.http1_only && traits.udp {
        found.say(
            Weight::Excludes,
            Constraint::Http1,
            "it needs HTTP/3 (QUIC) end to end, and only HTTP/1.1 reaches the consumers".into(),
        );
    } else if design.http1_only && traits.multiplexed {
        found.say(
            Weight::Excludes,
            Constraint::Http1,
            "it needs HTTP/2 end to end, and only HTTP/1.1 reaches the consumers".into(),
        );
    } else if design.http1_only && browsers && traits.holds_connection && !traits.needs_upgrade {
        found.say(
            Weight::Caveat,
            Constraint::Http1,
            "browsers allow six HTTP/1.1 connections per origin, and every open tab holds one \
             of them"
                .into(),
        );
    } else if browsers && traits.multiplexed {
        found.say(
            Weight::Supports,
            Constraint::Http2,
            "a browser multiplexes every stream of an origin over one HTTP/2 connection: no \
             six-connections-per-origin limit across tabs"
                .into(),
        );
    }
}

/// Several subscriptions per host: shared connections, or one each through every proxy.
pub fn subscribers_per_host(facts: &Facts<'_>, found: &mut Findings) {
    let (traits, design) = (facts.transport.traits(), facts.design);
    if design.subscribers_per_host <= 1 || !traits.holds_connection {
        return;
    }
    let per_host = design.subscribers_per_host;
    let hosts = thousands(design.subscribers.div_ceil(per_host) as f64);
    let all = thousands(design.subscribers as f64);
    if traits.multiplexed {
        found.say(
            Weight::Supports,
            Constraint::SubscribersPerHost,
            format!(
                "a host's {per_host} subscriptions share its HTTP/2 connections: about {hosts} \
                 connections in all, not {all}"
            ),
        );
    } else {
        found.say(
            Weight::Caveat,
            Constraint::SubscribersPerHost,
            format!(
                "each of a host's {per_host} subscriptions holds a connection of its own: {all} \
                 connections through every proxy, load balancer and TLS session on the path, \
                 where shared connections would need about {hosts}"
            ),
        );
    }
}

/// A network that cuts idle connections, against what keeps a quiet one alive.
pub fn idle_timeout(facts: &Facts<'_>, found: &mut Findings) {
    let traits = facts.transport.traits();
    let (Some(idle), true) = (facts.design.idle_timeout_secs, traits.holds_connection) else {
        return;
    };
    // What a quiet connection carries, and how often, as the evidence measured it.
    let keepalive = match traits.keep_alive {
        KeepAlive::Heartbeat => Some(facts.heartbeat),
        KeepAlive::Requests => Some(facts.hold),
        KeepAlive::ClientPing(setting) => Some(
            facts
                .evidence
                .setting(facts.transport, facts.design, setting)
                .as_secs_f64(),
        ),
        KeepAlive::Nothing => None,
    };
    match keepalive {
        None => found.say(
            Weight::Caveat,
            Constraint::IdleTimeout,
            format!(
                "no keep-alive of its own: the network's {idle} s idle timeout will cut quiet \
                 connections"
            ),
        ),
        Some(keepalive) if keepalive >= idle => found.say(
            Weight::Caveat,
            Constraint::IdleTimeout,
            format!(
                "the network cuts connections idle for {idle} s, sooner than the measured \
                 {keepalive} s keep-alive or hold: shorten it"
            ),
        ),
        Some(_) => {}
    }
}

/// At-least-once delivery: how missed events come back, and across how much downtime.
pub fn delivery(facts: &Facts<'_>, found: &mut Findings) {
    let design = facts.design;
    if design.delivery != Delivery::AtLeastOnce {
        return;
    }
    // A mode that is at most once (WebTransport's datagrams) never resends what the network
    // dropped: no redelivery can make up for it.
    let measured = facts.evidence.settings(facts.transport, design);
    if (facts.transport.spec().guarantee)(&measured).drops {
        return found.say(
            Weight::Excludes,
            Constraint::Delivery,
            "at most once as measured: an event the network drops is never sent again".into(),
        );
    }
    let backlog = thousands(design.rate * design.downtime_secs);
    let downtime = design.downtime_secs;
    match facts.transport.traits().redelivery {
        Redelivery::BuiltIn(how) if downtime > RESTART_DOWNTIME_SECS => found.say(
            Weight::Caveat,
            Constraint::Delivery,
            format!(
                "{how}, but across {downtime} s of downtime the consumer must persist its \
                 cursor and the server keep {backlog} events"
            ),
        ),
        Redelivery::BuiltIn(how) => found.say(Weight::Supports, Constraint::Delivery, how.into()),
        Redelivery::Retries(how, span) => {
            // Retries carry events across downtime only while the schedule runs: say how
            // long it runs with the settings measured, against the design's downtime.
            let span = span(&facts.evidence.settings(facts.transport, facts.design)).as_secs_f64();
            let text = if span >= downtime {
                format!(
                    "{how}; the schedule measured spans up to {span:.1} s, enough for \
                     {downtime} s of downtime ({backlog} events per consumer to retry)"
                )
            } else {
                format!(
                    "{how}; {downtime} s of downtime needs a retry schedule that spans it, and \
                     the one measured spans at most {span:.1} s: configure more attempts or a \
                     longer cap (Standard Webhooks' schedule spans about 27 h), or events are \
                     abandoned"
                )
            };
            found.say(Weight::Supports, Constraint::Delivery, text)
        }
        Redelivery::Application(how) => found.say(Weight::Caveat, Constraint::Delivery, how.into()),
    }
}

/// What the results measured, where they went through consumer outages.
pub fn downtime_measured(facts: &Facts<'_>, found: &mut Findings) {
    let design = facts.design;
    if design.delivery != Delivery::AtLeastOnce {
        return;
    }
    let Some((outage, lost)) = facts
        .evidence
        .outage_survived(facts.transport, facts.design)
    else {
        return;
    };
    // A run of the design may have measured its downtime compressed (its scalings say so).
    let downtime = facts.evidence.regime(design).downtime_secs;
    let wanted = if downtime < design.downtime_secs {
        format!(
            "the design's {} s compressed to {downtime} s",
            design.downtime_secs
        )
    } else {
        format!("the design's {downtime} s")
    };
    match (lost, outage >= downtime) {
        (0, true) => found.say(
            Weight::Supports,
            Constraint::DowntimeMeasured,
            format!(
                "lost nothing across a measured {outage:.0} s consumer outage, as long as \
                 {wanted}"
            ),
        ),
        (0, false) => found.say(
            Weight::Unmeasured,
            Constraint::DowntimeMeasured,
            format!(
                "lost nothing across a measured {outage:.0} s consumer outage, shorter than \
                 {wanted}"
            ),
        ),
        (lost, _) => found.say(
            Weight::Caveat,
            Constraint::DowntimeMeasured,
            format!("lost {lost} events across a measured {outage:.0} s consumer outage"),
        ),
    }
}

/// Whether the results measured the transport at all, and how far from the design.
pub fn evidence(facts: &Facts<'_>, found: &mut Findings) {
    let design = facts.design;
    // The design's own run of it failed: a measured reason it does not fit.
    if let Some(why) = facts.evidence.failed(facts.transport, design) {
        found.say(
            Weight::Excludes,
            Constraint::Evidence,
            format!("failed the design's own {why}"),
        );
        return;
    }
    // Its own run offered the design's rate and got less: measured, not merely unmeasured.
    if let Some(behind) = facts.evidence.fell_behind(facts.transport, design) {
        found.say(
            Weight::Excludes,
            Constraint::Throughput,
            format!(
                "delivered {} of the {} deliveries/s offered {}: it fell behind",
                thousands(behind.measured.value),
                thousands(behind.offered),
                behind.measured.at()
            ),
        );
        return;
    }
    let regime = facts.evidence.regime(design);
    match facts.evidence.span(facts.transport, design) {
        None => {
            found.say(
                Weight::Caveat,
                Constraint::Evidence,
                "not measured in these results".into(),
            );
            found.to_measure = Some(run_command(facts.transport, design));
        }
        // Against the design as measured: a run scaled for it says how in its scalings.
        Some((subscribers, rate))
            if (regime.subscribers as f64) > subscribers as f64 * EXTRAPOLATION
                || regime.rate > rate * EXTRAPOLATION =>
        {
            found.say(
                Weight::Unmeasured,
                Constraint::Evidence,
                format!(
                    "measured up to {} subscribers and {} ev/s, short of the design's {} and \
                     {}: the figures below are extrapolated",
                    thousands(subscribers as f64),
                    thousands(rate.min(1e12)),
                    thousands(design.subscribers as f64),
                    design.rate
                ),
            );
            found.to_measure = Some(run_command(facts.transport, design));
        }
        Some(_) => {}
    }
}

/// The interval that paced a transport's requests in a row run with `settings`, seconds (0
/// when none paces it).
fn interval_of(facts: &Facts<'_>, settings: &crate::settings::SettingValues) -> f64 {
    facts
        .transport
        .traits()
        .requests
        .pace()
        .map_or(0.0, |setting| setting.read(settings).as_secs_f64())
}

/// p99 against the budget; for polling, the interval the budget needs and its empty polls.
pub fn latency(facts: &Facts<'_>, found: &mut Findings) {
    let p99 = facts
        .evidence
        .comparable(facts.transport, facts.design, Figure::LatencyP99, true);
    if facts.per_interval {
        polling_latency(facts, p99, found);
        return;
    }
    let Some(p99) = p99 else { return };
    let design = facts.design;
    found.costs.p99_us = Some(p99.value);
    let (weight, within) = against_budget(design, p99.value);
    found.say(
        weight,
        Constraint::Latency,
        format!(
            "p99 {} {}, {within} the {} ms budget",
            micros(p99.value as u64),
            p99.at(),
            design.p99_budget_ms
        ),
    );
}

/// A p99 (us) against the design's budget: whether it supports or excludes, and the word for it.
fn against_budget(design: &Design, p99_us: f64) -> (Weight, &'static str) {
    if p99_us <= design.p99_budget_ms * 1000.0 {
        (Weight::Supports, "within")
    } else {
        (Weight::Excludes, "over")
    }
}

/// Latency where it is the polling interval: poll at half the budget to stay within it. The
/// interval quoted is the one the p99 beside it was measured at (the same row).
fn polling_latency(facts: &Facts<'_>, p99: Option<Measured>, found: &mut Findings) {
    let design = facts.design;
    let budget = format!("{} ms", design.p99_budget_ms);
    let interval = costs::polling_interval(design);
    let measured = p99
        .as_ref()
        .map_or(facts.poll_interval, |p99| interval_of(facts, &p99.settings));
    let measured_ms = (measured * 1e3).round();
    if interval < measured / 2.0 {
        unmeasured_interval(facts, (interval, measured_ms), found);
    }
    // Polled within the budget and still over it: the server or its queue fell behind, so
    // polling faster would not help.
    if let Some(p99) = p99.as_ref().filter(|p99| {
        measured <= design.p99_budget_ms / 1e3 && p99.value > design.p99_budget_ms * 1e3
    }) {
        found.costs.p99_us = Some(p99.value);
        found.say(
            Weight::Excludes,
            Constraint::Latency,
            format!(
                "p99 {} polling every {measured_ms} ms {}, over the {budget} budget although it \
                 polled within it",
                micros(p99.value as u64),
                p99.at()
            ),
        );
        return;
    }
    if let Some(p99) = p99 {
        found.say(
            Weight::Supports,
            Constraint::Latency,
            format!(
                "latency follows the polling interval: p99 {} with a {measured_ms} ms interval \
                 {}; polling every {} meets the {budget} budget",
                micros(p99.value as u64),
                p99.at(),
                micros((interval * 1e6) as u64),
            ),
        );
    }
    found.costs.p99_us = Some(interval * 1e6);
    empty_polls(design, interval, found);
}

/// The interval the budget needs was not measured (only a slower one): its CPU cost is
/// unknown, and the command that would measure it is given.
fn unmeasured_interval(
    facts: &Facts<'_>,
    (interval, measured_ms): (f64, f64),
    found: &mut Findings,
) {
    found.say(
        Weight::Unmeasured,
        Constraint::Evidence,
        format!(
            "measured polling every {measured_ms} ms; the {} ms the budget needs was not \
             measured, so its CPU cost is unknown",
            round(interval * 1e3)
        ),
    );
    found.to_measure = facts.transport.traits().requests.pace().map(|setting| {
        format!(
            "{} --{} {}ms",
            run_command(facts.transport, facts.design),
            setting.name,
            (interval * 1e3).floor().max(1.0)
        )
    });
}

/// Polls that find nothing: more than one per event is a caveat worth its figure.
fn empty_polls(design: &Design, interval: f64, found: &mut Findings) {
    let empty_polls = (1.0 / design.rate) / interval - 1.0;
    if empty_polls >= 1.0 {
        found.say(
            Weight::Caveat,
            Constraint::EventRate,
            format!(
                "an event every {} s but a poll every {} s to meet the budget: {empty_polls:.0} \
                 empty poll(s) per event, {} requests/s in all",
                round(1.0 / design.rate),
                round(interval),
                thousands(design.subscribers as f64 / interval)
            ),
        );
    }
}

/// Memory per held connection, against the budget; nothing held between deliveries.
pub fn memory(facts: &Facts<'_>, found: &mut Findings) {
    let design = facts.design;
    if !facts.transport.traits().holds_connection {
        found.costs.memory_bytes = Some(0.0);
        found.say(
            Weight::Supports,
            Constraint::Memory,
            "holds no connection per subscriber between deliveries".into(),
        );
        return;
    }
    let evidence = facts.evidence;
    let server = evidence.most_connections(facts.transport, design, Figure::ServerRssPerConn);
    let client = evidence.most_connections(facts.transport, design, Figure::ClientRssPerConn);
    let (Some(server), Some(client)) = (server, client) else {
        return;
    };
    let held = costs::memory_held(server.value, design);
    found.costs.memory_bytes = Some(held);
    let worst = server.value.max(client.value);
    let text = format!(
        "{} per connection on the server and {} on the client, measured with {} connections \
         ({}): {} held for {} subscribers",
        bytes(server.value),
        bytes(client.value),
        thousands(server.subscribers as f64),
        server.scenario,
        bytes(held),
        thousands(design.subscribers as f64)
    );
    match design.memory_per_connection {
        Some(budget) if worst > budget as f64 => found.say(
            Weight::Excludes,
            Constraint::Memory,
            format!("{text}, over the {} budget", bytes(budget as f64)),
        ),
        _ => found.say(Weight::Supports, Constraint::Memory, text),
    }
}

/// A held connection that sits idle between rare events.
pub fn quiet_connections(facts: &Facts<'_>, found: &mut Findings) {
    let rate = facts.design.rate;
    if facts.transport.traits().holds_connection && 1.0 / rate > facts.heartbeat {
        found.say(
            Weight::Caveat,
            Constraint::EventRate,
            format!(
                "an event every {} s per subscriber: the connection sits idle between events, \
                 holding memory and sending keep-alives every {} s",
                round(1.0 / rate),
                facts.heartbeat
            ),
        );
    }
}

/// Whether a run of a comparable fan-out and rate measured its CPU and latency.
pub fn regime(facts: &Facts<'_>, found: &mut Findings) {
    let design = facts.design;
    let latency_known = facts.per_interval || found.costs.p99_us.is_some();
    let cpu_known = facts
        .evidence
        .comparable_cost(facts.transport, design, Figure::ServerCpuUsPerDelivery)
        .is_some();
    // An excluded transport needs no further measurement.
    if (cpu_known && latency_known) || found.excluded() {
        return;
    }
    let (what, verb) = match (cpu_known, latency_known) {
        (false, false) => ("CPU and latency", "are"),
        (false, true) => ("CPU", "is"),
        _ => ("latency", "is"),
    };
    found.say(
        Weight::Unmeasured,
        Constraint::Regime,
        format!(
            "no run within {REGIME}× of the design's {} subscriber(s) and {} ev/s each: its \
             {what} at this load {verb} not measured, and a figure from another regime is not \
             scaled",
            thousands(design.subscribers as f64),
            design.rate,
        ),
    );
    found
        .to_measure
        .get_or_insert_with(|| run_command(facts.transport, design));
}

/// Server CPU for the design's deliveries, against the budget.
pub fn cpu(facts: &Facts<'_>, found: &mut Findings) {
    let design = facts.design;
    // Only a row the load did not bound: there the figure is the load's, not the server's.
    let Some(cpu) =
        facts
            .evidence
            .comparable_cost(facts.transport, design, Figure::ServerCpuUsPerDelivery)
    else {
        return;
    };
    let cores = costs::cores(cpu.value, design);
    // A poll's CPU cost depends on its interval; measured (in that row) at another, it is not
    // known.
    let measured_interval = interval_of(facts, &cpu.settings);
    let known = !(facts.per_interval && costs::polling_interval(design) < measured_interval / 2.0);
    found.costs.cpu_cores = known.then_some(cores);
    let text = format!(
        "{:.2} us of server CPU per delivery {}: {cores:.2} cores for the design's {} \
         deliveries/s",
        cpu.value,
        cpu.at(),
        thousands(costs::deliveries_per_s(design))
    );
    match design.cpu_cores {
        Some(budget) if cores > budget => found.say(
            Weight::Excludes,
            Constraint::Cpu,
            format!("{text}, over the {budget} core budget"),
        ),
        _ => found.say(Weight::Supports, Constraint::Cpu, text),
    }
}

/// Wire bytes per event.
pub fn bandwidth(facts: &Facts<'_>, found: &mut Findings) {
    let design = facts.design;
    let Some(wire) =
        facts
            .evidence
            .nearest(facts.transport, design, Figure::WireBytesPerEvent, false)
    else {
        return;
    };
    found.costs.wire_bytes_per_s = Some(costs::wire_bytes_per_s(wire.value, design));
    found.say(
        Weight::Supports,
        Constraint::Bandwidth,
        format!("{:.0} wire bytes per event {}", wire.value, wire.at()),
    );
}

/// The deliveries per second the design needs, against the most measured.
pub fn throughput(facts: &Facts<'_>, found: &mut Findings) {
    let Some(capacity) = facts.evidence.capacity(facts.transport, facts.design) else {
        return;
    };
    let needed = costs::deliveries_per_s(facts.design);
    if needed <= capacity.value {
        return;
    }
    let measured = format!(
        "the design needs {} deliveries/s; the most measured was {} {}",
        thousands(needed),
        thousands(capacity.value),
        capacity.at()
    );
    if capacity.load_bound {
        // A saturated load measured itself: the transport's ceiling lies higher, unknown.
        found.say(
            Weight::Unmeasured,
            Constraint::Throughput,
            format!(
                "{measured}, but the load was the limit there, so the transport's own ceiling \
                 was not reached"
            ),
        );
    } else {
        found.say(Weight::Excludes, Constraint::Throughput, measured);
    }
}
