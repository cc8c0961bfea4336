//! Storing an event and folding it into its record's job, inside the caller's transaction.

use rusqlite::{OptionalExtension, Transaction, params};

use super::types::column;
use super::{JobState, JournalError};
use crate::events::{Action, Collection, Ingested, NewEvent};

/// Inserts the event unless its change key or delivery id is known, then queues the record's job.
pub(crate) fn ingest(
    tx: &Transaction<'_>,
    event: &NewEvent,
    payload: &str,
    now: i64,
) -> Result<Ingested, JournalError> {
    // Only an update can be an echo; a create or delete always makes a job.
    let echo = match &event.fingerprint {
        Some(fp) if event.action == Action::Update => asks_nothing_new(tx, event.collection, &event.record_id, fp)?,
        _ => Echo::No,
    };
    let settled = echo != Echo::No;
    let inserted = tx
        .prepare_cached(
            "INSERT INTO events (source, collection, record_id, action, record_updated, received_at,
                                 dedupe_key, delivery_id, payload, status, fingerprint, trace_context)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            event.source.as_str(),
            event.collection.as_str(),
            event.record_id,
            event.action.as_str(),
            event.record_updated,
            now,
            event.dedupe_key,
            event.delivery_id,
            payload,
            if settled { "done" } else { "queued" },
            event.fingerprint,
            event.trace_context,
        ])?;
    if inserted == 0 {
        return Ok(Ingested::Duplicate);
    }
    let event_id = tx.last_insert_rowid();
    if settled {
        // After a successful run, the record at this version is as good as applied: resync must not take it
        // for a missed change. During a run, the run's own outcome decides.
        if let (Echo::OfApplied, Some(updated)) = (echo, &event.record_updated) {
            tx.prepare_cached(
                "UPDATE record_state SET last_updated = ?3
                 WHERE collection = ?1 AND record_id = ?2 AND (last_updated IS NULL OR last_updated < ?3)",
            )?
            .execute(params![event.collection.as_str(), event.record_id, updated])?;
        }
        return Ok(Ingested::Settled { event_id });
    }
    let (job_id, coalesced) = enqueue(tx, event.collection, &event.record_id, event_id, now, false)?;
    Ok(Ingested::New {
        event_id,
        job_id,
        coalesced,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Echo {
    No,
    /// Asks for what the record's last successful run applied.
    OfApplied,
    /// Asks for what the record's running job is applying now.
    OfRunning,
}

/// Whether a change asking for `fp` needs no job: the record's last run succeeded with that request, or
/// its running job is applying that request now. Any other job state (queued, retrying, parked) keeps
/// the event, since what was applied is then in doubt.
fn asks_nothing_new(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
    fp: &str,
) -> Result<Echo, JournalError> {
    let job: Option<(String, Option<i64>)> = tx
        .prepare_cached("SELECT state, claimed_event_id FROM jobs WHERE collection = ?1 AND record_id = ?2")?
        .query_row(params![collection.as_str(), record_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (state, claimed) = match job {
        Some((state, claimed)) => (Some(column::<JobState>("jobs.state", state)?), claimed),
        None => (None, None),
    };
    let echo = match (state, claimed) {
        (None | Some(JobState::Succeeded), _) if applied_fingerprint_is(tx, collection, record_id, fp)? => {
            Echo::OfApplied
        }
        (Some(JobState::Running), Some(claimed)) if event_fingerprint(tx, claimed)?.as_deref() == Some(fp) => {
            Echo::OfRunning
        }
        _ => Echo::No,
    };
    Ok(echo)
}

fn applied_fingerprint_is(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
    fp: &str,
) -> Result<bool, JournalError> {
    let applied: Option<Option<String>> = tx
        .prepare_cached(
            "SELECT applied_hash FROM record_state WHERE collection = ?1 AND record_id = ?2 AND deleted = 0",
        )?
        .query_row(params![collection.as_str(), record_id], |r| r.get(0))
        .optional()?;
    Ok(applied.flatten().as_deref() == Some(fp))
}

/// The request fingerprint a journaled event was stored with (see [`NewEvent::fingerprint`]).
pub(crate) fn event_fingerprint(tx: &Transaction<'_>, event_id: i64) -> Result<Option<String>, JournalError> {
    Ok(tx
        .prepare_cached("SELECT fingerprint FROM events WHERE id = ?1")?
        .query_row([event_id], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Makes sure the record's job will run for `event_id`, and links the event to it.
///
/// Idle, succeeded, failed, parked and dead jobs are revived (attempts reset, due now); a queued job
/// absorbs the event; a running job is marked dirty so it runs again once the current run ends.
/// `reset` (replays) also resets the attempts of an already queued job. Returns (job id, coalesced).
pub(crate) fn enqueue(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
    event_id: i64,
    now: i64,
    reset: bool,
) -> Result<(i64, bool), JournalError> {
    let existing: Option<(i64, String, bool)> = tx
        .prepare_cached("SELECT id, state, dirty FROM jobs WHERE collection = ?1 AND record_id = ?2")?
        .query_row(params![collection.as_str(), record_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let (job_id, coalesced) = match existing {
        None => {
            tx.prepare_cached(
                "INSERT INTO jobs (collection, record_id, state, attempts, next_attempt_at, coalesced,
                                   first_pending_at, dirty, created_at, updated_at, last_event_id)
                 VALUES (?1, ?2, 'queued', 0, ?3, 0, ?3, 0, ?3, ?3, ?4)",
            )?
            .execute(params![collection.as_str(), record_id, now, event_id])?;
            (tx.last_insert_rowid(), false)
        }
        Some((job_id, state, dirty)) => match column::<JobState>("jobs.state", state)? {
            JobState::Queued => {
                tx.prepare_cached(
                    "UPDATE jobs SET coalesced = coalesced + 1, last_event_id = ?2, updated_at = ?3,
                            attempts = CASE WHEN ?4 THEN 0 ELSE attempts END,
                            next_attempt_at = MIN(next_attempt_at, ?3)
                     WHERE id = ?1",
                )?
                .execute(params![job_id, event_id, now, reset])?;
                (job_id, true)
            }
            JobState::Running => {
                tx.prepare_cached(
                    "UPDATE jobs SET dirty = 1, dirty_since = COALESCE(dirty_since, ?3),
                            coalesced = coalesced + dirty, last_event_id = ?2, updated_at = ?3
                     WHERE id = ?1",
                )?
                .execute(params![job_id, event_id, now])?;
                (job_id, dirty)
            }
            JobState::Succeeded | JobState::Failed | JobState::Waiting | JobState::Dead => {
                // A failed job still owes its earlier events, so it keeps their arrival time.
                tx.prepare_cached(
                    "UPDATE jobs SET state = 'queued', attempts = 0, next_attempt_at = ?3, coalesced = 0,
                            first_pending_at = COALESCE(first_pending_at, ?3), last_event_id = ?2,
                            updated_at = ?3
                     WHERE id = ?1",
                )?
                .execute(params![job_id, event_id, now])?;
                (job_id, false)
            }
        },
    };
    tx.prepare_cached("UPDATE events SET job_id = ?1 WHERE id = ?2")?
        .execute(params![job_id, event_id])?;
    Ok((job_id, coalesced))
}
