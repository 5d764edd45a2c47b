//! TLS for every transport, on both sides: the `tls` setting that turns it on, the certificate a
//! side serves with and the certificates it trusts ([`TlsMaterial`], which travels to child
//! processes over the typed protocol), the server's handshake on each accepted connection and
//! the client's on each connection it opens.
//!
//! rustls on ring: no OpenSSL, and a build that needs only a C compiler. A certificate is the
//! user's (PEM files) or made at start by rcgen; either way clients trust exactly the
//! certificates they are given (the server's own, self-signed), never the system's roots, so a
//! benchmark on loopback or in a cluster needs no certificate authority.
//!
//! ALPN is set on both sides (`http/1.1` for the HTTP transports) so that HTTP/2 can be offered
//! beside it later. Subscribers do not resume TLS sessions: each stands for a device or browser
//! of its own, so each connection pays the full handshake that the results then show.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use wtransport::tls::client::ServerHashVerification;
use wtransport::tls::Sha256Digest;

use super::{Setting, Side};

/// Whether every connection is TLS (https://, wss://, TLS under raw TCP's frames).
pub static TLS: Setting<bool> = Setting {
    name: "tls",
    help: "Serve and subscribe over TLS (rustls): https:// and wss://, TLS under raw TCP, and \
           HTTPS webhook endpoints; the certificate is --tls-cert/--tls-key or one made at start",
    side: Side::Both,
    default: false,
    min: false,
};

/// How long a certificate made at start is valid: under the 14 days a browser allows a
/// certificate it trusts by hash.
pub const SELF_SIGNED_VALIDITY: time::Duration = time::Duration::days(13);

/// How long an accepted connection may take to finish its TLS handshake before it is dropped
/// (a client that connects and sends nothing cannot hold a connection open).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The ALPN protocol of every HTTP transport today (HTTP/2 would be offered before it).
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// What an HTTP/2 client asks for, and an HTTP/2 server offers.
pub const ALPN_H2: &[&[u8]] = &[b"h2"];

/// What one side needs for TLS: the certificate it serves with (and its key), and the
/// certificates it trusts when it connects. Both are PEM text, so they travel to child
/// processes over the typed protocol, never in argv or the environment; shared, so that the
/// copy of the config each subscriber holds costs no memory per subscriber.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct TlsMaterial {
    /// The certificate chain (PEM) this side serves with: the server's, or a webhook
    /// consumer's.
    #[serde(default)]
    pub cert_pem: Option<Arc<str>>,
    /// The private key (PEM) of `cert_pem`.
    #[serde(default)]
    pub key_pem: Option<Arc<str>>,
    /// Certificates (PEM) this side trusts when it connects: the server's for subscribers, the
    /// consumers' for the webhook provider.
    #[serde(default)]
    pub trusted_pem: Option<Arc<str>>,
    /// SHA-256 hashes (hex) of certificates this side trusts when it connects by hash, as a
    /// browser's WebTransport does (`serverCertificateHashes`; `load --cert-hash`).
    #[serde(default)]
    pub trusted_hashes: Vec<String>,
    /// The rustls configurations built from the above, once per process.
    #[serde(skip)]
    built: Arc<Built>,
    /// Handshake times this side measured (on the connections it opened or accepted).
    #[serde(skip)]
    pub handshakes: Arc<HandshakeTimes>,
}

