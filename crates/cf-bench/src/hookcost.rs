//! Where the project hook's cost to PocketBase writes goes: the same write flood against PocketBase with
//! the project's hooks delivering to a sink that answers 204 at once (hook and HTTP cost, no bridge), and
//! with delivery switched off (the hooks' JavaScript alone); [`compare`] also takes each hook file alone
//! and another copy of the hooks (an older version), alternated in one run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use super::client::{Pb, http};
use cf_testkit::TestPb;

use super::procs::{self, POCKETBASE_DEFAULT_HOOKS_POOL, Paths};
use super::report::{Figure, Goal, Report};
use super::stack::create_fleet;
use super::stats::summarize;

/// An HTTP server in this process that answers every request with 204.
pub struct Sink {
    pub url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Sink {
    pub fn start() -> Result<Sink> {
        let server = actix_web::HttpServer::new(|| {
            actix_web::App::new().default_service(actix_web::web::to(|| async {
                actix_web::HttpResponse::NoContent().finish()
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .context("bind the webhook sink")?;
        let addr = *server.addrs().first().context("the webhook sink has no address")?;
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Sink {
            url: format!("http://{addr}/hooks/pocketbase"),
            handle,
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// PocketBase with the project's hooks; `webhook_url` None leaves delivery unconfigured (the hook returns
/// before signing).
pub struct HookPb {
    pub pb: Pb,
    pub instances: Vec<String>,
    _proc: TestPb,
}

impl HookPb {
    pub fn pid(&self) -> Option<u32> {
        self._proc.pid()
    }

    pub async fn start(paths: &Paths, dir: &Path, webhook_url: Option<&str>) -> Result<HookPb> {
        let env: Vec<(&str, String)> = match webhook_url {
            Some(url) => vec![
                ("CF_BRIDGE_WEBHOOK_URL", url.to_string()),
                ("CF_BRIDGE_WEBHOOK_SECRET", cf_bridge::webhook::generate_secret()),
            ],
            None => Vec::new(),
        };
        let (pb, instances, proc) = pb_with_fleet(
            paths,
            &dir.join("pb_data"),
            &paths.root.join("hooks/pb_hooks"),
            &env,
            "h",
        )
        .await?;
        Ok(HookPb {
            pb,
            instances,
            _proc: proc,
        })
    }
}

/// A PocketBase with `hooks_dir`, the base-llm template and 64 stopped instances named after `tag`.
pub async fn pb_with_fleet(
    paths: &Paths,
    data_dir: &Path,
    hooks_dir: &Path,
    env: &[(&str, String)],
    tag: &str,
) -> Result<(Pb, Vec<String>, TestPb)> {
    pb_with_fleet_of(paths, data_dir, hooks_dir, env, tag, 64).await
}

/// Like [`pb_with_fleet`], with `n` instances.
pub async fn pb_with_fleet_of(
    paths: &Paths,
    data_dir: &Path,
    hooks_dir: &Path,
    env: &[(&str, String)],
    tag: &str,
    n: usize,
) -> Result<(Pb, Vec<String>, TestPb)> {
    let proc = procs::start_pocketbase(paths, data_dir, hooks_dir, env).await?;
    let pb = Pb::login(&proc.url, http()?).await?;
    pb.batch_create("bot_templates", &[json!({"name": "base-llm", "active": true})])
        .await?;
    let instances = create_fleet(&pb, tag, n, "stopped").await?;
    Ok((pb, instances, proc))
}

/// The latency baseline: a PocketBase with the same schema and no hooks, a record per pool instance, and
/// a realtime subscriber. The latency phase makes each write there too, at the same moment.
pub struct BareFrames {
    pub pb: Pb,
    /// By pool position.
    pub ids: Vec<String>,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<super::sse::Seen>,
    _proc: TestPb,
}

impl BareFrames {
    pub fn pid(&self) -> Option<u32> {
        self._proc.pid()
    }

    pub async fn start(paths: &Paths, dir: &Path, pool: usize) -> Result<BareFrames> {
        let hooks = dir.join("no-hooks");
        std::fs::create_dir_all(&hooks)?;
        let (pb, ids, proc) = pb_with_fleet_of(paths, &dir.join("pb_data"), &hooks, &[], "f", pool).await?;
        let rx = super::sse::subscribe(&pb).await?;
        Ok(BareFrames {
            pb,
            ids,
            rx,
            _proc: proc,
        })
    }
}

/// The hook files that run on a record write (the others serve routes, realtime connects or a cron);
/// `concurrency.pb.js` is in older copies only (its line now runs in `actor.pb.js`).
const PER_WRITE_HOOKS: &[&str] = &["actor.pb.js", "concurrency.pb.js", "webhook.pb.js"];

/// One PocketBase of the hook comparison: which hooks, whether they deliver webhooks (to the sink), and
/// whether a realtime subscriber reads every frame.
struct Setup {
    name: String,
    hooks: PathBuf,
    deliver: bool,
    subscribe: bool,
    /// `--hooksPool` instead of the bench's.
    pool: Option<u32>,
}

/// A hooks directory holding `only` (a hook file) and every shared module (`*.js` that is not `*.pb.js`)
/// of `from`, so the hook file finds what it `require()`s.
fn subset(from: &Path, only: &str, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name == only || (name.ends_with(".js") && !name.ends_with(".pb.js")) {
            std::fs::copy(from.join(&name), to.join(&name))?;
        }
    }
    Ok(())
}

/// The setups for the hooks in `dirs` (label, directory): each per-write hook file alone (delivery off),
/// all of them with delivery off, and all of them delivering to a sink; first of all, no hooks. For the
/// first directory (the project's) also all of them with delivery off and a realtime subscriber that only
/// reads the frames: what the default intake's stream costs PocketBase before the bridge does anything;
/// and, when the bench's `pool` is not PocketBase's default, those two at the default pool.
fn setups(root: &Path, dirs: &[(&str, PathBuf)], pool: u32) -> Result<Vec<Setup>> {
    let empty = root.join("no-hooks");
    std::fs::create_dir_all(&empty)?;
    let mut out = vec![Setup {
        name: "no hooks".into(),
        hooks: empty,
        deliver: false,
        subscribe: false,
        pool: None,
    }];
    for (n, (label, dir)) in dirs.iter().enumerate() {
        for file in PER_WRITE_HOOKS.iter().filter(|f| dir.join(f).exists()) {
            let to = root.join(format!("{label}-{file}"));
            subset(dir, file, &to)?;
            out.push(Setup {
                name: format!("{label}: {file} alone, webhook delivery off"),
                hooks: to,
                deliver: false,
                subscribe: false,
                pool: None,
            });
        }
        out.push(Setup {
            name: format!("{label}: all project hooks, webhook delivery off (the default)"),
            hooks: dir.clone(),
            deliver: false,
            subscribe: false,
            pool: None,
        });
        if n == 0 {
            out.push(Setup {
                name: format!(
                    "{label}: all project hooks, webhook delivery off, a realtime subscriber that only reads every frame (no bridge)"
                ),
                hooks: dir.clone(),
                deliver: false,
                subscribe: true,
                pool: None,
            });
            // The same two at PocketBase's own pool: what the deployment's larger pool is worth.
            if pool != POCKETBASE_DEFAULT_HOOKS_POOL {
                for (subscribe, what) in [
                    (false, ""),
                    (true, ", a realtime subscriber that only reads every frame (no bridge)"),
                ] {
                    out.push(Setup {
                        name: format!(
                            "{label}: all project hooks, webhook delivery off{what}, PocketBase's default --hooksPool ({POCKETBASE_DEFAULT_HOOKS_POOL})"
                        ),
                        hooks: dir.clone(),
                        deliver: false,
                        subscribe,
                        pool: Some(POCKETBASE_DEFAULT_HOOKS_POOL),
                    });
                }
            }
        }
        out.push(Setup {
            name: format!("{label}: all project hooks delivering to a sink that answers 204"),
            hooks: dir.clone(),
            deliver: true,
            subscribe: false,
            pool: None,
        });
    }
    Ok(out)
}

/// What one setup measured, summed over the rounds.
#[derive(Default)]
struct Tally {
    writes: usize,
    secs: f64,
    cpu_secs: f64,
    rates: Vec<f64>,
    latencies: Vec<Duration>,
}

/// Each setup's PocketBase (same schema, 64 instances) started side by side, then measured in rounds that
/// alternate them (the order reversed every other round), so that the shared machine's drift falls on
/// every setup alike. Per setup: the write rate of 32 writers flooding person-owned field updates and the
/// PocketBase CPU per write of that flood, and the latency of `writes` updates made one at a time.
/// `dirs`: (label, hooks directory), e.g. the project's hooks and an older copy to compare with.
pub async fn compare(
    paths: &Paths,
    root: &Path,
    dirs: &[(&str, PathBuf)],
    (secs, writes, rounds): (f64, usize, usize),
    report: &mut Report,
) -> Result<()> {
    let sink = Sink::start()?;
    let mut running = Vec::new();
    for (i, setup) in setups(root, dirs, paths.hooks_pool)?.into_iter().enumerate() {
        let env = if setup.deliver {
            vec![
                ("CF_BRIDGE_WEBHOOK_URL", sink.url.clone()),
                ("CF_BRIDGE_WEBHOOK_SECRET", cf_bridge::webhook::generate_secret()),
            ]
        } else {
            Vec::new()
        };
        let pooled = Paths {
            hooks_pool: setup.pool.unwrap_or(paths.hooks_pool),
            ..paths.clone()
        };
        let (pb, instances, proc) = pb_with_fleet(
            &pooled,
            &root.join(format!("pb-{i}")),
            &setup.hooks,
            &env,
            &format!("s{i}"),
        )
        .await?;
        if setup.subscribe {
            super::sse::read_and_drop(&pb).await?;
        }
        // Unmeasured: a fresh PocketBase's first writes (and its JS runtimes' first calls) are slower.
        super::writes::timed_patches(&pb, "bot_instances", &instances, 2 * instances.len(), "warm").await;
        running.push((setup, pb, instances, proc, Tally::default()));
    }
    let rounds = rounds.max(1);
    let per_round = writes.div_ceil(rounds);
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..running.len()).collect()
        } else {
            (0..running.len()).rev().collect()
        };
        for i in order {
            let (setup, pb, instances, proc, tally) = &mut running[i];
            eprintln!("  round {}/{rounds}: {}", round + 1, setup.name);
            let pid = proc.pid().context("PocketBase has no pid")?;
            let cpu0 = procs::cpu_secs(pid).unwrap_or(f64::NAN);
            let t = std::time::Instant::now();
            let (rate, n) = super::writes::pb_field_writes(pb, instances, secs, &format!("r{round}"), "name").await?;
            let took = t.elapsed().as_secs_f64();
            let cpu1 = procs::cpu_secs(pid).unwrap_or(f64::NAN);
            tally.writes += n;
            tally.secs += took;
            tally.cpu_secs += cpu1 - cpu0;
            tally.rates.push(rate);
            let tag = format!("q{round}-");
            tally
                .latencies
                .extend(super::writes::timed_patches(pb, "bot_instances", instances, per_round, &tag).await);
        }
    }
    drop(sink);
    let bare = &running[0].4;
    let bare_rate = bare.writes as f64 / bare.secs;
    let bare_cpu = bare.cpu_secs * 1000.0 / bare.writes.max(1) as f64;
    let bare_lat = summarize(&bare.latencies);
    for (i, (setup, _, _, _, tally)) in running.iter().enumerate() {
        let rate = tally.writes as f64 / tally.secs;
        let cpu = tally.cpu_secs * 1000.0 / tally.writes.max(1) as f64;
        let lat = summarize(&tally.latencies);
        let rates: Vec<String> = tally.rates.iter().map(|r| format!("{r:.0}")).collect();
        report.note(format!(
            "hook cost, {}: {} flood writes in {:.1} s (rates by round {}/s), {} timed writes",
            setup.name,
            tally.writes,
            tally.secs,
            rates.join(", "),
            lat.n
        ));
        if i == 0 {
            report.add(Figure::new(
                "2 throughput",
                "hook cost: PocketBase write rate with no hooks (32 writers, person-owned field)",
                rate,
                "/s",
            ));
            report.add(Figure::new(
                "2 throughput",
                "hook cost: PocketBase CPU per write with no hooks",
                cpu,
                "ms",
            ));
            for (q, v) in [("p50", lat.p50_ms), ("p99", lat.p99_ms)] {
                report.add(Figure::new(
                    "2 throughput",
                    format!("hook cost: PocketBase write one at a time {q}, no hooks"),
                    v,
                    "ms",
                ));
            }
            continue;
        }
        let mut rate_figure = Figure::new(
            "2 throughput",
            format!("hook cost: PocketBase write rate, {} vs no hooks", setup.name),
            rate,
            "/s",
        )
        .vs(bare_rate, "no hooks, same run");
        if setup.name.ends_with("(the default)") {
            rate_figure = rate_figure.goal(Goal::AtLeast(0.7 * bare_rate));
        }
        report.add(rate_figure);
        report.add(
            Figure::new(
                "2 throughput",
                format!("hook cost: PocketBase CPU per write, {} vs no hooks", setup.name),
                cpu,
                "ms",
            )
            .vs(bare_cpu, "no hooks, same run"),
        );
        for (q, v, b) in [
            ("p50", lat.p50_ms, bare_lat.p50_ms),
            ("p99", lat.p99_ms, bare_lat.p99_ms),
        ] {
            report.add(
                Figure::new(
                    "2 throughput",
                    format!(
                        "hook cost: PocketBase write one at a time {q}, {} vs no hooks",
                        setup.name
                    ),
                    v,
                    "ms",
                )
                .vs(b, "no hooks, same run"),
            );
        }
    }
    Ok(())
}

/// The floor of issue 17's "PocketBase CPU per change": a start's writes made by the bench itself, with no
/// bridge, paced at `rate` for `n` changes. Per change, on a PocketBase with the project's hooks (delivery
/// off) and two realtime subscribers (standing for the bridge's stream and the bench's frame watcher, as
/// in the latency phase): the person's write, then the bridge's two (`deploying`, then the final status
/// with its `deploy_logs` row in one batch, the same fields as `reconcile::instance` writes). Beside it, the
/// person's write alone, made once its change's three are answered, on a PocketBase with the same schema, no
/// hooks and one subscriber: the latency phase's baseline.
pub async fn start_writes_floor(
    paths: &Paths,
    root: &Path,
    (rate, n): (u32, usize),
    report: &mut Report,
) -> Result<()> {
    let hooks = paths.root.join("hooks/pb_hooks");
    let (pb, ids, proc) = pb_with_fleet_of(paths, &root.join("floor-hooks"), &hooks, &[], "fl", n).await?;
    for _ in 0..2 {
        super::sse::read_and_drop(&pb).await?;
    }
    let bare = BareFrames::start(paths, &root.join("floor-bare"), n).await?;
    let BareFrames {
        pb: bare_pb,
        ids: bare_ids,
        rx: mut bare_rx,
        _proc: bare_proc,
    } = bare;
    tokio::spawn(async move { while bare_rx.recv().await.is_some() {} });

    let window = procs::Window::open(&[proc.pid(), bare_proc.pid()]);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, (id, bare_id)) in ids.iter().zip(&bare_ids).enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / f64::from(rate))).await;
        let (pb, bare_pb, id, bare_id) = (pb.clone(), bare_pb.clone(), id.clone(), bare_id.clone());
        tasks.spawn(async move {
            one_start(&pb, &id).await
                && bare_pb
                    .patch("bot_instances", &bare_id, &json!({"desired_state": "running"}))
                    .await
                    .is_ok_and(|s| s == 200)
        });
    }
    let mut done = 0usize;
    while let Some(ok) = tasks.join_next().await {
        done += usize::from(ok.unwrap_or(false));
    }
    let usage = window.close();
    if done < n {
        anyhow::bail!("start-writes floor: {} of {n} changes failed", n - done);
    }
    let per_change = |cpu: f64| cpu * 1000.0 / n as f64;
    let (hooked, bare_ms) = (per_change(usage.cpu_secs[0]), per_change(usage.cpu_secs[1]));
    report.add(
        Figure::new(
            "1 latency",
            format!(
                "PocketBase CPU per change @ {rate}/s, a start's writes made without the bridge (the person's, which the project's hook marks `deploying`, then the final status and its deploy_logs row in one batch; project hooks, two realtime subscribers)"
            ),
            hooked,
            "ms",
        )
        .vs(bare_ms, "no-hook PocketBase, the person's write alone")
        .saturated(usage.saturated),
    );
    report.note(format!(
        "start-writes floor @ {rate}/s: {n} changes in {:.1} s; PocketBase CPU {:.2} s with the hooks, {:.2} s with none; {:.0}% of the machine busy",
        usage.wall_secs,
        usage.cpu_secs[0],
        usage.cpu_secs[1],
        100.0 * usage.machine_busy
    ));
    Ok(())
}

/// The person's write (the project's hook shows `deploying` in it) and the bridge's final write-back of one
/// start, one after the other.
async fn one_start(pb: &Pb, id: &str) -> bool {
    let path = format!("/api/collections/bot_instances/records/{id}");
    let running = json!({
        "status": "running", "error_message": "", "pending_reason": "",
        "coolify_service_id": format!("svc-{id}"), "coolify_project_id": "proj-floor", "domain": "",
        "applied_hash": "0123456789abcdef", "secrets_hash": "0123456789abcdef", "router_key_id": "",
        "template_version": "1", "last_healthy_at": super::client::pb_time(chrono::Utc::now()),
    });
    let row = json!({
        "instance": id, "record_id": id, "collection": "bot_instances", "action": "start",
        "status": "success", "message": "started", "triggered_by": "floor", "duration_ms": 1,
    });
    let batch = json!({"requests": [
        {"method": "PATCH", "url": path, "body": running},
        {"method": "POST", "url": "/api/collections/deploy_logs/records", "body": row},
    ]});
    let ok = |r: Result<(u16, serde_json::Value)>| r.is_ok_and(|(s, _)| s == 200);
    ok(pb
        .request(
            reqwest::Method::PATCH,
            &path,
            Some(&json!({"desired_state": "running"})),
        )
        .await)
        && ok(pb.request(reqwest::Method::POST, "/api/batch", Some(&batch)).await)
}
