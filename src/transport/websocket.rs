//! WebSocket: the server (axum, upgrading into yawc) pushes each event as a text frame carrying
//! its JSON on `/ws`; the client is yawc too. Pings keep idle connections alive; the stream
//! ends with a clean close handshake (1000 when complete, 1001 when the server shuts down).
//! With `--compression deflate`, both sides negotiate permessage-deflate (RFC 7692), without
//! context takeover unless `websocket-context-takeover on`.
//!
//! `GET /ws?after=SEQ` resumes after event SEQ. Events the server no longer holds (past its
//! replay window) are announced by a text message `{"gap":{"from":F,"count":N}}` before the
//! events that follow them.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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
use yawc::{CompressionLevel, DeflateOptions, DeflatePool, Frame, IncomingUpgrade, OpCode, Options};

use super::compression::{Compression, COMPRESSION};
use super::cursor::first_seq_from_query;
use super::resume::Resuming;
use crate::settings::SettingValues;
use super::tls::ALPN_HTTP1;
use super::{
    deliver, serve_http, ArrivalClock, ClientConfig, ClientError, Colour, KeepAlive, Flow, Redelivery,
    Requests, ServerConfig, Setting, Side, Sink, Spec, TrackedListener, Traits,
};
use crate::clock::now_ns;
use crate::event::{DecodeError, MAX_EVENT_BYTES};
use crate::hub::{Batch, Hub, Reader};

/// The subscriber's buffers: the dominant cost of an idle WebSocket client.
pub static READ_BUFFER: Setting<u64> = Setting {
    name: "websocket-read-buffer",
    help: "The subscriber's WebSocket read buffer, bytes: it grows for a larger frame and \
           shrinks back after it (yawc's default is 8 KiB); the server's buffers are 512 B",
    side: Side::Client,
    default: 4096,
    min: 256,
};

/// The server's read and write buffers. Subscribers send only control frames, and a batch
/// larger than this grows the write buffer for as long as it takes to write it: both buffers
/// are resident in full from the start (yawc fills them), so an idle connection pays for them.
const SERVER_BUFFER: usize = 512;

/// Whether permessage-deflate keeps its window between messages.
pub static CONTEXT_TAKEOVER: Setting<bool> = Setting {
    name: "websocket-context-takeover",
    help: "With --compression deflate: keep the compression window from message to message \
           (better ratios, a compressor and a decompressor held per connection); off, each \
           message stands alone and compressors are borrowed from a shared pool",
    side: Side::Both,
    default: false,
    min: false,
};

