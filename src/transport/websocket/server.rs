//! pushbench's WebSocket server: axum upgrading `/ws` into yawc, one writer task per subscriber.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use yawc::close::CloseCode;
use yawc::{Frame, IncomingUpgrade, OpCode};

use crate::hub::Hub;
use crate::transport::ServerConfig;

use super::push::{self, AppState, Incoming};
use super::{options, MAX_CLIENT_MESSAGE};

/// The server's read and write buffers. Subscribers send control frames, and small text
/// frames where they send messages up (two-way traffic), and a batch
/// larger than this grows the write buffer for as long as it takes to write it: both buffers
/// are resident in full from the start (yawc fills them), so an idle connection pays for them.
const SERVER_BUFFER: usize = 512;

/// Serves `/ws` on `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // A compression WebSocket cannot do is refused before anyone connects.
    options(&config.settings, SERVER_BUFFER, MAX_CLIENT_MESSAGE)
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
    push::serve_route(listener, hub, config, shutdown, upgrade).await
}

async fn upgrade(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ws: IncomingUpgrade,
) -> Response {
    let reader = match push::subscription(&state, query.as_deref()) {
        Ok(reader) => reader,
        Err(rejection) => return *rejection,
    };
    // Checked when serving started.
    let options =
        options(&state.config.settings, SERVER_BUFFER, MAX_CLIENT_MESSAGE).unwrap_or_default();
    let (response, upgrading) = match ws.upgrade(options) {
        Ok(upgrade) => upgrade,
        Err(error) => {
            let why = format!("WebSocket upgrade refused: {error}\n");
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    tokio::spawn(async move {
        match upgrading.await {
            Ok(socket) => push::stream_events::<_, Frame>(socket, reader, state.config).await,
            Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
        }
    });
    response.into_response()
}

impl push::Message for Frame {
    // yawc's stream yields frames: a broken connection ends it, after yawc queued the close
    // frame that says why.
    type Incoming = Frame;

    fn text(bytes: Bytes) -> Self {
        Frame::text(bytes)
    }

    fn ping() -> Self {
        Frame::ping(Bytes::new())
    }

    fn close(code: u16, reason: String) -> Self {
        Frame::close(CloseCode::from(code), reason)
    }

    fn read(frame: Frame) -> Incoming {
        match frame.opcode() {
            OpCode::Close => Incoming::Close,
            OpCode::Text => Incoming::Text(frame.into_payload()),
            _ => Incoming::Other,
        }
    }
}
