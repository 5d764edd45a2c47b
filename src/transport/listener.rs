//! A TCP listener that counts every accepted connection and the bytes through it
//! ([`SocketCounters`]), and, for the transports whose subscribers are connections (all but
//! webhooks, whose subscribers are registered endpoints), counts each open connection as a
//! subscriber on the hub.
//!
//! Counting at accept rather than in each handler keeps the rule the same for every transport:
//! a browser's `EventSource`, a WebSocket, and a polling client on a keep-alive connection are each
//! one subscriber, counted from the moment they connect until the socket closes.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::hub::{Hub, SubscriberGuard};
use crate::metrics::sockets::SocketCounters;

/// A listener whose accepted streams each count as one subscriber while open.
#[derive(Debug)]
pub struct TrackedListener {
    inner: TcpListener,
    hub: Option<Arc<Hub>>,
    counters: Arc<SocketCounters>,
}

impl TrackedListener {
    /// Wraps a bound listener; with a hub, each open connection counts as a subscriber.
    pub fn new(inner: TcpListener, hub: Option<Arc<Hub>>, counters: Arc<SocketCounters>) -> Self {
        Self {
            inner,
            hub,
            counters,
        }
    }

    /// Accepts the next connection, waiting out transient errors (such as running out of file
    /// descriptors) instead of failing the server.
    pub async fn accept(&mut self) -> (TrackedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // Small messages must leave at once, not wait for Nagle's timer.
                    let _ = stream.set_nodelay(true);
                    self.counters.connection();
                    let stream = TrackedStream {
                        inner: stream,
                        _guard: self.hub.as_ref().map(|hub| hub.join()),
                        counters: Arc::clone(&self.counters),
                    };
                    return (stream, addr);
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// An accepted connection whose bytes are counted (and which, with a hub, counts as a
/// subscriber until dropped).
#[derive(Debug)]
pub struct TrackedStream {
    inner: TcpStream,
    _guard: Option<SubscriberGuard>,
    counters: Arc<SocketCounters>,
}

/// Counts what a poll moved, passing the poll's result through.
fn counted(
    counters: &SocketCounters,
    count: fn(&SocketCounters, usize),
    result: Poll<io::Result<usize>>,
) -> Poll<io::Result<usize>> {
    if let Poll::Ready(Ok(n)) = result {
        count(counters, n);
    }
    result
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            self.counters.read(buf.filled().len() - before);
        }
        result
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        counted(&self.counters, SocketCounters::wrote, result)
    }

    // Vectored writes pass through: hyper gathers several queued events into one writev.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        counted(&self.counters, SocketCounters::wrote, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
