//! Shared set-up for the integration tests: a real server on a loopback port, real subscribers,
//! and the checks every delivered stream must pass.

#![allow(dead_code)]

use std::time::Duration;

use pushbench::event::{Rate, StreamSpec};
use pushbench::harness::ledger::SourceDigests;
use pushbench::harness::{deliver_locally, run_subscribers, RecordPlan, SubscriberRecord};
use pushbench::serve::Server;
use pushbench::transport::tls::{TlsMaterial, TLS};
use pushbench::transport::{ClientConfig, ServerConfig, Transport};

/// The `pushbench` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_pushbench");

/// The committed reference run of `preset`: its newest under results/.
pub fn committed(preset: &str) -> std::path::PathBuf {
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let mut runs: Vec<std::path::PathBuf> = std::fs::read_dir(results)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|dir| {
            dir.file_name()
                .is_some_and(|name| name.to_string_lossy().ends_with(&format!("-{preset}")))
        })
        .collect();
    runs.sort();
    runs.pop()
        .unwrap_or_else(|| panic!("no committed run of the {preset} preset"))
}

/// A fresh, empty directory under the system temp dir, named for the test and this process,
/// removed with everything in it when the test is done with it (dropped).
pub fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("pushbench-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// A test's scratch directory ([`scratch`]): used as the path it is, gone once dropped.
#[derive(Debug)]
pub struct Scratch(std::path::PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for Scratch {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The first of `candidates` (a program on PATH, or a path) that runs, for a test that needs a
/// tool from outside the project. Missing, the test is skipped with a note naming the tool and
/// the script that installs it, except under CI (`CI` set), where every tool must be there:
/// there a missing one fails the test.
pub fn needs(tool: &str, candidates: &[&str], install: &str) -> Option<std::path::PathBuf> {
    let found = candidates.iter().find(|candidate| {
        std::process::Command::new(candidate)
            .arg("-h")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok()
    });
    if let Some(found) = found {
        return Some(found.into());
    }
    let why = format!("{tool} is not installed (run {install})");
    assert!(std::env::var_os("CI").is_none(), "{why}, and CI needs it");
    eprintln!("skipped: {why}");
    None
}

/// Held by the tests of a binary that must not share the machine with each other: one that
/// reads a planted delay to a fraction of a millisecond takes it, and so do the others of its
/// binary, which would otherwise run beside it and load the two cores it measures on.
pub static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest any test subscriber may take; far above what a healthy run needs.
pub const TIMEOUT: Duration = Duration::from_secs(240);

/// A reqwest client for the tests' own requests.
pub fn http_client() -> reqwest::Client {
    http_client_builder().build().unwrap()
}

/// A reqwest client builder. reqwest is built with rustls and no crypto provider of its own
/// (the webhook provider's implementation hands it ring, as every transport here uses), so a
/// client made with its defaults needs ring installed as the process's provider first.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// A max-rate stream of `count` events with the given payload sizes.
pub fn spec(count: u64, payload: &str) -> StreamSpec {
    StreamSpec::new(42, count, payload.parse().unwrap(), Rate::Max).unwrap()
}

/// Client settings matching a server's: the secrets its transport shares with subscribers,
/// as a consumer would be told them by its provider.
pub fn client_for(server: &ServerConfig) -> ClientConfig {
    ClientConfig {
        credentials: server.credentials.for_subscribers(),
        // The server's certificate to trust, which a transport always on TLS (QUIC) needs.
        tls: server.tls.clone(),
        ..ClientConfig::default()
    }
}

/// Serves `spec` over `transport` to `subscribers` in-process subscribers and returns their
/// records, after checking the server saw every subscriber leave once it had the stream.
pub async fn deliver(
    transport: Transport,
    spec: &StreamSpec,
    subscribers: usize,
) -> Vec<SubscriberRecord> {
    deliver_with(transport, spec, subscribers, ServerConfig::local(), None).await
}

/// The same with `config` for the server, and TLS on both sides when `tls` is given (a
/// certificate both serve with and trust).
pub async fn deliver_with(
    transport: Transport,
    spec: &StreamSpec,
    subscribers: usize,
    config: ServerConfig,
    tls: Option<&TlsMaterial>,
) -> Vec<SubscriberRecord> {
    let client = client_for(&config);
    deliver_between(transport, spec, subscribers, config, client, tls).await
}

/// The same with `client` for the subscribers (a client implementation of its own, say).
pub async fn deliver_between(
    transport: Transport,
    spec: &StreamSpec,
    subscribers: usize,
    mut config: ServerConfig,
    mut client: ClientConfig,
    tls: Option<&TlsMaterial>,
) -> Vec<SubscriberRecord> {
    if let Some(tls) = tls {
        // A transport always on TLS (QUIC) takes no `tls` setting: only the material.
        if transport.spec().takes(&TLS) {
            config.settings.0.extend([TLS.set(true)]);
            client.settings.0.extend([TLS.set(true)]);
        }
        config.tls = tls.clone();
        client.tls = tls.clone();
    }
    let run = deliver_locally(transport, spec, subscribers, config, client, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        run.left_connected, 0,
        "{transport}: subscribers still counted after the stream"
    );
    run.records
}

/// Every subscriber got the identical stream: source digest, nothing lost, doubled, reordered or
/// malformed, and no error.
pub fn assert_identical(transport: Transport, spec: &StreamSpec, records: &[SubscriberRecord]) {
    assert_identical_under(transport, false, spec, records);
}

/// The same, where the transport's guarantee under its settings lets events overtake each
/// other (`reorders`): then the reordering is allowed, the digest still in sequence order.
pub fn assert_identical_under(
    transport: Transport,
    reorders: bool,
    spec: &StreamSpec,
    records: &[SubscriberRecord],
) {
    let sources = SourceDigests::of(spec);
    for (i, record) in records.iter().enumerate() {
        let counts = record.ledger.counts();
        assert_eq!(record.error, None, "{transport} subscriber {i}");
        assert_eq!(
            record.ledger.lost(),
            0,
            "{transport} subscriber {i} lost events"
        );
        assert_eq!(
            counts.duplicated, 0,
            "{transport} subscriber {i} duplicates"
        );
        if !reorders {
            assert_eq!(counts.reordered, 0, "{transport} subscriber {i} reordered");
        }
        assert_eq!(counts.malformed, 0, "{transport} subscriber {i} malformed");
        assert_eq!(
            counts.received,
            spec.deliveries_per_subscriber(),
            "{transport} subscriber {i} received"
        );
        assert!(
            record.ledger.digests_match(&sources),
            "{transport} subscriber {i} digest"
        );
    }
}

/// A server of `transport` for `spec` on a loopback port.
pub async fn start(transport: Transport, spec: &StreamSpec, config: ServerConfig) -> Server {
    let config = config.serving(spec);
    Server::start(
        transport,
        "127.0.0.1:0".parse().unwrap(),
        spec.count,
        config,
    )
    .await
    .unwrap()
}

/// Waits until `n` subscribers are connected to `server`. A subscriber that gave up, or a
/// server that ended, fails the test here rather than hanging it.
pub async fn until_subscribed(server: &mut Server, n: usize, transport: Transport) {
    match tokio::time::timeout(TIMEOUT, server.wait_for_start(n, Duration::ZERO)).await {
        Ok(Ok(())) => {}
        Ok(Err(ended)) => panic!("{transport}: the server ended before {n} subscribed: {ended:#}"),
        Err(_) => panic!("{transport}: {n} subscribers never connected within {TIMEOUT:?}"),
    }
}

/// Starts `n` subscribers now, publishes once `publish_after` subscribers are connected (`n`,
/// or more where the test holds connections of its own), and returns the `n` records.
pub async fn serve_to(
    server: &mut Server,
    transport: Transport,
    spec: &StreamSpec,
    client: ClientConfig,
    (n, publish_after): (usize, usize),
) -> Vec<SubscriberRecord> {
    let (addr, expected) = (server.addr(), spec.count);
    let load = tokio::spawn(async move {
        let plan = RecordPlan::new(expected, Rate::Max, 0, 0);
        run_subscribers(transport, &addr.into(), n, 0, &plan, &client, TIMEOUT).await
    });
    server.publish(spec, publish_after).await.unwrap();
    load.await.unwrap()
}
