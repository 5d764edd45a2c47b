//! A design made into the runs that measure it on this machine (`recommend --measure`): its
//! fan-out, rate, payload, shape and conditions as `run` settings, one run per facet the
//! recommendation judges (delivery one way with no fault; the round trip; an outage; churn; a
//! storm), each scaled to what the machine holds and the time budget allows. Per-subscriber
//! rate, payload and shape are kept; subscribers are reduced, very low rates and long outages
//! compressed, each by a stated factor; a design that cannot be scaled honestly is refused with
//! what would measure it.

use std::time::Duration;

use crate::harness::cpu_limit::SERVER_CPU_LIMIT;
use crate::harness::settings::settings_of;
use crate::link::via::{Via, VIA};
use crate::recommend::assess::polling_interval;
use crate::recommend::design::{Delivery, Design};
use crate::results::format::thousands;
use crate::results::scenario::DesignRun;
use crate::scenario::{Counts, Settings, Shapes, TransportSet};
use crate::setting_flags::{SettingFlags, RUN};
use crate::settings::{Declared, Value};
use crate::transport::resume::{CHURN, OUTAGE, OUTAGE_AFTER, RETRY_WAITS};
use crate::transport::storm::STORM_AFTER;
use crate::transport::tls::TLS;
use crate::transport::upstream::{UPSTREAM_ECHO, UPSTREAM_RATE};
use crate::transport::Transport;
use crate::transport::{CLIENT_IMPL, SERVER_IMPL};
use crate::workload::Workload;

/// What this machine and the user allow a design's measurement.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time for all of one transport's runs, stream and set-up.
    pub budget: Duration,
    /// Most subscribers one run connects.
    pub max_subscribers: usize,
    /// Most deliveries a second one run asks of the load, so the load is never the limit.
    pub max_deliveries_per_s: f64,
    /// Whether a CPU quota can be put on the server here (a writable cgroup).
    pub cpu_limit_possible: bool,
    /// CPUs the server runs on (a quota above them limits nothing).
    pub server_cpus: f64,
}

impl Limits {
    /// The limits on this machine: whether a CPU quota can be written here (tried, then
    /// removed), and the CPUs the server gets (half the machine's when `run` pins them).
    pub fn of_this_machine(
        budget: Duration,
        max_subscribers: usize,
        max_deliveries_per_s: f64,
    ) -> Self {
        use crate::harness::cpu_limit::{CpuLimit, CGROUP_ROOT};
        let probe = format!("pushbench-probe-{}", std::process::id());
        let cpu_limit_possible =
            CpuLimit::create(std::path::Path::new(CGROUP_ROOT), &probe, 0.5).is_ok();
        let server_cpus = match crate::metrics::process::split_cpus() {
            Some((_, server)) => server.len(),
            None => crate::metrics::process::available_cpus().len(),
        };
        Self {
            budget,
            max_subscribers,
            max_deliveries_per_s,
            cpu_limit_possible,
            server_cpus: server_cpus.max(1) as f64,
        }
    }
}

/// The share of the budget a run's stream may take; the rest connects, calibrates and drains.
const STREAM_SHARE: f64 = 0.5;
/// Latency samples a run wants across its subscribers, for a p99 that is not one sample's.
const SAMPLES: f64 = 10_000.0;
/// Fewest events each subscriber receives.
const MIN_EVENTS: f64 = 20.0;
/// Shortest stream, seconds.
const MIN_STREAM_SECS: f64 = 5.0;
/// Most a rate may be raised so events arrive within the budget: beyond, the connections'
/// idle time is no longer the design's in any useful sense.
const MAX_RATE_COMPRESSION: f64 = 1_000.0;
/// Most an outage may be shortened (the retry schedule with it).
const MAX_OUTAGE_COMPRESSION: f64 = 10.0;
/// Seconds of stream an outage needs around it: the fault starts a second in, and the
/// subscriber must catch up before the stream ends.
const OUTAGE_MARGIN_SECS: f64 = 4.0;
/// The smallest CPU quota the kernel's 100 ms period takes, cores.
const MIN_CPU_LIMIT: f64 = 0.01;

