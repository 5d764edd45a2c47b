//! The measured figures a recommendation stands on: one or more results files, and for each
//! transport the figure nearest to a design (latency at the closest fan-out and rate, memory
//! from the most connections held, capacity from unscheduled or stepped-up runs), each with
//! where it was measured so a reason can cite it. Only rows measured under the design's
//! conditions count ([`Conditions`]: its workload shape, no injected fault, its TLS and
//! proxy), and a figure carries its row's settings, so one reason's numbers come from one row.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use super::conditions::Conditions;
use super::design::Design;
use crate::event::{PayloadSizes, Rate};
use crate::results::figures::{rows_without_intervals, Figure, Row};
use crate::results::format::thousands;
use crate::results::Results;
use crate::transport::resume::OUTAGE;
use crate::transport::upstream::UPSTREAM_RATE;
use crate::transport::{Setting, SettingValues, Transport};

/// A results file and what it holds.
#[derive(Debug)]
pub struct Source {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its contents.
    pub results: Results,
    /// How its figures are cited: the scenario's name, and for a design's own run whether it
    /// ran at the design's regime or scaled.
    label: String,
    /// For a design's own run (`recommend --measure`): the design as given and as measured.
    measured_for: Option<(Design, Design)>,
}

impl Source {
    /// A source, its label and the design it measured read from its scenario.
    pub fn new(path: PathBuf, results: Results) -> Self {
        let scenario = &results.scenario;
        let run = scenario.design.as_ref();
        let measured_for = run.and_then(|r| {
            let given = serde_json::from_value(r.given.clone()).ok()?;
            Some((given, serde_json::from_value(r.measured_as.clone()).ok()?))
        });
        let label = match run {
            Some(run) if run.scalings.is_empty() => {
                format!("{}: the design's own run, at its regime", scenario.name)
            }
            Some(_) => format!("{}: the design's own run, scaled as listed", scenario.name),
            None => scenario.name.clone(),
        };
        Self {
            path,
            results,
            label,
            measured_for,
        }
    }

    /// Whether it is a run of `design` (the same in every constraint, not only by name) made
    /// by `recommend --measure`.
    fn measured(&self, design: &Design) -> bool {
        self.measured_for
            .as_ref()
            .is_some_and(|(given, _)| given == design)
    }
}

/// Every results file a recommendation may cite.
#[derive(Debug, Default)]
pub struct Evidence {
    /// The files, in the order given.
    pub sources: Vec<Source>,
}

/// One measured figure and where it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// The value (median over repeats).
    pub value: f64,
    /// Subscribers at which it was measured.
    pub subscribers: usize,
    /// Offered rate (`max` for unscheduled).
    pub offered_rate: Rate,
    /// Payload.
    pub payload: PayloadSizes,
    /// Scenario name of the run.
    pub scenario: String,
    /// The workload it ran, as its row key names it (`broadcast`, `topics(...)`, `unicast`).
    pub workload: String,
    /// The load, not the transport, set the figure (a load-bound row): the transport can do at
    /// least this much.
    pub load_bound: bool,
    /// The settings its row ran with (its first run's), so what a reason says beside the figure
    /// (the polling interval it was measured at) is that row's.
    pub settings: SettingValues,
}

/// A design's own run that delivered less than it offered.
#[derive(Clone, Debug, PartialEq)]
pub struct FellBehind {
    /// Deliveries per second offered.
    pub offered: f64,
    /// Deliveries per second delivered, and where.
    pub measured: Measured,
}

impl Measured {
    /// "at 1,000 subscribers and 100 ev/s (fanout)".
    pub fn at(&self) -> String {
        let rate = match self.offered_rate {
            Rate::Max => "unscheduled".to_string(),
            Rate::PerSecond(rate) => format!("{} ev/s", thousands(rate)),
        };
        let shape = match self.workload.as_str() {
            "broadcast" => String::new(),
            shape => format!(" {shape},"),
        };
        format!(
            "at {} subscriber(s) and {rate},{shape} {} B ({})",
            thousands(self.subscribers as f64),
            self.payload,
            self.scenario
        )
    }
}

