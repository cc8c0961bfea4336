//! Running the bridge as a service: SIGTERM in the middle of a burst loses nothing, and the health poller
//! turns an instance `error` only after several bad readings and back to `running` when it recovers.

mod common;

use std::time::{Duration, Instant};

use common::admin::Stack;
use common::bridge::eventually;
use serde_json::json;

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
    let mut stack = Stack::start_with(&sim, &[("CF_BRIDGE__QUEUE__CONCURRENCY", "4")]).await;
    let bodies: Vec<_> = (0..N)
        .map(|i| {
            json!({"tenant": stack.tenant, "template": stack.template, "name": format!("burst-{i}"),
                   "subdomain": format!("burst-{i}"), "desired_state": "running", "config": {}})
        })
        .collect();
    let ids = stack.pb.batch_create("bot_instances", &bodies).await;

    // Mid-way: some services exist, not all instances are running yet.
    eventually(Duration::from_secs(30), "the burst to be under way", || async {
        let n = stack.sim().state().await["services"]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_poller_needs_consecutive_bad_readings() {
    const READINGS: u32 = 4;
    let stack = Stack::start(&[("CF_BRIDGE__RECONCILE__BAD_READINGS_BEFORE_ERROR", "4")]).await;
    let id = stack.create_instance("health").await;
    stack.wait_status(&id, "running", Duration::from_secs(40)).await;
    let first_healthy = eventually(Duration::from_secs(15), "last_healthy_at to be set", || async {
        let r = stack.instance(&id).await;
        r["last_healthy_at"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
    .await;
    let rec = stack.instance(&id).await;
    let uuid = rec["coolify_service_id"].as_str().expect("service uuid").to_string();

    // One interval of bad readings is not enough.
    stack.sim().force_status(&uuid, Some("exited")).await;
    let forced_at = Instant::now();
    let errored = eventually(Duration::from_secs(20), "the instance to turn error", || async {
        let r = stack.instance(&id).await;
        (r["status"] == "error").then_some(r)
    })
    .await;
    let took = forced_at.elapsed();
    // With a 1 s poll, READINGS consecutive readings span at least READINGS - 1 intervals.
    assert!(
        took >= Duration::from_millis(u64::from(READINGS - 1) * 1000 - 500),
        "turned error after {took:?}, before {READINGS} readings"
    );
    let msg = errored["error_message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("health check: ") && msg.contains("exited"), "{msg}");

    stack.sim().force_status(&uuid, None).await;
    let recovered = stack.wait_status(&id, "running", Duration::from_secs(20)).await;
    assert_eq!(recovered["error_message"], "", "recovery clears the health error");
    let healthy_again = recovered["last_healthy_at"].as_str().unwrap_or_default();
    assert!(
        healthy_again > first_healthy.as_str(),
        "last_healthy_at moved: {first_healthy} -> {healthy_again}"
    );
    // The poller only judged; the instance's job made both writes, each on a health event.
    let (code, body) = stack
        .bridge
        .admin()
        .get(&format!("/admin/events?source=health&record={id}"))
        .await;
    assert_eq!(code, 200, "{body}");
    let reasons: Vec<&str> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["payload"]["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"service unhealthy") && reasons.contains(&"service healthy"),
        "{body}"
    );
    assert_eq!(
        stack.services_for(&id).await.len(),
        1,
        "recovery does not create another service"
    );
}
