//! The production-like idle phase: a fleet of running instances, nobody changing anything, the bridge at
//! its defaults (health poller every 30 s, the orphan scan with each 300 s resync, 180 Coolify calls/min):
//! what it costs PocketBase, Coolify, the journal and the bridge's CPU.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::client::pb_time;
use super::procs::{self, Paths};
use super::report::{Figure, Goal, Report};
use super::stack::{Stack, create_fleet, start_stack};

const SECTION: &str = "7 idle fleet";
const BUDGET_KEY: &str = "CF_BRIDGE__COOLIFY__REQUESTS_PER_MINUTE";
/// The simulator's routes that read service status (the orphan scan's `GET /projects` is not one).
const STATUS_READS: [&str; 3] = [
    "GET /services",
    "GET /services/{uuid}",
    "GET /projects/{uuid}/{environment_name_or_uuid}",
];

/// Events journaled so far (received less deduplicated), by source.
async fn journaled_by_source(stack: &Stack) -> Result<Vec<(&'static str, f64)>> {
    let mut out = Vec::new();
    for source in ["realtime", "webhook", "resync", "replay", "tenant", "health"] {
        let label = format!("source=\"{source}\"");
        let received = stack
            .bridge
            .metric_sum_where("cf_bridge_events_received_total", &label)
            .await?;
        let duplicates = stack
            .bridge
            .metric_sum_where("cf_bridge_events_deduplicated_total", &label)
            .await?;
        out.push((source, received - duplicates));
    }
    Ok(out)
}

