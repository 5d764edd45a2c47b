//! The one HTTP serving function every HTTP transport uses (server and webhook consumer alike),
//! built on hyper-util's connection builder rather than `axum::serve` so that hyper's own
//! settings are in reach ([`HttpSettings`]: header read timeout, read buffer ceiling,
//! keep-alive, how long shutdown waits) and so that what accepts connections is a parameter
//! ([`Accept`]): a plain listener, a counting one, and later a TLS acceptor.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::TrackedListener;

/// Where connections come from.
pub trait Accept: Send + 'static {
    /// An accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection, waiting out transient errors.
    fn accept(&mut self) -> impl Future<Output = (Self::Io, SocketAddr)> + Send;
}

impl Accept for TrackedListener {
    type Io = super::TrackedStream;

    fn accept(&mut self) -> impl Future<Output = (Self::Io, SocketAddr)> + Send {
        TrackedListener::accept(self)
    }
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            match TcpListener::accept(self).await {
                Ok((stream, addr)) => {
                    // Small messages must leave at once, not wait for Nagle's timer.
                    let _ = stream.set_nodelay(true);
                    return (stream, addr);
                }
                Err(error) => {
                    // Out of file descriptors, say: wait and go on rather than fail the server.
                    tracing::warn!(%error, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

/// hyper's per-connection settings, shared by every HTTP transport.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpSettings {
    /// How long a client may take to send a request's headers before the connection is
    /// closed (a client that sends half a request cannot hold a connection, or shutdown, open).
    pub header_read_timeout: Duration,
    /// The most a connection's read buffer may grow to, bytes (hyper's floor is 8 KiB).
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
/// connections finish for at most `settings.shutdown_grace`. CORS is open so a browser page
/// from any origin can `fetch` or `EventSource` the server (the benchmark has no secrets to
/// guard); upgrades (WebSocket) are supported.
pub async fn serve_http<A: Accept>(
    mut acceptor: A,
    router: axum::Router,
    settings: HttpSettings,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let router = router.layer(tower_http::cors::CorsLayer::permissive());
    let service = TowerToHyperService::new(router);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(settings.keep_alive)
        .max_buf_size(settings.max_buf_size.max(MIN_BUF_SIZE));
    let graceful = GracefulShutdown::new();
    loop {
        let (io, _) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service.clone())
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended");
            }
        });
    }
    // Streams still open finish (or are dropped) within the grace period.
    let _ = tokio::time::timeout(settings.shutdown_grace, graceful.shutdown()).await;
    Ok(())
}
