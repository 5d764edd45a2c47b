//! Messages up over HTTP, for the transports whose stream is HTTP but one-way (SSE over
//! HTTP/1.1 and HTTP/2, long and short polling) and for webhook consumers calling their
//! provider: each message is a `POST /up` with the message's JSON as its body, answered
//! `204 No Content` once the server has taken it (or `400` with the reason).
//!
//! A browser does this with `fetch`: over HTTP/1.1 on a connection of its own beside the
//! stream (the stream's connection is busy with the held response), over HTTP/2 as one more
//! stream on the shared connection. The body needs no `Content-Type` of its own, so a page of
//! any origin can send it without a CORS preflight.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use std::future::Future;

use super::schedule::Outbox;
use crate::hub::Hub;
use crate::transport::{ClientConfig, ClientError, Target};

/// Where messages go up.
pub const UPSTREAM_PATH: &str = "/up";

/// The largest message body the server reads.
const MAX_MESSAGE: usize = 64 * 1024;

/// `router` with `POST /up` beside its routes when the hub takes messages up (a one-way
/// server has no such route: 404).
pub(crate) fn with_upstream(router: Router, hub: &Arc<Hub>) -> Router {
    if !hub.two_way() {
        return router;
    }
    let up = Router::new()
        .route(UPSTREAM_PATH, post(take))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE))
        .with_state(Arc::clone(hub));
    router.merge(up)
}

/// `POST /up`: the message handed to the hub, 204 once taken.
async fn take(State(hub): State<Arc<Hub>>, body: Bytes) -> Response {
    answer(hub.receive_upstream(body).await)
}

/// The answer to a message up: 204 once taken, 400 with the reason when refused.
pub(crate) fn answer(taken: Result<(), String>) -> Response {
    match taken {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    }
}

/// A message up as an HTTP request to `uri` (a path, or over HTTP/2 an absolute URI).
pub(crate) fn request(
    uri: &str,
    message: Vec<u8>,
) -> Result<axum::http::Request<Full<Bytes>>, ClientError> {
    axum::http::Request::post(uri)
        .body(Full::new(Bytes::from(message)))
        .map_err(|e| ClientError::Config(e.to_string()))
}

/// Sends one message up (`sending` is the request under way) and reads the server's answer,
/// within the request timeout: `Ok` for a 2xx, else the status and its reason. A message whose
/// answer never came is not sent again (the server may have taken it): the caller fails.
pub(crate) async fn send_one(
    config: &ClientConfig,
    sending: impl Future<Output = Result<axum::http::Response<Incoming>, hyper::Error>>,
) -> Result<(), ClientError> {
    let broken = |e: hyper::Error| ClientError::Protocol(format!("sending up: {e}"));
    let exchange = async {
        let response = sending.await.map_err(broken)?;
        let status = response.status();
        // Read to the end either way, so a kept-alive connection is ready for the next one.
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(broken)?
            .to_bytes();
        if status.is_success() {
            return Ok(());
        }
        Err(ClientError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        })
    };
    tokio::time::timeout(config.request_timeout, exchange)
        .await
        .map_err(|_| {
            ClientError::Protocol(format!(
                "sending up: no answer within {:?}",
                config.request_timeout
            ))
        })?
}

/// Sends every message of the outbox as `POST /up` to `target`, one at a time and in order,
/// on an HTTP/1.1 keep-alive connection of the subscriber's own (opened again if the server
/// closes it between messages), with `authorization` where the server's API needs it.
pub(crate) async fn post_each(
    outbox: Option<Outbox>,
    target: &Target,
    config: &ClientConfig,
    authorization: Option<&str>,
) -> Result<(), ClientError> {
    let Some(mut outbox) = outbox else {
        return Ok(());
    };
    let header_value =
        |text: &str| HeaderValue::from_str(text).map_err(|e| ClientError::Config(e.to_string()));
    let host = header_value(&target.authority())?;
    let authorization = authorization.map(header_value).transpose()?;
    let mut connection: Option<SendRequest<Full<Bytes>>> = None;
    while let Some(message) = outbox.next().await {
        let sender = match &mut connection {
            Some(sender) if !sender.is_closed() => sender,
            _ => connection.insert(config.dialer().http1(target.addr).await?),
        };
        let mut request = request(UPSTREAM_PATH, message)?;
        request.headers_mut().insert(header::HOST, host.clone());
        if let Some(authorization) = &authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, authorization.clone());
        }
        let sending = async {
            sender.ready().await?;
            sender.send_request(request).await
        };
        send_one(config, sending).await?;
    }
    Ok(())
}
