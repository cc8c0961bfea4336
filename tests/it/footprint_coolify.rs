//! Issue 17: the Coolify calls of one instance, counted in the simulator's request log. From create to
//! `running`, for a config change and for a delete, each call is printed and the count asserted, so each
//! saving shows as a smaller number. The health poller and the orphan scan are pushed out of the way
//! (their lists are counted in footprint_idle); only the instance's own calls remain.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

/// The calls made since the log was cleared, as "METHOD /template", in order.
async fn calls(w: &World) -> Vec<String> {
    w.sim
        .requests()
        .await
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .collect()
}

fn status_reads(calls: &[String]) -> usize {
    calls
        .iter()
        .filter(|c| *c == "GET /services" || *c == "GET /services/{uuid}")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_costs_few_coolify_calls() {
    let w = World::start(
        SIM_QUICK,
        &[
            ("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "3600"),
            ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600"),
        ],
    )
    .await;
    let tenant = w.create_tenant("calls", "business").await;
    w.wait_record("tenants", &tenant, "the tenant's project", WAIT, |t| {
        !t["coolify_project_uuid"].as_str().unwrap_or_default().is_empty()
    })
    .await;
    w.bridge.admin().wait_idle(WAIT).await;
    w.sim.clear_requests().await;

    // Create to running: the service, its env, its start, and the status reads until it runs.
    let id = w.create_instance(&tenant, "base-llm", "calls1", "running").await;
    let running = w.wait_status(&id, "running", WAIT).await;
    w.bridge.admin().wait_idle(WAIT).await;
    let created = calls(&w).await;

    // A config change of a running instance.
    w.sim.clear_requests().await;
    w.pb.patch("bot_instances", &id, json!({"config": {"MODEL": "other"}}))
        .await;
    w.wait_record("bot_instances", &id, "the config applied", WAIT, |r| {
        r["applied_hash"] != running["applied_hash"] && r["status"] == "running"
    })
    .await;
    w.bridge.admin().wait_idle(WAIT).await;
    let changed = calls(&w).await;
    let patches: Vec<Value> = w
        .sim
        .requests()
        .await
        .into_iter()
        .filter(|r| r["path"] == "PATCH /services/{uuid}")
        .collect();

    // A delete, until Coolify has removed the service.
    w.sim.clear_requests().await;
    let uuid = running["coolify_service_id"]
        .as_str()
        .expect("service uuid")
        .to_string();
    w.pb.delete("bot_instances", &id).await;
    w.wait("the service gone", WAIT, || async {
        w.sim.service(&uuid).await.is_none().then_some(())
    })
    .await;
    w.bridge.admin().wait_idle(WAIT).await;
    let deleted = calls(&w).await;
    println!("create -> running: {} calls {created:?}", created.len());
    println!("config change: {} calls {changed:?}", changed.len());
    println!("delete: {} calls {deleted:?}", deleted.len());

    // Create: no adoption lookup without an intent, no read before acting; the reads come after the start.
    // Alone, the start is a batch deploy of one (sent at once: the budget is not short); Coolify cannot
    // take env vars in the create call, so a lone instance costs these three and its status read.
    let direct: Vec<&String> = created.iter().filter(|c| !c.starts_with("GET /services")).collect();
    assert_eq!(
        direct,
        ["POST /services", "PATCH /services/{uuid}/envs/bulk", "POST /deploy"],
    );
    let reads = status_reads(&created);
    assert!(
        (1..=2).contains(&reads),
        "{reads} status reads for one service that runs within 200 ms"
    );
    // Config change: one PATCH that redeploys (instant_deploy), no read before it, no restart, then reads.
    assert_eq!(patches.len(), 1, "{changed:?}");
    assert_eq!(
        patches[0]["request"]["instant_deploy"], true,
        "the update deploys in the same call: {}",
        patches[0]
    );
    assert_eq!(
        changed.iter().filter(|c| !c.starts_with("GET /services")).count(),
        1,
        "no read before acting, no separate restart: {changed:?}"
    );
    assert!((1..=2).contains(&status_reads(&changed)), "{changed:?}");
    // Delete: the service the journal knows, then reads of that service until it is gone; no list.
    assert_eq!(
        deleted.first().map(String::as_str),
        Some("DELETE /services/{uuid}"),
        "{deleted:?}"
    );
    assert!(
        deleted[1..].iter().all(|c| c == "GET /services/{uuid}"),
        "only reads of the deleted service: {deleted:?}"
    );
    assert!(deleted.len() <= 3, "{deleted:?}");
}

/// A burst under a short budget: the starts go in batch deploys and the waiters share status lists, so
/// the instances cost at most three Coolify calls each from create to `running`, every call counted
/// (reads and lists included), and none is refused with 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_costs_at_most_three_calls_per_instance() {
    const N: usize = 16;
    let w = World::start(
        SIM_QUICK,
        &[
            ("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "3600"),
            ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600"),
            // 1.5 calls a second after the first burst of ten: the budget is short during the burst.
            ("CF_BRIDGE__COOLIFY__REQUESTS_PER_MINUTE", "90"),
        ],
    )
    .await;
    let tenant = w.create_tenant("burst", "business").await;
    w.wait_record("tenants", &tenant, "the tenant's project", WAIT, |t| {
        !t["coolify_project_uuid"].as_str().unwrap_or_default().is_empty()
    })
    .await;
    w.bridge.admin().wait_idle(WAIT).await;
    // Let the bucket refill after the tenant's calls.
    tokio::time::sleep(Duration::from_secs(7)).await;
    w.sim.clear_requests().await;

    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(
            w.create_instance(&tenant, "base-llm", &format!("burst{i}"), "running")
                .await,
        );
    }
    let mut uuids = Vec::new();
    for id in &ids {
        let r = w.wait_status(id, "running", Duration::from_secs(120)).await;
        uuids.push(r["coolify_service_id"].as_str().expect("uuid").to_string());
    }
    w.bridge.admin().wait_idle(WAIT).await;
    let log = w.sim.requests().await;
    let calls = calls(&w).await;
    let count = |p: &str| calls.iter().filter(|c| *c == p).count();
    let deploys: Vec<Vec<String>> = log
        .iter()
        .filter(|r| r["path"] == "POST /deploy")
        .map(|r| {
            let uri = r["uri"].as_str().unwrap_or_default();
            let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
            query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("uuid="))
                .flat_map(|l| l.split(',').map(str::to_string))
                .collect()
        })
        .collect();
    println!(
        "{N} instances: {} calls ({:.2} each) {calls:?}; deploys {deploys:?}",
        calls.len(),
        calls.len() as f64 / N as f64
    );
    assert_eq!(log.iter().filter(|r| r["status"] == 429).count(), 0, "no 429");
    assert_eq!(count("POST /services"), N, "one create each");
    assert_eq!(count("PATCH /services/{uuid}/envs/bulk"), N, "one env push each");
    assert_eq!(
        count("POST /services/{uuid}/start"),
        0,
        "created services start by batch deploy"
    );
    for u in &uuids {
        assert_eq!(
            deploys.iter().flatten().filter(|d| *d == u).count(),
            1,
            "{u} deployed once: {deploys:?}"
        );
    }
    assert!(deploys.len() < N, "starts shared deploy calls: {deploys:?}");
    assert!(
        calls.len() <= 3 * N,
        "{} calls for {N} instances, over three each: {calls:?}",
        calls.len()
    );
}

