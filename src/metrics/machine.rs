//! The machine a run was measured on, recorded with every result so numbers are never read
//! apart from the hardware and software that produced them.

use serde::{Deserialize, Serialize};

/// Where the numbers come from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Machine {
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs available to the run.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// `rustc --version` at run time, if rustc is on the PATH.
    pub rustc: String,
    /// Git revision of the working tree, with `-dirty` when it has uncommitted changes.
    pub git_revision: String,
    /// Host name.
    pub hostname: String,
}

impl Machine {
    /// Describes this machine.
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
            .map(|(_, name)| name.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let git_revision = match command("git", &["rev-parse", "--short=12", "HEAD"]) {
            rev if rev.is_empty() => "unknown".into(),
            rev if !command("git", &["status", "--porcelain", "--untracked-files=no"])
                .is_empty() =>
            {
                format!("{rev}-dirty")
            }
            rev => rev,
        };
        Self {
            cpu_model,
            cores: super::process::available_cpus().len(),
            kernel: read("/proc/sys/kernel/osrelease"),
            rustc: command("rustc", &["--version"]),
            git_revision,
            hostname: read("/proc/sys/kernel/hostname"),
        }
    }
}

/// A command's trimmed standard output, or empty if it could not run.
fn command(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
