//! The contract every transport implements, and the one place that lists them.
//!
//! A transport is one file holding its server and its client side by side:
//!
//! - server: `serve(listener, hub, config, shutdown)` accepts subscribers on a listener the
//!   caller bound, hands each the published stream from the [`Hub`] (which also counts them),
//!   and returns once `shutdown` fires.
//! - client: `subscribe(server, config, sink)` connects, feeds every event it receives to the
//!   [`Sink`] with its receive time, and closes cleanly when the sink has seen enough or the
//!   server ends the stream.
//!
//! [`Transport`] is the only enum that names them; it only dispatches. Everything above this
//! module (harness, metrics, report) talks to `Transport`, never to a transport's file.

mod cursor;
mod listener;
pub mod longpoll;
pub mod poll;
pub mod sse;
pub mod tcp;
pub mod webhook;
pub mod websocket;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ns;
use crate::event::{DecodeError, Event};
use crate::hub::{BatchLimit, Hub};
use crate::metrics::sockets::SocketCounters;

pub use listener::{TrackedListener, TrackedStream};
pub use webhook::Secret;

/// Every transport pushbench measures.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket text frames on `/ws`.
    Websocket,
    /// Server-Sent Events on `/sse`.
    Sse,
    /// Long polling: `GET /events?after=SEQ` held until events exist.
    Longpoll,
    /// Short polling: the same cursor API answered at once, polled at an interval.
    Poll,
    /// Webhooks: signed HTTP POSTs to registered consumer endpoints.
    Webhook,
    /// Length-prefixed frames on a bare TCP stream: the floor.
    Tcp,
}

impl Transport {
    /// All transports, in report order.
    pub const ALL: [Transport; 6] = [
        Transport::Websocket,
        Transport::Sse,
        Transport::Longpoll,
        Transport::Poll,
        Transport::Webhook,
        Transport::Tcp,
    ];

    /// The transport with this name (as in results), if there is one.
    pub fn named(name: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.name() == name)
    }

    /// What this transport is, apart from what it measures: the facts design rules test.
    pub fn traits(self) -> &'static Traits {
        match self {
            Transport::Websocket => &websocket::TRAITS,
            Transport::Sse => &sse::TRAITS,
            Transport::Longpoll => &longpoll::TRAITS,
            Transport::Poll => &poll::TRAITS,
            Transport::Webhook => &webhook::TRAITS,
            Transport::Tcp => &tcp::TRAITS,
        }
    }

    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Sse => "sse",
            Transport::Longpoll => "longpoll",
            Transport::Poll => "poll",
            Transport::Webhook => "webhook",
            Transport::Tcp => "tcp",
        }
    }

    /// Runs this transport's server on `listener` until `shutdown` fires.
    pub async fn serve(
        self,
        listener: TcpListener,
        hub: Arc<Hub>,
        config: ServerConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        match self {
            Transport::Websocket => websocket::serve(listener, hub, config, shutdown).await,
            Transport::Sse => sse::serve(listener, hub, config, shutdown).await,
            Transport::Longpoll => longpoll::serve(listener, hub, config, shutdown).await,
            Transport::Poll => poll::serve(listener, hub, config, shutdown).await,
            Transport::Webhook => webhook::serve(listener, hub, config, shutdown).await,
            Transport::Tcp => tcp::serve(listener, hub, config, shutdown).await,
        }
    }

    /// Subscribes to the server at `server`, feeding `sink` until it stops or the stream ends.
    pub async fn subscribe(
        self,
        server: SocketAddr,
        config: &ClientConfig,
        sink: &mut dyn Sink,
    ) -> Result<(), ClientError> {
        match self {
            Transport::Websocket => websocket::subscribe(server, config, sink).await,
            Transport::Sse => sse::subscribe(server, config, sink).await,
            Transport::Longpoll => longpoll::subscribe(server, config, sink).await,
            Transport::Poll => poll::subscribe(server, config, sink).await,
            Transport::Webhook => webhook::subscribe(server, config, sink).await,
            Transport::Tcp => tcp::subscribe(server, config, sink).await,
        }
    }
}

/// What a transport is by its protocol, not by measurement: each transport's file declares its
/// own, and the recommendation's hard rules and the report's reference row read only these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traits {
    /// Consumers can send on the same channel, not only receive.
    pub duplex: bool,
    /// The browser API that receives it, or `None` when a browser cannot.
    pub browser_api: Option<&'static str>,
    /// The consumer must accept inbound HTTP at a URL the provider can reach.
    pub needs_inbound_http: bool,
    /// Holds a connection (or a request) open per subscriber between events.
    pub holds_connection: bool,
    /// Needs an HTTP Upgrade, which some proxies refuse.
    pub needs_upgrade: bool,
    /// Delivers as one unending response body, which buffering proxies hold back.
    pub streams_response: bool,
    /// Speaks HTTP, so it passes HTTP proxies and load balancers.
    pub http: bool,
    /// How many HTTP requests delivery takes.
    pub requests: Requests,
    /// How a consumer that was away gets what it missed.
    pub redelivery: Redelivery,
    /// The physical floor the other transports are measured against.
    pub floor: bool,
}

