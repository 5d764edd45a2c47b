//! Webhooks: the provider (server side) keeps endpoints registered with
//! `POST /subscriptions {"url": "..."}` and POSTs every event to each, in order, signed with
//! Standard Webhooks headers and retried with exponential backoff and jitter (or, with
//! `--webhook-method get`, GETs it with the event in the query string, refusing an event whose
//! URL would pass `--webhook-url-limit`); the consumer (client side) is an HTTP server of its
//! own that verifies the signature (401 if it fails), drops repeats by `webhook-id`, and
//! answers 2xx at once.
//!
//! Each consumer listens on its own port, as real consumers are separate hosts, so the provider
//! cannot share one connection among them. The provider holds one HTTP/1.1 connection per
//! endpoint (or opens one per delivery), to the address checked at registration
//! ([`Endpoint`]), and follows no redirects. Registration needs the token `serve` printed
//! (unless registration is open), a JSON body, and a free place under the subscriber cap.
//! Signing is [`super::standard_webhooks`]; with TLS on, endpoints are https://.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::endpoint::Endpoint;
use super::resume::{Outage, OUTAGE, OUTAGE_AFTER};
use super::compression::{decode_body, Compression, COMPRESSION};
use super::per_event::PerEvent;
use super::standard_webhooks::{unix_now, Secrets, SharedSignatures};
use super::tls::{TlsMaterial, TLS};
use super::{
    deliver, serve_http, ClientConfig, ClientError, Colour, KeepAlive, Dialer, Flow, HttpSettings,
    Redelivery, Requests, ServerConfig, Setting, SettingValues, Side, Sink, Spec,
    TrackedListener, Traits,
};
use crate::clock::now_ns;
use crate::event::MAX_EVENT_BYTES;
use crate::hub::{Batch, BatchLimit, Hub, SubscriberGuard};

/// A fresh connection per delivery (a TCP handshake each) or kept-alive ones.
pub static NEW_CONNECTION: Setting<bool> = Setting {
    name: "webhook-new-connection",
    help: "Open a new connection for every delivery instead of keeping connections alive, as \
           many real providers do",
    side: Side::Server,
    default: false,
    min: false,
};

/// Delivery attempts per event before the provider gives up on it.
pub static ATTEMPTS: Setting<u64> = Setting {
    name: "webhook-attempts",
    help: "Delivery attempts per event before the provider gives up on it",
    side: Side::Server,
    default: 8,
    min: 1,
};

/// How far a delivery's timestamp may be from the consumer's clock, either way.
pub static TOLERANCE: Setting<Duration> = Setting {
    name: "webhook-tolerance",
    help: "How far a delivery's webhook-timestamp may be from the consumer's clock, past or \
           future, before it is refused with 401 (Standard Webhooks' default: 5 minutes)",
    side: Side::Client,
    default: Duration::from_secs(300),
    min: Duration::from_secs(1),
};

/// How the provider sends each event.
pub static METHOD: Setting<Method> = Setting {
    name: "webhook-method",
    help: "post: the event is the request body; get: the event goes in the query string \
           (`?event=` and the event's base64url), signed in the same headers, as some providers \
           send it; an event whose URL would pass --webhook-url-limit is refused",
    side: Side::Server,
    default: Method::Post,
    min: Method::Post,
};

/// The longest URL the provider sends with GET.
pub static URL_LIMIT: Setting<u64> = Setting {
    name: "webhook-url-limit",
    help: "With --webhook-method get: the longest URL in bytes the provider sends (8 KiB, what \
           common servers and proxies accept by default); an event whose URL would be longer is \
           refused with the reason and counted as abandoned",
    side: Side::Server,
    default: 8192,
    min: 64,
};

/// The HTTP methods a provider sends events with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum Method {
    /// The event is the body.
    Post,
    /// The event is in the query string.
    Get,
}

impl crate::settings::Value for Method {
    const KIND: &'static str = "post|get";

    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "post" => Ok(Method::Post),
            "get" => Ok(Method::Get),
            other => Err(format!("unknown method {other:?}: expected post or get")),
        }
    }

    fn show(self) -> String {
        match self {
            Method::Post => "post",
            Method::Get => "get",
        }
        .into()
    }
}

