//! A whole stack for end-to-end tests of templates, quotas and secrets: a real PocketBase (schema and
//! hooks), coolify-sim and the cf-bridge binary, with the shipped templates published to `bot_templates`
//! by `cf-bridge templates sync`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::bridge::{self, BridgeProcess};
use super::pocketbase::TestPb;
use super::sim::TestSim;

pub const COLLECTIONS: [&str; 4] = ["tenants", "bot_templates", "bot_instances", "deploy_logs"];

pub struct Stack {
    pub pb: TestPb,
    pub sim: TestSim,
    pub bridge: BridgeProcess,
    /// Template name -> `bot_templates` record id.
    pub templates: BTreeMap<String, String>,
}

/// The environment a `cf-bridge` CLI command needs to load a valid configuration; `pb` is (url, superuser
/// email, password).
pub fn cli_env(pb: (&str, &str, &str), templates_dir: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("CF_BRIDGE__POCKETBASE__URL", pb.0.to_string()),
        ("CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL", pb.1.to_string()),
        ("CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD", pb.2.to_string()),
        ("CF_BRIDGE__COOLIFY__URL", "http://127.0.0.1:9".to_string()),
        ("CF_BRIDGE__COOLIFY__TOKEN", "1|unused-by-this-command".to_string()),
        ("CF_BRIDGE__WEBHOOK__SECRET", bridge::WEBHOOK_SECRET.to_string()),
        ("CF_BRIDGE__ADMIN__TOKEN", bridge::ADMIN_TOKEN.to_string()),
        ("CF_BRIDGE__DOMAINS__BASE_DOMAIN", bridge::BASE_DOMAIN.to_string()),
        ("CF_BRIDGE__ROUTER__BASE_URL", "https://router.test.example".to_string()),
        ("CF_BRIDGE__SECRETS__KEY", bridge::SECRETS_KEY.to_string()),
        (
            "CF_BRIDGE__RECONCILE__TEMPLATES_DIR",
            templates_dir.display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// Runs `cf-bridge --config <empty file> ARGS` with `env` only; returns (success, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cf-bridge.toml");
    std::fs::write(&config, "# tests: settings come from CF_BRIDGE__* variables\n").expect("config file");
    let out = Command::new(env!("CARGO_BIN_EXE_cf-bridge"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run cf-bridge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Stack {
    pub async fn start() -> Stack {
        let pb = TestPb::start().await;
        let sim = TestSim::start(&[
            "--rate-limit",
            "100000",
            "--start-delay-ms",
            "100",
            "--running-delay-ms",
            "100",
            "--delete-delay-ms",
            "100",
        ]);
        let dir = bridge::repo_root().join("templates");
        let (ok, out, err) = run_cli(
            &["templates", "sync"],
            &cli_env((&pb.url, &pb.email, &pb.password), &dir, &[]),
        );
        assert!(ok, "templates sync failed:\n{out}\n{err}");
        let templates = pb
            .superuser_request("GET", "/api/collections/bot_templates/records?perPage=100", None)
            .await["items"]
            .as_array()
            .expect("template list")
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap_or_default().to_string(),
                    t["id"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let bridge = BridgeProcess::start(&pb.url, &pb.email, &pb.password, &sim.url, &sim.token, &[]).await;
        Stack {
            pb,
            sim,
            bridge,
            templates,
        }
    }

    pub async fn tenant(&self, slug: &str, plan: &str) -> String {
        let t = self
            .pb
            .create_tenant(
                json!({"name": format!("Tenant {slug}"), "slug": slug, "status": "active", "plan_tier": plan}),
            )
            .await;
        t["id"].as_str().expect("tenant id").to_string()
    }

    /// Creates a running instance of `template`; `extra` fields are merged into the record.
    pub async fn instance(&self, tenant: &str, template: &str, subdomain: &str, extra: Value) -> String {
        let template_id = self
            .templates
            .get(template)
            .unwrap_or_else(|| panic!("template {template} not synced"));
        let mut body = json!({
            "tenant": tenant, "template": template_id, "name": subdomain, "subdomain": subdomain,
            "desired_state": "running", "config": {},
        });
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        let r = self.pb.create_instance(body).await;
        r["id"].as_str().expect("instance id").to_string()
    }

    pub async fn record(&self, id: &str) -> Value {
        self.pb
            .superuser_request("GET", &format!("/api/collections/bot_instances/records/{id}"), None)
            .await
    }

    /// Waits until the instance's record satisfies `pred`; the panic message shows the record and the log.
    pub async fn wait_instance(&self, id: &str, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let r = self.record(id).await;
            if pred(&r) {
                return r;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "instance {id}: timed out waiting for {what}; record: {r}\nbridge log tail:\n{}",
                tail(&self.bridge.log(), 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_instance(id, &format!("status {status}"), timeout, |r| r["status"] == status)
            .await
    }

    /// The simulator's service for an instance, if it has one.
    pub async fn sim_service(&self, instance_id: &str) -> Option<Value> {
        let state = self.sim.state().await;
        state["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == format!("cf-{instance_id}"))
            .cloned()
    }

    /// The simulator's env vars of an instance's service, key -> (value, is_literal).
    pub async fn sim_envs(&self, instance_id: &str) -> BTreeMap<String, (String, bool)> {
        let Some(svc) = self.sim_service(instance_id).await else {
            return BTreeMap::new();
        };
        svc["envs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["key"].as_str().unwrap_or_default().to_string(),
                            (
                                e["value"].as_str().unwrap_or_default().to_string(),
                                e["is_literal"].as_bool().unwrap_or(false),
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every record of the four collections, as superuser.
    pub async fn dump_collections(&self) -> String {
        let mut out = String::new();
        for c in COLLECTIONS {
            let v = self
                .pb
                .superuser_request("GET", &format!("/api/collections/{c}/records?perPage=500"), None)
                .await;
            out.push_str(&v.to_string());
            out.push('\n');
        }
        out
    }
}

pub fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
