//! A TCP listener that counts every accepted connection and the bytes through it
//! ([`SocketCounters`]), and, for the transports whose subscribers are connections (all but
//! webhooks, whose subscribers are registered endpoints), counts each open connection as a
//! subscriber on the hub.
//!
//! Counting at accept rather than in each handler keeps the rule the same for every transport:
//! a browser's `EventSource`, a WebSocket, and a polling client on a keep-alive connection are each
//! one subscriber, counted from the moment they connect until the socket closes.
//!
//! It is also where the drop fault acts ([`DROP_EVERY`]): every connection open at each cut
//! fails its next read or write, whatever the transport above it, as when a load balancer or a
//! flaky network cuts connections.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;
use std::sync::{Mutex, Weak};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{ServerConfig, Setting, Side};
use crate::hub::{Hub, SubscriberGuard};
use crate::metrics::sockets::SocketCounters;

/// Fault: cut every subscriber's connection from the server side this often.
pub static DROP_EVERY: Setting<Duration> = Setting {
    name: "drop-every",
    help: "Fault: once the stream has begun, cut every subscriber's connection from the server \
           side this often (0s: never)",
    side: Side::Server,
    default: Duration::ZERO,
    min: Duration::ZERO,
};

/// A listener whose accepted streams each count as one subscriber while open.
#[derive(Debug)]
pub struct TrackedListener {
    inner: TcpListener,
    hub: Option<Arc<Hub>>,
    counters: Arc<SocketCounters>,
    /// The drop fault's current cut, when it is on.
    cuts: Option<Arc<Cuts>>,
}

/// The drop fault: every connection accepted holds the current cut's token, and each cut
/// cancels it and starts the next.
#[derive(Debug)]
struct Cuts {
    current: Mutex<CancellationToken>,
}

impl Cuts {
    /// Cuts `period` apart once the stream has begun (its first event published), for as
    /// long as the listener lives; each cut is noted on the hub, so results can show when the
    /// fault struck.
    fn every(period: Duration, hub: Arc<Hub>) -> Arc<Self> {
        let cuts = Arc::new(Self {
            current: Mutex::new(CancellationToken::new()),
        });
        let weak: Weak<Self> = Arc::downgrade(&cuts);
        tokio::spawn(async move {
            hub.wait_until_published(1).await;
            loop {
                tokio::time::sleep(period).await;
                let Some(cuts) = weak.upgrade() else { return };
                let mut current = cuts.current.lock().unwrap_or_else(|e| e.into_inner());
                std::mem::replace(&mut *current, CancellationToken::new()).cancel();
                hub.note_fault(crate::clock::now_ns());
            }
        });
        cuts
    }

    fn token(&self) -> CancellationToken {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl TrackedListener {
    /// Wraps a bound listener; with a hub, each open connection counts as a subscriber.
    pub fn new(inner: TcpListener, hub: Option<Arc<Hub>>, counters: Arc<SocketCounters>) -> Self {
        Self {
            inner,
            hub,
            counters,
            cuts: None,
        }
    }

    /// The listener a server's subscribers connect to: counted on `hub`, their bytes on the
    /// config's counters, and cut as the config's drop fault says.
    pub fn for_subscribers(inner: TcpListener, hub: Arc<Hub>, config: &ServerConfig) -> Self {
        let period = DROP_EVERY.read(&config.settings);
        Self {
            cuts: (!period.is_zero()).then(|| Cuts::every(period, Arc::clone(&hub))),
            ..Self::new(inner, Some(hub), Arc::clone(&config.counters))
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
                        cut: self.cuts.as_ref().map(|cuts| Cut::new(cuts.token())),
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
    cut: Option<Cut>,
}

/// The cut a connection waits on: once it fires, every read and write fails.
#[derive(Debug)]
struct Cut {
    token: CancellationToken,
    /// Registers the connection's task to be woken by the cut (polled only until it fires).
    fired: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Cut {
    fn new(token: CancellationToken) -> Self {
        Self {
            fired: Box::pin(token.clone().cancelled_owned()),
            token,
        }
    }

    /// Whether the connection has been cut (and, if not, wake this task when it is).
    fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        self.token.is_cancelled() || self.fired.as_mut().poll(cx).is_ready()
    }
}

impl TrackedStream {
    /// The error every read and write gets once the drop fault cut the connection.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let cut = self.cut.as_mut()?.poll_fired(cx);
        cut.then(|| io::Error::new(io::ErrorKind::ConnectionReset, "cut by the drop fault"))
    }
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
        if let Some(error) = self.poll_cut(cx) {
            return Poll::Ready(Err(error));
        }
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
        if let Some(error) = self.poll_cut(cx) {
            return Poll::Ready(Err(error));
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        counted(&self.counters, SocketCounters::wrote, result)
    }

    // Vectored writes pass through: hyper gathers several queued events into one writev.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.poll_cut(cx) {
            return Poll::Ready(Err(error));
        }
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