/// The query parameter a GET delivery carries the event in.
const EVENT_PARAMETER: &str = "event";

/// The request target of a GET delivery: the endpoint's own, with the event appended to its
/// query as base64url (no padding), which needs no escaping in a URL.
fn target_with_event(target: &str, body: &[u8]) -> String {
    use base64::Engine as _;
    let joiner = if target.contains('?') { '&' } else { '?' };
    let mut url = String::with_capacity(target.len() + body.len() * 4 / 3 + 8);
    url.push_str(target);
    url.push(joiner);
    url.push_str(EVENT_PARAMETER);
    url.push('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(body, &mut url);
    url
}

/// The event a GET delivery carried, from its query string.
fn event_from_query(query: Option<&str>) -> Result<Bytes, String> {
    use base64::Engine as _;
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix(EVENT_PARAMETER)?.strip_prefix('='))
        .ok_or_else(|| format!("no {EVENT_PARAMETER}= in the query string"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .map(Bytes::from)
        .map_err(|e| format!("{EVENT_PARAMETER}= is not base64url: {e}"))
}

/// The length of the URL a GET delivery of `body` to `endpoint` would have.
fn get_url_len(endpoint: &Endpoint, body: &[u8]) -> usize {
    let scheme = if endpoint.secure { "https://" } else { "http://" };
    scheme.len()
        + endpoint.host.len()
        + endpoint.target.len()
        + 1
        + EVENT_PARAMETER.len()
        + 1
        + body.len().div_ceil(3) * 4
}

/// One-way POSTs (or GETs) to the consumer's own URL; the provider retries what was not
/// acknowledged.
pub static SPEC: Spec = Spec {
    name: "webhook",
    summary: "Webhooks: signed HTTP POSTs (or GETs) to registered consumer endpoints",
    colour: Colour(213, 94, 0),
    cursor_path: None,
    settings: &[
        &METHOD,
        &URL_LIMIT,
        &NEW_CONNECTION,
        &ATTEMPTS,
        &RETRY_BASE,
        &RETRY_FACTOR,
        &RETRY_CAP,
        &RETRY_SCHEDULE,
        &TOLERANCE,
        &OUTAGE,
        &OUTAGE_AFTER,
        &TLS,
        &COMPRESSION,
    ],
    outside: super::spec::all_in_serve,
    traits: Traits {
        duplex: false,
        browser_api: None,
        needs_inbound_http: true,
        holds_connection: false,
        needs_upgrade: false,
        streams_response: false,
        http: true,
        multiplexed: false,
        keep_alive: KeepAlive::Requests,
        requests: Requests::PerEvent,
        redelivery: Redelivery::Retries(
            "the provider retries unacknowledged POSTs on its schedule (exponential backoff \
             with full jitter, or Standard Webhooks'), then drops the event (counted as \
             abandoned)",
            retry_span,
        ),
        floor: false,
    },
};

/// The ceiling of the wait before the first retry.
pub static RETRY_BASE: Setting<Duration> = Setting {
    name: "webhook-retry-base",
    help: "Ceiling of the random wait before the provider's first retry of an event",
    side: Side::Server,
    default: Duration::from_millis(50),
    min: Duration::ZERO,
};

/// How the ceiling grows from one retry to the next.
pub static RETRY_FACTOR: Setting<u64> = Setting {
    name: "webhook-retry-factor",
    help: "Factor the retry wait's ceiling grows by with each further attempt",
    side: Side::Server,
    default: 2,
    min: 1,
};

/// The ceiling never grows past this.
pub static RETRY_CAP: Setting<Duration> = Setting {
    name: "webhook-retry-cap",
    help: "Largest ceiling of the random wait between retries",
    side: Side::Server,
    default: Duration::from_secs(5),
    min: Duration::ZERO,
};

/// Which retry schedule the provider follows.
pub static RETRY_SCHEDULE: Setting<RetryKind> = Setting {
    name: "webhook-retry-schedule",
    help: "exponential: backoff with full jitter from --webhook-retry-base by \
           --webhook-retry-factor up to --webhook-retry-cap, --webhook-attempts in all; \
           standard-webhooks: the Standard Webhooks schedule (5 s, 5 min, 30 min, 2 h, 5 h, \
           10 h, 10 h after the first attempt) scaled down a thousandfold for benchmarks",
    side: Side::Server,
    default: RetryKind::Exponential,
    min: RetryKind::Exponential,
};

/// The kinds of retry schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum RetryKind {
    /// Exponential backoff with full jitter, configured by the other retry settings.
    Exponential,
    /// The Standard Webhooks schedule, a thousand times faster.
    StandardWebhooks,
}

impl crate::settings::Value for RetryKind {
    const KIND: &'static str = "exponential|standard-webhooks";

    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "exponential" => Ok(RetryKind::Exponential),
            "standard-webhooks" => Ok(RetryKind::StandardWebhooks),
            other => Err(format!(
                "unknown retry schedule {other:?}: expected exponential or standard-webhooks"
            )),
        }
    }

    fn show(self) -> String {
        match self {
            RetryKind::Exponential => "exponential",
            RetryKind::StandardWebhooks => "standard-webhooks",
        }
        .into()
    }
}

