//! The validated scenario a run measured, as its results record it: what `pushbench run`
//! executes and what reports describe. Flags and scenario files become one in
//! [`crate::scenario`], above; this is the plain data below the harness that runs it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{PayloadSizes, Rate, StreamSpec};
use crate::payload::PayloadKind;
use crate::protocol::open_files::{server_processes_for, subscribers_per_process};
use crate::settings::{Declared, SettingValues};
use crate::transport::Transport;
use crate::workload::Workload;

fn broadcast() -> Vec<Workload> {
    vec![Workload::Broadcast]
}

fn is_broadcast(workloads: &Vec<Workload>) -> bool {
    *workloads == broadcast()
}

/// How long a run may take unless told.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The p99 budget `--find-max` holds to unless told, milliseconds.
pub const DEFAULT_P99_BUDGET_MS: f64 = 50.0;

/// What `--find-max` steps up.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Stepped {
    /// The offered rate, doubling: the highest rate that holds.
    #[default]
    Rate,
    /// The subscribers, doubling at a fixed rate each: the most that hold (the subscriber knee).
    Subscribers,
}

impl Stepped {
    /// Whether it is the default, which results leave out.
    pub fn is_rate(&self) -> bool {
        *self == Stepped::Rate
    }
}

/// A validated scenario: what `pushbench run` measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Scenario {
    /// Its name (a preset's file stem, or `custom`).
    pub name: String,
    /// Transports, measured one after another in this order.
    #[schemars(with = "Vec<String>")]
    pub transports: Vec<Transport>,
    /// Subscriber counts, one run each.
    pub subscribers: Vec<usize>,
    /// Offered rate.
    #[schemars(with = "String")]
    pub rate: Rate,
    /// Events per run.
    pub events: u64,
    /// Payload sizes, one run each (each may itself cycle several sizes).
    #[schemars(with = "Vec<String>")]
    pub payloads: Vec<PayloadSizes>,
    /// What the payloads look like (left out when random, as runs before it was a choice).
    #[serde(default, skip_serializing_if = "PayloadKind::is_random")]
    #[schemars(with = "Option<String>")]
    pub payload_kind: PayloadKind,
    /// The workload shapes swept, one run each (absent in older results: broadcast).
    #[serde(default = "broadcast", skip_serializing_if = "is_broadcast")]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub workloads: Vec<Workload>,
    /// Seed for the payload bytes and room membership.
    pub seed: u64,
    /// Left out of the latency figures at the start of each stream.
    #[serde(with = "secs")]
    #[schemars(with = "f64")]
    pub warmup: Duration,
    /// Runs of each combination.
    pub repeat: u32,
    /// Subscribers are held idle this long before the stream.
    #[serde(with = "secs")]
    #[schemars(with = "f64")]
    pub idle: Duration,
    /// The server's resources were sampled this often through each stream (absent or zero:
    /// only at its start and end).
    #[serde(default, with = "secs", skip_serializing_if = "Duration::is_zero")]
    #[schemars(with = "f64")]
    pub resources_every: Duration,
    /// Transport settings given (canonical text), each a list of the values swept; settings
    /// not given run at their declared defaults.
    #[serde(default)]
    pub settings: BTreeMap<String, Vec<String>>,
    /// Longest a run may take.
    #[serde(with = "secs")]
    #[schemars(with = "f64")]
    pub timeout: Duration,
    /// Load worker processes (absent: one per load CPU).
    #[serde(default)]
    pub load_workers: Option<usize>,
    /// Step the offered rate (or the subscribers) up to find the highest that holds.
    pub find_max: bool,
    /// What `find_max` steps up.
    #[serde(default, skip_serializing_if = "Stepped::is_rate")]
    pub find_max_of: Stepped,
    /// p99 latency budget for `find_max`, milliseconds.
    pub p99_budget_ms: f64,
    /// With `find_max` of subscribers: the server's resident memory past which a level fails,
    /// MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget_mb: Option<f64>,
    /// The network namespace the server runs in (absent: this one, on loopback).
    #[serde(default)]
    pub server_netns: Option<String>,
    /// The design this run measured (`pushbench recommend --measure`), and how it was scaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub design: Option<DesignRun>,
}

/// A design measured by `pushbench recommend --measure`: its name, the design as this run
/// measured it (scaled to the machine and the time budget), and every scaling, stated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DesignRun {
    /// The design's name.
    pub name: String,
    /// The design as given, in the design file's keys.
    pub given: serde_json::Value,
    /// What this run measured of it: `delivery` (one way, no fault), `two-way`, `outage`,
    /// `churn` or `storms`.
    pub facet: String,
    /// The design as measured, in the design file's keys (subscribers, rate, downtime, CPU
    /// cores as scaled).
    pub measured_as: serde_json::Value,
    /// Each scaling, as a sentence ("50,000 subscribers measured as 2,000: ...").
    pub scalings: Vec<String>,
}

