//! Flags and scenario TOML merged into one validated [`Scenario`] before anything runs. A
//! scenario file is plain TOML whose keys are the flags' names (`find-max = true`), and flags
//! given on the command line override the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::{PayloadSizes, Rate, SpecError, StreamSpec};
use crate::harness::settings::{declared_settings, settings_of};
use crate::payload::PayloadKind;
use crate::protocol::open_files::{
    open_file_limit, server_processes_for, subscribers_per_process, MAX_PROCESSES, RESERVED_FILES,
};
use crate::setting_flags::{SettingFlags, RUN};
use crate::settings::Value as _;
use crate::transport::compression::{Compression, COMPRESSION};
use crate::transport::{Requests, Transport};
use crate::workload::Workload;

pub use crate::results::scenario::Scenario;
use crate::results::scenario::{Stepped, DEFAULT_P99_BUDGET_MS, DEFAULT_TIMEOUT};

/// Why a scenario cannot run.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The scenario file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The scenario file is not valid (the message names the key and line).
    #[error("invalid scenario {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message: line, column, the key and what was expected.
        message: String,
    },
    /// A combination that cannot be measured.
    #[error("{0}")]
    Impossible(String),
    /// The stream itself is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// A set of transports: `all`, `streaming` (those whose subscribers each hold one connection
/// the stream flows on), `served` (those a shipped server profile serves), or names separated
/// by commas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "OneOrMany<String>", into = "Vec<String>")]
pub struct TransportSet(pub Vec<Transport>);

impl FromStr for TransportSet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "all" => return Ok(Self(Transport::ALL.to_vec())),
            // Those whose subscribers each hold one connection the whole stream flows on (the
            // soak's): read from what each declares, never listed here.
            "streaming" => {
                let streaming = Transport::ALL.iter().copied();
                let streaming =
                    streaming.filter(|t| matches!(t.spec().traits.requests, Requests::Stream));
                return Ok(Self(streaming.collect()));
            }
            // Those some server pushbench did not write serves (the servers presets'): read
            // from the shipped profiles, never listed here.
            "served" => {
                let profiles = crate::profile::shipped_profiles()?;
                let served = Transport::ALL
                    .iter()
                    .copied()
                    .filter(|t| profiles.iter().any(|p| p.subscribe.contains_key(t.name())));
                return Ok(Self(served.collect()));
            }
            _ => {}
        }
        let mut transports = Vec::new();
        for name in text.split(',').map(str::trim) {
            let transport = Transport::named(name).ok_or_else(|| {
                format!(
                    "unknown transport {name:?}: expected all, streaming, served, or some of {}",
                    Transport::names()
                )
            })?;
            if !transports.contains(&transport) {
                transports.push(transport);
            }
        }
        Ok(Self(transports))
    }
}

/// `--find-max` (and `find-max` in a scenario file): `true` or `rate`, `subscribers`, or
/// `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BoolOrText")]
pub enum FindMax {
    /// Not stepping.
    Off,
    /// Stepping the offered rate.
    Rate,
    /// Stepping the subscribers.
    Subscribers,
}

impl FromStr for FindMax {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "true" | "rate" => Ok(FindMax::Rate),
            "subscribers" => Ok(FindMax::Subscribers),
            "false" => Ok(FindMax::Off),
            other => Err(format!(
                "find-max {other:?}: expected rate (or true), subscribers, or false"
            )),
        }
    }
}

/// A scenario file's `find-max`: a boolean, or what to step.
#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrText {
    Bool(bool),
    Text(String),
}

impl TryFrom<BoolOrText> for FindMax {
    type Error = String;
    fn try_from(value: BoolOrText) -> Result<Self, String> {
        match value {
            BoolOrText::Bool(true) => Ok(FindMax::Rate),
            BoolOrText::Bool(false) => Ok(FindMax::Off),
            BoolOrText::Text(text) => text.parse(),
        }
    }
}

/// Either one value or a list of them, as TOML allows either for sweep keys.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

impl TryFrom<OneOrMany<String>> for TransportSet {
    type Error = String;
    fn try_from(names: OneOrMany<String>) -> Result<Self, String> {
        names.into_vec().join(",").parse()
    }
}

