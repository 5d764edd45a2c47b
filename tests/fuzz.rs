//! Fuzzing on the stable toolchain: property tests with arbitrary inputs (proptest) against
//! every parser of network and file bytes. Pure parsers get arbitrary bytes and text (event
//! and gap decoding, webhook secrets, headers and signatures, results histograms and whole
//! results documents, scenario files, setting values, the endpoint address check); the
//! servers get arbitrary request bytes over real loopback connections, and the clients
//! arbitrary answers from a fake server. Nothing may panic (a panic anywhere in the process,
//! a server task included, fails the test) or hang, and each server still serves a real
//! subscriber the identical stream afterwards.
//!
//! Cases per target: proptest's `PROPTEST_CASES` (256 by default; the socket targets run a
//! 64th as many, at least 16). `scripts/fuzz` runs them all far longer.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use axum::http::HeaderMap;
use common::{assert_identical, client_for, spec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use pushbench::event::{Event, Gap, Rate};
use pushbench::harness::{run_subscribers, RecordPlan, TallySink};
use pushbench::metrics::latency;
use pushbench::serve::Server;
use pushbench::transport::compression::Compression;
use pushbench::transport::endpoint::off_limits;
use pushbench::transport::resume::RESUME;
use pushbench::transport::{ClientConfig, Secrets, ServerConfig, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Panics anywhere in this process (server tasks included), counted by a hook.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

/// A runtime for the socket targets, which drive proptest's runner from outside async code.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Cases for the socket targets, which wait on real connections: a 64th of proptest's
/// configured count, at least 16.
fn socket_cases() -> u32 {
    (Config::default().cases / 64).max(16)
}

proptest! {
    /// Arbitrary bytes decode to an event or an error, never a panic; a decoded event
    /// re-encodes to something that decodes to the same event.
    #[test]
    fn event_decoding(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(event) = Event::decode(&bytes) {
            let again = event.encode();
            prop_assert_eq!(Event::decode(&again).unwrap(), event);
        }
        let _ = Gap::decode(&bytes);
    }

    /// Arbitrary bytes, bare or in the envelope of a message up, decode to a message or to
    /// nothing, never a panic; a decoded message re-encodes to the same message, and the
    /// server's ledger takes it whatever its numbers.
    #[test]
    fn upstream_message_decoding(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut wrapped = br#"{"up":"#.to_vec();
        wrapped.extend_from_slice(&bytes);
        for candidate in [&bytes, &wrapped] {
            if let Some(message) = pushbench::upstream::Message::decode(candidate) {
                let again = message.encode();
                prop_assert_eq!(pushbench::upstream::Message::decode(&again), Some(message.clone()));
                let mut ledger = pushbench::upstream::Ledger::new(4);
                ledger.record(&message, candidate.len(), message.scheduled_ns);
            }
        }
    }

    /// Events that look almost canonical (the fast path) decode exactly as serde_json reads
    /// them.
    #[test]
    fn canonical_event_decoding(seq in any::<u64>(), at in any::<u64>(), payload in "[ -~]{0,40}") {
        let text = format!(
            r#"{{"seq":{seq},"scheduled_ns":{at},"sent_ns":{at},"payload":{}}}"#,
            serde_json::to_string(&payload).unwrap()
        );
        let event = Event::decode(text.as_bytes()).unwrap();
        prop_assert_eq!(event.seq, seq);
        prop_assert_eq!(event.payload.as_ref(), payload.as_str());
    }

    /// Webhook secrets, signature headers and timestamps of any shape: refused or verified,
    /// never a panic.
    #[test]
    fn webhook_headers_and_signatures(
        secret in ".{0,80}",
        id in "[ -~]{0,40}",
        timestamp in "[ -~]{0,24}",
        signature in "[ -~]{0,200}",
        body in proptest::collection::vec(any::<u8>(), 0..128),
        now in any::<i64>(),
        tolerance in any::<u64>(),
    ) {
        let _ = secret.parse::<Secrets>();
        let secrets = Secrets::generate();
        let mut headers = HeaderMap::new();
        for (name, value) in [("webhook-id", id), ("webhook-timestamp", timestamp), ("webhook-signature", signature)] {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
        let _ = secrets.verify(&headers, &body, now, Duration::from_secs(tolerance));
    }

    /// Histograms as results.json stores them: any text is refused or read within bounds.
    #[test]
    fn results_histograms(text in ".{0,200}", raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = latency::decode(&text);
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
        if let Ok(histogram) = latency::decode(&encoded) {
            prop_assert!(histogram.high() <= latency::MAX_US);
        }
    }

    /// Whole results documents, of any JSON shape: migrated and read, or refused.
    #[test]
    fn results_documents(version in 0u64..6, body in "[ -~]{0,200}") {
        let text = format!(r#"{{"schema_version":{version},"runs":[{body}]}}"#);
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
            if let Ok(migrated) = pushbench::results::schema::migrate(value) {
                let _ = serde_json::from_value::<pushbench::results::Results>(migrated);
            }
        }
    }

    /// Scenario files: any text is read or refused with a message.
    #[test]
    fn scenario_files(text in "[ -~\n]{0,300}") {
        let dir = common::scratch("fuzz-scenario");
        let path = dir.join("scenario.toml");
        std::fs::write(&path, &text).unwrap();
        if let Ok(settings) = pushbench::scenario::Settings::from_file(&path) {
            let _ = settings.resolve();
        }
    }

    /// The endpoint check judges an IPv4 address written as IPv6 as the address it is.
    #[test]
    fn endpoint_addresses(v4 in any::<u32>()) {
        let ip = std::net::Ipv4Addr::from(v4);
        prop_assert_eq!(off_limits(ip.into()), off_limits(ip.to_ipv6_mapped().into()));
    }
}

/// Arbitrary request bytes, each on a connection of its own, at every server: an answer or a
/// closed (or refused) connection, never a panic; afterwards the server serves a real subscriber the
/// identical stream.
#[test]
fn servers_take_arbitrary_requests() {
    count_panics();
    let runtime = runtime();
    let spec = spec(200, "64");
    for &transport in Transport::ALL {
        let mut config = ServerConfig::local();
        config.http.header_read_timeout = Duration::from_millis(50);
        let client = client_for(&config);
        let mut server = runtime
            .block_on(Server::start(
                transport,
                "127.0.0.1:0".parse().unwrap(),
                spec.count,
                config,
            ))
            .unwrap();
        let addr = server.addr();
        // Mostly request-shaped bytes (a path the server has, then noise), some pure noise.
        let path = transport.spec().cursor_path.unwrap_or("/subscriptions");
        let request = (
            prop_oneof![
                Just("GET".to_owned()),
                Just("POST".to_owned()),
                "[A-Z]{1,8}"
            ],
            "[ -~]{0,40}",
            proptest::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(move |(method, query, noise)| {
                let mut bytes =
                    format!("{method} {path}{query} HTTP/1.1\r\nHost: x\r\n").into_bytes();
                bytes.extend(noise);
                bytes
            });
        let bytes = prop_oneof![request, proptest::collection::vec(any::<u8>(), 0..600)];
        let mut runner = TestRunner::new(Config::with_cases(socket_cases()));
        runner
            .run(&bytes, |bytes| {
                runtime.block_on(async {
                    // QUIC: the bytes as a datagram to its UDP port, which it must drop (or
                    // answer) and go on serving.
                    if transport.traits().udp {
                        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                        let _ = socket.send_to(&bytes, addr).await;
                        let mut answer = vec![0u8; 2048];
                        let wait = Duration::from_millis(10);
                        let _ = tokio::time::timeout(wait, socket.recv(&mut answer)).await;
                        return;
                    }
                    // A refused or reset connection is a closed one: a server whose
                    // listener another accept loop takes over (an embedded broker) refuses
                    // for a moment at its start.
                    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                        return;
                    };
                    let _ = stream.write_all(&bytes).await;
                    let mut answer = vec![0u8; 4096];
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), stream.read(&mut answer))
                            .await;
                });
                Ok(())
            })
            .unwrap();
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "{transport}: a panic");
        let records = runtime.block_on(async {
            let (count, client) = (spec.count, client.clone());
            let load = tokio::spawn(async move {
                let plan = RecordPlan::new(count, Rate::Max, 0, 0);
                run_subscribers(
                    transport,
                    &addr.into(),
                    1,
                    0,
                    &plan,
                    &client,
                    common::TIMEOUT,
                )
                .await
            });
            // Connections left over from the fuzzing may still count for a moment: wait for
            // the real subscriber, whatever else is connected.
            server.publish(&spec, 1).await.unwrap();
            load.await.unwrap()
        });
        assert_identical(transport, &spec, &records);
        runtime.block_on(server.stop()).unwrap();
    }
}

