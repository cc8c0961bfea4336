//! Deleted instances in their retention period on PostgreSQL (see `src/journal/deletions.rs`). Every
//! state change is one statement, or a transaction that locks the row it decides on, so replicas that
//! begin, purge or end the same retention at once leave the row SQLite would.

use futures_util::{TryStreamExt as _, pin_mut};
use tokio_postgres::Row;

use super::PgJournal;
use crate::journal::types::column;
use crate::journal::{Deletion, DeletionState, JournalError, now_ms};

const COLUMNS: &str =
    "record_id, tenant_id, incarnation, coolify_uuid, requested_at, expires_at, state, closed, record_gone";

fn deletion(r: &Row) -> Result<Deletion, JournalError> {
    Ok(Deletion {
        record_id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        incarnation: r.try_get(2)?,
        coolify_uuid: r.try_get(3)?,
        requested_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        state: column("deletions.state", r.try_get(6)?)?,
        closed: r.try_get::<_, i64>(7)? != 0,
        record_gone: r.try_get::<_, i64>(8)? != 0,
    })
}

impl PgJournal {
    pub(crate) async fn deletion(&self, record_id: &str) -> Result<Option<Deletion>, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {COLUMNS} FROM deletions WHERE record_id = $1"))
            .await?;
        client
            .query_opt(&stmt, &[&record_id])
            .await?
            .as_ref()
            .map(deletion)
            .transpose()
    }

    /// The upsert writes only over a row of another incarnation; either way it locks the row, so the row
    /// read after it in the same transaction is the one in force.
    pub(crate) async fn begin_deletion(&self, d: Deletion) -> Result<Deletion, JournalError> {
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        let upsert = tx
            .prepare_cached(&format!(
                "INSERT INTO deletions (record_id, tenant_id, incarnation, coolify_uuid, requested_at, expires_at,
                    state, closed, record_gone, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (record_id) DO UPDATE SET tenant_id = excluded.tenant_id,
                    incarnation = excluded.incarnation, coolify_uuid = excluded.coolify_uuid,
                    requested_at = excluded.requested_at, expires_at = excluded.expires_at,
                    state = excluded.state, closed = excluded.closed, record_gone = excluded.record_gone,
                    updated_at = excluded.updated_at
                 WHERE deletions.incarnation <> excluded.incarnation
                 RETURNING {COLUMNS}"
            ))
            .await?;
        let written = tx
            .query_opt(
                &upsert,
                &[
                    &d.record_id,
                    &d.tenant_id,
                    &d.incarnation,
                    &d.coolify_uuid,
                    &d.requested_at,
                    &d.expires_at,
                    &d.state.as_str(),
                    &i64::from(d.closed),
                    &i64::from(d.record_gone),
                    &now_ms(),
                ],
            )
            .await?;
        let in_force = match written {
            Some(r) => deletion(&r)?,
            None => {
                let kept = tx
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM deletions WHERE record_id = $1"))
                    .await?;
                deletion(&tx.query_one(&kept, &[&d.record_id]).await?)?
            }
        };
        tx.commit().await?;
        Ok(in_force)
    }

    pub(crate) async fn update_deletion(
        &self,
        record_id: &str,
        incarnation: &str,
        state: Option<DeletionState>,
        closed: Option<bool>,
        record_gone: Option<bool>,
    ) -> Result<bool, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE deletions SET state = COALESCE($3, state), closed = COALESCE($4, closed),
                    record_gone = COALESCE($5, record_gone), updated_at = $6
                 WHERE record_id = $1 AND incarnation = $2",
            )
            .await?;
        let n = client
            .execute(
                &stmt,
                &[
                    &record_id,
                    &incarnation,
                    &state.map(DeletionState::as_str),
                    &closed.map(i64::from),
                    &record_gone.map(i64::from),
                    &now_ms(),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    pub(crate) async fn purge_deletion(&self, record_id: &str) -> Result<Option<Deletion>, JournalError> {
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        let select = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM deletions WHERE record_id = $1 FOR UPDATE"
            ))
            .await?;
        let kept = tx
            .query_opt(&select, &[&record_id])
            .await?
            .as_ref()
            .map(deletion)
            .transpose()?;
        if kept.as_ref().is_some_and(|k| k.state == DeletionState::Retained) {
            let purge = tx
                .prepare_cached(
                    "UPDATE deletions SET state = 'purging', expires_at = LEAST(expires_at, $2), updated_at = $2
                     WHERE record_id = $1",
                )
                .await?;
            tx.execute(&purge, &[&record_id, &now_ms()]).await?;
        }
        tx.commit().await?;
        Ok(kept)
    }

    pub(crate) async fn end_deletion(&self, record_id: &str, incarnation: &str) -> Result<bool, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached("DELETE FROM deletions WHERE record_id = $1 AND incarnation = $2 AND state = 'retained'")
            .await?;
        Ok(client.execute(&stmt, &[&record_id, &incarnation]).await? > 0)
    }

    pub(crate) async fn due_deletions(&self, now: i64, limit: usize) -> Result<Vec<Deletion>, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM deletions WHERE state IN ('retained', 'purging') AND expires_at <= $1
                 ORDER BY expires_at LIMIT $2"
            ))
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        client
            .query(&stmt, &[&now, &limit])
            .await?
            .iter()
            .map(deletion)
            .collect()
    }

    pub(crate) async fn retained_of_tenant(&self, tenant_id: &str) -> Result<u64, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached("SELECT COUNT(*) FROM deletions WHERE tenant_id = $1 AND state != 'destroyed'")
            .await?;
        let n: i64 = client.query_one(&stmt, &[&tenant_id]).await?.try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Newest first along the record's index, parsed here: like SQLite's `json_valid`, a payload that is
    /// not JSON is passed over rather than failing the query (a cast to jsonb would).
    pub(crate) async fn last_known_tenant(&self, record_id: &str) -> Result<Option<String>, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "SELECT payload FROM events WHERE collection = 'bot_instances' AND record_id = $1 ORDER BY id DESC",
            )
            .await?;
        let rows = client.query_raw(&stmt, [record_id]).await?;
        pin_mut!(rows);
        while let Some(row) = rows.try_next().await? {
            let payload: String = row.try_get(0)?;
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&payload) else {
                continue;
            };
            if let Some(tenant) = value.get("tenant").and_then(|t| t.as_str()).filter(|t| !t.is_empty()) {
                return Ok(Some(tenant.to_string()));
            }
        }
        Ok(None)
    }
}
