//! Scenarios 1 and 2: change-to-Coolify latency beside change-to-realtime-frame, and write throughput.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use super::client::pb_time;
use super::hookcost::BareFrames;
use super::procs;
use super::report::{Figure, Goal, Report};
use super::sse::Seen;
use super::stack::Stack;
use super::stats::summarize;
use super::writes::write_flood;

struct Write {
    id: String,
    name: String,
    at: Instant,
    /// When the same change was sent to the PocketBase with no hooks.
    bare_at: Instant,
    wall_ms: i64,
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The first journal arrival (unix ms) of every bot_instances event whose record name starts with `prefix`.
async fn journaled_by_name(stack: &Stack, since_ms: i64, prefix: &str) -> Result<HashMap<String, i64>> {
    let mut out: HashMap<String, i64> = HashMap::new();
    let mut cursor: Option<i64> = None;
    loop {
        let mut path = format!("/admin/events?collection=bot_instances&since={since_ms}&limit=500");
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let v = stack.bridge.admin(reqwest::Method::GET, &path).await?;
        for e in v["events"].as_array().into_iter().flatten() {
            let name = e["payload"]["name"]
                .as_str()
                .or_else(|| e["payload"]["record"]["name"].as_str());
            if let (Some(name), Some(at)) = (name, e["received_at"].as_i64())
                && name.starts_with(prefix)
            {
                let slot = out.entry(name.to_string()).or_insert(at);
                *slot = (*slot).min(at);
            }
        }
        match v["next_cursor"].as_i64() {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// Writes at `rate`/s for `secs`, toggling desired_state over `pool`, then matches each write with its
/// realtime frame, its journal entry and the bridge's first Coolify request for the record.
#[allow(clippy::too_many_arguments)]
pub async fn phase(
    stack: &Stack,
    pool: &[String],
    uuids: &HashMap<String, String>,
    desired: &mut HashMap<String, bool>,
    rate: u32,
    (secs, min_samples): (f64, usize),
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    bare: &mut BareFrames,
    (intake, full_mode): (Intake, bool),
    report: &mut Report,
) -> Result<()> {
    while rx.try_recv().is_ok() {}
    while bare.rx.try_recv().is_ok() {}
    stack.sim.clear_requests().await?;
    let zero = stack.sim.clock_zero().await?;
    let n = ((f64::from(rate) * secs).round() as usize).max(min_samples);
    let prefix = format!("lat{rate}-");
    let sem = Arc::new(Semaphore::new(256));
    let mut tasks = tokio::task::JoinSet::new();
    let mut writes = Vec::with_capacity(n);
    let floods = stack.bridge.floods().await?;
    let [pb_pid, bridge_pid, sim_pid] = stack.pids();
    let window = procs::Window::open(&[pb_pid, bridge_pid, sim_pid, bare.pid(), Some(std::process::id())]);
    let start = Instant::now();
    let start_wall = wall_ms();
    let from = pb_time(chrono::Utc::now());
    for k in 0..n {
        tokio::time::sleep_until((start + Duration::from_secs_f64(k as f64 / f64::from(rate))).into()).await;
        let id = pool[k % pool.len()].clone();
        let running = !desired.get(&id).copied().unwrap_or(false);
        desired.insert(id.clone(), running);
        let name = format!("{prefix}{k}");
        let body = json!({"desired_state": if running { "running" } else { "stopped" }, "name": name});
        let at = Instant::now();
        let permit = sem.clone().acquire_owned().await?;
        let pb = stack.pb.clone();
        let project_body = body.clone();
        let project_id = id.clone();
        tasks.spawn(async move {
            let _permit = permit;
            pb.patch("bot_instances", &project_id, &project_body)
                .await
                .map(|s| (200..300).contains(&s))
                .unwrap_or(false)
        });
        // The same change to the PocketBase with no hooks; its answer is not counted.
        let bare_at = Instant::now();
        let permit = sem.clone().acquire_owned().await?;
        let bare_pb = bare.pb.clone();
        let bare_id = bare.ids[k % pool.len()].clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = bare_pb.patch("bot_instances", &bare_id, &body).await;
        });
        writes.push(Write {
            id,
            name,
            at,
            bare_at,
            wall_ms: wall_ms(),
        });
    }
    let mut ok = 0usize;
    while let Some(r) = tasks.join_next().await {
        ok += usize::from(r.unwrap_or(false));
    }
    let achieved = ok as f64 / start.elapsed().as_secs_f64();
    let idle = stack.bridge.wait_idle(Duration::from_secs(300)).await;
    let usage = window.close();
    let floods = floods.until(stack.bridge.floods().await?);
    let to = pb_time(chrono::Utc::now());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let drain = |rx: &mut mpsc::UnboundedReceiver<Seen>| {
        let mut seen: HashMap<String, Instant> = HashMap::new();
        while let Ok(s) = rx.try_recv() {
            if let Some(name) = s.record["name"].as_str() {
                seen.entry(name.to_string()).or_insert(s.at);
            }
        }
        seen
    };
    let seen = drain(rx);
    let bare_seen = drain(&mut bare.rx);
    let mut calls: HashMap<&str, Vec<Instant>> = HashMap::new();
    let log = stack.sim.requests().await?;
    for r in &log {
        let mut parts = r.uri.split('/');
        if let Some(uuid) = parts.by_ref().skip_while(|p| *p != "services").nth(1) {
            calls
                .entry(uuid)
                .or_default()
                .push(zero + Duration::from_millis(r.at_ms));
        }
    }
    let journaled = journaled_by_name(stack, start_wall - 1000, &prefix).await?;
    // Every request PocketBase served in the phase but the bench's n writes came from the bridge.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pb_writes = stack.pb.logged_requests("data.method != \"GET\"", &from, &to).await? as f64 - n as f64;
    let pb_reads = stack.pb.logged_requests("data.method = \"GET\"", &from, &to).await? as f64;

    let mut next_write: HashMap<&str, Instant> = HashMap::new();
    let (mut frame_lat, mut call_lat, mut journal_lat) = (Vec::new(), Vec::new(), Vec::new());
    let mut bare_lat = Vec::new();
    for w in writes.iter().rev() {
        let until = next_write.insert(w.id.as_str(), w.at);
        if let Some(at) = seen.get(&w.name) {
            frame_lat.push(at.saturating_duration_since(w.at));
        }
        if let Some(at) = bare_seen.get(&w.name) {
            bare_lat.push(at.saturating_duration_since(w.bare_at));
        }
        if let Some(at) = journaled.get(&w.name) {
            journal_lat.push(Duration::from_millis(u64::try_from(at - w.wall_ms).unwrap_or(0)));
        }
        let Some(times) = uuids.get(&w.id).and_then(|u| calls.get(u.as_str())) else {
            continue;
        };
        let i = times.partition_point(|t| *t < w.at);
        if let Some(t) = times.get(i)
            && until.is_none_or(|u| *t < u)
        {
            call_lat.push(*t - w.at);
        }
    }
    let (f, c, j) = (summarize(&frame_lat), summarize(&call_lat), summarize(&journal_lat));
    let b = summarize(&bare_lat);
    let label = format!("{rate}/s (achieved {achieved:.0}/s), {}", intake.label());
    let sat = usage.saturated;
    // Baseline: the frame of a PocketBase with the same schema and no hooks, for the same change.
    for (what, s) in [
        ("first Coolify call", &c),
        ("journaled", &j),
        ("realtime frame of the project's PocketBase (its hooks)", &f),
    ] {
        for (q, value, frame) in [("p50", s.p50_ms, b.p50_ms), ("p99", s.p99_ms, b.p99_ms)] {
            report.add(
                Figure::new("1 latency", format!("write -> {what} {q} @ {label}"), value, "ms")
                    .vs(frame, "no-hook frame")
                    .saturated(sat),
            );
        }
    }
    if rate == 50 {
        let overhead = Figure::new(
            "1 latency",
            format!("overhead of the first Coolify call over the no-hook frame, p99 @ {label}"),
            c.p99_ms - b.p99_ms,
            "ms",
        )
        .saturated(sat);
        report.add(intake.target(overhead, Goal::AtMost(10.0), full_mode));
    }
    // CPU per accepted change, each process, from the first write until the bridge was idle.
    let per_change = |secs: f64| secs * 1000.0 / ok.max(1) as f64;
    let bare_pb = per_change(usage.cpu_secs[3]);
    let pb_cpu = Figure::new(
        "1 latency",
        format!("PocketBase CPU per change @ {label} (its hooks, the bridge's reads and write-backs)"),
        per_change(usage.cpu_secs[0]),
        "ms",
    )
    .vs(bare_pb, "no-hook PocketBase, the same write")
    .saturated(sat);
    report.add(intake.target(pb_cpu, Goal::AtMost(3.0 * bare_pb), full_mode));
    for (what, v) in [("write", pb_writes), ("read", pb_reads)] {
        report.add(
            Figure::new(
                "1 latency",
                format!("PocketBase {what} requests by the bridge per change @ {label}"),
                v / ok.max(1) as f64,
                "count",
            )
            .saturated(sat),
        );
    }
    for (k, who) in [
        (1, "cf-bridge"),
        (2, "coolify-sim"),
        (4, "cf-bench (the load generator)"),
    ] {
        report.add(
            Figure::new(
                "1 latency",
                format!("{who} CPU per change @ {label}"),
                per_change(usage.cpu_secs[k]),
                "ms",
            )
            .saturated(sat),
        );
    }
    report.add(
        Figure::new(
            "1 latency",
            format!("machine CPU busy, all processes, from the first write until the bridge was idle @ {label}"),
            100.0 * usage.machine_busy,
            "%",
        )
        .saturated(sat),
    );
    report.note(format!(
        "latency @ {rate}/s, {}: {n} writes ({ok} accepted), {} realtime frames, {} no-hook frames, {} journaled, {} with a Coolify call before the record's next write (the rest were absorbed by a later change of the same record); {floods}{}",
        intake.label(),
        f.n,
        b.n,
        j.n,
        c.n,
        if idle.is_err() { "; the bridge was still busy 300 s after the last write" } else { "" }
    ));
    report.note(format!(
        "CPU @ {rate}/s, {}, from the first write until the bridge was idle ({:.1} s wall, {} cores, machine {:.0}% busy, load average {:.1}{}): PocketBase {:.1} s, cf-bridge {:.1} s, coolify-sim {:.1} s, no-hook PocketBase {:.1} s, cf-bench {:.1} s",
        intake.label(),
        usage.wall_secs,
        procs::cores(),
        100.0 * usage.machine_busy,
        usage.loadavg_1m,
        if sat { ", saturated" } else { "" },
        usage.cpu_secs[0],
        usage.cpu_secs[1],
        usage.cpu_secs[2],
        usage.cpu_secs[3],
        usage.cpu_secs[4],
    ));
    Ok(())
}

/// Which intake path a stack runs: the configuration its latency and throughput figures are of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// The project's hooks post a webhook to the bridge; the bridge also has its realtime stream.
    Webhook,
    /// No webhook delivery (`CF_BRIDGE_WEBHOOK_URL` unset): realtime stream and resync only. The default,
    /// judged against issue 17's goals.
    RealtimeOnly,
}

impl Intake {
    /// How the configuration is named in figure names.
    pub fn label(self) -> &'static str {
        match self {
            Intake::Webhook => "webhook configuration",
            Intake::RealtimeOnly => "default: realtime + resync, webhook hook off",
        }
    }

