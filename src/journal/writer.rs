//! The single writer: a dedicated thread owns the write connection and group-commits ingests.
//!
//! Ingests that queue up while a transaction runs are written together in the next one, which turns one
//! commit per event into one per burst; a bad event still fails alone (see [`commit_batch`]).

use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{JournalError, ingest, now_ms, write_tx};
use crate::events::{Ingested, NewEvent, Source};
use crate::flow::Flow;

/// Most ingests folded into one transaction.
const MAX_BATCH: usize = 256;
/// Requests waiting for the writer before senders wait (backpressure).
const QUEUE_DEPTH: usize = 4096;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

pub(crate) enum Request {
    Ingest {
        event: NewEvent,
        payload: String,
        reply: oneshot::Sender<Result<Ingested, JournalError>>,
    },
    Run(Job),
}

/// Starts the writer thread; it ends when every sender is dropped.
pub(crate) fn spawn(conn: Connection) -> Result<mpsc::Sender<Request>, std::io::Error> {
    start(conn, Flow::flood())
}

fn start(conn: Connection, flow: Flow) -> Result<mpsc::Sender<Request>, std::io::Error> {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    // The thread logs where its opener logs (each in-process bridge of a test has its own log).
    let logs = tracing::dispatcher::get_default(Clone::clone);
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || tracing::dispatcher::with_default(&logs, || run(conn, rx, flow)))?;
    Ok(tx)
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Request>, mut flow: Flow) {
    let mut inbox = Vec::with_capacity(MAX_BATCH);
    while rx.blocking_recv_many(&mut inbox, MAX_BATCH) > 0 {
        // Only frames wait, one window: the realtime consumer reads on while its frames wait, but a
        // webhook's sender (one delivery at a time, or a person's write behind the hook) waits for the answer,
        // so a wait would gather nothing and only slow it; a job's transaction is awaited by a run holding
        // its record.
        if flow.flowing() && inbox.len() < MAX_BATCH && inbox.iter().all(is_frame) {
            std::thread::sleep(flow.window);
            while inbox.len() < MAX_BATCH
                && let Ok(request) = rx.try_recv()
            {
                inbox.push(request);
            }
        }
        flow.saw(inbox.iter().filter(|r| is_frame(r)).count());
        let mut batch = Vec::new();
        for request in inbox.drain(..) {
            match request {
                Request::Ingest { event, payload, reply } => batch.push((event, payload, reply)),
                Request::Run(job) => {
                    // Keep the order callers observe: earlier ingests commit before a later job runs.
                    commit_batch(&mut conn, std::mem::take(&mut batch));
                    // A panic drops the job's reply sender, which its caller sees as an error; the
                    // transaction it held rolled back while unwinding.
                    let _ = catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                }
            }
        }
        commit_batch(&mut conn, batch);
    }
}

/// An ingest of a realtime frame.
fn is_frame(request: &Request) -> bool {
    matches!(request, Request::Ingest { event, .. } if event.source == Source::Realtime)
}

type Pending = (NewEvent, String, oneshot::Sender<Result<Ingested, JournalError>>);

/// Commits `batch` in one transaction. Straight through first: a savepoint per event made SQLite copy
/// each page an ingest touched into a statement journal, opened and closed with every commit (about 15 %
/// of the bridge's CPU in a flood, docs/BENCHMARKS.md "Thirty-first session"). Only when that fails is the
/// batch written again with a savepoint per event, so that a bad event fails alone.
fn commit_batch(conn: &mut Connection, batch: Vec<Pending>) {
    if batch.is_empty() {
        return;
    }
    let now = now_ms();
    let straight = catch_unwind(AssertUnwindSafe(|| {
        write_tx(conn, |tx| {
            batch
                .iter()
                .map(|(event, payload, _)| ingest::ingest(tx, event, payload, now))
                .collect::<Result<Vec<_>, _>>()
        })
    }));
    match straight {
        Ok(Ok(results)) => answer(batch, results.into_iter().map(Ok).collect()),
        Ok(Err(e)) if batch.len() == 1 => answer(batch, vec![Err(e)]),
        Ok(Err(_)) => commit_each(conn, batch, now),
        // Dropping the reply senders tells every caller its event was not stored.
        Err(_) => tracing::error!("journal writer panicked while committing events; they were rolled back"),
    }
}

