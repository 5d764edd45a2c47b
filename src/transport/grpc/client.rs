//! pushbench's gRPC client: tonic's generated client over a load worker's shared HTTP/2 connections.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use axum::http::Uri;
use hyper::client::conn::http2::SendRequest;

use crate::transport::multiplex::Multiplexed;
use crate::transport::resume::Resuming;
use crate::transport::{
    Target,
    ArrivalClock, ClientConfig, ClientError, Flow,
    Sink,
};
use crate::clock::now_ns;
use crate::event::{DecodeError, Event, Gap};

use super::proto::delivery::Item;
use super::proto::events_client::EventsClient;
use super::proto::SubscribeRequest;

/// Calls `Subscribe` on `server` and feeds each event to the sink; a call that ends early is
/// made again from the event after the last received, with backoff, unless resuming is off.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let server = target.addr;
    let mut sink = Resuming::new(sink, config);
    loop {
        let first = sink.last_seq().map_or(0, |seq| seq + 1);
        let ended = call_once(server, config, &mut sink, first).await;
        if !sink.again(ended).await? {
            return Ok(());
        }
    }
}

/// One call from event `first`: `Ok` once the sink has enough, an error when the call failed
/// or ended first.
async fn call_once(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut Resuming<'_>,
    first: u64,
) -> Result<(), ClientError> {
    static SHARED: LazyLock<Multiplexed<tonic::body::Body>> = LazyLock::new(Multiplexed::default);
    let scheme = if config.dialer().secure() { "https" } else { "http" };
    let origin = format!("{scheme}://{server}")
        .parse::<Uri>()
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let connection = SHARED.sender(server, config).await?;
    let mut client = EventsClient::with_origin(OnConnection(connection), origin);
    let failed = |status: tonic::Status| {
        ClientError::Protocol(format!(
            "gRPC {:?}: {}",
            status.code(),
            status.message()
        ))
    };
    let mut calls = client
        .subscribe(SubscribeRequest {
            first,
            topics: config.topics.clone().unwrap_or_default(),
        })
        .await
        .map_err(failed)?
        .into_inner();
    sink.connected(now_ns());
    let mut clock = ArrivalClock::new();
    while let Some((message, received_ns)) = clock.next(&mut calls).await {
        let flow = match message.map_err(failed)?.item {
            Some(Item::Event(event)) => {
                let event = Event {
                    seq: event.seq,
                    topic: event.topic,
                    topic_seq: event.topic_seq,
                    scheduled_ns: event.scheduled_ns,
                    sent_ns: event.sent_ns,
                    payload: Cow::Owned(event.payload),
                };
                sink.event(&event, received_ns)
            }
            Some(Item::Gap(gap)) => {
                sink.gap(Gap {
                    from: gap.first,
                    count: gap.count,
                });
                Flow::Continue
            }
            None => sink.malformed(&DecodeError::new("a Delivery with neither event nor gap")),
        };
        if flow == Flow::Stop {
            return Ok(());
        }
    }
    Err(ClientError::Protocol(
        "the gRPC call ended before the stream was complete".into(),
    ))
}

/// A shared HTTP/2 connection as the service tonic's client calls through.
#[derive(Clone)]
struct OnConnection(SendRequest<tonic::body::Body>);

impl tower_service::Service<axum::http::Request<tonic::body::Body>> for OnConnection {
    type Response = axum::http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}
