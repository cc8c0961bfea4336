//! Issue 15: a deploy's `deploy_logs` row and its write-back survive a PocketBase connection cut at the
//! worst moment. Each test drops or loses exactly one request through a fault proxy (see
//! cf_testkit::faultproxy), the interleaving that left an instance running with no row in the
//! reliability suite's realtime-cut scenario, and checks the outcome: exactly one row for the deploy,
//! the record written back, and no Coolify work repeated.

use std::sync::atomic::Ordering;
use std::time::Duration;

use cf_testkit::eventually;
use cf_testkit::faultproxy::{Fault, ProxiedStack, Rule};
use serde_json::Value;

/// The final write-back of a successful deploy (whatever request carries it): it sets `applied_hash`.
const WRITE_BACK: &str = r#""applied_hash":"s=running"#;

/// The instance reads `running` and has at least one deploy_logs row.
async fn running_with_rows(s: &ProxiedStack, id: &str, within: Duration) -> Vec<Value> {
    eventually(within, "the instance running with its deploy_logs row", || async {
        let inst = s.record("bot_instances", id).await;
        let rows = s.deploy_logs(id).await;
        (inst["status"] == "running" && !rows.is_empty()).then_some(rows)
    })
    .await
}

/// The Coolify calls that change a service (create, update, env, start or deploy, restart, stop).
async fn coolify_work(s: &ProxiedStack) -> Vec<String> {
    s.sim
        .requests()
        .await
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .filter(|p| {
            p == "POST /services"
                || p.starts_with("PATCH /services")
                || p.ends_with("/start")
                || p == "POST /deploy"
                || p.ends_with("/restart")
                || p.ends_with("/stop")
        })
        .collect()
}

fn describe(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| format!("{} {} {}", r["action"], r["status"], r["message"]))
        .collect()
}

/// The interleaving of the failed run: the deploy's row is written while the connection is cut. The row
/// must be written by a retry, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_logs_write_lost_in_a_cut_is_retried_with_the_job() {
    let s = ProxiedStack::start(&[]).await;
    let tenant = s.ready_tenant("dl-lost-row").await;
    let dropped = s.proxy.add_rule(Rule::new(
        Fault::Drop,
        Some("POST"),
        &["deploy_logs", r#""action":"deploy""#],
    ));
    let id = s.create_instance(&tenant, "dl-lost-row-a").await;
    running_with_rows(&s, &id, Duration::from_secs(30)).await;
    s.wait_idle(Duration::from_secs(30)).await;
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the fault never hit: the test proves nothing"
    );
    let rows = s.deploy_logs(&id).await;
    assert_eq!(rows.len(), 1, "one deploy, one row: {:?}", describe(&rows));
    assert_eq!(rows[0]["action"], "deploy");
    assert_eq!(rows[0]["status"], "success");
}

/// The deploy's final write-back is lost before PocketBase sees it: the retry completes the write-back
/// without redoing the deploy in Coolify, and the deploy keeps exactly one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_write_back_is_retried_without_a_second_row_or_repeated_work() {
    let s = ProxiedStack::start(&[]).await;
    let tenant = s.ready_tenant("dl-lost-wb").await;
    let dropped = s.proxy.add_rule(Rule::new(Fault::Drop, None, &[WRITE_BACK]));
    let id = s.create_instance(&tenant, "dl-lost-wb-a").await;
    running_with_rows(&s, &id, Duration::from_secs(30)).await;
    s.wait_idle(Duration::from_secs(30)).await;
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the fault never hit: the test proves nothing"
    );
    let rows = s.deploy_logs(&id).await;
    assert_eq!(rows.len(), 1, "one deploy, one row: {:?}", describe(&rows));
    assert_eq!(
        (&rows[0]["action"], &rows[0]["status"]),
        (&"deploy".into(), &"success".into())
    );
    let inst = s.record("bot_instances", &id).await;
    assert!(
        inst["applied_hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("s=running")),
        "written back: {inst}"
    );
    assert_eq!(
        coolify_work(&s).await,
        ["POST /services", "PATCH /services/{uuid}/envs/bulk", "POST /deploy"],
        "the deploy's Coolify calls, once: the retry must not redo them"
    );
}

/// PocketBase carries out the final write-back but its answer is lost: the re-send must not write the
/// row twice (the row's id makes it idempotent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_the_write_back_writes_no_second_row() {
    let s = ProxiedStack::start(&[]).await;
    let tenant = s.ready_tenant("dl-lost-answer").await;
    let lost = s.proxy.add_rule(Rule::new(Fault::LoseResponse, None, &[WRITE_BACK]));
    let id = s.create_instance(&tenant, "dl-lost-answer-a").await;
    running_with_rows(&s, &id, Duration::from_secs(30)).await;
    s.wait_idle(Duration::from_secs(30)).await;
    assert_eq!(
        lost.load(Ordering::SeqCst),
        1,
        "the fault never hit: the test proves nothing"
    );
    let rows = s.deploy_logs(&id).await;
    assert_eq!(rows.len(), 1, "one deploy, one row: {:?}", describe(&rows));
    assert_eq!(rows[0]["status"], "success");
}
