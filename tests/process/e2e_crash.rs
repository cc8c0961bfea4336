//! A crash between a create and its write-back (moved from e2e_reconcile): the bridge process is killed
//! with -9 and started again, and exactly one service exists.

use std::time::Duration;

use cf_testkit::sim::count;
use cf_testkit::world::{SIM_FAST, World, text};
use serde_json::{Value, json};

use crate::bridge_bin;

const T: Duration = Duration::from_secs(30);

fn running(r: &Value) -> bool {
    r["status"] == "running"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_create_and_write_back_leaves_exactly_one_service() {
    let mut w = World::start_process(bridge_bin(), SIM_FAST, &[]).await;
    let tenant = w.create_tenant("crash", "business").await;
    w.wait_record("tenants", &tenant, "project", T, |r| {
        !text(r, "coolify_project_uuid").is_empty()
    })
    .await;

    // Case 1: the start call hangs, so the kill lands after the create and before the final write-back.
    w.sim
        .set_fault(json!({"route": "POST /deploy", "latency_ms": 5000}))
        .await;
    let one = w.create_instance(&tenant, "base-llm", "crash-one", "running").await;
    let name = format!("cf-{one}");
    w.wait("the service created in the simulator", T, || async {
        (w.sim.services_named(&name).await.len() == 1).then_some(())
    })
    .await;
    let before = w.record("bot_instances", &one).await;
    assert_ne!(
        before["status"], "running",
        "the kill lands before the write-back: {before}"
    );
    w.bridge.kill9();
    w.sim.clear_faults().await;
    w.bridge.start_again().await;
    let r = w
        .wait_record("bot_instances", &one, "crash-one running after restart", T, running)
        .await;
    let svcs = w.sim.services_named(&name).await;
    assert_eq!(svcs.len(), 1, "exactly one {name}: {svcs:?}");
    assert_eq!(svcs[0]["uuid"], r["coolify_service_id"]);

    // Case 2: the create's response is lost and the lookup that would adopt it hangs, so the record holds
    // no service id when the bridge dies: only the journal's intent and the deterministic name remain.
    // The create itself is slowed so the lookup fault can be armed before the adoption lookup (a new
    // instance has no intent yet, so nothing is looked up before its create).
    w.sim
        .set_fault(json!({"route": "POST /services", "lost_response": true, "latency_ms": 2000}))
        .await;
    let two = w.create_instance(&tenant, "base-llm", "crash-two", "running").await;
    let name = format!("cf-{two}");
    w.wait_record("bot_instances", &two, "crash-two deploying", T, |r| {
        r["status"] == "deploying"
    })
    .await;
    // The adoption lookup lists the tenant's project environment.
    w.sim
        .set_fault(json!({"route": "GET /projects/{uuid}/{environment_name_or_uuid}", "latency_ms": 20000}))
        .await;
    w.wait("the second service created in the simulator", T, || async {
        (w.sim.services_named(&name).await.len() == 1).then_some(())
    })
    .await;
    let before = w.record("bot_instances", &two).await;
    assert_eq!(
        text(&before, "coolify_service_id"),
        "",
        "the record does not know the service yet: {before}"
    );
    w.bridge.kill9();
    w.sim.clear_faults().await;
    w.bridge.start_again().await;
    let r = w
        .wait_record("bot_instances", &two, "crash-two running after restart", T, running)
        .await;
    let svcs = w.sim.services_named(&name).await;
    assert_eq!(svcs.len(), 1, "exactly one {name}: {svcs:?}");
    assert_eq!(svcs[0]["uuid"], r["coolify_service_id"]);
    assert_eq!(
        count(&w.sim.requests().await, "POST /services"),
        2,
        "one create per instance, never repeated"
    );
}
