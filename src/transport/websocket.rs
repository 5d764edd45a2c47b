//! WebSocket: the server (axum) pushes each event as a text frame carrying its JSON on `/ws`;
//! the client is tokio-tungstenite. Pings keep idle connections alive; the stream ends with a
//! clean close handshake (1000 when complete, 1001 when the server shuts down).
//!
//! `GET /ws?after=SEQ` resumes after event SEQ. Events the server no longer holds (past its
//! replay window) are announced by a text message `{"gap":{"from":F,"count":N}}` before the
//! events that follow them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as ClientMessage};
use tokio_util::sync::CancellationToken;

use super::cursor::first_seq_from_query;
use super::resume::Resuming;
use super::tls::ALPN_HTTP1;
use super::{
    deliver, serve_http, ArrivalClock, ClientConfig, ClientError, Colour, Flow,
    Redelivery, Requests, ServerConfig, Setting, Side, Sink, Spec, TrackedListener, Traits,
};
use crate::clock::now_ns;
use crate::event::{DecodeError, MAX_EVENT_BYTES};
use crate::hub::{Batch, Hub, Reader};

/// Read buffer per connection, both sides: the dominant cost of an idle WebSocket.
pub static READ_BUFFER: Setting<u64> = Setting {
    name: "websocket-read-buffer",
    help: "WebSocket read buffer per connection, bytes (tungstenite's 128 KiB default costs \
           137 KB of memory per idle connection; 4 KiB about 6 KB)",
    side: Side::Both,
    default: 4096,
    min: 256,
};

/// Full duplex after an HTTP Upgrade; resuming is the application's (pushbench's `?after=`).
pub static SPEC: Spec = Spec {
    name: "websocket",
    summary: "WebSocket text frames on /ws",
    colour: Colour(0, 114, 178),
    cursor_path: Some("/ws"),
    settings: resumable_settings![http, &READ_BUFFER],
    traits: Traits {
        duplex: true,
        browser_api: Some("WebSocket"),
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: true,
        streams_response: false,
        http: true,
        requests: Requests::Stream,
        redelivery: Redelivery::Application(
            "the protocol has no cursor and the browser's WebSocket does not reconnect; the server \
             resumes from ?after=SEQ, and the client must reconnect with it itself (pushbench's \
             does, with backoff, unless --resume off)",
        ),
        floor: false,
    },
};

/// The largest message a subscriber may send the server; subscribers only send control frames.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// How long each side waits for the other's close frame before dropping the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

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
    let listener = TrackedListener::for_subscribers(listener, Arc::clone(&hub), &config)?;
    let http = config.http;
    let state = AppState {
        hub: Arc::clone(&hub),
        config: Arc::new(config),
    };
    let router = Router::new().route("/ws", get(upgrade)).with_state(state);
    serve_http(
        listener,
        router,
        http,
        shutdown,
    )
    .await
}

async fn upgrade(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let first_seq = match first_seq_from_query(query.as_deref()) {
        Ok(seq) => seq,
        Err(rejection) => return rejection.into_response(),
    };
    let reader = state.hub.reader(first_seq);
    ws.read_buffer_size(READ_BUFFER.read(&state.config.settings) as usize)
        .max_message_size(MAX_CLIENT_MESSAGE)
        // A frame is checked as it arrives, not after tungstenite's 16 MiB default was buffered.
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| stream_events(socket, reader, state.config))
}

