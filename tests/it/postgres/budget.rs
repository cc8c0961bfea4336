use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cf_bridge::pg::budget::{Priority, SharedBudget};
use cf_bridge::pg::{self, PgConfig};

/// The minute scaled down: 20 requests per 2 s window, a burst of 5.
const LIMIT: u32 = 20;
const BURST: u32 = 5;
const WINDOW: Duration = Duration::from_secs(2);
const RUN: Duration = Duration::from_secs(5);

async fn replica(cfg: &PgConfig, name: &str) -> SharedBudget {
    let pool = pg::pool(cfg, 2).unwrap();
    SharedBudget::with_window(pool, name, LIMIT, BURST, WINDOW)
        .await
        .unwrap()
}

#[tokio::test]
async fn three_replicas_together_stay_within_the_limit() {
    let (cfg, _pool) = super::fresh().await;
    let start = Instant::now();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Arc::new(replica(&cfg, "coolify").await));
    }
    let taken = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = replicas
        .iter()
        .flat_map(|b| [b.clone(), b.clone()])
        .map(|b| {
            let taken = Arc::clone(&taken);
            tokio::spawn(async move {
                while start.elapsed() < RUN {
                    b.acquire(Priority::Normal).await.unwrap();
                    taken.lock().unwrap().push(start.elapsed());
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let mut taken = taken.lock().unwrap().clone();
    taken.sort();
    // Every token counted by time t was taken before t and after `start`: at most the burst plus the
    // refill since `start` (all replicas together).
    let per_sec = f64::from(LIMIT) / WINDOW.as_secs_f64();
    for (i, t) in taken.iter().enumerate() {
        let allowed = f64::from(BURST) + per_sec * t.as_secs_f64();
        assert!(
            (i + 1) as f64 <= allowed + 1e-6,
            "{} tokens by {t:?}, at most {allowed:.1} allowed",
            i + 1
        );
    }
    let elapsed = taken.last().copied().unwrap_or_default();
    let ceiling = f64::from(BURST) + per_sec * elapsed.as_secs_f64();
    println!(
        "3 replicas, 6 clients: {} tokens in {elapsed:?} (ceiling {ceiling:.1})",
        taken.len()
    );
    assert!(
        taken.len() as f64 >= 0.8 * ceiling,
        "the budget was used, not starved: {} of {ceiling:.1}",
        taken.len()
    );
}

#[tokio::test]
async fn a_drain_on_one_replica_empties_the_bucket_for_all() {
    let (cfg, _pool) = super::fresh().await;
    let a = replica(&cfg, "coolify").await;
    let b = replica(&cfg, "coolify").await;
    assert_eq!(b.try_take().await.unwrap(), Ok(()));
    a.drain().await.unwrap();
    assert!(a.remaining().await.unwrap() < 1.0);
    let wait = b
        .try_take()
        .await
        .unwrap()
        .expect_err("the other replica's bucket is empty too");
    assert!(
        wait <= Duration::from_millis(110),
        "one token comes back in 1/10 s: {wait:?}"
    );
}
