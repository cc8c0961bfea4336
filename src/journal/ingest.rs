//! Storing an event and folding it into its record's job, inside the caller's transaction.

use rusqlite::{OptionalExtension, Transaction, params};

use super::types::column;
use super::{JobState, JournalError};
use crate::events::{Action, Collection, Ingested, NewEvent, Source};

/// Inserts the event unless its change key or delivery id is known, then queues the record's job.
pub(crate) fn ingest(
    tx: &Transaction<'_>,
    event: &NewEvent,
    payload: &str,
    now: i64,
) -> Result<Ingested, JournalError> {
    // A resync hint for a version whose event was settled as an echo: settled only if that echo asks for
    // what is applied; otherwise it is journaled under a key of its own, so that it makes a job.
    let retagged;
    let event = match resync_look(tx, event)? {
        ResyncLook::Fresh => event,
        ResyncLook::Covered => return Ok(Ingested::Duplicate),
        ResyncLook::Stale => {
            retagged = NewEvent {
                dedupe_key: format!("{}:resync", event.dedupe_key),
                ..event.clone()
            };
            &retagged
        }
    };
    // Only an update can be an echo; a create or delete always makes a job.
    let echo = match &event.fingerprint {
        Some(fp) if event.action == Action::Update => asks_nothing_new(tx, event, fp)?,
        _ => Echo::No,
    };
    let settled = echo != Echo::No;
    let insert = |key: &str| -> Result<usize, JournalError> {
        Ok(tx
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
                key,
                event.delivery_id,
                payload,
                if settled { "done" } else { "queued" },
                event.fingerprint,
                event.trace_context,
            ])?)
    };
    let mut inserted = insert(&event.dedupe_key)?;
    if inserted == 0
        && let Some(key) = other_version_key(event, payload, || held_under_key(tx, &event.dedupe_key))?
    {
        inserted = insert(&key)?;
    }
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

/// The change keys `(key, after, before)` of an update to version `updated`: the key itself, and the
/// bounds of those [`other_version_key`] gives other versions of that millisecond (`key:…`).
pub(crate) fn version_keys(collection: Collection, record_id: &str, updated: &str) -> (String, String, String) {
    let key = NewEvent::change_key(collection, record_id, Action::Update, Some(updated));
    let (after, before) = (format!("{key}:"), format!("{key};"));
    (key, after, before)
}

/// Whether the journal holds another version of `event`'s update stamped in the same millisecond: one that
/// asks for something other than `fp` under its key, or any under a key of its own.
fn other_version_held(tx: &Transaction<'_>, event: &NewEvent, fp: &str) -> Result<bool, JournalError> {
    let Some(updated) = event.record_updated.as_deref() else {
        return Ok(false);
    };
    let (key, ..) = version_keys(event.collection, &event.record_id, updated);
    if let Some((_, Some(held), _)) = held_under_key(tx, &key)?
        && held != fp
    {
        return Ok(true);
    }
    second_versions_held(tx, event.collection, &event.record_id, updated)
}

/// Whether the journal holds an update to version `updated` under a key of its own (`key:…`): a second
/// version stamped in that millisecond.
pub(crate) fn second_versions_held(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
    updated: &str,
) -> Result<bool, JournalError> {
    let (_, after, before) = version_keys(collection, record_id, updated);
    Ok(tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM events WHERE dedupe_key > ?1 AND dedupe_key < ?2)")?
        .query_row(params![after, before], |r| r.get(0))?)
}

/// What the journal holds under a change key: the event's source, request fingerprint and stored payload.
pub(crate) type HeldChange = (String, Option<String>, String);

