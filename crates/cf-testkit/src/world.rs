//! A whole deployment in one value: a real PocketBase (the project's schema and hooks) with the shipped
//! templates published, coolify-sim and the bridge, both in the test process; plus the helpers that set
//! records up and read both sides.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::admin::AdminClient;
use crate::bridge::{BridgeProcess, TestBridge};
use crate::pocketbase::TestPb;
use crate::settings::TestSettings;
use crate::sim::TestSim;
use crate::{BASE_DOMAIN, bind_local, http, tail};

/// Simulator settings that keep the lifecycle quick but still observable.
pub const SIM_FAST: &[&str] = &[
    "--start-delay-ms",
    "300",
    "--running-delay-ms",
    "0",
    "--delete-delay-ms",
    "300",
    "--rate-limit",
    "100000",
];

/// A quicker simulator: containers start and report running within a few hundred milliseconds.
pub const SIM_QUICK: &[&str] = &[
    "--start-delay-ms",
    "100",
    "--running-delay-ms",
    "100",
    "--delete-delay-ms",
    "100",
    "--rate-limit",
    "100000",
];

/// Containers start within 100 ms and report running at once.
pub const SIM_RUNNING_AT_ONCE: &[&str] = &[
    "--rate-limit",
    "100000",
    "--start-delay-ms",
    "100",
    "--running-delay-ms",
    "0",
    "--delete-delay-ms",
    "100",
];

/// Starting and reporting running take 200 ms each: long enough to see the states in between.
pub const SIM_STEPWISE: &[&str] = &[
    "--start-delay-ms",
    "200",
    "--running-delay-ms",
    "200",
    "--delete-delay-ms",
    "100",
    "--rate-limit",
    "100000",
];

/// What a world needs of its bridge, in the test process or as a process.
pub trait Bridge {
    fn log(&self) -> String;
    fn admin(&self) -> AdminClient;
}

impl Bridge for TestBridge {
    fn log(&self) -> String {
        TestBridge::log(self)
    }

    fn admin(&self) -> AdminClient {
        TestBridge::admin(self)
    }
}

impl Bridge for BridgeProcess {
    fn log(&self) -> String {
        BridgeProcess::log(self)
    }

    fn admin(&self) -> AdminClient {
        BridgeProcess::admin(self)
    }
}

pub struct World<B: Bridge = TestBridge> {
    pub pb: TestPb,
    pub sim: TestSim,
    pub bridge: B,
    /// Template name -> `bot_templates` record id.
    pub templates: BTreeMap<String, String>,
    settings: TestSettings,
    _dir: Option<tempfile::TempDir>,
}

impl<B: Bridge> Drop for World<B> {
    fn drop(&mut self) {
        if let Some(dir) = self._dir.take() {
            crate::bridge::keep_if_failed(dir);
        }
    }
}

/// A dependency a world's bridge starts without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// PocketBase is stopped after the templates are published (`w.pb.restart()` brings it back).
    PocketBase,
    /// The simulator's port is reserved but nothing listens (`w.sim.start_again()` brings it up).
    Coolify,
}

/// PocketBase, a simulator with `sim_args` (coolify-sim's flags), the templates published as
/// `cf-bridge templates sync` does, and the settings of a bridge with `bridge_env` over the defaults.
async fn prepare(
    sim_args: &[&str],
    bridge_env: &[(&str, &str)],
    webhooks: bool,
) -> (
    TestPb,
    TestSim,
    TestSettings,
    TcpListener,
    tempfile::TempDir,
    BTreeMap<String, String>,
) {
    prepare_with(TestSim::start(sim_args), bridge_env, webhooks).await
}

/// As `prepare`, with a simulator the caller started (or reserved); `webhooks`: PocketBase posts its
/// hooks' webhooks to the bridge's port.
async fn prepare_with(
    sim: TestSim,
    bridge_env: &[(&str, &str)],
    webhooks: bool,
) -> (
    TestPb,
    TestSim,
    TestSettings,
    TcpListener,
    tempfile::TempDir,
    BTreeMap<String, String>,
) {
    let listener = bind_local();
    let port = listener.local_addr().expect("bridge address").port();
    let pb = if webhooks {
        let url = format!("http://127.0.0.1:{port}{}", cf_bridge::http::ingest::PATH);
        TestPb::start_with_env(&[
            ("CF_BRIDGE_WEBHOOK_URL", &url),
            ("CF_BRIDGE_WEBHOOK_SECRET", crate::WEBHOOK_SECRET),
        ])
        .await
    } else {
        TestPb::start().await
    };
    let dir = tempfile::tempdir().expect("bridge dir");
    let settings = TestSettings::new((&pb).into(), &sim.url, &sim.token, dir.path(), port).with(bridge_env);
    let templates = publish_templates(&pb, &settings).await;
    (pb, sim, settings, listener, dir, templates)
}

impl World<TestBridge> {
    /// The deployment with the bridge in the test process.
    pub async fn start(sim_args: &[&str], bridge_env: &[(&str, &str)]) -> World {
        Self::start_as(sim_args, bridge_env, false, true).await
    }

