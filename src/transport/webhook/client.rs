//! pushbench's webhook consumer: an HTTP server of its own that verifies, deduplicates and
//! answers 2xx at once; in two-way traffic it calls the provider's API with its messages up
//! and unregisters once it has everything.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ns;
use crate::event::MAX_EVENT_BYTES;
use crate::transport::compression::decode_body;
use crate::transport::resume::Outage;
use crate::transport::standard_webhooks::{unix_now, Secrets};
use crate::transport::upstream;
use crate::transport::{
    deliver, serve_http, ClientConfig, ClientError, Flow, HttpSettings, Sink, Target,
    TrackedListener,
};

use super::REGISTRATION_PATH;
use super::{secrets_of, EVENT_PARAMETER, REGISTRATION_TOKEN, TOLERANCE};

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
    /// Where the provider reaches it: its own address, or a relay's in front of it.
    reached_at: SocketAddr,
    /// The subscriber's settings: its counters, TLS, and how it reaches the provider.
    config: ClientConfig,
    state: Arc<ConsumerState>,
    deliveries: mpsc::Receiver<Accepted>,
}

impl Consumer {
    /// Binds a consumer on `config.bind` (default 127.0.0.1), on a port of its own.
    pub async fn bind(config: &ClientConfig) -> Result<Self, ClientError> {
        let secrets = secrets_of(&config.credentials).map_err(ClientError::Config)?;
        let ip = config.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let listener = TcpListener::bind((ip, 0))
            .await
            .map_err(|e| ClientError::Config(format!("cannot listen on {ip}: {e}")))?;
        let own = listener
            .local_addr()
            .map_err(|e| ClientError::Config(format!("the consumer's address: {e}")))?;
        let reached_at = match &config.relay {
            Some(relay) => relay
                .front(own)
                .await
                .map_err(|e| ClientError::Config(format!("cannot relay to {own}: {e}")))?,
            None => own,
        };
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
            reached_at,
            config: config.clone(),
            state,
            deliveries,
        })
    }

    /// The URL the provider should POST to (the relay's in front, where there is one):
    /// https:// when TLS is on.
    pub fn url(&self) -> String {
        let scheme = if self.config.dialer().secure() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/webhook", self.reached_at)
    }

    /// Registers with the provider at `server` and feeds accepted deliveries to the sink until
    /// it stops; then stops listening.
    pub async fn run(self, provider: &Target, sink: &mut dyn Sink) -> Result<(), ClientError> {
        let url = self.url();
        let Consumer {
            listener,
            config,
            state,
            mut deliveries,
            ..
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

        let two_way = config.upstream.is_some();
        let (watched, outbox) = upstream::outbox(sink, &config);
        let result = async {
            let id = register_with(provider, &config, &url).await?;
            let linger = config.linger.clone();
            let receiving = async move {
                let mut sink = watched;
                sink.connected(now_ns());
                while let Some(accepted) = deliveries.recv().await {
                    if deliver(&mut sink, &accepted.body, accepted.received_ns) == Flow::Stop {
                        // The endpoint stays up until every subscriber has the stream, where
                        // the load asks.
                        if let Some(linger) = linger {
                            linger.hold().await;
                        }
                        break;
                    }
                }
                Ok(())
            };
            // Messages up are calls to the provider's API, with the registration token.
            let token = config
                .credentials
                .get(&REGISTRATION_TOKEN)
                .map(|token| format!("Bearer {token}"));
            let sending = upstream::post_each(outbox, provider, &config, token.as_deref());
            upstream::together(receiving, sending).await?;
            // In two-way traffic the provider cannot tell when copies stop coming for an
            // endpoint: the consumer that has everything says it is leaving.
            if two_way {
                unregister(provider, &config, &id).await?;
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

/// `POST /subscriptions` on the provider, with its registration token when there is one:
/// the endpoint's id; anything but 201 fails the subscription.
async fn register_with(
    provider: &Target,
    config: &ClientConfig,
    url: &str,
) -> Result<String, ClientError> {
    let body = match &config.topics {
        Some(topics) => serde_json::json!({ "url": url, "topics": topics }),
        None => serde_json::json!({ "url": url }),
    }
    .to_string();
    let request = axum::http::Request::post(provider.path_or(REGISTRATION_PATH))
        .header("content-type", "application/json");
    let (status, body) =
        call_api(provider, config, request, Bytes::from(body), "registering").await?;
    if status != StatusCode::CREATED {
        return Err(ClientError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    #[derive(serde::Deserialize)]
    struct Registered {
        id: String,
    }
    serde_json::from_slice::<Registered>(&body)
        .map(|registered| registered.id)
        .map_err(|e| ClientError::Protocol(format!("registering: the answer has no id: {e}")))
}

/// `DELETE /subscriptions/ID`: the consumer leaves; anything but 204 fails it.
async fn unregister(provider: &Target, config: &ClientConfig, id: &str) -> Result<(), ClientError> {
    let path = format!("{}/{id}", provider.path_or(REGISTRATION_PATH));
    let request = axum::http::Request::delete(path);
    let (status, body) = call_api(provider, config, request, Bytes::new(), "unregistering").await?;
    if status != StatusCode::NO_CONTENT {
        return Err(ClientError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(())
}

/// One call of the provider's API on a connection of its own, with the registration token
/// when there is one, within the request timeout: the answer's status and body.
async fn call_api(
    provider: &Target,
    config: &ClientConfig,
    request: axum::http::request::Builder,
    body: Bytes,
    doing: &str,
) -> Result<(StatusCode, Bytes), ClientError> {
    let broken = |e: hyper::Error| ClientError::Protocol(format!("{doing}: {e}"));
    let mut sender = config.dialer().http1(provider.addr).await?;
    let mut request = request.header("host", provider.authority());
    if let Some(token) = config.credentials.get(&REGISTRATION_TOKEN) {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let exchange = async {
        sender.ready().await.map_err(broken)?;
        let answer = sender.send_request(request).await.map_err(broken)?;
        let status = answer.status();
        let body = answer
            .into_body()
            .collect()
            .await
            .map_err(broken)?
            .to_bytes();
        Ok::<_, ClientError>((status, body))
    };
    tokio::time::timeout(config.request_timeout, exchange)
        .await
        .map_err(|_| ClientError::Protocol(format!("{doing}: no answer in time")))?
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
    if let Err(error) = state
        .secrets
        .verify(&headers, &body, unix_now(), state.tolerance)
    {
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
    target: &Target,
    config: &ClientConfig,
    sink: &mut dyn Sink,
) -> Result<(), ClientError> {
    Consumer::bind(config).await?.run(target, sink).await
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
        assert_eq!(
            seen.get("msg_1"),
            None,
            "a cancelled hand-off must leave the id free"
        );
        assert_eq!(seen.get("msg_2"), Some(&true));
    }
}
