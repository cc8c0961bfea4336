//! What template versions and rollouts need kept across restarts, in the `meta` table (no new tables, so
//! this needs no schema migration):
//! - `template:<name>@<version>`: the manifest and compose of every version the bridge has loaded, so an
//!   instance keeps rendering from its version after a newer one replaces it in the templates directory.
//! - `template_first:<name>`: the first version of a template the bridge loaded, which stacks applied before
//!   versions were recorded (no `template_version`) run.
//! - `template_pin:<instance id>`: `<incarnation>|<version>`, the version a rollout or rollback moved the
//!   instance to (a new record reusing the id has another incarnation and ignores it).
//! - `rollout:<id>`: a rollout's state (JSON, see `crate::rollout`); `rollout_active:<template>` the one
//!   running for a template; `rollout_last:<template>` the latest one (what a rollback undoes).

use rusqlite::{OptionalExtension, params};

use super::{Change, Journal, JournalError, write_tx};

pub(super) const NEXT_ROLLOUT: &str = "rollout_next_id";

pub(super) fn active_key(template: &str) -> String {
    format!("rollout_active:{template}")
}

pub(super) fn rollout_key(id: i64) -> String {
    format!("rollout:{id}")
}

/// A template version as stored: the `template.toml` text and the compose source.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredTemplate {
    pub manifest: String,
    pub compose: String,
}

impl Journal {
    /// Keeps a template version; returns whether the stored copy was absent or differed.
    pub async fn store_template_version(
        &self,
        name: &str,
        version: &str,
        stored: &StoredTemplate,
    ) -> Result<bool, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.store_template_version(name, version, stored)).await;
        }
        self.note_changed(&format!("template:{name}@{version}"), &serde_json::to_string(stored)?)
            .await
    }

    /// Notes `version` as the first version of `name` the bridge loaded, unless one is noted: the version
    /// that stacks applied before versions were recorded run.
    pub async fn note_first_template_version(&self, name: &str, version: &str) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.note_first_template_version(name, version)).await;
        }
        let (name, version) = (format!("template_first:{name}"), version.to_owned());
        self.write(move |conn| {
            write_tx(conn, |tx| {
                tx.prepare_cached("INSERT OR IGNORE INTO meta (name, value) VALUES (?1, ?2)")?
                    .execute(params![name, version])?;
                Ok(())
            })
        })
        .await
    }

    /// Each template's first version (see [`Journal::note_first_template_version`]), by name.
    pub async fn first_template_versions(&self) -> Result<Vec<(String, String)>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.first_template_versions()).await;
        }
        let rows = self.notes_prefixed("template_first:").await?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("template_first:").to_string(), v))
            .collect())
    }

    /// Every template version kept (see [`Journal::store_template_version`]).
    pub async fn template_versions(&self) -> Result<Vec<StoredTemplate>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.template_versions()).await;
        }
        let rows = self.notes_prefixed("template:").await?;
        rows.into_iter()
            .map(|(_, v)| serde_json::from_str(&v).map_err(JournalError::from))
            .collect()
    }

    /// The version a rollout moved the instance's incarnation `life` to, if any.
    pub async fn template_pin(&self, instance_id: &str, life: &str) -> Result<Option<String>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.template_pin(instance_id, life)).await;
        }
        let value = self.note(&format!("template_pin:{instance_id}")).await?;
        Ok(value.and_then(|v| {
            let (pinned_life, version) = v.split_once('|')?;
            (pinned_life == life).then(|| version.to_string())
        }))
    }

    pub async fn pin_template(&self, instance_id: &str, life: &str, version: &str) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.pin_template(instance_id, life, version)).await;
        }
        self.note_changed(&format!("template_pin:{instance_id}"), &format!("{life}|{version}"))
            .await
            .map(|_| ())
    }

    /// Starts rollout state `make(id)` for `template` unless one runs for it: `Err(running id)` then.
    pub async fn begin_rollout(
        &self,
        template: &str,
        make: impl FnOnce(i64) -> Result<String, serde_json::Error> + Send + 'static,
    ) -> Result<Result<i64, i64>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.begin_rollout(template, make)).await;
        }
        let template = template.to_owned();
        self.write(move |conn| {
            write_tx(conn, |tx| {
                let get = |name: &str| -> Result<Option<String>, JournalError> {
                    Ok(tx
                        .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
                        .query_row([name], |r| r.get(0))
                        .optional()?)
                };
                if let Some(running) = get(&active_key(&template))?.and_then(|v| v.parse().ok()) {
                    return Ok(Err(running));
                }
                let id = get(NEXT_ROLLOUT)?.and_then(|v| v.parse::<i64>().ok()).unwrap_or(1);
                let state = make(id)?;
                let mut put = tx.prepare_cached(
                    "INSERT INTO meta (name, value) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )?;
                put.execute(params![NEXT_ROLLOUT, (id + 1).to_string()])?;
                put.execute(params![rollout_key(id), state])?;
                put.execute(params![active_key(&template), id.to_string()])?;
                put.execute(params![format!("rollout_last:{template}"), id.to_string()])?;
                Ok(Ok(id))
            })
        })
        .await
    }

    /// Saves a rollout's state; `finished` ends it as the template's running one.
    pub async fn save_rollout(&self, template: &str, id: i64, state: &str, finished: bool) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            Box::pin(pg.save_rollout(template, id, state, finished)).await?;
            self.announce(Change::Rollout { rollout_id: id });
            return Ok(());
        }
        let (template, state) = (template.to_owned(), state.to_owned());
        self.write(move |conn| {
            write_tx(conn, |tx| {
                tx.prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")?
                    .execute(params![rollout_key(id), state])?;
                if finished {
                    tx.prepare_cached("DELETE FROM meta WHERE name = ?1 AND value = ?2")?
                        .execute(params![active_key(&template), id.to_string()])?;
                }
                Ok(())
            })
        })
        .await?;
        self.announce(Change::Rollout { rollout_id: id });
        Ok(())
    }

    pub async fn rollout(&self, id: i64) -> Result<Option<String>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.rollout(id)).await;
        }
        self.note(&rollout_key(id)).await
    }

    /// The latest rollout of `template`, if any.
    pub async fn last_rollout(&self, template: &str) -> Result<Option<i64>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.last_rollout(template)).await;
        }
        Ok(self
            .note(&format!("rollout_last:{template}"))
            .await?
            .and_then(|v| v.parse().ok()))
    }

    /// The states of the `limit` latest rollouts, newest first.
    pub async fn recent_rollouts(&self, limit: usize) -> Result<Vec<String>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.recent_rollouts(limit)).await;
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT value FROM meta WHERE substr(name, 1, 8) = 'rollout:'
                 ORDER BY CAST(substr(name, 9) AS INTEGER) DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([limit], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// The ids of the rollouts still running (to resume after a restart).
    pub async fn running_rollouts(&self) -> Result<Vec<i64>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.running_rollouts()).await;
        }
        let rows = self.notes_prefixed("rollout_active:").await?;
        Ok(rows.into_iter().filter_map(|(_, v)| v.parse().ok()).collect())
    }

    async fn notes_prefixed(&self, prefix: &str) -> Result<Vec<(String, String)>, JournalError> {
        let prefix = prefix.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, value FROM meta WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name")?;
            let rows = stmt.query_map([&prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}
