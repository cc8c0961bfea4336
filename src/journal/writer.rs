//! The single writer: a dedicated thread owns the write connection and group-commits ingests.
//!
//! Ingests that queue up while a transaction runs are written together in the next one (each under
//! its own savepoint, so a bad event fails alone), which turns one commit per event into one per burst.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{JournalError, ingest, now_ms, write_tx};
use crate::events::{Ingested, NewEvent};

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
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    // The thread logs where its opener logs (each in-process bridge of a test has its own log).
    let logs = tracing::dispatcher::get_default(Clone::clone);
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || tracing::dispatcher::with_default(&logs, || run(conn, rx)))?;
    Ok(tx)
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Request>) {
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
