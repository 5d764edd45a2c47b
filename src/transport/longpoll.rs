//! Long polling: `GET /events?after=SEQ` is held until events after SEQ exist (or the hold
//! expires, answered with an empty batch); the client asks again at once with the new cursor.
//! Server and client are the shared cursor API with a hold and no pause.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) use super::cursor::frame;
use super::cursor::{self, Pace};
use super::{
    ClientConfig, ClientError, Colour, KeepAlive, Redelivery, Requests, ServerConfig, Setting, Side, Sink, Spec,
    Traits,
};
use crate::hub::Hub;

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
    cursor_path: Some("/events"),
    settings: resumable_settings![http, &HOLD],
    outside: super::spec::all_in_serve,
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
        floor: false,
    },
};

/// Serves `/events`, holding each request up to [`HOLD`].
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let hold = Some(HOLD.read(&config.settings));
    cursor::serve(listener, hub, config, shutdown, hold).await
}

/// Polls again the moment each answer arrives.
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    cursor::subscribe(server, config, sink, Pace::AtOnce).await
}