impl From<TransportSet> for Vec<String> {
    fn from(set: TransportSet) -> Self {
        set.0.iter().map(|t| t.name().to_owned()).collect()
    }
}

/// Subscriber counts to sweep: `100`, or `1,10,100,1000` (a list in TOML).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "OneOrMany<usize>", into = "Vec<usize>")]
pub struct Counts(pub Vec<usize>);

impl FromStr for Counts {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .map(|n| n.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
            .map_err(|_| {
                format!("expected a count or a comma-separated list of counts, got {text:?}")
            })
    }
}

impl TryFrom<OneOrMany<usize>> for Counts {
    type Error = String;
    fn try_from(counts: OneOrMany<usize>) -> Result<Self, String> {
        Ok(Self(counts.into_vec()))
    }
}

impl From<Counts> for Vec<usize> {
    fn from(counts: Counts) -> Self {
        counts.0
    }
}

/// Workload shapes to sweep: `broadcast`, or `broadcast,topics,unicast` (a list in TOML).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "OneOrMany<String>", into = "Vec<String>")]
pub struct Shapes(pub Vec<String>);

impl FromStr for Shapes {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.split(',').map(|s| s.trim().to_owned()).collect()))
    }
}

impl TryFrom<OneOrMany<String>> for Shapes {
    type Error = String;
    fn try_from(shapes: OneOrMany<String>) -> Result<Self, String> {
        Ok(Self(shapes.into_vec()))
    }
}

impl From<Shapes> for Vec<String> {
    fn from(shapes: Shapes) -> Self {
        shapes.0
    }
}

/// The workloads a run sweeps: each shape given, the topics parameters going to `topics`
/// (and refused when no `topics` shape is given, rather than ignored).
fn workloads(
    shapes: Option<Shapes>,
    topics: Option<u32>,
    per_subscriber: Option<u32>,
    membership: Option<&str>,
) -> Result<Vec<Workload>, String> {
    let shapes = shapes.map_or_else(|| vec!["broadcast".to_owned()], |s| s.0);
    let shaped = topics.is_some() || per_subscriber.is_some() || membership.is_some();
    if shaped && !shapes.iter().any(|s| s == "topics") {
        return Err(
            "--topics, --topics-per-subscriber and --membership shape `--workload topics`,              which is not among the workloads given"
                .into(),
        );
    }
    let mut workloads = Vec::new();
    for shape in &shapes {
        let workload = match shape.as_str() {
            "topics" => Workload::parse(shape, topics, per_subscriber, membership)?,
            other => Workload::parse(other, None, None, None)?,
        };
        if workloads.contains(&workload) {
            return Err(format!("--workload names {shape} twice"));
        }
        workloads.push(workload);
    }
    Ok(workloads)
}

