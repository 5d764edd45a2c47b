//! pushbench's gRPC client: tonic's generated client over a load worker's shared HTTP/2
//! connections, `Subscribe` for the stream and a unary `Send` call per message up.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use axum::http::Uri;
use hyper::client::conn::http2::SendRequest;

use crate::clock::now_ns;
use crate::event::{DecodeError, Event, Gap};
use crate::transport::multiplex::Multiplexed;
use crate::transport::resume::{confirm_end, Resuming};
use crate::transport::upstream;
use crate::transport::{ArrivalClock, ClientConfig, ClientError, Flow, Sink, Target};

use super::proto::delivery::Item;
use super::proto::events_client::EventsClient;
use super::proto::{Delivery, SubscribeRequest, UpMessage};
use super::{from_proto, to_proto};

/// The connections this process's subscribers share, for their calls of every kind.
pub(super) static SHARED: LazyLock<Multiplexed<tonic::body::Body>> =
    LazyLock::new(Multiplexed::default);

/// Calls `Subscribe` on `server` and feeds each event to the sink; a call that ends early is
/// made again from the event after the last received, with backoff, unless resuming is off.
/// In two-way traffic, each message up is a unary `Send` call beside it, on the same shared
/// connections.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let server = target.addr;
    let (watched, outbox) = upstream::outbox(sink, config);
    let receiving = async move {
        let mut watched = watched;
        let mut sink = Resuming::new(&mut watched, config);
        loop {
            let first = sink.last_seq().map_or(0, |seq| seq + 1);
            let ended = call_once(server, config, &mut sink, first).await;
            if !sink.again(ended).await? {
                break;
            }
        }
        if let Some(last) = sink.last_seq().filter(|_| sink.confirms_end()) {
            // The whole stream is here: one more call from after the last event confirms it,
            // and the server ends that call at once, with no message.
            confirm_end(config, || confirm_from(server, config, last + 1)).await;
        }
        Ok(())
    };
    upstream::together(receiving, send_each(outbox, server, config)).await
}

/// A `Subscribe` call from event `first`, the end: `Ok` when it ends without a message. Both
/// clients confirm the end with it, `Converse`'s too: it is gRPC's request from the end.
pub(super) async fn confirm_from(
    server: SocketAddr,
    config: &ClientConfig,
    first: u64,
) -> Result<(), ClientError> {
    let mut calls = subscribe_from(server, config, first).await?;
    match calls.message().await.map_err(failed)? {
        None => Ok(()),
        Some(_) => Err(ClientError::Protocol(
            "gRPC: a call from the end delivered a message".into(),
        )),
    }
}

/// A client of the `Events` service over the next of the shared connections to `server`.
pub(super) async fn client(
    server: SocketAddr,
    config: &ClientConfig,
) -> Result<EventsClient<OnConnection>, ClientError> {
    let scheme = if config.dialer().secure() {
        "https"
    } else {
        "http"
    };
    let origin = format!("{scheme}://{server}")
        .parse::<Uri>()
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let connection = SHARED.sender(server, config).await?;
    Ok(EventsClient::with_origin(OnConnection(connection), origin))
}

/// A `Subscribe` call from event `first`, for the streams the subscriber follows: its
/// deliveries as they come.
async fn subscribe_from(
    server: SocketAddr,
    config: &ClientConfig,
    first: u64,
) -> Result<tonic::Streaming<Delivery>, ClientError> {
    let calls = client(server, config)
        .await?
        .subscribe(SubscribeRequest {
            first,
            topics: config.topics.clone().unwrap_or_default(),
        })
        .await
        .map_err(failed)?;
    Ok(calls.into_inner())
}

/// A failed call as the subscription's error.
pub(super) fn failed(status: tonic::Status) -> ClientError {
    ClientError::Protocol(format!("gRPC {:?}: {}", status.code(), status.message()))
}

/// One call from event `first`: `Ok` once the sink has enough, an error when the call failed
/// or ended first.
async fn call_once(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut Resuming<'_>,
    first: u64,
) -> Result<(), ClientError> {
    let mut calls = subscribe_from(server, config, first).await?;
    sink.connected(now_ns());
    let mut clock = ArrivalClock::new();
    while let Some((message, received_ns)) = clock.next(&mut calls).await {
        if hand_over(sink, message.map_err(failed)?, received_ns) == Flow::Stop {
            // Open until every subscriber has the stream, where the load asks.
            sink.linger().await;
            return Ok(());
        }
    }
    Err(ClientError::Protocol(
        "the gRPC call ended before the stream was complete".into(),
    ))
}

/// Sends every message of the outbox as a unary `Send` call, one at a time and in order.
async fn send_each(
    outbox: Option<upstream::Outbox>,
    server: SocketAddr,
    config: &ClientConfig,
) -> Result<(), ClientError> {
    let Some(mut outbox) = outbox else {
        return Ok(());
    };
    while let Some(wire) = outbox.next().await {
        let message = up_message(&wire)?;
        let mut client = client(server, config).await?;
        tokio::time::timeout(config.request_timeout, client.send(message))
            .await
            .map_err(|_| {
                ClientError::Protocol(format!(
                    "gRPC Send: no answer within {:?}",
                    config.request_timeout
                ))
            })?
            .map_err(failed)?;
    }
    Ok(())
}

/// The outbox's message (its canonical JSON) as protobuf.
pub(super) fn up_message(wire: &[u8]) -> Result<UpMessage, ClientError> {
    crate::upstream::Message::decode(wire)
        .map(|message| to_proto(&message))
        .ok_or_else(|| ClientError::Protocol("the outbox made a message it cannot read".into()))
}

/// Hands one delivery to the sink: an event, a gap, or a copy of a message up.
pub(super) fn hand_over(sink: &mut dyn Sink, delivery: Delivery, received_ns: u64) -> Flow {
    match delivery.item {
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
        Some(Item::Copy(copy)) => sink.copy(&from_proto(copy), received_ns),
        None => sink.malformed(&DecodeError::new(
            "a Delivery with neither event, gap nor copy",
        )),
    }
}

/// A shared HTTP/2 connection as the service tonic's client calls through.
#[derive(Clone)]
pub(super) struct OnConnection(SendRequest<tonic::body::Body>);

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
