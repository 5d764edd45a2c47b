//! The contract every transport implements, and the one place that lists them.
//!
//! A transport is one folder: its `mod.rs` holds its declaration and framing, and each server
//! or client implementation is a file of its own beside it:
//!
//! - `SPEC`: its name, a line saying what it is, its [`Traits`], its colour, its settings (each
//!   a [`Setting`] with its default, declared there once), its standard interop client and its
//!   server and client implementations ([`ServerImpl`], [`ClientImpl`]; settings choose one);
//! - a server implementation: `serve(listener, hub, config, shutdown)` accepts subscribers on a
//!   listener the caller bound, hands each the published stream from the [`Hub`] (which also
//!   counts them), and returns once `shutdown` fires;
//! - a client implementation: `subscribe(target, config, sink)` connects, feeds every event it
//!   receives to the [`Sink`] with its receive time, and closes cleanly when the sink has seen
//!   enough or the server ends the stream;
//! - `frame(batch, out)`: what one subscriber's batch becomes in its framing, as its server
//!   writes it (before TLS and compression), which the component benches time;
//!
//! and one line in the `transports!` list below. [`Transport`] is the enum that list writes; it
//! only dispatches. Everything above this module (harness, metrics, report, recommend) talks to
//! `Transport` and its [`Spec`], never to a transport's folder.

pub mod client_stream;
pub mod compression;
pub mod credentials;
pub(crate) mod cursor;
pub mod endpoint;
mod http;
mod http1_client;
mod http1_server;
#[macro_use]
pub mod implementation;
mod length_prefixed;
pub mod linger;
pub mod listener;
pub mod multiplex;
mod per_event;
pub mod relay;
pub mod resume;
pub mod spec;
pub mod standard_webhooks;
pub mod storm;
mod target;
pub mod tls;
pub mod upstream;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::clock::now_ns;
use crate::event::{DecodeError, Event, Gap};
use crate::hub::{Batch, BatchLimit, Hub};
use crate::metrics::sockets::SocketCounters;

pub use client_stream::{ClientStream, ThrottledStream};
pub use credentials::{Credential, Credentials};
pub use http::{serve_http, serve_http1, Accept, Http1Engine, HttpSettings};
pub use listener::{TrackedListener, TrackedStream};
// Until every caller names `crate::settings` itself (the results and evidence readers).
pub use crate::settings;
pub use crate::settings::{Declared, Setting, SettingValues, Side};
pub use implementation::{ClientImpl, Implementation, ServerImpl, CLIENT_IMPL, SERVER_IMPL};
pub use spec::{Colour, Guarantee, KeepAlive, Outside, Redelivery, Requests, Spec, Traits};
pub use standard_webhooks::{Secret, Secrets};
pub use target::Target;

/// The settings of a transport whose subscribers hold a connection or a cursor that the server
/// can drop and they resume: its own settings, then the ones every such transport shares
/// (resume, reconnect grace, replay window, the drop, storm, outage, churn and slow-consumer
/// faults, TLS, two-way traffic), listed here once; `http` first adds compression. What `run` itself does around a
/// transport (the link emulator, a reverse proxy, restarting the server) is the harness's to
/// declare, not listed here.
macro_rules! resumable_settings {
    // An HTTP transport also takes compression.
    (http $(, $own:expr)* $(,)?) => {
        resumable_settings!(
            @carried [&$crate::transport::tls::TLS] $($own,)*
            &$crate::transport::compression::COMPRESSION,
        )
    };
    // QUIC is always TLS 1.3: no `tls` to turn it off.
    (quic $(, $own:expr)* $(,)?) => {
        resumable_settings!(@carried [] $($own,)*)
    };
    (@carried [$($tls:expr)?] $($own:expr),* $(,)?) => {
        &[
            $($own,)*
            &$crate::transport::resume::RESUME,
            &$crate::transport::resume::RECONNECT_GRACE,
            &$crate::transport::resume::REPLAY_WINDOW,
            &$crate::transport::listener::DROP_EVERY,
            &$crate::transport::storm::STORM_AFTER,
            &$crate::transport::storm::STORM_KIND,
            &$crate::transport::storm::STORM_LENGTH,
            &$crate::transport::resume::OUTAGE,
            &$crate::transport::resume::OUTAGE_AFTER,
            &$crate::transport::resume::CHURN,
            &$crate::transport::client_stream::SLOW_CONSUMER,
            $($tls,)?
            &$crate::transport::upstream::UPSTREAM_RATE,
            &$crate::transport::upstream::UPSTREAM_ECHO,
            &$crate::transport::upstream::UPSTREAM_DELAY,
        ]
    };
    ($($own:expr),* $(,)?) => {
        resumable_settings!(@carried [&$crate::transport::tls::TLS] $($own,)*)
    };
}