async fn wait_running(stack: &Stack, n: usize, limit: Duration) -> Result<()> {
    let t = Instant::now();
    loop {
        let running = stack.pb.count("bot_instances", "status = \"running\"").await? as usize;
        if running >= n {
            return Ok(());
        }
        if t.elapsed() > limit {
            bail!("only {running} of {n} instances running after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sets up `n` running instances with a large budget, restarts the bridge at every default, lets it settle,
/// then watches `secs` seconds of nobody changing anything.
pub async fn idle(
    paths: &Paths,
    dir: &Path,
    (n, secs): (usize, u64),
    setup_budget: u32,
    full_mode: bool,
    report: &mut Report,
) -> Result<()> {
    let fast_sim = [
        "--rate-limit",
        "1000000",
        "--start-delay-ms",
        "0",
        "--running-delay-ms",
        "0",
    ];
    let mut stack = start_stack(paths, dir, &fast_sim, &[(BUDGET_KEY, setup_budget.to_string())]).await?;
    let t = Instant::now();
    create_fleet(&stack.pb, "i", n, "running").await?;
    wait_running(&stack, n, Duration::from_secs(120 + n as u64 / 5)).await?;
    stack.bridge.wait_idle(Duration::from_secs(600)).await?;
    let setup = t.elapsed();
    stack.restart_bridge(&[BUDGET_KEY], &[]).await?;
    stack.bridge.wait_idle(Duration::from_secs(600)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let poll = stack.settings().reconcile.health_poll_interval.as_secs_f64();
    let resync = stack.settings().pocketbase.resync_interval.as_secs_f64();

    let webhooks0 = stack
        .bridge
        .metric_sum_where("cf_bridge_events_received_total", "source=\"webhook\"")
        .await?;
    let journaled0 = stack.bridge.journaled().await?;
    let by_source0 = journaled_by_source(&stack).await?;
    let [pb_pid, bridge_pid, sim_pid] = stack.pids();
    // The simulator's request log spans the window and no more: the polls fall every interval, so a log
    // read a few seconds late can hold one more than the window's count of intervals.
    stack.sim.clear_requests().await?;
    let window = procs::Window::open(&[pb_pid, bridge_pid, sim_pid, Some(std::process::id())]);
    let from = pb_time(chrono::Utc::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let log = stack.sim.requests().await?;
    let to = pb_time(chrono::Utc::now());
    let usage = window.close();
    let webhooks = stack
        .bridge
        .metric_sum_where("cf_bridge_events_received_total", "source=\"webhook\"")
        .await?
        - webhooks0;
    let journaled = stack.bridge.journaled().await? - journaled0;
    let by_source: Vec<String> = journaled_by_source(&stack)
        .await?
        .into_iter()
        .zip(by_source0)
        .filter(|((_, after), (_, before))| after > before)
        .map(|((source, after), (_, before))| format!("{} {source}", after - before))
        .collect();
    let gets = log.iter().filter(|r| r.method == "GET").count();
    let reads = log.iter().filter(|r| STATUS_READS.contains(&r.path.as_str())).count();
    let changed = stack
        .pb
        .count(
            "bot_instances",
            &format!("updated >= \"{from}\" && updated <= \"{to}\""),
        )
        .await?;
    // PocketBase writes its request log in batches; give it time to flush.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = stack.pb.logged_requests("data.method != \"GET\"", &from, &to).await?;
    let pb_reads = stack.pb.logged_requests("data.method = \"GET\"", &from, &to).await?;
    let wall = usage.wall_secs;
    let sat = usage.saturated;
    let label = format!("{n} running instances, {secs} s");
    report.add(
        Figure::new(
            SECTION,
            format!("PocketBase write requests per second ({label})"),
            writes as f64 / wall,
            "/s",
        )
        .target(Goal::AtMost(1.0), full_mode)
        .saturated(sat),
    );
    report.add(
        Figure::new(
            SECTION,
            format!("PocketBase read requests per health poll interval of {poll:.0} s ({label})"),
            pb_reads as f64 / (wall / poll),
            "count",
        )
        .saturated(sat),
    );
    report.add(
        Figure::new(
            SECTION,
            format!("PocketBase CPU, share of a core, average ({label})"),
            100.0 * usage.cpu_secs[0] / wall,
            "%",
        )
        .saturated(sat),
    );
    report.add(
        Figure::new(
            SECTION,
            format!("bot_instances records whose `updated` moved ({label})"),
            changed as f64,
            "count",
        )
        .saturated(sat),
    );
    report.add(
        Figure::new(
            SECTION,
            format!("webhooks received per second ({label})"),
            webhooks / wall,
            "/s",
        )
        .saturated(sat),
    );
    report.add(
        Figure::new(
            SECTION,
            format!("journal rows (events) per second ({label})"),
            journaled / wall,
            "/s",
        )
        .saturated(sat),
    );
    report.add(
        Figure::new(
            SECTION,
            format!("Coolify calls per minute ({label})"),
            60.0 * log.len() as f64 / wall,
            "/min",
        )
        .vs(
            f64::from(stack.settings().coolify.requests_per_minute),
            "the bridge's budget",
        )
        .saturated(sat),
    );
    report.add(
        Figure::new(
            SECTION,
            format!(
                "Coolify status reads (service and environment GETs) per health poll interval of {poll:.0} s ({label})"
            ),
            reads as f64 / (wall / poll),
            "count",
        )
        .target(Goal::AtMost(1.0), full_mode)
        .saturated(sat),
    );
    report.add(
        Figure::new(
            SECTION,
            format!("cf-bridge CPU, share of a core, average ({label})"),
            100.0 * usage.cpu_secs[1] / wall,
            "%",
        )
        .vs(100.0 * usage.cpu_secs[0] / wall, "PocketBase's")
        .saturated(sat),
    );
    let bridge = stack.bridge_pid();
    let mib = |kib: Option<u64>| kib.map_or(f64::NAN, |k| k as f64 / 1024.0);
    report.add(
        Figure::new(
            SECTION,
            format!("cf-bridge resident memory at the end ({label})"),
            mib(procs::rss_kib(bridge)),
            "MiB",
        )
        .vs(mib(pb_pid.and_then(procs::rss_kib)), "PocketBase's"),
    );
    report.add(
        Figure::new(
            SECTION,
            format!("cf-bridge peak resident memory (VmHWM) since its restart ({label})"),
            mib(procs::hwm_kib(bridge)),
            "MiB",
        )
        .vs(mib(pb_pid.and_then(procs::hwm_kib)), "PocketBase's peak"),
    );
    report.add(Figure::new(
        SECTION,
        format!("journal file size (journal.db + WAL) after setup and the idle phase ({label})"),
        stack.journal_bytes() as f64 / 1_048_576.0,
        "MiB",
    ));
    report.note(format!(
        "idle: {n} running instances set up in {:.1} s (bridge budget {setup_budget}/min), then the bridge restarted at every default (health poll {poll:.0} s, resync and orphan scan {resync:.0} s, budget {}/min) and watched for {wall:.1} s: {writes} PocketBase write requests and {pb_reads} reads, {changed} records changed, {webhooks:.0} webhooks, {journaled:.0} events journaled{}, {} Coolify calls ({gets} GET, {reads} of them status reads); machine {:.0}% busy, load average {:.1}{}{}",
        setup.as_secs_f64(),
        stack.settings().coolify.requests_per_minute,
        if by_source.is_empty() { String::new() } else { format!(" ({})", by_source.join(", ")) },
        log.len(),
        100.0 * usage.machine_busy,
        usage.loadavg_1m,
        if sat { ", saturated" } else { "" },
        if (wall as u64) < resync as u64 { "; shorter than one resync interval, so no orphan scan ran in it" } else { "" }
    ));
    Ok(())
}
