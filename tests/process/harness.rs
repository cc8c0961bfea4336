//! Reliability harness: a whole deployment (PocketBase, coolify-sim on a fixed port with a state file,
//! the bridge, optionally a TCP proxy in front of PocketBase), signed webhooks whose acknowledgements are
//! remembered, and the one invariant check every scenario ends with.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cf_bridge::events::{Action, Collection, NewEvent};
use cf_bridge::webhook::WebhookSecret;
use serde_json::{Value, json};

use cf_testkit::proxy::TcpProxy;
use cf_testkit::settings::PbAccess;
use cf_testkit::{BridgeProcess, TestPb, TestSim, WEBHOOK_SECRET, http};

use crate::bridge_bin;

/// The bundled template without required secrets, so instances go live without an admin call.
pub const TEMPLATE: &str = "base-llm";

/// One webhook delivery the bridge acknowledged (2xx): it must be in the journal.
#[derive(Debug, Clone)]
pub struct Ack {
    pub delivery_id: String,
    pub dedupe_key: String,
}

#[derive(Default)]
pub struct Acks {
    acks: Mutex<Vec<Ack>>,
    pub refused: AtomicU64,
    pub unreachable: AtomicU64,
}

impl Acks {
    pub fn all(&self) -> Vec<Ack> {
        self.acks.lock().expect("acks lock").clone()
    }
}

static DELIVERY_SEQ: AtomicU64 = AtomicU64::new(0);

