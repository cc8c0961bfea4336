//! The status board against coolify-sim: concurrent waiters share paced `GET /services` rounds, and each
//! still sees its service reach running; waiters of one project read its environment, and a raised budget
//! reads each service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cf_bridge::coolify::*;
use cf_bridge::metrics::Metrics;
use cf_bridge::reconcile::context::StatusBoard;
use cf_testkit::TestSim;
use coolify_sim::LOCALHOST_SERVER_UUID;

const BOT: &str = "services:\n  bot:\n    image: ghcr.io/cf/bot:1\n";
const INTERVAL: Duration = Duration::from_millis(300);

fn client(sim: &TestSim) -> CoolifyClient {
    CoolifyClient::new(&sim.settings(), Arc::new(Metrics::new())).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_paced_rounds_and_all_see_running() {
    // Starts take 1 s in the simulator, so several rounds pass before any service runs.
    let sim = TestSim::start(&["--rate-limit", "100000", "--start-delay-ms", "1000"]);
    let c = client(&sim);
    let project = c.create_project("board", None).await.expect("project");
    let mut uuids = Vec::new();
    for i in 0..12 {
        let req = CreateService {
            project_uuid: project.clone(),
            environment_name: Some("production".into()),
            server_uuid: LOCALHOST_SERVER_UUID.into(),
            name: format!("svc-{i}"),
            compose_yaml: BOT.into(),
            ..Default::default()
        };
        uuids.push(c.create_service(&req).await.expect("create").uuid);
    }
    for u in &uuids {
        c.start_service(u).await.expect("start");
    }
    sim.clear_requests().await;

    // Rounds closer than the default budget allows one call for, waiters of no known project: every
    // round is the list (the other cases are the next test).
    let board = Arc::new(StatusBoard::new(c.clone(), 180, "production").with_interval(INTERVAL));
    let started = Instant::now();
    let mut waiters = tokio::task::JoinSet::new();
    // Waiters arrive one by one, as reconciles do; each needs a reading newer than its arrival, yet a new
    // arrival must not set off a round of its own.
    for u in uuids.clone() {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let board = Arc::clone(&board);
        waiters.spawn(async move {
            let _waiting = board.waiter(&u, None);
            let mut after = Instant::now();
            loop {
                let (asked, status) = board.status_after(&u, after).await.expect("status");
                assert!(asked >= after, "a reading older than asked for");
                if status.is_some_and(|s| s.is_running()) {
                    return;
                }
                assert!(after.elapsed() < Duration::from_secs(10), "{u} never ran");
                after = asked + Duration::from_millis(1);
            }
        });
    }
    while let Some(r) = waiters.join_next().await {
        r.expect("waiter");
    }
    let elapsed = started.elapsed();

    let lists: Vec<u64> = sim
        .requests()
        .await
        .iter()
        .filter(|r| r["path"] == "GET /services")
        .filter_map(|r| r["at_ms"].as_u64())
        .collect();
    let per_service = sim
        .requests()
        .await
        .iter()
        .filter(|r| r["path"] == "GET /services/{uuid}")
        .count();
    assert!(
        per_service <= 1,
        "{per_service} single reads: at most the first arrival's, alone"
    );
    assert!(lists.len() >= 2, "the first round cannot show running: {lists:?}");
    let max_rounds = (elapsed.as_millis() / INTERVAL.as_millis()) as usize + 1;
    assert!(
        lists.len() <= max_rounds,
        "{} list calls in {elapsed:?} for 12 waiters: rounds are not shared or not paced",
        lists.len()
    );
    for pair in lists.windows(2) {
        // at_ms is logged when the answer is ready; allow a little for the list itself.
        assert!(
            pair[1] - pair[0] >= INTERVAL.as_millis() as u64 - 50,
            "rounds closer than the interval: {lists:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_projects_waiters_read_its_environment_a_raised_budget_reads_each_service() {
    let sim = TestSim::start(&["--rate-limit", "100000", "--start-delay-ms", "600"]);
    let c = client(&sim);
    let project = c.create_project("few", None).await.expect("project");
    let mut uuids = Vec::new();
    for i in 0..6 {
        let req = CreateService {
            project_uuid: project.clone(),
            environment_name: Some("production".into()),
            server_uuid: LOCALHOST_SERVER_UUID.into(),
            name: format!("svc-{i}"),
            compose_yaml: BOT.into(),
            ..Default::default()
        };
        let uuid = c.create_service(&req).await.expect("create").uuid;
        uuids.push(uuid);
    }
    // Waits as the instance executor does: counted as a waiter of its project, a reading at a time.
    let wait_all = |board: Arc<StatusBoard>| {
        let uuids = uuids.clone();
        let project = project.clone();
        async move {
            let mut waiters = tokio::task::JoinSet::new();
            for u in uuids {
                let (board, project) = (Arc::clone(&board), project.clone());
                waiters.spawn(async move {
                    let _waiting = board.waiter(&u, Some(&project));
                    let mut after = Instant::now();
                    loop {
                        let (asked, status) = board.status_after(&u, after).await.expect("status");
                        if status.is_some_and(|s| s.is_running()) {
                            return;
                        }
                        assert!(asked.elapsed() < Duration::from_secs(10), "{u} never ran");
                        after = asked + Duration::from_millis(1);
                    }
                });
            }
            while let Some(r) = waiters.join_next().await {
                r.expect("waiter");
            }
        }
    };
    let counts = |requests: Vec<serde_json::Value>| {
        let n = |p: &str| requests.iter().filter(|r| r["path"] == p).count();
        (
            n("GET /services/{uuid}"),
            n("GET /projects/{uuid}/{environment_name_or_uuid}"),
            n("GET /services"),
        )
    };

    // The default budget: one call a round, so the project's environment.
    for u in &uuids {
        c.start_service(u).await.expect("start");
    }
    sim.clear_requests().await;
    wait_all(Arc::new(
        StatusBoard::new(c.clone(), 180, "production").with_interval(INTERVAL),
    ))
    .await;
    let (single, environments, lists) = counts(sim.requests().await);
    println!("default budget: {single} single reads, {environments} environments, {lists} lists");
    assert_eq!(lists, 0, "one project's waiters never list the fleet");
    assert!(environments >= 1, "they read its environment");
    assert!(single <= 1, "{single} single reads: at most a first waiter's alone");

    // A raised budget: every service by itself.
    for u in &uuids {
        c.restart_service(u).await.expect("restart");
    }
    sim.clear_requests().await;
    wait_all(Arc::new(
        StatusBoard::new(c.clone(), 100_000, "production").with_interval(INTERVAL),
    ))
    .await;
    let (single, environments, lists) = counts(sim.requests().await);
    assert_eq!((lists, environments), (0, 0), "only single reads");
    assert!(single >= 6, "each read its own service: {single}");
}
