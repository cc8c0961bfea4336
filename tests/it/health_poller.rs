//! The health poller turns an instance `error` only after several bad readings and back to `running` when
//! it recovers (moved from ops_lifecycle; its SIGTERM test is in tests/process/ops_shutdown.rs).

use std::time::{Duration, Instant};

use cf_testkit::eventually;
use cf_testkit::world::{SIM_QUICK, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_poller_needs_consecutive_bad_readings() {
    const READINGS: u32 = 4;
    let stack = World::start(SIM_QUICK, &[("CF_BRIDGE__RECONCILE__BAD_READINGS_BEFORE_ERROR", "4")]).await;
    let tenant = stack.user_tenant("ops@test.local", "ops-test", "business").await;
    let id = stack.create_instance(&tenant, "base-llm", "health", "running").await;
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
    // The operator page's stream is told of each verdict that changes, once.
    let mut stream = crate::ui_stream::Stream::open(&stack.bridge.url).await;
    let told = |verdict: &'static str| {
        let id = id.clone();
        move |c: &serde_json::Value| c["kind"] == "health" && c["record_id"] == id.as_str() && c["verdict"] == verdict
    };

    // One interval of bad readings is not enough.
    stack.sim.force_status(&uuid, Some("exited")).await;
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
    stream.until("the suspect verdict", told("suspect")).await;
    stream.until("the unhealthy verdict", told("unhealthy")).await;

    stack.sim.force_status(&uuid, None).await;
    let recovered = stack.wait_status(&id, "running", Duration::from_secs(20)).await;
    assert_eq!(recovered["error_message"], "", "recovery clears the health error");
    stream.until("the healthy verdict again", told("healthy")).await;
    // The first healthy verdict may have been told before the stream opened; every one after, once.
    let verdicts: Vec<String> = stream
        .changes()
        .iter()
        .filter(|c| c["kind"] == "health" && c["record_id"] == id.as_str())
        .filter_map(|c| c["verdict"].as_str().map(str::to_string))
        .skip_while(|v| v == "healthy")
        .collect();
    assert_eq!(verdicts, ["suspect", "unhealthy", "healthy"], "each change told once");
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
