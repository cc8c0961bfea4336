//! One benchmark run: stacks of PocketBase + coolify-sim + cf-bridge, the scenarios, the table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::latency::Intake;
use super::procs::{self, Paths};
use super::report::{Figure, Report};
use super::stack::{create_fleet, start_stack, start_stack_with, wait_provisioned};
use super::{Mode, Overrides, hookcost, idle, latency, ping, resources, writes};

/// Stack A's Coolify budget: the configuration's maximum, so that latency shows the bridge's own capacity
/// (real Coolify allows 200 calls/min unless its operator raises the limit; section 3 measures that).
const A_BUDGET: u32 = 100_000;

/// Splits the project hook's cost to PocketBase writes: the hooks delivering to a sink that answers at
/// once, the hooks with delivery off, and those with a realtime subscriber that only reads, each beside
/// the same flood against PocketBase with no hooks; the last two also at PocketBase's default hook pool
/// when the bench runs another.
/// Also a write of a bridge-owned field (`error_message`, as the bridge's write-backs make), beside the
/// same write with no hooks (`bare_bridge`): the hook posts no webhook for it.
async fn hook_cost(
    paths: &Paths,
    root: &Path,
    secs: f64,
    (bare, bare_bridge): (f64, f64),
    report: &mut Report,
) -> Result<()> {
    let sink = hookcost::Sink::start()?;
    let sinked = hookcost::HookPb::start(paths, &root.join("hooks-sink"), Some(&sink.url)).await?;
    let sink_rate = writes::pb_write_rate(&sinked.pb, &sinked.instances, secs, "sink").await?;
    let cpu_before = sinked.pid().and_then(procs::cpu_secs);
    let (bridge_rate, writes) =
        writes::pb_field_writes(&sinked.pb, &sinked.instances, secs, "wb", "error_message").await?;
    let cpu_after = sinked.pid().and_then(procs::cpu_secs);
    drop(sinked);
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        report.note(format!(
            "PocketBase CPU per bridge-owned field write with the project hooks delivering to a sink: {:.2} ms ({writes} writes)",
            (b - a) * 1000.0 / writes.max(1) as f64
        ));
    }
    drop(sink);
    const OFF: &str = "project hooks with webhook delivery off";
    const READER: &str =
        "project hooks with webhook delivery off and a realtime subscriber that only reads every frame (no bridge)";
    let (off_rate, stream_rate) = off_then_read(paths, &root.join("hooks-off"), secs, "off").await?;
    let mut rows = vec![
        (
            "project hooks delivering to a sink that answers 204 (no bridge)".to_string(),
            sink_rate,
        ),
        (OFF.to_string(), off_rate),
        (READER.to_string(), stream_rate),
    ];
    // The same two at PocketBase's own pool, when the bench runs another: what the deployment's pool is worth.
    if paths.hooks_pool != procs::POCKETBASE_DEFAULT_HOOKS_POOL {
        let pooled = Paths {
            hooks_pool: procs::POCKETBASE_DEFAULT_HOOKS_POOL,
            ..paths.clone()
        };
        let (off_rate, stream_rate) =
            off_then_read(&pooled, &root.join("hooks-off-default-pool"), secs, "off15").await?;
        let at = format!(
            ", PocketBase's default --hooksPool ({})",
            procs::POCKETBASE_DEFAULT_HOOKS_POOL
        );
        rows.push((format!("{OFF}{at}"), off_rate));
        rows.push((format!("{READER}{at}"), stream_rate));
    }
    for (figure, rate) in rows {
        report.add(
            Figure::new(
                "2 throughput",
                format!("PocketBase write rate: {figure} vs no hooks"),
                rate,
                "/s",
            )
            .vs(bare, "no hooks"),
        );
    }
    report.add(
        Figure::new(
            "2 throughput",
            "PocketBase write rate of a bridge-owned field (write-back): project hooks delivering to a sink vs no hooks",
            bridge_rate,
            "/s",
        )
        .vs(bare_bridge, "no hooks"),
    );
    Ok(())
}

