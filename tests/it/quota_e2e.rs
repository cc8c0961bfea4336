//! Quotas end to end (real PocketBase, coolify-sim, the bridge in the test process): a starter tenant's third stack
//! waits in `pending` for a slot and deploys once the tenant is upgraded; CPU above the plan's ceiling is
//! refused with a clear message and deploys once lowered.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starter_third_stack_refused_until_upgrade_and_cpu_ceiling_refused() {
    let stack = World::start(SIM_QUICK, &[]).await;
    let small = stack.create_tenant("small", "starter").await;
    let tiny = stack.create_tenant("tiny", "starter").await;
    // Creation order decides which stacks fit: a and b are admitted, c is the third.
    let a = stack
        .create_instance_with(&small, "base-llm", "small-a", json!({}))
        .await;
    let b = stack
        .create_instance_with(&small, "base-llm", "small-b", json!({}))
        .await;
    let c = stack
        .create_instance_with(&small, "base-llm", "small-c", json!({}))
        .await;
    let greedy = stack
        .create_instance_with(&tiny, "base-llm", "tiny-greedy", json!({"cpu_limit": 1.0}))
        .await;

    let third = stack
        .wait_record("bot_instances", &c, "the third stack waiting", WAIT, |r| {
            // It may first wait for the tenant's project, then for a slot.
            r["status"] == "pending"
                && r["pending_reason"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("waiting for a stack slot"))
        })
        .await;
    assert_eq!(
        third["pending_reason"],
        "waiting for a stack slot: quota exceeded: plan starter allows 2 stacks"
    );
    assert_eq!(third["error_message"], "");
    let refused = stack
        .wait_record("bot_instances", &greedy, "the CPU request refused", WAIT, |r| {
            r["status"] == "error"
        })
        .await;
    let msg = refused["error_message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("quota exceeded: requested 1 CPU but plan starter allows at most 0.25 CPU per stack"),
        "{msg}"
    );
    for id in [&a, &b] {
        let r = stack.wait_status(id, "running", WAIT).await;
        assert!(r["coolify_service_id"].as_str().is_some_and(|s| !s.is_empty()));
        // Starter ceiling: the template default (1 CPU, 1024 MB) is clamped to 0.25 CPU / 256 MB.
        let svc = stack.service_of(id).await.expect("admitted stack exists in Coolify");
        let compose = svc["compose"].as_str().unwrap_or_default();
        assert!(
            compose.contains("cpus: \"0.10\"") && compose.contains("cpus: \"0.15\""),
            "{compose}"
        );
    }
    assert!(
        stack.service_of(&c).await.is_none(),
        "a refused stack must not reach Coolify"
    );
    assert!(
        stack.service_of(&greedy).await.is_none(),
        "a refused stack must not reach Coolify"
    );
    let logs = stack
        .pb
        .superuser_request(
            "GET",
            &format!("/api/collections/deploy_logs/records?perPage=50&filter=(record_id='{c}')"),
            None,
        )
        .await;
    let rows = logs["items"].as_array().expect("deploy_logs");
    assert!(
        rows.iter().all(|r| r["status"] != "failed"),
        "waiting for a slot is not a failure: {logs}"
    );

    // The upgrade wakes the tenant's instances (the tenant job fans out); the third one deploys.
    stack.pb.patch("tenants", &small, json!({"plan_tier": "team"})).await;
    let r = stack.wait_status(&c, "running", WAIT).await;
    assert_eq!(r["error_message"], "");
    assert!(stack.service_of(&c).await.is_some());

    // Lowering the request to within the plan lets it deploy.
    stack
        .pb
        .patch("bot_instances", &greedy, json!({"cpu_limit": 0.2}))
        .await;
    stack.wait_status(&greedy, "running", WAIT).await;
    let svc = stack.service_of(&greedy).await.expect("service");
    let compose = svc["compose"].as_str().unwrap_or_default();
    // 0.2 CPU split 0.4 / 0.6 between litellm and webui.
    assert!(
        compose.contains("cpus: \"0.08\"") && compose.contains("cpus: \"0.12\""),
        "{compose}"
    );
}
