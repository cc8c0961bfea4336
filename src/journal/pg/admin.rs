//! The admin API's queries on PostgreSQL (see `journal/admin.rs`): the same filters, order and paging.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PgJournal;
use crate::events::Collection;
use crate::journal::admin::{EVENT_COLUMNS, FilterArg, JOB_COLUMNS, MAX_PAGE, event_conditions, page_limit, where_sql};
use crate::journal::types::column;
use crate::journal::{AttemptRow, EventFilter, EventRow, JobRow, JobState, JournalError};

pub(crate) fn event_row(r: &Row) -> Result<EventRow, JournalError> {
    let payload: String = r.try_get(9)?;
    Ok(EventRow {
        id: r.try_get(0)?,
        source: column("events.source", r.try_get(1)?)?,
        collection: column("collection", r.try_get(2)?)?,
        record_id: r.try_get(3)?,
        action: column("events.action", r.try_get(4)?)?,
        record_updated: r.try_get(5)?,
        received_at: r.try_get(6)?,
        dedupe_key: r.try_get(7)?,
        delivery_id: r.try_get(8)?,
        payload: serde_json::value::RawValue::from_string(payload)?,
        status: column("events.status", r.try_get(10)?)?,
        job_id: r.try_get(11)?,
    })
}

pub(crate) fn job_row(r: &Row) -> Result<JobRow, JournalError> {
    let attempts: i64 = r.try_get(4)?;
    let dirty: i64 = r.try_get(9)?;
    Ok(JobRow {
        id: r.try_get(0)?,
        collection: column("collection", r.try_get(1)?)?,
        record_id: r.try_get(2)?,
        state: column("jobs.state", r.try_get(3)?)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_at: r.try_get(5)?,
        last_error: r.try_get(6)?,
        coalesced: r.try_get(7)?,
        first_pending_at: r.try_get(8)?,
        dirty: dirty != 0,
        created_at: r.try_get(10)?,
        updated_at: r.try_get(11)?,
        last_event_id: r.try_get(12)?,
    })
}

pub(crate) fn attempt_row(r: &Row) -> Result<AttemptRow, JournalError> {
    let outcome: Option<String> = r.try_get(4)?;
    Ok(AttemptRow {
        id: r.try_get(0)?,
        job_id: r.try_get(1)?,
        started_at: r.try_get(2)?,
        finished_at: r.try_get(3)?,
        outcome: outcome.map(|o| column("job_attempts.outcome", o)).transpose()?,
        error: r.try_get(5)?,
        duration_ms: r.try_get(6)?,
    })
}

fn rows<T>(rows: &[Row], f: fn(&Row) -> Result<T, JournalError>) -> Result<Vec<T>, JournalError> {
    rows.iter().map(f).collect()
}

impl PgJournal {
    pub(crate) async fn list_events(
        &self,
        filter: EventFilter,
        cursor: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<EventRow>, Option<i64>), JournalError> {
        let limit = page_limit(limit);
        let conditions = event_conditions(filter, cursor);
        let where_sql = where_sql(&conditions, '$');
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = conditions
            .into_iter()
            .map(|(_, arg)| -> Box<dyn ToSql + Sync + Send> {
                match arg {
                    FilterArg::Text(s) => Box::new(s),
                    FilterArg::Int(n) => Box::new(n),
                }
            })
            .collect();
        args.push(Box::new(limit));
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events {where_sql} ORDER BY id DESC LIMIT ${}",
            args.len()
        );
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        let out = rows(&self.conn().await?.query(&sql, &params).await?, event_row)?;
        let next = if out.len() as i64 == limit {
            out.last().map(|e| e.id)
        } else {
            None
        };
        Ok((out, next))
    }

    pub(crate) async fn get_event(
        &self,
        id: i64,
    ) -> Result<Option<(EventRow, Option<JobRow>, Vec<AttemptRow>)>, JournalError> {
        let conn = self.conn().await?;
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
        let Some(r) = conn.query_opt(&sql, &[&id]).await? else {
            return Ok(None);
        };
        let event = event_row(&r)?;
        let Some(job_id) = event.job_id else {
            return Ok(Some((event, None, Vec::new())));
        };
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let job = match conn.query_opt(&sql, &[&job_id]).await? {
            Some(r) => job_row(&r)?,
            None => return Err(JournalError::JobNotFound(job_id)),
        };
        let attempts = conn
            .query(
                "SELECT id, job_id, started_at, finished_at, outcome, error, duration_ms
                 FROM job_attempts WHERE job_id = $1 ORDER BY id DESC LIMIT $2",
                &[&job_id, &(MAX_PAGE as i64)],
            )
            .await?;
        Ok(Some((event, Some(job), rows(&attempts, attempt_row)?)))
    }

    pub(crate) async fn list_jobs(&self, states: &[JobState], limit: usize) -> Result<Vec<JobRow>, JournalError> {
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let limit = page_limit(limit);
        let conn = self.conn().await?;
        let found = if states.is_empty() {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY updated_at DESC, id DESC LIMIT $1");
            conn.query(&sql, &[&limit]).await?
        } else {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = ANY($1) ORDER BY updated_at DESC, id DESC LIMIT $2"
            );
            conn.query(&sql, &[&states, &limit]).await?
        };
        rows(&found, job_row)
    }

    pub(crate) async fn record_jobs(
        &self,
        collection: Collection,
        record_id: &str,
        limit: usize,
    ) -> Result<(Vec<JobRow>, Vec<AttemptRow>), JournalError> {
        let limit = page_limit(limit);
        let conn = self.conn().await?;
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE collection = $1 AND record_id = $2 ORDER BY id DESC");
        let jobs = conn.query(&sql, &[&collection.as_str(), &record_id]).await?;
        let attempts = conn
            .query(
                "SELECT a.id, a.job_id, a.started_at, a.finished_at, a.outcome, a.error, a.duration_ms
                 FROM job_attempts a JOIN jobs j ON j.id = a.job_id
                 WHERE j.collection = $1 AND j.record_id = $2 ORDER BY a.id DESC LIMIT $3",
                &[&collection.as_str(), &record_id, &limit],
            )
            .await?;
        Ok((rows(&jobs, job_row)?, rows(&attempts, attempt_row)?))
    }

    pub(crate) async fn jobs_by_id(&self, ids: &[i64]) -> Result<Vec<JobRow>, JournalError> {
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
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1) ORDER BY id");
        rows(&self.conn().await?.query(&sql, &[&ids]).await?, job_row)
    }

    pub(crate) async fn job_counts(&self) -> Result<BTreeMap<JobState, i64>, JournalError> {
        let mut counts: BTreeMap<JobState, i64> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        let found = self
            .conn()
            .await?
            .query("SELECT state, COUNT(*) FROM jobs GROUP BY state", &[])
            .await?;
        for r in found {
            counts.insert(column::<JobState>("jobs.state", r.try_get(0)?)?, r.try_get(1)?);
        }
        Ok(counts)
    }
}
