//! Several replicas on PostgreSQL beside one on SQLite (docs/SCALE-OUT.md): how fast a fleet is provisioned,
//! how many signed webhooks are acknowledged per second, the bridges' CPU per instance and per webhook, and
//! (with 3 replicas) how long after the leader is killed another one leads.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use cf_testkit::sim::SIM_TOKEN;
use cf_testkit::{BridgeProcess, Postgres, TestSettings, free_port};

use super::client::{Bridge, http};
use super::procs::{Paths, Window};
use super::report::{Figure, Report};
use super::stack::{Stack, create_fleet, start_stack, wait_provisioned};

const SECTION: &str = "replicas";
/// Concurrent webhook senders during the intake phase.
const SENDERS: usize = 16;
/// The leader lease of the PostgreSQL setups (the default): failover is measured against it.
const LEASE_SECS: u64 = 15;

/// The three setups, each on a stack of its own: `instances` provisioned, then webhooks for `secs`.
pub async fn compare(paths: &Paths, root: &Path, instances: usize, secs: f64, report: &mut Report) -> Result<()> {
    let pg = Postgres::try_start(false).context("PostgreSQL for the replica setups")?;
    for (replicas, postgres) in [(1, false), (1, true), (3, true)] {
        let label = format!(
            "{} replica{} on {}",
            replicas,
            if replicas > 1 { "s" } else { "" },
            if postgres { "PostgreSQL" } else { "SQLite" }
        );
        eprintln!("replicas: {label} ...");
        let url = match postgres {
            true => Some(pg.database().await.url),
            false => None,
        };
        let dir = root.join(format!(
            "replicas-{replicas}-{}",
            if postgres { "pg" } else { "sqlite" }
        ));
        setup(paths, &dir, &label, replicas, url, instances, secs, report).await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn setup(
    paths: &Paths,
    dir: &Path,
    label: &str,
    replicas: usize,
    journal_url: Option<String>,
    instances: usize,
    secs: f64,
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
    let mut extra = vec![
        ("CF_BRIDGE__COOLIFY__REQUESTS_PER_MINUTE", "100000".to_string()),
        ("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "3600".to_string()),
        ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600".to_string()),
    ];
    if let Some(url) = journal_url {
        extra.push(("CF_BRIDGE__JOURNAL__URL", url));
        extra.push(("CF_BRIDGE__JOURNAL__LEADER_LEASE_SECS", LEASE_SECS.to_string()));
    }
    let mut stack = start_stack(paths, dir, &fast_sim, &extra).await?;
    let mut others = Vec::new();
    for i in 1..replicas {
        let own = dir.join(format!("replica-{i}"));
        std::fs::create_dir_all(&own)?;
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let settings = TestSettings::minimal(
            (&stack.pb_proc).into(),
            &stack.sim_proc.url,
            SIM_TOKEN,
            &own,
            free_port(),
        )
        .with(&[("CF_BRIDGE__LOG__LEVEL", "info")])
        .with(&extra)
        .with(&super::stack::settings_from_env());
        others.push(BridgeProcess::try_start(&paths.bin_dir.join("cf-bridge"), &settings).await?);
    }
    let bridges: Vec<Bridge> = std::iter::once(stack.bridge.url.clone())
        .chain(others.iter().map(|b| b.url.clone()))
        .map(|url| Ok(Bridge { url, http: http()? }))
        .collect::<Result<_>>()?;
    let pids: Vec<Option<u32>> = std::iter::once(stack.bridge_proc.pid())
        .chain(others.iter().map(BridgeProcess::pid))
        .collect();

    let window = Window::open(&pids);
    let started = Instant::now();
    let ids = create_fleet(&stack.pb, "r", instances, "stopped").await?;
    wait_provisioned(
        &stack.pb,
        "r",
        ids.len(),
        Duration::from_secs(120 + instances as u64 / 5),
    )
    .await?;
    let took = started.elapsed().as_secs_f64();
    let usage = window.close();
    let cpu: f64 = usage.cpu_secs.iter().sum();
    report.add(
        Figure::new(
            SECTION,
            format!("{label}: instances provisioned"),
            ids.len() as f64 / took,
            "/s",
        )
        .saturated(usage.saturated),
    );
    report.add(
        Figure::new(
            SECTION,
            format!("{label}: bridge CPU per instance provisioned"),
            cpu * 1000.0 / ids.len() as f64,
            "ms",
        )
        .saturated(usage.saturated),
    );

    let listed = stack
        .pb
        .ok(
            reqwest::Method::GET,
            "/api/collections/bot_instances/records?perPage=500",
            None,
        )
        .await?;
    let records: Vec<serde_json::Value> = listed["items"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(!records.is_empty(), "no instance records to send webhooks for");
    let (acked, usage) = intake(&stack, &bridges, &pids, &records, secs).await?;
    let cpu: f64 = usage.cpu_secs.iter().sum();
    report.add(
        Figure::new(
            SECTION,
            format!("{label}: webhooks acknowledged"),
            acked as f64 / usage.wall_secs,
            "/s",
        )
        .saturated(usage.saturated),
    );
    if acked > 0 {
        report.add(
            Figure::new(
                SECTION,
                format!("{label}: bridge CPU per webhook"),
                cpu * 1000.0 / acked as f64,
                "ms",
            )
            .saturated(usage.saturated),
        );
    }

    if replicas > 1 {
        let failover = failover(&mut stack, &mut others, &bridges).await?;
        report.add(
            Figure::new(
                SECTION,
                format!("{label}: a new leader after the leader's kill -9"),
                failover,
                "s",
            )
            .saturated(usage.saturated),
        );
    }
    Ok(())
}

/// Signed webhooks (each a new change of one of `records`) from [`SENDERS`] senders, round robin over the
/// replicas, for `secs`: how many were acknowledged, and the bridges' CPU meanwhile.
async fn intake(
    stack: &Stack,
    bridges: &[Bridge],
    pids: &[Option<u32>],
    records: &[serde_json::Value],
    secs: f64,
) -> Result<(u64, super::procs::Usage)> {
    let acked = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let window = Window::open(pids);
    let mut tasks = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let (bridges, records, secret) = (bridges.to_vec(), records.to_vec(), stack.secret.clone());
        let (acked, seq) = (acked.clone(), seq.clone());
        tasks.spawn(async move {
            let mut n = sender;
            while Instant::now() < deadline {
                let i = seq.fetch_add(1, Ordering::Relaxed);
                let mut record = records[n % records.len()].clone();
                // A new `updated` each time: a change of its own, not a duplicate of the last one.
                record["updated"] = json!(format!("2026-01-01 00:00:00.{i:06}Z"));
                let body = json!({"event": "update", "collection": "bot_instances", "record": record});
                let body = serde_json::to_vec(&body).unwrap_or_default();
                let bridge = &bridges[n % bridges.len()];
                if let Ok(200..=299) = bridge.webhook(&secret, &format!("msg_bench_{i}"), &body).await {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                n += SENDERS;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok((acked.load(Ordering::Relaxed), window.close()))
}

/// Kills the leader (`kill -9`) and measures until another replica reports `cf_bridge_leader 1`.
async fn failover(stack: &mut Stack, others: &mut [BridgeProcess], bridges: &[Bridge]) -> Result<f64> {
    let mut leader = None;
    for (i, b) in bridges.iter().enumerate() {
        if b.metric_sum("cf_bridge_leader").await? >= 1.0 {
            leader = Some(i);
        }
    }
    let leader = leader.context("no replica leads")?;
    match leader {
        0 => stack.bridge_proc.kill9(),
        i => others[i - 1].kill9(),
    }
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(4 * LEASE_SECS) {
        for (i, b) in bridges.iter().enumerate() {
            if i != leader && b.metric_sum("cf_bridge_leader").await.unwrap_or(0.0) >= 1.0 {
                return Ok(killed.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("no replica led within {} s of the leader's kill", 4 * LEASE_SECS)
}