/// Drift inside Coolify (a service deleted, stopped, or given another compose behind the bridge's back) is
/// found by a resync of unchanged records with exactly one Coolify list call, and repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_finds_and_repairs_drift_inside_coolify_with_one_list() {
    let w = World::start(
        SIM_QUICK,
        &[
            ("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "3600"),
            ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600"),
        ],
    )
    .await;
    let tenant = w.create_tenant("drift", "business").await;
    let mut ids = Vec::new();
    for sub in ["drift1", "drift2", "drift3", "drift4"] {
        ids.push(w.create_instance(&tenant, "base-llm", sub, "running").await);
    }
    let mut uuids = Vec::new();
    for id in &ids {
        let r = w.wait_status(id, "running", WAIT).await;
        uuids.push(r["coolify_service_id"].as_str().expect("uuid").to_string());
    }
    w.bridge.admin().wait_idle(WAIT).await;
    let admin = w.bridge.admin();
    let resync = || async {
        let (code, body) = admin.send(reqwest::Method::POST, "/admin/resync", json!({})).await;
        assert_eq!(code, 202, "{body}");
    };
    // Passes so far: besides the one asked for, a reconnect of the realtime stream on a loaded machine
    // may run one; each pass makes one list.
    let passes = || w.bridge.log().matches("resync done").count();
    let resync_done = |n: usize| {
        let w = &w;
        async move {
            w.wait("the resync pass", WAIT, || async {
                (w.bridge.log().matches("resync done").count() >= n).then_some(())
            })
            .await
        }
    };
    let lists = |calls: &[String]| calls.iter().filter(|c| *c == "GET /services").count();

    // Nothing drifted: one list, nothing enqueued, nothing else sent to Coolify.
    let before = passes();
    w.sim.clear_requests().await;
    resync().await;
    resync_done(before + 1).await;
    w.bridge.admin().wait_idle(WAIT).await;
    let unchanged = calls(&w).await;
    assert!(!unchanged.is_empty(), "the drift check lists Coolify");
    assert!(
        unchanged.iter().all(|c| c == "GET /services") && unchanged.len() == passes() - before,
        "an unchanged fleet costs one list per pass: {unchanged:?}"
    );

    // Behind the bridge's back: one service deleted, one stopped, one given another image. Not in the
    // second after a job settled: the drift check leaves records worked on that lately to their jobs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = w.sim.client();
    c.delete_service(&uuids[0]).await.expect("delete");
    c.stop_service(&uuids[1]).await.expect("stop");
    let compose = w.sim.service(&uuids[2]).await.expect("service")["compose"]
        .as_str()
        .expect("compose")
        .replacen("image: ", "image: evil.example/", 1);
    c.patch_service(
        &uuids[2],
        &cf_bridge::coolify::ServicePatch {
            compose_yaml: Some(compose),
            ..Default::default()
        },
    )
    .await
    .expect("patch");
    w.wait("the deleted service gone", WAIT, || async {
        w.sim.service(&uuids[0]).await.is_none().then_some(())
    })
    .await;

    let before = passes();
    w.sim.clear_requests().await;
    resync().await;
    resync_done(before + 1).await;
    // Repaired: a new service for the deleted one, the stopped one running, our compose back.
    let recreated = w
        .wait_record("bot_instances", &ids[0], "a new service", WAIT, |r| {
            r["status"] == "running" && r["coolify_service_id"].as_str().is_some_and(|u| u != uuids[0])
        })
        .await;
    w.wait("the stopped service running again", WAIT, || async {
        let s = w.sim.service(&uuids[1]).await?;
        s["status"].as_str()?.starts_with("running").then_some(())
    })
    .await;
    w.wait("our compose back", WAIT, || async {
        let s = w.sim.service(&uuids[2]).await?;
        let running = s["status"].as_str()?.starts_with("running");
        (!s["compose"].as_str()?.contains("evil.example") && running).then_some(())
    })
    .await;
    w.bridge.admin().wait_idle(WAIT).await;
    let repaired = calls(&w).await;
    println!("resync with drift: {} calls {repaired:?}", repaired.len());
    // The pass's one list found all three (the first call); lists after it are the status reads of the
    // repairs waiting together (two or more waiters share one list).
    assert_eq!(
        repaired.first().map(String::as_str),
        Some("GET /services"),
        "one list found all three: {repaired:?}"
    );
    assert!(lists(&repaired) >= passes() - before, "{repaired:?}");
    // The untouched instance was left alone; the repaired ones are not repaired again.
    let fourth = format!("/api/v1/services/{}", uuids[3]);
    assert!(
        !w.sim
            .requests()
            .await
            .iter()
            .any(|r| r["uri"].as_str().is_some_and(|u| u.starts_with(&fourth))),
        "the untouched service was not called"
    );
    assert!(recreated["coolify_service_id"].as_str().is_some());
    let before = passes();
    w.sim.clear_requests().await;
    resync().await;
    resync_done(before + 1).await;
    w.bridge.admin().wait_idle(WAIT).await;
    let after = calls(&w).await;
    assert!(
        !after.is_empty() && after.iter().all(|c| c == "GET /services") && after.len() == passes() - before,
        "repaired: no drift left, one list per pass: {after:?}"
    );
}

