//! Scenarios 3-5: Coolify budget, webhook acknowledgement beside a naive hook, memory, CPU and resync.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use super::client::Pb;
use cf_testkit::TestPb;
use cf_testkit::sim::SIM_TOKEN;

use super::procs::{self, Paths};
use super::report::{Report, ms};
use super::stack::{Stack, create_fleet};
use super::stats::{ratio, summarize};

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

async fn timed_patches(pb: &Pb, collection: &str, ids: &[String], n: usize, tag: &str) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let id = &ids[k % ids.len()];
        let t = Instant::now();
        let body = if collection == "tenants" {
            json!({"name": format!("{tag} {k}")})
        } else {
            json!({"name": format!("{tag}{k}")})
        };
        if pb
            .patch(collection, id, &body)
            .await
            .is_ok_and(|s| (200..300).contains(&s))
        {
            out.push(t.elapsed());
        }
    }
    out
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
    report.row(
        "4 webhook",
        "signed webhook -> durable 2xx, p50 / p99",
        format!("{} / {}", ms(s.p50_ms), ms(s.p99_ms)),
        "-",
        "-",
    );
    report.row(
        "5 resources",
        "CPU seconds per 1,000 events (webhook ingest + reconcile, no Coolify change)",
        format!("{:.2} s", cpu * 1000.0 / n.max(1) as f64),
        "-",
        "-",
    );
    report.note(format!("webhook acks: {} of {n} answered 2xx", s.n));
    Ok(())
}

/// What each PocketBase API write costs with cf-bridge's hook and with a hook calling Coolify (200 ms) directly.
pub async fn naive_hook(stack: &Stack, naive: &NaivePb, n: usize, report: &mut Report) -> Result<()> {
    let bare = summarize(&timed_patches(&naive.pb, "bot_instances", &naive.instances, n.max(20), "bare").await);
    let ours = summarize(&timed_patches(&stack.pb, "tenants", &tenant_ids(&stack.pb).await?, n.max(20), "ours").await);
    stack
        .sim
        .set_fault(json!({"route": "GET /team", "latency_ms": 200}))
        .await?;
    let naive_lat =
        summarize(&timed_patches(&naive.pb, "tenants", std::slice::from_ref(&naive.tenant), n, "naive").await);
    stack.sim.clear_faults().await?;
    report.row(
        "4 webhook",
        "PocketBase API write p50, cf-bridge hook vs no hook",
        ms(ours.p50_ms),
        ms(bare.p50_ms),
        format!("+{}", ms(ours.p50_ms - bare.p50_ms)),
    );
    report.row(
        "4 webhook",
        "PocketBase API write p50, naive hook (Coolify 200 ms) vs no hook",
        ms(naive_lat.p50_ms),
        ms(bare.p50_ms),
        format!("+{}", ms(naive_lat.p50_ms - bare.p50_ms)),
    );
    report.row(
        "4 webhook",
        "PocketBase API write p99, naive hook vs cf-bridge hook",
        ms(naive_lat.p99_ms),
        ms(ours.p99_ms),
        ratio(naive_lat.p99_ms, ours.p99_ms),
    );
    stack.bridge.wait_idle(Duration::from_secs(300)).await?;
    Ok(())
}

async fn tenant_ids(pb: &Pb) -> Result<Vec<String>> {
    Ok(pb
        .field_by_id("tenants", "slug ~ \"a-t\"", "slug")
        .await?
        .into_keys()
        .collect())
}

/// Memory idle and with the fleet plus `events_total` journaled events (signed webhooks, 16 at a time).
pub async fn resources(
    stack: &Stack,
    ids: &[String],
    idle_rss: u64,
    events_total: usize,
    report: &mut Report,
) -> Result<()> {
    let pid = stack.bridge_pid();
    let fleet_rss = procs::rss_kib(pid).unwrap_or(0);
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
    report.row(
        "5 resources",
        "resident memory, idle",
        format!("{:.1} MiB", idle_rss as f64 / 1024.0),
        "-",
        "-",
    );
    report.row(
        "5 resources",
        format!("resident memory, {} instances", ids.len()),
        format!("{:.1} MiB", fleet_rss as f64 / 1024.0),
        "-",
        "-",
    );
    report.row(
        "5 resources",
        format!("resident memory, {} instances + {total} journaled events", ids.len()),
        format!("{:.1} MiB", loaded_rss as f64 / 1024.0),
        "-",
        "-",
    );
    report.note(format!(
        "{want} webhook events injected in {:.1} s ({:.0}/s, 16 concurrent senders)",
        inject.as_secs_f64(),
        want as f64 / inject.as_secs_f64()
    ));
    Ok(())
}

