//! The SSE client many Rust services run: eventsource-client, its parser and event stream over
//! the house's connections (its transport trait, so TLS, source addresses and the slow
//! consumer are the same as every client's). Each connection is one eventsource-client stream
//! seeded with `Last-Event-ID`; reconnecting is pushbench's rule, as for its own client (the
//! library's retry loop is off), so fault rows time the same policy and differ by the library.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue, Uri};
use bytes::Bytes;
use eventsource_client::{Client as _, ClientBuilder, ReconnectOptions, SSE};
use futures_util::StreamExt;
use http_body_util::BodyExt as _;
use launchdarkly_sdk_transport::{
    ByteStream, HttpTransport, Request, Response, ResponseFuture, TransportError,
};
use sync_wrapper::{SyncFuture, SyncStream};

use crate::clock::now_ns;
use crate::transport::compression::{decoded, decoder_for, Compression, COMPRESSION};
use crate::transport::resume::{confirm_end, Resuming};
use crate::transport::upstream;
use crate::transport::{
    deliver, ArrivalClock, ClientConfig, ClientError, Dialer, Flow, Sink, Target,
};

use super::OWN_PATH;

/// Subscribes to `http://server/sse` with eventsource-client and feeds each event's data to
/// the sink; in two-way traffic, POSTs its messages up beside the stream as pushbench's
/// client does.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let (watched, outbox) = upstream::outbox(sink, config);
    let receiving = async move {
        let mut sink = watched;
        receive(target, config, &mut sink).await
    };
    let sending = upstream::post_each(outbox, target, config, None);
    upstream::together(receiving, sending).await
}

/// One eventsource-client stream after another, each from the last event id seen, until the
/// sink has enough or the server says there is nothing more.
async fn receive(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let dialer = config.dialer();
    let connections = HouseConnections(Arc::new(Dialing {
        server: target.addr,
        authority: HeaderValue::from_str(&target.authority())
            .map_err(|e| ClientError::Config(e.to_string()))?,
        bind: dialer.bind,
        timeout: dialer.timeout,
        tls: dialer.tls.cloned(),
        read_rate: dialer.read_rate,
    }));
    let scheme = if dialer.secure() { "https" } else { "http" };
    let path = target.request_path(OWN_PATH, config.topics_query().as_deref());
    let url = format!("{scheme}://{}{path}", target.authority());
    let compression = COMPRESSION.read(&config.settings);
    let mut sink = Resuming::new(sink, config);
    let mut last_event_id = None;
    loop {
        let ended = stream_once(
            &url,
            &connections,
            compression,
            &mut sink,
            &mut last_event_id,
        )
        .await;
        if !sink.again(ended).await? {
            break;
        }
    }
    if sink.confirms_end() {
        // The whole stream is here: one more stream from the last event id confirms it, and
        // the server's 204 ends it (eventsource-client reports it as connected with 204).
        confirm_end(config, || async {
            let client = stream_client(&url, &connections, compression, &last_event_id)?;
            match client.stream().next().await {
                Some(Ok(SSE::Connected(details))) if details.response().status() == 204 => Ok(()),
                Some(Err(error)) => Err(failed(error)),
                _ => Err(ClientError::Protocol(
                    "the stream went on past its end: no 204".into(),
                )),
            }
        })
        .await;
    }
    Ok(())
}

/// An eventsource-client of one stream from `url`, resuming after `last_event_id` when one
/// was seen, with the library's own reconnection off (pushbench's resumes instead).
fn stream_client(
    url: &str,
    connections: &HouseConnections,
    compression: Compression,
    last_event_id: &Option<String>,
) -> Result<impl eventsource_client::Client, ClientError> {
    let library = |e: eventsource_client::Error| ClientError::Config(e.to_string());
    let mut builder = ClientBuilder::for_url(url)
        .map_err(library)?
        .reconnect(ReconnectOptions::reconnect(false).build());
    if let Some(id) = last_event_id.clone() {
        builder = builder.last_event_id(id);
    }
    if let Some((name, value)) = compression.accept_encoding() {
        builder = builder.header(name, value).map_err(library)?;
    }
    Ok(builder.build_with_transport(connections.clone()))
}

