//! The machine's own floor: a raw TCP ping-pong of 64-byte messages between the load process
//! and an echo process placed where the server under test runs. On a VM whose idle CPUs take
//! tens of microseconds to wake, much of a transport's latency is this floor, and the results
//! say so.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::clock::now_ns;
use crate::metrics::latency::{self, Percentiles};
use crate::results::Calibration;

/// Size of each ping.
const MESSAGE: usize = 64;
/// Round trips timed, after as many untimed to warm up.
pub const ROUND_TRIPS: u64 = 2000;

/// Echoes 64-byte messages on every connection until it closes; returns after the first
/// connection ends (one calibration per process).
pub async fn echo(listener: TcpListener) -> std::io::Result<()> {
    let (mut stream, _) = listener.accept().await?;
    stream.set_nodelay(true)?;
    let mut buf = [0u8; MESSAGE];
    loop {
        match stream.read_exact(&mut buf).await {
            Ok(_) => stream.write_all(&buf).await?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Times [`ROUND_TRIPS`] ping-pongs against an echo at `addr`.
pub async fn ping_pong(addr: SocketAddr) -> std::io::Result<Calibration> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut histogram = latency::histogram();
    let ping = [7u8; MESSAGE];
    let mut pong = [0u8; MESSAGE];
    for i in 0..ROUND_TRIPS * 2 {
        let start = now_ns();
        stream.write_all(&ping).await?;
        stream.read_exact(&mut pong).await?;
        if i >= ROUND_TRIPS {
            histogram.saturating_record(latency::micros_between(start, now_ns()));
        }
    }
    Ok(Calibration {
        round_trips: ROUND_TRIPS,
        rtt_us: Percentiles::of(&histogram),
    })
}

/// Runs `exe echo` on `cpus` and ping-pongs with it from this process.
pub async fn calibrate(exe: &Path, cpus: Option<&[usize]>) -> anyhow::Result<Calibration> {
    let mut command = Command::new(exe);
    command
        .args(["echo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(cpus) = cpus {
        let list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
        command.args(["--cpus", &list.join(",")]);
    }
    let mut child = command
        .spawn()
        .context("starting the calibration echo process")?;
    let stdout = child.stdout.take().context("echo stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await? {
            if let Some((_, addr)) = line.split_once("listening on ") {
                return addr.parse().map_err(std::io::Error::other);
            }
        }
        Err(std::io::Error::other("echo exited before listening"))
    })
    .await
    .context("echo process did not start")??;
    let calibration = ping_pong(addr).await.context("calibration ping-pong")?;
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    Ok(calibration)
}