/// Pushes the stream to one subscriber until it is complete, the subscriber leaves, or the
/// server shuts down.
async fn stream_events(socket: WebSocket, mut reader: Reader, config: Arc<ServerConfig>) {
    let (mut tx, mut rx) = socket.split();
    let start = tokio::time::Instant::now() + config.heartbeat;
    let mut heartbeat = tokio::time::interval_at(start, config.heartbeat);
    let close = loop {
        tokio::select! {
            batch = reader.next_batch(config.batch) => match batch {
                Some(batch) => {
                    if write_batch(&mut tx, &batch).await.is_err() {
                        return;
                    }
                }
                None if reader.at_end() => break (close_code::NORMAL, "stream complete"),
                None => break (close_code::AWAY, "server shutting down"),
            },
            incoming = rx.next() => match incoming {
                // The subscriber left, or closed first (axum answers its close frame for us).
                None | Some(Ok(Message::Close(_))) => return,
                Some(Err(error)) => {
                    if is_too_big(&error) {
                        let _ = tx.send(close_message(close_code::SIZE, "message too big")).await;
                    }
                    return;
                }
                // Pongs, and anything a subscriber chooses to send, need no answer.
                Some(Ok(_)) => {}
            },
            _ = heartbeat.tick() => {
                if tx.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    };
    if tx.send(close_message(close.0, close.1)).await.is_err() {
        return;
    }
    // Wait for the subscriber's close frame so the handshake completes cleanly on both sides.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(message)) = rx.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Queues every event of the batch (after the gap message, when the subscriber asked for
/// events the replay window no longer holds), then flushes once: one write for many frames.
async fn write_batch<S>(tx: &mut S, batch: &Batch) -> Result<(), axum::Error>
where
    S: futures_util::Sink<Message, Error = axum::Error> + Unpin,
{
    if let Some(gap) = batch.gap {
        let text = Utf8Bytes::try_from(gap.encode()).map_err(axum::Error::new)?;
        tx.feed(Message::Text(text)).await?;
    }
    for (_, event) in batch.iter() {
        // Encoded events are ASCII JSON, so this check never fails; it is also cheap.
        let text = Utf8Bytes::try_from(event.clone()).map_err(axum::Error::new)?;
        tx.feed(Message::Text(text)).await?;
    }
    tx.flush().await
}

fn close_message(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

fn is_too_big(error: &axum::Error) -> bool {
    let inner = std::error::Error::source(error);
    matches!(
        inner.and_then(|e| e.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// Subscribes to `ws://server/ws` (`wss://` over TLS) and feeds every text frame to the sink.
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let mut sink = Resuming::new(sink, config);
    loop {
        let after = sink.last_seq();
        let ended = connect_once(server, config, &mut sink, after).await;
        if !sink.again(ended).await? {
            return Ok(());
        }
    }
}

/// One connection: from the start, or after event `after` (`?after=SEQ`, which the server
/// honours); `Ok` once the sink has enough or the server closed normally (1000, the stream
/// complete), an error when the connection ended otherwise.
async fn connect_once(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut Resuming<'_>,
    after: Option<u64>,
) -> Result<(), ClientError> {
    let dialer = config.dialer();
    let stream = dialer.connect(server, ALPN_HTTP1).await?;
    let scheme = if dialer.secure() { "wss" } else { "ws" };
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER.read(&config.settings) as usize)
        .max_message_size(Some(MAX_EVENT_BYTES))
        .max_frame_size(Some(MAX_EVENT_BYTES));
    let url = match after {
        Some(seq) => format!("{scheme}://{server}/ws?after={seq}"),
        None => format!("{scheme}://{server}/ws"),
    };
    let handshake = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config));
    let (mut ws, _response) = tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| ClientError::Protocol("WebSocket handshake timed out".into()))?
        .map_err(|e| ClientError::Protocol(format!("WebSocket handshake failed: {e}")))?;
    sink.connected(now_ns());

    let mut clock = ArrivalClock::new();
    let mut close_code = None;
    while let Some((message, received_ns)) = clock.next(&mut ws).await {
        let message = message.map_err(|e| ClientError::Protocol(format!("WebSocket: {e}")))?;
        let flow = match &message {
            ClientMessage::Text(text) => deliver(sink, text.as_bytes(), received_ns),
            ClientMessage::Binary(_) => sink.malformed(&DecodeError::new(
                "binary frame where a text frame with a JSON event was expected",
            )),
            // tungstenite answers the server's close frame itself; reading on drives the answer
            // out and then ends the stream.
            ClientMessage::Close(frame) => {
                close_code = Some(frame.as_ref().map_or(CloseCode::Status, |f| f.code));
                Flow::Continue
            }
            // Pings are answered by tungstenite too.
            _ => Flow::Continue,
        };
        if flow == Flow::Stop {
            let frame = tungstenite::protocol::CloseFrame {
                code: tungstenite::protocol::frame::coding::CloseCode::Normal,
                reason: "received the whole stream".into(),
            };
            let _ = ws.close(Some(frame)).await;
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
            return Ok(());
        }
    }
    match close_code {
        Some(CloseCode::Normal) => Ok(()),
        Some(code) => Err(ClientError::Protocol(format!(
            "WebSocket closed with {code} before the stream was complete"
        ))),
        None => Err(ClientError::Protocol(
            "WebSocket connection ended without a close frame".into(),
        )),
    }
}
