//! Storing an event and folding it into its record's job: the PostgreSQL side of `journal/ingest.rs`,
//! with the same decisions. Each ingest is one transaction that first takes the record's lock, so that
//! replicas decide about one record one after the other; the job row is also locked (`FOR UPDATE`)
//! against claims and outcomes, which do not take the record's lock.

use deadpool_postgres::Transaction;

use super::PgJournal;
use super::sql::{exec, lock_record, row};
use super::wake::CHANNEL;
use crate::events::{Action, Collection, Ingested, NewEvent, Source};
use crate::journal::ingest::{other_version_key, version_keys};
use crate::journal::types::column;
use crate::journal::{JobState, JournalError, now_ms};

impl PgJournal {
    /// Journals one event (its payload already stripped of secrets and serialised).
    pub(crate) async fn ingest(&self, event: &NewEvent, payload: &str) -> Result<Ingested, JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        lock_record(&tx, event.collection.as_str(), &event.record_id).await?;
        let ingested = ingest(&tx, event, payload, now_ms()).await?;
        tx.commit().await?;
        Ok(ingested)
    }
}

/// Inserts the event unless its change key or delivery id is known, then queues the record's job.
async fn ingest(tx: &Transaction<'_>, event: &NewEvent, payload: &str, now: i64) -> Result<Ingested, JournalError> {
    // A resync hint for a version whose event was settled as an echo: settled only if that echo asks for
    // what is applied; otherwise it is journaled under a key of its own, so that it makes a job.
    let retagged;
    let event = match resync_look(tx, event).await? {
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
        Some(fp) if event.action == Action::Update => asks_nothing_new(tx, event, fp).await?,
        _ => Echo::No,
    };
    let settled = echo != Echo::No;
    let status = if settled { "done" } else { "queued" };
    let mut inserted = insert(tx, event, &event.dedupe_key, payload, status, now).await?;
    if inserted.is_none() {
        let held = row(
            tx,
            "SELECT source, fingerprint, payload FROM events WHERE dedupe_key = $1",
            &[&event.dedupe_key],
        )
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
        if let Some(key) = other_version_key(event, payload, || Ok(held))? {
            inserted = insert(tx, event, &key, payload, status, now).await?;
        }
    }
    let Some(inserted) = inserted else {
        return Ok(Ingested::Duplicate);
    };
    let event_id: i64 = inserted.get(0);
    if settled {
        // After a successful run, the record at this version is as good as applied: resync must not take it
        // for a missed change. During a run, the run's own outcome decides.
        if let (Echo::OfApplied, Some(updated)) = (echo, &event.record_updated) {
            exec(
                tx,
                "UPDATE record_state SET last_updated = $3
                 WHERE collection = $1 AND record_id = $2 AND (last_updated IS NULL OR last_updated < $3)",
                &[&event.collection.as_str(), &event.record_id, updated],
            )
            .await?;
        }
        return Ok(Ingested::Settled { event_id });
    }
    let (job_id, coalesced) = enqueue(tx, event.collection, &event.record_id, event_id, now, false).await?;
    Ok(Ingested::New {
        event_id,
        job_id,
        coalesced,
    })
}

/// Inserts the event under `key` unless that key or its delivery id is known.
async fn insert(
    tx: &Transaction<'_>,
    event: &NewEvent,
    key: &str,
    payload: &str,
    status: &str,
    now: i64,
) -> Result<Option<tokio_postgres::Row>, JournalError> {
    // Without a conflict target: a known change key and a known delivery id are both duplicates. A
    // concurrent insert of the same key waits for the other transaction, then counts as a duplicate.
    row(
        tx,
        "INSERT INTO events (source, collection, record_id, action, record_updated, received_at,
                             dedupe_key, delivery_id, payload, status, fingerprint, trace_context)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT DO NOTHING
         RETURNING id",
        &[
            &event.source.as_str(),
            &event.collection.as_str(),
            &event.record_id,
            &event.action.as_str(),
            &event.record_updated,
            &now,
            &key,
            &event.delivery_id,
            &payload,
            &status,
            &event.fingerprint,
            &event.trace_context,
        ],
    )
    .await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Echo {
    No,
    /// Asks for what the record's last successful run applied.
    OfApplied,
    /// Asks for what the record's running job is applying now.
    OfRunning,
}

