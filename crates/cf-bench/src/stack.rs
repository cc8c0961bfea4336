//! A stack under measurement (PocketBase with the project's hooks, coolify-sim, cf-bridge) and the fleet
//! of records a run creates in it.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cf_bridge::webhook::WebhookSecret;
use serde_json::{Value, json};

use cf_testkit::sim::{SIM_TOKEN, SimProcess};
use cf_testkit::{BridgeProcess, TestPb, TestSettings, WEBHOOK_SECRET, free_port};

use super::client::{Bridge, Pb, Sim, http};
use super::procs::{self, Paths};

pub struct Stack {
    pub pb: Pb,
    pub sim: Sim,
    pub bridge: Bridge,
    pub secret: WebhookSecret,
    pub bridge_proc: BridgeProcess,
    pub pb_proc: TestPb,
    pub sim_proc: SimProcess,
    bridge_bin: std::path::PathBuf,
    settings: TestSettings,
}

impl Stack {
    /// The bridge's process id.
    pub fn bridge_pid(&self) -> u32 {
        self.bridge_proc.pid().unwrap_or(0)
    }

    /// PocketBase, the bridge and the simulator, in that order (for [`procs::Window`]).
    pub fn pids(&self) -> [Option<u32>; 3] {
        [self.pb_proc.pid(), self.bridge_proc.pid(), Some(self.sim_proc.pid())]
    }

    /// Size in bytes of the journal file and its write-ahead log.
    pub fn journal_bytes(&self) -> u64 {
        ["journal.db", "journal.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(self.settings.dir.join(f)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The bridge's configuration, as its loader reads it.
    pub fn settings(&self) -> cf_bridge::config::Settings {
        self.settings.settings()
    }

    /// Stops the bridge (SIGTERM) and starts it again on the same journal and port with the `defaults`
    /// keys unset (their defaults apply) and `extra` set.
    pub async fn restart_bridge(&mut self, defaults: &[&str], extra: &[(&str, &str)]) -> Result<()> {
        self.bridge_proc.terminate();
        let mut settings = self.settings.clone();
        for key in defaults {
            settings = settings.without(key);
        }
        self.settings = settings.with(extra);
        self.bridge_proc = BridgeProcess::try_start(&self.bridge_bin, &self.settings).await?;
        Ok(())
    }
}

/// PocketBase with the project's hooks posting to the bridge, a simulator with `sim_args`, and the bridge
/// (every setting at its production default but `bridge_extra`), each a process.
pub async fn start_stack(
    paths: &Paths,
    dir: &Path,
    sim_args: &[&str],
    bridge_extra: &[(&str, String)],
) -> Result<Stack> {
    start_stack_with(paths, dir, sim_args, bridge_extra, true).await
}

/// `CF_BRIDGE__*` variables of the bench's own environment, which every bridge it starts takes after the
/// bench's settings: to compare values of a setting with the same binaries. The run's notes name them.
pub fn settings_from_env() -> Vec<(&'static str, &'static str)> {
    static FROM_ENV: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    FROM_ENV
        .get_or_init(|| std::env::vars().filter(|(k, _)| k.starts_with("CF_BRIDGE__")).collect())
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Like [`start_stack`]; with `webhook` false the project's hooks deliver no webhook (no
/// `CF_BRIDGE_WEBHOOK_URL`), so the bridge sees changes by realtime (and resync) only.
pub async fn start_stack_with(
    paths: &Paths,
    dir: &Path,
    sim_args: &[&str],
    bridge_extra: &[(&str, String)],
    webhook: bool,
) -> Result<Stack> {
    std::fs::create_dir_all(dir)?;
    let secret: WebhookSecret = WEBHOOK_SECRET
        .parse()
        .context("the test webhook secret does not parse")?;
    let bridge_port = free_port();
    let sim_proc = SimProcess::start(
        &paths.bin_dir.join("coolify-sim"),
        SIM_TOKEN,
        sim_args,
        &dir.join("coolify-sim.log"),
    )?;
    let pb_env = [
        (
            "CF_BRIDGE_WEBHOOK_URL",
            format!("http://127.0.0.1:{bridge_port}{}", cf_bridge::http::ingest::PATH),
        ),
        ("CF_BRIDGE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_string()),
    ];
    let pb_env = if webhook { &pb_env[..] } else { &[] };
    let pb_proc =
        procs::start_pocketbase(paths, &dir.join("pb_data"), &paths.root.join("hooks/pb_hooks"), pb_env).await?;
    let extra: Vec<(&str, &str)> = bridge_extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let settings = TestSettings::minimal((&pb_proc).into(), &sim_proc.url, SIM_TOKEN, dir, bridge_port)
        .with(&[("CF_BRIDGE__LOG__LEVEL", "info")])
        .with(&extra)
        .with(&settings_from_env());
    let bin = paths.bin_dir.join("cf-bridge");
    let (synced, _, err) = cf_testkit::cli::run_with_env(&bin, &["templates", "sync"], settings.env());
    if !synced {
        bail!("cf-bridge templates sync failed: {err}");
    }
    let bridge_proc = BridgeProcess::try_start(&bin, &settings).await?;
    let client = http()?;
    let pb = Pb::login(&pb_proc.url, client.clone()).await?;
    Ok(Stack {
        pb,
        sim: Sim {
            url: sim_proc.url.clone(),
            http: client.clone(),
        },
        bridge: Bridge {
            url: bridge_proc.url.clone(),
            http: client,
        },
        secret,
        bridge_proc,
        pb_proc,
        sim_proc,
        bridge_bin: bin,
        settings,
    })
}

/// Creates `n` instances of base-llm spread over tenants of 50 (ids in order); `tag` keeps names unique.
pub async fn create_fleet(pb: &Pb, tag: &str, n: usize, desired: &str) -> Result<Vec<String>> {
    let templates = pb.field_by_id("bot_templates", "name = \"base-llm\"", "name").await?;
    let template = templates
        .keys()
        .next()
        .context("template base-llm is not in PocketBase (templates sync)")?
        .clone();
    let tenants: Vec<Value> = (0..n.div_ceil(50))
        .map(|t| json!({"name": format!("bench {tag} {t}"), "slug": format!("{tag}-t{t}"), "status": "active", "plan_tier": "business", "max_stacks": 100000}))
        .collect();
    let tenant_ids = pb.batch_create("tenants", &tenants).await?;
    let instances: Vec<Value> = (0..n)
        .map(|i| {
            json!({"tenant": tenant_ids[i / 50], "template": template, "name": format!("{tag}-{i}"),
                   "subdomain": format!("{tag}-i{i}"), "desired_state": desired, "config": {}})
        })
        .collect();
    pb.batch_create("bot_instances", &instances).await
}

/// Waits until every instance of the fleet has a Coolify service; returns id -> uuid.
pub async fn wait_provisioned(pb: &Pb, tag: &str, n: usize, limit: Duration) -> Result<HashMap<String, String>> {
    let filter = format!("subdomain ~ \"{tag}-i\" && coolify_service_id != \"\"");
    let start = Instant::now();
    loop {
        if pb.count("bot_instances", &filter).await? as usize >= n {
            return pb.field_by_id("bot_instances", &filter, "coolify_service_id").await;
        }
        if start.elapsed() > limit {
            bail!(
                "only {} of {n} instances provisioned after {limit:?}",
                pb.count("bot_instances", &filter).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