/// How many requests a consumer's deliveries take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requests {
    /// One connection for the whole stream.
    Stream,
    /// One per answered batch, and at least one per hold.
    PerAnswer,
    /// One per polling interval, events or not; latency follows the interval.
    PerInterval,
    /// One per event.
    PerEvent,
}

/// How missed events reach a consumer after downtime or a dropped connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redelivery {
    /// The protocol and its standard client resume on their own (how, in words).
    BuiltIn(&'static str),
    /// The provider retries until the consumer answers (how, in words).
    Retries(&'static str),
    /// Possible, but the application builds it (how pushbench does, in words).
    Application(&'static str),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Server-side settings; each transport reads the ones that concern it. They travel to a server
/// child process whole (secret included) over the typed protocol, never in argv.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerConfig {
    /// Keep-alive interval: WebSocket pings, SSE comment heartbeats.
    pub heartbeat: Duration,
    /// How long a long poll is held before it is answered with an empty batch.
    pub hold: Duration,
    /// How much one write or response may carry.
    pub batch: BatchLimit,
    /// WebSocket read buffer per connection (tungstenite's 128 KiB default costs 137 KB of RSS
    /// per idle connection; 4 KiB costs about 6 KB).
    pub ws_read_buffer: usize,
    /// The webhook provider's signing secret.
    pub webhook_secret: Secret,
    /// Open a new connection for every webhook delivery instead of pooling keep-alive ones, as
    /// many real providers do.
    pub webhook_new_connection: bool,
    /// Delivery attempts per webhook event before the provider gives up on it.
    pub webhook_attempts: u32,
    /// Counts connections and bytes at the server's accepted sockets (this process's own).
    #[serde(skip)]
    pub counters: Arc<SocketCounters>,
    /// Faults injected on purpose, to check that the measurement sees them.
    pub faults: Faults,
}

/// Faults a server can inject, so tests (and users) can check the measurement sees them.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Faults {
    /// Every batch handed to a subscriber waits this long first (a slow network or server).
    pub delivery_delay: Option<Duration>,
    /// The publisher stops for this long just before this event (a stalled sender).
    pub stall: Option<(u64, Duration)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            hold: Duration::from_secs(30),
            batch: BatchLimit::default(),
            ws_read_buffer: 4096,
            webhook_secret: Secret::generate(),
            webhook_new_connection: false,
            webhook_attempts: 8,
            counters: Arc::default(),
            faults: Faults::default(),
        }
    }
}

/// Client-side settings; each transport reads the ones that concern it. They travel to a load
/// worker process whole over the typed protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Local address to connect from (or, for webhooks, to listen on): spreading subscribers
    /// over 127.0.0.x addresses gets past the ephemeral-port limit.
    pub bind: Option<IpAddr>,
    /// Short-polling interval.
    pub poll_interval: Duration,
    /// The secret webhook deliveries must be signed with; webhooks cannot subscribe without it.
    pub webhook_secret: Option<Secret>,
    /// WebSocket read buffer per connection.
    pub ws_read_buffer: usize,
    /// How long a connect (and handshake) may take.
    pub connect_timeout: Duration,
    /// How long one HTTP request may take; longer than the server's long-poll hold.
    pub request_timeout: Duration,
    /// Counts connections and bytes at sockets this side accepts (webhook consumers; this
    /// process's own).
    #[serde(skip)]
    pub counters: Arc<SocketCounters>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            bind: None,
            poll_interval: Duration::from_millis(100),
            webhook_secret: None,
            ws_read_buffer: 4096,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            counters: Arc::default(),
        }
    }
}

/// Whether a subscription should go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep receiving.
    Continue,
    /// Enough received: close the subscription cleanly.
    Stop,
}

/// Where a client puts what it receives. The harness's sink records latency and the tally;
/// tests' sinks check digests.
pub trait Sink: Send {
    /// The subscription is established (connected, handshake done) at `at_ns` (monotonic).
    fn connected(&mut self, at_ns: u64) {
        let _ = at_ns;
    }

