//! The one typed protocol between `pushbench run` and the processes it starts (the server under
//! test and the load workers), defined once, as mini-redis defines its `Frame` once.
//!
//! The parent writes one [`Job`] as a JSON line on the child's stdin (so settings and secrets
//! never appear in argv, where `ps` would show them), and later [`Command`]s the same way; the
//! child answers with [`Report`]s, one JSON line each, on its stdout, and writes only human
//! diagnostics to stderr. `pushbench serve
//! --json` speaks the same reports for scripts that start a server themselves.
//!
//! The protocol owns its messages' types: the jobs ([`ServeOptions`], [`LoadJob`]), what comes
//! back ([`ServeStats`], [`LoadPart`]), the part files of a run across hosts ([`PartFile`]),
//! and the parent's end of the pipe ([`child`]). Serve and the harness, above it, fill them in.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::process::ProcessSample;
use crate::transport::{Credentials, SettingValues};

pub mod child;
mod load;
pub mod open_files;
mod part;
mod serve;
pub mod stdout;

pub use load::{
    DeliveryCounts, LoadJob, LoadPart, PartHistograms, WorkerProcess, RECONNECTIONS_KEPT,
};
pub use part::{PartFile, ServerPart};
pub use serve::{ServeOptions, ServeStats, StartOn};

/// What a child process is asked to do.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Serve one transport and publish the stream (`pushbench serve`).
    Serve(Box<ServeOptions>),
    /// Run a share of the subscribers against a server (`pushbench load`).
    Load(Box<LoadJob>),
}

/// How far ahead of its sending a [`Command::Start`]'s schedule begins, so every server told
/// has it before event 0 is due.
pub const START_MARGIN: Duration = Duration::from_millis(50);

/// What a parent tells a child after its job.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// A server told when to start (a member of a fleet, or a server behind a proxy): publish
    /// the stream on the schedule that begins at `origin_ns` (every subscriber is there).
    Start {
        /// Event 0's scheduled time, on the host's monotonic clock.
        origin_ns: u64,
    },
    /// A load worker whose subscribers hold the whole stream: every worker's do, so they may
    /// close their connections.
    Release,
}

/// What a child tells its parent, in order.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
pub enum Report {
    /// Server: bound and accepting subscribers at `addr`.
    Listening {
        /// Where subscribers connect.
        addr: SocketAddr,
        /// The transport's server settings it runs with, defaults included.
        #[serde(default)]
        settings: SettingValues,
        /// The processes that serve, when they are not the child itself (a fleet's members).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pids: Vec<u32>,
        /// The SHA-256 (hex) of the certificate it serves with, for clients that trust it by
        /// hash (`load --cert-hash`, a browser's WebTransport).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cert_sha256: Option<String>,
    },
    /// Server, a member of a fleet waiting for its start: how many subscribers it has now.
    Subscribers {
        /// Subscribers connected (or webhook endpoints registered).
        connected: usize,
    },
    /// Server: the credentials it made because it was given none (its transport's secrets,
    /// such as a webhook signing secret), which its subscribers need and nobody else knows.
    Credentials {
        /// By name.
        made: Credentials,
    },
    /// Server: the stream's schedule starts now (or started, for a restarted server) at
    /// `origin_ns` on the shared monotonic clock.
    Publishing {
        /// Event 0's scheduled time.
        origin_ns: u64,
    },
    /// Server, last: what it counted.
    Stats(Box<ServeStats>),
    /// Load worker: every one of its subscribers holds the whole stream (or has ended), its
    /// connection kept open until [`Command::Release`].
    Holding,
    /// Load worker: every one of its subscribers is established (or has given up), so memory per
    /// idle connection can be sampled before the stream starts.
    Connected {
        /// Subscribers established.
        subscribers: usize,
        /// The worker before its first subscriber.
        before: ProcessSample,
        /// The worker with its subscribers connected.
        connected: ProcessSample,
    },
    /// Load worker, last: everything it measured.
    Part(Box<LoadPart>),
}

/// Why a protocol line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The stream ended or failed.
    #[error("reading the protocol stream: {0}")]
    Io(#[from] std::io::Error),
    /// The line is not a message of this protocol.
    #[error("not a pushbench protocol message ({error}): {line:.200}")]
    Malformed {
        /// What serde said.
        error: String,
        /// The start of the line.
        line: String,
    },
}

/// Parses one protocol line.
pub fn parse<T: for<'de> Deserialize<'de>>(line: &str) -> Result<T, ProtocolError> {
    serde_json::from_str(line).map_err(|e| ProtocolError::Malformed {
        error: e.to_string(),
        line: line.to_owned(),
    })
}

/// One message as its protocol line (JSON, then a newline).
pub fn line<T: Serialize>(message: &T) -> String {
    // Every protocol type serialises (plain data, string keys).
    let mut text = serde_json::to_string(message).unwrap_or_default();
    text.push('\n');
    text
}

/// Reads the job a child was started for: the first line of its stdin.
pub fn read_job(input: &mut impl BufRead) -> Result<Job, ProtocolError> {
    let mut text = String::new();
    if input.read_line(&mut text)? == 0 {
        return Err(ProtocolError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no job on stdin: `pushbench worker` is started by `pushbench run`",
        )));
    }
    parse(text.trim_end())
}

/// Writes one report to stdout at once (the parent is waiting on it).
pub fn report(message: &Report) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line(message).as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports survive their line form, and a stranger's line is refused with its start.
    #[test]
    fn reports_round_trip_and_strangers_are_refused() {
        let sent = Report::Listening {
            addr: "127.0.0.1:4000".parse().unwrap(),
            settings: SettingValues::from_pairs([("longpoll-hold".into(), "2s".into())]),
            pids: Vec::new(),
            cert_sha256: None,
        };
        let text = line(&sent);
        assert!(text.ends_with('\n') && text.starts_with("{\"report\":\"listening\""));
        match parse::<Report>(text.trim_end()).unwrap() {
            Report::Listening { addr, settings, .. } => {
                assert_eq!(addr.port(), 4000);
                assert_eq!(settings.0["longpoll-hold"], "2s");
            }
            other => panic!("{other:?}"),
        }
        let error = parse::<Report>("listening on 127.0.0.1:4000").unwrap_err();
        assert!(error.to_string().contains("listening on 127.0.0.1:4000"));
        let mut empty: &[u8] = b"";
        assert!(read_job(&mut empty).is_err());
    }
}
