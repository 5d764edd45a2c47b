//! MQTT 3.1.1 through a real broker. The server side is broker plus publisher: by default an
//! embedded rumqttd in `serve`'s own process (so its CPU and memory are `serve`'s), or with
//! `--mqtt-broker mqtt://IP:PORT` a broker someone else runs on this host (mosquitto, say). The
//! publisher is an ordinary rumqttc client that publishes every event of the hub to
//! `pushbench/events` at `--mqtt-qos` 0 or 1; each subscriber is a rumqttc client subscribed
//! to it, the event JSON as the PUBLISH payload.
//!
//! A broker says nothing to its publishers about who is subscribed, so subscribers say it
//! themselves, as devices announce presence: each keeps a retained message on
//! `pushbench/presence/ID`, `join` once its subscription is acknowledged and `done` once it has
//! the stream, cleared (an empty retained message) when it leaves, and by its last will if it
//! drops. Retained, so a publisher that subscribes after some have joined still hears of them.
//! The server counts joins as its subscribers. Once all
//! are done it reads the bytes every subscriber connection carried from the kernel
//! ([`crate::metrics::tcp_info`]: the broker's accept loop is not ours to count at) and says
//! `bye` on `pushbench/control`, and only then do subscribers disconnect. After the last event
//! the publisher sends `end` on the events topic, so a subscriber that lost events (QoS 0)
//! knows the stream is over.
//!
//! Resume: subscribers hold a persistent session (clean session off) under a client id of their
//! own; the broker keeps the subscription while they are away and, at QoS 1, queues what they
//! miss, which it sends when they come back with the same id.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::{AsyncClient, ConnectionError, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::resume::{Resuming, OUTAGE, OUTAGE_AFTER, RECONNECT_GRACE, RESUME};
use crate::settings::Value;
use super::{
    deliver, ClientConfig, ClientError, Colour, Flow, KeepAlive, Outside, Redelivery, Requests,
    ServerConfig, Setting, SettingValues, Side, Sink, Spec, Traits,
};
use crate::clock::now_ns;
use crate::event::MAX_EVENT_BYTES;
use crate::hub::{Batch, Hub, SubscriberGuard};
use crate::metrics::tcp_info;

/// Publish/subscribe through a broker; resuming is the broker's persistent session.
pub static SPEC: Spec = Spec {
    name: "mqtt",
    summary: "MQTT 3.1.1 through a broker (embedded rumqttd, or --mqtt-broker): QoS 0 or 1, \
              persistent sessions",
    colour: Colour(136, 34, 85),
    cursor_path: None,
    settings: &[
        &QOS,
        &BROKER,
        &KEEP_ALIVE,
        &BROKER_PID,
        &RESUME,
        &RECONNECT_GRACE,
        &OUTAGE,
        &OUTAGE_AFTER,
    ],
    outside: broker_outside,
    traits: Traits {
        duplex: true,
        browser_api: None,
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: false,
        streams_response: false,
        http: false,
        multiplexed: false,
        keep_alive: KeepAlive::ClientPing(&KEEP_ALIVE),
        requests: Requests::Stream,
        redelivery: Redelivery::BuiltIn(
            "a persistent session: the broker keeps the subscription of a client that is away \
             and, at QoS 1, queues what it misses until it reconnects with the same client id",
        ),
        floor: false,
    },
};

/// The delivery guarantee events are published and subscribed with.
pub static QOS: Setting<Qos> = Setting {
    name: "mqtt-qos",
    help: "MQTT quality of service for the events: 1 (at least once: every delivery \
           acknowledged, kept for a subscriber that is away, as resuming needs) or 0 (at most \
           once: no acknowledgement, nothing kept)",
    side: Side::Both,
    default: Qos::AtLeastOnce,
    min: Qos::AtMostOnce,
};

/// How often a subscriber PINGs the broker, which answers: MQTT's keep-alive, so a quiet
/// connection is not cut as idle (and a dead one is noticed).
pub static KEEP_ALIVE: Setting<Duration> = Setting {
    name: "mqtt-keep-alive",
    help: "How often each MQTT client sends PINGREQ to the broker (MQTT's keep-alive, whole \
           seconds), so that networks cutting idle connections leave quiet ones alone",
    side: Side::Client,
    default: Duration::from_secs(30),
    min: Duration::from_secs(1),
};

