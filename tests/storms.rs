//! Reconnect storms and churn over real sockets: after a close storm every subscriber of every
//! transport that takes it is back, caught up and whole; `run` records both storm kinds (the
//! server's close, the link's blackhole) with their curve; churn, on every transport that takes
//! it, keeps every ledger exact.

mod common;

use std::time::Duration;

use common::{assert_identical, client_for, scratch, TIMEOUT};
use pushbench::event::{Rate, StreamSpec};
use pushbench::harness::{deliver_locally, run, RunOptions};
use pushbench::metrics::storm::StormEffect;
use pushbench::results::Results;
use pushbench::scenario::{Counts, Settings, TransportSet};
use pushbench::setting_flags::{SettingFlags, RUN};
use pushbench::settings::Declared;
use pushbench::transport::resume::CHURN;
use pushbench::transport::storm::STORM_AFTER;
use pushbench::transport::{ServerConfig, SettingValues, Transport};

/// The transports that declare `setting`.
fn taking(setting: &dyn Declared) -> Vec<Transport> {
    Transport::ALL
        .iter()
        .copied()
        .filter(|t| t.spec().settings.iter().any(|s| s.name() == setting.name()))
        .collect()
}

/// A close storm 500 ms into a 1.5 s stream: every subscriber reconnects once, after the cut,
/// catches up, and still receives the identical stream; the storm read from their
/// reconnections has everyone back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_close_storm_every_subscriber_is_back_and_caught_up() {
    let spec = StreamSpec::new(3, 1500, "64".parse().unwrap(), Rate::PerSecond(1000.0)).unwrap();
    let transports = taking(&STORM_AFTER);
    assert!(transports.len() >= 7, "{transports:?}");
    for transport in transports {
        let config = ServerConfig {
            settings: SettingValues::from_pairs([STORM_AFTER.set(Duration::from_millis(500))]),
            ..ServerConfig::local()
        };
        let client = client_for(&config);
        let run = deliver_locally(transport, &spec, 4, config, client, TIMEOUT)
            .await
            .unwrap();
        assert_identical(transport, &spec, &run.records);
        let at = run.storm_ns.expect("the server noted its storm");
        let reconnections: Vec<_> = run
            .records
            .iter()
            .flat_map(|r| r.reconnections.iter().copied())
            .collect();
        for (i, record) in run.records.iter().enumerate() {
            assert!(
                record.reconnections.iter().any(|r| r.at_ns >= at),
                "{transport} subscriber {i}: {:?}",
                record.reconnections
            );
        }
        let storm = StormEffect::of("close", (at, at), 4, &reconnections, 0);
        assert_eq!(storm.not_back, 0, "{transport}");
        assert!(storm.back.all_ms.is_some(), "{transport}: {storm:?}");
        assert!(storm.caught_up.all_ms.is_some(), "{transport}: {storm:?}");
        assert_eq!(storm.curve.last().map(|p| p.back), Some(1.0), "{transport}");
    }
}

