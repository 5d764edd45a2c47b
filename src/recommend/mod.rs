//! `pushbench recommend`: a design's constraints and measured results in, every transport
//! ranked out, each with a verdict and its reasons. Hard rules (what a transport is) exclude;
//! measured figures rank what remains. When nothing fits, it says which single constraint to
//! relax. The report's "which to pick" section runs the same engine over the standard designs.
//!
//! - [`design`]: the design, from flags or `designs/*.toml`.
//! - [`evidence`]: the results files and the figure nearest a design.
//! - [`reconnections`]: the storms and churn a transport's rows went through.
//! - [`conditions`]: which rows were measured under a design's conditions (shape, faults,
//!   TLS, proxy), the only ones that are evidence for it.
//! - [`assess`]: one transport against one design.
//! - [`render`]: the answer as terminal text.

// Each function here does one step of a pipeline: long ones are split (clippy.toml).
#![warn(clippy::too_many_lines)]

pub mod assess;
pub mod conditions;
pub mod design;
pub mod evidence;
pub mod reconnections;
pub mod render;

use serde::Serialize;

use crate::document::Block;
use crate::results::figures::Figure;
use crate::results::Results;
use crate::transport::Transport;
use assess::{assess, Assessment, Constraint, Costs, Verdict};
use design::{Design, DesignSettings};
use evidence::Evidence;

/// The standard designs (the files under `designs/`), built in so the report needs no files.
pub const STANDARD_DESIGNS: [(&str, &str); 12] = [
    (
        "payment-webhooks",
        include_str!("../../designs/payment-webhooks.toml"),
    ),
    ("chat", include_str!("../../designs/chat.toml")),
    (
        "live-dashboard",
        include_str!("../../designs/live-dashboard.toml"),
    ),
    (
        "corporate-proxy",
        include_str!("../../designs/corporate-proxy.toml"),
    ),
    (
        "iot-devices",
        include_str!("../../designs/iot-devices.toml"),
    ),
    (
        "market-data",
        include_str!("../../designs/market-data.toml"),
    ),
    (
        "device-fleet",
        include_str!("../../designs/device-fleet.toml"),
    ),
    (
        "service-mesh",
        include_str!("../../designs/service-mesh.toml"),
    ),
    (
        "notifications",
        include_str!("../../designs/notifications.toml"),
    ),
    (
        "collaborative-editing",
        include_str!("../../designs/collaborative-editing.toml"),
    ),
    (
        "multiplayer-lobby",
        include_str!("../../designs/multiplayer-lobby.toml"),
    ),
    (
        "live-game-state",
        include_str!("../../designs/live-game-state.toml"),
    ),
];

/// The answer to one design.
#[derive(Debug, Serialize)]
pub struct Recommendation {
    /// The design as understood.
    pub design: Design,
    /// The runs the figures come from.
    pub evidence: Vec<String>,
    /// Where the evidence holds the design's own runs (`--measure`): how they were scaled to
    /// this machine, each a sentence; empty when they ran at the design's own regime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scalings: Option<Vec<String>>,
    /// Every transport, best first.
    pub ranking: Vec<Ranked>,
    /// Whether no transport the evidence measured fits (one it never measured is unmeasured,
    /// not a fit).
    pub nothing_fits: bool,
    /// When nothing fits: single constraints whose relaxing would let something fit.
    pub relax: Vec<String>,
}

/// A transport's place in the ranking.
#[derive(Debug, Serialize)]
pub struct Ranked {
    /// 1 is best.
    pub rank: usize,
    /// How far behind the best fitting transport it is on measured cost (doublings summed over
    /// p99, server CPU, wire bandwidth, memory held and requests per second, for the whole
    /// design); `None` if excluded.
    pub score: Option<f64>,
    /// The assessment.
    #[serde(flatten)]
    pub assessment: Assessment,
}

/// Ranks every transport for a design.
pub fn recommend(design: &Design, evidence: &Evidence) -> Recommendation {
    let ranking = rank(
        Transport::ALL
            .iter()
            .map(|t| assess(*t, design, evidence))
            .collect(),
        design,
    );
    let measured: Vec<&Ranked> = ranking
        .iter()
        .filter(|r| measured(r.assessment.transport, evidence))
        .collect();
    let nothing_fits = !measured.is_empty()
        && measured
            .iter()
            .all(|r| r.assessment.verdict == Verdict::Excluded);
    let relax = match nothing_fits {
        true => relaxations(design, evidence),
        false => Vec::new(),
    };
    Recommendation {
        design: design.clone(),
        evidence: evidence.run_ids(),
        scalings: evidence.scalings(design).map(<[String]>::to_vec),
        ranking,
        nothing_fits,
        relax,
    }
}

