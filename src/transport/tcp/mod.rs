//! Raw TCP, the floor every other transport is measured against: the subscriber sends the
//! sequence number to start from (8 bytes, big-endian), and the server answers with the stream
//! as length-prefixed frames (4-byte big-endian length, then the JSON event). Once it holds the
//! whole stream, the subscriber confirms with an empty frame (a zero length), which the server
//! answers with one before it closes its side: the server never takes its own writes for
//! delivery, and the subscriber knows it was heard (or, its connection cut first, confirms
//! again on a connection from the end). One control frame extends that: when the start is older than
//! the server's replay window, a frame holding `{"gap":{"from":F,"count":N}}` comes first.
//!
//! Where the server publishes several streams, the subscriber names its own in the same first
//! frame: the start's top bit set, then a 2-byte count and each stream as 4 bytes (all
//! big-endian).

/// The start's top bit: a list of streams follows it.
pub(crate) const STREAMS_FOLLOW: u64 = 1 << 63;

/// Most streams one subscriber may name (its first frame stays small).
pub(crate) const MAX_STREAMS_NAMED: usize = 4096;

use super::{Colour, KeepAlive, Redelivery, Requests, Spec, Traits};

mod client;
mod server;

/// Bare frames: duplex, no browser API, no HTTP; resuming is the application's (a start seq).
pub static SPEC: Spec = Spec {
    name: "tcp",
    summary: "Length-prefixed frames on a bare TCP stream: the floor",
    colour: Colour(40, 40, 40),
    cursor_path: None,
    interop: None,
    credentials: &[],
    servers: &[server_impl!(
        super::implementation::OWN,
        "length-prefixed frames, batched writes",
        server::serve
    )],
    clients: &[client_impl!(
        super::implementation::OWN,
        "one reusable buffer, frames decoded in place",
        client::subscribe
    )],
    settings: resumable_settings![],
    outside: super::spec::all_in_serve,
    guarantee: super::spec::exactly_once,
    traits: Traits {
        duplex: true,
        browser_api: None,
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: false,
        streams_response: false,
        http: false,
        multiplexed: false,
        keep_alive: KeepAlive::Nothing,
        requests: Requests::Stream,
        redelivery: Redelivery::Application(
            "no protocol at all; the server starts from the sequence the client sends, and the \
             client must reconnect with it itself (pushbench's does, with backoff, unless \
             --resume off)",
        ),
        udp: false,
        floor: true,
    },
};

pub(crate) use super::length_prefixed::frame;
use super::length_prefixed::{FIRST_CHUNK, PREFIX_BYTES};
