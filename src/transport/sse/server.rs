//! pushbench's SSE server: axum streaming `/sse`, each ready batch one chunk, resumed by
//! `Last-Event-ID`; in two-way traffic, messages up arrive as `POST /up`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::{Bytes, BytesMut};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::{BatchLimit, Hub, Reader};
use crate::transport::compression::{compressed, Compression, COMPRESSION};
use crate::transport::cursor::{
    first_seq_from_query, interest_from_query, parse_after, BadRequest,
};
use crate::transport::upstream::with_upstream;
use crate::transport::{serve_http1, Http1Engine, ServerConfig, TrackedListener};

use super::{frame, OWN_PATH};

/// How long a browser should wait before reconnecting, sent as `retry:`.
pub(super) const RETRY: Duration = Duration::from_secs(1);

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
    // Our own lean connections: a stream waiting for its next event keeps no buffer.
    let engine = Http1Engine::Lean;
    serve_route(listener, hub, (config, engine), shutdown, open_stream).await
}

/// Serves `handler` on `/sse` until `shutdown` fires, with `POST /up` for messages up: the
/// routes every SSE server here answers on, its connections driven by `engine`.
pub(super) async fn serve_route<H, T>(
    listener: TcpListener,
    hub: Arc<Hub>,
    (config, engine): (ServerConfig, Http1Engine),
    shutdown: CancellationToken,
    handler: H,
) -> std::io::Result<()>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let listener = TrackedListener::for_subscribers(listener, Arc::clone(&hub), &config)?;
    let http = config.http;
    let state = AppState {
        hub: Arc::clone(&hub),
        config: Arc::new(config),
    };
    let router = Router::new()
        .route(OWN_PATH, get(handler))
        .with_state(state);
    let router = with_upstream(router, &hub);
    serve_http1(listener, router, http, engine, shutdown).await
}

/// `GET /sse`: the subscriber's stream from where it resumes (204 once it has everything).
pub(crate) async fn open_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let reader = match subscription(&state, &headers, query.as_deref()) {
        Ok(reader) => reader,
        Err(answer) => return *answer,
    };
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

/// The subscription a `GET` of the stream asks for, from where it resumes; or the answer
/// instead (boxed: the rare path): 400 for a bad cursor or topic, 204 once the subscriber has
/// the whole stream. A request resuming from the end is how a subscriber confirms it holds
/// the whole stream (what a reconnecting `EventSource` sends once the stream closed), and the
/// 204 stops it for good.
pub(super) fn subscription(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Reader, Box<Response>> {
    let refused = |rejection: BadRequest| Box::new(rejection.into_response());
    let first_seq = resume_point(headers, query).map_err(refused)?;
    let interest = interest_from_query(query, &state.hub).map_err(refused)?;
    let mut reader = state.hub.reader_of(first_seq, interest);
    if reader.at_end() {
        reader.confirm_end();
        return Err(Box::new(StatusCode::NO_CONTENT.into_response()));
    }
    Ok(reader)
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
