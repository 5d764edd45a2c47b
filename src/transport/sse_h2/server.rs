//! pushbench's SSE-over-HTTP/2 server: the SSE handler on the HTTP/2 loop, each request a subscriber.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::transport::http::serve_http2;
use crate::transport::sse::{self, AppState};
use crate::transport::tls::ALPN_H2;
use crate::transport::upstream::with_upstream;
use crate::transport::{ServerConfig, TrackedListener};

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
        hub: Arc::clone(&hub),
        config: Arc::new(config),
    };
    let router = Router::new()
        .route("/sse", get(open_counted))
        .with_state(state);
    // Messages up are one more stream on the subscriber's connection.
    let router = with_upstream(router, &hub);
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
