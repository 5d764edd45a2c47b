//! The binary as a user meets it: `pushbench serve` as a process of its own, and bad flags.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{assert_identical, spec, BIN, TIMEOUT};
use pushbench::harness::{run_subscribers, RecordPlan};
use pushbench::protocol::{self, Report};
use pushbench::transport::{ClientConfig, Side, Transport};

/// An unknown transport name fails with clap's usage exit code and lists every valid name.
#[test]
fn unknown_transport_lists_the_valid_ones() {
    let output = Command::new(BIN)
        .args(["serve", "--transport", "carrier-pigeon"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid value 'carrier-pigeon' for '--transport <TRANSPORT>'"),
        "{stderr}"
    );
    for &transport in Transport::ALL {
        assert!(stderr.contains(transport.name()), "{stderr}");
    }
}

/// Impossible stream flags are refused before anything runs, saying why.
#[test]
fn impossible_streams_say_why() {
    for (flags, expect) in [
        (vec!["--events", "0"], "at least one event"),
        (vec!["--payload", "99999999"], "exceeds the maximum"),
        (vec!["--rate", "fast"], "invalid rate \"fast\""),
        (
            vec!["--start-after", "0"],
            "--start-after must be at least 1",
        ),
    ] {
        let output = Command::new(BIN)
            .args(["serve", "--transport", "tcp"])
            .args(&flags)
            .output()
            .unwrap();
        assert_ne!(output.status.code(), Some(0), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expect), "{flags:?}: {stderr}");
    }
}

/// A port in use is named in the error.
#[test]
fn port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(BIN)
        .args(["serve", "--transport", "sse", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

/// `pushbench serve --json` in its own process says where it listens (and the credentials it
/// made) in the typed protocol, delivers the identical stream to subscribers in this one, for
/// every transport, reports its stats last, and exits 0 once they have it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_process_delivers_and_exits() {
    let spec = spec(2000, "64");
    for &transport in Transport::ALL {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--transport",
                transport.name(),
                "--events",
                "2000",
                "--payload",
                "64",
            ])
            .args([
                "--seed",
                "42",
                "--start-after",
                "2",
                "--drain-timeout",
                "30",
                // Its consumers are on loopback.
                "--allow-private-targets",
                "--json",
            ])
            .stdout(Stdio::piped())
            // Sentences go to stderr with --json; the reports on stdout are what is checked.
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut config = ClientConfig::default();
        let addr = loop {
            let line = lines.next().expect("serve reported its address").unwrap();
            match protocol::parse::<Report>(&line).unwrap() {
                Report::Credentials { made } => config.credentials = made,
                Report::Listening {
                    addr,
                    settings,
                    cert_sha256,
                    ..
                } => {
                    // Trusted by the hash it announced, as a browser's WebTransport would
                    // (only a transport always on TLS reads it).
                    config.tls.trusted_hashes = cert_sha256.into_iter().collect();
                    // It says what it runs with: every server setting of its transport.
                    let mut declared: Vec<&str> = transport
                        .settings()
                        .into_iter()
                        .filter(|s| s.side().reaches(Side::Server))
                        .map(|s| s.name())
                        .collect();
                    declared.sort();
                    let reported: Vec<&str> = settings.0.keys().map(String::as_str).collect();
                    assert_eq!(reported, declared, "{transport}");
                    break addr;
                }
                other => panic!("{transport}: {other:?} before listening"),
            }
        };
        let records = run_subscribers(
            transport,
            &addr.into(),
            2,
            0,
            &RecordPlan::new(spec.count, spec.rate, 0, 0),
            &config,
            TIMEOUT,
        )
        .await;
        assert_identical(transport, &spec, &records);
        let stats = lines
            .map(|line| protocol::parse::<Report>(&line.unwrap()).unwrap())
            .find_map(|report| match report {
                Report::Stats(stats) => Some(stats),
                _ => None,
            })
            .expect("stats reported last");
        assert_eq!(stats.published, 2000, "{transport}");
        assert_eq!(stats.left_connected, 0, "{transport}");
        let status = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    return Some(status);
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        assert_eq!(
            status.map(|s| s.code()),
            Some(Some(0)),
            "{transport} serve exit"
        );
    }
}