/// Declares the transports from one list: each entry is the enum variant and the module (folder)
/// that holds the transport's [`Spec`] (`SPEC`, with its server and client implementations)
/// and its framing. The macro writes the module declarations, the enum, [`Transport::ALL`]
/// and the dispatch, so nothing else in the crate lists transports.
macro_rules! transports {
    ($($variant:ident => $module:ident,)+) => {
        $(pub mod $module;)+

        /// Every transport pushbench measures (see [`Transport::spec`] for what each is).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Transport {
            $(
                #[doc = concat!("Declared in `transport/", stringify!($module), "/mod.rs`.")]
                $variant,
            )+
        }

        impl Transport {
            /// All transports, in report order (the order of the list).
            pub const ALL: &'static [Transport] = &[$(Transport::$variant),+];

            /// What this transport declares about itself.
            pub fn spec(self) -> &'static Spec {
                match self {
                    $(Transport::$variant => &$module::SPEC,)+
                }
            }

            /// Runs this transport's server on `listener` until `shutdown` fires: the
            /// implementation its settings choose.
            pub async fn serve(
                self,
                listener: TcpListener,
                hub: Arc<Hub>,
                config: ServerConfig,
                shutdown: CancellationToken,
            ) -> std::io::Result<()> {
                let implementation = self
                    .server_impl(&config.settings)
                    .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
                (implementation.serve)(listener, hub, config, shutdown).await
            }

            /// Subscribes to `target`, feeding `sink` until it stops or the stream ends: the
            /// implementation its settings choose.
            pub async fn subscribe(
                self,
                target: &Target,
                config: &ClientConfig,
                sink: &mut dyn Sink,
            ) -> Result<(), ClientError> {
                let implementation = self.client_impl(&config.settings).map_err(ClientError::Config)?;
                (implementation.subscribe)(target, config, sink).await
            }

            /// Appends to `out` what one subscriber's `batch` becomes in this transport's
            /// framing, as its server writes it (before TLS and compression): the server's
            /// own per-event cost, which `benches/components.rs` times for every transport.
            pub fn frame(self, batch: &Batch, out: &mut bytes::BytesMut) {
                match self {
                    $(Transport::$variant => $module::frame(batch, out),)+
                }
            }
        }
    };
}

// The list: adding a transport is its file and one line here.
transports! {
    Websocket => websocket,
    Sse => sse,
    SseH2 => sse_h2,
    Longpoll => longpoll,
    Poll => poll,
    Webhook => webhook,
    Grpc => grpc,
    Mqtt => mqtt,
    Webtransport => webtransport,
    Tcp => tcp,
}

