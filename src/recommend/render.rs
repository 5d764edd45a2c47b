//! A recommendation as terminal text: the design in one line, the runs cited, then every
//! transport best first with its verdict and reasons (`+` supports, `!` caveat, `x`
//! excludes, `?` not measured).

use std::fmt::Write as _;

use super::assess::{Verdict, Weight};
use super::Recommendation;

/// A verdict in words.
pub fn verdict_text(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Fits => "fits",
        Verdict::FitsWithCaveats => "fits with caveats",
        Verdict::Excluded => "excluded",
    }
}

/// Whose figures stand for each transport, in words.
fn deployed(deploys: &[String]) -> String {
    if deploys.is_empty() {
        return "pushbench's own server and client for every transport".into();
    }
    format!(
        "{} where a transport has it, pushbench's own elsewhere",
        deploys.join(", ")
    )
}

/// The server and libraries a transport's figures came from, where they are not pushbench's
/// own.
fn libraries([server_impl, client_impl, server]: [&str; 3]) -> String {
    use crate::transport::implementation::OWN;
    let named: Vec<String> = [
        (server, "server"),
        (server_impl, "server library"),
        (client_impl, "client library"),
    ]
    .into_iter()
    .filter(|(name, _)| *name != OWN)
    .map(|(name, side)| format!("{name} {side}"))
    .collect();
    match named.is_empty() {
        true => String::new(),
        false => format!("  [{}]", named.join(", ")),
    }
}

/// The whole answer, readable in a terminal.
pub fn text(answer: &Recommendation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "design {}: {}",
        answer.design.name,
        answer.design.sentence()
    );
    let _ = writeln!(out, "figures from: {}", answer.evidence.join(", "));
    let _ = writeln!(out, "implementations: {}", deployed(&answer.design.deploys));
    match answer.scalings.as_deref() {
        Some([]) => {
            let _ = writeln!(out, "measured for this design, at its own regime");
        }
        Some(scalings) => {
            let _ = writeln!(out, "measured for this design, scaled to this machine:");
            for scaling in scalings {
                let _ = writeln!(out, "  - {scaling}");
            }
        }
        None => {}
    }
    for ranked in &answer.ranking {
        let a = &ranked.assessment;
        let score = match ranked.score {
            Some(score) if a.verdict != Verdict::Excluded => format!("  (cost {score:.2})"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "\n{:>2}. {:<10} {}{score}{}",
            ranked.rank,
            a.transport,
            verdict_text(a.verdict),
            crate::transport::Transport::named(a.transport)
                .map(|t| libraries(answer.design.implementations(t)))
                .unwrap_or_default(),
        );
        // Excluded transports show only why they are out; the rest show everything.
        for reason in a
            .reasons
            .iter()
            .filter(|r| a.verdict != Verdict::Excluded || r.weight == Weight::Excludes)
        {
            let mark = match reason.weight {
                Weight::Supports => '+',
                Weight::Caveat => '!',
                Weight::Excludes => 'x',
                Weight::Unmeasured => '?',
            };
            let _ = writeln!(out, "      {mark} {}: {}", reason.constraint, reason.text);
        }
    }
    let missing: Vec<&str> = answer
        .ranking
        .iter()
        .filter_map(|r| r.assessment.to_measure.as_deref())
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(out, "\nto measure what these results lack:");
        for command in missing {
            let _ = writeln!(out, "  {command}");
        }
    }
    if answer.nothing_fits {
        let _ = writeln!(out, "\nno transport satisfies this design.");
        if answer.relax.is_empty() {
            let _ = writeln!(out, "no single constraint, relaxed, would change that.");
        } else {
            let _ = writeln!(out, "relax one constraint:");
            for relax in &answer.relax {
                let _ = writeln!(out, "  - {relax}");
            }
        }
    }
    out
}
