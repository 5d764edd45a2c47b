//! Servers pushbench did not write, started by their profiles (`--server NAME`, `servers/`):
//! nginx with Nchan for SSE, WebSocket and long polling, Eclipse Mosquitto for MQTT (Debian's packages, which
//! `scripts/install-nchan` and `scripts/install-mosquitto` install). Each delivers the
//! identical stream to pushbench's own clients, judged by the same ledger, with the server's
//! CPU, memory and wire bytes measured from its own processes; what a profile's server cannot
//! do is refused with the reason. Mosquitto carries the MQTT contract as the embedded broker
//! does: one and fifty subscribers, edge payloads, QoS 0 and 1, a persistent session across an
//! outage, and two-way traffic.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{assert_identical, spec};
use pushbench::event::StreamSpec;
use pushbench::harness::{deliver_locally, run, LocalRun, RunOptions, SubscriberRecord};
use pushbench::profile::{ServerChoice, SERVER};
use pushbench::results::Results;
use pushbench::scenario::TransportSet;
use pushbench::scenario::{Counts, Settings};
use pushbench::setting_flags::{SettingFlags, RUN};
use pushbench::settings::Value as _;
use pushbench::transport::mqtt::{Qos, QOS};
use pushbench::transport::resume::{OUTAGE, OUTAGE_AFTER};
use pushbench::transport::upstream::{UPSTREAM_DELAY, UPSTREAM_ECHO, UPSTREAM_RATE};
use pushbench::transport::{ClientConfig, ServerConfig, Transport};

use common::BIN;

/// The `server` setting naming the profile `name`, where its server is installed (in CI it
/// must be; elsewhere the test is skipped with a note).
fn server(name: &str) -> Option<(String, String)> {
    let choice = ServerChoice::parse(name).unwrap();
    let profile = choice.0.expect("a profile");
    if !pushbench::outside::process::installed(profile) {
        let why = format!(
            "{name} is not installed (run {})",
            profile.install.as_deref().unwrap_or("its install script")
        );
        assert!(std::env::var_os("CI").is_none(), "{why}, and CI needs it");
        eprintln!("skipped: {why}");
        return None;
    }
    Some(SERVER.set(choice))
}

/// Mosquitto, started by its profile for each stream.
struct Mosquitto {
    server: (String, String),
}

impl Mosquitto {
    fn start() -> Option<Self> {
        Some(Self {
            server: server("mosquitto")?,
        })
    }

    /// Serves `spec` through Mosquitto at `qos` to `subscribers`, both sides naming it (and
    /// `client_settings` more), and returns their records once the server saw every
    /// subscriber leave.
    async fn deliver(
        &self,
        spec: &StreamSpec,
        subscribers: usize,
        qos: Qos,
        client_settings: &[(String, String)],
    ) -> Vec<SubscriberRecord> {
        let named = [self.server.clone(), QOS.set(qos)];
        let mut config = ServerConfig::local();
        config.settings.0.extend(named.clone());
        let mut client = common::client_for(&config);
        client.settings.0.extend(named);
        client.settings.0.extend(client_settings.iter().cloned());
        self.run(spec, subscribers, (config, client)).await.records
    }

    /// Serves `spec` through Mosquitto to `subscribers` with these server and client configs
    /// (which name it), once the server saw every subscriber leave.
    async fn run(
        &self,
        spec: &StreamSpec,
        subscribers: usize,
        (config, client): (ServerConfig, ClientConfig),
    ) -> LocalRun {
        let run = deliver_locally(
            Transport::Mqtt,
            spec,
            subscribers,
            config,
            client,
            common::TIMEOUT,
        )
        .await
        .unwrap();
        assert_eq!(run.left_connected, 0, "subscribers still counted");
        run
    }
}

/// One and fifty subscribers, and edge payloads, each get the identical stream through
/// Mosquitto, at QoS 0 and at QoS 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_delivers_the_identical_stream() {
    let _alone = common::ALONE.lock().await;
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    for qos in [Qos::AtMostOnce, Qos::AtLeastOnce] {
        for (spec, subscribers) in [
            (spec(1_000, "64"), 1),
            (spec(1_000, "64"), 50),
            (spec(300, "0,1,65536"), 2),
        ] {
            let records = broker.deliver(&spec, subscribers, qos, &[]).await;
            assert_eq!(records.len(), subscribers, "{qos:?}");
            assert_identical(Transport::Mqtt, &spec, &records);
        }
    }
}

