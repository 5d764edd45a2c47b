//! `--find-max`: where a transport stops holding. `rate` doubles the offered rate from
//! `--rate` (or 1,000 ev/s); `subscribers` doubles the subscribers from `--subscribers` at
//! `--rate` each (websocket-shootout's step-up, made open-loop); once a level fails, the gap to
//! the last that held is halved three times. A level fails when p99 passes
//! `--p99-budget`, an event is lost or a connection refused, or (subscribers) the server's
//! memory passes `--memory-budget`; the last level that held is the knee, recorded with the
//! deliveries per second, the server's CPU and memory there and what bound it (what was
//! saturated at the nearest level above, which gave out). Under
//! `--server-cpu-limit` a knee the load bound is searched once more at half the limit, so the
//! figure is the server's, and says so.

use super::cpu_limit::SERVER_CPU_LIMIT;
use super::plan::Combination;
use super::run::{measure, Placed, RunOptions};
use crate::results::scenario::Stepped;
use crate::results::stats;
use crate::results::{Bound, MaxRate, Results, TransportResult};
use crate::settings::Value as _;

/// Seconds of stream per level.
const LEVEL_SECS: f64 = 3.0;
/// The start of each level left out of its figures.
const LEVEL_WARMUP: std::time::Duration = std::time::Duration::from_millis(500);
/// Most levels a search tries (doubling each time).
const MAX_LEVELS: usize = 14;
/// Halvings of the gap between the last level that held and the first that failed: the knee
/// is then within an eighth of a doubling of where the transport gives out.
const BISECTIONS: usize = 3;

/// Steps the combination up as the scenario says, records every level's runs and the knee.
pub(super) async fn find_max(
    options: &RunOptions,
    combination: &Combination,
    placed: &Placed<'_>,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut knee = search(options, combination, placed, results).await?;
    // A knee the load bound is the load's: with a CPU limit, halving it lets the load outrun
    // the server.
    let limit = SERVER_CPU_LIMIT.read(&combination.settings);
    if knee.bound == Some(Bound::LoadBound) && limit > 0.0 {
        let mut halved = combination.clone();
        let half = limit / 2.0;
        halved
            .settings
            .0
            .insert(SERVER_CPU_LIMIT.name.to_owned(), half.show());
        knee = search(options, &halved, placed, results).await?;
        knee.note = Some(format!(
            "the load bound the knee at --{} {limit}: searched again at {half}",
            SERVER_CPU_LIMIT.name
        ));
    }
    results.max_rates.push(knee);
    results.write(placed.dir)?;
    Ok(())
}

/// One search: levels doubling until one fails, every round of each recorded.
async fn search(
    options: &RunOptions,
    combination: &Combination,
    placed: &Placed<'_>,
    results: &mut Results,
) -> anyhow::Result<MaxRate> {
    let scenario = &options.scenario;
    let budgets = (
        (scenario.p99_budget_ms * 1000.0) as u64,
        scenario.memory_budget_mb,
    );
    let mut bracket = Bracket::new(scenario, combination.key.subscribers);
    for _ in 0..MAX_LEVELS + BISECTIONS {
        let (rate, subscribers) = (bracket.rate, bracket.subscribers);
        let rounds = level(options, combination, (rate, subscribers), placed, results).await?;
        let verdict = verdict(&rounds, budgets, (bracket.stepped, rate, subscribers));
        bracket.judged(verdict, median_round(rounds));
        if !bracket.step() {
            break;
        }
    }
    Ok(bracket.knee(combination))
}

/// Measures one level (`rate` a second to `subscribers`), in every round the scenario asks
/// for, each recorded as it finishes.
async fn level(
    options: &RunOptions,
    combination: &Combination,
    (rate, subscribers): (f64, usize),
    placed: &Placed<'_>,
    results: &mut Results,
) -> anyhow::Result<Vec<TransportResult>> {
    let mut level = options.scenario.clone();
    level.rate = crate::event::Rate::PerSecond(rate);
    level.events = (rate * LEVEL_SECS).round().max(100.0) as u64;
    level.warmup = LEVEL_WARMUP;
    let mut at = combination.clone();
    at.key.subscribers = subscribers;
    // Rounds apply to each level: its verdict is their median p99 and the worst of the rest.
    let mut rounds = Vec::new();
    for round in 0..level.repeat.max(1) {
        at.key.round = round;
        let result = measure(options, &level, &at, placed).await?;
        results.runs.push(result.clone());
        results.write(placed.dir)?;
        rounds.push(result);
    }
    Ok(rounds)
}

/// Where a search stands: the level to measure next, the last that held and the nearest that
/// failed. It doubles until a level fails, then halves the gap to the last that held.
struct Bracket {
    stepped: Stepped,
    rate: f64,
    subscribers: usize,
    /// The last level that held, with its median round.
    held: Option<(f64, usize, TransportResult)>,
    /// The nearest level that failed.
    failed: Option<(f64, usize)>,
    bisected: usize,
    /// What was saturated at the nearest level above the knee: what gave out there.
    gave_out: Option<Bound>,
    stopped_because: String,
}

