//! End-to-end: real PocketBase (schema + hooks), coolify-sim and the cf-bridge process. Each test drives
//! records in PocketBase and checks both PocketBase and the simulator's state.

mod common;

use std::time::Duration;

use common::e2e::{SIM_FAST, World, count, domain, pb_now, text};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn running(r: &Value) -> bool {
    r["status"] == "running"
}

/// The deploy_logs actions of a record with the given status, in order.
fn actions(logs: &[Value], status: &str) -> Vec<String> {
    logs.iter().filter(|l| l["status"] == status).map(|l| text(l, "action").to_string()).collect()
}

fn sim_running(s: &Value) -> bool {
    text(s, "status").starts_with("running")
}

#[tokio::test]
async fn tenant_and_instance_lifecycle() {
    // A visible start delay so `deploying` can be observed between `pending` and `running`.
    let sim_args = [
        "--start-delay-ms", "1000", "--running-delay-ms", "0", "--delete-delay-ms", "300", "--rate-limit", "100000",
    ];
    let w = World::start(&sim_args, &[]).await;

    // Tenant -> project cf-<slug>, uuid written back.
    let tenant = w.create_tenant("acme", "business").await;
    let t = w
        .wait_record("tenants", &tenant, "tenant project uuid", T, |r| !text(r, "coolify_project_uuid").is_empty())
        .await;
    let project = text(&t, "coolify_project_uuid").to_string();
    let projects = w.sim_projects().await;
    let named: Vec<&Value> = projects.iter().filter(|p| p["name"] == "cf-acme").collect();
    assert_eq!(named.len(), 1, "exactly one project cf-acme: {projects:?}");
    assert_eq!(named[0]["uuid"], project.as_str());
    let tlogs = w.deploy_logs(&tenant).await;
    assert_eq!(actions(&tlogs, "success"), vec!["project_create"], "tenant logs: {tlogs:?}");

    // Instance: pending -> deploying -> running, with every bridge-owned field written back.
    let created = w.pb.create_instance(w.instance_body(&tenant, "base-llm", "alpha", "running")).await;
    let alpha = text(&created, "id").to_string();
    assert_eq!(created["status"], "pending", "a new instance starts pending");
    let (seen, a) = w.statuses_until(&alpha, "running", T).await;
    let seen: Vec<&str> = seen.iter().map(String::as_str).filter(|s| *s != "pending").collect();
    assert_eq!(seen, vec!["deploying", "running"], "status sequence after pending");
    let svc_uuid = text(&a, "coolify_service_id").to_string();
    assert!(!svc_uuid.is_empty(), "coolify_service_id written: {a}");
    assert_eq!(text(&a, "coolify_project_id"), project);
    assert_eq!(text(&a, "domain"), domain("alpha"));
    assert!(text(&a, "applied_hash").starts_with("s=running;"), "applied_hash: {a}");
    assert!(!text(&a, "last_healthy_at").is_empty(), "last_healthy_at: {a}");
    assert_eq!(text(&a, "error_message"), "");
    let svc = w.sim_service(&svc_uuid).await.expect("service in the simulator");
    assert_eq!(svc["name"], format!("cf-{alpha}"));
    assert_eq!(svc["project_uuid"], project.as_str());
    assert!(sim_running(&svc), "sim status: {}", svc["status"]);
    let fqdns: Vec<&str> = svc["applications"].as_array().unwrap().iter().filter_map(|c| c["fqdn"].as_str()).collect();
    assert_eq!(fqdns, vec![format!("https://{}:8080", domain("alpha"))], "only the public container has the domain");
    let logs = w.deploy_logs(&alpha).await;
    assert_eq!(actions(&logs, "success"), vec!["deploy"], "alpha logs: {logs:?}");
    assert!(logs[0]["duration_ms"].as_f64().unwrap_or(0.0) >= 900.0, "deploy waited for running: {}", logs[0]);

    // A second instance that should exist but stay stopped.
    let beta = w.create_instance(&tenant, "base-llm", "beta", "stopped").await;
    let b = w.wait_record("bot_instances", &beta, "beta stopped", T, |r| r["status"] == "stopped").await;
    let beta_uuid = text(&b, "coolify_service_id").to_string();
    assert_eq!(text(&w.sim_service(&beta_uuid).await.expect("beta in sim"), "status"), "exited");

    // desired_state stopped, then running again.
    w.pb.patch("bot_instances", &alpha, json!({"desired_state": "stopped"})).await;
    w.wait_record("bot_instances", &alpha, "alpha stopped", T, |r| r["status"] == "stopped").await;
    assert_eq!(text(&w.sim_service(&svc_uuid).await.unwrap(), "status"), "exited");
    w.pb.patch("bot_instances", &alpha, json!({"desired_state": "running"})).await;
    w.wait_record("bot_instances", &alpha, "alpha running again", T, running).await;
    assert!(sim_running(&w.sim_service(&svc_uuid).await.unwrap()));
    assert_eq!(actions(&w.deploy_logs(&alpha).await, "success"), vec!["deploy", "stop", "start"]);

    // A newer restart_requested_at restarts it.
    let restarts_before = count(&w.sim.requests().await, "POST /services/{uuid}/restart");
    w.pb.patch("bot_instances", &alpha, json!({"restart_requested_at": pb_now()})).await;
    w.wait("a restart deploy log", T, || async {
        (actions(&w.deploy_logs(&alpha).await, "success").last().map(String::as_str) == Some("restart")).then_some(())
    })
    .await;
    w.wait_record("bot_instances", &alpha, "alpha running after restart", T, running).await;
    assert_eq!(count(&w.sim.requests().await, "POST /services/{uuid}/restart"), restarts_before + 1);

    // A config change updates the compose and restarts.
    let before = w.sim_service(&svc_uuid).await.unwrap();
    assert!(!text(&before, "compose").contains("openai/e2e-model"));
    let hash_before = text(&w.record("bot_instances", &alpha).await, "applied_hash").to_string();
    w.pb.patch("bot_instances", &alpha, json!({"config": {"MODEL": "openai/e2e-model"}})).await;
    let a = w
        .wait_record("bot_instances", &alpha, "alpha updated", T, |r| running(r) && text(r, "applied_hash") != hash_before)
        .await;
    let after = w.sim_service(&svc_uuid).await.unwrap();
    assert!(text(&after, "compose").contains("openai/e2e-model"), "compose updated: {}", text(&after, "compose"));
    assert!(sim_running(&after));
    assert_eq!(count(&w.sim.requests().await, "POST /services/{uuid}/restart"), restarts_before + 2);
    assert_eq!(text(&a, "coolify_service_id"), svc_uuid, "the same service is updated, not replaced");
    assert_eq!(actions(&w.deploy_logs(&alpha).await, "success").last().map(String::as_str), Some("update"));

    // Tenant suspended stops its services; active again starts only those desired running.
    w.pb.patch("tenants", &tenant, json!({"status": "suspended"})).await;
    w.wait_record("bot_instances", &alpha, "alpha stopped by suspension", T, |r| r["status"] == "stopped").await;
    assert_eq!(text(&w.sim_service(&svc_uuid).await.unwrap(), "status"), "exited");
    w.pb.patch("tenants", &tenant, json!({"status": "active"})).await;
    w.wait_record("bot_instances", &alpha, "alpha running after reactivation", T, running).await;
    assert!(sim_running(&w.sim_service(&svc_uuid).await.unwrap()));
    let b = w.record("bot_instances", &beta).await;
    assert_eq!(b["status"], "stopped", "beta stays stopped: {b}");
    assert_eq!(text(&w.sim_service(&beta_uuid).await.unwrap(), "status"), "exited");

    // Instance deleted -> service destroyed and verified gone.
    w.pb.delete("bot_instances", &beta).await;
    w.wait("beta's service gone from the simulator", T, || async { w.sim_service(&beta_uuid).await.is_none().then_some(()) })
        .await;
    let blogs = w.wait("beta destroy log", T, || async {
        let l = w.deploy_logs(&beta).await;
        l.iter().any(|r| r["action"] == "destroy" && r["status"] == "success").then_some(l)
    })
    .await;
    assert!(blogs.iter().any(|r| text(r, "message").contains(&beta_uuid)), "{blogs:?}");

    // Tenant deleted -> its services, then its project, removed.
    w.pb.delete("tenants", &tenant).await;
    w.wait("alpha's service and the project gone", T, || async {
        let gone_svc = w.sim_service(&svc_uuid).await.is_none();
        let gone_proj = !w.sim_projects().await.iter().any(|p| p["uuid"] == project.as_str());
        (gone_svc && gone_proj).then_some(())
    })
    .await;
    let tlogs = w.wait("project delete log", T, || async {
        let l = w.deploy_logs(&tenant).await;
        l.iter().any(|r| r["action"] == "project_delete" && r["status"] == "success").then_some(l)
    })
    .await;
    let every: Vec<Value> = [w.deploy_logs(&alpha).await, w.deploy_logs(&beta).await, tlogs].concat();
    for row in &every {
        assert!(row["duration_ms"].is_number(), "every deploy_logs row has duration_ms: {row}");
        assert!(!text(row, "message").is_empty(), "every deploy_logs row has a message: {row}");
    }
    let failed: Vec<&Value> = every.iter().filter(|r| r["status"] != "success").collect();
    assert!(failed.is_empty(), "no failed actions in a clean lifecycle: {failed:?}");
}
