//! pushbench's raw TCP client: reads length-prefixed frames, reconnecting from the next sequence
//! number, and sends its messages up (two-way traffic) as frames of the same form.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clock::now_ns;
use crate::event::MAX_EVENT_BYTES;
use crate::transport::resume::{confirm_end, Resuming};
use crate::transport::upstream::{Duplex, Schedule};
use crate::transport::{
    connect_tcp, deliver, ClientConfig, ClientError, ClientStream, Sink, Target,
};

use super::{PREFIX_BYTES, STREAMS_FOLLOW};
use crate::transport::length_prefixed::FrameBuffer;

/// Connects, asks for the stream from the start, and feeds every frame to the sink.
///
/// The receive path allocates nothing per event: frames are decoded where they lie in one
/// reusable buffer, and every frame of one read gets that read's receive time (they arrived
/// together).
pub(crate) async fn subscribe(
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let server = target.addr;
    let mut sink = Resuming::new(sink, config);
    let mut schedule = Schedule::of(config);
    loop {
        let start = sink.last_seq().map_or(0, |seq| seq + 1);
        let ended = connect_once(server, config, &mut sink, &mut schedule, start).await;
        if !sink.again(ended).await? {
            return Ok(());
        }
    }
}

/// The first frame: the start, and the streams followed where there are several.
fn hello(start: u64, topics: Option<&[u32]>) -> Vec<u8> {
    let mut frame = Vec::with_capacity(10);
    match topics {
        None => frame.extend_from_slice(&start.to_be_bytes()),
        Some(topics) => {
            frame.extend_from_slice(&(start | STREAMS_FOLLOW).to_be_bytes());
            frame.extend_from_slice(&(topics.len() as u16).to_be_bytes());
            for topic in topics {
                frame.extend_from_slice(&topic.to_be_bytes());
            }
        }
    }
    frame
}

/// One connection, asking for the stream from event `start` and sending the schedule's messages
/// as they fall due: `Ok` once the sink has enough and every message is sent, an error when
/// the connection ended first (the server closes only after the whole stream, which the sink
/// has by then; in two-way traffic it waits for the subscriber to close).
async fn connect_once(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut Resuming<'_>,
    schedule: &mut Option<Schedule>,
    start: u64,
) -> Result<(), ClientError> {
    let mut stream = open(server, config, start).await?;
    sink.connected(now_ns());
    let mut buffer = FrameBuffer::default();
    let mut duplex = Duplex::new(schedule);
    loop {
        if duplex.done() {
            // Open until every subscriber has the stream, where the load asks.
            sink.linger().await;
            if let Some(last) = sink.last_seq().filter(|_| sink.confirms_end()) {
                // The whole stream is here: confirm it on this connection, or where the server's
                // answer does not come (a middlebox cut it), on one from the end.
                let heard = tokio::time::timeout(config.request_timeout, confirm(&mut stream));
                if !matches!(heard.await, Ok(Ok(()))) {
                    confirm_end(config, || confirm_from(server, config, last + 1)).await;
                }
            }
            return Ok(());
        }
        // Reading is cancel-safe (bytes land in the buffer only once a read returns), so a
        // message falling due can go out between reads.
        let read = tokio::select! {
            read = buffer.read_from(&mut stream) => read,
            message = duplex.due() => {
                let mut framed = Vec::with_capacity(PREFIX_BYTES + message.len());
                framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
                framed.extend_from_slice(&message);
                stream
                    .write_all(&framed)
                    .await
                    .map_err(|e| ClientError::Protocol(format!("TCP: sending up: {e}")))?;
                continue;
            }
        };
        let received_ns = now_ns();
        match read {
            Ok(0) if buffer.is_empty() && sink.stopped() => return Ok(()),
            Ok(0) if buffer.is_empty() => {
                return Err(ClientError::Protocol(
                    "TCP: the connection ended before the stream was complete".into(),
                ))
            }
            Ok(0) => {
                return Err(ClientError::Protocol(
                    "TCP: the stream ended inside a frame".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(ClientError::Protocol(format!("TCP: {e}"))),
        }
        loop {
            if duplex.received_all() {
                break;
            }
            match buffer.next_frame() {
                // A frame longer than any event means the byte stream is corrupt: nothing
                // after it can be trusted, so the subscription ends with an error.
                Err(len) => {
                    return Err(ClientError::Protocol(format!(
                        "TCP: frame of {len} bytes exceeds the largest event ({MAX_EVENT_BYTES} B)"
                    )))
                }
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let flow = deliver(sink, frame, received_ns);
                    duplex.took(flow, sink);
                }
            }
        }
    }
}

/// Confirms the end on `stream`: an empty frame, and the server's empty frame in answer.
async fn confirm(stream: &mut ClientStream) -> Result<(), ClientError> {
    let broken = |e: std::io::Error| ClientError::Protocol(format!("TCP: confirming the end: {e}"));
    stream.write_all(&[0; PREFIX_BYTES]).await.map_err(broken)?;
    let mut answer = [0xff; PREFIX_BYTES];
    stream.read_exact(&mut answer).await.map_err(broken)?;
    match answer {
        [0, 0, 0, 0] => Ok(()),
        _ => Err(ClientError::Protocol(
            "TCP: the server answered the confirmation with a frame".into(),
        )),
    }
}

/// Confirms the end on a connection of its own, from event `first` (the end).
async fn confirm_from(
    server: SocketAddr,
    config: &ClientConfig,
    first: u64,
) -> Result<(), ClientError> {
    confirm(&mut open(server, config, first).await?).await
}

/// A connection asking for the stream from event `start`, its first frame sent.
async fn open(
    server: SocketAddr,
    config: &ClientConfig,
    start: u64,
) -> Result<ClientStream, ClientError> {
    let mut stream = connect_tcp(server, config).await?;
    stream
        .write_all(&hello(start, config.topics.as_deref()))
        .await
        .map_err(|e| ClientError::Protocol(format!("TCP: sending start: {e}")))?;
    Ok(stream)
}
