//! Retention on PostgreSQL (see `journal/retention.rs`): the same cutoffs and the same rows kept, in
//! batches of [`PRUNE_BATCH`] rows, each its own short transaction, so an ingest that meets a row being
//! pruned waits for one batch at most.
//!
//! Every replica prunes on its own schedule. Each batch first takes a transaction-level advisory lock, so
//! batches of replicas pruning at once run one after the other and each sees what the previous one left:
//! the rows go once, no batch fails, and the passes together do what one pass would.

use std::time::{Duration, Instant};

use deadpool_postgres::Transaction;

use super::PgJournal;
use crate::journal::retention::{DROPPED, SETTLED_JOB};
use crate::journal::{JournalError, PRUNE_BATCH, PruneReport, Retention};
use crate::pg::lock_keys;

const BATCH: i64 = PRUNE_BATCH as i64;

async fn delete_events(tx: &Transaction<'_>, cutoff: i64) -> Result<usize, JournalError> {
    let n = tx
        .execute(
            &format!(
                "DELETE FROM events WHERE id IN (
                     SELECT id FROM events
                     WHERE received_at < $1 AND status <> 'queued'
                       AND (job_id IS NULL OR job_id IN {SETTLED_JOB})
                     LIMIT $2)"
            ),
            &[&cutoff, &BATCH],
        )
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

async fn delete_attempts(tx: &Transaction<'_>, cutoff: i64) -> Result<usize, JournalError> {
    let n = tx
        .execute(
            &format!(
                "DELETE FROM job_attempts WHERE id IN (
                     SELECT id FROM job_attempts
                     WHERE finished_at IS NOT NULL AND finished_at < $1 AND job_id IN {SETTLED_JOB}
                     LIMIT $2)"
            ),
            &[&cutoff, &BATCH],
        )
        .await?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Drops payloads of done events received in `[from, cutoff)`; returns the rows rewritten and where the
/// next batch starts.
async fn drop_payloads(tx: &Transaction<'_>, from: i64, cutoff: i64) -> Result<(usize, i64), JournalError> {
    let picked = tx
        .query(
            "SELECT id, received_at FROM events
             WHERE received_at >= $1 AND received_at < $2 AND status = 'done' AND payload <> $3
             ORDER BY received_at LIMIT $4",
            &[&from, &cutoff, &DROPPED, &BATCH],
        )
        .await?;
    let ids: Vec<i64> = picked.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
    tx.execute("UPDATE events SET payload = $2 WHERE id = ANY($1)", &[&ids, &DROPPED])
        .await?;
    let next = if ids.len() < PRUNE_BATCH {
        cutoff
    } else {
        picked.last().map_or(Ok(cutoff), |r| r.try_get(1))?
    };
    Ok((ids.len(), next))
}

/// Which batch to run.
#[derive(Clone, Copy)]
enum Batch {
    Events(i64),
    Attempts(i64),
    Payloads { from: i64, cutoff: i64 },
}

impl PgJournal {
    /// Runs one batch in a transaction of its own under the prune lock; returns (rows, next payload start)
    /// and how long it held the lock.
    async fn prune_batch(&self, batch: Batch) -> Result<((usize, i64), Duration), JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_keys::PRUNE])
            .await?;
        // Timed from the lock: waiting for another replica's batch holds up no ingest.
        let start = Instant::now();
        let out = match batch {
            Batch::Events(cutoff) => (delete_events(&tx, cutoff).await?, 0),
            Batch::Attempts(cutoff) => (delete_attempts(&tx, cutoff).await?, 0),
            Batch::Payloads { from, cutoff } => drop_payloads(&tx, from, cutoff).await?,
        };
        tx.commit().await?;
        Ok((out, start.elapsed()))
    }

    pub(crate) async fn prune(
        &self,
        retention: Retention,
        now: i64,
        payloads_from: i64,
    ) -> Result<(PruneReport, i64), JournalError> {
        let (events_cutoff, payloads_cutoff) = retention.cutoffs(now);
        let mut report = PruneReport::default();
        let timed = |report: &mut PruneReport, took: Duration| {
            report.batches += 1;
            report.longest_batch = report.longest_batch.max(took);
        };
        loop {
            let ((n, _), took) = self.prune_batch(Batch::Events(events_cutoff)).await?;
            timed(&mut report, took);
            report.events_deleted += n;
            if n < PRUNE_BATCH {
                break;
            }
        }
        loop {
            let ((n, _), took) = self.prune_batch(Batch::Attempts(events_cutoff)).await?;
            timed(&mut report, took);
            report.attempts_deleted += n;
            if n < PRUNE_BATCH {
                break;
            }
        }
        let mut from = payloads_from;
        while from < payloads_cutoff {
            // A full batch ends at its last row's time: the rows left at that time are taken next.
            let ((n, next), took) = self
                .prune_batch(Batch::Payloads {
                    from,
                    cutoff: payloads_cutoff,
                })
                .await?;
            timed(&mut report, took);
            report.payloads_dropped += n;
            from = next;
        }
        Ok((report, payloads_cutoff))
    }
}
