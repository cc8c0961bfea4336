//! The processes a benchmark run drives: PocketBase (project schema and hooks), coolify-sim and cf-bridge,
//! each on a free 127.0.0.1 port, killed when dropped. Also /proc readings for the bridge.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const PB_EMAIL: &str = "bench@bench.local";
pub const PB_PASSWORD: &str = "bench-superuser-password";
pub const SIM_TOKEN: &str = "1|bench-coolify-token";
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
pub const SECRETS_KEY: &str = "bench-secrets-key-0123456789abcdef0123456789";

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_file(path: &Path) -> Result<(Stdio, Stdio)> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open log {}", path.display()))?;
    Ok((Stdio::from(f.try_clone()?), Stdio::from(f)))
}

async fn wait_http(url: &str, what: &str, proc: &mut Proc, log: &Path) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).timeout(Duration::from_secs(1)).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(status) = proc.exited() {
            bail!("{what} exited with {status} during start-up; see {}", log.display());
        }
        if Instant::now() > deadline {
            bail!("{what} not healthy after 60 s; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the binaries and project files are.
#[derive(Debug, Clone)]
pub struct Paths {
    pub pocketbase: PathBuf,
    pub bin_dir: PathBuf,
    pub root: PathBuf,
}

impl Paths {
    /// `bin_dir` holds cf-bridge and coolify-sim (the directory of the running cf-bench).
    pub fn discover(pocketbase: Option<PathBuf>) -> Result<Paths> {
        // The workspace root: this crate lives in crates/cf-bench.
        let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let exe = std::env::current_exe().context("locate cf-bench")?;
        let bin_dir = exe.parent().context("cf-bench has no parent directory")?.to_path_buf();
        let pocketbase = match pocketbase {
            Some(p) => p,
            None => {
                let out = Command::new(root.join("scripts/install-pocketbase.sh"))
                    .output()
                    .context("run scripts/install-pocketbase.sh")?;
                if !out.status.success() {
                    bail!("install-pocketbase.sh failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                PathBuf::from(
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim(),
                )
            }
        };
        Ok(Paths {
            pocketbase,
            bin_dir,
            root,
        })
    }
}

pub struct PbProc {
    pub url: String,
    pub proc: Proc,
}

/// Upserts the superuser, then serves `data_dir` with the project's migrations and `hooks_dir`.
pub async fn start_pocketbase(
    paths: &Paths,
    data_dir: &Path,
    hooks_dir: &Path,
    env: &[(&str, String)],
) -> Result<PbProc> {
    std::fs::create_dir_all(data_dir)?;
    let migrations = paths.root.join("hooks/pb_migrations");
    let out = Command::new(&paths.pocketbase)
        .args(["superuser", "upsert", PB_EMAIL, PB_PASSWORD, "--dir"])
        .arg(data_dir)
        .arg("--migrationsDir")
        .arg(&migrations)
        .output()
        .context("run pocketbase superuser upsert")?;
    if !out.status.success() {
        bail!(
            "pocketbase superuser upsert failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let port = free_port()?;
    let log = data_dir.join("pocketbase.log");
    let (out, err) = log_file(&log)?;
    let child = Command::new(&paths.pocketbase)
        .arg("serve")
        .arg("--http")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--dir")
        .arg(data_dir)
        .arg("--migrationsDir")
        .arg(&migrations)
        .arg("--hooksDir")
        .arg(hooks_dir)
        .args(["--hooksWatch=false", "--automigrate=false"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("spawn pocketbase serve")?;
    let mut proc = Proc { child };
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{url}/api/health"), "PocketBase", &mut proc, &log).await?;
    Ok(PbProc { url, proc })
}

pub struct SimProc {
    pub url: String,
    pub proc: Proc,
}

pub fn start_sim(paths: &Paths, args: &[&str], log: &Path) -> Result<SimProc> {
    let (_, err) = log_file(log)?;
    let mut child = Command::new(paths.bin_dir.join("coolify-sim"))
        .args(["--bind", "127.0.0.1:0", "--token", SIM_TOKEN])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawn {}", paths.bin_dir.join("coolify-sim").display()))?;
    let stdout = child.stdout.take().context("coolify-sim stdout")?;
    let proc = Proc { child };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("coolify-sim listening on ")
        .with_context(|| format!("unexpected coolify-sim banner {line:?}"))?
        .to_string();
    Ok(SimProc { url, proc })
}

pub struct BridgeProc {
    pub url: String,
    pub log: PathBuf,
    pub proc: Proc,
}

/// The bridge's settings for a run; `extra` overrides or adds `CF_BRIDGE__*` variables.
pub fn bridge_env(
    dir: &Path,
    port: u16,
    pb_url: &str,
    sim_url: &str,
    webhook_secret: &str,
    templates: &Path,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("CF_BRIDGE__POCKETBASE__URL", pb_url.to_string()),
        ("CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL", PB_EMAIL.to_string()),
        ("CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD", PB_PASSWORD.to_string()),
        ("CF_BRIDGE__COOLIFY__URL", sim_url.to_string()),
        ("CF_BRIDGE__COOLIFY__TOKEN", SIM_TOKEN.to_string()),
        ("CF_BRIDGE__WEBHOOK__SECRET", webhook_secret.to_string()),
        ("CF_BRIDGE__ADMIN__TOKEN", ADMIN_TOKEN.to_string()),
        ("CF_BRIDGE__ADMIN__BIND", format!("127.0.0.1:{port}")),
        ("CF_BRIDGE__JOURNAL__PATH", dir.join("journal.db").display().to_string()),
        ("CF_BRIDGE__DOMAINS__BASE_DOMAIN", "bots.bench.local".to_string()),
        ("CF_BRIDGE__ROUTER__BASE_URL", "https://router.bench.local".to_string()),
        ("CF_BRIDGE__LOG__FORMAT", "json".to_string()),
        ("CF_BRIDGE__LOG__LEVEL", "info".to_string()),
        ("CF_BRIDGE__SECRETS__KEY", SECRETS_KEY.to_string()),
        (
            "CF_BRIDGE__SECRETS__STORE_PATH",
            dir.join("secrets.bin").display().to_string(),
        ),
        ("CF_BRIDGE__RECONCILE__TEMPLATES_DIR", templates.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.clone()));
    }
    env
}

/// Syncs the templates into PocketBase, then serves.
pub async fn start_bridge(paths: &Paths, dir: &Path, port: u16, env: &[(String, String)]) -> Result<BridgeProc> {
    let config = dir.join("cf-bridge.toml");
    std::fs::write(&config, "# bench: settings come from CF_BRIDGE__* variables\n")?;
    let bin = paths.bin_dir.join("cf-bridge");
    let log = dir.join("bridge.log");
    let base = |c: &mut Command| {
        c.arg("--config")
            .arg(&config)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)));
    };
    let mut sync = Command::new(&bin);
    base(&mut sync);
    let out = sync
        .args(["templates", "sync"])
        .output()
        .with_context(|| format!("run {} templates sync", bin.display()))?;
    if !out.status.success() {
        bail!(
            "cf-bridge templates sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_, err) = log_file(&log)?;
    let mut serve = Command::new(&bin);
    base(&mut serve);
    let child = serve
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .context("spawn cf-bridge serve")?;
    let mut proc = Proc { child };
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{url}/healthz"), "cf-bridge", &mut proc, &log).await?;
    Ok(BridgeProc { url, log, proc })
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
