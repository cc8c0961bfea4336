//! Issue 17, DESIGN.md principle 8: the status reads of reconciles waiting on `running:*` are chosen by
//! cost within the status share of the budget. The simulator's request log shows which reads were made:
//! at the default budget one tenant's waiters read its project environment and waiters of several tenants
//! share the list; at a raised budget each waiter reads its own service and the fleet's list is never read.

use std::time::Duration;

use cf_testkit::world::World;

const WAIT: Duration = Duration::from_secs(60);
const LIST: &str = "GET /services";
const ONE: &str = "GET /services/{uuid}";
const ENVIRONMENT: &str = "GET /projects/{uuid}/{environment_name_or_uuid}";

/// Starts take 4 s in the simulator: the waiters of a burst overlap for a few rounds.
const SIM_SLOW_START: &[&str] = &[
    "--start-delay-ms",
    "4000",
    "--running-delay-ms",
    "0",
    "--delete-delay-ms",
    "100",
    "--rate-limit",
    "100000",
];

async fn world(requests_per_minute: &str) -> World {
    World::start(
        SIM_SLOW_START,
        &[
            // Only the waiters read statuses: no health poll, no periodic resync or orphan scan.
            ("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "3600"),
            ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600"),
            ("CF_BRIDGE__COOLIFY__REQUESTS_PER_MINUTE", requests_per_minute),
            ("CF_BRIDGE__RECONCILE__RUNNING_TIMEOUT_SECS", "60"),
        ],
    )
    .await
}

/// Tenants with their projects made, the bridge idle and the request log cleared.
async fn tenants(w: &World, slugs: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for slug in slugs {
        ids.push(w.create_tenant(slug, "business").await);
    }
    for id in &ids {
        w.wait_record("tenants", id, "the tenant's project", WAIT, |t| {
            !t["coolify_project_uuid"].as_str().unwrap_or_default().is_empty()
        })
        .await;
    }
    w.bridge.admin().wait_idle(WAIT).await;
    ids
}

/// The status reads made while the instances (tenant, subdomain) were created and reached `running`,
/// as (list, per service, per environment), less the lists of resync passes made meanwhile (a reconnect
/// of the realtime stream on a loaded machine runs one; each lists once).
async fn reads_until_running(w: &World, instances: &[(&str, String)]) -> (usize, usize, usize) {
    let passes = || w.bridge.log().matches("resync done").count();
    let passes_before = passes();
    w.sim.clear_requests().await;
    let mut ids = Vec::new();
    for (tenant, sub) in instances {
        ids.push(w.create_instance(tenant, "base-llm", sub, "running").await);
    }
    for id in &ids {
        w.wait_status(id, "running", WAIT).await;
    }
    w.bridge.admin().wait_idle(WAIT).await;
    let log = w.sim.requests().await;
    assert_eq!(log.iter().filter(|r| r["status"] == 429).count(), 0, "no 429");
    let n = |p: &str| log.iter().filter(|r| r["path"] == p).count();
    let resyncs = passes() - passes_before;
    let reads = (n(LIST).saturating_sub(resyncs), n(ONE), n(ENVIRONMENT));
    println!(
        "{} instances: {reads:?} (lists, per service, per environment), {resyncs} resync passes",
        instances.len()
    );
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_budget_one_tenants_waiters_read_its_environment() {
    let w = world("180").await;
    let t = tenants(&w, &["envreads"]).await;
    let instances: Vec<(&str, String)> = (0..5).map(|i| (t[0].as_str(), format!("envreads{i}"))).collect();
    let (lists, _, environments) = reads_until_running(&w, &instances).await;
    assert_eq!(lists, 0, "waiters of one tenant never list the fleet");
    assert!(environments >= 1, "they read their project's environment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_budget_waiters_of_many_tenants_share_the_list() {
    let w = world("180").await;
    let t = tenants(&w, &["many1", "many2", "many3", "many4"]).await;
    let instances: Vec<(&str, String)> = t
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), format!("many{i}x")))
        .collect();
    let (lists, _, environments) = reads_until_running(&w, &instances).await;
    assert!(lists >= 1, "four tenants' waiters share the list");
    assert_eq!(environments, 0, "one environment each would be four calls a round");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_raised_budget_each_waiter_reads_its_own_service() {
    let w = world("100000").await;
    let t = tenants(&w, &["raised1", "raised2", "raised3"]).await;
    let instances: Vec<(&str, String)> = (0..9).map(|i| (t[i % 3].as_str(), format!("raised{i}x"))).collect();
    let (lists, singles, environments) = reads_until_running(&w, &instances).await;
    assert_eq!(lists, 0, "a raised budget never lists the fleet for its waiters");
    assert_eq!(environments, 0, "nor reads whole environments");
    assert!(
        singles >= instances.len(),
        "each waiter read its own service: {singles}"
    );
}
