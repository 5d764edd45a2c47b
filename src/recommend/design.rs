//! A design, as flags or a TOML file (`designs/*.toml`) whose keys are the flags' names: who
//! consumes the events and how, how many and how fast, what the network in between does, and
//! what resources there are. Flags override the file; the result is one validated [`Design`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::transport::Transport;
use crate::workload::Workload;

/// Which way events (and messages) go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// A server pushes to browsers.
    ServerToBrowser,
    /// A server pushes to other servers.
    ServerToServer,
    /// Consumers also send on the same channel (chat, games, collaboration).
    Bidirectional,
}

/// Who receives the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Consumers {
    /// Web pages: only the browser's APIs, no inbound connections.
    Browsers,
    /// Backend services.
    Services,
    /// Devices (phones, sensors, embedded): little memory, often behind NAT.
    Devices,
}

/// What happens to events a consumer misses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Missed events may be lost.
    AtMostOnce,
    /// Every event must arrive, after reconnects and downtime too (duplicates allowed).
    AtLeastOnce,
}

/// Why a design cannot be used.
#[derive(Debug, Error)]
pub enum DesignError {
    /// The file could not be read.
    #[error("cannot read design {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid design (toml's message names the key and line).
    #[error("invalid design {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// A value out of range or a contradiction.
    #[error("invalid design: {0}")]
    Invalid(String),
}

/// Every constraint, each optional: once as flags, once as a design file's keys.
#[derive(Clone, Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DesignSettings {
    /// A name for the design (file: defaults to the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Which way events go.
    #[arg(long, value_enum)]
    pub direction: Option<Direction>,
    /// Who receives them.
    #[arg(long, value_enum)]
    pub consumers: Option<Consumers>,
    /// Consumers can accept inbound HTTP at a URL the server can reach (default: only services).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub inbound_http: Option<bool>,
    /// Concurrent subscribers (consumers).
    #[arg(long)]
    pub subscribers: Option<u64>,
    /// Subscriptions one consumer host holds (a service instance following many streams);
    /// default 1.
    #[arg(long)]
    pub subscribers_per_host: Option<u64>,
    /// Events per second each subscriber receives.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Payload bytes per event.
    #[arg(long)]
    pub payload: Option<u64>,
    /// The p99 latency budget, milliseconds.
    #[arg(long)]
    pub p99_budget_ms: Option<f64>,
    /// What happens to missed events.
    #[arg(long, value_enum)]
    pub delivery: Option<Delivery>,
    /// Seconds a consumer may be down (restart, deploy, outage) and still get every event.
    #[arg(long)]
    pub downtime_secs: Option<f64>,
    /// A proxy or load balancer in the path buffers responses (breaks streaming).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub buffering_proxy: Option<bool>,
    /// The network cuts connections idle for this many seconds.
    #[arg(long)]
    pub idle_timeout_secs: Option<f64>,
    /// The network lets WebSocket upgrades through.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub websocket_upgrades: Option<bool>,
    /// Only HTTP/1.1 reaches the consumers (browsers allow six connections per origin).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub http1_only: Option<bool>,
    /// The network lets UDP through to the server (QUIC, HTTP/3); default true.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub udp: Option<bool>,
    /// The percentage of packets the consumers' network loses (a mobile network's 1 to 5):
    /// only figures measured at that loss stand for it (`run --packet-loss`); default 0.
    #[arg(long)]
    pub packet_loss: Option<f64>,
    /// Most memory per held connection, bytes, on either end.
    #[arg(long)]
    pub memory_per_connection: Option<u64>,
    /// Most server CPU cores for delivery.
    #[arg(long)]
    pub cpu_cores: Option<f64>,
    /// The connections are encrypted (TLS): only figures measured with TLS stand for it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub tls: Option<bool>,
    /// Who gets which events: `broadcast` (every event to everyone, the default), `topics`
    /// (rooms, channels) or `unicast` (one stream per consumer).
    #[arg(long)]
    pub workload: Option<String>,
    /// Rooms of a `topics` design.
    #[arg(long)]
    pub topics: Option<u32>,
    /// Rooms each consumer is in (default 1).
    #[arg(long)]
    pub topics_per_subscriber: Option<u32>,
    /// How consumers spread over rooms: `uniform`, `zipf:S` (a few big rooms) or `even`
    /// (every room the same size).
    #[arg(long)]
    pub membership: Option<String>,
    /// Messages per second each consumer sends up (a `bidirectional` design; default 0).
    #[arg(long)]
    pub upstream_rate: Option<f64>,
    /// The server copies each message up to the sender's room (chat, lobbies, shared
    /// documents): the design's budget is then the round trip's.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub echo: Option<bool>,
    /// Connections that close and reopen per second across the consumers (mobile clients
    /// coming and going): judged by what the ledgers kept under measured churn.
    #[arg(long)]
    pub churn: Option<u64>,
    /// Every consumer comes back at once after a deploy or a network blip: judged by how
    /// fast a measured close storm of as many subscribers was caught up.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub storms: Option<bool>,
    /// The libraries the design will deploy, by implementation name (`pushbench transports`
    /// lists each transport's: tokio-tungstenite, axum-sse, eventsource-client, reqwest...):
    /// a transport's figures then come from its rows of the one named, where it has one, and
    /// from pushbench's own elsewhere.
    #[arg(long, value_delimiter = ',')]
    pub deploys: Option<Vec<String>>,
}

