//! pushbench's SSE client: `sse-stream` over the house's lean HTTP/1.1 connection,
//! reconnecting with `Last-Event-ID` as `EventSource` does, and in two-way traffic POSTing its
//! messages up beside the stream.

use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use futures_util::Stream;
use sse_stream::SseByteStream;

use crate::clock::now_ns;
use crate::transport::compression::{decoded, decoder_for, COMPRESSION};
use crate::transport::http1_client::Http1Connection;
use crate::transport::resume::{confirm_end, Resuming};
use crate::transport::upstream;
use crate::transport::{deliver, ArrivalClock, ClientConfig, ClientError, Flow, Sink, Target};

use super::OWN_PATH;

/// Subscribes to `http://server/sse` and feeds each event's data to the sink, reconnecting
/// with `Last-Event-ID` (as a browser's `EventSource` does) when the stream ends before the sink
/// has enough.
///
/// The load side parses with the `sse-stream` crate over a connection of its own rather than with
/// `eventsource-client`: the standard client spent ~0.44 us and several allocations per event
/// in parsing alone (see `benches/components.rs`), which made the load, not the server, the
/// limit of every SSE row. The connection is the house's lean HTTP/1.1 one, not hyper's, whose
/// buffers and channel cost 24 KiB per subscriber. Standard clients are still checked against
/// the server by the interop tests (the npm `eventsource` package), and eventsource-client is a
/// row of its own.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let server = target.addr;
    let authority = target.authority();
    let authority = &authority;
    let (watched, outbox) = upstream::outbox(sink, config);
    let receiving = async move {
        let mut sink = watched;
        subscribe_over(target, config, &mut sink, |mut request| async move {
            // HTTP/1.1 names the server in a Host header.
            let host =
                HeaderValue::from_str(authority).map_err(|e| ClientError::Config(e.to_string()))?;
            request.headers_mut().insert(header::HOST, host);
            let response = Http1Connection::open(&config.dialer(), server)
                .await?
                .send(&request)
                .await?;
            Ok(response.map(|body| body.into_stream()))
        })
        .await
    };
    // Messages up (two-way traffic) go as POSTs on a connection of their own, as a browser's
    // fetch beside its EventSource: the stream's connection is busy with its response.
    let sending = upstream::post_each(outbox, target, config, None);
    upstream::together(receiving, sending).await
}

/// The EventSource loop over whatever `send` sends requests on (a connection of the
/// subscriber's own, or a stream on a shared HTTP/2 connection), each answered with a response
/// whose body is a stream of bytes: one response of the stream after another, with
/// `Last-Event-ID` once an event id was seen, until the sink has enough or the server says
/// there is nothing more.
pub(crate) async fn subscribe_over<F, Fut, B, E>(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
    mut send: F,
) -> Result<(), ClientError>
where
    F: FnMut(axum::http::Request<http_body_util::Empty<Bytes>>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<B>, ClientError>>,
    B: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let mut sink = Resuming::new(sink, config);
    let mut last_event_id: Option<String> = None;
    loop {
        let ended = stream_once(target, config, &mut send, &mut sink, &mut last_event_id).await;
        if !sink.again(ended).await? {
            break;
        }
    }
    if sink.confirms_end() {
        // The whole stream is here: one more request from the last event confirms it, as an
        // `EventSource` reconnecting after the stream closed does, and the 204 ends it.
        confirm_end(config, || {
            // The request is sent here; only its answer is awaited in the attempt.
            let sent = stream_request(target, config, last_event_id.as_deref()).map(&mut send);
            async move {
                match sent?.await?.status() {
                    StatusCode::NO_CONTENT => Ok(()),
                    status => Err(ClientError::Status {
                        status: status.as_u16(),
                        body: String::new(),
                    }),
                }
            }
        })
        .await;
    }
    Ok(())
}

/// A `GET` of the stream, from after `last_event_id` when one was seen.
fn stream_request(
    target: &Target,
    config: &ClientConfig,
    last_event_id: Option<&str>,
) -> Result<axum::http::Request<http_body_util::Empty<Bytes>>, ClientError> {
    // The streams followed are in the URL, which a reconnecting EventSource asks for again.
    let path = target.request_path(OWN_PATH, config.topics_query().as_deref());
    let mut request = axum::http::Request::get(path).header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    if let Some((name, value)) = COMPRESSION.read(&config.settings).accept_encoding() {
        request = request.header(name, value);
    }
    request
        .body(http_body_util::Empty::new())
        .map_err(|e| ClientError::Config(e.to_string()))
}

/// One response of the stream, sending `Last-Event-ID` when an event id was seen: `Ok` once
/// the sink has enough or the server says there is nothing more (204), an error when the
/// response broke or ended first.
async fn stream_once<F, Fut, B, E>(
    target: &Target,
    config: &ClientConfig,
    send: &mut F,
    sink: &mut Resuming<'_>,
    last_event_id: &mut Option<String>,
) -> Result<(), ClientError>
where
    F: FnMut(axum::http::Request<http_body_util::Empty<Bytes>>) -> Fut,
    Fut: std::future::Future<Output = Result<Response<B>, ClientError>>,
    B: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    let response = send(stream_request(target, config, last_event_id.as_deref())?).await?;
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
    let chunks = decoded(response.into_body(), decoder);
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
                // Open until every subscriber has the stream, where the load asks.
                sink.linger().await;
                return Ok(());
            }
        }
    }
    Err(ClientError::Protocol(
        "SSE response ended before the stream was complete".into(),
    ))
}
