//! Where the binaries are, the PocketBase a run drives (through cf-testkit's launcher) and /proc readings
//! of the processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use cf_testkit::{PbOptions, TestPb};

pub const PB_EMAIL: &str = "bench@bench.local";
pub const PB_PASSWORD: &str = "bench-superuser-password";

/// Where the binaries and project files are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub pocketbase: PathBuf,
    pub bin_dir: PathBuf,
    pub root: PathBuf,
}

impl Paths {
    /// `bin_dir` holds cf-bridge and coolify-sim (the directory of the running cf-bench); PocketBase is
    /// `pocketbase`, else the one the test kit finds.
    pub fn discover(pocketbase: Option<PathBuf>) -> Result<Paths> {
        let exe = std::env::current_exe().context("locate cf-bench")?;
        let bin_dir = exe.parent().context("cf-bench has no parent directory")?.to_path_buf();
        Ok(Paths {
            pocketbase: pocketbase.unwrap_or_else(|| cf_testkit::pocketbase::pocketbase_bin().to_path_buf()),
            bin_dir,
            root: cf_testkit::repo_root(),
        })
    }
}

/// PocketBase (the project's schema) serving `data_dir` with `hooks_dir` and `env` for the hooks.
pub async fn start_pocketbase(
    paths: &Paths,
    data_dir: &Path,
    hooks_dir: &Path,
    env: &[(&str, String)],
) -> Result<TestPb> {
    TestPb::try_start(PbOptions {
        env: env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        hooks: Some(hooks_dir.to_path_buf()),
        data_dir: Some(data_dir.to_path_buf()),
        superuser: Some((PB_EMAIL.to_string(), PB_PASSWORD.to_string())),
        binary: Some(paths.pocketbase.clone()),
        ..PbOptions::default()
    })
    .await
}

/// Resident set size in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// User + system CPU seconds used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
