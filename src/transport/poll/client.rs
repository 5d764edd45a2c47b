//! pushbench's short-poll client: the cursor API polled at a fixed interval.

use crate::transport::cursor::{self, Pace};
use crate::transport::{ClientConfig, ClientError, Sink, Target};

use super::INTERVAL;

/// Polls every [`INTERVAL`].
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    cursor::subscribe(
        target,
        config,
        sink,
        Pace::Every(INTERVAL.read(&config.settings)),
    )
    .await
}