    /// Issue 17's goals are judged on the default configuration; the other shows them, unjudged.
    fn target(self, figure: Figure, goal: Goal, full_mode: bool) -> Figure {
        figure.target(goal, full_mode && self == Intake::RealtimeOnly)
    }
}

/// How soon after a flood the bridge must have journaled all of it for the flood's write rate to count: a
/// bridge that keeps up is at most a commit's wait and a batch behind its stream.
const KEPT_UP_SECS: f64 = 1.0;

/// The write rate of a PocketBase with the same schema and no hooks that a flood is judged by.
pub enum Bare<'a> {
    /// Measured already in this run.
    Rate(f64),
    /// Measured before the bridge's flood, and again on `pb` after it once the bridge is idle: their mean.
    /// One flood of the no-hook PocketBase ran from 1,394 to 1,763 writes/s between runs, and in some it
    /// was slower than the same run's PocketBase with the project's hooks, which flattered the bridge's
    /// ratio (docs/BENCHMARKS.md, "Thirty-sixth session").
    Bracket {
        before: f64,
        pb: &'a super::client::Pb,
        pool: &'a [String],
    },
}

/// Floods the stack's PocketBase and measures how fast the bridge journals, both beside the write rate of
/// a PocketBase with the same schema and no hooks, measured in the same run; returns that rate.
pub async fn throughput(
    stack: &Stack,
    pool: &[String],
    secs: f64,
    bare: Bare<'_>,
    intake: Intake,
    full_mode: bool,
    report: &mut Report,
) -> Result<f64> {
    let tag = match intake {
        Intake::Webhook => "tpw",
        Intake::RealtimeOnly => "tpr",
    };
    let floods = stack.bridge.floods().await?;
    let [pb_pid, bridge_pid, sim_pid] = stack.pids();
    let window = procs::Window::open(&[pb_pid, bridge_pid, sim_pid, Some(std::process::id())]);
    let start_wall = wall_ms();
    let (ok, elapsed) = write_flood(&stack.pb, pool, secs, tag, "name").await;
    let end_wall = wall_ms();
    let usage = window.close();
    let pb_rate = ok as f64 / elapsed.as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(120);
    let journaled = loop {
        let j = journaled_by_name(stack, start_wall - 1000, tag).await?;
        if j.len() >= ok || Instant::now() > deadline {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let waited_until = wall_ms();
    let in_window = journaled.values().filter(|at| **at <= end_wall).count();
    let last = journaled.values().copied().max().unwrap_or(end_wall);
    // Until the last write was journaled, or, with writes never journaled, until the bench stopped waiting.
    let caught_up_secs = (if journaled.len() >= ok { last } else { waited_until } - end_wall).max(0) as f64 / 1000.0;
    let journal_rate = journaled.len() as f64 / ((last.max(end_wall) - start_wall) as f64 / 1000.0);
    let (path, hooks) = match intake {
        Intake::Webhook => (
            "webhook and realtime (webhook configuration)",
            "project hooks (webhook to the bridge, webhook configuration)",
        ),
        Intake::RealtimeOnly => (
            "realtime + resync (default, webhook hook off)",
            "project hooks with the webhook hook off (default), the bridge on realtime",
        ),
    };
    stack.bridge.wait_idle(Duration::from_secs(300)).await?;
    // What the bridge put off during the flood it does after it: how long that took shows it.
    let idle_secs = (wall_ms() - end_wall).max(0) as f64 / 1000.0;
    let floods = floods.until(stack.bridge.floods().await?);
    let bare_rate = match bare {
        Bare::Rate(rate) => rate,
        Bare::Bracket { before, pb, pool } => {
            let after = super::writes::pb_write_rate(pb, pool, secs, "bare-after").await?;
            report.note(format!(
                "no-hook PocketBase write rate: {before:.0}/s before the bridge's flood, {after:.0}/s after it (the bridge idle); the baseline is their mean, {:.0}/s",
                (before + after) / 2.0
            ));
            (before + after) / 2.0
        }
    };
    let sat = usage.saturated;
    report.add(
        Figure::new(
            "2 throughput",
            format!("changes journaled per second, {path} (PocketBase flooded by 32 writers)"),
            journal_rate,
            "/s",
        )
        .vs(bare_rate, "no-hook PocketBase write rate")
        .saturated(sat),
    );
    let figure = Figure::new(
        "2 throughput",
        format!("PocketBase write rate: {hooks} vs no hooks"),
        pb_rate,
        "/s",
    )
    .vs(bare_rate, "no hooks")
    .saturated(sat);
    report.add(intake.target(figure, Goal::AtLeast(0.7 * bare_rate), full_mode));
    // The write rate counts only with the bridge keeping up: a bridge that falls behind its stream spends
    // its CPU after the flood instead of during it, which flatters the rate (docs/BENCHMARKS.md,
    // "Thirty-eighth session").
    let kept_up = Figure::new(
        "2 throughput",
        format!("time from the end of the flood until the bridge had journaled all of it, {path} (the write rate counts only if it kept up)"),
        caught_up_secs,
        "s",
    )
    .saturated(sat);
    report.add(intake.target(kept_up, Goal::AtMost(KEPT_UP_SECS), full_mode));
    report.note(format!(
        "throughput, {path}: {ok} writes in {:.1} s; {in_window} journaled by the end of the flood, backlog {} then, all {} journaled {:.1} s after it, its jobs done {idle_secs:.1} s after it; {floods}; CPU over the flood ({:.0}% of the machine busy{}): PocketBase {:.2} s, cf-bridge {:.2} s ({:.3} ms per write), coolify-sim {:.2} s, cf-bench {:.2} s",
        elapsed.as_secs_f64(),
        ok.saturating_sub(in_window),
        journaled.len(),
        caught_up_secs,
        100.0 * usage.machine_busy,
        if sat { ", saturated" } else { "" },
        usage.cpu_secs[0],
        usage.cpu_secs[1],
        1000.0 * usage.cpu_secs[1] / ok.max(1) as f64,
        usage.cpu_secs[2],
        usage.cpu_secs[3],
    ));
    Ok(bare_rate)
}
