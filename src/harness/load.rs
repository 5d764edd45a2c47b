//! The load process: N subscribers of one transport against a server, each tallying its
//! stream, judged together against the source digest.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ns;
use crate::event::{Digest, StreamSpec};
use crate::metrics::latency;
use crate::transport::{ClientConfig, Transport};

use super::subscriber::{RecordPlan, SubscriberRecord, TallySink};

/// Subscribers started between pauses, so a burst of connects never overflows the server's
/// accept backlog.
const CONNECT_BURST: usize = 100;
const CONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Distinct loopback source addresses subscribers are spread over, to stay clear of the
/// ephemeral-port limit of one address.
const LOOPBACK_SOURCES: usize = 16;

/// Runs `count` subscribers concurrently, each until it has the whole stream, its subscription
/// ends, or `timeout` passes; returns their records in order. Connects are paced, and against
/// a loopback server spread over several 127.0.0.x source addresses.
pub async fn run_subscribers(
    transport: Transport,
    server: SocketAddr,
    count: usize,
    plan: &Arc<RecordPlan>,
    config: &ClientConfig,
    timeout: Duration,
) -> Vec<SubscriberRecord> {
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        if i > 0 && i % CONNECT_BURST == 0 {
            tokio::time::sleep(CONNECT_PAUSE).await;
        }
        let mut config = config.clone();
        if config.bind.is_none() && server.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
            config.bind = Some(IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % LOOPBACK_SOURCES) as u8,
            )));
        }
        let plan = Arc::clone(plan);
        tasks.push(tokio::spawn(async move {
            let mut sink = TallySink::new(plan, now_ns());
            let outcome =
                tokio::time::timeout(timeout, transport.subscribe(server, &config, &mut sink))
                    .await;
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("timed out after {timeout:?}")),
            };
            sink.finish(error)
        }));
    }
    let mut records = Vec::with_capacity(count);
    for task in tasks {
        match task.await {
            Ok(record) => records.push(record),
            Err(e) => {
                let error = Some(format!("subscriber task failed: {e}"));
                records.push(TallySink::new(Arc::clone(plan), now_ns()).finish(error));
            }
        }
    }
    records
}

/// What `pushbench load` needs.
#[derive(Debug)]
pub struct LoadOptions {
    /// The transport to subscribe with.
    pub transport: Transport,
    /// The server's address.
    pub server: SocketAddr,
    /// How many subscribers.
    pub subscribers: usize,
    /// The stream the server publishes (for the source digest and counts).
    pub spec: StreamSpec,
    /// Client settings.
    pub config: ClientConfig,
    /// Longest a subscriber may take.
    pub timeout: Duration,
}

/// The whole load run, judged.
#[derive(Debug)]
pub struct LoadSummary {
    /// The digest every subscriber should have reached.
    pub source_digest: Digest,
    /// Per-subscriber records.
    pub records: Vec<SubscriberRecord>,
}

impl LoadSummary {
    /// Subscribers whose digest matches the source, with nothing lost, duplicated or malformed.
    pub fn intact(&self) -> usize {
        self.records
            .iter()
            .filter(|r| {
                let c = r.tally.counts();
                r.tally.digest() == self.source_digest
                    && r.tally.lost() == 0
                    && c.duplicated == 0
                    && c.malformed == 0
            })
            .count()
    }

    /// Distinct events delivered, summed over subscribers.
    pub fn delivered(&self) -> u64 {
        self.records.iter().map(|r| r.tally.counts().distinct).sum()
    }

    /// Seconds from the first event sent to the last event received, over all subscribers.
    pub fn span_secs(&self) -> f64 {
        let first = self.records.iter().filter_map(|r| r.first_sent_ns).min();
        let last = self.records.iter().filter_map(|r| r.last_received_ns).max();
        match (first, last) {
            (Some(first), Some(last)) if last > first => (last - first) as f64 / 1e9,
            _ => 0.0,
        }
    }
}

impl std::fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mut lost, mut duplicated, mut reordered, mut malformed) = (0, 0, 0, 0);
        for record in &self.records {
            let counts = record.tally.counts();
            lost += record.tally.lost();
            duplicated += counts.duplicated;
            reordered += counts.reordered;
            malformed += counts.malformed;
        }
        let span = self.span_secs();
        let rate = if span > 0.0 {
            self.delivered() as f64 / span
        } else {
            0.0
        };
        writeln!(f, "subscribers       {}", self.records.len())?;
        writeln!(
            f,
            "intact            {} of {} (digest {})",
            self.intact(),
            self.records.len(),
            self.source_digest
        )?;
        writeln!(
            f,
            "delivered         {} events in {span:.3} s = {rate:.0} deliveries/s",
            self.delivered()
        )?;
        let mut latency = latency::histogram();
        let mut service = latency::histogram();
        for record in &self.records {
            latency::merge(&mut latency, &record.latency_us);
            latency::merge(&mut service, &record.service_time_us);
        }
        for (name, h) in [("latency us", &latency), ("service us", &service)] {
            writeln!(
                f,
                "{name:<18}p50 {} p99 {} p99.9 {} max {}",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            )?;
        }
        writeln!(f, "lost              {lost}")?;
        writeln!(f, "duplicated        {duplicated}")?;
        writeln!(f, "reordered         {reordered}")?;
        write!(f, "malformed         {malformed}")?;
        for (i, record) in self.records.iter().enumerate() {
            if let Some(error) = &record.error {
                write!(f, "\nsubscriber {i}: {error}")?;
            }
        }
        Ok(())
    }
}

/// Runs the load half of a measurement against a server and judges it.
pub async fn run_load(options: &LoadOptions) -> LoadSummary {
    let source_digest = options.spec.digest();
    let plan = RecordPlan::new(options.spec.count, options.spec.rate, 0);
    let records = run_subscribers(
        options.transport,
        options.server,
        options.subscribers,
        &plan,
        &options.config,
        options.timeout,
    )
    .await;
    LoadSummary {
        source_digest,
        records,
    }
}
