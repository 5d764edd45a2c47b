//! pushbench's raw TCP server: length-prefixed frames from the requested sequence number.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::transport::{
    ServerConfig, TrackedListener,
};
use crate::transport::listener::Established;
use crate::hub::{BatchLimit, Hub};

use super::{frame, FIRST_CHUNK, MAX_STREAMS_NAMED, STREAMS_FOLLOW};

/// How long a new connection may take to say where to start.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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
    // One buffer for the connection's life: each batch is framed into it and written at once.
    let mut frames = BytesMut::with_capacity(FIRST_CHUNK);
    while let Some(batch) = reader.next_batch(limit).await {
        frames.clear();
        frame(&batch, &mut frames);
        stream.write_all(&frames).await?;
    }
    // Complete (or shutting down): close our side so the subscriber reads end-of-stream.
    stream.shutdown().await
}
