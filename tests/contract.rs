//! The contract every transport must meet, over real loopback sockets, run against every
//! transport the binary offers (`Transport::ALL`, so a new transport is held to it without
//! being listed here): the identical stream reaches one and many subscribers, and edge payloads
//! arrive intact; JSON payloads, with and without compression; and the same over TLS.

mod common;

use common::{assert_identical, deliver, deliver_with, spec};
use pushbench::event::Rate;
use pushbench::harness::{deliver_locally, RecordPlan, SubscriberRecord, TallySink};
use pushbench::payload::PayloadKind;
use pushbench::serve::Server;
use pushbench::transport::compression::{Compression, COMPRESSION};
use pushbench::transport::resume::RESUME;
use pushbench::transport::tls::{TlsMaterial, TLS};
use pushbench::transport::{ClientConfig, KeepAlive, ServerConfig, Transport};

/// One subscriber receives all 10,000 events, in order, digest equal to the source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscriber_gets_the_identical_stream() {
    let spec = spec(10_000, "64");
    for &transport in Transport::ALL {
        let records = deliver(transport, &spec, 1).await;
        assert_eq!(records.len(), 1, "{transport}");
        assert_identical(transport, &spec, &records);
    }
}

/// Fifty subscribers each receive the same 10,000 events, each with the source digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_subscribers_get_the_identical_stream() {
    let spec = spec(10_000, "64");
    for &transport in Transport::ALL {
        let records = deliver(transport, &spec, 50).await;
        assert_eq!(records.len(), 50, "{transport}");
        assert_identical(transport, &spec, &records);
    }
}

/// Empty, one-byte and 64 KiB payloads, cycled, arrive byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_payloads_arrive_intact() {
    let spec = spec(300, "0,1,65536");
    for &transport in Transport::ALL {
        let records = deliver(transport, &spec, 2).await;
        assert_identical(transport, &spec, &records);
    }
}

/// Over TLS (https://, wss://, h2 by ALPN, TLS under raw TCP, HTTPS webhook endpoints), every
/// transport that takes the `tls` setting delivers the identical stream to several subscribers, edge payloads included, and each
/// connection's handshake is timed on the side that opened or accepted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_delivers_the_identical_stream_over_tls() {
    let spec = spec(1_000, "0,1,64,65536");
    for &transport in Transport::ALL.iter().filter(|t| takes(**t, TLS.name)) {
        let tls = TlsMaterial::self_signed(&[]).unwrap();
        let records = deliver_with(transport, &spec, 3, ServerConfig::local(), Some(&tls)).await;
        assert_eq!(records.len(), 3, "{transport}");
        assert_identical(transport, &spec, &records);
        let handshakes = tls.handshakes.histogram().len();
        // Multiplexed, the three subscribers share one connection (and its one handshake).
        let connections = if transport.traits().multiplexed { 1 } else { 3 };
        assert!(
            handshakes >= connections,
            "{transport}: {handshakes} TLS handshakes timed"
        );
    }
}

/// A client that does not trust the server's certificate is refused at the handshake, with
/// the reason, receives nothing, and is no subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let mut config = ServerConfig::local();
    config.tls = TlsMaterial::self_signed(&[]).unwrap();
    config.settings.0.extend([TLS.set(true)]);
    let mut client = common::client_for(&config);
    client.tls = TlsMaterial::self_signed(&[]).unwrap();
    client.settings.0.extend([TLS.set(true), RESUME.set(false)]);
    let server = Server::start(
        Transport::Websocket,
        "127.0.0.1:0".parse().unwrap(),
        10,
        config,
    )
    .await
    .unwrap();
    let mut sink = TallySink::new(RecordPlan::new(10, Rate::Max, 0, 0), 0);
    let error = Transport::Websocket
        .subscribe(&server.addr().into(), &client, &mut sink)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(sink.finish(None).ledger.counts().distinct, 0);
    assert_eq!(server.hub().subscribers(), 0);
    server.stop().await.unwrap();
}

