//! The job lifecycle: claim, outcome, crash recovery.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, Transaction, params};

use super::types::column;
use super::{AttemptOutcome, ClaimedJob, JobState, Journal, JournalError, RunRecord, now_ms, write_tx};
use crate::events::{Action, Collection, Source};

/// What the current run of a job needs to record its outcome.
struct RunningJob {
    collection: String,
    record_id: String,
    dirty: bool,
    dirty_since: Option<i64>,
    claimed_event_id: i64,
    attempt_id: Option<i64>,
}

fn running_job(tx: &Transaction<'_>, job_id: i64) -> Result<RunningJob, JournalError> {
    let row = tx
        .prepare_cached(
            "SELECT state, dirty, dirty_since, claimed_event_id, attempt_id, collection, record_id
             FROM jobs WHERE id = ?1",
        )?
        .query_row([job_id], |r| {
            let state: String = r.get(0)?;
            let claimed: Option<i64> = r.get(3)?;
            let run = RunningJob {
                collection: r.get(5)?,
                record_id: r.get(6)?,
                dirty: r.get(1)?,
                dirty_since: r.get(2)?,
                claimed_event_id: claimed.unwrap_or(i64::MAX),
                attempt_id: r.get(4)?,
            };
            Ok((state, run))
        })
        .optional()?;
    let (state, run) = row.ok_or(JournalError::JobNotFound(job_id))?;
    if column::<JobState>("jobs.state", state.clone())? != JobState::Running {
        return Err(JournalError::NotRunning { job_id, state });
    }
    Ok(run)
}

/// See [`Journal::changed_since_claim`]. What the run carries out is taken to be the request of the newest
/// event it covers that has one; a later event asking for the same is an echo of its own writes (a run
/// claimed on a replay, a resync hint or a tenant's fan-out has no request to settle echoes by at ingest).
/// A job is its record's, so the claimed request is found along the record's history (`events_record`).
pub(super) const CHANGED_SINCE_CLAIM: &str = "SELECT EXISTS (
     SELECT 1 FROM jobs j JOIN events e ON e.job_id = j.id
     WHERE j.id = ?1 AND j.state = 'running' AND j.dirty = 1
       AND e.status = 'queued' AND e.id > j.claimed_event_id AND e.source <> 'health'
       AND (e.fingerprint IS NULL OR e.fingerprint IS NOT (
             SELECT c.fingerprint FROM events c
             WHERE c.collection = j.collection AND c.record_id = j.record_id AND c.job_id = j.id
               AND c.id <= j.claimed_event_id AND c.fingerprint IS NOT NULL
             ORDER BY c.id DESC LIMIT 1)))";

fn finish_attempt(
    tx: &Transaction<'_>,
    attempt_id: Option<i64>,
    outcome: AttemptOutcome,
    error: Option<&str>,
    now: i64,
) -> Result<(), JournalError> {
    if let Some(id) = attempt_id {
        tx.prepare_cached(
            "UPDATE job_attempts SET finished_at = ?2, outcome = ?3, error = ?4,
                    duration_ms = MAX(?2 - started_at, 0)
             WHERE id = ?1",
        )?
        .execute(params![id, now, outcome.as_str(), error])?;
    }
    Ok(())
}

/// Settles the events this run covered (`done` or `failed`).
fn settle_events(tx: &Transaction<'_>, job_id: i64, up_to: i64, status: &str) -> Result<(), JournalError> {
    tx.prepare_cached("UPDATE events SET status = ?3 WHERE job_id = ?1 AND id <= ?2 AND status = 'queued'")?
        .execute(params![job_id, up_to, status])?;
    Ok(())
}

/// The record changed while the job ran: run it again now, as a fresh job.
fn requeue_dirty(tx: &Transaction<'_>, job_id: i64, run: &RunningJob, now: i64) -> Result<(), JournalError> {
    tx.prepare_cached(
        "UPDATE jobs SET state = 'queued', attempts = 0, next_attempt_at = ?2, first_pending_at = ?3,
                dirty = 0, dirty_since = NULL, claimed_event_id = NULL, attempt_id = NULL, updated_at = ?2
         WHERE id = ?1",
    )?
    .execute(params![job_id, now, run.dirty_since.unwrap_or(now)])?;
    Ok(())
}

