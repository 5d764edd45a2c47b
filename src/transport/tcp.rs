//! Raw TCP, the floor every other transport is measured against: the subscriber sends the
//! sequence number to start from (8 bytes, big-endian), and the server answers with the stream
//! as length-prefixed frames (4-byte big-endian length, then the JSON event) and closes its side
//! when the stream is complete. No protocol beyond that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::{
    connect_tcp, deliver, ClientConfig, ClientError, Flow, Redelivery, Requests, ServerConfig,
    Sink, TrackedListener, TrackedStream, Traits,
};
use crate::clock::now_ns;
use crate::event::MAX_EVENT_BYTES;
use crate::hub::{BatchLimit, Hub};

/// Bare frames: duplex, no browser API, no HTTP; resuming is the application's (a start seq).
pub const TRAITS: Traits = Traits {
    duplex: true,
    browser_api: None,
    needs_inbound_http: false,
    holds_connection: true,
    needs_upgrade: false,
    streams_response: false,
    http: false,
    requests: Requests::Stream,
    redelivery: Redelivery::Application(
        "no protocol at all; pushbench's client sends the sequence to start from, which you would build",
    ),
    floor: true,
};

/// Bytes of the length prefix before each frame.
pub const PREFIX_BYTES: usize = 4;

/// How long a new connection may take to say where to start.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts subscribers on `listener` until `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let counters = Arc::clone(&config.counters);
    let mut listener = TrackedListener::new(listener, Some(Arc::clone(&hub)), counters);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let hub = Arc::clone(&hub);
        let limit = config.batch;
        tokio::spawn(async move {
            if let Err(error) = stream_events(stream, hub, limit).await {
                tracing::debug!(%error, "tcp subscriber ended");
            }
        });
    }
}

/// Writes the stream to one subscriber: every ready event goes into one buffered write.
async fn stream_events(
    mut stream: TrackedStream,
    hub: Arc<Hub>,
    limit: BatchLimit,
) -> std::io::Result<()> {
    let first_seq = tokio::time::timeout(HELLO_TIMEOUT, stream.read_u64())
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no start sequence"))??;
    let mut reader = hub.reader(first_seq);
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    while let Some(batch) = reader.next_batch(limit).await {
        for (_, event) in batch.iter() {
            // Encoded events are bounded by MAX_EVENT_BYTES, far below u32::MAX.
            out.write_u32(event.len() as u32).await?;
            out.write_all(event).await?;
        }
        out.flush().await?;
    }
    // Complete (or shutting down): close our side so the subscriber reads end-of-stream.
    out.shutdown().await
}

/// Connects, asks for the stream from the start, and feeds every frame to the sink.
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    let mut stream = connect_tcp(server, config).await?;
    stream
        .write_u64(0)
        .await
        .map_err(|e| ClientError::Protocol(format!("TCP: sending start: {e}")))?;
    sink.connected(now_ns());
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(PREFIX_BYTES)
        .max_frame_length(MAX_EVENT_BYTES)
        .new_codec();
    let mut frames = FramedRead::new(stream, codec);
    while let Some(frame) = frames.next().await {
        // A frame longer than any event means the byte stream is corrupt: nothing after it can
        // be trusted, so the subscription ends with an error.
        let frame = frame.map_err(|e| ClientError::Protocol(format!("TCP: {e}")))?;
        if deliver(sink, &frame, now_ns()) == Flow::Stop {
            break;
        }
    }
    Ok(())
}
