//! Two-way traffic, declared once for every transport that carries it: `--upstream-rate R`
//! messages per second from each subscriber, `--upstream-echo` to copy each to the sender's
//! room, and the planted `--upstream-delay` fault. Each transport sends in its own idiom (on
//! its connection, an HTTP POST, a gRPC call, an MQTT publish); what they share is here: the
//! sender's open-loop schedule ([`schedule`]) and the HTTP route and sender ([`http`]).

mod http;
mod schedule;

pub use http::UPSTREAM_PATH;
pub(crate) use http::{answer, post_each, request, send_one, with_upstream};
pub(crate) use schedule::{outbox, together, Duplex, Outbox, Schedule};

use std::time::Duration;

use super::listener::DROP_EVERY;
use super::resume::{CHURN, OUTAGE};
use super::storm::STORM_AFTER;
use super::{Setting, Side};
use crate::event::{Rate, StreamSpec};
use crate::hub::UpstreamOptions;

/// Messages per second each subscriber sends up.
pub static UPSTREAM_RATE: Setting<f64> = Setting {
    name: "upstream-rate",
    help: "Two-way: messages per second each subscriber sends to the server while the stream \
           runs, each on its own schedule from the stream's start (so a stall cannot hide), \
           timed from that schedule to the server's receipt (0: none)",
    side: Side::Both,
    default: 0.0,
    min: 0.0,
};

/// Whether the server copies each message to the sender's room.
pub static UPSTREAM_ECHO: Setting<bool> = Setting {
    name: "upstream-echo",
    help: "Two-way: the server copies each message to the sender's room (every subscriber of \
           it, the sender too); the sender times its own copy's round trip and every member \
           times the copies it gets",
    side: Side::Both,
    default: false,
    min: false,
};

/// A planted delay in the server's handling of each message.
pub static UPSTREAM_DELAY: Setting<Duration> = Setting {
    name: "upstream-delay",
    help: "Fault: the server holds each message this long before handling it (a slow \
           handler), so the round trip must read this much more (0s: none)",
    side: Side::Server,
    default: Duration::ZERO,
    min: Duration::ZERO,
};

/// How the server takes messages up for a stream of `spec` under `settings`, from at most
/// `max_senders` senders; `None` when the subscribers send none.
pub fn options(
    settings: &crate::settings::SettingValues,
    spec: &StreamSpec,
    max_senders: usize,
) -> Option<UpstreamOptions> {
    let rate = settings.get(&UPSTREAM_RATE).ok().flatten().unwrap_or(0.0);
    if rate <= 0.0 {
        return None;
    }
    let delay = settings
        .get(&UPSTREAM_DELAY)
        .ok()
        .flatten()
        .unwrap_or_default();
    Some(UpstreamOptions {
        per_sender: per_sender(rate, spec),
        echo: settings.get(&UPSTREAM_ECHO).ok().flatten().unwrap_or(false),
        delay: (!delay.is_zero()).then_some(delay),
        max_senders,
    })
}

/// Messages each sender sends over `spec`'s stream at `rate` per second.
pub fn per_sender(rate: f64, spec: &StreamSpec) -> u64 {
    crate::upstream::per_sender(rate, spec.count, scheduled_rate(spec).unwrap_or(0.0))
}

/// The stream's events per second, where it has a schedule.
fn scheduled_rate(spec: &StreamSpec) -> Option<f64> {
    match spec.rate {
        Rate::PerSecond(rate) => Some(rate),
        Rate::Max => None,
    }
}

/// Why two-way traffic cannot run as asked, if it cannot: the messages last as long as the
/// stream's schedule, so there must be one; and a fault that cuts connections would lose
/// messages and copies in flight, which no client sends again yet.
pub fn refusal(settings: &crate::settings::SettingValues, spec: &StreamSpec) -> Option<String> {
    let rate = settings.get(&UPSTREAM_RATE).ok().flatten().unwrap_or(0.0);
    if rate <= 0.0 {
        return None;
    }
    if scheduled_rate(spec).is_none() {
        return Some(
            "--upstream-rate needs a stream at a set rate (not --rate max): the messages go \
             on for as long as the stream is scheduled to"
                .into(),
        );
    }
    // A reconnect loses the messages and copies in flight, and nothing sends them again yet.
    let cutting = [
        (DROP_EVERY.name, !DROP_EVERY.read(settings).is_zero()),
        (STORM_AFTER.name, !STORM_AFTER.read(settings).is_zero()),
        (OUTAGE.name, !OUTAGE.read(settings).is_zero()),
        (CHURN.name, CHURN.read(settings) > 0),
    ];
    cutting.iter().find(|(_, on)| *on).map(|(name, _)| {
        format!(
            "--upstream-rate with --{name}: a reconnect would lose the messages and copies in \
             flight, and no client sends them again yet; measure two-way traffic and that \
             fault apart"
        )
    })
}