/// The record's job, locked until the transaction ends: its state, the event its current run claimed,
/// and whether a change came meanwhile.
async fn job_of(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
) -> Result<Option<(JobState, Option<i64>, bool)>, JournalError> {
    let found = row(
        tx,
        "SELECT state, claimed_event_id, dirty FROM jobs WHERE collection = $1 AND record_id = $2 FOR UPDATE",
        &[&collection.as_str(), &record_id],
    )
    .await?;
    found
        .map(|r| {
            let dirty: i64 = r.get(2);
            Ok((column::<JobState>("jobs.state", r.get(0))?, r.get(1), dirty != 0))
        })
        .transpose()
}

/// Whether a change asking for `fp` needs no job (see `journal/ingest.rs`, which decides the same).
async fn asks_nothing_new(tx: &Transaction<'_>, event: &NewEvent, fp: &str) -> Result<Echo, JournalError> {
    let (collection, record_id) = (event.collection, event.record_id.as_str());
    let echo = match job_of(tx, collection, record_id).await? {
        None | Some((JobState::Succeeded, _, _)) => match applied_of(tx, collection, record_id).await? {
            Some(Applied { hash, .. }) if hash.as_deref() == Some(fp) => Echo::OfApplied,
            // The last run read this version: whatever it asks for was applied, unless the version is one
            // of several stamped in one millisecond (which one the run read is unknown).
            Some(Applied { hash: None, version })
                if version.is_some()
                    && version == event.record_updated
                    && !other_version_held(tx, event, fp).await? =>
            {
                exec(
                    tx,
                    "UPDATE record_state SET applied_hash = $3 WHERE collection = $1 AND record_id = $2",
                    &[&collection.as_str(), &record_id, &fp],
                )
                .await?;
                Echo::OfApplied
            }
            _ => Echo::No,
        },
        Some((JobState::Running, Some(claimed), false))
            if event_fingerprint(tx, claimed).await?.as_deref() == Some(fp) =>
        {
            Echo::OfRunning
        }
        _ => Echo::No,
    };
    Ok(echo)
}

/// Whether the journal holds another version of `event`'s update stamped in the same millisecond (see
/// `journal/ingest.rs`).
async fn other_version_held(tx: &Transaction<'_>, event: &NewEvent, fp: &str) -> Result<bool, JournalError> {
    let Some(updated) = event.record_updated.as_deref() else {
        return Ok(false);
    };
    let (key, after, before) = version_keys(event.collection, &event.record_id, updated);
    let found = row(
        tx,
        "SELECT EXISTS (SELECT 1 FROM events WHERE dedupe_key = $1 AND fingerprint <> $4)
             OR EXISTS (SELECT 1 FROM events WHERE dedupe_key > $2 AND dedupe_key < $3)",
        &[&key, &after, &before, &fp],
    )
    .await?;
    Ok(found.is_some_and(|r| r.get::<_, bool>(0)))
}

/// What the journal holds as applied for a live record.
struct Applied {
    /// The request fingerprint of the version applied (unknown when that version's event had none).
    hash: Option<String>,
    /// The version (`updated`) recorded as applied.
    version: Option<String>,
}

async fn applied_of(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
) -> Result<Option<Applied>, JournalError> {
    Ok(row(
        tx,
        "SELECT applied_hash, last_updated FROM record_state
         WHERE collection = $1 AND record_id = $2 AND deleted = 0",
        &[&collection.as_str(), &record_id],
    )
    .await?
    .map(|r| Applied {
        hash: r.get(0),
        version: r.get(1),
    }))
}

/// What a resync hint finds under its change key.
enum ResyncLook {
    /// Nothing (or not a resync hint): journaled as it is.
    Fresh,
    /// A job owes or covered that version, or it was settled as an echo of what is applied.
    Covered,
    /// That version was settled as an echo, but it does not ask for what is applied: the record needs a look.
    Stale,
}

async fn resync_look(tx: &Transaction<'_>, event: &NewEvent) -> Result<ResyncLook, JournalError> {
    if event.source != Source::Resync {
        return Ok(ResyncLook::Fresh);
    }
    let Some(seen) = row(
        tx,
        "SELECT status, job_id, fingerprint FROM events WHERE dedupe_key = $1",
        &[&event.dedupe_key],
    )
    .await?
    else {
        return Ok(ResyncLook::Fresh);
    };
    let (status, job_id, fp): (String, Option<i64>, Option<String>) = (seen.get(0), seen.get(1), seen.get(2));
    if status != "done" || job_id.is_some() {
        return Ok(ResyncLook::Covered);
    }
    let (collection, record_id) = (event.collection, event.record_id.as_str());
    // A running job's outcome decides; the next pass looks again.
    if let Some((JobState::Running | JobState::Queued | JobState::Failed, _, _)) =
        job_of(tx, collection, record_id).await?
    {
        return Ok(ResyncLook::Covered);
    }
    let applied = applied_of(tx, collection, record_id).await?.and_then(|a| a.hash);
    if fp.is_none() || fp != applied {
        return Ok(ResyncLook::Stale);
    }
    // The version asks for what is applied: recorded as applied, so later passes skip the record.
    exec(
        tx,
        "UPDATE record_state SET last_updated = $3
         WHERE collection = $1 AND record_id = $2 AND (last_updated IS NULL OR last_updated < $3)",
        &[&collection.as_str(), &record_id, &event.record_updated],
    )
    .await?;
    Ok(ResyncLook::Covered)
}

