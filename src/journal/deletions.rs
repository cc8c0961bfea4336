//! Deleted instances in their retention period: one durable row per instance id, kept after the
//! PocketBase record is gone, naming the incarnation it belongs to (so a later record reusing the id
//! inherits nothing), its Coolify service and when it expires. A destroyed row stays as the answer to a
//! late restore or a second purge until a later record with the id is deleted in its turn.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::types::column;
use super::{Journal, JournalError, now_ms, write_tx};
use crate::text::text_enum;

text_enum!(
    /// Where a deleted instance is in its retention.
    pub enum DeletionState {
        /// Stopped, its ingress removed, its service and volumes kept until `expires_at`.
        Retained => "retained",
        /// An operator asked to destroy it at once; its job is doing so.
        Purging => "purging",
        /// Its service and volumes are gone.
        Destroyed => "destroyed",
    }
);

/// One deleted instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deletion {
    pub record_id: String,
    pub tenant_id: Option<String>,
    pub incarnation: String,
    pub coolify_uuid: Option<String>,
    pub requested_at: i64,
    pub expires_at: i64,
    pub state: DeletionState,
    /// Its service was stopped and its domain and router key withdrawn.
    pub closed: bool,
    /// Its PocketBase record was deleted (rather than marked with `deletion_requested_at`).
    pub record_gone: bool,
}

const COLUMNS: &str =
    "record_id, tenant_id, incarnation, coolify_uuid, requested_at, expires_at, state, closed, record_gone";

