//! The processes `run` starts, seen from the parent: the server under test and the load
//! workers, each a `pushbench worker` given its [`Job`] on stdin and heard through its
//! [`Report`]s on stdout (the typed protocol), with its stderr kept to explain a crash.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child as ProcessChild, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::metrics::process::ProcessSample;
use crate::protocol::ServeStats;
use crate::protocol::{self, Job, Report};
use crate::transport::SettingValues;

use crate::protocol::LoadPart;

/// How long a child may take to say it is ready.
const STARTUP: Duration = Duration::from_secs(20);
/// How much of a child's stderr is kept.
const STDERR_KEPT: usize = 16 * 1024;

/// One `pushbench worker` process.
pub struct Child {
    what: String,
    process: ProcessChild,
    /// Held open for the child's life (closing it tells the child its parent is gone); later
    /// commands go this way too.
    stdin: ChildStdin,
    reports: mpsc::Receiver<Result<Report, protocol::ProtocolError>>,
    stderr: Arc<Mutex<String>>,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

/// What is done with a child's PID before it gets its job (a CPU limit's cgroup takes it).
pub type Place<'a> = dyn Fn(u32) -> Result<(), String> + Sync + 'a;

impl Child {
    /// Starts `exe worker` (in network namespace `netns`, through `ip netns exec`, when given)
    /// and hands it `job`; `what` names it in errors.
    pub async fn spawn(
        exe: &Path,
        job: &Job,
        what: String,
        netns: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::spawn_placed(exe, job, what, netns, &|_| Ok(())).await
    }

    /// As [`Child::spawn`], handing the child's PID to `place` before its job (so before it
    /// starts any process of its own): where a CPU limit puts it in its cgroup.
    pub async fn spawn_placed(
        exe: &Path,
        job: &Job,
        what: String,
        netns: Option<&str>,
        place: &Place<'_>,
    ) -> anyhow::Result<Self> {
        let mut command = match netns {
            Some(netns) => {
                // `ip netns exec` execs the program, so the pid is the worker's own.
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let mut process = command
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| match netns {
                Some(netns) => format!("cannot start {} in namespace {netns}", exe.display()),
                None => format!("cannot start {}", exe.display()),
            })?;
        if let Some(pid) = process.id() {
            place(pid).map_err(|why| anyhow::anyhow!("placing the {what}: {why}"))?;
        }
        let mut stdin = process.stdin.take().context("child stdin")?;
        let stdout = process.stdout.take().context("child stdout")?;
        let stderr_pipe = process.stderr.take().context("child stderr")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_task = tokio::spawn(keep_stderr(stderr_pipe, Arc::clone(&stderr)));
        let sent = async {
            stdin.write_all(protocol::line(job).as_bytes()).await?;
            stdin.flush().await
        };
        if let Err(error) = sent.await {
            // The child died before taking its job: what it said on stderr is the reason.
            let status = process.wait().await.ok();
            let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
            let stderr = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
            bail!(
                "cannot send the {what} its job ({error}); it exited ({}) with stderr:\n{stderr}",
                status.map(|s| s.to_string()).unwrap_or_default()
            );
        }
        let (tx, reports) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                let sent = match lines.next_line().await {
                    Ok(Some(line)) => tx.send(protocol::parse(&line)).await,
                    Ok(None) => break,
                    Err(e) => tx.send(Err(e.into())).await,
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            what,
            process,
            stdin,
            reports,
            stderr,
            stderr_task: Some(stderr_task),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// Sends the child a command after its job.
    pub async fn send(&mut self, command: &protocol::Command) -> anyhow::Result<()> {
        let line = protocol::line(command);
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The next report if one is already there.
    pub fn try_next(&mut self) -> anyhow::Result<Option<Report>> {
        match self.reports.try_recv() {
            Ok(Ok(report)) => Ok(Some(report)),
            Ok(Err(error)) => {
                Err(anyhow!(error).context(format!("{} spoke out of turn", self.what)))
            }
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => {
                bail!("{} stopped reporting (exited?)", self.what)
            }
        }
    }

    /// Whether the child has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.try_wait().ok().flatten()
    }

    /// The next report, waiting at most `timeout`; an error, with the child's stderr, if it
    /// exits first or says something outside the protocol.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Report> {
        match tokio::time::timeout(timeout, self.reports.recv()).await {
            Ok(Some(Ok(report))) => Ok(report),
            Ok(Some(Err(error))) => {
                Err(anyhow!(error).context(format!("{} spoke out of turn", self.what)))
            }
            Ok(None) => {
                let status = self.process.wait().await.ok();
                let stderr = self.stderr().await;
                bail!(
                    "{} exited ({}) before reporting; its stderr:\n{stderr}",
                    self.what,
                    status.map(|s| s.to_string()).unwrap_or_default()
                )
            }
            Err(_) => bail!("{} reported nothing for {timeout:?}", self.what),
        }
    }

    /// What the child wrote to stderr (the last part); waits briefly for the pipe to end, so a
    /// crash message is never cut off.
    pub async fn stderr(&mut self) -> String {
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits up to `timeout` for the child to exit on its own, then asks it to stop (SIGTERM,
    /// then SIGKILL); an error with its stderr if it failed.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let status = match tokio::time::timeout(timeout, self.process.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                self.terminate_gently().await;
                self.process.wait().await?
            }
        };
        if !status.success() {
            let stderr = self.stderr().await;
            bail!("{} {status}; its stderr:\n{stderr}", self.what);
        }
        Ok(())
    }

    async fn terminate_gently(&mut self) {
        if let Some(pid) = self
            .process
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(3), self.process.wait())
            .await
            .is_err()
        {
            let _ = self.process.kill().await;
        }
    }
}

/// The server under test, started and listening.
pub struct ServerChild {
    child: Child,
    addr: SocketAddr,
    settings: SettingValues,
    /// The processes that serve: the child, or the members of its fleet.
    pids: Vec<u32>,
}

impl ServerChild {
    /// Starts the server with `job` (in network namespace `netns`, when given) and waits for it
    /// to listen.
    pub async fn spawn(exe: &Path, job: Job, netns: Option<&str>) -> anyhow::Result<Self> {
        Self::spawn_named(exe, job, netns, "server".into()).await
    }

