//! Connections shared by the subscribers of one process, as a browser (or a gRPC channel)
//! multiplexes every stream to an origin over one HTTP/2 connection: what the multiplexed
//! transports (`sse-h2`, `grpc`) share. Each load worker opens `--http2-connections` to a server
//! on first use, hands them out round robin, and opens one again once it closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper::client::conn::http2::SendRequest;

use super::{ClientConfig, ClientError};
use crate::settings::{Setting, Side};

/// How many connections a load worker's subscribers share.
pub static CONNECTIONS: Setting<u64> = Setting {
    name: "http2-connections",
    help: "HTTP/2 connections each load worker multiplexes its subscribers over, round robin \
           (a browser holds one per origin)",
    side: Side::Client,
    default: 1,
    min: 1,
};

/// Every server's shared connections in this process, for requests with bodies of type `B`.
pub(crate) struct Multiplexed<B> {
    servers: Mutex<HashMap<SocketAddr, Arc<Shared<B>>>>,
}

impl<B> Default for Multiplexed<B> {
    fn default() -> Self {
        Self {
            servers: Mutex::default(),
        }
    }
}

impl<B> Multiplexed<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A sender for a request to `server`: on the next of its shared connections in turn, or,
    /// for the slow consumer, on a connection of its own (it reads slowly, which would slow
    /// everyone sharing its connection, as a separate browser would not).
    pub(crate) async fn sender(
        &self,
        server: SocketAddr,
        config: &ClientConfig,
    ) -> Result<SendRequest<B>, ClientError> {
        if config.read_rate.is_some() {
            return config.dialer().http2(server).await;
        }
        let count = usize::try_from(CONNECTIONS.read(&config.settings))
            .unwrap_or(1)
            .max(1);
        let shared = {
            let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
            let entry = servers
                .entry(server)
                .or_insert_with(|| Arc::new(Shared::new(count)));
            if entry.slots.len() != count {
                *entry = Arc::new(Shared::new(count));
            }
            Arc::clone(entry)
        };
        shared.sender(server, config).await
    }
}

/// The connections to one server, each opened on first use.
struct Shared<B> {
    slots: Vec<tokio::sync::Mutex<Option<SendRequest<B>>>>,
    next: AtomicUsize,
}

impl<B> Shared<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn new(count: usize) -> Self {
        Self {
            slots: (0..count).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A sender on the next connection in turn, opening it if it is not open.
    async fn sender(
        &self,
        server: SocketAddr,
        config: &ClientConfig,
    ) -> Result<SendRequest<B>, ClientError> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        // Held while connecting, so subscribers arriving together share one connection rather
        // than each opening their own.
        let mut slot = self.slots[turn].lock().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let sender = config.dialer().http2(server).await?;
        *slot = Some(sender.clone());
        Ok(sender)
    }
}
