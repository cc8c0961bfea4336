//! End-to-end: real PocketBase (schema + hooks), coolify-sim and the bridge in the test process. Each test
//! drives records in PocketBase and checks both PocketBase and the simulator's state. The kill -9 case is
//! in tests/process/e2e_crash.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cf_testkit::sim::count;
use cf_testkit::world::{SIM_FAST, World, domain, pb_now, text};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// Resync (and the orphan scan) only at start-up, so nothing but events wakes a job.
const NO_RESYNC: (&str, &str) = ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600");

fn running(r: &Value) -> bool {
    r["status"] == "running"
}

/// The deploy_logs actions of a record with the given status, in order.
fn actions(logs: &[Value], status: &str) -> Vec<String> {
    logs.iter()
        .filter(|l| l["status"] == status)
        .map(|l| text(l, "action").to_string())
        .collect()
}

fn sim_running(s: &Value) -> bool {
    text(s, "status").starts_with("running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_and_instance_lifecycle() {
    // A visible start delay so `deploying` can be observed between `pending` and `running`.
    let sim_args = [
        "--start-delay-ms",
        "1000",
        "--running-delay-ms",
        "0",
        "--delete-delay-ms",
        "300",
        "--rate-limit",
        "100000",
    ];
    let w = World::start(&sim_args, &[]).await;

    // Tenant -> project cf-<slug>, uuid written back.
    let tenant = w.create_tenant("acme", "business").await;
    let t = w
        .wait_record("tenants", &tenant, "tenant project uuid", T, |r| {
            !text(r, "coolify_project_uuid").is_empty()
        })
        .await;
    let project = text(&t, "coolify_project_uuid").to_string();
    let projects = w.sim.projects().await;
    let named: Vec<&Value> = projects.iter().filter(|p| p["name"] == "cf-acme").collect();
    assert_eq!(named.len(), 1, "exactly one project cf-acme: {projects:?}");
    assert_eq!(named[0]["uuid"], project.as_str());
    let tlogs = w.deploy_logs(&tenant).await;
    assert_eq!(
        actions(&tlogs, "success"),
        vec!["project_create"],
        "tenant logs: {tlogs:?}"
    );

    // Instance: deploying (its create asks it to run: hooks/pb_hooks/actor.js) -> running, with every
    // bridge-owned field written back.
    let created =
        w.pb.create_instance(w.instance_body(&tenant, "base-llm", "alpha", "running"))
            .await;
    let alpha = text(&created, "id").to_string();
    assert_eq!(
        created["status"], "deploying",
        "a new instance that runs starts deploying"
    );
    let (seen, a) = w.statuses_until(&alpha, "running", T).await;
    assert_eq!(seen, vec!["deploying", "running"], "status sequence");
    let svc_uuid = text(&a, "coolify_service_id").to_string();
    assert!(!svc_uuid.is_empty(), "coolify_service_id written: {a}");
    assert_eq!(text(&a, "coolify_project_id"), project);
    assert_eq!(text(&a, "domain"), domain("alpha"));
    assert!(text(&a, "applied_hash").starts_with("s=running;"), "applied_hash: {a}");
    assert!(!text(&a, "last_healthy_at").is_empty(), "last_healthy_at: {a}");
    assert_eq!(text(&a, "error_message"), "");
    let svc = w.sim.service(&svc_uuid).await.expect("service in the simulator");
    assert_eq!(svc["name"], format!("cf-{alpha}"));
    assert_eq!(svc["project_uuid"], project.as_str());
    assert!(sim_running(&svc), "sim status: {}", svc["status"]);
    let fqdns: Vec<&str> = svc["applications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["fqdn"].as_str())
        .collect();
    assert_eq!(
        fqdns,
        vec![format!("https://{}:8080", domain("alpha"))],
        "only the public container has the domain"
    );
    let logs = w.deploy_logs(&alpha).await;
    assert_eq!(actions(&logs, "success"), vec!["deploy"], "alpha logs: {logs:?}");
    assert!(
        logs[0]["duration_ms"].as_f64().unwrap_or(0.0) >= 900.0,
        "deploy waited for running: {}",
        logs[0]
    );

    // A second instance that should exist but stay stopped.
    let beta = w.create_instance(&tenant, "base-llm", "beta", "stopped").await;
    let b = w
        .wait_record("bot_instances", &beta, "beta stopped", T, |r| r["status"] == "stopped")
        .await;
    let beta_uuid = text(&b, "coolify_service_id").to_string();
    assert_eq!(
        text(&w.sim.service(&beta_uuid).await.expect("beta in sim"), "status"),
        "exited"
    );

    // desired_state stopped, then running again.
    w.pb.patch("bot_instances", &alpha, json!({"desired_state": "stopped"}))
        .await;
    w.wait_record("bot_instances", &alpha, "alpha stopped", T, |r| {
        r["status"] == "stopped"
    })
    .await;
    assert_eq!(text(&w.sim.service(&svc_uuid).await.unwrap(), "status"), "exited");
    w.pb.patch("bot_instances", &alpha, json!({"desired_state": "running"}))
        .await;
    w.wait_record("bot_instances", &alpha, "alpha running again", T, running)
        .await;
    assert!(sim_running(&w.sim.service(&svc_uuid).await.unwrap()));
    assert_eq!(
        actions(&w.deploy_logs(&alpha).await, "success"),
        vec!["deploy", "stop", "start"]
    );

    // A newer restart_requested_at restarts it.
    let restarts_before = count(&w.sim.requests().await, "POST /services/{uuid}/restart");
    w.pb.patch("bot_instances", &alpha, json!({"restart_requested_at": pb_now()}))
        .await;
    w.wait("a restart deploy log", T, || async {
        (actions(&w.deploy_logs(&alpha).await, "success")
            .last()
            .map(String::as_str)
            == Some("restart"))
        .then_some(())
    })
    .await;
    w.wait_record("bot_instances", &alpha, "alpha running after restart", T, running)
        .await;
    assert_eq!(
        count(&w.sim.requests().await, "POST /services/{uuid}/restart"),
        restarts_before + 1
    );

    // A config change updates the compose and redeploys it in the same call (`instant_deploy`).
    let patches_before = count(&w.sim.requests().await, "PATCH /services/{uuid}");
    let before = w.sim.service(&svc_uuid).await.unwrap();
    assert!(!text(&before, "compose").contains("openai/e2e-model"));
    let hash_before = text(&w.record("bot_instances", &alpha).await, "applied_hash").to_string();
    w.pb.patch(
        "bot_instances",
        &alpha,
        json!({"config": {"MODEL": "openai/e2e-model"}}),
    )
    .await;
    let a = w
        .wait_record("bot_instances", &alpha, "alpha updated", T, |r| {
            running(r) && text(r, "applied_hash") != hash_before
        })
        .await;
    let after = w.sim.service(&svc_uuid).await.unwrap();
    assert!(
        text(&after, "compose").contains("openai/e2e-model"),
        "compose updated: {}",
        text(&after, "compose")
    );
    assert!(sim_running(&after));
    let requests = w.sim.requests().await;
    assert_eq!(
        count(&requests, "POST /services/{uuid}/restart"),
        restarts_before + 1,
        "no separate restart"
    );
    let patches: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"] == "PATCH /services/{uuid}")
        .collect();
    assert_eq!(patches.len(), patches_before + 1);
    assert_eq!(patches[patches_before]["request"]["instant_deploy"], true);
    assert_eq!(
        text(&a, "coolify_service_id"),
        svc_uuid,
        "the same service is updated, not replaced"
    );
    assert_eq!(
        actions(&w.deploy_logs(&alpha).await, "success")
            .last()
            .map(String::as_str),
        Some("update")
    );

    // Tenant suspended stops its services; active again starts only those desired running.
    w.pb.patch("tenants", &tenant, json!({"status": "suspended"})).await;
    w.wait_record("bot_instances", &alpha, "alpha stopped by suspension", T, |r| {
        r["status"] == "stopped"
    })
    .await;
    assert_eq!(text(&w.sim.service(&svc_uuid).await.unwrap(), "status"), "exited");
    w.pb.patch("tenants", &tenant, json!({"status": "active"})).await;
    w.wait_record("bot_instances", &alpha, "alpha running after reactivation", T, running)
        .await;
    assert!(sim_running(&w.sim.service(&svc_uuid).await.unwrap()));
    let b = w.record("bot_instances", &beta).await;
    assert_eq!(b["status"], "stopped", "beta stays stopped: {b}");
    assert_eq!(text(&w.sim.service(&beta_uuid).await.unwrap(), "status"), "exited");

    // Instance deleted -> service destroyed and verified gone.
    w.pb.delete("bot_instances", &beta).await;
    w.wait("beta's service gone from the simulator", T, || async {
        w.sim.service(&beta_uuid).await.is_none().then_some(())
    })
    .await;
    let blogs = w
        .wait("beta destroy log", T, || async {
            let l = w.deploy_logs(&beta).await;
            l.iter()
                .any(|r| r["action"] == "destroy" && r["status"] == "success")
                .then_some(l)
        })
        .await;
    assert!(
        blogs.iter().any(|r| text(r, "message").contains(&beta_uuid)),
        "{blogs:?}"
    );

    // Tenant deleted -> its services, then its project, removed.
    w.pb.delete("tenants", &tenant).await;
    w.wait("alpha's service and the project gone", T, || async {
        let gone_svc = w.sim.service(&svc_uuid).await.is_none();
        let gone_proj = !w.sim.projects().await.iter().any(|p| p["uuid"] == project.as_str());
        (gone_svc && gone_proj).then_some(())
    })
    .await;
    let tlogs = w
        .wait("project delete log", T, || async {
            let l = w.deploy_logs(&tenant).await;
            l.iter()
                .any(|r| r["action"] == "project_delete" && r["status"] == "success")
                .then_some(l)
        })
        .await;
    let every: Vec<Value> = [w.deploy_logs(&alpha).await, w.deploy_logs(&beta).await, tlogs].concat();
    for row in &every {
        assert!(
            row["duration_ms"].is_number(),
            "every deploy_logs row has duration_ms: {row}"
        );
        assert!(
            !text(row, "message").is_empty(),
            "every deploy_logs row has a message: {row}"
        );
    }
    let failed: Vec<&Value> = every.iter().filter(|r| r["status"] != "success").collect();
    assert!(failed.is_empty(), "no failed actions in a clean lifecycle: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_instances_across_five_tenants_end_as_fifty_services() {
    // No periodic resync: instances waiting for their tenant's project must be woken by the tenant.
    let w = World::start(SIM_FAST, &[NO_RESYNC]).await;
    let mut tenants: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..5 {
        let slug = format!("scale{i}");
        tenants.insert(w.create_tenant(&slug, "business").await, slug);
    }
    // All 50 at once, without waiting for the tenants' projects: those instances wait and are woken.
    let bodies: Vec<Value> = tenants
        .keys()
        .flat_map(|t| (0..10).map(move |j| (t.clone(), j)))
        .map(|(t, j)| w.instance_body(&t, "base-llm", &format!("{}-bot{j}", tenants[&t]), "running"))
        .collect();
    let ids = w.pb.batch_create("bot_instances", &bodies).await;
    assert_eq!(ids.len(), 50);

    let all = w
        .wait("all 50 instances running", Duration::from_secs(90), || async {
            let items = w.list("bot_instances", "status = 'running'").await;
            (items.len() == 50).then_some(items)
        })
        .await;
    let project_of: BTreeMap<String, String> = w
        .list("tenants", "")
        .await
        .iter()
        .map(|t| (text(t, "id").to_string(), text(t, "coolify_project_uuid").to_string()))
        .collect();
    let services = w.sim.services().await;
    let cf: Vec<&Value> = services.iter().filter(|s| text(s, "name").starts_with("cf-")).collect();
    assert_eq!(cf.len(), 50, "exactly 50 services");
    let names: BTreeSet<String> = cf.iter().map(|s| text(s, "name").to_string()).collect();
    let expected: BTreeSet<String> = ids.iter().map(|id| format!("cf-{id}")).collect();
    assert_eq!(names, expected, "one service per instance, none duplicated");
    for inst in &all {
        let svc = cf
            .iter()
            .find(|s| s["uuid"] == inst["coolify_service_id"])
            .unwrap_or_else(|| panic!("service of {} not found", inst["id"]));
        let project = &project_of[text(inst, "tenant")];
        assert_eq!(text(svc, "project_uuid"), project, "service in its tenant's project");
        assert_eq!(text(inst, "coolify_project_id"), project);
        assert!(
            sim_running(svc),
            "the service of {} is not running: {}",
            inst["id"],
            svc["status"]
        );
    }
    let projects = w.sim.projects().await;
    for slug in tenants.values() {
        assert_eq!(
            projects.iter().filter(|p| p["name"] == format!("cf-{slug}")).count(),
            1,
            "one project per tenant"
        );
    }
}

/// The instance's event for the record version `updated`, once it is done.
async fn done_event(w: &World, inst: &str, updated: &str) -> Option<Value> {
    let (_, v) = w
        .bridge
        .admin()
        .get(&format!("/admin/events?record={inst}&limit=100"))
        .await;
    let events = v["events"].as_array().cloned().unwrap_or_default();
    events
        .into_iter()
        .find(|e| e["record_updated"] == updated && e["status"] == "done")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridges_own_write_back_causes_no_coolify_request() {
    let quiet = [("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "3600"), NO_RESYNC];
    let w = World::start(SIM_FAST, &quiet).await;
    let tenant = w.create_tenant("quiet", "business").await;
    w.wait_record("tenants", &tenant, "project", T, |r| {
        !text(r, "coolify_project_uuid").is_empty()
    })
    .await;
    let inst = w.create_instance(&tenant, "base-llm", "quiet", "running").await;
    let r = w.wait_record("bot_instances", &inst, "running", T, running).await;
    let updated = text(&r, "updated").to_string();
    // Wait until the event of the final write-back (that exact `updated`) has been processed.
    let echo = w
        .wait("the write-back's event processed", T, || {
            done_event(&w, &inst, &updated)
        })
        .await;
    // It asks for nothing new, so it is journaled without a job (no reconcile, no PocketBase reads).
    assert!(echo["job_id"].is_null(), "the write-back's echo made a job: {echo}");
    // Also let anything queued behind it run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, jobs) = w.bridge.admin().get("/admin/jobs?state=waiting,running,failed").await;
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(0), "no job left: {jobs}");

    // The deploy's last Coolify request is the first status read after the start that saw `running`;
    // the write-back follows it, and nothing may follow in Coolify.
    let log = w.sim.requests().await;
    let started = log
        .iter()
        .position(|e| e["path"] == "POST /deploy")
        .expect("the deploy started the service");
    let running_read = started
        + 1
        + log[started + 1..]
            .iter()
            .position(|e| {
                let running = |v: &Value| text(v, "status").starts_with("running");
                match e["path"].as_str() {
                    Some("GET /services/{uuid}") => running(&e["response"]),
                    // Reconciles waiting for running:* share one list call.
                    Some("GET /services") => e["response"].as_array().is_some_and(|l| l.iter().any(running)),
                    _ => false,
                }
            })
            .expect("the deploy read the running status");
    let after: Vec<String> = log[running_read + 1..]
        .iter()
        .map(|e| text(e, "path").to_string())
        .collect();
    assert!(after.is_empty(), "Coolify requests after the write-back: {after:?}");

    // The health poller's refresh of last_healthy_at is an echo too; a user's change is not.
    let healthy =
        w.pb.patch(
            "bot_instances",
            &inst,
            json!({"last_healthy_at": "2026-11-23 10:00:00.000Z"}),
        )
        .await;
    let refresh = w
        .wait("the health refresh journaled", T, || {
            done_event(&w, &inst, text(&healthy, "updated"))
        })
        .await;
    assert!(refresh["job_id"].is_null(), "a health refresh made a job: {refresh}");
    let renamed =
        w.pb.patch("bot_instances", &inst, json!({"name": "quiet renamed"}))
            .await;
    let change = w
        .wait("the rename processed", T, || {
            done_event(&w, &inst, text(&renamed, "updated"))
        })
        .await;
    assert!(change["job_id"].is_i64(), "a user's change must make a job: {change}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_conflict_is_an_error_and_heals_on_a_new_subdomain() {
    let w = World::start(SIM_FAST, &[]).await;
    let taken = domain("taken");
    let (_, foreign) = w
        .sim_create_foreign("someone-else", "manual-site", &format!("https://{taken}"))
        .await;
    w.sim.clear_requests().await;
    let tenant = w.create_tenant("clash", "business").await;
    w.wait_record("tenants", &tenant, "project", T, |r| {
        !text(r, "coolify_project_uuid").is_empty()
    })
    .await;
    let inst = w.create_instance(&tenant, "base-llm", "taken", "running").await;
    let r = w
        .wait_record("bot_instances", &inst, "error", T, |r| r["status"] == "error")
        .await;
    // What holds the domain is told to operators only (tests/security_errors.rs).
    let msg = text(&r, "error_message");
    assert!(msg.contains("domain is already in use"), "{msg}");
    assert!(!msg.contains("manual-site"), "{msg}");

    // No fast retry loop: a conflict waits for the record to change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let creates = count(&w.sim.requests().await, "POST /services");
    let failed = actions(&w.deploy_logs(&inst).await, "failed");
    // The first attempt's own error write-back wakes the job once more; after that it waits.
    assert!(creates <= 2, "the create is not retried in a loop: {creates} attempts");
    assert!(!failed.is_empty() && failed.len() <= 2, "failed rows: {failed:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&w.sim.requests().await, "POST /services"),
        creates,
        "still no retry"
    );

    w.pb.patch("bot_instances", &inst, json!({"subdomain": "free"})).await;
    let r = w.wait_record("bot_instances", &inst, "healed", T, running).await;
    assert_eq!(text(&r, "domain"), domain("free"));
    assert_eq!(text(&r, "error_message"), "");
    let svc = w.sim.service(text(&r, "coolify_service_id")).await.expect("service");
    assert!(sim_running(&svc));
    assert!(
        w.sim.service(&foreign).await.is_some(),
        "the foreign service is untouched"
    );
}

/// Starts a bridge with the given orphan policy and a 1 s scan interval on the world's PocketBase and sim.
async fn orphan_world(policy: &str) -> World {
    World::start(
        SIM_FAST,
        &[
            ("CF_BRIDGE__RECONCILE__ORPHANS", policy),
            ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "1"),
        ],
    )
    .await
}

async fn orphan_gauge(w: &World, kind: &str) -> Option<f64> {
    let text = cf_testkit::http()
        .get(format!("{}/metrics", w.bridge.url))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("cf_bridge_coolify_orphans{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reported_and_removed_only_when_the_policy_says_so() {
    for policy in ["report", "remove"] {
        let w = orphan_world(policy).await;
        let tenant = w.create_tenant("live", "business").await;
        let inst = w.create_instance(&tenant, "base-llm", "live", "running").await;
        let r = w
            .wait_record("bot_instances", &inst, "live instance running", T, running)
            .await;
        let live_uuid = text(&r, "coolify_service_id").to_string();
        let (ghost_project, ghost) = w
            .sim_create_foreign(
                "cf-ghost",
                "cf-norecord0000001",
                &format!("https://{}", domain("ghost")),
            )
            .await;
        let (_, foreign) = w
            .sim_create_foreign("manual", "not-ours", &format!("https://{}", domain("manual")))
            .await;

        w.wait("the orphan reported in the log and the metric", T, || async {
            let logged = w.bridge.log().contains("cf-norecord0000001");
            (logged && orphan_gauge(&w, "service").await == Some(1.0)).then_some(())
        })
        .await;
        assert!(w.bridge.log().contains("orphan in Coolify"), "{}", w.log_tail(40));
        if policy == "report" {
            // Several scans later, still there.
            tokio::time::sleep(Duration::from_secs(4)).await;
            assert!(
                w.sim.service(&ghost).await.is_some(),
                "report-only leaves the orphan alone"
            );
            assert!(
                w.sim
                    .projects()
                    .await
                    .iter()
                    .any(|p| p["uuid"] == ghost_project.as_str())
            );
        } else {
            w.wait("the orphan service and project removed", T, || async {
                let svc_gone = w.sim.service(&ghost).await.is_none();
                let proj_gone = !w
                    .sim
                    .projects()
                    .await
                    .iter()
                    .any(|p| p["uuid"] == ghost_project.as_str());
                (svc_gone && proj_gone).then_some(())
            })
            .await;
            // Removed only after two scans reported it.
            let log = w.bridge.log();
            let lines: Vec<&str> = log.lines().collect();
            let removed_at = lines
                .iter()
                .position(|l| l.contains("orphan removed") && l.contains("cf-norecord0000001"))
                .expect("removal logged");
            let reports = lines[..removed_at]
                .iter()
                .filter(|l| l.contains("orphan in Coolify") && l.contains("cf-norecord0000001"))
                .count();
            assert!(reports >= 2, "reported {reports} time(s) before removal");
        }
        assert!(
            w.sim.service(&live_uuid).await.is_some(),
            "a live instance's service is never an orphan"
        );
        assert!(
            w.sim.service(&foreign).await.is_some(),
            "resources not named cf-* are not ours"
        );
        let r = w.record("bot_instances", &inst).await;
        assert_eq!(r["status"], "running");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_instances_wake_on_secrets_and_tenant_changes() {
    // No periodic resync, so only the secrets replay and the tenant fan-out can wake the instances.
    let w = World::start(SIM_FAST, &[NO_RESYNC]).await;
    let tenant = w.create_tenant("blocked", "starter").await;
    w.wait_record("tenants", &tenant, "project", T, |r| {
        !text(r, "coolify_project_uuid").is_empty()
    })
    .await;

    // Missing secrets: pending with the names, until PUT secrets replays the record.
    let bot = w.create_instance(&tenant, "telegram-bot", "tg", "running").await;
    let r = w
        .wait_record("bot_instances", &bot, "waiting for secrets", T, |r| {
            text(r, "pending_reason").contains("TELEGRAM_BOT_TOKEN")
        })
        .await;
    assert_eq!(r["status"], "pending");
    assert!(w.sim.services_named(&format!("cf-{bot}")).await.is_empty());
    let (code, body) = w
        .bridge
        .admin()
        .send(
            reqwest::Method::PUT,
            &format!("/admin/instances/{bot}/secrets"),
            json!({"TELEGRAM_BOT_TOKEN": "e2e-token-value"}),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    let r = w
        .wait_record("bot_instances", &bot, "tg running after secrets", T, running)
        .await;
    assert!(!text(&r, "secrets_hash").is_empty());
    let svc = w.sim.service(text(&r, "coolify_service_id")).await.expect("tg service");
    assert!(
        svc["envs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["key"] == "TELEGRAM_BOT_TOKEN")
    );

    // Quota: starter allows 2 stacks; the third waits for a slot until the tenant's plan changes.
    let second = w.create_instance(&tenant, "base-llm", "second", "running").await;
    w.wait_record("bot_instances", &second, "second running", T, running)
        .await;
    let third = w.create_instance(&tenant, "base-llm", "third", "running").await;
    let r = w
        .wait_record("bot_instances", &third, "third waiting", T, |r| {
            r["status"] == "pending" && text(r, "pending_reason").contains("quota")
        })
        .await;
    assert_eq!(text(&r, "error_message"), "", "{r}");
    assert!(w.sim.services_named(&format!("cf-{third}")).await.is_empty());
    w.pb.patch("tenants", &tenant, json!({"plan_tier": "team"})).await;
    w.wait_record(
        "bot_instances",
        &third,
        "third running after the plan change",
        T,
        running,
    )
    .await;
    assert_eq!(w.sim.services_named(&format!("cf-{third}")).await.len(), 1);
    // The wake-up is journaled as the tenant's, not dressed up as a resync.
    let (code, body) = w
        .bridge
        .admin()
        .get(&format!("/admin/events?source=tenant&record={third}"))
        .await;
    assert_eq!(code, 200, "{body}");
    let events = body["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["payload"]["tenant"] == tenant.as_str()),
        "no tenant event for {third}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_with_backoff_and_heals() {
    let w = World::start(SIM_FAST, &[NO_RESYNC]).await;
    let tenant = w.create_tenant("flaky", "business").await;
    w.wait_record("tenants", &tenant, "project", T, |r| {
        !text(r, "coolify_project_uuid").is_empty()
    })
    .await;
    // The created service's start is a batch deploy; a retry starts it or redeploys it with its compose
    // (PATCH with `instant_deploy`): all fail.
    w.sim
        .set_fault(json!([
            {"route": "POST /deploy", "error_rate": 1.0},
            {"route": "POST /services/{uuid}/start", "error_rate": 1.0},
            {"route": "PATCH /services/{uuid}", "error_rate": 1.0}
        ]))
        .await;
    let inst = w.create_instance(&tenant, "base-llm", "flaky", "running").await;
    let r = w
        .wait_record("bot_instances", &inst, "error", T, |r| r["status"] == "error")
        .await;
    assert!(!text(&r, "error_message").is_empty(), "{r}");

    // Over 4 s the retries back off (200 ms doubling to 2 s): a handful of attempts, not a loop.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let failed = actions(&w.deploy_logs(&inst).await, "failed").len();
    assert!((2..=8).contains(&failed), "failed attempts in ~4 s: {failed}");
    let creates = count(&w.sim.requests().await, "POST /services");
    assert_eq!(creates, 1, "retries reuse the created service");

    w.sim.clear_faults().await;
    let r = w.wait_record("bot_instances", &inst, "healed", T, running).await;
    assert_eq!(text(&r, "error_message"), "");
    assert_eq!(w.sim.services_named(&format!("cf-{inst}")).await.len(), 1);
}
