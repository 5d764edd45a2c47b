//! Short polling, the baseline every push transport is argued against: `GET /events?after=SEQ`
//! answered at once with whatever exists, polled at a fixed interval. Server and client are the
//! shared cursor API with no hold and a pause.

use std::time::Duration;

pub(crate) use super::cursor::frame;
use super::{Colour, KeepAlive, Redelivery, Requests, Setting, Side, Spec, Traits};

mod client;
mod server;

/// How often the client asks.
pub static INTERVAL: Setting<Duration> = Setting {
    name: "poll-interval",
    help: "Time between one short poll and the next",
    side: Side::Client,
    default: Duration::from_millis(100),
    min: Duration::from_millis(1),
};

/// One-way, a request per interval; nothing held between polls; the cursor resumes.
pub static SPEC: Spec = Spec {
    name: "poll",
    summary: "Short polling: the same cursor API answered at once, polled at an interval",
    colour: Colour(204, 121, 167),
    cursor_path: Some(super::cursor::OWN_PATH),
    interop: Some("fetch"),
    credentials: &[],
    servers: &[server_impl!(
        super::implementation::OWN,
        "the cursor API (axum, lean HTTP/1.1), answered at once",
        server::serve
    )],
    clients: &[client_impl!(
        super::implementation::OWN,
        "lean HTTP/1.1 (httparse) keep-alive connection, at a fixed interval",
        client::subscribe
    )],
    settings: resumable_settings![http, &INTERVAL],
    outside: super::spec::all_in_serve,
    guarantee: super::spec::exactly_once,
    traits: Traits {
        duplex: false,
        browser_api: Some("fetch"),
        needs_inbound_http: false,
        holds_connection: false,
        needs_upgrade: false,
        streams_response: false,
        http: true,
        multiplexed: false,
        keep_alive: KeepAlive::Requests,
        requests: Requests::PerInterval(&INTERVAL),
        redelivery: Redelivery::BuiltIn("every poll carries the cursor (?after=SEQ)"),
        udp: false,
        floor: false,
    },
};