/// The broker both sides use.
pub static BROKER: Setting<Broker> = Setting {
    name: "mqtt-broker",
    help: "The MQTT broker: `embedded` (rumqttd in serve's process, on its address) or \
           mqtt://IP:PORT, a broker running on the serving host (its connections' bytes are \
           read from this host's kernel)",
    side: Side::Both,
    default: Broker::Embedded,
    min: Broker::Embedded,
};

/// The process of an external broker, so the server side's CPU and memory include it.
pub static BROKER_PID: Setting<u64> = Setting {
    name: "mqtt-broker-pid",
    help: "The process ID of the external broker (--mqtt-broker), measured as part of the server \
           (its CPU and memory); without it the server's CPU and memory are unmeasured (0: \
           none)",
    side: Side::Server,
    default: 0,
    min: 0,
};

/// Where the broker runs: inside `serve`, in a process the user named, or unknown.
fn broker_outside(settings: &SettingValues) -> Outside {
    match (BROKER.read(settings), BROKER_PID.read(settings)) {
        (Broker::Embedded, _) => Outside::Nothing,
        (Broker::External(_), 0) => Outside::Unmeasured(
            "the external broker's process was not named (--mqtt-broker-pid)".into(),
        ),
        (Broker::External(_), pid) => Outside::Process(pid as u32),
    }
}

/// MQTT's quality of service levels pushbench measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum Qos {
    /// QoS 0: fire and forget.
    AtMostOnce,
    /// QoS 1: acknowledged, resent until it is.
    AtLeastOnce,
}

impl Value for Qos {
    const KIND: &'static str = "0|1";

    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "0" => Ok(Qos::AtMostOnce),
            "1" => Ok(Qos::AtLeastOnce),
            other => Err(format!(
                "unknown MQTT QoS {other:?}: expected 0 or 1 (QoS 2 is not measured)"
            )),
        }
    }

    fn show(self) -> String {
        match self {
            Qos::AtMostOnce => "0",
            Qos::AtLeastOnce => "1",
        }
        .into()
    }
}

impl Qos {
    fn level(self) -> QoS {
        match self {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
        }
    }
}

/// Where the broker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum Broker {
    /// rumqttd inside `serve`, on the server's address.
    Embedded,
    /// A broker already running at this address.
    External(SocketAddr),
}

impl Value for Broker {
    const KIND: &'static str = "embedded|mqtt://IP:PORT";

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "embedded" {
            return Ok(Broker::Embedded);
        }
        let Some(address) = text.strip_prefix("mqtt://") else {
            return Err(format!(
                "expected `embedded` or mqtt://IP:PORT (such as mqtt://127.0.0.1:1883), got \
                 {text:?}"
            ));
        };
        let address = address.trim_end_matches('/');
        let address = address.replace("localhost:", "127.0.0.1:");
        address.parse().map(Broker::External).map_err(|_| {
            format!("expected mqtt://IP:PORT with an IP address and a port, got {text:?}")
        })
    }

    fn show(self) -> String {
        match self {
            Broker::Embedded => "embedded".into(),
            Broker::External(address) => format!("mqtt://{address}"),
        }
    }
}

/// The topic events are published on.
const EVENTS: &str = "pushbench/events";
/// Subscribers' presence: a retained `join` or `done` at `pushbench/presence/ID`, cleared (empty)
/// when the subscriber leaves or drops.
const PRESENCE: &str = "pushbench/presence/";
/// Every subscriber's presence topic.
const EVERY_PRESENCE: &str = "pushbench/presence/+";
/// The server's word to its subscribers: `bye`, they may go.
const CONTROL: &str = "pushbench/control";
/// What follows the last event on the events topic.
const END: &[u8] = b"end";
/// What the server says once every subscriber is done.
const BYE: &[u8] = b"bye";