/// JSON payloads (quotes escaped inside every event) arrive byte for byte over every
/// transport; where a transport offers compression, each coding it offers delivers the
/// identical stream in fewer wire bytes than none, and a coding it does not offer is refused
/// when serving starts, with the one to use instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_payloads_arrive_intact_and_compress() {
    let spec = spec(1_000, "0,1,64,1024,65536").with_kind(PayloadKind::Json);
    for &transport in Transport::ALL {
        let offers_compression = takes(transport, COMPRESSION.name);
        let codings: &[Compression] = if offers_compression {
            &[Compression::Off, Compression::Deflate, Compression::Gzip]
        } else {
            &[Compression::Off]
        };
        let mut plain_bytes = None;
        for &coding in codings {
            let mut config = ServerConfig::local();
            let mut client = common::client_for(&config);
            // A setting its transport does not take is refused, so only those that take it
            // get it.
            if offers_compression {
                config.settings.0.extend([COMPRESSION.set(coding)]);
                client.settings.0.extend([COMPRESSION.set(coding)]);
            }
            let (served, consumed) = (config.counters.clone(), client.counters.clone());
            let run =
                match deliver_locally(transport, &spec, 2, config, client, common::TIMEOUT).await {
                    Ok(run) => run,
                    Err(error) => {
                        // Only WebSocket has a coding it cannot offer: gzip.
                        assert_eq!(coding, Compression::Gzip, "{transport}: {error:#}");
                        assert!(format!("{error:#}").contains("--compression deflate"));
                        continue;
                    }
                };
            assert_identical(transport, &spec, &run.records);
            // Server writes, plus what webhook consumers read from their provider.
            let wire = served.totals().bytes_out + consumed.totals().bytes_in;
            match plain_bytes {
                None => plain_bytes = Some(wire),
                Some(plain) => assert!(
                    wire * 2 < plain,
                    "{transport} {coding:?}: {wire} B on the wire, {plain} B uncompressed"
                ),
            }
        }
    }
}

/// Where the client keeps a quiet connection alive by pinging (MQTT's PINGREQ), it does so at
/// the interval its setting names: with a one-second keep-alive and no event for 2.5 s, the
/// server's side of the subscriber's connection reads the pings and answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_clients_ping_at_their_keep_alive() {
    use pushbench::metrics::tcp_info;
    let spec = spec(10, "8");
    let pinging = Transport::ALL
        .iter()
        .filter_map(|t| match t.traits().keep_alive {
            KeepAlive::ClientPing(setting) => Some((*t, setting)),
            _ => None,
        });
    for (transport, setting) in pinging {
        let config = ServerConfig::local();
        let mut client = common::client_for(&config);
        client
            .settings
            .0
            .extend([setting.set(std::time::Duration::from_secs(1))]);
        let (mut server, load) = one_quiet_subscriber(transport, &spec, config, client).await;
        let addr = server.addr();
        let read = || {
            let sockets = tcp_info::on_local_port(addr.port()).expect("ss from iproute2");
            sockets
                .iter()
                .map(|s| (s.received, s.sent))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        };
        let before = read();
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let after = read();
        // PINGREQ and PINGRESP are two bytes each: at least two of each in 2.5 s.
        assert!(
            after.0 >= before.0 + 4 && after.1 >= before.1 + 4,
            "{transport}: {before:?} then {after:?} bytes (received, sent) while quiet"
        );
        server.publish(&spec, 1).await.unwrap();
        assert_identical(transport, &spec, &load.await.unwrap());
        server.stop().await.unwrap();
    }
}

/// A quiet subscription still carries keep-alives on every transport whose server writes them
/// each heartbeat (WebSocket pings, SSE comments, HTTP/2 PINGs), so a network that cuts idle
/// connections leaves it alone: with a 100 ms heartbeat and no event, the server keeps writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_streams_carry_keep_alives() {
    let spec = spec(10, "8");
    let streaming = Transport::ALL
        .iter()
        .filter(|t| matches!(t.traits().keep_alive, KeepAlive::Heartbeat));
    for &transport in streaming {
        let mut config = ServerConfig::local();
        config.heartbeat = std::time::Duration::from_millis(100);
        let counters = config.counters.clone();
        let client = common::client_for(&config);
        let (mut server, load) = one_quiet_subscriber(transport, &spec, config, client).await;
        // Past the subscription's own answer (headers, a first comment), into the quiet.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let before = counters.totals().bytes_out;
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let quiet = counters.totals().bytes_out - before;
        assert!(quiet > 0, "{transport}: nothing written in 700 ms of quiet");
        server.publish(&spec, 1).await.unwrap();
        assert_identical(transport, &spec, &load.await.unwrap());
        server.stop().await.unwrap();
    }
}

/// Whether `transport` declares the setting named `name`.
fn takes(transport: Transport, name: &str) -> bool {
    transport.spec().settings.iter().any(|s| s.name() == name)
}

/// Starts `transport`'s server for `spec` and one subscriber, and returns once the subscriber
/// is connected and quiet: nothing is published until the caller does.
async fn one_quiet_subscriber(
    transport: Transport,
    spec: &pushbench::event::StreamSpec,
    config: ServerConfig,
    client: ClientConfig,
) -> (Server, tokio::task::JoinHandle<Vec<SubscriberRecord>>) {
    let mut server = common::start(transport, spec, config).await;
    let (addr, count) = (server.addr(), spec.count);
    let load = tokio::spawn(async move {
        let plan = RecordPlan::new(count, Rate::Max, 0, 0);
        pushbench::harness::run_subscribers(
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
    common::until_subscribed(&mut server, 1, transport).await;
    (server, load)
}