/// Schedules the job's next run at `at`; an event that arrived meanwhile is covered by it (the backoff
/// stays). `refund` gives the attempt back.
fn retry(
    tx: &Transaction<'_>,
    job_id: i64,
    run: &RunningJob,
    error: &str,
    at: i64,
    now: i64,
    refund: bool,
) -> Result<(), JournalError> {
    finish_attempt(tx, run.attempt_id, AttemptOutcome::Retry, Some(error), now)?;
    tx.prepare_cached(
        "UPDATE jobs SET state = 'failed', next_attempt_at = ?2, last_error = ?3,
                attempts = CASE WHEN ?5 THEN MAX(attempts - 1, 0) ELSE attempts END,
                first_pending_at = COALESCE(first_pending_at, dirty_since),
                dirty = 0, dirty_since = NULL, claimed_event_id = NULL,
                attempt_id = NULL, updated_at = ?4
         WHERE id = ?1",
    )?
    .execute(params![job_id, at, error, now, refund])?;
    Ok(())
}

fn claim(tx: &Transaction<'_>, now: i64, limit: usize) -> Result<Vec<ClaimedJob>, JournalError> {
    struct Due {
        job_id: i64,
        collection: String,
        record_id: String,
        attempts: i64,
        first_pending_at: Option<i64>,
        last_event_id: Option<i64>,
    }
    let due: Vec<Due> = tx
        .prepare_cached(
            "SELECT id, collection, record_id, attempts, first_pending_at, last_event_id FROM jobs
             WHERE state IN ('queued', 'failed') AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, id LIMIT ?2",
        )?
        .query_map(params![now, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(Due {
                job_id: r.get(0)?,
                collection: r.get(1)?,
                record_id: r.get(2)?,
                attempts: r.get(3)?,
                first_pending_at: r.get(4)?,
                last_event_id: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let started = now_ms();
    let mut claimed = Vec::with_capacity(due.len());
    for Due {
        job_id,
        collection,
        record_id,
        attempts,
        first_pending_at,
        last_event_id,
    } in due
    {
        let previous: Option<Option<String>> = tx
            .prepare_cached("SELECT outcome FROM job_attempts WHERE job_id = ?1 ORDER BY id DESC LIMIT 1")?
            .query_row([job_id], |r| r.get(0))
            .optional()?;
        let after_failure = previous.is_some_and(|o| o.as_deref() != Some(AttemptOutcome::Succeeded.as_str()));
        tx.prepare_cached("INSERT INTO job_attempts (job_id, started_at) VALUES (?1, ?2)")?
            .execute(params![job_id, started])?;
        let attempt_id = tx.last_insert_rowid();
        let attempts = attempts.saturating_add(1);
        tx.prepare_cached(
            "UPDATE jobs SET state = 'running', attempts = ?2, claimed_event_id = last_event_id,
                    attempt_id = ?3, dirty = 0, dirty_since = NULL, updated_at = ?4
             WHERE id = ?1",
        )?
        .execute(params![job_id, attempts, attempt_id, started])?;
        claimed.push(ClaimedJob {
            job_id,
            collection: column("collection", collection)?,
            record_id,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            first_pending_at,
            last_event_id: last_event_id.unwrap_or(0),
            after_failure,
        });
    }
    Ok(claimed)
}

impl Journal {
    /// Marks up to `limit` due jobs (queued, or failed with `next_attempt_at <= now`) running and
    /// returns them. Claims are serialised by the writer (on PostgreSQL by row locks, see `pg/jobs.rs`), so a
    /// job is never handed out twice.
    pub async fn claim_due(&self, now: i64, limit: usize) -> Result<Vec<ClaimedJob>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.claim_due(now, limit)).await;
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Most looks find nothing due (a worker finished, a running job's record changed): a read in place
        // answers those without the writer's hand-off and transaction. A job queued before the look was
        // committed before it, so the read sees it. Not `next_due_at`: its MIN reads every queued job's index
        // entry (a backlog's thousands on each look), where this probe stops at the first due one.
        let any_due = self
            .look_up(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM jobs WHERE state IN ('queued', 'failed') AND next_attempt_at <= ?1)",
                    )?
                    .query_row([now], |r| r.get::<_, bool>(0))?)
            })
            .await?;
        if !any_due {
            return Ok(Vec::new());
        }
        self.write(move |conn| write_tx(conn, |tx| claim(tx, now, limit))).await
    }

    /// The run succeeded: its events are done, and where it left its record (`record`) is recorded with
    /// them; the job runs again at once if the record changed meanwhile.
    pub async fn complete(&self, job_id: i64, record: Option<RunRecord>) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.complete(job_id, record)).await;
        }
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let now = now_ms();
                let run = running_job(tx, job_id)?;
                // In the completion's transaction: one commit per run where there were two.
                if let Some(record) = &record {
                    let collection = column::<Collection>("jobs.collection", run.collection.clone())?;
                    super::state::record_run(tx, collection, &run.record_id, record)?;
                }
                finish_attempt(tx, run.attempt_id, AttemptOutcome::Succeeded, None, now)?;
                settle_events(tx, job_id, run.claimed_event_id, "done")?;
                // What the run applied is recorded from the version it read: the claimed event may be
                // older than that version (a change that came back while the run went on).
                if run.dirty {
                    return requeue_dirty(tx, job_id, &run, now);
                }
                tx.prepare_cached(
                    "UPDATE jobs SET state = 'succeeded', first_pending_at = NULL, last_error = NULL,
                            claimed_event_id = NULL, attempt_id = NULL, updated_at = ?2
                     WHERE id = ?1",
                )?
                .execute(params![job_id, now])?;
                Ok(())
            })
        })
        .await
    }

    /// The run failed. With `retry_at` the job is retried then (its events stay queued); without, it is
    /// dead and its events failed, unless the record changed meanwhile, which revives it at once.
    pub async fn fail(&self, job_id: i64, error: &str, retry_at: Option<i64>) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.fail(job_id, error, retry_at)).await;
        }
        let error = error.to_owned();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let now = now_ms();
                let run = running_job(tx, job_id)?;
                if let Some(at) = retry_at {
                    return retry(tx, job_id, &run, &error, at, now, false);
                }
                finish_attempt(tx, run.attempt_id, AttemptOutcome::Dead, Some(&error), now)?;
                settle_events(tx, job_id, run.claimed_event_id, "failed")?;
                park(tx, job_id, &run, JobState::Dead, &error, now)
            })
        })
        .await
    }

    /// The run found PocketBase or Coolify unavailable: retry at `retry_at` without using up an attempt,
    /// so an outage of any length never kills a job.
    pub async fn wait_for_dependency(&self, job_id: i64, error: &str, retry_at: i64) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.wait_for_dependency(job_id, error, retry_at)).await;
        }
        let error = error.to_owned();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let run = running_job(tx, job_id)?;
                retry(tx, job_id, &run, &error, retry_at, now_ms(), true)
            })
        })
        .await
    }

    /// The run gave way to a newer change of its record (`ErrorPolicy::RunAgain`): its attempt is closed as
    /// interrupted and given back, and the job runs again at once over every event still queued, its own
    /// and the newer ones alike.
    pub async fn supersede(&self, job_id: i64, why: &str) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.supersede(job_id, why)).await;
        }
        let why = why.to_owned();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let now = now_ms();
                let run = running_job(tx, job_id)?;
                finish_attempt(tx, run.attempt_id, AttemptOutcome::Interrupted, Some(&why), now)?;
                tx.prepare_cached(
                    "UPDATE jobs SET state = 'queued', next_attempt_at = ?2, attempts = MAX(attempts - 1, 0),
                            first_pending_at = COALESCE(first_pending_at, dirty_since),
                            dirty = 0, dirty_since = NULL, claimed_event_id = NULL, attempt_id = NULL,
                            updated_at = ?2
                     WHERE id = ?1",
                )?
                .execute(params![job_id, now])?;
                Ok(())
            })
        })
        .await
    }

    /// Whether the record of `job_id` changed since its current run claimed it: an event came that the run
    /// does not cover and that asks for something other than the run carries out (echoes of the run's own
    /// writes do not count). Nor do the health poller's judgements: they tell of the service the run is
    /// watching, and would otherwise end each wait on a service that keeps exiting before its timeout
    /// could. Reads by key, past the job only when it is marked dirty: its queued events after the claimed
    /// one (`events_queued`), and the newest it covers with a request (`events_record`).
    pub async fn changed_since_claim(&self, job_id: i64) -> Result<bool, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.changed_since_claim(job_id)).await;
        }
        self.look_up(move |conn| {
            Ok(conn
                .prepare_cached(CHANGED_SINCE_CLAIM)?
                .query_row([job_id], |r| r.get::<_, bool>(0))?)
        })
        .await
    }

    /// The run failed in a way retrying cannot fix: park the job until a new event for the record.
    pub async fn defer(&self, job_id: i64, error: &str) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.defer(job_id, error)).await;
        }
        let error = error.to_owned();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let now = now_ms();
                let run = running_job(tx, job_id)?;
                finish_attempt(tx, run.attempt_id, AttemptOutcome::Failed, Some(&error), now)?;
                settle_events(tx, job_id, run.claimed_event_id, "failed")?;
                park(tx, job_id, &run, JobState::Waiting, &error, now)
            })
        })
        .await
    }

    /// Gives up a running job whose outcome cannot be recorded. On PostgreSQL its claim is no longer renewed,
    /// so its lease runs out and a replica (this one too) runs it again; on SQLite the next start does.
    pub fn abandon_claim(&self, job_id: i64) {
        if let Some(pg) = self.pg() {
            pg.abandon_claim(job_id);
        }
    }

    /// Jobs left running by a crash or an abandoned shutdown go back to the queue.
    pub async fn resume_on_start(&self) -> Result<usize, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.resume_on_start()).await;
        }
        self.write(|conn| {
            write_tx(conn, |tx| {
                let now = now_ms();
                tx.execute(
                    "UPDATE job_attempts SET outcome = 'interrupted', finished_at = ?1,
                            error = 'the process stopped while this attempt ran',
                            duration_ms = MAX(?1 - started_at, 0)
                     WHERE outcome IS NULL
                       AND id IN (SELECT attempt_id FROM jobs WHERE state = 'running')",
                    [now],
                )?;
                let n = tx.execute(
                    "UPDATE jobs SET state = 'queued', next_attempt_at = ?1,
                            first_pending_at = COALESCE(first_pending_at, dirty_since),
                            dirty = 0, dirty_since = NULL, claimed_event_id = NULL, attempt_id = NULL,
                            updated_at = ?1
                     WHERE state = 'running'",
                    [now],
                )?;
                Ok(n)
            })
        })
        .await
    }

    /// The queued events of `job_id` (those a run covers: up to `upto`, or all so far with `None`), newest
    /// first, at most `limit`: each one's source, action and the `changed_by` stamp its record carried (see
    /// `reconcile::actor`).
    pub async fn run_changes(
        &self,
        job_id: i64,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(Source, Action, Option<String>)>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.run_changes(job_id, upto, limit)).await;
        }
        self.look_up(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT source, action, payload FROM events WHERE job_id = ?1 AND status = 'queued' AND id <= ?2
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    job_id,
                    upto.unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
            )?;
            let mut out = Vec::new();
            for row in rows {
                let (source, action, payload) = row?;
                let stamp = serde_json::from_str::<serde_json::Value>(&payload)
                    .ok()
                    .and_then(|p| p.get("changed_by")?.as_str().map(str::to_string))
                    .filter(|s| !s.is_empty());
                out.push((
                    column("events.source", source)?,
                    column("events.action", action)?,
                    stamp,
                ));
            }
            Ok(out)
        })
        .await
    }

    /// Records of `collection` whose job is unsettled (queued, running, retrying, waiting) or settled at or
    /// after `since_ms`: a listing made at `since_ms` may show them as they were before their run wrote back.
    pub async fn records_worked_since(
        &self,
        collection: Collection,
        since_ms: i64,
    ) -> Result<HashSet<String>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.records_worked_since(collection, since_ms)).await;
        }
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT record_id FROM jobs
                 WHERE collection = ?1 AND (state NOT IN ('succeeded', 'dead') OR updated_at >= ?2)",
            )?
            .query_map(params![collection.as_str(), since_ms], |r| r.get(0))?
            .collect::<Result<_, _>>()
            .map_err(Into::into)
        })
        .await
    }

    /// When the next queued or retrying job falls due, if any (lets the dispatcher sleep exactly).
    pub async fn next_due_at(&self) -> Result<Option<i64>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.next_due_at()).await;
        }
        self.look_up(|conn| {
            Ok(conn
                .prepare_cached("SELECT MIN(next_attempt_at) FROM jobs WHERE state IN ('queued', 'failed')")?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }
}

/// Ends a job as `dead` or `waiting`, or revives it at once if the record changed during the run.
fn park(
    tx: &Transaction<'_>,
    job_id: i64,
    run: &RunningJob,
    state: JobState,
    error: &str,
    now: i64,
) -> Result<(), JournalError> {
    if run.dirty {
        tx.prepare_cached("UPDATE jobs SET last_error = ?2 WHERE id = ?1")?
            .execute(params![job_id, error])?;
        return requeue_dirty(tx, job_id, run, now);
    }
    tx.prepare_cached(
        "UPDATE jobs SET state = ?2, last_error = ?3, first_pending_at = NULL, claimed_event_id = NULL,
                attempt_id = NULL, updated_at = ?4
         WHERE id = ?1",
    )?
    .execute(params![job_id, state.as_str(), error, now])?;
    Ok(())
}
