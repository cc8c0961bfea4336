//! What was last applied per record, and the reconciler's intents ("about to create X named Y").

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};

use super::types::column;
use super::{AppliedVersion, Intent, Journal, JournalError, Notes, RecordState, RunRecord, now_ms, write_tx};
use crate::events::Collection;

impl Journal {
    /// Records that the record at `updated` (the version the run read) was applied, and what that version
    /// asks for: the fingerprint of its realtime or webhook event, so that echoes asking for the same thing
    /// need no job. Unknown (no job saved) when that event has not arrived or carries no record. An
    /// `updated` older than the one recorded (an echo settled since) is kept out. A run records this with
    /// its completion ([`Journal::complete`]).
    pub async fn set_applied(
        &self,
        collection: Collection,
        record_id: &str,
        updated: &str,
    ) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.set_applied(collection, record_id, updated)).await;
        }
        let record = RunRecord::Applied(updated.to_owned());
        let record_id = record_id.to_owned();
        self.write(move |conn| write_tx(conn, |tx| record_run(tx, collection, &record_id, &record)))
            .await
    }

    /// Records that the record is gone (its runtime resources were removed).
    pub async fn mark_deleted(&self, collection: Collection, record_id: &str) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.mark_deleted(collection, record_id)).await;
        }
        let record_id = record_id.to_owned();
        self.write(move |conn| write_tx(conn, |tx| record_run(tx, collection, &record_id, &RunRecord::Deleted)))
            .await
    }

    /// The version of the record last applied, or its removal; `None` for a record never applied.
    pub async fn applied_version(
        &self,
        collection: Collection,
        record_id: &str,
    ) -> Result<Option<AppliedVersion>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.applied_version(collection, record_id)).await;
        }
        let record_id = record_id.to_owned();
        self.look_up(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT last_updated, deleted FROM record_state WHERE collection = ?1 AND record_id = ?2",
                )?
                .query_row(params![collection.as_str(), record_id], |r| {
                    Ok(AppliedVersion {
                        updated: r.get(0)?,
                        deleted: r.get(1)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    /// Every record of `collection` the bridge has applied or seen deleted, by record id.
    pub async fn known_records(&self, collection: Collection) -> Result<Vec<RecordState>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.known_records(collection)).await;
        }
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT collection, record_id, last_updated, applied_hash, deleted, seen_at
                 FROM record_state WHERE collection = ?1 ORDER BY record_id",
            )?;
            let rows = stmt.query_map([collection.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (c, record_id, last_updated, applied_hash, deleted, seen_at): (String, _, _, _, _, _) = row?;
                out.push(RecordState {
                    collection: column("collection", c)?,
                    record_id,
                    last_updated,
                    applied_hash,
                    deleted,
                    seen_at,
                });
            }
            Ok(out)
        })
        .await
    }

    /// The `updated` stamp of every record of `collection` the journal knows and that is not deleted, by
    /// id: what the resync compares a listing with. Read straight into the map (not through
    /// [`Journal::known_records`]), since a resync of the whole fleet holds it beside the listing.
    pub async fn known_versions(&self, collection: Collection) -> Result<HashMap<String, String>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.known_versions(collection)).await;
        }
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT record_id, last_updated FROM record_state WHERE collection = ?1 AND NOT deleted",
            )?;
            let rows = stmt.query_map([collection.as_str()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                ))
            })?;
            Ok(rows.collect::<Result<HashMap<_, _>, _>>()?)
        })
        .await
    }

    /// Records the intent to create `name` before the side effect. Re-putting an intent keeps the uuid
    /// it may already have been resolved to.
    pub async fn put_intent(&self, key: &str, kind: &str, name: &str) -> Result<(), JournalError> {
        self.put_intent_of(key, kind, name, None).await
    }

    /// Like [`Journal::put_intent`], for the given record incarnation. Re-putting it for another
    /// incarnation forgets the uuid: that resource belongs to the other incarnation.
    pub async fn put_intent_of(
        &self,
        key: &str,
        kind: &str,
        name: &str,
        incarnation: Option<&str>,
    ) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.put_intent_of(key, kind, name, incarnation)).await;
        }
        let (key, kind, name) = (key.to_owned(), kind.to_owned(), name.to_owned());
        let incarnation = incarnation.map(str::to_owned);
        self.write(move |conn| {
            write_tx(conn, |tx| {
                tx.prepare_cached(
                    "INSERT INTO intents (key, kind, name, created_at, updated_at, incarnation)
                     VALUES (?1, ?2, ?3, ?4, ?4, ?5)
                     ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, name = excluded.name,
                        coolify_uuid = CASE WHEN intents.incarnation IS excluded.incarnation
                                            THEN intents.coolify_uuid END,
                        incarnation = excluded.incarnation, updated_at = excluded.updated_at",
                )?
                .execute(params![key, kind, name, now_ms(), incarnation])?;
                Ok(())
            })
        })
        .await
    }

    /// Records the Coolify uuid the intent produced; false if there was no such intent.
    pub async fn resolve_intent(&self, key: &str, coolify_uuid: &str) -> Result<bool, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.resolve_intent(key, coolify_uuid)).await;
        }
        let (key, uuid) = (key.to_owned(), coolify_uuid.to_owned());
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let n = tx
                    .prepare_cached("UPDATE intents SET coolify_uuid = ?2, updated_at = ?3 WHERE key = ?1")?
                    .execute(params![key, uuid, now_ms()])?;
                Ok(n > 0)
            })
        })
        .await
    }

    pub async fn get_intent(&self, key: &str) -> Result<Option<Intent>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.get_intent(key)).await;
        }
        let key = key.to_owned();
        self.look_up(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT key, kind, name, coolify_uuid, created_at, updated_at, incarnation
                     FROM intents WHERE key = ?1",
                )?
                .query_row([key], |r| {
                    Ok(Intent {
                        key: r.get(0)?,
                        kind: r.get(1)?,
                        name: r.get(2)?,
                        coolify_uuid: r.get(3)?,
                        created_at: r.get(4)?,
                        updated_at: r.get(5)?,
                        incarnation: r.get(6)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    /// The router key id of an instance incarnation: the one kept for it, or a fresh random one when the
    /// journal has none for this incarnation (a new record, or a record whose id came back).
    pub async fn router_key_id(&self, record_id: &str, incarnation: &str) -> Result<String, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.router_key_id(record_id, incarnation)).await;
        }
        // Read first: every reconcile asks, and only a new incarnation needs a write.
        let (id, life) = (record_id.to_owned(), incarnation.to_owned());
        let kept: Option<String> = self
            .look_up(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT key_id FROM router_keys WHERE record_id = ?1 AND incarnation = ?2")?
                    .query_row(params![id, life], |r| r.get(0))
                    .optional()?)
            })
            .await?;
        match kept {
            Some(kept) => Ok(kept),
            None => self.set_router_key_id(record_id, incarnation, false).await,
        }
    }

    /// Gives the instance incarnation a fresh router key id and returns it; its old key stops being
    /// issued (the next reconcile pushes the new one).
    pub async fn rotate_router_key(&self, record_id: &str, incarnation: &str) -> Result<String, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.rotate_router_key(record_id, incarnation)).await;
        }
        self.set_router_key_id(record_id, incarnation, true).await
    }

    async fn set_router_key_id(
        &self,
        record_id: &str,
        incarnation: &str,
        rotate: bool,
    ) -> Result<String, JournalError> {
        let (record_id, incarnation) = (record_id.to_owned(), incarnation.to_owned());
        let fresh = crate::secrets::new_router_key_id();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let kept: Option<String> = tx
                    .prepare_cached("SELECT key_id FROM router_keys WHERE record_id = ?1 AND incarnation = ?2")?
                    .query_row(params![record_id, incarnation], |r| r.get(0))
                    .optional()?;
                if let (Some(kept), false) = (kept, rotate) {
                    return Ok(kept);
                }
                tx.prepare_cached(
                    "INSERT INTO router_keys (record_id, incarnation, key_id, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (record_id) DO UPDATE SET incarnation = excluded.incarnation,
                        key_id = excluded.key_id, updated_at = excluded.updated_at",
                )?
                .execute(params![record_id, incarnation, fresh, now_ms()])?;
                Ok(fresh)
            })
        })
        .await
    }

    /// The value recorded under `name`, if any.
    pub async fn noted(&self, name: &str) -> Result<Option<String>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.noted(name)).await;
        }
        let name = name.to_owned();
        self.look_up(move |conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// Records `value` under `name`; returns whether it differs from the value recorded before (true when
    /// there was none).
    pub async fn note_changed(&self, name: &str, value: &str) -> Result<bool, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.note_changed(name, value)).await;
        }
        let (name, value) = (name.to_owned(), value.to_owned());
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let before: Option<String> = tx
                    .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
                    .query_row([&name], |r| r.get(0))
                    .optional()?;
                if before.as_deref() == Some(value.as_str()) {
                    return Ok(false);
                }
                tx.prepare_cached(
                    "INSERT INTO meta (name, value) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![name, value])?;
                Ok(true)
            })
        })
        .await
    }

    /// The value recorded under `name`, if any (see [`Journal::note_changed`]).
    pub async fn note(&self, name: &str) -> Result<Option<String>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.note(name)).await;
        }
        let name = name.to_owned();
        self.look_up(move |conn| {
            Ok(conn
                .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
                .query_row([&name], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    /// Every value recorded under a name that starts with `prefix`, by the rest of the name.
    pub async fn notes_with_prefix(&self, prefix: &str) -> Result<Notes, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.notes_with_prefix(prefix)).await;
        }
        let prefix = prefix.to_owned();
        self.read(move |conn| {
            // A range on the primary key: names from `prefix` up to the next prefix.
            let mut end = prefix.clone();
            end.push(char::MAX);
            let mut stmt = conn.prepare_cached("SELECT name, value FROM meta WHERE name >= ?1 AND name < ?2")?;
            let rows = stmt.query_map(params![prefix, end], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (name, value): (String, String) = row?;
                if let Some(rest) = name.strip_prefix(&prefix) {
                    out.push((rest.to_string(), value));
                }
            }
            Ok(Notes::new(out))
        })
        .await
    }

    /// Forgets the value recorded under `name`.
    pub async fn forget_note(&self, name: &str) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.forget_note(name)).await;
        }
        let name = name.to_owned();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                tx.prepare_cached("DELETE FROM meta WHERE name = ?1")?.execute([name])?;
                Ok(())
            })
        })
        .await
    }

    /// Forgets an instance's router key id (the record is gone).
    pub async fn forget_router_key(&self, record_id: &str) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.forget_router_key(record_id)).await;
        }
        let record_id = record_id.to_owned();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                tx.prepare_cached("DELETE FROM router_keys WHERE record_id = ?1")?
                    .execute([record_id])?;
                Ok(())
            })
        })
        .await
    }

    /// Forgets an intent (its resource was deleted); false if there was none.
    pub async fn clear_intent(&self, key: &str) -> Result<bool, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.clear_intent(key)).await;
        }
        let key = key.to_owned();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                Ok(tx
                    .prepare_cached("DELETE FROM intents WHERE key = ?1")?
                    .execute([key])?
                    > 0)
            })
        })
        .await
    }
}

