//! A server past one process: `serve --processes N` starts N server processes on one port
//! (SO_REUSEPORT, so the kernel spreads subscribers over them), each publishing the same
//! deterministic stream on the same schedule, as a sharded fleet would. This coordinator adds
//! up their subscribers, tells every one when the stream begins, and sums their stats: the
//! server's figures are the fleet's.

use std::time::Duration;

use anyhow::Context as _;

use crate::clock::now_ns;
use crate::event::Rate;
use crate::metrics::kernel;
use crate::metrics::latency::Lateness;
use crate::protocol::child::ServerChild;
use crate::protocol::{self, Command, Job, Report, StartOn, START_MARGIN};

use super::{
    announce_credentials, announce_listening, finish, Before, Output, ServeOptions, ServeStats,
    Stops, SHUTDOWN_DEADLINE,
};

/// How often the coordinator adds up its members' subscribers while waiting.
const COUNT_EVERY: Duration = Duration::from_millis(20);

/// Runs the fleet: starts its members, waits for every subscriber over all of them, starts
/// the stream on all at once, and reports the summed stats (and part) when each is done.
pub async fn run(options: ServeOptions, output: Output) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this executable to start the fleet")?;
    let before = Before::sample(&[std::process::id()]);
    let processes = options.processes;
    let say = |text: String| output.say(&text);
    announce_credentials(&options, output)?;
    let mut stops = Stops::install()?;

    // The first member takes the port (port 0 picks one); the rest join it there. Every member
    // gets the same secret, token and settings, so a subscriber may land on any of them.
    let member = |listen| ServeOptions {
        listen,
        processes: 1,
        reuse_port: true,
        start_on: StartOn::Command,
        announce: Vec::new(),
        stats_out: None,
        ..options.clone()
    };
    let spawn = |index: usize, listen| {
        let job = Job::Serve(Box::new(member(listen)));
        let what = format!("server process {} of {processes}", index + 1);
        let exe = exe.clone();
        async move { ServerChild::spawn_named(&exe, job, None, what).await }
    };
    let first = spawn(0, options.listen).await?;
    let addr = first.addr();
    let mut members = vec![first];
    for index in 1..processes {
        members.push(spawn(index, addr).await?);
    }
    let pids: Vec<u32> = members.iter().flat_map(|m| m.pids().to_vec()).collect();
    let settings = members[0].settings().clone();
    let cert_sha256 = options.config.tls.cert_hash().ok();
    announce_listening(
        options.transport,
        (addr, cert_sha256),
        &settings,
        &pids,
        output,
    )?;
    say(format!(
        "{processes} server processes on {addr}; waiting for {} subscriber(s) over all of them",
        options.start_after
    ));

    let mut stopped_early = None;
    let mut kernel_connected = None;
    if options.schedule_origin_ns.is_none() {
        let mut counts = vec![0usize; processes];
        while counts.iter().sum::<usize>() < options.start_after {
            for (member, count) in members.iter_mut().zip(&mut counts) {
                while let Some(report) = member.child().try_next()? {
                    if let Report::Subscribers { connected } = report {
                        *count = connected;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(COUNT_EVERY) => {}
                why = stops.next() => { stopped_early = Some(why); break }
            }
        }
        if stopped_early.is_none() {
            tokio::time::sleep(options.start_delay).await;
            kernel_connected = kernel::socket_bytes();
            let origin_ns = now_ns() + START_MARGIN.as_nanos() as u64;
            for member in &mut members {
                member.child().send(&Command::Start { origin_ns }).await?;
            }
            if output == Output::Json {
                protocol::report(&Report::Publishing { origin_ns })?;
            }
            say(format!(
                "stream started on all {processes} server processes"
            ));
        }
    }
    if let Some(why) = stopped_early {
        eprintln!("{why}; stopping the fleet");
        for pid in &pids {
            terminate_pid(*pid);
        }
    }

    // Each member exits once its subscribers have the stream (its own drain timeout bounds
    // that); a signal here is passed on to every member, which then stops and reports.
    let longest = stream_duration(&options) + options.drain_timeout * 4 + SHUTDOWN_DEADLINE * 2;
    let mut collect = Box::pin(futures_util::future::join_all(
        members.iter_mut().map(|m| m.stats(longest)),
    ));
    let gathered = loop {
        tokio::select! {
            gathered = &mut collect => break gathered,
            why = stops.next() => eprintln!("{why}; stopping the fleet"),
        }
        for pid in &pids {
            terminate_pid(*pid);
        }
    };
    drop(collect);
    let mut each = Vec::with_capacity(processes);
    for (index, stats) in gathered.into_iter().enumerate() {
        each.push(stats.with_context(|| format!("server process {} of {processes}", index + 1))?);
    }
    for member in &mut members {
        member.child().wait(SHUTDOWN_DEADLINE).await?;
    }
    let mut stats = ServeStats::of_fleet(&each);
    stats.kernel_socket_bytes = kernel_connected
        .zip(before.kernel_socket_bytes)
        .map(|(connected, before)| connected.saturating_sub(before));
    finish(
        &options,
        settings,
        stats,
        before.unix_secs,
        processes,
        output,
    )
}

/// How long the stream takes on its schedule (none without one).
fn stream_duration(options: &ServeOptions) -> Duration {
    match options.spec.rate {
        Rate::PerSecond(rate) if rate > 0.0 => {
            Duration::from_secs_f64(options.spec.count as f64 / rate)
        }
        _ => Duration::ZERO,
    }
}

/// Asks one member to stop (SIGTERM): it stops serving and reports its stats.
fn terminate_pid(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

impl ServeStats {
    /// A fleet's stats from its members': counts, bytes, CPU and memory summed; the stream is
    /// one, so events published is any member's; the publisher's lateness is the worst member's
    /// at each percentile (percentiles do not add, so this is an upper bound).
    pub fn of_fleet(members: &[ServeStats]) -> ServeStats {
        let mut fleet = ServeStats::default();
        for m in members {
            fleet.published = fleet.published.max(m.published);
            fleet.sockets = fleet.sockets + m.sockets;
            fleet.left_connected += m.left_connected;
            fleet.abandoned += m.abandoned;
            fleet.gapped += m.gapped;
            fleet.unresumed_drops += m.unresumed_drops;
            fleet.retries += m.retries;
            fleet.refusal = fleet.refusal.take().or_else(|| m.refusal.clone());
            fleet.faults_ns.extend(&m.faults_ns);
            // Every member cuts its own connections; the storm is when the first did.
            fleet.storm_ns = fleet.storm_ns.into_iter().chain(m.storm_ns).min();
            // Each sender's messages reach the member its connection went to.
            match (&mut fleet.upstream, &m.upstream) {
                (Some(mine), Some(theirs)) => mine.merge(theirs),
                (mine @ None, theirs) => mine.clone_from(theirs),
                (Some(_), None) => {}
            }
            fleet.stream_start_cpu_us += m.stream_start_cpu_us;
            fleet.cpu_us += m.cpu_us;
            fleet.peak_rss_bytes += m.peak_rss_bytes;
            fleet.publisher_cpu_us += m.publisher_cpu_us;
            fleet.publisher_lateness = match (fleet.publisher_lateness, m.publisher_lateness) {
                (Some(a), Some(b)) => Some(Lateness {
                    p50_us: a.p50_us.max(b.p50_us),
                    p99_us: a.p99_us.max(b.p99_us),
                    max_us: a.max_us.max(b.max_us),
                }),
                (a, b) => a.or(b),
            };
            fleet.before = fleet.before + m.before;
            fleet.connected = fleet.connected + m.connected;
            fleet.subscribers_at_start += m.subscribers_at_start;
            fleet.outside_cpu_us += m.outside_cpu_us;
            fleet.unmeasured = fleet.unmeasured.take().or_else(|| m.unmeasured.clone());
        }
        fleet.faults_ns.sort_unstable();
        fleet
    }
}
