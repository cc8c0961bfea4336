//! The journal's jobs on PostgreSQL with several replicas (two `Journal::open_postgres` on one database
//! are two replicas): claims are exclusive, leases run out and are renewed, late outcomes of a replica
//! that lost its claim change nothing, one delivery is one event, and NOTIFY wakes an idle replica.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cf_bridge::config::QueueSettings;
use cf_bridge::events::{Action, Collection, EventSink, Ingested, NewEvent, Source};
use cf_bridge::journal::{ClaimedJob, Journal, JournalError, now_ms};
use cf_bridge::metrics::Metrics;
use cf_bridge::pg::PgConfig;
use cf_bridge::queue::{Dispatcher, ErrorPolicy, JobFuture, JobHandler};
use cf_testkit::{Postgres, TestDb};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// `n` replicas of one fresh journal database.
async fn replicas(n: usize) -> (TestDb, Vec<Journal>) {
    let db = Postgres::shared().database().await;
    let cfg = PgConfig::parse(&db.url).expect("the test database's URL");
    let mut journals = Vec::new();
    for _ in 0..n {
        journals.push(Journal::open_postgres(&cfg).await.expect("open a replica"));
    }
    (db, journals)
}

fn change(record_id: &str, version: usize) -> NewEvent {
    let updated = format!("2026-01-01 00:00:{version:02}.000Z");
    NewEvent {
        source: Source::Webhook,
        collection: Collection::BotInstances,
        record_id: record_id.into(),
        action: Action::Update,
        dedupe_key: NewEvent::change_key(Collection::BotInstances, record_id, Action::Update, Some(&updated)),
        record_updated: Some(updated.clone()),
        delivery_id: None,
        payload: json!({"id": record_id, "updated": updated, "name": format!("v{version}")}),
        fingerprint: None,
        trace_context: None,
    }
}

async fn scalar(j: &Journal, sql: &str) -> i64 {
    let pool = j.pg().expect("a PostgreSQL journal").pool();
    pool.get()
        .await
        .expect("a connection")
        .query_one(sql, &[])
        .await
        .expect(sql)
        .get(0)
}

/// (state, attempts, claimed_by) of the only job.
async fn the_job(j: &Journal) -> (String, i64, Option<String>) {
    let pool = j.pg().expect("a PostgreSQL journal").pool();
    let r = pool
        .get()
        .await
        .expect("a connection")
        .query_one("SELECT state, attempts, claimed_by FROM jobs", &[])
        .await
        .expect("the job");
    (r.get(0), r.get(1), r.get(2))
}

