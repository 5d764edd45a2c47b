//! A TCP listener that counts every accepted connection and the bytes through it
//! ([`SocketCounters`]), and, for the transports whose subscribers are connections (all but
//! webhooks, whose subscribers are registered endpoints), enrols each connection as a
//! subscriber on the hub once its subscription is established ([`Enrolment`]).
//!
//! The rule is the same for every transport: a browser's `EventSource`, a WebSocket, and a
//! polling client on a keep-alive connection are each one subscriber, counted from its first
//! complete request (raw TCP: its start sequence) until the socket closes. A connection that
//! only connects, or sends half a request, is no subscriber: it cannot start the stream or hold
//! the server. Past the subscriber cap, an enrolment is refused and the transport answers with
//! its protocol's refusal.
//!
//! Writes that wait longer than the write timeout on a peer that does not read fail, so a
//! subscriber that never reads is dropped (and counted) rather than holding the server.
//!
//! TLS is set up here too ([`TrackedListener::establish`]), on top of the counted stream, so
//! the byte counts are what crossed the wire, encryption included.
//!
//! It is also where the drop fault ([`DROP_EVERY`]) and the close storm
//! ([`super::storm::STORM_AFTER`]) act: every connection open at each cut fails its next read or
//! write, whatever the transport above it, as when a load balancer, a flaky network or a deploy
//! cuts connections.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;
use std::sync::{Mutex, OnceLock};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use tokio_rustls::TlsAcceptor;

use super::storm::{Storm, StormKind};
use super::tls::{HandshakeTimes, ServerTls, TlsMaterial, TLS};
use super::{ServerConfig, Setting, SettingValues, Side};
use crate::hub::{Hub, SubscriberGuard};
use crate::metrics::sockets::SocketCounters;

/// Fault: cut every subscriber's connection from the server side this often.
pub static DROP_EVERY: Setting<Duration> = Setting {
    name: "drop-every",
    help: "Fault: while the stream is published, cut every subscriber's connection from the \
           server side this often (0s: never)",
    side: Side::Server,
    default: Duration::ZERO,
    min: Duration::ZERO,
};

/// A listener whose accepted streams each count as one subscriber while open.
pub struct TrackedListener {
    inner: TcpListener,
    /// Who counts and cuts the connections.
    admission: Admission,
    /// How long a write may wait on a peer that does not read.
    write_timeout: Option<Duration>,
    /// TLS, when it is on: each connection's handshake, and where its time goes.
    tls: Option<(TlsAcceptor, Arc<HandshakeTimes>)>,
}

/// The rules every subscriber connection is admitted under, whatever carries it: counted on
/// the counters, enrolled on the hub (within the cap) once its subscription is established,
/// and cut by the drop fault and the close storm. [`TrackedListener`] applies them to TCP
/// connections; a server on another carrier (QUIC) applies them to its own connections.
#[derive(Clone, Debug)]
pub struct Admission {
    hub: Option<Arc<Hub>>,
    counters: Arc<SocketCounters>,
    /// Subscribers allowed at once.
    max_subscribers: usize,
    /// The drop fault's current cut, when it is on.
    cuts: Option<Arc<Cuts>>,
}

/// One connection admitted: where it enrols, and the cut it must obey.
#[derive(Debug)]
pub struct Admitted {
    /// Where it enrols as a subscriber (none without a hub).
    pub enrolment: Option<Enrolment>,
    /// Fires when the drop fault or the close storm cuts it (none when neither is on).
    pub cut: Option<CancellationToken>,
}

impl Admission {
    /// The rules for a server's subscribers, as its config says: counted on `hub` and the
    /// config's counters, within its subscriber cap, cut by its faults.
    pub fn for_subscribers(hub: Arc<Hub>, config: &ServerConfig) -> Self {
        Self {
            cuts: Cuts::planned(&config.settings, &hub),
            max_subscribers: config.limits.subscriber_cap(),
            hub: Some(hub),
            counters: Arc::clone(&config.counters),
        }
    }

