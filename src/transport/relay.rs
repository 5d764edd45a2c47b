//! A relay in front of an endpoint a subscriber listens on (a webhook consumer's), so that what
//! the server sends it crosses the same link as subscribers' own connections do. The layer
//! above provides it (the load puts the link emulator there); a transport only asks it for the
//! address to give the server instead of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

/// The address a relay listens on for one endpoint, once it does.
pub type Fronting = Pin<Box<dyn Future<Output = std::io::Result<SocketAddr>> + Send>>;

/// Puts a relay in front of an endpoint and says where it listens.
#[derive(Clone)]
pub struct Relay(Arc<dyn Fn(SocketAddr) -> Fronting + Send + Sync>);

impl Relay {
    /// A relay made by `front`, which starts one in front of the endpoint it is given.
    pub fn new(front: impl Fn(SocketAddr) -> Fronting + Send + Sync + 'static) -> Self {
        Self(Arc::new(front))
    }

    /// Starts a relay in front of `endpoint`: the address the server should reach it at.
    pub async fn front(&self, endpoint: SocketAddr) -> std::io::Result<SocketAddr> {
        (self.0)(endpoint).await
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relay")
    }
}
