//! pushbench's SSE-over-HTTP/2 client: the SSE parser over a load worker's shared HTTP/2 connections.

use std::sync::LazyLock;

use axum::http::Uri;
use bytes::Bytes;
use http_body_util::Empty;

use crate::transport::multiplex::Multiplexed;
use crate::transport::sse::{self};
use crate::transport::{
    Target,
    ClientConfig, ClientError, Sink,
};


/// Subscribes as `sse` does (EventSource's reconnection with `Last-Event-ID` included), each
/// request a stream on one of this process's shared connections to `server`.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let server = target.addr;
    let authority = target.authority();
    let authority = &authority;
    static SHARED: LazyLock<Multiplexed<Empty<Bytes>>> = LazyLock::new(Multiplexed::default);
    let scheme = if config.dialer().secure() { "https" } else { "http" };
    sse::subscribe_over(target, config, sink, |mut request| {
        async move {
            // HTTP/2 names the server in the request's :authority, from an absolute URI.
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
            *request.uri_mut() = format!("{scheme}://{authority}{path}")
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
