//! Webhooks: the provider (server side) keeps endpoints registered with
//! `POST /subscriptions {"url": "..."}` and POSTs every event to each, in order, signed with
//! Standard Webhooks headers and retried with exponential backoff and jitter; the consumer
//! (client side) is an HTTP server of its own that verifies the signature (401 if it fails),
//! drops repeats by `webhook-id`, and answers 2xx at once.
//!
//! Each consumer listens on its own port, as real consumers are separate hosts, so the provider
//! cannot share one connection among them.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Deserialize;
use sha2::Sha256;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    deliver, serve_http, ClientConfig, ClientError, Colour, Flow, HttpSettings, Redelivery,
    Requests, ServerConfig, Setting, SettingValues, Side, Sink, Spec, Traits,
};
use super::resume::{Outage, OUTAGE, OUTAGE_AFTER};
use crate::clock::now_ns;
use crate::event::MAX_EVENT_BYTES;
use crate::hub::{BatchLimit, Hub, SubscriberGuard};

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

/// One-way POSTs to the consumer's own URL; the provider retries what was not acknowledged.
pub static SPEC: Spec = Spec {
    name: "webhook",
    summary: "Webhooks: signed HTTP POSTs to registered consumer endpoints",
    colour: Colour(213, 94, 0),
    cursor_path: None,
    settings: &[
        &NEW_CONNECTION,
        &ATTEMPTS,
        &RETRY_BASE,
        &RETRY_FACTOR,
        &RETRY_CAP,
        &RETRY_SCHEDULE,
        &OUTAGE,
        &OUTAGE_AFTER,
    ],
    traits: Traits {
        duplex: false,
        browser_api: None,
        needs_inbound_http: true,
        holds_connection: false,
        needs_upgrade: false,
        streams_response: false,
        http: true,
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

/// How far a delivery's timestamp may be from the consumer's clock (the Standard Webhooks
/// default), so a captured request cannot be replayed later.
const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

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

impl crate::transport::settings::Value for RetryKind {
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
            RetryKind::Exponential => self.ceiling(attempt).mul_f64(rand::rng().random::<f64>()),
            RetryKind::StandardWebhooks => self.ceiling(attempt),
        }
    }
}

/// The longest the provider keeps retrying one event under `settings` (see
/// [`Redelivery::Retries`]).
fn retry_span(settings: &SettingValues) -> Duration {
    Schedule::of(settings).span()
}

/// A Standard Webhooks signing secret (`whsec_` + base64 of the key). Serialised in its `whsec_`
/// form, for the typed protocol between `run` and its children (never argv).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Secret {
    key: Vec<u8>,
}

/// Text that is not a usable `whsec_` secret.
#[derive(Debug, Error)]
#[error("invalid webhook secret: expected `whsec_` followed by base64 ({0})")]
pub struct SecretError(String);

impl Secret {
    /// A fresh random 24-byte secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 24];
        rand::rng().fill(&mut key[..]);
        Self { key }
    }

    /// The secret in its `whsec_` text form, as a provider shows it to consumers.
    pub fn to_whsec(&self) -> String {
        format!("whsec_{}", BASE64.encode(&self.key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", BASE64.encode(tag))
    }

    /// Checks a delivery's headers and body as a Standard Webhooks consumer must: all three
    /// headers present, timestamp within tolerance of `now_secs`, and one of the space-separated
    /// `v1,` signatures matching (compared in constant time).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), VerifyError> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(VerifyError::MissingHeader(name))
        };
        let id = header("webhook-id")?;
        let timestamp: i64 = header("webhook-timestamp")?
            .parse()
            .map_err(|_| VerifyError::BadTimestamp)?;
        if (now_secs - timestamp).abs() > TIMESTAMP_TOLERANCE_SECS {
            return Err(VerifyError::StaleTimestamp);
        }
        let mac = self.mac(id, timestamp, body);
        let mut saw_v1 = false;
        for candidate in header("webhook-signature")?.split(' ') {
            let Some(encoded) = candidate.strip_prefix("v1,") else {
                continue;
            };
            saw_v1 = true;
            if let Ok(tag) = BASE64.decode(encoded) {
                if mac.clone().verify_slice(&tag).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(if saw_v1 {
            VerifyError::NoMatch
        } else {
            VerifyError::MalformedSignature
        })
    }
}

impl FromStr for Secret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text.strip_prefix("whsec_").unwrap_or(text);
        let key = BASE64
            .decode(encoded)
            .map_err(|e| SecretError(e.to_string()))?;
        if key.is_empty() {
            return Err(SecretError("empty key".into()));
        }
        Ok(Self { key })
    }
}

impl From<Secret> for String {
    fn from(secret: Secret) -> String {
        secret.to_whsec()
    }
}

