//! The committed reference set, read as one: its index (`results/README.md`'s table of every
//! run, what it measures, how to run it again and where), the README's headline drawn from
//! the newest run of each headline preset, and the check that the headline's runs come from
//! one sitting: one revision and one machine, so no headline sets side by side figures that
//! were measured apart.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::headline;
use crate::document::{Block, Document};
use crate::results::Results;

/// The presets the README's headline shows, in its order.
pub const HEADLINE_PRESETS: [&str; 4] = ["quick", "throughput", "idle-connections", "workloads"];

/// One committed run: its directory's name and what it holds.
pub struct Run {
    /// The run's directory name (its run id).
    pub dir: String,
    /// What the run recorded.
    pub results: Results,
}

/// Every run directly under `dir` (each a directory with a `results.json`), oldest first.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Run>> {
    let mut dirs = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.join("results.json").is_file() {
            dirs.push(path);
        }
    }
    load_dirs(&dirs)
}

/// The runs in `dirs` (each a run's directory, or its `results.json`), oldest first.
pub fn load_dirs(dirs: &[PathBuf]) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for path in dirs {
        let dir = match path.file_name() {
            Some(name) if name == "results.json" => path.parent().unwrap_or(path),
            _ => path.as_path(),
        };
        let file = dir.join("results.json");
        let results =
            Results::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        runs.push(Run {
            dir: name.into_owned(),
            results,
        });
    }
    // Run ids begin with their UTC start, so their order is the order they ran in.
    runs.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(runs)
}

/// The newest run of `preset` among `runs`.
pub fn newest<'r>(runs: &'r [Run], preset: &str) -> Option<&'r Run> {
    runs.iter()
        .filter(|run| run.results.scenario.name == preset)
        .max_by(|a, b| a.dir.cmp(&b.dir))
}

/// Where a set of runs was measured: the revision and the machine they share.
#[derive(Debug, PartialEq)]
pub struct Sitting {
    /// The git revision every run was measured at.
    pub revision: String,
    /// The machine every run was measured on, described.
    pub machine: String,
}

/// The one sitting `runs` come from, or what sets them apart: a different revision, one
/// measured with uncommitted changes (its revision says nothing of its code), or another
/// machine (CPU model and identity, cores, kernel, host).
pub fn one_sitting(runs: &[&Run]) -> Result<Sitting, String> {
    let first = runs.first().ok_or("no runs")?;
    let machine_of = |run: &Run| {
        let m = &run.results.machine;
        format!(
            "{} ({}), {} CPUs, kernel {}, host {}",
            m.cpu_model, m.cpu_id, m.cores, m.kernel, m.hostname
        )
    };
    let sitting = Sitting {
        revision: first.results.machine.git_revision.clone(),
        machine: machine_of(first),
    };
    for run in runs {
        let revision = &run.results.machine.git_revision;
        if revision.ends_with("-dirty") || revision == "unknown" {
            return Err(format!(
                "{} was measured from a working tree with uncommitted changes or none \
                 ({revision}): re-run it from a clean checkout",
                run.dir
            ));
        }
        if *revision != sitting.revision {
            return Err(format!(
                "{} is from revision {revision}, {} from {}: re-run them at one revision",
                run.dir, first.dir, sitting.revision
            ));
        }
        let machine = machine_of(run);
        if machine != sitting.machine {
            return Err(format!(
                "{} was measured on {machine}, {} on {}: re-run them on one machine",
                run.dir, first.dir, sitting.machine
            ));
        }
    }
    Ok(sitting)
}