/// A full resync of an unchanged fleet: time to the "resync done" log line, to an idle queue, and Coolify calls.
pub async fn resync(stack: &Stack, n: usize, report: &mut Report) -> Result<()> {
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
    report.row(
        "5 resources",
        format!("full resync of {n} unchanged instances: scan / until idle"),
        format!("{:.2} s / {:.2} s", scanned.as_secs_f64(), settled.as_secs_f64()),
        "-",
        "-",
    );
    report.row(
        "5 resources",
        "Coolify calls made by that resync (its drift check)",
        calls.to_string(),
        "1 expected (one list)",
        "-",
    );
    report.note(format!(
        "resync: listed {} records, enqueued {}",
        f("listed"),
        f("enqueued")
    ));
    Ok(())
}

/// Instances desired running against the simulator's 200/min limit and the bridge's default 180/min budget.
pub async fn budget(stack: &Stack, n: usize, secs: u64, report: &mut Report) -> Result<()> {
    stack.sim.clear_requests().await?;
    let t = Instant::now();
    create_fleet(&stack.pb, "b", n, "running").await?;
    let mut running = 0;
    while t.elapsed() < Duration::from_secs(secs) {
        running = stack.pb.count("bot_instances", "status = \"running\"").await? as usize;
        if running >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let minutes = t.elapsed().as_secs_f64() / 60.0;
    let log = stack.sim.requests().await?;
    let throttled = log.iter().filter(|r| r.status == 429).count();
    let calls = log.len() - throttled;
    report.row(
        "3 budget",
        format!(
            "instances provisioned to running per minute ({running} of {n} in {:.0} s)",
            minutes * 60.0
        ),
        format!("{:.1}/min", running as f64 / minutes),
        "-",
        "-",
    );
    report.row(
        "3 budget",
        "Coolify calls per running instance",
        if running > 0 {
            format!("{:.1}", calls as f64 / running as f64)
        } else {
            "n/a".into()
        },
        "-",
        "-",
    );
    // Calls of the instances that finished only: those naming their service, plus their create; the
    // status lists (shared by every waiter) apart.
    let finished = stack
        .pb
        .field_by_id("bot_instances", "status = \"running\"", "coolify_service_id")
        .await?;
    let own = log
        .iter()
        .filter(|r| r.status != 429)
        .filter(|r| finished.values().any(|u| !u.is_empty() && r.uri.contains(u.as_str())))
        .count()
        + finished.len();
    let lists = log
        .iter()
        .filter(|r| r.status != 429 && r.path == "GET /services")
        .count();
    report.row(
        "3 budget",
        "Coolify calls per finished instance (its own and its create; status lists apart)",
        if finished.is_empty() {
            "n/a".into()
        } else {
            format!("{:.1}", own as f64 / finished.len() as f64)
        },
        "-",
        "-",
    );
    report.note(format!(
        "budget: {lists} status lists (GET /services) in the run, {calls} calls in all"
    ));
    // The most the budget allows with the fewest calls an instance needs: create, env, start, one read.
    let budget = cf_bridge::config::CoolifySettings::new(
        url::Url::parse("http://127.0.0.1").expect("url"),
        secrecy::SecretString::from(String::new()),
    )
    .requests_per_minute;
    report.row(
        "3 budget",
        "theoretical maximum at the default budget (budget / 4 calls per instance)",
        format!("{:.1}/min", f64::from(budget) / 4.0),
        format!("{budget} calls/min"),
        "-",
    );
    // The limit is a fixed one-minute window: a run shorter than a minute is measured against one window.
    let allowed = 200.0 * minutes.max(1.0);
    report.row(
        "3 budget",
        "share of Coolify's 200/min limit used",
        format!("{:.0}%", 100.0 * calls as f64 / allowed),
        "100% (limit)",
        format!("{:.2}", calls as f64 / allowed),
    );
    report.row(
        "3 budget",
        "429 answers received",
        throttled.to_string(),
        "0 expected",
        "-",
    );
    Ok(())
}