/// The largest packet either side accepts: the largest event and the PUBLISH around it.
const MAX_PACKET: usize = MAX_EVENT_BYTES + 1024;
/// How long a done subscriber waits for the server's `bye` before it goes anyway.
const BYE_WAIT: Duration = Duration::from_secs(30);
/// How long a client waits before trying a refused connection again.
const CONNECT_RETRY: Duration = Duration::from_millis(20);
/// Requests a client may queue for its event loop.
const REQUESTS: usize = 1024;
/// QoS 1 publishes in flight (unacknowledged) at once: rumqttc's default, and mosquitto's
/// default of 20 would throttle the publisher.
const INFLIGHT: u16 = 100;

/// Serves the stream through the broker until `shutdown` fires: starts the embedded broker
/// (or finds the external one), then publishes every event of the hub and keeps count of the
/// subscribers' presence.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let settings = &config.settings;
    let (broker, publisher_to) = match BROKER.read(settings) {
        Broker::Embedded => {
            // One broker holds every subscriber's session: it cannot be split over a fleet
            // of processes sharing the port.
            if rustix::net::sockopt::socket_reuseport(&listener)? {
                return Err(std::io::Error::other(
                    "the embedded MQTT broker cannot share its port with other server \
                     processes: past one process's subscribers, run a broker of your own \
                     (--mqtt-broker)",
                ));
            }
            let public = listener.local_addr()?;
            // rumqttd binds its own listeners: the port goes to it.
            drop(listener);
            let private = free_loopback_address()?;
            start_embedded(public, private, config.limits.subscriber_cap())?;
            (public, private)
        }
        Broker::External(address) => {
            drop(listener);
            check_on_this_host(address)?;
            (address, address)
        }
    };
    let qos = QOS.read(settings).level();
    // The publisher's own connection is left out of the subscribers' bytes: on the embedded
    // broker it comes in at a listener of its own; on an external one, by its port (the one
    // connection this process opened to the broker while the publisher connected; in-process
    // subscribers, as tests run them, could open one meanwhile and be left out too).
    let before = peer_ports(broker);
    let (publisher, mut events) = connect_publisher(publisher_to).await?;
    let excluded = if publisher_to == broker {
        peer_ports(broker).difference(&before).copied().collect()
    } else {
        Vec::new()
    };
    let presence = Presence {
        hub: Arc::clone(&hub),
        present: HashMap::new(),
        done: Vec::new(),
        wire: WireBytes {
            broker,
            excluded,
            seen: HashMap::new(),
            counters: Arc::clone(&config.counters),
        },
        bye_sent: false,
    };
    let publishing = publish_stream(publisher.clone(), Arc::clone(&hub), qos, config.batch);
    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        ended = drive_publisher(&mut events, publisher.clone(), presence) => ended,
        published = publishing => match published {
            Ok(()) => {
                // Keep serving presence until shutdown.
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    if let Err(error) = &result {
        tracing::warn!(%error, "mqtt publisher ended");
    }
    result
}

/// The loopback address of a free port, for the embedded broker's publisher listener.
fn free_loopback_address() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// An external broker must be on this host: its connections' bytes are read from this host's
/// kernel, and a figure for a broker elsewhere would be none.
fn check_on_this_host(address: SocketAddr) -> std::io::Result<()> {
    let here = address.ip().is_loopback()
        || std::net::UdpSocket::bind(SocketAddr::new(address.ip(), 0)).is_ok();
    if here {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "--mqtt-broker {}: the broker must run on the serving host (its connections' bytes are \
             read from this host's kernel)",
            Broker::External(address).show()
        )))
    }
}

