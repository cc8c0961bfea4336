//! The one settings builder: a bridge's configuration for a test, as `CF_BRIDGE__*` variables (what a
//! bridge process gets) and as the `Settings` they load to (what an in-process bridge gets), so both
//! kinds of bridge run with the same values through the same loader.

use std::path::{Path, PathBuf};

use cf_bridge::config::{self, Settings};

use crate::{ADMIN_TOKEN, BASE_DOMAIN, ROUTER_URL, SECRETS_KEY, WEBHOOK_SECRET, repo_root};

#[derive(Debug, Clone)]
pub struct TestSettings {
    env: Vec<(String, String)>,
    /// Where the journal and the secret store live.
    pub dir: PathBuf,
    pub port: u16,
}

/// Where a bridge finds PocketBase.
#[derive(Debug, Clone, Copy)]
pub struct PbAccess<'a> {
    pub url: &'a str,
    pub email: &'a str,
    pub password: &'a str,
}

impl<'a> From<&'a crate::TestPb> for PbAccess<'a> {
    fn from(pb: &'a crate::TestPb) -> Self {
        PbAccess {
            url: &pb.url,
            email: &pb.email,
            password: &pb.password,
        }
    }
}

impl TestSettings {
    /// A bridge on `port` with its files in `dir`, talking to `pb` and the simulator at `sim_url`:
    /// quick retries, a fast health poll, a budget that never holds a test back, JSON logs with the
    /// bridge at debug level.
    pub fn new(pb: PbAccess<'_>, sim_url: &str, sim_token: &str, dir: &Path, port: u16) -> Self {
        Self::minimal(pb, sim_url, sim_token, dir, port).with(&[
            ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "30"),
            ("CF_BRIDGE__COOLIFY__REQUESTS_PER_MINUTE", "6000"),
            ("CF_BRIDGE__COOLIFY__REQUEST_TIMEOUT_SECS", "5"),
            ("CF_BRIDGE__LOG__LEVEL", "info,cf_bridge=debug"),
            ("CF_BRIDGE__QUEUE__BASE_BACKOFF_MS", "200"),
            ("CF_BRIDGE__QUEUE__MAX_BACKOFF_SECS", "2"),
            ("CF_BRIDGE__RECONCILE__RUNNING_TIMEOUT_SECS", "20"),
            ("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "1"),
            // A deleted record's service goes at once, as tests of other things expect; the retention tests
            // set a retention of their own.
            ("CF_BRIDGE__LIFECYCLE__RETENTION_SECS", "0"),
            ("CF_BRIDGE__LIFECYCLE__RETENTION_SWEEP_SECS", "1"),
        ])
    }

    /// Only what has no default (and the paths), every other key at its production default: what the
    /// benchmark measures.
    pub fn minimal(pb: PbAccess<'_>, sim_url: &str, sim_token: &str, dir: &Path, port: u16) -> Self {
        let env: Vec<(String, String)> = [
            ("CF_BRIDGE__POCKETBASE__URL", pb.url.to_string()),
            ("CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL", pb.email.to_string()),
            ("CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD", pb.password.to_string()),
            ("CF_BRIDGE__COOLIFY__URL", sim_url.to_string()),
            ("CF_BRIDGE__COOLIFY__TOKEN", sim_token.to_string()),
            ("CF_BRIDGE__WEBHOOK__SECRET", WEBHOOK_SECRET.to_string()),
            ("CF_BRIDGE__ADMIN__TOKEN", ADMIN_TOKEN.to_string()),
            ("CF_BRIDGE__ADMIN__BIND", format!("127.0.0.1:{port}")),
            ("CF_BRIDGE__JOURNAL__PATH", dir.join("journal.db").display().to_string()),
            ("CF_BRIDGE__DOMAINS__BASE_DOMAIN", BASE_DOMAIN.to_string()),
            ("CF_BRIDGE__ROUTER__BASE_URL", ROUTER_URL.to_string()),
            ("CF_BRIDGE__LOG__FORMAT", "json".to_string()),
            ("CF_BRIDGE__SECRETS__KEY", SECRETS_KEY.to_string()),
            (
                "CF_BRIDGE__SECRETS__STORE_PATH",
                dir.join("secrets.bin").display().to_string(),
            ),
            (
                "CF_BRIDGE__RECONCILE__TEMPLATES_DIR",
                repo_root().join("templates").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        TestSettings {
            env,
            dir: dir.to_path_buf(),
            port,
        }
    }

    /// Overrides or adds `CF_BRIDGE__*` variables.
    pub fn with(mut self, overrides: &[(&str, &str)]) -> Self {
        for (k, v) in overrides {
            self.env.retain(|(ek, _)| ek != k);
            self.env.push((k.to_string(), v.to_string()));
        }
        self
    }

    /// Leaves a variable unset (its default applies).
    pub fn without(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// The variables, for a bridge process or the CLI.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// What the variables load to (through the bridge's own loader).
    pub fn settings(&self) -> Settings {
        match config::load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &self.env) {
            Ok(s) => s,
            Err(e) => panic!("test settings do not load: {e}"),
        }
    }

    /// The same configuration as a TOML file (for the CLI, which talks to the bridge on `port`).
    pub fn toml(&self) -> String {
        let mut sections: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (k, v) in &self.env {
            let Some(rest) = k.strip_prefix("CF_BRIDGE__") else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            let value = serde_json::Value::String(v.clone()).to_string();
            let value = match v.parse::<f64>() {
                Ok(_) => v.clone(),
                Err(_) => value,
            };
            sections
                .entry(section.to_ascii_lowercase())
                .or_default()
                .push(format!("{} = {value}", key.to_ascii_lowercase()));
        }
        sections
            .into_iter()
            .map(|(s, lines)| format!("[{s}]\n{}\n", lines.join("\n")))
            .collect()
    }
}
