//! WebSocket: the server (axum, upgrading into yawc) pushes each event as a text frame carrying
//! its JSON on `/ws`; the client is yawc too. Beside them, what most Rust services deploy:
//! axum's own upgrade and the tokio-tungstenite client (`--server-impl tokio-tungstenite`,
//! `--client-impl tokio-tungstenite`), on the same push loop and resume rule. Pings keep idle connections alive; the stream
//! ends with a clean close handshake (1000 when complete, 1001 when the server shuts down).
//! With `--compression deflate`, both sides negotiate permessage-deflate (RFC 7692), without
//! context takeover unless `websocket-context-takeover on`.
//!
//! `GET /ws?after=SEQ` resumes after event SEQ. Events the server no longer holds (past its
//! replay window) are announced by a text message `{"gap":{"from":F,"count":N}}` before the
//! events that follow them.

use std::sync::OnceLock;
use std::time::Duration;

use yawc::{CompressionLevel, DeflateOptions, DeflatePool, Frame, Options};

use super::compression::{Compression, COMPRESSION};
use super::{Colour, KeepAlive, Redelivery, Requests, Setting, Side, Spec, Traits};
use crate::hub::Batch;
use crate::settings::SettingValues;

mod axum_ws;
mod client;
mod push;
mod server;
mod subscriber;
mod tungstenite;

/// The subscriber's buffers: the dominant cost of an idle WebSocket client.
pub static READ_BUFFER: Setting<u64> = Setting {
    name: "websocket-read-buffer",
    help: "The subscriber's WebSocket read buffer, bytes: it grows for a larger frame and \
           shrinks back after it (yawc's default is 8 KiB); the server's buffers are 512 B",
    side: Side::Client,
    default: 4096,
    min: 256,
};

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

/// Where pushbench's server upgrades subscribers.
const OWN_PATH: &str = "/ws";

/// Full duplex after an HTTP Upgrade; resuming is the application's (pushbench's `?after=`).
pub static SPEC: Spec = Spec {
    name: "websocket",
    summary: "WebSocket text frames on /ws",
    colour: Colour(0, 114, 178),
    cursor_path: Some(OWN_PATH),
    interop: Some("WebSocket"),
    credentials: &[],
    servers: &[
        server_impl!(
            super::implementation::OWN,
            "axum upgrading into yawc, text frames, batched writes",
            server::serve
        ),
        server_impl!(
            "tokio-tungstenite",
            "axum's own WebSocketUpgrade (tokio-tungstenite), 4 KiB read buffer, batched \
             writes; no permessage-deflate",
            axum_ws::serve,
            axum_ws::refuses
        ),
    ],
    clients: &[
        client_impl!(
            super::implementation::OWN,
            "yawc, resuming with ?after=SEQ",
            client::subscribe
        ),
        client_impl!(
            "tokio-tungstenite",
            "tokio-tungstenite on the house's connections, resuming with ?after=SEQ; no \
             permessage-deflate",
            tungstenite::subscribe,
            tungstenite::refuses
        ),
    ],
    settings: resumable_settings![http, &READ_BUFFER, &CONTEXT_TAKEOVER],
    outside: super::spec::all_in_serve,
    guarantee: super::spec::exactly_once,
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
        udp: false,
        floor: false,
    },
};

/// The largest message a subscriber may send the server: control frames, and the messages it
/// sends up in two-way traffic.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// How long each side waits for the other's close frame before dropping the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

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