/// Every setting a run takes, each optional: once as flags, once as a scenario file's keys.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
// Unknown keys are refused by `transport_settings`, which takes every key that is not a field
// here and accepts only declared settings (serde cannot combine `deny_unknown_fields` with
// `flatten`).
#[serde(rename_all = "kebab-case")]
pub struct Settings {
    /// A name for the scenario (file: defaults to the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Transports to measure: `all`, `streaming` (one connection each, the stream flowing on
    /// it), `served` (those a shipped server profile serves), or a comma-separated list.
    #[arg(long)]
    pub transports: Option<TransportSet>,
    /// Subscribers, or a comma-separated list to sweep.
    #[arg(long)]
    pub subscribers: Option<Counts>,
    /// Offered rate in events per second, or `max`.
    #[arg(long)]
    pub rate: Option<Rate>,
    /// Events per run (or give --duration with a numeric rate).
    #[arg(long)]
    pub events: Option<u64>,
    /// Seconds of stream per run, at the offered rate.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Payload bytes per event (a comma-separated list is cycled within the stream).
    #[arg(long)]
    pub payload: Option<PayloadSizes>,
    /// Payload sizes to sweep, one run each (`64,1024,65536`).
    #[arg(long)]
    pub payloads: Option<Counts>,
    /// What payloads look like: `random` printable text (compresses like encrypted data) or
    /// `json` shaped like a real event (compresses like one).
    #[arg(long)]
    pub payload_kind: Option<PayloadKind>,
    /// The workload's shape, or a comma-separated list to sweep: `broadcast` (one stream to
    /// all), `topics` (rooms: --topics K, each subscriber in --topics-per-subscriber M of them)
    /// or `unicast` (one stream per subscriber). --rate and --events are per stream.
    #[arg(long)]
    pub workload: Option<Shapes>,
    /// Rooms (streams) of `--workload topics`.
    #[arg(long)]
    pub topics: Option<u32>,
    /// Rooms each subscriber joins (default 1).
    #[arg(long)]
    pub topics_per_subscriber: Option<u32>,
    /// How rooms are drawn: `uniform` (the default) or `zipf:S` (room sizes skewed, topic k
    /// weighted 1/(k+1)^S), from the seed; or `even`, dealt in turn so every room is the same
    /// size.
    #[arg(long)]
    pub membership: Option<String>,
    /// Seconds at the start of each stream left out of the latency figures.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Runs of each combination, to show the noise.
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Seed for the payload bytes.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds to hold all subscribers idle before the stream (memory per idle connection).
    #[arg(long)]
    pub idle: Option<f64>,
    /// Sample the server's resident memory, open descriptors and CPU every this many seconds
    /// of the stream, and report their trends (a soak: leaks and drift); 0, the default: only
    /// at the start and end.
    #[arg(long)]
    pub resources_every: Option<f64>,
    /// Seconds a run may take before its subscribers are counted as failed.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Load worker processes the subscribers are spread over (default: one per load CPU).
    #[arg(long)]
    pub load_workers: Option<usize>,
    /// Step up until p99 passes the budget or events are lost, and report the last level
    /// that held: `rate` (the default of a bare --find-max: the offered rate doubling from
    /// --rate, or 1,000 ev/s) or `subscribers` (doubling from --subscribers at --rate each,
    /// stopping also at a refused connection or at --memory-budget).
    #[arg(long, num_args = 0..=1, default_missing_value = "rate")]
    pub find_max: Option<FindMax>,
    /// The p99 latency budget for --find-max, milliseconds.
    #[arg(long)]
    pub p99_budget: Option<f64>,
    /// With --find-max subscribers: the server's resident memory past which a level fails, MB.
    #[arg(long)]
    pub memory_budget: Option<f64>,
    /// Run the server in this network namespace (set up by `scripts/netns-link up NAME`, with
    /// packet loss and a rate cap on its veth link); subscribers reach it at its address there.
    #[arg(long)]
    pub server_netns: Option<String>,
    /// The transports' own settings, each declared in its transport's file; a list sweeps.
    #[command(flatten)]
    #[serde(flatten)]
    pub transport_settings: SettingFlags<RUN>,
}