fn deletion(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Deletion, JournalError>> {
    let state: String = r.get(6)?;
    let (record_id, tenant_id, incarnation, coolify_uuid) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    let (requested_at, expires_at, closed, record_gone) = (r.get(4)?, r.get(5)?, r.get(7)?, r.get(8)?);
    Ok(column("deletions.state", state).map(|state| Deletion {
        record_id,
        tenant_id,
        incarnation,
        coolify_uuid,
        requested_at,
        expires_at,
        state,
        closed,
        record_gone,
    }))
}

impl Journal {
    /// The deletion row of an instance id, whatever incarnation it belongs to.
    pub async fn deletion(&self, record_id: &str) -> Result<Option<Deletion>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.deletion(record_id)).await;
        }
        let id = record_id.to_owned();
        self.look_up(move |conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM deletions WHERE record_id = ?1"))?
                .query_row([id], deletion)
                .optional()?
                .transpose()
        })
        .await
    }

    /// Starts the retention of `d`'s incarnation unless it has begun already, and returns the row in force.
    /// A row of an earlier incarnation with this id is replaced: that record is gone and its service was
    /// retired when the id came back.
    pub async fn begin_deletion(&self, d: Deletion) -> Result<Deletion, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.begin_deletion(d)).await;
        }
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let kept = tx
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM deletions WHERE record_id = ?1"))?
                    .query_row([&d.record_id], deletion)
                    .optional()?
                    .transpose()?;
                if let Some(kept) = kept
                    && kept.incarnation == d.incarnation
                {
                    return Ok(kept);
                }
                tx.prepare_cached(
                    "INSERT INTO deletions (record_id, tenant_id, incarnation, coolify_uuid, requested_at, expires_at,
                        state, closed, record_gone, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (record_id) DO UPDATE SET tenant_id = excluded.tenant_id,
                        incarnation = excluded.incarnation, coolify_uuid = excluded.coolify_uuid,
                        requested_at = excluded.requested_at, expires_at = excluded.expires_at,
                        state = excluded.state, closed = excluded.closed, record_gone = excluded.record_gone,
                        updated_at = excluded.updated_at",
                )?
                .execute(params![
                    d.record_id,
                    d.tenant_id,
                    d.incarnation,
                    d.coolify_uuid,
                    d.requested_at,
                    d.expires_at,
                    d.state.as_str(),
                    d.closed,
                    d.record_gone,
                    now_ms()
                ])?;
                Ok(d)
            })
        })
        .await
    }

    /// Moves a row of `incarnation` on; `state` only where given. Returns whether a row was changed.
    pub async fn update_deletion(
        &self,
        record_id: &str,
        incarnation: &str,
        state: Option<DeletionState>,
        closed: Option<bool>,
        record_gone: Option<bool>,
    ) -> Result<bool, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.update_deletion(record_id, incarnation, state, closed, record_gone)).await;
        }
        let (id, life) = (record_id.to_owned(), incarnation.to_owned());
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let n = tx
                    .prepare_cached(
                        "UPDATE deletions SET state = COALESCE(?3, state), closed = COALESCE(?4, closed),
                            record_gone = COALESCE(?5, record_gone), updated_at = ?6
                         WHERE record_id = ?1 AND incarnation = ?2",
                    )?
                    .execute(params![
                        id,
                        life,
                        state.map(DeletionState::as_str),
                        closed,
                        record_gone,
                        now_ms()
                    ])?;
                Ok(n > 0)
            })
        })
        .await
    }

    /// Asks for the row's destruction at once, unless it is destroyed or being purged already: returns
    /// the row as it was, so the caller can tell which.
    pub async fn purge_deletion(&self, record_id: &str) -> Result<Option<Deletion>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.purge_deletion(record_id)).await;
        }
        let id = record_id.to_owned();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let kept = tx
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM deletions WHERE record_id = ?1"))?
                    .query_row([&id], deletion)
                    .optional()?
                    .transpose()?;
                if kept.as_ref().is_some_and(|k| k.state == DeletionState::Retained) {
                    tx.prepare_cached(
                        "UPDATE deletions SET state = 'purging', expires_at = MIN(expires_at, ?2), updated_at = ?2
                         WHERE record_id = ?1",
                    )?
                    .execute(params![id, now_ms()])?;
                }
                Ok(kept)
            })
        })
        .await
    }

    /// Ends a retained row's retention without destroying anything (the instance was restored); false
    /// when no retained row of that incarnation was there.
    pub async fn end_deletion(&self, record_id: &str, incarnation: &str) -> Result<bool, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.end_deletion(record_id, incarnation)).await;
        }
        let (id, life) = (record_id.to_owned(), incarnation.to_owned());
        self.write(move |conn| {
            write_tx(conn, |tx| {
                Ok(tx
                    .prepare_cached(
                        "DELETE FROM deletions WHERE record_id = ?1 AND incarnation = ?2 AND state = 'retained'",
                    )?
                    .execute(params![id, life])?
                    > 0)
            })
        })
        .await
    }

    /// Rows whose retention has run out (or whose purge was asked), oldest first.
    pub async fn due_deletions(&self, now: i64, limit: usize) -> Result<Vec<Deletion>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.due_deletions(now, limit)).await;
        }
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM deletions WHERE state IN ('retained', 'purging') AND expires_at <= ?1
                 ORDER BY expires_at LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![now, limit as i64], deletion)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(r??);
            }
            Ok(out)
        })
        .await
    }

    /// How many of a tenant's deleted instances still hold a service.
    pub async fn retained_of_tenant(&self, tenant_id: &str) -> Result<u64, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.retained_of_tenant(tenant_id)).await;
        }
        let id = tenant_id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT COUNT(*) FROM deletions WHERE tenant_id = ?1 AND state != 'destroyed'")?
                .query_row([id], |r| r.get::<_, i64>(0))
                .map(|n| u64::try_from(n).unwrap_or(0))?)
        })
        .await
    }

    /// The tenant named by the newest journaled copy of an instance record (a delete event carries the
    /// record as it was), for an instance whose record is gone.
    pub async fn last_known_tenant(&self, record_id: &str) -> Result<Option<String>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.last_known_tenant(record_id)).await;
        }
        let id = record_id.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT json_extract(payload, '$.tenant') FROM events
                     WHERE collection = 'bot_instances' AND record_id = ?1
                       AND json_valid(payload) AND json_extract(payload, '$.tenant') != ''
                     ORDER BY id DESC LIMIT 1",
                )?
                .query_row([id], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten())
        })
        .await
    }
}
