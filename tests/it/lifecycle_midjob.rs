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

/// Started services report `starting:unknown` for ten minutes: a start's job waits for `running` the whole
/// test long, unless a newer change ends its wait.
const SIM_SLOW_START: &[&str] = &[
    "--start-delay-ms",
    "100",
    "--running-delay-ms",
    "600000",
    "--delete-delay-ms",
    "100",
    "--rate-limit",
    "100000",
];

/// A wait for `running` longer than the test's patience: what the test sees happen is not the timeout.
const LONG_WAIT: (&str, &str) = ("CF_BRIDGE__RECONCILE__RUNNING_TIMEOUT_SECS", "300");

/// An instance whose start's job waits for its service, which Coolify shows starting; (id, service uuid).
async fn instance_starting(w: &World, tenant: &str, subdomain: &str) -> (String, String) {
    let id = w.create_instance(tenant, "base-llm", subdomain, "running").await;
    let r = w
        .wait_record("bot_instances", &id, "the service created", WAIT, |r| {
            r["status"] == "deploying" && !text(r, "coolify_service_id").is_empty()
        })
        .await;
    let uuid = text(&r, "coolify_service_id").to_string();
    w.wait("the service starting", WAIT, || async {
        let svc = w.sim.service(&uuid).await?;
        text(&svc, "status").starts_with("starting").then_some(())
    })
    .await;
    (id, uuid)
}

/// The row the run that gave way leaves: what it sent, and that the next run carries out the newer change.
async fn gave_way_row(w: &World, id: &str) -> serde_json::Value {
    w.wait("the row of the run that gave way", WAIT, || async {
        w.deploy_logs(id)
            .await
            .into_iter()
            .find(|r| r["status"] == "pending" && text(r, "message").contains("a newer change"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_a_deletion_or_a_suspension_made_while_a_start_waits_is_carried_out_at_once() {
    let w = World::start(SIM_SLOW_START, &[LONG_WAIT]).await;
    let tenant = ready_tenant(&w).await;
    let (id, uuid) = instance_starting(&w, &tenant, "slowstart1").await;
    w.pb.patch("bot_instances", &id, json!({"desired_state": "stopped"}))
        .await;
    // Without ending the wait, the stop would come after the 300 s timeout.
    w.wait_status(&id, "stopped", WAIT).await;
    let svc = w.sim.service(&uuid).await.expect("the service is kept");
    assert_eq!(text(&svc, "status"), "exited", "{svc}");
    gave_way_row(&w, &id).await;
    let rows = w.deploy_logs(&id).await;
    assert!(
        rows.iter().any(|r| r["action"] == "stop" && r["status"] == "success"),
        "{rows:?}"
    );
    assert!(
        rows.iter().all(|r| r["status"] != "failed"),
        "giving way is not a failure: {rows:?}"
    );

    // A deletion made during a start is not held up either.
    let (other, other_uuid) = instance_starting(&w, &tenant, "slowstart2").await;
    w.pb.delete("bot_instances", &other).await;
    w.wait("the service destroyed", WAIT, || async {
        w.sim.service(&other_uuid).await.is_none().then_some(())
    })
    .await;

    // Nor is a suspension of the tenant: its job's wake of the instance is a newer change too.
    let (third, third_uuid) = instance_starting(&w, &tenant, "slowstart4").await;
    w.pb.patch("tenants", &tenant, json!({"status": "suspended"})).await;
    w.wait_record("bot_instances", &third, "suspended", WAIT, |r| {
        r["status"] == "stopped" && text(r, "domain").is_empty()
    })
    .await;
    let svc = w.sim.service(&third_uuid).await.expect("the service is kept");
    assert_eq!(text(&svc, "status"), "exited", "{svc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_made_while_a_start_waits_does_not_start_the_service_again() {
    let w = World::start(SIM_SLOW_START, &[LONG_WAIT]).await;
    let tenant = ready_tenant(&w).await;
    let (id, uuid) = instance_starting(&w, &tenant, "slowstart3").await;
    // An operator replays the create: a newer change of the record that asks for nothing new.
    let admin = w.bridge.admin();
    let event_id = admin
        .events(&format!("bot_instances/{id}"), None)
        .await
        .iter()
        .find(|e| e["job_id"].is_i64())
        .and_then(|e| e["id"].as_i64())
        .expect("the create's event");
    w.sim.clear_requests().await;
    let (status, answer) = admin
        .send(reqwest::Method::POST, "/admin/replay", json!({"event_ids": [event_id]}))
        .await;
    assert_eq!((status, answer["enqueued"].as_u64()), (200, Some(1)), "{answer}");
    gave_way_row(&w, &id).await;
    // The next run reads the service (the run before it may have changed it) and waits for the start under
    // way: a second start would force-recreate the containers it is bringing up.
    w.wait("the next run's read of the service", WAIT, || async {
        let log = w.sim.requests().await;
        log.iter()
            .any(|r| r["path"] == "GET /services/{uuid}" && text(r, "uri").contains(&uuid))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let starts: Vec<_> = w
        .sim
        .requests()
        .await
        .into_iter()
        .filter(|r| {
            matches!(
                r["path"].as_str(),
                Some("POST /services/{uuid}/start" | "POST /services/{uuid}/restart" | "POST /deploy")
            ) || (r["path"] == "PATCH /services/{uuid}" && r["request"]["instant_deploy"] == true)
        })
        .collect();
    assert!(starts.is_empty(), "no second start: {starts:?}");
    assert_eq!(w.instance(&id).await["status"], "deploying");

    // Once Coolify shows it running, the waiting run writes the outcome.
    w.sim.force_status(&uuid, Some("running:unknown")).await;
    w.wait_status(&id, "running", WAIT).await;
    let rows = w.deploy_logs(&id).await;
    assert!(rows.last().is_some_and(|r| r["status"] == "success"), "{rows:?}");
}
