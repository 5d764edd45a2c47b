//! Long polling: `GET /events?after=SEQ` is held until events after SEQ exist (or the hold
//! expires, answered with an empty batch); the client asks again at once with the new cursor.
//! Server and client are the shared cursor API with a hold and no pause. A server pushbench
//! did not write may keep the subscriber's place otherwise: its target's `cursor` parameter
//! says how (`cache-validators`: [`validators`]).

use std::time::Duration;

pub(crate) use super::cursor::frame;
use super::{Colour, KeepAlive, Redelivery, Requests, Setting, Side, Spec, Traits};

mod client;
mod server;
mod validators;

/// The target parameter that says how a server keeps a subscriber's place.
pub(crate) const CURSOR: &str = "cursor";

/// How long the server holds a poll that finds nothing new.
pub static HOLD: Setting<Duration> = Setting {
    name: "longpoll-hold",
    help: "How long a long poll is held before it is answered with an empty batch",
    side: Side::Server,
    default: Duration::from_secs(30),
    min: Duration::from_millis(1),
};

/// One-way, a held request per batch; every request carries the cursor, so resuming is free.
pub static SPEC: Spec = Spec {
    name: "longpoll",
    summary: "Long polling: GET /events?after=SEQ held until events exist",
    colour: Colour(0, 158, 115),
    cursor_path: Some(super::cursor::OWN_PATH),
    interop: Some("fetch"),
    credentials: &[],
    servers: &[server_impl!(
        super::implementation::OWN,
        "the cursor API (axum, lean HTTP/1.1), requests held until events exist",
        server::serve
    )],
    clients: &[client_impl!(
        super::implementation::OWN,
        "lean HTTP/1.1 (httparse) keep-alive connection, asks again at once",
        client::subscribe
    )],
    settings: resumable_settings![http, &HOLD],
    outside: super::spec::all_in_serve,
    guarantee: super::spec::exactly_once,
    traits: Traits {
        duplex: false,
        browser_api: Some("fetch"),
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: false,
        streams_response: false,
        http: true,
        multiplexed: false,
        keep_alive: KeepAlive::Requests,
        requests: Requests::PerAnswer(&HOLD),
        redelivery: Redelivery::BuiltIn("every request carries the cursor (?after=SEQ)"),
        udp: false,
        floor: false,
    },
};
