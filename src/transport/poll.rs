//! Short polling, the baseline every push transport is argued against: `GET /events?after=SEQ`
//! answered at once with whatever exists, polled at a fixed interval. Server and client are the
//! shared cursor API with no hold and a pause.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cursor::{self, Pace};
use super::{ClientConfig, ClientError, Redelivery, Requests, ServerConfig, Sink, Traits};
use crate::hub::Hub;

/// One-way, a request per interval; nothing held between polls; the cursor resumes.
pub const TRAITS: Traits = Traits {
    duplex: false,
    browser_api: Some("fetch"),
    needs_inbound_http: false,
    holds_connection: false,
    needs_upgrade: false,
    streams_response: false,
    http: true,
    requests: Requests::PerInterval,
    redelivery: Redelivery::BuiltIn("every poll carries the cursor (?after=SEQ)"),
    floor: false,
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

/// Polls every `config.poll_interval`.
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    cursor::subscribe(server, config, sink, Pace::Every(config.poll_interval)).await
}
