//! What a transport declares about itself in its own file, once: its name, a line saying what
//! it is, the protocol facts design rules test ([`Traits`]), the colour its series are drawn in,
//! and the settings it takes. Everything that lists, describes or configures transports (the
//! CLI, scenario files, results, plots, `recommend`, `pushbench transports`) reads this.

use std::fmt;

use serde::Serialize;

use super::credentials::Credential;
use super::implementation::{ClientImpl, ServerImpl};
use crate::settings::{Declared, Setting, SettingValues};

/// One transport's declaration (serialized as `pushbench transports --json` lists it).
#[derive(Serialize)]
pub struct Spec {
    /// The name used on the command line and in results.
    pub name: &'static str,
    /// What it is, in one line.
    pub summary: &'static str,
    /// What it is by its protocol.
    pub traits: Traits,
    /// The colour its series are drawn in (Okabe–Ito, distinguishable with colour blindness).
    pub colour: Colour,
    /// The HTTP path subscribers GET, which takes `?after=SEQ` to resume (none: subscribing is
    /// not a GET).
    pub cursor_path: Option<&'static str>,
    /// The standard, widely deployed client that subscribes to pushbench's server of this
    /// transport in the interop check (`scripts/interop/check.mjs`, which fails a transport
    /// that names none, or one it does not know). None only for the floor: no standard client
    /// speaks raw length-prefixed frames.
    pub interop: Option<&'static str>,
    /// The settings it takes, each with its default.
    #[serde(serialize_with = "describe_settings")]
    pub settings: &'static [&'static dyn Declared],
    /// What its server and subscribers share that nobody else may see, and what only the
    /// server's operator may allow (made, handed over and checked by generic code).
    #[serde(serialize_with = "credential_names")]
    pub credentials: &'static [&'static Credential],
    /// Its server's implementations, pushbench's own first (the default).
    #[serde(serialize_with = "server_names")]
    pub servers: &'static [ServerImpl],
    /// Its client's implementations, pushbench's own first (the default).
    #[serde(serialize_with = "client_names")]
    pub clients: &'static [ClientImpl],
    /// Where, under given settings, part of its server's work runs outside `serve`'s process
    /// (a broker it does not embed), so the server's CPU and memory are measured there too, or
    /// said to be unmeasured.
    #[serde(skip)]
    pub outside: fn(&SettingValues) -> Outside,
    /// What, under given settings, it promises each event: what the ledger then counts
    /// rather than fails.
    #[serde(skip)]
    pub guarantee: fn(&SettingValues) -> Guarantee,
}

/// What a transport promises about each event beyond arriving intact. Exactly once and in
/// order unless it says otherwise; what it says otherwise is counted, not failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Guarantee {
    /// At least once (MQTT at QoS 1): an event a subscriber receives again after a cut is a
    /// repeat.
    pub repeats: bool,
    /// Events may overtake each other (WebTransport's stream per event): the ledger digests
    /// them in sequence order and counts the reordering.
    pub reorders: bool,
    /// At most once (WebTransport's datagrams): an event the network lost stays lost, counted
    /// as its own class ([`crate::protocol::load::DeliveryCounts::dropped`]).
    pub drops: bool,
}

impl Spec {
    /// Whether it takes `setting` (declares it among its settings).
    pub fn takes(&self, setting: &dyn Declared) -> bool {
        self.settings.iter().any(|s| s.name() == setting.name())
    }
}

/// Where part of a server's work runs outside `serve`'s own process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outside {
    /// Nowhere: `serve`'s process does all of it.
    Nothing,
    /// In these processes too (an external broker whose PID the user named, a profile's
    /// server with its workers): their CPU and memory are measured with `serve`'s.
    Processes(Vec<u32>),
    /// In these processes instead: a server pushbench did not write, which `serve` only
    /// publishes into (its own CPU and memory are the publisher's, the harness's).
    Instead(Vec<u32>),
    /// In a process nobody named: the server's CPU and memory cannot be measured (why).
    Unmeasured(String),
}

/// For a transport that delivers each event once (its client resumes after the last taken,
/// or, for webhooks, its consumer drops a retry it already has by the webhook's id).
pub fn exactly_once(_: &SettingValues) -> Guarantee {
    Guarantee::default()
}

/// For a transport whose server is all in `serve`'s process.
pub fn all_in_serve(_: &SettingValues) -> Outside {
    Outside::Nothing
}

