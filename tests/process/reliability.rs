//! Reliability suite (issue 9): crashes, restarts, cut streams, Coolify faults and outages, an
//! unavailable journal. Every scenario ends with the same invariant check
//! (tests/process/harness.rs::check_invariants); the suite prints a table of the results.
//!
//! `RELIABILITY_SCENARIOS=kill9,pb_restart` runs a subset. The table is also written to
//! target/reliability-table.md.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::harness::{Ops, Row, World, WorldOptions, label, send_webhook, table};
use cf_bridge::events::{Action, Collection};
use rand::Rng;
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().expect("record id").to_string()
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

async fn sleep_ms(lo: u64, hi: u64) {
    let ms = rand::rng().random_range(lo..=hi);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn dead_jobs(w: &World) -> u64 {
    let (_, v) = w.bridge.admin().get("/admin/jobs?state=dead").await;
    v["jobs"].as_array().map(|a| a.len() as u64).unwrap_or(0)
}

/// Ends a scenario: waits for convergence and collects violations, including bridge panics and dead jobs.
async fn finish(w: &World, timeout: Duration) -> (Duration, Vec<String>) {
    let (took, mut v) = w.converge(timeout).await;
    v.extend(w.panics().into_iter().map(|p| format!("bridge panicked: {p}")));
    let dead = dead_jobs(w).await;
    if dead > 0 {
        v.push(format!("{dead} dead jobs"));
    }
    if !v.is_empty() {
        v.push(keep_bridge_files(w));
    }
    (took, v)
}

/// Copies the bridge's log and journal out of its temporary directory, which is removed with the scenario:
/// a violation is only worth as much as what shows how it came about.
fn keep_bridge_files(w: &World) -> String {
    let name = w
        .bridge
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kept = cf_testkit::repo_root()
        .join("test-artifacts")
        .join(format!("reliability-{name}"));
    if let Err(e) = std::fs::create_dir_all(&kept) {
        return format!("the bridge's files could not be kept in {}: {e}", kept.display());
    }
    for file in ["bridge.log", "journal.db", "journal.db-wal"] {
        let _ = std::fs::copy(w.bridge.dir.join(file), kept.join(file));
    }
    format!("the bridge's log and journal are kept in {}", kept.display())
}

/// A random stream of changes over `instances`: toggles desired_state or changes config.
async fn change_some(ops: &Ops<'_>, instances: &[String], n: usize, pace: (u64, u64)) {
    for k in 0..n {
        let i = &instances[rand::rng().random_range(0..instances.len())];
        let body = if rand::rng().random_bool(0.5) {
            let current = ops
                .pb
                .superuser_request("GET", &format!("/api/collections/bot_instances/records/{i}"), None)
                .await;
            let next = if current["desired_state"] == "running" {
                "stopped"
            } else {
                "running"
            };
            json!({"desired_state": next})
        } else {
            json!({"config": {"MODEL": format!("openai/model-{k}-{}", rand::random::<u16>())}})
        };
        ops.patch(Collection::BotInstances, i, body).await;
        sleep_ms(pace.0, pace.1).await;
    }
}

/// 1. kill -9 at 30 random moments while 40 instances are provisioned, changed and deleted.
async fn kill9() -> Row {
    const INSTANCES: usize = 40;
    const KILLS: usize = 30;
    let mut w = World::start(WorldOptions::default()).await;
    let ops = Ops {
        pb: &w.pb,
        acks: &w.acks,
        bridge_url: Some(w.bridge.url.clone()),
        template_id: w.template_id.clone(),
    };
    let bridge = &mut w.bridge;
    let mut restart_total = Duration::ZERO;
    let work = async {
        let tenants = [
            id(&ops.tenant(&label("ka", 0)).await),
            id(&ops.tenant(&label("kb", 0)).await),
        ];
        let mut live = Vec::new();
        for n in 0..INSTANCES {
            let desired = if n % 5 == 4 { "stopped" } else { "running" };
            live.push(id(&ops.create_instance(&tenants[n % 2], &label("k", n), desired).await));
            sleep_ms(100, 400).await;
        }
        change_some(&ops, &live, 15, (100, 400)).await;
        for _ in 0..10 {
            let victim = live.remove(rand::rng().random_range(0..live.len()));
            ops.delete_instance(&victim).await;
            sleep_ms(100, 400).await;
        }
    };
    let kills = async {
        for _ in 0..KILLS {
            sleep_ms(100, 1200).await;
            bridge.kill9();
            let t = Instant::now();
            bridge.start_again().await;
            restart_total += t.elapsed();
        }
    };
    tokio::join!(work, kills);
    let (took, v) = finish(&w, Duration::from_secs(150)).await;
    let creates = w
        .sim
        .requests()
        .await
        .iter()
        .filter(|r| r["path"] == "POST /services")
        .count();
    Row {
        scenario: "1. bridge kill -9".into(),
        runs: format!("{KILLS} kills, {INSTANCES} instances, 15 changes, 10 deletes"),
        figures: format!(
            "converged {} after the last kill; mean restart {}; {} webhooks acked; {} service creates",
            secs(took),
            secs(restart_total / KILLS as u32),
            w.acks.all().len(),
            creates
        ),
        violations: v,
        wall: w.started.elapsed(),
    }
}

/// 2. PocketBase killed and restarted 5 times during a stream of changes (one tenant suspended on the way).
async fn pb_restart() -> Row {
    const KILLS: usize = 5;
    let mut w = World::start(WorldOptions::default()).await;
    let (ta, tb) = {
        let ops = w.ops(true);
        (
            id(&ops.tenant(&label("pa", 0)).await),
            id(&ops.tenant(&label("pb", 0)).await),
        )
    };
    let mut live = Vec::new();
    let mut down_total = Duration::ZERO;
    for round in 0..KILLS {
        {
            let ops = w.ops(true);
            for n in 0..3 {
                let t = if n == 0 { &tb } else { &ta };
                live.push(id(&ops.create_instance(t, &label("p", round * 3 + n), "running").await));
            }
            change_some(&ops, &live, 2, (50, 200)).await;
            if round == 2 {
                ops.patch(Collection::Tenants, &tb, json!({"status": "suspended"}))
                    .await;
            }
            if round == 3 {
                ops.delete_instance(&live.remove(0)).await;
            }
        }
        sleep_ms(200, 1500).await;
        w.pb.kill().await;
        let t = Instant::now();
        sleep_ms(1000, 3000).await;
        w.pb.restart().await;
        down_total += t.elapsed();
    }
    let (took, v) = finish(&w, Duration::from_secs(120)).await;
    Row {
        scenario: "2. PocketBase kill + restart".into(),
        runs: format!("{KILLS} kills, {} instances, 1 tenant suspended", live.len()),
        figures: format!(
            "PocketBase down {} in total; converged {} after the last restart",
            secs(down_total),
            secs(took)
        ),
        violations: v,
        wall: w.started.elapsed(),
    }
}

/// 3. The bridge's PocketBase connections (realtime stream included) cut every 2-3 s; no webhooks, so
///    every change must arrive by realtime or resync.
async fn realtime_cut() -> Row {
    const CUTS: usize = 8;
    let w = World::start(WorldOptions {
        proxy: true,
        ..Default::default()
    })
    .await;
    let ops = w.ops(false);
    let t = id(&ops.tenant(&label("r", 0)).await);
    let mut live = Vec::new();
    for cut in 0..CUTS {
        live.push(id(&ops.create_instance(&t, &label("r", cut), "running").await));
        if live.len() > 2 {
            change_some(&ops, &live, 1, (0, 0)).await;
        }
        if cut == 5 {
            ops.delete_instance(&live.remove(0)).await;
        }
        sleep_ms(2000, 3000).await;
        if let Some(p) = &w.proxy {
            p.cut();
        }
    }
    let (took, mut v) = finish(&w, Duration::from_secs(90)).await;
    // Each cut must really end the stream: the bridge subscribes again after every one.
    let subscriptions = w.bridge.log().matches("PocketBase realtime subscribed").count();
    if subscriptions < CUTS / 2 + 1 {
        v.push(format!(
            "only {subscriptions} realtime subscriptions for {CUTS} cuts: the cuts did not reach the stream"
        ));
    }
    Row {
        scenario: "3. realtime stream cut".into(),
        runs: format!("{CUTS} cuts, {} instances, no webhooks", live.len()),
        figures: format!(
            "{subscriptions} realtime subscriptions; converged {} after the last cut",
            secs(took)
        ),
        violations: v,
        wall: w.started.elapsed(),
    }
}

/// 4. Simulator faults, one phase each; the invariants must hold after every phase.
async fn sim_faults() -> Row {
    let w = World::start(WorldOptions::default()).await;
    let ops = w.ops(true);
    let t = id(&ops.tenant(&label("f", 0)).await);
    let mut live: Vec<String> = Vec::new();
    let mut violations = Vec::new();
    let mut figures = Vec::new();
    let phases: [(&str, Value); 4] = [
        ("20% 5xx", json!({"route": "*", "error_rate": 0.2})),
        (
            "429 storm",
            json!({"route": "*", "storm_429": {"count": 40, "retry_after": 1}}),
        ),
        ("2 s latency", json!({"route": "*", "latency_ms": 2000})),
        (
            "lost creates",
            json!({"route": "POST /services", "lost_response": true}),
        ),
    ];
    for (n, (name, fault)) in phases.iter().enumerate() {
        w.sim.set_fault(fault.clone()).await;
        for k in 0..3 {
            live.push(id(&ops.create_instance(&t, &label("f", n * 3 + k), "running").await));
        }
        change_some(&ops, &live, 2, (50, 200)).await;
        let (took, v) = w.converge(Duration::from_secs(60)).await;
        figures.push(format!("{name} {}", secs(took)));
        violations.extend(v.into_iter().map(|x| format!("{name}: {x}")));
        w.sim.clear_faults().await;
    }
    // A crashed container: the health poller must notice; a restart request brings it back.
    let victim = live[0].clone();
    let rec =
        w.pb.superuser_request("GET", &format!("/api/collections/bot_instances/records/{victim}"), None)
            .await;
    if rec["desired_state"] != "running" {
        ops.patch(Collection::BotInstances, &victim, json!({"desired_state": "running"}))
            .await;
        let _ = w.converge(Duration::from_secs(30)).await;
    }
    let uuid =
        w.pb.superuser_request("GET", &format!("/api/collections/bot_instances/records/{victim}"), None)
            .await["coolify_service_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    w.sim.set_fault(json!({"crash_service": uuid})).await;
    let t0 = Instant::now();
    let mut detected = None;
    while t0.elapsed() < Duration::from_secs(30) {
        let r =
            w.pb.superuser_request("GET", &format!("/api/collections/bot_instances/records/{victim}"), None)
                .await;
        if r["status"] == "error" {
            detected = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    w.sim.clear_faults().await;
    match detected {
        Some(d) => figures.push(format!("crash marked error after {}", secs(d))),
        None => violations.push(format!("crashed container of {victim}: instance never marked error")),
    }
    ops.patch(
        Collection::BotInstances,
        &victim,
        json!({"restart_requested_at": chrono::Utc::now().to_rfc3339()}),
    )
    .await;
    let (took, v) = finish(&w, Duration::from_secs(60)).await;
    figures.push(format!("restart request recovered it in {}", secs(took)));
    violations.extend(v.into_iter().map(|x| format!("crash: {x}")));
    let lost = w.sim.requests().await.iter().filter(|r| r["lost"] == true).count();
    Row {
        scenario: "4. simulator faults".into(),
        runs: format!("4 fault phases + 1 crash, {} instances", live.len()),
        figures: format!("converged: {}; {lost} responses lost", figures.join(", ")),
        violations,
        wall: w.started.elapsed(),
    }
}

/// 5. Coolify unreachable for 25 s (real time; stands for a longer outage), then back on the same port
///    and state: jobs resume, paced by the bridge's budget.
async fn coolify_outage() -> Row {
    const OUTAGE: Duration = Duration::from_secs(25);
    let mut w = World::start(WorldOptions {
        bridge_env: vec![("CF_BRIDGE__COOLIFY__REQUESTS_PER_MINUTE", "600")],
        ..Default::default()
    })
    .await;
    let mut live = Vec::new();
    let t = {
        let ops = w.ops(true);
        let t = id(&ops.tenant(&label("o", 0)).await);
        for n in 0..6 {
            live.push(id(&ops.create_instance(&t, &label("o", n), "running").await));
        }
        t
    };
    let (_, mut violations) = w.converge(Duration::from_secs(60)).await;
    violations = violations
        .into_iter()
        .map(|x| format!("before the outage: {x}"))
        .collect();
    w.sim.stop();
    let down = Instant::now();
    let down_ms = chrono::Utc::now().timestamp_millis();
    {
        let ops = w.ops(true);
        for n in 6..10 {
            live.push(id(&ops.create_instance(&t, &label("o", n), "running").await));
        }
        ops.patch(Collection::BotInstances, &live[1], json!({"desired_state": "stopped"}))
            .await;
        ops.patch(Collection::BotInstances, &live[2], json!({"desired_state": "stopped"}))
            .await;
        ops.delete_instance(&live.remove(0)).await;
    }
    tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
    w.sim.start_again();
    let up_ms = chrono::Utc::now().timestamp_millis();
    let (took, v) = finish(&w, Duration::from_secs(90)).await;
    violations.extend(v);
    let attempts = most_attempts_between(&w, down_ms, up_ms);
    let reqs = w.sim.requests().await;
    let mut per_sec = std::collections::BTreeMap::<u64, u32>::new();
    for r in &reqs {
        *per_sec.entry(r["at_ms"].as_u64().unwrap_or(0) / 1000).or_default() += 1;
    }
    let peak = per_sec.values().copied().max().unwrap_or(0);
    let first10: u32 = per_sec.range(0..10).map(|(_, n)| n).sum();
    // 600/min with a burst of 10: any second may carry at most 10 + 10.
    if peak > 20 {
        violations.push(format!("request storm after the outage: {peak} requests in one second"));
    }
    Row {
        scenario: "5. Coolify unreachable".into(),
        runs: format!("1 outage of {}, 4 creates + 2 stops + 1 delete meanwhile", secs(OUTAGE)),
        figures: format!(
            "at most {attempts} attempts of one job during the outage, none dead; converged {} after Coolify returned; \
             {first10} requests in its first 10 s, peak {peak}/s (budget 600/min)",
            secs(took)
        ),
        violations,
        wall: w.started.elapsed(),
    }
}

/// The most attempts any one job started between two instants (ms UTC), from the journal.
fn most_attempts_between(w: &World, from_ms: i64, to_ms: i64) -> i64 {
    let Ok(conn) = rusqlite::Connection::open_with_flags(w.journal_path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return -1;
    };
    conn.query_row(
        "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM job_attempts WHERE started_at BETWEEN ?1 AND ?2 GROUP BY job_id)",
        rusqlite::params![from_ms, to_ms],
        |r| r.get(0),
    )
    .unwrap_or(-1)
}

/// Holds SQLite's write lock on the journal from another connection (a thread of this process) until
/// released: every journal write of the bridge then fails (SQLITE_BUSY after its busy timeout), the
/// same error path as a read-only or full disk.
struct JournalLock {
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl JournalLock {
    fn take(path: &std::path::Path) -> JournalLock {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&path).expect("open journal");
            conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
            conn.execute_batch("BEGIN EXCLUSIVE")
                .expect("take the journal's write lock");
            let _ = ready_tx.send(());
            let _ = release_rx.recv();
            conn.execute_batch("ROLLBACK").expect("release the journal lock");
        });
        ready_rx.recv().expect("journal lock taken");
        JournalLock { release, thread }
    }

    fn release(self) {
        let _ = self.release.send(());
        let _ = self.thread.join();
    }
}

/// Makes the journal's files immutable (`chattr +i`): even root cannot write them then, which is what a
/// read-only disk does to the bridge's writes.
struct ReadOnlyJournal {
    files: Vec<std::path::PathBuf>,
}

impl ReadOnlyJournal {
    fn take(path: &std::path::Path) -> ReadOnlyJournal {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("journal file name")
            .to_string();
        let dir = path.parent().expect("journal dir");
        let files: Vec<std::path::PathBuf> = ["", "-wal"]
            .iter()
            .map(|suffix| dir.join(format!("{name}{suffix}")))
            .filter(|f| f.exists())
            .collect();
        for f in &files {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(f)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "chattr +i {} failed: this scenario needs an ext4-like filesystem and root",
                f.display()
            );
        }
        ReadOnlyJournal { files }
    }

    fn release(self) {
        for f in &self.files {
            let _ = std::process::Command::new("chattr").arg("-i").arg(f).status();
        }
    }
}

/// How scenario 6 takes the journal away.
#[derive(Clone, Copy)]
enum Blocker {
    Lock,
    ReadOnly,
}

enum Blocked {
    Lock(JournalLock),
    ReadOnly(ReadOnlyJournal),
}

impl Blocked {
    fn release(self) {
        match self {
            Blocked::Lock(l) => l.release(),
            Blocked::ReadOnly(r) => r.release(),
        }
    }
}

/// 6. The journal cannot store: webhooks answer 503 and nothing refused is journaled; the bridge
///    recovers once it can write again.
async fn journal_unavailable(blocker: Blocker) -> Row {
    let w = World::start(WorldOptions::default()).await;
    let ops = w.ops(true);
    let t = id(&ops.tenant(&label("j", 0)).await);
    let a = id(&ops.create_instance(&t, &label("j", 0), "running").await);
    let b = id(&ops.create_instance(&t, &label("j", 1), "running").await);
    let (_, mut violations) = w.converge(Duration::from_secs(60)).await;
    let lock = match blocker {
        Blocker::Lock => Blocked::Lock(JournalLock::take(&w.journal_path())),
        Blocker::ReadOnly => Blocked::ReadOnly(ReadOnlyJournal::take(&w.journal_path())),
    };
    let how = match blocker {
        Blocker::Lock => "the write lock is held",
        Blocker::ReadOnly => "its files are read-only (chattr +i)",
    };
    let silent = w.ops(false);
    let mut answers = Vec::new();
    let mut refused_records = Vec::new();
    for (n, rid) in [&a, &b].into_iter().enumerate() {
        let rec = silent
            .patch(
                Collection::BotInstances,
                rid,
                json!({"desired_state": "stopped", "name": format!("j-{n}")}),
            )
            .await;
        let before = w.acks.all().len();
        let sent = Instant::now();
        let status = send_webhook(&w.bridge.url, &w.acks, Action::Update, Collection::BotInstances, &rec).await;
        let waited = sent.elapsed();
        answers.push(format!("{} in {}", status.unwrap_or(0), secs(waited)));
        if status != Some(503) {
            violations.push(format!(
                "webhook while {how} answered {status:?} after {waited:?}, expected 503"
            ));
        }
        // The PocketBase hook gives up after 3 s: a later 503 would never reach it.
        if waited > Duration::from_secs(3) {
            violations.push(format!("503 took {waited:?}, longer than the hook's 3 s send timeout"));
        }
        if w.acks.all().len() != before {
            violations.push("a webhook was acknowledged while the journal could not store it".into());
        }
        refused_records.push(rec);
    }
    lock.release();
    // The refused deliveries are sent again, as a sender would: each must now be accepted (202) or be
    // a duplicate of a write that landed after the 503 (200); both are acknowledgements the
    // invariant check then finds in the journal.
    let t0 = Instant::now();
    let mut retries = Vec::new();
    for rec in &refused_records {
        let retry = send_webhook(&w.bridge.url, &w.acks, Action::Update, Collection::BotInstances, rec).await;
        if !matches!(retry, Some(200 | 202)) {
            violations.push(format!(
                "the retried delivery answered {retry:?} after the journal recovered"
            ));
        }
        retries.push(retry.unwrap_or(0));
    }
    let retry_time = t0.elapsed();
    let (took, v) = finish(&w, Duration::from_secs(90)).await;
    violations.extend(v);
    violations.extend(self_check(&w).await);
    Row {
        scenario: match blocker {
            Blocker::Lock => "6a. journal locked".into(),
            Blocker::ReadOnly => "6b. journal read-only".into(),
        },
        runs: format!("{} webhooks while {how}, then retried", answers.len()),
        figures: format!(
            "answers while blocked: {}; retries {retries:?} in {}; converged {} after release",
            answers.join(", "),
            secs(retry_time),
            secs(took)
        ),
        violations,
        wall: w.started.elapsed(),
    }
}

/// The invariant check must be able to fail: a `cf-*` project made behind the bridge's back has to be
/// reported as an orphan (then it is removed again).
async fn self_check(w: &World) -> Vec<String> {
    let http = cf_testkit::http();
    let name = label("cf-ghost", 0);
    let created: Value = http
        .post(format!("{}/api/v1/projects", w.sim.url))
        .bearer_auth(cf_testkit::sim::SIM_TOKEN)
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("create a stray project")
        .json()
        .await
        .expect("project json");
    let seen = w
        .check()
        .await
        .iter()
        .any(|v| v.contains("orphan Coolify project") && v.contains(&name));
    let uuid = created["uuid"].as_str().unwrap_or_default();
    let _ = http
        .delete(format!("{}/api/v1/projects/{uuid}", w.sim.url))
        .bearer_auth(cf_testkit::sim::SIM_TOKEN)
        .send()
        .await;
    if seen {
        Vec::new()
    } else {
        vec![format!("self-check: the stray project {name} was not reported")]
    }
}

/// Runs a scenario in its own task so a panic becomes a row instead of ending the suite.
async fn run<F: Future<Output = Row> + Send + 'static>(name: &str, f: F) -> Row {
    let t = Instant::now();
    match tokio::spawn(f).await {
        Ok(row) => row,
        Err(e) => {
            let msg = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            Row {
                scenario: name.into(),
                runs: "aborted".into(),
                violations: vec![format!("panicked: {msg}")],
                figures: String::new(),
                wall: t.elapsed(),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliability_suite() {
    let wanted = std::env::var("RELIABILITY_SCENARIOS").unwrap_or_default();
    let on = |name: &str| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == name);
    let mut rows = Vec::new();
    if on("kill9") {
        rows.push(run("1. bridge kill -9", kill9()).await);
    }
    if on("pb_restart") {
        rows.push(run("2. PocketBase kill + restart", pb_restart()).await);
    }
    if on("realtime_cut") {
        rows.push(run("3. realtime stream cut", realtime_cut()).await);
    }
    if on("sim_faults") {
        rows.push(run("4. simulator faults", sim_faults()).await);
    }
    if on("coolify_outage") {
        rows.push(run("5. Coolify unreachable", coolify_outage()).await);
    }
    if on("journal_unavailable") {
        rows.push(run("6a. journal locked", journal_unavailable(Blocker::Lock)).await);
        rows.push(run("6b. journal read-only", journal_unavailable(Blocker::ReadOnly)).await);
    }
    let t = table(&rows);
    println!("\n{t}");
    let _ = std::fs::write(cf_testkit::repo_root().join("target/reliability-table.md"), &t);
    let failures: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.violations
                .iter()
                .take(15)
                .map(move |v| format!("{}: {v}", r.scenario))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "invariant violations:\n{}\n\n{t}",
        failures.join("\n")
    );
}