/// Churn at 40 connections a second over 4 subscribers (each leaves every 100 ms on average)
/// through a 1.5 s stream: every subscriber of every transport that takes it left and came
/// back, and still received the identical stream, nothing lost or twice (MQTT, at least once,
/// may deliver again what was in flight; each copy is counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_keeps_every_ledger_exact() {
    let spec = StreamSpec::new(8, 1500, "64".parse().unwrap(), Rate::PerSecond(1000.0)).unwrap();
    let transports = taking(&CHURN);
    assert!(transports.len() >= 8, "{transports:?}");
    for transport in transports {
        let config = ServerConfig::local();
        let mut client = client_for(&config);
        client.settings = SettingValues::from_pairs([CHURN.set(40)]);
        client.population = 4;
        let run = deliver_locally(transport, &spec, 4, config, client, TIMEOUT)
            .await
            .unwrap();
        let reconnects: u64 = run.records.iter().map(|r| r.reconnects).sum();
        assert!(reconnects >= 4, "{transport}: {reconnects} reconnects");
        if transport != Transport::Mqtt {
            assert_identical(transport, &spec, &run.records);
            continue;
        }
        // MQTT at QoS 1 is at least once: what was in flight when a subscriber left may come
        // again after it is back. Nothing is lost, every stream's digest holds, and each copy
        // is counted (at most one per event in flight at each leave).
        let sources = pushbench::harness::ledger::SourceDigests::of(&spec);
        for (i, record) in run.records.iter().enumerate() {
            assert_eq!(record.error, None, "mqtt subscriber {i}");
            assert_eq!(record.ledger.lost(), 0, "mqtt subscriber {i}");
            assert!(record.ledger.digests_match(&sources), "mqtt subscriber {i}");
            let counts = record.ledger.counts();
            assert_eq!(
                counts.received - counts.duplicated,
                spec.deliveries_per_subscriber(),
                "mqtt subscriber {i}: every copy counted"
            );
        }
    }
}

/// `run` sweeps both storm kinds on a stream and a frame transport: every row records its storm
/// (the window among its faults, everyone back and caught up, the curve ending at all), loses
/// nothing, and the report shows the storm section with one curve chart per kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_records_both_storm_kinds_with_their_curve() {
    let out = scratch("storms");
    let given = |name: &str, values: &[&str]| {
        (
            name.to_string(),
            values.iter().map(|v| v.to_string()).collect(),
        )
    };
    let settings = Settings {
        transports: Some("websocket,longpoll".parse::<TransportSet>().unwrap()),
        subscribers: Some(Counts(vec![6])),
        rate: Some(Rate::PerSecond(400.0)),
        events: Some(800),
        transport_settings: SettingFlags::<RUN> {
            given: [
                given("storm-after", &["500ms"]),
                given("storm-kind", &["close", "blackhole"]),
                given("storm-length", &["400ms"]),
            ]
            .into_iter()
            .collect(),
        },
        ..Settings::default()
    };
    let options = RunOptions {
        scenario: settings.resolve().unwrap(),
        out: out.to_path_buf(),
        exe: common::BIN.into(),
        pin: false,
    };
    let outcome = run(options).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    assert_eq!(results.runs.len(), 4);
    let mut kinds = Vec::new();
    for row in &results.runs {
        let t = row.key.label();
        assert!(!row.failed, "{t}: {:?}", row.error);
        assert_eq!((row.lost, row.duplicated), (0, 0), "{t}");
        assert!(row.digest_ok, "{t}");
        let storm = row
            .storm
            .as_ref()
            .unwrap_or_else(|| panic!("{t}: no storm"));
        assert_eq!(storm.subscribers, 6, "{t}");
        assert_eq!(storm.not_back, 0, "{t}: {storm:?}");
        assert!(storm.caught_up.all_ms.is_some(), "{t}: {storm:?}");
        assert_eq!(storm.curve.last().map(|p| p.back), Some(1.0), "{t}");
        let expected_length = if storm.kind == "blackhole" {
            400.0
        } else {
            0.0
        };
        assert!(
            (storm.length_ms - expected_length).abs() < 1.0,
            "{t}: {storm:?}"
        );
        assert!(
            row.fault_windows.iter().any(|w| w.fault == "storm-after"),
            "{t}: {:?}",
            row.fault_windows
        );
        kinds.push(storm.kind.clone());
    }
    kinds.sort();
    assert_eq!(kinds, ["blackhole", "blackhole", "close", "close"]);
    let written = pushbench::report::write(&outcome.path, &results, Vec::new()).unwrap();
    let report = std::fs::read_to_string(written.markdown).unwrap();
    assert!(report.contains("## Reconnect storms"), "{report}");
    assert!(
        report.contains("plots/storm-close.svg") && report.contains("plots/storm-blackhole.svg")
    );
    let _ = std::fs::remove_dir_all(&out);
}
