//! pushbench's long-poll client: asks again at once with the new cursor, carried the way the
//! target's server keeps it.

use crate::transport::cursor::{self, Pace};
use crate::transport::{ClientConfig, ClientError, Sink, Target};

use super::{validators, CURSOR};

/// Polls again the moment each answer arrives: with `?after=SEQ` (pushbench's cursor API), or
/// with the HTTP cache validators where the target says its server keeps the place so.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    match target.params.get(CURSOR).map(String::as_str) {
        None | Some(QUERY) => cursor::subscribe(target, config, sink, Pace::AtOnce).await,
        Some(validators::IDIOM) => validators::subscribe(target, config, sink).await,
        Some(other) => Err(ClientError::Config(format!(
            "longpoll: the target's cursor {other:?} is none this client knows (`{QUERY}`: \
             ?after=SEQ, pushbench's own; `{}`: Last-Modified and ETag, as Nchan keeps it)",
            validators::IDIOM
        ))),
    }
}

/// The `cursor` of pushbench's own cursor API.
const QUERY: &str = "after-query";