    /// Counts one more connection and hands it its enrolment and cut.
    pub fn admit(&self) -> Admitted {
        self.counters.connection();
        Admitted {
            enrolment: self.hub.as_ref().map(|hub| Enrolment {
                hub: Arc::clone(hub),
                max: self.max_subscribers,
                guard: Arc::default(),
            }),
            cut: self.cuts.as_ref().map(|cuts| cuts.token()),
        }
    }

    /// Where the connections' bytes are counted.
    pub fn counters(&self) -> &Arc<SocketCounters> {
        &self.counters
    }
}

/// An accepted connection once set up: under TLS when it is on.
pub type Established = ServerTls<TrackedStream>;

/// The drop fault and the close storm: every connection accepted holds the current cut's
/// token, and each cut cancels it and starts the next.
#[derive(Debug)]
struct Cuts {
    current: Mutex<CancellationToken>,
}

impl Cuts {
    /// The cuts the settings ask for, if any: every `DROP_EVERY` while the stream is published
    /// (from its first event to its last: after it, a cut would only catch subscribers
    /// confirming the end, and a close frame already sent cannot tell them it came too late),
    /// and the close storm's one cut at `STORM_AFTER`, for as long as the listener lives. Each is noted on the hub, so results can show when the fault struck.
    fn planned(settings: &SettingValues, hub: &Arc<Hub>) -> Option<Arc<Self>> {
        let period = Some(DROP_EVERY.read(settings)).filter(|p| !p.is_zero());
        let storm = Storm::planned(settings).filter(|s| s.kind == StormKind::Close);
        if period.is_none() && storm.is_none() {
            return None;
        }
        let cuts = Arc::new(Self {
            current: Mutex::new(CancellationToken::new()),
        });
        if let Some(period) = period {
            let (weak, hub) = (Arc::downgrade(&cuts), Arc::clone(hub));
            tokio::spawn(async move {
                hub.wait_until_published(1).await;
                loop {
                    tokio::time::sleep(period).await;
                    let Some(cuts) = weak.upgrade() else { return };
                    if hub.is_complete() {
                        return;
                    }
                    cuts.cut();
                    hub.note_fault(crate::clock::now_ns());
                }
            });
        }
        if let Some(storm) = storm {
            let (weak, hub) = (Arc::downgrade(&cuts), Arc::clone(hub));
            tokio::spawn(async move {
                hub.wait_until_published(1).await;
                tokio::time::sleep(storm.after).await;
                let Some(cuts) = weak.upgrade() else { return };
                cuts.cut();
                hub.note_storm(crate::clock::now_ns());
            });
        }
        Some(cuts)
    }

