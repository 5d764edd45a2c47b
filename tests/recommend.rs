//! `pushbench recommend` on the standard designs (`designs/*.toml`) against stored results of
//! real runs (`tests/data/`): the classic designs get the classic answers, for the stated
//! reasons; an impossible design says what to relax; and the ranking follows the figures.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pushbench::recommend::assess::{Constraint, Verdict, Weight};
use pushbench::recommend::design::{Design, DesignSettings};
use pushbench::recommend::evidence::Evidence;
use pushbench::recommend::{recommend, Ranked, Recommendation};
use pushbench::transport::{Requests, Transport};

use common::{committed, BIN};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The stored runs: latency and cost at 10 subscribers, a fan-out sweep to 1,000, and memory
/// with 19,000 idle connections.
fn evidence_files() -> Vec<PathBuf> {
    [
        "quick.json",
        "fanout-lite.json",
        "idle-connections-lite.json",
    ]
    .iter()
    .map(|f| root().join("tests/data").join(f))
    .collect()
}

/// The design's other constraints, judged as a broadcast: the stored runs are all broadcast,
/// and only rows of a design's own shape are evidence for it.
fn as_broadcast() -> DesignSettings {
    DesignSettings {
        workload: Some("broadcast".into()),
        ..DesignSettings::default()
    }
}

fn design(name: &str, over: DesignSettings) -> Design {
    let path = root().join("designs").join(format!("{name}.toml"));
    DesignSettings::from_file(&path)
        .unwrap()
        .overridden_by(over)
        .resolve()
        .unwrap()
}

fn answer(name: &str, over: DesignSettings) -> Recommendation {
    let evidence = Evidence::load(&evidence_files(), Path::new("unused")).unwrap();
    recommend(&design(name, over), &evidence)
}

fn entry<'a>(answer: &'a Recommendation, transport: &str) -> &'a Ranked {
    answer
        .ranking
        .iter()
        .find(|r| r.assessment.transport == transport)
        .unwrap()
}

/// The reason a transport got for a constraint, with its weight.
fn reason(
    answer: &Recommendation,
    transport: &str,
    constraint: Constraint,
    weight: Weight,
) -> String {
    entry(answer, transport)
        .assessment
        .reasons
        .iter()
        .find(|r| r.constraint == constraint && r.weight == weight)
        .map(|r| r.text.clone())
        .unwrap_or_else(|| panic!("{transport}: no {weight:?} reason on {constraint}"))
}

fn first(answer: &Recommendation) -> &str {
    answer.ranking[0].assessment.transport
}

/// Server-to-server payment notifications to services with endpoints, across downtime: webhooks,
/// because the consumer needs only an endpoint and the provider retries (for as long as the
/// schedule spans, which the answer gives); streams would need a persisted cursor.
#[test]
fn payment_notifications_get_webhooks() {
    let answer = answer("payment-webhooks", as_broadcast());
    assert_eq!(first(&answer), "webhook");
    assert_eq!(answer.ranking[0].assessment.verdict, Verdict::Fits);
    let delivery = reason(&answer, "webhook", Constraint::Delivery, Weight::Supports);
    assert!(delivery.contains("retries"), "{delivery}");
    // The schedule the runs measured (8 attempts from 50 ms, doubling) spans at most 6.35 s,
    // far short of 600 s of downtime, and the answer says so with the figure.
    assert!(delivery.contains("spans at most 6.3 s"), "{delivery}");
    // The stored runs are at 100 ev/s and more, far from the design's 0.5 ev/s: its latency
    // and CPU are not taken from them, and the answer names the run that would measure them.
    assert!(
        reason(&answer, "webhook", Constraint::Regime, Weight::Unmeasured).contains("within 4×")
    );
    let command = entry(&answer, "webhook").assessment.to_measure.clone();
    assert!(
        command.as_deref().is_some_and(|c| c.contains("--rate 0.5")),
        "{command:?}"
    );
    assert!(
        reason(&answer, "sse", Constraint::Delivery, Weight::Caveat).contains("persist its cursor")
    );
}