/// One run of a design's measurement.
#[derive(Clone, Debug)]
pub struct Facet {
    /// `delivery`, `two-way`, `outage`, `churn` or `storms`.
    pub name: &'static str,
    /// The run's settings.
    pub settings: Settings,
    /// What it records of the design.
    pub design_run: DesignRun,
}

/// The runs that measure a design, and what was scaled.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The design as measured.
    pub measured_as: Design,
    /// Every scaling, as a sentence.
    pub scalings: Vec<String>,
    /// One run per facet the design needs judged.
    pub facets: Vec<Facet>,
}

/// The runs that measure `design` over `transports` within `limits`, or why it cannot be
/// measured honestly here.
pub fn plan(design: &Design, transports: &[Transport], limits: &Limits) -> Result<Plan, String> {
    if transports.is_empty() {
        return Err("no transport is left to measure: the hard rules exclude them all".into());
    }
    let facet_names = facets_of(design);
    let stream_budget = limits.budget.as_secs_f64() * STREAM_SHARE / facet_names.len() as f64;
    let mut scaling = Scaling {
        design,
        measured: design.clone(),
        said: Vec::new(),
    };
    let subscribers = scaling.subscribers(limits);
    let stream_secs = scaling.rate(subscribers, stream_budget)?;
    let outage_scale = if facet_names.contains(&"outage") {
        scaling.outage(subscribers, stream_budget)?
    } else {
        1.0
    };
    let cpu_limit = scaling.cpu_quota(limits);
    scaling.unemulated(transports);
    let Scaling {
        measured,
        said: scalings,
        ..
    } = scaling;
    let base = Base {
        design,
        transports,
        subscribers,
        per_stream: design.rate / streams_each(design),
        stream_secs,
        workload: measured.workload,
        cpu_limit,
    };
    let facets = facet_names
        .iter()
        .map(|name| Facet {
            name,
            settings: base.settings(name, &measured, outage_scale),
            design_run: DesignRun {
                name: design.name.clone(),
                given: serde_json::to_value(design).unwrap_or_default(),
                facet: (*name).to_owned(),
                measured_as: serde_json::to_value(&measured).unwrap_or_default(),
                scalings: scalings.clone(),
            },
        })
        .collect();
    Ok(Plan {
        measured_as: measured,
        scalings,
        facets,
    })
}

/// Streams each subscriber follows (the rooms it is in).
fn streams_each(design: &Design) -> f64 {
    match design.workload {
        Workload::Topics { per_subscriber, .. } => f64::from(per_subscriber),
        _ => 1.0,
    }
}

/// The design as it will be measured, scaled step by step, with every step said.
struct Scaling<'a> {
    design: &'a Design,
    measured: Design,
    said: Vec<String>,
}

