//! Issue 17: PocketBase's webhook hook posts creates, deletes and updates of person-owned fields, never the
//! bridge's own write-backs (which realtime still carries). Counted by the bridge's webhook metric: each
//! POST of the hook is one received webhook event.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World};
use serde_json::json;

const WEBHOOKS: &str = "cf_bridge_events_received_total{source=\"webhook\"}";

async fn webhooks_settled(stack: &World) -> f64 {
    // The hook posts after PocketBase commits; a reader may see the record a moment before the POST lands.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stack.bridge.admin().metric(WEBHOOKS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_write_backs_post_no_webhook_and_person_edits_do() {
    let stack = World::start_with_webhooks(SIM_QUICK, &[]).await;
    stack.bridge.admin().wait_subscribed(Duration::from_secs(10)).await;
    let tenant = stack.create_tenant("hooked", "business").await;
    let id = stack.create_instance(&tenant, "base-llm", "hooked", "running").await;
    let running = stack.wait_status(&id, "running", Duration::from_secs(40)).await;
    assert!(running["coolify_service_id"].as_str().is_some_and(|s| !s.is_empty()));
    let tenant_rec = stack.record("tenants", &tenant).await;
    assert!(
        tenant_rec["coolify_project_uuid"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    // Two creates; the tenant's project write-back and the instance's pending, deploying and running
    // write-backs post nothing.
    assert_eq!(webhooks_settled(&stack).await, 2.0, "{}", stack.log_tail(40));

    // A person's edit posts once, whatever the field's type (JSON, date, select); the bridge's
    // write-backs that carry it out post nothing.
    let applied = |r: &serde_json::Value| r["applied_hash"].as_str().unwrap_or_default().to_string();
    let before = applied(&running);
    stack
        .pb
        .patch("bot_instances", &id, json!({"config": {"MODEL": "other"}}))
        .await;
    let updated = stack
        .wait_record(
            "bot_instances",
            &id,
            "the config applied",
            Duration::from_secs(40),
            |r| applied(r) != before && r["status"] == "running",
        )
        .await;
    assert_eq!(webhooks_settled(&stack).await, 3.0);
    stack
        .pb
        .patch(
            "bot_instances",
            &id,
            json!({"restart_requested_at": "2026-01-02 03:04:05.000Z"}),
        )
        .await;
    stack
        .wait_record(
            "bot_instances",
            &id,
            "the restart applied",
            Duration::from_secs(40),
            |r| applied(r) != applied(&updated) && r["status"] == "running",
        )
        .await;
    assert_eq!(webhooks_settled(&stack).await, 4.0);
    stack
        .pb
        .patch("bot_instances", &id, json!({"desired_state": "stopped"}))
        .await;
    stack.wait_status(&id, "stopped", Duration::from_secs(40)).await;
    assert_eq!(webhooks_settled(&stack).await, 5.0);

    // A write of bridge-owned fields alone (as the bridge's batch write-back makes) posts nothing.
    stack
        .pb
        .patch(
            "bot_instances",
            &id,
            json!({"last_healthy_at": "2026-01-02 03:04:05.000Z"}),
        )
        .await;
    stack.pb.patch("tenants", &tenant, json!({"bridge_error": "x"})).await;
    assert_eq!(webhooks_settled(&stack).await, 5.0);

    // Person-owned fields of a tenant post; a delete always posts.
    stack.pb.patch("tenants", &tenant, json!({"name": "Renamed"})).await;
    assert_eq!(webhooks_settled(&stack).await, 6.0);
    stack.pb.delete("bot_instances", &id).await;
    assert_eq!(webhooks_settled(&stack).await, 7.0);
}