impl TryFrom<String> for Secret {
    type Error = SecretError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Why a delivery was refused with 401.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A required Standard Webhooks header is absent (or not text).
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer.
    #[error("webhook-timestamp is not Unix seconds")]
    BadTimestamp,
    /// The timestamp is too far from now: a replay, or a badly wrong clock.
    #[error("webhook-timestamp is more than {TIMESTAMP_TOLERANCE_SECS} s from now")]
    StaleTimestamp,
    /// No `v1,` signature in the header.
    #[error("webhook-signature has no v1 signature")]
    MalformedSignature,
    /// Signatures present, none valid for this body.
    #[error("no webhook-signature matches the body")]
    NoMatch,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Provider (server side)

#[derive(Clone)]
struct Provider {
    hub: Arc<Hub>,
    http: reqwest::Client,
    secret: Arc<Secret>,
    batch: BatchLimit,
    schedule: Schedule,
    next_endpoint: Arc<AtomicU64>,
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
    let mut http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10));
    if NEW_CONNECTION.read(&config.settings) {
        // No idle connection is kept, so every delivery opens (and closes) its own.
        http = http.pool_max_idle_per_host(0);
    }
    let provider = Provider {
        hub,
        http: http.build().map_err(std::io::Error::other)?,
        secret: Arc::new(config.webhook_secret),
        batch: config.batch,
        schedule: Schedule::of(&config.settings),
        next_endpoint: Arc::new(AtomicU64::new(0)),
    };
    let router = Router::new()
        .route("/subscriptions", post(register))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(provider);
    // Registrations are not deliveries: their bytes are not counted (the consumers count the
    // deliveries' bytes where they accept them).
    serve_http(listener, router, config.http, shutdown).await
}

async fn register(State(provider): State<Provider>, body: Bytes) -> Response {
    let registration: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("invalid registration: {e}; expected {{\"url\": \"http://...\"}}\n");
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let url = match reqwest::Url::parse(&registration.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
        _ => {
            let why = format!(
                "invalid endpoint url {:?}: expected http(s)://host[:port]/path\n",
                registration.url
            );
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
    };
    let id = format!(
        "ep_{}",
        provider.next_endpoint.fetch_add(1, Ordering::Relaxed)
    );
    // The endpoint counts as a subscriber until every event has been delivered to it.
    let guard = provider.hub.join();
    tokio::spawn(deliver_stream(provider, url.clone(), guard));
    let answer = serde_json::json!({ "id": id, "url": url.as_str() });
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// Delivers the whole stream to one endpoint, one event at a time so it arrives in order.
async fn deliver_stream(provider: Provider, url: reqwest::Url, _guard: SubscriberGuard) {
    let mut reader = provider.hub.reader(0);
    while let Some(batch) = reader.next_batch(provider.batch).await {
        // An endpoint so far behind that the replay window let its events go: the provider
        // can never send them, so they are abandoned, and counted.
        if let Some(gap) = batch.gap {
            provider.hub.abandoned_many(gap.count);
        }
        for (seq, body) in batch.iter() {
            if !deliver_event(&provider, &url, seq, body).await {
                // Counted, so the results show what the schedule gave up on.
                provider.hub.abandoned_many(1);
                tracing::debug!(%url, seq, attempts = provider.schedule.attempts, "webhook delivery abandoned");
            }
        }
    }
}

/// POSTs one event until a 2xx answer or the attempts run out; `true` if delivered.
async fn deliver_event(provider: &Provider, url: &reqwest::Url, seq: u64, body: &Bytes) -> bool {
    // The same id on every attempt, so the consumer can drop repeats.
    let id = format!("msg_{seq}");
    for attempt in 0..provider.schedule.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(provider.schedule.delay(attempt)).await;
            provider.hub.retried();
        }
        let timestamp = unix_now();
        let signature = provider.secret.sign(&id, timestamp, body);
        let sent = provider
            .http
            .post(url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => return true,
            Ok(answer) => tracing::debug!(%url, seq, status = %answer.status(), "webhook refused"),
            Err(error) => tracing::debug!(%url, seq, %error, "webhook failed"),
        }
    }
    false
}


// ---------------------------------------------------------------------------------------------
// Consumer (client side)

/// A delivery accepted by the consumer, on its way to the sink.
struct Accepted {
    received_ns: u64,
    body: Bytes,
}

struct ConsumerState {
    secret: Secret,
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
    counters: Arc<crate::metrics::sockets::SocketCounters>,
    state: Arc<ConsumerState>,
    deliveries: mpsc::Receiver<Accepted>,
}

