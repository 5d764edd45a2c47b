//! Server-Sent Events: the server (axum's SSE support) streams `id:` = sequence number and
//! `data:` = the JSON event on `/sse`, with `retry:` on the first event and comment heartbeats;
//! the client is the `eventsource-client` crate, which reconnects with `Last-Event-ID` on its own.
//!
//! Resume: a `Last-Event-ID` header (what `EventSource` sends on reconnect) or `?after=SEQ`.
//! A subscriber that has read the whole stream and comes back is answered 204 No Content, which
//! tells a browser's `EventSource` to stop reconnecting.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use eventsource_client::{Client as _, ClientBuilder, ReconnectOptions, SSE};
use futures_util::StreamExt;
use hyper_util::client::legacy::connect::HttpConnector;
use launchdarkly_sdk_transport::HyperTransport;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cursor::{first_seq_from_query, parse_after, BadRequest};
use super::{
    deliver, serve_http, ClientConfig, ClientError, Flow, Redelivery, Requests, ServerConfig, Sink,
    TrackedListener, Traits,
};
use crate::clock::now_ns;
use crate::hub::{BatchLimit, Hub, Reader};

/// One-way, one unending response; the browser's EventSource resumes with `Last-Event-ID`.
pub const TRAITS: Traits = Traits {
    duplex: false,
    browser_api: Some("EventSource"),
    needs_inbound_http: false,
    holds_connection: true,
    needs_upgrade: false,
    streams_response: true,
    http: true,
    requests: Requests::Stream,
    redelivery: Redelivery::BuiltIn("EventSource reconnects and resumes with Last-Event-ID"),
    floor: false,
};

/// How long a browser should wait before reconnecting, sent as `retry:`.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct AppState {
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
}

/// Serves `/sse` on `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let counters = Arc::clone(&config.counters);
    let state = AppState {
        hub: Arc::clone(&hub),
        config: Arc::new(config),
    };
    let router = Router::new()
        .route("/sse", get(open_stream))
        .with_state(state);
    serve_http(
        TrackedListener::new(listener, Some(hub), counters),
        router,
        shutdown,
    )
    .await
}

async fn open_stream(
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
    let events = event_stream(reader, state.config.batch);
    let keep_alive = KeepAlive::new()
        .interval(state.config.heartbeat)
        .text("heartbeat");
    // Tells buffering reverse proxies (nginx) to pass events through at once.
    let headers = [("x-accel-buffering", "no")];
    (headers, Sse::new(events).keep_alive(keep_alive)).into_response()
}

/// `Last-Event-ID` wins over `?after=`: it is what a reconnecting `EventSource` sends.
fn resume_point(headers: &HeaderMap, query: Option<&str>) -> Result<u64, BadRequest> {
    match headers.get("last-event-id") {
        Some(value) => parse_after(value.to_str().unwrap_or("(not text)")),
        None => first_seq_from_query(query),
    }
}

/// The subscriber's events as SSE frames. Every event already in the log is yielded without
/// waiting, so hyper gathers them into one write; the stream waits only when it has caught up.
fn event_stream(
    reader: Reader,
    limit: BatchLimit,
) -> impl futures_util::Stream<Item = Result<SseEvent, Infallible>> {
    struct State {
        reader: Reader,
        pending: VecDeque<(u64, Bytes)>,
        first: bool,
    }
    let state = State {
        reader,
        pending: VecDeque::new(),
        first: true,
    };
    futures_util::stream::unfold(state, move |mut state| async move {
        loop {
            if let Some((seq, bytes)) = state.pending.pop_front() {
                let mut frame = SseEvent::default()
                    .id(seq.to_string())
                    .data(String::from_utf8_lossy(&bytes));
                if std::mem::take(&mut state.first) {
                    frame = frame.retry(RETRY);
                }
                return Some((Ok(frame), state));
            }
            // `None` (complete, or the server is closing) ends the response.
            let batch = state.reader.next_batch(limit).await?;
            state
                .pending
                .extend(batch.iter().map(|(seq, bytes)| (seq, bytes.clone())));
        }
    })
}

/// Subscribes to `http://server/sse` with `eventsource-client` and feeds each event's data to
/// the sink. The client reconnects by itself (sending `Last-Event-ID`) if the stream breaks.
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_local_address(config.bind);
    let transport = HyperTransport::builder()
        .disable_proxy()
        .connect_timeout(config.connect_timeout)
        .build_with_connector(connector)
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let url = format!("http://{server}/sse");
    let reconnect = ReconnectOptions::reconnect(true)
        .retry_initial(false)
        .delay(Duration::from_millis(100))
        .delay_max(Duration::from_secs(2))
        .build();
    let client = ClientBuilder::for_url(&url)
        .map_err(|e| ClientError::Config(e.to_string()))?
        .reconnect(reconnect)
        .build_with_transport(transport);

    let mut stream = client.stream();
    while let Some(item) = stream.next().await {
        match item {
            Ok(SSE::Connected(_)) => sink.connected(now_ns()),
            Ok(SSE::Event(event)) => {
                if deliver(sink, event.data.as_bytes(), now_ns()) == Flow::Stop {
                    return Ok(());
                }
            }
            Ok(SSE::Comment(_)) => {}
            // The server ended the response: the client reconnects with Last-Event-ID.
            Err(eventsource_client::Error::Eof) => {}
            Err(error) => return Err(ClientError::Protocol(format!("SSE: {error}"))),
        }
    }
    Ok(())
}
