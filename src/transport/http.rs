//! The one HTTP serving function every HTTP transport uses (server and webhook consumer alike),
//! built on hyper's HTTP/1 connection builder rather than `axum::serve` so that hyper's own
//! settings are in reach ([`HttpSettings`]: header read timeout, read buffer ceiling,
//! keep-alive, how long shutdown waits) and so that what accepts connections is a parameter
//! ([`Accept`]): the counting listener, with TLS when it is on. [`serve_http2`] is the same
//! over hyper's HTTP/2 builder, for the transports that multiplex subscribers, and
//! [`serve_http1`] the same with each HTTP/1.1 connection driven by hyper or by pushbench's
//! own lean connection ([`Http1Engine`]).
//!
//! What an idle connection costs is kept down (`docs/method.md`, server RSS per connection): the
//! builder is hyper's own HTTP/1 one, not hyper-util's `auto` builder, whose sniffing for an
//! HTTP/2 preface (no transport speaks HTTP/2) hands hyper a first read of 24 bytes, after which
//! hyper's 8 KiB read buffer doubles to 16 KiB; and a connection's task holds its hyper
//! connection with no copy of the builder and no room kept for the set-up future.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use axum::http::Method;
use futures_util::future::Either;
use hyper::service::Service as _;
use tower_http::cors::{Any, CorsLayer};

use super::listener::Enrolment;
use super::TrackedListener;

/// Where connections come from.
pub trait Accept: Send + 'static {
    /// A connection as accepted.
    type Incoming: Send + 'static;
    /// A connection ready for HTTP (its TLS handshake done, when TLS is on).
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection, waiting out transient errors.
    fn accept(&mut self) -> impl Future<Output = (Self::Incoming, SocketAddr)> + Send;

    /// Where an accepted connection enrols as a subscriber, if it is one: at its first
    /// complete request.
    fn enrolment(incoming: &Self::Incoming) -> Option<Enrolment>;

    /// Sets an accepted connection up, in its own task.
    fn establish(
        &self,
        incoming: Self::Incoming,
    ) -> impl Future<Output = io::Result<Self::Io>> + Send + 'static;
}

impl Accept for TrackedListener {
    type Incoming = super::TrackedStream;
    type Io = super::listener::Established;

    fn accept(&mut self) -> impl Future<Output = (Self::Incoming, SocketAddr)> + Send {
        TrackedListener::accept(self)
    }

    fn enrolment(incoming: &Self::Incoming) -> Option<Enrolment> {
        incoming.enrolment().cloned()
    }

    fn establish(
        &self,
        incoming: Self::Incoming,
    ) -> impl Future<Output = io::Result<Self::Io>> + Send + 'static {
        TrackedListener::establish(self, incoming)
    }
}

/// hyper's per-connection settings, shared by every HTTP transport.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpSettings {
    /// How long a client may take to send a request's headers before the connection is
    /// closed (a client that sends half a request cannot hold a connection, or shutdown, open).
    pub header_read_timeout: Duration,
    /// The most a connection's read buffer may grow to, bytes (hyper's floor is 8 KiB), and the
    /// largest request head (request line and headers) answered: past it, 431.
    pub max_buf_size: usize,
    /// Keep connections open between requests (HTTP/1.1 keep-alive).
    pub keep_alive: bool,
    /// How long shutdown waits for open connections to finish before dropping them.
    pub shutdown_grace: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_buf_size: 64 * 1024,
            keep_alive: true,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// The smallest read buffer ceiling hyper accepts.
const MIN_BUF_SIZE: usize = 8 * 1024;

/// Serves `router` on the connections `acceptor` gives until `shutdown` fires, then lets open
/// connections finish for at most `settings.shutdown_grace`. A connection's first complete
/// request enrols it as a subscriber; past the subscriber cap it is answered 503. CORS lets a
/// browser page from any origin `GET` (`fetch`, `EventSource`), and nothing else: no page can
/// make a visitor's browser register a webhook. Upgrades (WebSocket) are supported.
pub async fn serve_http<A: Accept>(
    acceptor: A,
    router: axum::Router,
    settings: HttpSettings,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let ceiling = settings.max_buf_size.max(MIN_BUF_SIZE);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(settings.keep_alive)
        .max_buf_size(ceiling)
        // The head's own limit, exact: the buffer's ceiling alone lets one read overshoot it.
        .max_header_size(ceiling);
    serve_with(
        acceptor,
        router,
        settings,
        shutdown,
        Builder::Http1(builder),
    )
    .await
}

