//! Ingest throughput, printed rather than asserted (run with `--nocapture` to see it).

use std::time::Instant;

use cf_bridge::events::{Action, Collection, EventSink, Ingested, NewEvent, Source};
use cf_bridge::journal::Journal;

const EVENTS: usize = 3000;
const TASKS: usize = 8;

fn event(i: usize) -> NewEvent {
    let record_id = format!("rec{}", i % 200);
    let updated = i.to_string();
    NewEvent {
        source: Source::Webhook,
        collection: Collection::BotInstances,
        dedupe_key: NewEvent::change_key(Collection::BotInstances, &record_id, Action::Update, Some(&updated)),
        record_id,
        action: Action::Update,
        record_updated: Some(updated),
        delivery_id: Some(format!("msg_{i}")),
        payload: serde_json::json!({"id": i, "name": "bot", "config": {"model": "x", "temperature": 0.2}}),
        fingerprint: None,
        trace_context: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_throughput() {
    let dir = tempfile::tempdir().expect("temp dir");
    measure(Journal::open(&dir.path().join("journal.db")).expect("open"), "SQLite").await;
}

/// The same on PostgreSQL (one transaction per event, under its record's lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ingest_throughput() {
    let t = cf_testkit::journal::TestJournal::open(cf_testkit::journal::Backend::Postgres).await;
    measure(t.journal.clone(), "PostgreSQL").await;
}

async fn measure(journal: Journal, backend: &str) {
    let start = Instant::now();
    for i in 0..EVENTS {
        assert!(matches!(journal.ingest(event(i)).await, Ok(Ingested::New { .. })));
    }
    let sequential = EVENTS as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            for i in (0..EVENTS).filter(|i| i % TASKS == t) {
                assert!(matches!(
                    journal.ingest(event(EVENTS + i)).await,
                    Ok(Ingested::New { .. })
                ));
            }
        }));
    }
    for t in tasks {
        t.await.expect("ingest task");
    }
    let concurrent = EVENTS as f64 / start.elapsed().as_secs_f64();
    println!("{backend} journal ingest: {sequential:.0}/s sequential, {concurrent:.0}/s from {TASKS} concurrent tasks");
}
