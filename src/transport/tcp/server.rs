//! pushbench's raw TCP server: length-prefixed frames from the requested sequence number, and
//! in two-way traffic the subscriber's messages up, framed alike.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::codec::LengthDelimitedCodec;
use tokio_util::sync::CancellationToken;

use crate::hub::{BatchLimit, Hub};
use crate::transport::listener::Established;
use crate::transport::{ServerConfig, TrackedListener};

use super::{frame, FIRST_CHUNK, MAX_STREAMS_NAMED, PREFIX_BYTES, STREAMS_FOLLOW};

/// How long a new connection may take to say where to start.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message a subscriber may send up.
const MAX_UPSTREAM_FRAME: usize = 64 * 1024;

/// Accepts subscribers on `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut listener = TrackedListener::for_subscribers(listener, Arc::clone(&hub), &config)?;
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let establishing = listener.establish(stream);
        let hub = Arc::clone(&hub);
        let limit = config.batch;
        tokio::spawn(async move {
            let stream = match establishing.await {
                Ok(stream) => stream,
                Err(error) => return tracing::debug!(%error, "tcp connection not established"),
            };
            if let Err(error) = stream_events(stream, hub, limit).await {
                tracing::debug!(%error, "tcp subscriber ended");
            }
        });
    }
}

/// The first frame: the start and, when its top bit says so, the streams named.
async fn read_hello(stream: &mut Established) -> std::io::Result<(u64, Vec<u32>)> {
    let start = stream.read_u64().await?;
    if start & STREAMS_FOLLOW == 0 {
        return Ok((start, Vec::new()));
    }
    let count = stream.read_u16().await? as usize;
    if count == 0 || count > MAX_STREAMS_NAMED {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a subscriber named {count} streams (from 1 to {MAX_STREAMS_NAMED} allowed)"),
        ));
    }
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        topics.push(stream.read_u32().await?);
    }
    Ok((start & !STREAMS_FOLLOW, topics))
}

/// Writes the stream to one subscriber: every ready event goes into one buffered write.
async fn stream_events(
    mut stream: Established,
    hub: Arc<Hub>,
    limit: BatchLimit,
) -> std::io::Result<()> {
    let (first_seq, topics) = tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no start sequence"))??;
    let interest = hub
        .interest(topics)
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidData, why))?;
    // The start sequence establishes the subscription; past the cap, the connection is closed
    // unanswered (raw TCP has no refusal of its own).
    let enrolled = stream.get_ref().enrolment().is_none_or(|e| e.establish());
    if !enrolled {
        return Err(std::io::Error::other("server full: subscriber refused"));
    }
    let mut reader = hub.reader_of(first_seq, interest);
    let two_way = hub.two_way();
    let (incoming, mut outgoing) = tokio::io::split(stream);
    // The subscriber's frames after its first: its messages up (two-way traffic), read in the
    // same task as the writes, so a cut wakes the one task that holds both halves, and a frame
    // is never cut off halfway (a codec's read keeps what it has across polls).
    let mut messages = LengthDelimitedCodec::builder()
        .length_field_length(PREFIX_BYTES)
        .max_frame_length(MAX_UPSTREAM_FRAME)
        .new_read(incoming);
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    // One buffer for the connection's life: each batch is framed into it and written at once.
    let mut frames = BytesMut::with_capacity(FIRST_CHUNK);
    let mut confirmed = false;
    loop {
        let batch = tokio::select! {
            batch = reader.next_batch(limit) => batch,
            message = messages.next() => match message {
                // The subscriber closed: nothing more to write to it.
                None => return Ok(()),
                Some(Err(error)) => return Err(error),
                // An empty frame: the subscriber confirms it holds the whole stream.
                Some(Ok(frame)) if frame.is_empty() => {
                    confirmed = true;
                    break;
                }
                Some(Ok(_)) if !two_way => {
                    return Err(invalid("a one-way subscriber sent a frame after its first".into()))
                }
                // Handled before the next read, so one subscriber's messages are taken in the
                // order sent.
                Some(Ok(message)) => {
                    hub.receive_upstream(message.freeze()).await.map_err(invalid)?;
                    continue;
                }
            },
        };
        let Some(batch) = batch else { break };
        frames.clear();
        frame(&batch, &mut frames);
        outgoing.write_all(&frames).await?;
    }
    // Complete: wait, bounded, for the subscriber's confirmation (an empty frame) and answer it
    // with one, so the subscriber knows it was heard. A connection that ends without one (a
    // middlebox took the bytes and cut it) leaves the stream unconfirmed, and the server keeps
    // it for the subscriber to resume.
    if !confirmed && reader.at_end() {
        let confirmation = async {
            while let Some(Ok(frame)) = messages.next().await {
                if frame.is_empty() {
                    return true;
                }
            }
            false
        };
        confirmed = tokio::time::timeout(HELLO_TIMEOUT, confirmation)
            .await
            .unwrap_or(false);
    }
    if confirmed {
        reader.confirm_end();
        outgoing.write_all(&[0; PREFIX_BYTES]).await?;
    }
    // Then close our side so the subscriber reads end-of-stream.
    outgoing.shutdown().await
}