/// What drives a server's HTTP/1.1 connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http1Engine {
    /// hyper's HTTP/1 connection, as axum is deployed: upgrades and any request body.
    Hyper,
    /// pushbench's own lean connection ([`super::http1_server`]), which keeps no buffer while an
    /// answer is held or a stream waits for its next event: for servers whose connections
    /// mostly wait (a long poll, an event stream). No upgrades; request bodies only with
    /// `Content-Length`.
    Lean,
}

/// As [`serve_http`], the connections driven by `engine`.
pub async fn serve_http1<A: Accept>(
    acceptor: A,
    router: axum::Router,
    settings: HttpSettings,
    engine: Http1Engine,
    shutdown: CancellationToken,
) -> io::Result<()> {
    if engine == Http1Engine::Hyper {
        return serve_http(acceptor, router, settings, shutdown).await;
    }
    let limits = super::http1_server::Limits {
        request_timeout: settings.header_read_timeout,
        max_head: settings.max_buf_size.max(MIN_BUF_SIZE),
        max_body: settings.max_buf_size.max(MIN_BUF_SIZE),
        keep_alive: settings.keep_alive,
    };
    serve_with(acceptor, router, settings, shutdown, Builder::Lean(limits)).await
}

/// As [`serve_http`], speaking HTTP/2: cleartext with prior knowledge (h2c), or h2 when the
/// listener's TLS offers it. A connection carries many requests at once, each a subscriber
/// of its own, so connections do not enrol: the handler counts each stream while its
/// response lives (and refuses one past `subscribers`). Every `heartbeat` the server PINGs each
/// connection, HTTP/2's own keep-alive, so a quiet stream is not cut as idle.
pub async fn serve_http2<A: Accept>(
    acceptor: A,
    router: axum::Router,
    settings: HttpSettings,
    (subscribers, heartbeat): (usize, Duration),
    shutdown: CancellationToken,
) -> io::Result<()> {
    // Streams at once on one connection: every subscriber the server holds may share it, with
    // room to answer (and refuse) the ones past the cap rather than leave them waiting.
    let streams = u32::try_from(subscribers.saturating_add(1024)).unwrap_or(u32::MAX);
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval((!heartbeat.is_zero()).then_some(heartbeat))
        .max_concurrent_streams(streams)
        .max_header_list_size(settings.max_buf_size.max(MIN_BUF_SIZE) as u32);
    serve_with(
        acceptor,
        router,
        settings,
        shutdown,
        Builder::Http2(builder),
    )
    .await
}

/// The connection builder of one HTTP version, shared by every connection's task.
enum Builder {
    Http1(http1::Builder),
    Http2(http2::Builder<TokioExecutor>),
    /// HTTP/1.1 on pushbench's own lean connection.
    Lean(super::http1_server::Limits),
}

