//! pushbench's webhook provider: registration (and unregistration), each event signed and
//! POSTed (or GET) to every endpoint, retried; in two-way traffic, consumers' messages up
//! taken by its API (`POST /up`) and their copies delivered as webhooks of their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::{BatchLimit, Hub, Interest, SubscriberGuard};
use crate::transport::compression::{Compression, COMPRESSION};
use crate::transport::endpoint::Endpoint;
use crate::transport::per_event::PerEvent;
use crate::transport::standard_webhooks::{unix_now, SharedSignatures};
use crate::transport::tls::{TlsMaterial, TLS};
use crate::transport::upstream::{self, UPSTREAM_PATH};
use crate::transport::{serve_http, Dialer, ServerConfig, TrackedListener};

use super::retry::Schedule;
use super::REGISTRATION_PATH;
use super::{
    secrets_of, Method, ALLOW_PRIVATE_TARGETS, EVENT_PARAMETER, METHOD, NEW_CONNECTION,
    OPEN_REGISTRATION, REGISTRATION_TOKEN, URL_LIMIT,
};

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

/// The length of the URL a GET delivery of `body` to `endpoint` would have.
fn get_url_len(endpoint: &Endpoint, body: &[u8]) -> usize {
    let scheme = if endpoint.secure {
        "https://"
    } else {
        "http://"
    };
    scheme.len()
        + endpoint.host.len()
        + endpoint.target.len()
        + 1
        + EVENT_PARAMETER.len()
        + 1
        + body.len().div_ceil(3) * 4
}

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
    /// Each registered endpoint's delivery, by id, to stop it when the consumer unregisters.
    endpoints: Arc<std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>>,
    /// What carries the deliveries.
    sender: Sender,
}

/// What carries the provider's deliveries to endpoints.
#[derive(Clone)]
pub(super) enum Sender {
    /// pushbench's own: a hyper HTTP/1.1 connection per endpoint, to the address checked at
    /// registration, kept between deliveries (unless each opens its own).
    Own,
    /// reqwest's client, one for the provider, its pool holding each endpoint's connection.
    Reqwest(super::reqwest::Provider),
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
    /// The streams the endpoint wants (event-type filters, as Svix's `filterTypes` and
    /// Stripe's `enabled_events` are); absent: every event.
    #[serde(default)]
    topics: Vec<u32>,
}

/// Serves `POST /subscriptions` on `listener` and delivers to every registered endpoint until
/// `shutdown` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(Sender::Own, listener, hub, config, shutdown).await
}

/// The provider, its deliveries carried by `sender`.
pub(super) async fn serve_with(
    sender: Sender,
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
    let secrets = secrets_of(&config.credentials)
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
    // An open provider takes registrations without the token, even when it holds one.
    let token = (!config.credentials.consents(&OPEN_REGISTRATION))
        .then(|| {
            config
                .credentials
                .get(&REGISTRATION_TOKEN)
                .map(str::to_owned)
        })
        .flatten();
    let provider = Provider {
        hub,
        signatures: Arc::new(SharedSignatures::new(secrets)),
        compression,
        compressed: Arc::default(),
        batch: config.batch,
        schedule: Schedule::of(&config.settings),
        next_endpoint: Arc::new(AtomicU64::new(0)),
        new_connection: NEW_CONNECTION.read(&config.settings),
        tls: Arc::new(config.tls),
        gate: Arc::new(Gate {
            token,
            allow_private_targets: config.credentials.consents(&ALLOW_PRIVATE_TARGETS),
            cap: config.limits.subscriber_cap(),
            registered: AtomicU64::new(0),
        }),
        method,
        url_limit: usize::try_from(URL_LIMIT.read(&config.settings)).unwrap_or(usize::MAX),
        endpoints: Arc::default(),
        sender,
    };
    let two_way = provider.hub.two_way();
    let mut router = Router::new()
        .route(REGISTRATION_PATH, post(register))
        .route(&format!("{REGISTRATION_PATH}/{{id}}"), delete(unregister));
    if two_way {
        // Consumers call the provider's API with their messages up.
        router = router.route(UPSTREAM_PATH, post(take_up));
    }
    let router = router
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(provider);
    serve_http(listener, router, config.http, shutdown).await
}