/// The Standard Webhooks retry schedule, seconds after the attempt before, for each retry.
const STANDARD_WEBHOOKS_SECS: [u64; 7] = [5, 300, 1800, 7200, 18_000, 36_000, 36_000];
/// How much faster than the real one the benchmark runs the Standard Webhooks schedule.
const STANDARD_WEBHOOKS_SCALE: u32 = 1000;

/// The provider's retry schedule: exponential backoff with full jitter (a random wait up to a
/// ceiling that grows by `factor` from `base` to `cap`), `attempts` in all; or the Standard
/// Webhooks schedule, scaled down, its 8 attempts in all.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    kind: RetryKind,
    attempts: u32,
    base: Duration,
    factor: u32,
    cap: Duration,
}

impl Schedule {
    fn of(settings: &SettingValues) -> Self {
        let kind = RETRY_SCHEDULE.read(settings);
        let attempts = match kind {
            RetryKind::Exponential => u32::try_from(ATTEMPTS.read(settings)).unwrap_or(u32::MAX),
            RetryKind::StandardWebhooks => STANDARD_WEBHOOKS_SECS.len() as u32 + 1,
        };
        Self {
            kind,
            attempts,
            base: RETRY_BASE.read(settings),
            factor: u32::try_from(RETRY_FACTOR.read(settings)).unwrap_or(u32::MAX),
            cap: RETRY_CAP.read(settings),
        }
    }

    /// The ceiling of the wait before attempt `attempt` (1 for the first retry); for the
    /// Standard Webhooks schedule, the wait itself.
    fn ceiling(&self, attempt: u32) -> Duration {
        if self.kind == RetryKind::StandardWebhooks {
            let index = (attempt.max(1) as usize - 1).min(STANDARD_WEBHOOKS_SECS.len() - 1);
            return Duration::from_secs(STANDARD_WEBHOOKS_SECS[index]) / STANDARD_WEBHOOKS_SCALE;
        }
        let growth = f64::from(self.factor).powi(attempt.saturating_sub(1).min(64) as i32);
        self.base.mul_f64(growth.min(1e9)).min(self.cap)
    }

    /// The most all retries of one event can wait in all: the sum of the ceilings (with full
    /// jitter the waits are random below them, so half that on average).
    fn span(&self) -> Duration {
        (1..self.attempts.max(1)).map(|attempt| self.ceiling(attempt)).sum()
    }

    /// A random wait up to the ceiling ("full jitter"), so retries from many endpoints spread
    /// out instead of arriving together; the Standard Webhooks schedule's fixed wait.
    fn delay(&self, attempt: u32) -> Duration {
        match self.kind {
            RetryKind::Exponential => self.ceiling(attempt).mul_f64(rand::random::<f64>()),
            RetryKind::StandardWebhooks => self.ceiling(attempt),
        }
    }
}

/// The longest the provider keeps retrying one event under `settings` (see
/// [`Redelivery::Retries`]).
fn retry_span(settings: &SettingValues) -> Duration {
    Schedule::of(settings).span()
}

// ---------------------------------------------------------------------------------------------
// Provider (server side)

