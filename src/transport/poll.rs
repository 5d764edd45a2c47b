//! Short polling, the baseline every push transport is argued against: `GET /events?after=SEQ`
//! answered at once with whatever exists, polled at a fixed interval. Server and client are the
//! shared cursor API with no hold and a pause.

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
    cursor_path: Some("/events"),
    settings: resumable_settings![http, &INTERVAL],
    outside: super::spec::all_in_serve,
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
        floor: false,
    },
};

/// Serves `/events`, answering every request at once.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    cursor::serve(listener, hub, config, shutdown, None).await
}

/// Polls every [`INTERVAL`].
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    cursor::subscribe(server, config, sink, Pace::Every(INTERVAL.read(&config.settings))).await
}
