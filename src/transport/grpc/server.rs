//! pushbench's gRPC server: tonic's generated service on the HTTP/2 loop.

use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use futures_util::Stream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::transport::http::serve_http2;
use crate::transport::tls::ALPN_H2;
use crate::transport::{
    ServerConfig,
    TrackedListener,
};
use crate::hub::{BatchLimit, Hub, Reader, SubscriberGuard};

use super::proto::events_server::{Events, EventsServer};
use super::proto::{Delivery, SubscribeRequest};
use super::messages;

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
        let request = request.into_inner();
        let interest = self
            .hub
            .interest(request.topics)
            .map_err(tonic::Status::invalid_argument)?;
        let guard = self.hub.join();
        let reader = self.hub.reader_of(request.first, interest);
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