impl Scaling<'_> {
    /// Subscribers: what one run holds, and what the load receives without being the limit.
    /// Rooms keep their size and churn its share of the subscribers.
    fn subscribers(&mut self, limits: &Limits) -> u64 {
        let design = self.design;
        let by_load = (limits.max_deliveries_per_s / design.rate).floor().max(1.0) as u64;
        let subscribers = design
            .subscribers
            .min(limits.max_subscribers as u64)
            .min(by_load)
            .max(1);
        if subscribers == design.subscribers {
            return subscribers;
        }
        let why = if subscribers == by_load {
            format!(
                "{} deliveries/s, the most one run asks of the load here",
                thousands(limits.max_deliveries_per_s)
            )
        } else {
            "the most one run connects here (--max-subscribers)".to_owned()
        };
        self.said.push(format!(
            "{} subscribers measured as {} ({why}); per-delivery CPU, per-connection memory and \
             bytes per event scale to the design's count; latency was measured at the smaller \
             fan-out",
            thousands(design.subscribers as f64),
            thousands(subscribers as f64)
        ));
        self.measured.subscribers = subscribers;
        let share = subscribers as f64 / design.subscribers as f64;
        self.rooms(share);
        if design.churn > 0 {
            self.measured.churn = ((design.churn as f64 * share).round() as u64).max(1);
            self.said.push(format!(
                "churn of {}/s measured as {}/s, the same share of the subscribers",
                design.churn, self.measured.churn
            ));
        }
        subscribers
    }

    /// Rooms for `share` of the subscribers, each about as large as the design's, so each
    /// event fans out as far as in the design.
    fn rooms(&mut self, share: f64) {
        let Workload::Topics {
            topics,
            per_subscriber,
            membership,
        } = self.design.workload
        else {
            return;
        };
        let scaled = ((f64::from(topics) * share).round() as u32)
            .max(per_subscriber)
            .max(1);
        if scaled < topics {
            self.said.push(format!(
                "{topics} rooms measured as {scaled}, each about as large as the design's"
            ));
        }
        self.measured.workload = Workload::Topics {
            topics: scaled,
            per_subscriber,
            membership,
        };
    }

    /// The stream's length: long enough for a p99 across the subscribers, within the budget.
    /// A rate so low that too few events would arrive in it is raised, and says what that
    /// changes; too low to raise honestly, it is refused with the command that measures it.
    fn rate(&mut self, subscribers: u64, stream_budget: f64) -> Result<f64, String> {
        let design = self.design;
        let wanted_secs = (SAMPLES / subscribers as f64).max(MIN_EVENTS) / design.rate;
        let stream_secs = wanted_secs.max(MIN_STREAM_SECS).min(stream_budget);
        let arriving = design.rate * stream_secs;
        if arriving >= MIN_EVENTS {
            return Ok(stream_secs);
        }
        let factor = MIN_EVENTS / arriving;
        let needed_secs = MIN_EVENTS / design.rate;
        if factor > MAX_RATE_COMPRESSION {
            return Err(format!(
                "an event every {} s per subscriber: {MIN_EVENTS} events would take {} s, more \
                 than {MAX_RATE_COMPRESSION}× compression fits in the budget (the connections \
                 would no longer sit idle as the design's do); measure it with `pushbench run \
                 --subscribers {subscribers} --rate {} --duration {:.0}` and the \
                 idle-connections preset",
                round(1.0 / design.rate),
                thousands(needed_secs),
                design.rate / streams_each(design),
                needed_secs
            ));
        }
        self.measured.rate = design.rate * factor;
        self.measured.upstream_rate = design.upstream_rate * factor;
        self.said.push(format!(
            "an event every {} s per subscriber measured as one every {} s (×{:.0}), so \
             {MIN_EVENTS} arrive within the budget: connections idle less between events than \
             the design's, so idle memory and keep-alives are judged from idle runs, not this one",
            round(1.0 / design.rate),
            round(1.0 / self.measured.rate),
            factor
        ));
        Ok(stream_secs)
    }

    /// The outage: as long as the design's where the budget allows, else shortened with the
    /// retry schedule alike (by the factor returned), up to what keeps the behaviour the
    /// design's.
    fn outage(&mut self, subscribers: u64, stream_budget: f64) -> Result<f64, String> {
        let downtime = self.design.downtime_secs;
        let room = (stream_budget - OUTAGE_MARGIN_SECS).max(1.0);
        if downtime <= room {
            return Ok(1.0);
        }
        let scale = downtime / room;
        if scale > MAX_OUTAGE_COMPRESSION {
            return Err(format!(
                "a {} s outage would have to be compressed {scale:.0}× to fit the budget, more \
                 than the {MAX_OUTAGE_COMPRESSION}× that keeps the retry and replay behaviour \
                 the design's; measure it with `pushbench run --subscribers {subscribers} \
                 --rate {} --outage {downtime}s --duration {:.0}` or a larger --budget",
                thousands(downtime),
                self.design.rate / streams_each(self.design),
                downtime + OUTAGE_MARGIN_SECS * 2.0
            ));
        }
        self.measured.downtime_secs = downtime / scale;
        self.said.push(format!(
            "downtime {} s compressed to {} s (×{scale:.1}) with the retry schedule scaled alike",
            thousands(downtime),
            round(self.measured.downtime_secs)
        ));
        Ok(scale)
    }

    /// The CPU budget, as a quota where the design runs at its own fan-out and rate. Scaled
    /// down, its per-event work (publishing, an encoding shared by every subscriber) would not
    /// shrink with the deliveries, so no share of the budget is fair: CPU is then judged by
    /// the measured CPU per delivery alone.
    fn cpu_quota(&mut self, limits: &Limits) -> Option<f64> {
        let (design, measured) = (self.design, &self.measured);
        let scaled = measured.subscribers != design.subscribers || measured.rate != design.rate;
        let cores = design.cpu_cores?;
        if scaled {
            self.said.push(format!(
                "the {cores} core CPU budget is no quota on a scaled run (per-event work does \
                 not shrink with the subscribers): judged by measured CPU per delivery"
            ));
            return None;
        }
        limit_possible(limits, cores, &mut self.said).then_some(cores.max(MIN_CPU_LIMIT))
    }

    /// What is not measured as the design says: polling faster than a transport takes, and
    /// the network's idle cut.
    fn unemulated(&mut self, transports: &[Transport]) {
        let interval = Duration::from_secs_f64(polling_interval(self.design));
        for transport in transports {
            if let crate::transport::Requests::PerInterval(setting) = transport.traits().requests {
                if interval < setting.min {
                    self.said.push(format!(
                        "{} polls every {} for the budget, below the {} --{} takes: measured at {}",
                        transport.name(),
                        interval.show(),
                        setting.min.show(),
                        setting.name,
                        setting.min.show()
                    ));
                }
            }
        }
        if self.design.idle_timeout_secs.is_some() {
            self.said.push(
                "the network's idle cut is not emulated: judged by each transport's keep-alive"
                    .into(),
            );
        }
    }
}

