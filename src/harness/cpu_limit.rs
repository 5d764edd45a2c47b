//! A CPU quota on the server under test (`--server-cpu-limit CORES`), as a Kubernetes CPU limit
//! puts one on a container: a cgroup of its own for every process that serves (a `serve
//! --processes` fleet's members inherit it from the server child, which joins before it is
//! handed its job; an outside server's processes are moved in by PID), with the CFS quota at
//! the cores asked for. cgroup v1's `cpu` controller (`cpu.cfs_quota_us`) or v2's `cpu.max`,
//! whichever the machine mounts. Limited, a server runs out of CPU before the load does on a
//! 2-CPU machine, so full-rate rows and `--find-max` find the server's knee, not the load's;
//! capacity is then quoted per core of the limit.

use std::path::{Path, PathBuf};

use crate::settings::{Setting, Side};

/// The CPU quota on the server, in cores.
pub static SERVER_CPU_LIMIT: Setting<f64> = Setting {
    name: "server-cpu-limit",
    help: "A CPU quota on every process of the server under test, in cores (0.5: half a core), \
           as a Kubernetes CPU limit: a cgroup (v1 cpu.cfs_quota_us or v2 cpu.max; needs \
           root); refused where no cgroup can be written (0: none)",
    side: Side::Harness,
    default: 0.0,
    min: 0.0,
};

/// Where cgroup file systems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The scheduling period the quota is a share of, us (the kernel's default).
const PERIOD_US: u64 = 100_000;

/// Which interface the quota is written through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    /// `cpu.cfs_period_us` and `cpu.cfs_quota_us` under the `cpu` controller's mount.
    V1,
    /// `cpu.max` in the unified hierarchy.
    V2,
}

/// A cgroup limiting its processes to some cores, removed when dropped.
#[derive(Debug)]
pub struct CpuLimit {
    dir: PathBuf,
    cores: f64,
}

impl CpuLimit {
    /// The limit a row's settings ask for, under the machine's cgroup mount; `None` without
    /// one; an error with the reason when no cgroup can be made.
    pub fn for_row(settings: &crate::settings::SettingValues) -> Result<Option<Self>, String> {
        let cores = SERVER_CPU_LIMIT.read(settings);
        if cores <= 0.0 {
            return Ok(None);
        }
        let name = format!(
            "pushbench-{}-{}",
            std::process::id(),
            crate::clock::now_ns()
        );
        Self::create(Path::new(CGROUP_ROOT), &name, cores).map(Some)
    }

    /// A new cgroup `name` under `root` (laid out as cgroupfs: v1 with a `cpu` controller
    /// directory, or v2 with `cgroup.controllers`) whose processes may use `cores` CPUs.
    pub fn create(root: &Path, name: &str, cores: f64) -> Result<Self, String> {
        let refused = |why: String| {
            format!(
                "--{} {cores}: {why} (a CPU limit needs root and a writable cgroup v1 cpu \
                 controller or cgroup v2 with cpu in cgroup.subtree_control)",
                SERVER_CPU_LIMIT.name
            )
        };
        if !(cores.is_finite() && cores > 0.0) {
            return Err(refused("not a positive number of cores".into()));
        }
        let (version, parent) = detect(root)
            .ok_or_else(|| refused(format!("{} has no cgroup cpu controller", root.display())))?;
        if version == Version::V2 {
            // The controller must be handed down to children before one can be limited.
            write(&parent.join("cgroup.subtree_control"), "+cpu").map_err(refused)?;
        }
        let dir = parent.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| refused(format!("cannot make {}: {e}", dir.display())))?;
        let limit = Self { dir, cores };
        let quota = (cores * PERIOD_US as f64).round() as u64;
        let written = match version {
            Version::V1 => write(&limit.dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())
                .and_then(|()| write(&limit.dir.join("cpu.cfs_quota_us"), &quota.to_string())),
            Version::V2 => write(&limit.dir.join("cpu.max"), &format!("{quota} {PERIOD_US}")),
        };
        written.map_err(refused)?;
        Ok(limit)
    }

    /// Moves process `pid` (and the threads and children it makes from now on) into the
    /// cgroup.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// The cores the limit allows.
    pub fn cores(&self) -> f64 {
        self.cores
    }

    /// Whether `pid` is in the cgroup now.
    pub fn holds(&self, pid: u32) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .is_ok_and(|procs| procs.lines().any(|line| line.trim() == pid.to_string()))
    }
}

impl Drop for CpuLimit {
    fn drop(&mut self) {
        // Its processes have exited by now (a cgroup with processes cannot be removed; the
        // kernel then keeps it, empty, which is harmless).
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Which cgroup interface `root` offers, and the directory new cgroups go in.
fn detect(root: &Path) -> Option<(Version, PathBuf)> {
    let v1 = root.join("cpu");
    if v1.join("cpu.cfs_quota_us").exists() {
        return Some((Version::V1, v1));
    }
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).ok()?;
    controllers
        .split_whitespace()
        .any(|c| c == "cpu")
        .then(|| (Version::V2, root.to_owned()))
}

/// Writes `text` into a cgroup file, saying which on failure.
fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pushbench-cgroup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Under a directory laid out as cgroup v2, the limit hands the cpu controller down, writes
    /// `cpu.max` as quota and period, and adds a process to `cgroup.procs`.
    #[test]
    fn v2_writes_cpu_max() {
        let root = scratch("v2");
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        let limit = CpuLimit::create(&root, "row", 1.5).unwrap();
        let dir = root.join("row");
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "150000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
            "+cpu"
        );
        limit.add(4242).unwrap();
        assert!(limit.holds(4242));
        assert_eq!(limit.cores(), 1.5);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Under a directory laid out as cgroup v1, the quota is the CFS quota over its period.
    #[test]
    fn v1_writes_the_cfs_quota() {
        let root = scratch("v1");
        std::fs::create_dir_all(root.join("cpu")).unwrap();
        std::fs::write(root.join("cpu/cpu.cfs_quota_us"), "-1").unwrap();
        let _limit = CpuLimit::create(&root, "row", 0.5).unwrap();
        let dir = root.join("cpu/row");
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.cfs_period_us")).unwrap(),
            "100000"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Where there is no cpu controller, or a bad number of cores, the limit is refused with
    /// the reason.
    #[test]
    fn refused_where_no_cgroup_can_be_written() {
        let root = scratch("none");
        std::fs::write(root.join("cgroup.controllers"), "memory pids\n").unwrap();
        let why = CpuLimit::create(&root, "row", 1.0).unwrap_err();
        assert!(why.contains("has no cgroup cpu controller"), "{why}");
        assert!(why.contains("--server-cpu-limit 1"), "{why}");
        let why = CpuLimit::create(&root, "row", f64::NAN).unwrap_err();
        assert!(why.contains("not a positive number"), "{why}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
