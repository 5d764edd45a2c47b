//! What `--measure` prints besides the answer: the plan before a design's runs, and over several
//! designs a summary after (pick, runner-up, scaling, time).

use std::fmt::Write as _;

use super::{Measured, Prepared};
use crate::recommend::assess::Verdict;
use crate::recommend::design::Design;
use crate::recommend::render::verdict_text;

/// What `--measure` is about to run for a design: the transports, the runs, every scaling.
pub fn plan(prepared: &Prepared) -> String {
    let mut out = String::new();
    let names: Vec<&str> = prepared.transports.iter().map(|t| t.name()).collect();
    let facets: Vec<&str> = prepared.plan.facets.iter().map(|f| f.name).collect();
    let _ = writeln!(
        out,
        "measuring design {}: {} ({} run(s): {})",
        prepared.design.name,
        names.join(", "),
        facets.len(),
        facets.join(", ")
    );
    if prepared.plan.scalings.is_empty() {
        let _ = writeln!(out, "  at the design's own regime: nothing scaled");
    }
    for scaling in &prepared.plan.scalings {
        let _ = writeln!(out, "  scaled: {scaling}");
    }
    out
}

/// One design's line in the summary of `--all-designs --measure`.
#[derive(Debug)]
pub struct Line {
    design: String,
    pick: String,
    runner_up: String,
    scaling: String,
    took_secs: Option<f64>,
}

impl Line {
    /// A design measured and judged.
    pub fn of(prepared: &Prepared, measured: &Measured) -> Self {
        let ranking = &measured.recommendation.ranking;
        let name = |i: usize| {
            ranking
                .get(i)
                .filter(|r| r.assessment.verdict != Verdict::Excluded)
                .map_or("none".to_owned(), |r| {
                    format!(
                        "{} ({})",
                        r.assessment.transport,
                        verdict_text(r.assessment.verdict)
                    )
                })
        };
        Self {
            design: prepared.design.name.clone(),
            pick: name(0),
            runner_up: name(1),
            scaling: if prepared.plan.scalings.is_empty() {
                "none".into()
            } else {
                prepared.plan.scalings.join("; ")
            },
            took_secs: Some(measured.took.as_secs_f64()),
        }
    }

    /// A design that could not be scaled honestly, or whose runs could not finish, and why.
    pub fn unscaled(design: &Design, why: &anyhow::Error) -> Self {
        Self {
            design: design.name.clone(),
            pick: "not measured".into(),
            runner_up: "–".into(),
            scaling: format!("{why:#}"),
            took_secs: None,
        }
    }
}

/// The designs measured, each with its pick, runner-up, scaling and time.
pub fn summary(designs: &[Line]) -> String {
    let mut out =
        String::from("\n| design | pick | runner-up | scaling | took |\n|---|---|---|---|---|\n");
    for d in designs {
        let took = d
            .took_secs
            .map_or("–".to_owned(), |secs| format!("{secs:.0} s"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {took} |",
            d.design, d.pick, d.runner_up, d.scaling
        );
    }
    out
}