/// The facets a design needs judged: delivery always; the others where the design has them.
fn facets_of(design: &Design) -> Vec<&'static str> {
    let mut facets = vec!["delivery"];
    if design.upstream_rate > 0.0 {
        facets.push("two-way");
    }
    if design.delivery == Delivery::AtLeastOnce && design.downtime_secs > 0.0 {
        facets.push("outage");
    }
    if design.churn > 0 {
        facets.push("churn");
    }
    if design.storms {
        facets.push("storms");
    }
    facets
}

/// Whether the design's CPU budget can become a quota here; says why not where it cannot.
fn limit_possible(limits: &Limits, cores: f64, scalings: &mut Vec<String>) -> bool {
    if !limits.cpu_limit_possible {
        scalings.push(format!(
            "the {cores} core CPU budget is not a quota here (no writable cgroup): judged by \
             measured CPU per delivery"
        ));
        return false;
    }
    if cores >= limits.server_cpus {
        scalings.push(format!(
            "the {cores} core CPU budget is no less than the server's {} CPU(s) here: no quota",
            limits.server_cpus
        ));
        return false;
    }
    true
}

/// What every facet's run shares.
struct Base<'a> {
    design: &'a Design,
    transports: &'a [Transport],
    subscribers: u64,
    per_stream: f64,
    stream_secs: f64,
    workload: Workload,
    cpu_limit: Option<f64>,
}