/// The flood against a PocketBase of its own with the project's hooks and webhook delivery off, then
/// again with a realtime subscriber that reads every frame and does nothing else: what the default
/// intake's stream costs before the bridge does any work (its ceiling on this machine).
async fn off_then_read(paths: &Paths, dir: &Path, secs: f64, tag: &str) -> Result<(f64, f64)> {
    let off = hookcost::HookPb::start(paths, dir, None).await?;
    let off_rate = writes::pb_write_rate(&off.pb, &off.instances, secs, tag).await?;
    super::sse::read_and_drop(&off.pb).await?;
    let stream_rate = writes::pb_write_rate(&off.pb, &off.instances, secs, &format!("{tag}rt")).await?;
    Ok((off_rate, stream_rate))
}

/// `--hook-cost-only`: the project's hooks (each per-write hook file alone, all with webhook delivery off,
/// all delivering to a sink) and optionally another copy of them, beside a PocketBase with the same schema
/// and no hooks, alternated in one run; then the floor of PocketBase's CPU per change.
async fn hook_cost_only(
    paths: &Paths,
    root: &Path,
    sizes: &super::Sizes,
    compare_hooks: Option<&Path>,
    report: &mut Report,
) -> Result<()> {
    let mut dirs = vec![("now", paths.root.join("hooks/pb_hooks"))];
    if let Some(dir) = compare_hooks {
        dirs.push(("before", dir.to_path_buf()));
    }
    report.note(format!(
        "hook cost: {} rounds alternating the setups, each a {:.0} s flood and {} timed writes in all; load average before: {}",
        sizes.hook_rounds,
        sizes.throughput_secs,
        sizes.hook_writes,
        procs::load_average()
    ));
    hookcost::compare(
        paths,
        root,
        &dirs,
        (sizes.throughput_secs, sizes.hook_writes, sizes.hook_rounds),
        report,
    )
    .await?;
    report.note(format!("hook cost: load average after: {}", procs::load_average()));
    start_writes_floor(paths, root, sizes, report).await
}

/// The no-hook PocketBase's write rate, then the same flood on the bridge's stack beside it (section 2's
/// bridge rows), then the no-hook PocketBase's again; returns the no-hook rate (the mean of the two).
async fn flood_beside_bare(
    a: &super::stack::Stack,
    pool: &[String],
    (bare_pb, bare_instances): (&super::client::Pb, &[String]),
    (secs, full): (f64, bool),
    report: &mut Report,
) -> Result<f64> {
    eprintln!("throughput ...");
    let before = writes::pb_write_rate(bare_pb, bare_instances, secs, "bare").await?;
    let bare = latency::Bare::Bracket {
        before,
        pb: bare_pb,
        pool: bare_instances,
    };
    latency::throughput(a, pool, secs, bare, Intake::RealtimeOnly, full, report).await
}

/// [`hookcost::start_writes_floor`] at the first latency rate, as many changes as its phase makes.
async fn start_writes_floor(paths: &Paths, root: &Path, sizes: &super::Sizes, report: &mut Report) -> Result<()> {
    let Some(&rate) = sizes.rates.first() else {
        return Ok(());
    };
    let n = ((sizes.phase_secs * f64::from(rate)) as usize).max(sizes.min_samples);
    eprintln!("a start's writes without the bridge at {rate}/s ({n} changes) ...");
    hookcost::start_writes_floor(paths, root, (rate, n), report).await
}

pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cpus} CPUs ({model}), {:.1} GiB RAM", mem_kib as f64 / 1048576.0)
}