/// A record whose job is still at work is left out of the drift check: its listed stamp may predate what
/// the job does in Coolify (under a backlog such stamps made hundreds of false drift findings, each a
/// Coolify read). A settled one beside it with the same drift is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drift_check_leaves_a_record_whose_job_is_at_work_to_it() {
    let w = World::start(
        SIM_QUICK,
        &[
            ("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "3600"),
            ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600"),
        ],
    )
    .await;
    let tenant = w.create_tenant("atwork", "business").await;
    let busy = w.create_instance(&tenant, "base-llm", "atwork1", "running").await;
    let settled = w.create_instance(&tenant, "base-llm", "atwork2", "running").await;
    let mut uuids = Vec::new();
    for id in [&busy, &settled] {
        let r = w.wait_status(id, "running", WAIT).await;
        uuids.push(r["coolify_service_id"].as_str().expect("uuid").to_string());
    }
    w.bridge.admin().wait_idle(WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Both services stopped behind the bridge's back; then a change of `busy` whose job keeps failing.
    let c = w.sim.client();
    for uuid in &uuids {
        c.stop_service(uuid).await.expect("stop");
    }
    w.sim
        .set_fault(json!({"route": "PATCH /services/{uuid}", "error_rate": 1.0}))
        .await;
    w.pb.patch("bot_instances", &busy, json!({"config": {"MODEL": "other"}}))
        .await;
    let admin = w.bridge.admin();
    w.wait("the busy record's job failing", WAIT, || async {
        let (_, body) = admin.get("/admin/jobs?state=failed&limit=50").await;
        body["jobs"]
            .as_array()?
            .iter()
            .any(|j| j["record_id"] == busy.as_str())
            .then_some(())
    })
    .await;

    let before = w.bridge.log().matches("resync done").count();
    let (code, body) = admin.send(reqwest::Method::POST, "/admin/resync", json!({})).await;
    assert_eq!(code, 202, "{body}");
    w.wait("the resync pass", WAIT, || async {
        (w.bridge.log().matches("resync done").count() > before).then_some(())
    })
    .await;
    let log = w.bridge.log();
    let found = |id: &str| {
        log.lines()
            .any(|l| l.contains("service changed behind the bridge's back") && l.contains(id))
    };
    assert!(found(&settled), "the settled record's drift is found");
    assert!(!found(&busy), "the record whose job is at work is left to it");
    w.sim.clear_faults().await;
}

/// Acting first on the service the journal knows: when it was deleted behind the bridge's back, the
/// action's 404 makes the job observe Coolify and create the service again, with no error shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_on_a_service_gone_behind_the_bridges_back_recreates_it() {
    let w = World::start(
        SIM_QUICK,
        &[("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "3600")],
    )
    .await;
    let tenant = w.create_tenant("gone", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "gone1", "running").await;
    let running = w.wait_status(&id, "running", WAIT).await;
    let uuid = running["coolify_service_id"].as_str().expect("uuid").to_string();
    w.bridge.admin().wait_idle(WAIT).await;
    w.sim.client().delete_service(&uuid).await.expect("delete");
    w.wait("the service gone", WAIT, || async {
        w.sim.service(&uuid).await.is_none().then_some(())
    })
    .await;

    w.sim.clear_requests().await;
    w.pb.patch("bot_instances", &id, json!({"config": {"MODEL": "again"}}))
        .await;
    let r = w
        .wait_record("bot_instances", &id, "a new service, running", WAIT, |r| {
            r["status"] == "running" && r["coolify_service_id"].as_str().is_some_and(|u| u != uuid)
        })
        .await;
    assert_eq!(r["error_message"], "", "{r}");
    let failed: Vec<Value> = w
        .deploy_logs(&id)
        .await
        .into_iter()
        .filter(|row| row["status"] == "failed")
        .collect();
    assert!(failed.is_empty(), "no failure recorded: {failed:?}");
    let calls = calls(&w).await;
    println!("action on a vanished service: {} calls {calls:?}", calls.len());
    assert_eq!(
        calls[..3],
        ["PATCH /services/{uuid}", "GET /services/{uuid}", "POST /services"],
        "act, find it gone, create: {calls:?}"
    );
}