fn held_under_key(tx: &Transaction<'_>, key: &str) -> Result<Option<HeldChange>, JournalError> {
    Ok(tx
        .prepare_cached("SELECT source, fingerprint, payload FROM events WHERE dedupe_key = ?1")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// The key of a second version of one record update behind a taken change key, or `None` when what the
/// key holds is this very version (the other source's copy of it, or a redelivery).
///
/// PocketBase stamps `updated` to the millisecond, and writes of one record within one millisecond share
/// it (eight writers on one record: 723 of 1,080 stamps named two or more versions). A person's edit that
/// lands in the millisecond of the bridge's write-back then had the write-back's change key: its frame
/// was dropped as a duplicate, and the resync, which finds that version journaled, never brought it back.
/// Versions are told apart by what they ask for (the instance's request fingerprint, secrets included), or
/// by their stored record when there is none (tenants). `held` is read only after a conflict, which the
/// common path never has.
pub(crate) fn other_version_key(
    event: &NewEvent,
    payload: &str,
    held: impl FnOnce() -> Result<Option<HeldChange>, JournalError>,
) -> Result<Option<String>, JournalError> {
    let carries_record = |source: Source| matches!(source, Source::Realtime | Source::Webhook);
    if event.action != Action::Update || event.record_updated.is_none() || !carries_record(event.source) {
        return Ok(None);
    }
    // Nothing under the key: the conflict was a webhook's delivery id, a redelivery.
    let Some((source, fingerprint, stored)) = held()? else {
        return Ok(None);
    };
    // A resync or replay hint holds no version of its own.
    if !source.parse().is_ok_and(carries_record) {
        return Ok(None);
    }
    let this = match (&event.fingerprint, fingerprint) {
        (Some(mine), Some(theirs)) => (*mine != theirs).then(|| mine.clone()),
        (None, None) => (stored != payload).then(|| {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(payload.as_bytes())[..12])
        }),
        _ => None,
    };
    Ok(this.map(|version| format!("{}:{version}", event.dedupe_key)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Echo {
    No,
    /// Asks for what the record's last successful run applied.
    OfApplied,
    /// Asks for what the record's running job is applying now.
    OfRunning,
}

/// The record's job: its state, the event its current run claimed, and whether a change came meanwhile.
fn job_of(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
) -> Result<Option<(JobState, Option<i64>, bool)>, JournalError> {
    let job: Option<(String, Option<i64>, bool)> = tx
        .prepare_cached("SELECT state, claimed_event_id, dirty FROM jobs WHERE collection = ?1 AND record_id = ?2")?
        .query_row(params![collection.as_str(), record_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    job.map(|(state, claimed, dirty)| Ok((column::<JobState>("jobs.state", state)?, claimed, dirty)))
        .transpose()
}

/// Whether a change asking for `fp` needs no job: the record's last run succeeded with that request (or
/// read this very version), or its running job is applying that request now and no other change came
/// since its claim. Any other job state (queued, retrying, parked) keeps the event, since what was
/// applied is then in doubt; so does a running job that will run again anyway (its next run's claim
/// must cover every change, a change back to the claimed request included).
fn asks_nothing_new(tx: &Transaction<'_>, event: &NewEvent, fp: &str) -> Result<Echo, JournalError> {
    let (collection, record_id) = (event.collection, event.record_id.as_str());
    let echo = match job_of(tx, collection, record_id)? {
        None | Some((JobState::Succeeded, _, _)) => match applied_of(tx, collection, record_id)? {
            Some(Applied { hash, .. }) if hash.as_deref() == Some(fp) => Echo::OfApplied,
            // The last run read this version: whatever it asks for was applied, unless the version is one
            // of several stamped in one millisecond (which one the run read is unknown).
            Some(Applied { hash: None, version })
                if version.is_some() && version == event.record_updated && !other_version_held(tx, event, fp)? =>
            {
                tx.prepare_cached(
                    "UPDATE record_state SET applied_hash = ?3 WHERE collection = ?1 AND record_id = ?2",
                )?
                .execute(params![collection.as_str(), record_id, fp])?;
                Echo::OfApplied
            }
            _ => Echo::No,
        },
        Some((JobState::Running, Some(claimed), false)) if event_fingerprint(tx, claimed)?.as_deref() == Some(fp) => {
            Echo::OfRunning
        }
        _ => Echo::No,
    };
    Ok(echo)
}

/// What the journal holds as applied for a live record.
struct Applied {
    /// The request fingerprint of the version applied (unknown when that version's event had none).
    hash: Option<String>,
    /// The version (`updated`) recorded as applied.
    version: Option<String>,
}

fn applied_of(tx: &Transaction<'_>, collection: Collection, record_id: &str) -> Result<Option<Applied>, JournalError> {
    Ok(tx
        .prepare_cached(
            "SELECT applied_hash, last_updated FROM record_state
             WHERE collection = ?1 AND record_id = ?2 AND deleted = 0",
        )?
        .query_row(params![collection.as_str(), record_id], |r| {
            Ok(Applied {
                hash: r.get(0)?,
                version: r.get(1)?,
            })
        })
        .optional()?)
}

/// What a resync hint finds under its change key.
enum ResyncLook {
    /// Nothing (or not a resync hint): journaled as it is.
    Fresh,
    /// A job owes or covered that version, or it was settled as an echo of what is applied.
    Covered,
    /// That version was settled as an echo, but it does not ask for what is applied (the run it echoed
    /// failed or applied something else): the record needs a look.
    Stale,
}

fn resync_look(tx: &Transaction<'_>, event: &NewEvent) -> Result<ResyncLook, JournalError> {
    if event.source != Source::Resync {
        return Ok(ResyncLook::Fresh);
    }
    let seen: Option<(String, Option<i64>, Option<String>)> = tx
        .prepare_cached("SELECT status, job_id, fingerprint FROM events WHERE dedupe_key = ?1")?
        .query_row([&event.dedupe_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((status, job_id, fp)) = seen else {
        return Ok(ResyncLook::Fresh);
    };
    if status != "done" || job_id.is_some() {
        return Ok(ResyncLook::Covered);
    }
    let (collection, record_id) = (event.collection, event.record_id.as_str());
    // A running job's outcome decides; the next pass looks again.
    if let Some((JobState::Running | JobState::Queued | JobState::Failed, _, _)) = job_of(tx, collection, record_id)? {
        return Ok(ResyncLook::Covered);
    }
    let applied = applied_of(tx, collection, record_id)?.and_then(|a| a.hash);
    if fp.is_none() || fp != applied {
        return Ok(ResyncLook::Stale);
    }
    // The version asks for what is applied: recorded as applied, so later passes skip the record.
    tx.prepare_cached(
        "UPDATE record_state SET last_updated = ?3
         WHERE collection = ?1 AND record_id = ?2 AND (last_updated IS NULL OR last_updated < ?3)",
    )?
    .execute(params![collection.as_str(), record_id, event.record_updated])?;
    Ok(ResyncLook::Covered)
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
