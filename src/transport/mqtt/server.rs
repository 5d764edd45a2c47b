//! The MQTT server side: the embedded rumqttd broker (or an external one) and the rumqttc
//! publisher, which in two-way traffic also subscribes to the subscribers' messages up.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, EventLoop, Packet, QoS};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ns;
use crate::hub::{Hub, SubscriberGuard};
use crate::metrics::tcp_info::{self, WireBytes};
use crate::settings::Value;
use crate::transport::tls::TLS;
use crate::transport::ServerConfig;

use super::{
    options, Broker, BROKER, BYE, CONNECT_RETRY, CONTROL, END, EVENTS, EVERY_PRESENCE, INFLIGHT,
    KEEP_ALIVE, MAX_PACKET, PRESENCE, QOS, REQUESTS, UP,
};

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
    let mut pem_files = None;
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
            // Over TLS, rumqttd reads the certificate and key from files: written for it, and
            // removed once the server is done (it reads them as its listener starts).
            let tls = match TLS.read(settings) {
                true => Some(PemFiles::write(&config.tls, public.port())?),
                false => None,
            };
            start_embedded(
                (public, private),
                config.limits.subscriber_cap(),
                tls.as_ref(),
            )?;
            pem_files = tls;
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
    let (publisher, mut events) = connect_publisher(publisher_to, hub.two_way()).await?;
    let excluded = if publisher_to == broker {
        peer_ports(broker).difference(&before).copied().collect()
    } else {
        Vec::new()
    };
    let presence = Presence {
        hub: Arc::clone(&hub),
        present: HashMap::new(),
        done: Vec::new(),
        wire: {
            let mut wire = WireBytes::new(broker, Arc::clone(&config.counters));
            excluded.into_iter().for_each(|port| wire.exclude(port));
            wire
        },
        bye_sent: false,
    };
    // Messages up are handed to the hub in the order they came, by a task of their own, so a
    // slow handler (the planted delay) never holds up the publisher's connection.
    let (up, taking) = tokio::sync::mpsc::unbounded_channel();
    let taker = tokio::spawn(take_up(Arc::clone(&hub), taking));
    let publishing = publish_stream(publisher.clone(), Arc::clone(&hub), qos, config.batch);
    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        ended = drive_publisher(&mut events, publisher.clone(), presence, up) => ended,
        published = publishing => match published {
            Ok(()) => {
                // Keep serving presence until shutdown.
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    taker.abort();
    drop(pem_files);
    if let Err(error) = &result {
        tracing::warn!(%error, "mqtt publisher ended");
    }
    result
}

/// What the server cannot do, refused before the run with the reason.
pub(super) fn refuses(settings: &crate::settings::SettingValues) -> Option<String> {
    let outside = matches!(BROKER.read(settings), Broker::External(_));
    (outside && TLS.read(settings)).then(|| {
        "--tls on with --mqtt-broker: an outside broker's TLS listener is its own (its \
         certificate is not the run's), so pushbench cannot set it up; TLS is measured on the \
         embedded broker"
            .to_owned()
    })
}

/// The server's certificate and key as PEM files for rumqttd, in a directory of this process's
/// own (the key readable by this user only), removed when dropped.
pub(super) struct PemFiles {
    dir: std::path::PathBuf,
}

impl PemFiles {
    /// Writes them for the broker listening on `port` (a process may run several).
    fn write(tls: &crate::transport::tls::TlsMaterial, port: u16) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let (Some(cert), Some(key)) = (&tls.cert_pem, &tls.key_pem) else {
            return Err(std::io::Error::other(
                "--tls on: the server has no certificate and key",
            ));
        };
        let dir =
            std::env::temp_dir().join(format!("pushbench-mqtt-tls-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let files = Self { dir };
        std::fs::write(files.cert(), cert.as_bytes())?;
        let mut key_file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(files.key())?;
        std::io::Write::write_all(&mut key_file, key.as_bytes())?;
        Ok(files)
    }

    fn cert(&self) -> std::path::PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> std::path::PathBuf {
        self.dir.join("key.pem")
    }
}

impl Drop for PemFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Hands the messages that came up to the hub, in order, each with its time of receipt. MQTT
/// has no answer to a PUBLISH a subscriber of the broker refuses: one that is not a message
/// up is logged, and the upstream ledger counts what its sender then lost.
async fn take_up(hub: Arc<Hub>, mut taking: tokio::sync::mpsc::UnboundedReceiver<(Bytes, u64)>) {
    while let Some((wire, received_ns)) = taking.recv().await {
        if let Err(why) = hub.receive_upstream_at(wire, received_ns).await {
            tracing::warn!(%why, "a message up refused");
        }
    }
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

/// Starts rumqttd in this process: subscribers at `public` (over TLS with `tls`), the publisher
/// at `private` (in-process, plain). Its threads (a router and one per listener) live as long
/// as the process: rumqttd has no stop.
fn start_embedded(
    (public, private): (SocketAddr, SocketAddr),
    cap: usize,
    tls: Option<&PemFiles>,
) -> std::io::Result<()> {
    use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};
    let connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PACKET,
        max_inflight_count: INFLIGHT as usize,
        auth: None,
        external_auth: None,
        // Any topic may be subscribed to without declaring it first.
        dynamic_filters: true,
    };
    let listener = |name: &str, listen, tls: Option<&PemFiles>| ServerSettings {
        name: name.into(),
        listen,
        tls: tls.map(|files| TlsConfig::Rustls {
            capath: None,
            certpath: files.cert().display().to_string(),
            keypath: files.key().display().to_string(),
        }),
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
            (
                "subscribers".to_owned(),
                listener("subscribers", public, tls),
            ),
            ("publisher".to_owned(), listener("publisher", private, None)),
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
async fn connect_publisher(
    broker: SocketAddr,
    two_way: bool,
) -> std::io::Result<(AsyncClient, EventLoop)> {
    let id = format!("pushbench-publisher-{}", std::process::id());
    let mut options = options(&id, broker, KEEP_ALIVE.default);
    options.set_clean_session(true).set_inflight(INFLIGHT);
    let deadline = now_ns() + Duration::from_secs(10).as_nanos() as u64;
    loop {
        let (client, mut events) = AsyncClient::new(options.clone(), REQUESTS);
        // Acknowledgements and events leave at once, not after Nagle's wait (see the client).
        events.network_options.set_tcp_nodelay(true);
        match events.poll().await {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                client
                    .subscribe(EVERY_PRESENCE, QoS::AtLeastOnce)
                    .await
                    .map_err(std::io::Error::other)?;
                if two_way {
                    client
                        .subscribe(UP, QoS::AtLeastOnce)
                        .await
                        .map_err(std::io::Error::other)?;
                }
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

/// Publishes every event of the hub as it comes, then `end`.
async fn publish_stream(
    client: AsyncClient,
    hub: Arc<Hub>,
    qos: QoS,
    limit: crate::hub::BatchLimit,
) -> std::io::Result<()> {
    let mut reader = hub.reader(0);
    let (tagged, streams) = (hub.tagged(), hub.streams());
    // Each stream (and room) on a topic of its own; the one broadcast stream on the events topic.
    let topic_of = |stream: Option<u32>| match stream {
        Some(stream) if tagged => super::stream_topic(stream),
        _ => EVENTS.to_owned(),
    };
    while let Some(batch) = reader.next_batch(limit).await {
        for (seq, event) in batch.iter() {
            let topic = topic_of(Some(crate::workload::place(seq, streams).0));
            client
                .publish_bytes(topic, qos, false, event.clone())
                .await
                .map_err(std::io::Error::other)?;
        }
        // Copies of messages up go to the room they were sent to (two-way traffic).
        for copy in &batch.copies {
            let room = crate::upstream::Message::decode(copy).and_then(|m| m.topic);
            client
                .publish_bytes(topic_of(room), qos, false, copy.clone())
                .await
                .map_err(std::io::Error::other)?;
        }
    }
    // The publisher's reader is the broker's, not a subscriber's: subscribers confirm the end
    // themselves, with their `done` presence, which the server counts. The hub waits for its
    // readers to go before the server stops.
    reader.confirm_end();
    drop(reader);
    if hub.is_complete() {
        // Each stream ends on its own topic, after its last event there.
        let ends: Vec<String> = match tagged {
            true => (0..streams as u32).map(super::stream_topic).collect(),
            false => vec![EVENTS.to_owned()],
        };
        for topic in ends {
            client
                .publish_bytes(topic, qos, false, Bytes::from_static(END))
                .await
                .map_err(std::io::Error::other)?;
        }
    }
    // Presence goes on being served by the event loop until shutdown.
    std::future::pending().await
}

/// Drives the publisher's connection and counts presence from what it receives.
async fn drive_publisher(
    events: &mut EventLoop,
    client: AsyncClient,
    mut presence: Presence,
    up: tokio::sync::mpsc::UnboundedSender<(Bytes, u64)>,
) -> std::io::Result<()> {
    let mut sample = tokio::time::interval(WIRE_SAMPLE_EVERY);
    let mut sent = 0;
    loop {
        tokio::select! {
            polled = events.poll() => match polled {
                Ok(rumqttc::Event::Incoming(Packet::Publish(message))) if message.topic == UP => {
                    // The taker lives as long as this loop.
                    let _ = up.send((message.payload, now_ns()));
                }
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
            _ = sample.tick() => {
                // The broker still sending its subscribers a backlog is delivery under way,
                // though every event left the publisher long ago: the drain waits for it.
                let now = presence.wire.sample();
                if now > std::mem::replace(&mut sent, now) {
                    presence.hub.relayed();
                }
            }
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

/// Local ports of this process's connections to the broker (to tell the publisher's apart).
fn peer_ports(broker: SocketAddr) -> std::collections::HashSet<u16> {
    tcp_info::to_peer_port_from(broker.port(), std::process::id())
        .unwrap_or_default()
        .into_iter()
        .filter(|socket| socket.peer.ip() == broker.ip())
        .map(|socket| socket.local.port())
        .collect()
}
