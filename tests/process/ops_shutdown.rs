//! SIGTERM in the middle of a burst loses nothing (moved from ops_lifecycle): the bridge process stops
//! taking work, drains, exits 0, and the next start finishes every instance with one service each.

use std::time::{Duration, Instant};

use cf_testkit::eventually;
use cf_testkit::world::World;
use serde_json::json;

use crate::bridge_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_burst_loses_nothing() {
    const N: usize = 20;
    // Slow enough containers that SIGTERM lands while work is in flight.
    let sim = [
        "--start-delay-ms",
        "400",
        "--running-delay-ms",
        "400",
        "--delete-delay-ms",
        "100",
    ];
    let mut stack = World::start_process(bridge_bin(), &sim, &[("CF_BRIDGE__QUEUE__CONCURRENCY", "4")]).await;
    let tenant = stack.user_tenant("ops@test.local", "ops-test", "business").await;
    let template = stack.templates["base-llm"].clone();
    let bodies: Vec<_> = (0..N)
        .map(|i| {
            json!({"tenant": tenant, "template": template, "name": format!("burst-{i}"),
                   "subdomain": format!("burst-{i}"), "desired_state": "running", "config": {}})
        })
        .collect();
    let ids = stack.pb.batch_create("bot_instances", &bodies).await;

    // Mid-way: some services exist, not all instances are running yet.
    eventually(Duration::from_secs(30), "the burst to be under way", || async {
        let n = stack.sim.state().await["services"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        (n >= 2).then_some(())
    })
    .await;
    let running_before = {
        let list = stack
            .pb
            .superuser_request(
                "GET",
                "/api/collections/bot_instances/records?perPage=100&filter=(status='running')",
                None,
            )
            .await;
        list["totalItems"].as_u64().unwrap_or(0)
    };
    assert!(
        running_before < N as u64,
        "the burst finished before SIGTERM; nothing was interrupted"
    );
    let stopped_at = Instant::now();
    assert!(
        stack.bridge.terminate(),
        "cf-bridge did not exit 0 after SIGTERM; log:\n{}",
        stack.bridge.log()
    );
    assert!(
        stopped_at.elapsed() < Duration::from_secs(30),
        "shutdown took {:?}",
        stopped_at.elapsed()
    );
    let log = stack.bridge.log();
    assert!(
        log.contains("SIGTERM received") && log.contains("stopped cleanly"),
        "log of the stop:\n{log}"
    );

    stack.bridge.start_again().await;
    for id in &ids {
        stack.wait_status(id, "running", Duration::from_secs(60)).await;
    }
    for id in &ids {
        let services = stack.services_for(id).await;
        assert_eq!(services.len(), 1, "instance {id} has {} services", services.len());
        let rec = stack.instance(id).await;
        assert_eq!(
            rec["coolify_service_id"], services[0]["uuid"],
            "record and Coolify agree for {id}"
        );
    }
}
