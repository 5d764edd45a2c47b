//! MQTT 3.1.1 through a real broker. The server side is broker plus publisher: by default an
//! embedded rumqttd in `serve`'s own process (so its CPU and memory are `serve`'s), or an
//! outside one: Mosquitto started and measured by its profile (`--server mosquitto`, which
//! points this publisher at it), or with `--mqtt-broker mqtt://IP:PORT` a broker someone else
//! runs on this host (unmeasured). The
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
//! With `--tls on`, subscribers reach the embedded broker over TLS (MQTT's port 8883 idiom, on
//! the row's port): rumqttd's own rustls serving the run's certificate, which it reads from
//! files written for it, and rumqttc on the house's rustls configuration trusting it. The
//! publisher stays on its private plain listener inside the process. An outside broker's TLS
//! is its own to set up, and refused.
//!
//! Resume: subscribers hold a persistent session (clean session off) under a client id of their
//! own; the broker keeps the subscription while they are away and, at QoS 1, queues what they
//! miss, which it sends when they come back with the same id.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::{MqttOptions, QoS};

use super::resume::{CHURN, OUTAGE, OUTAGE_AFTER, RECONNECT_GRACE, RESUME};
use super::{
    Colour, KeepAlive, Outside, Redelivery, Requests, Setting, SettingValues, Side, Spec, Traits,
};
use crate::event::MAX_EVENT_BYTES;
use crate::hub::Batch;
use crate::settings::Value;

mod client;
mod server;

/// Publish/subscribe through a broker; resuming is the broker's persistent session.
pub static SPEC: Spec = Spec {
    name: "mqtt",
    summary: "MQTT 3.1.1 through a broker (embedded rumqttd, or --mqtt-broker): QoS 0 or 1, \
              persistent sessions",
    colour: Colour(136, 34, 85),
    cursor_path: None,
    interop: Some("mosquitto_sub"),
    credentials: &[],
    servers: &[server_impl!(
        super::implementation::OWN,
        "embedded rumqttd (or an external broker) with a rumqttc publisher",
        server::serve,
        server::refuses,
        Some("rumqttd")
    )],
    clients: &[client_impl!(
        super::implementation::OWN,
        "rumqttc with a persistent session",
        client::subscribe
    )],
    settings: &[
        &QOS,
        &BROKER,
        &KEEP_ALIVE,
        &RESUME,
        &RECONNECT_GRACE,
        &OUTAGE,
        &OUTAGE_AFTER,
        &CHURN,
        &super::tls::TLS,
        &super::upstream::UPSTREAM_RATE,
        &super::upstream::UPSTREAM_ECHO,
        &super::upstream::UPSTREAM_DELAY,
    ],
    outside: broker_outside,
    guarantee: qos_one_repeats,
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
        udp: false,
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
           mqtt://IP:PORT, a broker someone else runs on the serving host (its connections' \
           bytes are read from this host's kernel, its CPU and memory are not measured; \
           `--server mosquitto` starts one that is)",
    side: Side::Both,
    default: Broker::Embedded,
    min: Broker::Embedded,
};

/// At QoS 1 the broker resends what a subscriber had not acknowledged when its connection was
/// cut: at least once, so a repeat is the guarantee's, counted but not a failure.
fn qos_one_repeats(settings: &SettingValues) -> super::spec::Guarantee {
    super::spec::Guarantee {
        repeats: QOS.read(settings) == Qos::AtLeastOnce,
        ..super::spec::Guarantee::default()
    }
}

/// Where the broker runs: inside `serve`, or in a process someone else started, which is not
/// measured (a broker's profile, `--server mosquitto`, starts one that is).
fn broker_outside(settings: &SettingValues) -> Outside {
    match BROKER.read(settings) {
        Broker::Embedded => Outside::Nothing,
        Broker::External(_) => Outside::Unmeasured(
            "the broker runs in a process pushbench did not start (--mqtt-broker); a profile \
             starts one it measures (--server mosquitto)"
                .into(),
        ),
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

/// The topic events are published on (and, where the workload has several streams, the end
/// of the stream: every subscriber follows it besides its streams' topics).
const EVENTS: &str = "pushbench/events";

/// The MQTT topic of stream `topic`'s events: `pushbench/events/7`, one topic filter per
/// stream a subscriber follows, so the broker does the routing.
fn stream_topic(topic: u32) -> String {
    format!("{EVENTS}/{topic}")
}
/// Where subscribers publish their messages up (two-way traffic), for the server to take.
const UP: &str = "pushbench/up";

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

/// A client's options: its id, the broker, the packet size events need, the keep-alive.
fn options(id: &str, broker: SocketAddr, keep_alive: Duration) -> MqttOptions {
    let mut options = MqttOptions::new(id, broker.ip().to_string(), broker.port());
    options
        .set_keep_alive(keep_alive)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rumqttc::Packet;

    use super::*;

    /// TLS is the embedded broker's: with an outside broker it is refused, with the reason.
    #[test]
    fn tls_is_refused_only_with_an_outside_broker() {
        use crate::settings::SettingValues;
        use crate::transport::tls::TLS;
        let embedded = SettingValues::from_pairs([TLS.set(true)]);
        assert_eq!(server::refuses(&embedded), None);
        let outside = SettingValues::from_pairs([
            TLS.set(true),
            BROKER.set(Broker::External("127.0.0.1:1883".parse().unwrap())),
        ]);
        let why = server::refuses(&outside).unwrap();
        assert!(why.contains("--mqtt-broker"), "{why}");
        let plain = SettingValues::from_pairs([
            BROKER.set(Broker::External("127.0.0.1:1883".parse().unwrap()))
        ]);
        assert_eq!(server::refuses(&plain), None);
    }

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
        for broker in [
            Broker::Embedded,
            Broker::External("[::1]:1883".parse().unwrap()),
        ] {
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
            seqs: Vec::new(),
            events: vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"{}")],
            copies: Vec::new(),
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