    /// Cuts every connection open now; those accepted later hold the next cut's token.
    fn cut(&self) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *current, CancellationToken::new()).cancel();
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
            admission: Admission {
                hub,
                counters,
                max_subscribers: usize::MAX,
                cuts: None,
            },
            write_timeout: None,
            tls: None,
        }
    }

    /// Serves TLS with `material`'s certificate on every connection, timing handshakes into
    /// its record.
    pub fn with_tls(self, material: &TlsMaterial) -> io::Result<Self> {
        self.with_tls_offering(material, super::tls::ALPN_HTTP1)
    }

    /// As [`TrackedListener::with_tls`], offering `alpn` (an HTTP/2 server offers h2).
    pub fn with_tls_offering(mut self, material: &TlsMaterial, alpn: &[&[u8]]) -> io::Result<Self> {
        self.tls = Some((material.acceptor(alpn)?, Arc::clone(&material.handshakes)));
        Ok(self)
    }

    /// Sets up an accepted connection (its TLS handshake, when TLS is on). Done in the
    /// connection's own task, not the accept loop, so a slow or silent client holds up no one.
    pub fn establish(
        &self,
        stream: TrackedStream,
    ) -> impl Future<Output = io::Result<Established>> + Send + 'static {
        let tls = self.tls.clone();
        async move {
            match &tls {
                Some((acceptor, times)) => ServerTls::accept(stream, Some(acceptor), times).await,
                None => Ok(ServerTls::Plain(stream)),
            }
        }
    }

    /// The listener a server's subscribers connect to: counted on `hub`, their bytes on the
    /// config's counters, cut as the config's drop fault says, under TLS when it is on.
    pub fn for_subscribers(
        inner: TcpListener,
        hub: Arc<Hub>,
        config: &ServerConfig,
    ) -> io::Result<Self> {
        Self::for_subscribers_offering(inner, hub, config, super::tls::ALPN_HTTP1)
    }

    /// As [`TrackedListener::for_subscribers`], offering `alpn` under TLS (an HTTP/2 server
    /// offers h2).
    pub fn for_subscribers_offering(
        inner: TcpListener,
        hub: Arc<Hub>,
        config: &ServerConfig,
        alpn: &[&[u8]],
    ) -> io::Result<Self> {
        let listener = Self {
            inner,
            admission: Admission::for_subscribers(hub, config),
            write_timeout: Some(config.limits.write_timeout).filter(|t| !t.is_zero()),
            tls: None,
        };
        if TLS.read(&config.settings) {
            return listener.with_tls_offering(&config.tls, alpn);
        }
        Ok(listener)
    }

    /// Accepts the next connection, waiting out transient errors (such as running out of file
    /// descriptors) instead of failing the server.
    pub async fn accept(&mut self) -> (TrackedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    // Small messages must leave at once, not wait for Nagle's timer.
                    let _ = stream.set_nodelay(true);
                    let admitted = self.admission.admit();
                    let stream = TrackedStream {
                        inner: stream,
                        enrolment: admitted.enrolment,
                        counters: Arc::clone(&self.admission.counters),
                        cut: admitted.cut.map(Cut::new),
                        write_timeout: self.write_timeout,
                        stalled: None,
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
/// subscriber once enrolled, until dropped).
#[derive(Debug)]
pub struct TrackedStream {
    inner: TcpStream,
    enrolment: Option<Enrolment>,
    counters: Arc<SocketCounters>,
    cut: Option<Cut>,
    write_timeout: Option<Duration>,
    /// Since a write began to wait: fires at the write timeout.
    stalled: Option<Pin<Box<Sleep>>>,
}

/// A connection's place among the hub's subscribers, taken once its subscription is
/// established (not at accept), and held while any clone of it (the connection, its request
/// handler) lives.
#[derive(Clone, Debug)]
pub struct Enrolment {
    hub: Arc<Hub>,
    max: usize,
    guard: Arc<OnceLock<SubscriberGuard>>,
}

impl Enrolment {
    /// Counts the connection as a subscriber, once; `false` (and not counted) when the server
    /// already holds as many as it allows.
    pub fn establish(&self) -> bool {
        if self.guard.get().is_some() {
            return true;
        }
        if self.hub.subscribers() >= self.max {
            return false;
        }
        self.guard.get_or_init(|| self.hub.join());
        true
    }
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
    /// Where this connection enrols as a subscriber (none on a listener without a hub).
    pub fn enrolment(&self) -> Option<&Enrolment> {
        self.enrolment.as_ref()
    }

    /// Passes a write's outcome on, failing it once it has waited the write timeout: a peer
    /// that stops reading is dropped rather than holding its task (and the server's
    /// shutdown) forever.
    fn bounded(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let Some(timeout) = self.write_timeout else {
            return counted(&self.counters, SocketCounters::wrote, result);
        };
        if result.is_ready() {
            self.stalled = None;
            return counted(&self.counters, SocketCounters::wrote, result);
        }
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.counters.write_timed_out();
            let why = format!("the subscriber read nothing for {timeout:?}");
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
        }
        Poll::Pending
    }

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
        self.bounded(cx, result)
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
        self.bounded(cx, result)
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