#[derive(Clone)]
struct Provider {
    hub: Arc<Hub>,
    signatures: Arc<SharedSignatures>,
    /// How bodies are compressed (`Content-Encoding`), each once per event.
    compression: Compression,
    compressed: Arc<PerEvent<(), Bytes>>,
    batch: BatchLimit,
    schedule: Schedule,
    next_endpoint: Arc<AtomicU64>,
    /// A fresh connection for every delivery.
    new_connection: bool,
    /// The consumers' certificates, for https endpoints.
    tls: Arc<TlsMaterial>,
    /// Who may register, and how many.
    gate: Arc<Gate>,
    /// POST the event, or GET it in the query string.
    method: Method,
    /// The longest URL a GET delivery may have.
    url_limit: usize,
}

/// Who may register endpoints: the holder of the token (when one is set), and no more than
/// `cap` of them, each URL checked ([`Endpoint::check`]).
struct Gate {
    token: Option<String>,
    allow_private_targets: bool,
    cap: usize,
    registered: AtomicU64,
}

/// A consumer's registration.
#[derive(Deserialize)]
struct Registration {
    url: String,
}

/// Serves `POST /subscriptions` on `listener` and delivers to every registered endpoint until
/// `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Registrations are not deliveries: their bytes are not counted (the consumers count the
    // deliveries' bytes where they accept them), and they are not subscribers until accepted.
    let mut listener = TrackedListener::new(listener, None, Arc::default());
    if TLS.read(&config.settings) {
        listener = listener.with_tls(&config.tls)?;
    }
    let method = METHOD.read(&config.settings);
    let compression = COMPRESSION.read(&config.settings);
    if method == Method::Get && compression != Compression::Off {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} get sends no body, so there is nothing to compress: use --{} off",
                METHOD.name, COMPRESSION.name
            ),
        ));
    }
    let provider = Provider {
        hub,
        signatures: Arc::new(SharedSignatures::new(config.webhook_secret)),
        compression,
        compressed: Arc::default(),
        batch: config.batch,
        schedule: Schedule::of(&config.settings),
        next_endpoint: Arc::new(AtomicU64::new(0)),
        new_connection: NEW_CONNECTION.read(&config.settings),
        tls: Arc::new(config.tls),
        gate: Arc::new(Gate {
            token: config.limits.registration_token.clone(),
            allow_private_targets: config.limits.allow_private_targets,
            cap: config.limits.subscriber_cap(),
            registered: AtomicU64::new(0),
        }),
        method,
        url_limit: usize::try_from(URL_LIMIT.read(&config.settings)).unwrap_or(usize::MAX),
    };
    let router = Router::new()
        .route("/subscriptions", post(register))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(provider);
    serve_http(listener, router, config.http, shutdown).await
}

/// An answer with a reason, as text.
fn refuse(status: StatusCode, why: String) -> Response {
    (status, format!("{why}\n")).into_response()
}

