//! The report's two-way section, for runs where subscribers sent up: per row, the rate each
//! sent, the round trip of a sender's own message and the latency of the others' copies in its
//! room, the upstream latency to the server, whether every message and copy arrived once, and
//! what a message cost.

use super::faults::shown_run;
use crate::document::{Block, Document};
use crate::metrics::latency::Percentiles;
use crate::results::figures::Row;
use crate::results::format::{bytes, micros};
use crate::results::two_way::TwoWay;

/// `p50 / p99` of a latency, `–` where it was not measured.
fn pair(p: Option<&Percentiles>) -> String {
    p.map_or("–".into(), |p| {
        format!("{} / {}", micros(p.p50), micros(p.p99))
    })
}

/// Adds the two-way section when some row sent up; nothing otherwise.
pub fn section(doc: &mut Document, rows: &[Row<'_>]) {
    let two_way: Vec<(&Row<'_>, &TwoWay)> = rows
        .iter()
        .filter_map(|row| Some((row, shown_run(row).two_way.as_ref()?)))
        .collect();
    if two_way.is_empty() {
        return;
    }
    doc.heading("two-way", "Two-way traffic");
    doc.paragraph(
        "Every subscriber sent messages to the server on its own open-loop schedule; with the \
         echo, the server copied each to the sender's room. Times count from each message's \
         scheduled send. Round trip: back to its sender; copies: to the room's other members; \
         up: to the server's receipt. Ledger: every message received once and in order per \
         sender with its digest, and every copy reaching every member once. CPU per message: \
         all of the server's CPU over the stream (events and copies included) divided by the \
         messages up.",
    );
    let rows_of_table = two_way
        .iter()
        .map(|(row, t)| {
            let ledger = match (t.exact, t.copies) {
                (true, Some(c)) => {
                    format!("exact ({} up, {} copies)", t.upstream.received, c.received)
                }
                (true, None) => format!("exact ({} up)", t.upstream.received),
                (false, _) => format!(
                    "{} lost, {} twice, {} reordered{}",
                    t.upstream.lost,
                    t.upstream.duplicated,
                    t.upstream.reordered,
                    t.copies.map_or(String::new(), |c| format!(
                        "; copies {} of {}",
                        c.received, c.expected
                    ))
                ),
            };
            vec![
                row.key.label(),
                format!("{}/s", t.rate_per_subscriber),
                pair(t.round_trip_us.as_ref()),
                pair(t.copies_latency_us.as_ref()),
                pair(Some(&t.upstream_latency_us)),
                ledger,
                bytes(t.bytes_per_message),
                t.server_cpu_us_per_message
                    .map_or("not measured".into(), |us| format!("{us:.1} us")),
            ]
        })
        .collect();
    doc.push(Block::Table {
        head: [
            "transport",
            "up per subscriber",
            "round trip p50 / p99",
            "copies p50 / p99",
            "up p50 / p99",
            "ledger",
            "bytes per message",
            "server CPU per message",
        ]
        .map(String::from)
        .to_vec(),
        emphasis: two_way.iter().map(|(r, _)| r.is_floor()).collect(),
        rows: rows_of_table,
    });
}
