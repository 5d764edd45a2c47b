//! A TCP listener that counts every open connection as a subscriber on the hub, for the
//! transports whose subscribers are connections (all but webhooks, whose subscribers are
//! registered endpoints).
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

/// A listener whose accepted streams each count as one subscriber while open.
#[derive(Debug)]
pub struct TrackedListener {
    inner: TcpListener,
    hub: Arc<Hub>,
}

impl TrackedListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener, hub: Arc<Hub>) -> Self {
        Self { inner, hub }
    }

    /// Accepts the next connection, waiting out transient errors (such as running out of file
    /// descriptors) instead of failing the server.
    pub async fn accept(&mut self) -> (TrackedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // Small messages must leave at once, not wait for Nagle's timer.
                    let _ = stream.set_nodelay(true);
                    let guard = self.hub.join();
                    return (
                        TrackedStream {
                            inner: stream,
                            _guard: guard,
                        },
                        addr,
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        TrackedListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection, counted as a subscriber until dropped.
#[derive(Debug)]
pub struct TrackedStream {
    inner: TcpStream,
    _guard: SubscriberGuard,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    // Vectored writes pass through: hyper gathers several queued events into one writev.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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
