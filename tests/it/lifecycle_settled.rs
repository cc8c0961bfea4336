//! A status no run settles: when a change is taken back and the record again asks for the spec Coolify
//! already runs, the status a cut-short or refused run left behind (`deploying`, an action's `error`)
//! must still be written over. The reliability suite's kill -9 scenario once left an instance
//! `deploying` this way: the killed run had marked it, and the record then asked for the applied spec.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, text};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

async fn settled(w: &World, id: &str, status: &str) -> Value {
    w.wait_record("bot_instances", id, status, WAIT, |r| {
        r["status"] == status && text(r, "error_message").is_empty() && text(r, "pending_reason").is_empty()
    })
    .await
}

async fn ready_tenant(w: &World, slug: &str) -> String {
    let tenant = w.create_tenant(slug, "business").await;
    w.wait_record("tenants", &tenant, "the tenant's project", WAIT, |t| {
        !text(t, "coolify_project_uuid").is_empty()
    })
    .await;
    tenant
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_taken_back_leaves_no_error_behind() {
    let w = World::start(SIM_QUICK, &[("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600")]).await;
    let tenant = ready_tenant(&w, "takeback").await;
    let id = w.create_instance(&tenant, "base-llm", "takeback1", "stopped").await;
    let uuid = text(&settled(&w, &id, "stopped").await, "coolify_service_id").to_string();

    w.sim
        .set_fault(json!({"route": "POST /services/{uuid}/start", "error_rate": 1.0}))
        .await;
    w.pb.patch("bot_instances", &id, json!({"desired_state": "running"}))
        .await;
    let failed = w
        .wait_record("bot_instances", &id, "the start refused", WAIT, |r| {
            r["status"] == "error"
        })
        .await;
    assert!(!text(&failed, "error_message").is_empty(), "{failed}");

    // Taken back: the record asks again for the spec Coolify runs. Nothing is left to do in Coolify, but
    // the record must not keep showing the refused start.
    w.pb.patch("bot_instances", &id, json!({"desired_state": "stopped"}))
        .await;
    let r = settled(&w, &id, "stopped").await;
    assert_eq!(text(&r, "coolify_service_id"), uuid);
    let svc = w.sim.service(&uuid).await.expect("the service is still there");
    assert_eq!(text(&svc, "status"), "exited", "the service is stopped");
    let rows = w.deploy_logs(&id).await;
    assert!(
        rows.last()
            .is_some_and(|row| row["status"] == "success" && text(row, "message").contains("shows it again")),
        "the last row says the record shows the service's state again: {rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_taken_back_leaves_no_error_behind() {
    let w = World::start(SIM_QUICK, &[("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600")]).await;
    let tenant = ready_tenant(&w, "refused").await;
    let id = w.create_instance(&tenant, "base-llm", "refused1", "running").await;
    let before = settled(&w, &id, "running").await;
    let cpu = before["cpu_limit"].clone();

    // Above every plan's ceiling: refused, which needs a person, so the record shows `error`.
    w.pb.patch("bot_instances", &id, json!({"cpu_limit": 64.0})).await;
    let refused = w
        .wait_record("bot_instances", &id, "the request refused", WAIT, |r| {
            r["status"] == "error"
        })
        .await;
    assert!(
        text(&refused, "error_message").starts_with("quota exceeded"),
        "{refused}"
    );

    w.pb.patch("bot_instances", &id, json!({"cpu_limit": cpu})).await;
    let r = settled(&w, &id, "running").await;
    assert_eq!(text(&r, "coolify_service_id"), text(&before, "coolify_service_id"));
    assert_eq!(text(&r, "applied_hash"), text(&before, "applied_hash"));
}
