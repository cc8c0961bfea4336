//! Where the binaries are, the PocketBase a run drives (through cf-testkit's launcher) and /proc readings
//! of the processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use cf_testkit::{PbOptions, TestPb};

pub const PB_EMAIL: &str = "bench@bench.local";
pub const PB_PASSWORD: &str = "bench-superuser-password";

/// The `--hooksPool` of the deployment example (docs/DEPLOY.md): at least the writes PocketBase takes at
/// once (the floods' 32 writers), since a hook call that finds every runtime busy builds one of its own.
pub const DEPLOYED_HOOKS_POOL: u32 = 64;
/// PocketBase's own `--hooksPool` when none is given.
pub const POCKETBASE_DEFAULT_HOOKS_POOL: u32 = 15;

/// Where the binaries and project files are, and how PocketBase is started.
#[derive(Debug, Clone)]
pub struct Paths {
    pub pocketbase: PathBuf,
    pub bin_dir: PathBuf,
    pub root: PathBuf,
    pub hooks_pool: u32,
}

impl Paths {
    /// `bin_dir` holds cf-bridge and coolify-sim (the directory of the running cf-bench); PocketBase is
    /// `pocketbase`, else the one the test kit finds.
    pub fn discover(pocketbase: Option<PathBuf>, hooks_pool: u32) -> Result<Paths> {
        let exe = std::env::current_exe().context("locate cf-bench")?;
        let bin_dir = exe.parent().context("cf-bench has no parent directory")?.to_path_buf();
        Ok(Paths {
            pocketbase: pocketbase.unwrap_or_else(|| cf_testkit::pocketbase::pocketbase_bin().to_path_buf()),
            bin_dir,
            root: cf_testkit::repo_root(),
            hooks_pool,
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
        hooks_pool: Some(paths.hooks_pool),
        ..PbOptions::default()
    })
    .await
}

/// Resident set size in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Peak resident set size in KiB over the process's life so far (VmHWM).
pub fn hwm_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The machine's cores as the kernel schedules them.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// (busy, total) jiffies of all CPUs since boot, from /proc/stat (idle and iowait are not busy).
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg shows them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A phase's CPU: each process's CPU seconds, the machine's, and whether the machine was saturated.
pub struct Window {
    pids: Vec<Option<u32>>,
    cpu0: Vec<f64>,
    machine0: Option<(u64, u64)>,
    start: std::time::Instant,
}

/// What a [`Window`] measured.
#[derive(Debug, Clone)]
pub struct Usage {
    pub wall_secs: f64,
    /// CPU seconds per process, in the order of the pids given to [`Window::open`].
    pub cpu_secs: Vec<f64>,
    /// Share of all cores busy (any process), 0..1.
    pub machine_busy: f64,
    pub loadavg_1m: f64,
    /// Processes' CPU >= 90 % of cores x wall, the machine >= 90 % busy, or the load above the cores.
    pub saturated: bool,
}

impl Window {
    /// Starts measuring `pids` (None: a process that is not running; counted as 0). The bench itself is
    /// added by the caller (`std::process::id()`) when it matters.
    pub fn open(pids: &[Option<u32>]) -> Window {
        Window {
            pids: pids.to_vec(),
            cpu0: pids.iter().map(|p| p.and_then(cpu_secs).unwrap_or(0.0)).collect(),
            machine0: machine_jiffies(),
            start: std::time::Instant::now(),
        }
    }

    pub fn close(&self) -> Usage {
        let wall_secs = self.start.elapsed().as_secs_f64();
        let cpu_secs: Vec<f64> = self
            .pids
            .iter()
            .zip(&self.cpu0)
            .map(|(p, before)| p.and_then(cpu_secs).map_or(0.0, |after| after - before))
            .collect();
        let machine_busy = match (self.machine0, machine_jiffies()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => f64::NAN,
        };
        let loadavg_1m = loadavg_1m().unwrap_or(f64::NAN);
        let cores = cores() as f64;
        let saturated =
            cpu_secs.iter().sum::<f64>() >= 0.9 * cores * wall_secs || machine_busy >= 0.9 || loadavg_1m > cores;
        Usage {
            wall_secs,
            cpu_secs,
            machine_busy,
            loadavg_1m,
            saturated,
        }
    }
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

/// The phases during which a process's peak (VmHWM) rose, read after each: the resources row gives the
/// peak, this says what set it (a phase's figures include the bench's own reads at its end, such as the
/// admin API's event pages of the latency phases).
#[derive(Debug)]
pub struct PeakSteps {
    pid: u32,
    steps: Vec<(String, u64)>,
}

impl PeakSteps {
    pub fn new(pid: u32) -> Self {
        PeakSteps { pid, steps: Vec::new() }
    }

    /// Reads the peak after `phase`, which is named in the note when the peak rose during it.
    pub fn after(&mut self, phase: impl Into<String>) {
        let last = self.steps.last().map_or(0, |&(_, kib)| kib);
        if let Some(kib) = hwm_kib(self.pid).filter(|&k| k > last) {
            self.steps.push((phase.into(), kib));
        }
    }

    /// "cf-bridge's peak resident memory rose during: setup to 21.5 MiB, ...".
    pub fn note(&self, process: &str) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(phase, kib)| format!("{phase} to {:.1} MiB", *kib as f64 / 1024.0))
            .collect();
        format!(
            "{process}'s peak resident memory (VmHWM, read after each phase) rose during: {}",
            steps.join(", ")
        )
    }
}