/// Sends a signed webhook the way hooks/pb_hooks/webhook_sign.js does; remembers it when acknowledged.
/// Returns the HTTP status, or None when the bridge was unreachable.
pub async fn send_webhook(
    bridge_url: &str,
    acks: &Acks,
    action: Action,
    collection: Collection,
    record: &Value,
) -> Option<u16> {
    let secret: WebhookSecret = WEBHOOK_SECRET.parse().expect("test webhook secret");
    let body = serde_json::to_vec(&json!({
        "event": action.as_str(), "collection": collection.as_str(), "record": record,
        "sent_at": chrono::Utc::now().to_rfc3339(),
    }))
    .expect("webhook body");
    let id = format!(
        "msg_rel_{}_{}",
        std::process::id(),
        DELIVERY_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = secret.sign(&id, &ts, &body);
    let resp = http()
        .post(format!("{bridge_url}/hooks/pocketbase"))
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", &ts)
        .header("webhook-signature", sig)
        .timeout(Duration::from_secs(8))
        .body(body)
        .send()
        .await;
    let status = match resp {
        Ok(r) => r.status().as_u16(),
        Err(_) => {
            acks.unreachable.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    if (200..300).contains(&status) {
        let rid = record["id"].as_str().unwrap_or_default();
        let updated = record["updated"].as_str().filter(|u| !u.is_empty());
        let dedupe_key = NewEvent::change_key(collection, rid, action, updated);
        acks.acks.lock().expect("acks lock").push(Ack {
            delivery_id: id,
            dedupe_key,
        });
    } else {
        acks.refused.fetch_add(1, Ordering::Relaxed);
    }
    Some(status)
}

/// Acknowledged deliveries that the journal does not hold (by delivery id or by change key).
pub fn missing_acks(journal_path: &Path, acks: &[Ack]) -> Result<Vec<String>, String> {
    let conn = rusqlite::Connection::open_with_flags(journal_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("open journal: {e}"))?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare("SELECT COUNT(*) FROM events WHERE delivery_id = ?1 OR dedupe_key = ?2")
        .map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    for a in acks {
        let n: i64 = stmt
            .query_row(rusqlite::params![a.delivery_id, a.dedupe_key], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if n == 0 {
            missing.push(format!(
                "acknowledged delivery {} ({}) is not in the journal",
                a.delivery_id, a.dedupe_key
            ));
        }
    }
    Ok(missing)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

/// The invariants every scenario ends with; returns one line per violation (empty = all hold).
/// - every live instance in its desired state (running, or stopped when desired so or its tenant is
///   suspended), with exactly one Coolify service `cf-<id>` in its tenant's project, in the same state;
/// - one project `cf-<slug>` per live tenant, recorded on the tenant;
/// - no `cf-*` service or project without a live record;
/// - each live instance's latest deploy_logs row is a success that agrees with the state;
/// - every acknowledged webhook is in the journal.
pub async fn check_invariants(pb: &TestPb, sim: &TestSim, journal: &Path, acks: &[Ack]) -> Vec<String> {
    let mut v = Vec::new();
    let Some(state) = sim.try_state().await else {
        return vec!["coolify-sim state unavailable".into()];
    };
    let tenants = pb.list_all("tenants", "created").await;
    let instances = pb.list_all("bot_instances", "created").await;
    let logs = pb.list_all("deploy_logs", "created").await;
    let services: Vec<&Value> = state["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| !s["pending_deletion"].as_bool().unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    let projects: Vec<&Value> = state["projects"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let tenants_by_id: HashMap<&str, &Value> = tenants.iter().map(|t| (s(t, "id"), t)).collect();
    let mut last_log: BTreeMap<&str, &Value> = BTreeMap::new();
    for l in &logs {
        last_log.insert(s(l, "record_id"), l);
    }

    for t in &tenants {
        let name = format!("cf-{}", s(t, "slug"));
        let mine: Vec<&&Value> = projects.iter().filter(|p| s(p, "name") == name).collect();
        if mine.len() != 1 {
            v.push(format!(
                "tenant {}: {} Coolify projects named {name}, expected 1",
                s(t, "id"),
                mine.len()
            ));
        } else if s(mine[0], "uuid") != s(t, "coolify_project_uuid") {
            v.push(format!(
                "tenant {}: coolify_project_uuid {:?} but project {name} is {}",
                s(t, "id"),
                s(t, "coolify_project_uuid"),
                s(mine[0], "uuid")
            ));
        }
    }
    for p in &projects {
        let name = s(p, "name");
        if let Some(slug) = name.strip_prefix("cf-")
            && !tenants.iter().any(|t| s(t, "slug") == slug)
        {
            v.push(format!("orphan Coolify project {name} ({})", s(p, "uuid")));
        }
    }

    for i in &instances {
        let id = s(i, "id");
        let Some(t) = tenants_by_id.get(s(i, "tenant")) else {
            v.push(format!("instance {id}: tenant {} missing", s(i, "tenant")));
            continue;
        };
        let want = if s(i, "desired_state") == "running" && s(t, "status") == "active" {
            "running"
        } else {
            "stopped"
        };
        if s(i, "status") != want {
            v.push(format!(
                "instance {id}: status {:?}, expected {want} (error_message {:?})",
                s(i, "status"),
                s(i, "error_message")
            ));
        }
        let name = format!("cf-{id}");
        let mine: Vec<&&Value> = services.iter().filter(|x| s(x, "name") == name).collect();
        if mine.len() != 1 {
            v.push(format!(
                "instance {id}: {} Coolify services named {name}, expected 1",
                mine.len()
            ));
            continue;
        }
        let svc = mine[0];
        let uuid = s(svc, "uuid");
        if s(i, "coolify_service_id") != uuid {
            v.push(format!(
                "instance {id}: coolify_service_id {:?} but service {name} is {uuid}",
                s(i, "coolify_service_id")
            ));
        }
        if s(svc, "project_uuid") != s(t, "coolify_project_uuid") {
            v.push(format!("instance {id}: service {uuid} is not in its tenant's project"));
        }
        let sim_status = s(svc, "status");
        let sim_ok = if want == "running" {
            sim_status.starts_with("running")
        } else {
            sim_status == "exited"
        };
        if !sim_ok {
            v.push(format!("instance {id}: Coolify reads {sim_status:?}, expected {want}"));
        }
        match last_log.get(id) {
            None => v.push(format!("instance {id}: no deploy_logs row")),
            Some(l) => {
                let msg = s(l, "message");
                let contradicts = (s(l, "action") == "stop" && want == "running")
                    || (matches!(s(l, "action"), "start" | "restart") && want == "stopped")
                    || (msg.ends_with(" and running") && want == "stopped")
                    || (msg.ends_with(" and stopped") && want == "running")
                    || (msg.starts_with("service ") && !msg.starts_with(&format!("service {uuid} ")));
                if s(l, "status") != "success" || contradicts {
                    v.push(format!(
                        "instance {id}: latest deploy_logs row {} {} {msg:?} disagrees with {want} service {uuid}",
                        s(l, "action"),
                        s(l, "status")
                    ));
                }
            }
        }
    }
    for x in &services {
        let name = s(x, "name");
        if let Some(rest) = name.strip_prefix("cf-")
            && !instances.iter().any(|i| s(i, "id") == rest)
        {
            v.push(format!(
                "orphan Coolify service {name} ({}) reads {}",
                s(x, "uuid"),
                s(x, "status")
            ));
        }
    }
    match missing_acks(journal, acks) {
        Ok(m) => v.extend(m),
        Err(e) => v.push(format!("journal unreadable: {e}")),
    }
    v
}

/// A deployment under test.
pub struct World {
    pub pb: TestPb,
    pub sim: TestSim,
    pub bridge: BridgeProcess,
    pub proxy: Option<TcpProxy>,
    pub acks: Acks,
    pub template_id: String,
    pub started: Instant,
}

#[derive(Default)]
pub struct WorldOptions<'a> {
    pub sim_args: Vec<&'a str>,
    pub bridge_env: Vec<(&'a str, &'a str)>,
    /// Put a cuttable TCP proxy between the bridge and PocketBase.
    pub proxy: bool,
}

impl World {
    pub async fn start(opts: WorldOptions<'_>) -> World {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let started = Instant::now();
        let pb = TestPb::start().await;
        let template_id = pb.create_template(json!({"name": TEMPLATE, "active": true})).await["id"]
            .as_str()
            .expect("template id")
            .to_string();
        let mut sim_args: Vec<&str> = cf_testkit::world::SIM_RUNNING_AT_ONCE.to_vec();
        sim_args.extend(opts.sim_args.iter().copied());
        let sim = TestSim::start_restartable(&sim_args);
        let proxy = if opts.proxy {
            Some(TcpProxy::start(pb.port).await)
        } else {
            None
        };
        let pb_url = proxy.as_ref().map(|p| p.url()).unwrap_or_else(|| pb.url.clone());
        let access = PbAccess {
            url: &pb_url,
            ..(&pb).into()
        };
        let bridge = BridgeProcess::for_stack(bridge_bin(), access, &sim, &opts.bridge_env).await;
        World {
            pb,
            sim,
            bridge,
            proxy,
            acks: Acks::default(),
            template_id,
            started,
        }
    }

    pub fn journal_path(&self) -> PathBuf {
        self.bridge.dir.join("journal.db")
    }

    /// Record operations; `webhooks` says whether each change is also announced by a signed webhook.
    pub fn ops(&self, webhooks: bool) -> Ops<'_> {
        Ops {
            pb: &self.pb,
            acks: &self.acks,
            bridge_url: webhooks.then(|| self.bridge.url.clone()),
            template_id: self.template_id.clone(),
        }
    }

    pub async fn check(&self) -> Vec<String> {
        check_invariants(&self.pb, &self.sim, &self.journal_path(), &self.acks.all()).await
    }

    /// Polls the invariants until they hold or `timeout` passes; returns the time it took and the
    /// violations left (empty when converged).
    pub async fn converge(&self, timeout: Duration) -> (Duration, Vec<String>) {
        let t0 = Instant::now();
        loop {
            let v = self.check().await;
            if v.is_empty() || t0.elapsed() > timeout {
                return (t0.elapsed(), v);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Lines of the bridge log that record a panic.
    pub fn panics(&self) -> Vec<String> {
        self.bridge
            .log()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(str::to_string)
            .collect()
    }
}

/// Changes to PocketBase records, each optionally followed by the webhook PocketBase's hook would send.
/// Borrows only PocketBase and the ack list, so a scenario can kill the bridge meanwhile.
pub struct Ops<'a> {
    pub pb: &'a TestPb,
    pub acks: &'a Acks,
    pub bridge_url: Option<String>,
    pub template_id: String,
}

impl Ops<'_> {
    async fn notify(&self, action: Action, collection: Collection, record: &Value) {
        if let Some(url) = &self.bridge_url {
            send_webhook(url, self.acks, action, collection, record).await;
        }
    }

    /// A tenant on the business plan with room for 100 stacks.
    pub async fn tenant(&self, slug: &str) -> Value {
        let t = self
            .pb
            .create_tenant(
                json!({"name": format!("Tenant {slug}"), "slug": slug, "status": "active",
                                  "plan_tier": "business", "max_stacks": 100}),
            )
            .await;
        self.notify(Action::Create, Collection::Tenants, &t).await;
        t
    }

    pub async fn create_instance(&self, tenant_id: &str, subdomain: &str, desired: &str) -> Value {
        let i = self
            .pb
            .create_instance(
                json!({"tenant": tenant_id, "template": self.template_id, "name": subdomain,
                                    "subdomain": subdomain, "desired_state": desired, "config": {}}),
            )
            .await;
        self.notify(Action::Create, Collection::BotInstances, &i).await;
        i
    }

    pub async fn patch(&self, collection: Collection, id: &str, body: Value) -> Value {
        let r = self.pb.patch(collection.as_str(), id, body).await;
        self.notify(Action::Update, collection, &r).await;
        r
    }

    pub async fn delete_instance(&self, id: &str) {
        let rec = self
            .pb
            .superuser_request("GET", &format!("/api/collections/bot_instances/records/{id}"), None)
            .await;
        self.pb.delete("bot_instances", id).await;
        self.notify(Action::Delete, Collection::BotInstances, &rec).await;
    }
}

/// A short unique DNS label.
pub fn label(prefix: &str, n: usize) -> String {
    format!("{prefix}{n}-{:04x}", rand::random::<u16>())
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub runs: String,
    pub violations: Vec<String>,
    pub figures: String,
    pub wall: Duration,
}

pub fn table(rows: &[Row]) -> String {
    let mut out =
        String::from("| scenario | runs | invariant violations | figures | wall time |\n|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} s |\n",
            r.scenario,
            r.runs,
            r.violations.len(),
            r.figures,
            r.wall.as_secs_f64()
        ));
    }
    out
}
