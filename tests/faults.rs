//! Faults over real sockets: connections cut from the server side again and again (the drop
//! fault) with resuming on, which must lose nothing, and off, whose loss must be counted exactly.
//! Every transport that takes the drop fault is checked, as its declaration says. A bounded
//! replay window must answer a resume from before it with the exact gap.

mod common;

use common::{client_for, TIMEOUT};
use pushbench::event::{Rate, StreamSpec};
use pushbench::harness::deliver_locally;
use pushbench::harness::{RecordPlan, TallySink};
use pushbench::serve::Server;
use pushbench::transport::client_stream::SLOW_CONSUMER;
use pushbench::transport::listener::DROP_EVERY;
use pushbench::transport::resume::{OUTAGE, OUTAGE_AFTER, RECONNECT_GRACE, REPLAY_WINDOW, RESUME};
use pushbench::transport::{
    Implementation, ServerConfig, SettingValues, Transport, CLIENT_IMPL, SERVER_IMPL,
};

/// A scheduled stream long enough to be cut many times: 4,000 events at 1,000 ev/s.
fn stream() -> StreamSpec {
    StreamSpec::new(42, 4000, "64".parse().unwrap(), Rate::PerSecond(1000.0)).unwrap()
}

/// The transports the drop fault applies to (those that hold a connection to the server).
fn droppable() -> impl Iterator<Item = Transport> {
    Transport::ALL.iter().copied().filter(|t| {
        t.spec()
            .settings
            .iter()
            .any(|s| s.name() == DROP_EVERY.name)
    })
}

/// The libraries people deploy resume as pushbench's own implementations do: each one of a
/// transport that takes the drop fault, against pushbench's own other side, delivers the
/// identical stream across a cut every 150 ms, every drop resumed. The rows run at once (each
/// is mostly waiting on its schedule), so fewer cuts land than in the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_implementation_resumes_across_drops() {
    let spec = stream();
    let libraries = droppable().flat_map(|transport| {
        let declared = transport.spec();
        let servers = declared
            .servers
            .iter()
            .skip(1)
            .map(|s| (SERVER_IMPL.set(Implementation(s.name)), true));
        let clients = declared
            .clients
            .iter()
            .skip(1)
            .map(|c| (CLIENT_IMPL.set(Implementation(c.name)), false));
        servers
            .chain(clients)
            .map(move |(chosen, server_side)| (transport, chosen, server_side))
    });
    let runs = libraries.map(|(transport, chosen, server_side)| {
        let spec = spec.clone();
        async move {
            let mut config = ServerConfig {
                settings: SettingValues::from_pairs([
                    DROP_EVERY.set(std::time::Duration::from_millis(150))
                ]),
                ..ServerConfig::local()
            };
            let mut client = client_for(&config);
            match server_side {
                true => config.settings.0.extend([chosen.clone()]),
                false => client.settings.0.extend([chosen.clone()]),
            }
            let run = deliver_locally(transport, &spec, 3, config, client, TIMEOUT).await;
            (transport, chosen, run)
        }
    });
    let runs = futures_util::future::join_all(runs).await;
    assert!(!runs.is_empty(), "no library takes the drop fault");
    for (transport, (setting, name), run) in runs {
        let run = run.unwrap_or_else(|e| panic!("{transport} {setting}={name}: {e:#}"));
        common::assert_identical(transport, &spec, &run.records);
        assert_eq!(run.unresumed_drops, 0, "{transport} {setting}={name}");
        for record in &run.records {
            // Cut several times over (how many depends on the machine's pace: the rows share
            // it), every cut resumed.
            assert!(
                record.reconnects >= 3,
                "{transport} {setting}={name}: {} reconnects",
                record.reconnects
            );
        }
    }
}

/// With resuming on (the default), every subscriber's connection is cut every 150 ms across a
/// 4 s stream, and each still receives the identical stream, having reconnected at least ten
/// times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_loses_nothing_across_drops() {
    let spec = stream();
    for transport in droppable() {
        let config = ServerConfig {
            settings: SettingValues::from_pairs([
                DROP_EVERY.set(std::time::Duration::from_millis(150))
            ]),
            ..ServerConfig::local()
        };
        let client = client_for(&config);
        let run = deliver_locally(transport, &spec, 3, config, client, TIMEOUT)
            .await
            .unwrap();
        common::assert_identical(transport, &spec, &run.records);
        assert_eq!(
            run.unresumed_drops, 0,
            "{transport}: every drop was resumed"
        );
        for (i, record) in run.records.iter().enumerate() {
            assert!(
                record.reconnects >= 10,
                "{transport} subscriber {i} reconnected {} times",
                record.reconnects
            );
        }
    }
}