/// A two-way design (a game's lobbies: rooms of 8, 20 messages a second up and copied to the
/// room, p99 within 50 ms) is judged by the round trip a two-way run measured on each transport,
/// not by whether it is duplex: a one-way transport sends up by requests of its own, with a
/// caveat saying so, and short polling, whose copies wait for the next poll, is excluded by
/// its measured round trip.
#[test]
fn two_way_designs_are_judged_by_their_round_trip() {
    let mut files = evidence_files();
    files.push(root().join("tests/data/two-way-lite.json"));
    let evidence = Evidence::load(&files, Path::new("unused")).unwrap();
    let lobby = recommend(
        &design("multiplayer-lobby", DesignSettings::default()),
        &evidence,
    );
    assert_ne!(lobby.ranking[0].assessment.verdict, Verdict::Excluded);
    // Every browser transport the stored runs hold but short polling has its round trip well
    // within 50 ms.
    let pushed: Vec<_> = Transport::ALL
        .iter()
        .filter(|t| {
            t.traits().browser_api.is_some()
                && !matches!(t.traits().requests, Requests::PerInterval(_))
                && evidence.holds(**t)
        })
        .collect();
    assert!(pushed.len() >= 4, "{pushed:?}");
    for browser in pushed {
        let text = reason(
            &lobby,
            browser.name(),
            Constraint::RoundTrip,
            Weight::Supports,
        );
        assert!(text.contains("round trip p99"), "{browser}: {text}");
        assert!(text.contains("(custom)"), "{browser}: {text}");
    }
    let poll = reason(&lobby, "poll", Constraint::RoundTrip, Weight::Excludes);
    assert!(poll.contains("over the 50 ms budget"), "{poll}");
    for one_way in Transport::ALL.iter().filter(|t| !t.traits().duplex) {
        let text = reason(
            &lobby,
            one_way.name(),
            Constraint::Direction,
            Weight::Caveat,
        );
        assert!(text.contains("one-way"), "{one_way}: {text}");
    }
    assert!(reason(&lobby, "tcp", Constraint::Consumers, Weight::Excludes).contains("browsers"));

    // Without a two-way run, the round trip is unmeasured, and the answer says how to measure it.
    let without = answer("multiplayer-lobby", DesignSettings::default());
    assert!(reason(
        &without,
        "websocket",
        Constraint::RoundTrip,
        Weight::Unmeasured
    )
    .contains("no comparable two-way run"));
    let command = entry(&without, "websocket").assessment.to_measure.clone();
    assert!(
        command
            .as_deref()
            .is_some_and(|c| c.contains("--upstream-rate 20 --upstream-echo on")),
        "{command:?}"
    );
}

/// A dashboard to browsers: SSE fits outright (EventSource resumes by itself); WebSocket carries
/// the caveat that resuming is yours to build; webhooks cannot reach a browser.
#[test]
fn live_dashboard_gets_sse() {
    let answer = answer("live-dashboard", DesignSettings::default());
    assert_eq!(first(&answer), "sse");
    assert_eq!(answer.ranking[0].assessment.verdict, Verdict::Fits);
    assert!(
        reason(&answer, "sse", Constraint::Delivery, Weight::Supports).contains("Last-Event-ID")
    );
    assert!(
        reason(&answer, "sse", Constraint::Memory, Weight::Supports).contains("19,000 connections")
    );
    assert_eq!(
        entry(&answer, "websocket").assessment.verdict,
        Verdict::FitsWithCaveats
    );
    assert!(
        reason(&answer, "webhook", Constraint::Consumers, Weight::Excludes)
            .contains("inbound HTTP")
    );
}

/// A proxy that refuses upgrades and buffers responses leaves the polling pair. Neither was
/// measured near the design's 0.2 ev/s: short polling's latency is its interval by
/// construction, long polling's is unmeasured, and the answer says so and how to measure it
/// rather than borrowing a 100 ev/s figure.
#[test]
fn corporate_proxy_leaves_the_polling_pair() {
    let answer = answer("corporate-proxy", DesignSettings::default());
    assert_eq!(first(&answer), "poll");
    assert_ne!(
        entry(&answer, "longpoll").assessment.verdict,
        Verdict::Excluded
    );
    assert!(
        reason(&answer, "longpoll", Constraint::Regime, Weight::Unmeasured)
            .contains("CPU and latency at this load are not measured")
    );
    assert!(entry(&answer, "websocket").assessment.to_measure.is_none());
    assert!(
        reason(&answer, "websocket", Constraint::Network, Weight::Excludes).contains("upgrade")
    );
    assert!(
        reason(&answer, "sse", Constraint::Network, Weight::Excludes).contains("buffering proxy")
    );
    assert!(
        reason(&answer, "poll", Constraint::EventRate, Weight::Caveat).contains("empty poll(s)")
    );
    assert!(reason(&answer, "longpoll", Constraint::Http1, Weight::Caveat).contains("six"));
}