/// At QoS 1 a subscriber away for half a second mid-stream comes back with the same client id,
/// and Mosquitto sends what it kept: nothing lost, and the outage is on record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_carries_an_outage() {
    let _alone = common::ALONE.lock().await;
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let spec = StreamSpec::new(
        42,
        600,
        "64".parse().unwrap(),
        pushbench::event::Rate::PerSecond(400.0),
    )
    .unwrap();
    let outage = [
        OUTAGE.set(Duration::from_millis(500)),
        OUTAGE_AFTER.set(Duration::from_millis(200)),
    ];
    let records = broker.deliver(&spec, 3, Qos::AtLeastOnce, &outage).await;
    for record in &records {
        let counts = record.ledger.counts();
        assert_eq!(record.error, None);
        assert_eq!(record.ledger.lost(), 0, "{counts:?}");
        assert_eq!(record.ledger.digest(), spec.digest());
        let (down, up) = record.outage_ns.expect("the outage is not on record");
        assert!(up - down >= 500_000_000, "down for {} ns", up - down);
    }
}

/// Two ways through Mosquitto: a planted 5 ms delay in the server's handling of each message up
/// reads in the round trip's median (at least 5 ms, and counted once), as on every other
/// transport (the embedded rumqttd leaves Nagle's algorithm on, which quantises its round trip;
/// see docs/method.md), and every message and copy arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_delay_reads_in_the_round_trip_through_mosquitto() {
    let _alone = common::ALONE.lock().await;
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let rooms = pushbench::workload::Workload::Topics {
        topics: 2,
        per_subscriber: 1,
        membership: pushbench::workload::Membership::Even,
    };
    let spec = StreamSpec::new(
        5,
        1000,
        "64".parse().unwrap(),
        pushbench::event::Rate::PerSecond(1000.0),
    )
    .unwrap()
    .with_workload(rooms, 4);
    let median = |run: &LocalRun| {
        let exact = run
            .records
            .iter()
            .all(|r| r.copies.is_some_and(|c| c.is_exact()));
        assert!(exact, "every copy once");
        let h = run.recorded.round_trip.as_ref().expect("round trips");
        h.value_at_quantile(0.5) as f64 / 1000.0
    };
    let mut medians = Vec::new();
    for delay in [Duration::ZERO, Duration::from_millis(5)] {
        let up = [
            broker.server.clone(),
            UPSTREAM_RATE.set(20.0),
            UPSTREAM_ECHO.set(true),
        ];
        let mut config = ServerConfig::local();
        config.settings.0.extend(up.clone());
        config.settings.0.extend([UPSTREAM_DELAY.set(delay)]);
        let mut client = common::client_for(&config);
        client.settings.0.extend(up);
        medians.push(median(&broker.run(&spec, 4, (config, client)).await));
    }
    // Every delayed round trip holds the 5 ms sleep; counted once, not twice, the median stays
    // under the plain one plus twice the delay.
    let (plain, delayed) = (medians[0], medians[1]);
    assert!(
        delayed >= 5.0 && delayed < plain + 10.0,
        "the round trip's median went from {plain:.3} ms to {delayed:.3} ms, not by the planted \
         5 ms"
    );
}

/// A small `run` of `transports` on the server `server` names: 20 subscribers, 600 events
/// at 300/s, and `given` settings more.
fn small_run(
    transports: &str,
    server: &(String, String),
    given: &[(&str, &str)],
    out: &Path,
) -> RunOptions {
    let mut flags: Vec<(String, Vec<String>)> = vec![(server.0.clone(), vec![server.1.clone()])];
    flags.extend(
        given
            .iter()
            .map(|(n, v)| (n.to_string(), vec![v.to_string()])),
    );
    let settings = Settings {
        transports: Some(transports.parse::<TransportSet>().unwrap()),
        subscribers: Some(Counts(vec![20])),
        rate: Some(pushbench::event::Rate::PerSecond(300.0)),
        events: Some(600),
        transport_settings: SettingFlags::<RUN> {
            given: flags.into_iter().collect(),
        },
        ..Settings::default()
    };
    RunOptions {
        scenario: settings.resolve().unwrap(),
        out: out.to_owned(),
        exe: Path::new(BIN).to_owned(),
        pin: false,
    }
}

