//! Write load on a PocketBase: floods of concurrent record writes and timed writes one at a time, shared by
//! the latency, throughput, hook-cost and resource scenarios.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use super::client::Pb;

/// Writes as fast as 32 concurrent clients can for `secs`, renaming `pool` records; returns accepted/s.
pub async fn pb_write_rate(pb: &Pb, pool: &[String], secs: f64, tag: &str) -> Result<f64> {
    Ok(pb_field_writes(pb, pool, secs, tag, "name").await?.0)
}

/// Like [`pb_write_rate`], writing `field` (e.g. a bridge-owned one, as a write-back does); returns the
/// rate and the number of writes.
pub async fn pb_field_writes(
    pb: &Pb,
    pool: &[String],
    secs: f64,
    tag: &str,
    field: &'static str,
) -> Result<(f64, usize)> {
    let (count, elapsed) = write_flood(pb, pool, secs, tag, field).await;
    Ok((count as f64 / elapsed.as_secs_f64(), count))
}

pub async fn write_flood(pb: &Pb, pool: &[String], secs: f64, tag: &str, field: &'static str) -> (usize, Duration) {
    const WRITERS: usize = 32;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let pb = pb.clone();
        let pool = pool.to_vec();
        let tag = tag.to_string();
        tasks.spawn(async move {
            let mut ok = 0usize;
            let mut j = 0usize;
            while Instant::now() < deadline {
                let id = &pool[(w + j * WRITERS) % pool.len()];
                let body: Value = json!({ field: format!("{tag}{w}-{j}") });
                if pb
                    .patch("bot_instances", id, &body)
                    .await
                    .is_ok_and(|s| (200..300).contains(&s))
                {
                    ok += 1;
                }
                j += 1;
            }
            ok
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r.unwrap_or(0);
    }
    (total, start.elapsed())
}

/// Writes `n` records of `collection` one at a time (renaming them); the duration of each accepted write.
pub async fn timed_patches(pb: &Pb, collection: &str, ids: &[String], n: usize, tag: &str) -> Vec<Duration> {
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
