use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cf_bridge::pg::claims::{Claim, ClaimError, Claims, Waker};
use cf_bridge::pg::{self, PgConfig};
use tokio_util::sync::CancellationToken;

async fn replica(cfg: &PgConfig, name: &str, lease: Duration) -> Claims {
    Claims::new(pg::pool(cfg, 4).unwrap(), name, lease)
}

async fn state(pool: &deadpool_postgres::Pool, job_id: i64) -> (String, i32, Option<String>) {
    let row = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT state, attempts, last_error FROM jobs WHERE id = $1", &[&job_id])
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn concurrent_claimers_run_each_job_exactly_once() {
    let (cfg, pool) = super::fresh().await;
    let queue = replica(&cfg, "intake", Duration::from_secs(30)).await;
    for i in 0..120 {
        queue
            .enqueue("bot_instances", &format!("rec{i:03}"), "{}")
            .await
            .unwrap();
    }
    let runs: Arc<Mutex<HashMap<i64, Vec<String>>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4 {
        let claims = replica(&cfg, &format!("replica-{w}"), Duration::from_secs(30)).await;
        let runs = Arc::clone(&runs);
        workers.push(tokio::spawn(async move {
            loop {
                let batch = claims.claim(3).await.unwrap();
                if batch.is_empty() {
                    return;
                }
                for c in batch {
                    runs.lock()
                        .unwrap()
                        .entry(c.job_id)
                        .or_default()
                        .push(format!("replica-{w}"));
                    tokio::task::yield_now().await;
                    claims.complete(&c, true, None).await.unwrap();
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let runs = runs.lock().unwrap().clone();
    let twice: Vec<_> = runs.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "jobs run more than once: {twice:?}");
    assert_eq!(runs.len(), 120);
    let by: std::collections::HashSet<_> = runs.values().flatten().collect();
    println!("120 jobs, 4 claimers: {} claimers took part", by.len());
    let left: i64 = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM jobs WHERE state <> 'succeeded'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_dead_claimers_job_is_taken_over_after_its_lease_and_its_late_outcome_refused() {
    let (cfg, pool) = super::fresh().await;
    let lease = Duration::from_secs(2);
    let dying = replica(&cfg, "dying", lease).await;
    let other = replica(&cfg, "other", lease).await;
    let job = dying.enqueue("bot_instances", "rec1", "v1").await.unwrap();
    let [held]: [Claim; 1] = dying.claim(10).await.unwrap().try_into().unwrap();
    assert_eq!((held.job_id, held.attempts), (job, 1));
    assert!(other.claim(10).await.unwrap().is_empty(), "held while the lease runs");

    // `dying` stops heartbeating (its process died); after the lease the job is another's.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let [taken]: [Claim; 1] = other.claim(10).await.unwrap().try_into().unwrap();
    assert_eq!((taken.job_id, taken.attempts), (job, 2));
    assert_ne!(taken.claim_id, held.claim_id);

    // The late outcome, heartbeat and retry of the old holder change nothing.
    assert!(matches!(
        dying.complete(&held, false, Some("late")).await,
        Err(ClaimError::Lost { .. })
    ));
    assert!(matches!(dying.heartbeat(&held).await, Err(ClaimError::Lost { .. })));
    assert!(matches!(
        dying.retry_after(&held, lease, "late").await,
        Err(ClaimError::Lost { .. })
    ));
    assert_eq!(state(&pool, job).await, ("running".to_string(), 2, None));

    other.complete(&taken, true, None).await.unwrap();
    assert_eq!(state(&pool, job).await, ("succeeded".to_string(), 2, None));
}

#[tokio::test]
async fn a_heartbeat_keeps_the_claim_past_its_lease() {
    let (cfg, _pool) = super::fresh().await;
    let lease = Duration::from_millis(1500);
    let holder = replica(&cfg, "holder", lease).await;
    let other = replica(&cfg, "other", lease).await;
    holder.enqueue("bot_instances", "rec1", "v1").await.unwrap();
    let [held]: [Claim; 1] = holder.claim(1).await.unwrap().try_into().unwrap();
    let beat = holder.keep_alive(&held);
    for _ in 0..4 {
        tokio::time::sleep(lease / 2).await;
        assert!(
            other.claim(1).await.unwrap().is_empty(),
            "the renewed claim is still held"
        );
    }
    assert!(!beat.lost.is_cancelled());
    drop(beat);
    holder.complete(&held, true, None).await.unwrap();
}

#[tokio::test]
async fn a_change_while_the_job_runs_queues_it_again_with_the_new_payload() {
    let (cfg, pool) = super::fresh().await;
    let q = replica(&cfg, "r", Duration::from_secs(30)).await;
    let job = q.enqueue("bot_instances", "rec1", "v1").await.unwrap();
    let [first]: [Claim; 1] = q.claim(1).await.unwrap().try_into().unwrap();
    assert_eq!(
        q.enqueue("bot_instances", "rec1", "v2").await.unwrap(),
        job,
        "one job per record"
    );
    assert!(q.claim(1).await.unwrap().is_empty(), "not run twice at once");
    q.complete(&first, true, None).await.unwrap();
    assert_eq!(
        state(&pool, job).await.0,
        "queued",
        "the change made meanwhile is still to apply"
    );
    let [again]: [Claim; 1] = q.claim(1).await.unwrap().try_into().unwrap();
    assert_eq!((again.job_id, again.payload.as_str()), (job, "v2"));
}

#[tokio::test]
async fn a_retry_waits_its_delay() {
    let (cfg, pool) = super::fresh().await;
    let q = replica(&cfg, "r", Duration::from_secs(30)).await;
    let job = q.enqueue("bot_instances", "rec1", "v1").await.unwrap();
    let [c]: [Claim; 1] = q.claim(1).await.unwrap().try_into().unwrap();
    q.retry_after(&c, Duration::from_secs(2), "coolify 502").await.unwrap();
    assert!(q.claim(1).await.unwrap().is_empty(), "not before its time");
    assert_eq!(
        state(&pool, job).await,
        ("queued".into(), 1, Some("coolify 502".into()))
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(q.claim(1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_new_job_wakes_an_idle_replica() {
    let (cfg, pool) = super::fresh().await;
    let shutdown = CancellationToken::new();
    let waker = Waker::spawn(cfg.clone().with_application_name("idle-replica"), &shutdown);
    cf_testkit::eventually(Duration::from_secs(10), "the idle replica listening", || {
        let pool = pool.clone();
        async move {
            let n: i64 = pool
                .get()
                .await
                .ok()?
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'idle-replica' AND query LIKE 'LISTEN%'",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (n == 1).then_some(())
        }
    })
    .await;
    let woken = waker.notified();
    let other = replica(&cfg, "busy-replica", Duration::from_secs(30)).await;
    other.enqueue("bot_instances", "rec1", "v1").await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), woken)
        .await
        .expect("the idle replica was woken by the new job");
    shutdown.cancel();
}
