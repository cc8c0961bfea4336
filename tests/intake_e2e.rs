//! Event intake end to end with the real bridge process: realtime, signed webhooks from the hooks,
//! resync after downtime or a cut stream, PocketBase restarts and hook reloads, a webhook burst across a
//! `kill -9`, and start-up refusal on bad PocketBase credentials.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cf_bridge::webhook::WebhookSecret;
use common::bridge::{AdminClient, BridgeProcess, WEBHOOK_SECRET, eventually};
use common::pocketbase::{TestPb, pocketbase_bin, repo_root};
use common::sim::TestSim;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const SIM_ARGS: [&str; 8] = [
    "--start-delay-ms",
    "200",
    "--running-delay-ms",
    "200",
    "--delete-delay-ms",
    "100",
    "--rate-limit",
    "100000",
];
const WAIT: Duration = Duration::from_secs(20);

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

async fn start_bridge(pb_url: &str, pb: &TestPb, sim: &TestSim) -> BridgeProcess {
    BridgeProcess::start(pb_url, &pb.email, &pb.password, &sim.url, &sim.token, &[]).await
}

/// A metric's value from `/metrics` (0 when the series does not exist yet).
async fn metric(bridge_url: &str, series: &str) -> f64 {
    let resp = http()
        .get(format!("{bridge_url}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    let text = resp.text().await.expect("metrics text");
    text.lines()
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .next()
        .unwrap_or(0.0)
}

const RECONNECTS: &str = "cf_bridge_realtime_reconnects_total";

async fn wait_subscribed(bridge: &BridgeProcess) {
    eventually(WAIT, "the bridge's realtime subscription", || async {
        (metric(&bridge.url, "cf_bridge_realtime_connected").await == 1.0).then_some(())
    })
    .await;
}

/// Every journal event for a record, newest first (all pages).
async fn record_events(admin: &AdminClient, record: &str, source: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<i64> = None;
    for _ in 0..20 {
        let mut path = format!("/admin/events?record={record}&limit=500");
        if let Some(s) = source {
            path.push_str(&format!("&source={s}"));
        }
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = admin.get(&path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        out.extend(body["events"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_i64() {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    out
}

/// Which record version an expected event must carry.
#[derive(Debug, Clone, Copy)]
enum Version<'a> {
    Any,
    Exactly(&'a str),
    /// This version or a later one (PocketBase's `updated` strings sort by time).
    AtLeast(&'a str),
}

impl Version<'_> {
    fn matches(self, event: &Value) -> bool {
        let got = event["record_updated"].as_str().unwrap_or_default();
        match self {
            Version::Any => true,
            Version::Exactly(u) => got == u,
            Version::AtLeast(u) => got >= u,
        }
    }
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("record without id: {v}"))
        .to_string()
}

fn updated(v: &Value) -> String {
    v["updated"]
        .as_str()
        .unwrap_or_else(|| panic!("record without updated: {v}"))
        .to_string()
}

/// A tenant on the business plan and the `base-llm` template (no required secrets), so instances can run.
async fn seed(pb: &TestPb, slug: &str) -> (String, String) {
    let template = pb
        .create_template(json!({"name": "base-llm", "cpu_default": 1.0, "mem_default": 1024, "active": true}))
        .await;
    let tenant = pb
        .create_tenant(json!({"name": slug, "slug": slug, "status": "active", "plan_tier": "business"}))
        .await;
    (id(&tenant), id(&template))
}

async fn new_instance(pb: &TestPb, tenant: &str, template: &str, sub: &str, desired: &str) -> Value {
    pb.create_instance(
        json!({"tenant": tenant, "template": template, "name": sub, "subdomain": sub,
        "desired_state": desired, "config": {}}),
    )
    .await
}

async fn wait_status(pb: &TestPb, instance: &str, status: &str) {
    let what = format!("instance {instance} status {status}");
    eventually(Duration::from_secs(40), &what, || async {
        let (code, r) = pb
            .request_as(
                &pb.superuser_token().await,
                "GET",
                &format!("/api/collections/bot_instances/records/{instance}"),
                None,
            )
            .await;
        (code == 200 && r["status"] == status).then_some(())
    })
    .await;
}

/// Waits until the journal holds an event for `record` with `action` (and `updated`, if given) from any
/// of `sources`; returns it with the time it took.
async fn journaled(
    admin: &AdminClient,
    record: &str,
    action: &str,
    version: Version<'_>,
    sources: &[&str],
    timeout: Duration,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let events = record_events(admin, record, None).await;
        let wanted =
            |e: &&Value| e["action"] == action && version.matches(e) && sources.iter().any(|s| e["source"] == *s);
        if let Some(ev) = events.iter().find(wanted) {
            return (ev.clone(), start.elapsed());
        }
        if start.elapsed() > timeout {
            let seen: Vec<String> = events
                .iter()
                .map(|e| {
                    format!(
                        "{} {} (event {}, job {})",
                        e["source"], e["dedupe_key"], e["id"], e["job_id"]
                    )
                })
                .collect();
            panic!("no {action} of {record} ({version:?}) from {sources:?} within {timeout:?}; journal has {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------------
// A TCP proxy whose connections can be cut, and whose target can be set after it started.

struct Proxy {
    port: u16,
    target: Arc<AtomicU16>,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let target = Arc::new(AtomicU16::new(target));
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (t, o, c) = (target.clone(), open.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                // Refused while cut: the socket is dropped at once.
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let to = t.load(Ordering::SeqCst);
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut all = c.lock().expect("proxy connections");
                all.retain(|h| !h.is_finished());
                all.push(task);
            }
        });
        Proxy {
            port,
            target,
            open,
            conns,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_target(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }

    /// Drops every open connection and refuses new ones until [`Proxy::heal`].
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for h in self.conns.lock().expect("proxy connections").drain(..) {
            h.abort();
        }
    }

    fn heal(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

// ---------------------------------------------------------------------------------------------------
// 1. Create, update and delete of tenants and instances reach the journal through realtime within a second.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_changes_reach_the_journal_within_a_second() {
    let pb = TestPb::start().await;
    let sim = TestSim::start(&SIM_ARGS);
    let bridge = start_bridge(&pb.url, &pb, &sim).await;
    wait_subscribed(&bridge).await;
    let admin = bridge.admin();
    let limit = Duration::from_secs(1);
    let mut took = Vec::new();

    let (tenant, template) = seed(&pb, "rt").await;
    let (_, t) = journaled(&admin, &tenant, "create", Version::Any, &["realtime"], WAIT).await;
    took.push(("tenant create", t));
    let inst = new_instance(&pb, &tenant, &template, "rt-one", "stopped").await;
    let inst_id = id(&inst);
    let (_, t) = journaled(
        &admin,
        &inst_id,
        "create",
        Version::Exactly(&updated(&inst)),
        &["realtime"],
        WAIT,
    )
    .await;
    took.push(("instance create", t));

    let patched = pb.patch("tenants", &tenant, json!({"name": "rt renamed"})).await;
    let (_, t) = journaled(
        &admin,
        &tenant,
        "update",
        Version::Exactly(&updated(&patched)),
        &["realtime"],
        WAIT,
    )
    .await;
    took.push(("tenant update", t));
    let patched = pb
        .patch("bot_instances", &inst_id, json!({"config": {"MODEL": "x"}}))
        .await;
    let (_, t) = journaled(
        &admin,
        &inst_id,
        "update",
        Version::Exactly(&updated(&patched)),
        &["realtime"],
        WAIT,
    )
    .await;
    took.push(("instance update", t));

    pb.delete("bot_instances", &inst_id).await;
    let (_, t) = journaled(&admin, &inst_id, "delete", Version::Any, &["realtime"], WAIT).await;
    took.push(("instance delete", t));
    pb.delete("tenants", &tenant).await;
    let (_, t) = journaled(&admin, &tenant, "delete", Version::Any, &["realtime"], WAIT).await;
    took.push(("tenant delete", t));

    eprintln!("realtime latencies: {took:?}");
    for (what, t) in took {
        assert!(t <= limit, "{what} took {t:?} to reach the journal (limit {limit:?})");
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. With the webhook hook on too, one change arriving by both paths is one event and one job.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_by_webhook_and_realtime_is_one_event() {
    // PocketBase must know the webhook URL before the bridge (which needs PocketBase) exists: the hook
    // posts to a proxy that is pointed at the bridge once it runs.
    let proxy = Proxy::start(0).await;
    let hook_url = format!("{}/hooks/pocketbase", proxy.url());
    let pb = TestPb::start_with_env(&[
        ("CF_BRIDGE_WEBHOOK_URL", &hook_url),
        ("CF_BRIDGE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ])
    .await;
    let sim = TestSim::start(&SIM_ARGS);
    let bridge = start_bridge(&pb.url, &pb, &sim).await;
    proxy.set_target(bridge.port);
    wait_subscribed(&bridge).await;
    let admin = bridge.admin();
    let dups = || async {
        metric(&bridge.url, "cf_bridge_events_deduplicated_total{source=\"realtime\"}").await
            + metric(&bridge.url, "cf_bridge_events_deduplicated_total{source=\"webhook\"}").await
    };
    let dups_before = dups().await;

    let (tenant, _) = seed(&pb, "dual").await;
    let mut changes = vec![("create".to_string(), None)];
    for n in 0..5 {
        let p = pb.patch("tenants", &tenant, json!({"name": format!("dual {n}")})).await;
        changes.push(("update".to_string(), Some(updated(&p))));
    }
    pb.delete("tenants", &tenant).await;
    changes.push(("delete".to_string(), None));

    for (action, upd) in &changes {
        let version = upd.as_deref().map_or(Version::Any, Version::Exactly);
        journaled(&admin, &tenant, action, version, &["webhook", "realtime"], WAIT).await;
    }
    // Both paths delivered every change: the second copy of each is counted as a duplicate.
    let want = dups_before + changes.len() as f64;
    eventually(WAIT, "a duplicate for every change", || async {
        (dups().await >= want).then_some(())
    })
    .await;
    // Each change is journaled once, by whichever path came first (the hook runs before the broadcast).
    let events = record_events(&admin, &tenant, None).await;
    let mut webhook_firsts = 0;
    for (action, upd) in &changes {
        let version = upd.as_deref().map_or(Version::Any, Version::Exactly);
        let copies: Vec<&Value> = events
            .iter()
            .filter(|e| e["action"] == action.as_str() && version.matches(e) && e["source"] != "resync")
            .collect();
        assert_eq!(
            copies.len(),
            1,
            "{action} {upd:?} must be journaled exactly once: {copies:#?}"
        );
        if copies[0]["source"] == "webhook" {
            assert!(
                copies[0]["delivery_id"].as_str().is_some_and(|d| d.starts_with("msg_")),
                "{}",
                copies[0]
            );
            webhook_firsts += 1;
        }
    }
    assert!(
        webhook_firsts > 0,
        "no change came through the webhook; PocketBase log:\n{}",
        pb.log()
    );
    let jobs: HashSet<i64> = events.iter().filter_map(|e| e["job_id"].as_i64()).collect();
    assert_eq!(
        jobs.len(),
        1,
        "every event of one record folds into one job: {events:#?}"
    );
    let log = pb.log();
    assert!(
        !log.contains("cf-bridge webhook refused") && !log.contains("cf-bridge webhook failed"),
        "{log}"
    );
}

// ---------------------------------------------------------------------------------------------------
// 3. Changes made while the bridge is stopped, or while its stream is cut, are found by the resync.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_the_bridge_is_stopped_are_found_by_resync() {
    let pb = TestPb::start().await;
    let sim = TestSim::start(&SIM_ARGS);
    let mut bridge = start_bridge(&pb.url, &pb, &sim).await;
    wait_subscribed(&bridge).await;
    let (tenant, template) = seed(&pb, "down").await;
    let a = id(&new_instance(&pb, &tenant, &template, "down-a", "running").await);
    let c = id(&new_instance(&pb, &tenant, &template, "down-c", "running").await);
    wait_status(&pb, &a, "running").await;
    wait_status(&pb, &c, "running").await;

    assert!(
        sim.state().await.to_string().contains(&format!("cf-{c}")),
        "instance {c} has a Coolify service"
    );
    bridge.kill9();
    let a_patched = pb.patch("bot_instances", &a, json!({"desired_state": "stopped"})).await;
    let b = new_instance(&pb, &tenant, &template, "down-b", "running").await;
    pb.delete("bot_instances", &c).await;
    bridge.start_again().await;

    let admin = bridge.admin();
    journaled(
        &admin,
        &a,
        "update",
        Version::AtLeast(&updated(&a_patched)),
        &["resync"],
        WAIT,
    )
    .await;
    journaled(&admin, &id(&b), "create", Version::Any, &["resync"], WAIT).await;
    journaled(&admin, &c, "delete", Version::Any, &["resync"], WAIT).await;
    wait_status(&pb, &a, "stopped").await;
    wait_status(&pb, &id(&b), "running").await;
    eventually(WAIT, "the deleted instance's Coolify service removed", || async {
        let state = sim.state().await.to_string();
        (!state.contains(&format!("cf-{c}"))).then_some(())
    })
    .await;

    // Once everything is applied, a resync finds nothing new: its change keys (built from the REST
    // listing) equal those realtime built for the same versions.
    let idle = || async {
        let (_, jobs) = admin.get("/admin/jobs?state=queued,running,failed").await;
        jobs["jobs"].as_array().is_some_and(|j| j.is_empty()).then_some(())
    };
    eventually(WAIT, "no pending jobs", idle).await;
    let resync_events = || async {
        let mut n = 0;
        for r in [&a, &id(&b)] {
            n += record_events(&admin, r, Some("resync")).await.len();
        }
        n
    };
    let before = resync_events().await;
    // The resync timestamp has one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let last = metric(&bridge.url, "cf_bridge_last_resync_timestamp_seconds").await;
    let (code, _) = admin.send(reqwest::Method::POST, "/admin/resync", json!({})).await;
    assert_eq!(code, 202);
    eventually(WAIT, "the operator's resync", || async {
        (metric(&bridge.url, "cf_bridge_last_resync_timestamp_seconds").await > last).then_some(())
    })
    .await;
    assert_eq!(
        resync_events().await,
        before,
        "a resync of applied records enqueues nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_the_stream_is_cut_are_found_after_reconnect() {
    let pb = TestPb::start().await;
    let proxy = Proxy::start(pb.port).await;
    let sim = TestSim::start(&SIM_ARGS);
    let bridge = start_bridge(&proxy.url(), &pb, &sim).await;
    wait_subscribed(&bridge).await;
    let admin = bridge.admin();
    let (tenant, template) = seed(&pb, "cut").await;
    let d = id(&new_instance(&pb, &tenant, &template, "cut-d", "running").await);
    wait_status(&pb, &d, "running").await;
    let reconnects = metric(&bridge.url, RECONNECTS).await;

    proxy.cut();
    eventually(WAIT, "the bridge noticing the cut", || async {
        (metric(&bridge.url, "cf_bridge_realtime_connected").await == 0.0).then_some(())
    })
    .await;
    let d_patched = pb.patch("bot_instances", &d, json!({"desired_state": "stopped"})).await;
    let e = new_instance(&pb, &tenant, &template, "cut-e", "running").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.heal();

    eventually(WAIT, "a reconnect after the cut", || async {
        (metric(&bridge.url, RECONNECTS).await > reconnects).then_some(())
    })
    .await;
    // The resync lists D's current version; if the bridge wrote D again after the reconnect, realtime may
    // have brought that later version first (then the resync's copy is a duplicate).
    let d_now = Version::AtLeast(&updated(&d_patched));
    journaled(&admin, &d, "update", d_now, &["resync", "realtime"], WAIT).await;
    let before_cut = record_events(&admin, &d, None).await;
    assert!(
        before_cut
            .iter()
            .all(|e| !(e["source"] == "realtime" && e["record_updated"] == updated(&d_patched).as_str())),
        "the change made during the cut cannot have come over the cut stream: {before_cut:#?}"
    );
    journaled(&admin, &id(&e), "create", Version::Any, &["resync"], WAIT).await;
    wait_status(&pb, &d, "stopped").await;
    wait_status(&pb, &id(&e), "running").await;
}

// ---------------------------------------------------------------------------------------------------
// 4. PocketBase killed and restarted on the same data dir, and a hooks reload, both end in a reconnect
//    with nothing missed. TestPb runs with --hooksWatch=false, so this test serves TestPb's data dir
//    itself, from a copy of the hooks it can edit.

struct WatchedPb {
    port: u16,
    data_dir: PathBuf,
    hooks: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl WatchedPb {
    /// Takes over `pb`'s port and data dir (pb must be killed first).
    async fn start(pb: &TestPb) -> WatchedPb {
        // Not tempdir(): PocketBase's watcher skips hidden directories such as /tmp/.tmpXXXX.
        let hooks = tempfile::Builder::new()
            .prefix("cf-bridge-hooks-")
            .tempdir()
            .expect("hooks dir");
        let src = repo_root().join("hooks/pb_hooks");
        for entry in std::fs::read_dir(&src).expect("read hooks") {
            let path = entry.expect("hooks entry").path();
            if path.is_file() {
                std::fs::copy(&path, hooks.path().join(path.file_name().expect("file name"))).expect("copy hook");
            }
        }
        let mut w = WatchedPb {
            port: pb.port,
            data_dir: pb.data_dir.clone(),
            hooks,
            child: None,
        };
        w.spawn().await;
        w
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("watched.log"))
            .expect("log file");
        let child = tokio::process::Command::new(pocketbase_bin())
            .arg("serve")
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--dir")
            .arg(&self.data_dir)
            .arg("--migrationsDir")
            .arg(repo_root().join("hooks/pb_migrations"))
            .arg("--hooksDir")
            .arg(self.hooks.path())
            .arg("--hooksWatch=true")
            .arg("--automigrate=false")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("log clone")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pocketbase");
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/api/health", self.port);
        eventually(WAIT, "pocketbase (watched hooks) healthy", || async {
            http()
                .get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .await;
    }

    /// Whether the process we spawned is still the one serving (a hooks reload re-execs in place).
    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    async fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
        self.spawn().await;
    }

    fn touch_hooks(&self) {
        let path: &Path = self.hooks.path();
        std::fs::write(
            path.join("zz_reload.pb.js"),
            format!("// reload {:?}\n", Instant::now()),
        )
        .expect("write hook");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocketbase_restart_and_hooks_reload_end_in_a_reconnect() {
    let mut pb = TestPb::start().await;
    pb.kill().await;
    let mut watched = WatchedPb::start(&pb).await;
    let sim = TestSim::start(&SIM_ARGS);
    let bridge = start_bridge(&pb.url, &pb, &sim).await;
    wait_subscribed(&bridge).await;
    let admin = bridge.admin();
    let (tenant, _) = seed(&pb, "restart").await;

    // Kill -9 and restart on the same data dir; change things before the bridge has reconnected.
    let before = metric(&bridge.url, RECONNECTS).await;
    watched.restart().await;
    let t1 = pb
        .create_tenant(
            json!({"name": "after restart", "slug": "after-restart", "status": "active",
        "plan_tier": "team"}),
        )
        .await;
    let p1 = pb
        .patch("tenants", &tenant, json!({"name": "renamed after restart"}))
        .await;
    eventually(WAIT, "a reconnect after the PocketBase restart", || async {
        (metric(&bridge.url, RECONNECTS).await > before).then_some(())
    })
    .await;
    journaled(&admin, &id(&t1), "create", Version::Any, &["realtime", "resync"], WAIT).await;
    journaled(
        &admin,
        &tenant,
        "update",
        Version::AtLeast(&updated(&p1)),
        &["realtime", "resync"],
        WAIT,
    )
    .await;

    // A hooks reload restarts PocketBase's app in the same process and closes every stream.
    wait_subscribed(&bridge).await;
    let before = metric(&bridge.url, RECONNECTS).await;
    let token = pb.superuser_token().await;
    watched.touch_hooks();
    // The create races the reload, so PocketBase may refuse connections for a moment.
    let body = json!({"name": "after reload", "slug": "after-reload", "status": "active", "plan_tier": "team"});
    let t2 = eventually(WAIT, "a tenant created around the hooks reload", || async {
        let resp = http()
            .post(format!("{}/api/collections/tenants/records", pb.url))
            .header("Authorization", &token)
            .json(&body)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<Value>().await.ok()
    })
    .await;
    let deadline = Instant::now() + WAIT;
    while metric(&bridge.url, RECONNECTS).await <= before {
        assert!(
            Instant::now() < deadline,
            "no reconnect after the hooks reload; PocketBase log:\n{}\nbridge log:\n{}",
            std::fs::read_to_string(pb.data_dir.join("watched.log")).unwrap_or_default(),
            bridge.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(watched.running(), "a hooks reload keeps the process");
    let log = std::fs::read_to_string(pb.data_dir.join("watched.log")).unwrap_or_default();
    assert!(
        log.contains("zz_reload.pb.js changed, restarting"),
        "PocketBase did not reload its hooks:\n{log}"
    );
    journaled(&admin, &id(&t2), "create", Version::Any, &["realtime", "resync"], WAIT).await;
    let p2 = pb
        .patch("tenants", &tenant, json!({"name": "renamed after reload"}))
        .await;
    journaled(
        &admin,
        &tenant,
        "update",
        Version::Exactly(&updated(&p2)),
        &["realtime"],
        WAIT,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------------
// 5. 1,000 signed webhooks with the bridge killed in the middle: every acknowledged id is journaled.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_webhooks_survive_kill_9() {
    const TOTAL: usize = 1000;
    const SENDERS: usize = 4;
    const KILL_AFTER: usize = 300;
    let pb = TestPb::start().await;
    let sim = TestSim::start(&SIM_ARGS);
    let mut bridge = start_bridge(&pb.url, &pb, &sim).await;
    let secret: WebhookSecret = WEBHOOK_SECRET.parse().expect("test webhook secret");
    let secret = Arc::new(secret);
    let url = format!("{}/hooks/pocketbase", bridge.url);
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));

    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (secret, url, next, acked, refused) = (
            secret.clone(),
            url.clone(),
            next.clone(),
            acked.clone(),
            refused.clone(),
        );
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= TOTAL {
                    return;
                }
                // Distinct change keys: ten records, each with its own `updated` per delivery.
                let body = json!({"event": "update", "collection": "tenants", "record": {
                    "id": format!("burst{}", n % 10), "updated": format!("2026-01-01 00:00:00.{n:03}Z")}})
                .to_string();
                let delivery = format!("msg_burst_{n}");
                let ts = chrono::Utc::now().timestamp().to_string();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &delivery)
                    .header("webhook-timestamp", &ts)
                    .header("webhook-signature", secret.sign(&delivery, &ts, body.as_bytes()))
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => acked.lock().expect("acked").push(delivery),
                    _ => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    eventually(Duration::from_secs(60), "enough acknowledged webhooks", || async {
        (acked.lock().expect("acked").len() >= KILL_AFTER).then_some(())
    })
    .await;
    bridge.kill9();
    for s in senders {
        s.await.expect("sender");
    }
    let acked: Vec<String> = acked.lock().expect("acked").clone();
    let refused = refused.load(Ordering::SeqCst);
    eprintln!("burst: {} acknowledged, {refused} not", acked.len());
    assert_eq!(acked.len() + refused, TOTAL);
    assert!(refused > 0, "the kill did not land in the middle of the burst");

    let db = rusqlite::Connection::open_with_flags(
        bridge.dir.join("journal.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the journal read-only");
    let mut stmt = db
        .prepare("SELECT delivery_id FROM events WHERE source = 'webhook'")
        .expect("query");
    let stored: HashSet<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("delivery ids");
    drop(stmt);
    drop(db);
    let missing: Vec<&String> = acked.iter().filter(|d| !stored.contains(*d)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged webhooks lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // The bridge starts again on that journal and serves what it holds.
    bridge.start_again().await;
    let admin = bridge.admin();
    let mut seen = HashSet::new();
    for r in 0..10 {
        for e in record_events(&admin, &format!("burst{r}"), Some("webhook")).await {
            if let Some(d) = e["delivery_id"].as_str() {
                seen.insert(d.to_string());
            }
        }
    }
    assert!(
        acked.iter().all(|d| seen.contains(d)),
        "the restarted bridge lists every acknowledged webhook"
    );
}

// ---------------------------------------------------------------------------------------------------
// 6. Wrong superuser password or token: start-up stops with a clear message that holds no secret.

fn bridge_env(dir: &Path, pb_url: &str) -> Vec<(String, String)> {
    [
        ("CF_BRIDGE__POCKETBASE__URL", pb_url.to_string()),
        ("CF_BRIDGE__COOLIFY__URL", "http://127.0.0.1:9".to_string()),
        ("CF_BRIDGE__COOLIFY__TOKEN", "1|unused".to_string()),
        ("CF_BRIDGE__WEBHOOK__SECRET", WEBHOOK_SECRET.to_string()),
        ("CF_BRIDGE__ADMIN__TOKEN", common::bridge::ADMIN_TOKEN.to_string()),
        (
            "CF_BRIDGE__ADMIN__BIND",
            format!("127.0.0.1:{}", common::bridge::free_port()),
        ),
        ("CF_BRIDGE__JOURNAL__PATH", dir.join("journal.db").display().to_string()),
        (
            "CF_BRIDGE__DOMAINS__BASE_DOMAIN",
            common::bridge::BASE_DOMAIN.to_string(),
        ),
        ("CF_BRIDGE__ROUTER__BASE_URL", "https://router.test.example".to_string()),
        ("CF_BRIDGE__LOG__FORMAT", "json".to_string()),
        ("CF_BRIDGE__SECRETS__KEY", common::bridge::SECRETS_KEY.to_string()),
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
    .collect()
}

/// Runs `cf-bridge serve` to its exit; returns (success, stderr).
async fn serve_until_exit(env: &[(String, String)], dir: &Path) -> (bool, String) {
    let config = dir.join("cf-bridge.toml");
    std::fs::write(&config, "# settings come from CF_BRIDGE__* variables\n").expect("config file");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cf-bridge"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cf-bridge");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("cf-bridge should stop on bad credentials, not keep running")
        .expect("cf-bridge output");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pocketbase_credentials_stop_start_up() {
    let pb = TestPb::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = bridge_env(dir.path(), &pb.url);

    let wrong_password = "not-the-password-7f3a9c";
    let mut env = base.clone();
    env.push(("CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL".into(), pb.email.clone()));
    env.push((
        "CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD".into(),
        wrong_password.into(),
    ));
    let (ok, stderr) = serve_until_exit(&env, dir.path()).await;
    assert!(!ok, "start-up must fail; stderr:\n{stderr}");
    assert!(stderr.contains("PocketBase authentication failed"), "{stderr}");
    assert!(stderr.contains("wrong email or password"), "{stderr}");
    assert!(!stderr.contains(wrong_password), "the password leaked: {stderr}");

    // A token PocketBase did not sign (well-formed, unexpired) and one that is not a JWT at all.
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let forged = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(
            r#"{"collectionId":"pbc_3142635823","exp":4102444800,"id":"abcdefghijklmno","refreshable":true,"type":"auth"}"#
        ),
        b64("forged-signature-bytes-0123456789")
    );
    for (token, why) in [
        (forged.as_str(), "rejected the superuser token"),
        ("garbage-token-5d1e8b", "not a well-formed JWT"),
    ] {
        let mut env = base.clone();
        env.push(("CF_BRIDGE__POCKETBASE__TOKEN".into(), token.into()));
        let (ok, stderr) = serve_until_exit(&env, dir.path()).await;
        assert!(!ok, "start-up must fail with token {token:.12}...; stderr:\n{stderr}");
        assert!(stderr.contains("PocketBase authentication failed"), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert!(!stderr.contains(token), "the token leaked: {stderr}");
        // Not even a recognisable part of it.
        assert!(
            !stderr.contains(&token[token.len() - 12..]),
            "part of the token leaked: {stderr}"
        );
    }
}
