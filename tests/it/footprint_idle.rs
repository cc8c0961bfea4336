//! Issue 17: an idle fleet costs PocketBase nothing. With nobody changing anything the bridge writes no
//! record, no `deploy_logs` row and journals no event, reads Coolify's statuses at most once per poll
//! interval, and keeps live health in memory (admin API, metrics). A real transition is still written.
//! Nor does it list PocketBase's instances each poll: only after an instance changed or a resync pass.

use std::time::Duration;

use cf_testkit::faultproxy::ProxiedStack;
use cf_testkit::world::{SIM_QUICK, World};
use serde_json::Value;

const INSTANCES: usize = 4;

/// Every instance's `updated`, its rows and its journaled events, as one comparable snapshot.
async fn snapshot(stack: &World, ids: &[String]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for id in ids {
        let updated = stack.instance(id).await["updated"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let rows = stack.deploy_logs(id).await.len();
        let (code, body) = stack
            .bridge
            .admin()
            .get(&format!("/admin/events?record={id}&limit=500"))
            .await;
        assert_eq!(code, 200, "{body}");
        let events = body["events"].as_array().map_or(0, Vec::len);
        out.push((updated, rows, events));
    }
    out
}

fn status_lists(requests: &[Value]) -> usize {
    cf_testkit::sim::count(requests, "GET /services")
}

/// Whether the record shows the health poller's judgement (an `error` the poller asked for).
fn health_error(record: &Value) -> bool {
    record["error_message"]
        .as_str()
        .unwrap_or_default()
        .starts_with("health check: ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_fleet_writes_nothing_and_reads_status_once_per_interval() {
    let stack = World::start(SIM_QUICK, &[("CF_BRIDGE__RECONCILE__BAD_READINGS_BEFORE_ERROR", "2")]).await;
    let tenant = stack.user_tenant("idle@test.local", "idle-test", "business").await;
    let mut ids = Vec::new();
    for i in 0..INSTANCES {
        ids.push(
            stack
                .create_instance(&tenant, "base-llm", &format!("idle{i}"), "running")
                .await,
        );
    }
    for id in &ids {
        stack.wait_status(id, "running", Duration::from_secs(60)).await;
    }
    // Let the write-backs' echoes settle and the poller see every service healthy at least once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = snapshot(&stack, &ids).await;
    stack.sim.clear_requests().await;

    // Six poll intervals (1 s each in the test settings) with nobody changing anything.
    let idle = Duration::from_secs(6);
    tokio::time::sleep(idle).await;
    let requests = stack.sim.requests().await;
    let after = snapshot(&stack, &ids).await;
    assert_eq!(
        before, after,
        "an idle fleet changed records, rows or journal events (updated, rows, events per instance)"
    );
    let lists = status_lists(&requests);
    assert!(
        (1..=7).contains(&lists),
        "{lists} status lists in {idle:?} with a 1 s poll interval"
    );
    assert_eq!(
        requests.len(),
        lists,
        "only status lists while idle: {:?}",
        requests.iter().map(|r| r["path"].clone()).collect::<Vec<_>>()
    );

    // Live health is in memory: the admin API shows when each instance was last seen healthy.
    let (code, detail) = stack.bridge.admin().get(&format!("/admin/instances/{}", ids[0])).await;
    assert_eq!(code, 200, "{detail}");
    assert_eq!(detail["live_health"]["verdict"], "healthy", "{detail}");
    let seen = detail["live_health"]["last_seen_healthy"].as_str().unwrap_or_default();
    let written = detail["last_healthy_at"].as_str().unwrap_or_default();
    assert!(
        !seen.is_empty() && seen > written,
        "live health ({seen}) is newer than the record's last_healthy_at ({written})"
    );
    let (code, list) = stack.bridge.admin().get("/admin/health").await;
    assert_eq!(code, 200, "{list}");
    let listed = list["instances"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), INSTANCES, "{list}");
    assert!(listed.iter().all(|i| i["verdict"] == "healthy"), "{list}");
    let metrics = stack.bridge.admin().metrics().await;
    assert!(
        metrics.contains("cf_bridge_instances_health{verdict=\"healthy\"} 4"),
        "live health in metrics:\n{metrics}"
    );

    // A real transition is still written, by the instance's job, with its row.
    let uuid = stack.instance(&ids[1]).await["coolify_service_id"]
        .as_str()
        .expect("service uuid")
        .to_string();
    stack.sim.force_status(&uuid, Some("exited")).await;
    let errored = stack.wait_status(&ids[1], "error", Duration::from_secs(20)).await;
    assert!(health_error(&errored), "{errored}");
    assert!(
        stack.deploy_logs(&ids[1]).await.len() > before[1].1,
        "the transition has its row"
    );
    let (_, detail) = stack.bridge.admin().get(&format!("/admin/instances/{}", ids[1])).await;
    assert_eq!(detail["live_health"]["verdict"], "unhealthy", "{detail}");
}

/// The health poller's listings of instances (its filter names `coolify_service_id`), as the counting
/// proxy in front of PocketBase saw them.
fn poller_lists(stack: &ProxiedStack) -> usize {
    stack
        .proxy
        .forwarded(|r| r.starts_with("GET /api/collections/bot_instances/records") && r.contains("coolify_service_id"))
}

async fn wait_status(stack: &ProxiedStack, id: &str, status: &str) -> Value {
    cf_testkit::eventually(Duration::from_secs(40), status, || async {
        let r = stack.record("bot_instances", id).await;
        (r["status"] == status).then_some(r)
    })
    .await
}

/// A stack with a resync every `resync_secs`, a tenant and one instance `running`, the bridge idle and the
/// write-back's echo arrived (a poll has listed the fleet once more).
async fn one_running_instance(slug: &str, resync_secs: &str) -> (ProxiedStack, String, String) {
    let stack = ProxiedStack::start(&[
        ("CF_BRIDGE__RECONCILE__BAD_READINGS_BEFORE_ERROR", "2"),
        ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", resync_secs),
    ])
    .await;
    let tenant = stack.ready_tenant(slug).await;
    let first = stack.create_instance(&tenant, &format!("{slug}-a")).await;
    wait_status(&stack, &first, "running").await;
    stack.wait_idle(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    (stack, tenant, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_lists_pocketbase_again_only_after_an_instance_changed() {
    // No periodic resync inside the test: only instance changes may make the poller list again.
    let (stack, tenant, first) = one_running_instance("watched", "600").await;

    // Six poll intervals (1 s each in the test settings) with nobody changing anything: the listing taken
    // before still holds.
    let before = poller_lists(&stack);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle = poller_lists(&stack) - before;
    assert_eq!(idle, 0, "listings of PocketBase's instances in six idle poll intervals");

    // An instance that comes up afterwards is watched all the same: its service exits and it turns error.
    let second = stack.create_instance(&tenant, "watched-b").await;
    let running = wait_status(&stack, &second, "running").await;
    let uuid = running["coolify_service_id"]
        .as_str()
        .expect("service uuid")
        .to_string();
    stack.sim.force_status(&uuid, Some("exited")).await;
    let errored = wait_status(&stack, &second, "error").await;
    assert!(health_error(&errored), "{errored}");
    assert_eq!(wait_status(&stack, &first, "running").await["status"], "running");
}

/// PocketBase's instance listings without the poller's filter: the resync's.
fn resync_lists(stack: &ProxiedStack) -> usize {
    stack
        .proxy
        .forwarded(|r| r.starts_with("GET /api/collections/bot_instances/records") && !r.contains("coolify_service_id"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_takes_its_listing_from_the_resync_pass() {
    // A resync every 2 s: before, the poller listed the instances again after each pass.
    let (stack, tenant, _) = one_running_instance("offered", "2").await;

    let (polled, passes) = (poller_lists(&stack), resync_lists(&stack));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (polled, passes) = (poller_lists(&stack) - polled, resync_lists(&stack) - passes);
    assert!(passes >= 3, "{passes} resync listings in 10 s");
    // One for a realtime echo that lands in the window on a loaded machine; before, one per pass.
    assert!(
        polled <= 1,
        "the poller listed PocketBase {polled} times beside {passes} resync listings"
    );

    // The listing it takes from the pass holds an instance that comes up afterwards: the poller judges it.
    // (Its service stopping would be repaired by the resync's drift check first, at this interval.)
    let second = stack.create_instance(&tenant, "offered-b").await;
    wait_status(&stack, &second, "running").await;
    cf_testkit::eventually(Duration::from_secs(20), "the new instance judged", || async {
        let (_, detail) = stack.bridge.admin().get(&format!("/admin/instances/{second}")).await;
        (detail["live_health"]["verdict"] == "healthy").then_some(())
    })
    .await;
}