/// The accept loop both versions share: CORS, enrolment (HTTP/1: a connection's first complete
/// request; past the subscriber cap, 503), one task per connection, and a graceful drain.
async fn serve_with<A: Accept>(
    mut acceptor: A,
    router: axum::Router,
    settings: HttpSettings,
    shutdown: CancellationToken,
    builder: Builder,
) -> io::Result<()> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD]);
    // One service shared by every connection (each request calls a clone of it): a copy per
    // connection would hold the CORS configuration (280 B) for the connection's life.
    let service = Arc::new(TowerToHyperService::new(router.layer(cors)));
    // Shared by the connections' tasks rather than copied into each.
    let builder = Arc::new(builder);
    // Shutdown tells every open connection to finish its response and close, then waits for
    // them all (each holds a receiver while it lives).
    let (draining, _) = tokio::sync::watch::channel(());
    loop {
        let (incoming, _) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let enrolment = match *builder {
            Builder::Http1(_) | Builder::Lean(_) => A::enrolment(&incoming),
            Builder::Http2(_) => None,
        };
        // Boxed, so freed once done: inline, the set-up future (1.7 KB, the TLS handshake's
        // state in it even when TLS is off) would take room in the task for the connection's life.
        let establishing = Box::pin(acceptor.establish(incoming));
        let (builder, service, drain) = (
            Arc::clone(&builder),
            Arc::clone(&service),
            draining.subscribe(),
        );
        tokio::spawn(async move {
            let io = match establishing.await {
                Ok(io) => io,
                Err(error) => return tracing::debug!(%error, "connection not established"),
            };
            // Each hyper connection is pinned where it is made and lent to `until_drained`:
            // moved into it, the task would keep room for a second copy of it.
            let ended: Result<(), BoxError> = match &*builder {
                Builder::Http1(builder) => {
                    let service = hyper::service::service_fn(admitting(service, enrolment));
                    let connection = std::pin::pin!(builder
                        .serve_connection(TokioIo::new(io), service)
                        .with_upgrades());
                    until_drained(connection, drain).await.map_err(Into::into)
                }
                // Boxed: inline, an HTTP/2 connection's state (2.3 KB larger than HTTP/1's)
                // would size every connection's task, HTTP/1 ones included, for its life.
                Builder::Http2(builder) => {
                    let service = hyper::service::service_fn(admitting(service, enrolment));
                    let mut connection =
                        Box::pin(builder.serve_connection(TokioIo::new(io), service));
                    until_drained(connection.as_mut(), drain)
                        .await
                        .map_err(Into::into)
                }
                Builder::Lean(limits) => {
                    let answer = admitting(service, enrolment);
                    super::http1_server::serve_connection(io, answer, *limits, drain)
                        .await
                        .map_err(Into::into)
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, "HTTP connection ended");
            }
        });
    }
    // Streams still open finish (or are dropped) within the grace period.
    draining.send_replace(());
    let _ = tokio::time::timeout(settings.shutdown_grace, draining.closed()).await;
    Ok(())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The router as a hyper service, shared by every connection of a server.
type RouterService = TowerToHyperService<axum::Router>;

/// An answer as [`admitting`] gives it: the router's, or the refusal past the cap.
type Admitted<B> = Either<
    <RouterService as hyper::service::Service<hyper::Request<B>>>::Future,
    std::future::Ready<Result<axum::response::Response, std::convert::Infallible>>,
>;

/// The application as a connection calls it: each request to the router, but a connection
/// enrolled past the subscriber cap is answered [`server_full`]. A message up (two-way traffic)
/// is no subscription: its connection is not enrolled by it, nor refused past the cap.
fn admitting<B>(
    service: Arc<RouterService>,
    enrolment: Option<Enrolment>,
) -> impl Fn(hyper::Request<B>) -> Admitted<B>
where
    RouterService: hyper::service::Service<
        hyper::Request<B>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
    >,
{
    move |request| {
        let admitted = request.uri().path() == super::upstream::UPSTREAM_PATH
            || enrolment.as_ref().is_none_or(Enrolment::establish);
        if admitted {
            Either::Left(service.call(request))
        } else {
            Either::Right(std::future::ready(Ok(server_full())))
        }
    }
}

/// A hyper connection that can be told to finish what is under way and close.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn finish(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn finish(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn finish(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves one connection until it closes; once `drain` fires, the responses under way are the
/// last.
async fn until_drained<C: Graceful + ?Sized>(
    mut connection: std::pin::Pin<&mut C>,
    mut drain: tokio::sync::watch::Receiver<()>,
) -> Result<(), hyper::Error> {
    tokio::select! {
        ended = connection.as_mut() => ended,
        _ = drain.changed() => {
            connection.as_mut().finish();
            connection.await
        }
    }
}

/// The answer past the subscriber cap: 503, and the connection closed.
fn server_full() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let headers = [(axum::http::header::CONNECTION, "close")];
    let why = "server full: it holds as many subscribers as it allows (--max-subscribers)\n";
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, headers, why).into_response()
}
