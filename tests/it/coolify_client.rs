//! The Coolify client against the strict simulator: every endpoint, error paths, faults.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cf_bridge::coolify::*;
use cf_bridge::metrics::Metrics;
use cf_testkit::TestSim;
use cf_testkit::coolify::{ensure_project, ensure_service};
use cf_testkit::http as reqwest_client;
use coolify_sim::LOCALHOST_SERVER_UUID;
use secrecy::SecretString;
use serde_json::{Value, json};

const BOT: &str = "services:\n  bot:\n    image: ghcr.io/cf/bot:1\n    environment:\n      TOKEN: ${BOT_TOKEN}\n      MODE: ${MODE:-fast}\n  cache:\n    image: redis:7\n";

fn fast_sim(extra: &[&str]) -> TestSim {
    let mut args = vec![
        "--rate-limit",
        "100000",
        "--start-delay-ms",
        "150",
        "--delete-delay-ms",
        "150",
    ];
    args.extend_from_slice(extra);
    TestSim::start(&args)
}

fn client(sim: &TestSim) -> CoolifyClient {
    CoolifyClient::new(&sim.settings(), Arc::new(Metrics::new())).expect("client")
}

fn service_req(project: &str, name: &str, domain: Option<&str>) -> CreateService {
    CreateService {
        project_uuid: project.into(),
        environment_name: Some("production".into()),
        server_uuid: LOCALHOST_SERVER_UUID.into(),
        name: name.into(),
        compose_yaml: BOT.into(),
        urls: domain
            .map(|d| {
                vec![ServiceUrl {
                    name: "bot".into(),
                    url: format!("https://{d}:8080"),
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

async fn wait_status(c: &CoolifyClient, uuid: &str, pred: impl Fn(&ServiceStatus) -> bool) -> ServiceStatus {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = c.get_service(uuid).await.expect("get service").status;
        if pred(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_endpoint_happy_path() {
    let sim = fast_sim(&[]);
    let c = client(&sim);
    c.health().await.expect("health");
    assert_eq!(c.version().await.expect("version"), "4.3.11");
    assert_eq!(c.team().await.expect("team").id, 0);
    let servers = c.servers().await.expect("servers");
    assert!(
        servers
            .iter()
            .any(|s| s.uuid == LOCALHOST_SERVER_UUID && s.is_usable && s.is_reachable)
    );

    let p = c
        .create_project("cf-tenant-a", Some("tenant a"))
        .await
        .expect("create project");
    let detail = c.get_project(&p).await.expect("get project");
    assert_eq!(detail.project.name, "cf-tenant-a");
    assert_eq!(
        detail.environments.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["production"]
    );
    assert_eq!(c.list_environments(&p).await.expect("envs").len(), 1);
    assert_eq!(c.find_projects_by_name("cf-tenant-a").await.expect("find").len(), 1);
    assert!(c.list_projects().await.expect("list").iter().any(|x| x.uuid == p));
    let patched = c
        .patch_project(
            &p,
            &ProjectPatch {
                description: Some("renamed".into()),
                ..Default::default()
            },
        )
        .await
        .expect("patch project");
    assert_eq!(patched.description.as_deref(), Some("renamed"));

    let created = c
        .create_service(&service_req(&p, "cf-bot1", Some("bot1.example.com")))
        .await
        .expect("create service");
    assert_eq!(created.domains, ["https://bot1.example.com:8080"]);
    let svc = c.get_service(&created.uuid).await.expect("get service");
    assert_eq!(svc.name, "cf-bot1");
    assert!(svc.status.is_stopped(), "{:?}", svc.status);
    assert_eq!(svc.applications.len(), 1);
    assert_eq!(svc.databases.len(), 1, "redis is a database");
    assert_eq!(c.find_services_by_name("cf-bot1").await.expect("find").len(), 1);
    assert_eq!(c.list_services().await.expect("list").len(), 1);
    let env = c.get_environment(&p, "production").await.expect("get environment");
    assert_eq!(
        env.services.iter().map(|s| s.uuid.as_str()).collect::<Vec<_>>(),
        [created.uuid.as_str()]
    );

    // ${VAR} references were created with empty values / defaults; bulk upserts by key.
    let envs = c.list_envs(&created.uuid).await.expect("envs");
    let keys: Vec<_> = envs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["BOT_TOKEN", "MODE"]);
    c.bulk_upsert_envs(
        &created.uuid,
        &[
            EnvVarInput::new("BOT_TOKEN", SecretString::from("s3cr$t"), true),
            EnvVarInput::plain("EXTRA", "1"),
        ],
    )
    .await
    .expect("bulk");
    let envs = c.list_envs(&created.uuid).await.expect("envs");
    let tok = envs.iter().find(|e| e.key == "BOT_TOKEN").expect("BOT_TOKEN");
    assert_eq!(tok.value.as_deref(), Some("s3cr$t"));
    assert!(tok.is_literal);
    assert!(!format!("{tok:?}").contains("s3cr"), "EnvVar Debug must redact");
    assert_eq!(envs.len(), 3);

    // Lifecycle: exited -> starting -> running; repeated start/stop are Ok.
    c.start_service(&created.uuid).await.expect("start");
    assert!(matches!(
        c.get_service(&created.uuid).await.expect("get").status,
        ServiceStatus::Starting { .. }
    ));
    c.start_service(&created.uuid)
        .await
        .expect("start while starting is accepted");
    let s = wait_status(&c, &created.uuid, ServiceStatus::is_running).await;
    assert_eq!(s.to_string(), "running:unknown");
    c.start_service(&created.uuid).await.expect("already running is Ok");
    c.restart_service(&created.uuid).await.expect("restart");
    assert!(matches!(
        c.get_service(&created.uuid).await.expect("get").status,
        ServiceStatus::Starting { .. }
    ));
    c.stop_service(&created.uuid).await.expect("stop");
    assert!(c.get_service(&created.uuid).await.expect("get").status.is_stopped());
    c.stop_service(&created.uuid).await.expect("already stopped is Ok");

    let patched = c
        .patch_service(
            &created.uuid,
            &ServicePatch {
                urls: Some(vec![ServiceUrl {
                    name: "bot".into(),
                    url: "https://bot1b.example.com".into(),
                }]),
                description: Some("d".into()),
                ..Default::default()
            },
        )
        .await
        .expect("patch service");
    assert_eq!(patched.domains, ["https://bot1b.example.com"]);

    // Teardown: the project refuses while the service (even pending deletion) exists.
    assert!(matches!(c.delete_project(&p).await, Err(CoolifyError::HasResources)));
    c.delete_service(&created.uuid).await.expect("delete");
    assert!(c.get_service(&created.uuid).await.is_ok(), "deletion is asynchronous");
    assert!(matches!(c.delete_project(&p).await, Err(CoolifyError::HasResources)));
    c.delete_service_and_wait(&created.uuid, Duration::from_secs(5))
        .await
        .expect("gone");
    assert!(matches!(
        c.get_service(&created.uuid).await,
        Err(CoolifyError::NotFound { .. })
    ));
    c.delete_project(&p).await.expect("delete project");
    assert!(matches!(c.get_project(&p).await, Err(CoolifyError::NotFound { .. })));
}

#[tokio::test]
async fn documented_error_paths() {
    let sim = fast_sim(&[]);
    let c = client(&sim);

    let mut bad = sim.settings();
    bad.token = SecretString::from("1|wrong");
    let bad = CoolifyClient::new(&bad, Arc::new(Metrics::new())).expect("client");
    let err = bad.list_projects().await.unwrap_err();
    assert!(matches!(err, CoolifyError::Unauthorized));
    assert!(!err.to_string().contains("wrong"), "token must not leak: {err}");
    let unauth = sim.requests().await.iter().filter(|r| r["status"] == 401).count();
    assert_eq!(unauth, 1, "401 is never retried");

    assert!(matches!(
        c.get_service("nope").await,
        Err(CoolifyError::NotFound { .. })
    ));
    assert!(matches!(
        c.get_project("nope").await,
        Err(CoolifyError::NotFound { .. })
    ));
    assert!(matches!(
        c.get_environment("nope", "production").await,
        Err(CoolifyError::NotFound { .. })
    ));
    c.delete_service("nope")
        .await
        .expect("deleting a missing service is Ok");
    assert!(matches!(
        c.start_service("nope").await,
        Err(CoolifyError::NotFound { .. })
    ));

    match c.create_project("ab", None).await {
        Err(CoolifyError::Validation { errors, .. }) => assert!(errors.contains_key("name"), "{errors:?}"),
        other => panic!("{other:?}"),
    }
    match c.create_project("bad<name>", None).await {
        Err(CoolifyError::Validation { errors, .. }) => assert!(errors.contains_key("name")),
        other => panic!("{other:?}"),
    }

    let p = c.create_project("cf-tenant-e", None).await.expect("project");
    c.create_service(&service_req(&p, "cf-first", Some("taken.example.com")))
        .await
        .expect("first");
    let err = c
        .create_service(&service_req(&p, "cf-second", Some("taken.example.com")))
        .await
        .unwrap_err();
    match &err {
        CoolifyError::Conflict { conflicts, .. } => {
            assert_eq!(conflicts.len(), 1);
            assert_eq!(conflicts[0].domain, "taken.example.com");
            assert_eq!(conflicts[0].resource_name, "cf-first");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .contains("domain taken.example.com is already used by service cf-first (uuid "),
        "{err}"
    );
    assert!(
        c.find_services_by_name("cf-second").await.expect("find").is_empty(),
        "the rejected service is removed"
    );

    let mut to_db = service_req(&p, "cf-db", None);
    to_db.urls = vec![ServiceUrl {
        name: "cache".into(),
        url: "https://db.example.com".into(),
    }];
    match c.create_service(&to_db).await {
        Err(CoolifyError::Validation { errors, .. }) => assert!(errors["_"][0].contains("cache"), "{errors:?}"),
        other => panic!("{other:?}"),
    }
    let mut bad_url = service_req(&p, "cf-url", None);
    bad_url.urls = vec![ServiceUrl {
        name: "bot".into(),
        url: "not a url".into(),
    }];
    assert!(matches!(
        c.create_service(&bad_url).await,
        Err(CoolifyError::Validation { .. })
    ));

    let mut no_env = service_req(&p, "cf-x", None);
    no_env.environment_name = None;
    assert!(matches!(
        c.create_service(&no_env).await,
        Err(CoolifyError::InvalidInput(_))
    ));
    let mut bad_yaml = service_req(&p, "cf-x", None);
    bad_yaml.compose_yaml = "services: [".into();
    assert!(matches!(
        c.create_service(&bad_yaml).await,
        Err(CoolifyError::InvalidInput(_))
    ));
    let mut wrong_env = service_req(&p, "cf-x", None);
    wrong_env.environment_name = Some("staging".into());
    assert!(matches!(
        c.create_service(&wrong_env).await,
        Err(CoolifyError::NotFound { .. })
    ));
    let mut wrong_server = service_req(&p, "cf-x", None);
    wrong_server.server_uuid = "nope".into();
    assert!(
        matches!(c.create_service(&wrong_server).await, Err(CoolifyError::NotFound { message }) if message.contains("Server"))
    );

    let svc = c.find_services_by_name("cf-first").await.expect("find").remove(0);
    let bad_key = [EnvVarInput::plain("OK_KEY", "1"), EnvVarInput::plain("1BAD", "2")];
    assert!(matches!(
        c.bulk_upsert_envs(&svc.uuid, &bad_key).await,
        Err(CoolifyError::Validation { .. })
    ));
    let envs = c.list_envs(&svc.uuid).await.expect("envs");
    assert!(
        envs.iter().any(|e| e.key == "OK_KEY"),
        "bulk is not transactional: earlier items stay"
    );
}

#[tokio::test]
async fn lost_responses_never_duplicate_creates() {
    let sim = fast_sim(&[]);
    let c = client(&sim);
    sim.set_fault(json!([
        {"route": "POST /projects", "lost_response": true, "lost_rate": 0.3},
        {"route": "POST /services", "lost_response": true, "lost_rate": 0.3},
    ]))
    .await;
    let mut project_uuids = Vec::new();
    for i in 0..100 {
        project_uuids.push(
            ensure_project(&c, &format!("cf-tenant-{i}"), None)
                .await
                .expect("ensure project"),
        );
    }
    let home = project_uuids[0].clone();
    for i in 0..100 {
        let req = service_req(&home, &format!("cf-inst-{i}"), Some(&format!("b{i}.example.com")));
        ensure_service(&c, &req).await.expect("ensure service");
    }
    let log = sim.requests().await;
    let lost = |t: &str| log.iter().filter(|r| r["path"] == t && r["lost"] == true).count();
    assert!(
        lost("POST /projects") > 5 && lost("POST /services") > 5,
        "faults must actually fire"
    );
    let state = sim.state().await;
    let projects = state["projects"].as_array().expect("projects");
    let services = state["services"].as_array().expect("services");
    assert_eq!(projects.len(), 100);
    assert_eq!(services.len(), 100);
    let mut names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 100);
    project_uuids.sort();
    project_uuids.dedup();
    assert_eq!(project_uuids.len(), 100);
}

#[tokio::test]
async fn creates_are_not_retried_but_safe_calls_are() {
    let sim = fast_sim(&[]);
    let c = CoolifyClient::new(&sim.settings(), Arc::new(Metrics::new())).expect("client");
    sim.set_fault(json!({"route": "*", "error_rate": 1.0})).await;
    assert!(matches!(
        c.create_project("cf-x1", None).await,
        Err(CoolifyError::Server { status: 500, .. })
    ));
    assert!(matches!(c.list_projects().await, Err(CoolifyError::Server { .. })));
    let log = sim.requests().await;
    let count = |t: &str| log.iter().filter(|r| r["path"] == t).count();
    assert_eq!(count("POST /projects"), 1, "POST /projects is never repeated");
    assert_eq!(
        count("GET /projects"),
        1 + MAX_RETRIES as usize,
        "GET is retried MAX_RETRIES times"
    );
    sim.clear_faults().await;
    sim.set_fault(json!({"route": "POST /projects", "lost_response": true}))
        .await;
    assert!(matches!(
        c.create_project("cf-x2", None).await,
        Err(CoolifyError::Transport(_))
    ));
    sim.clear_faults().await;
    assert_eq!(
        c.find_projects_by_name("cf-x2").await.expect("find").len(),
        1,
        "the change was applied"
    );
}

#[tokio::test]
async fn storm_of_429_is_waited_out_within_budget() {
    let sim = fast_sim(&[]);
    let mut cfg = sim.settings();
    cfg.requests_per_minute = 240; // 4 per second
    let c = CoolifyClient::new(&cfg, Arc::new(Metrics::new())).expect("client");
    sim.set_fault(json!({"route": "*", "storm_429": {"count": 2, "retry_after": 1}}))
        .await;
    let start = Instant::now();
    for _ in 0..8 {
        c.list_projects().await.expect("list after storm");
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(2), "waited Retry-After twice: {took:?}");
    let log = sim.requests().await;
    let throttled: Vec<&Value> = log.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(throttled.len(), 2);
    // Each retry came at least Retry-After (1 s) after its 429.
    for t in &throttled {
        let at = t["at_ms"].as_u64().expect("at_ms");
        let next = log
            .iter()
            .filter_map(|r| r["at_ms"].as_u64())
            .find(|&x| x > at)
            .expect("a retry");
        assert!(next - at >= 950, "retried {} ms after a 429", next - at);
    }
    // Never faster than the budget: burst + rate * elapsed.
    let secs = took.as_secs_f64();
    assert!(
        (log.len() as f64) <= f64::from(client::burst(240)) + 4.0 * secs + 1.0,
        "{} requests in {secs:.1} s",
        log.len()
    );
    assert!(c.budget_remaining() < f64::from(client::burst(240)));
}

#[tokio::test]
async fn a_high_budget_lets_a_round_of_reads_go_at_once() {
    let sim = fast_sim(&[]);
    let mut cfg = sim.settings();
    cfg.requests_per_minute = 100_000;
    let c = CoolifyClient::new(&cfg, Arc::new(Metrics::new())).expect("client");
    let before = c.budget_remaining();
    let reads = (0..50).map(|_| c.list_projects());
    for r in futures_util::future::join_all(reads).await {
        r.expect("list");
    }
    // A bucket of a twentieth of the minute's rate: 50 calls at once take 50 of 5,000 tokens, where a
    // bucket of 10 made 40 of them wait for tokens to trickle in.
    assert_eq!(before, 5_000.0);
    assert!(c.budget_remaining() > 4_900.0, "left {}", c.budget_remaining());
    assert_eq!(client::burst(180), client::MIN_BURST, "the default keeps 10");
}

#[tokio::test]
async fn real_rate_limit_headers_and_429() {
    let sim = TestSim::start(&["--rate-limit", "3"]);
    let http = reqwest_client();
    let mut last = None;
    for _ in 0..4 {
        last = Some(
            http.get(format!("{}/api/v1/projects", sim.url))
                .bearer_auth(&sim.token)
                .header("Accept", "application/json")
                .send()
                .await
                .expect("send"),
        );
    }
    let r = last.expect("a response");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-limit"], "3");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert!(r.headers().contains_key("retry-after") && r.headers().contains_key("x-ratelimit-reset"));
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": "Too Many Attempts."})
    );
    let health = http
        .get(format!("{}/api/health", sim.url))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200, "/api/health is exempt");
}

#[tokio::test]
async fn crash_and_forced_status_are_visible() {
    let sim = fast_sim(&[]);
    let c = client(&sim);
    let p = c.create_project("cf-crash", None).await.expect("project");
    let mut req = service_req(&p, "cf-crashy", None);
    req.compose_yaml = "services:\n  bot:\n    image: x/bot\n    healthcheck:\n      test: [CMD, 'true']\n".into();
    req.instant_deploy = true;
    let s = c.create_service(&req).await.expect("create");
    assert_eq!(
        wait_status(&c, &s.uuid, ServiceStatus::is_running).await.to_string(),
        "running:healthy"
    );
    sim.set_fault(json!({"crash_service": s.uuid})).await;
    assert!(c.get_service(&s.uuid).await.expect("get").status.is_stopped());
    c.start_service(&s.uuid).await.expect("start after crash");
    sim.force_status(&s.uuid, Some("degraded:unhealthy")).await;
    let st = c.get_service(&s.uuid).await.expect("get").status;
    assert!(st.is_bad());
    sim.force_status(&s.uuid, Some("unknown:unknown:excluded")).await;
    assert!(matches!(
        c.get_service(&s.uuid).await.expect("get").status,
        ServiceStatus::Unknown(_)
    ));
}

#[tokio::test]
async fn state_file_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sim.json");
    let path_s = path.to_str().expect("utf8 path");
    let uuid = {
        let sim = fast_sim(&["--state-file", path_s]);
        client(&sim).create_project("cf-persist", None).await.expect("create")
    };
    let sim = fast_sim(&["--state-file", path_s]);
    assert_eq!(
        client(&sim).get_project(&uuid).await.expect("reloaded").project.name,
        "cf-persist"
    );
}

/// `GET /services` is decoded one service at a time as it streams in; what each caller keeps equals what
/// decoding the whole answer at once gives, on the simulator's own list (containers, statuses, composes,
/// descriptions and all).
#[tokio::test]
async fn service_list_read_as_it_streams_equals_the_whole_answer_decoded() {
    let sim = fast_sim(&[]);
    let c = client(&sim);
    let p = ensure_project(&c, "cf-acme-stream", None).await.expect("project");
    let mut uuids = Vec::new();
    for (i, domain) in [Some("s0.example.com"), None, Some("s2.example.com")]
        .into_iter()
        .enumerate()
    {
        let mut req = service_req(&p, &format!("cf-stream{i}"), domain);
        req.description = Some(format!("incarnation {i} \"quoted\" [x] {{y}}"));
        if i == 1 {
            req.compose_yaml = "services:\n  bot:\n    image: 'x:2' # ]}\n".into();
        }
        uuids.push(c.create_service(&req).await.expect("create").uuid);
    }
    c.start_service(&uuids[0]).await.expect("start");
    wait_status(&c, &uuids[0], |s| s.is_running()).await;

    let whole = reqwest_client()
        .get(format!("{}/api/v1/services", sim.url))
        .bearer_auth(&sim.token)
        .send()
        .await
        .expect("list")
        .bytes()
        .await
        .expect("body");
    let full: Vec<Service> = serde_json::from_slice(&whole).expect("services");
    assert_eq!(full.len(), 3);
    assert_eq!(c.list_services().await.expect("list"), full);

    let states = |v: Vec<ServiceState>| v.into_iter().map(|s| (s.uuid, s.status)).collect::<Vec<_>>();
    let want: Vec<ServiceState> = serde_json::from_slice(&whole).expect("states");
    assert_eq!(
        states(c.list_service_states(|_| true).await.expect("states")),
        states(want.clone())
    );
    // A status round keeps only the services it waits on, however large the fleet's list.
    let kept = c.list_service_states(|u| u == uuids[1]).await.expect("states");
    assert_eq!(
        states(kept),
        states(want.into_iter().filter(|s| s.uuid == uuids[1]).collect())
    );

    let looks: Vec<ServiceLook> = serde_json::from_slice(&whole).expect("looks");
    let looks: Vec<_> = looks
        .into_iter()
        .map(|l| (l.uuid, l.status, l.docker_compose_raw))
        .collect();
    assert!(looks.iter().all(|l| l.2.is_some()), "the simulator shows composes");
    let kept = c
        .list_service_looks(|l| Some((l.uuid, l.status, l.docker_compose_raw)))
        .await
        .expect("looks");
    assert_eq!(kept, looks);
    // A judge keeps only what it asks for.
    let one = c
        .list_service_looks(|l| (l.uuid == uuids[1]).then_some(l.uuid))
        .await
        .expect("looks");
    assert_eq!(one, [uuids[1].clone()]);

    let found = c.find_services_by_name("cf-stream2").await.expect("find");
    assert_eq!(
        found,
        full.iter()
            .filter(|s| s.name == "cf-stream2")
            .cloned()
            .collect::<Vec<_>>()
    );
}

/// A fleet reader that comes while a pass is under way waits for it instead of listing the fleet again:
/// on a loaded machine a poll tick often lands inside the drift check's slow list.
#[tokio::test]
async fn a_fleet_reader_shares_the_pass_under_way() {
    let sim = fast_sim(&[]);
    let c = client(&sim);
    let p = ensure_project(&c, "cf-acme-shared", None).await.expect("project");
    let uuid = c
        .create_service(&service_req(&p, "cf-shared0", None))
        .await
        .expect("create")
        .uuid;
    sim.set_fault(json!({"route": "GET /services", "latency_ms": 1500}))
        .await;
    sim.clear_requests().await;
    let drift = c.clone();
    let looks = tokio::spawn(async move { drift.list_service_looks(|l| Some(l.uuid)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fleet = c
        .fleet(Duration::from_secs(30), None, budget::Priority::Urgent)
        .await
        .expect("fleet");
    assert_eq!(looks.await.expect("task").expect("looks"), vec![uuid.clone()]);
    assert_eq!(
        fleet.services.iter().map(|s| s.uuid.as_str()).collect::<Vec<_>>(),
        [uuid.as_str()]
    );
    let lists = cf_testkit::sim::count(&sim.requests().await, "GET /services");
    assert_eq!(lists, 1, "one list for the drift check and the reader");

    // The pass is judged by this reader now: its next reading lists anew, at once.
    let next = c
        .fleet(Duration::from_secs(30), Some(fleet.pass), budget::Priority::Urgent)
        .await
        .expect("fleet");
    assert!(next.pass > fleet.pass);
    assert_eq!(cf_testkit::sim::count(&sim.requests().await, "GET /services"), 2);
}
