//! Record state, intents, router key ids and notes on PostgreSQL (see `src/journal/state.rs`).
//!
//! Each decision is one statement or one transaction, so replicas asking at once agree: the first router
//! key id kept for an incarnation is the one every replica gets, and of replicas noting the same value at
//! once exactly one hears "changed". Text that SQLite orders byte-wise is compared `COLLATE "C"` here.

use std::collections::HashMap;

use deadpool_postgres::Transaction;

use super::PgJournal;
use super::sql::exec;
use crate::events::Collection;
use crate::journal::types::column;
use crate::journal::{AppliedVersion, Intent, JournalError, Notes, RecordState, RunRecord, now_ms};

/// Where a run left its record (see `Journal::set_applied`, `Journal::mark_deleted`), inside `tx`.
pub(super) async fn record_run(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
    record: &RunRecord,
) -> Result<(), JournalError> {
    match record {
        RunRecord::Applied(updated) => {
            // Several versions of one millisecond: which one the run read is unknown, so none is taken as
            // applied.
            let (_, after, before) = crate::journal::ingest::version_keys(collection, record_id, updated);
            // One statement: what the version asks for (the fingerprint of its event, when it has arrived)
            // and the upsert, newest event first along the record's index.
            exec(
                tx,
                "INSERT INTO record_state (collection, record_id, last_updated, applied_hash, deleted, seen_at)
                 VALUES ($1, $2, $3,
                        (SELECT fingerprint FROM events
                         WHERE collection = $1 AND record_id = $2 AND record_updated = $3
                           AND fingerprint IS NOT NULL
                           AND NOT EXISTS (SELECT 1 FROM events WHERE dedupe_key > $5 AND dedupe_key < $6)
                         ORDER BY id DESC LIMIT 1),
                        0, $4)
                 ON CONFLICT (collection, record_id) DO UPDATE SET
                    applied_hash = CASE
                        WHEN record_state.last_updated IS NULL OR record_state.deleted = 1
                             OR excluded.last_updated COLLATE \"C\" >= record_state.last_updated COLLATE \"C\"
                        THEN excluded.applied_hash ELSE record_state.applied_hash END,
                    last_updated = CASE
                        WHEN record_state.last_updated IS NULL OR record_state.deleted = 1
                             OR excluded.last_updated COLLATE \"C\" > record_state.last_updated COLLATE \"C\"
                        THEN excluded.last_updated ELSE record_state.last_updated END,
                    deleted = 0, seen_at = excluded.seen_at",
                &[&collection.as_str(), &record_id, updated, &now_ms(), &after, &before],
            )
            .await?;
        }
        RunRecord::Deleted => {
            exec(
                tx,
                "INSERT INTO record_state (collection, record_id, deleted, seen_at) VALUES ($1, $2, 1, $3)
                 ON CONFLICT (collection, record_id) DO UPDATE SET deleted = 1, seen_at = excluded.seen_at",
                &[&collection.as_str(), &record_id, &now_ms()],
            )
            .await?;
        }
    }
    Ok(())
}

impl PgJournal {
    pub(crate) async fn set_applied(
        &self,
        collection: Collection,
        record_id: &str,
        updated: &str,
    ) -> Result<(), JournalError> {
        self.record(collection, record_id, RunRecord::Applied(updated.to_owned()))
            .await
    }

    pub(crate) async fn mark_deleted(&self, collection: Collection, record_id: &str) -> Result<(), JournalError> {
        self.record(collection, record_id, RunRecord::Deleted).await
    }

