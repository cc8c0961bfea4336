//! Queries and replays for the admin API.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Row, Transaction, params, params_from_iter};

use super::ingest::enqueue;
use super::types::column;
use super::{
    AttemptRow, EventFilter, EventRow, EventStatus, JobRow, JobState, Journal, JournalError, now_ms, write_tx,
};
use crate::events::{Action, Collection, Source};

/// Most rows one admin query returns.
pub const MAX_PAGE: usize = 1000;

pub(super) const EVENT_COLUMNS: &str = "id, source, collection, record_id, action, record_updated, received_at, \
                             dedupe_key, delivery_id, payload, status, job_id";
pub(super) const JOB_COLUMNS: &str = "id, collection, record_id, state, attempts, next_attempt_at, last_error, \
                           coalesced, first_pending_at, dirty, created_at, updated_at, last_event_id";

fn event_row(r: &Row<'_>) -> Result<EventRow, JournalError> {
    let payload: String = r.get(9)?;
    Ok(EventRow {
        id: r.get(0)?,
        source: column("events.source", r.get(1)?)?,
        collection: column("collection", r.get(2)?)?,
        record_id: r.get(3)?,
        action: column("events.action", r.get(4)?)?,
        record_updated: r.get(5)?,
        received_at: r.get(6)?,
        dedupe_key: r.get(7)?,
        delivery_id: r.get(8)?,
        payload: serde_json::value::RawValue::from_string(payload)?,
        status: column("events.status", r.get(10)?)?,
        job_id: r.get(11)?,
    })
}

fn job_row(r: &Row<'_>) -> Result<JobRow, JournalError> {
    let attempts: i64 = r.get(4)?;
    Ok(JobRow {
        id: r.get(0)?,
        collection: column("collection", r.get(1)?)?,
        record_id: r.get(2)?,
        state: column("jobs.state", r.get(3)?)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: r.get(5)?,
        last_error: r.get(6)?,
        coalesced: r.get(7)?,
        first_pending_at: r.get(8)?,
        dirty: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        last_event_id: r.get(12)?,
    })
}

fn attempt_row(r: &Row<'_>) -> Result<AttemptRow, JournalError> {
    let outcome: Option<String> = r.get(4)?;
    Ok(AttemptRow {
        id: r.get(0)?,
        job_id: r.get(1)?,
        started_at: r.get(2)?,
        finished_at: r.get(3)?,
        outcome: outcome.map(|o| column("job_attempts.outcome", o)).transpose()?,
        error: r.get(5)?,
        duration_ms: r.get(6)?,
    })
}

pub(super) fn page_limit(limit: usize) -> i64 {
    limit.clamp(1, MAX_PAGE) as i64
}

/// Requeues each record's job with attempts reset, recording a `replay` event so the journal shows why.
/// A value an event filter's condition compares with.
pub(super) enum FilterArg {
    Text(String),
    Int(i64),
}

