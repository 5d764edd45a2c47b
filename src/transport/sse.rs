//! Server-Sent Events: the server (axum) streams `id:` = sequence number and `data:` = the JSON
//! event on `/sse`, every ready batch framed into one chunk, with `retry:` first and comment
//! heartbeats;
//! the client parses with the `sse-stream` crate over hyper and reconnects with `Last-Event-ID`
//! as a browser's `EventSource` does.
//!
//! Resume: a `Last-Event-ID` header (what `EventSource` sends on reconnect) or `?after=SEQ`.
//! Events the server no longer holds (past its replay window) are announced as an event named
//! `gap` whose data is `{"gap":{"from":F,"count":N}}` and whose id is the last event missed, so
//! a browser's `EventSource` resumes after it.
//! A subscriber that has read the whole stream and comes back is answered 204 No Content, which
//! tells a browser's `EventSource` to stop reconnecting.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use sse_stream::SseByteStream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::compression::{compressed, decoded, decoder_for, Compression, COMPRESSION};
use super::cursor::{first_seq_from_query, parse_after, BadRequest};
use super::resume::Resuming;
use super::{
    deliver, http1_connect, serve_http, ArrivalClock, ClientConfig, ClientError, Flow,
    Colour, KeepAlive, Redelivery, Requests, ServerConfig, Sink, Spec, TrackedListener, Traits,
};
use crate::clock::now_ns;
use crate::hub::{Batch, BatchLimit, Hub, Reader};

/// One-way, one unending response; the browser's EventSource resumes with `Last-Event-ID`.
pub static SPEC: Spec = Spec {
    name: "sse",
    summary: "Server-Sent Events on /sse",
    colour: Colour(230, 159, 0),
    cursor_path: Some("/sse"),
    settings: resumable_settings![http],
    outside: super::spec::all_in_serve,
    traits: Traits {
        duplex: false,
        browser_api: Some("EventSource"),
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: false,
        streams_response: true,
        http: true,
        multiplexed: false,
        keep_alive: KeepAlive::Heartbeat,
        requests: Requests::Stream,
        redelivery: Redelivery::BuiltIn("EventSource reconnects and resumes with Last-Event-ID"),
        floor: false,
    },
};

/// How long a browser should wait before reconnecting, sent as `retry:`.
const RETRY: Duration = Duration::from_secs(1);

/// What the `/sse` handler needs: the hub and the server's settings.
#[derive(Clone)]
pub(crate) struct AppState {
    pub hub: Arc<Hub>,
    pub config: Arc<ServerConfig>,
}

/// Serves `/sse` on `listener` until `shutdown` fires.
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
    let router = Router::new()
        .route("/sse", get(open_stream))
        .with_state(state);
    serve_http(
        listener,
        router,
        http,
        shutdown,
    )
    .await
}

/// `GET /sse`: the subscriber's stream from where it resumes (204 once it has everything).
pub(crate) async fn open_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let first_seq = match resume_point(&headers, query.as_deref()) {
        Ok(seq) => seq,
        Err(rejection) => return rejection.into_response(),
    };
    let reader = state.hub.reader(first_seq);
    if reader.at_end() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let compression = COMPRESSION.read(&state.config.settings);
    let coding = compression.for_request(&headers);
    let frames = frame_stream(reader, state.config.batch, state.config.heartbeat);
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
        // Tells buffering reverse proxies (nginx) to pass events through at once.
        (HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    // One compressed stream per response: the window carries from batch to batch, and the
    // compressor lives as long as the connection.
    let body = Body::from_stream(compressed(frames, coding.encoder()));
    let mut response = (headers, body).into_response();
    if let Some((name, value)) = coding.content_encoding() {
        response.headers_mut().insert(name, value);
    }
    if compression != Compression::Off {
        // The answer depends on what the client accepts (caches must keep them apart).
        let vary = HeaderValue::from_static("accept-encoding");
        response.headers_mut().insert(header::VARY, vary);
    }
    response
}

/// `Last-Event-ID` wins over `?after=`: it is what a reconnecting `EventSource` sends.
fn resume_point(headers: &HeaderMap, query: Option<&str>) -> Result<u64, BadRequest> {
    match headers.get("last-event-id") {
        Some(value) => parse_after(value.to_str().unwrap_or("(not text)")),
        None => first_seq_from_query(query),
    }
}

/// The subscriber's events as SSE frames: every event that is ready goes into one body chunk
/// (one write, one HTTP chunk) of `id: SEQ`, `data: EVENT` and a blank line each, built by
/// copying the hub's shared encoding, with no allocation per event. `retry:` leads the first
/// chunk; a comment goes out after every `heartbeat` without events. The stream ends when the
/// subscriber has the whole stream or the server closes.
///
/// The event JSON never holds a raw line break (JSON escapes them inside strings), so one
/// `data:` line carries it whole.
fn frame_stream(
    reader: Reader,
    limit: BatchLimit,
    heartbeat: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    let first = format!("retry: {}\n", RETRY.as_millis());
    futures_util::stream::unfold(
        (reader, Some(first)),
        move |(mut reader, mut first)| async move {
            let mut chunk = BytesMut::new();
            if let Some(retry) = first.take() {
                chunk.extend_from_slice(retry.as_bytes());
            }
            let batch = match tokio::time::timeout(heartbeat, reader.next_batch(limit)).await {
                // `None`: complete, or the server is closing; the response ends.
                Ok(batch) => batch?,
                Err(_) => {
                    chunk.extend_from_slice(b":heartbeat\n\n");
                    return Some((Ok(chunk.freeze()), (reader, first)));
                }
            };
            frame(&batch, &mut chunk);
            Some((Ok(chunk.freeze()), (reader, first)))
        },
    )
}