/// Starts rumqttd in this process: subscribers at `public`, the publisher at `private`. Its
/// threads (a router and one per listener) live as long as the process: rumqttd has no stop.
fn start_embedded(public: SocketAddr, private: SocketAddr, cap: usize) -> std::io::Result<()> {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PACKET,
        max_inflight_count: INFLIGHT as usize,
        auth: None,
        external_auth: None,
        // Any topic may be subscribed to without declaring it first.
        dynamic_filters: true,
    };
    let listener = |name: &str, listen| ServerSettings {
        name: name.into(),
        listen,
        tls: None,
        // rumqttd pauses between accepts by default; subscribers connect at once here.
        next_connection_delay_ms: 0,
        connections: connections.clone(),
    };
    let config = Config {
        router: RouterConfig {
            // The subscribers and the publisher.
            max_connections: cap + 1,
            max_outgoing_packet_count: 200,
            // Each topic's log: up to 16 segments of 64 MiB, so a subscriber that is away
            // finds everything at every preset's stream size.
            max_segment_size: 64 << 20,
            max_segment_count: 16,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([
            ("subscribers".to_owned(), listener("subscribers", public)),
            ("publisher".to_owned(), listener("publisher", private)),
        ])),
        ..Config::default()
    };
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!(%error, "the embedded MQTT broker stopped");
            }
        })?;
    Ok(())
}

/// The publisher's client, connected (retrying while the embedded broker comes up), with its
/// subscription to presence asked for.
async fn connect_publisher(broker: SocketAddr) -> std::io::Result<(AsyncClient, EventLoop)> {
    let id = format!("pushbench-publisher-{}", std::process::id());
    let mut options = options(&id, broker, KEEP_ALIVE.default);
    options.set_clean_session(true).set_inflight(INFLIGHT);
    let deadline = now_ns() + Duration::from_secs(10).as_nanos() as u64;
    loop {
        let (client, mut events) = AsyncClient::new(options.clone(), REQUESTS);
        match events.poll().await {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                client
                    .subscribe(EVERY_PRESENCE, QoS::AtLeastOnce)
                    .await
                    .map_err(std::io::Error::other)?;
                return Ok((client, events));
            }
            Ok(other) => {
                return Err(std::io::Error::other(format!(
                    "the MQTT broker at {broker} answered the publisher's CONNECT with {other:?}"
                )))
            }
            Err(error) if now_ns() < deadline => {
                tracing::debug!(%error, "broker not up yet");
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            Err(error) => {
                return Err(std::io::Error::other(format!(
                    "cannot reach the MQTT broker at {broker}: {error}"
                )))
            }
        }
    }
}

/// A client's options: its id, the broker, the packet size events need, the keep-alive.
fn options(id: &str, broker: SocketAddr, keep_alive: Duration) -> MqttOptions {
    let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
    options
        .set_keep_alive(keep_alive)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options
}

/// Publishes every event of the hub as it comes, then `end`.
async fn publish_stream(
    client: AsyncClient,
    hub: Arc<Hub>,
    qos: QoS,
    limit: crate::hub::BatchLimit,
) -> std::io::Result<()> {
    let mut reader = hub.reader(0);
    while let Some(batch) = reader.next_batch(limit).await {
        for (_, event) in batch.iter() {
            client
                .publish_bytes(EVENTS, qos, false, event.clone())
                .await
                .map_err(std::io::Error::other)?;
        }
    }
    // The hub waits for its readers to go before the server stops.
    drop(reader);
    if hub.is_complete() {
        client
            .publish_bytes(EVENTS, qos, false, Bytes::from_static(END))
            .await
            .map_err(std::io::Error::other)?;
    }
    // Presence goes on being served by the event loop until shutdown.
    std::future::pending().await
}

/// Drives the publisher's connection and counts presence from what it receives.
async fn drive_publisher(
    events: &mut EventLoop,
    client: AsyncClient,
    mut presence: Presence,
) -> std::io::Result<()> {
    let mut sample = tokio::time::interval(WIRE_SAMPLE_EVERY);
    loop {
        tokio::select! {
            polled = events.poll() => match polled {
                Ok(rumqttc::Event::Incoming(Packet::Publish(message))) if message.topic.starts_with(PRESENCE) => {
                    let id = &message.topic[PRESENCE.len()..];
                    if presence.heard(id, &message.payload) {
                        client
                            .publish(CONTROL, QoS::AtLeastOnce, false, BYE)
                            .await
                            .map_err(std::io::Error::other)?;
                    }
                }
                Ok(rumqttc::Event::Incoming(Packet::PubAck(_))) if presence.bye_sent => {
                    // `bye` is with the broker (or an event was): subscribers may go, and
                    // the server may stop once they have.
                    presence.release();
                }
                Ok(_) => {}
                Err(error) => {
                    return Err(std::io::Error::other(format!(
                        "the publisher's connection to the broker failed: {error}"
                    )))
                }
            },
            _ = sample.tick() => presence.wire.sample(),
        }
    }
}

