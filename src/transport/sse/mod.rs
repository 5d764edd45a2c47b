//! Server-Sent Events: the server (axum) streams `id:` = sequence number and `data:` = the JSON
//! event on `/sse`, every ready batch framed into one chunk, with `retry:` first and comment
//! heartbeats;
//! the client parses with the `sse-stream` crate over the house's lean HTTP/1.1 connection
//! (`http1_client`) and reconnects with `Last-Event-ID`
//! as a browser's `EventSource` does. Beside them, what many Rust services deploy: axum's own
//! `Sse` response (`--server-impl axum-sse`) and eventsource-client (`--client-impl
//! eventsource-client`).
//!
//! Resume: a `Last-Event-ID` header (what `EventSource` sends on reconnect) or `?after=SEQ`.
//! Events the server no longer holds (past its replay window) are announced as an event named
//! `gap` whose data is `{"gap":{"from":F,"count":N}}` and whose id is the last event missed, so
//! a browser's `EventSource` resumes after it.
//! A subscriber that has read the whole stream and comes back is answered 204 No Content, which
//! tells a browser's `EventSource` to stop reconnecting.

use bytes::BytesMut;

use super::{Colour, KeepAlive, Redelivery, Requests, Spec, Traits};
use crate::hub::Batch;

mod axum_sse;
mod client;
mod eventsource;
mod server;

// What SSE over HTTP/2 shares of this stream: its handler and state, and its client's parser.
pub(crate) use client::subscribe_over;
pub(crate) use server::{open_stream, AppState};

/// Where pushbench's server streams events.
const OWN_PATH: &str = "/sse";

/// One-way, one unending response; the browser's EventSource resumes with `Last-Event-ID`.
pub static SPEC: Spec = Spec {
    name: "sse",
    summary: "Server-Sent Events on /sse",
    colour: Colour(230, 159, 0),
    cursor_path: Some(OWN_PATH),
    interop: Some("EventSource"),
    credentials: &[],
    servers: &[
        server_impl!(
            super::implementation::OWN,
            "axum on a lean HTTP/1.1 connection, each ready batch one chunk",
            server::serve
        ),
        server_impl!(
            "axum-sse",
            "axum's Sse response: one Event per event, axum's keep-alive; no compression",
            axum_sse::serve,
            axum_sse::refuses
        ),
    ],
    clients: &[
        client_impl!(
            super::implementation::OWN,
            "sse-stream over a lean HTTP/1.1 connection (httparse), Last-Event-ID resume",
            client::subscribe
        ),
        client_impl!(
            "eventsource-client",
            "eventsource-client on the house's connections, Last-Event-ID resume by \
             pushbench's rule",
            eventsource::subscribe
        ),
    ],
    settings: resumable_settings![http],
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
        multiplexed: false,
        keep_alive: KeepAlive::Heartbeat,
        requests: Requests::Stream,
        redelivery: Redelivery::BuiltIn("EventSource reconnects and resumes with Last-Event-ID"),
        udp: false,
        floor: false,
    },
};

/// A batch as SSE frames: `id: SEQ`, `data: EVENT` and a blank line each (a gap first, as an
/// event named `gap`), copied from the hub's shared encoding with no allocation per event; then
/// copies of messages sent up (two-way traffic), each an event named `copy` with no id, so
/// `Last-Event-ID` goes on naming the last event of the stream.
pub(crate) fn frame(batch: &Batch, chunk: &mut BytesMut) {
    let size: usize = batch.events.iter().map(|e| e.len() + FRAME_OVERHEAD).sum();
    chunk.reserve(size);
    let mut digits = itoa::Buffer::new();
    if let Some(gap) = batch.gap {
        chunk.extend_from_slice(b"event: gap\nid: ");
        chunk.extend_from_slice(digits.format(gap.last_seq()).as_bytes());
        chunk.extend_from_slice(b"\ndata: ");
        chunk.extend_from_slice(&gap.encode());
        chunk.extend_from_slice(b"\n\n");
    }
    for (seq, event) in batch.iter() {
        chunk.extend_from_slice(b"id: ");
        chunk.extend_from_slice(digits.format(seq).as_bytes());
        chunk.extend_from_slice(b"\ndata: ");
        chunk.extend_from_slice(event);
        chunk.extend_from_slice(b"\n\n");
    }
    for copy in &batch.copies {
        chunk.extend_from_slice(b"event: copy\ndata: ");
        chunk.extend_from_slice(copy);
        chunk.extend_from_slice(b"\n\n");
    }
}

/// Bytes an SSE frame adds around an event: `id: `, up to 20 digits, `\ndata: `, `\n\n`.
const FRAME_OVERHEAD: usize = 4 + 20 + 7 + 2;
