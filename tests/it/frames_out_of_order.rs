//! PocketBase sends each realtime frame from its own goroutine, so a frame may come after later ones
//! (docs reference, PocketBase §1.8). A job that works from the frames it saw (src/latest.rs) must never
//! act on a tenant older than the one the tenant's job acted on. The bridge reaches PocketBase through a
//! fault proxy that holds one frame back while the later ones pass; the periodic resync is pushed out of
//! the way (10 minutes) so that it cannot make up for a wrong decision.

use std::time::Duration;

use cf_testkit::eventually;
use cf_testkit::faultproxy::ProxiedStack;
use serde_json::json;

const QUIET_RESYNC: (&str, &str) = ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "600");

/// The tenant's job writes the project's uuid and then wakes the instances it lists (none yet); the
/// frame of that write comes late. An instance created meanwhile must not wait for a project that is
/// there: its job reads the tenant the bridge wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_created_while_its_tenants_project_frame_is_late_sees_the_project() {
    let s = warm_stack().await;
    // Only a tenant frame carrying a project uuid is held back: the new tenant's creation frame passes.
    s.proxy
        .hold_frames(&["coolify_project_uuid"], &[r#""coolify_project_uuid":"""#]);
    let late = s.ready_tenant("late").await;
    assert_eq!(
        s.proxy.held_frames(),
        1,
        "the frame of the project's write is held back"
    );
    let id = s.create_instance(&late, "late-a").await;
    running(&s, &id).await;
    let shown = s.record("bot_instances", &id).await;
    assert_eq!(shown["pending_reason"], "", "{shown}");
    s.proxy.release_frames();
}

/// A job writes its instance several times (`deploying`, the service's uuid, `running`); the frames of the
/// earlier writes come while the last one's is late. The run those frames cause must work from the
/// record as the last write left it, not from an earlier write's frame: that one shows no applied spec,
/// and a run from it would send the service its compose again and restart it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frames_of_a_jobs_earlier_writes_do_not_undo_its_last() {
    let s = warm_stack().await;
    // An instance waiting for its tenant's project is woken by the tenant's job: each of its job's
    // writes then comes back as an event (the frames of `deploying` and of the service's uuid).
    s.sim
        .set_fault(json!({"route": "POST /projects", "error_rate": 1.0}))
        .await;
    let tenant =
        s.pb.create_tenant(json!({"name": "writes", "slug": "writes", "status": "active", "plan_tier": "business"}))
            .await;
    let tenant = tenant["id"].as_str().expect("tenant id");
    let id = s.create_instance(tenant, "writes-b").await;
    eventually(
        Duration::from_secs(20),
        "the instance waiting for the project",
        || async {
            let r = s.record("bot_instances", &id).await;
            (r["pending_reason"] == "waiting for the tenant's Coolify project").then_some(())
        },
    )
    .await;
    s.proxy.hold_frames(&["bot_instances", r#""status":"running""#], &[]);
    s.sim.clear_requests().await;
    s.sim.clear_faults().await;
    running(&s, &id).await;
    s.wait_idle(Duration::from_secs(30)).await;
    assert!(
        s.proxy.held_frames() >= 1,
        "the frame of the write of `running` is held back"
    );
    let log = s.sim.requests().await;
    let calls: Vec<&str> = log.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("POST /services")).count(),
        1,
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("PATCH /services/") && !c.contains("envs")),
        "the service was sent its compose again: {calls:?}"
    );
    s.proxy.release_frames();
}

/// A stack with a first instance running: its job read the template, which the bridge now holds, so a
/// job may work from frames alone.
async fn warm_stack() -> ProxiedStack {
    let s = ProxiedStack::start(&[QUIET_RESYNC]).await;
    let warm = s.ready_tenant("warm").await;
    let first = s.create_instance(&warm, "warm-a").await;
    running(&s, &first).await;
    s
}

async fn running(s: &ProxiedStack, id: &str) {
    eventually(Duration::from_secs(20), "the instance running", || async {
        (s.record("bot_instances", id).await["status"] == "running").then_some(())
    })
    .await;
}