async fn register(State(provider): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    let gate = &provider.gate;
    if let Some(token) = &gate.token {
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            let why = "registration needs `Authorization: Bearer TOKEN`, the token \
                       `pushbench serve` printed"
                .to_owned();
            return refuse(StatusCode::UNAUTHORIZED, why);
        }
    }
    // JSON only: a browser cannot send it cross-origin without a preflight, which CORS refuses
    // for anything but GET, so no web page can register endpoints behind a user's back.
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        let why = "registration must be Content-Type: application/json".to_owned();
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, why);
    }
    let registration: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("invalid registration: {e}; expected {{\"url\": \"http://...\"}}");
            return refuse(StatusCode::BAD_REQUEST, why);
        }
    };
    let endpoint = match Endpoint::check(&registration.url, gate.allow_private_targets).await {
        Ok(endpoint) => endpoint,
        Err(why) => {
            let why = format!("endpoint {:?} refused: {why}", registration.url);
            return refuse(StatusCode::BAD_REQUEST, why);
        }
    };
    if endpoint.secure && provider.tls.trusted_pem.is_none() {
        let why = "https endpoints need their certificate trusted by the provider (--ca)";
        return refuse(StatusCode::BAD_REQUEST, why.to_owned());
    }
    if gate.registered.fetch_add(1, Ordering::Relaxed) >= gate.cap as u64 {
        gate.registered.fetch_sub(1, Ordering::Relaxed);
        let why = format!("at most {} endpoints may register (--max-subscribers)", gate.cap);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    let id = format!(
        "ep_{}",
        provider.next_endpoint.fetch_add(1, Ordering::Relaxed)
    );
    let answer = serde_json::json!({ "id": id, "url": endpoint.url.as_str() });
    // The endpoint counts as a subscriber until every event has been delivered to it.
    let guard = provider.hub.join();
    tokio::spawn(deliver_stream(provider, endpoint, guard));
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// Compares a presented token with the real one in time that does not depend on where they
/// differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The provider's connection to one endpoint, kept between deliveries unless every delivery
/// opens its own.
type Connection = Option<SendRequest<Full<Bytes>>>;

/// A batch as the provider's POSTs to one endpoint: each event's Standard Webhooks headers
/// (signed: one endpoint shares no signature) and its body; the request line and the other
/// headers are hyper's, the same for every event.
pub(crate) fn frame(batch: &Batch, out: &mut bytes::BytesMut) {
    static SECRETS: std::sync::OnceLock<Secrets> = std::sync::OnceLock::new();
    let secrets = SECRETS.get_or_init(Secrets::generate);
    let timestamp = unix_now();
    for (seq, body) in batch.iter() {
        let id = format!("msg_{seq}");
        let signature = secrets.sign(&id, timestamp, body);
        let head = format!(
            "webhook-id: {id}\r\nwebhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\n\r\n"
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body);
    }
}

/// Delivers the whole stream to one endpoint, one event at a time so it arrives in order.
async fn deliver_stream(provider: Provider, endpoint: Endpoint, _guard: SubscriberGuard) {
    let mut reader = provider.hub.reader(0);
    let mut connection: Connection = None;
    while let Some(batch) = reader.next_batch(provider.batch).await {
        // An endpoint so far behind that the replay window let its events go: the provider
        // can never send them, so they are abandoned, and counted.
        if let Some(gap) = batch.gap {
            provider.hub.abandoned_many(gap.count);
        }
        for (seq, body) in batch.iter() {
            if !deliver_event(&provider, &endpoint, &mut connection, seq, body).await {
                // Counted, so the results show what the schedule gave up on.
                provider.hub.abandoned_many(1);
                tracing::debug!(url = %endpoint.url, seq, attempts = provider.schedule.attempts, "webhook delivery abandoned");
            }
        }
    }
}

/// How long one delivery attempt (connect, send, answer) may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs one event until a 2xx answer or the attempts run out; `true` if delivered. A
/// redirect is an answer like any other non-2xx: not followed.
async fn deliver_event(
    provider: &Provider,
    endpoint: &Endpoint,
    connection: &mut Connection,
    seq: u64,
    body: &Bytes,
) -> bool {
    // An event too large for a URL can never be sent by GET: refused at once, with the
    // reason, so the results say where GET stops working.
    if provider.method == Method::Get {
        let length = get_url_len(endpoint, body);
        if length > provider.url_limit {
            provider.hub.refuse(format!(
                "{} get: event {seq} would make a URL of {length} B, over the {} B limit \
                 (--{})",
                METHOD.name, provider.url_limit, URL_LIMIT.name
            ));
            return false;
        }
    }
    // The same id on every attempt, so the consumer can drop repeats.
    let id = format!("msg_{seq}");
    for attempt in 0..provider.schedule.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(provider.schedule.delay(attempt)).await;
            provider.hub.retried();
        }
        let sent = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            attempt_once(provider, endpoint, connection, (seq, &id), body),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")));
        if provider.new_connection {
            // Closed, so the next delivery opens its own.
            *connection = None;
        }
        match sent {
            Ok(status) if status.is_success() => return true,
            Ok(status) => tracing::debug!(url = %endpoint.url, seq, %status, "webhook refused"),
            Err(error) => {
                // Whatever broke, the next attempt starts on a fresh connection.
                *connection = None;
                tracing::debug!(url = %endpoint.url, seq, %error, "webhook failed");
            }
        }
    }
    false
}

