//! The single writer: a dedicated thread owns the write connection and group-commits ingests.
//!
//! Ingests that queue up while a transaction runs are written together in the next one (each under
//! its own savepoint, so a bad event fails alone), which turns one commit per event into one per burst.
//!
//! Checkpoints (copying the WAL into the database file, with two fsyncs) run on a thread and connection of
//! their own: SQLite's automatic checkpoint would run inside the commit that crosses its threshold, and every
//! ingest queued behind that commit (a webhook waiting for its acknowledgement) would wait for the disk.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{JournalError, ingest, now_ms, write_tx};
use crate::events::{Ingested, NewEvent};

/// Most ingests folded into one transaction.
const MAX_BATCH: usize = 256;
/// Requests waiting for the writer before senders wait (backpressure).
const QUEUE_DEPTH: usize = 4096;
/// How long after a commit the checkpointer folds the WAL: at most one checkpoint per interval, none idle.
const CHECKPOINT_AFTER: Duration = Duration::from_millis(250);
/// WAL pages past which the writer checkpoints itself anyway (about 16 MiB), should the checkpointer fall
/// behind a burst of writes: bounds the WAL as SQLite's default of 1,000 pages did, only later.
pub(crate) const BACKSTOP_PAGES: u32 = 4_000;
/// What the WAL file is cut back to once a checkpoint has folded it all (bytes): a burst's WAL does not
/// stay on disk.
pub(crate) const WAL_KEEP_BYTES: i64 = 4 << 20;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

pub(crate) enum Request {
    Ingest {
        event: NewEvent,
        payload: String,
        reply: oneshot::Sender<Result<Ingested, JournalError>>,
    },
    Run(Job),
}

/// Starts the writer thread and, given a connection for it, the checkpointer; both end when every sender
/// is dropped.
pub(crate) fn spawn(
    conn: Connection,
    checkpointer: Option<Connection>,
) -> Result<mpsc::Sender<Request>, std::io::Error> {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    // The threads log where their opener logs (each in-process bridge of a test has its own log).
    let logs = tracing::dispatcher::get_default(Clone::clone);
    let committed = match checkpointer {
        Some(ckpt) => {
            let (committed, commits) = sync_channel(1);
            let logs = logs.clone();
            std::thread::Builder::new()
                .name("journal-checkpoint".into())
                .spawn(move || tracing::dispatcher::with_default(&logs, || checkpoints(ckpt, commits)))?;
            Some(committed)
        }
        None => None,
    };
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || tracing::dispatcher::with_default(&logs, || run(conn, rx, committed)))?;
    Ok(tx)
}

/// Folds the WAL into the database `CHECKPOINT_AFTER` a commit, without waiting for readers or the writer
/// (PASSIVE); what it cannot fold now, the next one does.
fn checkpoints(conn: Connection, commits: Receiver<()>) {
    while commits.recv().is_ok() {
        let due = Instant::now() + CHECKPOINT_AFTER;
        loop {
            match commits.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                // The writer is gone; closing the last connection checkpoints what is left.
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "journal checkpoint failed; the next commit tries again");
        }
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Request>, committed: Option<SyncSender<()>>) {
    let mut inbox = Vec::with_capacity(MAX_BATCH);
    while rx.blocking_recv_many(&mut inbox, MAX_BATCH) > 0 {
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
        if let Some(committed) = &committed {
            // Full: a checkpoint is already due, which covers this commit too.
            let _ = committed.try_send(());
        }
    }
}

type Pending = (NewEvent, String, oneshot::Sender<Result<Ingested, JournalError>>);

fn commit_batch(conn: &mut Connection, batch: Vec<Pending>) {
    if batch.is_empty() {
        return;
    }
    let now = now_ms();
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
        Ok(Ok(results)) => {
            for ((_, _, reply), result) in batch.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Ok(Err(e)) => {
            let message = e.to_string();
            tracing::error!(error = %message, events = batch.len(), "journal could not commit events");
            for (_, _, reply) in batch {
                let _ = reply.send(Err(JournalError::Commit(message.clone())));
            }
        }
        // Dropping the reply senders tells every caller its event was not stored.
        Err(_) => tracing::error!("journal writer panicked while committing events; they were rolled back"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::events::{Action, Collection, EventSink, NewEvent, Source};
    use crate::journal::Journal;

    fn event(i: usize) -> NewEvent {
        let (record_id, updated) = (format!("rec{i}"), format!("v{i}"));
        NewEvent {
            source: Source::Realtime,
            collection: Collection::BotInstances,
            dedupe_key: NewEvent::change_key(Collection::BotInstances, &record_id, Action::Update, Some(&updated)),
            record_id,
            action: Action::Update,
            record_updated: Some(updated),
            delivery_id: None,
            payload: serde_json::json!({"note": "x".repeat(1000)}),
            fingerprint: None,
            trace_context: None,
        }
    }

    /// Commits reach the database file without the writer checkpointing: below SQLite's automatic
    /// threshold (1,000 pages) nothing folded the WAL before, so the file kept its size until shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_folds_the_wal_into_the_database_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("journal.db");
        let journal = Journal::open(&path).expect("open");
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let before = size();
        for i in 0..20 {
            journal.ingest(event(i)).await.expect("ingest");
        }
        let wal = std::fs::metadata(dir.path().join("journal.db-wal")).expect("wal").len();
        assert!(
            wal < 1000 * 4096,
            "the WAL stays below SQLite's own checkpoint threshold: {wal} bytes"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while size() <= before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            size() > before + 20 * 1000,
            "the events' pages reached journal.db ({before} -> {} bytes)",
            size()
        );
    }

    /// A burst may grow the WAL past what the checkpointer folds in time; once folded, the next commit cuts
    /// the file back, so the burst's WAL does not stay on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_does_not_leave_a_large_wal_behind() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("journal.db");
        let journal = Journal::open(&path).expect("open");
        let wal = || {
            std::fs::metadata(dir.path().join("journal.db-wal"))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let mut peak = 0;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..16 {
            let journal = journal.clone();
            tasks.spawn(async move {
                for i in 0..250 {
                    journal.ingest(event(10_000 * (t + 1) + i)).await.expect("ingest");
                }
            });
        }
        while !tasks.is_empty() {
            tokio::select! {
                joined = tasks.join_next() => { joined.expect("task").expect("task ok"); }
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            peak = peak.max(wal());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        while wal() > super::WAL_KEEP_BYTES as u64 + (64 << 10) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            journal.ingest(event(1_000_000 + i)).await.expect("ingest");
            i += 1;
        }
        assert!(
            wal() <= super::WAL_KEEP_BYTES as u64 + (64 << 10),
            "the WAL was cut back after the burst (peak {peak} bytes, now {} bytes)",
            wal()
        );
    }
}