/// Devices with 4 KB to spare and a rare event: every held connection is over the memory
/// budget; with an endpoint they get webhooks, without one, polling.
#[test]
fn constrained_devices_get_webhooks_or_polling() {
    let answer_with = answer("iot-devices", as_broadcast());
    assert_eq!(first(&answer_with), "webhook");
    for held in ["websocket", "sse", "longpoll"] {
        let why = reason(&answer_with, held, Constraint::Memory, Weight::Excludes);
        assert!(why.contains("over the 4.1KB budget"), "{held}: {why}");
    }
    let answer_without = answer(
        "iot-devices",
        DesignSettings {
            inbound_http: Some(false),
            ..as_broadcast()
        },
    );
    assert_eq!(first(&answer_without), "poll");
    assert!(reason(
        &answer_without,
        "webhook",
        Constraint::InboundHttp,
        Weight::Excludes
    )
    .contains("cannot"));
}

/// A design no transport meets (a game lobby whose every message must be back within
/// 0.1 ms) excludes all of them; the answer says which single constraint to relax (the budget,
/// to what the quickest measured round trip needs) and what would then fit.
#[test]
fn impossible_design_says_what_to_relax() {
    let mut files = evidence_files();
    files.push(root().join("tests/data/two-way-lite.json"));
    let evidence = Evidence::load(&files, Path::new("unused")).unwrap();
    let tight = DesignSettings {
        p99_budget_ms: Some(0.1),
        ..DesignSettings::default()
    };
    let answer = recommend(&design("multiplayer-lobby", tight), &evidence);
    // Every transport the stored runs hold is excluded (one they do not is unmeasured).
    let stored = |name: &str| evidence.holds(Transport::named(name).unwrap());
    assert!(answer
        .ranking
        .iter()
        .filter(|r| stored(r.assessment.transport))
        .all(|r| r.assessment.verdict == Verdict::Excluded));
    assert!(
        answer
            .relax
            .iter()
            .any(|r| r.starts_with("raise the p99 budget to") && r.contains("websocket")),
        "{:?}",
        answer.relax
    );
    let text = pushbench::recommend::render::text(&answer);
    assert!(
        text.contains("no transport satisfies this design"),
        "{text}"
    );
}

/// The same design ranked against two results files: when the leader's measured latency and
/// CPU get four times worse, it loses its place, and its reasons cite the new figure.
#[test]
fn rankings_follow_the_measured_figures() {
    let design = design("market-data", DesignSettings::default());
    let quick = root().join("tests/data/quick.json");
    let before = recommend(
        &design,
        &Evidence::load(std::slice::from_ref(&quick), Path::new("unused")).unwrap(),
    );
    let leader = first(&before).to_owned();

    // The stored run may be of an older schema: bring it to this one before editing it.
    let mut value = pushbench::results::migrate(
        serde_json::from_str(&std::fs::read_to_string(&quick).unwrap()).unwrap(),
    )
    .unwrap();
    let mut planted_p99 = 0;
    for run in value["runs"].as_array_mut().unwrap() {
        if run["transport"] == leader.as_str() {
            let p99 = run["latency_us"]["p99"].as_u64().unwrap() * 4;
            run["latency_us"]["p99"] = p99.into();
            planted_p99 = p99;
            let cpu = run["connection"]["server_cpu_us_per_delivery"]
                .as_f64()
                .unwrap()
                * 4.0;
            run["connection"]["server_cpu_us_per_delivery"] = cpu.into();
        }
    }
    let scratch = common::scratch("slowed");
    let slowed = scratch.join("results.json");
    std::fs::write(&slowed, serde_json::to_string(&value).unwrap()).unwrap();
    let after = recommend(
        &design,
        &Evidence::load(&[slowed], Path::new("unused")).unwrap(),
    );
    assert_ne!(first(&after), leader, "{leader} kept first place");
    let cited = entry(&after, &leader)
        .assessment
        .reasons
        .iter()
        .find(|r| r.constraint == Constraint::Latency)
        .unwrap()
        .text
        .clone();
    assert!(
        cited.contains(&pushbench::results::format::micros(planted_p99)),
        "{cited}"
    );
}

