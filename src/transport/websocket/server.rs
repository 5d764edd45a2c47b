//! pushbench's WebSocket server: axum upgrading `/ws` into yawc, one writer task per subscriber.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use yawc::close::CloseCode;
use yawc::{Frame, IncomingUpgrade, OpCode};

use crate::hub::{Batch, Hub, Reader};
use crate::transport::cursor::{first_seq_from_query, interest_from_query};
use crate::transport::{serve_http, ServerConfig, TrackedListener};

use super::OWN_PATH;
use super::{options, CLOSE_GRACE, MAX_CLIENT_MESSAGE};

/// The server's read and write buffers. Subscribers send control frames, and small text
/// frames where they send messages up (two-way traffic), and a batch
/// larger than this grows the write buffer for as long as it takes to write it: both buffers
/// are resident in full from the start (yawc fills them), so an idle connection pays for them.
const SERVER_BUFFER: usize = 512;

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
}

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
    let listener = TrackedListener::for_subscribers(listener, Arc::clone(&hub), &config)?;
    let http = config.http;
    let state = AppState {
        hub: Arc::clone(&hub),
        config: Arc::new(config),
    };
    let router = Router::new()
        .route(OWN_PATH, get(upgrade))
        .with_state(state);
    serve_http(listener, router, http, shutdown).await
}

async fn upgrade(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ws: IncomingUpgrade,
) -> Response {
    let first_seq = match first_seq_from_query(query.as_deref()) {
        Ok(seq) => seq,
        Err(rejection) => return rejection.into_response(),
    };
    let interest = match interest_from_query(query.as_deref(), &state.hub) {
        Ok(interest) => interest,
        Err(rejection) => return rejection.into_response(),
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
    let reader = state.hub.reader_of(first_seq, interest);
    tokio::spawn(async move {
        match upgrading.await {
            Ok(socket) => stream_events(socket, reader, state.config).await,
            Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
        }
    });
    response.into_response()
}

/// Pushes the stream to one subscriber until it is complete, the subscriber leaves, or the
/// server shuts down.
async fn stream_events<S>(socket: yawc::WebSocket<S>, mut reader: Reader, config: Arc<ServerConfig>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let hub = Arc::clone(reader.hub());
    let (mut tx, mut rx) = socket.split();
    let start = tokio::time::Instant::now() + config.heartbeat;
    let mut heartbeat = tokio::time::interval_at(start, config.heartbeat);
    let close: (CloseCode, String) = loop {
        tokio::select! {
            batch = reader.next_batch(config.batch) => match batch {
                Some(batch) => {
                    if write_batch(&mut tx, &batch).await.is_err() {
                        return;
                    }
                }
                None if reader.at_end() => break (CloseCode::Normal, "stream complete".into()),
                None => break (CloseCode::Away, "server shutting down".into()),
            },
            incoming = rx.next() => match incoming {
                // The subscriber left or broke the protocol: yawc has queued the close frame
                // that says how (1009 for a message too big), and sends what it owes on the
                // read path, so reading once more sends it.
                None => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, rx.next()).await;
                    return;
                }
                // The subscriber closed first (yawc answers its close frame).
                Some(frame) if frame.opcode() == OpCode::Close => return,
                // A message the subscriber sends up, handled before the next read so that
                // one subscriber's messages are taken in the order sent.
                Some(frame) if frame.opcode() == OpCode::Text => {
                    if let Err(why) = hub.receive_upstream(frame.into_payload()).await {
                        break (CloseCode::Invalid, truncated_reason(why));
                    }
                }
                // Pongs, and anything a subscriber chooses to send, need no answer.
                Some(_) => {}
            },
            _ = heartbeat.tick() => {
                if tx.send(Frame::ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    };
    if tx.send(Frame::close(close.0, close.1)).await.is_err() {
        return;
    }
    // Wait for the subscriber's close frame so the handshake completes cleanly on both sides.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(frame) = rx.next().await {
            if frame.opcode() == OpCode::Close {
                break;
            }
        }
    })
    .await;
}

/// Queues every event of the batch (after the gap message, when the subscriber asked for
/// events the replay window no longer holds), then flushes once: one write for many frames.
/// Each frame shares the hub's encoding of its event (compressed per connection when
/// permessage-deflate is on).
async fn write_batch<S>(tx: &mut S, batch: &Batch) -> Result<(), S::Error>
where
    S: futures_util::Sink<Frame> + Unpin,
{
    if let Some(gap) = batch.gap {
        tx.feed(Frame::text(gap.encode())).await?;
    }
    for (_, event) in batch.iter() {
        tx.feed(Frame::text(event.clone())).await?;
    }
    for copy in &batch.copies {
        tx.feed(Frame::text(copy.clone())).await?;
    }
    tx.flush().await
}

/// A close frame's reason holds at most 123 bytes: the start of `why`, cut at a character.
fn truncated_reason(mut why: String) -> String {
    let mut end = why.len().min(123);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    why.truncate(end);
    why
}
