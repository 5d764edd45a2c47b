//! One transport against one design: hard rules from what the transport is
//! ([`Traits`](crate::transport::Traits)) exclude; measured figures decide whether it fits the
//! budgets and how well. Every reason names the [`Constraint`] it answers and, where there is
//! one, the measured figure behind it. Each rule is one function in [`rules`]; what the
//! design would cost is estimated apart, in [`costs`].

mod constraint;
mod costs;
mod reconnects;
mod rules;

pub use constraint::Constraint;
pub use costs::{polling_interval, Costs};

use serde::Serialize;

use super::design::Design;
use super::evidence::Evidence;
use crate::harness::settings::settings_of;
use crate::link::via::VIA;
use crate::transport::tls::TLS;
use crate::transport::{Requests, Transport, DEFAULT_HEARTBEAT};
use crate::workload::Workload;

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
    /// The design constraint it answers (or the evidence).
    pub constraint: Constraint,
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

/// What every rule reads: the transport, the design, the evidence, and the paces the
/// evidence measured the transport with.
pub(super) struct Facts<'a> {
    pub transport: Transport,
    pub design: &'a Design,
    pub evidence: &'a Evidence,
    /// The keep-alive interval the evidence was measured with, seconds.
    pub heartbeat: f64,
    /// Whether requests come at an interval (short polling), whose value is `poll_interval`.
    pub per_interval: bool,
    /// The polling interval measured, seconds (0 when none paces the transport).
    pub poll_interval: f64,
    /// The request hold measured, seconds (the heartbeat when none holds requests).
    pub hold: f64,
}

impl<'a> Facts<'a> {
    fn of(transport: Transport, design: &'a Design, evidence: &'a Evidence) -> Self {
        let heartbeat = evidence
            .heartbeat_secs()
            .unwrap_or(DEFAULT_HEARTBEAT.as_secs_f64());
        let requests = transport.traits().requests;
        // The interval or hold that paces this transport's requests, as its evidence measured
        // it (the transport declares which of its settings that is).
        let pace = requests
            .pace()
            .map(|setting| evidence.setting(transport, design, setting).as_secs_f64());
        Self {
            transport,
            design,
            evidence,
            heartbeat,
            per_interval: matches!(requests, Requests::PerInterval(_)),
            poll_interval: pace.unwrap_or(0.0),
            hold: pace.unwrap_or(heartbeat),
        }
    }
}

/// What the rules found so far: their reasons, the costs they estimated, and a command that
/// would measure what is missing.
#[derive(Default)]
pub(super) struct Findings {
    pub reasons: Vec<Reason>,
    pub costs: Costs,
    pub to_measure: Option<String>,
}

impl Findings {
    /// Records one reason.
    pub fn say(&mut self, weight: Weight, constraint: Constraint, text: String) {
        self.reasons.push(Reason {
            weight,
            constraint,
            text,
        });
    }

    /// Whether a hard rule or a budget has excluded it so far (it then needs no measuring).
    pub fn excluded(&self) -> bool {
        self.reasons.iter().any(|r| r.weight == Weight::Excludes)
    }

    /// The verdict the reasons add up to.
    fn verdict(&self) -> Verdict {
        if self.excluded() {
            Verdict::Excluded
        } else if self.reasons.iter().any(|r| r.weight == Weight::Caveat) {
            Verdict::FitsWithCaveats
        } else {
            Verdict::Fits
        }
    }
}

/// The rules, in the order their reasons are given: first what the transport is, then how
/// missed events come back, then what was measured.
const RULES: &[fn(&Facts<'_>, &mut Findings)] = &[
    rules::direction,
    rules::consumers,
    rules::network,
    rules::http_version,
    rules::subscribers_per_host,
    rules::idle_timeout,
    rules::delivery,
    rules::downtime_measured,
    rules::evidence,
    rules::latency,
    rules::round_trip,
    reconnects::storms,
    reconnects::churn,
    rules::memory,
    rules::quiet_connections,
    rules::regime,
    rules::cpu,
    rules::bandwidth,
    rules::throughput,
];

/// Judges one transport.
pub fn assess(transport: Transport, design: &Design, evidence: &Evidence) -> Assessment {
    let facts = Facts::of(transport, design, evidence);
    let mut findings = Findings::default();
    for rule in RULES {
        rule(&facts, &mut findings);
    }
    findings.costs.requests_per_s = Some(costs::requests_per_s(&facts));
    // A transport a hard rule excludes needs no measurement.
    let excluded = findings.excluded();
    Assessment {
        transport: transport.name(),
        verdict: findings.verdict(),
        reasons: findings.reasons,
        costs: findings.costs,
        to_measure: findings.to_measure.filter(|_| !excluded),
    }
}

/// The `pushbench run` command that measures a transport at the design's fan-out and rate,
/// under its conditions: its workload shape (`--rate` is per stream, so a subscriber in M
/// rooms receives M times it), TLS and buffering proxy.
pub fn run_command(transport: Transport, design: &Design) -> String {
    // A condition only where the transport takes it: `run` refuses a setting it does not.
    let takes = |name: &str| settings_of(transport).iter().any(|s| s.name() == name);
    let (shape, streams_each) = match design.workload {
        Workload::Broadcast => (String::new(), 1),
        Workload::Unicast => (" --workload unicast".to_owned(), 1),
        Workload::Topics {
            topics,
            per_subscriber,
            membership,
        } => (
            format!(
                " --workload topics --topics {topics} --topics-per-subscriber {per_subscriber} \
                 --membership {}",
                membership.show()
            ),
            per_subscriber,
        ),
    };
    let rate = design.rate / f64::from(streams_each);
    // The libraries the design deploys, where the transport has them.
    let [server_impl, client_impl, server] = design.implementations(transport);
    let named = |flag: &str, name: &str| match name {
        crate::transport::implementation::OWN => String::new(),
        name => format!(" --{flag} {name}"),
    };
    let libraries = named("server-impl", server_impl)
        + &named("client-impl", client_impl)
        + &named("server", server);
    // A lossy network is the namespace link's, which `scripts/netns-link` makes first.
    let loss = if design.packet_loss > 0.0 {
        format!(
            " --server-netns pbloss --packet-loss {} (after scripts/netns-link up pbloss \
             --delay 25ms)",
            crate::settings::Value::show(design.packet_loss)
        )
    } else {
        String::new()
    };
    format!(
        "pushbench run --transports {} --subscribers {} --rate {rate} --payload {} \
         --duration {}{shape}{}{}{libraries}{loss}",
        transport.name(),
        design.subscribers,
        design.payload,
        // Enough events for a p99 per subscriber, at least ten seconds.
        (100.0 / rate).max(10.0).ceil(),
        if design.tls && takes(TLS.name) {
            " --tls on"
        } else {
            ""
        },
        if design.buffering_proxy && takes(VIA.name) {
            " --via nginx-buffered"
        } else {
            ""
        },
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
