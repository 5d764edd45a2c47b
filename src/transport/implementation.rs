//! A transport's implementations: pushbench's own server and client, and beside them the
//! libraries people deploy, each one file in the transport's folder and one entry in its
//! `SPEC.servers` or `SPEC.clients`. The first entry is the default; which one runs is the
//! row's `server_impl` and `client_impl`, chosen with `--server-impl` and `--client-impl`
//! where a transport has more than one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{ClientConfig, ClientError, ServerConfig, Sink, Target, Transport};
use crate::hub::Hub;
use crate::settings::{Setting, SettingValues, Side, Value};

/// The name of pushbench's own implementation, every transport's first.
pub const OWN: &str = "pushbench";

/// A running server, boxed so that implementations can be listed side by side.
pub type ServeFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// A running subscription, boxed likewise (one box per subscription, none per event).
pub type SubscribeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send + 'a>>;

/// One implementation of a transport's server.
pub struct ServerImpl {
    /// Its name in flags and results (`pushbench`, or the library's).
    pub name: &'static str,
    /// What it is, in one line.
    pub summary: &'static str,
    /// The server it runs where that is not pushbench's own code (MQTT's embedded rumqttd
    /// broker), named in its rows as an outside server is (`mqtt server=rumqttd`), so that no
    /// row presents one broker's cost as its protocol's.
    pub runs: Option<&'static str>,
    /// Serves subscribers on the listener until the token fires.
    pub serve:
        fn(tokio::net::TcpListener, Arc<Hub>, ServerConfig, CancellationToken) -> ServeFuture,
    /// What it cannot do with these settings (a library without permessage-deflate asked to
    /// compress), refused with the reason wherever it is chosen: before a run, `serve` or `load`.
    pub refuses: Refusal,
}

/// One implementation of a transport's client.
pub struct ClientImpl {
    /// Its name in flags and results.
    pub name: &'static str,
    /// What it is, in one line.
    pub summary: &'static str,
    /// Subscribes to the target, feeding the sink until it stops or the stream ends.
    pub subscribe:
        for<'a> fn(&'a Target, &'a ClientConfig, &'a mut dyn Sink) -> SubscribeFuture<'a>,
    /// What it cannot do with these settings, as for a server.
    pub refuses: Refusal,
}

/// The reason an implementation cannot run with some settings, or `None` where it can.
pub type Refusal = fn(&SettingValues) -> Option<String>;

/// An implementation that does whatever its transport's settings ask.
pub fn refuses_nothing(_: &SettingValues) -> Option<String> {
    None
}

/// A server implementation from its `serve` function (in the transport's `server.rs`).
macro_rules! server_impl {
    ($name:expr, $summary:expr, $serve:path) => {
        server_impl!(
            $name,
            $summary,
            $serve,
            $crate::transport::implementation::refuses_nothing
        )
    };
    ($name:expr, $summary:expr, $serve:path, $refuses:path) => {
        server_impl!($name, $summary, $serve, $refuses, None)
    };
    ($name:expr, $summary:expr, $serve:path, $refuses:path, $runs:expr) => {
        $crate::transport::ServerImpl {
            name: $name,
            summary: $summary,
            runs: $runs,
            serve: |listener, hub, config, shutdown| {
                Box::pin($serve(listener, hub, config, shutdown))
            },
            refuses: $refuses,
        }
    };
}

/// A client implementation from its `subscribe` function (in the transport's `client.rs`).
macro_rules! client_impl {
    ($name:expr, $summary:expr, $subscribe:path) => {
        client_impl!(
            $name,
            $summary,
            $subscribe,
            $crate::transport::implementation::refuses_nothing
        )
    };
    ($name:expr, $summary:expr, $subscribe:path, $refuses:path) => {
        $crate::transport::ClientImpl {
            name: $name,
            summary: $summary,
            subscribe: |target, config, sink| Box::pin($subscribe(target, config, sink)),
            refuses: $refuses,
        }
    };
}

