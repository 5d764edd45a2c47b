//! The evidence of consumers coming and going: the close storm (every connection cut at once,
//! as a deploy does) and the churn (connections closed and reopened all the time) that a
//! transport's rows went through, whether they passed or not. Unlike every other figure, these
//! are read from faulted rows, and from any workload shape: a storm or churn is about the
//! connections, whatever flows on them.

use super::design::Design;
use super::evidence::Evidence;
use crate::metrics::storm::StormEffect;
use crate::results::figures::{rows_without_intervals, Row};
use crate::transport::resume::CHURN;
use crate::transport::tls::TLS;
use crate::transport::Transport;

/// A storm or churn some row of a transport went through.
#[derive(Clone, Debug, PartialEq)]
pub struct Endured<T> {
    /// What it measured.
    pub what: T,
    /// Subscribers of the row.
    pub subscribers: usize,
    /// Whether every subscriber of the row got the identical stream (its ledger exact).
    pub passed: bool,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The run it comes from.
    pub run_id: String,
}

impl Evidence {
    /// The close storm of the row nearest the design's consumers, under the design's TLS and
    /// pushbench's own implementations.
    pub fn storm(&self, transport: Transport, design: &Design) -> Option<Endured<StormEffect>> {
        let design = self.regime(design);
        self.nearest_faulted(transport, design, |row| {
            row.runs
                .iter()
                .find_map(|run| run.storm.clone().filter(|s| s.kind == "close"))
        })
    }

    /// The churn (connections reopened per second) of the row nearest the design's consumers,
    /// under the design's TLS and pushbench's own implementations.
    pub fn churn(&self, transport: Transport, design: &Design) -> Option<Endured<u64>> {
        let design = self.regime(design);
        self.nearest_faulted(transport, design, |row| {
            let churn = CHURN.read(&row.runs.first()?.settings);
            (churn > 0).then_some(churn)
        })
    }

    /// The row nearest the design's subscribers (by ratio) among the transport's rows that
    /// measured `what`.
    fn nearest_faulted<T>(
        &self,
        transport: Transport,
        design: &Design,
        what: impl Fn(&Row<'_>) -> Option<T>,
    ) -> Option<Endured<T>> {
        let distance = |subscribers: usize| {
            ((subscribers.max(1) as f64) / (design.subscribers.max(1) as f64))
                .ln()
                .abs()
        };
        self.sources
            .iter()
            .flat_map(|source| {
                rows_without_intervals(&source.results)
                    .into_iter()
                    .filter(|row| admitted(row, transport, design))
                    .filter_map(|row| {
                        let run = row.runs.iter().find(|r| r.failed).or(row.runs.first())?;
                        Some(Endured {
                            what: what(&row)?,
                            subscribers: row.key.subscribers,
                            passed: row.ok(),
                            error: run.error.clone(),
                            run_id: source.results.run_id.clone(),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .min_by(|a, b| distance(a.subscribers).total_cmp(&distance(b.subscribers)))
    }
}

/// Whether a row is the transport's, by the implementations the design deploys (pushbench's
/// own where it names none) on pushbench's own server, under the design's TLS (a
/// reconnection's cost is mostly its handshakes).
fn admitted(row: &Row<'_>, transport: Transport, design: &Design) -> bool {
    let key = &row.key;
    let own =
        design.implementations(transport) == [&key.server_impl, &key.client_impl, &key.server];
    let tls = row
        .runs
        .first()
        .is_some_and(|run| TLS.read(&run.settings) == design.tls);
    row.key.transport == transport && own && tls
}
