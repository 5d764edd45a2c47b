//! pushbench's long-poll client: asks again at once with the new cursor.

use crate::transport::cursor::{self, Pace};
use crate::transport::{ClientConfig, ClientError, Sink, Target};

/// Polls again the moment each answer arrives.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    cursor::subscribe(target, config, sink, Pace::AtOnce).await
}
