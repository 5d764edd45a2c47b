//! The bidirectional gRPC client: one `Converse` call per subscriber that subscribes with its
//! first message and carries the subscriber's messages up after it, as a chat client on one
//! gRPC stream does; resumed, like `Subscribe`, by calling again from the event after the last.

use std::net::SocketAddr;

use tokio::sync::mpsc;

use super::client::{client, confirm_from, failed, hand_over, up_message};
use super::proto::upstream::Item as UpItem;
use super::proto::{SubscribeRequest, Upstream};
use crate::clock::now_ns;
use crate::transport::resume::{confirm_end, Resuming};
use crate::transport::upstream::{Duplex, Schedule};
use crate::transport::{ArrivalClock, ClientConfig, ClientError, Sink, Target};

/// Messages up queued for the call before the client waits for the connection to take them.
const QUEUED: usize = 16;

/// Calls `Converse` on `server` and feeds each delivery to the sink, sending the schedule's
/// messages up on the same call; a call that ends early is made again from the event after the
/// last received, with backoff, unless resuming is off.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let mut sink = Resuming::new(sink, config);
    let mut schedule = Schedule::of(config);
    loop {
        let first = sink.last_seq().map_or(0, |seq| seq + 1);
        let ended = call_once(target.addr, config, &mut sink, &mut schedule, first).await;
        if !sink.again(ended).await? {
            break;
        }
    }
    if let Some(last) = sink.last_seq().filter(|_| sink.confirms_end()) {
        // The whole stream is here: a call from after the last event confirms it.
        confirm_end(config, || confirm_from(target.addr, config, last + 1)).await;
    }
    Ok(())
}

/// One call from event `first`, sending messages up as they fall due: `Ok` once the sink has
/// enough and every message is sent, an error when the call failed or ended first.
async fn call_once(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut Resuming<'_>,
    schedule: &mut Option<Schedule>,
    first: u64,
) -> Result<(), ClientError> {
    let (up, queue) = mpsc::channel(QUEUED);
    let subscription = SubscribeRequest {
        first,
        topics: config.topics.clone().unwrap_or_default(),
    };
    let opening = Upstream {
        item: Some(UpItem::Subscribe(subscription)),
    };
    // The queue cannot be full yet: it takes the subscription before the call starts.
    let _ = up.try_send(opening);
    // The request stream: the subscription, then each message up, until `up` is dropped.
    let requests = futures_util::stream::unfold(queue, |mut queue| async move {
        queue.recv().await.map(|item| (item, queue))
    });
    let mut deliveries = client(server, config)
        .await?
        .converse(requests)
        .await
        .map_err(failed)?
        .into_inner();
    sink.connected(now_ns());
    let mut clock = ArrivalClock::new();
    let mut duplex = Duplex::new(schedule);
    loop {
        if duplex.done() {
            // Open until every subscriber has the stream, where the load asks.
            sink.linger().await;
            return Ok(());
        }
        // Reading the response stream is cancel-safe, so a message falling due can go out
        // between two deliveries.
        let next = tokio::select! {
            next = clock.next(&mut deliveries) => next,
            wire = duplex.due() => {
                let message = Upstream {
                    item: Some(UpItem::Message(up_message(&wire)?)),
                };
                up.send(message).await.map_err(|_| {
                    ClientError::Protocol("gRPC Converse: the call ended while sending up".into())
                })?;
                continue;
            }
        };
        let Some((delivery, received_ns)) = next else {
            return Err(ClientError::Protocol(
                "the gRPC call ended before the stream was complete".into(),
            ));
        };
        let flow = hand_over(sink, delivery.map_err(failed)?, received_ns);
        duplex.took(flow, sink);
    }
}