/// An answer with a reason, as text.
fn refuse(status: StatusCode, why: String) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// The 401 refusal (with the reason) of a request without the token, when the provider has
/// one: the provider's API, registration and messages up alike, needs it.
fn unauthorised(gate: &Gate, headers: &HeaderMap) -> Option<Response> {
    let token = gate.token.as_ref()?;
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
        return None;
    }
    let why = "the provider's API needs `Authorization: Bearer TOKEN`, the registration token \
               `pushbench serve` printed";
    Some(refuse(StatusCode::UNAUTHORIZED, why.to_owned()))
}

/// `POST /up`: a consumer's message up (two-way traffic), 204 once the hub has taken it.
async fn take_up(State(provider): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = unauthorised(&provider.gate, &headers) {
        return refusal;
    }
    upstream::answer(provider.hub.receive_upstream(body).await)
}

/// `DELETE /subscriptions/ID`: the consumer leaves; nothing more is delivered to it, and it
/// no longer counts as a subscriber.
async fn unregister(
    State(provider): State<Provider>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = unauthorised(&provider.gate, &headers) {
        return refusal;
    }
    let found = provider
        .endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    match found {
        Some(delivery) => {
            delivery.cancel();
            StatusCode::NO_CONTENT.into_response()
        }
        None => refuse(
            StatusCode::NOT_FOUND,
            format!("no endpoint {id:?} is registered"),
        ),
    }
}

async fn register(State(provider): State<Provider>, headers: HeaderMap, body: Bytes) -> Response {
    let gate = &provider.gate;
    if let Some(refusal) = unauthorised(gate, &headers) {
        return refusal;
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
    let interest = match provider.hub.interest(registration.topics) {
        Ok(interest) => interest,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, format!("invalid topics: {why}")),
    };
    if endpoint.secure && provider.tls.trusted_pem.is_none() {
        let why = "https endpoints need their certificate trusted by the provider (--ca)";
        return refuse(StatusCode::BAD_REQUEST, why.to_owned());
    }
    if gate.registered.fetch_add(1, Ordering::Relaxed) >= gate.cap as u64 {
        gate.registered.fetch_sub(1, Ordering::Relaxed);
        let why = format!(
            "at most {} endpoints may register (--max-subscribers)",
            gate.cap
        );
        return refuse(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    if let Sender::Reqwest(client) = &provider.sender {
        // The library resolves names itself: it is told the address checked here.
        client.pin(&endpoint);
    }
    let id = format!(
        "ep_{}",
        provider.next_endpoint.fetch_add(1, Ordering::Relaxed)
    );
    let answer = serde_json::json!({ "id": id, "url": endpoint.url.as_str() });
    // The endpoint counts as a subscriber until every event has been delivered to it, or it
    // unregisters.
    let guard = provider.hub.join();
    let stopped = CancellationToken::new();
    provider
        .endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, stopped.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = deliver_stream(provider, endpoint, interest, guard) => {}
            () = stopped.cancelled() => {}
        }
    });
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

/// Delivers the whole stream to one endpoint, one event at a time so it arrives in order.
async fn deliver_stream(
    provider: Provider,
    endpoint: Endpoint,
    interest: Interest,
    _guard: SubscriberGuard,
) {
    let mut reader = provider.hub.reader_of(0, interest);
    let mut connection: Connection = None;
    while let Some(batch) = reader.next_batch(provider.batch).await {
        // An endpoint so far behind that the replay window let its events go: the provider
        // can never send them, so they are abandoned, and counted.
        if let Some(gap) = batch.gap {
            provider.hub.abandoned_many(gap.count);
        }
        for (seq, body) in batch.iter() {
            let item = Item::Event { seq, body };
            if !deliver_event(&provider, &endpoint, &mut connection, item).await {
                // Counted, so the results show what the schedule gave up on.
                provider.hub.abandoned_many(1);
                tracing::debug!(url = %endpoint.url, seq, attempts = provider.schedule.attempts, "webhook delivery abandoned");
            }
        }
        // Copies of messages up in the endpoint's rooms (two-way traffic), each a webhook of
        // its own.
        for body in &batch.copies {
            if !deliver_event(&provider, &endpoint, &mut connection, Item::Copy { body }).await {
                tracing::debug!(url = %endpoint.url, "copy of a message up abandoned");
            }
        }
    }
    // Each event was answered 2xx (or given up on and counted): the consumer's confirmation.
    reader.confirm_end();
}

