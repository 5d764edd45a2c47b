//! The house rules: imports go down the layers of docs/architecture.md; a transport is one
//! folder and one list entry, so nothing outside the list in `src/transport/mod.rs` repeats the
//! list of transports; and what the binary lists (`pushbench transports --json`) is what the
//! code declares.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pushbench::harness::settings::declared_settings;
use pushbench::transport::{Transport, CLIENT_IMPL, SERVER_IMPL};

use common::BIN;

/// Files whose text is checked: the sources, tests, benches, scripts, scenarios and docs
/// (data files such as results and fixtures record runs and may name every transport).
fn checked_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut dirs: Vec<PathBuf> = [
        "src",
        "tests",
        "benches",
        "scripts",
        "scenarios",
        "designs",
        "docs",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "node_modules" | "data") {
                    dirs.push(path);
                }
            } else if !name.ends_with(".json") {
                files.push(path);
            }
        }
    }
    files
}

/// Lines close enough together to be one list.
const LIST_LINES: usize = 8;

/// Where a text lists transports: a line naming four or more of them, or a few consecutive
/// lines naming four or more enum variants (`Transport::Sse`). Four, because a rule or a test about a few named
/// transports is fine; a list of most of them is the list repeated.
fn repeated_lists(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let words = |line: &str| -> Vec<String> {
        line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .map(str::to_owned)
            .collect()
    };
    for (number, line) in text.lines().enumerate() {
        let words = words(line);
        let named = Transport::ALL
            .iter()
            .filter(|t| words.iter().any(|w| w == t.name()))
            .count();
        if named >= 4 {
            found.push(format!("line {}: {}", number + 1, line.trim()));
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    for (start, window) in lines
        .windows(LIST_LINES.min(lines.len()).max(1))
        .enumerate()
    {
        let window = window.join("\n");
        let variants = Transport::ALL
            .iter()
            .filter(|t| window.contains(&format!("Transport::{t:?}")))
            .count();
        if variants >= 4 {
            found.push(format!(
                "lines {}-{}: {variants} Transport:: variants listed",
                start + 1,
                start + LIST_LINES
            ));
            break;
        }
    }
    found
}

/// The list of transports is written once: in `src/transport/mod.rs`.
#[test]
fn the_transport_list_is_not_repeated() {
    let registry = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/transport/mod.rs");
    let mut offenders = Vec::new();
    for file in checked_files() {
        if file == registry {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for place in repeated_lists(&text) {
            offenders.push(format!("{}: {place}", file.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "the transport list is repeated; take it from `Transport::ALL` or `pushbench \
         transports --json`:\n{}",
        offenders.join("\n")
    );
}

/// The checker itself finds a repeated list (so the test above can fail).
#[test]
fn a_repeated_list_is_found() {
    let names: Vec<&str> = Transport::ALL.iter().map(|t| t.name()).collect();
    let text = format!("for t in {}; do\n", names.join(" "));
    assert_eq!(repeated_lists(&text).len(), 1);
    let variants: Vec<String> = Transport::ALL
        .iter()
        .map(|t| format!("Transport::{t:?},"))
        .collect();
    assert_eq!(repeated_lists(&variants.join("\n")).len(), 1);
    assert!(repeated_lists("sse and websocket differ\n").is_empty());
}

/// `pushbench transports --json` lists every transport in order with its declarations: the
/// list scripts and tests outside Rust read.
#[test]
fn the_binary_lists_what_the_code_declares() {
    let output = Command::new(BIN)
        .args(["transports", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), Transport::ALL.len());
    for (entry, transport) in listed.iter().zip(Transport::ALL) {
        assert_eq!(entry["name"], transport.name());
        assert_eq!(entry["colour"], transport.spec().colour.to_string());
        assert!(entry["traits"]["http"].is_boolean());
        // Every transport but the floor names the standard client the interop check uses.
        let floor = transport.traits().floor;
        assert_eq!(
            entry["interop"].is_string(),
            !floor,
            "{transport}: interop {}",
            entry["interop"]
        );
    }
    let settings: Vec<&str> = listed
        .iter()
        .flat_map(|t| t["settings"].as_array().unwrap())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let mut declared: Vec<&str> = Transport::ALL
        .iter()
        .flat_map(|t| t.spec().settings.iter().map(|s| s.name()))
        .collect();
    assert_eq!(settings, declared);
    declared.dedup();
    assert!(declared.len() <= settings.len());
}

/// Every transport has a colour of its own; a transport's own setting is named after it, and a
/// setting several transports take is one declaration (so names never clash).
#[test]
fn declarations_are_distinct() {
    let mut colours: Vec<String> = Transport::ALL
        .iter()
        .map(|t| t.spec().colour.to_string())
        .collect();
    colours.sort();
    colours.dedup();
    assert_eq!(colours.len(), Transport::ALL.len());
    // The choice of implementation is every transport's, offered by those that have more than
    // one: the first such transport is alone in taking it, and need not own its name.
    let generic = [SERVER_IMPL.name, CLIENT_IMPL.name];
    for (setting, takers) in declared_settings() {
        if generic.contains(&setting.name()) {
            continue;
        }
        if let [transport] = takers.as_slice() {
            assert!(
                setting
                    .name()
                    .starts_with(&format!("{}-", transport.name())),
                "{} is declared by {transport} alone",
                setting.name()
            );
        }
        // Settings that share a name are the same declaration.
        for &transport in &takers {
            let same = transport
                .spec()
                .settings
                .iter()
                .filter(|s| s.name() == setting.name())
                .all(|s| std::ptr::addr_eq(*s, setting));
            assert!(same, "{} declared twice", setting.name());
        }
    }
}

/// The README's table of transports is the binary's own (`scripts/update-readme` writes it).
#[test]
fn the_readme_lists_what_the_code_declares() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split("<!-- transports:begin -->\n")
        .nth(1)
        .and_then(|rest| rest.split("<!-- transports:end -->").next())
        .expect("README.md has the transports markers");
    let output = Command::new(BIN)
        .args(["transports", "--markdown"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        block.trim_end(),
        String::from_utf8_lossy(&output.stdout).trim_end(),
        "run scripts/update-readme"
    );
}

/// The layers of docs/architecture.md, bottom to top: every top-level module of `src/` with
/// its rank. A module may use only modules of a lower rank, so no two import each other and
/// there is no circle; modules of one rank (report and recommend) never import each other.
const LAYERS: &[(&str, u32)] = &[
    // Below everything: the declared settings, the clock, the stream and what measures it.
    ("settings", 0),
    ("clock", 1),
    ("payload", 2),
    ("workload", 2),
    ("event", 3),
    ("metrics", 4),
    ("upstream", 5),
    ("hub", 6),
    ("document", 7),
    ("profile", 7),
    ("transport", 8),
    ("link", 9),
    ("protocol", 10),
    ("publisher", 11),
    ("outside", 11),
    ("serve", 12),
    ("results", 13),
    ("harness", 14),
    ("report", 15),
    ("recommend", 15),
    // Input: flags and files become the options the layers below run with.
    ("setting_flags", 16),
    ("scenario", 17),
    ("credential_flags", 17),
    ("measure", 18),
    ("cli", 19),
    ("lib", 19),
    ("main", 19),
];

/// The modules a source file names through `crate::` (comments left out), or the first
/// grouped `crate::{...}` import, which would hide what it names.
fn crate_imports(text: &str) -> Result<Vec<String>, String> {
    let mut modules = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if rest.starts_with('{') {
                return Err(format!(
                    "line {}: grouped crate::{{...}} import",
                    number + 1
                ));
            }
            let module: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            modules.push(module);
        }
    }
    Ok(modules)
}

/// Every import between top-level modules goes down the layers of docs/architecture.md, with
/// no exception; the table names every module, and the document shows the same table.
#[test]
fn imports_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rank = |module: &str| LAYERS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r);
    let mut dirs = vec![src.clone()];
    let mut wrong = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let top = relative.components().next().unwrap().as_os_str();
            let top = top.to_string_lossy().trim_end_matches(".rs").to_owned();
            let from = rank(&top).unwrap_or_else(|| panic!("src/{top} is in no layer"));
            let text = std::fs::read_to_string(&path).unwrap();
            let imports =
                crate_imports(&text).unwrap_or_else(|why| panic!("{}: {why}", relative.display()));
            for module in imports.into_iter().filter(|m| *m != top) {
                let to = rank(&module).unwrap_or_else(|| panic!("crate::{module} is in no layer"));
                if to >= from {
                    wrong.push(format!("src/{} uses crate::{module}", relative.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports going up or across:\n{}",
        wrong.join("\n")
    );

    // The document's table lists the same modules.
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .unwrap();
    for (module, _) in LAYERS.iter().filter(|(m, _)| !matches!(*m, "lib" | "main")) {
        assert!(
            doc.contains(&format!("| `{module}` |")),
            "docs/architecture.md's layer table lacks {module}"
        );
    }
}

/// The import scan sees what it must: a path, a `use`, and a grouped import it refuses.
#[test]
fn the_import_scan_finds_modules() {
    let text = "use crate::hub::Hub;\nlet x = crate::clock::now_ns(); // crate::cli\n";
    assert_eq!(crate_imports(text).unwrap(), ["hub", "clock"]);
    assert!(crate_imports("use crate::{hub, clock};").is_err());
}