impl Scenario {
    /// The scenario of one measurement put together from its parts (`pushbench merge`): one
    /// transport, one subscriber count, one stream, measured once, from its start.
    pub fn of_one_stream(
        name: &str,
        transport: Transport,
        subscribers: usize,
        stream: &StreamSpec,
    ) -> Self {
        Self {
            name: name.to_owned(),
            transports: vec![transport],
            subscribers: vec![subscribers],
            // The scenario's rate and events are each stream's.
            rate: stream.per_stream_rate(),
            events: stream.per_stream(),
            payloads: vec![stream.payload.clone()],
            payload_kind: stream.kind,
            workloads: vec![stream.workload],
            seed: stream.seed,
            warmup: Duration::ZERO,
            repeat: 1,
            idle: Duration::ZERO,
            resources_every: Duration::ZERO,
            settings: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            load_workers: None,
            find_max: false,
            find_max_of: Stepped::Rate,
            p99_budget_ms: DEFAULT_P99_BUDGET_MS,
            memory_budget_mb: None,
            server_netns: None,
            design: None,
        }
    }

    /// How many load workers a combination of `subscribers` runs: as asked, or one per load
    /// CPU; more when that many would not fit in as many processes' open files.
    pub fn load_workers(&self, load_cpus: Option<&[usize]>, subscribers: usize) -> usize {
        self.load_workers
            .unwrap_or_else(|| load_cpus.map_or(1, <[usize]>::len))
            .max(subscribers.div_ceil(subscribers_per_process()))
            .max(1)
    }

    /// How many server processes serve a combination of `subscribers` (SO_REUSEPORT).
    pub fn server_processes(&self, subscribers: usize) -> usize {
        server_processes_for(subscribers)
    }

    /// The stream of one run: the global stream of `workload` for `subscribers`, where
    /// each stream has the scenario's events and rate.
    pub fn spec(
        &self,
        payload: &PayloadSizes,
        workload: Workload,
        subscribers: usize,
    ) -> StreamSpec {
        // Every combination was validated in `resolve`.
        StreamSpec::new(self.seed, self.events, payload.clone(), self.rate)
            .expect("validated")
            .with_kind(self.payload_kind)
            .with_workload(workload, subscribers)
    }

    /// The settings each run of a transport takes, given every setting it takes (its own and
    /// the harness's): one entry per combination of the values swept, each with every setting of the transport (defaults filled
    /// in), paired with just the swept ones (which tell its rows apart).
    pub fn variants(
        &self,
        settings: &[&'static dyn Declared],
    ) -> Vec<(SettingValues, SettingValues)> {
        let mut variants = vec![(SettingValues::default(), SettingValues::default())];
        for setting in settings {
            let given = self.settings.get(setting.name());
            let values = given
                .cloned()
                .unwrap_or_else(|| vec![setting.default_text()]);
            let swept = values.len() > 1;
            variants = variants
                .into_iter()
                .flat_map(|(all, varied)| {
                    values.iter().map(move |value| {
                        let mut all = all.clone();
                        let mut varied = varied.clone();
                        all.0.insert(setting.name().to_owned(), value.clone());
                        if swept {
                            varied.0.insert(setting.name().to_owned(), value.clone());
                        }
                        (all, varied)
                    })
                })
                .collect();
        }
        variants
    }

    /// The scenario in one sentence, for reports.
    pub fn describe(&self) -> String {
        let subs: Vec<String> = self.subscribers.iter().map(|n| n.to_string()).collect();
        let kind = match self.payload_kind {
            PayloadKind::Random => String::new(),
            kind => format!(" {kind}"),
        };
        let payloads: Vec<String> = self
            .payloads
            .iter()
            .map(|p| format!("{p} B{kind}"))
            .collect();
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(name, values)| format!("{name} {}", values.join(" / ")))
            .collect();
        format!(
            "{} events at {} ev/s, payload {}, to {} subscriber(s), {} transport(s), {} repeat(s){}",
            self.events,
            self.rate,
            payloads.join(" / "),
            subs.join(" / "),
            self.transports.len(),
            self.repeat,
            if settings.is_empty() {
                String::new()
            } else {
                format!("; {}", settings.join(", "))
            }
        )
    }
}

/// Durations as decimal seconds in the results.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