/// A validated design.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Design {
    /// Name.
    pub name: String,
    /// Which way events go.
    pub direction: Direction,
    /// Who receives them.
    pub consumers: Consumers,
    /// Consumers accept inbound HTTP.
    pub inbound_http: bool,
    /// Concurrent subscribers.
    pub subscribers: u64,
    /// Subscriptions one consumer host holds.
    #[serde(default = "one")]
    pub subscribers_per_host: u64,
    /// Events per second per subscriber.
    pub rate: f64,
    /// Payload bytes per event.
    pub payload: u64,
    /// p99 budget, milliseconds.
    pub p99_budget_ms: f64,
    /// What happens to missed events.
    pub delivery: Delivery,
    /// Seconds a consumer may be down.
    pub downtime_secs: f64,
    /// A proxy buffers responses.
    pub buffering_proxy: bool,
    /// Idle connections are cut after this many seconds.
    pub idle_timeout_secs: Option<f64>,
    /// WebSocket upgrades pass.
    pub websocket_upgrades: bool,
    /// Only HTTP/1.1.
    pub http1_only: bool,
    /// UDP passes (QUIC can reach the server).
    #[serde(default = "yes")]
    pub udp: bool,
    /// The percentage of packets the network loses.
    #[serde(default)]
    pub packet_loss: f64,
    /// Most memory per held connection, bytes.
    pub memory_per_connection: Option<u64>,
    /// Most server CPU cores.
    pub cpu_cores: Option<f64>,
    /// Connections are encrypted.
    #[serde(default)]
    pub tls: bool,
    /// Who gets which events.
    #[serde(default)]
    pub workload: Workload,
    /// Messages per second each consumer sends up (0: none).
    #[serde(default)]
    pub upstream_rate: f64,
    /// Each message up is copied to the sender's room.
    #[serde(default)]
    pub echo: bool,
    /// Connections closed and reopened per second across the consumers (0: none).
    #[serde(default)]
    pub churn: u64,
    /// Every consumer reconnects at once after a deploy or a blip.
    #[serde(default)]
    pub storms: bool,
    /// The implementations the design deploys (none: pushbench's own everywhere).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deploys: Vec<String>,
}

/// The implementations and servers a design names, each one some transport has or a shipped
/// server profile.
fn deployed(names: Vec<String>) -> Result<Vec<String>, DesignError> {
    use crate::settings::Value as _;
    for name in &names {
        let server = crate::profile::ServerChoice::parse(name).is_ok_and(|s| s.0.is_some());
        if !server {
            crate::transport::Implementation::parse(name).map_err(|why| {
                DesignError::Invalid(format!(
                    "deploys: {why}, and no server profile is named {name:?} (`pushbench \
                     servers` lists them)"
                ))
            })?;
        }
    }
    Ok(names)
}

impl Design {
    /// The server implementation, client implementation and server whose figures stand for
    /// `transport` in this design: the ones it deploys where the transport has them (a server
    /// profile with subscribers of it), pushbench's own elsewhere.
    pub fn implementations(&self, transport: Transport) -> [&str; 3] {
        implementations(&self.deploys, transport)
    }
}

