//! Ratios to the floor, paired within a round: a row's figure in each round divided by the
//! same figure of the raw TCP row of that round, at the same setting. What slowed a whole
//! round (a neighbour's burst, a busier host, another CPU model) moves both and cancels, so a
//! ratio holds across reruns and machines where the absolute figure does not; its spread over
//! the rounds, and its interval, say how far.

use super::figures::{Figure, Row, Spread};

/// The figures divided by the floor's: latency at the median and the tail, deliveries per
/// second and the server's CPU per delivery.
pub const PAIRED: [Figure; 4] = [
    Figure::LatencyP50,
    Figure::LatencyP99,
    Figure::EventsPerS,
    Figure::ServerCpuUsPerDelivery,
];

/// The floor row `row` is paired with: the floor transport's at the same subscribers, payload,
/// offered rate and workload, under the same swept settings where the floor took them (TLS on
/// pairs with TLS on). `None` for the floor itself, or when the run had no floor there.
pub fn floor_for<'r, 'a>(row: &Row<'a>, rows: &'r [Row<'a>]) -> Option<&'r Row<'a>> {
    if row.is_floor() {
        return None;
    }
    let at_setting = |floor: &&Row<'a>| {
        floor.is_floor()
            && floor.setting() == row.setting()
            && floor.key.workload == row.key.workload
    };
    // Every setting the floor row was swept with has the row's value for it.
    let same_conditions = |floor: &&Row<'a>| {
        floor
            .key
            .variant
            .0
            .iter()
            .all(|(name, value)| row.key.variant.0.get(name).is_none_or(|v| v == value))
    };
    let candidates: Vec<&Row<'a>> = rows.iter().filter(at_setting).collect();
    candidates
        .iter()
        .copied()
        .find(|floor| same_conditions(floor))
        .or(candidates.first().copied())
}

/// `figure` of `row` divided by `floor`'s, in each round both passed, as a spread over those
/// rounds.
pub fn ratio(row: &Row<'_>, floor: &Row<'_>, figure: Figure) -> Spread {
    Spread::of(ratios(row, floor, figure))
}

/// `figure` of `row` divided by `floor`'s, one value per round both passed. Runs of a round
/// pair up in the order they ran (results from before rounds have one round, 0, and pair their
/// repeats in order).
pub fn ratios(row: &Row<'_>, floor: &Row<'_>, figure: Figure) -> Vec<f64> {
    let metric = figure.metric();
    let mut ratios = Vec::new();
    let rounds = row.runs.iter().map(|r| r.key.round).max().unwrap_or(0);
    for round in 0..=rounds {
        let in_round = |r: &&&crate::results::TransportResult| r.key.round == round && !r.failed;
        let mine = row.runs.iter().filter(in_round);
        let floors = floor.runs.iter().filter(in_round);
        for (mine, theirs) in mine.zip(floors) {
            let (a, b) = ((metric.value)(mine), (metric.value)(theirs));
            if a.is_finite() && b.is_finite() && b != 0.0 {
                ratios.push(a / b);
            }
        }
    }
    ratios
}