    async fn record(&self, collection: Collection, record_id: &str, record: RunRecord) -> Result<(), JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        record_run(&tx, collection, record_id, &record).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn applied_version(
        &self,
        collection: Collection,
        record_id: &str,
    ) -> Result<Option<AppliedVersion>, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached("SELECT last_updated, deleted FROM record_state WHERE collection = $1 AND record_id = $2")
            .await?;
        client
            .query_opt(&stmt, &[&collection.as_str(), &record_id])
            .await?
            .map(|r| {
                Ok(AppliedVersion {
                    updated: r.try_get(0)?,
                    deleted: r.try_get::<_, i64>(1)? != 0,
                })
            })
            .transpose()
    }

    pub(crate) async fn known_records(&self, collection: Collection) -> Result<Vec<RecordState>, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "SELECT collection, record_id, last_updated, applied_hash, deleted, seen_at
                 FROM record_state WHERE collection = $1 ORDER BY record_id COLLATE \"C\"",
            )
            .await?;
        let rows = client.query(&stmt, &[&collection.as_str()]).await?;
        rows.iter()
            .map(|r| {
                Ok(RecordState {
                    collection: column("collection", r.try_get(0)?)?,
                    record_id: r.try_get(1)?,
                    last_updated: r.try_get(2)?,
                    applied_hash: r.try_get(3)?,
                    deleted: r.try_get::<_, i64>(4)? != 0,
                    seen_at: r.try_get(5)?,
                })
            })
            .collect()
    }

    pub(crate) async fn known_versions(&self, collection: Collection) -> Result<HashMap<String, String>, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached("SELECT record_id, last_updated FROM record_state WHERE collection = $1 AND deleted = 0")
            .await?;
        let rows = client.query(&stmt, &[&collection.as_str()]).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get::<_, Option<String>>(1)?.unwrap_or_default())))
            .collect()
    }

    pub(crate) async fn put_intent_of(
        &self,
        key: &str,
        kind: &str,
        name: &str,
        incarnation: Option<&str>,
    ) -> Result<(), JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO intents (key, kind, name, created_at, updated_at, incarnation)
                 VALUES ($1, $2, $3, $4, $4, $5)
                 ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, name = excluded.name,
                    coolify_uuid = CASE WHEN intents.incarnation IS NOT DISTINCT FROM excluded.incarnation
                                        THEN intents.coolify_uuid END,
                    incarnation = excluded.incarnation, updated_at = excluded.updated_at",
            )
            .await?;
        client
            .execute(&stmt, &[&key, &kind, &name, &now_ms(), &incarnation])
            .await?;
        Ok(())
    }

    pub(crate) async fn resolve_intent(&self, key: &str, coolify_uuid: &str) -> Result<bool, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached("UPDATE intents SET coolify_uuid = $2, updated_at = $3 WHERE key = $1")
            .await?;
        Ok(client.execute(&stmt, &[&key, &coolify_uuid, &now_ms()]).await? > 0)
    }

    pub(crate) async fn get_intent(&self, key: &str) -> Result<Option<Intent>, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "SELECT key, kind, name, coolify_uuid, created_at, updated_at, incarnation
                 FROM intents WHERE key = $1",
            )
            .await?;
        let Some(r) = client.query_opt(&stmt, &[&key]).await? else {
            return Ok(None);
        };
        Ok(Some(Intent {
            key: r.try_get(0)?,
            kind: r.try_get(1)?,
            name: r.try_get(2)?,
            coolify_uuid: r.try_get(3)?,
            created_at: r.try_get(4)?,
            updated_at: r.try_get(5)?,
            incarnation: r.try_get(6)?,
        }))
    }

    pub(crate) async fn router_key_id(&self, record_id: &str, incarnation: &str) -> Result<String, JournalError> {
        // Read first: every reconcile asks, and only a new incarnation needs a write.
        {
            let client = self.conn().await?;
            let stmt = client
                .prepare_cached("SELECT key_id FROM router_keys WHERE record_id = $1 AND incarnation = $2")
                .await?;
            if let Some(r) = client.query_opt(&stmt, &[&record_id, &incarnation]).await? {
                return Ok(r.try_get(0)?);
            }
        }
        self.set_router_key_id(record_id, incarnation, false).await
    }

    pub(crate) async fn rotate_router_key(&self, record_id: &str, incarnation: &str) -> Result<String, JournalError> {
        self.set_router_key_id(record_id, incarnation, true).await
    }

    /// Keeps a fresh key id for the incarnation unless one is kept for it already (or `rotate`). Replicas
    /// racing here wait on the row: the upsert locks it whether or not it updates, so the id read after
    /// it in the same transaction is the one that stays.
    async fn set_router_key_id(
        &self,
        record_id: &str,
        incarnation: &str,
        rotate: bool,
    ) -> Result<String, JournalError> {
        let fresh = crate::secrets::new_router_key_id();
        let mut client = self.conn().await?;
        let tx = client.transaction().await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO router_keys (record_id, incarnation, key_id, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (record_id) DO UPDATE SET incarnation = excluded.incarnation,
                    key_id = excluded.key_id, updated_at = excluded.updated_at
                 WHERE $5 OR router_keys.incarnation <> excluded.incarnation
                 RETURNING key_id",
            )
            .await?;
        let written = tx
            .query_opt(&upsert, &[&record_id, &incarnation, &fresh, &now_ms(), &rotate])
            .await?;
        let key_id: String = match written {
            Some(r) => r.try_get(0)?,
            None => {
                let kept = tx
                    .prepare_cached("SELECT key_id FROM router_keys WHERE record_id = $1 AND incarnation = $2")
                    .await?;
                tx.query_one(&kept, &[&record_id, &incarnation]).await?.try_get(0)?
            }
        };
        tx.commit().await?;
        Ok(key_id)
    }

    pub(crate) async fn noted(&self, name: &str) -> Result<Option<String>, JournalError> {
        self.note(name).await
    }

    /// One statement: the upsert writes (and returns a row) only when the value differs, so of replicas
    /// noting the same value at once exactly one hears `true`.
    pub(crate) async fn note_changed(&self, name: &str, value: &str) -> Result<bool, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO meta (name, value) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value
                 WHERE meta.value IS DISTINCT FROM excluded.value
                 RETURNING 1",
            )
            .await?;
        Ok(client.query_opt(&stmt, &[&name, &value]).await?.is_some())
    }

    pub(crate) async fn note(&self, name: &str) -> Result<Option<String>, JournalError> {
        let client = self.conn().await?;
        let stmt = client.prepare_cached("SELECT value FROM meta WHERE name = $1").await?;
        Ok(match client.query_opt(&stmt, &[&name]).await? {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    pub(crate) async fn notes_with_prefix(&self, prefix: &str) -> Result<Notes, JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached("SELECT name, value FROM meta WHERE starts_with(name, $1)")
            .await?;
        let mut out = Vec::new();
        for r in client.query(&stmt, &[&prefix]).await? {
            let name: String = r.try_get(0)?;
            if let Some(rest) = name.strip_prefix(prefix) {
                out.push((rest.to_string(), r.try_get(1)?));
            }
        }
        Ok(Notes::new(out))
    }

    pub(crate) async fn forget_note(&self, name: &str) -> Result<(), JournalError> {
        let client = self.conn().await?;
        let stmt = client.prepare_cached("DELETE FROM meta WHERE name = $1").await?;
        client.execute(&stmt, &[&name]).await?;
        Ok(())
    }

    pub(crate) async fn forget_router_key(&self, record_id: &str) -> Result<(), JournalError> {
        let client = self.conn().await?;
        let stmt = client
            .prepare_cached("DELETE FROM router_keys WHERE record_id = $1")
            .await?;
        client.execute(&stmt, &[&record_id]).await?;
        Ok(())
    }

    pub(crate) async fn clear_intent(&self, key: &str) -> Result<bool, JournalError> {
        let client = self.conn().await?;
        let stmt = client.prepare_cached("DELETE FROM intents WHERE key = $1").await?;
        Ok(client.execute(&stmt, &[&key]).await? > 0)
    }
}
