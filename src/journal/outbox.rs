//! The outbox: `deploy_logs` rows kept until PocketBase has confirmed them.
//!
//! A row enters the outbox, with the id it will have in PocketBase, before it is first sent; it leaves
//! once PocketBase has stored it (or says a row with that id already exists). Every re-send carries the
//! same id, so a row whose first send was lost with its answer is never written twice.

use rusqlite::params;
use serde::Serialize;

use super::types::column;
use super::{Journal, JournalError, now_ms, write_tx};
use crate::events::Collection;

/// One pending row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    /// The row's PocketBase id.
    pub id: String,
    pub collection: Collection,
    pub record_id: String,
    /// The row's JSON body, without its id.
    pub row: String,
    /// For an instance action that succeeded: the spec it applied in Coolify. Its write-back is pending
    /// too, until the row is confirmed (they are written together).
    pub applied_hash: Option<String>,
    /// The service that spec was applied to.
    pub service_uuid: Option<String>,
    pub created_at: i64,
}

impl OutboxEntry {
    pub fn new(collection: Collection, record_id: &str, id: String, row: String) -> OutboxEntry {
        OutboxEntry {
            id,
            collection,
            record_id: record_id.to_owned(),
            row,
            applied_hash: None,
            service_uuid: None,
            created_at: now_ms(),
        }
    }
}

pub(super) const COLUMNS: &str = "id, collection, record_id, row, applied_hash, service_uuid, created_at";

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<OutboxEntry, JournalError>> {
    let (id, collection, record_id, row) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    let (applied_hash, service_uuid, created_at) = (r.get(4)?, r.get(5)?, r.get(6)?);
    Ok(column("outbox.collection", collection).map(|collection| OutboxEntry {
        id,
        collection,
        record_id,
        row,
        applied_hash,
        service_uuid,
        created_at,
    }))
}

impl Journal {
    /// Keeps a row until it is confirmed; an entry with the same id is kept as it was.
    pub async fn put_outbox(&self, e: OutboxEntry) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.put_outbox(e)).await;
        }
        self.write(move |conn| {
            write_tx(conn, |tx| {
                tx.prepare_cached(&format!(
                    "INSERT INTO outbox ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING"
                ))?
                .execute(params![
                    e.id,
                    e.collection.as_str(),
                    e.record_id,
                    e.row,
                    e.applied_hash,
                    e.service_uuid,
                    e.created_at
                ])?;
                Ok(())
            })
        })
        .await
    }

    /// The record's pending rows, oldest first (at most `limit`).
    pub async fn outbox_for(
        &self,
        collection: Collection,
        record_id: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.outbox_for(collection, record_id, limit)).await;
        }
        let record_id = record_id.to_owned();
        self.look_up(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE collection = ?1 AND record_id = ?2
                 ORDER BY created_at, id LIMIT ?3"
            ))?;
            let rows = stmt.query_map(
                params![collection.as_str(), record_id, i64::try_from(limit).unwrap_or(i64::MAX)],
                entry,
            )?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            Ok(out)
        })
        .await
    }

    /// Forgets rows PocketBase has confirmed.
    pub async fn drop_outbox(&self, ids: Vec<String>) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.drop_outbox(ids)).await;
        }
        if ids.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?;
                for id in &ids {
                    stmt.execute([id])?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Replaces a pending row's body (e.g. without a relation to a record that is gone).
    pub async fn replace_outbox_row(&self, id: &str, row: String) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.replace_outbox_row(id, row)).await;
        }
        let id = id.to_owned();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                tx.prepare_cached("UPDATE outbox SET row = ?2 WHERE id = ?1")?
                    .execute(params![id, row])?;
                Ok(())
            })
        })
        .await
    }

    /// Records with rows pending since before `older_than` (ms) whose job will not run again on its own
    /// (no job, or one that succeeded, waits for a change, or is dead). Their rows would otherwise wait
    /// for the record's next change.
    pub async fn idle_outbox_records(
        &self,
        older_than: i64,
        limit: usize,
    ) -> Result<Vec<(Collection, String)>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.idle_outbox_records(older_than, limit)).await;
        }
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT o.collection, o.record_id FROM outbox o
                 LEFT JOIN jobs j ON j.collection = o.collection AND j.record_id = o.record_id
                 WHERE o.created_at < ?1 AND (j.state IS NULL OR j.state NOT IN ('queued', 'running', 'failed'))
                 ORDER BY o.collection, o.record_id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![older_than, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (c, id) = row?;
                out.push((column("outbox.collection", c)?, id));
            }
            Ok(out)
        })
        .await
    }
}
