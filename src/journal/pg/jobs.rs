//! The job lifecycle on PostgreSQL: the side of `journal/jobs.rs` for several replicas.
//!
//! A claim (`FOR UPDATE SKIP LOCKED`: replicas never wait on each other's rows) stamps the job with a
//! random claim id, this replica's id and a lease measured by the database's clock. The replica keeps its
//! claims in memory (job id -> claim id) and renews their leases by heartbeat (`heartbeat`). A running job
//! whose lease ran out is claimable again, its open attempt closed as interrupted. Every outcome write
//! locks the job row and counts only under the claim id this replica holds: a replica that lost its claim
//! changes nothing and is told `NotRunning`.

use std::collections::HashSet;

use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::PgJournal;
use super::sql::{db_now_ms, exec, notify_jobs, row, rows};
use crate::events::{Action, Collection, Source};
use crate::journal::types::column;
use crate::journal::{AttemptOutcome, ClaimedJob, JobState, JournalError, RunRecord, now_ms};

/// What the current run of a job needs to record its outcome.
struct RunningJob {
    collection: String,
    record_id: String,
    dirty: bool,
    dirty_since: Option<i64>,
    claimed_event_id: i64,
    attempt_id: Option<i64>,
}

impl PgJournal {
    /// Locks the job and checks that this replica still holds its claim (a lost claim is let go).
    async fn running_job(&self, tx: &Transaction<'_>, job_id: i64) -> Result<RunningJob, JournalError> {
        let found = row(
            tx,
            "SELECT state, dirty, dirty_since, claimed_event_id, attempt_id, claim_id, collection, record_id
             FROM jobs WHERE id = $1 FOR UPDATE",
            &[&job_id],
        )
        .await?;
        let Some(r) = found else {
            self.release(job_id);
            return Err(JournalError::JobNotFound(job_id));
        };
        let state: String = r.get(0);
        let claim: Option<String> = r.get(5);
        let lost = if column::<JobState>("jobs.state", state.clone())? != JobState::Running {
            Some(state)
        } else if claim.is_none() || claim != self.held(job_id) {
            Some("held by another claim".to_owned())
        } else {
            None
        };
        if let Some(state) = lost {
            // Whatever this replica's worker did, the job is no longer its own.
            self.release(job_id);
            return Err(JournalError::NotRunning { job_id, state });
        }
        let (dirty, claimed): (i64, Option<i64>) = (r.get(1), r.get(3));
        Ok(RunningJob {
            collection: r.get(6),
            record_id: r.get(7),
            dirty: dirty != 0,
            dirty_since: r.get(2),
            claimed_event_id: claimed.unwrap_or(i64::MAX),
            attempt_id: r.get(4),
        })
    }

    /// Commits an outcome and lets the claim go; `requeued` wakes the replicas.
    async fn commit_outcome(&self, tx: Transaction<'_>, job_id: i64, requeued: bool) -> Result<(), JournalError> {
        if requeued {
            notify_jobs(&tx).await?;
        }
        tx.commit().await?;
        self.release(job_id);
        Ok(())
    }

    pub(crate) fn abandon_claim(&self, job_id: i64) {
        self.release(job_id);
    }

