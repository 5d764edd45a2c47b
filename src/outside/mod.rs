//! A server pushbench did not write, run as a row's server: `serve --server NAME` takes the
//! address it bound, starts the profile's server there ([`process`]), and publishes the hub's
//! stream through it, either with HTTP requests ([`publish`]) or with the transport's own
//! server acting as publisher through it (a broker's). The subscribers are pushbench's own
//! clients, judged as any; the server's CPU and memory are its processes'.

pub mod process;
pub mod publish;

use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::profile::{Fill, Profile, Publish};
use crate::settings::SettingValues;
use crate::transport::implementation::ServeFuture;
use crate::transport::{ServerConfig, Target, Transport};

pub use process::Running;

/// Starts `profile`'s server on `listener`'s address (which it takes over) and returns it
/// running, with the publishing that serves the stream through it until `shutdown`.
pub async fn start(
    profile: &'static Profile,
    transport: Transport,
    listener: TcpListener,
    hub: Arc<Hub>,
    mut config: ServerConfig,
    shutdown: CancellationToken,
) -> io::Result<(Running, ServeFuture)> {
    let listen = listener.local_addr()?;
    if rustix::net::sockopt::socket_reuseport(&listener)? {
        return Err(io::Error::other(format!(
            "--server {}: one server holds every subscriber; it cannot be a fleet of processes \
             sharing a port",
            profile.name
        )));
    }
    // The address is the profile's server's now.
    drop(listener);
    let running = Running::start(profile, listen).await?;
    let publishing: ServeFuture = match &profile.publish {
        Publish::Http(http) => {
            let late = running.lateness_slot();
            Box::pin(publish::serve(http, listen, (hub, late), config, shutdown))
        }
        Publish::Transport { settings } => {
            // The transport's own server publishes through this one, pointed at it by the
            // profile's settings. It is handed a listener of its own, on a free port, which it
            // does not serve on: the profile's server has the row's address.
            let fill = Fill {
                listen,
                dir: std::path::Path::new(""),
                topic: publish::TOPIC,
            };
            for (name, template) in settings {
                config.settings.0.insert(name.clone(), fill.fill(template));
            }
            config
                .settings
                .check(&transport.settings())
                .map_err(|why| io::Error::other(format!("--server {}: {why}", profile.name)))?;
            let unused = TcpListener::bind((listen.ip(), 0)).await?;
            Box::pin(transport.serve(unused, hub, config, shutdown))
        }
    };
    Ok((running, publishing))
}

/// Why a row of `transport` with `settings` cannot run on the server they name, if it names
/// one and it cannot.
pub fn refuses(transport: Transport, settings: &SettingValues) -> Option<String> {
    let profile = crate::profile::SERVER.read(settings).0?;
    profile.refuses(transport.name(), settings, &transport.settings())
}

/// Where `transport`'s subscribers go on the server `settings` name: `target` as it is for
/// pushbench's own, with the profile's path and parameters for another (or why they cannot).
pub fn subscriber_target(
    transport: Transport,
    settings: &SettingValues,
    mut target: Target,
) -> Result<Target, String> {
    let Some(profile) = crate::profile::SERVER.read(settings).0 else {
        return Ok(target);
    };
    let subscription = profile.subscription(transport.name())?;
    let fill = Fill {
        listen: target.addr,
        dir: std::path::Path::new(""),
        topic: publish::TOPIC,
    };
    if let Some(path) = &subscription.path {
        target.path = Some(fill.fill(path));
    }
    for (name, template) in &subscription.params {
        target.params.insert(name.clone(), fill.fill(template));
    }
    Ok(target)
}
