//! gRPC server streaming (tonic, prost): `pushbench.Events/Subscribe` answers a subscriber
//! with a stream of `Delivery` messages, each event a real protobuf message (sequence number,
//! times and payload as fields; `proto/pushbench.proto`), so the wire-bytes column shows
//! protobuf. The server is tonic's generated service on pushbench's HTTP/2 loop (h2c, or h2 by
//! ALPN under TLS); the client is tonic's generated client over the load worker's shared
//! HTTP/2 connections ([`super::multiplex`]), one stream per subscriber, as a gRPC channel
//! multiplexes its calls.
//!
//! Two-way traffic goes up in either of gRPC's idioms, two client implementations measured
//! side by side: a unary `Send` call per message beside the `Subscribe` stream (the default),
//! or one bidirectional `Converse` call (`--client-impl bidi`) that subscribes with its first
//! message and carries every message up after it. Copies come down as `Delivery.copy`.
//!
//! Resume: the request names the first sequence number wanted, and a client that lost its
//! stream asks again from the one after its last. Events past the replay window come as a
//! `Gap` message first. Past the subscriber cap the call fails with `RESOURCE_EXHAUSTED`. A
//! quiet call is kept alive by HTTP/2 PINGs every heartbeat.

use super::multiplex::CONNECTIONS;
use super::{Colour, KeepAlive, Redelivery, Requests, Spec, Traits};
use crate::event::Event;
use crate::hub::Batch;

mod bidi;
mod client;
mod server;

/// The messages and service of `proto/pushbench.proto`, as tonic-prost-build wrote them.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("pushbench");
}

use proto::delivery::Item;
use proto::Delivery;

/// One server-streaming call per subscriber, many on one HTTP/2 connection.
pub static SPEC: Spec = Spec {
    name: "grpc",
    summary: "gRPC server streaming (tonic): pushbench.Events/Subscribe, protobuf events, \
              calls multiplexed on shared HTTP/2 connections",
    colour: Colour(240, 228, 66),
    cursor_path: None,
    interop: Some("Python grpcio"),
    credentials: &[],
    servers: &[server_impl!(
        super::implementation::OWN,
        "tonic's generated service on pushbench's HTTP/2 loop",
        server::serve
    )],
    clients: &[
        client_impl!(
            super::implementation::OWN,
            "tonic's generated client over shared HTTP/2 connections: Subscribe, and a unary \
             Send call per message up",
            client::subscribe
        ),
        client_impl!(
            "bidi",
            "tonic's generated client over shared HTTP/2 connections: one bidirectional \
             Converse call, subscribing first, then carrying the messages up",
            bidi::subscribe
        ),
    ],
    settings: resumable_settings![&CONNECTIONS],
    outside: super::spec::all_in_serve,
    guarantee: super::spec::exactly_once,
    traits: Traits {
        duplex: false,
        browser_api: None,
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: false,
        streams_response: true,
        http: true,
        multiplexed: true,
        keep_alive: KeepAlive::Heartbeat,
        requests: Requests::Stream,
        redelivery: Redelivery::Application(
            "the call has no cursor of its own; the request names the first sequence number \
             wanted, and the client must call again with it itself (pushbench's does, with \
             backoff, unless --resume off)",
        ),
        udp: false,
        floor: false,
    },
};

/// A batch as messages: its gap first, then each event as protobuf, from the hub's canonical
/// encoding (a server built on gRPC would hold the fields; decoding them here costs ~75 ns).
fn messages(batch: &Batch, out: &mut std::collections::VecDeque<Result<Delivery, tonic::Status>>) {
    if let Some(gap) = batch.gap {
        out.push_back(Ok(Delivery {
            item: Some(Item::Gap(proto::Gap {
                first: gap.from,
                count: gap.count,
            })),
        }));
    }
    for (_, bytes) in batch.iter() {
        out.push_back(match Event::decode(bytes) {
            Ok(event) => Ok(Delivery {
                item: Some(Item::Event(proto::Event {
                    seq: event.seq,
                    topic: event.topic,
                    topic_seq: event.topic_seq,
                    scheduled_ns: event.scheduled_ns,
                    sent_ns: event.sent_ns,
                    payload: event.payload.into_owned(),
                })),
            }),
            // The hub holds only events it encoded itself.
            Err(error) => Err(tonic::Status::internal(error.to_string())),
        });
    }
    for copy in &batch.copies {
        out.push_back(match crate::upstream::Message::decode(copy) {
            Some(message) => Ok(Delivery {
                item: Some(Item::Copy(to_proto(&message))),
            }),
            // The hub copies only messages it decoded itself.
            None => Err(tonic::Status::internal("a copy that is not a message up")),
        });
    }
}

/// A message up as protobuf.
fn to_proto(message: &crate::upstream::Message<'_>) -> proto::UpMessage {
    proto::UpMessage {
        from: message.from,
        seq: message.seq,
        topic: message.topic,
        scheduled_ns: message.scheduled_ns,
        payload: message.payload.clone().into_owned(),
    }
}

/// A message up from protobuf: what the hub takes and the sink reads.
fn from_proto(message: proto::UpMessage) -> crate::upstream::Message<'static> {
    crate::upstream::Message {
        from: message.from,
        seq: message.seq,
        topic: message.topic,
        scheduled_ns: message.scheduled_ns,
        payload: std::borrow::Cow::Owned(message.payload),
    }
}

/// The events of a batch as the server sends them: each `Delivery` in protobuf's encoding with
/// gRPC's 5-byte message prefix (before HTTP/2 framing), for the framing bench.
pub(crate) fn frame(batch: &Batch, out: &mut bytes::BytesMut) {
    use prost::Message as _;
    let mut ready = std::collections::VecDeque::new();
    messages(batch, &mut ready);
    for message in ready.into_iter().flatten() {
        let len = message.encoded_len();
        out.reserve(5 + len);
        out.extend_from_slice(&[0]);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        // A BytesMut grows as needed, so encoding into it cannot fail.
        let _ = message.encode(out);
    }
}