impl Transport {
    /// The transport with this name (as in results), if there is one.
    pub fn named(name: &str) -> Option<Transport> {
        Transport::ALL.iter().copied().find(|t| t.name() == name)
    }

    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// What this transport is, apart from what it measures: the facts design rules test.
    pub fn traits(self) -> &'static Traits {
        &self.spec().traits
    }

    /// Every setting the transport's processes take: its declared ones, and the choice of
    /// implementation where it has more than one of a side.
    pub fn settings(self) -> Vec<&'static dyn Declared> {
        let spec = self.spec();
        let mut settings: Vec<&'static dyn Declared> = spec.settings.to_vec();
        if spec.servers.len() > 1 {
            settings.push(&SERVER_IMPL);
        }
        if spec.clients.len() > 1 {
            settings.push(&CLIENT_IMPL);
        }
        // Any transport may be served by a server pushbench did not write, where that
        // server's profile has subscribers of it (refused with the reason otherwise).
        settings.push(&crate::profile::SERVER);
        settings
    }

    /// Every transport's name, for messages that list the valid ones.
    pub fn names() -> String {
        let names: Vec<&str> = Transport::ALL.iter().map(|t| t.name()).collect();
        names.join(", ")
    }
}

/// Every declared setting once, in list order, with the transports that take it: a setting
/// of one transport's own, or one several share (such as `resume`, declared once in the file
/// that implements it and listed by each transport it applies to).
pub fn declared_settings() -> Vec<(&'static dyn Declared, Vec<Transport>)> {
    let mut declared: Vec<(&'static dyn Declared, Vec<Transport>)> = Vec::new();
    for &transport in Transport::ALL {
        for setting in transport.settings() {
            match declared
                .iter_mut()
                .find(|(s, _)| s.name() == setting.name())
            {
                Some((_, takers)) => takers.push(transport),
                None => declared.push((setting, vec![transport])),
            }
        }
    }
    declared
}

/// The declared setting with this name.
pub fn setting_named(name: &str) -> Option<&'static dyn Declared> {
    declared_settings()
        .into_iter()
        .map(|(setting, _)| setting)
        .find(|s| s.name() == name)
}

impl Serialize for Transport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Transport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Transport::named(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown transport {name:?}: expected one of {}",
                Transport::names()
            ))
        })
    }
}

impl clap::ValueEnum for Transport {
    fn value_variants<'a>() -> &'a [Self] {
        Transport::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.spec().summary))
    }
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
    /// How much one write or response may carry.
    pub batch: BatchLimit,
    /// hyper's settings for every HTTP transport's connections.
    #[serde(default)]
    pub http: HttpSettings,
    /// The transport's credentials (its secrets, and the consents its operator gave).
    #[serde(default)]
    pub credentials: Credentials,
    /// What hostile or careless clients may not do.
    #[serde(default)]
    pub limits: Limits,
    /// The transports' own settings (each transport reads its declared ones; absent: default).
    #[serde(default)]
    pub settings: SettingValues,
    /// The certificate the server serves with when TLS is on, and (for the webhook provider)
    /// the consumers' certificates it trusts.
    #[serde(default)]
    pub tls: tls::TlsMaterial,
    /// Counts connections and bytes at the server's accepted sockets (this process's own).
    #[serde(skip)]
    pub counters: Arc<SocketCounters>,
    /// Faults injected on purpose, to check that the measurement sees them.
    pub faults: Faults,
    /// Streams the server publishes where the workload has its events tagged with theirs
    /// (rooms, one per user), which each subscriber names when it subscribes; `None`: one
    /// broadcast stream.
    #[serde(default)]
    pub streams: Option<u64>,
    /// What subscribers send up, where they do (`None`: one-way), from the two-way settings
    /// and the stream's length.
    #[serde(default)]
    pub upstream: Option<crate::hub::UpstreamOptions>,
}

/// How often a quiet connection carries a keep-alive unless told (WebSocket pings, SSE
/// comments): the one default `serve`, `run` and `recommend` share.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Files a process keeps for itself besides its subscribers' sockets (listeners, files, its
/// pipes).
pub const RESERVED_FILES: u64 = 64;

