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

use std::time::Duration;

use super::compression::COMPRESSION;
use super::credentials::{Credential, Credentials, Kind};
use super::resume::{OUTAGE, OUTAGE_AFTER};
use super::standard_webhooks::{unix_now, Secrets};
use super::tls::TLS;
use super::{Colour, KeepAlive, Redelivery, Requests, Setting, Side, Spec, Traits};
use crate::hub::Batch;

mod client;
mod reqwest;
mod retry;
mod server;

pub use client::Consumer;
use retry::retry_span;
pub use retry::{RETRY_BASE, RETRY_CAP, RETRY_FACTOR, RETRY_SCHEDULE};

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

/// Where pushbench's provider takes registrations.
const REGISTRATION_PATH: &str = "/subscriptions";

/// The provider's signing secrets (`whsec_...`, several separated by white space while one is
/// rotated out: the provider signs with all, consumers accept any).
pub static WEBHOOK_SECRET: Credential = Credential {
    name: "webhook-secret",
    help: "The provider's Standard Webhooks signing secrets (whsec_...; several, separated by \
           white space, while one is rotated out)",
    kind: Kind::Secret {
        required_by: Some(Side::Client),
        make: |_| Some(Secrets::generate().to_whsec()),
        check: |text| text.parse::<Secrets>().map(drop).map_err(|e| e.to_string()),
    },
};

/// The token registrations must present (`Authorization: Bearer`).
pub static REGISTRATION_TOKEN: Credential = Credential {
    name: "registration-token",
    help: "The token endpoint registrations must present (Authorization: Bearer)",
    kind: Kind::Secret {
        required_by: None,
        // 128 random bits, hex; none where registration is open.
        make: |given| {
            (!given.consents(&OPEN_REGISTRATION))
                .then(|| format!("{:032x}", rand::random::<u128>()))
        },
        check: |text| {
            if text.trim().is_empty() {
                Err("the registration token is empty".into())
            } else {
                Ok(())
            }
        },
    },
};

/// Consent to deliver to endpoints on loopback, private, link-local or metadata addresses.
pub static ALLOW_PRIVATE_TARGETS: Credential = Credential {
    name: "allow-private-targets",
    help: "Deliver to endpoints on loopback, private, link-local or metadata addresses (refused \
           otherwise, so that registering one cannot turn the provider against its own network)",
    kind: Kind::Consent { in_runs: true },
};

/// Consent to let anyone register endpoints, without the token.
pub static OPEN_REGISTRATION: Credential = Credential {
    name: "open-registration",
    help: "Let anyone register endpoints, without the token that is otherwise generated and \
           printed",
    kind: Kind::Consent { in_runs: false },
};

/// The provider's signing secrets from its credentials (made there when it was not given one).
pub fn secrets_of(credentials: &Credentials) -> Result<Secrets, String> {
    credentials
        .get(&WEBHOOK_SECRET)
        .ok_or_else(|| {
            "webhooks need the provider's secret (--webhook-secret-file FILE, or \
             PUSHBENCH_WEBHOOK_SECRET in the environment)"
                .to_owned()
        })?
        .parse()
        .map_err(|e: super::standard_webhooks::SecretError| e.to_string())
}

/// One-way POSTs (or GETs) to the consumer's own URL; the provider retries what was not
/// acknowledged.
pub static SPEC: Spec = Spec {
    name: "webhook",
    summary: "Webhooks: signed HTTP POSTs (or GETs) to registered consumer endpoints",
    colour: Colour(213, 94, 0),
    cursor_path: None,
    interop: Some("standardwebhooks verifier"),
    credentials: &[
        &WEBHOOK_SECRET,
        &REGISTRATION_TOKEN,
        &ALLOW_PRIVATE_TARGETS,
        &OPEN_REGISTRATION,
    ],
    servers: &[
        server_impl!(
            super::implementation::OWN,
            "hyper provider: signed deliveries, retried with backoff",
            server::serve
        ),
        server_impl!(
            "reqwest",
            "the same provider sending with reqwest (rustls on ring, HTTP/1.1, pooled \
             connections)",
            reqwest::serve
        ),
    ],
    clients: &[client_impl!(
        super::implementation::OWN,
        "hyper consumer: verifies, deduplicates, answers 2xx",
        client::subscribe
    )],
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
        &super::upstream::UPSTREAM_RATE,
        &super::upstream::UPSTREAM_ECHO,
        &super::upstream::UPSTREAM_DELAY,
    ],
    outside: super::spec::all_in_serve,
    guarantee: super::spec::exactly_once,
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
        udp: false,
        floor: false,
    },
};

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