/// The binary: a design file plus flags, JSON for tooling, and the command that would measure
/// a fan-out the results lack.
#[test]
fn cli_json_and_unmeasured_fanout() {
    let mut args = vec![
        "recommend".to_string(),
        "--design".into(),
        root()
            .join("designs/live-dashboard.toml")
            .display()
            .to_string(),
        "--subscribers".into(),
        "100000".into(),
        "--format".into(),
        "json".into(),
        "--results".into(),
    ];
    args.extend(evidence_files().iter().map(|p| p.display().to_string()));
    let output = Command::new(BIN).args(&args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["design"]["subscribers"], 100000);
    assert_eq!(
        json["ranking"].as_array().unwrap().len(),
        Transport::ALL.len()
    );
    assert_eq!(json["ranking"][0]["transport"], "sse");
    assert_eq!(json["ranking"][0]["rank"], 1);
    let command = json["ranking"][0]["to_measure"].as_str().unwrap();
    assert!(
        command.starts_with("pushbench run --transports sse --subscribers 100000"),
        "{command}"
    );
    let reasons = json["ranking"][0]["reasons"].as_array().unwrap();
    assert!(reasons
        .iter()
        .any(|r| r["weight"] == "unmeasured" && r["constraint"] == "evidence"));
}

/// A design file with an unknown key names the key and the line; an impossible value is
/// refused; both exit non-zero without a panic.
#[test]
fn bad_designs_are_refused_with_where_and_why() {
    let scratch = common::scratch("bad-design");
    let file = scratch.join("design.toml");
    std::fs::write(&file, "consumers = \"browsers\"\nfanout = 10\n").unwrap();
    let output = Command::new(BIN)
        .args(["recommend", "--design", file.to_str().unwrap(), "--results"])
        .args(evidence_files())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("fanout"),
        "{stderr}"
    );
    let output = Command::new(BIN)
        .args(["recommend", "--rate=-5", "--results"])
        .args(evidence_files())
        .output()
        .unwrap();
    assert_ne!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rate") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let empty = common::scratch("no-results");
    let output = Command::new(BIN)
        .args(["recommend"])
        .current_dir(&empty)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("pushbench run --scenario"));
}

/// `--results` also takes a directory of runs, as `results/` is laid out: the newest run of
/// each scenario in it is cited.
#[test]
fn a_directory_of_runs_is_evidence() {
    let dir = common::scratch("runs");
    for (run, file) in [
        ("20260101-000000-quick", "quick.json"),
        ("20260102-000000-quick", "quick.json"),
        ("20260101-000000-fanout", "fanout-lite.json"),
    ] {
        std::fs::create_dir_all(dir.join(run)).unwrap();
        std::fs::copy(
            root().join("tests/data").join(file),
            dir.join(run).join("results.json"),
        )
        .unwrap();
    }
    let output = Command::new(BIN)
        .args(["recommend", "--design"])
        .arg(root().join("designs/chat.toml"))
        .arg("--results")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let cited = stdout
        .lines()
        .find(|l| l.starts_with("figures from:"))
        .unwrap();
    // Two scenarios, so two runs: the newer quick directory and the fanout one (each file keeps
    // its own run id).
    assert_eq!(cited.matches(", ").count(), 1, "{cited}");
    assert!(stdout.contains(" 1. websocket"), "{stdout}");
}

