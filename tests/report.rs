//! Reports and comparisons from stored results files (`tests/data/`, real runs of the presets):
//! the tables carry the figures in the JSON, the plots are valid SVG naming every transport, the
//! HTML is self-contained, and `compare` flags a planted regression but not noise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pushbench::report::reference;
use pushbench::results::format::{micros, thousands};
use pushbench::results::Results;

use common::BIN;

/// A stored results file copied into a fresh directory of its own, as `results.json`.
fn stored(name: &str, test: &str) -> common::Scratch {
    let dir = common::scratch(test);
    std::fs::copy(data(name), dir.join("results.json")).unwrap();
    dir
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// The Markdown line of a table row that starts with this transport, in the section under
/// `heading`.
fn row<'a>(markdown: &'a str, heading: &str, transport: &str) -> &'a str {
    let section = markdown
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section {heading}"));
    section
        .lines()
        .find(|l| {
            l.trim_start_matches("| ")
                .trim_start_matches("**")
                .starts_with(&format!("{transport} "))
                || l.starts_with(&format!("| **{transport}**"))
        })
        .unwrap_or_else(|| panic!("no {transport} row under {heading}"))
}

/// Every table row shows the figures stored in the JSON for its transport, and the summary
/// names the machine, the revision and the run.
#[test]
fn report_tables_carry_the_stored_figures() {
    let dir = stored("quick.json", "tables");
    let output = run(&["report", dir.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let markdown = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let results = Results::read(&dir.join("results.json")).unwrap();
    for needle in [
        results.machine.cpu_model.as_str(),
        results.machine.git_revision.as_str(),
        results.run_id.as_str(),
    ] {
        assert!(markdown.contains(needle), "summary lacks {needle}");
    }
    assert_eq!(results.runs.len(), 6);
    for r in &results.runs {
        let latency = row(&markdown, "Latency", &r.key.label());
        for us in [
            r.latency_us.p50,
            r.latency_us.p90,
            r.latency_us.p99,
            r.latency_us.p999,
            r.latency_us.max,
        ] {
            assert!(
                latency.contains(&format!(" {} ", micros(us))),
                "{latency} lacks {us} us"
            );
        }
        let service = row(&markdown, "Service time", &r.key.label());
        assert!(
            service.contains(&micros(r.service_time_us.p99)),
            "{service}"
        );
        let throughput = row(&markdown, "Throughput", &r.key.label());
        assert!(
            throughput.contains(&thousands(r.throughput.events_per_s)),
            "{throughput}"
        );
        let cost = row(&markdown, "Connection cost", &r.key.label());
        assert!(
            cost.contains(&micros(r.connection.handshake_us.p50)),
            "{cost}"
        );
        assert!(
            cost.contains(&format!(" {:.0} ", r.connection.wire_bytes_per_event)),
            "{cost}"
        );
        if let Some(cpu) = r.connection.server_cpu_us_per_delivery {
            assert!(cost.contains(&format!(" {cpu:.2} ")), "{cost}");
        }
        let check = row(&markdown, "Delivery check", &r.key.label());
        assert!(
            check.contains(if r.failed { "FAILED" } else { "| ok" }),
            "{check}"
        );
    }
    // The floor is the reference row: shown in bold, and its p50 ratio to itself is 1.
    assert!(row(&markdown, "Latency", "tcp").contains("1.00×"));
    assert!(markdown.contains("## Which to pick"));
}

/// Every plot is a well-formed SVG; the line charts name every transport; the HTML inlines
/// them all and loads nothing from anywhere.
#[test]
fn plots_are_valid_svg_and_the_page_is_self_contained() {
    let dir = stored("quick.json", "svg");
    assert!(run(&["report", dir.to_str().unwrap()]).status.success());
    // Every transport the stored run measured.
    let (_, results) = pushbench::results::load(&dir).unwrap();
    let mut transports: Vec<String> = results.runs.iter().map(|r| r.key.label()).collect();
    transports.dedup();
    assert!(transports.len() > 1);
    let plots = [
        "spectrum",
        "p99-over-time",
        "p50-over-time",
        "memory",
        "cpu",
        "wire",
    ];
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for plot in plots {
        let svg = std::fs::read_to_string(dir.join("plots").join(format!("{plot}.svg"))).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{plot}.svg: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        for transport in &transports {
            assert!(
                texts.contains(&transport.as_str()),
                "{plot}.svg does not name {transport}"
            );
        }
        // Lines or bars were drawn, not just axes.
        let marks = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline") || n.has_tag_name("rect"))
            .count();
        assert!(marks > transports.len(), "{plot}.svg draws nothing");
        assert!(
            html.contains(&format!("<figure id=\"plot-{plot}\"")),
            "report.html lacks {plot}"
        );
    }
    // No fan-out sweep in this run, so no fan-out plots.
    assert!(!html.contains("plot-fanout"));
    assert_eq!(html.matches("<svg").count(), plots.len());
    for forbidden in ["<script", "src=", "href=\"http", "url(", "@import"] {
        assert!(
            !html.contains(forbidden),
            "report.html contains {forbidden}"
        );
    }
}

/// A regression planted in one transport's p99 across all repeats is flagged as worse; the
/// same run with figures moved within their spread is not flagged at all.
#[test]
fn compare_flags_a_planted_regression_and_not_noise() {
    let a = stored("latency.json", "compare-a");
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("results.json")).unwrap()).unwrap();
    assert_eq!(
        base["scenario"]["repeat"], 3,
        "the fixture must have repeats"
    );

    // Noise: in each transport's three repeats, the middle latency figures moved to the
    // largest seen, so medians shift (often by more than the threshold) while every value stays
    // inside the range the repeats already showed.
    let mut noise = base.clone();
    let runs = noise["runs"].as_array_mut().unwrap();
    for chunk in runs.chunks_mut(3) {
        assert!(chunk
            .iter()
            .all(|r| r["transport"] == chunk[0]["transport"]));
        for key in ["p50", "p90", "p99", "p999", "max"] {
            let mut values: Vec<u64> = chunk
                .iter()
                .map(|r| r["latency_us"][key].as_u64().unwrap())
                .collect();
            values.sort();
            let (middle, largest) = (values[1], values[2]);
            if let Some(run) = chunk.iter_mut().find(|r| r["latency_us"][key] == middle) {
                run["latency_us"][key] = largest.into();
            }
        }
    }
    // Regression: websocket's p99 doubled in every repeat.
    let mut slower = base.clone();
    for run in slower["runs"].as_array_mut().unwrap() {
        if run["transport"] == "websocket" {
            let p99 = run["latency_us"]["p99"].as_u64().unwrap();
            run["latency_us"]["p99"] = (p99 * 2).into();
        }
    }
    let write = |value: &serde_json::Value, test: &str| {
        let dir = stored("latency.json", test);
        std::fs::write(
            dir.join("results.json"),
            serde_json::to_string(value).unwrap(),
        )
        .unwrap();
        dir
    };
    let (noise, slower) = (
        write(&noise, "compare-noise"),
        write(&slower, "compare-slower"),
    );
    let a_path = a.to_str().unwrap();

    let quiet = run(&[
        "compare",
        a_path,
        noise.to_str().unwrap(),
        "--fail-on-regression",
    ]);
    let text = String::from_utf8_lossy(&quiet.stdout);
    assert!(quiet.status.success(), "noise was flagged:\n{text}");
    assert!(
        text.contains("None: no change survives the test."),
        "{text}"
    );

    let flagged = run(&[
        "compare",
        a_path,
        slower.to_str().unwrap(),
        "--fail-on-regression",
    ]);
    assert_eq!(flagged.status.code(), Some(1));
    let markdown = std::fs::read_to_string(slower.join("compare.md")).unwrap();
    let changes = markdown
        .split("## Changes beyond the noise")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let flags: Vec<&str> = changes.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(flags.len(), 1, "{changes}");
    assert!(
        flags[0].starts_with("- **worse** websocket") && flags[0].contains("latency p99 +100"),
        "{}",
        flags[0]
    );
    assert!(String::from_utf8_lossy(&flagged.stderr).contains("1 figure(s) got worse"));
}

