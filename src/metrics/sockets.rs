//! Counters kept at the sockets: connections accepted and bytes read and written through them,
//! HTTP headers, WebSocket and SSE framing included. Each transport counts on the side that
//! accepts connections (the server, or for webhooks the consumer), so one side counts everything.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Shared, lock-free counters for every socket accepted by one listener.
#[derive(Debug, Default)]
pub struct SocketCounters {
    connections: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    write_timeouts: AtomicU64,
}

/// A snapshot of [`SocketCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketTotals {
    /// Connections accepted.
    pub connections: u64,
    /// Bytes read from the peers.
    pub bytes_in: u64,
    /// Bytes written to the peers.
    pub bytes_out: u64,
    /// Peers dropped because a write to them waited past the write timeout (they stopped
    /// reading).
    #[serde(default)]
    pub write_timeouts: u64,
}

impl SocketCounters {
    /// Counts one accepted connection.
    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts bytes read.
    pub fn read(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts bytes written.
    pub fn wrote(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts a peer dropped by the write timeout.
    pub fn write_timed_out(&self) {
        self.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// The totals so far.
    pub fn totals(&self) -> SocketTotals {
        SocketTotals {
            connections: self.connections.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            write_timeouts: self.write_timeouts.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Add for SocketTotals {
    type Output = SocketTotals;
    fn add(self, other: SocketTotals) -> SocketTotals {
        SocketTotals {
            connections: self.connections + other.connections,
            bytes_in: self.bytes_in + other.bytes_in,
            bytes_out: self.bytes_out + other.bytes_out,
            write_timeouts: self.write_timeouts + other.write_timeouts,
        }
    }
}