/// One eventsource-client stream: `Ok` once the sink has enough or the server answers 204, an
/// error when the response broke or ended first.
async fn stream_once(
    url: &str,
    connections: &HouseConnections,
    compression: Compression,
    sink: &mut Resuming<'_>,
    last_event_id: &mut Option<String>,
) -> Result<(), ClientError> {
    let client = stream_client(url, connections, compression, last_event_id)?;
    let mut events = client.stream();
    let mut clock = ArrivalClock::new();
    while let Some((item, received_ns)) = clock.next(&mut events).await {
        match item.map_err(failed)? {
            // Nothing more to send: the answer that tells EventSource to stop reconnecting.
            SSE::Connected(details) if details.response().status() == 204 => return Ok(()),
            SSE::Connected(_) => sink.connected(now_ns()),
            SSE::Event(event) => {
                if event.id.is_some() {
                    last_event_id.clone_from(&event.id);
                }
                if deliver(sink, event.data.as_bytes(), received_ns) == Flow::Stop {
                    // Open until every subscriber has the stream, where the load asks.
                    sink.linger().await;
                    return Ok(());
                }
            }
            SSE::Comment(_) => {}
        }
    }
    Err(ClientError::Protocol(
        "SSE response ended before the stream was complete".into(),
    ))
}

/// What eventsource-client reported, as the subscription's error: a status it refused as the
/// status (a 4xx is an answer, not a drop), anything else a broken stream.
fn failed(error: eventsource_client::Error) -> ClientError {
    match error {
        eventsource_client::Error::UnexpectedResponse(response, _) => ClientError::Status {
            status: response.status(),
            body: String::new(),
        },
        error => ClientError::Protocol(format!("eventsource-client: {error}")),
    }
}

/// eventsource-client's requests on the house's connections: an HTTP/1.1 connection of the
/// subscriber's own per request (TCP, TLS when on, from the subscriber's source address, read
/// at the slow consumer's rate), the response body decoded where the server compressed it.
///
/// Shared by the subscriber's connections (the library clones its transport), holding only
/// what dialing needs rather than the subscriber's whole configuration, so the row's memory is
/// the library's.
#[derive(Clone)]
struct HouseConnections(Arc<Dialing>);

/// What a subscriber's connections are opened with.
struct Dialing {
    server: SocketAddr,
    /// The server's name as the request's `Host`.
    authority: HeaderValue,
    bind: Option<std::net::IpAddr>,
    timeout: std::time::Duration,
    tls: Option<crate::transport::tls::TlsMaterial>,
    read_rate: Option<u64>,
}

impl Dialing {
    fn dialer(&self) -> Dialer<'_> {
        Dialer {
            bind: self.bind,
            timeout: self.timeout,
            tls: self.tls.as_ref(),
            read_rate: self.read_rate,
            server_name: None,
        }
    }
}

impl HttpTransport for HouseConnections {
    fn request(&self, request: Request<Option<Bytes>>) -> ResponseFuture {
        let connections = Arc::clone(&self.0);
        // The trait asks for a Sync future; the house's connect is Send only, and the wrapper
        // makes it Sync by only ever lending it out mutably.
        Box::pin(SyncFuture::new(async move {
            let fail = |e: ClientError| TransportError::new(e);
            let request = connections.origin_form(request).map_err(fail)?;
            let mut sender = connections
                .dialer()
                .http1(connections.server)
                .await
                .map_err(fail)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| fail(ClientError::Protocol(format!("SSE: {e}"))))?;
            let (parts, body) = response.into_parts();
            let decoder =
                decoder_for(&parts.headers).map_err(|why| fail(ClientError::Protocol(why)))?;
            let chunks = decoded(body.into_data_stream(), decoder)
                .map(|chunk| chunk.map_err(TransportError::new));
            let body: ByteStream = Box::pin(SyncStream::new(chunks));
            Ok(Response::from_parts(parts, body))
        }))
    }
}

impl Dialing {
    /// The library's request as HTTP/1.1 sends it: the path alone, the server in `Host`.
    fn origin_form(
        &self,
        request: Request<Option<Bytes>>,
    ) -> Result<axum::http::Request<http_body_util::Empty<Bytes>>, ClientError> {
        let (mut parts, _) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = path
            .parse::<Uri>()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        parts.headers.insert(header::HOST, self.authority.clone());
        Ok(axum::http::Request::from_parts(
            parts,
            http_body_util::Empty::new(),
        ))
    }
}