/// Two runs of one binary, each in five randomized interleaved rounds (websocket and sse at
/// 1,000 ev/s to 10 subscribers, the floor row added to every round): `compare` flags nothing
/// between them. The second with a 20% slower server planted in websocket's every round (its
/// latency and CPU per delivery 20% up) is flagged worse, for websocket alone.
#[test]
fn compare_tests_rounds_and_flags_only_a_planted_change() {
    use pushbench::report::compare::compare;
    use pushbench::results::Results;
    let load = |name: &str| -> Results {
        let value = pushbench::results::migrate(
            serde_json::from_str(&std::fs::read_to_string(data(name)).unwrap()).unwrap(),
        )
        .unwrap();
        serde_json::from_value(value).unwrap()
    };
    let (a, b) = (load("rounds-a.json"), load("rounds-b.json"));
    assert_eq!(a.scenario.repeat, 5, "the fixture must have five rounds");
    assert_eq!(a.rounds.as_ref().map(|r| r.floors.len()), Some(5));
    let same = compare(&a, &b, 5.0);
    assert!(same.flags.is_empty(), "{:?}", same.flags);

    let mut slower = a.clone();
    for run in slower
        .runs
        .iter_mut()
        .filter(|r| r.key.transport.name() == "websocket")
    {
        for p in [
            &mut run.latency_us.p50,
            &mut run.latency_us.p90,
            &mut run.latency_us.p99,
            &mut run.latency_us.p999,
        ] {
            *p = (*p as f64 * 1.2) as u64;
        }
        if let Some(cpu) = run.connection.server_cpu_us_per_delivery.as_mut() {
            *cpu *= 1.2;
        }
    }
    let planted = compare(&a, &slower, 5.0);
    assert!(
        !planted.flags.is_empty(),
        "the planted change was not found"
    );
    for flag in &planted.flags {
        assert_eq!(flag.key.transport.name(), "websocket", "{flag:?}");
        assert!(flag.worse, "{flag:?}");
    }
}