impl Base<'_> {
    /// A facet's `run` settings.
    fn settings(&self, facet: &str, measured: &Design, outage_scale: f64) -> Settings {
        let mut given: Vec<(&'static dyn Declared, String)> = Vec::new();
        if self.design.tls {
            given.push((&TLS, true.show()));
        }
        if self.design.buffering_proxy {
            given.push((&VIA, Via::NginxBuffered.show()));
        }
        if let Some(limit) = self.cpu_limit {
            given.push((&SERVER_CPU_LIMIT, limit.show()));
        }
        // Polling as often as the budget needs (the latency rule's interval), for every
        // transport whose requests come at an interval.
        let interval = Duration::from_secs_f64(polling_interval(self.design));
        for transport in self.transports {
            if let crate::transport::Requests::PerInterval(setting) = transport.traits().requests {
                given.push((setting, interval.max(setting.min).show()));
            }
        }
        let rate = measured.rate / self.rate_divisor();
        let mut stream_secs = self.stream_secs;
        match facet {
            "two-way" => {
                given.push((&UPSTREAM_RATE, measured.upstream_rate.show()));
                given.push((&UPSTREAM_ECHO, self.design.echo.show()));
            }
            "outage" => {
                let outage = Duration::from_secs_f64(measured.downtime_secs);
                given.push((&OUTAGE, outage.show()));
                given.push((&OUTAGE_AFTER, Duration::from_secs(1).show()));
                stream_secs = stream_secs.max(measured.downtime_secs + OUTAGE_MARGIN_SECS);
                if outage_scale > 1.0 {
                    for setting in RETRY_WAITS {
                        given.push((setting, setting.default.div_f64(outage_scale).show()));
                    }
                }
            }
            "churn" => given.push((&CHURN, measured.churn.show())),
            "storms" => given.push((
                &STORM_AFTER,
                Duration::from_secs_f64(stream_secs / 3.0).show(),
            )),
            _ => {}
        }
        // Only what some transport measured takes: `run` refuses a setting none takes.
        let taken = |name: &str| {
            self.transports
                .iter()
                .any(|t| settings_of(*t).iter().any(|s| s.name() == name))
        };
        let mut given: std::collections::BTreeMap<String, Vec<String>> = given
            .into_iter()
            .filter(|(setting, _)| taken(setting.name()))
            .map(|(setting, value)| (setting.name().to_owned(), vec![value]))
            .collect();
        given.extend(self.deployed());
        let (workload, topics, per_subscriber, membership) = workload_flags(self.workload);
        Settings {
            name: Some(format!("design-{}-{facet}", self.design.name)),
            transports: Some(TransportSet(self.transports.to_vec())),
            subscribers: Some(Counts(vec![self.subscribers as usize])),
            rate: Some(crate::event::Rate::PerSecond(rate)),
            duration: Some(stream_secs.ceil()),
            payload: Some(crate::event::PayloadSizes::fixed(
                self.design.payload as usize,
            )),
            workload: workload.map(|w| Shapes(vec![w.to_owned()])),
            topics,
            topics_per_subscriber: per_subscriber,
            membership,
            transport_settings: SettingFlags::<RUN> { given },
            ..Settings::default()
        }
    }

    /// The implementations and servers the design deploys, as `run` takes them: each side's
    /// names that some measured transport has (every other transport runs its own).
    fn deployed(&self) -> Vec<(String, Vec<String>)> {
        let [mut servers, mut clients, mut outside] = [Vec::new(), Vec::new(), Vec::new()];
        for &transport in self.transports {
            let [server, client, profile] = self.design.implementations(transport);
            for (names, name) in [
                (&mut servers, server),
                (&mut clients, client),
                (&mut outside, profile),
            ] {
                if name != crate::transport::implementation::OWN && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let server: &dyn crate::settings::Declared = &crate::profile::SERVER;
        [
            (&SERVER_IMPL as &dyn crate::settings::Declared, servers),
            (&CLIENT_IMPL, clients),
            (server, outside),
        ]
        .into_iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(setting, names)| {
            let names = names.into_iter().map(str::to_owned).collect();
            (setting.name().to_owned(), names)
        })
        .collect()
    }

    /// A subscriber in several rooms receives each room's stream: `--rate` is per stream.
    fn rate_divisor(&self) -> f64 {
        self.design.rate / self.per_stream
    }
}

/// The workload as `run`'s flags: its shape, rooms, rooms per subscriber and membership.
fn workload_flags(
    workload: Workload,
) -> (
    Option<&'static str>,
    Option<u32>,
    Option<u32>,
    Option<String>,
) {
    match workload {
        Workload::Broadcast => (None, None, None, None),
        Workload::Unicast => (Some("unicast"), None, None, None),
        Workload::Topics {
            topics,
            per_subscriber,
            membership,
        } => (
            Some("topics"),
            Some(topics),
            Some(per_subscriber),
            Some(membership.show()),
        ),
    }
}

/// A number with at most three significant decimals, for sentences.
fn round(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommend::design::DesignSettings;

    fn design(toml: &str) -> Design {
        let mut settings = DesignSettings::from_toml(toml).unwrap();
        settings.name = Some("test".into());
        settings.resolve().unwrap()
    }

    fn limits(cpu_limit_possible: bool) -> Limits {
        Limits {
            budget: Duration::from_secs(120),
            max_subscribers: 2_000,
            max_deliveries_per_s: 50_000.0,
            cpu_limit_possible,
            server_cpus: 1.0,
        }
    }

    fn given<'a>(facet: &'a Facet, name: &str) -> Option<&'a str> {
        let values = facet.settings.transport_settings.given.get(name)?;
        values.first().map(String::as_str)
    }

    const ALL: &[Transport] = Transport::ALL;

    /// A design's own runs run the libraries it deploys, on the transports that have them
    /// (every other transport runs its own); a design that names none runs pushbench's own.
    #[test]
    fn the_runs_use_the_libraries_a_design_deploys() {
        let mut deploying = design(include_str!("../../designs/chat.toml"));
        deploying.deploys = vec!["tokio-tungstenite".into(), "eventsource-client".into()];
        let planned = plan(&deploying, ALL, &limits(true)).unwrap();
        for facet in &planned.facets {
            let named = |name: &str| facet.settings.transport_settings.given.get(name).cloned();
            assert_eq!(
                named("server-impl"),
                Some(vec!["tokio-tungstenite".to_owned()])
            );
            let clients = named("client-impl").unwrap_or_default();
            assert_eq!(clients, ["tokio-tungstenite", "eventsource-client"]);
        }
        let own = design(include_str!("../../designs/chat.toml"));
        let plan = plan(&own, ALL, &limits(true)).unwrap();
        assert!(plan
            .facets
            .iter()
            .all(|f| given(f, "server-impl").is_none()));
    }

    #[test]
    fn a_design_the_machine_holds_runs_unscaled_one_run_per_facet() {
        let chat = design(include_str!("../../designs/chat.toml"));
        let plan = plan(&chat, ALL, &limits(true)).unwrap();
        assert_eq!(plan.scalings, Vec::<String>::new());
        let names: Vec<&str> = plan.facets.iter().map(|f| f.name).collect();
        assert_eq!(names, ["delivery", "two-way", "outage", "storms"]);
        let [delivery, two_way, outage, storms] = &plan.facets[..] else {
            unreachable!()
        };
        assert_eq!(delivery.settings.subscribers, Some(Counts(vec![1000])));
        assert_eq!(given(delivery, "upstream-rate"), None);
        assert_eq!(given(two_way, "upstream-rate"), Some("0.2"));
        assert_eq!(given(two_way, "upstream-echo"), Some("on"));
        assert_eq!(given(outage, "outage"), Some("5s"));
        assert!(given(storms, "storm-after").is_some());
        assert_eq!(delivery.design_run.facet, "delivery");
        assert_eq!(
            delivery.settings.name.as_deref(),
            Some("design-test-delivery")
        );
    }

    #[test]
    fn past_what_the_load_receives_subscribers_shrink_and_the_cpu_budget_is_no_quota() {
        let services = design(
            "direction = \"server-to-server\"\nconsumers = \"services\"\nsubscribers = 5\n\
             rate = 50000\np99-budget-ms = 1\ncpu-cores = 1",
        );
        let plan = plan(&services, ALL, &limits(true)).unwrap();
        assert_eq!(plan.measured_as.subscribers, 1);
        assert_eq!(plan.measured_as.rate, 50_000.0);
        let delivery = &plan.facets[0];
        assert_eq!(given(delivery, "server-cpu-limit"), None);
        // Half the 1 ms budget is below the 1 ms the polling interval takes: said so.
        let interval = ALL
            .iter()
            .find_map(|t| match t.traits().requests {
                crate::transport::Requests::PerInterval(setting) => Some(setting),
                _ => None,
            })
            .unwrap();
        assert_eq!(given(delivery, interval.name), Some("1ms"));
        let said = plan.scalings.join("\n");
        assert!(said.contains("5 subscribers measured as 1"), "{said}");
        assert!(said.contains("no quota on a scaled run"), "{said}");
        assert!(said.contains(&format!("--{}", interval.name)), "{said}");
    }

    #[test]
    fn an_unscaled_design_runs_under_its_cpu_budget_where_a_cgroup_can_be_written() {
        let small = design("subscribers = 10\nrate = 100\ncpu-cores = 0.5");
        let plan = plan(&small, ALL, &limits(true)).unwrap();
        assert_eq!(given(&plan.facets[0], "server-cpu-limit"), Some("0.5"));
        assert_eq!(plan.scalings, Vec::<String>::new());
        let plan = super::plan(&small, ALL, &limits(false)).unwrap();
        assert_eq!(given(&plan.facets[0], "server-cpu-limit"), None);
        assert!(plan.scalings.join("\n").contains("no writable cgroup"));
    }

    #[test]
    fn a_rare_event_and_a_long_outage_are_compressed_by_a_stated_factor() {
        let fleet = design(
            "direction = \"server-to-browser\"\nconsumers = \"browsers\"\nsubscribers = 10000\n\
             rate = 0.001\ndelivery = \"at-least-once\"\ndowntime-secs = 40",
        );
        let plan = plan(&fleet, ALL, &limits(true)).unwrap();
        assert_eq!(plan.measured_as.subscribers, 2_000);
        // 20 events each within half of the budget's share for two runs (30 s).
        assert!((plan.measured_as.rate - 20.0 / 30.0).abs() < 1e-9);
        assert!((plan.measured_as.downtime_secs - 26.0).abs() < 1e-9);
        let said = plan.scalings.join("\n");
        assert!(said.contains("×667"), "{said}");
        assert!(said.contains("downtime 40 s compressed to 26 s"), "{said}");
        let outage = &plan.facets[1];
        assert_eq!(given(outage, "outage"), Some("26s"));
        assert!(RETRY_WAITS.iter().all(|s| given(outage, s.name).is_some()));
    }

    #[test]
    fn what_cannot_be_scaled_honestly_is_refused_with_what_would_measure_it() {
        let silent = design("subscribers = 10\nrate = 0.00001");
        let why = plan(&silent, ALL, &limits(true)).unwrap_err();
        assert!(
            why.contains("compression") && why.contains("pushbench run"),
            "{why}"
        );
        let long = design(
            "subscribers = 10\nrate = 10\ndelivery = \"at-least-once\"\ndowntime-secs = 3600",
        );
        let why = plan(&long, ALL, &limits(true)).unwrap_err();
        assert!(
            why.contains("3,600 s outage") && why.contains("--outage 3600s"),
            "{why}"
        );
        assert!(plan(&long, &[], &limits(true)).is_err());
    }
}
