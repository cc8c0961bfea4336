//! A retention that ends while the bridge dies (issue 19 item 2): the bridge is killed (`kill -9`) while
//! Coolify is deleting a deleted instance's service at the end of its retention; started again, it finishes
//! the destruction, deletes the record and writes the final `deploy_logs` row once.

use std::time::Duration;

use cf_testkit::sim::count;
use cf_testkit::world::{SIM_FAST, World, pb_now, text};
use serde_json::json;

use crate::bridge_bin;

const T: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_the_destruction_at_the_end_of_a_retention_then_it_finishes_once() {
    let env = [
        ("CF_BRIDGE__LIFECYCLE__RETENTION_SECS", "2"),
        ("CF_BRIDGE__LIFECYCLE__RETENTION_SWEEP_SECS", "1"),
    ];
    let mut w = World::start_process(bridge_bin(), SIM_FAST, &env).await;
    let tenant = w.create_tenant("ending", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "ending", "running").await;
    w.wait_status(&id, "running", T).await;

    // The delete hangs: the kill lands after the bridge asked Coolify to destroy the service.
    w.sim
        .set_fault(json!({"route": "DELETE /services/{uuid}", "latency_ms": 20000}))
        .await;
    w.pb.patch("bot_instances", &id, json!({"deletion_requested_at": pb_now()}))
        .await;
    w.wait("the destruction at the end of the retention", T, || async {
        (count(&w.sim.requests().await, "DELETE /services/{uuid}") >= 1).then_some(())
    })
    .await;
    w.bridge.kill9();
    w.sim.clear_faults().await;
    w.bridge.start_again().await;

    w.wait("the service and the record gone", T, || async {
        let gone = w.sim.services_named(&format!("cf-{id}")).await.is_empty();
        let token = w.pb.cached_token().await;
        let (status, _) =
            w.pb.request_as(
                &token,
                "GET",
                &format!("/api/collections/bot_instances/records/{id}"),
                None,
            )
            .await;
        (gone && status == 404).then_some(())
    })
    .await;
    let rows = w
        .wait("the final row", T, || async {
            let rows = w.deploy_logs(&id).await;
            rows.iter()
                .any(|r| r["action"] == "destroy" && r["status"] == "success")
                .then_some(rows)
        })
        .await;
    let finals: Vec<_> = rows
        .iter()
        .filter(|r| r["action"] == "destroy" && r["status"] == "success")
        .collect();
    assert_eq!(finals.len(), 1, "{rows:?}");
    assert_eq!(finals[0]["triggered_by"], "cf-bridge");
    assert!(
        text(finals[0], "message").starts_with("retention ended: service"),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| text(r, "message").starts_with("deletion requested: service")),
        "{rows:?}"
    );
}