/// A missing or corrupt results file is named in the error, with a non-zero exit.
#[test]
fn bad_results_files_are_named() {
    let dir = common::scratch("bad-report");
    std::fs::write(
        dir.join("results.json"),
        "{\"schema_version\": 1, \"runs\": [",
    )
    .unwrap();
    for target in [dir.to_path_buf(), dir.join("nope")] {
        let output = run(&["report", target.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("reading results from") && stderr.contains(&dir.display().to_string()),
            "{stderr}"
        );
    }
}

/// The run ids a generated block cites as "`ID`", in order, each once.
fn cited_runs(block: &str, before: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ids: Vec<&str> = block
        .split(before)
        .skip(1)
        .filter_map(|rest| rest.split('`').next())
        .collect();
    ids.dedup();
    ids.iter().map(|id| root.join("results").join(id)).collect()
}

/// The text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in the file at `path`.
fn generated_block(path: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.split(&format!("<!-- {name}:begin -->\n"))
        .nth(1)
        .and_then(|rest| rest.split(&format!("<!-- {name}:end -->")).next())
        .unwrap_or_else(|| panic!("{} has no {name} markers", path.display()))
        .to_owned()
}

/// The README's headline is the one generated from the committed reference runs it names
/// (`scripts/update-readme`), not typed by hand, and those runs are one sitting: one revision,
/// one machine (generating it refuses otherwise). The runs are found by the ids the tables
/// cite, so a user's own runs under results/ do not disturb the check.
#[test]
fn readme_headline_is_generated_from_one_sitting_of_reference_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let block = generated_block(&root.join("README.md"), "headline");
    let cited = cited_runs(&block, "(run `");
    assert_eq!(
        cited.len(),
        4,
        "the headline names a run per headline preset"
    );
    let runs = reference::load_dirs(&cited)
        .unwrap_or_else(|e| panic!("a headline run is not committed under results/: {e:#}"));
    let expected = reference::headline(&runs).unwrap_or_else(|why| panic!("{why}"));
    assert_eq!(
        block.trim_end(),
        expected.trim_end(),
        "run scripts/update-readme"
    );
}

