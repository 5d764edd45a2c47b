//! The QUIC ground both sides stand on: their configurations, built from the run's TLS material
//! (TLS 1.3 alone, ALPN `h3`), and what a connection moved on the wire, counted where every
//! other transport counts its bytes.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use wtransport::quinn;
use wtransport::tls::WEBTRANSPORT_ALPN;

use super::{CLIENT_KEEP_ALIVE, IDLE_TIMEOUT};
use crate::metrics::sockets::SocketCounters;
use crate::transport::tls::TlsMaterial;

/// The server's configuration on `socket`: the certificate of `tls`, a keep-alive PING every
/// `heartbeat` so a held session does not look idle to the network.
pub(super) fn server_config(
    socket: UdpSocket,
    tls: &TlsMaterial,
    heartbeat: Duration,
) -> io::Result<wtransport::ServerConfig> {
    let rustls = tls
        .tls13_server_config(&[WEBTRANSPORT_ALPN])
        .map_err(io::Error::other)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls)
        .map_err(|e| io::Error::other(format!("QUIC cannot use this TLS configuration: {e}")))?;
    let mut quic = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    quic.transport_config(Arc::new(transport(Some(heartbeat))));
    let mut config = wtransport::ServerConfig::builder()
        .with_bind_socket(socket)
        .build_with_quic_config(quic);
    let (reset_key, cid_key) = reset_keys(tls)?;
    let mut endpoint = quinn::EndpointConfig::new(reset_key);
    endpoint.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    *config.quic_endpoint_config_mut() = endpoint;
    Ok(config)
}

/// The keys stateless resets are made with and connection ids are checked by, derived from
/// the server's TLS key rather than drawn at random: a server started again on the same
/// address with the same certificate (the restart fault, a deploy) recognises the connection
/// ids its predecessor issued and answers a packet of such a connection with a reset its
/// subscriber accepts, so the subscriber learns at once that the connection is gone instead of
/// after the idle timeout.
fn reset_keys(tls: &TlsMaterial) -> io::Result<(Arc<ring::hmac::Key>, u64)> {
    let secret = tls
        .key_pem
        .as_deref()
        .ok_or_else(|| io::Error::other("QUIC needs the certificate's key"))?;
    let mut salted = b"pushbench QUIC stateless reset".to_vec();
    salted.extend_from_slice(secret.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &salted);
    let digest = digest.as_ref();
    let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &digest[..16]);
    let mut cid_key = [0; 8];
    cid_key.copy_from_slice(&digest[16..24]);
    Ok((Arc::new(reset), u64::from_le_bytes(cid_key)))
}

/// A subscriber's configuration: its own UDP socket on `bind` (each subscriber stands for a
/// device of its own), trusting the server by the hashes `tls` names, as a browser does, or
/// by the certificates it names where it names no hash (`load --ca`).
pub(super) fn client_config(
    bind: SocketAddr,
    tls: &TlsMaterial,
) -> Result<wtransport::ClientConfig, String> {
    let rustls = match tls.hash_verifier().map_err(|e| e.to_string())? {
        Some(verifier) => wtransport::tls::client::build_default_tls_config(
            Arc::new(rustls::RootCertStore::empty()),
            Some(verifier),
        ),
        None => tls
            .tls13_client_config(&[WEBTRANSPORT_ALPN])
            .map_err(|e| e.to_string())?
            .ok_or(
                "WebTransport needs the server's certificate to trust: --cert-hash HASH (as \
                 `pushbench serve` prints it) or --ca FILE",
            )?,
    };
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls)
        .map_err(|e| format!("QUIC cannot use this TLS configuration: {e}"))?;
    let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
    quic.transport_config(Arc::new(transport(Some(CLIENT_KEEP_ALIVE))));
    Ok(wtransport::ClientConfig::builder()
        .with_bind_address(bind)
        .build_with_quic_config(quic))
}

/// QUIC's transport settings on both sides: the idle timeout, and the keep-alive each sends.
fn transport(keep_alive: Option<Duration>) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // The timeout is below what a quinn `IdleTimeout` holds (2^62 ms).
    if let Ok(idle) = IDLE_TIMEOUT.try_into() {
        transport.max_idle_timeout(Some(idle));
    }
    transport.keep_alive_interval(keep_alive.filter(|k| !k.is_zero()));
    transport
}

/// What a connection moved on the wire, added to the server's counters as it goes: its UDP
/// payload bytes each way, QUIC's headers, acknowledgements and retransmissions included.
#[derive(Debug, Default)]
pub(super) struct WireBytes {
    /// What was added so far, each way.
    read: u64,
    wrote: u64,
}

impl WireBytes {
    /// Adds what `connection` moved since the last call to `counters`.
    pub(super) fn update(&mut self, connection: &quinn::Connection, counters: &SocketCounters) {
        let stats = connection.stats();
        let (read, wrote) = (stats.udp_rx.bytes, stats.udp_tx.bytes);
        counters.read(read.saturating_sub(self.read) as usize);
        counters.wrote(wrote.saturating_sub(self.wrote) as usize);
        (self.read, self.wrote) = (read.max(self.read), wrote.max(self.wrote));
    }
}