fn replica_id(j: &Journal) -> String {
    j.pg().expect("a PostgreSQL journal").replica_id().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_claiming_at_once_never_get_the_same_job() {
    let (_db, js) = replicas(3).await;
    for i in 0..120 {
        js[0].ingest(change(&format!("rec{i:03}"), 1)).await.expect("ingest");
    }
    let runs: Arc<Mutex<HashMap<i64, Vec<usize>>>> = Arc::default();
    let mut workers = Vec::new();
    for (w, j) in js.iter().enumerate() {
        let (j, runs) = (j.clone(), Arc::clone(&runs));
        workers.push(tokio::spawn(async move {
            loop {
                let batch = j.claim_due(now_ms(), 3).await.expect("claim");
                if batch.is_empty() {
                    return;
                }
                for job in batch {
                    runs.lock().unwrap().entry(job.job_id).or_default().push(w);
                    tokio::task::yield_now().await;
                    j.complete(job.job_id, None).await.expect("complete");
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let runs = runs.lock().unwrap().clone();
    let twice: Vec<_> = runs.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "jobs claimed more than once: {twice:?}");
    assert_eq!(runs.len(), 120);
    let by: std::collections::HashSet<_> = runs.values().flatten().collect();
    println!("120 jobs, 3 replicas: {} replicas claimed some", by.len());
    assert_eq!(
        scalar(&js[0], "SELECT count(*) FROM jobs WHERE state <> 'succeeded'").await,
        0
    );
}

#[tokio::test]
async fn an_expired_claim_is_taken_over_and_the_late_outcome_changes_nothing() {
    let (_db, js) = replicas(2).await;
    let (stalled, other) = (&js[0], &js[1]);
    let lease = Duration::from_millis(900);
    stalled.pg().unwrap().set_lease(lease);
    stalled.ingest(change("r1", 1)).await.expect("ingest");
    let held = stalled.claim_due(now_ms(), 10).await.expect("claim").remove(0);
    assert!(
        other.claim_due(now_ms(), 10).await.expect("claim").is_empty(),
        "held while the lease runs"
    );
    let due = other.next_due_at().await.expect("due").expect("the lease's end is due");
    assert!(
        due <= now_ms() + 1000,
        "an idle replica wakes when the lease runs out ({due})"
    );

    // The stalled replica cannot reach the database (every connection of its pool is taken): no heartbeat.
    let pool = stalled.pg().unwrap().pool();
    let mut starved = Vec::new();
    for _ in 0..cf_bridge::journal::pg::POOL_SIZE {
        starved.push(pool.get().await.expect("a connection"));
    }
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let taken = other.claim_due(now_ms(), 10).await.expect("claim");
    assert_eq!(taken.len(), 1, "the expired claim is taken over");
    assert_eq!((taken[0].job_id, taken[0].attempts), (held.job_id, 2));
    assert!(taken[0].after_failure, "the first attempt was interrupted");
    drop(starved);

    // The stalled replica comes back: whatever it writes about its run changes nothing.
    for late in [
        stalled.complete(held.job_id, None).await,
        stalled.fail(held.job_id, "late", None).await,
        stalled.defer(held.job_id, "late").await,
        stalled.wait_for_dependency(held.job_id, "late", 0).await,
    ] {
        assert!(matches!(late, Err(JournalError::NotRunning { .. })), "{late:?}");
    }
    assert_eq!(the_job(other).await, ("running".into(), 2, Some(replica_id(other))));
    assert_eq!(
        scalar(other, "SELECT count(*) FROM job_attempts WHERE outcome = 'interrupted'").await,
        1
    );
    assert_eq!(
        stalled.resume_on_start().await.expect("resume"),
        0,
        "not its claim any more"
    );
    other
        .complete(taken[0].job_id, None)
        .await
        .expect("the holder completes");
    assert_eq!(the_job(other).await, ("succeeded".into(), 2, None));
}

#[tokio::test]
async fn the_heartbeat_keeps_a_claim_past_its_lease() {
    let (_db, js) = replicas(2).await;
    let (holder, other) = (&js[0], &js[1]);
    let lease = Duration::from_millis(600);
    holder.pg().unwrap().set_lease(lease);
    holder.ingest(change("r1", 1)).await.expect("ingest");
    let held = holder.claim_due(now_ms(), 1).await.expect("claim").remove(0);
    for _ in 0..5 {
        tokio::time::sleep(lease / 2).await;
        assert!(
            other.claim_due(now_ms(), 1).await.expect("claim").is_empty(),
            "the renewed claim is still held"
        );
    }
    holder.complete(held.job_id, None).await.expect("complete");
    assert_eq!(the_job(other).await, ("succeeded".into(), 1, None));
}

#[tokio::test]
async fn an_abandoned_claim_runs_again_once_its_lease_runs_out() {
    let (_db, js) = replicas(2).await;
    let lease = Duration::from_millis(600);
    js[0].pg().unwrap().set_lease(lease);
    js[0].ingest(change("r1", 1)).await.expect("ingest");
    let held = js[0].claim_due(now_ms(), 1).await.expect("claim").remove(0);
    // Its outcome could not be recorded: the replica stops renewing the claim.
    js[0].abandon_claim(held.job_id);
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let again = js[1].claim_due(now_ms(), 1).await.expect("claim");
    assert_eq!(again.len(), 1, "another replica runs it");
    assert_eq!((again[0].job_id, again[0].attempts), (held.job_id, 2));
}

#[tokio::test]
async fn resume_on_start_leaves_another_replicas_live_claim_alone() {
    let (_db, js) = replicas(2).await;
    js[0].ingest(change("r1", 1)).await.expect("ingest");
    let held = js[0].claim_due(now_ms(), 1).await.expect("claim").remove(0);
    assert_eq!(js[1].resume_on_start().await.expect("resume"), 0);
    assert_eq!(the_job(&js[0]).await, ("running".into(), 1, Some(replica_id(&js[0]))));
    js[0].complete(held.job_id, None).await.expect("complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_ingested_by_two_replicas_at_once_is_one_event_and_one_job() {
    let (_db, js) = replicas(2).await;
    let mut outcomes = Vec::new();
    for i in 0..20 {
        let record = format!("rec{i:02}");
        let mut first = change(&record, 1);
        first.delivery_id = Some(format!("msg_{i}"));
        // Every other delivery arrives the second time for a later version of the record (a redelivery
        // whose change key differs): still the same delivery.
        let mut second = if i % 2 == 0 { first.clone() } else { change(&record, 2) };
        second.delivery_id = first.delivery_id.clone();
        let (a, b) = (js[0].clone(), js[1].clone());
        let (x, y) = tokio::join!(
            tokio::spawn(async move { a.ingest(first).await }),
            tokio::spawn(async move { b.ingest(second).await })
        );
        outcomes.push((x.expect("join").expect("ingest"), y.expect("join").expect("ingest")));
    }
    for (x, y) in &outcomes {
        let new = [x, y].iter().filter(|o| matches!(o, Ingested::New { .. })).count();
        let dup = [x, y].iter().filter(|o| **o == &Ingested::Duplicate).count();
        assert_eq!((new, dup), (1, 1), "{x:?} {y:?}");
    }
    assert_eq!(scalar(&js[0], "SELECT count(*) FROM events").await, 20);
    assert_eq!(scalar(&js[0], "SELECT count(*) FROM jobs").await, 20);

    // Two different changes of one new record at once: both journaled, one job.
    let (a, b) = (js[0].clone(), js[1].clone());
    let (x, y) = tokio::join!(
        tokio::spawn(async move { a.ingest(change("fresh", 1)).await }),
        tokio::spawn(async move { b.ingest(change("fresh", 2)).await })
    );
    let (x, y) = (x.expect("join").expect("ingest"), y.expect("join").expect("ingest"));
    let job = |o: &Ingested| match o {
        Ingested::New { job_id, .. } => *job_id,
        other => panic!("expected a new event, got {other:?}"),
    };
    assert_eq!(job(&x), job(&y), "one job per record");
    assert_eq!(
        scalar(&js[0], "SELECT coalesced FROM jobs WHERE record_id = 'fresh'").await,
        1
    );
}

/// Counts its runs and says when one started.
struct Counter {
    runs: AtomicUsize,
    ran: Notify,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl JobHandler for Counter {
    type Error = Never;

    fn handle<'a>(&'a self, _job: &'a ClaimedJob) -> JobFuture<'a, Never> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            self.ran.notify_one();
            Ok(None)
        })
    }

    fn error_policy(&self, _: &Never) -> ErrorPolicy {
        ErrorPolicy::Retry
    }
}

#[tokio::test]
async fn a_job_queued_on_one_replica_wakes_the_idle_dispatcher_of_another() {
    let (_db, js) = replicas(2).await;
    let counter = Arc::new(Counter {
        runs: AtomicUsize::new(0),
        ran: Notify::new(),
    });
    // A poll interval far beyond the test: only a wake-up makes the idle replica look.
    let dispatcher = Dispatcher::new(
        js[1].clone(),
        Arc::clone(&counter),
        &QueueSettings::default(),
        Arc::new(Notify::new()),
        Arc::new(Metrics::new()),
    )
    .poll_interval(Duration::from_secs(600));
    let cancel = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(cancel.clone(), Duration::from_secs(5)));
    // Let it go idle (its LISTEN connection up, nothing due).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    js[0]
        .ingest(change("r1", 1))
        .await
        .expect("ingest on the other replica");
    // Well within the dispatcher's other reason to look (its gauges, every 5 s).
    tokio::time::timeout(Duration::from_secs(2), counter.ran.notified())
        .await
        .expect("the idle replica ran the job at once");
    cancel.cancel();
    run.await.expect("the dispatcher stops");
    assert_eq!(counter.runs.load(Ordering::SeqCst), 1);
}