/// What one webhook carries: an event of the stream, or a copy of a message up.
#[derive(Clone, Copy)]
enum Item<'a> {
    /// Event `seq`: its signature and compressed body are made once for every endpoint.
    Event { seq: u64, body: &'a Bytes },
    /// A copy, sent to its room's endpoints.
    Copy { body: &'a Bytes },
}

impl Item<'_> {
    fn body(&self) -> &Bytes {
        match self {
            Item::Event { body, .. } | Item::Copy { body } => body,
        }
    }

    /// The `webhook-id`, the same on every attempt so the consumer can drop repeats.
    fn id(&self) -> String {
        match self {
            Item::Event { seq, .. } => format!("msg_{seq}"),
            Item::Copy { body } => match crate::upstream::Message::decode(body) {
                Some(message) => format!("up_{}_{}", message.from, message.seq),
                // The hub copies only messages it decoded itself.
                None => "up_unknown".to_owned(),
            },
        }
    }
}

/// How long one delivery attempt (connect, send, answer) may take.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs one event until a 2xx answer or the attempts run out; `true` if delivered. A
/// redirect is an answer like any other non-2xx: not followed.
async fn deliver_event(
    provider: &Provider,
    endpoint: &Endpoint,
    connection: &mut Connection,
    item: Item<'_>,
) -> bool {
    // An event too large for a URL can never be sent by GET: refused at once, with the
    // reason, so the results say where GET stops working.
    if provider.method == Method::Get {
        let length = get_url_len(endpoint, item.body());
        if length > provider.url_limit {
            provider.hub.refuse(format!(
                "{} get: {} would make a URL of {length} B, over the {} B limit (--{})",
                METHOD.name,
                item.id(),
                provider.url_limit,
                URL_LIMIT.name
            ));
            return false;
        }
    }
    let id = item.id();
    for attempt in 0..provider.schedule.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(provider.schedule.delay(attempt)).await;
            provider.hub.retried();
        }
        let sent = tokio::time::timeout(
            ATTEMPT_TIMEOUT,
            attempt_once(provider, endpoint, connection, item, &id),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ATTEMPT_TIMEOUT:?}")));
        if provider.new_connection {
            // Closed, so the next delivery opens its own.
            *connection = None;
        }
        match sent {
            Ok(status) if status.is_success() => return true,
            Ok(status) => tracing::debug!(url = %endpoint.url, id, %status, "webhook refused"),
            Err(error) => {
                // Whatever broke, the next attempt starts on a fresh connection.
                *connection = None;
                tracing::debug!(url = %endpoint.url, id, %error, "webhook failed");
            }
        }
    }
    false
}

/// One signed POST (or GET) to the endpoint, by the provider's sender.
async fn attempt_once(
    provider: &Provider,
    endpoint: &Endpoint,
    connection: &mut Connection,
    item: Item<'_>,
    id: &str,
) -> Result<StatusCode, String> {
    let request = signed_request(provider, endpoint, item, id)?;
    match &provider.sender {
        Sender::Own => send_own(provider, endpoint, connection, request).await,
        Sender::Reqwest(client) => client.send(endpoint, request).await,
    }
}

/// The delivery of `item` as an HTTP request in origin form (the endpoint's target, its host
/// in `Host`), signed, its body compressed once per event where compression is on.
fn signed_request(
    provider: &Provider,
    endpoint: &Endpoint,
    item: Item<'_>,
    id: &str,
) -> Result<axum::http::Request<Bytes>, String> {
    let body = item.body();
    let timestamp = unix_now();
    // The signature covers the event itself (before compression, or before its base64url in a
    // GET's query): the consumer verifies what it decoded.
    let signature = match item {
        Item::Event { seq, .. } => provider.signatures.sign(seq, id, timestamp, body),
        Item::Copy { .. } => provider.signatures.sign_once(id, timestamp, body),
    };
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
            match (provider.compression, item) {
                (Compression::Off, _) => body.clone(),
                (compression, Item::Event { seq, .. }) => {
                    provider
                        .compressed
                        .get_or_make(seq, (), || compression.compress(body.clone()))
                }
                (compression, Item::Copy { .. }) => compression.compress(body.clone()),
            }
        }
    };
    request.body(body).map_err(|e| e.to_string())
}

/// Sends `request` over the endpoint's own connection (opened first if there is none) and
/// reads the answer to its end, so the connection is ready for the next delivery.
async fn send_own(
    provider: &Provider,
    endpoint: &Endpoint,
    connection: &mut Connection,
    request: axum::http::Request<Bytes>,
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
            connection.insert(
                dialer
                    .http1(endpoint.addr)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
    };
    sender.ready().await.map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(request.map(Full::new))
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    answer
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}
