//! pushbench's MQTT subscriber: a rumqttc client holding a persistent session, publishing its
//! messages up (two-way traffic) on the same connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, EventLoop, LastWill, MqttOptions, Packet, QoS};

use crate::clock::now_ns;
use crate::transport::resume::Resuming;
use crate::transport::tls::TLS;
use crate::transport::upstream::{Duplex, Schedule};
use crate::transport::{deliver, ClientConfig, ClientError, Flow, Sink, Target};

use super::{
    options, stream_topic, Broker, BROKER, BYE, BYE_WAIT, CONNECT_RETRY, CONTROL, END, EVENTS,
    KEEP_ALIVE, PRESENCE, QOS, REQUESTS, UP,
};

/// Distinguishes the client ids of the subscribers of one process.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Subscribes through the broker and feeds each event to the sink. The session is persistent
/// (unless `--resume off`): after a drop or an outage the client connects again with the same
/// id and the broker sends what it kept.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let server = target.addr;
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
    let mut schedule = Schedule::of(config);
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
    if TLS.read(&config.settings) {
        // The house's rustls configuration (ring, the run's certificate trusted), no ALPN:
        // MQTT over TLS names no protocol.
        let tls = config
            .tls
            .client_config(&[])
            .map_err(|e| ClientError::Config(e.to_string()))?;
        options.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    loop {
        let ended = connect_once(&options, config, &mut sink, &mut schedule, qos).await;
        if !sink.again(ended).await? {
            return Ok(());
        }
    }
}

/// Whether a connection failed at the socket before the broker answered: the broker is not
/// up yet (or went), and a device would try again. rumqttc reports a reset read while it
/// waits for the CONNACK inside its state error, not as `Io`; a refusal with a return code is
/// the broker's answer and final.
fn broker_not_up(error: &ConnectionError) -> bool {
    use rumqttc::StateError;
    matches!(
        error,
        ConnectionError::Io(_)
            | ConnectionError::MqttState(StateError::Io(_))
            | ConnectionError::MqttState(StateError::ConnectionAborted)
            | ConnectionError::MqttState(StateError::Deserialization(
                rumqttc::mqttbytes::Error::Io(_)
            ))
    )
}

/// One connection: subscribes (unless the broker kept the session), announces itself, and
/// reads events until the sink has enough and its messages up are all published (then says
/// `done`, waits for `bye` and goes) or the stream's `end`. An error when the connection fails
/// first.
async fn connect_once(
    options: &MqttOptions,
    config: &ClientConfig,
    sink: &mut Resuming<'_>,
    schedule: &mut Option<Schedule>,
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
    // broker takes its port over from the listener `serve` bound, so for a moment a connect
    // is refused, or lands in the old listener's queue and is reset before any CONNACK.
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let (client, mut events, connack) = loop {
        let (client, mut events) = AsyncClient::new(options.clone(), REQUESTS);
        events
            .network_options
            .set_connection_timeout(config.connect_timeout.as_secs().max(1));
        // Small packets (acknowledgements, messages up) leave at once, not after Nagle's wait
        // for the broker's delayed ACK (up to 40 ms here).
        events.network_options.set_tcp_nodelay(true);
        match events.poll().await {
            Ok(connack) => break (client, events, connack),
            Err(error) if broker_not_up(&error) && tokio::time::Instant::now() < deadline => {
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
            // The events topic always (the broadcast stream, or the end of a tagged one), and
            // one filter per stream followed.
            let streams = config.topics.iter().flatten().copied().map(stream_topic);
            let filters = [EVENTS.to_owned()]
                .into_iter()
                .chain(streams)
                .map(|topic| rumqttc::SubscribeFilter::new(topic, qos))
                .chain([rumqttc::SubscribeFilter::new(
                    CONTROL.into(),
                    QoS::AtLeastOnce,
                )]);
            client
                .subscribe_many(filters)
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
        }
        other => {
            return Err(ClientError::Protocol(format!(
                "MQTT: expected CONNACK, got {other:?}"
            )))
        }
    }
    // The `end`s that close the subscription: one per stream followed, or the broadcast one.
    let ends_due = config.topics.as_ref().map_or(1, Vec::len);
    let mut ends_seen = 0;
    let mut duplex = Duplex::new(schedule);
    // A message up waiting for room in the client's request queue.
    let mut unsent: Option<Vec<u8>> = None;
    loop {
        if duplex.done() && unsent.is_none() {
            // Connected until every subscriber has the stream, where the load asks; the
            // connection is polled meanwhile so its keep-alive goes on.
            let lingering = sink.linger();
            tokio::pin!(lingering);
            loop {
                tokio::select! {
                    _ = &mut lingering => break,
                    polled = events.poll() => if polled.is_err() { break },
                }
            }
            return finish(&client, &mut events, &id, config.topics.as_deref()).await;
        }
        // Published without waiting: the queue is emptied only by polling the connection,
        // which this loop does, so a full one is tried again after the next packet.
        if let Some(message) = unsent.take() {
            match client.try_publish(UP, qos, false, message) {
                Ok(()) => {}
                Err(rumqttc::ClientError::TryRequest(rumqttc::Request::Publish(p))) => {
                    unsent = Some(p.payload.to_vec());
                }
                Err(e) => return Err(ClientError::Protocol(format!("MQTT: sending up: {e}"))),
            }
        }
        let polled = tokio::select! {
            polled = events.poll() => polled,
            message = duplex.due(), if unsent.is_none() => {
                unsent = Some(message);
                continue;
            }
        };
        let packet = match polled.map_err(failed)? {
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
            Packet::Publish(message) if message.topic.starts_with(EVENTS) => {
                let flow = if *message.payload == *END {
                    // The stream is over at the broker: what has not come is lost. Each
                    // stream followed ends on its own topic (the broker need not keep order
                    // across topics), so the subscription is over when all have.
                    ends_seen += 1;
                    if ends_seen >= ends_due {
                        Flow::Stop
                    } else {
                        Flow::Continue
                    }
                } else {
                    deliver(sink, &message.payload, now_ns())
                };
                // Acknowledged once the sink has it, not when it was read: what rumqttc read
                // ahead and an outage then dropped is sent again.
                acknowledge(&client, &message).await?;
                if flow == Flow::Stop && !sink.stopped() && *message.payload != *END {
                    // The outage fault: away now, the session kept, back later.
                    let _ = client.disconnect().await;
                    flush_until_disconnected(&mut events).await;
                    return Ok(());
                }
                duplex.took(flow, sink);
            }
            Packet::Publish(message) => acknowledge(&client, &message).await?,
            _ => {}
        }
    }
}

/// The subscriber has the stream: says so, waits for the server's `bye` (so its connection's
/// bytes are read whole), and leaves without a session behind it.
async fn finish(
    client: &AsyncClient,
    events: &mut EventLoop,
    id: &str,
    topics: Option<&[u32]>,
) -> Result<(), ClientError> {
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
    for topic in topics.unwrap_or_default() {
        let _ = client.unsubscribe(stream_topic(*topic)).await;
    }
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
/// before it: acknowledgements, presence), or for [`FLUSH_WAIT`] at most.
async fn flush_until_disconnected(events: &mut EventLoop) {
    let _ = tokio::time::timeout(FLUSH_WAIT, async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// How long a subscriber leaving for the outage fault drives its connection for the requests
/// queued before its DISCONNECT. An acknowledgement left unsent is a message the broker sends
/// again after the outage, a duplicate: a second was too short on a machine busy building
/// beside the tests (one duplicate in a full `scripts/test` run).
const FLUSH_WAIT: Duration = Duration::from_secs(5);

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