#[derive(Default)]
struct Built {
    server: OnceLock<Arc<rustls::ServerConfig>>,
    server_h2: OnceLock<Arc<rustls::ServerConfig>>,
    client_bare: OnceLock<Arc<rustls::ClientConfig>>,
    client_http1: OnceLock<Arc<rustls::ClientConfig>>,
    client_h2: OnceLock<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for TlsMaterial {
    // The key stays out of logs and debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert", &self.cert_pem.is_some())
            .field("key", &self.key_pem.as_ref().map(|_| ".."))
            .field("trusted", &self.trusted_pem.is_some())
            .finish()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input held no usable certificate or key.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate, key or settings.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// Making a self-signed certificate failed.
    #[error("making a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// TLS is on but a needed piece is missing.
    #[error("{0}")]
    Missing(&'static str),
}

impl TlsMaterial {
    /// A self-signed certificate for `localhost`, the loopback addresses subscribers and
    /// webhook consumers use ([`super::LOOPBACK_SOURCES`]) and `addresses`, made now, that this
    /// side serves with and trusts.
    pub fn self_signed(addresses: &[IpAddr]) -> Result<Self, TlsError> {
        let mut names = vec!["localhost".to_owned(), "::1".into()];
        names.extend((1..=super::LOOPBACK_SOURCES).map(|n| format!("127.0.0.{n}")));
        for address in addresses {
            if !address.is_unspecified() && !names.contains(&address.to_string()) {
                names.push(address.to_string());
            }
        }
        // ECDSA P-256 (rcgen's default key), valid for less than 14 days from an hour ago
        // (a clock behind the server's by less than that still accepts it): what a browser
        // trusts by hash (WebTransport's serverCertificateHashes) as well as by the
        // certificate itself.
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(names)?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = params.not_before + SELF_SIGNED_VALIDITY;
        let cert = params.self_signed(&key)?;
        let cert_pem: Arc<str> = cert.pem().into();
        Ok(Self {
            trusted_pem: Some(Arc::clone(&cert_pem)),
            trusted_hashes: vec![hex(&Sha256::digest(cert.der()))],
            cert_pem: Some(cert_pem),
            key_pem: Some(key.serialize_pem().into()),
            ..Self::default()
        })
    }

    /// The SHA-256 of the certificate this side serves with (its first in the chain), in hex:
    /// what a client trusting it by hash is given (`load --cert-hash`, a browser's
    /// `serverCertificateHashes`).
    pub fn cert_hash(&self) -> Result<String, TlsError> {
        let Some(pem) = &self.cert_pem else {
            return Err(TlsError::Missing("no certificate to hash"));
        };
        let chain = certificates(pem, "the certificate (--tls-cert)")?;
        Ok(hex(&Sha256::digest(&chain[0])))
    }

    /// The certificate chain this side serves with, and its key.
    fn chain_and_key(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let (Some(cert_pem), Some(key_pem)) = (&self.cert_pem, &self.key_pem) else {
            return Err(TlsError::Missing(
                "TLS needs a certificate and its key (--tls-cert and --tls-key, or neither for \
                 a self-signed one)",
            ));
        };
        let chain = certificates(cert_pem, "the certificate (--tls-cert)")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
            what: "the private key (--tls-key)",
            reason: e.to_string(),
        })?;
        Ok((chain, key))
    }

    /// A TLS 1.3-only server configuration offering `alpn` (QUIC allows nothing older), built
    /// for each caller: a QUIC server takes it by value.
    pub fn tls13_server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let (chain, key) = self.chain_and_key()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// A TLS 1.3-only client configuration asking for `alpn`, trusting the certificates given
    /// (`--ca`); `None` where none are, and the client trusts by hash instead.
    pub fn tls13_client_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Option<rustls::ClientConfig>, TlsError> {
        let Some(trusted) = &self.trusted_pem else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(trusted, "the trusted certificates (--ca)")? {
            roots.add(cert)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Some(config))
    }

    /// The user's certificate chain and key (PEM).
    pub fn from_pem(cert_pem: String, key_pem: String) -> Self {
        Self {
            cert_pem: Some(cert_pem.into()),
            key_pem: Some(key_pem.into()),
            ..Self::default()
        }
    }

    /// The same, trusting `trusted_pem` instead when connecting.
    pub fn trusting(self, trusted_pem: Option<Arc<str>>) -> Self {
        Self {
            trusted_pem,
            built: Arc::default(),
            ..self
        }
    }

