//! Replays for the admin API on PostgreSQL (see `journal/admin.rs`): each record's job is queued again
//! with its attempts reset, behind a `replay` event that shows why.

use std::collections::BTreeSet;

use tokio_postgres::types::ToSql;

use super::PgJournal;
use super::ingest::enqueue;
use super::sql::{row, rows};
use crate::events::{Action, Collection, Source};
use crate::journal::types::column;
use crate::journal::{JournalError, now_ms};

impl PgJournal {
    /// Requeues the records `sql` selects (collection, record id), in one transaction. Records are
    /// taken in order, so two replays lock their jobs in the same order.
    async fn replay(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<usize, JournalError> {
        let now = now_ms();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        let records: BTreeSet<(String, String)> = rows(&tx, sql, args)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (collection, record_id) in &records {
            let collection = column::<Collection>("collection", collection.clone())?;
            let last_action = row(
                &tx,
                "SELECT action FROM events WHERE collection = $1 AND record_id = $2 ORDER BY id DESC LIMIT 1",
                &[&collection.as_str(), record_id],
            )
            .await?;
            let action = last_action
                .map(|r| column::<Action>("events.action", r.get(0)))
                .transpose()?
                .unwrap_or(Action::Update);
            let dedupe_key = format!(
                "replay:{}:{}:{}:{:016x}",
                collection.as_str(),
                record_id,
                now,
                rand::random::<u64>()
            );
            let event_id: i64 = row(
                &tx,
                "INSERT INTO events (source, collection, record_id, action, received_at, dedupe_key, payload, status)
                 VALUES ($1, $2, $3, $4, $5, $6, '{\"replay\":true}', 'queued')
                 RETURNING id",
                &[
                    &Source::Replay.as_str(),
                    &collection.as_str(),
                    record_id,
                    &action.as_str(),
                    &now,
                    &dedupe_key,
                ],
            )
            .await?
            .map(|r| r.get(0))
            .ok_or_else(|| JournalError::Commit("no event id returned".into()))?;
            enqueue(&tx, collection, record_id, event_id, now, true).await?;
        }
        tx.commit().await?;
        Ok(records.len())
    }

    pub(crate) async fn replay_events(&self, ids: &[i64]) -> Result<usize, JournalError> {
        let ids: Vec<i64> = ids.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        self.replay(
            "SELECT DISTINCT collection, record_id FROM events WHERE id = ANY($1)",
            &[&ids],
        )
        .await
    }

    pub(crate) async fn replay_record(&self, collection: Collection, record_id: &str) -> Result<usize, JournalError> {
        self.replay("SELECT $1::text, $2::text", &[&collection.as_str(), &record_id])
            .await
    }

    pub(crate) async fn replay_since(&self, since_ms: i64) -> Result<usize, JournalError> {
        self.replay(
            "SELECT DISTINCT collection, record_id FROM events WHERE received_at >= $1",
            &[&since_ms],
        )
        .await
    }

    pub(crate) async fn replay_live(&self, collection: Collection) -> Result<usize, JournalError> {
        self.replay(
            "SELECT collection, record_id FROM record_state WHERE collection = $1 AND deleted = 0",
            &[&collection.as_str()],
        )
        .await
    }

    pub(crate) async fn replay_failed(&self) -> Result<usize, JournalError> {
        self.replay(
            "SELECT collection, record_id FROM jobs WHERE state IN ('failed', 'waiting', 'dead')",
            &[],
        )
        .await
    }
}
