//! pushbench's long-poll server: the cursor API, each request held until events exist.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::transport::cursor::{self};
use crate::transport::ServerConfig;

use super::HOLD;

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