    /// Checks that what is here parses, so a bad file fails at start with its reason rather than
    /// at the first connection.
    pub fn check(&self) -> Result<(), TlsError> {
        if self.cert_pem.is_some() || self.key_pem.is_some() {
            self.server_config()?;
        }
        if self.trusted_pem.is_some() || !self.trusted_hashes.is_empty() {
            self.client_config(&[])?;
        }
        Ok(())
    }

    /// The server side's rustls configuration (built once), offering HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        self.server_config_for(ALPN_HTTP1)
    }

    /// The server side's rustls configuration offering `alpn` ([`ALPN_HTTP1`] or [`ALPN_H2`];
    /// each built once). An HTTP/1 server never offers h2: a client that can speak both would
    /// pick it and find a server that cannot.
    pub fn server_config_for(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let slot = if alpn == ALPN_H2 {
            &self.built.server_h2
        } else {
            &self.built.server
        };
        if let Some(built) = slot.get() {
            return Ok(Arc::clone(built));
        }
        let (chain, key) = self.chain_and_key()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // Offered to clients that ask; raw TCP's clients ask for none.
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::clone(slot.get_or_init(|| Arc::new(config))))
    }

    /// A client configuration for a library that takes one whole (reqwest): the trusted
    /// certificate's, asking for HTTP/1.1, or, where none is given, one that trusts nothing
    /// (every https connection refused).
    pub(crate) fn library_client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        if self.trusted_pem.is_some() {
            return Ok((*self.client_config(ALPN_HTTP1)?).clone());
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A verifier trusting the server's certificate by the hashes given (`load --cert-hash`),
    /// as a browser's WebTransport does (wtransport's: the certificate must also be ECDSA
    /// P-256, valid now and for at most 14 days); `None` where no hash is given.
    pub fn hash_verifier(&self) -> Result<Option<Arc<ServerHashVerification>>, TlsError> {
        if self.trusted_hashes.is_empty() {
            return Ok(None);
        }
        let digests = self
            .trusted_hashes
            .iter()
            .map(|hex| {
                digest_of_hex(hex)
                    .map(Sha256Digest::new)
                    .ok_or(TlsError::Pem {
                        what: "a certificate hash (--cert-hash)",
                        reason: format!("{hex:?} is not a SHA-256 in hex"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Arc::new(ServerHashVerification::new(digests))))
    }

    /// The client side's rustls configuration asking for `alpn` (built once per ALPN list):
    /// trusting the certificates given, or where none are, the hashes given.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let slot = if alpn.is_empty() {
            &self.built.client_bare
        } else if alpn == ALPN_H2 {
            &self.built.client_h2
        } else {
            &self.built.client_http1
        };
        if let Some(built) = slot.get() {
            return Ok(Arc::clone(built));
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder =
            match (&self.trusted_pem, self.hash_verifier()?) {
                (Some(trusted), _) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for cert in certificates(trusted, "the trusted certificates (--ca)")? {
                        roots.add(cert)?;
                    }
                    builder.with_root_certificates(roots)
                }
                (None, Some(verifier)) => builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier),
                (None, None) => return Err(TlsError::Missing(
                    "TLS needs the server's certificate to trust (--ca FILE, as `pushbench serve \
                     --write-cert FILE` wrote it, or --cert-hash HASH, as it prints it)",
                )),
            };
        let mut config = builder.with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Each subscriber is a client of its own: no session shared between them, so every
        // connection's cost includes its full handshake.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::clone(slot.get_or_init(|| Arc::new(config))))
    }

    /// The acceptor for a server's connections, offering `alpn`.
    pub fn acceptor(&self, alpn: &[&[u8]]) -> io::Result<TlsAcceptor> {
        Ok(TlsAcceptor::from(
            self.server_config_for(alpn).map_err(io::Error::other)?,
        ))
    }

    /// Opens TLS over `stream` to the server called `name`, timing the handshake.
    pub async fn connect<S>(
        &self,
        name: ServerName<'static>,
        stream: S,
        alpn: &[&[u8]],
    ) -> io::Result<tokio_rustls::client::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.client_config(alpn).map_err(io::Error::other)?;
        let started = Instant::now();
        let stream = TlsConnector::from(config).connect(name, stream).await?;
        self.handshakes.record(started.elapsed());
        Ok(stream)
    }
}

