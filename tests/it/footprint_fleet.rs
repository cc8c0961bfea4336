//! Issue 17, the idle fleet: the health poller, the resync's drift check and the orphan scan share one
//! `GET /services` per poll interval (requests counted in the simulator's log and through a counting proxy).

use std::cell::RefCell;
use std::time::Duration;

use cf_testkit::faultproxy::ProxiedStack;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(40);
const POLL_SECS: u64 = 2;
const INTERVALS: u64 = 6;

fn instance_lists(stack: &ProxiedStack, also: &str) -> Vec<String> {
    let seen = RefCell::new(Vec::new());
    stack.proxy.forwarded(|r| {
        let hit = r.starts_with("GET /api/collections/bot_instances/records?") && r.contains(also);
        if hit {
            seen.borrow_mut().push(r.to_string());
        }
        hit
    });
    seen.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_tasks_share_one_service_list_per_poll_interval() {
    let poll = POLL_SECS.to_string();
    // A resync (with its drift check) and an orphan scan every second poll interval.
    let resync = (2 * POLL_SECS).to_string();
    let stack = ProxiedStack::start(&[
        ("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", poll.as_str()),
        ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", resync.as_str()),
    ])
    .await;
    let tenant = stack.ready_tenant("fleet").await;
    let ids = [
        stack.create_instance(&tenant, "fleet-a").await,
        stack.create_instance(&tenant, "fleet-b").await,
    ];
    for id in &ids {
        cf_testkit::eventually(WAIT, "the instance running", || async {
            (stack.record("bot_instances", id).await["status"] == "running").then_some(())
        })
        .await;
    }
    stack.wait_idle(WAIT).await;
    stack.sim.clear_requests().await;
    let polled_before = instance_lists(&stack, "coolify_service_id").len();

    let idle = Duration::from_secs(INTERVALS * POLL_SECS);
    tokio::time::sleep(idle).await;
    let requests: Vec<Value> = stack.sim.requests().await;
    let lists = cf_testkit::sim::count(&requests, "GET /services");
    let scans = cf_testkit::sim::count(&requests, "GET /projects");
    assert!(
        scans >= 2,
        "{scans} orphan scans in {idle:?}: the window must hold several"
    );
    // One more than the intervals: the window's edges may cut two intervals.
    assert!(
        (1..=INTERVALS as usize + 1).contains(&lists),
        "{lists} service lists in {INTERVALS} poll intervals that held {scans} resyncs and orphan scans"
    );

    // The poller judged both services from the shared list. It lists PocketBase only after an instance
    // changed, and takes the resync's listing otherwise, so an idle window may hold no listing of its own.
    let polled = instance_lists(&stack, "coolify_service_id");
    assert!(
        polled.len() <= polled_before + INTERVALS as usize,
        "the poller listed PocketBase more than once per poll interval: {polled:?}"
    );
    let metrics = stack.bridge.admin().metrics().await;
    assert!(
        metrics.contains("cf_bridge_instances_health{verdict=\"healthy\"} 2"),
        "{metrics}"
    );

    // Sharing the list costs no judgement: a service stopped behind the bridge's back is still found.
    let uuid = stack.record("bot_instances", &ids[0]).await["coolify_service_id"]
        .as_str()
        .expect("service uuid")
        .to_string();
    let events = stack.bridge.admin().events(&ids[0], None).await.len();
    stack.sim.force_status(&uuid, Some("exited")).await;
    cf_testkit::eventually(
        WAIT,
        "the stopped service noticed (a health or drift event)",
        || async { (stack.bridge.admin().events(&ids[0], None).await.len() > events).then_some(()) },
    )
    .await;
}
