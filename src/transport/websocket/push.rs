//! What every WebSocket server here does once a subscriber is upgraded, whichever library
//! frames the messages: the subscription asked for in the query, then the stream pushed in
//! batches, a ping after each heartbeat without writes, messages up taken in order, and the
//! close handshake.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use crate::hub::{Batch, Hub, Reader};
use crate::transport::cursor::{first_seq_from_query, interest_from_query, BadRequest};
use crate::transport::{serve_http, ServerConfig, TrackedListener};

use super::{CLOSE_GRACE, OWN_PATH};

/// How long the server waits for the subscriber's close once it has sent its own at the end:
/// as long as a slow consumer may take to read what its kernel buffered (the subscriber reads
/// the server's close only after every event before it).
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What both servers' handlers share: the hub and the server's settings.
#[derive(Clone)]
pub(super) struct AppState {
    pub hub: Arc<Hub>,
    pub config: Arc<ServerConfig>,
}

/// Serves `handler` on `/ws` until `shutdown` fires: the route every WebSocket server here
/// upgrades subscribers on.
pub(super) async fn serve_route<H, T>(
    listener: tokio::net::TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: tokio_util::sync::CancellationToken,
    handler: H,
) -> std::io::Result<()>
where
    H: axum::handler::Handler<T, AppState>,
    T: 'static,
{
    let listener = TrackedListener::for_subscribers(listener, Arc::clone(&hub), &config)?;
    let http = config.http;
    let state = AppState {
        hub,
        config: Arc::new(config),
    };
    let router = axum::Router::new()
        .route(OWN_PATH, axum::routing::get(handler))
        .with_state(state);
    serve_http(listener, router, http, shutdown).await
}

/// The subscription `GET /ws?after=SEQ&topics=...` asks for, or the 400 that says what is wrong
/// with the query (boxed: the rare path).
pub(super) fn subscription(state: &AppState, query: Option<&str>) -> Result<Reader, Box<Response>> {
    let refused = |rejection: BadRequest| Box::new(rejection.into_response());
    let first_seq = first_seq_from_query(query).map_err(refused)?;
    let interest = interest_from_query(query, &state.hub).map_err(refused)?;
    Ok(state.hub.reader_of(first_seq, interest))
}

/// A WebSocket library's message, as the push loop makes and reads it.
pub(super) trait Message: Sized {
    /// What the library's stream of incoming messages yields.
    type Incoming;
    /// A text message carrying `bytes` (an event's JSON, a gap, a copy).
    fn text(bytes: Bytes) -> Self;
    /// A ping with no payload.
    fn ping() -> Self;
    /// A close frame with `code` and a reason of at most 123 bytes.
    fn close(code: u16, reason: String) -> Self;
    /// What the subscriber sent.
    fn read(incoming: Self::Incoming) -> Incoming;
}

/// What a subscriber sent, as the push loop tells it apart.
pub(super) enum Incoming {
    /// A message up (two-way traffic).
    Text(Bytes),
    /// Its close frame: the library answers it.
    Close,
    /// The connection broke or the subscriber broke the protocol, and why.
    Broken(String),
    /// A pong, or anything else that needs no answer.
    Other,
}

/// The close codes the server sends (RFC 6455 §7.4.1).
const NORMAL: u16 = 1000;
const GOING_AWAY: u16 = 1001;
const PROTOCOL_ERROR: u16 = 1002;
const INVALID_DATA: u16 = 1007;

