//! Short polling, the baseline every push transport is argued against: `GET /poll?after=SEQ`
//! answered at once with whatever exists, polled at a fixed interval. Server and client are the
//! shared cursor API with no hold and a pause.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cursor::{self, Pace};
use super::{ClientConfig, ClientError, ServerConfig, Sink};
use crate::hub::Hub;

/// Serves `/poll`, answering every request at once.
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
