//! The WebSocket server most axum applications run: axum's own upgrade (`WebSocketUpgrade`),
//! tokio-tungstenite underneath, on the same push loop as pushbench's server. tungstenite has
//! no permessage-deflate, so compression is refused.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::transport::ServerConfig;

use super::push::{self, AppState, Incoming};
use super::MAX_CLIENT_MESSAGE;

/// The read buffer tungstenite reads subscribers' frames into. Its default, 128 KiB, costs
/// 137 KB of every idle connection (docs/machine-probe figures); a deployment holding many
/// subscribers sets it small, as this does, and the write buffer is left at its default
/// (filled only while a batch is written).
const READ_BUFFER: usize = 4096;

/// Serves `/ws` on `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    push::serve_route(listener, hub, config, shutdown, upgrade).await
}

/// `GET /ws`: the subscription from its query, then axum's upgrade; a request that is no
/// upgrade gets axum's own refusal.
async fn upgrade(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let reader = match push::subscription(&state, query.as_deref()) {
        Ok(reader) => reader,
        Err(rejection) => return *rejection,
    };
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| push::stream_events::<_, Message>(socket, reader, state.config))
}

/// Refuses what tungstenite cannot do: compress.
pub(super) fn refuses(settings: &crate::settings::SettingValues) -> Option<String> {
    use crate::transport::compression::{Compression, COMPRESSION};
    (COMPRESSION.read(settings) != Compression::Off).then(|| {
        "tungstenite has no permessage-deflate: use --compression off (or pushbench's own, \
         yawc)"
            .to_owned()
    })
}

impl push::Message for Message {
    type Incoming = Result<Message, axum::Error>;

    fn text(bytes: Bytes) -> Self {
        // The hub's events are JSON, so text; anything else goes as binary, which the
        // subscriber counts as malformed rather than losing it.
        match bytes.clone().try_into() {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(bytes),
        }
    }

    fn ping() -> Self {
        Message::Ping(Bytes::new())
    }

    fn close(code: u16, reason: String) -> Self {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    }

    fn read(incoming: Self::Incoming) -> Incoming {
        match incoming {
            Ok(Message::Text(text)) => Incoming::Text(text.into()),
            Ok(Message::Close(_)) => Incoming::Close,
            Ok(_) => Incoming::Other,
            Err(error) => Incoming::Broken(error.to_string()),
        }
    }
}
