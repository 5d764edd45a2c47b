//! The part files of a run across hosts: what `pushbench serve --stats-out` and `pushbench
//! load --out` write for `pushbench merge`, tagged by side.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::load::LoadPart;
use super::serve::ServeStats;
use crate::event::StreamSpec;
use crate::metrics::machine::Machine;
use crate::transport::{SettingValues, Transport};

/// What the server under test measured, written by `pushbench serve --stats-out` for
/// `pushbench merge`: its counts, CPU and memory, with what it served.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerPart {
    /// The transport served.
    pub transport: Transport,
    /// The stream published.
    pub spec: StreamSpec,
    /// The transport's server settings, defaults included.
    pub settings: SettingValues,
    /// Subscribers it waited for.
    pub start_after: usize,
    /// Server processes (a fleet when above one).
    pub processes: usize,
    /// CPUs the server had.
    pub cpus: usize,
    /// The server's host.
    pub machine: Machine,
    /// When it started, Unix seconds.
    pub started_unix: u64,
    /// What it counted.
    pub stats: ServeStats,
}

/// A part file: what one process of a run across hosts wrote, tagged with which side it is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "part", rename_all = "snake_case")]
pub enum PartFile {
    /// A load worker's (`pushbench load --out`).
    Load(Box<LoadPart>),
    /// The server's (`pushbench serve --stats-out`).
    Server(Box<ServerPart>),
}

impl PartFile {
    /// Writes the part to `path` (JSON).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_vec(self)?;
        std::fs::write(path, text).with_context(|| format!("writing the part {}", path.display()))
    }

    /// Reads a part file; an error says which file and what is wrong with it.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| {
            format!(
                "{} is not a pushbench part (written by `pushbench load --out` or \
                 `pushbench serve --stats-out`)",
                path.display()
            )
        })
    }
}