/// The server implementation, client implementation and server `deploys` names for
/// `transport`, each pushbench's own where none of the names is the transport's.
pub(crate) fn implementations(deploys: &[String], transport: Transport) -> [&str; 3] {
    use crate::settings::Value as _;
    let spec = transport.spec();
    let named = |names: Vec<&str>| {
        deploys
            .iter()
            .map(String::as_str)
            .find(|name| names.contains(name))
            .unwrap_or(crate::transport::implementation::OWN)
    };
    let servers: Vec<&str> = deploys
        .iter()
        .map(String::as_str)
        .filter(|name| {
            crate::profile::ServerChoice::parse(name)
                .ok()
                .and_then(|s| s.0)
                .is_some_and(|p| p.subscription(transport.name()).is_ok())
        })
        .collect();
    [
        named(spec.servers.iter().map(|s| s.name).collect()),
        named(spec.clients.iter().map(|c| c.name).collect()),
        named(servers),
    ]
}

impl DesignSettings {
    /// Reads a design file.
    pub fn from_file(path: &Path) -> Result<Self, DesignError> {
        let text = std::fs::read_to_string(path).map_err(|source| DesignError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut settings = Self::from_toml(&text).map_err(|message| DesignError::Parse {
            path: path.to_owned(),
            message,
        })?;
        if settings.name.is_none() {
            settings.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(settings)
    }

    /// Parses a design's TOML text (toml's message names the key and line).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// These settings, with `over`'s where it has them.
    pub fn overridden_by(self, over: DesignSettings) -> DesignSettings {
        DesignSettings {
            name: over.name.or(self.name),
            direction: over.direction.or(self.direction),
            consumers: over.consumers.or(self.consumers),
            inbound_http: over.inbound_http.or(self.inbound_http),
            subscribers: over.subscribers.or(self.subscribers),
            subscribers_per_host: over.subscribers_per_host.or(self.subscribers_per_host),
            rate: over.rate.or(self.rate),
            payload: over.payload.or(self.payload),
            p99_budget_ms: over.p99_budget_ms.or(self.p99_budget_ms),
            delivery: over.delivery.or(self.delivery),
            downtime_secs: over.downtime_secs.or(self.downtime_secs),
            buffering_proxy: over.buffering_proxy.or(self.buffering_proxy),
            idle_timeout_secs: over.idle_timeout_secs.or(self.idle_timeout_secs),
            websocket_upgrades: over.websocket_upgrades.or(self.websocket_upgrades),
            http1_only: over.http1_only.or(self.http1_only),
            udp: over.udp.or(self.udp),
            packet_loss: over.packet_loss.or(self.packet_loss),
            memory_per_connection: over.memory_per_connection.or(self.memory_per_connection),
            cpu_cores: over.cpu_cores.or(self.cpu_cores),
            tls: over.tls.or(self.tls),
            workload: over.workload.or(self.workload),
            topics: over.topics.or(self.topics),
            topics_per_subscriber: over.topics_per_subscriber.or(self.topics_per_subscriber),
            membership: over.membership.or(self.membership),
            upstream_rate: over.upstream_rate.or(self.upstream_rate),
            echo: over.echo.or(self.echo),
            churn: over.churn.or(self.churn),
            storms: over.storms.or(self.storms),
            deploys: over.deploys.or(self.deploys),
        }
    }

    /// Checks the settings and fills in defaults.
    pub fn resolve(self) -> Result<Design, DesignError> {
        let (consumers, direction, inbound_http) = self.channel()?;
        let (subscribers, subscribers_per_host) = self.fan_out()?;
        let (upstream_rate, echo) = self.two_way(direction)?;
        Ok(Design {
            name: self.name.unwrap_or_else(|| "custom".into()),
            direction,
            consumers,
            inbound_http,
            subscribers,
            subscribers_per_host,
            rate: positive(self.rate, "rate", 10.0)?,
            payload: self.payload.unwrap_or(256),
            p99_budget_ms: positive(self.p99_budget_ms, "p99-budget-ms", 1000.0)?,
            delivery: self.delivery.unwrap_or(Delivery::AtMostOnce),
            downtime_secs: non_negative(self.downtime_secs, "downtime-secs")?,
            buffering_proxy: self.buffering_proxy.unwrap_or(false),
            idle_timeout_secs: self
                .idle_timeout_secs
                .map(|v| positive(Some(v), "idle-timeout-secs", v))
                .transpose()?,
            websocket_upgrades: self.websocket_upgrades.unwrap_or(true),
            http1_only: self.http1_only.unwrap_or(false),
            udp: self.udp.unwrap_or(true),
            packet_loss: match self.packet_loss {
                Some(loss) if !(0.0..100.0).contains(&loss) => {
                    return Err(DesignError::Invalid(format!(
                        "packet-loss {loss}: expected a percentage from 0 up to (not including) 100"
                    )))
                }
                loss => loss.unwrap_or(0.0),
            },
            memory_per_connection: self.memory_per_connection,
            cpu_cores: self
                .cpu_cores
                .map(|v| positive(Some(v), "cpu-cores", v))
                .transpose()?,
            tls: self.tls.unwrap_or(false),
            workload: Workload::parse(
                self.workload.as_deref().unwrap_or("broadcast"),
                self.topics,
                self.topics_per_subscriber,
                self.membership.as_deref(),
            )
            .map_err(|why| DesignError::Invalid(why.replace("--", "")))?,
            upstream_rate,
            echo,
            churn: self.churn.unwrap_or(0),
            storms: self.storms.unwrap_or(false),
            deploys: deployed(self.deploys.unwrap_or_default())?,
        })
    }

    /// Who consumes, which way events go and whether consumers take inbound HTTP: each
    /// defaulted from the ones given, and contradictions refused.
    fn channel(&self) -> Result<(Consumers, Direction, bool), DesignError> {
        let invalid = |why: String| Err(DesignError::Invalid(why));
        let consumers = self.consumers.unwrap_or(Consumers::Services);
        let direction = self.direction.unwrap_or(match consumers {
            Consumers::Browsers => Direction::ServerToBrowser,
            _ => Direction::ServerToServer,
        });
        if consumers == Consumers::Browsers && direction == Direction::ServerToServer {
            return invalid("direction server-to-server contradicts consumers = browsers".into());
        }
        if consumers != Consumers::Browsers && direction == Direction::ServerToBrowser {
            return invalid(format!(
                "direction server-to-browser needs consumers = browsers, not {consumers:?}"
            ));
        }
        let inbound_http = self
            .inbound_http
            .unwrap_or(consumers == Consumers::Services);
        if inbound_http && consumers == Consumers::Browsers {
            return invalid("browsers cannot accept inbound HTTP: set inbound-http = false".into());
        }
        Ok((consumers, direction, inbound_http))
    }

    /// Subscribers, and how many share one consumer host.
    fn fan_out(&self) -> Result<(u64, u64), DesignError> {
        let subscribers = self.subscribers.unwrap_or(100);
        if subscribers == 0 {
            return Err(DesignError::Invalid(
                "subscribers must be at least 1".into(),
            ));
        }
        let per_host = self.subscribers_per_host.unwrap_or(1);
        if per_host == 0 || per_host > subscribers {
            return Err(DesignError::Invalid(format!(
                "subscribers-per-host must be from 1 to subscribers ({subscribers}), got \
                 {per_host}"
            )));
        }
        Ok((subscribers, per_host))
    }

    /// Messages each consumer sends up a second, and whether the server copies them to the
    /// sender's room: only over a channel used both ways.
    fn two_way(&self, direction: Direction) -> Result<(f64, bool), DesignError> {
        let upstream_rate = non_negative(self.upstream_rate, "upstream-rate")?;
        if upstream_rate > 0.0 && direction != Direction::Bidirectional {
            return Err(DesignError::Invalid(format!(
                "upstream-rate {upstream_rate} needs direction = \"bidirectional\": consumers \
                 that send up use the channel both ways"
            )));
        }
        let echo = self.echo.unwrap_or(false);
        if echo && upstream_rate == 0.0 {
            return Err(DesignError::Invalid(
                "echo needs upstream-rate: there is nothing to copy".into(),
            ));
        }
        Ok((upstream_rate, echo))
    }
}

/// `value`, or `default` when not given; refused unless a positive number.
fn positive(value: Option<f64>, key: &str, default: f64) -> Result<f64, DesignError> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(DesignError::Invalid(format!(
            "{key} must be a positive number, got {v}"
        ))),
        v => Ok(v.unwrap_or(default)),
    }
}