/// One signed POST over the endpoint's connection (opened first if there is none).
async fn attempt_once(
    provider: &Provider,
    endpoint: &Endpoint,
    connection: &mut Connection,
    (seq, id): (u64, &str),
    body: &Bytes,
) -> Result<StatusCode, String> {
    let sender = match connection {
        Some(sender) if !sender.is_closed() => sender,
        _ => {
            let dialer = Dialer {
                bind: None,
                timeout: ATTEMPT_TIMEOUT,
                tls: endpoint.secure.then_some(&*provider.tls),
                read_rate: None,
                server_name: Some(&endpoint.server_name),
            };
            connection.insert(dialer.http1(endpoint.addr).await.map_err(|e| e.to_string())?)
        }
    };
    let timestamp = unix_now();
    // The signature covers the event itself (before compression, or before its base64url in a
    // GET's query): the consumer verifies what it decoded.
    let signature = provider.signatures.sign(seq, id, timestamp, body);
    let request = match provider.method {
        Method::Post => axum::http::Request::post(&endpoint.target),
        Method::Get => axum::http::Request::get(target_with_event(&endpoint.target, body)),
    };
    let mut request = request
        .header("host", &endpoint.host)
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp)
        .header("webhook-signature", signature);
    let body = match provider.method {
        Method::Get => Bytes::new(),
        Method::Post => {
            request = request.header("content-type", "application/json");
            if let Some((name, value)) = provider.compression.content_encoding() {
                request = request.header(name, value);
            }
            // Uncompressed, the hub's shared bytes go as they are: no ring, no lock per
            // delivery.
            match provider.compression {
                Compression::Off => body.clone(),
                compression => provider
                    .compressed
                    .get_or_make(seq, (), || compression.compress(body.clone())),
            }
        }
    };
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let answer = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = answer.status();
    // Read the answer to its end so the connection is ready for the next delivery.
    answer.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(status)
}

// ---------------------------------------------------------------------------------------------
// Consumer (client side)

/// A delivery accepted by the consumer, on its way to the sink.
struct Accepted {
    received_ns: u64,
    body: Bytes,
}

struct ConsumerState {
    secrets: Secrets,
    /// How far a delivery's timestamp may be from now, either way.
    tolerance: Duration,
    /// `webhook-id`s passed on (true) or being passed on (false): a retry of one passed on is
    /// acknowledged but not passed on again; one still on its way is asked to come back later.
    seen: Mutex<HashMap<String, bool>>,
    accepted: mpsc::Sender<Accepted>,
    /// The consumer outage fault, if planned: the endpoint answers 503 while it lasts.
    outage: Mutex<Option<Outage>>,
}

impl ConsumerState {
    /// Whether the endpoint is down (the outage fault) at `now_ns`; a delivery that gets in
    /// starts the outage's clock.
    fn down_at(&self, now_ns: u64) -> bool {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        let Some(outage) = outage.as_mut() else {
            return false;
        };
        let down = outage
            .window_ns()
            .is_some_and(|(start, end)| (start..end).contains(&now_ns));
        if !down {
            outage.event_at(now_ns);
        }
        down
    }
}

/// A webhook consumer bound to its own address, not yet registered with a provider.
pub struct Consumer {
    listener: TcpListener,
    /// The subscriber's settings: its counters, TLS, and how it reaches the provider.
    config: ClientConfig,
    state: Arc<ConsumerState>,
    deliveries: mpsc::Receiver<Accepted>,
}

impl Consumer {
    /// Binds a consumer on `config.bind` (default 127.0.0.1), on a port of its own.
    pub async fn bind(config: &ClientConfig) -> Result<Self, ClientError> {
        let secrets = config.webhook_secret.clone().ok_or_else(|| {
            ClientError::Config(
                "a webhook consumer needs the provider's secret (--webhook-secret-file or \
                 PUSHBENCH_WEBHOOK_SECRET)"
                    .into(),
            )
        })?;
        let ip = config.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let listener = TcpListener::bind((ip, 0))
            .await
            .map_err(|e| ClientError::Config(format!("cannot listen on {ip}: {e}")))?;
        let (accepted, deliveries) = mpsc::channel(1024);
        let state = Arc::new(ConsumerState {
            secrets,
            tolerance: TOLERANCE.read(&config.settings),
            seen: Mutex::new(HashMap::new()),
            accepted,
            outage: Mutex::new(Outage::planned(&config.settings)),
        });
        Ok(Self {
            listener,
            config: config.clone(),
            state,
            deliveries,
        })
    }