/// The check refuses runs of two revisions, of a working tree with uncommitted changes, or of
/// two machines, naming the runs and what differs.
#[test]
fn runs_of_two_sittings_are_refused() {
    let dir = stored("quick.json", "two-sittings");
    let mut runs = reference::load_dirs(&[dir.to_path_buf()]).unwrap();
    let mut other = reference::load_dirs(&[dir.to_path_buf()])
        .unwrap()
        .remove(0);
    runs[0].results.machine.git_revision = "aaaaaaaaaaaa".into();
    other.results.machine.git_revision = "aaaaaaaaaaaa".into();
    other.dir = "later".into();
    runs.push(other);
    let pair = |runs: &[reference::Run]| {
        let refs: Vec<&reference::Run> = runs.iter().collect();
        reference::one_sitting(&refs)
    };
    let sitting = pair(&runs).expect("the same revision and machine are one sitting");
    assert_eq!(sitting.revision, "aaaaaaaaaaaa");
    runs[1].results.machine.git_revision = "bbbbbbbbbbbb".into();
    let why = pair(&runs).unwrap_err();
    assert!(why.contains("later is from revision bbbbbbbbbbbb"), "{why}");
    runs[1].results.machine.git_revision = "aaaaaaaaaaaa-dirty".into();
    assert!(pair(&runs).unwrap_err().contains("uncommitted changes"));
    runs[1].results.machine.git_revision = "aaaaaaaaaaaa".into();
    runs[1].results.machine.kernel = "another".into();
    let why = pair(&runs).unwrap_err();
    assert!(
        why.contains("kernel another") && why.contains("one machine"),
        "{why}"
    );
}

/// results/README.md's index is generated from the runs it lists, and lists every committed
/// run (those git tracks, where there is a git checkout).
#[test]
fn results_index_lists_every_committed_run_as_generated() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let block = generated_block(&root.join("results/README.md"), "index");
    let cited = cited_runs(&block, "| [`");
    let runs = reference::load_dirs(&cited).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        block.trim_end(),
        reference::index(&runs, &root.join("scenarios")).trim_end(),
        "run scripts/update-readme"
    );
    let tracked = std::process::Command::new("git")
        .args(["ls-files", ":(glob)results/*/results.json"])
        .current_dir(root)
        .output();
    if let Some(out) = tracked.ok().filter(|out| out.status.success()) {
        for file in String::from_utf8_lossy(&out.stdout).lines() {
            let dir = root.join(file).parent().unwrap().to_owned();
            assert!(
                cited.contains(&dir),
                "{file} is committed but not in the index"
            );
        }
    }
}

/// A capacity search's levels are rows of their own: what a series ran without (the preset's
/// poll interval, which only polling takes) is said once per series, not once per level.
#[test]
fn what_a_series_ran_without_is_said_once() {
    let results = Results::read(&common::committed("capacity").join("results.json")).unwrap();
    let table = pushbench::report::table::render(&results);
    let mut notes: Vec<&str> = table
        .lines()
        .filter(|line| line.contains(" ran without "))
        .collect();
    assert!(
        notes.len() > 1,
        "the capacity preset's poll interval is not taken by most transports: {table}"
    );
    let said = notes.len();
    notes.sort_unstable();
    notes.dedup();
    assert_eq!(notes.len(), said, "a note said twice: {table}");
}

/// Runs without repeats have no measured spread: even a doubled p99 is shown, not flagged, and
/// the comparison says why.
#[test]
fn single_runs_are_shown_but_not_judged() {
    let a = stored("quick.json", "single-a");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("results.json")).unwrap()).unwrap();
    for run in value["runs"].as_array_mut().unwrap() {
        let p99 = run["latency_us"]["p99"].as_u64().unwrap();
        run["latency_us"]["p99"] = (p99 * 2).into();
    }
    let b = stored("quick.json", "single-b");
    std::fs::write(
        b.join("results.json"),
        serde_json::to_string(&value).unwrap(),
    )
    .unwrap();
    let output = run(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--fail-on-regression",
    ]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("no measured spread") && text.contains("None flagged"),
        "{text}"
    );
    assert!(
        text.contains("+100.0%"),
        "the change is still shown:\n{text}"
    );
}