/// How often the subscribers' connections' bytes are read while the stream runs (a
/// connection that closes in between keeps what it had at the last reading).
const WIRE_SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// The subscribers as their presence messages tell them.
struct Presence {
    hub: Arc<Hub>,
    /// Joined and not done: each counts as a subscriber of the hub.
    present: HashMap<String, SubscriberGuard>,
    /// Done, still counted until `bye` is out.
    done: Vec<SubscriberGuard>,
    wire: WireBytes,
    bye_sent: bool,
}

impl Presence {
    /// Takes subscriber `id`'s presence; true when every subscriber is done with a complete
    /// stream (time for `bye`).
    fn heard(&mut self, id: &str, message: &[u8]) -> bool {
        match message {
            b"join" => {
                let hub = &self.hub;
                self.present
                    .entry(id.to_owned())
                    .or_insert_with(|| hub.join());
            }
            b"done" => {
                if let Some(guard) = self.present.remove(id) {
                    self.done.push(guard);
                }
            }
            // Left or dropped: it counts no more unless it joins again.
            b"" => drop(self.present.remove(id)),
            _ => tracing::debug!(id, "a presence message that is not join, done or empty"),
        }
        let all_done = self.present.is_empty() && !self.done.is_empty();
        if all_done && self.hub.is_complete() && !self.bye_sent {
            // Every subscriber has everything and is still connected: their connections'
            // bytes are complete now.
            self.wire.sample();
            self.wire.count();
            self.bye_sent = true;
            return true;
        }
        false
    }

    /// The done subscribers stop counting: the hub sees them leave.
    fn release(&mut self) {
        self.done.clear();
    }
}

/// The bytes of the subscribers' connections to the broker, from the kernel.
struct WireBytes {
    broker: SocketAddr,
    /// Peer ports of connections that are not subscribers' (the publisher's).
    excluded: Vec<u16>,
    /// The latest reading of each connection, by its peer address.
    seen: HashMap<SocketAddr, tcp_info::TcpBytes>,
    counters: Arc<crate::metrics::sockets::SocketCounters>,
}

