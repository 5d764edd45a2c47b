//! What every WebSocket client here does, whichever library frames the messages: connect
//! after the last event received (`?after=SEQ`), read text messages into the sink, send the
//! schedule's messages up between reads, close with 1000 once the sink has enough, and
//! reconnect by the resume rule when the connection ends otherwise.

use std::future::Future;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::event::DecodeError;
use crate::transport::resume::{confirm_end, Resuming};
use crate::transport::upstream::{Duplex, Schedule};
use crate::transport::{deliver, ArrivalClock, ClientConfig, ClientError, Flow, Sink, Target};

use super::OWN_PATH;

/// A WebSocket library's client connection, as the subscriber's loop reads and writes it.
pub(super) trait Connection: Send {
    /// The next message the server sent, `None` once the connection has ended.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Read, String>>>;
    /// Sends a message up as a text frame.
    fn send_text(&mut self, text: Vec<u8>) -> impl Future<Output = Result<(), String>> + Send;
    /// Closes with 1000 and waits, bounded, for the server's answer: whether it came (the
    /// server heard the close).
    fn close_normally(&mut self) -> impl Future<Output = bool> + Send;
}

/// A message the server sent, as the loop tells them apart.
pub(super) enum Read {
    /// An event (or a gap, or a copy of a message up) as JSON.
    Text(Bytes),
    /// Anything but text: malformed here.
    Binary,
    /// The server's close frame with its code (the library answers it as it reads on).
    Close(u16),
    /// Pings (the library answers them), pongs.
    Other,
}

/// Subscribes through `connect`, which opens one connection after event `after` (from the
/// start with `None`), one connection after another until the sink has enough or the resume
/// rule gives up.
pub(super) async fn subscribe<C, F, Fut>(
    config: &ClientConfig,
    sink: &mut dyn Sink,
    connect: F,
) -> Result<(), ClientError>
where
    C: Connection,
    F: Fn(Option<u64>) -> Fut,
    Fut: Future<Output = Result<C, ClientError>>,
{
    let mut sink = Resuming::new(sink, config);
    let mut schedule = Schedule::of(config);
    // Whether the server answered the close that ended the last connection: it heard that
    // the subscriber holds the whole stream.
    let mut heard = false;
    loop {
        let ended = match connect(sink.last_seq()).await {
            Ok(connection) => stream(connection, &mut sink, &mut schedule, &mut heard).await,
            Err(error) => Err(error),
        };
        if !sink.again(ended).await? {
            break;
        }
    }
    if let Some(last) = sink.last_seq().filter(|_| sink.confirms_end() && !heard) {
        // The close went unanswered (a middlebox cut the connection under it): a connection
        // from the end, which the server closes with 1000 at once, confirms it instead.
        confirm_end(config, || {
            let connecting = connect(Some(last));
            async move {
                match connecting.await?.close_normally().await {
                    true => Ok(()),
                    false => Err(ClientError::Protocol(
                        "WebSocket: the close from the end went unanswered".into(),
                    )),
                }
            }
        })
        .await;
    }
    Ok(())
}

/// One connection, sending the schedule's messages as they fall due: `Ok` once the sink has
/// enough and every message is sent, or the server closed with 1000 (the stream complete), an
/// error when the connection ended otherwise.
async fn stream<C: Connection>(
    mut ws: C,
    sink: &mut Resuming<'_>,
    schedule: &mut Option<Schedule>,
    heard: &mut bool,
) -> Result<(), ClientError> {
    sink.connected(crate::clock::now_ns());
    let mut clock = ArrivalClock::new();
    let mut close_code = None;
    let mut duplex = Duplex::new(schedule);
    let stopped = loop {
        if duplex.done() {
            break true;
        }
        // Reads made anew each turn, so the connection is free to send between them
        // (reading by polling is cancel-safe).
        let mut reads = futures_util::stream::poll_fn(|cx| ws.poll_read(cx));
        let next = tokio::select! {
            next = clock.next(&mut reads) => next,
            message = duplex.due() => {
                drop(reads);
                ws.send_text(message)
                    .await
                    .map_err(|e| ClientError::Protocol(format!("WebSocket: sending up: {e}")))?;
                continue;
            }
        };
        let Some((read, received_ns)) = next else {
            break false;
        };
        let read = match read {
            Ok(read) => read,
            // The close handshake done, the connection ends.
            Err(_) if close_code.is_some() => break false,
            Err(error) => return Err(ClientError::Protocol(format!("WebSocket: {error}"))),
        };
        let flow = match read {
            Read::Text(payload) => deliver(sink, &payload, received_ns),
            Read::Binary => sink.malformed(&DecodeError::new(
                "binary frame where a text frame with a JSON event was expected",
            )),
            Read::Close(code) => {
                close_code = Some(code);
                Flow::Continue
            }
            Read::Other => Flow::Continue,
        };
        duplex.took(flow, sink);
    };
    if stopped {
        // The connection stays open until every subscriber has the stream (where the load
        // asks), so this close is not among the last event's deliveries.
        sink.linger().await;
        *heard = ws.close_normally().await;
        return Ok(());
    }
    ended(close_code)
}

/// The subscription's URL: `ws://server/ws` (`wss://` over TLS), after event `after` where it
/// resumes. The streams followed ride in the URL beside the cursor, as combined-stream
/// WebSocket APIs name theirs (`/stream?streams=a/b`).
pub(super) fn url(
    target: &Target,
    config: &ClientConfig,
    after: Option<u64>,
    secure: bool,
) -> String {
    let scheme = if secure { "wss" } else { "ws" };
    let after = after.map(|seq| format!("after={seq}"));
    let query = crate::transport::join_query([after, config.topics_query()]);
    let path = target.request_path(OWN_PATH, query.as_deref());
    format!("{scheme}://{}{path}", target.authority())
}

/// How a connection that ended before the subscriber had enough went, by the server's close
/// code: 1000 (the stream complete) is done, anything else, or no close frame, a drop.
fn ended(close_code: Option<u16>) -> Result<(), ClientError> {
    match close_code {
        Some(1000) => Ok(()),
        Some(code) => Err(ClientError::Protocol(format!(
            "WebSocket closed with {code} before the stream was complete"
        ))),
        None => Err(ClientError::Protocol(
            "WebSocket connection ended without a close frame".into(),
        )),
    }
}