    /// Marks up to `limit` due jobs running for this replica and returns them: queued ones, failed ones
    /// whose `next_attempt_at <= now`, and running ones whose lease ran out (not those this replica still
    /// holds: their worker still runs and will write their outcome).
    pub(crate) async fn claim_due(&self, now: i64, limit: usize) -> Result<Vec<ClaimedJob>, JournalError> {
        let held = self.held_ids();
        let lease = self.lease_ms();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let due = rows(
            &tx,
            concat!(
                "SELECT id, state, attempt_id FROM jobs
                 WHERE (state IN ('queued', 'failed') AND next_attempt_at <= $1)
                    OR (state = 'running' AND lease_until < ",
                db_now_ms!(),
                " AND NOT (id = ANY($3)))
                 ORDER BY next_attempt_at, id LIMIT $2
                 FOR UPDATE SKIP LOCKED"
            ),
            &[&now, &i64::try_from(limit).unwrap_or(i64::MAX), &held],
        )
        .await?;
        let started = now_ms();
        let mut claimed = Vec::with_capacity(due.len());
        for due in due {
            let (job_id, state, attempt_id): (i64, String, Option<i64>) = (due.get(0), due.get(1), due.get(2));
            let expired = state == JobState::Running.as_str();
            if expired {
                interrupt(
                    &tx,
                    attempt_id,
                    "the replica running this attempt stopped renewing its claim",
                    started,
                )
                .await?;
            }
            let previous = row(
                &tx,
                "SELECT outcome FROM job_attempts WHERE job_id = $1 ORDER BY id DESC LIMIT 1",
                &[&job_id],
            )
            .await?;
            let after_failure = previous.is_some_and(|r| {
                let outcome: Option<String> = r.get(0);
                outcome.as_deref() != Some(AttemptOutcome::Succeeded.as_str())
            });
            let attempt_id: i64 = row(
                &tx,
                "INSERT INTO job_attempts (job_id, started_at) VALUES ($1, $2) RETURNING id",
                &[&job_id, &started],
            )
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| JournalError::Commit("no attempt id returned".into()))?;
            let claim_id = format!("{:032x}", rand::random::<u128>());
            let r = row(
                &tx,
                concat!(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1, claimed_event_id = last_event_id,
                            attempt_id = $2, updated_at = $3,
                            first_pending_at = CASE WHEN $4 THEN COALESCE(first_pending_at, dirty_since)
                                                    ELSE first_pending_at END,
                            dirty = 0, dirty_since = NULL,
                            claim_id = $5, claimed_by = $6, lease_until = ",
                    db_now_ms!(),
                    " + $7
                     WHERE id = $1
                     RETURNING collection, record_id, attempts, first_pending_at, last_event_id"
                ),
                &[
                    &job_id,
                    &attempt_id,
                    &started,
                    &expired,
                    &claim_id,
                    &self.replica_id(),
                    &lease,
                ],
            )
            .await?
            .ok_or(JournalError::JobNotFound(job_id))?;
            claimed.push((claimed_job(job_id, &r, after_failure)?, claim_id));
        }
        tx.commit().await?;
        Ok(claimed
            .into_iter()
            .map(|(job, claim_id)| {
                self.hold(job.job_id, claim_id);
                job
            })
            .collect())
    }