impl WireBytes {
    /// Reads every subscriber connection's bytes now.
    fn sample(&mut self) {
        match tcp_info::on_local_port(self.broker.port()) {
            Ok(sockets) => {
                for socket in sockets {
                    let ours = socket.local.ip() == self.broker.ip()
                        || self.broker.ip().is_unspecified();
                    if ours && !self.excluded.contains(&socket.peer.port()) {
                        self.seen.insert(socket.peer, socket);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the broker's connections' bytes"),
        }
    }

    /// Adds what was read to the server's socket counters, once.
    fn count(&mut self) {
        for socket in std::mem::take(&mut self.seen).into_values() {
            self.counters.connection();
            // The broker's side: what it sent went out to the subscriber.
            self.counters.wrote(socket.sent as usize);
            self.counters.read(socket.received as usize);
        }
    }
}

/// Local ports of this process's connections to the broker (to tell the publisher's apart).
fn peer_ports(broker: SocketAddr) -> std::collections::HashSet<u16> {
    tcp_info::to_peer_port_from(broker.port(), std::process::id())
        .unwrap_or_default()
        .into_iter()
        .filter(|socket| socket.peer.ip() == broker.ip())
        .map(|socket| socket.local.port())
        .collect()
}

/// What a batch becomes on one subscriber's connection: a PUBLISH per event, at QoS 1 with its
/// packet id (what the broker writes, for the framing bench).
pub(crate) fn frame(batch: &Batch, out: &mut BytesMut) {
    for (seq, event) in batch.iter() {
        let mut publish = rumqttc::Publish::from_bytes(EVENTS, QoS::AtLeastOnce, event.clone());
        publish.pkid = (seq % u16::MAX as u64) as u16 + 1;
        // Writing into a growable buffer fails only past MQTT's 256 MiB packet limit.
        let _ = publish.write(out);
    }
}

/// Distinguishes the client ids of the subscribers of one process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Subscribes through the broker and feeds each event to the sink. The session is persistent
/// (unless `--resume off`): after a drop or an outage the client connects again with the same
/// id and the broker sends what it kept.
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let broker = match BROKER.read(&config.settings) {
        Broker::Embedded => server,
        Broker::External(address) => address,
    };
    let id = format!(
        "pushbench-{}-{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let qos = QOS.read(&config.settings).level();
    let mut sink = Resuming::new(sink, config);
    let mut options = options(&id, broker, KEEP_ALIVE.read(&config.settings));
    options
        .set_clean_session(!sink.resumes())
        // Acknowledged by `connect_once` once the sink has each event.
        .set_manual_acks(true)
        .set_last_will(LastWill::new(
            format!("{PRESENCE}{id}"),
            Vec::new(),
            QoS::AtLeastOnce,
            true,
        ));
    loop {
        let ended = connect_once(&options, config, &mut sink, qos).await;
        if !sink.again(ended).await? {
            return Ok(());
        }
    }
}

/// One connection: subscribes (unless the broker kept the session), announces itself, and
/// reads events until the sink has enough (then says `done`, waits for `bye` and goes) or the
/// stream's `end`. An error when the connection fails first.
async fn connect_once(
    options: &MqttOptions,
    config: &ClientConfig,
    sink: &mut Resuming<'_>,
    qos: QoS,
) -> Result<(), ClientError> {
    let id = options.client_id();
    let broker = broker_of(options);
    let failed = |error: ConnectionError| match error {
        ConnectionError::Io(e) => ClientError::Connect {
            addr: broker,
            reason: e.to_string(),
        },
        other => ClientError::Protocol(format!("MQTT: {other}")),
    };
    // A device retries until the broker answers, within the connect timeout: an embedded
    // broker takes its port over from the listener `serve` bound, and refuses for a moment.
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let (client, mut events, connack) = loop {
        let (client, mut events) = AsyncClient::new(options.clone(), REQUESTS);
        events
            .network_options
            .set_connection_timeout(config.connect_timeout.as_secs().max(1));
        match events.poll().await {
            Ok(connack) => break (client, events, connack),
            Err(ConnectionError::Io(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            Err(error) => return Err(failed(error)),
        }
    };
    // The first packet is the CONNACK: the session's state says whether to subscribe.
    match connack {
        rumqttc::Event::Incoming(Packet::ConnAck(ack)) if ack.session_present => {
            sink.connected(now_ns());
            announce(&client, "join", &id).await?;
        }
        rumqttc::Event::Incoming(Packet::ConnAck(_)) => {
            client
                .subscribe_many([
                    rumqttc::SubscribeFilter::new(EVENTS.into(), qos),
                    rumqttc::SubscribeFilter::new(CONTROL.into(), QoS::AtLeastOnce),
                ])
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
        }
        other => {
            return Err(ClientError::Protocol(format!(
                "MQTT: expected CONNACK, got {other:?}"
            )))
        }
    }
    loop {
        let packet = match events.poll().await.map_err(failed)? {
            rumqttc::Event::Incoming(packet) => packet,
            rumqttc::Event::Outgoing(_) => continue,
        };
        match packet {
            Packet::SubAck(ack) => {
                if let Some(refused) = ack
                    .return_codes
                    .iter()
                    .find(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure))
                {
                    return Err(ClientError::Protocol(format!(
                        "the broker refused the subscription: {refused:?}"
                    )));
                }
                sink.connected(now_ns());
                announce(&client, "join", &id).await?;
            }
            Packet::Publish(message) if message.topic == EVENTS => {
                let flow = if *message.payload == *END {
                    // The stream is over at the broker: what has not come is lost.
                    Flow::Stop
                } else {
                    deliver(sink, &message.payload, now_ns())
                };
                // Acknowledged once the sink has it, not when it was read: what rumqttc read
                // ahead and an outage then dropped is sent again.
                acknowledge(&client, &message).await?;
                if flow == Flow::Stop {
                    if !sink.stopped() && *message.payload != *END {
                        // The outage fault: away now, the session kept, back later.
                        let _ = client.disconnect().await;
                        flush_until_disconnected(&mut events).await;
                        return Ok(());
                    }
                    return finish(&client, &mut events, &id).await;
                }
            }
            Packet::Publish(message) => acknowledge(&client, &message).await?,
            _ => {}
        }
    }
}

/// The subscriber has the stream: says so, waits for the server's `bye` (so its connection's
/// bytes are read whole), and leaves without a session behind it.
async fn finish(client: &AsyncClient, events: &mut EventLoop, id: &str) -> Result<(), ClientError> {
    announce(client, "done", id).await?;
    let bye = async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(Packet::Publish(message))) => {
                    let _ = acknowledge(client, &message).await;
                    if message.topic == CONTROL && *message.payload == *BYE {
                        return;
                    }
                }
                Ok(_) => {}
                // The server is gone: nothing to wait for.
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(BYE_WAIT, bye).await;
    // No presence and no queue is kept for a subscriber that will not come back.
    let _ = announce(client, "", id).await;
    let _ = client.unsubscribe(EVENTS).await;
    let _ = client.disconnect().await;
    flush_until_disconnected(events).await;
    Ok(())
}

/// Acknowledges a QoS 1 message (nothing for QoS 0). The request queue cannot be full: it
/// holds more than a broker lets be unacknowledged at once.
async fn acknowledge(client: &AsyncClient, message: &rumqttc::Publish) -> Result<(), ClientError> {
    client
        .ack(message)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

/// Drives the connection until the DISCONNECT asked for has gone out (and every request
/// before it: acknowledgements, presence), or for a second at most.
async fn flush_until_disconnected(events: &mut EventLoop) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Sets this subscriber's retained presence (`join`, `done`, or empty: gone).
async fn announce(client: &AsyncClient, what: &str, id: &str) -> Result<(), ClientError> {
    client
        .publish(format!("{PRESENCE}{id}"), QoS::AtLeastOnce, true, what)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))
}

/// The broker's address as the options name it.
fn broker_of(options: &MqttOptions) -> SocketAddr {
    let (host, port) = options.broker_address();
    SocketAddr::new(
        host.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        port,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The broker setting reads `embedded` and mqtt:// addresses, and says what is wrong.
    #[test]
    fn broker_setting_parses() {
        assert_eq!(Broker::parse("embedded"), Ok(Broker::Embedded));
        assert_eq!(
            Broker::parse("mqtt://127.0.0.1:1883"),
            Ok(Broker::External("127.0.0.1:1883".parse().unwrap()))
        );
        assert_eq!(
            Broker::parse("mqtt://localhost:1883/"),
            Ok(Broker::External("127.0.0.1:1883".parse().unwrap()))
        );
        let error = Broker::parse("tcp://127.0.0.1:1883").unwrap_err();
        assert!(error.contains("mqtt://IP:PORT"), "{error}");
        let error = Broker::parse("mqtt://broker.example:1883").unwrap_err();
        assert!(error.contains("IP address"), "{error}");
        for broker in [Broker::Embedded, Broker::External("[::1]:1883".parse().unwrap())] {
            assert_eq!(Broker::parse(&broker.show()), Ok(broker));
        }
    }

    /// QoS 0 and 1 only.
    #[test]
    fn qos_setting_parses() {
        assert_eq!(Qos::parse("1"), Ok(Qos::AtLeastOnce));
        assert!(Qos::parse("2").unwrap_err().contains("QoS 2"));
    }

    /// Each event becomes one PUBLISH whose payload is the event, as a standard decoder reads
    /// it back.
    #[test]
    fn frames_are_publish_packets() {
        let batch = Batch {
            gap: None,
            first_seq: 5,
            events: vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{}")],
        };
        let mut out = BytesMut::new();
        frame(&batch, &mut out);
        let mut payloads = Vec::new();
        while !out.is_empty() {
            match Packet::read(&mut out, MAX_PACKET).unwrap() {
                Packet::Publish(publish) => payloads.push(publish.payload),
                other => panic!("not a PUBLISH: {other:?}"),
            }
        }
        assert_eq!(payloads, batch.events);
    }
}