/// Full duplex after an HTTP Upgrade; resuming is the application's (pushbench's `?after=`).
pub static SPEC: Spec = Spec {
    name: "websocket",
    summary: "WebSocket text frames on /ws",
    colour: Colour(0, 114, 178),
    cursor_path: Some("/ws"),
    settings: resumable_settings![http, &READ_BUFFER, &CONTEXT_TAKEOVER],
    outside: super::spec::all_in_serve,
    traits: Traits {
        duplex: true,
        browser_api: Some("WebSocket"),
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: true,
        streams_response: false,
        http: true,
        multiplexed: false,
        keep_alive: KeepAlive::Heartbeat,
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
    // A compression WebSocket cannot do is refused before anyone connects.
    options(&config.settings, SERVER_BUFFER, MAX_CLIENT_MESSAGE)
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
    let listener = TrackedListener::for_subscribers(listener, Arc::clone(&hub), &config)?;
    let http = config.http;
    let state = AppState {
        hub: Arc::clone(&hub),
        config: Arc::new(config),
    };
    let router = Router::new().route("/ws", get(upgrade)).with_state(state);
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
    // Checked when serving started.
    let options = options(&state.config.settings, SERVER_BUFFER, MAX_CLIENT_MESSAGE)
        .unwrap_or_default();
    let (response, upgrading) = match ws.upgrade(options) {
        Ok(upgrade) => upgrade,
        Err(error) => {
            let why = format!("WebSocket upgrade refused: {error}\n");
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let reader = state.hub.reader(first_seq);
    tokio::spawn(async move {
        match upgrading.await {
            Ok(socket) => stream_events(socket, reader, state.config).await,
            Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
        }
    });
    response.into_response()
}

/// The options both sides use: buffers of `buffer` bytes, a message size limit (a frame is
/// refused with 1009 as it arrives, not after it was buffered), and permessage-deflate when
/// compression is on; an error for a compression WebSocket has no form of.
fn options(settings: &SettingValues, buffer: usize, max_message: usize) -> Result<Options, String> {
    let options = Options::default()
        .with_read_buffer_capacity(buffer)
        .with_write_buffer_capacity(buffer)
        // yawc's limits are exclusive.
        .with_max_payload_read(max_message + 1)
        .with_max_read_buffer(max_message + 1);
    let compression = COMPRESSION.read(settings);
    compression
        .offered_by(&SPEC.traits)
        .map_err(|why| format!("WebSocket: {why}"))?;
    if compression == Compression::Off {
        return Ok(options);
    }
    Ok(Options {
        compression: Some(deflate_options(CONTEXT_TAKEOVER.read(settings))),
        ..options
    })
}

/// permessage-deflate at the level every transport compresses with. Without context
/// takeover, both directions ask for it and compressor state comes from one pool for the
/// process, so an idle connection holds none.
fn deflate_options(context_takeover: bool) -> DeflateOptions {
    static POOL: OnceLock<DeflatePool> = OnceLock::new();
    DeflateOptions {
        level: CompressionLevel::new(6),
        server_no_context_takeover: !context_takeover,
        client_no_context_takeover: !context_takeover,
        // Sized for the messages compressed at one moment: about one per worker thread.
        pool: (!context_takeover).then(|| POOL.get_or_init(|| DeflatePool::new(64)).clone()),
        ..DeflateOptions::default()
    }
}

/// Pushes the stream to one subscriber until it is complete, the subscriber leaves, or the
/// server shuts down.
async fn stream_events<S>(socket: yawc::WebSocket<S>, mut reader: Reader, config: Arc<ServerConfig>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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
                None if reader.at_end() => break (CloseCode::Normal, "stream complete"),
                None => break (CloseCode::Away, "server shutting down"),
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

/// A batch as server text frames (a gap message first), as yawc's encoder writes them:
/// uncompressed, unmasked, one frame per event.
pub(crate) fn frame(batch: &Batch, out: &mut bytes::BytesMut) {
    use tokio_util::codec::Encoder as _;
    let mut encoder = yawc::codec::Encoder::new(yawc::Role::Server);
    let gap = batch.gap.map(|gap| Frame::text(gap.encode()));
    let events = batch.iter().map(|(_, event)| Frame::text(event.clone()));
    for frame in gap.into_iter().chain(events) {
        // Encoding into memory cannot fail.
        let _ = encoder.encode(frame, out);
    }
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
    tx.flush().await
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
    let buffer = READ_BUFFER.read(&config.settings) as usize;
    let options = options(&config.settings, buffer, MAX_EVENT_BYTES).map_err(ClientError::Config)?;
    let dialer = config.dialer();
    let stream = dialer.connect(server, ALPN_HTTP1).await?;
    let scheme = if dialer.secure() { "wss" } else { "ws" };
    let url = match after {
        Some(seq) => format!("{scheme}://{server}/ws?after={seq}"),
        None => format!("{scheme}://{server}/ws"),
    };
    let url = url
        .parse()
        .map_err(|e| ClientError::Config(format!("WebSocket URL {url}: {e}")))?;
    let handshake = yawc::WebSocket::handshake(url, stream, options);
    let mut ws = tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| ClientError::Protocol("WebSocket handshake timed out".into()))?
        .map_err(|e| ClientError::Protocol(format!("WebSocket handshake failed: {e}")))?;
    sink.connected(now_ns());

    let mut clock = ArrivalClock::new();
    // Frames with their errors, so a broken connection says why.
    let mut frames = futures_util::stream::poll_fn(|cx| ws.poll_next_frame(cx).map(Some));
    let mut close_code = None;
    let stopped = loop {
        let Some((frame, received_ns)) = clock.next(&mut frames).await else {
            break false;
        };
        let frame = match frame {
            Ok(frame) => frame,
            // The close handshake done, the connection ends.
            Err(_) if close_code.is_some() => break false,
            Err(error) => return Err(ClientError::Protocol(format!("WebSocket: {error}"))),
        };
        let flow = match frame.opcode() {
            OpCode::Text => deliver(sink, frame.payload(), received_ns),
            OpCode::Binary => sink.malformed(&DecodeError::new(
                "binary frame where a text frame with a JSON event was expected",
            )),
            // yawc answers the server's close frame itself; reading on sends the answer and
            // then ends the connection.
            OpCode::Close => {
                close_code = Some(frame.close_code().unwrap_or(CloseCode::Status));
                Flow::Continue
            }
            // Pings are answered by yawc too.
            _ => Flow::Continue,
        };
        if flow == Flow::Stop {
            break true;
        }
    };
    drop(frames);
    if stopped {
        let _ = ws
            .send(Frame::close(CloseCode::Normal, "received the whole stream"))
            .await;
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while ws.next_frame().await.is_ok() {}
        })
        .await;
        return Ok(());
    }
    match close_code {
        Some(CloseCode::Normal) => Ok(()),
        Some(code) => Err(ClientError::Protocol(format!(
            "WebSocket closed with {} before the stream was complete",
            u16::from(code)
        ))),
        None => Err(ClientError::Protocol(
            "WebSocket connection ended without a close frame".into(),
        )),
    }
}
