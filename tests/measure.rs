//! `pushbench recommend --measure`: a design's own runs, only for the transports the hard rules
//! leave, scaled to what the run may spend with every scaling stated and recorded, and the
//! answer judged from those runs alone; designs that cannot be scaled honestly are refused.

mod common;

use std::process::{Command, Output};

use pushbench::results::Results;

use common::{scratch, BIN};

fn recommend(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("recommend")
        .args(args)
        .output()
        .unwrap()
}

/// A small two-way design in rooms, over two of the transports browsers can use: 40
/// subscribers measured as 20 (rooms of the same size, half as many), one run for delivery
/// and one for the round trip, each recorded as the design's; the answer cites them, says
/// how they were scaled, and judges the round trip from the two-way run.
#[test]
fn a_design_is_measured_at_its_own_shape_scaled_and_said_so() {
    let out = scratch("measure-design");
    let output = recommend(&[
        "--name",
        "tiny-chat",
        "--direction",
        "bidirectional",
        "--consumers",
        "browsers",
        "--subscribers",
        "40",
        "--rate",
        "10",
        "--upstream-rate",
        "1",
        "--echo",
        "--workload",
        "topics",
        "--topics",
        "4",
        "--p99-budget-ms",
        "2000",
        "--max-subscribers",
        "20",
        "--budget",
        "16",
        "--transports",
        "websocket,poll,grpc",
        "--format",
        "json",
        "--measure",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // The plan names the transports the hard rules left (grpc has no browser API) and why
    // the design was scaled.
    assert!(
        stderr
            .contains("measuring design tiny-chat: websocket, poll (2 run(s): delivery, two-way)"),
        "{stderr}"
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let scalings = answer["scalings"].as_array().unwrap();
    let said: Vec<&str> = scalings.iter().filter_map(|s| s.as_str()).collect();
    assert!(
        said.iter()
            .any(|s| s.starts_with("40 subscribers measured as 20")),
        "{said:?}"
    );
    assert!(
        said.iter().any(|s| s.starts_with("4 rooms measured as 2")),
        "{said:?}"
    );

    // Two ordinary runs, each recording the design and its facet, with 20 subscribers of the
    // two transports alone.
    let mut facets = Vec::new();
    for entry in std::fs::read_dir(&out).unwrap() {
        let dir = entry.unwrap().path();
        let results = Results::read(&dir.join("results.json")).unwrap();
        let run = results
            .scenario
            .design
            .clone()
            .expect("the design is recorded");
        assert_eq!(run.name, "tiny-chat");
        assert_eq!(run.measured_as["subscribers"], 20);
        assert_eq!(results.scenario.subscribers, [20]);
        let transports: Vec<&str> = results
            .runs
            .iter()
            .map(|r| r.key.transport.name())
            .collect();
        assert_eq!(transports, ["websocket", "poll"]);
        assert!(results.runs.iter().all(|r| !r.failed), "{:?}", results.runs);
        let two_way = results.runs.iter().all(|r| r.two_way.is_some());
        assert_eq!(two_way, run.facet == "two-way", "{}", run.facet);
        facets.push(run.facet);
    }
    facets.sort();
    assert_eq!(facets, ["delivery", "two-way"]);

    // The round trip is judged from the design's own two-way run, cited as scaled.
    let websocket = answer["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["transport"] == "websocket")
        .unwrap();
    let reasons: Vec<&str> = websocket["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["text"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("round trip p99")
            && r.contains("design-tiny-chat-two-way: the design's own run, scaled as listed")),
        "{reasons:#?}"
    );
    assert!(
        !reasons.iter().any(|r| r.contains("not measured")),
        "{reasons:#?}"
    );
    let _ = std::fs::remove_dir_all(out);
}

/// What cannot be measured honestly is not run: a silence longer than the budget can
/// compress names the command that would measure it; a design every transport asked for is
/// excluded from by a hard rule has nothing to measure; bad budgets are refused. Each exits
/// non-zero and writes no run.
#[test]
fn what_cannot_be_measured_honestly_is_refused() {
    let out = scratch("measure-refused");
    let out_flag = out.to_str().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--subscribers", "10", "--rate", "0.00001", "--measure"],
            "cannot be scaled honestly",
        ),
        (
            &[
                "--consumers",
                "browsers",
                "--transports",
                "tcp",
                "--measure",
            ],
            "no transport is left to measure",
        ),
        (
            &["--budget", "0", "--measure"],
            "--budget must be a positive",
        ),
    ];
    for (args, expected) in cases {
        let output = recommend(&[args, &["--out", out_flag]].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}
