//! gRPC server streaming (tonic, prost): `pushbench.Events/Subscribe` answers a subscriber
//! with a stream of `Delivery` messages, each event a real protobuf message (sequence number,
//! times and payload as fields; `proto/pushbench.proto`), so the wire-bytes column shows
//! protobuf. The server is tonic's generated service on pushbench's HTTP/2 loop (h2c, or h2 by
//! ALPN under TLS); the client is tonic's generated client over the load worker's shared
//! HTTP/2 connections ([`super::multiplex`]), one stream per subscriber, as a gRPC channel
//! multiplexes its calls.
//!
//! Resume: the request names the first sequence number wanted, and a client that lost its
//! stream asks again from the one after its last. Events past the replay window come as a
//! `Gap` message first. Past the subscriber cap the call fails with `RESOURCE_EXHAUSTED`. A
//! quiet call is kept alive by HTTP/2 PINGs every heartbeat.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use axum::http::Uri;
use axum::Router;
use futures_util::Stream;
use hyper::client::conn::http2::SendRequest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::http::serve_http2;
use super::multiplex::{Multiplexed, CONNECTIONS};
use super::resume::Resuming;
use super::tls::ALPN_H2;
use super::{
    ArrivalClock, ClientConfig, ClientError, Colour, KeepAlive, Flow, Redelivery, Requests, ServerConfig,
    Sink, Spec, TrackedListener, Traits,
};
use crate::clock::now_ns;
use crate::event::{DecodeError, Event, Gap};
use crate::hub::{Batch, BatchLimit, Hub, Reader, SubscriberGuard};

/// The messages and service of `proto/pushbench.proto`, as tonic-prost-build wrote them.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("pushbench");
}

use proto::delivery::Item;
use proto::events_client::EventsClient;
use proto::events_server::{Events, EventsServer};
use proto::{Delivery, SubscribeRequest};

/// One server-streaming call per subscriber, many on one HTTP/2 connection.
pub static SPEC: Spec = Spec {
    name: "grpc",
    summary: "gRPC server streaming (tonic): pushbench.Events/Subscribe, protobuf events, \
              calls multiplexed on shared HTTP/2 connections",
    colour: Colour(240, 228, 66),
    cursor_path: None,
    settings: resumable_settings![&CONNECTIONS],
    outside: super::spec::all_in_serve,
    traits: Traits {
        duplex: false,
        browser_api: None,
        needs_inbound_http: false,
        holds_connection: true,
        needs_upgrade: false,
        streams_response: true,
        http: true,
        multiplexed: true,
        keep_alive: KeepAlive::Heartbeat,
        requests: Requests::Stream,
        redelivery: Redelivery::Application(
            "the call has no cursor of its own; the request names the first sequence number \
             wanted, and the client must call again with it itself (pushbench's does, with \
             backoff, unless --resume off)",
        ),
        floor: false,
    },
};

/// Serves `pushbench.Events` over HTTP/2 on `listener` until `shutdown` fires.
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
    let service = Service {
        hub,
        batch: config.batch,
        cap,
    };
    let router = Router::new().fallback_service(EventsServer::new(service));
    serve_http2(listener, router, http, (cap, heartbeat), shutdown).await
}

/// The `Events` service: the hub's stream for each call.
struct Service {
    hub: Arc<Hub>,
    batch: BatchLimit,
    cap: usize,
}

/// A call's responses: gap and events, as they become ready.
type Deliveries = Pin<Box<dyn Stream<Item = Result<Delivery, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Events for Service {
    type SubscribeStream = Deliveries;

    /// One subscriber: counted while its call lives, refused past the cap.
    async fn subscribe(
        &self,
        request: tonic::Request<SubscribeRequest>,
    ) -> Result<tonic::Response<Deliveries>, tonic::Status> {
        if self.hub.subscribers() >= self.cap {
            return Err(tonic::Status::resource_exhausted(
                "server full: it holds as many subscribers as it allows (--max-subscribers)",
            ));
        }
        let guard = self.hub.join();
        let reader = self.hub.reader(request.into_inner().first);
        Ok(tonic::Response::new(Box::pin(deliveries(
            reader, self.batch, guard,
        ))))
    }
}

/// The subscriber's messages: every ready batch's gap and events, one message each, until it
/// has the whole stream (or the server closes). The guard goes with the stream: the subscriber
/// counts until its call ends.
fn deliveries(
    reader: Reader,
    limit: BatchLimit,
    guard: SubscriberGuard,
) -> impl Stream<Item = Result<Delivery, tonic::Status>> + Send {
    futures_util::stream::unfold(
        (reader, std::collections::VecDeque::new(), guard),
        move |(mut reader, mut ready, guard)| async move {
            if ready.is_empty() {
                let batch = reader.next_batch(limit).await?;
                messages(&batch, &mut ready);
            }
            let next = ready.pop_front()?;
            Some((next, (reader, ready, guard)))
        },
    )
}

/// A batch as messages: its gap first, then each event as protobuf, from the hub's canonical
/// encoding (a server built on gRPC would hold the fields; decoding them here costs ~75 ns).
fn messages(batch: &Batch, out: &mut std::collections::VecDeque<Result<Delivery, tonic::Status>>) {
    if let Some(gap) = batch.gap {
        out.push_back(Ok(Delivery {
            item: Some(Item::Gap(proto::Gap {
                first: gap.from,
                count: gap.count,
            })),
        }));
    }
    for (_, bytes) in batch.iter() {
        out.push_back(match Event::decode(bytes) {
            Ok(event) => Ok(Delivery {
                item: Some(Item::Event(proto::Event {
                    seq: event.seq,
                    scheduled_ns: event.scheduled_ns,
                    sent_ns: event.sent_ns,
                    payload: event.payload.into_owned(),
                })),
            }),
            // The hub holds only events it encoded itself.
            Err(error) => Err(tonic::Status::internal(error.to_string())),
        });
    }
}

/// The events of a batch as the server sends them: each `Delivery` in protobuf's encoding with
/// gRPC's 5-byte message prefix (before HTTP/2 framing), for the framing bench.
pub(crate) fn frame(batch: &Batch, out: &mut bytes::BytesMut) {
    use prost::Message as _;
    let mut ready = std::collections::VecDeque::new();
    messages(batch, &mut ready);
    for message in ready.into_iter().flatten() {
        let len = message.encoded_len();
        out.reserve(5 + len);
        out.extend_from_slice(&[0]);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        // A BytesMut grows as needed, so encoding into it cannot fail.
        let _ = message.encode(out);
    }
}

/// Calls `Subscribe` on `server` and feeds each event to the sink; a call that ends early is
/// made again from the event after the last received, with backoff, unless resuming is off.
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
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
        .subscribe(SubscribeRequest { first })
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
