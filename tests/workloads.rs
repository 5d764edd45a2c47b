//! Workload shapes over real sockets: rooms (topics) and one stream per user (unicast) on
//! every transport, each subscriber judged stream by stream against that stream's source, a
//! planted misrouting caught and named, and resuming across drops with several rooms.

mod common;

use std::time::Duration;

use common::{assert_identical, client_for, TIMEOUT};
use pushbench::event::{Rate, StreamSpec};
use pushbench::harness::{deliver_locally, RecordPlan, TallySink};
use pushbench::transport::listener::DROP_EVERY;
use pushbench::transport::{ServerConfig, SettingValues, Transport};
use pushbench::workload::{Membership, Workload};

fn rooms(topics: u32, per_subscriber: u32) -> Workload {
    Workload::Topics {
        topics,
        per_subscriber,
        membership: Membership::Zipf(1.0),
    }
}

/// Each of 6 subscribers gets its own stream whole on every transport: its digest is its
/// stream's source digest, and nothing of anyone else's arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicast_delivers_each_subscriber_its_own_stream() {
    let spec = StreamSpec::new(11, 40, "48".parse().unwrap(), Rate::Max)
        .unwrap()
        .with_workload(Workload::Unicast, 6);
    for &transport in Transport::ALL {
        let config = ServerConfig::local();
        let client = client_for(&config);
        let run = deliver_locally(transport, &spec, 6, config, client, TIMEOUT)
            .await
            .unwrap();
        assert_identical(transport, &spec, &run.records);
        for record in &run.records {
            assert_eq!(record.ledger.counts().received, 40, "{transport}");
        }
    }
}

/// In rooms (8 topics, 3 per subscriber, Zipf), every subscriber gets exactly the events of
/// its three rooms, each room in order and whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_deliver_exactly_each_subscribers_topics() {
    let spec = StreamSpec::new(5, 30, "32".parse().unwrap(), Rate::Max)
        .unwrap()
        .with_workload(rooms(8, 3), 5);
    for &transport in Transport::ALL {
        let config = ServerConfig::local();
        let client = client_for(&config);
        let run = deliver_locally(transport, &spec, 5, config, client, TIMEOUT)
            .await
            .unwrap();
        assert_identical(transport, &spec, &run.records);
        for record in &run.records {
            assert_eq!(record.ledger.counts().received, 90, "{transport}");
        }
    }
}

/// A subscriber that asks the server for room 1 while its ledger follows room 2 (a planted
/// misrouting) fails, with the subscriber and the stray topic named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_misrouting_fails_naming_subscriber_and_topic() {
    let spec = StreamSpec::new(5, 20, "16".parse().unwrap(), Rate::Max)
        .unwrap()
        .with_workload(rooms(4, 1), 1);
    for transport in [Transport::ALL[0], Transport::ALL[1]] {
        let config = ServerConfig::local();
        let mut client = client_for(&config);
        let mut server = common::start(transport, &spec, config).await;
        let addr = server.addr();
        client.topics = Some(vec![1]);
        let plan = RecordPlan::of(&spec, 0, 0, &Default::default(), 1);
        let subscriber = tokio::spawn(async move {
            let mut sink = TallySink::following(plan, 0, 7, Some(&[2]));
            let _ = tokio::time::timeout(
                Duration::from_secs(20),
                transport.subscribe(&addr.into(), &client, &mut sink),
            )
            .await;
            sink.finish(None)
        });
        server.publish(&spec, 1).await.unwrap();
        let record = subscriber.await.unwrap();
        let error = record.error.unwrap_or_default();
        assert!(
            error.contains("subscriber 7") && error.contains("topic 1"),
            "{transport}: {error}"
        );
        assert_eq!(record.ledger.counts().distinct, 0, "{transport}");
        server.stop().await.unwrap();
    }
}

/// Connections cut every 150 ms across a 2 s stream: every subscriber in three rooms resumes
/// and gets each room whole, on every transport that takes the drop fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_across_drops_delivers_every_room_whole() {
    let spec = StreamSpec::new(3, 400, "64".parse().unwrap(), Rate::PerSecond(200.0))
        .unwrap()
        .with_workload(rooms(6, 3), 3);
    let droppable = Transport::ALL.iter().copied().filter(|t| {
        t.spec()
            .settings
            .iter()
            .any(|s| s.name() == DROP_EVERY.name)
    });
    for transport in droppable {
        let config = ServerConfig {
            settings: SettingValues::from_pairs([DROP_EVERY.set(Duration::from_millis(150))]),
            ..ServerConfig::local()
        };
        let client = client_for(&config);
        let run = deliver_locally(transport, &spec, 3, config, client, TIMEOUT)
            .await
            .unwrap();
        assert_identical(transport, &spec, &run.records);
        assert!(
            run.records.iter().all(|r| r.reconnects >= 5),
            "{transport}: {:?}",
            run.records.iter().map(|r| r.reconnects).collect::<Vec<_>>()
        );
    }
}
