//! Journal retention: settled events and finished attempts go after `journal.retention_secs`, the payloads
//! of done events after `journal.payload_retention_secs`, so the file follows the number of records, not
//! the number of events. Pruning runs on the single writer in small batches (each its own transaction), so
//! ingests queued behind a batch wait for one batch at most.
//!
//! Never pruned: queued events (pending), anything of a job that is not `succeeded` (running, queued,
//! retrying, parked or dead: in flight, or kept for the operator to replay), the attempt a job is running.
//! An event's row is also its dedupe key (change key, webhook delivery id), so no event goes before
//! [`dedupe_floor`] has passed, whatever the retention says.

use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::{Journal, JournalError, write_tx};

/// Rows one batch deletes or rewrites at most: how long an ingest can wait behind a batch grows with it
/// (measured by tests/it/journal_retention.rs, figures in docs/BENCHMARKS.md).
pub const PRUNE_BATCH: usize = 200;

/// What to keep, as ages in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Settled events and finished attempts older than this go.
    pub events: Duration,
    /// Payloads of done events older than this are dropped (the row and its dedupe key stay).
    pub payloads: Duration,
    /// No event goes younger than this (see [`dedupe_floor`]).
    pub floor: Duration,
}

/// The shortest time an event's dedupe key must be kept. A webhook is accepted while its timestamp is
/// within the tolerance of the bridge's clock either way, so one delivery can come again up to twice the
/// tolerance after it was first accepted; a resync pass compares what it listed with the journal and can
/// submit a change a little after realtime did, within about one resync interval (retries included, twice
/// that). Both must still find the key.
pub fn dedupe_floor(webhook_tolerance: Duration, resync_interval: Duration) -> Duration {
    2 * webhook_tolerance.max(resync_interval)
}

impl Retention {
    /// (events cutoff, payloads cutoff) in journal milliseconds, for a prune at `now`.
    pub fn cutoffs(&self, now: i64) -> (i64, i64) {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let events = now.saturating_sub(ms(self.events.max(self.floor)));
        let payloads = now.saturating_sub(ms(self.payloads.max(self.floor)));
        (events, payloads)
    }
}

/// What one prune pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruneReport {
    pub events_deleted: usize,
    pub attempts_deleted: usize,
    pub payloads_dropped: usize,
    pub batches: usize,
    /// The longest single batch (a transaction on the writer).
    pub longest_batch: Duration,
}

/// A dropped payload reads as JSON `null`.
pub(super) const DROPPED: &str = "null";

/// Jobs whose events and attempts may go: the settled ones.
pub(super) const SETTLED_JOB: &str = "(SELECT id FROM jobs WHERE state = 'succeeded')";

fn delete_events(conn: &mut Connection, cutoff: i64) -> Result<usize, JournalError> {
    write_tx(conn, |tx| {
        let n = tx
            .prepare_cached(&format!(
                "DELETE FROM events WHERE id IN (
                     SELECT id FROM events
                     WHERE received_at < ?1 AND status <> 'queued'
                       AND (job_id IS NULL OR job_id IN {SETTLED_JOB})
                     LIMIT ?2)"
            ))?
            .execute(params![cutoff, PRUNE_BATCH as i64])?;
        Ok(n)
    })
}

fn delete_attempts(conn: &mut Connection, cutoff: i64) -> Result<usize, JournalError> {
    write_tx(conn, |tx| {
        let n = tx
            .prepare_cached(&format!(
                "DELETE FROM job_attempts WHERE id IN (
                     SELECT id FROM job_attempts
                     WHERE finished_at IS NOT NULL AND finished_at < ?1 AND job_id IN {SETTLED_JOB}
                     LIMIT ?2)"
            ))?
            .execute(params![cutoff, PRUNE_BATCH as i64])?;
        Ok(n)
    })
}

/// Drops payloads of done events received in `[from, cutoff)`; returns the rows rewritten and where the
/// next batch starts.
fn drop_payloads(conn: &mut Connection, from: i64, cutoff: i64) -> Result<(usize, i64), JournalError> {
    write_tx(conn, |tx| {
        let ids: Vec<(i64, i64)> = tx
            .prepare_cached(
                "SELECT id, received_at FROM events
                 WHERE received_at >= ?1 AND received_at < ?2 AND status = 'done' AND payload <> ?3
                 ORDER BY received_at LIMIT ?4",
            )?
            .query_map(params![from, cutoff, DROPPED, PRUNE_BATCH as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut update = tx.prepare_cached("UPDATE events SET payload = ?2 WHERE id = ?1")?;
        for (id, _) in &ids {
            update.execute(params![id, DROPPED])?;
        }
        let next = if ids.len() < PRUNE_BATCH {
            cutoff
        } else {
            ids.last().map_or(cutoff, |(_, at)| *at)
        };
        Ok((ids.len(), next))
    })
}

impl Journal {
    /// One prune pass at `now` (journal milliseconds): batch after batch until nothing is left to prune.
    /// `payloads_from` is where the last pass's payload dropping ended (0 at first); the returned value is
    /// where the next one starts, so done events are not scanned again.
    pub async fn prune(
        &self,
        retention: Retention,
        now: i64,
        payloads_from: i64,
    ) -> Result<(PruneReport, i64), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.prune(retention, now, payloads_from)).await;
        }
        let (events_cutoff, payloads_cutoff) = retention.cutoffs(now);
        let mut report = PruneReport::default();
        let timed = |report: &mut PruneReport, took: Duration| {
            report.batches += 1;
            report.longest_batch = report.longest_batch.max(took);
        };
        loop {
            let (n, took) = self
                .write(move |conn| timed_batch(|| delete_events(conn, events_cutoff)))
                .await?;
            timed(&mut report, took);
            report.events_deleted += n;
            if n < PRUNE_BATCH {
                break;
            }
        }
        loop {
            let (n, took) = self
                .write(move |conn| timed_batch(|| delete_attempts(conn, events_cutoff)))
                .await?;
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
                .write(move |conn| timed_batch(|| drop_payloads(conn, from, payloads_cutoff)))
                .await?;
            timed(&mut report, took);
            report.payloads_dropped += n;
            from = next;
        }
        Ok((report, payloads_cutoff))
    }
}

fn timed_batch<T>(f: impl FnOnce() -> Result<T, JournalError>) -> Result<(T, Duration), JournalError> {
    let start = Instant::now();
    let out = f()?;
    Ok((out, start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_outlives_webhook_redelivery_and_a_resync_pass() {
        let secs = Duration::from_secs;
        assert_eq!(dedupe_floor(secs(300), secs(300)), secs(600));
        assert_eq!(dedupe_floor(secs(300), secs(900)), secs(1800));
        let r = Retention {
            events: secs(1),
            payloads: secs(0),
            floor: secs(600),
        };
        assert_eq!(
            r.cutoffs(1_000_000),
            (400_000, 400_000),
            "a tiny retention still keeps the floor"
        );
        let r = Retention {
            events: secs(7 * 86_400),
            payloads: secs(86_400),
            floor: secs(600),
        };
        let now = 10 * 86_400_000;
        assert_eq!(r.cutoffs(now), (3 * 86_400_000, 9 * 86_400_000));
    }
}
