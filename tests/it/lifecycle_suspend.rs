//! Suspend closes the door (issue 19 item 1), end to end (real PocketBase, coolify-sim, the bridge in the
//! test process): a suspended tenant's services stop, lose their public domain in Coolify and get a new
//! router key (a copied key no longer matches `router_key_id`); resuming brings the domain back with a
//! fresh key and starts what `desired_state` asks for. An instance's own `stopped` is a plain stop.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, service_domains, text};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);

/// What routes and authenticates the stack: Coolify's domains, its router key value and the key id.
async fn door(w: &World, id: &str) -> (Vec<String>, String, String) {
    let svc = w.service_of(id).await.expect("service");
    let key = w
        .sim_envs(id)
        .await
        .get("CLOUDFREEDOM_API_KEY")
        .map(|(v, _)| v.clone())
        .unwrap_or_default();
    (
        service_domains(&svc),
        key,
        text(&w.instance(id).await, "router_key_id").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_closes_the_door_and_resume_opens_it_with_fresh_keys() {
    let w = World::start(SIM_QUICK, &[]).await;
    let tenant = w.create_tenant("doors", "business").await;
    let live = w.create_instance(&tenant, "base-llm", "doors-live", "running").await;
    let parked = w.create_instance(&tenant, "base-llm", "doors-parked", "stopped").await;
    w.wait_status(&live, "running", WAIT).await;
    let r = w.wait_status(&parked, "stopped", WAIT).await;

    // Its own desired_state = stopped is a plain stop: the door stays as it was.
    assert_eq!(text(&r, "domain"), "doors-parked.bots.test.example", "{r}");
    let (parked_domains, parked_key, parked_key_id) = door(&w, &parked).await;
    assert_eq!(parked_domains, ["https://doors-parked.bots.test.example:8080"]);
    let (live_domains, live_key, live_key_id) = door(&w, &live).await;
    assert_eq!(live_domains, ["https://doors-live.bots.test.example:8080"]);
    assert!(!live_key.is_empty() && !live_key_id.is_empty());

    w.pb.patch("tenants", &tenant, json!({"status": "suspended"})).await;
    for (id, key, key_id) in [(&live, &live_key, &live_key_id), (&parked, &parked_key, &parked_key_id)] {
        let r = w
            .wait_record("bot_instances", id, "suspended", WAIT, |r| {
                r["status"] == "stopped" && text(r, "domain").is_empty()
            })
            .await;
        let svc = w.service_of(id).await.expect("service");
        assert_eq!(text(&svc, "status"), "exited", "the service is stopped");
        let (now_domains, now_key, now_key_id) = door(&w, id).await;
        assert!(now_domains.is_empty(), "no domain while suspended: {now_domains:?}");
        assert_ne!(&now_key, key, "a copied key must stop working");
        assert_ne!(&now_key_id, key_id);
        assert_eq!(now_key_id, text(&r, "router_key_id"));
        let rows = w.deploy_logs(id).await;
        assert!(
            rows.iter().any(|r| r["status"] == "success"
                && text(r, "message").starts_with("tenant suspended: domain removed, router key rotated")),
            "{rows:?}"
        );
    }
    // A start asked for while the tenant is suspended shows `deploying` in its own write
    // (hooks/pb_hooks/actor.js); the bridge, not starting it, writes `stopped` back.
    let parked_uuid = text(&w.instance(&parked).await, "coolify_service_id").to_string();
    let calls = |log: &[serde_json::Value]| {
        log.iter()
            .filter(|r| r["method"] != "GET" && text(r, "uri").contains(&parked_uuid))
            .count()
    };
    let before = calls(&w.sim.requests().await);
    let asked =
        w.pb.patch("bot_instances", &parked, json!({"desired_state": "running"}))
            .await;
    assert_eq!(asked["status"], "deploying", "{asked}");
    w.wait_status(&parked, "stopped", WAIT).await;
    assert_eq!(
        calls(&w.sim.requests().await),
        before,
        "a suspended tenant's instance was started"
    );
    let back =
        w.pb.patch("bot_instances", &parked, json!({"desired_state": "stopped"}))
            .await;
    assert_eq!(back["status"], "stopped", "{back}");
    let (_, suspended_key, _) = door(&w, &live).await;

    w.pb.patch("tenants", &tenant, json!({"status": "active"})).await;
    let r = w.wait_status(&live, "running", WAIT).await;
    assert_eq!(text(&r, "domain"), "doors-live.bots.test.example");
    let (now_domains, now_key, _) = door(&w, &live).await;
    assert_eq!(now_domains, ["https://doors-live.bots.test.example:8080"]);
    assert!(now_key != suspended_key && now_key != live_key, "a fresh key on resume");
    let rows = w.deploy_logs(&live).await;
    assert!(
        rows.iter()
            .any(|r| text(r, "message").starts_with("tenant active again: domain restored, fresh router key")),
        "{rows:?}"
    );
    // The parked one gets its door back but stays stopped, as its own desired_state asks.
    let r = w
        .wait_record("bot_instances", &parked, "parked resumed", WAIT, |r| {
            r["status"] == "stopped" && !text(r, "domain").is_empty()
        })
        .await;
    assert_eq!(text(&r, "domain"), "doors-parked.bots.test.example");
    let svc = w.service_of(&parked).await.expect("service");
    assert_eq!(text(&svc, "status"), "exited", "the service is stopped");
    assert_eq!(service_domains(&svc), ["https://doors-parked.bots.test.example:8080"]);
}

/// A crash-looping bot shows `degraded:unhealthy` in Coolify (some containers up, some restarting), which
/// is neither running nor stopped. Its own stop and its tenant's suspension must both reach Coolify, not
/// only the record: before, the plan stopped only a service shown `running:*`, so the record said
/// `stopped` while Coolify kept the bot's containers up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_up_in_part_is_stopped_by_a_stop_and_by_a_suspension() {
    let w = World::start(SIM_QUICK, &[]).await;
    let tenant = w.create_tenant("halfup", "business").await;
    let own = w.create_instance(&tenant, "base-llm", "halfup-own", "running").await;
    let other = w.create_instance(&tenant, "base-llm", "halfup-other", "running").await;
    let mut uuids = Vec::new();
    for id in [&own, &other] {
        let r = w.wait_status(id, "running", WAIT).await;
        let uuid = text(&r, "coolify_service_id").to_string();
        w.sim.force_status(&uuid, Some("degraded:unhealthy")).await;
        uuids.push(uuid);
    }
    // The health poller's verdict: the record no longer says the service runs as applied, so the next
    // job reads Coolify.
    for id in [&own, &other] {
        w.wait_status(id, "error", WAIT).await;
    }

    w.pb.patch("bot_instances", &own, json!({"desired_state": "stopped"}))
        .await;
    w.wait_status(&own, "stopped", WAIT).await;
    stopped_in_coolify(&w, &uuids[0]).await;

    w.pb.patch("tenants", &tenant, json!({"status": "suspended"})).await;
    w.wait_record("bot_instances", &other, "suspended", WAIT, |r| {
        r["status"] == "stopped" && text(r, "domain").is_empty()
    })
    .await;
    stopped_in_coolify(&w, &uuids[1]).await;
}

/// Waits until the simulator shows the service `exited`, and checks that the bridge sent it a stop.
async fn stopped_in_coolify(w: &World, uuid: &str) {
    w.wait("the service stopped in Coolify", WAIT, || async {
        let svc = w.sim.service(uuid).await?;
        (text(&svc, "status") == "exited").then_some(())
    })
    .await;
    let stops = w
        .sim
        .requests()
        .await
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/stop")))
        .filter(|r| r["uri"].as_str().is_some_and(|u| u.contains(uuid)))
        .count();
    assert!(stops >= 1, "no stop sent for {uuid}");
}
