//! A webhook endpoint as the provider accepts it: a URL checked so that registering one cannot
//! turn the provider against its own host or network (server-side request forgery).
//!
//! The URL must be `http` or `https` with a host and no credentials; every address its host
//! resolves to must be a public unicast one (not loopback, private, shared, link-local, where
//! cloud metadata services answer, multicast or unspecified) unless private targets are
//! allowed, as the local harness, the network-namespace tests and the cluster recipe allow
//! them (their consumers live on such addresses). The provider then connects to the address
//! checked here, never resolving the name again, so a name cannot pass the check and then
//! point elsewhere; and it follows no redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rustls::pki_types::ServerName;

/// An endpoint that passed the checks.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The URL as registered.
    pub url: url::Url,
    /// The address deliveries go to (the first the host resolved to).
    pub addr: SocketAddr,
    /// The name its TLS certificate must carry.
    pub server_name: ServerName<'static>,
    /// `https`.
    pub secure: bool,
    /// The `Host` header: the URL's host and port.
    pub host: String,
    /// Path and query, the request target.
    pub target: String,
}

impl Endpoint {
    /// Parses and checks `url`: resolves its host and refuses it, with the reason, when any
    /// address is off limits (unless `allow_private`).
    pub async fn check(url: &str, allow_private: bool) -> Result<Self, String> {
        let url = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        let secure = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(format!(
                    "scheme {other:?}: only http and https are delivered to"
                ))
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are refused".into());
        }
        let host = url.host_str().ok_or("the URL has no host")?.to_owned();
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        // An IPv6 literal arrives bracketed; the resolver and ServerName want it bare.
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| format!("{host} resolves to nothing"))?;
        if !allow_private {
            for resolved in &addrs {
                if let Some(why) = off_limits(resolved.ip()) {
                    return Err(format!(
                        "{host} is {} ({why}); a provider refuses such targets unless started \
                         with --allow-private-targets",
                        resolved.ip()
                    ));
                }
            }
        }
        let server_name = ServerName::try_from(bare).map_err(|e| format!("host {host}: {e}"))?;
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(Self {
            host: match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            },
            url,
            addr,
            server_name,
            secure,
            target,
        })
    }
}

/// Why a provider must not send to `ip`, or `None` when it is a public unicast address.
pub fn off_limits(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => off_limits_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address written as IPv6 is judged as what it is.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return off_limits_v4(v4);
            }
            off_limits_v6(v6)
        }
    }
}

fn off_limits_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        "a cloud metadata service"
    } else if ip.is_link_local() {
        "link-local"
    } else if ip.is_private() {
        "private"
    } else if a == 100 && (64..128).contains(&b) {
        "shared address space (carrier-grade NAT)"
    } else if a == 0 {
        "this network"
    } else if ip.is_multicast() || ip.is_broadcast() {
        "multicast or broadcast"
    } else if a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn off_limits_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        "a cloud metadata service"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if first & 0xfe00 == 0xfc00 {
        "private (unique local)"
    } else if ip.is_multicast() {
        "multicast"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback, private, shared, link-local, metadata and multicast addresses are refused, in
    /// both families and IPv4 written as IPv6; public ones pass. No traffic is sent.
    #[test]
    fn off_limits_addresses() {
        let refused = [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared address space (carrier-grade NAT)"),
            ("169.254.169.254", "a cloud metadata service"),
            ("100.100.100.200", "a cloud metadata service"),
            ("169.254.1.1", "link-local"),
            ("224.0.0.1", "multicast or broadcast"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd12::1", "private (unique local)"),
            ("fd00:ec2::254", "a cloud metadata service"),
            ("ff02::1", "multicast"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "a cloud metadata service"),
        ];
        for (ip, why) in refused {
            assert_eq!(off_limits(ip.parse().unwrap()), Some(why), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(off_limits(ip.parse().unwrap()), None, "{ip}");
        }
    }

    /// URL checks that need no resolver: schemes, credentials, and literal private addresses
    /// refused (or let through when private targets are allowed).
    #[tokio::test]
    async fn urls_are_checked() {
        let refused =
            |url: &'static str| async move { Endpoint::check(url, false).await.unwrap_err() };
        assert!(refused("ftp://8.8.8.8/x")
            .await
            .contains("only http and https"));
        assert!(refused("http://user:pw@8.8.8.8/x")
            .await
            .contains("credentials"));
        assert!(refused("http://127.0.0.1:9/hook")
            .await
            .contains("loopback"));
        assert!(refused("http://[::1]:9/hook").await.contains("loopback"));
        assert!(refused("http://169.254.169.254/latest")
            .await
            .contains("metadata"));
        assert!(refused("not a url").await.contains("not a URL"));
        let allowed = Endpoint::check("https://127.0.0.1:9/hook?a=1", true)
            .await
            .unwrap();
        assert!(allowed.secure);
        assert_eq!(allowed.addr, "127.0.0.1:9".parse().unwrap());
        assert_eq!(allowed.target, "/hook?a=1");
        assert_eq!(allowed.host, "127.0.0.1:9");
        let public = Endpoint::check("http://8.8.8.8/hook", false).await.unwrap();
        assert_eq!(public.addr, "8.8.8.8:80".parse().unwrap());
    }
}