/// What a server allows its clients, so that no client can hold it, fill it or turn it
/// against its network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Limits {
    /// Subscribers (connections, or registered webhook endpoints) at once; more are refused
    /// with 503 (HTTP), or closed (raw TCP). `None`: what one process can hold (its open-file
    /// limit, less what it keeps for itself: [`Limits::subscribers_per_process`]).
    pub max_subscribers: Option<usize>,
    /// How long one write to a subscriber may wait (on a reader that does not read) before the
    /// subscriber is dropped and counted.
    pub write_timeout: Duration,
}

impl Limits {
    /// Subscribers allowed at once in this process.
    pub fn subscriber_cap(&self) -> usize {
        self.max_subscribers
            .unwrap_or_else(Self::subscribers_per_process)
    }

    /// The most subscribers one process can hold: its open-file hard limit (every pushbench
    /// process raises its soft limit to it), less [`RESERVED_FILES`]. `run` plans how many
    /// processes a side needs by the same rule.
    pub fn subscribers_per_process() -> usize {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .maximum
            .unwrap_or(u64::MAX);
        usize::try_from(limit.saturating_sub(RESERVED_FILES))
            .unwrap_or(usize::MAX)
            .max(1)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_subscribers: None,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Faults a server can inject, so tests (and users) can check the measurement sees them.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Faults {
    /// No event is handed to a subscriber before it is this old, counted from its publication
    /// (a slow network or server).
    pub delivery_delay: Option<Duration>,
    /// The publisher stops for this long just before this event (a stalled sender).
    pub stall: Option<(u64, Duration)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            heartbeat: DEFAULT_HEARTBEAT,
            batch: BatchLimit::default(),
            http: HttpSettings::default(),
            credentials: Credentials::fresh(),
            limits: Limits::default(),
            settings: SettingValues::default(),
            tls: tls::TlsMaterial::default(),
            counters: Arc::default(),
            faults: Faults::default(),
            streams: None,
            upstream: None,
        }
    }
}

impl ServerConfig {
    /// The same config for a server of `spec`'s stream: where its workload has several
    /// streams, subscribers name theirs; where they send up, as many messages each as the
    /// stream lasts.
    pub fn serving(self, spec: &crate::event::StreamSpec) -> Self {
        Self {
            streams: spec.tagged().then_some(spec.streams),
            upstream: upstream::options(&self.settings, spec, self.limits.subscriber_cap()),
            ..self
        }
    }

    /// The defaults, for a server whose subscribers are on this machine (tests, benchmarks):
    /// with the consents a run on its own machine gives (consumers on loopback may be reached),
    /// and a self-signed certificate, which a transport that is always TLS (QUIC) serves with
    /// and its subscribers are given to trust.
    pub fn local() -> Self {
        Self {
            credentials: Credentials::fresh_local(),
            tls: tls::TlsMaterial::self_signed(&[]).unwrap_or_default(),
            ..Self::default()
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
    /// The transport's credentials the server's operator handed its subscribers.
    #[serde(default)]
    pub credentials: Credentials,
    /// The transports' own settings (each transport reads its declared ones; absent: default).
    #[serde(default)]
    pub settings: SettingValues,
    /// When TLS is on: the server's certificate to trust, and (for webhook consumers) the
    /// certificate to serve with.
    #[serde(default)]
    pub tls: tls::TlsMaterial,
    /// How long a connect (and handshake) may take.
    pub connect_timeout: Duration,
    /// How long one HTTP request may take; longer than the server's long-poll hold.
    pub request_timeout: Duration,
    /// Counts connections and bytes at sockets this side accepts (webhook consumers; this
    /// process's own).
    #[serde(skip)]
    pub counters: Arc<SocketCounters>,
    /// Reads no faster than this, bytes per second: the slow consumer of the slow-consumer
    /// fault. The load computes it from the stream and gives it to one subscriber only.
    #[serde(default)]
    pub read_rate: Option<u64>,
    /// The streams this subscriber follows, where the server publishes several (`None`: the
    /// one broadcast stream). Each transport names them in its own idiom when it subscribes.
    #[serde(default)]
    pub topics: Option<Vec<u32>>,
    /// Subscribers of the whole run, across every load process (what a rate across the
    /// population, such as the churn fault's, is shared out over).
    #[serde(default = "one")]
    pub population: usize,
    /// The messages this subscriber sends up, where it does (the load fills it in per
    /// subscriber from the two-way settings).
    #[serde(default)]
    pub upstream: Option<crate::upstream::Plan>,
    /// What stands in front of an endpoint this subscriber listens on (a webhook consumer's),
    /// where the load puts a bad link there.
    #[serde(skip)]
    pub relay: Option<relay::Relay>,
    /// Where a subscriber holding the whole stream keeps its connection until the others do
    /// (the load sets it; `None`: it closes at once).
    #[serde(skip)]
    pub linger: Option<Arc<linger::Linger>>,
}

fn one() -> usize {
    1
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            bind: None,
            credentials: Credentials::default(),
            settings: SettingValues::default(),
            tls: tls::TlsMaterial::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            counters: Arc::default(),
            read_rate: None,
            topics: None,
            population: 1,
            upstream: None,
            relay: None,
            linger: None,
        }
    }
}