    /// The URL the provider should POST to: https:// when TLS is on.
    pub fn url(&self) -> String {
        let scheme = if self.config.dialer().secure() { "https" } else { "http" };
        match self.listener.local_addr() {
            Ok(addr) => format!("{scheme}://{addr}/webhook"),
            Err(_) => String::new(),
        }
    }

    /// Registers with the provider at `server` and feeds accepted deliveries to the sink until
    /// it stops; then stops listening.
    pub async fn run(self, server: SocketAddr, sink: &mut dyn Sink) -> Result<(), ClientError> {
        let url = self.url();
        let Consumer {
            listener,
            config,
            state,
            mut deliveries,
        } = self;
        let state_for_outage = Arc::clone(&state);
        let router = Router::new()
            .route("/webhook", post(receive).get(receive_in_query))
            .layer(DefaultBodyLimit::max(MAX_EVENT_BYTES))
            .with_state(state);
        let shutdown = CancellationToken::new();
        // The consumer accepts the provider's connections, so it is where webhook bytes are
        // counted.
        let mut listener = TrackedListener::new(listener, None, Arc::clone(&config.counters));
        if config.dialer().secure() {
            listener = listener.with_tls(&config.tls).map_err(|e| {
                ClientError::Config(format!("a webhook consumer cannot serve HTTPS: {e}"))
            })?;
        }
        let serving = tokio::spawn(serve_http(
            listener,
            router,
            HttpSettings::default(),
            shutdown.clone(),
        ));

        let result = async {
            register_with(server, &config, &url).await?;
            sink.connected(now_ns());
            while let Some(accepted) = deliveries.recv().await {
                if deliver(sink, &accepted.body, accepted.received_ns) == Flow::Stop {
                    break;
                }
            }
            Ok(())
        }
        .await;
        shutdown.cancel();
        let _ = serving.await;
        // The endpoint's outage, if it began, is part of what the subscriber went through.
        let outage = *state_for_outage
            .outage
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((start, end)) = outage.and_then(|o| o.window_ns()) {
            if start < now_ns() {
                sink.outage(start, end.min(now_ns()));
            }
        }
        result
    }
}

