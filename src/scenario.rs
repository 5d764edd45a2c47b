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
use crate::payload::PayloadKind;
use crate::setting_flags::{SettingFlags, RUN};
use crate::transport::compression::{Compression, COMPRESSION};
use crate::settings::Value as _;
use crate::transport::{SettingValues, Transport};

/// Sockets a load worker keeps for itself (listeners, files, its pipes).
const RESERVED_FILES: u64 = 64;

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

/// A set of transports: `all`, or names separated by commas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "OneOrMany<String>", into = "Vec<String>")]
pub struct TransportSet(pub Vec<Transport>);

impl FromStr for TransportSet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim() == "all" {
            return Ok(Self(Transport::ALL.to_vec()));
        }
        let mut transports = Vec::new();
        for name in text.split(',').map(str::trim) {
            let transport = Transport::named(name).ok_or_else(|| {
                format!(
                    "unknown transport {name:?}: expected all, or some of {}",
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
    /// Transports to measure: `all`, or a comma-separated list.
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
    /// Seconds a run may take before its subscribers are counted as failed.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Load worker processes the subscribers are spread over (default: one per load CPU).
    #[arg(long)]
    pub load_workers: Option<usize>,
    /// Step the offered rate up (doubling from --rate, or 1,000 ev/s) until p99 passes the
    /// budget or events are lost; report the last level that held.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub find_max: Option<bool>,
    /// The p99 latency budget for --find-max, milliseconds.
    #[arg(long)]
    pub p99_budget: Option<f64>,
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
            warmup: over.warmup.or(self.warmup),
            repeat: over.repeat.or(self.repeat),
            seed: over.seed.or(self.seed),
            idle: over.idle.or(self.idle),
            timeout: over.timeout.or(self.timeout),
            load_workers: over.load_workers.or(self.load_workers),
            find_max: over.find_max.or(self.find_max),
            p99_budget: over.p99_budget.or(self.p99_budget),
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
        let p99_budget_ms = self.p99_budget.unwrap_or(50.0);
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
            seed,
            warmup,
            repeat,
            idle: secs(self.idle, "idle", 0.0)?,
            settings: self.transport_settings.given,
            timeout: secs(self.timeout, "timeout", 300.0)?,
            load_workers: self.load_workers,
            find_max: self.find_max.unwrap_or(false),
            p99_budget_ms,
            server_netns: match self.server_netns {
                Some(name) if !valid_netns(&name) => {
                    return impossible(format!(
                        "--server-netns {name:?}: a namespace name is letters, digits, '-' and \
                         '_' (see scripts/netns-link)"
                    ))
                }
                other => other,
            },
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

/// The open-file hard limit of this process (what the load can raise its soft limit to).
pub fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX)
}

/// The most processes `run` spreads one side of a combination over.
const MAX_PROCESSES: usize = 256;

/// Subscribers one process can hold: its open-file hard limit, less room for everything else.
pub fn subscribers_per_process() -> usize {
    usize::try_from(open_file_limit().saturating_sub(RESERVED_FILES))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Server processes for `subscribers`: one while they fit, else enough that each holds at most
/// four fifths of what it could, because the kernel spreads connections over processes
/// sharing a port by a hash, not evenly.
pub fn server_processes_for(subscribers: usize) -> usize {
    let per = subscribers_per_process();
    if subscribers <= per {
        1
    } else {
        subscribers.div_ceil((per / 5 * 4).max(1))
    }
}

/// Raises the soft open-file limit to the hard one, so many connections fit.
pub fn raise_open_file_limit() {
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current = limit.maximum;
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit);
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
    /// Seed for the payload bytes.
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
    /// Step the offered rate up to find the highest that holds.
    pub find_max: bool,
    /// p99 latency budget for `find_max`, milliseconds.
    pub p99_budget_ms: f64,
    /// The network namespace the server runs in (absent: this one, on loopback).
    #[serde(default)]
    pub server_netns: Option<String>,
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
        let takes_it = transport
            .spec()
            .settings
            .iter()
            .any(|s| s.name() == COMPRESSION.name);
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

impl Scenario {
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

    /// The stream of one run.
    pub fn spec(&self, payload: &PayloadSizes) -> StreamSpec {
        // Every combination was validated in `resolve`.
        StreamSpec::new(self.seed, self.events, payload.clone(), self.rate)
            .expect("validated")
            .with_kind(self.payload_kind)
    }

    /// The settings each run of `transport` takes: one entry per combination of the values
    /// swept for its own settings, each with every setting of the transport (defaults filled
    /// in), paired with just the swept ones (which tell its rows apart).
    pub fn variants(&self, transport: Transport) -> Vec<(SettingValues, SettingValues)> {
        let mut variants = vec![(SettingValues::default(), SettingValues::default())];
        for setting in transport.spec().settings {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<Settings, String> {
        toml::from_str::<Settings>(toml)
            .map_err(|e| locate_key(toml, e.message()).unwrap_or_else(|| e.to_string()))
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
        assert_eq!(scenario.variants(Transport::Longpoll).len(), 2);
        let (poll, swept) = &scenario.variants(Transport::Poll)[0];
        assert_eq!(poll.0["poll-interval"], "50ms");
        assert!(swept.is_empty());
        assert!(scenario.variants(Transport::Poll)[0].1.is_empty());
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