/// Runs every scenario and returns the table (markdown).
pub async fn run(
    mode: Mode,
    overrides: Overrides,
    (pocketbase, hooks_pool): (Option<PathBuf>, u32),
    work_dir: Option<PathBuf>,
) -> Result<Report> {
    let paths = Paths::discover(pocketbase, hooks_pool)?;
    let keep = work_dir.is_some();
    let root = work_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("cf-bench-{}", std::process::id())));
    let result = scenarios(mode, &overrides, &paths, &root).await;
    if !keep {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

async fn scenarios(mode: Mode, overrides: &Overrides, paths: &Paths, root: &Path) -> Result<Report> {
    let sizes = mode.sizes_with(overrides);
    let full = mode == Mode::Full;
    let mut report = Report::default();
    report.note(format!(
        "machine: {}; mode {mode:?} ({} instances, pool {}, rates {:?}); every PocketBase started with --hooksPool={}; cf-bridge build: {}",
        machine(),
        sizes.instances,
        sizes.pool,
        sizes.rates,
        paths.hooks_pool,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    ));
    let from_env = super::stack::settings_from_env();
    if !from_env.is_empty() {
        // A value that may be a secret (or a URL with a password in it) is not shown.
        let shown: Vec<String> = from_env
            .iter()
            .map(|(k, v)| {
                let secret = ["TOKEN", "SECRET", "PASSWORD", "KEY", "URL"]
                    .iter()
                    .any(|w| k.contains(w));
                if secret {
                    format!("{k} (set)")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        report.note(format!(
            "bridge settings from the bench's environment, after its own: {}",
            shown.join(", ")
        ));
    }

    if overrides.hook_cost_only {
        eprintln!("project hooks against PocketBase with no hooks ...");
        hook_cost_only(paths, root, &sizes, overrides.compare_hooks.as_deref(), &mut report).await?;
        return Ok(report);
    }
    if overrides.budget_only {
        let n = overrides.instances.unwrap_or(sizes.budget_instances);
        eprintln!("Coolify budget only ({n} instances; simulator limit 200/min, bridge default budget) ...");
        let b = start_stack(paths, &root.join("b"), &["--rate-limit", "200"], &[]).await?;
        resources::budget(&b, n, sizes.budget_secs, full, &mut report).await?;
        return Ok(report);
    }
    if overrides.idle_only {
        let n = overrides.instances.unwrap_or(sizes.idle_instances);
        eprintln!(
            "idle fleet only ({n} running instances, {} s, bridge at its defaults) ...",
            sizes.idle_secs
        );
        idle::idle(
            paths,
            &root.join("idle"),
            (n, sizes.idle_secs),
            A_BUDGET,
            full,
            &mut report,
        )
        .await?;
        return Ok(report);
    }
    if overrides.replicas_only {
        let n = overrides.instances.unwrap_or(sizes.instances.min(500));
        super::replicas::compare(paths, root, n, sizes.throughput_secs, &mut report).await?;
        return Ok(report);
    }
    if !overrides.resync_only && !overrides.acks_only {
        eprintln!("stream check pings ...");
        let ping_every = cf_bridge::config::DEFAULT_PING_INTERVAL.as_secs_f64();
        ping::ping_cost(paths, &root.join("ping"), sizes.pings, ping_every, &mut report).await?;
    }
    if overrides.ping_only {
        return Ok(report);
    }

    eprintln!(
        "starting stack A (the default path: realtime + resync, PocketBase's webhook hook off; simulator without rate limit, bridge budget {A_BUDGET}/min) ..."
    );
    let fast_sim = [
        "--rate-limit",
        "1000000",
        "--start-delay-ms",
        "0",
        "--running-delay-ms",
        "0",
        "--delete-delay-ms",
        "0",
    ];
    let a_extra = [
        ("CF_BRIDGE__COOLIFY__REQUESTS_PER_MINUTE", A_BUDGET.to_string()),
        ("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "3600".to_string()),
        ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600".to_string()),
    ];
    // PocketBase without the webhook variables (its hook registers nothing); the bridge keeps its secret
    // only for the acknowledgement phases, which post signed webhooks to it directly.
    let a = start_stack_with(paths, &root.join("a"), &fast_sim, &a_extra, false).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = procs::rss_kib(a.bridge_pid()).unwrap_or(0);
    let mut peaks = procs::PeakSteps::new(a.bridge_pid());
    peaks.after("the start");

    eprintln!("creating {} instances ...", sizes.instances);
    let t = Instant::now();
    let ids = create_fleet(&a.pb, "a", sizes.instances, "stopped").await?;
    let uuids = wait_provisioned(
        &a.pb,
        "a",
        ids.len(),
        Duration::from_secs(60 + sizes.instances as u64 / 10),
    )
    .await?;
    a.bridge.wait_idle(Duration::from_secs(300)).await?;
    let provision = t.elapsed();
    let fleet_rss = procs::rss_kib(a.bridge_pid()).unwrap_or(0);
    peaks.after("setup");
    report.note(format!(
        "setup: {} instances (stopped) created and provisioned in {:.1} s ({:.0}/s) with the bridge's maximum budget of {A_BUDGET} Coolify calls/min",
        ids.len(),
        provision.as_secs_f64(),
        ids.len() as f64 / provision.as_secs_f64()
    ));

    if overrides.resync_only {
        resources::resync(&a, ids.len(), full, &mut report).await?;
        return Ok(report);
    }
    let pool: Vec<String> = ids.iter().take(sizes.pool).cloned().collect();
    if overrides.acks_only {
        eprintln!("webhook acknowledgement ...");
        resources::acks(&a, &pool, sizes.acks, &mut report).await?;
        resources::acks_paced(&a, &pool, (sizes.ack_rate, sizes.paced_acks), full, &mut report).await?;
        eprintln!("resources ...");
        resources::resources(&a, &ids, (idle_rss, fleet_rss), sizes.events_total, full, &mut report).await?;
        return Ok(report);
    }
    let empty = root.join("no-hooks");
    std::fs::create_dir_all(&empty)?;
    if overrides.throughput_only {
        let (bare_pb, bare_instances, _bare_proc) =
            hookcost::pb_with_fleet(paths, &root.join("bare_data"), &empty, &[], "nh").await?;
        let secs = sizes.throughput_secs;
        flood_beside_bare(&a, &pool, (&bare_pb, &bare_instances), (secs, full), &mut report).await?;
        return Ok(report);
    }
    eprintln!(
        "no-hook PocketBase for the latency baseline ({} instances) ...",
        pool.len()
    );
    let mut bare = hookcost::BareFrames::start(paths, &root.join("bare-frames"), pool.len()).await?;
    let mut rx = super::sse::subscribe(&a.pb).await?;
    let mut desired: HashMap<String, bool> = pool.iter().map(|id| (id.clone(), false)).collect();
    for &rate in &sizes.rates {
        eprintln!("latency at {rate} changes/s ...");
        latency::phase(
            &a,
            &pool,
            &uuids,
            &mut desired,
            rate,
            (sizes.phase_secs, sizes.min_samples),
            &mut rx,
            &mut bare,
            (Intake::RealtimeOnly, full),
            &mut report,
        )
        .await?;
        peaks.after(format!("latency @ {rate}/s"));
    }
    drop(rx);
    drop(bare);
    if overrides.latency_only {
        return Ok(report);
    }

    eprintln!("PocketBase with the same schema and no hooks, and the naive-hook PocketBase ...");
    let (bare_pb, bare_instances, bare_proc) =
        hookcost::pb_with_fleet(paths, &root.join("bare_data"), &empty, &[], "nh").await?;
    let bare_tenant = bare_pb
        .field_by_id("tenants", "slug = \"nh-t0\"", "slug")
        .await?
        .into_keys()
        .next()
        .context("tenant of the no-hook PocketBase missing")?;
    let naive = resources::NaivePb::start(paths, &root.join("naive"), &a.sim.url).await?;
    let secs = sizes.throughput_secs;
    let bare = flood_beside_bare(&a, &pool, (&bare_pb, &bare_instances), (secs, full), &mut report).await?;
    peaks.after("the flood");
    let (bare_bridge, _) = writes::pb_field_writes(&bare_pb, &bare_instances, secs, "bwb", "error_message").await?;
    eprintln!("project hooks without the bridge ...");
    hook_cost(paths, root, sizes.throughput_secs, (bare, bare_bridge), &mut report).await?;
    start_writes_floor(paths, root, &sizes, &mut report).await?;
    eprintln!("webhook acknowledgement, hook cost and the naive hook ...");
    resources::acks(&a, &pool, sizes.acks, &mut report).await?;
    resources::acks_paced(&a, &pool, (sizes.ack_rate, sizes.paced_acks), full, &mut report).await?;
    resources::hook_cost(
        &a,
        (&bare_pb, &bare_instances, &bare_tenant),
        &naive,
        (sizes.hook_writes, sizes.naive_writes),
        &mut report,
    )
    .await?;
    drop(naive);
    drop(bare_proc);
    peaks.after("webhook acknowledgement and hook cost");

    eprintln!("resources ...");
    resources::resources(&a, &ids, (idle_rss, fleet_rss), sizes.events_total, full, &mut report).await?;
    peaks.after(format!("the injection of {} events", sizes.events_total));
    resources::resync(&a, ids.len(), full, &mut report).await?;
    peaks.after("the full resync, after the peak row was read");
    report.note(peaks.note("cf-bridge"));
    drop(a);

    eprintln!("webhook configuration (stack W: PocketBase's hooks post webhooks to the bridge) ...");
    let w = start_stack_with(paths, &root.join("w"), &fast_sim, &a_extra, true).await?;
    // As many instances as stack A's pool: with fewer, the phase's changes to one record come faster than
    // its start's wait for `running` ends (64 at 50/s: every 1.28 s, against about 0.9 s per start), and a
    // change then waits for the record's job (one per record) while the job's status reads, which name the
    // service, pass for the change's first call.
    let w_ids = create_fleet(&w.pb, "w", sizes.pool, "stopped").await?;
    let w_uuids = wait_provisioned(&w.pb, "w", w_ids.len(), Duration::from_secs(120)).await?;
    w.bridge.wait_idle(Duration::from_secs(300)).await?;
    if let Some(&rate) = sizes.rates.first() {
        let mut w_bare = hookcost::BareFrames::start(paths, &root.join("w-bare-frames"), w_ids.len()).await?;
        let mut w_rx = super::sse::subscribe(&w.pb).await?;
        let mut w_desired: HashMap<String, bool> = w_ids.iter().map(|id| (id.clone(), false)).collect();
        latency::phase(
            &w,
            &w_ids,
            &w_uuids,
            &mut w_desired,
            rate,
            (sizes.phase_secs, sizes.min_samples),
            &mut w_rx,
            &mut w_bare,
            (Intake::Webhook, full),
            &mut report,
        )
        .await?;
    }
    latency::throughput(
        &w,
        &w_ids,
        sizes.throughput_secs,
        latency::Bare::Rate(bare),
        Intake::Webhook,
        full,
        &mut report,
    )
    .await?;
    drop(w);

    eprintln!("Coolify budget (stack B: simulator limit 200/min, bridge default budget) ...");
    let b = start_stack(paths, &root.join("b"), &["--rate-limit", "200"], &[]).await?;
    resources::budget(&b, sizes.budget_instances, sizes.budget_secs, full, &mut report).await?;
    drop(b);

    eprintln!(
        "idle fleet ({} running instances, {} s, bridge at its defaults) ...",
        sizes.idle_instances, sizes.idle_secs
    );
    idle::idle(
        paths,
        &root.join("idle"),
        (sizes.idle_instances, sizes.idle_secs),
        A_BUDGET,
        full,
        &mut report,
    )
    .await?;
    Ok(report)
}