/// WebTransport's stream per event resumes across drops as its one stream does: each session's
/// resume point moves only past events whose streams all completed, and the repeats a new
/// session sends of what arrived beyond it are dropped, so nothing is lost or taken twice
/// (events may overtake each other: counted, allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_per_event_resumes_across_drops() {
    use pushbench::transport::webtransport::{Mode, MODE};
    let spec = stream();
    let transport = Transport::Webtransport;
    let per_event = MODE.set(Mode::StreamPerEvent);
    let config = ServerConfig {
        settings: SettingValues::from_pairs([
            DROP_EVERY.set(std::time::Duration::from_millis(150)),
            per_event.clone(),
        ]),
        ..ServerConfig::local()
    };
    let mut client = client_for(&config);
    client.settings.0.extend([per_event]);
    let run = deliver_locally(transport, &spec, 3, config, client, TIMEOUT)
        .await
        .unwrap();
    common::assert_identical_under(transport, true, &spec, &run.records);
    assert_eq!(run.unresumed_drops, 0, "every drop was resumed");
    for record in &run.records {
        assert!(record.reconnects >= 10, "{} reconnects", record.reconnects);
    }
}

/// With resuming off, the first cut ends each subscription that holds a connection: what it
/// missed is counted as lost, exactly (received + lost = the stream), with the error saying why,
/// and nothing duplicated. Short polling holds nothing between polls, so a cut there only ends
/// it when it lands on a request in flight; its ledger must add up all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resume_the_loss_is_counted_exactly() {
    let spec = stream();
    for transport in droppable() {
        let config = ServerConfig {
            settings: SettingValues::from_pairs([
                DROP_EVERY.set(std::time::Duration::from_millis(300)),
                // Nobody comes back: no point waiting long for them at the end.
                RECONNECT_GRACE.set(std::time::Duration::from_millis(200)),
            ]),
            ..ServerConfig::local()
        };
        let mut client = client_for(&config);
        client.settings = SettingValues::from_pairs([RESUME.set(false)]);
        let run = deliver_locally(transport, &spec, 2, config, client, TIMEOUT)
            .await
            .unwrap();
        for (i, record) in run.records.iter().enumerate() {
            let counts = record.ledger.counts();
            let lost = record.ledger.lost();
            assert_eq!(
                counts.distinct + lost,
                spec.count,
                "{transport} subscriber {i}"
            );
            assert_eq!(counts.duplicated, 0, "{transport} subscriber {i}");
            assert_eq!(
                record.error.is_some(),
                lost > 0,
                "{transport} subscriber {i}"
            );
            // Every missing event is the tail after the drop, accounted for by the ledger.
            assert_eq!(record.cut_off, lost, "{transport} subscriber {i}");
            assert!(
                record.ledger_balances(pushbench::transport::Guarantee::default()),
                "{transport} subscriber {i}"
            );
            if transport.traits().holds_connection {
                assert!(lost > 0, "{transport} subscriber {i} lost nothing to a cut");
                assert_eq!(record.reconnects, 0, "{transport} subscriber {i} resumed");
            }
        }
        // The server counts each subscriber cut off and never back.
        let cut_off = run.records.iter().filter(|r| r.cut_off > 0).count() as u64;
        assert_eq!(run.unresumed_drops, cut_off, "{transport}");
    }
}

/// Every subscriber goes down for 2 s, half a second after its first event of a 4 s stream, then
/// comes back: with resuming on, each still receives the identical stream. Subscribers that
/// hold a connection close it and resume after the outage; a webhook consumer's endpoint
/// answers 503 throughout, and the provider's retries carry every event over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_across_a_consumer_outage() {
    let takes_outage = Transport::ALL
        .iter()
        .copied()
        .filter(|t| t.spec().takes(&OUTAGE));
    // The transports side by side: each mostly waits out its outage.
    futures_util::future::join_all(takes_outage.map(outage_is_sat_out)).await;
}

async fn outage_is_sat_out(transport: Transport) {
    use pushbench::transport::webhook::{ATTEMPTS, RETRY_CAP};
    let spec = stream();
    let outage = std::time::Duration::from_secs(2);
    // Each setting only where the transport takes it (another is refused).
    let takes = |name: &str| transport.settings().iter().any(|s| s.name() == name);
    let settings = [
        // Stay up while every subscriber is down at once.
        RECONNECT_GRACE.set(std::time::Duration::from_secs(5)),
        // A retry schedule that spans the outage whatever the jitter draws.
        ATTEMPTS.set(40),
        RETRY_CAP.set(std::time::Duration::from_millis(500)),
    ];
    let config = ServerConfig {
        settings: SettingValues::from_pairs(settings.into_iter().filter(|(name, _)| takes(name))),
        ..ServerConfig::local()
    };
    let mut client = client_for(&config);
    client.settings = SettingValues::from_pairs([
        OUTAGE.set(outage),
        OUTAGE_AFTER.set(std::time::Duration::from_millis(500)),
    ]);
    let run = deliver_locally(transport, &spec, 2, config, client, TIMEOUT)
        .await
        .unwrap();
    common::assert_identical(transport, &spec, &run.records);
    if transport.traits().holds_connection {
        for (i, record) in run.records.iter().enumerate() {
            assert!(
                record.reconnects >= 1,
                "{transport} subscriber {i} never came back"
            );
        }
    }
    // The outage shows in the latency: some event waited at least most of it.
    let worst = run.recorded.latency.max();
    assert!(
        worst >= (outage.as_micros() as u64) / 2,
        "{transport}: worst latency {worst} us, yet subscribers were down for {outage:?}"
    );
}

