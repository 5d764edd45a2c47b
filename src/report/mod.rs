//! What a run leaves behind and how it is read: the results schema (JSON, written atomically),
//! the terminal table, the report (Markdown + one self-contained HTML page with SVG plots) and
//! the comparison of two runs. Nothing here names a transport; rows are whatever the results
//! hold, and the reference row is whichever transport declares itself the floor.

pub mod charts;
pub mod compare;
pub mod content;
pub mod document;
pub mod figures;
pub mod plots;
pub mod results;
pub mod table;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use results::Results;

/// Where a report was written.
#[derive(Debug)]
pub struct Written {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
}

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

/// Writes `report.md`, `plots/*.svg` (for the Markdown) and `report.html` beside the results.
pub fn write(results_file: &Path, results: &Results) -> anyhow::Result<Written> {
    let dir = results_file.parent().unwrap_or(Path::new("."));
    let doc = content::document(results)?;
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
