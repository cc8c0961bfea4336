//! Replicas as processes on one PostgreSQL, with a real PocketBase and coolify-sim: a burst while one
//! replica is killed and another stopped, the leader killed, PostgreSQL restarted, the shared Coolify
//! budget, and a webhook acknowledged by a replica that is then killed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use cf_bridge::events::{Action, Collection};
use cf_testkit::settings::TestSettings;
use cf_testkit::world::{SIM_FAST, publish_templates};
use cf_testkit::{BridgeProcess, Postgres, TestPb, TestSim, free_port, http, tail};
use serde_json::{Value, json};

use crate::bridge_bin;
use crate::harness::{Acks, send_webhook};

const TEMPLATE: &str = "base-llm";
/// The leader and job-claim leases the replicas run with here (the default is 15 s): failover is asserted
/// within it.
const LEASE_SECS: u64 = 3;

/// PocketBase, the simulator and the templates, with replicas of cf-bridge on one database.
struct Fleet {
    pb: TestPb,
    sim: TestSim,
    templates: BTreeMap<String, String>,
    db_url: String,
    replicas: Vec<BridgeProcess>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn start(db_url: &str, replicas: usize, sim_args: &[&str], env: &[(&str, &str)]) -> Fleet {
        let pb = TestPb::start().await;
        let sim = TestSim::start(sim_args);
        let dir = tempfile::tempdir().expect("dir");
        let base = TestSettings::new((&pb).into(), &sim.url, &sim.token, dir.path(), free_port());
        let templates = publish_templates(&pb, &base).await;
        let mut fleet = Fleet {
            pb,
            sim,
            templates,
            // Short connect timeouts: a request waiting for a stopped server is answered 503 quickly.
            db_url: format!("{db_url}&connect_timeout=2"),
            replicas: Vec::new(),
            _dir: dir,
        };
        for _ in 0..replicas {
            fleet.add_replica(env).await;
        }
        fleet
    }

    async fn add_replica(&mut self, env: &[(&str, &str)]) {
        let lease = LEASE_SECS.to_string();
        let mut all: Vec<(&str, &str)> = vec![
            ("CF_BRIDGE__JOURNAL__URL", &self.db_url),
            ("CF_BRIDGE__JOURNAL__LEADER_LEASE_SECS", &lease),
            // A killed replica's jobs are taken over after this (15 s by default).
            ("CF_BRIDGE__JOURNAL__CLAIM_LEASE_SECS", &lease),
        ];
        all.extend_from_slice(env);
        let b = BridgeProcess::for_stack(bridge_bin(), (&self.pb).into(), &self.sim, &all).await;
        self.replicas.push(b);
    }

    async fn tenants(&self, n: usize, prefix: &str) -> Vec<String> {
        let bodies: Vec<Value> = (0..n)
            .map(|i| {
                json!({"name": format!("Tenant {prefix}{i}"), "slug": format!("{prefix}{i}"),
                            "status": "active", "plan_tier": "business", "max_stacks": 1000})
            })
            .collect();
        self.pb.batch_create("tenants", &bodies).await
    }

    fn instance_body(&self, tenant: &str, sub: &str) -> Value {
        json!({"tenant": tenant, "template": self.templates[TEMPLATE], "name": sub, "subdomain": sub,
               "desired_state": "running", "config": {}})
    }