/// `POST /subscriptions` on the provider, with its registration token when there is one;
/// anything but 201 fails the subscription.
async fn register_with(
    server: SocketAddr,
    config: &ClientConfig,
    url: &str,
) -> Result<(), ClientError> {
    let broken = |e: hyper::Error| ClientError::Protocol(format!("registering: {e}"));
    let mut sender = config.dialer().http1(server).await?;
    let body = serde_json::json!({ "url": url }).to_string();
    let mut request = axum::http::Request::post("/subscriptions")
        .header("host", server.to_string())
        .header("content-type", "application/json");
    if let Some(token) = &config.registration_token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let exchange = async {
        sender.ready().await.map_err(broken)?;
        let answer = sender.send_request(request).await.map_err(broken)?;
        let status = answer.status();
        let body = answer.into_body().collect().await.map_err(broken)?.to_bytes();
        Ok::<_, ClientError>((status, body))
    };
    let (status, body) = tokio::time::timeout(config.request_timeout, exchange)
        .await
        .map_err(|_| ClientError::Protocol("registering: no answer in time".into()))??;
    if status != StatusCode::CREATED {
        return Err(ClientError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(())
}

/// A POSTed delivery: the event is the body (compressed or not).
async fn receive(
    State(state): State<Arc<ConsumerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_ns = now_ns();
    // Compressed or not, the signature is over the decoded body.
    match decode_body(&headers, body) {
        Ok(body) => accept(state, headers, body, received_ns).await,
        Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    }
}

/// A delivery by GET: the event is in the query string.
async fn receive_in_query(
    State(state): State<Arc<ConsumerState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let received_ns = now_ns();
    match event_from_query(query.as_deref()) {
        Ok(body) => accept(state, headers, body, received_ns).await,
        Err(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response(),
    }
}

/// Verifies a delivered event, drops repeats, and passes it on.
async fn accept(
    state: Arc<ConsumerState>,
    headers: HeaderMap,
    body: Bytes,
    received_ns: u64,
) -> Response {
    if state.down_at(received_ns) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down (the outage fault)\n").into_response();
    }
    if let Err(error) = state.secrets.verify(&headers, &body, unix_now(), state.tolerance) {
        return (StatusCode::UNAUTHORIZED, format!("{error}\n")).into_response();
    }
    // verify() has checked that the header is present and text.
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let claim = {
        let mut seen = state.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(&id) {
            Some(true) => return StatusCode::OK.into_response(),
            Some(false) => return StatusCode::CONFLICT.into_response(),
            None => {
                seen.insert(id.clone(), false);
                Claim {
                    state: Arc::clone(&state),
                    id,
                    passed_on: false,
                }
            }
        }
    };
    let accepted = Accepted { received_ns, body };
    if state.accepted.send(accepted).await.is_err() {
        // The subscriber has stopped; the provider may retry elsewhere.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    claim.passed_on();
    StatusCode::NO_CONTENT.into_response()
}

/// A delivery being passed on: marked seen only once it has been, so a handler cancelled in
/// between (its connection dropped) leaves the id free for the provider's retry instead of
/// turning the retry into a "duplicate" and losing the event.
struct Claim {
    state: Arc<ConsumerState>,
    id: String,
    passed_on: bool,
}

impl Claim {
    fn passed_on(mut self) {
        self.passed_on = true;
        let mut seen = self.state.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(std::mem::take(&mut self.id), true);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.passed_on {
            let mut seen = self.state.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.remove(&self.id);
        }
    }
}

/// Binds a consumer, registers it with the provider at `server`, and feeds the sink.
pub(crate) async fn subscribe(
    server: SocketAddr,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    Consumer::bind(config).await?.run(server, sink).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-off that never happened (its handler cancelled) leaves the id free for the
    /// provider's retry; one that happened marks it seen.
    #[test]
    fn a_claim_dropped_before_hand_off_frees_its_id() {
        let (accepted, _deliveries) = mpsc::channel(1);
        let state = Arc::new(ConsumerState {
            secrets: Secrets::generate(),
            tolerance: Duration::from_secs(300),
            seen: Mutex::new(HashMap::new()),
            accepted,
            outage: Mutex::new(None),
        });
        let claim = |id: &str| {
            state.seen.lock().unwrap().insert(id.to_owned(), false);
            Claim {
                state: Arc::clone(&state),
                id: id.to_owned(),
                passed_on: false,
            }
        };
        drop(claim("msg_1"));
        claim("msg_2").passed_on();
        let seen = state.seen.lock().unwrap();
        assert_eq!(seen.get("msg_1"), None, "a cancelled hand-off must leave the id free");
        assert_eq!(seen.get("msg_2"), Some(&true));
    }

    /// The Standard Webhooks schedule, scaled down a thousandfold: 8 attempts, fixed waits of
    /// 5 ms to 36 s, spanning 99.3 s (27.6 h unscaled).
    #[test]
    fn standard_webhooks_schedule() {
        let schedule = Schedule::of(&SettingValues::from_pairs([
            RETRY_SCHEDULE.set(RetryKind::StandardWebhooks)
        ]));
        assert_eq!(schedule.attempts, 8);
        assert_eq!(schedule.delay(1), Duration::from_millis(5));
        assert_eq!(schedule.delay(7), Duration::from_secs(36));
        assert_eq!(schedule.span(), Duration::from_millis(99_305));
    }

    /// The schedule's ceilings grow by the factor up to the cap; each wait stays under its
    /// ceiling.
    #[test]
    fn retry_delays_grow_with_jitter() {
        let schedule = Schedule::of(&SettingValues::from_pairs([
            RETRY_BASE.set(Duration::from_millis(100)),
            RETRY_FACTOR.set(3),
            RETRY_CAP.set(Duration::from_secs(1)),
        ]));
        assert_eq!(schedule.ceiling(1), Duration::from_millis(100));
        assert_eq!(schedule.ceiling(3), Duration::from_millis(900));
        assert_eq!(schedule.ceiling(30), Duration::from_secs(1));
        for attempt in 1..10 {
            assert!(schedule.delay(attempt) <= schedule.ceiling(attempt));
        }
    }
}
