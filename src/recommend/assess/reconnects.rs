//! The rules for consumers that come and go: a design whose consumers all return at once
//! after a deploy (storms) or come and go all the time (churn) is judged by the storm or
//! churn a row of the transport went through.

use super::{run_command, Constraint, Facts, Findings, Weight};
use crate::harness::settings::settings_of;
use crate::recommend::reconnections::Endured;
use crate::results::format::thousands;
use crate::transport::resume::CHURN;
use crate::transport::storm::STORM_AFTER;

/// A design that reconnects all at once is judged by how fast a measured close storm of the
/// nearest size was back and caught up, with every ledger exact.
pub fn storms(facts: &Facts<'_>, found: &mut Findings) {
    if !facts.design.storms {
        return;
    }
    match facts.evidence.storm(facts.transport, facts.design) {
        Some(storm) if storm.passed => {
            let caught_up = match storm.what.caught_up.p99_ms {
                Some(ms) => format!("99% were back and caught up within {:.2} s", ms / 1000.0),
                None => "fewer than 99% caught up before the stream ended".into(),
            };
            found.say(
                Weight::Supports,
                Constraint::Storms,
                format!(
                    "after a close storm of {} subscribers, {caught_up}, every ledger exact \
                     ({})",
                    thousands(storm.subscribers as f64),
                    storm.run_id
                ),
            );
        }
        Some(storm) => found.say(
            Weight::Excludes,
            Constraint::Storms,
            format!(
                "a close storm of {} subscribers failed it: {} ({})",
                thousands(storm.subscribers as f64),
                failure(&storm),
                storm.run_id
            ),
        ),
        None => unmeasured(facts, found, Constraint::Storms, STORM_AFTER.name, "3s"),
    }
}

/// A design whose consumers come and go is judged by whether the ledgers stayed exact under
/// the nearest measured churn.
pub fn churn(facts: &Facts<'_>, found: &mut Findings) {
    let wanted = facts.design.churn;
    if wanted == 0 {
        return;
    }
    match facts.evidence.churn(facts.transport, facts.design) {
        Some(churn) if churn.passed => found.say(
            Weight::Supports,
            Constraint::Churn,
            format!(
                "every ledger exact with {} connections reopened a second over {} \
                 subscribers ({})",
                churn.what,
                thousands(churn.subscribers as f64),
                churn.run_id
            ),
        ),
        Some(churn) => found.say(
            Weight::Excludes,
            Constraint::Churn,
            format!(
                "with {} connections reopened a second over {} subscribers: {} ({})",
                churn.what,
                thousands(churn.subscribers as f64),
                failure(&churn),
                churn.run_id
            ),
        ),
        None => unmeasured(
            facts,
            found,
            Constraint::Churn,
            CHURN.name,
            &wanted.to_string(),
        ),
    }
}

/// Why a row failed, as its run said.
fn failure<T>(endured: &Endured<T>) -> String {
    endured
        .error
        .clone()
        .unwrap_or_else(|| "not every subscriber got the identical stream".into())
}

/// No row measured it: says so, and what would measure it where the transport takes the
/// fault (`--name value`).
fn unmeasured(
    facts: &Facts<'_>,
    found: &mut Findings,
    constraint: Constraint,
    name: &str,
    value: &str,
) {
    let takes = settings_of(facts.transport)
        .iter()
        .any(|s| s.name() == name);
    if !takes {
        found.say(
            Weight::Unmeasured,
            constraint,
            format!("pushbench does not measure --{name} on it"),
        );
        return;
    }
    found.say(
        Weight::Unmeasured,
        constraint,
        format!("no run measured --{name} on it"),
    );
    found.to_measure.get_or_insert_with(|| {
        format!(
            "{} --{name} {value}",
            run_command(facts.transport, facts.design)
        )
    });
}