impl Evidence {
    /// Reads the given results files, run directories, or directories of runs (the newest
    /// run of each scenario in them); with none, the newest run of each scenario under
    /// `default_dir`.
    pub fn load(paths: &[PathBuf], default_dir: &Path) -> anyhow::Result<Self> {
        let paths = if paths.is_empty() {
            newest_per_scenario(default_dir)?
        } else {
            let mut files = Vec::new();
            for path in paths {
                if path.is_dir() && !path.join("results.json").exists() {
                    files.extend(newest_per_scenario(path)?);
                } else {
                    files.push(path.clone());
                }
            }
            files
        };
        let mut evidence = Evidence::default();
        for path in paths {
            let (path, results) = crate::results::load(&path)?;
            evidence.sources.push(Source::new(path, results));
        }
        Ok(evidence)
    }

    /// Whether any of the runs measured `transport` at all (under any conditions): one none
    /// did is unmeasured, where one that was measured but not as a design needs is judged.
    pub fn holds(&self, transport: Transport) -> bool {
        self.sources.iter().any(|source| {
            let rows = &source.results.runs;
            rows.iter().any(|row| row.key.transport == transport)
        })
    }

    /// Evidence from results already in memory.
    pub fn of(results: Results, path: PathBuf) -> Self {
        Self {
            sources: vec![Source::new(path, results)],
        }
    }

    /// Evidence from several results in memory (a design's runs, one per facet).
    pub fn of_all(results: impl IntoIterator<Item = (Results, PathBuf)>) -> Self {
        Self {
            sources: results
                .into_iter()
                .map(|(results, path)| Source::new(path, results))
                .collect(),
        }
    }

    /// The design as the evidence measured it: where a run of it by `recommend --measure` is
    /// among the sources, the design scaled as that run was (so its rows count as the design's
    /// regime); otherwise the design itself.
    pub fn regime<'a>(&'a self, design: &'a Design) -> &'a Design {
        self.sources
            .iter()
            .rev()
            .find(|s| s.measured(design))
            .and_then(|s| s.measured_for.as_ref())
            .map_or(design, |(_, measured_as)| measured_as)
    }

    /// Where the design's own run of a transport, under its conditions and on a schedule, was
    /// delivered less than it offered (the deliveries per second it managed).
    pub fn fell_behind(&self, transport: Transport, design: &Design) -> Option<FellBehind> {
        let conditions = Conditions::of(design);
        self.passing_in(transport, |s| s.measured(design))
            .filter(|(_, r)| conditions.admit(&r.key, &first_settings(r)))
            .find(|(_, r)| r.rate != Rate::Max && !kept_up(r))
            .map(|(label, r)| FellBehind {
                offered: per_second(r.rate, 0.0) * r.key.subscribers as f64,
                measured: measured(label, &r, Figure::EventsPerS),
            })
    }

    /// How the design's own runs were scaled, if the evidence holds any.
    pub fn scalings(&self, design: &Design) -> Option<&[String]> {
        self.sources
            .iter()
            .rev()
            .find(|s| s.measured(design))
            .and_then(|s| s.results.scenario.design.as_ref())
            .map(|run| run.scalings.as_slice())
    }

    /// Why the design's own runs of a transport failed, where one did: the measured reason it
    /// does not fit (events lost, refused, or the run given up on).
    pub fn failed(&self, transport: Transport, design: &Design) -> Option<String> {
        self.sources
            .iter()
            .filter(|s| s.measured(design))
            .flat_map(|s| {
                let facet = s.results.scenario.design.as_ref().map(|d| d.facet.clone());
                s.results
                    .runs
                    .iter()
                    .filter(move |r| r.key.transport == transport && r.failed)
                    .map(move |r| {
                        let why = r
                            .error
                            .clone()
                            .unwrap_or_else(|| format!("lost {}", r.lost));
                        format!("{} run: {why}", facet.clone().unwrap_or_default())
                    })
            })
            .next()
    }

