//! pushbench's WebSocket client: yawc, resuming with `?after=SEQ` after a dropped connection,
//! and sending its messages up (two-way traffic) as text frames on the same connection.

use futures_util::SinkExt;
use yawc::close::CloseCode;
use yawc::{Frame, OpCode};

use crate::clock::now_ns;
use crate::event::{DecodeError, MAX_EVENT_BYTES};
use crate::transport::resume::Resuming;
use crate::transport::tls::ALPN_HTTP1;
use crate::transport::upstream::{Duplex, Schedule};
use crate::transport::{deliver, ArrivalClock, ClientConfig, ClientError, Flow, Sink, Target};

use super::OWN_PATH;
use super::{options, CLOSE_GRACE, READ_BUFFER};

/// Subscribes to `ws://server/ws` (`wss://` over TLS) and feeds every text frame to the sink.
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let mut sink = Resuming::new(sink, config);
    let mut schedule = Schedule::of(config);
    loop {
        let after = sink.last_seq();
        let ended = connect_once(target, config, &mut sink, &mut schedule, after).await;
        if !sink.again(ended).await? {
            return Ok(());
        }
    }
}

/// One connection: from the start, or after event `after` (`?after=SEQ`, which the server
/// honours), sending the schedule's messages as they fall due; `Ok` once the sink has enough
/// and every message is sent, or the server closed normally (1000, the stream complete), an
/// error when the connection ended otherwise.
async fn connect_once(
    target: &Target,
    config: &ClientConfig,
    sink: &mut Resuming<'_>,
    schedule: &mut Option<Schedule>,
    after: Option<u64>,
) -> Result<(), ClientError> {
    let buffer = READ_BUFFER.read(&config.settings) as usize;
    let options =
        options(&config.settings, buffer, MAX_EVENT_BYTES).map_err(ClientError::Config)?;
    let dialer = config.dialer();
    let stream = dialer.connect(target.addr, ALPN_HTTP1).await?;
    let scheme = if dialer.secure() { "wss" } else { "ws" };
    // The streams followed ride in the URL beside the cursor, as combined-stream WebSocket
    // APIs name theirs (`/stream?streams=a/b`).
    let after = after.map(|seq| format!("after={seq}"));
    let query = crate::transport::join_query([after, config.topics_query()]);
    let path = target.request_path(OWN_PATH, query.as_deref());
    let url = format!("{scheme}://{}{path}", target.authority());
    let url = url
        .parse()
        .map_err(|e| ClientError::Config(format!("WebSocket URL {url}: {e}")))?;
    // Boxed, so the handshake takes room only while it lasts, not for the stream's life.
    let handshake = Box::pin(yawc::WebSocket::handshake(url, stream, options));
    let mut ws = tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| ClientError::Protocol("WebSocket handshake timed out".into()))?
        .map_err(|e| ClientError::Protocol(format!("WebSocket handshake failed: {e}")))?;
    sink.connected(now_ns());

    let mut clock = ArrivalClock::new();
    let mut close_code = None;
    let mut duplex = Duplex::new(schedule);
    let stopped = loop {
        if duplex.done() {
            break true;
        }
        // Frames with their errors, so a broken connection says why; made anew each turn so
        // the connection is free to send between reads (reading by polling is cancel-safe).
        let mut frames = futures_util::stream::poll_fn(|cx| ws.poll_next_frame(cx).map(Some));
        let next = tokio::select! {
            next = clock.next(&mut frames) => next,
            message = duplex.due() => {
                drop(frames);
                ws.send(Frame::text(message))
                    .await
                    .map_err(|e| ClientError::Protocol(format!("WebSocket: sending up: {e}")))?;
                continue;
            }
        };
        let Some((frame, received_ns)) = next else {
            break false;
        };
        let frame = match frame {
            Ok(frame) => frame,
            // The close handshake done, the connection ends.
            Err(_) if close_code.is_some() => break false,
            Err(error) => return Err(ClientError::Protocol(format!("WebSocket: {error}"))),
        };
        let flow = match frame.opcode() {
            OpCode::Text => deliver(sink, frame.payload(), received_ns),
            OpCode::Binary => sink.malformed(&DecodeError::new(
                "binary frame where a text frame with a JSON event was expected",
            )),
            // yawc answers the server's close frame itself; reading on sends the answer and
            // then ends the connection.
            OpCode::Close => {
                close_code = Some(frame.close_code().unwrap_or(CloseCode::Status));
                Flow::Continue
            }
            // Pings are answered by yawc too.
            _ => Flow::Continue,
        };
        duplex.took(flow, sink);
    };
    if stopped {
        let _ = ws
            .send(Frame::close(CloseCode::Normal, "received the whole stream"))
            .await;
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while ws.next_frame().await.is_ok() {}
        })
        .await;
        return Ok(());
    }
    match close_code {
        Some(CloseCode::Normal) => Ok(()),
        Some(code) => Err(ClientError::Protocol(format!(
            "WebSocket closed with {} before the stream was complete",
            u16::from(code)
        ))),
        None => Err(ClientError::Protocol(
            "WebSocket connection ended without a close frame".into(),
        )),
    }
}