/// The conditions of an event list (`column operator`, value), in one order for both backends: each
/// numbers its placeholders its own way ([`where_sql`]).
pub(super) fn event_conditions(filter: EventFilter, cursor: Option<i64>) -> Vec<(&'static str, FilterArg)> {
    let text = |s: &str| FilterArg::Text(s.to_string());
    [
        filter.status.map(|s| ("status =", text(s.as_str()))),
        filter.source.map(|s| ("source =", text(s.as_str()))),
        filter.collection.map(|c| ("collection =", text(c.as_str()))),
        filter.record_id.map(|id| ("record_id =", FilterArg::Text(id))),
        filter.since_ms.map(|ms| ("received_at >=", FilterArg::Int(ms))),
        cursor.map(|c| ("id <", FilterArg::Int(c))),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `WHERE` with the conditions joined, the n-th compared with placeholder `{sigil}n`; empty for none.
pub(super) fn where_sql(conditions: &[(&'static str, FilterArg)], sigil: char) -> String {
    if conditions.is_empty() {
        return String::new();
    }
    let joined: Vec<String> = conditions
        .iter()
        .enumerate()
        .map(|(i, (condition, _))| format!("{condition} {sigil}{}", i + 1))
        .collect();
    format!("WHERE {}", joined.join(" AND "))
}

fn replay_records(tx: &Transaction<'_>, records: BTreeSet<(String, String)>, now: i64) -> Result<usize, JournalError> {
    for (collection, record_id) in &records {
        let collection = column::<Collection>("collection", collection.clone())?;
        let last_action: Option<String> = tx
            .prepare_cached(
                "SELECT action FROM events WHERE collection = ?1 AND record_id = ?2 ORDER BY id DESC LIMIT 1",
            )?
            .query_row(params![collection.as_str(), record_id], |r| r.get(0))
            .optional()?;
        let action = last_action
            .map(|a| column::<Action>("events.action", a))
            .transpose()?
            .unwrap_or(Action::Update);
        let dedupe_key = format!(
            "replay:{}:{}:{}:{:016x}",
            collection.as_str(),
            record_id,
            now,
            rand::random::<u64>()
        );
        tx.prepare_cached(
            "INSERT INTO events (source, collection, record_id, action, received_at, dedupe_key, payload, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, '{\"replay\":true}', 'queued')",
        )?
        .execute(params![
            Source::Replay.as_str(),
            collection.as_str(),
            record_id,
            action.as_str(),
            now,
            dedupe_key
        ])?;
        let event_id = tx.last_insert_rowid();
        enqueue(tx, collection, record_id, event_id, now, true)?;
    }
    Ok(records.len())
}

fn record_keys(tx: &Transaction<'_>, sql: &str, args: &[Value]) -> Result<BTreeSet<(String, String)>, JournalError> {
    let mut stmt = tx.prepare(sql)?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The SQLite query of [`Journal::list_events`] and its arguments.
pub(super) fn list_events_sql(filter: EventFilter, cursor: Option<i64>, limit: i64) -> (String, Vec<Value>) {
    // Queued and failed events are few and have partial indexes of their own, which the planner takes only
    // for a status it reads in the SQL: with the status a parameter, it walked the whole journal. Queued
    // events have no index by id, so theirs is named.
    let (table, status) = match filter.status {
        Some(EventStatus::Queued) => ("events INDEXED BY events_queued", " AND status = 'queued'"),
        Some(EventStatus::Failed) => ("events", " AND status = 'failed'"),
        Some(EventStatus::Done) | None => ("events", ""),
    };
    let conditions = event_conditions(filter, cursor);
    let where_sql = where_sql(&conditions, '?');
    let mut args: Vec<Value> = conditions
        .into_iter()
        .map(|(_, arg)| match arg {
            FilterArg::Text(s) => Value::Text(s),
            FilterArg::Int(n) => Value::Integer(n),
        })
        .collect();
    args.push(Value::Integer(limit));
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM {table} {where_sql}{status} ORDER BY id DESC LIMIT ?{}",
        args.len()
    );
    (sql, args)
}

impl Journal {
    /// Events matching `filter`, newest first, starting below event id `cursor`; the second value is the
    /// cursor for the next page (None when this page is the last).
    pub async fn list_events(
        &self,
        filter: EventFilter,
        cursor: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<EventRow>, Option<i64>), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.list_events(filter, cursor, limit)).await;
        }
        let limit = page_limit(limit);
        self.read(move |conn| {
            let (sql, args) = list_events_sql(filter, cursor, limit);
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(args.iter()))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(event_row(r)?);
            }
            let next = if out.len() as i64 == limit {
                out.last().map(|e| e.id)
            } else {
                None
            };
            Ok((out, next))
        })
        .await
    }

    /// One event with its record's job and that job's attempts (newest first). An event settled without a
    /// job (an echo of the bridge's own write) has neither.
    pub async fn get_event(
        &self,
        id: i64,
    ) -> Result<Option<(EventRow, Option<JobRow>, Vec<AttemptRow>)>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.get_event(id)).await;
        }
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"))?;
            let mut rows = stmt.query([id])?;
            let Some(r) = rows.next()? else { return Ok(None) };
            let event = event_row(r)?;
            let Some(job_id) = event.job_id else {
                return Ok(Some((event, None, Vec::new())));
            };
            let mut stmt = conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?;
            let mut rows = stmt.query([job_id])?;
            let job = match rows.next()? {
                Some(r) => job_row(r)?,
                None => return Err(JournalError::JobNotFound(job_id)),
            };
            let mut stmt = conn.prepare_cached(
                "SELECT id, job_id, started_at, finished_at, outcome, error, duration_ms
                 FROM job_attempts WHERE job_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let mut rows = stmt.query(params![job_id, MAX_PAGE as i64])?;
            let mut attempts = Vec::new();
            while let Some(r) = rows.next()? {
                attempts.push(attempt_row(r)?);
            }
            Ok(Some((event, Some(job), attempts)))
        })
        .await
    }

    /// Jobs in any of `states` (all jobs when empty), most recently changed first.
    pub async fn list_jobs(&self, states: &[JobState], limit: usize) -> Result<Vec<JobRow>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.list_jobs(states, limit)).await;
        }
        let states: Vec<Value> = states.iter().map(|s| Value::Text(s.as_str().into())).collect();
        let limit = page_limit(limit);
        self.read(move |conn| {
            let where_sql = if states.is_empty() {
                String::new()
            } else {
                let marks: Vec<String> = (1..=states.len()).map(|i| format!("?{i}")).collect();
                format!("WHERE state IN ({})", marks.join(", "))
            };
            let sql =
                format!("SELECT {JOB_COLUMNS} FROM jobs {where_sql} ORDER BY updated_at DESC, id DESC LIMIT {limit}");
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(states.iter()))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(job_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    /// A record's jobs and their latest `limit` attempts, newest first: its timeline on the operator page.
    pub async fn record_jobs(
        &self,
        collection: Collection,
        record_id: &str,
        limit: usize,
    ) -> Result<(Vec<JobRow>, Vec<AttemptRow>), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.record_jobs(collection, record_id, limit)).await;
        }
        let record_id = record_id.to_owned();
        let limit = page_limit(limit);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE collection = ?1 AND record_id = ?2 ORDER BY id DESC"
            ))?;
            let mut rows = stmt.query(params![collection.as_str(), record_id])?;
            let mut jobs = Vec::new();
            while let Some(r) = rows.next()? {
                jobs.push(job_row(r)?);
            }
            let mut stmt = conn.prepare_cached(
                "SELECT a.id, a.job_id, a.started_at, a.finished_at, a.outcome, a.error, a.duration_ms
                 FROM job_attempts a JOIN jobs j ON j.id = a.job_id
                 WHERE j.collection = ?1 AND j.record_id = ?2 ORDER BY a.id DESC LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![collection.as_str(), record_id, limit])?;
            let mut attempts = Vec::new();
            while let Some(r) = rows.next()? {
                attempts.push(attempt_row(r)?);
            }
            Ok((jobs, attempts))
        })
        .await
    }

    /// The jobs with these ids (those that exist), for the reasons of failed events.
    pub async fn jobs_by_id(&self, ids: &[i64]) -> Result<Vec<JobRow>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.jobs_by_id(ids)).await;
        }
        let ids: Vec<i64> = ids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .take(MAX_PAGE)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |conn| {
            let marks: Vec<String> = (1..=ids.len()).map(|i| format!("?{i}")).collect();
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({})", marks.join(", "));
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(ids.iter()))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(job_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    /// Number of jobs in every state (zero included).
    pub async fn job_counts(&self) -> Result<BTreeMap<JobState, i64>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.job_counts()).await;
        }
        self.read(|conn| {
            let mut counts: BTreeMap<JobState, i64> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
            let mut stmt = conn.prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                counts.insert(column::<JobState>("jobs.state", r.get(0)?)?, r.get(1)?);
            }
            Ok(counts)
        })
        .await
    }

    async fn replay(&self, sql: &'static str, args: Vec<Value>) -> Result<usize, JournalError> {
        self.write(move |conn| write_tx(conn, |tx| replay_records(tx, record_keys(tx, sql, &args)?, now_ms())))
            .await
    }

    /// Requeues the records of the given events; returns the number of jobs enqueued.
    pub async fn replay_events(&self, ids: &[i64]) -> Result<usize, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.replay_events(ids)).await;
        }
        let ids: Vec<i64> = ids.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        let ids_json = serde_json::to_string(&ids)?;
        self.replay(
            "SELECT DISTINCT collection, record_id FROM events WHERE id IN (SELECT value FROM json_each(?1))",
            vec![Value::Text(ids_json)],
        )
        .await
    }

    /// Requeues one record, whether or not it was seen before.
    pub async fn replay_record(&self, collection: Collection, record_id: &str) -> Result<usize, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.replay_record(collection, record_id)).await;
        }
        self.replay(
            "SELECT ?1, ?2",
            vec![
                Value::Text(collection.as_str().into()),
                Value::Text(record_id.to_owned()),
            ],
        )
        .await
    }

    /// Requeues every record with an event received at or after `since_ms`.
    pub async fn replay_since(&self, since_ms: i64) -> Result<usize, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.replay_since(since_ms)).await;
        }
        self.replay(
            "SELECT DISTINCT collection, record_id FROM events WHERE received_at >= ?1",
            vec![Value::Integer(since_ms)],
        )
        .await
    }

    /// Requeues every record of `collection` that was applied and not deleted.
    pub async fn replay_live(&self, collection: Collection) -> Result<usize, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.replay_live(collection)).await;
        }
        self.replay(
            "SELECT collection, record_id FROM record_state WHERE collection = ?1 AND deleted = 0",
            vec![Value::Text(collection.as_str().into())],
        )
        .await
    }

    /// Requeues every job that is failed, parked or dead.
    pub async fn replay_failed(&self) -> Result<usize, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.replay_failed()).await;
        }
        self.replay(
            "SELECT collection, record_id FROM jobs WHERE state IN ('failed', 'waiting', 'dead')",
            vec![],
        )
        .await
    }
}
