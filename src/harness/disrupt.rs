//! Faults `run` strikes itself while a combination's stream flows: the restart fault (the
//! server killed as a crash would, and a successor started on its address) and the blackhole
//! storm (the link silenced for every subscriber at once).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::rig::Setup;
use super::summary::Restarted;
use crate::clock::now_ns;
use crate::link::BlackoutSwitch;
use crate::metrics::process;
use crate::protocol::child::{Place, ServerChild};
use crate::protocol::{Job, ServeOptions};
use crate::results::scenario::Scenario;

/// What a disruption did: the server serving at the end (a successor after a restart), the
/// restart, and the blackout's window (monotonic ns).
pub(super) type Disrupted = (ServerChild, Option<Restarted>, Option<(u64, u64)>);

/// Strikes the row's fault, if it has one, once the stream has started: the blackhole storm
/// on the link, or the restart on the server.
pub(super) async fn during_stream(
    mut server: ServerChild,
    setup: &Setup,
    blackout: Option<&BlackoutSwitch>,
    exe: &Path,
    scenario: &Scenario,
) -> anyhow::Result<Disrupted> {
    if let (Some(storm), Some(switch)) = (setup.blackhole(), blackout) {
        let origin_ns = server.stream_started(scenario.timeout).await?;
        let start = origin_ns + storm.after.as_nanos() as u64;
        let window = (start, start + storm.length.as_nanos() as u64);
        switch.strike(window.0, window.1);
        return Ok((server, None, Some(window)));
    }
    if setup.restart_after.is_zero() {
        return Ok((server, None, None));
    }
    let place = |pid: u32| setup.place(pid);
    let serve = setup.serve.clone();
    let (server, restarted) =
        restart(server, setup.restart_after, (exe, &place), serve, scenario).await?;
    Ok((server, restarted, None))
}

/// The restart fault: waits until `after` past the stream's start, kills the server as a crash
/// would (SIGKILL), and starts a new one on the same address that serves the same stream on
/// the same schedule. A server that finished first is left alone.
async fn restart(
    mut server: ServerChild,
    after: Duration,
    (exe, place): (&Path, &Place<'_>),
    mut serve: ServeOptions,
    scenario: &Scenario,
) -> anyhow::Result<(ServerChild, Option<Restarted>)> {
    let origin_ns = server.stream_started(scenario.timeout).await?;
    crate::clock::sleep_until_ns(origin_ns + after.as_nanos() as u64).await;
    if server.child().exited().is_some() {
        return Ok((server, None));
    }
    let first_life_cpu_us = server
        .pid()
        .and_then(|pid| process::sample(Some(pid)).ok())
        .map_or(0, |s| s.cpu_us);
    let killed_ns = now_ns();
    let addr = server.addr();
    server.kill().await?;
    serve.listen = addr;
    serve.start_delay = Duration::ZERO;
    serve.schedule_origin_ns = Some(origin_ns);
    // Every subscriber of the killed server is expected back.
    serve.returning = std::mem::take(&mut serve.start_after).max(serve.returning);
    let netns = scenario.server_netns.as_deref();
    let job = Job::Serve(Box::new(serve));
    let server = ServerChild::spawn_placed(exe, job, netns, "server".into(), place)
        .await
        .context("starting the server again after the restart fault")?;
    let restarted = Restarted {
        origin_ns,
        down_ns: (killed_ns, now_ns()),
        first_life_cpu_us,
    };
    Ok((server, Some(restarted)))
}
