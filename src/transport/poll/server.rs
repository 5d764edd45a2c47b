//! pushbench's short-poll server: the cursor API, answered at once.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::transport::cursor::{self};
use crate::transport::ServerConfig;

/// Serves `/events`, answering every request at once.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    cursor::serve(listener, hub, config, shutdown, None).await
}
