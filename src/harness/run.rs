//! `pushbench run`: one driver for every scenario and every transport. For each combination it
//! starts the server under test as a child process pinned apart from the load, connects the
//! subscribers here, measures, stops the child, and adds one entry to the results. Load shape is
//! data (the [`Scenario`]); nothing here depends on which transport runs.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::clock::now_ns;
use crate::event::{PayloadSizes, StreamSpec};
use crate::hub::BatchLimit;
use crate::metrics::latency::{self, Percentiles};
use crate::metrics::machine::Machine;
use crate::metrics::process::{self, ProcessSample};
use crate::report::results::{
    utc_stamp, Connection, HandshakeTimes, Histograms, Placement, Results, Settings, Throughput,
    TransportResult, SCHEMA_VERSION,
};
use crate::report::table;
use crate::scenario::{raise_open_file_limit, Scenario};
use crate::serve::ServeStats;
use crate::transport::{ClientConfig, ServerConfig, Transport};

use super::calibrate::calibrate;
use super::child::{ChildSpec, ServerChild};
use super::load::run_subscribers;
use super::subscriber::{RecordPlan, SubscriberRecord};

/// Idle hold before every stream, at least: long enough to sample memory with everyone
/// connected.
const MIN_START_DELAY: Duration = Duration::from_millis(300);

/// What `pushbench run` needs besides the scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// What to measure.
    pub scenario: Scenario,
    /// Results go to `out/<run-id>/`.
    pub out: PathBuf,
    /// The `pushbench` executable that serves (normally this one).
    pub exe: PathBuf,
    /// Pin the load and the server to separate CPUs (off only where the caller's own threads
    /// must not be pinned, as in tests).
    pub pin: bool,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// Where results.json was written.
    pub path: PathBuf,
    /// The results.
    pub results: Results,
}

/// One combination to measure.
struct Combination<'a> {
    transport: Transport,
    subscribers: usize,
    payload: &'a PayloadSizes,
    repeat: u32,
}

