//! End-to-end world for the reconciler tests: a real PocketBase with the shipped templates published, a
//! coolify-sim and the bridge as a process, plus helpers that read both sides.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::bridge::{BASE_DOMAIN, BridgeProcess, repo_root};
use super::pocketbase::TestPb;
use super::sim::{TestSim, reqwest_client};

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

pub struct World {
    pub pb: TestPb,
    pub sim: TestSim,
    pub bridge: BridgeProcess,
    /// Template name -> bot_templates record id.
    pub templates: BTreeMap<String, String>,
}

impl World {
    pub async fn start(sim_args: &[&str], bridge_env: &[(&str, &str)]) -> World {
        let pb = TestPb::start().await;
        let sim = TestSim::start(sim_args);
        let templates = publish_templates(&pb).await;
        let bridge = BridgeProcess::start(&pb.url, &pb.email, &pb.password, &sim.url, &sim.token, bridge_env).await;
        World {
            pb,
            sim,
            bridge,
            templates,
        }
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
        let r = self
            .pb
            .create_instance(self.instance_body(tenant, template, subdomain, desired))
            .await;
        r["id"].as_str().expect("instance id").to_string()
    }

    pub async fn record(&self, collection: &str, id: &str) -> Value {
        self.pb
            .superuser_request("GET", &format!("/api/collections/{collection}/records/{id}"), None)
            .await
    }

    /// Every record of `collection` matching `filter` (PocketBase filter syntax), oldest first.
    pub async fn list(&self, collection: &str, filter: &str) -> Vec<Value> {
        let path = format!(
            "/api/collections/{collection}/records?perPage=500&sort=created&filter={}",
            urlencode(filter)
        );
        let v = self.pb.superuser_request("GET", &path, None).await;
        v["items"].as_array().cloned().unwrap_or_default()
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

    /// Polls an instance every 50 ms until its status is `target`; returns the distinct statuses seen in
    /// order (starting with the first reading) and the final record.
    pub async fn statuses_until(&self, id: &str, target: &str, timeout: Duration) -> (Vec<String>, Value) {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let r = self.record("bot_instances", id).await;
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
        let log = self.bridge.log();
        let all: Vec<&str> = log.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "--- last {} lines of the bridge log ---\n{}",
            all.len() - from,
            all[from..].join("\n")
        )
    }

    pub async fn sim_services(&self) -> Vec<Value> {
        self.sim.state().await["services"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn sim_projects(&self) -> Vec<Value> {
        self.sim.state().await["projects"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Services with this name that are not being deleted.
    pub async fn sim_services_named(&self, name: &str) -> Vec<Value> {
        self.sim_services()
            .await
            .into_iter()
            .filter(|s| s["name"] == name && s["pending_deletion"] != true)
            .collect()
    }

    pub async fn sim_service(&self, uuid: &str) -> Option<Value> {
        self.sim_services().await.into_iter().find(|s| s["uuid"] == uuid)
    }

    /// Creates a project and, in it, a service straight through the simulator's API (not via the bridge).
    pub async fn sim_create_foreign(&self, project_name: &str, service_name: &str, url: &str) -> (String, String) {
        let http = reqwest_client();
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
}

pub fn domain(subdomain: &str) -> String {
    format!("{subdomain}.{BASE_DOMAIN}")
}

pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// PocketBase's date format, for `restart_requested_at`.
pub fn pb_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Publishes every template under templates/ as a bot_templates record, as `cf-bridge templates sync`
/// would; returns name -> record id.
pub async fn publish_templates(pb: &TestPb) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let dir = repo_root().join("templates");
    let mut entries: Vec<_> = std::fs::read_dir(&dir).expect("templates dir").flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Ok(text) = std::fs::read_to_string(entry.path().join("template.toml")) else {
            continue;
        };
        let t: toml::Table = toml::from_str(&text).expect("template.toml");
        let s = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let secrets: Vec<String> = t
            .get("required_secrets")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let name = s("name");
        let rec = pb
            .create_template(json!({
                "name": name,
                "description": s("description"),
                "version": s("version"),
                "required_secrets": secrets,
                "default_config": {},
                "active": true,
            }))
            .await;
        out.insert(name, rec["id"].as_str().expect("template id").to_string());
    }
    out
}

/// Count of sim request log entries for `template` (e.g. "POST /services/{uuid}/restart").
pub fn count(requests: &[Value], template: &str) -> usize {
    requests.iter().filter(|r| r["path"] == template).count()
}