    /// The run succeeded: its events are done; the job runs again at once if the record changed meanwhile.
    /// Where the run left its record (`record`) is recorded in the same transaction.
    pub(crate) async fn complete(&self, job_id: i64, record: Option<RunRecord>) -> Result<(), JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let run = self.running_job(&tx, job_id).await?;
        if let Some(record) = &record {
            let collection = column::<Collection>("jobs.collection", run.collection.clone())?;
            super::state::record_run(&tx, collection, &run.record_id, record).await?;
        }
        let now = now_ms();
        finish_attempt(&tx, run.attempt_id, AttemptOutcome::Succeeded, None, now).await?;
        settle_events(&tx, job_id, run.claimed_event_id, "done").await?;
        if run.dirty {
            requeue_dirty(&tx, job_id, &run, now).await?;
        } else {
            exec(
                &tx,
                "UPDATE jobs SET state = 'succeeded', first_pending_at = NULL, last_error = NULL,
                        claimed_event_id = NULL, attempt_id = NULL, updated_at = $2,
                        claim_id = NULL, claimed_by = NULL, lease_until = NULL
                 WHERE id = $1",
                &[&job_id, &now],
            )
            .await?;
        }
        self.commit_outcome(tx, job_id, run.dirty).await
    }

    /// The run failed: retried at `retry_at`, or dead (revived at once if the record changed meanwhile).
    pub(crate) async fn fail(&self, job_id: i64, error: &str, retry_at: Option<i64>) -> Result<(), JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let run = self.running_job(&tx, job_id).await?;
        let now = now_ms();
        let requeued = match retry_at {
            Some(at) => {
                retry(&tx, job_id, &run, error, at, now, false).await?;
                false
            }
            None => {
                finish_attempt(&tx, run.attempt_id, AttemptOutcome::Dead, Some(error), now).await?;
                settle_events(&tx, job_id, run.claimed_event_id, "failed").await?;
                park(&tx, job_id, &run, JobState::Dead, error, now).await?
            }
        };
        self.commit_outcome(tx, job_id, requeued).await
    }

    /// A dependency is unavailable: retry at `retry_at` without using up an attempt.
    pub(crate) async fn wait_for_dependency(
        &self,
        job_id: i64,
        error: &str,
        retry_at: i64,
    ) -> Result<(), JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let run = self.running_job(&tx, job_id).await?;
        retry(&tx, job_id, &run, error, retry_at, now_ms(), true).await?;
        self.commit_outcome(tx, job_id, false).await
    }

    /// The run gave way to a newer change: see `Journal::supersede`.
    pub(crate) async fn supersede(&self, job_id: i64, why: &str) -> Result<(), JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let run = self.running_job(&tx, job_id).await?;
        let now = now_ms();
        finish_attempt(&tx, run.attempt_id, AttemptOutcome::Interrupted, Some(why), now).await?;
        exec(
            &tx,
            "UPDATE jobs SET state = 'queued', next_attempt_at = $2, attempts = GREATEST(attempts - 1, 0),
                    first_pending_at = COALESCE(first_pending_at, dirty_since),
                    dirty = 0, dirty_since = NULL, claimed_event_id = NULL, attempt_id = NULL, updated_at = $2,
                    claim_id = NULL, claimed_by = NULL, lease_until = NULL
             WHERE id = $1",
            &[&job_id, &now],
        )
        .await?;
        self.commit_outcome(tx, job_id, true).await
    }

    /// See `Journal::changed_since_claim`.
    pub(crate) async fn changed_since_claim(&self, job_id: i64) -> Result<bool, JournalError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT EXISTS (
                     SELECT 1 FROM jobs j JOIN events e ON e.job_id = j.id
                     WHERE j.id = $1 AND j.state = 'running' AND j.dirty = 1
                       AND e.status = 'queued' AND e.id > j.claimed_event_id AND e.source <> 'health'
                       AND (e.fingerprint IS NULL OR e.fingerprint IS DISTINCT FROM (
                             SELECT c.fingerprint FROM events c
                             WHERE c.job_id = j.id AND c.id <= j.claimed_event_id AND c.fingerprint IS NOT NULL
                             ORDER BY c.id DESC LIMIT 1)))",
            )
            .await?;
        Ok(conn.query_one(&stmt, &[&job_id]).await?.get(0))
    }

    /// The run failed in a way retrying cannot fix: park the job until a new event for the record.
    pub(crate) async fn defer(&self, job_id: i64, error: &str) -> Result<(), JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let run = self.running_job(&tx, job_id).await?;
        let now = now_ms();
        finish_attempt(&tx, run.attempt_id, AttemptOutcome::Failed, Some(error), now).await?;
        settle_events(&tx, job_id, run.claimed_event_id, "failed").await?;
        let requeued = park(&tx, job_id, &run, JobState::Waiting, error, now).await?;
        self.commit_outcome(tx, job_id, requeued).await
    }

    /// Jobs left running by this replica, and those whose lease ran out (their replica is gone), go back to
    /// the queue. Other replicas' live claims are left alone.
    pub(crate) async fn resume_on_start(&self) -> Result<usize, JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let now = now_ms();
        let stale = rows(
            &tx,
            concat!(
                "SELECT id, attempt_id FROM jobs
                 WHERE state = 'running' AND (claimed_by = $1 OR lease_until IS NULL OR lease_until < ",
                db_now_ms!(),
                ") FOR UPDATE SKIP LOCKED"
            ),
            &[&self.replica_id()],
        )
        .await?;
        let mut ids = Vec::with_capacity(stale.len());
        for r in &stale {
            interrupt(&tx, r.get(1), "the process stopped while this attempt ran", now).await?;
            ids.push(r.get::<_, i64>(0));
        }
        let n = exec(
            &tx,
            "UPDATE jobs SET state = 'queued', next_attempt_at = $2,
                    first_pending_at = COALESCE(first_pending_at, dirty_since),
                    dirty = 0, dirty_since = NULL, claimed_event_id = NULL, attempt_id = NULL,
                    claim_id = NULL, claimed_by = NULL, lease_until = NULL, updated_at = $2
             WHERE id = ANY($1)",
            &[&ids, &now],
        )
        .await?;
        if n > 0 {
            notify_jobs(&tx).await?;
        }
        tx.commit().await?;
        for id in ids {
            self.release(id);
        }
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The queued events of `job_id` up to `upto`, newest first, at most `limit`: source, action and the
    /// `changed_by` stamp of each (see `journal/jobs.rs`).
    pub(crate) async fn run_changes(
        &self,
        job_id: i64,
        upto: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(Source, Action, Option<String>)>, JournalError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT source, action, payload FROM events WHERE job_id = $1 AND status = 'queued' AND id <= $2
                 ORDER BY id DESC LIMIT $3",
            )
            .await?;
        let found = conn
            .query(
                &stmt,
                &[
                    &job_id,
                    &upto.unwrap_or(i64::MAX),
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await?;
        found
            .iter()
            .map(|r| {
                let payload: String = r.get(2);
                let stamp = serde_json::from_str::<serde_json::Value>(&payload)
                    .ok()
                    .and_then(|p| p.get("changed_by")?.as_str().map(str::to_string))
                    .filter(|s| !s.is_empty());
                Ok((
                    column("events.source", r.get(0))?,
                    column("events.action", r.get(1))?,
                    stamp,
                ))
            })
            .collect()
    }

    pub(crate) async fn records_worked_since(
        &self,
        collection: Collection,
        since_ms: i64,
    ) -> Result<HashSet<String>, JournalError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT record_id FROM jobs
                 WHERE collection = $1 AND (state NOT IN ('succeeded', 'dead') OR updated_at >= $2)",
            )
            .await?;
        Ok(conn
            .query(&stmt, &[&collection.as_str(), &since_ms])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// When the next job falls due (ms, this process's clock): a queued or retrying one, or a claim of
    /// another replica whose lease runs out (so an idle replica takes over a dead one's jobs in time).
    pub(crate) async fn next_due_at(&self) -> Result<Option<i64>, JournalError> {
        let held = self.held_ids();
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(concat!(
                "SELECT (SELECT MIN(next_attempt_at) FROM jobs WHERE state IN ('queued', 'failed')),
                        (SELECT MIN(lease_until) FROM jobs WHERE state = 'running' AND NOT (id = ANY($1))) - ",
                db_now_ms!()
            ))
            .await?;
        let r = conn.query_one(&stmt, &[&held]).await?;
        let (due, lease_left): (Option<i64>, Option<i64>) = (r.get(0), r.get(1));
        let expiry = lease_left.map(|left| now_ms().saturating_add(left.max(0)));
        Ok(match (due, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }
}

fn claimed_job(job_id: i64, r: &Row, after_failure: bool) -> Result<ClaimedJob, JournalError> {
    let (attempts, last_event_id): (i64, Option<i64>) = (r.get(2), r.get(4));
    Ok(ClaimedJob {
        job_id,
        collection: column("collection", r.get(0))?,
        record_id: r.get(1),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        first_pending_at: r.get(3),
        last_event_id: last_event_id.unwrap_or(0),
        after_failure,
    })
}

/// Closes an attempt that will never report (its process stopped or its claim ran out).
async fn interrupt(tx: &Transaction<'_>, attempt_id: Option<i64>, why: &str, now: i64) -> Result<(), JournalError> {
    if let Some(id) = attempt_id {
        exec(
            tx,
            "UPDATE job_attempts SET outcome = 'interrupted', finished_at = $2, error = $3,
                    duration_ms = GREATEST($2 - started_at, 0)
             WHERE id = $1 AND outcome IS NULL",
            &[&id, &now, &why],
        )
        .await?;
    }
    Ok(())
}

async fn finish_attempt(
    tx: &Transaction<'_>,
    attempt_id: Option<i64>,
    outcome: AttemptOutcome,
    error: Option<&str>,
    now: i64,
) -> Result<(), JournalError> {
    if let Some(id) = attempt_id {
        exec(
            tx,
            "UPDATE job_attempts SET finished_at = $2, outcome = $3, error = $4,
                    duration_ms = GREATEST($2 - started_at, 0)
             WHERE id = $1",
            &[&id, &now, &outcome.as_str(), &error],
        )
        .await?;
    }
    Ok(())
}

/// Settles the events this run covered (`done` or `failed`).
async fn settle_events(tx: &Transaction<'_>, job_id: i64, up_to: i64, status: &str) -> Result<(), JournalError> {
    exec(
        tx,
        "UPDATE events SET status = $3 WHERE job_id = $1 AND id <= $2 AND status = 'queued'",
        &[&job_id, &up_to, &status],
    )
    .await?;
    Ok(())
}

/// The record changed while the job ran: run it again now, as a fresh job.
async fn requeue_dirty(tx: &Transaction<'_>, job_id: i64, run: &RunningJob, now: i64) -> Result<(), JournalError> {
    exec(
        tx,
        "UPDATE jobs SET state = 'queued', attempts = 0, next_attempt_at = $2, first_pending_at = $3,
                dirty = 0, dirty_since = NULL, claimed_event_id = NULL, attempt_id = NULL, updated_at = $2,
                claim_id = NULL, claimed_by = NULL, lease_until = NULL
         WHERE id = $1",
        &[&job_id, &now, &run.dirty_since.unwrap_or(now)],
    )
    .await?;
    Ok(())
}

/// Schedules the job's next run at `at`; `refund` gives the attempt back.
async fn retry(
    tx: &Transaction<'_>,
    job_id: i64,
    run: &RunningJob,
    error: &str,
    at: i64,
    now: i64,
    refund: bool,
) -> Result<(), JournalError> {
    finish_attempt(tx, run.attempt_id, AttemptOutcome::Retry, Some(error), now).await?;
    exec(
        tx,
        "UPDATE jobs SET state = 'failed', next_attempt_at = $2, last_error = $3,
                attempts = CASE WHEN $5 THEN GREATEST(attempts - 1, 0) ELSE attempts END,
                first_pending_at = COALESCE(first_pending_at, dirty_since),
                dirty = 0, dirty_since = NULL, claimed_event_id = NULL,
                attempt_id = NULL, updated_at = $4,
                claim_id = NULL, claimed_by = NULL, lease_until = NULL
         WHERE id = $1",
        &[&job_id, &at, &error, &now, &refund],
    )
    .await?;
    Ok(())
}

/// Ends a job as `dead` or `waiting`, or revives it at once if the record changed during the run;
/// true when it was queued again.
async fn park(
    tx: &Transaction<'_>,
    job_id: i64,
    run: &RunningJob,
    state: JobState,
    error: &str,
    now: i64,
) -> Result<bool, JournalError> {
    if run.dirty {
        exec(tx, "UPDATE jobs SET last_error = $2 WHERE id = $1", &[&job_id, &error]).await?;
        requeue_dirty(tx, job_id, run, now).await?;
        return Ok(true);
    }
    exec(
        tx,
        "UPDATE jobs SET state = $2, last_error = $3, first_pending_at = NULL, claimed_event_id = NULL,
                attempt_id = NULL, updated_at = $4, claim_id = NULL, claimed_by = NULL, lease_until = NULL
         WHERE id = $1",
        &[&job_id, &state.as_str(), &error, &now],
    )
    .await?;
    Ok(false)
}