/// Runs the scenario, writing results as it goes (so an interrupted or failed run keeps what
/// it measured, marked incomplete).
pub async fn run(options: RunOptions) -> anyhow::Result<RunOutcome> {
    let scenario = &options.scenario;
    raise_open_file_limit();
    // Before pinning, so the machine's CPU count is the machine's, not the load's share.
    let machine = Machine::describe();
    let placement = match process::split_cpus().filter(|_| options.pin) {
        Some((load, server)) => {
            process::pin_this_process(&load).context("pinning the load process")?;
            Placement {
                pinned: true,
                load_cpus: load,
                server_cpus: server,
            }
        }
        None => Placement {
            pinned: false,
            load_cpus: process::available_cpus(),
            server_cpus: Vec::new(),
        },
    };
    let server_cpus: Option<Vec<usize>> = placement.pinned.then(|| placement.server_cpus.clone());
    let server_cpus = server_cpus.as_deref();
    let calibration = calibrate(&options.exe, server_cpus).await?;
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let run_id = format!("{}-{}", utc_stamp(started_unix), scenario.name);
    let dir = options.out.join(&run_id);
    let defaults = ServerConfig::default();
    let mut results = Results {
        schema_version: SCHEMA_VERSION,
        run_id,
        started_unix,
        complete: false,
        machine,
        placement,
        calibration,
        settings: Settings {
            ws_read_buffer_bytes: defaults.ws_read_buffer,
            batch_events: BatchLimit::default().events,
            batch_bytes: BatchLimit::default().bytes,
            hold_secs: defaults.hold.as_secs_f64(),
            heartbeat_secs: defaults.heartbeat.as_secs_f64(),
        },
        scenario: scenario.clone(),
        runs: Vec::new(),
        max_rates: Vec::new(),
    };

    let mut combinations = Vec::new();
    for payload in &scenario.payloads {
        for &subscribers in &scenario.subscribers {
            for &transport in &scenario.transports {
                let repeats = if scenario.find_max {
                    1
                } else {
                    scenario.repeat
                };
                for repeat in 0..repeats {
                    combinations.push(Combination {
                        transport,
                        subscribers,
                        payload,
                        repeat,
                    });
                }
            }
        }
    }
    let progress = ProgressBar::new(combinations.len() as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut interrupted = false;
    for combination in &combinations {
        progress.set_message(format!(
            "{} x{} {} B{}",
            combination.transport,
            combination.subscribers,
            combination.payload,
            if scenario.repeat > 1 {
                format!(" (repeat {})", combination.repeat + 1)
            } else {
                String::new()
            }
        ));
        if scenario.find_max {
            let found = tokio::select! {
                found = find_max(&options, combination, server_cpus, &mut results, &dir) => found,
                _ = tokio::signal::ctrl_c() => {
                    interrupted = true;
                    break;
                }
            };
            if let Err(error) = found {
                progress.finish_and_clear();
                let path = results.write(&dir)?;
                return Err(error.context(format!("partial results kept in {}", path.display())));
            }
            progress.inc(1);
            continue;
        }
        let measured = tokio::select! {
            measured = measure(&options, scenario, combination, server_cpus) => measured,
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                break;
            }
        };
        match measured {
            Ok(result) => {
                if result.failed {
                    progress.println(format!(
                        "FAILED: {} with {} subscribers did not deliver the identical stream: lost {}, \
                         duplicated {}, reordered {}, malformed {}{}",
                        result.transport,
                        result.subscribers,
                        result.lost,
                        result.duplicated,
                        result.reordered,
                        result.malformed,
                        result.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
                    ));
                }
                results.runs.push(result);
                results.write(&dir)?;
            }
            Err(error) => {
                // A crashed server ends the run: keep what was measured, marked incomplete.
                progress.finish_and_clear();
                let path = results.write(&dir)?;
                return Err(error.context(format!(
                    "{} with {} subscribers; partial results kept in {}",
                    combination.transport,
                    combination.subscribers,
                    path.display()
                )));
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    results.complete = !interrupted;
    let path = results.write(&dir)?;
    print!("{}", table::render(&results));
    if interrupted {
        anyhow::bail!("interrupted; partial results kept in {}", path.display());
    }
    Ok(RunOutcome { path, results })
}

/// Seconds of stream per `find_max` level, and how much of it is warm-up.
const LEVEL_SECS: f64 = 3.0;
const LEVEL_WARMUP: Duration = Duration::from_millis(500);
/// Most levels `find_max` tries (doubling each time).
const MAX_LEVELS: usize = 14;

/// Steps the offered rate up, doubling from the scenario's rate (or 1,000 ev/s), until p99
/// passes the budget or an event is lost; records every level and the last that held.
async fn find_max(
    options: &RunOptions,
    combination: &Combination<'_>,
    server_cpus: Option<&[usize]>,
    results: &mut Results,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let budget_us = (options.scenario.p99_budget_ms * 1000.0) as u64;
    let mut rate = match options.scenario.rate {
        crate::event::Rate::PerSecond(rate) => rate,
        crate::event::Rate::Max => 1000.0,
    };
    let mut held = None;
    let mut stopped_because = format!("still held after {MAX_LEVELS} levels");
    for _ in 0..MAX_LEVELS {
        let mut level = options.scenario.clone();
        level.rate = crate::event::Rate::PerSecond(rate);
        level.events = (rate * LEVEL_SECS).round().max(100.0) as u64;
        level.warmup = LEVEL_WARMUP;
        let result = measure(options, &level, combination, server_cpus).await?;
        let verdict = if result.failed {
            Some(format!("events lost or corrupted at {rate} ev/s"))
        } else if result.latency_us.p99 > budget_us {
            Some(format!(
                "p99 {} us over the budget at {rate} ev/s",
                result.latency_us.p99
            ))
        } else {
            None
        };
        let p99 = result.latency_us.p99;
        results.runs.push(result);
        results.write(dir)?;
        match verdict {
            Some(why) => {
                stopped_because = why;
                break;
            }
            None => held = Some((rate, p99)),
        }
        rate *= 2.0;
    }
    let (events_per_s, p99_us) = held.unwrap_or((0.0, 0));
    results.max_rates.push(crate::report::results::MaxRate {
        transport: combination.transport.name().to_owned(),
        subscribers: combination.subscribers,
        payload: combination.payload.to_string(),
        events_per_s,
        p99_us,
        stopped_because,
    });
    results.write(dir)?;
    Ok(())
}

/// Measures one combination with a fresh server child.
async fn measure(
    options: &RunOptions,
    scenario: &Scenario,
    combination: &Combination<'_>,
    server_cpus: Option<&[usize]>,
) -> anyhow::Result<TransportResult> {
    let spec = scenario.spec(combination.payload);
    let subscribers = combination.subscribers;
    let mut child = ServerChild::spawn(ChildSpec {
        exe: &options.exe,
        transport: combination.transport,
        spec: &spec,
        start_after: subscribers,
        start_delay: scenario.idle.max(MIN_START_DELAY),
        cpus: server_cpus,
        webhook_new_connection: scenario.webhook_new_connection,
    })
    .await?;
    let pid = child.pid();
    let server_before = pid
        .and_then(|pid| process::sample(Some(pid)).ok())
        .unwrap_or_default();
    let load_before = process::sample(None).unwrap_or_default();

    let plan = RecordPlan::new(spec.count, spec.rate, scenario.warmup.as_nanos() as u64);
    let client = ClientConfig {
        poll_interval: scenario.poll_interval,
        webhook_secret: child.secret(),
        ..ClientConfig::default()
    };
    let counters = Arc::clone(&client.counters);
    let load = {
        let (plan, addr, transport, timeout) = (
            Arc::clone(&plan),
            child.addr(),
            combination.transport,
            scenario.timeout,
        );
        tokio::spawn(async move {
            run_subscribers(transport, addr, subscribers, &plan, &client, timeout).await
        })
    };

    // Everyone connected (or the server gone, or time up): sample memory before the stream.
    let deadline = now_ns() + scenario.timeout.as_nanos() as u64;
    while plan.connected.load(Ordering::Relaxed) < subscribers
        && !load.is_finished()
        && now_ns() < deadline
    {
        if let Some(status) = child.exited() {
            load.abort();
            anyhow::bail!(
                "server {status} while subscribers connected; its stderr:\n{}",
                child.stderr().await
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let server_connected = pid
        .and_then(|pid| process::sample(Some(pid)).ok())
        .unwrap_or_default();
    let load_connected = process::sample(None).unwrap_or_default();

    let records = load.await.context("load task failed")?;
    let load_after = process::sample(None).unwrap_or_default();
    let stats = child.finish(Duration::from_secs(30)).await?;

    Ok(summarise(
        combination,
        &spec,
        &records,
        &plan,
        Samples {
            server_before,
            server_connected,
            load_before,
            load_connected,
            load_after,
        },
        &stats,
        counters.totals(),
    ))
}

/// Process samples taken around one combination.
struct Samples {
    server_before: ProcessSample,
    server_connected: ProcessSample,
    load_before: ProcessSample,
    load_connected: ProcessSample,
    load_after: ProcessSample,
}

/// Turns subscriber records, process samples and counters into one result.
fn summarise(
    combination: &Combination<'_>,
    spec: &StreamSpec,
    records: &[SubscriberRecord],
    plan: &RecordPlan,
    samples: Samples,
    stats: &ServeStats,
    client_sockets: crate::metrics::sockets::SocketTotals,
) -> TransportResult {
    let subscribers = records.len().max(1);
    let source = spec.digest();
    let mut latency_all = latency::histogram();
    let mut service_all = latency::histogram();
    let mut handshakes = latency::histogram();
    let mut batches: Option<Histogram<u64>> = None;
    let mut first_events = Vec::new();
    let (mut delivered, mut lost, mut duplicated, mut reordered, mut malformed) = (0, 0, 0, 0, 0);
    let mut digest_ok = true;
    let mut error = None;
    for record in records {
        let counts = record.tally.counts();
        delivered += counts.distinct;
        lost += record.tally.lost();
        duplicated += counts.duplicated;
        reordered += counts.reordered;
        malformed += counts.malformed;
        digest_ok &= record.tally.digest() == source;
        if error.is_none() {
            error = record.error.clone();
        }
        latency::merge(&mut latency_all, &record.latency_us);
        latency::merge(&mut service_all, &record.service_time_us);
        if let Some(us) = record.handshake_us {
            handshakes.saturating_record(us);
        }
        if let Some(us) = record.first_event_us {
            first_events.push(us);
        }
        if let Some(b) = &record.events_per_response {
            let merged = batches.get_or_insert_with(|| Histogram::new_from(b));
            let _ = merged.add(b);
        }
    }
    first_events.sort_unstable();

    let first_sent = records.iter().filter_map(|r| r.first_sent_ns).min();
    let last_received = records.iter().filter_map(|r| r.last_received_ns).max();
    let span_secs = match (first_sent, last_received) {
        (Some(first), Some(last)) if last > first => (last - first) as f64 / 1e9,
        _ => 0.0,
    };
    let per_sec = |n: f64| if span_secs > 0.0 { n / span_secs } else { 0.0 };
    let payload_bytes = spec.payload_bytes() as f64
        * subscribers as f64
        * (delivered as f64 / (spec.count as f64 * subscribers as f64));
    let expected = spec.count * subscribers as u64;
    let per_event = |n: f64| {
        if delivered > 0 {
            n / delivered as f64
        } else {
            0.0
        }
    };
    let sockets = stats.sockets + client_sockets;
    let load_cpus = process::available_cpus().len().max(1) as f64;
    let load_cpu_us = samples
        .load_after
        .cpu_us
        .saturating_sub(samples.load_connected.cpu_us) as f64;
    let failed = !digest_ok || lost > 0 || duplicated > 0 || malformed > 0 || error.is_some();

    TransportResult {
        transport: combination.transport.name().to_owned(),
        subscribers: records.len(),
        payload: combination.payload.to_string(),
        repeat: combination.repeat,
        offered_rate: spec.rate.to_string(),
        events_expected: expected,
        events_delivered: delivered,
        lost,
        duplicated,
        reordered,
        malformed,
        digest_ok,
        failed,
        error,
        latency_us: Percentiles::of(&latency_all),
        service_time_us: Percentiles::of(&service_all),
        throughput: Throughput {
            events_per_s: per_sec(delivered as f64),
            bytes_per_s: per_sec(payload_bytes),
            events_per_s_per_subscriber: per_sec(delivered as f64) / subscribers as f64,
            reach: delivered as f64 / expected.max(1) as f64,
        },
        connection: Connection {
            handshake_us: HandshakeTimes {
                p50: if handshakes.is_empty() {
                    0
                } else {
                    handshakes.value_at_quantile(0.5)
                },
                p99: if handshakes.is_empty() {
                    0
                } else {
                    handshakes.value_at_quantile(0.99)
                },
            },
            first_event_us: first_events
                .get(first_events.len() / 2)
                .copied()
                .unwrap_or(0),
            server_rss_per_conn_bytes: rss_per_conn(
                samples.server_before,
                samples.server_connected,
                subscribers,
            ),
            client_rss_per_conn_bytes: rss_per_conn(
                samples.load_before,
                samples.load_connected,
                subscribers,
            ),
            server_cpu_us_per_event: per_event(
                stats.cpu_us.saturating_sub(stats.stream_start_cpu_us) as f64,
            ),
            wire_bytes_per_event: per_event((sockets.bytes_in + sockets.bytes_out) as f64),
            connections_per_1000_events: per_event(sockets.connections as f64 * 1000.0),
        },
        events_per_response: batches.as_ref().map(Percentiles::of),
        load_cpu_share: if span_secs > 0.0 {
            load_cpu_us / (span_secs * 1e6 * load_cpus)
        } else {
            0.0
        },
        latency_over_time: plan.intervals.summary(),
        histograms: Histograms {
            latency_us: latency::encode(&latency_all),
            service_time_us: latency::encode(&service_all),
        },
    }
}

/// RSS growth per connection between two samples (never negative: memory can be returned).
fn rss_per_conn(before: ProcessSample, after: ProcessSample, connections: usize) -> f64 {
    after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / connections.max(1) as f64
}