    /// Every passing row for a transport measured under `design`'s conditions, with its
    /// scenario name.
    fn rows_for<'a>(
        &'a self,
        transport: Transport,
        design: &Design,
    ) -> impl Iterator<Item = (&'a str, Row<'a>)> + 'a {
        let design = self.regime(design);
        let conditions = Conditions::of(design);
        self.passing(transport)
            .filter(move |(_, r)| conditions.admit(&r.key, &first_settings(r)))
    }

    /// Every passing row for a transport, whatever its conditions.
    fn passing<'a>(
        &'a self,
        transport: Transport,
    ) -> impl Iterator<Item = (&'a str, Row<'a>)> + 'a {
        self.passing_in(transport, |_| true)
    }

    /// Every passing row for a transport in the sources `keep` keeps, with its source's label.
    fn passing_in<'a>(
        &'a self,
        transport: Transport,
        keep: impl Fn(&Source) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a str, Row<'a>)> + 'a {
        self.sources
            .iter()
            .filter(move |s| keep(s))
            .flat_map(move |s| {
                rows_without_intervals(&s.results)
                    .into_iter()
                    .filter(move |r| r.key.transport == transport && r.ok())
                    .map(move |r| (s.label.as_str(), r))
            })
    }

    /// A figure at the setting nearest the design. With `scheduled`, only from runs offered
    /// on a schedule that the transport kept up with: where deliveries fell behind the offered
    /// rate, latency measures the backlog, not the transport.
    pub fn nearest(
        &self,
        transport: Transport,
        design: &Design,
        metric: Figure,
        scheduled: bool,
    ) -> Option<Measured> {
        self.nearest_where(transport, design, metric, scheduled, |_| true)
    }

    /// A figure from a run of a comparable regime: fan-out and per-subscriber rate each within
    /// [`REGIME`]× of the design's (for unscheduled runs, the rate they delivered), nearest
    /// first. CPU per delivery and latency change with the regime (batching, queueing), so a
    /// figure from far away is not scaled to the design: it is not evidence at all.
    pub fn comparable(
        &self,
        transport: Transport,
        design: &Design,
        metric: Figure,
        scheduled: bool,
    ) -> Option<Measured> {
        let design = self.regime(design);
        self.nearest_where(transport, design, metric, scheduled, |r| {
            within_regime(r.key.subscribers as f64, design.subscribers as f64)
                && within_regime(rate_per_subscriber(r), design.rate)
        })
    }

    /// The round trip's p99 (a sender's message to its room and back) from a comparable
    /// two-way run: fan-out, rate and messages up per subscriber each within [`REGIME`]× of
    /// the design's, nearest first.
    pub fn round_trip(&self, transport: Transport, design: &Design) -> Option<Measured> {
        let design = self.regime(design);
        let conditions = Conditions::of(design).two_way();
        self.passing(transport)
            .filter(|(_, r)| conditions.admit(&r.key, &first_settings(r)))
            .filter(|(_, r)| r.rate != Rate::Max && kept_up(r))
            .filter(|(_, r)| {
                let up = UPSTREAM_RATE.read(&first_settings(r));
                r.runs.iter().any(|run| run.two_way.is_some())
                    && within_regime(r.key.subscribers as f64, design.subscribers as f64)
                    && within_regime(rate_per_subscriber(r), design.rate)
                    && within_regime(up, design.upstream_rate)
            })
            .map(|(scenario, r)| {
                (
                    distance(&r, design),
                    measured(scenario, &r, Figure::RoundTripP99),
                )
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, m)| m)
    }

    /// A cost figure (CPU per delivery) from a comparable run the load did not bound: where
    /// the load was the limit, the figure is the load's.
    pub fn comparable_cost(
        &self,
        transport: Transport,
        design: &Design,
        metric: Figure,
    ) -> Option<Measured> {
        let design = self.regime(design);
        self.nearest_where(transport, design, metric, false, |r| {
            within_regime(r.key.subscribers as f64, design.subscribers as f64)
                && within_regime(rate_per_subscriber(r), design.rate)
                && !load_bound(r)
        })
    }

    /// The figure from the passing row nearest the design among those `admit` lets through
    /// (with `scheduled`, only scheduled runs the transport kept up with).
    fn nearest_where(
        &self,
        transport: Transport,
        design: &Design,
        metric: Figure,
        scheduled: bool,
        admit: impl Fn(&Row<'_>) -> bool,
    ) -> Option<Measured> {
        let design = self.regime(design);
        self.rows_for(transport, design)
            .filter(|(_, r)| !scheduled || (r.rate != Rate::Max && kept_up(r)))
            .filter(|(_, r)| admit(r))
            .map(|(scenario, r)| (distance(&r, design), measured(scenario, &r, metric)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, m)| m)
    }

    /// A figure from the run holding the most connections (memory per connection is only
    /// meaningful with many).
    pub fn most_connections(
        &self,
        transport: Transport,
        design: &Design,
        metric: Figure,
    ) -> Option<Measured> {
        self.rows_for(transport, design)
            .max_by_key(|(_, r)| r.key.subscribers)
            .map(|(scenario, r)| measured(scenario, &r, metric))
    }

    /// The most deliveries per second measured: unscheduled runs and stepped-up rates.
    pub fn capacity(&self, transport: Transport, design: &Design) -> Option<Measured> {
        let design = self.regime(design);
        let conditions = Conditions::of(design);
        let unscheduled = self
            .rows_for(transport, design)
            .filter(|(_, r)| r.rate == Rate::Max)
            .map(|(scenario, r)| measured(scenario, &r, Figure::EventsPerS));
        let stepped = self.sources.iter().flat_map(|s| {
            s.results
                .max_rates
                .iter()
                .filter(move |m| m.key.transport == transport && m.events_per_s > 0.0)
                .filter(|m| conditions.admit_key(&m.key))
                .filter_map(move |m| {
                    let deliveries = m
                        .deliveries_per_s
                        .unwrap_or(m.events_per_s * m.key.subscribers as f64);
                    // A knee under a CPU quota is a capacity per core: a ceiling only for a
                    // design with a CPU budget, scaled to it.
                    let (value, scenario) = match (m.server_cores, design.cpu_cores) {
                        (None, _) => (deliveries, s.label.clone()),
                        (Some(quota), Some(budget)) => (
                            deliveries / quota * budget,
                            format!(
                                "{}: {} under a {quota}-core quota, per core times the \
                                 design's {budget}",
                                s.label,
                                thousands(deliveries)
                            ),
                        ),
                        (Some(_), None) => return None,
                    };
                    Some(Measured {
                        value,
                        subscribers: m.key.subscribers,
                        offered_rate: Rate::PerSecond(m.events_per_s),
                        payload: m.key.payload.clone(),
                        scenario,
                        workload: m.key.workload.to_string(),
                        load_bound: false,
                        settings: SettingValues::default(),
                    })
                })
        });
        unscheduled
            .chain(stepped)
            .max_by(|a, b| a.value.total_cmp(&b.value))
    }

    /// The most subscribers and the fastest scheduled rate per subscriber measured for a
    /// transport.
    pub fn span(&self, transport: Transport, design: &Design) -> Option<(usize, f64)> {
        self.rows_for(transport, design)
            .map(|(_, r)| {
                // Per subscriber: each stream's rate times the streams it followed.
                let rate = per_second(r.rate, f64::INFINITY) * streams_followed(&r) as f64;
                (r.key.subscribers, rate)
            })
            .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
    }

    /// The keep-alive interval the evidence was measured with, seconds.
    pub fn heartbeat_secs(&self) -> Option<f64> {
        self.sources
            .first()
            .map(|s| s.results.settings.heartbeat_secs)
    }

    /// The value of one of the transport's settings its evidence was measured with (the first
    /// comparable run's), or the setting's default when there is no evidence. A reason that
    /// cites a figure beside it reads it from that figure's [`Measured::settings`] instead.
    pub fn setting<T>(&self, transport: Transport, design: &Design, setting: &Setting<T>) -> T
    where
        T: crate::settings::Value + PartialOrd,
    {
        setting.read(&self.settings(transport, design))
    }

    /// The transport's settings as its evidence was measured with (the first comparable
    /// run's), or none (every setting at its default) without evidence.
    pub fn settings(&self, transport: Transport, design: &Design) -> SettingValues {
        self.rows_for(transport, design)
            .map(|(_, row)| first_settings(&row))
            .next()
            .unwrap_or_default()
    }

    /// The longest consumer outage (the outage fault, seconds) a passing row of the transport
    /// went through under the design's other conditions, with how many events that row lost:
    /// measured downtime, where it exists. The one figure read from faulted rows.
    pub fn outage_survived(&self, transport: Transport, design: &Design) -> Option<(f64, u64)> {
        let design = self.regime(design);
        let conditions = Conditions::of(design);
        self.passing(transport)
            .filter(|(_, r)| conditions.admit_faulted(&r.key, &first_settings(r)))
            .flat_map(|(_, row)| row.runs.to_vec())
            .filter(|run| !run.failed)
            .map(|run| (OUTAGE.read(&run.settings).as_secs_f64(), run.lost))
            .filter(|(secs, _)| *secs > 0.0)
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// The run ids cited.
    pub fn run_ids(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| s.results.run_id.clone())
            .collect()
    }
}