/// One subscriber of three reads at about a third of the stream's byte rate (the
/// slow-consumer fault): every subscriber, the slow one too, still receives the identical
/// stream, the slow one's latencies are kept out of the shared recording, and it took at least
/// as long as its rate allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_nobody_else_back() {
    let takes_it = Transport::ALL.iter().copied().filter(|t| {
        t.spec()
            .settings
            .iter()
            .any(|s| s.name() == SLOW_CONSUMER.name)
    });
    futures_util::future::join_all(takes_it.map(slow_consumer_gets_everything)).await;
}

async fn slow_consumer_gets_everything(transport: Transport) {
    let spec = StreamSpec::new(42, 500, "64".parse().unwrap(), Rate::PerSecond(1000.0)).unwrap();
    let config = ServerConfig::local();
    let mut client = client_for(&config);
    let read_rate = 50_000;
    client.read_rate = Some(read_rate);
    let run = deliver_locally(transport, &spec, 3, config, client, TIMEOUT)
        .await
        .unwrap();
    common::assert_identical(transport, &spec, &run.records);
    let slow: Vec<_> = run.records.iter().filter(|r| r.apart).collect();
    assert_eq!(slow.len(), 1, "{transport}: one slow consumer");
    // At least the payloads went through its throttle, less the bucket's first burst.
    let payload = spec.payload_bytes();
    let burst = read_rate / 10;
    let lower_us = (payload.saturating_sub(burst)) * 1_000_000 / read_rate;
    assert!(
        slow[0].worst_latency_us >= lower_us / 2,
        "{transport}: worst latency {} us, yet it reads {payload} B at {read_rate} B/s",
        slow[0].worst_latency_us
    );
    // The others' latencies are in the recording; the slow one's are not.
    assert_eq!(run.recorded.latency.len(), 2 * spec.count, "{transport}");
}

/// A server that keeps only the last 100 events of 1,000 answers a subscriber that asks for
/// the stream from its start with a gap of exactly 900 events, in the transport's own idiom,
/// and then the 100 it holds: the client counts the 900 as lost and accounted for, and the
/// server counts the same gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_before_the_replay_window_reports_the_exact_gap() {
    let spec = StreamSpec::new(42, 1000, "32".parse().unwrap(), Rate::Max).unwrap();
    for transport in droppable() {
        let config = ServerConfig {
            settings: SettingValues::from_pairs([REPLAY_WINDOW.set(100)]),
            ..ServerConfig::local()
        };
        let client = client_for(&config);
        let mut server = Server::start(
            transport,
            "127.0.0.1:0".parse().unwrap(),
            spec.count,
            config,
        )
        .await
        .unwrap();
        server.publish(&spec, 0).await.unwrap();
        let plan = RecordPlan::new(spec.count, spec.rate, 0, 0);
        let mut sink = TallySink::new(plan, 0);
        let outcome = tokio::time::timeout(
            TIMEOUT,
            transport.subscribe(&server.addr().into(), &client, &mut sink),
        )
        .await
        .unwrap();
        let record = sink.finish(outcome.err().map(|e| e.to_string()));
        let counts = record.ledger.counts();
        assert_eq!(record.error, None, "{transport}");
        assert_eq!(
            (counts.distinct, counts.gapped, counts.malformed),
            (100, 900, 0),
            "{transport}"
        );
        assert!(
            record.ledger_balances(pushbench::transport::Guarantee::default()),
            "{transport}"
        );
        assert_eq!(server.hub().gapped(), 900, "{transport}");
        server.stop().await.unwrap();
    }
}

/// A webhook endpoint that is never up: the provider tries each event as often as its schedule
/// says, then gives up on it, and every event given up on is counted (none silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_webhooks_are_counted() {
    use pushbench::transport::webhook::{ATTEMPTS, REGISTRATION_TOKEN, RETRY_BASE};
    let spec = StreamSpec::new(42, 50, "16".parse().unwrap(), Rate::Max).unwrap();
    let config = ServerConfig {
        settings: SettingValues::from_pairs([
            ATTEMPTS.set(2),
            RETRY_BASE.set(std::time::Duration::from_millis(5)),
        ]),
        ..ServerConfig::local()
    };
    let token = config
        .credentials
        .get(&REGISTRATION_TOKEN)
        .unwrap()
        .to_owned();
    let mut server = Server::start(
        Transport::Webhook,
        "127.0.0.1:0".parse().unwrap(),
        spec.count,
        config,
    )
    .await
    .unwrap();
    // An address nothing listens on: bound, then released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let answer = common::http_client()
        .post(format!("http://{}/subscriptions", server.addr()))
        .bearer_auth(token)
        .json(&serde_json::json!({ "url": format!("http://{dead}/webhook") }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    server.publish(&spec, 1).await.unwrap();
    assert_eq!(
        server.drain(TIMEOUT).await,
        0,
        "the endpoint was never let go"
    );
    assert_eq!(server.hub().abandoned_count(), spec.count);
    // Two attempts each: every event was sent again once.
    assert_eq!(server.hub().retries(), spec.count);
    server.stop().await.unwrap();
}