impl ClientConfig {
    /// The streams this subscriber follows as the HTTP transports name them, `topics=1,5,9`
    /// (`None` for the one broadcast stream).
    pub(crate) fn topics_query(&self) -> Option<String> {
        self.topics
            .as_deref()
            .map(|topics| format!("topics={}", crate::workload::show_topics(topics)))
    }
}

/// Query parameters joined with `&`, leaving out the absent (`None` when all are).
pub(crate) fn join_query<const N: usize>(parts: [Option<String>; N]) -> Option<String> {
    let present: Vec<String> = parts.into_iter().flatten().collect();
    (!present.is_empty()).then(|| present.join("&"))
}

/// Whether a subscription should go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep receiving.
    Continue,
    /// Enough received: close the subscription cleanly.
    Stop,
}

/// One reconnection of a subscription, as its client saw it (monotonic ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconnected {
    /// When the client began the attempt that got through (after its backoff).
    pub attempt_ns: u64,
    /// When the subscription was established again.
    pub at_ns: u64,
    /// Attempts since the drop that ended before the subscription was established (refused
    /// with 503, closed, timed out).
    pub failed_attempts: u32,
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

    /// The subscription is established again after its connection dropped (or its subscriber
    /// left on purpose, for the churn or outage faults).
    fn reconnected(&mut self, reconnect: Reconnected) {
        let _ = reconnect;
    }

    /// A copy of a message some subscriber of its rooms sent up (perhaps this one) arrived at
    /// `received_ns`.
    fn copy(&mut self, message: &crate::upstream::Message<'_>, received_ns: u64) -> Flow {
        let _ = (message, received_ns);
        Flow::Continue
    }

    /// When the stream's schedule began, once this subscriber's first event said: where a
    /// subscriber's messages up are scheduled from.
    fn stream_origin(&self) -> Option<u64> {
        None
    }

    /// The server says these events are gone (it resumed the subscription from past its replay
    /// window): they will not arrive.
    fn gap(&mut self, gap: Gap);

    /// The subscriber was down for the outage fault from `start_ns` to `end_ns` (monotonic),
    /// so results can show when the fault was on.
    fn outage(&mut self, start_ns: u64, end_ns: u64) {
        let _ = (start_ns, end_ns);
    }
}

/// Receive times for clients that read a stream of messages (WebSocket frames, SSE events):
/// each message is stamped from the clock once it is in hand. Sharing one reading among the
/// messages that were ready without waiting would be cheaper, but "ready" may mean a read made
/// now found bytes that arrived since the last reading (after the client's task was held off
/// the CPU, say), and those would be stamped early: latency understated under load, even below
/// a link's planted delay. A reading costs tens of nanoseconds (the vDSO).
#[derive(Debug, Default)]
pub(crate) struct ArrivalClock;