    /// The webhook configuration: PocketBase's webhook hook posting to the bridge.
    pub async fn start_with_webhooks(sim_args: &[&str], bridge_env: &[(&str, &str)]) -> World {
        Self::start_as(sim_args, bridge_env, true, true).await
    }

    /// The default deployment: webhooks off on both sides (no `webhook.secret`, PocketBase without the
    /// webhook variables); the bridge sees changes by realtime and resync.
    pub async fn start_default(sim_args: &[&str], bridge_env: &[(&str, &str)]) -> World {
        Self::start_as(sim_args, bridge_env, false, false).await
    }

    /// `webhooks`: PocketBase's hook posts to the bridge; `intake`: the bridge has a webhook secret.
    async fn start_as(sim_args: &[&str], bridge_env: &[(&str, &str)], webhooks: bool, intake: bool) -> World {
        let (pb, sim, settings, listener, dir, templates) = prepare(sim_args, bridge_env, webhooks).await;
        let settings = if intake {
            settings
        } else {
            settings.without("CF_BRIDGE__WEBHOOK__SECRET")
        };
        let bridge = TestBridge::start(settings.clone(), listener).await;
        World {
            pb,
            sim,
            bridge,
            templates,
            settings,
            _dir: Some(dir),
        }
    }
}

impl World<TestBridge> {
    /// The deployment with the bridge started while `down` does not answer.
    pub async fn start_without(down: Down, sim_args: &[&str], bridge_env: &[(&str, &str)]) -> World {
        let sim = match down {
            Down::Coolify => TestSim::reserved(sim_args),
            Down::PocketBase => TestSim::start(sim_args),
        };
        let (mut pb, sim, settings, listener, dir, templates) = prepare_with(sim, bridge_env, false).await;
        if down == Down::PocketBase {
            pb.kill().await;
        }
        let bridge = TestBridge::start(settings.clone(), listener).await;
        World {
            pb,
            sim,
            bridge,
            templates,
            settings,
            _dir: Some(dir),
        }
    }
}

impl World<BridgeProcess> {
    /// The deployment with `bin` (the cf-bridge binary) as a process, for tests that kill it.
    pub async fn start_process(bin: &Path, sim_args: &[&str], bridge_env: &[(&str, &str)]) -> Self {
        let (pb, sim, settings, listener, dir, templates) = prepare(sim_args, bridge_env, false).await;
        drop(listener);
        let bridge = BridgeProcess::start(bin, &settings).await;
        World {
            pb,
            sim,
            bridge,
            templates,
            settings,
            _dir: Some(dir),
        }
    }
}

impl<B: Bridge> World<B> {
    /// The bridge's settings (a base for a CLI command's, or for a bridge started again differently).
    pub fn settings(&self) -> &TestSettings {
        &self.settings
    }

    /// A configuration file for the CLI, pointing at this bridge.
    pub fn cli_config(&self) -> PathBuf {
        let path = self.settings.dir.join("cli.toml");
        std::fs::write(&path, self.settings.toml()).expect("write cli config");
        path
    }

    /// Runs the CLI (`bin`) with this world's configuration file and nothing from the test's environment.
    pub fn cli(&self, bin: &Path, args: &[&str]) -> std::process::Output {
        crate::cli::run(bin, &self.cli_config(), args, &[])
    }

    /// A user and their tenant, as the Admin Portal creates them; returns the tenant's id.
    pub async fn user_tenant(&self, email: &str, slug: &str, plan: &str) -> String {
        let user = self.pb.create_user(email, "user-password-123").await;
        let t = self
            .pb
            .create_tenant(json!({"name": format!("Tenant {slug}"), "slug": slug, "user": user,
                                  "status": "active", "plan_tier": plan}))
            .await;
        t["id"].as_str().expect("tenant id").to_string()
    }

    pub async fn create_tenant(&self, slug: &str, plan: &str) -> String {
        let t = self
            .pb
            .create_tenant(
                json!({"name": format!("Tenant {slug}"), "slug": slug, "status": "active", "plan_tier": plan}),
            )
            .await;
        t["id"].as_str().expect("tenant id").to_string()
    }

    pub fn instance_body(&self, tenant: &str, template: &str, subdomain: &str, desired: &str) -> Value {
        json!({
            "tenant": tenant,
            "template": self.templates[template],
            "name": subdomain,
            "subdomain": subdomain,
            "desired_state": desired,
            "config": {},
        })
    }

    pub async fn create_instance(&self, tenant: &str, template: &str, subdomain: &str, desired: &str) -> String {
        self.create_instance_with(tenant, template, subdomain, json!({"desired_state": desired}))
            .await
    }

    /// Creates a running instance of `template`; `extra` fields are merged into the record.
    pub async fn create_instance_with(&self, tenant: &str, template: &str, subdomain: &str, extra: Value) -> String {
        let mut body = self.instance_body(tenant, template, subdomain, "running");
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        let r = self.pb.create_instance(body).await;
        r["id"].as_str().expect("instance id").to_string()
    }

    pub async fn record(&self, collection: &str, id: &str) -> Value {
        self.pb.record(collection, id).await
    }

    pub async fn instance(&self, id: &str) -> Value {
        self.record("bot_instances", id).await
    }

