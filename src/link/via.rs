//! A real reverse proxy in the path, as deployments have one: nginx (Debian's package), started
//! by `run` with a typical configuration for WebSocket, SSE and polling, so what is said about
//! buffering proxies and event streams is measured, not asserted.
//!
//! Two configurations:
//! - `nginx-buffered`: `proxy_buffering on`, and the upstream's `X-Accel-Buffering: no` ignored
//!   (pushbench's SSE server sends it, and nginx honours it by default): what a proxy that
//!   buffers responses does to an event stream.
//! - `nginx-unbuffered`: `proxy_buffering off`, as an SSE deployment should be configured.
//!
//! Both keep idle upstream connections for a second (`keepalive_timeout 1s`): polling reuses
//! them, as behind a real proxy, and the server still sees its subscribers leave at the end.
//! So the server's connections are not its subscribers: the run starts a proxied server's
//! stream when the load has every subscriber, if its count has not
//! (`protocol::StartOn::CountOrCommand`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

use crate::settings::Value;
use crate::transport::{Setting, Side};

/// The reverse proxy subscribers reach the server through.
pub static VIA: Setting<Via> = Setting {
    name: "via",
    help: "Put a real reverse proxy between subscribers and the server: nginx-buffered \
           (proxy_buffering on, X-Accel-Buffering ignored) or nginx-unbuffered \
           (proxy_buffering off); needs nginx installed (none: direct)",
    side: Side::Harness,
    default: Via::Direct,
    min: Via::Direct,
};

/// What stands between subscribers and the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum Via {
    /// Nothing: subscribers connect to the server.
    Direct,
    /// nginx buffering responses.
    NginxBuffered,
    /// nginx passing responses through as they come.
    NginxUnbuffered,
}

impl Value for Via {
    const KIND: &'static str = "none|nginx-buffered|nginx-unbuffered";

    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Via::Direct),
            "nginx-buffered" => Ok(Via::NginxBuffered),
            "nginx-unbuffered" => Ok(Via::NginxUnbuffered),
            other => Err(format!(
                "unknown proxy {other:?}: expected none, nginx-buffered or nginx-unbuffered"
            )),
        }
    }

    fn show(self) -> String {
        match self {
            Via::Direct => "none",
            Via::NginxBuffered => "nginx-buffered",
            Via::NginxUnbuffered => "nginx-unbuffered",
        }
        .into()
    }
}

/// A running nginx in front of one server; stopped (killed) when dropped.
pub struct Nginx {
    addr: SocketAddr,
    _process: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx as `via` says, in front of `upstream`, with its files under `dir`; waits
    /// until it accepts connections.
    pub async fn start(via: Via, upstream: SocketAddr, dir: &Path) -> anyhow::Result<Self> {
        let buffering = match via {
            Via::Direct => bail!("no proxy to start"),
            Via::NginxBuffered => {
                "proxy_buffering on;\n            proxy_ignore_headers X-Accel-Buffering;"
            }
            Via::NginxUnbuffered => "proxy_buffering off;",
        };
        std::fs::create_dir_all(dir)?;
        // A free port: bound and released, then given to nginx.
        let addr = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
        let config = dir.join("nginx.conf");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log warn;\nevents {{ worker_connections 20000; }}\n\
                 http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    \
                 proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    \
                 uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n    \
                 map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n    \
                 upstream pushbench {{ server {upstream}; keepalive 64; keepalive_timeout 1s; }}\n    \
                 server {{\n        listen {addr};\n        location / {{\n            \
                 proxy_pass http://pushbench;\n            proxy_http_version 1.1;\n            \
                 proxy_set_header Upgrade $http_upgrade;\n            \
                 proxy_set_header Connection $connection_upgrade;\n            \
                 proxy_read_timeout 1h;\n            {buffering}\n        }}\n    }}\n}}\n"
            ),
        )?;
        let process = Command::new(nginx_binary())
            .arg("-c")
            .arg(&config)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting nginx for --via (install Debian's nginx-light package)")?;
        let nginx = Self {
            addr,
            _process: process,
            dir: dir.to_owned(),
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(nginx);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
        bail!("nginx did not start listening on {addr}; its error log:\n{log}")
    }

    /// Where subscribers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// nginx from `$NGINX`, else the one on the path or Debian's place for it.
fn nginx_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NGINX") {
        return path.into();
    }
    [
        "/usr/sbin/nginx",
        "/usr/local/sbin/nginx",
        "/usr/local/nginx/sbin/nginx",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| "nginx".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every proxy reads back from its text form; others are refused with the choices.
    #[test]
    fn via_round_trips() {
        for via in [Via::Direct, Via::NginxBuffered, Via::NginxUnbuffered] {
            assert_eq!(<Via as Value>::parse(&via.show()).unwrap(), via);
        }
        assert!(<Via as Value>::parse("haproxy")
            .unwrap_err()
            .contains("expected none, nginx-buffered or nginx-unbuffered"));
    }
}
