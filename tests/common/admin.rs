//! A whole stack for the operator tests: PocketBase, coolify-sim, the bridge, templates synced and a
//! tenant; plus a config file so the CLI can talk to the running bridge.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use super::bridge::{ADMIN_TOKEN, BASE_DOMAIN, BridgeProcess, SECRETS_KEY, WEBHOOK_SECRET, eventually, repo_root};
use super::pocketbase::TestPb;
use super::sim::{TestSim, reqwest_client};

/// Fast simulator: containers start and report running within a few hundred milliseconds.
pub const FAST_SIM: &[&str] = &[
    "--start-delay-ms",
    "100",
    "--running-delay-ms",
    "100",
    "--delete-delay-ms",
    "100",
];

pub struct Stack {
    pub pb: TestPb,
    pub sim: Option<TestSim>,
    pub bridge: BridgeProcess,
    pub tenant: String,
    pub template: String,
    /// A complete config file for the CLI, pointing at the running bridge.
    pub config: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Stack {
    pub async fn start(bridge_env: &[(&str, &str)]) -> Stack {
        Self::start_with(FAST_SIM, bridge_env).await
    }

    pub async fn start_with(sim_args: &[&str], bridge_env: &[(&str, &str)]) -> Stack {
        let pb = TestPb::start().await;
        let sim = TestSim::start(sim_args);
        let bridge = BridgeProcess::start(&pb.url, &pb.email, &pb.password, &sim.url, &sim.token, bridge_env).await;
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = tmp.path().join("cli.toml");
        std::fs::write(&config, cli_config(&pb, &sim, &bridge, tmp.path())).expect("write cli config");
        let mut stack = Stack {
            pb,
            sim: Some(sim),
            bridge,
            tenant: String::new(),
            template: String::new(),
            config,
            _tmp: tmp,
        };
        let out = stack.cli(&["templates", "sync"]);
        assert!(
            out.status.success(),
            "templates sync failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let templates = stack
            .pb
            .superuser_request("GET", "/api/collections/bot_templates/records?perPage=50", None)
            .await;
        stack.template = templates["items"]
            .as_array()
            .and_then(|items| items.iter().find(|t| t["name"] == "base-llm"))
            .and_then(|t| t["id"].as_str())
            .expect("base-llm template synced")
            .to_string();
        let user = stack.pb.create_user("ops@test.local", "ops-password-123").await;
        let tenant = stack
            .pb
            .create_tenant(json!({"name": "Ops Test", "slug": "ops-test", "user": user, "status": "active", "plan_tier": "business"}))
            .await;
        stack.tenant = tenant["id"].as_str().expect("tenant id").to_string();
        stack
    }

    pub fn sim(&self) -> &TestSim {
        self.sim.as_ref().expect("simulator running")
    }

    /// Runs the cf-bridge CLI with the stack's config file and nothing from the test's environment.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cf-bridge"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .expect("run cf-bridge cli")
    }

    pub async fn create_instance(&self, name: &str) -> String {
        let rec = self
            .pb
            .create_instance(json!({
                "tenant": self.tenant, "template": self.template, "name": name, "subdomain": name,
                "desired_state": "running", "config": {}
            }))
            .await;
        rec["id"].as_str().expect("instance id").to_string()
    }

    pub async fn instance(&self, id: &str) -> Value {
        self.pb
            .superuser_request("GET", &format!("/api/collections/bot_instances/records/{id}"), None)
            .await
    }

    /// Waits for `status`; returns the record.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        eventually(timeout, &format!("instance {id} to be {status}"), || async {
            let r = self.instance(id).await;
            (r["status"] == status).then_some(r)
        })
        .await
    }

    /// Waits until the record's job is dead (out of attempts: no retry of its own will follow) in the
    /// admin API; returns the job.
    pub async fn wait_failed_job(&self, id: &str, timeout: Duration) -> Value {
        let admin = self.bridge.admin();
        eventually(timeout, &format!("a dead job for {id}"), || async {
            let (s, body) = admin.get("/admin/jobs?state=dead").await;
            assert_eq!(s, 200, "{body}");
            body["jobs"].as_array()?.iter().find(|j| j["record_id"] == id).cloned()
        })
        .await
    }

    /// The simulator's services whose name contains the instance id.
    pub async fn services_for(&self, id: &str) -> Vec<Value> {
        let state = self.sim().state().await;
        state["services"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["name"].as_str().is_some_and(|n| n.contains(id)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn fail_service_creation(&self) {
        self.sim()
            .set_fault(json!({"route": "POST /services", "error_rate": 1.0}))
            .await;
    }

    pub async fn metrics_text(&self) -> String {
        reqwest_client()
            .get(format!("{}/metrics", self.bridge.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }
}

fn cli_config(pb: &TestPb, sim: &TestSim, bridge: &BridgeProcess, dir: &std::path::Path) -> String {
    let q = |s: &str| Value::String(s.to_string()).to_string();
    format!(
        "[pocketbase]\nurl = {}\nsuperuser_email = {}\nsuperuser_password = {}\n\
         [coolify]\nurl = {}\ntoken = {}\n[webhook]\nsecret = {}\n[admin]\ntoken = {}\nbind = {}\n\
         [journal]\npath = {}\n[domains]\nbase_domain = {}\n[router]\nbase_url = \"https://router.test.example\"\n\
         [secrets]\nkey = {}\nstore_path = {}\n[reconcile]\ntemplates_dir = {}\n",
        q(&pb.url),
        q(&pb.email),
        q(&pb.password),
        q(&sim.url),
        q(&sim.token),
        q(WEBHOOK_SECRET),
        q(ADMIN_TOKEN),
        q(&format!("127.0.0.1:{}", bridge.port)),
        q(&dir.join("unused-journal.db").display().to_string()),
        q(BASE_DOMAIN),
        q(SECRETS_KEY),
        q(&dir.join("unused-secrets.bin").display().to_string()),
        q(&repo_root().join("templates").display().to_string()),
    )
}
