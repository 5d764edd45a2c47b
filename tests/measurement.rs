//! Tests of the measurement itself: faults injected on purpose must show up where the method
//! says they do, and bytes counted at the sockets must be exactly what was sent.

mod common;

use std::time::Duration;

use common::{client_for, TIMEOUT};
use pushbench::event::{DecodeError, Event, Gap, PayloadSizes, Rate, StreamSpec, Tally};
use pushbench::harness::deliver_locally;
use pushbench::metrics::recorder::Recorded;
use pushbench::serve::Server;
use pushbench::transport::{ClientConfig, Faults, Flow, ServerConfig, Sink, Transport};

fn steady(count: u64, rate: f64) -> StreamSpec {
    StreamSpec::new(3, count, PayloadSizes::fixed(64), Rate::PerSecond(rate)).unwrap()
}

/// Delivers `spec` over TCP to two subscribers with `faults` planted, checks both received the
/// whole stream, and returns what was recorded.
async fn run_with(faults: Faults, spec: &StreamSpec) -> Recorded {
    let config = ServerConfig {
        faults,
        ..ServerConfig::local()
    };
    let client = client_for(&config);
    let run = deliver_locally(Transport::Tcp, spec, 2, config, client, TIMEOUT)
        .await
        .unwrap();
    for record in &run.records {
        assert_eq!(record.error, None);
        assert!(record.ledger.is_complete());
    }
    run.recorded
}

/// A fixed 20 ms delivery delay yields latencies (and service times) of at least 20 ms, every
/// one of them: the delay is measured, not hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_fixed_delay_is_measured() {
    let spec = steady(200, 200.0);
    let faults = Faults {
        delivery_delay: Some(Duration::from_millis(20)),
        stall: None,
    };
    let recorded = run_with(faults, &spec).await;
    for (name, h) in [
        ("latency", &recorded.latency),
        ("service", &recorded.service),
    ] {
        assert_eq!(h.len(), 400, "{name}: every event recorded");
        assert!(
            h.min() >= 20_000,
            "{name}: min {} us is below the injected 20 ms",
            h.min()
        );
    }
}

/// A publisher stalled for 300 ms shows up in the latency measured from the schedule (events
/// due during the stall wait for it) but not in service time (once sent, they arrive quickly):
/// the coordinated-omission correction at work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sender_shows_in_latency_not_service_time() {
    let spec = steady(600, 1000.0);
    let faults = Faults {
        delivery_delay: None,
        stall: Some((200, Duration::from_millis(300))),
    };
    let recorded = run_with(faults, &spec).await;
    let (latency, service) = (&recorded.latency, &recorded.service);
    assert!(
        latency.max() >= 290_000,
        "latency max {} us misses the 300 ms stall",
        latency.max()
    );
    assert!(
        service.max() < latency.max() / 2,
        "service time max {} us should not carry the stall (latency max {} us)",
        service.max(),
        latency.max()
    );
}

/// Counts the exact wire size of each TCP frame: the canonical encoding is what was sent.
struct FrameBytes {
    tally: Tally,
    bytes: u64,
}

impl Sink for FrameBytes {
    fn event(&mut self, event: &Event<'_>, _received_ns: u64) -> Flow {
        self.bytes += 4 + event.encode().len() as u64;
        self.tally.record(event.seq, event.payload.as_bytes());
        if self.tally.is_complete() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    fn malformed(&mut self, error: &DecodeError) -> Flow {
        panic!("{error}")
    }

    fn gap(&mut self, gap: Gap) {
        panic!("no replay window here, yet a gap: {gap:?}")
    }
}

/// For raw TCP, bytes out at the server's socket are exactly frame sizes plus 4-byte prefixes
/// and the empty frame that answers the subscriber's confirmation, and bytes in are the
/// subscriber's 8-byte start and its empty frame: nothing is counted twice or missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_wire_bytes_are_frames_plus_prefixes() {
    let spec = StreamSpec::new(5, 1000, "0,1,100,5000".parse().unwrap(), Rate::Max).unwrap();
    let mut server = Server::start(
        Transport::Tcp,
        "127.0.0.1:0".parse().unwrap(),
        spec.count,
        ServerConfig::local(),
    )
    .await
    .unwrap();
    let addr = server.addr();
    let client = tokio::spawn(async move {
        let mut sink = FrameBytes {
            tally: Tally::new(1000),
            bytes: 0,
        };
        Transport::Tcp
            .subscribe(&addr.into(), &ClientConfig::default(), &mut sink)
            .await
            .unwrap();
        sink
    });
    server.publish(&spec, 1).await.unwrap();
    let sink = client.await.unwrap();
    assert_eq!(server.drain(Duration::from_secs(10)).await, 0);
    let sockets = server.sockets();
    server.stop().await.unwrap();
    assert_eq!(sink.tally.digest(), spec.digest());
    assert_eq!(sockets.connections, 1);
    assert_eq!(sockets.bytes_in, 8 + 4);
    assert_eq!(sockets.bytes_out, sink.bytes + 4);
}