impl Settings {
    /// Reads a scenario file.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut settings: Settings = toml::from_str(&text).map_err(|e| ScenarioError::Parse {
            path: path.to_owned(),
            message: locate_key(&text, e.message())
                .unwrap_or_else(|| e.to_string())
                .trim_end()
                .to_owned(),
        })?;
        if settings.name.is_none() {
            settings.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(settings)
    }

    /// These settings, with `over`'s where it has them.
    pub fn overridden_by(self, over: Settings) -> Settings {
        Settings {
            name: over.name.or(self.name),
            transports: over.transports.or(self.transports),
            subscribers: over.subscribers.or(self.subscribers),
            rate: over.rate.or(self.rate),
            events: over.events.or(self.events),
            duration: over.duration.or(self.duration),
            payload: over.payload.or(self.payload),
            payloads: over.payloads.or(self.payloads),
            payload_kind: over.payload_kind.or(self.payload_kind),
            workload: over.workload.or(self.workload),
            topics: over.topics.or(self.topics),
            topics_per_subscriber: over.topics_per_subscriber.or(self.topics_per_subscriber),
            membership: over.membership.or(self.membership),
            warmup: over.warmup.or(self.warmup),
            repeat: over.repeat.or(self.repeat),
            seed: over.seed.or(self.seed),
            idle: over.idle.or(self.idle),
            resources_every: over.resources_every.or(self.resources_every),
            timeout: over.timeout.or(self.timeout),
            load_workers: over.load_workers.or(self.load_workers),
            find_max: over.find_max.or(self.find_max),
            p99_budget: over.p99_budget.or(self.p99_budget),
            memory_budget: over.memory_budget.or(self.memory_budget),
            server_netns: over.server_netns.or(self.server_netns),
            transport_settings: self
                .transport_settings
                .overridden_by(over.transport_settings),
        }
    }

    /// Checks the settings and fills in defaults.
    pub fn resolve(self) -> Result<Scenario, ScenarioError> {
        let impossible = |why: String| Err(ScenarioError::Impossible(why));
        let rate = self.rate.unwrap_or(Rate::PerSecond(1000.0));
        let events = match (self.events, self.duration, rate) {
            (Some(_), Some(_), _) => {
                return impossible("give --events or --duration, not both".into())
            }
            (Some(events), None, _) => events,
            (None, Some(secs), Rate::PerSecond(rate)) if secs > 0.0 => (secs * rate).round() as u64,
            (None, Some(_), Rate::PerSecond(_)) => {
                return impossible("--duration must be positive".into())
            }
            (None, Some(_), Rate::Max) => {
                return impossible(
                    "--duration needs a numeric --rate; at --rate max give --events".into(),
                )
            }
            (None, None, Rate::PerSecond(rate)) => (10.0 * rate).round().max(1.0) as u64,
            (None, None, Rate::Max) => 100_000,
        };
        if events > MAX_EVENTS {
            return impossible(format!(
                "{events} events per run is more than the {MAX_EVENTS} a run takes (each \
                 subscriber's delivery is checked event by event; split the run or lower \
                 --events, --duration or --rate)"
            ));
        }
        if let Some(name) = &self.name {
            if !valid_name(name) {
                return impossible(format!(
                    "--name {name:?}: a run's name becomes its directory under --out, so it is 1 \
                     to 64 letters, digits, '.', '-' or '_', not starting with '.'"
                ));
            }
        }
        let subscribers = self.subscribers.map(|c| c.0).unwrap_or_else(|| vec![1]);
        if subscribers.is_empty() || subscribers.contains(&0) {
            return impossible("every subscriber count must be at least 1: a run with no subscriber measures nothing".into());
        }
        if self.load_workers == Some(0) {
            return impossible("--load-workers must be at least 1".into());
        }
        // Past one process's open-file limit, `run` spreads the load over more workers and the
        // server over more processes, up to a bound one machine can still start.
        let most = subscribers.iter().copied().max().unwrap_or(1);
        if server_processes_for(most) > MAX_PROCESSES {
            return impossible(format!(
                "{most} subscribers would need more than {MAX_PROCESSES} server processes of \
                 {} sockets each (the RLIMIT_NOFILE hard limit, {}, less {RESERVED_FILES}); \
                 measure from several hosts instead (`pushbench load --target` and `pushbench \
                 merge`)",
                subscribers_per_process(),
                open_file_limit()
            ));
        }
        let payload = self.payload.unwrap_or_else(|| PayloadSizes::fixed(64));
        let payloads = match self.payloads {
            Some(sweep) if sweep.0.is_empty() => {
                return impossible("--payloads needs at least one size".into())
            }
            Some(sweep) => sweep.0.into_iter().map(PayloadSizes::fixed).collect(),
            None => vec![payload],
        };
        let seed = self.seed.unwrap_or(1);
        let payload_kind = self.payload_kind.unwrap_or_default();
        let workloads = workloads(
            self.workload,
            self.topics,
            self.topics_per_subscriber,
            self.membership.as_deref(),
        )
        .map_err(ScenarioError::Impossible)?;
        // Validate every stream now, so a bad payload fails before the first run.
        for sizes in &payloads {
            StreamSpec::new(seed, events, sizes.clone(), rate)?;
        }
        let secs = |value: Option<f64>, flag: &str, default: f64| match value {
            Some(v) if !(v.is_finite() && v >= 0.0) => Err(ScenarioError::Impossible(format!(
                "--{flag} must be a non-negative number of seconds, got {v}"
            ))),
            v => Ok(Duration::from_secs_f64(v.unwrap_or(default))),
        };
        let warmup = secs(self.warmup, "warmup", 0.0)?;
        if let (Rate::PerSecond(rate), true) = (rate, !warmup.is_zero()) {
            if warmup.as_secs_f64() * rate >= events as f64 {
                return impossible(format!(
                    "the warm-up ({} s) covers the whole stream ({events} events at {rate} ev/s)",
                    warmup.as_secs_f64()
                ));
            }
        }
        let p99_budget_ms = self.p99_budget.unwrap_or(DEFAULT_P99_BUDGET_MS);
        if !(p99_budget_ms.is_finite() && p99_budget_ms > 0.0) {
            return impossible(format!(
                "--p99-budget must be a positive number of milliseconds, got {p99_budget_ms}"
            ));
        }
        let repeat = self.repeat.unwrap_or(1);
        if repeat == 0 {
            return impossible("--repeat must be at least 1".into());
        }
        let transports = self
            .transports
            .map(|t| t.0)
            .unwrap_or_else(|| Transport::ALL.to_vec());
        if let Err(why) = every_setting_taken(&transports, &self.transport_settings.given) {
            return impossible(why);
        }
        if let Err(why) = compression_offered(&transports, &self.transport_settings.given) {
            return impossible(why);
        }
        Ok(Scenario {
            name: self.name.unwrap_or_else(|| "custom".into()),
            transports,
            subscribers,
            rate,
            events,
            payloads,
            payload_kind,
            workloads,
            seed,
            warmup,
            repeat,
            idle: secs(self.idle, "idle", 0.0)?,
            resources_every: secs(self.resources_every, "resources-every", 0.0)?,
            settings: self.transport_settings.given,
            timeout: secs(self.timeout, "timeout", DEFAULT_TIMEOUT.as_secs_f64())?,
            load_workers: self.load_workers,
            find_max: self.find_max.is_some_and(|f| f != FindMax::Off),
            find_max_of: match (self.find_max, rate) {
                (Some(FindMax::Subscribers), Rate::Max) => {
                    return impossible(
                        "--find-max subscribers steps the subscribers at a set rate each: give \
                         --rate"
                            .to_owned(),
                    )
                }
                (Some(FindMax::Subscribers), _) => Stepped::Subscribers,
                _ => Stepped::Rate,
            },
            p99_budget_ms,
            memory_budget_mb: match self.memory_budget {
                Some(_) if self.find_max != Some(FindMax::Subscribers) => {
                    return impossible(
                        "--memory-budget bounds --find-max subscribers alone".to_owned(),
                    )
                }
                Some(mb) if !(mb.is_finite() && mb > 0.0) => {
                    return impossible(format!(
                        "--memory-budget must be a positive number of megabytes, got {mb}"
                    ))
                }
                mb => mb,
            },
            server_netns: match self.server_netns {
                Some(name) if !valid_netns(&name) => {
                    return impossible(format!(
                        "--server-netns {name:?}: a namespace name is letters, digits, '-' and \
                         '_' (see scripts/netns-link)"
                    ))
                }
                other => other,
            },
            design: None,
        })
    }
}