/// Whether the evidence measured the transport (by name) at all.
fn measured(transport: &str, evidence: &Evidence) -> bool {
    Transport::named(transport).is_some_and(|t| evidence.holds(t))
}

/// Costs a missing figure counts as (doublings behind the best).
const MISSING_PENALTY: f64 = 3.0;
/// Verdict first, then measured cost: for each figure, how many doublings behind the best
/// non-excluded transport, summed.
fn rank(assessments: Vec<Assessment>, design: &Design) -> Vec<Ranked> {
    let live: Vec<&Assessment> = assessments
        .iter()
        .filter(|a| a.verdict != Verdict::Excluded)
        .collect();
    // The best (lowest) of each cost among the transports still in the running.
    let best = live.iter().fold(Costs::default(), |best, a| {
        let lower = |b: Option<f64>, v: Option<f64>| match (b, v) {
            (Some(b), Some(v)) => Some(b.min(v)),
            (b, v) => b.or(v),
        };
        Costs {
            p99_us: lower(best.p99_us, a.costs.p99_us),
            cpu_cores: lower(best.cpu_cores, a.costs.cpu_cores),
            wire_bytes_per_s: lower(best.wire_bytes_per_s, a.costs.wire_bytes_per_s),
            memory_bytes: lower(best.memory_bytes, a.costs.memory_bytes),
            requests_per_s: lower(best.requests_per_s, a.costs.requests_per_s),
        }
    });
    let best = best.with_floors(design);
    let score = |a: &Assessment| -> Option<f64> {
        (a.verdict != Verdict::Excluded).then(|| {
            a.costs
                .with_floors(design)
                .iter()
                .zip(&best)
                .map(|(&(cost, floor), &(best, _))| match (cost, best) {
                    (Some(v), Some(b)) => ((v + floor) / (b + floor)).log2(),
                    (None, Some(_)) => MISSING_PENALTY,
                    _ => 0.0,
                })
                .sum()
        })
    };
    let mut ranked: Vec<Ranked> = assessments
        .into_iter()
        .map(|a| Ranked {
            rank: 0,
            score: score(&a).map(|s| (s * 100.0).round() / 100.0),
            assessment: a,
        })
        .collect();
    ranked.sort_by(|a, b| {
        a.assessment.verdict.cmp(&b.assessment.verdict).then(
            a.score
                .unwrap_or(f64::MAX)
                .total_cmp(&b.score.unwrap_or(f64::MAX)),
        )
    });
    for (i, r) in ranked.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    ranked
}

/// Single changes to the design that would let some transport fit, each with who would.
fn relaxations(design: &Design, evidence: &Evidence) -> Vec<String> {
    // The budget the quickest transport needs: its p99, and for a design whose messages come
    // back to the room, its round trip's too.
    let echoed = design.upstream_rate > 0.0 && design.echo;
    let needs = |t: Transport| {
        let latency = evidence.nearest(t, design, Figure::LatencyP99, true);
        let round_trip = echoed.then(|| evidence.round_trip(t, design)).flatten();
        [latency, round_trip]
            .into_iter()
            .flatten()
            .map(|m| m.value)
            .max_by(f64::total_cmp)
    };
    let fastest = Transport::ALL
        .iter()
        .filter_map(|t| needs(*t))
        .min_by(f64::total_cmp);
    let mut options: Vec<(String, Design)> = Vec::new();
    let mut change = |label: String, edit: &dyn Fn(&mut Design)| {
        let mut relaxed = design.clone();
        edit(&mut relaxed);
        if relaxed != *design {
            options.push((label, relaxed));
        }
    };
    change(
        "allow WebSocket upgrades through the network".into(),
        &|d| d.websocket_upgrades = true,
    );
    change(
        "remove the buffering proxy (or turn off its response buffering)".into(),
        &|d| d.buffering_proxy = false,
    );
    if design.consumers != design::Consumers::Browsers {
        change("give consumers a reachable HTTP endpoint".into(), &|d| {
            d.inbound_http = true
        });
    }
    if let Some(us) = fastest {
        change(
            format!("raise the p99 budget to {} ms", (us / 1e3 * 1.2).ceil()),
            &|d| d.p99_budget_ms = d.p99_budget_ms.max((us / 1e3 * 1.2).ceil()),
        );
    }
    change("lift the memory-per-connection budget".into(), &|d| {
        d.memory_per_connection = None
    });
    change("lift the CPU budget".into(), &|d| d.cpu_cores = None);
    options
        .into_iter()
        .filter_map(|(label, relaxed)| {
            let fitting: Vec<&str> = Transport::ALL
                .iter()
                .map(|t| assess(*t, &relaxed, evidence))
                .filter(|a| a.verdict != Verdict::Excluded)
                .filter(|a| measured(a.transport, evidence))
                .map(|a| a.transport)
                .collect();
            (!fitting.is_empty()).then(|| format!("{label}: then {} would fit", fitting.join(", ")))
        })
        .collect()
}

