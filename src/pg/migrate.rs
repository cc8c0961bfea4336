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
    // The journal (src/journal/pg/): the same tables and columns as the SQLite journal's schema at its
    // version 6 (src/journal/schema.rs), so both backends keep one meaning per column; every integer is a
    // BIGINT (milliseconds since the epoch for times, 0/1 for flags) and reads as i64 on both. `jobs` adds the
    // claim of a replica: its claim id, who holds it and until when (the database's clock, milliseconds).
    Migration {
        version: 2,
        name: "journal",
        sql: "CREATE TABLE jobs (
                  id               BIGSERIAL PRIMARY KEY,
                  collection       TEXT   NOT NULL,
                  record_id        TEXT   NOT NULL,
                  state            TEXT   NOT NULL
                                   CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'waiting', 'dead')),
                  attempts         BIGINT NOT NULL DEFAULT 0,
                  next_attempt_at  BIGINT NOT NULL,
                  last_error       TEXT,
                  coalesced        BIGINT NOT NULL DEFAULT 0,
                  first_pending_at BIGINT,
                  dirty            BIGINT NOT NULL DEFAULT 0,
                  dirty_since      BIGINT,
                  created_at       BIGINT NOT NULL,
                  updated_at       BIGINT NOT NULL,
                  last_event_id    BIGINT,
                  claimed_event_id BIGINT,
                  attempt_id       BIGINT,
                  claim_id         TEXT,
                  claimed_by       TEXT,
                  lease_until      BIGINT,
                  UNIQUE (collection, record_id)
              );
              CREATE INDEX jobs_due ON jobs (state, next_attempt_at);
              CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state = 'running';

              CREATE TABLE events (
                  id             BIGSERIAL PRIMARY KEY,
                  source         TEXT   NOT NULL,
                  collection     TEXT   NOT NULL,
                  record_id      TEXT   NOT NULL,
                  action         TEXT   NOT NULL,
                  record_updated TEXT,
                  received_at    BIGINT NOT NULL,
                  dedupe_key     TEXT   NOT NULL UNIQUE,
                  delivery_id    TEXT   UNIQUE,
                  payload        TEXT   NOT NULL,
                  status         TEXT   NOT NULL CHECK (status IN ('queued', 'done', 'failed')),
                  job_id         BIGINT REFERENCES jobs (id),
                  fingerprint    TEXT,
                  trace_context  TEXT
              );
              CREATE INDEX events_job ON events (job_id, id);
              CREATE INDEX events_record ON events (collection, record_id, id);
              CREATE INDEX events_status ON events (status, id);
              CREATE INDEX events_received ON events (received_at);

              CREATE TABLE job_attempts (
                  id          BIGSERIAL PRIMARY KEY,
                  job_id      BIGINT NOT NULL REFERENCES jobs (id),
                  started_at  BIGINT NOT NULL,
                  finished_at BIGINT,
                  outcome     TEXT CHECK (outcome IN ('succeeded', 'failed', 'retry', 'dead', 'interrupted')),
                  error       TEXT,
                  duration_ms BIGINT
              );
              CREATE INDEX job_attempts_job ON job_attempts (job_id, id);

              CREATE TABLE intents (
                  key          TEXT PRIMARY KEY,
                  kind         TEXT   NOT NULL,
                  name         TEXT   NOT NULL,
                  coolify_uuid TEXT,
                  created_at   BIGINT NOT NULL,
                  updated_at   BIGINT NOT NULL,
                  incarnation  TEXT
              );

              CREATE TABLE record_state (
                  collection   TEXT   NOT NULL,
                  record_id    TEXT   NOT NULL,
                  last_updated TEXT,
                  applied_hash TEXT,
                  deleted      BIGINT NOT NULL DEFAULT 0,
                  seen_at      BIGINT NOT NULL,
                  PRIMARY KEY (collection, record_id)
              );

              CREATE TABLE health (
                  id         BIGINT PRIMARY KEY CHECK (id = 1),
                  checked_at BIGINT NOT NULL
              );

              CREATE TABLE router_keys (
                  record_id   TEXT PRIMARY KEY,
                  incarnation TEXT   NOT NULL,
                  key_id      TEXT   NOT NULL,
                  updated_at  BIGINT NOT NULL
              );

              CREATE TABLE meta (
                  name  TEXT PRIMARY KEY,
                  value TEXT NOT NULL
              );

              CREATE TABLE outbox (
                  id           TEXT PRIMARY KEY,
                  collection   TEXT   NOT NULL,
                  record_id    TEXT   NOT NULL,
                  row          TEXT   NOT NULL,
                  applied_hash TEXT,
                  service_uuid TEXT,
                  created_at   BIGINT NOT NULL
              );
              CREATE INDEX outbox_record ON outbox (collection, record_id, created_at, id);

              CREATE TABLE deletions (
                  record_id    TEXT PRIMARY KEY,
                  tenant_id    TEXT,
                  incarnation  TEXT   NOT NULL,
                  coolify_uuid TEXT,
                  requested_at BIGINT NOT NULL,
                  expires_at   BIGINT NOT NULL,
                  state        TEXT   NOT NULL CHECK (state IN ('retained', 'purging', 'destroyed')),
                  closed       BIGINT NOT NULL DEFAULT 0,
                  record_gone  BIGINT NOT NULL DEFAULT 0,
                  updated_at   BIGINT NOT NULL
              );
              CREATE INDEX deletions_due ON deletions (state, expires_at);
              CREATE INDEX deletions_tenant ON deletions (tenant_id, state);",
    },
    // The secret store of a bridge whose journal is here (src/secrets/pg.rs), shared by its replicas: one
    // entry per instance id, exactly as the store's file keeps it (the incarnation it belongs to, base64 of
    // the nonce and of the ChaCha20-Poly1305 ciphertext bound to instance id and incarnation). No plaintext.
    Migration {
        version: 3,
        name: "secret store",
        sql: "CREATE TABLE secret_store (
                  instance_id TEXT PRIMARY KEY,
                  incarnation TEXT,
                  nonce       TEXT   NOT NULL,
                  ciphertext  TEXT   NOT NULL,
                  updated_at  BIGINT NOT NULL
              );",
    },
    // The events a job still owes (src/journal/schema.rs has the why).
    Migration {
        version: 4,
        name: "queued events by job",
        sql: "CREATE INDEX events_queued ON events (job_id, id) WHERE status = 'queued';",
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