/// Every client fed arbitrary bytes by a fake server (as the answer's body, behind a valid
/// status line where the transport is HTTP, said to be gzip-compressed or not, and compressed
/// or not) ends, with an error or not, and never panics.
#[test]
fn clients_take_arbitrary_answers() {
    count_panics();
    let runtime = runtime();
    let mut config = ClientConfig::default();
    config.settings.0.extend([RESUME.set(false)]);
    config.request_timeout = Duration::from_secs(2);
    // An MQTT client retries a connection the broker closes before its CONNACK until this
    // timeout (a broker may be taking its port over): at the default 10 s, most of a minute of
    // this test was MQTT retrying against a fake server that hangs up.
    config.connect_timeout = Duration::from_secs(1);
    // The clients that read answers to their own requests (not the webhook consumer, which is
    // a server, nor WebSocket, whose frames yawc parses) by what each declares: raw
    // bytes, a streamed response, or one JSON answer per request.
    let readers = Transport::ALL.iter().copied().filter(|t| {
        let traits = t.traits();
        !traits.needs_inbound_http && !traits.needs_upgrade
    });
    for transport in readers {
        let traits = transport.traits();
        let head = |gzip: bool| -> Vec<u8> {
            let kind = if traits.streams_response {
                "text/event-stream"
            } else {
                "application/json"
            };
            let coding = if gzip {
                "content-encoding: gzip\r\n"
            } else {
                ""
            };
            match traits.http {
                false => Vec::new(),
                true => format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\n{coding}connection: close\r\n\r\n"
                )
                .into_bytes(),
            }
        };
        let text = "(data: [ -~]{0,60}\n|id: [0-9a-z]{0,5}\n|\n|\\{\"events\":\\[[ -~]{0,60}\\],\"done\":true\\})*"
            .prop_map(String::into_bytes);
        let body = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..800),
            text.clone(),
            text.prop_map(|t| Compression::Gzip.compress(t.into()).to_vec()),
        ];
        let body = (any::<bool>(), body);
        let mut runner = TestRunner::new(Config::with_cases(socket_cases()));
        runner
            .run(&body, |(gzip, body)| {
                runtime.block_on(async {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let addr = listener.local_addr().unwrap();
                    let answer = [&head(gzip)[..], &body].concat();
                    let fake = tokio::spawn(async move {
                        // Answer every connection the client opens, then close it.
                        while let Ok((mut socket, _)) = listener.accept().await {
                            let mut request = vec![0u8; 4096];
                            let _ = socket.read(&mut request).await;
                            let _ = socket.write_all(&answer).await;
                            let _ = socket.shutdown().await;
                        }
                    });
                    let mut sink = TallySink::new(RecordPlan::new(10, Rate::Max, 0, 0), 0);
                    let ended = tokio::time::timeout(
                        Duration::from_secs(20),
                        transport.subscribe(&addr.into(), &config, &mut sink),
                    )
                    .await;
                    fake.abort();
                    assert!(ended.is_ok(), "{transport}: the client hung on {body:?}");
                });
                Ok(())
            })
            .unwrap();
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "{transport}: a panic");
    }
}