/// The request fingerprint a journaled event was stored with.
async fn event_fingerprint(tx: &Transaction<'_>, event_id: i64) -> Result<Option<String>, JournalError> {
    Ok(row(tx, "SELECT fingerprint FROM events WHERE id = $1", &[&event_id])
        .await?
        .and_then(|r| r.get(0)))
}

/// Makes sure the record's job will run for `event_id`, links the event to it and wakes the replicas at
/// commit (see
/// `journal/ingest.rs::enqueue`, which decides the same). The job row stays locked until the transaction
/// ends; a job row inserted meanwhile by another transaction (a replay) is found, not duplicated.
pub(super) async fn enqueue(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
    event_id: i64,
    now: i64,
    reset: bool,
) -> Result<(i64, bool), JournalError> {
    const EXISTING: &str = "SELECT id, state, dirty FROM jobs WHERE collection = $1 AND record_id = $2 FOR UPDATE";
    let mut existing = row(tx, EXISTING, &[&collection.as_str(), &record_id]).await?;
    if existing.is_none() {
        let inserted = row(
            tx,
            "INSERT INTO jobs (collection, record_id, state, attempts, next_attempt_at, coalesced,
                               first_pending_at, dirty, created_at, updated_at, last_event_id)
             VALUES ($1, $2, 'queued', 0, $3, 0, $3, 0, $3, $3, $4)
             ON CONFLICT (collection, record_id) DO NOTHING
             RETURNING id",
            &[&collection.as_str(), &record_id, &now, &event_id],
        )
        .await?;
        if let Some(inserted) = inserted {
            let job_id: i64 = inserted.get(0);
            link(tx, job_id, event_id).await?;
            return Ok((job_id, false));
        }
        existing = row(tx, EXISTING, &[&collection.as_str(), &record_id]).await?;
    }
    let existing =
        existing.ok_or_else(|| JournalError::Commit("a job row vanished while its event was queued".into()))?;
    let (job_id, dirty): (i64, i64) = (existing.get(0), existing.get(2));
    let coalesced = match column::<JobState>("jobs.state", existing.get(1))? {
        JobState::Queued => {
            exec(
                tx,
                "UPDATE jobs SET coalesced = coalesced + 1, last_event_id = $2, updated_at = $3,
                        attempts = CASE WHEN $4 THEN 0 ELSE attempts END,
                        next_attempt_at = LEAST(next_attempt_at, $3)
                 WHERE id = $1",
                &[&job_id, &event_id, &now, &reset],
            )
            .await?;
            true
        }
        JobState::Running => {
            exec(
                tx,
                "UPDATE jobs SET dirty = 1, dirty_since = COALESCE(dirty_since, $3),
                        coalesced = coalesced + dirty, last_event_id = $2, updated_at = $3
                 WHERE id = $1",
                &[&job_id, &event_id, &now],
            )
            .await?;
            dirty != 0
        }
        JobState::Succeeded | JobState::Failed | JobState::Waiting | JobState::Dead => {
            // A failed job still owes its earlier events, so it keeps their arrival time.
            exec(
                tx,
                "UPDATE jobs SET state = 'queued', attempts = 0, next_attempt_at = $3, coalesced = 0,
                        first_pending_at = COALESCE(first_pending_at, $3), last_event_id = $2,
                        updated_at = $3
                 WHERE id = $1",
                &[&job_id, &event_id, &now],
            )
            .await?;
            false
        }
    };
    link(tx, job_id, event_id).await?;
    Ok((job_id, coalesced))
}

/// One statement for both (a round trip less per event). Notifications repeated in one transaction are
/// delivered once.
async fn link(tx: &Transaction<'_>, job_id: i64, event_id: i64) -> Result<(), JournalError> {
    exec(
        tx,
        "WITH linked AS (UPDATE events SET job_id = $1 WHERE id = $2) SELECT pg_notify($3, '')",
        &[&job_id, &event_id, &CHANNEL],
    )
    .await?;
    Ok(())
}