    /// Every record of `collection` matching `filter` (PocketBase filter syntax), oldest first.
    pub async fn list(&self, collection: &str, filter: &str) -> Vec<Value> {
        self.pb.list(collection, filter).await
    }

    /// The record's deploy_logs rows, oldest first.
    pub async fn deploy_logs(&self, record_id: &str) -> Vec<Value> {
        self.list("deploy_logs", &format!("record_id = '{record_id}'")).await
    }

    /// Polls the record until `check` accepts it; on timeout panics with the record and the bridge's log.
    pub async fn wait_record(
        &self,
        collection: &str,
        id: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.record(collection, id).await;
            if check(&r) {
                return r;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; record: {r}\n{}",
                    self.log_tail(80)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_record("bot_instances", id, &format!("status {status}"), timeout, |r| {
            r["status"] == status
        })
        .await
    }

    /// Polls an instance every 50 ms until its status is `target`; returns the distinct statuses seen in
    /// order (starting with the first reading) and the final record.
    pub async fn statuses_until(&self, id: &str, target: &str, timeout: Duration) -> (Vec<String>, Value) {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let r = self.instance(id).await;
            let s = text(&r, "status").to_string();
            if seen.last() != Some(&s) {
                seen.push(s.clone());
            }
            if s == target {
                return (seen, r);
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {id} to be {target}; seen {seen:?}; record: {r}\n{}",
                    self.log_tail(80)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until `check` returns Some; on timeout panics with `what` and the bridge's log.
    pub async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}\n{}", self.log_tail(80));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- last {lines} lines of the bridge log ---\n{}",
            tail(&self.bridge.log(), lines)
        )
    }

    /// The simulator's service of an instance (named `cf-<id>`), if it has one.
    pub async fn service_of(&self, instance_id: &str) -> Option<Value> {
        self.sim
            .services()
            .await
            .into_iter()
            .find(|s| s["name"] == format!("cf-{instance_id}"))
    }

    /// The simulator's services whose name contains the instance id.
    pub async fn services_for(&self, id: &str) -> Vec<Value> {
        self.sim
            .services()
            .await
            .into_iter()
            .filter(|s| s["name"].as_str().is_some_and(|n| n.contains(id)))
            .collect()
    }

    /// The env vars of an instance's service in the simulator, key -> (value, is_literal).
    pub async fn sim_envs(&self, instance_id: &str) -> BTreeMap<String, (String, bool)> {
        let Some(svc) = self.service_of(instance_id).await else {
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

    /// Creates a project and, in it, a service straight through the simulator's API (not the bridge).
    pub async fn sim_create_foreign(&self, project_name: &str, service_name: &str, url: &str) -> (String, String) {
        let http = http();
        let p: Value = http
            .post(format!("{}/api/v1/projects", self.sim.url))
            .bearer_auth(&self.sim.token)
            .json(&json!({"name": project_name}))
            .send()
            .await
            .expect("sim create project")
            .json()
            .await
            .expect("sim project json");
        let project = p["uuid"]
            .as_str()
            .unwrap_or_else(|| panic!("sim project: {p}"))
            .to_string();
        let compose = "services:\n  web:\n    image: nginx:1.27\n";
        let s: Value = http
            .post(format!("{}/api/v1/services", self.sim.url))
            .bearer_auth(&self.sim.token)
            .json(&json!({
                "name": service_name,
                "project_uuid": project,
                "environment_name": "production",
                "server_uuid": coolify_sim::LOCALHOST_SERVER_UUID,
                "docker_compose_raw": base64::engine::general_purpose::STANDARD.encode(compose),
                "urls": [{"name": "web", "url": url}],
                "instant_deploy": false,
            }))
            .send()
            .await
            .expect("sim create service")
            .json()
            .await
            .expect("sim service json");
        let service = s["uuid"]
            .as_str()
            .unwrap_or_else(|| panic!("sim service: {s}"))
            .to_string();
        (project, service)
    }

    /// Every record of the four collections, as superuser.
    pub async fn dump_collections(&self) -> String {
        let mut out = String::new();
        for c in ["tenants", "bot_templates", "bot_instances", "deploy_logs"] {
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

/// Publishes the templates under templates/ to `bot_templates` as `cf-bridge templates sync` does;
/// returns name -> record id.
pub async fn publish_templates(pb: &TestPb, settings: &TestSettings) -> BTreeMap<String, String> {
    if let Err(e) = cf_bridge::cli::sync_templates(&settings.settings()).await {
        panic!("templates sync failed: {e:#}");
    }
    pb.list("bot_templates", "active = true")
        .await
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_string(),
                t["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

pub fn domain(subdomain: &str) -> String {
    format!("{subdomain}.{BASE_DOMAIN}")
}

pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// The domains Coolify routes to a simulator service: its applications' non-empty `fqdn`s.
pub fn service_domains(svc: &Value) -> Vec<String> {
    svc["applications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["fqdn"].as_str().filter(|f| !f.is_empty()).map(str::to_string))
        .collect()
}

/// PocketBase's date format, for `restart_requested_at`.
pub fn pb_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}