fn answer(batch: Vec<Pending>, results: Vec<Result<Ingested, JournalError>>) {
    for ((_, _, reply), result) in batch.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}

/// The batch again, each event under a savepoint of its own: the good ones commit, a bad one is answered
/// with its own error.
fn commit_each(conn: &mut Connection, batch: Vec<Pending>, now: i64) {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        write_tx(conn, |tx| {
            let mut results = Vec::with_capacity(batch.len());
            for (event, payload, _) in &batch {
                tx.execute_batch("SAVEPOINT ingest")?;
                let result = ingest::ingest(tx, event, payload, now);
                tx.execute_batch(if result.is_ok() {
                    "RELEASE ingest"
                } else {
                    "ROLLBACK TO ingest; RELEASE ingest"
                })?;
                results.push(result);
            }
            Ok(results)
        })
    }));
    match outcome {
        Ok(Ok(results)) => answer(batch, results),
        Ok(Err(e)) => {
            let message = e.to_string();
            tracing::error!(error = %message, events = batch.len(), "journal could not commit events");
            let results = batch
                .iter()
                .map(|_| Err(JournalError::Commit(message.clone())))
                .collect();
            answer(batch, results)
        }
        Err(_) => tracing::error!("journal writer panicked while committing events; they were rolled back"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Action, Collection, Source};
    use crate::intake::record_event;
    use std::time::{Duration, Instant};

    fn pending(record_id: &str) -> (Pending, oneshot::Receiver<Result<Ingested, JournalError>>) {
        pending_from(Source::Realtime, record_id)
    }

    fn pending_from(source: Source, record_id: &str) -> (Pending, oneshot::Receiver<Result<Ingested, JournalError>>) {
        let Ok(serde_json::Value::Object(record)) = serde_json::from_str(&format!(r#"{{"id": "{record_id}"}}"#)) else {
            unreachable!("a literal object")
        };
        let event = record_event(source, Collection::BotInstances, Action::Create, record, None).expect("event");
        let (reply, answer) = oneshot::channel();
        ((event, "{}".to_string(), reply), answer)
    }

    fn journal() -> Connection {
        let mut conn = Connection::open_in_memory().expect("db");
        super::super::schema::migrate(&mut conn).expect("migrate");
        // Any event of record `bad` is refused, as a broken row would be.
        conn.execute_batch(
            "CREATE TRIGGER refuse_bad BEFORE INSERT ON events WHEN NEW.record_id = 'bad'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .expect("trigger");
        conn
    }

    fn stored(conn: &Connection) -> Vec<String> {
        let mut stmt = conn.prepare("SELECT record_id FROM events ORDER BY id").expect("query");
        stmt.query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("ids")
    }

    /// Sends one ingest of `record_id` to the writer; the receiver gets its answer.
    fn ingest_now(
        writer: &mpsc::Sender<Request>,
        record_id: &str,
    ) -> oneshot::Receiver<Result<Ingested, JournalError>> {
        ingest_from(writer, Source::Realtime, record_id)
    }

    fn ingest_from(
        writer: &mpsc::Sender<Request>,
        source: Source,
        record_id: &str,
    ) -> oneshot::Receiver<Result<Ingested, JournalError>> {
        let ((event, payload, reply), answer) = pending_from(source, record_id);
        writer
            .blocking_send(Request::Ingest { event, payload, reply })
            .expect("writer running");
        answer
    }

    #[test]
    fn frames_in_a_flow_wait_for_more_and_a_lone_frame_a_webhook_or_a_job_does_not() {
        let mut conn = journal();
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = commits.clone();
        conn.commit_hook(Some(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            false
        }))
        .expect("hook");
        // Long enough that the test's own pauses cannot outlast it on a loaded machine.
        let linger = Duration::from_millis(400);
        let writer = start(conn, Flow::new(linger, 3)).expect("writer");
        let count = || commits.load(std::sync::atomic::Ordering::SeqCst);

        // Fewer frames than a flow within the wait: each is committed at once (a person's change right
        // after the echo of another's).
        for (n, id) in ["aaa", "bbb", "ccc"].into_iter().enumerate() {
            let sent = Instant::now();
            assert!(ingest_now(&writer, id).blocking_recv().expect("answer").is_ok());
            assert!(sent.elapsed() < linger, "{id} answered in {:?}", sent.elapsed());
            assert_eq!(count(), n + 1);
        }

        // Three frames within the wait are a flow: the next one waits, and one sent meanwhile joins its
        // commit.
        let first = ingest_now(&writer, "ddd");
        std::thread::sleep(Duration::from_millis(50));
        let second = ingest_now(&writer, "eee");
        assert!(first.blocking_recv().expect("answer").is_ok());
        assert!(second.blocking_recv().expect("answer").is_ok());
        assert_eq!(count(), 4, "ddd and eee in one commit");

        // A webhook's sender waits for its answer: right after a frame, one is committed at once.
        let sent = Instant::now();
        assert!(
            ingest_from(&writer, Source::Webhook, "web")
                .blocking_recv()
                .expect("answer")
                .is_ok()
        );
        assert!(sent.elapsed() < linger, "answered in {:?}", sent.elapsed());
        assert_eq!(count(), 5);

        // Idle for longer than the wait: a frame is committed without it.
        std::thread::sleep(linger + Duration::from_millis(100));
        let sent = Instant::now();
        assert!(ingest_now(&writer, "fff").blocking_recv().expect("answer").is_ok());
        assert!(sent.elapsed() < linger, "answered in {:?}", sent.elapsed());
        assert_eq!(count(), 6);

        // A job's transaction is not a frame: two frames and a job are not a flow.
        std::thread::sleep(linger + Duration::from_millis(100));
        for id in ["ggg", "hhh"] {
            assert!(ingest_now(&writer, id).blocking_recv().expect("answer").is_ok());
        }
        let (done, ran) = oneshot::channel();
        let job: Job = Box::new(move |conn: &mut Connection| {
            let _ = done.send(conn.execute_batch("CREATE TABLE scratch (x INTEGER)").is_ok());
        });
        writer.blocking_send(Request::Run(job)).expect("writer running");
        assert!(ran.blocking_recv().expect("job ran"));
        let sent = Instant::now();
        assert!(ingest_now(&writer, "iii").blocking_recv().expect("answer").is_ok());
        assert!(sent.elapsed() < linger, "answered in {:?}", sent.elapsed());
        assert_eq!(count(), 10);
    }

    #[test]
    fn a_batch_commits_together_and_a_bad_event_in_it_fails_alone() {
        let mut conn = journal();
        let (batch, answers): (Vec<_>, Vec<_>) = ["aaa", "bbb"].into_iter().map(pending).unzip();
        commit_batch(&mut conn, batch);
        for mut answer in answers {
            assert!(matches!(answer.try_recv(), Ok(Ok(Ingested::New { .. }))));
        }
        let (batch, answers): (Vec<_>, Vec<_>) = ["ccc", "bad", "ddd"].into_iter().map(pending).unzip();
        commit_batch(&mut conn, batch);
        let outcomes: Vec<bool> = answers
            .into_iter()
            .map(|mut a| matches!(a.try_recv(), Ok(Ok(Ingested::New { .. }))))
            .collect();
        assert_eq!(outcomes, [true, false, true], "only the bad event is refused");
        assert_eq!(stored(&conn), ["aaa", "bbb", "ccc", "ddd"]);
        let (batch, mut answers): (Vec<_>, Vec<_>) = ["bad"].into_iter().map(pending).unzip();
        commit_batch(&mut conn, batch);
        assert!(
            matches!(answers.remove(0).try_recv(), Ok(Err(_))),
            "a lone bad event is refused"
        );
        let jobs: i64 = conn
            .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
            .expect("jobs");
        assert_eq!((stored(&conn).len(), jobs), (4, 4), "and leaves nothing behind");
    }
}
