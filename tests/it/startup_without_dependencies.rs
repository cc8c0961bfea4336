//! Issue 18, item 2: the bridge starts while Coolify or PocketBase does not answer, takes events into its
//! journal, reports the dependency down (in `/readyz`'s body and `cf_bridge_dependency_up`) while staying
//! ready, logs one line per change of state, and converges once the dependency is back. And a job that
//! finds PocketBase unavailable waits without using up its attempts (a dead job for a record never
//! applied was never revived: resync's create event is a Duplicate of the original one).

use std::sync::atomic::Ordering;
use std::time::Duration;

use cf_bridge::webhook::WebhookSecret;
use cf_testkit::faultproxy::{Fault, ProxiedStack, Rule};
use cf_testkit::world::{Down, SIM_FAST, World};
use cf_testkit::{WEBHOOK_SECRET, eventually};
use serde_json::{Value, json};

async fn readyz(url: &str) -> (u16, Value) {
    let r = cf_testkit::http()
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

async fn dependency_up(w: &World, dependency: &str) -> f64 {
    w.bridge
        .admin()
        .metric(&format!("cf_bridge_dependency_up{{dependency=\"{dependency}\"}}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_coolify_is_down_and_converges_when_it_comes_up() {
    let mut w = World::start_without(Down::Coolify, SIM_FAST, &[]).await;
    let (status, body) = readyz(&w.bridge.url).await;
    assert_eq!(status, 200, "ready: it can take and keep events: {body}");
    assert_eq!(body["dependencies"]["coolify"]["up"], false, "{body}");
    assert!(body["dependencies"]["coolify"]["reason"].is_string(), "{body}");
    assert_eq!(body["dependencies"]["pocketbase"]["up"], true, "{body}");
    assert_eq!(dependency_up(&w, "coolify").await, 0.0);
    assert_eq!(dependency_up(&w, "pocketbase").await, 1.0);

    let tenant = w.create_tenant("down-coolify", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "down-coolify", "running").await;
    // Events arrive and wait; several probe rounds pass without a job being used up.
    eventually(Duration::from_secs(20), "the instance's event journaled", || async {
        (!w.bridge
            .admin()
            .events(&format!("bot_instances/{id}"), None)
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, jobs) = w.bridge.admin().get("/admin/jobs?state=dead&limit=10").await;
    assert_eq!(jobs["counts"]["dead"].as_i64().unwrap_or(0), 0, "{jobs}");

    w.sim.start_again();
    w.wait_status(&id, "running", Duration::from_secs(60)).await;
    let (status, body) = readyz(&w.bridge.url).await;
    assert_eq!(
        (status, &body["dependencies"]["coolify"]["up"]),
        (200, &json!(true)),
        "{body}"
    );
    assert_eq!(dependency_up(&w, "coolify").await, 1.0);
    let log = w.bridge.log();
    assert_eq!(
        count(&log, "coolify is unavailable"),
        1,
        "one line per change of state\n{log}"
    );
    assert_eq!(count(&log, "coolify is reachable again"), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_pocketbase_is_down_journals_webhooks_and_converges_when_it_returns() {
    let mut w = World::start_without(Down::PocketBase, SIM_FAST, &[]).await;
    let (status, body) = readyz(&w.bridge.url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["dependencies"]["pocketbase"]["up"], false, "{body}");
    assert_eq!(body["dependencies"]["coolify"]["up"], true, "{body}");
    assert_eq!(dependency_up(&w, "pocketbase").await, 0.0);

    // A webhook delivered meanwhile (PocketBase's hook may fire just before it stops) is journaled.
    let secret: WebhookSecret = WEBHOOK_SECRET.parse().expect("webhook secret");
    let body = serde_json::to_vec(&json!({"event": "create", "collection": "tenants",
        "record": {"id": "pbdownwebhook01", "updated": "2026-01-02 03:04:05.678Z", "slug": "gone"}}))
    .expect("json");
    let ts = chrono::Utc::now().timestamp().to_string();
    let answer = cf_testkit::http()
        .post(format!("{}/hooks/pocketbase", w.bridge.url))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_pb_down")
        .header("webhook-timestamp", &ts)
        .header("webhook-signature", secret.sign("msg_pb_down", &ts, &body))
        .body(body)
        .send()
        .await
        .expect("POST webhook");
    assert_eq!(answer.status().as_u16(), 202);
    assert_eq!(w.bridge.admin().events("tenants/pbdownwebhook01", None).await.len(), 1);

    w.pb.restart().await;
    let tenant = w.create_tenant("down-pb", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "down-pb", "running").await;
    w.wait_status(&id, "running", Duration::from_secs(60)).await;
    let (_, body) = readyz(&w.bridge.url).await;
    assert_eq!(body["dependencies"]["pocketbase"]["up"], true, "{body}");
    let log = w.bridge.log();
    assert_eq!(count(&log, "pocketbase is unavailable"), 1, "{log}");
    assert_eq!(count(&log, "pocketbase is reachable again"), 1, "{log}");
}

/// The known bug: the job's PocketBase requests (here its write-back batch: the job takes the record from
/// its realtime frame, so it makes no read) fail as "PocketBase unreachable" more times than
/// `queue.max_attempts`, while PocketBase's health answers. The job used to die, and nothing revived it
/// (the resync's create event has the original's change key). Now it waits and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_finds_pocketbase_unavailable_waits_instead_of_dying() {
    let s = ProxiedStack::start(&[("CF_BRIDGE__QUEUE__MAX_ATTEMPTS", "3")]).await;
    let tenant = s.ready_tenant("dep-wait").await;
    let dropped = s
        .proxy
        .add_rule(Rule::new(Fault::Drop, Some("POST"), &["/api/batch"]).times(8));
    let id = s.create_instance(&tenant, "dep-wait").await;
    eventually(Duration::from_secs(60), "the instance running", || async {
        (s.record("bot_instances", &id).await["status"] == "running").then_some(())
    })
    .await;
    assert_eq!(dropped.load(Ordering::SeqCst), 8, "every fault was hit");
    let (_, jobs) = s.bridge.admin().get("/admin/jobs?state=dead&limit=10").await;
    assert_eq!(jobs["counts"]["dead"].as_i64().unwrap_or(0), 0, "{jobs}");
}