    /// One event arrived at `received_ns` (monotonic).
    fn event(&mut self, event: &Event<'_>, received_ns: u64) -> Flow;

    /// A message arrived that is not a valid event; counted, never fatal.
    fn malformed(&mut self, error: &DecodeError) -> Flow;

    /// A response carrying `events` events arrived (transports that deliver in batches).
    fn batch(&mut self, events: usize) {
        let _ = events;
    }
}

/// Receive times for clients that read a stream of messages (WebSocket frames, SSE events):
/// messages that are ready without waiting arrived with the read that was waited for, so they
/// share its receive time, one clock read per read rather than per message. A backlog that
/// never makes the client wait re-reads the clock every [`ArrivalClock::RESTAMP_EVERY`]
/// messages, so no receive time is early by more than a few microseconds of processing.
#[derive(Debug)]
pub(crate) struct ArrivalClock {
    stamp_ns: u64,
    since_stamp: u32,
}

impl ArrivalClock {
    /// Ready messages handled between two reads of the clock.
    pub(crate) const RESTAMP_EVERY: u32 = 32;

    pub(crate) fn new() -> Self {
        Self {
            stamp_ns: 0,
            since_stamp: Self::RESTAMP_EVERY,
        }
    }

    /// The stream's next item with its receive time: at once if it is ready, else after
    /// waiting for it.
    pub(crate) async fn next<S>(&mut self, stream: &mut S) -> Option<(S::Item, u64)>
    where
        S: futures_util::Stream + Unpin,
    {
        use futures_util::{FutureExt as _, StreamExt as _};
        let item = match stream.next().now_or_never() {
            Some(item) => item?,
            None => {
                let item = stream.next().await?;
                self.since_stamp = Self::RESTAMP_EVERY;
                item
            }
        };
        if self.since_stamp >= Self::RESTAMP_EVERY {
            self.stamp_ns = now_ns();
            self.since_stamp = 0;
        }
        self.since_stamp += 1;
        Some((item, self.stamp_ns))
    }
}

/// Decodes one received message and hands it to the sink: the one path from wire bytes to sink
/// that every client shares.
pub(crate) fn deliver(sink: &mut dyn Sink, bytes: &[u8], received_ns: u64) -> Flow {
    match Event::decode(bytes) {
        Ok(event) => sink.event(&event, received_ns),
        Err(error) => sink.malformed(&error),
    }
}

/// Why a subscription failed. A malformed event is not among them: it goes to the sink.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The server's address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with an HTTP error.
    #[error("server answered HTTP {status}: {body}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The connection failed or broke protocol after it was established.
    #[error("{0}")]
    Protocol(String),
    /// The client was set up wrongly (a webhook without a secret, say).
    #[error("client configuration: {0}")]
    Config(String),
}

/// Connects a TCP stream from `bind` (if given) to `server`, with Nagle off: every transport
/// here sends small messages that must not wait for more.
pub(crate) async fn connect_tcp(
    server: SocketAddr,
    config: &ClientConfig,
) -> Result<TcpStream, ClientError> {
    let fail = |reason: String| ClientError::Connect {
        addr: server,
        reason,
    };
    let socket = match server {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| fail(e.to_string()))?;
    if let Some(ip) = config.bind {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| fail(format!("binding {ip}: {e}")))?;
    }
    let stream = tokio::time::timeout(config.connect_timeout, socket.connect(server))
        .await
        .map_err(|_| fail(format!("timed out after {:?}", config.connect_timeout)))?
        .map_err(|e| fail(e.to_string()))?;
    stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
    Ok(stream)
}

/// An HTTP/1.1 connection of one subscriber's own, as a browser tab or a service holds one:
/// connected from `config.bind` with Nagle off, and driven by a task of its own. Requests go
/// over it one after another (keep-alive); it needs no pool, proxy or resolver, which a
/// general-purpose client would carry per subscriber (and an `HTTP_PROXY` in the environment
/// cannot reroute it).
pub(crate) async fn http1_connect(
    server: SocketAddr,
    config: &ClientConfig,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>, ClientError>
{
    let stream = connect_tcp(server, config).await?;
    let handshake = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream));
    let (sender, connection) = tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| ClientError::Connect {
            addr: server,
            reason: format!(
                "HTTP handshake timed out after {:?}",
                config.connect_timeout
            ),
        })?
        .map_err(|e| ClientError::Connect {
            addr: server,
            reason: e.to_string(),
        })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "HTTP connection ended");
        }
    });
    Ok(sender)
}

/// A GET of `path` on `server`, with the headers a subscriber sends.
pub(crate) fn get_request(
    server: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<axum::http::Request<http_body_util::Empty<bytes::Bytes>>, ClientError> {
    let mut request = axum::http::Request::get(path).header("host", server.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(http_body_util::Empty::new())
        .map_err(|e| ClientError::Config(e.to_string()))
}

/// Serves an axum router on a listener until shutdown, with CORS open so a browser page from
/// any origin can `fetch` or `EventSource` the server (the benchmark has no secrets to guard).
pub(crate) async fn serve_http<L>(
    listener: L,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: fmt::Debug,
{
    let router = router.layer(tower_http::cors::CorsLayer::permissive());
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