    /// As [`ServerChild::spawn`], naming the child `what` in errors.
    pub async fn spawn_named(
        exe: &Path,
        job: Job,
        netns: Option<&str>,
        what: String,
    ) -> anyhow::Result<Self> {
        Self::spawn_placed(exe, job, netns, what, &|_| Ok(())).await
    }

    /// As [`ServerChild::spawn_named`], handing the child's PID to `place` before its job, so
    /// that every process it starts (a fleet's members) is placed alike.
    pub async fn spawn_placed(
        exe: &Path,
        job: Job,
        netns: Option<&str>,
        what: String,
        place: &Place<'_>,
    ) -> anyhow::Result<Self> {
        let mut child = Child::spawn_placed(exe, &job, what, netns, place).await?;
        loop {
            match child.next(STARTUP).await? {
                Report::Listening {
                    addr,
                    settings,
                    pids,
                    ..
                } => {
                    let pids = if pids.is_empty() {
                        child.pid().into_iter().collect()
                    } else {
                        pids
                    };
                    return Ok(Self {
                        child,
                        addr,
                        settings,
                        pids,
                    });
                }
                Report::Credentials { .. } => continue,
                other => bail!("server reported {other:?} before listening"),
            }
        }
    }

    /// Where subscribers connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server settings the server reported running with.
    pub fn settings(&self) -> &SettingValues {
        &self.settings
    }

    /// The server's process id (of the fleet's coordinator, for a fleet).
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// The processes that serve (the fleet's members, for a fleet): what to sample for the
    /// server's CPU and memory.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// The underlying child (to watch for an early exit).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits until the server starts publishing; returns the schedule's origin (monotonic ns).
    pub async fn stream_started(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        loop {
            match self.child.next(timeout).await? {
                Report::Publishing { origin_ns } => return Ok(origin_ns),
                // A server waiting to be told counts its connections meanwhile.
                Report::Credentials { .. } | Report::Subscribers { .. } => continue,
                other => bail!("server reported {other:?} before publishing"),
            }
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would, and reaps it.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.process.kill().await?;
        Ok(())
    }

    /// Waits up to `timeout` for the server's stats (it reports them once the stream is
    /// delivered, or once told to stop), skipping other reports.
    pub async fn stats(&mut self, timeout: Duration) -> anyhow::Result<ServeStats> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Report::Stats(stats) = self.child.next(left).await? {
                return Ok(*stats);
            }
        }
    }

    /// Waits up to `timeout` for the server to finish on its own (it exits once every
    /// subscriber has the stream), then asks it to stop; returns its stats.
    pub async fn finish(mut self, timeout: Duration) -> anyhow::Result<ServeStats> {
        let stats = loop {
            match self.child.next(timeout).await {
                Ok(Report::Stats(stats)) => break Some(*stats),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        self.child.wait(Duration::from_secs(5)).await?;
        stats.ok_or_else(|| anyhow!("server exited without its stats"))
    }
}

/// A load worker, started; its subscribers are connecting.
pub struct LoadWorker {
    child: Child,
}

/// A load worker's subscribers, established.
#[derive(Clone, Copy, Debug)]
pub struct WorkerConnected {
    /// Subscribers established.
    pub subscribers: usize,
    /// The worker before its first subscriber.
    pub before: ProcessSample,
    /// The worker with its subscribers connected.
    pub connected: ProcessSample,
}

impl LoadWorker {
    /// Starts a worker with `job`.
    pub async fn spawn(exe: &Path, job: Job, index: usize) -> anyhow::Result<Self> {
        let child = Child::spawn(exe, &job, format!("load worker {index}"), None).await?;
        Ok(Self { child })
    }

    /// Waits until the worker's subscribers are established (or have given up).
    pub async fn connected(&mut self, timeout: Duration) -> anyhow::Result<WorkerConnected> {
        match self.child.next(timeout).await? {
            Report::Connected {
                subscribers,
                before,
                connected,
            } => Ok(WorkerConnected {
                subscribers,
                before,
                connected,
            }),
            other => bail!("load worker reported {other:?} before its subscribers connected"),
        }
    }

    /// Waits until every subscriber of the worker holds the whole stream (or has ended).
    pub async fn holding(&mut self, timeout: Duration) -> anyhow::Result<()> {
        match self.child.next(timeout).await? {
            Report::Holding => Ok(()),
            other => bail!("load worker reported {other:?} before its subscribers held the stream"),
        }
    }

    /// Lets the worker's subscribers close their connections.
    pub async fn release(&mut self) -> anyhow::Result<()> {
        self.child.send(&protocol::Command::Release).await
    }

    /// Waits for the worker's part and its exit.
    pub async fn part(mut self, timeout: Duration) -> anyhow::Result<LoadPart> {
        let part = match self.child.next(timeout).await? {
            Report::Part(part) => *part,
            other => bail!("load worker reported {other:?} instead of its part"),
        };
        self.child.wait(Duration::from_secs(10)).await?;
        Ok(part)
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
