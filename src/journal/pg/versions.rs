//! Template versions, pins and rollouts on PostgreSQL (see `journal/versions.rs`): the same `meta` names
//! and values. Names are ordered bytewise (`COLLATE "C"`), as SQLite orders them.

use tokio_postgres::GenericClient;

use super::PgJournal;
use crate::journal::versions::{NEXT_ROLLOUT, active_key, rollout_key};
use crate::journal::{JournalError, StoredTemplate};
use crate::pg::lock_keys;

/// Records `value` under `name`; whether it was absent or differed.
pub(super) async fn note_changed(db: &impl GenericClient, name: &str, value: &str) -> Result<bool, JournalError> {
    let n = db
        .execute(
            "INSERT INTO meta (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE meta.value <> excluded.value",
            &[&name, &value],
        )
        .await?;
    Ok(n > 0)
}

pub(super) async fn note(db: &impl GenericClient, name: &str) -> Result<Option<String>, JournalError> {
    let row = db.query_opt("SELECT value FROM meta WHERE name = $1", &[&name]).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

impl PgJournal {
    async fn notes_prefixed(&self, prefix: &str) -> Result<Vec<(String, String)>, JournalError> {
        let rows = self
            .conn()
            .await?
            .query(
                "SELECT name, value FROM meta WHERE left(name, length($1)) = $1 ORDER BY name COLLATE \"C\"",
                &[&prefix],
            )
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub(crate) async fn store_template_version(
        &self,
        name: &str,
        version: &str,
        stored: &StoredTemplate,
    ) -> Result<bool, JournalError> {
        let value = serde_json::to_string(stored)?;
        note_changed(&**self.conn().await?, &format!("template:{name}@{version}"), &value).await
    }

    pub(crate) async fn note_first_template_version(&self, name: &str, version: &str) -> Result<(), JournalError> {
        self.conn()
            .await?
            .execute(
                "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&format!("template_first:{name}"), &version],
            )
            .await?;
        Ok(())
    }

    pub(crate) async fn first_template_versions(&self) -> Result<Vec<(String, String)>, JournalError> {
        let rows = self.notes_prefixed("template_first:").await?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("template_first:").to_string(), v))
            .collect())
    }

    pub(crate) async fn template_versions(&self) -> Result<Vec<StoredTemplate>, JournalError> {
        let rows = self.notes_prefixed("template:").await?;
        rows.into_iter()
            .map(|(_, v)| serde_json::from_str(&v).map_err(JournalError::from))
            .collect()
    }

    pub(crate) async fn template_pin(&self, instance_id: &str, life: &str) -> Result<Option<String>, JournalError> {
        let value = note(&**self.conn().await?, &format!("template_pin:{instance_id}")).await?;
        Ok(value.and_then(|v| {
            let (pinned_life, version) = v.split_once('|')?;
            (pinned_life == life).then(|| version.to_string())
        }))
    }

    pub(crate) async fn pin_template(&self, instance_id: &str, life: &str, version: &str) -> Result<(), JournalError> {
        note_changed(
            &**self.conn().await?,
            &format!("template_pin:{instance_id}"),
            &format!("{life}|{version}"),
        )
        .await
        .map(|_| ())
    }

    pub(crate) async fn begin_rollout(
        &self,
        template: &str,
        make: impl FnOnce(i64) -> Result<String, serde_json::Error> + Send + 'static,
    ) -> Result<Result<i64, i64>, JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        // Replicas starting rollouts at once check the running one and take ids one after the other.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_keys::ROLLOUT])
            .await?;
        if let Some(running) = note(&*tx, &active_key(template)).await?.and_then(|v| v.parse().ok()) {
            return Ok(Err(running));
        }
        let id = note(&*tx, NEXT_ROLLOUT)
            .await?
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(1);
        let state = make(id)?;
        let put = "INSERT INTO meta (name, value) VALUES ($1, $2)
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value";
        tx.execute(put, &[&NEXT_ROLLOUT, &(id + 1).to_string()]).await?;
        tx.execute(put, &[&rollout_key(id), &state]).await?;
        tx.execute(put, &[&active_key(template), &id.to_string()]).await?;
        tx.execute(put, &[&format!("rollout_last:{template}"), &id.to_string()])
            .await?;
        tx.commit().await?;
        Ok(Ok(id))
    }

    pub(crate) async fn save_rollout(
        &self,
        template: &str,
        id: i64,
        state: &str,
        finished: bool,
    ) -> Result<(), JournalError> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await?;
        tx.execute(
            "UPDATE meta SET value = $2 WHERE name = $1",
            &[&rollout_key(id), &state],
        )
        .await?;
        if finished {
            tx.execute(
                "DELETE FROM meta WHERE name = $1 AND value = $2",
                &[&active_key(template), &id.to_string()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn rollout(&self, id: i64) -> Result<Option<String>, JournalError> {
        note(&**self.conn().await?, &rollout_key(id)).await
    }

    pub(crate) async fn last_rollout(&self, template: &str) -> Result<Option<i64>, JournalError> {
        Ok(note(&**self.conn().await?, &format!("rollout_last:{template}"))
            .await?
            .and_then(|v| v.parse().ok()))
    }

    pub(crate) async fn recent_rollouts(&self, limit: usize) -> Result<Vec<String>, JournalError> {
        // SQLite's CAST reads a name that is not a number as 0; PostgreSQL's would fail the query.
        let rows = self
            .conn()
            .await?
            .query(
                "SELECT value FROM meta WHERE left(name, 8) = 'rollout:'
                 ORDER BY CASE WHEN substr(name, 9) ~ '^[0-9]{1,18}$' THEN substr(name, 9)::BIGINT ELSE 0 END DESC
                 LIMIT $1",
                &[&i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    pub(crate) async fn running_rollouts(&self) -> Result<Vec<i64>, JournalError> {
        let rows = self.notes_prefixed("rollout_active:").await?;
        Ok(rows.into_iter().filter_map(|(_, v)| v.parse().ok()).collect())
    }
}
