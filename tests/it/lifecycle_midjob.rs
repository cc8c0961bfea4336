//! Changes that arrive while the record's job is inside a slow Coolify call (the interleaving the
//! reliability suite's "2 s latency" phase hit once in four runs): the user stops an instance and starts
//! it again while its create (or a config change) runs, then stops it for good. Every change must reach
//! Coolify and PocketBase, with its `deploy_logs` row, by realtime alone and with the webhook hook too.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, text};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);
/// Long enough for two changes to land while the call is held.
const SLOW_CALL_MS: u64 = 2500;

/// Holds `slow_route` while a job for the instance runs, and meanwhile stops the instance and starts it
/// again; then stops it for good and checks that the stop reached Coolify, the record and the log.
async fn undo_mid_job_then_stop(w: &World, id: &str, slow_route: &str, begin: serde_json::Value) {
    w.sim
        .set_fault(json!({"route": slow_route, "latency_ms": SLOW_CALL_MS}))
        .await;
    if !begin.is_null() {
        w.pb.patch("bot_instances", id, begin).await;
    }
    // `deploying` is written before the slow call: the job has read the record and waits on Coolify.
    w.wait_status(id, "deploying", WAIT).await;
    w.pb.patch("bot_instances", id, json!({"desired_state": "stopped"}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.pb.patch("bot_instances", id, json!({"desired_state": "running"}))
        .await;
    let running = w.wait_status(id, "running", WAIT).await;
    w.sim.clear_faults().await;
    let uuid = text(&running, "coolify_service_id").to_string();
    assert!(!uuid.is_empty(), "{running}");
    let rows_before = w.deploy_logs(id).await.len();

    // The same request as the undone change, asked for again once everything settled.
    w.pb.patch("bot_instances", id, json!({"desired_state": "stopped"}))
        .await;
    w.wait_status(id, "stopped", WAIT).await;
    w.wait("the service stopped in Coolify", WAIT, || async {
        let svc = w.sim.service(&uuid).await?;
        (text(&svc, "status") == "exited").then_some(())
    })
    .await;
    let rows = w.deploy_logs(id).await;
    let stops: Vec<_> = rows[rows_before..]
        .iter()
        .filter(|r| r["action"] == "stop" && r["status"] == "success")
        .collect();
    assert_eq!(stops.len(), 1, "one stop row after the last change: {rows:?}");
}

async fn ready_tenant(w: &World) -> String {
    let tenant = w.create_tenant("midjob", "business").await;
    w.wait_record("tenants", &tenant, "the tenant's project", WAIT, |t| {
        !text(t, "coolify_project_uuid").is_empty()
    })
    .await;
    tenant
}

async fn during_create(w: World) {
    let tenant = ready_tenant(&w).await;
    w.sim
        .set_fault(json!({"route": "POST /services", "latency_ms": SLOW_CALL_MS}))
        .await;
    let id = w.create_instance(&tenant, "base-llm", "midjob1", "running").await;
    undo_mid_job_then_stop(&w, &id, "POST /services", serde_json::Value::Null).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_midjob_change_undone_during_create_by_realtime() {
    let w = World::start(SIM_QUICK, &[("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600")]).await;
    during_create(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_midjob_change_undone_during_create_with_webhooks() {
    let w = World::start_with_webhooks(SIM_QUICK, &[("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600")]).await;
    during_create(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_midjob_change_undone_during_a_config_change() {
    let w = World::start(SIM_QUICK, &[("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600")]).await;
    let tenant = ready_tenant(&w).await;
    let id = w.create_instance(&tenant, "base-llm", "midjob2", "running").await;
    w.wait_status(&id, "running", WAIT).await;
    let change = json!({"config": {"MODEL": "openai/other"}});
    undo_mid_job_then_stop(&w, &id, "PATCH /services/{uuid}/envs/bulk", change).await;
}
