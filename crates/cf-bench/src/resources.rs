//! Scenarios 3-5: Coolify budget, webhook acknowledgement beside a naive hook, memory, CPU and resync.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use super::client::{Pb, SimRequest};
use cf_testkit::TestPb;
use cf_testkit::sim::SIM_TOKEN;

use super::procs::{self, Paths};
use super::report::{Figure, Goal, Report};
use super::stack::{Stack, create_fleet};
use super::stats::summarize;
use super::writes::timed_patches;

/// The naive alternative: PocketBase with one hook that calls Coolify synchronously on every tenant update.
const NAIVE_HOOK: &str = r#"onRecordUpdateRequest((e) => {
  $http.send({
    url: $os.getenv("NAIVE_COOLIFY_URL") + "/api/v1/team",
    method: "GET",
    headers: { "Authorization": "Bearer " + $os.getenv("NAIVE_COOLIFY_TOKEN") },
    timeout: 30,
  });
  e.next();
}, "tenants");
"#;

pub struct NaivePb {
    pub pb: Pb,
    pub tenant: String,
    pub instances: Vec<String>,
    _proc: TestPb,
}

impl NaivePb {
    /// Same schema, no project hooks; `bot_instances` writes are bare, `tenants` writes call Coolify.
    pub async fn start(paths: &Paths, dir: &Path, sim_url: &str) -> Result<NaivePb> {
        let hooks = dir.join("pb_hooks");
        std::fs::create_dir_all(&hooks)?;
        std::fs::write(hooks.join("naive.pb.js"), NAIVE_HOOK)?;
        let env = [
            ("NAIVE_COOLIFY_URL", sim_url.to_string()),
            ("NAIVE_COOLIFY_TOKEN", SIM_TOKEN.to_string()),
        ];
        let (pb, instances, proc) =
            super::hookcost::pb_with_fleet(paths, &dir.join("pb_data"), &hooks, &env, "n").await?;
        let tenants = pb.field_by_id("tenants", "slug = \"n-t0\"", "slug").await?;
        let tenant = tenants.keys().next().context("naive tenant missing")?.clone();
        Ok(NaivePb {
            pb,
            tenant,
            instances,
            _proc: proc,
        })
    }
}

/// Signed webhooks straight to the bridge, one at a time: request to durable 2xx. Also CPU per event.
pub async fn acks(stack: &Stack, pool: &[String], n: usize, report: &mut Report) -> Result<()> {
    let pid = stack.bridge_pid();
    let cpu0 = procs::cpu_secs(pid).unwrap_or(0.0);
    let base = chrono::Utc::now();
    let mut lat = Vec::with_capacity(n);
    for k in 0..n {
        let updated = (base + chrono::Duration::milliseconds(k as i64))
            .format("%Y-%m-%d %H:%M:%S%.3fZ")
            .to_string();
        let body = serde_json::to_vec(&json!({"event": "update", "collection": "bot_instances",
            "record": {"id": pool[k % pool.len()], "updated": updated}, "sent_at": updated}))?;
        let t = Instant::now();
        let status = stack
            .bridge
            .webhook(&stack.secret, &format!("msg_benchack{k:08}"), &body)
            .await?;
        if (200..300).contains(&status) {
            lat.push(t.elapsed());
        }
    }
    stack.bridge.wait_idle(Duration::from_secs(300)).await?;
    let cpu = procs::cpu_secs(pid).unwrap_or(0.0) - cpu0;
    let s = summarize(&lat);
    // The goal is stated at 200 webhooks/s; these are sent one at a time.
    for (q, v) in [("p50", s.p50_ms), ("p99", s.p99_ms)] {
        let f = Figure::new(
            "4 webhook",
            format!("signed webhook -> durable 2xx {q}, one at a time ({} webhooks)", s.n),
            v,
            "ms",
        );
        report.add(if q == "p99" {
            f.goal_elsewhere(Goal::AtMost(5.0))
        } else {
            f
        });
    }
    report.add(Figure::new(
        "5 resources",
        "cf-bridge CPU per 1,000 events (webhook ingest + reconcile, no Coolify change)",
        cpu * 1000.0 / n.max(1) as f64,
        "s",
    ));
    report.note(format!("webhook acks: {} of {n} answered 2xx", s.n));
    Ok(())
}