impl Bracket {
    fn new(scenario: &crate::results::scenario::Scenario, subscribers: usize) -> Self {
        Self {
            stepped: scenario.find_max_of,
            rate: match scenario.rate {
                crate::event::Rate::PerSecond(rate) => rate,
                crate::event::Rate::Max => 1000.0,
            },
            subscribers,
            held: None,
            failed: None,
            bisected: 0,
            gave_out: None,
            stopped_because: format!("still held after {MAX_LEVELS} levels"),
        }
    }

    /// Takes the verdict on the level just measured (`None`: it held) and its median round.
    fn judged(&mut self, verdict: Option<String>, median: TransportResult) {
        match verdict {
            Some(why) => {
                self.stopped_because = why;
                self.failed = Some((self.rate, self.subscribers));
                self.gave_out = median.bound;
            }
            None => self.held = Some((self.rate, self.subscribers, median)),
        }
    }

    /// Moves to the next level: doubling until one fails, then halfway between the last that
    /// held and the nearest that failed (holding, it becomes the bound below; failing, the
    /// bound above). `false` once the knee is found: nothing held at all, or the gap is
    /// halved enough.
    fn step(&mut self) -> bool {
        let Some((failed_rate, failed_subscribers)) = self.failed else {
            match self.stepped {
                Stepped::Rate => self.rate *= 2.0,
                Stepped::Subscribers => self.subscribers *= 2,
            }
            return true;
        };
        let Some((held_rate, held_subscribers, _)) = self.held.as_ref() else {
            return false;
        };
        if self.bisected == BISECTIONS {
            return false;
        }
        self.bisected += 1;
        match self.stepped {
            Stepped::Rate => self.rate = (held_rate + failed_rate) / 2.0,
            Stepped::Subscribers => {
                self.subscribers = (held_subscribers + failed_subscribers) / 2;
                return self.subscribers != *held_subscribers;
            }
        }
        true
    }

    /// The knee: the last level that held, with what was measured there.
    fn knee(self, combination: &Combination) -> MaxRate {
        let limit = SERVER_CPU_LIMIT.read(&combination.settings);
        let mut knee = MaxRate {
            key: combination.key.of_every_round(),
            events_per_s: 0.0,
            p99_us: 0,
            stopped_because: self.stopped_because,
            stepped: self.stepped,
            subscribers_held: None,
            deliveries_per_s: None,
            server_cores: (limit > 0.0).then_some(limit),
            server_rss_bytes: None,
            server_cpu_share: None,
            bound: None,
            note: None,
        };
        if let Some((rate, subscribers, at)) = self.held {
            knee.events_per_s = rate;
            knee.p99_us = at.latency_us.p99;
            knee.subscribers_held = (self.stepped == Stepped::Subscribers).then_some(subscribers);
            knee.deliveries_per_s = Some(at.throughput.events_per_s);
            knee.server_rss_bytes = at.server_peak_rss_bytes;
            knee.server_cpu_share = at.server_cpu_share;
            // The knee is bound by what gave out just above it; the level that held, within
            // an eighth of a doubling of it, is then near saturation but may fall just short.
            knee.bound = self.gave_out.or(at.bound);
        }
        knee
    }
}

/// Why a level failed, if it did: a round lost events or was refused; the median p99 of its
/// rounds passed the budget; the server's memory passed the budget.
fn verdict(
    rounds: &[TransportResult],
    (budget_us, memory_budget_mb): (u64, Option<f64>),
    (stepped, rate, subscribers): (Stepped, f64, usize),
) -> Option<String> {
    let at = match stepped {
        Stepped::Rate => format!("{rate} ev/s"),
        Stepped::Subscribers => format!("{subscribers} subscribers"),
    };
    if let Some(failed) = rounds.iter().find(|r| r.failed) {
        let why = failed
            .error
            .clone()
            .unwrap_or_else(|| format!("lost {}", failed.lost));
        return Some(format!("events lost, corrupted or refused at {at}: {why}"));
    }
    let p99s: Vec<f64> = rounds.iter().map(|r| r.latency_us.p99 as f64).collect();
    let p99 = stats::median(&p99s).unwrap_or(0.0) as u64;
    if p99 > budget_us {
        return Some(format!("p99 {p99} us over the budget at {at}"));
    }
    let rss = rounds
        .iter()
        .filter_map(|r| r.server_peak_rss_bytes)
        .max()
        .unwrap_or(0);
    match memory_budget_mb {
        Some(mb) if rss as f64 > mb * 1e6 => Some(format!(
            "server memory {:.0} MB over the {mb} MB budget at {at}",
            rss as f64 / 1e6
        )),
        _ => None,
    }
}

/// The round whose p99 is the median of a level's (the one its figures are quoted from).
fn median_round(mut rounds: Vec<TransportResult>) -> TransportResult {
    rounds.sort_by_key(|r| r.latency_us.p99);
    let middle = rounds.len() / 2;
    rounds.swap_remove(middle)
}
