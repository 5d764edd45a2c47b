//! Server-Sent Events over HTTP/2: the `sse` transport's stream (its `/sse` handler, framing,
//! resume and client parsing, from `sse.rs`) over hyper's HTTP/2 connections, cleartext with
//! prior knowledge (h2c), or h2 over TLS by ALPN. A browser multiplexes every `EventSource` of
//! an origin over one HTTP/2 connection, which lifts HTTP/1.1's six connections per origin;
//! the load side does the same: each load worker multiplexes its subscribers over
//! `--http2-connections` connections (default 1, as a browser), round robin
//! ([`super::multiplex`]). Every request is a subscriber of its own, counted while its response
//! lives.

use super::compression::COMPRESSION;
use super::multiplex::CONNECTIONS;
use super::sse::{self};
use super::{Colour, KeepAlive, Redelivery, Requests, Spec, Traits};
use crate::hub::Batch;

mod client;
mod server;

/// One-way, one unending response per subscriber, many on one connection.
pub static SPEC: Spec = Spec {
    name: "sse-h2",
    summary: "Server-Sent Events over HTTP/2 on /sse (h2c, or h2 over TLS), subscribers \
              multiplexed on shared connections",
    colour: Colour(86, 180, 233),
    cursor_path: Some("/sse"),
    interop: Some("curl --http2-prior-knowledge"),
    credentials: &[],
    servers: &[server_impl!(
        super::implementation::OWN,
        "the SSE stream on hyper's HTTP/2 loop",
        server::serve
    )],
    clients: &[client_impl!(
        super::implementation::OWN,
        "sse-stream over shared HTTP/2 connections",
        client::subscribe
    )],
    settings: resumable_settings![&CONNECTIONS, &COMPRESSION],
    outside: super::spec::all_in_serve,
    guarantee: super::spec::exactly_once,
    traits: Traits {
        duplex: false,
        browser_api: Some("EventSource"),
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: false,
        streams_response: true,
        http: true,
        multiplexed: true,
        keep_alive: KeepAlive::Heartbeat,
        requests: Requests::Stream,
        redelivery: Redelivery::BuiltIn("EventSource reconnects and resumes with Last-Event-ID"),
        udp: false,
        floor: false,
    },
};

/// The same frames as `sse`: HTTP/2 changes the connection, not the stream.
pub(crate) fn frame(batch: &Batch, out: &mut bytes::BytesMut) {
    sse::frame(batch, out);
}