/// Share of the offered deliveries a run must deliver per second to count as keeping up.
const KEPT_UP: f64 = 0.9;

/// How far (as a factor either way) a run's fan-out and rate may be from a design's for its
/// CPU and latency to count.
pub const REGIME: f64 = 4.0;

fn within_regime(measured: f64, design: f64) -> bool {
    measured > 0.0 && design > 0.0 && measured <= design * REGIME && measured * REGIME >= design
}

/// The settings a row ran with (its first run's).
fn first_settings(row: &Row<'_>) -> SettingValues {
    row.runs
        .first()
        .map(|run| run.settings.clone())
        .unwrap_or_default()
}

/// Whether the load, not the transport, was the limit in any run of the row.
fn load_bound(row: &Row<'_>) -> bool {
    row.runs
        .iter()
        .any(|r| r.bound == Some(crate::results::Bound::LoadBound))
}

/// Events per second each subscriber was offered (scheduled: each stream's rate times the
/// streams it follows) or received (unscheduled).
fn rate_per_subscriber(row: &Row<'_>) -> f64 {
    match row.rate {
        Rate::PerSecond(rate) => rate * streams_followed(row) as f64,
        Rate::Max => row.figure(Figure::EventsPerS).median / row.key.subscribers.max(1) as f64,
    }
}