/// 32 bytes from 64 hex digits.
fn digest_of_hex(hex: &str) -> Option<[u8; 32]> {
    let mut digest = [0; 32];
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(digest)
}

/// Every certificate in `pem`; at least one.
fn certificates(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        });
    }
    Ok(certs)
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS handshake times, microseconds, as one side measured them.
#[derive(Debug)]
pub struct HandshakeTimes(Mutex<Histogram<u64>>);

impl Default for HandshakeTimes {
    fn default() -> Self {
        Self(Mutex::new(crate::metrics::latency::histogram()))
    }
}

impl HandshakeTimes {
    /// Records one handshake.
    pub fn record(&self, took: Duration) {
        let mut histogram = self.0.lock().unwrap_or_else(|e| e.into_inner());
        histogram.saturating_record(took.as_micros() as u64);
    }

    /// The handshakes so far.
    pub fn histogram(&self) -> Histogram<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A connection, plain or under TLS: `T` is the server's or the client's TLS stream over `P`.
#[derive(Debug)]
pub enum MaybeTls<P, T> {
    /// No TLS.
    Plain(P),
    /// TLS over the connection.
    Tls(Box<T>),
}

/// A server's accepted connection.
pub type ServerTls<S> = MaybeTls<S, tokio_rustls::server::TlsStream<S>>;

/// A client's connection.
pub type ClientTls<S> = MaybeTls<S, tokio_rustls::client::TlsStream<S>>;

impl<S: AsyncRead + AsyncWrite + Unpin> ServerTls<S> {
    /// Completes the server's side of a connection: its TLS handshake when `acceptor` is given
    /// (bounded by [`HANDSHAKE_TIMEOUT`], timed into `handshakes`), nothing otherwise.
    pub async fn accept(
        stream: S,
        acceptor: Option<&TlsAcceptor>,
        handshakes: &HandshakeTimes,
    ) -> io::Result<Self> {
        let Some(acceptor) = acceptor else {
            return Ok(Self::Plain(stream));
        };
        let started = Instant::now();
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        handshakes.record(started.elapsed());
        Ok(Self::Tls(Box::new(stream)))
    }

    /// The connection under TLS (or the plain one).
    pub fn get_ref(&self) -> &S {
        match self {
            Self::Plain(stream) => stream,
            Self::Tls(stream) => stream.get_ref().0,
        }
    }
}

/// Forwards a poll to whichever stream is inside.
macro_rules! either {
    ($self:ident, $stream:ident => $call:expr) => {
        match $self.get_mut() {
            MaybeTls::Plain($stream) => $call,
            MaybeTls::Tls($stream) => $call,
        }
    };
}

impl<P, T> AsyncRead for MaybeTls<P, T>
where
    P: AsyncRead + Unpin,
    T: AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        either!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl<P, T> AsyncWrite for MaybeTls<P, T>
where
    P: AsyncWrite + Unpin,
    T: AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed identity serves and is trusted; PEM that holds nothing is refused with
    /// the input's name.
    #[test]
    fn material_checks() {
        let material = TlsMaterial::self_signed(&["10.200.0.1".parse().unwrap()]).unwrap();
        material.check().unwrap();
        let bad = TlsMaterial {
            trusted_pem: Some("not a certificate".into()),
            ..TlsMaterial::default()
        };
        let error = bad.check().unwrap_err().to_string();
        assert!(error.contains("--ca"), "{error}");
        let keyless = TlsMaterial {
            cert_pem: material.cert_pem.clone(),
            ..TlsMaterial::default()
        };
        assert!(keyless
            .check()
            .unwrap_err()
            .to_string()
            .contains("--tls-key"));
    }
}
