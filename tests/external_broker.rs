//! MQTT through a broker pushbench did not build: Eclipse Mosquitto (Debian's package, which
//! `scripts/install-mosquitto` installs), started here on a port of its own and named with
//! `--mqtt-broker mqtt://IP:PORT`. The same contract as the embedded broker's: the identical stream
//! to one and fifty subscribers, edge payloads intact, at QoS 0 and 1; and a subscriber that
//! goes away mid-stream gets, through its persistent session at QoS 1, everything it missed.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{assert_identical, spec};
use pushbench::event::StreamSpec;
use pushbench::harness::{deliver_locally, LocalRun, SubscriberRecord};
use pushbench::transport::mqtt::{Broker, Qos, BROKER, QOS};
use pushbench::transport::resume::{OUTAGE, OUTAGE_AFTER};
use pushbench::transport::upstream::{UPSTREAM_DELAY, UPSTREAM_ECHO, UPSTREAM_RATE};
use pushbench::transport::{ClientConfig, ServerConfig, Transport};

/// A Mosquitto broker of this test's own, stopped (by its PID) when dropped.
struct Mosquitto {
    child: Child,
    addr: std::net::SocketAddr,
    dir: std::path::PathBuf,
}

impl Mosquitto {
    /// Starts Mosquitto on a free loopback port: anonymous clients, no queue limit (its
    /// default of 1,000 queued messages per client would drop a fast stream), no persistence
    /// file, small packets sent at once (TCP_NODELAY, as a latency-minded deployment sets
    /// it), and waits until it accepts connections.
    fn start() -> Option<Self> {
        let binary = common::needs(
            "mosquitto",
            &["mosquitto", "/usr/sbin/mosquitto"],
            "scripts/install-mosquitto",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("pushbench-mosquitto-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n\
                 persistence false\nset_tcp_nodelay true\n"
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self { child, addr, dir })
    }

    /// Serves `spec` through this broker at `qos` to `subscribers`, both sides naming the
    /// broker (and `client_settings` more), and returns their records once the server saw
    /// every subscriber leave.
    async fn deliver(
        &self,
        spec: &StreamSpec,
        subscribers: usize,
        qos: Qos,
        client_settings: &[(String, String)],
    ) -> Vec<SubscriberRecord> {
        let named = [BROKER.set(Broker::External(self.addr)), QOS.set(qos)];
        let mut config = ServerConfig::local();
        config.settings.0.extend(named.clone());
        let mut client = common::client_for(&config);
        client.settings.0.extend(named);
        client.settings.0.extend(client_settings.iter().cloned());
        self.run(spec, subscribers, (config, client)).await.records
    }

    /// Serves `spec` through this broker to `subscribers` with these server and client configs
    /// (which name the broker), once the server saw every subscriber leave.
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

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
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
            BROKER.set(Broker::External(broker.addr)),
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