/// Starts `pushbench serve` with `args` and returns it with the lines it printed up to the
/// first that holds `until` (sentences, as a user sees them).
fn serve_printing(args: &[&str], until: &str) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut printed = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains(until);
        printed.push(line);
        if done {
            break;
        }
    }
    // The rest is read (and dropped) so that serve's later lines have somewhere to go.
    std::thread::spawn(move || lines.for_each(drop));
    (child, printed)
}

/// The two halves over TLS as a user runs them on two hosts: `serve --write-cert` writes its
/// self-signed certificate and `load --ca` trusts it; for webhooks both sides are given one
/// certificate and key (the consumers serve HTTPS with it, the provider trusts it), the secret
/// travels in the environment and the registration token in a file, never argv. Every
/// subscriber gets the identical stream (`load` exits 0 only then).
#[test]
fn serve_and_load_over_tls() {
    let dir = common::scratch("tls-cli");
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let stream = ["--events", "500", "--payload", "64", "--seed", "7"];
    let secured = Transport::ALL.iter().filter(|t| {
        t.spec()
            .settings
            .iter()
            .any(|s| s.name() == pushbench::transport::tls::TLS.name)
    });
    for &transport in secured {
        let name = transport.name();
        let cert = path("cert.pem");
        let mut serve_args = vec!["--transport", name, "--tls", "on", "--start-after", "2"];
        serve_args.extend(stream);
        let mut load_args = vec!["load", "--transport", name, "--tls", "on", "--ca", &cert];
        load_args.extend(stream);
        load_args.extend(["--subscribers", "2"]);
        let (key, token_file) = (path("key.pem"), path("token"));
        if transport.traits().needs_inbound_http {
            let material = pushbench::transport::tls::TlsMaterial::self_signed(&[]).unwrap();
            std::fs::write(&cert, material.cert_pem.unwrap().as_bytes()).unwrap();
            std::fs::write(&key, material.key_pem.unwrap().as_bytes()).unwrap();
            serve_args.extend([
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--allow-private-targets",
            ]);
            load_args.extend(["--tls-cert", &cert, "--tls-key", &key]);
            load_args.extend(["--registration-token-file", &token_file]);
        } else {
            serve_args.extend(["--write-cert", &cert]);
        }
        let (mut server, printed) = serve_printing(&serve_args, " listening on ");
        let addr = printed.last().unwrap();
        let addr = addr.split(" listening on ").nth(1).unwrap().to_owned();
        let said = |prefix: &str| {
            printed
                .iter()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_default()
                .to_owned()
        };
        std::fs::write(&token_file, said("registration token: ")).unwrap();
        let load = Command::new(BIN)
            .args(&load_args)
            .args(["--target", &addr])
            .env("PUSHBENCH_WEBHOOK_SECRET", said("webhook secret: "))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&load.stdout);
        assert!(
            load.status.success(),
            "{name}: {out}{}",
            String::from_utf8_lossy(&load.stderr)
        );
        assert!(out.contains("2 of 2 (digest"), "{name}: {out}");
        // MQTT's client does its TLS itself (rumqttc), with no hook to time the handshake.
        if name != "mqtt" {
            assert!(out.contains("tls handshake us"), "{name}: {out}");
        }
        assert!(server.wait().unwrap().success(), "{name} serve exit");
    }
}