/// nginx with Nchan, started by its profile, serves SSE, WebSocket and long-poll subscribers
/// the identical stream: every row intact, named for its server, with nginx's CPU per delivery,
/// memory per connection and the subscribers' wire bytes measured from its own processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nchan_delivers_the_identical_stream_over_each_of_its_transports() {
    let _alone = common::ALONE.lock().await;
    let Some(nchan) = server("nchan") else {
        return;
    };
    let out = std::env::temp_dir().join(format!("pushbench-nchan-{}", std::process::id()));
    let outcome = run(small_run("sse,websocket,longpoll", &nchan, &[], &out))
        .await
        .unwrap();
    let results = Results::read(&outcome.path).unwrap();
    assert_eq!(results.runs.len(), 3);
    // nginx's CPU time is read in clock ticks (10 ms): one short row may spend less than a
    // tick (a fresh-clone CI run read 0 for long polling), the three together do not.
    let mut cpu_us = 0.0;
    for row in &results.runs {
        let t = &row.key.transport;
        assert!(!row.failed, "{t}: {:?}", row.error);
        assert!(row.digest_ok && row.lost == 0, "{t}");
        assert_eq!(row.key.server, "nchan", "{t}");
        let cost = &row.connection;
        assert_eq!(cost.server_unmeasured, None, "{t}");
        cpu_us += cost
            .server_cpu_us_per_delivery
            .unwrap_or_else(|| panic!("{t}: nginx's CPU not measured"));
        assert!(cost.server_rss_per_conn_bytes.is_some(), "{t}");
        // The events' JSON and each transport's framing, read from the kernel's counts.
        let wire = cost.wire_bytes_per_event;
        assert!(wire > 64.0, "{t}: {wire} B per event");
        assert!(
            row.key.label().contains("server=nchan"),
            "{}",
            row.key.label()
        );
    }
    assert!(cpu_us > 0.0, "nginx spent no CPU over three rows");
    let _ = std::fs::remove_dir_all(&out);
}

/// Subscribers resume through Nchan from the place Nchan gave them: each away for 300 ms
/// mid-stream comes back, over SSE with `Last-Event-ID` as Nchan sent it, by long polling with
/// the last answer's `Last-Modified` and `ETag`, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_resume_through_nchan_from_its_own_places() {
    let _alone = common::ALONE.lock().await;
    let Some(nchan) = server("nchan") else {
        return;
    };
    let out = std::env::temp_dir().join(format!("pushbench-nchan-resume-{}", std::process::id()));
    let outage = [(OUTAGE.name, "300ms"), (OUTAGE_AFTER.name, "500ms")];
    let outcome = run(small_run("sse,longpoll", &nchan, &outage, &out))
        .await
        .unwrap();
    let results = Results::read(&outcome.path).unwrap();
    assert_eq!(results.runs.len(), 2);
    for row in &results.runs {
        let t = &row.key.transport;
        assert!(!row.failed, "{t}: {:?}", row.error);
        assert!(row.digest_ok && row.lost == 0 && row.duplicated == 0, "{t}");
        assert!(
            row.reconnects >= 20,
            "{t}: every subscriber came back: {}",
            row.reconnects
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A profile file of one's own runs as a shipped one does (each process of the row reads it
/// from its path), and a long-poll cursor its client does not know fails the row with the
/// client's own sentence, not the server's wait for subscribers that never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_file_of_ones_own_runs_and_its_mistakes_are_named() {
    let _alone = common::ALONE.lock().await;
    if server("nchan").is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pushbench-own-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = include_str!("../servers/nchan.toml");
    let mine = shipped.replace("name = \"nchan\"", "name = \"mine\"");
    let bogus = mine.replace("cursor = \"cache-validators\"", "cursor = \"bogus\"");
    assert_ne!(
        mine, bogus,
        "the shipped profile names its long-poll cursor"
    );
    let (good, bad) = (dir.join("mine.toml"), dir.join("bogus.toml"));
    std::fs::write(&good, mine).unwrap();
    std::fs::write(&bad, bogus).unwrap();
    let named = |file: &Path| (SERVER.name.to_owned(), file.display().to_string());
    let outcome = run(small_run("longpoll", &named(&good), &[], &dir.join("good")))
        .await
        .unwrap();
    let row = &Results::read(&outcome.path).unwrap().runs[0];
    assert!(!row.failed && row.digest_ok, "{:?}", row.error);
    assert_eq!(row.key.server, "mine");
    let outcome = run(small_run("longpoll", &named(&bad), &[], &dir.join("bad"))).await;
    let path = outcome.map(|o| o.path).unwrap_or_else(|failed| {
        panic!("a failed row is reported, not the run's failure: {failed:#}")
    });
    let row = &Results::read(&path).unwrap().runs[0];
    let error = row.error.as_deref().unwrap_or_default();
    assert!(row.failed && error.contains("cursor \"bogus\""), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a profile's server cannot do is refused with the reason, before anything starts: a
/// transport it has no subscribers of, and a serving-side setting its profile does not take.
#[test]
fn a_profile_refuses_what_its_server_cannot_do() {
    let serve = |args: &[&str]| {
        let output = std::process::Command::new(BIN)
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--events", "10"])
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let why = serve(&["--transport", "tcp", "--server", "nchan"]);
    assert!(
        why.contains("no tcp subscribers") && why.contains("sse"),
        "{why}"
    );
    let why = serve(&[
        "--transport",
        "sse",
        "--server",
        "nchan",
        "--drop-every",
        "1s",
    ]);
    assert!(why.contains("does not take --drop-every"), "{why}");
    let why = serve(&["--transport", "sse", "--server", "caddy"]);
    assert!(why.contains("no server named \"caddy\""), "{why}");
}