/// Where a run left its record: see [`Journal::set_applied`] and [`Journal::mark_deleted`].
pub(super) fn record_run(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
    record: &RunRecord,
) -> Result<(), JournalError> {
    match record {
        RunRecord::Applied(updated) => {
            let asked = version_fingerprint(tx, collection, record_id, updated)?;
            tx.prepare_cached(
                "INSERT INTO record_state (collection, record_id, last_updated, applied_hash, deleted, seen_at)
                 VALUES (?1, ?2, ?3, ?5, 0, ?4)
                 ON CONFLICT (collection, record_id) DO UPDATE SET
                    applied_hash = CASE
                        WHEN record_state.last_updated IS NULL OR record_state.deleted = 1
                             OR excluded.last_updated >= record_state.last_updated
                        THEN excluded.applied_hash ELSE record_state.applied_hash END,
                    last_updated = CASE
                        WHEN record_state.last_updated IS NULL OR record_state.deleted = 1
                             OR excluded.last_updated > record_state.last_updated
                        THEN excluded.last_updated ELSE record_state.last_updated END,
                    deleted = 0, seen_at = excluded.seen_at",
            )?
            .execute(params![collection.as_str(), record_id, updated, now_ms(), asked])?;
        }
        RunRecord::Deleted => {
            tx.prepare_cached(
                "INSERT INTO record_state (collection, record_id, deleted, seen_at) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (collection, record_id) DO UPDATE SET deleted = 1, seen_at = excluded.seen_at",
            )?
            .execute(params![collection.as_str(), record_id, now_ms()])?;
        }
    }
    Ok(())
}

/// What the record at `updated` asks for: the fingerprint its create or update event was stored with.
fn version_fingerprint(
    tx: &Transaction<'_>,
    collection: Collection,
    record_id: &str,
    updated: &str,
) -> Result<Option<String>, JournalError> {
    // Several versions of one millisecond: which one the run read is unknown, so none is taken as applied.
    if super::ingest::second_versions_held(tx, collection, record_id, updated)? {
        return Ok(None);
    }
    // Newest first along the record's index: the version a run read is among its latest events.
    Ok(tx
        .prepare_cached(
            "SELECT fingerprint FROM events
             WHERE collection = ?1 AND record_id = ?2 AND record_updated = ?3 AND fingerprint IS NOT NULL
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![collection.as_str(), record_id, updated], |r| r.get(0))
        .optional()?)
}

impl crate::resync::KnownRecords for Journal {
    fn known(&self, c: Collection) -> crate::resync::ListFuture<'_, std::collections::HashMap<String, String>> {
        Box::pin(async move { Ok(self.known_versions(c).await?) })
    }
}