/// Which server implementation runs, for a transport that has more than one.
pub static SERVER_IMPL: Setting<Implementation> = Setting {
    name: "server-impl",
    help: "Which implementation of the transport's server runs: pushbench's own, or a library \
           people deploy (`pushbench transports` lists each transport's)",
    side: Side::Server,
    default: Implementation(OWN),
    min: Implementation(OWN),
};

/// Which client implementation runs, for a transport that has more than one.
pub static CLIENT_IMPL: Setting<Implementation> = Setting {
    name: "client-impl",
    help: "Which implementation of the transport's client the subscribers run: pushbench's \
           own, or a library people deploy (`pushbench transports` lists each transport's)",
    side: Side::Client,
    default: Implementation(OWN),
    min: Implementation(OWN),
};

/// The name of an implementation some transport declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Implementation(pub &'static str);

impl PartialOrd for Implementation {
    /// Names are not ordered: none is below the default.
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (self == other).then_some(std::cmp::Ordering::Equal)
    }
}

impl Value for Implementation {
    const KIND: &'static str = "NAME";

    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let known: Vec<&'static str> = Transport::ALL
            .iter()
            .flat_map(|t| {
                let spec = t.spec();
                spec.servers
                    .iter()
                    .map(|s| s.name)
                    .chain(spec.clients.iter().map(|c| c.name))
            })
            .collect();
        known
            .iter()
            .find(|name| **name == text)
            .map(|name| Implementation(name))
            .ok_or_else(|| {
                let mut known = known.clone();
                known.sort_unstable();
                known.dedup();
                format!(
                    "no transport has an implementation named {text:?}; known: {}",
                    known.join(", ")
                )
            })
    }

    fn show(self) -> String {
        self.0.to_owned()
    }
}

impl Transport {
    /// Whether the implementations `settings` choose are this transport's (whether or not
    /// they can do what the settings ask).
    pub fn has_implementations(self, settings: &SettingValues) -> bool {
        let spec = self.spec();
        let chosen = |setting: &Setting<Implementation>| match settings.get(setting) {
            Ok(chosen) => chosen.unwrap_or(setting.default).0,
            // A name no transport has: not this one's either (refused where it is parsed).
            Err(_) => "",
        };
        spec.servers.iter().any(|s| s.name == chosen(&SERVER_IMPL))
            && spec.clients.iter().any(|c| c.name == chosen(&CLIENT_IMPL))
    }

    /// The server implementation `settings` choose (the first, pushbench's own, by default),
    /// refused where it cannot do what the settings ask.
    pub fn server_impl(self, settings: &SettingValues) -> Result<&'static ServerImpl, String> {
        let chosen = settings.get(&SERVER_IMPL)?.unwrap_or(SERVER_IMPL.default);
        let servers = self.spec().servers;
        let server = servers.iter().find(|s| s.name == chosen.0).ok_or_else(|| {
            let names: Vec<&str> = servers.iter().map(|s| s.name).collect();
            format!(
                "{self} has no server implementation {:?}: it has {}",
                chosen.0,
                names.join(", ")
            )
        })?;
        match (server.refuses)(settings) {
            Some(why) => Err(format!("{self}'s server {}: {why}", server.name)),
            None => Ok(server),
        }
    }

    /// The client implementation `settings` choose (the first, pushbench's own, by default),
    /// refused where it cannot do what the settings ask.
    pub fn client_impl(self, settings: &SettingValues) -> Result<&'static ClientImpl, String> {
        let chosen = settings.get(&CLIENT_IMPL)?.unwrap_or(CLIENT_IMPL.default);
        let clients = self.spec().clients;
        let client = clients.iter().find(|c| c.name == chosen.0).ok_or_else(|| {
            let names: Vec<&str> = clients.iter().map(|c| c.name).collect();
            format!(
                "{self} has no client implementation {:?}: it has {}",
                chosen.0,
                names.join(", ")
            )
        })?;
        match (client.refuses)(settings) {
            Some(why) => Err(format!("{self}'s client {}: {why}", client.name)),
            None => Ok(client),
        }
    }
}