    /// Whether each replica leads, from its `/metrics` (None: it does not answer).
    async fn leaders(&self) -> Vec<Option<bool>> {
        let mut out = Vec::new();
        for b in &self.replicas {
            out.push(leads(&b.url).await);
        }
        out
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .enumerate()
            .map(|(i, b)| format!("--- replica {i} ---\n{}", tail(&b.log(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until every instance in `ids` reads running in PocketBase.
    async fn wait_running(&self, ids: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.pb.list_all("bot_instances", "created").await;
            let running: Vec<&str> = all
                .iter()
                .filter(|r| r["status"] == "running")
                .filter_map(|r| r["id"].as_str())
                .collect();
            let missing: Vec<&String> = ids.iter().filter(|id| !running.contains(&id.as_str())).collect();
            if missing.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let statuses: Vec<String> = all
                    .iter()
                    .filter(|r| missing.iter().any(|m| r["id"] == m.as_str()))
                    .map(|r| format!("{}={}", r["id"], r["status"]))
                    .take(20)
                    .collect();
                panic!(
                    "{} of {} instances not running after {timeout:?}: {statuses:?}\n{}",
                    missing.len(),
                    ids.len(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// 202 (journaled) or 200 (a duplicate of what the journal holds).
fn acknowledged(status: Option<u16>) -> bool {
    status.is_some_and(|s| (200..300).contains(&s))
}

/// `cf_bridge_leader` of the replica at `url`.
async fn leads(url: &str) -> Option<bool> {
    gauge(url, "cf_bridge_leader").await.map(|v| v == "1")
}

/// The value of an unlabelled metric of the replica at `url`.
async fn gauge(url: &str, name: &str) -> Option<String> {
    let text = http()
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|v| v.trim().to_string())
}

/// Whether each replica holds a realtime stream to PocketBase: the leader only.
async fn streams(f: &Fleet) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in &f.replicas {
        out.push(gauge(&b.url, "cf_bridge_realtime_connected").await);
    }
    out
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    cf_testkit::eventually(timeout, what, check).await
}

async fn connect_db(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client
}

/// Acknowledged deliveries the journal in PostgreSQL does not hold.
async fn missing_acks(url: &str, acks: &Acks) -> Vec<String> {
    let client = connect_db(url).await;
    let mut missing = Vec::new();
    for a in acks.all() {
        let row = client
            .query_one(
                "SELECT COUNT(*) FROM events WHERE delivery_id = $1 OR dedupe_key = $2",
                &[&a.delivery_id, &a.dedupe_key],
            )
            .await
            .expect("query events");
        if row.get::<_, i64>(0) == 0 {
            missing.push(a.delivery_id.clone());
        }
    }
    missing
}

/// Attempts of one job that ran at the same time: a record reconciled by two replicas at once.
async fn overlapping_attempts(url: &str) -> Vec<String> {
    let client = connect_db(url).await;
    let rows = client
        .query(
            "SELECT job_id, started_at, finished_at FROM job_attempts ORDER BY job_id, started_at, id",
            &[],
        )
        .await
        .expect("query job_attempts");
    let mut by_job: HashMap<i64, Vec<(i64, Option<i64>)>> = HashMap::new();
    for r in rows {
        by_job.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
    }
    let mut out = Vec::new();
    for (job, attempts) in by_job {
        for pair in attempts.windows(2) {
            // An attempt of a killed replica never finishes; the next one starts after its lease ran out.
            if let (Some(end), next_start) = (pair[0].1, pair[1].0)
                && next_start < end
            {
                out.push(format!(
                    "job {job}: an attempt started at {next_start} before the one before it ended at {end}"
                ));
            }
        }
    }
    out
}

/// Coolify creates by service name (`cf-<instance id>`), from the simulator's request log.
fn creates_by_name(requests: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in requests.iter().filter(|r| r["path"] == "POST /services") {
        let name = r["request"]["name"].as_str().unwrap_or_default().to_string();
        *out.entry(name).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_converge_a_burst_while_one_is_killed_and_one_stopped() {
    let db = Postgres::shared().database().await;
    let mut f = Fleet::start(&db.url, 3, SIM_FAST, &[]).await;
    let tenants = f.tenants(10, "burst").await;
    let began = Instant::now();
    let mut ids = Vec::new();
    for (t, tenant) in tenants.iter().enumerate() {
        let bodies: Vec<Value> = (0..10)
            .map(|i| f.instance_body(tenant, &format!("burst-{t}-{i}")))
            .collect();
        ids.extend(f.pb.batch_create("bot_instances", &bodies).await);
    }

    // In the middle of the burst: some services exist, most do not yet.
    wait_for("the burst under way", Duration::from_secs(60), || async {
        let n = f.sim.services().await.len();
        (n >= 10).then_some(())
    })
    .await;
    f.replicas[1].kill9();
    assert!(
        f.replicas[2].terminate(),
        "SIGTERM: a clean stop\n{}",
        tail(&f.replicas[2].log(), 40)
    );
    f.wait_running(&ids, Duration::from_secs(120)).await;
    eprintln!(
        "burst: 100 instances running {:?} after they were created",
        began.elapsed()
    );

    let requests = f.sim.requests().await;
    let creates = creates_by_name(&requests);
    let twice: Vec<_> = creates.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "services created more than once: {twice:?}");
    for id in &ids {
        let name = format!("cf-{id}");
        assert_eq!(creates.get(&name), Some(&1), "{name} created once");
        assert_eq!(f.sim.services_named(&name).await.len(), 1, "one service {name}");
    }
    let projects = requests.iter().filter(|r| r["path"] == "POST /projects").count();
    assert_eq!(projects, 10, "one project per tenant");

    // No job lost or left behind, none run by two replicas at once.
    let client = connect_db(&db.url).await;
    let left = wait_for("every job settled", Duration::from_secs(30), || async {
        let rows = client
            .query("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state", &[])
            .await
            .expect("jobs");
        let states: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let busy = ["queued", "running"]
            .iter()
            .any(|s| states.get(*s).is_some_and(|n| *n > 0));
        (!busy).then_some(states)
    })
    .await;
    assert!(!left.contains_key("dead") && !left.contains_key("failed"), "{left:?}");
    let overlaps = overlapping_attempts(&db.url).await;
    assert!(overlaps.is_empty(), "{overlaps:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_another_leads_within_the_lease_and_applies_what_changed_meanwhile() {
    let db = Postgres::shared().database().await;
    let mut f = Fleet::start(&db.url, 3, SIM_FAST, &[]).await;
    let leader = wait_for("one leader", Duration::from_secs(20), || async {
        let l = f.leaders().await;
        let leading: Vec<usize> = (0..l.len()).filter(|i| l[*i] == Some(true)).collect();
        (leading.len() == 1 && l.iter().all(Option::is_some)).then(|| leading[0])
    })
    .await;
    // Realtime is a fleet-wide task: only the leader subscribes.
    let one = Some("1".to_string());
    let streaming = wait_for("the leader's realtime stream", Duration::from_secs(20), || async {
        let s = streams(&f).await;
        (s[leader] == one).then_some(s)
    })
    .await;
    let followers: Vec<_> = (0..streaming.len())
        .filter(|i| *i != leader)
        .map(|i| &streaming[i])
        .collect();
    assert!(
        followers.iter().all(|s| s.as_deref() == Some("0")),
        "followers hold no realtime stream: {streaming:?}"
    );
    let tenant = f.tenants(1, "lead").await.remove(0);
    let before = f.pb.create_instance(f.instance_body(&tenant, "lead-before")).await;
    let before = before["id"].as_str().expect("id").to_string();
    f.wait_running(std::slice::from_ref(&before), Duration::from_secs(60))
        .await;

    f.replicas[leader].kill9();
    let killed = Instant::now();
    // Made while nobody leads: realtime was the dead leader's, so only the next leader's resync sees it.
    let during = f.pb.create_instance(f.instance_body(&tenant, "lead-during")).await;
    let during = during["id"].as_str().expect("id").to_string();
    let successor = wait_for("a new leader", Duration::from_secs(30), || async {
        let l = f.leaders().await;
        (0..l.len()).find(|i| *i != leader && l[*i] == Some(true))
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(LEASE_SECS),
        "replica {successor} led {took:?} after the leader was killed (lease {LEASE_SECS} s)"
    );
    let leaders = f.leaders().await;
    assert_eq!(
        leaders.iter().filter(|l| **l == Some(true)).count(),
        1,
        "exactly one leader: {leaders:?}"
    );
    f.wait_running(std::slice::from_ref(&during), Duration::from_secs(60))
        .await;
    assert_eq!(f.sim.services_named(&format!("cf-{during}")).await.len(), 1);
    eprintln!("failover: replica {successor} led {took:?} after the leader was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_webhooks_get_503_meanwhile_and_replicas_carry_on() {
    let pg = Postgres::start();
    let db = pg.database().await;
    let f = Fleet::start(&db.url, 2, SIM_FAST, &[]).await;
    let tenant = f.tenants(1, "pgdown").await.remove(0);
    let first = f.pb.create_instance(f.instance_body(&tenant, "pg-first")).await;
    let first_id = first["id"].as_str().expect("id").to_string();
    f.wait_running(std::slice::from_ref(&first_id), Duration::from_secs(60))
        .await;
    let record = f.pb.record("bot_instances", &first_id).await;
    let acks = Acks::default();
    for b in &f.replicas {
        let status = send_webhook(&b.url, &acks, Action::Update, Collection::BotInstances, &record).await;
        assert!(
            acknowledged(status),
            "a webhook before the outage: {status:?}\n{}",
            f.logs()
        );
    }

    pg.stop();
    for b in &f.replicas {
        let status = send_webhook(&b.url, &acks, Action::Update, Collection::BotInstances, &record).await;
        assert_eq!(
            status,
            Some(503),
            "a webhook while PostgreSQL is down is refused, not acknowledged"
        );
        wait_for("/readyz failing", Duration::from_secs(15), || async {
            let r = http().get(format!("{}/readyz", b.url)).send().await.ok()?;
            (r.status().as_u16() == 503).then_some(())
        })
        .await;
    }
    // A change made during the outage: the realtime stream delivers it to a leader that cannot journal it.
    let during = f.pb.create_instance(f.instance_body(&tenant, "pg-during")).await;
    let during = during["id"].as_str().expect("id").to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.restart();

    for b in &f.replicas {
        wait_for("webhooks acknowledged again", Duration::from_secs(30), || async {
            let s = send_webhook(&b.url, &acks, Action::Update, Collection::BotInstances, &record).await;
            acknowledged(s).then_some(())
        })
        .await;
        wait_for("/readyz ready again", Duration::from_secs(30), || async {
            let r = http().get(format!("{}/readyz", b.url)).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }
    f.wait_running(std::slice::from_ref(&during), Duration::from_secs(90))
        .await;
    let leaders = wait_for("a leader again", Duration::from_secs(30), || async {
        let l = f.leaders().await;
        (l.iter().filter(|l| **l == Some(true)).count() == 1).then_some(l)
    })
    .await;
    assert_eq!(leaders.len(), 2);
    let missing = missing_acks(&db.url, &acks).await;
    assert!(missing.is_empty(), "acknowledged but not journaled: {missing:?}");
    assert!(
        acks.refused.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "the outage's webhooks were refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_together_stay_within_the_coolify_budget() {
    const PER_MINUTE: u64 = 120;
    const OBSERVED: Duration = Duration::from_secs(62);
    let burst = u64::from(cf_bridge::coolify::client::burst(PER_MINUTE as u32));
    let db = Postgres::shared().database().await;
    let per_minute = PER_MINUTE.to_string();
    let f = Fleet::start(
        &db.url,
        3,
        SIM_FAST,
        &[("CF_BRIDGE__COOLIFY__REQUESTS_PER_MINUTE", &per_minute)],
    )
    .await;
    let tenants = f.tenants(3, "budget").await;
    // More work than a minute of the budget carries (each instance takes several calls).
    let bodies: Vec<Value> = (0..45)
        .map(|i| f.instance_body(&tenants[i % 3], &format!("budget-{i}")))
        .collect();
    f.sim.clear_requests().await;
    f.pb.batch_create("bot_instances", &bodies).await;
    tokio::time::sleep(OBSERVED).await;

    let at: Vec<u64> = f
        .sim
        .requests()
        .await
        .iter()
        .filter_map(|r| r["at_ms"].as_u64())
        .collect();
    // A token bucket lets at most its burst plus the refill through any window (one in flight of slack:
    // a token is taken just before its request reaches the simulator's log): per minute, and per 10 s.
    let mut busiest = Vec::new();
    for window in [Duration::from_secs(60), Duration::from_secs(10)] {
        let ms = u64::try_from(window.as_millis()).expect("ms");
        let ceiling = burst + PER_MINUTE * window.as_secs() / 60 + 1;
        let most = at
            .iter()
            .map(|start| at.iter().filter(|t| **t >= *start && **t < start + ms).count() as u64)
            .max()
            .unwrap_or(0);
        assert!(
            most <= ceiling,
            "{most} Coolify requests within {window:?} from 3 replicas; the shared budget allows {ceiling}"
        );
        busiest.push(format!("at most {most} in any {window:?} (ceiling {ceiling})"));
    }
    // The work outlasts the budget, so the replicas used it (at least half its refill; the bucket was partly
    // spent at start): the figures above are the budget's, not idleness.
    let total = at.len() as u64;
    assert!(
        total >= PER_MINUTE * OBSERVED.as_secs() / 60 / 2,
        "only {total} requests in {OBSERVED:?}\n{}",
        f.logs()
    );
    eprintln!("budget: {total} requests in {OBSERVED:?}, {}", busiest.join(", "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_acknowledged_by_a_replica_is_journaled_after_it_is_killed() {
    let db = Postgres::shared().database().await;
    let mut f = Fleet::start(&db.url, 2, SIM_FAST, &[]).await;
    let tenant = f.tenants(1, "acked").await.remove(0);
    let ids =
        f.pb.batch_create(
            "bot_instances",
            &(0..20)
                .map(|i| f.instance_body(&tenant, &format!("acked-{i}")))
                .collect::<Vec<_>>(),
        )
        .await;
    let acks = Acks::default();
    for id in &ids {
        let record = f.pb.record("bot_instances", id).await;
        let status = send_webhook(
            &f.replicas[0].url,
            &acks,
            Action::Update,
            Collection::BotInstances,
            &record,
        )
        .await;
        assert!(acknowledged(status), "{status:?}\n{}", f.logs());
    }
    f.replicas[0].kill9();
    let acked = acks.all();
    assert_eq!(acked.len(), ids.len());
    let missing = missing_acks(&db.url, &acks).await;
    assert!(
        missing.is_empty(),
        "acknowledged, then lost with the replica: {missing:?}"
    );
    // The other replica carries the work on.
    f.wait_running(&ids, Duration::from_secs(90)).await;

    // The operator's view of the shared journal names it without its password.
    let settings = TestSettings::new((&f.pb).into(), &f.sim.url, &f.sim.token, f._dir.path(), free_port())
        .with(&[("CF_BRIDGE__JOURNAL__URL", &f.db_url)]);
    let (ok, out, err) = cf_testkit::cli::run_with_env(bridge_bin(), &["journal", "stats"], settings.env());
    assert!(ok, "journal stats on PostgreSQL: {err}");
    let password = &Postgres::shared().password;
    assert!(out.starts_with("postgres://"), "{out}");
    assert!(
        !out.contains(password.as_str()) && !err.contains(password.as_str()),
        "{out}{err}"
    );
}