/// Signed webhooks at a steady `rate` per second, open loop (each sent at its time whatever the earlier
/// ones are waiting for), as PocketBase's hooks deliver them under load: request to durable 2xx.
pub async fn acks_paced(
    stack: &Stack,
    pool: &[String],
    (rate, n): (u32, usize),
    full_mode: bool,
    report: &mut Report,
) -> Result<()> {
    let [pb_pid, bridge_pid, sim_pid] = stack.pids();
    let window = procs::Window::open(&[pb_pid, bridge_pid, sim_pid, Some(std::process::id())]);
    let base = chrono::Utc::now();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut late_ms = 0.0_f64;
    for k in 0..n {
        let due = start + Duration::from_secs_f64(k as f64 / f64::from(rate));
        tokio::time::sleep_until(due.into()).await;
        late_ms = late_ms.max(due.elapsed().as_secs_f64() * 1000.0);
        let updated = (base + chrono::Duration::milliseconds(k as i64))
            .format("%Y-%m-%d %H:%M:%S%.3fZ")
            .to_string();
        let body = serde_json::to_vec(&json!({"event": "update", "collection": "bot_instances",
            "record": {"id": pool[k % pool.len()], "updated": updated}, "sent_at": updated}))?;
        let (bridge, secret) = (stack.bridge.clone(), stack.secret.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            let status = bridge.webhook(&secret, &format!("msg_benchpace{k:08}"), &body).await;
            status.is_ok_and(|s| (200..300).contains(&s)).then(|| t.elapsed())
        });
    }
    let mut lat = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(d)) = r {
            lat.push(d);
        }
    }
    let achieved = n as f64 / start.elapsed().as_secs_f64();
    let usage = window.close();
    stack.bridge.wait_idle(Duration::from_secs(300)).await?;
    let s = summarize(&lat);
    let sat = usage.saturated;
    for (q, v) in [("p50", s.p50_ms), ("p99", s.p99_ms), ("max", s.max_ms)] {
        let f = Figure::new(
            "4 webhook",
            format!(
                "signed webhook -> durable 2xx {q} @ {rate}/s (achieved {achieved:.0}/s, {} webhooks)",
                s.n
            ),
            v,
            "ms",
        )
        .saturated(sat);
        report.add(if q == "p99" {
            f.target(Goal::AtMost(5.0), full_mode)
        } else {
            f
        });
    }
    report.note(format!(
        "webhook acks @ {rate}/s: {} of {n} answered 2xx; senders at most {late_ms:.1} ms behind schedule; CPU over the phase ({:.0}% of the machine busy, load {:.1}{}): PocketBase {:.1} s, cf-bridge {:.1} s, coolify-sim {:.1} s, cf-bench {:.1} s",
        s.n,
        100.0 * usage.machine_busy,
        usage.loadavg_1m,
        if sat { ", saturated" } else { "" },
        usage.cpu_secs[0],
        usage.cpu_secs[1],
        usage.cpu_secs[2],
        usage.cpu_secs[3],
    ));
    Ok(())
}

/// What a PocketBase API write costs with the project's hooks (the bridge running) beside the same write,
/// to the same collection, on a PocketBase with the same schema and no hooks; and what a naive hook that
/// calls Coolify (200 ms) synchronously costs, beside the same tenant write with no hooks.
pub async fn hook_cost(
    stack: &Stack,
    bare: (&Pb, &[String], &str),
    naive: &NaivePb,
    (n, naive_n): (usize, usize),
    report: &mut Report,
) -> Result<()> {
    let (bare_pb, bare_instances, bare_tenant) = bare;
    let pool = stack
        .pb
        .field_by_id("bot_instances", "subdomain ~ \"a-i\"", "name")
        .await?
        .into_keys()
        .take(64)
        .collect::<Vec<_>>();
    let bare_lat = summarize(&timed_patches(bare_pb, "bot_instances", bare_instances, n, "hb").await);
    let ours = summarize(&timed_patches(&stack.pb, "bot_instances", &pool, n, "hc").await);
    stack.bridge.wait_idle(Duration::from_secs(300)).await?;
    for (q, v, b) in [
        ("p50", ours.p50_ms, bare_lat.p50_ms),
        ("p99", ours.p99_ms, bare_lat.p99_ms),
    ] {
        report.add(
            Figure::new(
                "4 webhook",
                format!(
                    "PocketBase API write (bot_instances) {q}, project hooks (default: webhook hook off) with the bridge ({} writes) vs no hooks ({} writes)",
                    ours.n, bare_lat.n
                ),
                v,
                "ms",
            )
            .vs(b, "no hooks, same collection"),
        );
    }
    let bare_tenant_lat = summarize(
        &timed_patches(
            bare_pb,
            "tenants",
            std::slice::from_ref(&bare_tenant.to_string()),
            naive_n,
            "bt",
        )
        .await,
    );
    stack
        .sim
        .set_fault(json!({"route": "GET /team", "latency_ms": 200}))
        .await?;
    let naive_lat = summarize(
        &timed_patches(
            &naive.pb,
            "tenants",
            std::slice::from_ref(&naive.tenant),
            naive_n,
            "naive",
        )
        .await,
    );
    stack.sim.clear_faults().await?;
    for (q, v, b) in [
        ("p50", naive_lat.p50_ms, bare_tenant_lat.p50_ms),
        ("p99", naive_lat.p99_ms, bare_tenant_lat.p99_ms),
    ] {
        report.add(
            Figure::new(
                "4 webhook",
                format!(
                    "PocketBase API write (tenants) {q}, naive hook calling Coolify (200 ms) ({} writes) vs no hooks",
                    naive_lat.n
                ),
                v,
                "ms",
            )
            .vs(b, "no hooks, same collection"),
        );
    }
    Ok(())
}

