//! Where and how a client subscribes: the server's address, the name it answers to, the path
//! (a server pushbench did not write may serve its stream elsewhere than the transport's own
//! path) and what else the transport needs to find the stream. TLS trust travels in the
//! client's config, with the rest of what it is set up with.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A subscription's target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The name the server answers to, for the HTTP `Host` header (absent: the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path (with any query) to subscribe at (absent: the transport's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What the transport needs besides, by name (a broker's topic, say).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl Target {
    /// pushbench's own server at `addr`: its own paths, no name.
    pub fn at(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: None,
            path: None,
            params: BTreeMap::new(),
        }
    }

    /// The path to subscribe at: the target's, or the transport's `own`.
    pub fn path_or<'a>(&'a self, own: &'a str) -> &'a str {
        self.path.as_deref().unwrap_or(own)
    }

    /// The path to request: the target's (or the transport's `own`), with `query` joined to
    /// any query it already has.
    pub fn request_path(&self, own: &str, query: Option<&str>) -> String {
        let path = self.path_or(own);
        match query {
            None => path.to_owned(),
            Some(query) if path.contains('?') => format!("{path}&{query}"),
            Some(query) => format!("{path}?{query}"),
        }
    }

    /// The `Host` header's value: the name, or the address.
    pub fn authority(&self) -> String {
        match &self.host {
            Some(host) => format!("{host}:{}", self.addr.port()),
            None => self.addr.to_string(),
        }
    }

    /// A transport's own parameter, if the target names it.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

impl From<SocketAddr> for Target {
    fn from(addr: SocketAddr) -> Self {
        Self::at(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target without a path or name falls back to the transport's own path and the
    /// address; one with them uses them.
    #[test]
    fn defaults_and_overrides() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let own = Target::at(addr);
        assert_eq!(own.path_or("/sse"), "/sse");
        assert_eq!(own.authority(), "127.0.0.1:8080");
        let other = Target {
            host: Some("push.example".into()),
            path: Some("/sub/stream?id=1".into()),
            ..Target::at(addr)
        };
        assert_eq!(other.path_or("/sse"), "/sub/stream?id=1");
        assert_eq!(other.authority(), "push.example:8080");
        assert_eq!(own.request_path("/ws", Some("after=3")), "/ws?after=3");
        assert_eq!(
            other.request_path("/sse", Some("after=3")),
            "/sub/stream?id=1&after=3"
        );
        let json = serde_json::to_string(&own).unwrap();
        assert_eq!(json, r#"{"addr":"127.0.0.1:8080"}"#);
    }
}