/// The README's headline: the newest run of each of [`HEADLINE_PRESETS`] in `runs`, which
/// must be one sitting, each as its ratio table then its absolute one.
pub fn headline(runs: &[Run]) -> Result<String, String> {
    let mut chosen = Vec::new();
    for preset in HEADLINE_PRESETS {
        chosen.push(newest(runs, preset).ok_or(format!("no run of the {preset} preset"))?);
    }
    let sitting = one_sitting(&chosen)?;
    let mut text = format!(
        "Every table below is from one sitting: revision `{}` on {}.\n\n",
        sitting.revision, sitting.machine
    );
    for (preset, run) in HEADLINE_PRESETS.iter().zip(chosen) {
        text.push_str(&format!(
            "**{preset}**\n\n{}\n",
            headline::tables(&run.results)
        ));
    }
    Ok(text)
}

/// The index of `runs` as a Markdown table: each run with what it measures (the first
/// sentence of its preset's file in `scenarios`), the command that made it, its rounds, its
/// revision and its machine; then whether they are one sitting, and if not, what sets them
/// apart.
pub fn index(runs: &[Run], scenarios: &Path) -> String {
    let table = Block::Table {
        head: [
            "run",
            "what it measures",
            "command",
            "rounds",
            "revision",
            "machine",
        ]
        .map(String::from)
        .to_vec(),
        emphasis: vec![false; runs.len()],
        rows: runs.iter().map(|run| index_row(run, scenarios)).collect(),
    };
    // Whether the set reads as one: said under the table, so a reader never has to compare
    // the revision and machine columns row by row.
    let all: Vec<&Run> = runs.iter().collect();
    let sitting = match one_sitting(&all) {
        Ok(sitting) => Block::Paragraph(format!(
            "Every run above is one sitting: revision `{}` on {}.",
            sitting.revision, sitting.machine
        )),
        Err(why) => Block::Paragraph(format!("These runs are not one sitting: {why}.")),
    };
    Document {
        title: String::new(),
        blocks: vec![table, sitting],
    }
    .markdown_body()
}

/// One run's line of the index.
fn index_row(run: &Run, scenarios: &Path) -> Vec<String> {
    let results = &run.results;
    let name = &results.scenario.name;
    let rounds = results.scenario.repeat.max(1);
    let file: PathBuf = scenarios.join(format!("{name}.toml"));
    let (measures, command) = match std::fs::read_to_string(&file) {
        Ok(text) => {
            let mut command = format!("`pushbench run --scenario scenarios/{name}.toml");
            if rounds > 1 {
                command.push_str(&format!(" --repeat {rounds}"));
            }
            command.push('`');
            (first_sentence(&text), command)
        }
        // Not a preset's run: a measurement merged from its parts, made by hand.
        Err(_) => (
            "one measurement merged from a server's and load workers' parts, each taken on a \
             host of its own"
                .to_string(),
            "`pushbench merge` (below)".to_string(),
        ),
    };
    let machine = &results.machine;
    vec![
        format!("[`{}`]({}/report.md)", run.dir, run.dir),
        measures,
        command,
        rounds.to_string(),
        format!("`{}`", machine.git_revision),
        format!(
            "{}, {} CPUs, kernel {}, floor {} us",
            machine.cpu_model, machine.cores, machine.kernel, results.calibration.rtt_us.p50
        ),
    ]
}

/// The first sentence of a scenario file's opening comment.
fn first_sentence(scenario: &str) -> String {
    let comment: Vec<&str> = scenario
        .lines()
        .map_while(|line| line.strip_prefix('#'))
        .map(str::trim)
        .collect();
    let text = comment.join(" ");
    let end = text
        .match_indices(". ")
        .map(|(at, _)| at + 1)
        .next()
        .unwrap_or(text.len());
    text[..end].trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::first_sentence;

    /// What a run measures is its preset's opening sentence, over the comment's lines.
    #[test]
    fn the_first_sentence_spans_lines() {
        let text = "# One stream to more\n# subscribers. Then more.\nrate = 1\n";
        assert_eq!(first_sentence(text), "One stream to more subscribers.");
        assert_eq!(first_sentence("# No full stop\nrate = 1\n"), "No full stop");
    }
}
