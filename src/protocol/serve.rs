//! What the server under test is asked to do and what it counts: the [`ServeOptions`] `run`
//! sends (or `pushbench serve` builds from its flags) and the [`ServeStats`] it reports last.

use std::net::SocketAddr;
use std::time::Duration;

use crate::event::StreamSpec;
use crate::metrics::latency::Lateness;
use crate::metrics::process::ProcessSample;
use crate::metrics::sockets::SocketTotals;
use crate::transport::{ServerConfig, Transport};

/// Everything `pushbench serve` needs: from its flags, or as a [`crate::protocol::Job`] from
/// `pushbench run` (secret included, so it never appears in argv).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ServeOptions {
    /// Which transport to serve.
    pub transport: Transport,
    /// Address to listen on (port 0 picks one; the chosen address is printed).
    pub listen: SocketAddr,
    /// The stream to publish.
    pub spec: StreamSpec,
    /// Subscribers (connections, or registered webhook endpoints) to wait for before starting.
    pub start_after: usize,
    /// Transport settings.
    pub config: ServerConfig,
    /// How long delivery may make no progress, once published, before exiting anyway.
    pub drain_timeout: Duration,
    /// How long to hold the subscribers idle once `start_after` are connected, before publishing.
    pub start_delay: Duration,
    /// CPUs to pin the server to, kept apart from the load.
    pub cpus: Option<Vec<usize>>,
    /// The credentials to tell whoever reads the output, by name: the ones made for this
    /// server because it was given none, so nobody else knows them.
    #[serde(default)]
    pub announce: Vec<String>,
    /// Continue a stream whose schedule began at this monotonic time, without waiting for
    /// subscribers: how a server restarted mid-stream serves the same events on the same
    /// schedule (the stream is deterministic).
    #[serde(default)]
    pub schedule_origin_ns: Option<u64>,
    /// Subscribers of an earlier server (killed mid-stream) expected to resume here: the
    /// server waits its reconnect grace for each before it stops, and counts those never back.
    #[serde(default)]
    pub returning: usize,
    /// Server processes sharing the port (SO_REUSEPORT), each publishing the same stream on the
    /// same schedule: a server past one process's open-file limit, as a sharded fleet.
    #[serde(default = "one")]
    pub processes: usize,
    /// Share the port with other server processes (set for each member of a fleet).
    #[serde(default)]
    pub reuse_port: bool,
    /// What starts the stream: its subscribers counted, or the parent's word.
    #[serde(default)]
    pub start_on: StartOn,
    /// Write the server's part (its stats, settings, stream and machine) here for `pushbench
    /// merge`.
    #[serde(default)]
    pub stats_out: Option<std::path::PathBuf>,
}

fn one() -> usize {
    1
}

/// What starts a server's stream (one that does not continue an earlier server's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartOn {
    /// `start_after` subscribers connected, then `start_delay`.
    #[default]
    Count,
    /// The parent's [`super::Command::Start`] only: a member of a fleet, whose coordinator
    /// counts over every member (each reports its count as it changes).
    Command,
    /// Whichever comes first. A server behind a reverse proxy counts the proxy's connections,
    /// which the proxy pools (short polls share a few), so the parent tells it once the load
    /// has every subscriber; but a proxy that holds a response back until the stream starts
    /// (a buffered event stream) keeps the load from having them, and there the count starts
    /// it.
    CountOrCommand,
}

/// What the server counted, reported last: to `run` as [`super::Report::Stats`], to a person as
/// sentences.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServeStats {
    /// Events published.
    pub published: u64,
    /// Connections and bytes at the server's sockets.
    pub sockets: SocketTotals,
    /// Subscribers still connected when the server stopped.
    pub left_connected: usize,
    /// Deliveries the server gave up on (a webhook provider whose retries ran out).
    #[serde(default)]
    pub abandoned: u64,
    /// Events answered as gaps (asked for after the replay window let them go), summed over
    /// subscribers.
    #[serde(default)]
    pub gapped: u64,
    /// Subscriptions that ended without their subscriber confirming the whole stream (a drop,
    /// or a connection cut after the last byte was written) and did not resume within the
    /// reconnect grace (readers that ended unconfirmed, less those that resumed).
    #[serde(default)]
    pub unresumed_drops: u64,
    /// Deliveries sent again after a failed attempt (a webhook provider's retries).
    #[serde(default)]
    pub retries: u64,
    /// Why the server refused to send an event at all, the first time (an event too large for
    /// a GET webhook's URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// When the server's injected faults struck (monotonic ns): each cut of the drop fault.
    #[serde(default)]
    pub faults_ns: Vec<u64>,
    /// When the close storm cut every connection (monotonic ns), if it struck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_ns: Option<u64>,
    /// The server's ledger of what subscribers sent up, where they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<crate::upstream::Report>,
    /// CPU time of the server process when the stream started, us.
    pub stream_start_cpu_us: u64,
    /// CPU time of the server process when it stopped, us.
    pub cpu_us: u64,
    /// The server process's largest resident set size (VmHWM), bytes.
    #[serde(default)]
    pub peak_rss_bytes: u64,
    /// CPU time of the publisher's own thread, us: part of `cpu_us`, but the harness's, not
    /// the transport's.
    #[serde(default)]
    pub publisher_cpu_us: u64,
    /// How late the publisher sent events against their schedule (none without a schedule).
    #[serde(default)]
    pub publisher_lateness: Option<Lateness>,
    /// The server's process(es) before the first subscriber.
    #[serde(default)]
    pub before: ProcessSample,
    /// The same once the stream started, with every subscriber connected and idle.
    #[serde(default)]
    pub connected: ProcessSample,
    /// Subscribers connected when the stream started.
    #[serde(default)]
    pub subscribers_at_start: usize,
    /// Growth of the host's socket memory from before to connected, bytes (its TCP buffers
    /// and socket slab, both ends where subscribers share the host).
    #[serde(default)]
    pub kernel_socket_bytes: Option<u64>,
    /// CPU time the server's work outside this process (an external broker the user named)
    /// spent from the stream's start to the end, us: part of the transport's.
    #[serde(default)]
    pub outside_cpu_us: u64,
    /// Why the server's CPU and memory are unmeasured: part of its work runs in a process
    /// nobody named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmeasured: Option<String>,
}

impl ServeStats {
    /// CPU time the transport spent on the stream, us: the process's from the stream's start,
    /// less the publisher's own, plus its work outside the process.
    pub fn transport_cpu_us(&self) -> u64 {
        self.cpu_us
            .saturating_sub(self.stream_start_cpu_us)
            .saturating_sub(self.publisher_cpu_us)
            + self.outside_cpu_us
    }
}