/// A batch as SSE frames: `id: SEQ`, `data: EVENT` and a blank line each (a gap first, as an
/// event named `gap`), copied from the hub's shared encoding with no allocation per event.
pub(crate) fn frame(batch: &Batch, chunk: &mut BytesMut) {
    let size: usize = batch.events.iter().map(|e| e.len() + FRAME_OVERHEAD).sum();
    chunk.reserve(size);
    let mut digits = itoa::Buffer::new();
    if let Some(gap) = batch.gap {
        chunk.extend_from_slice(b"event: gap\nid: ");
        chunk.extend_from_slice(digits.format(gap.last_seq()).as_bytes());
        chunk.extend_from_slice(b"\ndata: ");
        chunk.extend_from_slice(&gap.encode());
        chunk.extend_from_slice(b"\n\n");
    }
    for (seq, event) in batch.iter() {
        chunk.extend_from_slice(b"id: ");
        chunk.extend_from_slice(digits.format(seq).as_bytes());
        chunk.extend_from_slice(b"\ndata: ");
        chunk.extend_from_slice(event);
        chunk.extend_from_slice(b"\n\n");
    }
}

/// Bytes an SSE frame adds around an event: `id: `, up to 20 digits, `\ndata: `, `\n\n`.
const FRAME_OVERHEAD: usize = 4 + 20 + 7 + 2;

/// Subscribes to `http://server/sse` and feeds each event's data to the sink, reconnecting
/// with `Last-Event-ID` (as a browser's `EventSource` does) when the stream ends before the sink
/// has enough.
///
/// The load side parses with the `sse-stream` crate over a hyper connection of its own rather than with
/// `eventsource-client`: the standard client spent ~0.44 us and several allocations per event
/// in parsing alone (see `benches/components.rs`), which made the load, not the server, the
/// limit of every SSE row. Standard clients are still checked against the server by the
/// interop tests (the npm `eventsource` package).
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    subscribe_over(config, sink, |mut request| async move {
        // HTTP/1.1 names the server in a Host header.
        let host = HeaderValue::from_str(&server.to_string())
            .map_err(|e| ClientError::Config(e.to_string()))?;
        request.headers_mut().insert(header::HOST, host);
        http1_connect(server, config)
            .await?
            .send_request(request)
            .await
            .map_err(|e| ClientError::Protocol(format!("SSE: {e}")))
    })
    .await
}

/// The response to one `GET /sse`, over a connection of the subscriber's own or a stream on a
/// shared HTTP/2 connection.
pub(crate) type SseResponse = axum::http::Response<hyper::body::Incoming>;

/// The EventSource loop over whatever `send` sends requests on: one response of the stream
/// after another, with `Last-Event-ID` once an event id was seen, until the sink has enough or
/// the server says there is nothing more.
pub(crate) async fn subscribe_over<F, Fut>(
    config: &ClientConfig,
    sink: &mut dyn Sink,
    mut send: F,
) -> Result<(), ClientError>
where
    F: FnMut(axum::http::Request<http_body_util::Empty<Bytes>>) -> Fut,
    Fut: std::future::Future<Output = Result<SseResponse, ClientError>>,
{
    let mut sink = Resuming::new(sink, config);
    let mut last_event_id: Option<String> = None;
    loop {
        let ended = stream_once(config, &mut send, &mut sink, &mut last_event_id).await;
        if !sink.again(ended).await? {
            return Ok(());
        }
    }
}

/// One response of the stream, sending `Last-Event-ID` when an event id was seen: `Ok` once
/// the sink has enough or the server says there is nothing more (204), an error when the
/// response broke or ended first.
async fn stream_once<F, Fut>(
    config: &ClientConfig,
    send: &mut F,
    sink: &mut Resuming<'_>,
    last_event_id: &mut Option<String>,
) -> Result<(), ClientError>
where
    F: FnMut(axum::http::Request<http_body_util::Empty<Bytes>>) -> Fut,
    Fut: std::future::Future<Output = Result<SseResponse, ClientError>>,
{
    let mut request = axum::http::Request::get("/sse").header("accept", "text/event-stream");
    if let Some(id) = last_event_id.as_deref() {
        request = request.header("last-event-id", id);
    }
    if let Some((name, value)) = COMPRESSION.read(&config.settings).accept_encoding() {
        request = request.header(name, value);
    }
    let request = request
        .body(http_body_util::Empty::new())
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let response = send(request).await?;
    match response.status() {
        // Nothing more to send: the answer that tells EventSource to stop reconnecting.
        StatusCode::NO_CONTENT => return Ok(()),
        StatusCode::OK => {}
        status => {
            return Err(ClientError::Status {
                status: status.as_u16(),
                body: String::new(),
            })
        }
    }
    let decoder = decoder_for(response.headers()).map_err(ClientError::Protocol)?;
    sink.connected(now_ns());
    let chunks = decoded(response.into_body().into_data_stream(), decoder);
    let mut events = std::pin::pin!(SseByteStream::new(chunks));
    let mut clock = ArrivalClock::new();
    while let Some((item, received_ns)) = clock.next(&mut events).await {
        let event = item.map_err(|e| ClientError::Protocol(format!("SSE stream broke: {e}")))?;
        if event.id.is_some() {
            *last_event_id = event.id;
        }
        // Comments and metadata-only blocks carry no data.
        if let Some(data) = &event.data {
            if deliver(sink, data.as_bytes(), received_ns) == Flow::Stop {
                return Ok(());
            }
        }
    }
    Err(ClientError::Protocol(
        "SSE response ended before the stream was complete".into(),
    ))
}
