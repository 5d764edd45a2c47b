//! A profile's server as a process of `serve`'s: its files written into a scratch directory
//! of its own, the program started on the row's address (inheriting `serve`'s CPUs), ready
//! once it accepts a connection there, and stopped (SIGTERM, then SIGKILL) when dropped. Its
//! processes (the program and every process it started, such as nginx's workers) are what
//! the server's CPU and memory are sampled from.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::profile::{Fill, Profile};

/// The server a profile describes, running.
pub struct Running {
    child: Child,
    dir: PathBuf,
    name: &'static str,
    publishes_only: bool,
    /// How late its publisher sent the events, where `serve` publishes into it over HTTP.
    lateness: super::publish::LatenessSlot,
}

/// How often readiness is tried.
const READY_POLL: Duration = Duration::from_millis(20);

/// How long a stopped server may take to exit before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(5);

impl Running {
    /// Starts `profile`'s server listening on `listen` and waits until it accepts connections.
    pub async fn start(profile: &'static Profile, listen: SocketAddr) -> io::Result<Self> {
        let program = find_program(profile)?;
        let dir = std::env::temp_dir().join(format!(
            "pushbench-{}-{}-{}",
            profile.name,
            std::process::id(),
            listen.port()
        ));
        let fill = Fill {
            listen,
            dir: &dir,
            topic: "",
        };
        write_files(profile, &dir, &fill)?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = command(&program)
            .args(profile.start.args.iter().map(|a| fill.fill(a)))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("starting {}: {e}", program.display()))
            })?;
        let mut running = Self {
            child,
            dir,
            name: &profile.name,
            publishes_only: matches!(profile.publish, crate::profile::Publish::Http(_)),
            lateness: Default::default(),
        };
        running
            .wait_ready(listen, Duration::from_secs(profile.start.ready_within_secs))
            .await?;
        Ok(running)
    }

    /// Waits until the server accepts a connection on `listen`; an error saying why (with
    /// the end of its log) if it exits first or is not ready in time.
    async fn wait_ready(&mut self, listen: SocketAddr, within: Duration) -> io::Result<()> {
        let dial = match listen.ip().is_unspecified() {
            true => SocketAddr::from((Ipv4Addr::LOCALHOST, listen.port())),
            false => listen,
        };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(self.failed(&format!("it exited ({status}) before it listened")));
            }
            if tokio::net::TcpStream::connect(dial).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(
                    self.failed(&format!("it did not listen on {listen} within {within:?}"))
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// An error about the server, with the last lines it logged.
    fn failed(&self, what: &str) -> io::Error {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::other(format!(
            "--server {}: {what}; its log ends: {}",
            self.name,
            match tail.is_empty() {
                true => "(nothing)".to_owned(),
                false => tail.join(" | "),
            }
        ))
    }

    /// Whether `serve` only publishes into this server (over HTTP), so that all of the
    /// server's work is in its own processes; otherwise the transport's own server works
    /// beside it in `serve` (a broker's publisher).
    pub fn publishes_only(&self) -> bool {
        self.publishes_only
    }

    /// Where its publisher's lateness is left (see [`super::publish`]).
    pub fn lateness_slot(&self) -> super::publish::LatenessSlot {
        Arc::clone(&self.lateness)
    }

    /// How late its publisher sent the events, once it has sent them all over HTTP.
    pub fn publisher_lateness(&self) -> Option<crate::metrics::latency::Lateness> {
        *self.lateness.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server's processes: the one started, then every process it started since.
    pub fn pids(&self) -> Vec<u32> {
        let root = self.child.id();
        let mut pids = vec![root];
        pids.extend(descendants(root));
        pids
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        use rustix::process::{kill_process, Pid, Signal};
        // SIGTERM lets the server stop its own workers; whatever has not exited in time is
        // killed.
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_WITHIN;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(READY_POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command running `program`, which is sent SIGTERM should `serve` die without stopping it
/// (killed after its stop deadline): util-linux's `setpriv --pdeathsig` sets the parent-death
/// signal and execs the program in its place, so the server never outlives its `serve`. Where
/// there is no `setpriv`, the program runs as it is and only [`Running`]'s drop stops it.
fn command(program: &Path) -> Command {
    match on_path("setpriv") {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "TERM", "--"]).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Where `name` is on `PATH`, if it is.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether the profile's program is installed here.
pub fn installed(profile: &Profile) -> bool {
    find_program(profile).is_ok()
}

/// The first of the profile's programs that is there, or an error naming what installs it.
fn find_program(profile: &Profile) -> io::Result<PathBuf> {
    let found = profile.start.program.iter().find_map(|program| {
        let candidate = Path::new(program);
        match program.contains('/') {
            true => candidate.is_file().then(|| candidate.to_owned()),
            false => on_path(program),
        }
    });
    let missing = profile
        .start
        .needs
        .iter()
        .find(|file| !Path::new(file).exists());
    let found = found.filter(|_| missing.is_none());
    found.ok_or_else(|| {
        let what = match missing {
            Some(file) => format!("{file} is missing"),
            None => format!("none of {} is installed", profile.start.program.join(", ")),
        };
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "--server {}: {what}{}",
                profile.name,
                profile
                    .install
                    .as_ref()
                    .map(|script| format!(" ({script} installs it)"))
                    .unwrap_or_default()
            ),
        )
    })
}

/// Writes the profile's files into `dir` (made afresh, this user's only).
fn write_files(profile: &Profile, dir: &Path, fill: &Fill<'_>) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    for (name, template) in &profile.start.files {
        if name.contains('/') || name.starts_with('.') {
            return Err(io::Error::other(format!(
                "--server {}: the file name {name:?} must be a plain name in its directory",
                profile.name
            )));
        }
        std::fs::write(dir.join(name), fill.fill(template))?;
    }
    Ok(())
}

/// Every process descended from `root`, from each process's parent in `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`: the command may hold spaces and parentheses, so the
            // fields are read after its last `)`.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        next += 1;
    }
    found.split_off(1)
}

#[cfg(test)]
mod tests {
    /// A process's descendants are found through their parents: a shell's child sleeping.
    #[test]
    fn descendants_are_found() {
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5; wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let found = super::descendants(shell.id());
        let _ = shell.kill();
        for pid in &found {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(*pid as i32).unwrap(),
                rustix::process::Signal::KILL,
            );
        }
        let _ = shell.wait();
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
