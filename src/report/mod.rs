//! How results are shown: the terminal table, the report (Markdown + one self-contained HTML
//! page with SVG plots) and the comparison of two runs, all read from the results layer
//! ([`crate::results`]). Nothing here names a transport; rows are whatever the results hold,
//! and the reference row is whichever transport declares itself the floor. The "which to pick"
//! section is handed in by the caller (the CLI asks `recommend` for it), so `report` and
//! `recommend` do not import each other.

pub mod charts;
pub mod compare;
pub mod content;
pub mod deployed;
pub mod faults;
pub mod headline;
pub mod noise;
pub mod plots;
pub mod reference;
pub mod resources;
pub mod storms;
pub mod table;
pub mod two_way;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::document::Block;
use crate::results::Results;

/// Where a report was written.
#[derive(Debug)]
pub struct Written {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
}

/// Writes `report.md`, `plots/*.svg` (for the Markdown) and `report.html` beside the results,
/// with `which_to_pick` as the section of that name (what `recommend::which_to_pick` makes of
/// these results).
pub fn write(
    results_file: &Path,
    results: &Results,
    which_to_pick: Vec<Block>,
) -> anyhow::Result<Written> {
    let dir = results_file.parent().unwrap_or(Path::new("."));
    let doc = content::document(results, which_to_pick)?;
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
    for (id, svg) in doc.figures() {
        write_file(&plots.join(format!("{id}.svg")), svg)?;
    }
    let written = Written {
        markdown: dir.join("report.md"),
        html: dir.join("report.html"),
    };
    write_file(&written.markdown, &doc.markdown())?;
    write_file(&written.html, &doc.html())?;
    Ok(written)
}

/// Writes a file whole: a temporary beside it, then a rename.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}