impl ArrivalClock {
    pub(crate) fn new() -> Self {
        Self
    }

    /// The stream's next item with its receive time.
    pub(crate) async fn next<S>(&mut self, stream: &mut S) -> Option<(S::Item, u64)>
    where
        S: futures_util::Stream + Unpin,
    {
        use futures_util::StreamExt as _;
        let item = stream.next().await?;
        Some((item, now_ns()))
    }
}

/// Decodes one received message and hands it to the sink: the one path from wire bytes to sink
/// that every client shares. A message is an event, a copy of a message a subscriber sent up
/// (two-way traffic with the echo on) or, where a server resumed a subscription from past its
/// replay window, a [`Gap`] in its JSON form.
pub(crate) fn deliver(sink: &mut dyn Sink, bytes: &[u8], received_ns: u64) -> Flow {
    if let Some(copy) = crate::upstream::Message::decode(bytes) {
        return sink.copy(&copy, received_ns);
    }
    match Event::decode(bytes) {
        Ok(event) => sink.event(&event, received_ns),
        Err(error) => match Gap::decode(bytes) {
            Some(gap) => {
                sink.gap(gap);
                Flow::Continue
            }
            None => sink.malformed(&error),
        },
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

/// Distinct loopback source addresses (127.0.0.1 to 127.0.0.N) subscribers on one machine
/// are spread over, to stay clear of the ephemeral-port limit of one address; webhook
/// consumers listen on them, so a self-signed certificate names them all.
pub const LOOPBACK_SOURCES: usize = 16;

/// How one side opens connections: from which local address, within what time, and under TLS
/// or not. Every client connection goes through it (subscribers and the webhook provider
/// alike), so TLS, source addresses and timeouts are set in one place.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dialer<'a> {
    /// Local address to connect from.
    pub bind: Option<IpAddr>,
    /// How long a connect, with its TLS and HTTP handshakes, may take.
    pub timeout: Duration,
    /// TLS, when it is on: what to trust (and where its handshake times go).
    pub tls: Option<&'a tls::TlsMaterial>,
    /// Reads no faster than this, bytes per second (the slow consumer).
    pub read_rate: Option<u64>,
    /// The name the server's TLS certificate must carry; its IP address when absent.
    pub server_name: Option<&'a rustls::pki_types::ServerName<'static>>,
}

impl ClientConfig {
    /// How this subscriber connects.
    pub(crate) fn dialer(&self) -> Dialer<'_> {
        Dialer {
            bind: self.bind,
            timeout: self.connect_timeout,
            tls: tls::TLS.read(&self.settings).then_some(&self.tls),
            read_rate: self.read_rate,
            server_name: None,
        }
    }
}

