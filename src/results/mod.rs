//! What a run leaves behind, below everything that reads it: the results schema
//! ([`schema`], with migrations from older versions), the catalogue of figures and the rows
//! they are read from ([`figures`]), and number formatting ([`format`]). `report` and
//! `recommend` both stand on this layer and never import each other.

pub mod figures;
pub mod format;
pub mod key;
pub mod pairing;
pub mod scenario;
pub mod schema;
pub mod stats;
pub mod two_way;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

pub use schema::{
    migrate, utc_stamp, Bound, Calibration, ClockOffsets, Connection, HandshakeTimes, Histograms,
    MaxRate, Placement, Results, Rounds, Settings, Throughput, TransportResult, WorkerClock,
    SATURATED, SCHEMA_VERSION,
};

/// A results file given as itself or as the directory holding `results.json`.
pub fn results_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("results.json")
    } else {
        path.to_owned()
    }
}

/// Reads a results file (or directory), naming the file in any error.
pub fn load(path: &Path) -> anyhow::Result<(PathBuf, Results)> {
    let file = results_path(path);
    let results =
        Results::read(&file).with_context(|| format!("reading results from {}", file.display()))?;
    Ok((file, results))
}