/// `value`, or zero when not given; refused unless zero or more.
fn non_negative(value: Option<f64>, key: &str) -> Result<f64, DesignError> {
    match value {
        Some(v) if !(v.is_finite() && v >= 0.0) => Err(DesignError::Invalid(format!(
            "{key} must be zero or more, got {v}"
        ))),
        v => Ok(v.unwrap_or(0.0)),
    }
}

/// A design without the key holds one subscription per consumer host.
fn one() -> u64 {
    1
}

impl Design {
    /// The design in one line.
    pub fn sentence(&self) -> String {
        let direction = match self.direction {
            Direction::ServerToBrowser => "server to browsers",
            Direction::ServerToServer => "server to servers",
            Direction::Bidirectional => "both ways",
        };
        let consumers = match self.consumers {
            Consumers::Browsers => "browsers",
            Consumers::Services => "backend services",
            Consumers::Devices => "devices",
        };
        let delivery = match self.delivery {
            Delivery::AtMostOnce => "at most once".to_string(),
            Delivery::AtLeastOnce if self.downtime_secs > 0.0 => {
                format!(
                    "at least once, across {} s of consumer downtime",
                    self.downtime_secs
                )
            }
            Delivery::AtLeastOnce => "at least once".to_string(),
        };
        let shape = match self.workload {
            Workload::Broadcast => String::new(),
            Workload::Unicast => ", one stream each".to_owned(),
            Workload::Topics {
                topics,
                per_subscriber,
                ..
            } => format!(", in {per_subscriber} of {topics} rooms each"),
        };
        let up = match (self.upstream_rate, self.echo) {
            (r, _) if r <= 0.0 => String::new(),
            (r, true) => format!(", {r} msg/s up each, copied to the room"),
            (r, false) => format!(", {r} msg/s up each"),
        };
        let comings_and_goings = match (self.churn, self.storms) {
            (0, false) => String::new(),
            (0, true) => ", all reconnecting at once after deploys".into(),
            (churn, false) => format!(", {churn} reconnections a second"),
            (churn, true) => {
                format!(", {churn} reconnections a second and all at once after deploys")
            }
        };
        format!(
            "{direction}, {} {consumers}{}{}{shape}, {} ev/s each{up}, {} B payloads, p99 within {} ms, {delivery}{comings_and_goings}",
            self.subscribers,
            if self.subscribers_per_host > 1 {
                format!(" ({} per host)", self.subscribers_per_host)
            } else {
                String::new()
            },
            if self.inbound_http { " that accept inbound HTTP" } else { "" },
            self.rate,
            self.payload,
            self.p99_budget_ms
        )
    }
}

/// The default of a design's fact that holds unless it says otherwise.
fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file's keys are the flags' names; unknown keys and contradictions are refused.
    #[test]
    fn parse_and_validate() {
        let design = DesignSettings::from_toml(
            "consumers = \"browsers\"\nsubscribers = 5000\nbuffering-proxy = true\n",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(design.direction, Direction::ServerToBrowser);
        assert!(!design.inbound_http && design.buffering_proxy);
        let unknown = DesignSettings::from_toml("fan-out = 3\n").unwrap_err();
        assert!(
            unknown.contains("fan-out") && unknown.contains("line 1"),
            "{unknown}"
        );
        let contradiction =
            DesignSettings::from_toml("consumers = \"browsers\"\ninbound-http = true\n")
                .unwrap()
                .resolve()
                .unwrap_err();
        assert!(contradiction.to_string().contains("inbound"));
        for per_host in [0, 11] {
            let refused = DesignSettings::from_toml(&format!(
                "subscribers = 10\nsubscribers-per-host = {per_host}\n"
            ))
            .unwrap()
            .resolve()
            .unwrap_err();
            assert!(
                refused
                    .to_string()
                    .contains("subscribers-per-host must be from 1 to"),
                "{refused}"
            );
        }
    }
}
