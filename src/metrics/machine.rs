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
    /// The CPU's family, model and stepping numbers from /proc/cpuinfo (`6/207/2`), or
    /// `unknown`: two runs compare as absolutes only on the same.
    #[serde(default = "unknown")]
    pub cpu_id: String,
    /// The CPU frequency governor (`performance`, `powersave`), or `unknown` where the machine
    /// has no cpufreq (a VM): a governor that scales the clock moves every figure.
    #[serde(default = "unknown")]
    pub governor: String,
}

fn unknown() -> String {
    "unknown".into()
}

/// The first value of a `/proc/cpuinfo` field.
fn cpuinfo_field<'a>(cpuinfo: &'a str, field: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == field).then(|| value.trim())
    })
}

impl Machine {
    /// Describes this machine.
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo_field(&cpuinfo, "model name")
            .map(str::to_owned)
            .unwrap_or_else(unknown);
        let cpu_id = match ["cpu family", "model", "stepping"].map(|f| cpuinfo_field(&cpuinfo, f)) {
            [Some(family), Some(model), Some(stepping)] => format!("{family}/{model}/{stepping}"),
            _ => unknown(),
        };
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
            cpu_id,
            governor: Some(read(
                "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
            ))
            .filter(|g| !g.is_empty())
            .unwrap_or_else(unknown),
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
