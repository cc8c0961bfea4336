//! Event intake end to end with the bridge in the test process: realtime, signed webhooks from the hooks,
//! resync after a cut stream, PocketBase restarts and hook reloads. The cases that kill the bridge or
//! watch it refuse to start are in tests/process/intake_crash.rs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cf_testkit::admin::Version;
use cf_testkit::proxy::TcpProxy;
use cf_testkit::settings::PbAccess;
use cf_testkit::{PbOptions, TestBridge, TestPb, TestSim, WEBHOOK_SECRET, bind_local, eventually, id, updated};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const WAIT_STATUS: Duration = Duration::from_secs(40);
const RECONNECTS: &str = "cf_bridge_realtime_reconnects_total";

// ---------------------------------------------------------------------------------------------------
// 1. Create, update and delete of tenants and instances reach the journal through realtime within a second.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_changes_reach_the_journal_within_a_second() {
    let pb = TestPb::start().await;
    let sim = TestSim::start(cf_testkit::world::SIM_STEPWISE);
    let bridge = TestBridge::for_stack((&pb).into(), &sim, &[]).await;
    bridge.admin().wait_subscribed(WAIT).await;
    let admin = bridge.admin();
    let limit = Duration::from_secs(1);
    let mut took = Vec::new();

    let (tenant, template) = pb.seed_tenant("rt").await;
    let (_, t) = admin
        .journaled(&tenant, "create", Version::Any, &["realtime"], WAIT)
        .await;
    took.push(("tenant create", t));
    let inst = pb.create_instance_for(&tenant, &template, "rt-one", "stopped").await;
    let inst_id = id(&inst);
    let (_, t) = admin
        .journaled(
            &inst_id,
            "create",
            Version::Exactly(&updated(&inst)),
            &["realtime"],
            WAIT,
        )
        .await;
    took.push(("instance create", t));

    let patched = pb.patch("tenants", &tenant, json!({"name": "rt renamed"})).await;
    let (_, t) = admin
        .journaled(
            &tenant,
            "update",
            Version::Exactly(&updated(&patched)),
            &["realtime"],
            WAIT,
        )
        .await;
    took.push(("tenant update", t));
    let patched = pb
        .patch("bot_instances", &inst_id, json!({"config": {"MODEL": "x"}}))
        .await;
    let (_, t) = admin
        .journaled(
            &inst_id,
            "update",
            Version::Exactly(&updated(&patched)),
            &["realtime"],
            WAIT,
        )
        .await;
    took.push(("instance update", t));

    pb.delete("bot_instances", &inst_id).await;
    let (_, t) = admin
        .journaled(&inst_id, "delete", Version::Any, &["realtime"], WAIT)
        .await;
    took.push(("instance delete", t));
    pb.delete("tenants", &tenant).await;
    let (_, t) = admin
        .journaled(&tenant, "delete", Version::Any, &["realtime"], WAIT)
        .await;
    took.push(("tenant delete", t));

    eprintln!("realtime latencies: {took:?}");
    for (what, t) in took {
        assert!(t <= limit, "{what} took {t:?} to reach the journal (limit {limit:?})");
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. With the webhook hook on too, one change arriving by both paths is one event and one job.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_by_webhook_and_realtime_is_one_event() {
    // PocketBase must know the webhook URL before the bridge (which needs PocketBase) exists: the
    // bridge's socket is bound first.
    let listener = bind_local();
    let hook_url = format!(
        "http://{}/hooks/pocketbase",
        listener.local_addr().expect("bridge address")
    );
    let pb = TestPb::start_with_env(&[
        ("CF_BRIDGE_WEBHOOK_URL", &hook_url),
        ("CF_BRIDGE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ])
    .await;
    let sim = TestSim::start(cf_testkit::world::SIM_STEPWISE);
    let bridge = TestBridge::for_stack_on(listener, (&pb).into(), &sim, &[]).await;
    bridge.admin().wait_subscribed(WAIT).await;
    let admin = bridge.admin();
    let dups = || async {
        bridge
            .admin()
            .metric("cf_bridge_events_deduplicated_total{source=\"realtime\"}")
            .await
            + bridge
                .admin()
                .metric("cf_bridge_events_deduplicated_total{source=\"webhook\"}")
                .await
    };
    let dups_before = dups().await;

    let (tenant, _) = pb.seed_tenant("dual").await;
    let mut changes = vec![("create".to_string(), None, None)];
    for n in 0..5 {
        let name = format!("dual {n}");
        let p = pb.patch("tenants", &tenant, json!({"name": name})).await;
        changes.push(("update".to_string(), Some(updated(&p)), Some(name)));
    }
    pb.delete("tenants", &tenant).await;
    changes.push(("delete".to_string(), None, None));

    for (action, upd, _) in &changes {
        let version = upd.as_deref().map_or(Version::Any, Version::Exactly);
        admin
            .journaled(&tenant, action, version, &["webhook", "realtime"], WAIT)
            .await;
    }
    // Both paths delivered every change: the second copy of each is counted as a duplicate.
    let want = dups_before + changes.len() as f64;
    eventually(WAIT, "a duplicate for every change", || async {
        (dups().await >= want).then_some(())
    })
    .await;
    // Each change is journaled once, by whichever path came first (the hook runs before the broadcast).
    // The tenant job's write-back may share a change's `updated` millisecond: that other version is an
    // event of its own, so a change is told by its name too.
    let events = admin.events(&tenant, None).await;
    let mut webhook_firsts = 0;
    for (action, upd, name) in &changes {
        let version = upd.as_deref().map_or(Version::Any, Version::Exactly);
        let copies: Vec<&Value> = events
            .iter()
            .filter(|e| {
                e["action"] == action.as_str()
                    && version.matches(e)
                    && e["source"] != "resync"
                    && name.as_ref().is_none_or(|n| e["payload"]["name"] == n.as_str())
            })
            .collect();
        assert_eq!(
            copies.len(),
            1,
            "{action} {upd:?} must be journaled exactly once: {copies:#?}"
        );
        if copies[0]["source"] == "webhook" {
            assert!(
                copies[0]["delivery_id"].as_str().is_some_and(|d| d.starts_with("msg_")),
                "{}",
                copies[0]
            );
            webhook_firsts += 1;
        }
    }
    assert!(
        webhook_firsts > 0,
        "no change came through the webhook; PocketBase log:\n{}",
        pb.log()
    );
    let jobs: HashSet<i64> = events.iter().filter_map(|e| e["job_id"].as_i64()).collect();
    assert_eq!(
        jobs.len(),
        1,
        "every event of one record folds into one job: {events:#?}"
    );
    let log = pb.log();
    assert!(
        !log.contains("cf-bridge webhook refused") && !log.contains("cf-bridge webhook failed"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_the_stream_is_cut_are_found_after_reconnect() {
    let pb = TestPb::start().await;
    let proxy = TcpProxy::start(pb.port).await;
    let sim = TestSim::start(cf_testkit::world::SIM_STEPWISE);
    let proxy_url = proxy.url();
    let through_proxy = PbAccess {
        url: &proxy_url,
        ..(&pb).into()
    };
    let bridge = TestBridge::for_stack(through_proxy, &sim, &[]).await;
    bridge.admin().wait_subscribed(WAIT).await;
    let admin = bridge.admin();
    let (tenant, template) = pb.seed_tenant("cut").await;
    let d = id(&pb.create_instance_for(&tenant, &template, "cut-d", "running").await);
    pb.wait_instance_status(&d, "running", WAIT_STATUS).await;
    let reconnects = bridge.admin().metric(RECONNECTS).await;

    proxy.close();
    proxy.cut();
    eventually(WAIT, "the bridge noticing the cut", || async {
        (bridge.admin().metric("cf_bridge_realtime_connected").await == 0.0).then_some(())
    })
    .await;
    let d_patched = pb.patch("bot_instances", &d, json!({"desired_state": "stopped"})).await;
    let e = pb.create_instance_for(&tenant, &template, "cut-e", "running").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.open();

    eventually(WAIT, "a reconnect after the cut", || async {
        (bridge.admin().metric(RECONNECTS).await > reconnects).then_some(())
    })
    .await;
    // The resync lists D's current version; if the bridge wrote D again after the reconnect, realtime may
    // have brought that later version first (then the resync's copy is a duplicate).
    let d_now = Version::AtLeast(&updated(&d_patched));
    admin
        .journaled(&d, "update", d_now, &["resync", "realtime"], WAIT)
        .await;
    let before_cut = admin.events(&d, None).await;
    assert!(
        before_cut
            .iter()
            .all(|e| !(e["source"] == "realtime" && e["record_updated"] == updated(&d_patched).as_str())),
        "the change made during the cut cannot have come over the cut stream: {before_cut:#?}"
    );
    admin
        .journaled(&id(&e), "create", Version::Any, &["resync"], WAIT)
        .await;
    pb.wait_instance_status(&d, "stopped", WAIT_STATUS).await;
    pb.wait_instance_status(&id(&e), "running", WAIT_STATUS).await;
}

// ---------------------------------------------------------------------------------------------------
// 4. PocketBase killed and restarted on the same data dir, and a hooks reload, both end in a reconnect
//    with nothing missed. PocketBase runs on a copy of the hooks it watches, which the test edits.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pocketbase_restart_and_hooks_reload_end_in_a_reconnect() {
    let mut pb = TestPb::start_with(PbOptions {
        copy_hooks: true,
        watch_hooks: true,
        ..PbOptions::default()
    })
    .await;
    let sim = TestSim::start(cf_testkit::world::SIM_STEPWISE);
    let bridge = TestBridge::for_stack((&pb).into(), &sim, &[]).await;
    bridge.admin().wait_subscribed(WAIT).await;
    let admin = bridge.admin();
    let (tenant, _) = pb.seed_tenant("restart").await;
    // The seed tenant's own job (its project, then the echo of the write-back) finishes first: a retry of
    // it that read the record after the change below would record that version as handled, and the
    // change would rightly make no event.
    admin
        .journaled(&tenant, "update", Version::Any, &["realtime"], WAIT)
        .await;
    eventually(WAIT, "the seed tenant's job to finish", || async {
        let (_, jobs) = admin.get("/admin/jobs?state=queued,running,failed").await;
        let busy = jobs["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|j| j["record_id"] == tenant.as_str()));
        let project = pb.record("tenants", &tenant).await["coolify_project_uuid"] != "";
        (project && !busy).then_some(())
    })
    .await;

    // Kill -9 and restart on the same data dir; change things before the bridge has reconnected.
    let before = bridge.admin().metric(RECONNECTS).await;
    pb.restart().await;
    let t1 = pb
        .create_tenant(
            json!({"name": "after restart", "slug": "after-restart", "status": "active",
        "plan_tier": "team"}),
        )
        .await;
    let p1 = pb
        .patch("tenants", &tenant, json!({"name": "renamed after restart"}))
        .await;
    eventually(WAIT, "a reconnect after the PocketBase restart", || async {
        (bridge.admin().metric(RECONNECTS).await > before).then_some(())
    })
    .await;
    admin
        .journaled(&id(&t1), "create", Version::Any, &["realtime", "resync"], WAIT)
        .await;
    admin
        .journaled(
            &tenant,
            "update",
            Version::AtLeast(&updated(&p1)),
            &["realtime", "resync"],
            WAIT,
        )
        .await;

    // A hooks reload restarts PocketBase's app in the same process and closes every stream.
    bridge.admin().wait_subscribed(WAIT).await;
    let before = bridge.admin().metric(RECONNECTS).await;
    let token = pb.superuser_token().await;
    std::fs::write(
        pb.hooks_dir.join("zz_reload.pb.js"),
        format!("// reload {:?}\n", Instant::now()),
    )
    .expect("write hook");
    // The create races the reload, so PocketBase may refuse connections for a moment.
    let body = json!({"name": "after reload", "slug": "after-reload", "status": "active", "plan_tier": "team"});
    let t2 = eventually(WAIT, "a tenant created around the hooks reload", || async {
        let resp = cf_testkit::http()
            .post(format!("{}/api/collections/tenants/records", pb.url))
            .header("Authorization", &token)
            .json(&body)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<Value>().await.ok()
    })
    .await;
    let deadline = Instant::now() + WAIT;
    while bridge.admin().metric(RECONNECTS).await <= before {
        assert!(
            Instant::now() < deadline,
            "no reconnect after the hooks reload; PocketBase log:\n{}\nbridge log:\n{}",
            pb.log(),
            bridge.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pb.is_running(), "a hooks reload keeps the process");
    let log = pb.log();
    assert!(
        log.contains("zz_reload.pb.js changed, restarting"),
        "PocketBase did not reload its hooks:\n{log}"
    );
    admin
        .journaled(&id(&t2), "create", Version::Any, &["realtime", "resync"], WAIT)
        .await;
    let p2 = pb
        .patch("tenants", &tenant, json!({"name": "renamed after reload"}))
        .await;
    admin
        .journaled(&tenant, "update", Version::Exactly(&updated(&p2)), &["realtime"], WAIT)
        .await;
}