/// Five services at 50,000 ev/s each with one core: the stored runs are at 2,000 ev/s (10
/// subscribers) and 100 ev/s, so no transport's CPU is taken from them and scaled up (that
/// excluded tcp at "2 cores" before); each says its CPU is unmeasured at this load, with the
/// run that would measure it.
#[test]
fn cpu_is_not_scaled_from_another_regime() {
    let over = DesignSettings {
        subscribers: Some(5),
        rate: Some(50_000.0),
        p99_budget_ms: Some(1.0),
        cpu_cores: Some(1.0),
        ..DesignSettings::default()
    };
    let answer = answer("market-data", over);
    for transport in ["tcp", "websocket"] {
        let assessment = &entry(&answer, transport).assessment;
        assert!(
            !assessment
                .reasons
                .iter()
                .any(|r| r.constraint == Constraint::Cpu && r.weight == Weight::Excludes),
            "{transport} excluded for CPU measured elsewhere: {:?}",
            assessment.reasons
        );
        assert!(
            reason(&answer, transport, Constraint::Regime, Weight::Unmeasured)
                .contains("within 4×")
        );
        let command = assessment.to_measure.as_deref().unwrap_or_default();
        assert!(
            command.contains("--subscribers 5 --rate 50000"),
            "{command}"
        );
    }
}

/// A ceiling measured where the load was the limit is not the transport's: a design beyond it
/// is unmeasured there, not excluded, while a server-bound ceiling still excludes. Read from the
/// committed throughput reference run, whose rows at 100 subscribers are nearly all load-bound;
/// short polling's, held by its interval, is not.
#[test]
fn a_load_bound_ceiling_does_not_exclude() {
    let throughput = committed("throughput");
    let evidence = Evidence::load(&[throughput], Path::new("unused")).unwrap();
    let over = DesignSettings {
        subscribers: Some(100),
        rate: Some(100_000.0),
        ..DesignSettings::default()
    };
    let answer = recommend(&design("market-data", over), &evidence);
    let websocket = reason(
        &answer,
        "websocket",
        Constraint::Throughput,
        Weight::Unmeasured,
    );
    assert!(websocket.contains("the load was the limit"), "{websocket}");
    let poll = reason(&answer, "poll", Constraint::Throughput, Weight::Excludes);
    assert!(poll.contains("the most measured was"), "{poll}");
}

/// HTTP/2's multiplexing: for browsers, SSE over HTTP/2 escapes the six-connections-per-origin
/// limit that HTTP/1.1 SSE is warned about; where only HTTP/1.1 reaches the consumers, it is
/// ruled out, saying why.
#[test]
fn sse_over_http2_escapes_the_six_connection_limit_where_http2_reaches() {
    let open = answer("live-dashboard", DesignSettings::default());
    assert!(reason(&open, "sse-h2", Constraint::Http2, Weight::Supports).contains("six"));
    let http1 = answer(
        "live-dashboard",
        DesignSettings {
            http1_only: Some(true),
            ..DesignSettings::default()
        },
    );
    assert_eq!(
        entry(&http1, "sse-h2").assessment.verdict,
        Verdict::Excluded
    );
    assert!(
        reason(&http1, "sse-h2", Constraint::Http1, Weight::Excludes).contains("HTTP/2 end to end")
    );
    assert!(reason(&http1, "sse", Constraint::Http1, Weight::Caveat).contains("six"));
}

/// Against the committed reference runs (`results/`), the device fleet gets MQTT: duplex, the
/// broker's persistent session carries the downtime (the others leave resuming to the
/// application), and its keep-alive outlasts the NAT's idle timeout, which raw TCP's silence
/// does not. The service mesh gets gRPC: a host's fifty streams share its HTTP/2 connections
/// where WebSocket and TCP hold one each, and protobuf is the fewest bytes on the wire.
#[test]
fn the_device_fleet_gets_mqtt_and_the_service_mesh_grpc() {
    let evidence = Evidence::load(&[root().join("results")], Path::new("unused")).unwrap();
    let fleet = recommend(&design("device-fleet", as_broadcast()), &evidence);
    assert_eq!(first(&fleet), "mqtt");
    assert_eq!(fleet.ranking[0].assessment.verdict, Verdict::Fits);
    assert!(
        reason(&fleet, "mqtt", Constraint::Delivery, Weight::Supports)
            .contains("persistent session")
    );
    assert!(
        reason(&fleet, "websocket", Constraint::Delivery, Weight::Caveat).contains("reconnect")
    );
    assert!(
        reason(&fleet, "tcp", Constraint::IdleTimeout, Weight::Caveat).contains("no keep-alive")
    );
    assert!(reason(&fleet, "sse", Constraint::Direction, Weight::Caveat).contains("one-way"));

    let mesh = recommend(
        &design("service-mesh", DesignSettings::default()),
        &evidence,
    );
    assert_eq!(first(&mesh), "grpc");
    assert!(reason(
        &mesh,
        "grpc",
        Constraint::SubscribersPerHost,
        Weight::Supports
    )
    .contains("40 connections"));
    for own_connection in ["websocket", "tcp", "mqtt"] {
        let text = reason(
            &mesh,
            own_connection,
            Constraint::SubscribersPerHost,
            Weight::Caveat,
        );
        assert!(
            text.contains("2,000 connections"),
            "{own_connection}: {text}"
        );
    }
    let bytes = |t: &str| reason(&mesh, t, Constraint::Bandwidth, Weight::Supports);
    assert!(bytes("grpc").contains("wire bytes"), "{}", bytes("grpc"));
}

