//! Server-Sent Events over HTTP/2: the `sse` transport's stream (its `/sse` handler, framing,
//! resume and client parsing, from `sse.rs`) over hyper's HTTP/2 connections, cleartext with
//! prior knowledge (h2c), or h2 over TLS by ALPN. A browser multiplexes every `EventSource` of
//! an origin over one HTTP/2 connection, which lifts HTTP/1.1's six connections per origin;
//! the load side does the same: each load worker multiplexes its subscribers over
//! `--http2-connections` connections (default 1, as a browser), round robin
//! ([`super::multiplex`]). Every request is a subscriber of its own, counted while its response
//! lives.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::Empty;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::compression::COMPRESSION;
use super::http::serve_http2;
use super::multiplex::{Multiplexed, CONNECTIONS};
use super::sse::{self, AppState};
use super::tls::ALPN_H2;
use super::{
    ClientConfig, ClientError, Colour, KeepAlive, Redelivery, Requests, ServerConfig, Sink, Spec,
    TrackedListener, Traits,
};
use crate::hub::{Batch, Hub};

/// One-way, one unending response per subscriber, many on one connection.
pub static SPEC: Spec = Spec {
    name: "sse-h2",
    summary: "Server-Sent Events over HTTP/2 on /sse (h2c, or h2 over TLS), subscribers \
              multiplexed on shared connections",
    colour: Colour(86, 180, 233),
    cursor_path: Some("/sse"),
    settings: resumable_settings![&CONNECTIONS, &COMPRESSION],
    outside: super::spec::all_in_serve,
    traits: Traits {
        duplex: false,
        browser_api: Some("EventSource"),
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: false,
        streams_response: true,
        http: true,
        multiplexed: true,
        keep_alive: KeepAlive::Heartbeat,
        requests: Requests::Stream,
        redelivery: Redelivery::BuiltIn("EventSource reconnects and resumes with Last-Event-ID"),
        floor: false,
    },
};

/// Serves `/sse` over HTTP/2 on `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener =
        TrackedListener::for_subscribers_offering(listener, Arc::clone(&hub), &config, ALPN_H2)?;
    let (http, heartbeat) = (config.http, config.heartbeat);
    let cap = config.limits.subscriber_cap();
    let state = AppState {
        hub,
        config: Arc::new(config),
    };
    let router = Router::new()
        .route("/sse", get(open_counted))
        .with_state(state);
    serve_http2(listener, router, http, (cap, heartbeat), shutdown).await
}

/// `GET /sse` as a subscriber of its own: counted while its response lives, and past the
/// subscriber cap refused with 503.
async fn open_counted(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: RawQuery,
) -> Response {
    if state.hub.subscribers() >= state.config.limits.subscriber_cap() {
        let why = "server full: it holds as many subscribers as it allows (--max-subscribers)\n";
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    let guard = state.hub.join();
    let response = sse::open_stream(State(state), headers, query).await;
    // The subscriber counts until its stream ends: the guard goes with the body.
    response.map(|body| {
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _counted = &guard;
            chunk
        }))
    })
}

/// The same frames as `sse`: HTTP/2 changes the connection, not the stream.
pub(crate) fn frame(batch: &Batch, out: &mut bytes::BytesMut) {
    sse::frame(batch, out);
}

/// Subscribes as `sse` does (EventSource's reconnection with `Last-Event-ID` included), each
/// request a stream on one of this process's shared connections to `server`.
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    static SHARED: LazyLock<Multiplexed<Empty<Bytes>>> = LazyLock::new(Multiplexed::default);
    let scheme = if config.dialer().secure() { "https" } else { "http" };
    sse::subscribe_over(config, sink, |mut request| {
        async move {
            // HTTP/2 names the server in the request's :authority, from an absolute URI.
            let path = request.uri().path_and_query().map_or("/sse", |p| p.as_str());
            *request.uri_mut() = format!("{scheme}://{server}{path}")
                .parse::<Uri>()
                .map_err(|e| ClientError::Config(e.to_string()))?;
            let mut sender = SHARED.sender(server, config).await?;
            let broken = |e: hyper::Error| ClientError::Protocol(format!("SSE over HTTP/2: {e}"));
            sender.ready().await.map_err(broken)?;
            sender.send_request(request).await.map_err(broken)
        }
    })
    .await
}
