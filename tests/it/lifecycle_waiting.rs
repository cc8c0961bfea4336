//! Waiting is not an error (issue 19 item 5), end to end (real PocketBase, coolify-sim, the bridge in the
//! test process): an instance waiting for its secrets, its tenant's Coolify project or a stack slot of its
//! plan stays `pending` with the reason in `pending_reason`, shows no `error_message` and writes no failed
//! `deploy_logs` row; once the cause goes, it deploys and the reason is cleared. `error` stays for what
//! needs a person (a resource request above the plan).

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, text};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

/// A waiting record: `pending`, the reason shown, nothing in `error_message`.
fn waits_for(r: &Value, reason: &str) -> bool {
    r["status"] == "pending" && text(r, "pending_reason") == reason && text(r, "error_message").is_empty()
}

async fn assert_no_failed_rows(w: &World, id: &str) {
    let rows = w.deploy_logs(id).await;
    assert!(
        rows.iter().all(|r| r["status"] != "failed"),
        "waiting is not a failure: {rows:?}"
    );
}

async fn assert_deployed(w: &World, id: &str) {
    let r = w.wait_status(id, "running", WAIT).await;
    assert_eq!(text(&r, "pending_reason"), "", "{r}");
    assert_eq!(text(&r, "error_message"), "", "{r}");
    assert!(w.service_of(id).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_secrets_is_pending_with_the_reason() {
    let w = World::start(SIM_QUICK, &[]).await;
    let tenant = w.create_tenant("secretless", "team").await;
    let id = w
        .create_instance(&tenant, "telegram-bot", "secretless", "running")
        .await;
    let reason = "waiting for secrets: TELEGRAM_BOT_TOKEN";
    w.wait_record("bot_instances", &id, reason, WAIT, |r| waits_for(r, reason))
        .await;
    assert!(w.service_of(&id).await.is_none());
    assert_no_failed_rows(&w, &id).await;

    let (code, body) = w
        .bridge
        .admin()
        .put_secrets(&id, json!({"TELEGRAM_BOT_TOKEN": "123456:waiting-token"}))
        .await;
    assert_eq!(code, 202, "{body}");
    assert_deployed(&w, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_tenants_project_is_pending_with_the_reason() {
    let w = World::start(SIM_QUICK, &[]).await;
    // Coolify refuses projects for now: the tenant's job keeps retrying, its instance waits.
    w.sim
        .set_fault(json!({"route": "POST /projects", "error_rate": 1.0}))
        .await;
    let tenant = w.create_tenant("projectless", "team").await;
    let id = w.create_instance(&tenant, "base-llm", "projectless", "running").await;
    let reason = "waiting for the tenant's Coolify project";
    w.wait_record("bot_instances", &id, reason, WAIT, |r| waits_for(r, reason))
        .await;
    assert_no_failed_rows(&w, &id).await;

    w.sim.clear_faults().await;
    assert_deployed(&w, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_stack_slot_is_pending_and_a_request_above_the_plan_is_an_error() {
    let w = World::start(SIM_QUICK, &[]).await;
    let tenant = w.create_tenant("crowded", "starter").await;
    for sub in ["crowded-a", "crowded-b"] {
        let id = w.create_instance(&tenant, "base-llm", sub, "running").await;
        w.wait_status(&id, "running", WAIT).await;
    }
    let third = w.create_instance(&tenant, "base-llm", "crowded-c", "running").await;
    let reason = "waiting for a stack slot: quota exceeded: plan starter allows 2 stacks";
    w.wait_record("bot_instances", &third, reason, WAIT, |r| waits_for(r, reason))
        .await;
    assert!(w.service_of(&third).await.is_none());
    assert_no_failed_rows(&w, &third).await;

    // A request above the plan's ceiling needs a person: that one is an error, with its failed row.
    let other = w.create_tenant("greedy", "starter").await;
    let greedy = w
        .create_instance_with(&other, "base-llm", "greedy", json!({"cpu_limit": 1.0}))
        .await;
    let r = w
        .wait_record("bot_instances", &greedy, "the CPU request refused", WAIT, |r| {
            r["status"] == "error"
        })
        .await;
    assert!(
        text(&r, "error_message").starts_with("quota exceeded: requested 1 CPU"),
        "{r}"
    );
    assert_eq!(text(&r, "pending_reason"), "");
    assert!(w.deploy_logs(&greedy).await.iter().any(|r| r["status"] == "failed"));

    // A larger plan frees a slot: the waiting instance deploys.
    w.pb.patch("tenants", &tenant, json!({"plan_tier": "team"})).await;
    assert_deployed(&w, &third).await;
}