/// Pushes the stream to one subscriber until it is complete, the subscriber leaves, or the
/// server shuts down.
pub(super) async fn stream_events<S, M>(socket: S, mut reader: Reader, config: Arc<ServerConfig>)
where
    S: Stream<Item = M::Incoming> + Sink<M> + Unpin,
    M: Message,
{
    let hub = Arc::clone(reader.hub());
    let (mut tx, mut rx) = socket.split();
    let mut last_write = tokio::time::Instant::now();
    let mut heartbeat = tokio::time::interval_at(last_write + config.heartbeat, config.heartbeat);
    let close: (u16, String) = loop {
        tokio::select! {
            batch = reader.next_batch(config.batch) => match batch {
                Some(batch) => {
                    if write_batch(&mut tx, &batch).await.is_err() {
                        return;
                    }
                    last_write = tokio::time::Instant::now();
                }
                None if reader.at_end() => break (NORMAL, "stream complete".into()),
                None => break (GOING_AWAY, "server shutting down".into()),
            },
            incoming = rx.next() => match incoming.map(M::read) {
                // The subscriber left, or broke the protocol in a way the library answers
                // itself (yawc queues the close frame that says how, 1009 for a message too
                // big, and sends what it owes on the read path): reading once more sends it.
                None => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, rx.next()).await;
                    return;
                }
                Some(Incoming::Broken(why)) => break (PROTOCOL_ERROR, truncated_reason(why)),
                // The subscriber closed first (the library answers its close frame): after
                // the last event, that is its confirmation that it holds the whole stream.
                Some(Incoming::Close) => {
                    reader.confirm_end();
                    // The library owes the answer and sends it on the read path: reading once
                    // more sends it (the subscriber waits for it to know the server heard).
                    let _ = tokio::time::timeout(CLOSE_GRACE, rx.next()).await;
                    return;
                }
                // A message the subscriber sends up, handled before the next read so that
                // one subscriber's messages are taken in the order sent.
                Some(Incoming::Text(payload)) => {
                    if let Err(why) = hub.receive_upstream(payload).await {
                        break (INVALID_DATA, truncated_reason(why));
                    }
                }
                Some(Incoming::Other) => {}
            },
            _ = heartbeat.tick() => {
                // A ping keeps a quiet connection open (as SSE's comment does): one that carried
                // events within the heartbeat is pinged only a heartbeat after the last of them.
                // Pinging busy connections too cost 100,000 subscribers at 0.5 ev/s a ping and a
                // pong per delivery in seven.
                let quiet_from = last_write + config.heartbeat;
                if quiet_from > tokio::time::Instant::now() {
                    heartbeat.reset_at(quiet_from);
                    continue;
                }
                if tx.send(M::ping()).await.is_err() {
                    return;
                }
                last_write = tokio::time::Instant::now();
            }
        }
    };
    if tx.send(M::close(close.0, close.1)).await.is_err() {
        return;
    }
    // Wait for the subscriber's close frame so the handshake completes cleanly on both sides:
    // after the last event it confirms the subscriber holds the whole stream (a proxy that
    // cut the connection sends none). A slow consumer may still be reading its backlog, so the
    // wait is long; the connection ending ends it at once.
    let _ = tokio::time::timeout(CONFIRM_WAIT, async {
        while let Some(incoming) = rx.next().await {
            match M::read(incoming) {
                Incoming::Close => return reader.confirm_end(),
                Incoming::Broken(_) => return,
                _ => {}
            }
        }
    })
    .await;
}

/// Queues every event of the batch (after the gap message, when the subscriber asked for
/// events the replay window no longer holds), then flushes once: one write for many frames.
/// Each frame shares the hub's encoding of its event (compressed per connection when
/// permessage-deflate is on).
async fn write_batch<S, M>(tx: &mut S, batch: &Batch) -> Result<(), S::Error>
where
    S: Sink<M> + Unpin,
    M: Message,
{
    if let Some(gap) = batch.gap {
        tx.feed(M::text(gap.encode().into())).await?;
    }
    for (_, event) in batch.iter() {
        tx.feed(M::text(event.clone())).await?;
    }
    for copy in &batch.copies {
        tx.feed(M::text(copy.clone())).await?;
    }
    tx.flush().await
}

/// A close frame's reason holds at most 123 bytes: the start of `why`, cut at a character.
fn truncated_reason(mut why: String) -> String {
    let mut end = why.len().min(123);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    why.truncate(end);
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::task::{Context, Poll};
    use std::time::Duration;

    /// What the push loop sent, as a library's message.
    #[derive(Debug, PartialEq)]
    enum Sent {
        Text,
        Ping,
        Close(u16),
    }

    impl Message for Sent {
        type Incoming = ();
        fn text(_: Bytes) -> Self {
            Sent::Text
        }
        fn ping() -> Self {
            Sent::Ping
        }
        fn close(code: u16, _: String) -> Self {
            Sent::Close(code)
        }
        fn read((): ()) -> Incoming {
            Incoming::Close
        }
    }

    /// A subscriber's socket that records what is sent and never says anything.
    struct Recorder(Arc<Mutex<Vec<Sent>>>);

    impl Stream for Recorder {
        type Item = ();
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<()>> {
            Poll::Pending
        }
    }

    impl Sink<Sent> for Recorder {
        type Error = std::convert::Infallible;
        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn start_send(self: Pin<&mut Self>, item: Sent) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push(item);
            Ok(())
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A connection that carries events more often than the heartbeat is never pinged; one
    /// that falls quiet is, a heartbeat after its last write.
    #[tokio::test]
    async fn only_quiet_connections_are_pinged() {
        const EVENTS: u64 = 40;
        let hub = Hub::new(EVENTS);
        let config = Arc::new(ServerConfig {
            heartbeat: Duration::from_millis(1500),
            ..ServerConfig::default()
        });
        let sent = Arc::new(Mutex::new(Vec::new()));
        let pushing = tokio::spawn(stream_events::<_, Sent>(
            Recorder(Arc::clone(&sent)),
            hub.reader(0),
            config,
        ));
        let sent_now = |what: &Sent| sent.lock().unwrap().iter().filter(|s| *s == what).count();
        // 3 s of events 100 ms apart: two heartbeats, each with writes.
        for _ in 0..30 {
            hub.publish(Bytes::from_static(b"{}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(sent_now(&Sent::Text), 30);
        assert_eq!(sent_now(&Sent::Ping), 0, "a busy connection was pinged");
        // Quiet: pinged within a heartbeat or two.
        let mut waited = Duration::ZERO;
        while sent_now(&Sent::Ping) == 0 && waited < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
        }
        assert!(
            sent_now(&Sent::Ping) > 0,
            "a quiet connection was not pinged"
        );
        pushing.abort();
    }
}
