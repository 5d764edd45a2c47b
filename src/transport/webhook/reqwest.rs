//! The webhook provider on reqwest, the HTTP client most Rust services send webhooks with:
//! the same registration, signing, retries and ledger as pushbench's provider, each delivery
//! sent by one shared `reqwest::Client` whose pool keeps a connection per endpoint. It runs on
//! rustls with ring (the preconfigured TLS every transport here uses, so no aws-lc-rs), HTTP/1.1,
//! no proxy, no redirects, and connects only to the address checked at registration: its
//! resolver answers from those alone, so a name that re-resolves elsewhere cannot turn the
//! provider against its own network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::transport::endpoint::Endpoint;
use crate::transport::ServerConfig;

use super::server::{serve_with, Sender, ATTEMPT_TIMEOUT};
use super::NEW_CONNECTION;

/// Serves the provider's API and delivers every event through reqwest until `shutdown`
/// fires.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let provider = Provider::new(&config).map_err(std::io::Error::other)?;
    serve_with(Sender::Reqwest(provider), listener, hub, config, shutdown).await
}

/// The provider's reqwest client and the addresses it may connect to.
#[derive(Clone)]
pub(crate) struct Provider {
    client: ::reqwest::Client,
    checked: Arc<Checked>,
}

impl Provider {
    /// A client configured as the provider's own connections are: the consumers'
    /// certificate trusted, HTTP/1.1, connections kept unless each delivery opens its own.
    fn new(config: &ServerConfig) -> Result<Self, String> {
        let tls = config
            .tls
            .library_client_config()
            .map_err(|e| format!("reqwest's TLS: {e}"))?;
        let checked = Arc::new(Checked::default());
        let mut builder = ::reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .no_proxy()
            .redirect(::reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .connect_timeout(ATTEMPT_TIMEOUT)
            .dns_resolver(Arc::clone(&checked));
        if NEW_CONNECTION.read(&config.settings) {
            // No idle connection is kept, so every delivery opens its own.
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder
            .build()
            .map_err(|e| format!("reqwest's client: {e}"))?;
        Ok(Self { client, checked })
    }

    /// Lets the client reach `endpoint`'s host at the address checked when it registered.
    pub(crate) fn pin(&self, endpoint: &Endpoint) {
        if let Some(host) = endpoint.url.host_str() {
            let mut checked = self.checked.0.lock().unwrap_or_else(|e| e.into_inner());
            checked.insert(host.to_owned(), endpoint.addr);
        }
    }

    /// Sends `request` (in origin form, as the provider builds it) to `endpoint` and reads
    /// the answer to its end.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        request: axum::http::Request<Bytes>,
    ) -> Result<StatusCode, String> {
        let (mut parts, body) = request.into_parts();
        let scheme = endpoint.url.scheme();
        parts.uri = format!("{scheme}://{}{}", endpoint.host, parts.uri)
            .parse()
            .map_err(|e| format!("the endpoint's URL: {e}"))?;
        // reqwest names the host from the URL.
        parts.headers.remove(axum::http::header::HOST);
        let request = ::reqwest::Request::try_from(axum::http::Request::from_parts(parts, body))
            .map_err(|e| e.to_string())?;
        let answer = self
            .client
            .execute(request)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = answer.status();
        answer.bytes().await.map_err(|e| error_chain(&e))?;
        Ok(status)
    }
}

/// An error with its causes, which reqwest keeps apart ("error sending request" alone says
/// little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The addresses registration checked, by host name: the only answers the client's resolver
/// gives.
#[derive(Default)]
struct Checked(Mutex<HashMap<String, SocketAddr>>);

impl ::reqwest::dns::Resolve for Checked {
    fn resolve(&self, name: ::reqwest::dns::Name) -> ::reqwest::dns::Resolving {
        let found = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name.as_str())
            .copied();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addr = found.ok_or_else(|| format!("{name} was not checked at registration"))?;
            let addrs: ::reqwest::dns::Addrs = Box::new(std::iter::once(addr));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::reqwest::dns::Resolve as _;

    /// The client's resolver answers a name registration checked with the address checked,
    /// and refuses any other: a name that would re-resolve elsewhere is never looked up again.
    #[tokio::test]
    async fn only_checked_names_resolve() {
        let checked = Checked::default();
        let addr: SocketAddr = "127.0.0.7:8443".parse().unwrap();
        let pinned = "hooks.example.test";
        checked.0.lock().unwrap().insert(pinned.to_owned(), addr);
        let resolve = |name: &str| checked.resolve(name.parse().unwrap());
        let answered: Vec<SocketAddr> = resolve(pinned).await.unwrap().collect();
        assert_eq!(answered, [addr]);
        let refused = resolve("elsewhere.example.test").await.err().unwrap();
        assert!(refused
            .to_string()
            .contains("was not checked at registration"));
    }
}