/// The line of the key an error names, where toml cannot point at it: keys beyond the
/// scenario's own fields are checked as transport settings after toml has read the table, so
/// toml's position for them is the table's start. Gives `line N: MESSAGE`.
fn locate_key(text: &str, message: &str) -> Option<String> {
    let key = message.split('`').nth(1)?;
    let line = text.lines().position(|line| {
        line.trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    })?;
    Some(format!("line {}: {message}", line + 1))
}

/// Most events one run publishes.
pub const MAX_EVENTS: u64 = 100_000_000;

/// Whether `name` can name a run: one directory under `--out`, never a path out of it.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Every setting given is taken by at least one selected transport (or by what `run` does
/// around it), so none is dropped unseen: one that none takes is refused, naming the
/// transports that would. Those that take it run with it; the others run without it, and
/// their rows say so.
fn every_setting_taken(
    transports: &[Transport],
    given: &BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    for name in given.keys() {
        let taken = transports
            .iter()
            .any(|&t| settings_of(t).iter().any(|s| s.name() == name));
        if taken {
            continue;
        }
        let selected: Vec<&str> = transports.iter().map(|t| t.name()).collect();
        let takers: Vec<&str> = declared_settings()
            .into_iter()
            .find(|(s, _)| s.name() == name)
            .map(|(_, takers)| takers.iter().map(|t| t.name()).collect())
            .unwrap_or_default();
        return Err(format!(
            "--{name} applies to none of the transports selected ({}); it applies to {}",
            selected.join(", "),
            if takers.is_empty() {
                "none".to_owned()
            } else {
                takers.join(", ")
            }
        ));
    }
    Ok(())
}

