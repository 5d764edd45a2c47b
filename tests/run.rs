//! `pushbench run` end to end: results that round-trip through their committed schema, a
//! crashing server that fails the run with its stderr and keeps partial results, a server
//! restarted mid-stream that loses nothing, and scenario files that are refused with the key
//! and line; a CPU limit that holds the server to its quota.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use pushbench::event::Rate;
use pushbench::harness::{run, RunOptions};
use pushbench::results::Results;
use pushbench::scenario::{Counts, Settings, TransportSet};
use pushbench::setting_flags::{SettingFlags, RUN};
use pushbench::settings::SettingValues;
use pushbench::transport::compression::{Compression, COMPRESSION};
use pushbench::transport::implementation::OWN;
use pushbench::transport::{Transport, SERVER_IMPL};

use common::{scratch, BIN};

/// A short run: `transports`, 2 subscribers at 500 ev/s, `events` events, and the transport
/// settings `given` (each with the values it sweeps).
fn small_run_with(
    transports: &str,
    events: u64,
    given: &[(&str, &[&str])],
    out: &Path,
) -> RunOptions {
    let settings = Settings {
        transports: Some(transports.parse::<TransportSet>().unwrap()),
        subscribers: Some(Counts(vec![2])),
        rate: Some(Rate::PerSecond(500.0)),
        events: Some(events),
        transport_settings: SettingFlags::<RUN> {
            given: given
                .iter()
                .map(|(name, values)| {
                    (
                        name.to_string(),
                        values.iter().map(|v| v.to_string()).collect(),
                    )
                })
                .collect(),
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

fn small_run(transports: &str, out: &Path, exe: &Path) -> RunOptions {
    RunOptions {
        exe: exe.to_owned(),
        ..small_run_with(transports, 300, &[], out)
    }
}

/// The restart fault: `run` kills the server (SIGKILL) 700 ms into a 2 s stream and starts a
/// new one on the same port, which serves the same stream on the same schedule. Every
/// transport that declares the fault resumes from the new server and loses nothing; each row
/// records the restart as a fault window and its subscribers' reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_stream_loses_nothing_where_it_can_resume() {
    use pushbench::harness::settings::{settings_of, RESTART_AFTER};
    use pushbench::transport::Transport;
    let restartable: Vec<&str> = Transport::ALL
        .iter()
        .filter(|t| {
            settings_of(**t)
                .iter()
                .any(|s| s.name() == RESTART_AFTER.name)
        })
        .map(|t| t.name())
        .collect();
    let transports = restartable.join(",");
    let out = scratch("restart");
    let options = small_run_with(&transports, 1000, &[(RESTART_AFTER.name, &["700ms"])], &out);
    let outcome = run(options).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    assert_eq!(results.runs.len(), restartable.len());
    for row in &results.runs {
        let t = &row.key.transport;
        assert!(!row.failed, "{t}: {:?}", row.error);
        assert_eq!((row.lost, row.duplicated), (0, 0), "{t}");
        assert!(row.digest_ok, "{t}");
        assert!(row.reconnects >= 2, "{t}: {} reconnects", row.reconnects);
        let restarts: Vec<_> = row
            .fault_windows
            .iter()
            .filter(|w| w.fault == RESTART_AFTER.name)
            .collect();
        assert_eq!(restarts.len(), 1, "{t}: {:?}", row.fault_windows);
        assert!(restarts[0].end_ms > restarts[0].start_ms, "{t}");
        assert_eq!(row.settings.0[RESTART_AFTER.name], "700ms", "{t}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Through the link emulator with a 20 ms one-way delay (no jitter), every event of every
/// transport arrives at least 20 ms after it was due: the delay is never skipped. A
/// representative subset keeps it short: a stream, a frame transport and long polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_latency_through_the_link_is_at_least_its_delay() {
    use pushbench::link::LINK;
    use pushbench::metrics::latency;
    let transports = "websocket,tcp,longpoll";
    let out = scratch("link");
    let options = small_run_with(transports, 300, &[(LINK.name, &["latency=20ms"])], &out);
    let outcome = run(options).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    assert_eq!(results.runs.len(), 3);
    for row in &results.runs {
        let t = &row.key.transport;
        assert!(!row.failed, "{t}: {:?}", row.error);
        assert_eq!(row.settings.0[LINK.name], "latency=20ms", "{t}");
        let histogram = latency::decode(&row.histograms.latency_us).unwrap();
        assert_eq!(histogram.len(), 600, "{t}: every delivery recorded");
        assert!(
            histogram.min() >= 20_000,
            "{t}: an event arrived {} us after it was due through a 20 ms link",
            histogram.min()
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A middlebox that cuts every connection after 40 KB toward the subscriber (`limit_data`,
/// as proxies, load balancers and NAT boxes do), in front of every transport: the webhook
/// provider's connections to its consumers, and the MQTT broker's, included. Each subscriber of
/// pushbench's own clients is cut several times, resumes in its transport's idiom and gets the
/// identical stream; repeats only where the guarantee allows them (MQTT at QoS 1), counted;
/// and every subscription confirmed the end, so the server stopped with none outstanding.
/// (40 KB rather than less: MQTT's broker sends its whole window of unacknowledged messages
/// after a reconnect, and a cut inside it, before the acknowledgements return, repeats forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_resumes_through_a_middlebox_that_cuts_connections() {
    use pushbench::harness::settings::settings_of;
    use pushbench::link::LINK;
    use pushbench::transport::Transport;
    // Every transport the link emulator (a TCP proxy) can stand in front of.
    let behind: Vec<&str> = Transport::ALL
        .iter()
        .filter(|t| settings_of(**t).iter().any(|s| s.name() == LINK.name))
        .map(|t| t.name())
        .collect();
    let out = scratch("middlebox");
    let options = small_run_with(
        &behind.join(","),
        1000,
        &[(LINK.name, &["limit_data=40000"])],
        &out,
    );
    let outcome = run(options).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    assert_eq!(results.runs.len(), behind.len());
    for row in &results.runs {
        let t = &row.key.transport;
        assert!(!row.failed, "{t}: {:?}", row.error);
        assert_eq!(row.lost, 0, "{t}");
        // Repeats only where the guarantee is at least once (MQTT at QoS 1), and counted; the
        // webhook consumer drops a retry it already has by the webhook's id.
        if !(t.spec().guarantee)(&row.settings).repeats {
            assert_eq!(row.duplicated, 0, "{t}");
            assert!(row.digest_ok, "{t}");
        }
        assert_eq!(
            row.unresumed_drops, 0,
            "{t}: subscriptions left unconfirmed"
        );
        // Cut several times over: a subscriber resumes, or where the server dials, it sends
        // again what a cut interrupted.
        let resumed = match t.spec().traits.needs_inbound_http {
            true => row.retries,
            false => row.reconnects,
        };
        assert!(resumed >= 2, "{t}: resumed {resumed} times");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Whether nginx is here for the reverse-proxy tests (`common::needs` says what to install, and
/// fails the test in CI, where it must be).
fn nginx_installed() -> bool {
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "nginx"];
    common::needs("nginx", &nginx, "scripts/install-nginx").is_some()
}

/// SSE through a real nginx: with `proxy_buffering on` (and the server's
/// `X-Accel-Buffering: no` ignored) nginx holds the response back until the stream's first
/// events, so the subscription is established no sooner than the stream starts (300 ms after
/// the subscribers connect); with buffering off it is passed through at once, sooner than
/// buffered. Both deliver the identical stream. Needs nginx (`scripts/install-nginx`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_through_a_buffering_nginx_is_held_back() {
    use pushbench::link::via::VIA;
    if !nginx_installed() {
        return;
    }
    let out = scratch("nginx");
    let via: &[&str] = &["nginx-buffered", "nginx-unbuffered"];
    let options = small_run_with("sse", 300, &[(VIA.name, via)], &out);
    let outcome = run(options).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    let handshake = |via: &str| {
        let row = results
            .runs
            .iter()
            .find(|r| r.settings.0[VIA.name] == via)
            .unwrap_or_else(|| panic!("no row via {via}"));
        assert!(!row.failed && row.digest_ok, "via {via}: {:?}", row.error);
        row.connection.handshake_us.p50
    };
    let (buffered, unbuffered) = (handshake("nginx-buffered"), handshake("nginx-unbuffered"));
    assert!(
        buffered >= 300_000,
        "buffered: established after {buffered} us"
    );
    assert!(
        unbuffered < buffered,
        "unbuffered {unbuffered} us, buffered {buffered} us"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Short polling through nginx, which keeps a few upstream connections and sends every
/// subscriber's polls over them: the server sees far fewer connections than subscribers, so
/// the run starts the stream once the load has every subscriber (a server that waited to
/// count them all waited until the run timed out), and all 150 get the identical stream.
/// Needs nginx (`scripts/install-nginx`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_polls_through_a_pooling_nginx_get_the_stream() {
    use pushbench::link::via::VIA;
    if !nginx_installed() {
        return;
    }
    let out = scratch("nginx-polls");
    let mut options = small_run_with(
        "poll",
        20,
        &[
            (VIA.name, &["nginx-buffered"]),
            ("poll-interval", &["200ms"]),
        ],
        &out,
    );
    options.scenario.subscribers = vec![150];
    // Long enough for 150 polling subscribers on a busy machine; short enough that a stream
    // that never starts fails the test soon.
    options.scenario.timeout = std::time::Duration::from_secs(60);
    let outcome = run(options).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    let [row] = &results.runs[..] else {
        panic!("{} rows, not one", results.runs.len());
    };
    assert!(!row.failed, "{:?}", row.error);
    assert_eq!((row.events_delivered, row.lost), (150 * 20, 0));
    assert!(row.digest_ok);
    let _ = std::fs::remove_dir_all(&out);
}

/// With the server in a network namespace whose veth link drops 2% of packets each way
/// (`scripts/netns-link`), TCP's retransmissions still deliver the identical stream: loss
/// costs latency, not events. Needs root and `ip netns`, so it is not run by default:
/// `cargo test --test run -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, ip netns and iptables"]
async fn a_lossy_link_costs_latency_not_events() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns-link");
    let up = Command::new(script)
        .args(["up", "pbtest", "--loss", "2"])
        .status()
        .unwrap();
    assert!(up.success(), "scripts/netns-link up failed");
    let out = scratch("netns");
    let mut options = small_run("websocket,tcp", &out, Path::new(BIN));
    options.scenario = Settings {
        server_netns: Some("pbtest".into()),
        transports: Some("websocket,tcp".parse().unwrap()),
        subscribers: Some(Counts(vec![2])),
        rate: Some(Rate::PerSecond(500.0)),
        events: Some(1000),
        ..Settings::default()
    }
    .resolve()
    .unwrap();
    let outcome = run(options).await;
    let _ = Command::new(script).args(["down", "pbtest"]).status();
    let results = Results::read(&outcome.unwrap().path).unwrap();
    for row in &results.runs {
        assert!(
            !row.failed && row.digest_ok,
            "{}: {:?}",
            row.key.transport,
            row.error
        );
        assert_eq!(row.lost, 0, "{}", row.key.transport);
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Transport settings given to `run` reach the server and load processes over the protocol,
/// and results.json records what those processes reported running with: a non-default poll
/// interval, and a long-poll hold swept over two values, each its own row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_reach_the_children_and_the_results() {
    let out = scratch("settings");
    let options = small_run_with(
        "longpoll,poll",
        300,
        &[
            ("longpoll-hold", &["2s", "45s"]),
            ("poll-interval", &["20ms"]),
        ],
        &out,
    );
    let outcome = run(options).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    // What each row's processes reported for the setting given, and the swept ones.
    let reported = |r: &pushbench::results::TransportResult, name: &str| {
        r.settings.0.get(name).cloned().unwrap_or_default()
    };
    let rows: Vec<(&str, String, String, String)> = results
        .runs
        .iter()
        .map(|r| {
            let own = if r.key.transport.name() == "poll" {
                "poll-interval"
            } else {
                "longpoll-hold"
            };
            let resume = reported(r, "resume");
            (
                r.key.transport.name(),
                reported(r, own),
                resume,
                r.key.variant.label(),
            )
        })
        .collect();
    let row = |t, value: &str, variant: &str| {
        (t, value.to_string(), "on".to_string(), variant.to_string())
    };
    assert_eq!(
        rows,
        [
            row("longpoll", "2s", "longpoll-hold=2s"),
            row("longpoll", "45s", "longpoll-hold=45s"),
            row("poll", "20ms", ""),
        ]
    );
    assert!(results.runs.iter().all(|r| !r.failed));
    assert_eq!(results.scenario.settings["longpoll-hold"], ["2s", "45s"]);
    let _ = std::fs::remove_dir_all(out);
}

/// A run over two transports writes results.json whose figures match what was delivered, and
/// which round-trips unchanged through the typed schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_round_trip_through_the_schema() {
    let out = scratch("roundtrip");
    let outcome = run(small_run("tcp,sse", &out, Path::new(BIN)))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&outcome.path).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let typed: Results = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        value,
        "round trip changed the results"
    );
    assert!(typed.complete);
    assert_eq!(typed.schema_version, pushbench::results::SCHEMA_VERSION);
    assert_eq!(typed.runs.len(), 2);
    for result in &typed.runs {
        assert!(
            result.digest_ok && !result.failed,
            "{}: {:?}",
            result.key.transport,
            result.error
        );
        assert_eq!(
            (result.events_expected, result.events_delivered),
            (600, 600)
        );
        assert_eq!(result.lost + result.duplicated + result.reordered, 0);
        assert!(
            result.connection.wire_bytes_per_event > 64.0,
            "{}",
            result.key.transport
        );
        let histogram = pushbench::metrics::latency::decode(&result.histograms.latency_us).unwrap();
        assert_eq!(histogram.len(), 600);
    }
    assert!(typed.calibration.rtt_us.p50 > 0);
    let _ = std::fs::remove_dir_all(out);
}

/// Subscribers spread over two load worker processes: each worker checks its subscribers'
/// digests, the parent merges their parts, and the row says two workers delivered everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_load_workers_share_the_subscribers() {
    let out = scratch("workers");
    let mut options = small_run("tcp,websocket", &out, Path::new(BIN));
    options.scenario.subscribers = vec![5];
    options.scenario.load_workers = Some(2);
    let outcome = run(options).await.unwrap();
    for result in &outcome.results.runs {
        assert_eq!(result.load_workers, Some(2), "{}", result.key.transport);
        assert!(result.digest_ok && !result.failed, "{:?}", result.error);
        assert_eq!(result.events_delivered, 5 * 300);
        assert!(result.last_receiver_us.is_some());
        assert!(result.publisher_lateness_us.is_some());
        assert!(result.bound.is_some());
        let log = outcome
            .path
            .parent()
            .unwrap()
            .join(result.interval_log.as_ref().unwrap());
        assert!(std::fs::read_to_string(log)
            .unwrap()
            .contains("#[StartTime:"));
    }
    let _ = std::fs::remove_dir_all(out);
}

/// The committed JSON Schema is the one the types generate (regenerate with
/// `PUSHBENCH_WRITE_SCHEMA=1 cargo test --test run`).
#[test]
fn committed_schema_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results.schema.json");
    let generated = serde_json::to_string_pretty(&Results::schema()).unwrap() + "\n";
    if std::env::var_os("PUSHBENCH_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert_eq!(committed, generated, "docs/results.schema.json is stale");
}

/// The results.json of the first run directory under `dir`.
fn results_in(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("results.json"))
        .find(|p| p.exists())
        .expect("a run's results.json")
}

/// A stand-in for the pushbench binary at `path` that runs the real one, except that the
/// `target`-th child `run` starts (counting from 1: the first row's server, then its load
/// workers) does `act` instead, once it has read its job; every child's PID goes into `pids`.
fn failing_pushbench(path: &Path, target: u32, act: &str) -> std::path::PathBuf {
    let dir = path.parent().unwrap();
    let (count, pids) = (dir.join("children"), dir.join("pids"));
    std::fs::write(
        path,
        format!(
            "#!/bin/sh\necho $$ >> {pids}\nif [ \"$1\" = worker ]; then\n  echo x >> {count}\n  \
             if [ \"$(wc -l < {count})\" -eq {target} ]; then read job; {act}; fi\nfi\n\
             exec {BIN} \"$@\"\n",
            pids = pids.display(),
            count = count.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    pids
}

/// Every process the run started has ended by the time it returns (waiting a moment for the
/// kernel to reap what was just killed).
fn assert_all_ended(pids: &Path) {
    let pids = std::fs::read_to_string(pids).unwrap();
    for pid in pids.lines() {
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.split(") ").nth(1).unwrap_or("").starts_with('Z'))
        };
        for _ in 0..50 {
            if !alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(!alive(), "child {pid} of the run is still running");
    }
}

/// A server that crashes fails its row, with its stderr, and the run goes on: the next
/// transport is measured, the results are complete, and no child is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_server_fails_its_row_and_the_run_goes_on() {
    let out = scratch("crash");
    let fake = out.join("crashing-pushbench");
    let act = "echo '{\"report\":\"listening\",\"addr\":\"127.0.0.1:9\"}'; \
               echo 'thread main panicked: simulated crash' >&2; exit 101";
    let pids = failing_pushbench(&fake, 1, act);
    let outcome = run(small_run("tcp,websocket", &out, &fake)).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    assert!(results.complete);
    assert_eq!(results.runs.len(), 2);
    let (crashed, measured) = (&results.runs[0], &results.runs[1]);
    assert_eq!(crashed.key.transport.name(), "tcp");
    assert!(crashed.failed);
    let error = crashed.error.as_deref().unwrap_or_default();
    assert!(error.contains("simulated crash"), "{error}");
    assert_eq!(crashed.events_delivered, 0);
    assert_eq!(measured.key.transport.name(), "websocket");
    assert!(!measured.failed, "{:?}", measured.error);
    assert!(measured.digest_ok);
    assert_all_ended(&pids);
    let _ = std::fs::remove_dir_all(out);
}

/// The first row's load worker killed (SIGKILL) mid-run: its row fails with the reason, the
/// second row is measured, every child is gone, and `run` exits non-zero for the failed row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_load_worker_fails_its_row_and_the_run_goes_on() {
    let out = scratch("killed-worker");
    let fake = out.join("killing-pushbench");
    let pids = failing_pushbench(&fake, 2, "kill -9 $$");
    let outcome = run(small_run("sse,tcp", &out, &fake)).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    assert!(results.complete);
    assert_eq!(results.runs.len(), 2);
    assert!(results.runs[0].failed);
    let error = results.runs[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("load worker"), "{error}");
    assert!(!results.runs[1].failed, "{:?}", results.runs[1].error);
    assert_all_ended(&pids);
    // The results load and report, the failed row shown as such.
    let report = Command::new(BIN)
        .args(["report"])
        .arg(outcome.path.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let markdown = std::fs::read_to_string(outcome.path.with_file_name("report.md")).unwrap();
    assert!(
        markdown.contains("FAILED"),
        "the report shows the failed row"
    );
    let _ = std::fs::remove_dir_all(out);
}

/// A results directory on a full disk: writing fails with the reason, the last good
/// results.json stays as it was, and no half-written copy is left. A 64 KiB tmpfs, where this
/// machine lets us mount one.
#[test]
fn a_full_disk_keeps_the_last_results_intact() {
    let dir = scratch("full-disk");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "pushbench-full"])
        .arg(&dir)
        .status()
        .is_ok_and(|status| status.success());
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and can mount a tmpfs"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let committed = results_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
    let mut results = Results::read(&committed).unwrap();
    results.runs.truncate(1);
    let written = results.write(&dir).unwrap();
    let good = std::fs::read(&written).unwrap();
    // Enough rows to pass 64 KiB.
    let row = results.runs[0].clone();
    results.runs = vec![row; 200];
    let error = results.write(&dir).unwrap_err();
    let kept = std::fs::read(&written);
    let leftover = dir.join(".results.json.tmp").exists();
    let _ = Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(error.raw_os_error(), Some(28), "no space left: {error}");
    assert!(
        kept.is_ok_and(|kept| kept == good),
        "the last good results.json changed"
    );
    assert!(!leftover, "a half-written copy was left");
}

/// The soak preset, scaled to 12 s (CI's version) on one transport: the
/// server sampled every 3 s through the stream with the preset's drops and slow consumer. Each
/// row has its samples (memory, descriptors, CPU per delivery after the first), a trend with a
/// verdict, and the report shows them in their section with their charts.
#[test]
fn the_soak_samples_the_server_through_the_stream() {
    let out = scratch("soak");
    let output = Command::new(BIN)
        .args([
            "run",
            "--scenario",
            "scenarios/soak.toml",
            "--transports",
            "tcp",
        ])
        .args([
            "--duration",
            "12",
            "--subscribers",
            "50",
            "--resources-every",
            "3",
        ])
        .args(["--drop-every", "5s", "--out"])
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let results_path = results_in(&out);
    let results = Results::read(&results_path).unwrap();
    assert_eq!(results.scenario.resources_every.as_secs(), 3);
    assert_eq!(results.runs.len(), 1);
    for row in &results.runs {
        let t = &row.key.transport;
        assert!(!row.failed, "{t}: {:?}", row.error);
        let samples = &row.resources_over_time;
        // 12 s sampled at 0.75 s, 3.75 s, ... : four samples, each later than the last.
        assert!((4..=6).contains(&samples.len()), "{t}: {samples:?}");
        assert!(samples.windows(2).all(|w| w[0].at_ms < w[1].at_ms), "{t}");
        assert!(
            samples.iter().all(|s| s.rss_bytes > 0 && s.open_fds >= 50),
            "{t}"
        );
        assert_eq!(
            samples[0].cpu_us_per_delivery, None,
            "{t}: the first has no interval"
        );
        assert!(samples[1..].iter().all(|s| s.deliveries > 0), "{t}");
        let delivered: u64 = samples.iter().map(|s| s.deliveries).sum();
        assert!(delivered <= row.events_delivered, "{t}");
        let trend = row.resource_trend.as_ref().expect("a trend");
        assert!(trend.samples >= 3 && trend.rss_plateau_bytes > 0.0, "{t}");
    }
    let report = std::fs::read_to_string(results_path.with_file_name("report.md")).unwrap();
    assert!(report.contains("Resources over time"), "{report}");
    assert!(report.contains("RSS slope / 10 min"));
    let _ = std::fs::remove_dir_all(out);
}

/// A scenario file with a misspelt key fails before anything runs, naming the key and line.
#[test]
fn bad_scenario_file_names_key_and_line() {
    let dir = scratch("scenario");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "rate = 100\nsubscriber = 5\n").unwrap();
    let output = Command::new(BIN)
        .args(["run", "--scenario"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("subscriber"),
        "{stderr}"
    );
    let output = Command::new(BIN)
        .args(["run", "--subscribers", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 1"));
    let _ = std::fs::remove_dir_all(dir);
}

/// `pushbench run` as a user runs it ends with the report beside the results, and says where.
#[test]
fn cli_run_writes_the_report() {
    let out = scratch("cli-report");
    let output = Command::new(BIN)
        .args([
            "run",
            "--transports",
            "tcp,websocket",
            "--subscribers",
            "2",
            "--rate",
            "500",
        ])
        .args(["--events", "300", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let html = stdout
        .lines()
        .find_map(|l| l.strip_prefix("report:"))
        .map(|p| PathBuf::from(p.trim()))
        .unwrap_or_else(|| panic!("no report line in:\n{stdout}"));
    let markdown = std::fs::read_to_string(html.with_file_name("report.md")).unwrap();
    let page = std::fs::read_to_string(&html).unwrap();
    for text in [&markdown, &page] {
        assert!(text.contains("websocket") && text.contains("tcp"));
    }
    assert!(page.contains("<figure id=\"plot-spectrum\""));
    assert!(html.with_file_name("plots").join("spectrum.svg").is_file());
    let _ = std::fs::remove_dir_all(out);
}

/// In a run over several transports a setting applies to those that take it; the others run
/// once without it, and their rows say which settings did not apply (in results, the table
/// and the report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_applies_where_it_is_taken() {
    use pushbench::harness::settings::settings_of;
    use pushbench::transport::compression::COMPRESSION;
    use pushbench::transport::Transport;
    let takes = |t: Transport| settings_of(t).iter().any(|s| s.name() == COMPRESSION.name);
    let taker = Transport::ALL.iter().copied().find(|&t| takes(t)).unwrap();
    let Some(other) = Transport::ALL.iter().copied().find(|&t| !takes(t)) else {
        return;
    };
    let out = std::env::temp_dir().join(format!("pushbench-test-applies-{}", std::process::id()));
    let transports = format!("{taker},{other}");
    let options = small_run_with(&transports, 200, &[(COMPRESSION.name, &["deflate"])], &out);
    let outcome = run(options).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    assert_eq!(
        results.runs.len(),
        2,
        "one row each: the other is not swept"
    );
    for row in &results.runs {
        assert!(!row.failed, "{}: {:?}", row.key.transport, row.error);
        if row.key.transport == taker {
            assert!(row.not_applied.is_empty());
            assert_eq!(
                row.settings.0.get(COMPRESSION.name).map(String::as_str),
                Some("deflate")
            );
        } else {
            assert_eq!(row.not_applied, [COMPRESSION.name]);
            assert!(!row.settings.0.contains_key(COMPRESSION.name));
        }
    }
    let table = pushbench::report::table::render(&results);
    assert!(
        table.contains(&format!(
            "{other} with 2 subscribers ran without --compression"
        )),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// A sweep over several transports' implementations gives each transport the ones it has,
/// each row naming them; a transport with none of them runs its own and its rows say so. A
/// name none of the run's transports has on that side, or a library asked for what it cannot
/// do, is refused before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transport_runs_the_implementations_it_has() {
    let several = |t: &&Transport| t.spec().servers.len() > 1;
    let with_libraries: Vec<Transport> = Transport::ALL.iter().filter(several).copied().collect();
    let Some(alone) = Transport::ALL
        .iter()
        .copied()
        .find(|t| t.spec().servers.len() == 1)
    else {
        return;
    };
    let names: Vec<&str> = with_libraries
        .iter()
        .flat_map(|t| t.spec().servers.iter().map(|s| s.name))
        .collect();
    let mut names = names;
    names.sort_unstable();
    names.dedup();
    let transports: Vec<String> = with_libraries
        .iter()
        .chain([&alone])
        .map(ToString::to_string)
        .collect();
    let out = scratch("implementations");
    let options = small_run_with(
        &transports.join(","),
        100,
        &[(SERVER_IMPL.name, &names)],
        &out,
    );
    let outcome = run(options).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    let mut ran: Vec<(Transport, String)> = results
        .runs
        .iter()
        .map(|row| (row.key.transport, row.key.server_impl.clone()))
        .collect();
    ran.sort();
    let mut expected: Vec<(Transport, String)> = with_libraries
        .iter()
        .flat_map(|&t| t.spec().servers.iter().map(move |s| (t, s.name.to_owned())))
        .chain([(alone, OWN.to_owned())])
        .collect();
    expected.sort();
    assert_eq!(ran, expected);
    for row in &results.runs {
        assert!(!row.failed, "{}: {:?}", row.key.label(), row.error);
        let applied = row.key.transport != alone;
        assert_eq!(row.not_applied.is_empty(), applied, "{}", row.key.label());
    }
    let _ = std::fs::remove_dir_all(&out);

    let refused = |transports: &str, given: &[(&str, &[&str])]| {
        let options = small_run_with(transports, 10, given, &out);
        async move {
            run(options)
                .await
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        }
    };
    // Another transport's library, for one that takes the setting.
    let foreign = with_libraries.iter().find_map(|&t| {
        let own = |name: &str| t.spec().servers.iter().any(|s| s.name == name);
        names.iter().find(|n| !own(n)).map(|name| (t, *name))
    });
    if let Some((transport, name)) = foreign {
        let why = refused(&transport.to_string(), &[(SERVER_IMPL.name, &[name])]).await;
        assert!(
            why.contains(&format!("none of {transport} has it")),
            "{why}"
        );
    }
    // A client's name given for the server.
    let client_only = Transport::ALL
        .iter()
        .flat_map(|t| t.spec().clients.iter().map(move |c| (*t, c.name)))
        .find(|(t, name)| !t.spec().servers.iter().any(|s| s.name == *name) && *name != OWN);
    if let Some((transport, name)) = client_only {
        let wrong_side = refused(&transport.to_string(), &[(SERVER_IMPL.name, &[name])]).await;
        assert!(
            wrong_side.contains(&format!("--server-impl {name}")),
            "{wrong_side}"
        );
    }
    // A library that cannot compress, asked to.
    let deflate = SettingValues::from_pairs([COMPRESSION.set(Compression::Deflate)]);
    let unable = with_libraries
        .iter()
        .flat_map(|&t| t.spec().servers.iter().map(move |s| (t, s)))
        .find_map(|(t, s)| (s.refuses)(&deflate).map(|why| (t, s.name, why)));
    if let Some((transport, name, why)) = unable {
        let given: &[(&str, &[&str])] = &[
            (SERVER_IMPL.name, &[name]),
            (COMPRESSION.name, &["deflate"]),
        ];
        let refusal = refused(&transport.to_string(), given).await;
        assert!(refusal.contains(&why), "{refusal}");
    }
}

/// Workload shapes through `run`, its server child and load workers: each shape is a row of
/// its own, keyed by shape and parameters, every subscriber gets exactly its streams, the
/// offered rate is each stream's, and the row records what the server published beside what
/// was delivered. Rooms' parameters without a `topics` shape are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_shapes_are_rows_of_their_own() {
    use pushbench::results::key::Shape;
    use pushbench::scenario::Shapes;
    let out = scratch("workloads");
    let mut options = small_run_with("websocket,sse", 100, &[], &out);
    options.scenario.workloads = Settings {
        workload: Some("broadcast,topics,unicast".parse::<Shapes>().unwrap()),
        topics: Some(3),
        topics_per_subscriber: Some(2),
        ..Settings::default()
    }
    .resolve()
    .unwrap()
    .workloads;
    let outcome = run(options).await.unwrap();
    let results = Results::read(&outcome.path).unwrap();
    assert_eq!(results.runs.len(), 6);
    for row in &results.runs {
        assert!(!row.failed, "{}: {:?}", row.key.label(), row.error);
        assert_eq!(row.offered_rate, Rate::PerSecond(500.0));
        let (per_subscriber, streams) = match row.key.workload.shape {
            Shape::Broadcast => (100, 1.0),
            Shape::Topics => (200, 3.0),
            Shape::Unicast => (100, 2.0),
        };
        assert_eq!(
            row.events_expected,
            2 * per_subscriber,
            "{}",
            row.key.label()
        );
        assert_eq!(row.events_delivered, row.events_expected);
        let published = row.throughput.published_per_s.unwrap();
        // The server published `streams` streams of 100 events; deliveries differ by shape.
        let ratio = row.throughput.events_per_s / published;
        let expected = (2 * per_subscriber) as f64 / (100.0 * streams);
        assert!(
            (ratio - expected).abs() < 1e-6,
            "{}: {ratio}",
            row.key.label()
        );
    }
    let refused = Settings {
        topics: Some(3),
        ..Settings::default()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(refused.contains("--workload topics"), "{refused}");
}

/// `--server-cpu-limit` puts every process of the server in a cgroup with that CFS quota, as a
/// Kubernetes CPU limit would: the row records the limit, and the server's CPU share, taken of
/// the limit, stays within it while 40 subscribers at 2,000 ev/s ask more of it than 0.05 of a
/// core gives. On a machine where no cgroup can be written the run is refused, naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_limit_holds_the_server_to_its_quota() {
    use pushbench::harness::cpu_limit::{CpuLimit, CGROUP_ROOT};
    let out = scratch("cpu-limit");
    let settings = Settings {
        transports: Some("websocket".parse::<TransportSet>().unwrap()),
        subscribers: Some(Counts(vec![40])),
        rate: Some(Rate::PerSecond(2_000.0)),
        events: Some(2_000),
        transport_settings: SettingFlags::<RUN> {
            given: [("server-cpu-limit".to_string(), vec!["0.05".to_string()])].into(),
        },
        ..Settings::default()
    };
    let options = RunOptions {
        scenario: settings.resolve().unwrap(),
        out: out.to_path_buf(),
        exe: Path::new(BIN).to_owned(),
        pin: false,
    };
    let can_limit = CpuLimit::create(
        Path::new(CGROUP_ROOT),
        &format!("pushbench-test-{}", std::process::id()),
        0.05,
    )
    .is_ok();
    match run(options).await {
        Ok(outcome) => {
            assert!(can_limit, "a limit was accepted where none can be made");
            let results = Results::read(&outcome.path).unwrap();
            let row = &results.runs[0];
            assert!(!row.failed, "{:?}", row.error);
            assert_eq!(row.settings.0["server-cpu-limit"], "0.05");
            let share = row.server_cpu_share.expect("the server's CPU was measured");
            assert!(
                share <= 1.1,
                "the server used {share} of its 0.05-core limit"
            );
        }
        Err(refused) => {
            assert!(!can_limit, "refused where a limit can be made: {refused:#}");
            assert!(format!("{refused:#}").contains("--server-cpu-limit 0.05"));
        }
    }
    let _ = std::fs::remove_dir_all(out);
}

/// What an idle connection costs the server stays within its budget: 2,000 subscribers held
/// idle for a second on each transport that keeps a connection per subscriber, the server's
/// RSS growth divided by them. The budgets are for this test build (its futures are not the
/// release build's, which the idle-connections preset measures). On hyper's connections, over
/// six runs, three of them beside a release build: websocket 5.4 to 5.9 KiB, sse 12.1 to 12.2,
/// longpoll 12.9 to 13.1 (0.5 KiB more under load). SSE and long polling now run on the lean
/// connection (`transport/http1_server/`), which keeps no buffer while it waits: over six runs,
/// sse 4.99 to 5.11 KiB, longpoll 4.84 to 4.97, websocket 5.74 to 6.07. Each budget sits above
/// that spread and far below what these servers read on hyper's connection, on which the test
/// fails. The regression it was first written for: commit be793b2 inlined an HTTP/2
/// connection's state into every HTTP/1 connection's task (twice over: moved into the function
/// that drove it), 2.4 KiB more each here, over the budgets hyper's connections had (sse 12.75,
/// longpoll 13.6). RSS grows by whole pages, but over 2,000 connections a page is 2 bytes each,
/// and what an idle connection holds (its buffers, its task, its stream) does not depend on
/// timing; what the allocator keeps around it does, a little: beside a busy neighbour (clippy
/// checking while the other tests ran, in CI) sse read 12.7 and longpoll 13.65 on hyper. So
/// `scripts/test` runs this test alone, after the rest, rather than loosen the budgets until the
/// state inlined once would pass.
///
/// The load's side is held the same way, its workers' RSS growth per subscriber: measured here
/// over three runs, websocket 18.6 to 19.4 KiB, sse 16.9, longpoll 15.7 to 15.8. Its budgets sit
/// about 2 KiB above, below what the clients on hyper's connection read here under SSE and long
/// polling (26.7 and 26.0 KiB: its two 8 KiB buffers and a channel block), on which it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_costs_the_server_no_more_than_its_budget() {
    // Server and load, KiB per idle subscriber.
    const BUDGET_KIB: [(&str, f64, f64); 3] = [
        ("websocket", 6.5, 21.5),
        ("sse", 6.25, 19.0),
        ("longpoll", 6.25, 18.0),
    ];
    let out = scratch("idle-memory");
    let settings = Settings {
        transports: Some("websocket,sse,longpoll".parse::<TransportSet>().unwrap()),
        subscribers: Some(Counts(vec![2000])),
        rate: Some(Rate::PerSecond(10.0)),
        events: Some(10),
        idle: Some(1.0),
        ..Settings::default()
    };
    let options = RunOptions {
        scenario: settings.resolve().unwrap(),
        out: out.to_path_buf(),
        exe: Path::new(BIN).to_owned(),
        pin: false,
    };
    let outcome = run(options).await.unwrap();
    let mut over = Vec::new();
    for (transport, budget, load_budget) in BUDGET_KIB {
        let row = outcome
            .results
            .runs
            .iter()
            .find(|r| r.key.transport.name() == transport)
            .unwrap();
        assert!(!row.failed, "{transport}: {:?}", row.error);
        let kib = row.connection.server_rss_per_conn_bytes.unwrap() / 1024.0;
        eprintln!("{transport}: {kib:.2} KiB per idle connection (budget {budget} KiB)");
        if kib > budget {
            over.push(format!("{transport} {kib:.2} KiB, over its {budget} KiB"));
        }
        let load = row.connection.client_rss_per_conn_bytes / 1024.0;
        eprintln!(
            "{transport}: the load's {load:.2} KiB per subscriber (budget {load_budget} KiB)"
        );
        if load > load_budget {
            over.push(format!(
                "{transport}'s load {load:.2} KiB per subscriber, over its {load_budget} KiB"
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    assert!(over.is_empty(), "RSS per idle connection: {over:?}");
}
