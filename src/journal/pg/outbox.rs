//! The outbox on PostgreSQL (see `journal/outbox.rs`). Rows are keyed by their PocketBase id, so replicas
//! putting the same row keep one; text is ordered bytewise (`COLLATE "C"`), as SQLite orders it.

use tokio_postgres::Row;

use super::PgJournal;
use crate::events::Collection;
use crate::journal::outbox::COLUMNS;
use crate::journal::types::column;
use crate::journal::{JournalError, OutboxEntry};

fn entry(r: &Row) -> Result<OutboxEntry, JournalError> {
    Ok(OutboxEntry {
        id: r.try_get(0)?,
        collection: column("outbox.collection", r.try_get(1)?)?,
        record_id: r.try_get(2)?,
        row: r.try_get(3)?,
        applied_hash: r.try_get(4)?,
        service_uuid: r.try_get(5)?,
        created_at: r.try_get(6)?,
    })
}

impl PgJournal {
    pub(crate) async fn put_outbox(&self, e: OutboxEntry) -> Result<(), JournalError> {
        self.conn()
            .await?
            .execute(
                &format!(
                    "INSERT INTO outbox ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING"
                ),
                &[
                    &e.id,
                    &e.collection.as_str(),
                    &e.record_id,
                    &e.row,
                    &e.applied_hash,
                    &e.service_uuid,
                    &e.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn outbox_for(
        &self,
        collection: Collection,
        record_id: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, JournalError> {
        let rows = self
            .conn()
            .await?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM outbox WHERE collection = $1 AND record_id = $2
                     ORDER BY created_at, id COLLATE \"C\" LIMIT $3"
                ),
                &[
                    &collection.as_str(),
                    &record_id,
                    &i64::try_from(limit).unwrap_or(i64::MAX),
                ],
            )
            .await?;
        rows.iter().map(entry).collect()
    }

    pub(crate) async fn drop_outbox(&self, ids: Vec<String>) -> Result<(), JournalError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.conn()
            .await?
            .execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids])
            .await?;
        Ok(())
    }

    pub(crate) async fn replace_outbox_row(&self, id: &str, row: String) -> Result<(), JournalError> {
        self.conn()
            .await?
            .execute("UPDATE outbox SET row = $2 WHERE id = $1", &[&id, &row])
            .await?;
        Ok(())
    }

    pub(crate) async fn idle_outbox_records(
        &self,
        older_than: i64,
        limit: usize,
    ) -> Result<Vec<(Collection, String)>, JournalError> {
        let rows = self
            .conn()
            .await?
            .query(
                "SELECT DISTINCT o.collection COLLATE \"C\" AS c, o.record_id COLLATE \"C\" AS r FROM outbox o
                 LEFT JOIN jobs j ON j.collection = o.collection AND j.record_id = o.record_id
                 WHERE o.created_at < $1 AND (j.state IS NULL OR j.state NOT IN ('queued', 'running', 'failed'))
                 ORDER BY c, r LIMIT $2",
                &[&older_than, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((column("outbox.collection", r.try_get(0)?)?, r.try_get(1)?)))
            .collect()
    }
}