impl Dialer<'_> {
    /// Whether connections are TLS (so URLs are https:// and wss://).
    pub(crate) fn secure(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects a TCP stream to `server`, with Nagle off (every transport here sends small
    /// messages that must not wait for more), then TLS asking for `alpn` when it is on.
    ///
    /// Boxed, as [`Dialer::http1`] is, for the transports that speak over the raw stream.
    pub(crate) fn connect<'a>(
        &'a self,
        server: SocketAddr,
        alpn: &'a [&'a [u8]],
    ) -> Pin<Box<dyn Future<Output = Result<ClientStream, ClientError>> + Send + 'a>> {
        Box::pin(self.connect_inline(server, alpn))
    }

    async fn connect_inline(
        &self,
        server: SocketAddr,
        alpn: &[&[u8]],
    ) -> Result<ClientStream, ClientError> {
        let fail = |reason: String| ClientError::Connect {
            addr: server,
            reason,
        };
        let socket = match server {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| fail(e.to_string()))?;
        if let Some(ip) = self.bind {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| fail(format!("binding {ip}: {e}")))?;
        }
        let stream = tokio::time::timeout(self.timeout, socket.connect(server))
            .await
            .map_err(|_| fail(format!("timed out after {:?}", self.timeout)))?
            .map_err(|e| fail(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        let stream = ThrottledStream::new(stream, self.read_rate);
        let Some(material) = self.tls else {
            return Ok(tls::MaybeTls::Plain(stream));
        };
        let name = match self.server_name {
            Some(name) => name.clone(),
            None => rustls::pki_types::ServerName::IpAddress(server.ip().into()),
        };
        let secured = tokio::time::timeout(self.timeout, material.connect(name, stream, alpn))
            .await
            .map_err(|_| fail(format!("TLS handshake timed out after {:?}", self.timeout)))?
            .map_err(|e| fail(format!("TLS: {e}")))?;
        Ok(tls::MaybeTls::Tls(Box::new(secured)))
    }

    /// A hyper HTTP/1.1 connection of one client's own (webhook deliveries, messages sent up,
    /// eventsource-client's row; a subscriber's streamed or held GETs go on the leaner
    /// [`http1_client::Http1Connection`]), driven by a task of its own. Requests go over it one after another (keep-alive); it
    /// needs no pool, proxy or resolver, which a general-purpose client would carry per
    /// subscriber (and an `HTTP_PROXY` in the environment cannot reroute it).
    ///
    /// Boxed, so the connecting (TCP, TLS, the HTTP handshake) takes room only while it lasts:
    /// inline, its state would size the subscriber's task for the stream's whole life.
    pub(crate) fn http1<B>(
        &self,
        server: SocketAddr,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<hyper::client::conn::http1::SendRequest<B>, ClientError>>
                + Send
                + '_,
        >,
    >
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Box::pin(async move {
            let stream = self.connect_inline(server, tls::ALPN_HTTP1).await?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let handshake = hyper::client::conn::http1::handshake(io);
            self.drive(server, "HTTP", handshake).await
        })
    }

    /// An HTTP/2 connection (h2c with prior knowledge, or h2 under TLS by ALPN), driven by a
    /// task of its own: requests go over it at once, each a stream of its own, so several
    /// subscribers may share it.
    /// Boxed, as [`Dialer::http1`] is.
    pub(crate) fn http2<B>(
        &self,
        server: SocketAddr,
    ) -> Pin<
        Box<
            dyn Future<Output = Result<hyper::client::conn::http2::SendRequest<B>, ClientError>>
                + Send
                + '_,
        >,
    >
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Box::pin(async move {
            let stream = self.connect_inline(server, tls::ALPN_H2).await?;
            let handshake = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            );
            self.drive(server, "HTTP/2", handshake).await
        })
    }

    /// Finishes an HTTP `handshake` within the connect timeout and drives its connection in a
    /// task of its own; the sender is what requests go through.
    async fn drive<S, C>(
        &self,
        server: SocketAddr,
        what: &str,
        handshake: impl std::future::Future<Output = hyper::Result<(S, C)>>,
    ) -> Result<S, ClientError>
    where
        C: std::future::Future<Output = hyper::Result<()>> + Send + 'static,
    {
        let (sender, connection) = tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| ClientError::Connect {
                addr: server,
                reason: format!("{what} handshake timed out after {:?}", self.timeout),
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
}

/// A subscriber's raw connection to `server` (no ALPN): TCP, under TLS when it is on.
pub(crate) async fn connect_tcp(
    server: SocketAddr,
    config: &ClientConfig,
) -> Result<ClientStream, ClientError> {
    config.dialer().connect(server, &[]).await
}

/// A GET of `path` on the server named `authority` (its `Host`), with the headers a subscriber
/// sends.
pub(crate) fn get_request(
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<axum::http::Request<http_body_util::Empty<bytes::Bytes>>, ClientError> {
    let mut request = axum::http::Request::get(path).header("host", authority);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(http_body_util::Empty::new())
        .map_err(|e| ClientError::Config(e.to_string()))
}
