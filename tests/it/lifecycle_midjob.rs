//! Changes that arrive while the record's job is inside a slow Coolify call (the interleaving the
//! reliability suite's "2 s latency" phase hit once in four runs): the user stops a new instance and
//! starts it again while its create runs, then stops it for good. Every change must reach Coolify and
//! PocketBase, with its `deploy_logs` row, by realtime alone and with the webhook hook as well.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, text};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);
/// Long enough for two changes to land while the create call is held.
const SLOW_CREATE_MS: u64 = 2500;

async fn stop_after_a_change_undone_mid_create(w: World) {
    let tenant = w.create_tenant("midjob", "business").await;
    w.wait_record("tenants", &tenant, "the tenant's project", WAIT, |t| {
        !text(t, "coolify_project_uuid").is_empty()
    })
    .await;
    w.sim
        .set_fault(json!({"route": "POST /services", "latency_ms": SLOW_CREATE_MS}))
        .await;
    let id = w.create_instance(&tenant, "base-llm", "midjob1", "running").await;
    // `deploying` is written just before the create call: the job has read the record and waits on Coolify.
    w.wait_status(&id, "deploying", WAIT).await;
    w.pb.patch("bot_instances", &id, json!({"desired_state": "stopped"}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    w.pb.patch("bot_instances", &id, json!({"desired_state": "running"}))
        .await;
    let running = w.wait_status(&id, "running", WAIT).await;
    w.sim.clear_faults().await;
    let uuid = text(&running, "coolify_service_id").to_string();
    assert!(!uuid.is_empty(), "{running}");
    let rows_before = w.deploy_logs(&id).await.len();

    // The same request as the undone change, asked for again once everything settled.
    w.pb.patch("bot_instances", &id, json!({"desired_state": "stopped"}))
        .await;
    w.wait_status(&id, "stopped", WAIT).await;
    w.wait("the service stopped in Coolify", WAIT, || async {
        let svc = w.sim.service(&uuid).await?;
        (!text(&svc, "status").starts_with("running")).then_some(())
    })
    .await;
    let rows = w.deploy_logs(&id).await;
    let stops: Vec<_> = rows[rows_before..]
        .iter()
        .filter(|r| r["action"] == "stop" && r["status"] == "success")
        .collect();
    assert_eq!(stops.len(), 1, "one stop row after the last change: {rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_midjob_change_undone_during_create_by_realtime() {
    let w = World::start(SIM_QUICK, &[("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600")]).await;
    stop_after_a_change_undone_mid_create(w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_midjob_change_undone_during_create_with_webhooks() {
    let w = World::start_with_webhooks(SIM_QUICK, &[("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600")]).await;
    stop_after_a_change_undone_mid_create(w).await;
}
