//! Versioned migrations for PostgreSQL. Each runs once, in its own transaction, recorded in
//! `schema_migrations`; a session advisory lock around the whole run makes replicas that start together
//! migrate one after the other (without it, two `CREATE TABLE`s race and one replica fails to start).

use tokio_postgres::Client;

use super::{PgError, lock_keys};

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The project's schema, oldest first. Never edit one that has shipped: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "shared token buckets",
        sql: "CREATE TABLE token_buckets (
                  name       TEXT PRIMARY KEY,
                  tokens     DOUBLE PRECISION NOT NULL,
                  updated_at TIMESTAMPTZ NOT NULL,
                  last_taken BOOLEAN NOT NULL DEFAULT FALSE
              );",
    },
    Migration {
        version: 2,
        name: "jobs with claims and leases",
        sql: "CREATE TABLE jobs (
                  id              BIGSERIAL PRIMARY KEY,
                  collection      TEXT NOT NULL,
                  record_id       TEXT NOT NULL,
                  state           TEXT NOT NULL
                                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
                  payload         TEXT NOT NULL DEFAULT '',
                  attempts        INTEGER NOT NULL DEFAULT 0,
                  next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                  last_error      TEXT,
                  dirty           BOOLEAN NOT NULL DEFAULT FALSE,
                  claim_id        UUID,
                  claimed_by      TEXT,
                  lease_until     TIMESTAMPTZ,
                  created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
                  updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
                  UNIQUE (collection, record_id),
                  CHECK ((state = 'running') = (claim_id IS NOT NULL AND lease_until IS NOT NULL))
              );
              CREATE INDEX jobs_due ON jobs (next_attempt_at) WHERE state = 'queued';
              CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state = 'running';",
    },
];

/// Applies the project's pending migrations; returns the versions applied now.
pub async fn migrate(client: &mut Client) -> Result<Vec<i64>, PgError> {
    migrate_with(client, MIGRATIONS).await
}

/// Applies `migrations` (strictly increasing versions) that are not yet recorded.
pub async fn migrate_with(client: &mut Client, migrations: &[Migration]) -> Result<Vec<i64>, PgError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&lock_keys::MIGRATE])
        .await?;
    let result = apply_pending(client, migrations).await;
    // A session lock outlives errors: release it, or the next replica waits until this connection closes.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&lock_keys::MIGRATE])
        .await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn apply_pending(client: &mut Client, migrations: &[Migration]) -> Result<Vec<i64>, PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    BIGINT PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let newest: Option<i64> = client
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await?
        .get(0);
    let known = migrations.last().map_or(0, |m| m.version);
    if let Some(found) = newest.filter(|v| *v > known) {
        return Err(PgError::SchemaNewer { found, known });
    }
    let mut applied = Vec::new();
    for m in migrations.iter().filter(|m| newest.is_none_or(|n| m.version > n)) {
        let failed = |error| PgError::Migration {
            version: m.version,
            name: m.name,
            error,
        };
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(version = m.version, name = m.name, "PostgreSQL migration applied");
        applied.push(m.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_strictly_increase_from_one() {
        let versions: Vec<i64> = super::MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(versions, expected);
    }
}
