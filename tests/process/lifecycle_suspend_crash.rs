//! A suspend interrupted by `kill -9` (issue 19 item 1): the bridge dies after stopping a stack and while
//! removing its domain; started again, it finishes the suspension (domain removed, the key rotated once
//! before the crash and pushed now), and the resume that follows converges (domain back, a fresh key,
//! running again).

use std::time::Duration;

use cf_testkit::sim::count;
use cf_testkit::world::{SIM_FAST, World, service_domains, text};
use serde_json::json;

use crate::bridge_bin;

const T: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_suspend_then_resume_converges() {
    let mut w = World::start_process(bridge_bin(), SIM_FAST, &[]).await;
    let tenant = w.create_tenant("halfway", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "halfway", "running").await;
    let r = w.wait_status(&id, "running", T).await;
    let first_key_id = text(&r, "router_key_id").to_string();
    let key_of = |envs: &std::collections::BTreeMap<String, (String, bool)>| {
        envs.get("CLOUDFREEDOM_API_KEY")
            .map(|(v, _)| v.clone())
            .unwrap_or_default()
    };
    let first_key = key_of(&w.sim_envs(&id).await);

    // The domain removal hangs: the kill lands after the stop and before the domain and key change.
    w.sim
        .set_fault(json!({"route": "PATCH /services/{uuid}", "latency_ms": 20000}))
        .await;
    w.pb.patch("tenants", &tenant, json!({"status": "suspended"})).await;
    w.wait("the stop of the suspension", T, || async {
        (count(&w.sim.requests().await, "POST /services/{uuid}/stop") == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let svc = w.service_of(&id).await.expect("service");
    assert_eq!(
        service_domains(&svc).len(),
        1,
        "the kill lands before the domain is removed: {svc}"
    );
    w.bridge.kill9();
    w.sim.clear_faults().await;
    w.bridge.start_again().await;

    let r = w
        .wait_record("bot_instances", &id, "suspended after the restart", T, |r| {
            r["status"] == "stopped" && text(r, "domain").is_empty()
        })
        .await;
    let svc = w.service_of(&id).await.expect("service");
    assert!(service_domains(&svc).is_empty(), "{svc}");
    assert!(!text(&svc, "status").starts_with("running"), "{svc}");
    let suspended_key = key_of(&w.sim_envs(&id).await);
    assert_ne!(suspended_key, first_key, "the copied key stopped working");
    assert_ne!(text(&r, "router_key_id"), first_key_id);

    w.pb.patch("tenants", &tenant, json!({"status": "active"})).await;
    let r = w.wait_status(&id, "running", T).await;
    assert_eq!(text(&r, "domain"), "halfway.bots.test.example");
    let svc = w.service_of(&id).await.expect("service");
    assert_eq!(service_domains(&svc), ["https://halfway.bots.test.example:8080"]);
    let resumed_key = key_of(&w.sim_envs(&id).await);
    assert!(
        resumed_key != suspended_key && resumed_key != first_key,
        "a fresh key on resume"
    );
    assert_eq!(w.sim.services_named(&format!("cf-{id}")).await.len(), 1);
    // The run after the restart finishes the suspension and says so; the resume has its row too.
    let rows = w.deploy_logs(&id).await;
    assert!(
        rows.iter()
            .any(|r| text(r, "message").starts_with("tenant suspended: domain removed, router key rotated")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| text(r, "message").starts_with("tenant active again: domain restored, fresh router key")),
        "{rows:?}"
    );
}