impl Consumer {
    /// Binds a consumer on `config.bind` (default 127.0.0.1), on a port of its own.
    pub async fn bind(config: &ClientConfig) -> Result<Self, ClientError> {
        let secret = config.webhook_secret.clone().ok_or_else(|| {
            ClientError::Config(
                "a webhook consumer needs the provider's secret (--webhook-secret)".into(),
            )
        })?;
        let ip = config.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let listener = TcpListener::bind((ip, 0))
            .await
            .map_err(|e| ClientError::Config(format!("cannot listen on {ip}: {e}")))?;
        let (accepted, deliveries) = mpsc::channel(1024);
        let state = Arc::new(ConsumerState {
            secret,
            seen: Mutex::new(HashMap::new()),
            accepted,
            outage: Mutex::new(Outage::planned(&config.settings)),
        });
        Ok(Self {
            listener,
            counters: Arc::clone(&config.counters),
            state,
            deliveries,
        })
    }

    /// The URL the provider should POST to.
    pub fn url(&self) -> String {
        match self.listener.local_addr() {
            Ok(addr) => format!("http://{addr}/webhook"),
            Err(_) => String::new(),
        }
    }

    /// Registers with the provider at `server` and feeds accepted deliveries to the sink until
    /// it stops; then stops listening.
    pub async fn run(self, server: SocketAddr, sink: &mut dyn Sink) -> Result<(), ClientError> {
        let url = self.url();
        let Consumer {
            listener,
            counters,
            state,
            mut deliveries,
        } = self;
        let state_for_outage = Arc::clone(&state);
        let router = Router::new()
            .route("/webhook", post(receive))
            .layer(DefaultBodyLimit::max(MAX_EVENT_BYTES))
            .with_state(state);
        let shutdown = CancellationToken::new();
        // The consumer accepts the provider's connections, so it is where webhook bytes are
        // counted.
        let listener = super::TrackedListener::new(listener, None, counters);
        let serving = tokio::spawn(serve_http(
            listener,
            router,
            HttpSettings::default(),
            shutdown.clone(),
        ));

        let result = async {
            register_with(server, &url).await?;
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

/// `POST /subscriptions` on the provider; anything but 201 fails the subscription.
async fn register_with(server: SocketAddr, url: &str) -> Result<(), ClientError> {
    let answer = reqwest::Client::new()
        .post(format!("http://{server}/subscriptions"))
        .json(&serde_json::json!({ "url": url }))
        .send()
        .await
        .map_err(|e| ClientError::Connect {
            addr: server,
            reason: e.to_string(),
        })?;
    if answer.status() != StatusCode::CREATED {
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap_or_default();
        return Err(ClientError::Status { status, body });
    }
    Ok(())
}

async fn receive(
    State(state): State<Arc<ConsumerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_ns = now_ns();
    if state.down_at(received_ns) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down (the outage fault)\n").into_response();
    }
    if let Err(error) = state.secret.verify(&headers, &body, unix_now()) {
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

    /// The signer reproduces the Standard Webhooks published test vector.
    #[test]
    fn standard_webhooks_vector() {
        let secret: Secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".parse().unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let signature = secret.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body);
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    fn headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    /// Verification accepts a good signature among several and refuses each kind of bad one.
    #[test]
    fn verify_accepts_and_refuses() {
        let secret = Secret::generate();
        let now = 1_700_000_000;
        let good = secret.sign("msg_1", now, b"{}");
        let both = format!("v1,AAAA {good}");
        assert_eq!(
            secret.verify(&headers("msg_1", now, &both), b"{}", now),
            Ok(())
        );
        assert_eq!(
            secret.verify(&headers("msg_1", now, &good), b"{ }", now),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            secret.verify(&headers("msg_1", now, "garbage"), b"{}", now),
            Err(VerifyError::MalformedSignature)
        );
        assert_eq!(
            secret.verify(&headers("msg_1", now, &good), b"{}", now + 301),
            Err(VerifyError::StaleTimestamp)
        );
        assert_eq!(
            secret.verify(&HeaderMap::new(), b"{}", now),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
    }

    /// Secrets round-trip through their whsec_ form; non-base64 is refused.
    #[test]
    fn secret_text_form() {
        let secret = Secret::generate();
        assert_eq!(secret.to_whsec().parse::<Secret>().unwrap(), secret);
        assert!("whsec_!!!".parse::<Secret>().is_err());
    }

    /// A hand-off that never happened (its handler cancelled) leaves the id free for the
    /// provider's retry; one that happened marks it seen.
    #[test]
    fn a_claim_dropped_before_hand_off_frees_its_id() {
        let (accepted, _deliveries) = mpsc::channel(1);
        let state = Arc::new(ConsumerState {
            secret: Secret::generate(),
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