/// `load --cert-hash` trusts the server by the SHA-256 `serve` prints, over every transport a
/// subscriber dials with TLS (not only WebTransport, whose browsers trust that way): every
/// subscriber gets the identical stream; a hash of another certificate is refused, and
/// nothing is delivered.
#[test]
fn load_trusts_the_server_by_the_hash_it_prints() {
    let stream = ["--events", "200", "--payload", "64", "--seed", "7"];
    let dialed = Transport::ALL.iter().filter(|t| {
        let tls = pushbench::transport::tls::TLS.name;
        t.spec().settings.iter().any(|s| s.name() == tls) && !t.traits().needs_inbound_http
    });
    let other = pushbench::transport::tls::TlsMaterial::self_signed(&[])
        .unwrap()
        .cert_hash()
        .unwrap();
    for &transport in dialed {
        let name = transport.name();
        for trusted in [true, false] {
            let mut serve_args = vec!["--transport", name, "--tls", "on", "--start-after", "2"];
            serve_args.extend(stream);
            let (mut server, printed) = serve_printing(&serve_args, "certificate SHA-256: ");
            let addr = printed
                .iter()
                .find_map(|l| l.split(" listening on ").nth(1));
            let addr = addr.unwrap().to_owned();
            let printed_hash = printed
                .iter()
                .find_map(|l| l.strip_prefix("certificate SHA-256: "))
                .unwrap_or_else(|| panic!("{name}: serve printed no hash: {printed:?}"));
            let hash = if trusted { printed_hash } else { &other };
            let load = Command::new(BIN)
                .args([
                    "load",
                    "--transport",
                    name,
                    "--tls",
                    "on",
                    "--cert-hash",
                    hash,
                ])
                .args(stream)
                .args(["--subscribers", "2", "--timeout", "20", "--target", &addr])
                .output()
                .unwrap();
            let out = String::from_utf8_lossy(&load.stdout);
            let err = String::from_utf8_lossy(&load.stderr);
            assert_eq!(load.status.success(), trusted, "{name}: {out}{err}");
            if trusted {
                assert!(out.contains("2 of 2 (digest"), "{name}: {out}");
                assert!(server.wait().unwrap().success(), "{name} serve exit");
            } else {
                assert!(out.contains("0 of 2 (digest"), "{name}: {out}");
                assert!(out.contains("invalid peer certificate"), "{name}: {out}");
                server.kill().unwrap();
                server.wait().unwrap();
            }
        }
    }
}

/// A setting no selected transport takes is refused before anything runs, naming the setting
/// and the transports that would take it; `serve` and `load` refuse it for their transport
/// too. The transport is the first that does not take compression, from the declarations.
#[test]
fn a_setting_no_transport_takes_is_refused() {
    use pushbench::harness::settings::settings_of;
    use pushbench::transport::compression::COMPRESSION;
    let plain = Transport::ALL
        .iter()
        .copied()
        .find(|&t| !settings_of(t).iter().any(|s| s.name() == COMPRESSION.name))
        .expect("a transport without compression");
    // Never made: a refused run must write nothing, so there is nothing to clean up.
    let dir = std::env::temp_dir().join(format!("pushbench-refused-{}", std::process::id()));
    for args in [
        vec![
            "run",
            "--transports",
            plain.name(),
            "--compression",
            "deflate",
            "--events",
            "10",
        ],
        vec![
            "serve",
            "--transport",
            plain.name(),
            "--compression",
            "deflate",
        ],
        vec![
            "load",
            "--transport",
            plain.name(),
            "--compression",
            "deflate",
            "--target",
            "127.0.0.1:9",
        ],
    ] {
        let output = Command::new(BIN)
            .args(&args)
            .args(
                ["--out", dir.to_str().unwrap()]
                    .iter()
                    .filter(|_| args[0] == "run"),
            )
            .output()
            .unwrap();
        assert_ne!(output.status.code(), Some(0), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--compression"), "{args:?}: {stderr}");
        if args[0] == "run" {
            assert!(
                stderr.contains("applies to none of the transports selected"),
                "{stderr}"
            );
        } else {
            assert!(stderr.contains("not a setting here"), "{args:?}: {stderr}");
        }
    }
    assert!(!dir.exists(), "a refused run wrote nothing");
}

/// A closed stdout is no panic: a listing piped into a reader that stops after one line ends
/// at once with success, and a server whose reader went away stops cleanly, as on SIGTERM,
/// when it next has something to say (here, once the stream is published), saying why on
/// stderr.
#[test]
fn a_closed_stdout_ends_commands_cleanly() {
    let mut listing = Command::new(BIN)
        .arg("transports")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(listing.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    let listed = listing.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert!(listed.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let transport = Transport::ALL[0].name();
    let mut server = Command::new(BIN)
        .args([
            "serve",
            "--transport",
            transport,
            "--events",
            "50",
            "--start-after",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map(Result::unwrap)
        .find_map(|l| l.split(" listening on ").nth(1).map(str::to_owned))
        .unwrap();
    // Nobody reads what the server says from here on.
    drop(lines);
    // Whether the subscriber gets the whole stream before the server stops is a race: only
    // that both end is asked.
    let _ = Command::new(BIN)
        .args([
            "load",
            "--transport",
            transport,
            "--events",
            "50",
            "--subscribers",
            "1",
        ])
        .args(["--target", &addr, "--resume", "off"])
        .output()
        .unwrap();
    let served = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&served.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("stdout closed; stopping"), "{stderr}");
}
