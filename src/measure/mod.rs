//! `pushbench recommend --measure` (and `pushbench run --design`): a design's own runs on this
//! machine, then the judgement from what they measured: the CLI's composition of the harness
//! and `recommend`, which itself never runs anything. The hard rules go first (they need no
//! figures), so only the transports they leave are measured; [`scale`] makes the design into
//! runs this machine holds within the budget, and says what it scaled; [`render`] prints the
//! plan and, over several designs, a summary.

// Each function here does one step of a pipeline: long ones are split (clippy.toml).
#![warn(clippy::too_many_lines)]

pub mod render;
pub mod scale;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::harness::{self, RunOptions, RunOutcome};
use crate::recommend::assess::{assess, Verdict};
use crate::recommend::design::Design;
use crate::recommend::evidence::Evidence;
use crate::recommend::{recommend, Recommendation};
use crate::transport::Transport;
use scale::{Limits, Plan};

/// How to measure a design.
#[derive(Clone, Debug)]
pub struct MeasureOptions {
    /// What the machine and the user allow.
    pub limits: Limits,
    /// Only these transports (of those the hard rules leave); all when empty.
    pub only: Vec<Transport>,
    /// Directory for the runs' results.
    pub out: PathBuf,
    /// The pushbench executable the runs start their children from.
    pub exe: PathBuf,
    /// Pin the server and the load to CPUs of their own.
    pub pin: bool,
}

/// A design ready to measure: what the hard rules left and the runs that measure it.
#[derive(Debug)]
pub struct Prepared {
    /// The design.
    pub design: Design,
    /// The transports to measure.
    pub transports: Vec<Transport>,
    /// The runs, and what was scaled.
    pub plan: Plan,
}

/// A design measured and judged.
#[derive(Debug)]
pub struct Measured {
    /// The judgement, from the design's own runs alone.
    pub recommendation: Recommendation,
    /// Each run as `run` finished it.
    pub runs: Vec<RunOutcome>,
    /// How long the runs took.
    pub took: Duration,
}

/// The transports the hard rules leave `design`, and its runs; the reason when it cannot be
/// measured honestly here.
pub fn prepare(design: &Design, options: &MeasureOptions) -> anyhow::Result<Prepared> {
    // Against no evidence only the hard rules (what a transport is) can exclude.
    let none = Evidence::default();
    let transports: Vec<Transport> = Transport::ALL
        .iter()
        .copied()
        .filter(|t| options.only.is_empty() || options.only.contains(t))
        .filter(|t| assess(*t, design, &none).verdict != Verdict::Excluded)
        .collect();
    let plan = scale::plan(design, &transports, &options.limits).map_err(|why| {
        anyhow::anyhow!(
            "design {} is not measured: it cannot be scaled honestly to this machine: {why}",
            design.name
        )
    })?;
    Ok(Prepared {
        design: design.clone(),
        transports,
        plan,
    })
}

/// Runs a prepared design's runs and judges it from them alone.
pub async fn run(prepared: &Prepared, options: &MeasureOptions) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut runs = Vec::new();
    for facet in &prepared.plan.facets {
        let mut scenario = facet.settings.clone().resolve().with_context(|| {
            format!("the {} run of design {}", facet.name, prepared.design.name)
        })?;
        scenario.design = Some(facet.design_run.clone());
        let outcome = harness::run(RunOptions {
            scenario,
            out: options.out.clone(),
            exe: options.exe.clone(),
            pin: options.pin,
        })
        .await?;
        runs.push(outcome);
    }
    let evidence = Evidence::of_all(runs.iter().map(|o| (o.results.clone(), o.path.clone())));
    Ok(Measured {
        recommendation: recommend(&prepared.design, &evidence),
        runs,
        took: started.elapsed(),
    })
}
