//! pushbench's SSE-over-HTTP/2 client: the SSE parser over a load worker's shared HTTP/2
//! connections, and in two-way traffic its messages up as POSTs on the same connections.

use std::sync::LazyLock;

use axum::http::Uri;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use crate::transport::multiplex::Multiplexed;
use crate::transport::sse::{self};
use crate::transport::upstream::{self, Outbox};
use crate::transport::{ClientConfig, ClientError, Sink, Target};

/// The connections this process's subscribers share, for their streams and their messages up.
static SHARED: LazyLock<Multiplexed<Full<Bytes>>> = LazyLock::new(Multiplexed::default);

/// Subscribes as `sse` does (EventSource's reconnection with `Last-Event-ID` included), each
/// request a stream on one of this process's shared connections to `server`.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let origin = origin(target, config);
    let origin = &origin;
    let (watched, outbox) = upstream::outbox(sink, config);
    let receiving = async move {
        let mut sink = watched;
        sse::subscribe_over(target, config, &mut sink, |request| async move {
            // HTTP/2 names the server in the request's :authority, from an absolute URI.
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let uri = format!("{origin}{path}")
                .parse::<Uri>()
                .map_err(|e| ClientError::Config(e.to_string()))?;
            let (mut head, _) = request.into_parts();
            head.uri = uri;
            let request = axum::http::Request::from_parts(head, Full::new(Bytes::new()));
            let mut sender = SHARED.sender(target.addr, config).await?;
            let broken = |e: hyper::Error| ClientError::Protocol(format!("SSE over HTTP/2: {e}"));
            sender.ready().await.map_err(broken)?;
            let response = sender.send_request(request).await.map_err(broken)?;
            Ok(response.map(|body| body.into_data_stream()))
        })
        .await
    };
    let sending = post_each(outbox, target, config, origin);
    upstream::together(receiving, sending).await
}

/// `http://authority` or `https://authority`: where requests' absolute URIs begin.
fn origin(target: &Target, config: &ClientConfig) -> String {
    let scheme = if config.dialer().secure() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", target.authority())
}

/// Sends every message of the outbox as `POST /up`, one at a time and in order, each a stream
/// on the worker's shared connections (the one the subscription uses, with the default single
/// connection), as a browser's `fetch` shares the origin's HTTP/2 connection.
async fn post_each(
    outbox: Option<Outbox>,
    target: &Target,
    config: &ClientConfig,
    origin: &str,
) -> Result<(), ClientError> {
    let Some(mut outbox) = outbox else {
        return Ok(());
    };
    let uri = format!("{origin}{}", upstream::UPSTREAM_PATH);
    while let Some(message) = outbox.next().await {
        let mut sender = SHARED.sender(target.addr, config).await?;
        let request = upstream::request(&uri, message)?;
        let sending = async {
            sender.ready().await?;
            sender.send_request(request).await
        };
        upstream::send_one(config, sending).await?;
    }
    Ok(())
}