/// The report's "which to pick": the standard designs against this run's figures.
pub fn which_to_pick(results: &Results) -> Vec<Block> {
    // A knee search's levels are offered at rates of its own choosing, never a design's: its
    // figures reach a design as capacity (the knee table), not as rows to judge by.
    if results.scenario.find_max {
        return vec![Block::Paragraph(
            "A knee search: its levels ran at rates of the search's choosing, so the standard \
             designs are not judged from them here; `pushbench recommend` reads its knees as \
             capacity."
                .into(),
        )];
    }
    let evidence = Evidence::of(results.clone(), "results.json".into());
    let rows: Vec<Vec<String>> = STANDARD_DESIGNS
        .iter()
        .filter_map(|(name, text)| {
            let design = DesignSettings::from_toml(text)
                .and_then(|mut s| {
                    s.name.get_or_insert_with(|| (*name).to_owned());
                    s.resolve().map_err(|e| e.to_string())
                })
                .ok()?;
            Some(pick_row(name, &design, &evidence))
        })
        .collect();
    vec![
        Block::Paragraph(
            "The standard designs in `designs/`, judged by `pushbench recommend` against this \
             run's own figures (hard rules exclude; measured p99, CPU, bytes and memory rank). \
             For your own design: `pushbench recommend --design FILE --results THIS_DIR`; to \
             measure a design at its own shape first: `pushbench recommend --design FILE \
             --measure` (every standard one: `--all-designs --measure`)."
                .into(),
        ),
        Block::Table {
            head: ["design", "pick", "because", "runner-up"]
                .map(String::from)
                .to_vec(),
            emphasis: vec![false; rows.len()],
            rows,
        },
    ]
}

/// One standard design's row of "Which to pick": the design, the pick (saying when it was
/// beyond what the run measured), why, and the runner-up.
fn pick_row(name: &str, design: &Design, evidence: &Evidence) -> Vec<String> {
    let answer = recommend(design, evidence);
    let first = &answer.ranking[0].assessment;
    // A pick this run did not measure stands on hard rules alone: say so.
    let unmeasured = first.to_measure.is_some()
        && first
            .reasons
            .iter()
            .any(|r| r.weight == assess::Weight::Unmeasured);
    let pick = if first.verdict == Verdict::Excluded {
        "none fits".to_string()
    } else {
        format!(
            "**{}** ({}){}",
            first.transport,
            render::verdict_text(first.verdict),
            if unmeasured {
                ", beyond what this run measured"
            } else {
                ""
            }
        )
    };
    // One hard-rule reason, then the measured latency, then how missed events return.
    let hard = first
        .reasons
        .iter()
        .filter(|r| r.weight != assess::Weight::Unmeasured && r.constraint.is_hard())
        .take(1);
    let measured = first
        .reasons
        .iter()
        .filter(|r| matches!(r.constraint, Constraint::Latency | Constraint::Delivery));
    let why: Vec<String> = hard.chain(measured).map(|r| r.text.clone()).collect();
    let runner_up = answer
        .ranking
        .get(1)
        .filter(|r| r.assessment.verdict != Verdict::Excluded)
        .map_or_else(|| "–".into(), |r| r.assessment.transport.to_string());
    vec![
        format!("**{name}**: {}", design.sentence()),
        pick,
        why.join("; "),
        runner_up,
    ]
}