/// A client's own keep-alive (MQTT's PINGREQ) is judged by its measured interval against the
/// network's idle timeout: shorter passes, longer is a caveat saying to shorten it.
#[test]
fn a_client_keep_alive_is_held_against_the_idle_timeout() {
    let evidence = Evidence::load(&[root().join("results")], Path::new("unused")).unwrap();
    let tight = DesignSettings {
        idle_timeout_secs: Some(20.0),
        ..DesignSettings::default()
    };
    let answer = recommend(&design("device-fleet", tight), &evidence);
    assert!(
        reason(&answer, "mqtt", Constraint::IdleTimeout, Weight::Caveat)
            .contains("30 s keep-alive")
    );
    let fleet = recommend(
        &design("device-fleet", DesignSettings::default()),
        &evidence,
    );
    assert!(entry(&fleet, "mqtt")
        .assessment
        .reasons
        .iter()
        .all(|r| r.constraint != Constraint::IdleTimeout));
}

/// A row measured through injected faults is no evidence for a design without them: in the
/// committed `faults` run every row went through drops, a consumer outage or a restart, so
/// none is cited as latency (the webhook row's p99 there is the outage's), while the loss
/// across the measured outage still is, by the one rule that reads faulted rows.
#[test]
fn an_outage_row_is_not_cited_as_latency() {
    let faults = committed("faults");
    let evidence = Evidence::load(&[faults], Path::new("unused")).unwrap();
    let design = design(
        "payment-webhooks",
        DesignSettings {
            subscribers: Some(10),
            rate: Some(500.0),
            ..as_broadcast()
        },
    );
    let figures = pushbench::results::figures::Figure::LatencyP99;
    for &transport in Transport::ALL {
        assert_eq!(
            evidence.nearest(transport, &design, figures, false),
            None,
            "{transport}: a faulted row cited"
        );
    }
    let webhook = Transport::ALL
        .iter()
        .copied()
        .find(|t| t.name() == "webhook")
        .unwrap();
    let (outage, _) = evidence.outage_survived(webhook, &design).unwrap();
    assert!(outage > 0.0);
}

