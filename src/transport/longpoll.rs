//! Long polling: `GET /events?after=SEQ` is held until events after SEQ exist (or the hold
//! expires, answered with an empty batch); the client asks again at once with the new cursor.
//! Server and client are the shared cursor API with a hold and no pause.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cursor::{self, Pace};
use super::{ClientConfig, ClientError, Redelivery, Requests, ServerConfig, Sink, Traits};
use crate::hub::Hub;

/// One-way, a held request per batch; every request carries the cursor, so resuming is free.
pub const TRAITS: Traits = Traits {
    duplex: false,
    browser_api: Some("fetch"),
    needs_inbound_http: false,
    holds_connection: true,
    needs_upgrade: false,
    streams_response: false,
    http: true,
    requests: Requests::PerAnswer,
    redelivery: Redelivery::BuiltIn("every request carries the cursor (?after=SEQ)"),
    floor: false,
};

/// Serves `/events`, holding each request up to `config.hold`.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let hold = Some(config.hold);
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
