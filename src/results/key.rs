//! The one key that tells a row's series from every other: what was measured (the transport,
//! which implementation of its server and client, which server it went through, the workload's
//! shape), at what (subscribers, payload, swept settings) and in which round. A row is a series
//! at one offered rate, which the row carries beside its key (the axis `--find-max` steps).
//! Tables, reports, `compare`, plots and `recommend`'s grouping of evidence all read this key
//! and its [`RowKey::label`]; nothing else builds a row's name.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::PayloadSizes;
use crate::settings::SettingValues;
use crate::transport::implementation::OWN;
use crate::transport::Transport;

/// What one row measured, apart from its offered rate. Every dimension a later schema added
/// has a default, so older results read as pushbench's own server and client, broadcast, and
/// round 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RowKey {
    /// The transport.
    #[schemars(with = "String")]
    pub transport: Transport,
    /// The implementation of its server that ran (`pushbench`: pushbench's own).
    #[serde(default = "own")]
    pub server_impl: String,
    /// The implementation of its client that ran.
    #[serde(default = "own")]
    pub client_impl: String,
    /// The server the subscribers went to: an outside server's profile, or `pushbench`
    /// (`serve`, pushbench's own).
    #[serde(default = "own")]
    pub server: String,
    /// The shape of the workload and its parameters.
    #[serde(default)]
    pub workload: Workload,
    /// Concurrent subscribers.
    pub subscribers: usize,
    /// Payload size(s), bytes.
    #[schemars(with = "String")]
    pub payload: PayloadSizes,
    /// The settings swept in this scenario, with this row's values: what tells it from its
    /// siblings (empty when nothing was swept).
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub variant: SettingValues,
    /// Which round of the scenario (from 0).
    #[serde(default)]
    pub round: u32,
}

/// pushbench's own: the default implementation and server.
fn own() -> String {
    OWN.to_owned()
}

/// The shape of what the server sends to whom.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// One stream, every event to every subscriber.
    #[default]
    Broadcast,
    /// Rooms: several streams, each subscriber following some.
    Topics,
    /// One stream per subscriber.
    Unicast,
}

impl Shape {
    /// As written in results and labels.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Broadcast => "broadcast",
            Shape::Topics => "topics",
            Shape::Unicast => "unicast",
        }
    }
}

/// A workload: its shape and the parameters that shape takes (none for broadcast).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Workload {
    /// The shape.
    pub shape: Shape,
    /// Its parameters, canonical text by name.
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    pub params: SettingValues,
}

impl Workload {
    /// The recorded form of a workload that ran.
    pub fn of(workload: &crate::workload::Workload) -> Self {
        use crate::workload::Workload as Ran;
        Self {
            shape: match workload {
                Ran::Broadcast => Shape::Broadcast,
                Ran::Topics { .. } => Shape::Topics,
                Ran::Unicast => Shape::Unicast,
            },
            params: SettingValues::from_pairs(workload.params()),
        }
    }

    /// Whether it is the default: every event to every subscriber.
    pub fn is_broadcast(&self) -> bool {
        self.shape == Shape::Broadcast && self.params.is_empty()
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shape.name())?;
        if !self.params.is_empty() {
            write!(f, "({})", self.params.label())?;
        }
        Ok(())
    }
}

impl RowKey {
    /// The key of the row this run is a round of: the same, in no particular round.
    pub fn of_every_round(&self) -> Self {
        Self {
            round: 0,
            ..self.clone()
        }
    }

    /// The key of a row of pushbench's own server and client, broadcasting, in round 0.
    pub fn own(
        transport: Transport,
        subscribers: usize,
        payload: PayloadSizes,
        variant: SettingValues,
    ) -> Self {
        Self {
            transport,
            server_impl: own(),
            client_impl: own(),
            server: own(),
            workload: Workload::default(),
            subscribers,
            payload,
            variant,
            round: 0,
        }
    }

    /// How the row is named wherever it is shown: the transport, then each dimension that is
    /// not the default (`websocket server-impl=tokio-tungstenite`, `sse server=nchan`,
    /// `longpoll longpoll-hold=2s`), so rows that differ stay apart. Subscribers, payload and
    /// rate are shown in columns of their own.
    pub fn label(&self) -> String {
        let mut label = self.transport.name().to_owned();
        // pushbench's own implementation may run someone else's server (an embedded broker):
        // named as an outside server is.
        let runs = self
            .transport
            .spec()
            .servers
            .iter()
            .find(|s| s.name == self.server_impl)
            .and_then(|s| s.runs);
        let server = match (self.server.as_str(), runs) {
            (OWN, Some(runs)) => runs,
            (server, _) => server,
        };
        for (name, value) in [
            ("server-impl", self.server_impl.as_str()),
            ("client-impl", self.client_impl.as_str()),
            ("server", server),
        ] {
            if value != OWN {
                label.push_str(&format!(" {name}={value}"));
            }
        }
        if !self.workload.is_broadcast() {
            label.push_str(&format!(" workload={}", self.workload));
        }
        if !self.variant.is_empty() {
            label.push(' ');
            label.push_str(&self.variant.label());
        }
        if self.round > 0 {
            label.push_str(&format!(" round={}", self.round));
        }
        label
    }

    /// The same series of another transport: everything but the transport, its
    /// implementations and its swept settings (for lining transports up).
    pub fn setting(&self) -> (usize, &PayloadSizes) {
        (self.subscribers, &self.payload)
    }
}

impl fmt::Display for RowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's name carries every dimension that is not the default, so sibling rows differ;
    /// the default dimensions leave the name as it always was.
    #[test]
    fn labels_name_what_differs() {
        let payload: PayloadSizes = "64".parse().unwrap();
        let plain = RowKey::own(
            Transport::ALL[0],
            1,
            payload.clone(),
            SettingValues::default(),
        );
        assert_eq!(plain.label(), Transport::ALL[0].name());
        let swept = SettingValues::from_pairs([("some-setting".to_owned(), "2s".to_owned())]);
        let mut key = RowKey::own(Transport::ALL[0], 1, payload, swept);
        key.server_impl = "other".into();
        key.round = 2;
        assert_eq!(
            key.label(),
            format!(
                "{} server-impl=other some-setting=2s round=2",
                Transport::ALL[0].name()
            )
        );
    }

    /// Results written before the key had implementations, servers, workloads and rounds read
    /// as pushbench's own, broadcast, round 0.
    #[test]
    fn older_keys_read_with_defaults() {
        let name = Transport::ALL[0].name();
        let json = format!(r#"{{"transport":"{name}","subscribers":3,"payload":64}}"#);
        let key: RowKey = serde_json::from_str(&json).unwrap();
        assert_eq!(
            key,
            RowKey::own(
                Transport::ALL[0],
                3,
                "64".parse().unwrap(),
                SettingValues::default()
            )
        );
    }
}
