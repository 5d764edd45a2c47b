//! `pushbench link`: the link emulator as a process of its own, in front of any server, so
//! scripts and standard clients (a browser's `EventSource`, `mosquitto_sub`) meet the same
//! toxics `run` puts between its subscribers and the server, under the same names.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Output, Stops};
use crate::link::{Blackout, Dialer, Link, LinkStats};
use crate::protocol::{self, stdout, Report};
use crate::transport::SettingValues;

/// Relays every connection accepted on `listen` to `to` through `link` until SIGINT, SIGTERM or
/// a closed stdout, then says what passed.
pub async fn run(
    (listen, to): (SocketAddr, SocketAddr),
    link: Link,
    dialer: Dialer,
    output: Output,
) -> anyhow::Result<()> {
    // Installed first, so a signal sent the moment it says where it listens stops it cleanly.
    let mut stops = Stops::install()?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("link: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    match output {
        Output::Human => {
            stdout::line(&format!(
                "pushbench link: listening on {addr}, relaying to {to} through {link}"
            ));
        }
        Output::Json => protocol::report(&Report::Listening {
            addr,
            settings: SettingValues::default(),
            pids: Vec::new(),
            cert_sha256: None,
        })?,
    }
    let stats = Arc::new(LinkStats::default());
    let stop = CancellationToken::new();
    let relaying = tokio::spawn(crate::link::serve(
        (listener, dialer),
        to,
        link,
        Arc::clone(&stats),
        Blackout::never(),
        stop.clone(),
    ));
    let why = stops.next().await;
    stop.cancel();
    let _ = relaying.await;
    let totals = stats.totals();
    output.say(&format!(
        "{why}: relayed {} connection(s), {} B to subscribers and {} B to the server; the link \
         closed {} and reset {}",
        totals.connections, totals.to_subscriber, totals.to_server, totals.closes, totals.resets
    ));
    Ok(())
}