/// The credentials as tools read them: name, kind and help (never a value).
fn credential_names<S: serde::Serializer>(
    credentials: &&'static [&'static Credential],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(credentials.iter().map(|c| {
        serde_json::json!({
            "name": c.name,
            "kind": if c.is_consent() { "consent" } else { "secret" },
            "help": c.help,
        })
    }))
}

/// The server implementations as tools read them: name and summary.
fn server_names<S: serde::Serializer>(
    servers: &&'static [ServerImpl],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        servers
            .iter()
            .map(|i| serde_json::json!({ "name": i.name, "summary": i.summary })),
    )
}

/// The client implementations as tools read them: name and summary.
fn client_names<S: serde::Serializer>(
    clients: &&'static [ClientImpl],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        clients
            .iter()
            .map(|i| serde_json::json!({ "name": i.name, "summary": i.summary })),
    )
}

/// Each setting as tools read it: name, side, kind, default and help.
fn describe_settings<S: serde::Serializer>(
    settings: &&'static [&'static dyn Declared],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq as _;
    let mut seq = s.serialize_seq(Some(settings.len()))?;
    for setting in settings.iter() {
        seq.serialize_element(&serde_json::json!({
            "name": setting.name(),
            "side": setting.side(),
            "kind": setting.kind(),
            "default": setting.default_text(),
            "help": setting.help(),
        }))?;
    }
    seq.end()
}

/// An sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Colour(pub u8, pub u8, pub u8);

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

impl Serialize for Colour {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a transport is by its protocol, not by measurement: each transport's file declares its
/// own, and the recommendation's hard rules and the report's reference row read only these.
#[derive(Clone, Copy, Debug, Serialize)]
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
    /// Subscribers share connections (HTTP/2 streams): a browser's six connections per
    /// origin do not limit it, but it needs HTTP/2 end to end.
    pub multiplexed: bool,
    /// What keeps a held connection from looking idle to the network between events.
    pub keep_alive: KeepAlive,
    /// How many HTTP requests delivery takes.
    pub requests: Requests,
    /// How a consumer that was away gets what it missed.
    pub redelivery: Redelivery,
    /// Carried on UDP (QUIC), which every firewall and middlebox on the path must let
    /// through; its server listens on the UDP port of its address's number.
    pub udp: bool,
    /// The physical floor the other transports are measured against.
    pub floor: bool,
}

/// How many requests a consumer's deliveries take.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "paced-by")]
pub enum Requests {
    /// One connection for the whole stream.
    Stream,
    /// One per answered batch, and at least one per hold (the setting that sets the hold).
    PerAnswer(#[serde(serialize_with = "setting_name")] &'static Setting<std::time::Duration>),
    /// One per polling interval, events or not; latency follows the interval (the setting).
    PerInterval(#[serde(serialize_with = "setting_name")] &'static Setting<std::time::Duration>),
    /// One per event.
    PerEvent,
}

impl Requests {
    /// The setting that paces requests, if one does.
    pub fn pace(&self) -> Option<&'static Setting<std::time::Duration>> {
        match *self {
            Requests::PerAnswer(setting) | Requests::PerInterval(setting) => Some(setting),
            Requests::Stream | Requests::PerEvent => None,
        }
    }
}

fn setting_name<S: serde::Serializer>(
    setting: &&'static Setting<std::time::Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(setting.name)
}

/// What a quiet connection carries, so that a network cutting idle connections leaves it be.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "paced-by")]
pub enum KeepAlive {
    /// The server writes every heartbeat (WebSocket pings, SSE comments, HTTP/2 PINGs).
    Heartbeat,
    /// Each held request is answered within its hold (the setting that paces requests).
    Requests,
    /// The client pings the server at the interval of this setting (MQTT's PINGREQ).
    ClientPing(#[serde(serialize_with = "setting_name")] &'static Setting<std::time::Duration>),
    /// Nothing: a quiet connection sends nothing at all.
    Nothing,
}

/// How missed events reach a consumer after downtime or a dropped connection.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "how")]
pub enum Redelivery {
    /// The protocol and its standard client resume on their own (how, in words).
    BuiltIn(&'static str),
    /// The provider retries until the consumer answers (how, in words), for at most as long as
    /// its retry schedule spans under the given settings.
    Retries(&'static str, #[serde(skip)] RetrySpan),
    /// Possible, but the application builds it (how pushbench does, in words).
    Application(&'static str),
}

/// The longest a provider keeps retrying one event under these settings: how much consumer
/// downtime its retries can carry events across.
pub type RetrySpan = fn(&super::SettingValues) -> std::time::Duration;
