//! A server and its subscribers in this one process: what the tests and the criterion benches
//! drive, so both exercise exactly the path `pushbench serve` + `pushbench load` take.

use std::time::Duration;

use crate::clock::now_ns;
use crate::event::StreamSpec;
use crate::metrics::recorder::Recorded;
use crate::serve::Server;
use crate::transport::{ClientConfig, ServerConfig, Transport};

use super::load::run_subscribers;
use super::subscriber::{RecordPlan, SubscriberRecord};

/// One stream delivered in-process.
#[derive(Debug)]
pub struct LocalRun {
    /// What each subscriber received.
    pub records: Vec<SubscriberRecord>,
    /// Their latencies, service times, per-second intervals and fan-out clock, merged.
    pub recorded: Recorded,
    /// From the stream's start to the last event received by the last subscriber: the part a
    /// benchmark times (connecting happened before, tearing down after).
    pub delivery: Duration,
    /// Subscribers the server still counted once delivery stopped making progress (0 when every
    /// subscriber took the whole stream and left).
    pub left_connected: usize,
    /// Subscribers that dropped without the whole stream and never resumed, as the server
    /// counted them.
    pub unresumed_drops: u64,
    /// When the close storm cut every connection (monotonic ns), if one struck.
    pub storm_ns: Option<u64>,
    /// The server's ledger of what subscribers sent up, where they did.
    pub upstream: Option<crate::upstream::Totals>,
}

/// Starts `transport`'s server on a loopback port, connects `subscribers`, publishes `spec` once
/// all are connected, waits for every subscriber to finish, and stops the server.
pub async fn deliver_locally(
    transport: Transport,
    spec: &StreamSpec,
    subscribers: usize,
    server_config: ServerConfig,
    client_config: ClientConfig,
    timeout: Duration,
) -> anyhow::Result<LocalRun> {
    // A client that cannot do what the settings ask is refused before anything starts.
    transport
        .client_impl(&client_config.settings)
        .map_err(anyhow::Error::msg)?;
    let loopback = "127.0.0.1:0".parse()?;
    let server_config = server_config.serving(spec);
    let mut server = Server::start(transport, loopback, spec.count, server_config).await?;
    let addr = server.addr();
    let plan = RecordPlan::of(spec, 0, now_ns(), &client_config.settings, subscribers);
    let load = {
        let plan = std::sync::Arc::clone(&plan);
        tokio::spawn(async move {
            run_subscribers(
                transport,
                &addr.into(),
                subscribers,
                0,
                &plan,
                &client_config,
                timeout,
            )
            .await
        })
    };
    let published = server.publish(spec, subscribers).await?;
    let records = load.await?;
    let recorded = plan.recording.finish();
    let last = records.iter().filter_map(|r| r.last_received_ns).max();
    let delivery = Duration::from_nanos(last.unwrap_or(published.end_ns) - published.start_ns);
    let left_connected = server.drain(Duration::from_secs(10)).await;
    let unresumed_drops = server.hub().unresumed();
    let storm_ns = server.hub().storm();
    let upstream = server.hub().upstream_totals();
    server.stop().await?;
    Ok(LocalRun {
        records,
        recorded,
        delivery,
        left_connected,
        unresumed_drops,
        storm_ns,
        upstream,
    })
}
