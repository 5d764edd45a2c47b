//! The server under test as a child process (`pushbench serve`): started with the run's stream
//! and placement, its address read from its first lines, its stats line read at exit, and its
//! stderr kept to explain a crash.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::event::StreamSpec;
use crate::serve::{ServeStats, STATS_PREFIX};
use crate::transport::{Secret, Transport};

/// How long a child may take to print its address.
const STARTUP: Duration = Duration::from_secs(20);
/// How much of a child's stderr is kept.
const STDERR_KEPT: usize = 16 * 1024;

/// How to start the server under test.
#[derive(Clone, Debug)]
pub struct ChildSpec<'a> {
    /// The `pushbench` executable.
    pub exe: &'a Path,
    /// Transport to serve.
    pub transport: Transport,
    /// The stream.
    pub spec: &'a StreamSpec,
    /// Subscribers to wait for.
    pub start_after: usize,
    /// Idle hold before the stream.
    pub start_delay: Duration,
    /// CPUs to pin to.
    pub cpus: Option<&'a [usize]>,
    /// Webhooks: a new connection per delivery.
    pub webhook_new_connection: bool,
}

/// A running `pushbench serve`.
pub struct ServerChild {
    child: Child,
    addr: SocketAddr,
    secret: Option<Secret>,
    stats: oneshot::Receiver<Option<ServeStats>>,
    stderr: Arc<Mutex<String>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerChild {
    /// Starts the child and waits for it to print its address.
    pub async fn spawn(spec: ChildSpec<'_>) -> anyhow::Result<Self> {
        let mut command = Command::new(spec.exe);
        command
            .arg("serve")
            .args([
                "--transport",
                spec.transport.name(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--events", &spec.spec.count.to_string()])
            .args(["--rate", &spec.spec.rate.to_string()])
            .args(["--payload", &spec.spec.payload.to_string()])
            .args(["--seed", &spec.spec.seed.to_string()])
            .args(["--start-after", &spec.start_after.to_string()])
            .args(["--start-delay", &spec.start_delay.as_secs_f64().to_string()])
            .args(["--drain-timeout", "15"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cpus) = spec.cpus {
            let list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
            command.args(["--cpus", &list.join(",")]);
        }
        if spec.webhook_new_connection {
            command.arg("--webhook-new-connection");
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", spec.exe.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let stderr_pipe = child.stderr.take().context("child stderr")?;

        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_task = tokio::spawn(keep_stderr(stderr_pipe, Arc::clone(&stderr)));

        let mut lines = BufReader::new(stdout).lines();
        let mut secret = None;
        let addr = tokio::time::timeout(STARTUP, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(text) = line.strip_prefix("webhook secret: ") {
                    secret = Some(text.parse::<Secret>()?);
                }
                if let Some((_, addr)) = line.split_once("listening on ") {
                    return Ok::<_, anyhow::Error>(Some(addr.parse::<SocketAddr>()?));
                }
            }
            Ok(None)
        })
        .await;
        let addr = match addr {
            Ok(Ok(Some(addr))) => addr,
            Ok(Ok(None)) => {
                let status = child.wait().await.ok();
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
                bail!(
                    "server exited before listening ({}):\n{}",
                    status.map(|s| s.to_string()).unwrap_or_default(),
                    stderr.lock().unwrap_or_else(|e| e.into_inner())
                )
            }
            Ok(Err(e)) => return Err(e.context("reading the server's address")),
            Err(_) => bail!("server did not print its address within {STARTUP:?}"),
        };

        // The rest of stdout: the stats line comes last.
        let (tx, stats) = oneshot::channel();
        tokio::spawn(async move {
            let mut found = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(json) = line.strip_prefix(STATS_PREFIX) {
                    found = serde_json::from_str(json).ok();
                }
            }
            let _ = tx.send(found);
        });
        Ok(Self {
            child,
            addr,
            secret,
            stats,
            stderr,
            stderr_task: Some(stderr_task),
        })
    }

    /// Where subscribers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The webhook secret the child printed, if it serves webhooks.
    pub fn secret(&self) -> Option<Secret> {
        self.secret.clone()
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the child has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the child wrote to stderr (the last part), once it has exited: waits (briefly) for
    /// the pipe to be read to its end, so a crash message is never cut off.
    pub async fn stderr(&mut self) -> String {
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to `timeout` for the child to finish on its own (it exits once every
    /// subscriber has the stream), then asks it to stop; returns its stats, or an error with its
    /// stderr if it failed.
    pub async fn finish(mut self, timeout: Duration) -> anyhow::Result<ServeStats> {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                self.terminate_gently().await;
                self.child.wait().await?
            }
        };
        if !status.success() {
            let stderr = self.stderr().await;
            return Err(anyhow!("server {status}; its stderr:\n{stderr}"));
        }
        let stderr = self.stderr().await;
        match self.stats.await {
            Ok(Some(stats)) => Ok(stats),
            _ => Err(anyhow!(
                "server exited without its stats line; stderr:\n{stderr}"
            )),
        }
    }

    async fn terminate_gently(&mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Keeps the last [`STDERR_KEPT`] bytes of the child's stderr.
async fn keep_stderr(mut pipe: tokio::process::ChildStderr, kept: Arc<Mutex<String>>) {
    let mut chunk = vec![0u8; 4096];
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.push_str(&String::from_utf8_lossy(&chunk[..n]));
        if kept.len() > STDERR_KEPT {
            let cut = kept.len() - STDERR_KEPT;
            let cut = (cut..kept.len())
                .find(|&i| kept.is_char_boundary(i))
                .unwrap_or(0);
            kept.drain(..cut);
        }
    }
}