/// Chat is rooms: its latency and CPU are cited from rows measured in rooms (the committed
/// `workloads` run), never from the broadcast rows beside them; with its own runs
/// (`results/designs/`, `recommend --measure`) beside them, from those.
#[test]
fn chat_is_judged_from_rows_measured_in_rooms() {
    // The presets' runs alone: each top-level run directory, not the designs' own runs.
    let presets: Vec<PathBuf> = std::fs::read_dir(root().join("results"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("results.json").is_file())
        .collect();
    let evidence = Evidence::load(&presets, Path::new("unused")).unwrap();
    let chat = recommend(&design("chat", DesignSettings::default()), &evidence);
    assert_eq!(first(&chat), "websocket");
    let latency = reason(&chat, "websocket", Constraint::Latency, Weight::Supports);
    assert!(
        latency.contains("topics(") && latency.contains("(workloads)"),
        "{latency}"
    );
    let cpu = reason(&chat, "websocket", Constraint::Cpu, Weight::Supports);
    assert!(
        cpu.contains("topics(") && cpu.contains("(workloads)"),
        "{cpu}"
    );

    let evidence = Evidence::load(&[root().join("results")], Path::new("unused")).unwrap();
    let chat = recommend(&design("chat", DesignSettings::default()), &evidence);
    assert!(chat.scalings.is_some(), "the design's own runs are read");
    let latency = reason(&chat, "websocket", Constraint::Latency, Weight::Supports);
    assert!(
        latency.contains("topics(")
            && latency.contains("(design-chat-delivery: the design's own run"),
        "{latency}"
    );
}

/// A design that names the libraries it will deploy is judged by their rows alone: the stored
/// runs hold only pushbench's own WebSocket rows, so a design deploying tokio-tungstenite has
/// its WebSocket figures unmeasured (and the command that would measure them names the
/// library), while SSE, for which it names nothing, is judged by pushbench's own rows as
/// before; the answer says whose figures stand for each.
#[test]
fn a_design_is_judged_by_the_libraries_it_deploys() {
    // The stored fan-out sweep's regime: 1,000 subscribers at 100 events a second.
    let at_the_sweep = || DesignSettings {
        subscribers: Some(1000),
        rate: Some(100.0),
        ..as_broadcast()
    };
    let own = answer("live-dashboard", at_the_sweep());
    let deploying = answer(
        "live-dashboard",
        DesignSettings {
            deploys: Some(vec!["tokio-tungstenite".into()]),
            ..at_the_sweep()
        },
    );
    assert_eq!(
        unmeasured(&own, "websocket"),
        0,
        "{:?}",
        entry(&own, "websocket")
    );
    assert!(unmeasured(&deploying, "websocket") > 0);
    assert_eq!(unmeasured(&own, "sse"), unmeasured(&deploying, "sse"));
    let command = entry(&deploying, "websocket").assessment.to_measure.clone();
    let libraries = "--server-impl tokio-tungstenite --client-impl tokio-tungstenite";
    assert!(
        command.as_deref().is_some_and(|c| c.contains(libraries)),
        "{command:?}"
    );
    let text = pushbench::recommend::render::text(&deploying);
    assert!(
        text.contains("[tokio-tungstenite server library, tokio-tungstenite client library]"),
        "{text}"
    );
    // A name no transport has is refused, with the ones that exist.
    let refused = DesignSettings {
        deploys: Some(vec!["tungstenite".into()]),
        ..DesignSettings::default()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("deploys") && refused.contains("tokio-tungstenite"),
        "{refused}"
    );
}

/// How many of a transport's reasons say a figure is unmeasured.
fn unmeasured(answer: &Recommendation, transport: &str) -> usize {
    let reasons = &entry(answer, transport).assessment.reasons;
    reasons
        .iter()
        .filter(|r| r.weight == Weight::Unmeasured)
        .count()
}

/// A design that deploys a server pushbench did not write is judged by that server's rows: the
/// committed `servers` run has Nchan's SSE row at 1,000 subscribers and 100 events a second,
/// which stands for SSE there (and the answer names the server); pushbench's own SSE row does
/// not. Where no run has the design's regime, the command that would measure it names the
/// server.
#[test]
fn a_design_is_judged_by_the_server_it_deploys() {
    let servers = committed("servers");
    let evidence = Evidence::load(&[servers], Path::new("unused")).unwrap();
    let nchan = |subscribers: u64, rate: f64| {
        let settings = DesignSettings {
            subscribers: Some(subscribers),
            rate: Some(rate),
            deploys: Some(vec!["nchan".into()]),
            ..as_broadcast()
        };
        recommend(&design("live-dashboard", settings), &evidence)
    };
    let at_the_run = nchan(1000, 100.0);
    assert_eq!(
        unmeasured(&at_the_run, "sse"),
        0,
        "{:?}",
        entry(&at_the_run, "sse")
    );
    let text = pushbench::recommend::render::text(&at_the_run);
    assert!(text.contains("[nchan server]"), "{text}");
    let elsewhere = nchan(20, 3.0);
    let command = entry(&elsewhere, "sse").assessment.to_measure.clone();
    assert!(
        command
            .as_deref()
            .is_some_and(|c| c.contains("--server nchan")),
        "{command:?}"
    );
}
