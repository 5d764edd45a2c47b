//! pushbench's gRPC server: tonic's generated service on the HTTP/2 loop: `Subscribe`, and
//! for two-way traffic `Send` and the bidirectional `Converse`.

use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use futures_util::Stream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::{BatchLimit, Hub, Reader, SubscriberGuard};
use crate::transport::http::serve_http2;
use crate::transport::tls::ALPN_H2;
use crate::transport::{ServerConfig, TrackedListener};

use super::proto::events_server::{Events, EventsServer};
use super::proto::upstream::Item as UpItem;
use super::proto::{Delivery, SubscribeRequest, Taken, UpMessage, Upstream};
use super::{from_proto, messages};

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
    type ConverseStream = Deliveries;

    /// One subscriber: counted while its call lives, refused past the cap.
    async fn subscribe(
        &self,
        request: tonic::Request<SubscribeRequest>,
    ) -> Result<tonic::Response<Deliveries>, tonic::Status> {
        let (mut reader, guard) = self.open(request.into_inner())?;
        // A call from the end is the subscriber confirming it holds the whole stream: answered
        // at once, with no message.
        if reader.at_end() {
            reader.confirm_end();
            return Ok(tonic::Response::new(
                Box::pin(futures_util::stream::empty()),
            ));
        }
        let stream = deliveries(reader, self.batch, guard, None);
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    /// One message up, answered once the hub has taken it.
    async fn send(
        &self,
        request: tonic::Request<UpMessage>,
    ) -> Result<tonic::Response<Taken>, tonic::Status> {
        let wire = from_proto(request.into_inner()).encode();
        self.hub
            .receive_upstream(wire.into())
            .await
            .map_err(tonic::Status::invalid_argument)?;
        Ok(tonic::Response::new(Taken {}))
    }

    /// One subscriber both ways: its first message subscribes (as `Subscribe`'s request), and
    /// every later one is a message up, taken in the order sent while its deliveries flow.
    async fn converse(
        &self,
        request: tonic::Request<tonic::Streaming<Upstream>>,
    ) -> Result<tonic::Response<Deliveries>, tonic::Status> {
        let mut incoming = request.into_inner();
        let subscription = match incoming.message().await? {
            Some(Upstream {
                item: Some(UpItem::Subscribe(subscription)),
            }) => subscription,
            _ => {
                return Err(tonic::Status::invalid_argument(
                    "a Converse call's first message must subscribe",
                ))
            }
        };
        let (reader, guard) = self.open(subscription)?;
        let stream = deliveries(reader, self.batch, guard, Some(incoming));
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

impl Service {
    /// A subscription's reader and its place among the subscribers (counted while its call
    /// lives), refused past the cap or for streams the server does not publish.
    fn open(&self, request: SubscribeRequest) -> Result<(Reader, SubscriberGuard), tonic::Status> {
        if self.hub.subscribers() >= self.cap {
            return Err(tonic::Status::resource_exhausted(
                "server full: it holds as many subscribers as it allows (--max-subscribers)",
            ));
        }
        let interest = self
            .hub
            .interest(request.topics)
            .map_err(tonic::Status::invalid_argument)?;
        let guard = self.hub.join();
        Ok((self.hub.reader_of(request.first, interest), guard))
    }
}

/// A call's state as its deliveries are made: the reader, what is ready to go, the
/// subscriber's place (it counts until the call ends), and on a `Converse` call the messages
/// coming up (until the client has sent its last).
struct Call {
    reader: Reader,
    ready: std::collections::VecDeque<Result<Delivery, tonic::Status>>,
    _guard: SubscriberGuard,
    incoming: Option<tonic::Streaming<Upstream>>,
}

/// The subscriber's messages: every ready batch's gap, events and copies, one message each,
/// until it has the whole stream (or the server closes); on a `Converse` call, messages up are
/// taken as they come in between, so a subscriber's are handled in the order sent.
fn deliveries(
    reader: Reader,
    limit: BatchLimit,
    guard: SubscriberGuard,
    incoming: Option<tonic::Streaming<Upstream>>,
) -> impl Stream<Item = Result<Delivery, tonic::Status>> + Send {
    let call = Call {
        reader,
        ready: std::collections::VecDeque::new(),
        _guard: guard,
        incoming,
    };
    futures_util::stream::unfold(call, move |mut call| async move {
        while call.ready.is_empty() {
            let Call {
                reader,
                ready,
                incoming,
                ..
            } = &mut call;
            let up = async {
                match incoming {
                    Some(incoming) => incoming.message().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                batch = reader.next_batch(limit) => messages(&batch?, ready),
                up = up => match take_up(reader.hub(), up).await {
                    Ok(true) => {}
                    // The client has sent its last message: deliveries go on alone. Past the
                    // last event, that half-close is its confirmation.
                    Ok(false) => {
                        reader.confirm_end();
                        call.incoming = None;
                    }
                    Err(status) => ready.push_back(Err(status)),
                },
            }
        }
        let next = call.ready.pop_front()?;
        Some((next, call))
    })
}

/// Hands one message that came up a `Converse` call to the hub: `Ok(false)` once the client
/// has sent its last, an error status (which ends the call) for one that is not a message up.
async fn take_up(
    hub: &Arc<Hub>,
    up: Result<Option<Upstream>, tonic::Status>,
) -> Result<bool, tonic::Status> {
    match up? {
        None => Ok(false),
        Some(Upstream {
            item: Some(UpItem::Message(message)),
        }) => {
            let wire = from_proto(message).encode();
            hub.receive_upstream(wire.into())
                .await
                .map_err(tonic::Status::invalid_argument)?;
            Ok(true)
        }
        Some(_) => Err(tonic::Status::invalid_argument(
            "after its first message, a Converse call carries only messages up",
        )),
    }
}