/// Whether a scheduled run delivered at the rate it was offered (all subscribers together).
fn kept_up(row: &Row<'_>) -> bool {
    let offered = per_second(row.rate, 0.0) * row.key.subscribers as f64;
    row.figure(Figure::EventsPerS).median >= KEPT_UP * offered
}

/// A rate in events per second, or `unscheduled` for a run at `max` (which has none).
fn per_second(rate: Rate, unscheduled: f64) -> f64 {
    match rate {
        Rate::PerSecond(rate) => rate,
        Rate::Max => unscheduled,
    }
}

/// How far a measured setting is from the design: fan-out counts most, then rate, then payload
/// (orders of magnitude, so 100 vs 1,000 is as far as 1,000 vs 10,000).
fn distance(row: &Row<'_>, design: &Design) -> f64 {
    let log_gap = |a: f64, b: f64| (a.max(1e-3) / b.max(1e-3)).log10().abs();
    let rate = per_second(row.rate, 1e6);
    let payload = row.key.payload.sizes().iter().copied().max().unwrap_or(0) as f64;
    log_gap(row.key.subscribers as f64, design.subscribers as f64)
        + 0.5 * log_gap(rate, design.rate)
        + 0.25 * log_gap(payload, design.payload as f64)
}

/// Streams each subscriber of the row followed (rooms it was in; one otherwise).
fn streams_followed(row: &Row<'_>) -> u64 {
    row.key
        .workload
        .params
        .0
        .get("topics-per-subscriber")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

fn measured(scenario: &str, row: &Row<'_>, metric: Figure) -> Measured {
    Measured {
        value: row.figure(metric).median,
        subscribers: row.key.subscribers,
        offered_rate: row.rate,
        payload: row.key.payload.clone(),
        scenario: scenario.to_owned(),
        workload: row.key.workload.to_string(),
        load_bound: load_bound(row),
        settings: first_settings(row),
    }
}

/// Where, inside a directory of runs, the standard designs' own runs are kept.
pub const DESIGNS_DIR: &str = "designs";

/// The newest `results.json` of each scenario under `dir` (run ids sort by time), and of each
/// under its `designs/` directory.
fn newest_per_scenario(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "no results to recommend from: cannot read {} (run `pushbench run --scenario \
             scenarios/quick.toml` first, or pass --results FILE)",
            dir.display()
        )
    })?;
    let mut runs: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("results.json").is_file())
        .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p)))
        .collect();
    runs.sort();
    let mut newest: Vec<(String, PathBuf)> = Vec::new();
    for (id, path) in runs.into_iter().rev() {
        // Run ids are `<date>-<time>-<scenario>`.
        let scenario = id.splitn(3, '-').nth(2).unwrap_or(&id).to_owned();
        if !newest.iter().any(|(s, _)| *s == scenario) {
            newest.push((scenario, path));
        }
    }
    // The designs' own runs (`recommend --all-designs --measure --out results/designs`) sit
    // in a directory of their own beside the presets' runs.
    let designs = dir.join(DESIGNS_DIR);
    if designs.is_dir() {
        newest.extend(
            newest_per_scenario(&designs)
                .unwrap_or_default()
                .into_iter()
                .map(|path| (String::new(), path)),
        );
    }
    if newest.is_empty() {
        bail!(
            "no results under {}: run `pushbench run --scenario scenarios/quick.toml` first, or \
             pass --results FILE",
            dir.display()
        );
    }
    Ok(newest.into_iter().map(|(_, p)| p).collect())
}