/// Memory and journal size after `events_total` journaled events (signed webhooks, 16 at a time), beside
/// the memory after start and after the fleet's setup; PocketBase's memory beside the bridge's.
pub async fn resources(
    stack: &Stack,
    ids: &[String],
    rss: (u64, u64),
    events_total: usize,
    full_mode: bool,
    report: &mut Report,
) -> Result<()> {
    let (idle_rss, fleet_rss) = rss;
    let pid = stack.bridge_pid();
    let have = stack.bridge.journaled().await? as usize;
    let want = events_total.saturating_sub(have);
    let sent = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut tasks = tokio::task::JoinSet::new();
    let base = chrono::Utc::now();
    let t = Instant::now();
    for w in 0..16usize {
        let (bridge, secret, ids, sent) = (stack.bridge.clone(), stack.secret.clone(), ids.to_vec(), sent.clone());
        tasks.spawn(async move {
            loop {
                let k = sent.fetch_add(1, Ordering::Relaxed);
                if k >= want || Instant::now() > deadline {
                    return;
                }
                let updated = (base + chrono::Duration::milliseconds(k as i64)).format("%Y-%m-%d %H:%M:%S%.3fZ").to_string();
                let body = json!({"event": "update", "collection": "bot_instances", "record": {"id": ids[k % ids.len()], "updated": updated}});
                let Ok(body) = serde_json::to_vec(&body) else { return };
                let _ = bridge.webhook(&secret, &format!("msg_benchres{w:02}{k:09}"), &body).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let inject = t.elapsed();
    stack.bridge.wait_idle(Duration::from_secs(600)).await?;
    let total = stack.bridge.journaled().await? as usize;
    let loaded_rss = procs::rss_kib(pid).unwrap_or(0);
    let peak = procs::hwm_kib(pid).unwrap_or(0);
    let pb_pid = stack.pb_proc.pid().unwrap_or(0);
    let (pb_rss, pb_peak) = (procs::rss_kib(pb_pid).unwrap_or(0), procs::hwm_kib(pb_pid).unwrap_or(0));
    let mib = |kib: u64| kib as f64 / 1024.0;
    let n = ids.len();
    report.add(Figure::new(
        "5 resources",
        "cf-bridge resident memory after start",
        mib(idle_rss),
        "MiB",
    ));
    report.add(Figure::new(
        "5 resources",
        format!("cf-bridge resident memory after setup ({n} instances provisioned)"),
        mib(fleet_rss),
        "MiB",
    ));
    report.add(
        Figure::new(
            "5 resources",
            format!("cf-bridge resident memory, {n} instances + {total} journaled events"),
            mib(loaded_rss),
            "MiB",
        )
        .vs(mib(pb_rss), "PocketBase now"),
    );
    report.add(
        Figure::new(
            "5 resources",
            format!("cf-bridge peak resident memory (VmHWM) over the run so far ({n} instances, {total} events)"),
            mib(peak),
            "MiB",
        )
        .vs(mib(pb_peak), "PocketBase's peak")
        .target(Goal::AtMost(32.0_f64.min(mib(pb_peak))), full_mode),
    );
    report.add(Figure::new(
        "5 resources",
        format!("journal file size (journal.db + WAL) after {total} events"),
        stack.journal_bytes() as f64 / 1_048_576.0,
        "MiB",
    ));
    report.note(format!(
        "{want} webhook events injected in {:.1} s ({:.0}/s, 16 concurrent senders)",
        inject.as_secs_f64(),
        want as f64 / inject.as_secs_f64()
    ));
    Ok(())
}

/// A full resync of an unchanged fleet: time to the "resync done" log line, to an idle queue, and Coolify calls.
pub async fn resync(stack: &Stack, n: usize, full_mode: bool, report: &mut Report) -> Result<()> {
    let done_lines = || {
        std::fs::read_to_string(&stack.bridge_proc.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("resync done"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = done_lines().len();
    stack.sim.clear_requests().await?;
    let t = Instant::now();
    stack.bridge.admin(reqwest::Method::POST, "/admin/resync").await?;
    let line = loop {
        let lines = done_lines();
        if lines.len() > before {
            break lines[before].clone();
        }
        if t.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("no 'resync done' in the bridge log 600 s after POST /admin/resync");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let scanned = t.elapsed();
    stack.bridge.wait_idle(Duration::from_secs(600)).await?;
    let settled = t.elapsed();
    let calls = stack.sim.requests().await?.len();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    let f = |k: &str| {
        v["fields"][k]
            .as_u64()
            .or(v[k].as_u64())
            .map(|x| x.to_string())
            .unwrap_or_else(|| "?".into())
    };
    report.add(
        Figure::new(
            "5 resources",
            format!("full resync of {n} unchanged instances: until the scan is done"),
            scanned.as_secs_f64(),
            "s",
        )
        .target(Goal::AtMost(2.0), full_mode),
    );
    report.add(Figure::new(
        "5 resources",
        format!("full resync of {n} unchanged instances: until the queue is idle"),
        settled.as_secs_f64(),
        "s",
    ));
    report.add(
        Figure::new(
            "5 resources",
            "Coolify calls made by that resync (its drift check)",
            calls as f64,
            "count",
        )
        .goal(Goal::AtMost(1.0)),
    );
    report.note(format!(
        "resync: listed {} records, enqueued {}, {calls} Coolify calls (the footprint target is exactly one list, to find drift inside Coolify)",
        f("listed"),
        f("enqueued")
    ));
    Ok(())
}

/// The services a logged call acts on: the uuid in its path, the `uuid=a,b` of a deploy call, or the answer
/// of the `POST /services` that created it.
fn call_services(r: &SimRequest) -> Vec<String> {
    let (path, query) = r.uri.split_once('?').unwrap_or((r.uri.as_str(), ""));
    let mut parts = path.split('/');
    if let Some(uuid) = parts.by_ref().skip_while(|p| *p != "services").nth(1)
        && !uuid.is_empty()
    {
        return vec![uuid.to_string()];
    }
    if let Some(list) = query.split('&').find_map(|kv| kv.strip_prefix("uuid=")) {
        return list.split(',').filter(|u| !u.is_empty()).map(str::to_string).collect();
    }
    if r.path == "POST /services"
        && let Some(uuid) = r.response.as_ref().and_then(|v| v["uuid"].as_str())
    {
        return vec![uuid.to_string()];
    }
    Vec::new()
}

/// Least-squares slope of (seconds, count) samples, per minute.
pub fn slope_per_min(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return f64::NAN;
    }
    let (mx, my) = (
        samples.iter().map(|s| s.0).sum::<f64>() / n,
        samples.iter().map(|s| s.1).sum::<f64>() / n,
    );
    let sxx: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
    let sxy: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 - my)).sum();
    if sxx > 0.0 { 60.0 * sxy / sxx } else { f64::NAN }
}

/// Instances desired running against the simulator's 200/min limit and the bridge's default budget.
pub async fn budget(stack: &Stack, n: usize, secs: u64, full_mode: bool, report: &mut Report) -> Result<()> {
    let budget = stack.settings().coolify.requests_per_minute;
    stack.sim.clear_requests().await?;
    let t = Instant::now();
    create_fleet(&stack.pb, "b", n, "running").await?;
    let mut samples = Vec::new();
    let mut running = 0;
    while t.elapsed() < Duration::from_secs(secs) {
        running = stack.pb.count("bot_instances", "status = \"running\"").await? as usize;
        samples.push((t.elapsed().as_secs_f64(), running as f64));
        if running >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let minutes = t.elapsed().as_secs_f64() / 60.0;
    let log = stack.sim.requests().await?;
    let finished = stack
        .pb
        .field_by_id("bot_instances", "status = \"running\"", "coolify_service_id")
        .await?;
    let throttled = log.iter().filter(|r| r.status == 429).count();
    let calls = log.len() - throttled;
    // Each call charged to the service it acts on; calls naming no service (projects, status lists) apart.
    // A call acting on k services (a batch deploy) counts 1/k for each.
    let mut own: std::collections::HashMap<String, f64> = Default::default();
    let mut shared = 0usize;
    for r in log.iter().filter(|r| r.status != 429) {
        let services = call_services(r);
        if services.is_empty() {
            shared += 1;
        }
        for u in &services {
            *own.entry(u.clone()).or_default() += 1.0 / services.len() as f64;
        }
    }
    let finished_calls: Vec<f64> = finished.values().map(|u| own.get(u).copied().unwrap_or(0.0)).collect();
    let own_total: f64 = finished_calls.iter().sum();
    let min_calls = finished_calls.iter().copied().reduce(f64::min);
    // Steady state: the second half of the window, once instances finish at a settled pace.
    let half = samples.last().map_or(0.0, |s| s.0 / 2.0);
    let steady: Vec<(f64, f64)> = samples.iter().copied().filter(|s| s.0 >= half).collect();
    report.add(
        Figure::new(
            "3 budget",
            format!(
                "instances provisioned to running per minute, whole window ({running} of {n} in {:.0} s)",
                minutes * 60.0
            ),
            running as f64 / minutes,
            "/min",
        )
        .target(Goal::AtLeast(57.0), full_mode),
    );
    report.add(
        Figure::new(
            "3 budget",
            "steady-state slope of the running count (least squares, second half of the window)",
            slope_per_min(&steady),
            "/min",
        )
        .target(Goal::AtLeast(57.0), full_mode),
    );
    report.add(
        Figure::new(
            "3 budget",
            format!(
                "Coolify calls per finished instance, its own (naming its service or creating it; {} finished)",
                finished.len()
            ),
            own_total / finished.len().max(1) as f64,
            "count",
        )
        .target(Goal::AtMost(3.0), full_mode),
    );
    report.add(Figure::new(
        "3 budget",
        format!("Coolify calls naming no service (projects, environments, status lists), per instance created ({n})"),
        shared as f64 / n.max(1) as f64,
        "count",
    ));
    let min = min_calls.unwrap_or(f64::NAN);
    report.add(
        Figure::new(
            "3 budget",
            format!(
                "theoretical maximum at the default budget: {budget} calls/min / the fewest own calls of a finished instance ({})",
                min_calls.map_or("n/a".into(), |c| format!("{c:.1}"))
            ),
            f64::from(budget) / min,
            "/min",
        )
        .vs(running as f64 / minutes, "measured, whole window"),
    );
    let allowed = 200.0 * minutes.max(1.0);
    report.add(
        Figure::new(
            "3 budget",
            "share of Coolify's 200/min limit used",
            100.0 * calls as f64 / allowed,
            "%",
        )
        .vs(100.0 * f64::from(budget) / 200.0, "the bridge's budget"),
    );
    report.add(Figure::new("3 budget", "429 answers received", throttled as f64, "count").goal(Goal::AtMost(0.0)));
    report.note(format!(
        "budget: {n} instances created desired running; {running} running after {:.0} s; {calls} Coolify calls ({shared} naming no service, {:.0} charged to unfinished instances); {} running-count samples",
        minutes * 60.0,
        (calls - shared) as f64 - own_total,
        samples.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(path: &str, uri: &str, response: Option<serde_json::Value>) -> SimRequest {
        SimRequest {
            method: path.split(' ').next().unwrap_or_default().to_string(),
            path: path.to_string(),
            uri: uri.to_string(),
            status: 200,
            at_ms: 0,
            response,
        }
    }

    #[test]
    fn calls_are_charged_to_the_services_they_act_on() {
        let start = logged("POST /services/{uuid}/start", "/api/v1/services/s1/start", None);
        assert_eq!(call_services(&start), ["s1"]);
        let create = logged("POST /services", "/api/v1/services", Some(json!({"uuid": "s2"})));
        assert_eq!(call_services(&create), ["s2"]);
        let deploy = logged("GET /deploy", "/api/v1/deploy?uuid=s1,s3&force=false", None);
        assert_eq!(call_services(&deploy), ["s1", "s3"]);
        let list = logged("GET /services", "/api/v1/services", None);
        assert!(call_services(&list).is_empty());
        let project = logged("POST /projects", "/api/v1/projects", Some(json!({"uuid": "p1"})));
        assert!(call_services(&project).is_empty());
    }

    #[test]
    fn slope_of_a_line_per_minute() {
        let s: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 2.0 * f64::from(i) + 5.0)).collect();
        assert!((slope_per_min(&s) - 120.0).abs() < 1e-9);
        assert!(slope_per_min(&s[..1]).is_nan());
    }
}
