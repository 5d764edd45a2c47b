//! The report's section on what users deploy, for runs with rows of servers pushbench did not
//! write or of the libraries people use beside its own: per transport, each such row's server
//! CPU per delivery, server memory per connection, load CPU per delivery and p99 latency as a
//! ratio to pushbench's own row of the same transport, fan-out, payload, rate and settings.

use crate::document::{Block, Document};
use crate::results::figures::{Figure, Row};
use crate::results::format::{bytes, micros};
use crate::transport::implementation::OWN;

/// A figure compared: which, its heading, and how its value is written.
type Compared = (Figure, &'static str, fn(f64) -> String);

/// The figures compared.
const COMPARED: [Compared; 4] = [
    (
        Figure::ServerCpuUsPerDelivery,
        "server CPU per delivery",
        |us| format!("{us:.2} us"),
    ),
    (
        Figure::ServerRssPerConn,
        "server memory per connection",
        bytes,
    ),
    (
        Figure::LoadCpuUsPerDelivery,
        "load CPU per delivery",
        |us| format!("{us:.2} us"),
    ),
    (Figure::LatencyP99, "latency p99", |us| micros(us as u64)),
];

/// Whether the row is pushbench's own server and client.
fn is_own(row: &Row<'_>) -> bool {
    [&row.key.server, &row.key.server_impl, &row.key.client_impl]
        .iter()
        .all(|name| *name == OWN)
}

/// Which side of the row is not pushbench's own, in words.
fn changed(row: &Row<'_>) -> String {
    let key = &row.key;
    let mut sides = Vec::new();
    if key.server != OWN {
        sides.push(format!("server: {}", key.server));
    }
    if key.server_impl != OWN {
        sides.push(format!("server library: {}", key.server_impl));
    }
    if key.client_impl != OWN {
        sides.push(format!("client library: {}", key.client_impl));
    }
    sides.join("; ")
}

/// pushbench's own row that `row` is measured against: everything else alike.
fn own_of<'r, 'a>(row: &Row<'_>, rows: &'r [Row<'a>]) -> Option<&'r Row<'a>> {
    rows.iter().find(|own| {
        is_own(own)
            && own.key.transport == row.key.transport
            && own.key.workload == row.key.workload
            && own.key.variant == row.key.variant
            && own.setting() == row.setting()
    })
}

/// One figure's cell: the value, and its ratio to pushbench's own where both were measured (a
/// row that failed has no figures to compare).
fn cell(row: &Row<'_>, own: Option<&Row<'_>>, (figure, _, show): &Compared) -> String {
    if !row.ok() {
        return "failed".into();
    }
    let value = row.figure(*figure).median;
    if !value.is_finite() {
        return "not measured".into();
    }
    let base = own
        .filter(|own| own.ok())
        .map(|own| own.figure(*figure).median);
    match base {
        Some(base) if base.is_finite() && base > 0.0 => {
            format!("{} ({:.2}×)", show(value), value / base)
        }
        _ => show(value),
    }
}

/// Adds the section when some row is not pushbench's own server and client; nothing otherwise.
pub fn section(doc: &mut Document, rows: &[Row<'_>]) {
    let deployed: Vec<&Row<'_>> = rows.iter().filter(|row| !is_own(row)).collect();
    if deployed.is_empty() {
        return;
    }
    doc.heading("deployed", "What users deploy, against pushbench's own");
    doc.paragraph(
        "Rows of servers pushbench did not write (`--server`, started by their profiles, the \
         stream published through them) and of the libraries people deploy (`--server-impl`, \
         `--client-impl`), each beside pushbench's own server and client for the same \
         transport, fan-out, payload, rate and settings; the ratio is to that row (below 1: \
         less than pushbench's own). A server's CPU and memory are its own processes' (a \
         server pushbench did not write: those of its profile's processes, the publisher \
         left out); a client library's cost shows on the load side.",
    );
    let mut table = Vec::new();
    let mut emphasis = Vec::new();
    let mut shown_own: Vec<String> = Vec::new();
    for row in deployed {
        let own = own_of(row, rows);
        // pushbench's own row first, once, as the reference.
        if let Some(own) = own.filter(|own| !shown_own.contains(&own.label())) {
            shown_own.push(own.label());
            let mut cells = vec![own.label(), "reference".into()];
            cells.extend(COMPARED.iter().map(|compared| cell(own, None, compared)));
            table.push(cells);
            emphasis.push(true);
        }
        let mut cells = vec![row.label(), changed(row)];
        cells.extend(COMPARED.iter().map(|compared| cell(row, own, compared)));
        table.push(cells);
        emphasis.push(false);
    }
    let mut head = vec!["row".to_owned(), "not pushbench's own".to_owned()];
    head.extend(COMPARED.iter().map(|(_, title, _)| (*title).to_owned()));
    doc.push(Block::Table {
        head,
        rows: table,
        emphasis,
    });
}