/// Every compression asked for is one each transport that takes it can do, checked before the
/// first run rather than when that transport's server starts.
fn compression_offered(
    transports: &[Transport],
    given: &BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    let Some(values) = given.get(COMPRESSION.name) else {
        return Ok(());
    };
    for &transport in transports {
        let takes_it = transport.spec().takes(&COMPRESSION);
        for value in values.iter().filter(|_| takes_it) {
            // Given values were checked against the setting's kind already.
            let Ok(compression) = Compression::parse(value) else {
                continue;
            };
            compression
                .offered_by(transport.traits())
                .map_err(|why| format!("{transport} with --compression {value}: {why}"))?;
        }
    }
    Ok(())
}

/// Whether `name` can name a network namespace here (and is safe as an argument).
fn valid_netns(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Settings, String> {
        toml::from_str::<Settings>(toml)
            .map_err(|e| locate_key(toml, e.message()).unwrap_or_else(|| e.to_string()))
    }

    /// `served` is what the shipped profiles subscribe to: a transport one serves is in, one
    /// none serves is not, and it is no larger than `all`.
    #[test]
    fn served_transports_are_the_profiles() {
        let served = "served".parse::<TransportSet>().unwrap().0;
        let profiles = crate::profile::shipped_profiles().unwrap();
        for transport in Transport::ALL {
            let serves = profiles
                .iter()
                .any(|p| p.subscribe.contains_key(transport.name()));
            assert_eq!(served.contains(transport), serves, "{}", transport.name());
        }
        assert!(!served.is_empty() && served.len() < Transport::ALL.len());
    }

    /// A misspelt key is refused with its name and line.
    #[test]
    fn unknown_key_names_key_and_line() {
        let error = parse("rate = 100\nsubscriber = 5\n").unwrap_err();
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("unknown field `subscriber`"), "{error}");
    }

    /// A bad value is refused with its line and why.
    #[test]
    fn bad_value_names_line() {
        let error = parse("transports = \"websocket,smoke-signals\"\n").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
        assert!(
            error.contains("unknown transport \"smoke-signals\""),
            "{error}"
        );
        let error = parse("events = 10\nrate = \"fast\"\n").unwrap_err();
        assert!(
            error.contains("line 2") && error.contains("invalid rate"),
            "{error}"
        );
    }

    /// Local inputs that would escape `--out`, swamp the harness or name no namespace are
    /// refused with what was wrong, before anything runs.
    #[test]
    fn bad_local_inputs_are_refused() {
        let refused = |toml: &str| match parse(toml).unwrap().resolve() {
            Err(error) => error.to_string(),
            Ok(_) => panic!("{toml} was accepted"),
        };
        for name in ["../../x", "a/b", ".hidden", ""] {
            let error = refused(&format!("name = {name:?}\nevents = 10\n"));
            assert!(error.contains("becomes its directory"), "{name}: {error}");
        }
        let error = refused("events = 100000000000000\nrate = \"max\"\n");
        assert!(error.contains("more than the 100000000"), "{error}");
        let error = refused("duration = 1000000\nrate = 1000000\n");
        assert!(error.contains("more than the 100000000"), "{error}");
        let error = refused("server-netns = \"x y\"\nevents = 10\n");
        assert!(error.contains("a namespace name"), "{error}");
        assert!(parse("name = \"quick-4g_v1.2\"\nevents = 10\n")
            .unwrap()
            .resolve()
            .is_ok());
    }

    /// Flags override the file; lists and single values both work.
    #[test]
    fn flags_override_file() {
        let file = parse(
            "subscribers = [1, 10]\nrate = 500\nduration = 2\ntransports = [\"sse\", \"tcp\"]\n",
        )
        .unwrap();
        let flags = Settings {
            rate: Some(Rate::PerSecond(100.0)),
            ..Settings::default()
        };
        let scenario = file.overridden_by(flags).resolve().unwrap();
        assert_eq!(scenario.subscribers, vec![1, 10]);
        assert_eq!(scenario.events, 200);
        assert_eq!(scenario.transports, vec![Transport::Sse, Transport::Tcp]);
    }

    /// A transport's setting is a scenario key too: a list sweeps it, a bad value is refused
    /// with its key and line.
    #[test]
    fn transport_settings_are_keys() {
        let scenario = parse("longpoll-hold = [\"1s\", \"30s\"]\npoll-interval = \"50ms\"\n")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(scenario.settings["longpoll-hold"], ["1s", "30s"]);
        assert_eq!(
            scenario.variants(&settings_of(Transport::Longpoll)).len(),
            2
        );
        let (poll, swept) = &scenario.variants(&settings_of(Transport::Poll))[0];
        assert_eq!(poll.0["poll-interval"], "50ms");
        assert!(swept.is_empty());
        assert!(scenario.variants(&settings_of(Transport::Poll))[0]
            .1
            .is_empty());
        let error = parse("rate = 10\nwebhook-attempts = 0\n").unwrap_err();
        assert!(
            error.contains("line 2") && error.contains("at least 1"),
            "{error}"
        );
    }

    /// Impossible combinations say why.
    #[test]
    fn impossible_combinations() {
        let why = |s: Settings| s.resolve().unwrap_err().to_string();
        let zero = Settings {
            subscribers: Some(Counts(vec![0])),
            ..Settings::default()
        };
        assert!(why(zero).contains("at least 1"));
        let both = Settings {
            events: Some(5),
            duration: Some(1.0),
            ..Settings::default()
        };
        assert!(why(both).contains("not both"));
        let huge = Settings {
            payload: Some(PayloadSizes::fixed(1 << 30)),
            ..Settings::default()
        };
        assert!(why(huge).contains("exceeds the maximum"));
        let many = Settings {
            subscribers: Some(Counts(vec![usize::MAX / 2])),
            ..Settings::default()
        };
        let refused = why(many);
        assert!(refused.contains("several hosts"), "{refused}");
    }

    /// `find-max` is a boolean (the rate) or what to step; the subscribers need a set rate, and
    /// a memory budget bounds the subscriber knee alone.
    #[test]
    fn find_max_steps_the_rate_or_the_subscribers() {
        let resolve = |text: &str| toml::from_str::<Settings>(text).unwrap().resolve();
        let rate = resolve("find-max = true").unwrap();
        assert!(rate.find_max && rate.find_max_of == Stepped::Rate);
        let knee = resolve("find-max = \"subscribers\"\nmemory-budget = 512").unwrap();
        assert_eq!(knee.find_max_of, Stepped::Subscribers);
        assert_eq!(knee.memory_budget_mb, Some(512.0));
        assert!(!resolve("find-max = false").unwrap().find_max);
        let why = |text: &str| resolve(text).unwrap_err().to_string();
        assert!(why("find-max = \"subscribers\"\nrate = \"max\"").contains("give --rate"));
        assert!(why("memory-budget = 512").contains("--find-max subscribers alone"));
        assert!(toml::from_str::<Settings>("find-max = \"latency\"").is_err());
    }

    /// A compression a transport cannot do is refused before any run, naming the transport and
    /// the fix; what every transport asked can do is accepted.
    #[test]
    fn compression_a_transport_cannot_do_is_refused() {
        let resolve = |text: &str| toml::from_str::<Settings>(text).unwrap().resolve();
        let why = resolve("transports = \"all\"\ncompression = [\"off\", \"gzip\"]")
            .unwrap_err()
            .to_string();
        assert!(
            why.contains("websocket with --compression gzip")
                && why.contains("use --compression deflate"),
            "{why}"
        );
        assert!(resolve("transports = \"sse,webhook,tcp\"\ncompression = \"gzip\"").is_ok());
        assert!(resolve("transports = \"all\"\ncompression = \"deflate\"").is_ok());
    }

    /// Every preset in scenarios/ is valid.
    #[test]
    fn presets_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            Settings::from_file(&path).unwrap().resolve().unwrap();
            seen += 1;
        }
        assert!(seen >= 6);
    }
}
